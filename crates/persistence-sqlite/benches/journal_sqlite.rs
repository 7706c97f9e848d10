//! SQLite journal figures (issue "Measure"): `cargo bench -p persistence-sqlite --bench journal_sqlite`
//!
//! 1. 1,000 entities persisting 100-byte events concurrently through persistent actors and group
//!    commit, durable (WAL, synchronous = FULL): events/s (bar: >= 100,000).
//! 2. One entity persisting sequentially (each persist awaited before the next): events/s and
//!    mean latency.
//! 3. Recovery replay of one entity's events: raw journal replay and a persistent actor's full
//!    recovery (decode + apply): events/s (bar: >= 500,000).
//!
//! Sizes can be changed with BENCH_ENTITIES, BENCH_EVENTS_PER_ENTITY, BENCH_SEQUENTIAL_EVENTS
//! and BENCH_REPLAY_EVENTS; BENCH_WORKERS sets the tokio worker threads. Wall-clock figures depend
//! on what else runs on the machine: each line also gives the CPU time per event and the header
//! the load average.

use std::sync::Arc;
use std::time::Instant;

use persistence::{
    AtomicWrite, EntityContext, EntitySettings, Journal, MAX_SEQUENCE_NR, Persistable,
    PersistenceConfig, PersistenceHandle, PersistentActor, PersistentBehavior, PersistentRepr,
};
use persistence_sqlite::{SqliteConfig, SqliteStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

/// A 100-byte event (its JSON payload is exactly 100 bytes).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Recorded {
    n: u64,
    data: String,
}
impl Persistable for Recorded {
    const MANIFEST: &'static str = "Recorded";
}

fn event(n: u64) -> Recorded {
    let mut e = Recorded {
        n,
        data: String::new(),
    };
    let len = serde_json::to_string(&e).unwrap().len();
    e.data = "x".repeat(100 - len);
    e
}

#[derive(Serialize, Deserialize, Default)]
struct Count {
    n: u64,
    bytes: u64,
}
impl Persistable for Count {
    const MANIFEST: &'static str = "Count";
}

enum Cmd {
    Record(u64, RpcReplyPort<Result<u64, String>>),
    /// Persist events 1..=n one at a time, each awaited (durable) before the next; answers the
    /// last sequence number.
    Burst(u64, RpcReplyPort<Result<u64, String>>),
    Get(RpcReplyPort<u64>),
}

struct Recorder;

impl PersistentBehavior for Recorder {
    type Command = Cmd;
    type Event = Recorded;
    type State = Count;

    fn initial_state(&self) -> Count {
        Count::default()
    }

    fn apply_event(&self, s: &mut Count, e: &Recorded) {
        s.n += 1;
        s.bytes += e.data.len() as u64;
    }

    async fn handle_command(
        &self,
        ctx: &mut EntityContext<'_, Self>,
        cmd: Cmd,
    ) -> Result<(), ActorProcessingErr> {
        match cmd {
            Cmd::Record(n, reply) => {
                let r = ctx.persist(event(n)).await;
                let _ = reply.send(r.map(|_| ctx.last_sequence_nr()).map_err(|e| e.to_string()));
            }
            Cmd::Burst(n, reply) => {
                let mut r = Ok(());
                for i in 1..=n {
                    r = ctx.persist(event(i)).await;
                    if r.is_err() {
                        break;
                    }
                }
                let _ = reply.send(r.map(|_| ctx.last_sequence_nr()).map_err(|e| e.to_string()));
            }
            Cmd::Get(reply) => {
                let _ = reply.send(ctx.state().n);
            }
        }
        Ok(())
    }
}

/// CPU seconds (user + system) this process has used so far (Linux), to report figures that do
/// not depend on how busy the rest of the machine is.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn spawn(p: &PersistenceHandle, pid: &str) -> (ActorRef<Cmd>, tokio::task::JoinHandle<()>) {
    Actor::spawn(
        None,
        PersistentActor::new(Recorder, pid, p.clone(), EntitySettings::default()),
        (),
    )
    .await
    .expect("spawn entity")
}

fn main() {
    // BENCH_WORKERS sets the tokio worker threads (default: one per CPU). The SQLite writer runs
    // on a blocking thread beside them.
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rt.worker_threads(n);
    }
    rt.enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    let entities = env("BENCH_ENTITIES", 1000);
    let per_entity = env("BENCH_EVENTS_PER_ENTITY", 200);
    let sequential = env("BENCH_SEQUENTIAL_EVENTS", 2000);
    let replay_events = env("BENCH_REPLAY_EVENTS", 1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db")))
            .await
            .expect("open sqlite"),
    );
    let p = PersistenceHandle::new(store.clone(), store.clone(), PersistenceConfig::default());
    println!(
        "SQLite journal bench (WAL, synchronous=FULL, 100-byte events), db in {}, {} CPUs, load average {}",
        dir.path().display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load_average()
    );

    // 0. The journal alone: batches of 500 one-event atomic writes from 500 entities, as group
    // commit hands them over (no actors involved).
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let rounds = 200u64;
    for round in 1..=rounds {
        let writes = (0..500)
            .map(|e| {
                let r = PersistentRepr::from_event(
                    format!("direct-{e}"),
                    round,
                    &event(round),
                    "bench",
                )
                .unwrap();
                AtomicWrite::new(vec![r]).unwrap()
            })
            .collect();
        for r in store.write_messages(writes).await.unwrap() {
            r.unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "journal alone: {rounds} calls x 500 atomic writes = {} events in {secs:.2} s = {:.0} events/s durable; {:.0} events per CPU-second",
        rounds * 500,
        (rounds * 500) as f64 / secs,
        (rounds * 500) as f64 / (cpu_seconds() - cpu_before)
    );

    // 1. Many entities at once: each entity persists its events one at a time, awaiting each
    //    (a) inside the entity (a burst of commands), and (b) with one request/reply per event
    //    from outside (adds an actor round trip per event).
    for via_requests in [false, true] {
        let prefix = if via_requests { "rpc" } else { "entity" };
        let mut actors = Vec::new();
        for i in 0..entities {
            actors.push(spawn(&p, &format!("{prefix}-{i}")).await);
        }
        let stats = p.writer().stats();
        let batches_before = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
        let cpu_before = cpu_seconds();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (a, _) in &actors {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                if via_requests {
                    for n in 1..=per_entity {
                        let seq = ractor::call!(a, Cmd::Record, n)
                            .expect("actor")
                            .expect("persist");
                        assert_eq!(seq, n);
                    }
                } else {
                    let seq = ractor::call!(a, Cmd::Burst, per_entity)
                        .expect("actor")
                        .expect("persist");
                    assert_eq!(seq, per_entity);
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let total = entities * per_entity;
        let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed) - batches_before;
        println!(
            "concurrent ({}): {entities} entities x {per_entity} events = {total} events in {secs:.2} s = {:.0} events/s durable ({batches} group commits, {:.0} events each; bar >= 100000); {cpu:.2} CPU-s = {:.0} events per CPU-second",
            if via_requests {
                "one request/reply per event"
            } else {
                "persist loop in each entity"
            },
            total as f64 / secs,
            total as f64 / batches as f64,
            total as f64 / cpu
        );
        for (a, h) in actors {
            a.stop(None);
            h.await.ok();
        }
    }

    // 2. One entity, sequential.
    let (a, h) = spawn(&p, "sequential").await;
    let start = Instant::now();
    for n in 1..=sequential {
        ractor::call!(a, Cmd::Record, n)
            .expect("actor")
            .expect("persist");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sequential: 1 entity x {sequential} persists in {secs:.2} s = {:.0} events/s, mean {:.3} ms per durable persist",
        sequential as f64 / secs,
        secs * 1000.0 / sequential as f64
    );
    a.stop(None);
    h.await.ok();

    // 4. Live events by tag: time from a write's acknowledgement to its delivery, for a reader
    //    on the same store (woken by the commit signal) and for a reader on a second handle of
    //    the same file (like another process: it only polls, every 50 ms).
    for same_handle in [true, false] {
        let reader: Arc<SqliteStore> = if same_handle {
            store.clone()
        } else {
            Arc::new(
                SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db")))
                    .await
                    .unwrap(),
            )
        };
        let tag = if same_handle {
            "live-same"
        } else {
            "live-other"
        };
        let mut live = persistence::events_by_tag(reader, tag, persistence::Offset::START);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reader_task = tokio::spawn(async move {
            while let Some(Ok(env)) = futures::StreamExt::next(&mut live).await {
                if tx.send((env.event.sequence_nr, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let mut latencies = Vec::new();
        for seq in 1..=200u64 {
            // Let the reader catch up and go back to waiting before the next write.
            tokio::time::sleep(std::time::Duration::from_millis(7)).await;
            let mut r = PersistentRepr::from_event(tag, seq, &event(seq), "bench").unwrap();
            r.tags = vec![tag.to_owned()];
            store
                .write_messages(vec![AtomicWrite::new(vec![r]).unwrap()])
                .await
                .unwrap()
                .remove(0)
                .unwrap();
            let written = Instant::now();
            let (got, at) = rx.recv().await.unwrap();
            assert_eq!(got, seq);
            latencies.push(at.saturating_duration_since(written).as_secs_f64() * 1000.0);
        }
        reader_task.abort();
        latencies.sort_by(|a, b| a.total_cmp(b));
        println!(
            "live events by tag ({}): 200 events, delivery after write p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (bar: within 100 ms)",
            if same_handle {
                "same store, commit signal"
            } else {
                "second handle, polling"
            },
            latencies[100],
            latencies[198],
            latencies[199]
        );
    }

    // 3. Recovery replay of one long history.
    let pid = "replayed";
    let chunk = 10_000u64;
    let mut seq = 1;
    while seq <= replay_events {
        let n = chunk.min(replay_events - seq + 1);
        let evs = (seq..seq + n)
            .map(|s| PersistentRepr::from_event(pid, s, &event(s), "bench").unwrap())
            .collect();
        store
            .write_messages(vec![AtomicWrite::new(evs).unwrap()])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        seq += n;
    }
    let start = Instant::now();
    let mut from = 1;
    let mut replayed = 0u64;
    loop {
        let page = store
            .replay_messages(pid, from, MAX_SEQUENCE_NR, 8192)
            .await
            .unwrap();
        replayed += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == 8192 => from = last.sequence_nr + 1,
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(replayed, replay_events);
    println!(
        "replay (journal): {replayed} events in {secs:.2} s = {:.0} events/s (bar >= 500000)",
        replayed as f64 / secs
    );
    let start = Instant::now();
    let (a, h) = spawn(&p, pid).await;
    let secs = start.elapsed().as_secs_f64();
    let recovered = ractor::call!(a, Cmd::Get).unwrap();
    assert_eq!(recovered, replay_events);
    println!(
        "replay (persistent actor recovery, decode + apply): {recovered} events in {secs:.2} s = {:.0} events/s (bar >= 500000)",
        recovered as f64 / secs
    );
    a.stop(None);
    h.await.ok();
}
