//! The commands that read a ledger (`status`, `export`, `reconcile`, `report`, `doctor`) read a
//! PostgreSQL one through a snapshot: one `REPEATABLE READ` transaction copied into a private
//! temporary SQLite file, removed when the command ends, read by the very queries that read a
//! SQLite ledger (`ledger::queries`). So both stores give the same answers by construction, and
//! the rows other runs hold in flight show as in flight. It costs a read of the whole ledger per
//! command (about a second per 100,000 rows here); docs/decisions.md says when to drop it.

use anyhow::Context as _;

use super::PgLedger;

/// A consistent copy of the ledger at `url` in a temporary file: the folder (removed when
/// dropped) and a connection to the copy.
pub fn open(url: &str) -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
    let url = url.to_owned();
    super::on_own_runtime("reading the PostgreSQL ledger failed", || async move {
        read(&url).await
    })
}

async fn read(url: &str) -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
    let mut pg = PgLedger::open(url).await?;
    let shown = pg.shown().to_owned();
    let dir = tempfile::Builder::new()
        .prefix("pms-onboard-snapshot-")
        .tempdir()
        .context("cannot make a temporary folder for a snapshot of the PostgreSQL ledger")?;
    let conn = crate::ledger::open_unlocked(&dir.path().join("snapshot.db"))?.into_connection();
    let sqlite_tx = conn.unchecked_transaction()?;
    let pg_tx = pg.consistent_read().await?;
    super::copy::read_into_sqlite(&pg_tx, &sqlite_tx)
        .await
        .with_context(|| format!("cannot read the PostgreSQL ledger {shown}"))?;
    pg_tx.commit().await?;
    sqlite_tx.commit()?;
    Ok((dir, conn))
}
