//! The AlipayHK Collect-PMS API: keys, the signature scheme, request and response types, the call.

pub mod keys;
pub mod signing;
pub mod types;
