//! The coordinator's decisions, as a pure state machine: which region hosts which
//! shard, least-shard allocation, bounded rebalancing, the hand-off protocol, and the
//! recovery of the allocation from the regions. No I/O: every input returns the
//! messages to send ([`Out`]), which the coordinator actor puts on the wire.
//!
//! The allocation is not persisted; a coordinator rebuilds it from the regions (only
//! remember-entities' ids may come from a durable store, see [`crate::remember`], through
//! [`CoordinatorState::remember`]). On start it is
//! *recovering*: regions register with the shards they host (those still stopping for a
//! hand-off included), and nothing is allocated until every member with the role that
//! is Joining, Up, Leaving or Exiting has registered (or is Down/Removed). So a shard
//! that some live region still hosts is always known before anything could be
//! allocated twice. A shard is allocated to a region only by a `HostShard` after the
//! shard was unallocated, and a shard leaves its home only via the hand-off (the home
//! stops its entities and reports `ShardStopped`) or because the home's member was
//! downed/removed.
//!
//! A region is known by its node's address *and* the uid of that node's incarnation. A
//! registration is accepted only from an incarnation that is a live member in the
//! coordinator's view, and a region whose incarnation is Down, Removed or replaced by a
//! newer one at the same address is gone: its shards are re-allocated before the new
//! incarnation's registration is taken. So a node restarted at the same address never
//! inherits, or is sent, what the coordinator meant for its predecessor.
//!
//! Hand-off: `BeginHandOff` to every registered region (they stop routing and buffer),
//! once all acknowledged `HandOff` to the home, which stops the entities and answers
//! `ShardStopped`; then the shard is allocated anew (`HostShard`, then `ShardHome` to
//! all regions once the new home answers `ShardStarted`), and regions flush their
//! buffers in order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use runtime::{AppVersion, NodeAddress};
use tracing::{debug, error, info, warn};

use crate::hash::ShardId;
use crate::membership::{MemberStatus, Membership};
use crate::protocol::{CoordinatorWire, RegionWire};

/// A message for the region on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out(pub NodeAddress, pub RegionWire<()>);

/// Limits of the coordinator's decisions.
#[derive(Clone, Debug)]
pub struct AllocationSettings {
    /// Role of the hosting nodes.
    pub role: Option<String>,
    /// Rebalance while max - min load exceeds this.
    pub rebalance_threshold: usize,
    /// Hand-offs in flight per rebalance round, at most.
    pub rebalance_max_per_round: usize,
    /// Abandon a rebalance not acknowledged by all regions within this.
    pub handoff_timeout: Duration,
    /// Re-send unanswered protocol messages after this.
    pub retry_interval: Duration,
}

#[derive(Debug, Default)]
struct RegionEntry {
    /// The uid of the registered incarnation of the region's node.
    uid: u64,
    proxy: bool,
    leaving: bool,
    shards: BTreeSet<ShardId>,
}

#[derive(Debug)]
struct HandOff {
    from: NodeAddress,
    to: Option<NodeAddress>,
    pending_acks: BTreeSet<NodeAddress>,
    stop_sent: bool,
    started: Instant,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct CoordinatorState {
    cfg: AllocationSettings,
    members: Membership,
    regions: BTreeMap<NodeAddress, RegionEntry>,
    homes: BTreeMap<ShardId, NodeAddress>,
    starting: BTreeMap<ShardId, Instant>,
    handoffs: BTreeMap<ShardId, HandOff>,
    remembered: BTreeMap<ShardId, BTreeSet<String>>,
    realloc: BTreeSet<ShardId>,
    active: bool,
}

impl CoordinatorState {
    /// A recovering coordinator.
    pub fn new(cfg: AllocationSettings, members: Membership) -> Self {
        Self {
            cfg,
            members,
            regions: BTreeMap::new(),
            homes: BTreeMap::new(),
            starting: BTreeMap::new(),
            handoffs: BTreeMap::new(),
            remembered: BTreeMap::new(),
            realloc: BTreeSet::new(),
            active: false,
        }
    }

    /// Entities remembered in a durable store (remember-entities): they are restarted
    /// with their shard, which is allocated as soon as the coordinator is active if no
    /// region hosts it by then (after a restart of the whole cluster, none does).
    pub fn remember(&mut self, shard: ShardId, entities: impl IntoIterator<Item = String>) {
        self.remembered.entry(shard).or_default().extend(entities);
        if !self.homes.contains_key(&shard) && !self.handoffs.contains_key(&shard) {
            self.realloc.insert(shard);
        }
    }

    /// True once every live region registered; only then shards are allocated.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Current home of each allocated shard.
    pub fn homes(&self) -> &BTreeMap<ShardId, NodeAddress> {
        &self.homes
    }

    /// Shards per hosting region (registered, not proxy).
    pub fn shard_counts(&self) -> BTreeMap<NodeAddress, usize> {
        self.regions
            .iter()
            .filter(|(_, r)| !r.proxy)
            .map(|(a, r)| (a.clone(), r.shards.len()))
            .collect()
    }

    /// Members that are alive but whose region has not registered (yet).
    pub fn unregistered_members(&self) -> Vec<NodeAddress> {
        self.members
            .members
            .iter()
            .filter(|m| m.status < MemberStatus::Exiting && !self.registered(&m.address, m.uid))
            .map(|m| m.address.clone())
            .collect()
    }

    /// Whether the region of incarnation `uid` at `address` has registered.
    fn registered(&self, address: &NodeAddress, uid: u64) -> bool {
        self.regions.get(address).is_some_and(|r| r.uid == uid)
    }

    /// Whether the registered region at `address` is still a live member: the same
    /// incarnation, not Down or Removed.
    fn region_alive(&self, address: &NodeAddress) -> bool {
        self.regions
            .get(address)
            .is_some_and(|r| self.members.is_incarnation_alive(address, r.uid))
    }

    /// Shards in hand-off now.
    pub fn handoffs_in_flight(&self) -> usize {
        self.handoffs.len()
    }

    fn eligible(&self, a: &NodeAddress) -> bool {
        self.regions.get(a).is_some_and(|r| {
            !r.proxy
                && !r.leaving
                && self
                    .members
                    .incarnation(a, r.uid)
                    .is_some_and(|m| m.status == MemberStatus::Up)
        })
    }

    fn load(&self, a: &NodeAddress) -> usize {
        let own = self.regions.get(a).map_or(0, |r| r.shards.len());
        let out = self.handoffs.values().filter(|h| &h.from == a).count();
        let inc = self
            .handoffs
            .values()
            .filter(|h| h.to.as_ref() == Some(a))
            .count();
        own + inc - out.min(own + inc)
    }

    fn version(&self, a: &NodeAddress) -> Option<&AppVersion> {
        self.members.member(a).map(|m| &m.app_version)
    }

    /// Where a shard goes: among the eligible regions, those on the newest application
    /// version (so that during a rolling update shards move forward to new pods, never
    /// back to old ones), then the least loaded, then the lowest address.
    fn least_loaded(&self) -> Option<NodeAddress> {
        self.regions
            .keys()
            .filter(|a| self.eligible(a))
            .min_by_key(|a| (Reverse(self.version(a)), self.load(a), (*a).clone()))
            .cloned()
    }

    fn broadcast(&self, msg: RegionWire<()>) -> Vec<Out> {
        self.regions
            .keys()
            .filter(|a| self.region_alive(a))
            .map(|a| Out(a.clone(), msg.clone()))
            .collect()
    }

    fn allocate(&mut self, shard: ShardId, target: NodeAddress, now: Instant) -> Vec<Out> {
        self.homes.insert(shard, target.clone());
        self.regions
            .entry(target.clone())
            .or_default()
            .shards
            .insert(shard);
        self.starting.insert(shard, now);
        self.realloc.remove(&shard);
        let entities = self
            .remembered
            .get(&shard)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        vec![Out(target, RegionWire::HostShard { shard, entities })]
    }

    fn check_active(&mut self, now: Instant) -> Vec<Out> {
        if !self.active {
            // Exiting members too: their regions run until the node terminates, and may
            // still be stopping entities of a hand-off that a previous coordinator began.
            let role = self.cfg.role.as_deref();
            let missing: Vec<&NodeAddress> = self
                .members
                .members
                .iter()
                .filter(|m| m.has_role(role) && m.status <= MemberStatus::Exiting)
                .filter(|m| !self.registered(&m.address, m.uid))
                .map(|m| &m.address)
                .collect();
            if !missing.is_empty() {
                return Vec::new();
            }
            info!(
                regions = self.regions.len(),
                shards = self.homes.len(),
                "shard coordinator active"
            );
            self.active = true;
        }
        let mut out = Vec::new();
        let pending: Vec<ShardId> = self.realloc.iter().copied().collect();
        for s in pending {
            if self.homes.contains_key(&s) || self.handoffs.contains_key(&s) {
                self.realloc.remove(&s);
                continue;
            }
            match self.least_loaded() {
                Some(t) => out.extend(self.allocate(s, t, now)),
                None => break,
            }
        }
        out
    }

    /// A new membership view: regions of Down/Removed (or replaced) incarnations are
    /// dropped and their shards re-allocated.
    pub fn on_members(&mut self, members: Membership, now: Instant) -> Vec<Out> {
        self.members = members;
        let gone: Vec<NodeAddress> = self
            .regions
            .keys()
            .filter(|a| !self.region_alive(a))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for g in gone {
            out.extend(self.region_gone(&g, now));
        }
        out.extend(self.check_active(now));
        out
    }

    fn region_gone(&mut self, node: &NodeAddress, now: Instant) -> Vec<Out> {
        let Some(entry) = self.regions.remove(node) else {
            return Vec::new();
        };
        if !entry.shards.is_empty() {
            warn!(region = %node, shards = entry.shards.len(), "region gone; re-allocating its shards");
        }
        for s in &entry.shards {
            if self.homes.get(s) == Some(node) {
                self.homes.remove(s);
                self.starting.remove(s);
                self.realloc.insert(*s);
            }
        }
        let mut out = Vec::new();
        let shards: Vec<ShardId> = self.handoffs.keys().copied().collect();
        for s in shards {
            let h = self.handoffs.get_mut(&s).expect("present");
            h.pending_acks.remove(node);
            if h.to.as_ref() == Some(node) {
                h.to = None;
            }
            if &h.from == node {
                out.extend(self.complete_handoff(s, Vec::new(), now));
            } else {
                out.extend(self.maybe_send_stop(s));
            }
        }
        out
    }

    fn maybe_send_stop(&mut self, shard: ShardId) -> Vec<Out> {
        match self.handoffs.get_mut(&shard) {
            Some(h) if h.pending_acks.is_empty() && !h.stop_sent => {
                h.stop_sent = true;
                vec![Out(h.from.clone(), RegionWire::HandOff { shard })]
            }
            _ => Vec::new(),
        }
    }

    fn start_handoff(
        &mut self,
        shard: ShardId,
        from: NodeAddress,
        to: Option<NodeAddress>,
        now: Instant,
    ) -> Vec<Out> {
        self.starting.remove(&shard);
        let pending: BTreeSet<NodeAddress> = self
            .regions
            .keys()
            .filter(|a| self.region_alive(a))
            .cloned()
            .collect();
        self.handoffs.insert(
            shard,
            HandOff {
                from,
                to,
                pending_acks: pending.clone(),
                stop_sent: false,
                started: now,
            },
        );
        let mut out: Vec<Out> = pending
            .into_iter()
            .map(|a| Out(a, RegionWire::BeginHandOff { shard }))
            .collect();
        out.extend(self.maybe_send_stop(shard));
        out
    }

    fn complete_handoff(
        &mut self,
        shard: ShardId,
        entities: Vec<String>,
        now: Instant,
    ) -> Vec<Out> {
        let Some(h) = self.handoffs.remove(&shard) else {
            return Vec::new();
        };
        if self.homes.get(&shard) == Some(&h.from) {
            self.homes.remove(&shard);
        }
        if let Some(r) = self.regions.get_mut(&h.from) {
            r.shards.remove(&shard);
        }
        if !entities.is_empty() {
            self.remembered.entry(shard).or_default().extend(entities);
        }
        let target =
            h.to.filter(|t| self.eligible(t))
                .or_else(|| self.least_loaded());
        match target {
            Some(t) if self.active => self.allocate(shard, t, now),
            _ => {
                self.realloc.insert(shard);
                Vec::new()
            }
        }
    }

    /// A message from a region.
    pub fn on_wire(&mut self, msg: CoordinatorWire, now: Instant) -> Vec<Out> {
        match msg {
            CoordinatorWire::Register {
                region,
                uid,
                proxy,
                leaving,
                shards,
            } => {
                if !self.members.is_incarnation_alive(&region, uid) {
                    // Not a member in this view yet (or no longer): it registers again on
                    // its next tick. A region is trusted only as a member, so that its
                    // node's predecessor is gone from the view before it is taken.
                    debug!(region = %region, uid, "registration of a region that is not a live member; ignored");
                    return Vec::new();
                }
                let mut out = Vec::new();
                if self.regions.get(&region).is_some_and(|r| r.uid != uid) {
                    info!(region = %region, "a new incarnation of a region's node registers; its predecessor is gone");
                    out.extend(self.region_gone(&region, now));
                }
                {
                    let e = self.regions.entry(region.clone()).or_default();
                    e.uid = uid;
                    e.proxy = proxy;
                    e.leaving |= leaving;
                }
                for (s, ents) in shards {
                    if !ents.is_empty() {
                        self.remembered.entry(s).or_default().extend(ents);
                    }
                    match self.homes.get(&s) {
                        None if !self.handoffs.contains_key(&s) => {
                            self.homes.insert(s, region.clone());
                            self.realloc.remove(&s);
                            self.regions
                                .get_mut(&region)
                                .expect("inserted")
                                .shards
                                .insert(s);
                        }
                        None => {}
                        Some(h) if h == &region => {}
                        Some(h) => {
                            error!(shard = s, home = %h, duplicate = %region,
                                "region reports a shard allocated elsewhere; asking it to stop the shard");
                            out.push(Out(region.clone(), RegionWire::HandOff { shard: s }));
                        }
                    }
                }
                let homes = self
                    .homes
                    .iter()
                    .filter(|(s, _)| {
                        !self.starting.contains_key(s) && !self.handoffs.contains_key(s)
                    })
                    .map(|(s, a)| (*s, a.clone()))
                    .collect();
                out.push(Out(region, RegionWire::RegisterAck { homes }));
                out.extend(self.check_active(now));
                out
            }
            CoordinatorWire::GetShardHome { region, shard } => {
                if self.handoffs.contains_key(&shard) {
                    return Vec::new();
                }
                match self.homes.get(&shard) {
                    Some(_) if self.starting.contains_key(&shard) => Vec::new(),
                    Some(h) => vec![Out(
                        region,
                        RegionWire::ShardHome {
                            shard,
                            home: h.clone(),
                        },
                    )],
                    None if self.active => match self.least_loaded() {
                        Some(t) => self.allocate(shard, t, now),
                        None => Vec::new(),
                    },
                    None => Vec::new(),
                }
            }
            CoordinatorWire::ShardStarted { region, shard } => {
                if self.homes.get(&shard) == Some(&region) && self.starting.remove(&shard).is_some()
                {
                    self.broadcast(RegionWire::ShardHome {
                        shard,
                        home: region,
                    })
                } else {
                    Vec::new()
                }
            }
            CoordinatorWire::BeginHandOffAck { region, shard } => {
                if let Some(h) = self.handoffs.get_mut(&shard) {
                    h.pending_acks.remove(&region);
                }
                self.maybe_send_stop(shard)
            }
            CoordinatorWire::ShardStopped {
                region,
                shard,
                entities,
            } => {
                if self.handoffs.get(&shard).is_some_and(|h| h.from == region) {
                    self.complete_handoff(shard, entities, now)
                } else if self.homes.get(&shard) == Some(&region)
                    && !self.starting.contains_key(&shard)
                    && !self.handoffs.contains_key(&shard)
                {
                    // Its home stopped it for a hand-off a previous coordinator asked
                    // for: it is free now. (A home that is starting it again sent this
                    // before its `ShardStarted`, so that case is not taken for it.)
                    if let Some(r) = self.regions.get_mut(&region) {
                        r.shards.remove(&shard);
                    }
                    self.homes.remove(&shard);
                    if !entities.is_empty() {
                        self.remembered.entry(shard).or_default().extend(entities);
                    }
                    self.realloc.insert(shard);
                    self.check_active(now)
                } else {
                    Vec::new()
                }
            }
            CoordinatorWire::EntitiesStarted { entities, .. } => {
                for (s, ids) in entities {
                    self.remembered.entry(s).or_default().extend(ids);
                }
                Vec::new()
            }
            CoordinatorWire::GracefulShutdown { region } => {
                let Some(entry) = self.regions.get_mut(&region) else {
                    // Not registered here: it registers (with `leaving`) and asks again.
                    return Vec::new();
                };
                entry.leaving = true;
                let shards: Vec<ShardId> = self.regions[&region]
                    .shards
                    .iter()
                    .copied()
                    .filter(|s| !self.handoffs.contains_key(s))
                    .collect();
                info!(region = %region, shards = shards.len(), "graceful shutdown of a region: handing off its shards");
                let mut out = Vec::new();
                for s in shards {
                    let to = self.least_loaded();
                    out.extend(self.start_handoff(s, region.clone(), to, now));
                }
                out.push(Out(region, RegionWire::GracefulShutdownAck));
                out
            }
        }
    }

    /// Housekeeping: re-sends, hand-off timeouts, pending re-allocations, and (when
    /// `rebalance` is set) one bounded rebalance round.
    pub fn on_tick(&mut self, now: Instant, rebalance: bool) -> Vec<Out> {
        let mut out = Vec::new();
        let expired: Vec<ShardId> = self
            .handoffs
            .iter()
            .filter(|(_, h)| {
                !h.stop_sent && now.duration_since(h.started) > self.cfg.handoff_timeout
            })
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            let h = self.handoffs.remove(&s).expect("present");
            warn!(shard = s, from = %h.from, waiting_for = ?h.pending_acks, "hand-off not acknowledged in time; abandoned");
            out.extend(self.broadcast(RegionWire::ShardHome {
                shard: s,
                home: h.from,
            }));
        }
        for (s, h) in &self.handoffs {
            if now.duration_since(h.started) < self.cfg.retry_interval {
                continue;
            }
            if h.stop_sent {
                out.push(Out(h.from.clone(), RegionWire::HandOff { shard: *s }));
            } else {
                for a in &h.pending_acks {
                    out.push(Out(a.clone(), RegionWire::BeginHandOff { shard: *s }));
                }
            }
        }
        let retry = self.cfg.retry_interval;
        let resend: Vec<(ShardId, NodeAddress)> = self
            .starting
            .iter_mut()
            .filter(|(_, t)| now.duration_since(**t) >= retry)
            .filter_map(|(s, t)| {
                *t = now;
                self.homes.get(s).map(|h| (*s, h.clone()))
            })
            .collect();
        for (s, h) in resend {
            let entities = self
                .remembered
                .get(&s)
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default();
            out.push(Out(h, RegionWire::HostShard { shard: s, entities }));
        }
        out.extend(self.check_active(now));
        if rebalance && self.active {
            out.extend(self.rebalance(now));
        }
        out
    }

    fn rebalance(&mut self, now: Instant) -> Vec<Out> {
        let eligible: Vec<NodeAddress> = self
            .regions
            .keys()
            .filter(|a| self.eligible(a))
            .cloned()
            .collect();
        if eligible.len() < 2 {
            return Vec::new();
        }
        // Not while a rolling update is in progress (Akka's rule): the old-version regions
        // are about to go, and what they host moves to the newest when they leave.
        let first = self.version(&eligible[0]);
        if eligible.iter().any(|a| self.version(a) != first) {
            return Vec::new();
        }
        let budget = self
            .cfg
            .rebalance_max_per_round
            .saturating_sub(self.handoffs.len());
        let mut out = Vec::new();
        for _ in 0..budget {
            let most = eligible
                .iter()
                .max_by_key(|a| (self.load(a), std::cmp::Reverse((*a).clone())))
                .expect("non-empty")
                .clone();
            let least = eligible
                .iter()
                .min_by_key(|a| (self.load(a), (*a).clone()))
                .expect("non-empty")
                .clone();
            if self.load(&most) <= self.load(&least) + self.cfg.rebalance_threshold {
                break;
            }
            let candidate = self.regions[&most]
                .shards
                .iter()
                .rev()
                .copied()
                .find(|s| !self.handoffs.contains_key(s) && !self.starting.contains_key(s));
            let Some(shard) = candidate else { break };
            info!(shard, from = %most, to = %least, "rebalancing shard");
            out.extend(self.start_handoff(shard, most, Some(least), now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MemberView;

    fn addr(p: u16) -> NodeAddress {
        NodeAddress::new("S", "127.0.0.1", p)
    }

    fn members(ports: &[(u16, MemberStatus)]) -> Membership {
        Membership {
            members: ports
                .iter()
                .enumerate()
                .map(|(i, (p, st))| MemberView {
                    address: addr(*p),
                    uid: u64::from(*p),
                    status: *st,
                    roles: ["r".to_string()].into(),
                    up_number: i as u64 + 1,
                    app_version: AppVersion::built(),
                })
                .collect(),
        }
    }

    fn cfg(max: usize) -> AllocationSettings {
        AllocationSettings {
            role: Some("r".into()),
            rebalance_threshold: 1,
            rebalance_max_per_round: max,
            handoff_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
        }
    }

    fn register(c: &mut CoordinatorState, p: u16, now: Instant) -> Vec<Out> {
        register_uid(c, p, u64::from(p), vec![], now)
    }

    /// Plays the regions' side of every message until nothing is left to send.
    fn run_regions(c: &mut CoordinatorState, out: Vec<Out>, now: Instant) {
        run_recording(c, out, now, &mut Vec::new());
    }

    /// Like `run_regions`, recording where every `HostShard` went.
    fn run_recording(
        c: &mut CoordinatorState,
        mut out: Vec<Out>,
        now: Instant,
        hosted: &mut Vec<(ShardId, NodeAddress)>,
    ) {
        while let Some(Out(to, m)) = out.pop() {
            if let RegionWire::HostShard { shard, .. } = &m {
                hosted.push((*shard, to.clone()));
            }
            let reply = match m {
                RegionWire::HostShard { shard, .. } => {
                    Some(CoordinatorWire::ShardStarted { region: to, shard })
                }
                RegionWire::BeginHandOff { shard } => {
                    Some(CoordinatorWire::BeginHandOffAck { region: to, shard })
                }
                RegionWire::HandOff { shard } => Some(CoordinatorWire::ShardStopped {
                    region: to,
                    shard,
                    entities: vec![],
                }),
                _ => None,
            };
            if let Some(r) = reply {
                out.extend(c.on_wire(r, now));
            }
        }
    }

    fn allocate_all(c: &mut CoordinatorState, n: u32, now: Instant) {
        for s in 0..n {
            let o = c.on_wire(
                CoordinatorWire::GetShardHome {
                    region: addr(1),
                    shard: s,
                },
                now,
            );
            run_regions(c, o, now);
        }
    }

    fn register_uid(
        c: &mut CoordinatorState,
        p: u16,
        uid: u64,
        shards: Vec<ShardId>,
        now: Instant,
    ) -> Vec<Out> {
        c.on_wire(
            CoordinatorWire::Register {
                region: addr(p),
                uid,
                proxy: false,
                leaving: false,
                shards: shards.into_iter().map(|s| (s, vec![])).collect(),
            },
            now,
        )
    }

    /// Port 1 restarted: its old incarnation (uid 1) Down, the new one (uid 11) `status`.
    fn restarted(status: MemberStatus) -> Membership {
        let mut m = members(&[(1, MemberStatus::Down), (2, MemberStatus::Up)]);
        let mut new = m.members[0].clone();
        new.uid = 11;
        new.status = status;
        new.up_number = if status == MemberStatus::Up { 3 } else { 0 };
        m.members.push(new);
        m
    }

    #[test]
    fn a_registration_from_an_incarnation_that_is_not_a_member_is_ignored() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        // A node at port 1 with another uid: not the member the view lists.
        assert!(register_uid(&mut c, 1, 99, vec![], now).is_empty());
        assert_eq!(c.unregistered_members(), vec![addr(1), addr(2)]);
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        assert!(c.is_active());
    }

    #[test]
    fn a_restarted_node_never_inherits_its_predecessors_shards() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        for s in 0..6 {
            let o = c.on_wire(
                CoordinatorWire::GetShardHome {
                    region: addr(2),
                    shard: s,
                },
                now,
            );
            run_regions(&mut c, o, now);
        }
        let on_1: Vec<ShardId> = c
            .homes()
            .iter()
            .filter(|(_, h)| **h == addr(1))
            .map(|(s, _)| *s)
            .collect();
        assert!(!on_1.is_empty());
        // The new incarnation registers before the coordinator saw it join: ignored, and
        // nothing is sent to port 1 meanwhile.
        assert!(register_uid(&mut c, 1, 11, vec![], now).is_empty());
        // The view: old Down, new Joining. The old region's shards go to port 2 (the only
        // Up region), never to the address of the new incarnation.
        let mut hosted = Vec::new();
        let o = c.on_members(restarted(MemberStatus::Joining), now);
        run_recording(&mut c, o, now, &mut hosted);
        assert_eq!(hosted.len(), on_1.len());
        assert!(hosted.iter().all(|(_, a)| *a == addr(2)), "{hosted:?}");
        assert!(c.homes().values().all(|h| *h == addr(2)));
        // Now the new incarnation registers; Up, it takes shards by rebalancing only.
        let o = register_uid(&mut c, 1, 11, vec![], now);
        assert!(matches!(&o[..], [Out(a, RegionWire::RegisterAck { .. })] if *a == addr(1)));
        let o = c.on_members(restarted(MemberStatus::Up), now);
        assert!(o.is_empty(), "{o:?}");
    }

    #[test]
    fn a_predecessor_removed_unseen_loses_its_shards_before_its_successor_registers() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register_uid(&mut c, 1, 1, vec![0, 1], now);
        register(&mut c, 2, now);
        // The coordinator's next view lists only the new incarnation (the old one was
        // removed before this coordinator saw it Down): the address is still a member,
        // but the registered incarnation is not, so its shards move.
        let mut m = restarted(MemberStatus::Joining);
        m.members.remove(0);
        let o = c.on_members(m, now);
        let hosts: Vec<&Out> = o
            .iter()
            .filter(|Out(_, m)| matches!(m, RegionWire::HostShard { .. }))
            .collect();
        assert_eq!(hosts.len(), 2);
        assert!(hosts.iter().all(|Out(a, _)| *a == addr(2)));
        let o = register_uid(&mut c, 1, 11, vec![], now);
        assert!(matches!(&o[..], [Out(_, RegionWire::RegisterAck { homes })] if homes.is_empty()));
    }

    #[test]
    fn a_recovering_coordinator_waits_for_exiting_regions() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Exiting)]),
        );
        register(&mut c, 1, now);
        assert!(
            !c.is_active(),
            "an Exiting region may still be stopping entities"
        );
        // It reports a shard it is still stopping: known, so never allocated elsewhere.
        register_uid(&mut c, 2, 2, vec![5], now);
        assert!(c.is_active());
        assert_eq!(c.homes().get(&5), Some(&addr(2)));
        let o = c.on_wire(
            CoordinatorWire::GetShardHome {
                region: addr(1),
                shard: 5,
            },
            now,
        );
        assert!(matches!(&o[..], [Out(_, RegionWire::ShardHome { home, .. })] if *home == addr(2)));
        // Its ShardStopped frees it; only then is it allocated to port 1.
        let o = c.on_wire(
            CoordinatorWire::ShardStopped {
                region: addr(2),
                shard: 5,
                entities: vec![],
            },
            now,
        );
        assert!(
            matches!(&o[..], [Out(a, RegionWire::HostShard { shard: 5, .. })] if *a == addr(1))
        );
    }

    #[test]
    fn recovering_coordinator_allocates_nothing_until_all_regions_registered() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register(&mut c, 1, now);
        assert!(!c.is_active());
        assert!(
            c.on_wire(
                CoordinatorWire::GetShardHome {
                    region: addr(1),
                    shard: 0
                },
                now
            )
            .is_empty()
        );
        // Region 2 still hosts shard 0 from the previous coordinator's time.
        c.on_wire(
            CoordinatorWire::Register {
                region: addr(2),
                uid: 2,
                proxy: false,
                leaving: false,
                shards: vec![(0, vec![])],
            },
            now,
        );
        assert!(c.is_active());
        let o = c.on_wire(
            CoordinatorWire::GetShardHome {
                region: addr(1),
                shard: 0,
            },
            now,
        );
        assert_eq!(
            o,
            vec![Out(
                addr(1),
                RegionWire::ShardHome {
                    shard: 0,
                    home: addr(2)
                }
            )]
        );
    }

    fn versioned(ms: &[(u16, &str)]) -> Membership {
        Membership {
            members: ms
                .iter()
                .enumerate()
                .map(|(i, (p, v))| MemberView {
                    address: addr(*p),
                    uid: u64::from(*p),
                    status: MemberStatus::Up,
                    roles: ["r".to_string()].into(),
                    up_number: i as u64 + 1,
                    app_version: AppVersion::parse(v).unwrap(),
                })
                .collect(),
        }
    }

    /// A rolling update of two regions from 1.0.0 to 1.1.0 (pods 1 and 2 replaced by 3
    /// and 4, highest ordinal first): shards go to the new version as soon as one runs,
    /// never back to an old region, no rebalance runs while versions are mixed, and each
    /// shard moves at most three times.
    #[test]
    fn a_rolling_update_moves_shards_forward_to_the_newest_version() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(cfg(4), versioned(&[(1, "1.0.0"), (2, "1.0.0")]));
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        allocate_all(&mut c, 20, now);
        let mut hosted = Vec::new();

        // pod 2 leaves; its replacement 3 runs 1.1.0
        let o = c.on_wire(CoordinatorWire::GracefulShutdown { region: addr(2) }, now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = c.on_members(versioned(&[(1, "1.0.0"), (3, "1.1.0")]), now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = register(&mut c, 3, now);
        run_recording(&mut c, o, now, &mut hosted);
        assert!(
            c.on_tick(now, true).is_empty(),
            "no rebalance while versions are mixed"
        );
        let new_from = hosted.len();

        // a new shard goes to the new region, which then hosts one
        let o = c.on_wire(
            CoordinatorWire::GetShardHome {
                region: addr(1),
                shard: 20,
            },
            now,
        );
        run_recording(&mut c, o, now, &mut hosted);
        assert_eq!(c.homes()[&20], addr(3));

        // an old-version region with fewer shards (none) still gets no new shard
        let o = c.on_members(versioned(&[(1, "1.0.0"), (3, "1.1.0"), (5, "1.0.0")]), now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = register(&mut c, 5, now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = c.on_wire(
            CoordinatorWire::GetShardHome {
                region: addr(1),
                shard: 21,
            },
            now,
        );
        run_recording(&mut c, o, now, &mut hosted);
        assert_eq!(
            c.homes()[&21],
            addr(3),
            "the newest version, not the least loaded"
        );
        let o = c.on_wire(CoordinatorWire::GracefulShutdown { region: addr(5) }, now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = c.on_members(versioned(&[(1, "1.0.0"), (3, "1.1.0")]), now);
        run_recording(&mut c, o, now, &mut hosted);

        // pod 1 leaves; its replacement 4 runs 1.1.0; now the versions agree and it rebalances
        let o = c.on_wire(CoordinatorWire::GracefulShutdown { region: addr(1) }, now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = c.on_members(versioned(&[(3, "1.1.0"), (4, "1.1.0")]), now);
        run_recording(&mut c, o, now, &mut hosted);
        let o = register(&mut c, 4, now);
        run_recording(&mut c, o, now, &mut hosted);
        for _ in 0..10 {
            let o = c.on_tick(now, true);
            if o.is_empty() {
                break;
            }
            run_recording(&mut c, o, now, &mut hosted);
        }
        assert_eq!(
            c.shard_counts().values().copied().collect::<Vec<_>>(),
            vec![11, 11]
        );
        assert!(
            hosted[new_from..]
                .iter()
                .all(|(_, to)| *to == addr(3) || *to == addr(4)),
            "once 1.1.0 runs, no shard is placed on 1.0.0: {hosted:?}"
        );
        let mut moves: BTreeMap<ShardId, usize> = BTreeMap::new();
        for (s, _) in &hosted {
            *moves.entry(*s).or_default() += 1;
        }
        assert!(moves.values().all(|m| *m <= 3), "{moves:?}");
    }

    #[test]
    fn least_shard_allocation_splits_evenly() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        allocate_all(&mut c, 30, now);
        assert_eq!(
            c.shard_counts().values().copied().collect::<Vec<_>>(),
            vec![15, 15]
        );
        assert_eq!(c.homes().len(), 30);
    }

    #[test]
    fn rebalance_moves_bounded_steps_to_a_new_region() {
        let now = Instant::now();
        let ms = members(&[
            (1, MemberStatus::Up),
            (2, MemberStatus::Up),
            (3, MemberStatus::Up),
        ]);
        let mut c = CoordinatorState::new(cfg(4), ms);
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        // Region 3 is a member but not registered yet: the coordinator waits.
        assert!(!c.is_active());
        register(&mut c, 3, now);
        // Force 15/15/0: register 3 last but allocate with only 1 and 2 eligible.
        c.regions.get_mut(&addr(3)).unwrap().leaving = true;
        allocate_all(&mut c, 30, now);
        c.regions.get_mut(&addr(3)).unwrap().leaving = false;
        let mut rounds = 0;
        loop {
            let o = c.on_tick(now, true);
            let begins = o
                .iter()
                .filter(|Out(_, m)| matches!(m, RegionWire::BeginHandOff { .. }))
                .count();
            assert!(begins <= 4 * 3, "at most 4 shards per round");
            if o.is_empty() {
                break;
            }
            run_regions(&mut c, o, now);
            rounds += 1;
            assert!(rounds < 10);
        }
        assert_eq!(rounds, 3, "10 moves in rounds of at most 4");
        assert_eq!(
            c.shard_counts().values().copied().collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        assert_eq!(c.handoffs_in_flight(), 0);
    }

    #[test]
    fn handoff_waits_for_every_ack_before_stopping_the_shard() {
        let now = Instant::now();
        let ms = members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]);
        let mut c = CoordinatorState::new(cfg(3), ms);
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        allocate_all(&mut c, 2, now);
        let home = c.homes()[&0].clone();
        let o = c.on_wire(
            CoordinatorWire::GracefulShutdown {
                region: home.clone(),
            },
            now,
        );
        assert!(o.contains(&Out(addr(1), RegionWire::BeginHandOff { shard: 0 })));
        assert!(o.contains(&Out(addr(2), RegionWire::BeginHandOff { shard: 0 })));
        assert!(
            !o.iter()
                .any(|Out(_, m)| matches!(m, RegionWire::HandOff { .. }))
        );
        let o = c.on_wire(
            CoordinatorWire::BeginHandOffAck {
                region: addr(1),
                shard: 0,
            },
            now,
        );
        assert!(o.is_empty());
        let o = c.on_wire(
            CoordinatorWire::BeginHandOffAck {
                region: addr(2),
                shard: 0,
            },
            now,
        );
        assert_eq!(o, vec![Out(home.clone(), RegionWire::HandOff { shard: 0 })]);
        // No GetShardHome answer while the shard moves.
        assert!(
            c.on_wire(
                CoordinatorWire::GetShardHome {
                    region: addr(1),
                    shard: 0
                },
                now
            )
            .is_empty()
        );
        let o = c.on_wire(
            CoordinatorWire::ShardStopped {
                region: home.clone(),
                shard: 0,
                entities: vec!["e1".into()],
            },
            now,
        );
        let other = if home == addr(1) { addr(2) } else { addr(1) };
        assert_eq!(
            o,
            vec![Out(
                other.clone(),
                RegionWire::HostShard {
                    shard: 0,
                    entities: vec!["e1".into()]
                }
            )]
        );
        let o = c.on_wire(
            CoordinatorWire::ShardStarted {
                region: other.clone(),
                shard: 0,
            },
            now,
        );
        assert_eq!(o.len(), 2, "ShardHome to both regions");
        assert!(o.iter().all(|Out(_, m)| m
            == &RegionWire::ShardHome {
                shard: 0,
                home: other.clone()
            }));
    }

    #[test]
    fn shards_of_a_downed_region_are_reallocated() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        allocate_all(&mut c, 10, now);
        let o = c.on_members(
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Down)]),
            now,
        );
        assert_eq!(o.len(), 5);
        assert!(
            o.iter()
                .all(|Out(a, m)| a == &addr(1) && matches!(m, RegionWire::HostShard { .. }))
        );
        run_regions(&mut c, o, now);
        assert_eq!(c.shard_counts(), [(addr(1), 10)].into());
    }

    #[test]
    fn a_shard_stopped_for_a_previous_coordinator_is_reallocated() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        c.on_wire(
            CoordinatorWire::Register {
                region: addr(1),
                uid: 1,
                proxy: false,
                leaving: false,
                shards: vec![(4, vec![])],
            },
            now,
        );
        register(&mut c, 2, now);
        let o = c.on_wire(
            CoordinatorWire::ShardStopped {
                region: addr(1),
                shard: 4,
                entities: vec![],
            },
            now,
        );
        assert_eq!(o.len(), 1);
        assert!(matches!(o[0].1, RegionWire::HostShard { shard: 4, .. }));
        // A late duplicate from the region that is starting it again changes nothing.
        let target = o[0].0.clone();
        let o = c.on_wire(
            CoordinatorWire::ShardStopped {
                region: target.clone(),
                shard: 4,
                entities: vec![],
            },
            now,
        );
        assert!(o.is_empty());
        assert_eq!(c.homes()[&4], target);
    }

    #[test]
    fn unacknowledged_handoff_is_abandoned_after_the_timeout() {
        let now = Instant::now();
        let mut c = CoordinatorState::new(
            cfg(3),
            members(&[(1, MemberStatus::Up), (2, MemberStatus::Up)]),
        );
        register(&mut c, 1, now);
        register(&mut c, 2, now);
        allocate_all(&mut c, 1, now);
        let home = c.homes()[&0].clone();
        c.on_wire(
            CoordinatorWire::GracefulShutdown {
                region: home.clone(),
            },
            now,
        );
        let o = c.on_tick(now + Duration::from_secs(6), false);
        assert!(o.contains(&Out(
            addr(1),
            RegionWire::ShardHome {
                shard: 0,
                home: home.clone()
            }
        )));
        assert_eq!(c.handoffs_in_flight(), 0);
        assert_eq!(c.homes()[&0], home);
    }
}
