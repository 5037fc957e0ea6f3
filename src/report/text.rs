//! The result of a run as a person at a terminal reads it: tables for `list`, `check` and
//! `prune`, a short summary for the others, sizes and ages in human units. It is drawn from
//! the same fields as the JSON, so the two never disagree. Every name that came from a
//! server or a bucket goes through [`clean`]: no control character reaches the terminal.

use serde_json::{Map, Value};

use super::{Report, Status};
use crate::human::{self, clean};

type Fields = Map<String, Value>;

/// The whole text, ending with a newline.
pub fn render(report: &Report) -> String {
    render_fields(
        &report.command,
        status_word(report.status),
        report.duration_ms,
        report.exit_code,
        report.error.as_ref().map(|e| e.message.as_str()),
        &report.details,
    )
}

/// The same text from a JSON result (a line of `pg-backups-cycle`, whose steps ran as other
/// processes), for the messages people read (`NOTIFY_URLS`).
pub fn render_json(result: &Value) -> String {
    let Some(d) = result.as_object() else {
        return String::new();
    };
    let status = match s(d, "status") {
        "ok" => status_word(Status::Ok),
        "partial" => status_word(Status::Partial),
        "failed" => status_word(Status::Failed),
        "stale" => status_word(Status::Stale),
        other => other,
    };
    let error = d
        .get("error")
        .and_then(Value::as_object)
        .map(|e| s(e, "message"));
    let code = d.get("exit_code").and_then(Value::as_i64).unwrap_or(0);
    render_fields(
        s(d, "command"),
        status,
        u(d, "duration_ms"),
        i32::try_from(code).unwrap_or(70),
        error,
        d,
    )
}

fn render_fields(
    command: &str,
    status: &str,
    duration_ms: u64,
    exit_code: i32,
    error: Option<&str>,
    d: &Fields,
) -> String {
    let mut out = Out::default();
    match command {
        "list" => list(&mut out, d),
        "check" => check(&mut out, d),
        "prune" => prune(&mut out, d),
        "dump" => dump(&mut out, d),
        "ship" => ship(&mut out, d),
        "verify" => verify(&mut out, d),
        "restore" => restore(&mut out, d),
        "pin" | "adopt" => per_destination(&mut out, d),
        "ping" => ping(&mut out, d),
        "notify" => told(&mut out, d),
        _ => {}
    }
    out.line(format!(
        "{} {} in {}{}",
        clean(command),
        clean(status),
        human::seconds(duration_ms as f64 / 1000.0),
        if exit_code == 0 {
            String::new()
        } else {
            format!(" (exit {exit_code})")
        }
    ));
    if let Some(e) = error {
        out.line(format!("error: {}", clean(e)));
    }
    out.text
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Partial => "partly failed",
        Status::Failed => "failed",
        Status::Stale => "found a stale destination",
    }
}

#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    /// Columns padded to their widest cell (by characters), two spaces apart, indented.
    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(rows) {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                line.push_str(cell);
                if !last {
                    let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            self.line(line.trim_end());
        }
    }
}

fn s<'a>(d: &'a Fields, key: &str) -> &'a str {
    d.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn u(d: &Fields, key: &str) -> u64 {
    d.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn f(d: &Fields, key: &str) -> f64 {
    d.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn b(d: &Fields, key: &str) -> bool {
    d.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn objects<'a>(d: &'a Fields, key: &str) -> Vec<&'a Fields> {
    d.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn strings(d: &Fields, key: &str) -> Vec<String> {
    d.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(clean).collect())
        .unwrap_or_default()
}

fn error_of(d: &Fields) -> Option<String> {
    d.get("error")
        .and_then(Value::as_object)
        .map(|e| clean(s(e, "message")))
}

/// `local /backups`, `s3 s3://bucket/prefix`.
fn place(d: &Fields) -> String {
    let kind = [s(d, "source"), s(d, "destination")]
        .into_iter()
        .find(|k| !k.is_empty())
        .unwrap_or("?");
    format!("{kind} {}", clean(s(d, "location")))
}

fn list(out: &mut Out, d: &Fields) {
    for src in objects(d, "sources") {
        let folders = objects(src, "folders");
        if let Some(e) = error_of(src) {
            out.line(format!("{}: cannot list: {e}", place(src)));
            out.line("");
            continue;
        }
        out.line(format!(
            "{}: {}, {} complete, {}",
            place(src),
            human::count(folders.len() as u64, "folder", "folders"),
            u(src, "complete"),
            human::bytes(u(src, "total_bytes"))
        ));
        if folders.is_empty() {
            out.line("  (no backups)");
        } else {
            let rows: Vec<Vec<String>> = folders
                .iter()
                .map(|x| {
                    let mut dbs = strings(x, "databases").join(", ");
                    let failed = strings(x, "failed_databases");
                    if !failed.is_empty() {
                        dbs = format!("{dbs} (failed: {})", failed.join(", "));
                    }
                    if let Some(note) = x.get("note").and_then(Value::as_str) {
                        dbs = format!(
                            "{dbs}{}{}",
                            if dbs.is_empty() { "" } else { "; " },
                            clean(note)
                        );
                    }
                    vec![
                        clean(s(x, "folder")),
                        s(x, "status").to_string(),
                        if b(x, "pinned") { "pinned" } else { "" }.to_string(),
                        human::bytes(u(x, "bytes")),
                        x.get("age_seconds")
                            .and_then(Value::as_i64)
                            .map(human::age)
                            .unwrap_or_default(),
                        dbs,
                    ]
                })
                .collect();
            out.table(
                &["FOLDER", "STATUS", "PIN", "SIZE", "AGE", "DATABASES"],
                &rows,
            );
        }
        out.line("");
    }
}

fn check(out: &mut Out, d: &Fields) {
    out.line(format!(
        "newest complete backup must be younger than {} ({})",
        s(d, "max_age"),
        clean(s(d, "max_age_from"))
    ));
    let rows: Vec<Vec<String>> = objects(d, "destinations")
        .iter()
        .map(|x| {
            let state = match s(x, "status") {
                "ok" => "fresh",
                "missing" => "missing",
                other => other,
            };
            let newest = match (
                x.get("newest").and_then(Value::as_str),
                x.get("age_seconds").and_then(Value::as_i64),
            ) {
                (Some(n), Some(age)) => format!("{} ({} old)", clean(n), human::age(age)),
                _ => "no complete backup".to_string(),
            };
            let mut remark = x
                .get("warning")
                .and_then(Value::as_str)
                .map(clean)
                .unwrap_or_default();
            if let Some(e) = error_of(x) {
                remark = e;
            }
            vec![
                s(x, "destination").to_string(),
                state.to_string(),
                newest,
                u(x, "complete_backups").to_string(),
                clean(s(x, "location")),
                remark,
            ]
        })
        .collect();
    out.table(
        &["WHERE", "STATE", "NEWEST", "COMPLETE", "LOCATION", "NOTE"],
        &rows,
    );
    if let Some(drill) = d.get("drill").and_then(Value::as_object) {
        let when = match drill.get("age_seconds").and_then(Value::as_i64) {
            Some(age) => format!("last passed {} ago", human::age(age)),
            None => "never passed".to_string(),
        };
        out.line(format!(
            "restore drill: {} ({when}; must be younger than {})",
            match s(drill, "status") {
                "ok" => "fresh",
                other => other,
            },
            s(drill, "max_age")
        ));
    }
}

fn prune(out: &mut Out, d: &Fields) {
    let dry = b(d, "dry_run");
    for x in objects(d, "destinations") {
        let rules = x.get("retention").and_then(Value::as_object);
        let rule_text = rules
            .map(|r| {
                let mut parts = vec![format!(
                    "keep {} and the newest older one",
                    human::count(u(r, "days"), "day", "days")
                )];
                for (key, what) in [
                    ("keep_last", "last"),
                    ("keep_daily", "daily"),
                    ("keep_weekly", "weekly"),
                    ("keep_monthly", "monthly"),
                ] {
                    if u(r, key) > 0 {
                        parts.push(format!("{what} {}", u(r, key)));
                    }
                }
                parts.join(", ")
            })
            .unwrap_or_default();
        out.line(format!("{} ({rule_text})", place(x)));
        if let Some(e) = error_of(x) {
            out.line(format!("  error: {e}"));
        }
        let gone = objects(x, if dry { "would_delete" } else { "deleted" });
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        for g in &gone {
            rows.push((
                s(g, "folder").to_string(),
                vec![
                    if dry { "delete" } else { "deleted" }.to_string(),
                    clean(s(g, "folder")),
                    s(g, "status").to_string(),
                    human::bytes(u(g, "bytes")),
                    clean(s(g, "reason")),
                ],
            ));
        }
        for k in objects(x, "kept") {
            rows.push((
                s(k, "folder").to_string(),
                vec![
                    "keep".to_string(),
                    clean(s(k, "folder")),
                    s(k, "status").to_string(),
                    human::bytes(u(k, "bytes")),
                    strings(k, "reasons").join("; "),
                ],
            ));
        }
        for fl in objects(x, "failed") {
            rows.push((
                s(fl, "folder").to_string(),
                vec![
                    "FAILED".to_string(),
                    clean(s(fl, "folder")),
                    String::new(),
                    String::new(),
                    error_of(fl).unwrap_or_default(),
                ],
            ));
        }
        // Newest first, as `list` shows them.
        rows.sort_by(|a, b| b.0.cmp(&a.0));
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
        if rows.is_empty() {
            out.line("  (no backups)");
        } else {
            out.table(&["", "FOLDER", "STATUS", "SIZE", "WHY"], &rows);
        }
        let freed = if dry {
            u(x, "would_free")
        } else {
            u(x, "bytes_freed")
        };
        out.line(format!(
            "  {} {}, {} {}",
            if dry { "would delete" } else { "deleted" },
            human::count(gone.len() as u64, "folder", "folders"),
            human::bytes(freed),
            if dry { "would be freed" } else { "freed" }
        ));
        let aborted = strings(x, "aborted_uploads");
        if !aborted.is_empty() {
            out.line(format!(
                "  {} unfinished uploads older than a day",
                if dry { "would abort" } else { "aborted" }
            ));
        }
        out.line("");
    }
    if dry {
        out.line("dry run: nothing was deleted");
    }
}

fn dump(out: &mut Out, d: &Fields) {
    let Some(folder) = d.get("folder").and_then(Value::as_str) else {
        return;
    };
    let files = objects(d, "files");
    out.line(format!(
        "backup {} in {} ({}, {}; SQL {})",
        clean(folder),
        clean(s(d, "path")),
        human::count(files.len() as u64, "file", "files"),
        human::bytes(u(d, "total_bytes")),
        human::bytes(u(d, "sql_bytes"))
    ));
    let mut rows: Vec<Vec<String>> = objects(d, "databases_dumped")
        .iter()
        .map(|x| {
            vec![
                clean(s(x, "database")),
                clean(s(x, "file")),
                human::bytes(u(x, "bytes")),
                human::seconds(f(x, "seconds")),
            ]
        })
        .collect();
    for file in &files {
        let kind = s(file, "kind");
        if kind == "cluster" || kind == "globals" {
            rows.push(vec![
                format!("({kind})"),
                clean(s(file, "name")),
                human::bytes(u(file, "bytes")),
                String::new(),
            ]);
        }
    }
    for x in objects(d, "databases_failed") {
        rows.push(vec![
            clean(s(x, "database")),
            "FAILED".to_string(),
            String::new(),
            error_of(x).unwrap_or_default(),
        ]);
    }
    out.table(&["DATABASE", "FILE", "SIZE", "TIME"], &rows);
    let enc = d
        .get("encryption")
        .and_then(Value::as_object)
        .map(|_| ", encrypted with age")
        .unwrap_or("");
    out.line(format!(
        "  PostgreSQL {} with pg_dump {}, {} {}{enc}",
        s(d, "server_version"),
        s(d, "pg_dump_version"),
        s(d, "format"),
        s(d, "compression"),
    ));
}

fn ship(out: &mut Out, d: &Fields) {
    if let Some(note) = d.get("note").and_then(Value::as_str) {
        out.line(clean(note));
    }
    for x in objects(d, "destinations") {
        out.line(format!(
            "{}: {} shipped, {} already there, {} failed ({})",
            place(x),
            u(x, "shipped"),
            u(x, "skipped"),
            u(x, "failed"),
            human::bytes(u(x, "bytes"))
        ));
        if let Some(e) = error_of(x) {
            out.line(format!("  error: {e}"));
        }
        let rows: Vec<Vec<String>> = objects(x, "folders")
            .iter()
            .filter(|fo| s(fo, "result") != "skipped")
            .map(|fo| {
                vec![
                    clean(s(fo, "folder")),
                    s(fo, "result").to_string(),
                    human::bytes(u(fo, "bytes")),
                    human::seconds(f(fo, "seconds")),
                    error_of(fo)
                        .or_else(|| fo.get("reason").and_then(Value::as_str).map(clean))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.table(&["FOLDER", "RESULT", "SIZE", "TIME", "NOTE"], &rows);
        }
    }
}

fn verify(out: &mut Out, d: &Fields) {
    if d.get("folder").is_none() {
        return;
    }
    out.line(format!(
        "backup {} at {} ({})",
        clean(s(d, "folder")),
        place(d),
        s(d, "backup_status")
    ));
    let rows: Vec<Vec<String>> = objects(d, "files")
        .iter()
        .map(|x| {
            vec![
                clean(s(x, "file")),
                if b(x, "ok") { "ok" } else { "BAD" }.to_string(),
                human::bytes(u(x, "bytes")),
                error_of(x).unwrap_or_default(),
            ]
        })
        .collect();
    out.table(&["FILE", "CHECK", "SIZE", "PROBLEM"], &rows);
    if let Some(note) = d.get("note").and_then(Value::as_str) {
        out.line(format!("  {}", clean(note)));
    }
    let tests = objects(d, "restore_test");
    if !tests.is_empty() {
        let rows: Vec<Vec<String>> = tests
            .iter()
            .map(|x| {
                vec![
                    clean(s(x, "database")),
                    u(x, "tables").to_string(),
                    u(x, "rows").to_string(),
                    match x["row_check"]["status"].as_str() {
                        Some("as_dumped") => "as dumped".to_string(),
                        _ => "not recorded".to_string(),
                    },
                    u(x, "errors").to_string(),
                    error_of(x).unwrap_or_default(),
                ]
            })
            .collect();
        out.line("restore test:");
        out.table(
            &[
                "DATABASE",
                "TABLES",
                "ROWS",
                "ROW CHECK",
                "SQL ERRORS",
                "PROBLEM",
            ],
            &rows,
        );
    }
}

fn restore(out: &mut Out, d: &Fields) {
    if d.get("folder").is_none() {
        return;
    }
    let what = match (
        s(d, "type"),
        d.get("database").and_then(Value::as_str),
        d.get("target_database").and_then(Value::as_str),
    ) {
        ("database", Some(db), Some(t)) if t != db => {
            format!("database {} as {}", clean(db), clean(t))
        }
        ("database", Some(db), _) => format!("database {}", clean(db)),
        (kind, _, _) => kind.to_string(),
    };
    out.line(format!(
        "restored {what} from {} at {} onto {}",
        clean(s(d, "folder")),
        place(d),
        clean(s(d, "server"))
    ));
    out.line(format!(
        "  {} checked in {}, restored in {}; {} SQL errors, {} expected ones tolerated",
        human::bytes(u(d, "bytes")),
        human::seconds(f(d, "verify_seconds")),
        human::seconds(f(d, "restore_seconds")),
        u(d, "errors"),
        u(d, "tolerated")
    ));
    if let Some(check) = d.get("row_check").and_then(Value::as_object) {
        out.line(match check.get("status").and_then(Value::as_str) {
            Some("as_dumped") => format!(
                "  {} tables, {} rows, as dumped",
                u(check, "tables"),
                u(check, "rows")
            ),
            _ => "  row counts: not recorded in this backup, not checked".to_string(),
        });
    }
    let missing = strings(d, "not_in_backup");
    if !missing.is_empty() {
        out.line(format!(
            "  partial backup: not in it (their dump failed): {}",
            missing.join(", ")
        ));
    }
    let dropped = strings(d, "dropped");
    if !dropped.is_empty() {
        out.line(format!("  replaced: {}", dropped.join(", ")));
    }
    for e in strings(d, "first_errors") {
        out.line(format!("  SQL error: {e}"));
    }
}

fn per_destination(out: &mut Out, d: &Fields) {
    if let Some(folder) = d.get("folder").and_then(Value::as_str) {
        out.line(format!("folder {}", clean(folder)));
    }
    for x in objects(d, "destinations") {
        let mut line = format!("{}: {}", place(x), s(x, "result"));
        if let Some(e) = error_of(x) {
            line.push_str(&format!(" ({e})"));
        }
        out.line(line);
        for fo in objects(x, "folders") {
            out.line(format!(
                "  {}  {}  {}{}",
                clean(s(fo, "folder")),
                s(fo, "result"),
                human::bytes(u(fo, "bytes")),
                error_of(fo).map(|e| format!("  {e}")).unwrap_or_default()
            ));
        }
    }
}

fn ping(out: &mut Out, d: &Fields) {
    out.line(format!(
        "{} ping {}{}",
        s(d, "signal"),
        if b(d, "sent") { "sent" } else { "not sent" },
        d.get("note")
            .and_then(Value::as_str)
            .map(|n| format!(": {}", clean(n)))
            .unwrap_or_default()
    ));
}

/// `pg-backups notify`: who was told, who could not be.
fn told(out: &mut Out, d: &Fields) {
    for service in strings(d, "told") {
        out.line(format!("told {service}"));
    }
    for problem in strings(d, "not_told") {
        out.line(format!("not told: {problem}"));
    }
    if let Some(note) = d.get("note").and_then(Value::as_str) {
        out.line(clean(note));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, Report};

    fn report(command: &str, details: Value) -> Report {
        Report::new(command, chrono::Utc::now(), Outcome::ok(details))
    }

    #[test]
    fn list_is_a_table_per_destination_with_human_sizes() {
        let r = report(
            "list",
            serde_json::json!({"sources": [{"source": "local", "location": "/backups",
                "complete": 1, "total_bytes": 3_221_225_472u64,
                "folders": [{"folder": "20251005_120000", "status": "complete", "pinned": true,
                    "bytes": 3_221_225_472u64, "age_seconds": 7200, "databases": ["app", "crm"]}]}]}),
        );
        let text = render(&r);
        assert!(
            text.contains("local /backups: 1 folder, 1 complete, 3.0 GiB"),
            "{text}"
        );
        assert!(
            text.contains("20251005_120000  complete  pinned  3.0 GiB  2h   app, crm"),
            "{text}"
        );
        assert!(text.contains("list ok in"), "{text}");
    }

    #[test]
    fn names_from_a_bucket_cannot_drive_the_terminal() {
        let r = report(
            "list",
            serde_json::json!({"sources": [{"source": "s3", "location": "s3://b",
                "complete": 1, "total_bytes": 1, "folders": [{"folder": "20251005_120000",
                "status": "complete", "pinned": false, "bytes": 1,
                "databases": ["x\u{1b}]0;owned\u{7}\nDROP"]}]}]}),
        );
        let text = render(&r);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("x\\u{1b}]0;owned\\u{7}\\nDROP"), "{text}");
    }
}
