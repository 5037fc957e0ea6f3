//! For people and for the ecosystem: text results and short messages for a person at a
//! terminal (the JSON line stays for schedulers), per-command help, honest sizes, the
//! conventions users bring from libpq and the AWS tools, and one-line S3 errors.

mod common;

use std::path::Path;

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::*;
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pgb-people-")
        .tempdir()
        .unwrap()
}

/// A run whose stdout may be text: code, stdout, stderr.
fn raw(envs: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = pgb(envs).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Three complete folders of different sizes, 3, 2 and 1 days old.
fn three_folders(root: &Path) -> Vec<String> {
    let names: Vec<String> = [72, 48, 24].iter().map(|h| folder_hours_ago(*h)).collect();
    for (i, name) in names.iter().enumerate() {
        make_folder(
            root,
            name,
            &[
                ("postgres_globals.sql.gz", 300),
                ("postgres_db_app.sql.gz", 200_000 * (i + 1)),
            ],
        );
    }
    names
}

#[test]
fn bare_pg_backups_prints_the_short_usage_on_stderr_and_exits_64() {
    let (code, stdout, stderr) = raw(&[], &[]);
    assert_eq!(code, 64);
    assert!(stderr.starts_with("Usage: pg-backups"), "{stderr}");
    assert!(stderr.contains("dump, ship, prune"), "{stderr}");
    assert!(
        stderr.len() < 600,
        "the short usage, not the help: {stderr}"
    );
    // Not a terminal: the scheduler still gets one short JSON line.
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
    assert!(
        v["error"]["message"].as_str().unwrap().len() < 120,
        "{stdout}"
    );
    // Asked for text (a person): stderr only.
    let (code, stdout, _) = raw(&[], &["--output", "text"]);
    assert_eq!((code, stdout.as_str()), (64, ""));
}

#[test]
fn usage_and_setting_errors_are_one_human_line_on_stderr_with_clap_tips() {
    let (code, stdout, stderr) = raw(&[], &["dump", "--bakup-dir", "/x"]);
    assert_eq!(code, 64);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--bakup-dir") && stderr.contains("'--backup-dir'"),
        "{stderr}"
    );
    assert!(stderr.contains("pg-backups dump --help"), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--backup-dir")
    );

    let (code, _, stderr) = raw(&[], &["dupm"]);
    assert_eq!(code, 64);
    assert!(stderr.contains("'dump'"), "did you mean: {stderr}");

    let (code, stdout, stderr) = raw(
        &env(&[("BACKUP_JOBS", "many")]),
        &["--output", "text", "list"],
    );
    assert_eq!(code, 64);
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pg-backups list: BACKUP_JOBS=many"),
        "{stderr}"
    );

    // Found by the command rather than before it: the same one line.
    let (code, _, stderr) = raw(&[], &["check", "--max-age", "26"]);
    assert_eq!(code, 64);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pg-backups check: --max-age=26: expected a duration with a unit"),
        "{stderr}"
    );
}

#[test]
fn each_command_help_shows_its_own_options_and_names_its_settings() {
    let help = |args: &[&str]| {
        let (code, stdout, _) = raw(&[], args);
        assert_eq!(code, 0, "{args:?}");
        stdout
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("--s3-bucket") && top.contains("[env: S3_BUCKET"),
        "{top}"
    );
    let words = top.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("multiple of 1 MiB, at least 16 MiB") && !words.contains("8 MiB steps"),
        "S3_PART_SIZE help"
    );
    for (command, own, reads) in [
        ("dump", "--env-file", "BACKUP_COMPRESSION"),
        ("prune", "--dry-run", "S3_RETENTION_DAYS"),
        ("list", "--source", "RSYNC_HOST"),
        ("check", "--max-age", "BACKUP_SCHEDULE"),
        ("verify", "--restore-test", "AGE_IDENTITY_FILE"),
        ("restore", "--target-database", "RESTORE_"),
        ("ping", "<SIGNAL>", "HEALTHCHECK_URL"),
        ("notify", "<CODE>", "NOTIFY_URLS"),
    ] {
        let text = help(&[command, "--help"]);
        assert!(
            text.lines().count() < 45,
            "{command} --help is {} lines:\n{text}",
            text.lines().count()
        );
        assert!(text.contains(own), "{command} --help lacks {own}:\n{text}");
        assert!(
            text.contains(reads),
            "{command} --help does not name {reads}:\n{text}"
        );
        assert!(
            !text.contains("--s3-bucket"),
            "{command} --help repeats the settings:\n{text}"
        );
    }
}

#[test]
fn settings_are_still_accepted_after_the_command_word() {
    let dir = tmp();
    let missing = dir.path().join("nothing-here");
    let run = run({
        let mut cmd = pgb(&[]);
        cmd.args(["list", "--backup-dir"]).arg(&missing);
        cmd
    });
    let run = run.expect(66);
    assert!(run.message().contains("nothing-here"), "{}", run.message());
}

#[test]
fn list_check_and_prune_are_tables_for_a_person_and_json_for_a_pipe() {
    let dir = tmp();
    let names = three_folders(dir.path());
    let e = env(&[("LOCAL_RETENTION_DAYS", "1"), ("LOCAL_KEEP_LAST", "1")]);
    let e = with(&e, "BACKUP_DIR", dir.path().to_str().unwrap());

    let (code, text, _) = raw(&e, &["list", "--output", "text"]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains('{'), "text, not JSON:\n{text}");
    assert!(
        text.contains("FOLDER") && text.contains("STATUS") && text.contains("AGE"),
        "{text}"
    );
    for name in &names {
        assert!(text.contains(name.as_str()), "{text}");
    }
    assert!(
        text.contains(" KiB") && text.contains("1.1 MiB"),
        "human sizes: {text}"
    );
    assert!(
        text.contains("1d") && text.contains("3d"),
        "human ages: {text}"
    );
    assert!(text.contains("app"), "databases: {text}");

    let (code, text, _) = raw(&e, &["check", "--max-age", "2d", "--output", "text"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("fresh") && text.contains(names[2].as_str()),
        "{text}"
    );
    let (code, text, _) = raw(&e, &["check", "--max-age", "2h", "--output", "text"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("stale"), "{text}");

    let (code, text, _) = raw(&e, &["prune", "--dry-run", "--output", "text"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("delete") && text.contains("keep") && text.contains("WHY"),
        "{text}"
    );
    assert!(
        text.contains("would be freed") && text.contains("nothing was deleted"),
        "{text}"
    );
    assert!(
        text.contains("older than 1 day") && !text.contains("1 days"),
        "{text}"
    );

    // --json (and a pipe by default) keeps the one JSON line.
    let run = pgb_run(&e, dir.path(), &["list", "--json"]).expect(0);
    assert_eq!(
        run.json["sources"][0]["folders"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn prune_dry_run_sizes_agree_with_list() {
    let dir = tmp();
    three_folders(dir.path());
    let e = env(&[("LOCAL_RETENTION_DAYS", "1"), ("LOCAL_KEEP_LAST", "1")]);
    let list = pgb_run(&e, dir.path(), &["list"]).expect(0);
    let listed: std::collections::BTreeMap<String, u64> = list.json["sources"][0]["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["folder"].as_str().unwrap().to_string(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let plan = pgb_run(&e, dir.path(), &["prune", "--dry-run"]).expect(0);
    let d = &plan.json["destinations"][0];
    let mut seen = 0;
    let mut would_free = 0;
    for item in d["would_delete"].as_array().unwrap() {
        let name = item["folder"].as_str().unwrap();
        assert_eq!(item["bytes"].as_u64(), listed.get(name).copied(), "{name}");
        would_free += item["bytes"].as_u64().unwrap();
        seen += 1;
    }
    for item in d["kept"].as_array().unwrap() {
        let name = item["folder"].as_str().unwrap();
        assert_eq!(item["bytes"].as_u64(), listed.get(name).copied(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 3);
    assert_eq!(d["would_free"].as_u64(), Some(would_free));
    assert!(would_free > 0);
    // The deletion frees what the plan said.
    let done = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert_eq!(
        done.json["destinations"][0]["bytes_freed"].as_u64(),
        Some(would_free)
    );
}

#[test]
fn an_unset_pghost_whose_default_does_not_resolve_says_what_to_set() {
    use std::net::ToSocketAddrs;
    assert!(
        ("postgres-primary", 5432).to_socket_addrs().is_err(),
        "this test needs a machine where postgres-primary does not resolve"
    );
    let dir = tmp();
    let run = pgb_run(&[], dir.path(), &["dump"]).expect(69);
    assert!(
        run.message().contains(
            "PGHOST is not set and the default host postgres-primary does not resolve: set \
             PGHOST (a host name, or /var/run/postgresql for the local socket)"
        ),
        "{}",
        run.message()
    );
    // Set on purpose: the server's own message, not a claim that PGHOST is unset.
    let run = pgb_run(
        &env(&[("PGHOST", "postgres-primary")]),
        dir.path(),
        &["dump"],
    )
    .expect(69);
    assert!(
        !run.message().contains("PGHOST is not set"),
        "{}",
        run.message()
    );
    assert!(
        run.message().contains("could not translate host name"),
        "{}",
        run.message()
    );
}

#[test]
fn s3_errors_are_one_line_with_the_cause() {
    let s3 = S3Server::start();
    s3.create_bucket("pgb");
    let dir = tmp();
    let base = s3.env("pgb", "");

    let refused = with(&base, "S3_ENDPOINT", "http://127.0.0.1:1");
    let run = pgb_run(&refused, dir.path(), &["list", "--source", "s3"]).expect(69);
    let m = run.message();
    assert!(
        m.contains("connection refused at http://127.0.0.1:1"),
        "{m}"
    );
    for noise in ["DispatchFailure", "ConnectorError", "source:", "{"] {
        assert!(!m.contains(noise), "{noise} in {m}");
    }

    let no_bucket = with(&base, "S3_BUCKET", "nosuchbucket");
    let m = pgb_run(&no_bucket, dir.path(), &["list", "--source", "s3"])
        .expect(66)
        .message();
    assert!(m.contains("bucket nosuchbucket does not exist"), "{m}");

    let wrong = with(
        &with(&base, "S3_ACCESS_KEY", "AKIAWRONGKEY0000"),
        "S3_SECRET_KEY",
        "nope",
    );
    let m = pgb_run(&wrong, dir.path(), &["list", "--source", "s3"])
        .expect(77)
        .message();
    assert!(m.contains("access denied for key AKIA…"), "{m}");
    assert!(
        !m.contains("AKIAWRONGKEY0000") && !m.contains("nope"),
        "{m}"
    );
}

/// The AWS tools' variables, as users bring them, against SeaweedFS (whose identities
/// check the keys); a relay in front of it shows the region the requests were signed for.
#[test]
fn aws_variables_work_when_ours_are_unset() {
    let s3 = S3Server::start();
    s3.create_bucket("pgb");
    let proxy = CaptureProxy::start(s3.s3_port());
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let dir = tmp();
    make_folder(
        dir.path(),
        &folder_hours_ago(1),
        &[("postgres_globals.sql.gz", 1000)],
    );
    let aws = |extra: &[(&str, &str)]| {
        let mut e = env(&[
            ("S3_ENABLED", "true"),
            ("S3_BUCKET", "pgb"),
            ("S3_FORCE_PATH_STYLE", "true"),
        ]);
        e.extend(env(extra));
        e
    };

    // AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION.
    let e = aws(&[
        ("AWS_ENDPOINT_URL_S3", &via_proxy),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "eu-west-3"),
        ("S3_PREFIX", "a"),
    ]);
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    assert!(
        proxy.text().contains("/eu-west-3/s3/aws4_request"),
        "AWS_REGION was not used"
    );
    assert_eq!(s3.keys("pgb", "a/").len(), 2);

    // AWS_ENDPOINT_URL and AWS_DEFAULT_REGION.
    let e = aws(&[
        ("AWS_ENDPOINT_URL", &via_proxy),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_DEFAULT_REGION", "ap-south-1"),
        ("S3_PREFIX", "b"),
    ]);
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    assert!(proxy.text().contains("/ap-south-1/s3/aws4_request"));
    assert_eq!(s3.keys("pgb", "b/").len(), 2);

    // Ours win over theirs.
    let e = aws(&[
        ("S3_ENDPOINT", &s3.endpoint()),
        ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1"),
        ("S3_ACCESS_KEY", ACCESS_KEY),
        ("S3_SECRET_KEY", SECRET_KEY),
        ("AWS_ACCESS_KEY_ID", "AKIAIGNORED"),
        ("AWS_SECRET_ACCESS_KEY", "ignored"),
        ("S3_PREFIX", "c"),
    ]);
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    assert_eq!(s3.keys("pgb", "c/").len(), 2);

    // AWS_PROFILE from the shared files, through the SDK's chain (no keys in the environment).
    let aws_dir = dir.path().join("aws");
    std::fs::create_dir_all(&aws_dir).unwrap();
    std::fs::write(
        aws_dir.join("credentials"),
        format!(
            "[backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        aws_dir.join("config"),
        "[profile backup]\nregion = eu-north-1\n",
    )
    .unwrap();
    let creds = aws_dir.join("credentials");
    let config = aws_dir.join("config");
    let e = aws(&[
        ("AWS_ENDPOINT_URL_S3", &via_proxy),
        ("AWS_PROFILE", "backup"),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_REGION", "eu-north-1"),
        ("S3_PREFIX", "d"),
    ]);
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    assert_eq!(s3.keys("pgb", "d/").len(), 2);
    // A profile whose key SeaweedFS does not know is refused (77), in one line.
    std::fs::write(
        &creds,
        "[backup]\naws_access_key_id = AKIAUNKNOWN00000\naws_secret_access_key = x\n",
    )
    .unwrap();
    let e = with(&e, "S3_PREFIX", "e");
    let m = pgb_run(&e, dir.path(), &["ship"]).expect(77).message();
    assert!(
        m.contains("access denied for the key of the SDK's chain"),
        "{m}"
    );
}

/// Web identity (Kubernetes service-account tokens, GitHub OIDC) through the SDK's chain.
/// SeaweedFS has no STS to trade the token for keys, so this case runs against moto_server,
/// which serves both STS and S3; a relay in front of it shows the token was sent.
#[test]
fn a_web_identity_token_is_traded_for_keys_through_sts() {
    let port = free_port();
    let mut moto = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server is not installed: run scripts/test.sh (pip install 'moto[server]')");
    wait_for(30, "moto_server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let proxy = CaptureProxy::start(port);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    // The bucket, made with any key (moto accepts all).
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + '/pgb', method='PUT'))",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp();
    make_folder(
        dir.path(),
        &folder_hours_ago(1),
        &[("postgres_globals.sql.gz", 1000)],
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJ-the-service-account-token").unwrap();
    let e = env(&[
        ("S3_ENABLED", "true"),
        ("S3_BUCKET", "pgb"),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pg-backups"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_ROLE_SESSION_NAME", "pg-backups-test"),
    ]);
    let run = pgb_run(&e, dir.path(), &["ship"]);
    let _ = moto.kill();
    let _ = moto.wait();
    let seen = proxy.text();
    let run = run.expect(0);
    assert_eq!(run.json["destinations"][0]["shipped"], 1);
    assert!(
        seen.contains("AssumeRoleWithWebIdentity"),
        "STS was not asked:\n{seen}"
    );
    assert!(
        seen.contains("eyJ-the-service-account-token"),
        "the token was not sent"
    );
}

/// On a real terminal (a pseudo-terminal from util-linux `script`), the result is text by
/// default and the step-by-step logs stay out of the way; `--json` still gives the line.
#[test]
fn on_a_terminal_the_result_is_text_by_default() {
    let dir = tmp();
    three_folders(dir.path());
    let bin = env!("CARGO_BIN_EXE_pg-backups");
    let at_terminal = |args: &str| {
        let out = std::process::Command::new("script")
            .args(["-q", "-e", "-c", &format!("{bin} {args}"), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BACKUP_DIR", dir.path())
            .env("TERM", "dumb")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) is not installed: run scripts/test.sh");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        )
    };
    let (code, text) = at_terminal("list");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("FOLDER") && !text.contains("\"command\""),
        "{text}"
    );
    let (code, text) = at_terminal("prune --dry-run");
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains(" INFO "), "info logs on a terminal: {text}");
    let (code, text) = at_terminal("list --json");
    assert_eq!(code, 0);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["command"], "list");
}
