//! Notifications: NOTIFY_URL receives the JSON result (after failures, or always),
//! HEALTHCHECK_URL is pinged healthchecks.io-style per run, and per cycle under
//! `pg-backups-cycle`; a dead, failing or hanging endpoint never changes a run's outcome; the
//! URLs (tokens) never show in output or reach a child process. Against a small HTTP server
//! on loopback started by each test.

mod common;

use std::time::{Duration, Instant};

use common::http::{Answer, HttpServer};
use common::*;
use serde_json::Value;

const TOKEN: &str = "9c1f-secret-token";

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgb-notify-")
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
    ])
}

fn assert_no_token(run: &Run) {
    assert!(
        !run.stdout.contains(TOKEN),
        "token in stdout: {}",
        run.stdout
    );
    assert!(
        !run.stderr.contains(TOKEN),
        "token in stderr: {}",
        run.stderr
    );
}

#[test]
fn notify_url_gets_the_json_result_of_a_failed_run_only_unless_always() {
    let hook = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    let url = hook.url(&format!("/hook/{TOKEN}"));
    let mut e = no_server();
    e.push(("NOTIFY_URL".into(), url.clone()));

    let failed = pgb_run(&e, dir.path(), &["dump"]).expect(69);
    assert_no_token(&failed);
    let got = hook.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, format!("/hook/{TOKEN}"));
    let posted: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(posted, failed.json, "the same JSON result as stdout");

    // A successful run is not news by default…
    pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert_eq!(hook.requests().len(), 1);
    // …but is with NOTIFY_ON=always.
    let always = with(&e, "NOTIFY_ON", "always");
    let ok = pgb_run(&always, dir.path(), &["prune"]).expect(0);
    let got = hook.requests();
    assert_eq!(got.len(), 2);
    let posted: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(posted["command"], "prune");
    assert_eq!(posted["started_at"], ok.json["started_at"]);

    // Commands nobody schedules stay quiet.
    pgb_run(&always, dir.path(), &["list"]).expect(0);
    assert_eq!(hook.requests().len(), 2);

    // NOTIFY_URL_FILE (a Docker secret); both set is refused.
    let file = dir.path().join("notify_url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let mut from_file = without(&always, "NOTIFY_URL");
    from_file.push(("NOTIFY_URL_FILE".into(), file.to_str().unwrap().into()));
    pgb_run(&from_file, dir.path(), &["prune"]).expect(0);
    assert_eq!(hook.requests().len(), 3);
    let both = with(&from_file, "NOTIFY_URL", &url);
    let run = pgb_run(&both, dir.path(), &["prune"]).expect(64);
    assert_no_token(&run);
    assert!(
        run.message().contains("NOTIFY_URL_FILE"),
        "{}",
        run.message()
    );

    // A URL that is not http(s) is a setting error that does not echo the value.
    let bad = with(&always, "NOTIFY_URL", &format!("ftp://x/{TOKEN}"));
    let run = pgb_run(&bad, dir.path(), &["prune"]).expect(64);
    assert_no_token(&run);
    assert!(run.message().contains("NOTIFY_URL"), "{}", run.message());
}

#[test]
fn a_standalone_run_pings_start_then_success_or_fail() {
    let hc = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    let mut e = no_server();
    e.push(("HEALTHCHECK_URL".into(), hc.url(&format!("/ping/{TOKEN}"))));

    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert_no_token(&run);
    assert_eq!(
        hc.paths(),
        vec![format!("/ping/{TOKEN}/start"), format!("/ping/{TOKEN}")]
    );

    let failed = pgb_run(&e, dir.path(), &["dump"]).expect(69);
    let got = hc.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[2].path, format!("/ping/{TOKEN}/start"));
    assert_eq!(got[3].path, format!("/ping/{TOKEN}/fail"));
    let body: Value = serde_json::from_str(&got[3].body).unwrap();
    assert_eq!(body, failed.json, "the failure's JSON goes with the ping");

    // check and restore are not the backup's heartbeat.
    pgb_run(&e, dir.path(), &["check"]).expect(1);
    assert_eq!(hc.requests().len(), 4);

    // A setting that is wrong fails the run before any work: still a /fail.
    let broken = with(&e, "BACKUP_JOBS", "0");
    pgb_run(&broken, dir.path(), &["dump"]).expect(64);
    let paths = hc.paths();
    assert_eq!(paths.len(), 5);
    assert_eq!(paths[4], format!("/ping/{TOKEN}/fail"));

    // pg-backups ping, as the cycle uses it.
    let run = pgb_run(&e, dir.path(), &["ping", "fail", "74"]).expect(0);
    assert_eq!(run.json["sent"], true);
    let got = hc.requests();
    assert_eq!(got[5].path, format!("/ping/{TOKEN}/fail"));
    assert!(got[5].body.contains("74"));
    let unset = pgb_run(&no_server(), dir.path(), &["ping", "start"]).expect(0);
    assert_eq!(unset.json["sent"], false);
}

#[test]
fn the_cycle_pings_once_per_cycle_and_a_good_ship_after_a_bad_dump_stays_red() {
    let hc = HttpServer::start(Answer::Status(200));
    let dir = tmp();
    let ping = hc.url(&format!("/c/{TOKEN}"));

    // The dump fails, ship and prune have nothing to do and succeed: the cycle is red.
    let mut e = no_server();
    e.push(("HEALTHCHECK_URL".into(), ping.clone()));
    let (code, stdout, stderr) = run_cycle(&e, dir.path());
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert_eq!(
        hc.paths(),
        vec![format!("/c/{TOKEN}/start"), format!("/c/{TOKEN}/fail")],
        "per cycle, not per command"
    );
    assert!(hc.requests()[1].body.contains("69"));

    // A whole good cycle, with the URL in the env file the units use: /start, then the URL.
    let server = PgServer::start(15);
    let env_file = dir.path().join("pg-backups.env");
    std::fs::write(&env_file, format!("HEALTHCHECK_URL={ping}\n")).unwrap();
    let mut good = server.env();
    good.push((
        "PG_BACKUPS_ENV_FILE".into(),
        env_file.to_str().unwrap().into(),
    ));
    let (code, stdout, stderr) = run_cycle(&good, dir.path());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let paths = hc.paths();
    assert_eq!(
        paths[2..].to_vec(),
        vec![format!("/c/{TOKEN}/start"), format!("/c/{TOKEN}")]
    );
    // The JSON lines of the cycle are the commands', not the pings'.
    let commands: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["command"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(commands, ["dump", "ship", "prune"]);
}

#[test]
fn a_dead_failing_or_hanging_endpoint_never_fails_or_holds_up_the_run() {
    let dir = tmp();
    let quick = Duration::from_secs(3);

    // Nothing listens.
    let dead = env(&[
        (
            "NOTIFY_URL",
            &format!("http://127.0.0.1:{}/{TOKEN}", free_port()),
        ),
        (
            "HEALTHCHECK_URL",
            &format!("http://127.0.0.1:{}/{TOKEN}", free_port()),
        ),
        ("NOTIFY_ON", "always"),
    ]);
    let started = Instant::now();
    let run = pgb_run(&dead, dir.path(), &["prune"]).expect(0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_no_token(&run);
    assert!(
        run.stderr.contains("could not tell NOTIFY_URL"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("http://127.0.0.1:"),
        "the host is named: {}",
        run.stderr
    );

    // It answers 500: retried (3 attempts), then a warning; the exit code stands.
    let failing = HttpServer::start(Answer::Status(500));
    let e = env(&[
        ("NOTIFY_URL", &failing.url(&format!("/{TOKEN}"))),
        ("NOTIFY_ON", "always"),
    ]);
    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert_eq!(failing.requests().len(), 3);
    assert!(run.stderr.contains("answered HTTP 500"), "{}", run.stderr);
    let mut e = no_server();
    e.extend(env(&[("NOTIFY_URL", &failing.url(&format!("/{TOKEN}")))]));
    pgb_run(&e, dir.path(), &["dump"]).expect(69);

    // It accepts and never answers: bounded by NOTIFY_TIMEOUT per attempt.
    let hanging = HttpServer::start(Answer::Hang);
    let e = env(&[
        ("HEALTHCHECK_URL", &hanging.url(&format!("/{TOKEN}"))),
        ("NOTIFY_TIMEOUT", "1s"),
    ]);
    let started = Instant::now();
    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    let took = started.elapsed();
    // start + success, 3 attempts of 1 s and 1 + 2 s of backoff each at most.
    assert!(took < Duration::from_secs(16), "{took:?}");
    assert!(took > quick, "the timeout was waited for: {took:?}");
    assert!(run.stderr.contains("no answer within"), "{}", run.stderr);
    assert_no_token(&run);
}

#[test]
fn notification_urls_never_reach_a_child_process() {
    let server = PgServer::start(15);
    let dir = tmp();
    let hook = HttpServer::start(Answer::Status(200));
    let wrappers = dir.path().join("bin");
    let log = dir.path().join("children.log");
    logging_wrappers(
        &wrappers,
        &["pg_dump", "pg_dumpall", "psql"],
        Some(&server.bin()),
        &log,
    );
    let mut e = server.env();
    e.retain(|(k, _)| k != "PG_BIN_DIR");
    e.extend(env(&[
        ("PG_BIN_DIR", wrappers.to_str().unwrap()),
        ("NOTIFY_URL", &hook.url(&format!("/n/{TOKEN}"))),
        ("HEALTHCHECK_URL", &hook.url(&format!("/h/{TOKEN}"))),
        (
            "NOTIFY_URLS",
            &format!("generic+http://127.0.0.1:{}/u/{TOKEN}", hook.port),
        ),
        ("NOTIFY_ON", "always"),
    ]));
    let run = pgb_run(&e, &dir.path().join("b"), &["dump"]).expect(0);
    assert_no_token(&run);
    let children = std::fs::read_to_string(&log).unwrap();
    assert!(children.contains("== pg_dump"), "the wrappers ran");
    assert!(!children.contains(TOKEN), "a child saw a notification URL");
    assert_eq!(
        hook.requests().len(),
        4,
        "start, success, the result, the NOTIFY_URLS message"
    );
}
