//! The integration tests: one crate driving the real binary and the real sandbox over loopback.

mod cli;
mod doctor;
mod reconcile;
mod run;
mod sandbox;
mod transport;
mod util;
mod workbook;
