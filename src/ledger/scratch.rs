//! Scratch tables: sets too large for memory, kept in a private temporary SQLite database with a
//! bounded page cache. Nothing here is part of the ledger: the database lives in a file that
//! SQLite creates in the temporary folder only once the cache is full, and deletes when it is
//! closed.
//!
//! [`Prints`] holds the identities of an input once they outgrow the in-memory table
//! (`input::Spill`), so that `run`, `reconcile` and `export --annotate` read a sheet of ten million
//! rows in the memory of one of a hundred thousand.

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::input::{Print, Spill, SpillError};

/// The page cache of a scratch database: what it costs in memory at most, however large it grows.
pub const CACHE_KIB: i64 = 16 * 1024;

/// The identities of an input, by their 128-bit print.
pub struct Prints {
    conn: Connection,
}

impl Prints {
    pub fn open() -> rusqlite::Result<Prints> {
        // An empty name is a private temporary database, deleted when closed.
        let conn = Connection::open("")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // Throw-away data: no journal, no sync, no locks to take.
        conn.pragma_update(None, "journal_mode", "OFF")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // One transaction for the life of the table: pages go to the file only when the cache
        // is full, never at a commit.
        conn.execute_batch(
            "CREATE TABLE prints (
                 key     BLOB PRIMARY KEY,
                 payload INTEGER NOT NULL,
                 fields  INTEGER NOT NULL,
                 ordinal INTEGER NOT NULL
             ) WITHOUT ROWID;
             BEGIN;",
        )?;
        Ok(Prints { conn })
    }
}

impl Spill for Prints {
    fn first_or_insert(&mut self, print: Print) -> Result<Option<Print>, SpillError> {
        let key = print.key.to_be_bytes();
        // Most rows are new: one statement for them, a second only for a duplicate.
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO prints (key, payload, fields, ordinal) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![
                &key[..],
                print.payload as i64,
                u32::from_le_bytes(print.fields),
                print.ordinal
            ])?;
        if inserted == 1 {
            return Ok(None);
        }
        let first = self
            .conn
            .prepare_cached("SELECT payload, fields, ordinal FROM prints WHERE key = ?1")?
            .query_row([&key[..]], |r| {
                Ok(Print {
                    key: print.key,
                    payload: r.get::<_, i64>(0)? as u64,
                    fields: r.get::<_, u32>(1)?.to_le_bytes(),
                    ordinal: r.get(2)?,
                })
            })?;
        Ok(Some(first))
    }

    fn contains(&mut self, key: u128) -> Result<bool, SpillError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM prints WHERE key = ?1")?
            .query_row([&key.to_be_bytes()[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Dedupe, Encoding, Input, Item};
    use std::io::Write as _;

    /// Every item of `sheet`, with its message, read with `dedupe`.
    fn items(sheet: &std::path::Path, dedupe: Dedupe) -> (Vec<String>, bool) {
        let mut input = Input::open(&[sheet.to_path_buf()], Encoding::Utf8)
            .unwrap()
            .with_dedupe(dedupe);
        let shown = input
            .by_ref()
            .map(|i| match i.unwrap() {
                Item::Row(r) => format!("{}: row {}", r.line, r.row.key()),
                Item::Reject(r) => r.to_string(),
                Item::Duplicate {
                    line, first_line, ..
                } => format!("{line}: duplicate of {first_line}"),
            })
            .collect();
        (shown, input.into_seen().spilled())
    }

    #[test]
    fn past_the_budget_the_spill_gives_the_same_items_as_memory() {
        let dir = tempfile::tempdir().unwrap();
        let sheet = dir.path().join("sheet.csv");
        let mut f = std::fs::File::create(&sheet).unwrap();
        writeln!(
            f,
            "partner_id,merchant_id,store_id,store_name,mall_group_label,mall_label"
        )
        .unwrap();
        for i in 0..300 {
            // Every seventh row repeats an earlier store: the same (a duplicate) on even lines,
            // in another mall (a conflict) on odd ones.
            let (store, mall) = match i % 7 {
                6 => (i / 3, if i % 2 == 0 { 200 } else { 201 }),
                _ => (i, 200),
            };
            writeln!(f, "2088{store:04},M1,S{store},店 {store},100,{mall}").unwrap();
        }
        drop(f);
        let (memory, spilled) = items(&sheet, Dedupe::InMemory);
        assert!(!spilled);
        assert!(
            memory.iter().any(|l| l.contains("duplicate of")),
            "{memory:?}"
        );
        assert!(
            memory.iter().any(|l| l.contains("conflicts with line")),
            "{memory:?}"
        );
        let bounded = Dedupe::Bounded {
            budget: 50,
            spill: Box::new(Prints::open().unwrap()),
        };
        let (spill, spilled) = items(&sheet, bounded);
        assert!(spilled, "300 rows outgrow a budget of 50");
        assert_eq!(spill, memory);
    }

    #[test]
    fn a_print_is_found_again_with_its_first_sighting() {
        let mut p = Prints::open().unwrap();
        let print = Print {
            key: u128::MAX - 7,
            payload: u64::MAX,
            fields: [1, 2, 250, 255],
            ordinal: u32::MAX,
        };
        assert_eq!(p.first_or_insert(print).unwrap(), None);
        let later = Print {
            payload: 3,
            ordinal: 9,
            ..print
        };
        assert_eq!(p.first_or_insert(later).unwrap(), Some(print));
        assert!(p.contains(print.key).unwrap());
        assert!(!p.contains(1).unwrap());
    }
}
