//! Parse + validate throughput: the streaming reader, the row rules and the identity dedupe, on
//! a generated sheet of valid rows (what the ingest phase of `run` does per row, and — without
//! copying the rows out — what `validate` does: `validate_checked_rows`).
//!
//! `cargo bench --bench validate`

use std::io::Write as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pms_onboard::input::{Encoding, Input, Item};

const ROWS: u64 = 100_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sheet.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        f,
        "save_way_type,partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label"
    )
    .unwrap();
    for i in 0..ROWS {
        writeln!(
            f,
            "MERCHANT_PMS,2088{:012},M{:04},測試商戶有限公司 {i},S{i:08},分店 旺角 {i},20230316,20230316{:03}",
            i % 97,
            i % 13,
            i % 5 + 1
        )
        .unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let bytes = std::fs::metadata(&path).unwrap().len();

    let mut g = c.benchmark_group("input");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function("parse_validate_rows", |b| {
        b.iter(|| {
            let input = Input::open(std::slice::from_ref(&path), Encoding::Utf8).unwrap();
            let mut valid = 0u64;
            for item in input {
                if let Item::Row(_) = item.unwrap() {
                    valid += 1;
                }
            }
            assert_eq!(valid, ROWS);
        })
    });
    // What `validate` does: every rule and the identity check, valid rows only counted.
    g.bench_function("validate_checked_rows", |b| {
        b.iter(|| {
            let input = Input::open(std::slice::from_ref(&path), Encoding::Utf8).unwrap();
            let mut valid = 0u64;
            for item in input.checked() {
                if let Item::Row(()) = item.unwrap() {
                    valid += 1;
                }
            }
            assert_eq!(valid, ROWS);
        })
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("parse_validate_bytes", |b| {
        b.iter(|| {
            Input::open(std::slice::from_ref(&path), Encoding::Utf8)
                .unwrap()
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
