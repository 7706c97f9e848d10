//! Events-by-tag streams built on [`EventsByTagQuery`] pages.
//!
//! This module owns the two stream shapes of the read side: [`current_events_by_tag`] (what is
//! stored now, then the stream ends) and [`events_by_tag`] (live: keeps polling, and wakes up at
//! once on a same-process commit signal). Both take an exclusive offset and yield envelopes whose
//! offsets strictly increase, so a consumer resumes by passing the last offset it processed.

use std::collections::VecDeque;
use std::sync::Arc;

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
        let interval = self.query.refresh_interval();
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
    })
}
