//! The HTTP client of the OTLP exporters: owns one plain-HTTP/1.1 `POST` per export batch,
//! made with hyper (already linked by the runtime) on a private current-thread tokio runtime.
//!
//! The SDK calls exporters from its own batch threads (`BatchSpanProcessor`, `PeriodicReader`),
//! outside any tokio runtime, through a blocking executor; so the request runs on this
//! client's runtime and never on the application's workers. Using it instead of the OTLP
//! crate's reqwest client keeps `reqwest`, `url` and the ICU crates out of the build. One
//! connection per batch (every few seconds at most) costs nothing worth pooling. Only
//! `http://` endpoints: inside the cluster network the collector is plain HTTP.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// Sends OTLP/HTTP requests; see the module documentation.
#[derive(Debug)]
pub(crate) struct OtlpHttpClient {
    rt: Option<tokio::runtime::Runtime>,
    timeout: Duration,
}

impl OtlpHttpClient {
    /// A client whose every request (connect, send, read the answer) ends within `timeout`.
    pub(crate) fn new(timeout: Duration) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Self {
            rt: Some(rt),
            timeout,
        })
    }
}

impl Drop for OtlpHttpClient {
    fn drop(&mut self) {
        // The SDK may drop its exporter on an async worker (the last provider handle dropped
        // there); a runtime may only be dropped without blocking in that case.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    if parts.uri.scheme_str() != Some("http") {
        return Err(format!(
            "only http:// OTLP endpoints are supported, not {}",
            parts.uri
        )
        .into());
    }
    let host = parts
        .uri
        .host()
        .ok_or("OTLP endpoint without a host")?
        .to_owned();
    let port = parts.uri.port_u16().unwrap_or(80);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    // HTTP/1.1 origin form: the path on the request line, the authority in Host.
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()?;
    parts
        .headers
        .insert(hyper::header::HOST, authority.parse()?);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    conn.abort();
    Ok(Response::from_parts(parts, body))
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or("the OTLP HTTP client is shut down")?;
        let run = || {
            rt.block_on(async { tokio::time::timeout(self.timeout, post(request)).await })
                .map_err(|_| {
                    HttpError::from(format!("OTLP export timed out after {:?}", self.timeout))
                })
        };
        // The SDK's threads have no tokio context; should a caller export from inside one,
        // block a scoped thread instead of the runtime's worker.
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(run).join())
                .map_err(|_| HttpError::from("the OTLP export thread panicked"))?
        } else {
            run()
        };
        result?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_https_and_reports_an_unreachable_collector() {
        let client = OtlpHttpClient::new(Duration::from_secs(5)).unwrap();
        let send = |uri: &str| {
            let req = Request::post(uri).body(Bytes::from_static(b"x")).unwrap();
            inside_a_tokio_runtime(client.send_bytes(req))
        };
        let err = send("https://127.0.0.1:4318/v1/traces").unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(send(&format!("http://127.0.0.1:{port}/v1/traces")).is_err());
    }

    /// Called from inside a runtime, the client moves the blocking part to a scoped thread
    /// (the SDK's own threads, without a runtime, are covered by the integration tests).
    fn inside_a_tokio_runtime<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f)
    }
}
