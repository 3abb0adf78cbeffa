//! Per-VM locks: `flock` on `<state-dir>/locks/<hash of vm>.lock`. The kernel drops the lock
//! when its holder exits, however it exits, so a lock is never stale.
//!
//! A holder removes its file before it unlocks, so a clean state directory has no lock files.
//! That makes a file removable while another process waits to open it, so taking a lock checks,
//! after `flock` succeeds, that the file it locked is still the one at the path; if not it
//! starts over on the new file. Removing a file only while holding its lock keeps this safe for
//! every party: two processes never both believe they hold the lock of one VM.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held lock; released (and its file removed) on drop.
#[derive(Debug)]
pub struct VmLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl VmLock {
    /// Takes the lock of `vm`, or fails with `Busy` when another process holds it.
    pub fn acquire(state_dir: &Path, vm: &str, doing: &str) -> Result<VmLock> {
        let dir = state_dir.join("locks");
        crate::fsutil::create_private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", blake3::hash(vm.as_bytes()).to_hex()));
        match Self::try_lock(&path, true)? {
            Some(lock) => Ok(lock),
            None => Err(Error::busy(format!(
                "VM `{vm}` is busy: another sendense process is {doing} it"
            ))
            .with_help("Wait for it to finish (`sendense job list --status running`); nothing of the running job was touched.")),
        }
    }

    /// Takes the lock at `path` without waiting: `None` when another process holds it, or when
    /// `create` is off and there is no file.
    pub(crate) fn try_lock(path: &Path, create: bool) -> Result<Option<VmLock>> {
        loop {
            let file = match OpenOptions::new()
                .create(create)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("opening lock", path, e)),
            };
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => {
                    return Err(Error::io("locking", path, std::io::Error::from(e)));
                }
            };
            let locked = lock
                .metadata()
                .map_err(|e| Error::io("inspecting lock", path, e))?;
            match std::fs::metadata(path) {
                Ok(m) if m.dev() == locked.dev() && m.ino() == locked.ino() => {
                    return Ok(Some(VmLock {
                        lock: Some(lock),
                        path: path.to_path_buf(),
                    }));
                }
                // The holder before us removed the file after we opened it: start over.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if create {
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => return Err(Error::io("inspecting lock", path, e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VmLock {
    fn drop(&mut self) {
        // Remove first, unlock second: a waiter that locks the removed file notices and retries.
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}

/// True when some process holds the lock at `path`.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(path) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let a = VmLock::acquire(dir.path(), "vm1", "backing up").unwrap();
        assert!(is_held(a.path()));
        let err = VmLock::acquire(dir.path(), "vm1", "backing up").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy);
        assert!(err.message().contains("vm1"));
        VmLock::acquire(dir.path(), "vm2", "backing up").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!is_held(&path));
        assert!(!path.exists(), "a released lock leaves no file");
        VmLock::acquire(dir.path(), "vm1", "backing up").unwrap();
    }

    #[test]
    fn a_lock_on_a_removed_file_is_not_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = VmLock::acquire(dir.path(), "vm1", "backing up").unwrap();
        let path = a.path().to_path_buf();
        // Another process opened the file and waits for the lock while the holder releases.
        let waiting = OpenOptions::new().write(true).open(&path).unwrap();
        drop(a);
        let stale = Flock::lock(waiting, FlockArg::LockExclusiveNonblock).unwrap();
        // It holds a lock on a removed file; a fresh taker gets the real lock and the stale
        // one's owner, retrying through `try_lock`, would be refused.
        let b = VmLock::acquire(dir.path(), "vm1", "backing up").unwrap();
        assert!(VmLock::try_lock(&path, true).unwrap().is_none());
        drop(stale);
        drop(b);
        assert!(
            VmLock::try_lock(&path, false).unwrap().is_none(),
            "no file, no lock"
        );
    }

    #[test]
    fn many_threads_never_hold_one_lock_together() {
        let dir = tempfile::tempdir().unwrap();
        let holders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let state = dir.path().to_path_buf();
                let holders = holders.clone();
                std::thread::spawn(move || {
                    let mut taken = 0;
                    for _ in 0..300 {
                        if let Ok(lock) = VmLock::acquire(&state, "vm1", "backing up") {
                            let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            assert_eq!(now, 0, "two holders of one VM lock");
                            std::thread::yield_now();
                            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            drop(lock);
                            taken += 1;
                        }
                    }
                    taken
                })
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(taken > 0);
    }
}
