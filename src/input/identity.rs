//! Which identities an input has already seen, in constant memory per identity.
//!
//! A million-row sheet must validate in well under 100 MB, so no row is kept: per identity only
//! a 128-bit fingerprint of the key, a 64-bit hash of the payload, one byte per payload field
//! (to name a differing column) and where it was first seen — 32 bytes a slot.
//! The map is split in 256 shards that grow one at a time: a single table would briefly hold
//! its old and its doubled array together (about 100 MB at a million rows); a shard's doubling
//! costs 1/256 of that.
//! The hashes are XXH3 with a random seed: one 128-bit hash of the key (its fields joined by a
//! byte that UTF-8 text never holds), one 64-bit hash per payload field and one of those four; a
//! false match needs a 128-bit (key) and a 64-bit (payload) collision, negligible at any
//! spreadsheet size. (SipHash, two 64-bit hashes for the key and five for the payload, was a
//! tenth of the time of `validate`.)

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

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

#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyPrint(u64, u64);

impl Hash for KeyPrint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniformly random: the map needs no second hash.
        state.write_u64(self.0);
    }
}

/// Passes through the `u64` that `KeyPrint` writes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

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
    shards: Vec<HashMap<KeyPrint, Seen, BuildHasherDefault<PassThrough>>>,
}

const SHARDS: usize = 256;

impl Identities {
    pub(crate) fn new() -> Identities {
        Identities {
            seed: RandomState::new().hash_one(0x5EED_u64),
            buf: Vec::with_capacity(256),
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
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
        // The shard comes from the half of the key the shard's own table does not hash.
        let shard = &mut self.shards[(key.1 >> 56) as usize];
        match shard.get(&key) {
            None => {
                shard.insert(
                    key,
                    Seen {
                        payload,
                        fields,
                        ordinal,
                    },
                );
                Verdict::New
            }
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
