//! The HTTP call: one signed request per row, sent by the [`transport`](super::transport), and
//! its answer classified into an [`Attempt`]. Never panics on what the network sends back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};

use super::keys::{PrivateKey, PublicKey};
use super::outcome::{
    Attempt, MAX_BODY, Outcome, classify_http, classify_result, classify_unverified,
    parse_retry_after,
};
use super::signing::{self, API_PATH};
use super::transport::{self, Direct, RawResponse, SendError};
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
    transport: Arc<Transport>,
    client_id: HeaderValue,
    settings: Arc<ClientSettings>,
    private_key: Arc<PrivateKey>,
    alipay_public_key: Arc<PublicKey>,
    signing: Arc<SigningClock>,
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

/// Where requests go: straight to the gateway, or through the proxy the environment names.
enum Transport {
    Direct(Direct),
    Proxied {
        http: reqwest::Client,
        /// Parsed once: a URL given as text is parsed again for every request.
        url: reqwest::Url,
    },
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
        let connect_timeout = settings.timeout.min(Duration::from_secs(10));
        let transport = if transport::proxied(&url) {
            // No redirects: a signed POST must never be sent again somewhere else.
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(settings.timeout)
                .connect_timeout(connect_timeout)
                .pool_idle_timeout(Duration::from_secs(60))
                .build()?;
            Transport::Proxied { http, url }
        } else {
            Transport::Direct(Direct::new(&url, connect_timeout)?)
        };
        // The key's first signature builds state aws-lc keeps with the key (Montgomery
        // constants, a blinding). Made here, that stall cannot fall between a request's
        // rate-limit slot and its departure, where it let the rate be exceeded at the gateway
        // (rate sweep in docs/performance.md). Each thread's random generator is seeded
        // separately, as the runtime starts it (`keys::seed_thread_rng`).
        private_key.sign(b"warm-up");
        Ok(Client {
            transport: Arc::new(transport),
            client_id,
            settings: Arc::new(settings),
            private_key,
            alipay_public_key,
            signing: Arc::default(),
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
        self.send_signed(self.sign(row)).await
    }

    /// Sends a request [`Client::sign`] made (the pipeline signs before the rate's ceiling, so
    /// that the time a signature takes is not between the ceiling and the gateway).
    pub async fn send_signed(&self, signed: SignedRequest) -> Attempt {
        let started = Instant::now();
        let answer = match self.headers(&signed) {
            Err(f) => Err(f),
            Ok(headers) => match &*self.transport {
                Transport::Direct(direct) => {
                    tokio::time::timeout(self.settings.timeout, direct.post(headers, signed.body))
                        .await
                        .unwrap_or(Err(SendError::Timeout))
                }
                Transport::Proxied { http, url } => {
                    via_reqwest(http, url, headers, signed.body).await
                }
            },
        };
        let response = match answer {
            Ok(r) => r,
            Err(f) => return failed(f, started.elapsed(), self.settings.timeout),
        };
        let latency = started.elapsed();
        self.interpret(response, latency)
    }

    /// Reads an answer: HTTP status, headers, the signature, then the business result.
    fn interpret(&self, response: RawResponse, latency: Duration) -> Attempt {
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
            if let Outcome::Fatal { message, .. } = &mut outcome
                && let Some(t) = &tracer_id
            {
                message.push_str(&format!(" (Tracer-Id {t})"));
            }
            return Attempt {
                outcome,
                http_status: Some(status),
                error: Some(format!("HTTP {status}")),
                tracer_id,
                response_body: Some(body.to_vec()),
                latency,
                ..Attempt::default()
            };
        }
        let response_time = header("response-time");
        let signature = header("signature");
        let verified = self.verify(&body, response_time.as_deref(), signature.as_deref());
        let mut attempt = interpret_answer(status, &body, verified, latency);
        attempt.tracer_id = tracer_id;
        if attempt.verified == Some(false) {
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
    /// The request's headers (the transport adds `Host` and `Content-Length`).
    fn headers(&self, signed: &SignedRequest) -> Result<Vec<(HeaderName, HeaderValue)>, SendError> {
        // Both are ASCII by construction (a timestamp; URL-encoded base64), so this cannot fail;
        // if it did, nothing was sent.
        let value = |s: &str| {
            HeaderValue::from_str(s)
                .map_err(|_| SendError::Connect(format!("{s:?} cannot be sent in a header")))
        };
        Ok(vec![
            (HeaderName::from_static("client-id"), self.client_id.clone()),
            (
                HeaderName::from_static("request-time"),
                value(&signed.request_time)?,
            ),
            (
                HeaderName::from_static("signature"),
                value(&signed.signature)?,
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            ),
            (
                header::USER_AGENT,
                HeaderValue::from_static(concat!("pms-onboard/", env!("CARGO_PKG_VERSION"))),
            ),
        ])
    }
}

/// The request through reqwest, which knows proxies; its errors sorted the same way.
async fn via_reqwest(
    http: &reqwest::Client,
    url: &reqwest::Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
) -> Result<RawResponse, SendError> {
    let sorted = |e: reqwest::Error, status: Option<u16>| {
        if e.is_timeout() {
            SendError::Timeout
        } else if e.is_connect() {
            SendError::Connect(transport::error_chain(&e))
        } else {
            SendError::AfterSending {
                reason: transport::error_chain(&e),
                status,
            }
        }
    };
    let mut request = http.post(url.clone());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut response = request
        .body(body)
        .send()
        .await
        .map_err(|e| sorted(e, None))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Read in chunks up to the cap: a body that goes on is not the documented answer.
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| sorted(e, Some(status)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(SendError::AfterSending {
                reason: format!("the answer is larger than {} KiB", MAX_BODY / 1024),
                status: Some(status),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(RawResponse {
        status,
        headers,
        body: body.into(),
    })
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
/// body), verified or not. An answer that cannot be parsed is transient; one whose signature does
/// not verify is [`Outcome::Unverified`] (only a fatal code is honoured, so that a wrong
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
        let a = interpret_answer(200, b"<html>", Ok(()), Duration::ZERO);
        assert!(matches!(a.outcome, Outcome::Transient { .. }));
        let bad = br#"{"result":{"resultCode":"INVALID_SIGNATURE","resultStatus":"F","resultMessage":"x"}}"#;
        let a = interpret_answer(200, bad, Err(signing::VerifyError::Missing), Duration::ZERO);
        assert!(matches!(a.outcome, Outcome::Fatal { .. }));
    }
}
