//! The device configuration, `/etc/diffota.toml` by default. Unknown keys are errors that
//! name the key: a typo must not silently turn a setting off. `Config::parse` is pure,
//! `Config::load` reads the file, and both run `validate` for the rules across fields.
//!
//! Every path may be a regular file, so the whole device side runs in tests with
//! file-backed slots and a file-backed bootloader environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_PATH: &str = "/etc/diffota.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigProblem,
    },
}

/// A config that parses but cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("server_url is empty")]
    NoServerUrl,
    #[error(transparent)]
    Compatible(#[from] diffota_format::FormatError),
    #[error("no public_keys or public_keys_inline: nothing could be verified")]
    NoKeys,
    #[error("slots.a and slots.b are the same ({})", .0.display())]
    SameSlots(PathBuf),
    #[error("http.concurrency must be 1 to 64")]
    Concurrency,
    #[error("boot.boot_attempts must be 1 to 9 (the boot scripts count in one digit)")]
    BootAttempts,
    #[error("http.client_cert and http.client_key go together")]
    ClientCertWithoutKey,
    #[error("boot.backend {0:?} is not one of uboot, grub, custom, none")]
    Backend(String),
    #[error("boot.reboot_command is empty")]
    NoRebootCommand,
    #[error("http.headers: invalid header name {0:?}")]
    HeaderName(String),
    #[error("images.{0}: an image name is 1 to 32 characters of a-z, 0-9, _ and -, and not rootfs (that is [slots])")]
    ImageName(String),
    #[error("{} is named as two slots (slots and images must all be different devices)", .0.display())]
    SlotTwice(PathBuf),
    #[error("single_copy.{0}: give exactly one of device and handler (an absolute path), and a name of 1 to 32 characters of a-z, 0-9, _ and -")]
    SingleCopy(String),
    #[error("hooks: {} is not an absolute path", .0.display())]
    HookPath(PathBuf),
    #[error("hooks.timeout_secs must be 1 to 86400")]
    HookTimeout,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store root: `https://…`, `http://…`, `file:///…` or a plain path.
    pub server_url: String,
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Must equal the `compatible` string of every release this device accepts.
    pub compatible: String,
    /// Minisign public key files; a release signed by any of them is accepted.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// Minisign public keys given inline (the base64 line of a `.pub` file).
    #[serde(default)]
    pub public_keys_inline: Vec<String>,
    /// On the data partition, outside both slots.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub device_id: DeviceIdSource,
    /// The A/B pair of the release's root filesystem image (`rootfs`).
    pub slots: SlotsConfig,
    /// `[images.<name>]`: the A/B pair of another image of the release (an application
    /// partition), switched together with `[slots]`: the running slot's letter picks the
    /// running pair member of every image (one slot group per letter).
    #[serde(default)]
    pub images: BTreeMap<String, SlotsConfig>,
    /// `[single_copy.<name>]`: where the release's single-copy image `name` goes (a
    /// bootloader, a second processor's firmware): written once per release, after every
    /// image of the slot group read back matching, and skipped when it holds that image.
    #[serde(default)]
    pub single_copy: BTreeMap<String, SingleCopyConfig>,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// Where outcome reports go (none: nothing is reported or spooled).
    #[serde(default)]
    pub report: Option<ReportConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The integrator's executables at the points of an install and after a boot.
    #[serde(default)]
    pub hooks: HooksConfig,
}

/// `[hooks]`: absolute paths of executables per point, run in the order given (see
/// `hooks.rs` for the points, exit statuses and environment).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Before anything is written; may postpone (exit 75) or refuse (exit 77) the release.
    #[serde(default)]
    pub pre_install: Vec<PathBuf>,
    /// After the image is written, before it is read back; the image in `DIFFOTA_IMAGE_DEVICE`.
    #[serde(default)]
    pub post_write: Vec<PathBuf>,
    /// After the slot read back matching, before it is armed for its trial boot.
    #[serde(default)]
    pub pre_arm: Vec<PathBuf>,
    /// After `mark-good` committed the new slot (data migration, a second processor's
    /// firmware); run again at the next `mark-good` until they all succeeded.
    #[serde(default)]
    pub post_commit: Vec<PathBuf>,
    /// After `mark-good` found that the bootloader fell back to the old slot.
    #[serde(default)]
    pub post_revert: Vec<PathBuf>,
    /// Each hook is killed, with what it started, after this long.
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            pre_install: Vec::new(),
            post_write: Vec::new(),
            pre_arm: Vec::new(),
            post_commit: Vec::new(),
            post_revert: Vec::new(),
            timeout_secs: default_hook_timeout(),
        }
    }
}

impl HooksConfig {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.pre_install
            .iter()
            .chain(&self.post_write)
            .chain(&self.pre_arm)
            .chain(&self.post_commit)
            .chain(&self.post_revert)
    }
}

/// The operator's endpoint for outcome reports (`outcomes`): JSON POSTs, over the same
/// HTTP settings (`[http]`: CA, client certificate, headers) as the store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// `https://…` (or `http://…`).
    pub url: String,
    /// A file holding the bearer token sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// Attempts per report in one run; what is left waits for the next run.
    #[serde(default = "default_report_attempts")]
    pub attempts: u32,
    /// Delay before the second attempt; it doubles with each further attempt.
    #[serde(default = "default_report_retry_delay_ms")]
    pub retry_delay_ms: u64,
    #[serde(default = "default_report_timeout")]
    pub timeout_secs: u64,
}

impl ReportConfig {
    /// Reports to `url` with the default attempts, delay and timeout, and no token.
    pub fn new(url: String) -> ReportConfig {
        ReportConfig {
            url,
            bearer_token_file: None,
            attempts: default_report_attempts(),
            retry_delay_ms: default_report_retry_delay_ms(),
            timeout_secs: default_report_timeout(),
        }
    }
}

/// Metrics for node_exporter's textfile collector.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to write them, e.g. `/var/lib/node_exporter/textfile_collector/diffota.prom`.
    pub textfile: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    pub a: PathBuf,
    pub b: PathBuf,
}

/// A single-copy target: exactly one of `device` and `handler`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SingleCopyConfig {
    /// Written in place with the image and read back (a partition, an MTD block device, a
    /// file).
    pub device: Option<PathBuf>,
    /// For targets diffota cannot write itself: this executable gets the verified image as
    /// a file (`DIFFOTA_IMAGE_FILE`) and writes it (an MCU over a serial line, an FPGA).
    pub handler: Option<PathBuf>,
}

/// The release image `[slots]` holds.
pub const ROOTFS: &str = "rootfs";

impl SlotsConfig {
    pub fn path(&self, slot: crate::slot::Slot) -> &Path {
        match slot {
            crate::slot::Slot::A => &self.a,
            crate::slot::Slot::B => &self.b,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceIdSource {
    /// The id itself.
    pub value: Option<String>,
    /// A file whose first line is the id; default `/etc/machine-id`.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// `uboot`, `grub`, `custom`, or `none` (records nothing in a bootloader).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The kernel command line, which the boot script gives `diffota.slot=a|b`.
    #[serde(default = "default_cmdline")]
    pub cmdline: PathBuf,
    /// Boot attempts of a trial slot before the bootloader falls back.
    #[serde(default = "default_attempts")]
    pub boot_attempts: u32,
    /// U-Boot: where the environment lives, in the format of `/etc/fw_env.config`.
    #[serde(default = "default_fw_env_config")]
    pub fw_env_config: PathBuf,
    /// U-Boot: go through the real `fw_printenv`/`fw_setenv` instead of writing directly.
    #[serde(default)]
    pub use_fw_tools: bool,
    #[serde(default = "default_fw_printenv")]
    pub fw_printenv: PathBuf,
    #[serde(default = "default_fw_setenv")]
    pub fw_setenv: PathBuf,
    /// GRUB: the environment block.
    #[serde(default = "default_grubenv")]
    pub grubenv: PathBuf,
    /// custom: the board's script (see `boot/custom.rs` for its interface).
    #[serde(default = "default_script")]
    pub script: PathBuf,
    /// Changes with every boot; tells mark-good whether a trial was tried yet.
    #[serde(default = "default_boot_id_file")]
    pub boot_id_file: PathBuf,
    /// What `install --reboot`, `mark-bad --reboot` and `rollback --reboot` run.
    #[serde(default = "default_reboot_command")]
    pub reboot_command: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// PEM bundle of CAs to trust instead of the system bundle.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (and `client_key`) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// A transfer that receives nothing for this long is abandoned and retried.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_secs: u64,
    /// Range requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per request on 5xx, resets and timeouts.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Neighbouring chunks of a pack closer than this are fetched in one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u64,
    /// Whether an index URL on another origin than `server_url`'s may be installed from
    /// (`diffota install https://other/…/rootfs.didx`, D-Bus `Install`). Off by default:
    /// a caller cannot point the device elsewhere. Even when on, `headers` and the client
    /// certificate go only to `server_url`'s origin.
    #[serde(default)]
    pub allow_other_origins: bool,
}

fn default_hook_timeout() -> u64 {
    300
}
fn default_report_attempts() -> u32 {
    4
}
fn default_report_retry_delay_ms() -> u64 {
    2000
}
fn default_report_timeout() -> u64 {
    30
}
fn default_channel() -> String {
    "stable".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/diffota".into()
}
fn default_backend() -> String {
    "none".into()
}
fn default_cmdline() -> PathBuf {
    "/proc/cmdline".into()
}
fn default_attempts() -> u32 {
    3
}
fn default_fw_env_config() -> PathBuf {
    "/etc/fw_env.config".into()
}
fn default_fw_printenv() -> PathBuf {
    "fw_printenv".into()
}
fn default_fw_setenv() -> PathBuf {
    "fw_setenv".into()
}
fn default_grubenv() -> PathBuf {
    "/boot/efi/EFI/diffota/grubenv".into()
}
fn default_script() -> PathBuf {
    "/usr/libexec/diffota/boot-custom".into()
}
fn default_boot_id_file() -> PathBuf {
    "/proc/sys/kernel/random/boot_id".into()
}
fn default_reboot_command() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}
fn default_connect_timeout() -> u64 {
    15
}
fn default_stall_timeout() -> u64 {
    30
}
fn default_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    5
}
fn default_max_gap() -> u64 {
    diffota_format::ranges::DEFAULT_MAX_GAP
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            backend: default_backend(),
            cmdline: default_cmdline(),
            boot_attempts: default_attempts(),
            fw_env_config: default_fw_env_config(),
            use_fw_tools: false,
            fw_printenv: default_fw_printenv(),
            fw_setenv: default_fw_setenv(),
            grubenv: default_grubenv(),
            script: default_script(),
            reboot_command: default_reboot_command(),
            boot_id_file: default_boot_id_file(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ca_file: None,
            client_cert: None,
            client_key: None,
            headers: BTreeMap::new(),
            connect_timeout_secs: default_connect_timeout(),
            stall_timeout_secs: default_stall_timeout(),
            concurrency: default_concurrency(),
            retries: default_retries(),
            max_gap: default_max_gap(),
            allow_other_origins: false,
        }
    }
}

impl Config {
    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.message().to_owned() + &span_note(text, e.span()),
        })?;
        config.validate().map_err(|source| ConfigError::Invalid {
            path: origin.to_owned(),
            source,
        })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = diffota_files::local_file::read_bounded_text(
            path,
            crate::limits::SMALL_TEXT,
            diffota_files::local_file::Links::Follow,
        )
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.server_url.trim().is_empty() {
            return Err(ConfigProblem::NoServerUrl);
        }
        diffota_format::index::validate_compatible(&self.compatible)?;
        if self.public_keys.is_empty() && self.public_keys_inline.is_empty() {
            return Err(ConfigProblem::NoKeys);
        }
        if self.slots.a == self.slots.b {
            return Err(ConfigProblem::SameSlots(self.slots.a.clone()));
        }
        if self.http.concurrency == 0 || self.http.concurrency > 64 {
            return Err(ConfigProblem::Concurrency);
        }
        if !(1..=9).contains(&self.boot.boot_attempts) {
            return Err(ConfigProblem::BootAttempts);
        }
        if self.http.client_cert.is_some() != self.http.client_key.is_some() {
            return Err(ConfigProblem::ClientCertWithoutKey);
        }
        if !["uboot", "grub", "custom", "none"].contains(&self.boot.backend.as_str()) {
            return Err(ConfigProblem::Backend(self.boot.backend.clone()));
        }
        if self.boot.reboot_command.is_empty() {
            return Err(ConfigProblem::NoRebootCommand);
        }
        if let Some(name) = self.http.headers.keys().find(|name| {
            name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(ConfigProblem::HeaderName(name.clone()));
        }
        if let Some(name) = self.images.keys().find(|name| {
            name.as_str() == ROOTFS || !diffota_format::manifest::valid_image_name(name)
        }) {
            return Err(ConfigProblem::ImageName(name.clone()));
        }
        if let Some(name) = self.single_copy.iter().find_map(|(name, target)| {
            let usable = match (&target.device, &target.handler) {
                (Some(_), None) => true,
                (None, Some(handler)) => handler.is_absolute(),
                _ => false,
            };
            (!usable || !diffota_format::manifest::valid_image_name(name)).then_some(name)
        }) {
            return Err(ConfigProblem::SingleCopy(name.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for path in std::iter::once(&self.slots)
            .chain(self.images.values())
            .flat_map(|pair| [&pair.a, &pair.b])
            .chain(self.single_copy.values().filter_map(|t| t.device.as_ref()))
        {
            if !seen.insert(path) {
                return Err(ConfigProblem::SlotTwice(path.clone()));
            }
        }
        if let Some(path) = self.hooks.all().find(|path| !path.is_absolute()) {
            return Err(ConfigProblem::HookPath(path.clone()));
        }
        if !(1..=86_400).contains(&self.hooks.timeout_secs) {
            return Err(ConfigProblem::HookTimeout);
        }
        Ok(())
    }

    pub fn slot_path(&self, slot: crate::slot::Slot) -> &Path {
        self.slots.path(slot)
    }

    /// The A/B pair of release image `name`: `[slots]` for `rootfs`, else `[images.<name>]`.
    pub fn image_slots(&self, name: &str) -> Option<&SlotsConfig> {
        match name {
            ROOTFS => Some(&self.slots),
            _ => self.images.get(name),
        }
    }
}

fn span_note(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
server_url = "https://updates.example.com/store"
compatible = "acme-board"
public_keys = ["/etc/diffota/release.pub"]
state_dir = "/data/diffota"

[slots]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"

[http]
concurrency = 8
headers = { Authorization = "Bearer x" }
"#;

    #[test]
    fn parses_sample() {
        let config = Config::parse(SAMPLE, Path::new("test.toml")).unwrap();
        assert_eq!(config.channel, "stable");
        assert_eq!(config.http.concurrency, 8);
        assert_eq!(config.boot.boot_attempts, 3);
    }

    #[test]
    fn a_written_config_reads_back_the_same() {
        let mut config = Config::parse(SAMPLE, Path::new("test.toml")).unwrap();
        config.report = Some(ReportConfig::new("https://reports.example.com/in".into()));
        config.metrics.textfile = Some("/run/diffota.prom".into());
        config.hooks.pre_install = vec!["/usr/libexec/acme/not-while-printing".into()];
        config.hooks.post_commit = vec!["/usr/libexec/acme/migrate-data".into()];
        let written = toml::to_string(&config).unwrap();
        let read_back = Config::parse(&written, Path::new("written.toml")).unwrap();
        assert_eq!(format!("{read_back:?}"), format!("{config:?}"), "{written}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = SAMPLE.replace("state_dir", "state_dri");
        let error = Config::parse(&text, Path::new("test.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("state_dri"), "{error}");
    }

    #[test]
    fn same_slots_refused() {
        let text = SAMPLE.replace("mmcblk0p3", "mmcblk0p2");
        assert!(matches!(
            Config::parse(&text, Path::new("t")),
            Err(ConfigError::Invalid {
                source: ConfigProblem::SameSlots(_),
                ..
            })
        ));
    }

    #[test]
    fn problems_are_variants() {
        let problem =
            |from: &str, to: &str| match Config::parse(&SAMPLE.replace(from, to), Path::new("t")) {
                Err(ConfigError::Invalid { source, .. }) => source,
                other => panic!("{from} -> {to}: {other:?}"),
            };
        assert!(matches!(
            problem("concurrency = 8", "concurrency = 0"),
            ConfigProblem::Concurrency
        ));
        assert!(matches!(
            problem("Authorization", "\"Bad Name\""),
            ConfigProblem::HeaderName(name) if name == "Bad Name"
        ));
        assert!(matches!(
            problem("[http]", "[hooks]\npre_install = [\"hooks/check\"]\n[http]"),
            ConfigProblem::HookPath(path) if path == Path::new("hooks/check")
        ));
        assert!(matches!(
            problem("[http]", "[hooks]\ntimeout_secs = 0\n[http]"),
            ConfigProblem::HookTimeout
        ));
        assert!(matches!(
            problem("[http]", "[single_copy.mcu]\n[http]"),
            ConfigProblem::SingleCopy(name) if name == "mcu"
        ));
        assert!(matches!(
            problem(
                "[http]",
                "[single_copy.mcu]\ndevice = \"/dev/mmcblk0p2\"\n[http]"
            ),
            ConfigProblem::SlotTwice(_)
        ));
        assert!(matches!(
            problem("[http]", "[images.rootfs]\na = \"/x\"\nb = \"/y\"\n[http]"),
            ConfigProblem::ImageName(name) if name == "rootfs"
        ));
        assert!(matches!(
            problem("[http]", "[images.appfs]\na = \"/dev/mmcblk0p3\"\nb = \"/y\"\n[http]"),
            ConfigProblem::SlotTwice(path) if path == Path::new("/dev/mmcblk0p3")
        ));
    }
}
