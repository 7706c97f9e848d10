//! The `priceAggregator` entity: one per ticker, sharded over the `pricing-engine` nodes.
//!
//! It keeps the ticker's [`PriceProjection`] fed from two sources:
//! - the journal: a live events-by-tag stream of `{ticker}-Match` from the checkpointed
//!   offset, which never misses a match (a restart, a lost publish, a node that was down);
//! - pub-sub `{ticker}-Match`, for latency: a published match is applied at once when it is
//!   the next trade id, and otherwise left to the journal stream.
//!
//! Every publish interval it publishes the new price on `{ticker}-price` and
//! `{ticker}-volume` when it changed, and every checkpoint interval it saves the projection
//! (price state, last trade id, journal offset) as a snapshot `priceAggregator-{ticker}`.
//! It is a projection: it writes no events of its own.
//!
//! Observability: the matches of one write that come by pub-sub with a sampled trace context
//! are applied inside a `priceAggregator.match` span (child of the order book's handling),
//! and the next price publish runs inside a `priceAggregator.publish` span that continues the
//! first sampled delivery since the previous publish (an unsampled context is carried instead
//! when none was sampled); the `{ticker}-price` update carries that span's context to the
//! dashboard. The journal stream records how old the events are when they arrive
//! (`persistence_query_events_by_tag_lag_seconds{persistence_tag="MSFT-Match"}`, at most
//! every [`LAG_EVERY`]).

use std::time::{Duration, Instant};

use cluster_sharding::{EntityContext, EntityFactory, EntityMsg};
use cluster_tools::client::ReplyTo;
use cluster_tools::pubsub::DistributedPubSub;
use domain::protocol::{PriceHistory, topics};
use domain::{BookEvent, Match, PricingConfig, Ticker};
use futures::StreamExt;
use host::Stores;
use persistence::{
    Offset, Persistable, SnapshotData, SnapshotMetadata, SnapshotSelectionCriteria,
    events_by_tag_polled,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::Remoting;
use serde::{Deserialize, Serialize};
use telemetry::MessageSpan;
use telemetry::instruments;
use telemetry::opentelemetry::KeyValue;
use telemetry::opentelemetry::metrics::Gauge;
use telemetry::propagation::is_sampled;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::projection::{Applied, PriceProjection};

/// What a price aggregator receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PriceMsg {
    /// Start (or keep) running; pricing nodes send it to every ticker.
    Wake,
    /// The matches of one journal write, published on `{ticker}-Match`.
    Published(Vec<Match>),
    /// Events of the `{ticker}-Match` tag read from the journal, in order: each with its
    /// offset, and the match (`None` when it is not a match of this ticker).
    Journaled(Vec<(Option<Match>, u64)>),
    /// Publish and checkpoint when due.
    Tick,
    /// A client asks for the price history.
    GetHistory {
        /// Where the answer goes (through the client's receptionist).
        reply_to: ReplyTo,
    },
}

impl Persistable for PriceProjection {
    const MANIFEST: &'static str = "PriceProjection";
}

/// Timings of the aggregators.
#[derive(Debug, Clone, Copy)]
pub struct AggregatorSettings {
    /// How often a changed price is published.
    pub publish_interval: Duration,
    /// How often a changed projection is checkpointed.
    pub checkpoint_interval: Duration,
    /// EMWA window and history length.
    pub pricing: PricingConfig,
}

impl Default for AggregatorSettings {
    fn default() -> Self {
        AggregatorSettings {
            publish_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(2),
            pricing: PricingConfig::default(),
        }
    }
}

/// The persistence id of a ticker's projection checkpoints: `priceAggregator-MSFT`.
pub fn persistence_id(ticker: Ticker) -> String {
    format!("priceAggregator-{ticker}")
}

/// The journal stream records its lag at most this often (not per event).
pub const LAG_EVERY: Duration = Duration::from_millis(250);

/// The aggregator actor.
pub struct PriceAggregator;

/// What an aggregator starts with.
pub struct AggregatorArgs {
    ticker: Ticker,
    stores: Stores,
    pubsub: DistributedPubSub,
    remoting: Remoting,
    settings: AggregatorSettings,
    lag: Gauge<f64>,
}

/// An aggregator's state.
pub struct AggregatorState {
    args: AggregatorArgs,
    projection: PriceProjection,
    price_topic: String,
    volume_topic: String,
    published_trade: u64,
    checkpointed_trade: u64,
    checkpointed_offset: u64,
    last_checkpoint: Instant,
    stream: JoinHandle<()>,
    /// The context the next price publish continues (see the module documentation).
    publish_trace: Option<Box<str>>,
}

fn wrap(message: PriceMsg) -> EntityMsg<PriceMsg> {
    EntityMsg {
        message,
        trace_context: None,
    }
}

/// How often a caught-up journal stream reads again. Matches come sooner on pub-sub; the
/// journal only has to make sure none is missed, and polling (rather than waking on every
/// commit) keeps 28 streams from querying the journal after each of thousands of commits.
const JOURNAL_POLL: Duration = Duration::from_millis(250);

/// Most journal events handed to the aggregator in one message.
const JOURNAL_CHUNK: usize = 512;

/// Keeps `candidate` as the context of the next publish unless a sampled one is kept already.
fn keep_trace(kept: &mut Option<Box<str>>, candidate: Option<Box<str>>) {
    let Some(c) = candidate else { return };
    let kept_sampled = kept.as_deref().is_some_and(is_sampled);
    if !kept_sampled {
        *kept = Some(c);
    }
}

/// Reads `{ticker}-Match` from the journal after `offset`, forever, handing each event to
/// the aggregator; resumes after errors from the last offset it handed over.
fn spawn_stream(
    stores: &Stores,
    ticker: Ticker,
    mut offset: u64,
    me: ActorRef<EntityMsg<PriceMsg>>,
    lag: Gauge<f64>,
) -> JoinHandle<()> {
    let query = stores.query.clone();
    let tag = BookEvent::kind_tag(ticker, "Match");
    let lag_attrs = [KeyValue::new(instruments::ATTR_TAG, tag.clone())];
    tokio::spawn(async move {
        let mut lag_at = Instant::now() - LAG_EVERY;
        loop {
            let mut stream =
                events_by_tag_polled(query.clone(), tag.clone(), Offset(offset), JOURNAL_POLL)
                    .ready_chunks(JOURNAL_CHUNK);
            'read: while let Some(items) = stream.next().await {
                let mut batch = Vec::with_capacity(items.len());
                let mut failed = None;
                for item in items {
                    match item {
                        Ok(env) => {
                            offset = env.offset.value();
                            if lag_at.elapsed() >= LAG_EVERY {
                                lag_at = Instant::now();
                                let age_ms = host::now_micros() / 1000 - env.event.timestamp;
                                lag.record(age_ms.max(0) as f64 / 1000.0, &lag_attrs);
                            }
                            let trade = match env.event.decode::<Journaled>() {
                                Ok(Journaled(BookEvent::Match(m))) if m.ticker == ticker => Some(m),
                                Ok(_) => None,
                                Err(e) => {
                                    warn!(%ticker, offset, error = %e, "undecodable journal event skipped");
                                    None
                                }
                            };
                            batch.push((trade, offset));
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if !batch.is_empty() && me.cast(wrap(PriceMsg::Journaled(batch))).is_err() {
                    return;
                }
                if let Some(e) = failed {
                    warn!(%ticker, error = %e, "events-by-tag stream failed; resuming");
                    break 'read;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Book events as pricing reads them from the journal (the same manifest the order books
/// write with).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
struct Journaled(BookEvent);

impl Persistable for Journaled {
    const MANIFEST: &'static str = BookEvent::MANIFEST;
    const SCHEMA_VERSION: u32 = BookEvent::SCHEMA_VERSION;
}

impl AggregatorState {
    async fn checkpoint(&mut self) {
        let p = &self.projection;
        if p.last_trade_id() == self.checkpointed_trade && p.offset() == self.checkpointed_offset {
            return;
        }
        let pid = persistence_id(self.args.ticker);
        // The snapshot's sequence number is the offset read so far, which only grows.
        let seq = p.offset().max(1);
        let data = match SnapshotData::from_state(p) {
            Ok(d) => d,
            Err(e) => {
                warn!(ticker = %self.args.ticker, error = %e, "cannot encode the checkpoint");
                return;
            }
        };
        let snapshots = &self.args.stores.snapshots;
        match snapshots
            .save_snapshot(SnapshotMetadata::new(pid.clone(), seq), data)
            .await
        {
            Ok(()) => {
                self.checkpointed_trade = p.last_trade_id();
                self.checkpointed_offset = p.offset();
                self.last_checkpoint = Instant::now();
                if seq > 1 {
                    let older = SnapshotSelectionCriteria::max_sequence_nr(seq - 1);
                    if let Err(e) = snapshots.delete_snapshots(&pid, older).await {
                        debug!(%pid, error = %e, "older checkpoints not deleted");
                    }
                }
            }
            Err(e) => warn!(%pid, error = %e, "checkpoint failed; will retry"),
        }
    }

    fn publish(&mut self) {
        if self.projection.last_trade_id() == self.published_trade {
            return;
        }
        let trace = self.publish_trace.take();
        let span = MessageSpan::sampled(
            "priceAggregator.publish",
            self.args.remoting.node_label(),
            trace.as_deref(),
        )
        .map(|m| m.with_destination(&self.price_topic));
        let _entered = span.as_ref().map(|m| m.span().enter());
        let onward = span.as_ref().map_or(trace.as_deref(), |m| m.traceparent());
        if let Some(update) = self.projection.aggregate().current() {
            for topic in [&self.price_topic, &self.volume_topic] {
                if let Err(e) = self.args.pubsub.publish_traced(topic, &update, onward) {
                    debug!(%topic, error = %e, "price publish failed");
                }
            }
            self.published_trade = self.projection.last_trade_id();
        }
    }
}

impl Actor for PriceAggregator {
    type Msg = EntityMsg<PriceMsg>;
    type State = AggregatorState;
    type Arguments = AggregatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AggregatorArgs,
    ) -> Result<AggregatorState, ActorProcessingErr> {
        let pid = persistence_id(args.ticker);
        let projection = match args
            .stores
            .snapshots
            .load_snapshot(&pid, SnapshotSelectionCriteria::latest())
            .await?
        {
            Some(s) => s.data.decode::<PriceProjection>()?,
            None => PriceProjection::new(args.ticker, args.settings.pricing),
        };
        info!(
            ticker = %args.ticker,
            last_trade = projection.last_trade_id(),
            offset = projection.offset(),
            "price aggregator started"
        );
        args.pubsub
            .subscribe_with(&topics::matches(args.ticker), None, myself.clone(), |d| {
                d.decode::<Vec<Match>>().map(|m| EntityMsg {
                    message: PriceMsg::Published(m),
                    trace_context: d.trace_context.map(Into::into),
                })
            })
            .await
            .map_err(|e| format!("cannot subscribe to matches: {e}"))?;
        let stream = spawn_stream(
            &args.stores,
            args.ticker,
            projection.offset(),
            myself.clone(),
            args.lag.clone(),
        );
        myself.send_interval(args.settings.publish_interval, || wrap(PriceMsg::Tick));
        Ok(AggregatorState {
            price_topic: topics::prices(args.ticker),
            volume_topic: topics::volumes(args.ticker),
            published_trade: projection.last_trade_id(),
            checkpointed_trade: projection.last_trade_id(),
            checkpointed_offset: projection.offset(),
            last_checkpoint: Instant::now(),
            projection,
            stream,
            publish_trace: None,
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg.message {
            PriceMsg::Wake => {}
            PriceMsg::Published(matches) => {
                let span = MessageSpan::sampled(
                    "priceAggregator.match",
                    s.args.remoting.node_label(),
                    msg.trace_context.as_deref(),
                )
                .map(|m| m.with_destination(&s.price_topic));
                let _entered = span.as_ref().map(|m| m.span().enter());
                let mut updated = false;
                for m in matches {
                    match s.projection.apply_published(&m) {
                        Applied::Ahead { expected } => {
                            debug!(ticker = %m.ticker, expected, got = m.trade_id, "match ahead; the journal fills the gap");
                            break;
                        }
                        Applied::Updated(_) => updated = true,
                        Applied::Duplicate => {}
                    }
                }
                if updated {
                    let onward = match &span {
                        Some(sp) => sp.traceparent().map(Into::into),
                        None => msg.trace_context,
                    };
                    keep_trace(&mut s.publish_trace, onward);
                }
            }
            PriceMsg::Journaled(events) => {
                for (trade, offset) in events {
                    match trade {
                        Some(m) => {
                            if let Applied::Ahead { expected } =
                                s.projection.apply_journaled(&m, offset)
                            {
                                warn!(ticker = %m.ticker, expected, got = m.trade_id, "the journal skips a trade id");
                            }
                        }
                        None => s.projection.skip_journaled(offset),
                    }
                }
            }
            PriceMsg::Tick => {
                s.publish();
                if s.last_checkpoint.elapsed() >= s.args.settings.checkpoint_interval {
                    s.checkpoint().await;
                }
            }
            PriceMsg::GetHistory { reply_to } => {
                let history = PriceHistory {
                    ticker: s.args.ticker,
                    updates: s.projection.aggregate().history().copied().collect(),
                };
                if let Err(e) =
                    reply_to.reply(&s.args.remoting, &history, msg.trace_context.as_deref())
                {
                    debug!(error = %e, "history reply not sent");
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        s: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        s.stream.abort();
        s.checkpoint().await;
        Ok(())
    }
}

/// Builds price aggregators for the shard region.
pub struct AggregatorFactory {
    /// Where matches are read and checkpoints kept.
    pub stores: Stores,
    /// Pub-sub of this node.
    pub pubsub: DistributedPubSub,
    /// Transport of this node (for history replies).
    pub remoting: Remoting,
    /// Timings.
    pub settings: AggregatorSettings,
    /// The events-by-tag lag gauge of the node (`telemetry::instruments::events_by_tag_lag`).
    pub lag: Gauge<f64>,
}

impl EntityFactory for AggregatorFactory {
    type Message = PriceMsg;
    type Entity = PriceAggregator;

    fn create(&self, ctx: &EntityContext) -> (PriceAggregator, AggregatorArgs) {
        let ticker = Ticker::new(&ctx.entity_id).unwrap_or_else(|e| {
            warn!(entity_id = %ctx.entity_id, error = %e, "price aggregator for an invalid ticker");
            Ticker::new(NOT_A_TICKER).expect("valid symbol")
        });
        (
            PriceAggregator,
            AggregatorArgs {
                ticker,
                stores: self.stores.clone(),
                pubsub: self.pubsub.clone(),
                remoting: self.remoting.clone(),
                settings: self.settings,
                lag: self.lag.clone(),
            },
        )
    }
}

/// Stands in for an entity id that is not a ticker symbol: an aggregator no match reaches.
const NOT_A_TICKER: &str = "INVALID";
