//! `chunk-server`: the publishing tool. A thin shell: parse arguments, call the library,
//! print results, map errors to exit codes.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chunk_server::keys::{self, Password};
use chunk_server::store::Store;
use clap::{Parser, Subcommand};
use diffota_cli::{errln, out, outln};
use diffota_format::{ChunkerParams, TrustedKeys};

#[derive(Parser, Debug)]
#[command(
    name = "chunk-server",
    version,
    about = "Publish diffota releases: chunk images into a store of packs and signed indexes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a minisign key pair for signing releases (password-protected unless --unencrypted)
    Keygen {
        #[arg(long, default_value = "diffota.key")]
        secret_key: PathBuf,
        #[arg(long, default_value = "diffota.pub")]
        public_key: PathBuf,
        /// Store the secret key without a password (for CI keys)
        #[arg(long)]
        unencrypted: bool,
        /// Read the password from this file instead of $DIFFOTA_KEY_PASSWORD or a prompt
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Chunk an image into the store and write its signed release index
    Make {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        compatible: String,
        /// Index file name inside releases/<version>/
        #[arg(long, default_value = "rootfs")]
        name: String,
        /// Secret key to sign the index with
        #[arg(long, required_unless_present = "no_sign")]
        key: Option<PathBuf>,
        /// Write the index unsigned (sign it later with `chunk-server sign`)
        #[arg(long, conflicts_with = "key")]
        no_sign: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Average chunk size in bytes (min is a quarter, max four times)
        #[arg(long, default_value_t = ChunkerParams::DEFAULT.avg_size)]
        avg_chunk_size: u32,
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=22))]
        zstd_level: i32,
        /// The index expires this long after creation (e.g. "90days"); none by default
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
        image: PathBuf,
    },
    /// Sign index or channel files with a secret key (writes FILE.minisig)
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check signatures, packs and every chunk of a store (or of one release)
    Verify {
        /// Trusted public key (repeat for several)
        #[arg(long = "public-key", required_unless_present = "no_signature_check")]
        public_keys: Vec<PathBuf>,
        #[arg(long)]
        no_signature_check: bool,
        #[arg(long)]
        json: bool,
        store: PathBuf,
        version: Option<String>,
    },
    /// What a device on OLD downloads to reach NEW (index files)
    Diff {
        #[arg(long, default_value_t = diffota_format::ranges::DEFAULT_MAX_GAP)]
        max_gap: u64,
        #[arg(long)]
        json: bool,
        old: PathBuf,
        new: PathBuf,
    },
    /// Write one file with a release and the chunks devices on older releases lack
    Bundle {
        /// The store holding the releases (or use --to-image)
        #[arg(
            long,
            required_unless_present = "to_image",
            conflicts_with = "to_image"
        )]
        store: Option<PathBuf>,
        /// The release to bundle
        #[arg(
            long,
            required_unless_present = "to_image",
            conflicts_with = "to_image"
        )]
        to: Option<String>,
        /// A release the devices run (repeat); without it the bundle carries every chunk
        #[arg(long)]
        from: Vec<String>,
        #[arg(long, default_value = "rootfs")]
        name: String,
        /// Without a store: the new image (with --version, --compatible, --key)
        #[arg(long, requires_all = ["version", "compatible", "key"])]
        to_image: Option<PathBuf>,
        /// Without a store: an image the devices run (repeat)
        #[arg(long, requires = "to_image")]
        from_image: Vec<PathBuf>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        compatible: Option<String>,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=22))]
        zstd_level: i32,
        #[arg(long)]
        json: bool,
        out: PathBuf,
    },
    /// Remove all but the newest N releases and the packs only they used
    Prune {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        keep: usize,
        #[arg(long)]
        dry_run: bool,
    },
    /// Publish and inspect channel files
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Serve a store over HTTP(S) for development and tests
    Serve {
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Append one line per request: METHOD PATH RANGE STATUS BYTES
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// Time a client has to send a request's headers (and the TLS handshake)
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        header_timeout: std::time::Duration,
        /// Close a connection that moves no byte for this long
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        idle_timeout: std::time::Duration,
        /// Connections served at once (keep it below the file descriptor limit); more wait
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
    },
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Point a channel at a release, with its rollout
    Set {
        #[arg(long)]
        store: PathBuf,
        channel: String,
        #[arg(long)]
        release: String,
        #[arg(long, default_value = "rootfs")]
        name: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        password_file: Option<PathBuf>,
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
        #[arg(long)]
        pause: bool,
        #[arg(long, default_value = "7days")]
        expires: humantime::Duration,
    },
    /// Print a channel file
    Show {
        #[arg(long)]
        store: PathBuf,
        channel: String,
        /// Count how many of these device ids (one per line) are eligible now
        #[arg(long)]
        devices: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    diffota_cli::init_logging(diffota_cli::LogTimes::Shown);
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("chunk-server: error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A reader that went away is fine; output that could not be written is a failure.
    match diffota_cli::output::finish() {
        Ok(()) => code,
        Err(e) => {
            errln!("chunk-server: error: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn load_key(path: &Path, password_file: Option<&Path>) -> Result<minisign::SecretKey> {
    let password = Password::from_sources(password_file)?;
    Ok(keys::load_secret_key(path, password)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen {
            secret_key,
            public_key,
            unencrypted,
            password_file,
            force,
        } => {
            let password = if unencrypted {
                Password::None
            } else {
                Password::from_sources(password_file.as_deref())?
            };
            keys::generate(&secret_key, &public_key, password, force)?;
            outln!(
                "secret key: {}\npublic key: {}",
                secret_key.display(),
                public_key.display()
            );
        }
        Command::Make {
            store,
            version,
            compatible,
            name,
            key,
            no_sign: _,
            password_file,
            avg_chunk_size,
            zstd_level,
            expires,
            json,
            image,
        } => {
            let signing_key = key
                .as_deref()
                .map(|k| load_key(k, password_file.as_deref()))
                .transpose()?;
            let created = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(epoch) => epoch
                    .trim()
                    .parse()
                    .context("SOURCE_DATE_EPOCH is not a number of seconds")?,
                Err(_) => now(),
            };
            let total = image_size(&image);
            let bar = (std::io::stderr().is_terminal() && !json).then(|| progress_bar(total));
            let progress = |done: u64| {
                if let Some(bar) = &bar {
                    bar.set_position(done);
                }
            };
            let options = chunk_server::make::MakeOptions {
                image: &image,
                version: &version,
                compatible: &compatible,
                name: &name,
                chunker: ChunkerParams::with_average(avg_chunk_size)?,
                zstd_level,
                created,
                expires: expires.map(|d| created + d.as_secs()),
                signing_key: signing_key.as_ref(),
                progress: &progress,
            };
            let summary = chunk_server::make::make(&Store::new(&store), &options)
                .with_context(|| format!("making release {version} from {}", image.display()))?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                outln!(
                    "release {} -> {}{}",
                    summary.version,
                    summary.index.display(),
                    if summary.signed { "" } else { " (unsigned)" }
                );
                outln!("  image            {} bytes", summary.image_bytes);
                outln!(
                    "  chunks           {} ({} distinct)",
                    summary.chunks,
                    summary.distinct_chunks
                );
                outln!(
                    "  new chunks       {} ({} compressed bytes{})",
                    summary.new_chunks,
                    summary.new_compressed_bytes,
                    summary
                        .pack
                        .as_deref()
                        .map(|p| format!(" in {p}"))
                        .unwrap_or_default()
                );
                outln!(
                    "  release size     {} compressed bytes",
                    summary.release_compressed_bytes
                );
                outln!(
                    "  dedup ratio      {:.2}x (image bytes per new stored byte)",
                    summary.dedup_ratio()
                );
                outln!(
                    "  throughput       {:.1} MiB/s ({:.2} s)",
                    summary.throughput_mib_s(),
                    summary.seconds
                );
            }
        }
        Command::Sign {
            key,
            password_file,
            files,
        } => {
            let secret_key = load_key(&key, password_file.as_deref())?;
            for file in files {
                let bytes = fs_err::read(&file)?;
                let comment = format!(
                    "diffota {}",
                    file.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                let signature =
                    chunk_server::make::sign_file(&file, &bytes, &secret_key, &comment)?;
                outln!("{}", signature.display());
            }
        }
        Command::Verify {
            public_keys,
            no_signature_check,
            json,
            store,
            version,
        } => {
            let keys = if no_signature_check {
                None
            } else {
                Some(load_public_keys(&public_keys)?)
            };
            let report = chunk_server::verify::verify_store(
                &Store::new(&store),
                version.as_deref(),
                keys.as_ref(),
                now(),
            )?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for problem in &report.problems {
                    outln!("BAD {problem}");
                }
                outln!(
                    "{} releases, {} packs, {} chunks checked: {} problems",
                    report.releases,
                    report.packs,
                    report.chunks,
                    report.problems.len()
                );
            }
            if !report.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Diff {
            max_gap,
            json,
            old,
            new,
        } => {
            let old_index = chunk_server::store::read_index(&old)?;
            let new_index = chunk_server::store::read_index(&new)?;
            let signature_size = fs_err::metadata(diffota_format::signature::signature_path(&new))
                .map(|m| m.len())
                .unwrap_or(0);
            let index_bytes = fs_err::metadata(&new)?.len() + signature_size;
            let report = chunk_server::diff::diff(&old_index, &new_index, index_bytes, max_gap);
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!("{} -> {}", old_index.version, new_index.version);
                outln!(
                    "  chunks           {} ({} reused, {} fetched)",
                    report.chunks,
                    report.reused_chunks,
                    report.fetched_chunks
                );
                outln!(
                    "  image bytes      {} reused, {} fetched",
                    report.reused_bytes,
                    report.fetched_image_bytes
                );
                outln!(
                    "  download         {} bytes in {} requests (index included)",
                    report.download_bytes,
                    report.requests
                );
            }
        }
        Command::Prune {
            store,
            keep,
            dry_run,
        } => {
            let report = chunk_server::prune::prune(&Store::new(&store), keep, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for release in &report.removed_releases {
                outln!("{verb} release {release}");
            }
            for pack in &report.removed_packs {
                outln!("{verb} pack {pack}");
            }
            outln!("{verb} {} bytes", report.freed_bytes);
        }
        Command::Channel { command } => return run_channel(command),
        Command::Bundle {
            store,
            to,
            from,
            name,
            to_image,
            from_image,
            version,
            compatible,
            key,
            password_file,
            zstd_level,
            json,
            out,
        } => {
            let summary = match (store, to, to_image) {
                (Some(store), Some(to), None) => {
                    chunk_server::bundle::bundle(&Store::new(&store), &to, &from, &name, &out)?
                }
                (None, None, Some(to_image)) => {
                    let key = load_key(
                        key.as_deref().expect("clap requires --key"),
                        password_file.as_deref(),
                    )?;
                    bundle_from_images(
                        &from_image,
                        &to_image,
                        version.as_deref().unwrap_or_default(),
                        compatible.as_deref().unwrap_or_default(),
                        &key,
                        zstd_level,
                        &out,
                    )?
                }
                _ => bail!("give --store and --to, or --to-image"),
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                outln!(
                    "{}: release {} with {} of its {} chunks ({} bytes), for devices on {}",
                    summary.path.display(),
                    summary.to,
                    summary.bundled_chunks,
                    summary.chunks,
                    summary.bundle_bytes,
                    if summary.from.is_empty() {
                        "any release".to_owned()
                    } else {
                        summary.from.join(", ")
                    }
                );
            }
        }
        Command::Serve {
            dir,
            listen,
            tls_cert,
            tls_key,
            access_log,
            header_timeout,
            idle_timeout,
            max_connections,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let options = chunk_server::serve::ServeOptions {
                root: dir,
                listen,
                tls_cert,
                tls_key,
                access_log,
                limits: chunk_server::serve::ConnectionLimits {
                    header_timeout,
                    idle_timeout,
                    max_connections: max_connections as usize,
                },
            };
            runtime.block_on(chunk_server::serve::serve(options))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_channel(command: ChannelCommand) -> Result<ExitCode> {
    match command {
        ChannelCommand::Set {
            store,
            channel,
            release,
            name,
            key,
            password_file,
            percent,
            stages,
            mut devices,
            devices_file,
            pause,
            expires,
        } => {
            if let Some(path) = devices_file {
                devices.extend(read_lines(&path)?);
            }
            let stages = stages
                .iter()
                .map(|s| parse_stage(s))
                .collect::<Result<Vec<_>>>()?;
            let signing_key = load_key(&key, password_file.as_deref())?;
            let options = chunk_server::channel::ChannelOptions {
                channel: &channel,
                release: &release,
                name: &name,
                percent,
                stages,
                devices,
                paused: pause,
                now: now(),
                lifetime_seconds: expires.as_secs(),
                signing_key: &signing_key,
            };
            let written = chunk_server::channel::set_channel(&Store::new(&store), &options)?;
            out!("{}", String::from_utf8_lossy(&written.to_json()));
        }
        ChannelCommand::Show {
            store,
            channel,
            devices,
        } => {
            let path = Store::new(&store).channel_path(&channel);
            let bytes = fs_err::read(&path)?;
            let parsed = diffota_format::Channel::parse(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            out!("{}", String::from_utf8_lossy(&parsed.to_json()));
            if let Some(devices) = devices {
                let ids = read_lines(&devices)?;
                let eligible = ids
                    .iter()
                    .filter(|id| parsed.eligibility(id, now()).is_eligible())
                    .count();
                outln!(
                    "{eligible} of {} listed devices are eligible now",
                    ids.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The "generate a patch" path: a throwaway store beside OUT, releases made from the
/// images, then a bundle from it.
fn bundle_from_images(
    from_images: &[PathBuf],
    to_image: &Path,
    version: &str,
    compatible: &str,
    key: &minisign::SecretKey,
    zstd_level: i32,
    out: &Path,
) -> Result<chunk_server::bundle::BundleSummary> {
    let store_dir = PathBuf::from(format!(
        "{}.store-tmp-{}",
        out.display(),
        std::process::id()
    ));
    let result = (|| {
        let store = Store::new(&store_dir);
        let created = now();
        let make = |image: &Path, version: &str| -> Result<()> {
            let options = chunk_server::make::MakeOptions {
                image,
                version,
                compatible,
                name: "rootfs",
                chunker: ChunkerParams::DEFAULT,
                zstd_level,
                created,
                expires: None,
                signing_key: Some(key),
                progress: &|_| {},
            };
            chunk_server::make::make(&store, &options)
                .with_context(|| format!("chunking {}", image.display()))?;
            Ok(())
        };
        let mut from = Vec::new();
        for (number, image) in from_images.iter().enumerate() {
            let from_version = format!("from-image-{}", number + 1);
            make(image, &from_version)?;
            from.push(from_version);
        }
        make(to_image, version)?;
        Ok(chunk_server::bundle::bundle(
            &store, version, &from, "rootfs", out,
        )?)
    })();
    let _ = std::fs::remove_dir_all(&store_dir);
    result
}

fn parse_stage(text: &str) -> Result<diffota_format::channel::Stage> {
    let Some((time, percent)) = text.rsplit_once('=') else {
        bail!("stage {text:?}: expected TIME=PERCENT");
    };
    let at = humantime::parse_rfc3339_weak(time.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(time))
        .with_context(|| format!("stage {text:?}: bad time"))?;
    let at = at.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let percent: f64 = percent
        .parse()
        .with_context(|| format!("stage {text:?}: bad percentage"))?;
    Ok(diffota_format::channel::Stage { at, percent })
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(fs_err::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn load_public_keys(paths: &[PathBuf]) -> Result<TrustedKeys> {
    let mut keys = TrustedKeys::new();
    for path in paths {
        let text = fs_err::read_to_string(path)?;
        keys.add(&path.display().to_string(), &text)?;
    }
    Ok(keys)
}

fn image_size(path: &Path) -> u64 {
    use std::io::Seek;
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .unwrap_or(0)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stages_parse() {
        let stage = parse_stage("2026-12-01T00:00:00Z=5").unwrap();
        assert_eq!(stage.percent, 5.0);
        assert_eq!(stage.at, 1_796_083_200);
        assert!(parse_stage("tomorrow").is_err());
    }
}
