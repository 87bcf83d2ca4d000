//! `ledger copy`: see below.
