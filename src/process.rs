//! Child processes (pg_dump, psql, rsync, ssh) in one place: built with an empty environment
//! plus an allow-list per tool (so no child sees a secret it does not need: the PostgreSQL
//! tools never see S3 keys, ssh and rsync never see the database password), stderr drained on
//! its own thread so a chatty child never blocks, the child killed and reaped when its guard is
//! dropped on an error path, and registered so that SIGINT/SIGTERM stop it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

/// What a child may see of our environment: nothing but what is listed here.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

/// Every tool gets these (when set and not empty): finding programs, the home directory
/// (ssh's config, libpq's ~/.pgpass), language and time zone.
const BASE: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

impl ChildEnv {
    /// The base allow-list, taken from our own environment.
    pub fn base() -> ChildEnv {
        let mut env = ChildEnv::default();
        for name in BASE {
            env = env.pass(name);
        }
        for (name, value) in std::env::vars_os() {
            let is_locale = name.to_str().is_some_and(|n| n.starts_with("LC_"));
            if is_locale && !value.is_empty() {
                env.vars.push((name, value));
            }
        }
        env
    }

    /// Passes `name` on from our environment when it is set and not empty (an empty variable
    /// means "not set": libpq would choke on `PGSSLMODE=`).
    pub fn pass(mut self, name: &str) -> ChildEnv {
        if let Some(value) = std::env::var_os(name)
            && !value.is_empty()
        {
            self.vars.retain(|(n, _)| n != name);
            self.vars.push((name.into(), value));
        }
        self
    }

    /// Sets `name` to `value`.
    pub fn set(mut self, name: &str, value: impl AsRef<OsStr>) -> ChildEnv {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.as_ref().to_os_string()));
        self
    }

    /// Whether `name` will be set for the child.
    pub fn has(&self, name: &str) -> bool {
        self.vars.iter().any(|(n, _)| n == name)
    }

    /// A command for `program` that sees exactly these variables.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// Receives the child's stderr, line by line.
pub trait LineSink: Send + 'static {
    fn line(&mut self, line: &str);
}

/// Keeps the last lines of stderr (bounded), for the error report.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

const TAIL_BYTES: usize = 16 * 1024;

impl Tail {
    pub fn text(&self) -> String {
        let v: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        v.join("\n")
    }
}

impl LineSink for Tail {
    fn line(&mut self, line: &str) {
        let line = if line.len() > 2048 {
            let mut end = 2048;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            &line[..end]
        } else {
            line
        };
        self.bytes += line.len();
        self.lines.push_back(line.to_string());
        while self.bytes > TAIL_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// A running child. Dropping it without [`Running::finish`] kills and reaps it.
pub struct Running<S: LineSink> {
    program: String,
    child: Child,
    stderr: Option<JoinHandle<S>>,
    reaped: bool,
}

/// What a finished child left behind.
pub struct Finished<S> {
    pub status: ExitStatus,
    pub stderr: S,
}

impl<S: LineSink> Running<S> {
    /// Spawns `cmd` with stdout piped (or not) and stderr drained into `sink`.
    pub fn spawn(
        mut cmd: Command,
        program: &str,
        stdin: Stdio,
        pipe_stdout: bool,
        sink: S,
    ) -> std::io::Result<Running<S>> {
        cmd.stdin(stdin)
            .stdout(if pipe_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        crate::signals::register_child(child.id());
        let stderr = child.stderr.take().map(|pipe| {
            std::thread::spawn(move || {
                let mut sink = sink;
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf);
                            sink.line(text.trim_end_matches(['\n', '\r']));
                        }
                    }
                }
                sink
            })
        });
        Ok(Running {
            program: program.to_string(),
            child,
            stderr,
            reaped: false,
        })
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// Waits for the child and its stderr.
    pub fn finish(mut self) -> std::io::Result<Finished<S>> {
        // Close our end of stdin so a child reading it sees EOF.
        drop(self.child.stdin.take());
        drop(self.child.stdout.take());
        crate::signals::unregister_child(self.child.id());
        let status = self.child.wait();
        self.reaped = true;
        let sink = match self.stderr.take().map(|h| h.join()) {
            Some(Ok(sink)) => Some(sink),
            _ => None,
        };
        let status = status?;
        let stderr = sink.ok_or_else(|| std::io::Error::other("stderr reader thread panicked"))?;
        Ok(Finished { status, stderr })
    }

    /// Kills the child now and reaps it, returning what it wrote to stderr.
    pub fn kill(mut self) -> Option<S> {
        self.kill_and_reap();
        self.stderr.take().and_then(|h| h.join().ok())
    }

    fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        crate::signals::unregister_child(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl<S: LineSink> Drop for Running<S> {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        drop(self.child.stdout.take());
        self.kill_and_reap();
        // The stderr thread ends on EOF now that the child is gone.
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

/// Grows a pipe's buffer so the producer (pg_dump) keeps working while we compress.
pub fn enlarge_pipe(fd: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: fcntl on a pipe fd we own; failure only means the default size stays.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
}

/// Describes how a child ended, for messages.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".to_string(),
    }
}
