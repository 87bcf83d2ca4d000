//! Creating and upgrading the ledger file: the migrations of `migrations/sqlite/` (embedded at
//! build time, all pending ones applied in one transaction), and what an upgrade must not decide
//! alone.
//!
//! Migration 06 rewrites the keys of ids holding `%` or `|` (`input::write_key`). A row whose
//! merchant_id or store_id holds `|` may stand for two stores, since the old key joined the ids
//! with `|`: it is not guessed at. Before anything is applied the upgrade stops, naming those
//! rows, until the operator, having checked them with AlipayHK, accepts the ids stored in each
//! row as the store it is ([`StoredIds::Accept`], `pms-onboard ledger upgrade
//! --accept-stored-ids`). Migration 07 takes a label held by several rows back from all but the
//! first; what it took back is returned, for the command to show.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context as _;
use include_dir::{Dir, include_dir};
use rusqlite::{Connection, OptionalExtension as _};
use rusqlite_migration::{Migrations, SchemaVersion};

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations/sqlite");
pub(crate) static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("migrations/ is embedded and well formed")
});

/// The first version whose keys escape `%` and `|` (`06-unambiguous-keys`).
const ESCAPED_KEYS: usize = 6;
/// The first version that holds a believed label for one row only (`07-one-store-a-label`).
const ONE_STORE_A_LABEL: usize = 7;

/// How an upgrade treats the rows whose key may stand for two stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIds {
    /// Stop, naming them (what every command does).
    Refuse,
    /// Take the ids stored in each row as the store it is (`ledger upgrade --accept-stored-ids`).
    Accept,
}

/// A row whose key an earlier version may have shared between two stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousRow {
    pub key: String,
    pub partner_id: String,
    pub merchant_id: String,
    pub store_id: String,
    pub source_file: String,
    pub source_line: u64,
    pub state: String,
    pub pms_label: Option<String>,
}

impl AmbiguousRow {
    /// The key of the store its stored ids name, as this version writes it.
    pub fn key_now(&self) -> String {
        let mut key = String::new();
        crate::input::write_key(
            &mut key,
            crate::input::SaveWay::MerchantPms,
            "",
            &self.partner_id,
            &self.merchant_id,
            &self.store_id,
        );
        key
    }
}

impl fmt::Display for AmbiguousRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: partner_id {}, merchant_id {:?}, store_id {:?}: {}",
            self.source_file,
            self.source_line,
            self.partner_id,
            self.merchant_id,
            self.store_id,
            self.state
        )?;
        if let Some(label) = &self.pms_label {
            write!(f, ", pmsLabel {label}")?;
        }
        Ok(())
    }
}

/// The upgrade stopped: rows whose key may stand for two stores.
#[derive(Debug, thiserror::Error)]
pub struct AmbiguousKeys {
    pub ledger: PathBuf,
    pub rows: Vec<AmbiguousRow>,
}

/// How many rows a message lists; the rest are counted, with the query that lists them all.
const LISTED: usize = 20;

impl fmt::Display for AmbiguousKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ledger = self.ledger.display();
        writeln!(
            f,
            "the ledger {ledger} was written by an earlier version, which joined a store's ids \
             with `|` into one key: {} row(s) hold a merchant_id or store_id with `|`, so each \
             of their keys could stand for two stores (merchant \"M1\" with store \"S|2\", and \
             merchant \"M1|S\" with store \"2\"), and a request may have gone out for one of \
             them with the other's mall. This version tells such stores apart, but it will not \
             guess which store each of these rows was:",
            self.rows.len()
        )?;
        for row in self.rows.iter().take(LISTED) {
            writeln!(f, "  {row}")?;
        }
        if self.rows.len() > LISTED {
            writeln!(
                f,
                "  … and {} more: sqlite3 {ledger} \"SELECT source_file, source_line, \
                 merchant_id, store_id, state, pms_label FROM rows WHERE save_way_type = \
                 'MERCHANT_PMS' AND (instr(merchant_id, '|') OR instr(store_id, '|'))\"",
                self.rows.len() - LISTED
            )?;
        }
        write!(
            f,
            "What to do: ask AlipayHK which mall each of these stores holds, and each store of \
             your sheets whose ids join into the same text (quote the pmsLabel, or the Tracer-Id \
             from `pms-onboard export`); then run `pms-onboard ledger upgrade \
             --accept-stored-ids --ledger {ledger}`, which takes the ids stored in each row as \
             the store it is (the other store is then a new row, sent by the next run). Nothing \
             was changed."
        )
    }
}

/// A row that held a pmsLabel an earlier row held, taken back by migration 07.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenBack {
    pub key: String,
    pub pms_label: String,
    pub source_file: String,
    pub source_line: u64,
    /// The key of the row that keeps the label.
    pub holder: String,
}

/// What an upgrade did.
#[derive(Debug, Clone, Default)]
pub struct Upgrade {
    pub from: usize,
    pub to: usize,
    /// Keys rewritten because their ids hold `%` or `|`.
    pub rewritten: u64,
    /// Rows whose stored ids were accepted ([`StoredIds::Accept`]).
    pub accepted: Vec<AmbiguousRow>,
    /// Successes taken back: their label is another row's.
    pub taken_back: Vec<TakenBack>,
}

impl Upgrade {
    /// Whether a person must be told (the keys or the states of some rows changed).
    pub fn is_notable(&self) -> bool {
        self.rewritten > 0 || !self.taken_back.is_empty()
    }
}

impl fmt::Display for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            return write!(
                f,
                "the ledger is at version {}: nothing to upgrade",
                self.to
            );
        }
        write!(
            f,
            "the ledger was upgraded from version {} to {}",
            self.from, self.to
        )?;
        if self.rewritten > 0 {
            write!(
                f,
                "; {} key(s) of ids holding `%` or `|` are now written with them escaped \
                 (`%25`, `%7C`), as `export` shows them",
                self.rewritten
            )?;
        }
        if !self.taken_back.is_empty() {
            write!(
                f,
                "; {} row(s) held a pmsLabel an earlier row holds, an answer a proxy may have \
                 replayed: their success is taken back, and they are pending again, possibly \
                 sent, so that the next run asks AlipayHK again (a store circled already answers \
                 STORE_IS_CIRCLED):",
                self.taken_back.len()
            )?;
            for t in self.taken_back.iter().take(LISTED) {
                write!(
                    f,
                    "\n  {}:{}: {} had pmsLabel {}, which {} holds",
                    t.source_file, t.source_line, t.key, t.pms_label, t.holder
                )?;
            }
            if self.taken_back.len() > LISTED {
                write!(
                    f,
                    "\n  … and {} more (pms-onboard export --state pending)",
                    self.taken_back.len() - LISTED
                )?;
            }
        }
        Ok(())
    }
}

/// The version a ledger is at (0: a new file).
fn version(conn: &Connection) -> anyhow::Result<usize> {
    Ok(match MIGRATIONS.current_version(conn)? {
        SchemaVersion::NoneSet => 0,
        SchemaVersion::Inside(v) | SchemaVersion::Outside(v) => v.get(),
    })
}

/// The version every ledger is brought to.
pub fn latest() -> usize {
    MIGRATIONS_DIR.dirs().count()
}

/// Brings the ledger to the latest version, after the checks described in the module header.
pub(crate) fn upgrade(
    conn: &mut Connection,
    ledger: &Path,
    ids: StoredIds,
) -> anyhow::Result<Upgrade> {
    let from = version(conn)?;
    let accepted = if (1..ESCAPED_KEYS).contains(&from) {
        let rows = ambiguous_rows(conn)?;
        if !rows.is_empty() && ids == StoredIds::Refuse {
            return Err(AmbiguousKeys {
                ledger: ledger.to_owned(),
                rows,
            }
            .into());
        }
        rows
    } else {
        Vec::new()
    };
    MIGRATIONS.to_latest(conn).with_context(|| {
        format!(
            "cannot create or upgrade the ledger {} (is it a pms-onboard ledger from a newer \
             version?)",
            ledger.display()
        )
    })?;
    let upgrade = Upgrade {
        from,
        to: version(conn)?,
        rewritten: if from > 0 && from < ESCAPED_KEYS {
            temp_rows(
                conn,
                "rewritten_keys",
                "SELECT count(*) AS n FROM temp.rewritten_keys",
                |r| r.get::<_, i64>("n"),
            )?
            .pop()
            .map_or(0, |n| n as u64)
        } else {
            0
        },
        accepted,
        taken_back: if from > 0 && from < ONE_STORE_A_LABEL {
            temp_rows(
                conn,
                "labels_taken_back",
                "SELECT key, pms_label, source_file, source_line, holder
                 FROM temp.labels_taken_back ORDER BY source_file, source_line",
                |r| {
                    Ok(TakenBack {
                        key: r.get("key")?,
                        pms_label: r.get("pms_label")?,
                        source_file: r.get("source_file")?,
                        source_line: r.get::<_, i64>("source_line")? as u64,
                        holder: r.get("holder")?,
                    })
                },
            )?
        } else {
            Vec::new()
        },
    };
    // The migrations' temporary tables served their purpose.
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.rewritten_keys; DROP TABLE IF EXISTS temp.labels_taken_back;",
    )?;
    Ok(upgrade)
}

/// The rows of a temporary table a migration left, if it left it.
fn temp_rows<T>(
    conn: &Connection,
    table: &str,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 AS present FROM sqlite_temp_master WHERE type = 'table' AND name = :name",
            rusqlite::named_params! {":name": table},
            |r| r.get("present"),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    conn.prepare(sql)?.query_map([], map)?.collect()
}

/// The rows of a ledger before version 6 whose key may stand for two stores. Only columns of
/// the first version are read.
fn ambiguous_rows(conn: &Connection) -> rusqlite::Result<Vec<AmbiguousRow>> {
    let mut st = conn.prepare(
        "SELECT key, partner_id, merchant_id, store_id, source_file, source_line, state, pms_label
         FROM rows
         WHERE save_way_type = 'MERCHANT_PMS' AND (instr(merchant_id, '|') OR instr(store_id, '|'))
         ORDER BY source_file, source_line",
    )?;
    let rows = st.query_map([], |r| {
        Ok(AmbiguousRow {
            key: r.get("key")?,
            partner_id: r.get("partner_id")?,
            merchant_id: r.get("merchant_id")?,
            store_id: r.get("store_id")?,
            source_file: r.get("source_file")?,
            source_line: r.get::<_, i64>("source_line")? as u64,
            state: r.get("state")?,
            pms_label: r.get("pms_label")?,
        })
    })?;
    rows.collect()
}
