//! The command line, as clap structs. `--json` is global; the password of a secret key is
//! one argument group (`PasswordArgs`) wherever a key is loaded.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use diffota_format::ChunkerParams;

#[derive(Parser, Debug)]
#[command(
    name = "chunk-server",
    version,
    about = "Publish diffota releases: chunk images into a store of packs and signed indexes"
)]
pub struct Cli {
    /// Print the result as JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a minisign key pair for signing releases (password-protected unless --unencrypted)
    Keygen {
        /// Where to write the secret key (keep it off shared build hosts)
        #[arg(long, default_value = "diffota.key")]
        secret_key: PathBuf,
        /// Where to write the public key (what devices trust: public_keys in their config)
        #[arg(long, default_value = "diffota.pub")]
        public_key: PathBuf,
        /// Store the secret key without a password (for CI keys)
        #[arg(long)]
        unencrypted: bool,
        #[command(flatten)]
        password: PasswordArgs,
        /// Replace existing key files (devices trusting the old public key then refuse
        /// what the new key signs)
        #[arg(long)]
        force: bool,
    },
    /// Chunk an image into the store and write its signed release index
    Make(MakeArgs),
    /// Sign index or channel files with a secret key (writes FILE.minisig)
    Sign {
        /// Secret key to sign with
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Files to sign (an index, a channel file)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check signatures, packs and every chunk of a store (or of one release)
    Verify {
        /// Trusted public key (repeat for several)
        #[arg(long = "public-key", required_unless_present = "no_signature_check")]
        public_keys: Vec<PathBuf>,
        /// Check everything but the signatures (of index and channel files)
        #[arg(long)]
        no_signature_check: bool,
        /// The store's directory
        store: PathBuf,
        /// Only this release (default: every release and every channel file)
        version: Option<String>,
    },
    /// What a device on OLD downloads to reach NEW (index files)
    Diff {
        /// Neighbouring chunks of a pack closer than this are fetched in one request (the
        /// device's [http] max_gap)
        #[arg(long, default_value_t = diffota_format::ranges::DEFAULT_MAX_GAP)]
        max_gap: u64,
        /// The index of the release the device runs (releases/OLD/rootfs.didx)
        old: PathBuf,
        /// The index of the release it installs
        new: PathBuf,
    },
    /// Write one file with a release and the chunks devices on older releases lack
    Bundle(BundleArgs),
    /// Remove all but the newest N releases and the packs only they used
    Prune {
        /// The store's directory
        #[arg(long)]
        store: PathBuf,
        /// How many of the newest releases to keep (releases a channel names are kept too)
        #[arg(long)]
        keep: usize,
        /// Print what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Bring releases of the published store (HTTP(S)) into a local store, to make the next
    /// release with delta frames against them on a host that keeps no store
    Pull(PullArgs),
    /// Publish and inspect channel files
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Serve a store over HTTP(S) for development and tests
    Serve(ServeArgs),
}

#[derive(Subcommand, Debug)]
pub enum ChannelCommand {
    /// Point a channel at a release, with its rollout
    Set {
        /// The store's directory
        #[arg(long)]
        store: PathBuf,
        /// The channel's name (channels/NAME.json; devices follow `channel` of their config)
        channel: String,
        /// The release version the channel points at (made already)
        #[arg(long)]
        release: String,
        /// Index file name inside releases/<version>/
        #[arg(long, default_value = "rootfs")]
        name: String,
        /// Secret key to sign the channel file with
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Percentage of devices eligible (by a stable hash of device id and release)
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// TIME=PERCENT, e.g. 2026-12-01T00:00:00Z=5 (repeat)
        #[arg(long = "stage")]
        stages: Vec<String>,
        /// Canary device id, always eligible (repeat)
        #[arg(long = "device")]
        devices: Vec<String>,
        /// File with one canary device id per line
        #[arg(long)]
        devices_file: Option<PathBuf>,
        /// No device installs this release until the channel is set again without --pause
        #[arg(long)]
        pause: bool,
        /// Devices refuse the channel file after this (freeze protection): publish it again
        /// before then, e.g. from a daily job
        #[arg(long, default_value = "7days")]
        expires: humantime::Duration,
    },
    /// Print a channel file
    Show {
        /// The store's directory
        #[arg(long)]
        store: PathBuf,
        /// The channel's name
        channel: String,
        /// Count how many of these device ids (one per line) are eligible now
        #[arg(long)]
        devices: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The local store's directory (made when missing)
    #[arg(long)]
    pub store: PathBuf,
    /// Trusted public key (repeat for several): every channel file and index pulled must
    /// carry a signature by one of them
    #[arg(long = "public-key", required = true)]
    pub public_keys: Vec<PathBuf>,
    /// A channel to pull, with the release it points at (repeatable; default: stable,
    /// unless --release is given)
    #[arg(long)]
    pub channel: Vec<String>,
    /// A release to pull, by version (repeatable)
    #[arg(long)]
    pub release: Vec<String>,
    /// Also pull this many of the releases published before each channel's and each
    /// --release's release (make lists them in releases/<version>/<name>.before.json): with
    /// the release itself, the three newest releases make takes as default delta bases
    #[arg(long, value_name = "N", default_value_t = chunk_server::make::base_releases::DEFAULT_DELTA_DEPTH as u64 - 1, value_parser = clap::value_parser!(u64).range(0..=diffota_format::releases_before::MAX_LISTED as u64))]
    pub older: u64,
    /// Index file name inside releases/<version>/
    #[arg(long, default_value = "rootfs")]
    pub name: String,
    /// PEM bundle of CAs to trust instead of the system's
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The published store's root URL, e.g. https://updates.example.com/store
    pub url: String,
}

#[derive(clap::Args, Debug)]
pub struct MakeArgs {
    /// The store's directory (made when missing)
    #[arg(long)]
    pub store: PathBuf,
    /// The release version (immutable once made; see README, "Release versions")
    #[arg(long)]
    pub version: String,
    /// What devices must match (`compatible` in their config), e.g. acme-board-v1
    #[arg(long)]
    pub compatible: String,
    /// Index file name inside releases/<version>/
    #[arg(long, default_value = "rootfs")]
    pub name: String,
    /// Secret key to sign the index with
    #[arg(long, required_unless_present = "no_sign")]
    pub key: Option<PathBuf>,
    /// Write the index unsigned (sign it later with `chunk-server sign`)
    #[arg(long, conflicts_with = "key")]
    pub no_sign: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Average chunk size in bytes (min is a quarter, max four times)
    #[arg(long, default_value_t = ChunkerParams::DEFAULT.avg_size)]
    pub avg_chunk_size: u32,
    /// zstd level of the chunks' own frames
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// The index expires this long after creation (e.g. "90days"); none by default
    #[arg(long)]
    pub expires: Option<humantime::Duration>,
    /// Write delta frames against this release of the store (repeatable; the first is the
    /// one most devices run): the added chunks compressed against the chunks of that release
    /// they resemble (index format version 2). Without it, make writes them against the
    /// --delta-depth newest older releases of the same name and compatible, and the newest
    /// release a store's channel points at beyond those
    #[arg(long, value_name = "VERSION", conflicts_with = "no_delta")]
    pub delta_from: Vec<String>,
    /// Also write delta frames against this image file (repeatable): a release the devices
    /// run that the store does not hold, such as the previous build's image a Yocto deploy
    /// directory keeps. It is chunked as make chunks (same --avg-chunk-size): a device that
    /// runs a release made from it holds exactly its chunks. One image only (not with --image)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["no_delta", "images"])]
    pub delta_from_image: Vec<PathBuf>,
    /// How many of the newest older releases get delta frames when --delta-from does not
    /// name them: a device that many releases behind takes frames against the release it
    /// runs (1.04-1.08x HDiffPatch's patch on the bench pairs; 1.6-2.3x three behind with
    /// two). Each costs make time and store space: on the bench's erofs pair a third base
    /// doubles make's time for that release and stores 1.9x the plain release instead of 1.3x
    #[arg(
        long,
        value_name = "N",
        default_value_t = chunk_server::make::base_releases::DEFAULT_DELTA_DEPTH,
        value_parser = delta_depth,
        conflicts_with_all = ["no_delta", "delta_from"]
    )]
    pub delta_depth: usize,
    /// Write no delta frames (an index that diffota older than 0.1 reads, or a store whose
    /// space matters more than downloads)
    #[arg(long)]
    pub no_delta: bool,
    /// zstd level of the delta frames and image frames (default: the larger of --zstd-level
    /// and 16 for delta frames, and 19 for image frames)
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub delta_level: Option<i32>,
    /// Delta frames name only chunks of their base release. By default a
    /// frame may also name chunks this release added that an earlier frame rebuilds
    /// (siblings), and gets a fallback frame without them; without siblings a device one
    /// release behind downloads about 2% more, one two behind 1-1.5% less, and make is
    /// 7-14% faster (bench/README.md)
    #[arg(long, conflicts_with = "no_delta")]
    pub no_delta_siblings: bool,
    /// Sibling bases, the default since they have fallback frames (accepted for scripts
    /// written when they were not)
    #[arg(long, hide = true, conflicts_with = "no_delta_siblings")]
    pub delta_siblings: bool,
    /// Also write the whole image as image frames (1 MiB groups of its distinct chunks, each
    /// compressed against the 1 MiB of the image just before it and the earlier chunks of
    /// the release it resembles; about the compressed image again in store space, and make
    /// takes 20-30 times a plain make): a device whose plan would cost more in plain frames
    /// (a wiped slot, a major upgrade) takes these instead, about `zstd -19` of the image
    #[arg(long)]
    pub image_frames: bool,
    /// A release of several images: NAME=PATH of an image devices install into the inactive
    /// slot of its A/B pair, switched together with the release's other such images
    /// (repeatable; e.g. --image rootfs=rootfs.ext4 --image appfs=app.erofs). Writes a signed
    /// manifest, releases/<version>/release.json, that channels point at
    #[arg(long = "image", value_name = "NAME=PATH", conflicts_with = "name")]
    pub images: Vec<String>,
    /// With --image: NAME=PATH of an image written once per release to a single-copy target
    /// (a bootloader, a second processor's firmware), after the slot images verified
    #[arg(long = "single-copy", value_name = "NAME=PATH", requires = "images")]
    pub single_copy: Vec<String>,
    /// The image file (rootfs.ext4, .erofs, .squashfs, any block image) of a one-image release
    #[arg(required_unless_present = "images", conflicts_with = "images")]
    pub image: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct BundleArgs {
    /// The store holding the releases (or use --to-image)
    #[arg(
        long,
        required_unless_present = "to_image",
        conflicts_with = "to_image"
    )]
    pub store: Option<PathBuf>,
    /// The release to bundle
    #[arg(
        long,
        required_unless_present = "to_image",
        conflicts_with = "to_image"
    )]
    pub to: Option<String>,
    /// A release the devices run (repeat); without it the bundle carries every chunk
    #[arg(long)]
    pub from: Vec<String>,
    /// One image of the release (its index releases/<version>/<NAME>.didx), for devices
    /// that read only one-image bundles; default: every image of a release with a manifest
    /// (release.json), else rootfs
    #[arg(long)]
    pub name: Option<String>,
    /// Without a store: the new image (with --version, --compatible, --key)
    #[arg(long, requires_all = ["version", "compatible", "key"])]
    pub to_image: Option<PathBuf>,
    /// Without a store: an image the devices run (repeat)
    #[arg(long, requires = "to_image")]
    pub from_image: Vec<PathBuf>,
    /// Without a store: the new image's release version
    #[arg(long)]
    pub version: Option<String>,
    /// Without a store: what devices must match
    #[arg(long)]
    pub compatible: Option<String>,
    /// Without a store: the secret key to sign the new index with
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Without a store: zstd level of the chunks' frames
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// The bundle file to write (.dfb)
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The store's directory
    pub dir: PathBuf,
    /// Address and port to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PEM certificate chain: serve HTTPS (with --tls-key)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Append one line per request: METHOD PATH RANGE STATUS BYTES
    #[arg(long)]
    pub access_log: Option<PathBuf>,
    /// Time a client has to send a request's headers (and the TLS handshake)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Close a connection that moves no byte for this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Connections served at once (keep it below the file descriptor limit); more wait
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// Where the password of an encrypted secret key comes from.
#[derive(clap::Args, Debug)]
pub struct PasswordArgs {
    /// Read the password from this file instead of $DIFFOTA_KEY_PASSWORD or a prompt
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// `--delta-depth`: 1 to `MAX_DELTA_DEPTH` newest older releases.
fn delta_depth(value: &str) -> Result<usize, String> {
    use chunk_server::make::base_releases::MAX_DELTA_DEPTH;
    match value.parse::<usize>() {
        Ok(depth) if (1..=MAX_DELTA_DEPTH).contains(&depth) => Ok(depth),
        _ => Err(format!(
            "expected a number of releases from 1 to {MAX_DELTA_DEPTH} (--no-delta writes none)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        let missing =
            diffota_cli::help::undescribed_arguments(&<Cli as clap::CommandFactory>::command());
        assert!(missing.is_empty(), "without a description: {missing:?}");
    }

    #[test]
    fn parses_every_subcommand() {
        for args in [
            &["chunk-server", "keygen", "--unencrypted"][..],
            &[
                "chunk-server",
                "make",
                "--store",
                "s",
                "--version",
                "1",
                "--compatible",
                "c",
                "--no-sign",
                "img",
            ],
            &[
                "chunk-server",
                "make",
                "--store",
                "s",
                "--version",
                "1",
                "--compatible",
                "c",
                "--key",
                "k",
                "img",
            ],
            &["chunk-server", "sign", "--key", "k", "a.didx"],
            &["chunk-server", "verify", "--public-key", "p", "store"],
            &[
                "chunk-server",
                "verify",
                "--no-signature-check",
                "store",
                "1.0",
            ],
            &["chunk-server", "diff", "a", "b"],
            &["chunk-server", "prune", "--store", "s", "--keep", "2"],
            &[
                "chunk-server",
                "bundle",
                "--store",
                "s",
                "--to",
                "2",
                "--from",
                "1",
                "out.dfb",
            ],
            &[
                "chunk-server",
                "bundle",
                "--from-image",
                "a",
                "--to-image",
                "b",
                "--version",
                "2",
                "--compatible",
                "c",
                "--key",
                "k",
                "o",
            ],
            &["chunk-server", "serve", "dir", "--listen", "127.0.0.1:0"],
            &[
                "chunk-server",
                "channel",
                "set",
                "--store",
                "s",
                "stable",
                "--release",
                "1",
                "--key",
                "k",
                "--percent",
                "5",
            ],
            &["chunk-server", "channel", "show", "--store", "s", "stable"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from([
            "chunk-server",
            "make",
            "--store",
            "s",
            "--version",
            "1",
            "--compatible",
            "c",
            "img"
        ])
        .is_err());
    }

    fn make_with(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "chunk-server",
            "make",
            "--store",
            "s",
            "--version",
            "1",
            "--compatible",
            "c",
            "--no-sign",
        ];
        args.extend_from_slice(extra);
        args.push("img");
        Cli::try_parse_from(args)
    }

    fn delta_depth_of(cli: Cli) -> usize {
        match cli.command {
            Command::Make(args) => args.delta_depth,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn delta_depth_defaults_to_three_and_stays_within_bounds() {
        assert_eq!(delta_depth_of(make_with(&[]).unwrap()), 3);
        assert_eq!(
            delta_depth_of(make_with(&["--delta-depth", "1"]).unwrap()),
            1
        );
        assert_eq!(
            delta_depth_of(make_with(&["--delta-depth", "8"]).unwrap()),
            8
        );
        for bad in ["0", "9", "100", "two"] {
            let error = make_with(&["--delta-depth", bad]).unwrap_err().to_string();
            assert!(error.contains("from 1 to 8"), "{bad}: {error}");
        }
        for other in [&["--no-delta"][..], &["--delta-from", "0.9"]] {
            let mut args = vec!["--delta-depth", "2"];
            args.extend_from_slice(other);
            assert!(make_with(&args).is_err(), "--delta-depth with {other:?}");
        }
    }
}
