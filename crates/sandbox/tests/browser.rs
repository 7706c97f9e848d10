//! A real browser against the running system: Debian's headless `chromium`, driven by
//! `tests/browser/dashboard.mjs` (playwright-core), opens the dashboard of a sandbox whose
//! traders are trading, waits until the chart holds data points and a price changes on
//! screen, and saves a screenshot to `target/test-artifacts/sandbox-dashboard.png`.
//!
//! Needs `chromium` and `npm ci --prefix tests/browser`; `scripts/test.sh` installs both.

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use sandbox::Sandbox;
use traders::TradersPacing;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_of_a_trading_cluster_shows_live_charts_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = workspace().join("tests/browser");
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    assert!(
        driver.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(support::config(
        dir.path(),
        Some(TradersPacing::Load {
            orders_per_second: 100,
        }),
    ))
    .await
    .unwrap();

    let artifacts = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("sandbox-dashboard.png");
    let output = tokio::process::Command::new("node")
        .arg(driver.join("dashboard.mjs"))
        .arg(format!("http://{}/", sb.http))
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .env("DASHBOARD_TIMEOUT_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    sb.shutdown().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["points"].as_u64().unwrap() >= 3, "{report}");
    assert_ne!(report["before"], report["after"], "{report}");
    assert_eq!(report["rows"], 2, "{report}");
}
