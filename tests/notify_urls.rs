//! NOTIFY_URLS: each service of shoutrrr's URL forms gets the request it expects (path,
//! method, body shape, the token where the service looks for it), mail reaches an SMTP sink
//! with a subject that sorts, `NOTIFY_ON` is honoured, a dead, refusing or hanging service never
//! changes a run's exit code nor holds it beyond the bound, a bad entry is a usage error that
//! does not print its token, and the cycle script tells once per cycle. Against loopback
//! servers started by each test (`PG_BACKUPS_NOTIFY_API_BASE` points the chat services that
//! encode only tokens at them).

mod common;

use std::time::{Duration, Instant};

use common::http::{Answer, HttpServer, Request};
use common::smtp::{Mode, SmtpSink};
use common::*;
use serde_json::Value;

/// Letters and digits only: every service's token grammar takes it.
const TOK: &str = "Zq9secretTOKENx7";

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgb-notify-urls-")
        .tempdir()
        .unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A PostgreSQL address where nothing listens: a dump that fails (69).
fn no_server() -> Vec<(String, String)> {
    env(&[
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", &free_port().to_string()),
        ("PGPASSWORD", "x"),
        ("HOSTNAME", "db-prod-1"),
    ])
}

fn assert_no_token(what: &str, text: &str) {
    assert!(!text.contains(TOK), "token in {what}: {text}");
}

fn json(r: &Request) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn find<'a>(got: &'a [Request], prefix: &str) -> Vec<&'a Request> {
    got.iter().filter(|r| r.path.starts_with(prefix)).collect()
}

#[test]
fn each_chat_service_gets_its_own_request_with_the_token_in_its_place() {
    let hook = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    let host = format!("127.0.0.1:{}", hook.port);
    let urls = [
        format!("slack://hook:T0AAAAAAA-B0BBBBBBB-{TOK}@webhook"),
        format!("discord://{TOK}@693853386302554172"),
        format!("teams://example.invalid/workflows/w1/triggers/manual/paths/invoke?sig={TOK}"),
        format!("telegram://123456:{TOK}@telegram?chats=@ops,-100200:7"),
        format!("ntfy://alice:{TOK}@{host}/backups?scheme=http"),
        format!("gotify://{host}/sub/{TOK}?disabletls=yes"),
        format!("generic+http://{host}/generic/{TOK}"),
    ];
    let mut e = no_server();
    e.extend(env(&[
        ("NOTIFY_URLS", &urls.join(", ")),
        ("PG_BACKUPS_NOTIFY_API_BASE", &hook.url("")),
    ]));
    let run = pgb_run(&e, dir.path(), &["dump"]).expect(69);
    assert_no_token("stdout", &run.stdout);
    assert_no_token("stderr", &run.stderr);
    let got = hook.requests();
    assert_eq!(
        got.len(),
        8,
        "one per service, two telegram chats: {got:#?}"
    );
    assert!(got.iter().all(|r| r.method == "POST"));
    for r in &got {
        assert_no_token("a message body", &r.body);
    }

    let slack = find(&got, "/services/");
    assert_eq!(
        slack[0].path,
        format!("/services/T0AAAAAAA/B0BBBBBBB/{TOK}")
    );
    let s = json(slack[0]);
    assert_eq!(s["text"], "[pg-backups] FAILED dump on db-prod-1");
    assert_eq!(s["attachments"][0]["color"], "#d00000");
    let blocks = s["attachments"][0]["blocks"].to_string();
    assert!(
        blocks.contains("Host") && blocks.contains("db-prod-1"),
        "{blocks}"
    );
    assert!(blocks.contains("what to do"), "{blocks}");

    let discord = find(&got, "/api/webhooks/");
    assert_eq!(
        discord[0].path,
        format!("/api/webhooks/693853386302554172/{TOK}")
    );
    let d = json(discord[0]);
    assert_eq!(
        d["embeds"][0]["title"],
        "dump failed on db-prod-1 (exit 69)"
    );
    assert_eq!(d["embeds"][0]["color"], 0xD00000);
    assert!(d["embeds"][0]["fields"].as_array().unwrap().len() >= 3);

    let teams = find(&got, "/workflows/");
    assert!(
        teams[0].path.ends_with(&format!("?sig={TOK}")),
        "{}",
        teams[0].path
    );
    let t = json(teams[0]);
    assert_eq!(t["type"], "message");
    let card = &t["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["body"][1]["type"], "FactSet");

    let telegram = find(&got, "/bot");
    assert_eq!(telegram.len(), 2);
    assert!(
        telegram
            .iter()
            .all(|r| r.path == format!("/bot123456:{TOK}/sendMessage"))
    );
    let chats: Vec<Value> = telegram
        .iter()
        .map(|r| json(r)["chat_id"].clone())
        .collect();
    assert!(chats.contains(&Value::from("@ops")) && chats.contains(&Value::from("-100200")));
    let topic = telegram
        .iter()
        .map(|r| json(r))
        .find(|b| b["chat_id"] == "-100200");
    assert_eq!(topic.unwrap()["message_thread_id"], 7);
    assert_eq!(json(telegram[0])["parse_mode"], "HTML");

    let ntfy = find(&got, "/backups");
    assert_eq!(
        ntfy[0].header("title"),
        Some("[pg-backups] FAILED dump on db-prod-1")
    );
    let basic = ntfy[0].header("authorization").unwrap();
    assert!(basic.starts_with("Basic "), "{basic}");
    assert!(
        ntfy[0].body.contains("dump failed on db-prod-1"),
        "{}",
        ntfy[0].body
    );

    let gotify = find(&got, "/sub/message");
    assert_eq!(gotify[0].header("x-gotify-key"), Some(TOK));
    let g = json(gotify[0]);
    assert_eq!(g["title"], "[pg-backups] FAILED dump on db-prod-1");
    assert_eq!(g["priority"], 8);

    let generic = find(&got, "/generic/");
    assert_eq!(generic[0].path, format!("/generic/{TOK}"));
    assert_eq!(json(generic[0]), run.json, "generic gets our JSON result");
}

#[test]
fn notify_on_failure_is_quiet_after_success_and_always_tells() {
    let hook = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    let mut e = no_server();
    e.push((
        "NOTIFY_URLS".into(),
        format!("generic+http://127.0.0.1:{}/g/{TOK}", hook.port),
    ));
    pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert!(
        hook.requests().is_empty(),
        "NOTIFY_ON=failure: a success is not news"
    );

    let always = with(&e, "NOTIFY_ON", "always");
    let ok = pgb_run(&always, dir.path(), &["prune"]).expect(0);
    let got = hook.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(json(&got[0])["started_at"], ok.json["started_at"]);
    // Commands nobody schedules stay quiet.
    pgb_run(&always, dir.path(), &["list"]).expect(0);
    assert_eq!(hook.requests().len(), 1);

    // From a file (a Docker secret); both set is refused without the token.
    let file = dir.path().join("notify_urls");
    std::fs::write(
        &file,
        format!("generic+http://127.0.0.1:{}/f/{TOK}\n", hook.port),
    )
    .unwrap();
    let mut from_file = without(&always, "NOTIFY_URLS");
    from_file.push(("NOTIFY_URLS_FILE".into(), file.to_str().unwrap().into()));
    pgb_run(&from_file, dir.path(), &["prune"]).expect(0);
    assert_eq!(hook.paths().last().unwrap(), &format!("/f/{TOK}"));
    let both = with(&from_file, "NOTIFY_URLS", "ntfy://h/t");
    let run = pgb_run(&both, dir.path(), &["prune"]).expect(64);
    assert!(
        run.message().contains("NOTIFY_URLS_FILE"),
        "{}",
        run.message()
    );
}

#[test]
fn mail_reaches_the_sink_with_a_subject_that_sorts_and_auth() {
    let sink = SmtpSink::start(Mode::Accept);
    let dir = tmp();
    let mut e = no_server();
    e.push((
        "NOTIFY_URLS".into(),
        format!(
            "smtp://backup%40x.org:{TOK}@127.0.0.1:{}/?from=pgb@x.org&to=ops@x.org,dba@x.org&auth=Plain",
            sink.port
        ),
    ));
    let run = pgb_run(&e, dir.path(), &["dump"]).expect(69);
    assert_no_token("stdout", &run.stdout);
    assert_no_token("stderr", &run.stderr);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{}", run.stderr);
    let mail = &mails[0];
    assert_eq!(mail.from, "pgb@x.org");
    assert_eq!(mail.to, ["ops@x.org", "dba@x.org"]);
    assert_eq!(
        mail.auth.as_deref(),
        Some(format!("backup@x.org\0{TOK}").as_str())
    );
    assert!(
        mail.data
            .contains("Subject: [pg-backups] FAILED dump on db-prod-1"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("what to do:"), "{}", mail.data);
    assert!(mail.data.contains("Host: db-prod-1"), "{}", mail.data);

    let ok = with(&e, "NOTIFY_ON", "always");
    pgb_run(&ok, dir.path(), &["prune"]).expect(0);
    let mails = sink.mails();
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1]
            .data
            .contains("Subject: [pg-backups] OK prune on db-prod-1"),
        "{}",
        mails[1].data
    );
}

#[test]
fn a_dead_refusing_or_hanging_service_never_fails_or_holds_up_the_run() {
    let dir = tmp();
    let hanging = HttpServer::start(Answer::Hang);
    let mute_smtp = SmtpSink::start(Mode::Hang);
    let failing = HttpServer::start(Answer::Status(500));
    let urls = [
        format!("generic+http://127.0.0.1:{}/hang/{TOK}", hanging.port),
        format!(
            "smtp://u:{TOK}@127.0.0.1:{}/?from=a@x.org&to=b@x.org",
            mute_smtp.port
        ),
        format!("ntfy://127.0.0.1:{}/refused?scheme=http", free_port()),
        format!("discord://{TOK}@1"),
    ];
    let mut e = no_server();
    e.extend(env(&[
        ("NOTIFY_URLS", &urls.join(" ")),
        ("NOTIFY_TIMEOUT", "1s"),
        ("PG_BACKUPS_NOTIFY_API_BASE", &failing.url("")),
    ]));
    let started = Instant::now();
    let run = pgb_run(&e, dir.path(), &["dump"]).expect(69);
    let took = started.elapsed();
    // All at once, 2 attempts of 1 s and 1 s between them: about 3 s, whatever their number.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "the timeout was waited for: {took:?}"
    );
    assert_no_token("stdout", &run.stdout);
    assert_no_token("stderr", &run.stderr);
    for shown in [
        "http://127.0.0.1/…",
        "smtp://127.0.0.1:",
        "ntfy://127.0.0.1:",
        "discord://discord.com/…",
    ] {
        assert!(
            run.stderr.contains(&format!("could not tell {shown}")),
            "{shown}: {}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("answered HTTP 500"), "{}", run.stderr);
    assert_eq!(failing.requests().len(), 2, "a 500 is retried once");
}

#[test]
fn a_bad_entry_is_a_usage_error_that_names_it_without_its_token() {
    let dir = tmp();
    for bad in [
        format!("https://hooks.slack.com/services/{TOK}"),
        format!("slack://xoxb:{TOK}-{TOK}-{TOK}@C001"),
        format!("telegram://1:{TOK}@telegram"),
        format!("bogus://{TOK}@host"),
        format!("smtp://u:{TOK}@h/?to=a@x.org"),
    ] {
        let e = env(&[("NOTIFY_URLS", &format!("ntfy://ok.example/t,{bad}"))]);
        let run = pgb_run(&e, dir.path(), &["dump"]).expect(64);
        assert_no_token("stdout", &run.stdout);
        assert_no_token("stderr", &run.stderr);
        let message = run.message();
        assert!(
            message.contains("NOTIFY_URLS") && message.contains("entry 2"),
            "{bad}: {message}"
        );
        assert!(run.stderr.contains("NOTIFY_URLS"), "{}", run.stderr);
    }
}

/// A typo in one chat URL refuses the run (64), but the healthcheck and `NOTIFY_URL`, set
/// right, still hear of that failure: a wrong entry never silences every channel.
#[test]
fn a_bad_entry_still_lets_the_healthcheck_and_notify_url_report_the_refusal() {
    let dir = tmp();
    let listener = HttpServer::start(Answer::Status(200));
    let e = env(&[
        ("NOTIFY_URLS", &format!("discord://{TOK}")),
        ("HEALTHCHECK_URL", &listener.url("/hc")),
        ("NOTIFY_URL", &listener.url("/notify-url")),
    ]);
    let run = pgb_run(&e, dir.path(), &["dump"]).expect(64);
    assert!(run.message().contains("NOTIFY_URLS"), "{}", run.stdout);
    assert_no_token("stdout", &run.stdout);
    let paths = listener.paths();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/hc/fail") || p.starts_with("/hc/64")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/notify-url"), "{paths:?}");
}

#[test]
fn the_cycle_tells_once_per_cycle_about_every_step() {
    let hook = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    // In the env file the units use, as a secret it stays out of the environment.
    let env_file = dir.path().join("pg-backups.env");
    std::fs::write(
        &env_file,
        format!(
            "NOTIFY_URLS=generic+http://127.0.0.1:{}/c/{TOK} discord://{TOK}@42\n\
             PG_BACKUPS_NOTIFY_API_BASE={}\n",
            hook.port,
            hook.url("")
        ),
    )
    .unwrap();
    let mut e = no_server();
    e.push((
        "PG_BACKUPS_ENV_FILE".into(),
        env_file.to_str().unwrap().into(),
    ));
    let (code, stdout, stderr) = run_cycle(&e, &dir.path().join("b"));
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    assert_no_token("stdout", &stdout);
    assert_no_token("stderr", &stderr);
    let got = hook.requests();
    assert_eq!(got.len(), 2, "one message per service per cycle: {got:#?}");
    let generic = json(find(&got, "/c/")[0]);
    assert_eq!(generic["command"], "cycle");
    assert_eq!(generic["exit_code"], 69);
    let steps: Vec<&str> = generic["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["dump", "ship", "prune"]);
    let discord = json(find(&got, "/api/webhooks/42/")[0]);
    assert_eq!(
        discord["embeds"][0]["title"],
        "cycle failed on db-prod-1 (exit 69)"
    );

    // A good cycle is not news by default: nothing more is sent.
    let server = PgServer::start(15);
    let mut good = server.env();
    good.push(("HOSTNAME".into(), "db-prod-1".into()));
    good.push((
        "PG_BACKUPS_ENV_FILE".into(),
        env_file.to_str().unwrap().into(),
    ));
    let (code, stdout, stderr) = run_cycle(&good, &dir.path().join("b"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(hook.requests().len(), 2);
    // With NOTIFY_ON=always, one OK message with the folder.
    good.push(("NOTIFY_ON".into(), "always".into()));
    let (code, stdout, stderr) = run_cycle(&good, &dir.path().join("b"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let got = hook.requests();
    assert_eq!(got.len(), 4, "{got:#?}");
    let discord = json(find(&got[2..], "/api/webhooks/42/")[0]);
    assert_eq!(discord["embeds"][0]["title"], "cycle ok on db-prod-1");
    let fields = discord["embeds"][0]["fields"].to_string();
    assert!(fields.contains("Folder"), "{fields}");
}
