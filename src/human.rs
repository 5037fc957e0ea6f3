//! Sizes, ages and names as a person reads them: the text output, the restore prompts and
//! the log lines share these, so a size reads the same in `list`, `prune --dry-run` and the
//! prompt.

use std::time::Duration;

/// `1.2 GiB`, `512 B`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `8h`, `7d 2h`, `90m`: a duration as an operator writes it (26h rather than 1d 2h).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days == 1 && minutes == 0 && seconds == 0 {
        return format!("{}h", 24 + hours);
    }
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if hours > 0 {
        parts.push(format!("{hours}h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes}m"));
    }
    if seconds > 0 || parts.is_empty() {
        parts.push(format!("{seconds}s"));
    }
    parts.join(" ")
}

/// An age at a glance, two units at most: `45s`, `12m`, `5h 3m`, `3d 4h`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86_400, "d", s % 86_400 / 3600, "h"),
    }
}

fn two(a: u64, ua: &str, b: u64, ub: &str) -> String {
    if b == 0 {
        format!("{a}{ua}")
    } else {
        format!("{a}{ua} {b}{ub}")
    }
}

/// Seconds as measured: `0.4s`, `12.3s`, `3m 05s`.
pub fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = s.round() as u64;
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// `1 day`, `3 days`: a count with its noun.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A name from a server or a bucket, safe to print on a terminal: control characters (a
/// line break, an escape sequence that would move the cursor or retitle the window) are
/// shown escaped, never sent raw.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(age(30), "30s");
        assert_eq!(age(3 * 3600 + 120), "3h 2m");
        assert_eq!(age(2 * 86_400), "2d");
        assert_eq!(duration(Duration::from_secs(26 * 3600)), "26h");
        assert_eq!(duration(Duration::from_secs((7 * 24 + 2) * 3600)), "7d 2h");
        assert_eq!(count(1, "day", "days"), "1 day");
        assert_eq!(count(7, "day", "days"), "7 days");
    }

    #[test]
    fn control_characters_never_reach_the_terminal_raw() {
        assert_eq!(clean("plain name"), "plain name");
        assert_eq!(clean("evil\n\u{1b}]0;x\u{7}"), "evil\\n\\u{1b}]0;x\\u{7}");
    }
}
