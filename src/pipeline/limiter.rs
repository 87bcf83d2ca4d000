//! The request rate. Three rules, in the order a request meets them:
//!
//! 1. **Pace** ([`Limiter::acquire`], before the row is marked in flight): requests are spaced
//!    evenly (GCRA: each takes the next slot of a schedule, a slot up to [`TOLERANCE`] late is
//!    caught up, none is early), at 98% of `rate`, or slower while the gateway throttles. Workers
//!    wait their turn in arrival order, one at a time (a fair lock: a herd of 512 workers woken
//!    for every slot cost 0.6 ms of CPU a row).
//! 2. **Ceiling** ([`Limiter::depart`], just before the request leaves): a log of the send
//!    instants makes it a hard rule that no one-second window holds more than `rate` requests as
//!    they leave, whatever happened between the slot and the departure (the mark's commit, a late
//!    wake-up).
//! 3. **Throttling** ([`Limiter::throttled`]): an HTTP 429 or `REQUEST_TRAFFIC_EXCEED_LIMIT` pauses
//!    every worker (for `Retry-After`, or [`THROTTLE_PAUSE`]) and lowers the pace; the pace then
//!    climbs back (see [`Adaptive`]). `rate` stays the ceiling.
//!
//! Built here rather than with governor: the pace must change while the run goes (throttling),
//! and both the pace and the ceiling need the departure log anyway (docs/decisions.md).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The hard ceiling's window, with a little room for the timer's resolution.
const WINDOW: Duration = Duration::from_millis(1002);

/// How late a woken worker may be without the schedule losing that time for good: a worker is
/// woken up to a millisecond after its slot, and GCRA would otherwise count the next slot from
/// that late instant (0.95 R at 200/s).
const TOLERANCE: Duration = Duration::from_millis(2);

/// The pause after a throttling answer that says nothing of when to come back. Enough for a
/// gateway that counts a trailing second to let the lowered pace in.
pub const THROTTLE_PAUSE: Duration = Duration::from_millis(250);

/// A request that left: when, so that a throttling answer to it can be told from answers to
/// requests sent at the old pace.
#[derive(Debug, Clone, Copy)]
pub struct Departure {
    at: Instant,
}

/// How the gateway held the run back, for its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttling {
    /// Throttling answers.
    pub times: u64,
    /// Requests a second the gateway accepted before it throttled (the last estimate).
    pub accepted: f64,
    /// The pace the run settled at.
    pub settled: f64,
}

impl Throttling {
    /// The `rate` to set so that the gateway does not throttle.
    pub fn advised_rate(&self) -> u32 {
        ((self.accepted * HOLD).floor() as u32).max(1)
    }
}

/// After a throttle at an estimated N a second, the pace drops to this share of N...
const DROP: f64 = 0.95;
/// ...climbs over [`RAMP`] to this share, holds it for a plateau, then probes above it. Each
/// throttle costs a pause (an HTTP 429's `Retry-After`, often a whole second), so the pace holds
/// just under the limit found rather than saw-toothing around it.
const HOLD: f64 = 0.97;
const RAMP: Duration = Duration::from_secs(1);
/// The first plateau; it doubles each time the gateway throttles at about the same rate (up to
/// [`MAX_PLATEAU`]), so a steady limit is probed less and less often. A probe that finds the
/// limit costs a pause (a whole second behind an HTTP 429's `Retry-After: 1`): at 10 s, a second
/// throttle within the first 15 s of a run brought its pace at the gateway to 0.86 of the limit
/// under load (`tests/gateway.rs`); at 20 s a probe costs under 5 % of the time.
const PLATEAU: Duration = Duration::from_secs(20);
const MAX_PLATEAU: Duration = Duration::from_secs(120);
/// While probing, the pace grows by this share of N a second.
const PROBE: f64 = 0.02;
/// The slowest pace (a gateway that throttles everything still sees a request every 2 s).
const FLOOR: f64 = 0.5;

/// The adaptive pace (AIMD, with a plateau near the last limit found, like TCP CUBIC): after a
/// throttle at an estimated N a second (the requests that left in the second before the
/// throttled one: what the gateway let in), the pace drops to 95% of N, climbs to 97% in a
/// second and holds there, then probes upwards by 2% of N a second until the next throttle.
#[derive(Debug, Clone)]
struct Adaptive {
    /// The estimate of what the gateway accepts, and when it was made.
    accepted: f64,
    since: Instant,
    plateau: Duration,
    times: u64,
}

impl Adaptive {
    fn pace(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.since);
        let (low, hold) = (DROP * self.accepted, HOLD * self.accepted);
        let pace = if t < RAMP {
            low + (hold - low) * t.as_secs_f64() / RAMP.as_secs_f64()
        } else if t < RAMP + self.plateau {
            hold
        } else {
            hold + PROBE * self.accepted * (t - RAMP - self.plateau).as_secs_f64()
        };
        pace.max(FLOOR)
    }
}

struct State {
    /// The next slot of the pacing schedule (GCRA's theoretical arrival time).
    next_slot: Option<Instant>,
    /// Send instants of the last [`WINDOW`] (for the ceiling and the throttling estimate).
    departures: VecDeque<Instant>,
    paused_until: Option<Instant>,
    adaptive: Option<Adaptive>,
}

impl State {
    /// Every worker waits `d` from now (a pause already longer stays); returns when it ends.
    fn pause(&mut self, d: Duration) -> Instant {
        let until = Instant::now() + d;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        until
    }
}

pub struct Limiter {
    /// Requests per second at most (0: no ceiling).
    rate: u32,
    /// The ceiling as counted in the window: from 100/s up, 1% of the window is left free, so a
    /// request delayed on its way cannot push the gateway's count over.
    cap: usize,
    state: Mutex<State>,
    /// Held by the one worker waiting for the next slot.
    turn: tokio::sync::Mutex<()>,
}

impl Limiter {
    /// `rate` requests per second; 0 is no limit (the gateway's throttling still slows it).
    pub fn new(rate: u32) -> Self {
        Limiter {
            rate,
            cap: (rate - rate / 100) as usize,
            state: Mutex::new(State {
                next_slot: None,
                departures: VecDeque::new(),
                paused_until: None,
                adaptive: None,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pace now, requests a second (`None`: unlimited).
    fn pace(&self, s: &State, now: Instant) -> Option<f64> {
        // Paced at 98% of the rate: timer and network jitter can only bring two requests closer
        // together at the gateway, never further apart, so pacing at exactly the rate would let
        // rate+1 land in one of its windows. The departure log is the hard cap.
        let ceiling = (self.rate > 0).then(|| 0.98 * f64::from(self.rate));
        match (&s.adaptive, ceiling) {
            (Some(a), Some(c)) => Some(a.pace(now).min(c)),
            (Some(a), None) => Some(a.pace(now)),
            (None, c) => c,
        }
    }

    /// Waits for this request's slot in the pace (and for any pause).
    pub async fn acquire(&self) {
        let paced = self.rate > 0 || self.state().adaptive.is_some();
        let _turn = if paced {
            Some(self.turn.lock().await)
        } else {
            None
        };
        self.wait_for(|s, now| {
            let Some(pace) = self.pace(s, now) else {
                return Ok(());
            };
            match s.next_slot {
                Some(slot) if slot > now => Err(slot),
                slot => {
                    // Caught up to TOLERANCE late; an idle schedule restarts from now.
                    let late = now.checked_sub(TOLERANCE).unwrap_or(now);
                    let from = slot.map_or(now, |t| t.max(late));
                    s.next_slot = Some(from + Duration::from_secs_f64(1.0 / pace));
                    Ok(())
                }
            }
        })
        .await
    }

    /// Waits until the request may leave under the hard ceiling (and any pause begun since its
    /// slot), and records its departure.
    pub async fn depart(&self) -> Departure {
        self.wait_for(|s, now| {
            while s
                .departures
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
            {
                s.departures.pop_front();
            }
            if self.cap > 0 && s.departures.len() >= self.cap {
                Err(s.departures[s.departures.len() - self.cap] + WINDOW)
            } else {
                s.departures.push_back(now);
                Ok(Departure { at: now })
            }
        })
        .await
    }

    /// Waits out any pause, then asks `take`: done (`Ok`), or wait until then and ask again.
    async fn wait_for<T>(
        &self,
        mut take: impl FnMut(&mut State, Instant) -> Result<T, Instant>,
    ) -> T {
        loop {
            let wait_until = {
                let mut s = self.state();
                let now = Instant::now();
                match s.paused_until.filter(|p| *p > now) {
                    Some(pause_end) => pause_end,
                    None => match take(&mut s, now) {
                        Ok(done) => return done,
                        Err(until) => until,
                    },
                }
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// The gateway throttled the request that left at `d`: every worker pauses, and the pace
    /// drops below what the gateway let in (once per throttling episode: answers to requests
    /// sent before the last drop say nothing new).
    pub fn throttled(&self, d: Departure, retry_after: Option<Duration>) {
        let mut s = self.state();
        let until = s.pause(retry_after.unwrap_or(THROTTLE_PAUSE));
        if let Some(a) = s.adaptive.as_mut().filter(|a| d.at < a.since) {
            a.times += 1;
            return;
        }
        // What the gateway let in: the requests that left in the second before this one.
        let accepted = s
            .departures
            .iter()
            .filter(|t| **t < d.at && d.at.saturating_duration_since(**t) < Duration::from_secs(1))
            .count()
            .max(1) as f64;
        let (plateau, times) = match &s.adaptive {
            Some(a) if (accepted - a.accepted).abs() <= 0.1 * a.accepted => {
                ((a.plateau * 2).min(MAX_PLATEAU), a.times + 1)
            }
            Some(a) => (PLATEAU, a.times + 1),
            None => (PLATEAU, 1),
        };
        s.adaptive = Some(Adaptive {
            accepted,
            since: until,
            plateau,
            times,
        });
        // The schedule restarts after the pause at the new pace.
        s.next_slot = Some(until);
    }

    /// How the gateway held the run back, if it did.
    pub fn throttling(&self) -> Option<Throttling> {
        let s = self.state();
        let a = s.adaptive.as_ref()?;
        Some(Throttling {
            times: a.times,
            accepted: a.accepted,
            settled: self.pace(&s, Instant::now()).unwrap_or(a.accepted),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(l: &Limiter) -> Departure {
        l.acquire().await;
        l.depart().await
    }

    #[tokio::test]
    async fn no_burst_at_start() {
        let l = Limiter::new(20);
        let start = std::time::Instant::now();
        for _ in 0..6 {
            send(&l).await;
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
                    send(&l).await;
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
        let first = send(&l).await;
        l.throttled(first, Some(Duration::from_millis(150)));
        let start = std::time::Instant::now();
        send(&l).await;
        assert!(start.elapsed() >= Duration::from_millis(140));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_lowers_the_pace_below_what_the_gateway_let_in_then_climbs_back() {
        let l = Limiter::new(0);
        // 20 requests in the second before the throttled one.
        let mut sent = Vec::new();
        for _ in 0..21 {
            tokio::time::advance(Duration::from_millis(45)).await;
            sent.push(send(&l).await);
        }
        l.throttled(sent[20], None);
        let t = l.throttling().unwrap();
        assert_eq!((t.times, t.accepted), (1, 20.0));
        assert_eq!(t.advised_rate(), 19);
        // After the pause the pace starts at 95% of it...
        tokio::time::advance(THROTTLE_PAUSE).await;
        let s = l.throttling().unwrap().settled;
        assert!((18.9..19.1).contains(&s), "{s}");
        // ...holds at 97% after the ramp...
        tokio::time::advance(RAMP + Duration::from_secs(1)).await;
        let s = l.throttling().unwrap().settled;
        assert!((19.3..19.5).contains(&s), "{s}");
        // ...and probes upwards after the plateau.
        tokio::time::advance(PLATEAU + Duration::from_secs(5)).await;
        assert!(l.throttling().unwrap().settled > 20.0);
        // A throttle of a request sent before the drop does not drop the pace again.
        l.throttled(sent[0], None);
        assert_eq!(l.throttling().unwrap().times, 2);
        assert!(l.throttling().unwrap().settled > 20.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_stays_the_ceiling_while_throttled() {
        let l = Limiter::new(5);
        let d = send(&l).await;
        l.throttled(d, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(600)).await;
        // Probing for ten minutes never goes past 98% of the rate.
        assert!(l.throttling().unwrap().settled <= 0.98 * 5.0);
    }
}
