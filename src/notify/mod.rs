//! Telling someone how a run went, so a backup that stopped is noticed the same day:
//!
//! - `NOTIFY_URL` receives the run's JSON result (a POST) after a failure, or after every run
//!   with `NOTIFY_ON=always`;
//! - `HEALTHCHECK_URL` is pinged healthchecks.io-style by `dump`, `ship` and `prune`: `/start`
//!   when a run starts, the URL itself on success, `/fail` on failure (the JSON result as the
//!   body, which healthchecks.io shows in its log). Inside `pg-backups-cycle` the script pings
//!   once per cycle (`pg-backups ping`) and the commands stay quiet, so a successful `ship`
//!   after a failed `dump` never turns the check green;
//! - `NOTIFY_URLS` (chat services and mail, shoutrrr's URL forms) get a message a person
//!   reads ([`Message`], formatted per service in `chat.rs` and `mail.rs`), per `NOTIFY_ON`:
//!   from a command run on its own, and once per cycle from `pg-backups-cycle` through
//!   `pg-backups notify` (the cycle's commands stay quiet, as for the pings).
//!
//! All these URLs carry tokens: they are secrets (environment or `*_FILE` only), never logged,
//! never in the JSON, never in a child's environment; messages show `scheme://host/…` only.
//! A dead or hanging endpoint never fails or holds up a backup: each request has a timeout,
//! retries are bounded, a failure is a warning and the run's exit code stands.

mod chat;
mod http;
mod mail;
mod message;

use std::time::Duration;

pub use message::Message;

use crate::config::notify_urls::Target;

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

impl SendError {
    /// What happened, without the endpoint (for messages that name it already).
    pub fn reason(&self) -> String {
        match self {
            SendError::Timeout(_, timeout) => format!("no answer within {timeout:?}"),
            SendError::Connect(_, reason) => reason.clone(),
            SendError::Status(_, code) => format!("answered HTTP {code}"),
        }
    }
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
        let post = http::Post {
            url: target.to_string(),
            shown: url.shown().to_string(),
            content_type: "application/json",
            headers: Vec::new(),
            body,
        };
        let client = http::client(&post.shown)?;
        rt.block_on(http::send(&client, &post, self.settings.timeout, ATTEMPTS))
    }

    /// Sends `message` to every `NOTIFY_URLS` service when `NOTIFY_ON` asks for it, all at
    /// once, each attempt bounded by `NOTIFY_TIMEOUT` and retried once: the whole takes at
    /// most 2 × NOTIFY_TIMEOUT + 1 s, however many services are slow. Returns each
    /// service's outcome (`scheme://host/…`, never a token); empty when nothing was due.
    pub fn tell_people(&self, message: &Message) -> Vec<Delivery> {
        let targets = &self.settings.targets;
        if targets.is_empty() || (!message.failed && self.settings.notify_on == NotifyOn::Failure) {
            return Vec::new();
        }
        let Some(rt) = &self.rt else {
            return targets
                .iter()
                .map(|t| Delivery {
                    service: t.shown().to_string(),
                    result: Err(SendError::Connect(
                        t.shown().to_string(),
                        "no async runtime".into(),
                    )),
                })
                .collect();
        };
        if let Some(base) = &self.settings.api_base {
            tracing::warn!(
                "PG_BACKUPS_NOTIFY_API_BASE is set (a test setting): Slack, Discord, Telegram \
                 and Teams messages go to {base}"
            );
        }
        rt.block_on(self.deliver_all(message))
    }

    async fn deliver_all(&self, message: &Message) -> Vec<Delivery> {
        let timeout = self.settings.timeout;
        let api_base = self.settings.api_base.as_deref();
        let mut jobs = Vec::new();
        for target in &self.settings.targets {
            let job: std::pin::Pin<Box<dyn std::future::Future<Output = Delivery> + '_>> =
                match target {
                    Target::Http(endpoint) => Box::pin(async move {
                        let mut result = Ok(());
                        match http::client(&endpoint.shown) {
                            Ok(client) => {
                                // Several requests of one service (a Telegram message per
                                // chat) go at once: the bound holds however many there are.
                                let posts = chat::requests(endpoint, message, api_base);
                                let sent = futures_util::future::join_all(
                                    posts.iter().map(|p| http::send(&client, p, timeout, 2)),
                                )
                                .await;
                                if let Some(e) = sent.into_iter().find_map(Result::err) {
                                    result = Err(e);
                                }
                            }
                            Err(e) => result = Err(e),
                        }
                        Delivery {
                            service: endpoint.shown.clone(),
                            result,
                        }
                    }),
                    Target::Mail(m) => Box::pin(async move {
                        Delivery {
                            service: m.shown.clone(),
                            result: mail::send(m, message, timeout).await,
                        }
                    }),
                };
            jobs.push(job);
        }
        futures_util::future::join_all(jobs).await
    }
}

/// How one service of `NOTIFY_URLS` was told.
#[derive(Debug)]
pub struct Delivery {
    /// `slack://hooks.slack.com/…`: never the token.
    pub service: String,
    pub result: Result<(), SendError>,
}
