//! The S3-compatible destination: `S3_*`, and the AWS tools' own variables
//! (`AWS_ENDPOINT_URL(_S3)`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) wherever ours are not set.
//!
//! Every value that is present is checked even while `S3_ENABLED=false`; what an enabled
//! destination lacks is kept as [`Destination::Incomplete`] for the commands that use it.

use super::parse::{MIB, is_host, parse_bool, parse_range, parse_size, path_setting};
use super::retention::RetentionRules;
use super::secrets::{Secrets, secret_with_file};
use super::{ConfigError, Destination};
use crate::cli::GlobalArgs;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    /// Without leading or trailing slashes; empty for the bucket root.
    pub prefix: String,
    pub force_path_style: bool,
    /// Static keys; `None` uses the SDK's default chain (IAM roles, profiles, web identity).
    pub credentials: Option<S3Credentials>,
    pub part_size: Option<u64>,
    pub max_parts: u64,
    pub retention: RetentionRules,
    pub sse: Option<S3Sse>,
    pub storage_class: Option<String>,
    /// `S3_OBJECT_LOCK_MODE` with `S3_OBJECT_LOCK_DAYS`: every object of a backup is written
    /// under Object Lock until that many days after the backup's time.
    pub object_lock: Option<S3ObjectLock>,
}

/// S3 Object Lock for every object of a backup (DESIGN.md guarantee 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3ObjectLock {
    pub mode: S3LockMode,
    /// Counted from the folder's time (its name), not from the upload, so a folder shipped
    /// again, or late, is locked until the same date.
    pub days: u32,
}

/// GOVERNANCE: users with `s3:BypassGovernanceRetention` may still delete or shorten;
/// COMPLIANCE: nobody can, not even the account's root user, until the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3LockMode {
    Governance,
    Compliance,
}

impl S3LockMode {
    /// The header value S3 expects.
    pub fn as_str(self) -> &'static str {
        match self {
            S3LockMode::Governance => "GOVERNANCE",
            S3LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Static S3 credentials: `S3_ACCESS_KEY`/`S3_SECRET_KEY`, else `AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    pub fn new(access_key: &str, secret_key: &str) -> S3Credentials {
        S3Credentials {
            access_key: Secret::new(access_key.to_string()),
            secret_key: Secret::new(secret_key.to_string()),
            session_token: None,
        }
    }
}

/// Server-side encryption of S3 objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Sse {
    Aes256,
    Kms { key_id: Option<String> },
}

/// The S3 destination: disabled, enabled, or enabled without what it needs.
pub(super) fn from_args(
    args: &GlobalArgs,
    secrets: &Secrets,
) -> Result<Destination<S3Config>, ConfigError> {
    let enabled = parse_bool("S3_ENABLED", &args.s3_enabled)?;
    let given = Given::from_args(args, secrets)?;
    if !enabled {
        return Ok(Destination::Disabled);
    }
    Ok(match given.complete(args, secrets) {
        Ok(config) => Destination::Enabled(config),
        Err(incomplete) => Destination::Incomplete(incomplete),
    })
}

/// Every S3 value that was given, each checked; what is missing is judged only when enabled.
struct Given {
    retention: RetentionRules,
    force_path_style: bool,
    max_parts: u64,
    part_size: Option<u64>,
    endpoint: Option<String>,
    access_key: Option<Secret>,
    secret_key: Option<Secret>,
    bucket: Option<String>,
    sse: Option<S3Sse>,
    storage_class: Option<String>,
    object_lock: Option<S3ObjectLock>,
    prefix: String,
}

impl Given {
    fn from_args(args: &GlobalArgs, secrets: &Secrets) -> Result<Given, ConfigError> {
        let retention = RetentionRules::s3(args)?;
        let force_path_style = parse_bool("S3_FORCE_PATH_STYLE", &args.s3_force_path_style)?;
        let max_parts = parse_range("S3_MAX_PARTS", &args.s3_max_parts, 1, 10_000)?;
        let part_size = part_size(args.s3_part_size.as_deref())?;
        let endpoint = endpoint(args.s3_endpoint.as_deref())?;
        let access_key = secret_with_file(
            "S3_ACCESS_KEY",
            secrets.get("S3_ACCESS_KEY").as_deref(),
            path_setting(&args.s3_access_key_file).as_deref(),
        )?;
        let secret_key = secret_with_file(
            "S3_SECRET_KEY",
            secrets.get("S3_SECRET_KEY").as_deref(),
            path_setting(&args.s3_secret_key_file).as_deref(),
        )?;
        let bucket = args.s3_bucket.clone().filter(|b| !b.is_empty());
        if let Some(b) = &bucket {
            validate_bucket(b)?;
        }
        let sse = sse(args.s3_sse.as_deref(), args.s3_sse_kms_key_id.as_deref())?;
        let storage_class = storage_class(args.s3_storage_class.as_deref())?;
        let prefix = prefix(&args.s3_prefix)?;
        let object_lock = object_lock(
            args.s3_object_lock_mode.as_deref(),
            args.s3_object_lock_days.as_deref(),
        )?;
        Ok(Given {
            retention,
            force_path_style,
            max_parts,
            part_size,
            endpoint,
            access_key,
            secret_key,
            bucket,
            sse,
            storage_class,
            object_lock,
            prefix,
        })
    }

    /// The settings of an enabled destination, or the `Incomplete` error that says what to
    /// set.
    fn complete(self, args: &GlobalArgs, secrets: &Secrets) -> Result<S3Config, ConfigError> {
        let credentials = credentials(self.access_key, self.secret_key, secrets)?;
        let Some(bucket) = self.bucket else {
            return Err(ConfigError::Incomplete(
                "S3_ENABLED=true but S3_BUCKET is not set: set S3_BUCKET (and S3_ENDPOINT for \
                 providers other than AWS)"
                    .into(),
            ));
        };
        let region = region(args.s3_region.as_deref(), self.endpoint.is_some())?;
        Ok(S3Config {
            bucket,
            region,
            endpoint: self.endpoint,
            prefix: self.prefix,
            force_path_style: self.force_path_style,
            credentials,
            part_size: self.part_size,
            max_parts: self.max_parts,
            retention: self.retention,
            sse: self.sse,
            storage_class: self.storage_class,
            object_lock: self.object_lock,
        })
    }
}

fn part_size(value: Option<&str>) -> Result<Option<u64>, ConfigError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let size = parse_size("S3_PART_SIZE", v)?;
    if !(5 * MIB..=5 * 1024 * MIB).contains(&size) {
        return Err(ConfigError::invalid(
            "S3_PART_SIZE",
            v,
            "S3 parts must be between 5MiB and 5GiB",
        ));
    }
    Ok(Some(size))
}

/// `S3_ENDPOINT`, else the AWS tools' variables, which count whenever ours is not set.
fn endpoint(ours: Option<&str>) -> Result<Option<String>, ConfigError> {
    match non_empty_env(ours, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]) {
        None => Ok(None),
        Some((var, e)) => validate_endpoint(var, &e).map(Some),
    }
}

fn sse(value: Option<&str>, kms_key: Option<&str>) -> Result<Option<S3Sse>, ConfigError> {
    let kms_key = kms_key.filter(|k| !k.trim().is_empty()).map(str::to_string);
    let sse = match value.map(str::trim) {
        None | Some("") => None,
        Some("AES256") => Some(S3Sse::Aes256),
        Some("aws:kms") => Some(S3Sse::Kms {
            key_id: kms_key.clone(),
        }),
        Some(other) => {
            return Err(ConfigError::invalid(
                "S3_SSE",
                other,
                "expected AES256 or aws:kms",
            ));
        }
    };
    if kms_key.is_some() && !matches!(sse, Some(S3Sse::Kms { .. })) {
        return Err(ConfigError::Conflict(
            "S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms: set S3_SSE=aws:kms, or unset the key".into(),
        ));
    }
    Ok(sse)
}

/// `S3_OBJECT_LOCK_MODE` and `S3_OBJECT_LOCK_DAYS`: both or neither (empty is unset).
fn object_lock(
    mode: Option<&str>,
    days: Option<&str>,
) -> Result<Option<S3ObjectLock>, ConfigError> {
    let mode = mode.map(str::trim).filter(|m| !m.is_empty());
    let days = days.map(str::trim).filter(|d| !d.is_empty());
    let (mode, days) = match (mode, days) {
        (None, None) => return Ok(None),
        (Some(m), Some(d)) => (m, d),
        (Some(_), None) => {
            return Err(ConfigError::Conflict(
                "S3_OBJECT_LOCK_MODE is set but S3_OBJECT_LOCK_DAYS is not: set both (e.g. \
                 S3_OBJECT_LOCK_DAYS=30), or unset S3_OBJECT_LOCK_MODE"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::Conflict(
                "S3_OBJECT_LOCK_DAYS is set but S3_OBJECT_LOCK_MODE is not: set both (e.g. \
                 S3_OBJECT_LOCK_MODE=GOVERNANCE), or unset S3_OBJECT_LOCK_DAYS"
                    .into(),
            ));
        }
    };
    let mode = match mode.to_ascii_uppercase().as_str() {
        "GOVERNANCE" => S3LockMode::Governance,
        "COMPLIANCE" => S3LockMode::Compliance,
        _ => {
            return Err(ConfigError::invalid(
                "S3_OBJECT_LOCK_MODE",
                mode,
                "expected GOVERNANCE or COMPLIANCE",
            ));
        }
    };
    // S3 caps a retention period at 100 years; a bigger number is a typo.
    let days = parse_range("S3_OBJECT_LOCK_DAYS", days, 1, 36_500)? as u32;
    Ok(Some(S3ObjectLock { mode, days }))
}

fn storage_class(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => {
            Ok(Some(c.to_string()))
        }
        Some(c) => Err(ConfigError::invalid(
            "S3_STORAGE_CLASS",
            c,
            "expected a storage class like STANDARD_IA or GLACIER_IR",
        )),
    }
}

/// Without slashes at either end; `.` and `..` would name other keys than they seem to.
fn prefix(value: &str) -> Result<String, ConfigError> {
    let prefix = value.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == ".." || p == ".") {
        return Err(ConfigError::invalid(
            "S3_PREFIX",
            value,
            "must not contain . or .. segments",
        ));
    }
    Ok(prefix)
}

/// Our pair of keys, else the AWS tools' pair, else `None` (the SDK's own chain: profiles,
/// web identity, instance roles). Half a pair of ours is `Incomplete`.
fn credentials(
    access: Option<Secret>,
    secret: Option<Secret>,
    secrets: &Secrets,
) -> Result<Option<S3Credentials>, ConfigError> {
    match (access, secret) {
        (Some(access_key), Some(secret_key)) => Ok(Some(S3Credentials {
            access_key,
            secret_key,
            session_token: None,
        })),
        (None, None) => Ok(
            match (
                secrets.get("AWS_ACCESS_KEY_ID"),
                secrets.get("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Some(a), Some(s)) => Some(S3Credentials {
                    access_key: Secret::new(a),
                    secret_key: Secret::new(s),
                    session_token: secrets.get("AWS_SESSION_TOKEN").map(Secret::new),
                }),
                _ => None,
            },
        ),
        (Some(_), None) => Err(ConfigError::Incomplete(
            "S3_ACCESS_KEY is set but S3_SECRET_KEY is not: set both, or neither to use \
             the SDK's default credential chain"
                .into(),
        )),
        (None, Some(_)) => Err(ConfigError::Incomplete(
            "S3_SECRET_KEY is set but S3_ACCESS_KEY is not: set both, or neither to use \
             the SDK's default credential chain"
                .into(),
        )),
    }
}

/// `S3_REGION`, else `AWS_REGION`/`AWS_DEFAULT_REGION`; S3-compatible providers (an
/// endpoint is set) ignore it, so `us-east-1` is a safe default there only.
fn region(ours: Option<&str>, has_endpoint: bool) -> Result<String, ConfigError> {
    match non_empty_env(ours, &["AWS_REGION", "AWS_DEFAULT_REGION"]) {
        Some((_, r)) => Ok(r),
        None if has_endpoint => Ok("us-east-1".to_string()),
        None => Err(ConfigError::Incomplete(
            "S3_ENABLED=true but S3_REGION is not set: set S3_REGION (or AWS_REGION, or \
             S3_ENDPOINT for an S3-compatible provider)"
                .into(),
        )),
    }
}

/// Our variable when set (not empty), else the first of the AWS tools' ones that is.
fn non_empty_env(ours: Option<&str>, aws: &[&'static str]) -> Option<(&'static str, String)> {
    if let Some(v) = ours.filter(|v| !v.trim().is_empty()) {
        return Some(("", v.to_string()));
    }
    aws.iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*var, v))
    })
}

fn validate_endpoint(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let var = if var.is_empty() { "S3_ENDPOINT" } else { var };
    let bad = |why: &str| ConfigError::invalid(var, value, why);
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| bad("expected a URL starting with https:// or http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || rest.contains(' ') {
        return Err(bad(
            "expected a URL like https://fra1.digitaloceanspaces.com",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && !h.contains(':') => (h, Some(p)),
        Some((h, p)) if h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || !(host.starts_with('[') || is_host(host)) {
        return Err(bad("the host name is not valid"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
        && bucket
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "S3_BUCKET",
            bucket,
            "expected 3-63 lowercase letters, digits, '.', '-' (a bucket name, not a URL)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_lock_needs_both_settings_and_valid_values() {
        assert_eq!(object_lock(None, None).unwrap(), None);
        assert_eq!(object_lock(Some(""), Some(" ")).unwrap(), None);
        assert_eq!(
            object_lock(Some("compliance"), Some("30")).unwrap(),
            Some(S3ObjectLock {
                mode: S3LockMode::Compliance,
                days: 30
            })
        );
        assert_eq!(
            object_lock(Some("GOVERNANCE"), Some("1"))
                .unwrap()
                .unwrap()
                .mode,
            S3LockMode::Governance
        );
        for (mode, days) in [
            (Some("GOVERNANCE"), None),
            (None, Some("7")),
            (Some("LEGAL"), Some("7")),
            (Some("COMPLIANCE"), Some("0")),
            (Some("COMPLIANCE"), Some("-1")),
            (Some("COMPLIANCE"), Some("7d")),
        ] {
            let e = object_lock(mode, days).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{mode:?} {days:?}: {e}");
            assert!(e.to_string().contains("S3_OBJECT_LOCK_"), "{e}");
        }
        let e = object_lock(Some("COMPLIANCE"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("S3_OBJECT_LOCK_MODE") && e.contains("S3_OBJECT_LOCK_DAYS"),
            "{e}"
        );
    }

    #[test]
    fn endpoints_must_be_urls() {
        assert!(validate_endpoint("", "https://fra1.digitaloceanspaces.com").is_ok());
        assert!(validate_endpoint("", "http://127.0.0.1:8333").is_ok());
        assert!(validate_endpoint("", "http://[::1]:8333").is_ok());
        for bad in [
            "fra1.digitaloceanspaces.com",
            "ftp://x",
            "http://",
            "http://host:port",
            "http://a b",
            "http://user@host",
        ] {
            assert!(
                validate_endpoint("", bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
