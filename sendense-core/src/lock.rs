//! Locks between Sendense processes: `flock` on files in `<state-dir>/locks/`. The kernel drops
//! a lock when its holder exits, however it exits, so a lock is never stale.
//!
//! | lock                          | taken by                              | mode      |
//! |-------------------------------|---------------------------------------|-----------|
//! | `<hash of vm>.lock`           | backup, delete, source repair of a VM | exclusive |
//! | `backup-<hash of id>.lock`    | restore, export, verify (whole chain) | shared    |
//! | `backup-<hash of id>.lock`    | delete of that backup                 | exclusive |
//!
//! So a backup of a VM never runs beside a delete (which could remove the parent it planned
//! on), and a backup is never deleted while a restore, export or verify reads it.
//!
//! A holder removes its file before it unlocks (a shared holder only when it can take the lock
//! exclusively, i.e. when it is the last reader), so a clean state directory has no lock files.
//! That makes a file removable while another process waits to open it, so taking a lock checks,
//! after `flock` succeeds, that the file it locked is still the one at the path; if not it
//! starts over on the new file. Removing a file only while holding its lock exclusively keeps
//! this safe for every party: no two processes ever believe they hold conflicting locks.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held lock on a file; released (and the file removed when nobody else holds it) on drop.
#[derive(Debug)]
pub struct FileLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
    shared: bool,
}

/// The exclusive lock of a VM, held while it is backed up, a backup of it is deleted or its
/// source is repaired.
#[derive(Debug)]
pub struct VmLock(FileLock);

fn lock_dir(state_dir: &Path) -> Result<PathBuf> {
    let dir = state_dir.join("locks");
    crate::fsutil::create_private_dir(&dir)?;
    Ok(dir)
}

fn vm_lock_path(dir: &Path, vm: &str) -> PathBuf {
    dir.join(format!("{}.lock", blake3::hash(vm.as_bytes()).to_hex()))
}

fn backup_lock_path(dir: &Path, id: &str) -> PathBuf {
    // Hashed: a backup id can come from a repository manifest, which is untrusted input.
    dir.join(format!(
        "backup-{}.lock",
        blake3::hash(id.as_bytes()).to_hex()
    ))
}

impl VmLock {
    /// Takes the lock of `vm`, or fails with `Busy` when another process holds it.
    pub fn acquire(state_dir: &Path, vm: &str) -> Result<VmLock> {
        match Self::try_acquire(state_dir, vm)? {
            Some(lock) => Ok(lock),
            None => Err(Error::busy(format!(
                "VM `{vm}` is busy: another sendense process is backing it up, or deleting or copying one of its backups"
            ))
            .with_help("Wait for it to finish (`sendense job list --status running`); nothing of the running job was touched.")),
        }
    }

    /// Takes the lock of `vm` when it is free: `None` when another process holds it.
    pub fn try_acquire(state_dir: &Path, vm: &str) -> Result<Option<VmLock>> {
        let path = vm_lock_path(&lock_dir(state_dir)?, vm);
        Ok(FileLock::try_lock(&path, true, false)?.map(VmLock))
    }

    /// Whether another process holds the lock of `vm` now (nothing is taken).
    pub fn is_held(state_dir: &Path, vm: &str) -> bool {
        is_held(&vm_lock_path(&state_dir.join("locks"), vm))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// Shared locks on backups being read (a restore, export or verify and the chain below it).
#[derive(Debug)]
pub struct BackupReadLocks(#[allow(dead_code)] Vec<FileLock>);

impl BackupReadLocks {
    /// Takes a shared lock on each of `ids`; `Busy` when one of them is being deleted.
    pub fn acquire(state_dir: &Path, ids: &[String]) -> Result<BackupReadLocks> {
        let dir = lock_dir(state_dir)?;
        let mut held = Vec::with_capacity(ids.len());
        for id in ids {
            match FileLock::try_lock(&backup_lock_path(&dir, id), true, true)? {
                Some(lock) => held.push(lock),
                None => {
                    return Err(Error::busy(format!("backup {id} is being deleted"))
                        .with_help("Wait for the delete to finish, then choose another backup (`sendense backup list`)."))
                }
            }
        }
        Ok(BackupReadLocks(held))
    }
}

/// The exclusive lock of one backup, held while it is deleted.
#[derive(Debug)]
pub struct BackupDeleteLock(#[allow(dead_code)] FileLock);

impl BackupDeleteLock {
    /// Takes the lock, or fails with `Busy` while a restore, export or verify reads the backup.
    pub fn acquire(state_dir: &Path, id: &str) -> Result<BackupDeleteLock> {
        let path = backup_lock_path(&lock_dir(state_dir)?, id);
        match FileLock::try_lock(&path, true, false)? {
            Some(lock) => Ok(BackupDeleteLock(lock)),
            None => Err(Error::busy(format!(
                "backup {id} is in use: a restore, export or verify is reading it"
            ))
            .with_help("Wait for it to end (`sendense job list --status running`), or cancel it with `sendense job cancel ID`.")),
        }
    }
}

/// Held by the one `schedule run` (or daemon pass) of a state directory that runs at a time:
/// started from cron every minute, a second one finds it taken and starts nothing.
#[derive(Debug)]
pub struct ScheduleLock(#[allow(dead_code)] FileLock);

impl ScheduleLock {
    /// Takes the lock, or `None` while another run holds it.
    pub fn try_acquire(state_dir: &Path) -> Result<Option<ScheduleLock>> {
        let path = lock_dir(state_dir)?.join("schedule.lock");
        Ok(FileLock::try_lock(&path, true, false)?.map(ScheduleLock))
    }

    /// The lock of scheduled verifies, taken the same way: a long verify holds only this one,
    /// so the backups that come due meanwhile are not held up by it.
    pub fn try_acquire_verify(state_dir: &Path) -> Result<Option<ScheduleLock>> {
        let path = lock_dir(state_dir)?.join("schedule-verify.lock");
        Ok(FileLock::try_lock(&path, true, false)?.map(ScheduleLock))
    }
}

/// The lock in a repository that keeps a take-over from happening while its owner writes:
/// `<repo>/locks/writers.lock`, held shared by every backup and delete of the owning hub and
/// exclusively by `repo import --take-over` while it takes the repository. Across the
/// processes of one host always; across hosts where the filesystem carries `flock` (NFSv4).
#[derive(Debug)]
pub struct RepoWriteLock(#[allow(dead_code)] FileLock);

impl RepoWriteLock {
    fn path(repo: &Path) -> Result<PathBuf> {
        let dir = repo.join("locks");
        let file = dir.join("writers.lock");
        crate::repo::chain::check_inside(repo, &file)?;
        crate::fsutil::create_private_dir(&dir)?;
        Ok(file)
    }

    /// Held while this hub writes into `repo`; `Busy` while another hub takes it over.
    pub fn writer(repo: &Path) -> Result<RepoWriteLock> {
        match FileLock::try_lock(&Self::path(repo)?, true, true)? {
            Some(lock) => Ok(RepoWriteLock(lock)),
            None => Err(Error::busy(format!(
                "repository {} is being taken over by another hub",
                repo.display()
            ))
            .with_help("See `sendense repo show`; the other hub owns it from now on.")),
        }
    }

    /// Held while a hub takes `repo` over; `Busy` while a hub writes into it.
    pub fn take_over(repo: &Path) -> Result<RepoWriteLock> {
        match FileLock::try_lock(&Self::path(repo)?, true, false)? {
            Some(lock) => Ok(RepoWriteLock(lock)),
            None => Err(Error::busy(format!(
                "repository {} is being written to now (a backup or a delete of the hub that \
                 owns it runs)",
                repo.display()
            ))
            .with_help(
                "Taking it over now would break that job. Retry when it has ended, and stop \
                 the other hub from using the repository first.",
            )),
        }
    }
}

impl FileLock {
    /// Takes the lock at `path` without waiting (shared or exclusive): `None` when a
    /// conflicting holder has it, or when `create` is off and there is no file.
    pub(crate) fn try_lock(path: &Path, create: bool, shared: bool) -> Result<Option<FileLock>> {
        let mode = if shared {
            FlockArg::LockSharedNonblock
        } else {
            FlockArg::LockExclusiveNonblock
        };
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
            let lock = match Flock::lock(file, mode) {
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
                    return Ok(Some(FileLock {
                        lock: Some(lock),
                        path: path.to_path_buf(),
                        shared,
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

impl Drop for FileLock {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        // The file goes only while held exclusively: a shared holder removes it when it is the
        // last one (then it can take the lock exclusively). A waiter that locks the removed
        // file notices and retries.
        if !self.shared || lock.relock(FlockArg::LockExclusiveNonblock).is_ok() {
            let _ = std::fs::remove_file(&self.path);
        }
        drop(lock);
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
        let a = VmLock::acquire(dir.path(), "vm1").unwrap();
        assert!(is_held(a.path()));
        let err = VmLock::acquire(dir.path(), "vm1").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy);
        assert!(err.message().contains("vm1"));
        VmLock::acquire(dir.path(), "vm2").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!is_held(&path));
        assert!(!path.exists(), "a released lock leaves no file");
        VmLock::acquire(dir.path(), "vm1").unwrap();
    }

    #[test]
    fn a_lock_on_a_removed_file_is_not_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = VmLock::acquire(dir.path(), "vm1").unwrap();
        let path = a.path().to_path_buf();
        // Another process opened the file and waits for the lock while the holder releases.
        let waiting = OpenOptions::new().write(true).open(&path).unwrap();
        drop(a);
        let stale = Flock::lock(waiting, FlockArg::LockExclusiveNonblock).unwrap();
        // It holds a lock on a removed file; a fresh taker gets the real lock and the stale
        // one's owner, retrying through `try_lock`, would be refused.
        let b = VmLock::acquire(dir.path(), "vm1").unwrap();
        assert!(FileLock::try_lock(&path, true, false).unwrap().is_none());
        drop(stale);
        drop(b);
        assert!(
            FileLock::try_lock(&path, false, false).unwrap().is_none(),
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
                        if let Ok(lock) = VmLock::acquire(&state, "vm1") {
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

    #[test]
    fn readers_share_a_backup_and_keep_its_delete_out() {
        let dir = tempfile::tempdir().unwrap();
        let ids = vec!["b1".to_string(), "b0".to_string()];
        let r1 = BackupReadLocks::acquire(dir.path(), &ids).unwrap();
        let r2 = BackupReadLocks::acquire(dir.path(), &ids[..1]).unwrap();
        let err = BackupDeleteLock::acquire(dir.path(), "b0").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy);
        assert!(err.message().contains("b0"), "{err}");
        drop(r1);
        // b0 is free now; b1 still has a reader.
        let d0 = BackupDeleteLock::acquire(dir.path(), "b0").unwrap();
        assert_eq!(
            BackupDeleteLock::acquire(dir.path(), "b1")
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Busy
        );
        let err = BackupReadLocks::acquire(dir.path(), &ids).unwrap_err();
        assert!(err.message().contains("being deleted"), "{err}");
        drop(d0);
        drop(r2);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
            .unwrap()
            .collect();
        assert!(
            left.is_empty(),
            "the last holder removes the file: {left:?}"
        );
    }

    #[test]
    fn readers_and_deleters_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        // Positive: readers inside; -1000: a deleter inside.
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let state = dir.path().to_path_buf();
                let inside = inside.clone();
                let deleter = i % 2 == 0;
                std::thread::spawn(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let mut got = 0;
                    while std::time::Instant::now() < until {
                        if deleter {
                            if let Ok(lock) = BackupDeleteLock::acquire(&state, "b") {
                                got += 1;
                                assert_eq!(
                                    inside.fetch_sub(1000, SeqCst),
                                    0,
                                    "delete beside others"
                                );
                                std::thread::yield_now();
                                inside.fetch_add(1000, SeqCst);
                                drop(lock);
                            }
                        } else if let Ok(lock) = BackupReadLocks::acquire(&state, &["b".into()]) {
                            got += 1;
                            assert!(inside.fetch_add(1, SeqCst) >= 0, "read during a delete");
                            std::thread::yield_now();
                            inside.fetch_sub(1, SeqCst);
                            drop(lock);
                        }
                        // Everyone pauses between tries, so each side finds moments without
                        // the other.
                        std::thread::sleep(std::time::Duration::from_micros(500));
                    }
                    (deleter, got)
                })
            })
            .collect();
        let (mut deletes, mut reads) = (0, 0);
        for t in threads {
            match t.join().unwrap() {
                (true, n) => deletes += n,
                (false, n) => reads += n,
            }
        }
        // Both sides got in, so their exclusion was really tried.
        assert!(deletes > 0 && reads > 0, "deletes {deletes}, reads {reads}");
    }
}
