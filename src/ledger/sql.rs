//! SQL that several statements of the ledger share: the rule "a done row never moves back", and
//! the columns of a row as sent with the one mapping of them. Macros, so that each statement is
//! still one literal, prepared once and cached.

use crate::input::{Row, SaveWay};

/// A done row (`succeeded` or `already_circled`), as a condition on `state` (of the table
/// aliased `$t`, when given). Every statement that changes a row's state or its answer carries
/// `NOT done!()`, so that a done row never moves back; what counts done rows uses it as it is.
macro_rules! done {
    () => {
        "(state = 'succeeded' OR state = 'already_circled')"
    };
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".state = 'succeeded' OR ",
            $t,
            ".state = 'already_circled')"
        )
    };
}
pub(crate) use done;

/// The nine columns of a row as sent (of the table aliased `$t`, when given), read by
/// [`payload`].
macro_rules! payload_columns {
    () => {
        "save_way_type, ipay_trade_no, partner_id, merchant_id, merchant_name, store_id, \
         store_name, mall_group_label, mall_label"
    };
    ($t:literal) => {
        concat!(
            $t,
            ".save_way_type AS save_way_type, ",
            $t,
            ".ipay_trade_no AS ipay_trade_no, ",
            $t,
            ".partner_id AS partner_id, ",
            $t,
            ".merchant_id AS merchant_id, ",
            $t,
            ".merchant_name AS merchant_name, ",
            $t,
            ".store_id AS store_id, ",
            $t,
            ".store_name AS store_name, ",
            $t,
            ".mall_group_label AS mall_group_label, ",
            $t,
            ".mall_label AS mall_label"
        )
    };
}
pub(crate) use payload_columns;

/// The row as sent, from [`payload_columns`].
pub(crate) fn payload(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let way: String = r.get("save_way_type")?;
    Ok(Row {
        save_way: SaveWay::parse(&way).unwrap_or(SaveWay::MerchantPms),
        ipay_trade_no: r.get("ipay_trade_no")?,
        partner_id: r.get("partner_id")?,
        merchant_id: r.get("merchant_id")?,
        merchant_name: r.get("merchant_name")?,
        store_id: r.get("store_id")?,
        store_name: r.get("store_name")?,
        mall_group_label: r.get("mall_group_label")?,
        mall_label: r.get("mall_label")?,
    })
}
