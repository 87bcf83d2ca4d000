//! Which identities an input has already seen, in constant memory per identity.
//!
//! A million-row sheet must validate in well under 100 MB, so no row is kept: per identity only
//! a 128-bit fingerprint of the key, a 64-bit hash of the payload, one byte per payload field
//! (to name a differing column) and where it was first seen — 32 bytes a slot.
//! The map is split in 256 shards that grow one at a time: a single table would briefly hold
//! its old and its doubled array together (about 100 MB at a million rows); a shard's doubling
//! costs 1/256 of that.
//! The hashes are XXH3 with a fixed seed, so that the same sheet always gets the same messages
//! (a sheet is the user's own data, not an adversary's: no need for a random seed): one 128-bit hash of the key (its fields joined by a
//! byte that UTF-8 text never holds), one 64-bit hash per payload field and one of those four; a
//! false match needs a 128-bit (key) and a 64-bit (payload) collision, negligible at any
//! spreadsheet size. (SipHash, two 64-bit hashes for the key and five for the payload, was a
//! tenth of the time of `validate`.)

use xxhash_rust::xxh3::{xxh3_64_with_seed, xxh3_128_with_seed};

use super::columns::Column;
#[cfg(test)]
use super::row::Row;
use super::row::SaveWay;
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

pub(crate) struct Identities {
    seed: u64,
    /// The key's bytes, reused from row to row.
    buf: Vec<u8>,
    shards: Vec<Shard>,
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

const SHARDS: usize = 256;
/// Any fixed value: see the module header.
const SEED: u64 = 0x005E_ED0F_1DE7_1717;

impl Identities {
    pub(crate) fn new() -> Identities {
        Identities {
            seed: SEED,
            buf: Vec::with_capacity(256),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Records `row` first seen at `ordinal`, or says how it relates to the earlier one.
    #[cfg(test)]
    pub(crate) fn check(&mut self, row: &Row, ordinal: u32) -> Verdict {
        self.check_valid(&Valid::of_row(row), ordinal)
    }

    /// Records `row` first seen at `ordinal`, or says how it relates to the earlier one.
    pub(crate) fn check_valid(&mut self, row: &Valid<'_>, ordinal: u32) -> Verdict {
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
        // The shard comes from the half of the key the shard's own table does not index with.
        let shard = &mut self.shards[(key.1 >> 56) as usize];
        let seen = Seen {
            payload,
            fields,
            ordinal,
        };
        match shard.first_or_insert(key, seen) {
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
        }
    }

    /// 128 bits of the key: the save way and its fields, each followed by 0xFF (never in UTF-8).
    fn key_print(&mut self, row: &Valid<'_>) -> KeyPrint {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(row.save_way.as_str().as_bytes());
        b.push(0xFF);
        let fields: &[Column] = match row.save_way {
            SaveWay::MerchantPms => &[Column::PartnerId, Column::MerchantId, Column::StoreId],
            SaveWay::IpayTradeNo => &[Column::IpayTradeNo],
        };
        for c in fields {
            b.extend_from_slice(row.get(*c).as_bytes());
            b.push(0xFF);
        }
        let h = xxh3_128_with_seed(b, self.seed);
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
        let mut ids = Identities::new();
        assert_eq!(ids.check(&row("s1", "2", "甲"), 2), Verdict::New);
        assert_eq!(ids.check(&row("s2", "2", "甲"), 3), Verdict::New);
        assert_eq!(
            ids.check(&row("s1", "2", "甲"), 4),
            Verdict::Duplicate { first_ordinal: 2 }
        );
        match ids.check(&row("s1", "3", "甲"), 5) {
            Verdict::Conflict {
                first_ordinal: 2,
                column,
            } => assert!(matches!(column, Some("mall_label") | None)),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn slot_is_compact() {
        assert_eq!(std::mem::size_of::<(KeyPrint, Seen)>(), 32);
    }
}
