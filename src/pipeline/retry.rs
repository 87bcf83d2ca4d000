//! The retry policy: the one place that decides, from an attempt's outcome, whether a row is
//! finished, tried again after a back-off, or whether the whole run must stop.

use std::time::Duration;

use rand::Rng as _;

use crate::api::outcome::Outcome;
use crate::ledger::State;
use crate::ledger::writer::Failure;

/// What happens after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The row is finished for this run, in this state.
    Finish {
        state: State,
        failure: Option<Failure>,
    },
    /// Try again after this pause.
    RetryIn(Duration),
    /// The configuration is wrong; the row stays pending and the run may have to stop.
    Fatal,
}

/// Exponential back-off with full jitter, bounded by `max_attempts` per run.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            base,
            cap: (base * 64).min(Duration::from_secs(60)).max(base),
        }
    }

    /// `attempt` is the 1-based number of the attempt just made in this run.
    pub fn decide(&self, outcome: &Outcome, attempt: u32) -> Decision {
        match outcome {
            Outcome::Success { .. } => Decision::Finish {
                state: State::Succeeded,
                failure: None,
            },
            Outcome::AlreadyCircled => Decision::Finish {
                state: State::AlreadyCircled,
                failure: None,
            },
            Outcome::Permanent { .. } => Decision::Finish {
                state: State::Failed,
                failure: Some(Failure::Permanent),
            },
            Outcome::Fatal { .. } => Decision::Fatal,
            Outcome::Transient { retry_after, .. } => {
                if attempt >= self.max_attempts {
                    Decision::Finish {
                        state: State::Failed,
                        failure: Some(Failure::Transient),
                    }
                } else {
                    Decision::RetryIn(self.backoff(attempt, *retry_after))
                }
            }
        }
    }

    /// Full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`, never less than the
    /// gateway's `Retry-After`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.cap);
        let jittered = exp.mul_f64(rand::rng().random::<f64>());
        jittered.max(retry_after.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(retry_after: Option<Duration>) -> Outcome {
        Outcome::Transient {
            reason: "x".into(),
            retry_after,
            maybe_processed: true,
            rate_limited: false,
        }
    }

    #[test]
    fn transient_is_retried_until_the_last_attempt() {
        let p = RetryPolicy::new(3, Duration::from_millis(100));
        assert!(matches!(
            p.decide(&transient(None), 1),
            Decision::RetryIn(_)
        ));
        assert!(matches!(
            p.decide(&transient(None), 2),
            Decision::RetryIn(_)
        ));
        assert_eq!(
            p.decide(&transient(None), 3),
            Decision::Finish {
                state: State::Failed,
                failure: Some(Failure::Transient)
            }
        );
    }

    #[test]
    fn permanent_and_fatal_are_not_retried() {
        let p = RetryPolicy::new(5, Duration::from_millis(100));
        let perm = Outcome::Permanent {
            code: "PARAM_ILLEGAL".into(),
            message: String::new(),
        };
        assert_eq!(
            p.decide(&perm, 1),
            Decision::Finish {
                state: State::Failed,
                failure: Some(Failure::Permanent)
            }
        );
        let fatal = Outcome::Fatal {
            code: "INVALID_SIGNATURE".into(),
            message: String::new(),
        };
        assert_eq!(p.decide(&fatal, 1), Decision::Fatal);
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy::new(10, Duration::from_millis(100));
        for attempt in 1..10 {
            let d = p.backoff(attempt, None);
            assert!(d <= p.cap, "{d:?}");
            assert!(d <= Duration::from_millis(100) * (1 << (attempt - 1)));
        }
        assert!(p.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }
}
