//! Crash points: named instants at which the crash-consistency tests kill the process.
//!
//! Sendense promises that a process killed at *any* instant leaves state that the next command
//! reconciles (see [`crate::cleanup`]). Killing a process from outside at a random time rarely
//! hits the few milliseconds that matter most — between two renames of a commit, between the
//! manifest and the catalog. So the code names those instants with [`point`], and a test sets
//! `SENDENSE_TEST_CRASH_AT=NAME` (or `NAME#N` for the N-th time the point is reached, counting
//! from 1) in the environment of the process it wants to die there: the process then sends
//! itself SIGKILL — no destructor, no flush, exactly what `kill -9` or a power cut of the
//! process does. Unset, a point costs one comparison against a value read once.
//!
//! The variable is inherited by the children Sendense starts, so a point in code that also runs
//! in `sendense-sna` (the transfer) kills whichever process reaches it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const ENV: &str = "SENDENSE_TEST_CRASH_AT";

struct Target {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var(ENV).ok().filter(|v| !v.is_empty())?;
            let (name, nth) = match value.split_once('#') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (value, 1),
            };
            Some(Target {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Dies here with SIGKILL when the environment names this point (see the module docs).
pub fn point(name: &str) {
    let Some(t) = target() else { return };
    if t.name != name || t.hits.fetch_add(1, Ordering::SeqCst) + 1 != t.nth {
        return;
    }
    tracing::debug!("crash point {name}: killing this process");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should raise fail, abort is the next best thing.
    std::process::abort();
}
