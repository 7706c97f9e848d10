//! Events-by-tag streams built on [`EventsByTagQuery`] pages.
//!
//! This module owns the stream shapes of the read side: [`current_events_by_tag`] (what is
//! stored now, then the stream ends), [`events_by_tag`] (live: keeps polling, and wakes up at
//! once on a same-process commit signal) and [`events_by_tag_polled`] (live, polling on a fixed
//! interval only: for a reader that has a faster path beside it). Both take an exclusive offset and yield envelopes whose
//! offsets strictly increase, so a consumer resumes by passing the last offset it processed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::error::{PersistenceError, Result};
use crate::repr::{EventEnvelope, Offset};
use crate::traits::EventsByTagQuery;

/// Events fetched per backend call.
pub const PAGE_SIZE: usize = 512;

struct Cursor {
    query: Arc<dyn EventsByTagQuery>,
    tag: String,
    offset: Offset,
    buffer: VecDeque<EventEnvelope>,
    live: bool,
    finished: bool,
    signal: Option<watch::Receiver<u64>>,
    /// Wait between polls once caught up (`None`: the backend's refresh interval).
    interval: Option<Duration>,
}

impl Cursor {
    async fn next(&mut self) -> Option<Result<EventEnvelope>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(env) = self.buffer.pop_front() {
                self.offset = env.offset;
                return Some(Ok(env));
            }
            if let Some(signal) = self.signal.as_mut() {
                // Mark the current commit count as seen *before* reading, so a commit that lands
                // during the read wakes the next wait.
                signal.borrow_and_update();
            }
            match self
                .query
                .events_by_tag_page(&self.tag, self.offset, PAGE_SIZE)
                .await
            {
                Ok(page) => {
                    if let Some(bad) = page
                        .iter()
                        .zip(std::iter::once(self.offset).chain(page.iter().map(|e| e.offset)))
                        .find(|(e, prev)| e.offset <= *prev)
                    {
                        self.finished = true;
                        return Some(Err(PersistenceError::Corrupt(format!(
                            "events by tag '{}': offset {} does not follow {}",
                            self.tag, bad.0.offset.0, bad.1.0
                        ))));
                    }
                    let full = page.len() >= PAGE_SIZE;
                    self.buffer.extend(page);
                    if !self.buffer.is_empty() {
                        continue;
                    }
                    if full {
                        continue;
                    }
                    if !self.live {
                        self.finished = true;
                        return None;
                    }
                    self.wait().await;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }

    async fn wait(&mut self) {
        let interval = self
            .interval
            .unwrap_or_else(|| self.query.refresh_interval());
        match self.signal.as_mut() {
            Some(signal) => {
                tokio::select! {
                    changed = signal.changed() => {
                        if changed.is_err() {
                            // The writer side is gone; fall back to polling.
                            self.signal = None;
                            tokio::time::sleep(interval).await;
                        }
                    }
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            None => tokio::time::sleep(interval).await,
        }
    }
}

fn cursor_stream(cursor: Cursor) -> BoxStream<'static, Result<EventEnvelope>> {
    stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|item| (item, c))
    })
    .boxed()
}

/// The events tagged `tag` after `offset` that are stored now; the stream ends when it has caught
/// up. An error is yielded once and ends the stream (resume from the last offset processed).
pub fn current_events_by_tag(
    query: Arc<dyn EventsByTagQuery>,
    tag: impl Into<String>,
    offset: Offset,
) -> BoxStream<'static, Result<EventEnvelope>> {
    cursor_stream(Cursor {
        query,
        tag: tag.into(),
        offset,
        buffer: VecDeque::new(),
        live: false,
        finished: false,
        signal: None,
        interval: None,
    })
}

/// The events tagged `tag` after `offset`, stored now and later: the stream never ends by itself.
/// New events arrive within the backend's refresh interval, or at once when they are committed
/// by this process and the backend has a commit signal. An error is yielded once and ends the
/// stream (resume from the last offset processed).
pub fn events_by_tag(
    query: Arc<dyn EventsByTagQuery>,
    tag: impl Into<String>,
    offset: Offset,
) -> BoxStream<'static, Result<EventEnvelope>> {
    let signal = query.commit_signal();
    cursor_stream(Cursor {
        query,
        tag: tag.into(),
        offset,
        buffer: VecDeque::new(),
        live: true,
        finished: false,
        signal,
        interval: None,
    })
}

/// Like [`events_by_tag`], but once caught up it reads again only every `interval`, whatever
/// is committed meanwhile: many such streams over one busy journal then cost a few queries a
/// second each, not one per commit. For readers that get the same events sooner another way
/// (pricing hears matches on pub-sub) and read the journal so that none is ever missed.
pub fn events_by_tag_polled(
    query: Arc<dyn EventsByTagQuery>,
    tag: impl Into<String>,
    offset: Offset,
    interval: Duration,
) -> BoxStream<'static, Result<EventEnvelope>> {
    cursor_stream(Cursor {
        query,
        tag: tag.into(),
        offset,
        buffer: VecDeque::new(),
        live: true,
        finished: false,
        signal: None,
        interval: Some(interval),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStore;
    use crate::repr::{AtomicWrite, Persistable, PersistentRepr};
    use crate::traits::Journal;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Tagged(u64);
    impl Persistable for Tagged {
        const MANIFEST: &'static str = "Tagged";
        fn tags(&self) -> Vec<String> {
            vec!["t".into()]
        }
    }

    async fn write(store: &InMemoryStore, seq: u64) {
        let repr = PersistentRepr::from_event("p", seq, &Tagged(seq), "w").unwrap();
        store
            .write_messages(vec![AtomicWrite::new(vec![repr]).unwrap()])
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_polled_stream_reads_on_its_interval_not_on_commits() {
        let store = InMemoryStore::new();
        write(&store, 1).await;
        let mut s = events_by_tag_polled(
            Arc::new(store.clone()),
            "t",
            Offset::START,
            Duration::from_secs(10),
        );
        assert_eq!(s.next().await.unwrap().unwrap().event.sequence_nr, 1);
        // Caught up: it polls, finds nothing and waits (paused, auto-advancing time).
        let idle = tokio::time::timeout(Duration::from_secs(1), s.next()).await;
        assert!(idle.is_err(), "nothing to read yet");
        write(&store, 2).await;
        // The commit does not wake it...
        let early = tokio::time::timeout(Duration::from_secs(7), s.next()).await;
        assert!(early.is_err(), "read before its interval");
        // ...and the event arrives on the next poll.
        let env = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .expect("read on the interval")
            .unwrap()
            .unwrap();
        assert_eq!(env.event.sequence_nr, 2);
    }
}
