//! Scratch tables: sets too large for memory, kept in a private temporary SQLite database with a
//! bounded page cache. Nothing here is part of the ledger: the database lives in a file that
//! SQLite creates in the temporary folder only once the cache is full, and deletes when it is
//! closed.
//!
//! [`Prints`] holds the identities of an input that outgrew the in-memory table
//! (`input::Spill`), so that `run`, `reconcile` and `export --annotate` read a sheet of ten million
//! rows in the memory of one of a few hundred thousand.

use rusqlite::{Connection, OptionalExtension as _, named_params};

use crate::input::{Print, Spill, SpillError};

/// The page cache of a scratch database: what it costs in memory at most, however large it grows.
/// Prints are written in sorted batches and read rarely, so a small cache serves.
pub const CACHE_KIB: i64 = 8 * 1024;

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
        conn.execute_batch(
            "CREATE TABLE prints (
                 key     BLOB PRIMARY KEY,
                 payload INTEGER NOT NULL,
                 fields  INTEGER NOT NULL,
                 ordinal INTEGER NOT NULL
             ) WITHOUT ROWID",
        )?;
        Ok(Prints { conn })
    }
}

impl Spill for Prints {
    /// One transaction for the batch, committed, then its pages given back. The bundled SQLite
    /// is built with SQLITE_ENABLE_MEMORY_MANAGEMENT, so every connection of the process draws on
    /// one page cache, and while the pages a batch left there outnumber what the caches may hold,
    /// every page another connection reads is dropped as soon as it is read: the ledger's
    /// connection then read 6 pages a row of `reconcile` instead of 1.4, which made it 40 %
    /// slower.
    fn insert_all(&mut self, prints: &mut dyn Iterator<Item = Print>) -> Result<(), SpillError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO prints (key, payload, fields, ordinal)
                 VALUES (:key, :payload, :fields, :ordinal)",
            )?;
            for p in prints {
                insert.execute(named_params! {
                    ":key": &p.key.to_be_bytes()[..],
                    ":payload": p.payload as i64,
                    ":fields": u32::from_le_bytes(p.fields),
                    ":ordinal": p.ordinal,
                })?;
            }
        }
        tx.commit()?;
        self.conn.execute_batch("PRAGMA shrink_memory")?;
        Ok(())
    }

    fn get(&mut self, key: u128) -> Result<Option<Print>, SpillError> {
        Ok(self
            .conn
            .prepare_cached("SELECT payload, fields, ordinal FROM prints WHERE key = :key")?
            .query_row(named_params! {":key": &key.to_be_bytes()[..]}, |r| {
                Ok(Print {
                    key,
                    payload: r.get::<_, i64>("payload")? as u64,
                    fields: r.get::<_, u32>("fields")?.to_le_bytes(),
                    ordinal: r.get("ordinal")?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Dedupe, Encoding, Input, Item};
    use std::io::Write as _;

    /// Every item of `sheet`, with its message, read with `dedupe`.
    fn items(sheet: &std::path::Path, dedupe: Dedupe) -> Vec<String> {
        Input::open(&[sheet.to_path_buf()], Encoding::Utf8)
            .unwrap()
            .with_dedupe(dedupe)
            .map(|i| match i.unwrap() {
                Item::Row(r) => format!("{}: row {}", r.line, r.row.key()),
                Item::Reject(r) => r.to_string(),
                Item::Duplicate {
                    line, first_line, ..
                } => format!("{line}: duplicate of {first_line}"),
            })
            .collect()
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
            // Every seventh row repeats an earlier store, far back (moved to the spill by then)
            // or near (still in memory): the same (a duplicate) on even lines, in another mall
            // (a conflict) on odd ones.
            let (store, mall) = match i % 7 {
                6 => (if i % 3 == 0 { i / 5 } else { i - 2 }, 200 + i % 2),
                _ => (i, 200),
            };
            writeln!(f, "2088{store:04},M1,S{store},店 {store},100,{mall}").unwrap();
        }
        drop(f);
        let memory = items(&sheet, Dedupe::InMemory);
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
        assert_eq!(items(&sheet, bounded), memory);
    }

    #[test]
    fn a_print_is_found_again_as_it_was_recorded() {
        let mut p = Prints::open().unwrap();
        let print = Print {
            key: u128::MAX - 7,
            payload: u64::MAX,
            fields: [1, 2, 250, 255],
            ordinal: u32::MAX,
        };
        p.insert_all(&mut [print].into_iter()).unwrap();
        assert_eq!(p.get(print.key).unwrap(), Some(print));
        assert_eq!(p.get(1).unwrap(), None);
        assert!(
            p.insert_all(&mut [print].into_iter()).is_err(),
            "a key is recorded once"
        );
    }
}
