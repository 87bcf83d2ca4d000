//! What one call came to, classified as SPEC section 3 says. Only this module maps result codes
//! and HTTP statuses to classes; `pipeline::retry` decides what to do with a class.

use std::time::Duration;

/// The class of one attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `SUCCESS`, status `S`, a verified signature and a non-empty `pmsLabel`.
    Success { pms_label: String },
    /// `STORE_IS_CIRCLED`: the store already has a mall.
    AlreadyCircled,
    /// Worth trying again. `maybe_processed` is true when the gateway may have acted on the call
    /// (time-out, `UNKNOWN_EXCEPTION`, an answer that cannot be believed): a later
    /// `STORE_IS_CIRCLED` then most likely means our own earlier call went through.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        maybe_processed: bool,
        rate_limited: bool,
    },
    /// The gateway refused this row for good.
    Permanent { code: String, message: String },
    /// The configuration is wrong (signature, client, access): every row would fail.
    Fatal { code: String, message: String },
}

impl Outcome {
    /// The short word stored in the ledger's `attempts.outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::AlreadyCircled => "already_circled",
            Outcome::Transient { .. } => "transient",
            Outcome::Permanent { .. } => "permanent",
            Outcome::Fatal { .. } => "fatal",
        }
    }
}

/// Everything kept about one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub result_code: Option<String>,
    pub result_status: Option<String>,
    pub result_message: Option<String>,
    /// Transport or verification error, in words.
    pub error: Option<String>,
    pub latency: Duration,
}

const FATAL_CODES: &[&str] = &[
    "INVALID_SIGNATURE",
    "INVALID_CLIENT",
    "ACCESS_DENIED",
    "KEY_NOT_FOUND",
];

/// Classifies a parsed, *verified* business answer.
pub fn classify_result(
    code: &str,
    status: &str,
    message: &str,
    pms_label: Option<&str>,
) -> Outcome {
    let permanent = || Outcome::Permanent {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    match (code, status) {
        ("SUCCESS", "S") => match pms_label.map(str::trim).filter(|l| !l.is_empty()) {
            Some(label) => Outcome::Success {
                pms_label: label.to_owned(),
            },
            None => Outcome::Transient {
                reason: "SUCCESS without a pmsLabel".to_owned(),
                retry_after: None,
                maybe_processed: true,
                rate_limited: false,
            },
        },
        ("STORE_IS_CIRCLED", _) => Outcome::AlreadyCircled,
        ("UNKNOWN_EXCEPTION", _) | (_, "U") => Outcome::Transient {
            reason: format!("{code} ({status}): {message}"),
            retry_after: None,
            maybe_processed: true,
            rate_limited: false,
        },
        (c, _) if FATAL_CODES.contains(&c) => Outcome::Fatal {
            code: code.to_owned(),
            message: message.to_owned(),
        },
        _ => permanent(),
    }
}

/// Classifies an HTTP status that carries no business answer we can use.
pub fn classify_http(status: u16, retry_after: Option<Duration>) -> Option<Outcome> {
    match status {
        200..=299 => None,
        429 => Some(Outcome::Transient {
            reason: "HTTP 429 Too Many Requests".to_owned(),
            retry_after,
            maybe_processed: false,
            rate_limited: true,
        }),
        500 | 502 | 503 | 504 => Some(Outcome::Transient {
            reason: format!("HTTP {status}"),
            retry_after,
            maybe_processed: true,
            rate_limited: false,
        }),
        401 | 403 => Some(Outcome::Fatal {
            code: format!("HTTP_{status}"),
            message: "the gateway refused the credentials".to_owned(),
        }),
        400..=499 => Some(Outcome::Permanent {
            code: format!("HTTP_{status}"),
            message: format!("HTTP {status}"),
        }),
        _ => Some(Outcome::Transient {
            reason: format!("HTTP {status}"),
            retry_after,
            maybe_processed: true,
            rate_limited: false,
        }),
    }
}

/// `Retry-After` as seconds (the HTTP-date form is treated as absent), capped at 5 minutes.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_lands_in_its_class() {
        assert!(matches!(
            classify_result("SUCCESS", "S", "", Some("123")),
            Outcome::Success { .. }
        ));
        assert!(matches!(
            classify_result("SUCCESS", "S", "", Some(" ")),
            Outcome::Transient { .. }
        ));
        assert_eq!(
            classify_result("STORE_IS_CIRCLED", "F", "", None),
            Outcome::AlreadyCircled
        );
        assert!(matches!(
            classify_result("UNKNOWN_EXCEPTION", "U", "", None),
            Outcome::Transient {
                maybe_processed: true,
                ..
            }
        ));
        assert!(matches!(
            classify_result("WHATEVER", "U", "", None),
            Outcome::Transient { .. }
        ));
        for code in [
            "PARAM_ILLEGAL",
            "IPAY_TRADE_NO_NOT_EXIST",
            "BUSINESS_DISTRICT_NOT_EXIST",
            "UNKNOWN_CIRCLE_STORE_WAY_TYPE",
            "CIRCLE_STORE_FAILURE",
            "SOMETHING_NEW",
        ] {
            assert!(
                matches!(
                    classify_result(code, "F", "", None),
                    Outcome::Permanent { .. }
                ),
                "{code}"
            );
        }
        for code in FATAL_CODES {
            assert!(
                matches!(classify_result(code, "F", "", None), Outcome::Fatal { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn http_statuses() {
        assert!(matches!(
            classify_http(429, None),
            Some(Outcome::Transient {
                rate_limited: true,
                ..
            })
        ));
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                classify_http(s, None),
                Some(Outcome::Transient { .. })
            ));
        }
        assert!(matches!(
            classify_http(401, None),
            Some(Outcome::Fatal { .. })
        ));
        assert!(matches!(
            classify_http(403, None),
            Some(Outcome::Fatal { .. })
        ));
        assert!(matches!(
            classify_http(404, None),
            Some(Outcome::Permanent { .. })
        ));
        assert_eq!(classify_http(200, None), None);
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
