//! `cargo bench -p domain --bench latency`: per-order latency of the matching engine, recorded
//! in an HDR histogram over the same seeded 1,000,000-operation workload as `matching`.
//!
//! Each operation is timed alone with `Instant` (whose own cost, measured and printed first,
//! is included in every sample, so the figures are an upper bound).

mod common;

use std::hint::black_box;
use std::time::Instant;

use hdrhistogram::Histogram;

const OPS: usize = 1_000_000;
const SEED: u64 = 42;
const ROUNDS: usize = 3;

fn main() {
    // `cargo bench` passes `--bench`; this harness has no options.
    let w = common::generate(OPS, SEED);
    let mut clock = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    for _ in 0..100_000 {
        let t = Instant::now();
        black_box(());
        clock.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    println!(
        "latency: timer overhead p50 {} ns, p99 {} ns",
        clock.value_at_quantile(0.5),
        clock.value_at_quantile(0.99)
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    let mut out = Vec::with_capacity(64);
    // The first round warms caches and the allocator; the later rounds are recorded.
    for round in 0..ROUNDS {
        let mut book = w.book.clone();
        for op in &w.ops {
            let t = Instant::now();
            common::run_op(&mut book, black_box(op), &mut out);
            let ns = t.elapsed().as_nanos().max(1) as u64;
            if round > 0 {
                hist.record(ns).unwrap();
            }
        }
    }
    println!(
        "latency: {} orders recorded: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
}
