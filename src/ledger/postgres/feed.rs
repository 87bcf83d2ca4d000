//! What a run's feeder reads from a PostgreSQL ledger: the rows of its input still to send, as
//! `queries::pending_page` reads them from SQLite (same order, same types). A row another run
//! holds in flight is not pending and is not fed; the claim settles any race.

use tokio_postgres::GenericClient;

use crate::ledger::RowId;
use crate::ledger::queries::LedgerRow;

/// Rows of this run still to send, in input order, after `after_seq`: `(seq, row id, row)`;
/// rows whose last answer did not verify come in a pass of their own (`unverified`).
pub async fn pending_page(
    client: &impl GenericClient,
    run_id: i64,
    after_seq: u64,
    limit: usize,
    unverified: bool,
) -> anyhow::Result<Vec<(u64, RowId, LedgerRow)>> {
    let rows = client
        .query(
            "SELECT key, save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name,
                 store_id, store_name, mall_group_label, mall_label, state, ambiguous,
                 COALESCE(pms_label, ''), COALESCE(result_code, ''), COALESCE(result_message, ''),
                 attempts, source_file, source_line, updated_at, failure, maybe_sent,
                 COALESCE(tracer_id, ''), label_unverified, seq, id
             FROM rows
             WHERE run_id = $1 AND state = 'pending' AND seq > $2 AND answer_unverified = $3
             ORDER BY seq LIMIT $4",
            &[&run_id, &(after_seq as i64), &unverified, &(limit as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let row = LedgerRow {
                key: r.get(0),
                save_way_type: r.get(1),
                ipay_trade_no: r.get(2),
                partner_id: r.get(3),
                merchant_id: r.get(4),
                merchant_name: r.get(5),
                store_id: r.get(6),
                store_name: r.get(7),
                mall_group_label: r.get(8),
                mall_label: r.get(9),
                state: r.get(10),
                ambiguous: r.get(11),
                pms_label: r.get(12),
                result_code: r.get(13),
                result_message: r.get(14),
                attempts: u32::try_from(r.get::<_, i64>(15)).unwrap_or(u32::MAX),
                source_file: r.get(16),
                source_line: r.get::<_, i64>(17).max(0) as u64,
                updated_at: r.get(18),
                failure: r.get(19),
                maybe_sent: r.get(20),
                tracer_id: r.get(21),
                label_unverified: r.get(22),
            };
            (r.get::<_, i64>(23).max(0) as u64, RowId(r.get(24)), row)
        })
        .collect())
}

/// What is left of this run's rows once its workers are done: `(pending, held elsewhere)`, the
/// second the rows in flight under another run's claim (looked at again until they are done or
/// swept back to pending when that run's lease expires).
pub async fn unfinished(client: &impl GenericClient, run_id: i64) -> anyhow::Result<(u64, u64)> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'in_flight' AND claim_run IS DISTINCT FROM $1)
             FROM rows WHERE run_id = $1",
            &[&run_id],
        )
        .await?;
    let (pending, elsewhere): (i64, i64) = (row.get(0), row.get(1));
    Ok((pending.max(0) as u64, elsewhere.max(0) as u64))
}
