//! The one way the end-to-end suite builds what it tests: a temporary directory, a release
//! key, a store with releases made from images, channels, and devices running one of those
//! images. Each topic builds the fleet it needs with these steps, e.g.
//!
//! ```ignore
//! let mut fleet = Fleet::new();
//! fleet.sample_release("1.0", 8 * MIB, 5, 1);
//! fleet.sample_release("2.0", 8 * MIB, 5, 2);
//! fleet.publish("2.0");
//! let device = fleet.device("device", "1.0", 10 * MIB, &server.url, |_| {});
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diffota_format::Index;

use crate::sample::write_image;
use crate::{
    make_command, make_release, run_ok, set_channel, Config, Device, Keys, Slot, StoreServer,
};

pub const MIB: u64 = 1 << 20;

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub store: PathBuf,
    images: BTreeMap<String, PathBuf>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl Fleet {
    /// A temporary directory with a release key pair and an empty store (`store/`).
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate(dir.path(), "release");
        let store = dir.path().join("store");
        Fleet {
            dir,
            keys,
            store,
            images: BTreeMap::new(),
        }
    }

    /// `name` inside the fleet's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The image of release `version` (`v<version>.img`), made by one of the steps below.
    pub fn image(&self, version: &str) -> &Path {
        self.images
            .get(version)
            .unwrap_or_else(|| panic!("the fleet has no image for {version}"))
    }

    /// Writes a deterministic sample image for `version` (`sample::write_image`: files of
    /// `seed`'s layout, at `generation`), without making a release of it.
    pub fn sample_image(
        &mut self,
        version: &str,
        size: u64,
        seed: u64,
        generation: u64,
    ) -> PathBuf {
        let path = self.image_path(version);
        write_image(&path, size, seed, generation).unwrap();
        self.images.insert(version.into(), path.clone());
        path
    }

    /// Takes `bytes` as the image of `version`, without making a release of it.
    pub fn image_bytes(&mut self, version: &str, bytes: &[u8]) -> PathBuf {
        let path = self.image_path(version);
        std::fs::write(&path, bytes).unwrap();
        self.images.insert(version.into(), path.clone());
        path
    }

    /// A sample image made into release `version` (plain chunks, `test-board`).
    pub fn sample_release(
        &mut self,
        version: &str,
        size: u64,
        seed: u64,
        generation: u64,
    ) -> PathBuf {
        let path = self.sample_image(version, size, seed, generation);
        self.make(version);
        path
    }

    /// `chunk-server make` of `version`'s image as a user runs it (`test-board`, a fixed
    /// clock): delta frames against the newest older release, if any, by default; returns
    /// the JSON summary.
    pub fn make(&self, version: &str) -> serde_json::Value {
        make_release(&self.store, &self.keys, version, self.image(version))
    }

    /// `make` with further arguments (`--delta-from 1.0`, `--no-delta`, `--image-frames`...);
    /// returns the JSON summary.
    pub fn make_with(&self, version: &str, args: &[&str]) -> serde_json::Value {
        let stdout = run_ok(
            make_command(
                &self.store,
                &self.keys,
                version,
                "test-board",
                self.image(version),
            )
            .args(args)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1790000000"),
        );
        serde_json::from_str(&stdout).expect("make --json prints JSON")
    }

    /// `chunk-server make` of a release of several images: `slot_images` and `single_copy`
    /// as NAME=PATH (`--image`, `--single-copy`), signed, at the fleet's fixed clock, with
    /// `args` besides; returns the JSON summary.
    pub fn make_images(
        &self,
        version: &str,
        slot_images: &[(&str, &Path)],
        single_copy: &[(&str, &Path)],
        args: &[&str],
    ) -> serde_json::Value {
        let mut command = crate::chunk_server();
        command
            .args([
                "make",
                "--json",
                "--zstd-level",
                "3",
                "--compatible",
                "test-board",
            ])
            .args(["--version", version, "--store"])
            .arg(&self.store)
            .arg("--key")
            .arg(&self.keys.secret)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1790000000");
        for (flag, images) in [("--image", slot_images), ("--single-copy", single_copy)] {
            for (name, path) in images {
                command.arg(flag).arg(format!("{name}={}", path.display()));
            }
        }
        serde_json::from_str(&run_ok(&mut command)).expect("make --json prints JSON")
    }

    /// Points channel `stable` at `version`.
    pub fn publish(&self, version: &str) {
        self.set_channel("stable", version, &[]);
    }

    /// `chunk-server channel set CHANNEL --release VERSION` with further arguments.
    pub fn set_channel(&self, channel: &str, version: &str, extra: &[&str]) {
        set_channel(&self.store, &self.keys, channel, version, extra);
    }

    /// `chunk-server serve` of the store on 127.0.0.1 (plain HTTP), its access log in
    /// `access.log`.
    pub fn serve(&self) -> StoreServer {
        StoreServer::start(&self.store, &self.path("access.log"), None)
    }

    /// `serve` over HTTPS with a certificate of `ca` (a `TestCa` in the fleet's directory).
    pub fn serve_tls(&self, ca: &crate::TestCa) -> StoreServer {
        StoreServer::start(
            &self.store,
            &self.path("access.log"),
            Some((&ca.server_cert, &ca.server_key)),
        )
    }

    /// `chunk-server pull --json` of `url`'s stable channel into the store at `local`,
    /// trusting the fleet's key and `ca`.
    pub fn pull_into(&self, local: &Path, ca: &crate::TestCa, url: &str) -> std::process::Output {
        crate::run(
            crate::chunk_server()
                .args(["pull", "--json", "--store"])
                .arg(local)
                .arg("--public-key")
                .arg(&self.keys.public)
                .arg("--ca-file")
                .arg(&ca.ca_cert)
                .arg(url),
        )
    }

    /// `<dir>/<name>`: an offline bundle of release `to` for devices running any of `from`
    /// (none: every chunk), made by `chunk-server bundle`; returns its summary (`--json`).
    pub fn bundle(&self, to: &str, from: &[&str], name: &str) -> (PathBuf, serde_json::Value) {
        let out = self.path(name);
        let mut command = crate::chunk_server();
        command
            .args(["bundle", "--json", "--to", to, "--store"])
            .arg(&self.store);
        for version in from {
            command.args(["--from", version]);
        }
        let summary = serde_json::from_str(&run_ok(command.arg(&out))).unwrap();
        (out, summary)
    }

    /// Release `version`'s index as the store holds it.
    pub fn index(&self, version: &str) -> Index {
        let path = self.store.join(format!("releases/{version}/rootfs.didx"));
        Index::decode(&std::fs::read(path).unwrap()).unwrap()
    }

    /// A device in `<dir>/<name>` running `running`'s image from slot A (factory-flashed:
    /// no stored index), slot B of `slot_size` zero bytes, configured for `server_url` with
    /// the fleet's key and its config changed by `edit`.
    pub fn device(
        &self,
        name: &str,
        running: &str,
        slot_size: u64,
        server_url: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Device {
        self.device_running(name, self.image(running), slot_size, server_url, edit)
    }

    /// `device`, running an image that is not one of the fleet's releases.
    pub fn device_running(
        &self,
        name: &str,
        running: &Path,
        slot_size: u64,
        server_url: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Device {
        let device = Device::new(&self.path(name), running, slot_size);
        device.configure(server_url, &[&self.keys.public], edit);
        device
    }

    /// Whether slot `slot` of `device` starts with release `version`'s image.
    pub fn slot_holds(&self, device: &Device, slot: Slot, version: &str) -> bool {
        let expected = std::fs::read(self.image(version)).unwrap();
        device.slot_bytes(slot, expected.len()) == expected
    }

    fn image_path(&self, version: &str) -> PathBuf {
        self.path(&format!("v{version}.img"))
    }
}
