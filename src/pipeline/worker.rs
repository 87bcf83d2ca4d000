//! Phase two of a run: a feeder reads the rows to send from the ledger in input order, a pool of
//! workers sends them through the limiter, and every outcome goes back to the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::limiter::Limiter;
use super::progress::Counters;
use super::retry::{Decision, RetryPolicy};
use super::shutdown::{Shutdown, StopReason};
use crate::api::client::Client;
use crate::api::outcome::{Attempt, Outcome};
use crate::input::Row;
use crate::ledger::queries::pending_page;
use crate::ledger::writer::{RowUpdate, Writer};
use crate::ledger::{RowId, State};

/// Fatal answers in a row after which the run stops sending.
const FATAL_IN_A_ROW: u32 = 3;

/// One row to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// How the writer finds the row.
    pub row_id: RowId,
    pub row: Row,
    /// An earlier attempt (another run, or a crash) may have reached the gateway.
    pub maybe_sent: bool,
}

/// Everything the workers share.
pub struct Shared {
    pub client: Client,
    pub writer: Writer,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub counters: Arc<Counters>,
    pub shutdown: Arc<Shutdown>,
    pub run_id: i64,
    fatal_in_a_row: AtomicU32,
}

impl Shared {
    pub fn new(
        client: Client,
        writer: Writer,
        limiter: Limiter,
        policy: RetryPolicy,
        counters: Arc<Counters>,
        shutdown: Arc<Shutdown>,
        run_id: i64,
    ) -> Self {
        Shared {
            client,
            writer,
            limiter,
            policy,
            counters,
            shutdown,
            run_id,
            fatal_in_a_row: AtomicU32::new(0),
        }
    }
}

/// Sends every pending row of the run with `concurrency` workers; returns when all are done or
/// the run was stopped. After a stop, requests in flight get `drain` to finish; then their workers
/// are aborted (their rows stay in flight and are recovered as possibly sent) and `Ok(true)` says
/// so.
pub async fn send_all(
    shared: Arc<Shared>,
    conn: Connection,
    concurrency: usize,
    drain: Duration,
) -> anyhow::Result<bool> {
    let (tx, rx) = mpsc::channel::<Job>(concurrency * 2);
    let feeder = tokio::task::spawn_blocking({
        let shutdown = shared.shutdown.clone();
        let run_id = shared.run_id;
        move || feed(conn, run_id, tx, &shutdown)
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let shared = shared.clone();
        let rx = rx.clone();
        workers.spawn(async move {
            // A row already marked in flight (with its attempt id) together with the outcome of
            // the row before it: see `send_one`.
            let mut next = None;
            loop {
                let r = async {
                    let (job, attempt_id) = match next.take() {
                        Some(marked) => marked,
                        None => {
                            if shared.shutdown.is_stopping() {
                                return Ok(None);
                            }
                            let job = { rx.lock().await.recv().await };
                            let Some(job) = job else { return Ok(None) };
                            let id = shared
                                .writer
                                .mark_in_flight(shared.run_id, job.row_id)
                                .await?;
                            (job, id)
                        }
                    };
                    send_one(&shared, job, attempt_id, &rx).await.map(Some)
                }
                .await;
                match r {
                    Ok(Some(n)) => next = n,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        shared.shutdown.stop(StopReason::Aborted(format!("{e:#}")));
                        return Err(e);
                    }
                }
            }
        });
    }
    let hard_stop = async {
        shared.shutdown.stopped().await;
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
    // The workers are gone, so the feeder's channel is closed and it returns.
    drop(rx);
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

/// Reads the run's pending rows page by page and hands them to the workers.
fn feed(
    conn: Connection,
    run_id: i64,
    tx: mpsc::Sender<Job>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut after = 0u64;
    loop {
        let page = pending_page(&conn, run_id, after, 512)?;
        let Some((last, _, _)) = page.last() else {
            return Ok(());
        };
        after = *last;
        for (_, row_id, r) in page {
            if shutdown.is_stopping() {
                return Ok(());
            }
            let job = Job {
                row_id,
                row: r.row(),
                maybe_sent: r.maybe_sent,
            };
            if tx.blocking_send(job).is_err() {
                return Ok(());
            }
        }
    }
}

/// The next row, if one is waiting right now (never waits: an outcome is not held back).
fn next_job_now(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    rx.try_lock().ok()?.try_recv().ok()
}

/// Sends one row, already marked in flight as `attempt_id`, until it is finished for this run,
/// the run stops, or the ledger fails. When the row is finished and another is waiting in the
/// queue, its outcome is recorded together with marking that next row in flight (one
/// transaction, one round trip to the writer), and the next row is returned with its attempt id.
async fn send_one(
    s: &Shared,
    job: Job,
    mut attempt_id: i64,
    rx: &Mutex<mpsc::Receiver<Job>>,
) -> anyhow::Result<Option<(Job, i64)>> {
    let mut maybe_sent = job.maybe_sent;
    let mut attempt_no = 0u32;
    loop {
        if attempt_no > 0 {
            attempt_id = s.writer.mark_in_flight(s.run_id, job.row_id).await?;
        }
        // A stop wins over a free slot: no request leaves after Ctrl-C.
        let ready = tokio::select! {
            biased;
            _ = s.shutdown.stopped() => false,
            _ = s.limiter.ready() => true,
        };
        if !ready {
            s.writer.unsend(attempt_id, job.row_id).await?;
            return Ok(None);
        }
        s.counters.requests.fetch_add(1, Relaxed);
        let attempt = s.client.send(&job.row).await;
        s.counters
            .latency_micros
            .fetch_add(attempt.latency.as_micros() as u64, Relaxed);
        attempt_no += 1;
        if let Outcome::Transient {
            maybe_processed,
            rate_limited,
            retry_after,
            ..
        } = &attempt.outcome
        {
            maybe_sent |= *maybe_processed;
            if *rate_limited {
                s.limiter
                    .pause(retry_after.unwrap_or(Duration::from_secs(1)));
            }
        }
        let decision = s.policy.decide(&attempt.outcome, attempt_no);
        let update = row_update(&attempt, &decision, maybe_sent);
        let fatal = matches!(decision, Decision::Fatal);
        note_fatal(s, &attempt, fatal);
        let done = !matches!(decision, Decision::RetryIn(_));
        let next = if done && !s.shutdown.is_stopping() {
            next_job_now(rx)
        } else {
            None
        };
        let next = match next {
            Some(next) => {
                let id = s
                    .writer
                    .record_and_mark(
                        attempt_id,
                        job.row_id,
                        attempt,
                        update,
                        s.run_id,
                        next.row_id,
                    )
                    .await?;
                Some((next, id))
            }
            None => {
                s.writer
                    .record(attempt_id, job.row_id, attempt, update)
                    .await?;
                None
            }
        };
        match decision {
            Decision::Finish { state, .. } => {
                let counter = match state {
                    State::Succeeded => &s.counters.succeeded,
                    State::AlreadyCircled => &s.counters.already_circled,
                    _ => &s.counters.failed,
                };
                counter.fetch_add(1, Relaxed);
                return Ok(next);
            }
            Decision::Fatal => return Ok(next),
            Decision::RetryIn(pause) => {
                s.counters.retrying.fetch_add(1, Relaxed);
                let waited = tokio::select! {
                    _ = tokio::time::sleep(pause) => true,
                    _ = s.shutdown.stopped() => false,
                };
                s.counters.retrying.fetch_sub(1, Relaxed);
                if !waited {
                    return Ok(None);
                }
            }
        }
    }
}

/// Counts fatal answers in a row and stops the run when the configuration is clearly wrong.
fn note_fatal(s: &Shared, attempt: &Attempt, fatal: bool) {
    if !fatal {
        s.fatal_in_a_row.store(0, Relaxed);
        return;
    }
    let n = s.fatal_in_a_row.fetch_add(1, Relaxed) + 1;
    if n >= FATAL_IN_A_ROW {
        let code = attempt.result_code.clone().unwrap_or_else(|| {
            attempt
                .http_status
                .map_or_else(|| "?".to_owned(), |h| format!("HTTP {h}"))
        });
        s.shutdown.stop(StopReason::Aborted(format!(
            "the gateway answered {code} {n} times in a row: {}",
            fatal_hint(&code)
        )));
    }
}

/// What to check for each fatal answer.
pub fn fatal_hint(code: &str) -> &'static str {
    match code {
        "INVALID_SIGNATURE" => {
            "check that private_key is the key whose public half is uploaded in the AlipayHK portal, \
             and that key_version and signature_algorithm match the portal (try `pms-onboard sign`)"
        }
        "INVALID_CLIENT" => "check client_id against the AlipayHK portal",
        "KEY_NOT_FOUND" => "check key_version against the key registered in the AlipayHK portal",
        "ACCESS_DENIED" => {
            "the client is not allowed to call this API: ask AlipayHK to enable Collect PMS Information"
        }
        _ => "the gateway refused the credentials: check client_id, private_key and endpoint",
    }
}

fn row_update(attempt: &Attempt, decision: &Decision, maybe_sent: bool) -> RowUpdate {
    let (state, failure) = match decision {
        Decision::Finish { state, failure } => (*state, *failure),
        Decision::RetryIn(_) | Decision::Fatal => (State::Pending, None),
    };
    let pms_label = match &attempt.outcome {
        Outcome::Success { pms_label } => Some(pms_label.clone()),
        _ => None,
    };
    RowUpdate {
        state,
        failure,
        // Circled already after an unknown outcome: most likely our own earlier call went through.
        ambiguous: state == State::AlreadyCircled && maybe_sent,
        maybe_sent,
        pms_label,
        result_code: attempt.result_code.clone().or_else(|| {
            Some(match attempt.http_status {
                Some(h) if !(200..300).contains(&h) => format!("HTTP_{h}"),
                _ => "NO_VALID_ANSWER".to_owned(),
            })
        }),
        result_message: attempt
            .error
            .clone()
            .or_else(|| attempt.result_message.clone()),
    }
}
