//! Test support shared by the crates that test the dashboard (included with `#[path]`):
//! a plain HTTP GET, and the real-browser check that drives Debian's headless `chromium`.
//!
//! ## Why WebDriver (fantoccini + chromium-driver)
//! The machines that run these tests reach crates.io and Debian's packages but not npm, so the
//! browser is driven from Rust. Of the two Rust drivers, `fantoccini` speaks W3C WebDriver to
//! Debian's `chromium-driver`, which is packaged and versioned with `chromium` itself, so the
//! protocol always matches the browser. `chromiumoxide` would speak the DevTools protocol
//! directly, with a generated protocol crate that must track Chromium's version by hand and is
//! much larger to build. WebDriver covers all this check needs: load a page, evaluate
//! JavaScript, read the browser's log, take a screenshot.
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver`; the check panics with a clear
//! message when either is missing (set `CHROMIUM` / `CHROMEDRIVER` to use other paths).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The workspace root, from a crate's manifest directory.
pub fn workspace(manifest_dir: &str) -> PathBuf {
    PathBuf::from(manifest_dir).join("../..")
}

/// A plain HTTP/1.1 request; returns the status code and the body, or the I/O error.
async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    // Read the head, then the body by its Content-Length (chromedriver keeps the connection
    // open despite `Connection: close`), or up to the end of the stream when there is none.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(closed("the response head"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, head.clone()))?;
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(len) => {
            while raw.len() < head_end + len {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(closed("the end of the body"));
                }
                raw.extend_from_slice(&buf[..n]);
            }
            raw.truncate(head_end + len);
        }
        None => {
            stream.read_to_end(&mut raw).await?;
        }
    }
    Ok((
        status,
        String::from_utf8_lossy(&raw[head_end..]).into_owned(),
    ))
}

fn closed(before: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("connection closed before {before}"),
    )
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    try_request(addr, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// A plain HTTP/1.1 GET; the status code and the body, or the I/O error (for servers that may
/// be down or restarting).
pub async fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    try_request(addr, "GET", path, "").await
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, "").await
}

/// A `chromedriver` child on a free loopback port, killed when dropped.
struct Driver {
    addr: SocketAddr,
    child: tokio::process::Child,
}

impl Driver {
    async fn start(chromedriver: &str) -> Driver {
        // The OS picks the port; chromedriver cannot report one it chose itself. Another
        // process may take the port between the probe and chromedriver's bind, so retry.
        for _ in 0..5 {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = probe.local_addr().unwrap();
            drop(probe);
            let child = tokio::process::Command::new(chromedriver)
                .arg(format!("--port={}", addr.port()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{chromedriver} does not start: {e}"));
            let mut driver = Driver { addr, child };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    let (status, body) = get(addr, "/status").await;
                    if status == 200 && body.contains("\"ready\":true") {
                        return driver;
                    }
                }
                if let Ok(Some(_)) = driver.child.try_wait() {
                    break; // lost the port race: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("{chromedriver} did not become ready");
    }
}

/// The browser's console errors and uncaught page errors since the last call
/// (chromedriver's log endpoint, entries of level SEVERE).
async fn page_errors(driver: SocketAddr, client: &Client) -> Vec<String> {
    let session = client.session_id().await.unwrap().expect("a session");
    let (status, body) = request(
        driver,
        "POST",
        &format!("/session/{session}/se/log"),
        r#"{"type":"browser"}"#,
    )
    .await;
    assert_eq!(status, 200, "chromedriver's browser log: {body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    log["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Evaluates `script` (a function body returning a value) until it returns something other
/// than `null`/`false`, or panics after `timeout` naming `what`.
async fn wait_for(
    client: &Client,
    what: &str,
    script: &str,
    args: Vec<Value>,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let value = client.execute(script, args.clone()).await.unwrap();
        if !(value.is_null() || value == Value::Bool(false)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `url` in headless Chromium, waits until the price chart holds points and a price
/// changes on screen (within `timeout_ms`), saves `target/test-artifacts/{screenshot}`, and
/// returns the report `{ticker, before, after, points, canvases, rows, errors}`; panics when
/// the page logs an error or draws fewer than two charts.
pub async fn dashboard_check(
    manifest_dir: &str,
    url: &str,
    screenshot: &str,
    timeout_ms: u64,
) -> Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let chromedriver =
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for (path, package) in [(&chromium, "chromium"), (&chromedriver, "chromium-driver")] {
        assert!(
            PathBuf::from(path).exists(),
            "{path} is missing: install Debian's {package} (scripts/test.sh does)"
        );
    }
    let timeout = Duration::from_millis(timeout_ms);
    let driver = Driver::start(&chromedriver).await;

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1366,768",
            ],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://{}", driver.addr))
        .await
        .expect("a chromium session through chromedriver");

    let outcome = async {
        client.goto(url).await.unwrap();
        wait_for(
            &client,
            "the live status",
            "return document.querySelector('#status.live') !== null;",
            vec![],
            timeout,
        )
        .await;
        // The chart of the selected ticker holds at least three points...
        wait_for(
            &client,
            "three points on the price chart",
            "return Number(document.querySelector('#price-chart').dataset.points) >= 3;",
            vec![],
            timeout,
        )
        .await;
        let ticker = client
            .execute(
                "return document.querySelector('#selected').textContent.trim();",
                vec![],
            )
            .await
            .unwrap();
        let cell = format!("tr[data-ticker=\"{}\"] .price", ticker.as_str().unwrap());
        let before = client
            .execute(
                "return document.querySelector(arguments[0]).textContent.trim();",
                vec![json!(cell)],
            )
            .await
            .unwrap();
        // ...and its price changes on screen while we watch.
        let after = wait_for(
            &client,
            "the selected ticker's price to change on screen",
            "const now = document.querySelector(arguments[0]).textContent.trim();
             return now !== arguments[1] ? now : null;",
            vec![json!(cell), before.clone()],
            timeout,
        )
        .await;
        let facts = client
            .execute(
                "return {
                   points: Number(document.querySelector('#price-chart').dataset.points),
                   canvases: [...document.querySelectorAll('.chart canvas')]
                     .filter((c) => c.width > 0).length,
                   rows: document.querySelectorAll('#tickers tbody tr').length,
                   height: document.documentElement.scrollHeight,
                   chrome: window.outerHeight - window.innerHeight,
                 };",
                vec![],
            )
            .await
            .unwrap();
        // The whole page in the artifact, as a full-page screenshot would show it.
        let page = facts["height"].as_u64().unwrap_or(768) + facts["chrome"].as_u64().unwrap_or(0);
        let height = page.clamp(768, 4000) as u32;
        client.set_window_size(1366, height).await.unwrap();
        let png = client.screenshot().await.unwrap();
        let errors = page_errors(driver.addr, &client).await;
        (ticker, before, after, facts, png, errors)
    }
    .await;
    client.close().await.unwrap();
    let (ticker, before, after, facts, png, errors) = outcome;

    let artifacts = workspace(manifest_dir).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(screenshot);
    std::fs::write(&shot, &png).unwrap();
    let report = json!({
        "ticker": ticker, "before": before, "after": after,
        "points": facts["points"], "canvases": facts["canvases"], "rows": facts["rows"],
        "errors": errors,
    });
    assert!(errors.is_empty(), "the page logged errors: {report}");
    assert!(
        facts["canvases"].as_u64().unwrap() >= 2,
        "charts not drawn: {report}"
    );
    assert!(png.len() > 10_000, "screenshot too small: {report}");
    report
}
