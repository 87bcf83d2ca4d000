//! The commands that read a ledger (`export`, `reconcile`, `report`, `run --dry-run`) read a
//! PostgreSQL one through a snapshot: one `REPEATABLE READ` transaction copied into a private
//! temporary SQLite file, removed when the command ends, read by the very queries that read a
//! SQLite ledger (`ledger::queries`). So both stores give the same answers by construction, and
//! the rows other runs hold in flight show as in flight. It costs a read of what the command
//! reads: every table for `report`; the rows, runs, rejects and drift, not the attempts (half the
//! ledger, with the answers' bodies), for the others ([`Reads`]). `status` counts on the server
//! instead (`super::reads`). docs/decisions.md says when to drop it.

use std::time::Instant;

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
    let began = Instant::now();
    let mut pg = PgLedger::open(url).await?;
    let shown = pg.shown().to_owned();
    let dir = tempfile::Builder::new()
        .prefix("pms-onboard-snapshot-")
        .tempdir()
        .context("cannot make a temporary folder for a snapshot of the PostgreSQL ledger")?;
    let conn = crate::ledger::open_unlocked(&dir.path().join("snapshot.db"))?.into_connection();
    throw_away(&conn).context("cannot set up the snapshot of the PostgreSQL ledger")?;
    let indexes = drop_indexes(&conn)?;
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
    let copied = began.elapsed();
    for sql in &indexes {
        sqlite_tx.execute_batch(sql)?;
    }
    sqlite_tx.commit()?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    tracing::debug!(
        "snapshot of {shown}: read in {copied:.2?}, {} indexes made in {:.2?}",
        indexes.len(),
        began.elapsed() - copied
    );
    Ok((dir, conn))
}

/// The snapshot is a private file that lives as long as the command and is written once, by
/// one connection, in one transaction, before anything reads it: nothing needs it to survive a
/// crash or a power cut, and no other process opens it. So it is written without the durability
/// a ledger has: no journal (a failed copy is thrown away with the file, never rolled back), no
/// sync, the lock taken once and held (so the pages cached while writing stay valid for the
/// queries), and a bigger page cache. No foreign keys while the rows go in (turned on again
/// after): PostgreSQL has checked the same ones. Each of these was measured to pay on 100,000
/// rows (docs/performance.md): all of them together halved the time of `status`.
fn throw_away(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // KiB when negative: 16 MiB, taken only as pages are used. The default 2 MiB made the copy
    // 10 % slower; 256 MiB was no faster than 16 and tripled the command's peak memory.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// Drops the secondary indexes of the empty snapshot and gives the statements that make them
/// again: built once over the whole table after the rows are in, rather than kept up row by row.
/// The indexes SQLite makes itself (primary keys, `UNIQUE` columns) stay.
fn drop_indexes(conn: &rusqlite::Connection) -> anyhow::Result<Vec<String>> {
    let indexes: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX \"{name}\""))?;
    }
    Ok(indexes.into_iter().map(|(_, sql)| sql).collect())
}
