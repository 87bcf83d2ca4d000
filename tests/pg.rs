//! A ledger on PostgreSQL, through the real binary and a real server (tests/pg_server.rs starts
//! a throw-away one, or the tests say they are skipped): `ledger copy` of a SQLite ledger filled
//! by a real run against the sandbox plus 100,000 rows, into PostgreSQL and back, verified; and
//! the copy refused while either ledger is in use or into a ledger that holds rows; a run of all
//! 100,040 rows against the copy that came back sends nothing; the reading commands on the
//! PostgreSQL ledger itself give what they give on its SQLite original.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pms_onboard::input::{Row, SaveWay};
use pms_onboard::ledger::postgres::{PgLedger, runs};

use crate::pg_server;
use crate::util::{SandboxProcess, Scratch, bin, output, together};

fn copy(s: &Scratch, from: &str, to: &str) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .env("PMS_ONBOARD_STATE_DIR", s.path("state"))
            .args(["ledger", "copy", from, to]),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Adds `n` done rows (each with its label and its successful attempt) in one transaction.
fn add_done_rows(ledger: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(ledger).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO runs (started_at, ended_at, outcome, config) VALUES
             ('2026-01-01T00:00:00.000Z', '2026-01-01T01:00:00.000Z', 'completed', '{}')",
        [],
    )
    .unwrap();
    let run = tx.last_insert_rowid();
    {
        let mut row = tx
            .prepare(
                "INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                     merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                     pms_label, result_code, attempts, source_file, source_line, run_id, seq,
                     created_at, updated_at)
                 VALUES (?1, 'MERCHANT_PMS', '', '2088001', ?2, '商戶', ?3, '分店', '100', ?4,
                     'succeeded', ?5, 'SUCCESS', 1, 'big.csv', ?6, ?7, ?6,
                     '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            )
            .unwrap();
        let mut attempt = tx
            .prepare(
                "INSERT INTO attempts (key, run_id, attempt, started_at, latency_ms, latency_us,
                     http_status, result_code, result_status, outcome, pms_label, verified,
                     sent_mall_label)
                 VALUES (?1, ?2, 1, '2026-01-01T00:00:00.000Z', 12, 12345, 200, 'SUCCESS', 'S',
                     'success', ?3, 1, ?4)",
            )
            .unwrap();
        for i in 0..n {
            let r = Row {
                save_way: SaveWay::MerchantPms,
                ipay_trade_no: String::new(),
                partner_id: "2088001".into(),
                merchant_id: format!("BIG{}", i % 100),
                merchant_name: "商戶".into(),
                store_id: format!("B{i:07}"),
                store_name: "分店".into(),
                mall_group_label: "100".into(),
                mall_label: format!("{}", 100 + i % 7),
            };
            let label = format!("LBL{i:08}");
            row.execute(rusqlite::params![
                r.key(),
                r.merchant_id,
                r.store_id,
                r.mall_label,
                label,
                i as i64 + 2,
                run
            ])
            .unwrap();
            attempt
                .execute(rusqlite::params![r.key(), run, label, r.mall_label])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Every row of a SQLite ledger as `key, state, label, mall`, in key order.
fn sqlite_rows(ledger: &Path) -> Vec<(String, String, Option<String>, String)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.prepare("SELECT key, state, pms_label, mall_label FROM rows ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_ledger_of_100000_rows_is_copied_into_postgres_and_back_verified() {
    let _turn = together();
    let Some(server) =
        pg_server::server("a_ledger_of_100000_rows_is_copied_into_postgres_and_back_verified")
    else {
        return;
    };
    let s = Scratch::new();
    // A real run against the sandbox: labels, attempts, answers kept as they came.
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = s.sheet("stores.csv", 0, 40);
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 0, "{err}");
    add_done_rows(&s.ledger(), 100_000);
    let url = server.database();
    let ledger = s.ledger().display().to_string();

    let (code, out, err) = copy(&s, &ledger, &url);
    assert_eq!(code, 0, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("100040 rows"), "{said}");
    assert!(said.contains("100040 labels"), "{said}");
    assert!(said.contains("verified"), "{said}");

    // What PostgreSQL holds, read with its own SQL.
    let rt = runtime();
    let (rows, labels, attempts) = rt.block_on(async {
        let pg = PgLedger::open(&url).await.unwrap();
        let one = |sql: &'static str| {
            let c = pg.client();
            async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        (
            one("SELECT count(*) FROM rows").await,
            one("SELECT count(DISTINCT pms_label) FROM rows WHERE state = 'succeeded'").await,
            one("SELECT count(*) FROM attempts WHERE outcome = 'success'").await,
        )
    });
    assert_eq!((rows, labels, attempts), (100_040, 100_040, 100_040));

    // Into PostgreSQL again: refused, it holds rows now.
    let (code, _, err) = copy(&s, &ledger, &url);
    assert_ne!(code, 0);
    assert!(err.contains("already holds runs or rows"), "{err}");

    // And back into a new SQLite file: the same rows, states and labels.
    let back = s.path("back.db");
    let (code, out, err) = copy(&s, &url, &back.display().to_string());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sqlite_rows(&s.ledger()), sqlite_rows(&back));

    // status, export and reconcile read the copy as the original.
    for command in [&["status"][..], &["export"], &["reconcile", "stores.csv"]] {
        let read = |l: &Path| {
            output(
                Command::new(bin())
                    .current_dir(s.dir.path())
                    .env("PMS_ONBOARD_STATE_DIR", s.path("state"))
                    .args(command)
                    .arg("--ledger")
                    .arg(l),
            )
        };
        let (a, b) = (read(&s.ledger()), read(&back));
        let back = back.display().to_string();
        assert_eq!(a.0, b.0, "{command:?}: {} / {}", a.2, b.2);
        assert!(a.1.len() > 10, "{command:?} says something: {}{}", a.1, a.2);
        assert_eq!(
            a.1.replace(&ledger, "L"),
            b.1.replace(&back, "L"),
            "{command:?}"
        );
    }
    // A run of every sheet against the copy that came back sends nothing: all of it is done.
    let big = s.path("big.csv");
    let mut text = String::from(
        "partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label\n",
    );
    for i in 0..100_000 {
        text.push_str(&format!(
            "2088001,BIG{},商戶,B{i:07},分店,100,{}\n",
            i % 100,
            100 + i % 7
        ));
    }
    std::fs::write(&big, text).unwrap();
    let before = sandbox.stats()["requests"].as_u64().unwrap();
    let (code, out, err) = output(&mut s.run_cmd_overriding(
        &sandbox.endpoint,
        &[&sheet, &big],
        &[("--ledger", back.as_path())],
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        sandbox.stats()["requests"].as_u64().unwrap(),
        before,
        "nothing sent: {out}"
    );
}

#[test]
fn a_copy_is_refused_while_either_ledger_is_in_use() {
    let _turn = together();
    let Some(server) = pg_server::server("a_copy_is_refused_while_either_ledger_is_in_use") else {
        return;
    };
    let s = Scratch::new();
    drop(pms_onboard::ledger::open_unlocked(&s.ledger()).unwrap());
    add_done_rows(&s.ledger(), 10);
    let ledger = s.ledger().display().to_string();
    let url = server.database();

    // A run holds the SQLite ledger.
    let lock = pms_onboard::ledger::LedgerLock::acquire(&s.ledger()).unwrap();
    let (code, _, err) = copy(&s, &ledger, &url);
    assert_ne!(code, 0);
    assert!(err.contains("unused"), "{err}");
    drop(lock);

    // A run on another host holds a live lease on the PostgreSQL ledger.
    let rt = runtime();
    let mut pg = rt.block_on(PgLedger::open(&url)).unwrap();
    let run = rt
        .block_on(runs::begin_run(
            pg.client_mut(),
            "{}",
            &[],
            Duration::from_secs(600),
            "host-b",
        ))
        .unwrap();
    let back = s.path("back.db").display().to_string();
    let (code, _, err) = copy(&s, &url, &back);
    assert_ne!(code, 0);
    assert!(err.contains("in use") && err.contains("host-b"), "{err}");
    assert!(!Path::new(&back).exists() || sqlite_rows(Path::new(&back)).is_empty());
    let (code, _, err) = copy(&s, &ledger, &url);
    assert_ne!(code, 0);
    assert!(err.contains("in use"), "{err}");
    // Once that run has ended, the copy goes.
    rt.block_on(runs::finish_run(
        pg.client_mut(),
        run,
        pms_onboard::model::RunEnd::Completed,
        &Default::default(),
        None,
    ))
    .unwrap();
    let (code, out, err) = copy(&s, &url, &back);
    assert_eq!(code, 0, "{out}{err}");
    let password = "postgresql://u:s3cret@127.0.0.1:1/none";
    let (code, _, err) = copy(&s, &ledger, password);
    assert_ne!(code, 0);
    assert!(!err.contains("s3cret"), "a password is never shown: {err}");
}

#[test]
fn reconcile_export_report_status_and_doctor_read_a_postgres_ledger_as_its_sqlite_original() {
    let _turn = together();
    let Some(server) = pg_server::server(
        "reconcile_export_report_status_and_doctor_read_a_postgres_ledger_as_its_sqlite_original",
    ) else {
        return;
    };
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = s.sheet("stores.csv", 0, 30);
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 0, "{err}");
    // The master sheet now has 10 stores more (pending) and one changed mall (drift).
    let master = s.sheet("master.csv", 0, 40);
    let text = std::fs::read_to_string(&master).unwrap();
    let changed = text.replacen("20230316001", "20230316009", 1);
    std::fs::write(&master, changed).unwrap();
    let url = server.database();
    let ledger = s.ledger().display().to_string();
    let (code, out, err) = copy(&s, &ledger, &url);
    assert_eq!(code, 0, "{out}{err}");

    let read = |args: &[&str], l: &str| {
        output(
            Command::new(bin())
                .current_dir(s.dir.path())
                .env("PMS_ONBOARD_STATE_DIR", s.path("state"))
                .args(args)
                .arg("--ledger")
                .arg(l),
        )
    };
    for args in [
        &["reconcile", "master.csv"][..],
        &["reconcile", "master.csv", "--json"],
        &["export"],
        &["export", "--format", "json"],
        &["status", "--json"],
    ] {
        let (a, b) = (read(args, &ledger), read(args, &url));
        assert_eq!(a.0, b.0, "{args:?}: {} / {}", a.2, b.2);
        assert!(!a.1.is_empty(), "{args:?} says something");
        assert_eq!(a.1, b.1, "{args:?}");
    }
    // export --annotate: the same annotated sheet.
    let (a, b) = (s.path("a.csv"), s.path("b.csv"));
    for (l, out) in [(&ledger, &a), (&url, &b)] {
        let (code, _, err) = read(
            &[
                "export",
                "--annotate",
                "master.csv",
                "-o",
                &out.display().to_string(),
            ],
            l,
        );
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // report: the same HTML but for the ledger's name
    let (a, b) = (s.path("a.html"), s.path("b.html"));
    for (l, out) in [(&ledger, &a), (&url, &b)] {
        let (code, _, err) = read(&["report", "-o", &out.display().to_string()], l);
        assert_eq!(code, 0, "{err}");
    }
    // (but for the time it was written, in its footer)
    let html = |p: &Path, l: &str| -> String {
        let page = std::fs::read_to_string(p).unwrap().replace(l, "L");
        match (page.find("<footer>"), page.find("</footer>")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &page[..a], &page[b..]),
            _ => page,
        }
    };
    assert!(html(&a, &ledger) == html(&b, &url), "report differs");
    // status names the ledger by its URL.
    let (code, out, _) = read(&["status"], &url);
    assert_eq!(code, 0);
    assert!(
        out.contains("30 rows") && out.contains("127.0.0.1"),
        "{out}"
    );
    // doctor checks the connection, the schema, the clock and the state.
    let (_, out, err) = output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .env("PMS_ONBOARD_STATE_DIR", s.path("state"))
            .args(["doctor", "--ledger", &url]),
    );
    let said = format!("{out}{err}");
    for check in [
        "PostgreSQL 1",
        "at version 1",
        "clock",
        "no run holds a lease",
        "30 rows",
        "tls ",
    ] {
        assert!(said.contains(check), "doctor says {check:?}: {said}");
    }
    // A run against the copy sends nothing: its rows are done.
    let requests = sandbox.stats()["requests"].clone();
    let (code, out, err) = output(&mut s.run_cmd_overriding(
        &sandbox.endpoint,
        &[&sheet],
        &[("--ledger", Path::new(&url))],
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sandbox.stats()["requests"], requests);
}

#[test]
fn sslmode_means_what_it_means_to_psql_against_a_server_with_tls() {
    let _turn = together();
    let Some(server) =
        pg_server::server("sslmode_means_what_it_means_to_psql_against_a_server_with_tls")
    else {
        return;
    };
    let Some(ca) = &server.ca else {
        // A server of PMS_ONBOARD_TEST_POSTGRES, or no openssl to make its certificate; not in
        // CI, where the server is the tests' own and openssl is at hand.
        assert!(
            std::env::var("PMS_ONBOARD_TEST_POSTGRES").is_ok()
                || std::env::var("PMS_ONBOARD_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "the test server was started without TLS"
        );
        return;
    };
    let s = Scratch::new();
    let url = server.database();
    let status = |url: &str| {
        output(
            Command::new(bin())
                .current_dir(s.dir.path())
                .env("PMS_ONBOARD_STATE_DIR", s.path("state"))
                .args(["status", "--ledger", url]),
        )
    };
    let ca = ca.display().to_string();
    let localhost = url.replace("127.0.0.1", "localhost");
    // Encrypted without a check (a distribution's self-signed certificate works as with psql):
    // the default, and `require`, which fails unless TLS was used.
    for works in [
        url.clone(),
        format!("{url}?sslmode=require"),
        format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
        // verify-ca checks the chain, not the name: the certificate names 127.0.0.1 only.
        format!("{localhost}?sslmode=verify-ca&sslrootcert={ca}"),
    ] {
        let (code, out, err) = status(&works);
        assert_eq!(code, 0, "{works}: {out}{err}");
        assert!(out.contains("0 rows"), "{works}: {out}");
    }
    for (refused, why) in [
        // Not signed by a root of this system.
        (format!("{url}?sslmode=verify-full"), "sslrootcert=PATH"),
        // Signed by the root, but for another name.
        (
            format!("{localhost}?sslmode=verify-full&sslrootcert={ca}"),
            "sslrootcert=PATH",
        ),
        (format!("{url}?sslmode=verify"), "not one of disable"),
    ] {
        let (code, out, err) = status(&refused);
        assert_eq!(code, 1, "{refused}: {out}{err}");
        assert!(err.contains(why), "{refused}: {err}");
        assert!(
            !err.contains("log.file"),
            "one message, not the verifier's log: {err}"
        );
    }
}
