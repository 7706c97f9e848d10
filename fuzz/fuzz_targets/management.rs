//! A node's management API (Akka Management's routes: members, leave and down, shards, ready,
//! alive, metrics, events) as anyone who can reach its port meets it: any bytes on a TCP
//! connection. The node is a live one-node cluster hosting the order books and the price
//! aggregators, with a management token as in a deployment; inputs that carry the token (the
//! seeds do) may make it leave, and the harness then starts it again. It must answer or close,
//! and keep serving: every 64th input also checks `GET /alive`.
#![no_main]

use akka_cqrs_fuzz::{exchange, node, request, runtime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let node = node();
    runtime().block_on(async {
        let _ = exchange(node.management, data).await;
        if COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64 == 0 {
            alive(&node).await;
        }
    });
});

/// `GET /alive` is answered while the node is up. An input can make the node leave or be
/// downed, and then its management API stops with it: a failed check counts only when the
/// node is still Up half a second later and a second check fails too.
async fn alive(node: &akka_cqrs_fuzz::FuzzNode) {
    for attempt in 0..2 {
        let answer = request(node.management, "/alive").await.unwrap_or_default();
        if answer.starts_with(b"HTTP/1.1 200") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if !node.is_up() {
            return;
        }
        assert!(
            attempt == 0,
            "management stopped answering while the node is up: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
