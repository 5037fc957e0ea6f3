//! Progress on a terminal: one bar per file being dumped, shipped or restored, on stderr,
//! drawn by `indicatif`. Nothing is drawn when stderr is not a terminal (a scheduler, a
//! pipe, a log collector), so logs stay clean there. Log lines written while bars are shown
//! go through [`LogWriter`], which lifts the bars out of the way first.

use std::io::{IsTerminal, Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn multi() -> Option<&'static MultiProgress> {
    static MULTI: OnceLock<Option<MultiProgress>> = OnceLock::new();
    MULTI
        .get_or_init(|| {
            std::io::stderr()
                .is_terminal()
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        })
        .as_ref()
}

/// A bar for one piece of work, or nothing off a terminal. It is cleared when dropped; a
/// [`Counting`] reader (on any thread) counts into it meanwhile.
#[derive(Default)]
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// Bytes of `total` (when known), labelled `label` (a file or database name).
    pub fn bytes(label: &str, total: Option<u64>) -> Bar {
        let Some(multi) = multi() else {
            return Bar(None);
        };
        let (bar, template) = match total {
            Some(t) => (
                ProgressBar::new(t),
                "{prefix:>10} {msg:32!} {bar:24} {binary_bytes:>10}/{binary_total_bytes:<10} \
                 {binary_bytes_per_sec:>12} {eta:>4}",
            ),
            None => (
                ProgressBar::no_length(),
                "{prefix:>10} {msg:32!} {spinner} {binary_bytes:>10} {binary_bytes_per_sec:>12} \
                 {elapsed:>4}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.add(bar.with_style(style));
        bar.set_message(crate::human::clean(label));
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    /// The verb shown before the label (`dumping`, `shipping`, `restoring`).
    pub fn with_prefix(self, prefix: &'static str) -> Bar {
        if let Some(b) = &self.0 {
            b.set_prefix(prefix);
        }
        self
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Removes the bar; the result says what was done.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }

    /// A reader that counts what passes through it into this bar.
    pub fn reader<R: Read>(&self, inner: R) -> Counting<R> {
        Counting {
            inner,
            counter: self.counter(),
        }
    }

    /// A handle that counts into this bar from anywhere (another thread, an async task).
    pub fn counter(&self) -> Counter {
        Counter(self.0.clone())
    }
}

/// Counts into a [`Bar`]; does nothing off a terminal.
#[derive(Clone, Default)]
pub struct Counter(Option<ProgressBar>);

impl Counter {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// What is being worked on now (the file of a folder being shipped).
    pub fn set_label(&self, label: &str) {
        if let Some(b) = &self.0 {
            b.set_message(crate::human::clean(label));
        }
    }
}

impl Drop for Bar {
    /// A bar never outlives its work on the screen, whichever way the work ended.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Counts the bytes read through it.
pub struct Counting<R> {
    inner: R,
    counter: Counter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.inc(n as u64);
        Ok(n)
    }
}

/// stderr for log lines, with the bars lifted out of the way while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match multi() {
            Some(m) => m.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
