//! A real browser against the dashboard: Debian's headless `chromium`, driven through the
//! DevTools protocol by `tests/browser/dashboard.mjs` (playwright-core), opens the page of a
//! running pricing-web fed with moving prices, waits until the chart holds points and a price
//! changes on screen, and saves a screenshot to `target/test-artifacts/dashboard.png`.
//!
//! Needs `chromium` and `npm ci --prefix tests/browser`; `scripts/test.sh` installs both.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{start, update};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_shows_live_charts() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let script_dir = workspace().join("tests/browser");
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );

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

    let artifacts = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let output = tokio::process::Command::new("node")
        .arg(script_dir.join("dashboard.mjs"))
        .arg(format!("http://{}/", server.addr))
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    feeder.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["points"].as_u64().unwrap() >= 3, "{report}");
    assert_ne!(report["before"], report["after"], "{report}");
    assert_eq!(report["rows"], 3, "{report}");
    assert!(screenshot.metadata().unwrap().len() > 10_000);
}
