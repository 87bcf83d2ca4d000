//! Reads: the rows a run must send, counts for `status`, rows for `export` and `reconcile`.

use rusqlite::{Connection, OptionalExtension as _, Row as SqlRow, named_params};
use serde::Serialize;

use super::sql::done;
use super::{RowId, State};
use crate::input::{Reject, Row, SaveWay};
use crate::model::{FailureKind, Known};

/// The columns [`run_info_row`] reads.
macro_rules! run_columns {
    () => {
        "id, started_at, ended_at, outcome, rows_read, succeeded, already_circled, failed, \
         rejected, drifted, message"
    };
}

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

/// The columns [`ledger_row`] reads, with the row's `seq` and `rowid` (as `row_id`).
macro_rules! row_columns {
    () => {
        "key, save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, store_id,
         store_name, mall_group_label, mall_label, state, ambiguous, pms_label, result_code,
         result_message, attempts, source_file, source_line, updated_at, failure, maybe_sent,
         tracer_id, label_unverified, seq, rowid AS row_id"
    };
}

fn ledger_row(r: &SqlRow<'_>) -> rusqlite::Result<LedgerRow> {
    let text = |column: &str| -> rusqlite::Result<String> {
        Ok(r.get::<_, Option<String>>(column)?.unwrap_or_default())
    };
    Ok(LedgerRow {
        key: r.get("key")?,
        save_way_type: r.get("save_way_type")?,
        ipay_trade_no: r.get("ipay_trade_no")?,
        partner_id: r.get("partner_id")?,
        merchant_id: r.get("merchant_id")?,
        merchant_name: r.get("merchant_name")?,
        store_id: r.get("store_id")?,
        store_name: r.get("store_name")?,
        mall_group_label: r.get("mall_group_label")?,
        mall_label: r.get("mall_label")?,
        state: r.get("state")?,
        ambiguous: r.get("ambiguous")?,
        pms_label: text("pms_label")?,
        result_code: text("result_code")?,
        result_message: text("result_message")?,
        attempts: r.get("attempts")?,
        source_file: r.get("source_file")?,
        source_line: r.get::<_, i64>("source_line")? as u64,
        updated_at: r.get("updated_at")?,
        failure: r.get("failure")?,
        maybe_sent: r.get("maybe_sent")?,
        tracer_id: text("tracer_id")?,
        label_unverified: r.get("label_unverified")?,
    })
}

/// The row's seq and rowid, beside [`ledger_row`].
fn seq_and_id(r: &SqlRow<'_>) -> rusqlite::Result<(u64, RowId)> {
    Ok((r.get::<_, i64>("seq")? as u64, RowId(r.get("row_id")?)))
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
    let mut st = conn.prepare_cached(concat!(
        "SELECT ",
        row_columns!(),
        " FROM rows
         WHERE run_id = :run_id AND state = 'pending' AND seq > :after
           AND answer_unverified = :unverified
         ORDER BY seq LIMIT :limit"
    ))?;
    let rows = st.query_map(
        named_params! {
            ":run_id": run_id,
            ":after": after_seq as i64,
            ":limit": limit as i64,
            ":unverified": unverified,
        },
        |r| {
            let (seq, id) = seq_and_id(r)?;
            Ok((seq, id, ledger_row(r)?))
        },
    )?;
    rows.collect()
}

/// One row by its identity, with its rowid.
pub fn row_by_key(conn: &Connection, key: &str) -> rusqlite::Result<Option<(RowId, LedgerRow)>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        row_columns!(),
        " FROM rows WHERE key = :key"
    ))?
    .query_row(named_params! {":key": key}, |r| {
        Ok((seq_and_id(r)?.1, ledger_row(r)?))
    })
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
    let mut st = conn.prepare(concat!(
        "SELECT ",
        row_columns!(),
        " FROM rows ORDER BY run_id, seq, key"
    ))?;
    let mut q = st.query([])?;
    while let Some(r) = q.next()? {
        let row = ledger_row(r)?;
        if states.is_empty() || states.contains(&row.state()) {
            each(seq_and_id(r)?.1, row)?;
        }
    }
    Ok(())
}

/// The id of the latest run, if any.
pub fn last_run_id(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(id) AS id FROM runs", [], |r| r.get("id"))
}

/// The rejects a run recorded.
pub fn rejects(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Reject>> {
    let mut st = conn.prepare(
        "SELECT file, line, column_name, value, reason FROM rejects WHERE run_id = :run_id
         ORDER BY id",
    )?;
    let rows = st.query_map(named_params! {":run_id": run_id}, |r| {
        Ok(Reject {
            file: r.get("file")?,
            line: r.get::<_, i64>("line")? as u64,
            column: r.get("column_name")?,
            value: r.get("value")?,
            reason: r.get("reason")?,
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

impl StatusCounts {
    /// The counts of rows by state of `o`; the rest (unverified, result codes, runs) to fill in.
    pub fn of_rows(o: &OutcomeCounts) -> StatusCounts {
        StatusCounts {
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
        }
    }
}

/// The counts `status` shows. (A PostgreSQL ledger's are read on the server by
/// `postgres::reads::status`, with the same SQL where the two dialects agree.)
pub fn status(conn: &Connection, last_runs: usize) -> rusqlite::Result<StatusCounts> {
    let o = outcome_counts(conn, None)?;
    let mut c = StatusCounts::of_rows(&o);
    c.unverified = unverified(conn, None)?;
    let mut st = conn.prepare(
        "SELECT result_code, count(*) AS n FROM rows WHERE result_code IS NOT NULL
         GROUP BY result_code ORDER BY result_code",
    )?;
    let mut q = st.query([])?;
    while let Some(r) = q.next()? {
        c.by_result_code
            .insert(r.get("result_code")?, r.get::<_, i64>("n")? as u64);
    }
    let mut st = conn.prepare(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs ORDER BY id DESC LIMIT :limit"
    ))?;
    let runs = st.query_map(named_params! {":limit": last_runs as i64}, run_info_row)?;
    c.last_runs = runs.collect::<rusqlite::Result<_>>()?;
    Ok(c)
}

fn run_info_row(r: &SqlRow<'_>) -> rusqlite::Result<RunInfo> {
    let count = |column: &str| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(column)? as u64) };
    Ok(RunInfo {
        id: r.get("id")?,
        started_at: r.get("started_at")?,
        ended_at: r.get("ended_at")?,
        outcome: r.get("outcome")?,
        rows_read: count("rows_read")?,
        succeeded: count("succeeded")?,
        already_circled: count("already_circled")?,
        failed: count("failed")?,
        rejected: count("rejected")?,
        drifted: count("drifted")?,
        message: r.get("message")?,
    })
}

/// Rows not done whose last answer could not be verified (of `run`, when given).
fn unverified(conn: &Connection, run: Option<i64>) -> rusqlite::Result<u64> {
    conn.query_row(
        concat!(
            "SELECT count(*) AS n FROM rows
             WHERE (:run IS NULL OR run_id = :run) AND answer_unverified = 1 AND NOT ",
            done!()
        ),
        named_params! {":run": run},
        |r| r.get::<_, i64>("n"),
    )
    .map(|n| n as u64)
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
        "SELECT state, COALESCE(failure, '') AS failure, ambiguous, count(*) AS n FROM rows
         WHERE :run IS NULL OR run_id = :run GROUP BY state, failure, ambiguous",
    )?;
    let mut q = st.query(named_params! {":run": run})?;
    while let Some(r) = q.next()? {
        let state: String = r.get("state")?;
        let failure: String = r.get("failure")?;
        c.add(
            &state,
            &failure,
            r.get("ambiguous")?,
            r.get::<_, i64>("n")? as u64,
        );
    }
    c.unverified = unverified(conn, run)?;
    if let Some(id) = run_or_last(conn, run)? {
        let count = |sql: &str| -> rusqlite::Result<u64> {
            conn.query_row(sql, named_params! {":run_id": id}, |r| r.get::<_, i64>("n"))
                .map(|n| n as u64)
        };
        c.drifted = count("SELECT count(DISTINCT key) AS n FROM drift WHERE run_id = :run_id")?;
        c.rejected = count("SELECT count(*) AS n FROM rejects WHERE run_id = :run_id")?;
    }
    Ok(c)
}

impl OutcomeCounts {
    /// Adds `n` rows of `state` (with their failure kind, `""` for none, and ambiguity).
    pub fn add(&mut self, state: &str, failure: &str, ambiguous: bool, n: u64) {
        self.total += n;
        match State::parse(state) {
            Some(State::Pending) => self.pending += n,
            Some(State::InFlight) => self.in_flight += n,
            Some(State::Succeeded) => self.succeeded += n,
            Some(State::AlreadyCircled) => {
                self.already_circled += n;
                if ambiguous {
                    self.ambiguous += n;
                }
            }
            Some(State::Failed) if failure == "permanent" => self.failed_permanent += n,
            Some(State::Failed) => self.failed_transient += n,
            None => {}
        }
    }
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
    let mut st = conn.prepare(concat!(
        "SELECT mall_group_label, mall_label, sum(",
        done!(),
        ") AS done, sum(state = 'failed') AS failed,
                sum(state = 'pending' OR state = 'in_flight') AS pending
         FROM rows WHERE :run IS NULL OR run_id = :run
         GROUP BY mall_group_label, mall_label ORDER BY mall_group_label, mall_label"
    ))?;
    let rows = st.query_map(named_params! {":run": run}, |r| {
        Ok(MallCounts {
            mall_group_label: r.get("mall_group_label")?,
            mall_label: r.get("mall_label")?,
            done: r.get::<_, i64>("done")? as u64,
            failed: r.get::<_, i64>("failed")? as u64,
            pending: r.get::<_, i64>("pending")? as u64,
        })
    })?;
    rows.collect()
}

/// `(attempts, rows that took that many)`, for rows with at least one attempt.
pub fn attempts_per_row(conn: &Connection, run: Option<i64>) -> rusqlite::Result<Vec<(u64, u64)>> {
    let mut st = conn.prepare(
        "SELECT n, count(*) AS rows FROM
           (SELECT count(*) AS n FROM attempts WHERE :run IS NULL OR run_id = :run GROUP BY key)
         GROUP BY n ORDER BY n",
    )?;
    let rows = st.query_map(named_params! {":run": run}, |r| {
        Ok((
            r.get::<_, i64>("n")? as u64,
            r.get::<_, i64>("rows")? as u64,
        ))
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
        "SELECT COALESCE(latency_us, latency_ms * 1000) AS micros, latency_us IS NULL AS whole_ms,
                count(*) AS answers
         FROM attempts WHERE latency_ms IS NOT NULL AND (:run IS NULL OR run_id = :run)
         GROUP BY micros, whole_ms ORDER BY micros, whole_ms",
    )?;
    let rows = st.query_map(named_params! {":run": run}, |r| {
        Ok(Latency {
            micros: r.get::<_, i64>("micros")?.max(0) as u64,
            whole_ms: r.get("whole_ms")?,
            answers: r.get::<_, i64>("answers")? as u64,
        })
    })?;
    rows.collect()
}

/// Requests started in each second of one run: `(second as stored, YYYY-MM-DDTHH:MM:SS; count)`.
pub fn requests_per_second(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut st = conn.prepare(
        "SELECT substr(started_at, 1, 19) AS second, count(*) AS n FROM attempts
         WHERE run_id = :run_id GROUP BY second ORDER BY second",
    )?;
    let rows = st.query_map(named_params! {":run_id": run_id}, |r| {
        Ok((r.get("second")?, r.get::<_, i64>("n")? as u64))
    })?;
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
    // Every kind selects the columns AttentionRow is read from, by these names.
    const FROM_ROWS: &str = "SELECT source_file, source_line, key, store_name, mall_group_label,
                mall_label, COALESCE(result_code, '') AS code,
                COALESCE(result_message, '') AS detail, COALESCE(tracer_id, '') AS tracer_id
         FROM rows WHERE (:run IS NULL OR run_id = :run) AND";
    let sql = match kind {
        Attention::FailedPermanent => {
            format!("{FROM_ROWS} state = 'failed' AND failure = 'permanent'")
        }
        Attention::FailedTransient => {
            format!("{FROM_ROWS} state = 'failed' AND COALESCE(failure, '') <> 'permanent'")
        }
        Attention::Ambiguous => format!("{FROM_ROWS} state = 'already_circled' AND ambiguous = 1"),
        Attention::Unverified => format!(
            concat!("{} answer_unverified = 1 AND NOT ", done!()),
            FROM_ROWS
        ),
        Attention::Drifted => {
            "SELECT d.source_file AS source_file, d.source_line AS source_line, d.key AS key,
                    COALESCE(r.store_name, '') AS store_name,
                    COALESCE(r.mall_group_label, '') AS mall_group_label,
                    COALESCE(r.mall_label, '') AS mall_label,
                    COALESCE(r.result_code, '') AS code,
                    d.detail || COALESCE('; its pmsLabel is ' || NULLIF(r.pms_label, ''), '')
                        AS detail,
                    COALESCE(r.tracer_id, '') AS tracer_id
             FROM drift d LEFT JOIN rows r ON r.key = d.key WHERE d.run_id = :run"
                .to_owned()
        }
        Attention::Rejected => "SELECT file AS source_file, line AS source_line, '' AS key,
                    '' AS store_name, '' AS mall_group_label, '' AS mall_label,
                    'column ' || column_name AS code, reason AS detail, '' AS tracer_id
             FROM rejects WHERE run_id = :run"
            .to_owned(),
    };
    let run = match kind {
        Attention::Drifted | Attention::Rejected => match run_or_last(conn, run)? {
            Some(id) => Some(id),
            None => return Ok(Vec::new()),
        },
        _ => run,
    };
    let mut st = conn.prepare(&format!(
        "{sql} ORDER BY source_file, source_line LIMIT :limit"
    ))?;
    let rows = st.query_map(named_params! {":run": run, ":limit": limit as i64}, |r| {
        Ok(AttentionRow {
            source_file: r.get("source_file")?,
            source_line: r.get::<_, i64>("source_line")? as u64,
            key: r.get("key")?,
            store_name: r.get("store_name")?,
            mall_group_label: r.get("mall_group_label")?,
            mall_label: r.get("mall_label")?,
            code: r.get("code")?,
            detail: r.get("detail")?,
            tracer_id: r.get("tracer_id")?,
        })
    })?;
    rows.collect()
}

/// One run's record, by id.
pub fn run_info(conn: &Connection, run_id: i64) -> rusqlite::Result<Option<RunInfo>> {
    conn.query_row(
        concat!("SELECT ", run_columns!(), " FROM runs WHERE id = :run_id"),
        named_params! {":run_id": run_id},
        run_info_row,
    )
    .optional()
}
