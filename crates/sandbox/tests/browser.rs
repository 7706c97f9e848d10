//! A real browser against the running system: headless Chromium opens the dashboard of a
//! sandbox whose traders are trading, waits until the chart holds data points and a price
//! changes on screen, and saves `target/test-artifacts/sandbox-dashboard.png` (see
//! `tests/support/web.rs` at the workspace root).

mod support;
#[path = "../../../tests/support/web.rs"]
mod web;

use sandbox::Sandbox;
use traders::TradersPacing;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_of_a_trading_cluster_shows_live_charts_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(support::config(
        dir.path(),
        Some(TradersPacing::Load {
            orders_per_second: 100,
        }),
    ))
    .await
    .unwrap();
    let report = web::dashboard_check(
        env!("CARGO_MANIFEST_DIR"),
        &format!("http://{}/", sb.http),
        "sandbox-dashboard.png",
        60_000,
    )
    .await;
    sb.shutdown().await;
    assert!(report["points"].as_u64().unwrap() >= 3, "{report}");
    assert_ne!(report["before"], report["after"], "{report}");
    assert_eq!(report["rows"], 2, "{report}");
}
