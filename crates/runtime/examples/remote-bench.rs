//! Load command for the cluster transport (issue 3, "Measure"). Run with
//!
//! ```text
//! cargo run --release -p runtime --example remote-bench
//! ```
//!
//! and it prints:
//! 1. one-way throughput between two node processes on loopback, ~100-byte payload,
//!    from a ractor actor on the sender to a ractor actor on the receiver;
//! 2. sequential request-response round trips (actor -> remote actor -> back), with an
//!    HDR histogram (p50/p90/p99/max);
//! 3. the peak RSS of a sender process that outruns a stalled (SIGSTOPped) receiver;
//! 4. the time 20 nodes in one process take to converge to all Up.
//!
//! Options: `--messages N` (default 4,000,000), `--round-trips N` (default 20,000),
//! `--nodes N` (default 20), `--skip-convergence`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::remote::ResolvedRef;
use runtime::{NodeAddress, RemoteRef, Remoting, RemotingConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum SinkMsg {
    /// A data message; `seq` counts from 0.
    Data { seq: u64, body: Vec<u8> },
    /// Tell `reply_to` (name on node) when `expect` data messages have arrived.
    Expect { expect: u64, reply_to: NodeAddress },
    /// A request that is answered with `Pong` at once.
    Ping { seq: u64, reply_to: NodeAddress },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CtlMsg {
    Done { received: u64, receiver_micros: u64 },
    Pong { seq: u64 },
}

struct Sink;

struct SinkState {
    remoting: Remoting,
    count: u64,
    expect: u64,
    reply_to: Option<ResolvedRef<CtlMsg>>,
    first: Option<Instant>,
    pongs: Option<(NodeAddress, ResolvedRef<CtlMsg>)>,
}

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = Remoting;

    async fn pre_start(
        &self,
        _me: ActorRef<SinkMsg>,
        remoting: Remoting,
    ) -> Result<SinkState, ActorProcessingErr> {
        Ok(SinkState {
            remoting,
            count: 0,
            expect: u64::MAX,
            reply_to: None,
            first: None,
            pongs: None,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<SinkMsg>,
        msg: SinkMsg,
        st: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Data { seq: _, body } => {
                if st.first.is_none() {
                    st.first = Some(Instant::now());
                }
                st.count += 1;
                std::hint::black_box(body);
            }
            SinkMsg::Expect { expect, reply_to } => {
                st.expect = expect;
                st.reply_to = Some(st.remoting.resolve(&RemoteRef::new(reply_to, "bench-ctl")));
            }
            SinkMsg::Ping { seq, reply_to } => {
                if st.pongs.as_ref().is_none_or(|(a, _)| *a != reply_to) {
                    let r = st
                        .remoting
                        .resolve(&RemoteRef::new(reply_to.clone(), "bench-ctl"));
                    st.pongs = Some((reply_to, r));
                }
                let (_, r) = st.pongs.as_ref().expect("set above");
                r.tell(&CtlMsg::Pong { seq }, None).await?;
            }
        }
        if st.count >= st.expect {
            let micros = st.first.map_or(0, |f| f.elapsed().as_micros() as u64);
            if let Some(r) = st.reply_to.take() {
                r.tell(
                    &CtlMsg::Done {
                        received: st.count,
                        receiver_micros: micros,
                    },
                    None,
                )
                .await?;
            }
            st.count = 0;
            st.first = None;
            st.expect = u64::MAX;
        }
        Ok(())
    }
}

/// Receives `CtlMsg` on the driving node and forwards it to the waiting code.
struct Ctl;

impl Actor for Ctl {
    type Msg = CtlMsg;
    type State = tokio::sync::mpsc::UnboundedSender<CtlMsg>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<CtlMsg>;

    async fn pre_start(
        &self,
        _me: ActorRef<CtlMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _me: ActorRef<CtlMsg>,
        msg: CtlMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// The sending actor: on `Run(n)` it sends n data messages to the sink.
struct Source;

enum SourceMsg {
    Run(u64, oneshot::Sender<Duration>),
}

impl Actor for Source {
    type Msg = SourceMsg;
    type State = ResolvedRef<SinkMsg>;
    type Arguments = ResolvedRef<SinkMsg>;

    async fn pre_start(
        &self,
        _me: ActorRef<SourceMsg>,
        r: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(r)
    }

    async fn handle(
        &self,
        _me: ActorRef<SourceMsg>,
        msg: SourceMsg,
        sink: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SourceMsg::Run(n, done) = msg;
        let body = vec![0x5au8; 90];
        let start = Instant::now();
        for seq in 0..n {
            sink.tell(
                &SinkMsg::Data {
                    seq,
                    body: body.clone(),
                },
                None,
            )
            .await?;
        }
        let _ = done.send(start.elapsed());
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far (Linux `/proc/<pid>/stat`,
/// clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" that ends the command name; utime and stime are 14 and 15
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn spawn_child_line(role: &str, extra: &[&str]) -> (Child, String) {
    let (child, mut lines) = spawn_child_lines(role, extra);
    (child, lines.next().expect("child output"))
}

fn spawn_child_lines(role: &str, extra: &[&str]) -> (Child, impl Iterator<Item = String> + use<>) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--role")
        .arg(role)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map(|l| {
            let line = l.expect("child output");
            line.trim()
                .strip_prefix("ADDR ")
                .unwrap_or_else(|| panic!("unexpected child output {line:?}"))
                .to_string()
        });
    (child, lines)
}

fn spawn_child(role: &str, extra: &[&str]) -> (Child, NodeAddress) {
    let (child, line) = spawn_child_line(role, extra);
    (child, line.parse().expect("address"))
}

async fn start_remoting() -> Remoting {
    Remoting::start(RemotingConfig::default())
        .await
        .expect("bind")
}

async fn run_receiver() {
    let remoting = start_remoting().await;
    let (sink, _) = Actor::spawn(None, Sink, remoting.clone())
        .await
        .expect("sink");
    remoting.register("sink", sink);
    println!("ADDR {}", remoting.self_address().address);
    std::future::pending::<()>().await;
}

/// Sends to a receiver that was stopped with SIGSTOP for `secs`, then prints its peak RSS.
async fn run_stalled_sender(target: NodeAddress, secs: u64) {
    let remoting = start_remoting().await;
    let sink = remoting.resolve(&RemoteRef::<SinkMsg>::new(target, "sink"));
    let body = vec![0x5au8; 90];
    // connect and deliver a little first, so the stall hits an established link
    for seq in 0..1000 {
        sink.tell(
            &SinkMsg::Data {
                seq,
                body: body.clone(),
            },
            None,
        )
        .await
        .expect("warm-up send");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("ADDR connected");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go line");
    let before = peak_rss_kib();
    let mut queued = 0u64;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            sink.tell(
                &SinkMsg::Data {
                    seq: queued,
                    body: body.clone(),
                },
                None,
            ),
        )
        .await;
        if r.is_ok() {
            queued += 1;
        }
    }
    println!("ADDR {} {} {}", queued, before, peak_rss_kib());
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    match arg("--role").as_deref() {
        Some("receiver") => return run_receiver().await,
        Some("stalled-sender") => {
            let target = arg("--target").expect("--target").parse().expect("address");
            return run_stalled_sender(target, 3).await;
        }
        _ => {}
    }
    let messages: u64 = arg("--messages").map_or(4_000_000, |v| v.parse().expect("--messages"));
    let round_trips: u64 =
        arg("--round-trips").map_or(20_000, |v| v.parse().expect("--round-trips"));
    let nodes: usize = arg("--nodes").map_or(20, |v| v.parse().expect("--nodes"));

    let (mut receiver, raddr) = spawn_child("receiver", &[]);
    let remoting = start_remoting().await;
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ctl, _) = Actor::spawn(None, Ctl, ctl_tx).await.expect("ctl");
    remoting.register("bench-ctl", ctl);
    let sink_ref = RemoteRef::<SinkMsg>::new(raddr.clone(), "sink");
    let sink = remoting.resolve(&sink_ref);
    let me = remoting.self_address().address.clone();
    let (source, _) = Actor::spawn(None, Source, remoting.resolve(&sink_ref))
        .await
        .expect("source");

    println!("remote-bench: sender {me}, receiver {raddr} (separate process)");
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // 1. one-way throughput (with a warm-up run first)
    let receiver_pid = receiver.id().to_string();
    for (label, n) in [("warm-up", messages / 10), ("measured", messages)] {
        let cpu_before = (cpu_seconds("self"), cpu_seconds(&receiver_pid));
        sink.tell(
            &SinkMsg::Expect {
                expect: n,
                reply_to: me.clone(),
            },
            None,
        )
        .await
        .expect("expect");
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        source.cast(SourceMsg::Run(n, tx)).expect("run");
        let send_time = rx.await.expect("sent");
        let (received, receiver_micros) = loop {
            match ctl_rx.recv().await.expect("ctl") {
                CtlMsg::Done {
                    received,
                    receiver_micros,
                } => break (received, receiver_micros),
                CtlMsg::Pong { .. } => {}
            }
        };
        let total = start.elapsed();
        if label == "measured" {
            println!(
                "one-way, 100-byte payload, actor->actor across processes: {} msgs in {:.3} s = {:.0} msg/s end-to-end (sender done after {:.3} s; receiver saw {} in {:.3} s)",
                n,
                total.as_secs_f64(),
                n as f64 / total.as_secs_f64(),
                send_time.as_secs_f64(),
                received,
                receiver_micros as f64 / 1e6
            );
            let cpu =
                cpu_seconds("self") - cpu_before.0 + cpu_seconds(&receiver_pid) - cpu_before.1;
            println!(
                "  CPU used by sender + receiver: {:.2} s = {:.0} msg per CPU-second (independent of other load on the machine)",
                cpu,
                n as f64 / cpu.max(0.01)
            );
        }
    }
    // 2. sequential round trips
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for seq in 0..(round_trips + 1000) {
        let t = Instant::now();
        sink.tell(
            &SinkMsg::Ping {
                seq,
                reply_to: me.clone(),
            },
            None,
        )
        .await
        .expect("ping");
        loop {
            if let CtlMsg::Pong { seq: s } = ctl_rx.recv().await.expect("pong")
                && s == seq
            {
                break;
            }
        }
        if seq >= 1000 {
            hist.record(t.elapsed().as_nanos() as u64).expect("record");
        }
    }
    println!(
        "request-response, sequential, {} round trips: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        round_trips,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.9) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    println!("sender peak RSS after phases 1-2: {} KiB", peak_rss_kib());
    let _ = receiver.kill();
    let _ = receiver.wait();

    // 3. a sender that outruns a stalled receiver
    let (mut stalled, saddr) = spawn_child("receiver", &[]);
    let pid = stalled.id().to_string();
    let target = saddr.to_string();
    let (mut sender, mut lines) = spawn_child_lines("stalled-sender", &["--target", &target]);
    assert_eq!(lines.next().as_deref(), Some("connected"));
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    {
        use std::io::Write;
        let mut stdin = sender.stdin.take().expect("stdin");
        writeln!(stdin, "go").expect("go");
    }
    let line = lines.next().expect("stalled sender result");
    let f: Vec<&str> = line.split_whitespace().collect();
    println!(
        "stalled receiver (SIGSTOP): sender queued {} messages in 3 s (bounded queue + socket buffers) before blocking on its bounded queue; sender peak RSS {} KiB (was {} KiB before sending)",
        f[0], f[2], f[1]
    );
    let _ = sender.wait();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = stalled.kill();
    let _ = stalled.wait();

    // 4. N nodes in one process converge to all Up (default timings: 1 s gossip and
    //    heartbeat, as a deployment runs them)
    if std::env::args().any(|a| a == "--skip-convergence") {
        return;
    }
    let started = Instant::now();
    let mut cfg = runtime::NodeConfig::local(Vec::new(), &[], Duration::from_secs(1));
    cfg.cluster = runtime::ClusterConfig {
        discovery: runtime::discovery::Discovery::Static(Vec::new()),
        ..runtime::ClusterConfig::default()
    };
    cfg.management = None;
    let seed = runtime::Node::start(cfg.clone()).await.expect("seed");
    let seeds = vec![seed.address().address.clone()];
    let mut all = vec![seed];
    for _ in 1..nodes {
        let mut c = cfg.clone();
        c.cluster.discovery = runtime::discovery::Discovery::Static(seeds.clone());
        all.push(runtime::Node::start(c).await.expect("node"));
    }
    let converged = |n: &runtime::Node| {
        let s = n.cluster().state();
        s.converged
            && s.members.len() == nodes
            && s.members
                .iter()
                .all(|m| m.status == runtime::membership::MemberStatus::Up)
    };
    while !all.iter().all(converged) {
        if started.elapsed() > Duration::from_secs(60) {
            println!("{nodes} nodes in one process did NOT converge within 60 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} nodes in one process (gossip/heartbeat 1 s): all Up and converged on every node after {:.2} s",
        nodes,
        started.elapsed().as_secs_f64()
    );
}
