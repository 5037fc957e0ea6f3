//! Reads a plain-format dump the way psql will: which bytes are SQL, which are inside string
//! literals, quoted identifiers, dollar-quoted bodies or comments, which are COPY data, and
//! which start a psql meta-command.
//!
//! A backup file comes from a bucket or a host that someone else may control, and psql runs
//! any meta-command it finds (`\!` runs a shell on the restore host, `\o |cmd` too). So before
//! any SQL of a file reaches the server, the whole file is scanned and refused (65, naming the
//! line) if it holds a meta-command other than the ones pg_dump writes: `\connect` to a
//! database by name, `\restrict KEY` and `\unrestrict KEY`. COPY data may hold only the
//! backslash sequences `COPY … TO` writes, so that even a COPY that fails (psql then reads its
//! data as SQL) cannot smuggle one in. The same scanner tells the stream rewriters (rename,
//! cluster filter, the `\restrict` guard) where a line starts, so they never touch a line
//! inside a function body, a string or COPY data.
//!
//! The scanner assumes `standard_conforming_strings = on`, which every pg_dump file sets. A
//! file that switches it off could make psql see a string where this sees SQL or the reverse;
//! the replay therefore also runs psql in its own `\restrict` mode (see `backup::guard`), so a
//! meta-command this scanner missed is refused by psql itself.

use memchr::{memchr, memchr_iter, memchr2, memrchr};

/// Where a line starts, as psql will read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStart {
    /// SQL at the top level; `statement_start` when no statement is under way.
    Top { statement_start: bool },
    /// Table data of a `COPY … FROM stdin`.
    Copy,
    /// Inside a string literal, quoted identifier, dollar-quoted body or block comment.
    Inside,
}

/// A meta-command that is allowed, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// `\connect` to this database (no host, user or port can be given).
    Connect(String),
    Restrict,
    Unrestrict,
    /// `\encoding SQL_ASCII`, which pg_dump writes before a `\connect` whose argument needs
    /// quoting, so that psql reads its bytes as they are.
    EncodingSqlAscii,
}

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 1-based line of the decoded SQL.
    pub line: u64,
    pub reason: &'static str,
    /// The start of the offending line, for the operator.
    pub text: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.reason, self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Normal,
    /// `'…'`; `escapes` for `E'…'`; `quote_seen` after a `'` that may close or double.
    Single {
        escapes: bool,
        backslash: bool,
        quote_seen: bool,
    },
    /// `"…"`, with `""` for a quote.
    Double {
        quote_seen: bool,
    },
    /// After a `$` that may open a dollar quote: the tag read so far.
    DollarOpen(Vec<u8>),
    /// Inside `$tag$…$tag$`; `matched` counts the bytes of `$tag$` seen at the end so far.
    Dollar {
        tag: Vec<u8>,
        matched: usize,
    },
    LineComment,
    BlockComment {
        depth: u32,
        last: u8,
    },
    /// A meta-command from its backslash to the end of the line.
    Meta,
    /// COPY data; `line_len` bytes of the current data line seen, `backslash` after a `\`,
    /// `marker` after a `\.` that must end the line (and the data).
    Copy {
        line_len: usize,
        backslash: bool,
        marker: bool,
    },
}

const MAX_TAG: usize = 1024;
const MAX_META: usize = 4096;
/// The start of the current line kept: enough for a COPY statement's table name (two
/// quoted 63-byte identifiers) and for messages (which show the first 120 bytes).
const SNIPPET: usize = 320;
const SHOWN: usize = 120;

/// The streaming scanner. Feed it the decoded SQL in chunks of any size.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// Where to go back to when COPY data ends.
    after_copy: Option<State>,
    line: u64,
    /// Bytes seen on the current line.
    column: usize,
    /// Length of the run of identifier bytes just before, at the top level.
    ident_run: usize,
    /// The run of identifier bytes began with a digit: a number, after which `$` opens a
    /// dollar quote as it does after any other token (psql's lexer reads `1$a$` so).
    number_run: bool,
    last: u8,
    paren: u32,
    statement_empty: bool,
    /// The first bytes of the statement under way, to recognise `COPY`.
    head: Vec<u8>,
    copy_candidate: bool,
    /// The last bytes of a COPY statement, to recognise `FROM stdin`.
    tail: Vec<u8>,
    /// A `COPY … FROM stdin;` was sent: its data starts with the next line.
    copy_pending: bool,
    meta: Vec<u8>,
    /// The first bytes of the current line, for messages.
    snippet: Vec<u8>,
    line_start: LineStart,
    metas: Vec<Meta>,
    /// Where a `\connect` may go (guarantee 11); `None`: anywhere by name.
    targets: Option<ConnectTargets>,
    /// The table of the COPY block under way and the line its data starts on.
    copy_table: Option<(Vec<String>, u64)>,
    copies: Vec<TableRows>,
    /// A `\connect` was read (a database's file: its own statements may follow).
    connected: bool,
    /// Where the statement under way started: its line and column (1: the line's first byte).
    statement_line: u64,
    statement_column: usize,
}

/// A table's rows as one COPY block of the dump carried them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableRows {
    /// The table's name parts as the server knows them (schema, table), unquoted.
    pub table: Vec<String>,
    pub rows: u64,
}

/// The name parts of `COPY <name> (…) FROM stdin;` as pg_dump writes it: identifiers, bare
/// (as the server folds them) or double-quoted, joined by dots.
fn copy_table_name(line: &[u8]) -> Option<Vec<String>> {
    let rest = line.get(..5).filter(|h| h.eq_ignore_ascii_case(b"copy "))?;
    let mut at = rest.len();
    let mut parts = Vec::new();
    loop {
        let (part, len) = identifier(&line[at..])?;
        parts.push(part);
        at += len;
        if line.get(at) != Some(&b'.') {
            break;
        }
        at += 1;
    }
    matches!(line.get(at), Some(b' ' | b'(' | b';')).then_some(parts)
}

/// One identifier at the start of `s`, and its length there.
fn identifier(s: &[u8]) -> Option<(String, usize)> {
    if s.first() == Some(&b'"') {
        let mut out = Vec::new();
        let mut i = 1;
        loop {
            match *s.get(i)? {
                b'"' if s.get(i + 1) == Some(&b'"') => {
                    out.push(b'"');
                    i += 2;
                }
                b'"' => return Some((String::from_utf8(out).ok()?, i + 1)),
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
    }
    let len = s.iter().take_while(|b| is_ident(**b)).count();
    if len == 0 || s[0].is_ascii_digit() || s[0] == b'$' {
        return None;
    }
    let folded = s[..len].to_ascii_lowercase();
    Some((String::from_utf8(folded).ok()?, len))
}

/// The databases a file may `\connect` to: a database's own file only to that database, a
/// cluster file only to the databases its manifest lists plus `postgres` and `template1`
/// (which `pg_dumpall` fills in place). A `\connect` elsewhere would write into a database
/// that the operator did not agree to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTargets {
    databases: std::collections::BTreeSet<String>,
    /// One database's own file: it must connect to it, and before that it may only say
    /// what pg_dump says there (session settings, its own `CREATE DATABASE` and owner).
    own: Option<String>,
}

impl ConnectTargets {
    /// One database's file: only that database.
    pub fn only(database: &str) -> ConnectTargets {
        ConnectTargets {
            databases: [database.to_string()].into(),
            own: Some(database.to_string()),
        }
    }

    /// A cluster file: these databases, plus the two that every server has.
    pub fn cluster<'a>(databases: impl IntoIterator<Item = &'a str>) -> ConnectTargets {
        let mut set: std::collections::BTreeSet<String> =
            databases.into_iter().map(str::to_string).collect();
        set.insert("postgres".into());
        set.insert("template1".into());
        ConnectTargets {
            databases: set,
            own: None,
        }
    }

    /// A globals file (`pg_dumpall --globals-only` writes no `\connect`): nowhere.
    pub fn none() -> ConnectTargets {
        ConnectTargets {
            databases: Default::default(),
            own: None,
        }
    }

    pub fn allows(&self, database: &str) -> bool {
        self.databases.contains(database)
    }
}

/// Client encodings whose multibyte characters can hold an ASCII backslash or quote byte:
/// psql's lexer reads a string differently under them, so no backup may switch to one.
const CLIENT_ONLY_ENCODINGS: &[&str] = &[
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
];

/// The session settings that change how psql reads what follows: pg_dump writes them once,
/// in one form (`SET client_encoding = 'UTF8';`, `SET standard_conforming_strings = on;`), and
/// never `RESET` or `set_config` them. `statement` is the statement's text when it fits on
/// its line (`None`: it spans lines), `head` its first bytes, lowercased.
fn lexer_setting_ok(head: &[u8], statement: Option<&[u8]>) -> bool {
    let is_set = head.starts_with(b"set ") || head.starts_with(b"reset");
    let Some(text) = statement else {
        // pg_dump writes every SET on one line.
        return !is_set;
    };
    let lower = text.to_ascii_lowercase();
    let mentions = |word: &[u8]| lower.windows(word.len()).any(|w| w == word);
    let lexer_word = mentions(b"client_encoding") || mentions(b"standard_conforming_strings");
    // Only SET, RESET and a top-level set_config(): the same words in a comment's string or
    // a column's name are data.
    let touches = (is_set && (lexer_word || lower.starts_with(b"set names")))
        || (head.starts_with(b"selec") && mentions(b"set_config(") && lexer_word);
    if !touches {
        return true;
    }
    if text == b"SET standard_conforming_strings = on;" {
        return true;
    }
    if let Some(value) = text
        .strip_prefix(b"SET client_encoding = '")
        .and_then(|v| v.strip_suffix(b"';"))
    {
        let value = String::from_utf8_lossy(value).to_ascii_uppercase();
        return value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !CLIENT_ONLY_ENCODINGS.contains(&value.as_str());
    }
    false
}

/// Whether a statement pg_dump writes before a database file's `\connect` (one line, at
/// the start of it): session settings, and the database's own `CREATE DATABASE` and owner.
/// Anything else would run in whatever database psql started in.
fn allowed_before_connect(line: &[u8], own: &str) -> bool {
    if line.starts_with(b"SET ")
        || line == b"SELECT pg_catalog.set_config('search_path', '', false);"
    {
        return true;
    }
    for (prefix, then) in [
        (&b"CREATE DATABASE "[..], &b" WITH "[..]),
        (b"ALTER DATABASE ", b" OWNER TO "),
    ] {
        if let Some(rest) = line.strip_prefix(prefix)
            && let Some((name, len)) = identifier(rest)
            && name == own
            && rest[len..].starts_with(then)
        {
            return true;
        }
    }
    false
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_tag_cont(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            state: State::Normal,
            after_copy: None,
            line: 1,
            column: 0,
            ident_run: 0,
            number_run: false,
            last: 0,
            paren: 0,
            statement_empty: true,
            head: Vec::new(),
            copy_candidate: false,
            tail: Vec::new(),
            copy_pending: false,
            meta: Vec::new(),
            snippet: Vec::new(),
            line_start: LineStart::Top {
                statement_start: true,
            },
            metas: Vec::new(),
            targets: None,
            copy_table: None,
            copies: Vec::new(),
            connected: false,
            statement_line: 1,
            statement_column: 1,
        }
    }

    /// A scanner that also refuses a `\connect` to any database but `targets`.
    pub fn with_targets(mut self, targets: Option<ConnectTargets>) -> Scanner {
        self.targets = targets;
        self
    }

    /// How the line that starts at the current position will be read. Meaningful right
    /// after a newline (or at the very beginning).
    pub fn line_start(&self) -> LineStart {
        self.line_start
    }

    /// The current (1-based) line.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The meta-commands checked since the last call, in order.
    pub fn take_metas(&mut self) -> Vec<Meta> {
        std::mem::take(&mut self.metas)
    }

    fn violation(&self, reason: &'static str) -> Violation {
        Violation {
            line: self.line,
            reason,
            text: String::from_utf8_lossy(&self.snippet[..self.snippet.len().min(SHOWN)])
                .into_owned(),
        }
    }

    /// The rows of each COPY block read since the last call, in order: what the dump stream
    /// carried for each table (guarantee 10).
    pub fn take_copies(&mut self) -> Vec<TableRows> {
        std::mem::take(&mut self.copies)
    }

    /// Scans `bytes`. The first violation stops the scan; the file is not to be replayed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let mut i = 0;
        while i < bytes.len() {
            // Fast paths for the bulk of a dump: COPY data and long quoted bodies.
            match &mut self.state {
                State::Copy {
                    line_len,
                    backslash: false,
                    marker: false,
                } => {
                    // COPY data is most of a dump, millions of short rows: only a backslash
                    // needs the state machine (the `\.` that ends the data starts with one),
                    // so the rows up to the next backslash are skipped with one search, their
                    // lines counted with another, and only the last line kept for messages.
                    let rest = &bytes[i..];
                    let run = memchr2(b'\\', 0, rest).unwrap_or(rest.len());
                    let rows = &rest[..run];
                    let mut len = *line_len + run;
                    match memrchr(b'\n', rows) {
                        Some(last) => {
                            self.line += memchr_iter(b'\n', rows).count() as u64;
                            self.snippet.clear();
                            self.line_start = LineStart::Copy;
                            len = run - last - 1;
                            self.column = len;
                            self.note_snippet(&rows[last + 1..]);
                        }
                        None => {
                            self.column += run;
                            self.note_snippet(rows);
                        }
                    }
                    self.state = State::Copy {
                        line_len: len,
                        backslash: false,
                        marker: false,
                    };
                    i += run;
                    if i == bytes.len() {
                        return Ok(());
                    }
                    // The backslash (or NUL) itself goes through `byte` below.
                }
                State::Dollar { matched: 0, .. } | State::LineComment => {
                    let target = if matches!(self.state, State::LineComment) {
                        memchr(b'\n', &bytes[i..])
                    } else {
                        memchr2(b'$', b'\n', &bytes[i..])
                    };
                    match target {
                        Some(off) => {
                            self.note_snippet(&bytes[i..i + off]);
                            self.column += off;
                            i += off;
                        }
                        None => {
                            self.note_snippet(&bytes[i..]);
                            self.column += bytes.len() - i;
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
            let b = bytes[i];
            i += 1;
            self.byte(b)?;
        }
        Ok(())
    }

    /// The stream ended.
    pub fn finish(&mut self) -> Result<(), Violation> {
        match self.state {
            State::Meta => {
                self.end_meta()?;
                self.state = State::Normal;
            }
            State::Normal | State::LineComment | State::DollarOpen(_) => {}
            State::Single {
                quote_seen: true, ..
            }
            | State::Double { quote_seen: true } => {}
            _ => {
                return Err(self.violation(
                    "the file ends inside a string, quoted name, dollar-quoted body, comment \
                     or COPY data (pg_dump closes every one)",
                ));
            }
        }
        if !self.connected && self.targets.as_ref().is_some_and(|t| t.own.is_some()) {
            return Err(self.violation(
                "a database's file that never connects to its database (pg_dump --create writes \
                 a \\connect)",
            ));
        }
        Ok(())
    }

    fn note_snippet(&mut self, bytes: &[u8]) {
        if self.snippet.len() < SNIPPET {
            let take = (SNIPPET - self.snippet.len()).min(bytes.len());
            self.snippet.extend_from_slice(&bytes[..take]);
        }
    }

    fn newline(&mut self) {
        self.line += 1;
        self.column = 0;
        self.snippet.clear();
        if self.copy_pending {
            self.copy_pending = false;
            if let Some((_, start)) = self.copy_table.as_mut() {
                *start = self.line;
            }
            let back = std::mem::replace(
                &mut self.state,
                State::Copy {
                    line_len: 0,
                    backslash: false,
                    marker: false,
                },
            );
            self.after_copy = Some(back);
        }
        self.line_start = match &self.state {
            State::Normal => LineStart::Top {
                statement_start: self.statement_empty,
            },
            State::Copy { .. } => LineStart::Copy,
            _ => LineStart::Inside,
        };
    }

    fn statement_byte(&mut self, b: u8) {
        if b.is_ascii_whitespace() {
            if self.copy_candidate {
                self.push_tail(b' ');
            }
            if !self.statement_empty && self.head.len() < 5 && !self.head.is_empty() {
                self.head.push(b' ');
                self.check_head();
            }
            return;
        }
        if self.statement_empty {
            self.statement_empty = false;
            self.statement_line = self.line;
            self.statement_column = self.column;
            self.head.clear();
            self.tail.clear();
            self.copy_candidate = false;
        }
        if self.head.len() < 5 {
            self.head.push(b.to_ascii_lowercase());
            self.check_head();
        }
        if self.copy_candidate {
            self.push_tail(b);
        }
    }

    fn check_head(&mut self) {
        // `COPY` followed by anything that ends the word (`COPY"t"` too, as the server reads it).
        if self.head.len() == 5 {
            self.copy_candidate = self.head.starts_with(b"copy") && !is_ident(self.head[4]);
        }
    }

    fn push_tail(&mut self, b: u8) {
        if b == b' ' && self.tail.last() == Some(&b' ') {
            return;
        }
        self.tail.push(b.to_ascii_lowercase());
        if self.tail.len() > 32 {
            self.tail.drain(..self.tail.len() - 16);
        }
    }

    fn end_statement(&mut self) -> Result<(), Violation> {
        let single_line = self.statement_line == self.line;
        let statement = single_line
            .then(|| self.snippet.get(self.statement_column.saturating_sub(1)..))
            .flatten();
        if !lexer_setting_ok(&self.head, statement) {
            return Err(self.violation(
                "a change of client_encoding or standard_conforming_strings that pg_dump does \
                 not write (psql would read the rest of the file differently)",
            ));
        }
        if !self.connected
            && let Some(own) = self.targets.as_ref().and_then(|t| t.own.as_deref())
            && (self.statement_line != self.line
                || self.statement_column != 1
                || !allowed_before_connect(&self.snippet, own))
        {
            return Err(self.violation(
                "SQL before the file connects to its database that pg_dump does not write there \
                 (it would run in another database)",
            ));
        }
        if self.copy_candidate {
            let tail = String::from_utf8_lossy(&self.tail);
            if !tail.trim_end().ends_with(" from stdin") {
                // Only `COPY … FROM stdin` is what pg_dump writes, and only it is followed by
                // data this scanner knows to be data.
                return Err(self.violation(
                    "a COPY that is not `COPY … FROM stdin` (pg_dump writes no other)",
                ));
            }
            self.copy_pending = true;
            self.copy_table = copy_table_name(&self.snippet).map(|name| (name, 0));
        }
        self.statement_empty = true;
        self.copy_candidate = false;
        self.head.clear();
        self.tail.clear();
        Ok(())
    }

    fn byte(&mut self, b: u8) -> Result<(), Violation> {
        if b == 0 {
            // psql stops reading a line at a NUL; pg_dump never writes one.
            return Err(self.violation("a NUL byte (pg_dump never writes one)"));
        }
        if b != b'\n' {
            self.column += 1;
            if self.snippet.len() < SNIPPET {
                self.snippet.push(b);
            }
        }
        self.step(b)?;
        if b == b'\n' {
            self.newline();
        }
        Ok(())
    }

    /// Moves the state machine by one byte (line accounting is the caller's).
    fn step(&mut self, b: u8) -> Result<(), Violation> {
        match std::mem::replace(&mut self.state, State::Normal) {
            State::Normal => self.normal(b)?,
            State::Single {
                escapes,
                backslash,
                quote_seen,
            } => {
                if quote_seen && b != b'\'' {
                    // The string ended at the quote before: this byte is SQL again.
                    self.last = b'\'';
                    self.ident_run = 0;
                    return self.normal(b);
                }
                self.state = State::Single {
                    escapes,
                    backslash: !quote_seen && !backslash && escapes && b == b'\\',
                    quote_seen: !quote_seen && !backslash && b == b'\'',
                };
            }
            State::Double { quote_seen } => {
                if quote_seen && b != b'"' {
                    self.last = b'"';
                    self.ident_run = 0;
                    return self.normal(b);
                }
                self.state = State::Double {
                    quote_seen: !quote_seen && b == b'"',
                };
            }
            State::DollarOpen(tag) => return self.dollar_open(tag, b),
            State::Dollar { tag, matched } => self.dollar(tag, matched, b),
            State::LineComment => {
                if b == b'\n' {
                    self.last = 0;
                    self.ident_run = 0;
                    self.statement_byte(b);
                } else {
                    self.state = State::LineComment;
                }
            }
            State::BlockComment { depth, last } => {
                let (depth, last) = if last == b'/' && b == b'*' {
                    (depth + 1, 0)
                } else if last == b'*' && b == b'/' {
                    (depth - 1, 0)
                } else {
                    (depth, b)
                };
                if depth == 0 {
                    self.last = 0;
                    self.ident_run = 0;
                } else {
                    self.state = State::BlockComment { depth, last };
                }
            }
            State::Meta => {
                if b == b'\n' {
                    self.end_meta()?;
                    self.last = 0;
                    self.ident_run = 0;
                } else {
                    if self.meta.len() >= MAX_META {
                        return Err(self.violation("a psql meta-command line is too long"));
                    }
                    self.meta.push(b);
                    self.state = State::Meta;
                }
            }
            State::Copy {
                line_len,
                backslash,
                marker,
            } => self.copy_byte(b, line_len, backslash, marker)?,
        }
        Ok(())
    }

    /// After a `$` that may open a dollar quote, with the tag read so far.
    fn dollar_open(&mut self, mut tag: Vec<u8>, b: u8) -> Result<(), Violation> {
        if b == b'$' {
            self.state = State::Dollar { tag, matched: 0 };
        } else if (tag.is_empty() && is_tag_start(b)) || (!tag.is_empty() && is_tag_cont(b)) {
            if tag.len() >= MAX_TAG {
                return Err(self.violation("a dollar-quote tag is too long"));
            }
            tag.push(b);
            self.state = State::DollarOpen(tag);
        } else {
            // `$1`, a lone `$`, or `$E'…'`: not a quote after all. psql reads on from the
            // byte after the `$`, so the tag is SQL again (`$E'\''` holds an E'' string).
            self.ident_run = 0;
            self.last = b'$';
            for t in tag {
                self.normal(t)?;
            }
            return self.normal(b);
        }
        Ok(())
    }

    /// Inside `$tag$…$tag$`, `matched` bytes of the closing delimiter seen.
    fn dollar(&mut self, tag: Vec<u8>, matched: usize, b: u8) {
        let closing_len = tag.len() + 2;
        let expected = if matched == 0 || matched == closing_len - 1 {
            b'$'
        } else {
            tag[matched - 1]
        };
        let matched = if b == expected {
            matched + 1
        } else if b == b'$' {
            1
        } else {
            0
        };
        if matched == closing_len {
            self.ident_run = 0;
            self.last = b'$';
        } else {
            self.state = State::Dollar { tag, matched };
        }
    }

    fn normal(&mut self, b: u8) -> Result<(), Violation> {
        self.state = State::Normal;
        match b {
            b'\n' => {
                self.flush_operator();
                self.ident_run = 0;
                self.last = 0;
                self.statement_byte(b);
                return Ok(());
            }
            b'\\' => {
                if self.column != 1 {
                    return Err(self.violation(
                        "a psql meta-command in the middle of a line (pg_dump writes none)",
                    ));
                }
                self.meta.clear();
                self.meta.push(b);
                self.state = State::Meta;
                return Ok(());
            }
            b'-' if self.last == b'-' => {
                self.state = State::LineComment;
                self.last = 0;
                self.ident_run = 0;
                return Ok(());
            }
            b'*' if self.last == b'/' => {
                self.state = State::BlockComment { depth: 1, last: 0 };
                self.last = 0;
                self.ident_run = 0;
                return Ok(());
            }
            _ => {}
        }
        // A `-` or `/` is held back until the next byte tells whether it opens a comment.
        self.flush_operator();
        match b {
            b'\'' => {
                let escapes = self.ident_run == 1 && matches!(self.last, b'E' | b'e');
                self.statement_byte(b);
                self.state = State::Single {
                    escapes,
                    backslash: false,
                    quote_seen: false,
                };
                self.ident_run = 0;
                self.last = b'\'';
                return Ok(());
            }
            b'"' => {
                self.statement_byte(b);
                self.state = State::Double { quote_seen: false };
                self.ident_run = 0;
                self.last = b'"';
                return Ok(());
            }
            b'$' if self.ident_run == 0 || self.number_run => {
                self.statement_byte(b);
                self.state = State::DollarOpen(Vec::new());
                self.last = b'$';
                return Ok(());
            }
            b'(' => self.paren += 1,
            b')' => self.paren = self.paren.saturating_sub(1),
            b';' if self.paren == 0 => {
                self.ident_run = 0;
                self.last = b';';
                if !self.statement_empty {
                    self.end_statement()?;
                }
                return Ok(());
            }
            _ => {}
        }
        if b != b'-' && b != b'/' {
            self.statement_byte(b);
        }
        if is_ident(b) {
            if self.ident_run == 0 {
                self.number_run = b.is_ascii_digit();
            }
            self.ident_run += 1;
        } else {
            self.ident_run = 0;
        }
        self.last = b;
        Ok(())
    }

    /// A `-` or `/` held back turned out to be an operator: it is statement text.
    fn flush_operator(&mut self) {
        if self.last == b'-' || self.last == b'/' {
            let op = self.last;
            self.statement_byte(op);
            self.last = 0;
        }
    }

    fn end_meta(&mut self) -> Result<(), Violation> {
        let meta = std::mem::take(&mut self.meta);
        match check_meta(&meta) {
            Ok(Meta::Connect(db)) if self.targets.as_ref().is_some_and(|t| !t.allows(&db)) => {
                Err(self.violation(
                    "a \\connect to a database this file may not write to (a database's file \
                     connects only to that database, a cluster file only to the databases of its \
                     manifest)",
                ))
            }
            Ok(m) => {
                self.connected |= matches!(m, Meta::Connect(_));
                self.metas.push(m);
                Ok(())
            }
            Err(reason) => Err(self.violation(reason)),
        }
    }

    fn copy_byte(
        &mut self,
        b: u8,
        line_len: usize,
        backslash: bool,
        marker: bool,
    ) -> Result<(), Violation> {
        if marker {
            if b == b'\n' {
                // `\.` alone on its line: the data ends.
                if let Some((table, start)) = self.copy_table.take() {
                    let rows = self.line.saturating_sub(start);
                    self.copies.push(TableRows { table, rows });
                }
                self.state = self.after_copy.take().unwrap_or(State::Normal);
                self.last = 0;
                self.ident_run = 0;
                return Ok(());
            }
            return Err(self.violation("COPY data holds `\\.` before the end of a line"));
        }
        if backslash {
            match b {
                b'.' if line_len == 1 => {
                    self.state = State::Copy {
                        line_len: 2,
                        backslash: false,
                        marker: true,
                    };
                    return Ok(());
                }
                b'\\' | b'N' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' => {}
                _ => {
                    return Err(self
                        .violation("COPY data holds a backslash sequence that COPY never writes"));
                }
            }
        }
        self.state = match b {
            b'\n' => State::Copy {
                line_len: 0,
                backslash: false,
                marker: false,
            },
            _ => State::Copy {
                line_len: line_len + 1,
                backslash: !backslash && b == b'\\',
                marker: false,
            },
        };
        Ok(())
    }
}

/// Checks one meta-command line (from its backslash, without the newline).
pub fn check_meta(line: &[u8]) -> Result<Meta, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(key) = line.strip_prefix(b"\\restrict ") {
        return plain_key(key).map(|_| Meta::Restrict);
    }
    if let Some(key) = line.strip_prefix(b"\\unrestrict ") {
        return plain_key(key).map(|_| Meta::Unrestrict);
    }
    if line == b"\\encoding SQL_ASCII" {
        return Ok(Meta::EncodingSqlAscii);
    }
    let Some(arg) = line.strip_prefix(b"\\connect ") else {
        return Err(
            "a psql meta-command other than \\connect, \\restrict, \\unrestrict (and pg_dump's \\encoding SQL_ASCII)",
        );
    };
    // pg_dump's first form, for a name of letters, digits, `_` and `.`: the name as an SQL
    // identifier, bare (`\connect app`) or quoted (`\connect "MyApp"`, `\connect "my.db"`,
    // `\connect "user"`); psql strips the quotes and keeps the case.
    if !arg.is_empty() && arg.iter().all(|b| is_connect_name_byte(*b)) {
        return Ok(Meta::Connect(String::from_utf8_lossy(arg).into_owned()));
    }
    if arg.first() == Some(&b'"')
        && let Some(name) = psql_quoted(arg)
        && !name.is_empty()
        && name.iter().all(|b| is_connect_name_byte(*b))
    {
        return Ok(Meta::Connect(String::from_utf8_lossy(&name).into_owned()));
    }
    // The second form, for every other name: a connection string of `dbname` alone.
    let Some(quoted) = arg.strip_prefix(b"-reuse-previous=on ") else {
        return Err("a \\connect that is not to a database by name");
    };
    let conninfo = psql_quoted(quoted).ok_or("a \\connect with a malformed argument")?;
    let name = dbname_only(&conninfo)
        .ok_or("a \\connect that names more than a database (host, user, port…)")?;
    Ok(Meta::Connect(name))
}

/// The bytes of a name that pg_dump writes as an identifier after `\connect` (its
/// `appendPsqlMetaConnect`); any other name goes in a `dbname='…'` connection string. No `=`:
/// psql would take the argument for a connection string (`host=…`).
fn is_connect_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

fn plain_key(key: &[u8]) -> Result<(), &'static str> {
    if !key.is_empty() && key.len() <= 256 && key.iter().all(u8::is_ascii_alphanumeric) {
        Ok(())
    } else {
        Err("a \\restrict or \\unrestrict with a malformed key")
    }
}

/// A psql double-quoted argument that is the whole rest of the line: `"…"` with `""` for `"`.
fn psql_quoted(arg: &[u8]) -> Option<Vec<u8>> {
    let inner = arg.strip_prefix(b"\"")?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'"' {
            if inner.get(i + 1) == Some(&b'"') {
                out.push(b'"');
                i += 2;
                continue;
            }
            return (i + 1 == inner.len()).then_some(out);
        }
        out.push(inner[i]);
        i += 1;
    }
    None
}

/// `dbname='…'` (libpq quoting: `\'` and `\\`) and nothing else.
fn dbname_only(conninfo: &[u8]) -> Option<String> {
    let inner = conninfo.strip_prefix(b"dbname='")?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => {
                out.push(*inner.get(i + 1)?);
                i += 2;
            }
            b'\'' => {
                return (i + 1 == inner.len())
                    .then(|| String::from_utf8(out).ok())
                    .flatten();
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    None
}

/// Scans a whole text (tests, small files).
pub fn scan_all(text: &[u8]) -> Result<Vec<Meta>, Violation> {
    let mut s = Scanner::new();
    s.feed(text)?;
    s.finish()?;
    Ok(s.take_metas())
}

/// How pg_dump and pg_dumpall write a `\connect` (their `appendPsqlMetaConnect`, `fmtId`
/// and `appendConnStrVal`), for tests that feed the screening what the real tools write.
#[cfg(test)]
pub(crate) mod pg_dump_forms {
    /// `fmtId`: bare only for a lowercase identifier that is not a keyword; `quote` stands
    /// for "is a keyword" or `--quote-all-identifiers`.
    pub fn fmt_id(name: &str, quote: bool) -> String {
        let bare = !quote
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if bare {
            name.to_string()
        } else {
            format!("\"{}\"", name.replace('"', "\"\""))
        }
    }

    /// `appendConnStrVal`.
    fn conn_str_val(value: &str) -> String {
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if plain {
            return value.to_string();
        }
        let mut out = String::from("'");
        for c in value.chars() {
            if c == '\'' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\'');
        out
    }

    /// `appendPsqlMetaConnect`: the lines pg_dump writes to connect to `name`.
    pub fn connect(name: &str, quote: bool) -> String {
        let simple = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if simple {
            format!("\\connect {}\n", fmt_id(name, quote))
        } else {
            let conninfo = format!("dbname={}", conn_str_val(name));
            format!(
                "\\encoding SQL_ASCII\n\\connect -reuse-previous=on {}\n",
                fmt_id(&conninfo, true)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_chunks(text: &[u8], size: usize) -> Result<Vec<Meta>, Violation> {
        let mut s = Scanner::new();
        for c in text.chunks(size) {
            s.feed(c)?;
        }
        s.finish()?;
        Ok(s.take_metas())
    }

    fn refused(text: &str) -> Violation {
        for size in [1, 3, 7, 4096] {
            assert!(
                in_chunks(text.as_bytes(), size).is_err(),
                "chunk {size} accepted:\n{text}"
            );
        }
        scan_all(text.as_bytes()).unwrap_err()
    }

    fn accepted(text: &str) -> Vec<Meta> {
        let whole = scan_all(text.as_bytes()).unwrap_or_else(|v| panic!("{v}\n{text}"));
        for size in [1, 2, 3, 5, 7, 64] {
            assert_eq!(
                in_chunks(text.as_bytes(), size).unwrap(),
                whole,
                "chunk {size}"
            );
        }
        whole
    }

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abcDEF123\n\nSET standard_conforming_strings = on;\n\
CREATE DATABASE \"my db\" WITH TEMPLATE = template0;\n\n\\unrestrict abcDEF123\n\\connect -reuse-previous=on \"dbname='my db'\"\n\\restrict abcDEF123\n\n\
CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $_$\nSELECT '\\! not a command'\n\\connect evil\n$_$;\n\n\
COPY public.t (a, b) FROM stdin;\n1\t\\N\n2\tback\\\\slash\\ttab\n3\t\\\\! escaped, so just text\n\\.\n";

    #[test]
    fn violations_after_copy_rows_name_their_line_and_text() {
        let rows: String = (1..=1000).map(|n| format!("{n}\tsome row\n")).collect();
        let after = format!("COPY public.t (a, b) FROM stdin;\n{rows}\\.\n\\! echo pwned\n");
        let inside = format!("COPY public.t (a, b) FROM stdin;\n{rows}7\tbad \\q here\n\\.\n");
        for (text, line, snippet) in [
            (after, 1003, "\\! echo pwned"),
            (inside, 1002, "7\tbad \\q"),
        ] {
            for size in [1, 2, 3, 5, 7, 64, 4096, text.len()] {
                let v = in_chunks(text.as_bytes(), size).unwrap_err();
                assert_eq!(v.line, line, "chunk {size}: {v}");
                assert!(v.text.starts_with(snippet), "chunk {size}: {v}");
            }
        }
    }

    #[test]
    fn the_metas_pg_dump_writes_are_accepted() {
        let text = "\\restrict abc\nSELECT 1;\n\\unrestrict abc\n\\connect postgres\n\\encoding SQL_ASCII\n\\connect -reuse-previous=on \"dbname='O\\'Brien \"\"x\"\"'\"\n";
        assert_eq!(
            accepted(text),
            vec![
                Meta::Restrict,
                Meta::Unrestrict,
                Meta::Connect("postgres".into()),
                Meta::EncodingSqlAscii,
                Meta::Connect("O'Brien \"x\"".into()),
            ]
        );
    }

    #[test]
    fn a_shell_escape_on_its_own_line_is_refused_with_its_line() {
        let v = refused("SELECT 1;\n\\! touch /tmp/pwned\nSELECT 2;\n");
        assert_eq!(v.line, 2);
        assert!(v.text.contains("touch"), "{v}");
    }

    #[test]
    fn meta_commands_anywhere_outside_quotes_are_refused() {
        for text in [
            "SELECT 1; \\! id\n",
            "SELECT 1 \\g |sh\n",
            "\\o |sh\n",
            "\\copy t from program 'id'\n",
            "\\set x 1\n",
            "\\i /etc/passwd\n",
            "\\connect `id`\n",
            "\\connect -reuse-previous=on \"host=evil.example dbname='x'\"\n",
            "\\connect -reuse-previous=on \"dbname='x'\" extra\n",
            "\\connect db user\n",
            "\\connect :var\n",
            "\\restrict $(id)\n",
            "\\encoding LATIN1\n",
            "\\unrestrict\n",
            "/* c */ \\! id\n",
        ] {
            refused(text);
        }
    }

    #[test]
    fn backslashes_inside_literals_comments_and_bodies_are_data() {
        accepted(
            "SELECT E'it\\'s \\! fine', 'back\\slash', \"a\\b\";\n\
             -- comment \\! nothing\n/* block /* nested \\! */ still */ SELECT 1;\n\
             SELECT $$\n\\! in a body\n$$, $tag$ $$ \\o |x $tag$;\n",
        );
    }

    #[test]
    fn a_string_ends_where_psql_ends_it() {
        // With standard_conforming_strings on, '\' is a complete string.
        refused("SELECT '\\' \\! id\n");
        accepted("SELECT 'a''b', E'c\\'d';\n");
    }

    #[test]
    fn copy_data_is_not_sql_but_holds_only_copy_escapes() {
        let metas = accepted(DUMP);
        assert_eq!(metas.len(), 4);
        refused("COPY t (a) FROM stdin;\n1\t\\!oops\n\\.\n");
        refused("COPY t (a) FROM stdin;\n\\.x\n\\.\n");
        // After the end marker, SQL again.
        refused("COPY t (a) FROM stdin;\n1\n\\.\n\\! id\n");
    }

    #[test]
    fn the_rest_of_a_copy_line_is_sql() {
        refused("COPY t (a) FROM stdin; \\! id\n1\n\\.\n");
    }

    #[test]
    fn copy_mode_starts_whatever_the_length_of_the_copy_line() {
        let cols: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
        let text = format!(
            "COPY public.t ({}) FROM stdin;\n\\N\tx\n\\.\nSELECT 1;\n",
            cols.join(", ")
        );
        accepted(&text);
        let mut s = Scanner::new();
        s.feed(text.split_once('\n').unwrap().0.as_bytes()).unwrap();
        s.feed(b"\n").unwrap();
        assert_eq!(s.line_start(), LineStart::Copy);
    }

    #[test]
    fn line_starts_follow_statements_quotes_and_copy() {
        let mut s = Scanner::new();
        let mut starts = Vec::new();
        for line in [
            "CREATE TABLE t (\n",
            "  a text DEFAULT 'multi\n",
            "line'\n",
            ");\n",
            "CREATE FUNCTION f() AS $$\n",
            "body\n",
            "$$;\n",
            "COPY t (a) FROM stdin;\n",
            "x\n",
            "\\.\n",
        ] {
            s.feed(line.as_bytes()).unwrap();
            starts.push(s.line_start());
        }
        use LineStart::*;
        assert_eq!(
            starts,
            vec![
                Top {
                    statement_start: false
                },
                Inside,
                Top {
                    statement_start: false
                },
                Top {
                    statement_start: true
                },
                Inside,
                Inside,
                Top {
                    statement_start: true
                },
                Copy,
                Copy,
                Top {
                    statement_start: true
                },
            ]
        );
    }

    #[test]
    fn semicolons_in_parentheses_do_not_end_a_statement() {
        let mut s = Scanner::new();
        s.feed(b"CREATE RULE r AS ON INSERT TO t DO (INSERT INTO a VALUES (1);\n")
            .unwrap();
        assert_eq!(
            s.line_start(),
            LineStart::Top {
                statement_start: false
            }
        );
    }

    /// A database name PostgreSQL accepts and pg_dump writes: no NUL, no line break.
    fn any_name() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("[^\\x00\\n\\r]{1,40}").expect("a valid pattern")
    }

    proptest::proptest! {
        #[test]
        fn every_connect_pg_dump_writes_is_accepted_as_its_own_name(
            name in any_name(),
            quote in proptest::bool::ANY,
        ) {
            let text = pg_dump_forms::connect(&name, quote);
            let metas = scan_all(text.as_bytes()).map_err(|v| {
                proptest::test_runner::TestCaseError::fail(format!("{v} in {text:?}"))
            })?;
            let connects: Vec<Meta> =
                metas.into_iter().filter(|m| matches!(m, Meta::Connect(_))).collect();
            proptest::prop_assert_eq!(connects, vec![Meta::Connect(name.clone())]);
            // And only there: a file may not connect to any other database.
            let scanned = {
                let mut s = Scanner::new().with_targets(Some(ConnectTargets::only(&name)));
                s.feed(text.as_bytes()).and_then(|()| s.finish())
            };
            proptest::prop_assert!(scanned.is_ok());
            let mut elsewhere = Scanner::new().with_targets(Some(ConnectTargets::only("other")));
            let refused = elsewhere.feed(text.as_bytes()).and_then(|()| elsewhere.finish());
            proptest::prop_assert!(refused.is_err() || name == "other");
        }
    }

    #[test]
    fn the_connect_forms_of_the_name_corpus_are_read_back_exactly() {
        for (line, name) in [
            ("\\connect app", "app"),
            ("\\connect \"MyApp\"", "MyApp"),
            ("\\connect \"my.db\"", "my.db"),
            ("\\connect \"2024data\"", "2024data"),
            ("\\connect \"user\"", "user"),
            ("\\connect -reuse-previous=on \"dbname='a=b'\"", "a=b"),
            (
                "\\connect -reuse-previous=on \"dbname='host=x dbname=postgres'\"",
                "host=x dbname=postgres",
            ),
            (
                "\\connect -reuse-previous=on \"dbname='trailing '\"",
                "trailing ",
            ),
        ] {
            assert_eq!(
                check_meta(line.as_bytes()),
                Ok(Meta::Connect(name.into())),
                "{line}"
            );
        }
        // A quoted argument that psql would read as a connection string is not a name.
        for line in [
            "\\connect \"host=evil dbname=x\"",
            "\\connect \"a b\"",
            "\\connect \"\"",
            "\\connect \"MyApp\" extra",
            "\\connect \"My\"App",
        ] {
            assert!(check_meta(line.as_bytes()).is_err(), "{line}");
        }
    }

    #[test]
    fn a_connect_to_a_database_the_file_may_not_write_is_refused_with_its_line() {
        let text = "SET x = 1;\n\\connect victim\nCREATE TABLE t();\n";
        let mut s = Scanner::new().with_targets(Some(ConnectTargets::only("app")));
        let v = s
            .feed(text.as_bytes())
            .and_then(|()| s.finish())
            .unwrap_err();
        assert_eq!(v.line, 2);
        assert!(v.reason.contains("may not write"), "{v}");
        let mut cluster = Scanner::new().with_targets(Some(ConnectTargets::cluster(["app"])));
        cluster
            .feed(b"\\connect template1\n\\connect postgres\n\\connect app\n")
            .unwrap();
        assert!(cluster.feed(b"\\connect victim\n").is_err());
        let mut globals = Scanner::new().with_targets(Some(ConnectTargets::none()));
        assert!(
            globals
                .feed(b"CREATE ROLE a;\n\\connect postgres\n")
                .is_err()
        );
    }

    #[test]
    fn a_database_file_says_only_what_pg_dump_says_before_it_connects() {
        let own = |text: &str| {
            let mut s = Scanner::new().with_targets(Some(ConnectTargets::only("MyApp")));
            s.feed(text.as_bytes()).and_then(|()| s.finish())
        };
        own(
            "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\
             CREATE DATABASE \"MyApp\" WITH TEMPLATE = template0;\n\
             ALTER DATABASE \"MyApp\" OWNER TO postgres;\n\\connect \"MyApp\"\nCREATE TABLE t();\n",
        )
        .unwrap();
        for text in [
            "CREATE TABLE public.pwned(x int);\n\\connect \"MyApp\"\n",
            "alter database \"MyApp\" set default_transaction_read_only = on;\n\\connect \"MyApp\"\n",
            "ALTER DATABASE victim OWNER TO x;\n\\connect \"MyApp\"\n",
            "SET x = 1;\nDROP DATABASE victim;\n\\connect \"MyApp\"\n",
            "CREATE DATABASE \"MyApp\"\n WITH TEMPLATE = template0;\n\\connect \"MyApp\"\n",
            "SET x = 1;\nCREATE TABLE t();\n",
            "SET x = 1; CREATE TABLE public.pwned(x int);\n\\connect \"MyApp\"\n",
        ] {
            assert!(own(text).is_err(), "accepted {text:?}");
        }
    }

    /// Ways to make this scanner read a file differently from psql's lexer, each followed by
    /// a `\!` that psql would run: every one is refused (with an old psql, which cannot be
    /// told to refuse meta-commands, the screening is what stands).
    #[test]
    fn the_ways_found_to_desynchronise_the_scan_from_psql_are_refused() {
        for (what, text) in [
            (
                "a $ after a digit opens a dollar quote",
                "SELECT 1$q$;\n$q$\n\\! id\n",
            ),
            (
                "$E'…' is a lone $ and an E'' string",
                "SELECT $E'\\'';\n\\! id\n",
            ),
            (
                "COPY\"t\" is a COPY",
                "COPY\"t\" FROM stdin;\n'\n\\.\n\\! id\n",
            ),
            (
                "a COPY pg_dump never writes",
                "COPY t FROM stdin WITH (FORMAT csv);\n'\n\\.\n",
            ),
            ("a NUL byte", "SELECT 'a\0';\n"),
            (
                "a NUL byte in COPY data",
                "COPY t (a) FROM stdin;\nx\0y\n\\.\n",
            ),
            (
                "a file that ends inside a string",
                "SELECT 'never closed;\n",
            ),
            (
                "a file that ends inside a dollar quote",
                "SELECT $$ never closed;\n",
            ),
            (
                "a file that ends inside COPY data",
                "COPY t (a) FROM stdin;\n1\n",
            ),
            (
                "a client-only encoding",
                "SET client_encoding = 'SJIS';\nSELECT 1;\n",
            ),
            (
                "standard_conforming_strings off",
                "SET standard_conforming_strings = off;\n",
            ),
            (
                "the same in another spelling",
                "set standard_conforming_strings to off;\n",
            ),
            ("a SET over two lines", "SET\nclient_encoding = 'SJIS';\n"),
            (
                "set_config",
                "SELECT set_config('standard_conforming_strings', 'off', false);\n",
            ),
            ("SET NAMES", "SET NAMES 'SJIS';\n"),
            ("RESET", "RESET client_encoding;\n"),
        ] {
            let mut s = Scanner::new();
            let result = s.feed(text.as_bytes()).and_then(|()| s.finish());
            assert!(result.is_err(), "{what}: accepted {text:?}");
        }
        // What pg_dump does write around them still passes.
        accepted("SELECT $1, 1$$x$$ FROM t;\nCOPY \"T\" (a) FROM stdin;\n'\n\\.\nSELECT E'\\'';\n");
        accepted(
            "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSET client_encoding = 'LATIN1';\n",
        );
        accepted(
            "COMMENT ON TABLE t IS 'about client_encoding';\nALTER TABLE t ALTER COLUMN standard_conforming_strings SET DEFAULT 1;\n",
        );
    }

    #[test]
    fn copy_blocks_are_counted_per_table_with_its_real_name() {
        let text = "COPY public.t (a, b) FROM stdin;\n1\tx\n2\t\\N\n\\.\n\
COPY \"Sales\".\"Order \"\"x\"\"\" (a) FROM stdin;\n\\.\n\
COPY public.big (a) FROM stdin;\n1\n2\n3\n\\.\n";
        for size in [1, 3, 7, 4096] {
            let mut s = Scanner::new();
            for c in text.as_bytes().chunks(size) {
                s.feed(c).unwrap();
            }
            s.finish().unwrap();
            let t = |parts: &[&str], rows| TableRows {
                table: parts.iter().map(|p| p.to_string()).collect(),
                rows,
            };
            assert_eq!(
                s.take_copies(),
                vec![
                    t(&["public", "t"], 2),
                    t(&["Sales", "Order \"x\""], 0),
                    t(&["public", "big"], 3)
                ],
                "chunk {size}"
            );
        }
    }
}
