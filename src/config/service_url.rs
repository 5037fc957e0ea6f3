//! Reading the parts of a service URL (`NOTIFY_URLS`): percent-decoded user names and
//! passwords, shoutrrr's case-insensitive query keys and its yes/no booleans.

use percent_encoding::percent_decode_str;
use url::Url;

/// A percent-decoded part of a URL.
pub(crate) fn decoded(part: &str) -> String {
    percent_decode_str(part).decode_utf8_lossy().into_owned()
}

/// A query parameter, case-insensitively (shoutrrr's keys are).
pub(crate) fn query(url: &Url, keys: &[&str]) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// shoutrrr's booleans: yes/no, true/false, 1/0.
pub(crate) fn yes(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("expected yes or no, not {value:?}")),
    }
}
