//! The commands that read a ledger (`export`, `reconcile`, `report`, `run --dry-run`) read a
//! PostgreSQL one through a snapshot: one `REPEATABLE READ` transaction copied into a private
//! temporary SQLite file, removed when the command ends, read by the very queries that read a
//! SQLite ledger (`ledger::queries`). So both stores give the same answers by construction, and
//! the rows other runs hold in flight show as in flight. It costs a read of what the command
//! reads: every table for `report`; the rows, runs, rejects and drift, not the attempts (half the
//! ledger, with the answers' bodies), for the others ([`Reads`]). `status` counts on the server
//! instead (`super::reads`). docs/decisions.md says when to drop it.

use anyhow::Context as _;

use super::PgLedger;

/// What a command reads of the ledger, and so what its snapshot copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every table (`report`: latencies, attempts a row, requests a second).
    Everything,
    /// Every table but `attempts`: `export`, `reconcile`, `run --dry-run` read rows, runs,
    /// rejects and drift only (`ledger::queries` reads attempts only for the report).
    Rows,
}

/// A consistent copy of the ledger at `url` in a temporary file: the folder (removed when
/// dropped) and a connection to the copy.
pub fn open(url: &str, reads: Reads) -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
    let url = url.to_owned();
    super::on_own_runtime("reading the PostgreSQL ledger failed", || async move {
        read(&url, reads).await
    })
}

async fn read(
    url: &str,
    reads: Reads,
) -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
    let mut pg = PgLedger::open(url).await?;
    let shown = pg.shown().to_owned();
    let dir = tempfile::Builder::new()
        .prefix("pms-onboard-snapshot-")
        .tempdir()
        .context("cannot make a temporary folder for a snapshot of the PostgreSQL ledger")?;
    let conn = crate::ledger::open_unlocked(&dir.path().join("snapshot.db"))?.into_connection();
    // A private file thrown away when the command ends: nothing to recover after a crash, so no
    // journal and no syncs (a ledger's own durability settings are for the real thing).
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let sqlite_tx = conn.unchecked_transaction()?;
    let pg_tx = pg.consistent_read().await?;
    let leave_out: &[&str] = match reads {
        Reads::Everything => &[],
        Reads::Rows => &["attempts"],
    };
    super::copy::read_into_sqlite(&pg_tx, &sqlite_tx, leave_out)
        .await
        .with_context(|| format!("cannot read the PostgreSQL ledger {shown}"))?;
    pg_tx.commit().await?;
    sqlite_tx.commit()?;
    Ok((dir, conn))
}
