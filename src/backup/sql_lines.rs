//! Streaming rewrites of plain-format pg_dump output, one line at a time, in bounded memory.
//!
//! pg_dump writes each database-level statement on lines of its own, and table data between
//! `COPY … FROM stdin;` and `\.`. [`SqlLines`] splits a byte stream into lines, hands the lines
//! outside COPY data to a [`LineRewriter`], and passes COPY data and over-long lines through
//! untouched (or drops them, when the rewriter is leaving out the current entry), so a
//! rewrite never holds more than one ordinary line in memory.

/// Longest line kept in memory; longer lines (big COPY rows) stream through.
pub const LINE_LIMIT: usize = 64 * 1024;

/// What a rewrite does with each line.
pub trait LineRewriter {
    /// A complete line outside COPY data, without its newline; append the output to `out`.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>);
    /// Whether raw bytes (COPY data, over-long lines) are currently passed on.
    fn passes_raw(&self) -> bool {
        true
    }
    /// Called before raw bytes go out, to emit anything held back.
    fn before_raw(&mut self, _out: &mut Vec<u8>) {}
    /// The stream ended.
    fn finish(&mut self, _out: &mut Vec<u8>) {}
}

/// Drives a [`LineRewriter`] over chunks of a stream.
#[derive(Debug, Default)]
pub struct SqlLines<R> {
    pub rewriter: R,
    line: Vec<u8>,
    /// The current line outgrew [`LINE_LIMIT`]: its head went out, the rest follows it.
    overflowing: bool,
    in_copy: bool,
}

impl<R: LineRewriter> SqlLines<R> {
    pub fn new(rewriter: R) -> SqlLines<R> {
        SqlLines {
            rewriter,
            line: Vec::new(),
            overflowing: false,
            in_copy: false,
        }
    }

    /// Feeds a chunk; output is appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let (segment, rest) = chunk.split_at(pos + 1);
                    chunk = rest;
                    if self.overflowing {
                        self.raw(segment, out);
                        self.overflowing = false;
                    } else if self.line.is_empty() {
                        self.line_done(&segment[..segment.len() - 1], out);
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&segment[..segment.len() - 1]);
                        self.line_done(&line, out);
                        line.clear();
                        self.line = line;
                    }
                }
                None => {
                    if self.overflowing {
                        self.raw(chunk, out);
                    } else if self.line.len() + chunk.len() > LINE_LIMIT {
                        // A long line is never a statement we rewrite: let it through.
                        let head = std::mem::take(&mut self.line);
                        self.raw(&head, out);
                        self.raw(chunk, out);
                        self.overflowing = true;
                    } else {
                        self.line.extend_from_slice(chunk);
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// Ends the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.rewriter.finish(out);
    }

    fn raw(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.rewriter.before_raw(out);
        if self.rewriter.passes_raw() {
            out.extend_from_slice(bytes);
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.in_copy {
            if self.rewriter.passes_raw() {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            if line == b"\\." {
                self.in_copy = false;
            }
            return;
        }
        self.rewriter.line(line, out);
        if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
            self.in_copy = true;
        }
    }
}
