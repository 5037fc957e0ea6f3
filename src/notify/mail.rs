//! The `smtp://` service: one plain-text mail per message, through lettre's async SMTP
//! transport (rustls), bounded by the same timeout as every other notification.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::SendError;
use super::message::Message;
use crate::config::notify_urls::{Mail, MailAuth, MailTls};
use crate::secret::redact;

/// Sends the message, retried once after 1 s; each attempt bounded by `timeout`.
pub(super) async fn send(mail: &Mail, m: &Message, timeout: Duration) -> Result<(), SendError> {
    let shown = mail.shown.clone();
    let email = build(mail, m).map_err(|e| SendError::Connect(shown.clone(), e))?;
    let transport = transport(mail, timeout).map_err(|e| SendError::Connect(shown.clone(), e))?;
    let mut last = None;
    for attempt in 0..2u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(attempt)).await;
        }
        let error = match tokio::time::timeout(timeout, transport.send(email.clone())).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                let secrets: Vec<_> = mail.password.iter().collect();
                let text = redact(&super::http::one_line_cause(&e), &secrets);
                let permanent = e.is_permanent();
                let error = SendError::Connect(shown.clone(), text);
                if permanent {
                    return Err(error);
                }
                error
            }
            Err(_) => SendError::Timeout(shown.clone(), timeout),
        };
        last = Some(error);
    }
    Err(last.unwrap_or(SendError::Timeout(shown, timeout)))
}

fn build(mail: &Mail, m: &Message) -> Result<lettre::Message, String> {
    let from = match &mail.from_name {
        Some(name) => format!("{name} <{}>", mail.from),
        None => format!("pg-backups <{}>", mail.from),
    };
    let mut builder = lettre::Message::builder()
        .from(
            from.parse::<Mailbox>()
                .map_err(|e| format!("from= is not a mailbox: {e}"))?,
        )
        .subject(m.subject.clone());
    for to in &mail.to {
        builder = builder.to(to
            .parse::<Mailbox>()
            .map_err(|e| format!("to= is not a mailbox: {e}"))?);
    }
    builder
        .body(m.plain())
        .map_err(|e| format!("cannot build the mail: {e}"))
}

fn transport(mail: &Mail, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let params =
        || TlsParameters::new(mail.host.clone()).map_err(|e| format!("TLS set-up failed: {e}"));
    let tls = match mail.tls {
        MailTls::Implicit => Tls::Wrapper(params()?),
        MailTls::StartTlsRequired => Tls::Required(params()?),
        MailTls::StartTlsOpportunistic => Tls::Opportunistic(params()?),
        MailTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.as_str())
        .port(mail.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(client) = &mail.client_host {
        builder = builder.hello_name(ClientId::Domain(client.clone()));
    }
    let mechanisms = match mail.auth {
        MailAuth::None => None,
        MailAuth::Any => Some(vec![Mechanism::Plain, Mechanism::Login]),
        MailAuth::Plain => Some(vec![Mechanism::Plain]),
        MailAuth::Login => Some(vec![Mechanism::Login]),
        MailAuth::OAuth2 => Some(vec![Mechanism::Xoauth2]),
    };
    if let Some(mechanisms) = mechanisms {
        let user = mail.user.clone().unwrap_or_default();
        let password = mail
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        builder = builder
            .credentials(Credentials::new(user, password))
            .authentication(mechanisms);
    }
    Ok(builder.build())
}
