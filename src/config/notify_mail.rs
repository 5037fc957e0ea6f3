//! The `smtp://` entry of `NOTIFY_URLS`, in shoutrrr's grammar:
//! `smtp://[user:password@]host[:port]/?from=…&to=a,b[&fromname=…][&auth=…][&encryption=…]
//! [&usestarttls=yes|no][&clienthost=…]`. Port 25 by default; `encryption=Auto` (the default)
//! means TLS from the start on port 465, else STARTTLS when the server offers it (as shoutrrr
//! does; `encryption=ExplicitTLS` requires it, `usestarttls=no` turns it off).

use url::Url;

use super::service_url::{decoded, query, yes};
use crate::secret::Secret;

/// How the mail connection is protected (shoutrrr's `encryption` and `usestarttls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTls {
    /// TLS from the first byte (port 465, `encryption=ImplicitTLS`).
    Implicit,
    /// STARTTLS or nothing is sent (`encryption=ExplicitTLS`).
    StartTlsRequired,
    /// STARTTLS when the server offers it (shoutrrr's default: `Auto`, `usestarttls=yes`).
    StartTlsOpportunistic,
    /// Plain text (`usestarttls=no` with `Auto` or `None`).
    None,
}

/// Which SASL mechanisms may be used (shoutrrr's `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailAuth {
    /// PLAIN or LOGIN, whichever the server offers (`Unknown`, the default).
    Any,
    Plain,
    Login,
    OAuth2,
    None,
}

/// One mail service.
#[derive(Clone)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub tls: MailTls,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub auth: MailAuth,
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub client_host: Option<String>,
    pub shown: String,
}

pub(super) fn smtp(url: &Url) -> Result<Mail, String> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?
        .to_string();
    let port = url.port().unwrap_or(25);
    let from = query(url, &["from", "fromaddress"]).ok_or("names no sender (add ?from=…)")?;
    let to: Vec<String> = query(url, &["to", "toaddresses"])
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if to.is_empty() {
        return Err("names no recipient (add &to=…)".into());
    }
    for address in std::iter::once(&from).chain(&to) {
        address
            .parse::<lettre::Address>()
            .map_err(|e| format!("{address:?} is not a mail address ({e})"))?;
    }
    let user = Some(decoded(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(|p| Secret::new(decoded(p)));
    let shown = format!("smtp://{host}:{port}");
    Ok(Mail {
        tls: tls(url, port)?,
        auth: auth(url, user.is_some())?,
        host,
        port,
        user,
        password,
        from,
        from_name: query(url, &["fromname"]),
        to,
        client_host: query(url, &["clienthost"]).filter(|h| h != "auto"),
        shown,
    })
}

fn tls(url: &Url, port: u16) -> Result<MailTls, String> {
    let starttls = match query(url, &["usestarttls", "starttls"]) {
        Some(v) => yes(&v)?,
        None => true,
    };
    let encryption = query(url, &["encryption"]).unwrap_or_else(|| "auto".into());
    Ok(match encryption.to_ascii_lowercase().as_str() {
        "implicittls" => MailTls::Implicit,
        "explicittls" => MailTls::StartTlsRequired,
        "auto" if port == 465 => MailTls::Implicit,
        "auto" | "none" if starttls => MailTls::StartTlsOpportunistic,
        "auto" | "none" => MailTls::None,
        other => {
            return Err(format!(
                "encryption={other} (expected Auto, ExplicitTLS, ImplicitTLS or None)"
            ));
        }
    })
}

fn auth(url: &Url, has_user: bool) -> Result<MailAuth, String> {
    let word = query(url, &["auth"]).unwrap_or_else(|| "unknown".into());
    Ok(match word.to_ascii_lowercase().as_str() {
        "unknown" if has_user => MailAuth::Any,
        "unknown" | "none" => MailAuth::None,
        "plain" => MailAuth::Plain,
        "login" => MailAuth::Login,
        "oauth2" => MailAuth::OAuth2,
        other => {
            return Err(format!(
                "auth={other} is not supported (None, Plain, Login or OAuth2)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(text: &str) -> Mail {
        smtp(&Url::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn the_shoutrrr_defaults_hold() {
        let m = mail("smtp://me%40x.org:p%40ss@mail.x.org:587/?from=me@x.org&to=a@x.org,b@x.org");
        assert_eq!(m.port, 587);
        assert_eq!(m.tls, MailTls::StartTlsOpportunistic);
        assert_eq!(m.auth, MailAuth::Any);
        assert_eq!(m.user.as_deref(), Some("me@x.org"));
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(m.to, ["a@x.org", "b@x.org"]);
        assert_eq!(m.shown, "smtp://mail.x.org:587");
        assert_eq!(mail("smtp://h:465/?from=a@x&to=b@x").tls, MailTls::Implicit);
        assert_eq!(mail("smtp://h/?from=a@x&to=b@x").port, 25);
        assert_eq!(mail("smtp://h/?from=a@x&to=b@x").auth, MailAuth::None);
        assert_eq!(
            mail("smtp://h/?from=a@x&to=b@x&encryption=ExplicitTLS").tls,
            MailTls::StartTlsRequired
        );
        assert_eq!(
            mail("smtp://h/?from=a@x&to=b@x&usestarttls=no").tls,
            MailTls::None
        );
        let bad = smtp(&Url::parse("smtp://h/?from=a@x&to=b@x&auth=CRAMMD5").unwrap());
        assert!(bad.is_err());
    }
}
