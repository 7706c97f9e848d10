//! The management HTTP API (axum) of a node, for probes, operators and `tradectl`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /alive` | 200 while the process serves |
//! | `GET /ready` | 200 only while this node is Up and every [`ReadinessCheck`] passes (for example every shard region registered with its coordinator), else 503 with the reason |
//! | `GET /cluster/members` | JSON: selfNode, leader, oldest, members (node, nodeUid, status, roles, reachable), unreachable |
//! | `PUT /cluster/members/{address}` | body `{"operation":"leave"}` / `operation=down` (form) / `?operation=leave`: leave or down that member |
//! | `GET /cluster/events` | newline-delimited JSON: the current state, then every cluster event as it happens |
//! | `GET /metrics` | Prometheus text of the node's [`telemetry::Metrics`]: the runtime's instruments (see [`crate::metrics`]) and whatever the services registered on the same provider |
//!
//! Mutating routes require `Authorization: Bearer <MANAGEMENT_TOKEN>` when a token is
//! configured; without one they answer only clients on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use telemetry::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::address::NodeAddress;
use crate::cluster::{Cluster, ClusterEvent};
use crate::membership::MemberStatus;

/// Where the management API listens.
#[derive(Clone, Debug)]
pub struct ManagementConfig {
    /// Bind address (`MANAGEMENT_HOST`).
    pub host: String,
    /// Port (`MANAGEMENT_PORT`; 0 = any free port).
    pub port: u16,
    /// Bearer token for mutating routes (`MANAGEMENT_TOKEN`).
    pub token: Option<String>,
    /// More routes served on the same port, merged in at start (for example the sharding
    /// statistics, `GET /cluster/shards/{type}`, of the regions the node will host).
    pub routes: Option<Router>,
    /// What else must be ready before `GET /ready` answers 200, beyond this node being Up
    /// (for example every shard region registered with its coordinator).
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
}

/// A part of the node that must be ready for `GET /ready` to answer 200, as Akka
/// Management's readiness checks: asked on every request, after the node is Up. Keep it
/// cheap and synchronous (read a flag, not the network).
pub trait ReadinessCheck: Send + Sync + std::fmt::Debug + 'static {
    /// `Err(why)` while this part is not ready; the reason goes into the 503 body.
    fn check(&self) -> Result<(), String>;
}

#[derive(Clone)]
struct AppState {
    cluster: Cluster,
    metrics: Metrics,
    token: Option<String>,
    readiness: Arc<[Arc<dyn ReadinessCheck>]>,
}

/// Body of `PUT /cluster/members/{address}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct MemberOperation {
    /// `leave` or `down` (case-insensitive).
    pub operation: String,
}

/// A JSON message answer.
#[derive(Debug, Deserialize, Serialize)]
pub struct MessageBody {
    /// Human-readable outcome.
    pub message: String,
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        Json(MessageBody {
            message: text.into(),
        }),
    )
        .into_response()
}

/// Starts the API; it stops when `stop` is cancelled. Returns the bound address.
/// `/metrics` renders `metrics`.
pub async fn serve(
    cfg: &ManagementConfig,
    cluster: Cluster,
    metrics: Metrics,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        cluster,
        metrics,
        token: cfg.token.clone(),
        readiness: cfg.readiness.clone().into(),
    };
    let app = Router::new()
        .route("/alive", get(alive))
        .route("/ready", get(ready))
        .route("/cluster/members", get(members))
        .route("/cluster/members/{address}", get(member).put(operate))
        .route("/cluster/events", get(events))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let app = match &cfg.routes {
        Some(extra) => app.merge(extra.clone()),
        None => app,
    };
    info!(%addr, "management http listening");
    tokio::spawn(async move {
        let r = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = r {
            warn!(error = %e, "management http stopped");
        }
    });
    Ok(addr)
}

async fn alive() -> &'static str {
    "OK"
}

async fn ready(State(s): State<AppState>) -> Response {
    match s.cluster.state().self_status {
        Some(MemberStatus::Up) => {
            let waiting: Vec<String> = s.readiness.iter().filter_map(|c| c.check().err()).collect();
            if waiting.is_empty() {
                (StatusCode::OK, "Up").into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}", waiting.join("; ")),
                )
                    .into_response()
            }
        }
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {}",
                other.map_or("not joined".to_string(), |s| s.to_string())
            ),
        )
            .into_response(),
    }
}

async fn members(State(s): State<AppState>) -> Response {
    Json(s.cluster.state()).into_response()
}

fn parse_target(s: &AppState, raw: &str) -> Result<NodeAddress, Box<Response>> {
    NodeAddress::parse_with_default(raw, &s.cluster.self_node().address.system)
        .map_err(|e| Box::new(message(StatusCode::BAD_REQUEST, e.to_string())))
}

async fn member(State(s): State<AppState>, Path(address): Path<String>) -> Response {
    let target = match parse_target(&s, &address) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let node = target.to_string();
    match s
        .cluster
        .state()
        .members
        .into_iter()
        .find(|m| m.node == node)
    {
        Some(m) => Json(m).into_response(),
        None => message(StatusCode::NOT_FOUND, format!("{node} is not a member")),
    }
}

fn authorized(s: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Box<Response>> {
    match &s.token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given == Some(token.as_str()) {
                Ok(())
            } else {
                Err(Box::new(message(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token (MANAGEMENT_TOKEN) is required",
                )))
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(Box::new(message(
            StatusCode::FORBIDDEN,
            "mutating routes answer only loopback clients unless MANAGEMENT_TOKEN is set",
        ))),
    }
}

async fn operate(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(address): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(r) = authorized(&s, &headers, peer) {
        return *r;
    }
    let target = match parse_target(&s, &address) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let op = q
        .get("operation")
        .cloned()
        .or_else(|| {
            serde_json::from_str::<MemberOperation>(&body)
                .ok()
                .map(|o| o.operation)
        })
        .or_else(|| {
            body.split('&')
                .find_map(|kv| kv.strip_prefix("operation=").map(str::to_string))
        });
    let Some(op) = op else {
        return message(StatusCode::BAD_REQUEST, "missing operation (leave or down)");
    };
    let node = target.to_string();
    if !s.cluster.state().members.iter().any(|m| m.node == node) {
        return message(StatusCode::NOT_FOUND, format!("{node} is not a member"));
    }
    match op.to_ascii_lowercase().as_str() {
        "leave" => {
            info!(%node, %peer, "leave requested over management http");
            s.cluster.leave(target);
            message(StatusCode::OK, format!("Leaving {node}"))
        }
        "down" => {
            info!(%node, %peer, "down requested over management http");
            s.cluster.down(target);
            message(StatusCode::OK, format!("Downing {node}"))
        }
        other => message(
            StatusCode::BAD_REQUEST,
            format!("unknown operation {other:?} (leave or down)"),
        ),
    }
}

async fn events(State(s): State<AppState>) -> Response {
    let mut first = serde_json::to_value(s.cluster.state()).unwrap_or_default();
    if let Some(o) = first.as_object_mut() {
        o.insert("type".into(), "CurrentClusterState".into());
    }
    let rx = s.cluster.subscribe();
    let head =
        futures::stream::once(
            async move { Ok::<_, std::convert::Infallible>(format!("{first}\n")) },
        );
    let tail = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let line = serde_json::to_string::<ClusterEvent>(&e).unwrap_or_default();
                    return Some((Ok(format!("{line}\n")), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(head.chain(tail)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    match s.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                telemetry::metrics::PROMETHEUS_CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
