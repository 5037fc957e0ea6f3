//! `--env-file PATH`: `KEY=value` lines loaded into the environment before the flags are
//! parsed, so the file works exactly like compose `env_file:` or systemd `EnvironmentFile=`.
//! Variables already set in the environment win over the file.

use std::path::Path;

use crate::config::ConfigError;

/// Parses the lines of an env file: `KEY=value`, `#` comments, blank lines, an optional
/// `export ` prefix, and values in matching single or double quotes.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some('"'), Some('"')) | (Some('\''), Some('\'')) if value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Loads the file into the process environment.
pub fn load(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        var: "--env-file",
        path: path.to_path_buf(),
        source,
    })?;
    let pairs = parse(&text).map_err(|reason| ConfigError::Invalid {
        var: "--env-file",
        value: path.display().to_string(),
        reason,
    })?;
    for (key, value) in pairs {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called from `run` before any thread is started (logging, signals and
            // the S3 runtime come later), so nothing reads the environment concurrently.
            unsafe { std::env::set_var(&key, &value) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_like_compose_and_systemd() {
        let text = "# comment\n\nPGHOST=db\nexport PGPORT=5433\nS3_PREFIX=\"a b\"\nX='y'\nSCHEDULE=0 */6 * * *\n";
        let pairs = parse(text).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("PGHOST".into(), "db".into()),
                ("PGPORT".into(), "5433".into()),
                ("S3_PREFIX".into(), "a b".into()),
                ("X".into(), "y".into()),
                ("SCHEDULE".into(), "0 */6 * * *".into()),
            ]
        );
        assert!(parse("not a line").is_err());
        assert!(parse("BAD KEY=1").is_err());
    }
}
