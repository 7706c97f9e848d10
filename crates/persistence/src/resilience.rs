//! Surviving a store that goes away: circuit breaker, bounded retry with backoff, and a journal
//! wrapper that applies both.
//!
//! This module owns [`CircuitBreaker`], [`RetryPolicy`] and [`ResilientJournal`]. Only
//! [`PersistenceError::Unavailable`] is retried; a rejection or a serialization error is final.
//! A retried write can meet its own earlier attempt (the store stored it but the answer was
//! lost); [`ResilientJournal`] recognises that case by the writer id and payload of the stored
//! events (their data, not their text, which a document store re-encodes) and reports success
//! instead of a false rejection; when it cannot read them to tell, it reports the error of that
//! read, not a rejection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{PersistenceError, Result};
use crate::repr::{AtomicWrite, PersistentRepr};
use crate::traits::Journal;

/// How often and how patiently an operation on an unavailable store is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = no retry).
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker.
    pub max_failures: u32,
    /// How long the breaker stays open before it lets one trial call through.
    pub reset_timeout: Duration,
    /// A call that takes longer counts as failed with [`PersistenceError::Unavailable`].
    pub call_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            max_failures: 5,
            reset_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// A circuit breaker: after `max_failures` consecutive unavailable-store failures it fails every
/// call at once for `reset_timeout`, then lets one trial call through; success closes it.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// True while calls are refused.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), BreakerState::Open { until } if Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or refuses it. An admitted call that is the half-open trial comes
    /// with `Trial::armed`, so that dropping it unfinished re-opens the trial (see [`Trial`]).
    fn admit(&self) -> Result<Trial<'_>> {
        let mut st = self.lock();
        match *st {
            BreakerState::Closed { .. } => Ok(Trial {
                breaker: self,
                armed: false,
            }),
            BreakerState::Open { until } if Instant::now() >= until => {
                *st = BreakerState::HalfOpen;
                Ok(Trial {
                    breaker: self,
                    armed: true,
                })
            }
            BreakerState::Open { until } => Err(PersistenceError::Unavailable(format!(
                "circuit breaker open after repeated store failures; next try in {} ms",
                until.saturating_duration_since(Instant::now()).as_millis()
            ))),
            // One trial call is already in flight.
            BreakerState::HalfOpen => Err(PersistenceError::Unavailable(
                "circuit breaker half-open: a trial call is in flight".into(),
            )),
        }
    }

    fn record(&self, failed: bool) {
        let mut st = self.lock();
        *st = match (*st, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, true)
                if failures + 1 < self.config.max_failures =>
            {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => {
                tracing::warn!(
                    reset_timeout_ms = self.config.reset_timeout.as_millis() as u64,
                    "persistence circuit breaker opened"
                );
                BreakerState::Open {
                    until: Instant::now() + self.config.reset_timeout,
                }
            }
        };
    }

    /// Runs `op` through the breaker: refused at once while open, timed out after
    /// `call_timeout`, and counted as a failure only when the store is unavailable.
    pub async fn call<T, F>(&self, op: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let mut trial = self.admit()?;
        let result = match tokio::time::timeout(self.config.call_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(PersistenceError::Unavailable(format!(
                "store call timed out after {} ms",
                self.config.call_timeout.as_millis()
            ))),
        };
        self.record(matches!(result, Err(ref e) if e.is_unavailable()));
        trial.armed = false;
        result
    }
}

/// The half-open trial call, as long as it has not ended.
///
/// A caller may drop its call future before the call ends: a timeout around a recovery, an entity
/// killed while it recovers, a coordinator that stops waiting for its remembered ids. Were the
/// breaker left half-open then, it would refuse every later call with "a trial call is in flight"
/// for good, and every entity of the node would fail to start. Dropping an armed trial therefore
/// returns the breaker to open with no wait left, so that the next call is the new trial.
struct Trial<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.breaker.lock();
            if *st == BreakerState::HalfOpen {
                *st = BreakerState::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

/// A [`Journal`] wrapper that retries unavailable-store failures with backoff, behind a circuit
/// breaker.
pub struct ResilientJournal<J: ?Sized> {
    inner: std::sync::Arc<J>,
    retry: RetryPolicy,
    breaker: CircuitBreaker,
}

impl<J: Journal + ?Sized> ResilientJournal<J> {
    /// Wraps `inner`.
    pub fn new(
        inner: std::sync::Arc<J>,
        retry: RetryPolicy,
        breaker: CircuitBreakerConfig,
    ) -> Self {
        ResilientJournal {
            inner,
            retry,
            breaker: CircuitBreaker::new(breaker),
        }
    }

    /// The circuit breaker in front of the journal.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match self.breaker.call(op()).await {
                Err(e) if e.is_unavailable() && attempt < self.retry.max_retries => {
                    attempt += 1;
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "{what} failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// True when the events stored at the write's sequence numbers are exactly this write's
    /// (same writer, same payloads): an earlier attempt succeeded but its answer was lost.
    async fn is_own_earlier_write(&self, w: &AtomicWrite) -> Result<bool> {
        let stored = self
            .inner
            .replay_messages(
                w.persistence_id(),
                w.lowest_sequence_nr(),
                w.highest_sequence_nr(),
                w.len() as u64,
            )
            .await?;
        Ok(stored.len() == w.len()
            && stored
                .iter()
                .zip(w.events())
                .all(|(s, e): (&PersistentRepr, &PersistentRepr)| {
                    s.writer_uuid == e.writer_uuid
                        && s.payload.same_data(&e.payload)
                        && s.manifest == e.manifest
                        && s.sequence_nr == e.sequence_nr
                }))
    }
}

#[async_trait]
impl<J: Journal + ?Sized> Journal for ResilientJournal<J> {
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
        let mut attempt = 0;
        let mut ambiguous = false;
        loop {
            match self
                .breaker
                .call(self.inner.write_messages(writes.clone()))
                .await
            {
                Ok(mut results) => {
                    if ambiguous {
                        for (r, w) in results.iter_mut().zip(&writes) {
                            if matches!(r, Err(e) if e.is_rejected()) {
                                match self.is_own_earlier_write(w).await {
                                    Ok(true) => {
                                        tracing::info!(
                                            persistence_id = w.persistence_id(),
                                            sequence_nr = w.lowest_sequence_nr(),
                                            "a retried write found its earlier attempt stored (the answer had been lost); it counts as stored"
                                        );
                                        *r = Ok(());
                                    }
                                    Ok(false) => {}
                                    // Whose events those are is unknown: say that, rather
                                    // than report a rejection that may be false.
                                    Err(e) => *r = Err(e),
                                }
                            }
                        }
                    }
                    return Ok(results);
                }
                Err(e) if e.is_unavailable() && attempt < self.retry.max_retries => {
                    attempt += 1;
                    ambiguous = true;
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "journal write failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn replay_messages(
        &self,
        persistence_id: &str,
        from_sequence_nr: u64,
        to_sequence_nr: u64,
        max: u64,
    ) -> Result<Vec<PersistentRepr>> {
        self.retrying("journal replay", || {
            self.inner
                .replay_messages(persistence_id, from_sequence_nr, to_sequence_nr, max)
        })
        .await
    }

    async fn highest_sequence_nr(
        &self,
        persistence_id: &str,
        from_sequence_nr: u64,
    ) -> Result<u64> {
        self.retrying("highest sequence nr", || {
            self.inner
                .highest_sequence_nr(persistence_id, from_sequence_nr)
        })
        .await
    }

    async fn delete_messages_to(&self, persistence_id: &str, to_sequence_nr: u64) -> Result<()> {
        self.retrying("journal delete", || {
            self.inner
                .delete_messages_to(persistence_id, to_sequence_nr)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStore;
    use crate::repr::Payload;
    use std::sync::Arc;

    fn write(pid: &str, seq: u64, writer: &str) -> AtomicWrite {
        AtomicWrite::new(vec![PersistentRepr {
            persistence_id: pid.into(),
            sequence_nr: seq,
            manifest: "T".into(),
            schema_version: 1,
            tags: vec![],
            payload: Payload::from_json(format!("{seq}")).unwrap(),
            timestamp: 0,
            writer_uuid: writer.into(),
        }])
        .unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let p = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(50));
        assert_eq!(p.backoff(40), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn breaker_opens_after_failures_and_closes_after_success() {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            max_failures: 2,
            reset_timeout: Duration::from_millis(100),
            call_timeout: Duration::from_secs(1),
        });
        let down = || async { Err::<(), _>(PersistenceError::Unavailable("down".into())) };
        assert!(cb.call(down()).await.is_err());
        assert!(!cb.is_open());
        assert!(cb.call(down()).await.is_err());
        assert!(cb.is_open());
        // Refused without running the operation.
        let ran = std::sync::atomic::AtomicBool::new(false);
        let err = cb
            .call(async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("circuit breaker open"), "{err}");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(120)).await;
        cb.call(async { Ok(()) }).await.unwrap();
        assert!(!cb.is_open());
        // A rejection is not a store failure and does not count.
        for _ in 0..5 {
            let _ = cb
                .call(async { Err::<(), _>(PersistenceError::InvalidInput("bad".into())) })
                .await;
        }
        assert!(!cb.is_open());
    }

    #[tokio::test]
    async fn a_trial_call_dropped_unfinished_does_not_leave_the_breaker_half_open() {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            max_failures: 1,
            reset_timeout: Duration::from_millis(20),
            call_timeout: Duration::from_secs(60),
        });
        let down = async { Err::<(), _>(PersistenceError::Unavailable("down".into())) };
        assert!(cb.call(down).await.is_err());
        assert!(cb.is_open());
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The trial call is admitted, then its caller stops waiting for it.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            cb.call(std::future::pending::<Result<()>>()),
        )
        .await;
        assert!(gave_up.is_err(), "the trial call should still be pending");
        // The next call is the new trial; it succeeds and closes the breaker.
        cb.call(async { Ok(()) }).await.unwrap();
        assert!(!cb.is_open());
        assert_eq!(*cb.lock(), BreakerState::Closed { failures: 0 });
    }

    #[tokio::test]
    async fn breaker_times_out_slow_calls() {
        let cb = CircuitBreaker::new(CircuitBreakerConfig {
            max_failures: 1,
            reset_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_millis(20),
        });
        let err = cb
            .call(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            err.is_unavailable() && err.to_string().contains("timed out"),
            "{err}"
        );
        assert!(cb.is_open());
    }

    #[tokio::test]
    async fn resilient_journal_retries_until_store_is_back() {
        let store = Arc::new(InMemoryStore::new());
        let j = ResilientJournal::new(
            store.clone(),
            RetryPolicy {
                max_retries: 10,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
            },
            CircuitBreakerConfig {
                max_failures: 100,
                ..Default::default()
            },
        );
        store.set_unavailable(true);
        let s2 = store.clone();
        let heal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.set_unavailable(false);
        });
        let r = j.write_messages(vec![write("p", 1, "w")]).await.unwrap();
        assert!(r[0].is_ok());
        heal.await.unwrap();
        assert_eq!(j.highest_sequence_nr("p", 0).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn resilient_journal_gives_up_with_unavailable() {
        let store = Arc::new(InMemoryStore::new());
        let j = ResilientJournal::new(
            store.clone(),
            RetryPolicy {
                max_retries: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            },
            CircuitBreakerConfig::default(),
        );
        store.set_unavailable(true);
        let err = j
            .write_messages(vec![write("p", 1, "w")])
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[tokio::test]
    async fn retried_write_that_had_succeeded_is_not_reported_as_rejected() {
        let store = InMemoryStore::new();
        // Another writer already holds sequence nr 1 of "q".
        store
            .write_messages(vec![write("q", 1, "other")])
            .await
            .unwrap();
        let j = ResilientJournal::new(
            Arc::new(crate::tck::LosesFirstAnswer::new(Arc::new(store.clone()))),
            RetryPolicy {
                initial_backoff: Duration::from_millis(1),
                ..Default::default()
            },
            CircuitBreakerConfig::default(),
        );
        let r = j
            .write_messages(vec![write("p", 1, "me"), write("q", 1, "me")])
            .await
            .unwrap();
        assert!(
            r[0].is_ok(),
            "own earlier write must count as success: {:?}",
            r[0]
        );
        assert!(r[1].as_ref().is_err_and(|e| e.is_rejected()), "{:?}", r[1]);
    }
}
