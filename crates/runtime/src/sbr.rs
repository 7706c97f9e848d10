//! The split-brain resolver: once the set of unreachable members has been stable for
//! `stable-after`, the leader of each side decides which side survives and downs the
//! other (or its own). Strategies as in Akka: keep-majority (default), static-quorum,
//! keep-oldest, down-all.
//!
//! Members counted are the Up, Leaving and Exiting ones (Joining members do not decide
//! a split); with a role configured, only members with that role are counted.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use crate::address::UniqueAddress;
use crate::membership::{Gossip, MemberStatus};

/// How to decide which side of a partition survives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The side with more members survives; on a tie, the side with the lowest address.
    KeepMajority,
    /// The side with at least `quorum_size` members survives; a smaller side downs itself.
    StaticQuorum {
        /// Members needed to survive.
        quorum_size: usize,
    },
    /// The side with the oldest member survives.
    KeepOldest,
    /// Every member is downed.
    DownAll,
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep-majority" => Ok(Self::KeepMajority),
            "keep-oldest" => Ok(Self::KeepOldest),
            "down-all" => Ok(Self::DownAll),
            other => match other.strip_prefix("static-quorum:") {
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n: &usize| *n > 0)
                    .map(|quorum_size| Self::StaticQuorum { quorum_size })
                    .ok_or_else(|| format!("bad quorum size in {other:?}")),
                None => Err(format!(
                    "unknown strategy {other:?} (keep-majority, keep-oldest, down-all, static-quorum:N)"
                )),
            },
        }
    }
}

/// Resolver settings.
#[derive(Clone, Debug)]
pub struct SbrConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// How long the unreachable set must be unchanged before acting.
    pub stable_after: Duration,
    /// Count only members with this role.
    pub role: Option<String>,
}

impl Default for SbrConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::KeepMajority,
            stable_after: Duration::from_secs(20),
            role: None,
        }
    }
}

/// What the resolver decided: the members to mark Down (possibly including self).
pub fn decide(cfg: &SbrConfig, g: &Gossip, self_node: &UniqueAddress) -> BTreeSet<UniqueAddress> {
    let unreachable = g.unreachable();
    if unreachable.is_empty() {
        return BTreeSet::new();
    }
    let counted = |a: &UniqueAddress| {
        g.member(a).is_some_and(|m| {
            matches!(
                m.status,
                MemberStatus::Up | MemberStatus::Leaving | MemberStatus::Exiting
            ) && cfg.role.as_ref().is_none_or(|r| m.has_role(r))
        })
    };
    let live: Vec<&UniqueAddress> = g
        .members
        .values()
        .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
        .map(|m| &m.address)
        .collect();
    let (mine, theirs): (Vec<&UniqueAddress>, Vec<&UniqueAddress>) = live
        .iter()
        .partition(|a| **a == self_node || !unreachable.contains(**a));
    let down_theirs = || theirs.iter().map(|a| (*a).clone()).collect();
    let down_mine = || mine.iter().map(|a| (*a).clone()).collect();
    let n_mine = mine.iter().filter(|a| counted(a)).count();
    let n_theirs = theirs.iter().filter(|a| counted(a)).count();
    match &cfg.strategy {
        Strategy::DownAll => live.iter().map(|a| (*a).clone()).collect(),
        Strategy::StaticQuorum { quorum_size } => {
            if n_mine >= *quorum_size {
                down_theirs()
            } else {
                down_mine()
            }
        }
        Strategy::KeepMajority => {
            if n_mine > n_theirs {
                down_theirs()
            } else if n_mine < n_theirs {
                down_mine()
            } else {
                let lowest = live
                    .iter()
                    .filter(|a| counted(a))
                    .min_by(|a, b| a.address.cmp(&b.address));
                match lowest {
                    Some(l) if !unreachable.contains(*l) || *l == self_node => down_theirs(),
                    Some(_) => down_mine(),
                    None => down_theirs(),
                }
            }
        }
        Strategy::KeepOldest => match g.oldest(cfg.role.as_deref()) {
            Some(o) if o.address == *self_node || !unreachable.contains(&o.address) => {
                down_theirs()
            }
            Some(_) => down_mine(),
            None => down_theirs(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;
    use crate::membership::Member;

    fn ua(port: u16) -> UniqueAddress {
        UniqueAddress {
            address: NodeAddress::new("S", "h", port),
            uid: 1,
        }
    }

    /// Members 1..=n Up (up numbers in port order); `me` cannot reach `cut`.
    fn split(n: u16, me: u16, cut: &[u16]) -> Gossip {
        let mut g = Gossip::default();
        for p in 1..=n {
            let mut m = Member::joining(
                ua(p),
                BTreeSet::new(),
                crate::app_version::AppVersion::built(),
            );
            m.status = MemberStatus::Up;
            m.up_number = u64::from(p);
            g.members.insert(ua(p), m);
        }
        for c in cut {
            g.set_reachability(&ua(me), &ua(*c), false);
        }
        g
    }

    fn set(ps: &[u16]) -> BTreeSet<UniqueAddress> {
        ps.iter().map(|p| ua(*p)).collect()
    }

    #[test]
    fn keep_majority() {
        let cfg = SbrConfig::default();
        assert_eq!(decide(&cfg, &split(5, 1, &[4, 5]), &ua(1)), set(&[4, 5]));
        assert_eq!(decide(&cfg, &split(5, 4, &[1, 2, 3]), &ua(4)), set(&[4, 5]));
        // tie: the side with the lowest address (1) survives
        assert_eq!(decide(&cfg, &split(4, 1, &[3, 4]), &ua(1)), set(&[3, 4]));
        assert_eq!(decide(&cfg, &split(4, 3, &[1, 2]), &ua(3)), set(&[3, 4]));
        assert!(decide(&cfg, &split(3, 1, &[]), &ua(1)).is_empty());
    }

    #[test]
    fn static_quorum_keep_oldest_down_all() {
        let q = SbrConfig {
            strategy: "static-quorum:3".parse().unwrap(),
            ..SbrConfig::default()
        };
        assert_eq!(decide(&q, &split(5, 1, &[4, 5]), &ua(1)), set(&[4, 5]));
        assert_eq!(decide(&q, &split(5, 4, &[1, 2, 3]), &ua(4)), set(&[4, 5]));
        let o = SbrConfig {
            strategy: Strategy::KeepOldest,
            ..SbrConfig::default()
        };
        // node 1 is oldest: its side survives even as a minority
        assert_eq!(
            decide(&o, &split(5, 1, &[2, 3, 4]), &ua(1)),
            set(&[2, 3, 4])
        );
        assert_eq!(decide(&o, &split(5, 2, &[1]), &ua(2)), set(&[2, 3, 4, 5]));
        let d = SbrConfig {
            strategy: Strategy::DownAll,
            ..SbrConfig::default()
        };
        assert_eq!(decide(&d, &split(3, 1, &[3]), &ua(1)), set(&[1, 2, 3]));
    }

    #[test]
    fn parses_strategies() {
        assert_eq!("keep-oldest".parse::<Strategy>(), Ok(Strategy::KeepOldest));
        assert!("static-quorum:0".parse::<Strategy>().is_err());
        assert!("majority".parse::<Strategy>().is_err());
    }
}
