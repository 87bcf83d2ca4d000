//! The one seam between a run and its ledger: [`RunStore`], the operations the pipeline calls,
//! dispatched to the SQLite writer or to a PostgreSQL [`PgStore`]; [`RunReader`], the feeder's
//! pages. The pipeline never knows which store is behind them.
//!
//! On PostgreSQL every operation commits before it returns; an answer whose commit fails goes
//! to the run's side file (`postgres::late`) and stops the run. The store is shared by the workers
//! behind a read-write lock: statements that stand alone (a claim, a page, a slot) run side by
//! side on the one connection; a transaction (ingest, an answer, the sweep, the end) holds it
//! alone, so that no claim is ever sent inside another's transaction.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::runtime::Handle;
use tokio::sync::RwLock;

use super::postgres::{self, PgStore};
use super::queries::{self, LedgerRow};
use super::spill::Spilled;
use super::store::{Answered, FileInfo, Verdict};
use super::writer::{Held, Recorded, SpillReport, Writer};
use super::{Claimed, RowId};
use crate::input::{Reject, SourceRow};
use crate::model::{RunCounts, RunEnd, Sighting};

/// The window a shared rate spaces `rate` slots over: wider than the run's own ceiling (1.03 s)
/// by what a request may leave after its slot ([`SLOT_LATE`] and the send itself).
pub const SHARED_WINDOW: Duration = Duration::from_millis(1050);

/// The most a request may leave after its shared slot; later, it takes the next one.
pub const SLOT_LATE: Duration = Duration::from_millis(20);

/// A run's PostgreSQL store, with what its shared rate needs and its side file.
pub struct PgRun {
    store: RwLock<PgStore>,
    handle: Handle,
    client_id: String,
    rate: u32,
    /// The folder the run's side file goes to (`postgres::late::state_dir`), and the URL that
    /// names it.
    state_dir: PathBuf,
    url: String,
    /// The run's side file (named once the run has its id) and what went to it.
    side: Mutex<Side>,
}

#[derive(Default)]
struct Side {
    path: Option<PathBuf>,
    report: Option<SpillReport>,
}

impl PgRun {
    pub fn new(
        store: PgStore,
        handle: Handle,
        client_id: &str,
        rate: u32,
        state_dir: PathBuf,
    ) -> Arc<PgRun> {
        Arc::new(PgRun {
            url: store.url().to_owned(),
            store: RwLock::new(store),
            handle,
            client_id: client_id.to_owned(),
            rate,
            state_dir,
            side: Mutex::default(),
        })
    }

    /// After a statement failed on connection `seen`: a new connection when that one is gone
    /// (the server restarted, the connection was cut); `true` when there is one to try the
    /// statement again on, once. The claims and the lease do not depend on a connection: they
    /// are rows on the server.
    async fn heal(&self, seen: u64) -> bool {
        self.store.write().await.reconnect_if_closed(seen).await
    }

    fn side(&self) -> std::sync::MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps an answer the ledger could not commit in the run's side file (synced) and returns
    /// the error that stops the run: no request is sent on a ledger that cannot take answers.
    fn spill(&self, answered: &Answered, failed: anyhow::Error) -> anyhow::Error {
        let mut side = self.side();
        let path = side.path.clone().unwrap_or_else(|| {
            postgres::late::side_file(&self.state_dir, &self.url, answered.run_id)
        });
        let kept = postgres::late::spill(&path, answered);
        let report = side.report.get_or_insert_with(|| SpillReport {
            path: path.clone(),
            answers: Vec::new(),
            error: None,
        });
        report
            .answers
            .push(Spilled::new(answered, String::new(), 0).describe());
        match kept {
            Ok(()) => failed.context(format!(
                "the PostgreSQL ledger cannot take answers: those received are kept in {} and \
                 taken in by the next command on this host that opens the ledger",
                path.display()
            )),
            Err(e) => {
                report.error = Some(format!("cannot write {}: {e}", path.display()));
                failed.context(format!(
                    "the PostgreSQL ledger cannot take answers, and the side file {} cannot be \
                     written either ({e}): the answers are shown above, keep them",
                    path.display()
                ))
            }
        }
    }
}

/// The store a run writes to.
#[derive(Clone)]
pub enum RunStore {
    Sqlite(Writer),
    Postgres(Arc<PgRun>),
}

/// What a store made of an answer ([`RunStore::record`]).
pub enum StoreRecorded {
    Sqlite(Recorded),
    Postgres(Box<Answered>, Verdict),
}

impl StoreRecorded {
    /// What the ledger made of the answer (see [`Recorded::verdict`]).
    pub async fn verdict(&mut self) -> Verdict {
        match self {
            StoreRecorded::Sqlite(r) => r.verdict().await,
            StoreRecorded::Postgres(_, v) => v.clone(),
        }
    }

    pub fn answered(&self) -> &Answered {
        match self {
            StoreRecorded::Sqlite(r) => r.answered(),
            StoreRecorded::Postgres(a, _) => a,
        }
    }
}

fn holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    format!("{host} pid {}", std::process::id())
}

impl RunStore {
    /// The SQLite writer, when that is the store (its health, its side file).
    pub fn sqlite(&self) -> Option<&Writer> {
        match self {
            RunStore::Sqlite(w) => Some(w),
            RunStore::Postgres(_) => None,
        }
    }

    /// Whether other runs may share the ledger (rows they hold are looked at again at the end).
    pub fn is_shared(&self) -> bool {
        matches!(self, RunStore::Postgres(_))
    }

    /// The answers held and not yet committed (SQLite only: PostgreSQL commits each at once).
    pub fn held(&self) -> Option<Arc<Held>> {
        self.sqlite().map(Writer::held)
    }

    /// Records a new run and returns its id (from outside the runtime).
    pub fn begin_run(&self, config: String, files: Vec<FileInfo>) -> anyhow::Result<i64> {
        match self {
            RunStore::Sqlite(w) => w.begin_run(config, files),
            RunStore::Postgres(p) => {
                let mut store = p.handle.block_on(p.store.write());
                let run_id = p
                    .handle
                    .block_on(store.begin_run(&config, &files, &holder()))?;
                p.side().path = Some(postgres::late::side_file(&p.state_dir, &p.url, run_id));
                Ok(run_id)
            }
        }
    }

    /// Resolves once the run's lease on a shared ledger is lost (never on SQLite): the run must
    /// stop at once, its rows may be another run's now.
    pub async fn lease_lost(&self) {
        match self {
            RunStore::Sqlite(_) => std::future::pending().await,
            RunStore::Postgres(p) => {
                let lost = p.store.read().await.on_lease_lost();
                lost.await;
            }
        }
    }

    /// What went to a PostgreSQL run's side file (SQLite's writer reports its own, [`Held`]).
    pub fn spilled(&self) -> Option<SpillReport> {
        match self {
            RunStore::Sqlite(_) => None,
            RunStore::Postgres(p) => p.side().report.clone(),
        }
    }

    /// Rows a run that ended abruptly left in flight back to pending (on PostgreSQL: only the
    /// rows of runs whose lease expired).
    pub async fn recover_async(&self) -> anyhow::Result<u64> {
        match self {
            RunStore::Sqlite(w) => w.recover_async().await,
            RunStore::Postgres(p) => p.store.write().await.recover().await,
        }
    }

    /// Records input rows (from a blocking thread).
    pub fn ingest(
        &self,
        run_id: i64,
        rows: Vec<(u64, SourceRow)>,
        retry_failed: bool,
    ) -> anyhow::Result<Vec<Sighting>> {
        match self {
            RunStore::Sqlite(w) => w.ingest(run_id, rows, retry_failed),
            RunStore::Postgres(p) => p.handle.block_on(async {
                p.store
                    .write()
                    .await
                    .ingest(run_id, &rows, retry_failed)
                    .await
            }),
        }
    }

    /// Records a rejected row (from a blocking thread).
    pub fn reject(&self, run_id: i64, reject: Reject) -> anyhow::Result<()> {
        match self {
            RunStore::Sqlite(w) => w.reject(run_id, reject),
            RunStore::Postgres(p) => p
                .handle
                .block_on(async { p.store.read().await.reject(run_id, &reject).await }),
        }
    }

    /// Marks a row in flight (the claim on PostgreSQL); `None`: not this run's to send now. On
    /// PostgreSQL it also says whether the row may have been sent by another run since the
    /// feeder read it.
    pub async fn mark_in_flight(&self, run_id: i64, row: RowId) -> anyhow::Result<Option<Claimed>> {
        match self {
            // One run per file: what the feeder read is what the row holds.
            RunStore::Sqlite(w) => {
                Ok(w.mark_in_flight(run_id, row).await?.map(|attempt| Claimed {
                    attempt,
                    maybe_sent: false,
                }))
            }
            RunStore::Postgres(p) => {
                let (seen, first) = {
                    let store = p.store.read().await;
                    (store.connection(), store.mark_in_flight(run_id, row).await)
                };
                match first {
                    // A claim whose reply was lost and that is tried again finds the row taken
                    // (by this run): never sent, given back as possibly sent when the run ends.
                    Err(e) if !p.heal(seen).await => Err(e),
                    Err(_) => p.store.read().await.mark_in_flight(run_id, row).await,
                    claimed => claimed,
                }
            }
        }
    }

    /// Undoes a mark whose request never left.
    pub fn unsend(&self, attempt_id: i64, row: RowId) {
        match self {
            RunStore::Sqlite(w) => w.unsend(attempt_id, row),
            RunStore::Postgres(p) => {
                let p = p.clone();
                p.handle.clone().spawn(async move {
                    if let Err(e) = p.store.read().await.unsend(attempt_id, row).await {
                        tracing::warn!("undoing a mark failed: {e:#}");
                    }
                });
            }
        }
    }

    /// Hands an answer over (on PostgreSQL: committed, fenced on its claim, before it returns).
    pub async fn record(&self, answered: Answered) -> anyhow::Result<StoreRecorded> {
        match self {
            RunStore::Sqlite(w) => Ok(StoreRecorded::Sqlite(w.record(answered))),
            RunStore::Postgres(p) => {
                // Once one answer went to the side file the run is stopping: the others follow
                // it there at once (in order), rather than each waiting out the tries.
                if p.side().report.is_some() {
                    return Err(p.spill(&answered, anyhow::anyhow!("an earlier answer failed")));
                }
                let recorded = p.store.write().await.record(&answered).await;
                match recorded {
                    Ok((verdict, _fence)) => {
                        Ok(StoreRecorded::Postgres(Box::new(answered), verdict))
                    }
                    Err(e) => Err(p.spill(&answered, e)),
                }
            }
        }
    }

    /// Waits for this request's slot of the client id's rate, shared by every run on a
    /// PostgreSQL ledger (nothing on SQLite: the run's own limiter is the whole rate). Slots are
    /// [`SHARED_WINDOW`]/rate apart; a request never leaves before its slot (the wait counts
    /// from the answer), and one that wakes more than [`SLOT_LATE`] after it (counted from the
    /// question, so a slow round trip counts) gives the slot up and takes the next: so no
    /// second at the gateway holds more than `rate` of the team's requests, whatever the load.
    pub async fn wait_for_slot(&self) -> anyhow::Result<()> {
        if let RunStore::Postgres(p) = self {
            loop {
                let asked = tokio::time::Instant::now();
                let (seen, first) = {
                    let store = p.store.read().await;
                    let wait = store.slot_wait(&p.client_id, p.rate, SHARED_WINDOW).await;
                    (store.connection(), wait)
                };
                let wait = match first {
                    Err(e) if !p.heal(seen).await => return Err(e),
                    // On the new connection (a slot taken on the old one is simply skipped).
                    Err(_) => continue,
                    Ok(wait) => wait,
                };
                tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
                let late = asked.elapsed().saturating_sub(wait);
                if late <= SLOT_LATE {
                    break;
                }
                tracing::debug!(late_ms = late.as_millis() as u64, "a shared slot missed");
            }
        }
        Ok(())
    }

    /// A throttle seen: every run sharing the ledger slows down (nothing on SQLite).
    pub async fn throttled(&self, pause: Duration) {
        if let RunStore::Postgres(p) = self
            && let Err(e) = p.store.read().await.throttled(&p.client_id, pause).await
        {
            tracing::warn!("sharing a throttle failed: {e:#}");
        }
    }

    /// This run's rows still pending, and those in flight under another run (PostgreSQL).
    pub async fn unfinished(&self, run_id: i64) -> anyhow::Result<(u64, u64)> {
        match self {
            RunStore::Sqlite(_) => Ok((0, 0)),
            RunStore::Postgres(p) => p.store.read().await.unfinished(run_id).await,
        }
    }

    /// Asks the SQLite writer to stop retrying (PostgreSQL holds nothing uncommitted).
    pub fn give_up(&self) {
        if let RunStore::Sqlite(w) = self {
            w.give_up();
        }
    }

    /// Ends the run record; returns the counts as stored.
    pub async fn finish_run(
        &self,
        run_id: i64,
        end: RunEnd,
        counts: RunCounts,
        message: Option<String>,
    ) -> anyhow::Result<RunCounts> {
        match self {
            RunStore::Sqlite(w) => w.finish_run(run_id, end, counts, message).await,
            RunStore::Postgres(p) => {
                p.store
                    .write()
                    .await
                    .finish_run(run_id, end, &counts, message.as_deref())
                    .await
            }
        }
    }

    /// The feeder's reader on the same ledger (PostgreSQL: the store itself).
    pub fn reader_again(&self) -> Option<RunReader> {
        match self {
            RunStore::Sqlite(_) => None,
            RunStore::Postgres(p) => Some(RunReader::Postgres(p.clone())),
        }
    }
}

/// What the feeder reads the rows to send from.
pub enum RunReader {
    Sqlite(Connection),
    Postgres(Arc<PgRun>),
}

impl RunReader {
    /// The next rows of the run to send (from a blocking thread).
    pub fn pending_page(
        &self,
        run_id: i64,
        after_seq: u64,
        limit: usize,
        unverified: bool,
    ) -> anyhow::Result<Vec<(u64, RowId, LedgerRow)>> {
        match self {
            RunReader::Sqlite(conn) => Ok(queries::pending_page(
                conn, run_id, after_seq, limit, unverified,
            )?),
            RunReader::Postgres(p) => p.handle.block_on(async {
                let page = || async {
                    let store = p.store.read().await;
                    let page = store
                        .pending_page(run_id, after_seq, limit, unverified)
                        .await;
                    (store.connection(), page)
                };
                match page().await {
                    (seen, Err(e)) if !p.heal(seen).await => Err(e),
                    (_, Err(_)) => page().await.1,
                    (_, read) => read,
                }
            }),
        }
    }
}
