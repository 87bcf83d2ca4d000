//! The streaming reader: files → records → [`Item`]s, with identity dedupe across all files.
//!
//! Two stages on two threads: a reader thread tokenises the files into batches of reused
//! records (`tokenizer::Record`) (a bounded channel holds at most `IN_FLIGHT` of them; consumed batches go back
//! to it for reuse), and the iterating thread applies the rules and the identity check, in
//! order. Values are validated as `&str` slices and only a valid row is copied into `String`s.
//! Memory stays flat whatever the number of rows, apart from 32 bytes per distinct identity, or
//! none past a budget with [`Input::with_dedupe`] (see `identity`).
//!
//! A workbook takes the same path: the reader thread turns each sheet row into a record of cell
//! texts (see `workbook`), with the cell that cannot be read as typed, if any.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::columns::{Column, ColumnMap, HeaderProblem};
use super::encoding::{Encoding, open_stream};
use super::identity::{Dedupe, Identities, SpillError, Verdict};
use super::row::{Reject, SaveWay, SourceRow};
use super::rules::{self, Problem, Valid, Values};
use super::tokenizer::{MAX_RECORD, ReadError, Record, Records};
use super::workbook::{self, Format, Workbook};

/// How the files of an input are read.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The encoding of CSV files (a workbook's text is Unicode whatever this says).
    pub encoding: Encoding,
    /// The sheet to read in each workbook (default: the first visible worksheet).
    pub sheet: Option<String>,
}

impl From<Encoding> for Options {
    fn from(encoding: Encoding) -> Options {
        Options {
            encoding,
            sheet: None,
        }
    }
}

/// One record of the input, as the caller handles it. `R` is what a valid row becomes:
/// the row and its place ([`Input`] as an iterator), or nothing ([`Input::checked`], for callers
/// that only count valid rows: the values are then never copied out of the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<R = SourceRow> {
    Row(R),
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

/// What the reader thread reads one file with.
enum FileReader {
    Csv(Box<Records>),
    Sheet(Workbook, ColumnMap),
}

/// One open file of the input.
struct OpenFile {
    name: String,
    columns: ColumnMap,
    /// Checks UTF-8 ourselves (raw bytes); decoded legacy encodings are UTF-8 by construction.
    check_utf8: bool,
}

/// Reads every file of one input, in order, as one stream. Identity dedupe spans all files.
pub struct Input {
    sources: Vec<OpenFile>,
    current: usize,
    /// `bases[i]`: added to a line of file `i` to make an ordinal unique across the input.
    bases: Vec<u64>,
    /// Batches from the reader thread (`None` once the input has ended or failed).
    full: Option<Receiver<Batch>>,
    /// Consumed batches, back to the reader thread for reuse.
    empty: Sender<Batch>,
    /// The batch being consumed, and the index of its next record.
    batch: Batch,
    at: usize,
    identities: Identities,
    unknown: Vec<(String, Vec<String>)>,
    done: bool,
}

impl Input {
    /// Opens all files and checks their headers (missing mandatory columns refuse the whole
    /// input before any row is read). Unknown columns produce one warning per file naming them.
    /// A file is a CSV or a workbook by its content, whatever its name.
    pub fn open(files: &[PathBuf], options: impl Into<Options>) -> Result<Input, InputError> {
        let options = options.into();
        let mut sources = Vec::with_capacity(files.len());
        let mut readers = Vec::with_capacity(files.len());
        let mut unknown = Vec::new();
        for path in files {
            let name = path.display().to_string();
            let io_err = |source| InputError::Io {
                file: name.clone(),
                source,
            };
            let mut file = File::open(path).map_err(io_err)?;
            let (name, reader, columns, unknown_here, check_utf8) =
                match workbook::sniff(&mut file).map_err(io_err)? {
                    Format::Csv => {
                        let (csv, columns, unknown_here) = open_csv(file, &name, options.encoding)?;
                        let check_utf8 = options.encoding == Encoding::Utf8;
                        (
                            name,
                            FileReader::Csv(Box::new(csv)),
                            columns,
                            unknown_here,
                            check_utf8,
                        )
                    }
                    format => {
                        let (book, columns, unknown_here) =
                            Workbook::open(path, file, format, options.sheet.as_deref())?;
                        let name = book.name().to_string();
                        let reader = FileReader::Sheet(book, columns.clone());
                        // Cells are text already; the per-cell check stays total (see `cell`).
                        (name, reader, columns, unknown_here, false)
                    }
                };
            if !unknown_here.is_empty() {
                tracing::warn!(
                    "{name}: unknown columns ignored: {}",
                    unknown_here.join(", ")
                );
                unknown.push((name.clone(), unknown_here));
            }
            readers.push(reader);
            sources.push(OpenFile {
                name,
                columns,
                check_utf8,
            });
        }
        let (full_tx, full) = sync_channel(IN_FLIGHT);
        let (empty, empty_rx) = channel();
        std::thread::Builder::new()
            .name("input-reader".to_string())
            .spawn(move || read_ahead(readers, full_tx, empty_rx))
            .map_err(|source| InputError::Io {
                file: sources.first().map_or_else(String::new, |s| s.name.clone()),
                source,
            })?;
        Ok(Input {
            sources,
            current: 0,
            bases: vec![0],
            full: Some(full),
            empty,
            batch: Batch::default(),
            at: 0,
            identities: Identities::new(Dedupe::InMemory),
            unknown,
            done: false,
        })
    }

    /// Checks identities for duplicates and conflicts as `dedupe` says, instead of all in memory.
    /// Call it before reading the first item.
    pub fn with_dedupe(mut self, dedupe: Dedupe) -> Input {
        self.identities = Identities::new(dedupe);
        self
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

    /// Every item, with valid rows only counted: [`Item::Row`] holds `()`.
    pub fn checked(self) -> Checked {
        Checked(self)
    }

    /// The next item; `make` turns a valid row (and its file and line) into what `Item::Row`
    /// holds. After an `Err`, there is none.
    fn next_item<R>(
        &mut self,
        make: impl Fn(&Valid<'_>, &str, u64) -> R,
    ) -> Option<Result<Item<R>, InputError>> {
        while !self.done {
            if self.at < self.batch.len {
                let i = self.at;
                self.at += 1;
                match self.item(i, &make) {
                    Ok(None) => continue,
                    Ok(Some(item)) => return Some(Ok(item)),
                    Err(e) => {
                        self.stop();
                        return Some(Err(e));
                    }
                }
            }
            // Every record of the batch is done: then what ended it, then the next batch.
            match std::mem::replace(&mut self.batch.end, End::More) {
                End::More => {}
                End::File { last } => {
                    self.bases.push(self.bases[self.current] + last);
                    self.current += 1;
                }
                End::Failed(error) => {
                    self.stop();
                    return Some(Err(InputError::from_read(
                        &self.sources[self.current].name,
                        error,
                    )));
                }
            }
            match self.full.as_ref().map(Receiver::recv) {
                Some(Ok(next)) => {
                    let used = std::mem::replace(&mut self.batch, next);
                    // The reader thread may have ended: then the batch is just dropped.
                    let _ = self.empty.send(used);
                    self.at = 0;
                }
                // The reader thread has read every file.
                _ => self.stop(),
            }
        }
        None
    }

    /// Ends the input: the reader thread stops at its next send.
    fn stop(&mut self) {
        self.done = true;
        self.full = None;
    }

    /// Turns the record just read from the current file into an item (`None`: a blank row).
    fn item<R>(
        &mut self,
        i: usize,
        make: &impl Fn(&Valid<'_>, &str, u64) -> R,
    ) -> Result<Option<Item<R>>, InputError> {
        let Scan {
            line,
            suspect,
            utf8,
            unreadable,
        } = self.batch.scans[i];
        if unreadable {
            // A workbook cell that cannot be read as typed (a date in an id column, ...).
            if let Some(p) = self.batch.take_problem(i) {
                let file = self.sources[self.current].name.clone();
                return Ok(Some(Item::Reject(reject(file, line, p))));
            }
        }
        let src = &self.sources[self.current];
        let record = &self.batch.records[i];
        let file = || src.name.clone();
        // One UTF-8 check for the whole record (by the reader thread) instead of one per cell.
        // A cell is then a slice of it; `str::get` refuses a slice that splits a character, so
        // a cell is `Some` exactly when it is valid UTF-8 on its own, and the per-cell check
        // below only runs for a record that is not valid as a whole.
        let whole = utf8.then_some(self.batch.texts[i].as_str());
        let mut any = false;
        // A row shorter than the header reads its missing cells as empty.
        let mut values: Values<'_> = [""; 9];
        for (i, &(start, end)) in record.ranges().iter().enumerate() {
            let raw = &record.bytes()[start..end];
            let text = match whole.and_then(|w| w.get(start..end)) {
                Some(text) => trim(text),
                None => {
                    if src.check_utf8 && std::str::from_utf8(raw).is_err() {
                        return Err(InputError::NotUtf8 { file: file(), line });
                    }
                    cell(raw)
                }
            };
            any |= !text.is_empty();
            if i >= src.columns.width {
                if text.is_empty() {
                    continue;
                }
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
            if let Some(c) = src.columns.column_at(i) {
                values[c as usize] = text;
            }
        }
        // Excel exports rows it once formatted as `,,,,`: as blank as a blank line.
        if !any {
            return Ok(None);
        }
        let row = match rules::validate(&values, suspect) {
            Ok(row) => row,
            Err(p) => return Ok(Some(Item::Reject(reject(file(), line, p)))),
        };
        let ordinal =
            u32::try_from(self.bases[self.current] + line).map_err(|_| InputError::Csv {
                file: file(),
                line,
                message: "the input has more than 4,294,967,295 lines in all: split it into \
                          several runs"
                    .to_string(),
            })?;
        let verdict = self
            .identities
            .check_valid(&row, ordinal)
            .map_err(|source| InputError::Spill { source })?;
        let item = match verdict {
            Verdict::New => Item::Row(make(&row, &src.name, line)),
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
                    Some(c) => (c, payload_value(&row, c).to_string()),
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

fn reject(file: String, line: u64, p: Problem) -> Reject {
    Reject {
        file,
        line,
        column: p.column.to_string(),
        value: p.value,
        reason: p.reason,
    }
}

fn payload_value<'a>(row: &Valid<'a>, column: &str) -> &'a str {
    let c = match column {
        "merchant_name" => Column::MerchantName,
        "store_name" => Column::StoreName,
        "mall_group_label" => Column::MallGroupLabel,
        _ => Column::MallLabel,
    };
    row.get(c)
}

impl Iterator for Input {
    type Item = Result<Item, InputError>;

    /// After an `Err`, the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item(|row, file, line| SourceRow {
            file: file.to_string(),
            line,
            row: row.to_row(),
        })
    }
}

/// [`Input::checked`]: the items of an input, a valid row only counted (`Item::Row(())`).
pub struct Checked(Input);

impl Checked {
    /// Unknown column names per file, for the caller to show.
    pub fn unknown_columns(&self) -> &[(String, Vec<String>)] {
        self.0.unknown_columns()
    }
}

impl Iterator for Checked {
    type Item = Result<Item<()>, InputError>;

    /// After an `Err`, the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_item(|_, _, _| ())
    }
}

/// 1-based line where the record just read starts (the header is line 1).
///
/// The csv crate's `ByteRecord::position` is where reading *began*, before any blank lines it
/// skipped, so it drifts after a blank line. The reader's position after the record is exact,
/// and every record ends by consuming a line feed (LF is the only terminator and the stream
/// always ends with one): the start is that line minus the line feeds inside the record's
/// quoted cells, minus its own terminator.
/// `after` is the reader's line once the record is read (`Records::line`).
fn record_line(after: u64, record: &Record) -> u64 {
    let inner = memchr::memchr_iter(b'\n', record.bytes()).count() as u64;
    after.saturating_sub(inner + 1).max(1)
}

/// Records per batch handed from the reader thread to the iterating one.
const BATCH: usize = 1024;
/// Filled batches waiting in the channel; with the one being filled and the one being consumed,
/// at most `IN_FLIGHT + 2` batches exist.
const IN_FLIGHT: usize = 2;

/// What the reader thread finds in a record, for the iterating one.
#[derive(Clone, Copy)]
struct Scan {
    /// The line where the record starts.
    line: u64,
    /// The record holds a byte that may start a control character or U+FFFD (see
    /// `rules::may_hold_control`): a record without needs no per-value control check.
    suspect: bool,
    /// The record's bytes are UTF-8 (and copied into the batch's text for it).
    utf8: bool,
    /// A workbook cell of the record cannot be read as typed: the batch's `problems` say why.
    unreadable: bool,
}

/// Scans a record just read; `after` is the reader's line after it.
fn scan(record: &Record, after: u64, text: &mut String) -> Scan {
    let bytes = record.bytes();
    let suspect = rules::may_hold_control(bytes);
    // No line feed in the record unless it is suspect (a line feed is a control character).
    let line = if suspect {
        record_line(after, record)
    } else {
        after.saturating_sub(1).max(1)
    };
    text.clear();
    let utf8 = match simdutf8::basic::from_utf8(bytes) {
        Ok(valid) => {
            text.push_str(valid);
            true
        }
        Err(_) => false,
    };
    Scan {
        line,
        suspect,
        utf8,
        unreadable: false,
    }
}

/// Consecutive records of one file, read by the reader thread.
#[derive(Default)]
struct Batch {
    /// Reused record buffers; the first `len` hold this batch's records.
    records: Vec<Record>,
    /// What the reader thread found in each record.
    scans: Vec<Scan>,
    /// Each record's bytes as text, when they are UTF-8 (`Scan::utf8`); reused buffers.
    texts: Vec<String>,
    len: usize,
    /// The unreadable cell of each record flagged `Scan::unreadable`, by record index.
    problems: Vec<(usize, Problem)>,
    /// What comes after the records.
    end: End,
}

impl Batch {
    /// A batch back from the iterating thread (or a new one), emptied.
    fn reuse(empty: &Receiver<Batch>) -> Batch {
        let mut batch = empty.try_recv().unwrap_or_default();
        batch.len = 0;
        batch.scans.clear();
        batch.problems.clear();
        batch.end = End::More;
        batch
    }

    /// The next record's buffers, made when the batch has none to reuse.
    fn slot(&mut self) -> (&mut Record, &mut String) {
        if self.records.len() == self.len {
            self.records.push(Record::default());
            self.texts.push(String::new());
        }
        (&mut self.records[self.len], &mut self.texts[self.len])
    }

    fn take_problem(&mut self, i: usize) -> Option<Problem> {
        let at = self.problems.iter().position(|(r, _)| *r == i)?;
        Some(self.problems.swap_remove(at).1)
    }
}

#[derive(Default)]
enum End {
    /// More records of the same file.
    #[default]
    More,
    /// The file ended; `last` is the line count the next file's ordinals start after.
    File { last: u64 },
    /// Reading failed: the input ends with this error.
    Failed(ReadError),
}

/// The reader thread: every file in order, as batches. Ends after the last file, after an error,
/// or as soon as the iterating side is gone.
fn read_ahead(readers: Vec<FileReader>, full: SyncSender<Batch>, empty: Receiver<Batch>) {
    for reader in readers {
        let more = match reader {
            FileReader::Csv(csv) => read_csv(*csv, &full, &empty),
            FileReader::Sheet(mut book, columns) => read_sheet(&mut book, &columns, &full, &empty),
        };
        if !more {
            return;
        }
    }
}

/// Sends every record of one CSV file; false when the input must end (an error, or the
/// iterating side is gone).
fn read_csv(mut csv: Records, full: &SyncSender<Batch>, empty: &Receiver<Batch>) -> bool {
    loop {
        let mut batch = Batch::reuse(empty);
        while batch.len < BATCH {
            let (record, text) = batch.slot();
            match csv.read(record) {
                Ok(true) => {
                    let scan = scan(record, csv.line(), text);
                    batch.scans.push(scan);
                    batch.len += 1;
                }
                Ok(false) => {
                    batch.end = End::File {
                        last: csv.line() + 1,
                    };
                    break;
                }
                Err(e) => {
                    batch.end = End::Failed(e);
                    break;
                }
            }
        }
        let (file_done, failed) = match batch.end {
            End::More => (false, false),
            End::File { .. } => (true, false),
            End::Failed(_) => (false, true),
        };
        if full.send(batch).is_err() || failed {
            return false;
        }
        if file_done {
            return true;
        }
    }
}

/// Sends every row of one sheet below its header, as records of cell texts whose line is the
/// row number Excel shows; false when the input must end.
fn read_sheet(
    book: &mut Workbook,
    columns: &ColumnMap,
    full: &SyncSender<Batch>,
    empty: &Receiver<Batch>,
) -> bool {
    let mut batch = Batch::reuse(empty);
    let mut last = u64::from(book.header_row()) + 1;
    let mut text = String::new();
    let read = book.rows(book.header_row() + 1, |row, cells| {
        let line = u64::from(row) + 1;
        last = line;
        let (record, _) = batch.slot();
        let problem = workbook::fill(cells, columns, record, &mut text);
        let suspect = rules::may_hold_control(record.bytes());
        batch.scans.push(Scan {
            line,
            suspect,
            utf8: false,
            unreadable: problem.is_some(),
        });
        if let Some(p) = problem {
            batch.problems.push((batch.len, p));
        }
        batch.len += 1;
        if batch.len == BATCH {
            let sent = std::mem::replace(&mut batch, Batch::reuse(empty));
            if full.send(sent).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    let (end, more) = match read {
        // The iterating side is gone.
        Ok(Some(())) => return false,
        Ok(None) => (End::File { last: last + 1 }, true),
        Err(e) => (End::Failed(ReadError::Io(e)), false),
    };
    batch.end = end;
    full.send(batch).is_ok() && more
}

/// Opens a CSV file: its records after the header, the column map and the unknown names.
fn open_csv(
    file: File,
    name: &str,
    encoding: Encoding,
) -> Result<(Records, ColumnMap, Vec<String>), InputError> {
    let io_err = |source| InputError::Io {
        file: name.to_string(),
        source,
    };
    let stream = open_stream(file, encoding).map_err(io_err)?;
    // Only LF ends a record, so that every record ends by consuming one (see
    // `record_line`); a CR before it is trailing white space, trimmed like any.
    let mut csv = Records::new(stream);
    let mut header = Record::default();
    if !csv
        .read(&mut header)
        .map_err(|e| InputError::from_read(name, e))?
    {
        return Err(InputError::NoHeader {
            file: name.to_string(),
        });
    }
    let line = record_line(csv.line(), &header);
    let cells = header
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<&str>, _>>()
        .map_err(|_| InputError::NotUtf8 {
            file: name.to_string(),
            line,
        })?;
    let (columns, unknown) =
        ColumnMap::new(&cells).map_err(|p| InputError::from_header(name, p))?;
    Ok((csv, columns, unknown))
}

/// `str::trim`, without decoding a character when both ends are printable ASCII (most cells),
/// or the value starts with a character that is no white space (ASCII, or a lead byte other than
/// those of U+0085, U+00A0 (0xC2), U+1680 (0xE1), U+2000..U+205F (0xE2) and U+3000 (0xE3)).
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let first = b
        .first()
        .is_some_and(|b| b.is_ascii_graphic() || matches!(b, 0xC3..=0xE0 | 0xE4..=0xFF));
    let last = b.last().is_some_and(u8::is_ascii_graphic);
    match (first, last) {
        (true, true) => s,
        (true, false) => s.trim_end(),
        (false, true) => s.trim_start(),
        (false, false) => s.trim(),
    }
}

/// A cell as text, trimmed. Only called after the UTF-8 check (or on decoded streams, which are
/// UTF-8 by construction); the fallback keeps it total.
fn cell(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or("\u{FFFD}").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
    }

    fn read(names: &[&str], encoding: Encoding) -> Vec<Result<Item, InputError>> {
        let files: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
        Input::open(&files, encoding).unwrap().collect()
    }

    /// Items as `(line, "row KEY" | "reject COLUMN" | "dup FIRST_LINE")`, for exact asserts.
    fn summary(names: &[&str], encoding: Encoding) -> Vec<(u64, String)> {
        read(names, encoding)
            .into_iter()
            .map(|item| match item.unwrap() {
                Item::Row(r) => (r.line, format!("row {}", r.row.key())),
                Item::Reject(r) => (r.line, format!("reject {}", r.column)),
                Item::Duplicate {
                    line, first_line, ..
                } => (line, format!("dup {first_line}")),
            })
            .collect()
    }

    fn rows(names: &[&str], encoding: Encoding) -> Vec<SourceRow> {
        read(names, encoding)
            .into_iter()
            .filter_map(|i| match i.unwrap() {
                Item::Row(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn rejects(name: &str) -> Vec<Reject> {
        read(&[name], Encoding::Utf8)
            .into_iter()
            .filter_map(|i| match i.unwrap() {
                Item::Reject(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn excel_export_with_bom_crlf_quotes_and_empty_rows_just_works() {
        let rows = rows(&["excel_bom_crlf.csv"], Encoding::Utf8);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[0].file,
            fixture("excel_bom_crlf.csv").display().to_string()
        );
        assert_eq!(rows[0].row.merchant_name, "大快活集團, 有限公司");
        assert_eq!(rows[0].row.store_name, "大快活 旺角店");
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].row.key(), "IPAY_TRADE_NO|20880012345678");
        assert_eq!(rows[1].row.mall_label, "201");
    }

    #[test]
    fn big5_export_is_decoded_with_encoding_big5() {
        let rows = rows(&["big5_export.csv"], Encoding::Big5);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].row.store_name, "大快活 銅鑼灣店");
        // The same file read as UTF-8 is refused at the line that fails.
        let err = read(&["big5_export.csv"], Encoding::Utf8)
            .into_iter()
            .find_map(Result::err)
            .unwrap();
        assert!(matches!(err, InputError::NotUtf8 { line: 2, .. }), "{err}");
    }

    #[test]
    fn utf16_with_bom_is_read_whatever_the_encoding_given() {
        for enc in [Encoding::Utf16, Encoding::Utf8] {
            let rows = rows(&["utf16le_bom.csv"], enc);
            assert_eq!(rows.len(), 1, "{enc}");
            assert_eq!(rows[0].row.store_name, "美心 尖沙咀店");
            assert_eq!(rows[0].line, 2);
        }
    }

    #[test]
    fn not_utf8_is_refused_with_line_and_hint_after_good_rows() {
        let items = read(&["not_utf8.csv"], Encoding::Utf8);
        assert_eq!(items.len(), 2, "the iterator ends after the error");
        assert!(matches!(&items[0], Ok(Item::Row(r)) if r.line == 2));
        let err = items[1].as_ref().unwrap_err();
        assert!(matches!(err, InputError::NotUtf8 { line: 3, .. }));
        let msg = err.to_string();
        assert!(msg.contains("not_utf8.csv:3:"), "{msg}");
        assert!(
            msg.contains("CSV UTF-8") && msg.contains("--encoding big5"),
            "{msg}"
        );
    }

    #[test]
    fn mangled_numbers_are_rejected_with_the_text_hint() {
        assert_eq!(
            summary(&["mangled_numbers.csv"], Encoding::Utf8),
            vec![
                (2, "reject ipay_trade_no".into()),
                (3, "reject partner_id".into()),
                (4, "reject mall_label".into()),
                (5, "row MERCHANT_PMS|2088001|M1|S3".into()),
            ]
        );
        let r = &rejects("mangled_numbers.csv")[0];
        assert_eq!(r.value, "2.08802E+15");
        assert!(
            r.reason.contains("format the column as Text"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn multiline_quoted_cell_is_a_control_character_at_the_starting_line() {
        assert_eq!(
            summary(&["multiline_quoted.csv"], Encoding::Utf8),
            vec![
                (2, "reject store_name".into()),
                (4, "row MERCHANT_PMS|2088001|M1|S2".into()),
            ]
        );
        assert_eq!(rejects("multiline_quoted.csv")[0].value, "翠華\n中環店");
    }

    #[test]
    fn ragged_rows_short_are_padded_long_are_rejected() {
        assert_eq!(
            summary(&["ragged_rows.csv"], Encoding::Utf8),
            vec![
                (2, "reject mall_label".into()),
                (3, "reject (extra cells)".into()),
                (4, "row MERCHANT_PMS|2088001|M1|S3".into()),
                (6, "row MERCHANT_PMS|2088001|M1|S4".into()),
            ]
        );
        let r = &rejects("ragged_rows.csv")[1];
        assert_eq!(r.value, "200");
        assert!(
            r.reason.starts_with(
                "the row has 10 cells but the header has 9: a comma inside an unquoted value"
            ),
            "{}",
            r.reason
        );
    }

    #[test]
    fn duplicates_skipped_and_conflicts_rejected_across_files() {
        assert_eq!(
            summary(
                &["duplicates_and_conflicts.csv", "duplicates_second_file.csv"],
                Encoding::Utf8
            ),
            vec![
                (2, "row MERCHANT_PMS|2088001|M1|S1".into()),
                (3, "row IPAY_TRADE_NO|998877".into()),
                (4, "dup 2".into()),
                (5, "reject mall_label".into()),
                (6, "dup 3".into()),
                (2, "dup 3".into()),
                (3, "reject mall_label".into()),
            ]
        );
        let first = fixture("duplicates_and_conflicts.csv")
            .display()
            .to_string();
        let items: Vec<Item> = read(
            &["duplicates_and_conflicts.csv", "duplicates_second_file.csv"],
            Encoding::Utf8,
        )
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(
            items[5],
            Item::Duplicate {
                file: fixture("duplicates_second_file.csv").display().to_string(),
                line: 2,
                key: "IPAY_TRADE_NO|998877".into(),
                first_file: first.clone(),
                first_line: 3,
            }
        );
        let Item::Reject(r) = &items[3] else { panic!() };
        assert_eq!(r.value, "999");
        assert_eq!(
            r.reason,
            format!(
                "conflicts with line 2 of {first} (same store, different mall_label): keep only \
                 the row that is right"
            )
        );
    }

    #[test]
    fn missing_mall_columns_refuse_the_input_naming_missing_and_found() {
        let files = [
            fixture("excel_bom_crlf.csv"),
            fixture("missing_mall_columns.csv"),
        ];
        let err = Input::open(&files, Encoding::Utf8).err().unwrap();
        match &err {
            InputError::MissingColumns { missing, found, .. } => {
                assert_eq!(missing, &["mall_group_label".to_string()]);
                assert_eq!(found, &["Store ID", "Mall Label", "Notes"]);
            }
            e => panic!("{e}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("missing_mall_columns.csv: missing column(s) mall_group_label; the header has: Store ID, Mall Label, Notes"), "{msg}");
    }

    #[test]
    fn empty_file_has_no_header() {
        let err = Input::open(&[fixture("empty.csv")], Encoding::Utf8)
            .err()
            .unwrap();
        assert!(matches!(err, InputError::NoHeader { .. }), "{err}");
    }

    #[test]
    fn unreadable_file_names_it() {
        let err = Input::open(&[fixture("no_such_file.csv")], Encoding::Utf8)
            .err()
            .unwrap();
        assert!(matches!(err, InputError::Io { .. }));
        assert!(err.to_string().contains("no_such_file.csv"), "{err}");
    }

    #[test]
    fn headers_in_any_spelling_and_order_values_trimmed_unknown_listed() {
        let files = [fixture("headers_any_spelling.csv")];
        let input = Input::open(&files, Encoding::Utf8).unwrap();
        assert_eq!(
            input.unknown_columns(),
            &[(files[0].display().to_string(), vec!["Region".to_string()])]
        );
        let rows: Vec<SourceRow> = input
            .map(|i| match i.unwrap() {
                Item::Row(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rows.len(), 1);
        let row = &rows[0].row;
        assert_eq!(row.key(), "MERCHANT_PMS|2088001|M1|S1");
        assert_eq!(row.store_name, "九龍城店");
        assert_eq!(
            (row.mall_group_label.as_str(), row.mall_label.as_str()),
            ("100", "200")
        );
    }
}
