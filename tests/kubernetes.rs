//! The Kubernetes manifests of `k8s/` and the Helm chart `charts/pg-backups`, read as the API
//! server and Helm read them: validated offline (`kubernetes-validate --strict`), the chart linted
//! and rendered by Helm's own Go code (v4, through the `helm-python-sdk` wheel: no `helm` binary
//! can be installed here), the same pod rules for both, and the Jobs' commands run the way the
//! image runs them (its entry point `pg-backups-cycle ARGS`, the ConfigMap and `env:` as the
//! environment, the volumes as folders) against a real PostgreSQL server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tool(name: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run scripts/install-deps.sh ({install})")
    })
}

/// YAML documents (empty ones dropped) as JSON, through python3 and PyYAML.
fn yaml_text(text: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.yaml");
    std::fs::write(&path, text).unwrap();
    yaml_docs(&path)
}

/// Variables of `.env.example`, plus the ones DESIGN names that the binary does not read yet
/// (NOTIFY_URLS, a slot the secret examples and the chart already offer).
fn known_variables() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = read(".env.example")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap().0.to_string())
        .collect();
    known.insert("NOTIFY_URLS_FILE".into());
    known
}

/// `kubernetes-validate --strict` on documents. A Job with `generateName` gets the name the API
/// server would give it (the validator needs one).
fn validate(docs: &[Value], what: &str) {
    let validate = tool("kubernetes-validate", "pip install kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let mut doc = doc.clone();
        if let Some(prefix) = doc["metadata"]["generateName"].as_str().map(String::from) {
            doc["metadata"]["name"] = Value::String(format!("{prefix}x7k2p"));
        }
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, doc.to_string()).unwrap();
        files.push(path);
    }
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "{what}: {text}"
    );
}

/// The pod of a CronJob or Job.
fn pod_of(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Job" => Some(&doc["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// The rules every pod of ours follows, shipped manifest or chart output.
fn assert_pod_rules(doc: &Value, what: &str) {
    let known = known_variables();
    let kind = doc["kind"].as_str().unwrap();
    if kind == "ConfigMap" {
        for key in doc["data"].as_object().unwrap().keys() {
            assert!(known.contains(key), "{what}: {key} is not in .env.example");
        }
    }
    let Some(pod) = pod_of(doc) else { return };
    let name = doc["metadata"]["name"]
        .as_str()
        .or(doc["metadata"]["generateName"].as_str())
        .unwrap();
    let what = format!("{what}: {kind} {name}");
    // kubernetes/kubernetes#65835: a token under /var/run/secrets inside the read-only
    // projection at /run/secrets stops the pod from starting; the tool needs no token.
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{what}: automountServiceAccountToken"
    );
    assert_eq!(pod["restartPolicy"], "Never", "{what}");
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["runAsUser"], 70, "{what}");
    if !sc["fsGroup"].is_null() {
        // Without it, every start re-chmods each backup group-readable (and takes long).
        assert_eq!(sc["fsGroupChangePolicy"], "OnRootMismatch", "{what}");
    }
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}");
    for c in containers {
        let csc = &c["securityContext"];
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{what}");
        assert!(
            c["resources"]["requests"]["memory"].is_string()
                && c["resources"]["limits"]["memory"].is_string(),
            "{what}: resources"
        );
        for e in c["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap();
            assert!(known.contains(var), "{what}: {var} is not in .env.example");
        }
        let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["mountPath"].as_str().unwrap(),
                    m["name"].as_str().unwrap(),
                )
            })
            .collect();
        // readOnlyRootFilesystem: /tmp must be a volume; /run/secrets the read-only projection.
        assert!(mounts.contains_key("/tmp"), "{what}: no /tmp volume");
        let secrets = mounts
            .get("/run/secrets")
            .unwrap_or_else(|| panic!("{what}: no /run/secrets"));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == *secrets)
            .unwrap();
        assert!(volume["projected"].is_object(), "{what}");
        assert!(mounts.contains_key("/backups"), "{what}: no /backups");
    }
    if kind == "CronJob" {
        assert_eq!(doc["spec"]["concurrencyPolicy"], "Forbid", "{what}");
        assert!(doc["spec"]["startingDeadlineSeconds"].is_number(), "{what}");
        assert!(doc["spec"]["timeZone"].is_string(), "{what}");
        let job = &doc["spec"]["jobTemplate"]["spec"];
        assert_eq!(job["backoffLimit"], 0, "{what}");
        assert!(job["activeDeadlineSeconds"].is_number(), "{what}");
    }
    if kind == "Job" {
        // A fixed name plus the TTL would block the next restore for a day.
        assert!(
            doc["metadata"]["generateName"].is_string() && doc["metadata"]["name"].is_null(),
            "{what}: a restore Job takes generateName"
        );
        assert_eq!(doc["spec"]["backoffLimit"], 0, "{what}");
    }
}

/// What a CronJob's container runs: the image's entry point is `pg-backups-cycle`, which
/// passes arguments to pg-backups.
fn args_of(doc: &Value) -> Vec<String> {
    let c = &pod_of(doc).unwrap()["containers"][0];
    assert!(c["command"].is_null(), "the image's entry point is kept");
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// CronJobs by their component label.
fn cronjobs(docs: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut out: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d["kind"] == "CronJob") {
        let component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap_or_else(|| panic!("no component label on {}", doc["metadata"]["name"]))
            .to_string();
        out.entry(component).or_default().push(doc);
    }
    out
}

fn k8s_docs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml_docs(&file) {
            out.push((name.clone(), doc));
        }
    }
    out
}

#[test]
fn the_kubernetes_manifests_validate_and_every_pod_follows_the_rules() {
    let docs = k8s_docs();
    let all: Vec<Value> = docs.iter().map(|(_, d)| d.clone()).collect();
    validate(&all, "k8s/");
    for (file, doc) in &docs {
        assert_pod_rules(doc, file);
    }
    let kinds: BTreeSet<&str> = all.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "CronJob",
        "Job",
        "PersistentVolumeClaim",
        "Secret",
        "ConfigMap",
    ] {
        assert!(kinds.contains(kind), "no {kind} in k8s/");
    }
    let config = all.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let jobs = cronjobs(&all);
    assert_eq!(
        jobs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["backup", "check", "drill"]
    );
    let backup = jobs["backup"][0];
    assert!(args_of(backup).is_empty(), "one cycle");
    assert_eq!(
        backup["spec"]["schedule"],
        config["data"]["BACKUP_SCHEDULE"]
    );
    let check = jobs["check"][0];
    assert_eq!(args_of(check), ["check"]);
    let hourly = check["spec"]["schedule"].as_str().unwrap();
    assert!(
        hourly.split_whitespace().skip(1).all(|f| f == "*"),
        "check runs hourly: {hourly}"
    );
    let drill = jobs["drill"][0];
    assert_eq!(args_of(drill), ["verify", "latest", "--restore-test"]);
    assert_eq!(drill["spec"]["schedule"], config["data"]["DRILL_SCHEDULE"]);
    assert_eq!(drill["spec"]["schedule"], "0 3 * * 0");

    // The secret example has a slot for every secret file the tool reads.
    let secrets: Vec<&Value> = all.iter().filter(|d| d["kind"] == "Secret").collect();
    let keys: BTreeSet<&str> = secrets
        .iter()
        .flat_map(|s| s["stringData"].as_object().unwrap().keys())
        .map(String::as_str)
        .collect();
    for key in [
        "pg_password",
        "s3_access_key",
        "s3_secret_key",
        "pg_backups_ssh_key",
        "pg_backups_known_hosts",
        "notify_url",
        "notify_urls",
        "healthcheck_url",
    ] {
        assert!(keys.contains(key), "the secret example lacks {key}");
    }
    let text = read("k8s/pg-backups-secrets.example.yaml") + &read("k8s/pg-backups-config.yaml");
    for var in [
        "NOTIFY_URL_FILE",
        "NOTIFY_URLS_FILE",
        "HEALTHCHECK_URL_FILE",
    ] {
        assert!(
            text.contains(&format!("{var}: /run/secrets/"))
                || text.contains(&format!("{var}=/run/secrets/")),
            "{var} is not explained"
        );
    }
    // Every pod mounts every optional secret, so a *_FILE set in the ConfigMap finds its file.
    for (file, doc) in &docs {
        if let Some(pod) = pod_of(doc) {
            let projected = pod["volumes"].to_string();
            for name in [
                "pg-backups-db",
                "pg-backups-s3",
                "pg-backups-ssh",
                "pg-backups-notify",
            ] {
                assert!(projected.contains(name), "{file}: {name} is not mounted");
            }
        }
    }
    // The restore Job says how to avoid a Multi-Attach and how to run it again.
    let job = read("k8s/pg-backups-restore-job.yaml");
    for needed in [
        "Multi-Attach",
        "kubectl create -f k8s/pg-backups-restore-job.yaml",
        "RESTORE_SOURCE=s3",
    ] {
        assert!(job.contains(needed), "the restore Job lacks {needed:?}");
    }
}

#[test]
fn the_interactive_restore_hint_mounts_the_volume_and_the_secrets() {
    let job = read("k8s/pg-backups-restore-job.yaml");
    let line = job
        .lines()
        .find(|l| l.contains("--overrides='"))
        .expect("a kubectl run hint with --overrides");
    let json = line
        .split("--overrides='")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches('\'');
    let overrides: Value = serde_json::from_str(json).expect("--overrides is JSON");
    assert!(job.contains("kubectl run -it --rm pg-backups-restore --restart=Never"));
    // What kubectl run would create, with the overrides merged in.
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pg-backups-restore"},
        "spec": overrides["spec"],
    });
    validate(std::slice::from_ref(&pod), "the kubectl run hint");
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    let c = &spec["containers"][0];
    assert_eq!(c["stdin"], true);
    assert_eq!(c["tty"], true);
    assert!(c["image"].as_str().unwrap().contains("pg-backups-restore"));
    let volumes = spec["volumes"].to_string();
    assert!(
        volumes.contains("\"claimName\":\"pg-backups-data\""),
        "{volumes}"
    );
    assert!(
        volumes.contains("pg-backups-db")
            && volumes.contains("pg-backups-s3")
            && volumes.contains("pg-backups-ssh")
    );
    let mounts = c["volumeMounts"].to_string();
    for path in ["/backups", "/run/secrets", "/tmp"] {
        assert!(mounts.contains(&format!("\"{path}\"")), "{path}: {mounts}");
    }
    assert_eq!(c["env"][0]["name"], "PGPASSWORD_FILE");
}

#[test]
fn the_known_hosts_example_matches_a_host_on_port_22() {
    let keygen = tool("ssh-keygen", "apt-get install openssh-client");
    let docs = yaml_docs(&root().join("k8s/pg-backups-secrets.example.yaml"));
    let known = docs
        .iter()
        .find_map(|d| d["stringData"]["pg_backups_known_hosts"].as_str())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, known).unwrap();
    // ssh looks a host on port 22 up by its bare name ([host]:22 never matches).
    let out = Command::new(&keygen)
        .args(["-F", "backup.example.com", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "ssh-keygen -F backup.example.com finds nothing in {known:?}"
    );
    for text in [
        read("k8s/pg-backups-secrets.example.yaml"),
        read("README.md"),
    ] {
        assert!(!text.contains("]:22 "), "a [host]:22 known_hosts line");
    }
}

// ---- The Helm chart -------------------------------------------------------------------------

const CHART: &str = "charts/pg-backups";

/// Helm v4's lint and template, from the Go SDK compiled into the helm-python-sdk wheel.
const HELM: &str = r#"
import json, sys
try:
    import helm_python as h
except ImportError:
    sys.exit("helm-python-sdk is not installed: run scripts/install-deps.sh (pip install helm-python-sdk)")
import yaml
cmd, chart = sys.argv[1], sys.argv[2]
values = {}
def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
for f in sys.argv[3:]:
    merge(values, yaml.safe_load(open(f)) or {})
if cmd == "version":
    print(h.helm_sdk_version())
elif cmd == "lint":
    json.dump(h.lint(chart, values or None, strict=True), sys.stdout)
else:
    out = h.Chart.load(chart).render(values or None, name="pgb", namespace="backups", is_install=True)
    for name in sorted(out):
        if out[name].strip() and not name.endswith("NOTES.txt"):
            print("---\n# Source: " + name)
            print(out[name])
"#;

fn helm(args: &[&str], values: &[&Path]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(HELM)
        .args(args)
        .args(values)
        .output()
        .unwrap()
}

/// `helm template pgb charts/pg-backups -f VALUES…`, as documents.
fn template(values: &[&Path]) -> Vec<Value> {
    let chart = root().join(CHART);
    let out = helm(&["template", chart.to_str().unwrap()], values);
    assert!(
        out.status.success(),
        "helm template {values:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_text(&String::from_utf8_lossy(&out.stdout))
}

fn values_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_helm_chart_lints_and_renders_valid_manifests_by_the_same_rules() {
    let chart = root().join(CHART);
    let full = chart.join("ci/full-values.yaml");
    let version = helm(&["version", "."], &[]);
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    for values in [vec![], vec![full.as_path()]] {
        let out = helm(&["lint", chart.to_str().unwrap()], &values);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["errors"],
            serde_json::json!([]),
            "helm lint {values:?}: {report}"
        );
        for m in report["messages"].as_array().unwrap() {
            // 1 is INFO ("icon is recommended"); warnings and errors fail.
            assert!(
                m["severity"].as_i64().unwrap() <= 1,
                "helm lint {values:?}: {m}"
            );
        }
        let docs = template(&values);
        validate(&docs, &format!("helm template {values:?}"));
        for doc in &docs {
            assert_pod_rules(doc, &format!("helm template {values:?}"));
        }
    }

    // The defaults: one server, its three CronJobs, like k8s/.
    let docs = template(&[]);
    let jobs = cronjobs(&docs);
    assert_eq!(jobs["backup"].len(), 1);
    assert_eq!(args_of(jobs["check"][0]), ["check"]);
    assert_eq!(
        args_of(jobs["drill"][0]),
        ["verify", "latest", "--restore-test"]
    );
    assert_eq!(jobs["drill"][0]["spec"]["schedule"], "0 3 * * 0");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Job"),
        "no restore unless asked"
    );

    // The fleet: each server its own CronJobs, ConfigMap, PVC, prefix, path and labels.
    let docs = template(&[&full]);
    let servers = ["orders", "billing", "analytics"];
    let jobs = cronjobs(&docs);
    for component in ["backup", "check", "drill"] {
        assert_eq!(jobs[component].len(), 3, "{component}");
    }
    let mut prefixes = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut claims = BTreeSet::new();
    for server in servers {
        let config = docs
            .iter()
            .find(|d| {
                d["kind"] == "ConfigMap"
                    && d["metadata"]["labels"]["pg-backups.io/server"] == server
            })
            .unwrap_or_else(|| panic!("no ConfigMap for {server}"));
        let data = &config["data"];
        assert_eq!(data["S3_PREFIX"], format!("prod/{server}"));
        assert_eq!(data["RSYNC_PATH"], format!("/srv/pg-backups/{server}"));
        assert_eq!(data["DRILL_SCHEDULE"], "30 4 * * 6");
        assert_eq!(data["DRILL_MAX_AGE"], "8d");
        assert_eq!(data["HEALTHCHECK_URL_FILE"], "/run/secrets/healthcheck_url");
        assert_eq!(data["S3_SECRET_KEY_FILE"], "/run/secrets/s3_secret_key");
        prefixes.insert(data["S3_PREFIX"].to_string());
        paths.insert(data["RSYNC_PATH"].to_string());
        for component in ["backup", "check", "drill"] {
            let job = jobs[component]
                .iter()
                .find(|j| j["metadata"]["labels"]["pg-backups.io/server"] == server)
                .unwrap_or_else(|| panic!("no {component} CronJob for {server}"));
            let pod = pod_of(job).unwrap();
            let c = &pod["containers"][0];
            assert_eq!(
                c["envFrom"][0]["configMapRef"]["name"],
                config["metadata"]["name"]
            );
            let claim = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "backups")
                .unwrap()["persistentVolumeClaim"]["claimName"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(claim.contains(server), "{claim}");
            claims.insert(claim);
            let labels = &job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["pg-backups.io/server"], server);
            assert_eq!(labels["app.kubernetes.io/component"], component);
        }
    }
    assert_eq!(prefixes.len(), 3);
    assert_eq!(paths.len(), 3);
    assert_eq!(
        claims.len(),
        3,
        "one PVC, so one lock, per server: {claims:?}"
    );
    let pvcs = docs
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .count();
    assert_eq!(pvcs, 3);
    // Per-server overrides.
    let billing = jobs["backup"]
        .iter()
        .find(|j| j["metadata"]["labels"]["pg-backups.io/server"] == "billing")
        .unwrap();
    assert_eq!(billing["spec"]["schedule"], "45 */6 * * *");
    assert!(
        pod_of(billing).unwrap()["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(":16-alpine")
    );

    // The restore Job, as the chart documents it: helm template … | kubectl create -f -.
    let dir = tempfile::tempdir().unwrap();
    for (source, mounts_pvc) in [("local", true), ("s3", false)] {
        let restore = values_file(
            dir.path(),
            &format!("restore-{source}.yaml"),
            &format!(
                "restore: {{enabled: true, server: billing, source: {source}, type: database, database: shop}}\n"
            ),
        );
        let docs = template(&[&full, &restore]);
        validate(&docs, "helm template with a restore");
        let job = docs
            .iter()
            .find(|d| d["kind"] == "Job")
            .expect("a restore Job");
        assert_pod_rules(job, "helm restore Job");
        let pod = pod_of(job).unwrap();
        assert!(
            pod["containers"][0]["image"]
                .as_str()
                .unwrap()
                .contains("pg-backups-restore:16-alpine")
        );
        let env = pod["containers"][0]["env"].to_string();
        assert!(
            env.contains("RESTORE_SOURCE") && env.contains(source) && env.contains("shop"),
            "{env}"
        );
        let uses_pvc = pod["volumes"].to_string().contains("persistentVolumeClaim");
        assert_eq!(
            uses_pvc, mounts_pvc,
            "{source}: a restore from S3 needs no PVC (no Multi-Attach)"
        );
    }
    assert!(read(&format!("{CHART}/values.yaml")).contains("| kubectl create -f -"));
}

#[test]
fn the_helm_chart_refuses_values_that_cannot_work() {
    let chart = root().join(CHART);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "servers: [{name: a, host: h, passwordSecret: {name: s}}, {name: a, host: h2, passwordSecret: {name: s}}]\n",
            "appears twice",
        ),
        // values.schema.json, checked by Helm before any template runs.
        (
            "servers: [{name: Main_DB, host: h, passwordSecret: {name: s}}]\n",
            "at '/servers/0/name'",
        ),
        ("schedule: 5\n", "at '/schedule'"),
        (
            "servers: [{name: a, host: h, passwordSecret: {name: s}, shedule: x}]\n",
            "'shedule' not allowed",
        ),
        (
            "notifications: {keys: [notify_ur]}\n",
            "at '/notifications/keys/0'",
        ),
        ("servers: [{name: a, host: h}]\n", "passwordSecret"),
        (
            "destinations: {rsync: {enabled: true, host: b, path: /x}}\n",
            "existingSecret",
        ),
        ("destinations: {s3: {enabled: true}}\n", "bucket"),
        (
            "restore: {enabled: true, server: nope, type: cluster}\n",
            "not one of servers",
        ),
        (
            "restore: {enabled: true, server: main, type: database}\n",
            "restore.database",
        ),
        // A release without local copy writes to S3 only.
        ("local: {copy: false}\n", "needs destinations.s3.enabled"),
        (
            "local: {copy: false}\ndestinations: {s3: {enabled: true, bucket: b}, rsync: {enabled: true, host: h, path: /p, existingSecret: s}}\n",
            "destinations.rsync",
        ),
        (
            "local: {copy: false}\ndestinations: {s3: {enabled: true, bucket: b}}\ndrill: {maxAge: 8d}\n",
            "drill.maxAge",
        ),
        (
            "local: {copy: false}\ndestinations: {s3: {enabled: true, bucket: b}}\nrestore: {enabled: true, server: main, type: cluster, source: local}\n",
            "restore from s3",
        ),
    ];
    for (i, (values, expected)) in cases.iter().enumerate() {
        let file = values_file(dir.path(), &format!("bad{i}.yaml"), values);
        let out = helm(&["template", chart.to_str().unwrap()], &[&file]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{values} rendered");
        assert!(err.contains(expected), "{values}: {err}");
    }
}

/// `local.copy: false`: the pods have no volume (no PVC at all, BACKUP_DIR an emptyDir
/// holding the lock) and dump streams straight to S3.
#[test]
fn a_helm_release_without_local_copy_has_no_volume_and_dumps_straight_to_s3() {
    let dir = tempfile::tempdir().unwrap();
    let file = values_file(
        dir.path(),
        "direct.yaml",
        "local: {copy: false}\ndestinations: {s3: {enabled: true, bucket: backups, existingSecret: s3}}\n\
         restore: {enabled: true, server: main, type: cluster, source: s3}\n",
    );
    let docs = template(&[&file]);
    validate(&docs, "the chart without local copy");
    assert!(
        docs.iter().all(|d| d["kind"] != "PersistentVolumeClaim"),
        "no PVC is made"
    );
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(config["data"]["BACKUP_LOCAL_COPY"], "false");
    let mut pods = 0;
    for doc in &docs {
        let Some(pod) = pod_of(doc) else { continue };
        pods += 1;
        let backups = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "backups")
            .unwrap();
        assert!(backups.get("persistentVolumeClaim").is_none(), "{doc:?}");
        assert!(backups.get("emptyDir").is_some(), "{doc:?}");
    }
    assert!(pods >= 4, "backup, check, drill and restore pods: {pods}");
    // The default stays a local copy on a PVC.
    let docs = template(&[]);
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(config["data"]["BACKUP_LOCAL_COPY"], "true");
    assert!(docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
}

// ---- The Jobs, run as the image runs them ---------------------------------------------------

/// Runs the container of a CronJob as the image would: `pg-backups-cycle ARGS`, with the
/// ConfigMap's data and the container's env, the volumes' mount paths moved into `dir`, and
/// the connection the operator fills in.
fn run_job(doc: &Value, configs: &[Value], dir: &Path, server: &PgServer) -> std::process::Output {
    let pod = pod_of(doc).unwrap();
    let c = &pod["containers"][0];
    let config_name = c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap();
    let config = configs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == config_name)
        .unwrap_or_else(|| panic!("no ConfigMap {config_name}"));
    let mut env: Vec<(String, String)> = config["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    for e in c["env"].as_array().into_iter().flatten() {
        env.push((
            e["name"].as_str().unwrap().to_string(),
            e["value"].as_str().unwrap().to_string(),
        ));
    }
    let moved = |v: &str| {
        v.replace("/run/secrets", dir.join("secrets").to_str().unwrap())
            .replacen("/backups", dir.join("backups").to_str().unwrap(), 1)
    };
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, moved(&v))).collect();
    env.push(("PGHOST".into(), "127.0.0.1".into()));
    env.push(("PGPORT".into(), server.port.to_string()));
    env.push(("PG_BIN_DIR".into(), server.bin().display().to_string()));
    env.push(("HOME".into(), dir.display().to_string()));
    let bin = dir.join("bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // Later entries win, as the operator's edits do.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in env {
        last.insert(k, v);
    }
    Command::new(bin.join("pg-backups-cycle"))
        .args(args_of(doc))
        .env_clear()
        .env("PATH", path)
        .envs(&last)
        .output()
        .unwrap()
}

fn lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_kubernetes_and_helm_cronjobs_run_backup_check_and_drill_against_a_real_server() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 500);",
    );
    let k8s: Vec<Value> = k8s_docs().into_iter().map(|(_, d)| d).collect();
    let helm_docs = template(&[]);
    for (what, docs) in [("k8s/", &k8s), ("helm", &helm_docs)] {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["backups", "secrets", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        // The Secret, as the projected volume shows it.
        std::fs::write(dir.path().join("secrets/pg_password"), PASSWORD).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_pg-backups"),
            dir.path().join("bin/pg-backups"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            root().join("scripts/pg-backups-cycle"),
            dir.path().join("bin/pg-backups-cycle"),
        )
        .unwrap();
        let jobs = cronjobs(docs);
        for component in ["backup", "drill", "check"] {
            let out = run_job(jobs[component][0], docs, dir.path(), &server);
            let got = lines(&out);
            assert!(
                out.status.success(),
                "{what} {component}: {got:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expected: &[&str] = match component {
                "backup" => &["dump", "ship", "prune"],
                "drill" => &["verify"],
                _ => &["check"],
            };
            let commands: Vec<&str> = got.iter().map(|l| l["command"].as_str().unwrap()).collect();
            assert_eq!(commands, expected, "{what} {component}");
            assert!(
                got.iter().all(|l| l["status"] == "ok"),
                "{what} {component}: {got:?}"
            );
            if component == "drill" {
                assert!(got[0].to_string().contains("restore_test"), "{}", got[0]);
            }
        }
    }
}
