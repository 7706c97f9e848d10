//! Fault tests with real processes: the `lighthouse` binary runs the seed and, with
//! `--roles worker`, the other nodes. Every port comes from the OS. The Kubernetes-API
//! discovery tests run it against `fake-apiserver`, an HTTPS stand-in for the API server.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use runtime::cluster::ClusterSnapshot;
use runtime::http_client;
use runtime::membership::MemberStatus;

use fake_apiserver::{FakeApiServer, Pod};

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
    spawn_at(free_port(), args, env, Stdio::null())
}

/// A node on cluster port `port` (its management port from the OS), with `base_env` and
/// then `env`; its stderr goes to `stderr`.
fn spawn_at(port: u16, args: &[&str], env: &[(&str, String)], stderr: Stdio) -> Proc {
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
        .stderr(stderr);
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
    let v = runtime::AppVersion::built();
    assert!(first.contains(&format!(
        "{} | [lighthouse] | up | {v} |",
        nodes[0].address()
    )));
    assert!(first.contains(&format!("{} | [worker] | up | {v} |", nodes[1].address())));
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

fn lighthouse_pod(i: usize, port: u16) -> Pod {
    Pod::running(format!("lighthouse-{i}"), "127.0.0.1")
        .label("app", "lighthouse")
        .port("management", 8558)
        .port("cluster", port)
}

/// A node with Kubernetes-API discovery against `api`, reading its service account from `sa`.
fn spawn_k8s(port: u16, api: &FakeApiServer, sa: &std::path::Path, extra: &[(&str, &str)]) -> Proc {
    let mut env: Vec<(&str, String)> = vec![
        ("CLUSTER_DISCOVERY", "kubernetes-api".into()),
        ("KUBERNETES_SERVICE_HOST", api.host()),
        ("KUBERNETES_SERVICE_PORT", api.port().to_string()),
        ("KUBERNETES_SERVICE_ACCOUNT_DIR", sa.display().to_string()),
        ("CLUSTER_DISCOVERY_LABEL_SELECTOR", "app=lighthouse".into()),
        ("CLUSTER_DISCOVERY_PORT_NAME", "cluster".into()),
        ("REQUIRED_CONTACT_POINT_NR", "3".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    spawn_at(port, &[], &env, Stdio::piped())
}

fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Akka Cluster Bootstrap's first phase, through the processes: three nodes start at once
/// while the API lists two running lighthouse pods, the third one's container still being
/// created, and a terminating pod of an earlier incarnation. Nobody forms a cluster over several polls;
/// once three pods run, exactly one cluster of three forms, by the lowest address.
#[test]
fn kubernetes_api_discovery_waits_for_the_required_pods_then_forms_exactly_one_cluster() {
    let rt = multi_thread_rt();
    let api = rt.block_on(FakeApiServer::start("akka-cqrs", "sa-token"));
    let sa = tempfile::tempdir().unwrap();
    api.write_service_account(sa.path()).unwrap();
    // sorted, so that counting either ignored pod would let the lowest node form at once
    let mut ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    ports.sort();
    let stale = ports.pop().unwrap();
    api.set_pods(vec![
        lighthouse_pod(0, ports[0]),
        lighthouse_pod(1, ports[1]),
        lighthouse_pod(2, ports[2]).waiting("ContainerCreating"),
        lighthouse_pod(3, stale).terminating(),
    ]);
    let nodes: Vec<Proc> = ports
        .iter()
        .map(|p| spawn_k8s(*p, &api, sa.path(), &[]))
        .collect();

    let polls_before = api.served();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.served() < polls_before + 9 {
        assert!(Instant::now() < deadline, "the nodes do not poll the API");
        std::thread::sleep(Duration::from_millis(100));
    }
    for n in &nodes {
        if let Some(s) = members(&rt, n) {
            assert!(
                up_set(&s).is_empty(),
                "a cluster formed with fewer than 3 running pods: {:?}",
                s.members
            );
        }
    }
    assert_eq!(
        api.rejected(),
        0,
        "every poll carried the service-account token"
    );

    api.set_pods(
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| lighthouse_pod(i, *p))
            .chain([lighthouse_pod(3, stale).terminating()])
            .collect(),
    );
    let all: BTreeSet<String> = nodes.iter().map(Proc::address).collect();
    let lowest = all.iter().min().cloned();
    for n in &nodes {
        assert!(wait_view(&rt, n, Duration::from_secs(20), |s| up_set(s)
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

/// A pod whose `ca.crt` did not sign the API server's certificate never finds its contact
/// points: it says why in its log and exits non-zero after the join timeout, so Kubernetes
/// restarts it.
#[test]
fn a_node_that_does_not_trust_the_api_server_says_why_and_exits_non_zero() {
    let rt = multi_thread_rt();
    let api = rt.block_on(FakeApiServer::start("akka-cqrs", "sa-token"));
    let sa = tempfile::tempdir().unwrap();
    api.write_service_account(sa.path()).unwrap();
    std::fs::write(sa.path().join("ca.crt"), fake_apiserver::unrelated_ca_pem()).unwrap();
    let port = free_port();
    api.set_pods(vec![lighthouse_pod(0, port)]);
    let mut node = spawn_k8s(port, &api, sa.path(), &[("CLUSTER_JOIN_TIMEOUT", "3s")]);
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits after the join timeout");
    assert!(!status.success(), "exit status {status:?}");
    let mut log = String::new();
    node.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("not signed by a CA in") && log.contains("ca.crt"),
        "the log says the API server's certificate is not trusted: {log}"
    );
    assert_eq!(api.served(), 0);
}
