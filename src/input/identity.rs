//! Which identities an input has already seen, in constant memory per identity, and in bounded
//! memory past a budget.
//!
//! A million-row sheet must validate in well under 100 MB, so no row is kept: per identity only
//! a 128-bit fingerprint of the key, a 64-bit hash of the payload, one byte per payload field
//! (to name a differing column) and where it was first seen — 32 bytes a slot.
//! The map is split in 256 shards that grow one at a time: a single table would briefly hold
//! its old and its doubled array together (about 100 MB at a million rows); a shard's doubling
//! costs 1/256 of that.
//! The hashes are XXH3 with a fixed seed, so that the same sheet always gets the same messages
//! (a sheet is the user's own data, not an adversary's: no need for a random seed): one 128-bit hash of the key (the
//! ledger's key, `Row::key`, in which no id can stand for a separator), one 64-bit hash per
//! payload field and one of those four; a
//! false match needs a 128-bit (key) and a 64-bit (payload) collision, negligible at any
//! spreadsheet size. (SipHash, two 64-bit hashes for the key and five for the payload, was a
//! tenth of the time of `validate`.)
//!
//! The seam ([`Dedupe`]): `validate` keeps every identity in memory (32 MB a million rows, and the
//! fastest). `run`, `reconcile` and `export --annotate` give a budget and a [`Spill`] (a table on
//! a temporary file with a bounded cache, `ledger::scratch`), so that their memory stays flat
//! however many rows the sheet has: when the in-memory table holds more than the budget, its
//! slots move to the spill in key order (one sorted pass over the spill's index, not a page a
//! row) and the table starts again empty. A fixed-size filter of the keys moved says "not there"
//! for nearly every new row, so the spill is only read for a repeated identity, or for the few
//! new ones the filter cannot tell (0.2 % of them at ten million identities). The spill keeps the
//! slots as they were, so the verdicts, and every message built from them, are the same either
//! way.

use xxhash_rust::xxh3::{xxh3_64_with_seed, xxh3_128_with_seed};

use super::columns::Column;
#[cfg(test)]
use super::row::{Row, SaveWay};
use super::rules::Valid;

/// The payload fields, in the order a conflict names the first differing one.
pub(crate) const PAYLOAD_FIELDS: [Column; 4] = [
    Column::MerchantName,
    Column::StoreName,
    Column::MallGroupLabel,
    Column::MallLabel,
];

/// 128 bits of the key; uniformly random, so the table indexes with `.0` as it is.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyPrint(u64, u64);

#[derive(Clone, Copy)]
struct Seen {
    payload: u64,
    fields: [u8; 4],
    /// Global ordinal of the first line (see `Identities::ordinal`).
    ordinal: u32,
}

/// Where a row with this identity was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    New,
    Duplicate {
        first_ordinal: u32,
    },
    /// `column` is a payload column that certainly differs (`None`: some payload field differs).
    Conflict {
        first_ordinal: u32,
        column: Option<&'static str>,
    },
}

/// One identity as a [`Spill`] stores it: the slot of the in-memory table, in plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print {
    /// The key's 128-bit fingerprint; its 16 big-endian bytes sort as the table's shards do.
    pub key: u128,
    /// The payload's hash.
    pub payload: u64,
    /// One byte of each payload field's hash, to name the first field that differs.
    pub fields: [u8; 4],
    /// Where the identity was first seen (an ordinal of the input, from 1).
    pub ordinal: u32,
}

/// An error of a [`Spill`], shown to the user with what to do (see `InputError::Spill`).
pub type SpillError = Box<dyn std::error::Error + Send + Sync>;

/// Where identities go past the in-memory budget: a store whose memory is bounded however many
/// it holds (`ledger::scratch::Prints`).
pub trait Spill: Send {
    /// Records prints whose keys are not recorded yet, given in key order.
    fn insert_all(&mut self, prints: &mut dyn Iterator<Item = Print>) -> Result<(), SpillError>;
    /// The print recorded for `key`, if any.
    fn get(&mut self, key: u128) -> Result<Option<Print>, SpillError>;
}

/// How an input checks identities for duplicates and conflicts.
pub enum Dedupe {
    /// Every identity in memory, 32 bytes each: the fastest (`validate`).
    InMemory,
    /// In memory up to `budget` identities at a time; the others in `spill`.
    Bounded {
        budget: usize,
        spill: Box<dyn Spill>,
    },
}

pub(crate) struct Identities {
    seed: u64,
    /// The key, reused from row to row.
    buf: String,
    shards: Vec<Shard>,
    /// Identities in `shards`.
    len: usize,
    /// The budget and the spill of [`Dedupe::Bounded`].
    overflow: Option<Overflow>,
}

struct Overflow {
    budget: usize,
    spill: Box<dyn Spill>,
    /// The keys moved to `spill` (`None` until the first move).
    moved: Option<Filter>,
}

/// A Bloom filter of a fixed 16 MiB over the keys moved to the spill: `false` means certainly not
/// there. The key is already a uniform 128-bit hash, so the probes are taken from its two halves
/// (double hashing) instead of hashing again.
struct Filter(Vec<u64>);

/// 2^27 bits, 6 probes: a new key passes for a moved one about once in 140 million at a million
/// keys, once in 450 at ten million (each such key costs one read of the spill).
const FILTER_BITS: u64 = 1 << 27;
const FILTER_PROBES: u64 = 6;

impl Filter {
    fn new() -> Filter {
        Filter(vec![0; (FILTER_BITS / 64) as usize])
    }

    fn probes(key: KeyPrint) -> impl Iterator<Item = usize> {
        (0..FILTER_PROBES).map(move |i| {
            (key.0.wrapping_add(i.wrapping_mul(key.1 | 1)) & (FILTER_BITS - 1)) as usize
        })
    }

    fn insert(&mut self, key: KeyPrint) {
        for bit in Filter::probes(key) {
            self.0[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, key: KeyPrint) -> bool {
        Filter::probes(key).all(|bit| self.0[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// One shard: open addressing with linear probing over `(key, first seen)` slots, at most 3/4
/// full; a slot with ordinal 0 is empty (ordinals start at 1). One cache line is touched per
/// lookup (a `HashMap` touches its control bytes and then the slot: two cache misses a row once
/// the table outgrows the cache, which was a third of the time of `validate`).
#[derive(Default)]
struct Shard {
    slots: Vec<(KeyPrint, Seen)>,
    len: usize,
}

const EMPTY: (KeyPrint, Seen) = (
    KeyPrint(0, 0),
    Seen {
        payload: 0,
        fields: [0; 4],
        ordinal: 0,
    },
);

impl Shard {
    /// The slot first seen for `key`, or `None` after recording `seen` for it.
    fn first_or_insert(&mut self, key: KeyPrint, seen: Seen) -> Option<Seen> {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = key.0 as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.1.ordinal == 0 {
                *slot = (key, seen);
                self.len += 1;
                return None;
            }
            if slot.0 == key {
                return Some(slot.1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Sorts the slots by key, the empty ones last: the table cannot be searched until
    /// [`Shard::clear`].
    fn sort(&mut self) {
        self.slots
            .sort_unstable_by_key(|s| (s.1.ordinal == 0, print_key(s.0)));
    }

    /// The slots in use, in key order after [`Shard::sort`].
    fn sorted(&self) -> &[(KeyPrint, Seen)] {
        &self.slots[..self.len]
    }

    /// Empties the shard, its array kept for the identities to come.
    fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity]);
        let mask = capacity - 1;
        for slot in old.into_iter().filter(|s| s.1.ordinal != 0) {
            let mut i = slot.0.0 as usize & mask;
            while self.slots[i].1.ordinal != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

/// The spill's key: the shard's half first, so that shard order is key order.
fn print_key(key: KeyPrint) -> u128 {
    (u128::from(key.1) << 64) | u128::from(key.0)
}

fn to_print(key: KeyPrint, seen: Seen) -> Print {
    Print {
        key: print_key(key),
        payload: seen.payload,
        fields: seen.fields,
        ordinal: seen.ordinal,
    }
}

fn seen_of(p: Print) -> Seen {
    Seen {
        payload: p.payload,
        fields: p.fields,
        ordinal: p.ordinal,
    }
}

const SHARDS: usize = 256;
/// Any fixed value: see the module header.
const SEED: u64 = 0x005E_ED0F_1DE7_1717;

impl Identities {
    pub(crate) fn new(dedupe: Dedupe) -> Identities {
        Identities {
            seed: SEED,
            buf: String::with_capacity(256),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
            overflow: match dedupe {
                Dedupe::InMemory => None,
                Dedupe::Bounded { budget, spill } => Some(Overflow {
                    budget,
                    spill,
                    moved: None,
                }),
            },
        }
    }

    /// Records `row` first seen at `ordinal`, or says how it relates to the earlier one.
    #[cfg(test)]
    pub(crate) fn check(&mut self, row: &Row, ordinal: u32) -> Result<Verdict, SpillError> {
        self.check_valid(&Valid::of_row(row), ordinal)
    }

    /// Whether identities went to the spill (the input outgrew the budget).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        self.overflow.as_ref().is_some_and(|o| o.moved.is_some())
    }

    /// Records `row` first seen at `ordinal`, or says how it relates to the earlier one.
    pub(crate) fn check_valid(
        &mut self,
        row: &Valid<'_>,
        ordinal: u32,
    ) -> Result<Verdict, SpillError> {
        let key = self.key_print(row);
        let field_hashes =
            PAYLOAD_FIELDS.map(|c| xxh3_64_with_seed(row.get(c).as_bytes(), self.seed));
        let mut all = [0u8; 32];
        for (chunk, h) in all.chunks_exact_mut(8).zip(field_hashes) {
            chunk.copy_from_slice(&h.to_le_bytes());
        }
        let payload = xxh3_64_with_seed(&all, self.seed);
        let fields = field_hashes.map(|h| h as u8);
        debug_assert!(ordinal > 0, "ordinal 0 marks an empty slot");
        let seen = Seen {
            payload,
            fields,
            ordinal,
        };
        // A key moved to the spill is not in memory: it is found there, or it is new.
        let moved = match &mut self.overflow {
            Some(Overflow {
                spill,
                moved: Some(filter),
                ..
            }) if filter.may_hold(key) => spill.get(print_key(key))?.map(seen_of),
            _ => None,
        };
        let first = match moved {
            Some(first) => Some(first),
            None => {
                // The shard comes from the half of the key the shard's own table does not index
                // with.
                let first = self.shards[(key.1 >> 56) as usize].first_or_insert(key, seen);
                if first.is_none() {
                    self.len += 1;
                    self.move_past_budget()?;
                }
                first
            }
        };
        Ok(match first {
            None => Verdict::New,
            Some(first) if first.payload == payload => Verdict::Duplicate {
                first_ordinal: first.ordinal,
            },
            Some(first) => Verdict::Conflict {
                first_ordinal: first.ordinal,
                column: (0..4)
                    .find(|i| first.fields[*i] != fields[*i])
                    .map(|i| PAYLOAD_FIELDS[i].name()),
            },
        })
    }

    /// Past the budget, moves every slot to the spill, shard by shard in key order (so that the
    /// spill's index is written in order), and empties the in-memory table.
    fn move_past_budget(&mut self) -> Result<(), SpillError> {
        let Some(o) = self.overflow.as_mut().filter(|o| self.len > o.budget) else {
            return Ok(());
        };
        if o.moved.is_none() {
            tracing::debug!(
                identities = self.len,
                budget = o.budget,
                "the input has more identities than the in-memory budget: they go on in a \
                 temporary file"
            );
        }
        let filter = o.moved.get_or_insert_with(Filter::new);
        for shard in &mut self.shards {
            shard.sort();
        }
        let mut prints = self
            .shards
            .iter()
            .flat_map(Shard::sorted)
            .map(|&(key, seen)| {
                filter.insert(key);
                to_print(key, seen)
            });
        o.spill.insert_all(&mut prints)?;
        for shard in &mut self.shards {
            shard.clear();
        }
        self.len = 0;
        Ok(())
    }

    /// 128 bits of the key, as the ledger writes it (`Row::key`).
    fn key_print(&mut self, row: &Valid<'_>) -> KeyPrint {
        self.buf.clear();
        row.write_key(&mut self.buf);
        let h = xxh3_128_with_seed(self.buf.as_bytes(), self.seed);
        KeyPrint(h as u64, (h >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(store: &str, mall: &str, name: &str) -> Row {
        Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "1".into(),
            merchant_id: "m".into(),
            merchant_name: String::new(),
            store_id: store.into(),
            store_name: name.into(),
            mall_group_label: "1".into(),
            mall_label: mall.into(),
        }
    }

    #[test]
    fn duplicates_and_conflicts() {
        let mut ids = Identities::new(Dedupe::InMemory);
        assert_eq!(ids.check(&row("s1", "2", "甲"), 2).unwrap(), Verdict::New);
        assert_eq!(ids.check(&row("s2", "2", "甲"), 3).unwrap(), Verdict::New);
        assert_eq!(
            ids.check(&row("s1", "2", "甲"), 4).unwrap(),
            Verdict::Duplicate { first_ordinal: 2 }
        );
        match ids.check(&row("s1", "3", "甲"), 5).unwrap() {
            Verdict::Conflict {
                first_ordinal: 2,
                column,
            } => assert!(matches!(column, Some("mall_label") | None)),
            v => panic!("{v:?}"),
        }
    }

    /// A spill in memory: the input's side of the contract, tested without the ledger's
    /// temporary table (which has tests of its own in `ledger::scratch`).
    #[derive(Default)]
    struct MapSpill(std::collections::BTreeMap<u128, Print>);

    impl Spill for MapSpill {
        fn insert_all(
            &mut self,
            prints: &mut dyn Iterator<Item = Print>,
        ) -> Result<(), SpillError> {
            for p in prints {
                self.0.entry(p.key).or_insert(p);
            }
            Ok(())
        }

        fn get(&mut self, key: u128) -> Result<Option<Print>, SpillError> {
            Ok(self.0.get(&key).copied())
        }
    }

    #[test]
    fn identities_past_the_budget_go_to_the_spill_and_are_found_there() {
        let mut ids = Identities::new(Dedupe::Bounded {
            budget: 3,
            spill: Box::new(MapSpill::default()),
        });
        for (i, store) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let verdict = ids.check(&row(store, "2", ""), i as u32 + 1).unwrap();
            assert_eq!(verdict, Verdict::New);
        }
        assert!(ids.spilled());
        // "a" went to the spill with the first four; "e" is in memory.
        assert_eq!(
            ids.check(&row("a", "2", ""), 9).unwrap(),
            Verdict::Duplicate { first_ordinal: 1 }
        );
        assert!(matches!(
            ids.check(&row("e", "3", ""), 10).unwrap(),
            Verdict::Conflict {
                first_ordinal: 5,
                column: Some("mall_label") | None
            }
        ));
        assert!(matches!(
            ids.check(&row("b", "3", ""), 11).unwrap(),
            Verdict::Conflict {
                first_ordinal: 2,
                column: Some("mall_label") | None
            }
        ));
    }

    #[test]
    fn look_alike_ids_are_two_identities() {
        let mut ids = Identities::new(Dedupe::InMemory);
        let (mut a, mut b) = (row("S|2", "2", ""), row("2", "3", ""));
        a.merchant_id = "M1".into();
        b.merchant_id = "M1|S".into();
        assert_eq!(ids.check(&a, 1).unwrap(), Verdict::New);
        assert_eq!(ids.check(&b, 2).unwrap(), Verdict::New);
        let mut c = a.clone();
        c.store_id = "Ｓ|2".into(); // a full-width S: another store
        assert_eq!(ids.check(&c, 3).unwrap(), Verdict::New);
        assert_eq!(
            ids.check(&a, 4).unwrap(),
            Verdict::Duplicate { first_ordinal: 1 }
        );
    }

    #[test]
    fn slot_is_compact() {
        assert_eq!(std::mem::size_of::<(KeyPrint, Seen)>(), 32);
    }
}
