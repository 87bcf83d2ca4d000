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
use crate::ledger::store::FileInfo;
use crate::ledger::writer::{self, Health, SpillReport, Writer};
use crate::ledger::{self, LedgerLock};
use crate::model::{RunCounts, RunEnd};
use crate::output::Printer;
use concurrency::Concurrency;
use limiter::{Limiter, Throttling};
use policy::{RetryPolicy, Tries};
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

/// Runs the job. Input and ledger problems found before sending are errors; everything after is
/// recorded and reported in the [`Report`].
pub fn execute(
    rt: &tokio::runtime::Runtime,
    client: Client,
    plan: Plan,
    printer: Arc<Printer>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    // The headers are checked (and files opened) before the ledger is touched.
    let input = Input::open(&plan.files, plan.input.clone())?.with_dedupe(plan.dedupe);
    let files = plan
        .files
        .iter()
        .map(|p| file_info(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lock = LedgerLock::acquire(&plan.ledger)?;
    let opened = ledger::open_unlocked(&plan.ledger)?;
    for notice in opened.notices() {
        printer.warn(&notice.to_string());
    }
    // A ledger of another gateway is refused before anything is written to it.
    ledger::gateway::claim(&opened, &plan.ledger, &plan.gateway)?;
    // The feeder's connection; first it takes in what an earlier run could not write.
    let reader = opened.into_connection();
    if let Some(taken) = ledger::take_in_side_file(&reader, &plan.ledger)? {
        printer.info(&taken.to_string());
    }
    let (writer, writer_thread) = writer::start(lock)?;
    let recovered = writer.recover()?;
    if recovered > 0 {
        printer.info(&format!(
            "{recovered} row(s) were in flight when an earlier run ended abruptly; they will be sent \
             again (an answer of STORE_IS_CIRCLED for them is marked ambiguous)"
        ));
    }
    reverify_kept_answers(
        &reader,
        &client,
        &writer,
        &plan.policy,
        &plan.alipay_public_key,
        &printer,
    )?;
    let run_id = writer.begin_run(plan.config_json.clone(), files)?;
    let shutdown = Arc::new(Shutdown::default());
    let _guard = rt.enter();
    shutdown.before_exit({
        let held = writer.held();
        let printer = printer.clone();
        Box::new(move || show_spill(&printer, &held.seal()))
    });
    shutdown.listen_for_signals(printer.clone());
    let watch = rt.spawn(watch_ledger(
        writer.clone(),
        shutdown.clone(),
        printer.clone(),
        ledger::spill::path_for(&plan.ledger),
    ));

    let mut counts = match rt.block_on({
        let writer = writer.clone();
        let shutdown = shutdown.clone();
        let printer = printer.clone();
        let retry_failed = plan.retry_failed;
        tokio::task::spawn_blocking(move || {
            ingest::ingest(input, &writer, run_id, retry_failed, &shutdown, &printer)
        })
    }) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            let _ = rt.block_on(writer.finish_run(
                run_id,
                RunEnd::Aborted,
                RunCounts::default(),
                Some(message),
            ));
            watch.abort();
            drop(writer);
            writer_thread.join(DRAIN_LIMIT);
            return Err(e.context("nothing was sent"));
        }
        Err(e) => anyhow::bail!("reading the input failed: {e}"),
    };

    let counters = Arc::new(Counters::default());
    counters.to_send.store(counts.to_send, Relaxed);
    let signing = client.signing_clock();
    let crew = Arc::new(Crew::new(
        client,
        writer.clone(),
        Limiter::new(plan.rate),
        Concurrency::new(plan.rate, plan.concurrency),
        plan.policy.clone(),
        counters.clone(),
        shutdown.clone(),
        run_id,
        plan.alipay_public_key.clone(),
    ));
    let reporter = Reporter::start(
        counters.clone(),
        printer.clone(),
        Duration::from_secs(10),
        plan.rate,
        plan.concurrency,
    );
    let sending = Instant::now();
    let sent = rt.block_on(worker::send_all(
        crew.clone(),
        reader,
        plan.limit,
        DRAIN_LIMIT,
    ));
    if let Ok(true) = sent
        && counters.in_flight.load(Relaxed) > 0
    {
        printer.warn(&format!(
            "requests still in flight after {}s were abandoned; those rows will be sent again next run",
            DRAIN_LIMIT.as_secs()
        ));
    }
    reporter.finish();
    let advice = counters.advice(plan.rate, plan.concurrency, sending.elapsed());
    let (signatures, signing_time) = signing.totals();
    tracing::debug!(
        signatures,
        signing_ms = signing_time.as_millis() as u64,
        "time spent signing requests"
    );

    let c = &counters;
    counts.sent = c.sent.load(Relaxed);
    counts.succeeded = c.succeeded.load(Relaxed);
    counts.already_circled = c.already_circled.load(Relaxed);
    counts.failed += c.failed.load(Relaxed);
    counts.unverified = c.unverified.load(Relaxed);
    counts.throttled = c.throttled.load(Relaxed);
    let (end, message) = match (shutdown.reason(), &sent) {
        (_, Err(e)) => (RunEnd::Aborted, Some(format!("{e:#}"))),
        (Some(StopReason::Aborted(m)), _) => (RunEnd::Aborted, Some(m)),
        (Some(StopReason::Interrupted), _) => (RunEnd::Interrupted, Some("interrupted".to_owned())),
        (None, Ok(_)) => (RunEnd::Completed, None),
    };
    let left_by_limit = match (&sent, plan.limit) {
        (Ok(_), Some(limit)) if c.fed.load(Relaxed) >= limit => {
            Some(counts.to_send.saturating_sub(counts.sent))
        }
        _ => None,
    };
    // Anything still marked in flight (a drain cut short) is recovered now, not next run; then
    // the run's record. With a ledger that cannot commit, this waits: for as long as a lock is
    // held by another program, or, once the run is stopping, for DRAIN_LIMIT; then what the
    // writer holds goes to the side file.
    let finished = rt.block_on(finish(
        &writer,
        &shutdown,
        run_id,
        end,
        &counts,
        message.clone(),
    ));
    let recorded = finished.is_some();
    if let Some(stored) = finished {
        counts = stored;
    }
    watch.abort();
    let throttling = crew.limiter.throttling();
    let concurrency = crew.concurrency.used();
    let held = writer.held();
    drop(crew);
    drop(writer);
    writer_thread.join(Duration::from_secs(1));
    let mut spilled = held.take_reports();
    let last = held.spill();
    if !last.answers.is_empty() {
        spilled.push(last);
    }
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
        requests: c.requests.load(Relaxed),
        elapsed: started.elapsed(),
        advice,
        throttling,
        concurrency,
        left_by_limit,
        spilled,
    })
}

/// Recovers and finishes the run record, waiting for the ledger as described in [`execute`]:
/// `None` when it could not be written.
async fn finish(
    writer: &Writer,
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

/// Answers an earlier run kept because their signature did not verify, verified again with the
/// key this run has: those that verify now are believed (their rows are done, never resent).
fn reverify_kept_answers(
    conn: &rusqlite::Connection,
    client: &Client,
    writer: &Writer,
    policy: &RetryPolicy,
    alipay_public_key: &str,
    printer: &Printer,
) -> anyhow::Result<()> {
    let kept = ledger::store::kept_unverified(conn).context("cannot read the ledger")?;
    if kept.is_empty() {
        return Ok(());
    }
    let (mut verified, mut labels) = (0, 0);
    let mut still = std::collections::BTreeSet::new();
    for k in kept {
        match client.reverify(
            &k.body,
            k.response_time.as_deref(),
            k.response_signature.as_deref(),
        ) {
            Some(attempt) => {
                verified += 1;
                labels += usize::from(attempt.pms_label.is_some());
                let decision = policy.decide(&attempt.outcome, Tries::default());
                let update = policy::row_update(&attempt, &decision, k.maybe_sent);
                still.remove(&k.row_id.0);
                writer.reverified(k, attempt, update);
            }
            None => {
                still.insert(k.row_id.0);
            }
        }
    }
    if verified > 0 {
        printer.info(&format!(
            "{verified} answer(s) an earlier run could not verify verify now with \
             alipay_public_key ({alipay_public_key}): believed, {labels} pmsLabel(s) recorded, \
             not sent again"
        ));
    }
    if !still.is_empty() {
        printer.warn(&format!(
            "{} row(s) hold an answer an earlier run could not verify, and it still does not \
             verify with alipay_public_key ({alipay_public_key}); they are sent again last, after \
             the other rows",
            still.len()
        ));
    }
    Ok(())
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
