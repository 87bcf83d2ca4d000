//! `run --dry-run`: what a run would do with this sheet and this ledger (send, skip as done,
//! skip as failed before, drift, reject), decided exactly as a run decides it
//! (`model::sighting`), with nothing sent and nothing written: the ledger is opened read-only,
//! and not created when it does not exist.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::json;

use crate::input::{Input, Item, Options, SourceRow};
use crate::ledger::{Gateway, queries};
use crate::model::{self, Sighting};
use crate::output::Printer;

/// Opens the ledger so that nothing about it changes: read-only, never upgraded, and, when no
/// write-ahead log is there (no run has it open, nothing is waiting to be checkpointed), as an
/// immutable file, so that SQLite creates no `-wal` or `-shm` beside it either.
fn open_read_only(ledger: &Path) -> anyhow::Result<Connection> {
    let mut wal = ledger.as_os_str().to_owned();
    wal.push("-wal");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if Path::new(&wal).exists() {
        Connection::open_with_flags(ledger, flags)
    } else {
        let path = ledger.to_string_lossy();
        let mut uri = String::from("file:");
        for c in path.chars() {
            match c {
                '%' => uri.push_str("%25"),
                '?' => uri.push_str("%3F"),
                '#' => uri.push_str("%23"),
                c => uri.push(c),
            }
        }
        uri.push_str("?immutable=1");
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    };
    conn.with_context(|| format!("cannot read the ledger {}", ledger.display()))
}

/// What a run would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rehearsal {
    pub rows_read: u64,
    pub would_send: u64,
    pub already_done: u64,
    pub failed_before: u64,
    pub drifted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// The first row that would be sent.
    #[serde(skip)]
    pub first: Option<SourceRow>,
}

/// Reads the sheet against the ledger (if there is one) and says what a run would do; rejects
/// and drift are shown as a run shows them, and each reject handed to `on_reject` too (validate's
/// `--rejects`). A ledger of another gateway than `gateway` (when one is named) is refused.
pub fn rehearse(
    files: &[PathBuf],
    options: Options,
    (ledger, gateway): (&Path, Option<&Gateway>),
    retry_failed: bool,
    printer: &Printer,
    on_reject: &mut dyn FnMut(&crate::input::Reject) -> anyhow::Result<()>,
) -> anyhow::Result<Rehearsal> {
    let input = Input::open(files, options)?;
    printer.input_notices(input.notices());
    // A PostgreSQL ledger is read through its snapshot (kept for as long as it is read).
    let mut _snapshot = None;
    let conn = if let Some(url) = ledger
        .to_str()
        .filter(|l| crate::ledger::postgres::is_url(l))
    {
        let (dir, conn) = crate::ledger::postgres::snapshot::open(
            url,
            crate::ledger::postgres::snapshot::Reads::Rows,
        )?;
        _snapshot = Some(dir);
        let shown = crate::ledger::postgres::redacted(url);
        if let Some(gateway) = gateway {
            crate::ledger::gateway::check(&conn, Path::new(&shown), gateway)?;
        }
        Some(conn)
    } else if ledger.exists() {
        let conn = open_read_only(ledger)?;
        // What a ledger of another gateway says was done there, not here.
        if let Some(gateway) = gateway {
            crate::ledger::gateway::check(&conn, ledger, gateway)?;
        }
        Some(conn)
    } else {
        None
    };
    let mut r = Rehearsal::default();
    for item in input {
        match item? {
            Item::Row(src) => {
                r.rows_read += 1;
                let stored = match &conn {
                    Some(c) => queries::row_by_key(c, &src.row.key())
                        .with_context(|| format!("cannot read the ledger {}", ledger.display()))?
                        .map(|(_, s)| s),
                    None => None,
                };
                let stored_row = stored.as_ref().map(|s| s.row());
                let known = stored
                    .as_ref()
                    .zip(stored_row.as_ref())
                    .map(|(s, row)| s.known(row));
                match model::sighting(known.as_ref(), &src.row, retry_failed) {
                    Sighting::Send => {
                        r.would_send += 1;
                        r.first.get_or_insert(src);
                    }
                    Sighting::Done => r.already_done += 1,
                    Sighting::FailedBefore => r.failed_before += 1,
                    Sighting::Drifted(detail) => {
                        r.drifted += 1;
                        let fields = serde_json::Map::from_iter([
                            ("file".to_owned(), json!(src.file)),
                            ("line".to_owned(), json!(src.line)),
                            ("detail".to_owned(), json!(detail)),
                        ]);
                        printer.event(
                            "warn",
                            "drift",
                            &format!(
                                "{}:{}: drift: {detail}; would not be sent (the API cannot move a store)",
                                src.file, src.line
                            ),
                            fields,
                        );
                    }
                }
            }
            Item::Reject(reject) => {
                r.rows_read += 1;
                r.rejected += 1;
                printer.reject(&reject);
                on_reject(&reject)?;
            }
            Item::Duplicate { .. } => {
                r.rows_read += 1;
                r.duplicates += 1;
            }
        }
    }
    Ok(r)
}
