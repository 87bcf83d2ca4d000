//! Opening a ledger for a run, in one call: the lock, the file opened (and migrated), its
//! gateway claimed, the side file taken in, the writer started, what a killed run left in flight
//! recovered, and the answers an earlier run could not verify checked again. The order is what
//! makes a run resumable; a second store (PostgreSQL) plugs in here.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::Connection;

use super::gateway::{self, Gateway};
use super::store::{self, KeptAnswer};
use super::writer::{self, Writer, WriterThread};
use super::{LedgerLock, open_unlocked};
use crate::api::outcome::Attempt;
use crate::model::RowUpdate;

/// A ledger ready for a run: the feeder's connection and the writer (which holds the lock).
pub struct RunLedger {
    pub reader: Connection,
    pub writer: Writer,
    pub writer_thread: WriterThread,
}

/// What opening the ledger did that a person should be told, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// Something about the ledger's file (a notice of [`super::Opened`]).
    Notice(String),
    /// Answers of the side file written into the ledger.
    TakenIn(String),
    /// Rows in flight when an earlier run ended abruptly: they will be sent again.
    Recovered(u64),
    /// Answers kept unverified, checked again: `verified` believed now (`labels` of them with
    /// a pmsLabel), `still` rows whose answer still does not verify.
    Reverified {
        verified: usize,
        labels: usize,
        still: usize,
    },
}

/// Opens `path` for a run against `gateway`. `reverify` checks a kept answer again with the
/// run's key: `Some` with the attempt and what the row then holds when it verifies now.
pub fn open_for_run(
    path: &Path,
    gateway: &Gateway,
    mut reverify: impl FnMut(&KeptAnswer) -> Option<(Attempt, RowUpdate)>,
    tell: &mut dyn FnMut(Told),
) -> anyhow::Result<RunLedger> {
    let lock = LedgerLock::acquire(path)?;
    let opened = open_unlocked(path)?;
    for notice in opened.notices() {
        tell(Told::Notice(notice.to_string()));
    }
    // A ledger of another gateway is refused before anything is written to it.
    gateway::claim(&opened, path, gateway)?;
    // The feeder's connection; first it takes in what an earlier run could not write.
    let reader = opened.into_connection();
    if let Some(taken) = super::take_in_side_file(&reader, path)? {
        tell(Told::TakenIn(taken.to_string()));
    }
    let (writer, writer_thread) = writer::start(lock)?;
    let recovered = writer.recover()?;
    if recovered > 0 {
        tell(Told::Recovered(recovered));
    }
    let kept = store::kept_unverified(&reader).context("cannot read the ledger")?;
    if !kept.is_empty() {
        let (mut verified, mut labels) = (0, 0);
        let mut still = std::collections::BTreeSet::new();
        for k in kept {
            match reverify(&k) {
                Some((attempt, update)) => {
                    verified += 1;
                    labels += usize::from(attempt.pms_label.is_some());
                    still.remove(&k.row_id.0);
                    writer.reverified(k, attempt, update);
                }
                None => {
                    still.insert(k.row_id.0);
                }
            }
        }
        tell(Told::Reverified {
            verified,
            labels,
            still: still.len(),
        });
    }
    Ok(RunLedger {
        reader,
        writer,
        writer_thread,
    })
}
