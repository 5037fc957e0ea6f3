//! pg-backups: disaster recovery for PostgreSQL.
//!
//! `main` calls [`run`], which parses the command line, resolves the settings once, runs one
//! command and returns the one JSON result with its exit code. Nothing below prints to stdout
//! or exits.

// Functions stay a readable size: past 100 lines (clippy.toml), name the steps.
#![warn(clippy::too_many_lines)]

pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docs;
pub mod dump;
pub mod envfile;
pub mod error;
pub mod exit;
pub mod human;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod process;
pub mod progress;
pub mod random;
pub mod report;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod signals;
pub mod storage;
pub mod time;

use std::ffi::OsString;

use chrono::Utc;

use crate::cli::Command;
use crate::config::Config;
use crate::error::Error;
use crate::report::{Outcome, Report};

/// What `main` prints and how it exits.
pub enum Exit {
    /// `--help`, `--version`, completions, man: text for a human, exit 0.
    Text(String),
    /// A run: its result on stdout (one JSON line, or text for a person; empty when the
    /// message on stderr says it all), a message on stderr, the exit code.
    Report {
        stdout: String,
        stderr: Option<String>,
        exit_code: i32,
    },
}

/// How the result is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json { pretty: bool },
    Text,
}

impl Output {
    fn resolve(json: Option<bool>, pretty: bool) -> Output {
        use std::io::IsTerminal;
        match json {
            Some(true) => Output::Json { pretty },
            Some(false) => Output::Text,
            None if std::io::stdout().is_terminal() => Output::Text,
            None => Output::Json { pretty },
        }
    }

    fn show(self, report: &Report) -> String {
        match self {
            Output::Json { pretty } => report.to_json(pretty),
            Output::Text => report::text::render(report),
        }
    }
}

/// Runs one command line.
pub fn run(args: Vec<OsString>) -> Exit {
    let started_at = Utc::now();
    let word = cli::command_word(&args);
    let pretty = args.iter().any(|a| a == "--pretty");
    let output = Output::resolve(cli::output_from_args(&args), pretty);
    let refuse = |command: &str, e: Error| {
        refused(&Report::new(command, started_at, Outcome::from(e)), output)
    };

    // The env file, and "an empty variable means not set", before clap reads the environment.
    let secrets = match envfile::prepare(&args) {
        Ok(s) => s,
        Err(e) => return refuse(&word, e.into()),
    };
    let cli = match cli::parse(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &word, started_at, output),
    };
    // Text for people, no settings needed.
    match &cli.command {
        Command::Completions(args) => return Exit::Text(docs::completions(args.shell)),
        Command::Man(args) => {
            return match docs::man(args.dir.as_deref()) {
                Ok(text) => Exit::Text(text),
                Err(e) => refuse(
                    "man",
                    Error::Internal(format!("writing the man pages: {e}")),
                ),
            };
        }
        _ => {}
    }
    let command = cli.command.name();
    let output = Output::resolve(
        cli.global
            .json
            .then_some(true)
            .or(cli.global.output.as_deref().map(|o| o == "json")),
        cli.global.pretty,
    );
    // Notification settings first: a run whose other settings are wrong still reports it.
    let (notifier, urls_error) = match notify::Settings::from_args(&cli.global, &secrets) {
        Ok(mut settings) => {
            let urls_error = settings.targets_error.take();
            (notify::Notifier::new(settings), urls_error)
        }
        Err(e) => return refuse(command, e.into()),
    };
    if let Some(exit) = answer_for_the_cycle(&cli, &notifier, output, started_at) {
        return exit;
    }
    let pings = notify::pings(command) && !notify::in_cycle();
    let config = match urls_error.map_or_else(
        || Config::from_args(&cli.global, &secrets),
        |e| Err(unshared(e)),
    ) {
        Ok(c) => c,
        Err(e) => {
            logging::init(config::LogFormat::Text, output == Output::Text);
            let report = Report::new(command, started_at, Outcome::from(Error::from(e)));
            tell(&notifier, &report, pings, notify::notifies(command));
            return refused(&report, output);
        }
    };
    logging::init(config.log_format, output == Output::Text);
    signals::install();
    if pings {
        ping_logged(&notifier, notify::Signal::Start, "");
    }

    // A usage error found by the command itself (`check --max-age 5`) reads like one found
    // before it: one line for the person, not a log record.
    let mut usage_line = None;
    let outcome = match dispatch(&config, &cli.command) {
        Ok(o) => o,
        Err(e) => {
            if output != Output::Text {
                if e.exit_code() == exitcode::USAGE {
                    usage_line = Some(format!("pg-backups {command}: {e}"));
                } else {
                    tracing::error!("{e}");
                }
            }
            Outcome::from(e)
        }
    };
    let report = Report::new(command, started_at, outcome);
    record_metrics(&config, &cli.command, &report);
    tell(&notifier, &report, pings, notify::notifies(command));
    Exit::Report {
        stdout: output.show(&report),
        stderr: usage_line,
        exit_code: report.exit_code,
    }
}

/// The run's series in `METRICS_FILE`, for the commands that have some; only the
/// destinations in use keep theirs.
fn record_metrics(config: &Config, cmd: &Command, report: &Report) {
    let command = cmd.name();
    // A restore drill (`verify --restore-test`) has series of its own.
    let series = match cmd {
        Command::Verify(args) if args.restore_test => Some("drill"),
        _ => matches!(command, "dump" | "ship" | "prune" | "check").then_some(command),
    };
    let (Some(path), Some(series)) = (&config.metrics_file, series) else {
        return;
    };
    let value = serde_json::to_value(report).unwrap_or_default();
    let mut destinations = Vec::new();
    if config.local_copy {
        destinations.push("local");
    }
    if config.s3.is_enabled() {
        destinations.push("s3");
    }
    if config.rsync.is_enabled() {
        destinations.push("remote");
    }
    if let Err(e) = metrics::update(path, series, &value, &destinations) {
        // Metrics are a side channel: the run's own result stands.
        tracing::warn!("could not update METRICS_FILE {}: {e}", path.display());
    }
}

/// `ping` and `notify`, which `pg-backups-cycle` calls: they need the notification settings
/// only, so a cycle whose other settings are wrong still pings and tells.
fn answer_for_the_cycle(
    cli: &cli::Cli,
    notifier: &notify::Notifier,
    output: Output,
    started_at: chrono::DateTime<Utc>,
) -> Option<Exit> {
    let command = cli.command.name();
    let outcome = match &cli.command {
        Command::Ping(args) => commands::ping::run(notifier, args),
        Command::Notify(args) => {
            let format =
                config::LogFormat::parse(&cli.global.log_format).unwrap_or(config::LogFormat::Text);
            logging::init(format, output == Output::Text);
            commands::notify::run(notifier, args)
        }
        _ => return None,
    };
    let report = Report::new(command, started_at, outcome);
    Some(Exit::Report {
        stdout: output.show(&report),
        stderr: None,
        exit_code: report.exit_code,
    })
}

/// A run stopped before its work (a setting, the env file): one line for the person on
/// stderr, the JSON result for a scheduler (on a terminal the line says it all).
fn refused(report: &Report, output: Output) -> Exit {
    Exit::Report {
        stdout: match output {
            Output::Json { .. } => output.show(report),
            Output::Text => String::new(),
        },
        stderr: report
            .error
            .as_ref()
            .map(|e| format!("pg-backups {}: {}", report.command, e.message)),
        exit_code: report.exit_code,
    }
}

/// NOTIFY_URL and the closing HEALTHCHECK_URL ping of a run. A dead endpoint is a warning:
/// the run's own result and exit code stand.
fn tell(notifier: &notify::Notifier, report: &Report, pings: bool, notifies: bool) {
    let failed = report.exit_code != 0;
    let json = report.to_json(false);
    if notifies {
        match notifier.notify(failed, &json) {
            Ok(true) => tracing::debug!("NOTIFY_URL told"),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not tell NOTIFY_URL: {e}"),
        }
    }
    // People hear of a cycle once, from the cycle (`pg-backups notify`), not per step.
    if notifies && !notify::in_cycle() {
        let value = serde_json::to_value(report).unwrap_or_default();
        let message = notify::Message::of_run(&notifier.settings().host, &value);
        for d in notifier.tell_people(&message) {
            match d.result {
                Ok(()) => tracing::debug!("{} told", d.service),
                Err(e) => tracing::warn!("could not tell {}: {}", d.service, e.reason()),
            }
        }
    }
    if pings {
        let signal = if failed {
            notify::Signal::Fail
        } else {
            notify::Signal::Success
        };
        ping_logged(notifier, signal, &json);
    }
}

fn ping_logged(notifier: &notify::Notifier, signal: notify::Signal, body: &str) {
    if let Err(e) = notifier.ping(signal, body) {
        tracing::warn!("could not ping HEALTHCHECK_URL ({}): {e}", signal.as_str());
    }
}

/// A command line clap refused: bare `pg-backups` gets the short usage, anything else one
/// line (with clap's "did you mean" tip) on stderr; the JSON result goes to a scheduler.
fn usage_error(
    e: clap::Error,
    word: &str,
    started_at: chrono::DateTime<Utc>,
    output: Output,
) -> Exit {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return Exit::Text(e.render().to_string());
    }
    let (message, stderr) = if matches!(
        e.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let usage = cli::command().render_usage().to_string();
        (
            "no command given: run `pg-backups --help` for the commands".to_string(),
            format!(
                "{}\n\nCommands: dump, ship, prune, list, verify, check, pin, adopt, restore, \
                 ping, notify, completions, man\nRun `pg-backups --help` for the commands and settings, \
                 `pg-backups COMMAND --help` for one command.",
                usage.trim_end()
            ),
        )
    } else {
        let text = e.render().to_string();
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
            .collect::<Vec<_>>()
            .join("; ");
        let line = line.trim_start_matches("error: ").to_string();
        let help = if word == "pg-backups" {
            "pg-backups --help".to_string()
        } else {
            format!("pg-backups {word} --help")
        };
        (line.clone(), format!("pg-backups: {line} (see `{help}`)"))
    };
    let report = Report::new(
        word,
        started_at,
        Outcome::failed(
            error::ErrorInfo {
                kind: "usage".into(),
                message,
                exit_code: exitcode::USAGE,
            },
            serde_json::json!({}),
        ),
    );
    Exit::Report {
        stdout: match output {
            Output::Json { .. } => output.show(&report),
            Output::Text => String::new(),
        },
        stderr: Some(stderr),
        exit_code: report.exit_code,
    }
}

fn dispatch(config: &Config, command: &Command) -> Result<Outcome, Error> {
    match command {
        Command::Dump => commands::dump::run(config),
        Command::List(args) => commands::list::run(config, args),
        Command::Ship => commands::ship::run(config),
        Command::Prune(args) => commands::prune::run(config, args),
        Command::Check(args) => commands::check::run(config, args),
        Command::Pin(args) => commands::pin::run(config, args),
        Command::Adopt(args) => commands::adopt::run(config, args),
        Command::Verify(args) => commands::verify::run(config, args),
        Command::Restore(args) => commands::restore::run(config, args),
        Command::Completions(_) | Command::Man(_) | Command::Ping(_) | Command::Notify(_) => {
            Err(Error::Internal(
                "completions, man, ping and notify are answered before settings are read".into(),
            ))
        }
    }
}

/// The `NOTIFY_URLS` error held aside until the other channels could report it.
fn unshared(e: std::sync::Arc<config::ConfigError>) -> config::ConfigError {
    std::sync::Arc::try_unwrap(e).unwrap_or_else(|shared| config::ConfigError::Invalid {
        var: "NOTIFY_URLS",
        value: "(hidden)".into(),
        reason: shared.to_string(),
    })
}
