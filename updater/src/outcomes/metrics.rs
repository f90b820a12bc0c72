//! The Prometheus text-format file for node_exporter's textfile collector: the running
//! release and each image of its slot group, what each single-copy target holds, the last
//! outcome and its time (per image for a release of several), the last install's download,
//! pending reports.
//! Rendering is pure; the file is replaced atomically, as the collector expects (it must
//! never read a half-written file).

use std::fmt::Write as _;

use super::report::{ImageFigures, OutcomeReport};
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
        if let Some(record) = state.slot(slot).filter(|r| !r.images.is_empty()) {
            let samples: Vec<(String, String)> = record
                .images
                .iter()
                .map(|(image, held)| {
                    (
                        labels(&[
                            ("slot", slot.name()),
                            ("image", image),
                            ("version", &record.version),
                            ("blake3", &held.image_hash),
                        ]),
                        "1".into(),
                    )
                })
                .collect();
            metric(
                "diffota_running_image_info",
                "Each other image of the running slot group ([images.<name>]) and its release.",
                &samples,
            );
        }
    }
    let single_copy: Vec<(String, String)> = state
        .single_copy_records()
        .map(|(image, held)| {
            (
                labels(&[
                    ("image", image),
                    ("version", &held.version),
                    ("blake3", &held.image_hash),
                ]),
                held.written_at.to_string(),
            )
        })
        .collect();
    if !single_copy.is_empty() {
        metric(
            "diffota_single_copy_written_timestamp_seconds",
            "When each single-copy target was last written and read back, and with what.",
            &single_copy,
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
        let per_image = |value: fn(&ImageFigures) -> u64| -> Vec<(String, String)> {
            outcome
                .images
                .iter()
                .map(|image| {
                    (
                        labels(&[
                            ("image", &image.name),
                            ("install", &image.install),
                            ("result", &result),
                        ]),
                        value(image).to_string(),
                    )
                })
                .collect()
        };
        if !outcome.images.is_empty() {
            metric(
                "diffota_last_outcome_image_bytes",
                "Each image of the last outcome's release of several: its size.",
                &per_image(|i| i.image_bytes),
            );
            metric(
                "diffota_last_outcome_image_fetched_bytes",
                "Each image of the last outcome's release: what of it came from the store or bundle.",
                &per_image(|i| i.fetched_image_bytes),
            );
            metric(
                "diffota_last_outcome_image_written",
                "Each image of the last outcome's release: 1 when written, 0 when its single-copy target held it already.",
                &per_image(|i| u64::from(i.written)),
            );
        }
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
        assert!(
            !text.contains("image"),
            "no image metrics for a release of one: {text}"
        );
        // Every sample line follows its HELP and TYPE lines.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{line}");
        }
    }

    #[test]
    fn renders_each_image_of_the_running_group_single_copy_targets_and_the_last_outcome() {
        let state = State::decode(
            serde_json::json!({
                "format": crate::state::STATE_FORMAT,
                "slots": {"b": {
                    "version": "2.0", "image_hash": "00", "image_length": 1, "installed_at": 5,
                    "images": {"appfs": {"image_hash": "ab", "image_length": 4096}},
                }},
                "single_copy": {"mcu": {
                    "version": "2.0", "image_hash": "cd", "image_length": 10,
                    "written_at": 1_790_000_100u64,
                }},
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let mut outcome = OutcomeReport::of_failed_install(
            "dev",
            Some("1.0"),
            Some("2.0"),
            "hook".into(),
            1_790_000_000,
        );
        outcome.images = vec![
            ImageFigures {
                name: "appfs".into(),
                install: "slot".into(),
                image_bytes: 4096,
                fetched_image_bytes: 512,
                written: true,
            },
            ImageFigures {
                name: "mcu".into(),
                install: "single-copy".into(),
                image_bytes: 10,
                fetched_image_bytes: 0,
                written: false,
            },
        ];
        let text = render(&MetricsInput {
            state: &state,
            running: Some(Slot::B),
            last_outcome: Some(&outcome),
            pending_reports: 0,
        });
        for line in [
            "diffota_running_image_info{slot=\"b\",image=\"appfs\",version=\"2.0\",blake3=\"ab\"} 1\n",
            "diffota_single_copy_written_timestamp_seconds{image=\"mcu\",version=\"2.0\",blake3=\"cd\"} 1790000100\n",
            "diffota_last_outcome_image_fetched_bytes{image=\"appfs\",install=\"slot\",result=\"install_failed\"} 512\n",
            "diffota_last_outcome_image_written{image=\"mcu\",install=\"single-copy\",result=\"install_failed\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
