//! node_exporter textfile metrics (`METRICS_FILE`): `dump`, `ship`, `prune` and `check` each
//! update their own series in one shared file, atomically (temp file + rename), under a lock
//! so that two commands finishing together do not lose each other's update.
//!
//! The values come from the run's JSON result, so what monitoring sees is what the run said.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::backup::FolderName;

type Series = BTreeMap<(String, String), f64>;

const HELP: &[(&str, &str)] = &[
    (
        "pg_backups_last_run_timestamp_seconds",
        "When the command last finished (Unix time).",
    ),
    (
        "pg_backups_last_success_timestamp_seconds",
        "When the command last finished with status ok (Unix time).",
    ),
    (
        "pg_backups_last_run_success",
        "1 if the last run of the command had status ok, else 0.",
    ),
    (
        "pg_backups_last_run_exit_code",
        "Exit code of the last run of the command.",
    ),
    (
        "pg_backups_last_run_duration_seconds",
        "Duration of the last run of the command.",
    ),
    (
        "pg_backups_bytes",
        "Bytes written by the last dump, or shipped by the last ship, per destination.",
    ),
    (
        "pg_backups_pruned_bytes",
        "Bytes freed by the last prune, per destination.",
    ),
    (
        "pg_backups_newest_complete_timestamp_seconds",
        "Time of the newest complete backup seen at each destination (Unix time).",
    ),
    (
        "pg_backups_drill_last_success_timestamp_seconds",
        "When the last restore drill (verify --restore-test) restored every database with every row (Unix time).",
    ),
    (
        "pg_backups_drill_tables",
        "Tables the last restore drill restored.",
    ),
    (
        "pg_backups_drill_rows",
        "Rows the last restore drill restored.",
    ),
    (
        "pg_backups_stale",
        "1 if the last check found the destination stale or empty, else 0.",
    ),
];

/// Updates the series of `command` from its JSON result. `destinations`: the ones in use
/// now; series of any other (S3 switched off, `BACKUP_LOCAL_COPY=false`) are dropped, or
/// their frozen times would page someone about a destination that is gone.
pub fn update(
    path: &Path,
    command: &str,
    report: &Value,
    destinations: &[&str],
) -> std::io::Result<()> {
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(&lock_path)?;
    lock.lock()?;
    let mut series = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Series::new(),
        Err(e) => return Err(e),
    };
    apply(&mut series, command, report);
    forget_other_destinations(&mut series, destinations);
    let tmp = path.with_extension("prom.tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // node_exporter reads it as another user, and a service's `UMask=0077` would have
        // turned the mode above into 0600: set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(render(&series).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn forget_other_destinations(series: &mut Series, destinations: &[&str]) {
    let wanted: Vec<String> = destinations.iter().map(|d| destination_label(d)).collect();
    series.retain(|(_, labels), _| {
        labels
            .split(',')
            .find(|l| l.starts_with("destination="))
            .is_none_or(|l| wanted.iter().any(|w| w == l))
    });
}

fn set(series: &mut Series, name: &str, labels: &str, value: f64) {
    series.insert((name.to_string(), labels.to_string()), value);
}

fn command_label(command: &str) -> String {
    format!("command=\"{command}\"")
}

fn destination_label(destination: &str) -> String {
    format!(
        "destination=\"{}\"",
        destination.replace(['"', '\\', '\n'], "_")
    )
}

fn time_of(value: &Value) -> Option<f64> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc).timestamp() as f64)
}

fn folder_time(value: &Value) -> Option<f64> {
    value
        .as_str()
        .and_then(FolderName::parse)
        .map(|f| f.time().timestamp() as f64)
}

pub fn apply(series: &mut Series, command: &str, r: &Value) {
    let c = command_label(command);
    apply_run(series, &c, r);
    let destinations = r["destinations"].as_array().cloned().unwrap_or_default();
    match command {
        "dump" => apply_dump(series, &c, r),
        "ship" => apply_ship(series, &c, &destinations),
        "prune" => apply_prune(series, &destinations),
        "check" => apply_check(series, &destinations),
        "drill" => apply_drill(series, r),
        _ => {}
    }
}

/// The series every command has: when it ran, whether it succeeded, how long it took.
fn apply_run(series: &mut Series, c: &str, r: &Value) {
    let finished = time_of(&r["finished_at"]).unwrap_or(0.0);
    let ok = r["status"] == "ok" && r["exit_code"] == 0;
    set(series, "pg_backups_last_run_timestamp_seconds", c, finished);
    set(
        series,
        "pg_backups_last_run_success",
        c,
        if ok { 1.0 } else { 0.0 },
    );
    set(
        series,
        "pg_backups_last_run_exit_code",
        c,
        r["exit_code"].as_f64().unwrap_or(70.0),
    );
    set(
        series,
        "pg_backups_last_run_duration_seconds",
        c,
        r["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
    );
    if ok {
        set(
            series,
            "pg_backups_last_success_timestamp_seconds",
            c,
            finished,
        );
    }
}

fn apply_dump(series: &mut Series, c: &str, r: &Value) {
    // A dump without local copy wrote its folder to S3.
    let dest = r["destination"].as_str().unwrap_or("local");
    if let Some(bytes) = r["total_bytes"].as_f64() {
        let labels = format!("{c},{}", destination_label(dest));
        set(series, "pg_backups_bytes", &labels, bytes);
    }
    if r["backup_status"] == "complete"
        && let Some(t) = folder_time(&r["folder"])
    {
        set(
            series,
            "pg_backups_newest_complete_timestamp_seconds",
            &destination_label(dest),
            t,
        );
    }
}

fn apply_ship(series: &mut Series, c: &str, destinations: &[Value]) {
    for d in destinations {
        let dest = d["destination"].as_str().unwrap_or("unknown");
        let labels = format!("{c},{}", destination_label(dest));
        set(
            series,
            "pg_backups_bytes",
            &labels,
            d["bytes"].as_f64().unwrap_or(0.0),
        );
        let newest = d["folders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["result"] == "shipped" || f["result"] == "skipped")
            .filter_map(|f| folder_time(&f["folder"]))
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
        // A ship sees only what it shipped or skipped: it never moves the newest time back.
        if let Some(t) = newest {
            let key = (
                "pg_backups_newest_complete_timestamp_seconds".to_string(),
                destination_label(dest),
            );
            let current = series.get(&key).copied().unwrap_or(0.0);
            series.insert(key, current.max(t));
        }
    }
}

fn apply_prune(series: &mut Series, destinations: &[Value]) {
    for d in destinations {
        let dest = d["destination"].as_str().unwrap_or("unknown");
        if d["status"] == "failed" {
            continue;
        }
        set(
            series,
            "pg_backups_pruned_bytes",
            &destination_label(dest),
            d["bytes_freed"].as_f64().unwrap_or(0.0),
        );
        if let Some(t) = folder_time(&d["newest_complete"]) {
            set(
                series,
                "pg_backups_newest_complete_timestamp_seconds",
                &destination_label(dest),
                t,
            );
        }
    }
}

/// A restore drill: when it last passed, and how much it restored.
fn apply_drill(series: &mut Series, r: &Value) {
    let tests = r["restore_test"].as_array().cloned().unwrap_or_default();
    let sum = |key: &str| tests.iter().filter_map(|t| t[key].as_f64()).sum::<f64>();
    set(series, "pg_backups_drill_tables", "", sum("tables"));
    set(series, "pg_backups_drill_rows", "", sum("rows"));
    if r["status"] == "ok"
        && r["exit_code"] == 0
        && let Some(t) = time_of(&r["finished_at"])
    {
        set(
            series,
            "pg_backups_drill_last_success_timestamp_seconds",
            "",
            t,
        );
    }
}

fn apply_check(series: &mut Series, destinations: &[Value]) {
    for d in destinations {
        let dest = d["destination"].as_str().unwrap_or("unknown");
        let status = d["status"].as_str().unwrap_or("");
        if status == "unreachable" {
            continue;
        }
        let stale = matches!(status, "stale" | "empty");
        set(
            series,
            "pg_backups_stale",
            &destination_label(dest),
            if stale { 1.0 } else { 0.0 },
        );
        if let Some(t) = folder_time(&d["newest"]) {
            set(
                series,
                "pg_backups_newest_complete_timestamp_seconds",
                &destination_label(dest),
                t,
            );
        }
    }
}

/// Reads back the series this module wrote (comments and unknown lines are dropped).
fn parse(text: &str) -> Series {
    let mut series = Series::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        if name.starts_with("pg_backups_") {
            series.insert((name.to_string(), labels.to_string()), value);
        }
    }
    series
}

fn render(series: &Series) -> String {
    let mut out = String::new();
    let mut current = "";
    for ((name, labels), value) in series {
        if name != current {
            let help = HELP
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| *h)
                .unwrap_or("pg-backups metric.");
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            current = name;
        }
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_a_destination_no_longer_in_use_are_dropped() {
        let mut series = Series::new();
        set(
            &mut series,
            "pg_backups_newest_complete_timestamp_seconds",
            "destination=\"local\"",
            1.0,
        );
        set(
            &mut series,
            "pg_backups_newest_complete_timestamp_seconds",
            "destination=\"s3\"",
            2.0,
        );
        set(
            &mut series,
            "pg_backups_bytes",
            "command=\"ship\",destination=\"remote\"",
            3.0,
        );
        set(
            &mut series,
            "pg_backups_last_run_timestamp_seconds",
            "command=\"dump\"",
            4.0,
        );
        forget_other_destinations(&mut series, &["s3"]);
        let left: Vec<&str> = series.keys().map(|(_, l)| l.as_str()).collect();
        assert_eq!(left, ["command=\"dump\"", "destination=\"s3\""]);
    }
    use serde_json::json;

    #[test]
    fn a_dump_and_a_check_share_one_file() {
        let mut s = Series::new();
        apply(
            &mut s,
            "dump",
            &json!({"status": "ok", "exit_code": 0, "finished_at": "2025-10-05T12:00:10Z",
                    "duration_ms": 10000, "total_bytes": 1234, "backup_status": "complete",
                    "folder": "20251005_120000"}),
        );
        let text = render(&s);
        let mut again = parse(&text);
        apply(
            &mut again,
            "check",
            &json!({"status": "ok", "exit_code": 1, "finished_at": "2025-10-05T13:00:00Z",
                    "duration_ms": 5, "destinations": [{"destination": "local", "status": "stale",
                    "newest": "20251005_120000"}]}),
        );
        let text = render(&again);
        assert!(
            text.contains(
                "pg_backups_last_success_timestamp_seconds{command=\"dump\"} 1759665610\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("pg_backups_last_success_timestamp_seconds{command=\"check\"}"),
            "{text}"
        );
        assert!(
            text.contains("pg_backups_stale{destination=\"local\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pg_backups_bytes{command=\"dump\",destination=\"local\"} 1234\n"),
            "{text}"
        );
        assert!(text.contains(
            "pg_backups_newest_complete_timestamp_seconds{destination=\"local\"} 1759665600\n"
        ));
        assert_eq!(
            text.matches("# TYPE pg_backups_last_run_exit_code gauge")
                .count(),
            1
        );
    }
}
