//! The SQL of the ledger, one function per thing a run does to it: begin a run, recover what a
//! killed run left in flight, take in a sheet row, mark a row in flight, record an answer, finish
//! the run, take in the side file. Each runs inside the caller's transaction (the writer groups
//! many into one commit) and is tested on its own against a temporary database.
//!
//! The decisions themselves are pure functions elsewhere (`model::sighting`,
//! `model::circled_with_earlier_payload`); this module stores what they decide. It decides one
//! thing itself, because only the ledger knows every store: a `pmsLabel` another store holds is
//! never believed for a second one (a proxy replaying a genuine answer), whatever path the answer
//! comes by (a worker, the side file, a kept answer verified again).

use rusqlite::{Connection, OptionalExtension as _, named_params};

use super::spill::Spilled;
use super::sql::{done, payload, payload_columns};
use super::{RowId, now};
use crate::api::outcome::{Attempt, Outcome};
use crate::input::{Reject, Row, SourceRow};
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

/// What the ledger made of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded as the worker decided.
    Kept,
    /// A success whose `pmsLabel` the store `key` already holds: not this request's answer (a
    /// replay). The attempt is kept as `not_this_request` with what the answer said, label
    /// included; the row is pending again, possibly sent, and is sent again.
    LabelHeldBy { key: String },
}

/// An input file as recorded with its run.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

pub fn begin_run(conn: &Connection, config: &str, files: &[FileInfo]) -> rusqlite::Result<i64> {
    let t = now();
    // The run lock is held, so a run still marked running ended without saying so.
    conn.execute(
        "UPDATE runs SET outcome = 'crashed', ended_at = COALESCE(ended_at, :now)
         WHERE outcome = 'running'",
        named_params! {":now": t},
    )?;
    conn.execute(
        "INSERT INTO runs (started_at, config) VALUES (:now, :config)",
        named_params! {":now": t, ":config": config},
    )?;
    let run_id = conn.last_insert_rowid();
    for f in files {
        conn.execute(
            "INSERT INTO run_files (run_id, path, sha256, bytes)
             VALUES (:run_id, :path, :sha256, :bytes)",
            named_params! {
                ":run_id": run_id,
                ":path": f.path,
                ":sha256": f.sha256,
                ":bytes": f.bytes as i64,
            },
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
        .query_map([], |r| Ok((r.get("id")?, r.get("key")?)))?
        .collect::<Result<_, _>>()?;
    conn.execute(
        "UPDATE attempts SET outcome = 'lost', maybe_processed = 1,
             error = 'the process ended while this request was in flight; its outcome is unknown'
         WHERE outcome IS NULL",
        [],
    )?;
    for (id, key) in &open {
        conn.prepare_cached(
            "UPDATE rows SET first_maybe_sent_attempt = COALESCE(first_maybe_sent_attempt, :attempt)
             WHERE key = :key",
        )?
        .execute(named_params! {":key": key, ":attempt": id})?;
    }
    let n = conn.execute(
        "UPDATE rows SET state = 'pending', maybe_sent = 1, updated_at = :now
         WHERE state = 'in_flight'",
        named_params! {":now": now()},
    )?;
    Ok(n as u64)
}

/// What the ledger holds of an identity, for a new sighting of it.
struct Stored {
    row: Row,
    state: State,
    failure: Option<FailureKind>,
}

const STORED: &str = concat!(
    "SELECT ",
    payload_columns!(),
    ", state, failure FROM rows WHERE key = :key"
);

fn stored(conn: &Connection, key: &str) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(STORED)?
        .query_row(named_params! {":key": key}, |r| {
            let state: String = r.get("state")?;
            let failure: Option<String> = r.get("failure")?;
            Ok(Stored {
                row: payload(r)?,
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
    match (&stored, &sighting) {
        (None, _) => insert_row(conn, run_id, seq, src)?,
        // Rows to send take the payload the sheet now gives and become pending again.
        (Some(_), Sighting::Send) => {
            conn.prepare_cached(
                "UPDATE rows SET state = 'pending', failure = NULL, merchant_name = :merchant_name,
                     store_name = :store_name, mall_group_label = :mall_group_label,
                     mall_label = :mall_label, updated_at = :now
                 WHERE key = :key",
            )?
            .execute(named_params! {
                ":key": key,
                ":merchant_name": r.merchant_name,
                ":store_name": r.store_name,
                ":mall_group_label": r.mall_group_label,
                ":mall_label": r.mall_label,
                ":now": now(),
            })?;
            move_to(conn, run_id, seq, src, &key)?;
        }
        // Every other sighting only moves the row's source to this run's input.
        (Some(_), other) => {
            if let Sighting::Drifted(detail) = other {
                insert_drift(conn, run_id, &key, &src.file, src.line, detail)?;
            }
            move_to(conn, run_id, seq, src, &key)?;
        }
    }
    Ok(sighting)
}

/// The row `key` is now at its place (`seq`) in this run's input, at `src`'s file and line.
fn move_to(
    conn: &Connection,
    run_id: i64,
    seq: u64,
    src: &SourceRow,
    key: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE rows SET source_file = :source_file, source_line = :source_line, run_id = :run_id,
             seq = :seq
         WHERE key = :key",
    )?
    .execute(named_params! {
        ":key": key,
        ":source_file": src.file,
        ":source_line": src.line as i64,
        ":run_id": run_id,
        ":seq": seq as i64,
    })?;
    Ok(())
}

/// A row the ledger has not seen: pending, at its place in the run's input.
fn insert_row(conn: &Connection, run_id: i64, seq: u64, src: &SourceRow) -> rusqlite::Result<()> {
    let r = &src.row;
    conn.prepare_cached(concat!(
        "INSERT INTO rows (key, ",
        payload_columns!(),
        ", state, source_file, source_line, run_id, seq, created_at, updated_at)
         VALUES (:key, :save_way_type, :ipay_trade_no, :partner_id, :merchant_id, :merchant_name,
             :store_id, :store_name, :mall_group_label, :mall_label, 'pending', :source_file,
             :source_line, :run_id, :seq, :now, :now)"
    ))?
    .execute(named_params! {
        ":key": r.key(),
        ":save_way_type": r.save_way.as_str(),
        ":ipay_trade_no": r.ipay_trade_no,
        ":partner_id": r.partner_id,
        ":merchant_id": r.merchant_id,
        ":merchant_name": r.merchant_name,
        ":store_id": r.store_id,
        ":store_name": r.store_name,
        ":mall_group_label": r.mall_group_label,
        ":mall_label": r.mall_label,
        ":source_file": src.file,
        ":source_line": src.line as i64,
        ":run_id": run_id,
        ":seq": seq as i64,
        ":now": now(),
    })?;
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
        "INSERT INTO drift (run_id, key, source_file, source_line, detail)
         VALUES (:run_id, :key, :source_file, :source_line, :detail)",
    )?
    .execute(named_params! {
        ":run_id": run_id,
        ":key": key,
        ":source_file": file,
        ":source_line": line as i64,
        ":detail": detail,
    })?;
    Ok(())
}

pub fn reject(conn: &Connection, run_id: i64, reject: &Reject) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rejects (run_id, file, line, column_name, value, reason)
         VALUES (:run_id, :file, :line, :column_name, :value, :reason)",
    )?
    .execute(named_params! {
        ":run_id": run_id,
        ":file": reject.file,
        ":line": reject.line as i64,
        ":column_name": reject.column,
        ":value": reject.value,
        ":reason": reject.reason,
    })?;
    Ok(())
}

/// Marks a row in flight and opens its attempt, copying what will be sent; returns the attempt's
/// id. Only a `pending` row of this run is marked: `None` for a row another run took or that is
/// no longer pending, which must then not be sent.
pub fn mark_in_flight(conn: &Connection, run_id: i64, row: RowId) -> rusqlite::Result<Option<i64>> {
    let params = named_params! {":row": row.0, ":run_id": run_id, ":now": now()};
    let changed = conn
        .prepare_cached(
            "UPDATE rows SET state = 'in_flight', attempts = attempts + 1, updated_at = :now
             WHERE rowid = :row AND state = 'pending' AND run_id = :run_id",
        )?
        .execute(params)?;
    if changed == 0 {
        return Ok(None);
    }
    conn.prepare_cached(
        "INSERT INTO attempts (key, run_id, attempt, started_at, sent_merchant_name,
             sent_store_name, sent_mall_group_label, sent_mall_label)
         SELECT key, :run_id, attempts, :now, merchant_name, store_name, mall_group_label,
             mall_label
         FROM rows WHERE rowid = :row",
    )?
    .execute(params)?;
    Ok(Some(conn.last_insert_rowid()))
}

/// Undoes a mark whose request never left (the run stopped first): the row is pending again and
/// counts no attempt, so it is not taken for possibly sent.
pub fn unsend(conn: &Connection, attempt_id: i64, row: RowId) -> rusqlite::Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM attempts WHERE id = :attempt AND outcome IS NULL")?
        .execute(named_params! {":attempt": attempt_id})?;
    if deleted > 0 {
        conn.prepare_cached(
            "UPDATE rows SET state = 'pending', attempts = attempts - 1, updated_at = :now
             WHERE rowid = :row AND state = 'in_flight'",
        )?
        .execute(named_params! {":row": row.0, ":now": now()})?;
    }
    Ok(())
}

/// Records what an attempt came to: every field of the answer with the attempt, and the row's
/// new state. A store found circled after an earlier attempt whose outcome was unknown is judged
/// against what that attempt sent: if the sheet changed since, the row keeps the earlier payload
/// (what AlipayHK most likely holds) and the change is recorded as drift. A success whose label
/// another store holds is not believed ([`Verdict::LabelHeldBy`]).
pub fn record(conn: &Connection, a: &Answered) -> rusqlite::Result<Verdict> {
    if let Some(verdict) =
        refuse_a_held_label(conn, a.attempt_id, a.row_id, &a.attempt, record_attempt)?
    {
        return Ok(verdict);
    }
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
            "UPDATE rows SET merchant_name = :merchant_name, store_name = :store_name,
                 mall_group_label = :mall_group_label, mall_label = :mall_label
             WHERE rowid = :row",
        )?
        .execute(named_params! {
            ":row": a.row_id.0,
            ":merchant_name": p.merchant_name,
            ":store_name": p.store_name,
            ":mall_group_label": p.mall_group_label,
            ":mall_label": p.mall_label,
        })?;
    }
    Ok(Verdict::Kept)
}

/// The rule of the module header. When `attempt` is a success whose label another store holds,
/// writes the attempt with `write` (as `not_this_request`, what the answer said kept) and the
/// row as pending again, possibly sent, and says so; otherwise writes nothing.
fn refuse_a_held_label(
    conn: &Connection,
    attempt_id: i64,
    row: RowId,
    attempt: &Attempt,
    write: impl FnOnce(&Connection, i64, &Attempt) -> rusqlite::Result<()>,
) -> rusqlite::Result<Option<Verdict>> {
    let Outcome::Success { pms_label } = &attempt.outcome else {
        return Ok(None);
    };
    let holder: Option<String> = conn
        .prepare_cached(
            "SELECT key FROM rows
             WHERE pms_label = :label AND label_unverified = 0 AND rowid <> :row",
        )?
        .query_row(named_params! {":label": pms_label, ":row": row.0}, |r| {
            r.get("key")
        })
        .optional()?;
    let Some(key) = holder else {
        return Ok(None);
    };
    let (kept, update) = label_held_by(attempt, pms_label, &key);
    write(conn, attempt_id, &kept)?;
    update_row(conn, row, attempt_id, true, &update)?;
    Ok(Some(Verdict::LabelHeldBy { key }))
}

/// A SUCCESS whose `pms_label` another store (`key`) holds, on either store: the attempt as
/// kept (not this request's, not believed) and what the row then holds (pending, possibly
/// sent, to be sent again).
pub(crate) fn label_held_by(attempt: &Attempt, pms_label: &str, key: &str) -> (Attempt, RowUpdate) {
    let reason = format!(
        "not this request's answer: its pmsLabel {pms_label} is held by another store ({key}); \
         a proxy may be replaying answers"
    );
    let kept = Attempt {
        outcome: Outcome::NotThisRequest {
            reason: reason.clone(),
        },
        error: Some(reason),
        ..attempt.clone()
    };
    let update = RowUpdate {
        state: State::Pending,
        failure: None,
        ambiguous: false,
        maybe_sent: true,
        pms_label: None,
        label_unverified: false,
        answer_unverified: Some(false),
        result_code: attempt.result_code.clone(),
        result_message: Some(format!(
            "NOT BELIEVED: the answer said SUCCESS with pmsLabel {pms_label}, which another \
             store ({key}) already holds: a proxy between this machine and AlipayHK may be \
             replaying answers. The answer is kept with its attempt; the row is sent again{}",
            crate::api::outcome::tracer_suffix(attempt.tracer_id.as_deref())
        )),
        tracer_id: attempt.tracer_id.clone(),
    };
    (kept, update)
}

fn record_attempt(conn: &Connection, attempt_id: i64, a: &Attempt) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE attempts SET latency_ms = :latency_ms, latency_us = :latency_us,
             http_status = :http_status, result_code = :result_code,
             result_status = :result_status, result_message = :result_message, error = :error,
             outcome = :outcome, maybe_processed = :maybe_processed, pms_label = :pms_label,
             verified = :verified, response_body = :response_body, tracer_id = :tracer_id,
             response_time = :response_time, response_signature = :response_signature
         WHERE id = :attempt",
    )?
    .execute(named_params! {
        ":attempt": attempt_id,
        ":latency_ms": a.latency.as_millis() as i64,
        ":latency_us": a.latency.as_micros() as i64,
        ":http_status": a.http_status,
        ":result_code": a.result_code,
        ":result_status": a.result_status,
        ":result_message": a.result_message,
        ":error": a.error,
        ":outcome": a.outcome.kind(),
        ":maybe_processed": a.outcome.maybe_processed(),
        ":pms_label": a.pms_label,
        ":verified": a.verified,
        ":response_body": a.response_body,
        ":tracer_id": a.tracer_id,
        ":response_time": a.response_time,
        ":response_signature": a.response_signature,
    })?;
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
        "SELECT a.sent_merchant_name AS merchant_name, a.sent_store_name AS store_name,
                a.sent_mall_group_label AS mall_group_label, a.sent_mall_label AS mall_label,
                r.source_file AS source_file, r.source_line AS source_line
         FROM rows r JOIN attempts a ON a.id = r.first_maybe_sent_attempt
         WHERE r.rowid = :row AND a.sent_mall_label IS NOT NULL",
    )?
    .query_row(named_params! {":row": row.0}, |r| {
        let earlier = Row {
            merchant_name: r.get("merchant_name")?,
            store_name: r.get("store_name")?,
            mall_group_label: r.get("mall_group_label")?,
            mall_label: r.get("mall_label")?,
            ..now_sent.clone()
        };
        Ok((
            earlier,
            r.get("source_file")?,
            r.get::<_, i64>("source_line")? as u64,
        ))
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
        .prepare_cached(concat!(
            "UPDATE rows SET state = :state, failure = :failure, ambiguous = :ambiguous,
                 maybe_sent = (maybe_sent OR :maybe_sent), pms_label = COALESCE(:pms_label, pms_label),
                 label_unverified = CASE WHEN :pms_label IS NULL THEN label_unverified
                     ELSE :label_unverified END,
                 answer_unverified = COALESCE(:answer_unverified, answer_unverified),
                 result_code = :result_code, result_message = :result_message,
                 tracer_id = COALESCE(:tracer_id, tracer_id),
                 first_maybe_sent_attempt = COALESCE(first_maybe_sent_attempt,
                     CASE WHEN :maybe_processed THEN :attempt END),
                 updated_at = :now
             WHERE rowid = :row AND NOT ",
            done!()
        ))?
        .execute(named_params! {
            ":row": row.0,
            ":state": u.state.as_str(),
            ":failure": u.failure.map(FailureKind::as_str),
            ":ambiguous": u.ambiguous,
            ":maybe_sent": u.maybe_sent,
            ":pms_label": u.pms_label,
            ":label_unverified": u.label_unverified,
            ":answer_unverified": u.answer_unverified,
            ":result_code": u.result_code,
            ":result_message": u.result_message,
            ":tracer_id": u.tracer_id,
            ":maybe_processed": maybe_processed,
            ":attempt": attempt_id,
            ":now": now(),
        })?;
    if changed == 0 && u.pms_label.is_some() {
        conn.prepare_cached(
            "UPDATE rows SET pms_label = :pms_label, label_unverified = :label_unverified
             WHERE rowid = :row AND pms_label IS NULL",
        )?
        .execute(named_params! {
            ":row": row.0,
            ":pms_label": u.pms_label,
            ":label_unverified": u.label_unverified,
        })?;
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
        "SELECT count(*) AS n FROM drift WHERE run_id = :run_id",
        named_params! {":run_id": run_id},
        |r| r.get("n"),
    )?;
    let c = RunCounts {
        drifted: drifted as u64,
        ..c.clone()
    };
    conn.execute(
        "UPDATE runs SET ended_at = :now, outcome = :outcome, rows_read = :rows_read,
             to_send = :to_send, succeeded = :succeeded, already_circled = :already_circled,
             failed = :failed, rejected = :rejected, duplicates = :duplicates,
             already_done = :already_done, drifted = :drifted, message = :message, sent = :sent,
             unverified = :unverified, throttled = :throttled
         WHERE id = :run_id",
        named_params! {
            ":run_id": run_id,
            ":now": now(),
            ":outcome": end.as_str(),
            ":rows_read": c.rows_read as i64,
            ":to_send": c.to_send as i64,
            ":succeeded": c.succeeded as i64,
            ":already_circled": c.already_circled as i64,
            ":failed": c.failed as i64,
            ":rejected": c.rejected as i64,
            ":duplicates": c.duplicates as i64,
            ":already_done": c.already_done as i64,
            ":drifted": c.drifted as i64,
            ":message": message,
            ":sent": c.sent as i64,
            ":unverified": c.unverified as i64,
            ":throttled": c.throttled as i64,
        },
    )?;
    Ok(c)
}

/// Takes in one answer from the side file: the row is created if this ledger lacks it, the
/// attempt updated (or added, when this ledger does not have it), the row moved to its state; a
/// success whose label another store holds is not believed, as when it arrived.
pub fn take_in(conn: &Connection, s: &Spilled, from: &str) -> rusqlite::Result<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT id FROM runs WHERE id = :run_id")?
        .query_row(named_params! {":run_id": s.run_id}, |r| r.get("id"))
        .optional()?;
    if exists.is_none() {
        conn.execute(
            "INSERT INTO runs (id, started_at, ended_at, outcome, config, message)
             VALUES (:run_id, :now, :now, 'aborted', '{}', :message)",
            named_params! {
                ":run_id": s.run_id,
                ":now": now(),
                ":message": format!("answers taken in from {from}"),
            },
        )?;
    }
    let (row, key) = (&s.row, s.key());
    let row_id: Option<i64> = conn
        .prepare_cached("SELECT rowid AS row_id FROM rows WHERE key = :key")?
        .query_row(named_params! {":key": key}, |r| r.get("row_id"))
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
        .prepare_cached("SELECT id FROM attempts WHERE id = :attempt AND key = :key")?
        .query_row(named_params! {":attempt": s.attempt_id, ":key": key}, |r| {
            r.get("id")
        })
        .optional()?;
    let attempt_id = match present {
        Some(id) => id,
        None => {
            conn.execute(
                "INSERT INTO attempts (key, run_id, attempt, started_at, sent_merchant_name,
                     sent_store_name, sent_mall_group_label, sent_mall_label)
                 VALUES (:key, :run_id, (SELECT attempts FROM rows WHERE key = :key), :now,
                     :merchant_name, :store_name, :mall_group_label, :mall_label)",
                named_params! {
                    ":key": key,
                    ":run_id": s.run_id,
                    ":now": now(),
                    ":merchant_name": row.merchant_name,
                    ":store_name": row.store_name,
                    ":mall_group_label": row.mall_group_label,
                    ":mall_label": row.mall_label,
                },
            )?;
            conn.last_insert_rowid()
        }
    };
    if refuse_a_held_label(conn, attempt_id, row_id, &s.attempt, record_attempt)?.is_some() {
        return Ok(());
    }
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

/// The answers of [`answers_of_run`]: each attempt (the columns read by [`answer`]) with its
/// row as sent and as it stands now (read by [`row_update`]).
const ANSWERS_OF_RUN: &str = concat!(
    "SELECT a.id AS attempt_id, ",
    payload_columns!("r"),
    ", r.source_file AS source_file, r.source_line AS source_line,
        a.outcome AS outcome, a.maybe_processed AS maybe_processed,
        a.http_status AS http_status, a.result_code AS result_code,
        a.result_status AS result_status, a.result_message AS result_message,
        a.pms_label AS pms_label, a.verified AS verified, a.error AS error,
        a.tracer_id AS tracer_id, a.response_body AS response_body,
        a.response_time AS response_time, a.response_signature AS response_signature,
        COALESCE(a.latency_us, a.latency_ms * 1000, 0) AS latency_us,
        r.state AS row_state, r.failure AS row_failure, r.ambiguous AS row_ambiguous,
        r.maybe_sent AS row_maybe_sent, r.pms_label AS row_pms_label,
        r.label_unverified AS row_label_unverified, r.answer_unverified AS row_answer_unverified,
        r.result_code AS row_result_code, r.result_message AS row_result_message,
        r.tracer_id AS row_tracer_id
     FROM attempts a JOIN rows r ON r.key = a.key
     WHERE a.run_id = :run_id AND a.outcome IS NOT NULL AND a.outcome <> 'lost'
     ORDER BY a.id"
);

/// An attempt as recorded, from [`ANSWERS_OF_RUN`].
fn answer(r: &rusqlite::Row<'_>) -> rusqlite::Result<Attempt> {
    let kind: String = r.get("outcome")?;
    let code: Option<String> = r.get("result_code")?;
    let message: Option<String> = r.get("result_message")?;
    let error: Option<String> = r.get("error")?;
    let label: Option<String> = r.get("pms_label")?;
    Ok(Attempt {
        outcome: Outcome::from_stored(
            &kind,
            r.get("maybe_processed")?,
            code.as_deref(),
            error.as_deref().or(message.as_deref()),
            label.as_deref(),
        ),
        http_status: r.get("http_status")?,
        result_code: code,
        result_status: r.get("result_status")?,
        result_message: message,
        pms_label: label,
        verified: r.get("verified")?,
        error,
        tracer_id: r.get("tracer_id")?,
        response_body: r.get("response_body")?,
        response_time: r.get("response_time")?,
        response_signature: r.get("response_signature")?,
        latency: std::time::Duration::from_micros(r.get::<_, i64>("latency_us")?.max(0) as u64),
    })
}

/// What the row holds now, from [`ANSWERS_OF_RUN`].
fn row_update(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowUpdate> {
    let state: String = r.get("row_state")?;
    let failure: Option<String> = r.get("row_failure")?;
    Ok(RowUpdate {
        // A row this run left in flight is recovered as possibly sent by the next one.
        state: State::parse(&state)
            .filter(|s| *s != State::InFlight)
            .unwrap_or(State::Pending),
        failure: failure.as_deref().and_then(FailureKind::parse),
        ambiguous: r.get("row_ambiguous")?,
        maybe_sent: r.get("row_maybe_sent")?,
        pms_label: r.get("row_pms_label")?,
        label_unverified: r.get("row_label_unverified")?,
        answer_unverified: Some(r.get("row_answer_unverified")?),
        result_code: r.get("row_result_code")?,
        result_message: r.get("row_result_message")?,
        tracer_id: r.get("row_tracer_id")?,
    })
}

/// Every answer a run recorded, as the side file keeps them: what a run whose ledger file was
/// deleted or replaced under it still holds in the file it had open.
pub fn answers_of_run(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Spilled>> {
    let mut st = conn.prepare(ANSWERS_OF_RUN)?;
    let rows = st.query_map(named_params! {":run_id": run_id}, |r| {
        Ok(Spilled {
            run_id,
            attempt_id: r.get("attempt_id")?,
            row: payload(r)?,
            source_file: r.get("source_file")?,
            source_line: r.get::<_, i64>("source_line")? as u64,
            attempt: answer(r)?,
            update: row_update(r)?,
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

const KEPT_UNVERIFIED: &str = concat!(
    "SELECT a.id AS attempt_id, a.run_id AS run_id, r.rowid AS row_id,
        a.response_body AS response_body, a.response_time AS response_time,
        a.response_signature AS response_signature, r.maybe_sent AS maybe_sent, ",
    payload_columns!("r"),
    " FROM attempts a JOIN rows r ON r.key = a.key
     WHERE a.verified = 0 AND a.response_body IS NOT NULL AND NOT ",
    done!("r"),
    " ORDER BY a.id"
);

pub fn kept_unverified(conn: &Connection) -> rusqlite::Result<Vec<KeptAnswer>> {
    let mut st = conn.prepare(KEPT_UNVERIFIED)?;
    let rows = st.query_map([], |r| {
        Ok(KeptAnswer {
            attempt_id: r.get("attempt_id")?,
            run_id: r.get("run_id")?,
            row_id: RowId(r.get("row_id")?),
            body: r.get("response_body")?,
            response_time: r.get("response_time")?,
            response_signature: r.get("response_signature")?,
            row: payload(r)?,
            maybe_sent: r.get("maybe_sent")?,
        })
    })?;
    rows.collect()
}

/// An answer kept unverified verifies now: the attempt says so and the row takes the state the
/// answer gives it, as if it had been believed when it arrived (a success whose label another
/// store holds is not believed then either).
pub fn accept_reverified(
    conn: &Connection,
    kept: &KeptAnswer,
    attempt: &Attempt,
    update: &RowUpdate,
) -> rusqlite::Result<()> {
    if refuse_a_held_label(
        conn,
        kept.attempt_id,
        kept.row_id,
        attempt,
        write_reverified,
    )?
    .is_some()
    {
        return Ok(());
    }
    write_reverified(conn, kept.attempt_id, attempt)?;
    update_row(conn, kept.row_id, kept.attempt_id, false, update)
}

/// A kept attempt verified now: what it came to (its error, when it is not believed after all).
fn write_reverified(conn: &Connection, attempt_id: i64, a: &Attempt) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE attempts SET verified = 1, outcome = :outcome, pms_label = :pms_label,
             error = COALESCE(:error,
                 'not verified when it arrived; verified with the alipay_public_key of a later run')
         WHERE id = :attempt",
    )?
    .execute(named_params! {
        ":attempt": attempt_id,
        ":outcome": a.outcome.kind(),
        ":pms_label": a.pms_label,
        ":error": a.error,
    })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::input::SaveWay;

    fn ledger() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_unlocked(&dir.path().join("l.db"))
            .unwrap()
            .into_connection();
        (dir, conn)
    }

    /// A store's row in mall `mall` (the PostgreSQL store's tests use it too).
    pub(crate) fn row(store: &str, mall: &str) -> Row {
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
            conn.query_row(
                "SELECT rowid AS row_id FROM rows WHERE key = :key",
                named_params! {":key": key},
                |r| r.get("row_id"),
            )
            .unwrap(),
        )
    }

    /// The one value `sql` selects.
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

    /// Two rows of one run, in flight: `(run, [(row id, attempt id, row)])`.
    fn two_in_flight(conn: &Connection) -> (i64, Vec<(RowId, i64, Row)>) {
        let run = begin_run(conn, "{}", &[]).unwrap();
        let rows = ["S1", "S2"].map(|store| {
            let r = row(store, "11");
            ingest(conn, run, 1, &src(r.clone(), 2), false).unwrap();
            let id = row_id(conn, &r.key());
            (id, mark_in_flight(conn, run, id).unwrap().unwrap(), r)
        });
        (run, rows.into())
    }

    fn success(label: &str) -> Outcome {
        Outcome::Success {
            pms_label: label.into(),
        }
    }

    #[test]
    fn a_label_another_store_holds_is_never_believed_for_a_second() {
        let (_d, conn) = ledger();
        let (run, rows) = two_in_flight(&conn);
        let [(id1, at1, r1), (id2, at2, r2)] = [rows[0].clone(), rows[1].clone()];
        let first = answered(run, at1, id1, r1.clone(), success("2026"));
        assert_eq!(record(&conn, &first).unwrap(), Verdict::Kept);
        // The same answer again for the same row (taken in twice, say) is its own label.
        assert_eq!(record(&conn, &first).unwrap(), Verdict::Kept);
        let replayed = answered(run, at2, id2, r2.clone(), success("2026"));
        assert_eq!(
            record(&conn, &replayed).unwrap(),
            Verdict::LabelHeldBy { key: r1.key() }
        );
        let state = |key: &str| -> (String, Option<String>, bool) {
            conn.query_row(
                "SELECT state, pms_label, maybe_sent FROM rows WHERE key = :key",
                named_params! {":key": key},
                |r| Ok((r.get("state")?, r.get("pms_label")?, r.get("maybe_sent")?)),
            )
            .unwrap()
        };
        assert_eq!(
            state(&r1.key()),
            ("succeeded".into(), Some("2026".into()), false)
        );
        assert_eq!(state(&r2.key()), ("pending".into(), None, true));
        let (outcome, label, processed): (String, String, bool) = conn
            .query_row(
                "SELECT outcome, pms_label, maybe_processed FROM attempts WHERE id = :id",
                named_params! {":id": at2},
                |r| {
                    Ok((
                        r.get("outcome")?,
                        r.get("pms_label")?,
                        r.get("maybe_processed")?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (outcome.as_str(), label.as_str(), processed),
            ("not_this_request", "2026", true),
            "the attempt keeps what the answer said"
        );
        let message: String = q(
            &conn,
            "SELECT result_message FROM rows WHERE store_id = 'S2'",
        );
        assert!(message.starts_with("NOT BELIEVED"), "{message}");
        assert!(message.contains(&r1.key()), "{message}");
        // The row is sent again, and its own label is believed then.
        let again = mark_in_flight(&conn, run, id2).unwrap().unwrap();
        let own = answered(run, again, id2, r2.clone(), success("2027"));
        assert_eq!(record(&conn, &own).unwrap(), Verdict::Kept);
        assert_eq!(
            state(&r2.key()),
            ("succeeded".into(), Some("2027".into()), true)
        );
        // And the ledger itself refuses a second holder, whatever writes it.
        assert!(
            conn.execute(
                "UPDATE rows SET pms_label = '2026' WHERE store_id = 'S2'",
                []
            )
            .is_err()
        );
    }

    #[test]
    fn the_side_file_and_a_kept_answer_verified_again_follow_the_same_rule() {
        let (_d, conn) = ledger();
        let (run, rows) = two_in_flight(&conn);
        let [(id1, at1, r1), (id2, at2, r2)] = [rows[0].clone(), rows[1].clone()];
        record(&conn, &answered(run, at1, id1, r1.clone(), success("2026"))).unwrap();
        let spilled = Spilled::new(
            &answered(run, at2, id2, r2.clone(), success("2026")),
            "s.csv".into(),
            3,
        );
        take_in(&conn, &spilled, "f").unwrap();
        assert_eq!(
            q::<String>(&conn, "SELECT state FROM rows WHERE store_id = 'S2'"),
            "pending"
        );
        assert_eq!(
            q::<String>(&conn, "SELECT outcome FROM attempts WHERE id = 2"),
            "not_this_request"
        );
        // A kept answer of S2 that verifies now, with S1's label: not believed either.
        let kept = KeptAnswer {
            attempt_id: at2,
            run_id: run,
            row_id: id2,
            row: r2.clone(),
            body: Vec::new(),
            response_time: None,
            response_signature: None,
            maybe_sent: true,
        };
        let a = answered(run, at2, id2, r2, success("2026"));
        accept_reverified(&conn, &kept, &a.attempt, &a.update).unwrap();
        assert_eq!(
            q::<String>(&conn, "SELECT state FROM rows WHERE store_id = 'S2'"),
            "pending"
        );
        assert_eq!(
            q::<i64>(&conn, "SELECT count(*) FROM rows WHERE pms_label = '2026'"),
            1
        );
    }
}
