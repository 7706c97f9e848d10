//! Fault tests with real processes: the `lighthouse` binary runs the seed and, with
//! `--roles worker`, the other nodes. Every port comes from the OS.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use runtime::cluster::ClusterSnapshot;
use runtime::http_client;
use runtime::membership::MemberStatus;

const BIN: &str = env!("CARGO_BIN_EXE_lighthouse");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node process that is killed when the test ends.
struct Proc {
    child: Child,
    port: u16,
    mgmt: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn address(&self) -> String {
        format!("akka.tcp://AkkaTrader@127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Fast but realistic timings, overridable per test.
fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("RUST_LOG", "warn".into()),
        ("CLUSTER_GOSSIP_INTERVAL", "200ms".into()),
        ("CLUSTER_SEED_NODE_TIMEOUT", "1s".into()),
        ("CLUSTER_SBR_STABLE_AFTER", "2s".into()),
        ("CLUSTER_EXITING_TIMEOUT", "3s".into()),
    ]
}

fn spawn(args: &[&str], env: &[(&str, String)]) -> Proc {
    let port = free_port();
    let mgmt = free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .args([
            "--port",
            &port.to_string(),
            "--management-port",
            &mgmt.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in base_env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        port,
        mgmt,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn members(rt: &tokio::runtime::Runtime, p: &Proc) -> Option<ClusterSnapshot> {
    let url = format!("http://127.0.0.1:{}/cluster/members", p.mgmt);
    let (status, body) = rt
        .block_on(http_client::request(
            "GET",
            &url,
            None,
            None,
            Duration::from_secs(2),
        ))
        .ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

fn wait_view<F: Fn(&ClusterSnapshot) -> bool>(
    rt: &tokio::runtime::Runtime,
    p: &Proc,
    timeout: Duration,
    pred: F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if members(rt, p).is_some_and(|s| pred(&s)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn up_set(s: &ClusterSnapshot) -> BTreeSet<String> {
    s.members
        .iter()
        .filter(|m| m.status == MemberStatus::Up && m.reachable)
        .map(|m| m.node.clone())
        .collect()
}

fn show(rt: &tokio::runtime::Runtime, p: &Proc) -> String {
    let cli = ctl::Cli {
        addr: format!("127.0.0.1:{}", p.mgmt),
        token: None,
        web: "127.0.0.1:8080".into(),
        timeout: Duration::from_secs(2),
        command: ctl::Command::Cluster(ctl::ClusterCommand::Show),
    };
    let mut out: Vec<u8> = Vec::new();
    rt.block_on(ctl::run(&cli, &mut out)).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn five_processes_form_one_cluster_then_survive_kill_term_and_leave() {
    let rt = rt();
    let lh = spawn(&[], &[]);
    let seed = format!("127.0.0.1:{}", lh.port);
    let mut nodes = vec![lh];
    for _ in 0..4 {
        nodes.push(spawn(&["--seeds", &seed, "--roles", "worker"], &[]));
    }
    let started = Instant::now();
    let expected: BTreeSet<String> = nodes.iter().map(Proc::address).collect();
    for n in &nodes {
        assert!(
            wait_view(&rt, n, Duration::from_secs(10), |s| up_set(s) == expected
                && s.converged),
            "all five Up within 10 s"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // tradectl cluster show agrees on every node
    let first = show(&rt, &nodes[0]);
    assert!(first.contains(&format!("{} | [lighthouse] | up |", nodes[0].address())));
    assert!(first.contains(&format!("{} | [worker] | up |", nodes[1].address())));
    assert!(first.ends_with("Count: 5 members\n"), "{first}");
    for n in &nodes[1..] {
        assert_eq!(show(&rt, n), first);
    }

    // kill -9: unreachable everywhere within about 6 s (default detector: 1 s
    // heartbeat, 3 s acceptable pause), then downed by the resolver and removed
    let mut victim = nodes.pop().unwrap();
    let victim_addr = victim.address();
    victim.child.kill().unwrap();
    let killed = Instant::now();
    for n in &nodes {
        assert!(
            wait_view(&rt, n, Duration::from_secs(8), |s| s
                .unreachable
                .iter()
                .any(|u| u.node == victim_addr)),
            "unreachable"
        );
    }
    let detect = killed.elapsed();
    println!("kill -9 seen unreachable on every node after {detect:?}");
    assert!(detect < Duration::from_secs(8), "detected after {detect:?}");
    let rest: BTreeSet<String> = nodes.iter().map(Proc::address).collect();
    for n in &nodes {
        assert!(
            wait_view(&rt, n, Duration::from_secs(10), |s| up_set(s) == rest
                && s.members.len() == 4
                && s.unreachable.is_empty()),
            "downed, removed, the rest Up"
        );
    }
    drop(victim);

    // SIGTERM: graceful leave, exit 0 within 10 s
    let mut termed = nodes.pop().unwrap();
    let termed_addr = termed.address();
    termed.signal("-TERM");
    let status = termed.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    for n in &nodes {
        assert!(wait_view(&rt, n, Duration::from_secs(5), |s| !s
            .members
            .iter()
            .any(|m| m.node == termed_addr)
            && s.members.len() == 3));
    }

    // leave by request (tradectl cluster leave, default target: the node itself)
    let mut leaver = nodes.pop().unwrap();
    let cli = ctl::Cli {
        addr: format!("127.0.0.1:{}", leaver.mgmt),
        token: None,
        web: "127.0.0.1:8080".into(),
        timeout: Duration::from_secs(2),
        command: ctl::Command::Cluster(ctl::ClusterCommand::Leave { address: None }),
    };
    let mut out = Vec::new();
    rt.block_on(ctl::run(&cli, &mut out)).unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("Leaving "));
    let status = leaver.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    let rest: BTreeSet<String> = nodes.iter().map(Proc::address).collect();
    for n in &nodes {
        assert!(wait_view(&rt, n, Duration::from_secs(5), |s| up_set(s)
            == rest
            && s.members.len() == 2));
    }
}

#[test]
fn seeds_that_never_answer_make_the_node_exit_non_zero() {
    let dead = free_port();
    let mut n = spawn(
        &["--seeds", &format!("127.0.0.1:{dead}"), "--roles", "worker"],
        &[("CLUSTER_JOIN_TIMEOUT", "2s".into())],
    );
    let status = n.wait_exit(Duration::from_secs(8)).expect("gave up");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_wrong_value_is_refused_naming_the_variable() {
    let out = Command::new(BIN)
        .env_clear()
        .env("CLUSTER_PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CLUSTER_PORT"), "{err}");
}

#[test]
fn a_node_with_the_wrong_cookie_is_refused() {
    let rt = rt();
    let lh = spawn(&[], &[("CLUSTER_COOKIE", "the-right-cookie".into())]);
    let mut intruder = spawn(
        &[
            "--seeds",
            &format!("127.0.0.1:{}", lh.port),
            "--roles",
            "worker",
        ],
        &[
            ("CLUSTER_COOKIE", "a-wrong-cookie".into()),
            ("CLUSTER_JOIN_TIMEOUT", "3s".into()),
        ],
    );
    let status = intruder
        .wait_exit(Duration::from_secs(10))
        .expect("gave up");
    assert_eq!(status.code(), Some(1));
    let s = members(&rt, &lh).unwrap();
    assert_eq!(s.members.len(), 1);
    let url = format!("http://127.0.0.1:{}/metrics", lh.mgmt);
    let (_, metrics) = rt
        .block_on(http_client::request(
            "GET",
            &url,
            None,
            None,
            Duration::from_secs(2),
        ))
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find(|l| l.starts_with("cluster_remote_handshakes_refused_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refused >= 1);
}

fn expect_closed(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("connection not closed")
            }
            Err(_) => return,
        }
    }
}

#[test]
fn garbage_on_the_cluster_port_closes_that_connection_and_the_node_stays_up() {
    let rt = rt();
    let lh = spawn(&[], &[]);
    let me = lh.address();
    assert!(wait_view(&rt, &lh, Duration::from_secs(10), |s| s
        .self_status
        == Some(MemberStatus::Up)));
    let target = format!("127.0.0.1:{}", lh.port);
    // random bytes
    let mut s = TcpStream::connect(&target).unwrap();
    let junk: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.write_all(&junk).unwrap();
    expect_closed(s);
    // an oversized length prefix
    let mut s = TcpStream::connect(&target).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xf0]).unwrap();
    expect_closed(s);
    // a truncated frame (announces 64 bytes, sends 5, closes its side)
    let mut s = TcpStream::connect(&target).unwrap();
    s.write_all(&64u32.to_be_bytes()).unwrap();
    s.write_all(b"hello").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(s);
    // still Up and serving: ready, and a new node joins
    let url = format!("http://127.0.0.1:{}/ready", lh.mgmt);
    let (status, _) = rt
        .block_on(http_client::request(
            "GET",
            &url,
            None,
            None,
            Duration::from_secs(2),
        ))
        .unwrap();
    assert_eq!(status, 200);
    let n = spawn(&["--seeds", &target, "--roles", "worker"], &[]);
    let both: BTreeSet<String> = [me, n.address()].into();
    assert!(wait_view(&rt, &lh, Duration::from_secs(10), |s| up_set(s) == both));
}

/// A stand-in for the Kubernetes API: answers the pods list of namespace `test` for
/// `app=lighthouse` in the real API's JSON shape.
async fn fake_kubernetes_api(pods: Vec<u16>) -> u16 {
    use axum::extract::{Path, Query};
    use axum::routing::get;
    use std::collections::HashMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/api/v1/namespaces/{ns}/pods",
        get(move |Path(ns): Path<String>, Query(q): Query<HashMap<String, String>>| {
            let pods = pods.clone();
            async move {
                let selected = ns == "test" && q.get("labelSelector").map(String::as_str) == Some("app=lighthouse");
                let items: Vec<serde_json::Value> = if selected {
                    pods.iter()
                        .enumerate()
                        .map(|(i, p)| {
                            serde_json::json!({
                                "metadata": {"name": format!("lighthouse-{i}"), "namespace": "test",
                                             "labels": {"app": "lighthouse"}},
                                "spec": {"containers": [{"name": "lighthouse", "ports": [
                                    {"name": "management", "containerPort": 8558, "protocol": "TCP"},
                                    {"name": "remoting", "containerPort": p, "protocol": "TCP"}]}]},
                                "status": {"phase": "Running", "podIP": "127.0.0.1",
                                           "containerStatuses": [{"name": "lighthouse", "ready": false}]}
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                axum::Json(serde_json::json!({
                    "kind": "PodList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"}, "items": items
                }))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[test]
fn kubernetes_api_discovery_with_three_contact_points_forms_exactly_one_cluster() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let api = rt.block_on(fake_kubernetes_api(ports.clone()));
    let env = [
        ("CLUSTER_DISCOVERY", "kubernetes-api".to_string()),
        ("KUBERNETES_API_URL", format!("http://127.0.0.1:{api}")),
        ("CLUSTER_DISCOVERY_LABEL_SELECTOR", "app=lighthouse".into()),
        ("CLUSTER_DISCOVERY_PORT_NAME", "remoting".into()),
        ("POD_NAMESPACE", "test".into()),
        ("REQUIRED_CONTACT_POINT_NR", "3".into()),
    ];
    let nodes: Vec<Proc> = ports
        .iter()
        .map(|p| {
            let mgmt = free_port();
            let mut cmd = Command::new(BIN);
            cmd.env_clear()
                .args([
                    "--port",
                    &p.to_string(),
                    "--management-port",
                    &mgmt.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in base_env().iter().chain(env.iter()) {
                cmd.env(k, v);
            }
            Proc {
                child: cmd.spawn().unwrap(),
                port: *p,
                mgmt,
            }
        })
        .collect();
    let all: BTreeSet<String> = nodes.iter().map(Proc::address).collect();
    let lowest = all.iter().min().cloned();
    for n in &nodes {
        assert!(wait_view(&rt, n, Duration::from_secs(15), |s| up_set(s)
            == all
            && s.converged));
    }
    for n in &nodes {
        let s = members(&rt, n).unwrap();
        assert_eq!(s.members.len(), 3, "one cluster of three");
        assert_eq!(s.leader, lowest);
        let first = s.members.iter().find(|m| m.up_number == 1).unwrap();
        assert_eq!(
            Some(&first.node),
            lowest.as_ref(),
            "the lowest address formed it"
        );
    }
}
