//! The Prometheus text-format file for node_exporter's textfile collector: the running
//! release, the last outcome and its time, the last install's download, pending reports.
//! Rendering is pure; the file is replaced atomically, as the collector expects (it must
//! never read a half-written file).

use std::fmt::Write as _;

use super::report::OutcomeReport;
use crate::slot::Slot;
use crate::state::State;

/// What the metrics are made of.
pub struct MetricsInput<'a> {
    pub state: &'a State,
    pub running: Option<Slot>,
    pub last_outcome: Option<&'a OutcomeReport>,
    pub pending_reports: usize,
}

pub fn render(input: &MetricsInput<'_>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let state = input.state;
    if let Some(slot) = input.running {
        let version = state.version_in(slot).unwrap_or("unknown");
        metric(
            "diffota_running_info",
            "The release the running slot holds.",
            &[(
                labels(&[("slot", slot.name()), ("version", version)]),
                "1".into(),
            )],
        );
    }
    metric(
        "diffota_trial_pending",
        "1 while a new slot waits for its trial boot or its health check.",
        &[(String::new(), u8::from(state.trial().is_some()).to_string())],
    );
    metric(
        "diffota_failed_releases",
        "Releases that did not come up healthy on this device.",
        &[(String::new(), state.failed_releases().len().to_string())],
    );
    if let Some(outcome) = input.last_outcome {
        let result = outcome.result.to_string();
        metric(
            "diffota_last_outcome_info",
            "The last outcome of an update: committed, reverted or install_failed.",
            &[(
                labels(&[
                    ("result", &result),
                    (
                        "from_version",
                        outcome.from_version.as_deref().unwrap_or(""),
                    ),
                    ("to_version", outcome.to_version.as_deref().unwrap_or("")),
                ]),
                "1".into(),
            )],
        );
        metric(
            "diffota_last_outcome_timestamp_seconds",
            "When the last outcome happened (Unix time).",
            &[(String::new(), outcome.at.to_string())],
        );
    }
    if let Some(install) = state.last_install() {
        metric(
            "diffota_last_install_downloaded_bytes",
            "Bytes the last install downloaded.",
            &[(String::new(), install.downloaded_bytes.to_string())],
        );
        metric(
            "diffota_last_install_requests",
            "HTTP requests the last install made.",
            &[(String::new(), install.requests.to_string())],
        );
        metric(
            "diffota_last_install_timestamp_seconds",
            "When the last install finished writing (Unix time).",
            &[(String::new(), install.finished_at.to_string())],
        );
    }
    metric(
        "diffota_reports_pending",
        "Outcome reports not yet acknowledged by the endpoint.",
        &[(String::new(), input.pending_reports.to_string())],
    );
    out
}

/// `{name="value",…}` with the text format's escapes (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcomes::report::OutcomeReport;

    #[test]
    fn renders_the_running_release_the_last_outcome_and_pending_reports() {
        let state = State::default();
        let outcome = OutcomeReport::of_failed_install(
            "dev",
            Some("1.0"),
            Some("2.0\"\n"),
            "no route".into(),
            1_790_000_000,
        );
        let text = render(&MetricsInput {
            state: &state,
            running: Some(Slot::A),
            last_outcome: Some(&outcome),
            pending_reports: 2,
        });
        assert!(
            text.contains("diffota_running_info{slot=\"a\",version=\"unknown\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(
            "diffota_last_outcome_info{result=\"install_failed\",from_version=\"1.0\",to_version=\"2.0\\\"\\n\"} 1\n"
        ), "{text}");
        assert!(text.contains("diffota_last_outcome_timestamp_seconds 1790000000\n"));
        assert!(text.contains("diffota_reports_pending 2\n"));
        assert!(text.contains("diffota_trial_pending 0\n"));
        // Every sample line follows its HELP and TYPE lines.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{line}");
        }
    }
}
