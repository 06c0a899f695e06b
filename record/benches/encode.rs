//! Writing and reading a record: a stored quick-suite record (its runs with
//! their HdrHistograms) encoded to JSON and parsed back, as `bench report`,
//! `bench compare` and the gate do with every record they touch.
#![forbid(unsafe_code)]

use std::{hint::black_box, path::Path};

use criterion::{criterion_group, criterion_main, Criterion};

const STORED: &str = include_str!("../../reports/tests/data/stored-record.json");

fn bench(c: &mut Criterion) {
    let path = Path::new("stored-record.json");
    let report = record::io::parse_report(STORED, path).expect("the stored record parses");
    c.bench_function("record/encode_json", |b| b.iter(|| serde_json::to_vec(black_box(&report)).expect("encodes")));
    c.bench_function("record/parse_json", |b| {
        b.iter(|| record::io::parse_report(black_box(STORED), path).expect("parses"))
    });
}

criterion_group!(benches, weft_testkit::bench::calibrate, bench);
criterion_main!(benches);
