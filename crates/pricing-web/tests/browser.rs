//! A real browser against the dashboard: headless Chromium opens the page of a running
//! pricing-web fed with moving prices, waits until the chart holds points and a price
//! changes on screen, and saves `target/test-artifacts/dashboard.png` (see
//! `tests/support/web.rs` at the workspace root).

mod support;
#[path = "../../../tests/support/web.rs"]
mod web;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{start, update};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_shows_live_charts() {
    let server = start(&["MSFT", "AAPL", "TSLA"]).await;
    // Prices that move: a seeded random walk per ticker, one update every 100 ms.
    let hub = server.hub.clone();
    let feeder = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut prices = [30.0f64, 25.0, 40.0];
        for n in 1..=600u64 {
            for (i, t) in ["MSFT", "AAPL", "TSLA"].iter().enumerate() {
                prices[i] += rng.random_range(-0.5..0.5);
                let volume = rng.random_range(5.0..60.0);
                hub.publish(&update(t, prices[i], volume, n)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let report = web::dashboard_check(
        env!("CARGO_MANIFEST_DIR"),
        &format!("http://{}/", server.addr),
        "dashboard.png",
        30_000,
    )
    .await;
    feeder.abort();
    assert!(report["points"].as_u64().unwrap() >= 3, "{report}");
    assert_ne!(report["before"], report["after"], "{report}");
    assert_eq!(report["rows"], 3, "{report}");
}
