//! Sending the spooled reports: one JSON POST each, oldest first, to the endpoint of the
//! config's `[report]`, with an optional bearer token. A 2xx answer removes the report; a
//! refusal (4xx other than 408 and 429) moves it aside as `*.rejected`, since sending it
//! again would be refused again; anything else (no answer, 5xx, a redirect: redirects are
//! never followed, nor taken as an acknowledgement) is retried with a doubling
//! delay, and what is still unsent waits for the next run (the next `diffota report`,
//! `install` or timer run). Order is kept: a report is not sent before an older one.

use std::path::PathBuf;
use std::time::Duration;

use diffota_cli::error_chain;
use diffota_cli::redact::redact_url;

use super::spool::{Spool, SpoolError};
use crate::config::{Config, ReportConfig};
use crate::source::FetchError;
use crate::state::LockError;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("report bearer token {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report endpoint: {0}")]
    Client(#[source] FetchError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// What one run of sending did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendSummary {
    pub sent: usize,
    pub rejected: usize,
    /// Still queued after this run.
    pub pending: usize,
    /// Why the first report left unsent was not sent.
    pub last_error: Option<String>,
}

impl std::fmt::Display for SendSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reports: {} sent", self.sent)?;
        if self.rejected > 0 {
            write!(
                f,
                ", {} rejected by the endpoint (kept as *.rejected)",
                self.rejected
            )?;
        }
        write!(f, ", {} pending", self.pending)?;
        if let Some(error) = &self.last_error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

enum Delivery {
    Acknowledged,
    Rejected(String),
    Failed(String),
}

/// Sends what the spool holds; `attempts` per report in this run (at least 1).
pub async fn send_spooled(
    config: &Config,
    spool: &Spool,
    attempts: u32,
) -> Result<SendSummary, SendError> {
    let mut summary = SendSummary::default();
    let queued = spool.queued()?;
    let Some(endpoint) = &config.report else {
        summary.pending = queued.len();
        return Ok(summary);
    };
    if queued.is_empty() {
        return Ok(summary);
    }
    let _sending = match spool.sending_lock() {
        Ok(lock) => lock,
        Err(LockError::Busy { holder, .. }) => {
            summary.pending = queued.len();
            summary.last_error = Some(format!("another run is sending them: {holder}"));
            return Ok(summary);
        }
        Err(e) => return Err(SendError::Lock(e)),
    };
    // What the other run left, now that it is done.
    let queued = spool.queued()?;
    let token = match &endpoint.bearer_token_file {
        Some(path) => Some(
            diffota_files::local_file::read_bounded_text(
                path,
                crate::limits::SMALL_TEXT,
                diffota_files::local_file::Links::Follow,
            )
            .map_err(|source| SendError::Token {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_owned(),
        ),
        None => None,
    };
    // Not the store's credentials, and no redirects: a redirect is not an acknowledgement,
    // and the report must not follow it to another host.
    let client = crate::source::http_client(&config.http, crate::source::ClientFor::Reports)
        .map_err(SendError::Client)?;
    for (number, (path, report)) in queued.iter().enumerate() {
        let body = serde_json::to_vec(report).expect("a report serializes");
        let mut delivery = Delivery::Failed(String::new());
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff(endpoint, attempt)).await;
            }
            delivery = post(&client, endpoint, token.as_deref(), body.clone()).await;
            if !matches!(delivery, Delivery::Failed(_)) {
                break;
            }
        }
        match delivery {
            Delivery::Acknowledged => {
                spool.remove(path)?;
                summary.sent += 1;
                tracing::info!(event = "report_sent", id = %report.id, report = %report);
            }
            Delivery::Rejected(why) => {
                let aside = path.with_extension("rejected");
                std::fs::rename(path, &aside).map_err(|source| SpoolError::Io {
                    path: path.clone(),
                    source,
                })?;
                summary.rejected += 1;
                tracing::warn!(event = "report_rejected", id = %report.id, reason = %why);
            }
            Delivery::Failed(why) => {
                summary.pending = queued.len() - number;
                tracing::warn!(event = "report_unsent", id = %report.id, reason = %why, pending = summary.pending);
                summary.last_error = Some(why);
                break;
            }
        }
    }
    Ok(summary)
}

fn backoff(endpoint: &ReportConfig, attempt: u32) -> Duration {
    Duration::from_millis(
        endpoint
            .retry_delay_ms
            .saturating_mul(1 << (attempt - 1).min(10)),
    )
}

async fn post(
    client: &reqwest::Client,
    endpoint: &ReportConfig,
    token: Option<&str>,
    body: Vec<u8>,
) -> Delivery {
    let mut request = client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(endpoint.timeout_secs))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let url = redact_url(&endpoint.url);
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Delivery::Acknowledged
            } else if status.is_redirection() {
                Delivery::Failed(format!(
                    "{url} answered {status}: redirects are not followed, the report stays queued"
                ))
            } else if status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                Delivery::Rejected(format!("{url} answered {status}"))
            } else {
                Delivery::Failed(format!("{url} answered {status}"))
            }
        }
        Err(e) => Delivery::Failed(format!("{url}: {}", error_chain(&e.without_url()))),
    }
}
