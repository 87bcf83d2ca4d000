//! One rate for the client id, shared by every run on the ledger: GCRA on the server's clock.
//! The `rate` row of a client id holds the theoretical arrival time (`tat`); a request takes the
//! slot `greatest(tat, now)` and moves `tat` on by one interval, in one statement that holds the
//! row's lock (an upsert: `INSERT … ON CONFLICT DO UPDATE` locks the row as `SELECT … FOR UPDATE`
//! would, in one round trip). The hosts' own clocks do not matter: each is told how long to wait
//! for its slot, measured on the server. A throttle seen by one run moves `tat` on for all.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::micros;

/// Takes the next slot of `client_id` for a request, slots `interval` apart; returns how long
/// to wait from now for it (zero when it is now).
pub async fn take_slot(
    client: &impl GenericClient,
    client_id: &str,
    interval: Duration,
) -> anyhow::Result<Duration> {
    let wait_us: i64 = client
        .query_one(
            "INSERT INTO rate AS t (client_id, tat)
                 VALUES ($1, clock_timestamp() + $2::bigint * interval '1 microsecond')
             ON CONFLICT (client_id) DO UPDATE
                 SET tat = greatest(t.tat, clock_timestamp()) + $2::bigint * interval '1 microsecond'
             RETURNING (extract(epoch FROM (t.tat - $2::bigint * interval '1 microsecond'
                 - clock_timestamp())) * 1e6)::bigint",
            &[&client_id, &micros(interval)],
        )
        .await?
        .get(0);
    Ok(Duration::from_micros(wait_us.max(0) as u64))
}

/// A throttle was seen: no run on the ledger takes a slot of `client_id` before `pause` from now.
pub async fn throttled(
    client: &impl GenericClient,
    client_id: &str,
    pause: Duration,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO rate AS t (client_id, tat)
                 VALUES ($1, clock_timestamp() + $2::bigint * interval '1 microsecond')
             ON CONFLICT (client_id) DO UPDATE
                 SET tat = greatest(t.tat, clock_timestamp() + $2::bigint * interval '1 microsecond')",
            &[&client_id, &micros(pause)],
        )
        .await?;
    Ok(())
}
