//! `pg-backups check`: monitoring that makes silence loud. Exit 0 when the newest complete
//! backup at every enabled destination is younger than `--max-age`, 1 when one is stale or
//! has none, 69 when one cannot be reached. A backup less than half the size of the one
//! before it is reported as a warning: the classic sign of an emptied database or a broken
//! dump.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::config::{Config, SourceKind, parse_duration};
use crate::error::{Error, ErrorInfo, Result};
use crate::report::Outcome;
use crate::schedule::Schedule;
use crate::storage::{FolderEntry, FolderStatus, Storage};
use crate::time::format_time;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    Ok,
    Stale,
    Empty,
    /// `BACKUP_DIR` (or the remote root) does not exist.
    Missing,
    Unreachable,
}

#[derive(Debug, Serialize)]
struct DestinationCheck {
    destination: SourceKind,
    location: String,
    status: Freshness,
    #[serde(skip_serializing_if = "Option::is_none")]
    newest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    newest_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_bytes: Option<u64>,
    complete_backups: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

/// The last restore drill against `DRILL_MAX_AGE`.
#[derive(Debug, Serialize)]
struct DrillCheck {
    /// `ok`, `stale` (the last good drill is too old, or the last one failed long enough
    /// ago) or `never` (no successful drill recorded under BACKUP_DIR).
    status: &'static str,
    max_age: String,
    max_age_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_success: Option<crate::restore::drill::DrillRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<i64>,
    /// The last drill, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<crate::restore::drill::DrillRun>,
}

#[derive(Debug, Serialize)]
struct CheckDetails {
    max_age: String,
    max_age_seconds: u64,
    max_age_from: String,
    destinations: Vec<DestinationCheck>,
    stale: Vec<SourceKind>,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drill: Option<DrillCheck>,
}

/// The default: the longest gap between two runs of the schedule plus two hours (26h for a
/// daily schedule, 7d 2h for a weekly one).
pub fn default_max_age(schedule: &Schedule, now: DateTime<Utc>) -> (Duration, String) {
    match schedule.longest_gap(now) {
        Some(gap) => (
            gap.saturating_add(Duration::from_secs(2 * 3600)),
            format!(
                "BACKUP_SCHEDULE \"{}\": longest gap between runs plus 2h",
                schedule.as_str()
            ),
        ),
        None => (Duration::from_secs(26 * 3600), "default 26h".to_string()),
    }
}

pub fn run(cfg: &Config, args: &CheckArgs) -> Result<Outcome> {
    let (max_age, from) = match &args.max_age {
        Some(v) => (parse_duration("--max-age", v)?, "--max-age".to_string()),
        None => default_max_age(&cfg.schedule, Utc::now()),
    };
    let drill_max_age = args
        .drill_max_age
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| parse_duration("DRILL_MAX_AGE", v))
        .transpose()?;
    run_at(cfg, max_age, from, drill_max_age, Utc::now())
}

/// The last successful drill recorded under BACKUP_DIR against `max_age`.
fn check_drill(cfg: &Config, max_age: Duration, now: DateTime<Utc>) -> DrillCheck {
    let log = crate::restore::drill::DrillLog::read(&cfg.backup_dir);
    let max = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let age = log
        .last_success
        .as_ref()
        .map(|r| (now - r.finished_at).num_seconds());
    let status = match age {
        None => "never",
        Some(a) if a > max.num_seconds() => "stale",
        Some(_) => "ok",
    };
    if status != "ok" {
        tracing::warn!(
            "the last successful restore drill is {} (DRILL_MAX_AGE {}): run `pg-backups verify \
             latest --restore-test` and see why the drill unit did not",
            match age {
                Some(a) => format!("{} old", crate::human::age(a)),
                None => "not recorded".to_string(),
            },
            crate::human::duration(max_age)
        );
    }
    DrillCheck {
        status,
        max_age: crate::human::duration(max_age),
        max_age_seconds: max_age.as_secs(),
        age_seconds: age,
        last_failure: log.last_run.filter(|r| !r.ok),
        last_success: log.last_success,
    }
}

pub fn run_at(
    cfg: &Config,
    max_age: Duration,
    from: String,
    drill_max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let destinations = crate::storage::open_all(cfg, None)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut stale = Vec::new();
    let mut warnings = Vec::new();
    for dest in &destinations {
        let d = check_destination(dest.as_ref(), max_age, now);
        if let Some(e) = &d.error {
            errors.push(e.clone());
        }
        if let Some(w) = &d.warning {
            warnings.push(w.clone());
        }
        if matches!(d.status, Freshness::Stale | Freshness::Empty) {
            warn_stale(&d, max_age);
            stale.push(d.destination);
        }
        out.push(d);
    }
    let any_ok = out
        .iter()
        .any(|d| !matches!(d.status, Freshness::Unreachable | Freshness::Missing));
    let drill = drill_max_age.map(|m| check_drill(cfg, m, now));
    let drill_stale = drill.as_ref().is_some_and(|d| d.status != "ok");
    let details = CheckDetails {
        max_age: crate::human::duration(max_age),
        max_age_seconds: max_age.as_secs(),
        max_age_from: from,
        destinations: out,
        stale: stale.clone(),
        warnings,
        drill,
    };
    let outcome = Outcome::from_parts(errors, any_ok, details);
    Ok(
        if outcome.exit_code == 0 && (!stale.is_empty() || drill_stale) {
            outcome.stale()
        } else {
            outcome
        },
    )
}

/// How fresh one destination is: its newest complete backup's age against `max_age`, and a
/// warning when that backup shrank to less than half of the one before.
fn check_destination(
    dest: &dyn Storage,
    max_age: Duration,
    now: DateTime<Utc>,
) -> DestinationCheck {
    let kind = dest.kind();
    let mut d = DestinationCheck {
        destination: kind,
        location: dest.location(),
        status: Freshness::Empty,
        newest: None,
        newest_at: None,
        age_seconds: None,
        bytes: None,
        previous_bytes: None,
        complete_backups: 0,
        warning: None,
        error: None,
    };
    let entries = match dest.list() {
        Ok(e) => e,
        // No remote root yet: nothing was shipped there, which is "empty" (stale).
        Err(crate::storage::StorageError::NotFound(_)) if kind == SourceKind::Remote => Vec::new(),
        Err(e @ crate::storage::StorageError::NotFound(_)) => {
            d.status = Freshness::Missing;
            d.error = Some(Error::from(e).info());
            return d;
        }
        Err(e) => {
            d.status = Freshness::Unreachable;
            d.error = Some(Error::from(e).info());
            return d;
        }
    };
    let mut complete: Vec<&FolderEntry> = entries
        .iter()
        .filter(|e| e.status == FolderStatus::Complete && !e.work_folder)
        .filter(|e| e.folder.as_ref().is_some_and(|f| f.time() <= now))
        .collect();
    complete.sort_by(|a, b| b.folder.cmp(&a.folder));
    d.complete_backups = complete.len();
    if let Some(newest) = complete.first() {
        describe_newest(&mut d, newest, complete.get(1).copied(), max_age, now);
    }
    d
}

fn describe_newest(
    d: &mut DestinationCheck,
    newest: &FolderEntry,
    previous: Option<&FolderEntry>,
    max_age: Duration,
    now: DateTime<Utc>,
) {
    let max = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let size = |e: &FolderEntry| e.manifest.as_ref().map_or(e.bytes, |m| m.total_bytes());
    let t = newest.folder.as_ref().map(|f| f.time()).unwrap_or(now);
    let age = now - t;
    d.newest = Some(newest.name.clone());
    d.newest_at = Some(format_time(&t));
    d.age_seconds = Some(age.num_seconds());
    d.bytes = Some(size(newest));
    d.status = if age <= max {
        Freshness::Ok
    } else {
        Freshness::Stale
    };
    if let Some(previous) = previous {
        let (now_b, before) = (size(newest), size(previous));
        d.previous_bytes = Some(before);
        if now_b.saturating_mul(2) < before {
            d.warning = Some(format!(
                "{}: the newest backup {} is {now_b} bytes, less than half of the one before ({} with {before} bytes): check that no database was emptied or left out",
                d.destination, newest.name, previous.name
            ));
        }
    }
}

fn warn_stale(d: &DestinationCheck, max_age: Duration) {
    tracing::warn!(
        destination = %d.destination,
        "no complete backup younger than {}{}",
        crate::human::duration(max_age),
        d.age_seconds
            .map(|s| format!(" (the newest is {} old)", crate::human::duration(Duration::from_secs(s.max(0) as u64))))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_age_follows_the_schedule() {
        let now = Utc::now();
        let max = |s: &str| default_max_age(&Schedule::parse(s).unwrap(), now).0;
        assert_eq!(max("0 */6 * * *"), Duration::from_secs(8 * 3600));
        assert_eq!(max("30 2 * * *"), Duration::from_secs(26 * 3600));
        assert_eq!(max("0 3 * * 1"), Duration::from_secs((7 * 24 + 2) * 3600));
    }
}
