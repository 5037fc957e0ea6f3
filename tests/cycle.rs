//! `scripts/pg-backups-cycle` on its own, under the shells it meets (`/bin/sh` is dash on
//! Debian, busybox ash in the images, bash elsewhere), with a stand-in binary whose timing the
//! test controls: signals at the awkward moments, a failed dump, settings from the env file.
//! The cycle against the real binary and servers is in `tests/deploy.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-backups-cycle")
}

/// A stand-in for `pg-backups`: logs each call to `$FAKE_LOG`, then behaves as `$FAKE_<CMD>`
/// says: `ok`, `fail:N` (prints a failed JSON line, exits N), `slow` (runs until a SIGTERM,
/// then prints its interrupted line and exits 75 at once), `sleep` (for `ping start`: 30 s,
/// ended by the signal's default action).
const FAKE: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "pg-backups 9.8.7"; exit 0; fi
[ "$1" = "--json" ] && shift
cmd=$1
echo "$* TMPDIR=${TMPDIR:-}" >> "$FAKE_LOG"
[ "$cmd" = notify ] && cp "$3" "$FAKE_LOG.results"
eval "how=\${FAKE_$(echo "$cmd" | tr a-z A-Z):-ok}"
case $how in
  ok) echo "{\"command\":\"$cmd\",\"status\":\"ok\",\"exit_code\":0}" ;;
  fail:*) code=${how#fail:}; echo "{\"command\":\"$cmd\",\"status\":\"failed\",\"exit_code\":$code}"; exit "$code" ;;
  slow)
    # `wait` on a background sleep is interrupted by the signal at once, so the stand-in ends
    # right after it (the race under test). The sleep holds none of the test's pipes: a kill
    # that reaches it before it exec'd is lost, and it then lingers harmlessly.
    s=""
    trap '[ -n "$s" ] && kill $s 2>/dev/null; echo "{\"command\":\"$cmd\",\"status\":\"failed\",\"exit_code\":75,\"error\":{\"kind\":\"interrupted\"}}"; exit 75' TERM
    sleep 30 </dev/null >/dev/null 2>&1 & s=$!
    echo started > "$FAKE_LOG.$cmd"
    wait $s ;;
  deaf)
    # The first SIGTERM never reaches it (as when it came between fork and exec): only a
    # second one stops it. Without one it ends after 30 s with 0.
    s=""
    stop() { [ -n "$s" ] && kill $s 2>/dev/null; echo "{\"command\":\"$cmd\",\"status\":\"failed\",\"exit_code\":75}"; exit 75; }
    trap 'trap stop TERM' TERM
    sleep 30 </dev/null >/dev/null 2>&1 & s=$!
    echo started > "$FAKE_LOG.$cmd"
    while kill -0 $s 2>/dev/null; do wait $s; done ;;
  sleep)
    if [ "${2:-}" = start ]; then echo started > "$FAKE_LOG.$cmd"; exec sleep 30; fi ;;
esac
"#;

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("pg-backups");
        std::fs::write(&bin, FAKE).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("log")).unwrap_or_default()
    }

    fn command(&self, shell: &str, envs: &[(&str, &str)]) -> Command {
        let mut cmd = match shell {
            // The images' /bin/sh (Alpine): busybox ash.
            "busybox" => {
                let mut c = Command::new(which("busybox"));
                c.arg("sh");
                c
            }
            _ => Command::new(which(shell)),
        };
        cmd.arg(script())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.path().display()))
            .env("FAKE_LOG", self.path().join("log"))
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, shell: &str, envs: &[(&str, &str)]) -> Output {
        self.command(shell, envs).output().unwrap()
    }

    fn spawn(&self, shell: &str, envs: &[(&str, &str)]) -> Child {
        self.command(shell, envs).spawn().unwrap()
    }

    /// Waits until the stand-in started `cmd` (it wrote its marker).
    fn wait_started(&self, cmd: &str) {
        let marker = self.path().join(format!("log.{cmd}"));
        let start = Instant::now();
        while !marker.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{cmd} never started: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn which(shell: &str) -> PathBuf {
    for dir in ["/bin", "/usr/bin"] {
        let p = Path::new(dir).join(shell);
        if p.exists() {
            return p;
        }
    }
    panic!("{shell} is not installed: run scripts/install-deps.sh (apt-get install {shell})")
}

const SHELLS: [&str; 3] = ["dash", "bash", "busybox"];

fn term(child: &Child) {
    // SAFETY: signalling our own child, as systemd, tini or Kubernetes would.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_sigterm_during_the_start_ping_starts_no_dump() {
    for shell in SHELLS {
        let fake = Fake::new();
        let child = fake.spawn(shell, &[("FAKE_PING", "sleep")]);
        fake.wait_started("ping");
        let started = Instant::now();
        term(&child);
        let out = child.wait_with_output().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{shell}: the slow ping held the cycle"
        );
        let log = fake.log();
        assert!(!log.contains("dump"), "{shell}: a dump started: {log}");
        assert_eq!(out.status.code(), Some(75), "{shell}: {log}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stopped by signal TERM before dump"),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(log.contains("ping fail 75"), "{shell}: {log}");
        assert!(log.contains("notify 75 "), "{shell}: {log}");
    }
}

#[test]
fn a_command_that_ends_right_after_the_signal_keeps_its_own_exit_code() {
    // The race the old loop lost: the child exits (75) while `wait` is interrupted by the
    // trapped signal, and the cycle reported the interrupted wait's 143. Many tries, since it
    // is a matter of timing.
    for shell in SHELLS {
        for attempt in 0..10 {
            let fake = Fake::new();
            let child = fake.spawn(shell, &[("FAKE_DUMP", "slow")]);
            fake.wait_started("dump");
            term(&child);
            let out = child.wait_with_output().unwrap();
            let got = lines(&out);
            assert_eq!(
                out.status.code(),
                Some(75),
                "{shell}, attempt {attempt}: {got:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                got.len(),
                1,
                "{shell}: ship and prune must not run: {got:?}"
            );
            assert_eq!(got[0]["error"]["kind"], "interrupted");
        }
    }
}

#[test]
fn a_signal_the_command_missed_is_passed_on_again() {
    for shell in SHELLS {
        let fake = Fake::new();
        let child = fake.spawn(shell, &[("FAKE_DUMP", "deaf")]);
        fake.wait_started("dump");
        let started = Instant::now();
        term(&child);
        let out = child.wait_with_output().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{shell}: the dump ran on"
        );
        assert_eq!(out.status.code(), Some(75), "{shell}: {out:?}");
        assert_eq!(lines(&out).len(), 1, "{shell}");
    }
}

#[test]
fn a_skipped_prune_line_has_every_field_of_a_result() {
    for shell in SHELLS {
        let fake = Fake::new();
        let before = chrono::Utc::now() - chrono::Duration::seconds(1);
        let out = fake.run(shell, &[("FAKE_DUMP", "fail:69")]);
        assert_eq!(out.status.code(), Some(69));
        let got = lines(&out);
        assert_eq!(got.len(), 3, "{got:?}");
        let skipped = &got[2];
        assert_eq!(skipped["command"], "prune");
        assert_eq!(skipped["status"], "skipped");
        assert_eq!(skipped["exit_code"], 0);
        assert_eq!(skipped["duration_ms"], 0);
        assert_eq!(skipped["version"], "9.8.7", "{skipped}");
        for field in ["started_at", "finished_at"] {
            let at = skipped[field].as_str().unwrap_or_else(|| panic!("{field}"));
            let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
            assert!(at >= before && at <= chrono::Utc::now(), "{field}: {at}");
        }
        assert!(skipped["reason"].as_str().unwrap().contains("exit 69"));
        assert!(!fake.log().contains("prune"), "prune ran");
    }
}

#[test]
fn the_env_file_gives_the_script_its_own_settings_and_the_environment_wins() {
    for shell in SHELLS {
        let fake = Fake::new();
        let tmp = fake.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let jsonl = fake.path().join("cycle.jsonl");
        let env_file = fake.path().join("env");
        std::fs::write(
            &env_file,
            format!(
                "# as .env.example writes them\nPG_BACKUPS_JSONL={}\nTMPDIR={}\nPG_BACKUPS_JSONL=/not/the/first\n",
                jsonl.display(),
                tmp.display()
            ),
        )
        .unwrap();
        let file = env_file.to_str().unwrap();
        let out = fake.run(shell, &[("PG_BACKUPS_ENV_FILE", file)]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let written = std::fs::read_to_string(&jsonl).unwrap_or_default();
        assert_eq!(written.lines().count(), 3, "{shell}: {written}");
        let log = fake.log();
        assert!(
            log.contains(&format!("dump TMPDIR={}", tmp.display())),
            "{shell}: TMPDIR did not reach the commands: {log}"
        );
        // Set in the environment (a unit's Environment=): the environment wins.
        let other = fake.path().join("other.jsonl");
        let out = fake.run(
            shell,
            &[
                ("PG_BACKUPS_ENV_FILE", file),
                ("PG_BACKUPS_JSONL", other.to_str().unwrap()),
            ],
        );
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(&other).unwrap().lines().count(),
            3,
            "{shell}"
        );
        assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), 3);
    }
}

#[test]
fn notify_urls_hear_of_a_cycle_once_with_every_line_of_it() {
    for shell in SHELLS {
        let fake = Fake::new();
        let out = fake.run(shell, &[("FAKE_DUMP", "fail:69")]);
        assert_eq!(out.status.code(), Some(69));
        let log = fake.log();
        let calls: Vec<&str> = log.lines().filter(|l| l.starts_with("notify ")).collect();
        assert_eq!(calls.len(), 1, "{shell}: once per cycle: {log}");
        assert!(calls[0].starts_with("notify 69 "), "{shell}: {log}");
        // After the verdict ping, so a slow chat service never delays healthchecks.
        let ping = log.find("ping fail 69").expect("the fail ping");
        assert!(log.find("notify 69").unwrap() > ping, "{shell}: {log}");
        let results = std::fs::read_to_string(fake.path().join("log.results")).unwrap();
        let commands: Vec<String> = results
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["command"].to_string())
            .collect();
        assert_eq!(commands, ["\"dump\"", "\"ship\"", "\"prune\""], "{shell}");

        let fake = Fake::new();
        let out = fake.run(shell, &[]);
        assert!(out.status.success());
        let log = fake.log();
        assert_eq!(log.matches("notify ").count(), 1, "{shell}: {log}");
        assert!(log.contains("notify 0 "), "{shell}: {log}");
    }
}
