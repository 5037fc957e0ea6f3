//! Value parsers shared by every group of settings: durations, sizes, numbers in a range,
//! ports, booleans, paths and comma lists. Each error names the variable it was given.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// Parses `26h`, `90m`, `2d`, `1h30m`, `3600s`: a number without a unit is refused (is it
/// hours? seconds?).
pub fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            var,
            value,
            "expected a duration with a unit, like 26h, 90m, 2d or 1h30m",
        )
    };
    let v = value.trim();
    if v.is_empty() || v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

pub(crate) const MIB: u64 = 1024 * 1024;

/// Parses `64MiB`, `64MB`, `64M`, `1GiB` or a byte count. Powers of 1024 throughout:
/// operators write `64MB` and mean the same thing.
pub fn parse_size(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::invalid(var, value, "expected a size like 64MiB, 512MB or 1GiB");
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// `RESTORE_JOBS`: 1 to 64, empty meaning 1.
pub fn parse_jobs(var: &'static str, value: &str) -> Result<u32, ConfigError> {
    if value.trim().is_empty() {
        return Ok(1);
    }
    Ok(parse_range(var, value, 1, 64)? as u32)
}

pub(crate) fn parse_range(
    var: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let n: u64 = value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            var,
            value,
            format!("expected a whole number from {min} to {max}"),
        )
    })?;
    if n < min || n > max {
        return Err(ConfigError::invalid(
            var,
            value,
            format!("must be from {min} to {max}"),
        ));
    }
    Ok(n)
}

pub(crate) fn parse_port(var: &'static str, value: &str) -> Result<u16, ConfigError> {
    parse_range(var, value, 1, 65_535)
        .map(|p| p as u16)
        .map_err(|_| ConfigError::invalid(var, value, "expected a port number from 1 to 65535"))
}

/// Accepts the spellings operators use in `.env` files.
pub fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::invalid(var, value, "expected true or false")),
    }
}

pub(crate) fn non_empty(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::invalid(var, value, "must not be empty"))
    } else {
        Ok(value.to_string())
    }
}

/// A path setting; empty means unset.
pub(crate) fn path_setting(value: &Option<String>) -> Option<PathBuf> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
}

pub(crate) fn comma_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A host name or an IP address (v4, or v6 without brackets): nothing ssh or a URL could
/// read as an option or as user information.
pub(crate) fn is_host(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        let cases = [
            ("26h", 26 * 3600),
            ("90m", 5400),
            ("2d", 172_800),
            ("1h30m", 5400),
            ("45s", 45),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration("X", text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for bad in ["", "h", "26x", "0h", "-1h", "1.5h", "3600", "26"] {
            assert!(parse_duration("X", bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sizes_accept_operator_spellings() {
        assert_eq!(parse_size("X", "64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("X", "64MB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("X", "1g").unwrap(), 1024 * MIB);
        assert_eq!(parse_size("X", "1048576").unwrap(), MIB);
        assert!(parse_size("X", "lots").is_err());
    }

    #[test]
    fn booleans_accept_env_file_spellings() {
        for t in ["true", "TRUE", "1", "yes", "on"] {
            assert!(parse_bool("X", t).unwrap());
        }
        for f in ["false", "0", "no", "off", ""] {
            assert!(!parse_bool("X", f).unwrap());
        }
        assert!(parse_bool("X", "maybe").is_err());
    }
}
