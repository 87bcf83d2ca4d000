//! What calamine builds from an OpenDocument `content.xml`, sized as the part streams by.
//!
//! `Ods::new` lays every sheet out whole, and a cell or a row may say it repeats: one
//! `<table:table-cell table:number-columns-repeated="16384" office:value-type="float"/>` is
//! 16,384 cells, and its row repeated a million times is 17 billion (calamine stops at 100
//! million cells, 3 GB). Empty cells and rows are cheap (calamine drops them at a row's end and
//! past the last row with a value), so a LibreOffice sheet, which ends with a million empty
//! rows, costs nothing. This counts what is not: the cells calamine keeps per row (up to its
//! last non-empty cell), the text they copy, and the rectangle each sheet becomes.

use std::mem::size_of;

use calamine::Data;

/// calamine's bounds for an OpenDocument sheet.
const MAX_ROWS: u64 = 1_048_576;
const MAX_COLUMNS: u64 = 16_384;
const MAX_CELLS: u64 = 100_000_000;

/// A cell costs its value and its formula (an empty `String`).
const CELL: u64 = (size_of::<Data>() + size_of::<String>()) as u64;

#[derive(Debug, Default)]
pub(crate) struct OdsSize {
    in_tag: bool,
    tag: Vec<u8>,
    /// The tag was longer than the buffer keeps (its attributes are then unknown).
    tag_cut: bool,
    // The row being read.
    row_repeats: u64,
    row_columns: u64,
    row_cells: u64,
    row_text: u64,
    /// Inside a non-empty cell: its column repeats, and its text so far.
    cell: Option<(u64, u64)>,
    // The sheet being read.
    rows: u64,
    empty_rows: u64,
    width: u64,
    raw_cells: u64,
    text: u64,
    // The workbook.
    kept: u64,
    peak: u64,
}

/// Tags longer than this are none OpenDocument writes; their attributes are not read.
const MAX_TAG: usize = 64 * 1024;

impl OdsSize {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            if self.in_tag {
                match memchr::memchr(b'>', &bytes[at..]) {
                    Some(n) => {
                        self.keep(&bytes[at..at + n]);
                        at += n + 1;
                        self.in_tag = false;
                        let tag = std::mem::take(&mut self.tag);
                        self.on_tag(&tag);
                        self.tag = tag;
                        self.tag.clear();
                        self.tag_cut = false;
                    }
                    None => {
                        self.keep(&bytes[at..]);
                        at = bytes.len();
                    }
                }
            } else {
                let n = memchr::memchr(b'<', &bytes[at..]).unwrap_or(bytes.len() - at);
                if let Some((_, text)) = &mut self.cell {
                    *text += n as u64;
                }
                at += n;
                if at < bytes.len() {
                    self.in_tag = true;
                    at += 1;
                }
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_TAG.saturating_sub(self.tag.len());
        if bytes.len() > room {
            self.tag_cut = true;
        }
        self.tag.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn on_tag(&mut self, tag: &[u8]) {
        if let Some(end) = tag.strip_prefix(b"/") {
            match name(end) {
                b"table:table-cell" | b"table:covered-table-cell" => self.end_cell(),
                b"table:table-row" => self.end_row(),
                b"table:table" => self.end_sheet(),
                _ => {}
            }
            return;
        }
        let closed = tag.ends_with(b"/");
        match name(tag) {
            b"table:table" => self.end_sheet(),
            b"table:table-row" => {
                self.end_cell();
                self.row_repeats = self.repeats(tag, b"table:number-rows-repeated");
                (self.row_columns, self.row_cells, self.row_text) = (0, 0, 0);
                if closed {
                    self.end_row();
                }
            }
            b"table:table-cell" | b"table:covered-table-cell" => {
                self.end_cell();
                let repeats = self
                    .repeats(tag, b"table:number-columns-repeated")
                    .min(MAX_COLUMNS - self.row_columns.min(MAX_COLUMNS));
                self.row_columns += repeats;
                // A value, a formula or content (text) make a cell calamine keeps, and every
                // cell before it in the row.
                let filled = !closed
                    || has(tag, b"office:value-type")
                    || has(tag, b"table:formula")
                    || self.tag_cut;
                if filled {
                    self.row_cells = self.row_columns;
                    self.cell = if closed { None } else { Some((repeats, 0)) };
                }
            }
            _ => {}
        }
    }

    /// The column repeats of `attr` in `tag` (1 when absent; the most when unreadable).
    fn repeats(&self, tag: &[u8], attr: &[u8]) -> u64 {
        if self.tag_cut {
            return MAX_ROWS.max(MAX_COLUMNS);
        }
        match find(tag, attr) {
            None => 1,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .max(1),
        }
    }

    fn end_cell(&mut self) {
        if let Some((repeats, text)) = self.cell.take() {
            self.row_text = self.row_text.saturating_add(text.saturating_mul(repeats));
        }
    }

    fn end_row(&mut self) {
        self.end_cell();
        let repeats = self
            .row_repeats
            .max(1)
            .min(MAX_ROWS - self.rows.min(MAX_ROWS) - self.empty_rows.min(MAX_ROWS));
        if self.row_cells == 0 {
            self.empty_rows += repeats;
        } else {
            self.rows += self.empty_rows + repeats;
            self.empty_rows = 0;
            self.width = self.width.max(self.row_cells);
            self.raw_cells += self.row_cells;
            self.text = self
                .text
                .saturating_add(self.row_text.saturating_mul(repeats + 1));
        }
        (
            self.row_repeats,
            self.row_columns,
            self.row_cells,
            self.row_text,
        ) = (1, 0, 0, 0);
    }

    fn end_sheet(&mut self) {
        self.end_cell();
        let area = self.rows.saturating_mul(self.width).min(MAX_CELLS);
        let kept = area.saturating_mul(CELL).saturating_add(self.text);
        let raw = self.raw_cells.saturating_mul(CELL);
        self.peak = self
            .peak
            .max(self.kept.saturating_add(raw).saturating_add(kept));
        self.kept = self.kept.saturating_add(kept);
        (
            self.rows,
            self.empty_rows,
            self.width,
            self.raw_cells,
            self.text,
        ) = (0, 0, 0, 0, 0);
    }

    /// What reading every sheet takes at its peak, in bytes.
    pub(crate) fn bytes(&mut self) -> u64 {
        self.end_sheet();
        self.peak
    }
}

/// The element name a tag starts with.
fn name(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/')
        .unwrap_or(tag.len());
    &tag[..end]
}

fn has(tag: &[u8], attr: &[u8]) -> bool {
    find(tag, attr).is_some()
}

/// The value of attribute `attr` (exact name) in `tag`.
fn find<'a>(tag: &'a [u8], attr: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(n) = memchr::memmem::find(&tag[from..], attr) {
        let at = from + n;
        let before = at.checked_sub(1).map(|i| tag[i]);
        let after = tag[at + attr.len()..].trim_ascii_start();
        if before.is_some_and(|b| b.is_ascii_whitespace())
            && let Some(rest) = after.strip_prefix(b"=")
        {
            let rest = rest.trim_ascii_start();
            let quote = *rest.first()?;
            let end = memchr::memchr(quote, &rest[1..])?;
            return Some(&rest[1..1 + end]);
        }
        from = at + attr.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(xml: &str) -> u64 {
        let mut s = OdsSize::default();
        // Fed in pieces, as a stream comes.
        for piece in xml.as_bytes().chunks(7) {
            s.feed(piece);
        }
        s.bytes()
    }

    #[test]
    fn empty_repeats_cost_nothing_and_filled_ones_count() {
        let libreoffice = r#"<table:table table:name="S"><table:table-row><table:table-cell office:value-type="string"><text:p>a</text:p></table:table-cell></table:table-row><table:table-row table:number-rows-repeated="1048575"><table:table-cell table:number-columns-repeated="1024"/></table:table-row></table:table>"#;
        assert!(size(libreoffice) < 1000, "{}", size(libreoffice));
        let bomb = r#"<table:table table:name="S"><table:table-row table:number-rows-repeated="1000000"><table:table-cell table:number-columns-repeated="16384" office:value-type="float" office:value="1"/></table:table-row></table:table>"#;
        assert!(size(bomb) >= MAX_CELLS * CELL, "{}", size(bomb));
        let wide = r#"<table:table><table:table-row><table:table-cell table:number-columns-repeated="16000"/><table:table-cell office:value-type="float"/></table:table-row></table:table>"#;
        assert_eq!(size(wide), 2 * 16_001 * CELL);
    }
}
