//! The sandbox: a local simulator of the AlipayHK Collect-PMS gateway (SPEC section 6), for the
//! demo, the tests and the benchmarks.
//!
//! It owns everything the simulated gateway does and nothing the client does: it verifies
//! requests and signs answers with the same `api::signing` code the client uses, applies the
//! documented business rules to an in-memory register of circled stores, injects seeded faults,
//! enforces an optional rate limit, and counts what happened (`GET /sandbox/stats`).
//!
//! One request to the gateway (any path but `/sandbox/...`) goes through, in this order: a path
//! outside `/api/` is a plain HTTP 404 and nothing more; it is counted (and its arrival instant
//! kept for `max_requests_in_one_second`); the outage (`--outage-ms`: HTTP 503 or
//! `UNKNOWN_EXCEPTION`); the rate limit (HTTP 429, or `REQUEST_TRAFFIC_EXCEED_LIMIT`/`U`);
//! routing (`INVALID_API` for another path under `/api/`, `METHOD_NOT_SUPPORTED` for a method
//! other than POST, `MEDIA_TYPE_NOT_ACCEPTABLE` for a content type other than JSON); the faults,
//! all drawn at once from one seeded generator (latency, hang, reset, HTTP 500, HTTP 429,
//! `UNKNOWN_EXCEPTION`, an injected code); authentication (`INVALID_CLIENT`,
//! `INVALID_SIGNATURE`, `KEY_NOT_FOUND`, and with `--max-clock-skew` a `request-time` too far
//! from the sandbox's clock); the business rules and, when they pass, the effect (the store is
//! circled); then the unknown-after-commit and bad-signature faults change the answer. Every
//! JSON answer (HTTP 200) is signed with the simulated gateway's key over the exact bytes sent
//! and the path the request named; its `client-id` header is the configured client id, whatever
//! the request carried. Every answer, JSON or not, carries a fresh `Tracer-Id` and a `Date`
//! from the sandbox's clock (`--clock-offset` shifts it and `response-time`).
//!
//! State (circled stores, labels, counters) lives in memory and ends with the process.
//!
//! - `config`: keys, malls, trade numbers, the rate limit, clock and outage; reading the files.
//! - `faults`: the fault probabilities and the seeded generator that draws them.
//! - `rules`: result codes, the business rules, the register of circled stores and labels.
//! - `stats`: the counters and the one-second arrival window.
//! - `server`: routes and the order one request goes through; start and shutdown.

mod config;
mod faults;
mod rules;
mod server;
mod stats;

pub use config::{Outage, OutageAnswer, RateLimitAnswer, SandboxConfig, load_malls, load_trades};
pub use faults::Faults;
pub use rules::Code;
pub use server::Sandbox;
pub use stats::Stats;
