//! `sendense job cancel` from another process: a thread that watches the job's row.

use tokio_util::sync::CancellationToken;

/// Watches the catalog for `job cancel` from another process.
#[derive(Debug)]
pub(super) struct CancelWatcher {
    // Dropping the sender wakes the watcher at once.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CancelWatcher {
    pub(super) fn start(
        catalog: &std::path::Path,
        job: i64,
        cancel: CancellationToken,
    ) -> CancelWatcher {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let path = catalog.to_path_buf();
        let thread = std::thread::spawn(move || {
            let Ok(cat) = crate::catalog::Catalog::open(&path, false) else {
                return;
            };
            loop {
                if cat.cancel_requested(job).unwrap_or(false) {
                    cancel.cancel();
                    return;
                }
                match stopped.recv_timeout(std::time::Duration::from_millis(300)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        });
        CancelWatcher {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for CancelWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
