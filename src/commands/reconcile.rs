//! `reconcile FILE...`: the master sheet against the ledger, sending nothing; and
//! `export --annotate FILE`: the user's own sheet back with each row's outcome appended.
//!
//! Both read the sheet as a stream and the ledger by key, and hold neither in memory: the
//! identities seen go to a table on a temporary file past a budget (`super::bounded_dedupe`).
//! The orphans are the ledger's done rows the sheet did not find: one bit a ledger row says which
//! it found.

use std::collections::BTreeMap;
use std::io::{BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use rusqlite::Connection;
use serde::Serialize;

use crate::cli::ReconcileArgs;
use crate::input::{Encoding, Input, Item, SourceRow};
use crate::ledger::queries::{self, LedgerRow};
use crate::ledger::{self, RowId, State};
use crate::model::{self, Sighting};
use crate::output::{CsvWriter, Inputs, Printer};

/// The six categories, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Done,
    Drifted,
    Pending,
    Failed,
    Invalid,
    Orphan,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Done,
        Category::Drifted,
        Category::Pending,
        Category::Failed,
        Category::Invalid,
        Category::Orphan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Done => "done",
            Category::Drifted => "drifted",
            Category::Pending => "pending",
            Category::Failed => "failed",
            Category::Invalid => "invalid",
            Category::Orphan => "orphan",
        }
    }

    fn what_to_do(self) -> &'static str {
        match self {
            Category::Done => "nothing",
            Category::Drifted => "a person must act: the API cannot move a store that has a mall",
            Category::Pending => "run the sheet: pms-onboard run FILE",
            Category::Failed => {
                "see the message; fix the row, or run again (transient) / --retry-failed"
            }
            Category::Invalid => "fix the row in the sheet (see detail)",
            Category::Orphan => "done in the ledger but no longer in the sheet: check the sheet",
        }
    }
}

/// One line of the `-o` report.
#[derive(Debug, Serialize)]
struct Line {
    category: &'static str,
    key: String,
    source_file: String,
    source_line: u64,
    state: String,
    pms_label: String,
    detail: String,
}

impl Line {
    /// The header of the `-o` report: the fields, in order.
    const COLUMNS: [&'static str; 7] = [
        "category",
        "key",
        "source_file",
        "source_line",
        "state",
        "pms_label",
        "detail",
    ];
}

/// Where a sheet row stands against the ledger.
fn classify(row: &SourceRow, stored: Option<&LedgerRow>) -> (Category, String) {
    let Some(s) = stored else {
        return (Category::Pending, "never sent".to_owned());
    };
    let failed = || {
        (
            Category::Failed,
            format!(
                "{} {}: {}",
                s.failure.as_deref().unwrap_or(""),
                s.result_code,
                s.result_message
            ),
        )
    };
    let stored_row = s.row();
    let known = s.known(&stored_row);
    // The decision `run` makes about the same row: done, drifted, or to send.
    match model::sighting(Some(&known), &row.row, false) {
        Sighting::Done => (Category::Done, String::new()),
        Sighting::Drifted(detail) => (Category::Drifted, detail),
        Sighting::FailedBefore => failed(),
        Sighting::Send if s.state() == State::Failed => failed(),
        Sighting::Send if s.label_unverified => (
            Category::Pending,
            format!(
                "pending: an answer with pmsLabel {} could not be verified (see export)",
                s.pms_label
            ),
        ),
        Sighting::Send => (Category::Pending, s.state.clone()),
    }
}

pub fn run(args: ReconcileArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let (path, gateway) = super::ledger_and_gateway(&args.ledger)?;
    if let Some(output) = &args.output {
        Inputs::new()
            .ledger(&path)
            .sheets(&args.files)
            .settings(args.ledger.config.as_deref())
            .check("-o", output)?;
    }
    let conn = ledger::open_existing_for(&path, gateway.as_ref())?;
    super::show_notices(printer, &conn);
    let input =
        Input::open(&args.files, args.input.options())?.with_dedupe(super::bounded_dedupe()?);
    printer.input_notices(input.notices());
    let mut counts: BTreeMap<Category, u64> = Category::ALL.iter().map(|c| (*c, 0)).collect();
    let mut out = match &args.output {
        Some(p) => {
            let mut w = CsvWriter::new(crate::output::sink(Some(p))?);
            w.write_record(Line::COLUMNS)?;
            Some(w)
        }
        None => None,
    };
    let mut emit = |category: Category, line: Line| -> anyhow::Result<()> {
        *counts.entry(category).or_default() += 1;
        if let (true, Some(w)) = (category != Category::Done, out.as_mut()) {
            w.serialize(&line)?;
        }
        Ok(())
    };
    // The ledger rows the sheet has, and how many of them are done.
    let mut found = RowSet::default();
    let mut found_done = 0u64;
    for item in input {
        match item? {
            Item::Row(row) => {
                let key = row.row.key();
                let stored = queries::row_by_key(&conn, &key)?.map(|(id, stored)| {
                    found.insert(id);
                    stored
                });
                let (category, detail) = classify(&row, stored.as_ref());
                if matches!(category, Category::Done | Category::Drifted) {
                    found_done += 1;
                }
                emit(
                    category,
                    Line {
                        category: category.as_str(),
                        key: key.clone(),
                        source_file: row.file,
                        source_line: row.line,
                        state: stored.as_ref().map(|s| s.state.clone()).unwrap_or_default(),
                        pms_label: stored.map(|s| s.pms_label).unwrap_or_default(),
                        detail,
                    },
                )?;
            }
            Item::Reject(r) => emit(
                Category::Invalid,
                Line {
                    category: Category::Invalid.as_str(),
                    key: String::new(),
                    source_file: r.file.clone(),
                    source_line: r.line,
                    state: String::new(),
                    pms_label: String::new(),
                    detail: format!("column {}: {}", r.column, r.reason),
                },
            )?,
            Item::Duplicate { .. } => {}
        }
    }
    // Done rows are never undone, so when the ledger has no more of them than the sheet's rows
    // found done, none is an orphan, and the ledger need not be read again.
    let ledger_done = {
        let c = queries::outcome_counts(&conn, None)?;
        c.succeeded + c.already_circled
    };
    if ledger_done > found_done {
        queries::rows_with_ids(
            &conn,
            &[State::Succeeded, State::AlreadyCircled],
            |id, r| {
                if !found.contains(id) {
                    emit(
                        Category::Orphan,
                        Line {
                            category: Category::Orphan.as_str(),
                            key: r.key,
                            source_file: r.source_file,
                            source_line: r.source_line,
                            state: r.state,
                            pms_label: r.pms_label,
                            detail: "done in the ledger, not in the sheet".to_owned(),
                        },
                    )?;
                }
                Ok(())
            },
        )?;
    }
    if let Some(w) = out {
        w.into_inner()?.finish()?;
    }
    let differences: u64 = counts
        .iter()
        .filter(|(c, _)| **c != Category::Done)
        .map(|(_, n)| n)
        .sum();
    if printer.json_result() {
        let object: BTreeMap<&str, u64> = counts.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        printer.out_json(&serde_json::to_value(&object)?);
    } else {
        for c in Category::ALL {
            let n = counts[&c];
            let hint = if n > 0 && c != Category::Done {
                c.what_to_do()
            } else {
                ""
            };
            printer.out_line(format!("  {:<8} {n:>8}  {hint}", c.as_str()).trim_end());
        }
    }
    Ok(ExitCode::from(if differences == 0 {
        super::exit::OK
    } else {
        super::exit::PROBLEMS
    }))
}

/// A set of ledger rows by rowid, one bit a row: 125 KB for a ledger of a million rows. Rowids
/// are dense (rows are never deleted), so the bits are as many as the ledger's rows.
#[derive(Default)]
struct RowSet(Vec<u64>);

impl RowSet {
    fn insert(&mut self, id: RowId) {
        let i = id.0.max(0) as usize;
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, id: RowId) -> bool {
        let i = id.0.max(0) as usize;
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// The four cells appended to each row of an annotated sheet.
pub(super) fn annotation(item: &Item, conn: &Connection) -> anyhow::Result<[String; 4]> {
    let key = match item {
        Item::Reject(r) => {
            return Ok([
                "rejected".to_owned(),
                String::new(),
                String::new(),
                format!("column {}: {}", r.column, r.reason),
            ]);
        }
        Item::Row(r) => r.row.key(),
        Item::Duplicate { key, .. } => key.clone(),
    };
    Ok(match queries::row_by_key(conn, &key)? {
        Some((_, s)) => [s.state, s.pms_label, s.result_code, s.result_message],
        None => [
            "not_sent".to_owned(),
            String::new(),
            String::new(),
            "not in the ledger: run this sheet".to_owned(),
        ],
    })
}

/// Writes `sheet` back byte for byte, each record followed by its outcome in four new cells.
pub fn annotate(
    conn: &Connection,
    sheet: &Path,
    encoding: Encoding,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if encoding != Encoding::Utf8 {
        anyhow::bail!(
            "--annotate writes UTF-8 sheets only; save {} as CSV UTF-8 first",
            sheet.display()
        );
    }
    let open =
        || std::fs::File::open(sheet).with_context(|| format!("cannot read {}", sheet.display()));
    // Where each record starts, from the same CSV grammar the reader uses. Only the byte offsets
    // are taken from the csv crate: a record's position is where reading began, before the blank
    // lines it skipped, so lines are counted here, as a spreadsheet user counts them. The bytes
    // themselves are copied from a second handle on the file, one record at a time: neither the
    // sheet nor the list of its records is held in memory.
    let mut bounds = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(open()?);
    let mut record = csv::ByteRecord::new();
    let mut next_start = || -> anyhow::Result<Option<u64>> {
        Ok(match bounds.read_byte_record(&mut record)? {
            true => record.position().map(csv::Position::byte),
            false => None,
        })
    };
    let mut bytes = BufReader::new(open()?);
    let mut items = Input::open(&[sheet.to_path_buf()], encoding)?
        .with_dedupe(super::bounded_dedupe()?)
        .peekable();
    let mut out = crate::output::sink(output)?;
    // The 1-based line at the start of the current slice.
    let mut line = 1u64;
    // Bytes of the sheet read so far, and the current record's.
    let mut read = 0u64;
    let mut raw = Vec::new();
    let mut start = next_start()?;
    let mut header = true;
    while let Some(at) = start {
        start = next_start()?;
        // Nothing comes before the first record; should anything, it is left out as it was.
        std::io::copy(&mut bytes.by_ref().take(at - read), &mut std::io::sink())?;
        raw.clear();
        match start {
            Some(end) => bytes.by_ref().take(end - at).read_to_end(&mut raw)?,
            None => bytes.read_to_end(&mut raw)?,
        };
        read = at + raw.len() as u64;
        let raw = &raw[..];
        let newlines = |bytes: &[u8]| bytes.iter().filter(|b| **b == b'\n').count() as u64;
        // Blank lines the csv crate skipped before the record are written back as they were.
        let lead = raw
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        let (blank, rest) = raw.split_at(lead);
        let record_line = line + newlines(blank);
        line += newlines(raw);
        let content_len = rest
            .iter()
            .rposition(|b| *b != b'\n' && *b != b'\r')
            .map_or(0, |p| p + 1);
        let (content, line_end) = rest.split_at(content_len);
        let cells: [String; 4] = if std::mem::take(&mut header) {
            ["status", "pms_label", "result_code", "message"].map(str::to_owned)
        } else {
            match item_at(&mut items, record_line)? {
                Some(item) => annotation(&item, conn)?,
                // A line the reader skips (all cells empty) gets empty cells.
                None => Default::default(),
            }
        };
        out.write_all(blank)?;
        out.write_all(content)?;
        for cell in &cells {
            out.write_all(b",")?;
            out.write_all(csv_cell(cell).as_bytes())?;
        }
        // A last line without a line break gets none either.
        out.write_all(line_end)?;
    }
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The reader's item for the record starting at `line`, if the reader made one of it.
pub(super) fn item_at(
    items: &mut std::iter::Peekable<Input>,
    line: u64,
) -> anyhow::Result<Option<Item>> {
    match items.peek() {
        Some(Ok(item)) if item_line(item) < line => anyhow::bail!(
            "internal error: --annotate lost its place at line {} of the sheet",
            item_line(item)
        ),
        Some(Ok(item)) if item_line(item) > line => Ok(None),
        None => Ok(None),
        Some(_) => Ok(Some(items.next().expect("peeked")?)),
    }
}

fn item_line(item: &Item) -> u64 {
    match item {
        Item::Row(r) => r.line,
        Item::Reject(r) => r.line,
        Item::Duplicate { line, .. } => *line,
    }
}

/// One appended CSV cell, made inert (`output::text::csv_cell`), quoted when it must be.
fn csv_cell(s: &str) -> String {
    let s = crate::output::text::csv_cell(s);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}
