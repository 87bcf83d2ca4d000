//! The retry policy: the one place that decides, from an attempt's outcome, whether a row is
//! finished (and in which state), tried again after a short back-off, set aside to be tried
//! again later while the rest of the sheet goes on, sent again after the gateway's throttling
//! pause, or whether the whole run must stop; and what the row then holds. Pure functions: the
//! worker carries them out, the ledger stores them.
//!
//! AlipayHK's guidance for this solution: retry a request that failed or got no answer after
//! 2 s, three times, then after 10 minutes, then after 30 minutes. So a transient failure is
//! retried `max_attempts − 1` times with exponential back-off and full jitter from `backoff`
//! (the worker keeps the row). Then, if the gateway is down — it received the row's requests
//! (not a refused connection, an unknown host or an untrusted certificate, which waiting does not
//! mend) but gave no believable answer to any request since the row began to fail — the row is
//! set aside for each pause of `retry_later` in turn while the rest of the sheet goes on (and
//! comes back early once the gateway answers again). If other rows got answers meanwhile, the
//! trouble is this row's (or bad luck): it is failed (transient) for this run and tried again by
//! the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rand::Rng as _;

use super::limiter::THROTTLE_PAUSE;
use crate::api::outcome::{Attempt, Outcome};
use crate::model::{FailureKind, RowUpdate, State};

/// What happens after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The row is finished for this run, in this state.
    Finish {
        state: State,
        failure: Option<FailureKind>,
    },
    /// Try again after this pause (the worker keeps the row).
    RetryIn(Duration),
    /// Set the row aside; it comes back after this pause, or once the rest of the sheet is done.
    SetAside(Later),
    /// The gateway throttled it (not processed): this row waits this long (the gateway's
    /// `Retry-After`, or [`THROTTLE_PAUSE`]) while the others go on, then goes again.
    Throttled(Duration),
    /// The configuration is wrong; the row stays pending and the run may have to stop.
    Fatal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Later {
    After(Duration),
    /// Once no fresh row is left: an answer that could not be verified is not asked again at
    /// once (with a wrong key the run stops first; with one bad answer the row comes back last).
    AtTheEnd,
    /// Back to wait out the pause it was sent early from: a probe that found the gateway still
    /// down uses none of the row's pauses.
    Again,
    /// Not before this pause is over, whatever other rows hear meanwhile (a throttled row
    /// honouring `Retry-After`); not one of the row's pauses.
    Wait(Duration),
}

/// Where a row stands in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tries {
    /// Attempts this run that were not throttled, this one included.
    pub attempts: u32,
    /// Pauses of `retry_later` used.
    pub later: usize,
    /// Throttled attempts this run.
    pub throttled: u32,
    /// The gateway gave a believable answer to some request since this row began to fail.
    pub gateway_answered: bool,
    /// Some request of the row reached the gateway (not only failed connections).
    pub reached: bool,
    /// Sent early, while set aside, to see whether the gateway is back.
    pub probe: bool,
}

/// A row throttled this many times in one run is handled like a transient failure (a gateway
/// that throttles everything must not keep one row forever).
const THROTTLED_AT_MOST: u32 = 20;

/// Fatal answers in a row after which the run stops sending.
pub const FATAL_IN_A_ROW: u32 = 3;

/// Answers in a row that could not be verified after which the run stops sending. More than for
/// fatal codes: one answer garbled on its way must not stop a night's run.
pub const UNVERIFIED_IN_A_ROW: u32 = 5;

/// A row's standing in this run: what the policy step reads and keeps up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub tries: Tries,
    /// An attempt (this run's, another run's, or a crash's) may have reached the gateway.
    pub maybe_sent: bool,
    /// The row's last answer in this run could not be verified.
    pub unverified: bool,
    /// The run's count of believable answers when this row first failed for now.
    pub believed_at_first_failure: Option<u64>,
}

impl Standing {
    /// A row as the feeder hands it out: `maybe_sent` by an earlier run.
    pub fn new(maybe_sent: bool) -> Standing {
        Standing {
            maybe_sent,
            ..Standing::default()
        }
    }
}

/// The policy step of a run: for every answer it brings the row's [`Tries`] up to date, decides
/// ([`RetryPolicy::decide`]), says what the row then holds ([`row_update`]), and keeps the stop
/// rules (fatal codes, or answers that do not verify, too many times in a row). The worker only
/// sends, records and does what the step decided.
pub struct Step {
    pub policy: RetryPolicy,
    /// Believable answers so far (the gateway is up when this grows).
    believed: Arc<AtomicU64>,
    fatal_in_a_row: AtomicU32,
    unverified_in_a_row: AtomicU32,
    /// Where `alipay_public_key` comes from, for the message that stops a run whose answers do
    /// not verify.
    alipay_public_key: String,
}

/// What the step made of an answer.
#[derive(Debug, Clone)]
pub struct Judged {
    pub decision: Decision,
    pub update: RowUpdate,
    /// Whether the row's last answer could not be verified, before and after this one.
    pub unverified: (bool, bool),
}

impl Step {
    pub fn new(policy: RetryPolicy, alipay_public_key: String) -> Step {
        Step {
            policy,
            believed: Arc::default(),
            fatal_in_a_row: AtomicU32::new(0),
            unverified_in_a_row: AtomicU32::new(0),
            alipay_public_key,
        }
    }

    /// The run's count of believable answers, shared with the set-aside queue (rows set aside
    /// while the gateway was down come back when it grows).
    pub fn believed(&self) -> Arc<AtomicU64> {
        self.believed.clone()
    }

    /// An answer to the row standing at `s`.
    pub fn answered(&self, s: &mut Standing, attempt: &Attempt) -> Judged {
        if matches!(attempt.outcome, Outcome::Throttled { .. }) {
            s.tries.throttled += 1;
        } else {
            s.tries.attempts += 1;
        }
        s.maybe_sent |= attempt.outcome.maybe_processed();
        // Whether the gateway answered anyone since this row began to fail decides between
        // failing it for this run and setting it aside (an outage).
        s.tries.reached |= attempt.outcome.maybe_processed();
        if attempt.outcome.believable() {
            self.believed.fetch_add(1, Relaxed);
        } else {
            self.gateway_answered(s);
        }
        let decision = self.policy.decide(&attempt.outcome, s.tries);
        let update = row_update(attempt, &decision, s.maybe_sent);
        let was = s.unverified;
        s.unverified = matches!(attempt.outcome, Outcome::Unverified { .. });
        Judged {
            decision,
            update,
            unverified: (was, s.unverified),
        }
    }

    /// The ledger refused a success the step believed: its pmsLabel is held by another store
    /// (`key`), so the answer is not this request's (a proxy replaying a genuine answer). The
    /// row was put back; the decision is taken again on what the answer now is.
    pub fn label_held(
        &self,
        s: &mut Standing,
        attempt: &Attempt,
        key: &str,
    ) -> (Decision, Attempt) {
        self.believed.fetch_sub(1, Relaxed);
        self.gateway_answered(s);
        s.tries.reached = true;
        s.maybe_sent = true;
        let outcome = Outcome::NotThisRequest {
            reason: format!("its pmsLabel is held by another store ({key})"),
        };
        let decision = self.policy.decide(&outcome, s.tries);
        (
            decision,
            Attempt {
                outcome,
                ..attempt.clone()
            },
        )
    }

    fn gateway_answered(&self, s: &mut Standing) {
        let now = self.believed.load(Relaxed);
        let first = *s.believed_at_first_failure.get_or_insert(now);
        s.tries.gateway_answered = now > first;
    }

    /// The stop rules, after each answer and its decision: why the run must stop, if it must
    /// (the configuration is clearly wrong).
    pub fn stop_rules(&self, attempt: &Attempt, decision: &Decision) -> Option<String> {
        let fatal = matches!(decision, Decision::Fatal);
        let unverified = matches!(
            attempt.outcome,
            Outcome::Unverified { .. } | Outcome::NotThisRequest { .. }
        );
        if !fatal {
            self.fatal_in_a_row.store(0, Relaxed);
        }
        // Only a believed answer shows the key is right; a failure without an answer shows
        // nothing.
        if attempt.verified == Some(true) && attempt.outcome.believable() {
            self.unverified_in_a_row.store(0, Relaxed);
        }
        if fatal {
            let n = self.fatal_in_a_row.fetch_add(1, Relaxed) + 1;
            if n >= FATAL_IN_A_ROW {
                let code = match &attempt.outcome {
                    Outcome::Fatal { code, .. } => code.clone(),
                    _ => attempt.result_code.clone().unwrap_or_default(),
                };
                let tracer = attempt
                    .tracer_id
                    .as_deref()
                    .map(|t| format!(" (last Tracer-Id {t})"))
                    .unwrap_or_default();
                return Some(format!(
                    "the gateway answered {} {n} times in a row{tracer}: {}",
                    crate::api::outcome::fatal_answer_words(&code),
                    crate::api::outcome::what_to_check(&code)
                ));
            }
        }
        if unverified {
            let n = self.unverified_in_a_row.fetch_add(1, Relaxed) + 1;
            if n >= UNVERIFIED_IN_A_ROW && matches!(attempt.outcome, Outcome::NotThisRequest { .. })
            {
                return Some(crate::api::outcome::replays_stop(n));
            }
            if n >= UNVERIFIED_IN_A_ROW {
                return Some(format!(
                    "{n} answers in a row could not be verified with alipay_public_key ({}): the \
                     likely causes are a wrong alipay_public_key (your own public key, or a key \
                     that is not AlipayHK's), a key AlipayHK has rotated (download the current \
                     one from the portal), or a proxy that strips or rewrites the answers' \
                     headers. What each answer said is kept with its attempt, labels included; \
                     run again once the key is right and they are checked again before anything \
                     is sent",
                    self.alipay_public_key
                ));
            }
        }
        None
    }
}

/// Exponential back-off with full jitter for the first attempts, then the long pauses.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub later: Vec<Duration>,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base: Duration, later: Vec<Duration>) -> Self {
        RetryPolicy {
            max_attempts,
            base,
            cap: (base * 64).min(Duration::from_secs(60)).max(base),
            later,
        }
    }

    pub fn decide(&self, outcome: &Outcome, tries: Tries) -> Decision {
        if tries.probe && !outcome.believable() {
            return Decision::SetAside(Later::Again);
        }
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
                failure: Some(FailureKind::Permanent),
            },
            Outcome::Fatal { .. } => Decision::Fatal,
            Outcome::Throttled { retry_after, .. } if tries.throttled < THROTTLED_AT_MOST => {
                Decision::Throttled(retry_after.unwrap_or(THROTTLE_PAUSE))
            }
            Outcome::Unverified { .. } | Outcome::NotThisRequest { .. }
                if tries.attempts < self.max_attempts =>
            {
                Decision::SetAside(Later::AtTheEnd)
            }
            Outcome::Transient { retry_after, .. } if tries.attempts < self.max_attempts => {
                Decision::RetryIn(self.backoff(tries.attempts, *retry_after))
            }
            Outcome::Throttled { .. }
            | Outcome::Unverified { .. }
            | Outcome::NotThisRequest { .. }
            | Outcome::Transient { .. } => match self.later.get(tries.later) {
                Some(pause) if tries.reached && !tries.gateway_answered => {
                    Decision::SetAside(Later::After(*pause))
                }
                _ => Decision::Finish {
                    state: State::Failed,
                    failure: Some(FailureKind::Transient),
                },
            },
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

/// What the row holds after an attempt and the decision about it. `maybe_sent`: this or an
/// earlier attempt of the row may have reached the gateway without a believable answer.
pub fn row_update(attempt: &Attempt, decision: &Decision, maybe_sent: bool) -> RowUpdate {
    let (state, failure) = match decision {
        Decision::Finish { state, failure } => (*state, *failure),
        _ => (State::Pending, None),
    };
    let unverified = matches!(attempt.outcome, Outcome::Unverified { .. });
    let pms_label = match &attempt.outcome {
        Outcome::Success { pms_label } => Some(pms_label.clone()),
        // Kept, though not believed: a label AlipayHK did send is never lost.
        Outcome::Unverified { .. } => attempt.pms_label.clone(),
        _ => None,
    };
    // Circled already after an unknown outcome: most likely our own earlier call went through.
    let ambiguous = state == State::AlreadyCircled && maybe_sent;
    let code = attempt.result_code.clone().or_else(|| {
        Some(match attempt.http_status {
            Some(h) if !(200..300).contains(&h) => format!("HTTP_{h}"),
            _ => "NO_VALID_ANSWER".to_owned(),
        })
    });
    let tracer = crate::api::outcome::tracer_suffix(attempt.tracer_id.as_deref());
    let message = if unverified {
        Some(unverified_message(attempt))
    } else if ambiguous {
        Some(format!(
            "{}; an earlier request of this row had an unknown outcome, so this is most likely \
             our own call: ask AlipayHK for the pmsLabel if you need it{tracer}",
            attempt
                .result_message
                .as_deref()
                .unwrap_or("store already circled")
        ))
    } else {
        match (&attempt.error, &attempt.result_message, failure) {
            (Some(e), _, _) => Some(e.clone()),
            (None, Some(m), Some(FailureKind::Permanent)) => Some(format!("{m}{tracer}")),
            (None, m, _) => m.clone(),
        }
    };
    RowUpdate {
        state,
        failure,
        ambiguous,
        maybe_sent,
        label_unverified: pms_label.is_some() && unverified,
        answer_unverified: attempt.verified.map(|v| !v),
        pms_label,
        result_code: code,
        result_message: message,
        tracer_id: attempt.tracer_id.clone(),
    }
}

/// What a person reads for a row whose last answer could not be verified.
fn unverified_message(a: &Attempt) -> String {
    let said = match (&a.result_code, &a.pms_label) {
        (Some(code), Some(label)) => format!("{code} with pmsLabel {label}"),
        (Some(code), None) => code.clone(),
        _ => "something".to_owned(),
    };
    format!(
        "NOT VERIFIED: the answer said {said}, but {}. The label is kept; check \
         alipay_public_key (the AlipayHK public key from the portal; AlipayHK may have rotated \
         it) and any proxy that rewrites answers, then run again: the kept answer is checked \
         again first{}",
        a.error.as_deref().unwrap_or("its signature did not verify"),
        crate::api::outcome::tracer_suffix(a.tracer_id.as_deref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(retry_after: Option<Duration>) -> Outcome {
        Outcome::Transient {
            reason: "x".into(),
            retry_after,
            maybe_processed: true,
        }
    }

    fn tries(attempts: u32, later: usize) -> Tries {
        Tries {
            attempts,
            later,
            reached: true,
            ..Tries::default()
        }
    }

    #[test]
    fn transient_is_retried_then_set_aside_then_failed() {
        let p = RetryPolicy::new(
            3,
            Duration::from_millis(100),
            vec![Duration::from_secs(600), Duration::from_secs(1800)],
        );
        assert!(matches!(
            p.decide(&transient(None), tries(1, 0)),
            Decision::RetryIn(_)
        ));
        assert!(matches!(
            p.decide(&transient(None), tries(2, 0)),
            Decision::RetryIn(_)
        ));
        assert_eq!(
            p.decide(&transient(None), tries(3, 0)),
            Decision::SetAside(Later::After(Duration::from_secs(600)))
        );
        assert_eq!(
            p.decide(&transient(None), tries(4, 1)),
            Decision::SetAside(Later::After(Duration::from_secs(1800)))
        );
        assert_eq!(
            p.decide(&transient(None), tries(5, 2)),
            Decision::Finish {
                state: State::Failed,
                failure: Some(FailureKind::Transient)
            }
        );
        // Nothing reached the gateway (an untrusted certificate, say): waiting does not mend it.
        let unreachable = Tries {
            reached: false,
            ..tries(3, 0)
        };
        assert!(matches!(
            p.decide(&transient(None), unreachable),
            Decision::Finish { .. }
        ));
        // Other rows got answers meanwhile: the gateway is up, the trouble is this row's.
        let unlucky = Tries {
            gateway_answered: true,
            ..tries(3, 0)
        };
        assert_eq!(
            p.decide(&transient(None), unlucky),
            Decision::Finish {
                state: State::Failed,
                failure: Some(FailureKind::Transient)
            }
        );
    }

    #[test]
    fn a_probe_that_finds_the_gateway_still_down_uses_none_of_the_pauses() {
        let p = RetryPolicy::new(
            3,
            Duration::from_millis(100),
            vec![Duration::from_secs(600)],
        );
        let probe = Tries {
            probe: true,
            ..tries(3, 1)
        };
        assert_eq!(
            p.decide(&transient(None), probe),
            Decision::SetAside(Later::Again)
        );
        let answered = Outcome::Success {
            pms_label: "1".into(),
        };
        assert!(matches!(
            p.decide(&answered, probe),
            Decision::Finish { .. }
        ));
    }

    #[test]
    fn permanent_and_fatal_are_not_retried_and_throttled_is_not_an_attempt() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), vec![]);
        let perm = Outcome::Permanent {
            code: "PROCESS_FAIL".into(),
            message: String::new(),
        };
        assert_eq!(
            p.decide(&perm, tries(1, 0)),
            Decision::Finish {
                state: State::Failed,
                failure: Some(FailureKind::Permanent)
            }
        );
        let fatal = Outcome::Fatal {
            code: "INVALID_SIGNATURE".into(),
            message: String::new(),
        };
        assert_eq!(p.decide(&fatal, tries(1, 0)), Decision::Fatal);
        let throttled = Outcome::Throttled {
            reason: String::new(),
            retry_after: None,
        };
        assert_eq!(
            p.decide(&throttled, tries(5, 0)),
            Decision::Throttled(THROTTLE_PAUSE)
        );
        // The row that got a Retry-After waits for it.
        let told = Outcome::Throttled {
            reason: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            p.decide(&told, tries(1, 0)),
            Decision::Throttled(Duration::from_secs(3))
        );
        let worn = Tries {
            throttled: THROTTLED_AT_MOST,
            ..tries(5, 0)
        };
        assert!(matches!(
            p.decide(&throttled, worn),
            Decision::Finish { .. }
        ));
    }

    #[test]
    fn an_unverified_answer_comes_back_at_the_end_and_keeps_its_label() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), vec![]);
        let unverified = Outcome::Unverified {
            reason: "bad".into(),
        };
        let decision = p.decide(&unverified, tries(1, 0));
        assert_eq!(decision, Decision::SetAside(Later::AtTheEnd));
        let attempt = Attempt {
            outcome: unverified,
            result_code: Some("SUCCESS".into()),
            pms_label: Some("2026".into()),
            verified: Some(false),
            tracer_id: Some("abc".into()),
            error: Some("response signature not accepted: the signature does not match".into()),
            ..Attempt::default()
        };
        let u = row_update(&attempt, &decision, true);
        assert_eq!(u.state, State::Pending);
        assert_eq!(u.pms_label.as_deref(), Some("2026"));
        assert!(u.label_unverified);
        assert_eq!(u.answer_unverified, Some(true));
        let m = u.result_message.unwrap();
        assert!(m.contains("alipay_public_key") && m.contains("abc"), "{m}");
    }

    #[test]
    fn circled_after_an_unknown_outcome_is_ambiguous_and_says_whom_to_ask() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), vec![]);
        let attempt = Attempt {
            outcome: Outcome::AlreadyCircled,
            result_code: Some("STORE_IS_CIRCLED".into()),
            tracer_id: Some("t9".into()),
            ..Attempt::default()
        };
        let d = p.decide(&attempt.outcome, tries(1, 0));
        let u = row_update(&attempt, &d, true);
        assert!(u.ambiguous);
        assert!(u.result_message.unwrap().contains("Tracer-Id t9"));
        assert!(!row_update(&attempt, &d, false).ambiguous);
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), vec![]);
        for attempt in 1..10 {
            let d = p.backoff(attempt, None);
            assert!(d <= p.cap, "{d:?}");
            assert!(d <= Duration::from_millis(100) * (1 << (attempt - 1)));
        }
        assert!(p.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }

    #[test]
    fn the_step_keeps_the_tries_and_the_stop_rules() {
        let step = Step::new(
            RetryPolicy::new(
                3,
                Duration::from_millis(100),
                vec![Duration::from_secs(600)],
            ),
            "alipay.pem".into(),
        );
        let mut s = Standing::new(false);
        let failed = Attempt {
            outcome: transient(None),
            ..Attempt::default()
        };
        let j = step.answered(&mut s, &failed);
        assert!(matches!(j.decision, Decision::RetryIn(_)));
        assert_eq!(
            (s.tries.attempts, s.maybe_sent, s.tries.reached),
            (1, true, true)
        );
        // Another row's success: the gateway answers, so this row's trouble is its own.
        let mut other = Standing::new(false);
        let success = Attempt {
            outcome: Outcome::Success {
                pms_label: "1".into(),
            },
            verified: Some(true),
            ..Attempt::default()
        };
        step.answered(&mut other, &success);
        step.answered(&mut s, &failed);
        let j = step.answered(&mut s, &failed);
        assert!(s.tries.gateway_answered);
        assert!(matches!(j.decision, Decision::Finish { .. }));
        // Three fatal answers in a row stop the run; a believed answer between them resets.
        let fatal = Attempt {
            outcome: Outcome::Fatal {
                code: "INVALID_CLIENT".into(),
                message: String::new(),
            },
            result_code: Some("INVALID_CLIENT".into()),
            ..Attempt::default()
        };
        let f = Decision::Fatal;
        assert_eq!(step.stop_rules(&fatal, &f), None);
        assert_eq!(step.stop_rules(&fatal, &f), None);
        let ok = Decision::Finish {
            state: State::Succeeded,
            failure: None,
        };
        assert_eq!(step.stop_rules(&success, &ok), None);
        assert_eq!(step.stop_rules(&fatal, &f), None);
        assert_eq!(step.stop_rules(&fatal, &f), None);
        let why = step.stop_rules(&fatal, &f).unwrap();
        assert!(why.contains("INVALID_CLIENT 3 times in a row"), "{why}");
        // Five answers in a row that do not verify stop it, naming the key.
        let bad = Attempt {
            outcome: Outcome::Unverified {
                reason: "bad".into(),
            },
            verified: Some(false),
            ..Attempt::default()
        };
        let aside = Decision::SetAside(Later::AtTheEnd);
        for _ in 0..UNVERIFIED_IN_A_ROW - 1 {
            assert_eq!(step.stop_rules(&bad, &aside), None);
        }
        assert!(
            step.stop_rules(&bad, &aside)
                .unwrap()
                .contains("alipay.pem")
        );
    }

    #[test]
    fn a_label_held_by_another_store_is_not_this_requests_answer() {
        let step = Step::new(
            RetryPolicy::new(3, Duration::from_millis(100), vec![]),
            String::new(),
        );
        let mut s = Standing::new(false);
        let success = Attempt {
            outcome: Outcome::Success {
                pms_label: "1".into(),
            },
            verified: Some(true),
            ..Attempt::default()
        };
        step.answered(&mut s, &success);
        assert_eq!(step.believed().load(Relaxed), 1);
        let (decision, attempt) = step.label_held(&mut s, &success, "P|M|S");
        assert_eq!(step.believed().load(Relaxed), 0, "not believed after all");
        assert_eq!(decision, Decision::SetAside(Later::AtTheEnd));
        assert!(matches!(attempt.outcome, Outcome::NotThisRequest { .. }));
        assert!(s.maybe_sent);
    }
}
