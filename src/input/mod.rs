//! Spreadsheet input: CSV and workbook reading (encodings, sheets, headers), the row rules, a
//! row's identity.
//!
//! [`Input`] streams the rows of one or more files as [`Item`]s: valid rows, rejects (a row
//! that breaks a rule, never sent) and duplicates (skipped). A problem with a whole file
//! (unreadable, not UTF-8, missing columns) is an [`InputError`] that refuses the input.

mod cells;
mod classify;
mod columns;
mod encoding;
mod error;
pub(crate) mod identity;
mod read_ahead;
mod reader;
mod rejects;
mod row;
mod rules;
mod tokenizer;
pub mod workbook;

pub use columns::normalize_header;
pub use encoding::{Encoding, UnknownEncoding};
pub use error::InputError;
pub use identity::{Dedupe, Print, Spill, SpillError};
pub use reader::{Checked, Input, Item, Notice, Options};
pub use rejects::{RejectsWriter, write_rejects_csv};
pub use row::{Reject, Row, SaveWay, SourceRow, write_key};
