//! The membership state that nodes gossip, and the pure rules over it (Akka Cluster
//! semantics): member statuses, the vector clock that versions the state, the merge of
//! concurrent versions, reachability as observed by each member, convergence, leader
//! election, and the leader actions.
//!
//! Nothing here does I/O; the daemon in [`crate::cluster`] drives it.
//!
//! Choices, written down:
//! - A member is identified by its [`UniqueAddress`]; a restarted node is a new member.
//! - Merge of concurrent versions keeps, per member, the status that is furthest along
//!   (Joining < Up < Leaving < Exiting < Down < Removed), so a Down never reverts.
//! - Removed members leave the member list and become tombstones, so an old version of
//!   the state can never bring them back; each node forgets tombstones older than
//!   [`TOMBSTONE_TTL`] (Akka's `prune-gossip-tombstones-after`).
//! - Reachability: each observer owns one record (versioned by the observer) listing the
//!   members it cannot reach; a member is unreachable when any live observer says so.
//! - Convergence: every member that is not Down has seen the current version, and every
//!   unreachable member is Down or Exiting. Down members never block convergence.
//! - Leader: the lowest address among reachable Up/Leaving members (or, before any is
//!   Up, among all reachable members that are not Down). Leader actions run only at
//!   convergence.
//! - An Exiting member is removed only once it has *confirmed* its exit (Akka's
//!   `ExitingConfirmed`: its coordinated shutdown is past the shard hand-off) or once it
//!   is unreachable. Removing it earlier would let the rest of the cluster re-home its
//!   shards while its entities still run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{NodeAddress, UniqueAddress};
use crate::app_version::AppVersion;

/// How long a removed member's tombstone is kept.
pub const TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Milliseconds since the Unix epoch (tombstone timestamps).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lifecycle status of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Asked to join; not yet moved Up by the leader.
    Joining,
    /// Full member.
    Up,
    /// Asked to leave; the leader will move it to Exiting.
    Leaving,
    /// Leaving is acknowledged; the leader removes it at the next convergence.
    Exiting,
    /// Declared dead (by the resolver or an operator); it will be removed.
    Down,
    /// Gone; the node shuts down if it still runs.
    Removed,
}

impl MemberStatus {
    /// Lower-case name, as `tradectl` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Up => "up",
            Self::Leaving => "leaving",
            Self::Exiting => "exiting",
            Self::Down => "down",
            Self::Removed => "removed",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identity.
    pub address: UniqueAddress,
    /// Status.
    pub status: MemberStatus,
    /// Roles (e.g. `lighthouse`, `trade-processor`).
    pub roles: BTreeSet<String>,
    /// Order in which members became Up (0 = not Up yet); lowest is the oldest.
    pub up_number: u64,
    /// The application version this incarnation runs (fixed for its lifetime).
    pub app_version: AppVersion,
}

impl Member {
    /// A new Joining member.
    pub fn joining(
        address: UniqueAddress,
        roles: BTreeSet<String>,
        app_version: AppVersion,
    ) -> Self {
        Self {
            address,
            status: MemberStatus::Joining,
            roles,
            up_number: 0,
            app_version,
        }
    }

    /// True when it has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }
}

/// Result of comparing two vector clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockOrder {
    /// Equal.
    Same,
    /// The left one happened before the right one.
    Before,
    /// The left one happened after the right one.
    After,
    /// Neither: concurrent changes.
    Concurrent,
}

/// A vector clock keyed by member (`host:port#uid`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorClock(pub BTreeMap<String, u64>);

impl VectorClock {
    /// Increments the entry of `node`.
    pub fn tick(&mut self, node: &UniqueAddress) {
        *self.0.entry(clock_key(node)).or_insert(0) += 1;
    }

    /// Compares with `other`.
    pub fn compare(&self, other: &Self) -> ClockOrder {
        let mut less = false;
        let mut greater = false;
        for k in self.0.keys().chain(other.0.keys()) {
            let a = self.0.get(k).copied().unwrap_or(0);
            let b = other.0.get(k).copied().unwrap_or(0);
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => ClockOrder::Same,
            (true, false) => ClockOrder::Before,
            (false, true) => ClockOrder::After,
            (true, true) => ClockOrder::Concurrent,
        }
    }

    /// Entry-wise maximum.
    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        Self(out)
    }
}

fn clock_key(a: &UniqueAddress) -> String {
    format!("{}#{}", a.address.socket_addr_string(), a.uid)
}

/// What one observer cannot reach, versioned by that observer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverRecord {
    /// Bumped by the observer at each change.
    pub version: u64,
    /// Members the observer currently cannot reach.
    pub unreachable: BTreeSet<UniqueAddress>,
}

/// The gossiped membership state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    /// Members by identity.
    pub members: BTreeMap<UniqueAddress, Member>,
    /// Version of this state.
    pub version: VectorClock,
    /// Members that have seen this version.
    pub seen: BTreeSet<UniqueAddress>,
    /// Reachability records by observer.
    pub reachability: BTreeMap<UniqueAddress, ObserverRecord>,
    /// Removed members (never to come back), with the time of removal (ms since epoch).
    pub tombstones: BTreeMap<UniqueAddress, u64>,
}

impl Gossip {
    /// A member by identity.
    pub fn member(&self, a: &UniqueAddress) -> Option<&Member> {
        self.members.get(a)
    }

    /// A member by network address (any incarnation, the newest status first).
    pub fn member_by_address(&self, a: &NodeAddress) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| m.address.address == *a)
            .min_by_key(|m| m.status)
    }

    /// Members that some live observer cannot reach.
    pub fn unreachable(&self) -> BTreeSet<UniqueAddress> {
        let mut out = BTreeSet::new();
        for (observer, rec) in &self.reachability {
            let live = self
                .members
                .get(observer)
                .is_some_and(|m| m.status != MemberStatus::Down);
            if live {
                out.extend(
                    rec.unreachable
                        .iter()
                        .filter(|s| self.members.contains_key(s))
                        .cloned(),
                );
            }
        }
        out
    }

    /// Observers that cannot reach `subject`.
    pub fn observers_of(&self, subject: &UniqueAddress) -> Vec<UniqueAddress> {
        self.reachability
            .iter()
            .filter(|(o, r)| r.unreachable.contains(subject) && self.members.contains_key(o))
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// True when every member that matters has seen this version and no unreachable
    /// member blocks (see the module docs).
    pub fn converged(&self) -> bool {
        let unreachable = self.unreachable();
        let blocked = unreachable.iter().any(|u| {
            self.members
                .get(u)
                .is_some_and(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
        });
        if blocked {
            return false;
        }
        self.members.values().all(|m| {
            m.status == MemberStatus::Down
                || self.seen.contains(&m.address)
                || (m.status == MemberStatus::Exiting && unreachable.contains(&m.address))
        })
    }

    /// The leader as seen from `self_node` (unreachable members are skipped, except self).
    pub fn leader(&self, self_node: &UniqueAddress) -> Option<UniqueAddress> {
        let unreachable = self.unreachable();
        let reachable: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.status != MemberStatus::Down && m.status != MemberStatus::Removed)
            .filter(|m| m.address == *self_node || !unreachable.contains(&m.address))
            .collect();
        reachable
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .min_by(|a, b| a.address.address.cmp(&b.address.address))
            .or_else(|| {
                reachable
                    .iter()
                    .min_by(|a, b| a.address.address.cmp(&b.address.address))
            })
            .map(|m| m.address.clone())
    }

    /// The oldest Up/Leaving member (lowest up number), optionally with a role.
    pub fn oldest(&self, role: Option<&str>) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .filter(|m| role.is_none_or(|r| m.has_role(r)))
            .min_by(|a, b| {
                (a.up_number, &a.address.address).cmp(&(b.up_number, &b.address.address))
            })
    }

    /// Marks a local change by `by`: bumps the version and resets `seen` to `by`.
    pub fn changed_by(&mut self, by: &UniqueAddress) {
        self.version.tick(by);
        self.seen.clear();
        self.seen.insert(by.clone());
    }

    /// Sets a member's status if that moves it forward; returns whether it changed.
    pub fn set_status(&mut self, a: &UniqueAddress, status: MemberStatus) -> bool {
        match self.members.get_mut(a) {
            Some(m) if m.status < status => {
                m.status = status;
                true
            }
            _ => false,
        }
    }

    /// Records in `observer`'s record that `subject` is (un)reachable; returns whether
    /// anything changed.
    pub fn set_reachability(
        &mut self,
        observer: &UniqueAddress,
        subject: &UniqueAddress,
        reachable: bool,
    ) -> bool {
        let rec = self.reachability.entry(observer.clone()).or_default();
        let changed = if reachable {
            rec.unreachable.remove(subject)
        } else {
            rec.unreachable.insert(subject.clone())
        };
        if changed {
            rec.version += 1;
        }
        if rec.unreachable.is_empty() && !changed {
            // keep the record (its version matters for merges)
        }
        changed
    }

    /// Deletes a member (it becomes a tombstone) and every reachability record about it.
    pub fn remove(&mut self, a: &UniqueAddress) {
        self.members.remove(a);
        self.seen.remove(a);
        self.reachability.remove(a);
        for rec in self.reachability.values_mut() {
            if rec.unreachable.remove(a) {
                rec.version += 1;
            }
        }
        self.tombstones.insert(a.clone(), now_millis());
    }

    /// Forgets tombstones older than `ttl` (a local clean-up; the version is unchanged).
    pub fn prune_tombstones(&mut self, ttl: std::time::Duration, now_ms: u64) {
        let limit = now_ms.saturating_sub(ttl.as_millis() as u64);
        self.tombstones.retain(|_, t| *t >= limit);
    }

    /// Merges two concurrent versions (commutative; `seen` is left empty).
    pub fn merge(&self, other: &Gossip) -> Gossip {
        let mut tombstones = self.tombstones.clone();
        for (a, t) in &other.tombstones {
            let e = tombstones.entry(a.clone()).or_insert(*t);
            *e = (*e).max(*t);
        }
        let mut members = BTreeMap::new();
        for m in self.members.values().chain(other.members.values()) {
            if tombstones.contains_key(&m.address) {
                continue;
            }
            members
                .entry(m.address.clone())
                .and_modify(|e: &mut Member| {
                    if m.status > e.status {
                        e.status = m.status;
                    }
                    e.up_number = e.up_number.max(m.up_number);
                    e.roles.extend(m.roles.iter().cloned());
                })
                .or_insert_with(|| m.clone());
        }
        let mut reachability = self.reachability.clone();
        for (o, r) in &other.reachability {
            match reachability.get(o) {
                Some(mine) if mine.version >= r.version => {}
                _ => {
                    reachability.insert(o.clone(), r.clone());
                }
            }
        }
        reachability.retain(|o, _| !tombstones.contains_key(o));
        for r in reachability.values_mut() {
            r.unreachable.retain(|s| !tombstones.contains_key(s));
        }
        Gossip {
            members,
            version: self.version.merge(&other.version),
            seen: BTreeSet::new(),
            reachability,
            tombstones,
        }
    }
}

/// Minimum member counts before the leader moves Joining members Up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinMembers {
    /// Total members (`min-nr-of-members`).
    pub total: usize,
    /// Per role (`role.<name>.min-nr-of-members`).
    pub per_role: BTreeMap<String, usize>,
}

impl MinMembers {
    /// True when the current membership satisfies every minimum.
    pub fn satisfied(&self, g: &Gossip) -> bool {
        let live: Vec<&Member> = g
            .members
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::Up))
            .collect();
        live.len() >= self.total
            && self
                .per_role
                .iter()
                .all(|(r, n)| live.iter().filter(|m| m.has_role(r)).count() >= *n)
    }
}

/// What the leader did in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderActions {
    /// Members moved Up.
    pub up: Vec<UniqueAddress>,
    /// Members moved Leaving -> Exiting.
    pub exiting: Vec<UniqueAddress>,
    /// Members removed (were Down, or Exiting and confirmed or unreachable).
    pub removed: Vec<UniqueAddress>,
}

impl LeaderActions {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.up.is_empty() && self.exiting.is_empty() && self.removed.is_empty()
    }
}

/// Runs the leader actions on `g` if `leader` is the leader and the state converged.
/// `exiting_confirmed` are the members that confirmed their exit to this node. Marks the
/// change (version, seen) when something happened.
pub fn leader_actions(
    g: &mut Gossip,
    leader: &UniqueAddress,
    min: &MinMembers,
    exiting_confirmed: &BTreeSet<UniqueAddress>,
) -> LeaderActions {
    let mut out = LeaderActions::default();
    if g.leader(leader).as_ref() != Some(leader) || !g.converged() {
        return out;
    }
    let unreachable = g.unreachable();
    if min.satisfied(g) {
        let mut next_up = g.members.values().map(|m| m.up_number).max().unwrap_or(0);
        let joining: Vec<UniqueAddress> = g
            .members
            .values()
            .filter(|m| m.status == MemberStatus::Joining && !unreachable.contains(&m.address))
            .map(|m| m.address.clone())
            .collect();
        for a in joining {
            next_up += 1;
            let m = g.members.get_mut(&a).expect("member");
            m.status = MemberStatus::Up;
            m.up_number = next_up;
            out.up.push(a);
        }
    }
    let snapshot: Vec<(UniqueAddress, MemberStatus)> = g
        .members
        .values()
        .map(|m| (m.address.clone(), m.status))
        .collect();
    for (a, s) in snapshot {
        match s {
            MemberStatus::Leaving => {
                g.set_status(&a, MemberStatus::Exiting);
                out.exiting.push(a);
            }
            MemberStatus::Exiting if exiting_confirmed.contains(&a) || unreachable.contains(&a) => {
                g.remove(&a);
                out.removed.push(a);
            }
            MemberStatus::Down => {
                g.remove(&a);
                out.removed.push(a);
            }
            _ => {}
        }
    }
    if !out.is_empty() {
        g.changed_by(leader);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(port: u16) -> UniqueAddress {
        UniqueAddress {
            address: NodeAddress::new("S", "127.0.0.1", port),
            uid: u64::from(port) * 10,
        }
    }

    fn cluster(ports: &[u16]) -> Gossip {
        let mut g = Gossip::default();
        for p in ports {
            g.members.insert(
                ua(*p),
                Member::joining(ua(*p), BTreeSet::new(), AppVersion::built()),
            );
        }
        g.changed_by(&ua(ports[0]));
        for p in ports {
            g.seen.insert(ua(*p));
        }
        g
    }

    #[test]
    fn vector_clock_orders() {
        let mut a = VectorClock::default();
        a.tick(&ua(1));
        let mut b = a.clone();
        assert_eq!(a.compare(&b), ClockOrder::Same);
        b.tick(&ua(2));
        assert_eq!(a.compare(&b), ClockOrder::Before);
        assert_eq!(b.compare(&a), ClockOrder::After);
        a.tick(&ua(1));
        assert_eq!(a.compare(&b), ClockOrder::Concurrent);
        let m = a.merge(&b);
        assert_eq!(m.compare(&a), ClockOrder::After);
        assert_eq!(m.compare(&b), ClockOrder::After);
    }

    #[test]
    fn leader_moves_joining_up_only_when_converged_and_min_met() {
        let mut g = cluster(&[1, 2, 3]);
        g.seen.remove(&ua(3));
        assert!(
            leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new()).is_empty()
        );
        g.seen.insert(ua(3));
        // not the leader: nothing
        assert!(
            leader_actions(&mut g, &ua(2), &MinMembers::default(), &BTreeSet::new()).is_empty()
        );
        let min = MinMembers {
            total: 4,
            per_role: BTreeMap::new(),
        };
        assert!(leader_actions(&mut g, &ua(1), &min, &BTreeSet::new()).is_empty());
        let acts = leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        assert_eq!(acts.up.len(), 3);
        assert!(g.members.values().all(|m| m.status == MemberStatus::Up));
        assert_eq!(g.seen.len(), 1);
        assert_eq!(g.oldest(None).unwrap().address, ua(1));
    }

    #[test]
    fn per_role_minimum() {
        let mut g = cluster(&[1, 2]);
        g.members.get_mut(&ua(2)).unwrap().roles.insert("x".into());
        let min = MinMembers {
            total: 1,
            per_role: [("x".to_string(), 2)].into(),
        };
        assert!(!min.satisfied(&g));
        g.members.get_mut(&ua(1)).unwrap().roles.insert("x".into());
        assert!(min.satisfied(&g));
    }

    #[test]
    fn unreachable_blocks_convergence_until_down() {
        let mut g = cluster(&[1, 2, 3]);
        leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        g.seen.extend([ua(2), ua(3)]);
        assert!(g.converged());
        g.set_reachability(&ua(1), &ua(3), false);
        assert!(!g.converged());
        assert_eq!(g.leader(&ua(1)), Some(ua(1)));
        g.set_status(&ua(3), MemberStatus::Down);
        g.seen.remove(&ua(3));
        assert!(g.converged());
        let acts = leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        assert_eq!(acts.removed, vec![ua(3)]);
        assert!(g.tombstones.contains_key(&ua(3)));
        g.prune_tombstones(TOMBSTONE_TTL, now_millis());
        assert!(g.tombstones.contains_key(&ua(3)));
        g.prune_tombstones(
            TOMBSTONE_TTL,
            now_millis() + TOMBSTONE_TTL.as_millis() as u64 + 1,
        );
        assert!(g.tombstones.is_empty());
        assert!(g.unreachable().is_empty());
    }

    #[test]
    fn leave_goes_through_exiting_to_removed() {
        let mut g = cluster(&[1, 2]);
        leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        g.set_status(&ua(1), MemberStatus::Leaving);
        g.seen.extend([ua(1), ua(2)]);
        // a Leaving leader stays leader
        assert_eq!(g.leader(&ua(2)), Some(ua(1)));
        let acts = leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        assert_eq!(acts.exiting, vec![ua(1)]);
        // now node 2 leads; it removes the Exiting member only once that one confirmed
        // its exit (its shard hand-off is done)
        assert_eq!(g.leader(&ua(2)), Some(ua(2)));
        g.seen.insert(ua(2));
        g.seen.insert(ua(1));
        let none = BTreeSet::new();
        for _ in 0..3 {
            let acts = leader_actions(&mut g, &ua(2), &MinMembers::default(), &none);
            assert!(acts.is_empty(), "removed before it confirmed: {acts:?}");
        }
        let confirmed = BTreeSet::from([ua(1)]);
        let acts = leader_actions(&mut g, &ua(2), &MinMembers::default(), &confirmed);
        assert_eq!(acts.removed, vec![ua(1)]);
    }

    #[test]
    fn an_exiting_member_that_became_unreachable_is_removed_without_confirming() {
        let mut g = cluster(&[1, 2]);
        leader_actions(&mut g, &ua(1), &MinMembers::default(), &BTreeSet::new());
        g.set_status(&ua(1), MemberStatus::Exiting);
        g.seen.extend([ua(1), ua(2)]);
        assert!(
            leader_actions(&mut g, &ua(2), &MinMembers::default(), &BTreeSet::new()).is_empty()
        );
        g.set_reachability(&ua(2), &ua(1), false);
        let acts = leader_actions(&mut g, &ua(2), &MinMembers::default(), &BTreeSet::new());
        assert_eq!(acts.removed, vec![ua(1)]);
    }

    #[test]
    fn merge_keeps_furthest_status_and_tombstones() {
        let base = cluster(&[1, 2, 3]);
        let mut a = base.clone();
        let mut b = base.clone();
        a.set_status(&ua(2), MemberStatus::Down);
        a.changed_by(&ua(1));
        b.set_status(&ua(2), MemberStatus::Up);
        b.remove(&ua(3));
        b.changed_by(&ua(2));
        assert_eq!(a.version.compare(&b.version), ClockOrder::Concurrent);
        let m1 = a.merge(&b);
        let m2 = b.merge(&a);
        assert_eq!(m1, m2);
        assert_eq!(m1.member(&ua(2)).unwrap().status, MemberStatus::Down);
        assert!(m1.member(&ua(3)).is_none());
        assert!(m1.tombstones.contains_key(&ua(3)));
    }

    #[test]
    fn reachability_records_merge_by_observer_version() {
        let mut a = cluster(&[1, 2, 3]);
        let mut b = a.clone();
        a.set_reachability(&ua(1), &ua(3), false);
        b.set_reachability(&ua(2), &ua(3), false);
        b.set_reachability(&ua(2), &ua(3), true);
        let m = a.merge(&b);
        assert_eq!(m.observers_of(&ua(3)), vec![ua(1)]);
        assert_eq!(m.reachability[&ua(2)].version, 2);
    }
}
