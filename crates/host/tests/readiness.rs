//! `/ready` of a service node means ready: Up, and every shard region of the node registered
//! with its coordinator (the sharding readiness check `ServiceNode` wires in).

use std::net::SocketAddr;
use std::time::Duration;

use cluster_sharding::{ShardRegion, ShardingSettings};
use host::ServiceNode;
use runtime::NodeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn ready_becomes(addr: SocketAddr, status: u16) -> String {
    for _ in 0..200 {
        let (s, body) = get(addr, "/ready").await;
        if s == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "/ready never answered {status}: {:?}",
        get(addr, "/ready").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_node_whose_region_has_not_registered_is_not_ready_and_says_why() {
    let config = NodeConfig::local(Vec::new(), &["web"], Duration::from_millis(100));
    let service = ServiceNode::start(config).await.unwrap();
    let addr = service.node.management_addr().expect("management is on");
    // Up, with no region yet: ready.
    assert_eq!(ready_becomes(addr, 200).await, "Up");

    // A proxy for a type hosted on a role no member has: its coordinator never appears, so
    // the region never registers, and the node stays Up but not ready.
    let region: ShardRegion<String> = ShardRegion::start_proxy_on_node(
        ShardingSettings::new("orderBook").with_role("trade-processor"),
        &service.node,
    )
    .await
    .unwrap();
    service.sharding.insert("orderBook", region.clone());
    let body = ready_becomes(addr, 503).await;
    assert_eq!(
        body,
        "not ready: shard region orderBook has not registered with its coordinator"
    );
    // Still Up all along: it is the region, not the membership.
    let (_, members) = get(addr, "/cluster/members").await;
    assert!(members.contains("\"status\":\"Up\""), "{members}");
    service.node.halt().await;
}
