//! `NOTIFY_URLS`: the services that get a message a person reads, in the URL form the Docker
//! backup containers share (shoutrrr's, as in `NOTIFICATION_URLS` of
//! offen/docker-volume-backup and watchtower), so that existing URLs work as they are:
//!
//! | form | posts to |
//! |---|---|
//! | `slack://hook:A-B-C@webhook`, legacy `slack://[botname@]A/B/C` | `https://hooks.slack.com/services/A/B/C` |
//! | `discord://token@webhookid` | `https://discord.com/api/webhooks/webhookid/token` |
//! | `teams://group@tenant/altId/groupOwner?host=org.webhook.office.com` (O365 connector) | `https://host/webhookb2/group@tenant/IncomingWebhook/altId/groupOwner` |
//! | `teams://host/path?query` (a Workflows webhook, ours) | `https://host/path?query` |
//! | `telegram://token@telegram?chats=a,b` | `https://api.telegram.org/bot<token>/sendMessage`, per chat |
//! | `ntfy://[user:pass@]host/topic[?scheme=http]`, `ntfys://…` | `https://host/topic` |
//! | `gotify://host[:port][/path]/token[?disabletls=yes]` | `https://host/path/message` |
//! | `smtp://user:pass@host:port/?from=…&to=…` | mail |
//! | `generic+https://…`, `generic+http://…`, `generic://host/path[?disabletls=yes]` | the URL itself: our JSON |
//!
//! The whole list is a secret (tokens in every form): it is never echoed; messages name an
//! entry by its number and `scheme://host/…`. This module only parses and validates; sending
//! lives in `crate::notify`.

use url::Url;

use super::ConfigError;
pub use super::notify_mail::{Mail, MailAuth, MailTls};
use super::service_url::{decoded, query, yes};
use crate::secret::Secret;

const VAR: &str = "NOTIFY_URLS";
pub const SLACK_API: &str = "https://hooks.slack.com";
pub const DISCORD_API: &str = "https://discord.com";
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// What a service understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    Slack,
    Discord,
    /// The retired Office 365 connector (shoutrrr's `teams://` form): a MessageCard.
    TeamsConnector,
    /// A Teams Workflows webhook: an Adaptive Card.
    TeamsWorkflow,
    Telegram {
        chats: Vec<String>,
    },
    Ntfy,
    Gotify,
    Generic,
}

/// One HTTP service: where to post, with the token kept in [`Secret`]s.
#[derive(Clone)]
pub struct Endpoint {
    pub service: Service,
    /// `https://hooks.slack.com`, `https://ntfy.example.com:8080`: no token in it.
    pub base: String,
    /// Whether `base` is a service's public API (the test override may replace it).
    pub public_api: bool,
    /// Path and query, tokens included.
    pub path: Secret,
    /// Headers that carry a token (`Authorization`, `X-Gotify-Key`).
    pub headers: Vec<(String, Secret)>,
    pub shown: String,
}

/// One entry of `NOTIFY_URLS`.
#[derive(Clone)]
pub enum Target {
    Http(Endpoint),
    Mail(Box<Mail>),
}

impl Target {
    /// `slack://hooks.slack.com/…`: what messages may show.
    pub fn shown(&self) -> &str {
        match self {
            Target::Http(e) => &e.shown,
            Target::Mail(m) => &m.shown,
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

/// The list: entries separated by spaces, newlines or commas. A comma splits only where a new
/// `scheme://` follows, so `smtp://…?to=a@x,b@y` stays one entry.
pub fn parse_list(value: &Secret) -> Result<Vec<Target>, ConfigError> {
    let entries = split(value.expose());
    let mut targets = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let target = parse_entry(entry).map_err(|reason| ConfigError::Invalid {
            var: VAR,
            value: String::new(),
            reason: format!("entry {}: {reason}", i + 1),
        })?;
        targets.push(target);
    }
    Ok(targets)
}

fn split(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut start = 0;
        for (at, _) in word.match_indices(',') {
            if at >= start && starts_with_scheme(&word[at + 1..]) {
                out.push(&word[start..at]);
                start = at + 1;
            }
        }
        out.push(&word[start..]);
    }
    out.into_iter()
        .map(|e| e.trim_matches(','))
        .filter(|e| !e.is_empty())
        .collect()
}

fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    })
}

/// One entry, or why not (the reason never holds a token).
fn parse_entry(entry: &str) -> Result<Target, String> {
    let Some((scheme, _)) = entry.split_once("://") else {
        return Err(
            "is not a service URL (expected slack://, discord://, teams://, \
                    telegram://, ntfy://, gotify://, smtp:// or generic+https://…)"
                .into(),
        );
    };
    let scheme = scheme.to_ascii_lowercase();
    let known = "slack, discord, teams, telegram, ntfy, ntfys, gotify, smtp, generic, \
                 generic+https, generic+http";
    if !starts_with_scheme(entry) {
        return Err(format!("is not a service URL (known: {known})"));
    }
    let shown_scheme = format!("{scheme}://…");
    let result = match scheme.as_str() {
        "slack" => slack(entry),
        "discord" => discord(&url(entry)?),
        "teams" => teams(&url(entry)?),
        "telegram" => telegram(&url(entry)?),
        "ntfy" | "ntfys" => ntfy(&url(entry)?, scheme == "ntfys"),
        "gotify" => gotify(&url(entry)?),
        "smtp" => super::notify_mail::smtp(&url(entry)?).map(|m| Target::Mail(Box::new(m))),
        "generic" | "generic+https" | "generic+http" => generic(entry, &scheme),
        _ => {
            return Err(format!(
                "unknown service {scheme}:// (known: {known}; none of them is an http(s) URL: \
                 that is NOTIFY_URL)"
            ));
        }
    };
    result
        .and_then(sendable)
        .map_err(|reason| format!("{shown_scheme}: {reason}"))
}

/// The request the entry makes must be one HTTP can carry: found now, not at the first failure.
fn sendable(target: Target) -> Result<Target, String> {
    if let Target::Http(e) = &target {
        format!("{}{}", e.base, e.path.expose())
            .parse::<http::Uri>()
            .map_err(|_| "holds a character a URL may not (percent-encode it)".to_string())?;
        for (name, value) in &e.headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| "names a header HTTP does not allow".to_string())?;
            http::HeaderValue::from_str(value.expose())
                .map_err(|_| "holds a character a header may not".to_string())?;
        }
    }
    Ok(target)
}

/// The URL, or a reason that does not quote it.
pub(super) fn url(entry: &str) -> Result<Url, String> {
    Url::parse(entry).map_err(|e| format!("is not a valid URL ({e})"))
}

fn host_port(url: &Url) -> Result<String, String> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

fn endpoint(service: Service, base: &str, public: bool, path: String, shown: String) -> Target {
    Target::Http(Endpoint {
        service,
        base: base.to_string(),
        public_api: public,
        path: Secret::new(path),
        headers: Vec::new(),
        shown,
    })
}

/// `slack://hook:A-B-C@webhook`, `slack://A/B/C`, `slack://botname@A/B/C`.
fn slack(entry: &str) -> Result<Target, String> {
    let rest = &entry["slack://".len()..];
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let token = match rest.split_once('@') {
        Some((user, _)) if user.to_ascii_lowercase().starts_with("xox") => {
            return Err(
                "the bot-token form (xoxb:…@channel) is not supported: use a \
                        webhook (slack://hook:…@webhook)"
                    .into(),
            );
        }
        Some((user, host)) => match user.split_once(':') {
            Some((kind, token)) if kind.eq_ignore_ascii_case("hook") => decoded(token),
            // Legacy `botname@A/B/C`.
            _ => decoded(host),
        },
        None => decoded(rest),
    };
    let parts: Vec<&str> = token.trim_matches('/').split(['-', '/', ',']).collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !ok {
        return Err(
            "expected a webhook token of three parts (slack://hook:T000-B000-XXXX@webhook \
                    or slack://T000/B000/XXXX)"
                .into(),
        );
    }
    Ok(endpoint(
        Service::Slack,
        SLACK_API,
        true,
        format!("/services/{}", parts.join("/")),
        "slack://hooks.slack.com/…".into(),
    ))
}

/// `discord://token@webhookid`.
fn discord(url: &Url) -> Result<Target, String> {
    let token = decoded(url.username());
    let id = url.host_str().unwrap_or_default();
    if token.is_empty() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err("expected discord://token@webhookid".into());
    }
    let mut path = format!("/api/webhooks/{id}/{token}");
    if let Some(thread) = query(url, &["thread_id"]) {
        path.push_str(&format!("?thread_id={thread}"));
    }
    Ok(endpoint(
        Service::Discord,
        DISCORD_API,
        true,
        path,
        "discord://discord.com/…".into(),
    ))
}

/// shoutrrr's O365 connector form (`group@tenant/altId/groupOwner?host=…`), else a Workflows
/// webhook URL without its `https://` (`teams://prod-00.westeurope.logic.azure.com:443/…`).
fn teams(url: &Url) -> Result<Target, String> {
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    if !url.username().is_empty() {
        let host = query(url, &["host"]).unwrap_or_else(|| "outlook.office.com".into());
        let tenant = url.host_str().unwrap_or_default();
        let [alt_id, owner] = segments[..] else {
            return Err(
                "expected teams://group@tenant/altId/groupOwner?host=….webhook.office.com \
                        or teams://<Workflows webhook URL without https://>"
                    .into(),
            );
        };
        let path = format!(
            "/webhookb2/{}@{tenant}/IncomingWebhook/{alt_id}/{owner}",
            url.username()
        );
        return Ok(endpoint(
            Service::TeamsConnector,
            &format!("https://{host}"),
            true,
            path,
            format!("teams://{host}/…"),
        ));
    }
    let host = host_port(url)?;
    if segments.is_empty() {
        return Err("expected the Workflows webhook URL without https:// \
                    (teams://prod-00.westeurope.logic.azure.com:443/workflows/…)"
            .into());
    }
    let path = &url[url::Position::BeforePath..];
    Ok(endpoint(
        Service::TeamsWorkflow,
        &format!("https://{host}"),
        true,
        path.to_string(),
        format!("teams://{}/…", url.host_str().unwrap_or_default()),
    ))
}

/// `telegram://token@telegram?chats=a,b` (the token is `123456:ABC…`).
fn telegram(url: &Url) -> Result<Target, String> {
    let token = match url.password() {
        Some(pass) => format!("{}:{}", decoded(url.username()), decoded(pass)),
        None => decoded(url.username()),
    };
    if token.is_empty() || !token.contains(':') || url.host_str() != Some("telegram") {
        return Err("expected telegram://<bot token>@telegram?chats=<chat>[,<chat>…]".into());
    }
    let chats: Vec<String> = query(url, &["chats", "channels"])
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if chats.is_empty() {
        return Err("names no chat (add ?chats=<chat id or @channel>)".into());
    }
    Ok(endpoint(
        Service::Telegram { chats },
        TELEGRAM_API,
        true,
        format!("/bot{token}/sendMessage"),
        "telegram://api.telegram.org/…".into(),
    ))
}

/// `ntfy://[user:pass@]host/topic[?scheme=http]` (https unless told), `ntfys://` always https.
fn ntfy(url: &Url, tls: bool) -> Result<Target, String> {
    let scheme = match (tls, query(url, &["scheme"]).as_deref()) {
        (true, _) | (false, None | Some("https")) => "https",
        (false, Some("http")) => "http",
        (false, Some(_)) => return Err("scheme= must be http or https".into()),
    };
    let host = host_port(url)?;
    let topic = url.path().trim_matches('/');
    if topic.is_empty() {
        return Err("names no topic (ntfy://host/topic)".into());
    }
    let mut headers = Vec::new();
    let user = decoded(url.username());
    if let Some(pass) = url.password().map(decoded) {
        let value = if user.is_empty() {
            format!("Bearer {pass}")
        } else {
            use base64::Engine;
            let pair = format!("{user}:{pass}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        headers.push(("authorization".into(), Secret::new(value)));
    }
    Ok(Target::Http(Endpoint {
        service: Service::Ntfy,
        base: format!("{scheme}://{host}"),
        public_api: false,
        path: Secret::new(format!("/{topic}")),
        headers,
        shown: format!("ntfy://{host}/…"),
    }))
}

/// `gotify://host[:port][/path]/token[?disabletls=yes]`; the token goes in `X-Gotify-Key`
/// (not the query, which servers log).
fn gotify(url: &Url) -> Result<Target, String> {
    let host = host_port(url)?;
    let scheme = match query(url, &["disabletls"]) {
        Some(v) if yes(&v)? => "http",
        _ => "https",
    };
    let path = url.path().trim_end_matches('/');
    let Some((sub, token)) = path.rsplit_once('/').filter(|(_, t)| !t.is_empty()) else {
        return Err("names no application token (gotify://host/<token>)".into());
    };
    Ok(Target::Http(Endpoint {
        service: Service::Gotify,
        base: format!("{scheme}://{host}"),
        public_api: false,
        path: Secret::new(format!("{sub}/message")),
        headers: vec![("x-gotify-key".into(), Secret::new(decoded(token)))],
        shown: format!("gotify://{host}/…"),
    }))
}

/// shoutrrr's `generic://` query: `@Name=value` is a header, its own settings
/// (`disabletls`, `template`, `contenttype`, …) and `$extra` data are not sent on, and
/// `_name` sends `name` (how it escapes a parameter that collides with a setting).
fn shoutrrr_generic_query(u: &mut url::Url) -> Vec<(String, Secret)> {
    const OWN: [&str; 7] = [
        "contenttype",
        "disabletls",
        "messagekey",
        "requestmethod",
        "template",
        "title",
        "titlekey",
    ];
    let mut headers = Vec::new();
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in u.query_pairs() {
        if let Some(name) = k.strip_prefix('@') {
            headers.push((name.to_ascii_lowercase(), Secret::new(v.into_owned())));
        } else if let Some(name) = k.strip_prefix('_') {
            kept.push((name.to_string(), v.into_owned()));
        } else if !k.starts_with('$') && !OWN.contains(&k.to_ascii_lowercase().as_str()) {
            kept.push((k.into_owned(), v.into_owned()));
        }
    }
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    headers
}

/// `generic+https://host/path` (the URL after `generic+`), or shoutrrr's
/// `generic://host/path[?disabletls=yes]` (https unless told).
fn generic(entry: &str, scheme: &str) -> Result<Target, String> {
    let (real, rest) = match scheme {
        "generic+https" => ("https", &entry["generic+https://".len()..]),
        "generic+http" => ("http", &entry["generic+http://".len()..]),
        _ => {
            let u = url(entry)?;
            let plain = matches!(query(&u, &["disabletls"]), Some(v) if yes(&v)?);
            (
                if plain { "http" } else { "https" },
                &entry["generic://".len()..],
            )
        }
    };
    let mut u = url(&format!("{real}://{rest}"))?;
    let mut headers = Vec::new();
    if scheme == "generic" {
        headers.extend(shoutrrr_generic_query(&mut u));
    }
    let host = host_port(&u)?;
    let path = &u[url::Position::BeforePath..];
    if !u.username().is_empty() {
        use base64::Engine;
        let pair = format!(
            "{}:{}",
            decoded(u.username()),
            decoded(u.password().unwrap_or_default())
        );
        let value = base64::engine::general_purpose::STANDARD.encode(pair);
        headers.push((
            "authorization".into(),
            Secret::new(format!("Basic {value}")),
        ));
    }
    Ok(Target::Http(Endpoint {
        service: Service::Generic,
        base: format!("{real}://{host}"),
        public_api: false,
        path: Secret::new(path.to_string()),
        headers,
        shown: format!("{real}://{}/…", u.host_str().unwrap_or_default()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Endpoint {
        match parse_list(&Secret::new(text.into())).unwrap().remove(0) {
            Target::Http(e) => e,
            Target::Mail(_) => panic!("mail"),
        }
    }

    fn url_of(e: &Endpoint) -> String {
        format!("{}{}", e.base, e.path.expose())
    }

    #[test]
    fn each_form_posts_where_the_service_expects() {
        let cases = [
            (
                "slack://hook:T0000AAAA-B0000BBBB-XXXXXXXXXXXXXXXXXXXXXXXX@webhook",
                "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX",
            ),
            (
                "slack://T00/B00/XXX",
                "https://hooks.slack.com/services/T00/B00/XXX",
            ),
            (
                "slack://mybot@T00/B00/XXX?color=good",
                "https://hooks.slack.com/services/T00/B00/XXX",
            ),
            (
                "discord://tok_en-1@693853386302554172",
                "https://discord.com/api/webhooks/693853386302554172/tok_en-1",
            ),
            (
                "teams://g1@t1/alt/owner?host=acme.webhook.office.com",
                "https://acme.webhook.office.com/webhookb2/g1@t1/IncomingWebhook/alt/owner",
            ),
            (
                "teams://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SIG",
                "https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SIG",
            ),
            (
                "telegram://110201543:AAHdqTcv@telegram?chats=@ops,-100123",
                "https://api.telegram.org/bot110201543:AAHdqTcv/sendMessage",
            ),
            ("ntfy://ntfy.sh/backups", "https://ntfy.sh/backups"),
            (
                "ntfy://u:p@127.0.0.1:8080/b?scheme=http",
                "http://127.0.0.1:8080/b",
            ),
            ("ntfys://example.org/t", "https://example.org/t"),
            (
                "gotify://gotify.example.com:8443/sub/AzyoeNS.D4iJLVa/?priority=1",
                "https://gotify.example.com:8443/sub/message",
            ),
            (
                "generic+http://127.0.0.1:9/hook/x?a=b",
                "http://127.0.0.1:9/hook/x?a=b",
            ),
            (
                "generic://example.com/in?disabletls=yes",
                "http://example.com/in",
            ),
            // shoutrrr's own settings stay here, `_name` escapes one, `@` is a header.
            (
                "generic://example.com/in?template=json&_template=t&k=v&@Authorization=Bearer%20S",
                "https://example.com/in?template=t&k=v",
            ),
        ];
        for (form, expected) in cases {
            assert_eq!(url_of(&one(form)), expected, "{form}");
        }
        let g = one("generic://example.com/in?@Authorization=Bearer%20S&@X-Token=t");
        let headers: Vec<(String, String)> = g
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization".to_string(), "Bearer S".to_string()),
                ("x-token".to_string(), "t".to_string())
            ]
        );
        let t = one("telegram://1:A@telegram?chats=@ops,-100123");
        assert_eq!(
            t.service,
            Service::Telegram {
                chats: vec!["@ops".into(), "-100123".into()]
            }
        );
        assert_eq!(one("gotify://h/sub/TOKEN").headers[0].1.expose(), "TOKEN");
        assert_eq!(
            one("ntfy://u:p@h/t").headers[0].1.expose(),
            "Basic dTpw",
            "basic auth"
        );
    }

    #[test]
    fn a_list_splits_on_spaces_and_on_commas_before_a_scheme() {
        let list = parse_list(&Secret::new(
            "slack://T00/B00/XXX, ntfy://h/t\ndiscord://t@1,smtp://h/?from=a@x&to=b@x,c@x".into(),
        ))
        .unwrap();
        assert_eq!(list.len(), 4, "{list:?}");
        match &list[3] {
            Target::Mail(m) => assert_eq!(m.to, ["b@x", "c@x"]),
            Target::Http(_) => panic!("not mail"),
        }
    }

    #[test]
    fn a_bad_entry_is_named_without_its_token() {
        for (bad, says) in [
            (
                "https://hooks.slack.com/services/SECRET",
                "unknown service https://",
            ),
            ("slack://SECRET", "three parts"),
            ("slack://xoxb:SECRET-SECRET-SECRET@C001", "bot-token"),
            ("discord://SECRET@notanid", "discord://token@webhookid"),
            ("telegram://1:SECRET@telegram", "names no chat"),
            ("teams://g@SECRET/only", "teams://group@tenant"),
            ("ntfy://h/?scheme=gopher&k=SECRET", "scheme="),
            ("gotify://h", "no application token"),
            ("bogus://SECRET", "unknown service bogus://"),
            ("SECRET", "is not a service URL"),
            ("smtp://u:SECRET@h:25/?to=a@x", "from="),
            ("discord://SE%20CRET@1", "percent-encode"),
        ] {
            let list = format!("ntfy://ok.example/t {bad}");
            let e = parse_list(&Secret::new(list)).unwrap_err().to_string();
            assert!(
                e.contains("NOTIFY_URLS") && e.contains("entry 2"),
                "{bad}: {e}"
            );
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("SECRET"), "{bad}: {e}");
        }
    }
}
