//! Restoring a `pg_dump --create` file under another database name: its `CREATE DATABASE`,
//! `\connect` and the other database-level statements follow the new name, so encoding,
//! locale, owner, settings, grants and comments come along unchanged.
//!
//! Only statements pg_dump writes about the database itself are touched, only where a
//! statement starts at the top level (never inside a function body, a string literal, a
//! comment or COPY data: the scanner says where psql will read SQL), and only the identifier
//! that names the database (a comment that mentions the old name keeps it).

use std::borrow::Cow;

use crate::backup::psql_scan::LineStart;

#[derive(Debug)]
pub struct RenameDatabase {
    old: String,
    new_ident: String,
    new_connect: String,
}

impl RenameDatabase {
    pub fn new(old: &str, new: &str) -> RenameDatabase {
        RenameDatabase {
            old: old.to_string(),
            new_ident: crate::pg::quote_ident(new),
            new_connect: connect_line(new),
        }
    }
}

/// A psql `\connect` to `database`, quoted as pg_dump does (a conninfo string inside a
/// psql double-quoted argument), so any name survives.
pub fn connect_line(database: &str) -> String {
    let conninfo = format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    );
    format!(
        "\\connect -reuse-previous=on \"{}\"",
        conninfo.replace('"', "\"\"")
    )
}

/// Reads an identifier at the start of `s` (quoted or bare); returns it and its length.
fn read_ident(s: &[u8]) -> Option<(String, usize)> {
    if s.first() == Some(&b'"') {
        let mut out = Vec::new();
        let mut i = 1;
        while i < s.len() {
            if s[i] == b'"' {
                if s.get(i + 1) == Some(&b'"') {
                    out.push(b'"');
                    i += 2;
                    continue;
                }
                return String::from_utf8(out).ok().map(|n| (n, i + 1));
            }
            out.push(s[i]);
            i += 1;
        }
        None
    } else {
        let end = s
            .iter()
            .position(|&b| b == b' ' || b == b';' || b == b'\t')
            .unwrap_or(s.len());
        (end > 0)
            .then(|| String::from_utf8(s[..end].to_vec()).ok())
            .flatten()
            .map(|n| (n, end))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl RenameDatabase {
    /// The identifier right after `at` (a byte offset in `line`) replaced, when it names the
    /// old database.
    fn replace_ident_at(&self, line: &[u8], at: usize) -> Option<Vec<u8>> {
        match read_ident(&line[at..]) {
            Some((name, len)) if name == self.old => {
                let mut out = Vec::with_capacity(line.len() + self.new_ident.len());
                out.extend_from_slice(&line[..at]);
                out.extend_from_slice(self.new_ident.as_bytes());
                out.extend_from_slice(&line[at + len..]);
                Some(out)
            }
            _ => None,
        }
    }

    /// The line with the database renamed, or as it was.
    pub fn rewrite<'a>(&self, line: &'a [u8], start: LineStart) -> Cow<'a, [u8]> {
        let LineStart::Top { statement_start } = start else {
            return Cow::Borrowed(line);
        };
        if line.starts_with(b"\\connect ") {
            return Cow::Owned(self.new_connect.as_bytes().to_vec());
        }
        if !statement_start {
            return Cow::Borrowed(line);
        }
        for prefix in [
            &b"CREATE DATABASE "[..],
            b"ALTER DATABASE ",
            b"COMMENT ON DATABASE ",
        ] {
            if line.starts_with(prefix)
                && let Some(out) = self.replace_ident_at(line, prefix.len())
            {
                return Cow::Owned(out);
            }
        }
        let statements: [(&[u8], &[u8]); 4] = [
            (b"GRANT ", b" ON DATABASE "),
            (b"REVOKE ", b" ON DATABASE "),
            (b"SECURITY LABEL ", b" ON DATABASE "),
            (b"ALTER ROLE ", b" IN DATABASE "),
        ];
        for (start, marker) in statements {
            if line.starts_with(start)
                && let Some(pos) = find(line, marker)
                && let Some(out) = self.replace_ident_at(line, pos + marker.len())
            {
                return Cow::Owned(out);
            }
        }
        Cow::Borrowed(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backup::sql_lines::{LineRewriter, SqlLines};

    struct Only(RenameDatabase);

    impl LineRewriter for Only {
        fn line(&mut self, line: &[u8], start: LineStart, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.rewrite(line, start));
            out.push(b'\n');
        }
    }

    fn rename(input: &str, old: &str, new: &str) -> String {
        let mut f = SqlLines::new(Only(RenameDatabase::new(old, new)));
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(5) {
            f.push(c, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn database_statements_follow_the_new_name() {
        let input = "\
CREATE DATABASE \"my db\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'C.UTF-8';
ALTER DATABASE \"my db\" OWNER TO app_owner;
\\connect -reuse-previous=on \"dbname='my db'\"
COMMENT ON DATABASE \"my db\" IS 'my db is the app''s database';
ALTER DATABASE \"my db\" SET work_mem TO '16MB';
GRANT CONNECT ON DATABASE \"my db\" TO readers;
REVOKE CONNECT,TEMPORARY ON DATABASE \"my db\" FROM PUBLIC;
ALTER ROLE readers IN DATABASE \"my db\" SET search_path TO 'sales';
CREATE TABLE public.t (note text);
COPY public.t (note) FROM stdin;
CREATE DATABASE \"my db\"
\\.
";
        let out = rename(input, "my db", "O'Brien \"copy\"");
        let expected = "\
CREATE DATABASE \"O'Brien \"\"copy\"\"\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'C.UTF-8';
ALTER DATABASE \"O'Brien \"\"copy\"\"\" OWNER TO app_owner;
\\connect -reuse-previous=on \"dbname='O\\'Brien \"\"copy\"\"'\"
COMMENT ON DATABASE \"O'Brien \"\"copy\"\"\" IS 'my db is the app''s database';
ALTER DATABASE \"O'Brien \"\"copy\"\"\" SET work_mem TO '16MB';
GRANT CONNECT ON DATABASE \"O'Brien \"\"copy\"\"\" TO readers;
REVOKE CONNECT,TEMPORARY ON DATABASE \"O'Brien \"\"copy\"\"\" FROM PUBLIC;
ALTER ROLE readers IN DATABASE \"O'Brien \"\"copy\"\"\" SET search_path TO 'sales';
CREATE TABLE public.t (note text);
COPY public.t (note) FROM stdin;
CREATE DATABASE \"my db\"
\\.
";
        assert_eq!(out, expected);
    }

    #[test]
    fn bare_names_are_matched_exactly() {
        let input = "CREATE DATABASE app WITH TEMPLATE = template0;\nALTER DATABASE app_other SET x TO 1;\n\\connect app\n";
        let out = rename(input, "app", "app_restored");
        assert_eq!(
            out,
            "CREATE DATABASE \"app_restored\" WITH TEMPLATE = template0;\nALTER DATABASE app_other SET x TO 1;\n\\connect -reuse-previous=on \"dbname='app_restored'\"\n"
        );
    }

    #[test]
    fn bodies_literals_and_copy_data_are_never_rewritten() {
        let long_columns: Vec<String> = (0..12_000).map(|i| format!("c{i}")).collect();
        let input = format!(
            "CREATE FUNCTION public.f() RETURNS text LANGUAGE plpgsql AS $_$
BEGIN
CREATE DATABASE \"my db\" ok;
ALTER DATABASE \"my db\" SET x TO 1;
\\connect -reuse-previous=on \"dbname='my db'\"
END
$_$;
CREATE TABLE public.t (note text DEFAULT 'line one
ALTER DATABASE \"my db\" OWNER TO x;
');
COPY public.t ({}) FROM stdin;
\\\\connect -reuse-previous=on \"dbname='my db'\"
CREATE DATABASE \"my db\"
\\.
ALTER DATABASE \"my db\" OWNER TO app_owner;
",
            long_columns.join(", ")
        );
        let out = rename(&input, "my db", "copy");
        let expected = input.replace(
            "ALTER DATABASE \"my db\" OWNER TO app_owner;",
            "ALTER DATABASE \"copy\" OWNER TO app_owner;",
        );
        assert_eq!(out, expected);
    }

    proptest::proptest! {
        /// What pg_dump writes for a database of any name, restored under any other name:
        /// every statement about the database and its `\connect` follow the new name, and
        /// the screening reads that `\connect` back as exactly the new name.
        #[test]
        fn any_name_renamed_to_any_name_connects_to_exactly_the_new_one(
            old in "[^\\x00\\n\\r]{1,30}",
            new in "[^\\x00\\n\\r]{1,30}",
            quote in proptest::bool::ANY,
        ) {
            use crate::backup::psql_scan::{Meta, pg_dump_forms, scan_all};
            let id = pg_dump_forms::fmt_id(&old, quote);
            let input = format!(
                "CREATE DATABASE {id} WITH TEMPLATE = template0;\nALTER DATABASE {id} OWNER TO o;\n{}COMMENT ON DATABASE {id} IS 'c';\n",
                pg_dump_forms::connect(&old, quote)
            );
            let out = rename(&input, &old, &new);
            let new_id = crate::pg::quote_ident(&new);
            let created = format!("CREATE DATABASE {new_id} WITH TEMPLATE");
            proptest::prop_assert!(out.starts_with(&created), "{}", out);
            let altered = format!("ALTER DATABASE {new_id} OWNER TO o;");
            let commented = format!("COMMENT ON DATABASE {new_id} IS 'c';");
            proptest::prop_assert!(out.contains(&altered), "{}", out);
            proptest::prop_assert!(out.contains(&commented), "{}", out);
            let metas = scan_all(out.as_bytes()).map_err(|v| {
                proptest::test_runner::TestCaseError::fail(format!("{v} in {out:?}"))
            })?;
            let connects: Vec<Meta> =
                metas.into_iter().filter(|m| matches!(m, Meta::Connect(_))).collect();
            proptest::prop_assert_eq!(connects, vec![Meta::Connect(new.clone())]);
        }
    }
}
