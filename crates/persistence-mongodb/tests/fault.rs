//! Fault test: the MongoDB server stops in the middle of a run and starts again (same port, same
//! storage). While it is down, writes fail with a clear "unavailable" error and the entities
//! stop; afterwards they recover, and every write that was acknowledged is in the journal.
//!
//! This test always runs its own `secantusd-py` (it has to stop it), so it needs SecantusDB on
//! PATH (`pip install SecantusDB`; scripts/test.sh installs it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use persistence::{
    CircuitBreakerConfig, EntityContext, EntitySettings, Journal, Persistable, PersistenceConfig,
    PersistenceHandle, PersistentActor, PersistentBehavior, RetryPolicy,
};
use persistence_mongodb::{MongoConfig, MongoStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Deposited {
    amount: i64,
}
impl Persistable for Deposited {
    const MANIFEST: &'static str = "Deposited";
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
struct Balance {
    total: i64,
    deposits: u64,
}
impl Persistable for Balance {
    const MANIFEST: &'static str = "Balance";
}

enum Cmd {
    Deposit(i64, RpcReplyPort<Result<u64, String>>),
    Get(RpcReplyPort<(i64, u64)>),
}

struct Account;

impl PersistentBehavior for Account {
    type Command = Cmd;
    type Event = Deposited;
    type State = Balance;

    fn initial_state(&self) -> Balance {
        Balance::default()
    }

    fn apply_event(&self, s: &mut Balance, e: &Deposited) {
        s.total += e.amount;
        s.deposits += 1;
    }

    async fn handle_command(
        &self,
        ctx: &mut EntityContext<'_, Self>,
        cmd: Cmd,
    ) -> Result<(), ActorProcessingErr> {
        match cmd {
            Cmd::Deposit(amount, reply) => {
                let r = ctx.persist(Deposited { amount }).await;
                let _ = reply.send(r.map(|_| ctx.last_sequence_nr()).map_err(|e| e.to_string()));
            }
            Cmd::Get(reply) => {
                let _ = reply.send((ctx.state().total, ctx.last_sequence_nr()));
            }
        }
        Ok(())
    }
}

async fn spawn(
    p: &PersistenceHandle,
    pid: &str,
) -> Result<(ActorRef<Cmd>, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
    let settings = EntitySettings {
        snapshot_every: Some(7),
        ..Default::default()
    };
    Actor::spawn(
        None,
        PersistentActor::new(Account, pid, p.clone(), settings),
        (),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_mid_run_and_comes_back_without_losing_acknowledged_writes() {
    let storage = tempfile::tempdir().unwrap();
    let mut server = common::TestServer::start(storage.path());
    let mut config = MongoConfig::new(server.uri());
    config.database = Some(common::unique_db("fault"));
    config.server_selection_timeout = Duration::from_millis(1000);
    let store = Arc::new(MongoStore::open(config).await.unwrap());
    let persistence = PersistenceHandle::new(
        store.clone(),
        store.clone(),
        PersistenceConfig {
            retry: RetryPolicy {
                max_retries: 2,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
            },
            breaker: CircuitBreakerConfig {
                max_failures: 3,
                reset_timeout: Duration::from_millis(500),
                call_timeout: Duration::from_secs(5),
            },
            ..Default::default()
        },
    );

    // Five entities deposit 1, 2, 3, ... until a deposit fails; each remembers what was
    // acknowledged.
    let pids: Vec<String> = (0..5).map(|i| format!("account-{i}")).collect();
    let mut writers = Vec::new();
    for pid in &pids {
        let (actor, handle) = spawn(&persistence, pid).await.unwrap();
        writers.push(tokio::spawn(async move {
            let mut acked = 0u64;
            let mut amount = 1;
            let failure = loop {
                match ractor::call!(actor, Cmd::Deposit, amount) {
                    Ok(Ok(seq)) => {
                        assert_eq!(seq, acked + 1);
                        acked = seq;
                        amount += 1;
                    }
                    Ok(Err(e)) => break e,
                    Err(e) => break format!("actor gone: {e}"),
                }
            };
            // The entity stops after a failed write.
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("entity stopped after the failed write")
                .unwrap();
            (acked, failure)
        }));
    }
    // Let them write for a while, then take the server away.
    let start = Instant::now();
    while persistence
        .writer()
        .stats()
        .events
        .load(std::sync::atomic::Ordering::Relaxed)
        < 60
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writers made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();

    let mut acked = Vec::new();
    for w in writers {
        let (n, failure) = w.await.unwrap();
        assert!(
            failure.contains("unavailable"),
            "failure must say the store is unavailable: {failure}"
        );
        acked.push(n);
    }
    // 60 events had been handed to the journal; all but the last batch were acknowledged.
    assert!(acked.iter().sum::<u64>() >= 50, "acknowledged {acked:?}");

    // While the server is down, a direct write fails with a clear Unavailable error too.
    let w = persistence::AtomicWrite::new(vec![
        persistence::PersistentRepr::from_event("down", 1, &Deposited { amount: 1 }, "w").unwrap(),
    ])
    .unwrap();
    let err = store.write_messages(vec![w]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    // ... and an entity cannot recover.
    assert!(spawn(&persistence, &pids[0]).await.is_err());

    server.restart();

    // Every entity recovers with at least everything that was acknowledged (a write whose
    // answer was lost when the server went away may also be there: at most one more).
    for (pid, n) in pids.iter().zip(&acked) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (actor, handle) = loop {
            match spawn(&persistence, pid).await {
                Ok(a) => break a,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{pid} did not recover: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let (total, seq) = ractor::call!(actor, Cmd::Get).unwrap();
        assert!(
            seq == *n || seq == *n + 1,
            "{pid}: acknowledged {n}, recovered {seq}"
        );
        assert_eq!(
            total,
            (seq * (seq + 1) / 2) as i64,
            "{pid}: deposits 1..={seq}"
        );
        // And it writes again.
        let next = ractor::call!(actor, Cmd::Deposit, seq as i64 + 1)
            .unwrap()
            .unwrap();
        assert_eq!(next, seq + 1);
        let events = store
            .replay_messages(pid, 1, u64::MAX, u64::MAX)
            .await
            .unwrap();
        assert_eq!(events.len() as u64, seq + 1, "{pid}: no event lost");
        actor.stop(None);
        handle.await.unwrap();
    }
    server.stop();
}
