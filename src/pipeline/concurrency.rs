//! How many requests are in flight: what the rate needs at the answer time seen (Little's law),
//! with headroom, between 1 and `concurrency`, which is a cap. So an operator need not know how
//! far away the gateway is: with answers 400 ms away, `--rate 40` needs about 16 in flight, and
//! gets 28.
//!
//! `concurrency` workers are started; worker `i` takes rows only while `i` is below the target,
//! and waits (holding nothing) otherwise. The target follows the mean time a request keeps its
//! worker (its mark in the ledger, the request, its record) over the last [`RECENT`] requests,
//! plus the workers sleeping out a back-off. A mean, not a median: a request that hangs to its
//! timeout holds its worker for all that time, and the mean is what Little's law counts.
//! Without a rate (0) nothing paces the run: every worker takes rows.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;

/// The requests the mean is taken over.
pub const RECENT: usize = 64;

/// In flight = rate × answer time × this + [`SPARE`]: answers do not all take the mean, and a
/// worker waits for its slot in the pace as well. With one spare, a fast gateway got 2 workers
/// at `--rate 40`, and a commit slowed by a busy disk now and then left a slot of the pace
/// unused: 36.5–38/s instead of 39.
pub const HEADROOM: f64 = 1.5;
pub const SPARE: usize = 4;

/// The answer time assumed until the first answers say (a gateway a quarter of a second away):
/// guessing high costs nothing, as the pace holds the extra workers back.
pub const FIRST_GUESS: Duration = Duration::from_millis(250);

/// What the run used, for its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Used {
    /// The `concurrency` setting.
    pub cap: usize,
    /// The most requests the run allowed in flight at once once answers came (the first
    /// guess when none came).
    pub most: usize,
    /// The mean time a request kept its worker, over the last requests of the run.
    pub answer_time: Option<Duration>,
    /// The target wanted more than the cap at some point.
    pub capped: bool,
}

impl Used {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "most_in_flight": self.most,
            "cap": self.cap,
            "answer_ms": self.answer_time.map(|t| (t.as_secs_f64() * 1e4).round() / 10.0),
            "capped": self.capped,
        })
    }
}

pub struct Concurrency {
    rate: u32,
    cap: usize,
    target: watch::Sender<usize>,
    recent: Mutex<Recent>,
    most: AtomicUsize,
}

#[derive(Default)]
struct Recent {
    times: VecDeque<Duration>,
    sum: Duration,
    capped: bool,
}

/// What `rate` requests a second need in flight when each keeps its worker `time`.
pub fn needed(rate: u32, time: Duration) -> usize {
    (f64::from(rate) * time.as_secs_f64() * HEADROOM).ceil() as usize + SPARE
}

impl Concurrency {
    pub fn new(rate: u32, cap: usize) -> Concurrency {
        let cap = cap.max(1);
        let first = if rate == 0 {
            cap
        } else {
            needed(rate, FIRST_GUESS).clamp(1, cap)
        };
        Concurrency {
            rate,
            cap,
            target: watch::channel(first).0,
            recent: Mutex::new(Recent::default()),
            // The first guess is not counted: the answers decide.
            most: AtomicUsize::new(if rate == 0 { cap } else { 0 }),
        }
    }

    /// Workers to start: the cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Requests allowed in flight now.
    pub fn target(&self) -> usize {
        *self.target.borrow()
    }

    /// A request kept its worker `time`; `resting` workers are sleeping out a back-off (they
    /// hold a worker and send nothing).
    pub fn observe(&self, time: Duration, resting: usize) {
        if self.rate == 0 {
            return;
        }
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.times.len() == RECENT
            && let Some(old) = r.times.pop_front()
        {
            r.sum = r.sum.saturating_sub(old);
        }
        r.times.push_back(time);
        r.sum += time;
        let mean = r.sum / r.times.len() as u32;
        let wanted = needed(self.rate, mean).saturating_add(resting);
        r.capped |= wanted > self.cap;
        let target = wanted.clamp(1, self.cap);
        drop(r);
        self.most.fetch_max(target, Relaxed);
        self.target.send_if_modified(|t| {
            let changed = *t != target;
            *t = target;
            changed
        });
    }

    /// Waits until worker `index` may take rows.
    pub async fn turn(&self, index: usize) {
        let mut rx = self.target.subscribe();
        let _ = rx.wait_for(|t| index < *t).await;
    }

    pub fn used(&self) -> Used {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        Used {
            cap: self.cap,
            most: match self.most.load(Relaxed) {
                0 => self.target(),
                most => most,
            },
            answer_time: (!r.times.is_empty()).then(|| r.sum / r.times.len() as u32),
            capped: r.capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn in_flight_follows_the_answer_time_within_the_cap() {
        let c = Concurrency::new(40, 64);
        // Until the first answers: a quarter of a second assumed, 40 × 0.25 × 1.5 + 4.
        assert_eq!(c.target(), 19);
        for _ in 0..RECENT {
            c.observe(MS(400), 0);
        }
        // 40 × 0.4 × 1.5 + 4.
        assert_eq!(c.target(), 28);
        for _ in 0..RECENT {
            c.observe(MS(2), 0);
        }
        assert_eq!(c.target(), 5);
        // Workers sleeping out a back-off send nothing: others take their place.
        c.observe(MS(2), 5);
        assert_eq!(c.target(), 10);
        // Answers 10 s away would need 601: the cap holds.
        for _ in 0..RECENT {
            c.observe(Duration::from_secs(10), 0);
        }
        let used = c.used();
        assert_eq!((c.target(), used.most, used.cap), (64, 64, 64));
        assert!(used.capped);
        assert_eq!(used.answer_time, Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_hang_counts_for_all_the_time_it_holds_its_worker() {
        let c = Concurrency::new(50, 64);
        for _ in 0..RECENT - 1 {
            c.observe(MS(1), 0);
        }
        assert_eq!(c.target(), 5);
        // One request of 64 hanging to a 15 s timeout: 0.24 s on average.
        c.observe(Duration::from_secs(15), 0);
        assert!(c.target() >= 21, "{}", c.target());
    }

    #[test]
    fn without_a_rate_every_worker_takes_rows() {
        let c = Concurrency::new(0, 64);
        c.observe(MS(1), 0);
        assert_eq!(c.target(), 64);
        assert_eq!(Concurrency::new(10, 1).target(), 1);
    }

    #[tokio::test]
    async fn a_worker_above_the_target_waits_for_its_turn() {
        let c = std::sync::Arc::new(Concurrency::new(10, 8));
        for _ in 0..RECENT {
            c.observe(MS(1), 0);
        }
        assert_eq!(c.target(), 5);
        c.turn(4).await;
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.turn(6).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        for _ in 0..RECENT {
            c.observe(MS(500), 0);
        }
        waiting.await.unwrap();
    }
}
