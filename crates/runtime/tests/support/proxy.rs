//! A fault-injecting TCP proxy for partition tests. Each node advertises its proxy's
//! port, so every connection to the node passes through its proxy. The proxy reads the
//! dialer's handshake `Hello` to learn which node is connecting and refuses (or cuts)
//! connections between nodes that are on different sides of a partition.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use runtime::wire::Handshake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    /// Advertised ports that may not reach this proxy's node.
    blocked: HashSet<u16>,
    /// Live connections: (source advertised port, abort handles of both pumps).
    conns: Vec<(u16, Vec<AbortHandle>)>,
}

/// One proxy in front of one node.
#[derive(Clone)]
pub struct Proxy {
    /// Port the proxy listens on (the node's advertised port).
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Binds a proxy; call [`Proxy::forward_to`] once the node's real port is known.
    pub async fn bind() -> (Self, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (
            Self {
                port,
                state: Arc::default(),
            },
            l,
        )
    }

    /// Starts forwarding accepted connections to `target_port`.
    pub fn forward_to(&self, listener: TcpListener, target_port: u16) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move { me.handle(inbound, target_port).await });
            }
        });
    }

    async fn handle(&self, mut inbound: TcpStream, target_port: u16) {
        let mut len = [0u8; 4];
        if inbound.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > 4096 {
            return;
        }
        let mut body = vec![0u8; n];
        if inbound.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(Handshake::Hello { from, .. }) = postcard::from_bytes::<Handshake>(&body) else {
            return;
        };
        let src = from.address.port;
        if self.state.lock().unwrap().blocked.contains(&src) {
            return; // dropped: the dialer sees the connection close
        }
        let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
            return;
        };
        if outbound.write_all(&len).await.is_err() || outbound.write_all(&body).await.is_err() {
            return;
        }
        let (mut ir, mut iw) = inbound.into_split();
        let (mut or, mut ow) = outbound.into_split();
        let a = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut ir, &mut ow).await;
        });
        let b = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut or, &mut iw).await;
        });
        let mut st = self.state.lock().unwrap();
        if st.blocked.contains(&src) {
            a.abort();
            b.abort();
            return;
        }
        st.conns
            .push((src, vec![a.abort_handle(), b.abort_handle()]));
    }

    /// Blocks `ports` from now on and cuts their live connections.
    pub fn block(&self, ports: &[u16]) {
        let mut st = self.state.lock().unwrap();
        st.blocked.extend(ports.iter().copied());
        let blocked = st.blocked.clone();
        st.conns.retain(|(src, handles)| {
            if blocked.contains(src) {
                handles.iter().for_each(AbortHandle::abort);
                false
            } else {
                true
            }
        });
    }
}

impl Proxy {
    /// Lets every node through again.
    pub fn unblock_all(&self) {
        self.state.lock().unwrap().blocked.clear();
    }
}

/// Partitions nodes (identified by advertised port) into `sides`, through their proxies.
pub fn partition(proxies: &HashMap<u16, Proxy>, sides: &[Vec<u16>]) {
    for (i, side) in sides.iter().enumerate() {
        let others: Vec<u16> = sides
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        for p in side {
            proxies[p].block(&others);
        }
    }
}
