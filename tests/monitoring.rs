//! Monitoring as shipped: the Prometheus alerting rules (`deploy/prometheus`), the same rules as a
//! PrometheusRule (`k8s/`, the Helm chart) and the Grafana dashboard (`deploy/grafana`), held
//! against the METRICS_FILE that real runs write: dump, ship (S3 and remote), prune, a restore
//! drill and check against real PostgreSQL, SeaweedFS and sshd.
//!
//! The rules are checked and unit-tested by `promtool`, Debian's (package `prometheus` 2.42,
//! /usr/bin/promtool): the issue asked for promtool built from the Go module proxy, which cannot
//! be reached where the tests run; Debian's is the same tool, and `scripts/install-deps.sh`
//! installs it (without starting the package's Prometheus service).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;
use serde_json::{Value, json};

const RULES: &str = "deploy/prometheus/pg-backups.rules.yml";
const RULES_TESTS: &str = "deploy/prometheus/pg-backups.rules.test.yml";
const CHART_RULES: &str = "charts/pg-backups/files/pg-backups.rules.yml";
const K8S_RULE: &str = "k8s/pg-backups-prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/pg-backups.json";
const BUCKET: &str = "pg-backups-monitoring";

/// Series METRICS_FILE writes that no alert reads, on purpose: they describe a run (how long,
/// how much), they do not say that something is wrong. The rules file names them; the dashboard
/// shows them.
const NOT_ALERTED: &[&str] = &[
    "pg_backups_last_run_duration_seconds",
    "pg_backups_last_success_timestamp_seconds",
    "pg_backups_pruned_bytes",
    "pg_backups_drill_tables",
    "pg_backups_drill_rows",
];

/// The labels node_exporter's scrape adds to every series of the textfile.
const INSTANCE: &str = "db1:9100";
const JOB: &str = "node";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed: install prometheus (promtool): run scripts/install-deps.sh, \
             which runs apt-get install --no-install-recommends prometheus (Debian's package \
             ships /usr/bin/promtool) without starting its service"
        )
    })
}

/// `promtool ARGS`; panics with its output unless it succeeds.
fn promtool_ok(args: &[&str], file: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} {}:\n{text}",
        args.join(" "),
        file.display()
    );
    text
}

fn yaml_one(path: &str) -> Value {
    let mut docs = yaml_docs(&root().join(path));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

// ---- What METRICS_FILE holds after real runs ------------------------------------------------

/// One line of a node_exporter textfile.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_textfile(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match key.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("{line}")),
        });
    }
    out
}

struct RealMetrics {
    /// After dump, ship, prune, a drill and check, all successful, with every destination on.
    healthy: String,
    /// The same file after one more dump, which could not reach the server.
    failed_dump: String,
    /// The max age `check` allowed with the default BACKUP_SCHEDULE.
    check_max_age_seconds: u64,
}

/// The METRICS_FILE of real runs, made once for every test of this file.
fn real_metrics() -> &'static RealMetrics {
    static METRICS: OnceLock<RealMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let server = PgServer::start(17);
        server.psql("postgres", "CREATE DATABASE app");
        server.psql(
            "app",
            "CREATE TABLE items(id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 1000);",
        );
        let s3 = S3Server::start();
        s3.create_bucket(BUCKET);
        let ssh = SshServer::start();
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let metrics = dir.path().join("pg_backups.prom");
        let mut env = server.env();
        env.extend(s3.env(BUCKET, ""));
        env.extend(ssh.env());
        env.push(("METRICS_FILE".into(), metrics.display().to_string()));
        env.push(("DRILL_MAX_AGE".into(), "8d".into()));
        for args in [
            &["dump"][..],
            &["ship"],
            &["prune"],
            &["verify", "latest", "--restore-test"],
        ] {
            pgb_run(&env, &backups, args).expect(0);
        }
        let check = pgb_run(&env, &backups, &["check"]).expect(0);
        let check_max_age_seconds = check.json["max_age_seconds"].as_u64().unwrap();
        let healthy = std::fs::read_to_string(&metrics).unwrap();
        let unreachable = with(&env, "PGPORT", &free_port().to_string());
        let run = pgb_run(&unreachable, &backups, &["dump"]);
        assert_ne!(run.code, 0, "a dump from a closed port: {}", run.stdout);
        let failed_dump = std::fs::read_to_string(&metrics).unwrap();
        RealMetrics {
            healthy,
            failed_dump,
            check_max_age_seconds,
        }
    })
}

/// Metric names, and the values of each label, that a real METRICS_FILE holds.
fn written() -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let mut names = BTreeSet::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in parse_textfile(&real_metrics().healthy) {
        names.insert(s.name);
        for (k, v) in s.labels {
            labels.entry(k).or_default().insert(v);
        }
    }
    (names, labels)
}

// ---- PromQL, as far as the tests need to read it --------------------------------------------

/// The metric names a PromQL expression reads: what is left once label matchers, ranges,
/// strings, label lists (`by (…)`, `on (…)`), function names, keywords and numbers are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut text = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if depth_brace == 0 => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => text.push(c),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let function = next == Some(&'(');
            let exponent = start > 0 && chars[start - 1].is_ascii_digit();
            // Set operators, modifiers, and aggregations (which may take `by (…)` before `(`).
            let keyword = matches!(
                word.as_str(),
                "and"
                    | "or"
                    | "unless"
                    | "bool"
                    | "offset"
                    | "sum"
                    | "min"
                    | "max"
                    | "avg"
                    | "count"
                    | "group"
                    | "stddev"
                    | "stdvar"
                    | "topk"
                    | "bottomk"
                    | "quantile"
                    | "count_values"
            );
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // The label list that follows, up to its ')', names labels (group_left may
                // have none).
                skip_list = function;
            } else if !(skip_list || function || exponent || keyword) {
                names.insert(word);
            }
            continue;
        }
        if c == ')' {
            skip_list = false;
        }
        i += 1;
    }
    names
}

/// The values a rule's selectors match for `label`: `label="a"`, `label=~"a|b"`, `label!~"a|b"`.
fn matched_values(expr: &str, label: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for op in ["=\"", "=~\"", "!~\"", "!=\""] {
        for (i, _) in expr.match_indices(&format!("{label}{op}")) {
            let rest = &expr[i + label.len() + op.len()..];
            let value = &rest[..rest.find('"').unwrap()];
            out.extend(value.split('|').map(String::from));
        }
    }
    out
}

fn rules() -> Vec<Value> {
    yaml_one(RULES)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap();
            // label_values(METRIC, LABEL)
            let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
            out.push(inner.split(',').next().unwrap().trim().to_string());
        }
    }
    out
}

#[test]
fn metric_names_reads_promql_as_the_tests_need() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"time() - a_seconds{destination="s3"} > 8 * 3600"#),
        ["a_seconds"]
    );
    assert_eq!(
        names("count by (instance, job) (last_over_time(x[7d])) unless count by (instance) (y)"),
        ["x", "y"]
    );
    assert_eq!(
        names(r#"a{c="d"} and on (instance, job, command) b == 1 or c > 1e3"#),
        ["a", "b", "c"]
    );
    assert_eq!(
        names("a * on (x) group_left b + sum without (y) (c[5m])"),
        ["a", "b", "c"]
    );
    assert_eq!(
        matched_values(
            r#"x{command!~"check|drill"} or y{command="dump"}"#,
            "command"
        ),
        ["check", "drill", "dump"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

// ---- The rules ---------------------------------------------------------------------------------

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let out = promtool_ok(&["check", "rules"], &root().join(RULES));
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    let out = promtool_ok(&["test", "rules"], &root().join(RULES_TESTS));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that makes it fire, with the text the operator reads.
    let tests = read(RULES_TESTS);
    for rule in rules() {
        let alert = rule["alert"].as_str().unwrap();
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.contains("exp_annotations:"));
        assert!(fires, "no unit test makes {alert} fire");
    }
}

#[test]
fn the_unit_tests_feed_the_rules_only_series_that_metrics_file_writes() {
    let (written, labels) = written();
    let tests = yaml_one(RULES_TESTS);
    let mut seen = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for series in case["input_series"].as_array().unwrap() {
            let s = series["series"].as_str().unwrap();
            let name = s.split('{').next().unwrap();
            if name == "up" {
                continue; // node_exporter's own, for the "nothing at all" case
            }
            assert!(
                written.contains(name),
                "{RULES_TESTS} feeds {name}, which METRICS_FILE does not write ({written:?})"
            );
            for label in ["command", "destination"] {
                for value in matched_values(s, label) {
                    assert!(
                        labels[label].contains(&value),
                        "{RULES_TESTS}: {label}=\"{value}\" is not written ({:?})",
                        labels[label]
                    );
                }
            }
            seen.insert(name.to_string());
        }
    }
    assert!(seen.len() >= 6, "{seen:?}");
}

#[test]
fn the_alerts_read_only_written_metrics_and_every_written_metric_is_alerted_on_or_named() {
    let (written, labels) = written();
    let mut alerted = BTreeSet::new();
    for rule in rules() {
        let alert = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().unwrap();
        for name in metric_names(expr) {
            assert!(
                written.contains(&name),
                "{alert} reads {name}, which METRICS_FILE does not write ({written:?})"
            );
            alerted.insert(name);
        }
        for label in ["command", "destination"] {
            for value in matched_values(expr, label) {
                assert!(
                    labels[label].contains(&value),
                    "{alert} matches {label}=\"{value}\", which METRICS_FILE never writes ({:?})",
                    labels[label]
                );
            }
        }
        let annotations = &rule["annotations"];
        assert!(
            annotations["summary"].is_string() && annotations["description"].is_string(),
            "{alert}: summary and description"
        );
        let description = annotations["description"].as_str().unwrap();
        assert!(
            description.contains("`pg-backups ")
                || description.contains("journalctl")
                || description.contains("METRICS_FILE"),
            "{alert}: the description says what to run: {description}"
        );
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{alert}: severity"
        );
    }
    let rules_text = read(RULES);
    for name in NOT_ALERTED {
        assert!(written.contains(*name), "{name} is not written any more");
        assert!(!alerted.contains(*name), "{name} is alerted on after all");
        assert!(
            rules_text.contains(name),
            "{RULES} does not say that {name} is not alerted on"
        );
    }
    let unexplained: Vec<&String> = written
        .iter()
        .filter(|n| !alerted.contains(*n) && !NOT_ALERTED.contains(&n.as_str()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "written, but neither alerted on nor named as not alerted: {unexplained:?}"
    );
    // The real run covered what the alerts are per: every destination and command.
    assert_eq!(
        labels["destination"],
        ["local", "remote", "s3"].map(String::from).into()
    );
    assert_eq!(
        labels["command"],
        ["check", "drill", "dump", "prune", "ship"]
            .map(String::from)
            .into()
    );
}

/// The threshold `time() - METRIC > A * B` compares with, in seconds.
fn threshold(expr: &str, metric: &str) -> u64 {
    let after = expr
        .split(metric)
        .nth(1)
        .unwrap_or_else(|| panic!("{metric} not in {expr}"));
    let after = &after[after.find('>').unwrap() + 1..];
    let product = after.split(" or ").next().unwrap();
    product
        .split('*')
        .map(|f| {
            f.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{product}"))
        })
        .product()
}

#[test]
fn the_backup_age_threshold_is_the_max_age_check_uses_for_the_default_schedule() {
    let max_age = real_metrics().check_max_age_seconds;
    assert_eq!(max_age, 8 * 3600, "0 */6 * * *: the longest gap plus 2h");
    let rules = rules();
    let expr = |alert: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no {alert}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let too_old = expr("PgBackupsBackupTooOld");
    assert_eq!(
        threshold(&too_old, "pg_backups_newest_complete_timestamp_seconds"),
        max_age
    );
    let not_running = expr("PgBackupsNotRunning");
    assert_eq!(
        threshold(
            &not_running,
            "pg_backups_last_run_timestamp_seconds{command=~\"dump|ship|prune\"}"
        ),
        max_age
    );
    // The hourly check of every shipped unit, plus 2h; the weekly drill plus a day.
    assert_eq!(
        threshold(
            &not_running,
            "pg_backups_last_run_timestamp_seconds{command=\"check\"}"
        ),
        3 * 3600
    );
    assert_eq!(
        threshold(
            &expr("PgBackupsDrillStale"),
            "pg_backups_drill_last_success_timestamp_seconds"
        ),
        8 * 86400
    );
    assert!(read("README.md").contains("DRILL_MAX_AGE` (e.g. `8d`)"));
}

/// The series of a textfile as promtool input, as node_exporter would export them, constant
/// over the test: timestamps moved so that the runs end `at` seconds into the test.
fn input_series(text: &str, at: f64) -> Vec<Value> {
    let samples = parse_textfile(text);
    let last_run = samples
        .iter()
        .filter(|s| s.name == "pg_backups_last_run_timestamp_seconds")
        .map(|s| s.value)
        .fold(f64::MIN, f64::max);
    samples
        .into_iter()
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.insert("instance".into(), INSTANCE.into());
            labels.insert("job".into(), JOB.into());
            let value = if s.name.ends_with("_timestamp_seconds") {
                s.value - last_run + at
            } else {
                s.value
            };
            json!({
                "series": format!("{}{}", s.name, selector(&labels)),
                "values": format!("{value}+0x2900"),
            })
        })
        .collect()
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The firing alerts Prometheus should show, as ALERTS samples.
fn firing(alerts: &[(&str, &str, BTreeMap<String, String>)]) -> Value {
    let samples: Vec<Value> = alerts
        .iter()
        .map(|(alert, severity, labels)| {
            let mut labels = labels.clone();
            labels.insert("alertname".into(), alert.to_string());
            labels.insert("alertstate".into(), "firing".into());
            labels.insert("severity".into(), severity.to_string());
            json!({"labels": format!("ALERTS{}", selector(&labels)), "value": 1})
        })
        .collect();
    Value::Array(samples)
}

fn host(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert("instance".into(), INSTANCE.into());
    labels.insert("job".into(), JOB.into());
    labels
}

#[test]
fn the_rules_fire_as_expected_on_the_series_real_runs_wrote() {
    let real = real_metrics();
    let healthy = parse_textfile(&real.healthy);
    let values_of = |name: &str, label: &str| -> BTreeSet<String> {
        healthy
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels[label].clone())
            .collect()
    };
    let destinations = values_of(
        "pg_backups_newest_complete_timestamp_seconds",
        "destination",
    );
    let commands = values_of("pg_backups_last_run_timestamp_seconds", "command");
    assert_eq!(destinations.len(), 3, "{}", real.healthy);

    // Healthy until the hourly check has not run for 3h (and 15m); eight hours and a quarter
    // without a run: every backup and command (the defaults: BACKUP_SCHEDULE 0 */6 * * *).
    let mut stopped = Vec::new();
    for d in &destinations {
        stopped.push((
            "PgBackupsBackupTooOld",
            "critical",
            host(&[("destination", d)]),
        ));
    }
    for c in commands.iter().filter(|c| *c != "drill") {
        stopped.push(("PgBackupsNotRunning", "warning", host(&[("command", c)])));
    }
    // Eight days: the drill as well.
    let mut weeks = stopped.clone();
    weeks.push(("PgBackupsDrillStale", "warning", host(&[])));
    let alerts = |eval: &str, expected: Value| json!({"expr": "ALERTS{alertstate=\"firing\"}", "eval_time": eval, "exp_samples": expected});
    let tests = json!({
        "rule_files": [root().join(RULES)],
        // Rules evaluated every 10 minutes (Prometheus: every minute) keep 8 days quick; the
        // alerts' `for: 15m` then holds from the second evaluation on.
        "evaluation_interval": "10m",
        "tests": [
            {
                // Every 4 minutes: within the 5 minutes Prometheus looks back, and 8 days stay small.
                "interval": "4m",
                "input_series": input_series(&real.healthy, 600.0),
                "promql_expr_test": [
                    alerts("30m", json!([])),
                    alerts("3h", json!([])),
                    alerts("3h40m", firing(&[("PgBackupsNotRunning", "warning", host(&[("command", "check")]))])),
                    alerts("8h", firing(&[("PgBackupsNotRunning", "warning", host(&[("command", "check")]))])),
                    alerts("8h40m", firing(&stopped)),
                    alerts("8d1h", firing(&weeks)),
                ],
            },
            {
                "interval": "4m",
                "input_series": input_series(&real.failed_dump, 600.0),
                "promql_expr_test": [alerts(
                    "30m",
                    firing(&[("PgBackupsLastRunFailed", "warning", host(&[("command", "dump")]))]),
                )],
            },
        ],
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("real.test.yml");
    std::fs::write(&file, serde_json::to_string_pretty(&tests).unwrap()).unwrap();
    promtool_ok(&["test", "rules"], &file);
}

// ---- The PrometheusRule: k8s/ and the Helm chart ----------------------------------------------

/// `helm template pgb charts/pg-backups [-f VALUES]` through Helm v4's Go code in the
/// helm-python-sdk wheel (as tests/kubernetes.rs does), as JSON documents.
fn helm_template(values: Option<&Path>) -> Vec<Value> {
    const RENDER: &str = r#"
import json, sys
try:
    import helm_python as h
except ImportError:
    sys.exit("helm-python-sdk is not installed: run scripts/install-deps.sh (pip install helm-python-sdk)")
import yaml
values = yaml.safe_load(open(sys.argv[2])) if len(sys.argv) > 2 else None
out = h.Chart.load(sys.argv[1]).render(values, name="pgb", namespace="monitoring", is_install=True)
docs = []
for name in sorted(out):
    if not name.endswith("NOTES.txt"):
        docs += [d for d in yaml.safe_load_all(out[name]) if d]
json.dump(docs, sys.stdout)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(RENDER)
        .arg(root().join("charts/pg-backups"))
        .args(values)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// kubernetes-validate has no schema for the operator's CRD: the shape the operator reads, and
/// the groups promtool accepts.
fn assert_prometheus_rule(doc: &Value, what: &str) {
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{what}");
    assert_eq!(doc["kind"], "PrometheusRule", "{what}");
    let name = doc["metadata"]["name"].as_str().unwrap_or("");
    assert!(
        !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{what}: metadata.name {name:?}"
    );
    let spec = doc["spec"].as_object().unwrap();
    assert_eq!(
        spec.keys().collect::<Vec<_>>(),
        ["groups"],
        "{what}: spec holds the groups only"
    );
    assert_eq!(
        doc["spec"]["groups"],
        yaml_one(RULES)["groups"],
        "{what}: the groups are those of {RULES}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(&file, doc["spec"].to_string()).unwrap();
    let out = promtool_ok(&["check", "rules"], &file);
    assert!(out.contains("SUCCESS: 10 rules found"), "{what}: {out}");
}

#[test]
fn every_copy_of_the_rules_is_the_rules_file() {
    let rules = read(RULES);
    assert_same(
        &rules,
        &read(CHART_RULES),
        &format!("{CHART_RULES} vs {RULES}"),
    );
    // k8s/: a header, then the file indented under spec: (as its regenerate line makes it).
    let k8s = read(K8S_RULE);
    let (head, spec) = k8s
        .split_once("\nspec:\n")
        .unwrap_or_else(|| panic!("{K8S_RULE}: no spec:"));
    let indented: String = rules
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    assert_same(&indented, spec, &format!("{K8S_RULE} spec vs {RULES}"));
    assert!(head.contains("sed '/./s/^/  /' deploy/prometheus/pg-backups.rules.yml"));
    let doc = yaml_one(K8S_RULE);
    assert_prometheus_rule(&doc, K8S_RULE);
    assert_eq!(doc["metadata"]["name"], "pg-backups");
}

#[test]
fn the_helm_chart_renders_the_prometheus_rule_only_when_asked_with_its_labels() {
    let docs = helm_template(None);
    assert!(
        !docs.iter().any(|d| d["kind"] == "PrometheusRule"),
        "no PrometheusRule by default (its CRD may not be installed)"
    );
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "prometheusRule:\n  enabled: true\n  labels: {release: kube-prometheus-stack}\n  annotations: {team: dba}\n",
    )
    .unwrap();
    let docs = helm_template(Some(&values));
    let rules: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1);
    let rule = rules[0];
    assert_prometheus_rule(rule, "helm template prometheusRule.enabled=true");
    assert_eq!(rule["metadata"]["name"], "pgb-pg-backups");
    let labels = &rule["metadata"]["labels"];
    assert_eq!(labels["release"], "kube-prometheus-stack");
    assert_eq!(labels["app.kubernetes.io/name"], "pg-backups");
    assert_eq!(labels["app.kubernetes.io/instance"], "pgb");
    assert_eq!(rule["metadata"]["annotations"]["team"], "dba");
    // ci/full-values.yaml turns it on too, so the chart's lint covers the template.
    let full = yaml_one("charts/pg-backups/ci/full-values.yaml");
    assert_eq!(full["prometheusRule"]["enabled"], true);
}

// ---- The Grafana dashboard ------------------------------------------------------------------

#[test]
fn the_grafana_dashboard_is_importable_and_queries_only_written_metrics() {
    let (written, _) = written();
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(d["id"].is_null(), "an exported id would clash on import");
    // A datasource variable, so that it imports into any Grafana, and every query uses it.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource template variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let panels = d["panels"].as_array().unwrap();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        assert!(p["type"].is_string(), "{title}");
        assert_eq!(p["datasource"]["uid"], ds_ref, "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(t["expr"].is_string(), "{title}: a target without expr");
            assert_eq!(t["datasource"]["uid"], ds_ref, "{title}");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}: refId");
        }
    }
    let mut queried = BTreeSet::new();
    for q in dashboard_queries(&d) {
        let names = metric_names(&q);
        assert!(!names.is_empty(), "no metric in {q}");
        for name in names {
            assert!(
                written.contains(&name),
                "the dashboard queries {name}, which METRICS_FILE does not write: {q}"
            );
            queried.insert(name);
        }
    }
    assert_eq!(queried, written, "the dashboard shows every written series");
    // What the issue asked to see.
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in ["age", "size", "duration", "fail", "drill"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
}

// ---- README ---------------------------------------------------------------------------------

#[test]
fn the_readme_says_how_to_load_everything_and_what_each_alert_means() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Monitoring\n")
        .nth(1)
        .expect("README has a Monitoring section")
        .split("\n## ")
        .next()
        .unwrap();
    for needed in [
        "--collector.textfile.directory=/var/lib/node_exporter/textfile_collector",
        "rule_files",
        RULES,
        K8S_RULE,
        "prometheusRule.enabled",
        DASHBOARD,
        "promtool test rules",
    ] {
        assert!(section.contains(needed), "README Monitoring lacks {needed}");
    }
    for rule in rules() {
        let alert = rule["alert"].as_str().unwrap();
        assert!(
            section.contains(&format!("`{alert}`")),
            "README Monitoring does not explain {alert}"
        );
    }
}
