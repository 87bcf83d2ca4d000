//! A validated spreadsheet row, its identity (the ledger's key) and its payload.

use std::fmt;

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
    /// The row's identity: `MERCHANT_PMS|partner|merchant|store` or `IPAY_TRADE_NO|trade_no`.
    pub fn key(&self) -> String {
        match self.save_way {
            SaveWay::MerchantPms => format!(
                "MERCHANT_PMS|{}|{}|{}",
                self.partner_id, self.merchant_id, self.store_id
            ),
            SaveWay::IpayTradeNo => format!("IPAY_TRADE_NO|{}", self.ipay_trade_no),
        }
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
