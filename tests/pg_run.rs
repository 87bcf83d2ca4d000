//! `run` against a PostgreSQL ledger, through the real binary, the real sandbox as its own
//! process and a real server (tests/pg_server.rs starts a throw-away one, or the tests say they
//! are skipped): every row sent once and shown done, a second run sending nothing; two runs at
//! once on overlapping sheets sharing the client id's rate, one killed with `kill -9` and
//! started again, every store circled once and its rows taken over after its lease.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::pg_server;
use crate::util::{SandboxProcess, Scratch, alone, output, together, wait_until};

fn query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.query(sql, &[]).await.unwrap()
    })
}

fn count(url: &str, sql: &str) -> i64 {
    query(url, sql)[0].get(0)
}

fn run(s: &Scratch, endpoint: &str, sheet: &Path, url: &str) -> Command {
    let mut cmd = s.run_cmd_overriding(endpoint, &[sheet], &[("--ledger", Path::new(url))]);
    cmd.env_remove("PMS_ONBOARD_LEDGER");
    cmd
}

#[test]
fn a_run_against_a_postgres_ledger_sends_every_row_once_and_a_second_run_nothing() {
    let _turn = together();
    let Some(server) = pg_server::server(
        "a_run_against_a_postgres_ledger_sends_every_row_once_and_a_second_run_nothing",
    ) else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = s.sheet("stores.csv", 0, 40);
    let url = server.database();
    let (code, out, err) = output(run(&s, &sandbox.endpoint, &sheet, &url).args(["--rate", "50"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let stats = sandbox.stats();
    assert_eq!(stats["requests"], 40, "{stats}");
    assert_eq!(stats["stores_circled"], 40, "{stats}");
    assert_eq!(stats["double_success"], 0, "{stats}");
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM rows WHERE state = 'succeeded' AND pms_label IS NOT NULL"
        ),
        40
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM runs WHERE outcome = 'completed'"
        ),
        1
    );
    // Every stored label is the sandbox's own.
    let labels = sandbox.labels();
    for r in query(&url, "SELECT key, pms_label FROM rows") {
        let (key, label): (String, String) = (r.get(0), r.get(1));
        assert_eq!(labels[&key].as_str(), Some(label.as_str()), "{key}");
    }
    // `status` on the ledger shows them done.
    let (code, out, err) = output(
        Command::new(crate::util::bin())
            .current_dir(s.dir.path())
            .args(["status", "--json", "--ledger", &url]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");
    // A dry run on it: nothing would be sent.
    let (code, out, err) =
        output(run(&s, &sandbox.endpoint, &sheet, &url).args(["--dry-run", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["dry_run"]["would_send"], 0, "{out}");
    assert_eq!(said["dry_run"]["already_done"], 40, "{out}");
    // A second run sends nothing.
    let (code, out, err) = output(&mut run(&s, &sandbox.endpoint, &sheet, &url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(sandbox.stats()["requests"], 40);
    // The ledger knows its gateway: a run against another one is refused, nothing sent there.
    let other = SandboxProcess::start(&s.keys(), &[]);
    let (code, out, err) = output(&mut run(&s, &other.endpoint, &sheet, &url));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("belongs to another gateway"), "{err}");
    assert!(!err.contains("password"), "{err}");
    assert_eq!(other.stats()["requests"], 0);
}

#[test]
#[allow(clippy::print_stderr)]
fn two_runs_at_once_one_killed_share_the_rate_and_circle_every_store_once() {
    let _turn = alone();
    let Some(server) =
        pg_server::server("two_runs_at_once_one_killed_share_the_rate_and_circle_every_store_once")
    else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "100"]);
    // 400 rows each, sharing 200 stores: 600 stores.
    let a = s.sheet("a.csv", 0, 400);
    let b = s.sheet("b.csv", 200, 400);
    let url = server.database();
    // The schema first (as the runs would), so that the test may count rows from the start.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(pms_onboard::ledger::postgres::PgLedger::open(&url))
        .unwrap();
    let args = ["--rate", "20", "--timeout", "2s", "--concurrency", "8"];
    let spawn = |sheet: &Path| {
        run(&s, &sandbox.endpoint, sheet, &url)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn(&a);
    let second = spawn(&b);
    let done = || {
        count(
            &url,
            "SELECT count(*) FROM rows WHERE state <> 'pending' AND state <> 'in_flight'",
        )
    };
    assert!(
        wait_until(Duration::from_secs(120), || done() >= 150),
        "no progress"
    );
    // kill -9 with requests in flight, then started again at once.
    let pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    let held = count(
        &url,
        &format!(
            "SELECT count(*) FROM rows r JOIN runs u ON u.id = r.claim_run
             WHERE r.state = 'in_flight' AND u.holder LIKE '% pid {pid}'"
        ),
    );
    let again = spawn(&a);
    let (again, second) = (
        again.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for o in [&again, &second] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let stats = sandbox.stats();
    assert_eq!(stats["double_success"], 0, "{stats}");
    assert_eq!(stats["stores_circled"], 600, "{stats}");
    let busiest = stats["max_requests_in_one_second"].as_u64().unwrap();
    assert!(
        busiest <= 20,
        "busiest second at the gateway {busiest}: {stats}"
    );
    assert!(SandboxProcess::busiest_second(&stats) <= 20, "{stats}");
    // Every store is done, each once; every label is the sandbox's own.
    assert_eq!(count(&url, "SELECT count(*) FROM rows"), 600);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')"
        ),
        600
    );
    let unexplained = count(
        &url,
        "SELECT count(*) FROM rows WHERE state = 'already_circled' AND NOT (ambiguous AND maybe_sent)",
    );
    assert_eq!(unexplained, 0);
    let labels = sandbox.labels();
    for r in query(
        &url,
        "SELECT key, pms_label FROM rows WHERE state = 'succeeded'",
    ) {
        let (key, label): (String, String) = (r.get(0), r.get(1));
        assert_eq!(labels[&key].as_str(), Some(label.as_str()), "{key}");
    }
    // The dead run's rows were taken over after its lease: its run is crashed, none of its
    // claims is left, its lost attempts are at most what it had in flight.
    assert_eq!(
        count(&url, "SELECT count(*) FROM runs WHERE outcome = 'crashed'"),
        1
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM rows WHERE state = 'in_flight'"),
        0
    );
    let lost = count(&url, "SELECT count(*) FROM attempts WHERE outcome = 'lost'");
    assert!(
        lost <= 8,
        "at most the requests in flight are lost: {lost} (held {held})"
    );
    eprintln!(
        "two runs: {} requests, busiest second {busiest}, {held} row(s) held by the killed run, \
         {lost} attempt(s) lost",
        stats["requests"]
    );
}
