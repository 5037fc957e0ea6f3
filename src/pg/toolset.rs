//! Which client tools to run, when several PostgreSQL versions are installed (Debian's
//! `/usr/lib/postgresql/*/bin`, an image's tools on PATH, the directories of `PG_BIN_DIR`).
//!
//! pg_dump cannot dump a server newer than itself, and a pg_dump newer than the server writes
//! settings an older server does not know; so `dump` takes the tools of the server's major when
//! they are there, else the newest that is not older than the server. A restore takes the psql
//! of the target's major when it is there, else the newest not older than it, else the newest
//! (a custom-format archive also needs a pg_restore at least as new as the pg_dump that made
//! it).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::ToolVersion;
use crate::process::ChildEnv;

/// The client tools of one version, in one directory (`None`: found on PATH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolset {
    pub dir: Option<PathBuf>,
    pub version: ToolVersion,
}

impl Toolset {
    /// Where `tool` of this set is, for messages and JSON.
    pub fn path(&self, tool: &str) -> String {
        match &self.dir {
            Some(d) => d.join(tool).display().to_string(),
            None => format!("{tool} (on PATH)"),
        }
    }
}

/// The version of the tools in `dir`, from `pg_dump --version` (or psql's, for a directory
/// that holds only psql).
fn version_in(dir: Option<&Path>) -> Option<ToolVersion> {
    for tool in ["pg_dump", "psql"] {
        let program = match dir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        };
        let out = ChildEnv::base()
            .command(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out
            && out.status.success()
            && let Some(v) = ToolVersion::parse(&String::from_utf8_lossy(&out.stdout))
        {
            return Some(v);
        }
    }
    None
}

/// The directories to look in: `PG_BIN_DIR` when set, else Debian's per-version directories
/// and PATH.
pub fn candidates(bin_dirs: &[PathBuf]) -> Vec<Option<PathBuf>> {
    if !bin_dirs.is_empty() {
        return bin_dirs.iter().cloned().map(Some).collect();
    }
    let mut out: Vec<Option<PathBuf>> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_dump").exists() || p.join("psql").exists())
            .collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(Some));
    }
    out.push(None);
    out
}

/// Every usable set of tools among the candidates.
pub fn discover(bin_dirs: &[PathBuf]) -> Vec<Toolset> {
    candidates(bin_dirs)
        .into_iter()
        .filter_map(|dir| version_in(dir.as_deref()).map(|version| Toolset { dir, version }))
        .collect()
}

/// The tools of `major`, else the newest newer one.
fn same_or_newest_newer(sets: &[Toolset], major: u32) -> Option<&Toolset> {
    sets.iter().find(|s| s.version.major == major).or_else(|| {
        sets.iter()
            .filter(|s| s.version.major > major)
            .max_by_key(|s| (s.version.major, s.version.minor))
    })
}

/// The tools to dump a server of `server_major` with; `Err` carries the newest there is.
pub fn for_dump(sets: &[Toolset], server_major: u32) -> Result<&Toolset, Option<&Toolset>> {
    same_or_newest_newer(sets, server_major).ok_or_else(|| newest(sets))
}

/// The tools to restore into a server of `server_major`; `at_least` for a pg_restore that must
/// read an archive of that pg_dump major.
pub fn for_restore(sets: &[Toolset], server_major: u32, at_least: u32) -> Option<&Toolset> {
    let usable: Vec<Toolset> = sets
        .iter()
        .filter(|s| s.version.major >= at_least)
        .cloned()
        .collect();
    let chosen = same_or_newest_newer(&usable, server_major).or_else(|| newest(&usable))?;
    sets.iter().find(|s| *s == chosen)
}

pub fn newest(sets: &[Toolset]) -> Option<&Toolset> {
    sets.iter()
        .max_by_key(|s| (s.version.major, s.version.minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(major: u32, dir: &str) -> Toolset {
        Toolset {
            dir: Some(PathBuf::from(dir)),
            version: ToolVersion {
                major,
                minor: 1,
                text: format!("{major}.1"),
            },
        }
    }

    #[test]
    fn dump_takes_the_servers_major_else_the_newest_newer_one() {
        let sets = [set(15, "/15"), set(17, "/17"), set(18, "/18")];
        assert_eq!(for_dump(&sets, 15).unwrap().version.major, 15);
        assert_eq!(for_dump(&sets, 16).unwrap().version.major, 18);
        assert_eq!(for_dump(&sets, 13).unwrap().version.major, 18);
        let only_old = [set(15, "/15"), set(17, "/17")];
        assert_eq!(
            for_dump(&only_old, 18).unwrap_err().unwrap().version.major,
            17
        );
    }

    #[test]
    fn restore_takes_the_targets_major_and_respects_the_archive() {
        let sets = [set(15, "/15"), set(17, "/17"), set(18, "/18")];
        assert_eq!(for_restore(&sets, 15, 0).unwrap().version.major, 15);
        assert_eq!(for_restore(&sets, 15, 17).unwrap().version.major, 18);
        assert_eq!(for_restore(&sets, 19, 0).unwrap().version.major, 18);
        assert!(for_restore(&sets, 15, 19).is_none());
    }
}
