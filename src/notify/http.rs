//! One bounded HTTP POST with retries, for every endpoint that takes one (`NOTIFY_URL`,
//! `HEALTHCHECK_URL`, the chat services of `NOTIFY_URLS`). The URL holds a token: errors name
//! only what the URL's owner chose to show (`https://host/…`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::SendError;

pub(super) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One request to make.
pub(super) struct Post {
    /// The whole URL, tokens included: never shown.
    pub url: String,
    /// What messages show instead.
    pub shown: String,
    pub content_type: &'static str,
    /// Headers, some of which hold a token (never shown either).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A client for http and https (the system's CA certificates).
pub(super) fn client(shown: &str) -> Result<HttpClient, SendError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| SendError::Connect(shown.to_string(), format!("no CA certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Sends `post` up to `attempts` times (waiting 1 s, then 2 s, between them), each attempt
/// bounded by `timeout`. A redirect or a 4xx other than 429 is final: it will not change.
pub(super) async fn send(
    client: &HttpClient,
    post: &Post,
    timeout: Duration,
    attempts: u32,
) -> Result<(), SendError> {
    let shown = &post.shown;
    let mut last = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        let mut request = http::Request::post(post.url.as_str())
            .header("content-type", post.content_type)
            .header(
                "user-agent",
                concat!("pg-backups/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &post.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(post.body.clone())))
            .map_err(|_| SendError::Connect(shown.clone(), "invalid URL or header".into()))?;
        let answer = tokio::time::timeout(timeout, async {
            let response = client.request(request).await?;
            let status = response.status();
            // Read the (small) answer so the connection closes cleanly.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        let error = match answer {
            Ok(Ok(status)) if status.is_success() => return Ok(()),
            Ok(Ok(status)) => {
                let e = SendError::Status(shown.clone(), status.as_u16());
                // A redirect (not followed: the body would go where the URL does not say)
                // or a 4xx other than 429 will not change on a retry.
                if status.is_redirection() || (status.is_client_error() && status.as_u16() != 429) {
                    return Err(e);
                }
                e
            }
            Ok(Err(e)) => SendError::Connect(shown.clone(), one_line_cause(&e)),
            Err(_) => SendError::Timeout(shown.clone(), timeout),
        };
        last = Some(error);
    }
    Err(last.unwrap_or(SendError::Timeout(shown.clone(), timeout)))
}

/// The innermost cause of a client error, which names what happened ("Connection refused").
pub(super) fn one_line_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() { e.to_string() } else { text }
}
