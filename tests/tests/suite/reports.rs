//! Outcome reports and metrics, with a real HTTP endpoint on 127.0.0.1 and the real binary:
//! success is reported only once mark-good committed the trial, exactly once across a reboot
//! and an endpoint that fails the first two POSTs; a fall-back by the bootloader and a
//! failed install are reported as such; the metrics textfile follows.

use std::path::{Path, PathBuf};
use std::process::Command;

use diffota::config::ReportConfig;
use diffota::outcomes::OutcomeResult;
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::report_endpoint::ReportEndpoint;
use diffota_tests::*;

/// Releases 1.0 to 4.0 of a 2 MiB sample image, and a device running 1.0 that boots
/// through the shipped GRUB fragment's logic (`boot-sim`), reports to `endpoint` and writes
/// metrics.
fn reporting_fleet(endpoint: &ReportEndpoint) -> (Fleet, ReportingDevice) {
    let mut fleet = Fleet::new();
    for release in 1..=4u64 {
        fleet.sample_release(&format!("{release}.0"), 2 * MIB, 3, release);
    }
    let device = Device::new(&fleet.path("device"), fleet.image("1.0"), 3 * MIB);
    let grubenv = device.dir.join("grubenv");
    run_ok(Command::new(bin("boot-sim")).arg("factory").arg(&grubenv));
    let token = device.dir.join("report-token");
    std::fs::write(&token, "secret-token\n").unwrap();
    let metrics = device.dir.join("metrics/diffota.prom");
    device.configure(
        &fleet.store.display().to_string(),
        &[&fleet.keys.public],
        |config| {
            config.boot.backend = "grub".into();
            config.boot.grubenv = grubenv.clone();
            config.report = Some(ReportConfig {
                bearer_token_file: Some(token),
                retry_delay_ms: 50,
                ..ReportConfig::new(endpoint.url.clone())
            });
            config.metrics.textfile = Some(metrics.clone());
        },
    );
    let reporting = ReportingDevice {
        device,
        grubenv,
        metrics,
    };
    (fleet, reporting)
}

/// A device with its GRUB environment and metrics file.
struct ReportingDevice {
    device: Device,
    grubenv: PathBuf,
    metrics: PathBuf,
}

impl ReportingDevice {
    /// A reboot through the shipped GRUB fragment's logic; returns the slot booted.
    fn reboot(&self) -> String {
        let boot_id = self.device.dir.join("boot_id");
        run_ok(Command::new(bin("boot-sim")).arg("boot").args([
            &self.grubenv,
            &self.device.cmdline,
            &boot_id,
        ]));
        let cmdline = std::fs::read_to_string(&self.device.cmdline).unwrap();
        cmdline
            .trim()
            .trim_start_matches("diffota.slot=")
            .to_owned()
    }

    fn diffota(&self, args: &[&str]) -> Command {
        let mut command = self.device.diffota();
        command.args(args);
        command
    }

    fn metrics(&self) -> String {
        std::fs::read_to_string(&self.metrics).unwrap()
    }
}

fn queued(state: &Path) -> usize {
    std::fs::read_dir(state.join("reports"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".json")
                        && name.contains('-')
                        && !name.starts_with('.')
                        && name != "pending-install.json"
                        && name != "last-outcome.json"
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn outcomes_are_reported_once_each_and_only_when_final() {
    let endpoint = ReportEndpoint::start(2);
    let (fleet, reporting) = reporting_fleet(&endpoint);
    reporting.reboot();

    // 2.0 installed: not an outcome yet, nothing is sent.
    fleet.publish("2.0");
    let stdout = run_ok(&mut reporting.diffota(&["install"]));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 0 sent, 0 pending"), "{stdout}");
    assert!(
        endpoint.received().is_empty(),
        "success reported before the trial"
    );
    assert!(reporting.metrics().contains("diffota_trial_pending 1\n"));

    // The trial boot is healthy: mark-good commits, and spools the report (no network at
    // that point of the boot); it survives the next reboot.
    assert_eq!(reporting.reboot(), "b");
    let stdout = run_ok(&mut reporting.diffota(&["mark-good"]));
    assert!(stdout.contains("slot b (2.0) committed"), "{stdout}");
    assert!(endpoint.received().is_empty());
    assert_eq!(queued(&reporting.device.state), 1);
    assert_eq!(reporting.reboot(), "b");

    // The endpoint fails twice; the third attempt of the same report is acknowledged.
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 1 sent, 0 pending"), "{stdout}");
    let received = endpoint.received();
    assert_eq!(
        received.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 204]
    );
    assert!(
        received.iter().all(|r| r.body == received[0].body),
        "the same report each time"
    );
    assert!(received
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer secret-token")));
    let committed = received[2].body.as_ref().expect("a report");
    assert_eq!(committed.result, OutcomeResult::Committed);
    assert_eq!(committed.device_id, "test-device");
    assert_eq!(committed.to_version.as_deref(), Some("2.0"));
    assert_eq!(committed.from_version, None, "factory image");
    assert_eq!(committed.slot, Some(Slot::B));
    assert!(committed.downloaded_bytes.unwrap() > 0, "{committed:?}");
    assert!(committed.requests.unwrap() > 0, "{committed:?}");
    assert_eq!(committed.boots_used, Some(1));
    assert_eq!(committed.boot_attempts, Some(3));
    assert_eq!(committed.id.len(), 32);
    // Exactly once: nothing left to send.
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 0 sent, 0 pending"), "{stdout}");
    assert_eq!(endpoint.accepted().len(), 1);
    let metrics = reporting.metrics();
    assert!(
        metrics.contains("diffota_running_info{slot=\"b\",version=\"2.0\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "diffota_last_outcome_info{result=\"committed\",from_version=\"\",to_version=\"2.0\"} 1\n"
    ), "{metrics}");
    assert!(metrics.contains("diffota_reports_pending 0\n"), "{metrics}");
    assert!(metrics.contains("diffota_trial_pending 0\n"), "{metrics}");

    // 3.0 never gets healthy: three trial boots, GRUB falls back, mark-good finds it. The
    // next install run (the timer's) sends the report before it refuses 3.0.
    fleet.publish("3.0");
    run_ok(&mut reporting.diffota(&["install"]));
    for _ in 0..3 {
        assert_eq!(reporting.reboot(), "a");
    }
    assert_eq!(reporting.reboot(), "b");
    let stdout = run_ok(&mut reporting.diffota(&["mark-good"]));
    assert!(stdout.contains("release 3.0 failed"), "{stdout}");
    run_exit(&mut reporting.diffota(&["install"]), 4);
    let accepted = endpoint.accepted();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    let reverted = &accepted[1];
    assert_eq!(reverted.result, OutcomeResult::Reverted);
    assert_eq!(reverted.from_version.as_deref(), Some("2.0"));
    assert_eq!(reverted.to_version.as_deref(), Some("3.0"));
    assert_eq!(reverted.slot, Some(Slot::A));
    assert_eq!(reverted.boots_used, Some(3));
    assert!(
        reverted
            .error
            .as_deref()
            .unwrap()
            .contains("did not come up healthy"),
        "{reverted:?}"
    );
    assert!(reverted.downloaded_bytes.unwrap() > 0, "{reverted:?}");

    // 4.0's packs are gone from the store: the install fails, and says so.
    for pack in std::fs::read_dir(fleet.store.join("packs")).unwrap() {
        std::fs::remove_file(pack.unwrap().path()).unwrap();
    }
    fleet.publish("4.0");
    let output = run(&mut reporting.diffota(&["install"]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 1 sent, 0 pending"), "{stdout}");
    let accepted = endpoint.accepted();
    let failed = &accepted[2];
    assert_eq!(failed.result, OutcomeResult::InstallFailed);
    assert_eq!(failed.from_version.as_deref(), Some("2.0"));
    assert_eq!(failed.to_version.as_deref(), Some("4.0"));
    assert!(
        failed.error.as_deref().unwrap().starts_with("installing"),
        "{failed:?}"
    );
    assert!(reporting
        .metrics()
        .contains("diffota_last_outcome_info{result=\"install_failed\",from_version=\"2.0\",to_version=\"4.0\"} 1\n"));
}

#[test]
fn unsent_reports_wait_and_the_command_says_so() {
    // An endpoint that answers 500 to everything.
    let endpoint = ReportEndpoint::start(usize::MAX);
    let (fleet, reporting) = reporting_fleet(&endpoint);
    reporting.reboot();
    fleet.publish("2.0");
    run_ok(&mut reporting.diffota(&["install"]));
    reporting.reboot();
    run_ok(&mut reporting.diffota(&["mark-good"]));
    let output = run(&mut reporting.diffota(&["report"]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 outcome reports are still waiting for"),
        "{stderr}"
    );
    assert_eq!(endpoint.received().len(), 4, "attempts = 4 by default");
    assert_eq!(queued(&reporting.device.state), 1, "kept for the next run");
    assert!(reporting.metrics().contains("diffota_reports_pending 1\n"));
}

#[test]
fn a_redirect_is_not_an_acknowledgement_and_is_not_followed() {
    // The host a redirect points at: it must never see a report.
    let elsewhere = ReportEndpoint::start(0);
    for status in [302u16, 307, 308] {
        let endpoint = ReportEndpoint::start_redirecting(status, &elsewhere.url);
        let (fleet, reporting) = reporting_fleet(&endpoint);
        reporting.reboot();
        fleet.publish("2.0");
        run_ok(&mut reporting.diffota(&["install"]));
        reporting.reboot();
        run_ok(&mut reporting.diffota(&["mark-good"]));
        let output = run(&mut reporting.diffota(&["report"]));
        assert_eq!(output.status.code(), Some(1), "{status}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("redirects are not followed, the report stays queued"),
            "{status}: {stderr}"
        );
        assert!(
            !endpoint.received().is_empty(),
            "{status}: the endpoint was asked"
        );
        assert_eq!(
            queued(&reporting.device.state),
            1,
            "{status}: the report stays queued"
        );
    }
    assert!(
        elsewhere.received().is_empty(),
        "a report followed a redirect to another host"
    );
}

#[test]
fn spool_files_that_are_fifos_links_or_huge_are_moved_aside_without_blocking() {
    let endpoint = ReportEndpoint::start(0);
    let (fleet, reporting) = reporting_fleet(&endpoint);
    let reports = reporting.device.state.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let fifo = reports.join("00000000000000000001-fifo.json");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    std::fs::File::create(reports.join("00000000000000000002-huge.json"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::os::unix::fs::symlink("/dev/zero", reports.join("00000000000000000003-zero.json"))
        .unwrap();
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 0 sent, 0 pending"), "{stdout}");
    for name in [
        "00000000000000000001-fifo",
        "00000000000000000002-huge",
        "00000000000000000003-zero",
    ] {
        assert!(
            reports
                .join(format!("{name}.unreadable"))
                .symlink_metadata()
                .is_ok(),
            "{name} was not moved aside"
        );
    }

    // A real report waits; a link where the sending lock belongs is refused, its target
    // untouched, and the report is still sent once the link is gone.
    reporting.reboot();
    fleet.publish("2.0");
    run_ok(&mut reporting.diffota(&["install"]));
    reporting.reboot();
    let victim = reporting.device.dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, reports.join(".sending")).unwrap();
    run_ok(&mut reporting.diffota(&["mark-good"]));
    let output = run(&mut reporting.diffota(&["report"]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".sending: is a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(queued(&reporting.device.state), 1);
    std::fs::remove_file(reports.join(".sending")).unwrap();
    let stdout = run_ok(&mut reporting.diffota(&["report"]));
    assert!(stdout.contains("reports: 1 sent, 0 pending"), "{stdout}");
    assert_eq!(endpoint.accepted().len(), 1);
}
