//! `tradectl`, the operator CLI: talks to a node's management API
//! (see [`runtime::management`]).
//!
//! ```text
//! tradectl --addr 127.0.0.1:8558 cluster show     # one line per member, then a count
//! tradectl cluster status                         # this node, leader, oldest, convergence
//! tradectl cluster leave [ADDRESS]                # default: the node it talks to
//! tradectl cluster down ADDRESS
//! tradectl cluster tail                           # follows membership changes until Ctrl-C
//! tradectl shards orderBook                       # one line per node: shards and entities
//! tradectl --web 127.0.0.1:8080 price history MSFT  # the kept price history (pricing-web)
//! tradectl --web 127.0.0.1:8080 price track MSFT    # new prices as they come, until Ctrl-C
//! ```
//!
//! `--token` (or `MANAGEMENT_TOKEN`) is sent as a bearer token for leave and down.
//! Exit codes: 0 success, 1 the node is unreachable or refused the request, 2 usage.
//!
//! Unlike the services, `tradectl` does not call `telemetry::init`: it is a short-lived
//! command whose output is its result, it sends no cluster messages a trace could follow, and
//! it has no `/metrics` to serve.

#![warn(missing_docs)]

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_body_util::BodyExt;
use runtime::cluster::{ClusterSnapshot, MemberInfo};
use runtime::http_client::{self, HttpError, percent_encode};

/// Command line of `tradectl`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tradectl", version, about = "Operate the AkkaTrader cluster")]
pub struct Cli {
    /// Management address of the node to talk to.
    #[arg(long, env = "TRADECTL_ADDR", default_value = "127.0.0.1:8558")]
    pub addr: String,
    /// Bearer token for mutating requests.
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address of pricing-web, for `price` commands.
    #[arg(long, env = "TRADECTL_WEB", default_value = "127.0.0.1:8080")]
    pub web: String,
    /// Request timeout, e.g. 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    runtime::config::parse_duration(s)
}

/// Top-level commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Shard distribution of a sharded type over the nodes (`orderBook`, `priceAggregator`).
    Shards {
        /// The entity type name.
        type_name: String,
    },
    /// Prices, from pricing-web (`--web`).
    #[command(subcommand)]
    Price(PriceCommand),
}

/// `tradectl price ...`
#[derive(Debug, Clone, Subcommand)]
pub enum PriceCommand {
    /// The kept history of a ticker, oldest first.
    History {
        /// The ticker, e.g. MSFT.
        ticker: String,
    },
    /// Prints each new price of a ticker as it arrives, until Ctrl-C.
    Track {
        /// The ticker, e.g. MSFT.
        ticker: String,
    },
}

/// How often `price track` looks for new points.
const TRACK_INTERVAL: Duration = Duration::from_millis(500);

/// `tradectl cluster ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// One line per member: address | [roles] | status | app version |, then the count.
    Show,
    /// This node's status, the leader, the oldest member, convergence, counts.
    Status,
    /// Ask a member to leave gracefully (default: the node tradectl talks to).
    Leave {
        /// Member address (`akka.tcp://System@host:port` or `host:port`).
        address: Option<String>,
    },
    /// Mark a member Down.
    Down {
        /// Member address.
        address: String,
    },
    /// Follow membership changes until Ctrl-C.
    Tail,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The node did not answer.
    #[error("cannot reach the management API at {addr}: {source}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Why.
        source: HttpError,
    },
    /// The node answered with an error.
    #[error("{addr} answered {status}: {message}")]
    Refused {
        /// Address.
        addr: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer was not what a node sends.
    #[error("unexpected answer from {0}: {1}")]
    Protocol(String, String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

impl Cli {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CtlError> {
        get_json_from(&self.addr, path, self.timeout).await
    }
}

async fn get_json_from<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<T, CtlError> {
    let url = format!("http://{addr}{path}");
    let (status, body) = http_client::request("GET", &url, None, None, timeout)
        .await
        .map_err(|source| CtlError::Unreachable {
            addr: addr.to_string(),
            source,
        })?;
    if status != 200 {
        return Err(CtlError::Refused {
            addr: addr.to_string(),
            status,
            message: body,
        });
    }
    serde_json::from_str(&body).map_err(|e| CtlError::Protocol(addr.to_string(), e.to_string()))
}

/// One line per node of `GET /cluster/shards/{type}`, then the totals.
pub fn render_shards(stats: &serde_json::Value) -> String {
    let mut out = String::new();
    let (mut shards, mut entities) = (0, 0);
    for r in stats["regions"].as_array().into_iter().flatten() {
        let s = r["shards"].as_u64().unwrap_or(0);
        let e = r["entities"].as_u64().unwrap_or(0);
        shards += s;
        entities += e;
        out.push_str(&format!(
            "{} | shards={s} | entities={e}\n",
            r["address"].as_str().unwrap_or("?")
        ));
    }
    for f in stats["failed"].as_array().into_iter().flatten() {
        out.push_str(&format!("{} | no answer\n", f.as_str().unwrap_or("?")));
    }
    out.push_str(&format!("Total: {shards} shards, {entities} entities\n"));
    out
}

/// One line per price point of `GET /api/prices/{ticker}`.
pub fn price_line(ticker: &str, p: &serde_json::Value) -> String {
    format!(
        "{ticker} | price {:.4} | volume {:.1} | matches {} | at {}\n",
        p["price"].as_f64().unwrap_or(f64::NAN),
        p["volume"].as_f64().unwrap_or(f64::NAN),
        p["matches"].as_u64().unwrap_or(0),
        p["at"].as_i64().unwrap_or(0)
    )
}

impl Cli {
    async fn operate(&self, address: &str, op: &str) -> Result<String, CtlError> {
        let path = format!("/cluster/members/{}", percent_encode(address));
        let body = serde_json::json!({ "operation": op }).to_string();
        let (status, resp) = http_client::request(
            "PUT",
            &self.url(&path),
            self.token.as_deref(),
            Some(body),
            self.timeout,
        )
        .await
        .map_err(|source| CtlError::Unreachable {
            addr: self.addr.clone(),
            source,
        })?;
        let message = serde_json::from_str::<serde_json::Value>(&resp)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(resp);
        if status != 200 {
            return Err(CtlError::Refused {
                addr: self.addr.clone(),
                status,
                message,
            });
        }
        Ok(message)
    }
}

/// One member line: `akka.tcp://AkkaTrader@127.0.0.1:4053 | [lighthouse] | up | 0.1.0 |`
/// (with ` unreachable` appended when some member cannot reach it). The last column is
/// the member's application version, which tells old pods from new ones in a rolling update.
pub fn member_line(m: &MemberInfo) -> String {
    let roles: Vec<&str> = m.roles.iter().map(String::as_str).collect();
    let mut line = format!(
        "{} | [{}] | {} | {} |",
        m.node,
        roles.join(","),
        m.status,
        m.app_version
    );
    if !m.reachable {
        line.push_str(" unreachable");
    }
    line
}

/// The output of `cluster show` for a view.
pub fn render_show(s: &ClusterSnapshot) -> String {
    let mut out = String::new();
    for m in &s.members {
        out.push_str(&member_line(m));
        out.push('\n');
    }
    out.push_str(&format!("Count: {} members\n", s.members.len()));
    out
}

/// The output of `cluster status` for a view.
pub fn render_status(s: &ClusterSnapshot) -> String {
    let status = s
        .self_status
        .map_or("not joined".to_string(), |st| st.to_string());
    let mut counts = std::collections::BTreeMap::new();
    for m in &s.members {
        *counts.entry(m.status.to_string()).or_insert(0) += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "node: {}\nstatus: {}\nleader: {}\noldest: {}\nconverged: {}\nmembers: {} ({})\nunreachable: {}\n",
        s.self_node,
        status,
        s.leader.as_deref().unwrap_or("none"),
        s.oldest.as_deref().unwrap_or("none"),
        if s.converged { "yes" } else { "no" },
        s.members.len(),
        counts.join(", "),
        s.unreachable.len()
    )
}

fn render_event(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let kind = v.get("type")?.as_str()?;
    if kind == "CurrentClusterState" {
        let s: ClusterSnapshot = serde_json::from_value(v).ok()?;
        return Some(format!(
            "current state of {}:\n{}",
            s.self_node,
            render_show(&s)
        ));
    }
    if kind == "LeaderChanged" {
        let leader = v.get("leader").and_then(|l| l.as_str()).unwrap_or("none");
        return Some(format!("LeaderChanged | {leader}\n"));
    }
    let m: MemberInfo = serde_json::from_value(v.get("member")?.clone()).ok()?;
    Some(format!("{kind} | {}\n", member_line(&m)))
}

/// Runs one command, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<(), CtlError> {
    match &cli.command {
        Command::Cluster(ClusterCommand::Show) => {
            let s: ClusterSnapshot = cli.get_json("/cluster/members").await?;
            out.write_all(render_show(&s).as_bytes())?;
        }
        Command::Cluster(ClusterCommand::Status) => {
            let s: ClusterSnapshot = cli.get_json("/cluster/members").await?;
            out.write_all(render_status(&s).as_bytes())?;
        }
        Command::Cluster(ClusterCommand::Leave { address }) => {
            let address = match address {
                Some(a) => a.clone(),
                None => {
                    cli.get_json::<ClusterSnapshot>("/cluster/members")
                        .await?
                        .self_node
                }
            };
            let msg = cli.operate(&address, "leave").await?;
            writeln!(out, "{msg}")?;
        }
        Command::Shards { type_name } => {
            let path = format!("/cluster/shards/{}", percent_encode(type_name));
            let stats: serde_json::Value = match cli.get_json(&path).await {
                Err(CtlError::Refused { status: 404, .. }) => {
                    return Err(CtlError::Protocol(
                        cli.addr.clone(),
                        format!(
                            "this node does not shard {type_name:?}; ask a node that hosts or \
                             proxies it (a trade-processor for orderBook, pricing for \
                             priceAggregator)"
                        ),
                    ));
                }
                other => other?,
            };
            out.write_all(render_shards(&stats).as_bytes())?;
        }
        Command::Price(PriceCommand::History { ticker }) => {
            let path = format!("/api/prices/{}", percent_encode(ticker));
            let h: serde_json::Value = get_json_from(&cli.web, &path, cli.timeout).await?;
            for p in h["points"].as_array().into_iter().flatten() {
                out.write_all(price_line(ticker, p).as_bytes())?;
            }
        }
        Command::Price(PriceCommand::Track { ticker }) => {
            let path = format!("/api/prices/{}", percent_encode(ticker));
            let mut last = 0u64;
            loop {
                let h: serde_json::Value = get_json_from(&cli.web, &path, cli.timeout).await?;
                for p in h["points"].as_array().into_iter().flatten() {
                    let n = p["matches"].as_u64().unwrap_or(0);
                    if n > last {
                        last = n;
                        out.write_all(price_line(ticker, p).as_bytes())?;
                        out.flush()?;
                    }
                }
                tokio::time::sleep(TRACK_INTERVAL).await;
            }
        }
        Command::Cluster(ClusterCommand::Down { address }) => {
            let msg = cli.operate(address, "down").await?;
            writeln!(out, "{msg}")?;
        }
        Command::Cluster(ClusterCommand::Tail) => {
            let resp =
                http_client::send("GET", &cli.url("/cluster/events"), None, None, cli.timeout)
                    .await
                    .map_err(|source| CtlError::Unreachable {
                        addr: cli.addr.clone(),
                        source,
                    })?;
            if resp.status() != 200 {
                return Err(CtlError::Refused {
                    addr: cli.addr.clone(),
                    status: resp.status().as_u16(),
                    message: "events stream refused".into(),
                });
            }
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| CtlError::Unreachable {
                    addr: cli.addr.clone(),
                    source: HttpError::Http(e),
                })?;
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let line = String::from_utf8_lossy(&line);
                        if let Some(text) = render_event(line.trim()) {
                            out.write_all(text.as_bytes())?;
                            out.flush()?;
                        }
                    }
                }
            }
            return Err(CtlError::Protocol(
                cli.addr.clone(),
                "the node closed the event stream (it stopped?)".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn shard_lines_and_totals() {
        let stats = serde_json::json!({
            "typeName": "orderBook",
            "regions": [
                {"address": "akka.tcp://AkkaTrader@10.0.0.1:5055", "shards": 15, "entities": 14},
                {"address": "akka.tcp://AkkaTrader@10.0.0.2:5055", "shards": 15, "entities": 14}
            ],
            "failed": ["akka.tcp://AkkaTrader@10.0.0.3:5055"]
        });
        assert_eq!(
            render_shards(&stats),
            "akka.tcp://AkkaTrader@10.0.0.1:5055 | shards=15 | entities=14\n\
             akka.tcp://AkkaTrader@10.0.0.2:5055 | shards=15 | entities=14\n\
             akka.tcp://AkkaTrader@10.0.0.3:5055 | no answer\n\
             Total: 30 shards, 28 entities\n"
        );
    }

    #[test]
    fn price_lines() {
        let p = serde_json::json!({"price": 12.5, "volume": 30.25, "matches": 7, "at": 42});
        assert_eq!(
            price_line("MSFT", &p),
            "MSFT | price 12.5000 | volume 30.2 | matches 7 | at 42\n"
        );
    }
}
