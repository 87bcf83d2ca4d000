//! What the person (or cron) sees while a run goes: the counters the workers keep, a progress
//! report every few seconds (a bar on a terminal), the advice when `concurrency` held the run
//! back, and the summary table at the end. Everything is shown through the [`Printer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::MAX_CONCURRENCY;
use crate::model::{RunCounts, State};
use crate::output::Printer;

/// Live counters, shared by the workers.
#[derive(Debug, Default)]
pub struct Counters {
    pub to_send: AtomicU64,
    /// Fresh rows handed to the workers (what `--limit` counts).
    pub fed: AtomicU64,
    /// Rows at least one request of this run left for.
    pub sent: AtomicU64,
    pub succeeded: AtomicU64,
    pub already_circled: AtomicU64,
    pub failed: AtomicU64,
    /// Rows whose last answer could not be verified.
    pub unverified: AtomicU64,
    /// Rows waiting out a back-off right now.
    pub retrying: AtomicU64,
    /// Requests that left (every attempt).
    pub requests: AtomicU64,
    /// Requests out now, waiting for their answer.
    pub in_flight: AtomicU64,
    /// Requests the gateway throttled.
    pub throttled: AtomicU64,
    /// Their latencies added up, in microseconds: with `requests`, the mean time a worker waits
    /// for an answer, which decides how many requests a second `concurrency` workers can send.
    pub latency_micros: AtomicU64,
}

impl Counters {
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Relaxed)
            + self.already_circled.load(Relaxed)
            + self.failed.load(Relaxed)
    }

    /// A request left; `first` of its row in this run.
    pub fn left(&self, first: bool) {
        if first {
            self.sent.fetch_add(1, Relaxed);
        }
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Its answer came after `latency`; `unverified`: whether the row's last answer could not
    /// be verified, before and after this one.
    pub fn answered(&self, latency: Duration, throttled: bool, unverified: (bool, bool)) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.latency_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
        if throttled {
            self.throttled.fetch_add(1, Relaxed);
        }
        match unverified {
            (false, true) => {
                self.unverified.fetch_add(1, Relaxed);
            }
            (true, false) => {
                self.unverified.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
    }

    /// The row is finished for this run, in `state`.
    pub fn done(&self, state: State) {
        let counter = match state {
            State::Succeeded => &self.succeeded,
            State::AlreadyCircled => &self.already_circled,
            _ => &self.failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A worker begins (`true`) or ends a back-off.
    pub fn resting(&self, now: bool) {
        if now {
            self.retrying.fetch_add(1, Relaxed);
        } else {
            self.retrying.fetch_sub(1, Relaxed);
        }
    }

    /// Adds what the workers counted to the run's counts: the one place they meet.
    pub fn add_to(&self, counts: &mut RunCounts) {
        counts.sent = self.sent.load(Relaxed);
        counts.succeeded = self.succeeded.load(Relaxed);
        counts.already_circled = self.already_circled.load(Relaxed);
        counts.failed += self.failed.load(Relaxed);
        counts.unverified = self.unverified.load(Relaxed);
        counts.throttled = self.throttled.load(Relaxed);
    }

    /// [`concurrency_advice`] for the requests counted so far, `elapsed` after sending began.
    pub fn advice(&self, rate: u32, concurrency: usize, elapsed: Duration) -> Option<String> {
        concurrency_advice(
            rate,
            concurrency,
            self.requests.load(Relaxed),
            Duration::from_micros(self.latency_micros.load(Relaxed)),
            elapsed,
        )
    }
}

/// Below this share of `rate`, a run is worth explaining.
const HELD_BACK: f64 = 0.9;

/// When the workers, not the rate limit, set the pace: `concurrency` workers each waiting
/// `latency` for an answer send at most `concurrency / latency` requests a second (Little's law),
/// and a gateway far away can make that less than `rate`. Nothing in the output would say why a
/// run at `--rate 100` sends 40 a second, so this says it, with the setting that would use the
/// whole rate. `None` when the run kept up with the rate, had no limit, or is too short to judge
/// (fewer than 20 requests or 2 seconds), and when the answers came quickly enough that
/// something else held the run back (back-offs, a 429 pause).
pub fn concurrency_advice(
    rate: u32,
    concurrency: usize,
    requests: u64,
    latency_sum: Duration,
    elapsed: Duration,
) -> Option<String> {
    if rate == 0 || requests < 20 || elapsed < Duration::from_secs(2) || concurrency == 0 {
        return None;
    }
    let rate = f64::from(rate);
    let achieved = requests as f64 / elapsed.as_secs_f64();
    let latency = latency_sum.as_secs_f64() / requests as f64;
    if achieved >= HELD_BACK * rate || latency <= 0.0 {
        return None;
    }
    let allowed = concurrency as f64 / latency;
    if allowed >= 0.95 * rate {
        return None;
    }
    // A fifth more than Little's law asks for, as answers do not all take the mean.
    let needed = (rate * latency * 1.2).ceil() as usize;
    let ms = latency * 1e3;
    let head = format!(
        "the rate was held back by `concurrency`: answers took {ms:.0} ms on average, so \
         {concurrency} requests in flight can send about {allowed:.0} a second, not the \
         {rate:.0} that `rate` allows (this run: {achieved:.1}/s)."
    );
    Some(if needed <= MAX_CONCURRENCY {
        let needed = needed.max(concurrency + 1);
        format!(
            "{head} Set concurrency to {needed} or more (--concurrency {needed}, \
             PMS_ONBOARD_CONCURRENCY or `concurrency` in the config file) to use the whole rate; \
             the rate limit still holds."
        )
    } else {
        format!(
            "{head} Even the largest concurrency, {MAX_CONCURRENCY}, allows about {:.0} a second \
             at that latency: the gateway answers too slowly for this rate.",
            MAX_CONCURRENCY as f64 / latency
        )
    })
}

/// Reports until finished.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    printer: Arc<Printer>,
}

impl Reporter {
    /// Starts reporting as sending starts. `rate` and `concurrency` are the run's, for
    /// [`concurrency_advice`], given once as soon as 10 seconds of sending can judge it.
    pub fn start(
        counters: Arc<Counters>,
        printer: Arc<Printer>,
        every: Duration,
        rate: u32,
        concurrency: usize,
    ) -> Reporter {
        let started = Instant::now();
        printer.start_bar(counters.to_send.load(Relaxed));
        let p = printer.clone();
        let task = tokio::spawn(async move {
            let tick = if p.style() == crate::output::Style::Bar {
                Duration::from_millis(200)
            } else {
                every
            };
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            let mut advised = false;
            loop {
                interval.tick().await;
                let elapsed = started.elapsed();
                if !advised
                    && elapsed >= Duration::from_secs(10)
                    && let Some(advice) = counters.advice(rate, concurrency, elapsed)
                {
                    advised = true;
                    p.warn(&advice);
                }
                let c = &counters;
                let rate_now = c.requests.load(Relaxed) as f64 / elapsed.as_secs_f64().max(0.001);
                let (failed, retrying) = (c.failed.load(Relaxed), c.retrying.load(Relaxed));
                let fields = serde_json::Map::from_iter([
                    ("failed".to_owned(), json!(failed)),
                    ("retrying".to_owned(), json!(retrying)),
                    ("rate".to_owned(), json!(format!("{rate_now:.1}"))),
                ]);
                p.progress(
                    c.finished(),
                    c.to_send.load(Relaxed),
                    &format!("{failed} failed, {retrying} retrying, {rate_now:.1} req/s"),
                    fields,
                );
            }
        });
        Reporter { task, printer }
    }

    pub fn finish(self) {
        self.task.abort();
        self.printer.finish_bar();
    }
}

/// The table printed at the end of a run: what happened, not what was planned.
/// `in_flight`: the most requests the run had in flight at once.
pub fn summary_table(
    c: &RunCounts,
    elapsed: Duration,
    requests: u64,
    in_flight: usize,
    how: &str,
) -> String {
    let not_sent = c.to_send.saturating_sub(c.sent);
    let rows: [(&str, u64, &str); 12] = [
        ("rows read", c.rows_read, ""),
        (
            "already done",
            c.already_done,
            "succeeded or circled in an earlier run",
        ),
        ("sent this run", c.sent, ""),
        (
            "not sent",
            not_sent,
            "still pending: run the same command again",
        ),
        ("succeeded", c.succeeded, "pmsLabel recorded"),
        (
            "already circled",
            c.already_circled,
            "the store had a mall already",
        ),
        ("failed", c.failed, "see: pms-onboard export --state failed"),
        (
            "not verified",
            c.unverified,
            "answer kept, label not believed: see the message above",
        ),
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
        (
            "throttled",
            c.throttled,
            "requests AlipayHK held back (sent again)",
        ),
    ];
    let mut out = format!(
        "run {how} in {:.1}s, {requests} requests, at most {in_flight} in flight\n",
        elapsed.as_secs_f64()
    );
    // Rows that only matter when something happened are left out when they are 0.
    let shown: Vec<_> = rows
        .into_iter()
        .filter(|(name, n, _)| {
            *n > 0 || !matches!(*name, "not sent" | "not verified" | "throttled")
        })
        .collect();
    out.push_str(&counts_table(&shown));
    out
}

/// `  name          count  hint` lines; the hint only where the count is not 0.
pub fn counts_table(rows: &[(&str, u64, &str)]) -> String {
    let mut out = String::new();
    for (name, n, hint) in rows {
        let hint = if *n > 0 && !hint.is_empty() {
            format!("  {hint}")
        } else {
            String::new()
        };
        out.push_str(&format!("  {name:<16} {n:>8}{hint}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_far_gateway_and_few_workers_are_explained_with_the_setting_to_use() {
        // 8 workers, 200 ms answers: 40/s at most, of a rate of 100.
        let advice = concurrency_advice(100, 8, 800, MS(200) * 800, S(20)).unwrap();
        assert!(advice.contains("200 ms"), "{advice}");
        assert!(advice.contains("about 40 a second"), "{advice}");
        assert!(advice.contains("(this run: 40.0/s)"), "{advice}");
        // 100/s × 0.2 s × 1.2 = 24 in flight.
        assert!(advice.contains("--concurrency 24"), "{advice}");
    }

    #[test]
    fn a_run_that_kept_up_with_its_rate_is_not_explained() {
        // 98/s of 100: the limiter set the pace.
        assert_eq!(concurrency_advice(100, 8, 980, MS(50) * 980, S(10)), None);
        // No limit, nothing to fall short of.
        assert_eq!(concurrency_advice(0, 8, 800, MS(200) * 800, S(20)), None);
    }

    #[test]
    fn a_slow_run_whose_answers_were_quick_is_not_blamed_on_concurrency() {
        // 30/s of 100, but 8 workers at 20 ms could send 400/s: back-offs or a 429 pause did it.
        assert_eq!(concurrency_advice(100, 8, 600, MS(20) * 600, S(20)), None);
    }

    #[test]
    fn too_little_to_judge_is_not_explained() {
        assert_eq!(concurrency_advice(100, 8, 10, MS(200) * 10, S(5)), None);
        assert_eq!(concurrency_advice(100, 8, 30, MS(200) * 30, MS(1500)), None);
    }

    #[test]
    fn a_gateway_too_slow_for_any_concurrency_is_said_so() {
        // 10 s answers at 100/s would need 1,200 in flight; 512 is the most.
        let advice = concurrency_advice(100, 8, 40, S(10) * 40, S(50)).unwrap();
        assert!(
            advice.contains("Even the largest concurrency, 512"),
            "{advice}"
        );
        assert!(advice.contains("about 51 a second"), "{advice}");
    }
}
