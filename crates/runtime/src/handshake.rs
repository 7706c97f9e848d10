//! The cookie handshake that every cluster connection completes before any message is
//! accepted: a mutual HMAC-SHA256 challenge-response over two fresh nonces, so each side
//! proves it knows the shared cookie without ever sending it, and a recorded exchange
//! cannot be replayed (the nonces differ every time).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::address::{NodeAddress, UniqueAddress};
use crate::wire::{Handshake, MAGIC, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};

type HmacSha256 = Hmac<Sha256>;

/// The cookie used when none is configured. Fine for a laptop; a deployment sets
/// `CLUSTER_COOKIE` (the node logs a warning when it runs with this one on a
/// non-loopback address).
pub const DEFAULT_COOKIE: &str = "akka-cqrs-rs-local-development-cookie";

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Socket error.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a handshake message.
    #[error("malformed handshake message")]
    Malformed,
    /// The peer closed the connection.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The peer did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The handshake completed but was refused (by us or by the peer).
    #[error("handshake refused: {0}")]
    Refused(String),
}

fn mac(cookie: &[u8], label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(cookie).expect("hmac accepts any key length");
    m.update(label);
    m.update(a);
    m.update(b);
    m
}

fn proof(cookie: &[u8], label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    mac(cookie, label, a, b).finalize().into_bytes().into()
}

fn verify(cookie: &[u8], label: &[u8], a: &[u8; 32], b: &[u8; 32], got: &[u8; 32]) -> bool {
    mac(cookie, label, a, b).verify_slice(got).is_ok()
}

/// Codec for the handshake phase (small frames only).
pub fn handshake_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_HANDSHAKE_FRAME)
        .new_codec()
}

async fn send<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    msg: &Handshake,
) -> Result<(), HandshakeError> {
    let bytes = postcard::to_allocvec(msg).map_err(|_| HandshakeError::Malformed)?;
    io.send(Bytes::from(bytes)).await?;
    Ok(())
}

async fn recv<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
) -> Result<Handshake, HandshakeError> {
    match io.next().await {
        None => Err(HandshakeError::Closed),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(HandshakeError::Malformed)
        }
        Some(Err(e)) => Err(HandshakeError::Io(e)),
        Some(Ok(frame)) => postcard::from_bytes(&frame).map_err(|_| HandshakeError::Malformed),
    }
}

async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    reason: &str,
) -> HandshakeError {
    let _ = send(
        io,
        &Handshake::Rejected {
            reason: reason.to_string(),
        },
    )
    .await;
    HandshakeError::Refused(reason.to_string())
}

/// Dialer side: proves the cookie to `to` and checks its proof. Returns the peer's
/// unique address.
pub async fn dial<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &UniqueAddress,
    to: &NodeAddress,
    cookie: &str,
    timeout: Duration,
) -> Result<UniqueAddress, HandshakeError> {
    tokio::time::timeout(timeout, async {
        let my_nonce: [u8; 32] = rand::random();
        send(
            io,
            &Handshake::Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                from: me.clone(),
                to: to.clone(),
                nonce: my_nonce,
            },
        )
        .await?;
        let (peer, their_nonce) = match recv(io).await? {
            Handshake::Challenge { from, nonce, proof } => {
                if !verify(cookie.as_bytes(), b"acceptor", &my_nonce, &nonce, &proof) {
                    return Err(refuse(io, "cookie mismatch (acceptor proof invalid)").await);
                }
                (from, nonce)
            }
            Handshake::Rejected { reason } => return Err(HandshakeError::Refused(reason)),
            _ => return Err(HandshakeError::Malformed),
        };
        if peer.address.system != to.system {
            return Err(refuse(io, "actor system name differs").await);
        }
        send(
            io,
            &Handshake::Proof {
                proof: proof(cookie.as_bytes(), b"dialer", &their_nonce, &my_nonce),
            },
        )
        .await?;
        match recv(io).await? {
            Handshake::Accepted => Ok(peer),
            Handshake::Rejected { reason } => Err(HandshakeError::Refused(reason)),
            _ => Err(HandshakeError::Malformed),
        }
    })
    .await
    .map_err(|_| HandshakeError::Timeout)?
}

/// Acceptor side: checks the dialer's proof and proves the cookie back. `admit` may
/// refuse a dialer by identity (for example a quarantined incarnation) with a reason.
pub async fn accept<T, F>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &UniqueAddress,
    cookie: &str,
    timeout: Duration,
    admit: F,
) -> Result<UniqueAddress, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UniqueAddress) -> Result<(), String>,
{
    tokio::time::timeout(timeout, async {
        let (peer, their_nonce) = match recv(io).await? {
            Handshake::Hello {
                magic,
                version,
                from,
                to,
                nonce,
            } => {
                if magic != MAGIC {
                    return Err(HandshakeError::Malformed);
                }
                if version != PROTOCOL_VERSION {
                    return Err(refuse(io, "protocol version differs").await);
                }
                if to.system != me.address.system || from.address.system != me.address.system {
                    return Err(refuse(io, "actor system name differs").await);
                }
                (from, nonce)
            }
            _ => return Err(HandshakeError::Malformed),
        };
        let my_nonce: [u8; 32] = rand::random();
        send(
            io,
            &Handshake::Challenge {
                from: me.clone(),
                nonce: my_nonce,
                proof: proof(cookie.as_bytes(), b"acceptor", &their_nonce, &my_nonce),
            },
        )
        .await?;
        match recv(io).await? {
            Handshake::Proof { proof } => {
                if !verify(
                    cookie.as_bytes(),
                    b"dialer",
                    &my_nonce,
                    &their_nonce,
                    &proof,
                ) {
                    return Err(refuse(io, "cookie mismatch").await);
                }
            }
            Handshake::Rejected { reason } => return Err(HandshakeError::Refused(reason)),
            _ => return Err(HandshakeError::Malformed),
        }
        if let Err(reason) = admit(&peer) {
            return Err(refuse(io, &reason).await);
        }
        send(io, &Handshake::Accepted).await?;
        Ok(peer)
    })
    .await
    .map_err(|_| HandshakeError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(port: u16) -> UniqueAddress {
        UniqueAddress {
            address: NodeAddress::new("S", "127.0.0.1", port),
            uid: u64::from(port),
        }
    }

    async fn run(
        c1: &str,
        c2: &str,
    ) -> (Result<UniqueAddress, String>, Result<UniqueAddress, String>) {
        let (a, b) = tokio::io::duplex(4096);
        let mut fa = Framed::new(a, handshake_codec());
        let mut fb = Framed::new(b, handshake_codec());
        let t = Duration::from_secs(2);
        let (me_a, me_b) = (ua(1), ua(2));
        let (ra, rb) = tokio::join!(
            dial(&mut fa, &me_a, &me_b.address, c1, t),
            accept(&mut fb, &me_b, c2, t, |_| Ok(()))
        );
        (ra.map_err(|e| e.to_string()), rb.map_err(|e| e.to_string()))
    }

    #[tokio::test]
    async fn same_cookie_is_accepted() {
        let (a, b) = run("secret", "secret").await;
        assert_eq!(a.unwrap(), ua(2));
        assert_eq!(b.unwrap(), ua(1));
    }

    #[tokio::test]
    async fn different_cookie_is_refused_by_both() {
        let (a, b) = run("secret", "other").await;
        assert!(a.unwrap_err().contains("cookie"));
        assert!(b.is_err());
    }

    #[test]
    fn proofs_depend_on_label_and_nonces() {
        let n1 = [1u8; 32];
        let n2 = [2u8; 32];
        let p = proof(b"c", b"dialer", &n1, &n2);
        assert!(verify(b"c", b"dialer", &n1, &n2, &p));
        assert!(!verify(b"c", b"acceptor", &n1, &n2, &p));
        assert!(!verify(b"c", b"dialer", &n2, &n1, &p));
        assert!(!verify(b"d", b"dialer", &n1, &n2, &p));
    }
}
