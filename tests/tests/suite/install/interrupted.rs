//! Installs that are cut short: a second install while one runs, SIGKILL in the middle and
//! the resume, servers that stall, truncate, tamper or lose packs.

use super::*;

/// One state-changing command at a time: while an install runs (held up by a stalling
/// server), a second install and a mark-good are refused as busy (exit 5) with the running
/// install named; once it is killed, the kernel has released the lock and an install runs.
#[test]
fn a_second_install_is_refused_as_busy_while_one_runs() {
    let fixture = fixture();
    let stalling = FaultServer::start(&fixture.store, Fault::StallAfterBytes(0));
    let device = fixture.device("busy", "1.0", 10 * MIB, &stalling.url, |config| {
        config.http.stall_timeout_secs = 600
    });
    let mut first = install_until_first_pack_request(&device, &stalling);
    for command in ["install", "mark-good"] {
        let output = run(device.diffota().arg(command));
        assert_eq!(
            output.status.code(),
            Some(5),
            "{command}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("busy") && message.contains(&format!("pid {}", first.id())),
            "{command}: {message}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let good = fixture.serve();
    device.configure(&good.url, &[&fixture.keys.public], |_| {});
    run_ok(device.diffota().arg("install"));
}

#[test]
fn sigkill_during_install_then_resume_without_downloading_again() {
    let fixture = fixture();
    let good = fixture.serve();
    let (v1, v2) = (fixture.index("1.0"), fixture.index("2.0"));
    let held: HashSet<_> = v1.chunks.iter().map(|c| c.id).collect();
    let mut missing: Vec<_> = v2
        .chunks
        .iter()
        .filter(|c| !held.contains(&c.id))
        .copied()
        .collect();
    missing.sort_by_key(|c| c.pack_offset);
    let ranges = plan_ranges(&missing, diffota_format::ranges::DEFAULT_MAX_GAP);
    assert_eq!(
        ranges.len(),
        1,
        "the chunks 2.0 added sit together in its pack"
    );
    let (range_start, range_end) = (ranges[0].start, ranges[0].end);
    let length = (range_end - range_start) as usize;

    // Kill the updater (SIGKILL) while the server has sent none, a third, and two thirds of
    // the range; then run it again against a good server.
    for sent in [0, length / 3, length * 2 / 3] {
        let stalling = FaultServer::start(&fixture.store, Fault::StallAfterBytes(sent));
        let device = fixture.device(
            &format!("device-{sent}"),
            "1.0",
            10 * MIB,
            &stalling.url,
            |config| config.http.stall_timeout_secs = 600,
        );
        kill_install_midway(&device, &stalling);
        assert_running_untouched(&device, &fixture);
        // `status` says what happened to slot b, and no trial is pending.
        let status = run_ok(device.diffota().arg("status"));
        assert!(
            status.contains("slot b: being written with 2.0") && !status.contains("trial pending"),
            "{status}"
        );

        device.configure(&good.url, &[&fixture.keys.public], |_| {});
        good.clear_log();
        let stdout = run_ok(device.diffota().arg("install"));
        assert!(stdout.contains("installed 2.0"), "{stdout}");
        assert_installed(&device, fixture.image("2.0"));
        assert_running_untouched(&device, &fixture);

        // Chunks that arrived whole before the kill were written and are not fetched again.
        let first_unwritten = missing
            .iter()
            .find(|c| {
                (c.pack_offset + u64::from(c.compressed_length) - range_start) as usize > sent
            })
            .map(|c| c.pack_offset)
            .unwrap();
        let fetched: Vec<_> = good
            .served()
            .iter()
            .filter(|s| s.path.starts_with("/packs/"))
            .filter_map(|s| s.range)
            .collect();
        assert_eq!(
            fetched,
            vec![(first_unwritten, range_end - 1)],
            "after {sent} bytes had arrived"
        );
        if sent > 0 {
            assert!(
                first_unwritten > range_start,
                "something was kept after {sent} bytes"
            );
        }
    }
}

#[test]
fn misbehaving_servers() {
    let fixture = fixture();
    let quick = |config: &mut Config| {
        config.http.retries = 1;
        config.http.stall_timeout_secs = 1;
    };

    // Tampered chunk bytes: refused, nothing activated.
    let server = FaultServer::start(&fixture.store, Fault::TamperPacks);
    assert_install_fails(
        &fixture.device("tamper", "1.0", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "chunk",
    );

    // A truncated response is retried and then reported.
    let server = FaultServer::start(&fixture.store, Fault::Truncate);
    assert_install_fails(
        &fixture.device("truncate", "1.0", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "end of file",
    );

    // A missing pack.
    let server = FaultServer::start(&fixture.store, Fault::PackNotFound);
    assert_install_fails(
        &fixture.device("404", "1.0", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "404",
    );

    // A server that stalls times out.
    let server = FaultServer::start(&fixture.store, Fault::Stall);
    assert_install_fails(
        &fixture.device("stall", "1.0", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "timed out",
    );

    // More bytes than asked: the excess is never read, the install succeeds.
    let server = FaultServer::start(&fixture.store, Fault::ExtraBytes);
    let device = fixture.device("extra", "1.0", 10 * MIB, &server.url, quick);
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, fixture.image("2.0"));

    // 500 twice, then success: the retries carry it.
    let server = FaultServer::start(&fixture.store, Fault::FailFirst(2));
    let device = fixture.device("retry", "1.0", 10 * MIB, &server.url, |config| {
        config.http.retries = 3;
        config.http.concurrency = 1;
    });
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, fixture.image("2.0"));

    // A server that ignores Range still works, with a warning.
    let server = FaultServer::start(&fixture.store, Fault::IgnoreRange);
    let device = fixture.device("norange", "1.0", 10 * MIB, &server.url, quick);
    let output = run(device.diffota().arg("install"));
    assert!(output.status.success());
    assert!(stderr(&output).contains("ignores Range"));
    assert_installed(&device, fixture.image("2.0"));
}
