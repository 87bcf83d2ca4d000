//! The set-aside queue: the rows to send, fresh ones from the feeder first, and those set aside
//! to come back later (after a pause of `retry_later`, a throttled row's `Retry-After`, or at the
//! end of the run). Which rows go aside, and for how long, the policy decides; this only keeps
//! them and hands them out again.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::policy::Later;
use super::shutdown::Shutdown;
use super::worker::Job;

/// The rows to send: fresh ones from the feeder, and those set aside to come back later.
///
/// A row set aside while the gateway was down comes back when its pause is over, or as soon as
/// the gateway gives a believable answer to another request. A throttled row comes back when
/// its `Retry-After` is over, never earlier. When nothing else is left to send,
/// the soonest of them is sent early as a probe, at growing intervals ([`PROBE_FIRST`] doubling
/// to [`PROBE_MAX`]), so that a run does not sit out a ten-minute pause for a gateway that came
/// back after one.
pub struct Jobs {
    fresh: Mutex<mpsc::Receiver<Job>>,
    aside: std::sync::Mutex<Aside>,
    changed: Notify,
    /// The crew's count of believable answers.
    believed: Arc<AtomicU64>,
    /// Cancelled once [`Jobs::next`] found nothing left: a worker waiting for its turn ends.
    exhausted: CancellationToken,
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
    /// The crew's count of believable answers when the row was set aside; `None`: the row
    /// waits out its pause whatever others hear (a throttled row).
    believed: Option<u64>,
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
    pub(super) fn new(fresh: mpsc::Receiver<Job>, believed: Arc<AtomicU64>) -> Jobs {
        Jobs {
            fresh: Mutex::new(fresh),
            aside: std::sync::Mutex::default(),
            changed: Notify::new(),
            believed,
            exhausted: CancellationToken::new(),
        }
    }

    fn aside(&self) -> std::sync::MutexGuard<'_, Aside> {
        self.aside.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_aside(&self, mut job: Job, later: Later) {
        let mut a = self.aside();
        job.standing.tries.probe = false;
        match later {
            Later::Wait(pause) => {
                let due = Instant::now() + pause;
                job.due = Some(due);
                a.order += 1;
                let order = a.order;
                a.timed.push(Timed {
                    due,
                    order,
                    believed: None,
                    job,
                });
            }
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
                    believed: Some(self.believed.load(Relaxed)),
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
    /// Resolves once a worker found nothing left to send (or the run stopped).
    pub(super) async fn exhausted(&self) {
        self.exhausted.cancelled().await;
    }

    /// The workers are gone: the feeder's channel closes, and the feeder returns.
    pub(super) async fn close(&self) {
        self.fresh.lock().await.close();
    }

    pub(super) fn probed(&self, answered: bool) {
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
    pub(super) async fn next(&self, shutdown: &Shutdown) -> Option<Job> {
        let next = self.look(shutdown).await;
        if next.is_none() {
            self.exhausted.cancel();
        }
        next
    }

    async fn look(&self, shutdown: &Shutdown) -> Option<Job> {
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
                let wakes = |t: &Timed| t.believed.is_some_and(|b| b < believed);
                if a.timed.iter().any(|t| wakes(t) && t.due > now) {
                    let woken: Vec<Timed> = a.timed.drain().collect();
                    for mut t in woken {
                        if wakes(&t) {
                            t.due = now;
                        }
                        a.timed.push(t);
                    }
                    a.probe_at = None;
                }
                if a.timed.peek().is_some_and(|t| t.due <= now) {
                    return a.timed.pop().map(|t| {
                        let mut job = t.job;
                        job.standing.believed_at_first_failure = None;
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
                            job.standing.tries.probe = true;
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
