//! The management HTTP API of a running node.

mod support;

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_and_move() {
    let a = start(&[], &[]).await;
    let b = start(&[a.address().address.clone()], &[]).await;
    assert!(wait_all(&[&a, &b], Duration::from_secs(10), |v| all_up(v, 2)).await);
    let get = || async {
        request("GET", &format!("{}/metrics", base(&a)), None, None, T)
            .await
            .unwrap()
    };
    let (code, text) = get().await;
    assert_eq!(code, 200);
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        // name{labels} value
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("numeric value");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.insert(series.to_string(), value);
    }
    let me = a.address().address.to_string();
    assert_eq!(
        samples[&format!("cluster_members{{node=\"{me}\",status=\"up\"}}")],
        2.0
    );
    assert_eq!(
        samples[&format!("cluster_unreachable_members{{node=\"{me}\"}}")],
        0.0
    );
    let hb = |s: &std::collections::HashMap<String, f64>| {
        s[&format!("cluster_heartbeats_received_total{{node=\"{me}\"}}")]
    };
    let before = hb(&samples);
    let peer = format!(
        "remote_messages_sent_total{{node=\"{me}\",peer=\"{}\"}}",
        b.address().address
    );
    assert!(samples[&peer] > 0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, text) = get().await;
    let after: f64 = text
        .lines()
        .find(|l| l.starts_with("cluster_heartbeats_received_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(after > before, "heartbeat counter moves");
}
