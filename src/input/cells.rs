//! Cells: one record of the input as the values the rules check.
//!
//! A value is a `&str` slice of the record, trimmed: one UTF-8 check for the whole record (done
//! by the reader thread) instead of one per cell, the per-cell check only for a record that is
//! not valid as a whole. A row shorter than the header reads its missing cells as empty; a row
//! longer than it, with something in its extra cells, is the sign of a comma in an unquoted
//! value (see `Reject::extra_cells`).

use super::columns::ColumnMap;
use super::rules::Values;
use super::tokenizer::Record;

/// A record, read as values.
pub(super) enum Cells<'a> {
    /// No cell holds anything (Excel exports rows it once formatted as `,,,,`).
    Blank,
    Values(Values<'a>),
    /// A cell right of the header's last holds `value`; the record has `cells` cells.
    Extra {
        value: &'a str,
        cells: usize,
    },
}

/// A cell of the record is not UTF-8.
pub(super) struct NotUtf8;

/// The values of `record` by the columns of `columns`. `whole`: the record's bytes as text, when
/// they are UTF-8; `check_utf8`: refuse a cell that is not (a decoded stream is UTF-8 already).
pub(super) fn read<'a>(
    record: &'a Record,
    whole: Option<&'a str>,
    columns: &ColumnMap,
    check_utf8: bool,
) -> Result<Cells<'a>, NotUtf8> {
    let mut any = false;
    let mut values: Values<'a> = [""; 9];
    for (i, &(start, end)) in record.ranges().iter().enumerate() {
        let raw = &record.bytes()[start..end];
        // `str::get` refuses a slice that splits a character: a cell is `Some` exactly when it
        // is valid UTF-8 on its own.
        let text = match whole.and_then(|w| w.get(start..end)) {
            Some(text) => trim(text),
            None => {
                if check_utf8 && std::str::from_utf8(raw).is_err() {
                    return Err(NotUtf8);
                }
                cell(raw)
            }
        };
        any |= !text.is_empty();
        if i >= columns.width {
            if text.is_empty() {
                continue;
            }
            return Ok(Cells::Extra {
                value: text,
                cells: record.len(),
            });
        }
        if let Some(c) = columns.column_at(i) {
            values[c as usize] = text;
        }
    }
    Ok(if any {
        Cells::Values(values)
    } else {
        Cells::Blank
    })
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
