//! The SQLite ledger: the one place that writes SQL. It records every row of every input, each
//! attempt, each run and each reject, so that a run killed at any moment is finished by running
//! the same command again.
//!
//! - [`open`] creates or upgrades the file from `migrations/sqlite/` (embedded at build time), in WAL
//!   mode with `synchronous=FULL`: a committed outcome survives a crash or a power cut. It takes
//!   in the side file of answers an earlier run could not write, before anything else.
//! - [`lock`]: one run per ledger file, whatever path names it.
//! - [`filesystem`]: not on a network or FUSE filesystem; created readable by its owner only.
//! - [`writer`] is the single writer thread: it group-commits what the workers send, and keeps
//!   every answer when the ledger cannot commit; [`store`] is its SQL; [`spill`] the side file.
//! - [`queries`] are the reads behind `status`, `export` and `reconcile`.
//! - [`scratch`] holds sets too large for memory in a temporary file, apart from the ledger.

pub mod error;
pub mod filesystem;
pub mod lock;
pub mod queries;
pub mod scratch;
pub mod spill;
pub mod store;
pub mod writer;

use std::path::Path;
use std::sync::LazyLock;

use anyhow::Context as _;
use include_dir::{Dir, include_dir};
use rusqlite::Connection;
use rusqlite_migration::Migrations;

pub use crate::model::State;
pub use error::LedgerError;
pub use lock::{LedgerLock, LockError};

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations/sqlite");
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("migrations/ is embedded and well formed")
});

/// A row of `rows` by its SQLite rowid: how the workers name a row to the writer. Looking a row
/// up by rowid goes straight to it; by key, it would first descend the key's index, and the writer
/// looks every sent row up three times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowId(pub i64);

/// Opens (creating or upgrading) the ledger; the caller holds its lock or only reads it.
pub fn open_unlocked(path: &Path) -> anyhow::Result<Connection> {
    // Created by us, not SQLite, so that it and its -wal and -shm (which take its mode) are
    // private.
    if !path.exists() {
        filesystem::create_private(path)
            .with_context(|| format!("cannot create the ledger {}", path.display()))?;
    }
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

/// Opens (creating or upgrading) the ledger, and first takes in the answers an earlier run left
/// in the side file, when no run holds the ledger (a run takes them in itself as it starts).
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = open_unlocked(path)?;
    if let Some(remote) = filesystem::remote(path) {
        // Read as it is: what a run on another machine would do with its locks is not known.
        tracing::warn!("{}", remote.when_reading(path));
        return Ok(conn);
    }
    if spill::path_for(path).exists()
        && let Ok(_lock) = LedgerLock::acquire(path)
        && let Some(taken) = take_in_side_file(&conn, path)?
    {
        tracing::warn!("{taken}");
    }
    Ok(conn)
}

/// Opens an existing ledger; a missing file is an error that says what to do.
pub fn open_existing(path: &Path) -> anyhow::Result<Connection> {
    if !path.exists() {
        anyhow::bail!(
            "no ledger at {}: run `pms-onboard run FILE...` first, or pass --ledger PATH",
            path.display()
        );
    }
    open(path)
}

/// What [`take_in_side_file`] took in.
#[derive(Debug, Clone)]
pub struct TakenIn {
    pub answers: usize,
    pub from: std::path::PathBuf,
}

impl std::fmt::Display for TakenIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "took in {} answer(s) that an earlier run could not write to the ledger ({})",
            self.answers,
            self.from.display()
        )
    }
}

/// Writes the answers of the side file into the ledger (one transaction), then removes the file.
/// The caller holds the ledger's lock. `None` when there is no side file.
pub fn take_in_side_file(conn: &Connection, ledger: &Path) -> anyhow::Result<Option<TakenIn>> {
    let from = spill::path_for(ledger);
    if !from.exists() {
        return Ok(None);
    }
    let answers = spill::read(&from)?;
    let name = from.display().to_string();
    let tx = conn.unchecked_transaction()?;
    for a in &answers {
        store::take_in(&tx, a, &name)
            .with_context(|| format!("cannot take in the answers kept in {name}"))?;
    }
    tx.commit()
        .with_context(|| format!("cannot take in the answers kept in {name}"))?;
    std::fs::remove_file(&from)
        .with_context(|| format!("took in {name}, but cannot remove it: remove it by hand"))?;
    Ok(Some(TakenIn {
        answers: answers.len(),
        from,
    }))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
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
    fn the_ledger_is_wal_and_plain_sql() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_unlocked(&dir.path().join("l.db")).unwrap();
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
        let conn = open_unlocked(&path).unwrap();
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
