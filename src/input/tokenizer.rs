//! Records of a CSV byte stream, as `csv::Reader` reads them with the options the input uses
//! (no headers, flexible, `"` quotes, only LF ends a record), with a fast path: a line that holds
//! no `"` is one record whose cells are the line split at `,` (what csv-core's state machine
//! makes of it, at about a tenth of the cost), and an empty line is skipped, as csv-core does.
//! Any other record is read by csv-core itself, from the same position.

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
    pub(crate) fn read(&mut self, record: &mut Record) -> io::Result<bool> {
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
                // The line goes on beyond the buffer.
                None => self.fill()?,
            }
        }
    }

    /// A record with a quote in its first line: csv-core reads it, over as many lines and
    /// reads of the stream as it takes.
    fn read_quoted(&mut self, record: &mut Record) -> io::Result<bool> {
        let (mut nfields, mut nends) = (0, 0);
        loop {
            let input = &self.buf[self.start..self.end];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[nfields..], &mut self.ends[nends..]);
            self.line += memchr::memchr_iter(b'\n', &input[..nin]).count() as u64;
            self.start += nin;
            nfields += nout;
            nends += nend;
            match res {
                ReadRecordResult::InputEmpty => self.fill()?,
                ReadRecordResult::OutputFull => {
                    let n = self.fields.len();
                    self.fields.resize(n * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len();
                    self.ends.resize(n * 2, 0);
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
        let cases: [&[u8]; 12] = [
            b"a,b,c\n1,2,3\n",
            b"a,b\r\n\r\n1,2\r\n",
            b"\n\n a , b \n\n\nx\n",
            b"a,\"b,\nc\",d\n\"e\"\"f\",g\nh,i\n",
            b"a,\"b\"x,c\n\"\n\",\"\"\n",
            b"a,b\nc,d",
            b"a,\"b\nc",
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
}
