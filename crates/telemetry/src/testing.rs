//! An in-process OTLP/HTTP collector for integration tests (feature `testing`): owns a
//! small hyper server on a free loopback port that accepts `POST /v1/traces` and
//! `POST /v1/metrics` with protobuf bodies (`opentelemetry-proto` types), the way the real
//! collector or Jaeger does, and keeps what it received for assertions.
//!
//! ```text
//! let collector = OtlpCollector::start().await?;
//! let node = TelemetryBuilder::new("pricing").otlp_endpoint(&collector.endpoint()).build()?;
//! // ... run code under node.dispatch, flush the guard ...
//! let spans = collector.wait_for_spans(3, Duration::from_secs(10)).await;
//! ```
//!
//! It runs on the caller's tokio runtime; use a multi-threaded runtime, since the SDK's
//! flush blocks the calling thread while the export is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A span as the collector received it, ids in lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id, `None` for a root.
    pub parent_span_id: Option<String>,
    /// The exported span name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// The resource's `service.instance.id`.
    pub service_instance_id: Option<String>,
    /// The span's attributes, values rendered as strings.
    pub attributes: Vec<(String, String)>,
    /// When the span started, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// When the span ended, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// The value of attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One trace as an indented tree of its spans, for a reader without Jaeger (the `otlp-sink`
/// example's `--print`): a header with the trace id, its number of spans and nodes and how
/// long it lasted, then one line per span, children under their parent in the order they
/// started:
///
/// ```text
/// trace 4bf92f3577b34da6a3ce929d0e0e4736: 3 spans on 2 nodes, 12.480 ms
///   orderBook.place         +0.000 ms      0.031 ms                    traders traders-0
///     orderBook.handle      +0.602 ms     11.870 ms  gap     0.571 ms  trade-processor tp-1
///       journal.write       +0.640 ms     11.301 ms
/// ```
///
/// `+` is when the span started after the first one, then how long it took; `gap` is how long
/// after its parent *ended* a span started (a message in transit or in a mailbox, or work
/// waiting for a timer), blank when it started while its parent was still running. The node
/// (`service.name`, then the span's `cluster.node` or the resource's `service.instance.id`)
/// is shown where it changes: a line with a node is a hop to another node. A span whose
/// parent did not arrive starts a tree of its own, marked `(parent ... not received)`.
pub fn render_trace(spans: &[ReceivedSpan]) -> String {
    use std::collections::HashMap;
    use std::fmt::Write as _;

    let Some(first) = spans.first() else {
        return String::new();
    };
    let by_id: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let parent_of = |i: usize| {
        spans[i]
            .parent_span_id
            .as_deref()
            .and_then(|p| by_id.get(p).copied())
    };
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for i in 0..spans.len() {
        match parent_of(i) {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_unix_nano, i));
    by_start(&mut roots);
    children.iter_mut().for_each(by_start);

    // Depth-first, with each span's depth and node; a span without `cluster.node` runs on
    // its parent's node when both come from the same process.
    let mut order: Vec<(usize, usize, String)> = Vec::new();
    let mut stack: Vec<(usize, usize, Option<String>)> =
        roots.iter().rev().map(|&i| (i, 0, None)).collect();
    while let Some((i, depth, parent_node)) = stack.pop() {
        let s = &spans[i];
        let node = match (s.attribute("cluster.node"), parent_node) {
            (Some(n), _) => Some(n.to_owned()),
            (None, Some(p)) => Some(p),
            (None, None) => s.service_instance_id.clone(),
        };
        let place = match &node {
            Some(n) => format!("{} {n}", s.service_name.as_deref().unwrap_or("?")),
            None => s.service_name.clone().unwrap_or_else(|| "?".into()),
        };
        for &c in children[i].iter().rev() {
            let same_process = spans[c].service_name == s.service_name
                && spans[c].service_instance_id == s.service_instance_id;
            stack.push((c, depth + 1, node.clone().filter(|_| same_process)));
        }
        order.push((i, depth, place));
    }

    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let mut nodes: Vec<&str> = order.iter().map(|(_, _, p)| p.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let width = order
        .iter()
        .map(|(i, d, _)| 2 * d + spans[*i].name.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "trace {}: {} spans on {} nodes, {:.3} ms\n",
        first.trace_id,
        spans.len(),
        nodes.len(),
        ms(end.saturating_sub(start)),
    );
    let mut places: HashMap<usize, &str> = HashMap::new();
    for (i, depth, place) in &order {
        let s = &spans[*i];
        let parent = parent_of(*i);
        let gap = parent
            .map(|p| spans[p].end_unix_nano)
            .filter(|&parent_end| s.start_unix_nano >= parent_end)
            .map_or_else(String::new, |parent_end| {
                format!("gap {:>9.3} ms", ms(s.start_unix_nano - parent_end))
            });
        let shown = match parent.and_then(|p| places.get(&p)) {
            Some(&pp) if pp == place => "",
            _ => place.as_str(),
        };
        places.insert(*i, place);
        let name = format!("{:indent$}{}", "", s.name, indent = 2 * depth);
        let at = format!("+{:.3}", ms(s.start_unix_nano.saturating_sub(start)));
        let mut line = format!(
            "  {name:<width$}  {at:>10} ms  {:>9.3} ms  {gap:<16}  {shown}",
            ms(s.end_unix_nano.saturating_sub(s.start_unix_nano)),
        );
        if let (None, Some(p)) = (parent, &s.parent_span_id) {
            let _ = write!(line, "  (parent {p} not received)");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ExportMetricsServiceRequest>,
}

/// The collector; stops serving when dropped.
#[derive(Debug)]
pub struct OtlpCollector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl OtlpCollector {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (port 0: any free port) and serves on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let received: Arc<Mutex<Received>> = Arc::default();
        let state = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
                    // A client that goes away mid-request is not the collector's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// The base URL to configure as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// Takes every span received so far, so that a long-running collector (the `otlp-sink`
    /// example) does not keep them all.
    pub fn take_spans(&self) -> Vec<ReceivedSpan> {
        std::mem::take(&mut self.lock().spans)
    }

    /// Metric export requests received so far (each push of each node counts one).
    pub fn metric_pushes(&self) -> usize {
        self.lock().metrics.len()
    }

    /// The names of every metric received so far (with repetitions across pushes).
    pub fn metric_names(&self) -> Vec<String> {
        self.lock()
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Waits until at least `n` spans arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a metric named `name` arrived or `timeout` passed.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric_names().iter().any(|m| m == name) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<Received>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new()));
    }
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, Vec::new()));
    };
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match path.as_str() {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                lock().spans.extend(flatten(&req));
                reply(
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(req) => {
                lock().metrics.push(req);
                reply(
                    StatusCode::OK,
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        _ => reply(StatusCode::NOT_FOUND, Vec::new()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn find(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value_string(&kv.value))
}

fn flatten(req: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let res = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service_name = find(res, "service.name");
        let service_instance_id = find(res, "service.instance.id");
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: s.kind,
                    service_name: service_name.clone(),
                    service_instance_id: service_instance_id.clone(),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_string(&kv.value)))
                        .collect(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    out
}
