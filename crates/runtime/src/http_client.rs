//! A minimal HTTP/1.1 client on hyper for the management calls of `tradectl` and the
//! tests: plain `http://` to a node's management port only. (The Kubernetes API, which
//! needs TLS and rotating credentials, is reached with `kube-client`; see
//! [`crate::discovery::kubernetes`].)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port/path`.
    #[error("unsupported url {0:?} (only http://host[:port]/path)")]
    BadUrl(String),
    /// Could not connect.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// Protocol error.
    #[error("http error: {0}")]
    Http(#[from] hyper::Error),
    /// Building the request failed.
    #[error("bad request: {0}")]
    Request(String),
    /// No answer in time.
    #[error("request to {0} timed out")]
    Timeout(String),
}

/// Percent-encodes everything but unreserved characters (for a path segment or a
/// query value).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `(authority, path-and-query)` of an `http://` URL.
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::BadUrl(url.to_string()))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return Err(HttpError::BadUrl(url.to_string()));
    }
    let auth = if auth
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        auth.to_string()
    } else {
        format!("{auth}:80")
    };
    Ok((auth, path.to_string()))
}

/// Sends one request and returns the response with its body still streaming.
pub async fn send(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<String>,
    timeout: Duration,
) -> Result<hyper::Response<Incoming>, HttpError> {
    let (auth, path) = split_url(url)?;
    tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(&auth)
            .await
            .map_err(|e| HttpError::Connect(auth.clone(), e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", auth.as_str());
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        Ok(sender.send_request(req).await?)
    })
    .await
    .map_err(|_| HttpError::Timeout(url.to_string()))?
}

/// Sends one request and reads the whole body: `(status, body)`.
pub async fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<String>,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let resp = send(method, url, bearer, body, timeout).await?;
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| HttpError::Timeout(url.to_string()))??
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8558/cluster/members").unwrap(),
            ("127.0.0.1:8558".into(), "/cluster/members".into())
        );
        assert_eq!(
            split_url("http://kube").unwrap(),
            ("kube:80".into(), "/".into())
        );
        assert!(split_url("https://kube").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
