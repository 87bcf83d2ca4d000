//! The integration tests: one crate driving the real binary and the real sandbox over loopback.

mod cli;
mod doctor;
mod durability;
mod gateway;
mod hostile_input;
mod hostile_text;
mod json_output;
mod ledger;
mod output;
mod output_paths;
mod pg;
mod pg_run;
mod pg_server;
mod readme;
mod reconcile;
mod run;
mod safety;
mod sandbox;
mod transport;
mod util;
mod workbook;
