//! `pg-backups restore`: one restore of the cluster, the globals or one database, from local,
//! S3 or remote. Inputs come from flags, else `RESTORE_*`, else (only on a terminal) prompts.
//! This command resolves them, settles consent (exit 73 unless given) and reports; the
//! restore itself is `crate::restore` (plan → source → replay).

use std::io::IsTerminal;
use std::time::Instant;

use serde::Serialize;

use crate::cli::RestoreArgs;
use crate::config::{Config, ConfigError, RestoreInputs, RestoreType, SourceKind};
use crate::error::{Error, Result};
use crate::pg::PgTools;
use crate::report::Outcome;
use crate::restore::plan::Plan;
use crate::restore::{Executed, Settings, prompt};
use crate::storage::Storage;

#[derive(Debug, Serialize)]
struct RestoreDetails {
    folder: String,
    /// `partial`: some databases failed to dump (`not_in_backup`), and a cluster restore
    /// brings back the others only.
    backup_status: crate::backup::ManifestStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_in_backup: Vec<String>,
    source: SourceKind,
    location: String,
    #[serde(rename = "type")]
    restore_type: RestoreType,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_database: Option<String>,
    file: String,
    /// Every file replayed, when there are several (a cluster restore of a custom backup).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
    bytes: u64,
    sql_bytes: u64,
    /// pg_restore jobs for custom-format files.
    jobs: u32,
    staged: bool,
    dropped: Vec<String>,
    verify_seconds: f64,
    restore_seconds: f64,
    seconds: f64,
    errors: usize,
    tolerated: usize,
    /// Each restored table compared with the rows the dump carried: `as_dumped` (with how
    /// many tables and rows), or `not_recorded` by this backup (custom archives, older
    /// folders). Absent for a globals restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    row_check: Option<crate::restore::rows::RowCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    first_errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerated_examples: Vec<String>,
    server: String,
    /// Which psql replayed the file.
    psql_version: String,
    psql_path: String,
}

fn missing(var: &str, what: &str) -> Error {
    ConfigError::Missing(format!(
        "{var} is not set and there is no terminal to ask: set {var} ({what})"
    ))
    .into()
}

pub fn run(cfg: &Config, args: &RestoreArgs) -> Result<Outcome> {
    let started = Instant::now();
    let inputs = RestoreInputs::from_args(args)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        inputs.all_given()?;
    }
    let (plan, storage) = resolve_plan(cfg, &inputs, interactive)?;
    // A local folder being restored is held against `prune` until the restore ends.
    let _hold = (plan.source == SourceKind::Local).then(|| {
        crate::storage::local::LocalStorage::new(&cfg.backup_dir).hold_for_restore(&plan.folder)
    });
    if let Some(e) = plan.needs_key()
        && cfg.decryption.is_none()
    {
        return Err(crate::backup::BackupError::KeyMissing {
            file: e.name.clone(),
        }
        .into());
    }

    let mut tools = PgTools::new(&cfg.pg)?;
    let server = tools.server_version()?;
    let psql = tools.use_for_restore(&server, plan.archive_major())?;
    tools.require_restrict()?;
    let server_name = format!("{}:{}", cfg.pg.host, cfg.pg.port);

    // No surprise overwrites.
    let in_the_way = plan.in_the_way(&tools)?;
    let mut consent = inputs.drop_existing;
    if !in_the_way.is_empty() && !consent && interactive {
        consent = prompt::confirm_drop(&in_the_way, &server_name)?;
    }
    if !in_the_way.is_empty() && !consent {
        return Err(plan.refusal(&in_the_way, &server_name));
    }
    if interactive
        && inputs.missing_any()
        && !prompt::proceed(&plan.summary(&server_name, &server.text))?
    {
        return Err(Error::Refused(
            "restore cancelled at the prompt; nothing was changed".into(),
        ));
    }

    let settings = Settings {
        keys: cfg.decryption.as_deref(),
        restore_dir: inputs.restore_dir.as_deref(),
        jobs: inputs.jobs,
    };
    let done = crate::restore::execute(
        &plan,
        storage.as_ref(),
        &tools,
        server.major(),
        &settings,
        &in_the_way,
    )?;
    let details = RestoreDetails {
        location: storage.location(),
        server: format!("{server_name} (PostgreSQL {})", server.text),
        psql_version: psql.text.clone(),
        psql_path: tools.program("psql").display().to_string(),
        seconds: round(started.elapsed().as_secs_f64()),
        ..details_of(&plan, &inputs, done)
    };
    if details.errors > 0 {
        let e = Error::Data(format!(
            "the restore ended with {} SQL error{}; first: {}",
            details.errors,
            if details.errors == 1 { "" } else { "s" },
            details.first_errors.first().cloned().unwrap_or_default()
        ));
        return Ok(Outcome::failed(e.info(), details));
    }
    tracing::info!(seconds = details.seconds, "restore finished");
    Ok(Outcome::ok(details))
}

/// Source, folder, type and database: from the settings, else asked at the prompt.
fn resolve_plan(
    cfg: &Config,
    inputs: &RestoreInputs,
    interactive: bool,
) -> Result<(Plan, Box<dyn Storage>)> {
    let source = match inputs.source {
        Some(s) => s,
        None if interactive => prompt::source(cfg)?,
        None => return Err(missing("RESTORE_SOURCE", "local, s3 or remote")),
    };
    let storage = crate::storage::open(cfg, source, true)?
        .ok_or_else(|| Error::Internal("source did not open".into()))?;
    let folder_arg = match &inputs.folder {
        Some(f) => f.clone(),
        None if interactive => prompt::folder(storage.as_ref())?,
        None => {
            return Err(missing(
                "RESTORE_FOLDER",
                "a folder name such as 20251005_120000, or latest",
            ));
        }
    };
    let (folder, manifest) = crate::restore::source::resolve(storage.as_ref(), &folder_arg)?;
    let restore_type = match inputs.restore_type {
        Some(t) => t,
        None if interactive => prompt::restore_type()?,
        None => return Err(missing("RESTORE_TYPE", "cluster, globals or database")),
    };
    let database = match restore_type {
        RestoreType::Database => Some(match &inputs.database {
            Some(d) => d.clone(),
            None if interactive => prompt::database(&manifest)?,
            None => return Err(missing("RESTORE_DATABASE", "the database to restore")),
        }),
        _ => None,
    };
    let plan = Plan::new(
        source,
        folder,
        manifest,
        restore_type,
        database,
        inputs.target_database.clone(),
    )?;
    Ok((plan, storage))
}

/// The report's fields that come from the plan and what was done.
fn details_of(plan: &Plan, inputs: &RestoreInputs, done: Executed) -> RestoreDetails {
    let entries = &plan.entries;
    RestoreDetails {
        folder: plan.folder.to_string(),
        backup_status: plan.manifest.status,
        not_in_backup: plan
            .manifest
            .failed
            .iter()
            .map(|f| f.database.clone())
            .collect(),
        source: plan.source,
        location: String::new(),
        restore_type: plan.restore_type,
        database: plan.database.clone(),
        target_database: plan.target.clone(),
        file: entries.first().map(|e| e.name.clone()).unwrap_or_default(),
        files: if entries.len() > 1 {
            entries.iter().map(|e| e.name.clone()).collect()
        } else {
            Vec::new()
        },
        bytes: entries.iter().map(|e| e.bytes).sum(),
        sql_bytes: entries.iter().map(|e| e.sql_bytes).sum(),
        jobs: inputs.jobs,
        staged: plan.source != SourceKind::Local,
        dropped: done.dropped,
        verify_seconds: round(done.verify_seconds),
        restore_seconds: round(done.restore_seconds),
        seconds: 0.0,
        errors: done.errors.count,
        tolerated: done.errors.tolerated,
        row_check: match plan.restore_type {
            RestoreType::Globals => None,
            _ if done.rows.status.is_empty() => {
                Some(crate::restore::rows::RowCheck::not_recorded())
            }
            _ => Some(done.rows),
        },
        first_errors: done.errors.first,
        tolerated_examples: done.errors.tolerated_examples,
        server: String::new(),
        psql_version: String::new(),
        psql_path: String::new(),
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// Checks on the inputs that only this command makes.
trait InputsGiven {
    fn all_given(&self) -> Result<()>;
    fn missing_any(&self) -> bool;
}

impl InputsGiven for RestoreInputs {
    /// Without a terminal every input must be given: names every one that is missing at once.
    fn all_given(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.source.is_none() {
            missing.push("RESTORE_SOURCE (local, s3 or remote)");
        }
        if self.folder.is_none() {
            missing.push("RESTORE_FOLDER (a folder name such as 20251005_120000, or latest)");
        }
        match self.restore_type {
            None => missing.push("RESTORE_TYPE (cluster, globals or database)"),
            Some(RestoreType::Database) if self.database.is_none() => {
                missing.push("RESTORE_DATABASE (the database to restore)")
            }
            _ => {}
        }
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing
            .iter()
            .map(|m| m.split_whitespace().next().unwrap_or(m))
            .collect();
        Err(ConfigError::Missing(format!(
            "{} {} not set and there is no terminal to ask: set {}",
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" },
            missing.join(", ")
        ))
        .into())
    }

    /// Whether anything was asked at the prompt (then the summary is confirmed too).
    fn missing_any(&self) -> bool {
        self.source.is_none() || self.folder.is_none() || self.restore_type.is_none()
    }
}
