//! The SQLite ledger: the one place that writes SQL. It records every row of every input, each
//! attempt, each run and each reject, so that a run killed at any moment is finished by running
//! the same command again.
//!
//! - [`open`] creates or upgrades the file ([`migrate`]: `migrations/sqlite/`, embedded at build
//!   time), in WAL mode with `synchronous=FULL`: a committed outcome survives a crash or a power
//!   cut. It takes in the side file of answers an earlier run could not write, before anything
//!   else, and returns what it did for the command to show ([`Opened`]).
//! - [`gateway`]: the gateway a ledger belongs to; another one is refused.
//! - [`lock`]: one run per ledger file, whatever path names it.
//! - [`filesystem`]: not on a network or FUSE filesystem; created readable by its owner only.
//! - [`writer`] is the single writer thread: it group-commits what the workers send, and keeps
//!   every answer when the ledger cannot commit; [`store`] is its SQL; [`spill`] the side file.
//! - [`queries`] are the reads behind `status`, `export` and `reconcile`.
//! - [`scratch`] holds sets too large for memory in a temporary file, apart from the ledger.
//! - [`postgres`]: the ledger on a PostgreSQL server, for several runs on several hosts at once
//!   (claim, fence, lease, sweep, shared rate); `ledger copy`; the commands that only read a
//!   ledger read a PostgreSQL one through a snapshot.

pub mod error;
pub mod filesystem;
pub mod gateway;
pub mod lock;
pub mod migrate;
pub mod postgres;
pub mod queries;
pub mod run;
pub mod run_store;
pub mod scratch;
pub mod spill;
mod sql;
pub mod store;
pub mod writer;

use std::ops::Deref;
use std::path::Path;

use anyhow::Context as _;
use rusqlite::Connection;

pub use crate::model::State;
pub use error::LedgerError;
pub use gateway::Gateway;
pub use lock::{LedgerLock, LockError};
pub use migrate::{StoredIds, Upgrade};

/// A row of `rows` by its SQLite rowid: how the workers name a row to the writer. Looking a row
/// up by rowid goes straight to it; by key, it would first descend the key's index, and the writer
/// looks every sent row up three times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowId(pub i64);

/// A row marked in flight: the attempt it opened, and whether an earlier attempt (another run's,
/// or a crash's) may have reached the gateway, as the ledger says at the mark. On a shared
/// ledger that can have changed since the feeder read the row (another run's attempt swept back
/// as possibly sent), and a `STORE_IS_CIRCLED` is judged by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub attempt: i64,
    pub maybe_sent: bool,
}

/// A ledger just opened, and what opening it did that a person should be told (the command
/// shows the [`Notice`]s through its `Printer`). It reads as the connection it holds.
pub struct Opened {
    conn: Connection,
    notices: Vec<Notice>,
    /// For a PostgreSQL ledger: the folder of the snapshot `conn` reads (`postgres::snapshot`),
    /// removed with it.
    _snapshot: Option<tempfile::TempDir>,
}

impl Opened {
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

impl Deref for Opened {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// What opening a ledger did that a person should be told.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Answers an earlier run could not write, taken in from the side file.
    TakenIn(TakenIn),
    /// An upgrade that changed keys or took back labels held twice.
    Upgraded(Upgrade),
    /// The ledger is on a network or FUSE filesystem: read as it is, the side file left alone.
    Remote(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::TakenIn(t) => t.fmt(f),
            Notice::Upgraded(u) => u.fmt(f),
            Notice::Remote(r) => f.write_str(r),
        }
    }
}

/// Opens the file with the ledger's settings, without creating or upgrading its tables.
fn connect(path: &Path) -> anyhow::Result<Connection> {
    // Created by us, not SQLite, so that it and its -wal and -shm (which take its mode) are
    // private.
    if !path.exists() {
        filesystem::create_private(path)
            .with_context(|| format!("cannot create the ledger {}", path.display()))?;
    }
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the ledger {}", path.display()))?;
    configure(&conn).with_context(|| format!("cannot use the ledger {}", path.display()))?;
    Ok(conn)
}

/// Opens (creating or upgrading) the ledger; the caller holds its lock or only reads it.
pub fn open_unlocked(path: &Path) -> anyhow::Result<Opened> {
    let mut conn = connect(path)?;
    let upgrade = migrate::upgrade(&mut conn, path, StoredIds::Refuse)?;
    let notices = match upgrade.is_notable() {
        true => vec![Notice::Upgraded(upgrade)],
        false => Vec::new(),
    };
    Ok(Opened {
        conn,
        notices,
        _snapshot: None,
    })
}

/// Brings the ledger to this version, the rows whose key may stand for two stores treated as
/// `ids` says (`pms-onboard ledger upgrade`). The caller holds the lock.
pub fn upgrade(path: &Path, ids: StoredIds) -> anyhow::Result<Upgrade> {
    migrate::upgrade(&mut connect(path)?, path, ids)
}

/// Opens (creating or upgrading) the ledger, and first takes in the answers an earlier run left
/// in the side file, when no run holds the ledger (a run takes them in itself as it starts).
pub fn open(path: &Path) -> anyhow::Result<Opened> {
    open_checked(path, None)
}

/// Opens an existing ledger; a missing file is an error that says what to do. A PostgreSQL
/// ledger (a URL) is read through a snapshot of it ([`postgres::snapshot`]).
pub fn open_existing(path: &Path) -> anyhow::Result<Opened> {
    open_existing_reading(path, None, postgres::snapshot::Reads::Everything)
}

/// What `status` shows of the ledger at `path` (its last `last_runs` runs), with what opening it
/// did: a PostgreSQL ledger is counted on the server (`postgres::reads`), a file by
/// `queries::status`.
pub fn status(
    path: &Path,
    last_runs: usize,
) -> anyhow::Result<(queries::StatusCounts, Vec<Notice>)> {
    if let Some(url) = path.to_str().filter(|p| postgres::is_url(p)) {
        let (counts, taken) = postgres::reads::status_now(url, last_runs)?;
        return Ok((counts, taken.into_iter().map(Notice::TakenIn).collect()));
    }
    let opened = open_existing(path)?;
    let counts = queries::status(&opened, last_runs)?;
    Ok((counts, opened.notices))
}

/// [`open_existing`] for a command that compares a sheet with the ledger (`reconcile`,
/// `export --annotate`): a ledger of another gateway than `gateway` (when the settings name
/// one) is refused before anything is written to it.
pub fn open_existing_for(path: &Path, gateway: Option<&Gateway>) -> anyhow::Result<Opened> {
    // These commands read the rows, not the attempts (a PostgreSQL snapshot leaves them out).
    open_existing_reading(path, gateway, postgres::snapshot::Reads::Rows)
}

fn open_existing_reading(
    path: &Path,
    gateway: Option<&Gateway>,
    reads: postgres::snapshot::Reads,
) -> anyhow::Result<Opened> {
    if let Some(url) = path.to_str().filter(|p| postgres::is_url(p)) {
        // What a run on this host could not write goes in first, as for a file.
        let taken = postgres::late::take_in_before_reading(url)?;
        // A PostgreSQL ledger is read through a snapshot, by the same queries.
        let (dir, conn) = postgres::snapshot::open(url, reads)?;
        let opened = Opened {
            conn,
            notices: taken.into_iter().map(Notice::TakenIn).collect(),
            _snapshot: Some(dir),
        };
        if let Some(gateway) = gateway {
            gateway::check(&opened, Path::new(&postgres::redacted(url)), gateway)?;
        }
        return Ok(opened);
    }
    if !path.exists() {
        anyhow::bail!(
            "no ledger at {}: run `pms-onboard run FILE...` first, or pass --ledger PATH",
            path.display()
        );
    }
    open_checked(path, gateway)
}

fn open_checked(path: &Path, gateway: Option<&Gateway>) -> anyhow::Result<Opened> {
    let mut opened = open_unlocked(path)?;
    if let Some(gateway) = gateway {
        gateway::check(&opened, path, gateway)?;
    }
    if let Some(remote) = filesystem::remote(path) {
        // Read as it is: what a run on another machine would do with its locks is not known.
        opened
            .notices
            .push(Notice::Remote(remote.when_reading(path)));
        return Ok(opened);
    }
    if spill::path_for(path).exists()
        && let Ok(_lock) = LedgerLock::acquire(path)
        && let Some(taken) = take_in_side_file(&opened, path)?
    {
        opened.notices.push(Notice::TakenIn(taken));
    }
    Ok(opened)
}

/// What [`take_in_side_file`] took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenIn {
    pub answers: usize,
    pub from: std::path::PathBuf,
}

impl std::fmt::Display for TakenIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "took in {} answer(s) that an earlier run could not write to the ledger ({})",
            self.answers,
            self.from.display()
        )
    }
}

/// Writes the answers of the side file into the ledger (one transaction), then removes the file.
/// The caller holds the ledger's lock. `None` when there is no side file.
pub fn take_in_side_file(conn: &Connection, ledger: &Path) -> anyhow::Result<Option<TakenIn>> {
    let from = spill::path_for(ledger);
    if !from.exists() {
        return Ok(None);
    }
    let answers = spill::read(&from)?;
    let name = from.display().to_string();
    let tx = conn.unchecked_transaction()?;
    for a in &answers {
        store::take_in(&tx, a, &name)
            .with_context(|| format!("cannot take in the answers kept in {name}"))?;
    }
    tx.commit()
        .with_context(|| format!("cannot take in the answers kept in {name}"))?;
    std::fs::remove_file(&from)
        .with_context(|| format!("took in {name}, but cannot remove it: remove it by hand"))?;
    Ok(Some(TakenIn {
        answers: answers.len(),
        from,
    }))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The `ledger` setting as messages show it: a path as it is, a PostgreSQL URL without its
/// password.
pub fn shown(ledger: &Path) -> String {
    match ledger.to_str().filter(|l| postgres::is_url(l)) {
        Some(url) => postgres::redacted(url),
        None => ledger.display().to_string(),
    }
}

/// Now, as stored in the ledger (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrate::MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn the_ledger_is_wal_and_plain_sql() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_unlocked(&dir.path().join("l.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn migration_3_keeps_rows_attempts_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut conn = Connection::open(&path).unwrap();
        configure(&conn).unwrap();
        migrate::MIGRATIONS.to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, started_at, config) VALUES (1, 't', '{}');
             INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                 merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                 pms_label, attempts, source_file, source_line, run_id, seq, created_at, updated_at)
             VALUES ('MERCHANT_PMS|p|m|s', 'MERCHANT_PMS', '', 'p', 'm', '店', 's', '分店', '1', '2',
                 'succeeded', '123', 1, 'a.csv', 2, 1, 1, 't', 't');
             INSERT INTO attempts (key, run_id, attempt, started_at, outcome)
             VALUES ('MERCHANT_PMS|p|m|s', 1, 1, 't', 'success');",
        )
        .unwrap();
        drop(conn);
        let conn = open_unlocked(&path).unwrap();
        let (state, label, name): (String, String, String) = conn
            .query_row(
                "SELECT state, pms_label, merchant_name FROM rows WHERE key = 'MERCHANT_PMS|p|m|s'",
                [],
                |r| {
                    Ok((
                        r.get("state")?,
                        r.get("pms_label")?,
                        r.get("merchant_name")?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (state.as_str(), label.as_str(), name.as_str()),
            ("succeeded", "123", "店")
        );
        let orphans: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(orphans, 0);
        // The rewritten checks still refuse what the old ones refused.
        for bad in [
            "UPDATE rows SET state = 'done'",
            "UPDATE rows SET failure = 'sometimes'",
            "UPDATE rows SET save_way_type = 'OTHER'",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
        // And an attempt still needs its row.
        assert!(
            conn.execute(
                "INSERT INTO attempts (key, run_id, attempt, started_at) VALUES ('nope', 1, 1, 't')",
                []
            )
            .is_err()
        );
    }

    /// A ledger as version `version` left it, with one run.
    fn ledger_at(path: &Path, version: usize) -> Connection {
        let mut conn = connect(path).unwrap();
        migrate::MIGRATIONS.to_version(&mut conn, version).unwrap();
        conn.execute(
            "INSERT INTO runs (id, started_at, config) VALUES (1, 't', '{}')",
            [],
        )
        .unwrap();
        conn
    }

    /// A MERCHANT_PMS row as version 5 wrote it: its key the ids joined with `|`.
    fn old_row(conn: &Connection, merchant: &str, store: &str, line: i64, label: Option<&str>) {
        conn.execute(
            "INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                 merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                 pms_label, attempts, source_file, source_line, run_id, seq, created_at,
                 updated_at)
             VALUES ('MERCHANT_PMS|2088|' || :merchant || '|' || :store, 'MERCHANT_PMS', '',
                 '2088', :merchant, '店', :store, '', '1', '2',
                 CASE WHEN :label IS NULL THEN 'pending' ELSE 'succeeded' END, :label, 1,
                 's.csv', :line, 1, :line, 't', 't' || :line)",
            rusqlite::named_params! {
                ":merchant": merchant, ":store": store, ":line": line, ":label": label,
            },
        )
        .unwrap();
        conn.execute(
            "INSERT INTO attempts (key, run_id, attempt, started_at, outcome, pms_label)
             VALUES ('MERCHANT_PMS|2088|' || :merchant || '|' || :store, 1, 1, 't',
                 CASE WHEN :label IS NULL THEN 'transient' ELSE 'success' END, :label)",
            rusqlite::named_params! {":merchant": merchant, ":store": store, ":label": label},
        )
        .unwrap();
    }

    fn store(merchant: &str, store: &str) -> crate::input::Row {
        crate::input::Row {
            save_way: crate::input::SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088".into(),
            merchant_id: merchant.into(),
            merchant_name: "店".into(),
            store_id: store.into(),
            store_name: String::new(),
            mall_group_label: "1".into(),
            mall_label: "2".into(),
        }
    }

    fn keys(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(&format!("SELECT key FROM {table} ORDER BY key"))
            .unwrap()
            .query_map([], |r| r.get("key"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn sighting(conn: &Connection, row: crate::input::Row) -> crate::model::Sighting {
        let src = crate::input::SourceRow {
            file: "s.csv".into(),
            line: 9,
            row,
        };
        store::ingest(conn, 1, 9, &src, false).unwrap()
    }

    #[test]
    fn migration_6_rewrites_the_keys_of_ids_holding_a_percent_with_their_attempts_and_drift() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = ledger_at(&path, 5);
        old_row(&conn, "M%1", "S1", 2, Some("11"));
        old_row(&conn, "M1", "S2", 3, Some("12"));
        conn.execute(
            "INSERT INTO drift (run_id, key, source_file, source_line, detail)
             VALUES (1, 'MERCHANT_PMS|2088|M%1|S1', 's.csv', 2, 'mall_label')",
            [],
        )
        .unwrap();
        drop(conn);
        let opened = open_unlocked(&path).unwrap();
        let upgrade = match opened.notices() {
            [Notice::Upgraded(u)] => u.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((upgrade.from, upgrade.rewritten), (5, 1));
        let escaped = store("M%1", "S1").key();
        assert_eq!(escaped, "MERCHANT_PMS|2088|M%251|S1");
        let plain = store("M1", "S2").key();
        assert_eq!(keys(&opened, "rows"), [escaped.clone(), plain.clone()]);
        assert_eq!(keys(&opened, "attempts"), [escaped.clone(), plain]);
        assert_eq!(keys(&opened, "drift"), [escaped]);
        let orphans: i64 = opened
            .query_row(
                "SELECT count(*) AS n FROM pragma_foreign_key_check",
                [],
                |r| r.get("n"),
            )
            .unwrap();
        assert_eq!(orphans, 0);
        let helper: i64 = opened
            .query_row(
                "SELECT count(*) AS n FROM sqlite_master WHERE name LIKE '%for_migration%'",
                [],
                |r| r.get("n"),
            )
            .unwrap();
        assert_eq!(helper, 0, "the helper index is dropped");
        // The sheet's row is found done under its new key: not sent again.
        assert_eq!(
            sighting(&opened, store("M%1", "S1")),
            crate::model::Sighting::Done
        );
    }

    #[test]
    fn an_old_key_that_may_stand_for_two_stores_stops_the_upgrade_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = ledger_at(&path, 5);
        old_row(&conn, "M1", "S|2", 7, Some("123"));
        old_row(&conn, "M2", "S3", 8, None);
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        for _ in 0..2 {
            let err = open_unlocked(&path).err().unwrap();
            let refused = err.downcast_ref::<migrate::AmbiguousKeys>().unwrap();
            assert_eq!(refused.rows.len(), 1);
            let text = err.to_string();
            for part in [
                "s.csv:7: partner_id 2088, merchant_id \"M1\", store_id \"S|2\": succeeded, pmsLabel 123",
                "pms-onboard ledger upgrade --accept-stored-ids --ledger",
                "Nothing was changed",
            ] {
                assert!(text.contains(part), "{part}\n{text}");
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was changed");
        let upgrade = upgrade(&path, StoredIds::Accept).unwrap();
        assert_eq!(upgrade.accepted.len(), 1);
        assert_eq!(upgrade.accepted[0].key_now(), "MERCHANT_PMS|2088|M1|S%7C2");
        let conn = open_unlocked(&path).unwrap();
        assert_eq!(
            sighting(&conn, store("M1", "S|2")),
            crate::model::Sighting::Done
        );
        // The other store whose ids joined into the same text is a store of its own.
        assert_eq!(
            sighting(&conn, store("M1|S", "2")),
            crate::model::Sighting::Send
        );
    }

    #[test]
    fn migration_7_takes_a_label_held_twice_back_from_all_but_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = ledger_at(&path, 5);
        old_row(&conn, "M1", "S1", 2, Some("L"));
        old_row(&conn, "M1", "S2", 3, Some("L"));
        old_row(&conn, "M1", "S3", 4, Some("L"));
        old_row(&conn, "M1", "S4", 5, Some("K"));
        // A label kept from an answer that did not verify is not believed: it holds nothing.
        conn.execute(
            "UPDATE rows SET label_unverified = 1, state = 'pending' WHERE store_id = 'S3'",
            [],
        )
        .unwrap();
        drop(conn);
        let opened = open_unlocked(&path).unwrap();
        let [Notice::Upgraded(upgrade)] = opened.notices() else {
            panic!("{:?}", opened.notices());
        };
        assert_eq!(upgrade.taken_back.len(), 1);
        let t = &upgrade.taken_back[0];
        assert_eq!(
            (t.key.as_str(), t.holder.as_str()),
            ("MERCHANT_PMS|2088|M1|S2", "MERCHANT_PMS|2088|M1|S1")
        );
        assert!(upgrade.to_string().contains("s.csv:3"), "{upgrade}");
        let rows: Vec<(String, String, Option<String>, bool)> = opened
            .prepare("SELECT store_id, state, pms_label, maybe_sent FROM rows ORDER BY store_id")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get("store_id")?,
                    r.get("state")?,
                    r.get("pms_label")?,
                    r.get("maybe_sent")?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [
            ("S1", "succeeded", Some("L"), false),
            ("S2", "pending", None, true),
            ("S3", "pending", Some("L"), false),
            ("S4", "succeeded", Some("K"), false),
        ];
        for (got, want) in rows.iter().zip(expected) {
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_deref(), got.3),
                want
            );
        }
        let outcomes: Vec<String> = opened
            .prepare("SELECT outcome FROM attempts ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get("outcome"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            outcomes,
            ["success", "not_this_request", "success", "success"]
        );
    }

    #[test]
    fn the_writer_tells_the_worker_when_a_success_carries_another_stores_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let (w, thread) = writer::start(LedgerLock::acquire(&path).unwrap()).unwrap();
        let run = w.begin_run("{}".into(), Vec::new()).unwrap();
        let rows = [store("M1", "S1"), store("M1", "S2")];
        let sheet = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let src = crate::input::SourceRow {
                    file: "s.csv".into(),
                    line: i as u64 + 2,
                    row: r.clone(),
                };
                (i as u64 + 1, src)
            })
            .collect();
        w.ingest(run, sheet, false).unwrap();
        let reader = open_unlocked(&path).unwrap();
        let page = queries::pending_page(&reader, run, 0, 10, false).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdicts = rt.block_on(async {
            let mut verdicts = Vec::new();
            for (_, row_id, r) in &page {
                let attempt_id = w.mark_in_flight(run, *row_id).await.unwrap().unwrap();
                let label = Some("2026000000000000000000000000001".to_owned());
                let answered = store::Answered {
                    run_id: run,
                    attempt_id,
                    row_id: *row_id,
                    row: r.row(),
                    attempt: crate::api::outcome::Attempt {
                        outcome: crate::api::outcome::Outcome::Success {
                            pms_label: label.clone().unwrap(),
                        },
                        pms_label: label.clone(),
                        verified: Some(true),
                        ..Default::default()
                    },
                    update: crate::model::RowUpdate {
                        state: State::Succeeded,
                        failure: None,
                        ambiguous: false,
                        maybe_sent: false,
                        pms_label: label,
                        label_unverified: false,
                        answer_unverified: Some(false),
                        result_code: Some("SUCCESS".into()),
                        result_message: None,
                        tracer_id: None,
                    },
                };
                verdicts.push(w.record(answered).verdict().await);
            }
            verdicts
        });
        assert_eq!(
            verdicts,
            [
                store::Verdict::Kept,
                store::Verdict::LabelHeldBy { key: rows[0].key() }
            ]
        );
        drop(w);
        thread.join(std::time::Duration::from_secs(5));
        let states: Vec<String> = reader
            .prepare("SELECT state FROM rows ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get("state"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(states, ["succeeded", "pending"]);
    }
}
