//! What `status` reads, read on the server: a count a state is one `GROUP BY` there, where the
//! snapshot (`super::snapshot`) would first copy every row and attempt (2.1 s for 100,000 rows
//! here, against 0.1 s). The statements are `ledger::queries::status`'s, in PostgreSQL's dialect
//! (booleans for 0/1), and their results go through the same tallies (`OutcomeCounts::add`); the
//! test of the reading commands compares `status` on a PostgreSQL ledger with its SQLite copy.

use crate::ledger::TakenIn;
use crate::ledger::queries::{OutcomeCounts, RunInfo, StatusCounts};

/// `status` of the ledger: counts by state and result code, and the last `last_runs` runs, read
/// in one `REPEATABLE READ` transaction (one moment of a ledger other runs write).
pub async fn status(
    client: &mut tokio_postgres::Client,
    last_runs: usize,
) -> anyhow::Result<StatusCounts> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut o = OutcomeCounts::default();
    for r in tx
        .query(
            "SELECT state, COALESCE(failure, ''), ambiguous, count(*) FROM rows
             GROUP BY state, failure, ambiguous",
            &[],
        )
        .await?
    {
        let n: i64 = r.get(3);
        o.add(r.get(0), r.get(1), r.get(2), n.max(0) as u64);
    }
    let mut c = StatusCounts::of_rows(&o);
    let unverified: i64 = tx
        .query_one(
            "SELECT count(*) FROM rows WHERE answer_unverified
                 AND state NOT IN ('succeeded', 'already_circled')",
            &[],
        )
        .await?
        .get(0);
    c.unverified = unverified.max(0) as u64;
    for r in tx
        .query(
            "SELECT result_code, count(*) FROM rows WHERE result_code IS NOT NULL
             GROUP BY result_code",
            &[],
        )
        .await?
    {
        let n: i64 = r.get(1);
        c.by_result_code.insert(r.get(0), n.max(0) as u64);
    }
    let count = |r: &tokio_postgres::Row, i: usize| r.get::<_, i64>(i).max(0) as u64;
    c.last_runs = tx
        .query(
            "SELECT id, started_at, ended_at, outcome, rows_read, succeeded, already_circled,
                 failed, rejected, drifted, message
             FROM runs ORDER BY id DESC LIMIT $1",
            &[&(last_runs as i64)],
        )
        .await?
        .iter()
        .map(|r| RunInfo {
            id: r.get(0),
            started_at: r.get(1),
            ended_at: r.get(2),
            outcome: r.get(3),
            rows_read: count(r, 4),
            succeeded: count(r, 5),
            already_circled: count(r, 6),
            failed: count(r, 7),
            rejected: count(r, 8),
            drifted: count(r, 9),
            message: r.get(10),
        })
        .collect();
    tx.commit().await?;
    Ok(c)
}

/// [`status`] from any thread, after taking in this host's side files of the ledger (as every
/// command that opens a ledger does).
pub fn status_now(url: &str, last_runs: usize) -> anyhow::Result<(StatusCounts, Option<TakenIn>)> {
    let taken = super::late::take_in_before_reading(url)?;
    let url = url.to_owned();
    let counts = super::on_own_runtime("reading the PostgreSQL ledger failed", || async move {
        let mut pg = super::PgLedger::open(&url).await?;
        status(pg.client_mut(), last_runs).await
    })?;
    Ok((counts, taken))
}
