//! What a workbook declares, checked against what it holds, before calamine reads it.
//!
//! calamine trusts the sizes a file declares: `Xlsx::new` reserves the shared-strings count the
//! file states (a 2 KB file that declares 10^11 strings aborts the process), and `Xls::new`
//! reserves the rows × columns a `DIMENSIONS` record states and lays every sheet out as one
//! rectangle from its first cell to its farthest. None of that can be told to calamine, and it
//! all happens inside its constructors, so the archive is inspected first:
//!
//! - a zip (`.xlsx`, `.ods`): from its central directory, each part's declared size and
//!   compression ratio (the zip reader stops a part at its declared size, so that size bounds
//!   what inflating it can produce); then the parts calamine holds whole (shared strings,
//!   styles, the workbook and its relations) are read as a stream, without keeping them, to
//!   size what calamine would build from them; the largest text or tag in a sheet part bounds
//!   one cell;
//! - an `.xls`: see `biff`.
//!
//! Memory for any input stays under [`BUDGET`]. A refusal names the part or the sheet and what
//! to do: re-save the workbook in Excel (which writes honest sizes), or save it as CSV UTF-8.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek as _, SeekFrom};

use zip::ZipArchive;

use super::ods_size::OdsSize;

/// What reading a workbook may take, all told (the process stays under 200 MiB).
pub(crate) const BUDGET: u64 = 160 << 20;

/// A part whose declared size is past this and its compression ratio past [`MAX_RATIO`] is a
/// zip bomb: no spreadsheet XML compresses 200 to 1 (deflate reaches 1032 to 1 on one byte
/// repeated).
const BOMB_FLOOR: u64 = 1 << 20;
const MAX_RATIO: u64 = 200;

/// A text or a tag longer than this in a sheet part is none Excel writes (a cell holds at most
/// 32,767 characters).
const MAX_RUN: u64 = 4 << 20;

/// What calamine keeps per XML element of a part it holds whole (styles, relations: a struct
/// with a few strings), generously.
const PER_ELEMENT: u64 = 256;

/// Why a workbook is refused before it is read: what it declares, and what to do.
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

/// What to do about a workbook that declares more than it holds.
pub(crate) const RESAVE: &str = "if the workbook is genuine, open it in Excel and save it again \
     (Excel writes sizes that match), or save the sheet as CSV UTF-8";

/// What the inspection of a zip found that `Workbook::open` checks once the sheet is chosen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Parts {
    /// The largest sheet part, inflated: a sheet's declared dimension is checked against it.
    pub(crate) largest_sheet: u64,
}

/// Inspects a zip workbook (`.xlsx`, `.xlsm`, `.ods`) before calamine opens it. A file that is
/// no readable zip passes: calamine then says why it cannot read it.
pub(crate) fn check_zip(file: &mut File) -> Result<Parts, Refusal> {
    let start = |file: &mut File| file.seek(SeekFrom::Start(0)).map(drop);
    let result = inspect_zip(file);
    start(file).map_err(|e| Refusal(format!("cannot read it again: {e}")))?;
    result
}

fn inspect_zip(file: &mut File) -> Result<Parts, Refusal> {
    let Ok(mut archive) = ZipArchive::new(BufReader::new(&mut *file)) else {
        return Ok(Parts::default());
    };
    let mut parts = Parts::default();
    let mut held: u64 = 0;
    for i in 0..archive.len() {
        let Ok(entry) = archive.by_index_raw(i) else {
            continue;
        };
        let name = entry
            .name()
            .map_or_else(|_| format!("#{i}"), |n| n.into_owned());
        let (size, packed) = (entry.size(), entry.compressed_size());
        drop(entry);
        if size > BOMB_FLOOR && size / packed.max(1) > MAX_RATIO {
            return Err(Refusal(format!(
                "its part {name} declares {} once inflated from {} ({} to 1): no workbook \
                 compresses so far, this one is built to exhaust memory (a zip bomb). It is \
                 not read; {RESAVE}",
                mib(size),
                mib(packed),
                size / packed.max(1)
            )));
        }
        let kind = Kind::of(&name);
        if kind == Kind::Other {
            continue;
        }
        if matches!(kind, Kind::SharedStrings | Kind::Held) && held.saturating_add(size) > BUDGET {
            return Err(Refusal(format!(
                "its part {name} declares {} once inflated (from {}), and the tool holds that \
                 part whole: more than the {} it allows itself. It is not read; {RESAVE}",
                mib(size),
                mib(packed),
                mib(BUDGET)
            )));
        }
        let Ok(reader) = archive.by_index(i) else {
            continue;
        };
        let ods = name.eq_ignore_ascii_case("content.xml");
        let scan = scan(reader, kind == Kind::SharedStrings, ods)
            .map_err(|e| Refusal(format!("cannot read its part {name}: {e}")))?;
        match kind {
            Kind::SharedStrings => {
                if let Some(declared) = scan.unique_count
                    && declared > size / MIN_SI
                {
                    return Err(Refusal(format!(
                        "its shared strings ({name}) declare {declared} distinct texts, but \
                         the part's {size} bytes hold at most {}: the count is forged or the \
                         file damaged. It is not read; {RESAVE}",
                        size / MIN_SI
                    )));
                }
                held = held.saturating_add(shared_strings_memory(
                    scan.unique_count.unwrap_or(0),
                    scan.strings,
                    size,
                ));
            }
            Kind::Held => {
                held = held
                    .saturating_add(size)
                    .saturating_add(scan.elements.saturating_mul(PER_ELEMENT));
            }
            Kind::Sheet => {
                parts.largest_sheet = parts.largest_sheet.max(size);
                // OpenDocument: every sheet laid out whole.
                held = held.saturating_add(scan.laid_out);
                if scan.longest_run > MAX_RUN {
                    return Err(Refusal(format!(
                        "its part {name} holds a text or tag of {} (an Excel cell holds at most \
                         32,767 characters): it is not read; {RESAVE}",
                        mib(scan.longest_run)
                    )));
                }
            }
            Kind::Other => {}
        }
        if held > BUDGET {
            return Err(Refusal(format!(
                "what it holds whole (shared strings, styles, relations, OpenDocument sheets \
                 with their repeated cells) would take about {} of memory to read, more than \
                 the {} the tool allows itself (the parts declare more than a store list \
                 holds). It is not read; {RESAVE}",
                mib(held),
                mib(BUDGET)
            )));
        }
    }
    Ok(parts)
}

/// The smallest XML of one shared string calamine keeps: `<si/>`.
const MIN_SI: u64 = 5;

/// What calamine's shared-strings table takes: a `String` per entry (the vector reserved at
/// the declared count, or grown by doubling), each one's text and allocation.
fn shared_strings_memory(declared: u64, found: u64, size: u64) -> u64 {
    let slots = if found <= declared {
        declared
    } else {
        found.saturating_mul(2)
    };
    slots
        .saturating_mul(24)
        .saturating_add(found.saturating_mul(32))
        .saturating_add(size)
}

/// The parts of a zip workbook, by what calamine does with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `sharedStrings.xml`: held whole, reserved at its declared count.
    SharedStrings,
    /// Styles, theme, the workbook and relations: held whole when the workbook is opened.
    Held,
    /// A worksheet of an `.xlsx`, or an OpenDocument `content.xml`: read as a stream (the
    /// OpenDocument sheets are then held as calamine lays them out).
    Sheet,
    /// Pictures, printer settings and the like: never read.
    Other,
}

impl Kind {
    fn of(name: &str) -> Kind {
        let name = name.replace('\\', "/").to_ascii_lowercase();
        let file = name.rsplit('/').next().unwrap_or(&name);
        if file == "sharedstrings.xml" {
            Kind::SharedStrings
        } else if name.contains("worksheets/") && !name.contains("_rels/") && file.ends_with(".xml")
            || name == "content.xml"
        {
            Kind::Sheet
        } else if file.ends_with(".rels")
            || matches!(file, "styles.xml" | "workbook.xml" | "meta.xml")
            || file.starts_with("theme") && file.ends_with(".xml")
        {
            Kind::Held
        } else {
            Kind::Other
        }
    }
}

/// What a part holds, read as a stream.
#[derive(Debug, Default)]
struct Scan {
    /// XML elements (a `<` that opens a tag).
    elements: u64,
    /// The longest run of bytes without a `<` or a `>` (a text, or the inside of a tag).
    longest_run: u64,
    /// `si` elements (shared strings), at least.
    strings: u64,
    /// What calamine lays an OpenDocument `content.xml` out into (see `ods_size`).
    laid_out: u64,
    /// `uniqueCount` of the `sst` element (shared strings only).
    unique_count: Option<u64>,
}

/// Reads `part` to its end (at most its declared size: the zip reader stops there).
fn scan(mut part: impl Read, shared_strings: bool, ods: bool) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut laid_out = ods.then(OdsSize::default);
    let mut buf = vec![0u8; 64 * 1024];
    // The start of the part, until the `sst` start tag is complete.
    let mut head: Vec<u8> = Vec::new();
    let mut want_head = shared_strings;
    // Bytes since the last `<` or `>`: a text, or the inside of a tag.
    let mut gap = 0u64;
    loop {
        let n = match part.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if let Some(sizer) = &mut laid_out {
            sizer.feed(chunk);
        }
        let mut at = 0;
        for i in memchr::memchr2_iter(b'<', b'>', chunk) {
            gap += (i - at) as u64;
            scan.longest_run = scan.longest_run.max(gap);
            gap = 0;
            if chunk[i] == b'<' {
                scan.elements += 1;
                // A shared string's tag cut by the chunk's end is counted (over, not under).
                let after = &chunk[i + 1..];
                if after.len() < 64 || opens_si(after) {
                    scan.strings += 1;
                }
            }
            at = i + 1;
        }
        gap += (n - at) as u64;
        scan.longest_run = scan.longest_run.max(gap);
        if want_head {
            head.extend_from_slice(chunk);
            if let Some(count) = sst_unique_count(&head) {
                scan.unique_count = count;
                want_head = false;
                head = Vec::new();
            } else if head.len() > 1 << 20 {
                want_head = false;
                head = Vec::new();
            }
        }
    }
    scan.laid_out = laid_out.map_or(0, |mut s| s.bytes());
    Ok(scan)
}

/// Whether the bytes after a `<` open an `si` element (any namespace prefix).
fn opens_si(after: &[u8]) -> bool {
    let name_end = after
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')))
        .unwrap_or(after.len());
    let name = &after[..name_end];
    name.rsplit(|b| *b == b':').next() == Some(b"si")
}

/// The `uniqueCount` of the first `sst` start tag in `head`: `None` while the tag is not
/// complete, `Some(None)` when it states none. A count past `u64` saturates.
fn sst_unique_count(head: &[u8]) -> Option<Option<u64>> {
    let mut at = 0;
    let tag = loop {
        let open = at + memchr::memchr(b'<', &head[at..])?;
        let close = open + memchr::memchr(b'>', &head[open..])?;
        let tag = &head[open + 1..close];
        let name_end = tag
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .unwrap_or(tag.len());
        let name = &tag[..name_end];
        let local = name.rsplit(|b| *b == b':').next().unwrap_or(name);
        if local == b"sst" {
            break &tag[name_end..];
        }
        at = close;
    };
    Some(attribute(tag, b"uniqueCount").map(|v| {
        let digits = v.strip_prefix(b"+").unwrap_or(v);
        digits
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            })
    }))
}

/// The value of attribute `name` (any namespace prefix) in the attributes of a tag.
fn attribute<'a>(attrs: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = attrs;
    loop {
        let eq = memchr::memchr(b'=', rest)?;
        let key = rest[..eq].trim_ascii();
        let key = key
            .rsplit(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(key);
        let local = key.rsplit(|b| *b == b':').next().unwrap_or(key);
        let after = rest[eq + 1..].trim_ascii_start();
        let quote = *after.first()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let end = memchr::memchr(quote, &after[1..])?;
        let value = &after[1..1 + end];
        if local == name {
            return Some(value.trim_ascii());
        }
        rest = &after[end + 2..];
    }
}

/// A size for a person: `1.5 MiB`, `12 KiB`, `800 bytes`.
pub(crate) fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// The cell reference Excel shows for a 0-based row and column: `A1`, `XFD1048576`.
pub(crate) fn cell_name(row: u64, col: u64) -> String {
    let mut letters = Vec::new();
    let mut c = col + 1;
    while c > 0 {
        letters.push(b'A' + ((c - 1) % 26) as u8);
        c = (c - 1) / 26;
    }
    letters.reverse();
    format!("{}{}", String::from_utf8_lossy(&letters), row + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_count_is_read_from_the_sst_tag() {
        let head = br#"<?xml version="1.0"?><sst xmlns="x" count="9" uniqueCount="99999999999">"#;
        assert_eq!(sst_unique_count(head), Some(Some(99_999_999_999)));
        assert_eq!(
            sst_unique_count(b"<x:sst uniqueCount = '12' >"),
            Some(Some(12))
        );
        assert_eq!(sst_unique_count(b"<sst count=\"3\">"), Some(None));
        assert_eq!(sst_unique_count(b"<sst count=\"3\""), None);
        assert_eq!(
            sst_unique_count(b"<sst uniqueCount=\"99999999999999999999999\">"),
            Some(Some(u64::MAX))
        );
    }

    #[test]
    fn shared_strings_are_counted_by_their_tags() {
        let xml = b"<sst><si><t>a</t></si><x:si/><si>\n<t>b</t></si><sis/></sst>";
        let scan = scan(&xml[..], true, false).unwrap();
        // Tags near the end of a chunk count whatever they are: an over-count, never under.
        assert!(scan.strings >= 3, "{scan:?}");
        assert!(opens_si(b"si>") && opens_si(b"x:si/>") && opens_si(b"si "));
        assert!(!opens_si(b"sis/>") && !opens_si(b"t>") && !opens_si(b"/si>"));
    }

    #[test]
    fn parts_are_known_by_what_calamine_does_with_them() {
        assert_eq!(Kind::of("xl/sharedStrings.xml"), Kind::SharedStrings);
        assert_eq!(Kind::of("XL\\SHAREDSTRINGS.XML"), Kind::SharedStrings);
        assert_eq!(Kind::of("xl/worksheets/sheet1.xml"), Kind::Sheet);
        assert_eq!(Kind::of("xl/worksheets/_rels/sheet1.xml.rels"), Kind::Held);
        assert_eq!(Kind::of("xl/styles.xml"), Kind::Held);
        assert_eq!(Kind::of("xl/theme/theme1.xml"), Kind::Held);
        assert_eq!(Kind::of("xl/media/image1.png"), Kind::Other);
        assert_eq!(Kind::of("content.xml"), Kind::Sheet);
    }

    #[test]
    fn cells_are_named_as_excel_shows_them() {
        assert_eq!(cell_name(0, 0), "A1");
        assert_eq!(cell_name(1_048_575, 16_383), "XFD1048576");
        assert_eq!(cell_name(9, 26), "AA10");
    }
}
