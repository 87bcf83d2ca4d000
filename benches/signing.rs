//! RSA-2048 PKCS#1 v1.5 / SHA-256 signing of one request: aws-lc-rs (what the client uses)
//! beside `rsa` 0.10 (`rsa::pkcs1v15::SigningKey<sha2::Sha256>`, what parses the keys), so that
//! the choice of signer stays justified by a number. Also the response check (verify) and the
//! whole header (sign + base64 + urlencode).
//!
//! `cargo bench --bench signing`
//!
//! The one place a private-key operation goes through `rsa`, to measure it: clippy.toml forbids
//! it everywhere else (RUSTSEC-2023-0071).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pms_onboard::api::keys::{PrivateKey, keygen};
use pms_onboard::api::signing::{self, API_PATH};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::Signer as _;

/// A request as the client signs it: a typical body, time and client id.
fn request_content() -> Vec<u8> {
    let body = br#"{"saveWayType":"MERCHANT_PMS","partnerId":"2088000000000042","merchantId":"M0007","merchantName":"\u6e2c\u8a66\u5546\u6236 42","storeId":"S00000042","storeName":"\u5206\u5e97 42","mallGroupLabel":"20230316","mallLabel":"20230316003"}"#;
    signing::content(
        API_PATH,
        "2102000000000000044",
        "2026-11-26T18:30:00.123+08:00",
        body,
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path()).unwrap();
    let pem = std::fs::read_to_string(dir.path().join("client_private.pem")).unwrap();
    let content = request_content();

    let lc = PrivateKey::from_bytes(pem.as_bytes()).unwrap();
    let rust = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(
        rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap(),
    );
    // Both implement the same deterministic scheme: the same bytes, or the comparison is moot.
    let sig_rust: Box<[u8]> = rust.sign(&content).into();
    assert_eq!(lc.sign(&content), sig_rust.to_vec());
    let public = lc.public_key();

    let mut g = c.benchmark_group("rsa2048_pkcs1v15_sha256");
    g.bench_function("sign/aws-lc-rs", |b| {
        b.iter(|| lc.sign(black_box(&content)))
    });
    g.bench_function("sign/rsa-0.10", |b| {
        b.iter(|| rust.sign(black_box(&content)))
    });
    g.bench_function("verify/aws-lc-rs", |b| {
        b.iter(|| public.verify(black_box(&content), black_box(&sig_rust)))
    });
    g.bench_function("signature_header/aws-lc-rs", |b| {
        b.iter(|| signing::sign_header(&lc, "RSA256", "1", black_box(&content)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
