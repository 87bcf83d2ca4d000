//! The request rate: a GCRA limiter (governor) with no burst, so that requests leave at most
//! `rate` per second in *any* one-second window, plus a shared pause that an HTTP 429 sets for
//! every worker at once.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

pub struct Limiter {
    gcra: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

impl Limiter {
    /// `rate` requests per second; 0 is no limit.
    pub fn new(rate: u32) -> Self {
        let gcra = (rate > 0).then(|| {
            // A hair over 1/rate between requests: timer and network jitter can only bring two
            // requests closer together, never further apart, so exact spacing could let rate+1
            // land in one window at the gateway.
            let period = Duration::from_secs_f64(1.002 / f64::from(rate));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::MIN);
            RateLimiter::direct(quota)
        });
        Limiter {
            gcra,
            paused_until: Mutex::new(None),
        }
    }

    /// Waits until a request may leave.
    pub async fn ready(&self) {
        loop {
            self.wait_pause().await;
            if let Some(g) = &self.gcra {
                g.until_ready().await;
            }
            // A 429 may have paused everyone while this worker waited for its slot.
            if self.pause_left().is_none() {
                return;
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
        assert!(start.elapsed() >= Duration::from_millis(245), "{:?}", start.elapsed());
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
