//! The sandbox: a local simulator of the AlipayHK Collect-PMS gateway (SPEC section 6), for the
//! demo, the tests and the benchmarks.
//!
//! It owns everything the simulated gateway does and nothing the client does: it verifies
//! requests and signs answers with the same `api::signing` code the client uses, applies the
//! documented business rules to an in-memory register of circled stores, injects seeded faults,
//! enforces an optional rate limit, and counts what happened (`GET /sandbox/stats`).
//!
//! One request goes through, in this order: it is counted (and its arrival instant kept for
//! `max_requests_in_one_second`); the rate limit; the faults, all drawn at once from one seeded
//! generator (latency, hang, reset, HTTP 500, HTTP 429, `UNKNOWN_EXCEPTION`); authentication
//! (`INVALID_CLIENT`, `INVALID_SIGNATURE`, `KEY_NOT_FOUND`, HTTP 200 with status `F`); the
//! business rules and, when they pass, the effect (the store is circled); then the
//! unknown-after-commit and bad-signature faults change the answer. Every JSON answer is signed
//! with the simulated gateway's key over the exact bytes sent; its `client-id` header is the
//! configured client id, whatever the request carried.
//!
//! State (circled stores, labels, counters) lives in memory and ends with the process.
//!
//! - `config`: keys, malls, trade numbers, reading their files.
//! - `faults`: the fault probabilities and the one seeded generator that draws them.
//! - `rules`: result codes, the business rules, the register of circled stores and labels.
//! - `stats`: the counters and the one-second arrival window.
//! - `server`: routes and the order one request goes through; start and shutdown.

mod config;
mod faults;
mod rules;
mod server;
mod stats;

pub use config::{SandboxConfig, load_malls, load_trades};
pub use faults::Faults;
pub use server::Sandbox;
pub use stats::Stats;
