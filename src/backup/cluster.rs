//! The cluster file, built from the streams that made the other files so every database is
//! read from the server once per run.
//!
//! `pg_dumpall` writes the globals, then each database as `pg_dump --create` would, except
//! `template1` and `postgres`, which it dumps without `--create` after a `\connect` line
//! (they exist on every target). The per-database files are `--create` dumps, so for
//! `postgres` (and `template1` when asked for) [`CreateFilter`] turns the `--create` stream
//! into what `pg_dump` without `--create` writes: it drops the database-level entries
//! (`DATABASE`, `DATABASE PROPERTIES`, and the comment, security label and ACL on the
//! database) together with the reconnect that follows them.

/// Order of databases in the cluster file, as `pg_dumpall` does: `template1` first, then by
/// name in byte order (`name` columns sort with the C collation).
pub fn cluster_order(databases: &mut [String]) {
    databases
        .sort_by(|a, b| (a != "template1", a.as_bytes()).cmp(&(b != "template1", b.as_bytes())));
}

/// Databases that exist on every target: `pg_dumpall` restores into them instead of
/// creating them.
pub fn restored_in_place(database: &str) -> bool {
    database == "template1" || database == "postgres"
}

use super::psql_scan::LineStart;
use super::sql_lines::{LineRewriter, SqlLines};

pub const DATABASES_HEADER: &str = "--\n-- Databases\n--\n\n";
pub const CLUSTER_TRAILER: &str = "--\n-- PostgreSQL database cluster dump complete\n--\n\n";

/// A name as it may appear in a `--` comment: line breaks become spaces, as pg_dump does, so
/// no name can end the comment and start a line of SQL or a psql meta-command.
pub fn comment_safe(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// The lines `pg_dumpall` writes before each database.
pub fn database_header(database: &str) -> String {
    let mut s = format!(
        "--\n-- Database \"{}\" dump\n--\n\n",
        comment_safe(database)
    );
    if restored_in_place(database) {
        // Only `postgres` and `template1` get here: plain names, no quoting needed.
        s.push_str(&format!("\\connect {database}\n\n"));
    }
    s
}

/// The comment that stands where a database that failed would be.
pub fn missing_database_note(database: &str) -> String {
    format!(
        "--\n-- Database \"{}\" is NOT in this backup: its dump failed (see manifest.json)\n--\n\n",
        comment_safe(database)
    )
}

/// Turns a `pg_dump --create` stream into what `pg_dump` without `--create` writes.
pub type CreateFilter = SqlLines<DropDatabaseEntries>;

/// Builds a [`CreateFilter`] for `database`, owned by `owner` (`pg_database.datdba`).
pub fn create_filter(database: &str, owner: &str) -> CreateFilter {
    SqlLines::new(DropDatabaseEntries::new(database, owner))
}

/// Leaves out the database-level entries of a `--create` dump.
#[derive(Debug)]
pub struct DropDatabaseEntries {
    /// The exact header lines (`-- Name: …; Owner: …`) of the entries to leave out.
    headers: Vec<Vec<u8>>,
    /// A `--` line held back until the next line tells whether it opens an entry header.
    pending_dash: bool,
    /// Inside a database-level entry that is being left out.
    dropping: bool,
}

impl DropDatabaseEntries {
    /// Entry headers are matched whole, built from the database's name and owner: a table
    /// named `x; Type: DATABASE; Schema: -;` has a header that contains such text but never
    /// equals one of these (its own type always follows its name).
    pub fn new(database: &str, owner: &str) -> DropDatabaseEntries {
        let (db, owner) = (comment_safe(database), comment_safe(owner));
        let headers = [
            format!("-- Name: {db}; Type: DATABASE; Schema: -; Owner: {owner}"),
            format!("-- Name: {db}; Type: DATABASE PROPERTIES; Schema: -; Owner: {owner}"),
            format!("-- Name: DATABASE {db}; Type: COMMENT; Schema: -; Owner: {owner}"),
            format!("-- Name: DATABASE {db}; Type: ACL; Schema: -; Owner: {owner}"),
            format!("-- Name: DATABASE {db}; Type: SECURITY LABEL; Schema: -; Owner: {owner}"),
        ];
        DropDatabaseEntries {
            headers: headers.into_iter().map(String::into_bytes).collect(),
            pending_dash: false,
            dropping: false,
        }
    }

    fn flush_pending(&mut self, out: &mut Vec<u8>) {
        if self.pending_dash {
            self.pending_dash = false;
            if !self.dropping {
                out.extend_from_slice(b"--\n");
            }
        }
    }

    fn is_database_level_entry(&self, line: &[u8]) -> bool {
        self.headers.iter().any(|h| h.as_slice() == line)
    }
}

fn emit(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.push(b'\n');
}

impl LineRewriter for DropDatabaseEntries {
    fn line(&mut self, line: &[u8], start: LineStart, out: &mut Vec<u8>) {
        let top = matches!(start, LineStart::Top { .. });
        if self.pending_dash {
            if top && is_entry_boundary(line) {
                self.pending_dash = false;
                self.dropping = self.is_database_level_entry(line);
                if !self.dropping {
                    emit(out, b"--");
                    emit(out, line);
                }
                return;
            }
            self.flush_pending(out);
        }
        if top && line == b"--" {
            self.pending_dash = true;
            return;
        }
        if self.dropping {
            // Emitted just before the next entry's header, so they belong to it.
            if top
                && (line.starts_with(b"SET default_tablespace = ")
                    || line.starts_with(b"SET default_table_access_method = "))
            {
                emit(out, line);
                out.push(b'\n');
            }
            return;
        }
        emit(out, line);
    }

    fn passes_raw(&self) -> bool {
        !self.dropping
    }

    fn before_raw(&mut self, out: &mut Vec<u8>) {
        self.flush_pending(out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_pending(out);
    }
}

/// The second line of an entry header, or the dump's completion comment.
fn is_entry_boundary(line: &[u8]) -> bool {
    line.starts_with(b"-- Name: ")
        || line.starts_with(b"-- Data for Name: ")
        || line.starts_with(b"-- PostgreSQL database dump complete")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_CREATE: &str = "--
-- PostgreSQL database dump
--

\\restrict KEY

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: postgres; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE postgres WITH TEMPLATE = template0 ENCODING = 'UTF8';


ALTER DATABASE postgres OWNER TO postgres;

\\unrestrict KEY
\\connect postgres
\\restrict KEY

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: DATABASE postgres; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON DATABASE postgres IS 'admin db';


--
-- Name: postgres; Type: DATABASE PROPERTIES; Schema: -; Owner: postgres
--

ALTER DATABASE postgres SET work_mem TO '8MB';


\\unrestrict KEY
\\connect postgres
\\restrict KEY

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: t; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.t (
    a integer,
    b text
);


--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.t (a, b) FROM stdin;
1\t--
2\t-- Name: x; Type: DATABASE; Schema: -; Owner: postgres
--
-- Name: DATABASE postgres; Type: ACL; Schema: -; Owner: postgres
\\.


--
-- Name: DATABASE postgres; Type: ACL; Schema: -; Owner: postgres
--

GRANT CONNECT ON DATABASE postgres TO alice;


--
-- PostgreSQL database dump complete
--

\\unrestrict KEY

";

    fn filter_in_chunks(input: &str, chunk: usize) -> String {
        let mut f = create_filter("postgres", "postgres");
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(chunk) {
            f.push(c, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn create_filter_drops_database_level_entries_only() {
        let out = filter_in_chunks(WITH_CREATE, 4096);
        for gone in [
            "CREATE DATABASE",
            "ALTER DATABASE postgres OWNER",
            "\\connect",
            "COMMENT ON DATABASE",
            "ALTER DATABASE postgres SET",
            "GRANT CONNECT ON DATABASE",
        ] {
            assert!(!out.contains(gone), "{gone} still in:\n{out}");
        }
        for kept in [
            "SET default_tablespace = '';",
            "SET default_table_access_method = heap;",
            "CREATE TABLE public.t",
            "COPY public.t (a, b) FROM stdin;\n1\t--\n2\t-- Name: x; Type: DATABASE; Schema: -; Owner: postgres\n--\n-- Name: DATABASE postgres; Type: ACL; Schema: -; Owner: postgres\n\\.\n",
            "-- PostgreSQL database dump complete",
        ] {
            assert!(out.contains(kept), "{kept} missing in:\n{out}");
        }
        assert_eq!(out.matches("\\restrict KEY").count(), 1, "{out}");
        assert_eq!(out.matches("\\unrestrict KEY").count(), 1, "{out}");
    }

    #[test]
    fn create_filter_output_does_not_depend_on_chunking() {
        let whole = filter_in_chunks(WITH_CREATE, 1 << 20);
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(filter_in_chunks(WITH_CREATE, size), whole, "chunk {size}");
        }
    }

    #[test]
    fn create_filter_streams_lines_longer_than_its_buffer() {
        let long = "x".repeat(super::super::sql_lines::LINE_LIMIT * 3);
        let input = format!("COPY public.t (b) FROM stdin;\n{long}\n\\.\n-- end\n");
        assert_eq!(filter_in_chunks(&input, 1000), input);
    }

    #[test]
    fn cluster_order_is_template1_then_bytes() {
        let mut dbs: Vec<String> = ["postgres", "Sales-2025", "app", "template1", "données"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        cluster_order(&mut dbs);
        assert_eq!(
            dbs,
            ["template1", "Sales-2025", "app", "données", "postgres"]
        );
    }

    #[test]
    fn a_table_named_like_a_database_entry_keeps_its_data() {
        let input = "--
-- Name: x; Type: DATABASE; Schema: -;; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.\"x; Type: DATABASE; Schema: -;\" (a integer);

--
-- Name: postgres; Type: DATABASE; Schema: -; Owner: x; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.\"postgres; Type: DATABASE; Schema: -; Owner: x\" (a integer);

--
-- Data for Name: x; Type: DATABASE; Schema: -;; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.\"x; Type: DATABASE; Schema: -;\" (a) FROM stdin;
1
\\.

CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$
--
-- Name: postgres; Type: DATABASE; Schema: -; Owner: postgres
--
SELECT 1
$$;

--
-- PostgreSQL database dump complete
--
";
        assert_eq!(filter_in_chunks(input, 7), input);
    }

    #[test]
    fn names_in_comments_cannot_start_a_line() {
        for name in [
            "evil\nALTER ROLE app SUPERUSER; -- ",
            "x\r\\! touch /tmp/p #",
        ] {
            for text in [database_header(name), missing_database_note(name)] {
                for line in text.lines() {
                    assert!(
                        line.is_empty() || line.starts_with("--"),
                        "{line:?} in {text:?}"
                    );
                }
                assert!(!text.contains('\r'));
            }
        }
    }
}
