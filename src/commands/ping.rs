//! `pg-backups ping start|success|fail [CODE]`: one healthcheck ping, for
//! `pg-backups-cycle`, which pings once per cycle (the image has no curl). Never fails the
//! cycle: an unreachable endpoint is reported in the result, with exit 0.

use serde::Serialize;

use crate::cli::PingArgs;
use crate::notify::{Notifier, Signal};
use crate::report::Outcome;

#[derive(Debug, Serialize)]
struct PingDetails {
    signal: &'static str,
    sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn run(notifier: &Notifier, args: &PingArgs) -> Outcome {
    let signal = Signal::parse(&args.signal).unwrap_or(Signal::Fail);
    let body = match (signal, args.code) {
        (Signal::Fail, Some(code)) => format!("pg-backups-cycle failed with exit code {code}"),
        (Signal::Fail, None) => "pg-backups-cycle failed".to_string(),
        _ => String::new(),
    };
    let endpoint = notifier
        .settings()
        .healthcheck_url
        .as_ref()
        .map(|u| u.shown().to_string());
    let (sent, note) = match notifier.ping(signal, &body) {
        Ok(true) => (true, None),
        Ok(false) => (false, Some("HEALTHCHECK_URL is not set".to_string())),
        Err(e) => (false, Some(format!("not sent: {e}"))),
    };
    Outcome::ok(PingDetails {
        signal: signal.as_str(),
        sent,
        endpoint,
        note,
    })
}
