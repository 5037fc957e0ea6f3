//! The PostgreSQL client tools (`pg_dump`, `pg_dumpall`, `psql`), run as child processes.
//!
//! The password reaches them through a 0600 PGPASSFILE in a private temporary folder, never
//! through arguments; `-w` makes them fail instead of prompting; stderr is classified into
//! the exit codes of DESIGN.md (69 unreachable, 77 refused, 66 missing database).

mod error;
pub mod toolset;

pub use error::{FailureClass, PgError};
pub use toolset::Toolset;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::config::PgConfig;
use crate::process::{ChildEnv, Running, Tail, describe_status};

/// libpq settings of the operator's that the tools may need (TLS files, GSSAPI, service
/// files, target session attributes), passed on when set and not empty. Connection target and
/// credentials are ours to set; `PGPASSWORD` and `PGDATABASE` never pass.
const LIBPQ_PASS_THROUGH: &[&str] = &[
    "PGCONNECT_TIMEOUT",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGSSLCERTMODE",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGSSLNEGOTIATION",
    "PGREQUIRESSL",
    "PGREQUIREAUTH",
    "PGCHANNELBINDING",
    "PGGSSENCMODE",
    "PGGSSDELEGATION",
    "PGKRBSRVNAME",
    "PGGSSLIB",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
    "PGHOSTADDR",
    "PGOPTIONS",
];
use crate::secret::Secret;

/// A PGPASSFILE that exists only in memory (`memfd`), so nothing with the password is ever
/// on disk and a `kill -9` leaves nothing behind. It is named by its `/proc/self/fd` path,
/// which libpq opens afresh on every (re)connection. The descriptor is close-on-exec: only the
/// PostgreSQL tools inherit it (see [`PgTools::command`]), never ssh, rsync or anything else
/// started while a dump runs.
fn memory_passfile(line: &str) -> std::io::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let name = c"pg-backups-pgpass";
    // SAFETY: memfd_create with a valid C string; the fd is owned right after.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fchmod on our own descriptor; libpq refuses group/world-readable files.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut file = std::fs::File::from(fd.try_clone()?);
    file.write_all(line.as_bytes())?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !path.exists() {
        return Err(std::io::Error::other("/proc is not mounted"));
    }
    Ok((fd, path))
}

/// Lets the child of `cmd` (and its own children: pg_dumpall's pg_dump) inherit `fd`, which
/// stays close-on-exec in this process so that no other child does.
fn inherit_in_child(cmd: &mut Command, fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl is async-signal-safe; it changes the flags of the child's copy only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The fallback: a 0600 file in a private temporary folder, removed when the run ends.
fn temp_passfile(line: &str) -> Result<(tempfile::TempDir, PathBuf), PgError> {
    let io = |context: &str| {
        let context = context.to_string();
        move |source| PgError::Io { context, source }
    };
    let dir = tempfile::Builder::new()
        .prefix("pg-backups-")
        .tempdir()
        .map_err(io("creating a private folder for the password file"))?;
    let path = dir.path().join("pgpass");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(io("writing the private password file"))?;
    Ok((dir, path))
}

/// How to run the PostgreSQL tools against the configured server.
pub struct PgTools {
    /// The tools in use (see [`toolset`]); `None` until a set is found: PATH.
    current: Option<Toolset>,
    toolsets: Vec<Toolset>,
    host: String,
    /// PGHOST was not given: the default host, which may not exist here.
    host_defaulted: bool,
    port: u16,
    user: String,
    sslmode: Option<String>,
    passfile: Option<PathBuf>,
    password: Option<Secret>,
    /// Used when the password cannot be written to a passfile (it has a line break).
    password_env: bool,
    /// The in-memory password file, inherited by the tools (and by pg_dumpall's pg_dump).
    _passfile_fd: Option<std::os::fd::OwnedFd>,
    _private: Option<tempfile::TempDir>,
    restrict: std::sync::OnceLock<bool>,
}

impl PgTools {
    pub fn new(cfg: &PgConfig) -> Result<PgTools, PgError> {
        let toolsets = toolset::discover(&cfg.bin_dirs);
        let mut tools = PgTools {
            // Any psql can ask the server its version; the choice for the work comes after.
            current: toolset::newest(&toolsets).cloned(),
            toolsets,
            host: cfg.host.clone(),
            host_defaulted: cfg.host_defaulted,
            port: cfg.port,
            user: cfg.user.clone(),
            sslmode: cfg.sslmode.clone(),
            passfile: cfg.passfile.clone(),
            password: cfg.password.clone(),
            password_env: false,
            _passfile_fd: None,
            _private: None,
            restrict: std::sync::OnceLock::new(),
        };
        if let Some(pw) = &cfg.password {
            if pw.expose().contains(['\n', '\r']) {
                tools.password_env = true;
            } else {
                let escaped = pw.expose().replace('\\', "\\\\").replace(':', "\\:");
                let line = format!("*:*:*:*:{escaped}\n");
                match memory_passfile(&line) {
                    Ok((fd, path)) => {
                        tools.passfile = Some(path);
                        tools._passfile_fd = Some(fd);
                    }
                    Err(e) => {
                        tracing::debug!("no in-memory password file ({e}); using a temp file");
                        let (dir, path) = temp_passfile(&line)?;
                        tools.passfile = Some(path);
                        tools._private = Some(dir);
                    }
                }
            }
        }
        Ok(tools)
    }

    /// A command for `tool` that sees the connection settings and nothing else of ours: no S3
    /// key, no token; the password only through the in-memory PGPASSFILE.
    pub fn command(&self, tool: &str) -> Command {
        let program = self.program(tool).into_os_string();
        let mut env = ChildEnv::base();
        for name in LIBPQ_PASS_THROUGH {
            env = env.pass(name);
        }
        env = env
            .set("PGHOST", &self.host)
            .set("PGPORT", self.port.to_string())
            .set("PGUSER", &self.user)
            .set("PGAPPNAME", "pg-backups");
        if !env.has("PGCONNECT_TIMEOUT") {
            env = env.set("PGCONNECT_TIMEOUT", "10");
        }
        if let Some(mode) = &self.sslmode {
            env = env.set("PGSSLMODE", mode);
        }
        if let Some(pf) = &self.passfile {
            env = env.set("PGPASSFILE", pf);
        }
        if self.password_env
            && let Some(pw) = &self.password
        {
            env = env.set("PGPASSWORD", pw.expose());
        }
        let mut cmd = env.command(program);
        if let Some(fd) = &self._passfile_fd {
            inherit_in_child(&mut cmd, fd);
        }
        cmd
    }

    /// The tool of the set in use (from PATH when none was found).
    pub fn program(&self, tool: &str) -> PathBuf {
        match self.bin_dir() {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        }
    }

    fn bin_dir(&self) -> Option<&std::path::Path> {
        self.current.as_ref().and_then(|s| s.dir.as_deref())
    }

    /// The tools in use, for the JSON result.
    pub fn current(&self) -> Option<&Toolset> {
        self.current.as_ref()
    }

    /// Chooses the tools to dump `server` with and checks that pg_dump and pg_dumpall are
    /// there and new enough; returns pg_dump's version.
    pub fn use_for_dump(&mut self, server: &ServerVersion) -> Result<ToolVersion, PgError> {
        match toolset::for_dump(&self.toolsets, server.major()) {
            Ok(set) => self.current = Some(set.clone()),
            Err(Some(newest)) => {
                return Err(PgError::ToolTooOld {
                    tool: "pg_dump".into(),
                    tool_version: newest.version.text.clone(),
                    tool_path: newest.path("pg_dump"),
                    server_version: server.text.clone(),
                    server_major: server.major(),
                });
            }
            // Nothing found: running it says what is missing.
            Err(None) => {}
        }
        let pg_dump = self.check_tool("pg_dump", server)?;
        self.check_tool("pg_dumpall", server)?;
        Ok(pg_dump)
    }

    /// Chooses the psql (and pg_restore, at least `archive_major` for a custom-format file)
    /// to restore into `server`; returns psql's version.
    pub fn use_for_restore(
        &mut self,
        server: &ServerVersion,
        archive_major: u32,
    ) -> Result<ToolVersion, PgError> {
        match toolset::for_restore(&self.toolsets, server.major(), archive_major) {
            Some(set) => self.current = Some(set.clone()),
            None if archive_major > 0 => {
                let newest = toolset::newest(&self.toolsets);
                return Err(PgError::ToolTooOld {
                    tool: "pg_restore".into(),
                    tool_version: newest.map(|n| n.version.text.clone()).unwrap_or_default(),
                    tool_path: newest.map(|n| n.path("pg_restore")).unwrap_or_default(),
                    server_version: format!("an archive of pg_dump {archive_major}"),
                    server_major: archive_major,
                });
            }
            None => {}
        }
        self.tool_version("psql")
    }

    /// Whether this psql has `\restrict` (see `restore::filter`), asked once.
    pub fn psql_has_restrict(&self) -> Result<bool, PgError> {
        if let Some(known) = self.restrict.get() {
            return Ok(*known);
        }
        let v = self.tool_version("psql")?;
        let has = psql_has_restrict(v.major, v.minor);
        let _ = self.restrict.set(has);
        Ok(has)
    }

    /// Refuses a psql without `\restrict`: replays run only in its restricted mode.
    pub fn require_restrict(&self) -> Result<(), PgError> {
        if self.psql_has_restrict()? {
            return Ok(());
        }
        let v = self.tool_version("psql")?;
        Err(PgError::PsqlWithoutRestrict {
            version: v.text,
            psql_path: self
                .current
                .as_ref()
                .map(|s| s.path("psql"))
                .unwrap_or_else(|| "psql".to_string()),
        })
    }

    /// The secrets to redact from anything a tool printed.
    pub fn redact(&self, text: &str) -> String {
        match &self.password {
            Some(pw) => crate::secret::redact(text, &[pw]),
            None => text.to_string(),
        }
    }

    /// Turns a failed tool run into an error with a classified exit code.
    pub fn failure(&self, tool: &str, context: &str, status: &str, stderr: &str) -> PgError {
        let mut stderr = self.redact(stderr);
        if self._passfile_fd.is_some()
            && let Some(path) = &self.passfile
        {
            // Our in-memory passfile means nothing to the operator; say where it came from.
            stderr = stderr.replace(
                &format!("password retrieved from file \"{}\"", path.display()),
                "password taken from PGPASSWORD / PGPASSWORD_FILE",
            );
        }
        if self.host_defaulted && stderr.contains("could not translate host name") {
            stderr = format!(
                "PGHOST is not set and the default host {} does not resolve: set PGHOST (a host \
                 name, or /var/run/postgresql for the local socket)",
                self.host
            );
        }
        PgError::Failed {
            tool: tool.to_string(),
            context: context.to_string(),
            class: FailureClass::from_stderr(&stderr),
            detail: if stderr.trim().is_empty() {
                status.to_string()
            } else {
                stderr.trim().to_string()
            },
            host: format!("{}:{}", self.host, self.port),
        }
    }

    pub fn spawn_error(&self, tool: &str, e: std::io::Error) -> PgError {
        PgError::Spawn {
            tool: tool.to_string(),
            bin_dir: self.bin_dir().map(std::path::Path::to_path_buf),
            source: e,
        }
    }

    /// Runs one SQL statement with psql in `database` and returns its rows of `columns`
    /// fields. Rows and fields are NUL-separated, so names with any character come back intact.
    pub fn query(
        &self,
        database: &str,
        sql: &str,
        columns: usize,
    ) -> Result<Vec<Vec<String>>, PgError> {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-w",
            "-z",
            "-0",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg("-d")
        .arg(conninfo(database))
        .arg("-c")
        .arg(sql);
        let mut child = Running::spawn(cmd, "psql", Stdio::null(), true, Tail::default())
            .map_err(|e| self.spawn_error("psql", e))?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.take_stdout() {
            std::io::Read::read_to_end(&mut stdout, &mut out).map_err(|e| PgError::Io {
                context: "reading psql output".into(),
                source: e,
            })?;
        }
        let finished = child.finish().map_err(|e| PgError::Io {
            context: "waiting for psql".into(),
            source: e,
        })?;
        if !finished.status.success() {
            return Err(self.failure(
                "psql",
                &format!("querying database \"{database}\""),
                &describe_status(&finished.status),
                &finished.stderr.text(),
            ));
        }
        // With -z -0 every field and every record ends with NUL, so the fields come in a
        // flat sequence that we cut into rows.
        let text = String::from_utf8_lossy(&out);
        let text = text.strip_suffix('\0').unwrap_or(&text);
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = text.split('\0').map(str::to_string).collect();
        if columns == 0 || !fields.len().is_multiple_of(columns) {
            return Err(PgError::Unexpected(format!(
                "{} fields for rows of {columns} columns from `{sql}`",
                fields.len()
            )));
        }
        Ok(fields.chunks(columns).map(<[String]>::to_vec).collect())
    }

    /// One value, e.g. `SHOW server_version_num`.
    pub fn query_value(&self, database: &str, sql: &str) -> Result<String, PgError> {
        self.query(database, sql, 1)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| PgError::Unexpected(format!("no result for `{sql}`")))
    }

    /// The server's version, from `server_version_num` (e.g. 170010) and `server_version`.
    pub fn server_version(&self) -> Result<ServerVersion, PgError> {
        let num = self.query_value("postgres", "SELECT current_setting('server_version_num')")?;
        let num: u32 = num
            .trim()
            .parse()
            .map_err(|_| PgError::Unexpected(format!("server_version_num is {num:?}")))?;
        let text = self.query_value("postgres", "SELECT current_setting('server_version')")?;
        Ok(ServerVersion {
            num,
            text: text.split_whitespace().next().unwrap_or("").to_string(),
        })
    }

    /// `tool --version`, e.g. "17.10".
    pub fn tool_version(&self, tool: &str) -> Result<ToolVersion, PgError> {
        let mut cmd = self.command(tool);
        cmd.arg("--version");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(tool, e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ToolVersion::parse(&text).ok_or_else(|| {
            PgError::Unexpected(format!("cannot read the version of {tool} from {text:?}"))
        })
    }

    /// Refuses tools older than the server: an old pg_dump cannot dump a newer server.
    pub fn check_tool(&self, tool: &str, server: &ServerVersion) -> Result<ToolVersion, PgError> {
        let v = self.tool_version(tool)?;
        if v.major < server.major() {
            return Err(PgError::ToolTooOld {
                tool: tool.to_string(),
                tool_path: self
                    .current
                    .as_ref()
                    .map(|s| s.path(tool))
                    .unwrap_or_else(|| tool.to_string()),
                tool_version: v.text.clone(),
                server_version: server.text.clone(),
                server_major: server.major(),
            });
        }
        Ok(v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub num: u32,
    pub text: String,
}

impl ServerVersion {
    pub fn major(&self) -> u32 {
        if self.num >= 100_000 {
            self.num / 10_000
        } else {
            self.num / 100
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    pub major: u32,
    /// 0 for a beta or release candidate.
    pub minor: u32,
    pub text: String,
}

impl ToolVersion {
    /// Parses "pg_dump (PostgreSQL) 17.10" or "psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
    pub fn parse(text: &str) -> Option<ToolVersion> {
        let after = text.split(") ").nth(1)?;
        let version = after.split_whitespace().next()?;
        let mut parts = version.split(['.', 'b', 'r', 'd']);
        let major = parts.next()?.parse().ok()?;
        let minor = if version.contains('.') {
            parts.next().and_then(|m| m.parse().ok()).unwrap_or(0)
        } else {
            0
        };
        Some(ToolVersion {
            major,
            minor,
            text: version.to_string(),
        })
    }
}

/// A libpq connection string that selects `database` whatever characters its name has
/// (a bare name containing `=` would otherwise be taken as a connection string).
pub fn conninfo(database: &str) -> String {
    let escaped = database.replace('\\', "\\\\").replace('\'', "\\'");
    format!("dbname='{escaped}'")
}

/// Quotes an identifier for SQL, as `quote_ident` does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL. An escape string (`E'…'`) with both the backslash and
/// the quote escaped means the same whatever `standard_conforming_strings` says (a plain
/// `'…'` literal would not: with it off, `\'` in a name would end the string early).
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Whether a psql of this version has `\restrict` (added in the August 2025 minor releases).
pub fn psql_has_restrict(major: u32, minor: u32) -> bool {
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_support_follows_the_minor_releases() {
        assert!(!psql_has_restrict(15, 13));
        assert!(psql_has_restrict(15, 14));
        assert!(psql_has_restrict(17, 10));
        assert!(!psql_has_restrict(12, 30));
        assert!(psql_has_restrict(18, 0));
    }

    #[test]
    fn tool_versions_parse_with_and_without_distribution_suffix() {
        let v = ToolVersion::parse("pg_dump (PostgreSQL) 17.10\n").unwrap();
        assert_eq!((v.major, v.minor, v.text.as_str()), (17, 10, "17.10"));
        let v = ToolVersion::parse("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").unwrap();
        assert_eq!(v.major, 15);
        let v = ToolVersion::parse("pg_dump (PostgreSQL) 18beta1").unwrap();
        assert_eq!(v.major, 18);
    }

    #[test]
    fn server_major_from_version_num() {
        let v = |num| {
            ServerVersion {
                num,
                text: String::new(),
            }
            .major()
        };
        assert_eq!(v(170010), 17);
        assert_eq!(v(150018), 15);
        assert_eq!(v(90624), 906);
    }

    #[test]
    fn conninfo_quotes_every_name() {
        assert_eq!(conninfo("my db"), "dbname='my db'");
        assert_eq!(conninfo("O'Brien"), "dbname='O\\'Brien'");
        assert_eq!(conninfo("a=b"), "dbname='a=b'");
        assert_eq!(conninfo("back\\slash"), "dbname='back\\\\slash'");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("Sales-2025"), "\"Sales-2025\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("O'Brien"), "E'O\\'Brien'");
        assert_eq!(quote_literal("back\\slash'"), "E'back\\\\slash\\''");
    }
}
