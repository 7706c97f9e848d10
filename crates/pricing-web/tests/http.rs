//! pricing-web over real sockets: the API, the WebSocket stream, and bad input.

mod support;
#[path = "../../../tests/support/web.rs"]
mod web;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pricing_web::ServerMessage;
use support::{start, update};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use web::get;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

async fn next_message(ws: &mut Client) -> ServerMessage {
    loop {
        let frame = timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn next_price(ws: &mut Client) -> (String, f64) {
    loop {
        if let ServerMessage::Price { ticker, point } = next_message(ws).await {
            return (ticker.to_string(), point.price);
        }
    }
}

#[tokio::test]
async fn pages_assets_and_probes_are_served() {
    let server = start(&["MSFT"]).await;
    let (status, body) = get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("uPlot.iife.min.js") && body.contains("/assets/app.js"));
    for path in [
        "/assets/app.js",
        "/assets/app.css",
        "/assets/vendor/uplot/uPlot.iife.min.js",
        "/assets/vendor/uplot/LICENSE",
    ] {
        assert_eq!(get(server.addr, path).await.0, 200, "{path}");
    }
    assert_eq!(get(server.addr, "/assets/nope.js").await.0, 404);
    assert_eq!(get(server.addr, "/alive").await.0, 200);
    assert_eq!(get(server.addr, "/ready").await.0, 200);
    server.hub.set_ready(false);
    let (status, body) = get(server.addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("no receptionist"), "{body}");
}

#[tokio::test]
async fn the_api_lists_tickers_and_history_and_refuses_bad_symbols() {
    let server = start(&["MSFT", "AAPL"]).await;
    server.hub.publish(&update("MSFT", 10.0, 5.0, 1)).unwrap();
    server.hub.publish(&update("MSFT", 12.0, 7.0, 2)).unwrap();

    let (status, body) = get(server.addr, "/api/tickers").await;
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rows[0]["ticker"], "MSFT");
    assert_eq!(rows[0]["latest"]["price"], 12.0);
    assert_eq!(rows[0]["change"], 2.0);
    assert_eq!(rows[1]["ticker"], "AAPL");
    assert!(rows[1]["latest"].is_null());

    let (status, body) = get(server.addr, "/api/prices/MSFT").await;
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let prices: Vec<f64> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price"].as_f64().unwrap())
        .collect();
    assert_eq!(prices, vec![10.0, 12.0]);

    let (status, body) = get(server.addr, "/api/prices/ZZZZ").await;
    assert_eq!(status, 404);
    assert!(body.contains("unknown ticker ZZZZ"), "{body}");
    let (status, body) = get(server.addr, "/api/prices/msft").await;
    assert_eq!(status, 400);
    assert!(body.contains("upper-case"), "{body}");
}

#[tokio::test]
async fn a_browser_gets_a_snapshot_then_every_new_point_once() {
    let server = start(&["MSFT"]).await;
    server.hub.publish(&update("MSFT", 10.0, 5.0, 1)).unwrap();
    let mut ws = connect(server.addr).await;
    match next_message(&mut ws).await {
        ServerMessage::Snapshot { tickers } => {
            let points = &tickers[&support::ticker("MSFT")];
            assert_eq!(points.len(), 1);
            assert_eq!(points[0].price, 10.0);
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    server.hub.publish(&update("MSFT", 11.0, 5.0, 2)).unwrap();
    server.hub.publish(&update("MSFT", 11.0, 5.0, 2)).unwrap(); // duplicate: not pushed
    server.hub.publish(&update("MSFT", 12.0, 5.0, 3)).unwrap();
    assert_eq!(next_price(&mut ws).await, ("MSFT".into(), 11.0));
    assert_eq!(next_price(&mut ws).await, ("MSFT".into(), 12.0));
}

/// `websocket_server_active_connections` as `/metrics` shows it (parsed as Prometheus text).
async fn browsers_on_metrics(addr: std::net::SocketAddr) -> f64 {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "websocket_server_active_connections")
        .unwrap_or_else(|| panic!("no WebSocket gauge in {body}"));
    match sample.value {
        prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("not a gauge: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_the_connected_browsers() {
    let server = start(&["MSFT"]).await;
    assert_eq!(browsers_on_metrics(server.addr).await, 0.0);
    let mut a = connect(server.addr).await;
    let mut b = connect(server.addr).await;
    // Each session counts itself before it sends the snapshot.
    next_message(&mut a).await;
    next_message(&mut b).await;
    assert_eq!(browsers_on_metrics(server.addr).await, 2.0);
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while browsers_on_metrics(server.addr).await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed browser stays counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test]
async fn malformed_json_from_a_browser_is_ignored() {
    let server = start(&["MSFT"]).await;
    let mut ws = connect(server.addr).await;
    next_message(&mut ws).await; // snapshot
    ws.send(Message::text("{not json")).await.unwrap();
    ws.send(Message::binary(vec![0xff, 0x00, 0x13]))
        .await
        .unwrap();
    server.hub.publish(&update("MSFT", 10.0, 5.0, 1)).unwrap();
    assert_eq!(next_price(&mut ws).await, ("MSFT".into(), 10.0));
}

/// Opens a WebSocket by hand on a raw TCP stream, so the test can then send broken frames.
async fn raw_websocket(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    stream
}

/// Reads until the server closes the connection; fails if it stays open for 5 s.
async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let closed = timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a broken connection open");
}

#[tokio::test]
async fn broken_and_oversized_frames_close_only_their_own_connection() {
    let server = start(&["MSFT"]).await;
    let mut healthy = connect(server.addr).await;
    next_message(&mut healthy).await;

    // Garbage: a complete 5-byte frame with reserved bits set, an unknown opcode, and no mask
    // (clients must mask).
    let mut garbage = raw_websocket(server.addr).await;
    garbage
        .write_all(&[0xff, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05])
        .await
        .unwrap();
    assert_closed_by_server(&mut garbage).await;

    // A masked binary frame announcing 1 GiB: far above the 16 KiB limit.
    let mut oversized = raw_websocket(server.addr).await;
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    oversized.write_all(&frame).await.unwrap();
    assert_closed_by_server(&mut oversized).await;

    // The healthy browser is still served.
    server.hub.publish(&update("MSFT", 10.0, 5.0, 1)).unwrap();
    assert_eq!(next_price(&mut healthy).await, ("MSFT".into(), 10.0));
}

#[tokio::test]
async fn a_browser_that_vanishes_mid_stream_leaves_the_others_served() {
    let server = start(&["MSFT"]).await;
    let mut stays = connect(server.addr).await;
    next_message(&mut stays).await;
    let mut leaves = connect(server.addr).await;
    next_message(&mut leaves).await;
    // A stream of updates; one browser reads a little, then its TCP connection just drops.
    let mut n = 0;
    for _ in 0..50 {
        n += 1;
        server
            .hub
            .publish(&update("MSFT", n as f64, 1.0, n))
            .unwrap();
    }
    next_price(&mut leaves).await;
    drop(leaves);
    for _ in 0..50 {
        n += 1;
        server
            .hub
            .publish(&update("MSFT", n as f64, 1.0, n))
            .unwrap();
    }
    let mut last = 0.0;
    for _ in 0..100 {
        last = next_price(&mut stays).await.1;
    }
    assert_eq!(last, 100.0);
    // The server notices the departure and stops counting it.
    timeout(Duration::from_secs(5), async {
        while server.hub.clients() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the vanished browser is no longer counted");
}
