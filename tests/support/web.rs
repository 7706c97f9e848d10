//! Test support shared by the crates that test the dashboard (included with `#[path]`):
//! a plain HTTP GET, and the real-browser check that drives Debian's headless `chromium`
//! through `tests/browser/dashboard.mjs` (playwright-core).
//!
//! The browser check needs `chromium` and `npm ci --prefix tests/browser`; `scripts/test.sh`
//! installs both.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The workspace root, from a crate's manifest directory.
pub fn workspace(manifest_dir: &str) -> PathBuf {
    PathBuf::from(manifest_dir).join("../..")
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Opens `url` in headless Chromium, waits until the price chart holds points and a price
/// changes on screen (within `timeout_ms`), saves `target/test-artifacts/{screenshot}`, and
/// returns the driver's JSON report; panics with its output when the check fails.
pub async fn dashboard_check(
    manifest_dir: &str,
    url: &str,
    screenshot: &str,
    timeout_ms: u64,
) -> serde_json::Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let root = workspace(manifest_dir);
    let driver = root.join("tests/browser");
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    assert!(
        driver.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(screenshot);
    let output = tokio::process::Command::new("node")
        .arg(driver.join("dashboard.mjs"))
        .arg(url)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .env("DASHBOARD_TIMEOUT_MS", timeout_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        shot.metadata().unwrap().len() > 10_000,
        "screenshot too small"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}
