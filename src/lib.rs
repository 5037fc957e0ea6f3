//! pg-backups: disaster recovery for PostgreSQL.
//!
//! `main` calls [`run`], which parses the command line, resolves the settings once, runs one
//! command and returns the one JSON result with its exit code. Nothing below prints to stdout
//! or exits.

pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docs;
pub mod envfile;
pub mod error;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod process;
pub mod prompt;
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
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::Error;
use crate::report::{Outcome, Report};

/// What `main` prints and how it exits.
pub enum Exit {
    /// `--help` or `--version`: text for a human, exit 0.
    Text(String),
    /// A run: one JSON object and its exit code.
    Report { json: String, exit_code: i32 },
}

/// Runs one command line.
pub fn run(args: Vec<OsString>) -> Exit {
    let started_at = Utc::now();
    let word = cli::command_word(&args);
    let pretty = args.iter().any(|a| a == "--pretty");
    let fail = |command: &str, e: Error| {
        let report = Report::new(command, started_at, Outcome::from(e));
        Exit::Report {
            json: report.to_json(pretty),
            exit_code: report.exit_code,
        }
    };

    let env_file = cli::env_file_from_args(&args).or_else(|| {
        std::env::var_os("PG_BACKUPS_ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    let secrets = match env_file {
        Some(path) => match envfile::load(&path) {
            Ok(s) => s,
            Err(e) => return fail(&word, e.into()),
        },
        None => config::Secrets::default(),
    };
    envfile::drop_empty_aws_variables();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Exit::Text(e.render().to_string());
            }
            let message = e.render().to_string();
            let message = message
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let report = Report::new(
                &word,
                started_at,
                Outcome::failed(
                    error::ErrorInfo {
                        kind: "usage".into(),
                        message: message.trim_start_matches("error: ").to_string(),
                        exit_code: exitcode::USAGE,
                    },
                    serde_json::json!({}),
                ),
            );
            return Exit::Report {
                json: report.to_json(pretty),
                exit_code: report.exit_code,
            };
        }
    };
    // Text for people, no settings needed.
    match &cli.command {
        Command::Completions(args) => return Exit::Text(docs::completions(args.shell)),
        Command::Man(args) => {
            return match docs::man(args.dir.as_deref()) {
                Ok(text) => Exit::Text(text),
                Err(e) => fail(
                    "man",
                    Error::Internal(format!("writing the man pages: {e}")),
                ),
            };
        }
        _ => {}
    }
    let command = cli.command.name();
    let pretty = cli.global.pretty;
    let config = match Config::from_args(&cli.global, &secrets) {
        Ok(c) => c,
        Err(e) => return fail(command, e.into()),
    };
    logging::init(config.log_format);
    signals::install();

    let outcome = match dispatch(&config, &cli.command) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("{e}");
            Outcome::from(e)
        }
    };
    let report = Report::new(command, started_at, outcome);
    if let Some(path) = &config.metrics_file
        && matches!(command, "dump" | "ship" | "prune" | "check")
    {
        let value = serde_json::to_value(&report).unwrap_or_default();
        if let Err(e) = metrics::update(path, command, &value) {
            // Metrics are a side channel: the run's own result stands.
            tracing::warn!("could not update METRICS_FILE {}: {e}", path.display());
        }
    }
    Exit::Report {
        json: report.to_json(pretty),
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
        Command::Completions(_) | Command::Man(_) => Err(Error::Internal(
            "completions and man are answered before settings are read".into(),
        )),
    }
}
