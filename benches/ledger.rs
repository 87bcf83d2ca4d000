//! Ledger writer throughput with `synchronous=FULL`: outcomes recorded per second. One outcome
//! is what a sent row costs the ledger: "mark in flight" (awaited before the request leaves)
//! and "record" (the answer and the row's new state; a success is awaited until committed, as
//! the worker awaits it, since the ledger may refuse a label another store holds: the next mark
//! of the same worker would have committed with it or after it anyway). Each row gets a label of
//! its own, 31 digits in the order they are issued (the sandbox's are a time stamp and a count). With several workers the single writer
//! commits whatever has queued up in one transaction (group commit); one worker alone gets a
//! commit, and an fsync, per command: the commit-per-row baseline.
//!
//! `cargo bench --bench ledger`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pms_onboard::api::outcome::{Attempt, Outcome};
use pms_onboard::input::{Row, SaveWay, SourceRow};
use pms_onboard::ledger::store::{Answered, Verdict};
use pms_onboard::ledger::writer::{self, Writer};
use pms_onboard::ledger::{LedgerLock, RowId, State};
use pms_onboard::model::{RowUpdate, RunCounts, RunEnd};

fn row(i: u64) -> SourceRow {
    SourceRow {
        file: "sheet.csv".to_owned(),
        line: i + 2,
        row: Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: format!("2088{:012}", i % 97),
            merchant_id: format!("M{:04}", i % 13),
            merchant_name: format!("測試商戶 {i}"),
            store_id: format!("S{i:08}"),
            store_name: format!("分店 {i}"),
            mall_group_label: "20230316".to_owned(),
            mall_label: format!("20230316{:03}", i % 5 + 1),
        },
    }
}

async fn one_outcome(w: &Writer, run_id: i64, row_id: RowId, row: &Row) {
    let attempt_id = w.mark_in_flight(run_id, row_id).await.unwrap().unwrap();
    let label = format!("2026{:027}", row_id.0);
    let attempt = Attempt {
        outcome: Outcome::Success {
            pms_label: label.clone(),
        },
        http_status: Some(200),
        result_code: Some("SUCCESS".to_owned()),
        result_status: Some("S".to_owned()),
        result_message: Some("success".to_owned()),
        pms_label: Some(label.clone()),
        verified: Some(true),
        tracer_id: Some("0af7651916cd43dd8448eb211c80319c".to_owned()),
        response_body: Some(
            br#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success."},"pmsLabel":"PMS0001"}"#
                .to_vec(),
        ),
        latency: Duration::from_millis(3),
        ..Attempt::default()
    };
    let update = RowUpdate {
        state: State::Succeeded,
        failure: None,
        ambiguous: false,
        maybe_sent: false,
        pms_label: Some(label),
        label_unverified: false,
        answer_unverified: Some(false),
        result_code: Some("SUCCESS".to_owned()),
        result_message: None,
        tracer_id: attempt.tracer_id.clone(),
    };
    let verdict = w
        .record(Answered {
            run_id,
            attempt_id,
            row_id,
            row: row.clone(),
            attempt,
            update,
        })
        .verdict()
        .await;
    assert_eq!(verdict, Verdict::Kept);
}

/// Time to record `n` outcomes with `workers` concurrent senders, on a fresh ledger.
fn record_outcomes(rt: &tokio::runtime::Runtime, n: u64, workers: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (w, thread) = writer::start(LedgerLock::acquire(&path).unwrap()).unwrap();
    let run_id = w.begin_run("{}".to_owned(), Vec::new()).unwrap();
    let rows: Vec<(u64, SourceRow)> = (0..n).map(|i| (i + 1, row(i))).collect();
    for chunk in rows.chunks(1024) {
        w.ingest(run_id, chunk.to_vec(), false).unwrap();
    }
    // The workers name rows by rowid, as the feeder hands them out.
    let conn = pms_onboard::ledger::open_unlocked(&path).unwrap();
    let ids: Arc<Vec<RowId>> = Arc::new(
        conn.prepare("SELECT rowid AS row_id FROM rows ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get("row_id").map(RowId))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
    );
    drop(conn);
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..workers)
            .map(|k| {
                let (w, ids) = (w.clone(), ids.clone());
                let sample = row(k).row;
                tokio::spawn(async move {
                    for id in ids.iter().skip(k as usize).step_by(workers as usize) {
                        one_outcome(&w, run_id, *id, &sample).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // The last answers handed over are on disk once this commits after them.
        w.finish_run(run_id, RunEnd::Completed, RunCounts::default(), None)
            .await
            .unwrap();
    });
    let elapsed = start.elapsed();
    drop(w);
    thread.join(Duration::from_secs(10));
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("ledger_outcomes");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    for workers in [64u64, 8] {
        g.bench_function(format!("group_commit/{workers}_workers"), |b| {
            b.iter_custom(|iters| record_outcomes(&rt, iters, workers))
        });
    }
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("commit_per_row/1_worker", |b| {
        b.iter_custom(|iters| record_outcomes(&rt, iters, 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
