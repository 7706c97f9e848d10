//! The management HTTP API of a running node.

mod support;

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use runtime::NodeAddress;
use runtime::cluster::ClusterSnapshot;
use runtime::http_client::{percent_encode, request};
use runtime::membership::MemberStatus;
use support::{all_up, start, start_with, wait_all};

const T: Duration = Duration::from_secs(3);

fn base(n: &runtime::Node) -> String {
    format!("http://{}", n.management_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_members_and_operations() {
    // a node that cannot join is alive but not ready
    let nowhere = NodeAddress::new("AkkaTrader", "127.0.0.1", 1);
    let lonely = start_with(&[nowhere], |c| {
        c.cluster.shutdown_after_unsuccessful_join = None
    })
    .await;
    assert_eq!(
        request("GET", &format!("{}/alive", base(&lonely)), None, None, T)
            .await
            .unwrap()
            .0,
        200
    );
    let (code, body) = request("GET", &format!("{}/ready", base(&lonely)), None, None, T)
        .await
        .unwrap();
    assert_eq!(code, 503, "{body}");

    let a = start(&[], &["lighthouse"]).await;
    let b = start(&[a.address().address.clone()], &["worker"]).await;
    assert!(wait_all(&[&a, &b], Duration::from_secs(10), |v| all_up(v, 2)).await);
    assert_eq!(
        request("GET", &format!("{}/ready", base(&a)), None, None, T)
            .await
            .unwrap()
            .0,
        200
    );
    let (code, body) = request(
        "GET",
        &format!("{}/cluster/members", base(&b)),
        None,
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["selfNode"], b.address().address.to_string());
    let lowest = a.address().address.clone().min(b.address().address.clone());
    assert_eq!(v["leader"], lowest.to_string());
    let m = &v["members"][0];
    for field in ["node", "nodeUid", "status", "roles", "reachable"] {
        assert!(!m[field].is_null(), "member field {field} in {m}");
    }
    let snap: ClusterSnapshot = serde_json::from_str(&body).unwrap();
    assert_eq!(snap.members.len(), 2);
    let first_up = snap.members.iter().find(|m| m.up_number == 1).unwrap();
    assert_eq!(snap.oldest.as_ref(), Some(&first_up.node));

    // bad requests
    let url = |addr: &str| format!("{}/cluster/members/{}", base(&a), percent_encode(addr));
    let (code, _) = request(
        "PUT",
        &url("no-port"),
        None,
        Some(r#"{"operation":"leave"}"#.into()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(code, 400);
    let (code, _) = request(
        "PUT",
        &url("127.0.0.1:1"),
        None,
        Some(r#"{"operation":"leave"}"#.into()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    let b_addr = b.address().address.to_string();
    let (code, _) = request(
        "PUT",
        &url(&b_addr),
        None,
        Some(r#"{"operation":"jump"}"#.into()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(code, 400);
    let (code, body) = request("GET", &url(&b_addr), None, None, T).await.unwrap();
    assert_eq!(code, 200, "{body}");
    // leave b through a's API (form-encoded body, as Akka Management takes it)
    let (code, body) = request(
        "PUT",
        &url(&b_addr),
        None,
        Some("operation=Leave".into()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let code = tokio::time::timeout(Duration::from_secs(10), b.terminated())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(wait_all(&[&a], Duration::from_secs(5), |v| all_up(v, 1)).await);
    assert_eq!(a.cluster().state().self_status, Some(MemberStatus::Up));
}

/// One sample of a scrape: `metric{labels}` must match exactly one sample.
fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_and_move() {
    let a = start(&[], &[]).await;
    let b = start(&[a.address().address.clone()], &[]).await;
    assert!(wait_all(&[&a, &b], Duration::from_secs(10), |v| all_up(v, 2)).await);
    let get = || async {
        let (code, text) = request("GET", &format!("{}/metrics", base(&a)), None, None, T)
            .await
            .unwrap();
        assert_eq!(code, 200);
        for line in text.lines().filter(|l| l.starts_with('#')) {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
        }
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape::parse(lines).expect("Prometheus text")
    };
    let scrape = get().await;
    assert_eq!(
        scrape.docs["cluster_members"],
        "Cluster members seen by this node, by status"
    );
    assert_eq!(
        sample(
            &scrape,
            "cluster_members",
            &[("cluster_member_status", "up")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &scrape,
            "cluster_members",
            &[("cluster_member_status", "down")]
        ),
        0.0
    );
    assert_eq!(sample(&scrape, "cluster_members_unreachable", &[]), 0.0);
    assert_eq!(sample(&scrape, "cluster_node_up", &[]), 1.0);
    let peer = b.address().address.to_string();
    let peer = [("cluster_peer_address", peer.as_str())];
    assert!(sample(&scrape, "messaging_client_sent_messages_total", &peer) > 0.0);
    assert!(sample(&scrape, "messaging_client_consumed_messages_total", &peer) > 0.0);
    assert_eq!(sample(&scrape, "cluster_remote_peer_connected", &peer), 1.0);
    assert!(sample(&scrape, "actor_mailbox_depth", &[("actor_name", "cluster")]) >= 0.0);
    let before = sample(&scrape, "cluster_heartbeats_received_total", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sample(&get().await, "cluster_heartbeats_received_total", &[]);
    assert!(
        after > before,
        "heartbeat counter moves: {before} -> {after}"
    );
}
