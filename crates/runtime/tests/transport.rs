//! Transport tests over real TCP: delivery into actor mailboxes in order, trace
//! context, the cookie check, and garbage on the cluster port.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::remote::Inbound;
use runtime::{RemoteRef, Remoting, RemotingConfig, SendError, SendPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

struct Forward;

impl Actor for Forward {
    type Msg = (u64, Option<String>);
    type State = mpsc::UnboundedSender<(u64, Option<String>)>;
    type Arguments = mpsc::UnboundedSender<(u64, Option<String>)>;
    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        a: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(a)
    }
    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        m: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = s.send(m);
        Ok(())
    }
}

async fn node(cookie: &str) -> Remoting {
    Remoting::start(RemotingConfig {
        cookie: cookie.to_string(),
        handshake_timeout: Duration::from_secs(1),
        ..RemotingConfig::default()
    })
    .await
    .unwrap()
}

async fn sink(r: &Remoting) -> mpsc::UnboundedReceiver<(u64, Option<String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (a, _) = Actor::spawn(None, Forward, tx).await.unwrap();
    r.register_with("sink", a, |inb: Inbound<'_>| {
        let n: u64 = postcard::from_bytes(inb.payload)?;
        Ok((n, inb.trace_context.map(str::to_string)))
    });
    rx
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn messages_arrive_in_order_with_trace_context_both_ways() {
    let a = node("c").await;
    let b = node("c").await;
    let mut rb = sink(&b).await;
    let mut ra = sink(&a).await;
    let to_b = RemoteRef::<u64>::new(b.self_address().address.clone(), "sink");
    let to_a = RemoteRef::<u64>::new(a.self_address().address.clone(), "sink");
    for i in 0..10_000u64 {
        let tc = (i % 1000 == 0).then_some(TP);
        a.tell(&to_b, &i, tc, SendPolicy::Wait).await.unwrap();
    }
    b.tell(&to_a, &7, None, SendPolicy::Wait).await.unwrap();
    for i in 0..10_000u64 {
        let (n, tc) = tokio::time::timeout(Duration::from_secs(10), rb.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, i);
        assert_eq!(tc.as_deref(), (i % 1000 == 0).then_some(TP));
    }
    assert_eq!(ra.recv().await.unwrap().0, 7);
    // one connection serves both directions
    let sa = a.peer_stats();
    assert_eq!(sa.len(), 1);
    assert!(sa[0].connected && sa[0].sent == 10_000 && sa[0].received == 1);
    assert!(sa[0].frames_out < 10_000, "writes are batched");
}

#[tokio::test]
async fn local_references_deliver_without_the_network() {
    let a = node("c").await;
    let mut ra = sink(&a).await;
    let me = RemoteRef::<u64>::new(a.self_address().address.clone(), "sink");
    a.tell(&me, &42, Some(TP), SendPolicy::Fail).await.unwrap();
    assert_eq!(ra.recv().await.unwrap(), (42, Some(TP.to_string())));
    let nobody = RemoteRef::<u64>::new(a.self_address().address.clone(), "nobody");
    assert!(matches!(
        a.try_tell(&nobody, &1, None),
        Err(SendError::UnknownRecipient(_))
    ));
}

#[tokio::test]
async fn wrong_cookie_is_refused_and_nothing_delivered() {
    let a = node("right").await;
    let b = node("wrong").await;
    let mut ra = sink(&a).await;
    let to_a = RemoteRef::<u64>::new(a.self_address().address.clone(), "sink");
    for i in 0..5u64 {
        b.tell(&to_a, &i, None, SendPolicy::Wait).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ra.try_recv().is_err());
    assert!(a.stats().handshakes_refused >= 1);
    assert!(!b.peer_stats()[0].connected);
}

#[tokio::test]
async fn full_queue_fails_under_fail_policy() {
    let a = Remoting::start(RemotingConfig {
        queue_capacity: 4,
        ..RemotingConfig::default()
    })
    .await
    .unwrap();
    // a listener that accepts but never answers: the queue cannot drain quickly
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let to = RemoteRef::<u64>::new(
        runtime::NodeAddress::new("AkkaTrader", "127.0.0.1", port),
        "sink",
    );
    let mut full = false;
    for i in 0..100u64 {
        if let Err(e) = a.try_tell(&to, &i, None) {
            assert!(matches!(e, SendError::QueueFull(_)));
            full = true;
            break;
        }
    }
    assert!(full);
    let big = vec![0u8; 5 * 1024 * 1024];
    let to_big = RemoteRef::<Vec<u8>>::new(to.node.clone(), "sink");
    assert!(matches!(
        a.try_tell(&to_big, &big, None),
        Err(SendError::TooLarge(_))
    ));
}

async fn expect_closed(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection was not closed");
}

#[tokio::test]
async fn garbage_closes_the_connection_and_the_node_keeps_serving() {
    let a = node("c").await;
    let mut ra = sink(&a).await;
    let target = a.self_address().address.socket_addr_string();
    // random bytes
    let mut s = TcpStream::connect(&target).await.unwrap();
    let junk: Vec<u8> = (0..4096).map(|i| (i * 7919 % 251) as u8).collect();
    s.write_all(&junk).await.unwrap();
    expect_closed(s).await;
    // oversized length prefix
    let mut s = TcpStream::connect(&target).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(s).await;
    // truncated frame: says 100 bytes, sends 10, then waits (handshake timeout closes it)
    let mut s = TcpStream::connect(&target).await.unwrap();
    s.write_all(&100u32.to_be_bytes()).await.unwrap();
    s.write_all(&[1u8; 10]).await.unwrap();
    expect_closed(s).await;
    // a well-formed frame that is not a handshake
    let mut s = TcpStream::connect(&target).await.unwrap();
    s.write_all(&3u32.to_be_bytes()).await.unwrap();
    s.write_all(&[9, 9, 9]).await.unwrap();
    expect_closed(s).await;
    assert!(a.stats().handshakes_refused >= 4);
    // still serving
    let b = node("c").await;
    let to_a = RemoteRef::<u64>::new(a.self_address().address.clone(), "sink");
    b.tell(&to_a, &99, None, SendPolicy::Wait).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ra.recv())
        .await
        .unwrap();
    assert_eq!(got.unwrap().0, 99);
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts_at_the_same_port() {
    let a = node("c").await;
    let b = node("c").await;
    let port = b.self_address().address.port;
    let mut rb = sink(&b).await;
    let to_b = RemoteRef::<u64>::new(b.self_address().address.clone(), "sink");
    a.tell(&to_b, &1, None, SendPolicy::Wait).await.unwrap();
    assert_eq!(rb.recv().await.unwrap().0, 1);
    b.shutdown(Duration::from_millis(10)).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b2 = Remoting::start(RemotingConfig {
        cookie: "c".into(),
        port,
        ..RemotingConfig::default()
    })
    .await
    .unwrap();
    let mut rb2 = sink(&b2).await;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut i = 100u64;
        loop {
            a.tell(&to_b, &i, None, SendPolicy::Wait).await.unwrap();
            i += 1;
            if let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_millis(100), async {
                Ok::<_, ()>(rb2.recv().await)
            })
            .await
            {
                return m.0;
            }
        }
    })
    .await
    .expect("no delivery after restart");
    assert!(got >= 100);
    assert_eq!(a.peer_stats()[0].uid, b2.self_address().uid);
}

fn tls(cert: &str, key: &str) -> Option<runtime::tls::TlsSettings> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    Some(
        runtime::tls::TlsSettings::from_pem_files(
            &dir.join(cert),
            &dir.join(key),
            &dir.join("ca.pem"),
        )
        .unwrap(),
    )
}

async fn tls_node(cert: &str, key: &str) -> Remoting {
    Remoting::start(RemotingConfig {
        cookie: "c".into(),
        tls: tls(cert, key),
        handshake_timeout: Duration::from_secs(1),
        ..RemotingConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn mutual_tls_delivers_and_refuses_foreign_certificates_and_plain_tcp() {
    let a = tls_node("node.pem", "node.key").await;
    let b = tls_node("node.pem", "node.key").await;
    let mut rb = sink(&b).await;
    let to_b = RemoteRef::<u64>::new(b.self_address().address.clone(), "sink");
    for i in 0..100u64 {
        a.tell(&to_b, &i, Some(TP), SendPolicy::Wait).await.unwrap();
    }
    for i in 0..100u64 {
        let got = tokio::time::timeout(Duration::from_secs(5), rb.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (i, Some(TP.to_string())));
    }
    // a certificate from another CA: refused by b
    let intruder = tls_node("intruder.pem", "intruder.key").await;
    intruder
        .tell(&to_b, &1000, None, SendPolicy::Wait)
        .await
        .unwrap();
    // plain TCP with the right cookie: refused too
    let plain = node("c").await;
    plain
        .tell(&to_b, &2000, None, SendPolicy::Wait)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rb.try_recv().is_err(), "nothing from the intruders");
    assert!(b.stats().handshakes_refused >= 2);
}
