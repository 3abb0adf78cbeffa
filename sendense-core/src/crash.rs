//! Crash points: named instants at which the crash-consistency tests kill the process.
//!
//! Sendense promises that a process killed at *any* instant leaves state that the next command
//! reconciles (see [`crate::cleanup`]). Killing a process from outside at a random time rarely
//! hits the few milliseconds that matter most — between two renames of a commit, between the
//! manifest and the catalog. So the code names those instants with [`point`], and a test sets
//! `SENDENSE_TEST_CRASH_AT=NAME` (or `NAME#N` for the N-th time the point is reached, counting
//! from 1; several separated by commas) in the environment of the process it wants to die
//! there: the process then sends
//! itself SIGKILL — no destructor, no flush, exactly what `kill -9` or a power cut of the
//! process does. Unset, a point costs one comparison against a value read once.
//!
//! The variable is inherited by the children Sendense starts, so a point in code that also runs
//! in `sendense-sna` (the transfer) kills whichever process reaches it.
//!
//! `SENDENSE_TEST_PAUSE_AT=NAME:MS` makes the process sleep MS milliseconds each time it reaches
//! point NAME instead: a test can then act at that instant (cancel the job, delete its backup,
//! kill it) without racing the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const ENV: &str = "SENDENSE_TEST_CRASH_AT";
/// The environment variable naming a point to pause at, and for how long.
pub const PAUSE_ENV: &str = "SENDENSE_TEST_PAUSE_AT";

struct Target {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn targets() -> &'static [Target] {
    static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
    TARGETS.get_or_init(|| {
        let value = std::env::var(ENV).unwrap_or_default();
        value
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| {
                let (name, nth) = match v.split_once('#') {
                    Some((name, n)) => (name, n.parse().unwrap_or(1)),
                    None => (v, 1),
                };
                Target {
                    name: name.to_string(),
                    nth,
                    hits: AtomicU64::new(0),
                }
            })
            .collect()
    })
}

fn pause() -> Option<&'static (String, std::time::Duration)> {
    static PAUSE: OnceLock<Option<(String, std::time::Duration)>> = OnceLock::new();
    PAUSE
        .get_or_init(|| {
            let value = std::env::var(PAUSE_ENV).ok()?;
            let (name, ms) = value.split_once(':')?;
            Some((
                name.to_string(),
                std::time::Duration::from_millis(ms.parse().ok()?),
            ))
        })
        .as_ref()
}

/// Dies here with SIGKILL, or pauses, when the environment names this point (see the module
/// docs).
pub fn point(name: &str) {
    if let Some((pause_at, pause)) = pause() {
        if pause_at == name {
            std::thread::sleep(*pause);
        }
    }
    let Some(t) = targets().iter().find(|t| t.name == name) else {
        return;
    };
    if t.hits.fetch_add(1, Ordering::SeqCst) + 1 != t.nth {
        return;
    }
    tracing::debug!("crash point {name}: killing this process");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should raise fail, abort is the next best thing.
    std::process::abort();
}
