//! The row rules: from the nine trimmed cell values of a record to a `Row`, or the first
//! problem found.
//!
//! Only the first problem of a row is reported, checked in this order:
//!
//! 1. (in the reader) extra non-empty cells beyond the header: the columns are shifted;
//! 2. every value, in column order: no control characters, no undecodable character (U+FFFD);
//! 3. every id and label column, in column order: not a number mangled by a spreadsheet
//!    (`2.08802E+15`), so that the hint wins over "digits only";
//! 4. `save_way_type`: `MERCHANT_PMS`, `IPAY_TRADE_NO`, or blank and inferable;
//! 5. the save way's own columns, in column order: `ipay_trade_no`, or `partner_id`,
//!    `merchant_id`, `merchant_name`, `store_id`, `store_name`;
//! 6. `mall_group_label`, then `mall_label`.
//!
//! Column order is the order of [`Column::ALL`].

use super::columns::Column;
use super::row::{Row, SaveWay};

/// The first rule a row breaks: the column, its value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub column: &'static str,
    pub value: String,
    pub reason: String,
}

impl Problem {
    fn new(column: Column, value: &str, reason: String) -> Problem {
        Problem {
            column: column.name(),
            value: value.to_string(),
            reason,
        }
    }
}

/// The trimmed values of one record, indexed by [`Column`]; absent columns are empty.
pub(crate) type Values<'a> = [&'a str; 9];

const ID_MAX: usize = 64;
const NAME_MAX: usize = 256;
const LABEL_MAX: usize = 32;

/// Columns holding identifiers or labels: where a spreadsheet may have mangled a long number.
pub(crate) const NUMBER_LIKE: [Column; 6] = [
    Column::IpayTradeNo,
    Column::PartnerId,
    Column::MerchantId,
    Column::StoreId,
    Column::MallGroupLabel,
    Column::MallLabel,
];

const MERCHANT_FIELDS: [Column; 5] = [
    Column::PartnerId,
    Column::MerchantId,
    Column::MerchantName,
    Column::StoreId,
    Column::StoreName,
];

/// A record that passed every rule: its save way and its values, those that do not apply to the
/// save way emptied (as they are sent). Borrows the record: a [`Row`] is only built on demand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Valid<'a> {
    pub save_way: SaveWay,
    values: Values<'a>,
}

impl<'a> Valid<'a> {
    pub(crate) fn get(&self, c: Column) -> &'a str {
        self.values[c as usize]
    }

    /// The owned row, exactly as `check` returns it.
    pub(crate) fn to_row(self) -> Row {
        let text = |c: Column| self.get(c).to_string();
        Row {
            save_way: self.save_way,
            ipay_trade_no: text(Column::IpayTradeNo),
            partner_id: text(Column::PartnerId),
            merchant_id: text(Column::MerchantId),
            merchant_name: text(Column::MerchantName),
            store_id: text(Column::StoreId),
            store_name: text(Column::StoreName),
            mall_group_label: text(Column::MallGroupLabel),
            mall_label: text(Column::MallLabel),
        }
    }

    /// The view of a row (its `save_way_type` value is not kept).
    #[cfg(test)]
    pub(crate) fn of_row(row: &'a Row) -> Valid<'a> {
        Valid {
            save_way: row.save_way,
            values: [
                "",
                &row.ipay_trade_no,
                &row.partner_id,
                &row.merchant_id,
                &row.merchant_name,
                &row.store_id,
                &row.store_name,
                &row.mall_group_label,
                &row.mall_label,
            ],
        }
    }

    /// The identity, as [`Row::key`] writes it.
    pub(crate) fn key(&self) -> String {
        let mut key = String::with_capacity(64);
        self.write_key(&mut key);
        key
    }

    /// Writes the identity to `out` ([`super::row::write_key`]).
    pub(crate) fn write_key(&self, out: &mut String) {
        super::row::write_key(
            out,
            self.save_way,
            self.get(Column::IpayTradeNo),
            self.get(Column::PartnerId),
            self.get(Column::MerchantId),
            self.get(Column::StoreId),
        );
    }
}

/// Applies every rule to one record's values.
#[cfg(test)]
pub(crate) fn check(v: &Values<'_>) -> Result<Row, Problem> {
    validate(v, true).map(|valid| valid.to_row())
}

/// Applies every rule to one record's values, without copying them. `may_hold_control`: false
/// when the caller found no byte of the record that [`may_hold_control`] flags.
pub(crate) fn validate<'a>(v: &Values<'a>, may_hold_control: bool) -> Result<Valid<'a>, Problem> {
    let get = |c: Column| v[c as usize];
    if may_hold_control {
        for c in Column::ALL {
            no_control(c, get(c))?;
        }
    }
    for c in NUMBER_LIKE {
        if looks_mangled(get(c)) {
            return Err(Problem::new(
                c,
                get(c),
                format!(
                    "{} looks like a long number a spreadsheet turned into scientific notation \
                     (got {:?}): format the column as Text in Excel, re-enter the full number \
                     and export again",
                    c.name(),
                    get(c)
                ),
            ));
        }
    }
    let save_way = save_way(v)?;
    let mut values: Values<'a> = [""; 9];
    let mut keep = |c: Column| values[c as usize] = get(c);
    match save_way {
        // An explicit IPAY_TRADE_NO row may still hold merchant fields (a sheet that mixes both
        // ways): they are not checked beyond step 2-3 and are sent empty, as the API expects.
        SaveWay::IpayTradeNo => {
            digits(Column::IpayTradeNo, get(Column::IpayTradeNo), ID_MAX)?;
            keep(Column::IpayTradeNo);
        }
        // Likewise a MERCHANT_PMS row is sent with an empty ipay_trade_no.
        SaveWay::MerchantPms => {
            digits(Column::PartnerId, get(Column::PartnerId), ID_MAX)?;
            required(Column::MerchantId, get(Column::MerchantId), ID_MAX)?;
            at_most(Column::MerchantName, get(Column::MerchantName), NAME_MAX)?;
            required(Column::StoreId, get(Column::StoreId), ID_MAX)?;
            at_most(Column::StoreName, get(Column::StoreName), NAME_MAX)?;
            for c in MERCHANT_FIELDS {
                keep(c);
            }
        }
    }
    digits(
        Column::MallGroupLabel,
        get(Column::MallGroupLabel),
        LABEL_MAX,
    )?;
    digits(Column::MallLabel, get(Column::MallLabel), LABEL_MAX)?;
    keep(Column::MallGroupLabel);
    keep(Column::MallLabel);
    Ok(Valid { save_way, values })
}

fn save_way(v: &Values<'_>) -> Result<SaveWay, Problem> {
    let given = v[Column::SaveWayType as usize];
    if !given.is_empty() {
        return SaveWay::parse(given).ok_or_else(|| {
            Problem::new(
                Column::SaveWayType,
                given,
                format!(
                    "save_way_type must be MERCHANT_PMS or IPAY_TRADE_NO (got {given:?}); \
                     or leave it blank to infer it from the filled columns"
                ),
            )
        });
    }
    let trade = !v[Column::IpayTradeNo as usize].is_empty();
    let merchant = MERCHANT_FIELDS.iter().any(|c| !v[*c as usize].is_empty());
    match (trade, merchant) {
        (true, false) => Ok(SaveWay::IpayTradeNo),
        (false, true) => Ok(SaveWay::MerchantPms),
        (true, true) => Err(Problem::new(
            Column::SaveWayType,
            given,
            "save_way_type is blank and both ipay_trade_no and merchant fields are filled: \
             set save_way_type to MERCHANT_PMS or IPAY_TRADE_NO"
                .to_string(),
        )),
        (false, false) => Err(Problem::new(
            Column::SaveWayType,
            given,
            "save_way_type is blank and neither ipay_trade_no nor the merchant fields \
             (partner_id, merchant_id, store_id) are filled: fill one of them"
                .to_string(),
        )),
    }
}

/// False when `bytes` (UTF-8) certainly hold no control character and no U+FFFD: no C0 control
/// or DEL byte, no 0xC2 (the lead byte of the C1 controls U+0080..U+009F) and no 0xEF (the lead
/// byte of U+FFFD). One branch-free pass, which the compiler vectorises.
pub(crate) fn may_hold_control(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |seen, &b| {
        seen | (b < 0x20) | (b == 0x7F) | (b == 0xC2) | (b == 0xEF)
    })
}

fn no_control(c: Column, value: &str) -> Result<(), Problem> {
    // Most cells hold none of the bytes a control character or U+FFFD starts with: a byte scan
    // decides them without decoding characters.
    if !may_hold_control(value.as_bytes()) {
        return Ok(());
    }
    if let Some(ch) = value.chars().find(|ch| ch.is_control()) {
        let what = if matches!(ch, '\n' | '\r') {
            "a line break"
        } else {
            "a control character"
        };
        return Err(Problem::new(
            c,
            value,
            format!(
                "{} contains {what} (U+{:04X}): remove it from the cell",
                c.name(),
                ch as u32
            ),
        ));
    }
    if value.contains('\u{FFFD}') {
        return Err(Problem::new(
            c,
            value,
            format!(
                "{} contains a character that could not be decoded (U+FFFD): check --encoding \
                 or re-export the file as CSV UTF-8",
                c.name()
            ),
        ));
    }
    Ok(())
}

/// Required, at most `max` characters.
#[inline]
fn required(c: Column, value: &str, max: usize) -> Result<(), Problem> {
    if value.is_empty() {
        return Err(Problem::new(
            c,
            value,
            format!("{} is required: fill it in", c.name()),
        ));
    }
    at_most(c, value, max)
}

/// Required, ASCII digits only, at most `max` characters.
fn digits(c: Column, value: &str, max: usize) -> Result<(), Problem> {
    if value.is_empty() {
        return required(c, value, max);
    }
    // Without a short-circuit, so that the compiler vectorises it.
    let non_digits = value
        .bytes()
        .fold(false, |seen, b| seen | !b.is_ascii_digit());
    if non_digits {
        return Err(Problem::new(
            c,
            value,
            format!("{} must be digits only (got {value:?})", c.name()),
        ));
    }
    at_most(c, value, max)
}

/// At most `max` characters (not bytes: Chinese names count one per character).
#[inline]
fn at_most(c: Column, value: &str, max: usize) -> Result<(), Problem> {
    // Bytes are never fewer than characters: count only when it may matter.
    if value.len() > max {
        return at_most_chars(c, value, max);
    }
    Ok(())
}

#[cold]
fn at_most_chars(c: Column, value: &str, max: usize) -> Result<(), Problem> {
    let n = value.chars().count();
    if n > max {
        return Err(Problem::new(
            c,
            value,
            format!(
                "{} must be at most {max} characters (got {n}): shorten it",
                c.name()
            ),
        ));
    }
    Ok(())
}

/// True for what spreadsheets show for a long number in a "General" cell: one digit, an
/// optional decimal point or comma with digits, then an exponent (`2.08802E+15`, `2,08802e15`,
/// `2E+15`). A store code such as `12E3` is not matched: spreadsheets write one leading digit.
fn looks_mangled(value: &str) -> bool {
    let b = value.as_bytes();
    let mut i = 0;
    if b.first().is_some_and(|c| matches!(c, b'-' | b'+')) {
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    i += 1;
    if b.get(i).is_some_and(|c| matches!(c, b'.' | b',')) {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if !b.get(i).is_some_and(|c| matches!(c, b'e' | b'E')) {
        return false;
    }
    i += 1;
    if b.get(i).is_some_and(|c| matches!(c, b'-' | b'+')) {
        i += 1;
    }
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i > start && i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `column=value` pairs; unnamed columns are empty.
    fn values<'a>(pairs: &[(&str, &'a str)]) -> Values<'a> {
        let mut v = [""; 9];
        for (name, value) in pairs {
            let c = Column::ALL.iter().find(|c| c.name() == *name).unwrap();
            v[*c as usize] = value;
        }
        v
    }

    fn merchant<'a>(extra: &[(&'static str, &'a str)]) -> Values<'a> {
        let mut pairs: Vec<(&str, &'a str)> = vec![
            ("partner_id", "2088001"),
            ("merchant_id", "M-1"),
            ("merchant_name", "大快活"),
            ("store_id", "S-1"),
            ("store_name", "大快活 旺角店"),
            ("mall_group_label", "100"),
            ("mall_label", "200"),
        ];
        for (k, v) in extra {
            pairs.retain(|(n, _)| n != k);
            pairs.push((k, v));
        }
        values(&pairs)
    }

    fn problem(v: &Values<'_>) -> Problem {
        check(v).unwrap_err()
    }

    #[test]
    fn merchant_row_is_accepted_with_empty_trade_no() {
        let row = check(&merchant(&[("ipay_trade_no", "")])).unwrap();
        assert_eq!(row.save_way, SaveWay::MerchantPms);
        assert_eq!(row.key(), "MERCHANT_PMS|2088001|M-1|S-1");
        assert_eq!(row.store_name, "大快活 旺角店");
        assert_eq!(row.ipay_trade_no, "");
        assert_eq!(
            (row.mall_group_label.as_str(), row.mall_label.as_str()),
            ("100", "200")
        );
    }

    #[test]
    fn save_way_inferred_from_filled_columns() {
        let v = values(&[
            ("ipay_trade_no", "123"),
            ("mall_group_label", "1"),
            ("mall_label", "2"),
        ]);
        assert_eq!(check(&v).unwrap().save_way, SaveWay::IpayTradeNo);
        assert_eq!(
            check(&merchant(&[])).unwrap().save_way,
            SaveWay::MerchantPms
        );

        let both = merchant(&[("ipay_trade_no", "123")]);
        let p = problem(&both);
        assert_eq!(p.column, "save_way_type");
        assert!(p.reason.contains("both"), "{}", p.reason);

        let neither = values(&[("mall_group_label", "1"), ("mall_label", "2")]);
        let p = problem(&neither);
        assert_eq!(p.column, "save_way_type");
        assert!(p.reason.contains("neither"), "{}", p.reason);
    }

    #[test]
    fn save_way_matched_case_insensitively_and_others_rejected() {
        let v = merchant(&[("save_way_type", "merchant_pms")]);
        assert_eq!(check(&v).unwrap().save_way, SaveWay::MerchantPms);
        let p = problem(&merchant(&[("save_way_type", "PMS")]));
        assert_eq!(p.column, "save_way_type");
        assert_eq!(p.value, "PMS");
        assert!(
            p.reason
                .starts_with("save_way_type must be MERCHANT_PMS or IPAY_TRADE_NO (got \"PMS\")")
        );
    }

    #[test]
    fn explicit_trade_no_row_drops_merchant_fields() {
        let v = merchant(&[
            ("save_way_type", "IPAY_TRADE_NO"),
            ("ipay_trade_no", "9988"),
        ]);
        let row = check(&v).unwrap();
        assert_eq!(row.key(), "IPAY_TRADE_NO|9988");
        assert_eq!(
            (
                row.partner_id.as_str(),
                row.merchant_id.as_str(),
                row.store_name.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(row.mall_label, "200");
    }

    #[test]
    fn explicit_merchant_row_drops_trade_no() {
        let v = merchant(&[("save_way_type", "MERCHANT_PMS"), ("ipay_trade_no", "9988")]);
        assert_eq!(check(&v).unwrap().ipay_trade_no, "");
    }

    #[test]
    fn mall_labels_required_digits_at_most_32() {
        let p = problem(&merchant(&[("mall_label", "12A")]));
        assert_eq!((p.column, p.value.as_str()), ("mall_label", "12A"));
        assert_eq!(p.reason, "mall_label must be digits only (got \"12A\")");
        let p = problem(&merchant(&[("mall_group_label", "")]));
        assert_eq!(p.reason, "mall_group_label is required: fill it in");
        let long = "1".repeat(33);
        let p = problem(&merchant(&[("mall_label", &long)]));
        assert_eq!(
            p.reason,
            "mall_label must be at most 32 characters (got 33): shorten it"
        );
        assert!(check(&merchant(&[("mall_label", &long[..32])])).is_ok());
    }

    #[test]
    fn trade_no_required_digits_at_most_64() {
        let ok = values(&[
            ("save_way_type", "IPAY_TRADE_NO"),
            ("ipay_trade_no", "1"),
            ("mall_group_label", "1"),
            ("mall_label", "2"),
        ]);
        assert!(check(&ok).is_ok());
        let mut v = ok;
        v[Column::IpayTradeNo as usize] = "";
        assert_eq!(problem(&v).reason, "ipay_trade_no is required: fill it in");
        v[Column::IpayTradeNo as usize] = "12-3";
        assert_eq!(problem(&v).column, "ipay_trade_no");
        let long = "9".repeat(65);
        v[Column::IpayTradeNo as usize] = &long;
        assert!(problem(&v).reason.contains("at most 64"));
    }

    #[test]
    fn merchant_fields_required_and_limited() {
        assert_eq!(
            problem(&merchant(&[("partner_id", "P1")])).column,
            "partner_id"
        );
        let p = problem(&merchant(&[("merchant_id", "")]));
        assert_eq!(
            (p.column, p.reason.as_str()),
            ("merchant_id", "merchant_id is required: fill it in")
        );
        assert_eq!(problem(&merchant(&[("store_id", "")])).column, "store_id");
        assert!(check(&merchant(&[("merchant_name", ""), ("store_name", "")])).is_ok());
        let id = "x".repeat(65);
        assert_eq!(problem(&merchant(&[("store_id", &id)])).column, "store_id");
    }

    #[test]
    fn names_count_characters_not_bytes() {
        let name = "旺".repeat(256); // 768 bytes
        assert!(check(&merchant(&[("store_name", &name)])).is_ok());
        let name = "旺".repeat(257);
        let p = problem(&merchant(&[("store_name", &name)]));
        assert_eq!(
            p.reason,
            "store_name must be at most 256 characters (got 257): shorten it"
        );
    }

    #[test]
    fn control_characters_rejected_in_any_value() {
        let p = problem(&merchant(&[("store_name", "旺角\n分店")]));
        assert_eq!(p.column, "store_name");
        assert!(p.reason.contains("line break (U+000A)"), "{}", p.reason);
        let p = problem(&merchant(&[("merchant_id", "M\u{7}1")]));
        assert!(
            p.reason.contains("control character (U+0007)"),
            "{}",
            p.reason
        );
        // Checked before save_way_type and in column order.
        let p = problem(&merchant(&[
            ("save_way_type", "bad"),
            ("mall_label", "1\t2"),
        ]));
        assert_eq!(p.column, "mall_label");
        let p = problem(&merchant(&[("store_name", "a\u{FFFD}b")]));
        assert!(p.reason.contains("--encoding"), "{}", p.reason);
    }

    #[test]
    fn mangled_numbers_get_the_text_hint_before_digits_only() {
        for s in [
            "2.08802E+15",
            "2.08802e15",
            "2,08802E+15",
            "2E+15",
            "1.5e-3",
        ] {
            assert!(looks_mangled(s), "{s}");
            let p = problem(&merchant(&[("partner_id", s)]));
            assert_eq!(p.column, "partner_id");
            assert!(
                p.reason.contains("format the column as Text"),
                "{}",
                p.reason
            );
        }
        for s in ["12E3", "2088", "E15", "2.E5", "2.5E", "1.5e3x", "ABCE1"] {
            assert!(!looks_mangled(s), "{s}");
        }
        let p = problem(&merchant(&[("mall_label", "1.2E+31")]));
        assert_eq!(p.column, "mall_label");
        assert!(p.reason.contains("Text"));
    }

    #[test]
    fn only_first_problem_in_column_order() {
        let p = problem(&merchant(&[
            ("partner_id", "x"),
            ("store_id", ""),
            ("mall_label", "y"),
        ]));
        assert_eq!(p.column, "partner_id");
    }
}
