//! `pg-backups notify CODE [RESULTS]`: one message to the `NOTIFY_URLS` services about a
//! whole `pg-backups-cycle` (its exit code, and the file of its JSON lines), sent per
//! `NOTIFY_ON`. The cycle calls it once at its end, as it pings once; its commands stay quiet
//! (`PG_BACKUPS_IN_CYCLE=1`). Never fails the cycle: a service that cannot be reached is
//! reported in the result (and logged), with exit 0.

use serde::Serialize;
use serde_json::Value;

use crate::cli::NotifyArgs;
use crate::notify::{Message, Notifier};
use crate::report::Outcome;

#[derive(Debug, Serialize)]
struct NotifyDetails {
    cycle_exit_code: i32,
    told: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_told: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn run(notifier: &Notifier, args: &NotifyArgs) -> Outcome {
    let results = match &args.results {
        Some(path) => read_results(path),
        None => Vec::new(),
    };
    let settings = notifier.settings();
    let message = Message::of_cycle(&settings.host, args.code, &results);
    let deliveries = notifier.tell_people(&message);
    let note = if settings.targets.is_empty() {
        Some("NOTIFY_URLS is not set".to_string())
    } else if deliveries.is_empty() {
        Some("NOTIFY_ON=failure and the cycle succeeded: nothing to tell".to_string())
    } else {
        None
    };
    let mut told = Vec::new();
    let mut not_told = Vec::new();
    for d in deliveries {
        match d.result {
            Ok(()) => told.push(d.service),
            Err(e) => {
                tracing::warn!("could not tell {}: {}", d.service, e.reason());
                not_told.push(format!("{}: {}", d.service, e.reason()));
            }
        }
    }
    Outcome::ok(NotifyDetails {
        cycle_exit_code: args.code,
        told,
        not_told,
        note,
    })
}

/// The cycle's JSON lines; a line that is not JSON (a crash's text) is left out, and a file
/// that cannot be read gives a message without details rather than none.
fn read_results(path: &std::path::Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read the cycle's results {}: {e}", path.display());
            Vec::new()
        }
    }
}
