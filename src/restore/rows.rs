//! Proof of every row (guarantee 10): after a replay, each table the dump stream carried is
//! counted on the server and compared with the rows the manifest recorded for it. A table
//! that lost or gained rows, or is missing, fails the restore (65) by name.

use serde::Serialize;

use crate::backup::psql_scan::TableRows;
use crate::error::{Error, Result};
use crate::pg::{PgTools, quote_literal};

/// Tables counted in one query.
const CHUNK: usize = 200;

/// What the comparison found, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowCheck {
    /// `as_dumped`: every table holds what the dump carried; `not_recorded`: the backup has
    /// no counts (a custom archive, or a folder made before pg-backups counted them).
    pub status: &'static str,
    pub tables: u64,
    pub rows: u64,
}

impl RowCheck {
    pub fn not_recorded() -> RowCheck {
        RowCheck {
            status: "not_recorded",
            tables: 0,
            rows: 0,
        }
    }

    /// Adds another database's check: the whole is `as_dumped` only if every part is.
    pub fn absorb(&mut self, other: RowCheck) {
        self.status = match (self.status, other.status) {
            ("" | "as_dumped", "as_dumped") => "as_dumped",
            _ => "not_recorded",
        };
        self.tables += other.tables;
        self.rows += other.rows;
    }
}

/// Counts every table of `expected` in `database` and compares.
pub fn prove(tools: &PgTools, database: &str, expected: Option<&[TableRows]>) -> Result<RowCheck> {
    let Some(expected) = expected else {
        return Ok(RowCheck::not_recorded());
    };
    let mut differences = Vec::new();
    for chunk in expected.chunks(CHUNK) {
        let counted = tools.query(database, &count_query(chunk), 2)?;
        for row in counted {
            let i: usize = row[0].parse().unwrap_or(usize::MAX);
            let restored: i64 = row[1].parse().unwrap_or(-1);
            let Some(table) = chunk.get(i) else { continue };
            if restored != table.rows as i64 {
                differences.push(describe(database, table, restored));
            }
        }
    }
    if !differences.is_empty() {
        return Err(Error::Data(format!(
            "{} table{} of the restore do{} not hold the rows the dump carried: {}",
            differences.len(),
            if differences.len() == 1 { "" } else { "s" },
            if differences.len() == 1 { "es" } else { "" },
            differences
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    Ok(RowCheck {
        status: "as_dumped",
        tables: expected.len() as u64,
        rows: expected.iter().map(|t| t.rows).sum(),
    })
}

fn describe(database: &str, table: &TableRows, restored: i64) -> String {
    let name = table.table.join(".");
    if restored < 0 {
        format!(
            "{name:?} in database {database:?} is missing ({} rows dumped)",
            table.rows
        )
    } else {
        format!(
            "{name:?} in database {database:?}: {} rows dumped, {restored} restored",
            table.rows
        )
    }
}

/// One query that counts every table of `chunk` (-1 for a table that is not there). The
/// names come from the backup: they reach SQL only as quoted literals, and `format('%I')`
/// quotes them as identifiers on the server.
fn count_query(chunk: &[TableRows]) -> String {
    let values: Vec<String> = chunk
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (schema, table) = match t.table.as_slice() {
                [schema, table] => (Some(schema.as_str()), table.as_str()),
                [table] => (None, table.as_str()),
                _ => (None, ""),
            };
            let relation = match schema {
                Some(s) => format!(
                    "format('%I.%I', {}, {})",
                    quote_literal(s),
                    quote_literal(table)
                ),
                None => format!("format('%I', {})", quote_literal(table)),
            };
            format!("({i}, {relation})")
        })
        .collect();
    format!(
        "SELECT v.i, CASE WHEN to_regclass(v.r) IS NULL THEN -1 ELSE \
         (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM ' || v.r, \
         false, true, '')))[1]::text::bigint END \
         FROM (VALUES {}) AS v(i, r)",
        values.join(", ")
    )
}
