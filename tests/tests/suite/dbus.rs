//! The D-Bus service against a real `dbus-daemon` (a private system-type bus with the
//! shipped policy file) and real clients (`busctl`, `gdbus monitor`): an install driven over
//! D-Bus with rising progress and a `Completed` signal; a cancel in the middle and a resuming
//! install; a second install refused as busy over D-Bus and from the CLI; a caller outside
//! the allowed users refused; the shipped introspection XML is what the service exports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diffota_tests::faults::{Fault, FaultServer};
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

const NAME: &str = "org.diffota.Updater1";
const PATH: &str = "/org/diffota/Updater1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools_present() -> bool {
    require_tool("dbus-daemon", "dbus-daemon")
        && require_tool("busctl", "systemd")
        && require_tool("gdbus", "libglib2.0-bin")
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus whose policy is the system bus's default plus the shipped policy file.
struct Bus {
    address: String,
    _daemon: Running,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
                socket = socket.display(),
                policy = root().join("dbus/org.diffota.Updater1.conf").display()
            ),
        )
        .unwrap();
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus {
            address: format!("unix:path={}", socket.display()),
            _daemon: Running(daemon),
        }
    }

    fn busctl(&self, args: &[&str]) -> std::process::Output {
        run(Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args))
    }

    fn call(&self, method: &str, signature: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["call", NAME, PATH, NAME, method];
        if !signature.is_empty() {
            all.push(signature);
        }
        all.extend_from_slice(args);
        self.busctl(&all)
    }

    fn property(&self, name: &str) -> String {
        let output = self.busctl(&["get-property", NAME, PATH, NAME, name]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Starts `diffota service` for `device` and waits for its name.
    fn service(&self, device: &Device) -> Running {
        let child = device
            .diffota()
            .arg("service")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting diffota service");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.busctl(&["status", NAME]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the service did not take its name"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Running(child)
    }

    /// `gdbus monitor` of the service's signals, into `file`.
    fn monitor(&self, file: &Path) -> Running {
        self.monitor_as(file, Command::new("gdbus"))
    }

    /// `gdbus monitor` started by `command` (gdbus itself, or gdbus under another user).
    fn monitor_as(&self, file: &Path, mut command: Command) -> Running {
        let out = std::fs::File::create(file).unwrap();
        let child = command
            .args(["monitor", "--address", &self.address, "--dest", NAME])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gdbus monitor");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(file)
            .unwrap_or_default()
            .contains("is owned by")
        {
            assert!(Instant::now() < deadline, "gdbus monitor did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Running(child)
    }
}

/// Waits for the next `Completed` signal after the `seen` first ones; returns its arguments.
fn completed(monitor: &Path, seen: usize) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(monitor).unwrap_or_default();
        let signals: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("org.diffota.Updater1.Completed ("))
            .collect();
        if let Some(line) = signals.get(seen) {
            let args = line.split_once(".Completed (").unwrap().1;
            let parts: Vec<String> = args
                .trim_end_matches(')')
                .splitn(3, "', ")
                .map(|p| p.trim().trim_matches('\'').to_owned())
                .collect();
            return (parts[0].clone(), parts[1].clone(), parts[2].clone());
        }
        assert!(
            Instant::now() < deadline,
            "no Completed signal; monitor saw:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `Percent` values of the PropertiesChanged signals, in order.
fn percents(monitor: &Path) -> Vec<u32> {
    std::fs::read_to_string(monitor)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("'Percent': <uint32 "))
        .filter_map(|(_, rest)| rest.split('>').next()?.parse().ok())
        .collect()
}

/// A device running 1.0; 2.0 on the channel, most of it new; the device reads the store
/// as a local directory until `serve_from` points it at a server.
fn setup(image_mib: u64) -> (Fleet, Device) {
    let mut fleet = Fleet::new();
    // Other users must reach the bus socket (the refusal test runs a client as nobody).
    std::fs::set_permissions(
        fleet.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fleet.sample_release("1.0", image_mib * MIB, 1, 1);
    fleet.sample_release("2.0", image_mib * MIB, 2, 1);
    fleet.publish("2.0");
    let store = fleet.store.display().to_string();
    let device = fleet.device("device", "1.0", image_mib * MIB, &store, |_| {});
    (fleet, device)
}

/// Points the device's `server_url` at `url`.
fn serve_from(device: &Device, url: &str) {
    let text = std::fs::read_to_string(&device.config).unwrap();
    let first = text.lines().next().unwrap().to_owned();
    std::fs::write(
        &device.config,
        text.replacen(&first, &format!("server_url = {url:?}"), 1),
    )
    .unwrap();
}

#[test]
fn an_install_over_dbus_reports_rising_progress_and_completes() {
    if !tools_present() {
        return;
    }
    let (fleet, device) = setup(16);
    let log = fleet.dir.path().join("access.log");
    let server = StoreServer::start(&fleet.store, &log, None);
    serve_from(&device, &server.url);
    let bus = Bus::start(fleet.dir.path());
    let _service = bus.service(&device);
    let monitor = fleet.dir.path().join("monitor.log");
    let _monitor = bus.monitor(&monitor);
    assert_eq!(bus.property("Phase"), "s \"idle\"");
    assert_eq!(bus.property("RunningSlot"), "s \"a\"");

    let check = bus.call("Check", "s", &[""]);
    assert!(check.status.success(), "{check:?}");
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(check.starts_with("bstts true \"2.0\""), "{check}");

    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (operation, result, message) = completed(&monitor, 0);
    assert_eq!(
        (operation.as_str(), result.as_str()),
        ("install", "success"),
        "{message}"
    );
    assert!(message.contains("installed 2.0 into slot b"), "{message}");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    let seen = percents(&monitor);
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress fell: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&100), "{seen:?}");
    assert_eq!(bus.property("Percent"), "u 100");
    assert_eq!(bus.property("Phase"), "s \"done\"");
    assert_eq!(bus.property("Operation"), "s \"\"");
    assert!(bus.property("SlotVersions").contains("\"b\" \"2.0\""));

    // Installed and waiting for the reboot: nothing to do.
    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 1);
    assert_eq!(result, "nothing-to-do", "{message}");
}

#[test]
fn cancel_resume_busy_and_policy() {
    if !tools_present() {
        return;
    }
    let (fleet, device) = setup(16);
    // The first pack response stops after 256 KiB and hangs: the install is mid-way.
    let server = FaultServer::start(&fleet.store, Fault::StallFirstAfterBytes(256 * 1024));
    serve_from(&device, &server.url);
    let bus = Bus::start(fleet.dir.path());
    let _service = bus.service(&device);
    let monitor = fleet.dir.path().join("monitor.log");
    let _monitor = bus.monitor(&monitor);

    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.property("BytesDone") == "t 0" {
        assert!(Instant::now() < deadline, "the install wrote nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bus.property("Operation"), "s \"install\"");

    // One install at a time: over D-Bus and from the CLI.
    let second = bus.call("Install", "sb", &["", "false"]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("install (D-Bus)"), "{stderr}");
    let cli = run(device.diffota().arg("install"));
    assert_eq!(cli.status.code(), Some(5), "{cli:?}");
    assert!(String::from_utf8_lossy(&cli.stderr).contains("install (D-Bus)"));

    // A caller that is neither root nor in the group is refused by the bus.
    if unsafe { libc::geteuid() } == 0 {
        let refused = run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", bus.address))
            .args(["call", NAME, PATH, NAME, "Cancel"]));
        assert!(!refused.status.success(), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("Access denied") || stderr.contains("AccessDenied"),
            "{stderr}"
        );
        assert_eq!(
            bus.property("Operation"),
            "s \"install\"",
            "the refused Cancel did nothing"
        );
    } else {
        eprintln!("******** SKIPPED: the D-Bus policy refusal needs root (to run a client as nobody) ********");
    }

    let output = bus.call("Cancel", "", &[]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 0);
    assert_eq!(result, "cancelled", "{message}");
    assert_eq!(bus.property("Phase"), "s \"cancelled\"");
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert!(
        status["state"]["trial"].is_null(),
        "a cancelled install armed a trial: {status}"
    );
    let written_before = bus.property("BytesDone");

    // The next install resumes: what was written is found in place, not fetched again.
    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 1);
    assert_eq!(result, "success", "{message}");
    let in_place: u64 = message
        .split(" already in place")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        in_place > 0,
        "nothing found in place after the cancel ({written_before}): {message}"
    );
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
}

#[test]
fn the_shipped_introspection_is_what_the_service_exports() {
    if !tools_present() {
        return;
    }
    let (fleet, device) = setup(2);
    let bus = Bus::start(fleet.dir.path());
    let _service = bus.service(&device);
    let output = bus.busctl(&["introspect", "--xml-interface", NAME, PATH]);
    assert!(output.status.success(), "{output:?}");
    let exported = String::from_utf8_lossy(&output.stdout).into_owned();
    let interface = |xml: &str| -> String {
        let start = xml
            .find("<interface name=\"org.diffota.Updater1\">")
            .expect("our interface");
        let end = start + xml[start..].find("</interface>").unwrap();
        xml[start..end].to_owned()
    };
    let shipped = std::fs::read_to_string(root().join("dbus/org.diffota.Updater1.xml")).unwrap();
    assert!(
        interface(&exported) == interface(&shipped),
        "dbus/org.diffota.Updater1.xml is out of date; the service exports:\n{exported}"
    );
}

#[test]
fn signals_reach_only_allowed_callers_and_carry_no_secret() {
    if !tools_present() {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("******** SKIPPED: who receives the signals needs root (to run a monitor as nobody) ********");
        return;
    }
    let (fleet, device) = setup(2);
    let log = fleet.dir.path().join("access.log");
    let server = StoreServer::start(&fleet.store, &log, None);
    serve_from(&device, &server.url.replacen("://", "://fleet:hunter2@", 1));
    let bus = Bus::start(fleet.dir.path());
    let _service = bus.service(&device);
    let monitor = fleet.dir.path().join("monitor.log");
    let _monitor = bus.monitor(&monitor);
    let stranger_log = fleet.dir.path().join("stranger.log");
    let mut stranger = Command::new("setpriv");
    stranger.args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus"]);
    let _stranger = bus.monitor_as(&stranger_log, stranger);

    // A failure that quotes the store URL, then an install.
    let check = bus.call("Check", "s", &["channel:nightly"]);
    assert!(!check.status.success());
    let error = String::from_utf8_lossy(&check.stderr);
    assert!(error.contains("fleet:***@"), "{error}");
    let output = bus.call("Install", "sb", &["channel:nightly", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 0);
    assert_eq!(result, "failed", "{message}");
    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 1);
    assert_eq!(result, "success", "{message}");

    let seen = std::fs::read_to_string(&monitor).unwrap();
    assert!(seen.contains("PropertiesChanged"), "{seen}");
    assert!(
        !seen.contains("hunter2"),
        "a signal carried the password: {seen}"
    );
    assert!(!bus.property("LastError").contains("hunter2"));
    let stranger_seen = std::fs::read_to_string(&stranger_log).unwrap();
    assert!(
        !stranger_seen.contains("PropertiesChanged") && !stranger_seen.contains(".Completed"),
        "a user outside the policy received the service's signals: {stranger_seen}"
    );

    // An index on another host is refused: the caller cannot point the device elsewhere.
    let check = bus.call(
        "Check",
        "s",
        &["http://127.0.0.1:9/store/releases/2.0/rootfs.didx"],
    );
    assert!(!check.status.success());
    let error = String::from_utf8_lossy(&check.stderr);
    assert!(
        error.contains("is not on the configured store's origin"),
        "{error}"
    );
}

#[test]
fn an_install_of_several_images_shows_each_image_over_dbus() {
    if !tools_present() {
        return;
    }
    let mut fleet = Fleet::new();
    std::fs::set_permissions(
        fleet.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fleet.sample_release("1.0", 2 * MIB, 1, 1);
    let rootfs = fleet.sample_image("2.0", 2 * MIB, 2, 1);
    let appfs = fleet.path("appfs.img");
    std::fs::write(
        &appfs,
        (0..MIB).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fleet.make_images("2.0", &[("rootfs", &rootfs), ("appfs", &appfs)], &[], &[]);
    fleet.publish("2.0");
    let (appfs_a, appfs_b) = (fleet.path("appfs-a.img"), fleet.path("appfs-b.img"));
    for slot in [&appfs_a, &appfs_b] {
        std::fs::File::create(slot).unwrap().set_len(MIB).unwrap();
    }
    let store = fleet.store.display().to_string();
    let device = fleet.device("device", "1.0", 2 * MIB, &store, |config| {
        config.images.insert(
            "appfs".into(),
            diffota::config::SlotsConfig {
                a: appfs_a.clone(),
                b: appfs_b.clone(),
            },
        );
    });
    let bus = Bus::start(fleet.dir.path());
    let _service = bus.service(&device);
    let monitor = fleet.dir.path().join("monitor.log");
    let _monitor = bus.monitor(&monitor);
    assert_eq!(bus.property("Images"), "a(stt) 0");
    let output = bus.call("Install", "sb", &["", "false"]);
    assert!(output.status.success(), "{output:?}");
    let (_, result, message) = completed(&monitor, 0);
    assert_eq!(result, "success", "{message}");
    assert_eq!(
        bus.property("Images"),
        format!(
            "a(stt) 2 \"rootfs\" {rootfs} {rootfs} \"appfs\" {appfs} {appfs}",
            rootfs = 2 * MIB,
            appfs = MIB
        )
    );
    assert_eq!(bus.property("BytesTotal"), format!("t {}", 3 * MIB));
    assert_eq!(
        std::fs::read(&appfs_b).unwrap(),
        std::fs::read(&appfs).unwrap()
    );
    // The property changed while the install ran, as any other progress property.
    let signals = std::fs::read_to_string(&monitor).unwrap();
    assert!(signals.contains("Images"), "{signals}");
}
