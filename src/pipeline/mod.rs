//! The run: rows → ledger (phase one, [`ingest`]) → limiter → HTTP → outcome → ledger (phase two,
//! [`worker`]). Owns the order of events that makes a run resumable: recover what a killed run
//! left in flight, record the run, read the input, send, drain, record how it ended.

pub mod ingest;
pub mod limiter;
pub mod progress;
pub mod retry;
pub mod shutdown;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::api::client::Client;
use crate::input::{Dedupe, Encoding, Input};
use crate::ledger::writer::{self, FileInfo, RunCounts, RunEnd};
use crate::ledger::{self, RunLock};
use limiter::Limiter;
use progress::{Counters, Reporter, Style};
use retry::RetryPolicy;
use shutdown::{Shutdown, StopReason};
use worker::Shared;

/// How long requests in flight may take to finish after a stop, beyond which the run ends
/// anyway and those rows are resent next time.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Everything a run needs besides the client.
pub struct Plan {
    pub files: Vec<PathBuf>,
    pub encoding: Encoding,
    /// How the input finds duplicates (bounded memory for a run).
    pub dedupe: Dedupe,
    pub ledger: PathBuf,
    pub rate: u32,
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub retry_failed: bool,
    pub style: Style,
    /// The settings as JSON for the run record (no secrets).
    pub config_json: String,
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
}

/// Runs the job. Input and ledger problems found before sending are errors; everything after is
/// recorded and reported in the [`Report`].
pub fn execute(rt: &tokio::runtime::Runtime, client: Client, plan: Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    // The headers are checked (and files opened) before the ledger is touched.
    let input = Input::open(&plan.files, plan.encoding)?.with_dedupe(plan.dedupe);
    let files = plan
        .files
        .iter()
        .map(|p| file_info(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _lock = RunLock::acquire(&plan.ledger)?;
    let (writer, writer_thread) = writer::start(&plan.ledger)?;
    let recovered = writer.recover()?;
    if recovered > 0 {
        eprintln!(
            "{recovered} row(s) were in flight when an earlier run ended abruptly; they will be sent again \
             (an answer of STORE_IS_CIRCLED for them is marked ambiguous)"
        );
    }
    let run_id = writer.begin_run(plan.config_json.clone(), files)?;
    let shutdown = Arc::new(Shutdown::default());
    let _guard = rt.enter();
    shutdown.listen_for_signals();

    let mut counts = match rt.block_on({
        let writer = writer.clone();
        let shutdown = shutdown.clone();
        let retry_failed = plan.retry_failed;
        tokio::task::spawn_blocking(move || {
            ingest::ingest(input, &writer, run_id, retry_failed, &shutdown)
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
            drop(writer);
            writer_thread.join();
            return Err(e.context("nothing was sent"));
        }
        Err(e) => anyhow::bail!("reading the input failed: {e}"),
    };

    let counters = Arc::new(Counters::default());
    counters.to_send.store(counts.to_send, Relaxed);
    let signing = client.signing_clock();
    let shared = Arc::new(Shared::new(
        client,
        writer.clone(),
        Limiter::new(plan.rate),
        plan.policy.clone(),
        counters.clone(),
        shutdown.clone(),
        run_id,
    ));
    let reader = ledger::open(&plan.ledger)?;
    let reporter = Reporter::start(
        counters.clone(),
        plan.style,
        Duration::from_secs(10),
        plan.rate,
        plan.concurrency,
    );
    let sending = Instant::now();
    let sent = rt.block_on(worker::send_all(
        shared,
        reader,
        plan.concurrency,
        DRAIN_LIMIT,
    ));
    if let Ok(true) = sent {
        eprintln!(
            "requests still in flight after {}s were abandoned; those rows will be sent again next run",
            DRAIN_LIMIT.as_secs()
        );
    }
    reporter.finish();
    let advice = counters.advice(plan.rate, plan.concurrency, sending.elapsed());
    let (signatures, signing_time) = signing.totals();
    tracing::debug!(
        signatures,
        signing_ms = signing_time.as_millis() as u64,
        "time spent signing requests"
    );
    // Anything still marked in flight (a drain cut short) is recovered now, not next run.
    rt.block_on(writer.recover_async())?;

    counts.succeeded = counters.succeeded.load(Relaxed);
    counts.already_circled = counters.already_circled.load(Relaxed);
    counts.failed += counters.failed.load(Relaxed);
    let (end, message) = match (shutdown.reason(), &sent) {
        (_, Err(e)) => (RunEnd::Aborted, Some(format!("{e:#}"))),
        (Some(StopReason::Aborted(m)), _) => (RunEnd::Aborted, Some(m)),
        (Some(StopReason::Interrupted), _) => (RunEnd::Interrupted, Some("interrupted".to_owned())),
        (None, Ok(_)) => (RunEnd::Completed, None),
    };
    rt.block_on(writer.finish_run(run_id, end, counts.clone(), message.clone()))?;
    drop(writer);
    writer_thread.join();
    Ok(Report {
        run_id,
        end,
        counts,
        message,
        requests: counters.requests.load(Relaxed),
        elapsed: started.elapsed(),
        advice,
    })
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
