//! Logs go to stderr (stdout carries only the JSON result), as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `RUST_LOG` refines the level when set (e.g. `RUST_LOG=pg_backups=debug`). A person at a
/// terminal reading the text result sees warnings and errors only (progress bars show the
/// work); schedulers and log collectors get every step.
pub fn init(format: LogFormat, for_a_person: bool) {
    let quiet = for_a_person && std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::LogWriter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
