//! What the person (or cron) sees while a run goes: an indicatif bar on a terminal, a plain line
//! every few seconds otherwise (a JSON log line with `--log-format json`), and the summary table.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::ledger::writer::RunCounts;

/// Live counters, shared by the workers.
#[derive(Debug, Default)]
pub struct Counters {
    pub to_send: AtomicU64,
    pub succeeded: AtomicU64,
    pub already_circled: AtomicU64,
    pub failed: AtomicU64,
    /// Rows waiting out a back-off right now.
    pub retrying: AtomicU64,
    /// Requests that left (every attempt).
    pub requests: AtomicU64,
}

impl Counters {
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Relaxed)
            + self.already_circled.load(Relaxed)
            + self.failed.load(Relaxed)
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bar,
    Lines,
    Json,
}

impl Style {
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Reports until dropped.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn start(counters: Arc<Counters>, style: Style, every: Duration) -> Reporter {
        let started = Instant::now();
        let bar = (style == Style::Bar).then(|| {
            let bar = ProgressBar::new(counters.to_send.load(Relaxed));
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} rows  {msg}  eta {eta}")
                    .expect("a valid template"),
            );
            bar
        });
        let bar2 = bar.clone();
        let task = tokio::spawn(async move {
            let tick = if bar2.is_some() {
                Duration::from_millis(200)
            } else {
                every
            };
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            loop {
                interval.tick().await;
                let line = Line::read(&counters, started.elapsed());
                match (&bar2, style) {
                    (Some(bar), _) => {
                        bar.set_position(line.finished);
                        bar.set_message(line.message());
                    }
                    (None, Style::Json) => tracing::info!(
                        finished = line.finished,
                        to_send = line.to_send,
                        failed = line.failed,
                        retrying = line.retrying,
                        rate = format!("{:.1}", line.rate),
                        "progress"
                    ),
                    (None, _) => eprintln!(
                        "progress: {}/{} rows, {}",
                        line.finished,
                        line.to_send,
                        line.message()
                    ),
                }
            }
        });
        Reporter { task, bar }
    }

    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

struct Line {
    finished: u64,
    to_send: u64,
    failed: u64,
    retrying: u64,
    rate: f64,
}

impl Line {
    fn read(c: &Counters, elapsed: Duration) -> Line {
        Line {
            finished: c.finished(),
            to_send: c.to_send.load(Relaxed),
            failed: c.failed.load(Relaxed),
            retrying: c.retrying.load(Relaxed),
            rate: c.requests.load(Relaxed) as f64 / elapsed.as_secs_f64().max(0.001),
        }
    }

    fn message(&self) -> String {
        format!(
            "{} failed, {} retrying, {:.1} req/s",
            self.failed, self.retrying, self.rate
        )
    }
}

/// The table printed at the end of a run.
pub fn summary_table(c: &RunCounts, elapsed: Duration, requests: u64, how: &str) -> String {
    let rows: [(&str, u64, &str); 9] = [
        ("rows read", c.rows_read, ""),
        (
            "already done",
            c.already_done,
            "succeeded or circled in an earlier run",
        ),
        ("sent this run", c.to_send, ""),
        ("succeeded", c.succeeded, "pmsLabel recorded"),
        (
            "already circled",
            c.already_circled,
            "the store had a mall already",
        ),
        ("failed", c.failed, "see: pms-onboard export --state failed"),
        (
            "rejected",
            c.rejected,
            "see: pms-onboard export --state rejected",
        ),
        (
            "duplicates",
            c.duplicates,
            "same store twice in the input, skipped",
        ),
        (
            "drifted",
            c.drifted,
            "done earlier, sheet now differs: see reconcile",
        ),
    ];
    let mut out = String::new();
    out.push_str(&format!(
        "run {how} in {:.1}s, {requests} requests\n",
        elapsed.as_secs_f64()
    ));
    for (name, n, hint) in rows {
        let hint = if n > 0 && !hint.is_empty() {
            format!("  {hint}")
        } else {
            String::new()
        };
        out.push_str(&format!("  {name:<16} {n:>8}{hint}\n"));
    }
    out
}
