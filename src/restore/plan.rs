//! What a restore will do, decided before anything is touched: which files of the folder
//! are replayed and in what order, where each may write (its `\connect` targets, guarantee
//! 11), which existing databases are in the way (and so need consent, guarantee 5), and the
//! one-line summary the operator confirms at a prompt.

use crate::backup::codec::{Compression, FileCodec, Format};
use crate::backup::psql_scan::ConnectTargets;
use crate::backup::{FileEntry, FileKind, FolderName, Manifest};
use crate::config::{RestoreType, SourceKind};
use crate::error::{Error, Result};
use crate::pg::PgTools;

use super::replay::Destination;
use super::server::{database_exists, user_databases};

/// One restore, as asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: SourceKind,
    pub folder: FolderName,
    pub manifest: Manifest,
    pub restore_type: RestoreType,
    /// The database of a `database` restore.
    pub database: Option<String>,
    /// Its name on the target (the same name unless RESTORE_TARGET_DATABASE says otherwise).
    pub target: Option<String>,
    /// The files replayed, in order.
    pub entries: Vec<FileEntry>,
}

impl Plan {
    pub fn new(
        source: SourceKind,
        folder: FolderName,
        manifest: Manifest,
        restore_type: RestoreType,
        database: Option<String>,
        target: Option<String>,
    ) -> Result<Plan> {
        let entries = files_for(&manifest, restore_type, database.as_deref())?;
        let target = match restore_type {
            RestoreType::Database => target.or_else(|| database.clone()),
            _ => None,
        };
        if let Some(t) = target
            .as_deref()
            .filter(|t| matches!(*t, "template0" | "template1"))
        {
            return Err(crate::config::ConfigError::invalid(
                "RESTORE_TARGET_DATABASE",
                t,
                "template0 and template1 cannot be replaced by a restore: restore under another name",
            )
            .into());
        }
        Ok(Plan {
            source,
            folder,
            manifest,
            restore_type,
            database,
            target,
            entries,
        })
    }

    /// An encrypted backup needs its key before anything else happens.
    pub fn needs_key(&self) -> Option<&FileEntry> {
        self.entries.iter().find(|e| codec_of(e).encrypted)
    }

    /// The major of the pg_dump that made a custom-format backup (pg_restore must be at least
    /// as new), 0 for plain files.
    pub fn archive_major(&self) -> u32 {
        if !self
            .entries
            .iter()
            .any(|e| codec_of(e).format == Format::Custom)
        {
            return 0;
        }
        archive_major(&self.manifest)
    }

    /// Every database of the backup: the manifest's list (a plain backup's cluster file) and
    /// the databases that have their own file (a custom backup lists only these).
    pub fn databases(&self) -> Vec<String> {
        let mut all = self.manifest.databases.clone();
        for db in self
            .manifest
            .files
            .iter()
            .filter_map(|f| f.database.as_ref())
        {
            if !all.contains(db) {
                all.push(db.clone());
            }
        }
        all
    }

    /// Existing databases this restore would replace: they need consent.
    pub fn in_the_way(&self, tools: &PgTools) -> Result<Vec<String>> {
        Ok(match self.restore_type {
            RestoreType::Database => {
                let target = self.target.clone().unwrap_or_default();
                if database_exists(tools, &target)? {
                    vec![target]
                } else {
                    Vec::new()
                }
            }
            RestoreType::Cluster => {
                let existing = user_databases(tools)?;
                self.databases()
                    .into_iter()
                    .filter(|d| existing.contains(d))
                    .collect()
            }
            RestoreType::Globals => Vec::new(),
        })
    }

    /// Where one database's file goes. A cluster restore of custom archives fills the
    /// databases every server has (`postgres`; user databases in the way were dropped) in
    /// place, as a pg_dumpall file does.
    pub fn destination<'a>(&'a self, database: &str, exists: bool) -> Destination<'a> {
        if self.restore_type == RestoreType::Cluster && exists {
            Destination::Existing
        } else {
            Destination::named(database, self.target.as_deref())
        }
    }

    /// The refusal when databases are in the way and nobody agreed (exit 73).
    pub fn refusal(&self, in_the_way: &[String], server: &str) -> Error {
        let one = in_the_way.len() == 1;
        Error::Refused(format!(
            "{} already exist{} on {server}; nothing was changed. To replace {}, set \
             RESTORE_DROP_EXISTING=true (or, at the prompt, type {}){}",
            in_the_way
                .iter()
                .map(|d| format!("database \"{d}\""))
                .collect::<Vec<_>>()
                .join(", "),
            if one { "s" } else { "" },
            if one { "it" } else { "them" },
            if one { "its name" } else { "yes" },
            if self.restore_type == RestoreType::Database {
                ", or restore under another name with RESTORE_TARGET_DATABASE"
            } else {
                ""
            }
        ))
    }

    /// The question an interactive restore asks before it starts.
    pub fn summary(&self, server: &str, server_version: &str) -> String {
        let what = match self.restore_type {
            RestoreType::Cluster => "the whole cluster".to_string(),
            RestoreType::Globals => "roles and tablespaces (globals)".to_string(),
            RestoreType::Database => {
                format!(
                    "database \"{}\"",
                    self.database.as_deref().unwrap_or_default()
                )
            }
        };
        let renamed = match (&self.database, &self.target) {
            (Some(d), Some(t)) if d != t => format!(" as \"{t}\""),
            _ => String::new(),
        };
        format!(
            "Restore {what} from {} folder {}{renamed} onto {server} (PostgreSQL {server_version})?",
            self.source, self.folder
        )
    }
}

/// Where a file of `kind` (of `database`) may `\connect`, for a backup of `databases`.
pub fn connect_targets(
    kind: FileKind,
    database: Option<&str>,
    databases: &[String],
) -> ConnectTargets {
    match kind {
        FileKind::Database => ConnectTargets::only(database.unwrap_or_default()),
        FileKind::Cluster => ConnectTargets::cluster(databases.iter().map(String::as_str)),
        // `pg_dumpall --globals-only` writes no `\connect`.
        FileKind::Globals => ConnectTargets::none(),
    }
}

/// The major of the pg_dump that made the backup, from its manifest.
pub fn archive_major(manifest: &Manifest) -> u32 {
    crate::pg::ToolVersion::parse(&format!(
        "pg_dump (PostgreSQL) {}",
        manifest.pg_dump_version
    ))
    .map(|v| v.major)
    .unwrap_or(0)
}

/// How a file is stored, from its name (manifests list only names pg-backups wrote).
pub fn codec_of(entry: &FileEntry) -> FileCodec {
    FileCodec::of_name(&entry.name).unwrap_or(FileCodec {
        format: Format::Plain,
        compression: Compression::Gzip,
        encrypted: false,
    })
}

/// The files a restore replays, in order. A custom-format backup has no cluster file: its
/// cluster restore is the globals, then every database.
fn files_for(
    manifest: &Manifest,
    restore_type: RestoreType,
    database: Option<&str>,
) -> Result<Vec<FileEntry>> {
    let of_kind = |kind: FileKind| manifest.files.iter().find(|f| f.kind == kind).cloned();
    let found = match restore_type {
        RestoreType::Cluster => match of_kind(FileKind::Cluster) {
            Some(f) => Some(vec![f]),
            None if manifest.backup_format == Format::Custom => {
                let mut files: Vec<FileEntry> = of_kind(FileKind::Globals).into_iter().collect();
                let mut dbs: Vec<FileEntry> = manifest
                    .files
                    .iter()
                    .filter(|f| f.kind == FileKind::Database)
                    .cloned()
                    .collect();
                dbs.sort_by(|a, b| a.database.cmp(&b.database));
                files.extend(dbs);
                (!files.is_empty()).then_some(files)
            }
            None => None,
        },
        RestoreType::Globals => of_kind(FileKind::Globals).map(|f| vec![f]),
        RestoreType::Database => manifest
            .database_file(database.unwrap_or_default())
            .cloned()
            .map(|f| vec![f]),
    };
    found.ok_or_else(|| not_in_backup(manifest, restore_type, database))
}

fn not_in_backup(manifest: &Manifest, restore_type: RestoreType, database: Option<&str>) -> Error {
    match restore_type {
        RestoreType::Database => {
            let there: Vec<String> = manifest
                .files
                .iter()
                .filter(|f| f.kind == FileKind::Database)
                .filter_map(|f| f.database.clone())
                .map(|d| format!("\"{d}\""))
                .collect();
            Error::NotFound(format!(
                "backup {} has no database \"{}\"; it has: {}",
                manifest.folder,
                database.unwrap_or_default(),
                there.join(", ")
            ))
        }
        _ => Error::NotFound(format!(
            "backup {} has no {:?} file",
            manifest.folder, restore_type
        )),
    }
}
