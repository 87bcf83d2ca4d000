//! The Alipay+ / AlipayHK open-API signature scheme, both directions.
//!
//! ```text
//! content = "POST " + uri + "\n" + client_id + "." + time + "." + body
//! header  = "algorithm=" + token + ",keyVersion=" + N + ",signature=" + urlencode(base64(sig))
//! ```
//! This is the one place that knows these formats; the client, the sandbox and `sign` all call it.

use base64::Engine as _;

use super::keys::{PrivateKey, PublicKey};

/// The path of the Collect-PMS API; also the URI inside the signed content.
pub const API_PATH: &str = "/api/open/alipayhk/businessdistrict/circleStore/save";

/// The bytes that are signed for a request or a response.
pub fn content(uri: &str, client_id: &str, time: &str, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(uri.len() + client_id.len() + time.len() + body.len() + 8);
    c.extend_from_slice(b"POST ");
    c.extend_from_slice(uri.as_bytes());
    c.push(b'\n');
    c.extend_from_slice(client_id.as_bytes());
    c.push(b'.');
    c.extend_from_slice(time.as_bytes());
    c.push(b'.');
    c.extend_from_slice(body);
    c
}

/// Form encoding as the official SDKs do it (Java's `URLEncoder`): letters, digits and `.-*_`
/// stay, space becomes `+`, every other byte `%XX` with upper-case hex; which is what
/// `application/x-www-form-urlencoded` serialisation does.
pub fn urlencode(s: &str) -> String {
    // Sized for a base64 signature, about a twentieth of whose characters are escaped.
    let mut out = String::with_capacity(s.len() + s.len() / 8 + 8);
    out.extend(form_urlencoded::byte_serialize(s.as_bytes()));
    out
}

/// Percent-decoding only: `%XX` becomes its byte, a raw `+` stays `+` (it is base64, not a space).
/// `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The value of the `signature` header: `algorithm=…,keyVersion=…,signature=<urlencoded base64>`.
pub fn signature_header(token: &str, key_version: &str, signature: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(signature);
    format!(
        "algorithm={token},keyVersion={key_version},signature={}",
        urlencode(&b64)
    )
}

/// Signs `content` and returns the `signature` header value.
pub fn sign_header(key: &PrivateKey, token: &str, key_version: &str, content: &[u8]) -> String {
    signature_header(token, key_version, &key.sign(content))
}

/// The parts of a `signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub algorithm: Option<String>,
    pub key_version: Option<String>,
    /// The signature exactly as it appeared (still percent-encoded).
    pub signature: String,
}

/// Parses `algorithm=…,keyVersion=…,signature=…` (any order, names case-insensitive).
pub fn parse_signature_header(value: &str) -> Option<SignatureHeader> {
    let mut algorithm = None;
    let mut key_version = None;
    let mut signature = None;
    for part in value.split(',') {
        let (name, v) = part.split_once('=')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "algorithm" => algorithm = Some(v.trim().to_owned()),
            "keyversion" => key_version = Some(v.trim().to_owned()),
            "signature" => signature = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    Some(SignatureHeader {
        algorithm,
        key_version,
        signature: signature.filter(|s| !s.is_empty())?,
    })
}

/// Why a signature did not verify, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature header")]
    Missing,
    #[error("no response-time header")]
    MissingTime,
    #[error("the signature header is not algorithm=…,keyVersion=…,signature=…")]
    Malformed,
    #[error("the signature is not percent-encoded base64")]
    NotBase64,
    #[error(
        "the signature does not match the content (wrong public key, or the body, time or client-id differ)"
    )]
    Mismatch,
}

/// Decodes the signature part of a header: percent-decoding only, then base64.
pub fn decode_signature(header: &SignatureHeader) -> Result<Vec<u8>, VerifyError> {
    let raw = percent_decode(&header.signature).ok_or(VerifyError::NotBase64)?;
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| VerifyError::NotBase64)
}

/// Verifies a signed message (a response from the gateway, or a request in the sandbox).
pub fn verify(
    key: &PublicKey,
    uri: &str,
    client_id: &str,
    time: Option<&str>,
    body: &[u8],
    signature_header_value: Option<&str>,
) -> Result<(), VerifyError> {
    let header = signature_header_value.ok_or(VerifyError::Missing)?;
    let time = time.ok_or(VerifyError::MissingTime)?;
    let parsed = parse_signature_header(header).ok_or(VerifyError::Malformed)?;
    let sig = decode_signature(&parsed)?;
    if key.verify(&content(uri, client_id, time, body), &sig) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// `request-time` / `response-time`: ISO-8601 with milliseconds and the Hong Kong offset
/// (`2026-11-26T18:30:00.123+08:00`), the form the gateway's examples use.
pub fn now_iso8601() -> String {
    hong_kong_iso8601(chrono::Utc::now())
}

/// `utc` in the form of [`now_iso8601`] (the sandbox shifts its clock with it).
pub fn hong_kong_iso8601(utc: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    // Hong Kong time: UTC+8 all year (no daylight saving), so the offset is a constant.
    let t = utc.naive_utc() + chrono::Duration::hours(8);
    // Written out by hand: chrono's strftime parses its pattern on every call, once per request.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+08:00",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1_000_000 % 1000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/vectors")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn vector_text(name: &str) -> String {
        String::from_utf8(vector(name)).unwrap().trim().to_owned()
    }

    const CLIENT_ID: &str = "211020000000000000044";
    const REQUEST_TIME: &str = "2026-11-26T18:30:00.123+08:00";

    #[test]
    fn request_content_matches_the_vector() {
        let body = vector("request_body.json");
        let body = body.strip_suffix(b"\n").unwrap_or(&body);
        assert_eq!(
            content(API_PATH, CLIENT_ID, REQUEST_TIME, body),
            vector("request_content.bin")
        );
    }

    #[test]
    fn every_key_format_reproduces_the_openssl_signature() {
        let content = vector("request_content.bin");
        let expected_b64 = vector_text("request_signature_base64.txt");
        let expected_url = vector_text("request_signature_urlencoded.txt");
        for file in [
            "client_private_pkcs8.pem",
            "client_private_pkcs1.pem",
            "client_private_bare_base64.txt",
        ] {
            let key = PrivateKey::from_bytes(&vector(file)).unwrap();
            let sig = key.sign(&content);
            let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
            assert_eq!(b64, expected_b64, "{file}");
            assert_eq!(urlencode(&b64), expected_url, "{file}");
            let header = sign_header(&key, "RSA256", "1", &content);
            assert_eq!(
                header,
                format!("algorithm=RSA256,keyVersion=1,signature={expected_url}")
            );
        }
    }

    fn response_parts() -> (String, String, Vec<u8>) {
        let headers = vector_text("response_headers.txt");
        let get = |name: &str| {
            headers
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                .unwrap()
        };
        let body = vector("response_body.json");
        let body = body.strip_suffix(b"\n").unwrap_or(&body).to_vec();
        (get("response-time"), get("signature"), body)
    }

    #[test]
    fn the_response_vector_verifies_and_any_changed_byte_does_not() {
        let key = PublicKey::from_bytes(&vector("alipay_public.pem")).unwrap();
        let (time, sig, body) = response_parts();
        let check = |time: &str, body: &[u8]| {
            verify(&key, API_PATH, CLIENT_ID, Some(time), body, Some(&sig))
        };
        assert_eq!(check(&time, &body), Ok(()));
        assert_eq!(
            content(API_PATH, CLIENT_ID, &time, &body),
            vector("response_content.bin")
        );

        let mut tampered = body.clone();
        let at = tampered.iter().position(|&b| b == b'5').unwrap();
        tampered[at] = b'6';
        assert_eq!(check(&time, &tampered), Err(VerifyError::Mismatch));
        let later = time.replace("01.456", "01.457");
        assert_eq!(check(&later, &body), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&key, API_PATH, CLIENT_ID, Some(&time), &body, None),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn a_raw_plus_stays_a_plus() {
        assert_eq!(percent_decode("a+b%2Bc%3D").unwrap(), b"a+b+c=");
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(urlencode("a+/= b"), "a%2B%2F%3D+b");
        assert_eq!(urlencode("AZaz09.-*_~!é"), "AZaz09.-*_%7E%21%C3%A9");
    }

    #[test]
    fn request_time_has_millis_and_offset() {
        let t = now_iso8601();
        assert_eq!(t.len(), "2026-11-26T18:30:00.123+08:00".len(), "{t}");
        assert!(t.ends_with("+08:00"));
        // The hand-written format agrees with chrono's own, across a day and a year boundary.
        let hk = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        for ms in [
            0i64,
            1_798_732_799_999,
            1_798_761_599_007,
            1_764_151_200_123,
        ] {
            let utc = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            let want = utc
                .with_timezone(&hk)
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string();
            assert_eq!(hong_kong_iso8601(utc), want);
        }
    }
}
