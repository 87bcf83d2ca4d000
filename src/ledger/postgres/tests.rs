//! The protocol against a real PostgreSQL server (tests/pg_server.rs starts one, or the tests
//! say they are skipped): migrations once, the claim, the fence, the lease and the sweep, the
//! shared rate.

use std::time::{Duration, Instant};

use super::*;
use crate::api::outcome::{Attempt, Outcome};
use crate::input::{Row, SourceRow};
use crate::ledger::RowId;
use crate::ledger::store::tests::row;
use crate::ledger::store::{Answered, Verdict};
use crate::model::{RowUpdate, RunCounts, RunEnd, Sighting, State};

/// A fresh database on the test server, and a runtime to drive it; `None`: skipped.
fn database(test: &str) -> Option<(String, tokio::runtime::Runtime)> {
    let url = pg_server::server(test)?.database();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Some((url, rt))
}

fn src(r: &Row, line: u64) -> SourceRow {
    SourceRow {
        file: "s.csv".into(),
        line,
        row: r.clone(),
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn row_id(l: &PgLedger, r: &Row) -> i64 {
    l.client()
        .query_one("SELECT id FROM rows WHERE key = $1", &[&r.key()])
        .await
        .unwrap()
        .get(0)
}

async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(l: &PgLedger, sql: &str) -> T {
    l.client().query_one(sql, &[]).await.unwrap().get(0)
}

fn success(run_id: i64, attempt_id: i64, row_id: i64, r: &Row, label: &str) -> Answered {
    Answered {
        run_id,
        attempt_id,
        row_id: RowId(row_id),
        row: r.clone(),
        attempt: Attempt {
            outcome: Outcome::Success {
                pms_label: label.into(),
            },
            pms_label: Some(label.into()),
            verified: Some(true),
            latency: Duration::from_micros(420),
            ..Attempt::default()
        },
        update: RowUpdate {
            state: State::Succeeded,
            failure: None,
            ambiguous: false,
            maybe_sent: false,
            pms_label: Some(label.into()),
            label_unverified: false,
            answer_unverified: Some(false),
            result_code: Some("SUCCESS".into()),
            result_message: None,
            tracer_id: None,
        },
    }
}

#[test]
fn two_hosts_starting_together_migrate_once() {
    let Some((url, rt)) = database("two_hosts_starting_together_migrate_once") else {
        return;
    };
    rt.block_on(async {
        let (a, b) = tokio::join!(PgLedger::open(&url), PgLedger::open(&url));
        let (a, _b) = (a.unwrap(), b.unwrap());
        let n: i64 = one(&a, "SELECT count(*) FROM pms_schema").await;
        assert_eq!(n, migrate::latest());
        // And a third, later, finds nothing to do.
        let mut c = connect::connect(&url).await.unwrap();
        assert!(migrate::upgrade(&mut c).await.unwrap().is_empty());
    });
}

#[test]
fn a_row_is_claimed_by_exactly_one_run() {
    let Some((url, rt)) = database("a_row_is_claimed_by_exactly_one_run") else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let mut b = PgLedger::open(&url).await.unwrap();
        let run_a = runs::begin_run(a.client_mut(), "{}", &[], LEASE, "a")
            .await
            .unwrap();
        let run_b = runs::begin_run(b.client_mut(), "{}", &[], LEASE, "b")
            .await
            .unwrap();
        // 50 stores in both sheets; both runs claim every one at once.
        let stores: Vec<Row> = (0..50).map(|i| row(&format!("S{i}"), "11")).collect();
        for (i, r) in stores.iter().enumerate() {
            let line = src(r, i as u64 + 2);
            let s = runs::ingest(a.client(), run_a, i as u64, &line, false);
            assert_eq!(s.await.unwrap(), Sighting::Send);
            let s = runs::ingest(b.client(), run_b, i as u64, &line, false);
            assert_eq!(s.await.unwrap(), Sighting::Send);
        }
        let mut won = (0, 0);
        for r in &stores {
            let id = row_id(&a, r).await;
            let (x, y) = tokio::join!(
                claim::claim(a.client(), run_a, id),
                claim::claim(b.client(), run_b, id)
            );
            match (x.unwrap(), y.unwrap()) {
                (Some(_), None) => won.0 += 1,
                (None, Some(_)) => won.1 += 1,
                other => panic!("{} claimed by both or neither: {other:?}", r.key()),
            }
        }
        assert_eq!(won.0 + won.1, 50);
        let attempts: i64 = one(&a, "SELECT count(*) FROM attempts").await;
        assert_eq!(attempts, 50, "one attempt per row");
        // Beginning a third run touches neither live run nor their rows.
        let mut c = PgLedger::open(&url).await.unwrap();
        runs::begin_run(c.client_mut(), "{}", &[], LEASE, "c")
            .await
            .unwrap();
        let in_flight: i64 = one(&a, "SELECT count(*) FROM rows WHERE state = 'in_flight'").await;
        assert_eq!(in_flight, 50);
        let running: i64 = one(&a, "SELECT count(*) FROM runs WHERE outcome = 'running'").await;
        assert_eq!(running, 3);
        // A run ending gives back only its own rows.
        runs::finish_run(
            a.client_mut(),
            run_a,
            RunEnd::Interrupted,
            &RunCounts::default(),
            None,
        )
        .await
        .unwrap();
        let in_flight: i64 = one(&a, "SELECT count(*) FROM rows WHERE state = 'in_flight'").await;
        assert_eq!(in_flight, won.1 as i64);
    });
}

#[test]
fn an_expired_run_is_swept_and_its_late_answer_is_fenced_out() {
    let Some((url, rt)) = database("an_expired_run_is_swept_and_its_late_answer_is_fenced_out")
    else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let mut b = PgLedger::open(&url).await.unwrap();
        let short = Duration::from_secs(2);
        let r = row("S1", "11");
        let (run_a, id, at_a) = one_claimed(&mut a, &r, short, "a").await;
        // Host A goes silent; its lease runs out on the server's clock.
        tokio::time::sleep(short + Duration::from_millis(200)).await;
        assert!(
            !lease::renew(a.client(), run_a, short).await.unwrap(),
            "too late to renew"
        );
        assert_eq!(
            claim::claim(a.client(), run_a, id).await.unwrap(),
            None,
            "an expired run claims nothing"
        );
        let run_b = runs::begin_run(b.client_mut(), "{}", &[], LEASE, "b")
            .await
            .unwrap();
        let (state, maybe_sent, first): (String, bool, Option<i64>) = {
            let r = b
                .client()
                .query_one(
                    "SELECT state, maybe_sent, first_maybe_sent_attempt FROM rows",
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(
            (state.as_str(), maybe_sent, first),
            ("pending", true, Some(at_a))
        );
        let lost: String = one(&b, "SELECT outcome FROM attempts").await;
        assert_eq!(lost, "lost");
        let crashed: String = one(&b, "SELECT outcome FROM runs WHERE id = 1").await;
        assert_eq!(crashed, "crashed");
        // B takes the row over; A's answer arrives late: kept with its attempt, the row is B's.
        let claimed = claim::claim(b.client(), run_b, id).await.unwrap().unwrap();
        // The claim says the row may have been sent (B's feeder may have read it before).
        assert!(claimed.maybe_sent);
        let at_b = claimed.attempt;
        let late = success(run_a, at_a, id, &r, "2026");
        let (verdict, fence) = claim::record(a.client_mut(), &late).await.unwrap();
        assert_eq!((verdict, fence), (Verdict::Kept, Fence::Lost));
        let state: String = one(&b, "SELECT state FROM rows").await;
        assert_eq!(state, "in_flight", "still B's");
        let label: String = one(&b, "SELECT pms_label FROM rows").await;
        assert_eq!(label, "2026", "the label is kept on the row");
        let kept: String = one(&b, "SELECT outcome FROM attempts WHERE id = 1").await;
        assert_eq!(kept, "success");
        // B's own answer is written: it holds the claim.
        let mut own = success(run_b, at_b, id, &r, "2026");
        own.attempt.outcome = Outcome::AlreadyCircled;
        own.update.state = State::AlreadyCircled;
        own.update.pms_label = None;
        let (_, fence) = claim::record(b.client_mut(), &own).await.unwrap();
        assert_eq!(fence, Fence::Held);
        let state: String = one(&b, "SELECT state FROM rows").await;
        assert_eq!(state, "already_circled");
    });
}

#[test]
fn one_host_sweeps_at_a_time() {
    let Some((url, rt)) = database("one_host_sweeps_at_a_time") else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let mut b = PgLedger::open(&url).await.unwrap();
        let tx = b.client_mut().transaction().await.unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::SWEEP])
            .await
            .unwrap();
        assert_eq!(lease::sweep(a.client_mut()).await.unwrap(), None);
        tx.rollback().await.unwrap();
        assert!(lease::sweep(a.client_mut()).await.unwrap().is_some());
    });
}

#[test]
fn the_rate_is_one_for_the_client_id_on_the_servers_clock() {
    let Some((url, rt)) = database("the_rate_is_one_for_the_client_id_on_the_servers_clock") else {
        return;
    };
    rt.block_on(async {
        let a = PgLedger::open(&url).await.unwrap();
        let b = PgLedger::open(&url).await.unwrap();
        let interval = Duration::from_millis(50);
        let start: i64 = one(
            &a,
            "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint",
        )
        .await;
        // Two hosts take 20 slots each, at once.
        async fn take(l: &PgLedger, interval: Duration) -> Vec<Duration> {
            let mut waits = Vec::new();
            for _ in 0..20 {
                waits.push(rate::take_slot(l.client(), "C1", interval).await.unwrap());
            }
            waits
        }
        let (wa, wb) = tokio::join!(take(&a, interval), take(&b, interval));
        let end: i64 = one(
            &a,
            "SELECT (extract(epoch FROM tat) * 1e6)::bigint FROM rate",
        )
        .await;
        assert!(
            end - start >= 40 * 50_000,
            "40 slots 50 ms apart span 2 s on the server's clock: {} µs",
            end - start
        );
        let longest = wa.iter().chain(&wb).max().unwrap();
        assert!(
            *longest >= Duration::from_millis(1800),
            "the last slot waits: {longest:?}"
        );
        // Another client id has its own rate.
        let other = rate::take_slot(a.client(), "C2", interval).await.unwrap();
        assert!(other < Duration::from_millis(50), "{other:?}");
        // A throttle seen by one host slows every host.
        rate::throttled(a.client(), "C2", Duration::from_secs(5))
            .await
            .unwrap();
        let t = Instant::now();
        let wait = rate::take_slot(b.client(), "C2", interval).await.unwrap();
        assert!(
            wait + t.elapsed() >= Duration::from_millis(4500),
            "{wait:?}"
        );
    });
}

#[test]
fn a_label_another_store_holds_is_not_believed_on_postgres_either() {
    let Some((url, rt)) =
        database("a_label_another_store_holds_is_not_believed_on_postgres_either")
    else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let run = runs::begin_run(a.client_mut(), "{}", &[], LEASE, "a")
            .await
            .unwrap();
        let (r1, r2) = (row("S1", "11"), row("S2", "11"));
        runs::ingest(a.client(), run, 1, &src(&r1, 2), false)
            .await
            .unwrap();
        runs::ingest(a.client(), run, 2, &src(&r2, 3), false)
            .await
            .unwrap();
        let (id1, id2) = (row_id(&a, &r1).await, row_id(&a, &r2).await);
        let at1 = claim::claim(a.client(), run, id1)
            .await
            .unwrap()
            .unwrap()
            .attempt;
        let at2 = claim::claim(a.client(), run, id2)
            .await
            .unwrap()
            .unwrap()
            .attempt;
        claim::record(a.client_mut(), &success(run, at1, id1, &r1, "2026"))
            .await
            .unwrap();
        let (verdict, _) = claim::record(a.client_mut(), &success(run, at2, id2, &r2, "2026"))
            .await
            .unwrap();
        assert_eq!(verdict, Verdict::LabelHeldBy { key: r1.key() });
        let state: String = one(&a, "SELECT state FROM rows WHERE store_id = 'S2'").await;
        assert_eq!(state, "pending");
        // And a mark that never left is undone.
        let again = claim::claim(a.client(), run, id2)
            .await
            .unwrap()
            .unwrap()
            .attempt;
        claim::unsend(a.client(), again, id2).await.unwrap();
        let (state, attempts): (String, i64) = {
            let r = a
                .client()
                .query_one("SELECT state, attempts FROM rows WHERE id = $1", &[&id2])
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((state.as_str(), attempts), ("pending", 1));
    });
}

#[test]
fn a_kept_lease_outlives_its_length_and_a_stopped_one_is_swept() {
    let Some((url, rt)) = database("a_kept_lease_outlives_its_length_and_a_stopped_one_is_swept")
    else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let lease = Duration::from_secs(3);
        let granted = Instant::now();
        let run = runs::begin_run(a.client_mut(), "{}", &[], lease, "a")
            .await
            .unwrap();
        let r = row("S1", "11");
        runs::ingest(a.client(), run, 1, &src(&r, 2), false)
            .await
            .unwrap();
        let id = row_id(&a, &r).await;
        claim::claim(a.client(), run, id).await.unwrap().unwrap();
        let keeper = LeaseKeeper::start(&url, run, lease, Duration::from_millis(300), granted)
            .await
            .unwrap();
        // Two lease lengths later, renewed all along: still live, the row still the run's.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!keeper.lost());
        assert!(keeper.clock().may_send(Duration::from_millis(100)));
        let mut b = PgLedger::open(&url).await.unwrap();
        let swept = lease::sweep(b.client_mut()).await.unwrap().unwrap();
        assert_eq!(swept, Swept::default(), "a live run is not swept");
        // The host is cut off (renewals stop): its own clock runs out, then the server's.
        let last = keeper.clock();
        keeper.stop();
        tokio::time::sleep(lease + Duration::from_millis(300)).await;
        assert!(
            last.expired(),
            "the host knows its lease could have expired"
        );
        assert!(!last.may_send(Duration::ZERO));
        let swept = lease::sweep(b.client_mut()).await.unwrap().unwrap();
        assert_eq!((swept.runs, swept.rows), (vec![run], 1));
        assert!(!lease::renew(a.client(), run, lease).await.unwrap());
    });
}

#[test]
fn the_feeder_reads_its_runs_pending_rows_in_input_order() {
    let Some((url, rt)) = database("the_feeder_reads_its_runs_pending_rows_in_input_order") else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let run = runs::begin_run(a.client_mut(), "{}", &[], LEASE, "a")
            .await
            .unwrap();
        let stores: Vec<Row> = (0..5).map(|i| row(&format!("S{i}"), "11")).collect();
        for (i, r) in stores.iter().enumerate() {
            runs::ingest(a.client(), run, i as u64 + 1, &src(r, i as u64 + 2), false)
                .await
                .unwrap();
        }
        let page = feed::pending_page(a.client(), run, 0, 3, false)
            .await
            .unwrap();
        let seqs: Vec<u64> = page.iter().map(|p| p.0).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(page[0].2.store_id, "S0");
        // A claimed row is not fed again; the next page goes on after the last seq.
        claim::claim(a.client(), run, page[1].1.0)
            .await
            .unwrap()
            .unwrap();
        let all = feed::pending_page(a.client(), run, 0, 10, false)
            .await
            .unwrap();
        let seqs: Vec<u64> = all.iter().map(|p| p.0).collect();
        assert_eq!(seqs, [1, 3, 4, 5]);
        let rest = feed::pending_page(a.client(), run, 3, 10, false)
            .await
            .unwrap();
        assert_eq!(rest.len(), 2);
        assert!(
            feed::pending_page(a.client(), run, 0, 10, true)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

/// A gateway in memory: the first request for a store circles it (SUCCESS, a label of its
/// own), any later one answers STORE_IS_CIRCLED. Counts every request per store.
#[derive(Default)]
struct Books {
    labels: std::collections::HashMap<String, String>,
    requests: std::collections::HashMap<String, u32>,
}

fn answer(
    books: &std::sync::Mutex<Books>,
    run_id: i64,
    at: i64,
    id: RowId,
    r: &Row,
    maybe_sent: bool,
) -> Answered {
    let mut b = books.lock().unwrap();
    let key = r.key();
    *b.requests.entry(key.clone()).or_default() += 1;
    let mut a = success(run_id, at, id.0, r, "");
    if b.labels.contains_key(&key) {
        a.attempt.outcome = Outcome::AlreadyCircled;
        a.attempt.pms_label = None;
        a.update.state = State::AlreadyCircled;
        a.update.pms_label = None;
        a.update.result_code = Some("STORE_IS_CIRCLED".into());
        // As the worker decides: circled after an attempt whose outcome was unknown.
        a.update.ambiguous = maybe_sent;
        a.update.maybe_sent = maybe_sent;
    } else {
        let label = format!("L{}", b.labels.len() + 1);
        b.labels.insert(key, label.clone());
        a.attempt.outcome = Outcome::Success {
            pms_label: label.clone(),
        };
        a.attempt.pms_label = Some(label.clone());
        a.update.pms_label = Some(label);
    }
    a
}

/// One run of `stores` through `store`: ingest, then send every pending row (one worker), at the
/// shared rate; stops without recording after `die_after` answers (the host dies with a row in
/// flight). Returns the run id.
async fn one_run(
    store: &mut PgStore,
    stores: &[Row],
    books: &std::sync::Mutex<Books>,
    die_after: Option<usize>,
) -> i64 {
    let run = store.begin_run("{}", &[], "test").await.unwrap();
    let rows: Vec<(u64, SourceRow)> = stores
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, src(r, i as u64 + 2)))
        .collect();
    store.ingest(run, &rows, false).await.unwrap();
    let mut answered = 0;
    for pass in 0..3 {
        let mut after = 0;
        loop {
            let page = store.pending_page(run, after, 64, false).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, id, row) in page {
                let wait = store
                    .slot_wait("C1", 400, crate::ledger::run_store::SHARED_WINDOW)
                    .await
                    .unwrap();
                tokio::time::sleep(wait).await;
                let Some(claimed) = store.mark_in_flight(run, id).await.unwrap() else {
                    continue;
                };
                // Judged by the row as the claim found it (swept back by now, perhaps).
                let (at, maybe_sent) = (claimed.attempt, row.maybe_sent || claimed.maybe_sent);
                if die_after == Some(answered) {
                    // The request reached the gateway; the host died before its answer came.
                    let _ = answer(books, run, at, id, &row.row(), maybe_sent);
                    store.abandon();
                    return run;
                }
                let a = answer(books, run, at, id, &row.row(), maybe_sent);
                store.record(&a).await.unwrap();
                answered += 1;
            }
        }
        // Rows another run held in flight are looked at again at the end.
        if pass < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    store
        .finish_run(run, RunEnd::Completed, &RunCounts::default(), None)
        .await
        .unwrap();
    run
}

#[test]
fn two_runs_at_once_on_overlapping_sheets_one_killed_circle_every_store_once() {
    let Some((url, rt)) =
        database("two_runs_at_once_on_overlapping_sheets_one_killed_circle_every_store_once")
    else {
        return;
    };
    rt.block_on(async {
        let terms = LeaseTerms {
            lease: Duration::from_secs(3),
            renew_every: Duration::from_millis(300),
            longest_request: Duration::from_millis(500),
        };
        // Sheets of 400 rows sharing 200 stores.
        let all: Vec<Row> = (0..600).map(|i| row(&format!("S{i:04}"), "11")).collect();
        let (sheet_a, sheet_b) = (&all[..400], &all[200..]);
        let books = std::sync::Mutex::new(Books::default());
        let mut a = PgStore::open(&url, terms).await.unwrap();
        let mut b = PgStore::open(&url, terms).await.unwrap();
        // A dies with a row in flight after 150 answers; B goes on meanwhile.
        let (run_a, run_b) = tokio::join!(
            one_run(&mut a, sheet_a, &books, Some(150)),
            one_run(&mut b, sheet_b, &books, None)
        );
        assert_ne!(run_a, run_b);
        // A starts again once its lease could have expired: the dead run's row is swept.
        tokio::time::sleep(terms.lease + Duration::from_millis(500)).await;
        let mut again = PgStore::open(&url, terms).await.unwrap();
        one_run(&mut again, sheet_a, &books, None).await;

        let l = again.ledger();
        let done: i64 = one(
            l,
            "SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')",
        )
        .await;
        assert_eq!(done, 600, "every store done");
        let twice: i64 = one(
            l,
            "SELECT count(*) FROM (SELECT key FROM attempts WHERE outcome = 'success'
                 GROUP BY key HAVING count(*) > 1) t",
        )
        .await;
        assert_eq!(twice, 0, "no store answered SUCCESS twice");
        let books = std::mem::take(&mut *books.lock().unwrap());
        assert_eq!(books.labels.len(), 600, "every store circled");
        let resent: Vec<_> = books.requests.iter().filter(|(_, n)| **n > 1).collect();
        assert_eq!(resent.len(), 1, "only the dead run's row in flight was sent again: {resent:?}");
        let (lost_key, _) = resent[0];
        let state: String = l
            .client()
            .query_one("SELECT state FROM rows WHERE key = $1 AND ambiguous", &[lost_key])
            .await
            .unwrap()
            .get(0);
        assert_eq!(state, "already_circled");
        // Every label whose answer arrived is kept on its row.
        for (key, label) in books.labels.iter().filter(|(k, _)| *k != lost_key) {
            let held: Option<String> = l
                .client()
                .query_one("SELECT pms_label FROM rows WHERE key = $1", &[key])
                .await
                .unwrap()
                .get(0);
            let kept: i64 = l
                .client()
                .query_one(
                    "SELECT count(*) FROM attempts WHERE key = $1 AND pms_label = $2",
                    &[key, label],
                )
                .await
                .unwrap()
                .get(0);
            assert!(
                held.as_deref() == Some(label.as_str()) || kept == 1,
                "{key}: the label {label} is kept"
            );
        }
        let lost: i64 = one(l, "SELECT count(*) FROM attempts WHERE outcome = 'lost'").await;
        assert_eq!(lost, 1, "the dead run's attempt in flight");
        let ambiguous: i64 = one(l, "SELECT count(*) FROM rows WHERE ambiguous").await;
        assert_eq!(ambiguous, 1, "its store, circled after an unknown outcome");
        let crashed: i64 = one(l, "SELECT count(*) FROM runs WHERE outcome = 'crashed'").await;
        assert_eq!(crashed, 1);
        // The shared rate: 601 slots 2.5 ms (and 3 %) apart on the server's clock.
        let span: f64 = one(
            l,
            "SELECT extract(epoch FROM (tat - (SELECT min(started_at)::timestamptz FROM runs)))::float8
             FROM rate",
        )
        .await;
        assert!(span >= 600.0 * 1.03 / 400.0, "{span}");
    });
}

/// A run with one row claimed: `(run, row id, attempt)`.
async fn one_claimed(l: &mut PgLedger, r: &Row, lease: Duration, holder: &str) -> (i64, i64, i64) {
    let run = runs::begin_run(l.client_mut(), "{}", &[], lease, holder)
        .await
        .unwrap();
    runs::ingest(l.client(), run, 1, &src(r, 2), false)
        .await
        .unwrap();
    let id = row_id(l, r).await;
    let at = claim::claim(l.client(), run, id)
        .await
        .unwrap()
        .unwrap()
        .attempt;
    (run, id, at)
}

async fn state_and_label(l: &PgLedger) -> (String, Option<String>) {
    let r = l
        .client()
        .query_one("SELECT state, pms_label FROM rows", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn a_late_answer_to_a_row_nobody_holds_is_the_rows_answer() {
    let Some((url, rt)) = database("a_late_answer_to_a_row_nobody_holds_is_the_rows_answer") else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let short = Duration::from_secs(1);
        let r = row("S1", "11");
        let (run, id, at) = one_claimed(&mut a, &r, short, "a").await;
        // The host goes silent past its lease; a sweep gives the row back, possibly sent.
        tokio::time::sleep(short + Duration::from_millis(200)).await;
        let swept = lease::sweep(a.client_mut()).await.unwrap().unwrap();
        assert_eq!(swept.rows, 1);
        assert_eq!(state_and_label(&a).await.0, "pending");
        // Its answer arrives late: nobody holds the row, so the row takes it (not sent again).
        let (verdict, fence) = claim::record(a.client_mut(), &success(run, at, id, &r, "2026"))
            .await
            .unwrap();
        assert_eq!((verdict, fence), (Verdict::Kept, Fence::Unclaimed));
        assert_eq!(
            state_and_label(&a).await,
            ("succeeded".to_owned(), Some("2026".to_owned()))
        );
        let outcome: String = one(&a, "SELECT outcome FROM attempts").await;
        assert_eq!(
            outcome, "success",
            "the sweep's `lost` replaced by what came"
        );
        // A late failure never moves a done row back.
        let mut failed = success(run, at, id, &r, "x");
        failed.attempt.outcome = Outcome::Transient {
            reason: "502".into(),
            retry_after: None,
            maybe_processed: true,
        };
        failed.update.state = State::Pending;
        failed.update.pms_label = None;
        let (_, fence) = claim::record(a.client_mut(), &failed).await.unwrap();
        assert_eq!(fence, Fence::Lost);
        assert_eq!(state_and_label(&a).await.0, "succeeded");
    });
}

#[test]
fn a_side_file_is_taken_in_once_its_run_is_over_and_then_removed() {
    let Some((url, rt)) = database("a_side_file_is_taken_in_once_its_run_is_over_and_then_removed")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let r = row("S1", "11");
        let (run, id, at) = one_claimed(&mut a, &r, LEASE, "a").await;
        // The ledger could not take the answer: it went to the run's side file.
        let side = late::side_file(dir.path(), &url, run);
        late::spill(&side, &success(run, at, id, &r, "2026")).unwrap();
        // While the run holds its lease, its file is its own.
        assert!(
            late::take_in(a.client_mut(), &url, dir.path())
                .await
                .unwrap()
                .is_none()
        );
        assert!(side.exists());
        // The run ends (its row in flight back to pending, possibly sent); the next command
        // takes the answer in: the row is done with its label, and the file is gone.
        runs::finish_run(
            a.client_mut(),
            run,
            RunEnd::Aborted,
            &RunCounts::default(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(state_and_label(&a).await.0, "pending");
        let taken = late::take_in(a.client_mut(), &url, dir.path())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.answers, 1);
        assert!(!side.exists());
        assert_eq!(
            state_and_label(&a).await,
            ("succeeded".to_owned(), Some("2026".to_owned()))
        );
        let (outcome, label): (String, String) = {
            let r = a
                .client()
                .query_one("SELECT outcome, pms_label FROM attempts", &[])
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((outcome.as_str(), label.as_str()), ("success", "2026"));
        // An answer of an attempt this ledger does not hold stays in its file.
        let stranger = late::side_file(dir.path(), &url, run + 1);
        late::spill(&stranger, &success(run + 1, at + 100, id, &r, "2027")).unwrap();
        assert!(
            late::take_in(a.client_mut(), &url, dir.path())
                .await
                .unwrap()
                .is_none()
        );
        assert!(stranger.exists());
        assert_eq!(state_and_label(&a).await.1.as_deref(), Some("2026"));
    });
}

#[test]
fn a_kept_answer_verified_again_is_written_unless_another_run_holds_the_row() {
    let Some((url, rt)) =
        database("a_kept_answer_verified_again_is_written_unless_another_run_holds_the_row")
    else {
        return;
    };
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let r = row("S1", "11");
        let (run, id, at) = one_claimed(&mut a, &r, LEASE, "a").await;
        // The answer did not verify: kept, the row pending to be sent again last.
        let mut unverified = success(run, at, id, &r, "2026");
        unverified.attempt.verified = Some(false);
        unverified.attempt.response_body = Some(b"{\"response\":{}}".to_vec());
        unverified.update.state = State::Pending;
        unverified.update.pms_label = Some("2026".into());
        unverified.update.label_unverified = true;
        unverified.update.answer_unverified = Some(true);
        claim::record(a.client_mut(), &unverified).await.unwrap();
        let kept = late::kept_unverified(a.client()).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].attempt_id, kept[0].row_id.0, kept[0].row.key()),
            (at, id, r.key())
        );
        // Another run holds the row now: the answer is left to it.
        let other = runs::begin_run(a.client_mut(), "{}", &[], LEASE, "b")
            .await
            .unwrap();
        claim::claim(a.client(), other, id).await.unwrap().unwrap();
        let believed = success(run, at, id, &r, "2026");
        assert!(
            !claim::accept_reverified(
                a.client_mut(),
                &kept[0],
                &believed.attempt,
                &believed.update
            )
            .await
            .unwrap()
        );
        assert_eq!(state_and_label(&a).await.0, "in_flight");
        assert!(late::kept_unverified(a.client()).await.unwrap().is_empty());
        // Given back: verified now, the row takes it, and it is not read again.
        lease::recover_own(a.client(), other).await.unwrap();
        let kept = late::kept_unverified(a.client()).await.unwrap();
        assert!(
            claim::accept_reverified(
                a.client_mut(),
                &kept[0],
                &believed.attempt,
                &believed.update
            )
            .await
            .unwrap()
        );
        assert_eq!(
            state_and_label(&a).await,
            ("succeeded".to_owned(), Some("2026".to_owned()))
        );
        let verified: bool = one(&a, "SELECT verified FROM attempts WHERE id = 1").await;
        assert!(verified);
        assert!(late::kept_unverified(a.client()).await.unwrap().is_empty());
        // A kept answer for another store that brings the same label verifies too, but is not
        // believed: the label is that store's.
        let r2 = row("S2", "11");
        runs::ingest(a.client(), run, 2, &src(&r2, 3), false)
            .await
            .unwrap();
        let id2 = row_id(&a, &r2).await;
        let at2 = claim::claim(a.client(), run, id2)
            .await
            .unwrap()
            .unwrap()
            .attempt;
        let mut copied = unverified.clone();
        (copied.attempt_id, copied.row_id, copied.row) = (at2, RowId(id2), r2.clone());
        claim::record(a.client_mut(), &copied).await.unwrap();
        let kept = late::kept_unverified(a.client()).await.unwrap();
        assert_eq!(kept.len(), 1);
        let believed = success(run, at2, id2, &r2, "2026");
        assert!(
            claim::accept_reverified(
                a.client_mut(),
                &kept[0],
                &believed.attempt,
                &believed.update
            )
            .await
            .unwrap()
        );
        let (state, outcome): (String, String) = {
            let r = a
                .client()
                .query_one(
                    "SELECT r.state, a.outcome FROM rows r JOIN attempts a ON a.key = r.key
                     WHERE r.id = $1 AND a.id = $2",
                    &[&id2, &at2],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(
            (state.as_str(), outcome.as_str()),
            ("pending", "not_this_request")
        );
    });
}

#[test]
fn a_store_reconnects_once_its_connection_is_gone_and_only_then() {
    let Some((url, rt)) = database("a_store_reconnects_once_its_connection_is_gone_and_only_then")
    else {
        return;
    };
    rt.block_on(async {
        let terms = LeaseTerms::for_requests(Duration::from_secs(2), Duration::from_secs(1));
        let mut store = PgStore::open(&url, terms).await.unwrap();
        let first = store.connection();
        // A failure that is not the connection's: nothing to heal, the error stands.
        assert!(!store.reconnect_if_closed(first).await);
        assert_eq!(store.connection(), first);
        // The server ends the connection (a restart, a failover).
        let _ = store
            .ledger()
            .client()
            .execute("SELECT pg_terminate_backend(pg_backend_pid())", &[])
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.ledger().client().is_closed());
        assert!(store.reconnect_if_closed(first).await);
        let second = store.connection();
        assert_ne!(second, first);
        // Another caller whose statement failed on the old connection tries again on the new
        // one, without a third.
        assert!(store.reconnect_if_closed(first).await);
        assert_eq!(store.connection(), second);
        let n: i64 = store
            .ledger()
            .client()
            .query_one("SELECT count(*) FROM rows", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    });
}

#[test]
fn a_snapshot_has_the_rows_and_the_schema_of_a_ledger_and_refuses_a_column_changed_by_hand() {
    let Some((url, rt)) = database(
        "a_snapshot_has_the_rows_and_the_schema_of_a_ledger_and_refuses_a_column_changed_by_hand",
    ) else {
        return;
    };
    let stores: Vec<Row> = (0..20).map(|i| row(&format!("S{i}"), "11")).collect();
    rt.block_on(async {
        let mut a = PgLedger::open(&url).await.unwrap();
        let run = runs::begin_run(a.client_mut(), "{}", &[], LEASE, "a")
            .await
            .unwrap();
        for (i, r) in stores.iter().enumerate() {
            let line = src(r, i as u64 + 2);
            runs::ingest(a.client(), run, i as u64, &line, false)
                .await
                .unwrap();
        }
    });
    let (_dir, snap) = snapshot::open(&url, snapshot::Reads::Everything).unwrap();
    // The indexes dropped for the copy are all made again, as a new ledger has them, and the
    // foreign keys are on again.
    let fresh = tempfile::tempdir().unwrap();
    let fresh = crate::ledger::open_unlocked(&fresh.path().join("l.db")).unwrap();
    let schema = |c: &rusqlite::Connection| -> Vec<(String, String, Option<String>)> {
        c.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let made = schema(&snap);
    assert!(
        made.iter().filter(|(t, ..)| t == "index").count() > 5,
        "{made:?}"
    );
    assert_eq!(made, schema(&fresh));
    let fk: i64 = snap
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let mut keys: Vec<(String, String, i64)> = snap
        .prepare("SELECT key, state, source_line FROM rows")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    keys.sort();
    let mut want: Vec<(String, String, i64)> = stores
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key(), "pending".to_owned(), i as i64 + 2))
        .collect();
    want.sort();
    assert_eq!(keys, want);
    // A column whose type was changed by hand is refused, not misread (a binary COPY does not
    // say its types: they are read from the SELECT).
    rt.block_on(async {
        let a = PgLedger::open(&url).await.unwrap();
        a.client()
            .batch_execute("ALTER TABLE rows ALTER COLUMN source_line TYPE integer")
            .await
            .unwrap();
    });
    let err = format!(
        "{:#}",
        snapshot::open(&url, snapshot::Reads::Everything).unwrap_err()
    );
    assert!(
        err.contains("rows.source_line") && err.contains("changed by hand"),
        "{err}"
    );
}
