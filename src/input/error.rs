//! What refuses an input: a problem with a whole file (unreadable, not UTF-8, a header without
//! the mandatory columns, a quote never closed, a workbook that declares more than it holds),
//! each naming the file, the line or the setting, and what to do.

use std::io;

use super::columns::HeaderProblem;
use super::identity::SpillError;
use super::tokenizer::{MAX_RECORD, ReadError};

/// A problem with a whole file: the input is refused and nothing is sent.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {file}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{file}:{line}: the file is not UTF-8 text: in Excel use Save As \"CSV UTF-8 (Comma \
         delimited)\", or pass --encoding big5|gbk|utf-16 for a legacy export"
    )]
    NotUtf8 { file: String, line: u64 },
    #[error(
        "{file}: missing column(s) {}; the header has: {}. Add the missing column(s) (names \
         are matched ignoring case, spaces, '_' and '-')",
        missing.join(", "),
        if found.is_empty() { "(nothing)".to_string() } else { found.join(", ") }
    )]
    MissingColumns {
        file: String,
        missing: Vec<String>,
        found: Vec<String>,
    },
    #[error(
        "{file}: the header names column {column} twice ({}): remove or rename one",
        cells.join(", ")
    )]
    DuplicateColumn {
        file: String,
        column: String,
        cells: Vec<String>,
    },
    #[error(
        "{file}: the file is empty: its first line must be a header naming the columns \
         (at least mall_group_label and mall_label)"
    )]
    NoHeader { file: String },
    #[error(
        "cannot keep track of the rows already read in a temporary file: make room in the \
         temporary folder, or set TMPDIR to a folder with more space"
    )]
    Spill {
        #[source]
        source: SpillError,
    },
    #[error("{file}:{line}: {message}")]
    Csv {
        file: String,
        line: u64,
        message: String,
    },
    #[error(
        "{file}: cannot read it as a workbook ({message}): open it in Excel and save it as \
         .xlsx (Excel Workbook), or as CSV UTF-8"
    )]
    Workbook { file: String, message: String },
    /// A workbook that declares more than it holds, refused before it is read.
    #[error("{file}: {message}")]
    Refused { file: String, message: String },
    #[error(
        "{file}: no sheet named {sheet:?}; the workbook has: {}. Pass one of them with --sheet",
        sheets.join(", ")
    )]
    UnknownSheet {
        file: String,
        sheet: String,
        sheets: Vec<String>,
    },
    #[error(
        "{file}: no row names the column(s) {} (the header is the first row that names \
         mall_group_label and mall_label; rows above it are skipped); {}. The workbook's \
         sheets: {} (choose one with --sheet NAME)",
        missing.join(", "),
        if found.is_empty() {
            "the sheet is empty".to_string()
        } else {
            format!("the nearest row has: {}", found.join(", "))
        },
        sheets.join(", ")
    )]
    NoHeaderRow {
        file: String,
        missing: Vec<String>,
        found: Vec<String>,
        sheets: Vec<String>,
    },
}

impl InputError {
    /// The error for a record of `file` that cannot be read.
    pub(crate) fn from_read(file: &str, error: ReadError) -> InputError {
        let file = file.to_string();
        match error {
            ReadError::Io(source) => InputError::Io { file, source },
            ReadError::TooLong {
                quote: Some((line, column)),
                ..
            } => InputError::Csv {
                file,
                line,
                message: format!(
                    "a quote opened at line {line}, column {column} is not closed within {} MiB \
                     (the rest of the file would be one cell): close it with a second \" or \
                     remove it",
                    MAX_RECORD >> 20
                ),
            },
            ReadError::TooLong { line, quote: None } => InputError::Csv {
                file,
                line,
                message: format!(
                    "the record starting on this line is longer than {} MiB (a row of a store \
                     list is a few hundred bytes): check that this is the store list, saved as \
                     CSV UTF-8",
                    MAX_RECORD >> 20
                ),
            },
            ReadError::OpenQuote { line, column } => InputError::Csv {
                file,
                line,
                message: format!(
                    "a quote opened at line {line}, column {column} is never closed (the rest \
                     of the file would be one cell): close it with a second \" or remove it"
                ),
            },
        }
    }

    /// The error for a header that `ColumnMap` refuses, in `file`.
    pub(crate) fn from_header(file: &str, problem: HeaderProblem) -> InputError {
        match problem {
            HeaderProblem::Missing { missing, found } => InputError::MissingColumns {
                file: file.to_string(),
                missing,
                found,
            },
            HeaderProblem::Duplicate { column, cells } => InputError::DuplicateColumn {
                file: file.to_string(),
                column,
                cells,
            },
        }
    }
}
