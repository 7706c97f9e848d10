//! The `tradectl` binary against in-process nodes: output format, errors and exit
//! codes, leave/down, the bearer token, and `cluster tail`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use runtime::membership::MemberStatus;
use runtime::{AppVersion, Node, NodeAddress, NodeConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tradectl");
const TICK: Duration = Duration::from_millis(100);

async fn node(seeds: &[NodeAddress], roles: &[&str], token: Option<&str>) -> Node {
    let mut cfg = NodeConfig::local(seeds.to_vec(), roles, TICK);
    if let Some(m) = cfg.management.as_mut() {
        m.token = token.map(str::to_string);
    }
    Node::start(cfg).await.unwrap()
}

async fn tradectl(n: &Node, args: &[&str]) -> Output {
    let addr = n.management_addr().unwrap().to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env_clear()
            .arg("--addr")
            .arg(addr)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn up(n: &Node, count: usize) -> bool {
    let s = n.cluster().state();
    s.converged
        && s.members.len() == count
        && s.members.iter().all(|m| m.status == MemberStatus::Up)
}

async fn wait(n: &Node, f: impl Fn(&Node) -> bool) {
    for _ in 0..200 {
        if f(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(flavor = "multi_thread")]
async fn show_status_and_leave_of_the_node_itself() {
    let a = node(&[], &["lighthouse"], None).await;
    let seeds = [a.address().address.clone()];
    let mut cfg = NodeConfig::local(seeds.to_vec(), &["trader", "trade-events"], TICK);
    cfg.cluster.app_version = AppVersion::parse("0.2.0-rc1").unwrap();
    let b = Node::start(cfg).await.unwrap();
    wait(&a, |n| up(n, 2)).await;
    wait(&b, |n| up(n, 2)).await;
    let out = tradectl(&a, &["cluster", "show"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let built = AppVersion::built();
    assert!(
        lines
            .contains(&format!("{} | [lighthouse] | up | {built} |", a.address().address).as_str()),
        "{text}"
    );
    assert!(
        lines.contains(
            &format!(
                "{} | [trade-events,trader] | up | 0.2.0-rc1 |",
                b.address().address
            )
            .as_str()
        ),
        "another member's version, as it joined: {text}"
    );
    assert_eq!(lines[2], "Count: 2 members");
    let out = tradectl(&b, &["cluster", "status"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("node: {}", b.address().address)));
    assert!(
        text.contains("status: up") && text.contains("converged: yes"),
        "{text}"
    );
    let out = tradectl(&b, &["cluster", "leave"]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("Leaving {}", b.address().address))
    );
    let code = tokio::time::timeout(Duration::from_secs(10), b.terminated())
        .await
        .unwrap();
    assert_eq!(code, 0);
    wait(&a, |n| up(n, 1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn down_removes_a_member_and_unknown_members_are_reported() {
    let a = node(&[], &[], None).await;
    let seeds = [a.address().address.clone()];
    let b = node(&seeds, &[], None).await;
    wait(&a, |n| up(n, 2)).await;
    let target = format!("127.0.0.1:{}", b.address().address.port);
    let out = tradectl(&a, &["cluster", "down", &target]).await;
    assert!(out.status.success(), "{out:?}");
    let code = tokio::time::timeout(Duration::from_secs(10), b.terminated())
        .await
        .unwrap();
    assert_eq!(code, 0, "a downed node shuts itself down");
    wait(&a, |n| up(n, 1)).await;
    let out = tradectl(&a, &["cluster", "down", "127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mutating_requests_need_the_token_when_one_is_set() {
    let a = node(&[], &[], Some("s3cret-token")).await;
    wait(&a, |n| up(n, 1)).await;
    let out = tradectl(&a, &["cluster", "leave"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = tradectl(&a, &["--token", "wrong", "cluster", "leave"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(a.cluster().state().self_status, Some(MemberStatus::Up));
    let out = tradectl(&a, &["--token", "s3cret-token", "cluster", "leave"]).await;
    assert!(out.status.success(), "{out:?}");
    let code = tokio::time::timeout(Duration::from_secs(10), a.terminated())
        .await
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn an_unreachable_node_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env_clear()
            .args(["--addr", &format!("127.0.0.1:{port}"), "cluster", "show"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the management API"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follows_membership_changes() {
    let a = node(&[], &[], None).await;
    wait(&a, |n| up(n, 1)).await;
    let addr = a.management_addr().unwrap().to_string();
    let mut child = Command::new(BIN)
        .env_clear()
        .args(["--addr", &addr, "cluster", "tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with("current state of"), "{first}");
    let seeds = [a.address().address.clone()];
    let b = node(&seeds, &["worker"], None).await;
    let want = format!(
        "MemberUp | {} | [worker] | up | {} |",
        b.address().address,
        AppVersion::built()
    );
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = rx.recv().await {
            if l == want {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, Ok(true));
}
