//! Restoring a `pg_dump --create` file under another database name: its `CREATE DATABASE`,
//! `\connect` and the other database-level statements follow the new name, so encoding,
//! locale, owner, settings, grants and comments come along unchanged.
//!
//! Only the statements pg_dump writes about the database itself are touched, and only the
//! identifier that names it (a comment that mentions the old name keeps it); table data and
//! everything else stream through as they are.

use super::sql_lines::{LineRewriter, SqlLines};

/// The rename as a stream filter.
pub type RenameFilter = SqlLines<RenameDatabase>;

pub fn rename_filter(old: &str, new: &str) -> RenameFilter {
    SqlLines::new(RenameDatabase {
        old: old.to_string(),
        new_ident: quote_ident(new),
        new_connect: connect_line(new),
    })
}

#[derive(Debug)]
pub struct RenameDatabase {
    old: String,
    new_ident: String,
    new_connect: String,
}

/// Quotes an identifier the way SQL reads it back exactly.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

impl RenameDatabase {
    /// Replaces the identifier right after `at` (a byte offset in `line`) when it names the
    /// old database.
    fn replace_ident_at(&self, line: &[u8], at: usize, out: &mut Vec<u8>) -> bool {
        match read_ident(&line[at..]) {
            Some((name, len)) if name == self.old => {
                out.extend_from_slice(&line[..at]);
                out.extend_from_slice(self.new_ident.as_bytes());
                out.extend_from_slice(&line[at + len..]);
                out.push(b'\n');
                true
            }
            _ => false,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl LineRewriter for RenameDatabase {
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.starts_with(b"\\connect ") {
            out.extend_from_slice(self.new_connect.as_bytes());
            out.push(b'\n');
            return;
        }
        for prefix in [
            &b"CREATE DATABASE "[..],
            b"ALTER DATABASE ",
            b"COMMENT ON DATABASE ",
        ] {
            if line.starts_with(prefix) && self.replace_ident_at(line, prefix.len(), out) {
                return;
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
                && self.replace_ident_at(line, pos + marker.len(), out)
            {
                return;
            }
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(input: &str, old: &str, new: &str) -> String {
        let mut f = rename_filter(old, new);
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(5) {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
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
}
