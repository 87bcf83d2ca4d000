//! A run on a shared ledger: begun with a lease, its sheet rows and rejects taken in, ended. What
//! the SQLite store does at the start of a run to every other run (marking them crashed, putting
//! every row in flight back) is done here only to runs whose lease expired ([`super::lease`]):
//! another host's live run is never touched.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::micros;
use crate::input::{Reject, Row, SaveWay, SourceRow};
use crate::ledger::now;
use crate::ledger::store::FileInfo;
use crate::model::{self, FailureKind, Known, RunCounts, RunEnd, Sighting, State};

/// Starts a run holding a lease of `lease` on the server's clock, after sweeping the runs whose
/// lease expired. `holder` names the host and process, for a person reading `runs`.
pub async fn begin_run(
    client: &mut tokio_postgres::Client,
    config: &str,
    files: &[FileInfo],
    lease: Duration,
    holder: &str,
) -> anyhow::Result<i64> {
    super::lease::sweep(client).await?;
    let tx = client.transaction().await?;
    let run_id: i64 = tx
        .query_one(
            "INSERT INTO runs (started_at, config, lease_until, holder)
             VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond', $4) RETURNING id",
            &[&now(), &config, &micros(lease), &holder],
        )
        .await?
        .get(0);
    for f in files {
        tx.execute(
            "INSERT INTO run_files (run_id, path, sha256, bytes) VALUES ($1, $2, $3, $4)",
            &[&run_id, &f.path, &f.sha256, &(f.bytes as i64)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(run_id)
}

/// The nine columns of a row as sent, in [`payload`]'s order.
pub(crate) const PAYLOAD: &str = "save_way_type, ipay_trade_no, partner_id, merchant_id, \
     merchant_name, store_id, store_name, mall_group_label, mall_label";

/// The row as sent, from [`PAYLOAD`] starting at column `at`.
pub(crate) fn payload(r: &tokio_postgres::Row, at: usize) -> Row {
    let way: String = r.get(at);
    Row {
        save_way: SaveWay::parse(&way).unwrap_or(SaveWay::MerchantPms),
        ipay_trade_no: r.get(at + 1),
        partner_id: r.get(at + 2),
        merchant_id: r.get(at + 3),
        merchant_name: r.get(at + 4),
        store_id: r.get(at + 5),
        store_name: r.get(at + 6),
        mall_group_label: r.get(at + 7),
        mall_label: r.get(at + 8),
    }
}

/// Records one sheet row (numbered `seq` in the run's input) and decides whether it is sent, as
/// `store::ingest` does. A row another run holds in flight keeps its payload and its claim: the
/// sighting says `Send`, and the claim ([`super::claim::claim`]) then finds it taken.
///
/// Other runs write the row meanwhile: the decision is made on the state read, and the row is
/// put back to pending only if it still has that state (a conditional update); when another run
/// answered it in between (done now), the row is read again and decided again. Without that, a
/// row another run had just circled was made pending again and sent once more.
pub async fn ingest(
    client: &impl GenericClient,
    run_id: i64,
    seq: u64,
    src: &SourceRow,
    retry_failed: bool,
) -> anyhow::Result<Sighting> {
    let r = &src.row;
    let key = r.key();
    let (line, seq) = (src.line as i64, seq as i64);
    loop {
        let stored = client
            .query_opt(
                &format!("SELECT {PAYLOAD}, state, failure FROM rows WHERE key = $1"),
                &[&key],
            )
            .await?
            .map(|row| {
                let state: String = row.get(9);
                let failure: Option<String> = row.get(10);
                (payload(&row, 0), state, failure)
            });
        let known = stored.as_ref().map(|(row, state, failure)| Known {
            row,
            state: State::parse(state).unwrap_or(State::Pending),
            failure: failure.as_deref().and_then(FailureKind::parse),
        });
        let sighting = model::sighting(known.as_ref(), r, retry_failed);
        match (&stored, &sighting) {
            (None, _) => {
                // A row another run inserted at the same moment: decided again as a known row.
                if insert_row(client, run_id, seq, src).await?.is_some() {
                    return Ok(sighting);
                }
                continue;
            }
            (Some((_, state, _)), Sighting::Send) if state != "in_flight" => {
                let changed = client
                    .execute(
                        "UPDATE rows SET state = 'pending', failure = NULL, merchant_name = $2,
                             store_name = $3, mall_group_label = $4, mall_label = $5,
                             updated_at = $6
                         WHERE key = $1 AND state = $7",
                        &[
                            &key,
                            &r.merchant_name,
                            &r.store_name,
                            &r.mall_group_label,
                            &r.mall_label,
                            &now(),
                            state,
                        ],
                    )
                    .await?;
                if changed == 0 {
                    continue;
                }
                move_to(client, run_id, seq, &src.file, line, &key).await?;
            }
            (Some(_), other) => {
                if let Sighting::Drifted(detail) = other {
                    insert_drift(client, run_id, &key, &src.file, line, detail).await?;
                }
                move_to(client, run_id, seq, &src.file, line, &key).await?;
            }
        }
        return Ok(sighting);
    }
}

async fn move_to(
    client: &impl GenericClient,
    run_id: i64,
    seq: i64,
    file: &str,
    line: i64,
    key: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE rows SET source_file = $2, source_line = $3, run_id = $4, seq = $5
             WHERE key = $1",
            &[&key, &file, &line, &run_id, &seq],
        )
        .await?;
    Ok(())
}

/// A row the ledger has not seen: pending. Returns its id; a row another run inserted first
/// (the same store in both sheets) is left as that run wrote it.
pub(crate) async fn insert_row(
    client: &impl GenericClient,
    run_id: i64,
    seq: i64,
    src: &SourceRow,
) -> anyhow::Result<Option<i64>> {
    let r = &src.row;
    let t = now();
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO rows (key, {PAYLOAD}, state, source_file, source_line, run_id, seq,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12, $13, $14,
                     $15, $15)
                 ON CONFLICT (key) DO NOTHING RETURNING id"
            ),
            &[
                &r.key(),
                &r.save_way.as_str(),
                &r.ipay_trade_no,
                &r.partner_id,
                &r.merchant_id,
                &r.merchant_name,
                &r.store_id,
                &r.store_name,
                &r.mall_group_label,
                &r.mall_label,
                &src.file,
                &(src.line as i64),
                &run_id,
                &seq,
                &t,
            ],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub(crate) async fn insert_drift(
    client: &impl GenericClient,
    run_id: i64,
    key: &str,
    file: &str,
    line: i64,
    detail: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO drift (run_id, key, source_file, source_line, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[&run_id, &key, &file, &line, &detail],
        )
        .await?;
    Ok(())
}

pub async fn reject(
    client: &impl GenericClient,
    run_id: i64,
    reject: &Reject,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO rejects (run_id, file, line, column_name, value, reason)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &run_id,
                &reject.file,
                &(reject.line as i64),
                &reject.column,
                &reject.value,
                &reject.reason,
            ],
        )
        .await?;
    Ok(())
}

/// Ends the run: what it still held in flight goes back to pending, possibly sent (its own rows
/// only, [`super::lease::recover_own`]), the counts are written and the lease is given up.
pub async fn finish_run(
    client: &mut tokio_postgres::Client,
    run_id: i64,
    end: RunEnd,
    c: &RunCounts,
    message: Option<&str>,
) -> anyhow::Result<RunCounts> {
    let tx = client.transaction().await?;
    super::lease::recover_own(&tx, run_id).await?;
    let drifted: i64 = tx
        .query_one("SELECT count(*) FROM drift WHERE run_id = $1", &[&run_id])
        .await?
        .get(0);
    let c = RunCounts {
        drifted: drifted as u64,
        ..c.clone()
    };
    let n = |v: u64| v as i64;
    tx.execute(
        "UPDATE runs SET ended_at = $2, outcome = $3, rows_read = $4, to_send = $5,
             succeeded = $6, already_circled = $7, failed = $8, rejected = $9, duplicates = $10,
             already_done = $11, drifted = $12, message = $13, sent = $14, unverified = $15,
             throttled = $16, lease_until = NULL
         WHERE id = $1",
        &[
            &run_id,
            &now(),
            &end.as_str(),
            &n(c.rows_read),
            &n(c.to_send),
            &n(c.succeeded),
            &n(c.already_circled),
            &n(c.failed),
            &n(c.rejected),
            &n(c.duplicates),
            &n(c.already_done),
            &n(c.drifted),
            &message,
            &n(c.sent),
            &n(c.unverified),
            &n(c.throttled),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}
