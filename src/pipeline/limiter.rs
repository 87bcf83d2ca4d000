//! The request rate: a GCRA limiter (governor) paces requests evenly at `rate` per second, with
//! no burst, only a 2 ms tolerance for late wake-ups; a log of the last `rate` send instants makes
//! it a hard rule that no one-second window ever holds more than `rate` (a worker woken late by a
//! busy machine cannot make up for lost time in a burst); and a shared pause that an HTTP 429
//! sets for every worker at once. Workers wait their turn in arrival order, one at a time.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

pub struct Limiter {
    gcra: Option<Pacer>,
    /// The send instants of the last `rate` requests (empty when there is no limit).
    window: Mutex<VecDeque<Instant>>,
    rate: usize,
    paused_until: Mutex<Option<Instant>>,
    /// Held by the one worker waiting for the next slot. governor's wait has every waiter sleep
    /// until the same earliest instant, and all of them wake for it while one wins: with 512
    /// workers and a far gateway, most of them waiting for a slot, that herd cost a run at
    /// `--rate 500` 1.57 ms of CPU a row instead of 0.88. A fair (FIFO) lock wakes just one.
    turn: tokio::sync::Mutex<()>,
}

/// The GCRA pacer and how many of its cells one request costs.
struct Pacer {
    gcra: DefaultDirectRateLimiter,
    cells: NonZeroU32,
}

/// The window, with a little room for the timer's resolution.
const WINDOW: Duration = Duration::from_millis(1002);

/// How late a woken worker may be without the schedule losing that time for good.
const TOLERANCE: Duration = Duration::from_millis(2);

/// The pacer's unit of time: a request costs `period / CELL` cells, rounded up.
const CELL: Duration = Duration::from_micros(100);

impl Limiter {
    /// `rate` requests per second; 0 is no limit.
    pub fn new(rate: u32) -> Self {
        let gcra = (rate > 0).then(|| {
            // Paced at 98% of the rate: timer and network jitter can only bring two requests
            // closer together at the gateway, never further apart, so pacing at exactly the rate
            // would let rate+1 land in one of its windows. The window log below is the hard cap.
            let period = Duration::from_secs_f64(1.0 / (0.98 * f64::from(rate)));
            // A worker is woken up to a millisecond after its slot (the timer's resolution). With
            // a burst of one request, GCRA counts the next slot from that late instant, so every
            // wake-up lost up to a millisecond for good: 0.95 R at 200/s. So a request costs many
            // small cells, and the burst holds TOLERANCE worth of cells more than one request:
            // a slot taken up to TOLERANCE late is caught up, and requests are still evenly
            // spaced, never sent back to back (a burst of 2 whole requests at 200/s let the
            // gateway count 203 in a second).
            let cells = period
                .as_nanos()
                .div_ceil(CELL.as_nanos())
                .clamp(1, 1 << 20) as u32;
            let cell = period / cells;
            let spare = TOLERANCE.min(period).as_nanos() / cell.as_nanos().max(1);
            let burst = cells.saturating_add(spare as u32);
            let quota = Quota::with_period(cell)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            Pacer {
                gcra: RateLimiter::direct(quota),
                cells: NonZeroU32::new(cells).unwrap_or(NonZeroU32::MIN),
            }
        });
        Limiter {
            gcra,
            window: Mutex::new(VecDeque::with_capacity(rate as usize)),
            // From 100/s up, 1% of the window is left free: a request delayed on its way (a
            // worker descheduled for a few milliseconds) must not push the gateway's count over.
            rate: (rate - rate / 100) as usize,
            paused_until: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes a place in the sliding window, or says how long until one is free.
    fn take_window_slot(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if w.len() >= self.rate {
            let oldest = w[0];
            if now < oldest + WINDOW {
                return Some(oldest + WINDOW);
            }
            w.pop_front();
        }
        w.push_back(now);
        None
    }

    /// Waits until a request may leave.
    pub async fn ready(&self) {
        // With no limit, only a 429 pause holds requests back, and they need not queue for it.
        let _turn = match &self.gcra {
            Some(_) => Some(self.turn.lock().await),
            None => None,
        };
        loop {
            self.wait_pause().await;
            if let Some(p) = &self.gcra {
                // Cannot fail: the burst holds at least `cells`.
                let _ = p.gcra.until_n_ready(p.cells).await;
            }
            // A 429 may have paused everyone while this worker waited for its slot.
            if self.pause_left().is_some() {
                continue;
            }
            match self.take_window_slot() {
                None => return,
                Some(free_at) => tokio::time::sleep_until(free_at).await,
            }
        }
    }

    /// Every worker waits `d` before sending again.
    pub fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    fn pause_left(&self) -> Option<Instant> {
        let p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        p.filter(|until| *until > Instant::now())
    }

    async fn wait_pause(&self) {
        while let Some(until) = self.pause_left() {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_burst_at_start() {
        let l = Limiter::new(20);
        let start = std::time::Instant::now();
        for _ in 0..6 {
            l.ready().await;
        }
        // 6 requests at 20/s need at least 5 gaps of 50 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(245),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn never_more_than_rate_in_any_window() {
        let l = std::sync::Arc::new(Limiter::new(10));
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (l, sent) = (l.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..4 {
                    l.ready().await;
                    sent.lock().unwrap().push(std::time::Instant::now());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = sent.lock().unwrap().clone();
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 10, "{in_window} in one second");
        }
    }

    #[tokio::test]
    async fn a_pause_holds_everyone() {
        let l = Limiter::new(0);
        l.pause(Duration::from_millis(150));
        let start = std::time::Instant::now();
        l.ready().await;
        assert!(start.elapsed() >= Duration::from_millis(140));
    }
}
