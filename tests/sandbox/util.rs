//! Helpers shared by the integration tests: throw-away keys, a sandbox on a free loopback port,
//! request bodies, and a client that signs exactly like the real one (`api::signing`).

#![allow(dead_code)]

use std::time::Duration;

use pms_onboard::api::keys::{PrivateKey, PublicKey, keygen};
use pms_onboard::api::signing::{self, API_PATH, VerifyError};
use pms_onboard::api::types::{
    BusinessDistrictSubject, CircleStore, MerchantPms, SaveRequest, SaveResponse,
};
use pms_onboard::sandbox::{Sandbox, SandboxConfig};

pub const CLIENT_ID: &str = "2102000000000044";

/// A key directory as `keygen` writes it, with the two keys a client needs loaded.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub client_private: PrivateKey,
    pub alipay_public: PublicKey,
}

pub fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path()).unwrap();
    let client_private = PrivateKey::from_file(&dir.path().join("client_private.pem")).unwrap();
    let alipay_public = PublicKey::from_file(&dir.path().join("alipay_public.pem")).unwrap();
    Keys {
        dir,
        client_private,
        alipay_public,
    }
}

/// A sandbox on 127.0.0.1:0 reading `keys`, after `tweak` has adjusted its configuration.
pub async fn start(keys: &Keys, tweak: impl FnOnce(&mut SandboxConfig)) -> Sandbox {
    let mut config = SandboxConfig::from_dir(keys.dir.path(), CLIENT_ID).unwrap();
    tweak(&mut config);
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn merchant(partner: &str, merchant: &str, store: &str, group: &str, mall: &str) -> Vec<u8> {
    SaveRequest {
        save_way_type: "MERCHANT_PMS".into(),
        ipay_trade_no: String::new(),
        circle_store: CircleStore {
            merchant_pms: MerchantPms {
                partner_id: partner.into(),
                merchant_id: merchant.into(),
                merchant_name: "海港城餐飲集團".into(),
                store_id: store.into(),
                store_name: "尖沙咀分店".into(),
            },
            business_district_subject: mall_subject(group, mall),
        },
    }
    .to_body()
}

pub fn ipay(trade: &str, group: &str, mall: &str) -> Vec<u8> {
    SaveRequest {
        save_way_type: "IPAY_TRADE_NO".into(),
        ipay_trade_no: trade.into(),
        circle_store: CircleStore {
            merchant_pms: MerchantPms::default(),
            business_district_subject: mall_subject(group, mall),
        },
    }
    .to_body()
}

fn mall_subject(group: &str, mall: &str) -> BusinessDistrictSubject {
    BusinessDistrictSubject {
        mall_group_label: group.into(),
        mall_label: mall.into(),
    }
}

/// A fresh MERCHANT_PMS body for store number `n`, valid in a sandbox without malls.
pub fn store(n: usize) -> Vec<u8> {
    merchant("2088000000000001", "M1", &format!("S{n}"), "1", "11")
}

/// The headers a real client sends, signed over `body` with the given key version and algorithm.
pub fn signed_headers(keys: &Keys, body: &[u8], key_version: &str, algorithm: &str) -> Headers {
    signed_headers_full(keys, body, key_version, algorithm, signing::now_iso8601())
}

/// The same, with `request-time` set to `time` (a client whose clock is elsewhere).
pub fn signed_headers_at(keys: &Keys, body: &[u8], time: String) -> Headers {
    signed_headers_full(keys, body, "1", "RSA256", time)
}

fn signed_headers_full(
    keys: &Keys,
    body: &[u8],
    key_version: &str,
    algorithm: &str,
    time: String,
) -> Headers {
    let content = signing::content(API_PATH, CLIENT_ID, &time, body);
    let signature = signing::sign_header(&keys.client_private, algorithm, key_version, &content);
    vec![
        ("client-id".into(), CLIENT_ID.into()),
        ("request-time".into(), time),
        ("signature".into(), signature),
        (
            "content-type".into(),
            "application/json; charset=UTF-8".into(),
        ),
    ]
}

pub type Headers = Vec<(String, String)>;

/// A reply as the client received it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> SaveResponse {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json().result.result_code
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Verifies the response signature exactly as the client must.
    pub fn verify(&self, keys: &Keys) -> Result<(), VerifyError> {
        self.verify_at(keys, API_PATH)
    }

    /// Verifies the response signature as signed over another request path.
    pub fn verify_at(&self, keys: &Keys, uri: &str) -> Result<(), VerifyError> {
        signing::verify(
            &keys.alipay_public,
            uri,
            CLIENT_ID,
            self.header("response-time"),
            &self.body,
            self.header("signature"),
        )
    }

    /// The `Tracer-Id` header, checked to be 32 lower-case hex digits.
    pub fn tracer_id(&self) -> String {
        let id = self
            .header("tracer-id")
            .unwrap_or_else(|| panic!("no Tracer-Id: {self:?}"));
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        id.to_owned()
    }
}

pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// POSTs `body` with exactly `headers`.
pub async fn post_raw(
    client: &reqwest::Client,
    sandbox: &Sandbox,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    send(client, &sandbox.endpoint(), headers, body).await
}

/// POSTs `body` with exactly `headers` to the API path under `endpoint`.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    let url = format!("{endpoint}{API_PATH}");
    request(client, reqwest::Method::POST, &url, headers, body).await
}

/// Any method to any URL, with exactly `headers`.
pub async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// POSTs `body` signed like a correctly configured client.
pub async fn post(
    client: &reqwest::Client,
    sandbox: &Sandbox,
    keys: &Keys,
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    let headers = signed_headers(keys, &body, "1", "RSA256");
    post_raw(client, sandbox, &headers, body).await
}

pub async fn get_json(sandbox: &Sandbox, path: &str) -> serde_json::Value {
    let response = client()
        .get(format!("{}{path}", sandbox.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}
