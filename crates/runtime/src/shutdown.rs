//! Coordinated shutdown: an ordered list of phases that code hooks tasks into, run once
//! per node whatever started it (SIGTERM, Ctrl-C, a leave request, being downed or
//! removed, a join that never succeeded).
//!
//! Phases run in [`PHASES`] order; the tasks of one phase run concurrently and the
//! phase ends when all are done or `phase_timeout` passes (then a warning is logged and
//! the next phase starts). Later code hooks in at its phase, e.g. shard hand-off at
//! `cluster-sharding-shutdown-region`, which runs before `cluster-leave`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// The phases, in the order they run (Akka's names).
pub const PHASES: &[&str] = &[
    "before-service-unbind",
    "service-unbind",
    "service-requests-done",
    "service-stop",
    "before-cluster-shutdown",
    "cluster-sharding-shutdown-region",
    "cluster-leave",
    "cluster-exiting",
    "cluster-exiting-done",
    "cluster-shutdown",
    "before-actor-system-terminate",
    "actor-system-terminate",
];

/// Why the node shuts down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// A leave request for this node (management API or code).
    Leave,
    /// This node was downed (by the resolver or an operator).
    Downed,
    /// This node was removed from the cluster.
    Removed,
    /// No seed node answered in time (`shutdown-after-unsuccessful-join`).
    JoinFailed,
    /// Code asked for it.
    Requested,
}

impl Reason {
    /// Process exit code for this reason: non-zero only when joining failed, so an
    /// orchestrator restarts the process.
    pub fn exit_code(&self) -> i32 {
        match self {
            Reason::JoinFailed => 1,
            _ => 0,
        }
    }
}

type Task = Box<dyn FnOnce(Reason) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Inner {
    tasks: Mutex<BTreeMap<usize, Vec<(String, Task)>>>,
    reason: Mutex<Option<Reason>>,
    done: watch::Sender<Option<i32>>,
    phase_timeout: Duration,
}

/// Handle to a node's coordinated shutdown; cheap to clone.
#[derive(Clone)]
pub struct CoordinatedShutdown {
    inner: Arc<Inner>,
}

/// A task added with an unknown phase name or after the shutdown started.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// No such phase.
    #[error("unknown shutdown phase {0:?}")]
    UnknownPhase(String),
    /// Too late to add tasks.
    #[error("coordinated shutdown already started")]
    AlreadyStarted,
}

impl CoordinatedShutdown {
    /// A shutdown whose phases each get `phase_timeout`.
    pub fn new(phase_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                tasks: Mutex::new(BTreeMap::new()),
                reason: Mutex::new(None),
                done: watch::channel(None).0,
                phase_timeout,
            }),
        }
    }

    /// Adds a task to a phase; it receives the reason of the shutdown.
    pub fn add_task<F, Fut>(&self, phase: &str, name: &str, f: F) -> Result<(), ShutdownError>
    where
        F: FnOnce(Reason) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let idx = PHASES
            .iter()
            .position(|p| *p == phase)
            .ok_or_else(|| ShutdownError::UnknownPhase(phase.to_string()))?;
        if self.inner.reason.lock().expect("lock").is_some() {
            return Err(ShutdownError::AlreadyStarted);
        }
        self.inner
            .tasks
            .lock()
            .expect("lock")
            .entry(idx)
            .or_default()
            .push((name.to_string(), Box::new(move |r| Box::pin(f(r)))));
        Ok(())
    }

    /// Starts the shutdown (once; later calls are ignored) and returns at once.
    pub fn run(&self, reason: Reason) {
        {
            let mut r = self.inner.reason.lock().expect("lock");
            if r.is_some() {
                return;
            }
            *r = Some(reason.clone());
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            info!(?reason, "coordinated shutdown started");
            let tasks = std::mem::take(&mut *inner.tasks.lock().expect("lock"));
            for (idx, list) in tasks {
                let phase = PHASES[idx];
                let futs: Vec<_> = list
                    .into_iter()
                    .map(|(name, t)| {
                        let fut = t(reason.clone());
                        async move {
                            fut.await;
                            name
                        }
                    })
                    .collect();
                if tokio::time::timeout(inner.phase_timeout, futures::future::join_all(futs))
                    .await
                    .is_err()
                {
                    warn!(phase, "shutdown phase timed out; continuing");
                }
            }
            info!(?reason, "coordinated shutdown done");
            inner.done.send_replace(Some(reason.exit_code()));
        });
    }

    /// The reason, once started.
    pub fn reason(&self) -> Option<Reason> {
        self.inner.reason.lock().expect("lock").clone()
    }

    /// Waits until every phase ran; returns the exit code.
    pub async fn terminated(&self) -> i32 {
        let mut rx = self.inner.done.subscribe();
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return code;
            }
            if rx.changed().await.is_err() {
                return 1;
            }
        }
    }

    /// True once every phase ran.
    pub fn is_terminated(&self) -> bool {
        self.inner.done.borrow().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_run_in_order_once() {
        let cs = CoordinatedShutdown::new(Duration::from_secs(1));
        let log = Arc::new(Mutex::new(Vec::new()));
        for (phase, name) in [
            ("cluster-leave", "leave"),
            ("before-service-unbind", "first"),
            ("cluster-sharding-shutdown-region", "hand-off"),
            ("actor-system-terminate", "last"),
        ] {
            let log = log.clone();
            cs.add_task(phase, name, move |_| async move {
                log.lock().unwrap().push(name);
            })
            .unwrap();
        }
        assert!(cs.add_task("nope", "x", |_| async {}).is_err());
        cs.run(Reason::JoinFailed);
        cs.run(Reason::Signal);
        assert_eq!(cs.terminated().await, 1);
        assert_eq!(
            *log.lock().unwrap(),
            vec!["first", "hand-off", "leave", "last"]
        );
        assert_eq!(cs.reason(), Some(Reason::JoinFailed));
        assert!(cs.add_task("cluster-leave", "late", |_| async {}).is_err());
    }

    #[tokio::test]
    async fn a_stuck_task_does_not_block_the_shutdown() {
        let cs = CoordinatedShutdown::new(Duration::from_millis(100));
        cs.add_task("cluster-exiting", "stuck", |_| std::future::pending::<()>())
            .unwrap();
        cs.run(Reason::Leave);
        let code = tokio::time::timeout(Duration::from_secs(2), cs.terminated()).await;
        assert_eq!(code.unwrap(), 0);
    }
}
