//! The one JSON object each run prints, and the exit code that goes with it.
//!
//! Commands return an [`Outcome`]; only `main` turns it into a [`Report`] and prints it.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorInfo};

pub mod text;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything asked for was done.
    Ok,
    /// Some parts failed, the rest was done.
    Partial,
    /// Nothing useful was done.
    Failed,
    /// `check` ran and found a destination stale or empty (exit 1).
    Stale,
}

/// What a command hands back: its status, exit code, first error and its own fields.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: i32,
    pub error: Option<ErrorInfo>,
    pub details: Map<String, Value>,
}

impl Outcome {
    pub fn ok(details: impl Serialize) -> Outcome {
        Outcome {
            status: Status::Ok,
            exit_code: exitcode::OK,
            error: None,
            details: to_map(details),
        }
    }

    /// Some parts failed: the run exits with the code of the first failure.
    pub fn partial(first: ErrorInfo, details: impl Serialize) -> Outcome {
        Outcome {
            status: Status::Partial,
            exit_code: first.exit_code,
            error: Some(first),
            details: to_map(details),
        }
    }

    pub fn failed(error: ErrorInfo, details: impl Serialize) -> Outcome {
        Outcome {
            status: Status::Failed,
            exit_code: error.exit_code,
            error: Some(error),
            details: to_map(details),
        }
    }

    /// `check` worked and found a destination stale or empty: status `stale`, exit 1.
    pub fn stale(mut self) -> Outcome {
        self.status = Status::Stale;
        self.exit_code = 1;
        self
    }

    /// Builds an outcome from the parts' errors: ok when there are none, partial when some
    /// parts succeeded, failed when none did.
    pub fn from_parts(
        errors: Vec<ErrorInfo>,
        any_success: bool,
        details: impl Serialize,
    ) -> Outcome {
        match errors.into_iter().next() {
            None => Outcome::ok(details),
            Some(first) if any_success => Outcome::partial(first, details),
            Some(first) => Outcome::failed(first, details),
        }
    }
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Outcome {
        Outcome::failed(e.info(), Map::new())
    }
}

fn to_map(details: impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(details) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => Map::new(),
        Ok(other) => {
            let mut map = Map::new();
            map.insert("result".into(), other);
            map
        }
        Err(e) => {
            let mut map = Map::new();
            map.insert("serialization_error".into(), Value::String(e.to_string()));
            map
        }
    }
}

/// The JSON result of a run (DESIGN.md "Output").
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub status: Status,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub exit_code: i32,
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl Report {
    pub fn new(command: &str, started_at: DateTime<Utc>, outcome: Outcome) -> Report {
        let finished_at = Utc::now();
        let duration_ms = (finished_at - started_at).num_milliseconds().max(0) as u64;
        let mut details = outcome.details;
        // The common fields win over a command field of the same name.
        for key in [
            "command",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "exit_code",
            "version",
            "error",
        ] {
            details.remove(key);
        }
        Report {
            command: command.to_string(),
            status: outcome.status,
            started_at,
            finished_at,
            duration_ms,
            exit_code: outcome.exit_code,
            version: env!("CARGO_PKG_VERSION"),
            error: outcome.error,
            details,
        }
    }

    /// One line, or indented for humans. Serialising plain data cannot fail; if it ever
    /// did, a hand-written object keeps the one-JSON-object promise.
    pub fn to_json(&self, pretty: bool) -> String {
        let text = if pretty {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        };
        text.unwrap_or_else(|e| {
            format!(
                "{{\"command\":{},\"status\":\"failed\",\"exit_code\":70,\"error\":{{\"kind\":\"internal\",\"message\":{}}}}}",
                Value::String(self.command.clone()),
                Value::String(e.to_string())
            )
        })
    }
}

pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_time(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_the_common_fields_on_one_line() {
        let started = Utc::now();
        let report = Report::new(
            "dump",
            started,
            Outcome::ok(serde_json::json!({"folder": "x"})),
        );
        let line = report.to_json(false);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        for key in [
            "command",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "exit_code",
            "version",
            "folder",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(v["status"], "ok");
        assert!(v.get("error").is_none());
    }

    #[test]
    fn partial_exits_with_the_first_failure() {
        let first = ErrorInfo {
            kind: "pg_unavailable".into(),
            message: "x".into(),
            exit_code: 69,
        };
        let o = Outcome::from_parts(vec![first], true, serde_json::json!({}));
        assert_eq!(o.status, Status::Partial);
        assert_eq!(o.exit_code, 69);
    }
}
