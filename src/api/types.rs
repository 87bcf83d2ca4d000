//! The JSON shapes of the Collect-PMS call, exactly as the gateway documents them.

use serde::{Deserialize, Serialize};

use crate::input::Row;

/// The request body. Field order and names are the documented ones; every field is present and
/// unused ones are empty strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveRequest {
    pub save_way_type: String,
    #[serde(default)]
    pub ipay_trade_no: String,
    pub circle_store: CircleStore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircleStore {
    #[serde(default)]
    pub merchant_pms: MerchantPms,
    #[serde(default)]
    pub business_district_subject: BusinessDistrictSubject,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MerchantPms {
    pub partner_id: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub store_id: String,
    pub store_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BusinessDistrictSubject {
    pub mall_group_label: String,
    pub mall_label: String,
}

impl SaveRequest {
    pub fn from_row(row: &Row) -> Self {
        SaveRequest {
            save_way_type: row.save_way.as_str().to_owned(),
            ipay_trade_no: row.ipay_trade_no.clone(),
            circle_store: CircleStore {
                merchant_pms: MerchantPms {
                    partner_id: row.partner_id.clone(),
                    merchant_id: row.merchant_id.clone(),
                    merchant_name: row.merchant_name.clone(),
                    store_id: row.store_id.clone(),
                    store_name: row.store_name.clone(),
                },
                business_district_subject: BusinessDistrictSubject {
                    mall_group_label: row.mall_group_label.clone(),
                    mall_label: row.mall_label.clone(),
                },
            },
        }
    }

    /// The body bytes: serialised once, and these exact bytes are both signed and sent.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of strings always serialises")
    }
}

/// `result` in every response. Read leniently: a field that is `null`, missing or a number is
/// still read (as empty, or as the number's text), since an answer that arrived must be kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResultInfo {
    #[serde(deserialize_with = "lenient_text")]
    pub result_code: String,
    #[serde(deserialize_with = "lenient_text")]
    pub result_status: String,
    #[serde(deserialize_with = "lenient_text")]
    pub result_message: String,
}

/// The response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SaveResponse {
    pub result: ResultInfo,
    /// A 31-digit label sent as a JSON number keeps every digit: it is read as written, not as a
    /// float.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_label"
    )]
    pub pms_label: Option<String>,
}

/// The text of a JSON scalar exactly as written: a string's content, a number's digits, `true`;
/// `None` for `null`, an object or an array.
fn scalar_text(raw: &serde_json::value::RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'{' | b'[') | None => None,
        _ if text == "null" => None,
        _ => Some(text.to_owned()),
    }
}

fn lenient_label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<Box<serde_json::value::RawValue>>::deserialize(d)?;
    Ok(raw.as_deref().and_then(scalar_text))
}

fn lenient_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(lenient_label(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SaveWay;

    #[test]
    fn the_body_is_byte_for_byte_the_documented_shape() {
        let row = Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088021966641234".into(),
            merchant_id: "SECM0001".into(),
            merchant_name: "海港城餐飲集團".into(),
            store_id: "STORE0001".into(),
            store_name: "尖沙咀分店 Café & Bar".into(),
            mall_group_label: "20230316".into(),
            mall_label: "20230316001".into(),
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/vectors/request_body.json");
        let expected = std::fs::read(path).unwrap();
        let expected = expected.strip_suffix(b"\n").unwrap_or(&expected);
        assert_eq!(SaveRequest::from_row(&row).to_body(), expected);
    }

    #[test]
    fn an_answer_with_a_numeric_label_or_null_message_still_parses() {
        let body = br#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":null},
            "pmsLabel":2026112619320500000000000000001}"#;
        let r: SaveResponse = serde_json::from_slice(body).unwrap();
        assert_eq!(r.result.result_code, "SUCCESS");
        assert_eq!(r.result.result_message, "");
        assert_eq!(
            r.pms_label.as_deref(),
            Some("2026112619320500000000000000001")
        );
        let r: SaveResponse =
            serde_json::from_slice(br#"{"result":{"resultCode":7},"pmsLabel":null}"#).unwrap();
        assert_eq!((r.result.result_code.as_str(), r.pms_label), ("7", None));
        let r: SaveResponse =
            serde_json::from_slice(br#"{"result":{"resultCode":"X"},"pmsLabel":"12"}"#).unwrap();
        assert_eq!(r.pms_label.as_deref(), Some("12"));
    }
}
