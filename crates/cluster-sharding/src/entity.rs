//! What a user supplies to shard an entity type: an [`EntityFactory`] that builds the
//! ractor actor of one entity, and the [`EntityMsg`] envelope every entity receives
//! (the message plus the sender's W3C trace context).
//!
//! Entities are started by their region on their first message (or at once, with
//! remember-entities), are linked to the region (which supervises them), and are
//! stopped with `drain` (they finish what is in their mailbox first) on passivation
//! and hand-off. Entities are expected to persist their state, so a stop loses nothing.

use std::sync::Arc;

use ractor::Actor;
use runtime::NodeAddress;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::ShardId;

/// A message as an entity receives it.
#[derive(Debug)]
pub struct EntityMsg<M> {
    /// The message.
    pub message: M,
    /// W3C `traceparent` of the sender, if it sent one.
    pub trace_context: Option<Box<str>>,
}

/// What an entity is told when it is created.
#[derive(Clone, Debug)]
pub struct EntityContext {
    /// Entity type name.
    pub type_name: Arc<str>,
    /// The entity id (use it as, or in, the persistence id).
    pub entity_id: String,
    /// The entity's shard.
    pub shard: ShardId,
    /// The node that hosts it now.
    pub node: NodeAddress,
}

/// Builds the actor of one entity. Called by the region for each entity it starts.
pub trait EntityFactory: Send + Sync + 'static {
    /// The message type of the entities; serde-serialized only when it crosses nodes.
    type Message: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The entity actor.
    type Entity: Actor<Msg = EntityMsg<Self::Message>>;

    /// The actor and its start arguments for the entity described by `ctx`.
    fn create(&self, ctx: &EntityContext) -> (Self::Entity, <Self::Entity as Actor>::Arguments);
}
