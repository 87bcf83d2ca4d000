//! Phase two of a run: a feeder reads the rows to send from the ledger in input order, a pool of
//! workers sends them, and every answer goes to the ledger writer.
//!
//! One request, in order: its slot in the pace (the limiter), the row marked in flight (on disk
//! before anything leaves), the hard ceiling, the request, the answer handed to the writer. So a
//! row waiting for its slot or out a throttling pause is never taken for possibly sent, and a
//! row is marked only while it is pending and this run's.
//!
//! A row that fails for now is retried after a short back-off; after `max_attempts` it is set
//! aside (the queue, [`Jobs`]) and comes back after each pause of `retry_later` while the worker takes
//! other rows; an answer that could not be verified comes back once the fresh rows are done.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::concurrency::Concurrency;
use super::limiter::Limiter;
use super::policy::{self, Decision, Later, RetryPolicy, Tries};
use super::progress::Counters;
use super::queue::Jobs;
use super::shutdown::{Shutdown, StopReason};
use crate::api::client::Client;
use crate::api::outcome::{Attempt, Outcome};
use crate::input::Row;
use crate::ledger::queries::pending_page;
use crate::ledger::store::{Answered, Verdict};
use crate::ledger::writer::Writer;
use crate::ledger::{RowId, State};

/// Fatal answers in a row after which the run stops sending.
pub const FATAL_IN_A_ROW: u32 = 3;

/// Answers in a row that could not be verified after which the run stops sending. More than for
/// fatal codes: one answer garbled on its way must not stop a night's run.
pub const UNVERIFIED_IN_A_ROW: u32 = 5;

/// One row to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// How the writer finds the row.
    pub row_id: RowId,
    pub row: Row,
    /// An earlier attempt (another run, or a crash) may have reached the gateway.
    pub maybe_sent: bool,
    pub tries: Tries,
    /// The row's last answer in this run could not be verified.
    pub unverified: bool,
    /// The run's count of believable answers when this row first failed for now.
    pub believed_at_first_failure: Option<u64>,
    /// Set aside until then (a row sent early as a probe goes back to wait for it).
    pub due: Option<Instant>,
}

/// Everything the workers share.
pub struct Crew {
    pub client: Client,
    pub writer: Writer,
    pub limiter: Limiter,
    /// How many of the workers take rows now.
    pub concurrency: Concurrency,
    pub policy: RetryPolicy,
    pub counters: Arc<Counters>,
    pub shutdown: Arc<Shutdown>,
    pub run_id: i64,
    /// Where `alipay_public_key` comes from, for the message that stops a run whose answers do
    /// not verify.
    pub alipay_public_key: String,
    fatal_in_a_row: AtomicU32,
    unverified_in_a_row: AtomicU32,
    /// Believable answers so far (the gateway is up when this grows).
    believed: Arc<AtomicU64>,
}

impl Crew {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        writer: Writer,
        limiter: Limiter,
        concurrency: Concurrency,
        policy: RetryPolicy,
        counters: Arc<Counters>,
        shutdown: Arc<Shutdown>,
        run_id: i64,
        alipay_public_key: String,
    ) -> Self {
        Crew {
            client,
            writer,
            limiter,
            concurrency,
            policy,
            counters,
            shutdown,
            run_id,
            alipay_public_key,
            fatal_in_a_row: AtomicU32::new(0),
            unverified_in_a_row: AtomicU32::new(0),
            believed: Arc::default(),
        }
    }
}

/// Sends every pending row of the run (at most `limit` fresh ones) with as many workers as the
/// crew's [`Concurrency`] allows (at most its cap); returns when all are done or the run was
/// stopped. After a stop, requests in flight get
/// `drain` to finish; then their workers are aborted (their rows stay in flight and are
/// recovered as possibly sent) and `Ok(true)` says so.
pub async fn send_all(
    crew: Arc<Crew>,
    conn: Connection,
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
    let jobs = Arc::new(Jobs::new(rx, crew.believed.clone()));
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
    conn: Connection,
    run_id: i64,
    tx: mpsc::Sender<Job>,
    shutdown: &Shutdown,
    limit: Option<u64>,
    fed: &AtomicU64,
) -> anyhow::Result<()> {
    for unverified_pass in [false, true] {
        let mut after = 0u64;
        loop {
            let page = pending_page(&conn, run_id, after, 512, unverified_pass)?;
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
                    maybe_sent: r.maybe_sent,
                    tries: Tries::default(),
                    unverified: false,
                    believed_at_first_failure: None,
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
        let probe = job.tries.probe;
        let before = crew.believed.load(Relaxed);
        let result = send_row(crew, job).await;
        if probe {
            jobs.probed(crew.believed.load(Relaxed) > before);
        }
        if let Some((job, later)) = result? {
            jobs.set_aside(job, later);
        }
    }
}

/// Sends one row until it is finished for this run, set aside, or the run stops (the row then
/// stays pending). A ledger that fails is an error: the run must stop.
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
        let Some(attempt_id) = crew.writer.mark_in_flight(crew.run_id, job.row_id).await? else {
            // Not pending, or not this run's: never sent.
            return Ok(None);
        };
        let departure = unless_stopped(&crew.shutdown, crew.limiter.depart()).await;
        let Some(departure) = departure else {
            crew.writer.unsend(attempt_id, job.row_id);
            return Ok(None);
        };
        // The time this request keeps its worker, the ceiling's wait left out: the mark, the
        // request, its record.
        let marked = departure.at().saturating_duration_since(began);
        if job.tries == Tries::default() {
            c.sent.fetch_add(1, Relaxed);
        }
        c.requests.fetch_add(1, Relaxed);
        c.in_flight.fetch_add(1, Relaxed);
        let attempt = crew.client.send(&job.row).await;
        c.in_flight.fetch_sub(1, Relaxed);
        c.latency_micros
            .fetch_add(attempt.latency.as_micros() as u64, Relaxed);
        let throttled = match &attempt.outcome {
            Outcome::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        crew.limiter.answered(departure, throttled);
        if throttled.is_some() {
            c.throttled.fetch_add(1, Relaxed);
            job.tries.throttled += 1;
        } else {
            job.tries.attempts += 1;
        }
        job.maybe_sent |= attempt.outcome.maybe_processed();
        // Whether the gateway answered anyone since this row began to fail decides between
        // failing it for this run and setting it aside (an outage).
        job.tries.reached |= attempt.outcome.maybe_processed();
        if attempt.outcome.believable() {
            crew.believed.fetch_add(1, Relaxed);
        } else {
            let now = crew.believed.load(Relaxed);
            let first = *job.believed_at_first_failure.get_or_insert(now);
            job.tries.gateway_answered = now > first;
        }
        let mut decision = crew.policy.decide(&attempt.outcome, job.tries);
        let update = policy::row_update(&attempt, &decision, job.maybe_sent);
        let was_unverified = job.unverified;
        job.unverified = matches!(attempt.outcome, Outcome::Unverified { .. });
        match (was_unverified, job.unverified) {
            (false, true) => {
                c.unverified.fetch_add(1, Relaxed);
            }
            (true, false) => {
                c.unverified.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        let mut recorded = crew.writer.record(Answered {
            run_id: crew.run_id,
            attempt_id,
            row_id: job.row_id,
            row: job.row.clone(),
            attempt,
            update,
        });
        // A success waits for its commit: the ledger never believes a pmsLabel another store
        // holds (a proxy replaying a genuine answer). The attempt is then not this request's,
        // for the counters and the decision: the ledger put the row back, and it is sent again.
        let replay = match recorded.verdict().await {
            Verdict::Kept => None,
            Verdict::LabelHeldBy { key } => {
                crew.believed.fetch_sub(1, Relaxed);
                let now = crew.believed.load(Relaxed);
                let first = *job.believed_at_first_failure.get_or_insert(now);
                job.tries.gateway_answered = now > first;
                job.tries.reached = true;
                job.maybe_sent = true;
                let outcome = Outcome::NotThisRequest {
                    reason: format!("its pmsLabel is held by another store ({key})"),
                };
                decision = crew.policy.decide(&outcome, job.tries);
                Some(Attempt {
                    outcome,
                    ..recorded.answered().attempt.clone()
                })
            }
        };
        crew.concurrency.observe(
            marked + departure.at().elapsed(),
            c.retrying.load(Relaxed) as usize,
        );
        let attempt = replay.as_ref().unwrap_or(&recorded.answered().attempt);
        note_streaks(crew, attempt, &decision);
        match decision {
            Decision::Finish { state, .. } => {
                let counter = match state {
                    State::Succeeded => &c.succeeded,
                    State::AlreadyCircled => &c.already_circled,
                    _ => &c.failed,
                };
                counter.fetch_add(1, Relaxed);
                return Ok(None);
            }
            Decision::Fatal => return Ok(None),
            // This row waits out its Retry-After while the others go on (the limiter holds
            // everyone only when the share of throttling says a limit).
            Decision::Throttled(pause) => return Ok(Some((job, Later::Wait(pause)))),
            Decision::RetryIn(pause) => {
                c.retrying.fetch_add(1, Relaxed);
                let waited = unless_stopped(&crew.shutdown, tokio::time::sleep(pause)).await;
                c.retrying.fetch_sub(1, Relaxed);
                if waited.is_none() {
                    return Ok(None);
                }
            }
            Decision::SetAside(later) => {
                if let Later::After(_) = later {
                    job.tries.later += 1;
                }
                return Ok(Some((job, later)));
            }
        }
    }
}

/// Counts fatal answers, and answers that could not be verified, in a row; stops the run when
/// the configuration is clearly wrong.
fn note_streaks(crew: &Crew, attempt: &Attempt, decision: &Decision) {
    let fatal = matches!(decision, Decision::Fatal);
    let unverified = matches!(attempt.outcome, Outcome::Unverified { .. });
    if !fatal {
        crew.fatal_in_a_row.store(0, Relaxed);
    }
    // Only a believed answer shows the key is right; a failure without an answer shows nothing.
    if attempt.verified == Some(true) {
        crew.unverified_in_a_row.store(0, Relaxed);
    }
    if fatal {
        let n = crew.fatal_in_a_row.fetch_add(1, Relaxed) + 1;
        if n >= FATAL_IN_A_ROW {
            let code = attempt.result_code.clone().unwrap_or_else(|| {
                attempt
                    .http_status
                    .map_or_else(|| "?".to_owned(), |h| format!("HTTP {h}"))
            });
            let tracer = attempt
                .tracer_id
                .as_deref()
                .map(|t| format!(" (last Tracer-Id {t})"))
                .unwrap_or_default();
            crew.shutdown.stop(StopReason::Aborted(format!(
                "the gateway answered {code} {n} times in a row{tracer}: {}",
                crate::api::outcome::what_to_check(&code)
            )));
        }
    }
    if unverified {
        let n = crew.unverified_in_a_row.fetch_add(1, Relaxed) + 1;
        if n >= UNVERIFIED_IN_A_ROW {
            crew.shutdown.stop(StopReason::Aborted(format!(
                "{n} answers in a row could not be verified with alipay_public_key ({}): the \
                 likely causes are a wrong alipay_public_key (your own public key, or a key that \
                 is not AlipayHK's), a key AlipayHK has rotated (download the current one from \
                 the portal), or a proxy that strips or rewrites the answers' headers. What each \
                 answer said is kept with its attempt, labels included; run again once the key is \
                 right and they are checked again before anything is sent",
                crew.alipay_public_key
            )));
        }
    }
}
