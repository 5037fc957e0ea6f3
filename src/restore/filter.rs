//! What reaches psql during a restore: the checked SQL, renamed when asked, with the file's
//! own `\restrict`/`\unrestrict`/`\encoding` lines replaced by ours: the only meta-command of
//! the file that psql runs is a checked `\connect` to a database by name.
//!
//! The whole replay runs in psql's restricted mode (`\restrict`, PostgreSQL 13.22, 14.19,
//! 15.14, 16.10, 17.6 and later; an older psql is refused before any replay) under a key that
//! only this run knows: psql then refuses every meta-command, so even one that the pre-replay
//! scan could not see (a file that turns `standard_conforming_strings` off to hide a string's
//! end) never runs. Each checked `\connect` line is let through by lifting the restriction
//! for that one line.

use crate::backup::psql_scan::{LineStart, Meta, check_meta};
use crate::backup::sql_lines::{LineRewriter, SqlLines};

use super::rename::RenameDatabase;

#[derive(Debug)]
pub struct ReplayRewriter {
    rename: Option<RenameDatabase>,
    /// The `\restrict` key of this run.
    key: String,
}

/// The filter between the decoded file and psql's stdin.
pub type ReplayFilter = SqlLines<ReplayRewriter>;

/// `rename` is `(old, new)` for a database restored under another name.
pub fn replay_filter(rename: Option<(&str, &str)>) -> ReplayFilter {
    SqlLines::new(ReplayRewriter {
        rename: rename.map(|(old, new)| RenameDatabase::new(old, new)),
        key: crate::random::token(48),
    })
}

impl LineRewriter for ReplayRewriter {
    fn start(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("\\restrict {}\n", self.key).as_bytes());
    }

    fn line(&mut self, line: &[u8], start: LineStart, out: &mut Vec<u8>) {
        let line = match &self.rename {
            Some(r) => r.rewrite(line, start),
            None => std::borrow::Cow::Borrowed(line),
        };
        if matches!(start, LineStart::Top { .. }) && line.first() == Some(&b'\\') {
            // The scanner let only checked meta-commands through; check again all the same.
            match check_meta(&line) {
                Ok(Meta::Connect(_)) => {
                    out.extend_from_slice(format!("\\unrestrict {}\n", self.key).as_bytes());
                    // As pg_dump does: psql reads a quoted connection string byte for byte.
                    if line.starts_with(b"\\connect -reuse-previous=on ") {
                        out.extend_from_slice(b"\\encoding SQL_ASCII\n");
                    }
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                    out.extend_from_slice(format!("\\restrict {}\n", self.key).as_bytes());
                }
                // The file's own restriction keys mean nothing to our psql session, and its
                // `\encoding` is ours to write (just above).
                Ok(Meta::Restrict | Meta::Unrestrict | Meta::EncodingSqlAscii) | Err(_) => {}
            }
            return;
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("\n\\unrestrict {}\n", self.key).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(input: &str, rename: Option<(&str, &str)>) -> String {
        let mut f = replay_filter(rename);
        let key = f.rewriter.key.clone();
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(3) {
            f.push(c, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap().replace(&key, "KEY")
    }

    #[test]
    fn the_replay_runs_restricted_and_lifts_it_only_for_connect() {
        let input = "\\restrict fileKey\nSELECT 1;\n\\unrestrict fileKey\n\\connect postgres\n\\restrict fileKey\nSELECT '\\connect x';\n\\unrestrict fileKey\n";
        assert_eq!(
            replay(input, None),
            "\\restrict KEY\nSELECT 1;\n\\unrestrict KEY\n\\connect postgres\n\\restrict KEY\nSELECT '\\connect x';\n\n\\unrestrict KEY\n"
        );
    }

    #[test]
    fn a_renamed_connect_is_let_through_too() {
        let out = replay(
            "\\encoding SQL_ASCII\n\\connect -reuse-previous=on \"dbname='a'\"\n",
            Some(("a", "b")),
        );
        assert!(
            out.contains("\\unrestrict KEY\n\\encoding SQL_ASCII\n\\connect -reuse-previous=on \"dbname='b'\"\n\\restrict KEY\n"),
            "{out}"
        );
    }
}
