//! The SQLite ledger: the one place that writes SQL. It records every row of every input, each
//! attempt, each run and each reject, so that a run killed at any moment is finished by running
//! the same command again.
//!
//! - [`open`] creates or upgrades the file from `migrations/` (embedded at build time), in WAL
//!   mode with `synchronous=FULL`: a committed outcome survives a crash or a power cut.
//! - [`RunLock`] keeps two runs from interleaving on one ledger.
//! - [`writer`] is the single writer thread: it group-commits what the workers send.
//! - [`queries`] are the reads behind `status`, `export` and `reconcile`.
//! - [`scratch`] holds sets too large for memory in a temporary file, apart from the ledger.

pub mod queries;
pub mod scratch;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context as _;
use include_dir::{Dir, include_dir};
use rusqlite::Connection;
use rusqlite_migration::Migrations;

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("migrations/ is embedded and well formed")
});

/// Row states, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Pending,
    InFlight,
    Succeeded,
    AlreadyCircled,
    Failed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Pending,
        State::InFlight,
        State::Succeeded,
        State::AlreadyCircled,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Succeeded => "succeeded",
            State::AlreadyCircled => "already_circled",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Done: never sent again.
    pub fn is_done(self) -> bool {
        matches!(self, State::Succeeded | State::AlreadyCircled)
    }
}

/// A row of `rows` by its SQLite rowid: how the workers name a row to the writer. Looking a row
/// up by rowid goes straight to it; by key, it would first descend the key's index, and the writer
/// looks every sent row up three times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowId(pub i64);

/// Opens (creating or upgrading) the ledger for reading and writing.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path)
        .with_context(|| format!("cannot open the ledger {}", path.display()))?;
    configure(&conn).with_context(|| format!("cannot use the ledger {}", path.display()))?;
    MIGRATIONS.to_latest(&mut conn).with_context(|| {
        format!(
            "cannot create or upgrade the ledger {} (is it a pms-onboard ledger from a newer version?)",
            path.display()
        )
    })?;
    Ok(conn)
}

/// Opens an existing ledger for reading; a missing file is an error that says what to do.
pub fn open_existing(path: &Path) -> anyhow::Result<Connection> {
    if !path.exists() {
        anyhow::bail!(
            "no ledger at {}: run `pms-onboard run FILE...` first, or pass --ledger PATH",
            path.display()
        );
    }
    open(path)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// An exclusive lock on a ledger, held for the whole of a run.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock beside the ledger (`LEDGER.lock`), or says who to wait for.
    pub fn acquire(ledger: &Path) -> anyhow::Result<Self> {
        let mut name = ledger.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "the ledger {} is in use by another pms-onboard run (lock {}); wait for it to finish, \
                 or use another --ledger",
                ledger.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Now, as stored in the ledger (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn a_second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let first = RunLock::acquire(&ledger).unwrap();
        let err = RunLock::acquire(&ledger).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(first);
        RunLock::acquire(&ledger).unwrap();
    }

    #[test]
    fn the_ledger_is_wal_and_plain_sql() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("l.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn migration_3_keeps_rows_attempts_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut conn = Connection::open(&path).unwrap();
        configure(&conn).unwrap();
        MIGRATIONS.to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, started_at, config) VALUES (1, 't', '{}');
             INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                 merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                 pms_label, attempts, source_file, source_line, run_id, seq, created_at, updated_at)
             VALUES ('MERCHANT_PMS|p|m|s', 'MERCHANT_PMS', '', 'p', 'm', '店', 's', '分店', '1', '2',
                 'succeeded', '123', 1, 'a.csv', 2, 1, 1, 't', 't');
             INSERT INTO attempts (key, run_id, attempt, started_at, outcome)
             VALUES ('MERCHANT_PMS|p|m|s', 1, 1, 't', 'success');",
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        let (state, label, name): (String, String, String) = conn
            .query_row(
                "SELECT state, pms_label, merchant_name FROM rows WHERE key = 'MERCHANT_PMS|p|m|s'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (state.as_str(), label.as_str(), name.as_str()),
            ("succeeded", "123", "店")
        );
        let orphans: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(orphans, 0);
        // The rewritten checks still refuse what the old ones refused.
        for bad in [
            "UPDATE rows SET state = 'done'",
            "UPDATE rows SET failure = 'sometimes'",
            "UPDATE rows SET save_way_type = 'OTHER'",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
        // And an attempt still needs its row.
        assert!(
            conn.execute(
                "INSERT INTO attempts (key, run_id, attempt, started_at) VALUES ('nope', 1, 1, 't')",
                []
            )
            .is_err()
        );
    }
}
