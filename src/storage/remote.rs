//! A remote host over rsync/ssh (`RSYNC_USER@RSYNC_HOST:RSYNC_PATH`).
//!
//! `rsync` and `ssh` run as child processes with `BatchMode=yes` (never a prompt) and strict
//! host key checking against a known_hosts file; only `RSYNC_ACCEPT_NEW_HOST_KEYS=true` trusts
//! a new host on first contact (a changed key is refused either way). One ssh connection is
//! shared by every command of a run (`ControlMaster`). Remote commands get validated folder
//! names only, and every argument is single-quoted for the remote shell.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{ChildStdout, Command, Stdio};

use super::hash::sha256_file;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::local::LocalFolder;
use super::{FolderEntry, PutStats, Storage, StorageError, sort_newest_first};
use crate::backup::{
    BackupError, FolderName, MANIFEST_FILE, Manifest, PIN_FILE, is_safe_file_name,
};
use crate::config::{HostKeys, RsyncConfig, SourceKind};
use crate::process::{ChildEnv, Running, Tail, describe_status};

/// What ssh and rsync may see of our environment: the base list and the ssh agent. Never the
/// database password, an S3 key or a notification token.
fn ssh_env() -> ChildEnv {
    ChildEnv::base().pass("SSH_AUTH_SOCK")
}

pub struct RemoteStorage {
    host: String,
    user: String,
    port: u16,
    root: String,
    ssh_options: Vec<String>,
    /// Holds the shared connection's socket; removed after `Drop` ends the connection.
    _control_dir: tempfile::TempDir,
    location: String,
}

/// Quotes one argument for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl RemoteStorage {
    pub fn new(cfg: &RsyncConfig) -> Result<RemoteStorage, StorageError> {
        let control_dir = tempfile::Builder::new()
            .prefix("pg-backups-ssh-")
            .tempdir()
            .map_err(|e| StorageError::Io {
                context: "creating a private folder for the ssh connection".into(),
                source: e,
            })?;
        let host_file = match &cfg.host_keys {
            HostKeys::Known(f) | HostKeys::AcceptNew(f) => f,
        };
        for (var, path) in [
            ("RSYNC_SSH_KEY", cfg.ssh_key.as_ref()),
            ("RSYNC_KNOWN_HOSTS", Some(host_file)),
        ] {
            if let Some(p) = path
                && p.to_string_lossy().contains(['\'', '"', '\n', ' '])
            {
                return Err(StorageError::Invalid(format!(
                    "{var}={} contains a quote, a space or a line break, which ssh options cannot carry",
                    p.display()
                )));
            }
        }
        let checking = match &cfg.host_keys {
            HostKeys::Known(_) => "StrictHostKeyChecking=yes",
            HostKeys::AcceptNew(file) => {
                if let Some(dir) = file.parent() {
                    use std::os::unix::fs::DirBuilderExt;
                    let _ = std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir);
                }
                "StrictHostKeyChecking=accept-new"
            }
        };
        let mut ssh_options = vec!["-p".to_string(), cfg.port.to_string()];
        if let Some(key) = &cfg.ssh_key {
            ssh_options.extend([
                "-i".to_string(),
                key.display().to_string(),
                "-o".to_string(),
                "IdentitiesOnly=yes".to_string(),
            ]);
        }
        for option in [
            "BatchMode=yes".to_string(),
            "ConnectTimeout=10".to_string(),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
            "LogLevel=ERROR".to_string(),
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}/%C", control_dir.path().display()),
            "ControlPersist=30".to_string(),
            checking.to_string(),
            format!("UserKnownHostsFile={}", host_file.display()),
            // ssh's global known_hosts is not ours to trust.
            "GlobalKnownHostsFile=/dev/null".to_string(),
        ] {
            ssh_options.push("-o".to_string());
            ssh_options.push(option);
        }
        Ok(RemoteStorage {
            host: cfg.host.clone(),
            user: cfg.user.clone(),
            port: cfg.port,
            root: cfg.path.clone(),
            location: format!("{}@{}:{}", cfg.user, cfg.host, cfg.path),
            ssh_options,
            _control_dir: control_dir,
        })
    }

    fn target(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    fn folder_path(&self, name: &str) -> String {
        format!("{}/{name}", self.root.trim_end_matches('/'))
    }

    fn ssh_command(&self, remote: &str) -> Command {
        let mut cmd = ssh_env().command("ssh");
        cmd.args(&self.ssh_options)
            .arg(self.target())
            .arg("--")
            .arg(remote);
        cmd
    }

    /// The `-e` value for rsync: the same ssh options, quoted for rsync's own splitting.
    fn rsync_shell(&self) -> String {
        let mut parts = vec!["ssh".to_string()];
        parts.extend(self.ssh_options.iter().map(|o| sh_quote(o)));
        parts.join(" ")
    }

    fn rsync_command(&self) -> Command {
        let mut cmd = ssh_env().command("rsync");
        cmd.arg("-s").arg("-e").arg(self.rsync_shell());
        cmd
    }

    /// Runs a remote shell command and returns its stdout; failures are classified.
    fn run(&self, what: &str, cmd: Command) -> Result<Vec<u8>, StorageError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = Running::spawn(cmd, &program, Stdio::null(), true, Tail::default())
            .map_err(|e| spawn_error(&program, e))?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.take_stdout() {
            stdout.read_to_end(&mut out).map_err(|e| StorageError::Io {
                context: format!("reading the output of {program}"),
                source: e,
            })?;
        }
        let finished = child.finish().map_err(|e| StorageError::Io {
            context: format!("waiting for {program}"),
            source: e,
        })?;
        if !finished.status.success() {
            return Err(self.classify(
                what,
                &describe_status(&finished.status),
                &finished.stderr.text(),
            ));
        }
        Ok(out)
    }

    fn ssh(&self, what: &str, remote: &str) -> Result<Vec<u8>, StorageError> {
        self.run(what, self.ssh_command(remote))
    }

    fn classify(&self, what: &str, status: &str, stderr: &str) -> StorageError {
        let destination = self.location.clone();
        let s = stderr.to_ascii_lowercase();
        let has = |n: &[&str]| n.iter().any(|x| s.contains(x));
        let detail = format!(
            "{what}: {}",
            if stderr.trim().is_empty() {
                status.to_string()
            } else {
                stderr.trim().to_string()
            }
        );
        if has(&[
            "host key verification failed",
            "remote host identification has changed",
            "host key for",
        ]) {
            return StorageError::Denied {
                destination,
                detail: format!(
                    "{detail}; the host key of {} is not the one known: if the server was \
                     reinstalled, update RSYNC_KNOWN_HOSTS (ssh-keyscan -p {} {}); otherwise \
                     this may be an attack",
                    self.host, self.port, self.host
                ),
            };
        }
        if has(&[
            "permission denied (publickey",
            "permission denied, please try again",
            "too many authentication failures",
            "no more authentication methods",
        ]) {
            return StorageError::Denied {
                destination,
                detail: format!(
                    "{detail}; check RSYNC_SSH_KEY and that its public key is in ~{}/.ssh/authorized_keys on {}",
                    self.user, self.host
                ),
            };
        }
        if has(&[
            "connection refused",
            "could not resolve hostname",
            "no route to host",
            "connection timed out",
            "network is unreachable",
            "connection closed by",
            "connection reset",
            "kex_exchange_identification",
            "operation timed out",
        ]) {
            return StorageError::Unreachable {
                destination,
                detail: format!("{detail}; check RSYNC_HOST and RSYNC_PORT"),
            };
        }
        if s.contains("change_dir") && s.contains("no such file or directory") {
            return StorageError::NotFound(format!("{destination}: {detail}"));
        }
        if has(&["no space left on device", "disk quota exceeded"]) {
            return StorageError::Io {
                context: format!("{destination}: {detail}"),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            };
        }
        if has(&[
            "permission denied",
            "read-only file system",
            "cannot create directory",
            "operation not permitted",
            "not a directory",
        ]) {
            return StorageError::CannotCreate {
                destination,
                detail: format!("{detail}; check that RSYNC_USER may write RSYNC_PATH"),
            };
        }
        StorageError::Failed {
            destination,
            detail,
        }
    }

    /// Every file under the root, as `(folder, file) -> (size, mtime)`, and folder names.
    fn listing(&self) -> Result<(Vec<String>, Vec<RemoteFile>), StorageError> {
        let mut cmd = self.rsync_command();
        cmd.args(["--list-only", "--no-h", "-r"]).arg(format!(
            "{}:{}/",
            self.target(),
            self.root.trim_end_matches('/')
        ));
        let out = match self.run("listing the remote backups", cmd) {
            Ok(out) => out,
            Err(StorageError::NotFound(_)) => {
                return Err(StorageError::NotFound(format!(
                    "RSYNC_PATH {} does not exist on {}: run `pg-backups ship` first, or fix RSYNC_PATH",
                    self.root, self.host
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(parse_list_only(&String::from_utf8_lossy(&out)))
    }

    /// Fetches every folder's manifest and pin marker in one rsync run.
    fn fetch_markers(&self) -> Result<tempfile::TempDir, StorageError> {
        let dir = tempfile::Builder::new()
            .prefix("pg-backups-manifests-")
            .tempdir()
            .map_err(|e| StorageError::Io {
                context: "creating a temporary folder for manifests".into(),
                source: e,
            })?;
        let mut cmd = self.rsync_command();
        cmd.args(["-r", "--exclude=*/*/", "--include=*/"])
            .arg(format!("--include={MANIFEST_FILE}"))
            .arg(format!("--include={PIN_FILE}"))
            .arg("--exclude=*")
            .arg(format!(
                "{}:{}/",
                self.target(),
                self.root.trim_end_matches('/')
            ))
            .arg(format!("{}/", dir.path().display()));
        self.run("reading the remote manifests", cmd)?;
        Ok(dir)
    }

    /// SHA-256 of files in a remote folder, by name.
    fn remote_sha256(
        &self,
        folder: &FolderName,
        files: &[&str],
    ) -> Result<BTreeMap<String, String>, StorageError> {
        let mut remote = format!(
            "cd {} && sha256sum --",
            sh_quote(&self.folder_path(folder.as_str()))
        );
        for f in files {
            remote.push(' ');
            remote.push_str(&sh_quote(f));
        }
        let out = self.ssh("checking the copied files", &remote)?;
        let mut sums = BTreeMap::new();
        for line in String::from_utf8_lossy(&out).lines() {
            if let Some((hash, name)) = line.split_once("  ") {
                sums.insert(name.trim_start_matches('*').to_string(), hash.to_string());
            }
        }
        Ok(sums)
    }

    /// Copies files into `dest`. `checksum` compares contents instead of size and time, for
    /// a second attempt at a file that arrived damaged but looks unchanged.
    fn send_files(
        &self,
        source: &LocalFolder,
        files: &[&str],
        dest: &str,
        checksum: bool,
    ) -> Result<(), StorageError> {
        let mut cmd = self.rsync_command();
        cmd.args(["-t", "--chmod=D700,F600", "--partial-dir=.rsync-partial"]);
        if checksum {
            cmd.arg("--checksum");
        }
        for f in files {
            cmd.arg(source.path(f));
        }
        cmd.arg(format!("{}:{dest}/", self.target()));
        self.run("copying files", cmd).map(|_| ())
    }

    /// rsync does not fsync: the files (and the folder entries) are flushed to disk on the
    /// remote host before anything depends on them being there. `sync FILE…` flushes just
    /// those files where coreutils supports it; plain `sync` otherwise.
    fn flush(&self, folder: &FolderName, files: &[&str]) -> Result<(), StorageError> {
        let mut list = String::new();
        for f in files {
            list.push(' ');
            list.push_str(&sh_quote(f));
        }
        let remote = format!(
            "cd {} && {{ sync --{list} . 2>/dev/null || sync; }}",
            sh_quote(&self.folder_path(folder.as_str()))
        );
        self.ssh("flushing the copied files to disk", &remote)
            .map(|_| ())
    }

    /// Copies files and checks each one's SHA-256 on the remote host; a file that arrived
    /// damaged gets one more copy, compared by content, before the run fails.
    fn send_checked(
        &self,
        source: &LocalFolder,
        expected: &[(&str, &str)],
        dest: &str,
    ) -> Result<(), StorageError> {
        let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        self.send_files(source, &names, dest, false)?;
        self.flush(&source.folder, &names)?;
        let mut bad = self.mismatches(&source.folder, expected)?;
        if !bad.is_empty() {
            tracing::warn!(
                files = ?bad.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                "files arrived damaged at {}; copying them again", self.location
            );
            let again: Vec<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
            self.send_files(source, &again, dest, true)?;
            self.flush(&source.folder, &again)?;
            bad = self.mismatches(&source.folder, expected)?;
        }
        match bad.first() {
            None => Ok(()),
            Some((name, got)) => Err(StorageError::Failed {
                destination: self.location.clone(),
                detail: format!(
                    "{dest}/{name} arrived with SHA-256 {got} instead of {}, twice",
                    expected
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, h)| *h)
                        .unwrap_or_default()
                ),
            }),
        }
    }

    /// The files whose remote SHA-256 is not the expected one, with what they have.
    fn mismatches(
        &self,
        folder: &FolderName,
        expected: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, StorageError> {
        let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        let sums = self.remote_sha256(folder, &names)?;
        Ok(expected
            .iter()
            .filter(|(name, hash)| sums.get(*name).map(String::as_str) != Some(*hash))
            .map(|(name, _)| {
                (
                    name.to_string(),
                    sums.get(*name)
                        .cloned()
                        .unwrap_or_else(|| "(missing)".into()),
                )
            })
            .collect())
    }
}

impl Drop for RemoteStorage {
    fn drop(&mut self) {
        // Ends the shared connection; a lingering master would otherwise outlive us by 30 s.
        let _ = ssh_env()
            .command("ssh")
            .args(&self.ssh_options)
            .args(["-O", "exit"])
            .arg(self.target())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn_error(program: &str, e: std::io::Error) -> StorageError {
    StorageError::Io {
        context: format!("cannot run {program} (install openssh-client and rsync)"),
        source: e,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteFile {
    folder: String,
    file: String,
    size: u64,
    modified: Option<DateTime<Utc>>,
}

/// Parses `rsync --list-only --no-h -r` output: `perms size date time path`.
fn parse_list_only(text: &str) -> (Vec<String>, Vec<RemoteFile>) {
    let mut folders = Vec::new();
    let mut files = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let mut rest = line;
        // perms, size, date, time, then the path (which may contain spaces).
        for _ in 0..4 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim_start();
        if fields.len() < 4 || path.is_empty() || path == "." {
            continue;
        }
        let perms = fields[0];
        let size: u64 = fields[1].replace(',', "").parse().unwrap_or(0);
        let modified = NaiveDateTime::parse_from_str(
            &format!("{} {}", fields[2], fields[3]),
            "%Y/%m/%d %H:%M:%S",
        )
        .ok()
        .map(|t| t.and_utc());
        match path.split_once('/') {
            None if perms.starts_with('d') => folders.push(path.to_string()),
            Some((folder, file)) if !file.contains('/') && perms.starts_with('-') => {
                files.push(RemoteFile {
                    folder: folder.to_string(),
                    file: file.to_string(),
                    size,
                    modified,
                })
            }
            _ => {}
        }
    }
    (folders, files)
}

/// Streams a remote file through `ssh cat`; a failed `cat` is an error at the end of the stream.
struct RemoteReader {
    child: Option<Running<Tail>>,
    stdout: ChildStdout,
    what: String,
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_inner(buf).map_err(|e| {
            std::io::Error::other(crate::backup::SourceLost(format!(
                "{}: {e}; check RSYNC_HOST and RSYNC_PORT",
                self.what
            )))
        })
    }
}

impl RemoteReader {
    fn read_inner(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0
            && let Some(child) = self.child.take()
        {
            let finished = child.finish()?;
            if !finished.status.success() {
                return Err(std::io::Error::other(format!(
                    "{}: {}",
                    self.what,
                    finished.stderr.text().trim()
                )));
            }
        }
        Ok(n)
    }
}

impl Storage for RemoteStorage {
    fn kind(&self) -> SourceKind {
        SourceKind::Remote
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self) -> Result<Vec<FolderEntry>, StorageError> {
        let (folders, files) = self.listing()?;
        let markers = self.fetch_markers()?;
        let mut entries = Vec::new();
        for name in folders {
            let in_folder: Vec<&RemoteFile> = files.iter().filter(|f| f.folder == name).collect();
            let mut entry = match FolderName::parse(&name) {
                Some(folder) => {
                    let manifest =
                        match std::fs::read(markers.path().join(&name).join(MANIFEST_FILE)) {
                            Ok(bytes) => Some(Manifest::parse(&bytes, &folder)),
                            Err(_) => None,
                        };
                    let mut e = FolderEntry::from_manifest(name.clone(), folder, manifest);
                    e.pinned = markers.path().join(&name).join(PIN_FILE).exists();
                    e
                }
                None => {
                    FolderEntry::invalid(name.clone(), "not a backup folder name (YYYYMMDD_HHMMSS)")
                }
            };
            entry.bytes = in_folder.iter().map(|f| f.size).sum();
            entry.modified = in_folder.iter().filter_map(|f| f.modified).max();
            let files = in_folder.iter().map(|f| (f.file.clone(), f.size)).collect();
            entries.push(entry.with_files(files));
        }
        sort_newest_first(&mut entries);
        Ok(entries)
    }

    fn manifest(&self, folder: &FolderName) -> Result<Option<Manifest>, StorageError> {
        let path = format!("{}/{MANIFEST_FILE}", self.folder_path(folder.as_str()));
        let remote = format!(
            "if [ -f {p} ]; then cat -- {p}; else echo __none__; fi",
            p = sh_quote(&path)
        );
        let out = self.ssh("reading a manifest", &remote)?;
        if out == b"__none__\n" {
            return Ok(None);
        }
        Ok(Some(Manifest::parse(&out, folder)?))
    }

    fn open(&self, folder: &FolderName, file: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        if !is_safe_file_name(file) {
            return Err(StorageError::Invalid(format!(
                "{file:?} is not a backup file name"
            )));
        }
        let path = format!("{}/{file}", self.folder_path(folder.as_str()));
        // A missing file is reported before streaming starts; a host that cannot be reached
        // is not a missing file.
        let probe = format!(
            "if [ -f {} ]; then echo __found__; else echo __none__; fi",
            sh_quote(&path)
        );
        if self.ssh("looking for a file", &probe)? != b"__found__\n" {
            return Err(StorageError::NotFound(format!(
                "{path} does not exist on {}",
                self.host
            )));
        }
        let cmd = self.ssh_command(&format!("cat -- {}", sh_quote(&path)));
        let mut child = Running::spawn(cmd, "ssh", Stdio::null(), true, Tail::default())
            .map_err(|e| spawn_error("ssh", e))?;
        let stdout = child
            .take_stdout()
            .ok_or_else(|| StorageError::Invalid("ssh has no stdout".into()))?;
        Ok(Box::new(RemoteReader {
            child: Some(child),
            stdout,
            what: format!("reading {path} on {}", self.host),
        }))
    }

    fn put_folder(
        &self,
        source: &LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError> {
        // Never ship a corrupt copy: the local files must still match the manifest.
        for f in &manifest.files {
            let actual = sha256_file(&source.path(&f.name))?;
            if actual != f.sha256 {
                return Err(BackupError::Checksum {
                    file: source.path(&f.name).display().to_string(),
                    expected: f.sha256.clone(),
                    actual,
                }
                .into());
            }
        }
        let dest = self.folder_path(source.folder.as_str());
        self.ssh(
            "creating the remote folder",
            &format!(
                "mkdir -p -- {root} && mkdir -p -m 700 -- {dest}",
                root = sh_quote(&self.root),
                dest = sh_quote(&dest)
            ),
        )?;
        let data: Vec<(&str, &str)> = manifest
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.sha256.as_str()))
            .collect();
        if !data.is_empty() {
            // Every data file whole and on the remote disk before the manifest says so.
            self.send_checked(source, &data, &dest)?;
            progress.inc(manifest.total_bytes());
        }
        // The manifest last (rsync writes it to a temporary name and renames it), flushed too.
        let local_manifest = source.path(MANIFEST_FILE);
        let expected = sha256_file(&local_manifest)?;
        self.send_checked(source, &[(MANIFEST_FILE, expected.as_str())], &dest)?;
        Ok(PutStats {
            files: manifest.files.len() as u32 + 1,
            bytes: manifest.total_bytes()
                + std::fs::metadata(&local_manifest)
                    .map(|m| m.len())
                    .unwrap_or(0),
        })
    }

    fn delete(&self, entry: &FolderEntry) -> Result<u64, StorageError> {
        let Some(folder) = &entry.folder else {
            return Err(StorageError::Invalid(format!(
                "refusing to delete {:?}: not a backup folder name",
                entry.name
            )));
        };
        let dir = self.folder_path(folder.as_str());
        let remote = format!(
            "rm -f -- {m} && rm -rf -- {d}",
            m = sh_quote(&format!("{dir}/{MANIFEST_FILE}")),
            d = sh_quote(&dir)
        );
        self.ssh("deleting a folder", &remote)?;
        Ok(entry.bytes)
    }

    fn put_manifest(&self, folder: &FolderName, manifest: &Manifest) -> Result<(), StorageError> {
        let staging = tempfile::Builder::new()
            .prefix("pg-backups-manifest-")
            .tempdir()
            .map_err(|e| StorageError::Io {
                context: "creating a private folder for a manifest".into(),
                source: e,
            })?;
        let local = LocalFolder {
            dir: staging.path().join(folder.as_str()),
            folder: folder.clone(),
        };
        std::fs::create_dir(&local.dir).map_err(|e| StorageError::Io {
            context: "creating a private folder for a manifest".into(),
            source: e,
        })?;
        manifest.write_atomic(&local.dir)?;
        let sha = sha256_file(&local.path(MANIFEST_FILE))?;
        let dest = self.folder_path(folder.as_str());
        self.send_checked(&local, &[(MANIFEST_FILE, sha.as_str())], &dest)
    }

    fn set_pin(&self, folder: &FolderName, pinned: bool) -> Result<(), StorageError> {
        let dir = self.folder_path(folder.as_str());
        let manifest = sh_quote(&format!("{dir}/{MANIFEST_FILE}"));
        let pin = sh_quote(&format!("{dir}/{PIN_FILE}"));
        let remote = if pinned {
            format!(
                "test -f {manifest} || {{ echo 'no manifest' >&2; exit 3; }}; printf '%s' {} > {pin} && chmod 600 {pin}",
                sh_quote(&super::local::pin_marker())
            )
        } else {
            format!("test -f {manifest} || {{ echo 'no manifest' >&2; exit 3; }}; rm -f -- {pin}")
        };
        self.ssh("setting a pin", &remote).map_err(|e| match e {
            StorageError::Failed { detail, .. } if detail.contains("no manifest") => {
                StorageError::NotFound(format!("{} has no complete backup {folder}", self.location))
            }
            other => other,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_hostile_text() {
        assert_eq!(sh_quote("plain"), "'plain'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$(rm -rf ~); `x`"), "'$(rm -rf ~); `x`'");
    }

    #[test]
    fn rsync_listing_is_parsed_into_folders_and_files() {
        let text = "\
drwx------           4096 2025/10/05 12:00:00 .
drwx------           4096 2025/10/05 12:00:00 20251005_120000
-rw-------           1234 2025/10/05 12:00:01 20251005_120000/postgres_db_my%20db.sql.gz
-rw-------            900 2025/10/05 12:00:02 20251005_120000/manifest.json
drwxr-xr-x           4096 2025/10/06 08:00:00 not a backup
-rw-r--r--              5 2025/10/06 08:00:00 stray file.txt
";
        let (folders, files) = parse_list_only(text);
        assert_eq!(folders, ["20251005_120000", "not a backup"]);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].file, "postgres_db_my%20db.sql.gz");
        assert_eq!(files[0].size, 1234);
        assert_eq!(
            files[1].modified.unwrap().to_rfc3339(),
            "2025-10-05T12:00:02+00:00"
        );
    }
}
