//! The HTTP side of pricing-web (axum): the dashboard, its assets, the JSON API, the live
//! WebSocket, and the health probes Kubernetes calls.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the dashboard page |
//! | `GET /assets/{path}` | embedded CSS, JavaScript and the uPlot library |
//! | `GET /ws` | WebSocket: a snapshot, then every new point (see [`crate::protocol`]) |
//! | `GET /api/tickers` | every ticker with its latest point and change over the kept window |
//! | `GET /api/prices/{ticker}` | that ticker's kept history; 400 for a malformed symbol, 404 for one not shown |
//! | `GET /alive` | 200 while the process serves |
//! | `GET /ready` | 200 once the price feed is connected, else 503 |
//! | `GET /metrics` | Prometheus text of the process's metrics (see [`crate::metrics`]), when given a [`Metrics`] |
//!
//! Bad input only ever affects its own connection: a malformed or oversized WebSocket frame
//! closes that socket; what browsers send is otherwise ignored.

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::Ticker;
use serde::Serialize;
use telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::assets;
use crate::hub::PriceHub;
use crate::protocol::PricePoint;

/// Largest WebSocket message accepted from a browser (browsers send nothing we act on).
const MAX_INBOUND_MESSAGE: usize = 16 * 1024;

/// The routes, bound to `hub`; `/metrics` renders `metrics` when given.
pub fn router(hub: Arc<PriceHub>, metrics: Option<Metrics>) -> Router {
    let app = Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route(
            "/favicon.ico",
            get(|| asset(Path("favicon.svg".to_owned()))),
        )
        .route("/ws", get(websocket))
        .route("/api/tickers", get(tickers))
        .route("/api/prices/{ticker}", get(prices))
        .route("/alive", get(|| async { "alive" }))
        .route("/ready", get(ready))
        .with_state(hub);
    match metrics {
        Some(m) => app.merge(
            Router::new()
                .route("/metrics", get(metrics_text))
                .with_state(m),
        ),
        None => app,
    }
}

/// Serves the routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<PriceHub>,
    metrics: Option<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(hub, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> Html<&'static str> {
    Html(assets::INDEX_HTML)
}

async fn asset(Path(path): Path<String>) -> Response {
    match assets::get(&path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

async fn metrics_text(State(metrics): State<Metrics>) -> Response {
    match metrics.render() {
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

async fn ready(State(hub): State<Arc<PriceHub>>) -> Response {
    if hub.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the cluster client has no receptionist (price feed not connected)",
        )
            .into_response()
    }
}

/// One row of `/api/tickers`.
#[derive(Debug, Serialize)]
struct TickerSummary {
    ticker: Ticker,
    latest: Option<PricePoint>,
    /// Latest price minus the oldest kept price.
    change: Option<f64>,
}

async fn tickers(State(hub): State<Arc<PriceHub>>) -> Json<Vec<TickerSummary>> {
    let rows = hub
        .tickers()
        .iter()
        .map(|&ticker| {
            let history = hub.history(ticker).unwrap_or_default();
            let latest = history.last().copied();
            let change = match (history.first(), latest) {
                (Some(first), Some(last)) => Some(last.price - first.price),
                _ => None,
            };
            TickerSummary {
                ticker,
                latest,
                change,
            }
        })
        .collect();
    Json(rows)
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

#[derive(Debug, Serialize)]
struct History {
    ticker: Ticker,
    points: Vec<PricePoint>,
}

async fn prices(State(hub): State<Arc<PriceHub>>, Path(symbol): Path<String>) -> Response {
    let ticker = match Ticker::new(&symbol) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match hub.history(ticker) {
        Ok(points) => Json(History { ticker, points }).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn websocket(ws: WebSocketUpgrade, State(hub): State<Arc<PriceHub>>) -> Response {
    ws.max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE)
        .on_upgrade(move |socket| session(socket, hub))
}

/// One browser: a snapshot, then the live stream, until either side goes away.
async fn session(mut socket: WebSocket, hub: Arc<PriceHub>) {
    let _counted = hub.client();
    // Subscribe before taking the snapshot, so no point falls between the two; a point in
    // both is drawn once because browsers skip points that are not newer.
    let mut feed = hub.subscribe();
    if socket
        .send(Message::Text(hub.snapshot_frame()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = feed.recv() => {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "slow browser resynchronised with a snapshot");
                        hub.snapshot_frame()
                    }
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(frame)).await.is_err() {
                    break;
                }
            }
            inbound = socket.recv() => match inbound {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "closing a WebSocket after a protocol error");
                    break;
                }
                // Pings are answered by the library; anything else is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}
