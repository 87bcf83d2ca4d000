//! The HTTP side of the sandbox: routes, the order in which one request is handled (count,
//! outage, rate limit, routing, faults, authentication, business rules), signed answers stamped
//! with a `Tracer-Id` and the sandbox's `Date`, and start/stop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::header::{CONTENT_TYPE, DATE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::{OutageAnswer, RateLimitAnswer, SandboxConfig};
use super::faults::{Dice, Draw};
use super::rules::{self, Code, Register, Reply};
use super::stats::{Arrivals, Stats};
use crate::api::signing::{self, API_PATH};

/// Larger bodies are not read: `PARAM_ILLEGAL`. A real body is well under 2 KiB.
const MAX_BODY: usize = 64 * 1024;
const JSON: &str = "application/json; charset=UTF-8";
/// How long `shutdown` waits for requests in flight (a hang, say) before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The largest `clock_offset_secs` taken: a century, far inside what the clock arithmetic holds.
const MAX_CLOCK_OFFSET_SECS: i64 = 100 * 366 * 86_400;
/// `SUCCESS` answers kept for the replay fault, the most recent ones.
const RECORDED_AT_MOST: usize = 256;
/// How old a recorded answer must be to be replayed: a recording, not an answer still on its way
/// to its own request (replayed before its original arrives, no client could tell the two
/// apart, and the replay would take the original's place).
const REPLAY_MIN_AGE: Duration = Duration::from_millis(200);

/// A running sandbox. Dropping it stops the server too (gracefully, in the background).
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Gateway>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks a free one), spawns the server on the current tokio runtime
    /// and returns at once.
    pub async fn start(config: SandboxConfig, listen: SocketAddr) -> anyhow::Result<Sandbox> {
        config.faults.validate()?;
        if config.clock_offset_secs.abs() > MAX_CLOCK_OFFSET_SECS {
            anyhow::bail!(
                "--clock-offset {} is more than a century: give the offset in seconds",
                config.clock_offset_secs
            );
        }
        let shared = Arc::new(Gateway::new(config)?);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("the sandbox cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/sandbox/stats", get(stats))
            .route("/sandbox/labels", get(labels))
            .fallback(gateway)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // A dropped sender stops the server as well as a sent signal.
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("the sandbox server stopped: {e}");
            }
        });
        Ok(Sandbox {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL a client is given.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same as `GET /sandbox/stats`.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Store identity (`MERCHANT_PMS|partner|merchant|store` or `IPAY_TRADE_NO|trade`) → the
    /// `pmsLabel` it was given. The same as `GET /sandbox/labels`.
    pub fn labels(&self) -> HashMap<String, String> {
        self.shared.lock().register.labels()
    }

    /// Stops taking connections, lets requests in flight finish for a short grace period, then
    /// stops.
    pub async fn shutdown(self) {
        let Sandbox { stop, mut task, .. } = self;
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// What every request handler shares.
struct Gateway {
    config: SandboxConfig,
    client_id_header: HeaderValue,
    dice: Dice,
    state: Mutex<MutableState>,
    /// Arrival times in the stats are counted from here.
    started: Instant,
    /// The first half of every `Tracer-Id`: random, so that two sandboxes do not share ids.
    tracer_prefix: u32,
    tracer_counter: AtomicU64,
}

/// What the arrival of a request decided.
enum Arrival {
    Admitted,
    /// Within the outage: refused before anything else.
    Outage,
    /// Beyond the rate limit.
    RateLimited,
}

#[derive(Default)]
struct MutableState {
    stats: Stats,
    arrivals: Arrivals,
    register: Register,
    /// Genuine `SUCCESS` answers as they went out, oldest first, for the replay fault.
    recorded: VecDeque<Recorded>,
}

/// An answer as it went out: its headers (`Tracer-Id` and `Date` included) and body.
struct Recorded {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

/// Marks a genuine `SUCCESS` answer (its body) so that it is recorded once its headers are
/// complete.
#[derive(Clone)]
struct SuccessBody(Bytes);

impl Gateway {
    fn new(config: SandboxConfig) -> anyhow::Result<Self> {
        let client_id_header = HeaderValue::from_str(&config.client_id).map_err(|_| {
            anyhow::anyhow!(
                "the client id {:?} cannot be sent in an HTTP header",
                config.client_id
            )
        })?;
        if HeaderValue::from_str(&config.key_version).is_err() {
            anyhow::bail!(
                "the key version {:?} cannot be sent in an HTTP header",
                config.key_version
            );
        }
        Ok(Gateway {
            dice: Dice::new(config.faults.clone()),
            client_id_header,
            config,
            state: Mutex::new(MutableState::default()),
            started: Instant::now(),
            tracer_prefix: rand::random(),
            tracer_counter: AtomicU64::new(0),
        })
    }

    /// The state lock; a panic elsewhere must not make the sandbox panic on every request.
    fn lock(&self) -> MutexGuard<'_, MutableState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, code: &str) {
        self.lock().stats.count(code);
    }

    fn stats(&self) -> Stats {
        let state = self.lock();
        let mut stats = state.stats.clone();
        stats.stores_circled = state.register.len() as u64;
        stats
    }

    /// Counts an arrival and decides whether it is refused by the outage or the rate limit.
    fn arrive(&self) -> Arrival {
        let mut state = self.lock();
        // The instant is taken under the lock so the window sees arrivals in order.
        let now = Instant::now();
        let in_last_second = state.arrivals.arrive(now);
        let stats = &mut state.stats;
        stats.requests += 1;
        let ms = now.duration_since(self.started).as_millis() as u64;
        let first = *stats.first_request_ms.get_or_insert(ms);
        stats.last_request_ms = Some(ms);
        stats.max_requests_in_one_second = stats.max_requests_in_one_second.max(in_last_second);
        if let Some(outage) = &self.config.outage
            && u128::from(ms - first) < outage.duration.as_millis()
        {
            return Arrival::Outage;
        }
        let Some(limit) = self.config.rate_limit else {
            return Arrival::Admitted;
        };
        if in_last_second <= u64::from(limit) {
            return Arrival::Admitted;
        }
        stats.rate_limited += 1;
        if self.config.rate_limit_answer == RateLimitAnswer::Http429 {
            stats.count("RATE_LIMITED");
        }
        Arrival::RateLimited
    }

    /// Every request to the gateway (anything but `/sandbox/...`), in the order the module
    /// header gives. Answers are signed over the path the request named, as the gateway does.
    async fn route(self: Arc<Self>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        if !path.starts_with("/api/") {
            return (
                StatusCode::NOT_FOUND,
                "not found: the gateway's APIs are under /api/\n",
            )
                .into_response();
        }
        match self.arrive() {
            Arrival::Admitted => {}
            Arrival::Outage => return self.outage_answer(&path),
            Arrival::RateLimited => return self.rate_limited(&path),
        }
        let refused = if path != API_PATH {
            Some(Code::InvalidApi)
        } else if parts.method != Method::POST {
            Some(Code::MethodNotSupported)
        } else if !json_or_unsaid(&parts.headers) {
            Some(Code::MediaTypeNotAcceptable)
        } else {
            None
        };
        if let Some(code) = refused {
            return self.answer(&path, &Reply::documented(code), false);
        }
        let body = axum::body::to_bytes(body, MAX_BODY).await;
        // Its own task: it completes (a store may be circled) even when the client has given up.
        let task = tokio::spawn(async move { self.handle(parts.headers, body).await });
        task.await.unwrap_or_else(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox internal error\n",
            )
                .into_response()
        })
    }

    fn outage_answer(&self, path: &str) -> Response {
        let answer = self.config.outage.map(|o| o.answer).unwrap_or_default();
        match answer {
            OutageAnswer::Http503 => {
                self.count("HTTP_503");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sandbox outage: HTTP 503\n",
                )
                    .into_response()
            }
            OutageAnswer::Unknown => self.answer(path, &Reply::unknown(), false),
        }
    }

    fn rate_limited(&self, path: &str) -> Response {
        match self.config.rate_limit_answer {
            RateLimitAnswer::Http429 => too_many_requests(1, "rate limit exceeded"),
            RateLimitAnswer::Code => self.answer(
                path,
                &Reply::documented(Code::RequestTrafficExceedLimit),
                false,
            ),
        }
    }

    /// `32` hex digits: the sandbox's random prefix, the time in milliseconds and a counter, so
    /// unique per request (as AlipayHK's `Tracer-Id` is) and roughly ordered.
    fn tracer_id(&self) -> String {
        let n = self.tracer_counter.fetch_add(1, Relaxed);
        let ms = Utc::now().timestamp_millis() as u64;
        const LOW_48: u64 = (1 << 48) - 1;
        format!(
            "{:08x}{:012x}{:012x}",
            self.tracer_prefix,
            ms & LOW_48,
            n & LOW_48
        )
    }

    /// Faults, then authentication, then the business rules.
    async fn handle(&self, headers: HeaderMap, body: Result<Bytes, axum::Error>) -> Response {
        let faults = self.dice.faults();
        let draw = self.dice.draw();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if draw.hang {
            self.count("HANG");
            tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await;
        }
        if draw.reset {
            self.count("RESET");
            return Response::new(Body::new(DroppedConnection));
        }
        if draw.http500 {
            self.count("HTTP_500");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox fault: HTTP 500\n",
            )
                .into_response();
        }
        if draw.http429 {
            self.count("HTTP_429");
            return too_many_requests(faults.retry_after_secs, "sandbox fault: HTTP 429");
        }
        if let Some(which) = draw.replay
            && let Some(replayed) = self.replay(which)
        {
            return replayed;
        }
        let answer = if draw.unknown {
            Reply::unknown()
        } else if let Some(code) = draw.code {
            Reply::documented(code)
        } else {
            match body {
                Err(_) => Reply::fail(
                    Code::ParamIllegal,
                    format!("The request body is unreadable or larger than {MAX_BODY} bytes."),
                ),
                Ok(body) => match authenticate(&self.config, &headers, &body) {
                    Err(refused) => refused,
                    Ok(()) => self.decide(&body, draw),
                },
            }
        };
        self.answer(API_PATH, &answer, draw.bad_signature)
    }

    /// A recorded `SUCCESS` of another request, the one at `which` modulo those old enough, byte
    /// for byte; `None` while there is none.
    fn replay(&self, which: u32) -> Option<Response> {
        let mut state = self.lock();
        let old = state
            .recorded
            .iter()
            .take_while(|r| r.at.elapsed() >= REPLAY_MIN_AGE)
            .count();
        if old == 0 {
            return None;
        }
        let at = which as usize % old;
        let recorded = &state.recorded[at];
        let response = (
            StatusCode::OK,
            recorded.headers.clone(),
            recorded.body.clone(),
        );
        state.stats.replayed += 1;
        state.stats.success_answers += 1;
        state.stats.count("REPLAYED");
        tracing::debug!("sandbox replays a recorded SUCCESS");
        Some(response.into_response())
    }

    /// Keeps a genuine `SUCCESS` as it went out, for the replay fault (only when it may strike).
    fn record(&self, headers: &HeaderMap, body: Bytes) {
        if self.config.faults.replay <= 0.0 {
            return;
        }
        let mut state = self.lock();
        if state.recorded.len() >= RECORDED_AT_MOST {
            state.recorded.pop_front();
        }
        state.recorded.push_back(Recorded {
            at: Instant::now(),
            headers: headers.clone(),
            body,
        });
    }

    /// The business rules, and the effect (circling the store) when they pass.
    fn decide(&self, body: &[u8], draw: Draw) -> Reply {
        let identity = match rules::check(
            body,
            self.config.malls.as_ref(),
            self.config.trades.as_ref(),
        ) {
            Ok(identity) => identity,
            Err(refused) => return refused,
        };
        let mut state = self.lock();
        let answer = state.register.circle(identity.clone());
        if draw.unknown_after_commit {
            return Reply::unknown();
        }
        if answer.code == Code::Success && state.register.success_sent(&identity) {
            state.stats.double_success += 1;
        }
        answer
    }

    /// Serialises the answer once and signs those exact bytes (or, for the bad-signature fault,
    /// other bytes, so that the signature is well-formed but does not verify). `uri` is the path
    /// the request named; the signed content says `POST` whatever the method was (the one
    /// method `signing::content` knows).
    fn answer(&self, uri: &str, answer: &Reply, bad_signature: bool) -> Response {
        {
            let mut state = self.lock();
            state.stats.count(answer.code.as_str());
            if answer.code == Code::Success {
                state.stats.success_answers += 1;
            }
        }
        tracing::debug!(code = answer.code.as_str(), bad_signature, "sandbox answer");
        let body = serde_json::to_vec(&answer.to_response())
            .expect("a struct of strings always serialises");
        let time = signing::hong_kong_iso8601(clock(self.config.clock_offset_secs));
        let mut signed = signing::content(uri, &self.config.client_id, &time, &body);
        if bad_signature {
            signed.push(b' ');
        }
        let signature = signing::sign_header(
            &self.config.alipay_private_key,
            "RSA256",
            &self.config.key_version,
            &signed,
        );
        let mut headers = HeaderMap::new();
        headers.insert("client-id", self.client_id_header.clone());
        headers.insert("response-time", ascii_header(time));
        headers.insert("signature", ascii_header(signature));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        let genuine_success = answer.code == Code::Success && !bad_signature;
        let body = Bytes::from(body);
        let mut response = (StatusCode::OK, headers, body.clone()).into_response();
        if genuine_success {
            response.extensions_mut().insert(SuccessBody(body));
        }
        response
    }
}

/// Checks `client-id`, the `signature` header (algorithm, key version, the signature itself over
/// the exact body bytes) and `request-time`, in the gateway's order.
fn authenticate(config: &SandboxConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), Reply> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |code, message: &str| Err(Reply::fail(code, message));
    if text("client-id") != Some(config.client_id.as_str()) {
        return refuse(
            Code::InvalidClient,
            "The client-id header is missing or not a known client.",
        );
    }
    let Some((raw, parsed)) =
        text("signature").and_then(|raw| Some((raw, signing::parse_signature_header(raw)?)))
    else {
        return refuse(
            Code::InvalidSignature,
            "The signature header is missing or not algorithm=...,keyVersion=...,signature=....",
        );
    };
    let algorithm_ok = parsed.algorithm.as_deref().is_some_and(|a| {
        a.eq_ignore_ascii_case("RSA256") || a.eq_ignore_ascii_case("sha256withrsa")
    });
    if !algorithm_ok {
        return refuse(
            Code::InvalidSignature,
            "The signature algorithm must be RSA256 (or sha256withrsa).",
        );
    }
    if parsed.key_version.as_deref() != Some(config.key_version.as_str()) {
        return refuse(
            Code::KeyNotFound,
            "No public key is registered for this keyVersion.",
        );
    }
    let Some(time) = text("request-time") else {
        return refuse(
            Code::InvalidSignature,
            "The request-time header is missing, so the signature cannot be checked.",
        );
    };
    if signing::verify(
        &config.client_public_key,
        API_PATH,
        &config.client_id,
        Some(time),
        body,
        Some(raw),
    )
    .is_err()
    {
        return refuse(
            Code::InvalidSignature,
            "The signature does not match the request (wrong key, or the body, time or client-id differ).",
        );
    }
    if let Some(max) = config.max_clock_skew {
        check_skew(time, clock(config.clock_offset_secs), max)
            .map_err(|message| Reply::fail(Code::InvalidSignature, message))?;
    }
    Ok(())
}

/// Refuses a `request-time` further than `max` from the gateway's clock `now`, saying how far.
fn check_skew(request_time: &str, now: DateTime<Utc>, max: Duration) -> Result<(), String> {
    let Ok(sent) = DateTime::parse_from_rfc3339(request_time) else {
        return Err(format!(
            "The request-time {request_time:?} is not an ISO-8601 time with an offset."
        ));
    };
    let apart = (sent.with_timezone(&Utc) - now).abs();
    let allowed = TimeDelta::from_std(max).unwrap_or(TimeDelta::MAX);
    if apart <= allowed {
        return Ok(());
    }
    Err(format!(
        "The request-time {request_time} is {} seconds from the gateway's clock, more than the {} \
         seconds allowed: check the client's clock.",
        apart.num_seconds(),
        allowed.num_seconds()
    ))
}

/// The sandbox's clock: now, shifted by the configured offset (checked at start to fit).
fn clock(offset_secs: i64) -> DateTime<Utc> {
    let now = Utc::now();
    TimeDelta::try_seconds(offset_secs)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// True when the request says nothing of its media type, or says JSON. What it says is all that
/// is checked: the gateway refuses a form or plain text before reading it.
fn json_or_unsaid(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let media = value.to_str().unwrap_or("").split(';').next().unwrap_or("");
    let media = media.trim();
    media.eq_ignore_ascii_case("application/json") || media.to_ascii_lowercase().ends_with("+json")
}

/// Header values the sandbox builds itself are ASCII; should one not be, an empty header is
/// sent (and fails verification) rather than a panic.
fn ascii_header(value: String) -> HeaderValue {
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn too_many_requests(retry_after_secs: u64, text: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    (StatusCode::TOO_MANY_REQUESTS, headers, format!("{text}\n")).into_response()
}

/// Every answer of the gateway, JSON or not, carries a fresh `Tracer-Id` and the sandbox's
/// `Date` (hyper adds its own `Date` only when the answer has none); a replayed answer keeps its
/// original ones. A genuine `SUCCESS` is recorded as it goes out, for the replay fault.
async fn gateway(AxumState(shared): AxumState<Arc<Gateway>>, request: Request) -> Response {
    let mut response = Arc::clone(&shared).route(request).await;
    let date = clock(shared.config.clock_offset_secs)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let headers = response.headers_mut();
    if !headers.contains_key("tracer-id") {
        headers.insert("tracer-id", ascii_header(shared.tracer_id()));
        headers.insert(DATE, ascii_header(date));
    }
    if let Some(SuccessBody(body)) = response.extensions_mut().remove::<SuccessBody>() {
        shared.record(response.headers(), body);
    }
    response
}

async fn stats(AxumState(shared): AxumState<Arc<Gateway>>) -> Response {
    json(&shared.stats())
}

async fn labels(AxumState(shared): AxumState<Arc<Gateway>>) -> Response {
    let labels: BTreeMap<String, String> = shared.lock().register.labels().into_iter().collect();
    json(&labels)
}

fn json(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("maps of strings and numbers always serialise");
    ([(CONTENT_TYPE, JSON)], body).into_response()
}

/// The body of the "dropped connection" fault: it fails before yielding a byte. hyper then closes
/// the connection without writing anything (the status line is still in its buffer), so the
/// client sees the connection closed before a response: a request error, not an HTTP status.
struct DroppedConnection;

impl http_body::Body for DroppedConnection {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))))
    }
}
