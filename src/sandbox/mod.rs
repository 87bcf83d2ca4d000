//! The sandbox: a local simulator of the AlipayHK Collect-PMS gateway (SPEC section 6), for the
//! demo, the tests and the benchmarks.
//!
//! It owns everything the simulated gateway does and nothing the client does: it verifies
//! requests and signs answers with the same `api::signing` code the client uses, applies the
//! documented business rules to an in-memory register of circled stores, injects seeded faults,
//! enforces an optional rate limit, and counts what happened (`GET /sandbox/stats`).
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
