//! The single writer: an actor on its own thread. Workers and the reader send it commands; it
//! applies everything that has queued up in one transaction and commits once (group commit),
//! then answers each sender. The SQL is in `store`; this module owns the batching, and what
//! happens when the ledger cannot commit.
//!
//! - A worker waits for its row's "in flight" mark to be on disk before its request leaves, so
//!   the ledger always knows which requests may have reached the gateway.
//! - An answer is handed over and not waited for ([`Writer::record`]): from then on the writer
//!   owns it. Until it is committed it is also held in [`Held`], where it can be written to the
//!   side file from any thread (a second Ctrl-C included). Only a success is waited for, once
//!   committed: the ledger may refuse its label, held by another store ([`Recorded`]).
//! - When a commit fails because the ledger is unavailable (locked by another program, disk
//!   full, an I/O error), the batch is kept and tried again; meanwhile no mark is answered, so no
//!   new request leaves, and answers keep arriving into the batch. A lock is waited for as long
//!   as it takes; a full disk or an I/O error for [`GIVE_UP_AFTER`]. When the run must end first
//!   (Ctrl-C, giving up, the ledger file deleted or replaced, a damaged file), every answer held
//!   goes to the side file (`spill`), and the writer answers no more marks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{oneshot, watch};

use super::RowId;
use super::error::LedgerError;
use super::lock::LedgerLock;
use super::spill::{self, Spilled};
use super::store::{self, Answered, FileInfo, KeptAnswer, Verdict};
use crate::api::outcome::{Attempt, Outcome};
use crate::input::{Reject, SourceRow};
use crate::model::{RowUpdate, RunCounts, RunEnd, Sighting};

/// How many commands at most go into one transaction.
const MAX_BATCH: usize = 4096;

/// How long a full disk or an I/O error is retried before the run ends (a lock held by another
/// program is waited for until Ctrl-C: a person is about to let go of it).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// The writer's connection waits this long for a lock before the writer takes control again
/// (to take in more commands, to see whether it must spill).
const BUSY_SLICE: Duration = Duration::from_millis(250);

/// How the ledger is doing, for the person watching the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Commits fail for now and are being retried; no new request leaves.
    Waiting {
        reason: String,
        since: Instant,
        held: usize,
    },
    /// The writer gave up: what it held went to the side file.
    Failed {
        reason: String,
    },
}

/// What was written to the side file.
#[derive(Debug, Clone, Default)]
pub struct SpillReport {
    pub path: PathBuf,
    /// One line per answer, to show on stderr too.
    pub answers: Vec<String>,
    /// When the side file itself could not be written.
    pub error: Option<String>,
}

/// Answers handed to the writer and not yet committed, by attempt id.
#[derive(Default)]
pub struct Held {
    answers: Mutex<BTreeMap<i64, Arc<Answered>>>,
    side_file: PathBuf,
    /// What the writer thread spilled, for the pipeline to show (the writer does not print).
    reports: Mutex<Vec<SpillReport>>,
}

impl Held {
    /// Writes every answer held to the side file (each once) and says what it wrote.
    pub fn spill(&self) -> SpillReport {
        let taken: Vec<Arc<Answered>> = {
            let mut map = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *map).into_values().collect()
        };
        let spilled: Vec<Spilled> = taken
            .iter()
            .map(|a| Spilled::new(a, String::new(), 0))
            .collect();
        write_side_file(&self.side_file, spilled)
    }

    /// Takes the reports of what the writer thread spilled so far.
    pub fn take_reports(&self) -> Vec<SpillReport> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn report(&self, report: SpillReport) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }

    fn len(&self) -> usize {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn write_side_file(path: &Path, spilled: Vec<Spilled>) -> SpillReport {
    SpillReport {
        path: path.to_owned(),
        answers: spilled.iter().map(Spilled::describe).collect(),
        error: spill::append(path, &spilled)
            .err()
            .map(|e| format!("cannot write {}: {e}", path.display())),
    }
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
        reply: Reply<Vec<Sighting>>,
    },
    Reject {
        run_id: i64,
        reject: Reject,
    },
    Mark {
        run_id: i64,
        row: RowId,
        reply: Reply<Option<i64>>,
    },
    Unsend {
        attempt_id: i64,
        row: RowId,
    },
    /// An answer; a success with where to say what the ledger made of it.
    Record(Arc<Answered>, Option<oneshot::Sender<Verdict>>),
    Reverified {
        kept: Box<KeptAnswer>,
        attempt: Box<Attempt>,
        update: RowUpdate,
    },
    FinishRun {
        run_id: i64,
        end: RunEnd,
        counts: RunCounts,
        message: Option<String>,
        reply: Reply<RunCounts>,
    },
}

/// A command's result, sent to its caller once the batch is committed.
enum Done {
    Id(i64),
    MaybeId(Option<i64>),
    Count(u64),
    Sightings(Vec<Sighting>),
    Counts(RunCounts),
    Verdict(Verdict),
    Nothing,
}

/// A handle to the writer thread. Clone it freely; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
    held: Arc<Held>,
    spill_now: Arc<AtomicBool>,
    health: watch::Receiver<Health>,
}

/// Joins the writer thread once every [`Writer`] is gone.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    /// Waits for the thread, at most `limit` (a thread stuck in a system call is left behind:
    /// everything it held was spilled or committed).
    pub fn join(self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.0.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.0.is_finished() {
            let _ = self.0.join();
        }
    }
}

/// Starts the writer on its own connection to the ledger `lock` holds.
pub fn start(lock: LedgerLock) -> anyhow::Result<(Writer, WriterThread)> {
    let conn = super::open_unlocked(lock.path())?.into_connection();
    conn.busy_timeout(BUSY_SLICE)?;
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(Held {
        answers: Mutex::default(),
        side_file: spill::path_for(lock.path()),
        reports: Mutex::default(),
    });
    let spill_now = Arc::new(AtomicBool::new(false));
    let (health_tx, health) = watch::channel(Health::Ok);
    let actor = Actor {
        conn,
        lock,
        rx,
        held: held.clone(),
        spill_now: spill_now.clone(),
        health: health_tx,
        run_id: None,
        failed: None,
    };
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || actor.run())
        .context("cannot start the ledger writer")?;
    Ok((
        Writer {
            tx,
            held,
            spill_now,
            health,
        },
        WriterThread(handle),
    ))
}

fn gone<T>() -> anyhow::Result<T> {
    Err(anyhow::anyhow!("the ledger writer has stopped"))
}

impl Writer {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return gone();
        }
        match rx.await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("{e}")),
            Err(_) => gone(),
        }
    }

    fn ask_blocking<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return gone();
        }
        match rx.blocking_recv() {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("{e}")),
            Err(_) => gone(),
        }
    }

    /// How the ledger is doing (watch it to tell the person, and to stop when it failed).
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    /// The answers held and not yet committed, and how to spill them from any thread.
    pub fn held(&self) -> Arc<Held> {
        self.held.clone()
    }

    /// Asks the writer to stop retrying: it spills what it holds and answers no more marks.
    pub fn give_up(&self) {
        self.spill_now.store(true, Relaxed);
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
    /// possibly sent. Returns how many rows.
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
    ) -> anyhow::Result<Vec<Sighting>> {
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

    /// Marks a row in flight and returns its new attempt's id once that is on disk; `None` when
    /// the row is not this run's to send (no longer pending, or another run took it).
    pub async fn mark_in_flight(&self, run_id: i64, row: RowId) -> anyhow::Result<Option<i64>> {
        self.ask(|reply| Cmd::Mark { run_id, row, reply }).await
    }

    /// Undoes a mark whose request never left.
    pub fn unsend(&self, attempt_id: i64, row: RowId) {
        let _ = self.tx.send(Cmd::Unsend { attempt_id, row });
    }

    /// Hands an answer over. It is committed with the next batch, or spilled to the side file if
    /// that cannot be; either way the caller need not wait, except to learn what the ledger made
    /// of a success ([`Recorded::verdict`]).
    pub fn record(&self, answered: Answered) -> Recorded {
        let answered = Arc::new(answered);
        self.held
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(answered.attempt_id, answered.clone());
        let (reply, verdict) = match answered.attempt.outcome {
            Outcome::Success { .. } => {
                let (reply, verdict) = oneshot::channel();
                (Some(reply), Some(verdict))
            }
            _ => (None, None),
        };
        // Should the writer be gone, the answer is still held, and spilled with the rest.
        let _ = self.tx.send(Cmd::Record(answered.clone(), reply));
        Recorded { answered, verdict }
    }

    /// An answer kept unverified by an earlier run verifies now.
    pub fn reverified(&self, kept: KeptAnswer, attempt: Attempt, update: RowUpdate) {
        let _ = self.tx.send(Cmd::Reverified {
            kept: Box::new(kept),
            attempt: Box::new(attempt),
            update,
        });
    }

    /// Ends the run record; returns the counts as stored (drift counted by the ledger).
    pub async fn finish_run(
        &self,
        run_id: i64,
        end: RunEnd,
        counts: RunCounts,
        message: Option<String>,
    ) -> anyhow::Result<RunCounts> {
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

/// An answer handed to the writer ([`Writer::record`]).
pub struct Recorded {
    answered: Arc<Answered>,
    verdict: Option<oneshot::Receiver<Verdict>>,
}

impl Recorded {
    /// What the ledger made of the answer: for a success, once its batch is committed (a label
    /// another store holds: [`Verdict::LabelHeldBy`]); anything else is [`Verdict::Kept`] at
    /// once. Also `Kept` when the writer is gone or the answer went to the side file: taking the
    /// side file in applies the same rule.
    pub async fn verdict(&mut self) -> Verdict {
        match self.verdict.take() {
            Some(verdict) => verdict.await.unwrap_or(Verdict::Kept),
            None => Verdict::Kept,
        }
    }

    /// The answer as it was handed over.
    pub fn answered(&self) -> &Answered {
        &self.answered
    }
}

struct Actor {
    conn: Connection,
    lock: LedgerLock,
    rx: mpsc::Receiver<Cmd>,
    held: Arc<Held>,
    spill_now: Arc<AtomicBool>,
    health: watch::Sender<Health>,
    /// The run this writer records (for the answers to save if the file disappears).
    run_id: Option<i64>,
    /// Set once the writer gave up: nothing is committed any more.
    failed: Option<String>,
}

impl Actor {
    fn run(mut self) {
        let mut batch: Vec<Cmd> = Vec::new();
        let mut unavailable_since: Option<Instant> = None;
        loop {
            if batch.is_empty() {
                match self.rx.recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if let Some(reason) = self.failed.clone() {
                self.refuse(std::mem::take(&mut batch), &reason);
                continue;
            }
            match self.commit(&batch) {
                Ok(results) => {
                    unavailable_since = None;
                    self.done(std::mem::take(&mut batch), results);
                    if !matches!(*self.health.borrow(), Health::Ok) {
                        self.health.send_replace(Health::Ok);
                    }
                }
                Err(e) if e.is_unavailable() => {
                    let since = *unavailable_since.get_or_insert_with(Instant::now);
                    let give_up = self.spill_now.load(Relaxed)
                        || (!e.is_busy() && since.elapsed() >= GIVE_UP_AFTER);
                    if give_up {
                        self.fail(format!("{e}"), &mut batch);
                        continue;
                    }
                    self.health.send_replace(Health::Waiting {
                        reason: e.to_string(),
                        since,
                        held: self.held.len(),
                    });
                    // The busy slice already waited for a lock; other errors wait here.
                    if !e.is_busy() {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => {
                    if let LedgerError::Gone(_) = e
                        && let Some(run_id) = self.run_id
                    {
                        // The answers this run committed are in the file it still has open.
                        self.save_run_from_lost_file(run_id);
                    }
                    self.fail(format!("{e}"), &mut batch);
                }
            }
        }
    }

    /// One transaction for the whole batch. An unavailable ledger fails the whole batch (it is
    /// kept and tried again); any other error fails only its own command.
    fn commit(&mut self, batch: &[Cmd]) -> Result<Vec<Result<Done, String>>, LedgerError> {
        if let Some(gone) = self.lock.check() {
            return Err(LedgerError::Gone(gone));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        for cmd in batch {
            match apply(&tx, cmd) {
                Ok(done) => results.push(Ok(done)),
                Err(e) => {
                    let e = LedgerError::from(e);
                    if e.is_unavailable() || matches!(e, LedgerError::Corrupt(_)) {
                        return Err(e);
                    }
                    results.push(Err(e.to_string()));
                }
            }
        }
        tx.commit()?;
        Ok(results)
    }

    fn done(&mut self, batch: Vec<Cmd>, results: Vec<Result<Done, String>>) {
        let mut committed = Vec::new();
        let mut refused = Vec::new();
        for (cmd, result) in batch.into_iter().zip(results) {
            if let (Cmd::BeginRun { .. }, Ok(Done::Id(id))) = (&cmd, &result) {
                self.run_id = Some(*id);
            }
            match cmd {
                Cmd::Record(a, reply) => {
                    committed.push(a.attempt_id);
                    match result {
                        Ok(Done::Verdict(verdict)) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(verdict);
                            }
                        }
                        // An answer the ledger refused (a bug, not a busy ledger) is not
                        // dropped: it goes to the side file with the reason in the log.
                        Err(e) => {
                            tracing::error!(
                                "ledger: cannot record the answer for {}: {e}",
                                a.row.key()
                            );
                            refused.push(Spilled::new(&a, String::new(), 0));
                        }
                        Ok(_) => {}
                    }
                }
                cmd => reply_to(cmd, result),
            }
        }
        if !committed.is_empty() {
            let mut held = self.held.answers.lock().unwrap_or_else(|e| e.into_inner());
            for id in committed {
                held.remove(&id);
            }
        }
        if !refused.is_empty() {
            let report = write_side_file(&self.held.side_file, refused);
            self.held.report(report);
        }
    }

    /// Gives up: every answer held goes to the side file, the batch's callers are told, and
    /// nothing more is committed.
    fn fail(&mut self, reason: String, batch: &mut Vec<Cmd>) {
        self.failed = Some(reason.clone());
        self.refuse(std::mem::take(batch), &reason);
        self.health.send_replace(Health::Failed { reason });
    }

    /// Answers a batch the writer will not commit: answers to the side file, errors to callers.
    fn refuse(&mut self, batch: Vec<Cmd>, reason: &str) {
        for cmd in batch {
            reply_to(cmd, Err(format!("the ledger cannot be written: {reason}")));
        }
        // A refused answer is still held (`Writer::record` holds it before sending it here).
        let report = self.held.spill();
        if !report.answers.is_empty() {
            self.held.report(report);
        }
    }

    fn save_run_from_lost_file(&mut self, run_id: i64) {
        let Ok(answers) = store::answers_of_run(&self.conn, run_id) else {
            return;
        };
        let report = write_side_file(&self.held.side_file, answers);
        self.held.report(report);
    }
}

fn send<T>(reply: Reply<T>, result: Result<Done, String>, pick: impl FnOnce(Done) -> Option<T>) {
    let r = result.and_then(|d| pick(d).ok_or_else(|| "internal error: wrong reply".to_owned()));
    let _ = reply.send(r);
}

fn reply_to(cmd: Cmd, result: Result<Done, String>) {
    match cmd {
        Cmd::BeginRun { reply, .. } => send(reply, result, |d| match d {
            Done::Id(id) => Some(id),
            _ => None,
        }),
        Cmd::Recover { reply } => send(reply, result, |d| match d {
            Done::Count(n) => Some(n),
            _ => None,
        }),
        Cmd::Ingest { reply, .. } => send(reply, result, |d| match d {
            Done::Sightings(s) => Some(s),
            _ => None,
        }),
        Cmd::Mark { reply, .. } => send(reply, result, |d| match d {
            Done::MaybeId(id) => Some(id),
            _ => None,
        }),
        Cmd::FinishRun { reply, .. } => send(reply, result, |d| match d {
            Done::Counts(c) => Some(c),
            _ => None,
        }),
        Cmd::Record(..) | Cmd::Reject { .. } | Cmd::Unsend { .. } | Cmd::Reverified { .. } => {
            if let Err(e) = result {
                tracing::error!("ledger: {e}");
            }
        }
    }
}

fn apply(tx: &Connection, cmd: &Cmd) -> rusqlite::Result<Done> {
    Ok(match cmd {
        Cmd::BeginRun { config, files, .. } => Done::Id(store::begin_run(tx, config, files)?),
        Cmd::Recover { .. } => Done::Count(store::recover(tx)?),
        Cmd::Ingest {
            run_id,
            rows,
            retry_failed,
            ..
        } => Done::Sightings(
            rows.iter()
                .map(|(seq, row)| store::ingest(tx, *run_id, *seq, row, *retry_failed))
                .collect::<rusqlite::Result<_>>()?,
        ),
        Cmd::Reject { run_id, reject } => {
            store::reject(tx, *run_id, reject)?;
            Done::Nothing
        }
        Cmd::Mark { run_id, row, .. } => Done::MaybeId(store::mark_in_flight(tx, *run_id, *row)?),
        Cmd::Unsend { attempt_id, row } => {
            store::unsend(tx, *attempt_id, *row)?;
            Done::Nothing
        }
        Cmd::Record(a, _) => Done::Verdict(store::record(tx, a)?),
        Cmd::Reverified {
            kept,
            attempt,
            update,
        } => {
            store::accept_reverified(tx, kept, attempt, update)?;
            Done::Nothing
        }
        Cmd::FinishRun {
            run_id,
            end,
            counts,
            message,
            ..
        } => Done::Counts(store::finish_run(
            tx,
            *run_id,
            *end,
            counts,
            message.as_deref(),
        )?),
    })
}
