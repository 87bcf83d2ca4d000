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

/// Runs statements (several at once) on the ledger's database, as another program would.
fn execute(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    })
}

/// The folder side files of PostgreSQL ledgers go to, in the scratch folder.
fn state_dir(s: &Scratch) -> std::path::PathBuf {
    s.path("state")
}

fn run(s: &Scratch, endpoint: &str, sheet: &Path, url: &str) -> Command {
    let mut cmd = s.run_cmd_overriding(endpoint, &[sheet], &[("--ledger", Path::new(url))]);
    cmd.env_remove("PMS_ONBOARD_LEDGER")
        .env("PMS_ONBOARD_STATE_DIR", state_dir(s));
    cmd
}

/// The schema in place (as a run would make it), so that a test may watch rows from the start.
fn migrate(url: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(pms_onboard::ledger::postgres::PgLedger::open(url))
        .unwrap();
}

fn done_rows(url: &str) -> i64 {
    count(
        url,
        "SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')",
    )
}

/// Every row of the ledger done, each label the sandbox's own, no store answered twice.
fn books_balance(url: &str, sandbox: &SandboxProcess, rows: i64) {
    let stats = sandbox.stats();
    assert_eq!(stats["double_success"], 0, "{stats}");
    assert_eq!(stats["stores_circled"], rows, "{stats}");
    assert_eq!(done_rows(url), rows);
    let labels = sandbox.labels();
    for r in query(
        url,
        "SELECT key, pms_label FROM rows WHERE state = 'succeeded'",
    ) {
        let (key, label): (String, String) = (r.get(0), r.get(1));
        assert_eq!(labels[&key].as_str(), Some(label.as_str()), "{key}");
    }
    let without = count(
        url,
        "SELECT count(*) FROM rows WHERE state = 'succeeded' AND pms_label IS NULL",
    );
    assert_eq!(without, 0, "a label was lost");
}

/// The database refuses every answer from now on (as a full disk would); the claims, which
/// insert, still go through: answers arrive that cannot be committed.
fn refuse_answers(url: &str) {
    execute(
        url,
        "CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.outcome IS NOT NULL AND NEW.outcome <> 'lost' THEN
                 RAISE EXCEPTION 'could not extend file: No space left on device';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_answers BEFORE UPDATE ON attempts
             FOR EACH ROW EXECUTE FUNCTION refuse_answers();",
    );
}

/// A run of `rows` rows of a new sheet started in the background with `args`, once 10 of its
/// rows are done: the sheet and the process (its stderr piped).
fn under_way(
    s: &Scratch,
    sandbox: &SandboxProcess,
    url: &str,
    rows: usize,
    args: &[&str],
) -> (std::path::PathBuf, std::process::Child) {
    let sheet = s.sheet("stores.csv", 0, rows);
    migrate(url);
    let child = run(s, &sandbox.endpoint, &sheet, url)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || done_rows(url) >= 10),
        "no progress"
    );
    (sheet, child)
}

#[test]
fn answers_the_postgres_ledger_cannot_take_go_to_a_side_file_and_are_taken_in_by_the_next_run() {
    let _turn = together();
    let Some(server) = pg_server::server(
        "answers_the_postgres_ledger_cannot_take_go_to_a_side_file_and_are_taken_in_by_the_next_run",
    ) else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let url = server.database();
    let (sheet, child) = under_way(&s, &sandbox, &url, 40, &["--rate", "10"]);
    refuse_answers(&url);
    let first = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot take answers"), "{err}");
    assert!(err.contains("pmsLabel"), "every answer is shown too: {err}");
    let side: Vec<_> = std::fs::read_dir(state_dir(&s))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(side.len(), 1, "{side:?}");
    assert!(
        err.contains(&side[0].display().to_string()),
        "the side file is named: {err}"
    );
    let kept = std::fs::read_to_string(&side[0]).unwrap().lines().count();
    assert!(kept >= 1, "{kept}");
    let requests = sandbox.stats()["requests"].as_i64().unwrap();
    assert!(
        done_rows(&url) + kept as i64 >= requests,
        "every answer kept"
    );
    // The database takes answers again; the same command takes the side file in first, and
    // sends only what was never sent.
    execute(&url, "DROP TRIGGER refuse_answers ON attempts");
    let (code, out, err) = output(run(&s, &sandbox.endpoint, &sheet, &url).args(["--rate", "50"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains(&format!("took in {kept} answer(s)")), "{err}");
    assert!(!side[0].exists(), "the side file is removed once taken in");
    assert_eq!(sandbox.stats()["requests"], 40, "nothing was sent twice");
    books_balance(&url, &sandbox, 40);
}

#[test]
fn ledger_copy_takes_in_this_hosts_side_files_first() {
    let _turn = together();
    let Some(server) = pg_server::server("ledger_copy_takes_in_this_hosts_side_files_first") else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let url = server.database();
    let (_sheet, child) = under_way(&s, &sandbox, &url, 40, &["--rate", "10"]);
    refuse_answers(&url);
    let first = child.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(1));
    execute(&url, "DROP TRIGGER refuse_answers ON attempts");
    let kept: usize = std::fs::read_dir(state_dir(&s))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert!(kept >= 1);
    let (code, out, err) = output(
        Command::new(crate::util::bin())
            .current_dir(s.dir.path())
            .env("PMS_ONBOARD_STATE_DIR", state_dir(&s))
            .args(["ledger", "copy", &url, "back.db"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains(&format!("took in {kept} answer(s)")), "{err}");
    assert_eq!(
        std::fs::read_dir(state_dir(&s)).unwrap().count(),
        0,
        "taken in"
    );
    // The copy holds every answer the gateway gave, each with its label.
    let sent = sandbox.stats()["stores_circled"].as_i64().unwrap();
    let conn = rusqlite::Connection::open(s.path("back.db")).unwrap();
    let labelled: i64 = conn
        .query_row(
            "SELECT count(*) FROM rows WHERE state = 'succeeded' AND pms_label IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(labelled, sent);
}

#[test]
fn a_run_that_loses_its_lease_stops_at_once_and_sends_nothing_more() {
    let _turn = together();
    let Some(server) =
        pg_server::server("a_run_that_loses_its_lease_stops_at_once_and_sends_nothing_more")
    else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let url = server.database();
    // 200 rows at 10 a second: 20 s of work; a short time-out makes a lease renewed every 2.4 s.
    let args = ["--rate", "10", "--timeout", "2s", "--concurrency", "8"];
    let (sheet, child) = under_way(&s, &sandbox, &url, 200, &args);
    // The run is taken for dead (as after a long cut from the database): its lease expires.
    execute(
        &url,
        "UPDATE runs SET lease_until = now() - interval '1 second' WHERE outcome = 'running'",
    );
    let at_expiry = sandbox.stats()["requests"].as_i64().unwrap();
    let first = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{err}");
    assert!(err.contains("lost its lease"), "{err}");
    let after = sandbox.stats()["requests"].as_i64().unwrap();
    assert!(
        after - at_expiry <= 8,
        "at most the requests then in flight: {at_expiry} then {after}"
    );
    assert!(done_rows(&url) < 200, "it stopped, not ran to its end");
    // The same command finishes the job.
    let (code, out, err) = output(run(&s, &sandbox.endpoint, &sheet, &url).args(["--rate", "50"]));
    assert_eq!(code, 0, "{out}\n{err}");
    books_balance(&url, &sandbox, 200);
}

#[test]
fn a_run_rides_out_its_connections_to_the_ledger_being_cut() {
    let _turn = together();
    let Some(server) = pg_server::server("a_run_rides_out_its_connections_to_the_ledger_being_cut")
    else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let url = server.database();
    let (_sheet, child) = under_way(&s, &sandbox, &url, 60, &["--rate", "10"]);
    // Every connection of the run cut (a restarted server, a failover, a firewall's idle cut).
    execute(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let first = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{err}");
    assert!(err.contains("connected again"), "{err}");
    assert_eq!(sandbox.stats()["requests"], 60, "nothing sent twice");
    books_balance(&url, &sandbox, 60);
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
            .env("PMS_ONBOARD_STATE_DIR", state_dir(&s))
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
    // validate against it: every row already done.
    let (code, out, err) = output(
        Command::new(crate::util::bin())
            .current_dir(s.dir.path())
            .env("PMS_ONBOARD_STATE_DIR", state_dir(&s))
            .args(["validate", "--json", "--ledger", &url])
            .arg(&sheet),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["ledger"]["already_done"], 40, "{out}");
    assert_eq!(said["ledger"]["would_send"], 0, "{out}");
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
    let unexplained: Vec<String> = query(
        &url,
        "SELECT r.key || ' ambiguous ' || r.ambiguous || ' maybe_sent ' || r.maybe_sent || ': ' ||
             string_agg(a.run_id || '/' || a.id || ' ' || COALESCE(a.outcome, 'open') || ' '
                 || COALESCE(a.result_code, '') || ' ' || a.started_at, ', ' ORDER BY a.id)
         FROM rows r JOIN attempts a ON a.key = r.key
         WHERE r.state = 'already_circled' AND NOT (r.ambiguous AND r.maybe_sent)
         GROUP BY r.key, r.ambiguous, r.maybe_sent",
    )
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        unexplained.is_empty(),
        "circled, not explained: {unexplained:#?}"
    );
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

#[test]
fn answers_kept_unverified_on_postgres_verify_with_the_right_key_and_are_not_sent_again() {
    let _turn = together();
    let Some(server) = pg_server::server(
        "answers_kept_unverified_on_postgres_verify_with_the_right_key_and_are_not_sent_again",
    ) else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = s.sheet("stores.csv", 1, 40);
    let url = server.database();
    let other = Scratch::new();
    let wrong = other.keys().join("alipay_public.pem");
    let mut cmd = s.run_cmd_overriding(
        &sandbox.endpoint,
        &[&sheet],
        &[
            ("--ledger", Path::new(&url)),
            ("--alipay-public-key", &wrong),
        ],
    );
    cmd.env("PMS_ONBOARD_STATE_DIR", state_dir(&s))
        .args(["--rate", "20"]);
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("could not be verified"), "{err}");
    let kept = count(
        &url,
        "SELECT count(*) FROM rows WHERE label_unverified AND pms_label IS NOT NULL",
    );
    assert!(kept >= 5, "{kept}");
    // With the right key the kept answers verify before anything is sent: those stores are
    // not asked again.
    let (code, out, err) = output(run(&s, &sandbox.endpoint, &sheet, &url).args(["--rate", "0"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("verify now"), "{err}");
    let stats = sandbox.stats();
    assert_eq!(
        stats["by_result_code"]["STORE_IS_CIRCLED"]
            .as_u64()
            .unwrap_or(0),
        0,
        "no store asked twice: {stats}"
    );
    books_balance(&url, &sandbox, 40);
    assert_eq!(
        count(&url, "SELECT count(*) FROM rows WHERE label_unverified"),
        0
    );
}
