//! Streaming rewrites of plain-format pg_dump output, one line at a time, in bounded memory.
//!
//! [`SqlLines`] splits a byte stream into lines and tells a [`LineRewriter`] how psql will
//! read each one (see [`psql_scan`](super::psql_scan)): top-level SQL, or inside a string,
//! a dollar-quoted body or a comment. COPY data and over-long lines stream through untouched
//! (or are dropped, when the rewriter is leaving out the current entry), so a rewrite never
//! holds more than one ordinary line in memory and never edits a function body, a string
//! literal or a row of data. A file that is not what pg_dump writes (a psql meta-command it
//! would never emit) stops the rewrite with the scanner's [`Violation`].

use std::sync::{Arc, Mutex};

use super::psql_scan::{ConnectTargets, LineStart, Scanner, Violation};

/// Where the lines of the input went in the output, when a rewrite adds or drops lines (the
/// `\restrict` guard does): psql reports errors by the line it read, the operator wants the
/// line of the backup file.
#[derive(Debug, Default, Clone)]
pub struct LineMap {
    /// `(first output line, output line minus input line from there on)`, ascending.
    points: Vec<(u64, i64)>,
}

impl LineMap {
    /// The input line that output line `out` (1-based) came from.
    pub fn input_line(&self, out: u64) -> u64 {
        let delta = self
            .points
            .iter()
            .take_while(|(from, _)| *from <= out)
            .last()
            .map_or(0, |(_, d)| *d);
        (out as i64 - delta).max(1) as u64
    }
}

/// Longest line kept in memory; longer lines (big COPY rows) stream through.
pub const LINE_LIMIT: usize = 64 * 1024;

/// What a rewrite does with each line.
pub trait LineRewriter {
    /// Called once, before anything else goes out.
    fn start(&mut self, _out: &mut Vec<u8>) {}
    /// A complete line that is not COPY data, without its newline, and how psql reads it;
    /// append the output to `out`.
    fn line(&mut self, line: &[u8], start: LineStart, out: &mut Vec<u8>);
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
#[derive(Debug)]
pub struct SqlLines<R> {
    pub rewriter: R,
    scanner: Scanner,
    line: Vec<u8>,
    /// How the line being collected starts.
    start: LineStart,
    /// The current line outgrew [`LINE_LIMIT`]: its head went out, the rest follows it.
    overflowing: bool,
    started: bool,
    /// The input line being collected (1-based) and how far the output is ahead of it.
    input_line: u64,
    delta: i64,
    map: Option<Arc<Mutex<LineMap>>>,
}

impl<R: LineRewriter> SqlLines<R> {
    pub fn new(rewriter: R) -> SqlLines<R> {
        let scanner = Scanner::new();
        SqlLines {
            rewriter,
            start: scanner.line_start(),
            scanner,
            line: Vec::new(),
            overflowing: false,
            started: false,
            input_line: 1,
            delta: 0,
            map: None,
        }
    }

    /// Refuses a `\connect` to any database but `targets` (guarantee 11).
    pub fn with_targets(mut self, targets: Option<ConnectTargets>) -> SqlLines<R> {
        self.scanner = std::mem::take(&mut self.scanner).with_targets(targets);
        self
    }

    /// Keeps `map` up to date with where input lines end up in the output.
    pub fn with_line_map(mut self, map: Arc<Mutex<LineMap>>) -> SqlLines<R> {
        self.map = Some(map);
        self
    }

    /// Calls the rewriter for one line (or the start) and notes lines it added or dropped.
    fn rewrite(
        &mut self,
        out: &mut Vec<u8>,
        expected: i64,
        call: impl FnOnce(&mut R, &mut Vec<u8>),
    ) {
        let before = out.len();
        call(&mut self.rewriter, out);
        if self.map.is_none() {
            return;
        }
        let added = memchr::memchr_iter(b'\n', &out[before..]).count() as i64;
        if added != expected {
            self.delta += added - expected;
            let next = self.input_line + expected as u64;
            if let Some(map) = &self.map
                && let Ok(mut m) = map.lock()
            {
                m.points
                    .push(((next as i64 + self.delta).max(1) as u64, self.delta));
            }
        }
    }

    /// Feeds a chunk; output is appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        if !self.started {
            self.started = true;
            self.rewrite(out, 0, |r, out| r.start(out));
        }
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(pos) => {
                    let (segment, rest) = chunk.split_at(pos + 1);
                    chunk = rest;
                    self.scanner.feed(segment)?;
                    if self.overflowing {
                        self.raw(segment, out);
                        self.overflowing = false;
                    } else if self.start == LineStart::Copy {
                        let head = std::mem::take(&mut self.line);
                        self.raw(&head, out);
                        self.raw(segment, out);
                        self.line = head;
                        self.line.clear();
                    } else if self.line.is_empty() {
                        let start = self.start;
                        let line = &segment[..segment.len() - 1];
                        self.rewrite(out, 1, |r, out| r.line(line, start, out));
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&segment[..segment.len() - 1]);
                        let start = self.start;
                        self.rewrite(out, 1, |r, out| r.line(&line, start, out));
                        line.clear();
                        self.line = line;
                    }
                    self.input_line += 1;
                    self.start = self.scanner.line_start();
                }
                None => {
                    self.scanner.feed(chunk)?;
                    if self.overflowing || self.start == LineStart::Copy {
                        let head = std::mem::take(&mut self.line);
                        self.raw(&head, out);
                        self.raw(chunk, out);
                        self.overflowing = self.start != LineStart::Copy;
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
        Ok(())
    }

    /// Ends the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Violation> {
        if !self.started {
            self.started = true;
            self.rewrite(out, 0, |r, out| r.start(out));
        }
        self.scanner.finish()?;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if self.start == LineStart::Copy || self.overflowing {
                self.raw(&line, out);
            } else {
                // The last line had no newline: hand it over, then take the newline back.
                let before = out.len();
                self.rewriter.line(&line, self.start, out);
                if out.len() > before && out.last() == Some(&b'\n') {
                    out.pop();
                }
            }
        }
        self.rewriter.finish(out);
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.rewriter.before_raw(out);
        if self.rewriter.passes_raw() {
            out.extend_from_slice(bytes);
        }
    }
}
