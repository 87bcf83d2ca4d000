//! Nothing lost, nothing sent twice, under the mistakes operators make: a wrong AlipayHK key,
//! the ledger open in another program, one ledger reached by two paths, a key pasted where a path
//! belongs, a full disk. Each is judged by the sandbox's own books: every label it issued is in
//! the ledger, and no store it answered is answered again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{SandboxProcess, Scratch, output, signal, together, wait_until};

/// Rows done in the ledger (0 while it is still being created).
pub(crate) fn done(s: &Scratch) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(s.ledger()) else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    conn.query_row(
        "SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Every label the sandbox issued, by store, and the label the ledger's row holds for it.
fn labels(
    s: &Scratch,
    sandbox: &SandboxProcess,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let issued: BTreeMap<String, String> = sandbox
        .labels()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let conn = rusqlite::Connection::open(s.ledger()).unwrap();
    let mut st = conn
        .prepare("SELECT key, pms_label FROM rows WHERE pms_label IS NOT NULL")
        .unwrap();
    let kept = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (issued, kept)
}

/// Asserts that every label the sandbox issued is the one the ledger holds.
pub(crate) fn every_label_kept(s: &Scratch, sandbox: &SandboxProcess) {
    let (issued, kept) = labels(s, sandbox);
    assert!(!issued.is_empty());
    for (key, label) in &issued {
        assert_eq!(
            kept.get(key),
            Some(label),
            "{key}: issued {label}, kept {:?}",
            kept.get(key)
        );
    }
}

pub(crate) fn circled_twice(sandbox: &SandboxProcess) -> u64 {
    sandbox.stats()["by_result_code"]["STORE_IS_CIRCLED"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn the_clients_own_public_key_as_alipays_is_refused_before_anything_is_sent() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 20);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, _, err) = output(&mut s.run_cmd_overriding(
        &sandbox.endpoint,
        &[&sheet],
        &[("--alipay-public-key", &s.keys().join("client_public.pem"))],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`alipay_public_key`") && err.contains("`private_key`"),
        "names both settings: {err}"
    );
    assert_eq!(sandbox.stats()["requests"], 0);
}

#[test]
fn with_an_unrelated_alipay_key_the_run_stops_keeping_every_label_and_the_right_key_sends_nothing_again()
 {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 40);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let other = Scratch::new();
    let (code, out, err) = output(
        s.run_cmd_overriding(
            &sandbox.endpoint,
            &[&sheet],
            &[(
                "--alipay-public-key",
                &other.keys().join("alipay_public.pem"),
            )],
        )
        .args(["--rate", "20"]),
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("could not be verified"), "{err}");
    assert!(err.contains("rotated"), "says the likely causes: {err}");
    let requests = sandbox.stats()["requests"].as_u64().unwrap();
    assert!(requests < 20, "stopped after a few: {requests}");
    // The gateway circled some stores; every label it sent is in the ledger, marked unverified.
    every_label_kept(&s, &sandbox);
    let unverified: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE label_unverified = 1");
    assert!(unverified >= 5, "{unverified}");
    let (_, out, _) = output(
        Command::new(crate::util::bin())
            .args(["export", "--ledger"])
            .arg(s.ledger()),
    );
    assert!(out.contains("NOT VERIFIED"), "export says so: {out}");
    // So does the report, with the Tracer-Id to quote to AlipayHK.
    let html = s.path("report.html");
    let (code, _, err) = output(
        Command::new(crate::util::bin())
            .args(["report", "-o"])
            .arg(&html)
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Answer not verified"),
        "the report lists them"
    );
    let tracer: String = s.ledger_query(
        "SELECT tracer_id FROM rows WHERE label_unverified = 1 ORDER BY source_line LIMIT 1",
    );
    assert!(page.contains(&tracer), "with the Tracer-Id {tracer}");

    // Run again with the key still wrong: fresh rows go first, so it stops again before any
    // row whose answer is kept is asked twice.
    let (code, _, err) = output(
        s.run_cmd_overriding(
            &sandbox.endpoint,
            &[&sheet],
            &[(
                "--alipay-public-key",
                &other.keys().join("alipay_public.pem"),
            )],
        )
        .args(["--rate", "20"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("still does not verify"), "{err}");
    let asked_twice: i64 = s.ledger_query(
        "SELECT count(*) FROM (SELECT key FROM attempts GROUP BY key HAVING count(*) > 1)",
    );
    assert_eq!(asked_twice, 0, "no store answered twice");
    every_label_kept(&s, &sandbox);

    // With the right key, the kept answers verify: their stores are not sent again.
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("verify now"), "{err}");
    assert_eq!(circled_twice(&sandbox), 0, "no store answered twice");
    assert_eq!(done(&s), 40);
    every_label_kept(&s, &sandbox);
    let unverified: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE label_unverified = 1");
    assert_eq!(unverified, 0);
}

/// Holds a write transaction on the ledger, as DB Browser for SQLite does until "Write Changes".
fn hold_write_lock(ledger: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    hold_write_lock_until(ledger, hold).0
}

/// The same, let go after `hold` or as soon as the sender sends.
pub(crate) fn hold_write_lock_until(
    ledger: &Path,
    hold: Duration,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let ledger = ledger.to_owned();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&ledger).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let until = std::time::Instant::now() + hold;
        // A sender dropped unused (`hold_write_lock`) lets the lock be held the whole time.
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = released.recv_timeout(hold) {
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        }
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked.recv().unwrap();
    (handle, release)
}

#[test]
fn a_ledger_write_locked_for_15_seconds_mid_run_loses_no_label_and_nothing_is_sent_twice() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 400);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let child = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || done(&s) >= 100));
    let holder = hold_write_lock(&s.ledger(), Duration::from_secs(15));
    // While it is held no request leaves (give the ones in flight a moment).
    std::thread::sleep(Duration::from_secs(2));
    let during = sandbox.stats()["requests"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        sandbox.stats()["requests"].as_u64().unwrap(),
        during,
        "nothing is sent while the ledger cannot commit"
    );
    holder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("locked by another program"), "{err}");
    every_label_kept(&s, &sandbox);
    assert_eq!(done(&s), 400);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("sent this run"), "{summary}");
    // The same command again: nothing that was answered is sent.
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), before);
}

#[test]
fn ctrl_c_while_the_ledger_is_locked_keeps_the_answers_in_a_side_file_taken_in_next() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 200);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "300"]);
    let child = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "0", "--concurrency", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || done(&s) >= 20));
    // Locked while 8 requests are on their way: their answers arrive and cannot be written, and
    // the lock outlasts the run's patience after Ctrl-C (5 s to drain, 5 s for the ledger).
    let holder = hold_write_lock(&s.ledger(), Duration::from_secs(25));
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let side = s.path("ledger.db.unwritten.jsonl");
    assert!(side.exists(), "{err}");
    assert!(
        err.contains("pmsLabel"),
        "each kept answer is on stderr too: {err}"
    );
    holder.join().unwrap();
    // Any command that opens the ledger takes them in first.
    let (code, _, err) = output(
        Command::new(crate::util::bin())
            .args(["status", "--ledger"])
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!side.exists(), "taken in and removed");
    every_label_kept(&s, &sandbox);
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(circled_twice(&sandbox), 0, "no store answered twice");
    assert_eq!(done(&s), 200);
}

#[test]
fn one_ledger_by_a_symlink_or_a_hard_link_is_refused_while_a_run_holds_it() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 200);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "20"]);
    let mut first = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || done(&s) >= 5));
    let alias = s.path("alias.db");
    std::os::unix::fs::symlink(s.ledger(), &alias).unwrap();
    let hard = s.path("hard.db");
    std::fs::hard_link(s.ledger(), &hard).unwrap();
    // `sub/../ledger.db`, relative to the run's folder.
    let relative: std::path::PathBuf = [".", "sub", "..", "ledger.db"].iter().collect();
    std::fs::create_dir(s.path("sub")).unwrap();
    for path in [alias.as_path(), hard.as_path(), relative.as_path()] {
        let (code, _, err) =
            output(&mut s.run_cmd_overriding(&sandbox.endpoint, &[&sheet], &[("--ledger", path)]));
        assert_eq!(code, 1, "{}: {err}", path.display());
        assert!(err.contains("in use"), "{err}");
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(circled_twice(&sandbox), 0, "no store answered twice");
}

#[test]
fn a_key_pasted_where_a_path_belongs_is_never_printed() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 3);
    let pem = std::fs::read_to_string(s.keys().join("client_private.pem")).unwrap();
    let (code, out, err) = output(
        Command::new(crate::util::bin())
            .current_dir(s.dir.path())
            .arg("run")
            .arg(&sheet)
            .args(["--endpoint", "http://127.0.0.1:9", "--client-id", "1"])
            .arg("--alipay-public-key")
            .arg(s.keys().join("alipay_public.pem"))
            .env("PMS_ONBOARD_PRIVATE_KEY", &pem),
    );
    assert_eq!(code, 1);
    assert!(err.contains("must be the path of a key file"), "{err}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !err.contains(line) && !out.contains(line),
            "a key line was printed"
        );
    }
}

#[test]
fn a_full_disk_loses_no_answered_label() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 300);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "2"]);
    // The ledger and its write-ahead log may not grow past 600 KB: the disk is "full" partway.
    let mut cmd = s.run_cmd(&sandbox.endpoint, &[&sheet]);
    cmd.args(["--rate", "0", "--concurrency", "4"]);
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 600 * 1024,
                rlim_max: 600 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, 1, "the run stops: {out}\n{err}");
    assert!(err.contains("ledger"), "{err}");
    let issued = sandbox.labels().as_object().unwrap().len();
    assert!(issued > 0 && issued < 300, "stopped partway: {issued}");
    // Room again: the next run takes in what was kept, and sends nothing already answered.
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(circled_twice(&sandbox), 0, "no store answered twice");
    every_label_kept(&s, &sandbox);
    assert_eq!(done(&s), 300);
}

#[test]
fn a_store_circled_by_a_request_that_died_with_its_run_is_drift_when_the_sheet_changed() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 60);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "400"]);
    let mut first = s
        .run_cmd(&sandbox.endpoint, &[&sheet])
        .args(["--rate", "0", "--concurrency", "6"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || done(&s) >= 6));
    // Killed with requests on their way: the gateway circles those stores anyway.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Every store now moves to another mall in the sheet.
    let text = std::fs::read_to_string(&sheet).unwrap();
    let moved = text
        .lines()
        .map(|l| match l.rsplit_once(',') {
            Some((head, mall)) if mall.starts_with("2023") => format!("{head},20230316009"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&sheet, moved + "\n").unwrap();
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 3, "drift needs a person: {out}\n{err}");
    // The stores whose request died in flight were found circled: AlipayHK holds the mall that
    // request sent, and the row says so, as drift.
    let circled: i64 = s.ledger_query(
        "SELECT count(*) FROM rows WHERE state = 'already_circled' AND ambiguous = 1",
    );
    assert!(circled >= 1, "{err}");
    let kept_old_mall: i64 = s.ledger_query(
        "SELECT count(*) FROM rows WHERE state = 'already_circled' AND mall_label <> '20230316009'",
    );
    assert_eq!(kept_old_mall, circled);
    let drift: i64 = s.ledger_query(
        "SELECT count(*) FROM drift WHERE detail LIKE '%earlier request whose outcome was unknown%'",
    );
    assert_eq!(drift, circled);
    let (code, out, _) = output(
        Command::new(crate::util::bin())
            .args(["reconcile"])
            .arg(&sheet)
            .arg("--json")
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 3);
    let counts: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        counts["drifted"].as_u64().unwrap() >= circled as u64,
        "{counts}"
    );
}

/// Issue 21 item 3: a proxy replaying genuine, correctly signed `SUCCESS` answers (each another
/// request's, byte for byte) to a tenth of the requests. No such answer is believed: every store
/// is circled once and recorded with the label the sandbox gave it, no label is held by two
/// rows, each replay is kept with its attempt as not this request's, and the row is sent again.
/// A run may stop after a few replays in a row (saying a proxy may be replaying); a rerun
/// finishes.
#[test]
fn replayed_answers_are_never_believed_and_every_store_keeps_its_own_label() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 200);
    let sandbox = SandboxProcess::start(&s.keys(), &["--fault-replay", "0.1", "--seed", "21"]);
    let mut exits = Vec::new();
    while exits.last() != Some(&0) && exits.len() < 3 {
        let (code, out, err) = output(
            s.run_cmd(&sandbox.endpoint, &[&sheet])
                .args(["--rate", "50"]),
        );
        assert!(
            code == 0 || (code == 1 && err.contains("a proxy may be replaying answers")),
            "exit {code}: {out}\n{err}"
        );
        exits.push(code);
    }
    assert_eq!(exits.last(), Some(&0), "{exits:?}");
    let stats = sandbox.stats();
    let replayed = stats["replayed"].as_u64().unwrap();
    assert!(replayed > 0, "the fault struck: {stats}");
    // The books: labels handed out (replays included) against the stores really circled.
    assert_eq!(stats["stores_circled"], 200, "{stats}");
    assert_eq!(stats["success_answers"].as_u64().unwrap(), 200 + replayed);
    assert_eq!(stats["double_success"], 0);
    assert_eq!(circled_twice(&sandbox), 0, "no genuine answer was refused");
    // Every row holds the label its own store was given, and no other.
    every_label_kept(&s, &sandbox);
    let (issued, kept) = labels(&s, &sandbox);
    assert_eq!(kept, issued);
    let shared: i64 = s.ledger_query(
        "SELECT count(*) FROM (SELECT pms_label FROM rows WHERE pms_label IS NOT NULL \
         GROUP BY pms_label HAVING count(*) > 1)",
    );
    assert_eq!(shared, 0, "a label held by two rows");
    let succeeded: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'succeeded'");
    assert_eq!(succeeded, 200);
    // Each replay is kept with its attempt, not believed.
    let refused: i64 =
        s.ledger_query("SELECT count(*) FROM attempts WHERE outcome = 'not_this_request'");
    if exits == [0] {
        assert_eq!(refused as u64, replayed);
    } else {
        assert!(
            (1..=replayed).contains(&(refused as u64)),
            "{refused} of {replayed}"
        );
    }
    // What each replay said, byte for byte, is the answer another store's request got.
    let another_stores: i64 = s.ledger_query(
        "SELECT count(*) FROM attempts r WHERE r.outcome = 'not_this_request' AND EXISTS \
         (SELECT 1 FROM attempts o WHERE o.outcome = 'success' AND o.key <> r.key \
          AND o.response_body = r.response_body)",
    );
    assert_eq!(another_stores, refused);
}
