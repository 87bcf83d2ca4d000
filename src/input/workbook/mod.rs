//! Workbooks as input: `.xlsx`, `.xlsm`, `.xls` and `.ods`, read with calamine.
//!
//! Owns what is particular to a workbook: which format a file is (by its content, not its
//! name), which sheet is read (the first visible worksheet, or `--sheet NAME`), which row is the
//! header (the first that names the mandatory columns: a title or notes above the table are
//! skipped), and each row below it as the text of its cells (see [`cell`]). The reader then
//! puts those rows through the same rules and identity check as a CSV's; a row's line is the
//! row number Excel shows, and its file is `FILE[SHEET]`.
//!
//! Memory: an `.xlsx` sheet is streamed row by row with calamine's cell reader (the shared
//! strings table, the workbook's distinct texts, is held whole, as calamine reads it). calamine
//! has no such reader for `.xls` or `.ods`: those are loaded whole.

mod biff;
mod cell;
mod limits;
mod ods_size;

use std::fs::File;
use std::io::{self, BufReader, Read as _, Seek as _, SeekFrom};
use std::ops::ControlFlow;
use std::path::Path;

use calamine::{Data, DataRef, Ods, Range, Reader as _, SheetType, SheetVisible, Xls, Xlsx};

pub use cell::Cell;

use super::columns::{Column, ColumnMap, HeaderProblem};
use super::error::InputError;
use super::rules::Problem;
use super::tokenizer::Record;

/// What a file holds, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// A zip that is not an OpenDocument spreadsheet: `.xlsx` or `.xlsm`.
    Xlsx,
    /// An OLE2 compound file: `.xls`.
    Xls,
    /// A zip whose `mimetype` says OpenDocument spreadsheet.
    Ods,
}

const ZIP: &[u8] = b"PK\x03\x04";
const OLE2: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
const ODS_MIME: &[u8] = b"application/vnd.oasis.opendocument.spreadsheet";

/// The format of an open file, from its first bytes; the file is left at its start. Anything
/// that is not a regular file (a pipe) is CSV: its bytes cannot be read twice.
pub(crate) fn sniff(file: &mut File) -> io::Result<Format> {
    if !file.metadata()?.is_file() {
        return Ok(Format::Csv);
    }
    let mut head = Vec::with_capacity(128);
    file.by_ref().take(128).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(if head.starts_with(OLE2) {
        Format::Xls
    } else if head.starts_with(ZIP) {
        // ODF stores an uncompressed `mimetype` first, right after its 30-byte zip header.
        let ods = head.get(30..38) == Some(b"mimetype")
            && head.windows(ODS_MIME.len()).any(|w| w == ODS_MIME);
        if ods { Format::Ods } else { Format::Xlsx }
    } else {
        Format::Csv
    })
}

/// The format of the file at `path` (see [`sniff`]).
pub fn detect(path: &Path) -> io::Result<Format> {
    sniff(&mut File::open(path)?)
}

/// One sheet of an open workbook, its header found.
pub struct Workbook {
    /// `FILE[SHEET]`: the file of every location in this sheet.
    name: String,
    sheet: String,
    book: Book,
    /// 0-based row of the header.
    header_row: u32,
}

enum Book {
    /// Streamed from the file each time it is read.
    Xlsx(Box<Xlsx<BufReader<File>>>),
    /// `.xls` and `.ods`: the whole sheet, as calamine reads it.
    Loaded(Range<Data>),
}

impl Workbook {
    /// Opens `file` (at its start, of a workbook `format`), chooses the sheet and finds the
    /// header. Returns the workbook, its column map and the unknown header names.
    pub(crate) fn open(
        path: &Path,
        mut file: File,
        format: Format,
        sheet: Option<&str>,
    ) -> Result<(Workbook, ColumnMap, Vec<String>), InputError> {
        let file_name = path.display().to_string();
        let fail = |message: String| InputError::Workbook {
            file: file_name.clone(),
            message,
        };
        let refused = |limits::Refusal(message)| InputError::Refused {
            file: file_name.clone(),
            message,
        };
        let parts = match format {
            Format::Xls => {
                biff::check(&mut file).map_err(refused)?;
                limits::Parts::default()
            }
            _ => limits::check_zip(&mut file).map_err(refused)?,
        };
        let opened = Opened::new(path, file, format).map_err(fail)?;
        let names: Vec<String> = opened.sheets().iter().map(|s| s.name.clone()).collect();
        let chosen = choose(opened.sheets(), sheet).ok_or_else(|| match sheet {
            Some(wanted) => InputError::UnknownSheet {
                file: file_name.clone(),
                sheet: wanted.to_string(),
                sheets: names.clone(),
            },
            None => fail("it has no worksheet".to_string()),
        })?;
        let name = format!("{file_name}[{chosen}]");
        let mut book = opened.into_book(&chosen).map_err(fail)?;
        if let Book::Xlsx(x) = &mut book {
            check_dimension(x, &chosen, parts).map_err(|limits::Refusal(message)| {
                InputError::Refused {
                    file: name.clone(),
                    message,
                }
            })?;
        }
        let mut workbook = Workbook {
            name,
            sheet: chosen,
            book,
            header_row: 0,
        };
        let (row, found) = workbook.find_header().map_err(|source| InputError::Io {
            file: workbook.name.clone(),
            source,
        })?;
        let cells: Vec<&str> = found.iter().map(String::as_str).collect();
        let Some(row) = row else {
            let missing = match ColumnMap::new(&cells) {
                Err(HeaderProblem::Missing { missing, .. }) => missing,
                _ => Vec::new(),
            };
            return Err(InputError::NoHeaderRow {
                file: workbook.name,
                missing,
                found: found.into_iter().filter(|c| !c.is_empty()).collect(),
                sheets: names,
            });
        };
        workbook.header_row = row;
        let (columns, unknown) =
            ColumnMap::new(&cells).map_err(|p| InputError::from_header(&workbook.name, p))?;
        Ok((workbook, columns, unknown))
    }

    /// Opens the workbook at `path` (of any workbook format) at `sheet` (default: the first).
    pub fn open_sheet(path: &Path, sheet: Option<&str>) -> Result<Workbook, InputError> {
        let io_err = |source| InputError::Io {
            file: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let format = sniff(&mut file).map_err(io_err)?;
        Ok(Workbook::open(path, file, format, sheet)?.0)
    }

    /// `FILE[SHEET]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sheet's name.
    pub fn sheet(&self) -> &str {
        &self.sheet
    }

    /// 0-based row of the header.
    pub fn header_row(&self) -> u32 {
        self.header_row
    }

    /// The first row that names the mandatory columns (or names two cells the same column: that
    /// header is refused, not skipped), and its cells as text. Without one, the row to show in
    /// the error: the first that names any known column, else the first row.
    fn find_header(&mut self) -> io::Result<(Option<u32>, Vec<String>)> {
        let mut nearest: Option<Vec<String>> = None;
        let mut nearest_known = false;
        let found = self.rows(0, |row, cells| {
            let texts = row_texts(cells);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            match ColumnMap::new(&refs) {
                Err(HeaderProblem::Missing { .. }) => {
                    let known = refs.iter().any(|c| Column::from_header(c).is_some());
                    if nearest.is_none() || (known && !nearest_known) {
                        nearest_known = known;
                        nearest = Some(texts);
                    }
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Break((row, texts)),
            }
        })?;
        Ok(match found {
            Some((row, texts)) => (Some(row), texts),
            None => (None, nearest.unwrap_or_default()),
        })
    }

    /// Calls `f` with each row from the 0-based row `from` on that has a non-empty cell: its
    /// 0-based number and its cells in column order. Stops when `f` breaks, and returns what it
    /// broke with. Rows come in sheet order (`.xlsx`: as stored, which is that order).
    pub fn rows<B>(
        &mut self,
        from: u32,
        mut f: impl FnMut(u32, &[Cell<'_>]) -> ControlFlow<B>,
    ) -> io::Result<Option<B>> {
        let mut row: Vec<Cell<'_>> = Vec::new();
        let mut emit = |at: u32, row: &mut Vec<Cell<'_>>| {
            if !row.is_sorted_by_key(|c| c.col) {
                row.sort_by_key(|c| c.col);
            }
            let flow = if at >= from && !row.is_empty() {
                f(at, row)
            } else {
                ControlFlow::Continue(())
            };
            row.clear();
            flow
        };
        match &mut self.book {
            Book::Xlsx(x) => {
                let mut cells = x
                    .worksheet_cells_reader(&self.sheet)
                    .map_err(io::Error::other)?;
                let mut at = 0;
                // Without formula metadata a formula never calculated would read as a blank.
                while let Some(c) = cells
                    .next_cell_with_formula_metadata()
                    .map_err(io::Error::other)?
                {
                    let (r, col) = c.pos;
                    if col >= MAX_COLUMNS || u64::from(r) >= MAX_ROWS {
                        return Err(io::Error::other(format!(
                            "the sheet holds a cell at {}, beyond Excel's last cell \
                             XFD1048576: {}",
                            limits::cell_name(u64::from(r), u64::from(col)),
                            limits::RESAVE
                        )));
                    }
                    if r == at && row.len() >= MAX_COLUMNS as usize {
                        return Err(io::Error::other(format!(
                            "row {} holds more than the 16,384 cells of an Excel row: {}",
                            u64::from(r) + 1,
                            limits::RESAVE
                        )));
                    }
                    if r != at {
                        if let ControlFlow::Break(b) = emit(at, &mut row) {
                            return Ok(Some(b));
                        }
                        at = r;
                    }
                    let formula = c.formula.is_some();
                    if formula || c.value != DataRef::Empty {
                        row.push(Cell {
                            col,
                            value: c.value,
                            formula,
                        });
                    }
                }
                if let ControlFlow::Break(b) = emit(at, &mut row) {
                    return Ok(Some(b));
                }
            }
            Book::Loaded(range) => {
                let (top, left) = range.start().unwrap_or_default();
                for (i, cells) in range.rows().enumerate() {
                    let at = top + i as u32;
                    for (j, value) in cells.iter().enumerate() {
                        if *value != Data::Empty {
                            row.push(Cell {
                                col: left + j as u32,
                                value: borrow(value),
                                formula: false,
                            });
                        }
                    }
                    if let ControlFlow::Break(b) = emit(at, &mut row) {
                        return Ok(Some(b));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The number of columns the sheet uses (one past its last non-empty cell). Reads the
    /// sheet once more: an `.xlsx` may declare no `dimension` or a wrong one, and an `.ods`
    /// range runs on over the empty cells its rows repeat.
    pub fn width(&mut self) -> io::Result<u32> {
        let mut width = 0;
        self.rows(0, |_, cells| {
            width = width.max(cells.last().map_or(0, |c| c.col + 1));
            ControlFlow::<()>::Continue(())
        })?;
        Ok(width)
    }
}

/// A workbook opened, its sheet not yet read.
enum Opened {
    Xlsx(Box<Xlsx<BufReader<File>>>),
    Xls(Box<Xls<BufReader<File>>>),
    Ods(Ods<BufReader<File>>),
}

impl Opened {
    /// Opens `file` (at its start) as a workbook of `format`; `Err` says why it cannot be.
    fn new(path: &Path, file: File, format: Format) -> Result<Opened, String> {
        let reader = BufReader::new(file);
        match format {
            Format::Xlsx => Xlsx::new(reader)
                .map(|x| Opened::Xlsx(Box::new(x)))
                .or_else(|e| {
                    // Not every ODF writer puts `mimetype` first: try the file as one.
                    File::open(path)
                        .ok()
                        .and_then(|f| Ods::new(BufReader::new(f)).ok())
                        .map(Opened::Ods)
                        .ok_or_else(|| e.to_string())
                }),
            Format::Xls => Xls::new(reader)
                .map(|x| Opened::Xls(Box::new(x)))
                .map_err(|e| e.to_string()),
            Format::Ods => Ods::new(reader).map(Opened::Ods).map_err(|e| e.to_string()),
            Format::Csv => Err("it is a CSV file".to_string()),
        }
    }

    fn sheets(&self) -> &[calamine::Sheet] {
        match self {
            Opened::Xlsx(x) => x.sheets_metadata(),
            Opened::Xls(x) => x.sheets_metadata(),
            Opened::Ods(o) => o.sheets_metadata(),
        }
    }

    /// The workbook, ready to read `sheet`: an `.xlsx` as it is (streamed), another format's
    /// sheet loaded.
    fn into_book(self, sheet: &str) -> Result<Book, String> {
        match self {
            Opened::Xlsx(x) => Ok(Book::Xlsx(x)),
            Opened::Xls(mut x) => x
                .worksheet_range(sheet)
                .map(Book::Loaded)
                .map_err(|e| e.to_string()),
            Opened::Ods(mut o) => o
                .worksheet_range(sheet)
                .map(Book::Loaded)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Excel's grid: 1,048,576 rows, 16,384 columns.
const MAX_ROWS: u64 = 1 << 20;
const MAX_COLUMNS: u32 = 1 << 14;

/// Cells a sheet part of `size` bytes may declare in its `dimension`, whatever its size (a
/// table of a million cells), and per byte beyond (a sheet of 64 cells a byte is one whose
/// cells are nearly all missing: a stray cell far away, or a forged range).
const PLAIN_AREA: u64 = 1 << 20;
const AREA_PER_BYTE: u64 = 64;

/// The `dimension` an `.xlsx` sheet declares, against Excel's grid and the size of the largest
/// sheet part (calamine reserves it whole for a range; the streamed reading here does not, but a
/// range no cell fills is a forged or damaged file).
fn check_dimension(
    x: &mut Xlsx<BufReader<File>>,
    sheet: &str,
    parts: limits::Parts,
) -> Result<(), limits::Refusal> {
    let Ok(cells) = x.worksheet_cells_reader(sheet) else {
        // Reading the sheet says why it cannot be read.
        return Ok(());
    };
    let d = cells.dimensions();
    let (rows, cols) = (
        u64::from(d.end.0.saturating_sub(d.start.0)) + 1,
        u64::from(d.end.1.saturating_sub(d.start.1)) + 1,
    );
    let range = format!(
        "{}:{}",
        limits::cell_name(u64::from(d.start.0), u64::from(d.start.1)),
        limits::cell_name(u64::from(d.end.0), u64::from(d.end.1))
    );
    if u64::from(d.end.0) >= MAX_ROWS || d.end.1 >= MAX_COLUMNS {
        return Err(limits::Refusal(format!(
            "the sheet declares the range {range}, beyond Excel's last cell XFD1048576: it is \
             not read; {}",
            limits::RESAVE
        )));
    }
    let area = rows * cols;
    let could_hold = parts.largest_sheet.saturating_mul(AREA_PER_BYTE);
    if area > PLAIN_AREA && area > could_hold {
        return Err(limits::Refusal(format!(
            "the sheet declares the range {range} ({area} cells), more than its {} could hold: \
             the range is forged, or a stray cell lies far from the table (delete the rows and \
             columns past the table). It is not read; {}",
            limits::mib(parts.largest_sheet),
            limits::RESAVE
        )));
    }
    Ok(())
}

/// `--sheet NAME` (exactly, else ignoring case as Excel does), or the first visible worksheet.
fn choose(sheets: &[calamine::Sheet], wanted: Option<&str>) -> Option<String> {
    let found = match wanted {
        Some(w) => sheets.iter().find(|s| s.name == w).or_else(|| {
            sheets
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(w.trim()))
        }),
        None => sheets
            .iter()
            .find(|s| s.typ == SheetType::WorkSheet && s.visible == SheetVisible::Visible)
            .or_else(|| sheets.iter().find(|s| s.typ == SheetType::WorkSheet)),
    };
    found.map(|s| s.name.clone())
}

/// The cells of a row as text, by column (header names, and the row an error shows).
fn row_texts(cells: &[Cell<'_>]) -> Vec<String> {
    let width = cells.last().map_or(0, |c| c.col as usize + 1);
    let mut texts = vec![String::new(); width];
    for c in cells {
        cell::shown(&c.value, &mut texts[c.col as usize]);
    }
    texts
}

/// A loaded cell as the cell reader gives it.
fn borrow(value: &Data) -> DataRef<'_> {
    match value {
        Data::Int(i) => DataRef::Int(*i),
        Data::Float(f) => DataRef::Float(*f),
        Data::String(s) => DataRef::SharedString(s),
        Data::Bool(b) => DataRef::Bool(*b),
        Data::DateTime(d) => DataRef::DateTime(*d),
        Data::DateTimeIso(s) => DataRef::DateTimeIso(s.clone()),
        Data::DurationIso(s) => DataRef::DurationIso(s.clone()),
        Data::Error(e) => DataRef::Error(e.clone()),
        Data::Empty => DataRef::Empty,
    }
}

/// Fills `record` with the text of the row's cells up to the header's width, as the CSV reader
/// would have read them; returns the first cell that cannot be read as typed (in the order of
/// the columns the rules check). Cells right of the header are ignored: in a workbook they
/// cannot be columns shifted by a stray comma.
pub(crate) fn fill(
    cells: &[Cell<'_>],
    columns: &ColumnMap,
    record: &mut Record,
    text: &mut String,
) -> Option<Problem> {
    record.clear();
    let mut problem: Option<(usize, Problem)> = None;
    let mut next = 0;
    for c in cells {
        let col = c.col as usize;
        if col >= columns.width || col < next {
            continue;
        }
        while next < col {
            record.push_cell("");
            next += 1;
        }
        text.clear();
        let column = columns.column_at(col);
        if let Err(p) = cell::text(c, column, text) {
            let order = column.map_or(usize::MAX, |c| c as usize);
            if problem.as_ref().is_none_or(|(first, _)| order < *first) {
                problem = Some((order, p));
            }
        }
        record.push_cell(text);
        next = col + 1;
    }
    problem.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::input::{Input, Item, Options, SourceRow};

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
    }

    fn options(sheet: Option<&str>) -> Options {
        Options {
            sheet: sheet.map(str::to_string),
            ..Options::default()
        }
    }

    fn items(name: &str, sheet: Option<&str>) -> Vec<Item> {
        Input::open(&[fixture(name)], options(sheet))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Each item as `(line, "row" | "reject COLUMN" | "dup FIRST_LINE")`.
    fn outcomes(name: &str, sheet: Option<&str>) -> Vec<(u64, String)> {
        items(name, sheet)
            .into_iter()
            .map(|item| match item {
                Item::Row(r) => (r.line, "row".to_string()),
                Item::Reject(r) => (r.line, format!("reject {}", r.column)),
                Item::Duplicate {
                    line, first_line, ..
                } => (line, format!("dup {first_line}")),
            })
            .collect()
    }

    /// What the fixture's own `expect` column says of each row below the header.
    fn expected(name: &str, sheet: Option<&str>) -> Vec<(u64, String)> {
        let mut book = Workbook::open_sheet(&fixture(name), sheet).unwrap();
        let header = book.header_row();
        let mut expect_col = None;
        let mut out = Vec::new();
        book.rows(header, |row, cells| {
            let texts = row_texts(cells);
            match expect_col {
                None => expect_col = texts.iter().position(|t| t == "expect"),
                Some(col) => {
                    if let Some(e) = texts.get(col).filter(|e| !e.is_empty()) {
                        out.push((u64::from(row) + 1, e.clone()));
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        })
        .unwrap();
        assert!(!out.is_empty(), "{name}: no expect column");
        out
    }

    fn valid_rows(name: &str) -> Vec<SourceRow> {
        items(name, None)
            .into_iter()
            .filter_map(|i| match i {
                Item::Row(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn formats_are_known_by_content_not_by_name() {
        assert_eq!(
            detect(&fixture("workbook_openpyxl.xlsx")).unwrap(),
            Format::Xlsx
        );
        assert_eq!(detect(&fixture("workbook_xlwt.xls")).unwrap(), Format::Xls);
        assert_eq!(detect(&fixture("workbook_odfpy.ods")).unwrap(), Format::Ods);
        assert_eq!(detect(&fixture("excel_bom_crlf.csv")).unwrap(), Format::Csv);
        assert_eq!(detect(&fixture("empty.csv")).unwrap(), Format::Csv);
        // A workbook saved under a CSV name is still read as the workbook it is.
        let dir = tempfile::tempdir().unwrap();
        let renamed = dir.path().join("stores.csv");
        std::fs::copy(fixture("workbook_odfpy.ods"), &renamed).unwrap();
        let input = Input::open(std::slice::from_ref(&renamed), Options::default()).unwrap();
        let valid = input.filter(|i| matches!(i, Ok(Item::Row(_)))).count();
        assert_eq!(valid, 2);
    }

    #[test]
    fn every_row_of_each_producer_is_read_as_its_expect_column_says() {
        for name in [
            "workbook_openpyxl.xlsx",
            "workbook_xlwt.xls",
            "workbook_odfpy.ods",
        ] {
            assert_eq!(outcomes(name, None), expected(name, None), "{name}");
        }
        // `--sheet`: the second sheet, its header in its first row.
        for name in ["workbook_openpyxl.xlsx", "workbook_odfpy.ods"] {
            assert_eq!(
                outcomes(name, Some("Other")),
                [(2, "row".to_string())],
                "{name}"
            );
        }
    }

    #[test]
    fn ids_are_read_as_typed_and_numbers_without_a_decimal_point() {
        let rows = valid_rows("workbook_openpyxl.xlsx");
        let file = format!("{}[Stores]", fixture("workbook_openpyxl.xlsx").display());
        // The title, a note and a blank row are above the header (row 4).
        let first = &rows[0];
        assert_eq!((first.file.as_str(), first.line), (file.as_str(), 5));
        assert_eq!(
            first.row.key(),
            "MERCHANT_PMS|2088021966641234|SECM0001|00123"
        );
        assert_eq!(first.row.merchant_name, "海港城餐飲集團");
        assert_eq!(first.row.store_name, "荃灣店 1號舖");
        // 15 digits typed as a number, and labels as numbers.
        let second = &rows[1];
        assert_eq!(second.row.partner_id, "208802196664123");
        assert_eq!(
            (
                second.row.mall_group_label.as_str(),
                second.row.mall_label.as_str()
            ),
            ("20230316", "20230316001")
        );
        // A hidden row (and a hidden column, merchant_name) are read like the others.
        let hidden = &rows[2];
        assert_eq!(hidden.line, 12);
        assert_eq!(hidden.row.merchant_name, "稻香集團");
        assert_eq!(rows[3].row.key(), "IPAY_TRADE_NO|20230000041219162813");
        for name in ["workbook_xlwt.xls", "workbook_odfpy.ods"] {
            let read = valid_rows(name);
            assert_eq!(read[1].row.partner_id, "208802196664123", "{name}");
            assert_eq!(read[1].row.mall_label, "20230316001", "{name}");
            assert_eq!(read[1].row.store_name, "銅鑼灣分店", "{name}");
        }
    }

    #[test]
    fn a_damaged_cell_is_rejected_with_its_value_and_the_text_hint() {
        let rejects: Vec<_> = items("workbook_openpyxl.xlsx", None)
            .into_iter()
            .filter_map(|i| match i {
                Item::Reject(r) => Some(r),
                _ => None,
            })
            .collect();
        let at = |line| rejects.iter().find(|r| r.line == line).unwrap();
        assert_eq!(at(7).value, "2088021966641236");
        assert!(at(7).reason.contains("15 digits"), "{}", at(7).reason);
        assert_eq!(at(8).value, "2023-03-16");
        assert_eq!(at(9).value, "#N/A");
        assert!(
            at(10).reason.contains("never calculated"),
            "{}",
            at(10).reason
        );
        for line in [7, 8, 9, 13, 14] {
            assert!(
                at(line).reason.contains("format the column as Text"),
                "{}",
                at(line).reason
            );
        }
        let file = format!("{}[Stores]", fixture("workbook_openpyxl.xlsx").display());
        assert_eq!(
            at(16).reason,
            format!(
                "conflicts with line 6 of {file} (same store, different mall_label): keep only \
                 the row that is right"
            )
        );
    }

    #[test]
    fn an_unknown_sheet_lists_the_sheets_and_a_sheet_without_header_says_what_it_found() {
        let err = Input::open(&[fixture("workbook_openpyxl.xlsx")], options(Some("Shops")))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .ends_with("no sheet named \"Shops\"; the workbook has: Stores, Other. Pass one of them with --sheet"),
            "{err}"
        );
        // Sheet names match ignoring case, as in Excel.
        assert!(Input::open(&[fixture("workbook_odfpy.ods")], options(Some("other"))).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no_header.xlsx");
        let mut wb = rust_xlsxwriter::Workbook::new();
        let ws = wb.add_worksheet().set_name("Notes").unwrap();
        ws.write(0, 0, "Read me first").unwrap();
        ws.write(2, 0, "Store ID").unwrap();
        ws.write(2, 1, "Mall Label").unwrap();
        wb.add_worksheet();
        wb.save(&path).unwrap();
        let err = Input::open(&[path], Options::default()).err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("[Notes]: no row names the column(s) mall_group_label")
                && msg.contains("the nearest row has: Store ID, Mall Label")
                && msg.contains("sheets: Notes, Sheet2 (choose one with --sheet NAME)"),
            "{msg}"
        );
    }
}
