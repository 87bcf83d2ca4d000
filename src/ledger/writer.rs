//! The single writer. Workers and the reader send it commands; it applies everything that has
//! queued up in one transaction and commits once (group commit), then answers each sender. A
//! worker waits for the answer to "mark in flight" before its request leaves, so the ledger on
//! disk always knows which requests may have reached the gateway.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use tokio::sync::oneshot;

use super::{RowId, State, now};
use crate::api::outcome::Attempt;
use crate::input::{Reject, Row, SaveWay, SourceRow};

/// How many commands at most go into one transaction.
const MAX_BATCH: usize = 4096;

/// What the ledger decided for one input row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Not done yet: this run sends it.
    Send,
    /// Succeeded or already circled earlier, same payload: not sent again.
    Done,
    /// Done earlier, but the sheet now says something else: not sent, reported.
    Drifted(String),
    /// Failed for good earlier with the same payload: sent again only with `--retry-failed`.
    FailedBefore,
}

/// Why a row failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Transient,
    Permanent,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Transient => "transient",
            Failure::Permanent => "permanent",
        }
    }
}

/// The row's new state after an attempt.
#[derive(Debug, Clone)]
pub struct RowUpdate {
    pub state: State,
    pub failure: Option<Failure>,
    pub ambiguous: bool,
    pub maybe_sent: bool,
    pub pms_label: Option<String>,
    pub result_code: Option<String>,
    pub result_message: Option<String>,
}

/// How a run ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    Interrupted,
    Aborted,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Aborted => "aborted",
        }
    }
}

/// The counts a run ends with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub rows_read: u64,
    pub to_send: u64,
    pub succeeded: u64,
    pub already_circled: u64,
    pub failed: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub already_done: u64,
    pub drifted: u64,
}

/// An input file as recorded with its run.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Cmd {
    BeginRun {
        config: String,
        files: Vec<FileInfo>,
        reply: Reply<i64>,
    },
    Recover {
        reply: Reply<u64>,
    },
    Ingest {
        run_id: i64,
        rows: Vec<(u64, SourceRow)>,
        retry_failed: bool,
        reply: Reply<Vec<Ingested>>,
    },
    Reject {
        run_id: i64,
        reject: Reject,
    },
    MarkInFlight {
        run_id: i64,
        row: RowId,
        reply: Reply<i64>,
    },
    Unsend {
        attempt_id: i64,
        row: RowId,
        reply: Reply<()>,
    },
    Record {
        attempt_id: i64,
        row: RowId,
        attempt: Box<Attempt>,
        update: RowUpdate,
        reply: Reply<()>,
    },
    /// [`Cmd::Record`] then [`Cmd::MarkInFlight`] for the worker's next row, in one transaction.
    RecordAndMark {
        attempt_id: i64,
        row: RowId,
        attempt: Box<Attempt>,
        update: RowUpdate,
        run_id: i64,
        next: RowId,
        reply: Reply<i64>,
    },
    FinishRun {
        run_id: i64,
        end: RunEnd,
        counts: RunCounts,
        message: Option<String>,
        reply: Reply<()>,
    },
}

/// A handle to the writer thread. Clone it freely; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
}

/// Joins the writer thread once every [`Writer`] is gone.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// Starts the writer on its own connection to `path`.
pub fn start(path: &Path) -> anyhow::Result<(Writer, WriterThread)> {
    let conn = super::open(path)?;
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || writer_loop(conn, rx))
        .context("cannot start the ledger writer")?;
    Ok((Writer { tx }, WriterThread(handle)))
}

fn gone<T>() -> Result<T, anyhow::Error> {
    Err(anyhow::anyhow!("the ledger writer has stopped"))
}

impl Writer {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return gone();
        }
        match rx.await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("ledger: {e}")),
            Err(_) => gone(),
        }
    }

    fn ask_blocking<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return gone();
        }
        match rx.blocking_recv() {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("ledger: {e}")),
            Err(_) => gone(),
        }
    }

    /// Records a new run and returns its id.
    pub fn begin_run(&self, config: String, files: Vec<FileInfo>) -> anyhow::Result<i64> {
        self.ask_blocking(|reply| Cmd::BeginRun {
            config,
            files,
            reply,
        })
    }

    /// Rows left `in_flight` by a process that ended abruptly go back to `pending`, marked as
    /// possibly sent; their open attempts become `lost`. Returns how many rows.
    pub fn recover(&self) -> anyhow::Result<u64> {
        self.ask_blocking(|reply| Cmd::Recover { reply })
    }

    pub async fn recover_async(&self) -> anyhow::Result<u64> {
        self.ask(|reply| Cmd::Recover { reply }).await
    }

    /// Records input rows (numbered `seq` in input order) and decides for each whether it is sent.
    pub fn ingest(
        &self,
        run_id: i64,
        rows: Vec<(u64, SourceRow)>,
        retry_failed: bool,
    ) -> anyhow::Result<Vec<Ingested>> {
        self.ask_blocking(|reply| Cmd::Ingest {
            run_id,
            rows,
            retry_failed,
            reply,
        })
    }

    /// Records a rejected row (committed with the next batch).
    pub fn reject(&self, run_id: i64, reject: Reject) -> anyhow::Result<()> {
        self.tx
            .send(Cmd::Reject { run_id, reject })
            .or_else(|_| gone())
    }

    /// Marks the row in flight and opens an attempt; returns once that is on disk.
    pub async fn mark_in_flight(&self, run_id: i64, row: RowId) -> anyhow::Result<i64> {
        self.ask(|reply| Cmd::MarkInFlight { run_id, row, reply })
            .await
    }

    /// The request of this attempt never left: the row is pending again and the attempt erased.
    pub async fn unsend(&self, attempt_id: i64, row: RowId) -> anyhow::Result<()> {
        self.ask(|reply| Cmd::Unsend {
            attempt_id,
            row,
            reply,
        })
        .await
    }

    /// Records what an attempt came to and the row's new state.
    pub async fn record(
        &self,
        attempt_id: i64,
        row: RowId,
        attempt: Attempt,
        update: RowUpdate,
    ) -> anyhow::Result<()> {
        self.ask(|reply| Cmd::Record {
            attempt_id,
            row,
            attempt: Box::new(attempt),
            update,
            reply,
        })
        .await
    }

    /// Records what an attempt came to and, in the same transaction, marks the worker's next row
    /// in flight and opens its attempt; returns that attempt's id once both are on disk. The
    /// outcome is committed no later than [`Writer::record`] would have committed it.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_and_mark(
        &self,
        attempt_id: i64,
        row: RowId,
        attempt: Attempt,
        update: RowUpdate,
        run_id: i64,
        next: RowId,
    ) -> anyhow::Result<i64> {
        self.ask(|reply| Cmd::RecordAndMark {
            attempt_id,
            row,
            attempt: Box::new(attempt),
            update,
            run_id,
            next,
            reply,
        })
        .await
    }

    pub async fn finish_run(
        &self,
        run_id: i64,
        end: RunEnd,
        counts: RunCounts,
        message: Option<String>,
    ) -> anyhow::Result<()> {
        self.ask(|reply| Cmd::FinishRun {
            run_id,
            end,
            counts,
            message,
            reply,
        })
        .await
    }
}

/// A reply waiting for the commit.
enum Answer {
    Id(Reply<i64>, rusqlite::Result<i64>),
    Count(Reply<u64>, rusqlite::Result<u64>),
    Unit(Reply<()>, rusqlite::Result<()>),
    Ingest(Reply<Vec<Ingested>>, rusqlite::Result<Vec<Ingested>>),
    None,
}

impl Answer {
    fn send(self, commit: &Result<(), String>) {
        fn go<T>(reply: Reply<T>, r: rusqlite::Result<T>, commit: &Result<(), String>) {
            let r = match commit {
                Ok(()) => r.map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            let _ = reply.send(r);
        }
        match self {
            Answer::Id(reply, r) => go(reply, r, commit),
            Answer::Count(reply, r) => go(reply, r, commit),
            Answer::Unit(reply, r) => go(reply, r, commit),
            Answer::Ingest(reply, r) => go(reply, r, commit),
            Answer::None => {}
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Cmd>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        let commit = match conn.transaction() {
            Ok(tx) => {
                for cmd in batch {
                    answers.push(apply(&tx, cmd));
                }
                tx.commit().map_err(|e| format!("cannot commit: {e}"))
            }
            Err(e) => {
                let e = format!("cannot start a transaction: {e}");
                answers.extend(batch.into_iter().map(|c| apply_failed(c, &e)));
                Err(e)
            }
        };
        if let Err(e) = &commit {
            tracing::error!("ledger: {e}");
        }
        for a in answers {
            a.send(&commit);
        }
    }
}

fn apply_failed(cmd: Cmd, e: &str) -> Answer {
    let err = || rusqlite::Error::InvalidParameterName(e.to_owned());
    match cmd {
        Cmd::BeginRun { reply, .. }
        | Cmd::MarkInFlight { reply, .. }
        | Cmd::RecordAndMark { reply, .. } => Answer::Id(reply, Err(err())),
        Cmd::Recover { reply } => Answer::Count(reply, Err(err())),
        Cmd::Ingest { reply, .. } => Answer::Ingest(reply, Err(err())),
        Cmd::Unsend { reply, .. } | Cmd::Record { reply, .. } | Cmd::FinishRun { reply, .. } => {
            Answer::Unit(reply, Err(err()))
        }
        Cmd::Reject { .. } => Answer::None,
    }
}

fn apply(tx: &Transaction<'_>, cmd: Cmd) -> Answer {
    match cmd {
        Cmd::BeginRun {
            config,
            files,
            reply,
        } => Answer::Id(reply, begin_run(tx, &config, &files)),
        Cmd::Recover { reply } => Answer::Count(reply, recover(tx)),
        Cmd::Ingest {
            run_id,
            rows,
            retry_failed,
            reply,
        } => Answer::Ingest(
            reply,
            rows.iter()
                .map(|(seq, row)| ingest_one(tx, run_id, *seq, row, retry_failed))
                .collect(),
        ),
        Cmd::Reject { run_id, reject } => {
            let r = tx
                .prepare_cached(
                    "INSERT INTO rejects (run_id, file, line, column_name, value, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        run_id,
                        reject.file,
                        reject.line as i64,
                        reject.column,
                        reject.value,
                        reject.reason
                    ])
                });
            if let Err(e) = r {
                tracing::error!("ledger: cannot record a reject: {e}");
            }
            Answer::None
        }
        Cmd::MarkInFlight { run_id, row, reply } => {
            Answer::Id(reply, mark_in_flight(tx, run_id, row))
        }
        Cmd::Unsend {
            attempt_id,
            row,
            reply,
        } => Answer::Unit(reply, unsend(tx, attempt_id, row)),
        Cmd::Record {
            attempt_id,
            row,
            attempt,
            update,
            reply,
        } => Answer::Unit(reply, record(tx, attempt_id, row, &attempt, &update)),
        Cmd::RecordAndMark {
            attempt_id,
            row,
            attempt,
            update,
            run_id,
            next,
            reply,
        } => Answer::Id(
            reply,
            record(tx, attempt_id, row, &attempt, &update)
                .and_then(|()| mark_in_flight(tx, run_id, next)),
        ),
        Cmd::FinishRun {
            run_id,
            end,
            counts,
            message,
            reply,
        } => Answer::Unit(
            reply,
            finish_run(tx, run_id, end, &counts, message.as_deref()),
        ),
    }
}

fn begin_run(tx: &Transaction<'_>, config: &str, files: &[FileInfo]) -> rusqlite::Result<i64> {
    // The run lock is held, so a run still marked running ended without saying so.
    tx.execute(
        "UPDATE runs SET outcome = 'crashed', ended_at = COALESCE(ended_at, ?1) WHERE outcome = 'running'",
        params![now()],
    )?;
    tx.execute(
        "INSERT INTO runs (started_at, config) VALUES (?1, ?2)",
        params![now(), config],
    )?;
    let run_id = tx.last_insert_rowid();
    for f in files {
        tx.execute(
            "INSERT INTO run_files (run_id, path, sha256, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, f.path, f.sha256, f.bytes as i64],
        )?;
    }
    Ok(run_id)
}

fn recover(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.execute(
        "UPDATE attempts SET outcome = 'lost',
             error = 'the process ended while this request was in flight; its outcome is unknown'
         WHERE outcome IS NULL",
        [],
    )?;
    let n = tx.execute(
        "UPDATE rows SET state = 'pending', maybe_sent = 1, updated_at = ?1 WHERE state = 'in_flight'",
        params![now()],
    )?;
    Ok(n as u64)
}

/// The stored row with the fields that decide what happens to a new sighting of it.
struct Stored {
    row: Row,
    state: State,
    failure: Option<String>,
}

fn stored(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<Stored>> {
    tx.prepare_cached(
        "SELECT save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, store_id,
                store_name, mall_group_label, mall_label, state, failure
         FROM rows WHERE key = ?1",
    )?
    .query_row([key], |r| {
        let way: String = r.get(0)?;
        let state: String = r.get(9)?;
        Ok(Stored {
            row: Row {
                save_way: SaveWay::parse(&way).unwrap_or(SaveWay::MerchantPms),
                ipay_trade_no: r.get(1)?,
                partner_id: r.get(2)?,
                merchant_id: r.get(3)?,
                merchant_name: r.get(4)?,
                store_id: r.get(5)?,
                store_name: r.get(6)?,
                mall_group_label: r.get(7)?,
                mall_label: r.get(8)?,
            },
            state: State::parse(&state).unwrap_or(State::Pending),
            failure: r.get(10)?,
        })
    })
    .optional()
}

fn ingest_one(
    tx: &Transaction<'_>,
    run_id: i64,
    seq: u64,
    src: &SourceRow,
    retry_failed: bool,
) -> rusqlite::Result<Ingested> {
    let key = src.row.key();
    let decision = match stored(tx, &key)? {
        None => {
            let r = &src.row;
            let t = now();
            tx.prepare_cached(
                "INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                     merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                     source_file, source_line, run_id, seq, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?14, ?15, ?15)",
            )?
            .execute(params![
                key,
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
                t
            ])?;
            return Ok(Ingested::Send);
        }
        Some(s) if s.state.is_done() => {
            if s.row.same_payload(&src.row) {
                Ingested::Done
            } else {
                let detail = format!(
                    "{} earlier; the sheet now says {}",
                    s.state.as_str(),
                    s.row.payload_differences(&src.row).join(", ")
                );
                tx.prepare_cached(
                    "INSERT INTO drift (run_id, key, source_file, source_line, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    run_id,
                    key,
                    src.file,
                    src.line as i64,
                    detail
                ])?;
                Ingested::Drifted(detail)
            }
        }
        Some(s)
            if s.state == State::Failed
                && s.failure.as_deref() == Some("permanent")
                && !retry_failed
                && s.row.same_payload(&src.row) =>
        {
            Ingested::FailedBefore
        }
        // pending, failed (transient, or permanent with a new payload or --retry-failed): send it,
        // with the payload the sheet now gives.
        Some(_) => Ingested::Send,
    };
    // Every sighting moves the row's source to this run's input; only rows to send take the
    // payload the sheet now gives and become pending again.
    let r = &src.row;
    if decision == Ingested::Send {
        tx.prepare_cached(
            "UPDATE rows SET state = 'pending', failure = NULL, merchant_name = ?3, store_name = ?4,
                 mall_group_label = ?5, mall_label = ?6, source_file = ?7, source_line = ?8,
                 run_id = ?1, seq = ?9, updated_at = ?10
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
            now()
        ])?;
    } else {
        tx.prepare_cached(
            "UPDATE rows SET source_file = ?3, source_line = ?4, run_id = ?1, seq = ?5 WHERE key = ?2",
        )?
        .execute(params![run_id, key, src.file, src.line as i64, seq as i64])?;
    }
    Ok(decision)
}

fn mark_in_flight(tx: &Transaction<'_>, run_id: i64, row: RowId) -> rusqlite::Result<i64> {
    let t = now();
    tx.prepare_cached(
        "UPDATE rows SET state = 'in_flight', attempts = attempts + 1, updated_at = ?2 WHERE rowid = ?1",
    )?
    .execute(params![row.0, t])?;
    tx.prepare_cached(
        "INSERT INTO attempts (key, run_id, attempt, started_at)
         SELECT key, ?2, attempts, ?3 FROM rows WHERE rowid = ?1",
    )?
    .execute(params![row.0, run_id, t])?;
    Ok(tx.last_insert_rowid())
}

fn unsend(tx: &Transaction<'_>, attempt_id: i64, row: RowId) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM attempts WHERE id = ?1")?
        .execute([attempt_id])?;
    tx.prepare_cached(
        "UPDATE rows SET state = 'pending', attempts = attempts - 1, updated_at = ?2 WHERE rowid = ?1",
    )?
    .execute(params![row.0, now()])?;
    Ok(())
}

fn record(
    tx: &Transaction<'_>,
    attempt_id: i64,
    row: RowId,
    a: &Attempt,
    u: &RowUpdate,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE attempts SET latency_ms = ?2, http_status = ?3, result_code = ?4, result_status = ?5,
             result_message = ?6, error = ?7, outcome = ?8
         WHERE id = ?1",
    )?
    .execute(params![
        attempt_id,
        a.latency.as_millis() as i64,
        a.http_status,
        a.result_code,
        a.result_status,
        a.result_message,
        a.error,
        a.outcome.kind()
    ])?;
    tx.prepare_cached(
        "UPDATE rows SET state = ?2, failure = ?3, ambiguous = ?4, maybe_sent = (maybe_sent OR ?5),
             pms_label = COALESCE(?6, pms_label), result_code = ?7, result_message = ?8, updated_at = ?9
         WHERE rowid = ?1",
    )?
    .execute(params![
        row.0,
        u.state.as_str(),
        u.failure.map(Failure::as_str),
        u.ambiguous,
        u.maybe_sent,
        u.pms_label,
        u.result_code,
        u.result_message,
        now()
    ])?;
    Ok(())
}

fn finish_run(
    tx: &Transaction<'_>,
    run_id: i64,
    end: RunEnd,
    c: &RunCounts,
    message: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET ended_at = ?2, outcome = ?3, rows_read = ?4, to_send = ?5, succeeded = ?6,
             already_circled = ?7, failed = ?8, rejected = ?9, duplicates = ?10, already_done = ?11,
             drifted = ?12, message = ?13
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
            message
        ],
    )?;
    Ok(())
}
