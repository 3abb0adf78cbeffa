//! Signals for command-line frontends: SIGINT (Ctrl-C), SIGTERM (`systemctl stop`, cron's or an
//! administrator's `kill`) and SIGHUP (a closed terminal) cancel the running job, which then
//! cleans up as after any failure. A second signal ends the process at once with status 130 —
//! for a cleanup that hangs (a QEMU block job that will not end, an export that will not stop);
//! what it leaves is found and finished by the next `sendense` command (see
//! [`crate::cleanup`]), exactly as after `kill -9`.

use crate::error::{Error, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The exit status after a second signal (and of a cancelled command).
pub const INTERRUPTED: i32 = crate::error::exit::INTERRUPTED as i32;

/// Installs the handlers and returns the token the first signal cancels. `on_first` runs once,
/// on the first signal (to tell a person at a terminal what happens next).
pub fn cancel_on_signals(on_first: impl FnOnce() + Send + 'static) -> Result<CancellationToken> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("starting the signal thread: {e}")))?;
    // Registered here, before returning: a signal from now on is ours, not the default action.
    let installed = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        )
    };
    let (mut int, mut term, mut hup) = match installed {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return Err(Error::internal(format!("installing signal handlers: {e}")))
        }
    };
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    std::thread::Builder::new()
        .name("sendense-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut on_first = Some(on_first);
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    match on_first.take() {
                        Some(f) => {
                            token.cancel();
                            f();
                        }
                        None => std::process::exit(INTERRUPTED),
                    }
                }
            })
        })
        .map_err(|e| Error::internal(format!("starting the signal thread: {e}")))?;
    Ok(cancel)
}
