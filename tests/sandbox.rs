//! The sandbox over real HTTP on loopback, with real keys and real signatures: every result code
//! from the input that should produce it, every fault at its probability, the rate limit, and the
//! stats and labels endpoints.

// The scheduling guard (`together`) is held across awaits on purpose: it orders tests, it
// guards no data.
#![allow(clippy::await_holding_lock)]

mod util;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use pms_onboard::api::signing::API_PATH;
use pms_onboard::sandbox::{
    Code, Faults, Outage, OutageAnswer, RateLimitAnswer, Sandbox, Stats, load_malls, load_trades,
};
use util::*;

fn assert_status_f(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = reply.json().result;
    assert_eq!(
        (result.result_code.as_str(), result.result_status.as_str()),
        (code, "F"),
        "{result:?}"
    );
    assert!(!result.result_message.is_empty());
    assert!(reply.json().pms_label.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn success_is_labelled_and_signed_and_a_second_save_is_store_is_circled() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |_| {}).await;
    let client = client();
    let body = merchant("2088021966641234", "SECM0001", "STORE0001", "20230316", "1");

    let first = post(&client, &sandbox, &keys, body.clone()).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(first.header("client-id"), Some(CLIENT_ID));
    let response = first.json();
    assert_eq!(response.result.result_code, "SUCCESS");
    assert_eq!(response.result.result_status, "S");
    assert_eq!(response.result.result_message, "success.");
    let label = response.pms_label.unwrap();
    assert_eq!(label.len(), 31, "{label}");
    assert!(label.bytes().all(|b| b.is_ascii_digit()), "{label}");
    // The response verifies with alipay_public.pem, and not once a byte of the body changes.
    assert_eq!(first.verify(&keys), Ok(()));
    let mut tampered = first.body.clone();
    tampered.push(b' ');
    let time = first.header("response-time").unwrap();
    assert!(
        pms_onboard::api::signing::verify(
            &keys.alipay_public,
            pms_onboard::api::signing::API_PATH,
            CLIENT_ID,
            Some(time),
            &tampered,
            first.header("signature"),
        )
        .is_err()
    );

    let second = post(&client, &sandbox, &keys, body).await.unwrap();
    assert_status_f(&second, "STORE_IS_CIRCLED");
    assert_eq!(second.verify(&keys), Ok(()), "failures are signed too");

    let identity = "MERCHANT_PMS|2088021966641234|SECM0001|STORE0001";
    assert_eq!(sandbox.labels().get(identity), Some(&label));
    let labels = get_json(&sandbox, "/sandbox/labels").await;
    assert_eq!(labels[identity], label.as_str());

    let stats = sandbox.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.stores_circled, 1);
    assert_eq!(stats.double_success, 0);
    assert_eq!(stats.by_result_code["SUCCESS"], 1);
    assert_eq!(stats.by_result_code["STORE_IS_CIRCLED"], 1);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malls_and_trades_from_files_decide_what_exists() {
    let _turn = crate::util::together();
    let keys = keys();
    let malls_csv = keys.dir.path().join("malls.csv");
    std::fs::write(
        &malls_csv,
        "mall_group_label,mall_label\n20230316,1\n20230316,2\n",
    )
    .unwrap();
    let trades_txt = keys.dir.path().join("trades.txt");
    std::fs::write(&trades_txt, "2088000000000001\n2088000000000002\n").unwrap();
    let sandbox = start(&keys, |c| {
        c.malls = Some(load_malls(&malls_csv).unwrap());
        c.trades = Some(load_trades(&trades_txt).unwrap());
    })
    .await;
    let client = client();

    let known = post(
        &client,
        &sandbox,
        &keys,
        ipay("2088000000000001", "20230316", "2"),
    )
    .await
    .unwrap();
    assert_eq!(known.code(), "SUCCESS");
    let unknown_trade = post(
        &client,
        &sandbox,
        &keys,
        ipay("2088000000000009", "20230316", "2"),
    )
    .await
    .unwrap();
    assert_status_f(&unknown_trade, "IPAY_TRADE_NO_NOT_EXIST");
    let unknown_mall = post(
        &client,
        &sandbox,
        &keys,
        merchant("2088", "M", "S", "20230316", "3"),
    )
    .await
    .unwrap();
    assert_status_f(&unknown_mall, "BUSINESS_DISTRICT_NOT_EXIST");
    let again = post(
        &client,
        &sandbox,
        &keys,
        ipay("2088000000000001", "20230316", "1"),
    )
    .await
    .unwrap();
    assert_status_f(&again, "STORE_IS_CIRCLED");
    assert_eq!(
        sandbox.labels().keys().collect::<Vec<_>>(),
        ["IPAY_TRADE_NO|2088000000000001"]
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_param_illegal_or_unknown_way_type() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |_| {}).await;
    let client = client();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{\"saveWayType\":".to_vec(), "PARAM_ILLEGAL"),
        ("not UTF-8", b"\xff\xfe\xfd".to_vec(), "PARAM_ILLEGAL"),
        (
            "JSON of another shape",
            b"{\"hello\":1}".to_vec(),
            "PARAM_ILLEGAL",
        ),
        (
            "a non-numeric mall label",
            merchant("2088", "M", "S", "1", "11a"),
            "PARAM_ILLEGAL",
        ),
        (
            "an empty mall group label",
            merchant("2088", "M", "S", "", "11"),
            "PARAM_ILLEGAL",
        ),
        (
            "a non-numeric partner id",
            merchant("P2088", "M", "S", "1", "11"),
            "PARAM_ILLEGAL",
        ),
        (
            "no store id",
            merchant("2088", "M", "", "1", "11"),
            "PARAM_ILLEGAL",
        ),
        ("no trade number", ipay("", "1", "11"), "PARAM_ILLEGAL"),
        (
            "a lower-case way type",
            String::from_utf8(store(1))
                .unwrap()
                .replace("MERCHANT_PMS", "merchant_pms")
                .into_bytes(),
            "UNKNOWN_CIRCLE_STORE_WAY_TYPE",
        ),
        (
            "a way type nobody knows",
            String::from_utf8(store(1))
                .unwrap()
                .replace("MERCHANT_PMS", "SHOP")
                .into_bytes(),
            "UNKNOWN_CIRCLE_STORE_WAY_TYPE",
        ),
        (
            "a body over 64 KiB",
            format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes(),
            "PARAM_ILLEGAL",
        ),
    ];
    for (what, body, code) in cases {
        let reply = post(&client, &sandbox, &keys, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.code(), code, "{what}");
        assert_status_f(&reply, code);
        assert_eq!(reply.verify(&keys), Ok(()), "{what}");
    }
    let stats = sandbox.stats();
    assert_eq!(stats.stores_circled, 0);
    assert_eq!(stats.by_result_code["PARAM_ILLEGAL"], 9);
    assert_eq!(stats.by_result_code["UNKNOWN_CIRCLE_STORE_WAY_TYPE"], 2);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_failures_have_their_codes_and_no_effect() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |_| {}).await;
    let client = client();
    let body = store(1);
    let good = signed_headers(&keys, &body, "1", "RSA256");
    let with = |name: &str, value: Option<&str>| -> Headers {
        let mut h: Headers = good.iter().filter(|(n, _)| n != name).cloned().collect();
        if let Some(v) = value {
            h.push((name.to_owned(), v.to_owned()));
        }
        h
    };
    let other_keys = util::keys();
    let tampered = {
        let mut b = body.clone();
        let at = b.iter().position(|&c| c == b'S').unwrap();
        b[at] = b'T';
        b
    };
    let cases: Vec<(&str, Headers, Vec<u8>, &str)> = vec![
        (
            "a body changed after signing",
            good.clone(),
            tampered,
            "INVALID_SIGNATURE",
        ),
        (
            "another client id",
            with("client-id", Some("2102000000000045")),
            body.clone(),
            "INVALID_CLIENT",
        ),
        (
            "no client id",
            with("client-id", None),
            body.clone(),
            "INVALID_CLIENT",
        ),
        (
            "keyVersion 2",
            signed_headers(&keys, &body, "2", "RSA256"),
            body.clone(),
            "KEY_NOT_FOUND",
        ),
        (
            "an unknown algorithm",
            signed_headers(&keys, &body, "1", "RSA"),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "signed with another key",
            signed_headers(&other_keys, &body, "1", "RSA256"),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "no signature",
            with("signature", None),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "a malformed signature header",
            with("signature", Some("garbage")),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "a signature that is not base64",
            with(
                "signature",
                Some("algorithm=RSA256,keyVersion=1,signature=%%%"),
            ),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "no request-time",
            with("request-time", None),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
        (
            "another request-time",
            with("request-time", Some("2026-11-26T18:30:00.123+08:00")),
            body.clone(),
            "INVALID_SIGNATURE",
        ),
    ];
    for (what, headers, body, code) in cases {
        let reply = post_raw(&client, &sandbox, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.code(), code, "{what}");
        assert_status_f(&reply, code);
    }

    // Headers that are not UTF-8 are refused, not a panic.
    let response = client
        .post(format!(
            "{}{}",
            sandbox.endpoint(),
            pms_onboard::api::signing::API_PATH
        ))
        .header(
            "client-id",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(json["result"]["resultCode"], "INVALID_CLIENT");

    assert_eq!(sandbox.stats().stores_circled, 0);
    // The token the Collect-PMS page shows, in any case, is accepted.
    let lower = signed_headers(&keys, &body, "1", "SHA256withRSA");
    let reply = post_raw(&client, &sandbox, &lower, body).await.unwrap();
    assert_eq!(reply.code(), "SUCCESS");
    sandbox.shutdown().await;
}

/// What one request came to, for counting fault rates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Seen {
    /// HTTP 200 JSON: the result code, and whether the signature verified.
    Answer(String, bool),
    Http(u16, Option<String>),
    /// No HTTP answer at all: the connection closed before a response (not a time-out).
    ConnectionClosed,
    TimedOut,
}

/// Sends `n` saves of distinct stores one after the other through a sandbox with `faults`.
async fn sequential(
    faults: Faults,
    n: usize,
    timeout: Duration,
    rate_limit: Option<u32>,
) -> (Vec<Seen>, Stats) {
    let keys = keys();
    let sandbox = start(&keys, |c| {
        c.faults = faults;
        c.rate_limit = rate_limit;
    })
    .await;
    let client = client_with_timeout(timeout);
    let mut seen = Vec::with_capacity(n);
    for i in 0..n {
        seen.push(match post(&client, &sandbox, &keys, store(i)).await {
            Err(e) if e.is_timeout() => Seen::TimedOut,
            Err(e) => {
                assert!(e.is_request() && e.status().is_none(), "{e}");
                Seen::ConnectionClosed
            }
            Ok(r) if r.status == 200 => Seen::Answer(r.code(), r.verify(&keys).is_ok()),
            Ok(r) => Seen::Http(r.status, r.header("retry-after").map(str::to_owned)),
        });
    }
    let stats = sandbox.stats();
    assert_eq!(stats.requests, n as u64);
    assert_eq!(stats.double_success, 0);
    sandbox.shutdown().await;
    (seen, stats)
}

fn rate(seen: &[Seen], what: impl Fn(&Seen) -> bool) -> f64 {
    seen.iter().filter(|s| what(s)).count() as f64 / seen.len() as f64
}

fn assert_about(rate: f64, what: &str) {
    assert!((0.2..=0.4).contains(&rate), "{what}: rate {rate}");
}

const N: usize = 200;
const LONG: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn unknown_before_commit_has_no_effect() {
    let _turn = crate::util::together();
    let faults = Faults {
        unknown: 0.3,
        seed: 11,
        ..Faults::default()
    };
    let (seen, stats) = sequential(faults, N, LONG, None).await;
    let unknown = Seen::Answer("UNKNOWN_EXCEPTION".into(), true);
    assert_about(rate(&seen, |s| *s == unknown), "unknown");
    let successes = seen
        .iter()
        .filter(|s| **s == Seen::Answer("SUCCESS".into(), true))
        .count();
    assert_eq!(successes + rate_count(&seen, &unknown), N);
    assert_eq!(stats.stores_circled as usize, successes);
    assert_eq!(
        stats.by_result_code["UNKNOWN_EXCEPTION"] as usize,
        N - successes
    );
}

fn rate_count(seen: &[Seen], one: &Seen) -> usize {
    seen.iter().filter(|s| *s == one).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_after_commit_circles_the_store() {
    let _turn = crate::util::together();
    let faults = Faults {
        unknown_after_commit: 0.3,
        seed: 12,
        ..Faults::default()
    };
    let (seen, stats) = sequential(faults, N, LONG, None).await;
    assert_about(
        rate(&seen, |s| {
            *s == Seen::Answer("UNKNOWN_EXCEPTION".into(), true)
        }),
        "unknown after commit",
    );
    assert_eq!(stats.stores_circled as usize, N, "every store was circled");
    assert_eq!(stats.double_success, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http500_and_http429_faults() {
    let _turn = crate::util::together();
    let faults = Faults {
        http500: 0.3,
        seed: 13,
        ..Faults::default()
    };
    let (seen, stats) = sequential(faults, N, LONG, None).await;
    let r = rate(&seen, |s| matches!(s, Seen::Http(500, _)));
    assert_about(r, "http500");
    assert_eq!(stats.by_result_code["HTTP_500"] as f64, r * N as f64);

    let faults = Faults {
        http429: 0.3,
        retry_after_secs: 3,
        seed: 14,
        ..Faults::default()
    };
    let (seen, stats) = sequential(faults, N, LONG, None).await;
    let r = rate(&seen, |s| *s == Seen::Http(429, Some("3".into())));
    assert_about(r, "http429 with Retry-After: 3");
    assert_eq!(stats.by_result_code["HTTP_429"] as f64, r * N as f64);
    assert_eq!(
        stats.rate_limited, 0,
        "an injected 429 is not the rate limit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_is_a_client_error_and_has_no_effect() {
    let _turn = crate::util::together();
    let faults = Faults {
        reset: 0.3,
        seed: 15,
        ..Faults::default()
    };
    let (seen, stats) = sequential(faults, N, LONG, None).await;
    let r = rate(&seen, |s| *s == Seen::ConnectionClosed);
    assert_about(r, "reset");
    assert_eq!(stats.by_result_code["RESET"] as f64, r * N as f64);
    assert_eq!(stats.stores_circled as f64, (1.0 - r) * N as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signature_answers_fail_verification() {
    let _turn = crate::util::together();
    let faults = Faults {
        bad_signature: 0.3,
        seed: 16,
        ..Faults::default()
    };
    let (seen, _) = sequential(faults, N, LONG, None).await;
    assert_about(
        rate(&seen, |s| *s == Seen::Answer("SUCCESS".into(), false)),
        "bad signature",
    );
    assert_eq!(
        rate(
            &seen,
            |s| matches!(s, Seen::Answer(code, _) if code == "SUCCESS")
        ),
        1.0,
        "the answer itself is the real one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_outlasts_the_client_timeout_and_then_commits() {
    let _turn = crate::util::together();
    // A normal answer takes a few milliseconds; the time-out leaves a wide margin so that a
    // slow machine does not turn a normal answer into a time-out.
    let n = 50;
    let hang_ms = 500;
    let faults = Faults {
        hang: 0.3,
        hang_ms,
        seed: 17,
        ..Faults::default()
    };
    let keys = keys();
    let sandbox = start(&keys, |c| c.faults = faults).await;
    let client = client_with_timeout(Duration::from_millis(250));
    let mut timed_out = 0;
    for i in 0..n {
        match post(&client, &sandbox, &keys, store(i)).await {
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                timed_out += 1;
            }
            Ok(r) => assert_eq!(r.code(), "SUCCESS"),
        }
    }
    assert_about(timed_out as f64 / n as f64, "hang");
    // The hung requests still go through once the hang ends, as the real gateway may.
    tokio::time::sleep(Duration::from_millis(hang_ms + 200)).await;
    let stats = sandbox.stats();
    assert_eq!(stats.by_result_code["HANG"], timed_out);
    assert_eq!(stats.stores_circled, n as u64);
    assert_eq!(stats.by_result_code["SUCCESS"], n as u64);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_delays_every_answer() {
    let _turn = crate::util::together();
    let faults = Faults {
        latency_ms: 80,
        ..Faults::default()
    };
    let keys = keys();
    let sandbox = start(&keys, |c| c.faults = faults).await;
    let client = client();
    for i in 0..3 {
        let started = Instant::now();
        let reply = post(&client, &sandbox, &keys, store(i)).await.unwrap();
        assert_eq!(reply.code(), "SUCCESS");
        assert!(started.elapsed() >= Duration::from_millis(80));
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_gives_the_same_run() {
    let _turn = crate::util::together();
    let faults = Faults {
        unknown: 0.2,
        http500: 0.2,
        reset: 0.2,
        bad_signature: 0.2,
        seed: 42,
        ..Faults::default()
    };
    let (a, _) = sequential(faults.clone(), 60, LONG, None).await;
    let (b, _) = sequential(faults, 60, LONG, None).await;
    assert_eq!(a, b);
    assert!(a.iter().collect::<HashSet<_>>().len() >= 4, "{a:?}");
}

/// `n` saves of distinct stores sent at once, signed beforehand, so that all arrive within a
/// second.
async fn burst(sandbox: &Sandbox, keys: &Keys, n: usize) -> Vec<Reply> {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let body = store(i);
        let headers = signed_headers(keys, &body, "1", "RSA256");
        let (client, endpoint) = (client.clone(), sandbox.endpoint());
        tasks.spawn(async move { send(&client, &endpoint, &headers, body).await.unwrap() });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_429_and_counts_it() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |c| c.rate_limit = Some(5)).await;
    let client = client();
    let replies = burst(&sandbox, &keys, 20).await;
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 15, "5 pass, 15 are over the limit");
    assert!(limited.iter().all(|r| r.header("retry-after") == Some("1")));
    let ids: HashSet<String> = replies.iter().map(Reply::tracer_id).collect();
    assert_eq!(ids.len(), 20, "a Tracer-Id on every answer, 429 included");
    let stats = sandbox.stats();
    assert_eq!(stats.requests, 20);
    assert_eq!(stats.rate_limited, 15);
    assert_eq!(stats.by_result_code["RATE_LIMITED"], 15);
    assert_eq!(stats.by_result_code["SUCCESS"], 5);
    assert_eq!(stats.stores_circled, 5);
    assert_eq!(stats.max_requests_in_one_second, 20);

    // A second later the window has moved on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = post(&client, &sandbox, &keys, store(100)).await.unwrap();
    assert_eq!(reply.code(), "SUCCESS");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_can_answer_with_alipayhks_throttling_code() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |c| {
        c.rate_limit = Some(5);
        c.rate_limit_answer = RateLimitAnswer::Code;
    })
    .await;
    let replies = burst(&sandbox, &keys, 20).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.code() == "REQUEST_TRAFFIC_EXCEED_LIMIT")
        .collect();
    assert_eq!(limited.len(), 15, "5 pass, 15 are over the limit");
    for reply in limited {
        let result = reply.json().result;
        assert_eq!(result.result_status, "U");
        assert_eq!(
            result.result_message,
            "The request traffic exceeds the limit."
        );
        assert_eq!(reply.verify(&keys), Ok(()), "signed like every answer");
        reply.tracer_id();
    }
    let stats = sandbox.stats();
    assert_eq!(stats.rate_limited, 15);
    assert_eq!(stats.by_result_code["REQUEST_TRAFFIC_EXCEED_LIMIT"], 15);
    assert!(!stats.by_result_code.contains_key("RATE_LIMITED"));
    assert_eq!(stats.by_result_code["SUCCESS"], 5);
    assert_eq!(stats.stores_circled, 5, "a throttled request has no effect");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_gateway_cannot_route_gets_its_documented_code() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |_| {}).await;
    let client = client();
    let body = store(1);
    let signed = signed_headers(&keys, &body, "1", "RSA256");
    let as_text: Headers = signed
        .iter()
        .map(|(n, v)| match n.as_str() {
            "content-type" => (n.clone(), "text/plain".to_owned()),
            _ => (n.clone(), v.clone()),
        })
        .collect();
    let api = format!("{}{API_PATH}", sandbox.endpoint());
    let unknown_path = "/api/open/alipayhk/businessdistrict/circleStore/delete";
    let unknown = format!("{}{unknown_path}", sandbox.endpoint());
    use reqwest::Method;
    let cases = [
        (
            "an unknown API",
            Method::POST,
            &unknown,
            &signed,
            "INVALID_API",
            unknown_path,
        ),
        (
            "GET",
            Method::GET,
            &api,
            &signed,
            "METHOD_NOT_SUPPORTED",
            API_PATH,
        ),
        (
            "PUT",
            Method::PUT,
            &api,
            &signed,
            "METHOD_NOT_SUPPORTED",
            API_PATH,
        ),
        (
            "plain text",
            Method::POST,
            &api,
            &as_text,
            "MEDIA_TYPE_NOT_ACCEPTABLE",
            API_PATH,
        ),
    ];
    for (what, method, url, headers, code, signed_over) in cases {
        let reply = request(&client, method, url, headers, body.clone())
            .await
            .unwrap();
        assert_status_f(&reply, code);
        assert_eq!(
            reply.json().result.result_message,
            Code::parse(code).unwrap().message()
        );
        assert_eq!(reply.verify_at(&keys, signed_over), Ok(()), "{what}");
        reply.tracer_id();
    }
    // Outside /api/ there is no gateway: a plain 404, not counted.
    let reply = request(
        &client,
        Method::POST,
        &format!("{}/other", sandbox.endpoint()),
        &signed,
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);
    let stats = sandbox.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.stores_circled, 0);
    assert_eq!(stats.by_result_code["METHOD_NOT_SUPPORTED"], 2);
    // The same request with its JSON content type goes through.
    let reply = post_raw(&client, &sandbox, &signed, body).await.unwrap();
    assert_eq!(reply.code(), "SUCCESS");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_code_can_be_injected() {
    let _turn = crate::util::together();
    let keys = keys();
    let client = client();
    for code in Code::ALL.into_iter().filter(|&c| c != Code::Success) {
        let sandbox = start(&keys, |c| c.faults.codes = vec![(code, 1.0)]).await;
        let reply = post(&client, &sandbox, &keys, store(1)).await.unwrap();
        assert_eq!(reply.status, 200);
        let result = reply.json().result;
        assert_eq!(
            (result.result_code.as_str(), result.result_status.as_str()),
            (code.as_str(), code.status()),
        );
        assert_eq!(result.result_message, code.message());
        assert_eq!(reply.verify(&keys), Ok(()), "{code:?}");
        let stats = sandbox.stats();
        assert_eq!(stats.by_result_code[code.as_str()], 1);
        assert_eq!(
            stats.stores_circled, 0,
            "{code:?} is injected before any effect"
        );
        sandbox.shutdown().await;
    }
    for (code, status) in [
        (Code::ProcessFail, "F"),
        (Code::InvalidApi, "F"),
        (Code::MethodNotSupported, "F"),
        (Code::MediaTypeNotAcceptable, "F"),
        (Code::AccessDenied, "F"),
        (Code::RequestTrafficExceedLimit, "U"),
    ] {
        assert_eq!(code.status(), status, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_codes_strike_at_their_rate_and_leave_the_seeded_faults_alone() {
    let _turn = crate::util::together();
    let faults = Faults {
        http500: 0.3,
        seed: 13,
        ..Faults::default()
    };
    let (plain, _) = sequential(faults.clone(), N, LONG, None).await;
    let with_code = Faults {
        codes: vec![(Code::ProcessFail, 0.3)],
        ..faults
    };
    let (seen, stats) = sequential(with_code, N, LONG, None).await;
    let http500 = |seen: &[Seen]| -> Vec<bool> {
        seen.iter()
            .map(|s| matches!(s, Seen::Http(500, _)))
            .collect()
    };
    assert_eq!(
        http500(&plain),
        http500(&seen),
        "the same seed, the same HTTP 500s"
    );
    let answered: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Answer(..)))
        .cloned()
        .collect();
    let process_fail = Seen::Answer("PROCESS_FAIL".into(), true);
    assert_about(rate(&answered, |s| *s == process_fail), "PROCESS_FAIL");
    assert_eq!(
        stats.by_result_code["PROCESS_FAIL"] as usize,
        rate_count(&seen, &process_fail)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_has_its_own_tracer_id() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |c| {
        c.faults = Faults {
            http500: 0.3,
            http429: 0.3,
            bad_signature: 0.2,
            seed: 5,
            ..Faults::default()
        }
    })
    .await;
    let client = client();
    let mut ids = HashSet::new();
    let mut statuses = BTreeSet::new();
    for i in 0..40 {
        let reply = post(&client, &sandbox, &keys, store(i % 30)).await.unwrap();
        statuses.insert(reply.status);
        assert!(ids.insert(reply.tracer_id()), "unique");
    }
    assert_eq!(statuses, [200, 429, 500].into_iter().collect());
    // The stats endpoints are the sandbox's own, not the gateway's.
    let response = client
        .get(format!("{}/sandbox/stats", sandbox.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("tracer-id").is_none());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clock_offset_shifts_response_time_and_date() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |c| c.clock_offset_secs = -3600).await;
    let reply = post(&client(), &sandbox, &keys, store(1)).await.unwrap();
    assert_eq!(reply.code(), "SUCCESS", "no skew check unless asked");
    assert_eq!(reply.verify(&keys), Ok(()));
    let now = chrono::Utc::now();
    let response_time =
        chrono::DateTime::parse_from_rfc3339(reply.header("response-time").unwrap()).unwrap();
    let behind = now.signed_duration_since(response_time).num_seconds();
    assert!(
        (3590..=3610).contains(&behind),
        "response-time {behind} s behind"
    );
    let dates: Vec<_> = reply.headers.get_all("date").iter().collect();
    assert_eq!(dates.len(), 1, "hyper's own Date is not added: {dates:?}");
    let date = chrono::DateTime::parse_from_rfc2822(dates[0].to_str().unwrap()).unwrap();
    let behind = now.signed_duration_since(date).num_seconds();
    assert!((3590..=3610).contains(&behind), "Date {behind} s behind");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_time_far_from_the_clock_is_refused_only_when_asked() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |c| {
        c.clock_offset_secs = 3600;
        c.max_clock_skew = Some(Duration::from_secs(300));
    })
    .await;
    let client = client();
    let body = store(1);
    let now = signed_headers(&keys, &body, "1", "RSA256");
    let reply = post_raw(&client, &sandbox, &now, body.clone())
        .await
        .unwrap();
    assert_status_f(&reply, "INVALID_SIGNATURE");
    let message = reply.json().result.result_message;
    assert!(
        message.contains("clock") && message.contains("300 seconds"),
        "{message}"
    );
    let in_an_hour = pms_onboard::api::signing::hong_kong_iso8601(
        chrono::Utc::now() + chrono::TimeDelta::seconds(3600),
    );
    let shifted = signed_headers_at(&keys, &body, in_an_hour);
    let reply = post_raw(&client, &sandbox, &shifted, body).await.unwrap();
    assert_eq!(reply.code(), "SUCCESS");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_every_request_then_the_sandbox_recovers() {
    let _turn = crate::util::together();
    let keys = keys();
    let client = client();
    let outage = Duration::from_millis(800);
    for answer in [OutageAnswer::Http503, OutageAnswer::Unknown] {
        let sandbox = start(&keys, |c| {
            c.outage = Some(Outage {
                duration: outage,
                answer,
            })
        })
        .await;
        for i in 0..3 {
            let reply = post(&client, &sandbox, &keys, store(i)).await.unwrap();
            reply.tracer_id();
            match answer {
                OutageAnswer::Http503 => assert_eq!(reply.status, 503),
                OutageAnswer::Unknown => {
                    assert_eq!(reply.json().result.result_status, "U");
                    assert_eq!(reply.code(), "UNKNOWN_EXCEPTION");
                    assert_eq!(reply.verify(&keys), Ok(()));
                }
            }
        }
        assert_eq!(
            sandbox.stats().stores_circled,
            0,
            "nothing done during the outage"
        );
        tokio::time::sleep(outage).await;
        let reply = post(&client, &sandbox, &keys, store(0)).await.unwrap();
        assert_eq!(reply.code(), "SUCCESS", "{answer:?}: recovered");
        let stats = sandbox.stats();
        let counted = match answer {
            OutageAnswer::Http503 => "HTTP_503",
            OutageAnswer::Unknown => "UNKNOWN_EXCEPTION",
        };
        assert_eq!(stats.by_result_code[counted], 3);
        assert_eq!((stats.requests, stats.stores_circled), (4, 1));
        sandbox.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_endpoint_has_exactly_the_documented_keys() {
    let _turn = crate::util::together();
    let keys = keys();
    let sandbox = start(&keys, |_| {}).await;
    let client = client();
    for i in 0..3 {
        post(&client, &sandbox, &keys, store(i)).await.unwrap();
    }
    post(&client, &sandbox, &keys, store(0)).await.unwrap();
    let json = get_json(&sandbox, "/sandbox/stats").await;
    let keys_seen: BTreeSet<_> = json.as_object().unwrap().keys().cloned().collect();
    let expected: BTreeSet<String> = [
        "requests",
        "by_result_code",
        "stores_circled",
        "double_success",
        "rate_limited",
        "max_requests_in_one_second",
        "first_request_ms",
        "last_request_ms",
        "success_answers",
        "replayed",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys_seen, expected);
    assert_eq!(json["requests"], 4);
    assert_eq!(json["by_result_code"]["SUCCESS"], 3);
    assert_eq!(json["by_result_code"]["STORE_IS_CIRCLED"], 1);
    assert_eq!(json["stores_circled"], 3);
    assert_eq!(json["success_answers"], 3);
    assert_eq!(json["replayed"], 0);
    assert_eq!(json["double_success"], 0);
    assert_eq!(json["max_requests_in_one_second"], 4);
    let parsed: Stats = serde_json::from_value(json).unwrap();
    assert_eq!(parsed, sandbox.stats());
    let labels = get_json(&sandbox, "/sandbox/labels").await;
    assert_eq!(labels.as_object().unwrap().len(), 3);
    sandbox.shutdown().await;
}

/// The project's own client against the sandbox: each documented answer lands in its outcome
/// class, and what cannot be believed is not.
mod real_client {
    use std::sync::Arc;
    use std::time::Duration;

    use pms_onboard::api::client::{Client, ClientSettings};
    use pms_onboard::api::keys::PrivateKey;
    use pms_onboard::api::outcome::Outcome;
    use pms_onboard::input::{Row, SaveWay};
    use pms_onboard::sandbox::{Faults, Sandbox};

    use super::util::{CLIENT_ID, Keys, keys, start};

    fn client(keys: &Keys, sandbox: &Sandbox, private: Option<PrivateKey>) -> Client {
        let private = private.unwrap_or_else(|| {
            PrivateKey::from_file(&keys.dir.path().join("client_private.pem")).unwrap()
        });
        Client::new(
            ClientSettings {
                endpoint: sandbox.endpoint(),
                client_id: CLIENT_ID.into(),
                key_version: "1".into(),
                signature_algorithm: "RSA256".into(),
                timeout: Duration::from_millis(500),
            },
            Arc::new(private),
            Arc::new(keys.alipay_public.clone()),
        )
        .unwrap()
    }

    fn store(n: u32, mall: &str) -> Row {
        Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088000000000001".into(),
            merchant_id: "M1".into(),
            merchant_name: "美心".into(),
            store_id: format!("S{n}"),
            store_name: "中環店".into(),
            mall_group_label: "20230316".into(),
            mall_label: mall.into(),
        }
    }

    fn trade(no: &str) -> Row {
        Row {
            save_way: SaveWay::IpayTradeNo,
            ipay_trade_no: no.into(),
            partner_id: String::new(),
            merchant_id: String::new(),
            merchant_name: String::new(),
            store_id: String::new(),
            store_name: String::new(),
            mall_group_label: "20230316".into(),
            mall_label: "20230316001".into(),
        }
    }

    fn code(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Permanent { code, .. } | Outcome::Fatal { code, .. } => code.clone(),
            other => other.kind().to_owned(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_answer_lands_in_its_class() {
        let _turn = crate::util::together();
        let keys = keys();
        let sandbox = start(&keys, |c| {
            c.malls = Some([("20230316".to_owned(), "20230316001".to_owned())].into());
            c.trades = Some(["123456".to_owned()].into());
        })
        .await;
        let c = client(&keys, &sandbox, None);
        let first = c.send(&store(1, "20230316001")).await;
        let Outcome::Success { pms_label } = &first.outcome else {
            panic!("{first:?}")
        };
        assert_eq!(pms_label.len(), 31);
        assert_eq!(
            sandbox.labels()["MERCHANT_PMS|2088000000000001|M1|S1"],
            *pms_label
        );
        assert_eq!(
            c.send(&store(1, "20230316001")).await.outcome,
            Outcome::AlreadyCircled
        );
        assert_eq!(
            code(&c.send(&store(2, "20230316999")).await.outcome),
            "BUSINESS_DISTRICT_NOT_EXIST"
        );
        assert_eq!(
            code(&c.send(&store(3, "2023A")).await.outcome),
            "PARAM_ILLEGAL"
        );
        assert_eq!(
            code(&c.send(&trade("999")).await.outcome),
            "IPAY_TRADE_NO_NOT_EXIST"
        );
        assert!(matches!(
            c.send(&trade("123456")).await.outcome,
            Outcome::Success { .. }
        ));
        let stranger =
            PrivateKey::from_file(&super::util::keys().dir.path().join("client_private.pem"))
                .unwrap();
        let wrong = client(&keys, &sandbox, Some(stranger));
        assert_eq!(
            code(&wrong.send(&store(4, "20230316001")).await.outcome),
            "INVALID_SIGNATURE"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn answers_that_cannot_be_believed_are_retried_and_kept() {
        let _turn = crate::util::together();
        let keys = keys();
        for faults in [
            Faults {
                bad_signature: 1.0,
                ..Faults::default()
            },
            Faults {
                unknown: 1.0,
                ..Faults::default()
            },
            Faults {
                unknown_after_commit: 1.0,
                ..Faults::default()
            },
            Faults {
                http500: 1.0,
                ..Faults::default()
            },
            Faults {
                reset: 1.0,
                ..Faults::default()
            },
            Faults {
                hang: 1.0,
                hang_ms: 1500,
                ..Faults::default()
            },
        ] {
            let sandbox = start(&keys, |c| c.faults = faults.clone()).await;
            let a = client(&keys, &sandbox, None)
                .send(&store(1, "20230316001"))
                .await;
            if faults.bad_signature > 0.0 {
                // Not believed, but kept: the label AlipayHK sent is in the attempt.
                assert!(matches!(a.outcome, Outcome::Unverified { .. }), "{a:?}");
                assert_eq!(a.verified, Some(false));
                assert!(a.pms_label.is_some(), "{a:?}");
                assert!(a.response_signature.is_some() && a.response_time.is_some());
            } else {
                assert!(
                    matches!(
                        a.outcome,
                        Outcome::Transient {
                            maybe_processed: true,
                            ..
                        }
                    ),
                    "{faults:?}: {a:?}"
                );
            }
            assert!(a.outcome.maybe_processed());
            assert_eq!(sandbox.stats().double_success, 0);
        }
        let sandbox = start(&keys, |c| {
            c.faults = Faults {
                http429: 1.0,
                retry_after_secs: 2,
                ..Faults::default()
            }
        })
        .await;
        let a = client(&keys, &sandbox, None)
            .send(&store(1, "20230316001"))
            .await;
        assert!(
            matches!(a.outcome, Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
            "{a:?}"
        );
    }
}
