//! What a user sees from the smaller commands: sign, keygen, validate, status, export,
//! reconcile, and settings errors.

use std::path::Path;
use std::process::Command;

use crate::util::{SandboxProcess, Scratch, bin, data, output, together};

fn vectors() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors")
}

#[test]
fn sign_reproduces_the_openssl_vector_from_every_key_format() {
    let _turn = together();
    let expected =
        std::fs::read_to_string(vectors().join("request_signature_urlencoded.txt")).unwrap();
    for key in [
        "client_private_pkcs8.pem",
        "client_private_pkcs1.pem",
        "client_private_bare_base64.txt",
    ] {
        let (code, out, err) = output(
            Command::new(bin())
                .arg("sign")
                .arg(vectors().join("request_body.json"))
                .arg("--private-key")
                .arg(vectors().join(key))
                .args(["--client-id", "211020000000000000044"])
                .args(["--request-time", "2026-11-26T18:30:00.123+08:00"]),
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("POST /api/open/alipayhk/businessdistrict/circleStore/save\\n211020000000000000044.2026-11-26T18:30:00.123+08:00.{"),
            "{out}"
        );
        let line = format!(
            "signature: algorithm=RSA256,keyVersion=1,signature={}",
            expected.trim()
        );
        assert!(out.lines().any(|l| l == line), "{key}: {out}");
    }
}

/// `sign` set up to check a response against the vectors; the response body is added by the test.
fn check_response_cmd() -> Command {
    let v = vectors();
    let mut cmd = Command::new(bin());
    cmd.arg("sign")
        .arg(v.join("request_body.json"))
        .arg("--private-key")
        .arg(v.join("client_private_pkcs8.pem"))
        .args(["--client-id", "211020000000000000044"])
        .arg("--alipay-public-key")
        .arg(v.join("alipay_public.pem"))
        .arg("--response-headers")
        .arg(v.join("response_headers.txt"));
    cmd
}

#[test]
fn sign_checks_a_response_and_says_why_it_fails() {
    let _turn = together();
    let v = vectors();
    let mut cmd = check_response_cmd();
    let (code, out, _) = output(cmd.arg("--response").arg(v.join("response_body.json")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("response signature: valid"), "{out}");

    let s = Scratch::new();
    let tampered = s.path("body.json");
    let body = std::fs::read_to_string(v.join("response_body.json")).unwrap();
    std::fs::write(&tampered, body.replace("12056", "12057")).unwrap();
    let mut cmd = check_response_cmd();
    let (code, out, _) = output(cmd.arg("--response").arg(&tampered));
    assert_eq!(code, 1);
    assert!(
        out.contains("NOT valid") && out.contains("does not match"),
        "{out}"
    );
}

#[test]
fn an_unreadable_key_names_the_formats_and_sends_nothing() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let bad = s.path("bad.pem");
    std::fs::write(&bad, "not a key at all: c2VjcmV0").unwrap();
    let sheet = s.sheet("stores.csv", 1, 3);
    let (code, _, err) = output(&mut s.run_cmd_with_key(&sandbox.endpoint, &[&sheet], &bad));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PKCS#8") && err.contains("PKCS#1"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    assert_eq!(sandbox.stats()["requests"], 0);
}

#[test]
fn a_bad_setting_names_its_source_and_sends_nothing() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = s.sheet("stores.csv", 1, 3);
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .env("PMS_ONBOARD_RATE", "fast"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("PMS_ONBOARD_RATE") && err.contains("rate"),
        "{err}"
    );
    let (code, _, err) = output(&mut s.run_cmd("http://example.com", &[&sheet]));
    assert_eq!(code, 1);
    assert!(err.contains("http://"), "{err}");
    assert_eq!(sandbox.stats()["requests"], 0);
}

#[test]
fn keygen_writes_the_four_files() {
    let _turn = together();
    let s = Scratch::new();
    let dir = s.path("k");
    let (code, _, err) = output(Command::new(bin()).arg("keygen").arg(&dir));
    assert_eq!(code, 0, "{err}");
    for f in [
        "client_private.pem",
        "client_public.pem",
        "alipay_private.pem",
        "alipay_public.pem",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let _turn = together();
    let (code, _, _) = output(Command::new(bin()).arg("run"));
    assert_eq!(code, 2);
    let (code, _, _) = output(Command::new(bin()).arg("frobnicate"));
    assert_eq!(code, 2);
}

#[test]
fn validate_reports_each_reject_and_writes_the_rejects_csv() {
    let _turn = together();
    let s = Scratch::new();
    let rejects = s.path("rejects.csv");
    let sheet = s.path("sheet.csv");
    std::fs::write(
        &sheet,
        "Partner ID,merchantId,store-id,Mall Group Label,mall_label,notes\n\
         2088000000000001,M1,S1,20230316,20230316001,ok\n\
         2.08802E+15,M2,S2,20230316,20230316001,mangled\n\
         2088000000000003,M3,S3,20230316,2023A,letters\n",
    )
    .unwrap();
    let (code, out, err) = output(
        Command::new(bin())
            .arg("validate")
            .arg(&sheet)
            .arg("--rejects")
            .arg(&rejects),
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("sheet.csv:3: column partner_id:"), "{err}");
    assert!(err.contains("sheet.csv:4: column mall_label:"), "{err}");
    assert!(out.contains("1 valid"), "{out}");
    let csv = std::fs::read_to_string(&rejects).unwrap();
    assert!(csv.starts_with("file,line,column,value,reason"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(!s.ledger().exists(), "validate writes no ledger");
}

#[test]
fn validate_with_a_ledger_says_how_the_sheet_stands_and_changes_nothing() {
    let _turn = together();
    let s = Scratch::new();
    let ledger = s.path("demo.db");
    let (code, out, err) = s.run_sample("stores.csv", &ledger);
    assert_eq!(code, 3, "{out}\n{err}");
    let before = std::fs::read(&ledger).unwrap();
    // The sheet again, one store now named to another mall (drift) and one store new.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/stores.csv");
    let text = std::fs::read_to_string(samples).unwrap();
    let changed = text.replacen(
        "STORE00001,荃灣店 1號舖,20230512,20230512002",
        "STORE00001,荃灣店 1號舖,20230512,20230512009",
        1,
    ) + "MERCHANT_PMS,,2088021966649999,SECM9999,新商戶,STORE99999,新店,20230316,20230316001\n";
    let sheet = s.path("again.csv");
    std::fs::write(&sheet, changed).unwrap();
    let (code, out, err) = output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args(["validate", "again.csv", "--json", "--ledger"])
            .arg(&ledger),
    );
    assert_eq!(code, 3, "drift is a difference to look at: {out}\n{err}");
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &said["ledger"];
    assert_eq!(l["would_send"], 1, "{out}");
    assert_eq!(l["drifted"], 1, "{out}");
    assert_eq!(l["failed_before"], 2, "{out}");
    assert_eq!(l["already_done"], 319, "{out}");
    assert!(err.contains("again.csv:2: drift"), "{err}");
    assert_eq!(
        std::fs::read(&ledger).unwrap(),
        before,
        "the ledger is not written"
    );
    // A ledger not there yet: every valid row would be sent, and none is made.
    let (code, out, err) = output(Command::new(bin()).current_dir(s.dir.path()).args([
        "validate",
        "again.csv",
        "--ledger",
        "new.db",
    ]));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains("against the ledger new.db: 323 would be sent"),
        "{out}"
    );
    assert!(!s.path("new.db").exists());
}

#[test]
fn a_file_without_the_mall_columns_is_refused_naming_what_it_found() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.path("sheet.csv");
    std::fs::write(&sheet, "partner_id,merchant_id,store_id\n1,2,3\n").unwrap();
    let (code, _, err) = output(Command::new(bin()).arg("validate").arg(&sheet));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("mall_group_label") && err.contains("mall_label"),
        "{err}"
    );
    assert!(err.contains("partner_id"), "{err}");
}

#[test]
fn the_readme_command_runs_the_samples_on_the_sandbox() {
    let _turn = together();
    let s = Scratch::new();
    let ledger = s.path("demo.db");
    let (code, out, err) = s.run_sample("stores.csv", &ledger);
    // The samples hold a few rows that the rules or the sandbox refuse, on purpose.
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("succeeded"), "{out}");
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    let ok: i64 = conn
        .query_row(
            "SELECT count(*) FROM rows WHERE state = 'succeeded' AND length(pms_label) = 31",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ok >= 300, "{ok}");
    let failed: i64 = conn
        .query_row(
            "SELECT count(*) FROM rows WHERE state = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 2, "the unknown mall and the unknown trade number");

    // status, export and reconcile read the same ledger.
    let ledger_arg = ledger.to_str().unwrap();
    let (code, out, _) =
        output(Command::new(bin()).args(["status", "--json", "--ledger", ledger_arg]));
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["failed"], 2, "{status}");
    let (code, out, _) =
        output(Command::new(bin()).args(["export", "--state", "failed", "--ledger", ledger_arg]));
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "key,save_way_type,ipay_trade_no,partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label,state,ambiguous,pms_label,result_code,result_message,attempts,source_file,source_line,updated_at,tracer_id"
    );
    assert_eq!(lines.count(), 2);
    let (code, out, _) =
        output(Command::new(bin()).args(["export", "--state", "rejected", "--ledger", ledger_arg]));
    assert_eq!(code, 0);
    assert!(out.starts_with("file,line,column,value,reason"), "{out}");
    assert!(out.lines().count() >= 5, "{out}");
}

#[test]
fn encodings_and_excel_exports_read_through_the_cli() {
    let _turn = together();
    for (file, enc, valid) in [
        ("big5_export.csv", "big5", 1),
        ("utf16le_bom.csv", "utf-16", 1),
        ("excel_bom_crlf.csv", "utf-8", 2),
    ] {
        let (code, out, err) = output(
            Command::new(bin())
                .arg("validate")
                .arg(data(file))
                .args(["--encoding", enc]),
        );
        assert_eq!(code, 0, "{file}: {out}\n{err}");
        assert!(
            out.starts_with(&format!("{valid} valid rows")),
            "{file}: {out}"
        );
    }
    let (code, _, err) = output(
        Command::new(bin())
            .arg("validate")
            .arg(data("big5_export.csv")),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("big5_export.csv:2:") && err.contains("--encoding"),
        "{err}"
    );
}

#[test]
fn a_sandbox_run_never_touches_the_real_ledger() {
    let _turn = together();
    let s = Scratch::new();
    std::fs::write(s.path("pms-onboard.toml"), "ledger = \"real.db\"\n").unwrap();
    let sheet = s.sheet("stores.csv", 1, 3);
    let (code, out, err) = output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .arg("run")
            .arg(&sheet)
            .arg("--sandbox"),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!s.path("real.db").exists());
    assert!(s.path("pms-sandbox-ledger.db").exists());
}

#[test]
fn completions_and_man_pages_follow_the_same_definitions_as_help() {
    let _turn = together();
    let (code, script, _) = output(Command::new(bin()).args(["completions", "bash"]));
    assert_eq!(code, 0);
    for flag in ["--retry-later", "--dry-run", "--sheet", "--probe"] {
        assert!(script.contains(flag), "{flag} completes");
    }
    let (code, page, _) = output(Command::new(bin()).arg("man"));
    assert_eq!(code, 0);
    assert!(
        page.starts_with(".ie") && page.contains(".SH NAME"),
        "{page}"
    );
    let s = Scratch::new();
    let dir = s.path("man");
    let (code, _, err) = output(Command::new(bin()).arg("man").arg("--dir").arg(&dir));
    assert_eq!(code, 0, "{err}");
    let run = std::fs::read_to_string(dir.join("pms-onboard-run.1")).unwrap();
    assert!(
        run.contains("retry\\-later"),
        "the run page lists the settings"
    );
}
