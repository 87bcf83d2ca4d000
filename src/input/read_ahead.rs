//! The read-ahead: a thread that reads the files of an input, in order, into batches of
//! reused records, ahead of the thread that classifies them.
//!
//! A bounded channel holds at most `IN_FLIGHT` full batches; consumed batches come back for
//! reuse, so memory stays flat whatever the number of rows. The reader thread also does what
//! needs no state of the input: a CSV record's UTF-8 check and its line (`scan`), a workbook
//! row's cell texts (see `workbook::fill`) with the cell that cannot be read as typed. A batch
//! ends with what came after its records: more, the end of a file, or an error.

use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::columns::ColumnMap;
use super::rules::{self, Problem};
use super::tokenizer::{ReadError, Record, Records};
use super::workbook::{self, Workbook};

/// What the reader thread reads one file with.
pub(super) enum FileReader {
    Csv(Box<Records>),
    Sheet(Workbook, ColumnMap),
}

/// Starts the reader thread over `readers`: the full batches to consume, and where to send
/// them back once consumed.
pub(super) fn start(readers: Vec<FileReader>) -> io::Result<(Receiver<Batch>, Sender<Batch>)> {
    let (full_tx, full) = sync_channel(IN_FLIGHT);
    let (empty, empty_rx) = channel();
    std::thread::Builder::new()
        .name("input-reader".to_string())
        .spawn(move || read_ahead(readers, full_tx, empty_rx))?;
    Ok((full, empty))
}

/// 1-based line where the record just read starts (the header is line 1).
///
/// The csv crate's `ByteRecord::position` is where reading *began*, before any blank lines it
/// skipped, so it drifts after a blank line. The reader's position after the record is exact,
/// and every record ends by consuming a line feed (LF is the only terminator and the stream
/// always ends with one): the start is that line minus the line feeds inside the record's
/// quoted cells, minus its own terminator.
/// `after` is the reader's line once the record is read (`Records::line`).
pub(super) fn record_line(after: u64, record: &Record) -> u64 {
    let inner = memchr::memchr_iter(b'\n', record.bytes()).count() as u64;
    after.saturating_sub(inner + 1).max(1)
}

/// Records per batch handed from the reader thread to the iterating one.
const BATCH: usize = 1024;
/// Filled batches waiting in the channel; with the one being filled and the one being consumed,
/// at most `IN_FLIGHT + 2` batches exist.
const IN_FLIGHT: usize = 2;

/// What the reader thread finds in a record, for the iterating one.
#[derive(Clone, Copy)]
pub(super) struct Scan {
    /// The line where the record starts.
    pub(super) line: u64,
    /// The record holds a byte that may start a control character or U+FFFD (see
    /// `rules::may_hold_control`): a record without needs no per-value control check.
    pub(super) suspect: bool,
    /// The record's bytes are UTF-8 (and copied into the batch's text for it).
    pub(super) utf8: bool,
    /// A workbook cell of the record cannot be read as typed: the batch's `problems` say why.
    pub(super) unreadable: bool,
}

/// Scans a record just read; `after` is the reader's line after it.
fn scan(record: &Record, after: u64, text: &mut String) -> Scan {
    let bytes = record.bytes();
    let suspect = rules::may_hold_control(bytes);
    // No line feed in the record unless it is suspect (a line feed is a control character).
    let line = if suspect {
        record_line(after, record)
    } else {
        after.saturating_sub(1).max(1)
    };
    text.clear();
    let utf8 = match simdutf8::basic::from_utf8(bytes) {
        Ok(valid) => {
            text.push_str(valid);
            true
        }
        Err(_) => false,
    };
    Scan {
        line,
        suspect,
        utf8,
        unreadable: false,
    }
}

/// Consecutive records of one file, read by the reader thread.
#[derive(Default)]
pub(super) struct Batch {
    /// Reused record buffers; the first `len` hold this batch's records.
    pub(super) records: Vec<Record>,
    /// What the reader thread found in each record.
    pub(super) scans: Vec<Scan>,
    /// Each record's bytes as text, when they are UTF-8 (`Scan::utf8`); reused buffers.
    pub(super) texts: Vec<String>,
    pub(super) len: usize,
    /// The unreadable cell of each record flagged `Scan::unreadable`, by record index.
    problems: Vec<(usize, Problem)>,
    /// What comes after the records.
    pub(super) end: End,
}

impl Batch {
    /// A batch back from the iterating thread (or a new one), emptied.
    fn reuse(empty: &Receiver<Batch>) -> Batch {
        let mut batch = empty.try_recv().unwrap_or_default();
        batch.len = 0;
        batch.scans.clear();
        batch.problems.clear();
        batch.end = End::More;
        batch
    }

    /// The next record's buffers, made when the batch has none to reuse.
    fn slot(&mut self) -> (&mut Record, &mut String) {
        if self.records.len() == self.len {
            self.records.push(Record::default());
            self.texts.push(String::new());
        }
        (&mut self.records[self.len], &mut self.texts[self.len])
    }

    /// The unreadable cell of record `i`, once.
    pub(super) fn take_problem(&mut self, i: usize) -> Option<Problem> {
        let at = self.problems.iter().position(|(r, _)| *r == i)?;
        Some(self.problems.swap_remove(at).1)
    }
}

#[derive(Default)]
pub(super) enum End {
    /// More records of the same file.
    #[default]
    More,
    /// The file ended; `last` is the line count the next file's ordinals start after.
    File { last: u64 },
    /// Reading failed: the input ends with this error.
    Failed(ReadError),
}

/// The reader thread: every file in order, as batches. Ends after the last file, after an error,
/// or as soon as the iterating side is gone.
fn read_ahead(readers: Vec<FileReader>, full: SyncSender<Batch>, empty: Receiver<Batch>) {
    for reader in readers {
        let more = match reader {
            FileReader::Csv(csv) => read_csv(*csv, &full, &empty),
            FileReader::Sheet(mut book, columns) => read_sheet(&mut book, &columns, &full, &empty),
        };
        if !more {
            return;
        }
    }
}

/// Sends every record of one CSV file; false when the input must end (an error, or the
/// iterating side is gone).
fn read_csv(mut csv: Records, full: &SyncSender<Batch>, empty: &Receiver<Batch>) -> bool {
    loop {
        let mut batch = Batch::reuse(empty);
        while batch.len < BATCH {
            let (record, text) = batch.slot();
            match csv.read(record) {
                Ok(true) => {
                    let scan = scan(record, csv.line(), text);
                    batch.scans.push(scan);
                    batch.len += 1;
                }
                Ok(false) => {
                    batch.end = End::File {
                        last: csv.line() + 1,
                    };
                    break;
                }
                Err(e) => {
                    batch.end = End::Failed(e);
                    break;
                }
            }
        }
        let (file_done, failed) = match batch.end {
            End::More => (false, false),
            End::File { .. } => (true, false),
            End::Failed(_) => (false, true),
        };
        if full.send(batch).is_err() || failed {
            return false;
        }
        if file_done {
            return true;
        }
    }
}

/// Sends every row of one sheet below its header, as records of cell texts whose line is the
/// row number Excel shows; false when the input must end.
fn read_sheet(
    book: &mut Workbook,
    columns: &ColumnMap,
    full: &SyncSender<Batch>,
    empty: &Receiver<Batch>,
) -> bool {
    let mut batch = Batch::reuse(empty);
    let mut last = u64::from(book.header_row()) + 1;
    let mut text = String::new();
    let read = book.rows(book.header_row() + 1, |row, cells| {
        let line = u64::from(row) + 1;
        last = line;
        let (record, _) = batch.slot();
        let problem = workbook::fill(cells, columns, record, &mut text);
        let suspect = rules::may_hold_control(record.bytes());
        batch.scans.push(Scan {
            line,
            suspect,
            utf8: false,
            unreadable: problem.is_some(),
        });
        if let Some(p) = problem {
            batch.problems.push((batch.len, p));
        }
        batch.len += 1;
        if batch.len == BATCH {
            let sent = std::mem::replace(&mut batch, Batch::reuse(empty));
            if full.send(sent).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    let (end, more) = match read {
        // The iterating side is gone.
        Ok(Some(())) => return false,
        Ok(None) => (End::File { last: last + 1 }, true),
        Err(e) => (End::Failed(ReadError::Io(e)), false),
    };
    batch.end = end;
    full.send(batch).is_ok() && more
}
