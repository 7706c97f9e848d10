//! Everything a cluster peer can send after the handshake, into a live node over TCP: the
//! frame decoder, the envelope decoder, and the message decoder of every name the node
//! registers (membership, the shard coordinators and regions, pub-sub, the singletons),
//! whose actors then handle what decoded.
//!
//! The input is either raw bytes written after the handshake (first byte even: frames,
//! lengths and all, as the fuzzer makes them) or (first byte odd) a list of envelopes the
//! harness frames correctly, so the fuzzer spends its time inside the message decoders:
//! each is `[name index] [flags] [payload length] payload...`. After the input the harness
//! sends an `InitJoin`, ends its side of the stream, and waits for the node to answer (or to
//! close the connection), so the node has read and decoded every frame before the next input.
#![no_main]

use std::time::Duration;

use akka_cqrs_fuzz::{EXCHANGE_TIMEOUT, node, runtime};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use runtime::cluster::{CLUSTER_ACTOR, ClusterProto};
use runtime::handshake::{DEFAULT_COOKIE, dial, handshake_codec};
use runtime::wire::encode_envelope;
use runtime::{NodeAddress, UniqueAddress};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead, LengthDelimitedCodec};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn framed(envelopes: &[u8]) -> Vec<u8> {
    let mut out = (envelopes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(envelopes);
    out
}

/// The `[name index] [flags] [length] payload` list as one well-formed data frame.
fn envelopes(mut data: &[u8], names: &[String]) -> Vec<u8> {
    let mut buf = Vec::new();
    while let [index, flags, len, rest @ ..] = data {
        let n = (*len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        let trace = match flags & 3 {
            1 => Some(TRACEPARENT),
            2 => Some("not-a-traceparent"),
            _ => None,
        };
        let name = if flags & 4 == 0 {
            names[*index as usize % names.len()].as_str()
        } else {
            "no-such-recipient"
        };
        encode_envelope(&mut buf, name, trace, payload);
        data = tail;
    }
    framed(&buf)
}

fn probe() -> Vec<u8> {
    let mut buf = Vec::new();
    let msg = postcard::to_allocvec(&ClusterProto::InitJoin).expect("encodes");
    encode_envelope(&mut buf, CLUSTER_ACTOR, None, &msg);
    framed(&buf)
}

/// A connection to `to` that passed the handshake; one retry, for a node busy with an
/// earlier input.
async fn connect(to: &NodeAddress) -> Option<Framed<TcpStream, LengthDelimitedCodec>> {
    for _ in 0..2 {
        if let Ok(stream) = TcpStream::connect((to.host.as_str(), to.port)).await {
            let _ = stream.set_nodelay(true);
            let mut io = Framed::new(stream, handshake_codec());
            let me = UniqueAddress::new_random(NodeAddress::new(to.system.clone(), "127.0.0.1", 1));
            if dial(&mut io, &me, to, DEFAULT_COOKIE, Duration::from_secs(5))
                .await
                .is_ok()
            {
                return Some(io);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let node = node();
    runtime().block_on(async {
        let to = node.service.node.address().address.clone();
        let Some(io) = connect(&to).await else {
            // An earlier input made the node leave while this one was on its way.
            assert!(!node.is_up(), "the node is Up but refuses the handshake");
            return;
        };
        let mut stream = io.into_inner();
        let mut bytes = if mode & 1 == 0 {
            rest.to_vec()
        } else {
            envelopes(rest, &node.names())
        };
        bytes.extend_from_slice(&probe());
        // Then end the stream: a frame the input left unfinished ends there too, instead of
        // waiting for bytes that never come.
        if stream.write_all(&bytes).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        // Any frame back (the answer to InitJoin), or the node closing the connection (on a
        // malformed frame, or at the end of the stream), means it has read everything.
        let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
        let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, frames.next()).await;
    });
});
