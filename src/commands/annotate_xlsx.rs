//! `export --annotate WORKBOOK -o result.xlsx`: the operator's own sheet back as a new `.xlsx`,
//! each row with its outcome appended (`status`, `pms_label`, `result_code`, `message`).
//!
//! Every cell of the sheet is written where it was, title rows above the header included, with
//! its value and type: a text id stays text (never re-typed as a number), a number stays a
//! number, a date a date, an error an error; a formula is written as the value it showed. The
//! four columns go right of the sheet's last used column, so no cell is covered. The header is
//! frozen, the table filtered, and the status coloured (done, failed, rejected, not sent).
//!
//! The sheet is read as a stream and the workbook written in rust_xlsxwriter's constant-memory
//! mode (rows go to a temporary file as they are written), so memory stays flat for `.xlsx`.

use std::iter::Peekable;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use calamine::DataRef;
use rusqlite::Connection;
use rust_xlsxwriter::{Color, ExcelDateTime, Format, Formula, Worksheet};

use super::reconcile::{annotation, item_at};
use crate::input::workbook::{Cell, Workbook};
use crate::input::{Input, Options};

/// The four columns appended, in order.
const RESULT_COLUMNS: [&str; 4] = ["status", "pms_label", "result_code", "message"];

/// Writes `sheet` (a workbook) to `output` as a new `.xlsx` with each row's outcome appended.
pub fn annotate(
    conn: &Connection,
    sheet: &Path,
    options: &Options,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let stem = sheet
        .file_stem()
        .map_or_else(|| "sheet".into(), |s| s.to_string_lossy().into_owned());
    let Some(output) = output else {
        bail!(
            "--annotate {}: a workbook is annotated as a new .xlsx file: name it with -o, e.g. \
             -o {stem}-annotated.xlsx",
            sheet.display()
        );
    };
    if !output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
    {
        bail!(
            "-o {}: the annotated workbook is an .xlsx file: name it so, e.g. -o {stem}-annotated.xlsx",
            output.display()
        );
    }
    let mut items = Input::open(&[sheet.to_path_buf()], options.clone())?
        .with_dedupe(super::bounded_dedupe()?)
        .peekable();
    let mut book = Workbook::open_sheet(sheet, options.sheet.as_deref())?;
    let header = book.header_row();
    let name = book.name().to_string();
    let cannot_read = || format!("cannot read {name}");
    // The results go right of every used cell, not just of the header.
    let width = book.width().with_context(cannot_read)?;
    let first = u16::try_from(width)
        .ok()
        .filter(|c| *c < MAX_COLUMNS - 4)
        .with_context(|| {
            format!("{name}: no room right of the sheet for the four result columns")
        })?;

    let mut out = rust_xlsxwriter::Workbook::new();
    let styles = Styles::new();
    let ws = out
        .add_worksheet_with_constant_memory()
        .context("cannot create a temporary file for the annotated workbook")?;
    // Excel's rules for a sheet name are stricter than OpenDocument's: then the default stays.
    let _ = ws.set_name(book.sheet());
    for (col, width) in (first..).zip([14, 34, 30, 60]) {
        ws.set_column_width(col, width)?;
    }
    let mut last_row = header;
    let failed = book
        .rows(0, |row, cells| {
            last_row = row;
            let written = outcome(row, header, &mut items, conn).and_then(|results| {
                write_cells(ws, &styles, row, cells, row == header)?;
                if let Some(texts) = results {
                    let style = if row == header {
                        &styles.header
                    } else {
                        styles.status(&texts[0])
                    };
                    for (col, text) in (first..).zip(&texts) {
                        ws.write_string_with_format(row, col, text, style)?;
                    }
                }
                Ok(())
            });
            match written {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        })
        .with_context(cannot_read)?;
    if let Some(e) = failed {
        return Err(e);
    }
    ws.set_freeze_panes(header + 1, 0)?;
    ws.autofilter(header, 0, last_row, first + 3)?;
    // Whole or not at all: to a temporary file beside the target, renamed into place.
    let mut file = crate::output::Output::create(output)?;
    out.save_to_writer(&mut file)
        .with_context(|| format!("cannot write {}", output.display()))?;
    file.commit()?;
    Ok(ExitCode::SUCCESS)
}

/// Columns in an Excel sheet.
const MAX_COLUMNS: u16 = 16_384;

/// The four cells appended to sheet row `row` (0-based): the column names on the header, the
/// outcome of the reader's item for a row below it, nothing above it or for a row the reader
/// skips.
fn outcome(
    row: u32,
    header: u32,
    items: &mut Peekable<Input>,
    conn: &Connection,
) -> anyhow::Result<Option<[String; 4]>> {
    if row == header {
        return Ok(Some(RESULT_COLUMNS.map(str::to_owned)));
    }
    if row < header {
        return Ok(None);
    }
    match item_at(items, u64::from(row) + 1)? {
        Some(item) => annotation(&item, conn).map(Some),
        None => Ok(None),
    }
}

/// The formats of the new workbook.
struct Styles {
    header: Format,
    date: Format,
    date_time: Format,
    duration: Format,
    done: Format,
    failed: Format,
    rejected: Format,
    not_sent: Format,
}

impl Styles {
    fn new() -> Styles {
        // Excel's own "Good", "Bad" and "Neutral" cell styles, and a grey.
        let fill = |background: u32, font: u32| {
            Format::new()
                .set_background_color(Color::RGB(background))
                .set_font_color(Color::RGB(font))
        };
        Styles {
            header: Format::new().set_bold(),
            date: Format::new().set_num_format("yyyy-mm-dd"),
            date_time: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
            duration: Format::new().set_num_format("[h]:mm:ss"),
            done: fill(0xC6EFCE, 0x006100),
            failed: fill(0xFFC7CE, 0x9C0006),
            rejected: fill(0xFFEB9C, 0x9C5700),
            not_sent: fill(0xE7E6E6, 0x3A3838),
        }
    }

    /// The colour of a status: done (succeeded, already circled), failed, rejected, or not
    /// sent (never seen by the ledger, or still pending).
    fn status(&self, status: &str) -> &Format {
        match status {
            "succeeded" | "already_circled" => &self.done,
            "failed" => &self.failed,
            "rejected" => &self.rejected,
            _ => &self.not_sent,
        }
    }
}

/// Writes the original cells of one row, each with its own type (the header bold).
fn write_cells(
    ws: &mut Worksheet,
    styles: &Styles,
    row: u32,
    cells: &[Cell<'_>],
    header: bool,
) -> anyhow::Result<()> {
    for c in cells {
        // Cells lie left of `first`, which fits a column number: so does `c.col`.
        let col = u16::try_from(c.col)?;
        match &c.value {
            DataRef::String(s) if header => {
                ws.write_string_with_format(row, col, s, &styles.header)?
            }
            DataRef::SharedString(s) if header => {
                ws.write_string_with_format(row, col, *s, &styles.header)?
            }
            DataRef::String(s) => ws.write_string(row, col, s)?,
            DataRef::SharedString(s) => ws.write_string(row, col, *s)?,
            DataRef::Float(v) => ws.write_number(row, col, *v)?,
            DataRef::Int(i) => ws.write_number(row, col, *i as f64)?,
            DataRef::Bool(b) => ws.write_boolean(row, col, *b)?,
            DataRef::DateTime(d) if d.is_duration() => {
                ws.write_number_with_format(row, col, d.as_f64(), &styles.duration)?
            }
            DataRef::DateTime(d) => {
                // Through the calendar date, so that a 1904-based workbook's dates stay the same.
                let (y, mo, day, h, mi, s, ms) = d.to_ymd_hms_milli();
                let format = if (h, mi, s, ms) == (0, 0, 0, 0) {
                    &styles.date
                } else {
                    &styles.date_time
                };
                match ExcelDateTime::from_ymd(y, mo, day)
                    .and_then(|date| date.and_hms_milli(u16::from(h), mi, s, ms))
                {
                    Ok(date) => ws.write_datetime_with_format(row, col, date, format)?,
                    Err(_) => ws.write_number_with_format(row, col, d.as_f64(), format)?,
                }
            }
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
                match ExcelDateTime::parse_from_str(s) {
                    Ok(date) if s.contains(':') && s.contains('-') => {
                        ws.write_datetime_with_format(row, col, date, &styles.date_time)?
                    }
                    Ok(date) if s.contains('-') => {
                        ws.write_datetime_with_format(row, col, date, &styles.date)?
                    }
                    _ => ws.write_string(row, col, s)?,
                }
            }
            // An error constant is a formula that gives that error: Excel shows it as it was.
            DataRef::Error(e) => ws.write_formula(
                row,
                col,
                Formula::new(format!("={e}")).set_result(e.to_string()),
            )?,
            DataRef::Empty => ws,
        };
    }
    Ok(())
}
