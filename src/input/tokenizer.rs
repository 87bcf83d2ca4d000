//! Records of a CSV byte stream, as `csv::Reader` reads them with the options the input uses
//! (no headers, flexible, `"` quotes, only LF ends a record), with a fast path: a line that holds
//! no `"` is one record whose cells are the line split at `,` (what csv-core's state machine
//! makes of it, at about a tenth of the cost), and an empty line is skipped, as csv-core does.
//! Any other record is read by csv-core itself, from the same position.
//!
//! A record is at most [`MAX_RECORD`] bytes: past that (a quote never closed pulls the rest of
//! the file into one record) reading stops with a [`ReadError`] naming where the record, or the
//! quote that never closes, starts.

use std::io::{self, Read};

use csv_core::ReadRecordResult;

/// One record: its bytes and where each cell is in them. A quote-free line is kept as it is
/// (commas included: a cell is a slice between them); a record read by csv-core holds its
/// cells back to back, as `csv::ByteRecord` does. Either way `bytes` holds a line feed only
/// where a cell does, and is valid UTF-8 exactly when every cell is.
#[derive(Debug, Default)]
pub(crate) struct Record {
    bytes: Vec<u8>,
    cells: Vec<(usize, usize)>,
}

impl Record {
    /// The bytes the cells are slices of.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each cell is in `bytes()`.
    pub(crate) fn ranges(&self) -> &[(usize, usize)] {
        &self.cells
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.cells.iter().map(|&(s, e)| &self.bytes[s..e])
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.cells.clear();
    }

    /// Appends one cell (a workbook's rows are built cell by cell).
    pub(crate) fn push_cell(&mut self, text: &str) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text.as_bytes());
        self.cells.push((start, self.bytes.len()));
    }

    /// A line without quotes: the cells are the bytes between commas.
    fn set_line(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        let mut from = 0;
        for (i, b) in line.iter().enumerate() {
            if *b == b',' {
                self.cells.push((from, i));
                from = i + 1;
            }
        }
        self.cells.push((from, line.len()));
    }
}

/// Bytes read from the stream at a time (the buffer grows for a longer line).
const CHUNK: usize = 64 * 1024;

/// The longest record read (1 MiB): a row of a store list is a few hundred bytes.
pub(crate) const MAX_RECORD: usize = 1024 * 1024;

/// Why a record cannot be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The record starting at `line` is longer than [`MAX_RECORD`]; `quote`: where a quote
    /// still open then was opened (line, column), the likely cause.
    TooLong {
        line: u64,
        quote: Option<(u64, u64)>,
    },
    /// A quote opened at `line`, `column` (1-based, in characters) is never closed: the record
    /// ran to the end of the file.
    OpenQuote {
        line: u64,
        column: u64,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Follows the quotes of a record read by csv-core as its bytes go by, to say where a quote
/// that never closes was opened (csv-core does not tell).
#[derive(Debug, Default)]
struct Quotes {
    line: u64,
    /// 1-based column, in characters, of the next byte.
    column: u64,
    /// At the start of a cell: a `"` there opens a quoted cell.
    cell_start: bool,
    /// Inside a quoted cell, and where its quote is.
    open: Option<(u64, u64)>,
    /// Inside a quoted cell, the byte before was a `"`: it closes the cell unless this one is
    /// a `"` too (an escaped quote).
    quote_seen: bool,
}

impl Quotes {
    fn new(line: u64) -> Quotes {
        Quotes {
            line,
            column: 1,
            cell_start: true,
            ..Quotes::default()
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.open.is_some() {
                if self.quote_seen {
                    self.quote_seen = false;
                    if b != b'"' {
                        // The quote closed the cell; what follows is read as csv-core reads it.
                        self.open = None;
                        self.cell_start = b == b',' || b == b'\n';
                    }
                } else if b == b'"' {
                    self.quote_seen = true;
                }
            } else if b == b'"' && self.cell_start {
                self.open = Some((self.line, self.column));
                self.cell_start = false;
            } else {
                self.cell_start = b == b',' || b == b'\n';
            }
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if !(0x80..0xC0).contains(&b) {
                self.column += 1;
            }
        }
    }

    /// The quote still open at the end of what was fed, if any.
    fn unclosed(&self) -> Option<(u64, u64)> {
        self.open.filter(|_| !self.quote_seen)
    }
}

pub(crate) struct Records {
    stream: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Unconsumed bytes: `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// 1 + the line feeds consumed so far (`csv::Position::line` after a record).
    line: u64,
    core: csv_core::Reader,
    /// csv-core's output for one record: the cells back to back, and where each ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    pub(crate) fn new(stream: Box<dyn Read + Send>) -> Records {
        Records {
            stream,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            core: csv_core::ReaderBuilder::new()
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            fields: vec![0; 1024],
            ends: vec![0; 32],
        }
    }

    /// The line the reader is at: 1 + the line feeds consumed so far.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Reads the next record into `record`; `false` at the end of the stream.
    pub(crate) fn read(&mut self, record: &mut Record) -> Result<bool, ReadError> {
        record.clear();
        loop {
            // Blank lines are skipped, as csv-core skips them.
            while self.start < self.end && self.buf[self.start] == b'\n' {
                self.start += 1;
                self.line += 1;
            }
            if self.start == self.end {
                if self.eof {
                    return Ok(false);
                }
                self.fill()?;
                continue;
            }
            let rest = &self.buf[self.start..self.end];
            match memchr::memchr2(b'\n', b'"', rest) {
                Some(n) if n > MAX_RECORD => {
                    return Err(ReadError::TooLong {
                        line: self.line,
                        quote: None,
                    });
                }
                Some(n) if rest[n] == b'\n' => {
                    record.set_line(&rest[..n]);
                    self.start += n + 1;
                    self.line += 1;
                    return Ok(true);
                }
                Some(_) => return self.read_quoted(record),
                // The stream ends without a line feed: the rest is the last record.
                None if self.eof => {
                    record.set_line(rest);
                    self.start = self.end;
                    return Ok(true);
                }
                None if rest.len() > MAX_RECORD => {
                    return Err(ReadError::TooLong {
                        line: self.line,
                        quote: None,
                    });
                }
                // The line goes on beyond the buffer.
                None => self.fill()?,
            }
        }
    }

    /// A record with a quote in its first line: csv-core reads it, over as many lines and
    /// reads of the stream as it takes.
    fn read_quoted(&mut self, record: &mut Record) -> Result<bool, ReadError> {
        let (mut nfields, mut nends) = (0, 0);
        let first = self.line;
        let mut quotes = Quotes::new(self.line);
        loop {
            let input = &self.buf[self.start..self.end];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[nfields..], &mut self.ends[nends..]);
            quotes.feed(&input[..nin]);
            self.line += memchr::memchr_iter(b'\n', &input[..nin]).count() as u64;
            self.start += nin;
            nfields += nout;
            nends += nend;
            match res {
                ReadRecordResult::InputEmpty => self.fill()?,
                ReadRecordResult::OutputFull if self.fields.len() >= MAX_RECORD => {
                    return Err(ReadError::TooLong {
                        line: first,
                        quote: quotes.unclosed(),
                    });
                }
                ReadRecordResult::OutputFull => {
                    let n = self.fields.len();
                    self.fields.resize(n * 2, 0);
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() >= MAX_RECORD => {
                    return Err(ReadError::TooLong {
                        line: first,
                        quote: quotes.unclosed(),
                    });
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len();
                    self.ends.resize(n * 2, 0);
                }
                // The stream ended inside the quotes: the rest of the file is no cell.
                ReadRecordResult::Record | ReadRecordResult::End
                    if self.eof && self.start == self.end && quotes.unclosed().is_some() =>
                {
                    let (line, column) = quotes.unclosed().unwrap_or((first, 1));
                    return Err(ReadError::OpenQuote { line, column });
                }
                ReadRecordResult::Record => {
                    record.bytes.extend_from_slice(&self.fields[..nfields]);
                    let mut from = 0;
                    for &to in &self.ends[..nends] {
                        record.cells.push((from, to));
                        from = to;
                    }
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }

    /// Reads more of the stream after the unconsumed bytes (moved to the front of the buffer,
    /// which doubles when they fill it). At the end of the stream, sets `eof`.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csv::ByteRecord;

    /// Records as `csv::Reader` reads them with the input's options, and their lines.
    fn with_csv(data: &[u8]) -> Vec<(Vec<Vec<u8>>, u64)> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(data);
        let mut out = Vec::new();
        let mut r = ByteRecord::new();
        while csv.read_byte_record(&mut r).unwrap() {
            out.push((
                r.iter().map(<[u8]>::to_vec).collect(),
                csv.position().line(),
            ));
        }
        out.push((Vec::new(), csv.position().line()));
        out
    }

    fn with_records(data: &[u8], chunk: usize) -> Vec<(Vec<Vec<u8>>, u64)> {
        let mut records = Records::new(Box::new(io::Cursor::new(data.to_vec())));
        records.buf = vec![0; chunk];
        let mut out = Vec::new();
        let mut r = Record::default();
        while records.read(&mut r).unwrap() {
            out.push((r.iter().map(<[u8]>::to_vec).collect(), records.line()));
        }
        out.push((Vec::new(), records.line()));
        out
    }

    #[test]
    fn same_records_and_lines_as_the_csv_crate() {
        let cases: [&[u8]; 11] = [
            b"a,b,c\n1,2,3\n",
            b"a,b\r\n\r\n1,2\r\n",
            b"\n\n a , b \n\n\nx\n",
            b"a,\"b,\nc\",d\n\"e\"\"f\",g\nh,i\n",
            b"a,\"b\"x,c\n\"\n\",\"\"\n",
            b"a,b\nc,d",
            b",,,\n,\n",
            b"x\"y,z\n1,2\n",
            b"",
            b"\"\"\n\n\"\n\n\"\n",
            "名,\"店\n舖\",1\n2,3\n".as_bytes(),
        ];
        for data in cases {
            for chunk in [1, 2, 3, 7, 64] {
                assert_eq!(
                    with_records(data, chunk),
                    with_csv(data),
                    "{:?} chunk {chunk}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }

    fn first_error(data: &[u8]) -> ReadError {
        let mut records = Records::new(Box::new(io::Cursor::new(data.to_vec())));
        let mut r = Record::default();
        loop {
            match records.read(&mut r) {
                Ok(true) => {}
                Ok(false) => panic!("no error in {} bytes", data.len()),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn a_quote_never_closed_is_named_where_it_opens() {
        let e = first_error("a,b\n名,\"x\ny,z\n".as_bytes());
        assert!(
            matches!(e, ReadError::OpenQuote { line: 2, column: 3 }),
            "{e:?}"
        );
        // Escaped and closed quotes before it do not count.
        let e = first_error(b"a,\"b\"\"c\",d\n\"e\nf\",\"g\n");
        assert!(
            matches!(e, ReadError::OpenQuote { line: 3, column: 4 }),
            "{e:?}"
        );
        // Past the longest record, with the quote still open.
        let mut data = b"a,b\n1,\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD + 10));
        let e = first_error(&data);
        assert!(
            matches!(
                e,
                ReadError::TooLong {
                    line: 2,
                    quote: Some((2, 3))
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_record_past_the_limit_is_refused_with_its_line() {
        let mut data = b"a,b\n1,2\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD + 10));
        data.extend(b"\n3,4\n");
        let e = first_error(&data);
        assert!(
            matches!(
                e,
                ReadError::TooLong {
                    line: 3,
                    quote: None
                }
            ),
            "{e:?}"
        );
        // Quoted, its quotes closed, but longer than the limit.
        let mut data = b"a,b\n\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD + 10));
        data.extend(b"\",1\n");
        let e = first_error(&data);
        assert!(
            matches!(
                e,
                ReadError::TooLong {
                    line: 3,
                    quote: Some((3, 1))
                }
            ),
            "{e:?}"
        );
        // Just under the limit is read.
        let mut data = b"a\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD - 10));
        data.push(b'\n');
        let mut records = Records::new(Box::new(io::Cursor::new(data)));
        let mut r = Record::default();
        assert!(records.read(&mut r).unwrap() && records.read(&mut r).unwrap());
    }
}
