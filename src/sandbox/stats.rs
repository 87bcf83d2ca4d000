//! What the sandbox counts (`GET /sandbox/stats`), and the sliding one-second window of arrivals
//! that both the rate limit and `max_requests_in_one_second` are measured with.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `GET /sandbox/stats`.
///
/// `by_result_code` counts every answer by its `resultCode`, plus these pseudo codes:
/// `HTTP_500` and `HTTP_429` (injected faults), `RATE_LIMITED` (HTTP 429 from the rate limit; a
/// rate limit that answers with the code counts `REQUEST_TRAFFIC_EXCEED_LIMIT` instead),
/// `HTTP_503` (the outage), `RESET` (connection dropped), `HANG` (a hang began; the request is
/// counted a second time under the answer it eventually got, so the sum can exceed `requests`).
/// `rate_limited` counts the rate limit's refusals whichever way they are answered. `REPLAYED`
/// counts the replay fault's answers (not counted again under `SUCCESS`).
///
/// The labels issued against the stores really circled: `success_answers` counts every `SUCCESS`
/// that went out, replays included, each carrying a label; `stores_circled` the stores the
/// register holds, each with the one label it was given. A client that believes only its own
/// answers records at most `stores_circled` labels, each the one its store was given.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub by_result_code: BTreeMap<String, u64>,
    pub stores_circled: u64,
    /// Stores that were sent more than one `SUCCESS` answer; must stay 0.
    pub double_success: u64,
    pub rate_limited: u64,
    /// `SUCCESS` answers sent, replays included (so labels handed out; more than
    /// `stores_circled` when answers were replayed).
    #[serde(default)]
    pub success_answers: u64,
    /// Answers of the replay fault: a recorded `SUCCESS` of another request, byte for byte.
    #[serde(default)]
    pub replayed: u64,
    /// The most arrivals in any half-open window `[t, t + 1s)`.
    pub max_requests_in_one_second: u64,
    /// Milliseconds from the sandbox's start to the first and the last arrival (`None` before
    /// any): the span a benchmark divides the requests by to get the rate achieved.
    #[serde(default)]
    pub first_request_ms: Option<u64>,
    #[serde(default)]
    pub last_request_ms: Option<u64>,
}

impl Stats {
    pub fn count(&mut self, code: &str) {
        *self.by_result_code.entry(code.to_owned()).or_default() += 1;
    }
}

const WINDOW: Duration = Duration::from_secs(1);

/// Arrival instants of the trailing second.
#[derive(Debug, Default)]
pub struct Arrivals {
    window: VecDeque<Instant>,
}

impl Arrivals {
    /// Records an arrival (instants must not go backwards) and returns how many arrived in
    /// `(at - 1s, at]`, this one included. The largest such count over all arrivals is the
    /// largest count in any `[t, t + 1s)`: such a window's last arrival sees all of it.
    pub fn arrive(&mut self, at: Instant) -> u64 {
        while let Some(&front) = self.window.front() {
            if at.saturating_duration_since(front) >= WINDOW {
                self.window.pop_front();
            } else {
                break;
            }
        }
        self.window.push_back(at);
        self.window.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_half_open() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        assert_eq!(a.arrive(t0), 1);
        assert_eq!(a.arrive(t0 + Duration::from_millis(500)), 2);
        assert_eq!(a.arrive(t0 + Duration::from_millis(999)), 3);
        // Exactly one second after the first: the first has left the window.
        assert_eq!(a.arrive(t0 + Duration::from_millis(1000)), 3);
        assert_eq!(a.arrive(t0 + Duration::from_millis(2500)), 1);
    }
}
