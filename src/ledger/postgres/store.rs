//! The store a run uses on PostgreSQL: the operations of `ledger::writer::Writer` (begin a run,
//! recover, take in sheet rows and rejects, mark in flight, undo a mark, record an answer, end
//! the run), each over the protocol of this module's siblings, plus what only a shared ledger
//! has: the lease a run keeps, and the shared rate. It is what `ledger::run` plugs in beside the
//! SQLite writer (`ledger::run_store`).
//!
//! Each operation commits before it returns (the claim before the request leaves), so there is
//! no group commit to lose: an answer whose commit fails is the caller's to keep (the side file).

use std::time::{Duration, Instant};

use super::{LeaseKeeper, PgLedger, claim, feed, lease, rate, runs};
use crate::api::outcome::Attempt;
use crate::input::{Reject, SourceRow};
use crate::ledger::RowId;
use crate::ledger::queries::LedgerRow;
use crate::ledger::store::{Answered, FileInfo, KeptAnswer, Verdict};
use crate::model::{RowUpdate, RunCounts, RunEnd, Sighting};

/// How often an answer's commit is tried before it goes to the side file.
const RECORD_TRIES: u32 = 3;

/// How long a run's lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTerms {
    /// Longer than the request time-out plus the drain.
    pub lease: Duration,
    pub renew_every: Duration,
    /// The longest a request may take once it leaves (time-out and drain): no request leaves
    /// that could outlive the lease.
    pub longest_request: Duration,
}

impl LeaseTerms {
    /// Terms for a run whose requests time out after `timeout` and drain within `drain`: a lease
    /// of twice their sum plus 10 s, renewed every tenth of it, between 1 and 5 s.
    pub fn for_requests(timeout: Duration, drain: Duration) -> LeaseTerms {
        let longest = timeout + drain;
        let lease = longest * 2 + Duration::from_secs(10);
        LeaseTerms {
            lease,
            renew_every: (lease / 10).clamp(Duration::from_secs(1), Duration::from_secs(5)),
            longest_request: longest,
        }
    }
}

/// A run's store on a PostgreSQL ledger.
pub struct PgStore {
    ledger: PgLedger,
    url: String,
    terms: LeaseTerms,
    keeper: Option<LeaseKeeper>,
    /// Which connection `ledger` is ([`PgStore::connection`]).
    connection: u64,
}

impl PgStore {
    /// Connects (the schema brought up to date once, whoever starts first).
    pub async fn open(url: &str, terms: LeaseTerms) -> anyhow::Result<PgStore> {
        Ok(PgStore {
            ledger: PgLedger::open(url).await?,
            url: url.to_owned(),
            terms,
            keeper: None,
            connection: 0,
        })
    }

    pub fn ledger(&self) -> &PgLedger {
        &self.ledger
    }

    /// The runs whose lease expired are swept (their rows in flight back to pending, possibly
    /// sent); returns how many rows. Another host's live run is never touched.
    pub async fn recover(&mut self) -> anyhow::Result<u64> {
        Ok(lease::sweep(self.ledger.client_mut())
            .await?
            .map_or(0, |s| s.rows))
    }

    /// Begins a run holding a lease, kept from now on by a task of its own.
    pub async fn begin_run(
        &mut self,
        config: &str,
        files: &[FileInfo],
        holder: &str,
    ) -> anyhow::Result<i64> {
        let granted = Instant::now();
        let run_id = runs::begin_run(
            self.ledger.client_mut(),
            config,
            files,
            self.terms.lease,
            holder,
        )
        .await?;
        self.keeper = Some(
            LeaseKeeper::start(
                &self.url,
                run_id,
                self.terms.lease,
                self.terms.renew_every,
                granted,
            )
            .await?,
        );
        Ok(run_id)
    }

    /// Takes in sheet rows (numbered `seq` in input order), in one transaction.
    pub async fn ingest(
        &mut self,
        run_id: i64,
        rows: &[(u64, SourceRow)],
        retry_failed: bool,
    ) -> anyhow::Result<Vec<Sighting>> {
        let tx = self.ledger.client_mut().transaction().await?;
        let mut sightings = Vec::with_capacity(rows.len());
        for (seq, src) in rows {
            sightings.push(runs::ingest(&tx, run_id, *seq, src, retry_failed).await?);
        }
        tx.commit().await?;
        Ok(sightings)
    }

    pub async fn reject(&self, run_id: i64, reject: &Reject) -> anyhow::Result<()> {
        runs::reject(self.ledger.client(), run_id, reject).await
    }

    /// The next rows of this run to send (the feeder's page).
    pub async fn pending_page(
        &self,
        run_id: i64,
        after_seq: u64,
        limit: usize,
        unverified: bool,
    ) -> anyhow::Result<Vec<(u64, RowId, LedgerRow)>> {
        feed::pending_page(self.ledger.client(), run_id, after_seq, limit, unverified).await
    }

    /// Whether a request may leave now: the lease is kept and could not expire before the
    /// request is over.
    pub fn may_send(&self) -> bool {
        self.keeper
            .as_ref()
            .is_some_and(|k| !k.lost() && k.clock().may_send(self.terms.longest_request))
    }

    /// Claims the row (its in-flight mark, committed); `None`: not this run's to send now (not
    /// pending, claimed by another run, or the lease cannot cover the request).
    pub async fn mark_in_flight(
        &self,
        run_id: i64,
        row: RowId,
    ) -> anyhow::Result<Option<crate::ledger::Claimed>> {
        if !self.may_send() {
            return Ok(None);
        }
        claim::claim(self.ledger.client(), run_id, row.0).await
    }

    /// Undoes a claim whose request never left.
    pub async fn unsend(&self, attempt_id: i64, row: RowId) -> anyhow::Result<()> {
        claim::unsend(self.ledger.client(), attempt_id, row.0).await
    }

    /// Records an answer, fenced on its claim. A commit that fails is tried twice more, on a new
    /// connection when the old one is gone (a restarted server, a dropped connection); a commit
    /// whose reply was lost and is made again writes the same values. The last error is the
    /// caller's: the answer then goes to the side file.
    pub async fn record(&mut self, answered: &Answered) -> anyhow::Result<(Verdict, super::Fence)> {
        let mut tried = 0;
        loop {
            let e = match claim::record(self.ledger.client_mut(), answered).await {
                Ok(recorded) => return Ok(recorded),
                Err(e) => e,
            };
            tried += 1;
            if tried == RECORD_TRIES {
                return Err(e);
            }
            tracing::warn!("ledger: an answer could not be committed, trying again: {e:#}");
            tokio::time::sleep(Duration::from_millis(250) * tried).await;
            let seen = self.connection;
            self.reconnect_if_closed(seen).await;
        }
    }

    /// Which connection the store is on (counted from 0; a new one after each reconnection).
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// After a statement failed on connection `seen`: `true` when there is a new connection to
    /// try it again on (made now because `seen` is gone, or by another caller since); `false`
    /// when `seen` is still the store's and alive (the failure was not the connection's) or
    /// the server cannot be reached.
    pub async fn reconnect_if_closed(&mut self, seen: u64) -> bool {
        if self.connection != seen {
            return true;
        }
        if !self.ledger.client().is_closed() {
            return false;
        }
        match PgLedger::open(&self.url).await {
            Ok(again) => {
                tracing::warn!("ledger: the connection to PostgreSQL was lost; connected again");
                self.ledger = again;
                self.connection += 1;
                true
            }
            Err(e) => {
                tracing::warn!("ledger: cannot connect to PostgreSQL again: {e:#}");
                false
            }
        }
    }

    /// Resolves once the run's lease is lost (never without a lease).
    pub fn on_lease_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let lost = self.keeper.as_ref().map(LeaseKeeper::on_lost);
        async move {
            match lost {
                Some(lost) => lost.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Takes in the side files of this ledger's runs that are over, from `dir` (see
    /// [`super::late`]).
    pub async fn take_in(
        &mut self,
        dir: &std::path::Path,
    ) -> anyhow::Result<Option<crate::ledger::TakenIn>> {
        super::late::take_in(self.ledger.client_mut(), &self.url, dir).await
    }

    /// The answers kept unverified for rows no run holds (verified again before sending).
    pub async fn kept_unverified(&self) -> anyhow::Result<Vec<KeptAnswer>> {
        super::late::kept_unverified(self.ledger.client()).await
    }

    /// A kept answer that verifies now, written through the fence of a late answer.
    pub async fn reverified(
        &mut self,
        kept: &KeptAnswer,
        attempt: &Attempt,
        update: &RowUpdate,
    ) -> anyhow::Result<bool> {
        claim::accept_reverified(self.ledger.client_mut(), kept, attempt, update).await
    }

    /// The URL the store was opened with (its side files are named from it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Takes the next slot of the shared rate, `rate` slots in `window`, and returns how long
    /// to wait for it instead of waiting (so that a caller sharing the store waits without
    /// holding it).
    pub async fn slot_wait(
        &self,
        client_id: &str,
        rate: u32,
        window: Duration,
    ) -> anyhow::Result<Duration> {
        if rate == 0 {
            return Ok(Duration::ZERO);
        }
        rate::take_slot(self.ledger.client(), client_id, window / rate).await
    }

    /// This run's rows still pending, and those in flight under another run's claim.
    pub async fn unfinished(&self, run_id: i64) -> anyhow::Result<(u64, u64)> {
        feed::unfinished(self.ledger.client(), run_id).await
    }

    /// A throttle seen: every run on the ledger pauses the client id's slots for `pause`.
    pub async fn throttled(&self, client_id: &str, pause: Duration) -> anyhow::Result<()> {
        rate::throttled(self.ledger.client(), client_id, pause).await
    }

    /// Ends the run: its own rows still in flight back to pending, the counts written, the
    /// lease given up.
    pub async fn finish_run(
        &mut self,
        run_id: i64,
        end: RunEnd,
        counts: &RunCounts,
        message: Option<&str>,
    ) -> anyhow::Result<RunCounts> {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
        runs::finish_run(self.ledger.client_mut(), run_id, end, counts, message).await
    }

    /// Stops keeping the lease without ending the run: what a host that dies does (tests).
    pub fn abandon(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_outlasts_a_request_and_its_drain_and_is_renewed_every_few_seconds() {
        let t = LeaseTerms::for_requests(Duration::from_secs(15), Duration::from_secs(20));
        assert!(t.lease > t.longest_request + t.renew_every * 3);
        assert!(t.renew_every <= Duration::from_secs(5));
        assert!(t.renew_every >= Duration::from_secs(1));
    }
}
