//! `sign`: shows the exact content signed and the headers as they would be sent, and checks a
//! response's signature the same way the client does: the tool for "INVALID_SIGNATURE" tickets.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::api::client::{ClientSettings, SignedRequest, sign_body_at};
use crate::api::keys::{PrivateKey, PublicKey};
use crate::api::signing::{self, API_PATH};
use crate::cli::SignArgs;
use crate::output::Printer;

/// The content signed and the headers as they are sent, as `sign` and `run --dry-run` show them.
pub fn show_signed(signed: &SignedRequest, client_id: &str) -> String {
    format!(
        "content signed ({} bytes, \\n is the one line break):\n{}\n\nheaders:\n\
         client-id: {client_id}\nrequest-time: {}\nsignature: {}\n",
        signed.content.len(),
        visible(&signed.content),
        signed.request_time,
        signed.signature
    )
}

pub fn run(args: SignArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let key = PrivateKey::from_file(&args.private_key)?;
    if let Some(found) = crate::api::checks::key_permissions(&args.private_key)
        .filter(|f| f.level == crate::api::checks::Level::Warn)
    {
        printer.warn(&format!("private key {}", found.text()));
    }
    let body = read(&args.body)?;
    if body.ends_with(b"\n") {
        printer.info(&format!(
            "note: {} ends with a line break; it is signed as part of the body (pms-onboard never sends one)",
            args.body.display()
        ));
    }
    let settings = ClientSettings {
        endpoint: String::new(),
        client_id: args.client_id.clone(),
        key_version: args.key_version.clone(),
        signature_algorithm: args.signature_algorithm.clone(),
        timeout: std::time::Duration::from_secs(15),
    };
    let time = args
        .request_time
        .clone()
        .unwrap_or_else(signing::now_iso8601);
    let signed = sign_body_at(&settings, &key, body, time);
    // With --json: one object, the exact content and headers, and the response's check.
    let mut json = serde_json::json!({
        "content": String::from_utf8_lossy(&signed.content),
        "headers": {
            "client-id": args.client_id,
            "request-time": signed.request_time,
            "signature": signed.signature,
        },
    });
    if !printer.json_result() {
        printer.out(&show_signed(&signed, &args.client_id));
    }

    let Some(public_path) = &args.alipay_public_key else {
        if printer.json_result() {
            printer.out_json(&json);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let public = PublicKey::from_file(public_path)?;
    let response = read(args.response.as_deref().context("--response is required")?)?;
    let (mut time, mut signature) = (args.response_time.clone(), args.response_signature.clone());
    if let Some(path) = &args.response_headers {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        for line in text.lines() {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "response-time" => time = time.or(Some(value.trim().to_owned())),
                    "signature" => signature = signature.or(Some(value.trim().to_owned())),
                    _ => {}
                }
            }
        }
    }
    let content = signing::content(
        API_PATH,
        &args.client_id,
        time.as_deref().unwrap_or("<no response-time>"),
        &response,
    );
    let verified = signing::verify(
        &public,
        API_PATH,
        &args.client_id,
        time.as_deref(),
        &response,
        signature.as_deref(),
    );
    if printer.json_result() {
        json["response"] = serde_json::json!({
            "content_checked": String::from_utf8_lossy(&content),
            "valid": verified.is_ok(),
            "error": verified.as_ref().err().map(ToString::to_string),
        });
        printer.out_json(&json);
        return Ok(ExitCode::from(match verified {
            Ok(()) => super::exit::OK,
            Err(_) => super::exit::FATAL,
        }));
    }
    printer.out("\n");
    printer.out(&format!(
        "response content checked:\n{}\n",
        visible(&content)
    ));
    match verified {
        Ok(()) => {
            printer.out_line("response signature: valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            printer.out_line(&format!("response signature: NOT valid: {e}"));
            Ok(ExitCode::from(super::exit::FATAL))
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The content with its line break shown as `\n` (and any other control byte escaped).
fn visible(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
