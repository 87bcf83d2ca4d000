//! The claim and the fence. A run claims a row by marking it in flight: one statement, a CTE
//! that locks the row `FOR UPDATE SKIP LOCKED` only while it is pending and the run's lease is
//! live, then the mark and the attempt it opens. It commits before the request leaves, so a row
//! is sent by at most one run at a time; a row another run is claiming (locked) or holds (in
//! flight) is skipped (`None`), to be looked at again at the end.
//!
//! The answer is written to the row only by the attempt that holds the claim (`claim_run`,
//! `claim_attempt`), or, late, while no run holds the row ([`Fence::Unclaimed`]): an answer that
//! comes back after its run's lease expired and the row was swept is the row's answer as long as
//! nobody claimed the row since; once another run holds it (or it is done), the answer is kept
//! with its attempt, a label it brings is put on a row that has none, and the row's state is
//! left to the claim's holder. The same rule takes in the answers of a side file
//! ([`super::late`]) and the kept answers that verify now.

use tokio_postgres::GenericClient;

use super::runs::insert_drift;
use crate::api::outcome::{Attempt, Outcome};
use crate::input::Row;
use crate::ledger::store::{Answered, KeptAnswer, Verdict};
use crate::ledger::{Claimed, now};
use crate::model::{self, FailureKind, RowUpdate, State};

/// Whether an answer was written to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The attempt held the claim: the row took the answer.
    Held,
    /// The attempt no longer held the claim, but no run holds the row and it is not done (its
    /// run's lease expired and the sweep gave it back): the row took the answer, late, and is not
    /// sent again for nothing.
    Unclaimed,
    /// Another attempt holds the row, or it is done: the answer is kept with its attempt only
    /// (and a label the row lacks is put on it).
    Lost,
}

impl Fence {
    /// The fence for attempt `attempt_id` of run `run_id`, from the row as locked.
    fn of(state: &str, claim: (Option<i64>, Option<i64>), run_id: i64, attempt_id: i64) -> Fence {
        match claim {
            (Some(run), Some(attempt)) if run == run_id && attempt == attempt_id => Fence::Held,
            (None, _) if !State::parse(state).is_some_and(State::is_done) => Fence::Unclaimed,
            _ => Fence::Lost,
        }
    }

    /// Whether the row takes the answer.
    pub fn writes_row(self) -> bool {
        matches!(self, Fence::Held | Fence::Unclaimed)
    }
}

/// Claims row `row` for run `run_id` and opens its attempt; returns the attempt's id with the
/// row's `maybe_sent` as it is now, or `None` when the row is not pending, another run is
/// claiming it, or the run's lease is not live.
pub async fn claim(
    client: &impl GenericClient,
    run_id: i64,
    row: i64,
) -> anyhow::Result<Option<Claimed>> {
    let found = client
        .query_opt(
            "WITH c AS (
                 SELECT r.id FROM rows r
                 WHERE r.id = $1 AND r.state = 'pending'
                   AND EXISTS (SELECT 1 FROM runs u WHERE u.id = $2 AND u.outcome = 'running'
                       AND u.lease_until > now())
                 FOR UPDATE OF r SKIP LOCKED
             ), m AS (
                 UPDATE rows r SET state = 'in_flight', attempts = r.attempts + 1,
                     claim_run = $2,
                     claim_attempt = nextval(pg_get_serial_sequence('attempts', 'id')),
                     updated_at = $3
                 FROM c WHERE r.id = c.id
                 RETURNING r.key, r.attempts, r.claim_attempt, r.merchant_name, r.store_name,
                     r.mall_group_label, r.mall_label, r.maybe_sent
             ), i AS (
                 INSERT INTO attempts (id, key, run_id, attempt, started_at, sent_merchant_name,
                     sent_store_name, sent_mall_group_label, sent_mall_label)
                 SELECT claim_attempt, key, $2, attempts, $3, merchant_name, store_name,
                     mall_group_label, mall_label
                 FROM m RETURNING id
             )
             SELECT i.id, m.maybe_sent FROM i, m",
            &[&row, &run_id, &now()],
        )
        .await?;
    Ok(found.map(|r| Claimed {
        attempt: r.get(0),
        maybe_sent: r.get(1),
    }))
}

/// Undoes a claim whose request never left: the row is pending again and counts no attempt.
pub async fn unsend(client: &impl GenericClient, attempt_id: i64, row: i64) -> anyhow::Result<()> {
    let deleted = client
        .execute(
            "DELETE FROM attempts WHERE id = $1 AND outcome IS NULL",
            &[&attempt_id],
        )
        .await?;
    if deleted > 0 {
        client
            .execute(
                "UPDATE rows SET state = 'pending', attempts = attempts - 1, claim_run = NULL,
                     claim_attempt = NULL, updated_at = $3
                 WHERE id = $1 AND state = 'in_flight' AND claim_attempt = $2",
                &[&row, &attempt_id, &now()],
            )
            .await?;
    }
    Ok(())
}

/// Records what an attempt came to, as `store::record` does (every field kept with the attempt,
/// a label another store holds not believed, a store circled after an unknown outcome judged
/// against what that attempt sent), the row fenced ([`Fence`]); one transaction.
pub async fn record(
    client: &mut tokio_postgres::Client,
    a: &Answered,
) -> anyhow::Result<(Verdict, Fence)> {
    let tx = client.transaction().await?;
    let recorded = record_in(&tx, a).await?;
    tx.commit().await?;
    Ok(recorded)
}

/// The row `row` locked until the transaction ends, and the fence it sets for an attempt.
async fn lock_row(
    tx: &tokio_postgres::Transaction<'_>,
    row: i64,
    run_id: i64,
    attempt_id: i64,
) -> anyhow::Result<Fence> {
    let found = tx
        .query_opt(
            "SELECT state, claim_run, claim_attempt FROM rows WHERE id = $1 FOR UPDATE",
            &[&row],
        )
        .await?;
    Ok(found.map_or(Fence::Lost, |r| {
        Fence::of(r.get(0), (r.get(1), r.get(2)), run_id, attempt_id)
    }))
}

/// [`record`] inside the caller's transaction (the side file's take-in writes many in one).
pub(crate) async fn record_in(
    tx: &tokio_postgres::Transaction<'_>,
    a: &Answered,
) -> anyhow::Result<(Verdict, Fence)> {
    let row = a.row_id.0;
    let fence = lock_row(tx, row, a.run_id, a.attempt_id).await?;
    if let Outcome::Success { pms_label } = &a.attempt.outcome
        && let Some(key) = label_holder(tx, pms_label, row).await?
    {
        let (kept, update) = crate::ledger::store::label_held_by(&a.attempt, pms_label, &key);
        record_attempt(tx, a.attempt_id, &kept).await?;
        if fence.writes_row() {
            update_row(tx, a, true, &update).await?;
        }
        return Ok((Verdict::LabelHeldBy { key }, fence));
    }
    record_attempt(tx, a.attempt_id, &a.attempt).await?;
    if !fence.writes_row() {
        // The row is another attempt's now (or done): only a label it lacks is filled in.
        if let Some(label) = &a.update.pms_label {
            tx.execute(
                "UPDATE rows SET pms_label = $2, label_unverified = $3
                 WHERE id = $1 AND pms_label IS NULL",
                &[&row, label, &a.update.label_unverified],
            )
            .await?;
        }
        return Ok((Verdict::Kept, fence));
    }
    let mut update = a.update.clone();
    let mut kept_payload = None;
    if update.state == State::AlreadyCircled
        && update.ambiguous
        && let Some((earlier, file, line)) = first_maybe_sent(tx, row, &a.row).await?
        && let Some(detail) = model::circled_with_earlier_payload(&earlier, &a.row)
    {
        insert_drift(tx, a.run_id, &a.row.key(), &file, line, &detail).await?;
        update.result_message = Some(detail);
        kept_payload = Some(earlier);
    }
    update_row(tx, a, a.attempt.outcome.maybe_processed(), &update).await?;
    if let Some(p) = kept_payload {
        tx.execute(
            "UPDATE rows SET merchant_name = $2, store_name = $3, mall_group_label = $4,
                 mall_label = $5
             WHERE id = $1",
            &[
                &row,
                &p.merchant_name,
                &p.store_name,
                &p.mall_group_label,
                &p.mall_label,
            ],
        )
        .await?;
    }
    Ok((Verdict::Kept, fence))
}

/// The key of the row other than `row` that holds `label` as believed, if any.
async fn label_holder(
    client: &impl GenericClient,
    label: &str,
    row: i64,
) -> anyhow::Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT key FROM rows WHERE pms_label = $1 AND NOT label_unverified AND id <> $2",
            &[&label, &row],
        )
        .await?
        .map(|r| r.get(0)))
}

/// An answer kept unverified verifies now with the run's key: the attempt says so, and the row
/// takes the state the answer gives it if no run holds it (the fence of a late answer), as
/// `store::accept_reverified` does. `false` when the row is another run's now (left to it).
pub async fn accept_reverified(
    client: &mut tokio_postgres::Client,
    kept: &KeptAnswer,
    attempt: &Attempt,
    update: &RowUpdate,
) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    let row = kept.row_id.0;
    let fence = lock_row(&tx, row, kept.run_id, kept.attempt_id).await?;
    if !fence.writes_row() {
        return Ok(false);
    }
    let a = Answered {
        run_id: kept.run_id,
        attempt_id: kept.attempt_id,
        row_id: kept.row_id,
        row: kept.row.clone(),
        attempt: attempt.clone(),
        update: update.clone(),
    };
    // A success whose label another store holds is not believed now either.
    let held_by = match &attempt.outcome {
        Outcome::Success { pms_label } => label_holder(&tx, pms_label, row)
            .await?
            .map(|key| crate::ledger::store::label_held_by(attempt, pms_label, &key)),
        _ => None,
    };
    let (attempt, update) = held_by
        .as_ref()
        .map_or((attempt, update), |(refused, update)| (refused, update));
    write_reverified(&tx, kept.attempt_id, attempt).await?;
    update_row(&tx, &a, false, update).await?;
    tx.commit().await?;
    Ok(true)
}

/// A kept attempt verified now: what it came to (its error, when it is not believed after all);
/// the rest of what was recorded when it arrived (latency, status, body) stays.
async fn write_reverified(
    client: &impl GenericClient,
    attempt_id: i64,
    a: &Attempt,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE attempts SET verified = true, outcome = $2, pms_label = $3,
                 error = COALESCE($4, 'not verified when it arrived; verified with the \
                     alipay_public_key of a later run')
             WHERE id = $1",
            &[&attempt_id, &a.outcome.kind(), &a.pms_label, &a.error],
        )
        .await?;
    Ok(())
}

async fn record_attempt(
    client: &impl GenericClient,
    attempt_id: i64,
    a: &Attempt,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE attempts SET latency_ms = $2, latency_us = $3, http_status = $4,
                 result_code = $5, result_status = $6, result_message = $7, error = $8,
                 outcome = $9, maybe_processed = $10, pms_label = $11, verified = $12,
                 response_body = $13, tracer_id = $14, response_time = $15,
                 response_signature = $16
             WHERE id = $1",
            &[
                &attempt_id,
                &(a.latency.as_millis() as i64),
                &(a.latency.as_micros() as i64),
                &a.http_status.map(i64::from),
                &a.result_code,
                &a.result_status,
                &a.result_message,
                &a.error,
                &a.outcome.kind(),
                &a.outcome.maybe_processed(),
                &a.pms_label,
                &a.verified,
                &a.response_body,
                &a.tracer_id,
                &a.response_time,
                &a.response_signature,
            ],
        )
        .await?;
    Ok(())
}

/// The row's first attempt with an unknown outcome: what it sent, and where the row is.
async fn first_maybe_sent(
    client: &impl GenericClient,
    row: i64,
    now_sent: &Row,
) -> anyhow::Result<Option<(Row, String, i64)>> {
    let found = client
        .query_opt(
            "SELECT a.sent_merchant_name, a.sent_store_name, a.sent_mall_group_label,
                 a.sent_mall_label, r.source_file, r.source_line
             FROM rows r JOIN attempts a ON a.id = r.first_maybe_sent_attempt
             WHERE r.id = $1 AND a.sent_mall_label IS NOT NULL",
            &[&row],
        )
        .await?;
    Ok(found.map(|r| {
        let earlier = Row {
            merchant_name: r.get(0),
            store_name: r.get(1),
            mall_group_label: r.get(2),
            mall_label: r.get(3),
            ..now_sent.clone()
        };
        (earlier, r.get(4), r.get(5))
    }))
}

/// The row's new state after an answer, while the attempt holds the claim, which the answer
/// releases, or while no run holds the row (the fence, [`Fence::writes_row`]). A done row is
/// never moved back.
async fn update_row(
    client: &impl GenericClient,
    a: &Answered,
    maybe_processed: bool,
    u: &RowUpdate,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE rows SET state = $4, failure = $5, ambiguous = $6,
                 maybe_sent = (maybe_sent OR $7), pms_label = COALESCE($8, pms_label),
                 label_unverified = CASE WHEN $8::text IS NULL THEN label_unverified ELSE $9 END,
                 answer_unverified = COALESCE($10, answer_unverified),
                 result_code = $11, result_message = $12, tracer_id = COALESCE($13, tracer_id),
                 first_maybe_sent_attempt = COALESCE(first_maybe_sent_attempt,
                     CASE WHEN $14 THEN $3 END),
                 claim_run = NULL, claim_attempt = NULL, updated_at = $15
             WHERE id = $1 AND ((state = 'in_flight' AND claim_run = $2 AND claim_attempt = $3)
                 OR (claim_run IS NULL AND state NOT IN ('succeeded', 'already_circled')))",
            &[
                &a.row_id.0,
                &a.run_id,
                &a.attempt_id,
                &u.state.as_str(),
                &u.failure.map(FailureKind::as_str),
                &u.ambiguous,
                &u.maybe_sent,
                &u.pms_label,
                &u.label_unverified,
                &u.answer_unverified,
                &u.result_code,
                &u.result_message,
                &u.tracer_id,
                &maybe_processed,
                &now(),
            ],
        )
        .await?;
    Ok(())
}
