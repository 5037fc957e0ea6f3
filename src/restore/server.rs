//! The databases on the target server, as a restore sees them: which exist, which are in the
//! way, and dropping them (only with consent, or the scratch databases of a restore test).

use crate::error::Result;
use crate::pg::{PgTools, quote_ident, quote_literal};

/// Whether a database exists on the server.
pub fn database_exists(tools: &PgTools, name: &str) -> Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM pg_database WHERE datname = {}",
        quote_literal(name)
    );
    Ok(tools.query_value("postgres", &sql)?.trim() == "1")
}

/// User databases on the server (all but postgres and the templates).
pub fn user_databases(tools: &PgTools) -> Result<Vec<String>> {
    let rows = tools.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY datname",
        1,
    )?;
    Ok(rows.into_iter().map(|mut r| r.remove(0)).collect())
}

/// Drops a database, disconnecting its sessions first.
pub fn drop_database(tools: &PgTools, name: &str, server_major: u32) -> Result<()> {
    let ident = quote_ident(name);
    // A database cannot be dropped from a session in it.
    let from = maintenance_database(name);
    if server_major >= 13 {
        tools.query(
            from,
            &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"),
            1,
        )?;
    } else {
        tools.query(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}",
                quote_literal(name)
            ),
            1,
        )?;
        tools.query(from, &format!("DROP DATABASE IF EXISTS {ident}"), 1)?;
    }
    Ok(())
}

/// The database to work from while `database` is being replaced: `postgres`, or
/// `template1` when `postgres` itself is.
pub fn maintenance_database(database: &str) -> &'static str {
    if database == "postgres" {
        "template1"
    } else {
        "postgres"
    }
}

/// A scratch database that is dropped when the guard goes, on every path.
pub struct ScratchDatabase<'a> {
    tools: &'a PgTools,
    name: String,
    server_major: u32,
}

impl<'a> ScratchDatabase<'a> {
    pub fn new(tools: &'a PgTools, name: &str, server_major: u32) -> ScratchDatabase<'a> {
        ScratchDatabase {
            tools,
            name: name.to_string(),
            server_major,
        }
    }
}

impl Drop for ScratchDatabase<'_> {
    fn drop(&mut self) {
        if let Err(e) = drop_database(self.tools, &self.name, self.server_major) {
            tracing::error!(
                "could not drop the scratch database {}: {e}; drop it by hand",
                self.name
            );
        }
    }
}
