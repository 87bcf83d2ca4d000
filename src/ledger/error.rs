//! Why the ledger could not do what was asked, in the classes a caller branches on: a ledger
//! that is busy (another program holds a write lock) or cannot be written for now (disk full,
//! I/O error, read-only) is *unavailable*: the writer keeps what it holds and tries again, and no
//! new request leaves meanwhile. A damaged file or a bug is not going to get better by waiting.

use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "the ledger is locked by another program (DB Browser for SQLite or the sqlite3 shell with \
         changes not yet written, a backup or sync tool): {0}"
    )]
    Busy(#[source] rusqlite::Error),
    #[error("the disk is full, or the ledger may not grow (a file-size or quota limit): {0}")]
    Full(#[source] rusqlite::Error),
    #[error(
        "the ledger cannot be written (an I/O error, or the file or its folder is read-only): {0}"
    )]
    Io(#[source] rusqlite::Error),
    #[error("the ledger file is damaged or not a pms-onboard ledger: {0}")]
    Corrupt(#[source] rusqlite::Error),
    #[error("{0}")]
    Gone(String),
    #[error("ledger: {0}")]
    Other(#[source] rusqlite::Error),
}

impl LedgerError {
    /// Whether waiting may help: the writer keeps what it holds and tries again.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            LedgerError::Busy(_) | LedgerError::Full(_) | LedgerError::Io(_)
        )
    }

    /// A lock held by another program: waited for as long as it takes (or until Ctrl-C).
    pub fn is_busy(&self) -> bool {
        matches!(self, LedgerError::Busy(_))
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LedgerError::Busy(e),
            Some(ErrorCode::DiskFull | ErrorCode::TooBig) => LedgerError::Full(e),
            Some(
                ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied,
            ) => LedgerError::Io(e),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => LedgerError::Corrupt(e),
            _ => LedgerError::Other(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_full_and_corrupt_are_told_apart() {
        use rusqlite::ffi;
        assert!(LedgerError::from(failure(ffi::SQLITE_BUSY)).is_busy());
        assert!(LedgerError::from(failure(ffi::SQLITE_LOCKED)).is_busy());
        let full = LedgerError::from(failure(ffi::SQLITE_FULL));
        assert!(matches!(full, LedgerError::Full(_)) && full.is_unavailable());
        let io = LedgerError::from(failure(ffi::SQLITE_IOERR_WRITE));
        assert!(matches!(io, LedgerError::Io(_)) && io.is_unavailable());
        let corrupt = LedgerError::from(failure(ffi::SQLITE_CORRUPT));
        assert!(matches!(corrupt, LedgerError::Corrupt(_)) && !corrupt.is_unavailable());
        let constraint = LedgerError::from(failure(ffi::SQLITE_CONSTRAINT));
        assert!(matches!(constraint, LedgerError::Other(_)));
    }
}
