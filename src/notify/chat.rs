//! The request each HTTP service of `NOTIFY_URLS` takes, in its own formatting: Slack blocks
//! (mrkdwn), a Discord embed with a colour, a Teams Adaptive Card (Workflows) or MessageCard
//! (the old connector), Telegram HTML, ntfy and gotify text, and our JSON for `generic`.
//! Pure: the requests are built here and sent by `http.rs`.

use serde_json::{Value, json};

use super::http::Post;
use super::message::{Message, cut};
use crate::config::notify_urls::{Endpoint, Service};

const RED: u32 = 0xD0_00_00;
const GREEN: u32 = 0x2E_B6_7D;

/// The requests for one endpoint (Telegram: one per chat). `api_base` (test only) replaces
/// the public API of Slack, Discord, Telegram and Teams.
pub(super) fn requests(e: &Endpoint, m: &Message, api_base: Option<&str>) -> Vec<Post> {
    let base = match api_base {
        Some(b) if e.public_api => b,
        _ => e.base.as_str(),
    };
    let url = format!("{base}{}", e.path.expose());
    let headers: Vec<(String, String)> = e
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect();
    let post = |content_type, body: String| Post {
        url: url.clone(),
        shown: e.shown.clone(),
        content_type,
        headers: headers.clone(),
        body,
    };
    const JSON: &str = "application/json";
    match &e.service {
        Service::Slack => vec![post(JSON, slack(m).to_string())],
        Service::Discord => vec![post(JSON, discord(m).to_string())],
        Service::TeamsWorkflow => vec![post(JSON, teams_card(m).to_string())],
        Service::TeamsConnector => vec![post(JSON, teams_message_card(m).to_string())],
        Service::Telegram { chats } => chats
            .iter()
            .map(|chat| post(JSON, telegram(m, chat).to_string()))
            .collect(),
        Service::Ntfy => {
            let mut p = post("text/plain; charset=utf-8", m.plain());
            p.headers.push(("title".into(), ascii(&m.subject)));
            p.headers.push((
                "tags".into(),
                if m.failed {
                    "rotating_light"
                } else {
                    "white_check_mark"
                }
                .into(),
            ));
            p.headers
                .push(("priority".into(), if m.failed { "4" } else { "3" }.into()));
            vec![p]
        }
        Service::Gotify => vec![post(JSON, gotify(m).to_string())],
        Service::Generic => vec![post(JSON, m.json.clone())],
    }
}

/// Slack: a coloured attachment holding blocks; `text` is the notification's preview.
fn slack(m: &Message) -> Value {
    let fields: Vec<Value> = m
        .facts
        .iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(v))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", slack_escape(&m.headline))}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(text) = problem(m) {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&text)}}),
        );
    }
    if !m.details.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("```{}```", slack_escape(&cut(&m.details, 2900)))}}));
    }
    json!({
        "text": m.subject,
        "attachments": [{"color": format!("#{:06x}", colour(m)), "blocks": blocks}],
    })
}

/// Discord: one embed, red or green.
fn discord(m: &Message) -> Value {
    let fields: Vec<Value> = m
        .facts
        .iter()
        .map(|(k, v)| json!({"name": k, "value": md_escape(&cut(v, 900)), "inline": true}))
        .collect();
    let mut description = problem(m)
        .map(|p| format!("{}\n", md_escape(&p)))
        .unwrap_or_default();
    if !m.details.is_empty() {
        description.push_str(&format!("```\n{}\n```", code_text(&cut(&m.details, 2800))));
    }
    json!({
        "username": "pg-backups",
        // Names and error text come from the server: they never ping anyone.
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": cut(&m.headline, 250),
            "description": description,
            "color": colour(m),
            "fields": fields,
            "footer": {"text": concat!("pg-backups ", env!("CARGO_PKG_VERSION"))},
        }],
    })
}

/// Teams Workflows: an Adaptive Card in a message.
fn teams_card(m: &Message) -> Value {
    let facts: Vec<Value> = m
        .facts
        .iter()
        .map(|(k, v)| json!({"title": k, "value": md_escape(v)}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": md_escape(&m.headline), "weight": "Bolder", "size": "Medium",
               "wrap": true, "color": if m.failed { "Attention" } else { "Good" }}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if let Some(text) = problem(m) {
        body.push(json!({"type": "TextBlock", "text": md_escape(&text), "wrap": true}));
    }
    if !m.details.is_empty() {
        body.push(
            json!({"type": "TextBlock", "text": md_escape(&m.details), "wrap": true,
                         "fontType": "Monospace", "size": "Small"}),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    })
}

/// The Office 365 connector (shoutrrr's `teams://group@tenant/…`): a MessageCard.
fn teams_message_card(m: &Message) -> Value {
    let facts: Vec<Value> = m
        .facts
        .iter()
        .map(|(k, v)| json!({"name": k, "value": md_escape(&html_escape(v))}))
        .collect();
    let mut text = problem(m)
        .map(|p| md_escape(&html_escape(&p)))
        .unwrap_or_default();
    if !m.details.is_empty() {
        text.push_str(&format!("\n\n<pre>{}</pre>", html_escape(&m.details)));
    }
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": format!("{:06X}", colour(m)),
        "summary": m.subject,
        "title": md_escape(&html_escape(&m.headline)),
        "sections": [{"facts": facts, "text": text}],
    })
}

/// Telegram: HTML; a chat `id:thread` posts into a topic (shoutrrr's form).
fn telegram(m: &Message, chat: &str) -> Value {
    let mut text = format!("<b>{}</b>\n", html_escape(&m.headline));
    for (k, v) in &m.facts {
        text.push_str(&format!("{k}: {}\n", html_escape(v)));
    }
    if let Some(p) = problem(m) {
        text.push_str(&format!("\n{}\n", html_escape(&p)));
    }
    if !m.details.is_empty() {
        text.push_str(&format!(
            "\n<pre>{}</pre>",
            html_escape(&cut(&m.details, 2500))
        ));
    }
    let mut body = json!({"text": text, "parse_mode": "HTML", "disable_web_page_preview": true});
    match chat.rsplit_once(':') {
        Some((id, thread)) if thread.parse::<i64>().is_ok() => {
            body["chat_id"] = json!(id);
            body["message_thread_id"] = json!(thread.parse::<i64>().unwrap_or_default());
        }
        _ => body["chat_id"] = json!(chat),
    }
    body
}

fn gotify(m: &Message) -> Value {
    json!({
        "title": m.subject,
        "message": m.plain(),
        "priority": if m.failed { 8 } else { 4 },
        "extras": {"client::display": {"contentType": "text/plain"}},
    })
}

/// The error and what to do, when there are.
fn problem(m: &Message) -> Option<String> {
    let mut text = String::new();
    if let Some(e) = &m.error {
        text.push_str(&format!("error: {e}"));
    }
    if let Some(h) = &m.hint {
        text.push_str(&format!("\nwhat to do: {h}"));
    }
    // Kept short: Slack sections hold 3000 characters, Discord descriptions 4096.
    (!text.is_empty()).then(|| cut(text.trim_start(), 1000))
}

fn colour(m: &Message) -> u32 {
    if m.failed { RED } else { GREEN }
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown (Discord, Teams) shows text from the server as it is: every character that
/// could start a link, emphasis, a heading, a quote or a code span is escaped.
fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '~'
                | '`'
                | '|'
                | '>'
                | '<'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '-'
                | '+'
                | '!'
                | '@'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Text inside a code block cannot be escaped: a backtick could close the block, so it
/// becomes a look-alike.
fn code_text(text: &str) -> String {
    text.replace('`', "\u{02cb}")
}

fn html_escape(text: &str) -> String {
    slack_escape(text).replace('"', "&quot;")
}

/// HTTP headers are ASCII: anything else becomes `?`.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notify_urls::{Target, parse_list};
    use crate::secret::Secret;

    fn endpoint(url: &str) -> Endpoint {
        match parse_list(&Secret::new(url.into())).unwrap().remove(0) {
            Target::Http(e) => e,
            Target::Mail(_) => panic!("mail"),
        }
    }

    fn failed() -> Message {
        Message::of_run(
            "db-1",
            &json!({"command": "dump", "status": "failed", "exit_code": 69,
                    "error": {"message": "cannot reach PostgreSQL <db>"}}),
        )
    }

    /// A database name is data: in Discord and Teams it never becomes a link, a mention,
    /// emphasis, or the end of the details' code block.
    #[test]
    fn names_from_the_server_carry_no_markup_into_chat_messages() {
        let name = "x\n@everyone [Restore here](https://evil.example/p) ```";
        let m = Message::of_run(
            "db-1",
            &json!({"command": "dump", "status": "failed", "exit_code": 65,
                    "error": {"message": format!("database \"{name}\" failed")}}),
        );
        let body = |url: &str| -> Value {
            serde_json::from_str(&requests(&endpoint(url), &m, None)[0].body).unwrap()
        };
        let d = body("discord://t@1");
        assert_eq!(d["allowed_mentions"]["parse"], json!([]));
        let description = d["embeds"][0]["description"].as_str().unwrap();
        assert!(!description.contains("[Restore here]("), "{description}");
        assert!(
            description.contains("\\[Restore here\\]\\("),
            "{description}"
        );
        let inside = description.split("```").count();
        assert!(inside <= 3, "only the details' own fences: {description}");
        for url in [
            "teams://h.example/workflows/x?sig=1",
            "teams://g@t/a/o?host=h.example",
        ] {
            let t = body(url).to_string();
            assert!(!t.contains("[Restore here]("), "{t}");
        }
    }

    #[test]
    fn the_test_base_replaces_only_public_apis() {
        let slack = endpoint("slack://T00/B00/XXX");
        let posts = requests(&slack, &failed(), Some("http://127.0.0.1:9"));
        assert_eq!(posts[0].url, "http://127.0.0.1:9/services/T00/B00/XXX");
        let ntfy = endpoint("ntfy://n.example/t");
        let posts = requests(&ntfy, &failed(), Some("http://127.0.0.1:9"));
        assert_eq!(posts[0].url, "https://n.example/t");
    }

    #[test]
    fn each_service_gets_its_own_shape() {
        let m = failed();
        let body = |url: &str| -> Value {
            serde_json::from_str(&requests(&endpoint(url), &m, None)[0].body).unwrap()
        };
        let s = body("slack://T00/B00/XXX");
        assert_eq!(s["attachments"][0]["color"], "#d00000");
        assert!(
            s["text"]
                .as_str()
                .unwrap()
                .starts_with("[pg-backups] FAILED")
        );
        assert!(s.to_string().contains("&lt;db&gt;"), "escaped: {s}");
        let d = body("discord://t@1");
        assert_eq!(d["embeds"][0]["color"], RED);
        let t = body("teams://h.example/workflows/x?sig=1");
        assert_eq!(t["attachments"][0]["content"]["type"], "AdaptiveCard");
        let g = body("telegram://1:A@telegram?chats=-100:7");
        assert_eq!(g["chat_id"], "-100");
        assert_eq!(g["message_thread_id"], 7);
        assert_eq!(g["parse_mode"], "HTML");
    }
}
