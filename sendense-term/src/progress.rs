//! Progress sinks: the core emits events, these render them.
//!
//! - [`Bars`]: an indicatif bar per disk and a total, on a terminal.
//! - [`Lines`]: plain log lines (start, every few seconds, finish) when stdout is not a terminal.
//! - [`Ndjson`]: every event as one JSON line on stdout (`--json`).

use crate::bytes;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sendense_core::{Event, EventKind, EventSink, NullSink, SharedSink};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sink a frontend should use: NDJSON with `--json`, nothing with `--quiet`, bars on a
/// terminal, plain lines otherwise.
pub fn sink_for(json: bool, quiet: bool) -> SharedSink {
    if json {
        Arc::new(Ndjson)
    } else if quiet {
        Arc::new(NullSink)
    } else if std::io::stdout().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines::new(Duration::from_secs(5)))
    }
}

/// Every event as one JSON line on stdout.
#[derive(Debug, Default)]
pub struct Ndjson;

impl EventSink for Ndjson {
    fn emit(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Plain lines for logs and cron mail.
#[derive(Debug)]
pub struct Lines {
    every: Duration,
    last: Mutex<BTreeMap<u32, Instant>>,
}

impl Lines {
    /// Progress lines at most every `every` per disk.
    pub fn new(every: Duration) -> Self {
        Lines {
            every,
            last: Mutex::new(BTreeMap::new()),
        }
    }

    fn say(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{} {text}", sendense_core::time::now_rfc3339());
        let _ = out.flush();
    }
}

impl EventSink for Lines {
    fn emit(&self, event: &Event) {
        match &event.kind {
            EventKind::DiskStarted {
                disk,
                mode,
                reason,
                bytes_total,
            } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                self.say(&format!(
                    "disk {disk}: {mode}{why}, {} to process",
                    bytes(*bytes_total)
                ));
            }
            EventKind::DiskProgress {
                disk,
                bytes_done,
                bytes_total,
                ..
            } => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let due = last
                    .get(disk)
                    .is_none_or(|t| now.duration_since(*t) >= self.every);
                if due && bytes_done < bytes_total {
                    last.insert(*disk, now);
                    drop(last);
                    let pct = *bytes_done as f64 * 100.0 / (*bytes_total).max(1) as f64;
                    self.say(&format!(
                        "disk {disk}: {} of {} ({pct:.0}%)",
                        bytes(*bytes_done),
                        bytes(*bytes_total)
                    ));
                }
            }
            EventKind::DiskFinished {
                disk,
                bytes_read,
                bytes_written,
                bytes_zero,
                seconds,
            } => {
                let rate = *bytes_read as f64 / seconds.max(1e-9) / 1048576.0;
                self.say(&format!(
                    "disk {disk}: done in {seconds:.1}s, read {}, wrote {}, zero {} ({rate:.0} MiB/s)",
                    bytes(*bytes_read),
                    bytes(*bytes_written),
                    bytes(*bytes_zero)
                ));
            }
            EventKind::Warning { message } => self.say(&format!("warning: {message}")),
            EventKind::Step { message } => self.say(message),
            EventKind::SnapshotTaken { disks } => {
                self.say(&format!("snapshot of {disks} disk(s) taken"))
            }
            EventKind::JobStarted { kind, vm } => self.say(&format!(
                "{kind} started{}",
                vm.as_ref().map(|v| format!(" for {v}")).unwrap_or_default()
            )),
            EventKind::JobFinished { status, error } => self.say(&format!(
                "{status}{}",
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            )),
            _ => {}
        }
    }
}

/// indicatif bars: one per disk plus a total.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    state: Mutex<BarState>,
}

#[derive(Debug, Default)]
struct BarState {
    disks: BTreeMap<u32, (ProgressBar, u64)>,
    total: Option<ProgressBar>,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            state: Mutex::new(BarState::default()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }
}

impl EventSink for Bars {
    fn emit(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &event.kind {
            EventKind::DiskStarted {
                disk, bytes_total, ..
            } => {
                let bar = self.multi.add(ProgressBar::new(*bytes_total));
                bar.set_style(Self::style());
                bar.set_prefix(format!("disk {disk}"));
                st.disks.insert(*disk, (bar, 0));
                let sum: u64 = st
                    .disks
                    .values()
                    .map(|(b, _)| b.length().unwrap_or(0))
                    .sum();
                if st.disks.len() > 1 {
                    let total = st.total.get_or_insert_with(|| {
                        let t = self.multi.add(ProgressBar::new(0));
                        t.set_style(Self::style());
                        t.set_prefix("total");
                        t
                    });
                    total.set_length(sum);
                }
            }
            EventKind::DiskProgress {
                disk, bytes_done, ..
            } => {
                if let Some((bar, done)) = st.disks.get_mut(disk) {
                    bar.set_position(*bytes_done);
                    *done = *bytes_done;
                }
                let sum: u64 = st.disks.values().map(|(_, d)| *d).sum();
                if let Some(t) = &st.total {
                    t.set_position(sum);
                }
            }
            EventKind::DiskFinished { disk, .. } => {
                if let Some((bar, done)) = st.disks.get_mut(disk) {
                    *done = bar.length().unwrap_or(*done);
                    bar.set_position(*done);
                    bar.finish();
                }
                if st.disks.values().all(|(b, _)| b.is_finished()) {
                    if let Some(t) = &st.total {
                        t.finish();
                    }
                }
            }
            EventKind::Warning { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
            EventKind::Step { message } => {
                let _ = self.multi.println(message);
            }
            _ => {}
        }
    }
}
