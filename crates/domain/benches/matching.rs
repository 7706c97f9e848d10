//! `cargo bench -p domain --bench matching`: orders per second of the matching engine on the
//! workload of `common` (1,000,000 operations, 1,000 resting orders, seeded).
//!
//! First prints the median of 11 timed runs over the whole stream and the size of the book's
//! snapshot at the end, then runs the same replay under criterion for its statistics.

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput};

const OPS: usize = 1_000_000;
const SEED: u64 = 42;
const RUNS: usize = 11;

fn replay(book: &mut domain::OrderBook, ops: &[common::Op]) -> usize {
    let mut out = Vec::with_capacity(64);
    let mut events = 0;
    for op in ops {
        common::run_op(book, op, &mut out);
        events += out.len();
    }
    events
}

fn median_runs(w: &common::Workload) {
    let mut rates = Vec::with_capacity(RUNS);
    let mut summary = (0, 0, 0);
    let mut last = w.book.clone();
    for _ in 0..RUNS {
        let mut book = w.book.clone();
        let start = Instant::now();
        let events = replay(&mut book, black_box(&w.ops));
        let secs = start.elapsed().as_secs_f64();
        rates.push(w.ops.len() as f64 / secs);
        summary = (events, book.len(), 0);
        last = book;
    }
    rates.sort_by(f64::total_cmp);
    let trades = w
        .ops
        .iter()
        .filter(|op| matches!(op, common::Op::Place(_)))
        .count();
    summary.2 = trades;
    println!(
        "matching: {} ops ({} placements) from a {}-order book; events emitted per run: {}; \
         resting at end: {}",
        w.ops.len(),
        summary.2,
        common::TARGET_DEPTH,
        summary.0,
        summary.1
    );
    println!(
        "matching: median {:.2} M orders/s over {RUNS} runs (min {:.2}, max {:.2})",
        rates[RUNS / 2] / 1e6,
        rates[0] / 1e6,
        rates[RUNS - 1] / 1e6
    );
    let snapshot = last.snapshot();
    println!(
        "matching: snapshot at end {} bytes of JSON ({} resting orders, {} sender streams)",
        serde_json::to_vec(&snapshot).map_or(0, |v| v.len()),
        snapshot.bids.len() + snapshot.asks.len(),
        snapshot.placed.len()
    );
}

fn main() {
    let w = common::generate(OPS, SEED);
    median_runs(&w);

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut group = c.benchmark_group("matching");
    group.throughput(Throughput::Elements(w.ops.len() as u64));
    group.bench_function("1M mixed ops on a 1,000-order book", |b| {
        b.iter_batched(
            || w.book.clone(),
            |mut book| replay(&mut book, &w.ops),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    c.final_summary();
}
