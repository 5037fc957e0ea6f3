//! `manifest.json`: written last, it is what makes a folder a backup (DESIGN.md guarantee 1).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BackupError, FolderName, is_safe_file_name};

/// The manifest format this version writes and understands.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestStatus {
    /// Every database asked for was dumped.
    Complete,
    /// Some databases failed; `failed` lists them. Globals and the rest are usable.
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Cluster,
    Globals,
    Database,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    /// The real database name (file names are percent-encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Size of the `.sql.gz` file.
    pub bytes: u64,
    /// SHA-256 of the `.sql.gz` file, lowercase hex.
    pub sha256: String,
    /// Size of the SQL inside, for progress and ratios.
    pub sql_bytes: u64,
    /// SHA-256 of the content (the SQL, or the custom archive) before compression and
    /// encryption: recorded for encrypted files, so a verify with the key checks it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// A plain database file: each table's rows as the dump stream carried them (guarantee
    /// 10), which a restore and a restore drill compare with what arrived. Absent in custom
    /// archives and in folders made before pg-backups counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<super::psql_scan::TableRows>>,
}

/// How the files of a backup are encrypted: the scheme and who can read them (fingerprints,
/// never keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    pub scheme: String,
    pub recipients: Vec<super::codec::RecipientInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDatabase {
    pub database: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub host: String,
    pub port: u16,
    pub version: String,
    pub version_num: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    pub tool_version: String,
    pub folder: String,
    pub status: ManifestStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub server: ServerInfo,
    pub pg_dump_version: String,
    /// Which pg_dump ran, when several versions are installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_path: Option<String>,
    /// `plain` or `custom` (older manifests: plain).
    #[serde(default)]
    pub backup_format: super::codec::Format,
    pub compression: String,
    pub compression_level: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Databases dumped, in the cluster file's order.
    pub databases: Vec<String>,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub failed: Vec<FailedDatabase>,
    /// Set when `pg-backups adopt` wrote this manifest for a folder the backup scripts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adopted>,
}

/// How a folder made by the original backup scripts became a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    pub adopted_at: DateTime<Utc>,
    /// What was checked, for the operator who reads the manifest.
    pub note: String,
}

impl Manifest {
    /// Total size of the backup's files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    pub fn database_file(&self, database: &str) -> Option<&FileEntry> {
        self.files
            .iter()
            .find(|f| f.kind == FileKind::Database && f.database.as_deref() == Some(database))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest read from any destination: it must belong to `folder`, and
    /// its file names must be ours, because they become paths, keys and remote arguments.
    pub fn parse(bytes: &[u8], folder: &FolderName) -> Result<Manifest, BackupError> {
        let bad = |reason: String| BackupError::Manifest {
            folder: folder.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format > FORMAT {
            return Err(bad(format!(
                "format {} is newer than this pg-backups understands ({FORMAT}); upgrade pg-backups",
                m.format
            )));
        }
        if m.folder != folder.as_str() {
            return Err(bad(format!("it names folder {:?}", m.folder)));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &m.files {
            if !is_safe_file_name(&f.name) || super::codec::FileCodec::of_name(&f.name).is_none() {
                return Err(bad(format!("file name {:?} is not one of ours", f.name)));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(bad(format!("file {:?} is listed twice", f.name)));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("file {:?} has no valid SHA-256", f.name)));
            }
            if f.kind == FileKind::Database && f.database.is_none() {
                return Err(bad(format!("file {:?} does not name its database", f.name)));
            }
        }
        Ok(m)
    }

    /// Writes `manifest.json` atomically: temp file, fsync, rename, fsync the folder.
    pub fn write_atomic(&self, dir: &Path) -> Result<(), BackupError> {
        let tmp = dir.join(".manifest.json.tmp");
        let target = dir.join(super::MANIFEST_FILE);
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Write { path, source }
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr(&tmp))?;
        f.write_all(&self.to_json()).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &target).map_err(werr(&target))?;
        fsync_dir(dir).map_err(werr(dir))?;
        Ok(())
    }
}

/// Makes a rename or a new file in `dir` durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            tool: "pg-backups".into(),
            tool_version: "0.1.0".into(),
            folder: "20251005_120000".into(),
            status: ManifestStatus::Complete,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            server: ServerInfo {
                host: "db".into(),
                port: 5432,
                version: "17.10".into(),
                version_num: 170010,
            },
            pg_dump_version: "17.10".into(),
            pg_dump_path: None,
            backup_format: Default::default(),
            compression: "gzip".into(),
            compression_level: 6,
            encryption: None,
            databases: vec!["app".into()],
            files: vec![FileEntry {
                name: "postgres_db_app.sql.gz".into(),
                kind: FileKind::Database,
                database: Some("app".into()),
                bytes: 10,
                sha256: "a".repeat(64),
                sql_bytes: 20,
                content_sha256: None,
                tables: None,
            }],
            failed: vec![],
            adopted: None,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        let folder = FolderName::parse("20251005_120000").unwrap();
        assert_eq!(Manifest::parse(&m.to_json(), &folder).unwrap(), m);
    }

    #[test]
    fn manifest_with_traversal_file_name_is_refused() {
        let mut m = sample();
        m.files[0].name = "../../etc/passwd.sql.gz".into();
        let folder = FolderName::parse("20251005_120000").unwrap();
        assert!(Manifest::parse(&m.to_json(), &folder).is_err());
    }

    #[test]
    fn manifest_of_another_folder_is_refused() {
        let m = sample();
        let folder = FolderName::parse("20251006_120000").unwrap();
        assert!(Manifest::parse(&m.to_json(), &folder).is_err());
    }
}
