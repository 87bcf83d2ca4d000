//! The input: files → records → [`Item`]s, with identity dedupe across all files.
//!
//! [`Input`] opens every file (its header checked before any row is read), then consumes what
//! the read-ahead thread (`read_ahead`) reads: each record becomes values (`cells`), then an
//! item (`classify`), in order. Values are `&str` slices of the record and only a valid row is
//! copied into `String`s. Memory stays flat whatever the number of rows, apart from 32 bytes per
//! distinct identity, or none past a budget with [`Input::with_dedupe`] (see `identity`).
//!
//! A workbook takes the same path: the reader thread turns each sheet row into a record of cell
//! texts (see `workbook`), with the cell that cannot be read as typed, if any.
//!
//! What a user should know but that refuses nothing (unknown columns) is a [`Notice`], for the
//! command to show through its printer.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};

use super::cells::{self, Cells, NotUtf8};
use super::classify::{self, Place};
use super::columns::ColumnMap;
use super::encoding::{Encoding, open_stream};
use super::error::InputError;
use super::identity::{Dedupe, Identities};
use super::read_ahead::{self, Batch, End, FileReader, Scan, record_line};
use super::row::{Reject, SourceRow};
use super::rules::Valid;
use super::tokenizer::{Record, Records};
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
    notices: Vec<Notice>,
    done: bool,
}

/// What a user should know about an input that refuses nothing, for the command to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A file's header names columns the tool does not read: they are ignored.
    UnknownColumns { file: String, columns: Vec<String> },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::UnknownColumns { file, columns } => {
                write!(f, "{file}: unknown columns ignored: {}", columns.join(", "))
            }
        }
    }
}

impl Input {
    /// Opens all files and checks their headers (missing mandatory columns refuse the whole
    /// input before any row is read). Unknown columns make one [`Notice`] per file naming them.
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
                unknown.push((name.clone(), unknown_here));
            }
            readers.push(reader);
            sources.push(OpenFile {
                name,
                columns,
                check_utf8,
            });
        }
        let (full, empty) = read_ahead::start(readers).map_err(|source| InputError::Io {
            file: sources.first().map_or_else(String::new, |s| s.name.clone()),
            source,
        })?;
        let notices = unknown
            .into_iter()
            .map(|(file, columns)| Notice::UnknownColumns { file, columns })
            .collect();
        Ok(Input {
            sources,
            current: 0,
            bases: vec![0],
            full: Some(full),
            empty,
            batch: Batch::default(),
            at: 0,
            identities: Identities::new(Dedupe::InMemory),
            notices,
            done: false,
        })
    }

    /// Checks identities for duplicates and conflicts as `dedupe` says, instead of all in memory.
    /// Call it before reading the first item.
    pub fn with_dedupe(mut self, dedupe: Dedupe) -> Input {
        self.identities = Identities::new(dedupe);
        self
    }

    /// What the user should know about the input (unknown columns), for the command to show
    /// through its printer.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
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
        let src = &self.sources[self.current];
        if unreadable {
            // A workbook cell that cannot be read as typed (a date in an id column, ...).
            if let Some(p) = self.batch.take_problem(i) {
                return Ok(Some(Item::Reject(Reject::from_problem(&src.name, line, p))));
            }
        }
        let whole = utf8.then_some(self.batch.texts[i].as_str());
        let record = &self.batch.records[i];
        let values = match cells::read(record, whole, &src.columns, src.check_utf8) {
            Ok(Cells::Values(values)) => values,
            Ok(Cells::Blank) => return Ok(None),
            Ok(Cells::Extra { value, cells }) => {
                let width = src.columns.width;
                let reject = Reject::extra_cells(&src.name, line, value, cells, width);
                return Ok(Some(Item::Reject(reject)));
            }
            Err(NotUtf8) => {
                return Err(InputError::NotUtf8 {
                    file: src.name.clone(),
                    line,
                });
            }
        };
        let at = Place {
            file: &src.name,
            line,
            base: self.bases[self.current],
        };
        let (sources, bases) = (&self.sources, &self.bases);
        let locate = |ordinal| locate(sources, bases, ordinal);
        classify::classify(&values, suspect, &at, &mut self.identities, locate, make).map(Some)
    }
}

/// The file and line of an ordinal handed to `identities` (`bases`: see `Input::bases`).
fn locate<'a>(sources: &'a [OpenFile], bases: &[u64], ordinal: u32) -> (&'a str, u64) {
    let ordinal = u64::from(ordinal);
    let i = bases.partition_point(|b| *b < ordinal) - 1;
    (&sources[i].name, ordinal - bases[i])
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
    /// See [`Input::notices`].
    pub fn notices(&self) -> &[Notice] {
        self.0.notices()
    }
}

impl Iterator for Checked {
    type Item = Result<Item<()>, InputError>;

    /// After an `Err`, the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_item(|_, _, _| ())
    }
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
            input.notices(),
            &[Notice::UnknownColumns {
                file: files[0].display().to_string(),
                columns: vec!["Region".to_string()]
            }]
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
