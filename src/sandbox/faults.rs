//! Fault injection: the probabilities, and one seeded random stream that decides, request by
//! request, which faults strike.
//!
//! Every request draws every fault, always in the same order, from one generator under a lock.
//! So the n-th request to arrive gets the same faults for the same seed whatever the
//! probabilities of the other faults are, and a sequential client sees a reproducible run.
//!
//! Injected result codes (`--fault-code CODE=P`) are drawn under the same lock from a second
//! stream seeded from the same seed, one draw per configured code in the order of
//! [`Code::ALL`]. A second stream, not more draws from the first: adding a `--fault-code` then
//! changes nothing in when the other seven faults strike, so a seed keeps its meaning. The replay
//! fault (`--fault-replay P`) has a third stream for the same reason: whether it strikes, and
//! which recorded answer it replays.

use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use super::rules::Code;

/// Fault probabilities (each in `[0, 1]`) and their parameters. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// `UNKNOWN_EXCEPTION`/`U` before any effect.
    pub unknown: f64,
    /// The effect is applied (a store is circled), but the answer is `UNKNOWN_EXCEPTION`/`U`.
    pub unknown_after_commit: f64,
    /// HTTP 500 with a plain-text body.
    pub http500: f64,
    /// HTTP 429 with `Retry-After: retry_after_secs`.
    pub http429: f64,
    /// Sleeps `hang_ms`, then carries on as usual (the client has long timed out).
    pub hang: f64,
    /// The connection is dropped without an HTTP answer.
    pub reset: f64,
    /// The real answer with a signature that does not verify.
    pub bad_signature: f64,
    /// A genuine, signed `SUCCESS` answer sent earlier to another request, replayed byte for
    /// byte (headers and body) as a replaying proxy would; the request goes no further.
    pub replay: f64,
    /// A signed answer with this result code (and its documented status and message) before any
    /// effect, each with its probability. `SUCCESS` cannot be injected.
    pub codes: Vec<(Code, f64)>,
    /// Added to every request.
    pub latency_ms: u64,
    pub seed: u64,
    pub retry_after_secs: u64,
    pub hang_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            unknown: 0.0,
            unknown_after_commit: 0.0,
            http500: 0.0,
            http429: 0.0,
            hang: 0.0,
            reset: 0.0,
            bad_signature: 0.0,
            replay: 0.0,
            codes: Vec::new(),
            latency_ms: 0,
            seed: 0,
            retry_after_secs: 1,
            hang_ms: 30_000,
        }
    }
}

impl Faults {
    /// The probabilities by the name of the flag that sets them, for validation messages.
    pub fn probabilities(&self) -> [(&'static str, f64); 8] {
        [
            ("--fault-unknown", self.unknown),
            ("--fault-unknown-after-commit", self.unknown_after_commit),
            ("--fault-http500", self.http500),
            ("--fault-http429", self.http429),
            ("--fault-hang", self.hang),
            ("--fault-reset", self.reset),
            ("--fault-bad-signature", self.bad_signature),
            ("--fault-replay", self.replay),
        ]
    }

    /// Refuses a probability outside `[0, 1]` (or NaN), naming its flag, and a code that
    /// cannot be injected or is given twice.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, p) in self.probabilities() {
            if !(0.0..=1.0).contains(&p) {
                anyhow::bail!("{flag} must be a probability between 0 and 1, got {p}");
            }
        }
        for (i, &(code, p)) in self.codes.iter().enumerate() {
            let name = code.as_str();
            if !(0.0..=1.0).contains(&p) {
                anyhow::bail!("--fault-code {name}={p}: the probability must be between 0 and 1");
            }
            if code == Code::Success {
                anyhow::bail!("--fault-code SUCCESS: only failures can be injected");
            }
            if self.codes[..i].iter().any(|&(c, _)| c == code) {
                anyhow::bail!("--fault-code {name} is given twice");
            }
        }
        Ok(())
    }
}

/// Which faults strike one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draw {
    pub hang: bool,
    pub reset: bool,
    pub http500: bool,
    pub http429: bool,
    pub unknown: bool,
    pub unknown_after_commit: bool,
    pub bad_signature: bool,
    /// The first injected code (in the order of [`Code::ALL`]) that struck.
    pub code: Option<Code>,
    /// `Some(r)`: replay a recorded answer, the one at `r` modulo how many there are.
    pub replay: Option<u32>,
}

/// Mixed into the seed of the injected codes' stream, so that it differs from the first.
const CODE_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;
/// And into the replay stream's.
const REPLAY_STREAM: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// The seeded generators shared by every request.
pub struct Dice {
    faults: Faults,
    /// The injected codes, in the order of [`Code::ALL`] whatever the order of the flags.
    codes: Vec<(Code, f64)>,
    rng: Mutex<(SmallRng, SmallRng, SmallRng)>,
}

impl Dice {
    pub fn new(faults: Faults) -> Self {
        let rng = (
            SmallRng::seed_from_u64(faults.seed),
            SmallRng::seed_from_u64(faults.seed ^ CODE_STREAM),
            SmallRng::seed_from_u64(faults.seed ^ REPLAY_STREAM),
        );
        let mut codes = faults.codes.clone();
        codes.sort_by_key(|&(code, _)| code);
        Dice {
            faults,
            codes,
            rng: Mutex::new(rng),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Draws all seven faults, in the documented order, then every injected code, then the
    /// replay, under one lock.
    pub fn draw(&self) -> Draw {
        let f = &self.faults;
        let mut guard = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let (rng, code_rng, replay_rng) = &mut *guard;
        let mut hit = |p: f64| rng.random::<f64>() < p;
        let mut draw = Draw {
            hang: hit(f.hang),
            reset: hit(f.reset),
            http500: hit(f.http500),
            http429: hit(f.http429),
            unknown: hit(f.unknown),
            unknown_after_commit: hit(f.unknown_after_commit),
            bad_signature: hit(f.bad_signature),
            code: None,
            replay: None,
        };
        // Every code is drawn even after one struck: the next request's draws must not depend
        // on this one's.
        for &(code, p) in &self.codes {
            if code_rng.random::<f64>() < p && draw.code.is_none() {
                draw.code = Some(code);
            }
        }
        // Both drawn every time: the next request's draws must not depend on this one's.
        let (replay, which) = (replay_rng.random::<f64>(), replay_rng.random::<u32>());
        draw.replay = (replay < f.replay).then_some(which);
        draw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let faults = Faults {
            unknown: 0.5,
            reset: 0.5,
            seed: 7,
            ..Faults::default()
        };
        let a = Dice::new(faults.clone());
        let b = Dice::new(faults);
        for _ in 0..100 {
            assert_eq!(a.draw(), b.draw());
        }
    }

    #[test]
    fn zero_never_strikes_and_one_always_does() {
        let dice = Dice::new(Faults {
            http500: 1.0,
            ..Faults::default()
        });
        for _ in 0..100 {
            let d = dice.draw();
            assert!(d.http500 && !d.unknown && !d.hang);
        }
    }

    #[test]
    fn injected_codes_leave_the_other_draws_alone_and_strike_in_a_fixed_order() {
        let plain = Faults {
            http500: 0.3,
            reset: 0.3,
            seed: 9,
            ..Faults::default()
        };
        let with_codes = Faults {
            codes: vec![(Code::AccessDenied, 0.5), (Code::ProcessFail, 0.5)],
            ..plain.clone()
        };
        let flags_reversed = Faults {
            codes: vec![(Code::ProcessFail, 0.5), (Code::AccessDenied, 0.5)],
            ..plain.clone()
        };
        let (a, b, c) = (
            Dice::new(plain),
            Dice::new(with_codes),
            Dice::new(flags_reversed),
        );
        let mut struck = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let (da, db, dc) = (a.draw(), b.draw(), c.draw());
            assert_eq!(Draw { code: None, ..db }, da);
            assert_eq!(db, dc, "the order of the flags does not matter");
            struck.insert(db.code);
        }
        let expected = [None, Some(Code::ProcessFail), Some(Code::AccessDenied)];
        assert_eq!(struck, expected.into_iter().collect());
    }

    #[test]
    fn a_bad_injected_code_is_refused() {
        let with = |codes| Faults {
            codes,
            ..Faults::default()
        };
        for (codes, says) in [
            (vec![(Code::Success, 0.5)], "only failures"),
            (vec![(Code::ProcessFail, 1.5)], "PROCESS_FAIL=1.5"),
            (
                vec![(Code::ProcessFail, 0.1), (Code::ProcessFail, 0.2)],
                "twice",
            ),
        ] {
            let err = with(codes).validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        assert!(with(vec![(Code::AccessDenied, 1.0)]).validate().is_ok());
    }

    #[test]
    fn out_of_range_names_the_flag() {
        let faults = Faults {
            hang: 1.5,
            ..Faults::default()
        };
        let err = faults.validate().unwrap_err().to_string();
        assert!(err.contains("--fault-hang"), "{err}");
        let nan = Faults {
            reset: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().is_err());
        let replay = Faults {
            replay: 2.0,
            ..Faults::default()
        };
        let err = replay.validate().unwrap_err().to_string();
        assert!(err.contains("--fault-replay"), "{err}");
    }

    #[test]
    fn the_replay_leaves_the_other_draws_alone() {
        let plain = Faults {
            http500: 0.3,
            seed: 5,
            ..Faults::default()
        };
        let replaying = Faults {
            replay: 0.5,
            ..plain.clone()
        };
        let (a, b) = (Dice::new(plain), Dice::new(replaying));
        let mut replays = 0;
        for _ in 0..200 {
            let (da, db) = (a.draw(), b.draw());
            assert_eq!(Draw { replay: None, ..db }, da);
            assert_eq!(da.replay, None);
            replays += u32::from(db.replay.is_some());
        }
        assert!((50..150).contains(&replays), "{replays}");
    }
}
