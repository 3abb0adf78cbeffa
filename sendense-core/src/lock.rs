//! Per-VM locks: `flock` on `<state-dir>/locks/<vm>.lock`. The kernel drops the lock when its
//! holder exits, however it exits, so a lock is never stale; a leftover file is harmless.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct VmLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl VmLock {
    /// Takes the lock of `vm`, or fails with `Busy` when another process holds it.
    pub fn acquire(state_dir: &Path, vm: &str, doing: &str) -> Result<VmLock> {
        let dir = state_dir.join("locks");
        crate::fsutil::create_private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", blake3::hash(vm.as_bytes()).to_hex()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("opening lock", &path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(VmLock { _lock: lock, path }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::busy(format!(
                "VM `{vm}` is busy: another sendense process is {doing} it"
            ))
            .with_help("Wait for it to finish (`sendense job list --status running`); nothing of the running job was touched.")),
            Err((_, e)) => Err(Error::io("locking", &path, std::io::Error::from(e))),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
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
        VmLock::acquire(dir.path(), "vm1", "backing up").unwrap();
    }
}
