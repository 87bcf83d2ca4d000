//! `--probe`: one signed call that changes nothing, `MERCHANT_PMS` with every field empty, sent
//! by the same client a run uses. The gateway checks the signature first, so its refusal of the
//! body proves the signature was accepted; the answer's own signature proves
//! `alipay_public_key`. What the answer means is `api::outcome`'s classification.

use std::sync::Arc;

use super::Check;
use crate::api::client::Client;
use crate::api::keys::{PrivateKey, PublicKey};
use crate::api::outcome::{self, Attempt, Outcome};
use crate::config::RunSettings;
use crate::input::{Row, SaveWay};

/// The probe's checks: the request's signature, then the answer's.
pub async fn checks(s: &RunSettings, private: PrivateKey, public: PublicKey) -> Vec<Check> {
    let client = match Client::new(s.client_settings(), Arc::new(private), Arc::new(public)) {
        Ok(c) => c,
        Err(e) => return vec![Check::fail("signature", format!("{e:#}"))],
    };
    let empty = Row {
        save_way: SaveWay::MerchantPms,
        ipay_trade_no: String::new(),
        partner_id: String::new(),
        merchant_id: String::new(),
        merchant_name: String::new(),
        store_id: String::new(),
        store_name: String::new(),
        mall_group_label: String::new(),
        mall_label: String::new(),
    };
    let a = client.send(&empty).await;
    let mut checks = vec![signature(s, &a)];
    checks.extend(answer_signature(s, &a));
    checks
}

/// What the answer says of the request's signature, believed or not (a wrong key of
/// AlipayHK's does not make a refusal of the body mean anything else).
fn signature(s: &RunSettings, a: &Attempt) -> Check {
    let tracer = a.tracer_id.as_deref().map_or_else(
        || " (the answer has no Tracer-Id)".to_owned(),
        |t| format!(" (Tracer-Id {t})"),
    );
    let said = format!(
        "{} ({}){tracer}",
        a.result_code.as_deref().unwrap_or("?"),
        a.result_message.as_deref().unwrap_or("")
    );
    let settings = format!(
        "client_id {}, key_version {}, signature_algorithm {}, private_key {}",
        s.client_id,
        s.key_version,
        s.signature_algorithm,
        s.private_key.display()
    );
    let claimed = match (&a.outcome, &a.result_code) {
        (Outcome::Unverified { .. }, Some(code)) => outcome::classify_result(
            code,
            a.result_status.as_deref().unwrap_or(""),
            a.result_message.as_deref().unwrap_or(""),
            a.pms_label.as_deref(),
        ),
        (other, _) => other.clone(),
    };
    // `verified` is `None` when no JSON answer came back: the class then comes from the HTTP
    // status alone.
    let business_answer = a.verified.is_some();
    match &claimed {
        Outcome::Fatal { code, .. } => Check::fail_with(
            "signature",
            said,
            format!("{} (now: {settings})", outcome::what_to_check(code)),
        ),
        Outcome::Success { .. } | Outcome::AlreadyCircled => Check::fail_with(
            "signature",
            format!(
                "{said}: the gateway accepted a body with every field empty, which AlipayHK's \
                 gateway refuses"
            ),
            "endpoint is not AlipayHK's; ask AlipayHK support before a real run",
        ),
        Outcome::Throttled { .. }
        | Outcome::Transient { .. }
        | Outcome::Unverified { .. }
        | Outcome::NotThisRequest { .. } => Check::warn(
            "signature",
            a.error.clone().unwrap_or(said),
            "the gateway is busy or failing; run pms-onboard doctor --probe again",
        ),
        Outcome::Permanent { .. } if !business_answer => Check::fail_with(
            "signature",
            format!(
                "the gateway answered HTTP {}, not the documented JSON{tracer}",
                a.http_status.unwrap_or(0)
            ),
            "endpoint is not AlipayHK's gateway, or a proxy answers for it",
        ),
        Outcome::Permanent { .. } => Check::ok(
            "signature",
            format!(
                "accepted: the gateway checked it, then refused the empty body as it must: {said}"
            ),
        ),
    }
}

/// Whether the answer is AlipayHK's; nothing to say when no JSON answer came back.
fn answer_signature(s: &RunSettings, a: &Attempt) -> Option<Check> {
    let key = s.alipay_public_key.display();
    match a.verified? {
        true => Some(Check::ok(
            "answer signature",
            format!("the answer verifies with alipay_public_key ({key})"),
        )),
        false => Some(Check::fail_with(
            "answer signature",
            format!(
                "the answer does not verify with alipay_public_key ({key}): {}",
                a.error.as_deref().unwrap_or("its signature does not match")
            ),
            "download AlipayHK's public key again from the portal (it may have been rotated), \
             or find the proxy that rewrites or strips answers",
        )),
    }
}
