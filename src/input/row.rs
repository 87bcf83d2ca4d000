//! A validated spreadsheet row, its identity (the ledger's key) and its payload.

use std::fmt;

use super::rules::Problem;

/// How the store is identified to the gateway (`saveWayType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SaveWay {
    MerchantPms,
    IpayTradeNo,
}

impl SaveWay {
    pub fn as_str(self) -> &'static str {
        match self {
            SaveWay::MerchantPms => "MERCHANT_PMS",
            SaveWay::IpayTradeNo => "IPAY_TRADE_NO",
        }
    }

    /// Matches `MERCHANT_PMS` / `IPAY_TRADE_NO` case-insensitively after trimming.
    pub fn parse(s: &str) -> Option<Self> {
        // The exact spelling first: what nearly every sheet holds.
        match s {
            "MERCHANT_PMS" => return Some(SaveWay::MerchantPms),
            "IPAY_TRADE_NO" => return Some(SaveWay::IpayTradeNo),
            _ => {}
        }
        let s = s.trim();
        if s.eq_ignore_ascii_case("MERCHANT_PMS") {
            Some(SaveWay::MerchantPms)
        } else if s.eq_ignore_ascii_case("IPAY_TRADE_NO") {
            Some(SaveWay::IpayTradeNo)
        } else {
            None
        }
    }
}

impl fmt::Display for SaveWay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes a store's identity, the ledger's key, to `out`: the save way and the ids it names,
/// each after a `|` (`MERCHANT_PMS|partner_id|merchant_id|store_id` or
/// `IPAY_TRADE_NO|ipay_trade_no`), with `%` and `|` inside an id written `%25` and `%7C`. No
/// separator can come from an id, so two stores never share a key (`M1` + `S|2` and `M1|S` + `2`
/// are two), and a key is read back into its ids one way only; ids without either character
/// read as they did before the escape (ledgers written then keep their keys). The ids are taken
/// exactly as the input gives them: no trimming beyond the input's, no folding of look-alike
/// characters (ids that only look alike are different stores).
///
/// The one place a row's identity is built: [`Row::key`], the sheet's duplicate check
/// (`input::identity`) and migration `06-unambiguous-keys` (the same escape in SQL) follow it.
pub fn write_key(
    out: &mut String,
    save_way: SaveWay,
    ipay_trade_no: &str,
    partner_id: &str,
    merchant_id: &str,
    store_id: &str,
) {
    out.push_str(save_way.as_str());
    let ids: &[&str] = match save_way {
        SaveWay::MerchantPms => &[partner_id, merchant_id, store_id],
        SaveWay::IpayTradeNo => &[ipay_trade_no],
    };
    for id in ids {
        out.push('|');
        push_escaped(out, id);
    }
}

/// `id` with `%` and `|` percent-escaped.
fn push_escaped(out: &mut String, id: &str) {
    let mut rest = id;
    while let Some(at) = memchr::memchr2(b'%', b'|', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        out.push_str(if rest.as_bytes()[at] == b'%' {
            "%25"
        } else {
            "%7C"
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// One row that passed every rule. Fields that do not apply to the save way are empty strings,
/// exactly as they are sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub save_way: SaveWay,
    pub ipay_trade_no: String,
    pub partner_id: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub store_id: String,
    pub store_name: String,
    pub mall_group_label: String,
    pub mall_label: String,
}

impl Row {
    /// The row's identity as one text: see [`write_key`].
    pub fn key(&self) -> String {
        let mut key = String::with_capacity(64);
        write_key(
            &mut key,
            self.save_way,
            &self.ipay_trade_no,
            &self.partner_id,
            &self.merchant_id,
            &self.store_id,
        );
        key
    }

    /// True when the payload (mall and names) is the same; the identity is assumed equal.
    pub fn same_payload(&self, other: &Row) -> bool {
        self == other
    }

    /// Names the payload fields that differ, for drift and conflict messages.
    pub fn payload_differences(&self, other: &Row) -> Vec<String> {
        let mut out = Vec::new();
        let fields = [
            ("merchant_name", &self.merchant_name, &other.merchant_name),
            ("store_name", &self.store_name, &other.store_name),
            (
                "mall_group_label",
                &self.mall_group_label,
                &other.mall_group_label,
            ),
            ("mall_label", &self.mall_label, &other.mall_label),
        ];
        for (name, a, b) in fields {
            if a != b {
                out.push(format!("{name} {a:?} -> {b:?}"));
            }
        }
        out
    }
}

/// A row together with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub file: String,
    /// 1-based line where the record starts, as a spreadsheet user counts.
    pub line: u64,
    pub row: Row,
}

/// A row that broke a rule: never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub file: String,
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
}

/// What a reject says: its column, its value and why, worded here for every reject.
impl Reject {
    /// A row that breaks a rule (or a workbook cell that cannot be read as typed).
    pub(crate) fn from_problem(file: &str, line: u64, p: Problem) -> Reject {
        Reject {
            file: file.to_string(),
            line,
            column: p.column.to_string(),
            value: p.value,
            reason: p.reason,
        }
    }

    /// A row with `cells` cells, something in one right of the header's `width`.
    pub(crate) fn extra_cells(
        file: &str,
        line: u64,
        value: &str,
        cells: usize,
        width: usize,
    ) -> Reject {
        Reject {
            file: file.to_string(),
            line,
            column: "(extra cells)".to_string(),
            value: value.to_string(),
            reason: format!(
                "the row has {cells} cells but the header has {width}: a comma inside an \
                 unquoted value usually shifts the columns; put the value in double quotes (or \
                 export again from the spreadsheet)"
            ),
        }
    }

    /// A row with the identity of an earlier one (`first`: its file and line) and another
    /// payload: `column` differs (`None`: the names or the mall, by their key), `value` is this
    /// row's.
    pub(crate) fn conflict(
        file: &str,
        line: u64,
        way: SaveWay,
        column: Option<&str>,
        value: String,
        first: (&str, u64),
    ) -> Reject {
        let what = match way {
            SaveWay::MerchantPms => "same store",
            SaveWay::IpayTradeNo => "same ipay_trade_no",
        };
        let (first_file, first_line) = first;
        Reject {
            file: file.to_string(),
            line,
            column: column.unwrap_or("key").to_string(),
            value,
            reason: format!(
                "conflicts with line {first_line} of {first_file} ({what}, different {}): \
                 keep only the row that is right",
                column.unwrap_or("names or mall")
            ),
        }
    }
}

impl fmt::Display for Reject {
    /// `FILE:LINE: column COLUMN: REASON`, the stderr form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: column {}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(merchant: &str, store: &str) -> Row {
        Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088".into(),
            merchant_id: merchant.into(),
            merchant_name: String::new(),
            store_id: store.into(),
            store_name: String::new(),
            mall_group_label: "1".into(),
            mall_label: "2".into(),
        }
    }

    #[test]
    fn ids_without_a_separator_keep_the_keys_of_before() {
        assert_eq!(store("M1", "S2").key(), "MERCHANT_PMS|2088|M1|S2");
        let trade = Row {
            save_way: SaveWay::IpayTradeNo,
            ipay_trade_no: "42".into(),
            ..store("", "")
        };
        assert_eq!(trade.key(), "IPAY_TRADE_NO|42");
    }

    #[test]
    fn look_alike_ids_are_two_stores() {
        let a = store("M1", "S|2");
        let b = store("M1|S", "2");
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), "MERCHANT_PMS|2088|M1|S%7C2");
        assert_eq!(b.key(), "MERCHANT_PMS|2088|M1%7CS|2");
        // An id that holds what an escape looks like is escaped in turn.
        assert_ne!(store("M1", "S%7C2").key(), a.key());
        assert_eq!(store("M%", "%|").key(), "MERCHANT_PMS|2088|M%25|%25%7C");
        // Exact: no trimming, no folding of characters that only look alike.
        assert_ne!(store("M1", "S2").key(), store("M1", "Ｓ2").key());
        assert_ne!(store("M1", "S2").key(), store("M1", "s2").key());
    }

    #[test]
    fn a_key_reads_back_into_its_ids_one_way_only() {
        for (merchant, id) in [("M1", "S|2"), ("M1|S", "2"), ("a%7C", "|%"), ("", "")] {
            let key = store(merchant, id).key();
            let fields: Vec<String> = key
                .split('|')
                .map(|f| f.replace("%7C", "|").replace("%25", "%"))
                .collect();
            assert_eq!(fields, ["MERCHANT_PMS", "2088", merchant, id], "{key}");
        }
    }
}
