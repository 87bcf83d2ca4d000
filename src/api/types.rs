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

/// `result` in every response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResultInfo {
    pub result_code: String,
    pub result_status: String,
    pub result_message: String,
}

/// The response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SaveResponse {
    pub result: ResultInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pms_label: Option<String>,
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
}
