//! Everything the report shows, read from the ledger first (through `ledger::queries`, which
//! holds the SQL), so that the page is drawn by a pure function of it.

use anyhow::Context as _;
use rusqlite::Connection;

use crate::ledger::queries::{
    self, Attention, AttentionRow, Latency, MallCounts, OutcomeCounts, RunInfo,
};

/// Rows listed per kind; the rest are counted and left to `export` and `reconcile -o`.
pub const LIST_LIMIT: usize = 500;

/// The report's data: one run's (`run` given) or the whole ledger's.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// The run reported on; `None` for the whole ledger.
    pub run: Option<RunInfo>,
    pub counts: OutcomeCounts,
    /// Up to [`LIST_LIMIT`] rows of each kind there are rows of, in sheet order.
    pub lists: Vec<(Attention, Vec<AttentionRow>)>,
    pub malls: Vec<MallCounts>,
    /// `(attempts, rows)`.
    pub attempts: Vec<(u64, u64)>,
    pub latencies: Vec<Latency>,
    /// The run whose throughput is drawn (the one reported on, or the latest) and its requests
    /// a second, as `(second, requests)`.
    pub throughput: Option<(i64, Vec<(String, u64)>)>,
    /// When the report was written, as the ledger writes times.
    pub written_at: String,
}

/// How many rows of a kind there are.
pub fn count(c: &OutcomeCounts, kind: Attention) -> u64 {
    match kind {
        Attention::FailedPermanent => c.failed_permanent,
        Attention::FailedTransient => c.failed_transient,
        Attention::Ambiguous => c.ambiguous,
        Attention::Drifted => c.drifted,
        Attention::Rejected => c.rejected,
        Attention::Unverified => c.unverified,
    }
}

const KINDS: [Attention; 6] = [
    Attention::FailedPermanent,
    Attention::Drifted,
    Attention::Ambiguous,
    Attention::Unverified,
    Attention::Rejected,
    Attention::FailedTransient,
];

impl ReportData {
    /// Reads what the report of `run` (None: the whole ledger) shows.
    pub fn gather(conn: &Connection, run: Option<i64>) -> anyhow::Result<ReportData> {
        let info =
            match run {
                Some(id) => Some(queries::run_info(conn, id)?.with_context(|| {
                    format!("no run #{id} in the ledger: see pms-onboard status")
                })?),
                None => None,
            };
        let counts = queries::outcome_counts(conn, run)?;
        let mut lists = Vec::new();
        for kind in KINDS {
            if count(&counts, kind) > 0 {
                lists.push((kind, queries::attention(conn, run, kind, LIST_LIMIT)?));
            }
        }
        let throughput = match run.map_or_else(|| queries::last_run_id(conn), |id| Ok(Some(id)))? {
            Some(id) => Some((id, queries::requests_per_second(conn, id)?)),
            None => None,
        };
        Ok(ReportData {
            run: info,
            counts,
            lists,
            malls: queries::by_mall(conn, run)?,
            attempts: queries::attempts_per_row(conn, run)?,
            latencies: queries::latencies(conn, run)?,
            throughput,
            written_at: crate::ledger::now(),
        })
    }

    /// The rows listed of `kind` (empty when there are none).
    pub fn list(&self, kind: Attention) -> &[AttentionRow] {
        self.lists
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, rows)| rows.as_slice())
    }
}
