//! The view of cluster membership that sharding needs: who is a member, in which
//! status, with which roles, and who is the oldest Up member with a role (where the
//! coordinator runs). Regions and the coordinator read it from a
//! `tokio::sync::watch` channel, so the source can be the runtime's membership daemon
//! or, in tests, a driver of its own.

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
    /// The member at `address`, if any.
    pub fn member(&self, address: &NodeAddress) -> Option<&MemberView> {
        self.members.iter().find(|m| &m.address == address)
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
}
