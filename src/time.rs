//! How times look in JSON, logs and lock files (a leaf module).

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC to the second: `2025-10-05T12:00:00Z`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
