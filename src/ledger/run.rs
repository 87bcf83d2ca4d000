//! Opening a ledger for a run, in one call: the lock, the file opened (and migrated), its
//! gateway claimed, the side file taken in, the writer started, what a killed run left in flight
//! recovered, and the answers an earlier run could not verify checked again. The order is what
//! makes a run resumable. A URL opens the PostgreSQL store instead ([`RunStore::Postgres`]):
//! connected and migrated, the runs whose lease expired swept.

use std::path::Path;

use anyhow::Context as _;

use super::gateway::{self, Gateway};
use super::postgres::{LeaseTerms, PgStore};
use super::run_store::{PgRun, RunReader, RunStore};
use super::store::{self, KeptAnswer};
use super::writer::{self, WriterThread};
use super::{LedgerLock, open_unlocked};
use crate::api::outcome::Attempt;
use crate::model::RowUpdate;

/// A ledger ready for a run: the feeder's reader and the store (on SQLite the writer, which
/// holds the lock, and its thread).
pub struct RunLedger {
    pub reader: RunReader,
    pub writer: RunStore,
    pub writer_thread: Option<WriterThread>,
}

/// What a run on a shared (PostgreSQL) ledger needs to open it: the runtime its store lives on,
/// its lease terms and the rate of its client id.
pub struct Shared<'a> {
    pub handle: &'a tokio::runtime::Handle,
    pub terms: LeaseTerms,
    pub rate: u32,
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
    shared: &Shared<'_>,
    tell: &mut dyn FnMut(Told),
) -> anyhow::Result<RunLedger> {
    if let Some(url) = path.to_str().filter(|p| super::postgres::is_url(p)) {
        return open_postgres(url, gateway, &mut reverify, shared, tell);
    }
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
    if let Some(told) = verify_again(kept, &mut reverify, |k, attempt, update| {
        writer.reverified(k, attempt, update);
        Ok(true)
    })? {
        tell(told);
    }
    Ok(RunLedger {
        reader: RunReader::Sqlite(reader),
        writer: RunStore::Sqlite(writer),
        writer_thread: Some(writer_thread),
    })
}

/// Checks again the answers an earlier run kept unverified: each one `reverify` believes now is
/// handed to `accept` (`false`: the row is another run's now, left to it). `None` when none was
/// kept.
fn verify_again(
    kept: Vec<KeptAnswer>,
    reverify: &mut dyn FnMut(&KeptAnswer) -> Option<(Attempt, RowUpdate)>,
    mut accept: impl FnMut(KeptAnswer, Attempt, RowUpdate) -> anyhow::Result<bool>,
) -> anyhow::Result<Option<Told>> {
    if kept.is_empty() {
        return Ok(None);
    }
    let (mut verified, mut labels) = (0, 0);
    let mut still = std::collections::BTreeSet::new();
    for k in kept {
        let row = k.row_id.0;
        match reverify(&k) {
            Some((attempt, update)) => {
                let label = attempt.pms_label.is_some();
                if accept(k, attempt, update)? {
                    verified += 1;
                    labels += usize::from(label);
                    still.remove(&row);
                }
            }
            None => {
                still.insert(row);
            }
        }
    }
    Ok(Some(Told::Reverified {
        verified,
        labels,
        still: still.len(),
    }))
}

/// Opens a PostgreSQL ledger for a run: connected (the schema brought up to date once), the
/// side files of this host's runs that are over taken in, the runs whose lease expired swept
/// (their rows in flight back to pending, possibly sent), and the answers kept unverified checked
/// again, as on SQLite.
fn open_postgres(
    url: &str,
    gateway: &Gateway,
    reverify: &mut dyn FnMut(&KeptAnswer) -> Option<(Attempt, RowUpdate)>,
    shared: &Shared<'_>,
    tell: &mut dyn FnMut(Told),
) -> anyhow::Result<RunLedger> {
    let state_dir = super::postgres::late::state_dir();
    let handle = shared.handle;
    let mut store = handle.block_on(async {
        let store = PgStore::open(url, shared.terms).await?;
        // A ledger of another gateway is refused before anything is written to it.
        super::postgres::claim_gateway(store.ledger(), gateway).await?;
        anyhow::Ok(store)
    })?;
    if let Some(taken) = handle.block_on(store.take_in(&state_dir))? {
        tell(Told::TakenIn(taken.to_string()));
    }
    let recovered = handle.block_on(store.recover())?;
    if recovered > 0 {
        tell(Told::Recovered(recovered));
    }
    let kept = handle
        .block_on(store.kept_unverified())
        .context("cannot read the ledger")?;
    if let Some(told) = verify_again(kept, reverify, |k, attempt, update| {
        handle.block_on(store.reverified(&k, &attempt, &update))
    })? {
        tell(told);
    }
    let run = PgRun::new(
        store,
        handle.clone(),
        &gateway.client_id,
        shared.rate,
        state_dir,
    );
    Ok(RunLedger {
        reader: RunReader::Postgres(run.clone()),
        writer: RunStore::Postgres(run),
        writer_thread: None,
    })
}
