//! Leases and the sweep. A run holds a lease on the server's clock (`runs.lease_until`), renewed
//! every few seconds; its expiry is longer than the request time-out plus the drain, so that a
//! run whose lease is live has not given up a request it may still be waiting for. When a host
//! dies (or is cut off from the database), its lease runs out, and the next sweep puts the rows
//! it held in flight back to pending, possibly sent, with their open attempts `lost`: the
//! recovery of `store::recover`, narrowed to runs whose lease expired. One host sweeps at a time
//! (`pg_try_advisory_xact_lock`: the others skip it rather than wait).
//!
//! The host's side of it is [`LeaseClock`]: the instant its lease could have expired, on its own
//! monotonic clock, counted from before the renewal was sent. A host cut off from the database
//! sends nothing once a request could outlive that instant.

use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;

use super::{locks, micros};
use crate::ledger::now;

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Runs whose lease had expired, now `crashed`.
    pub runs: Vec<i64>,
    /// Their rows that were in flight, now pending and possibly sent.
    pub rows: u64,
}

const LOST: &str = "the run's lease expired while this request was in flight (its host died or was cut off \
     from the ledger); its outcome is unknown";

/// Sweeps the runs whose lease expired; `None` when another host is sweeping now.
pub async fn sweep(client: &mut tokio_postgres::Client) -> anyhow::Result<Option<Swept>> {
    let tx = client.transaction().await?;
    let mine: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&locks::SWEEP])
        .await?
        .get(0);
    if !mine {
        return Ok(None);
    }
    let t = now();
    let runs: Vec<i64> = tx
        .query(
            "UPDATE runs SET outcome = 'crashed', ended_at = COALESCE(ended_at, $1),
                 lease_until = NULL,
                 message = COALESCE(message, 'its lease expired: the host stopped renewing it')
             WHERE outcome = 'running' AND (lease_until IS NULL OR lease_until <= now())
             RETURNING id",
            &[&t],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Rows in flight of any run that does not hold a live lease (the runs just marked, and any
    // that ended without giving its rows back).
    let rows = tx
        .execute(
            "WITH swept AS (
                 SELECT r.id, r.claim_attempt FROM rows r
                 WHERE r.state = 'in_flight' AND NOT EXISTS (
                     SELECT 1 FROM runs u WHERE u.id = r.claim_run AND u.outcome = 'running'
                         AND u.lease_until > now())
                 FOR UPDATE OF r SKIP LOCKED
             ), lost AS (
                 UPDATE attempts a SET outcome = 'lost', maybe_processed = true, error = $2
                 FROM swept s WHERE a.id = s.claim_attempt AND a.outcome IS NULL
             )
             UPDATE rows r SET state = 'pending', maybe_sent = true,
                 first_maybe_sent_attempt = COALESCE(r.first_maybe_sent_attempt, s.claim_attempt),
                 claim_run = NULL, claim_attempt = NULL, updated_at = $1
             FROM swept s WHERE r.id = s.id",
            &[&t, &LOST],
        )
        .await?;
    tx.commit().await?;
    Ok(Some(Swept { runs, rows }))
}

/// The run's own rows still in flight (the run is ending, or starting its drain over): back to
/// pending, possibly sent, their open attempts `lost`. Another run's rows are not touched.
pub async fn recover_own(client: &impl GenericClient, run_id: i64) -> anyhow::Result<u64> {
    let n = client
        .execute(
            "WITH own AS (
                 SELECT id, claim_attempt FROM rows
                 WHERE state = 'in_flight' AND claim_run = $1 FOR UPDATE
             ), lost AS (
                 UPDATE attempts a SET outcome = 'lost', maybe_processed = true,
                     error = 'the run ended while this request was in flight; its outcome is unknown'
                 FROM own o WHERE a.id = o.claim_attempt AND a.outcome IS NULL
             )
             UPDATE rows r SET state = 'pending', maybe_sent = true,
                 first_maybe_sent_attempt = COALESCE(r.first_maybe_sent_attempt, o.claim_attempt),
                 claim_run = NULL, claim_attempt = NULL, updated_at = $2
             FROM own o WHERE r.id = o.id",
            &[&run_id, &now()],
        )
        .await?;
    Ok(n)
}

/// Renews the run's lease to `lease` from now on the server's clock. `false` when the lease had
/// already expired (or the run ended): the run must stop sending, its rows may be another's now.
pub async fn renew(
    client: &impl GenericClient,
    run_id: i64,
    lease: Duration,
) -> anyhow::Result<bool> {
    let n = client
        .execute(
            "UPDATE runs SET lease_until = now() + $2::bigint * interval '1 microsecond'
             WHERE id = $1 AND outcome = 'running' AND lease_until > now()",
            &[&run_id, &micros(lease)],
        )
        .await?;
    Ok(n == 1)
}

/// The host's view of its lease: it may have expired on the server from `until` on (its own
/// monotonic clock), counted from before the renewal that set it was sent.
#[derive(Debug, Clone, Copy)]
pub struct LeaseClock {
    until: Instant,
}

impl LeaseClock {
    /// The lease of `lease` granted by a begin or a renewal sent at `sent`.
    pub fn granted(sent: Instant, lease: Duration) -> LeaseClock {
        LeaseClock {
            until: sent + lease,
        }
    }

    /// Whether a request that may take up to `longest` (time-out and drain) may leave now: it
    /// must be over before the lease could have expired.
    pub fn may_send(&self, longest: Duration) -> bool {
        Instant::now() + longest < self.until
    }

    /// Whether the lease could have expired by now.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.until
    }
}

/// A run's lease, kept alive by a task on a connection of its own (so that a busy writer does
/// not delay it): renewed every `every`, the host's view ([`LeaseClock`]) moved on after each
/// renewal. Once a renewal finds the lease expired, or none succeeds before the lease could have
/// expired, the lease is lost ([`LeaseKeeper::lost`], and [`LeaseKeeper::on_lost`] resolves):
/// the run must stop, its rows may be another run's now.
pub struct LeaseKeeper {
    clock: tokio::sync::watch::Receiver<LeaseClock>,
    lost: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Starts keeping `run_id`'s lease, granted at `granted` (sent before `begin_run`).
    pub async fn start(
        url: &str,
        run_id: i64,
        lease: Duration,
        every: Duration,
        granted: Instant,
    ) -> anyhow::Result<LeaseKeeper> {
        let mut client = super::connect::connect(url).await?;
        let url = url.to_owned();
        let (tx, clock) = tokio::sync::watch::channel(LeaseClock::granted(granted, lease));
        let (lost_tx, lost) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let sent = Instant::now();
                match renew(&client, run_id, lease).await {
                    Ok(true) => {
                        tx.send_replace(LeaseClock::granted(sent, lease));
                        continue;
                    }
                    Ok(false) => {}
                    // The database is out of reach: try again while the lease could still be
                    // live on the server.
                    Err(e) if !tx.borrow().expired() => {
                        tracing::warn!("ledger: cannot renew the run's lease: {e:#}");
                        if client.is_closed()
                            && let Ok(again) = super::connect::connect(&url).await
                        {
                            client = again;
                        }
                        continue;
                    }
                    Err(e) => tracing::warn!("ledger: cannot renew the run's lease: {e:#}"),
                }
                lost_tx.send_replace(true);
                return;
            }
        });
        Ok(LeaseKeeper { clock, lost, task })
    }

    /// The host's view of the lease now.
    pub fn clock(&self) -> LeaseClock {
        *self.clock.borrow()
    }

    /// Whether the lease is lost: a renewal found it expired, or none succeeded in time.
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost (never, while it is kept).
    pub fn on_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // A keeper stopped without losing its lease (the run ended) never resolves it.
            if lost.wait_for(|l| *l).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops renewing (the run ended, or the test lets it expire).
    pub fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_sends_nothing_that_could_outlive_its_lease() {
        let clock = LeaseClock::granted(Instant::now(), Duration::from_secs(30));
        assert!(clock.may_send(Duration::from_secs(10)));
        assert!(!clock.may_send(Duration::from_secs(31)));
        assert!(!clock.expired());
        let past = LeaseClock::granted(
            Instant::now() - Duration::from_secs(31),
            Duration::from_secs(30),
        );
        assert!(past.expired());
        assert!(!past.may_send(Duration::ZERO));
    }
}
