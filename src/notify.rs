//! Telling someone how a run went, so a backup that stopped is noticed the same day:
//!
//! - `NOTIFY_URL` receives the run's JSON result (a POST) after a failure, or after every run
//!   with `NOTIFY_ON=always`;
//! - `HEALTHCHECK_URL` is pinged healthchecks.io-style by `dump`, `ship` and `prune`: `/start`
//!   when a run starts, the URL itself on success, `/fail` on failure (the JSON result as the
//!   body, which healthchecks.io shows in its log). Inside `pg-backups-cycle` the script pings once per cycle
//!   (`pg-backups ping`) and the commands stay quiet, so a successful `ship` after a failed
//!   `dump` never turns the check green.
//!
//! Both URLs carry tokens: they are secrets (environment or `*_FILE` only), never logged,
//! never in the JSON, never in a child's environment; messages show `scheme://host/…` only.
//! A dead or hanging endpoint never fails or holds up a backup: each request has a timeout,
//! retries are bounded, a failure is a warning and the run's exit code stands.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The settings are resolved with every other setting, in `config/notify.rs`.
pub use crate::config::notify::{NotifyOn, SecretUrl, Settings};

/// Attempts per request: one, then two retries after 1 s and 2 s.
const ATTEMPTS: u32 = 3;

/// What a healthcheck ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Start,
    Success,
    Fail,
}

impl Signal {
    pub fn parse(word: &str) -> Option<Signal> {
        match word {
            "start" => Some(Signal::Start),
            "success" => Some(Signal::Success),
            "fail" | "failure" => Some(Signal::Fail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Start => "start",
            Signal::Success => "success",
            Signal::Fail => "fail",
        }
    }
}

/// Whether this process runs as one step of `pg-backups-cycle`, which pings per cycle.
pub fn in_cycle() -> bool {
    std::env::var_os("PG_BACKUPS_IN_CYCLE").is_some_and(|v| v == "1")
}

/// The commands whose failures NOTIFY_URL hears about: the ones that run unattended.
pub fn notifies(command: &str) -> bool {
    matches!(
        command,
        "dump" | "ship" | "prune" | "verify" | "check" | "restore"
    )
}

/// The commands that ping HEALTHCHECK_URL when run on their own: the work of a backup cycle.
/// `check` (a monitor itself, run hourly) and `restore` do not: they would turn the backup's
/// check green or red for reasons that are not the backups being made.
pub fn pings(command: &str) -> bool {
    matches!(command, "dump" | "ship" | "prune")
}

/// Why a request did not go through (the URL is never part of it).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: {1}")]
    Connect(String, String),
    #[error("{0} answered HTTP {1}")]
    Status(String, u16),
}

/// Sends the requests of one run.
pub struct Notifier {
    settings: Settings,
    rt: Option<tokio::runtime::Runtime>,
}

impl Notifier {
    pub fn new(settings: Settings) -> Notifier {
        let rt = if settings.is_empty() {
            None
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| tracing::warn!("notifications are off: no async runtime: {e}"))
                .ok()
        };
        Notifier { settings, rt }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Pings `HEALTHCHECK_URL` (`/start`, the URL, or `/fail`), with the JSON result as
    /// the body of the last two. `Ok(false)`: no URL is set.
    pub fn ping(&self, signal: Signal, body: &str) -> Result<bool, SendError> {
        let Some(url) = &self.settings.healthcheck_url else {
            return Ok(false);
        };
        let suffix = match signal {
            Signal::Start => "/start",
            Signal::Success => "",
            Signal::Fail => "/fail",
        };
        self.post(url, &url.with_suffix(suffix), body.to_string())
            .map(|()| true)
    }

    /// Posts the JSON result to `NOTIFY_URL` when `NOTIFY_ON` asks for it. `Ok(false)`:
    /// nothing to send.
    pub fn notify(&self, failed: bool, json: &str) -> Result<bool, SendError> {
        let Some(url) = &self.settings.notify_url else {
            return Ok(false);
        };
        if !failed && self.settings.notify_on == NotifyOn::Failure {
            return Ok(false);
        }
        self.post(url, &url.with_suffix(""), json.to_string())
            .map(|()| true)
    }

    fn post(&self, url: &SecretUrl, target: &str, body: String) -> Result<(), SendError> {
        let Some(rt) = &self.rt else {
            return Err(SendError::Connect(
                url.shown().to_string(),
                "no async runtime".into(),
            ));
        };
        let timeout = self.settings.timeout;
        let shown = url.shown().to_string();
        rt.block_on(async {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| SendError::Connect(shown.clone(), format!("no CA certificates: {e}")))?
                .https_or_http()
                .enable_http1()
                .build();
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
            let mut last = None;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                let request = http::Request::post(target)
                    .header("content-type", "application/json")
                    .header(
                        "user-agent",
                        concat!("pg-backups/", env!("CARGO_PKG_VERSION")),
                    )
                    .body(Full::new(Bytes::from(body.clone())))
                    .map_err(|_| SendError::Connect(shown.clone(), "invalid URL".into()))?;
                let answer = tokio::time::timeout(timeout, async {
                    let response = client.request(request).await?;
                    let status = response.status();
                    // Read the (small) answer so the connection closes cleanly.
                    let _ = response.into_body().collect().await;
                    Ok::<_, hyper_util::client::legacy::Error>(status)
                })
                .await;
                let error = match answer {
                    Ok(Ok(status)) if status.is_success() => return Ok(()),
                    Ok(Ok(status)) => {
                        let e = SendError::Status(shown.clone(), status.as_u16());
                        // A redirect (not followed: the body would go where the URL does
                        // not say) or a 4xx other than 429 will not change on a retry.
                        if status.is_redirection()
                            || (status.is_client_error() && status.as_u16() != 429)
                        {
                            return Err(e);
                        }
                        e
                    }
                    Ok(Err(e)) => SendError::Connect(shown.clone(), one_line_cause(&e)),
                    Err(_) => SendError::Timeout(shown.clone(), timeout),
                };
                last = Some(error);
            }
            Err(last.unwrap_or(SendError::Timeout(shown.clone(), timeout)))
        })
    }
}

/// The innermost cause of a client error, which names what happened ("Connection refused").
fn one_line_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() { e.to_string() } else { text }
}
