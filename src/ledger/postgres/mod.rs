//! The ledger on a PostgreSQL server, for several runs on several hosts at once (`ledger =
//! "postgresql://…"`). The same tables as the SQLite ledger, and the same protocol (in flight
//! before the request leaves, every answer kept), with what a shared ledger needs beside it:
//!
//! - [`claim`]: a row is claimed by exactly one run; its in-flight mark is the claim, one
//!   conditional `UPDATE` (a CTE with `FOR UPDATE SKIP LOCKED`), committed before the request
//!   leaves. The answer is written only by the attempt that holds the claim (the fence).
//! - [`lease`]: each run holds a lease on the server's clock, renewed every few seconds; the
//!   rows in flight of a run whose lease expired go back to pending, possibly sent (the sweep,
//!   one host at a time under an advisory lock). Nothing a run does touches a live run's rows.
//! - [`rate`]: one GCRA row per client id, on the server's clock: every run on the ledger
//!   shares the rate AlipayHK granted the client id.
//! - [`runs`]: begin and end a run, take in sheet rows and rejects.
//! - [`late`]: answers that reach the ledger late (a run's side file, kept answers verified
//!   again), through the claim's fence.
//! - [`copy`]: `ledger copy` between a SQLite ledger and a PostgreSQL one.
//! - [`migrate`]: `migrations/postgres/`, applied once under an advisory lock.
//!
//! docs/ledger.md ("PostgreSQL") says what differs from SQLite and why.

pub mod claim;
pub mod connect;
pub mod copy;
pub mod feed;
pub mod late;
pub mod lease;
pub mod migrate;
pub mod rate;
pub mod reads;
pub mod runs;
pub mod snapshot;
pub mod store;

use crate::ledger::gateway::{Gateway, OtherGateway};
use std::time::Duration;

pub use claim::Fence;
pub use connect::{is_url, redacted};
pub use lease::{LeaseClock, LeaseKeeper, Swept};
pub use store::{LeaseTerms, PgStore};

/// The advisory lock keys of the ledger (one number space per database).
pub(crate) mod locks {
    /// Held (per transaction) while the schema is brought up to date.
    pub const MIGRATE: i64 = 0x706d_735f_6d69_6701;
    /// Tried (per transaction) by the sweep: one host sweeps at a time, the others go on.
    pub const SWEEP: i64 = 0x706d_735f_7377_6570;
}

/// An open PostgreSQL ledger: one connection (one writer per run; no pool).
pub struct PgLedger {
    client: tokio_postgres::Client,
    shown: String,
}

impl PgLedger {
    /// Connects to `url` and brings its schema up to date (once, whoever starts first).
    pub async fn open(url: &str) -> anyhow::Result<PgLedger> {
        let mut client = connect::connect(url).await?;
        migrate::upgrade(&mut client).await?;
        Ok(PgLedger {
            client,
            shown: redacted(url),
        })
    }

    /// The URL as messages show it (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    pub fn client_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }

    /// A read-only transaction that sees one moment of the ledger (what a copy or a snapshot
    /// reads, while runs go on writing).
    pub async fn consistent_read(&mut self) -> anyhow::Result<tokio_postgres::Transaction<'_>> {
        Ok(self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    }

    /// The runs holding a live lease now: `(run id, holder)`. A ledger with any is in use.
    pub async fn live_runs(&self) -> anyhow::Result<Vec<(i64, String)>> {
        let rows = self
            .client
            .query(
                "SELECT id, COALESCE(holder, '') FROM runs
                 WHERE outcome = 'running' AND lease_until > now() ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The server's clock minus this host's, and the server's version: what `doctor` shows.
    pub async fn clock_and_version(&self) -> anyhow::Result<(Duration, bool, String)> {
        let before = chrono::Utc::now();
        let row = self
            .client
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, version()",
                &[],
            )
            .await?;
        let after = chrono::Utc::now();
        let server_us: i64 = row.get(0);
        let mid_us = (before.timestamp_micros() + after.timestamp_micros()) / 2;
        let diff = server_us - mid_us;
        Ok((
            Duration::from_micros(diff.unsigned_abs()),
            diff >= 0,
            row.get(1),
        ))
    }
}

/// What `doctor` checks of a PostgreSQL ledger.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The server's `version()`.
    pub version: String,
    /// The schema version the ledger is at (brought up to [`migrate::latest`] on connecting).
    pub schema: i64,
    /// The server's clock minus this host's (its size, and whether the server is ahead).
    pub clock: (Duration, bool),
    /// The runs holding a live lease: `(run id, holder)`.
    pub live: Vec<(i64, String)>,
    /// Whether the connection is encrypted, and whether the server's certificate was checked.
    pub tls: (bool, bool),
}

/// Connects to `url` and reads what `doctor` shows; from any thread (a runtime of its own).
pub fn check(url: &str) -> anyhow::Result<Checked> {
    let url = url.to_owned();
    on_own_runtime("checking the PostgreSQL ledger failed", || async move {
        let pg = PgLedger::open(&url).await?;
        let (size, ahead, version) = pg.clock_and_version().await?;
        let schema: i64 = pg
            .client()
            .query_one("SELECT COALESCE(max(version), 0) FROM pms_schema", &[])
            .await?
            .get(0);
        let encrypted: bool = pg
            .client()
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await?
            .get(0);
        Ok(Checked {
            version,
            schema,
            clock: (size, ahead),
            live: pg.live_runs().await?,
            tls: (encrypted, encrypted && connect::checks_certificate(&url)),
        })
    })
}

/// Runs the future `work` makes to its end on a thread and runtime of its own, so that a caller
/// inside a runtime or outside one may call it; `failed` is the error if that thread panics.
pub(crate) fn on_own_runtime<T: Send, F: std::future::Future<Output = anyhow::Result<T>>>(
    failed: &'static str,
    work: impl FnOnce() -> F + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(work())
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!(failed)))
    })
}

/// For a run: refuses a PostgreSQL ledger that records a gateway other than `given` (as
/// [`crate::ledger::gateway::claim`] does for a file), and records `given` in one that records
/// none. The insert comes first, so two hosts starting together record one gateway.
pub async fn claim_gateway(ledger: &PgLedger, given: &Gateway) -> anyhow::Result<()> {
    let client = ledger.client();
    client
        .execute(
            "INSERT INTO gateway (id, endpoint, client_id, recorded_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            &[&given.endpoint, &given.client_id, &crate::ledger::now()],
        )
        .await?;
    let row = client
        .query_one("SELECT endpoint, client_id FROM gateway WHERE id = 1", &[])
        .await?;
    let recorded = Gateway {
        endpoint: row.try_get("endpoint")?,
        client_id: row.try_get("client_id")?,
    };
    if recorded == *given {
        return Ok(());
    }
    Err(OtherGateway {
        ledger: ledger.shown().to_owned(),
        suggestion: "postgresql://…/<a database of its own> (createdb, then that URL)".to_owned(),
        recorded,
        given: given.clone(),
    }
    .into())
}

/// A duration as the microseconds SQL multiplies `interval '1 microsecond'` by.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "../../../tests/pg_server.rs"]
mod pg_server;

#[cfg(test)]
mod tests;
