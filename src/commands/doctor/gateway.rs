//! The endpoint, step by step: a URL, whose host it is (`api::checks::host`, as a run judges
//! it), DNS, TLS with this system's roots, an answer to a `GET` of the API path (which changes
//! nothing), and this machine's clock against the answer's.
//!
//! The network is reached in three functions only, at the end of this file ([`proxied`],
//! [`tls_handshake`], [`http_get`]), so that the way requests leave can change in one place.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::{Check, Group};
use crate::api::checks::{self, Level};
use crate::api::client::check_endpoint;
use crate::api::http::{self, error_chain};
use crate::api::outcome::MAX_BODY;
use crate::api::signing::API_PATH;
use crate::api::types::SaveResponse;
use crate::duration::format as format_duration;

/// A clock further than this from the gateway's fails: AlipayHK publishes no tolerance, and a
/// `request-time` minutes off is refused like a bad signature by gateways of this family.
const CLOCK_FAIL: Duration = Duration::from_secs(5 * 60);
/// Further than this is worth a warning (a `Date` header is only precise to the second).
const CLOCK_WARN: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("pms-onboard/", env!("CARGO_PKG_VERSION"), " doctor");

/// The gateway's group; true when the gateway answered (the probe needs that).
pub async fn checks(endpoint: &str, timeout: Duration) -> (Group, bool) {
    let mut group = Group::new("gateway", "gateway");
    let answered = steps(endpoint, timeout, &mut group).await;
    (group, answered)
}

async fn steps(endpoint: &str, timeout: Duration, group: &mut Group) -> bool {
    let url = match check_endpoint(endpoint) {
        Ok(url) => url,
        Err(e) => {
            group.push(Check::fail("endpoint", e.to_string()));
            group.skip_each(
                &["host", "DNS", "answer", "clock"],
                "needs a valid endpoint",
            );
            return false;
        }
    };
    match url.scheme() {
        "https" => group.push(Check::ok("endpoint", endpoint)),
        _ => group.push(Check::ok(
            "endpoint",
            format!("{endpoint} (plain http: allowed to this machine only)"),
        )),
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let found = checks::host(&url);
    let wrong_gateway = found.level == Level::Fail;
    group.push(Check::new("host", found));
    if wrong_gateway {
        group.skip_each(
            &["DNS", "TLS", "answer", "clock"],
            "the endpoint is the wrong gateway",
        );
        return false;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let connect_limit = timeout.min(Duration::from_secs(10));
    if proxied(&url) {
        group.push(Check::ok(
            "proxy",
            "requests go through the proxy the environment names (HTTPS_PROXY, HTTP_PROXY or \
             ALL_PROXY), which looks the host up and connects",
        ));
    } else {
        let found = dns(&url, &host, port, connect_limit).await;
        let resolved = found.level() == Level::Ok;
        group.push(found);
        if !resolved {
            let later: &[&str] = match url.scheme() {
                "https" => &["TLS", "answer", "clock"],
                _ => &["answer", "clock"],
            };
            group.skip_each(later, "needs the host's address");
            return false;
        }
        if url.scheme() == "https" {
            let found = tls(&host, port, connect_limit).await;
            let connected = found.level() == Level::Ok;
            group.push(found);
            if !connected {
                group.skip_each(&["answer", "clock"], "needs a TLS connection");
                return false;
            }
        }
    }
    let (found, answer) = answer(endpoint, timeout).await;
    group.push(found);
    let Some(answer) = answer else {
        group.push(Check::skip("clock", "needs an answer from the gateway"));
        return false;
    };
    group.push(clock(&answer));
    true
}

async fn dns(url: &url::Url, host: &str, port: u16, limit: Duration) -> Check {
    if !matches!(url.host(), Some(url::Host::Domain(_))) {
        return Check::ok(
            "DNS",
            format!("{host} is an IP address: nothing to look up"),
        );
    }
    match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => {
            let mut addresses: Vec<String> = found.map(|a| a.ip().to_string()).collect();
            addresses.dedup();
            if addresses.is_empty() {
                return Check::fail_with("DNS", format!("{host} has no address"), "check endpoint");
            }
            Check::ok("DNS", format!("{host} is {}", addresses.join(", ")))
        }
        Ok(Err(e)) => Check::fail_with(
            "DNS",
            format!("{host} cannot be looked up ({e})"),
            "check the host in endpoint, and this machine's DNS; a network that goes out only \
             through a proxy needs HTTPS_PROXY",
        ),
        Err(_) => Check::fail_with(
            "DNS",
            format!("no address for {host} within {}", format_duration(limit)),
            "check this machine's DNS",
        ),
    }
}

async fn tls(host: &str, port: u16, limit: Duration) -> Check {
    match tokio::time::timeout(limit, tls_handshake(host, port)).await {
        Ok(Ok(version)) => Check::ok(
            "TLS",
            format!("{version} with {host}, its certificate trusted by this system's roots"),
        ),
        Ok(Err(e)) => Check::fail("TLS", e),
        Err(_) => Check::fail_with(
            "TLS",
            format!(
                "no TLS connection to {host}:{port} within {}",
                format_duration(limit)
            ),
            "check endpoint and the network",
        ),
    }
}

/// What the gateway's answer to the plain `GET` said about its clock.
struct Answered {
    /// When the request left, by this machine's clock.
    sent: DateTime<Utc>,
    round_trip: Duration,
    date: Option<String>,
    response_time: Option<String>,
}

/// The `GET` of the API path: any HTTP answer shows the gateway is reachable, and a gateway
/// answers it without doing anything (`METHOD_NOT_SUPPORTED`).
async fn answer(endpoint: &str, timeout: Duration) -> (Check, Option<Answered>) {
    let target = format!("{}{API_PATH}", endpoint.trim_end_matches('/'));
    let sent = Utc::now();
    let started = Instant::now();
    let got = match http_get(&target, timeout).await {
        Ok(got) => got,
        Err(why) => {
            let check = Check::fail_with(
                "answer",
                format!("no answer from {endpoint}: {why}"),
                "check endpoint (host and port), and that this machine may reach it (a \
                 firewall; a proxy needs HTTPS_PROXY)",
            );
            return (check, None);
        }
    };
    let round_trip = started.elapsed();
    let answered = Answered {
        sent,
        round_trip,
        date: got.date,
        response_time: got.response_time,
    };
    let tracer = got
        .tracer_id
        .map(|t| format!(", Tracer-Id {t}"))
        .unwrap_or_default();
    let code = serde_json::from_slice::<SaveResponse>(&got.body)
        .ok()
        .map(|r| r.result.result_code);
    let said = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let ms = round_trip.as_millis();
    let status = got.status;
    let check = if status == 404 || code.as_deref() == Some("INVALID_API") {
        Check::warn(
            "answer",
            format!(
                "HTTP {status}{said} in {ms} ms{tracer}: the gateway does not know the \
                 Collect-PMS API at {target}"
            ),
            "endpoint must be the gateway's base URL, with no path",
        )
    } else {
        Check::ok(
            "answer",
            format!(
                "HTTP {status}{said} in {ms} ms to a GET of the API path (which changes \
                 nothing){tracer}"
            ),
        )
    };
    (check, Some(answered))
}

/// This machine's clock against the gateway's: its `response-time` (milliseconds) or else its
/// `Date` (seconds), taken to be halfway through the exchange.
fn clock(answer: &Answered) -> Check {
    let halfway = TimeDelta::from_std(answer.round_trip / 2).unwrap_or_default();
    let local = answer.sent + halfway;
    let response_time = answer
        .response_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    // A `Date` is the second in which the answer was made: its middle is the best guess.
    let date = answer
        .date
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
        .and_then(|d| d.checked_add_signed(TimeDelta::milliseconds(500)));
    let (theirs, source) = match (response_time, date) {
        (Some(t), _) => (t.to_utc(), "response-time"),
        (None, Some(d)) => (d.to_utc(), "Date header"),
        (None, None) => {
            return Check::warn(
                "clock",
                "the gateway's answer has neither a response-time nor a Date header",
                "the clock is not checked",
            );
        }
    };
    let offset = theirs - local;
    let apart = offset.abs().to_std().unwrap_or(Duration::MAX);
    let side = if offset > TimeDelta::zero() {
        "behind"
    } else {
        "ahead of"
    };
    let words = if apart < Duration::from_millis(100) {
        format!("this machine's clock agrees with the gateway's (its {source})")
    } else {
        format!(
            "this machine's clock is {} {side} the gateway's (its {source})",
            crate::duration::human(apart)
        )
    };
    if apart > CLOCK_FAIL {
        Check::fail_with(
            "clock",
            words,
            "set this machine's clock (turn on network time, NTP); a request-time that far off \
             is refused like a bad signature",
        )
    } else if apart > CLOCK_WARN {
        Check::warn(
            "clock",
            words,
            "turn on network time (NTP) before it drifts further",
        )
    } else {
        Check::ok("clock", words)
    }
}

// The network, in three functions: whether requests go through a proxy, a TLS handshake as a
// run makes it, and one GET.

/// Whether requests to `url` go through the proxy the environment names.
fn proxied(url: &url::Url) -> bool {
    http::proxied(url)
}

/// A TLS handshake as a run makes it (`http::tls`: rustls, this system's roots): the
/// protocol version, or what failed and what to do.
async fn tls_handshake(host: &str, port: u16) -> Result<String, String> {
    let (connector, name) = http::tls(host).map_err(|e| format!("{e:#}"))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {host}:{port}: {}: check endpoint, and that this machine may \
                 reach it (a firewall; a proxy needs HTTPS_PROXY)",
                error_chain(&e)
            )
        })?;
    let stream = connector.connect(name, tcp).await.map_err(|e| {
        format!(
            "the TLS handshake with {host} failed: {}: a proxy or firewall that inspects TLS \
             needs its root certificate in this system's store; otherwise endpoint is not the \
             gateway",
            error_chain(&e)
        )
    })?;
    Ok(stream
        .get_ref()
        .1
        .protocol_version()
        .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}")))
}

/// What the `GET` brought back.
struct Got {
    status: u16,
    date: Option<String>,
    response_time: Option<String>,
    tracer_id: Option<String>,
    body: Vec<u8>,
}

/// The one HTTP request `doctor` makes itself (the probe sends through the run's client): a
/// `GET` of `target`; why there was no answer, in words, when there was none.
async fn http_get(target: &str, timeout: Duration) -> Result<Got, String> {
    let client = http::client(timeout, USER_AGENT).map_err(|e| format!("{e:#}"))?;
    let mut response = client.get(target).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {}", format_duration(timeout))
        } else {
            error_chain(&e)
        }
    })?;
    let header = |name: &str| {
        let value = response.headers().get(name)?;
        value.to_str().ok().map(str::to_owned)
    };
    let (date, response_time, tracer_id) =
        (header("date"), header("response-time"), header("tracer-id"));
    let status = response.status().as_u16();
    // An answer longer than any the gateway gives is not read further.
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            break;
        }
    }
    Ok(Got {
        status,
        date,
        response_time,
        tracer_id,
        body,
    })
}
