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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
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

/// How long the ledger may stay unavailable before the answers held are also copied to the side
/// file (they stay held and are committed when it can be written).
pub const COPY_AFTER: Duration = Duration::from_secs(10);

/// How long the last words wait for answers being handed over as they are said.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(2);

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
        /// How many of those are also in the side file (past [`COPY_AFTER`]).
        in_side_file: usize,
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

/// Answers handed to the writer and not yet committed, and the side file, which only this
/// writes (under its one lock, so that no two writes interleave and none races the last words).
pub struct Held {
    inner: Mutex<Inner>,
    side_file: PathBuf,
    /// Answers being handed over right now, for the last words to wait for.
    handing_over: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    /// By attempt id.
    answers: BTreeMap<i64, Arc<Answered>>,
    /// Those whose copy is in the side file already (the ledger busy for long).
    copied: BTreeSet<i64>,
    /// Set by the last words: from then on an answer handed over goes to the side file at once.
    sealed: bool,
    /// Answers already shown in a report of a side file that could not be written.
    shown_unwritten: BTreeSet<i64>,
    /// Whether copying failed already (said once, not every slice).
    copy_failed: bool,
    /// What was spilled so far, for the pipeline to show (the writer does not print).
    reports: Vec<SpillReport>,
}

impl Inner {
    /// The answers held whose copy is not in the side file yet.
    fn not_in_side_file(&self) -> Vec<Spilled> {
        self.answers
            .iter()
            .filter(|(id, _)| !self.copied.contains(id))
            .map(|(_, a)| Spilled::new(a, String::new(), 0))
            .collect()
    }
}

impl Held {
    fn new(side_file: PathBuf) -> Held {
        Held {
            inner: Mutex::default(),
            side_file,
            handing_over: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an answer handed over. `true`: it is held, for the writer to commit. `false`: the
    /// last words began, so it was written to the side file here and now (and to stderr).
    fn hold(&self, a: &Arc<Answered>) -> bool {
        self.handing_over.fetch_add(1, SeqCst);
        let mut inner = self.lock();
        let held = !inner.sealed;
        if held {
            inner.answers.insert(a.attempt_id, a.clone());
        } else {
            let report = self.write(vec![Spilled::new(a, String::new(), 0)]);
            for line in &report.answers {
                tracing::error!("an answer after the last words: {line}");
            }
            inner.reports.push(report);
        }
        drop(inner);
        self.handing_over.fetch_sub(1, SeqCst);
        held
    }

    /// Writes every answer held to the side file (a copy already there is not written again),
    /// and lets them go once they are on disk; says what it wrote, or could not write.
    pub fn spill(&self) -> SpillReport {
        self.spill_locked(&mut self.lock())
    }

    fn spill_locked(&self, inner: &mut Inner) -> SpillReport {
        let fresh = inner.not_in_side_file();
        let mut report = self.write(fresh);
        if report.error.is_none() {
            // On disk: let go, copies included, and say so for each.
            report.answers = std::mem::take(&mut inner.answers)
                .values()
                .map(|a| Spilled::new(a, String::new(), 0).describe())
                .collect();
            inner.copied.clear();
        } else {
            // Still held, and shown once: a later spill may yet write them.
            let shown = &mut inner.shown_unwritten;
            report.answers = inner
                .answers
                .iter()
                .filter(|(id, _)| !inner.copied.contains(id) && shown.insert(**id))
                .map(|(_, a)| Spilled::new(a, String::new(), 0).describe())
                .collect();
        }
        report
    }

    /// The last words, before the process exits at a second Ctrl-C: what is held goes to the
    /// side file now, and from now on an answer handed over is written there by the one who
    /// hands it over. Answers being handed over meanwhile are waited for (briefly).
    pub fn seal(&self) -> SpillReport {
        let report = {
            let mut inner = self.lock();
            inner.sealed = true;
            self.spill_locked(&mut inner)
        };
        let until = Instant::now() + LAST_WORDS_WAIT;
        while self.handing_over.load(SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        report
    }

    /// A ledger unavailable for long: a copy of every answer held goes to the side file too,
    /// so that a power cut loses none; they stay held and are committed when the ledger can be
    /// written (and the copies then removed). Returns how many are in the side file.
    fn copy(&self) -> usize {
        let mut inner = self.lock();
        let fresh = inner.not_in_side_file();
        if inner.sealed || fresh.is_empty() {
            return inner.copied.len();
        }
        match spill::append(&self.side_file, &fresh) {
            Ok(()) => {
                inner.copied.extend(fresh.iter().map(|a| a.attempt_id));
                inner.copy_failed = false;
            }
            Err(e) if !inner.copy_failed => {
                inner.copy_failed = true;
                tracing::warn!(
                    "cannot keep a copy of the answers held in {}: {e}; they stay in memory",
                    self.side_file.display()
                );
            }
            Err(_) => {}
        }
        inner.copied.len()
    }

    /// Answers committed: let go, and their copies, if any, taken out of the side file.
    fn committed(&self, answers: &[(i64, i64)]) {
        let mut inner = self.lock();
        let mut copies = BTreeSet::new();
        for &(run_id, attempt_id) in answers {
            inner.answers.remove(&attempt_id);
            if inner.copied.remove(&attempt_id) {
                copies.insert((run_id, attempt_id));
            }
        }
        // Once sealed the process is about to exit: no file is rewritten then.
        if !copies.is_empty()
            && !inner.sealed
            && let Err(e) = spill::remove(&self.side_file, &copies)
        {
            tracing::warn!(
                "{} keeps copies of {} answer(s) the ledger has since committed ({e}); taking \
                 them in again does no harm",
                self.side_file.display(),
                copies.len()
            );
        }
    }

    /// Answers the ledger refused (a bug, not a busy ledger): to the side file, let go once there.
    fn refused(&self, answers: &[Arc<Answered>]) {
        let mut inner = self.lock();
        let report = self.write(
            answers
                .iter()
                .map(|a| Spilled::new(a, String::new(), 0))
                .collect(),
        );
        if report.error.is_none() {
            for a in answers {
                inner.answers.remove(&a.attempt_id);
                inner.copied.remove(&a.attempt_id);
            }
        }
        inner.reports.push(report);
    }

    /// Writes answers that are not held (those a lost ledger file still had), under the lock.
    fn write_also(&self, answers: Vec<Spilled>) {
        let mut inner = self.lock();
        let report = self.write(answers);
        inner.reports.push(report);
    }

    /// Takes the reports of what the writer thread spilled so far.
    pub fn take_reports(&self) -> Vec<SpillReport> {
        std::mem::take(&mut self.lock().reports)
    }

    fn report(&self, report: SpillReport) {
        if !report.answers.is_empty() {
            self.lock().reports.push(report);
        }
    }

    fn len(&self) -> usize {
        self.lock().answers.len()
    }

    /// Appends to the side file; the caller holds the lock (or owns answers nobody else holds).
    fn write(&self, spilled: Vec<Spilled>) -> SpillReport {
        SpillReport {
            path: self.side_file.clone(),
            answers: spilled.iter().map(Spilled::describe).collect(),
            error: spill::append(&self.side_file, &spilled)
                .err()
                .map(|e| format!("cannot write {}: {e}", self.side_file.display())),
        }
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
    let held = Arc::new(Held::new(spill::path_for(lock.path())));
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
        let (reply, verdict) = match answered.attempt.outcome {
            Outcome::Success { .. } => {
                let (reply, verdict) = oneshot::channel();
                (Some(reply), Some(verdict))
            }
            _ => (None, None),
        };
        // Once the last words began, `hold` wrote it to the side file itself (and the verdict
        // is `Kept`: taking the side file in applies the same rule to its label).
        if self.held.hold(&answered) {
            // Should the writer be gone, the answer is still held, and spilled with the rest.
            let _ = self.tx.send(Cmd::Record(answered.clone(), reply));
        }
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
                    // Held in memory only, a power cut would lose them.
                    let in_side_file = if since.elapsed() >= COPY_AFTER {
                        self.held.copy()
                    } else {
                        0
                    };
                    self.health.send_replace(Health::Waiting {
                        reason: e.to_string(),
                        since,
                        held: self.held.len(),
                        in_side_file,
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
            match (cmd, result) {
                (Cmd::Record(a, reply), Ok(done)) => {
                    committed.push((a.run_id, a.attempt_id));
                    if let (Done::Verdict(verdict), Some(reply)) = (done, reply) {
                        let _ = reply.send(verdict);
                    }
                }
                // An answer the ledger refused (a bug, not a busy ledger) is not dropped:
                // it goes to the side file with the reason in the log.
                (Cmd::Record(a, _), Err(e)) => {
                    tracing::error!("ledger: cannot record the answer for {}: {e}", a.row.key());
                    refused.push(a);
                }
                (cmd, result) => reply_to(cmd, result),
            }
        }
        if !committed.is_empty() {
            self.held.committed(&committed);
        }
        if !refused.is_empty() {
            self.held.refused(&refused);
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
        self.held.report(report);
    }

    fn save_run_from_lost_file(&mut self, run_id: i64) {
        let Ok(answers) = store::answers_of_run(&self.conn, run_id) else {
            return;
        };
        self.held.write_also(answers);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::spill::{contents, sample};

    fn attempts_in(side_file: &std::path::Path) -> BTreeSet<i64> {
        if !side_file.exists() {
            return BTreeSet::new();
        }
        let c = contents(side_file).unwrap();
        assert!(c.unreadable.is_empty());
        c.answers.iter().map(|a| a.attempt_id).collect()
    }

    #[test]
    fn no_answer_handed_over_while_the_last_words_are_said_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("l.db.unwritten.jsonl");
        let held = Arc::new(Held::new(side.clone()));
        // The handing thread goes on until the seal has turned away 50 answers, however the
        // two threads are scheduled (a fixed count raced the seal on a loaded machine).
        let handing = {
            let held = held.clone();
            std::thread::spawn(move || {
                let (mut id, mut turned_away) = (0, 0);
                while turned_away < 50 && id < 5_000_000 {
                    if !held.hold(&Arc::new(sample(id, &format!("2026{id}")))) {
                        turned_away += 1;
                    }
                    id += 1;
                }
                (id, turned_away)
            })
        };
        while held.len() < 200 {
            std::thread::yield_now();
        }
        let report = held.seal();
        let (handed, turned_away) = handing.join().unwrap();
        assert!(report.error.is_none());
        assert_eq!(turned_away, 50, "the seal came before the last");
        // Those held went with the last words; every later one was written by its caller.
        assert_eq!(attempts_in(&side), (0..handed).collect());
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn a_side_file_that_cannot_be_written_keeps_the_answers_held() {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("not-yet/l.db.unwritten.jsonl");
        let held = Held::new(side.clone());
        assert!(held.hold(&Arc::new(sample(1, "20261"))));
        let report = held.spill();
        assert!(report.error.is_some());
        assert_eq!(report.answers.len(), 1, "shown, to be kept by hand");
        assert_eq!(held.len(), 1, "not let go");
        assert!(held.hold(&Arc::new(sample(2, "20262"))));
        let again = held.spill();
        assert_eq!(
            again.answers.len(),
            1,
            "each shown once: {:?}",
            again.answers
        );
        std::fs::create_dir(dir.path().join("not-yet")).unwrap();
        let written = held.spill();
        assert!(written.error.is_none());
        assert_eq!(written.answers.len(), 2);
        assert_eq!(held.len(), 0);
        assert_eq!(attempts_in(&side), BTreeSet::from([1, 2]));
    }

    #[test]
    fn copies_of_a_busy_ledger_leave_the_side_file_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("l.db.unwritten.jsonl");
        let held = Held::new(side.clone());
        for id in [1, 2] {
            assert!(held.hold(&Arc::new(sample(id, &format!("2026{id}")))));
        }
        assert_eq!(held.copy(), 2);
        assert_eq!(held.copy(), 2, "each copied once");
        assert_eq!(attempts_in(&side), BTreeSet::from([1, 2]));
        assert_eq!(held.len(), 2, "still held, to be committed");
        held.committed(&[(1, 1)]);
        assert_eq!(attempts_in(&side), BTreeSet::from([2]));
        // A spill now writes no second copy, and lets go of every answer.
        assert!(held.hold(&Arc::new(sample(3, "20263"))));
        let report = held.spill();
        assert_eq!(report.answers.len(), 2);
        assert_eq!(attempts_in(&side), BTreeSet::from([2, 3]));
        let lines = std::fs::read_to_string(&side).unwrap().lines().count();
        assert_eq!(lines, 2);
        held.committed(&[(1, 2), (1, 3)]);
        assert!(side.exists(), "spilled answers are not copies: they stay");
    }
}
