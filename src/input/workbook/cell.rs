//! What a workbook cell says, as the text the row rules check: the value the operator typed, or
//! the reason it cannot be trusted.
//!
//! A text cell is taken as it is. An id or label column is where Excel does its damage: a long
//! number keeps only 15 significant digits, `00123` loses its zeros, `2023-03-16` becomes a date.
//! So a number there is taken only when it is an integer Excel holds exactly (at most 15 digits:
//! Excel turns the 16th and later typed digits into zeros, so a longer number may already be
//! wrong), written without `.0` or exponent; a fraction, a longer number, a date or time, a
//! true/false value or an error cell is a [`Problem`] with the hint to format the column as Text.
//! Elsewhere a number is written as Excel shows it. A formula counts as its cached value; one
//! that was never calculated (the writer did not compute it) has no value to send.

use std::fmt::Write as _;

use calamine::{DataRef, ExcelDateTime};

use crate::input::columns::Column;
use crate::input::rules::{NUMBER_LIKE, Problem};

/// One non-empty cell of a sheet row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell<'a> {
    /// 0-based column.
    pub col: u32,
    /// The value, or a formula's cached value.
    pub value: DataRef<'a>,
    /// The cell holds a formula (known for `.xlsx`; `.xls` and `.ods` always store the value).
    pub formula: bool,
}

/// The errors a spreadsheet cell shows.
const ERRORS: [&str; 10] = [
    "#N/A",
    "#VALUE!",
    "#REF!",
    "#DIV/0!",
    "#NUM!",
    "#NAME?",
    "#NULL!",
    "#SPILL!",
    "#CALC!",
    "#GETTING_DATA",
];

/// Integers below this are held exactly by Excel whatever was typed (15 digits).
const EXACT: f64 = 1e15;

/// Writes the text of `cell` in `column` (`None`: a column the tool does not read) to `out`.
pub(crate) fn text(
    cell: &Cell<'_>,
    column: Option<Column>,
    out: &mut String,
) -> Result<(), Problem> {
    let Some(column) = column else {
        // Only its emptiness matters (a row with only a note is no blank row): never a problem.
        shown(&cell.value, out);
        return Ok(());
    };
    let id = NUMBER_LIKE.contains(&column);
    let problem = |value: String, what: &str| {
        let fix = if id {
            "format the column as Text in Excel, re-enter the id as it should be, and save"
        } else {
            "type the value in the cell, or fix its formula"
        };
        Err(Problem {
            column: column.name(),
            reason: format!("{} {what}: {fix}", column.name()),
            value,
        })
    };
    match &cell.value {
        DataRef::Empty if cell.formula => Err(Problem {
            column: column.name(),
            value: String::new(),
            reason: format!(
                "{} holds a formula that was never calculated (the program that wrote the \
                 workbook does not compute formulas): open the workbook in Excel or LibreOffice \
                 and save it, or paste the values",
                column.name()
            ),
        }),
        DataRef::Error(e) => problem(e.to_string(), &format!("shows the error {e}")),
        // OpenDocument keeps a formula's error as its text: `#N/A` is no id and no name.
        DataRef::String(s) if ERRORS.contains(&s.trim()) => {
            problem(s.clone(), &format!("shows the error {}", s.trim()))
        }
        DataRef::SharedString(s) if ERRORS.contains(&s.trim()) => {
            problem(s.to_string(), &format!("shows the error {}", s.trim()))
        }
        _ if !id => {
            shown(&cell.value, out);
            Ok(())
        }
        DataRef::Float(v) => integer(*v, out).or_else(|shown| {
            let what = number(&shown, v.is_finite() && v.fract() == 0.0);
            problem(shown, &what)
        }),
        DataRef::Int(i) if i.unsigned_abs() < EXACT as u64 => {
            let _ = write!(out, "{i}");
            Ok(())
        }
        DataRef::Int(i) => problem(i.to_string(), &number(&i.to_string(), true)),
        DataRef::DateTime(d) => {
            let shown = date_time(d);
            let what = if d.is_duration() { "time" } else { "date" };
            problem(
                shown.clone(),
                &format!(
                    "is the {what} {shown} in the workbook: Excel turned what was typed into a {what}"
                ),
            )
        }
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => problem(
            s.clone(),
            &format!(
                "is the date or time {s} in the workbook: Excel turned what was typed into one"
            ),
        ),
        DataRef::Bool(b) => problem(
            bool_text(*b).to_string(),
            &format!(
                "is {} in the workbook, a true/false value, not an id",
                bool_text(*b)
            ),
        ),
        DataRef::String(s) => {
            out.push_str(s);
            Ok(())
        }
        DataRef::SharedString(s) => {
            out.push_str(s);
            Ok(())
        }
        DataRef::Empty => Ok(()),
    }
}

/// Why a number in an id column is refused (`shown`: its digits).
fn number(shown: &str, whole: bool) -> String {
    if whole {
        format!(
            "is the number {shown} in the workbook, longer than the 15 digits Excel keeps \
             exactly (its last digits may already be lost)"
        )
    } else {
        format!("is the number {shown} in the workbook, not a whole number")
    }
}

/// An integer Excel holds exactly, without `.0` or exponent; `Err` with the number's digits.
fn integer(v: f64, out: &mut String) -> Result<(), String> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < EXACT {
        // Exact: |v| < 10^15 < 2^53, and `-0` is written `0`.
        let _ = write!(out, "{}", v as i64);
        Ok(())
    } else if v.is_finite() && v.fract() == 0.0 {
        Err(format!("{v:.0}"))
    } else {
        Err(general(v))
    }
}

/// A value as Excel shows it in a General cell, near enough for names and unknown columns.
pub(crate) fn shown(value: &DataRef<'_>, out: &mut String) {
    match value {
        DataRef::Empty => {}
        DataRef::String(s) => out.push_str(s),
        DataRef::SharedString(s) => out.push_str(s),
        DataRef::Float(v) => {
            if integer(*v, out).is_err() {
                out.push_str(&general(*v));
            }
        }
        DataRef::Int(i) => {
            let _ = write!(out, "{i}");
        }
        DataRef::Bool(b) => out.push_str(bool_text(*b)),
        DataRef::DateTime(d) => out.push_str(&date_time(d)),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => out.push_str(s),
        DataRef::Error(e) => {
            let _ = write!(out, "{e}");
        }
    }
}

/// A number with at most the 15 significant digits Excel keeps (`0.1+0.2` is `0.3`).
fn general(v: f64) -> String {
    let rounded: f64 = format!("{v:.14e}").parse().unwrap_or(v);
    format!("{rounded}")
}

fn bool_text(b: bool) -> &'static str {
    if b { "TRUE" } else { "FALSE" }
}

/// `2023-03-16`, `2023-03-16 09:30:00`, or a duration as `12:30:00`.
fn date_time(d: &ExcelDateTime) -> String {
    if d.is_duration() {
        let seconds = (d.as_f64() * 86_400.0).round() as i64;
        let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        return format!("{h:02}:{m:02}:{s:02}");
    }
    let (y, mo, day, h, mi, s, _) = d.to_ymd_hms_milli();
    if (h, mi, s) == (0, 0, 0) {
        format!("{y:04}-{mo:02}-{day:02}")
    } else {
        format!("{y:04}-{mo:02}-{day:02} {h:02}:{mi:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use calamine::{CellErrorType, ExcelDateTimeType};

    use super::*;

    fn read(value: DataRef<'_>, column: Column) -> Result<String, Problem> {
        let mut out = String::new();
        let cell = Cell {
            col: 0,
            value,
            formula: false,
        };
        text(&cell, Some(column), &mut out).map(|()| out)
    }

    #[test]
    fn an_id_number_is_taken_only_when_excel_holds_it_exactly() {
        let id = |v: f64| read(DataRef::Float(v), Column::PartnerId);
        assert_eq!(id(20230316001.0).unwrap(), "20230316001");
        assert_eq!(id(999_999_999_999_999.0).unwrap(), "999999999999999");
        assert_eq!(id(-0.0).unwrap(), "0");
        // 16 digits: what was typed may have lost its last digit.
        let p = id(2088021966641230.0).unwrap_err();
        assert_eq!(p.value, "2088021966641230");
        assert!(p.reason.contains("15 digits"), "{}", p.reason);
        assert!(
            p.reason.contains("format the column as Text"),
            "{}",
            p.reason
        );
        let p = id(1e20).unwrap_err();
        assert_eq!(p.value, "100000000000000000000");
        let p = id(123.5).unwrap_err();
        assert_eq!(p.value, "123.5");
        assert!(p.reason.contains("not a whole number"), "{}", p.reason);
        assert_eq!(read(DataRef::Int(123), Column::MallLabel).unwrap(), "123");
        assert!(read(DataRef::Int(1_000_000_000_000_000), Column::MallLabel).is_err());
    }

    #[test]
    fn dates_errors_and_booleans_are_refused_in_ids_and_shown_in_names() {
        let date = DataRef::DateTime(ExcelDateTime::new(
            45001.0,
            ExcelDateTimeType::DateTime,
            false,
        ));
        let p = read(date.clone(), Column::StoreId).unwrap_err();
        assert_eq!((p.column, p.value.as_str()), ("store_id", "2023-03-16"));
        assert!(p.reason.contains("date"), "{}", p.reason);
        assert_eq!(read(date, Column::StoreName).unwrap(), "2023-03-16");

        let na = DataRef::Error(CellErrorType::NA);
        let p = read(na.clone(), Column::MerchantId).unwrap_err();
        assert_eq!(p.value, "#N/A");
        assert!(
            p.reason.contains("format the column as Text"),
            "{}",
            p.reason
        );
        // An error is no name either.
        assert!(read(na, Column::MerchantName).is_err());

        assert!(read(DataRef::Bool(true), Column::IpayTradeNo).is_err());
        assert_eq!(
            read(DataRef::Bool(true), Column::StoreName).unwrap(),
            "TRUE"
        );
        assert_eq!(read(DataRef::Float(12.0), Column::StoreName).unwrap(), "12");
        assert_eq!(
            read(DataRef::Float(0.1 + 0.2), Column::StoreName).unwrap(),
            "0.3"
        );
    }

    #[test]
    fn text_is_taken_as_typed_and_an_uncalculated_formula_is_refused() {
        assert_eq!(
            read(DataRef::SharedString("00123"), Column::StoreId).unwrap(),
            "00123"
        );
        assert_eq!(
            read(
                DataRef::String("2088021966641234".into()),
                Column::PartnerId
            )
            .unwrap(),
            "2088021966641234"
        );
        let cell = Cell {
            col: 0,
            value: DataRef::Empty,
            formula: true,
        };
        let p = text(&cell, Some(Column::MallLabel), &mut String::new()).unwrap_err();
        assert!(p.reason.contains("never calculated"), "{}", p.reason);
        // A column the tool does not read is never a problem.
        let mut out = String::new();
        let na = Cell {
            col: 0,
            value: DataRef::Error(CellErrorType::NA),
            formula: true,
        };
        text(&na, None, &mut out).unwrap();
        assert_eq!(out, "#N/A");
    }
}
