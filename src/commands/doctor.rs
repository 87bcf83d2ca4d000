//! `doctor`: checks everything a first real run needs, before a row is sent, and prints one line
//! a check with what to do. The support problems these APIs are known for come first: a wrong
//! public key, the two keys swapped, a key in a shape that cannot be read, the mainland gateway
//! instead of AlipayHK's, a clock that is off.
//!
//! ```text
//! pms-onboard doctor [--probe] [settings flags, as for run]
//! ```
//!
//! - settings: each with its value and where it came from (paths, never key content);
//! - keys: readable, format, size, permissions, the two not swapped, `alipay_public_key` not the
//!   public half of `private_key`;
//! - gateway: a URL, AlipayHK's host, DNS, TLS with this system's roots, an answer (a `GET` of
//!   the API path, which changes nothing), and this machine's clock against the answer's;
//! - ledger: its folder writable, not in use by a run, its rows by state and the last run;
//! - with `--probe`, one signed call that changes nothing: a body with every field empty, which
//!   the gateway refuses (`PARAM_ILLEGAL`) only after it has checked the signature. It proves
//!   that the gateway accepts the signature and that its answer verifies with
//!   `alipay_public_key`, and shows the answer's `Tracer-Id`.
//!
//! Exit 0 when no check failed (a warning is advice), 1 otherwise.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};

use super::exit;
use std::sync::Arc;

use crate::api::client::{Client, check_endpoint};
use crate::api::keys::{KeyError, PrivateKey, PublicKey};
use crate::api::outcome::{self, Outcome};
use crate::api::signing::API_PATH;
use crate::api::transport::{self, error_chain};
use crate::api::types::SaveResponse;
use crate::cli::DoctorArgs;
use crate::config::{Layers, RunSettings};
use crate::duration::{format as format_duration, parse as parse_duration};
use crate::input::{Row, SaveWay};
use crate::ledger::{self, queries};
use crate::output::Printer;

/// The settings a run cannot do without; the others have defaults.
const REQUIRED: [&str; 3] = ["client_id", "private_key", "alipay_public_key"];
/// A clock further than this from the gateway's fails: AlipayHK publishes no tolerance, and a
/// `request-time` minutes off is refused like a bad signature by gateways of this family.
const CLOCK_FAIL: Duration = Duration::from_secs(5 * 60);
/// Further than this is worth a warning (a `Date` header is only precise to the second).
const CLOCK_WARN: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("pms-onboard/", env!("CARGO_PKG_VERSION"), " doctor");

pub fn run(args: DoctorArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let mut out = Checks::new(printer);
    let layers = match Layers::resolve(&args.settings.flags(), args.settings.config.as_deref()) {
        Ok(layers) => layers,
        Err(e) => {
            out.heading("settings");
            out.fail("settings file", format!("{e:#}"));
            return Ok(out.finish());
        }
    };
    let settings = settings(&layers, &mut out);
    let keys = keys(&layers, &mut out);
    let timeout = layers
        .optional("timeout")
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(15));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoint = layers.optional("endpoint").unwrap_or_default().trim();
    let answered = runtime.block_on(gateway(endpoint, timeout, &mut out));
    ledger_checks(
        Path::new(layers.optional("ledger").unwrap_or_default()),
        &mut out,
    );
    if args.probe {
        out.heading("probe (one signed call that changes nothing)");
        match (&settings, keys, answered) {
            (Some(settings), Some((private, public)), true) => {
                runtime.block_on(probe(settings, private, public, &mut out));
            }
            _ => out.skip(
                "signature",
                "needs valid settings, both keys and an answer from the gateway: fix what failed \
                 above",
            ),
        }
    }
    Ok(out.finish())
}

/// One line a setting: its value and where it came from. A missing or bad one fails with the
/// message a run would stop with, which says how to set it.
fn settings(layers: &Layers, out: &mut Checks<'_>) -> Option<RunSettings> {
    match layers.config_file() {
        Some(path) => out.heading(&format!("settings (file {})", path.display())),
        None => out.heading("settings (no settings file)"),
    }
    let checked = RunSettings::from_layers(layers);
    let error = checked.as_ref().err().map(|e| format!("{e:#}"));
    let mut shown = false;
    let described = layers.describe();
    for name in REQUIRED {
        if let (false, Err(missing)) = (described.contains_key(name), layers.require(name)) {
            let missing = missing.to_string();
            shown |= error.as_deref() == Some(missing.as_str());
            out.fail(name, missing);
        }
    }
    for (name, value) in &described {
        match &error {
            // The error names the setting (`name`) and where its value came from.
            Some(e) if e.contains(&format!("`{name}`")) => {
                shown = true;
                out.fail(name, e);
            }
            _ => out.ok(name, value),
        }
    }
    if let (Some(e), false) = (&error, shown) {
        out.fail("settings", e);
    }
    checked.ok()
}

/// What a key file holds.
enum KeyFile<K> {
    /// The kind of key the setting wants, loaded.
    Usable(K),
    /// The other kind: the setting names the wrong half of a pair.
    OtherKind,
    /// Nothing usable; the reason is shown.
    Unusable,
}

/// The two key files, alone and as a pair; the keys when both are usable and not one pair.
fn keys(layers: &Layers, out: &mut Checks<'_>) -> Option<(PrivateKey, PublicKey)> {
    out.heading("keys");
    let private_path = layers.optional("private_key").map(PathBuf::from);
    let public_path = layers.optional("alipay_public_key").map(PathBuf::from);
    let private = match &private_path {
        Some(path) => key_file(&PRIVATE_KEY, path, out),
        None => {
            out.skip("private_key", "not set (see settings)");
            KeyFile::Unusable
        }
    };
    let public = match &public_path {
        Some(path) => key_file(&ALIPAY_PUBLIC_KEY, path, out),
        None => {
            out.skip("alipay_public_key", "not set (see settings)");
            KeyFile::Unusable
        }
    };
    let (Some(private_path), Some(public_path)) = (private_path, public_path) else {
        out.skip("key pair", "needs both keys");
        return None;
    };
    let (private_path, public_path) = (private_path.display(), public_path.display());
    match (private, public) {
        (KeyFile::Usable(private), KeyFile::Usable(public)) => {
            let content = b"pms-onboard doctor: are these two halves of one key pair?";
            if public.verify(content, &private.sign(content)) {
                out.fail(
                    "key pair",
                    format!(
                        "alipay_public_key ({public_path}) is the public half of your own \
                         private_key ({private_path}): set alipay_public_key to AlipayHK's public \
                         key, shown in the AlipayHK portal beside your client id (not the public \
                         key you uploaded there)"
                    ),
                );
                return None;
            }
            out.ok(
                "key pair",
                "alipay_public_key is not the public half of private_key (--probe proves it is \
                 AlipayHK's)",
            );
            Some((private, public))
        }
        (KeyFile::OtherKind, KeyFile::OtherKind) => {
            out.fail(
                "key pair",
                format!(
                    "swapped: private_key ({private_path}) holds a public key and \
                     alipay_public_key ({public_path}) a private key; exchange the two settings"
                ),
            );
            None
        }
        _ => {
            out.skip("key pair", "needs both keys");
            None
        }
    }
}

/// How one key setting is checked: the kind of key it must hold, and the other kind, which
/// means the setting names the wrong half of a pair.
struct Role<K> {
    name: &'static str,
    load: fn(&Path) -> Result<K, KeyError>,
    /// What the key is, for the `ok` line.
    describe: fn(&K) -> String,
    holds_other_kind: fn(&[u8]) -> bool,
    /// What the file holds instead, and what the setting is for.
    other_kind: &'static str,
    /// Only a private key's permissions matter.
    secret: bool,
}

const PRIVATE_KEY: Role<PrivateKey> = Role {
    name: "private_key",
    load: PrivateKey::from_file,
    // A signature is as long as the modulus.
    describe: |key| format!("RSA-{} private key", key.sign(b"size").len() * 8),
    holds_other_kind: |bytes| PublicKey::from_bytes(bytes).is_some(),
    other_kind: "a public key, not a private key: private_key is your own private key, whose \
                 public half you uploaded to the AlipayHK portal",
    secret: true,
};

const ALIPAY_PUBLIC_KEY: Role<PublicKey> = Role {
    name: "alipay_public_key",
    load: PublicKey::from_file,
    describe: |_| "RSA public key".to_owned(),
    holds_other_kind: |bytes| PrivateKey::from_bytes(bytes).is_some(),
    other_kind: "a private key, not a public key: alipay_public_key is AlipayHK's public key, \
                 from the AlipayHK portal",
    secret: false,
};

fn key_file<K>(role: &Role<K>, path: &Path, out: &mut Checks<'_>) -> KeyFile<K> {
    let Some(bytes) = read_key(role.name, path, out) else {
        return KeyFile::Unusable;
    };
    let shown = path.display();
    let format = format_of(&bytes);
    // Asked first, so that the wrong half is named as such (and a public key gets no word on its
    // permissions).
    if (role.holds_other_kind)(&bytes) {
        out.fail(
            role.name,
            format!("{shown} ({format}) holds {}", role.other_kind),
        );
        return KeyFile::OtherKind;
    }
    let file = match (role.load)(path) {
        Ok(key) => {
            out.ok(
                role.name,
                format!("{shown}: {}, {format}", (role.describe)(&key)),
            );
            KeyFile::Usable(key)
        }
        Err(e) => {
            out.fail(role.name, format!("{e}{}", shape_hint(&bytes)));
            KeyFile::Unusable
        }
    };
    if role.secret {
        permissions(path, out);
    }
    file
}

fn read_key(name: &str, path: &Path, out: &mut Checks<'_>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            out.fail(
                name,
                format!(
                    "cannot read {}: {e}: check the path in setting {name}",
                    path.display()
                ),
            );
            None
        }
    }
}

/// The format a key file is in, from its PEM label; never its content.
fn format_of(bytes: &[u8]) -> &'static str {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "DER";
    };
    let label = text
        .split_once("-----BEGIN ")
        .and_then(|(_, rest)| rest.split_once("-----"))
        .map(|(label, _)| label);
    match label {
        Some("PRIVATE KEY") => "PKCS#8 PEM",
        Some("RSA PRIVATE KEY") => "PKCS#1 PEM",
        Some("ENCRYPTED PRIVATE KEY") => "encrypted PKCS#8 PEM",
        Some("PUBLIC KEY") => "SPKI PEM",
        Some("RSA PUBLIC KEY") => "PKCS#1 PEM",
        Some("CERTIFICATE") => "an X.509 certificate",
        Some(_) => "PEM of another kind",
        None => "bare base64",
    }
}

/// Why a key file that names a format still cannot be read, where its shape says so.
fn shape_hint(bytes: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(bytes);
    if format_of(bytes) == "an X.509 certificate" {
        return "; it is a certificate: take the key out of it with \
                openssl x509 -in CERT -pubkey -noout > alipay_public.pem";
    }
    let joined = text.contains("-----BEGIN")
        && text
            .lines()
            .any(|line| !line.starts_with("-----") && line.trim().len() > 76);
    if joined {
        return "; its base64 was pasted as one line, and a PEM key needs its line breaks: paste \
                it again as the portal shows it, or wrap it with fold -w 64";
    }
    ""
}

#[cfg(unix)]
fn permissions(path: &Path, out: &mut Checks<'_>) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    let shown = path.display();
    if mode & 0o077 != 0 {
        out.fail(
            "permissions",
            format!(
                "{shown} is open to other users of this machine (mode {mode:o}): run chmod 600 \
                 {shown}"
            ),
        );
    } else {
        out.ok(
            "permissions",
            format!("{shown}: only its owner can read it (mode {mode:o})"),
        );
    }
}

#[cfg(not(unix))]
fn permissions(_path: &Path, _out: &mut Checks<'_>) {}

/// Whose gateway a host is.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    AlipayHk,
    /// A sandbox on this machine.
    ThisMachine,
    /// Alipay's gateways for mainland China and other regions: the same signature scheme, so a
    /// wrong endpoint there fails like a wrong key.
    OtherAlipay,
    Unknown,
}

impl Host {
    fn of(url: &url::Url) -> Host {
        match url.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Host::ThisMachine,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Host::ThisMachine,
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let under = |domain: &str| name == domain || name.ends_with(&format!(".{domain}"));
                if name == "open.alipay.hk" {
                    Host::AlipayHk
                } else if name == "localhost" {
                    Host::ThisMachine
                } else if [
                    "alipay.com",
                    "alipaydev.com",
                    "alipayplus.com",
                    "alipay.net",
                ]
                .into_iter()
                .any(under)
                {
                    Host::OtherAlipay
                } else {
                    Host::Unknown
                }
            }
            _ => Host::Unknown,
        }
    }
}

/// The endpoint, step by step; true when the gateway answered (the probe needs that).
async fn gateway(endpoint: &str, timeout: Duration, out: &mut Checks<'_>) -> bool {
    out.heading("gateway");
    let url = match check_endpoint(endpoint) {
        Ok(url) => url,
        Err(e) => {
            out.fail("endpoint", e);
            out.skip_each(
                &["host", "DNS", "answer", "clock"],
                "needs a valid endpoint",
            );
            return false;
        }
    };
    match url.scheme() {
        "https" => out.ok("endpoint", endpoint),
        _ => out.ok(
            "endpoint",
            format!("{endpoint} (plain http: allowed to this machine only)"),
        ),
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match Host::of(&url) {
        Host::AlipayHk => out.ok("host", format!("{host} is AlipayHK's gateway")),
        Host::ThisMachine => out.ok(
            "host",
            format!("{host} is this machine: a sandbox, nothing real is sent"),
        ),
        Host::OtherAlipay => {
            out.fail(
                "host",
                format!(
                    "{host} is an Alipay gateway for mainland China or other regions, not \
                     AlipayHK's: set endpoint to https://open.alipay.hk"
                ),
            );
            out.skip_each(
                &["DNS", "TLS", "answer", "clock"],
                "the endpoint is the wrong gateway",
            );
            return false;
        }
        Host::Unknown => out.warn(
            "host",
            format!(
                "{host} is not AlipayHK's gateway (open.alipay.hk): fine for a test gateway or a \
                 relay, but a real run must reach https://open.alipay.hk"
            ),
        ),
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let connect_limit = timeout.min(Duration::from_secs(10));
    if transport::proxied(&url) {
        out.ok(
            "proxy",
            "requests go through the proxy the environment names (HTTPS_PROXY, HTTP_PROXY or \
             ALL_PROXY), which looks the host up and connects",
        );
    } else {
        if !dns(&url, &host, port, connect_limit, out).await {
            let later: &[&str] = match url.scheme() {
                "https" => &["TLS", "answer", "clock"],
                _ => &["answer", "clock"],
            };
            out.skip_each(later, "needs the host's address");
            return false;
        }
        if url.scheme() == "https" && !tls(&host, port, connect_limit, out).await {
            out.skip_each(&["answer", "clock"], "needs a TLS connection");
            return false;
        }
    }
    let Some(answer) = answer(endpoint, timeout, out).await else {
        out.skip("clock", "needs an answer from the gateway");
        return false;
    };
    clock(&answer, out);
    true
}

async fn dns(url: &url::Url, host: &str, port: u16, limit: Duration, out: &mut Checks<'_>) -> bool {
    if !matches!(url.host(), Some(url::Host::Domain(_))) {
        out.ok(
            "DNS",
            format!("{host} is an IP address: nothing to look up"),
        );
        return true;
    }
    match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => {
            let mut addresses: Vec<String> = found.map(|a| a.ip().to_string()).collect();
            addresses.dedup();
            if addresses.is_empty() {
                out.fail("DNS", format!("{host} has no address: check endpoint"));
                return false;
            }
            out.ok("DNS", format!("{host} is {}", addresses.join(", ")));
            true
        }
        Ok(Err(e)) => {
            out.fail(
                "DNS",
                format!(
                    "{host} cannot be looked up ({e}): check the host in endpoint, and this \
                     machine's DNS; a network that goes out only through a proxy needs \
                     HTTPS_PROXY"
                ),
            );
            false
        }
        Err(_) => {
            out.fail(
                "DNS",
                format!(
                    "no address for {host} within {}: check this machine's DNS",
                    format_duration(limit)
                ),
            );
            false
        }
    }
}

/// A TLS handshake as a run makes it (`transport::tls`: rustls, this system's roots).
async fn tls(host: &str, port: u16, limit: Duration, out: &mut Checks<'_>) -> bool {
    let handshake = async {
        let (connector, name) = transport::tls(host).map_err(|e| format!("{e:#}"))?;
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {host}:{port}: {}: check endpoint, and that this machine \
                     may reach it (a firewall; a proxy needs HTTPS_PROXY)",
                    error_chain(&e)
                )
            })?;
        let stream = connector.connect(name, tcp).await.map_err(|e| {
            format!(
                "the TLS handshake with {host} failed: {}: a proxy or firewall that inspects TLS \
                 needs its root certificate in this system's store; otherwise endpoint is not \
                 the gateway",
                error_chain(&e)
            )
        })?;
        Ok::<_, String>(stream.get_ref().1.protocol_version())
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(version)) => {
            let version = version.map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
            out.ok(
                "TLS",
                format!("{version} with {host}, its certificate trusted by this system's roots"),
            );
            true
        }
        Ok(Err(e)) => {
            out.fail("TLS", e);
            false
        }
        Err(_) => {
            out.fail(
                "TLS",
                format!(
                    "no TLS connection to {host}:{port} within {}: check endpoint and the network",
                    format_duration(limit)
                ),
            );
            false
        }
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

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(USER_AGENT)
        .build()?)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    let value = response.headers().get(name)?;
    value.to_str().ok().map(str::to_owned)
}

fn api_url(endpoint: &str) -> String {
    format!("{}{API_PATH}", endpoint.trim_end_matches('/'))
}

/// A `GET` of the API path: any HTTP answer shows the gateway is reachable, and a gateway
/// answers it without doing anything (`METHOD_NOT_SUPPORTED`).
async fn answer(endpoint: &str, timeout: Duration, out: &mut Checks<'_>) -> Option<Answered> {
    let target = api_url(endpoint);
    let sent = Utc::now();
    let started = Instant::now();
    let response = match http_client(timeout) {
        Ok(http) => http.get(&target).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                format!("no answer within {}", format_duration(timeout))
            } else {
                error_chain(&e)
            };
            format!(
                "no answer from {endpoint}: {why}: check endpoint (host and port), and that this \
                 machine may reach it (a firewall; a proxy needs HTTPS_PROXY)"
            )
        }),
        Err(e) => Err(format!("{e:#}")),
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            out.fail("answer", e);
            return None;
        }
    };
    let round_trip = started.elapsed();
    let status = response.status().as_u16();
    let header = |name: &str| header(&response, name);
    let answered = Answered {
        sent,
        round_trip,
        date: header("date"),
        response_time: header("response-time"),
    };
    let tracer = header("tracer-id")
        .map(|t| format!(", Tracer-Id {t}"))
        .unwrap_or_default();
    let body = response.bytes().await.unwrap_or_default();
    let code = serde_json::from_slice::<SaveResponse>(&body)
        .ok()
        .map(|r| r.result.result_code);
    let said = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let ms = round_trip.as_millis();
    if status == 404 || code.as_deref() == Some("INVALID_API") {
        out.warn(
            "answer",
            format!(
                "HTTP {status}{said} in {ms} ms{tracer}: the gateway does not know the \
                 Collect-PMS API at {target}; endpoint must be the gateway's base URL, with no \
                 path"
            ),
        );
    } else {
        out.ok(
            "answer",
            format!(
                "HTTP {status}{said} in {ms} ms to a GET of the API path (which changes \
                 nothing){tracer}"
            ),
        );
    }
    Some(answered)
}

/// This machine's clock against the gateway's: its `response-time` (milliseconds) or else its
/// `Date` (seconds), taken to be halfway through the exchange.
fn clock(answer: &Answered, out: &mut Checks<'_>) {
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
            out.warn(
                "clock",
                "the gateway's answer has neither a response-time nor a Date header: the clock \
                 is not checked",
            );
            return;
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
            human(apart)
        )
    };
    if apart > CLOCK_FAIL {
        out.fail(
            "clock",
            format!(
                "{words}: set this machine's clock (turn on network time, NTP); a request-time \
                 that far off is refused like a bad signature"
            ),
        );
    } else if apart > CLOCK_WARN {
        out.warn(
            "clock",
            format!("{words}: turn on network time (NTP) before it drifts further"),
        );
    } else {
        out.ok("clock", words);
    }
}

/// `0.3 s`, `4 min 10 s`, `1 h 0 min 2 s` (to the nearest second from a minute on).
fn human(d: Duration) -> String {
    let secs = d.as_secs_f64().round() as u64;
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, _) => format!("{:.1} s", d.as_secs_f64()),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, s) => format!("{h} h {m} min {s} s"),
    }
}

fn ledger_checks(path: &Path, out: &mut Checks<'_>) {
    out.heading("ledger");
    if let Some(url) = path.to_str().filter(|p| ledger::postgres::is_url(p)) {
        return postgres_checks(url, out);
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let shown = path.display();
    // A scratch file, removed at once, is the one sure test of "can a run create files here"
    // (SQLite needs its -wal and -shm files beside the ledger).
    match tempfile::Builder::new()
        .prefix(".pms-onboard-doctor-")
        .tempfile_in(&folder)
    {
        Ok(_scratch) => out.ok("folder", format!("{} is writable", folder.display())),
        Err(e) => out.fail(
            "folder",
            format!(
                "cannot create files in {}: {e}: run from a folder you can write to, or set \
                 ledger to a path in one",
                folder.display()
            ),
        ),
    }
    if !path.exists() {
        out.ok(
            "ledger",
            format!("{shown} does not exist yet: the first run creates it"),
        );
        return;
    }
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
        out.fail(
            "ledger",
            format!("{shown} cannot be written: {e}: give this user write access to it"),
        );
    }
    match not_in_use(path) {
        Ok(()) => out.ok("in use", format!("no run is using {shown}")),
        Err(e) => out.fail("in use", format!("{e:#}")),
    }
    let state = ledger::open_existing(path).and_then(|conn| Ok(queries::status(&conn, 1)?));
    match state {
        Ok(c) => {
            let last = c.last_runs.first().map_or_else(
                || "no run yet".to_owned(),
                |r| format!("last run #{} started {}, {}", r.id, r.started_at, r.outcome),
            );
            out.ok(
                "state",
                format!(
                    "{} rows: {} succeeded, {} already circled, {} pending, {} in flight, {} \
                     failed; {last}",
                    c.total, c.succeeded, c.already_circled, c.pending, c.in_flight, c.failed
                ),
            );
        }
        Err(e) => out.fail(
            "state",
            format!("{e:#}: is it a pms-onboard ledger? set ledger to the right file"),
        ),
    }
}

/// A PostgreSQL ledger: the connection and the server's version, the schema, the clock
/// difference with the server, the runs holding a lease, and the rows by state.
fn postgres_checks(url: &str, out: &mut Checks<'_>) {
    let shown = ledger::postgres::redacted(url);
    let c = match ledger::postgres::check(url) {
        Ok(c) => c,
        Err(e) => {
            out.fail("connection", format!("{e:#}"));
            return out.skip_each(&["schema", "clock", "in use", "state"], "no connection");
        }
    };
    out.ok("connection", format!("{shown}: {}", c.version));
    let latest = ledger::postgres::migrate::latest();
    match c.schema == latest {
        true => out.ok("schema", format!("at version {latest}, this program's")),
        false => out.fail(
            "schema",
            format!("at version {}, this program's is {latest}", c.schema),
        ),
    }
    // Leases and the shared rate are on the server's clock; the times the ledger records are
    // this host's.
    let (size, ahead) = c.clock;
    let detail = format!(
        "the server's clock is {} {} this host's",
        human(size),
        if ahead { "ahead of" } else { "behind" }
    );
    match size > Duration::from_secs(5) {
        true => out.warn(
            "clock",
            format!(
                "{detail}: leases and the rate use the server's clock, but the times this host \
                 records are its own: set this host's clock (NTP)"
            ),
        ),
        false => out.ok("clock", detail),
    }
    match c.live.is_empty() {
        true => out.ok("in use", "no run holds a lease"),
        false => out.ok(
            "in use",
            format!(
                "{} run(s) hold a lease now (a shared ledger may be used by several): {}",
                c.live.len(),
                c.live
                    .iter()
                    .map(|(id, holder)| format!("run {id} ({holder})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    match ledger::open_existing(Path::new(url)).and_then(|conn| Ok(queries::status(&conn, 1)?)) {
        Ok(s) => out.ok(
            "state",
            format!(
                "{} rows: {} succeeded, {} already circled, {} pending, {} in flight, {} failed",
                s.total, s.succeeded, s.already_circled, s.pending, s.in_flight, s.failed
            ),
        ),
        Err(e) => out.fail("state", format!("{e:#}")),
    }
}

/// Whether a run holds the ledger, asked as a run asks: by taking its lock and letting it go at
/// once (the lock is on the file itself, whatever path names it). A ledger not there yet is not
/// in use, and is not created.
fn not_in_use(ledger: &Path) -> anyhow::Result<()> {
    if !ledger.exists() {
        return Ok(());
    }
    ledger::LedgerLock::acquire(ledger)
        .map(drop)
        .map_err(Into::into)
}

/// One signed call that changes nothing: `MERCHANT_PMS` with every field empty, sent by the
/// same client a run uses. The gateway checks the signature first, so its refusal of the body
/// proves the signature was accepted; the answer's own signature proves `alipay_public_key`.
async fn probe(s: &RunSettings, private: PrivateKey, public: PublicKey, out: &mut Checks<'_>) {
    let client = Client::new(s.client_settings(), Arc::new(private), Arc::new(public));
    let client = match client {
        Ok(c) => c,
        Err(e) => return out.fail("signature", format!("{e:#}")),
    };
    let empty = Row {
        save_way: SaveWay::MerchantPms,
        ipay_trade_no: String::new(),
        partner_id: String::new(),
        merchant_id: String::new(),
        merchant_name: String::new(),
        store_id: String::new(),
        store_name: String::new(),
        mall_group_label: String::new(),
        mall_label: String::new(),
    };
    let a = client.send(&empty).await;
    let tracer = a.tracer_id.as_deref().map_or_else(
        || " (the answer has no Tracer-Id)".to_owned(),
        |t| format!(" (Tracer-Id {t})"),
    );
    let said = format!(
        "{} ({}){tracer}",
        a.result_code.as_deref().unwrap_or("?"),
        a.result_message.as_deref().unwrap_or("")
    );
    let key = s.alipay_public_key.display();
    let settings = format!(
        "client_id {}, key_version {}, signature_algorithm {}, private_key {}",
        s.client_id,
        s.key_version,
        s.signature_algorithm,
        s.private_key.display()
    );
    // What the answer says of the request's signature, believed or not (a wrong key of
    // AlipayHK's does not make a refusal of the body mean anything else)...
    let claimed = match (&a.outcome, &a.result_code) {
        (Outcome::Unverified { .. }, Some(code)) => outcome::classify_result(
            code,
            a.result_status.as_deref().unwrap_or(""),
            a.result_message.as_deref().unwrap_or(""),
            a.pms_label.as_deref(),
        ),
        (other, _) => other.clone(),
    };
    match &claimed {
        Outcome::Fatal { code, .. } => out.fail(
            "signature",
            format!("{said}: {} (now: {settings})", outcome::what_to_check(code)),
        ),
        Outcome::Success { .. } | Outcome::AlreadyCircled => out.fail(
            "signature",
            format!(
                "{said}: the gateway accepted a body with every field empty, which AlipayHK's \
                 gateway refuses: endpoint is not AlipayHK's; ask AlipayHK support before a real run"
            ),
        ),
        Outcome::Throttled { .. }
        | Outcome::Transient { .. }
        | Outcome::Unverified { .. }
        | Outcome::NotThisRequest { .. } => {
            out.warn(
                "signature",
                format!(
                    "{}: the gateway is busy or failing; run pms-onboard doctor --probe again",
                    a.error.as_deref().unwrap_or(&said)
                ),
            )
        }
        Outcome::Permanent { code, .. } if code.starts_with("HTTP_") => out.fail(
            "signature",
            format!(
                "the gateway answered HTTP {}, not the documented JSON{tracer}: endpoint is not \
                 AlipayHK's gateway, or a proxy answers for it",
                a.http_status.unwrap_or(0)
            ),
        ),
        Outcome::Permanent { .. } => out.ok(
            "signature",
            format!(
                "accepted: the gateway checked it, then refused the empty body as it must: {said}"
            ),
        ),
    }
    // ...and whether the answer is AlipayHK's.
    match a.verified {
        Some(true) => out.ok(
            "answer signature",
            format!("the answer verifies with alipay_public_key ({key})"),
        ),
        Some(false) => out.fail(
            "answer signature",
            format!(
                "the answer does not verify with alipay_public_key ({key}): {}. Download \
                 AlipayHK's public key again from the portal (it may have been rotated), or find \
                 the proxy that rewrites or strips answers",
                a.error.as_deref().unwrap_or("its signature does not match")
            ),
        ),
        None => {}
    }
}

/// The lines `doctor` prints, and the tally the exit code and the last line come from.
struct Checks<'p> {
    printer: &'p Printer,
    passed: usize,
    warned: usize,
    failed: usize,
    headings: usize,
}

impl<'p> Checks<'p> {
    fn new(printer: &'p Printer) -> Self {
        Checks {
            printer,
            passed: 0,
            warned: 0,
            failed: 0,
            headings: 0,
        }
    }

    fn heading(&mut self, title: &str) {
        if self.headings > 0 {
            self.printer.out("\n");
        }
        self.headings += 1;
        self.printer.out_line(title);
    }

    fn line(&self, word: &str, name: &str, detail: impl Display) {
        self.printer
            .out_line(&format!("  {word:<4}  {name:<19}  {detail}"));
    }

    fn ok(&mut self, name: &str, detail: impl Display) {
        self.passed += 1;
        self.line("ok", name, detail);
    }

    fn warn(&mut self, name: &str, detail: impl Display) {
        self.warned += 1;
        self.line("warn", name, detail);
    }

    fn fail(&mut self, name: &str, detail: impl Display) {
        self.failed += 1;
        self.line("FAIL", name, detail);
    }

    /// A check that could not run because an earlier one failed (which is counted there).
    fn skip(&mut self, name: &str, why: &str) {
        self.line("skip", name, why);
    }

    fn skip_each(&mut self, names: &[&str], why: &str) {
        for name in names {
            self.skip(name, why);
        }
    }

    fn finish(self) -> ExitCode {
        self.printer.out("\n");
        let warnings = match self.warned {
            0 => String::new(),
            1 => ", 1 warning".to_owned(),
            n => format!(", {n} warnings"),
        };
        if self.failed == 0 {
            self.printer.out_line(&format!(
                "doctor: {} checks ok{warnings}: ready for a first real run",
                self.passed
            ));
            return ExitCode::SUCCESS;
        }
        self.printer.out_line(&format!(
            "doctor: {} FAILED, {} ok{warnings}: fix what FAILED and run pms-onboard doctor again",
            self.failed, self.passed
        ));
        ExitCode::from(exit::FATAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_apart() {
        let host = |u: &str| Host::of(&url::Url::parse(u).unwrap());
        assert_eq!(host("https://open.alipay.hk"), Host::AlipayHk);
        assert_eq!(host("https://OPEN.ALIPAY.HK./"), Host::AlipayHk);
        for other in [
            "https://openapi.alipay.com",
            "https://open-na.alipay.com",
            "https://open-sea-global.alipay.com",
            "https://openapi.alipaydev.com",
            "https://open-sea.alipayplus.com",
        ] {
            assert_eq!(host(other), Host::OtherAlipay, "{other}");
        }
        for local in [
            "http://127.0.0.1:8765",
            "http://[::1]:1",
            "http://localhost:1",
        ] {
            assert_eq!(host(local), Host::ThisMachine, "{local}");
        }
        for unknown in [
            "https://gateway.example.com",
            "https://notalipay.com",
            "https://open-sea.alipay.hk",
        ] {
            assert_eq!(host(unknown), Host::Unknown, "{unknown}");
        }
    }

    #[test]
    fn formats_are_named_from_the_label_and_a_joined_pem_is_spotted() {
        assert_eq!(
            format_of(b"-----BEGIN PRIVATE KEY-----\nAA\n"),
            "PKCS#8 PEM"
        );
        assert_eq!(
            format_of(b"-----BEGIN RSA PRIVATE KEY-----\n"),
            "PKCS#1 PEM"
        );
        assert_eq!(format_of(b"-----BEGIN PUBLIC KEY-----\n"), "SPKI PEM");
        assert_eq!(
            format_of(b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
            "bare base64"
        );
        assert_eq!(format_of(b"\x30\x82\xff\x01"), "DER");
        let joined = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "A".repeat(1600)
        );
        assert!(shape_hint(joined.as_bytes()).contains("fold -w 64"));
        let wrapped = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "A".repeat(64)
        );
        assert_eq!(shape_hint(wrapped.as_bytes()), "");
        assert!(shape_hint(b"-----BEGIN CERTIFICATE-----\nAA\n").contains("x509"));
    }

    #[test]
    fn offsets_read_as_a_person_says_them() {
        assert_eq!(human(Duration::from_millis(300)), "0.3 s");
        assert_eq!(human(Duration::from_secs(250)), "4 min 10 s");
        assert_eq!(human(Duration::from_secs(3602)), "1 h 0 min 2 s");
        assert_eq!(human(Duration::from_millis(3_599_700)), "1 h 0 min 0 s");
    }
}
