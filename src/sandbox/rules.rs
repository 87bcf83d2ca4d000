//! The gateway's answers and its business rules: which request body gets which result code, and
//! the register of circled stores with the `pmsLabel` each was given.

use std::collections::{HashMap, HashSet};

use crate::api::types::{ResultInfo, SaveRequest, SaveResponse};
use crate::input::{Row, SaveWay};

use super::config::is_digits;

/// The result codes the sandbox answers with: every code documented for this API and for the
/// AlipayHK open-API gateway in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    Success,
    StoreIsCircled,
    ParamIllegal,
    BusinessDistrictNotExist,
    IpayTradeNoNotExist,
    UnknownCircleStoreWayType,
    CircleStoreFailure,
    ProcessFail,
    UnknownException,
    RequestTrafficExceedLimit,
    InvalidClient,
    InvalidSignature,
    KeyNotFound,
    AccessDenied,
    InvalidApi,
    MethodNotSupported,
    MediaTypeNotAcceptable,
}

impl Code {
    /// Every code, in the order `--fault-code` draws them.
    pub const ALL: [Code; 17] = [
        Code::Success,
        Code::StoreIsCircled,
        Code::ParamIllegal,
        Code::BusinessDistrictNotExist,
        Code::IpayTradeNoNotExist,
        Code::UnknownCircleStoreWayType,
        Code::CircleStoreFailure,
        Code::ProcessFail,
        Code::UnknownException,
        Code::RequestTrafficExceedLimit,
        Code::InvalidClient,
        Code::InvalidSignature,
        Code::KeyNotFound,
        Code::AccessDenied,
        Code::InvalidApi,
        Code::MethodNotSupported,
        Code::MediaTypeNotAcceptable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "SUCCESS",
            Code::StoreIsCircled => "STORE_IS_CIRCLED",
            Code::ParamIllegal => "PARAM_ILLEGAL",
            Code::BusinessDistrictNotExist => "BUSINESS_DISTRICT_NOT_EXIST",
            Code::IpayTradeNoNotExist => "IPAY_TRADE_NO_NOT_EXIST",
            Code::UnknownCircleStoreWayType => "UNKNOWN_CIRCLE_STORE_WAY_TYPE",
            Code::CircleStoreFailure => "CIRCLE_STORE_FAILURE",
            Code::ProcessFail => "PROCESS_FAIL",
            Code::UnknownException => "UNKNOWN_EXCEPTION",
            Code::RequestTrafficExceedLimit => "REQUEST_TRAFFIC_EXCEED_LIMIT",
            Code::InvalidClient => "INVALID_CLIENT",
            Code::InvalidSignature => "INVALID_SIGNATURE",
            Code::KeyNotFound => "KEY_NOT_FOUND",
            Code::AccessDenied => "ACCESS_DENIED",
            Code::InvalidApi => "INVALID_API",
            Code::MethodNotSupported => "METHOD_NOT_SUPPORTED",
            Code::MediaTypeNotAcceptable => "MEDIA_TYPE_NOT_ACCEPTABLE",
        }
    }

    /// The code spelled `s` (exactly, as the gateway spells it).
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// `resultStatus`: `S` success, `U` unknown, `F` failed.
    pub fn status(self) -> &'static str {
        match self {
            Code::Success => "S",
            Code::UnknownException | Code::RequestTrafficExceedLimit => "U",
            _ => "F",
        }
    }

    /// The gateway's documented message for the code, for answers the sandbox does not word
    /// itself (injected codes, the rate limit, routing).
    pub fn message(self) -> &'static str {
        match self {
            Code::Success => "success.",
            Code::StoreIsCircled => "The store is already circled.",
            Code::ParamIllegal => "Illegal parameters.",
            Code::BusinessDistrictNotExist => {
                "The business district (mall group and mall) does not exist."
            }
            Code::IpayTradeNoNotExist => "The iPay trade number does not exist.",
            Code::UnknownCircleStoreWayType => "saveWayType must be MERCHANT_PMS or IPAY_TRADE_NO.",
            Code::CircleStoreFailure => "Circling the store failed.",
            Code::ProcessFail => "A general business failure occurred. Do not retry.",
            Code::UnknownException => {
                "An API calling is failed, which is caused by unknown reasons."
            }
            Code::RequestTrafficExceedLimit => "The request traffic exceeds the limit.",
            Code::InvalidClient => "The client is invalid.",
            Code::InvalidSignature => "The signature is invalid.",
            Code::KeyNotFound => "The key is not found.",
            Code::AccessDenied => "Access is denied.",
            Code::InvalidApi => "The called API is invalid or not active.",
            Code::MethodNotSupported => "The server does not implement the requested HTTP method.",
            Code::MediaTypeNotAcceptable => {
                "The server does not implement the media type that is acceptable to the client."
            }
        }
    }
}

/// One JSON answer before it is serialised and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub message: String,
    pub pms_label: Option<String>,
}

impl Reply {
    pub fn fail(code: Code, message: impl Into<String>) -> Self {
        Reply {
            code,
            message: message.into(),
            pms_label: None,
        }
    }

    pub fn unknown() -> Self {
        Reply::fail(
            Code::UnknownException,
            "An unknown exception occurred (sandbox fault).",
        )
    }

    /// The code with the gateway's own message.
    pub fn documented(code: Code) -> Self {
        Reply::fail(code, code.message())
    }

    fn success(pms_label: String) -> Self {
        Reply {
            code: Code::Success,
            message: "success.".to_owned(),
            pms_label: Some(pms_label),
        }
    }

    pub fn to_response(&self) -> SaveResponse {
        SaveResponse {
            result: ResultInfo {
                result_code: self.code.as_str().to_owned(),
                result_status: self.code.status().to_owned(),
                result_message: self.message.clone(),
            },
            pms_label: self.pms_label.clone(),
        }
    }
}

// The limits of the input rules (SPEC section 1), which mirror what the gateway accepts.
const MAX_LABEL: usize = 32;
const MAX_ID: usize = 64;
const MAX_NAME: usize = 256;

/// Applies every rule that does not depend on what was circled before; on success returns the
/// store's identity (`MERCHANT_PMS|partner|merchant|store` or `IPAY_TRADE_NO|trade`, the
/// ledger's key).
pub fn check(
    body: &[u8],
    malls: Option<&HashSet<(String, String)>>,
    trades: Option<&HashSet<String>>,
) -> Result<String, Reply> {
    let illegal = |what: String| Reply::fail(Code::ParamIllegal, what);
    let request: SaveRequest = serde_json::from_slice(body)
        .map_err(|_| illegal("The request body is not the documented JSON shape.".into()))?;
    let Some(save_way) = [SaveWay::MerchantPms, SaveWay::IpayTradeNo]
        .into_iter()
        .find(|w| w.as_str() == request.save_way_type)
    else {
        return Err(Reply::documented(Code::UnknownCircleStoreWayType));
    };
    let pms = &request.circle_store.merchant_pms;
    let mall = &request.circle_store.business_district_subject;
    let field_rules: [(&str, &str, usize, bool); 2] = [
        ("mallGroupLabel", &mall.mall_group_label, MAX_LABEL, true),
        ("mallLabel", &mall.mall_label, MAX_LABEL, true),
    ];
    let way_rules: Vec<(&str, &str, usize, bool)> = match save_way {
        SaveWay::MerchantPms => vec![
            ("partnerId", &pms.partner_id, MAX_ID, true),
            ("merchantId", &pms.merchant_id, MAX_ID, false),
            ("storeId", &pms.store_id, MAX_ID, false),
        ],
        SaveWay::IpayTradeNo => vec![("ipayTradeNo", &request.ipay_trade_no, MAX_ID, true)],
    };
    for (name, value, max, digits) in field_rules.into_iter().chain(way_rules) {
        if value.trim().is_empty() {
            return Err(illegal(format!("{name} is required.")));
        }
        if digits && !is_digits(value) {
            return Err(illegal(format!("{name} must be digits only.")));
        }
        if value.chars().count() > max {
            return Err(illegal(format!("{name} is longer than {max} characters.")));
        }
    }
    for (name, value) in [
        ("merchantName", &pms.merchant_name),
        ("storeName", &pms.store_name),
    ] {
        if value.chars().count() > MAX_NAME {
            return Err(illegal(format!(
                "{name} is longer than {MAX_NAME} characters."
            )));
        }
    }
    if let Some(malls) = malls {
        let pair = (mall.mall_group_label.clone(), mall.mall_label.clone());
        if !malls.contains(&pair) {
            return Err(Reply::documented(Code::BusinessDistrictNotExist));
        }
    }
    if let (SaveWay::IpayTradeNo, Some(trades)) = (save_way, trades)
        && !trades.contains(&request.ipay_trade_no)
    {
        return Err(Reply::documented(Code::IpayTradeNoNotExist));
    }
    let row = Row {
        save_way,
        ipay_trade_no: request.ipay_trade_no.clone(),
        partner_id: pms.partner_id.clone(),
        merchant_id: pms.merchant_id.clone(),
        merchant_name: pms.merchant_name.clone(),
        store_id: pms.store_id.clone(),
        store_name: pms.store_name.clone(),
        mall_group_label: mall.mall_group_label.clone(),
        mall_label: mall.mall_label.clone(),
    };
    Ok(row.key())
}

#[derive(Debug)]
struct Circled {
    pms_label: String,
    /// How many `SUCCESS` answers went out for this store (more than one is a sandbox bug).
    successes_sent: u32,
}

/// The stores circled so far.
#[derive(Debug, Default)]
pub struct Register {
    stores: HashMap<String, Circled>,
    labels_issued: u64,
}

impl Register {
    /// Circles the store and answers `SUCCESS` with a fresh label, or `STORE_IS_CIRCLED`.
    pub fn circle(&mut self, identity: String) -> Reply {
        if self.stores.contains_key(&identity) {
            return Reply::documented(Code::StoreIsCircled);
        }
        self.labels_issued += 1;
        let pms_label = new_label(self.labels_issued);
        self.stores.insert(
            identity,
            Circled {
                pms_label: pms_label.clone(),
                successes_sent: 0,
            },
        );
        Reply::success(pms_label)
    }

    /// Records that a `SUCCESS` answer for `identity` went out; true when it was not the first.
    pub fn success_sent(&mut self, identity: &str) -> bool {
        match self.stores.get_mut(identity) {
            Some(store) => {
                store.successes_sent += 1;
                store.successes_sent == 2
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.stores.len()
    }

    /// Identity → the `pmsLabel` the store was given.
    pub fn labels(&self) -> HashMap<String, String> {
        self.stores
            .iter()
            .map(|(k, v)| (k.clone(), v.pms_label.clone()))
            .collect()
    }
}

/// 31 digits: `yyyyMMddHHmmss` (Hong Kong time) and a 17-digit counter, unique in one sandbox
/// and, with the timestamp, across restarts more than a second apart.
fn new_label(counter: u64) -> String {
    let hk = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
    let stamp = chrono::Utc::now().with_timezone(&hk).format("%Y%m%d%H%M%S");
    format!("{stamp}{:017}", counter % 100_000_000_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(way: &str, trade: &str, partner: &str, group: &str, mall: &str) -> Vec<u8> {
        serde_json::json!({
            "saveWayType": way, "ipayTradeNo": trade,
            "circleStore": {
                "merchantPms": {"partnerId": partner, "merchantId": "M1", "merchantName": "",
                                "storeId": "S1", "storeName": ""},
                "businessDistrictSubject": {"mallGroupLabel": group, "mallLabel": mall}}})
        .to_string()
        .into_bytes()
    }

    fn code(r: Result<String, Reply>) -> &'static str {
        match r {
            Ok(_) => "OK",
            Err(a) => a.code.as_str(),
        }
    }

    #[test]
    fn each_rule_gives_its_code() {
        let ok = check(&body("MERCHANT_PMS", "", "2088", "1", "11"), None, None);
        assert_eq!(ok.unwrap(), "MERCHANT_PMS|2088|M1|S1");
        let ipay = check(&body("IPAY_TRADE_NO", "42", "", "1", "11"), None, None);
        assert_eq!(ipay.unwrap(), "IPAY_TRADE_NO|42");
        assert_eq!(code(check(b"{", None, None)), "PARAM_ILLEGAL");
        assert_eq!(code(check(b"\xff\xfe", None, None)), "PARAM_ILLEGAL");
        assert_eq!(
            code(check(&body("merchant_pms", "", "1", "1", "1"), None, None)),
            "UNKNOWN_CIRCLE_STORE_WAY_TYPE"
        );
        for bad in [
            body("MERCHANT_PMS", "", "x1", "1", "11"),
            body("MERCHANT_PMS", "", "1", "", "11"),
            body("MERCHANT_PMS", "", "1", "1", "1a"),
            body("IPAY_TRADE_NO", "", "", "1", "11"),
            body("MERCHANT_PMS", "", "1", &"1".repeat(33), "11"),
        ] {
            assert_eq!(code(check(&bad, None, None)), "PARAM_ILLEGAL");
        }
        let malls = HashSet::from([("1".to_owned(), "11".to_owned())]);
        let b = body("MERCHANT_PMS", "", "1", "1", "12");
        assert_eq!(
            code(check(&b, Some(&malls), None)),
            "BUSINESS_DISTRICT_NOT_EXIST"
        );
        let trades = HashSet::from(["42".to_owned()]);
        let b = body("IPAY_TRADE_NO", "43", "", "1", "11");
        assert_eq!(
            code(check(&b, Some(&malls), Some(&trades))),
            "IPAY_TRADE_NO_NOT_EXIST"
        );
    }

    #[test]
    fn a_store_is_circled_once_with_a_31_digit_label() {
        let mut reg = Register::default();
        let a = reg.circle("IPAY_TRADE_NO|1".into());
        assert_eq!(a.code, Code::Success);
        let label = a.pms_label.unwrap();
        assert_eq!(label.len(), 31);
        assert!(is_digits(&label));
        assert_eq!(
            reg.circle("IPAY_TRADE_NO|1".into()).code,
            Code::StoreIsCircled
        );
        let b = reg.circle("IPAY_TRADE_NO|2".into()).pms_label.unwrap();
        assert_ne!(label, b);
        assert!(!reg.success_sent("IPAY_TRADE_NO|1"));
        assert!(reg.success_sent("IPAY_TRADE_NO|1"));
        assert!(
            !reg.success_sent("IPAY_TRADE_NO|1"),
            "counted once per store"
        );
    }
}
