//! The run: rows → ledger (phase one, [`ingest`]) → limiter → HTTP → outcome → ledger (phase two,
//! [`worker`]). Owns the order of events that makes a run resumable: lock the ledger, take in
//! what an earlier run could not write, recover what a killed run left in flight, check again the
//! answers an earlier run could not verify, record the run, read the input, send, drain, record
//! how it ended.

pub mod concurrency;
pub mod dry_run;
pub mod ingest;
pub mod limiter;
pub mod policy;
pub mod progress;
pub mod queue;
pub mod shutdown;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::api::client::Client;
use crate::input::{Dedupe, Input, Options};
use crate::ledger;
use crate::ledger::run::{RunLedger, Shared, Told};
use crate::ledger::run_store::{RunReader, RunStore};
use crate::ledger::store::FileInfo;
use crate::ledger::writer::{Health, SpillReport, Writer, WriterThread};
use crate::model::{RunCounts, RunEnd};
use crate::output::Printer;
use concurrency::Concurrency;
use limiter::{Limiter, Throttling};
use policy::{RetryPolicy, Step, Tries};
use progress::{Counters, Reporter};
use shutdown::{Shutdown, StopReason};
use worker::Crew;

/// How long requests in flight may take to finish after a stop, beyond which the run ends
/// anyway and those rows are resent next time. Also how long a stopped run waits for a ledger
/// that cannot commit before its answers go to the side file.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Everything a run needs besides the client.
pub struct Plan {
    pub files: Vec<PathBuf>,
    /// How the files are read (CSV encoding, workbook sheet).
    pub input: Options,
    /// How the input finds duplicates (bounded memory for a run).
    pub dedupe: Dedupe,
    pub ledger: PathBuf,
    /// The gateway the run sends to: a ledger of another one is refused.
    pub gateway: ledger::Gateway,
    pub rate: u32,
    /// Requests in flight at most (the run takes what the rate needs at the answer time seen).
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub retry_failed: bool,
    /// `--limit N`: at most N pending rows are sent (a canary).
    pub limit: Option<u64>,
    /// The settings as JSON for the run record (no secrets).
    pub config_json: String,
    /// Where `alipay_public_key` comes from, for messages.
    pub alipay_public_key: String,
    /// A request's time-out (a shared ledger's lease outlasts it and the drain).
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: i64,
    pub end: RunEnd,
    pub counts: RunCounts,
    pub message: Option<String>,
    pub requests: u64,
    pub elapsed: Duration,
    /// Why the run sent slower than its rate and what to set, when the workers were the limit.
    pub advice: Option<String>,
    /// How the gateway throttled the run, if it did.
    pub throttling: Option<Throttling>,
    /// How many requests the run had in flight.
    pub concurrency: concurrency::Used,
    /// Rows still pending because `--limit` stopped the run.
    pub left_by_limit: Option<u64>,
    /// Answers that went to the side file because the ledger could not take them.
    pub spilled: Vec<SpillReport>,
}

/// Runs the job, in phases: the ledger opened for the run ([`open_ledger`]), the run recorded,
/// the input read into the ledger ([`ingest`]), the rows sent ([`send`]), how it ended recorded
/// ([`finish`]), then one teardown ([`teardown`]). Input and ledger problems found before
/// sending are errors; everything after is recorded and reported in the [`Report`].
pub fn execute(
    rt: &tokio::runtime::Runtime,
    client: Client,
    mut plan: Plan,
    printer: Arc<Printer>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    // The headers are checked (and files opened) before the ledger is touched.
    let dedupe = std::mem::replace(&mut plan.dedupe, Dedupe::InMemory);
    let input = Input::open(&plan.files, plan.input.clone())?.with_dedupe(dedupe);
    printer.input_notices(input.notices());
    let files = plan
        .files
        .iter()
        .map(|p| file_info(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let RunLedger {
        reader,
        writer,
        writer_thread,
    } = open_ledger(
        (&plan.ledger, &plan.gateway),
        (&plan.policy, &plan.alipay_public_key),
        &client,
        &Shared {
            handle: rt.handle(),
            terms: ledger::postgres::LeaseTerms::for_requests(plan.timeout, DRAIN_LIMIT),
            rate: plan.rate,
        },
        &printer,
    )?;
    let run_id = writer.begin_run(plan.config_json.clone(), files)?;
    let shutdown = Arc::new(Shutdown::default());
    let _guard = rt.enter();
    if let Some(held) = writer.held() {
        let printer = printer.clone();
        shutdown.before_exit(Box::new(move || show_spill(&printer, &held.seal())));
    }
    shutdown.listen_for_signals(printer.clone());
    let watch = Some(match writer.sqlite() {
        Some(w) => rt.spawn(watch_ledger(
            w.clone(),
            shutdown.clone(),
            printer.clone(),
            ledger::spill::path_for(&plan.ledger),
        )),
        None => rt.spawn(watch_lease(writer.clone(), shutdown.clone())),
    });

    let ingested = rt.block_on({
        let writer = writer.clone();
        let shutdown = shutdown.clone();
        let printer = printer.clone();
        let retry_failed = plan.retry_failed;
        tokio::task::spawn_blocking(move || {
            ingest::ingest(input, &writer, run_id, retry_failed, &shutdown, &printer)
        })
    });
    let counts = match ingested {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            let _ = rt.block_on(writer.finish_run(
                run_id,
                RunEnd::Aborted,
                RunCounts::default(),
                Some(message),
            ));
            teardown(watch, writer, writer_thread, DRAIN_LIMIT);
            return Err(e.context("nothing was sent"));
        }
        Err(e) => {
            teardown(watch, writer, writer_thread, DRAIN_LIMIT);
            anyhow::bail!("reading the input failed: {e}");
        }
    };

    let sent = send(
        rt,
        client,
        &plan,
        &writer,
        &shutdown,
        (run_id, counts.to_send),
        reader,
        &printer,
    );
    let (end, message, counts) = conclude(&sent, &shutdown, plan.limit, counts);
    // Anything still marked in flight (a drain cut short) is recovered now, not next run; then
    // the run's record. With a ledger that cannot commit, this waits: for as long as a lock is
    // held by another program, or, once the run is stopping, for DRAIN_LIMIT; then what the
    // writer holds goes to the side file.
    let finished = rt.block_on(finish(
        &writer,
        &shutdown,
        run_id,
        end,
        &counts.0,
        message.clone(),
    ));
    let recorded = finished.is_some();
    let (counts, left_by_limit) = match finished {
        Some(stored) => (stored, counts.1),
        None => counts,
    };
    let spilled = teardown(watch, writer, writer_thread, Duration::from_secs(1));
    let end = match (end, recorded) {
        // The run's end could not be recorded: it did not complete as far as the ledger knows.
        (RunEnd::Completed, false) => RunEnd::Aborted,
        (end, _) => end,
    };
    let message = match (&message, recorded) {
        (None, false) => Some("the ledger could not be written at the end of the run".to_owned()),
        _ => message,
    };
    Ok(Report {
        run_id,
        end,
        counts,
        message,
        requests: sent.requests,
        elapsed: started.elapsed(),
        advice: sent.advice,
        throttling: sent.throttling,
        concurrency: sent.concurrency,
        left_by_limit,
        spilled,
    })
}

/// Opens the ledger for the run (one call into `ledger/`), telling the person what it did.
fn open_ledger(
    (path, gateway): (&Path, &ledger::Gateway),
    (policy, key): (&RetryPolicy, &str),
    client: &Client,
    shared: &Shared<'_>,
    printer: &Printer,
) -> anyhow::Result<RunLedger> {
    let reverify = |k: &ledger::store::KeptAnswer| {
        let attempt = client.reverify(
            &k.body,
            k.response_time.as_deref(),
            k.response_signature.as_deref(),
        )?;
        let decision = policy.decide(&attempt.outcome, Tries::default());
        let update = policy::row_update(&attempt, &decision, k.maybe_sent);
        Some((attempt, update))
    };
    ledger::run::open_for_run(path, gateway, reverify, shared, &mut |told| match told {
        Told::Notice(text) => printer.warn(&text),
        Told::TakenIn(text) => printer.info(&text),
        Told::Recovered(n) => printer.info(&format!(
            "{n} row(s) were in flight when an earlier run ended abruptly; they will be sent \
             again (an answer of STORE_IS_CIRCLED for them is marked ambiguous)"
        )),
        Told::Reverified {
            verified,
            labels,
            still,
        } => {
            if verified > 0 {
                printer.info(&format!(
                    "{verified} answer(s) an earlier run could not verify verify now with \
                     alipay_public_key ({key}): believed, {labels} pmsLabel(s) recorded, not \
                     sent again"
                ));
            }
            if still > 0 {
                printer.warn(&format!(
                    "{still} row(s) hold an answer an earlier run could not verify, and it still \
                     does not verify with alipay_public_key ({key}); they are sent again last, \
                     after the other rows"
                ));
            }
        }
    })
}

/// What the sending phase did.
struct Sent {
    /// `Ok(true)`: the drain was cut short.
    result: anyhow::Result<bool>,
    counters: Arc<Counters>,
    requests: u64,
    advice: Option<String>,
    throttling: Option<Throttling>,
    concurrency: concurrency::Used,
}

/// Sends the rows the ingest left pending, with the progress reports, and says what happened.
#[allow(clippy::too_many_arguments)]
fn send(
    rt: &tokio::runtime::Runtime,
    client: Client,
    plan: &Plan,
    writer: &RunStore,
    shutdown: &Arc<Shutdown>,
    (run_id, to_send): (i64, u64),
    reader: RunReader,
    printer: &Arc<Printer>,
) -> Sent {
    let counters = Arc::new(Counters::default());
    counters.to_send.store(to_send, Relaxed);
    let signing = client.signing_clock();
    let crew = Arc::new(Crew {
        client,
        writer: writer.clone(),
        limiter: Limiter::new(plan.rate),
        concurrency: Concurrency::new(plan.rate, plan.concurrency),
        step: Step::new(plan.policy.clone(), plan.alipay_public_key.clone()),
        counters: counters.clone(),
        shutdown: shutdown.clone(),
        run_id,
    });
    let reporter = Reporter::start(
        counters.clone(),
        printer.clone(),
        Duration::from_secs(10),
        plan.rate,
        plan.concurrency,
    );
    let sending = Instant::now();
    let mut result = rt.block_on(worker::send_all(
        crew.clone(),
        reader,
        plan.limit,
        DRAIN_LIMIT,
    ));
    if writer.is_shared() && plan.limit.is_none() {
        result = rt.block_on(look_again(&crew, result, printer));
    }
    if let Ok(true) = result
        && counters.in_flight.load(Relaxed) > 0
    {
        printer.warn(&format!(
            "requests still in flight after {}s were abandoned; those rows will be sent again next run",
            DRAIN_LIMIT.as_secs()
        ));
    }
    reporter.finish();
    let (signatures, signing_time) = signing.totals();
    tracing::debug!(
        signatures,
        signing_ms = signing_time.as_millis() as u64,
        "time spent signing requests"
    );
    Sent {
        advice: counters.advice(plan.rate, plan.concurrency, sending.elapsed()),
        requests: counters.requests.load(Relaxed),
        throttling: crew.limiter.throttling(),
        concurrency: crew.concurrency.used(),
        counters,
        result,
    }
}

/// On a shared ledger, once the workers are done: the run's rows another run held in flight are
/// looked at again until they are done, or back to pending (that run gave them back, or its
/// lease expired and the sweep took them back), then sent. Stops with the run.
async fn look_again(
    crew: &Arc<Crew>,
    mut result: anyhow::Result<bool>,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let mut told = false;
    while let Ok(false) = result {
        if crew.shutdown.is_stopping() {
            break;
        }
        let (pending, elsewhere) = match crew.writer.unfinished(crew.run_id).await {
            Ok(left) => left,
            Err(e) => return Err(e),
        };
        if pending > 0 {
            let Some(reader) = crew.writer.reader_again() else {
                break;
            };
            let requests = crew.counters.requests.load(Relaxed);
            result = worker::send_all(crew.clone(), reader, None, DRAIN_LIMIT).await;
            if crew.counters.requests.load(Relaxed) == requests {
                // Pending, yet nothing sent: not this run's to send now (its lease is lost, or
                // another run took each row first); the next run sends what is left.
                break;
            }
        } else if elsewhere > 0 {
            if !told {
                told = true;
                printer.info(&format!(
                    "{elsewhere} row(s) of this run are in flight under another run; waiting \
                     until that run answers them or its lease expires"
                ));
            }
            let waited = tokio::select! {
                _ = crew.shutdown.stopped() => None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Some(()),
            };
            if waited.is_none() {
                break;
            }
            crew.writer.recover_async().await?;
        } else {
            break;
        }
    }
    result
}

/// How the run ended, its message, its counts and the rows `--limit` left pending.
fn conclude(
    sent: &Sent,
    shutdown: &Shutdown,
    limit: Option<u64>,
    mut counts: RunCounts,
) -> (RunEnd, Option<String>, (RunCounts, Option<u64>)) {
    let c = &sent.counters;
    c.add_to(&mut counts);
    let (end, message) = match (shutdown.reason(), &sent.result) {
        (_, Err(e)) => (RunEnd::Aborted, Some(format!("{e:#}"))),
        (Some(StopReason::Aborted(m)), _) => (RunEnd::Aborted, Some(m)),
        (Some(StopReason::Interrupted), _) => (RunEnd::Interrupted, Some("interrupted".to_owned())),
        (None, Ok(_)) => (RunEnd::Completed, None),
    };
    let left_by_limit = match (&sent.result, limit) {
        (Ok(_), Some(limit)) if c.fed.load(Relaxed) >= limit => {
            Some(counts.to_send.saturating_sub(counts.sent))
        }
        _ => None,
    };
    (end, message, (counts, left_by_limit))
}

/// The one teardown: the ledger's watch stops, the writer finishes what it holds (for at most
/// `limit`), and what it could not commit is returned, to be shown.
fn teardown(
    watch: Option<tokio::task::JoinHandle<()>>,
    writer: RunStore,
    writer_thread: Option<WriterThread>,
    limit: Duration,
) -> Vec<SpillReport> {
    if let Some(watch) = watch {
        watch.abort();
    }
    let Some(held) = writer.held() else {
        return writer.spilled().into_iter().collect();
    };
    drop(writer);
    if let Some(thread) = writer_thread {
        thread.join(limit);
    }
    let mut spilled = held.take_reports();
    let last = held.spill();
    if !last.answers.is_empty() {
        spilled.push(last);
    }
    spilled
}

/// Recovers and finishes the run record, waiting for the ledger as described in [`execute`]:
/// `None` when it could not be written.
async fn finish(
    writer: &RunStore,
    shutdown: &Shutdown,
    run_id: i64,
    end: RunEnd,
    counts: &RunCounts,
    message: Option<String>,
) -> Option<RunCounts> {
    let work = async {
        writer.recover_async().await.ok()?;
        writer
            .finish_run(run_id, end, counts.clone(), message)
            .await
            .ok()
    };
    tokio::pin!(work);
    let give_up = async {
        shutdown.stopped().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        done = &mut work => done,
        _ = give_up => {
            writer.give_up();
            // The writer now refuses what it could not commit; its answers are in the side file.
            work.await
        }
    }
}

/// Tells the person while the ledger cannot commit (every 10 s), and stops the run when the
/// writer gave up.
async fn watch_ledger(
    writer: Writer,
    shutdown: Arc<Shutdown>,
    printer: Arc<Printer>,
    side_file: PathBuf,
) {
    let mut health = writer.health();
    let mut told: Option<Instant> = None;
    loop {
        let now = health.borrow_and_update().clone();
        match now {
            Health::Ok => told = None,
            Health::Waiting {
                reason,
                since,
                held,
                in_side_file,
            } => {
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    told = Some(Instant::now());
                    let kept = match in_side_file {
                        0 => "kept".to_owned(),
                        n => format!(
                            "kept ({n} also in {}, against a power cut)",
                            side_file.display()
                        ),
                    };
                    printer.warn(&format!(
                        "the ledger cannot be written for now ({reason}); waiting {}s so far. No \
                         request is sent meanwhile; the {held} answer(s) received are {kept} and \
                         written as soon as it can be. Close the other program (or write its \
                         changes), free disk space, or press Ctrl-C: the answers then go to {}",
                        since.elapsed().as_secs(),
                        side_file.display()
                    ));
                }
            }
            Health::Failed { reason } => {
                shutdown.stop(StopReason::Aborted(format!(
                    "the ledger cannot be written: {reason}"
                )));
            }
        }
        tokio::select! {
            changed = health.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Stops the run at once when its lease on a shared ledger is lost (a renewal found it expired,
/// or none got through in time): its rows may be another run's now, so nothing more is sent and
/// the answers still coming are written only where the fence lets them.
async fn watch_lease(writer: RunStore, shutdown: Arc<Shutdown>) {
    writer.lease_lost().await;
    shutdown.stop(StopReason::Aborted(
        "this run lost its lease on the PostgreSQL ledger (the database was out of reach for \
         longer than the lease, or the run was taken for dead and its rows handed to other runs); \
         it sent nothing more. Check the connection to the database, then run the same command \
         again: it resumes"
            .to_owned(),
    ));
}

/// Shows what went to the side file: where, and each answer, so that nothing is lost even if
/// the file were.
pub fn show_spill(printer: &Printer, report: &SpillReport) {
    if report.answers.is_empty() {
        return;
    }
    let fields = serde_json::Map::from_iter([
        (
            "file".to_owned(),
            serde_json::json!(report.path.display().to_string()),
        ),
        ("answers".to_owned(), serde_json::json!(report.answers)),
    ]);
    let mut text = match &report.error {
        None => format!(
            "the ledger could not take {} answer(s); they are kept in {} and taken in by the next \
             command that opens the ledger:",
            report.answers.len(),
            report.path.display()
        ),
        Some(e) => format!(
            "the ledger could not take {} answer(s), and the side file could not be written \
             either ({e}); here they are, keep them:",
            report.answers.len()
        ),
    };
    for a in &report.answers {
        text.push_str("\n  ");
        text.push_str(a);
    }
    printer.event("error", "unwritten_answers", &text, fields);
}

/// Path, size and SHA-256 of an input file, for the run record.
pub fn file_info(path: &Path) -> anyhow::Result<FileInfo> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileInfo {
        path: path.display().to_string(),
        sha256: hex::encode(hasher.finalize()),
        bytes,
    })
}
