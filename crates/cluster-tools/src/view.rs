//! Owns the small read-only view of membership the tools need: members parsed from the
//! runtime's [`ClusterSnapshot`] into typed addresses, and the "oldest Up member with a
//! role" rule that the singleton manager and proxy share.

use runtime::cluster::ClusterSnapshot;
use runtime::membership::MemberStatus;
use runtime::{NodeAddress, UniqueAddress};

/// One member as the tools see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub(crate) node: UniqueAddress,
    pub(crate) status: MemberStatus,
    pub(crate) up_number: u64,
    pub(crate) has_role: bool,
}

impl MemberView {
    /// Age order: lower up number first, then the address (the runtime's rule).
    pub(crate) fn age_key(&self) -> (u64, &NodeAddress) {
        (self.up_number, &self.node.address)
    }
}

/// Members of the snapshot, with `has_role` set for `role` (every member when `None`).
pub(crate) fn members(snap: &ClusterSnapshot, role: Option<&str>) -> Vec<MemberView> {
    snap.members
        .iter()
        .filter_map(|m| {
            let address: NodeAddress = m.node.parse().ok()?;
            Some(MemberView {
                node: UniqueAddress {
                    address,
                    uid: m.uid,
                },
                status: m.status,
                up_number: m.up_number,
                has_role: role.is_none_or(|r| m.roles.contains(r)),
            })
        })
        .collect()
}

/// The oldest member with the role whose status is Up: where a singleton belongs.
pub(crate) fn oldest_up(members: &[MemberView]) -> Option<&MemberView> {
    members
        .iter()
        .filter(|m| m.has_role && m.status == MemberStatus::Up && m.up_number > 0)
        .min_by(|a, b| a.age_key().cmp(&b.age_key()))
}
