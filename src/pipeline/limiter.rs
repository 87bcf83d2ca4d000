//! The request rate. Three rules, in the order a request meets them:
//!
//! 1. **Pace** ([`Limiter::acquire`], before the row is marked in flight): requests are spaced
//!    evenly (GCRA: each takes the next slot of a schedule, a slot up to [`TOLERANCE`] late is
//!    caught up, none is early), at 97% of `rate`, or slower while the gateway throttles. Workers
//!    wait their turn in arrival order, one at a time (a fair lock: a herd of 512 workers woken
//!    for every slot cost 0.6 ms of CPU a row).
//! 2. **Ceiling** ([`Limiter::depart`], just before the request leaves): a log of the send
//!    instants makes it a hard rule that no one-second window holds more than `rate` requests as
//!    they leave, whatever happened between the slot and the departure (the mark's commit, a late
//!    wake-up).
//! 3. **Throttling** ([`Limiter::answered`]): every answer goes into a window of the last
//!    [`SHARE_WINDOW`] answers. An HTTP 429 or `REQUEST_TRAFFIC_EXCEED_LIMIT` alone only makes its
//!    own row wait (for `Retry-After`, in the policy); when the SHARE of throttled answers in the
//!    window says the gateway has a limit ([`is_a_limit`]), every worker pauses and the pace
//!    drops below what the gateway let in, then climbs back (see [`Adaptive`]). So random 429s
//!    (a quota other systems share, a CDN under load) cost their rows a wait, not the run its
//!    pace. `rate` stays the ceiling.
//!
//! Built here rather than with governor: the pace must change while the run goes (throttling),
//! and both the pace and the ceiling need the departure log anyway (docs/decisions.md).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The hard ceiling's window, with room for what can happen between a request's departure and
/// its arrival (signing, a thread descheduled on a loaded machine, the gateway's own clock).
/// With 1002 ms a run at `--rate 40` on a 2-core machine at a load of 14 put 41 requests in one
/// second at the gateway (counted over a sliding second; the tests read its books second by
/// second). Paced at [`PACE`] of `rate` with [`TOLERANCE`], `rate + 1` departures span 1.02 s or
/// more, so the ceiling binds only after a stall. Requests are signed before the ceiling, so a
/// signature's time on a busy machine is not between the ceiling and the gateway.
const WINDOW: Duration = Duration::from_millis(1030);

/// The share of `rate` the schedule paces at: timer and network jitter can only bring two
/// requests closer together at the gateway, never further apart, so pacing at exactly the rate
/// would let rate+1 land in one of its windows. The departure log is the hard cap.
const PACE: f64 = 0.97;

/// How late a woken worker may be without the schedule losing that time for good: GCRA would
/// otherwise count the next slot from that late instant. A worker is woken up to a millisecond
/// after its slot on a quiet machine (0.95 R at 200/s with no tolerance), and much later on a
/// loaded one: at a load of 14 on 2 cores, 2 ms gave 0.66–0.85 R at 40/s against a gateway 400
/// ms away. A catch-up is a burst, though: 25 ms put 41–43 requests in one second at the
/// gateway. With 10 ms and [`PACE`], any `rate + 1` departures still span 1.02 s.
const TOLERANCE: Duration = Duration::from_millis(10);

/// The pause after a throttling answer that says nothing of when to come back. Enough for a
/// gateway that counts a trailing second to let the lowered pace in.
pub const THROTTLE_PAUSE: Duration = Duration::from_millis(250);

/// The pause of every worker when a limit is found and the gateway said no `Retry-After`: a
/// gateway that counts a trailing second (the refused requests too) then has none of the
/// requests that found its limit left in it. With [`THROTTLE_PAUSE`], a run at `--rate 60`
/// against a limit of 20 had 24 of 344 requests throttled.
const LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// After the pace drops, throttles of requests sent in this time hold every worker for a pause
/// again (without dropping the pace again): the gateway still counts the requests that found
/// its limit.
const SETTLE: Duration = Duration::from_secs(2);

/// A request that left: when, so that a throttling answer to it can be told from answers to
/// requests sent at the old pace, and how many left in the second before it (what the gateway
/// had let in, should it throttle this one).
#[derive(Debug, Clone, Copy)]
pub struct Departure {
    at: Instant,
    before: usize,
}

impl Departure {
    /// When it left.
    pub fn at(&self) -> Instant {
        self.at
    }
}

/// The answers the share of throttling is judged over (since the last drop of the pace).
pub const SHARE_WINDOW: usize = 100;
/// A limit, not noise: at least this many throttled answers in the window...
const LIMIT_AT_LEAST: usize = 8;
/// ...making at least this share of it. With 3 % of answers throttled at random, 8 or more of up
/// to 53 answers (15 %) happen about once in 10,000 windows; a gateway limit at `rate` / 3 (a
/// limit of 20, `--rate 60`) reaches it within its first 30 answers.
const LIMIT_SHARE: f64 = 0.15;

/// Whether `throttled` of `answers` says the gateway has a limit (not random refusals).
pub fn is_a_limit(throttled: usize, answers: usize) -> bool {
    throttled >= LIMIT_AT_LEAST && throttled as f64 >= LIMIT_SHARE * answers as f64
}

/// How the gateway held the run back, for its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttling {
    /// Throttling answers.
    pub times: u64,
    /// Every answer (throttled or not), for the share.
    pub answers: u64,
    /// Times the share of throttling said a limit and the pace dropped (0: the refusals were
    /// scattered, each row waited its own `Retry-After` and the pace was kept).
    pub limits: u64,
    /// Requests a second the gateway accepted before it throttled (the last estimate; `None`
    /// when no limit was found).
    pub accepted: Option<f64>,
    /// The pace the run settled at (`None` when no limit was found).
    pub settled: Option<f64>,
}

impl Throttling {
    /// The `rate` to set so that the gateway does not throttle, when it has a limit.
    pub fn advised_rate(&self) -> Option<u32> {
        self.accepted.map(|a| ((a * HOLD).floor() as u32).max(1))
    }

    /// The share of answers that were throttled.
    pub fn share(&self) -> f64 {
        self.times as f64 / self.answers.max(1) as f64
    }

    /// What the person reads at the end of the run.
    pub fn message(&self) -> String {
        let head = format!(
            "AlipayHK throttled this client {} time(s) (HTTP 429 or REQUEST_TRAFFIC_EXCEED_LIMIT, \
             {:.1} % of the answers)",
            self.times,
            100.0 * self.share()
        );
        match (self.accepted, self.settled, self.advised_rate()) {
            (Some(accepted), Some(settled), Some(advised)) => format!(
                "{head}: it accepted about {accepted:.0} requests a second, and the run settled at \
                 {settled:.1}/s. Set `rate` to {advised} (--rate, PMS_ONBOARD_RATE or `rate` in \
                 the config file) so that it is not held back"
            ),
            _ => format!(
                "{head}, here and there rather than at a limit: each throttled row waited for its \
                 Retry-After and was sent again, and the pace was kept. If this grows, the client \
                 id's quota may be shared with other systems: ask AlipayHK"
            ),
        }
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

/// The adaptive pace (AIMD, with a plateau near the last limit found, like TCP CUBIC): once the
/// share of throttling says a limit at an estimated N a second (the requests that left in the
/// second before the window's first throttled one: what the gateway let in), the pace drops to
/// 95% of N, climbs to 97% in a second and holds there, then probes upwards by 2% of N a second
/// until the share says a limit again.
#[derive(Debug, Clone)]
struct Adaptive {
    /// The estimate of what the gateway accepts, and when it was made.
    accepted: f64,
    since: Instant,
    plateau: Duration,
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
    /// The last [`SHARE_WINDOW`] answers to requests sent since the pace last dropped: whether
    /// each was throttled, and how many had left in the second before a throttled one.
    window: VecDeque<Option<usize>>,
    throttled_in_window: usize,
    times: u64,
    answers: u64,
    limits: u64,
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
                window: VecDeque::with_capacity(SHARE_WINDOW),
                throttled_in_window: 0,
                times: 0,
                answers: 0,
                limits: 0,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pace now, requests a second (`None`: unlimited).
    fn pace(&self, s: &State, now: Instant) -> Option<f64> {
        let ceiling = (self.rate > 0).then(|| PACE * f64::from(self.rate));
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
            // Once a limit was found, the ceiling is the pace too: requests that took their slots
            // while a commit held them up do not leave together, over the limit.
            let cap = match (&s.adaptive, self.cap) {
                (Some(a), cap) => {
                    let paced = a.pace(now).ceil().max(1.0) as usize;
                    if cap > 0 { cap.min(paced) } else { paced }
                }
                (None, cap) => cap,
            };
            if cap > 0 && s.departures.len() >= cap {
                Err(s.departures[s.departures.len() - cap] + WINDOW)
            } else {
                let before = s.departures.len();
                s.departures.push_back(now);
                Ok(Departure { at: now, before })
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

    /// The answer to the request that left at `d`: `throttled` with the gateway's `Retry-After`
    /// (if it said one) when it was an HTTP 429 or `REQUEST_TRAFFIC_EXCEED_LIMIT`. Returns whether
    /// the share of throttling in the window said a limit: then every worker pauses (for
    /// `Retry-After`, or [`THROTTLE_PAUSE`]) and the pace drops below what the gateway let in.
    /// Answers to requests sent before the last drop say nothing of the new pace.
    pub fn answered(&self, d: Departure, throttled: Option<Option<Duration>>) -> bool {
        let mut s = self.state();
        s.answers += 1;
        if throttled.is_some() {
            s.times += 1;
        }
        let Some(since) = s.adaptive.as_ref().map(|a| a.since) else {
            return self.judge(&mut s, d, throttled);
        };
        if d.at < since {
            return false;
        }
        // Just after a drop, a throttle is the limit found, not news: it holds everyone again,
        // while a gateway that counts a trailing second lets the lowered pace in.
        if d.at < since + SETTLE {
            if let Some(retry_after) = throttled {
                s.pause(retry_after.unwrap_or(THROTTLE_PAUSE));
            }
            return false;
        }
        self.judge(&mut s, d, throttled)
    }

    /// Puts the answer in the window; drops the pace when the window says a limit.
    fn judge(&self, s: &mut State, d: Departure, throttled: Option<Option<Duration>>) -> bool {
        if s.window.len() == SHARE_WINDOW && s.window.pop_front().flatten().is_some() {
            s.throttled_in_window -= 1;
        }
        s.window.push_back(throttled.map(|_| d.before));
        let Some(retry_after) = throttled else {
            return false;
        };
        s.throttled_in_window += 1;
        if !is_a_limit(s.throttled_in_window, s.window.len()) {
            return false;
        }
        // What the gateway let in: the requests that left in the second before the first
        // throttled one of the window.
        let accepted = s
            .window
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or(1)
            .max(1) as f64;
        s.window.clear();
        s.throttled_in_window = 0;
        s.limits += 1;
        let until = s.pause(retry_after.unwrap_or(LIMIT_PAUSE));
        let plateau = match &s.adaptive {
            Some(a) if (accepted - a.accepted).abs() <= 0.1 * a.accepted => {
                (a.plateau * 2).min(MAX_PLATEAU)
            }
            _ => PLATEAU,
        };
        s.adaptive = Some(Adaptive {
            accepted,
            since: until,
            plateau,
        });
        // The schedule restarts after the pause at the new pace.
        s.next_slot = Some(until);
        true
    }

    /// How the gateway held the run back, if it did.
    pub fn throttling(&self) -> Option<Throttling> {
        let s = self.state();
        if s.times == 0 {
            return None;
        }
        let a = s.adaptive.as_ref();
        Some(Throttling {
            times: s.times,
            answers: s.answers,
            limits: s.limits,
            accepted: a.map(|a| a.accepted),
            settled: a.map(|a| self.pace(&s, Instant::now()).unwrap_or(a.accepted)),
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

    #[tokio::test(start_paused = true)]
    async fn a_throttle_here_and_there_neither_pauses_nor_slows_the_others() {
        let l = Limiter::new(0);
        // 3 throttled answers in 100: noise.
        for i in 0..100 {
            let d = send(&l).await;
            let throttled = (i % 33 == 5).then_some(Some(Duration::from_secs(1)));
            assert!(!l.answered(d, throttled));
        }
        let start = Instant::now();
        send(&l).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "nobody waits");
        let t = l.throttling().unwrap();
        assert_eq!((t.times, t.answers, t.limits), (3, 100, 0));
        assert_eq!((t.accepted, t.advised_rate()), (None, None));
    }

    #[test]
    fn random_throttling_at_3_percent_is_never_taken_for_a_limit() {
        use rand::{Rng as _, SeedableRng as _};
        // 200,000 answers, 3 % of them throttled at random: the window never says a limit.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut window = VecDeque::new();
        let mut throttled = 0;
        for _ in 0..200_000 {
            if window.len() == SHARE_WINDOW && window.pop_front() == Some(true) {
                throttled -= 1;
            }
            let t = rng.random::<f64>() < 0.03;
            window.push_back(t);
            throttled += usize::from(t);
            assert!(!(t && is_a_limit(throttled, window.len())));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_pauses_everyone_and_lowers_the_pace_below_what_the_gateway_let_in_then_climbs_back()
     {
        let l = Limiter::new(0);
        // 20 requests in a second go through; then the gateway refuses.
        let mut sent = Vec::new();
        for _ in 0..30 {
            tokio::time::advance(Duration::from_millis(45)).await;
            sent.push(send(&l).await);
        }
        for d in &sent[..20] {
            assert!(!l.answered(*d, None));
        }
        let retry = Some(Some(Duration::from_millis(150)));
        for d in &sent[20..27] {
            assert!(!l.answered(*d, retry));
        }
        // The eighth throttled of 28 answers: a limit.
        assert!(l.answered(sent[27], retry));
        let t = l.throttling().unwrap();
        assert_eq!((t.times, t.limits, t.accepted), (8, 1, Some(20.0)));
        assert_eq!(t.advised_rate(), Some(19));
        // Everyone waits out the Retry-After.
        let start = Instant::now();
        send(&l).await;
        assert!(start.elapsed() >= Duration::from_millis(150));
        // After the pause the pace starts at 95% of it...
        let s = l.throttling().unwrap().settled.unwrap();
        assert!((18.9..19.1).contains(&s), "{s}");
        // ...holds at 97% after the ramp...
        tokio::time::advance(RAMP + Duration::from_secs(1)).await;
        let s = l.throttling().unwrap().settled.unwrap();
        assert!((19.3..19.5).contains(&s), "{s}");
        // ...and probes upwards after the plateau.
        tokio::time::advance(PLATEAU + Duration::from_secs(5)).await;
        assert!(l.throttling().unwrap().settled.unwrap() > 20.0);
        // A throttle of a request sent before the drop does not count towards the next.
        assert!(!l.answered(sent[29], retry));
        let t = l.throttling().unwrap();
        assert_eq!((t.times, t.limits), (9, 1));
        assert!(t.settled.unwrap() > 20.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_stays_the_ceiling_while_throttled() {
        let l = Limiter::new(5);
        let mut limited = false;
        for _ in 0..LIMIT_AT_LEAST {
            let d = send(&l).await;
            limited = l.answered(d, Some(Some(Duration::from_secs(1))));
        }
        assert!(limited);
        tokio::time::advance(Duration::from_secs(600)).await;
        // Probing for ten minutes never goes past the pace of the rate.
        assert!(l.throttling().unwrap().settled.unwrap() <= PACE * 5.0);
    }
}
