//! Phase one of a run: the input is read once, as a stream, into the ledger. Every row is
//! recorded (pending, or found done, drifted or failed before) and every reject kept, before a
//! single request leaves: a file that turns out unreadable halfway stops the run with nothing sent.

use serde_json::json;

use super::shutdown::Shutdown;
use crate::input::{Input, Item};
use crate::ledger::run_store::RunStore;
use crate::model::{RunCounts, Sighting};
use crate::output::Printer;

/// Rows sent to the ledger writer per transaction.
const BATCH: usize = 1024;

/// Reads every row of `input` into the ledger for `run_id`; returns the counts so far. Rejects,
/// duplicates and drift are shown as they are found.
pub fn ingest(
    input: Input,
    writer: &RunStore,
    run_id: i64,
    retry_failed: bool,
    shutdown: &Shutdown,
    printer: &Printer,
) -> anyhow::Result<RunCounts> {
    let mut counts = RunCounts::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut seq = 0u64;
    let flush = |batch: &mut Vec<_>, counts: &mut RunCounts| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let rows: Vec<(u64, crate::input::SourceRow)> = std::mem::take(batch);
        let places: Vec<(String, u64, String)> = rows
            .iter()
            .map(|(_, r)| (r.file.clone(), r.line, r.row.key()))
            .collect();
        for (decision, (file, line, key)) in writer
            .ingest(run_id, rows, retry_failed)?
            .into_iter()
            .zip(places)
        {
            match decision {
                Sighting::Send => counts.to_send += 1,
                Sighting::Done => counts.already_done += 1,
                Sighting::Drifted(detail) => {
                    counts.drifted += 1;
                    let fields = serde_json::Map::from_iter([
                        ("file".to_owned(), json!(file)),
                        ("line".to_owned(), json!(line)),
                        ("key".to_owned(), json!(key)),
                        ("detail".to_owned(), json!(detail)),
                    ]);
                    printer.event(
                        "warn",
                        "drift",
                        &format!(
                            "{file}:{line}: drift: {detail}; not sent (the API cannot move a store)"
                        ),
                        fields,
                    );
                }
                Sighting::FailedBefore => counts.failed += 1,
            }
        }
        Ok(())
    };
    for item in input {
        if shutdown.is_stopping() {
            break;
        }
        match item? {
            Item::Row(row) => {
                counts.rows_read += 1;
                seq += 1;
                batch.push((seq, row));
                if batch.len() >= BATCH {
                    flush(&mut batch, &mut counts)?;
                }
            }
            Item::Reject(reject) => {
                counts.rows_read += 1;
                counts.rejected += 1;
                printer.reject(&reject);
                writer.reject(run_id, reject)?;
            }
            Item::Duplicate {
                file,
                line,
                first_file,
                first_line,
                key,
            } => {
                counts.rows_read += 1;
                counts.duplicates += 1;
                let fields = serde_json::Map::from_iter([
                    ("file".to_owned(), json!(file)),
                    ("line".to_owned(), json!(line)),
                    ("key".to_owned(), json!(key)),
                    ("first_file".to_owned(), json!(first_file)),
                    ("first_line".to_owned(), json!(first_line)),
                ]);
                printer.event(
                    "info",
                    "duplicate",
                    &format!(
                        "{file}:{line}: same store and payload as line {first_line} of {first_file}: skipped"
                    ),
                    fields,
                );
            }
        }
    }
    flush(&mut batch, &mut counts)?;
    Ok(counts)
}
