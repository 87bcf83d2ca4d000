//! Spreadsheet input: CSV reading (encodings, headers), the row rules, a row's identity.

mod row;

pub use row::{Reject, Row, SaveWay, SourceRow};
