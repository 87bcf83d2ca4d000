//! What one call came to, classified as SPEC section 3 says. This is the only place that maps
//! result codes and HTTP statuses to classes; `pipeline::policy` decides what to do with a class.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The class of one attempt's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// `SUCCESS`, status `S`, a verified signature and a non-empty `pmsLabel`.
    Success { pms_label: String },
    /// `STORE_IS_CIRCLED`: the store already has a mall.
    AlreadyCircled,
    /// Worth trying again. `maybe_processed` is true when the gateway may have acted on the call
    /// (time-out, `UNKNOWN_EXCEPTION`, a dropped connection after sending): a later
    /// `STORE_IS_CIRCLED` then most likely means our own earlier call went through.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        maybe_processed: bool,
    },
    /// The gateway held the request back (`REQUEST_TRAFFIC_EXCEED_LIMIT`, HTTP 429): it was not
    /// processed. Every worker pauses and the pace drops.
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// An answer arrived whose signature could not be verified (wrong `alipay_public_key`, a key
    /// rotated by AlipayHK, a proxy that rewrites answers). What it says is kept, never believed;
    /// it may have been processed.
    Unverified { reason: String },
    /// An answer whose signature verified but that is not this request's: its signed
    /// `response-time` is before the request (beyond the clock offset measured) or long after it,
    /// its signature was seen before, or its `pmsLabel` is held by another store. A proxy may be
    /// replaying genuine answers. Kept with the attempt, never believed; the request may have
    /// reached the gateway, so the row counts as possibly sent and is sent again.
    NotThisRequest { reason: String },
    /// The gateway refused this row for good.
    Permanent { code: String, message: String },
    /// The configuration is wrong (signature, client, access, endpoint): every row would fail.
    Fatal { code: String, message: String },
}

impl Outcome {
    /// The short word stored in the ledger's `attempts.outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::AlreadyCircled => "already_circled",
            Outcome::Transient { .. } => "transient",
            Outcome::Throttled { .. } => "throttled",
            Outcome::Unverified { .. } => "unverified",
            Outcome::NotThisRequest { .. } => "not_this_request",
            Outcome::Permanent { .. } => "permanent",
            Outcome::Fatal { .. } => "fatal",
        }
    }

    /// The outcome as the ledger stored it (its word, whether it may have been processed, the
    /// code and message or error), for answers read back from the ledger.
    pub fn from_stored(
        kind: &str,
        maybe_processed: bool,
        code: Option<&str>,
        text: Option<&str>,
        pms_label: Option<&str>,
    ) -> Outcome {
        let (code, text) = (code.unwrap_or("").to_owned(), text.unwrap_or("").to_owned());
        match kind {
            "success" => Outcome::Success {
                pms_label: pms_label.unwrap_or("").to_owned(),
            },
            "already_circled" => Outcome::AlreadyCircled,
            "throttled" => Outcome::Throttled {
                reason: text,
                retry_after: None,
            },
            "unverified" => Outcome::Unverified { reason: text },
            "not_this_request" => Outcome::NotThisRequest { reason: text },
            "permanent" => Outcome::Permanent {
                code,
                message: text,
            },
            "fatal" => Outcome::Fatal {
                code,
                message: text,
            },
            _ => Outcome::Transient {
                reason: text,
                retry_after: None,
                maybe_processed,
            },
        }
    }

    /// Whether the gateway gave an answer that can be believed (whatever it said): not a failure
    /// without one, and not an answer whose signature did not verify. A throttle counts: the
    /// gateway is up.
    pub fn believable(&self) -> bool {
        !matches!(
            self,
            Outcome::Transient { .. } | Outcome::Unverified { .. } | Outcome::NotThisRequest { .. }
        )
    }

    /// Whether the gateway may have acted on the request.
    pub fn maybe_processed(&self) -> bool {
        match self {
            Outcome::Transient {
                maybe_processed, ..
            } => *maybe_processed,
            Outcome::Unverified { .. } | Outcome::NotThisRequest { .. } => true,
            _ => false,
        }
    }
}

/// Everything kept about one attempt, whether or not its answer could be believed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// What the answer said, verified or not (see `verified`).
    pub result_code: Option<String>,
    pub result_status: Option<String>,
    pub result_message: Option<String>,
    pub pms_label: Option<String>,
    /// `Some(true)`: the answer's signature verified; `Some(false)`: it did not (or it had
    /// none); `None`: no JSON answer came back.
    pub verified: Option<bool>,
    /// Transport or verification error, in words.
    pub error: Option<String>,
    /// The answer's `Tracer-Id` header: what AlipayHK support asks for.
    pub tracer_id: Option<String>,
    /// The raw answer body (at most [`MAX_BODY`] bytes), kept with the attempt.
    #[serde(with = "base64_bytes")]
    pub response_body: Option<Vec<u8>>,
    /// For an answer that did not verify: its `response-time` and `signature` headers, so that
    /// it can be verified again with another key (`run` does so first).
    pub response_time: Option<String>,
    pub response_signature: Option<String>,
    pub latency: Duration,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::Transient {
            reason: String::new(),
            retry_after: None,
            maybe_processed: true,
        }
    }
}

/// Raw bytes as base64 in JSON (an answer body need not be UTF-8).
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// The largest answer body read; anything longer is not the documented answer (a real one is
/// well under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The throttling code (status `U`): "The request traffic exceeds the limit."
pub const THROTTLED_CODE: &str = "REQUEST_TRAFFIC_EXCEED_LIMIT";

/// Codes every row would hit: the configuration is wrong.
pub const FATAL_CODES: &[&str] = &[
    "INVALID_SIGNATURE",
    "INVALID_CLIENT",
    "ACCESS_DENIED",
    "KEY_NOT_FOUND",
    "INVALID_API",
    "METHOD_NOT_SUPPORTED",
    "MEDIA_TYPE_NOT_ACCEPTABLE",
];

fn transient(reason: String, maybe_processed: bool) -> Outcome {
    Outcome::Transient {
        reason,
        retry_after: None,
        maybe_processed,
    }
}

/// HTTP statuses that say the request never reached the API (a path appended to `endpoint`, a
/// proxy or WAF answering in the gateway's place): nothing about the row, so every row would get
/// the same. Counted like fatal codes.
pub const ROUTING_STATUSES: &[u16] = &[404, 405, 415];

/// The code of a 2xx answer whose body is not the API's JSON at all (an HTML page, plain text,
/// nothing): a captive portal, a WAF or a proxy answered, not the gateway.
pub const NOT_THE_API: &str = "NOT_THE_API";

/// `" (Tracer-Id T)"` for an answer that carried one, else nothing: what AlipayHK support asks
/// for, said the same way everywhere.
pub fn tracer_suffix(tracer_id: Option<&str>) -> String {
    tracer_id
        .map(|t| format!(" (Tracer-Id {t})"))
        .unwrap_or_default()
}

/// Why a run stopped after `n` answers in a row could not be believed, the last of them not its
/// request's (signed before it, or seen before, or a label another store holds).
pub fn replays_stop(n: u32) -> String {
    format!(
        "{n} answers in a row could not be believed, the last one correctly signed but not the \
         answer to its request (signed before the request was, the same answer seen before, or a \
         pmsLabel another store holds): a proxy may be replaying answers. What each said is kept \
         with its attempt and the rows stay pending; exempt the gateway from any proxy (NO_PROXY) \
         or remove the TLS-inspecting one, check HTTPS_PROXY, then run again"
    )
}

/// A fatal answer's code as the message that stops a run names it (`HTTP 404`, a result code).
pub fn fatal_answer_words(code: &str) -> String {
    match code.strip_prefix("HTTP_") {
        _ if code == NOT_THE_API => "pages that are not the API's JSON".to_owned(),
        Some(status) => format!("HTTP {status}"),
        None => code.to_owned(),
    }
}

/// What to check when the gateway answers a fatal code: the configuration is wrong, and every
/// row would get the same answer. `code` as a result code, `HTTP_404` or `HTTP 404`.
pub fn what_to_check(code: &str) -> &'static str {
    let code = match code.strip_prefix("HTTP ") {
        Some(status) => match status.trim() {
            "401" => "HTTP_401",
            "403" => "HTTP_403",
            "404" => "HTTP_404",
            "405" => "HTTP_405",
            "415" => "HTTP_415",
            _ => code,
        },
        None => code,
    };
    match code {
        "INVALID_SIGNATURE" => {
            "the gateway refused the signature: check that private_key is the key whose public \
             half is uploaded in the AlipayHK portal, that key_version and signature_algorithm \
             match the portal (try `pms-onboard sign`), and that this machine's clock is right \
             (`pms-onboard doctor`)"
        }
        "INVALID_CLIENT" => {
            "the gateway does not know client_id: copy it again from the AlipayHK portal"
        }
        "KEY_NOT_FOUND" => {
            "no public key is registered for client_id with this key_version: upload the public \
             half of private_key in the portal, or set key_version to the version the portal shows"
        }
        "ACCESS_DENIED" | "HTTP_403" => {
            "the client may not call Collect PMS Information: ask AlipayHK to enable it, quoting \
             the Tracer-Id"
        }
        "INVALID_API" | "METHOD_NOT_SUPPORTED" | "MEDIA_TYPE_NOT_ACCEPTABLE" => {
            "the gateway did not take the call as Collect PMS Information: check that endpoint is \
             AlipayHK's gateway (https://open.alipay.hk, not the mainland one), with no path, and \
             that no proxy changes the request"
        }
        "HTTP_404" | "HTTP_405" | "HTTP_415" | NOT_THE_API => {
            "the answers are not the Collect-PMS API's: check that endpoint is the gateway's base \
             URL with no path appended (https://open.alipay.hk, not .../api/...), and that no \
             proxy, WAF or captive portal answers in its place (HTTPS_PROXY, NO_PROXY; try \
             `pms-onboard doctor`). The rows stay pending: run again once it is fixed"
        }
        _ => "the gateway refused the credentials: check client_id, private_key and endpoint",
    }
}

/// Classifies a parsed, *verified* business answer.
pub fn classify_result(
    code: &str,
    status: &str,
    message: &str,
    pms_label: Option<&str>,
) -> Outcome {
    match (code, status) {
        ("SUCCESS", "S") => match pms_label.map(str::trim).filter(|l| !l.is_empty()) {
            Some(label) => Outcome::Success {
                pms_label: label.to_owned(),
            },
            None => transient("SUCCESS without a pmsLabel".to_owned(), true),
        },
        ("STORE_IS_CIRCLED", _) => Outcome::AlreadyCircled,
        (THROTTLED_CODE, _) => Outcome::Throttled {
            reason: format!("{code} ({status}): {message}"),
            retry_after: None,
        },
        (c, _) if FATAL_CODES.contains(&c) => Outcome::Fatal {
            code: code.to_owned(),
            message: message.to_owned(),
        },
        ("UNKNOWN_EXCEPTION", _) | (_, "U") => {
            transient(format!("{code} ({status}): {message}"), true)
        }
        // PROCESS_FAIL ("do not retry"), the business refusals, and any other F code.
        _ => Outcome::Permanent {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }
}

/// Classifies an answer whose signature did not verify: only a fatal code is honoured, so that
/// a wrong configuration stops the run instead of retrying forever; anything else is kept as
/// said and not believed.
pub fn classify_unverified(code: &str, message: &str, reason: String) -> Outcome {
    if FATAL_CODES.contains(&code) {
        return Outcome::Fatal {
            code: code.to_owned(),
            message: message.to_owned(),
        };
    }
    Outcome::Unverified { reason }
}

/// Classifies an HTTP status that carries no business answer we can use.
pub fn classify_http(status: u16, retry_after: Option<Duration>) -> Option<Outcome> {
    match status {
        200..=299 => None,
        429 => Some(Outcome::Throttled {
            reason: "HTTP 429 Too Many Requests".to_owned(),
            retry_after,
        }),
        401 | 403 => Some(Outcome::Fatal {
            code: format!("HTTP_{status}"),
            message: "the gateway refused the credentials".to_owned(),
        }),
        s if ROUTING_STATUSES.contains(&s) => Some(Outcome::Fatal {
            code: format!("HTTP_{status}"),
            message: format!("HTTP {status}: the request did not reach the Collect-PMS API"),
        }),
        400..=499 => Some(Outcome::Permanent {
            code: format!("HTTP_{status}"),
            message: format!("HTTP {status}"),
        }),
        _ => Some(Outcome::Transient {
            reason: format!("HTTP {status}"),
            retry_after,
            maybe_processed: true,
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
        assert!(matches!(
            classify_result(
                THROTTLED_CODE,
                "U",
                "The request traffic exceeds the limit.",
                None
            ),
            Outcome::Throttled { .. }
        ));
        for code in [
            "PARAM_ILLEGAL",
            "IPAY_TRADE_NO_NOT_EXIST",
            "BUSINESS_DISTRICT_NOT_EXIST",
            "UNKNOWN_CIRCLE_STORE_WAY_TYPE",
            "CIRCLE_STORE_FAILURE",
            "PROCESS_FAIL",
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
        for code in [
            "INVALID_API",
            "METHOD_NOT_SUPPORTED",
            "MEDIA_TYPE_NOT_ACCEPTABLE",
        ] {
            assert!(FATAL_CODES.contains(&code), "{code}");
        }
    }

    #[test]
    fn an_unverified_answer_is_kept_but_only_a_fatal_code_is_believed() {
        assert!(matches!(
            classify_unverified("SUCCESS", "", "bad".into()),
            Outcome::Unverified { .. }
        ));
        assert!(matches!(
            classify_unverified("INVALID_SIGNATURE", "", "bad".into()),
            Outcome::Fatal { .. }
        ));
        assert!(
            Outcome::Unverified {
                reason: String::new()
            }
            .maybe_processed()
        );
    }

    #[test]
    fn http_statuses() {
        assert!(matches!(
            classify_http(429, None),
            Some(Outcome::Throttled { .. })
        ));
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                classify_http(s, None),
                Some(Outcome::Transient {
                    maybe_processed: true,
                    ..
                })
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
        for s in [404, 405, 415] {
            assert!(
                matches!(classify_http(s, None), Some(Outcome::Fatal { code, .. }) if code == format!("HTTP_{s}")),
                "{s}"
            );
            assert!(what_to_check(&format!("HTTP {s}")).contains("no path appended"));
        }
        assert!(matches!(
            classify_http(400, None),
            Some(Outcome::Permanent { .. })
        ));
        assert!(what_to_check("HTTP 403").contains("Collect PMS Information"));
        assert_eq!(tracer_suffix(Some("t1")), " (Tracer-Id t1)");
        assert_eq!(tracer_suffix(None), "");
        assert_eq!(classify_http(200, None), None);
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
