//! Hooks: the integrator's executables, run at fixed points of an install and after a boot.
//!
//! | point | when | may say "not now" / "never" | a failure |
//! |---|---|---|---|
//! | `pre-install` | the release passed its gate, before anything is written | yes | fails the install; nothing written |
//! | `post-write` | the image is written to the target slot, before it is read back | yes | fails the install; nothing armed |
//! | `pre-arm` | the slot read back matching, before it is recorded and armed | yes | fails the install; nothing armed |
//! | `post-commit` | `mark-good` committed a trial (on the new slot's first healthy boot) | no | `mark-good` fails; the hooks run again at the next `mark-good` |
//! | `post-revert` | `mark-good` found the bootloader fell back to the old slot | no | as post-commit |
//!
//! A hook's exit status: 0 goes on; [`EXIT_NOT_NOW`] (75, `EX_TEMPFAIL`) postpones the
//! install, which the next run tries again; [`EXIT_NEVER`] (77, `EX_NOPERM`) refuses the
//! release on this device for good (recorded like a release that failed here). Anything else,
//! a signal, or running past the timeout is a failure that names the hook and its last line
//! of output. The after-boot points only know success and failure.
//!
//! Hooks run with an environment of their own (`PATH` and the documented `DIFFOTA_*`
//! variables, nothing inherited), stdin from /dev/null, `/` as working directory and in a
//! process group of their own: at the timeout, and once the hook exited, whatever is left of
//! the group is killed. Every line a hook prints goes to the log (the journal under systemd),
//! bounded per line.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::HooksConfig;

/// "Not now": the install stops, nothing is armed, the next run tries again (`EX_TEMPFAIL`).
pub const EXIT_NOT_NOW: i32 = 75;
/// "Never": this device refuses the release; it is not installed again unless forced
/// (`EX_NOPERM`).
pub const EXIT_NEVER: i32 = 77;

/// The `PATH` a hook runs with.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A line of a hook's output is cut here in the log and in messages.
const MAX_LINE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    PreInstall,
    PostWrite,
    PreArm,
    PostCommit,
    PostRevert,
    /// Not a hook point: the executable a single-copy target names as its handler.
    SingleCopyHandler,
}

pub const ALL_POINTS: [HookPoint; 5] = [
    HookPoint::PreInstall,
    HookPoint::PostWrite,
    HookPoint::PreArm,
    HookPoint::PostCommit,
    HookPoint::PostRevert,
];

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::PreInstall => "pre-install",
            HookPoint::PostWrite => "post-write",
            HookPoint::PreArm => "pre-arm",
            HookPoint::PostCommit => "post-commit",
            HookPoint::PostRevert => "post-revert",
            HookPoint::SingleCopyHandler => "single-copy handler",
        }
    }

    /// Whether the hook may postpone or refuse what follows (the points before arming).
    pub fn may_veto(self) -> bool {
        matches!(
            self,
            HookPoint::PreInstall | HookPoint::PostWrite | HookPoint::PreArm
        )
    }

    pub fn hooks(self, config: &HooksConfig) -> &[PathBuf] {
        match self {
            HookPoint::PreInstall => &config.pre_install,
            HookPoint::PostWrite => &config.post_write,
            HookPoint::PreArm => &config.pre_arm,
            HookPoint::PostCommit => &config.post_commit,
            HookPoint::PostRevert => &config.post_revert,
            HookPoint::SingleCopyHandler => &[],
        }
    }
}

impl std::fmt::Display for HookPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the hooks of a point said, when none failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Exit [`EXIT_NOT_NOW`]: try again later.
    NotNow {
        hook: PathBuf,
        message: String,
    },
    /// Exit [`EXIT_NEVER`]: this device refuses the release.
    Never {
        hook: PathBuf,
        message: String,
    },
}

/// How a hook's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signalled(i32),
    TimedOut(u64),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exited with status {code}"),
            Ended::Signalled(signal) => write!(f, "was killed by signal {signal}"),
            Ended::TimedOut(secs) => write!(f, "ran past its timeout of {secs} s and was killed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{point} hook {}: {problem}", path.display())]
    Unusable {
        point: HookPoint,
        path: PathBuf,
        problem: String,
    },
    #[error("{point} hook {}: cannot start it: {source}", path.display())]
    Start {
        point: HookPoint,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{point} hook {} {ended}{}", path.display(), with_message(message))]
    Failed {
        point: HookPoint,
        path: PathBuf,
        ended: Ended,
        message: String,
    },
}

fn with_message(message: &str) -> String {
    if message.is_empty() {
        " (it printed nothing)".to_owned()
    } else {
        format!(": {message}")
    }
}

/// What one hook's end means at its point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Go,
    NotNow,
    Never,
    Failed,
}

pub fn answer_of(point: HookPoint, ended: Ended) -> Answer {
    match ended {
        Ended::Exited(0) => Answer::Go,
        Ended::Exited(EXIT_NOT_NOW) if point.may_veto() => Answer::NotNow,
        Ended::Exited(EXIT_NEVER) if point.may_veto() => Answer::Never,
        _ => Answer::Failed,
    }
}

/// The variables a hook gets besides `PATH` and `DIFFOTA_HOOK`.
#[derive(Clone, Debug, Default)]
pub struct HookEnv {
    vars: Vec<(&'static str, String)>,
}

impl HookEnv {
    pub fn new() -> HookEnv {
        HookEnv::default()
    }

    pub fn set(mut self, name: &'static str, value: impl Into<String>) -> HookEnv {
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value.into()));
        self
    }

    pub fn set_path(self, name: &'static str, value: &Path) -> HookEnv {
        self.set(name, value.to_string_lossy().into_owned())
    }

    pub fn vars(&self) -> &[(&'static str, String)] {
        &self.vars
    }
}

/// Runs the hooks of `point` in their configured order until one does not go on.
pub fn run_point(
    config: &HooksConfig,
    point: HookPoint,
    env: &HookEnv,
) -> Result<Verdict, HookError> {
    for path in point.hooks(config) {
        let (ended, message) = run_one(path, point, env, config.timeout_secs)?;
        match answer_of(point, ended) {
            Answer::Go => {}
            Answer::NotNow => {
                tracing::warn!(event = "hook_postponed", point = %point, hook = %path.display(), message = %message);
                return Ok(Verdict::NotNow {
                    hook: path.clone(),
                    message,
                });
            }
            Answer::Never => {
                tracing::warn!(event = "hook_refused", point = %point, hook = %path.display(), message = %message);
                return Ok(Verdict::Never {
                    hook: path.clone(),
                    message,
                });
            }
            Answer::Failed => {
                return Err(HookError::Failed {
                    point,
                    path: path.clone(),
                    ended,
                    message,
                })
            }
        }
    }
    Ok(Verdict::Go)
}

/// Runs the handler of a single-copy target: exit 0 is success, anything else a failure.
pub fn run_handler(path: &Path, env: &HookEnv, timeout_secs: u64) -> Result<(), HookError> {
    let point = HookPoint::SingleCopyHandler;
    let (ended, message) = run_one(path, point, env, timeout_secs)?;
    match answer_of(point, ended) {
        Answer::Go => Ok(()),
        _ => Err(HookError::Failed {
            point,
            path: path.to_owned(),
            ended,
            message,
        }),
    }
}

/// `doctor`: every configured hook is an executable regular file.
pub fn checks(config: &HooksConfig) -> Vec<crate::check::Check> {
    ALL_POINTS
        .iter()
        .flat_map(|&point| point.hooks(config).iter().map(move |path| (point, path)))
        .map(|(point, path)| {
            let name = format!("{point} hook {}", path.display());
            match unusable(path) {
                None => crate::check::Check::passed(name, "executable".to_owned()),
                Some(problem) => crate::check::Check::failed(name, problem),
            }
        })
        .collect()
}

/// Why `path` cannot be run as a hook or handler, if it cannot.
pub fn unusable(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some("not an absolute path".into());
    }
    match std::fs::metadata(path) {
        Err(e) => Some(e.to_string()),
        Ok(meta) if !meta.is_file() => Some("not a regular file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Some("not executable".into()),
        Ok(_) => None,
    }
}

fn run_one(
    path: &Path,
    point: HookPoint,
    env: &HookEnv,
    timeout_secs: u64,
) -> Result<(Ended, String), HookError> {
    if let Some(problem) = unusable(path) {
        return Err(HookError::Unusable {
            point,
            path: path.to_owned(),
            problem,
        });
    }
    tracing::info!(event = "hook_started", point = %point, hook = %path.display());
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("DIFFOTA_HOOK", point.name())
        .envs(env.vars().iter().map(|(n, v)| (n, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| HookError::Start {
            point,
            path: path.to_owned(),
            source,
        })?;
    let group = child.id() as libc::pid_t;
    let last_line = Arc::new(Mutex::new(LastLines::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    .map(|(stream, reader)| {
        let last_line = Arc::clone(&last_line);
        let name = path.display().to_string();
        std::thread::spawn(move || {
            read_lines(reader, |line| {
                tracing::info!(hook = %name, "{line}");
                if let Ok(mut last) = last_line.lock() {
                    last.note(stream == 1, line);
                }
            });
        })
    })
    .collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    // The hook is reaped only after its group was killed: until then its zombie keeps the
    // process group id, so the kill cannot reach another group that reused it.
    let ended = loop {
        match exited_unreaped(group) {
            Ok(true) => {
                // What the hook left running would hold its output open: the group goes
                // with it.
                kill_group(group);
                match child.wait() {
                    Ok(status) => break ended_of(status),
                    Err(e) => {
                        return Err(HookError::Start {
                            point,
                            path: path.to_owned(),
                            source: e,
                        })
                    }
                }
            }
            Ok(false) if Instant::now() >= deadline => {
                kill_group(group);
                let _ = child.wait();
                break Ended::TimedOut(timeout_secs);
            }
            Ok(false) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(group);
                let _ = child.wait();
                return Err(HookError::Start {
                    point,
                    path: path.to_owned(),
                    source: e,
                });
            }
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    let message = last_line
        .lock()
        .map(|last| last.message())
        .unwrap_or_default();
    tracing::info!(event = "hook_ended", point = %point, hook = %path.display(), ended = %ended);
    Ok((ended, message))
}

fn ended_of(status: ExitStatus) -> Ended {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        (None, None) => Ended::Exited(-1),
    }
}

/// Whether process `pid` (our child) has exited, without reaping it (`waitid` with
/// `WNOWAIT`): the zombie stays until `Child::wait`.
fn exited_unreaped(pid: libc::pid_t) -> std::io::Result<bool> {
    // SAFETY: waitid writes only into `info`, a zeroed siginfo_t we own; P_PID with our own
    // child's pid and WNOWAIT leaves the child to be reaped by `Child::wait`.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let result = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: si_pid is set by waitid (0 when no child changed state with WNOHANG).
    Ok(unsafe { info.si_pid() } != 0)
}

fn kill_group(group: libc::pid_t) {
    if group > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group and touches no
        // memory of ours; ESRCH (nothing left) is the usual outcome and fine.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// The last non-empty line a hook printed on each stream: its message is the last line of
/// stderr, or of stdout when stderr was silent.
#[derive(Default)]
struct LastLines {
    stdout: Option<String>,
    stderr: Option<String>,
}

impl LastLines {
    fn note(&mut self, stderr: bool, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let kept = Some(line.trim().to_owned());
        if stderr {
            self.stderr = kept;
        } else {
            self.stdout = kept;
        }
    }

    fn message(&self) -> String {
        self.stderr
            .clone()
            .or_else(|| self.stdout.clone())
            .unwrap_or_default()
    }
}

/// Splits a stream into lines, each cut at [`MAX_LINE`] bytes and cleaned of control
/// characters, whatever the stream holds; stops at its end or at a read error.
pub fn read_lines(mut stream: impl Read, mut each: impl FnMut(&str)) {
    let mut buffer = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buffer[..n] {
            if byte == b'\n' {
                each(&clean_line(&line));
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        each(&clean_line(&line));
    }
}

fn clean_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_mean_the_documented_verdicts() {
        for point in [
            HookPoint::PreInstall,
            HookPoint::PostWrite,
            HookPoint::PreArm,
        ] {
            assert_eq!(answer_of(point, Ended::Exited(0)), Answer::Go);
            assert_eq!(answer_of(point, Ended::Exited(75)), Answer::NotNow);
            assert_eq!(answer_of(point, Ended::Exited(77)), Answer::Never);
            assert_eq!(answer_of(point, Ended::Exited(1)), Answer::Failed);
            assert_eq!(answer_of(point, Ended::Signalled(9)), Answer::Failed);
            assert_eq!(answer_of(point, Ended::TimedOut(5)), Answer::Failed);
        }
        // After a boot nothing is vetoed: 75 and 77 are failures like any other.
        for point in [HookPoint::PostCommit, HookPoint::PostRevert] {
            assert_eq!(answer_of(point, Ended::Exited(0)), Answer::Go);
            assert_eq!(answer_of(point, Ended::Exited(75)), Answer::Failed);
            assert_eq!(answer_of(point, Ended::Exited(77)), Answer::Failed);
        }
    }

    #[test]
    fn lines_are_bounded_and_cleaned() {
        let mut text = b"first\r\n\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend(b"\nbell\x07 here\nno newline at the end");
        let mut lines = Vec::new();
        read_lines(&text[..], |line| lines.push(line.to_owned()));
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "bell  here");
        assert_eq!(lines[4], "no newline at the end");
    }

    #[test]
    fn the_message_is_the_last_line_of_stderr_else_of_stdout() {
        let mut last = LastLines::default();
        assert_eq!(last.message(), "");
        last.note(false, "progress 10%");
        last.note(false, "   ");
        assert_eq!(last.message(), "progress 10%");
        last.note(true, "machine busy: a print job runs");
        last.note(false, "progress 20%");
        assert_eq!(last.message(), "machine busy: a print job runs");
    }

    fn config(point_hooks: Vec<PathBuf>, timeout_secs: u64) -> HooksConfig {
        HooksConfig {
            pre_install: point_hooks,
            timeout_secs,
            ..HooksConfig::default()
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn hooks_run_in_order_with_only_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = script(
            dir.path(),
            "first",
            &format!(
                "echo \"$DIFFOTA_HOOK $DIFFOTA_VERSION home=${{HOME:-unset}} $(pwd)\" >> {}",
                out.display()
            ),
        );
        let second = script(
            dir.path(),
            "second",
            &format!(
                "echo second >> {}; echo 'busy printing' >&2; exit 75",
                out.display()
            ),
        );
        let third = script(
            dir.path(),
            "third",
            &format!("echo third >> {}", out.display()),
        );
        let env = HookEnv::new().set("DIFFOTA_VERSION", "2.0");
        let verdict = run_point(
            &config(vec![first, second.clone(), third], 10),
            HookPoint::PreInstall,
            &env,
        )
        .unwrap();
        assert_eq!(
            verdict,
            Verdict::NotNow {
                hook: second,
                message: "busy printing".into()
            }
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre-install 2.0 home=unset /\nsecond\n"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "slow", "sleep 600 & echo started; sleep 600");
        let started = Instant::now();
        let error = run_point(
            &config(vec![hook], 1),
            HookPoint::PreInstall,
            &HookEnv::new(),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(
            matches!(
                &error,
                HookError::Failed {
                    ended: Ended::TimedOut(1),
                    message,
                    ..
                } if message == "started"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_missing_or_plain_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "echo hi").unwrap();
        for (path, problem) in [
            (dir.path().join("absent"), "No such file"),
            (plain, "not executable"),
            (dir.path().to_owned(), "not a regular file"),
            (PathBuf::from("relative/hook"), "not an absolute path"),
        ] {
            let error = run_point(
                &config(vec![path], 10),
                HookPoint::PreInstall,
                &HookEnv::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(problem), "{error}");
        }
    }
}
