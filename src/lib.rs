//! `pms-onboard`: tag merchant stores to malls in AlipayHK from spreadsheets.
//!
//! Data flows one way: `input` (rows) → `ledger` (in flight) → `pipeline` (limiter, workers,
//! retries) → `api` (signed call, classified outcome) → `ledger`. `sandbox` simulates the gateway;
//! `commands` wires the parts into the subcommands.

// Every line a user sees goes through `output::Printer`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub(crate) mod duration;
pub mod input;
pub mod ledger;
pub mod model;
pub mod output;
pub(crate) mod pipeline;
pub(crate) mod report;
pub mod sandbox;
