//! Text from outside (the sheet, the gateway, the ledger) made inert where it lands:
//!
//! - on a terminal, [`escape_controls`] shows C0 and C1 control characters (ESC among them),
//!   DEL, the bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) and the
//!   left-to-right / right-to-left marks (U+200E, U+200F) as `\u{1b}`, so that an answer holding
//!   `ESC[1A ESC[2K` cannot move the cursor or rewrite a line, and a name cannot reverse the
//!   text after it;
//! - in JSON, [`json_inert`] writes the same characters as `\u` escapes (serde_json escapes
//!   only C0): the text read back is exact;
//! - in a CSV cell, [`csv_cell`] does both jobs of a spreadsheet: a cell that begins with `=`,
//!   `+`, `-`, `@`, tab or CR gets a leading `'` (OWASP "CSV Injection"), so a spreadsheet shows
//!   it as text instead of running it as a formula, and control characters are escaped as on a
//!   terminal (tab, CR and LF stay: the CSV quoting keeps them in their cell).
//!
//! A cell that is a plain number (`-5`, `+852`, `-0.5`, `1e3`) is left as it is: a spreadsheet
//! reads it as the number it is, no formula is run, and prefixing it would turn a number into
//! text. Anything else that begins with one of those characters, `-2+3` included, is prefixed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped on a terminal (see the module header).
fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character but those in `keep` written as `\u{…}`.
pub fn escape_controls<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    let escaped = |c: char| is_control(c) && !keep.contains(&c);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A line for a terminal or a plain log: control characters escaped; line breaks and tabs kept
/// (the tool's own lines use them).
pub fn terminal(text: &str) -> Cow<'_, str> {
    escape_controls(text, &['\n', '\t'])
}

/// A JSON text (as serde_json writes it, C0 already escaped) with the C1 controls, DEL and the
/// bidirectional characters written as `\u` escapes too: the same JSON value, no raw control.
pub fn json_inert(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_control) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_control(c) {
            // Outside a string serde_json writes no control at all: these are in strings.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `cell` is a plain number, optionally signed.
fn is_number(cell: &str) -> bool {
    let digits = cell.trim_start_matches(['+', '-']);
    digits.len() + 1 >= cell.len()
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && digits.parse::<f64>().is_ok()
}

/// The text of a CSV cell the tool writes, made inert (see the module header). Quoting is the
/// CSV writer's.
pub fn csv_cell(cell: &str) -> Cow<'_, str> {
    let cell = escape_controls(cell, &['\t', '\n', '\r']);
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula && !is_number(&cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_get_a_leading_quote_numbers_and_plain_text_do_not() {
        for (cell, shown) in [
            (
                "=HYPERLINK(\"http://x\",\"x\")",
                "'=HYPERLINK(\"http://x\",\"x\")",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "'\r=1+1"),
            ("-", "'-"),
            ("--5", "'--5"),
            ("-5", "-5"),
            ("+85212345678", "+85212345678"),
            ("-0.5", "-0.5"),
            ("旺角 = 分店", "旺角 = 分店"),
            ("2088000000000001", "2088000000000001"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(cell), shown, "{cell:?}");
        }
    }

    #[test]
    fn escape_sequences_and_bidi_overrides_are_shown_not_obeyed() {
        let hostile = "\u{1b}[1A\u{1b}[2K  ok \u{9b}2J \u{202e}txt.exe\u{7f}\r";
        let shown = terminal(hostile);
        assert_eq!(
            shown,
            "\\u{1b}[1A\\u{1b}[2K  ok \\u{9b}2J \\u{202e}txt.exe\\u{7f}\\u{d}"
        );
        assert!(!shown.chars().any(is_control));
        assert_eq!(terminal("a\n\tb 旺角"), "a\n\tb 旺角");
        let json = serde_json::to_string(&serde_json::json!({ "m": hostile })).unwrap();
        let inert = json_inert(&json);
        assert!(!inert.chars().any(is_control), "{inert}");
        let back: serde_json::Value = serde_json::from_str(&inert).unwrap();
        assert_eq!(back["m"], hostile, "the exact text, escaped");
        assert_eq!(csv_cell("\u{1b}[2K=1"), "\\u{1b}[2K=1");
    }
}
