//! SIGINT and SIGTERM: stop children, then let the command fail cleanly with its JSON.
//!
//! A watcher thread records the signal and terminates every registered child process, so a
//! command blocked on a pipe to `pg_dump` or `psql` wakes up at once; the command then sees
//! [`interrupted`] and returns an error, and the child guards reap what is left.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn children() -> &'static Mutex<HashSet<u32>> {
    static CHILDREN: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Installs the watcher. Called once by `main`; without it signals keep their defaults.
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        tracing::warn!("could not install signal handlers; Ctrl-C will end the run abruptly");
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                tracing::warn!(signal, "signal received: stopping child processes");
                INTERRUPTED.store(true, Ordering::SeqCst);
                // The lock is held while killing: a guard unregisters (under the same lock)
                // before it reaps, so every pid here is still our unreaped child.
                let set = match children().lock() {
                    Ok(set) => set,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for pid in set.iter() {
                    // SAFETY: plain kill(2) on a child we spawned and have not reaped.
                    unsafe {
                        libc::kill(*pid as libc::pid_t, libc::SIGTERM);
                    }
                }
            }
        });
    if spawned.is_err() {
        tracing::warn!("could not start the signal watcher");
    }
}

/// Resolves once SIGINT or SIGTERM arrived, for async work to stop at once (an upload
/// `select!`s on it instead of waiting for the parts in flight).
pub async fn wait_interrupted() {
    while !interrupted() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// SIGINT or SIGTERM arrived. A leaf error of its own (this module imports nothing of ours),
/// which the top-level error turns into exit 75.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by a signal; child processes were stopped")]
pub struct Interrupted;

/// Returns `Err(Interrupted)` once a signal arrived, for loops to bail out with `?`.
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

pub(crate) fn register_child(pid: u32) {
    if let Ok(mut set) = children().lock() {
        set.insert(pid);
    }
}

pub(crate) fn unregister_child(pid: u32) {
    if let Ok(mut set) = children().lock() {
        set.remove(&pid);
    }
}
