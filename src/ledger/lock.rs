//! One writer per ledger, whatever path names it. The lock is an exclusive `flock` on the
//! database file itself, not on a file beside a path: a symlink, a hard link, a relative path or
//! `..` all open the same inode and meet the same lock. (flock and SQLite's own POSIX byte-range
//! locks do not interact on a local disk of Linux or the BSDs. On a network or FUSE filesystem
//! flock is emulated with POSIX locks, which do meet SQLite's: a ledger there is refused before
//! the lock is taken, see `filesystem`.)
//!
//! The descriptor that holds the lock is never closed while the process lives. Closing any
//! descriptor of a file drops every POSIX lock the process holds on it, SQLite's included, so a
//! lock file closed under an open connection would silently unlock the database for other
//! processes. Releasing the lock unlocks the `flock` and keeps the descriptor.
//!
//! A run also checks, before each commit, that its path still names the file it locked: a ledger
//! deleted or replaced under a run (moved away, restored from a copy) must stop it, or its
//! answers would go into a file nobody will read again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::filesystem;

/// The descriptors kept open for the life of the process.
static HELD: Mutex<Vec<Arc<File>>> = Mutex::new(Vec::new());

/// A file's identity (device and inode on Unix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> FileId {
        FileId { dev: 0, ino: 0 }
    }
}

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the ledger {path} is in use by another pms-onboard run (it may be named by another path: \
         a symlink or a hard link of the same file); wait for it to finish, or use another --ledger"
    )]
    InUse { path: PathBuf },
    #[error(
        "the ledger {path} is on a network or FUSE filesystem ({kind}): there SQLite's \
         write-ahead log does not work and file locks are only emulated, so a run could damage \
         the ledger, or two runs could both write it. Nothing was sent; {way_out}",
        way_out = filesystem::WAY_OUT
    )]
    Remote { path: PathBuf, kind: String },
    #[error("cannot open the ledger {path} to lock it")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a ledger file, held until dropped.
#[derive(Debug)]
pub struct LedgerLock {
    file: Arc<File>,
    id: FileId,
    path: PathBuf,
}

impl LedgerLock {
    /// Takes the lock, creating the (empty, private) file when there is none yet; refuses at once
    /// when another process holds it, and a ledger on a network or FUSE filesystem before it
    /// creates or locks anything.
    pub fn acquire(path: &Path) -> Result<LedgerLock, LockError> {
        if let Some(remote) = filesystem::remote(path) {
            return Err(LockError::Remote {
                path: path.to_owned(),
                kind: remote.kind,
            });
        }
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let opened = filesystem::private()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let id = FileId::of(&opened.metadata().map_err(io)?);
        // Never closed (see the module header). Each lock is its own open file description, so
        // that two locks of one file conflict even within one process.
        let file = Arc::new(opened);
        HELD.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(file.clone());
        match file.try_lock() {
            Ok(()) => Ok(LedgerLock {
                file,
                id,
                path: path.to_owned(),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse {
                path: path.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// `None` while the path still names the locked file; otherwise what happened to it.
    pub fn check(&self) -> Option<String> {
        match std::fs::metadata(&self.path) {
            Err(_) => Some(format!(
                "the ledger {} was deleted or moved while the run was going",
                self.path.display()
            )),
            Ok(meta) if FileId::of(&meta) != self.id => Some(format!(
                "the ledger {} was replaced by another file while the run was going",
                self.path.display()
            )),
            Ok(_) => None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LedgerLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_by_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let first = LedgerLock::acquire(&ledger).unwrap();
        assert!(matches!(
            LedgerLock::acquire(&ledger),
            Err(LockError::InUse { .. })
        ));
        #[cfg(unix)]
        {
            let link = dir.path().join("alias.db");
            std::os::unix::fs::symlink(&ledger, &link).unwrap();
            assert!(matches!(
                LedgerLock::acquire(&link),
                Err(LockError::InUse { .. })
            ));
            let hard = dir.path().join("hard.db");
            std::fs::hard_link(&ledger, &hard).unwrap();
            assert!(matches!(
                LedgerLock::acquire(&hard),
                Err(LockError::InUse { .. })
            ));
        }
        drop(first);
        LedgerLock::acquire(&ledger).unwrap();
    }

    #[test]
    fn a_replaced_or_deleted_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let lock = LedgerLock::acquire(&ledger).unwrap();
        assert_eq!(lock.check(), None);
        std::fs::rename(&ledger, dir.path().join("moved.db")).unwrap();
        assert!(lock.check().unwrap().contains("deleted or moved"));
        std::fs::write(&ledger, b"").unwrap();
        assert!(lock.check().unwrap().contains("replaced"));
    }
}
