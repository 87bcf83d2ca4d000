//! Text from outside is inert wherever it lands (issue 18 item 2): a formula in a store name or
//! in a gateway's message comes out of every CSV the tool writes with a leading `'`, the
//! operator's own cells in an annotated copy stay byte for byte; and no raw control character
//! (ESC among them) reaches a terminal from the sheet, the gateway or the ledger.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{SandboxProcess, Scratch, bin, output, together};

const HEADER: &str =
    "partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label";
/// A store name that is inert text in the workbook it came from, and a live formula in a CSV
/// that does not neutralise it.
const NAME: &str = "=HYPERLINK(\"http://evil.example/\",\"x\")";
/// What a hostile gateway or a damaged ledger could hold: cursor up, erase line, a fake verdict.
const ESCAPES: &str = "\u{1b}[1A\u{1b}[2K  ok \u{9b}2J\u{202e}";

/// A sheet of three stores, the first named with a formula, run against the sandbox; then the
/// second row's stored answer replaced by `message` (as a gateway could word it) and its code
/// by one holding escape sequences.
fn ledger_with(s: &Scratch, message: &str) -> (SandboxProcess, PathBuf, String) {
    let sheet = s.path("s.csv");
    let body = format!(
        "{HEADER}\n\
         2088000000000001,M1,\"{}\",S1,@SUM(1),20230316,20230316001\n\
         2088000000000002,M2,-5,S2,+85212345678,20230316,20230316001\n\
         2088000000000003,M3,Name 3,S3,Store 3,20230316,20230316001\n",
        NAME.replace('"', "\"\"")
    );
    std::fs::write(&sheet, &body).unwrap();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 0, "{err}");
    let conn = rusqlite::Connection::open(s.ledger()).unwrap();
    let changed = conn
        .execute(
            "UPDATE rows SET result_message = ?1, result_code = ?2 WHERE store_id = 'S2'",
            [message, &format!("{ESCAPES}SUCCESS")],
        )
        .unwrap();
    assert_eq!(changed, 1);
    (sandbox, sheet, body)
}

fn pms(s: &Scratch, args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args(args)
            .arg("--ledger")
            .arg(s.ledger())
            .env_remove("RUST_LOG"),
    )
}

fn csv_rows(path: &Path) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

/// The cell of `column` (by the header) in the row whose `key_column` ends with `key`.
fn cell(rows: &[csv::StringRecord], key_column: &str, key: &str, column: &str) -> String {
    let at = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let row = rows[1..]
        .iter()
        .find(|r| r[at(key_column)].ends_with(key))
        .unwrap_or_else(|| panic!("a row for {key}: {rows:?}"));
    row[at(column)].to_owned()
}

#[test]
fn formulas_from_the_sheet_or_the_gateway_are_text_in_every_csv_written() {
    let _turn = together();
    let s = Scratch::new();
    let (_sandbox, _sheet, body) = ledger_with(&s, "=cmd|' /C calc'!A0");
    let (code, _, err) = pms(&s, &["export", "-o", "export.csv"]);
    assert_eq!(code, 0, "{err}");
    let export = csv_rows(&s.path("export.csv"));
    assert_eq!(
        cell(&export, "store_id", "S1", "merchant_name"),
        format!("'{NAME}")
    );
    assert_eq!(cell(&export, "store_id", "S1", "store_name"), "'@SUM(1)");
    assert_eq!(
        cell(&export, "store_id", "S2", "result_message"),
        "'=cmd|' /C calc'!A0"
    );
    // A plain number is a number, not a formula: it stays as it is.
    assert_eq!(cell(&export, "store_id", "S2", "merchant_name"), "-5");
    assert_eq!(
        cell(&export, "store_id", "S2", "store_name"),
        "+85212345678"
    );
    // No raw control character in the file either.
    let bytes = std::fs::read(s.path("export.csv")).unwrap();
    assert!(
        !bytes.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        cell(&export, "store_id", "S2", "result_code").starts_with("\\u{1b}[1A"),
        "{export:?}"
    );

    // The annotated copy: the operator's own bytes untouched, the appended message inert.
    let (code, _, err) = pms(
        &s,
        &["export", "--annotate", "s.csv", "-o", "annotated.csv"],
    );
    assert_eq!(code, 0, "{err}");
    let annotated = std::fs::read_to_string(s.path("annotated.csv")).unwrap();
    for (original, line) in body.lines().zip(annotated.lines()) {
        assert!(line.starts_with(original), "{line:?} keeps {original:?}");
    }
    let rows = csv_rows(&s.path("annotated.csv"));
    assert_eq!(
        cell(&rows, "store_id", "S2", "message"),
        "'=cmd|' /C calc'!A0"
    );
    assert_eq!(
        cell(&rows, "store_id", "S1", "merchant_name"),
        NAME,
        "the operator's cell"
    );

    // reconcile -o lists the rows that are not done: move two of them to another mall (drift)
    // and reject one with a formula in the cell the reason names.
    let changed = body
        .replace(
            "S1,@SUM(1),20230316,20230316001",
            "S1,@SUM(1),20230316,20230316002",
        )
        .replace(
            "S3,Store 3,20230316,20230316001",
            "S3,Store 3,20230316,=1+2",
        );
    std::fs::write(s.path("changed.csv"), changed).unwrap();
    let (code, _, err) = pms(&s, &["reconcile", "changed.csv", "-o", "diff.csv"]);
    assert_eq!(code, 3, "{err}");
    let diff = std::fs::read_to_string(s.path("diff.csv")).unwrap();
    let rows = csv_rows(&s.path("diff.csv"));
    assert!(rows.len() >= 3, "{diff}");
    for r in &rows[1..] {
        for c in r {
            assert!(
                !c.starts_with(['=', '+', '@', '\t', '\r']),
                "{c:?} in {diff}"
            );
        }
    }
    // validate --rejects: the value that broke the rule is shown, inert.
    let (code, _, err) = output(Command::new(bin()).current_dir(s.dir.path()).args([
        "validate",
        "changed.csv",
        "--rejects",
        "rejects.csv",
    ]));
    assert_eq!(code, 3, "{err}");
    let rejects = csv_rows(&s.path("rejects.csv"));
    assert_eq!(cell(&rejects, "column", "mall_label", "value"), "'=1+2");
}

/// No raw control character in what a command wrote: `ESC`, C1 (`U+009B`, CSI) or a bidi
/// override.
fn assert_inert(what: &str, text: &str) {
    let raw = text.chars().find(|c| {
        (c.is_control() && !matches!(c, '\n' | '\t')) || ('\u{202a}'..='\u{202e}').contains(c)
    });
    assert!(raw.is_none(), "{what}: a raw {raw:?} in {text:?}");
}

#[test]
fn status_and_export_show_escape_sequences_from_the_ledger_as_text() {
    let _turn = together();
    let s = Scratch::new();
    let (_sandbox, _, _) = ledger_with(&s, ESCAPES);
    let (code, out, err) = pms(&s, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert_inert("status", &out);
    assert_inert("status", &err);
    assert!(
        out.contains("\\u{1b}[1A\\u{1b}[2K  ok \\u{9b}2J\\u{202e}SUCCESS"),
        "{out}"
    );
    // JSON keeps the exact text, escaped.
    let (code, out, err) = pms(&s, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_inert("status --json", &out);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(json.to_string().contains("\\u001b[1A"), "{json}");
    assert!(
        serde_json::to_string(&json["by_result_code"])
            .unwrap()
            .contains("ok \u{9b}2J"),
        "{json}"
    );
    for format in ["csv", "json"] {
        let (code, out, err) = pms(&s, &["export", "--format", format]);
        assert_eq!(code, 0, "{err}");
        assert_inert(&format!("export --format {format}"), &out);
        assert_inert(&format!("export --format {format}"), &err);
    }
    let (_, out, _) = pms(&s, &["export", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s2 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["store_id"] == "S2")
        .unwrap();
    assert_eq!(s2["result_message"], ESCAPES, "the exact text");
}

/// A gateway that answers every request, at once and unsigned, with `message` as its
/// resultMessage and resultCode (the JSON escapes what JSON must; the client decodes it).
fn hostile_gateway(message: &'static str) -> String {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = serde_json::json!({"result": {
                        "resultCode": message, "resultStatus": "F", "resultMessage": message}})
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         response-time: 2026-01-01T00:00:00+08:00\r\n\
                         signature: algorithm=RSA256,keyVersion=1,signature=AAAA\r\n\
                         content-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if reader.get_mut().write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    endpoint
}

#[test]
fn a_gateway_sending_escape_sequences_reaches_no_terminal_raw() {
    let _turn = together();
    let s = Scratch::new();
    let endpoint = hostile_gateway(ESCAPES);
    let (_, out, err) = output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args(["doctor", "--probe", "--endpoint", &endpoint])
            .args(["--client-id", crate::util::CLIENT_ID])
            .arg("--private-key")
            .arg(s.keys().join("client_private.pem"))
            .arg("--alipay-public-key")
            .arg(s.keys().join("alipay_public.pem"))
            .arg("--ledger")
            .arg(s.ledger())
            .env_remove("RUST_LOG"),
    );
    assert_inert("doctor --probe", &out);
    assert_inert("doctor --probe", &err);
    assert!(
        format!("{out}{err}").contains("\\u{1b}[1A"),
        "doctor shows the gateway's message, escaped: {out}{err}"
    );
    let sheet = s.sheet("s.csv", 1, 3);
    let (_, out, err) = output(&mut s.run_cmd(&endpoint, &[&sheet]));
    assert_inert("run", &out);
    assert_inert("run", &err);
    let (_, out, err) = pms(&s, &["status"]);
    assert_inert("status after the run", &out);
    assert_inert("status after the run", &err);
}

#[test]
fn input_errors_echo_header_cells_escaped() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.path("bad.csv");
    std::fs::write(
        &sheet,
        "partner_id,\u{1b}[1A\u{1b}[2Kmerchant_id,store_id\n2088000000000001,M1,S1\n",
    )
    .unwrap();
    for json in [false, true] {
        let mut cmd = Command::new(bin());
        cmd.arg("validate").arg(&sheet);
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let (code, out, err) = output(&mut cmd);
        assert_ne!(code, 0, "{err}");
        assert_inert("validate", &out);
        assert_inert("validate", &err);
    }
}
