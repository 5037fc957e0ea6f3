//! The SDK client: credentials (given keys, or the SDK's chain: environment, profile, web
//! identity, instance role), region, endpoint and path style, timeouts and retries; and the
//! one place SDK errors become ours, with the exit code and the next step for the operator.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Storage;
use crate::config::{S3Config, S3Sse};
use crate::storage::StorageError;

/// What went wrong, in one line: the innermost cause of an SDK error ("Connection
/// refused"), not the debug dump of every layer around it.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.trim().is_empty() {
            text = t;
        }
        cause = c.source();
    }
    // "Connection refused (os error 111)" → "connection refused".
    let text = match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

impl S3Storage {
    pub fn new(cfg: &S3Config) -> Result<S3Storage, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("s3")
            .build()
            .map_err(|e| StorageError::Io {
                context: "starting the S3 client runtime".into(),
                source: e,
            })?;
        let client = sdk_client(cfg, &rt);
        Ok(S3Storage {
            rt,
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            part_size: cfg.part_size,
            max_parts: cfg.max_parts,
            location: location(cfg),
            endpoint_shown: endpoint_shown(cfg),
            key_shown: key_shown(cfg),
            listed: std::sync::Mutex::new(BTreeMap::new()),
            no_batch_delete: std::sync::atomic::AtomicBool::new(false),
            sse: cfg.sse.as_ref().map(|s| match s {
                S3Sse::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
                S3Sse::Kms { .. } => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
            }),
            kms_key: match &cfg.sse {
                Some(S3Sse::Kms { key_id }) => key_id.clone(),
                _ => None,
            },
            storage_class: cfg
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
            object_lock: cfg.object_lock,
            retention_days: cfg.retention.days,
            versioned: std::sync::OnceLock::new(),
            lock_checked: std::sync::OnceLock::new(),
        })
    }

    /// Maps an SDK error to ours: unreachable (69), refused (77), missing (66), other (69).
    pub(super) fn error<E>(
        &self,
        op: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let destination = self.location.clone();
        let endpoint = &self.endpoint_shown;
        match &err {
            SdkError::DispatchFailure(_) => StorageError::Unreachable {
                destination,
                detail: format!(
                    "{op}: {} at {endpoint}; check S3_ENDPOINT and that the server is reachable",
                    root_cause(&err)
                ),
            },
            SdkError::TimeoutError(_) => StorageError::Unreachable {
                destination,
                detail: format!(
                    "{op}: no answer from {endpoint} in time; check S3_ENDPOINT and the network"
                ),
            },
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("");
                let said = match (code, message) {
                    ("", "") => format!("HTTP {status}"),
                    (c, "") | ("", c) => format!("{c} (HTTP {status})"),
                    (c, m) => format!("{c}: {m} (HTTP {status})"),
                };
                match (code, status) {
                    ("NoSuchBucket", _) => StorageError::NotFound(format!(
                        "bucket {} does not exist at {endpoint}: create it, or fix S3_BUCKET / \
                         S3_ENDPOINT",
                        self.bucket
                    )),
                    (
                        "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "AccessDenied"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "AuthorizationHeaderMalformed"
                        | "InvalidSecurity"
                        | "AllAccessDisabled",
                        _,
                    )
                    | (_, 401 | 403) => StorageError::Denied {
                        destination,
                        detail: format!(
                            "{op}: access denied for {} ({said}); check S3_ACCESS_KEY / \
                             S3_SECRET_KEY and the bucket policy",
                            self.key_shown
                        ),
                    },
                    (_, 404) => StorageError::NotFound(format!("{op}: not found at {destination}")),
                    _ => StorageError::Failed {
                        destination,
                        detail: format!("{op}: {said}"),
                    },
                }
            }
            SdkError::ResponseError(_) => StorageError::Failed {
                destination,
                detail: format!(
                    "{op}: {endpoint} answered something that is not S3 ({}); check S3_ENDPOINT",
                    root_cause(&err)
                ),
            },
            _ => StorageError::Failed {
                destination,
                detail: format!("{op}: {}", root_cause(&err)),
            },
        }
    }
}

/// A task of ours that panicked or was cancelled, as a storage error.
pub(super) fn join_error(e: &tokio::task::JoinError) -> StorageError {
    StorageError::Io {
        context: "an upload task".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The SDK client: the keys given, else the SDK's default chain; checksums only where an
/// operation requires them (several providers reject the SDK's default CRC headers).
fn sdk_client(cfg: &S3Config, rt: &tokio::runtime::Runtime) -> Client {
    let region = Region::new(cfg.region.clone());
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200));
    let mut builder = match &cfg.credentials {
        Some(c) => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                c.access_key.expose(),
                c.secret_key.expose(),
                c.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "pg-backups",
            )),
        None => {
            // No keys: the SDK's default chain (environment, profile, IAM role).
            let shared = rt.block_on(
                aws_config::defaults(BehaviorVersion::latest())
                    .region(region.clone())
                    .load(),
            );
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    builder = builder
        .region(region)
        .force_path_style(cfg.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(timeouts)
        .retry_config(retry);
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// `s3://bucket/prefix`, and the endpoint when it is not AWS: what reports and errors name.
fn location(cfg: &S3Config) -> String {
    let bucket = match cfg.prefix.as_str() {
        "" => format!("s3://{}", cfg.bucket),
        p => format!("s3://{}/{p}", cfg.bucket),
    };
    bucket
        + &cfg
            .endpoint
            .as_ref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default()
}

fn endpoint_shown(cfg: &S3Config) -> String {
    match &cfg.endpoint {
        Some(e) => e.clone(),
        None => format!("AWS S3 in {}", cfg.region),
    }
}

/// Enough of the key to tell which one was refused, never the secret.
fn key_shown(cfg: &S3Config) -> String {
    match &cfg.credentials {
        Some(c) => {
            let id: String = c.access_key.expose().chars().take(4).collect();
            format!("key {id}…")
        }
        None => "the key of the SDK's chain (AWS_PROFILE, web identity, instance role)".to_string(),
    }
}
