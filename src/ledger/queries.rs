//! Reads: the rows a run must send, counts for `status`, rows for `export` and `reconcile`.

use rusqlite::{Connection, OptionalExtension as _, Row as SqlRow, params};
use serde::Serialize;

use super::{RowId, State};
use crate::input::{Reject, Row, SaveWay};
use crate::model::{FailureKind, Known};

/// A row of the ledger as `export` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    pub key: String,
    pub save_way_type: String,
    pub ipay_trade_no: String,
    pub partner_id: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub store_id: String,
    pub store_name: String,
    pub mall_group_label: String,
    pub mall_label: String,
    pub state: String,
    pub ambiguous: bool,
    pub pms_label: String,
    pub result_code: String,
    pub result_message: String,
    pub attempts: u32,
    pub source_file: String,
    pub source_line: u64,
    pub updated_at: String,
    /// The last attempt's `Tracer-Id` (what AlipayHK support asks for).
    pub tracer_id: String,
    #[serde(skip)]
    pub failure: Option<String>,
    #[serde(skip)]
    pub maybe_sent: bool,
    /// `pms_label` came from an answer whose signature did not verify.
    #[serde(skip)]
    pub label_unverified: bool,
}

impl LedgerRow {
    pub fn row(&self) -> Row {
        Row {
            save_way: SaveWay::parse(&self.save_way_type).unwrap_or(SaveWay::MerchantPms),
            ipay_trade_no: self.ipay_trade_no.clone(),
            partner_id: self.partner_id.clone(),
            merchant_id: self.merchant_id.clone(),
            merchant_name: self.merchant_name.clone(),
            store_id: self.store_id.clone(),
            store_name: self.store_name.clone(),
            mall_group_label: self.mall_group_label.clone(),
            mall_label: self.mall_label.clone(),
        }
    }

    pub fn state(&self) -> State {
        State::parse(&self.state).unwrap_or(State::Pending)
    }

    /// What a new sighting of this row is decided against (`model::sighting`); `row` is
    /// [`LedgerRow::row`].
    pub fn known<'a>(&self, row: &'a Row) -> Known<'a> {
        Known {
            row,
            state: self.state(),
            failure: self.failure.as_deref().and_then(FailureKind::parse),
        }
    }
}

const ROW_COLUMNS: &str =
    "key, save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name,
    store_id, store_name, mall_group_label, mall_label, state, ambiguous, pms_label, result_code,
    result_message, attempts, source_file, source_line, updated_at, failure, maybe_sent, seq,
    tracer_id, label_unverified";

/// Where `rowid` is when a query selects `{ROW_COLUMNS}, rowid`.
const ROWID_AT: usize = 24;

fn ledger_row(r: &SqlRow<'_>) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        key: r.get(0)?,
        save_way_type: r.get(1)?,
        ipay_trade_no: r.get(2)?,
        partner_id: r.get(3)?,
        merchant_id: r.get(4)?,
        merchant_name: r.get(5)?,
        store_id: r.get(6)?,
        store_name: r.get(7)?,
        mall_group_label: r.get(8)?,
        mall_label: r.get(9)?,
        state: r.get(10)?,
        ambiguous: r.get(11)?,
        pms_label: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
        result_code: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
        result_message: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
        attempts: r.get(15)?,
        source_file: r.get(16)?,
        source_line: r.get::<_, i64>(17)? as u64,
        updated_at: r.get(18)?,
        failure: r.get(19)?,
        maybe_sent: r.get(20)?,
        tracer_id: r.get::<_, Option<String>>(22)?.unwrap_or_default(),
        label_unverified: r.get(23)?,
    })
}

/// Rows of this run still to send, in input order, after `after_seq`: `(seq, rowid, row)`. Rows
/// whose last answer did not verify come in a pass of their own (`unverified`).
pub fn pending_page(
    conn: &Connection,
    run_id: i64,
    after_seq: u64,
    limit: usize,
    unverified: bool,
) -> rusqlite::Result<Vec<(u64, RowId, LedgerRow)>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS}, rowid FROM rows
         WHERE run_id = ?1 AND state = 'pending' AND seq > ?2 AND answer_unverified = ?4
         ORDER BY seq LIMIT ?3"
    ))?;
    let rows = st.query_map(
        params![run_id, after_seq as i64, limit as i64, unverified],
        |r| {
            Ok((
                r.get::<_, i64>(21)? as u64,
                RowId(r.get(ROWID_AT)?),
                ledger_row(r)?,
            ))
        },
    )?;
    rows.collect()
}

/// One row by its identity, with its rowid.
pub fn row_by_key(conn: &Connection, key: &str) -> rusqlite::Result<Option<(RowId, LedgerRow)>> {
    conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS}, rowid FROM rows WHERE key = ?1"
    ))?
    .query_row([key], |r| Ok((RowId(r.get(ROWID_AT)?), ledger_row(r)?)))
    .optional()
}

/// Every row, optionally only those in `states`, in the order they were read.
pub fn rows(
    conn: &Connection,
    states: &[State],
    mut each: impl FnMut(LedgerRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    rows_with_ids(conn, states, |_, row| each(row))
}

/// [`rows`], each with its rowid.
pub fn rows_with_ids(
    conn: &Connection,
    states: &[State],
    mut each: impl FnMut(RowId, LedgerRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut st = conn.prepare(&format!(
        "SELECT {ROW_COLUMNS}, rowid FROM rows ORDER BY run_id, seq, key"
    ))?;
    let mut q = st.query([])?;
    while let Some(r) = q.next()? {
        let row = ledger_row(r)?;
        if states.is_empty() || states.contains(&row.state()) {
            each(RowId(r.get(ROWID_AT)?), row)?;
        }
    }
    Ok(())
}

/// The id of the latest run, if any.
pub fn last_run_id(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
}

/// The rejects a run recorded.
pub fn rejects(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Reject>> {
    let mut st = conn.prepare(
        "SELECT file, line, column_name, value, reason FROM rejects WHERE run_id = ?1 ORDER BY id",
    )?;
    let rows = st.query_map([run_id], |r| {
        Ok(Reject {
            file: r.get(0)?,
            line: r.get::<_, i64>(1)? as u64,
            column: r.get(2)?,
            value: r.get(3)?,
            reason: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Counts for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    pub total: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub succeeded: u64,
    pub already_circled: u64,
    pub ambiguous: u64,
    pub failed: u64,
    pub failed_transient: u64,
    pub failed_permanent: u64,
    /// Rows not done whose label came from an answer that could not be verified.
    pub unverified: u64,
    pub by_result_code: std::collections::BTreeMap<String, u64>,
    pub last_runs: Vec<RunInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: String,
    pub rows_read: u64,
    pub succeeded: u64,
    pub already_circled: u64,
    pub failed: u64,
    pub rejected: u64,
    pub drifted: u64,
    pub message: Option<String>,
}

pub fn status(conn: &Connection, last_runs: usize) -> rusqlite::Result<StatusCounts> {
    let o = outcome_counts(conn, None)?;
    let mut c = StatusCounts {
        total: o.total,
        pending: o.pending,
        in_flight: o.in_flight,
        succeeded: o.succeeded,
        already_circled: o.already_circled,
        ambiguous: o.ambiguous,
        failed: o.failed_transient + o.failed_permanent,
        failed_transient: o.failed_transient,
        failed_permanent: o.failed_permanent,
        ..StatusCounts::default()
    };
    c.unverified = conn.query_row(
        "SELECT count(*) FROM rows WHERE answer_unverified = 1
         AND state <> 'succeeded' AND state <> 'already_circled'",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64;
    let mut st = conn.prepare(
        "SELECT result_code, count(*) FROM rows WHERE result_code IS NOT NULL GROUP BY 1 ORDER BY 1",
    )?;
    let mut q = st.query([])?;
    while let Some(r) = q.next()? {
        c.by_result_code
            .insert(r.get(0)?, r.get::<_, i64>(1)? as u64);
    }
    let mut st = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
    ))?;
    let runs = st.query_map([last_runs as i64], run_info_row)?;
    c.last_runs = runs.collect::<rusqlite::Result<_>>()?;
    Ok(c)
}

const RUN_COLUMNS: &str = "id, started_at, ended_at, outcome, rows_read, succeeded, \
    already_circled, failed, rejected, drifted, message";

fn run_info_row(r: &SqlRow<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        id: r.get(0)?,
        started_at: r.get(1)?,
        ended_at: r.get(2)?,
        outcome: r.get(3)?,
        rows_read: r.get::<_, i64>(4)? as u64,
        succeeded: r.get::<_, i64>(5)? as u64,
        already_circled: r.get::<_, i64>(6)? as u64,
        failed: r.get::<_, i64>(7)? as u64,
        rejected: r.get::<_, i64>(8)? as u64,
        drifted: r.get::<_, i64>(9)? as u64,
        message: r.get(10)?,
    })
}

// ---------------------------------------------------------------------------------------------
// The report (`report`, `run --report`). `run` None is the whole ledger; Some(id) is the rows
// whose latest sighting was that run and the attempts made in it. Drift and rejects are per run:
// for the whole ledger they are the latest run's (the sheet as it stands), not every night's.

/// Outcome counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub total: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub succeeded: u64,
    pub already_circled: u64,
    /// already_circled after an unknown outcome: most likely our own earlier call.
    pub ambiguous: u64,
    pub failed_transient: u64,
    pub failed_permanent: u64,
    pub drifted: u64,
    pub rejected: u64,
    /// Not done, with a label from an answer that could not be verified.
    pub unverified: u64,
}

/// The run whose drift and rejects stand for `run` (None: the latest).
fn run_or_last(conn: &Connection, run: Option<i64>) -> rusqlite::Result<Option<i64>> {
    match run {
        Some(id) => Ok(Some(id)),
        None => last_run_id(conn),
    }
}

pub fn outcome_counts(conn: &Connection, run: Option<i64>) -> rusqlite::Result<OutcomeCounts> {
    let mut c = OutcomeCounts::default();
    let mut st = conn.prepare(
        "SELECT state, COALESCE(failure, ''), ambiguous, count(*) FROM rows
         WHERE ?1 IS NULL OR run_id = ?1 GROUP BY 1, 2, 3",
    )?;
    let mut q = st.query([run])?;
    while let Some(r) = q.next()? {
        let state: String = r.get(0)?;
        let failure: String = r.get(1)?;
        let ambiguous: bool = r.get(2)?;
        let n = r.get::<_, i64>(3)? as u64;
        c.total += n;
        match State::parse(&state) {
            Some(State::Pending) => c.pending += n,
            Some(State::InFlight) => c.in_flight += n,
            Some(State::Succeeded) => c.succeeded += n,
            Some(State::AlreadyCircled) => {
                c.already_circled += n;
                if ambiguous {
                    c.ambiguous += n;
                }
            }
            Some(State::Failed) if failure == "permanent" => c.failed_permanent += n,
            Some(State::Failed) => c.failed_transient += n,
            None => {}
        }
    }
    c.unverified = conn.query_row(
        "SELECT count(*) FROM rows WHERE (?1 IS NULL OR run_id = ?1) AND answer_unverified = 1
         AND state <> 'succeeded' AND state <> 'already_circled'",
        [run],
        |r| r.get::<_, i64>(0),
    )? as u64;
    if let Some(id) = run_or_last(conn, run)? {
        c.drifted = conn.query_row(
            "SELECT count(DISTINCT key) FROM drift WHERE run_id = ?1",
            [id],
            |r| r.get::<_, i64>(0),
        )? as u64;
        c.rejected = conn.query_row(
            "SELECT count(*) FROM rejects WHERE run_id = ?1",
            [id],
            |r| r.get::<_, i64>(0),
        )? as u64;
    }
    Ok(c)
}

/// Rows of one mall by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MallCounts {
    pub mall_group_label: String,
    pub mall_label: String,
    /// succeeded or already circled
    pub done: u64,
    pub failed: u64,
    /// pending or in flight
    pub pending: u64,
}

impl MallCounts {
    pub fn total(&self) -> u64 {
        self.done + self.failed + self.pending
    }
}

pub fn by_mall(conn: &Connection, run: Option<i64>) -> rusqlite::Result<Vec<MallCounts>> {
    let mut st = conn.prepare(
        "SELECT mall_group_label, mall_label,
                sum(state IN ('succeeded', 'already_circled')), sum(state = 'failed'),
                sum(state IN ('pending', 'in_flight'))
         FROM rows WHERE ?1 IS NULL OR run_id = ?1
         GROUP BY 1, 2 ORDER BY 1, 2",
    )?;
    let rows = st.query_map([run], |r| {
        Ok(MallCounts {
            mall_group_label: r.get(0)?,
            mall_label: r.get(1)?,
            done: r.get::<_, i64>(2)? as u64,
            failed: r.get::<_, i64>(3)? as u64,
            pending: r.get::<_, i64>(4)? as u64,
        })
    })?;
    rows.collect()
}

/// `(attempts, rows that took that many)`, for rows with at least one attempt.
pub fn attempts_per_row(conn: &Connection, run: Option<i64>) -> rusqlite::Result<Vec<(u64, u64)>> {
    let mut st = conn.prepare(
        "SELECT n, count(*) FROM
           (SELECT count(*) AS n FROM attempts WHERE ?1 IS NULL OR run_id = ?1 GROUP BY key)
         GROUP BY n ORDER BY n",
    )?;
    let rows = st.query_map([run], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    rows.collect()
}

/// Answered attempts with one latency: how many, and whether the ledger holds it in whole
/// milliseconds only (`latency_ms`, written before migration 05: then `micros` is the whole
/// milliseconds, the answer took up to a millisecond more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub micros: u64,
    pub whole_ms: bool,
    pub answers: u64,
}

/// Answered attempts by latency, smallest first. One entry per distinct value, so that a ledger
/// of millions of attempts is not read into memory.
pub fn latencies(conn: &Connection, run: Option<i64>) -> rusqlite::Result<Vec<Latency>> {
    let mut st = conn.prepare(
        "SELECT COALESCE(latency_us, latency_ms * 1000), latency_us IS NULL, count(*)
         FROM attempts WHERE latency_ms IS NOT NULL AND (?1 IS NULL OR run_id = ?1)
         GROUP BY 1, 2 ORDER BY 1, 2",
    )?;
    let rows = st.query_map([run], |r| {
        Ok(Latency {
            micros: r.get::<_, i64>(0)?.max(0) as u64,
            whole_ms: r.get(1)?,
            answers: r.get::<_, i64>(2)? as u64,
        })
    })?;
    rows.collect()
}

/// Requests started in each second of one run: `(second as stored, YYYY-MM-DDTHH:MM:SS; count)`.
pub fn requests_per_second(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut st = conn.prepare(
        "SELECT substr(started_at, 1, 19), count(*) FROM attempts WHERE run_id = ?1
         GROUP BY 1 ORDER BY 1",
    )?;
    let rows = st.query_map([run_id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// The kinds of rows a person may have to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    FailedPermanent,
    FailedTransient,
    Ambiguous,
    /// Done earlier, and the sheet of the run says something else.
    Drifted,
    /// Broke a rule in the sheet of the run: never sent.
    Rejected,
    /// Not done, holding a label from an answer whose signature did not verify.
    Unverified,
}

/// A row a person may have to look at, whatever its kind: what the report lists of it. Every
/// kind fills the same fields, so that a column added here and to each query shows for all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttentionRow {
    pub source_file: String,
    pub source_line: u64,
    /// The row's identity; empty for a rejected row, which has none.
    pub key: String,
    pub store_name: String,
    pub mall_group_label: String,
    pub mall_label: String,
    /// The result code, or for a rejected row the column it breaks.
    pub code: String,
    /// The answer's message, what changed, or why the row was rejected.
    pub detail: String,
    /// The last attempt's `Tracer-Id`: what AlipayHK support asks for.
    pub tracer_id: String,
}

/// Up to `limit` rows of one kind, in sheet order. Drift and rejects are those of `run` (None:
/// the latest run); the other kinds are the rows as they stand (of `run`, when given).
pub fn attention(
    conn: &Connection,
    run: Option<i64>,
    kind: Attention,
    limit: usize,
) -> rusqlite::Result<Vec<AttentionRow>> {
    const FROM_ROWS: &str = "SELECT source_file, source_line, key, store_name, mall_group_label,
                mall_label, COALESCE(result_code, ''), COALESCE(result_message, ''),
                COALESCE(tracer_id, '')
         FROM rows WHERE (?1 IS NULL OR run_id = ?1) AND";
    let sql = match kind {
        Attention::FailedPermanent => {
            format!("{FROM_ROWS} state = 'failed' AND failure = 'permanent'")
        }
        Attention::FailedTransient => {
            format!("{FROM_ROWS} state = 'failed' AND COALESCE(failure, '') <> 'permanent'")
        }
        Attention::Ambiguous => format!("{FROM_ROWS} state = 'already_circled' AND ambiguous = 1"),
        Attention::Unverified => format!(
            "{FROM_ROWS} answer_unverified = 1 AND state <> 'succeeded' AND state <> 'already_circled'"
        ),
        Attention::Drifted => {
            "SELECT d.source_file AS source_file, d.source_line AS source_line, d.key,
                    COALESCE(r.store_name, ''), COALESCE(r.mall_group_label, ''),
                    COALESCE(r.mall_label, ''), COALESCE(r.result_code, ''),
                    d.detail || COALESCE('; its pmsLabel is ' || NULLIF(r.pms_label, ''), ''),
                    COALESCE(r.tracer_id, '')
             FROM drift d LEFT JOIN rows r ON r.key = d.key WHERE d.run_id = ?1"
                .to_owned()
        }
        Attention::Rejected => "SELECT file AS source_file, line AS source_line, '', '', '', '',
                    'column ' || column_name, reason, ''
             FROM rejects WHERE run_id = ?1"
            .to_owned(),
    };
    let run = match kind {
        Attention::Drifted | Attention::Rejected => match run_or_last(conn, run)? {
            Some(id) => Some(id),
            None => return Ok(Vec::new()),
        },
        _ => run,
    };
    let mut st = conn.prepare(&format!("{sql} ORDER BY source_file, source_line LIMIT ?2"))?;
    let rows = st.query_map(params![run, limit as i64], |r| {
        Ok(AttentionRow {
            source_file: r.get(0)?,
            source_line: r.get::<_, i64>(1)? as u64,
            key: r.get(2)?,
            store_name: r.get(3)?,
            mall_group_label: r.get(4)?,
            mall_label: r.get(5)?,
            code: r.get(6)?,
            detail: r.get(7)?,
            tracer_id: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// One run's record, by id.
pub fn run_info(conn: &Connection, run_id: i64) -> rusqlite::Result<Option<RunInfo>> {
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [run_id],
        run_info_row,
    )
    .optional()
}
