//! The batch run, end to end: the real binary against the real sandbox over loopback, with a
//! real ledger file.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{SandboxProcess, Scratch, alone, output, signal, together, wait_until};

fn succeeded(s: &Scratch) -> i64 {
    if !s.ledger().exists() {
        return 0;
    }
    // The file exists a moment before the run has created its tables: nothing is done then.
    let conn = rusqlite::Connection::open(s.ledger()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    match conn.query_row(
        "SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')",
        [],
        |r| r.get(0),
    ) {
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => 0,
        r => r.unwrap(),
    }
}

#[test]
fn faults_and_two_kills_then_every_row_done_once() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 400);
    let sandbox = SandboxProcess::start(
        &s.keys(),
        &[
            "--seed",
            "42",
            "--fault-unknown",
            "0.04",
            "--fault-unknown-after-commit",
            "0.04",
            "--fault-http500",
            "0.04",
            "--fault-http429",
            "0.02",
            "--fault-reset",
            "0.03",
            "--fault-hang",
            "0.02",
            "--hang-ms",
            "1500",
            "--fault-bad-signature",
            "0.04",
            "--latency-ms",
            "5",
        ],
    );
    let run = |s: &Scratch| {
        let mut cmd = s.run_cmd(&sandbox.endpoint, &[&sheet]);
        cmd.args([
            "--rate",
            "0",
            "--concurrency",
            "8",
            "--timeout",
            "500ms",
            "--backoff",
            "20ms",
            "--max-attempts",
            "10",
        ]);
        cmd
    };
    // Killed twice with SIGKILL while rows are in flight.
    for target in [60, 180] {
        let mut child = run(&s)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(60), || succeeded(&s) >= target),
            "no progress"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Then run to the end.
    let mut last = (0, String::new(), String::new());
    for _ in 0..3 {
        last = output(&mut run(&s));
        if last.0 == 0 {
            break;
        }
    }
    assert_eq!(last.0, 0, "stdout: {}\nstderr: {}", last.1, last.2);
    assert_eq!(succeeded(&s), 400);
    let stats = sandbox.stats();
    assert_eq!(stats["double_success"], 0, "{stats}");
    assert_eq!(stats["stores_circled"], 400, "{stats}");
    let codes = &stats["by_result_code"];
    assert!(
        codes["UNKNOWN_EXCEPTION"].as_u64().unwrap_or(0) > 0,
        "faults were injected: {stats}"
    );
    // Every stored label is the sandbox's own.
    let labels = sandbox.labels();
    let conn = rusqlite::Connection::open(s.ledger()).unwrap();
    let mut st = conn
        .prepare("SELECT partner_id, merchant_id, store_id, pms_label FROM rows WHERE state = 'succeeded'")
        .unwrap();
    let rows: Vec<(String, String, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty());
    for (p, m, st, label) in &rows {
        let key = format!("MERCHANT_PMS|{p}|{m}|{st}");
        assert_eq!(labels[&key].as_str(), Some(label.as_str()), "{key}");
    }
    // Every already_circled row is explained by an unknown outcome and marked ambiguous.
    let unexplained: i64 = s.ledger_query(
        "SELECT count(*) FROM rows WHERE state = 'already_circled' AND (ambiguous = 0 OR maybe_sent = 0)",
    );
    assert_eq!(unexplained, 0);
    let in_flight: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'in_flight'");
    assert_eq!(in_flight, 0);
    let lost: i64 = s.ledger_query("SELECT count(*) FROM attempts WHERE outcome = 'lost'");
    let crashed: i64 = s.ledger_query("SELECT count(*) FROM runs WHERE outcome = 'crashed'");
    assert_eq!(crashed, 2, "both killed runs are recorded as crashed");
    assert!(
        lost <= 16,
        "at most the requests in flight are lost per kill: {lost}"
    );
}

#[test]
fn the_rate_is_kept_in_every_second_and_used() {
    let _turn = alone();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 360);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&sheet]).args([
        "--rate",
        "40",
        "--concurrency",
        "16",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let stats = sandbox.stats();
    let busiest = stats["max_requests_in_one_second"].as_u64().unwrap();
    assert!(busiest <= 41, "busiest second {busiest}: {stats}");
    // Achieved rate at the gateway: first to last arrival.
    let span_ms =
        stats["last_request_ms"].as_u64().unwrap() - stats["first_request_ms"].as_u64().unwrap();
    let rate = 359.0 / (span_ms as f64 / 1000.0);
    assert!(rate >= 38.0, "achieved {rate:.1}/s");
    assert!(!err.contains("held back"), "{err}");
}

#[test]
fn a_run_held_back_by_concurrency_says_so_and_what_to_set() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 40);
    // Two workers and 200 ms answers can send 10 a second; the rate allows 50.
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "200"]);
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&sheet]).args([
        "--rate",
        "50",
        "--concurrency",
        "2",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("held back by `concurrency`"), "{err}");
    // 50/s × 0.2 s, and a fifth more: 12, or a little more as answers took over 200 ms.
    let advised: usize = err
        .split("--concurrency ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no setting advised: {err}"));
    assert!((12..=20).contains(&advised), "{err}");
}

#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_completes() {
    let _turn = alone();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 300);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "100"]);
    let mut child = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "0", "--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || succeeded(&s) >= 20));
    signal(&child, libc::SIGINT);
    let asked = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    let in_flight: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'in_flight'");
    assert_eq!(in_flight, 0);
    let outcome: String = s.ledger_query("SELECT outcome FROM runs ORDER BY id DESC LIMIT 1");
    assert_eq!(outcome, "interrupted");
    assert!(succeeded(&s) < 300, "it stopped before the end");
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(succeeded(&s), 300);
    assert_eq!(sandbox.stats()["double_success"], 0);
}

#[test]
fn a_second_run_on_the_same_ledger_is_refused_and_resuming_sends_nothing() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 120);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "50"]);
    let mut first = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "0", "--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || succeeded(&s) >= 5));
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(first.wait().unwrap().code(), Some(0));

    // The same rows again, in another order and under another name: nothing is sent.
    let text = std::fs::read_to_string(&sheet).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    let renamed = s.path("renamed.csv");
    std::fs::write(&renamed, lines.join("\r\n") + "\r\n").unwrap();
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, out, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&renamed]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), before);
    assert!(out.contains("already done"), "{out}");
}

#[test]
fn rejects_permanent_failures_and_drift_are_reported_with_exit_3() {
    let _turn = together();
    let s = Scratch::new();
    let malls = s.path("malls.csv");
    std::fs::write(
        &malls,
        "mall_group_label,mall_label\n20230316,20230316001\n",
    )
    .unwrap();
    let sheet = s.path("sheet.csv");
    std::fs::write(
        &sheet,
        "partner_id,merchant_id,store_id,mall_group_label,mall_label\n\
         2088000000000001,M1,S1,20230316,20230316001\n\
         2088000000000002,M2,S2,20230316,20230316999\n\
         2088000000000003,M3,S3,20230316,2023A\n",
    )
    .unwrap();
    let sandbox = SandboxProcess::start(&s.keys(), &["--malls", malls.to_str().unwrap()]);
    let (code, out, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("sheet.csv:4: column mall_label:"), "{err}");
    let failed: String = s.ledger_query("SELECT result_code FROM rows WHERE state = 'failed'");
    assert_eq!(failed, "BUSINESS_DISTRICT_NOT_EXIST");
    // A permanent failure is not resent without --retry-failed.
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, _, _) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 3);
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), before);
    let (_, _, _) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .arg("--retry-failed"),
    );
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), before + 1);
    // The done row moved to another mall: drift, never resent.
    std::fs::write(
        &sheet,
        "partner_id,merchant_id,store_id,mall_group_label,mall_label\n\
         2088000000000001,M1,S1,20230316,20230316002\n",
    )
    .unwrap();
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, out, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("drift"), "{err}");
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), before);
}

#[test]
fn a_wrong_key_stops_the_run_after_a_few_answers() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 50);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let other = Scratch::new();
    let (code, _, err) = output(
        s.run_cmd_with_key(
            &sandbox.endpoint,
            &[&sheet],
            &other.keys().join("client_private.pem"),
        )
        .args(["--concurrency", "1", "--rate", "0"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("INVALID_SIGNATURE"), "{err}");
    let requests = sandbox.stats()["requests"].as_u64().unwrap();
    assert!(requests <= 5, "stopped early: {requests}");
    let pending: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'pending'");
    assert_eq!(pending, 50);
}

#[test]
fn the_private_key_never_appears_in_output_or_ledger() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 10);
    let sandbox = SandboxProcess::start(&s.keys(), &["--fault-http500", "0.3", "--seed", "1"]);
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .env("RUST_LOG", "trace")
            .args(["--backoff", "10ms"]),
    );
    assert!(code == 0 || code == 3, "{err}");
    let pem = std::fs::read_to_string(s.keys().join("client_private.pem")).unwrap();
    let ledger = std::fs::read(s.ledger()).unwrap();
    let ledger = String::from_utf8_lossy(&ledger);
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !out.contains(line) && !err.contains(line),
            "key line in output"
        );
        assert!(!ledger.contains(line), "key line in ledger");
    }
}

#[test]
fn ctrl_c_while_requests_hang_ends_after_the_drain_limit() {
    let _turn = alone();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 20);
    let sandbox = SandboxProcess::start(&s.keys(), &["--fault-hang", "1.0", "--hang-ms", "60000"]);
    let mut child = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "0", "--concurrency", "3", "--timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(
        Duration::from_secs(30),
        || sandbox.stats()["requests"].as_u64() >= Some(3)
    ));
    signal(&child, libc::SIGINT);
    let asked = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        asked.elapsed() < Duration::from_secs(9),
        "took {:?}",
        asked.elapsed()
    );
    let in_flight: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'in_flight'");
    assert_eq!(in_flight, 0);
    // The abandoned requests may have gone through: their rows are marked possibly sent.
    let maybe: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE maybe_sent = 1");
    assert_eq!(maybe, 3);
}

#[test]
fn json_logs_end_with_a_json_summary_for_cron() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 5);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&sheet]).args([
        "--log-format",
        "json",
        "--rate",
        "0",
    ]));
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["counts"]["succeeded"], 5);
}

/// Answers 400 ms away and `--rate 40` alone: the run keeps what the rate needs in flight (not
/// a fixed 8, which carried 18/s), reaching at least 0.9 of the rate over the run, and no
/// second above the rate at the gateway.
#[test]
fn in_flight_follows_a_far_gateway_and_keeps_the_rate() {
    let _turn = alone();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 400);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "400"]);
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&sheet]).args([
        "--rate",
        "40",
        "--log-format",
        "json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let stats = sandbox.stats();
    assert_eq!(stats["stores_circled"], 400, "{stats}");
    let most = stats["max_requests_in_one_second"].as_u64().unwrap();
    assert!(most <= 40, "never above the rate in any second: {stats}");
    // The pace at the gateway, first request to last (the sandbox's own clock).
    let span = (stats["last_request_ms"].as_u64().unwrap()
        - stats["first_request_ms"].as_u64().unwrap()) as f64
        / 1000.0;
    let achieved = (stats["requests"].as_u64().unwrap() - 1) as f64 / span;
    assert!(achieved >= 36.0, "{achieved:.1}/s of 40: {stats}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let used = &summary["concurrency"];
    // 40/s × 0.4 s = 16 at least; at most the cap (64 by default).
    let in_flight = used["most_in_flight"].as_u64().unwrap();
    assert!((17..=64).contains(&in_flight), "{summary}");
    assert_eq!(used["cap"], 64, "{summary}");
    assert!(!err.contains("held back"), "no advice needed: {err}");
}
