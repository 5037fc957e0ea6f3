//! A real sshd (Debian's OpenSSH) on a loopback port, with host and client keys made for the
//! test and a known_hosts file that names the host key: the remote destination for `ship`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SshServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "pg-backups-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen is missing: run scripts/test.sh (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl SshServer {
    pub fn start() -> SshServer {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is not installed: run scripts/test.sh (apt-get install openssh-server)"
        );
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("pgb-ssh-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("other_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir(d.join("remote")).unwrap();
        let mut server = SshServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            let port = super::free_port();
            if server.try_start(port) {
                server.port = port;
                let host_key = std::fs::read_to_string(server.path("host_key.pub")).unwrap();
                let mut fields = host_key.split_whitespace();
                let line = format!(
                    "[127.0.0.1]:{port} {} {}\n",
                    fields.next().unwrap(),
                    fields.next().unwrap()
                );
                std::fs::write(server.path("known_hosts"), line).unwrap();
                // A known_hosts that names another key for this host: a "changed" host key.
                let other = std::fs::read_to_string(server.path("other_key.pub")).unwrap();
                let mut fields = other.split_whitespace();
                let wrong = format!(
                    "[127.0.0.1]:{port} {} {}\n",
                    fields.next().unwrap(),
                    fields.next().unwrap()
                );
                std::fs::write(server.path("wrong_known_hosts"), wrong).unwrap();
                return server;
            }
        }
        panic!(
            "sshd did not start: {}",
            std::fs::read_to_string(server.path("log")).unwrap_or_default()
        );
    }

    fn try_start(&mut self, port: u16) -> bool {
        let d = self.dir.path();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
             AuthorizedKeysFile {ak}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n\
             MaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n",
            hk = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The remote backup root on disk.
    pub fn remote(&self) -> PathBuf {
        self.path("remote")
    }

    /// Ends every open ssh session (the listener's children), as a network cut would.
    pub fn cut_sessions(&self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The variables that point `pg-backups` at this host.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("RSYNC_ENABLED".into(), "true".into()),
            ("RSYNC_HOST".into(), "127.0.0.1".into()),
            ("RSYNC_PORT".into(), self.port.to_string()),
            ("RSYNC_USER".into(), current_user()),
            ("RSYNC_PATH".into(), self.remote().display().to_string()),
            (
                "RSYNC_SSH_KEY".into(),
                self.path("client_key").display().to_string(),
            ),
            (
                "RSYNC_KNOWN_HOSTS".into(),
                self.path("known_hosts").display().to_string(),
            ),
        ]
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}
