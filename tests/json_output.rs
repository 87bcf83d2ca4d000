//! One convention for machine-readable output (issue 20 item 4): the global `--json` makes every
//! command's result one JSON object on stdout (an export's rows, to stdout, are its result: a
//! JSON array); `--log-format json` makes every stderr line a JSON object and implies `--json`.
//! `status --json` and `reconcile --json` work as before, the flag anywhere on the line.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{CLIENT_ID, SandboxProcess, Scratch, bin, output, together};

/// stdout as exactly one JSON value (one line), or a failure showing both streams.
fn json(what: &str, (code, out, err): (i32, String, String), expected: i32) -> serde_json::Value {
    assert_eq!(code, expected, "{what}: {out}\n{err}");
    assert_eq!(out.lines().count(), 1, "{what}: one line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}\n{err}"))
}

fn pms(dir: &Path, args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(dir)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("PMS_ONBOARD_LEDGER"),
    )
}

#[test]
fn every_command_gives_its_result_as_one_json_object_with_json() {
    let _turn = together();
    let s = Scratch::new();
    let dir = s.dir.path();
    let sheet = s.sheet("s.csv", 1, 4);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let run = json(
        "run",
        output(s.run_cmd(&sandbox.endpoint, &[&sheet]).arg("--json")),
        0,
    );
    assert_eq!(run["counts"]["succeeded"], 4, "{run}");
    let dry = json(
        "run --dry-run",
        output(
            s.run_cmd(&sandbox.endpoint, &[&sheet])
                .args(["--dry-run", "--json"]),
        ),
        0,
    );
    assert_eq!(dry["dry_run"]["already_done"], 4, "{dry}");
    let ledger = s.ledger();
    let ledger = ledger.to_str().unwrap();

    let v = json("validate", pms(dir, &["--json", "validate", "s.csv"]), 0);
    assert_eq!(v["valid"], 4, "{v}");
    // The old spelling, after the command, and the global one before it give the same.
    let after = json(
        "status --json",
        pms(dir, &["status", "--json", "--ledger", ledger]),
        0,
    );
    let before = json(
        "--json status",
        pms(dir, &["--json", "status", "--ledger", ledger]),
        0,
    );
    assert_eq!(after["succeeded"], 4, "{after}");
    assert_eq!(after, before);
    let r = json(
        "reconcile",
        pms(dir, &["reconcile", "s.csv", "--json", "--ledger", ledger]),
        0,
    );
    assert_eq!(r["done"], 4, "{r}");

    // export: the rows on stdout are its result, as JSON; to a file, what was written.
    let (code, out, err) = pms(dir, &["export", "--json", "--ledger", ledger]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(4), "{out}");
    let e = json(
        "export -o",
        pms(
            dir,
            &[
                "export", "--json", "-o", "e.csv", "--format", "csv", "--ledger", ledger,
            ],
        ),
        0,
    );
    assert_eq!(e["rows"], 4, "{e}");
    assert!(
        std::fs::read_to_string(s.path("e.csv"))
            .unwrap()
            .starts_with("key,")
    );
    let a = json(
        "export --annotate",
        pms(
            dir,
            &[
                "export",
                "--json",
                "--annotate",
                "s.csv",
                "-o",
                "a.csv",
                "--ledger",
                ledger,
            ],
        ),
        0,
    );
    assert!(a["output"].as_str().unwrap().ends_with("a.csv"), "{a}");
    let (code, _, err) = pms(
        dir,
        &[
            "export",
            "--json",
            "--annotate",
            "s.csv",
            "--ledger",
            ledger,
        ],
    );
    assert_eq!(code, 1, "annotating to stdout is not JSON: {err}");
    assert!(err.contains("-o"), "{err}");

    let rep = json(
        "report",
        pms(
            dir,
            &["report", "--json", "-o", "r.html", "--ledger", ledger],
        ),
        0,
    );
    assert!(rep["report"].as_str().unwrap().ends_with("r.html"), "{rep}");
    let up = json(
        "ledger upgrade",
        pms(dir, &["--json", "ledger", "upgrade", "--ledger", ledger]),
        0,
    );
    assert!(up["upgrade"].is_string(), "{up}");

    let keys = json("keygen", pms(dir, &["keygen", "more-keys", "--json"]), 0);
    assert_eq!(keys["written"].as_array().map(Vec::len), Some(4), "{keys}");
    std::fs::write(s.path("body.json"), "{}").unwrap();
    let private = s.keys().join("client_private.pem");
    let signed = json(
        "sign",
        pms(
            dir,
            &[
                "sign",
                "body.json",
                "--json",
                "--private-key",
                private.to_str().unwrap(),
                "--client-id",
                CLIENT_ID,
                "--request-time",
                "2026-11-26T18:30:00.123+08:00",
            ],
        ),
        0,
    );
    assert!(
        signed["content"].as_str().unwrap().ends_with("+08:00.{}"),
        "the exact content: {signed}"
    );
    assert!(
        signed["headers"]["signature"]
            .as_str()
            .unwrap()
            .starts_with("algorithm=RSA256")
    );
    let man = json("man --dir", pms(dir, &["man", "--dir", "man", "--json"]), 0);
    assert!(man["man_pages"].is_string(), "{man}");
    // A document is not a result: refused as a usage error, saying what to do.
    for args in [&["completions", "bash", "--json"][..], &["man", "--json"]] {
        let (code, out, err) = pms(dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty() && err.contains("leave out --json"), "{err}");
    }
    // doctor takes the flag (its checks as JSON are the doctor's own).
    let (code, _, err) = output(
        Command::new(bin())
            .current_dir(dir)
            .args(["doctor", "--json", "--endpoint", &sandbox.endpoint])
            .args(["--client-id", CLIENT_ID, "--ledger", ledger])
            .arg("--private-key")
            .arg(&private)
            .arg("--alipay-public-key")
            .arg(s.keys().join("alipay_public.pem")),
    );
    assert_ne!(code, 2, "doctor --json is no usage error: {err}");
}

#[test]
fn the_sandbox_says_where_it_listens_as_json() {
    let _turn = together();
    let s = Scratch::new();
    let mut child = Command::new(bin())
        .args([
            "sandbox",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--client-id",
            CLIENT_ID,
        ])
        .arg("--keys")
        .arg(s.keys())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let said: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        said["listening"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{said}"
    );
    assert_eq!(said["client_id"], CLIENT_ID);
}

#[test]
fn a_warning_from_library_code_has_the_printers_shape() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.path("s.csv");
    std::fs::write(
        &sheet,
        "partner_id,merchant_id,store_id,mall_group_label,mall_label,\u{1b}[2Knotes\n\
         2088000000000001,M1,S1,20230316,20230316001,x\n",
    )
    .unwrap();
    let (code, _, err) = output(Command::new(bin()).arg("validate").arg(&sheet));
    assert_eq!(code, 0, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("unknown columns ignored"))
        .unwrap_or_else(|| panic!("the warning: {err}"));
    assert!(line.starts_with("warning: "), "{line}");
    assert!(
        line.contains("\\u{1b}[2Knotes") && !err.contains('\u{1b}'),
        "{err}"
    );
    let (code, _, err) = output(
        Command::new(bin())
            .args(["validate", "--log-format", "json"])
            .arg(&sheet),
    );
    assert_eq!(code, 0, "{err}");
    let warning: serde_json::Value = err
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown columns"))
        })
        .unwrap_or_else(|| panic!("the warning: {err}"));
    assert_eq!(warning["level"], "warn", "{warning}");
    assert!(warning["timestamp"].is_string(), "{warning}");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("\u{1b}[2Knotes"),
        "the exact text: {warning}"
    );
}
