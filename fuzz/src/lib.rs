//! The fuzz targets' shared harness.
//!
//! It owns what the targets that talk to a live node need: one tokio runtime per fuzzing
//! process, one service node started on it (a one-node cluster hosting the order books and
//! the price aggregators on an in-memory journal, with its management API behind a token),
//! and the real-socket exchanges the targets use to reach it. The node is started on first
//! use and started again when an input made it leave the cluster (a management `leave` or a
//! cluster message can legitimately do that); a panic anywhere in it aborts the process,
//! which is what libFuzzer reports as a finding (libfuzzer-sys installs that panic hook).
//!
//! A harness of our own rather than a crate: what is fuzzed here is our node, and the
//! helpers are a few lines of tokio around it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cluster_sharding::ShardRegion;
use host::ServiceNode;
use host::stores::Stores;
use persistence::memory::InMemoryStore;
use runtime::NodeConfig;
use runtime::membership::MemberStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// The management token of the fuzzed node: mutating routes need it, as in a deployment.
pub const MANAGEMENT_TOKEN: &str = "fuzz-management-token";
/// The longest an exchange with the node may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer is complete when the peer closes or sends nothing for this long (a streaming
/// route such as `/cluster/events` never closes by itself).
pub const ANSWER_IDLE: Duration = Duration::from_millis(200);

/// The process's runtime (two workers, as the machines have two cores).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A running node and the parts the targets address.
pub struct FuzzNode {
    /// The service node.
    pub service: ServiceNode,
    /// Its management API.
    pub management: SocketAddr,
    _books: ShardRegion<trade_processor::OrderBookMsg>,
    _pricing: pricing::Pricing,
}

impl FuzzNode {
    async fn start() -> FuzzNode {
        let mut config = NodeConfig::local(
            vec![],
            &["trade-processor", "pricing-engine"],
            Duration::from_millis(200),
        );
        if let Some(m) = config.management.as_mut() {
            m.token = Some(MANAGEMENT_TOKEN.to_string());
        }
        let service = ServiceNode::start(config)
            .await
            .expect("the fuzzed node starts");
        let stores = Stores::from_store(Arc::new(InMemoryStore::default()), "memory".into());
        let books = trade_processor::start(
            &service,
            &stores,
            trade_processor::SnapshotPolicy::default(),
        )
        .await
        .expect("the order-book region starts");
        let tickers = ["MSFT", "AAPL"]
            .iter()
            .map(|t| domain::Ticker::new(t).expect("ticker"))
            .collect();
        let pricing = pricing::start(
            &service,
            &stores,
            tickers,
            pricing::aggregator::AggregatorSettings::default(),
        )
        .await
        .expect("pricing starts");
        let management = service.node.management_addr().expect("management is on");
        let node = FuzzNode {
            service,
            management,
            _books: books,
            _pricing: pricing,
        };
        for _ in 0..200 {
            if node.is_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    /// The names its transport delivers to, sorted. Read at each call: some register after
    /// the node is Up (the shard coordinator, a singleton, starts once the node is the oldest).
    pub fn names(&self) -> Vec<String> {
        self.service.node.remoting().registered_names()
    }

    /// Whether the node is an Up member (an input may have made it leave or be downed).
    pub fn is_up(&self) -> bool {
        self.service.node.cluster().state().self_status == Some(MemberStatus::Up)
    }
}

/// The node, started on first use and again after an input made it leave.
pub fn node() -> Arc<FuzzNode> {
    static NODE: Mutex<Option<Arc<FuzzNode>>> = Mutex::new(None);
    let mut slot = NODE.lock().expect("node lock");
    if let Some(n) = slot.as_ref()
        && n.is_up()
    {
        return n.clone();
    }
    if let Some(old) = slot.take() {
        runtime().block_on(old.service.node.halt());
    }
    let n = Arc::new(runtime().block_on(FuzzNode::start()));
    *slot = Some(n.clone());
    n
}

/// Sends `bytes` to `addr` on a new connection, closes the sending half and reads the answer
/// until the peer closes, is idle for [`ANSWER_IDLE`], or [`EXCHANGE_TIMEOUT`] passes. `None`
/// when the connection could not be made. (An HTTP server may drop a request whose client
/// closed its sending half before the request was dispatched, as hyper does by default; the
/// liveness checks use [`request`] instead.)
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        if s.write_all(bytes).await.is_err() {
            return;
        }
        let _ = s.shutdown().await;
        let mut buf = [0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(ANSWER_IDLE, s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    Some(answer)
}

/// `GET path` with `Connection: close`, as an HTTP client sends it; the answer read until the
/// server closes or [`EXCHANGE_TIMEOUT`] passes. `None` when the connection could not be made.
pub async fn request(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut answer = Vec::new();
    let head = format!("GET {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n");
    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        if s.write_all(head.as_bytes()).await.is_ok() {
            let _ = s.read_to_end(&mut answer).await;
        }
    })
    .await;
    Some(answer)
}

/// The manifests of every type the services persist (pricing reads the order books' events
/// with the books' own decoder, so the first covers both).
pub fn manifests() -> [&'static str; 4] {
    use persistence::Persistable;
    [
        trade_processor::journal::Journaled::MANIFEST,
        trade_processor::journal::BookState::MANIFEST,
        pricing::PriceProjection::MANIFEST,
        cluster_sharding::remember::RememberEvent::MANIFEST,
    ]
}

/// Decodes a stored payload as every type the services persist, as a journal's reader does
/// (the manifest and schema version pick the decoder; a mismatch is an error). Bad input must
/// be an error, never a panic; an order book that decodes must come back the same after being
/// stored again.
pub fn decode_stored(manifest: &str, schema_version: u32, payload: &persistence::Payload) {
    use persistence::{Payload, Persistable};
    use trade_processor::journal::BookState;
    let _ = trade_processor::journal::Journaled::decode(manifest, schema_version, payload);
    let _ = pricing::PriceProjection::decode(manifest, schema_version, payload);
    let _ = cluster_sharding::remember::RememberEvent::decode(manifest, schema_version, payload);
    if let Ok(book) = BookState::decode(manifest, schema_version, payload) {
        let stored = Payload::from_serialize(&book).expect("a decoded book serializes");
        let again = BookState::decode(BookState::MANIFEST, BookState::SCHEMA_VERSION, &stored)
            .expect("a stored book decodes again");
        assert_eq!(
            again.0.snapshot(),
            book.0.snapshot(),
            "a book changed on its way through the journal"
        );
    }
}
