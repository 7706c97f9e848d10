//! The cost of tracing a message hop with trace export off and on (1% sampling).
//!
//! `cargo bench -p telemetry --bench span_cost`
//!
//! Both setups have the production log layer (text fmt, `info`, no events emitted) so the
//! difference is the OpenTelemetry layer: with export on, every span gets OpenTelemetry
//! bookkeeping and a sampling decision, and 1% of the traces are exported in batches over
//! OTLP/HTTP to an in-process collector, as they would be to Jaeger.
//!
//! Times are CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time,
//! so that other processes on a busy 2-core machine do not count; the exporter's own thread
//! (1% of spans, in batches) is not included.
//!
//! - `span`: one `info_span!` created, entered and dropped;
//! - `current_traceparent`: formatting the current span's context for an envelope;
//! - `span_with_parent_sampled` (last, as it fills the exporter): a receiver span continuing a
//!   sampled remote parent, so with export on it is recorded and exported: the cost of the
//!   1% of hops that are kept;
//! - `hop`: what a message hop costs: a sender span, `current_traceparent()`, and a receiver
//!   span built with `span_with_parent()` from that string.

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telemetry::testing::OtlpCollector;
use telemetry::{LogFormat, SamplerConfig, TelemetryBuilder};

/// CPU time consumed by the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout) for the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement of the benchmarking thread's CPU time.
struct ThreadCpu;

struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns() - started
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

fn spans(c: &mut Criterion<ThreadCpu>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = rt.block_on(OtlpCollector::start()).unwrap();
    let off = TelemetryBuilder::new("bench")
        .log_format(LogFormat::Text)
        .build()
        .unwrap();
    let on = TelemetryBuilder::new("bench")
        .log_format(LogFormat::Text)
        .sampler(SamplerConfig::ParentBasedTraceIdRatio(0.01))
        .otlp_endpoint(&collector.endpoint())
        .build()
        .unwrap();

    let mut g = c.benchmark_group("tracing");
    for (label, t) in [("export_off", &off), ("export_on_1pct", &on)] {
        tracing::dispatcher::with_default(&t.dispatch, || {
            g.bench_function(format!("{label}/span"), |b| {
                b.iter(|| {
                    let s = tracing::info_span!("orderBook.place-order");
                    let _g = s.enter();
                    black_box(&s);
                })
            });
            g.bench_function(format!("{label}/current_traceparent"), |b| {
                let s = tracing::info_span!("trader.place-order");
                let _g = s.enter();
                b.iter(|| black_box(telemetry::current_traceparent()))
            });
            g.bench_function(format!("{label}/hop"), |b| {
                b.iter(|| {
                    let s = tracing::info_span!("trader.place-order");
                    let _g = s.enter();
                    let tp = telemetry::current_traceparent();
                    let r = telemetry::span_with_parent("orderBook.place-order", tp.as_deref());
                    let _r = r.enter();
                    black_box(tp);
                })
            });
            g.bench_function(format!("{label}/span_with_parent_sampled"), |b| {
                let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
                b.iter(|| {
                    let r = telemetry::span_with_parent("orderBook.place-order", Some(tp));
                    let _r = r.enter();
                    black_box(&r);
                })
            });
        });
    }
    g.finish();

    on.guard.flush().unwrap();
    let exported = collector.spans().len();
    println!("export_on_1pct: {exported} spans reached the collector");
    assert!(exported > 0, "sampled spans were exported");
    drop(on);
    drop(off);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = spans
}
criterion_main!(benches);
