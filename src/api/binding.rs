//! Whether a verified answer belongs to the request it came back on. The gateway's signature
//! covers the path, our client id, its `response-time` and the body, but nothing of the request:
//! a genuine, correctly signed answer to one request can be replayed, byte for byte, to another
//! (a TLS-inspecting proxy, a poisoned `HTTPS_PROXY`). What can be bound is bound here:
//!
//! - **Time.** The answer was signed after our request was (its `response-time` is not before our
//!   `request-time`, on the gateway's clock), and not long after we received it. The gateway's
//!   clock is not ours: the run keeps a lower bound of the offset (gateway minus ours) from the
//!   answers themselves. For every answer signed before we received it, genuine or replayed,
//!   `response-time − received` is at most the true offset; the largest such figure seen is the
//!   bound. A replay can only lower a figure, never raise the bound, so it cannot poison it.
//! - **Uniqueness.** An answer carrying a `pmsLabel` is signed over a label no other answer
//!   carries, so its signature seen twice in a run is a replay. Answers without a label
//!   (`STORE_IS_CIRCLED`, refusals) can be identical for two requests in the same millisecond, so
//!   a repeat proves nothing for them; the time binds them.
//!
//! Such an answer is [`Outcome::NotThisRequest`](super::outcome::Outcome::NotThisRequest): kept
//! with its attempt and never believed. The ledger adds the last check: a `pmsLabel` another store
//! holds is never accepted for a second one.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

/// The farthest apart the gateway's clock and ours can be before any answer has been measured,
/// and the latest an answer may be signed after we received it. Gateways of this family refuse a
/// `request-time` a few minutes from their own clock (`INVALID_SIGNATURE`), so an answer that
/// is genuinely ours cannot come from a clock further off; and a recorded answer hours or days
/// old is refused from the first request on.
pub const CLOCKS_APART_AT_MOST: Duration = Duration::from_secs(5 * 60);

/// Slack below the measured offset: `response-time` is written to the millisecond, and the
/// gateway's clock may be slewed or stepped a little during a run (NTP; ours is read from the
/// monotonic clock). A replay younger than this is still caught by its signature, seen before.
const SLACK: Duration = Duration::from_secs(1);

/// Signatures remembered per generation. Two generations are kept (at most twice this many,
/// 16 bytes each plus the table's overhead, about 40 MiB at the most): a run of millions of rows
/// remembers at least its last million answers.
const SEEN_PER_GENERATION: usize = 1 << 20;

/// Why an answer is not this request's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBound {
    #[error(
        "its response-time {response_time} is {early} ms before the request was signed, allowing the gateway's clock offset measured in this run (a recorded answer replayed)"
    )]
    SignedBefore { response_time: String, early: i64 },
    #[error(
        "its response-time {response_time} is {late} s after the answer arrived (more than {} min: not this request's answer, or a gateway clock far off)", CLOCKS_APART_AT_MOST.as_secs() / 60
    )]
    SignedLongAfter { response_time: String, late: i64 },
    #[error("its response-time {0:?} is not an ISO-8601 time with an offset")]
    BadTime(String),
    #[error("the same signed answer already came back for another request in this run (replayed)")]
    SeenBefore,
}

/// What a run has learnt about its answers. Shared by every clone of the client.
///
/// Our side of each comparison is read from the monotonic clock, anchored to the wall clock once:
/// a step of this machine's clock during a run (NTP) then moves nothing here.
#[derive(Debug)]
pub struct Binding {
    origin: (DateTime<Utc>, Instant),
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The largest `response-time − received` seen, in milliseconds: a lower bound of the
    /// gateway's clock minus ours.
    offset_at_least_ms: i64,
    seen: HashSet<[u8; 16]>,
    older: HashSet<[u8; 16]>,
}

impl Default for Binding {
    fn default() -> Self {
        Binding::anchored(Utc::now(), Instant::now())
    }
}

impl Binding {
    /// With our clock read as `wall` at `instant`.
    fn anchored(wall: DateTime<Utc>, instant: Instant) -> Self {
        Binding {
            origin: (wall, instant),
            state: Mutex::new(State {
                offset_at_least_ms: -millis(CLOCKS_APART_AT_MOST),
                seen: HashSet::new(),
                older: HashSet::new(),
            }),
        }
    }

    /// `at` on our clock.
    fn ours(&self, at: Instant) -> DateTime<Utc> {
        let (wall, instant) = self.origin;
        let since = at.saturating_duration_since(instant);
        wall + chrono::Duration::milliseconds(millis(since))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Binding {
    /// Checks a verified answer against its request: signing began at `signing` (before its
    /// `request-time` was read), the answer arrived at `received`, its `response-time` and
    /// `signature` headers as they came, and whether it carries a `pmsLabel`. Every verified
    /// answer also refines the offset, whatever the verdict.
    pub fn check(
        &self,
        signing: Instant,
        received: Instant,
        response_time: &str,
        signature: &str,
        carries_label: bool,
    ) -> Result<(), NotBound> {
        let response = DateTime::parse_from_rfc3339(response_time)
            .map_err(|_| NotBound::BadTime(response_time.into()))?
            .with_timezone(&Utc);
        let after_signing = (response - self.ours(signing)).num_milliseconds();
        let after_receipt = (response - self.ours(received)).num_milliseconds();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let bound = state.offset_at_least_ms;
            // Signed before our request was, on the gateway's clock as far as it is known.
            if after_signing < bound - millis(SLACK) {
                return Err(NotBound::SignedBefore {
                    response_time: response_time.to_owned(),
                    early: bound - after_signing,
                });
            }
            if after_receipt > millis(CLOCKS_APART_AT_MOST) {
                return Err(NotBound::SignedLongAfter {
                    response_time: response_time.to_owned(),
                    late: after_receipt / 1000,
                });
            }
            state.offset_at_least_ms = bound.max(after_receipt);
        }
        self.unique(signature, carries_label)
    }

    /// An answer with a label is refused when its signature was seen before in this run.
    fn unique(&self, signature: &str, carries_label: bool) -> Result<(), NotBound> {
        if !carries_label {
            return Ok(());
        }
        let digest = Sha256::digest(signature.trim().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.older.contains(&key) || !state.seen.insert(key) {
            return Err(NotBound::SeenBefore);
        }
        if state.seen.len() >= SEEN_PER_GENERATION {
            state.older = std::mem::take(&mut state.seen);
        }
        Ok(())
    }

    /// The gateway's clock minus ours, as far as the answers so far show it (a lower bound).
    pub fn offset_at_least(&self) -> chrono::Duration {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        chrono::Duration::milliseconds(state.offset_at_least_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A binding whose clock reads 18:30:00.000 (Hong Kong) at `t0`; `at("30:00.020")` is a
    /// `response-time` of 18:30:00.020.
    fn binding() -> (Binding, Instant) {
        let t0 = Instant::now();
        let wall = DateTime::parse_from_rfc3339("2026-11-26T18:30:00.000+08:00")
            .unwrap()
            .with_timezone(&Utc);
        (Binding::anchored(wall, t0), t0)
    }

    fn at(s: &str) -> String {
        format!("2026-11-26T18:{s}+08:00")
    }

    #[test]
    fn an_answer_signed_while_its_request_was_out_is_bound() {
        let (b, t0) = binding();
        assert_eq!(
            b.check(t0, t0 + 40 * MS, &at("30:00.020"), "sig-1", true),
            Ok(())
        );
        // What that answer showed: the gateway's clock is at most 20 ms behind ours.
        assert_eq!(b.offset_at_least(), chrono::Duration::milliseconds(-20));
    }

    #[test]
    fn a_recorded_answer_signed_before_the_request_is_refused_once_the_offset_is_known() {
        let (b, t0) = binding();
        // Before any answer, only what no clock of a working gateway can be is refused.
        assert!(matches!(
            b.check(t0, t0 + 40 * MS, &at("20:00.000"), "old", true),
            Err(NotBound::SignedBefore { .. })
        ));
        // 3 minutes old: passes on the first answer (the clocks may be that far apart)...
        let (b, t0) = binding();
        assert_eq!(
            b.check(t0, t0 + 40 * MS, &at("27:00.000"), "a", true),
            Ok(())
        );
        // ...but a genuine answer shows where the gateway's clock is, and from then on an
        // answer signed seconds before its request is refused, whatever came first.
        assert_eq!(
            b.check(t0, t0 + 30 * MS, &at("30:00.010"), "b", true),
            Ok(())
        );
        let later = t0 + Duration::from_secs(60);
        assert!(matches!(
            b.check(later, later + 30 * MS, &at("30:57.000"), "c", true),
            Err(NotBound::SignedBefore { .. })
        ));
        // Genuine answers keep passing, a gateway clock 10 ms behind ours included.
        assert_eq!(
            b.check(later, later + 30 * MS, &at("30:59.995"), "d", true),
            Ok(())
        );
    }

    #[test]
    fn a_gateway_clock_minutes_off_is_learnt_not_refused() {
        let (b, t0) = binding();
        for (i, answer) in ["34:00.020", "34:00.015", "34:00.030"].iter().enumerate() {
            assert_eq!(
                b.check(t0, t0 + 40 * MS, &at(answer), &format!("s{i}"), true),
                Ok(()),
                "{answer}"
            );
        }
        // More than 5 minutes after it arrived: refused.
        assert!(matches!(
            b.check(t0, t0 + 40 * MS, &at("36:00.000"), "far", true),
            Err(NotBound::SignedLongAfter { .. })
        ));
    }

    #[test]
    fn a_labelled_answer_seen_twice_is_a_replay_and_others_may_repeat() {
        let (b, t0) = binding();
        let (answer, back) = (at("30:00.020"), t0 + 40 * MS);
        assert_eq!(b.check(t0, back, &answer, "same", true), Ok(()));
        assert_eq!(
            b.check(t0, back, &answer, "same", true),
            Err(NotBound::SeenBefore)
        );
        // Two STORE_IS_CIRCLED answers in one millisecond are signed alike.
        assert_eq!(b.check(t0, back, &answer, "circled", false), Ok(()));
        assert_eq!(b.check(t0, back, &answer, "circled", false), Ok(()));
        assert!(matches!(
            b.check(t0, back, "yesterday", "x", true),
            Err(NotBound::BadTime(_))
        ));
    }

    #[test]
    fn the_older_generation_is_still_remembered() {
        let (b, t0) = binding();
        {
            let mut s = b.state.lock().unwrap();
            let d = Sha256::digest(b"kept");
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            s.older.insert(k);
        }
        assert_eq!(
            b.check(t0, t0 + 40 * MS, &at("30:00.020"), "kept", true),
            Err(NotBound::SeenBefore)
        );
    }
}
