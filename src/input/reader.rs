//! The streaming reader: files → records → [`Item`]s, with identity dedupe across all files.
//!
//! Records are read as bytes into one reused `ByteRecord`; values are validated as `&str`
//! slices and only a valid row is copied into `String`s. Memory stays flat whatever the number
//! of rows, apart from 32 bytes per distinct identity (see `identity`).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use csv::ByteRecord;

use super::columns::{Column, ColumnMap, HeaderProblem};
use super::encoding::{Encoding, open_stream};
use super::identity::{Identities, Verdict};
use super::row::{Reject, SaveWay, SourceRow};
use super::rules::{self, Values};

/// One record of the input, as the caller handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Row(SourceRow),
    Reject(Reject),
    /// Same identity, identical payload as an earlier row of this input: skipped.
    Duplicate {
        file: String,
        line: u64,
        key: String,
        first_file: String,
        first_line: u64,
    },
}

/// A problem with a whole file: the input is refused and nothing is sent.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {file}: {source}")]
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
    #[error("{file}:{line}: {message}")]
    Csv {
        file: String,
        line: u64,
        message: String,
    },
}

/// One open file of the input.
struct Source {
    name: String,
    csv: csv::Reader<Box<dyn Read>>,
    columns: ColumnMap,
    /// Checks UTF-8 ourselves (raw bytes); decoded legacy encodings are UTF-8 by construction.
    check_utf8: bool,
}

/// Reads every file of one input, in order, as one stream. Identity dedupe spans all files.
pub struct Input {
    sources: Vec<Source>,
    current: usize,
    /// `bases[i]`: added to a line of file `i` to make an ordinal unique across the input.
    bases: Vec<u64>,
    record: ByteRecord,
    identities: Identities,
    unknown: Vec<(String, Vec<String>)>,
    done: bool,
}

impl Input {
    /// Opens all files and checks their headers (missing mandatory columns refuse the whole
    /// input before any row is read). Unknown columns produce one warning per file naming them.
    pub fn open(files: &[PathBuf], encoding: Encoding) -> Result<Input, InputError> {
        let mut sources = Vec::with_capacity(files.len());
        let mut unknown = Vec::new();
        for path in files {
            let name = path.display().to_string();
            let io_err = |source| InputError::Io {
                file: name.clone(),
                source,
            };
            let file = File::open(path).map_err(io_err)?;
            let stream = open_stream(file, encoding).map_err(io_err)?;
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .buffer_capacity(64 * 1024)
                .from_reader(stream);
            let mut header = ByteRecord::new();
            if !csv
                .read_byte_record(&mut header)
                .map_err(|e| csv_error(&name, e))?
            {
                return Err(InputError::NoHeader { file: name });
            }
            let line = line_of(&header);
            let cells = header
                .iter()
                .map(std::str::from_utf8)
                .collect::<Result<Vec<&str>, _>>()
                .map_err(|_| InputError::NotUtf8 {
                    file: name.clone(),
                    line,
                })?;
            let (columns, unknown_here) = ColumnMap::new(&cells).map_err(|p| match p {
                HeaderProblem::Missing { missing, found } => InputError::MissingColumns {
                    file: name.clone(),
                    missing,
                    found,
                },
                HeaderProblem::Duplicate { column, cells } => InputError::DuplicateColumn {
                    file: name.clone(),
                    column,
                    cells,
                },
            })?;
            if !unknown_here.is_empty() {
                tracing::warn!(
                    file = %name,
                    "unknown columns ignored: {}",
                    unknown_here.join(", ")
                );
                unknown.push((name.clone(), unknown_here));
            }
            sources.push(Source {
                name,
                csv,
                columns,
                check_utf8: encoding == Encoding::Utf8,
            });
        }
        Ok(Input {
            sources,
            current: 0,
            bases: vec![0],
            record: ByteRecord::new(),
            identities: Identities::new(),
            unknown,
            done: false,
        })
    }

    /// Unknown column names per file, for the caller to show.
    pub fn unknown_columns(&self) -> &[(String, Vec<String>)] {
        &self.unknown
    }

    /// The file and line of an ordinal handed to `identities`.
    fn locate(&self, ordinal: u32) -> (&str, u64) {
        let ordinal = u64::from(ordinal);
        let i = self.bases.partition_point(|b| *b < ordinal) - 1;
        (&self.sources[i].name, ordinal - self.bases[i])
    }

    /// Turns the record just read from the current file into an item (`None`: a blank row).
    fn item(&mut self) -> Result<Option<Item>, InputError> {
        let src = &self.sources[self.current];
        let record = &self.record;
        let line = line_of(record);
        let file = || src.name.clone();
        let mut any = false;
        for (i, raw) in record.iter().enumerate() {
            if src.check_utf8 && std::str::from_utf8(raw).is_err() {
                return Err(InputError::NotUtf8 { file: file(), line });
            }
            let text = cell(raw);
            any |= !text.is_empty();
            if i >= src.columns.width && !text.is_empty() {
                return Ok(Some(Item::Reject(Reject {
                    file: file(),
                    line,
                    column: "(extra cells)".to_string(),
                    value: text.to_string(),
                    reason: format!(
                        "the row has {} cells but the header has {}: a comma inside an \
                         unquoted value usually shifts the columns; put the value in double \
                         quotes (or export again from the spreadsheet)",
                        record.len(),
                        src.columns.width
                    ),
                })));
            }
        }
        // Excel exports rows it once formatted as `,,,,`: as blank as a blank line.
        if !any {
            return Ok(None);
        }
        // A row shorter than the header reads its missing cells as empty.
        let mut values: Values<'_> = [""; 9];
        for c in Column::ALL {
            if let Some(raw) = src.columns.get(c).and_then(|i| record.get(i)) {
                values[c as usize] = cell(raw);
            }
        }
        let row = match rules::check(&values) {
            Ok(row) => row,
            Err(p) => {
                return Ok(Some(Item::Reject(Reject {
                    file: file(),
                    line,
                    column: p.column.to_string(),
                    value: p.value,
                    reason: p.reason,
                })));
            }
        };
        let ordinal =
            u32::try_from(self.bases[self.current] + line).map_err(|_| InputError::Csv {
                file: file(),
                line,
                message: "the input has more than 4,294,967,295 lines in all: split it into \
                          several runs"
                    .to_string(),
            })?;
        let item = match self.identities.check(&row, ordinal) {
            Verdict::New => Item::Row(SourceRow {
                file: file(),
                line,
                row,
            }),
            Verdict::Duplicate { first_ordinal } => {
                let (first_file, first_line) = self.locate(first_ordinal);
                Item::Duplicate {
                    file: file(),
                    line,
                    key: row.key(),
                    first_file: first_file.to_string(),
                    first_line,
                }
            }
            Verdict::Conflict {
                first_ordinal,
                column,
            } => {
                let (first_file, first_line) = self.locate(first_ordinal);
                let what = match row.save_way {
                    SaveWay::MerchantPms => "same store",
                    SaveWay::IpayTradeNo => "same ipay_trade_no",
                };
                let (column, value) = match column {
                    Some(c) => (c, payload_value(&row, c)),
                    None => ("key", row.key()),
                };
                let differs = match column {
                    "key" => "names or mall",
                    c => c,
                };
                Item::Reject(Reject {
                    file: file(),
                    line,
                    column: column.to_string(),
                    value,
                    reason: format!(
                        "conflicts with line {first_line} of {first_file} ({what}, different \
                         {differs}): keep only the row that is right"
                    ),
                })
            }
        };
        Ok(Some(item))
    }
}

fn payload_value(row: &super::row::Row, column: &str) -> String {
    match column {
        "merchant_name" => &row.merchant_name,
        "store_name" => &row.store_name,
        "mall_group_label" => &row.mall_group_label,
        _ => &row.mall_label,
    }
    .clone()
}

impl Iterator for Input {
    type Item = Result<Item, InputError>;

    /// After an `Err`, the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(src) = self.sources.get_mut(self.current) else {
                self.done = true;
                break;
            };
            match src.csv.read_byte_record(&mut self.record) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(csv_error(&src.name, e)));
                }
                Ok(false) => {
                    let last = src.csv.position().line() + 1;
                    self.bases.push(self.bases[self.current] + last);
                    self.current += 1;
                }
                Ok(true) => match self.item() {
                    Ok(None) => {}
                    Ok(Some(item)) => return Some(Ok(item)),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            }
        }
        None
    }
}

/// 1-based line where the record starts (the header is line 1).
fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

fn csv_error(file: &str, e: csv::Error) -> InputError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => InputError::Io {
            file: file.to_string(),
            source,
        },
        kind => InputError::Csv {
            file: file.to_string(),
            line,
            message: format!("{:?}", kind),
        },
    }
}

/// A cell as text, trimmed. Only called after the UTF-8 check (or on decoded streams, which are
/// UTF-8 by construction); the fallback keeps it total.
fn cell(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or("\u{FFFD}").trim()
}
