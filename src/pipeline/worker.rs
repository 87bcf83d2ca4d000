//! Phase two of a run: a feeder reads the rows to send from the ledger in input order, a pool of
//! workers sends them (as many as [`Concurrency`] allows), and every answer goes to the ledger
//! writer. A worker only sends and records; what an answer means for its row, and when the run
//! must stop, is the policy step's ([`Step`]).
//!
//! One request, in order: its slot in the pace (the limiter), the row marked in flight (on disk
//! before anything leaves), its signature, the hard ceiling, the request, the answer handed to
//! the writer. So a row waiting for its slot or out a throttling pause is never taken for
//! possibly sent, and a row is marked only while it is pending and this run's.
//!
//! A row that fails for now is retried after a short back-off; after `max_attempts` it is set
//! aside (the queue, [`Jobs`]) and comes back after each pause of `retry_later` while the worker
//! takes other rows; a throttled row comes back after its `Retry-After`; an answer that could
//! not be verified comes back once the fresh rows are done.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::concurrency::Concurrency;
use super::limiter::Limiter;
use super::policy::{Decision, Later, Standing, Step, Tries};
use super::progress::Counters;
use super::queue::Jobs;
use super::shutdown::{Shutdown, StopReason};
use crate::api::client::Client;
use crate::api::outcome::Outcome;
use crate::input::Row;
use crate::ledger::RowId;
use crate::ledger::run_store::{RunReader, RunStore};
use crate::ledger::store::{Answered, Verdict};

/// One row to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// How the writer finds the row.
    pub row_id: RowId,
    pub row: Row,
    /// Where the row stands in this run, for the policy step.
    pub standing: Standing,
    /// Set aside until then (a row sent early as a probe goes back to wait for it).
    pub due: Option<Instant>,
}

/// Everything the workers share.
pub struct Crew {
    pub client: Client,
    pub writer: RunStore,
    pub limiter: Limiter,
    /// How many of the workers take rows now.
    pub concurrency: Concurrency,
    /// What each answer means for its row, and when the run must stop.
    pub step: Step,
    pub counters: Arc<Counters>,
    pub shutdown: Arc<Shutdown>,
    pub run_id: i64,
}

/// Sends every pending row of the run (at most `limit` fresh ones) with as many workers as the
/// crew's [`Concurrency`] allows (at most its cap); returns when all are done or the run was
/// stopped. After a stop, requests in flight get
/// `drain` to finish; then their workers are aborted (their rows stay in flight and are
/// recovered as possibly sent) and `Ok(true)` says so.
pub async fn send_all(
    crew: Arc<Crew>,
    conn: RunReader,
    limit: Option<u64>,
    drain: Duration,
) -> anyhow::Result<bool> {
    let concurrency = crew.concurrency.cap();
    let (tx, rx) = mpsc::channel::<Job>(concurrency * 2);
    let feeder = tokio::task::spawn_blocking({
        let shutdown = crew.shutdown.clone();
        let run_id = crew.run_id;
        let counters = crew.counters.clone();
        move || feed(conn, run_id, tx, &shutdown, limit, &counters.fed)
    });
    let jobs = Arc::new(Jobs::new(rx, crew.step.believed()));
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        let crew = crew.clone();
        let jobs = jobs.clone();
        workers.spawn(async move {
            let r = work(&crew, &jobs, index).await;
            if let Err(e) = &r {
                crew.shutdown.stop(StopReason::Aborted(format!("{e:#}")));
            }
            r
        });
    }
    let hard_stop = async {
        crew.shutdown.stopped().await;
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(hard_stop);
    let mut cut_short = false;
    let mut first_error = None;
    loop {
        let joined = tokio::select! {
            joined = workers.join_next() => joined,
            _ = &mut hard_stop, if !cut_short => {
                cut_short = true;
                workers.abort_all();
                continue;
            }
        };
        match joined {
            None => break,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Some(Err(e)) if e.is_cancelled() => {}
            Some(Err(e)) => {
                first_error.get_or_insert(anyhow::anyhow!("a worker failed: {e}"));
            }
        }
    }
    // The workers are gone: the feeder's channel is closed and it returns.
    jobs.close().await;
    match feeder.await {
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
        }
        Err(e) => {
            first_error.get_or_insert(anyhow::anyhow!("the row feeder failed: {e}"));
        }
        Ok(Ok(())) => {}
    }
    first_error.map_or(Ok(cut_short), Err)
}

/// Reads the run's pending rows page by page and hands them to the workers: first the rows
/// without an answer kept unverified, then those (with a wrong key the run stops before it sends
/// them again; with the right key their kept answers verified before the run began).
fn feed(
    conn: RunReader,
    run_id: i64,
    tx: mpsc::Sender<Job>,
    shutdown: &Shutdown,
    limit: Option<u64>,
    fed: &AtomicU64,
) -> anyhow::Result<()> {
    for unverified_pass in [false, true] {
        let mut after = 0u64;
        loop {
            let page = conn.pending_page(run_id, after, 512, unverified_pass)?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            after = *last;
            for (_, row_id, r) in page {
                if shutdown.is_stopping() || limit.is_some_and(|n| fed.load(Relaxed) >= n) {
                    return Ok(());
                }
                let job = Job {
                    row_id,
                    row: r.row(),
                    standing: Standing::new(r.maybe_sent),
                    due: None,
                };
                if tx.blocking_send(job).is_err() {
                    return Ok(());
                }
                fed.fetch_add(1, Relaxed);
            }
        }
    }
    Ok(())
}

/// What `fut` resolves to, or `None` when the run stops first.
async fn unless_stopped<T>(shutdown: &Shutdown, fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.stopped() => None,
        done = fut => Some(done),
    }
}

/// Worker `index`: rows while its turn lasts, until there are none, or the run stops.
async fn work(crew: &Crew, jobs: &Jobs, index: usize) -> anyhow::Result<()> {
    loop {
        if index >= crew.concurrency.target() {
            tokio::select! {
                _ = crew.concurrency.turn(index) => {}
                _ = jobs.exhausted() => return Ok(()),
                _ = crew.shutdown.stopped() => return Ok(()),
            }
        }
        let Some(job) = jobs.next(&crew.shutdown).await else {
            return Ok(());
        };
        let probe = job.standing.tries.probe;
        let believed = crew.step.believed();
        let before = believed.load(Relaxed);
        let result = send_row(crew, job).await;
        if probe {
            jobs.probed(believed.load(Relaxed) > before);
        }
        if let Some((job, later)) = result? {
            jobs.set_aside(job, later);
        }
    }
}

/// Sends one row until it is finished for this run, set aside, or the run stops (the row then
/// stays pending): the pace, the mark, the ceiling, the request, its record; what the answer
/// means is the policy step's. A ledger that fails is an error: the run must stop.
async fn send_row(crew: &Crew, mut job: Job) -> anyhow::Result<Option<(Job, Later)>> {
    let c = &crew.counters;
    loop {
        // A stop wins over a free slot: no request leaves after Ctrl-C.
        if unless_stopped(&crew.shutdown, crew.limiter.acquire())
            .await
            .is_none()
        {
            return Ok(None);
        }
        let began = Instant::now();
        // Always waited for (never abandoned): a mark that committed unseen would later be taken
        // for a request that may have left.
        let Some(claimed) = crew.writer.mark_in_flight(crew.run_id, job.row_id).await? else {
            // Not pending, or not this run's: never sent.
            return Ok(None);
        };
        let attempt_id = claimed.attempt;
        // Another run's attempt may have reached the gateway since the feeder read the row (it
        // was swept back as possibly sent): a STORE_IS_CIRCLED is then most likely that one.
        job.standing.maybe_sent |= claimed.maybe_sent;
        // Signed before the ceiling: what a signature takes on a loaded machine is not between
        // the ceiling and the gateway.
        let signed = crew.client.sign(&job.row);
        let departure = unless_stopped(&crew.shutdown, crew.limiter.depart()).await;
        let Some(departure) = departure else {
            crew.writer.unsend(attempt_id, job.row_id);
            return Ok(None);
        };
        // On a shared ledger, the slot of the client id's rate every run shares (the team's
        // ceiling), taken last, right before the request leaves.
        match unless_stopped(&crew.shutdown, crew.writer.wait_for_slot()).await {
            Some(Ok(())) => {}
            stopped_or_failed => {
                crew.writer.unsend(attempt_id, job.row_id);
                return stopped_or_failed.map_or(Ok(None), |r| r.map(|()| None));
            }
        }
        // The time this request keeps its worker, the ceiling's wait left out: the mark, the
        // request, its record.
        let marked = departure.at().saturating_duration_since(began);
        c.left(job.standing.tries == Tries::default());
        let attempt = crew.client.send_signed(signed).await;
        let throttled = match &attempt.outcome {
            Outcome::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        crew.limiter.answered(departure, throttled);
        if let Some(retry_after) = throttled {
            crew.writer
                .throttled(retry_after.unwrap_or(Duration::from_secs(1)))
                .await;
        }
        let judged = crew.step.answered(&mut job.standing, &attempt);
        c.answered(attempt.latency, throttled.is_some(), judged.unverified);
        let mut decision = judged.decision;
        let mut recorded = crew
            .writer
            .record(Answered {
                run_id: crew.run_id,
                attempt_id,
                row_id: job.row_id,
                row: job.row.clone(),
                attempt,
                update: judged.update,
            })
            .await?;
        // A success waits for its commit: the ledger never believes a pmsLabel another store
        // holds (a proxy replaying a genuine answer). The attempt is then not this request's,
        // for the decision: the ledger put the row back, and it is sent again.
        let replay = match recorded.verdict().await {
            Verdict::Kept => None,
            Verdict::LabelHeldBy { key } => {
                let (again, attempt) =
                    crew.step
                        .label_held(&mut job.standing, &recorded.answered().attempt, &key);
                decision = again;
                Some(attempt)
            }
        };
        crew.concurrency.observe(
            marked + departure.at().elapsed(),
            c.retrying.load(Relaxed) as usize,
        );
        let attempt = replay.as_ref().unwrap_or(&recorded.answered().attempt);
        if let Some(why) = crew.step.stop_rules(attempt, &decision) {
            crew.shutdown.stop(StopReason::Aborted(why));
        }
        match decision {
            Decision::Finish { state, .. } => {
                c.done(state);
                return Ok(None);
            }
            Decision::Fatal => return Ok(None),
            // This row waits out its Retry-After while the others go on (the limiter holds
            // everyone only when the share of throttling says a limit).
            Decision::Throttled(pause) => return Ok(Some((job, Later::Wait(pause)))),
            Decision::RetryIn(pause) => {
                c.resting(true);
                let waited = unless_stopped(&crew.shutdown, tokio::time::sleep(pause)).await;
                c.resting(false);
                if waited.is_none() {
                    return Ok(None);
                }
            }
            Decision::SetAside(later) => {
                if let Later::After(_) = later {
                    job.standing.tries.later += 1;
                }
                return Ok(Some((job, later)));
            }
        }
    }
}
