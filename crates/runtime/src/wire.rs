//! The wire format of the cluster transport: frames, the message envelope and the
//! handshake messages.
//!
//! Every byte on a cluster connection belongs to a frame: a 4-byte big-endian length
//! followed by that many bytes (tokio-util's `LengthDelimitedCodec`). The first frames
//! of a connection carry [`Handshake`] messages (postcard), at most
//! [`MAX_HANDSHAKE_FRAME`] bytes each. After the handshake every frame is a data frame:
//! one or more envelopes back to back, each encoded as
//!
//! ```text
//! envelope := varint(len(recipient)) recipient-utf8
//!             0x00 | 0x01 varint(len(traceparent)) traceparent-utf8
//!             varint(len(payload)) payload
//! ```
//!
//! (varint = unsigned LEB128, the same bytes postcard writes for a struct of
//! `&str, Option<&str>, &[u8]`). `recipient` is the name of a registered system actor
//! on the receiving node, `traceparent` an optional W3C trace-context header that
//! carries the sender's trace to the receiver, and `payload` the postcard encoding of
//! the message itself.

use serde::{Deserialize, Serialize};

use crate::address::{NodeAddress, UniqueAddress};

/// Four bytes every handshake starts with, so a stray client is refused at once.
pub const MAGIC: [u8; 4] = *b"ACRS";
/// Version of this wire format; nodes of different versions refuse each other.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame accepted before the handshake completes.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;

/// Messages of the connection handshake (cookie challenge-response in both directions).
///
/// 1. dialer -> acceptor: `Hello` with a fresh nonce;
/// 2. acceptor -> dialer: `Challenge` with its own nonce and a MAC proving it knows the cookie;
/// 3. dialer -> acceptor: `Proof`, the dialer's MAC over both nonces;
/// 4. acceptor -> dialer: `Accepted`, or `Rejected` with a reason, then close.
///
/// The cookie itself never crosses the wire; see [`crate::handshake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// First message of the dialer.
    Hello {
        /// Must equal [`MAGIC`].
        magic: [u8; 4],
        /// Must equal [`PROTOCOL_VERSION`].
        version: u16,
        /// Who is dialing.
        from: UniqueAddress,
        /// Whom the dialer believes it reaches.
        to: NodeAddress,
        /// Random challenge for the acceptor.
        nonce: [u8; 32],
    },
    /// The acceptor's answer: its identity, its challenge, its proof.
    Challenge {
        /// Who accepted.
        from: UniqueAddress,
        /// Random challenge for the dialer.
        nonce: [u8; 32],
        /// HMAC-SHA256(cookie, "acceptor" | dialer nonce | acceptor nonce).
        proof: [u8; 32],
    },
    /// The dialer's proof: HMAC-SHA256(cookie, "dialer" | acceptor nonce | dialer nonce).
    Proof {
        /// The MAC.
        proof: [u8; 32],
    },
    /// The acceptor accepted; data frames follow.
    Accepted,
    /// Refused, with a reason for the log; the connection closes.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// A decoded envelope that borrows from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// Registered name of the target actor on the receiving node.
    pub recipient: &'a str,
    /// W3C `traceparent` of the sender's span, if any.
    pub trace_context: Option<&'a str>,
    /// postcard bytes of the message.
    pub payload: &'a [u8],
}

/// Why a data frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame ended inside an envelope.
    #[error("truncated envelope")]
    Truncated,
    /// A varint was longer than 5 bytes or overflowed.
    #[error("bad varint")]
    BadVarint,
    /// A name or trace context was not UTF-8.
    #[error("invalid utf-8 in envelope")]
    BadUtf8,
    /// The option tag was neither 0 nor 1.
    #[error("bad option tag {0}")]
    BadTag(u8),
}

/// Appends `v` as unsigned LEB128.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u32, WireError> {
    let mut out: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(*pos).ok_or(WireError::Truncated)?;
        *pos += 1;
        if i == 4 && b > 0x0f {
            return Err(WireError::BadVarint);
        }
        out |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(WireError::BadVarint)
}

fn get_slice<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WireError> {
    let len = get_varint(buf, pos)? as usize;
    let end = pos.checked_add(len).ok_or(WireError::Truncated)?;
    let s = buf.get(*pos..end).ok_or(WireError::Truncated)?;
    *pos = end;
    Ok(s)
}

/// Appends one envelope to a data-frame buffer.
pub fn encode_envelope(
    buf: &mut Vec<u8>,
    recipient: &str,
    trace_context: Option<&str>,
    payload: &[u8],
) {
    buf.reserve(recipient.len() + payload.len() + 12);
    put_varint(buf, recipient.len() as u32);
    buf.extend_from_slice(recipient.as_bytes());
    match trace_context {
        None => buf.push(0),
        Some(t) => {
            buf.push(1);
            put_varint(buf, t.len() as u32);
            buf.extend_from_slice(t.as_bytes());
        }
    }
    put_varint(buf, payload.len() as u32);
    buf.extend_from_slice(payload);
}

/// Number of bytes [`encode_envelope`] appends (upper bound).
pub fn envelope_len(recipient: &str, trace_context: Option<&str>, payload: &[u8]) -> usize {
    recipient.len() + trace_context.map_or(0, |t| t.len() + 5) + payload.len() + 11
}

/// Iterates the envelopes of one data frame.
pub struct Envelopes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Envelopes<'a> {
    /// Starts decoding `frame`.
    pub fn new(frame: &'a [u8]) -> Self {
        Self { buf: frame, pos: 0 }
    }
}

impl<'a> Iterator for Envelopes<'a> {
    type Item = Result<EnvelopeRef<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let buf = self.buf;
        let r = (|| {
            let recipient = std::str::from_utf8(get_slice(buf, &mut self.pos)?)
                .map_err(|_| WireError::BadUtf8)?;
            let tag = *buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            let trace_context = match tag {
                0 => None,
                1 => Some(
                    std::str::from_utf8(get_slice(buf, &mut self.pos)?)
                        .map_err(|_| WireError::BadUtf8)?,
                ),
                t => return Err(WireError::BadTag(t)),
            };
            let payload = get_slice(buf, &mut self.pos)?;
            Ok(EnvelopeRef {
                recipient,
                trace_context,
                payload,
            })
        })();
        if r.is_err() {
            // stop after the first error
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

/// True when `s` is a syntactically valid W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids not all zero).
pub fn is_valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct PostcardShape<'a> {
        recipient: &'a str,
        trace: Option<&'a str>,
        payload: &'a [u8],
    }

    #[test]
    fn envelopes_round_trip_and_match_postcard() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let big = vec![7u8; 300];
        let mut buf = Vec::new();
        encode_envelope(&mut buf, "membership", None, b"abc");
        encode_envelope(&mut buf, "x", Some(tp), &big);
        let got: Vec<_> = Envelopes::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].recipient, "membership");
        assert_eq!(got[0].trace_context, None);
        assert_eq!(got[0].payload, b"abc");
        assert_eq!(got[1].trace_context, Some(tp));
        assert_eq!(got[1].payload, &big[..]);
        let mut one = Vec::new();
        encode_envelope(&mut one, "x", Some(tp), &big);
        let pc = postcard::to_allocvec(&PostcardShape {
            recipient: "x",
            trace: Some(tp),
            payload: &big,
        })
        .unwrap();
        assert_eq!(one, pc);
        assert!(envelope_len("x", Some(tp), &big) >= one.len());
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let mut buf = Vec::new();
        encode_envelope(&mut buf, "abc", None, b"12345");
        for cut in 1..buf.len() {
            let r: Result<Vec<_>, _> = Envelopes::new(&buf[..cut]).collect();
            assert!(r.is_err(), "cut at {cut}");
        }
        assert_eq!(
            Envelopes::new(&[1, b'a', 7]).next().unwrap(),
            Err(WireError::BadTag(7))
        );
        assert_eq!(
            Envelopes::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .next()
                .unwrap(),
            Err(WireError::BadVarint)
        );
        assert_eq!(
            Envelopes::new(&[1, 0xc3, 0]).next().unwrap(),
            Err(WireError::BadUtf8)
        );
    }

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent("00-4bf92f-00f067aa0ba902b7-01"));
        assert!(!is_valid_traceparent(""));
    }
}
