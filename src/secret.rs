//! A string that must never be printed: passwords and keys.

use std::fmt;

/// Holds a secret. `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value,
/// so every place that hands it to something else is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of each secret in `text`, for error messages that quote
/// output of a child process or a server.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let secret = s.expose();
        if secret.is_empty() {
            continue;
        }
        out = if secret.chars().count() >= SHORT {
            out.replace(secret, "***")
        } else {
            replace_standalone(&out, secret)
        };
    }
    out
}

/// A secret this short also occurs inside ordinary words ("p" in "supported"): there it is
/// left alone, and masked only where it stands on its own.
const SHORT: usize = 6;

fn replace_standalone(text: &str, secret: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(secret) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + secret.len()..].chars().next();
        out.push_str(&rest[..at]);
        if word(before) || word(after) {
            out.push_str(secret);
        } else {
            out.push_str("***");
        }
        rest = &rest[at + secret.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_short_secret_is_masked_where_it_stands_alone_not_inside_words() {
        let p = Secret::new("pp".into());
        assert_eq!(
            redact("STARTTLS is not supported; login pp refused", &[&p]),
            "STARTTLS is not supported; login *** refused"
        );
    }

    #[test]
    fn redact_removes_secrets_from_text() {
        let s = Secret::new("hunter2".into());
        assert_eq!(
            redact("password hunter2 failed", &[&s]),
            "password *** failed"
        );
    }
}
