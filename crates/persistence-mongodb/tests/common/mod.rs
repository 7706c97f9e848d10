//! Test support: where the MongoDB server for the tests is, and how to run one.
//!
//! The tests use `MONGO_CONNECTION_STR` when it is set (scripts/test.sh starts SecantusDB and
//! sets it). Without it they fail under CI (env `CI` set), and elsewhere start their own
//! `secantusd-py` on a free port with a temp storage dir, stopped when the test process exits.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use persistence_mongodb::{MongoConfig, MongoStore};

/// The connection string of the shared test server.
pub fn connection_string() -> String {
    if let Ok(s) = std::env::var("MONGO_CONNECTION_STR")
        && !s.is_empty()
    {
        return s;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "MONGO_CONNECTION_STR is not set: CI must start a MongoDB server for these tests \
             (scripts/test.sh does it with scripts/mongo-test-server.sh)"
        );
    }
    static OWN: OnceLock<Mutex<TestServer>> = OnceLock::new();
    OWN.get_or_init(|| Mutex::new(TestServer::start_with(&tempdir_path("mongo-tests"), true)))
        .lock()
        .unwrap()
        .uri()
}

/// A fresh database name, unique across processes and runs.
pub fn unique_db(prefix: &str) -> String {
    format!("{prefix}_{}", mongodb::bson::oid::ObjectId::new().to_hex())
}

/// Opens a store on a database of the shared test server.
pub async fn open_store(db: &str) -> MongoStore {
    let mut config = MongoConfig::new(connection_string());
    config.database = Some(db.to_owned());
    config.refresh_interval = Duration::from_millis(100);
    MongoStore::open(config).await.expect("open mongodb store")
}

fn tempdir_path(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        mongodb::bson::oid::ObjectId::new().to_hex()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A free TCP port on the loopback interface, chosen by the OS.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `secantusd-py` server owned by a test. It runs under a small shell guard that stops it
/// when this process exits (its stdin closes), so no server outlives the tests.
pub struct TestServer {
    port: u16,
    storage: PathBuf,
    guard: Option<Child>,
    remove_storage_on_exit: bool,
}

impl TestServer {
    /// Starts a server on a free port with `storage` as its storage dir.
    pub fn start(storage: &Path) -> Self {
        Self::start_with(storage, false)
    }

    /// Starts a server on a free port; `remove_storage_on_exit` deletes the storage dir when
    /// the server stops.
    pub fn start_with(storage: &Path, remove_storage_on_exit: bool) -> Self {
        let mut s = TestServer {
            port: free_port(),
            storage: storage.to_owned(),
            guard: None,
            remove_storage_on_exit,
        };
        s.restart();
        s
    }

    /// The connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// True while the server process runs.
    pub fn is_running(&self) -> bool {
        self.guard.is_some()
    }

    /// Starts the server again on the same port and storage dir.
    pub fn restart(&mut self) {
        assert!(self.guard.is_none(), "server already running");
        let have = Command::new("secantusd-py")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            have,
            "secantusd-py is not on PATH: install it with `pip install SecantusDB`, or set \
             MONGO_CONNECTION_STR to a MongoDB replica set"
        );
        let log = self.storage.with_extension("log");
        let cleanup = if self.remove_storage_on_exit {
            format!("; rm -rf '{}' '{}'", self.storage.display(), log.display())
        } else {
            String::new()
        };
        let script = format!(
            "secantusd-py --host 127.0.0.1 --port {port} --storage-path '{dir}' >>'{log}' 2>&1 & \
             p=$!; trap 'kill $p 2>/dev/null; wait $p{cleanup}' EXIT; read -r _",
            port = self.port,
            dir = self.storage.display(),
            log = log.display()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn secantusd-py guard");
        self.guard = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "secantusd-py did not listen on port {} within 60 s; see {}",
                self.port,
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server and waits until it is gone (the port refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.guard.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"stop\n");
            }
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "server on port {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
