//! Kubernetes-API discovery against an HTTPS fake API server with its own CA that checks
//! the bearer token (`fake-apiserver`): which pods become contact points, token rotation,
//! and a wrong CA. The process-level tests (waiting for N pods, three nodes forming one
//! cluster, exiting after an unsuccessful join) are in the lighthouse crate's
//! `tests/kubernetes_discovery.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use fake_apiserver::{FakeApiServer, Pod};
use runtime::address::NodeAddress;
use runtime::discovery::{KubernetesDiscovery, KubernetesSettings};

fn discovery(server: &FakeApiServer, sa: &Path) -> KubernetesDiscovery {
    KubernetesDiscovery::new(KubernetesSettings {
        api_url: server.url(),
        service_account_dir: sa.to_path_buf(),
        namespace: None,
        label_selector: "app=lighthouse".into(),
        port_name: Some("cluster".into()),
        default_port: 5055,
        pod_service: None,
        system: "AkkaTrader".into(),
        required_contact_points: 2,
    })
    .unwrap()
}

fn lighthouse(name: &str, ip: &str) -> Pod {
    Pod::running(name, ip)
        .label("app", "lighthouse")
        .port("management", 8558)
        .port("cluster", 4053)
}

#[tokio::test]
async fn running_pods_are_listed_over_https_with_the_service_account() {
    let server = FakeApiServer::start("akka-cqrs", "token-1").await;
    let sa = tempfile::tempdir().unwrap();
    server.write_service_account(sa.path()).unwrap();
    server.set_pods(vec![
        lighthouse("lighthouse-0", "10.1.0.10"),
        lighthouse("lighthouse-1", "10.1.0.11").terminating(),
        lighthouse("lighthouse-2", "10.1.0.12").waiting("CrashLoopBackOff"),
        Pod::pending("lighthouse-3").label("app", "lighthouse"),
        Pod::running("traders-0", "10.1.0.20")
            .label("app", "traders")
            .port("cluster", 5055),
    ]);
    let d = discovery(&server, sa.path());
    assert_eq!(d.namespace(), "akka-cqrs", "from the service account");
    let points = d.lookup().await.unwrap();
    assert_eq!(
        points,
        vec![NodeAddress::new("AkkaTrader", "10.1.0.10", 4053)],
        "terminating, waiting, pending and unselected pods are not contact points"
    );
    assert_eq!((server.served(), server.rejected()), (1, 0));
}

#[tokio::test]
async fn a_rotated_token_is_read_again() {
    let server = FakeApiServer::start("akka-cqrs", "token-1").await;
    let sa = tempfile::tempdir().unwrap();
    server.write_service_account(sa.path()).unwrap();
    server.set_pods(vec![lighthouse("lighthouse-0", "10.1.0.10")]);
    let d = discovery(&server, sa.path());
    assert_eq!(d.lookup().await.unwrap().len(), 1);

    // The API server stops accepting the old token; the kubelet writes the new one.
    server.require_token("token-2");
    let e = d.lookup().await.unwrap_err().to_string();
    assert!(e.contains("was refused"), "{e}");
    std::fs::write(sa.path().join("token"), "token-2").unwrap();

    // client-go and kube re-read the file once the token they hold is a minute old
    let start = Instant::now();
    loop {
        match d.lookup().await {
            Ok(points) => {
                assert_eq!(points.len(), 1);
                break;
            }
            Err(e) if start.elapsed() < Duration::from_secs(90) => {
                assert!(e.to_string().contains("was refused"), "{e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the new token was not read within 90 s: {e}"),
        }
    }
    assert!(server.rejected() >= 1);
}

#[tokio::test]
async fn an_api_server_signed_by_another_ca_is_refused_with_a_clear_error() {
    let server = FakeApiServer::start("akka-cqrs", "token-1").await;
    let sa = tempfile::tempdir().unwrap();
    server.write_service_account(sa.path()).unwrap();
    std::fs::write(sa.path().join("ca.crt"), fake_apiserver::unrelated_ca_pem()).unwrap();
    server.set_pods(vec![lighthouse("lighthouse-0", "10.1.0.10")]);
    let e = discovery(&server, sa.path())
        .lookup()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not signed by a CA in") && e.contains("ca.crt"),
        "the error names the CA file: {e}"
    );
    assert!(e.contains("UnknownIssuer"), "and the TLS reason: {e}");
    assert_eq!(
        server.served(),
        0,
        "nothing was served to an untrusting client"
    );
}
