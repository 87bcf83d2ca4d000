//! The PostgreSQL schema: `migrations/postgres/NN-name/up.sql`, embedded at build time, applied in
//! order, each once, inside one transaction that holds an advisory lock: two hosts starting
//! together wait for each other, and the second finds nothing left to do.

use anyhow::Context as _;
use include_dir::{Dir, include_dir};

use super::locks;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations/postgres");

/// The migrations, by number: `(version, name, sql)`.
pub fn migrations() -> Vec<(i64, &'static str, &'static str)> {
    let mut all: Vec<_> = MIGRATIONS
        .dirs()
        .filter_map(|d| {
            let name = d.path().file_name()?.to_str()?;
            let version = name.split('-').next()?.parse::<i64>().ok()?;
            let sql = d.get_file(d.path().join("up.sql"))?.contents_utf8()?;
            Some((version, name, sql))
        })
        .collect();
    all.sort_by_key(|m| m.0);
    all
}

/// The version this program brings a ledger to.
pub fn latest() -> i64 {
    migrations().last().map(|m| m.0).unwrap_or(0)
}

/// Brings the schema to [`latest`]; returns the migrations applied (none when another host did).
pub async fn upgrade(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<&'static str>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::MIGRATE])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pms_schema (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM pms_schema", &[])
        .await?
        .get(0);
    if current > latest() {
        anyhow::bail!(
            "the PostgreSQL ledger is at schema version {current}, newer than this program's \
             ({}): use the pms-onboard that wrote it, or a newer one",
            latest()
        );
    }
    let mut applied = Vec::new();
    for (version, name, sql) in migrations() {
        if version <= current {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("cannot apply the ledger migration {name}"))?;
        tx.execute(
            "INSERT INTO pms_schema (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        applied.push(name);
    }
    tx.commit().await?;
    Ok(applied)
}
