//! The AlipayHK Collect-PMS API: keys, the signature scheme, request and response types, the call
//! and the classification of its answer, and the rules `doctor` and `run` share (`checks`). Only
//! this module knows header formats and result codes.

pub mod binding;
pub mod checks;
pub mod client;
pub mod http;
pub mod keys;
pub mod outcome;
pub mod signing;
pub mod types;
