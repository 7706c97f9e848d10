//! pricing-web's HTTP server as a browser-facing stranger meets it: any bytes on a TCP
//! connection (requests for every route, and `/ws` upgrades followed by WebSocket frames).
//! The server runs the service's own router on a real listener, with a hub that has prices.
//! It must answer or close, and keep serving: every 64th input also checks that a plain
//! `GET /alive` is still answered.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use akka_cqrs_fuzz::{exchange, request, runtime};
use domain::Ticker;
use libfuzzer_sys::fuzz_target;
use pricing_web::hub::PriceHub;

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        runtime().block_on(async {
            let tickers: Vec<Ticker> = ["MSFT", "AAPL"]
                .iter()
                .map(|t| Ticker::new(t).expect("ticker"))
                .collect();
            let hub = PriceHub::new(tickers, 100);
            hub.set_ready(true);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a free port");
            let addr = listener.local_addr().expect("bound");
            tokio::spawn(pricing_web::http::serve(
                listener,
                hub,
                None,
                std::future::pending(),
            ));
            addr
        })
    })
}

fuzz_target!(|data: &[u8]| {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let addr = server();
    runtime().block_on(async {
        exchange(addr, data)
            .await
            .expect("the server accepts connections");
        if COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64 == 0 {
            let answer = request(addr, "/alive")
                .await
                .expect("the server accepts connections");
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "the server stopped answering: {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
    });
});
