//! Support for the end-to-end tests and the demo: the real binaries, a real store server on
//! 127.0.0.1 that records what it served, a misbehaving server for the bad-input cases,
//! file-backed A/B devices, and a deterministic sample image generator.

pub use diffota::config::Config;
pub use diffota::slot::Slot;

pub mod bootmodel;
pub mod crates_inc;
pub mod faults;
pub mod fleet;
pub mod report_endpoint;
pub mod sample;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;

/// The workspace's target directory (this test binary lives in `<target>/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary, built once per test process so tests never run stale ones.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = bin_dir().ends_with("release");
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "chunk-server", "-p", "diffota"]);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("running cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// True when `tool` is on PATH. When it is not: fails under DIFFOTA_REQUIRE_TOOLS=1 (CI),
/// otherwise prints a loud skip message and returns false.
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("DIFFOTA_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{tool} (Debian package {package}) is required (DIFFOTA_REQUIRE_TOOLS=1) but not installed");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {tool} not found; install the Debian package {package} to run this test !!!!!!!!\n");
    false
}

/// Runs a command and returns its output; stdout and stderr are echoed for failing tests.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    eprintln!(
        "$ {command:?}\n  exit: {}\n  stdout: {}\n  stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    );
    output
}

/// A command's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command that must exit with `code` (see the README's exit statuses); returns its
/// stdout.
pub fn run_exit(command: &mut Command, code: i32) -> String {
    let output = run(command);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn chunk_server() -> Command {
    Command::new(bin("chunk-server"))
}

pub fn diffota() -> Command {
    Command::new(bin("diffota"))
}

/// A publishing key pair (unencrypted, for tests).
pub struct Keys {
    pub secret: PathBuf,
    pub public: PathBuf,
}

impl Keys {
    pub fn generate(dir: &Path, name: &str) -> Keys {
        let keys = Keys {
            secret: dir.join(format!("{name}.key")),
            public: dir.join(format!("{name}.pub")),
        };
        run_ok(
            chunk_server()
                .arg("keygen")
                .arg("--unencrypted")
                .arg("--secret-key")
                .arg(&keys.secret)
                .arg("--public-key")
                .arg(&keys.public),
        );
        keys
    }
}

/// `chunk-server make` with a fast zstd level; returns the JSON summary.
pub fn make_release(store: &Path, keys: &Keys, version: &str, image: &Path) -> serde_json::Value {
    make_release_for(store, keys, version, "test-board", image)
}

/// `make_release` for another `compatible` (a release for some other board).
pub fn make_release_for(
    store: &Path,
    keys: &Keys,
    version: &str,
    compatible: &str,
    image: &Path,
) -> serde_json::Value {
    let stdout = run_ok(
        make_command(store, keys, version, compatible, image)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1790000000"),
    );
    serde_json::from_str(&stdout).expect("make --json prints JSON")
}

/// `chunk-server make` of `image` as `version` with a fast zstd level, signed with `keys`,
/// with the clock as it is (no SOURCE_DATE_EPOCH).
pub fn make_command(
    store: &Path,
    keys: &Keys,
    version: &str,
    compatible: &str,
    image: &Path,
) -> Command {
    let mut command = chunk_server();
    command
        .args([
            "make",
            "--zstd-level",
            "3",
            "--compatible",
            compatible,
            "--version",
            version,
            "--store",
        ])
        .arg(store)
        .arg("--key")
        .arg(&keys.secret)
        .arg(image)
        .env_remove("SOURCE_DATE_EPOCH");
    command
}

/// A variable map from pairs (bootloader environments).
pub fn vars(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn set_channel(store: &Path, keys: &Keys, channel: &str, version: &str, extra: &[&str]) {
    run_ok(
        chunk_server()
            .args(["channel", "set", channel, "--release", version, "--store"])
            .arg(store)
            .arg("--key")
            .arg(&keys.secret)
            .args(extra),
    );
}

/// One request line of `chunk-server serve --access-log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub range: Option<(u64, u64)>,
    pub status: u16,
    pub bytes: u64,
}

/// `chunk-server serve` on 127.0.0.1:0, killed on drop.
pub struct StoreServer {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl StoreServer {
    pub fn start(dir: &Path, log: &Path, tls: Option<(&Path, &Path)>) -> StoreServer {
        StoreServer::start_with(dir, log, tls, |_| {})
    }

    /// `start`, with further arguments or process settings given by `configure`.
    pub fn start_with(
        dir: &Path,
        log: &Path,
        tls: Option<(&Path, &Path)>,
        configure: impl FnOnce(&mut Command),
    ) -> StoreServer {
        let mut command = chunk_server();
        command
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--access-log"])
            .arg(log);
        if let Some((cert, key)) = tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        configure(&mut command);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting chunk-server serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("reading listen line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected serve output {line:?}"))
            .to_owned();
        StoreServer {
            child,
            url,
            log: log.to_owned(),
        }
    }

    pub fn served(&self) -> Vec<Served> {
        parse_access_log(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn clear_log(&self) {
        std::fs::write(&self.log, b"").expect("clearing access log");
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_access_log(text: &str) -> Vec<Served> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() != 5 {
                return None;
            }
            let range = fields[2].strip_prefix("bytes=").and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            });
            Some(Served {
                method: fields[0].into(),
                path: fields[1].into(),
                range,
                status: fields[3].parse().ok()?,
                bytes: fields[4].parse().ok()?,
            })
        })
        .collect()
}

/// A file-backed A/B device: slot files, kernel command line, state dir, config.
pub struct Device {
    pub dir: PathBuf,
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub cmdline: PathBuf,
}

impl Device {
    /// A device running slot A, which holds `running_image`; slot B is `slot_size` zero bytes.
    pub fn new(dir: &Path, running_image: &Path, slot_size: u64) -> Device {
        std::fs::create_dir_all(dir).unwrap();
        let device = Device {
            dir: dir.to_owned(),
            slot_a: dir.join("slot-a.img"),
            slot_b: dir.join("slot-b.img"),
            config: dir.join("diffota.toml"),
            state: dir.join("state"),
            cmdline: dir.join("cmdline"),
        };
        std::fs::copy(running_image, &device.slot_a).unwrap();
        let a_len = std::fs::metadata(&device.slot_a).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&device.slot_a)
            .unwrap()
            .set_len(a_len.max(slot_size))
            .unwrap();
        std::fs::File::create(&device.slot_b)
            .unwrap()
            .set_len(slot_size)
            .unwrap();
        std::fs::write(&device.cmdline, "console=ttyS0 diffota.slot=a rootwait\n").unwrap();
        std::fs::write(device.dir.join("boot_id"), "boot-0\n").unwrap();
        device
    }

    /// The config this device starts from, as the updater itself parses it (its defaults
    /// filled in): `server_url`, `public_keys`, compatible `test-board`, device id
    /// `test-device`, this device's slots, state dir, command line and boot id file.
    pub fn base_config(&self, server_url: &str, public_keys: &[&Path]) -> Config {
        let text = toml::toml! {
            server_url = "placeholder"
            compatible = "test-board"
            public_keys = []
            device_id = { value = "test-device" }
            [slots]
            a = "a"
            b = "b"
        }
        .to_string();
        // Deserialized without `validate`: the keys and slots are filled in below.
        let mut config: Config = toml::from_str(&text).unwrap();
        config.server_url = server_url.to_owned();
        config.public_keys = public_keys.iter().map(|k| k.to_path_buf()).collect();
        config.state_dir = self.state.clone();
        config.slots.a = self.slot_a.clone();
        config.slots.b = self.slot_b.clone();
        config.boot.cmdline = self.cmdline.clone();
        config.boot.boot_id_file = self.dir.join("boot_id");
        config
    }

    /// Writes the config: `base_config` changed by `edit`.
    pub fn configure(
        &self,
        server_url: &str,
        public_keys: &[&Path],
        edit: impl FnOnce(&mut Config),
    ) {
        let mut config = self.base_config(server_url, public_keys);
        edit(&mut config);
        self.write_config(&config);
    }

    pub fn write_config(&self, config: &Config) {
        std::fs::write(&self.config, toml::to_string(config).unwrap()).unwrap();
    }

    /// Writes a config that the updater's types cannot express (a typo, a broken file).
    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn diffota(&self) -> Command {
        let mut command = diffota();
        command.arg("--config").arg(&self.config);
        command
    }

    /// A reboot into `slot`: a new kernel command line and a new boot id.
    pub fn boot_into(&self, slot: Slot) {
        std::fs::write(
            &self.cmdline,
            format!("console=ttyS0 diffota.slot={slot} rootwait\n"),
        )
        .unwrap();
        let boot_id = self.dir.join("boot_id");
        let boots: u64 = std::fs::read_to_string(&boot_id)
            .ok()
            .and_then(|text| {
                text.trim()
                    .strip_prefix("boot-")
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0);
        std::fs::write(&boot_id, format!("boot-{}\n", boots + 1)).unwrap();
    }

    /// The first `length` bytes of a slot file.
    pub fn slot_bytes(&self, slot: Slot, length: usize) -> Vec<u8> {
        let path = match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        };
        let mut bytes = std::fs::read(path).unwrap();
        bytes.truncate(length);
        bytes
    }
}

/// A test CA and a server certificate for 127.0.0.1, made with the openssl tool.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> TestCa {
        let ca = TestCa {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let ext = dir.join("server.ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=diffota test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let _ = (ca_key, csr);
        ca
    }
}
