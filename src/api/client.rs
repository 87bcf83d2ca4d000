//! The HTTP call: one signed request per row, sent through [`http`](super::http), and its answer
//! classified into an [`Attempt`]. Never panics on what the network sends back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::binding::Binding;
use super::http::{self, RawResponse, SendError};
use super::keys::{PrivateKey, PublicKey};
use super::outcome::{
    Attempt, NOT_THE_API, Outcome, classify_http, classify_result, classify_unverified,
    parse_retry_after, tracer_suffix,
};
use super::signing::{self, API_PATH};
use super::types::{SaveRequest, SaveResponse};
use crate::input::Row;

/// What the client needs to know about the gateway and the merchant's credentials.
#[derive(Clone)]
pub struct ClientSettings {
    pub endpoint: String,
    pub client_id: String,
    pub key_version: String,
    pub signature_algorithm: String,
    pub timeout: Duration,
}

/// A request ready to leave: the exact body bytes and the headers made from them.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Vec<u8>,
    pub request_time: String,
    pub signature: String,
    pub content: Vec<u8>,
}

/// How many requests were signed and the CPU time of the signing thread spent on them: the work
/// per row that cannot be avoided, measured where it happens and under the same load, so that a
/// benchmark can set the rest against it on a machine whose speed moves (`benches/e2e.py cpu`).
/// Two reads of the thread's CPU clock per request (wall time would count preemptions too). It
/// times `sign_body`: the signed content, the RSA signature and the header, of which all but a
/// few microseconds is the RSA signature.
#[derive(Debug, Default)]
pub struct SigningClock {
    signatures: AtomicU64,
    nanos: AtomicU64,
}

impl SigningClock {
    /// Signatures made and the time they took.
    pub fn totals(&self) -> (u64, Duration) {
        (
            self.signatures.load(Relaxed),
            Duration::from_nanos(self.nanos.load(Relaxed)),
        )
    }
}

/// The Collect-PMS client. Cheap to clone (everything shared behind `Arc`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Parsed once: a URL given as text is parsed again for every request.
    url: Arc<reqwest::Url>,
    /// The headers every request carries (client id, content type).
    fixed_headers: Arc<HeaderMap>,
    settings: Arc<ClientSettings>,
    private_key: Arc<PrivateKey>,
    alipay_public_key: Arc<PublicKey>,
    signing: Arc<SigningClock>,
    /// What the run's answers show of the gateway's clock, and the labelled answers seen.
    binding: Arc<Binding>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not a URL (expected e.g. https://open.alipay.hk)")]
    NotUrl(String),
    #[error(
        "endpoint {0:?} uses plain http:// to a host that is not this machine; use https:// (http:// is only for a local sandbox)"
    )]
    PlainHttp(String),
    #[error("endpoint {0:?} must start with https:// (or http:// for a local sandbox)")]
    Scheme(String),
}

/// Checks the endpoint: https anywhere, http only to loopback hosts.
pub fn check_endpoint(endpoint: &str) -> Result<reqwest::Url, EndpointError> {
    let url =
        reqwest::Url::parse(endpoint).map_err(|_| EndpointError::NotUrl(endpoint.to_owned()))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(url)
            } else {
                Err(EndpointError::PlainHttp(endpoint.to_owned()))
            }
        }
        _ => Err(EndpointError::Scheme(endpoint.to_owned())),
    }
}

impl Client {
    pub fn new(
        settings: ClientSettings,
        private_key: Arc<PrivateKey>,
        alipay_public_key: Arc<PublicKey>,
    ) -> anyhow::Result<Self> {
        check_endpoint(&settings.endpoint)?;
        let url = format!("{}{}", settings.endpoint.trim_end_matches('/'), API_PATH);
        let url = reqwest::Url::parse(&url).map_err(|_| EndpointError::NotUrl(url.clone()))?;
        let client_id = HeaderValue::from_str(&settings.client_id).map_err(|_| {
            anyhow::anyhow!(
                "client_id {:?} cannot be sent in an HTTP header",
                settings.client_id
            )
        })?;
        let mut fixed_headers = HeaderMap::new();
        fixed_headers.insert(HeaderName::from_static("client-id"), client_id);
        fixed_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        let http = http::client(settings.timeout, http::USER_AGENT)?;
        // The key's first signature builds state aws-lc keeps with the key (Montgomery
        // constants, a blinding). Made here, that stall cannot fall between a request's
        // rate-limit slot and its departure, where it let the rate be exceeded at the gateway
        // (rate sweep in docs/performance.md). Each thread's random generator is seeded
        // separately, as the runtime starts it (`keys::seed_thread_rng`).
        private_key.sign(b"warm-up");
        Ok(Client {
            http,
            url: Arc::new(url),
            fixed_headers: Arc::new(fixed_headers),
            settings: Arc::new(settings),
            private_key,
            alipay_public_key,
            signing: Arc::default(),
            binding: Arc::default(),
        })
    }

    /// The signing time of every request this client (and its clones) sent.
    pub fn signing_clock(&self) -> Arc<SigningClock> {
        self.signing.clone()
    }

    /// Serialises the row once and signs those exact bytes.
    pub fn sign(&self, row: &Row) -> SignedRequest {
        let body = SaveRequest::from_row(row).to_body();
        let started = thread_cpu_nanos();
        let signed = sign_body(&self.settings, &self.private_key, body);
        let nanos = thread_cpu_nanos().saturating_sub(started);
        self.signing.signatures.fetch_add(1, Relaxed);
        self.signing.nanos.fetch_add(nanos, Relaxed);
        signed
    }

    /// Sends one row and classifies what came back.
    pub async fn send(&self, row: &Row) -> Attempt {
        // Read before the request-time is: the answer cannot have been signed for this request
        // before this instant.
        let signing = Instant::now();
        let signed = self.sign(row);
        let started = Instant::now();
        let answer = match self.headers(&signed) {
            Err(f) => Err(f),
            Ok(headers) => http::post(&self.http, &self.url, headers, signed.body).await,
        };
        let response = match answer {
            Ok(r) => r,
            Err(f) => return failed(f, started.elapsed(), self.settings.timeout),
        };
        let latency = started.elapsed();
        self.interpret(response, latency, signing)
    }

    /// Reads an answer: HTTP status, headers, the signature, the business result, then whether
    /// it is this request's (`signing`: when the request's signing began).
    fn interpret(&self, response: RawResponse, latency: Duration, signing: Instant) -> Attempt {
        let received = Instant::now();
        let RawResponse {
            status,
            headers,
            body,
        } = response;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        let tracer_id = header("tracer-id");
        if let Some(mut outcome) = classify_http(status, retry_after) {
            if let Outcome::Fatal { message, .. } = &mut outcome {
                message.push_str(&tracer_suffix(tracer_id.as_deref()));
            }
            return Attempt {
                outcome,
                http_status: Some(status),
                error: Some(format!("HTTP {status}")),
                tracer_id,
                response_body: Some(body),
                latency,
                ..Attempt::default()
            };
        }
        let response_time = header("response-time");
        let signature = header("signature");
        let verified = self.verify(&body, response_time.as_deref(), signature.as_deref());
        let mut attempt = interpret_answer(status, &body, verified, latency);
        attempt.tracer_id = tracer_id;
        if attempt.verified == Some(true)
            && let (Some(time), Some(sig)) = (&response_time, &signature)
            && let Err(why) =
                self.binding
                    .check(signing, received, time, sig, attempt.pms_label.is_some())
        {
            let reason = format!("not this request's answer: {why}");
            attempt.error = Some(reason.clone());
            attempt.outcome = Outcome::NotThisRequest { reason };
        }
        if attempt.verified == Some(false)
            || matches!(attempt.outcome, Outcome::NotThisRequest { .. })
        {
            attempt.response_time = response_time;
            attempt.response_signature = signature;
        }
        attempt
    }

    /// An answer's signature, checked with `alipay_public_key` over our own client id.
    fn verify(
        &self,
        body: &[u8],
        response_time: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), signing::VerifyError> {
        signing::verify(
            &self.alipay_public_key,
            API_PATH,
            &self.settings.client_id,
            response_time,
            body,
            signature,
        )
    }

    /// Verifies an answer kept from an earlier run (one that did not verify then) with this
    /// client's `alipay_public_key`, and classifies it as if it had just arrived: `Some` when it
    /// verifies now.
    pub fn reverify(
        &self,
        body: &[u8],
        response_time: Option<&str>,
        signature: Option<&str>,
    ) -> Option<Attempt> {
        let verified = self.verify(body, response_time, signature);
        verified
            .is_ok()
            .then(|| interpret_answer(200, body, verified, Duration::ZERO))
    }
}

impl Client {
    /// The request's headers (reqwest adds `Host`, `Content-Length` and `User-Agent`).
    fn headers(&self, signed: &SignedRequest) -> Result<HeaderMap, SendError> {
        // Both are ASCII by construction (a timestamp; URL-encoded base64), so this cannot fail;
        // if it did, nothing was sent.
        let value = |s: &str| {
            HeaderValue::from_str(s)
                .map_err(|_| SendError::Connect(format!("{s:?} cannot be sent in a header")))
        };
        let mut headers = HeaderMap::clone(&self.fixed_headers);
        headers.insert(
            HeaderName::from_static("request-time"),
            value(&signed.request_time)?,
        );
        headers.insert(
            HeaderName::from_static("signature"),
            value(&signed.signature)?,
        );
        Ok(headers)
    }
}

/// CPU time consumed by the calling thread, in nanoseconds (0 if the clock cannot be read).
#[cfg(unix)]
fn thread_cpu_nanos() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return 0;
    }
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Elsewhere there is no per-thread CPU clock in the standard library: the signing time reads 0.
#[cfg(not(unix))]
fn thread_cpu_nanos() -> u64 {
    0
}

/// Builds the signed request for a body (shared by the client and `sign`).
pub fn sign_body(settings: &ClientSettings, key: &PrivateKey, body: Vec<u8>) -> SignedRequest {
    let request_time = signing::now_iso8601();
    sign_body_at(settings, key, body, request_time)
}

pub fn sign_body_at(
    settings: &ClientSettings,
    key: &PrivateKey,
    body: Vec<u8>,
    request_time: String,
) -> SignedRequest {
    let content = signing::content(API_PATH, &settings.client_id, &request_time, &body);
    let signature = signing::sign_header(
        key,
        &settings.signature_algorithm,
        &settings.key_version,
        &content,
    );
    SignedRequest {
        body,
        request_time,
        signature,
        content,
    }
}

/// A request that got no answer, as an attempt. A refused connection never reached the gateway;
/// anything later may have been processed.
fn failed(f: SendError, latency: Duration, timeout: Duration) -> Attempt {
    let (reason, maybe_processed, http_status) = match f {
        SendError::Timeout => (
            format!("no answer within {}", crate::duration::format(timeout)),
            true,
            None,
        ),
        SendError::Connect(reason) => (format!("cannot connect: {reason}"), false, None),
        SendError::AfterSending { reason, status } => {
            (format!("connection failed: {reason}"), true, status)
        }
    };
    Attempt {
        outcome: Outcome::Transient {
            reason: reason.clone(),
            retry_after: None,
            maybe_processed,
        },
        http_status,
        error: Some(reason),
        latency,
        ..Attempt::default()
    }
}

/// Reads a 2xx answer. Whatever it says is kept in the attempt (code, message, label, the raw
/// body), verified or not. A body that is not JSON at all (a page, text, nothing) came from
/// something in the gateway's place and is fatal ([`NOT_THE_API`]: it cannot be about the row);
/// JSON that cannot be parsed (cut short, say) is transient; an answer whose signature does not
/// verify is [`Outcome::Unverified`] (only a fatal code is honoured, so that a wrong
/// configuration stops the run instead of retrying forever).
fn interpret_answer(
    status: u16,
    body: &[u8],
    verified: Result<(), signing::VerifyError>,
    latency: Duration,
) -> Attempt {
    let mut attempt = Attempt {
        http_status: Some(status),
        response_body: Some(body.to_vec()),
        latency,
        ..Attempt::default()
    };
    let Ok(answer) = serde_json::from_slice::<SaveResponse>(body) else {
        if !looks_like_json(body) {
            let reason = format!(
                "HTTP {status} with a body that is not JSON ({}): not the gateway's answer",
                first_words(body)
            );
            attempt.outcome = Outcome::Fatal {
                code: NOT_THE_API.to_owned(),
                message: reason.clone(),
            };
            attempt.error = Some(reason);
            return attempt;
        }
        let reason = "the answer is not the documented JSON".to_owned();
        attempt.outcome = transient(&reason);
        attempt.error = Some(reason);
        return attempt;
    };
    let r = answer.result;
    attempt.verified = Some(verified.is_ok());
    attempt.outcome = match verified {
        Ok(()) => classify_result(
            &r.result_code,
            &r.result_status,
            &r.result_message,
            answer.pms_label.as_deref(),
        ),
        Err(e) => {
            let reason = format!("response signature not accepted: {e}");
            attempt.error = Some(reason.clone());
            classify_unverified(&r.result_code, &r.result_message, reason)
        }
    };
    attempt.result_code = Some(r.result_code);
    attempt.result_status = Some(r.result_status);
    attempt.result_message = Some(r.result_message);
    attempt.pms_label = answer.pms_label.filter(|l| !l.trim().is_empty());
    attempt
}

/// An object, as every answer of the API is (possibly cut short).
fn looks_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The start of a body, for a message: at most 60 characters, on one line.
fn first_words(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(240)]);
    let words: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match words.char_indices().nth(60) {
        _ if words.is_empty() => "empty".to_owned(),
        Some((at, _)) => format!("{:?}…", &words[..at]),
        None => format!("{words:?}"),
    }
}

fn transient(reason: &str) -> Outcome {
    Outcome::Transient {
        reason: reason.to_owned(),
        retry_after: None,
        maybe_processed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_endpoint("https://open.alipay.hk").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://localhost:8080").is_ok());
        assert!(check_endpoint("http://[::1]:8080").is_ok());
        assert!(matches!(
            check_endpoint("http://open.alipay.hk"),
            Err(EndpointError::PlainHttp(_))
        ));
        assert!(matches!(
            check_endpoint("ftp://x"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            check_endpoint("open.alipay.hk"),
            Err(EndpointError::NotUrl(_))
        ));
    }

    #[test]
    fn an_unverified_success_is_never_believed() {
        let body = br#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"ok"},"pmsLabel":"1"}"#;
        let a = interpret_answer(
            200,
            body,
            Err(signing::VerifyError::Missing),
            Duration::ZERO,
        );
        assert!(matches!(a.outcome, Outcome::Unverified { .. }));
        // What it said is kept, label included, but not believed.
        assert_eq!(a.verified, Some(false));
        assert_eq!(a.pms_label.as_deref(), Some("1"));
        assert_eq!(a.result_code.as_deref(), Some("SUCCESS"));
        assert_eq!(a.response_body.as_deref(), Some(&body[..]));
        let a = interpret_answer(200, body, Ok(()), Duration::ZERO);
        assert_eq!(a.verified, Some(true));
        assert_eq!(
            a.outcome,
            Outcome::Success {
                pms_label: "1".into()
            }
        );
        // A page in the gateway's place cannot be about the row: fatal, the row stays pending.
        let a = interpret_answer(200, b"<html>", Ok(()), Duration::ZERO);
        assert!(
            matches!(&a.outcome, Outcome::Fatal { code, .. } if code == NOT_THE_API),
            "{a:?}"
        );
        assert!(a.error.unwrap().contains("\"<html>\""));
        let a = interpret_answer(200, b"", Ok(()), Duration::ZERO);
        assert!(matches!(&a.outcome, Outcome::Fatal { .. }), "{a:?}");
        // JSON cut short may be the gateway's own answer: transient, possibly processed.
        let a = interpret_answer(200, br#"{"result":{"resu"#, Ok(()), Duration::ZERO);
        assert!(matches!(a.outcome, Outcome::Transient { .. }));
        let bad = br#"{"result":{"resultCode":"INVALID_SIGNATURE","resultStatus":"F","resultMessage":"x"}}"#;
        let a = interpret_answer(200, bad, Err(signing::VerifyError::Missing), Duration::ZERO);
        assert!(matches!(a.outcome, Outcome::Fatal { .. }));
    }
}
