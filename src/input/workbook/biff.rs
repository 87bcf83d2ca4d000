//! An `.xls` sized before calamine reads it.
//!
//! `Xls::new` reads every sheet at once: it reserves the rows × columns each `DIMENSIONS` record
//! declares (a record can declare four billion rows), keeps a copy of a shared string for each
//! cell that shows it, and lays each sheet out as one rectangle from its first cell to its
//! farthest (one cell at IV65536 makes 16 million). Some damaged records make it panic (a sheet
//! offset past the stream, a range that runs backwards). So the file is walked here first the
//! way calamine walks it (its compound-file chains, then the records of the workbook stream and
//! of each sheet), adding up what it would allocate; past [`BUDGET`], or at a record calamine
//! cannot survive, the workbook is refused, naming the sheet.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::mem::size_of;

use calamine::{Cell, Data};

use super::limits::{BUDGET, RESAVE, Refusal, cell_name, mib};

/// The largest `.xls` read (Excel 97-2003 sheets hold at most 65,536 rows).
const MAX_FILE: u64 = 64 << 20;

const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
const RESERVED: u32 = 0xFFFF_FFFA;
const DIFAT_SECTOR: u32 = 0xFFFF_FFFC;

/// Checks the `.xls` in `file` (left at its start).
pub(crate) fn check(file: &mut File) -> Result<(), Refusal> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_FILE {
        return Err(Refusal(format!(
            "the .xls file is {}, more than the {} the tool reads in that format (it is held \
             whole): save it as .xlsx (Excel Workbook) or as CSV UTF-8",
            mib(len),
            mib(MAX_FILE)
        )));
    }
    let mut data = Vec::new();
    let read = file
        .read_to_end(&mut data)
        .and_then(|_| file.seek(SeekFrom::Start(0)));
    if let Err(e) = read {
        return Err(Refusal(format!("cannot read it: {e}")));
    }
    let Some(stream) = workbook_stream(&data)? else {
        // No compound file, or no workbook in it: calamine says so.
        return Ok(());
    };
    let used = walk(&stream)?;
    // calamine keeps the file's sectors, its allocation table (at most as large) and the stream.
    let total = (data.len() as u64 * 2)
        .saturating_add(stream.len() as u64)
        .saturating_add(used.bytes);
    if total > BUDGET {
        return Err(Refusal(used.refusal(total)));
    }
    Ok(())
}

fn damaged(what: &str) -> Refusal {
    Refusal(format!(
        "its compound-file structure is damaged ({what}): it is not read; {RESAVE}"
    ))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The sectors of a compound file, as calamine's `Cfb` reads them.
struct Sectors<'a> {
    data: &'a [u8],
    size: usize,
    /// Where sector 0 starts (the header is one sector).
    base: usize,
    maxid: u32,
}

impl<'a> Sectors<'a> {
    fn get(&self, id: u32) -> Result<&'a [u8], Refusal> {
        if id > self.maxid {
            return Err(damaged("a sector past the end of the file"));
        }
        let start = self.base + id as usize * self.size;
        self.data
            .get(start..start + self.size)
            .ok_or_else(|| damaged("a sector cut short"))
    }

    /// The chain from `id` through `fats`, at most `len` bytes (a cycle is refused).
    fn chain(&self, mut id: u32, fats: &[u32], len: usize) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        let mut steps = 0u64;
        while id != END_OF_CHAIN {
            steps += 1;
            if steps > u64::from(self.maxid) + 1 {
                return Err(damaged("a chain of sectors that loops"));
            }
            let sector = self.get(id)?;
            let take = sector.len().min(len - out.len());
            out.extend_from_slice(&sector[..take]);
            if out.len() >= len {
                break;
            }
            id = *fats
                .get(id as usize)
                .ok_or_else(|| damaged("a sector number past the allocation table"))?;
        }
        Ok(out)
    }
}

fn to_u32s(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The `Workbook` (or `Book`) stream, read as calamine reads it; `None` when the file is no
/// compound file or holds no such stream (calamine then says why it cannot read it).
fn workbook_stream(data: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    if data.len() < 512 || data[..8] != *b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1" {
        return Ok(None);
    }
    let size = match u16_at(data, 30) {
        9 => 512,
        12 => 4096,
        _ => return Ok(None),
    };
    let version = u16_at(data, 26);
    let sectors = Sectors {
        data,
        size,
        base: size,
        maxid: (data.len() / size) as u32,
    };
    let mut difat: Vec<u32> = to_u32s(&data[76..512]).collect();
    let mut id = u32_at(data, 68);
    let mut difat_sectors = 0u64;
    while id < RESERVED {
        difat_sectors += 1;
        if difat_sectors > u64::from(sectors.maxid) + 1 {
            return Err(damaged("a DIFAT chain that loops"));
        }
        difat.extend(to_u32s(sectors.get(id)?));
        id = difat
            .pop()
            .ok_or_else(|| damaged("an empty DIFAT sector"))?;
    }
    let fat_sectors = difat.iter().filter(|id| **id < DIFAT_SECTOR).count();
    if (fat_sectors as u64).saturating_mul(size as u64) > data.len() as u64 {
        return Err(damaged("an allocation table larger than the file"));
    }
    let mut fats = Vec::new();
    for id in difat.into_iter().filter(|id| *id < DIFAT_SECTOR) {
        fats.extend(to_u32s(sectors.get(id)?));
    }
    let dirs = sectors.chain(u32_at(data, 48), &fats, usize::MAX)?;
    let dirs: Vec<(String, u32, u64)> = dirs
        .chunks_exact(128)
        .map(|d| {
            let units: Vec<u16> = d[..64]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let len = if size == 512 {
                u64::from(u32_at(d, 120))
            } else {
                u64::from(u32_at(d, 120)) | u64::from(u32_at(d, 124)) << 32
            };
            (String::from_utf16_lossy(&units), u32_at(d, 116), len)
        })
        .collect();
    let Some(root) = dirs.first() else {
        return Ok(None);
    };
    if version != 3 && root.1 == END_OF_CHAIN {
        return Ok(None);
    }
    let file_len = data.len() as u64;
    let mini_fat_len = u32_at(data, 64) as usize;
    let (mini_fats, mini_stream) = if mini_fat_len > 0 {
        if root.2 > file_len || (mini_fat_len as u64).saturating_mul(size as u64) > file_len {
            return Err(damaged("a mini stream larger than the file"));
        }
        let stream = sectors.chain(root.1, &fats, root.2 as usize)?;
        let fat = sectors.chain(u32_at(data, 60), &fats, mini_fat_len * size)?;
        (to_u32s(&fat).collect::<Vec<u32>>(), stream)
    } else {
        (Vec::new(), Vec::new())
    };
    let found = dirs
        .iter()
        .find(|d| d.0.eq_ignore_ascii_case("Workbook"))
        .or_else(|| dirs.iter().find(|d| d.0.eq_ignore_ascii_case("Book")));
    let Some((_, start, len)) = found else {
        return Ok(None);
    };
    if *len > file_len {
        return Err(damaged("a stream larger than the file"));
    }
    let len = *len as usize;
    if len < 4096 {
        let mini = Sectors {
            data: &mini_stream,
            size: 64,
            base: 0,
            maxid: sectors.maxid.saturating_mul(8),
        };
        mini.chain(*start, &mini_fats, len).map(Some)
    } else {
        sectors.chain(*start, &fats, len).map(Some)
    }
}

/// One BIFF record: its type, its data, and the data of the `CONTINUE` records after it.
struct Record<'a> {
    typ: u16,
    data: &'a [u8],
    cont: Vec<&'a [u8]>,
}

/// The records from the start of `stream`, as calamine's `RecordIter` cuts them; stops at a
/// record cut short (calamine stops there with an error).
fn records(mut stream: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if stream.len() < 4 {
            return None;
        }
        let typ = u16_at(stream, 0);
        let len = usize::from(u16_at(stream, 2));
        if stream.len() < len + 4 {
            return None;
        }
        let data = &stream[4..len + 4];
        stream = &stream[len + 4..];
        let mut cont = Vec::new();
        while stream.len() > 4 && u16_at(stream, 0) == 0x003C {
            let len = usize::from(u16_at(stream, 2));
            if stream.len() < len + 4 {
                return None;
            }
            cont.push(&stream[4..len + 4]);
            stream = &stream[len + 4..];
        }
        Some(Record { typ, data, cont })
    })
}

/// The UTF-8 length, at most, of each string of an `SST` record (calamine keeps them all, and a
/// copy in each cell that shows one).
fn shared_string_lengths(r: &Record<'_>) -> Vec<u64> {
    let mut lengths = Vec::new();
    let mut parts = std::iter::once(r.data).chain(r.cont.iter().copied());
    let Some(first) = parts.next() else {
        return lengths;
    };
    let mut data = first.get(8..).unwrap_or_default();
    loop {
        if data.is_empty() {
            match parts.next() {
                Some(next) => data = next,
                None => return lengths,
            }
            continue;
        }
        if data.len() < 3 {
            return lengths;
        }
        let cch = usize::from(u16_at(data, 0));
        let flags = data[2];
        data = &data[3..];
        let mut extra = 0;
        if flags & 0x8 != 0 {
            extra += usize::from(u16_at(data, 0)) * 4;
            data = data.get(2..).unwrap_or_default();
        }
        if flags & 0x4 != 0 {
            extra += u32_at(data, 0) as usize;
            data = data.get(4..).unwrap_or_default();
        }
        lengths.push(cch as u64 * 3);
        // The characters, one or two bytes each; a continuation restates the width.
        let mut left = cch;
        let mut wide = flags & 0x1 != 0;
        loop {
            let width = if wide { 2 } else { 1 };
            let here = left.min(data.len() / width);
            data = &data[here * width..];
            left -= here;
            if left == 0 {
                break;
            }
            match parts.next() {
                Some(next) if !next.is_empty() => {
                    wide = next[0] & 0x1 != 0;
                    data = &next[1..];
                }
                _ => return lengths,
            }
        }
        // Its formatting runs and phonetic text, over the record's continuations.
        while extra > 0 {
            if data.is_empty() {
                match parts.next() {
                    Some(next) => data = next,
                    None => return lengths,
                }
            }
            let l = extra.min(data.len());
            data = &data[l..];
            extra -= l;
        }
    }
}

/// What reading the sheets would allocate, and the sheet that takes the most.
#[derive(Default)]
struct Used {
    bytes: u64,
    worst: Option<Sheet>,
}

/// One sheet as calamine would read it.
#[derive(Default, Clone)]
struct Sheet {
    name: String,
    /// Cells reserved by `DIMENSIONS` records, and the largest range one declared.
    reserved: u64,
    declared: Option<(u64, u64, u64, u64)>,
    cells: u64,
    formulas: u64,
    /// Text copied into cells.
    text: u64,
    /// First and last row and column of the cells, and of the formulas.
    span: Option<(u64, u64, u64, u64)>,
    formula_span: Option<(u64, u64, u64, u64)>,
}

fn widen(span: &mut Option<(u64, u64, u64, u64)>, row: u64, col: u64) {
    *span = Some(match *span {
        None => (row, col, row, col),
        Some((r0, c0, r1, c1)) => (r0.min(row), c0.min(col), r1.max(row), c1.max(col)),
    });
}

fn area(span: Option<(u64, u64, u64, u64)>) -> u64 {
    span.map_or(0, |(r0, c0, r1, c1)| (r1 - r0 + 1) * (c1 - c0 + 1))
}

impl Sheet {
    fn cell(&mut self, row: u16, col: u16, text: u64) {
        self.cells += 1;
        self.text = self.text.saturating_add(text);
        widen(&mut self.span, u64::from(row), u64::from(col));
    }

    /// What the sheet keeps once read: its range (and its formulas').
    fn kept(&self) -> u64 {
        area(self.span)
            .saturating_mul(size_of::<Data>() as u64)
            .saturating_add(self.text)
            .saturating_add(area(self.formula_span).saturating_mul(size_of::<String>() as u64))
            .saturating_add(self.formulas.saturating_mul(256))
    }

    /// What reading it takes at its peak: the cells gathered, then laid out.
    fn peak(&self) -> u64 {
        let gathered = self
            .reserved
            .saturating_add(self.cells.saturating_mul(2))
            .saturating_mul(size_of::<Cell<Data>>() as u64)
            .saturating_add(
                self.formulas
                    .saturating_mul(2 * size_of::<Cell<String>>() as u64),
            );
        gathered.saturating_add(self.kept())
    }
}

impl Used {
    fn refusal(&self, total: u64) -> String {
        let Some(s) = &self.worst else {
            return format!(
                "reading it would take about {} of memory, more than the {} the tool allows \
                 itself: {RESAVE}",
                mib(total),
                mib(BUDGET)
            );
        };
        let what = match (s.declared, s.span) {
            (Some((r0, c0, r1, c1)), _) if s.reserved > area(s.span) => format!(
                "declares the range {}:{} ({} cells) in its DIMENSIONS record",
                cell_name(r0, c0),
                cell_name(r1, c1),
                (r1 - r0 + 1) * (c1 - c0 + 1)
            ),
            (_, Some((r0, c0, r1, c1))) => format!(
                "holds cells from {} to {} ({} cells laid out, {} of them filled)",
                cell_name(r0, c0),
                cell_name(r1, c1),
                area(s.span),
                s.cells
            ),
            _ => format!("holds {} cells", s.cells),
        };
        format!(
            "sheet \"{}\" {what}: reading the workbook would take about {} of memory, more than \
             the {} the tool allows itself. It is not read; if the sheet is genuine, delete the \
             rows and columns past the table and save it as .xlsx (Excel Workbook), or save it \
             as CSV UTF-8",
            s.name,
            mib(total),
            mib(BUDGET)
        )
    }
}

/// Walks the workbook stream as `Xls::new` does: the globals (shared strings, the sheets'
/// offsets), then each sheet's records.
fn walk(stream: &[u8]) -> Result<Used, Refusal> {
    let mut strings: Vec<u64> = Vec::new();
    let mut sheets: Vec<(usize, String)> = Vec::new();
    for r in records(stream) {
        match r.typ {
            0x002F if u16_at(r.data, 0) != 0 => return Ok(Used::default()),
            0x00FC => strings = shared_string_lengths(&r),
            0x0085 => {
                if r.data.len() < 6 {
                    return Err(damaged("a sheet entry cut short"));
                }
                sheets.push((u32_at(r.data, 0) as usize, sheet_name(r.data, sheets.len())));
            }
            0x000A => break,
            _ => {}
        }
    }
    let mut used = Used {
        bytes: strings.iter().fold(0u64, |n, l| n.saturating_add(24 + l)),
        worst: None,
    };
    let mut kept = 0u64;
    let mut peak = 0u64;
    let mut largest_kept = 0u64;
    for (pos, name) in sheets {
        let Some(records_at) = stream.get(pos..) else {
            return Err(damaged(&format!(
                "sheet \"{name}\" starts past the end of the workbook stream"
            )));
        };
        let sheet = walk_sheet(records_at, name, &strings)?;
        peak = peak.max(kept.saturating_add(sheet.peak()));
        kept = kept.saturating_add(sheet.kept());
        largest_kept = largest_kept.max(sheet.kept());
        if used.worst.as_ref().is_none_or(|w| sheet.peak() > w.peak()) {
            used.worst = Some(sheet);
        }
    }
    // The sheet read is then copied out of the workbook.
    used.bytes = used
        .bytes
        .saturating_add(peak.max(kept.saturating_add(largest_kept)));
    Ok(used)
}

/// A sheet's name from its `BoundSheet8` record (for messages: BIFF8, else its number).
fn sheet_name(data: &[u8], index: usize) -> String {
    let fallback = || format!("sheet {}", index + 1);
    let (Some(&cch), Some(&flags)) = (data.get(6), data.get(7)) else {
        return fallback();
    };
    let cch = usize::from(cch);
    let chars = &data[8.min(data.len())..];
    if flags & 1 != 0 {
        let units: Vec<u16> = chars
            .chunks_exact(2)
            .take(cch)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        chars.iter().take(cch).map(|b| char::from(*b)).collect()
    }
}

fn walk_sheet(stream: &[u8], name: String, strings: &[u64]) -> Result<Sheet, Refusal> {
    let mut s = Sheet {
        name,
        ..Sheet::default()
    };
    let mut seen_bof = false;
    let mut depth = 0usize;
    let mut formula_at = (0u16, 0u16);
    for r in records(stream) {
        if depth > 0 {
            match r.typ {
                0x0809 => depth += 1,
                0x000A => depth -= 1,
                _ => {}
            }
            continue;
        }
        let d = r.data;
        let at = (u16_at(d, 0), u16_at(d, 2));
        match r.typ {
            0x0809 if seen_bof => depth += 1,
            0x0809 => seen_bof = true,
            0x0200 => {
                let (rf, rl, cf, cl) = match d.len() {
                    10 => (
                        u64::from(u16_at(d, 0)),
                        u64::from(u16_at(d, 2)),
                        u64::from(u16_at(d, 4)),
                        u64::from(u16_at(d, 6)),
                    ),
                    14 | 16 => (
                        u64::from(u32_at(d, 0)),
                        u64::from(u32_at(d, 4)),
                        u64::from(u16_at(d, 8)),
                        u64::from(u16_at(d, 10)),
                    ),
                    _ => break,
                };
                let cf = if cf > 0xFF || cl < cf { 0 } else { cf };
                let (start, end) = if rl >= 1 && cl >= 1 {
                    ((rf, cf), (rl - 1, cl - 1))
                } else {
                    ((rf, cf), (rf, cf))
                };
                if end.0 < start.0 {
                    return Err(Refusal(format!(
                        "sheet \"{}\" declares rows {} to {} in its DIMENSIONS record, the last \
                         before the first: the file is damaged. It is not read; {RESAVE}",
                        s.name,
                        start.0 + 1,
                        end.0 + 1
                    )));
                }
                let cells = (end.0 - start.0 + 1) * (end.1 - start.1 + 1);
                s.reserved = s.reserved.saturating_add(cells);
                if s.declared
                    .is_none_or(|(r0, c0, r1, c1)| cells > (r1 - r0 + 1) * (c1 - c0 + 1))
                {
                    s.declared = Some((start.0, start.1, end.0, end.1));
                }
            }
            // Number, BoolErr, Rk.
            0x0203 | 0x0205 | 0x027E if d.len() >= 4 => s.cell(at.0, at.1, 0),
            // Label, RString: a string of at most the record's bytes.
            0x0204 | 0x00D6 if d.len() >= 4 => {
                let text = (d.len() + r.cont.iter().map(|c| c.len()).sum::<usize>()) as u64 * 3;
                s.cell(at.0, at.1, text);
            }
            // LabelSst: a copy of the shared string.
            0x00FD if d.len() >= 10 => {
                if let Some(len) = strings.get(u32_at(d, 6) as usize) {
                    s.cell(at.0, at.1, *len);
                }
            }
            0x00BD if d.len() >= 6 => {
                let first = u16_at(d, 2);
                let last = u16_at(d, d.len() - 2);
                if last < first {
                    return Err(Refusal(format!(
                        "sheet \"{}\" has a row of numbers whose last column comes before its \
                         first: the file is damaged. It is not read; {RESAVE}",
                        s.name
                    )));
                }
                if d.len() != 6 + 6 * usize::from(last - first + 1) {
                    break;
                }
                for col in first..=last {
                    s.cell(at.0, col, 0);
                }
            }
            0x0006 => {
                if d.len() < 20 {
                    break;
                }
                formula_at = at;
                s.cell(at.0, at.1, 0);
                s.formulas += 1;
                widen(&mut s.formula_span, u64::from(at.0), u64::from(at.1));
            }
            0x0207 => {
                let text = (d.len() + r.cont.iter().map(|c| c.len()).sum::<usize>()) as u64 * 3;
                s.cell(formula_at.0, formula_at.1, text);
            }
            0x000A => break,
            _ => {}
        }
    }
    Ok(s)
}
