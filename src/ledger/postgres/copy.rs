//! `ledger copy FROM TO`: a SQLite ledger into a PostgreSQL one, or back. Every table, every
//! column, the ids kept (a row's id is its SQLite rowid, an attempt's id the one its row names),
//! in one transaction on the side written, so that a copy that fails leaves nothing behind.
//!
//! Refused while either ledger is in use (SQLite: its lock, held for the whole copy; PostgreSQL:
//! a run holding a live lease), and into a ledger that already holds a run or a row. What a
//! killed run left in flight is first recovered on the side read (`store::recover`, or the
//! sweep), as the next run would: a copy never carries a claim. Afterwards the counts of every
//! table and every row's key, state and label, and every attempt's label, are read back from both
//! sides and compared.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use super::PgLedger;
use crate::ledger::{self, LedgerLock};

/// One side of a copy.
#[derive(Debug, Clone)]
pub enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Place {
    /// A `ledger` value: a postgresql:// URL, or the path of a SQLite file.
    pub fn parse(s: &str) -> Place {
        match super::is_url(s) {
            true => Place::Postgres(s.to_owned()),
            false => Place::Sqlite(PathBuf::from(s)),
        }
    }

    pub fn shown(&self) -> String {
        match self {
            Place::Sqlite(p) => p.display().to_string(),
            Place::Postgres(u) => super::redacted(u),
        }
    }
}

/// What a copy moved, verified on both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows)` for every table.
    pub tables: Vec<(&'static str, u64)>,
    /// Rows holding a label, the same on both sides.
    pub labels: u64,
    /// What a side file held that was taken in before copying.
    pub taken_in: Option<ledger::TakenIn>,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .tables
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        if let Some(taken) = &self.taken_in {
            write!(f, "{taken}; ")?;
        }
        write!(
            f,
            "copied {}; verified: the same counts, and every row's state and label ({} labels)",
            parts.join(", "),
            self.labels
        )
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// BIGINT / INTEGER
    I,
    /// TEXT
    T,
    /// BOOLEAN / INTEGER 0 or 1
    B,
    /// BYTEA / BLOB
    Y,
}
use Kind::{B, I, T, Y};

struct Table {
    name: &'static str,
    /// `(column, kind)`; SQLite's `rowid` is PostgreSQL's `id` for `rows`.
    columns: &'static [(&'static str, Kind)],
    /// Has an identity `id` whose sequence is moved past the copied ids.
    identity: bool,
}

/// In the order the foreign keys need.
const TABLES: &[Table] = &[
    Table {
        name: "runs",
        columns: &[
            ("id", I),
            ("started_at", T),
            ("ended_at", T),
            ("outcome", T),
            ("config", T),
            ("rows_read", I),
            ("to_send", I),
            ("succeeded", I),
            ("already_circled", I),
            ("failed", I),
            ("rejected", I),
            ("duplicates", I),
            ("already_done", I),
            ("drifted", I),
            ("message", T),
            ("sent", I),
            ("unverified", I),
            ("throttled", I),
        ],
        identity: true,
    },
    Table {
        name: "run_files",
        columns: &[("run_id", I), ("path", T), ("sha256", T), ("bytes", I)],
        identity: false,
    },
    Table {
        name: "rows",
        columns: &[
            ("id", I),
            ("key", T),
            ("save_way_type", T),
            ("ipay_trade_no", T),
            ("partner_id", T),
            ("merchant_id", T),
            ("merchant_name", T),
            ("store_id", T),
            ("store_name", T),
            ("mall_group_label", T),
            ("mall_label", T),
            ("state", T),
            ("failure", T),
            ("ambiguous", B),
            ("maybe_sent", B),
            ("pms_label", T),
            ("result_code", T),
            ("result_message", T),
            ("attempts", I),
            ("source_file", T),
            ("source_line", I),
            ("run_id", I),
            ("seq", I),
            ("created_at", T),
            ("updated_at", T),
            ("tracer_id", T),
            ("label_unverified", B),
            ("answer_unverified", B),
            ("first_maybe_sent_attempt", I),
        ],
        identity: true,
    },
    Table {
        name: "attempts",
        columns: &[
            ("id", I),
            ("key", T),
            ("run_id", I),
            ("attempt", I),
            ("started_at", T),
            ("latency_ms", I),
            ("http_status", I),
            ("result_code", T),
            ("result_status", T),
            ("result_message", T),
            ("error", T),
            ("outcome", T),
            ("sent_merchant_name", T),
            ("sent_store_name", T),
            ("sent_mall_group_label", T),
            ("sent_mall_label", T),
            ("maybe_processed", B),
            ("pms_label", T),
            ("verified", B),
            ("response_body", Y),
            ("tracer_id", T),
            ("response_time", T),
            ("response_signature", T),
            ("latency_us", I),
        ],
        identity: true,
    },
    Table {
        name: "rejects",
        columns: &[
            ("id", I),
            ("run_id", I),
            ("file", T),
            ("line", I),
            ("column_name", T),
            ("value", T),
            ("reason", T),
        ],
        identity: true,
    },
    Table {
        name: "drift",
        columns: &[
            ("id", I),
            ("run_id", I),
            ("key", T),
            ("source_file", T),
            ("source_line", I),
            ("detail", T),
        ],
        identity: true,
    },
    Table {
        name: "gateway",
        columns: &[
            ("id", I),
            ("endpoint", T),
            ("client_id", T),
            ("recorded_at", T),
        ],
        identity: false,
    },
];

/// Rows moved per statement into PostgreSQL (one `unnest` of arrays, a column each).
const BATCH: usize = 5_000;

/// Copies `from` into `to` (one SQLite, one PostgreSQL) and verifies the copy.
pub async fn copy(from: &Place, to: &Place) -> anyhow::Result<Copied> {
    match (from, to) {
        (Place::Sqlite(path), Place::Postgres(url)) => sqlite_to_postgres(path, url).await,
        (Place::Postgres(url), Place::Sqlite(path)) => postgres_to_sqlite(url, path).await,
        _ => anyhow::bail!(
            "`ledger copy` copies between a SQLite ledger and a PostgreSQL one: give a path and \
             a postgresql:// URL (to copy a SQLite file, copy it while no run uses it)"
        ),
    }
}

fn sqlite_columns(t: &Table) -> String {
    t.columns
        .iter()
        .map(|(c, _)| match (t.name, *c) {
            ("rows", "id") => "rowid",
            (_, c) => c,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn pg_columns(t: &Table) -> String {
    t.columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch, column by column, as PostgreSQL takes arrays.
enum Col {
    I(Vec<Option<i64>>),
    T(Vec<Option<String>>),
    B(Vec<Option<bool>>),
    Y(Vec<Option<Vec<u8>>>),
}

impl Col {
    fn new(kind: Kind) -> Col {
        match kind {
            I => Col::I(Vec::new()),
            T => Col::T(Vec::new()),
            B => Col::B(Vec::new()),
            Y => Col::Y(Vec::new()),
        }
    }

    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Col::I(v) => v,
            Col::T(v) => v,
            Col::B(v) => v,
            Col::Y(v) => v,
        }
    }

    fn clear(&mut self) {
        match self {
            Col::I(v) => v.clear(),
            Col::T(v) => v.clear(),
            Col::B(v) => v.clear(),
            Col::Y(v) => v.clear(),
        }
    }
}

fn in_use_sqlite(path: &Path) -> anyhow::Result<LedgerLock> {
    if !path.exists() {
        anyhow::bail!("no ledger at {}: check the path", path.display());
    }
    LedgerLock::acquire(path).map_err(|e| {
        anyhow::anyhow!(
            "{e}; `ledger copy` needs the ledger {} unused: wait for the run to end",
            path.display()
        )
    })
}

async fn refuse_in_use(pg: &PgLedger) -> anyhow::Result<()> {
    let live = pg.live_runs().await?;
    if !live.is_empty() {
        let runs: Vec<String> = live
            .iter()
            .map(|(id, holder)| format!("run {id} ({holder})"))
            .collect();
        anyhow::bail!(
            "the PostgreSQL ledger {} is in use: {} hold(s) a live lease; `ledger copy` needs it \
             unused: wait for the run(s) to end",
            pg.shown(),
            runs.join(", ")
        );
    }
    Ok(())
}

async fn sqlite_to_postgres(path: &Path, url: &str) -> anyhow::Result<Copied> {
    let _lock = in_use_sqlite(path)?;
    let conn = ledger::open_unlocked(path)?.into_connection();
    // The answers an earlier run could not write go in first: the copy holds them too.
    let taken_in = ledger::take_in_side_file(&conn, path)?;
    ledger::store::recover(&conn).with_context(|| {
        format!(
            "cannot recover what a run left in flight in {}",
            path.display()
        )
    })?;
    let mut pg = PgLedger::open(url).await?;
    refuse_in_use(&pg).await?;
    let shown = pg.shown().to_owned();
    let tx = pg.client_mut().transaction().await?;
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM rows)",
            &[],
        )
        .await?
        .get(0);
    if held > 0 {
        anyhow::bail!(
            "the PostgreSQL ledger {shown} already holds runs or rows: `ledger copy` writes only \
             into an empty ledger (a new database)"
        );
    }
    for t in TABLES {
        let types: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, k))| {
                let ty = match k {
                    I => "bigint",
                    T => "text",
                    B => "boolean",
                    Y => "bytea",
                };
                format!("${}::{ty}[]", i + 1)
            })
            .collect();
        let insert = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            t.name,
            pg_columns(t),
            types.join(", ")
        );
        let insert = tx.prepare(&insert).await?;
        let mut cols: Vec<Col> = t.columns.iter().map(|(_, k)| Col::new(*k)).collect();
        let mut n = 0usize;
        let mut st = conn.prepare(&format!("SELECT {} FROM {}", sqlite_columns(t), t.name))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            for (i, col) in cols.iter_mut().enumerate() {
                let name = t.columns[i].0;
                let bad = |e| anyhow::anyhow!("{}.{name} in {}: {e}", t.name, path.display());
                match col {
                    Col::I(v) => v.push(r.get(i).map_err(bad)?),
                    Col::T(v) => v.push(r.get(i).map_err(bad)?),
                    Col::B(v) => v.push(r.get::<_, Option<i64>>(i).map_err(bad)?.map(|b| b != 0)),
                    Col::Y(v) => v.push(r.get(i).map_err(bad)?),
                }
            }
            n += 1;
            if n.is_multiple_of(BATCH) {
                let params: Vec<_> = cols.iter().map(Col::as_sql).collect();
                tx.execute(&insert, &params).await?;
                cols.iter_mut().for_each(Col::clear);
            }
        }
        if !n.is_multiple_of(BATCH) {
            let params: Vec<_> = cols.iter().map(Col::as_sql).collect();
            tx.execute(&insert, &params).await?;
        }
        if t.identity {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'),
                         COALESCE((SELECT max(id) FROM {0}), 0) + 1, false)",
                    t.name
                ),
                &[],
            )
            .await?;
        }
    }
    tx.commit()
        .await
        .with_context(|| format!("cannot commit the copy into {shown}"))?;
    Ok(Copied {
        taken_in,
        ..verify(&conn, &pg).await?
    })
}

async fn postgres_to_sqlite(url: &str, path: &Path) -> anyhow::Result<Copied> {
    let mut pg = PgLedger::open(url).await?;
    refuse_in_use(&pg).await?;
    // This host's side files of the ledger go in first (the copy holds their answers too); then
    // what a dead run left in flight goes back to pending, as the next run would do.
    let taken_in = super::late::take_in(pg.client_mut(), url, &super::late::state_dir()).await?;
    super::lease::sweep(pg.client_mut()).await?;
    let _lock = LedgerLock::acquire(path).map_err(|e| {
        anyhow::anyhow!(
            "{e}; `ledger copy` needs the ledger {} unused",
            path.display()
        )
    })?;
    let conn = ledger::open_unlocked(path)?.into_connection();
    let held: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM rows)",
        [],
        |r| r.get(0),
    )?;
    if held > 0 {
        anyhow::bail!(
            "the ledger {} already holds runs or rows: `ledger copy` writes only into an empty \
             ledger (a new file)",
            path.display()
        );
    }
    let sqlite_tx = conn.unchecked_transaction()?;
    let pg_tx = pg.consistent_read().await?;
    read_into_sqlite(&pg_tx, &sqlite_tx, &[]).await?;
    pg_tx.commit().await?;
    sqlite_tx
        .commit()
        .with_context(|| format!("cannot commit the copy into {}", path.display()))?;
    Ok(Copied {
        taken_in,
        ..verify(&conn, &pg).await?
    })
}

/// Every table of the PostgreSQL ledger read in `pg_tx`, written into the SQLite ledger in
/// `sqlite_tx` (empty, at the latest version).
///
/// Each table comes as one `COPY (SELECT …) TO STDOUT (FORMAT binary)`: a stream of rows in
/// PostgreSQL's own encoding, read as it arrives, rather than a portal fetched 5,000 rows a round
/// trip; each value is bound to the SQLite insert straight from the stream's buffer. A binary
/// copy does not say its columns' types, so they are read from the `SELECT` prepared (no rows
/// fetched) and each value is decoded as before: a column not of the type this program wrote is
/// refused, not misread.
pub(crate) async fn read_into_sqlite(
    pg_tx: &tokio_postgres::Transaction<'_>,
    sqlite_tx: &rusqlite::Transaction<'_>,
    leave_out: &[&str],
) -> anyhow::Result<()> {
    for t in TABLES.iter().filter(|t| !leave_out.contains(&t.name)) {
        let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
        let mut insert = sqlite_tx.prepare(&format!(
            "INSERT INTO {} ({}) VALUES ({})",
            t.name,
            sqlite_columns(t),
            marks.join(", ")
        ))?;
        let select = format!("SELECT {} FROM {}", pg_columns(t), t.name);
        let types: Vec<Type> = pg_tx
            .prepare(&select)
            .await?
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let stream = pg_tx
            .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await?;
        let rows = BinaryCopyOutStream::new(stream, &types);
        futures_util::pin_mut!(rows);
        // Where the time goes (`RUST_LOG=pms_onboard::ledger=debug`): waiting for PostgreSQL's
        // rows, or writing them into SQLite.
        let (began, mut waited, mut n) = (Instant::now(), Duration::ZERO, 0u64);
        loop {
            let asked = Instant::now();
            let Some(r) = rows.try_next().await? else {
                waited += asked.elapsed();
                break;
            };
            waited += asked.elapsed();
            n += 1;
            for (i, (name, k)) in t.columns.iter().enumerate() {
                let bad = |e| {
                    anyhow::anyhow!(
                        "{}.{name} in the PostgreSQL ledger is not what this program wrote \
                         ({e}): was the table changed by hand?",
                        t.name
                    )
                };
                let at = i + 1;
                match k {
                    I => insert.raw_bind_parameter(at, r.try_get::<Option<i64>>(i).map_err(bad)?),
                    T => insert.raw_bind_parameter(at, r.try_get::<Option<&str>>(i).map_err(bad)?),
                    B => insert.raw_bind_parameter(
                        at,
                        r.try_get::<Option<bool>>(i).map_err(bad)?.map(i64::from),
                    ),
                    Y => insert.raw_bind_parameter(at, r.try_get::<Option<&[u8]>>(i).map_err(bad)?),
                }?;
            }
            insert.raw_execute()?;
        }
        tracing::debug!(
            "{}: {n} rows read in {:.2?}, {waited:.2?} of it waiting for PostgreSQL",
            t.name,
            began.elapsed()
        );
    }
    Ok(())
}

/// Reads both sides back: every table's count, every row's key, state and label, every attempt's
/// label and outcome.
async fn verify(conn: &rusqlite::Connection, pg: &PgLedger) -> anyhow::Result<Copied> {
    let mut copied = Copied::default();
    for t in TABLES {
        let sqlite: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| {
            r.get(0)
        })?;
        let postgres: i64 = pg
            .client()
            .query_one(&format!("SELECT count(*) FROM {}", t.name), &[])
            .await?
            .get(0);
        if sqlite != postgres {
            anyhow::bail!(
                "the copy is not whole: {} holds {sqlite} in SQLite and {postgres} in PostgreSQL; \
                 drop the database (or remove the file) written and copy again",
                t.name
            );
        }
        copied.tables.push((t.name, sqlite as u64));
    }
    type Labelled = Vec<(i64, String, Option<String>, Option<String>)>;
    let mut sides: Vec<Labelled> = Vec::new();
    for (sqlite, postgres) in [
        (
            "SELECT rowid, key, state, pms_label FROM rows",
            "SELECT id, key, state, pms_label FROM rows",
        ),
        (
            "SELECT id, key, outcome, pms_label FROM attempts",
            "SELECT id, key, outcome, pms_label FROM attempts",
        ),
    ] {
        let mut a: Labelled = conn
            .prepare(sqlite)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut b: Labelled = pg
            .client()
            .query(postgres, &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        a.sort();
        b.sort();
        if a != b {
            let first = a
                .iter()
                .zip(&b)
                .find(|(x, y)| x != y)
                .map(|(x, _)| x.1.clone());
            anyhow::bail!(
                "the copy differs from its source{}: drop the database (or remove the file) \
                 written and copy again",
                first
                    .map(|k| format!(" (first at {k})"))
                    .unwrap_or_default()
            );
        }
        sides.push(a);
    }
    copied.labels = sides[0].iter().filter(|r| r.3.is_some()).count() as u64;
    Ok(copied)
}
