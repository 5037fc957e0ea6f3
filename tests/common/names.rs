//! The shared name corpus: every kind of database name PostgreSQL allows and pg_dump writes
//! in its own way. `pg_dump` writes `\connect app` for a lowercase name, `\connect "MyApp"`
//! for capitals, dots, a leading digit or a keyword, and a `dbname='…'` connection string for
//! everything else; percent-encoding, quoting and the screening each meet a different part of
//! this list. Round trips use all of it, not two friendly names.

use super::PgServer;
use super::fixture::LONG_NAME;

/// Every name, each with what it exercises.
pub const CORPUS: &[&str] = &[
    "app",                               // plain lowercase: `\connect app`
    "MyApp",                             // capitals: `\connect "MyApp"`
    "my.db",                             // a dot
    "2024data",                          // a leading digit
    "user",                              // a reserved keyword
    "select",                            // another reserved keyword
    "data",                              // a non-reserved keyword
    "my db",                             // a space: the connection-string form
    "O'Brien",                           // a single quote
    "say \"hi\"",                        // double quotes
    "back\\slash",                       // a backslash
    "a=b",                               // `=`: psql must not read a connection string
    "host=evil.invalid dbname=postgres", // a whole connection string as a name
    "-leading-dash",                     // a leading dash: never an option
    "trailing ",                         // a trailing space
    "données",                           // non-ASCII
    LONG_NAME,                           // 63 bytes, the longest name kept
];

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// As `quote_literal` does, right whatever `standard_conforming_strings` says.
pub fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Creates every database of the corpus, each holding a table `t` whose rows name it.
pub fn create(server: &PgServer) {
    for name in CORPUS {
        server.psql("postgres", &format!("CREATE DATABASE {}", ident(name)));
        server.psql(
            name,
            &format!(
                "CREATE TABLE public.t(n int, owner text);
                 INSERT INTO public.t SELECT g, {} FROM generate_series(1, 3) g;",
                literal(name)
            ),
        );
    }
}

/// What table `t` of `database` says, `None` when the database is not there.
pub fn owner_rows(server: &PgServer, database: &str) -> Option<(i64, String)> {
    let out = server.psql_output(
        database,
        "SELECT count(*), min(owner) FROM public.t",
        &["-F", "\u{1}"],
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let (count, owner) = text.split_once('\u{1}')?;
    Some((count.parse().ok()?, owner.to_string()))
}

/// Panics unless `database` holds the three rows that name `owner`.
pub fn assert_holds(server: &PgServer, database: &str, owner: &str, what: &str) {
    assert_eq!(
        owner_rows(server, database),
        Some((3, owner.to_string())),
        "{what}: database {database:?} does not hold the rows of {owner:?}"
    );
}
