//! The view of cluster membership that sharding needs: who is a member, in which
//! status, with which roles, and who is the oldest Up member with a role (where the
//! coordinator runs). Regions and the coordinator read it from a
//! `tokio::sync::watch` channel, so the source can be the runtime's membership daemon
//! or, in tests, a driver of its own.
//!
//! A node restarted at the same address is a new *incarnation* with a new uid. For a
//! while both can be in the view (the old one Down, the new one Joining): lookups by
//! address ([`Membership::member`]) give the live incarnation, and
//! [`Membership::incarnation`] tells whether one particular incarnation is still a
//! member, which is what the coordinator checks before it trusts a region.

use std::collections::BTreeSet;

use runtime::{AppVersion, NodeAddress};

/// Lifecycle status of a member (Akka Cluster semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Joining, not Up yet.
    Joining,
    /// Full member.
    Up,
    /// Asked to leave.
    Leaving,
    /// Leaving acknowledged.
    Exiting,
    /// Declared dead.
    Down,
    /// Gone.
    Removed,
}

/// One member as sharding sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its address.
    pub address: NodeAddress,
    /// The uid of this incarnation (a restart at the same address gets a new one).
    pub uid: u64,
    /// Its status.
    pub status: MemberStatus,
    /// Its roles.
    pub roles: BTreeSet<String>,
    /// Up order: 1 = oldest; 0 = not Up yet.
    pub up_number: u64,
    /// The application version it runs.
    pub app_version: AppVersion,
}

impl MemberView {
    /// Whether the member has `role` (any member has `None`).
    pub fn has_role(&self, role: Option<&str>) -> bool {
        role.is_none_or(|r| self.roles.contains(r))
    }
}

/// A point-in-time membership; members that are absent were removed (or never joined).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The members.
    pub members: Vec<MemberView>,
}

impl Membership {
    /// The member at `address`, if any: while an old incarnation (Down) and its
    /// successor are both listed, the one furthest from removal, the successor.
    pub fn member(&self, address: &NodeAddress) -> Option<&MemberView> {
        self.members
            .iter()
            .filter(|m| &m.address == address)
            .min_by_key(|m| m.status)
    }

    /// The incarnation `uid` at `address`, if it is (still) listed.
    pub fn incarnation(&self, address: &NodeAddress, uid: u64) -> Option<&MemberView> {
        self.members
            .iter()
            .find(|m| &m.address == address && m.uid == uid)
    }

    /// Whether the incarnation `uid` at `address` is a member that is not Down or Removed.
    pub fn is_incarnation_alive(&self, address: &NodeAddress, uid: u64) -> bool {
        self.incarnation(address, uid)
            .is_some_and(|m| m.status < MemberStatus::Down)
    }

    /// Whether another incarnation than `uid` is still listed at `address`: a restarted
    /// node's predecessor that is not removed yet.
    pub fn has_predecessor(&self, address: &NodeAddress, uid: u64) -> bool {
        self.members
            .iter()
            .any(|m| &m.address == address && m.uid != uid)
    }

    /// The node that runs the coordinator of a type with `role`: the oldest Up member
    /// with the role (lowest up number, then lowest address). A Leaving member no
    /// longer counts, so a leaving node gives up the coordinator before the next one
    /// takes it.
    pub fn coordinator_node(&self, role: Option<&str>) -> Option<NodeAddress> {
        self.members
            .iter()
            .filter(|m| m.status == MemberStatus::Up && m.has_role(role))
            .min_by(|a, b| (a.up_number, &a.address).cmp(&(b.up_number, &b.address)))
            .map(|m| m.address.clone())
    }

    /// Whether `address` is a member that is not Down, Removed or absent.
    pub fn is_alive(&self, address: &NodeAddress) -> bool {
        self.member(address)
            .is_some_and(|m| m.status < MemberStatus::Down)
    }

    /// Members with `role` whose region should answer queries and registrations
    /// (Joining, Up or Leaving).
    pub fn active_with_role<'a>(
        &'a self,
        role: Option<&'a str>,
    ) -> impl Iterator<Item = &'a MemberView> + 'a {
        self.members.iter().filter(move |m| {
            m.has_role(role)
                && matches!(
                    m.status,
                    MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16, status: MemberStatus, up: u64, roles: &[&str]) -> MemberView {
        MemberView {
            address: NodeAddress::new("S", "127.0.0.1", port),
            uid: u64::from(port),
            status,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            up_number: up,
            app_version: AppVersion::built(),
        }
    }

    #[test]
    fn coordinator_is_the_oldest_up_member_with_the_role() {
        let ms = Membership {
            members: vec![
                m(1, MemberStatus::Up, 1, &["web"]),
                m(2, MemberStatus::Leaving, 2, &["books"]),
                m(3, MemberStatus::Up, 4, &["books"]),
                m(4, MemberStatus::Up, 3, &["books"]),
                m(5, MemberStatus::Joining, 0, &["books"]),
            ],
        };
        assert_eq!(ms.coordinator_node(Some("books")).unwrap().port, 4);
        assert_eq!(ms.coordinator_node(None).unwrap().port, 1);
        assert_eq!(ms.coordinator_node(Some("none")), None);
        let active: Vec<u16> = ms
            .active_with_role(Some("books"))
            .map(|m| m.address.port)
            .collect();
        assert_eq!(active, vec![2, 3, 4, 5]);
        assert!(ms.is_alive(&NodeAddress::new("S", "127.0.0.1", 2)));
        assert!(!ms.is_alive(&NodeAddress::new("S", "127.0.0.1", 9)));
    }

    #[test]
    fn a_restarted_node_is_told_apart_from_its_predecessor() {
        let a = NodeAddress::new("S", "127.0.0.1", 1);
        let mut old = m(1, MemberStatus::Down, 1, &["books"]);
        old.uid = 7;
        let mut new = m(1, MemberStatus::Joining, 0, &["books"]);
        new.uid = 8;
        let ms = Membership {
            members: vec![old, new],
        };
        assert_eq!(ms.member(&a).unwrap().uid, 8);
        assert!(ms.is_alive(&a));
        assert!(!ms.is_incarnation_alive(&a, 7));
        assert!(ms.is_incarnation_alive(&a, 8));
        assert!(ms.has_predecessor(&a, 8));
        let ms = Membership {
            members: vec![m(1, MemberStatus::Up, 1, &["books"])],
        };
        assert!(!ms.has_predecessor(&a, 1));
        assert!(ms.has_predecessor(&a, 2));
    }
}
