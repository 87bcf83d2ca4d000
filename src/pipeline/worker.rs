//! Phase two of a run: a feeder reads the rows to send from the ledger in input order, a pool of
//! workers sends them, and every answer goes to the ledger writer.
//!
//! One request, in order: its slot in the pace (the limiter), the row marked in flight (on disk
//! before anything leaves), the hard ceiling, the request, the answer handed to the writer. So a
//! row waiting for its slot or out a throttling pause is never taken for possibly sent, and a
//! row is marked only while it is pending and this run's.
//!
//! A row that fails for now is retried after a short back-off; after `max_attempts` it is set
//! aside ([`Jobs`]) and comes back after each pause of `retry_later` while the worker takes
//! other rows; an answer that could not be verified comes back once the fresh rows are done.

use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::limiter::Limiter;
use super::policy::{self, Decision, Later, RetryPolicy, Tries};
use super::progress::Counters;
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

/// The rows to send: fresh ones from the feeder, and those set aside to come back later.
///
/// A row set aside while the gateway was down comes back when its pause is over, or as soon as
/// the gateway gives a believable answer to another request. When nothing else is left to send,
/// the soonest of them is sent early as a probe, at growing intervals ([`PROBE_FIRST`] doubling
/// to [`PROBE_MAX`]), so that a run does not sit out a ten-minute pause for a gateway that came
/// back after one.
pub struct Jobs {
    fresh: Mutex<mpsc::Receiver<Job>>,
    aside: std::sync::Mutex<Aside>,
    changed: Notify,
    /// The crew's count of believable answers.
    believed: Arc<AtomicU64>,
}

/// The first probe after the rows left are all set aside, and the longest gap between probes.
pub const PROBE_FIRST: Duration = Duration::from_secs(2);
pub const PROBE_MAX: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Aside {
    /// Rows waiting out a pause, soonest first.
    timed: BinaryHeap<Timed>,
    /// Rows that come back once no fresh row is left.
    at_end: VecDeque<Job>,
    fresh_done: bool,
    order: u64,
    /// When the next probe may go, how long after that the one after, and whether one is out.
    probe_at: Option<Instant>,
    probe_every: Duration,
    probing: bool,
}

struct Timed {
    due: Instant,
    order: u64,
    /// The crew's count of believable answers when the row was set aside.
    believed: u64,
    job: Job,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    /// Reversed: the heap's top is the soonest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

impl Jobs {
    fn new(fresh: mpsc::Receiver<Job>, believed: Arc<AtomicU64>) -> Jobs {
        Jobs {
            fresh: Mutex::new(fresh),
            aside: std::sync::Mutex::default(),
            changed: Notify::new(),
            believed,
        }
    }

    fn aside(&self) -> std::sync::MutexGuard<'_, Aside> {
        self.aside.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_aside(&self, mut job: Job, later: Later) {
        let mut a = self.aside();
        job.tries.probe = false;
        match later {
            Later::After(_) | Later::Again => {
                let due = match (later, job.due) {
                    (Later::After(pause), _) => Instant::now() + pause,
                    (_, Some(due)) => due,
                    (_, None) => Instant::now(),
                };
                job.due = Some(due);
                a.order += 1;
                let order = a.order;
                a.timed.push(Timed {
                    due,
                    order,
                    believed: self.believed.load(Relaxed),
                    job,
                });
                if a.probe_at.is_none() {
                    a.probe_every = PROBE_FIRST;
                    a.probe_at = Some(Instant::now() + PROBE_FIRST);
                }
            }
            Later::AtTheEnd => a.at_end.push_back(job),
        }
        drop(a);
        self.changed.notify_waiters();
    }

    /// A probe came back: the gateway answered (the rows set aside come back) or not (the next
    /// probe waits twice as long).
    fn probed(&self, answered: bool) {
        let mut a = self.aside();
        a.probing = false;
        if answered {
            a.probe_at = None;
        } else {
            a.probe_every = (a.probe_every * 2).min(PROBE_MAX);
            a.probe_at = Some(Instant::now() + a.probe_every);
        }
        drop(a);
        self.changed.notify_waiters();
    }

    /// The next row to send; `None` when there is none left (or the run is stopping). A worker
    /// that set a row aside keeps asking, so a row set aside is always picked up again.
    async fn next(&self, shutdown: &Shutdown) -> Option<Job> {
        loop {
            if shutdown.is_stopping() {
                return None;
            }
            // Registered before the look, so that a row set aside meanwhile is not missed.
            let changed = self.changed.notified();
            let (due, fresh_done) = {
                let mut a = self.aside();
                let now = Instant::now();
                // The gateway answered someone since a row was set aside: it is back.
                let believed = self.believed.load(Relaxed);
                if a.timed.iter().any(|t| t.believed < believed && t.due > now) {
                    let woken: Vec<Timed> = a.timed.drain().collect();
                    for mut t in woken {
                        if t.believed < believed {
                            t.due = now;
                        }
                        a.timed.push(t);
                    }
                    a.probe_at = None;
                }
                if a.timed.peek().is_some_and(|t| t.due <= now) {
                    return a.timed.pop().map(|t| {
                        let mut job = t.job;
                        job.believed_at_first_failure = None;
                        job
                    });
                }
                if a.fresh_done {
                    if let Some(job) = a.at_end.pop_front() {
                        return Some(job);
                    }
                    if a.timed.is_empty() {
                        return None;
                    }
                    // Nothing else to send: the soonest row goes early, as a probe.
                    if !a.probing && a.probe_at.is_some_and(|t| t <= now) {
                        a.probing = true;
                        return a.timed.pop().map(|t| {
                            let mut job = t.job;
                            job.tries.probe = true;
                            job
                        });
                    }
                }
                let probe = a.probe_at.filter(|_| a.fresh_done && !a.probing);
                let soonest = a.timed.peek().map(|t| t.due);
                let due = match (soonest, probe) {
                    (Some(d), Some(p)) => Some(d.min(p)),
                    (d, p) => d.or(p),
                };
                (due, a.fresh_done)
            };
            // The common case, cheaply: a fresh row is waiting.
            if !fresh_done
                && let Ok(mut fresh) = self.fresh.try_lock()
                && let Ok(job) = fresh.try_recv()
            {
                return Some(job);
            }
            tokio::select! {
                job = async { self.fresh.lock().await.recv().await }, if !fresh_done => match job {
                    Some(job) => return Some(job),
                    None => {
                        self.aside().fresh_done = true;
                        self.changed.notify_waiters();
                    }
                },
                _ = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
                // A believable answer elsewhere may wake rows set aside: look again each second.
                _ = tokio::time::sleep(Duration::from_secs(1)), if due.is_some() => {}
                _ = changed => {}
                _ = shutdown.stopped() => return None,
            }
        }
    }
}

/// Sends every pending row of the run (at most `limit` fresh ones) with `concurrency` workers;
/// returns when all are done or the run was stopped. After a stop, requests in flight get
/// `drain` to finish; then their workers are aborted (their rows stay in flight and are
/// recovered as possibly sent) and `Ok(true)` says so.
pub async fn send_all(
    crew: Arc<Crew>,
    conn: Connection,
    concurrency: usize,
    limit: Option<u64>,
    drain: Duration,
) -> anyhow::Result<bool> {
    let (tx, rx) = mpsc::channel::<Job>(concurrency * 2);
    let feeder = tokio::task::spawn_blocking({
        let shutdown = crew.shutdown.clone();
        let run_id = crew.run_id;
        let counters = crew.counters.clone();
        move || feed(conn, run_id, tx, &shutdown, limit, &counters.fed)
    });
    let jobs = Arc::new(Jobs::new(rx, crew.believed.clone()));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let crew = crew.clone();
        let jobs = jobs.clone();
        workers.spawn(async move {
            let r = work(&crew, &jobs).await;
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
    jobs.fresh.lock().await.close();
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

/// One worker: rows until there are none, or the run stops.
async fn work(crew: &Crew, jobs: &Jobs) -> anyhow::Result<()> {
    while let Some(job) = jobs.next(&crew.shutdown).await {
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
    Ok(())
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
        if job.tries == Tries::default() {
            c.sent.fetch_add(1, Relaxed);
        }
        c.requests.fetch_add(1, Relaxed);
        c.in_flight.fetch_add(1, Relaxed);
        let attempt = crew.client.send(&job.row).await;
        c.in_flight.fetch_sub(1, Relaxed);
        c.latency_micros
            .fetch_add(attempt.latency.as_micros() as u64, Relaxed);
        if let Outcome::Throttled { retry_after, .. } = &attempt.outcome {
            c.throttled.fetch_add(1, Relaxed);
            crew.limiter.throttled(departure, *retry_after);
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
            // The limiter holds every worker for the pause; the row goes again after it.
            Decision::Throttled => {}
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
    let unverified = matches!(
        attempt.outcome,
        Outcome::Unverified { .. } | Outcome::NotThisRequest { .. }
    );
    if !fatal {
        crew.fatal_in_a_row.store(0, Relaxed);
    }
    // Only a believed answer shows the key is right; a failure without an answer shows nothing.
    if attempt.verified == Some(true) && attempt.outcome.believable() {
        crew.unverified_in_a_row.store(0, Relaxed);
    }
    if fatal {
        let n = crew.fatal_in_a_row.fetch_add(1, Relaxed) + 1;
        if n >= FATAL_IN_A_ROW {
            let code = match &attempt.outcome {
                Outcome::Fatal { code, .. } => code.clone(),
                _ => attempt.result_code.clone().unwrap_or_default(),
            };
            let tracer = attempt
                .tracer_id
                .as_deref()
                .map(|t| format!(" (last Tracer-Id {t})"))
                .unwrap_or_default();
            crew.shutdown.stop(StopReason::Aborted(format!(
                "the gateway answered {} {n} times in a row{tracer}: {}",
                crate::api::outcome::fatal_answer_words(&code),
                crate::api::outcome::what_to_check(&code)
            )));
        }
    }
    if unverified {
        let n = crew.unverified_in_a_row.fetch_add(1, Relaxed) + 1;
        if n >= UNVERIFIED_IN_A_ROW && matches!(attempt.outcome, Outcome::NotThisRequest { .. }) {
            crew.shutdown
                .stop(StopReason::Aborted(crate::api::outcome::replays_stop(n)));
        } else if n >= UNVERIFIED_IN_A_ROW {
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
