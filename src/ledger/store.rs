//! The SQL of the ledger, one function per thing a run does to it: begin a run, recover what a
//! killed run left in flight, take in a sheet row, mark a row in flight, record an answer, finish
//! the run, take in the side file. Each runs inside the caller's transaction (the writer groups
//! many into one commit) and is tested on its own against a temporary database.
//!
//! The decisions themselves are pure functions elsewhere (`model::sighting`,
//! `model::circled_with_earlier_payload`); this module stores what they decide.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::spill::Spilled;
use super::{RowId, now};
use crate::api::outcome::{Attempt, Outcome};
use crate::input::{Reject, Row, SaveWay, SourceRow};
use crate::model::{self, FailureKind, Known, RowUpdate, RunCounts, RunEnd, Sighting, State};

/// An answer as a worker hands it to the writer: the attempt, what it sent, and the row's new
/// state.
#[derive(Debug, Clone)]
pub struct Answered {
    pub run_id: i64,
    pub attempt_id: i64,
    pub row_id: RowId,
    /// The row as this attempt sent it.
    pub row: Row,
    pub attempt: Attempt,
    pub update: RowUpdate,
}

/// An input file as recorded with its run.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

pub fn begin_run(conn: &Connection, config: &str, files: &[FileInfo]) -> rusqlite::Result<i64> {
    // The run lock is held, so a run still marked running ended without saying so.
    conn.execute(
        "UPDATE runs SET outcome = 'crashed', ended_at = COALESCE(ended_at, ?1) WHERE outcome = 'running'",
        params![now()],
    )?;
    conn.execute(
        "INSERT INTO runs (started_at, config) VALUES (?1, ?2)",
        params![now(), config],
    )?;
    let run_id = conn.last_insert_rowid();
    for f in files {
        conn.execute(
            "INSERT INTO run_files (run_id, path, sha256, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, f.path, f.sha256, f.bytes as i64],
        )?;
    }
    Ok(run_id)
}

/// Rows left `in_flight` by a process that ended abruptly go back to `pending`, marked as
/// possibly sent (their open attempts become `lost`, and the first of them is what AlipayHK most
/// likely acted on). Returns how many rows.
pub fn recover(conn: &Connection) -> rusqlite::Result<u64> {
    let open: Vec<(i64, String)> = conn
        .prepare("SELECT id, key FROM attempts WHERE outcome IS NULL ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    conn.execute(
        "UPDATE attempts SET outcome = 'lost', maybe_processed = 1,
             error = 'the process ended while this request was in flight; its outcome is unknown'
         WHERE outcome IS NULL",
        [],
    )?;
    for (id, key) in &open {
        conn.prepare_cached(
            "UPDATE rows SET first_maybe_sent_attempt = COALESCE(first_maybe_sent_attempt, ?2)
             WHERE key = ?1",
        )?
        .execute(params![key, id])?;
    }
    let n = conn.execute(
        "UPDATE rows SET state = 'pending', maybe_sent = 1, updated_at = ?1 WHERE state = 'in_flight'",
        params![now()],
    )?;
    Ok(n as u64)
}

/// The nine columns of a row as sent (`save_way_type` … `mall_label`, in the table's order),
/// read from `first` on.
const PAYLOAD: &str = "save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, \
    store_id, store_name, mall_group_label, mall_label";

fn row_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Row> {
    let way: String = r.get(first)?;
    Ok(Row {
        save_way: SaveWay::parse(&way).unwrap_or(SaveWay::MerchantPms),
        ipay_trade_no: r.get(first + 1)?,
        partner_id: r.get(first + 2)?,
        merchant_id: r.get(first + 3)?,
        merchant_name: r.get(first + 4)?,
        store_id: r.get(first + 5)?,
        store_name: r.get(first + 6)?,
        mall_group_label: r.get(first + 7)?,
        mall_label: r.get(first + 8)?,
    })
}

/// What the ledger holds of an identity, for a new sighting of it.
struct Stored {
    row: Row,
    state: State,
    failure: Option<FailureKind>,
}

fn stored(conn: &Connection, key: &str) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(&format!(
        "SELECT {PAYLOAD}, state, failure FROM rows WHERE key = ?1"
    ))?
    .query_row([key], |r| {
        let state: String = r.get(9)?;
        let failure: Option<String> = r.get(10)?;
        Ok(Stored {
            row: row_at(r, 0)?,
            state: State::parse(&state).unwrap_or(State::Pending),
            failure: failure.as_deref().and_then(FailureKind::parse),
        })
    })
    .optional()
}

/// Records one sheet row (numbered `seq` in the run's input) and decides whether it is sent.
pub fn ingest(
    conn: &Connection,
    run_id: i64,
    seq: u64,
    src: &SourceRow,
    retry_failed: bool,
) -> rusqlite::Result<Sighting> {
    let key = src.row.key();
    let r = &src.row;
    let stored = stored(conn, &key)?;
    let known = stored.as_ref().map(|s| Known {
        row: &s.row,
        state: s.state,
        failure: s.failure,
    });
    let sighting = model::sighting(known.as_ref(), r, retry_failed);
    let t = now();
    match (&stored, &sighting) {
        (None, _) => insert_row(conn, run_id, seq, src)?,
        // Rows to send take the payload the sheet now gives and become pending again.
        (Some(_), Sighting::Send) => {
            conn.prepare_cached(
                "UPDATE rows SET state = 'pending', failure = NULL, merchant_name = ?3,
                     store_name = ?4, mall_group_label = ?5, mall_label = ?6, source_file = ?7,
                     source_line = ?8, run_id = ?1, seq = ?9, updated_at = ?10
                 WHERE key = ?2",
            )?
            .execute(params![
                run_id,
                key,
                r.merchant_name,
                r.store_name,
                r.mall_group_label,
                r.mall_label,
                src.file,
                src.line as i64,
                seq as i64,
                t
            ])?;
        }
        // Every other sighting only moves the row's source to this run's input.
        (Some(_), other) => {
            if let Sighting::Drifted(detail) = other {
                insert_drift(conn, run_id, &key, &src.file, src.line, detail)?;
            }
            conn.prepare_cached(
                "UPDATE rows SET source_file = ?3, source_line = ?4, run_id = ?1, seq = ?5 WHERE key = ?2",
            )?
            .execute(params![run_id, key, src.file, src.line as i64, seq as i64])?;
        }
    }
    Ok(sighting)
}

/// A row the ledger has not seen: pending, at its place in the run's input.
fn insert_row(conn: &Connection, run_id: i64, seq: u64, src: &SourceRow) -> rusqlite::Result<()> {
    let r = &src.row;
    conn.prepare_cached(
        "INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
             merchant_name, store_id, store_name, mall_group_label, mall_label, state,
             source_file, source_line, run_id, seq, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?14, ?15, ?15)",
    )?
    .execute(params![
        r.key(),
        r.save_way.as_str(),
        r.ipay_trade_no,
        r.partner_id,
        r.merchant_id,
        r.merchant_name,
        r.store_id,
        r.store_name,
        r.mall_group_label,
        r.mall_label,
        src.file,
        src.line as i64,
        run_id,
        seq as i64,
        now()
    ])?;
    Ok(())
}

fn insert_drift(
    conn: &Connection,
    run_id: i64,
    key: &str,
    file: &str,
    line: u64,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO drift (run_id, key, source_file, source_line, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![run_id, key, file, line as i64, detail])?;
    Ok(())
}

pub fn reject(conn: &Connection, run_id: i64, reject: &Reject) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rejects (run_id, file, line, column_name, value, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run_id,
        reject.file,
        reject.line as i64,
        reject.column,
        reject.value,
        reject.reason
    ])?;
    Ok(())
}

/// Marks a row in flight and opens its attempt, copying what will be sent; returns the attempt's
/// id. Only a `pending` row of this run is marked: `None` for a row another run took or that is
/// no longer pending, which must then not be sent.
pub fn mark_in_flight(conn: &Connection, run_id: i64, row: RowId) -> rusqlite::Result<Option<i64>> {
    let t = now();
    let changed = conn
        .prepare_cached(
            "UPDATE rows SET state = 'in_flight', attempts = attempts + 1, updated_at = ?3
             WHERE rowid = ?1 AND state = 'pending' AND run_id = ?2",
        )?
        .execute(params![row.0, run_id, t])?;
    if changed == 0 {
        return Ok(None);
    }
    conn.prepare_cached(
        "INSERT INTO attempts (key, run_id, attempt, started_at, sent_merchant_name,
             sent_store_name, sent_mall_group_label, sent_mall_label)
         SELECT key, ?2, attempts, ?3, merchant_name, store_name, mall_group_label, mall_label
         FROM rows WHERE rowid = ?1",
    )?
    .execute(params![row.0, run_id, t])?;
    Ok(Some(conn.last_insert_rowid()))
}

/// Undoes a mark whose request never left (the run stopped first): the row is pending again and
/// counts no attempt, so it is not taken for possibly sent.
pub fn unsend(conn: &Connection, attempt_id: i64, row: RowId) -> rusqlite::Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM attempts WHERE id = ?1 AND outcome IS NULL")?
        .execute([attempt_id])?;
    if deleted > 0 {
        conn.prepare_cached(
            "UPDATE rows SET state = 'pending', attempts = attempts - 1, updated_at = ?2
             WHERE rowid = ?1 AND state = 'in_flight'",
        )?
        .execute(params![row.0, now()])?;
    }
    Ok(())
}

/// Records what an attempt came to: every field of the answer with the attempt, and the row's
/// new state. A store found circled after an earlier attempt whose outcome was unknown is judged
/// against what that attempt sent: if the sheet changed since, the row keeps the earlier payload
/// (what AlipayHK most likely holds) and the change is recorded as drift.
pub fn record(conn: &Connection, a: &Answered) -> rusqlite::Result<()> {
    record_attempt(conn, a.attempt_id, &a.attempt)?;
    let mut update = a.update.clone();
    let mut kept_payload = None;
    if update.state == State::AlreadyCircled
        && update.ambiguous
        && let Some((earlier, file, line)) = first_maybe_sent(conn, a.row_id, &a.row)?
        && let Some(detail) = model::circled_with_earlier_payload(&earlier, &a.row)
    {
        insert_drift(conn, a.run_id, &a.row.key(), &file, line, &detail)?;
        update.result_message = Some(detail);
        kept_payload = Some(earlier);
    }
    update_row(
        conn,
        a.row_id,
        a.attempt_id,
        a.attempt.outcome.maybe_processed(),
        &update,
    )?;
    if let Some(p) = kept_payload {
        conn.prepare_cached(
            "UPDATE rows SET merchant_name = ?2, store_name = ?3, mall_group_label = ?4,
                 mall_label = ?5 WHERE rowid = ?1",
        )?
        .execute(params![
            a.row_id.0,
            p.merchant_name,
            p.store_name,
            p.mall_group_label,
            p.mall_label
        ])?;
    }
    Ok(())
}

fn record_attempt(conn: &Connection, attempt_id: i64, a: &Attempt) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE attempts SET latency_ms = ?2, latency_us = ?3, http_status = ?4, result_code = ?5,
             result_status = ?6, result_message = ?7, error = ?8, outcome = ?9,
             maybe_processed = ?10, pms_label = ?11, verified = ?12, response_body = ?13,
             tracer_id = ?14, response_time = ?15, response_signature = ?16
         WHERE id = ?1",
    )?
    .execute(params![
        attempt_id,
        a.latency.as_millis() as i64,
        a.latency.as_micros() as i64,
        a.http_status,
        a.result_code,
        a.result_status,
        a.result_message,
        a.error,
        a.outcome.kind(),
        a.outcome.maybe_processed(),
        a.pms_label,
        a.verified,
        a.response_body,
        a.tracer_id,
        a.response_time,
        a.response_signature
    ])?;
    Ok(())
}

/// The row's first attempt with an unknown outcome (if it was not this one): what it sent, and
/// where the row is in the sheet.
fn first_maybe_sent(
    conn: &Connection,
    row: RowId,
    now_sent: &Row,
) -> rusqlite::Result<Option<(Row, String, u64)>> {
    conn.prepare_cached(
        "SELECT a.sent_merchant_name, a.sent_store_name, a.sent_mall_group_label,
                a.sent_mall_label, r.source_file, r.source_line
         FROM rows r JOIN attempts a ON a.id = r.first_maybe_sent_attempt
         WHERE r.rowid = ?1 AND a.sent_mall_label IS NOT NULL",
    )?
    .query_row([row.0], |r| {
        let earlier = Row {
            merchant_name: r.get(0)?,
            store_name: r.get(1)?,
            mall_group_label: r.get(2)?,
            mall_label: r.get(3)?,
            ..now_sent.clone()
        };
        Ok((earlier, r.get(4)?, r.get::<_, i64>(5)? as u64))
    })
    .optional()
}

/// The row's new state after an answer. A done row is never moved back (only a label it lacks
/// is filled in).
fn update_row(
    conn: &Connection,
    row: RowId,
    attempt_id: i64,
    maybe_processed: bool,
    u: &RowUpdate,
) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE rows SET state = ?2, failure = ?3, ambiguous = ?4,
                 maybe_sent = (maybe_sent OR ?5), pms_label = COALESCE(?6, pms_label),
                 label_unverified = CASE WHEN ?6 IS NULL THEN label_unverified ELSE ?7 END,
                 answer_unverified = COALESCE(?14, answer_unverified),
                 result_code = ?8, result_message = ?9, tracer_id = COALESCE(?10, tracer_id),
                 first_maybe_sent_attempt = COALESCE(first_maybe_sent_attempt,
                     CASE WHEN ?11 THEN ?12 END),
                 updated_at = ?13
             WHERE rowid = ?1 AND state <> 'succeeded' AND state <> 'already_circled'",
        )?
        .execute(params![
            row.0,
            u.state.as_str(),
            u.failure.map(FailureKind::as_str),
            u.ambiguous,
            u.maybe_sent,
            u.pms_label,
            u.label_unverified,
            u.result_code,
            u.result_message,
            u.tracer_id,
            maybe_processed,
            attempt_id,
            now(),
            u.answer_unverified
        ])?;
    if changed == 0 && u.pms_label.is_some() {
        conn.prepare_cached(
            "UPDATE rows SET pms_label = ?2, label_unverified = ?3 WHERE rowid = ?1 AND pms_label IS NULL",
        )?
        .execute(params![row.0, u.pms_label, u.label_unverified])?;
    }
    Ok(())
}

/// Ends the run record. `drifted` is counted here: drift is found both when the sheet is read
/// and when an answer shows AlipayHK holds what an earlier request sent.
pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    end: RunEnd,
    c: &RunCounts,
    message: Option<&str>,
) -> rusqlite::Result<RunCounts> {
    let drifted: i64 = conn.query_row(
        "SELECT count(*) FROM drift WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let c = RunCounts {
        drifted: drifted as u64,
        ..c.clone()
    };
    conn.execute(
        "UPDATE runs SET ended_at = ?2, outcome = ?3, rows_read = ?4, to_send = ?5, succeeded = ?6,
             already_circled = ?7, failed = ?8, rejected = ?9, duplicates = ?10, already_done = ?11,
             drifted = ?12, message = ?13, sent = ?14, unverified = ?15, throttled = ?16
         WHERE id = ?1",
        params![
            run_id,
            now(),
            end.as_str(),
            c.rows_read as i64,
            c.to_send as i64,
            c.succeeded as i64,
            c.already_circled as i64,
            c.failed as i64,
            c.rejected as i64,
            c.duplicates as i64,
            c.already_done as i64,
            c.drifted as i64,
            message,
            c.sent as i64,
            c.unverified as i64,
            c.throttled as i64
        ],
    )?;
    Ok(c)
}

/// Takes in one answer from the side file: the row is created if this ledger lacks it, the
/// attempt updated (or added, when this ledger does not have it), the row moved to its state.
pub fn take_in(conn: &Connection, s: &Spilled, from: &str) -> rusqlite::Result<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT id FROM runs WHERE id = ?1")?
        .query_row([s.run_id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        conn.execute(
            "INSERT INTO runs (id, started_at, ended_at, outcome, config, message)
             VALUES (?1, ?2, ?2, 'aborted', '{}', ?3)",
            params![s.run_id, now(), format!("answers taken in from {from}")],
        )?;
    }
    let (row, key) = (&s.row, s.key());
    let row_id: Option<i64> = conn
        .prepare_cached("SELECT rowid FROM rows WHERE key = ?1")?
        .query_row([&key], |r| r.get(0))
        .optional()?;
    let row_id = match row_id {
        Some(id) => RowId(id),
        None => {
            let src = SourceRow {
                file: s.source_file.clone(),
                line: s.source_line,
                row: row.clone(),
            };
            insert_row(conn, s.run_id, 0, &src)?;
            RowId(conn.last_insert_rowid())
        }
    };
    let present: Option<i64> = conn
        .prepare_cached("SELECT id FROM attempts WHERE id = ?1 AND key = ?2")?
        .query_row(params![s.attempt_id, key], |r| r.get(0))
        .optional()?;
    let attempt_id = match present {
        Some(id) => id,
        None => {
            conn.execute(
                "INSERT INTO attempts (key, run_id, attempt, started_at, sent_merchant_name,
                     sent_store_name, sent_mall_group_label, sent_mall_label)
                 VALUES (?1, ?2, (SELECT attempts FROM rows WHERE key = ?1), ?3, ?4, ?5, ?6, ?7)",
                params![
                    key,
                    s.run_id,
                    now(),
                    row.merchant_name,
                    row.store_name,
                    row.mall_group_label,
                    row.mall_label
                ],
            )?;
            conn.last_insert_rowid()
        }
    };
    record_attempt(conn, attempt_id, &s.attempt)?;
    // A row still marked in flight by the run that spilled it takes its recorded state.
    update_row(
        conn,
        row_id,
        attempt_id,
        s.attempt.outcome.maybe_processed(),
        &s.update,
    )
}

/// Every answer a run recorded, as the side file keeps them: what a run whose ledger file was
/// deleted or replaced under it still holds in the file it had open.
pub fn answers_of_run(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Spilled>> {
    let mut st = conn.prepare(
        "SELECT a.id, r.save_way_type, r.ipay_trade_no, r.partner_id, r.merchant_id,
                r.merchant_name, r.store_id, r.store_name, r.mall_group_label, r.mall_label,
                r.source_file, r.source_line, a.outcome, a.maybe_processed, a.http_status,
                a.result_code, a.result_status, a.result_message, a.pms_label, a.verified,
                a.error, a.tracer_id, a.response_body, a.response_time, a.response_signature,
                COALESCE(a.latency_us, a.latency_ms * 1000, 0),
                r.state, r.failure, r.ambiguous, r.maybe_sent, r.pms_label, r.label_unverified,
                r.result_code, r.result_message, r.tracer_id, r.answer_unverified
         FROM attempts a JOIN rows r ON r.key = a.key
         WHERE a.run_id = ?1 AND a.outcome IS NOT NULL AND a.outcome <> 'lost'
         ORDER BY a.id",
    )?;
    let rows = st.query_map([run_id], |r| {
        let kind: String = r.get(12)?;
        let (code, message, error, label): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = (r.get(15)?, r.get(17)?, r.get(20)?, r.get(18)?);
        let state: String = r.get(26)?;
        let failure: Option<String> = r.get(27)?;
        Ok(Spilled {
            run_id,
            attempt_id: r.get(0)?,
            row: row_at(r, 1)?,
            source_file: r.get(10)?,
            source_line: r.get::<_, i64>(11)? as u64,
            attempt: Attempt {
                outcome: Outcome::from_stored(
                    &kind,
                    r.get(13)?,
                    code.as_deref(),
                    error.as_deref().or(message.as_deref()),
                    label.as_deref(),
                ),
                http_status: r.get(14)?,
                result_code: code,
                result_status: r.get(16)?,
                result_message: message,
                pms_label: label,
                verified: r.get(19)?,
                error,
                tracer_id: r.get(21)?,
                response_body: r.get(22)?,
                response_time: r.get(23)?,
                response_signature: r.get(24)?,
                latency: std::time::Duration::from_micros(r.get::<_, i64>(25)?.max(0) as u64),
            },
            update: RowUpdate {
                // A row this run left in flight is recovered as possibly sent by the next one.
                state: State::parse(&state)
                    .filter(|s| *s != State::InFlight)
                    .unwrap_or(State::Pending),
                failure: failure.as_deref().and_then(FailureKind::parse),
                ambiguous: r.get(28)?,
                maybe_sent: r.get(29)?,
                pms_label: r.get(30)?,
                label_unverified: r.get(31)?,
                answer_unverified: Some(r.get(35)?),
                result_code: r.get(32)?,
                result_message: r.get(33)?,
                tracer_id: r.get(34)?,
            },
        })
    })?;
    rows.collect()
}

/// An answer kept from an earlier run because its signature did not verify, for a row that is
/// not done: `run` verifies these again with the key it has now, before sending anything.
#[derive(Debug, Clone)]
pub struct KeptAnswer {
    pub attempt_id: i64,
    pub run_id: i64,
    pub row_id: RowId,
    pub row: Row,
    pub body: Vec<u8>,
    pub response_time: Option<String>,
    pub response_signature: Option<String>,
    pub maybe_sent: bool,
}

pub fn kept_unverified(conn: &Connection) -> rusqlite::Result<Vec<KeptAnswer>> {
    let mut st = conn.prepare(
        "SELECT a.id, a.run_id, r.rowid, a.response_body, a.response_time, a.response_signature,
                r.save_way_type, r.ipay_trade_no, r.partner_id, r.merchant_id, r.merchant_name,
                r.store_id, r.store_name, r.mall_group_label, r.mall_label, r.maybe_sent
         FROM attempts a JOIN rows r ON r.key = a.key
         WHERE a.verified = 0 AND r.state <> 'succeeded' AND r.state <> 'already_circled'
           AND a.response_body IS NOT NULL
         ORDER BY a.id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(KeptAnswer {
            attempt_id: r.get(0)?,
            run_id: r.get(1)?,
            row_id: RowId(r.get(2)?),
            body: r.get(3)?,
            response_time: r.get(4)?,
            response_signature: r.get(5)?,
            row: row_at(r, 6)?,
            maybe_sent: r.get(15)?,
        })
    })?;
    rows.collect()
}

/// An answer kept unverified verifies now: the attempt says so and the row takes the state the
/// answer gives it, as if it had been believed when it arrived.
pub fn accept_reverified(
    conn: &Connection,
    kept: &KeptAnswer,
    attempt: &Attempt,
    update: &RowUpdate,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE attempts SET verified = 1, outcome = ?2, pms_label = ?3,
             error = 'not verified when it arrived; verified with the alipay_public_key of a later run'
         WHERE id = ?1",
    )?
    .execute(params![kept.attempt_id, attempt.outcome.kind(), attempt.pms_label])?;
    update_row(conn, kept.row_id, kept.attempt_id, false, update)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::outcome::Outcome;

    fn ledger() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_unlocked(&dir.path().join("l.db")).unwrap();
        (dir, conn)
    }

    fn row(store: &str, mall: &str) -> Row {
        Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088".into(),
            merchant_id: "M1".into(),
            merchant_name: "店".into(),
            store_id: store.into(),
            store_name: String::new(),
            mall_group_label: "1".into(),
            mall_label: mall.into(),
        }
    }

    fn src(r: Row, line: u64) -> SourceRow {
        SourceRow {
            file: "s.csv".into(),
            line,
            row: r,
        }
    }

    fn row_id(conn: &Connection, key: &str) -> RowId {
        RowId(
            conn.query_row("SELECT rowid FROM rows WHERE key = ?1", [key], |r| r.get(0))
                .unwrap(),
        )
    }

    fn q<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> T {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn answered(run_id: i64, attempt_id: i64, row_id: RowId, r: Row, o: Outcome) -> Answered {
        let label = match &o {
            Outcome::Success { pms_label } => Some(pms_label.clone()),
            _ => None,
        };
        let state = match &o {
            Outcome::Success { .. } => State::Succeeded,
            Outcome::AlreadyCircled => State::AlreadyCircled,
            _ => State::Pending,
        };
        Answered {
            run_id,
            attempt_id,
            row_id,
            row: r,
            attempt: Attempt {
                pms_label: label.clone(),
                verified: Some(true),
                outcome: o,
                latency: Duration::from_micros(420),
                tracer_id: Some("t1".into()),
                ..Attempt::default()
            },
            update: RowUpdate {
                state,
                failure: None,
                ambiguous: state == State::AlreadyCircled,
                maybe_sent: state == State::AlreadyCircled,
                pms_label: label,
                label_unverified: false,
                answer_unverified: Some(false),
                result_code: Some("X".into()),
                result_message: None,
                tracer_id: Some("t1".into()),
            },
        }
    }

    #[test]
    fn ingest_decides_send_done_drift_and_failed_before() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let r = row("S1", "11");
        assert_eq!(
            ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap(),
            Sighting::Send
        );
        conn.execute("UPDATE rows SET state = 'succeeded'", [])
            .unwrap();
        assert_eq!(
            ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap(),
            Sighting::Done
        );
        assert!(matches!(
            ingest(&conn, run, 1, &src(row("S1", "12"), 2), false).unwrap(),
            Sighting::Drifted(_)
        ));
        assert_eq!(q::<i64>(&conn, "SELECT count(*) FROM drift"), 1);
        // A drifted row keeps what was done, not what the sheet now says.
        assert_eq!(q::<String>(&conn, "SELECT mall_label FROM rows"), "11");
        conn.execute(
            "UPDATE rows SET state = 'failed', failure = 'permanent'",
            [],
        )
        .unwrap();
        assert_eq!(
            ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap(),
            Sighting::FailedBefore
        );
        assert_eq!(
            ingest(&conn, run, 1, &src(r, 2), true).unwrap(),
            Sighting::Send
        );
        assert_eq!(q::<String>(&conn, "SELECT state FROM rows"), "pending");
    }

    #[test]
    fn only_a_pending_row_of_this_run_is_marked_and_a_mark_can_be_undone() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let r = row("S1", "11");
        ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap();
        let id = row_id(&conn, &r.key());
        let other_run = begin_run(&conn, "{}", &[]).unwrap();
        assert_eq!(mark_in_flight(&conn, other_run, id).unwrap(), None);
        let attempt = mark_in_flight(&conn, run, id).unwrap().unwrap();
        assert_eq!(
            mark_in_flight(&conn, run, id).unwrap(),
            None,
            "already in flight"
        );
        assert_eq!(
            q::<String>(&conn, "SELECT sent_mall_label FROM attempts"),
            "11",
            "what is sent is kept with the attempt"
        );
        unsend(&conn, attempt, id).unwrap();
        assert_eq!(q::<String>(&conn, "SELECT state FROM rows"), "pending");
        assert_eq!(q::<i64>(&conn, "SELECT attempts FROM rows"), 0);
        assert_eq!(q::<i64>(&conn, "SELECT count(*) FROM attempts"), 0);
    }

    #[test]
    fn recover_marks_rows_left_in_flight_as_possibly_sent() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let r = row("S1", "11");
        ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap();
        let id = row_id(&conn, &r.key());
        let attempt = mark_in_flight(&conn, run, id).unwrap().unwrap();
        assert_eq!(recover(&conn).unwrap(), 1);
        assert_eq!(q::<String>(&conn, "SELECT state FROM rows"), "pending");
        assert!(q::<bool>(&conn, "SELECT maybe_sent FROM rows"));
        assert_eq!(
            q::<i64>(&conn, "SELECT first_maybe_sent_attempt FROM rows"),
            attempt
        );
        assert_eq!(q::<String>(&conn, "SELECT outcome FROM attempts"), "lost");
    }

    #[test]
    fn record_keeps_every_field_and_never_moves_a_done_row_back() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let r = row("S1", "11");
        ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap();
        let id = row_id(&conn, &r.key());
        let attempt = mark_in_flight(&conn, run, id).unwrap().unwrap();
        let a = answered(
            run,
            attempt,
            id,
            r.clone(),
            Outcome::Success {
                pms_label: "2026".into(),
            },
        );
        record(&conn, &a).unwrap();
        assert_eq!(q::<String>(&conn, "SELECT pms_label FROM rows"), "2026");
        assert_eq!(q::<String>(&conn, "SELECT tracer_id FROM rows"), "t1");
        assert_eq!(q::<i64>(&conn, "SELECT latency_us FROM attempts"), 420);
        // A late, contradicting record (say, taken in twice) does not undo success.
        let mut late = a.clone();
        late.update.state = State::Failed;
        late.update.pms_label = None;
        record(&conn, &late).unwrap();
        assert_eq!(q::<String>(&conn, "SELECT state FROM rows"), "succeeded");
    }

    #[test]
    fn circled_after_an_unknown_outcome_with_another_mall_is_drift_against_what_was_sent() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let first = row("S1", "11");
        ingest(&conn, run, 1, &src(first.clone(), 2), false).unwrap();
        let id = row_id(&conn, &first.key());
        mark_in_flight(&conn, run, id).unwrap().unwrap();
        recover(&conn).unwrap(); // killed while in flight with mall 11
        // The sheet now says mall 12; the row is sent again and found circled.
        let run2 = begin_run(&conn, "{}", &[]).unwrap();
        let changed = row("S1", "12");
        assert_eq!(
            ingest(&conn, run2, 1, &src(changed.clone(), 2), false).unwrap(),
            Sighting::Send
        );
        let attempt = mark_in_flight(&conn, run2, id).unwrap().unwrap();
        record(
            &conn,
            &answered(run2, attempt, id, changed, Outcome::AlreadyCircled),
        )
        .unwrap();
        assert_eq!(
            q::<String>(&conn, "SELECT state FROM rows"),
            "already_circled"
        );
        assert_eq!(
            q::<String>(&conn, "SELECT mall_label FROM rows"),
            "11",
            "the row keeps what AlipayHK most likely holds"
        );
        let detail: String = q(&conn, "SELECT detail FROM drift WHERE run_id = 2");
        assert!(detail.contains("mall_label \"11\" -> \"12\""), "{detail}");
        let counts =
            finish_run(&conn, run2, RunEnd::Completed, &RunCounts::default(), None).unwrap();
        assert_eq!(counts.drifted, 1);
    }

    #[test]
    fn the_side_file_is_taken_in_even_by_a_ledger_without_the_row() {
        let (_d, conn) = ledger();
        let run = begin_run(&conn, "{}", &[]).unwrap();
        let r = row("S1", "11");
        ingest(&conn, run, 1, &src(r.clone(), 2), false).unwrap();
        let id = row_id(&conn, &r.key());
        let attempt = mark_in_flight(&conn, run, id).unwrap().unwrap();
        let a = answered(
            run,
            attempt,
            id,
            r.clone(),
            Outcome::Success {
                pms_label: "2026".into(),
            },
        );
        let spilled = Spilled::new(&a, "s.csv".into(), 2);
        take_in(&conn, &spilled, "f").unwrap();
        take_in(&conn, &spilled, "f").unwrap(); // twice: the same result
        assert_eq!(q::<String>(&conn, "SELECT state FROM rows"), "succeeded");
        assert_eq!(q::<i64>(&conn, "SELECT count(*) FROM attempts"), 1);

        let (_d2, other) = ledger();
        take_in(&other, &spilled, "f").unwrap();
        assert_eq!(q::<String>(&other, "SELECT pms_label FROM rows"), "2026");
        assert_eq!(q::<String>(&other, "SELECT state FROM rows"), "succeeded");
        assert_eq!(
            q::<String>(&other, "SELECT outcome FROM attempts"),
            "success"
        );
        // And what a run recorded reads back as the same answers.
        let back = answers_of_run(&conn, run).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].attempt.pms_label.as_deref(), Some("2026"));
        assert_eq!(back[0].attempt.outcome.kind(), "success");
        assert_eq!(back[0].update.state, State::Succeeded);
    }
}
