//! What the ledger knows a store and a gateway by, judged by the sandbox's books: ids that only
//! join into the same text are two stores; a ledger of an earlier version whose keys could stand
//! for two stores is not upgraded by guessing; a ledger of another gateway is refused before
//! anything is sent or written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{CLIENT_ID, SandboxProcess, Scratch, bin, output, together};

const HEADER: &str =
    "partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label";

/// A sheet of `(merchant_id, store_id, mall_label)` rows of partner 2088001, mall group 100.
fn sheet(s: &Scratch, name: &str, rows: &[(&str, &str, &str)]) -> PathBuf {
    let path = s.path(name);
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{HEADER}").unwrap();
    for (merchant, store, mall) in rows {
        writeln!(f, "2088001,{merchant},商戶,{store},分店,100,{mall}").unwrap();
    }
    path
}

fn requests(sandbox: &SandboxProcess) -> u64 {
    sandbox.stats()["requests"].as_u64().unwrap()
}

/// `(merchant_id, store_id) → (state, pms_label, mall_label, key)` of every row of the ledger.
fn ledger_rows(ledger: &Path) -> Vec<(String, String, String, String, String, String)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.prepare(
        "SELECT merchant_id, store_id, state, COALESCE(pms_label, ''), mall_label, key
         FROM rows ORDER BY key",
    )
    .unwrap()
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// What each attempt sent: `(key, mall_label)`.
fn sent(ledger: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.prepare("SELECT key, sent_mall_label FROM attempts ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn ids_that_join_into_the_same_text_are_two_stores_each_in_its_own_mall() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    // Joined with `|`, both rows read 2088001|M1|S|2: the bug of issue 21, one request for both.
    let stores = sheet(
        &s,
        "stores.csv",
        &[("M1", "S|2", "101"), ("M1|S", "2", "102")],
    );
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&stores])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let stats = sandbox.stats();
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["stores_circled"], 2, "{stats}");
    assert_eq!(stats["double_success"], 0, "{stats}");
    // Each store holds the label the sandbox gave it, and was sent with its own mall.
    let issued = sandbox.labels();
    let rows = ledger_rows(&s.ledger());
    assert_eq!(rows.len(), 2);
    for (merchant, store, state, label, mall, key) in &rows {
        assert_eq!(state, "succeeded", "{key}");
        assert_eq!(issued[key.as_str()], label.as_str(), "{key}");
        let want = if (merchant.as_str(), store.as_str()) == ("M1", "S|2") {
            "101"
        } else {
            "102"
        };
        assert_eq!(mall, want, "{key}");
    }
    assert_ne!(rows[0].3, rows[1].3, "two labels");
    let sent = sent(&s.ledger());
    assert_eq!(sent.len(), 2);
    for (key, mall) in sent {
        let row = rows.iter().find(|r| r.5 == key).unwrap();
        assert_eq!(mall, row.4, "{key} was sent with its own mall");
    }
    // The export's key is the unambiguous encoding; running again sends nothing.
    let (_, csv, _) = output(
        Command::new(bin())
            .args(["export", "--ledger"])
            .arg(s.ledger()),
    );
    assert!(csv.contains("MERCHANT_PMS|2088001|M1|S%7C2,"), "{csv}");
    assert!(csv.contains("MERCHANT_PMS|2088001|M1%7CS|2,"), "{csv}");
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&stores])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(requests(&sandbox), 2);
}

/// A ledger as version 5 of the tool left it (the SQL of its first five migrations), holding one
/// store `M1` + `S|2` it marked succeeded, keyed as that version keyed it.
fn ledger_of_version_5(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in &dirs[..5] {
        let sql = std::fs::read_to_string(dir.join("up.sql")).unwrap();
        conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
            .unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    conn.execute_batch(
        "INSERT INTO runs (id, started_at, ended_at, outcome, config)
             VALUES (1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z', 'completed', '{}');
         INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
             merchant_name, store_id, store_name, mall_group_label, mall_label, state, pms_label,
             attempts, source_file, source_line, run_id, seq, created_at, updated_at)
         VALUES ('MERCHANT_PMS|2088001|M1|S|2', 'MERCHANT_PMS', '', '2088001', 'M1', '商戶',
             'S|2', '分店', '100', '101', 'succeeded', '2026000000000000000000000000007', 1,
             'stores.csv', 2, 1, 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:30.000Z');
         INSERT INTO attempts (key, run_id, attempt, started_at, outcome, pms_label, verified)
         VALUES ('MERCHANT_PMS|2088001|M1|S|2', 1, 1, '2026-01-01T00:00:00.000Z', 'success',
             '2026000000000000000000000000007', 1);",
    )
    .unwrap();
}

#[test]
fn an_old_key_that_could_name_two_stores_stops_every_command_until_the_operator_accepts_it() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    ledger_of_version_5(&s.ledger());
    let before = std::fs::read(s.ledger()).unwrap();
    let stores = sheet(
        &s,
        "stores.csv",
        &[("M1", "S|2", "101"), ("M1|S", "2", "102")],
    );
    let status = || {
        output(
            Command::new(bin())
                .args(["status", "--ledger"])
                .arg(s.ledger()),
        )
    };
    for (code, out, err) in [
        status(),
        output(
            s.run_cmd(&sandbox.endpoint, &[&stores])
                .args(["--rate", "0"]),
        ),
    ] {
        assert_eq!(code, 1, "{out}\n{err}");
        for part in [
            "was written by an earlier version",
            "stores.csv:2: partner_id 2088001, merchant_id \"M1\", store_id \"S|2\": succeeded, \
             pmsLabel 2026000000000000000000000000007",
            "pms-onboard ledger upgrade --accept-stored-ids --ledger",
            "Nothing was changed",
        ] {
            assert!(err.contains(part), "{part}\n{err}");
        }
    }
    assert_eq!(requests(&sandbox), 0, "nothing sent");
    assert_eq!(
        std::fs::read(s.ledger()).unwrap(),
        before,
        "nothing written"
    );

    // The operator checked with AlipayHK and accepts the stored ids.
    let (code, out, err) = output(
        Command::new(bin())
            .args(["ledger", "upgrade", "--accept-stored-ids", "--ledger"])
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("MERCHANT_PMS|2088001|M1|S%7C2"),
        "names the key it is now: {err}"
    );
    assert!(err.contains("upgraded from version 5"), "{err}");
    // The stored store is done; the other, that only joined into its text, is sent.
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&stores])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let stats = sandbox.stats();
    assert_eq!(
        (stats["requests"].as_u64(), stats["stores_circled"].as_u64()),
        (Some(1), Some(1))
    );
    let issued = sandbox.labels();
    assert_eq!(issued.as_object().unwrap().len(), 1);
    let label = issued["MERCHANT_PMS|2088001|M1%7CS|2"].as_str().unwrap();
    let rows = ledger_rows(&s.ledger());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].5, "MERCHANT_PMS|2088001|M1%7CS|2");
    assert_eq!(
        (rows[0].2.as_str(), rows[0].3.as_str(), rows[0].4.as_str()),
        ("succeeded", label, "102")
    );
    assert_eq!(rows[1].5, "MERCHANT_PMS|2088001|M1|S%7C2");
    assert_eq!(
        (rows[1].2.as_str(), rows[1].3.as_str()),
        ("succeeded", "2026000000000000000000000000007")
    );
}

/// `reconcile` or `export --annotate` of `sheet` with settings that name `endpoint` and the
/// client id.
fn nightly(s: &Scratch, endpoint: &str, command: &[&str], sheet: &Path) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args(command)
            .arg(sheet)
            .arg("--ledger")
            .arg(s.ledger())
            .env("PMS_ONBOARD_ENDPOINT", endpoint)
            .env("PMS_ONBOARD_CLIENT_ID", CLIENT_ID),
    )
}

#[test]
fn a_ledger_of_another_gateway_is_refused_by_run_reconcile_and_annotate_unchanged() {
    let _turn = together();
    let s = Scratch::new();
    let uat = SandboxProcess::start(&s.keys(), &[]);
    let stores = s.sheet("stores.csv", 1, 5);
    let (code, out, err) = output(s.run_cmd(&uat.endpoint, &[&stores]).args(["--rate", "0"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(requests(&uat), 5);
    // The same gateway, spelled otherwise, is the same gateway.
    let same = format!("{}/", uat.endpoint.replace("http://", "HTTP://"));
    let (code, out, err) = nightly(&s, &same, &["reconcile"], &stores);
    assert_eq!(code, 0, "{out}\n{err}");

    let production = SandboxProcess::start(&s.keys(), &[]);
    let before = std::fs::read(s.ledger()).unwrap();
    let annotated = s.path("annotated.csv");
    let refusals = [
        output(
            s.run_cmd(&production.endpoint, &[&stores])
                .args(["--rate", "0"]),
        ),
        output(s.run_cmd(&production.endpoint, &[&stores]).arg("--dry-run")),
        nightly(&s, &production.endpoint, &["reconcile"], &stores),
        nightly(
            &s,
            &production.endpoint,
            &["export", "-o", annotated.to_str().unwrap(), "--annotate"],
            &stores,
        ),
        // Another client id at the same endpoint is another gateway too.
        output(
            Command::new(bin())
                .current_dir(s.dir.path())
                .arg("run")
                .arg(&stores)
                .args([
                    "--endpoint",
                    &uat.endpoint,
                    "--client-id",
                    "2102000000000000099",
                ])
                .arg("--private-key")
                .arg(s.keys().join("client_private.pem"))
                .arg("--alipay-public-key")
                .arg(s.keys().join("alipay_public.pem"))
                .arg("--ledger")
                .arg(s.ledger()),
        ),
    ];
    let port = |e: &str| {
        e.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    for (i, (code, out, err)) in refusals.iter().enumerate() {
        assert_eq!(*code, 1, "{i}: {out}\n{err}");
        assert!(err.contains("belongs to another gateway"), "{i}: {err}");
        assert!(
            err.contains(&format!(
                "http://127.0.0.1:{} with client id {CLIENT_ID}",
                port(&uat.endpoint)
            )),
            "{i} names the ledger's gateway: {err}"
        );
        assert!(err.contains("--ledger"), "{i} says the way out: {err}");
        assert!(err.contains("Nothing was sent or written"), "{i}: {err}");
    }
    assert!(refusals[0].2.contains(&format!(
        "these settings name http://127.0.0.1:{}",
        port(&production.endpoint)
    )));
    assert_eq!(requests(&production), 0, "nothing sent");
    assert_eq!(requests(&uat), 5, "nothing sent");
    assert!(!annotated.exists(), "nothing written");
    assert_eq!(
        std::fs::read(s.ledger()).unwrap(),
        before,
        "the ledger unchanged, byte for byte"
    );

    // The way out: a ledger of its own.
    let own = s.path("production.db");
    let (code, out, err) = output(
        s.run_cmd_overriding(&production.endpoint, &[&stores], &[("--ledger", &own)])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(requests(&production), 5);
}

#[test]
fn the_built_in_sandbox_is_one_gateway_whatever_its_port_and_no_other() {
    let _turn = together();
    let s = Scratch::new();
    let ledger = s.path("sandbox.db");
    for _ in 0..2 {
        let (code, out, err) = s.run_sample("stores.csv", &ledger);
        assert_eq!(code, 3, "{out}\n{err}");
        assert!(!err.contains("another gateway"), "{err}");
    }
    // A real gateway's run on the sandbox's ledger is refused: its rows were only simulated.
    let gateway = SandboxProcess::start(&s.keys(), &[]);
    let stores = s.sheet("stores.csv", 1, 3);
    let (code, _, err) =
        output(&mut s.run_cmd_overriding(&gateway.endpoint, &[&stores], &[("--ledger", &ledger)]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the built-in sandbox of `run --sandbox`"),
        "{err}"
    );
    assert_eq!(requests(&gateway), 0);
}
