//! The message a person reads in a chat or a mailbox: what ran, where, how it went, the
//! folder, sizes and duration, and on failure the error's line and what to do. Built from the
//! JSON results (one for a command, one per step for a cycle), so a command and the cycle
//! script tell the same story; the details are the text output's own wording.

use serde_json::Value;

use crate::human::{self, clean};
use crate::report::text;

/// How long a message may grow: chat services cut or refuse longer ones.
const DETAILS_MAX: usize = 2500;

/// One message, ready for every service to format its own way.
#[derive(Debug, Clone)]
pub struct Message {
    pub failed: bool,
    /// `[pg-backups] FAILED dump on db-prod-1`: sorts well in a mailbox.
    pub subject: String,
    /// `dump failed on db-prod-1 (exit 69)`.
    pub headline: String,
    /// Host, run, outcome, folder, where, size, duration.
    pub facts: Vec<(&'static str, String)>,
    /// The first failure's message, one line.
    pub error: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The text output of each result.
    pub details: String,
    /// For `generic+https://`: the run's JSON result (a cycle: every step's).
    pub json: String,
}

impl Message {
    /// The message about one command's run.
    pub fn of_run(host: &str, result: &Value) -> Message {
        let code = code_of(result);
        let command = clean(str_of(result, "command"));
        let mut m = build(host, &command, code, std::slice::from_ref(result));
        m.json = result.to_string();
        m
    }

    /// The message about one `pg-backups-cycle` (its exit code and its steps' results).
    pub fn of_cycle(host: &str, code: i32, results: &[Value]) -> Message {
        let mut m = build(host, "cycle", code, results);
        m.json = serde_json::json!({
            "command": "cycle",
            "status": if code == 0 { "ok" } else { "failed" },
            "exit_code": code,
            "host": host,
            "version": env!("CARGO_PKG_VERSION"),
            "results": results,
        })
        .to_string();
        m
    }

    /// The whole message as plain text (mail, ntfy, gotify).
    pub fn plain(&self) -> String {
        let mut out = format!("{}\n\n", self.headline);
        for (name, value) in &self.facts {
            out.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("\nerror: {e}\n"));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("what to do: {h}\n"));
        }
        if !self.details.is_empty() {
            out.push_str(&format!("\n{}\n", self.details));
        }
        out
    }
}

fn build(host: &str, what: &str, code: i32, results: &[Value]) -> Message {
    let failed = code != 0;
    let word = status_word(code, results);
    let host = clean(host);
    let mut facts = vec![("Host", host.clone())];
    let steps: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                clean(str_of(r, "command")),
                clean(str_of(r, "status"))
            )
        })
        .collect();
    facts.push((
        "Run",
        if what == "cycle" {
            format!("pg-backups-cycle: {}", steps.join(", "))
        } else {
            format!("pg-backups {what}")
        },
    ));
    facts.push((
        "Outcome",
        if failed {
            format!("{} (exit {code})", word.to_lowercase())
        } else {
            word.to_lowercase()
        },
    ));
    facts.extend(where_facts(results));
    let first_error = results
        .iter()
        .find_map(|r| r.get("error").and_then(|e| e.get("message")))
        .and_then(Value::as_str);
    // One line: the message's own lines (its advice among them) joined.
    let error = first_error.map(|e| clean(&e.split_whitespace().collect::<Vec<_>>().join(" ")));
    // The text output, less the error line already shown above it.
    let shown_error = first_error.map(|e| format!("error: {}", clean(e)));
    let details: Vec<String> = results
        .iter()
        .map(|r| {
            text::render_json(r)
                .lines()
                .filter(|l| Some(*l) != shown_error.as_deref())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    Message {
        failed,
        subject: format!("[pg-backups] {word} {what} on {host}"),
        headline: format!(
            "{what} {} on {host}{}",
            word.to_lowercase(),
            if failed {
                format!(" (exit {code})")
            } else {
                String::new()
            }
        ),
        facts,
        error,
        hint: failed.then(|| hint(code).to_string()),
        details: cut(details.join("\n").trim_end(), DETAILS_MAX),
        json: String::new(),
    }
}

/// `OK`, `FAILED`, `PARTIAL`, `STALE`.
fn status_word(code: i32, results: &[Value]) -> &'static str {
    let any = |s: &str| results.iter().any(|r| str_of(r, "status") == s);
    if code == 0 {
        "OK"
    } else if any("stale") {
        "STALE"
    } else if any("partial") && !any("failed") {
        "PARTIAL"
    } else {
        "FAILED"
    }
}

/// The folder, where it went, its size and the time it all took.
fn where_facts(results: &[Value]) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(folder) = results.iter().find_map(|r| r.get("folder")?.as_str()) {
        facts.push(("Folder", clean(folder)));
    }
    let mut places = Vec::new();
    for r in results {
        if let Some(path) = r.get("path").and_then(Value::as_str) {
            // A dump without local copy wrote its folder to S3 (`destination`).
            let kind = r
                .get("destination")
                .and_then(Value::as_str)
                .unwrap_or("local");
            places.push(format!("{} {}", clean(kind), clean(path)));
        }
        for d in r
            .get("destinations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = str_of(d, "destination");
            let location = str_of(d, "location");
            if !location.is_empty() {
                places.push(format!("{} {}", clean(kind), clean(location)));
            }
        }
    }
    places.dedup();
    if !places.is_empty() {
        facts.push(("Where", places.join(", ")));
    }
    if let Some(bytes) = results.iter().find_map(|r| r.get("total_bytes")?.as_u64()) {
        facts.push(("Size", human::bytes(bytes)));
    }
    let ms: u64 = results
        .iter()
        .filter_map(|r| r.get("duration_ms")?.as_u64())
        .sum();
    facts.push(("Duration", human::seconds(ms as f64 / 1000.0)));
    facts
}

/// What to do, by exit code (the error itself names the setting, host or file).
fn hint(code: i32) -> &'static str {
    match code {
        64 => "fix the setting the error names (the run did no work)",
        65 => "a backup did not check out: run `pg-backups verify` on it and take a new dump",
        66 => {
            "the backup, folder or database asked for does not exist: `pg-backups list` shows what does"
        }
        69 => "check that the server or destination named is up and reachable from this host",
        73 | 74 => "check the disk and the permissions of BACKUP_DIR (df -h, ls -ld)",
        75 => {
            "another run held the lock or the run was stopped: if it repeats, look for a stuck run"
        }
        77 => "check the credentials and permissions for the server or destination named",
        78 => "complete the configuration the error names",
        1 => "no recent backup at a destination: look at the last dump and ship results",
        _ => {
            "read the run's JSON result and log on this host (journal, docker logs or PG_BACKUPS_JSONL)"
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn code_of(v: &Value) -> i32 {
    v.get("exit_code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok())
        .unwrap_or(70)
}

/// At most `max` bytes, cut at a line when it must be cut.
pub(super) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let head = head.rsplit_once('\n').map_or(head, |(h, _)| h);
    format!("{head}\n…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_dump_reads_as_one() {
        let result = serde_json::json!({
            "command": "dump", "status": "failed", "exit_code": 69, "duration_ms": 1200,
            "error": {"kind": "unreachable", "message": "cannot reach PostgreSQL at db:5432\nmore"},
        });
        let m = Message::of_run("db-prod-1", &result);
        assert!(m.failed);
        assert_eq!(m.subject, "[pg-backups] FAILED dump on db-prod-1");
        assert_eq!(m.headline, "dump failed on db-prod-1 (exit 69)");
        assert_eq!(
            m.error.as_deref(),
            Some("cannot reach PostgreSQL at db:5432 more")
        );
        assert!(!m.details.contains("error:"), "shown once: {}", m.details);
        assert!(m.hint.is_some());
        assert!(m.plain().contains("Host: db-prod-1"), "{}", m.plain());
        assert!(m.details.contains("dump failed in"), "{}", m.details);
    }

    #[test]
    fn a_good_cycle_names_its_folder_and_size() {
        let results = [
            serde_json::json!({"command": "dump", "status": "ok", "exit_code": 0,
                "duration_ms": 1000, "folder": "20251005_120000", "path": "/b/20251005_120000",
                "total_bytes": 2048, "files": []}),
            serde_json::json!({"command": "ship", "status": "ok", "exit_code": 0,
                "duration_ms": 500, "destinations": [{"destination": "s3", "location": "s3://b/p"}]}),
        ];
        let m = Message::of_cycle("h", 0, &results);
        assert_eq!(m.subject, "[pg-backups] OK cycle on h");
        let facts: Vec<String> = m.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(
            facts.contains(&"Folder=20251005_120000".to_string()),
            "{facts:?}"
        );
        assert!(
            facts
                .iter()
                .any(|f| f.starts_with("Where=local /b/") && f.contains("s3 s3://b/p")),
            "{facts:?}"
        );
        assert!(facts.iter().any(|f| f.starts_with("Size=")), "{facts:?}");
        assert!(m.hint.is_none() && m.error.is_none());
        let json: Value = serde_json::from_str(&m.json).unwrap();
        assert_eq!(json["results"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn long_details_are_cut_at_a_line() {
        let text = "a\n".repeat(2000);
        let cut = cut(&text, 100);
        assert!(cut.len() <= 104 && cut.ends_with("\n…"), "{cut}");
    }
}
