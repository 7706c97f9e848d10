//! Test support: an HTTPS stand-in for the one Kubernetes API call that cluster discovery
//! makes, `GET /api/v1/namespaces/{namespace}/pods?labelSelector=...`.
//!
//! It is as strict as the real API server where discovery depends on it, and fails loudly
//! everywhere else:
//! - TLS with a certificate for `127.0.0.1` and `localhost` signed by a CA of its own, made
//!   fresh for every server ([`FakeApiServer::ca_pem`]); a client that trusts another CA
//!   cannot connect;
//! - every request must carry `Authorization: Bearer <token>` with the token currently
//!   required ([`FakeApiServer::require_token`]), otherwise `401` with a `Status` body, as the
//!   API server answers an expired projected token;
//! - label selectors of equality terms only (`a=b`, `a==b`, `a!=b`, comma-separated); any
//!   other selector, path or method is answered `400`/`404`/`405` with a `Status` body that
//!   says what the fake does not emulate, never with an empty list.
//!
//! [`FakeApiServer::write_service_account`] writes the folder a pod gets at
//! `/var/run/secrets/kubernetes.io/serviceaccount/` (`ca.crt`, `token`, `namespace`), so the
//! code under test reads its configuration exactly as in a pod.
//!
//! The certificates come from `rcgen` and TLS from `tokio-rustls`; HTTP is hyper's HTTP/1.1
//! server, because the Kubernetes clients this stands in for speak HTTP/1.1 to it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One pod as the fake lists it.
#[derive(Clone, Debug)]
pub struct Pod {
    name: String,
    labels: Vec<(String, String)>,
    ip: Option<String>,
    ports: Vec<(String, u16)>,
    phase: String,
    terminating: bool,
    waiting: Option<String>,
}

impl Pod {
    /// A pod in phase `Running` with this IP, its container running.
    pub fn running(name: impl Into<String>, ip: impl Into<String>) -> Self {
        Pod {
            name: name.into(),
            labels: Vec::new(),
            ip: Some(ip.into()),
            ports: Vec::new(),
            phase: "Running".into(),
            terminating: false,
            waiting: None,
        }
    }

    /// A pod in phase `Pending` without an IP yet (scheduled, image not started).
    pub fn pending(name: impl Into<String>) -> Self {
        Pod {
            phase: "Pending".into(),
            ip: None,
            ..Pod::running(name, "")
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Adds a named container port.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.ports.push((name.into(), port));
        self
    }

    /// Marks the pod as being deleted (`metadata.deletionTimestamp` set, still `Running`).
    pub fn terminating(mut self) -> Self {
        self.terminating = true;
        self
    }

    /// Its container waits (`state.waiting.reason`, e.g. `CrashLoopBackOff`) while the pod
    /// is still `Running`.
    pub fn waiting(mut self, reason: &str) -> Self {
        self.waiting = Some(reason.into());
        self
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn matches(&self, terms: &[Term]) -> bool {
        labels_match(terms, |key| {
            self.labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        })
    }

    fn to_json(&self, namespace: &str) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut metadata = json!({
            "name": self.name, "namespace": namespace, "labels": labels,
            "uid": format!("uid-{}", self.name),
        });
        if self.terminating {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
            .collect();
        let state = match &self.waiting {
            Some(reason) => json!({"waiting": {"reason": reason}}),
            None if self.phase == "Running" => {
                json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
            }
            None => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let mut status = json!({
            "phase": self.phase,
            "containerStatuses": [{
                "name": "node", "image": "node:test", "imageID": "", "ready": false,
                "restartCount": 0, "state": state,
            }],
        });
        if let Some(ip) = &self.ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "node", "ports": ports}]},
            "status": status,
        })
    }
}

struct Term {
    key: String,
    value: String,
    equal: bool,
}

fn labels_match<'a>(terms: &[Term], label: impl Fn(&str) -> Option<&'a str>) -> bool {
    terms.iter().all(|t| {
        let value = label(&t.key);
        match t.equal {
            true => value == Some(t.value.as_str()),
            false => value != Some(t.value.as_str()),
        }
    })
}

fn parse_selector(s: &str) -> Result<Vec<Term>, String> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (key, value, equal) = if let Some((k, v)) = t.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!(
                    "the fake API server only emulates equality selectors, not {t:?}"
                ));
            };
            if key.contains(' ') || value.contains(' ') || value.contains('(') {
                return Err(format!(
                    "the fake API server only emulates equality selectors, not {t:?}"
                ));
            }
            Ok(Term {
                key: key.trim().into(),
                value: value.trim().into(),
                equal,
            })
        })
        .collect()
}

#[derive(Default)]
struct State {
    namespace: String,
    token: String,
    pods: Vec<Pod>,
    pods_file: Option<PathBuf>,
    served: u64,
    rejected: u64,
}

/// Where a fake API server listens and what it serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to bind (port 0: any free port).
    pub bind: std::net::SocketAddr,
    /// Names and IPs its certificate is for (what clients connect to).
    pub names: Vec<String>,
    /// A JSON file holding an array of pods in the API's shape, read on every request
    /// (written by whoever runs the pods, such as the Kubernetes harness); `None` serves
    /// the pods given to [`FakeApiServer::set_pods`].
    pub pods_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind: ([127, 0, 0, 1], 0).into(),
            names: vec!["127.0.0.1".into(), "localhost".into()],
            pods_file: None,
        }
    }
}

/// A running fake API server; it stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh CA named `ca_name` and a certificate it signs for `names`: `(ca_pem, cert_der, key_der)`.
fn certificates(
    ca_name: &str,
    names: &[&str],
) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca certificate");
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    (
        ca.pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// The PEM of a CA that signed nothing this process serves: what a pod with the wrong
/// `ca.crt` would trust.
pub fn unrelated_ca_pem() -> String {
    certificates("unrelated CA", &["localhost"]).0
}

impl FakeApiServer {
    /// Starts serving pods of `namespace` on `127.0.0.1` (a port from the OS), requiring
    /// `token`. Must be called inside a Tokio runtime, which then runs the server.
    pub async fn start(namespace: &str, token: &str) -> FakeApiServer {
        Self::start_with(namespace, token, Options::default())
            .await
            .expect("bind 127.0.0.1")
    }

    /// As [`FakeApiServer::start`], with where to listen, the names its certificate is
    /// for, and optionally a file of pods to serve instead of [`FakeApiServer::set_pods`].
    pub async fn start_with(
        namespace: &str,
        token: &str,
        options: Options,
    ) -> std::io::Result<FakeApiServer> {
        let names: Vec<&str> = options.names.iter().map(String::as_str).collect();
        let (ca_pem, cert, key) = certificates("fake-apiserver CA", &names);
        let config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            namespace: namespace.into(),
            token: token.into(),
            pods_file: options.pods_file,
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    // a client that does not trust our CA aborts here; nothing to serve
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(answer(&st, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(FakeApiServer {
            addr,
            ca_pem,
            state,
            task,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The host, as `KUBERNETES_SERVICE_HOST` would carry it.
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port, as `KUBERNETES_SERVICE_PORT` would carry it.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA that signed this server's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes `ca.crt`, `token` and `namespace` into `dir` as Kubernetes mounts them.
    pub fn write_service_account(&self, dir: &Path) -> std::io::Result<()> {
        let st = self.state.lock().unwrap();
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.crt"), &self.ca_pem)?;
        std::fs::write(dir.join("token"), &st.token)?;
        std::fs::write(dir.join("namespace"), &st.namespace)
    }

    /// From now on only `token` is accepted (a rotated projected token).
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = token.into();
    }

    /// Replaces the pods the server lists.
    pub fn set_pods(&self, pods: Vec<Pod>) {
        self.state.lock().unwrap().pods = pods;
    }

    /// Pod lists answered `200` so far.
    pub fn served(&self) -> u64 {
        self.state.lock().unwrap().served
    }

    /// Requests refused `401` so far.
    pub fn rejected(&self) -> u64 {
        self.state.lock().unwrap().rejected
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(st.token.as_str()) {
        st.rejected += 1;
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        );
    }
    if req.method() != hyper::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the fake API server only emulates GET, not {}",
                req.method()
            ),
        );
    }
    let path = req.uri().path();
    let Some(ns) = path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|p| p.strip_suffix("/pods"))
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the fake API server only emulates the pods list, not {path}"),
        );
    };
    let mut selector = String::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "labelSelector" => selector = v.into_owned(),
            // paging and watch parameters the fake answers in one page
            "limit" | "resourceVersion" | "resourceVersionMatch" | "timeoutSeconds" => {}
            other => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("the fake API server does not emulate the parameter {other:?}"),
                );
            }
        }
    }
    let terms = match parse_selector(&selector) {
        Ok(t) => t,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    let items: Vec<Value> = if ns != st.namespace {
        Vec::new()
    } else if let Some(file) = &st.pods_file {
        let pods: Vec<Value> = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("pods file {}: {e}", file.display()),
                );
            }
        };
        pods.into_iter()
            .filter(|p| labels_match(&terms, |k| p["metadata"]["labels"][k].as_str()))
            .collect()
    } else {
        st.pods
            .iter()
            .filter(|p| p.matches(&terms))
            .map(|p| p.to_json(ns))
            .collect()
    };
    st.served += 1;
    let body = json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": st.served.to_string()}, "items": items,
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_of_equality_terms_only() {
        let p = Pod::running("a", "10.0.0.1")
            .label("app", "lighthouse")
            .label("tier", "x");
        assert!(p.matches(&parse_selector("app=lighthouse").unwrap()));
        assert!(p.matches(&parse_selector("app==lighthouse,tier!=y").unwrap()));
        assert!(!p.matches(&parse_selector("app=traders").unwrap()));
        assert!(parse_selector("tier in (a,b)").is_err());
        assert!(parse_selector("app").is_err());
    }
}
