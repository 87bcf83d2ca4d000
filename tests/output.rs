//! What a person or a program reads: with `--log-format json` every stderr line is one JSON
//! object (rejects, drift and warnings included), and a closed stdout or stderr neither crashes
//! a command nor changes its exit code.

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};

use crate::util::{SandboxProcess, Scratch, output, together};

/// Every line of `stderr` parsed as a JSON object, or the line that is not one.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall of stderr:\n{stderr}"));
            assert!(v.is_object(), "{line}");
            v
        })
        .collect()
}

#[test]
fn with_json_logs_every_stderr_line_is_json_rejects_drift_and_warnings_included() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.path("sheet.csv");
    std::fs::write(
        &sheet,
        "partner_id,merchant_id,store_id,mall_group_label,mall_label,notes\n\
         2088000000000001,M1,S1,20230316,20230316001,x\n\
         2088000000000002,M2,S2,20230316,20230316001,y\n",
    )
    .unwrap();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--log-format", "json"]),
    );
    assert_eq!(code, 0, "{err}");
    json_lines(&err);
    // Now one store moved to another mall (drift), one row breaks a rule (a reject), and the
    // private key is readable by others (a warning).
    std::fs::write(
        &sheet,
        "partner_id,merchant_id,store_id,mall_group_label,mall_label,notes\n\
         2088000000000001,M1,S1,20230316,20230316002,x\n\
         2088000000000002,M2,S2,20230316,2023A,y\n",
    )
    .unwrap();
    let key = s.keys().join("client_private.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--log-format", "json"]),
    );
    assert_eq!(code, 3, "{err}");
    let lines = json_lines(&err);
    let kind = |k: &str| lines.iter().find(|l| l["kind"] == k);
    let reject = kind("reject").unwrap_or_else(|| panic!("a reject line: {err}"));
    assert_eq!(reject["line"], 3);
    assert_eq!(reject["column"], "mall_label");
    assert_eq!(reject["value"], "2023A");
    assert!(reject["file"].as_str().unwrap().ends_with("sheet.csv"));
    assert!(reject["reason"].as_str().unwrap().contains("digits"));
    let drift = kind("drift").unwrap_or_else(|| panic!("a drift line: {err}"));
    assert_eq!(drift["line"], 2);
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().to_lowercase().contains("chmod 600")),
        "the key warning: {err}"
    );
    // And the summary on stdout is one JSON object too.
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["counts"]["rejected"], 1);
    assert_eq!(summary["counts"]["drifted"], 1);
}

/// A pipe whose reading end is already closed: writing to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

#[test]
fn a_closed_stdout_or_stderr_changes_nothing_but_what_is_seen() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 20);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let status = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the run's own exit code");
    let done: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'succeeded'");
    assert_eq!(done, 20);
    // A command with problems keeps its exit code 3 with nobody reading.
    let bad = s.path("bad.csv");
    std::fs::write(&bad, "mall_group_label,mall_label,ipay_trade_no\n1,2A,77\n").unwrap();
    let status = Command::new(crate::util::bin())
        .arg("validate")
        .arg(&bad)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    // `export | head -1`: the reader goes away early.
    let mut child = Command::new(crate::util::bin())
        .args(["export", "--ledger"])
        .arg(s.ledger())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
