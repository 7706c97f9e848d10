//! Node identity: the network address of a node (`system@host:port`) and the
//! unique address that adds a per-start uid, so a restarted node at the same
//! address is told apart from its old incarnation.
//!
//! Addresses print in the workshop's form, `akka.tcp://AkkaTrader@127.0.0.1:4053`,
//! and parse from that form, from `akka://system@host:port`, from `system@host:port`
//! and from a bare `host:port` (which takes the default system name).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The system name used when none is given (`ACTORSYSTEM` in the workshop).
pub const DEFAULT_SYSTEM: &str = "AkkaTrader";

/// Where a node listens: actor-system name, host and port.
///
/// Ordering is by host, then port, then system name; membership uses this ordering
/// to pick the leader and discovery uses it to pick the node that forms the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeAddress {
    /// Host name or IP address other nodes use to reach this node.
    pub host: String,
    /// TCP port of the cluster transport.
    pub port: u16,
    /// Actor-system name; nodes only talk to nodes of the same system.
    pub system: String,
}

impl NodeAddress {
    /// Builds an address from its parts.
    pub fn new(system: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            system: system.into(),
        }
    }

    /// `host:port`, the form a TCP connect takes.
    pub fn socket_addr_string(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses an address, filling in `default_system` when the text is a bare `host:port`.
    pub fn parse_with_default(text: &str, default_system: &str) -> Result<Self, AddressError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AddressError::new(text, "empty address"));
        }
        let rest = match t.find("://") {
            Some(i) => {
                let scheme = &t[..i];
                if !scheme.starts_with("akka") {
                    return Err(AddressError::new(text, "scheme must be akka or akka.tcp"));
                }
                &t[i + 3..]
            }
            None => t,
        };
        let rest = rest.trim_end_matches('/');
        let (system, hostport) = match rest.rsplit_once('@') {
            Some((s, hp)) => (s, hp),
            None => (default_system, rest),
        };
        if system.is_empty()
            || !system
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AddressError::new(text, "invalid system name"));
        }
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| AddressError::new(text, "missing :port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(AddressError::new(text, "missing host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| AddressError::new(text, "port is not a number 0-65535"))?;
        Ok(Self::new(system, host, port))
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "akka.tcp://{}@{}",
            self.system,
            self.socket_addr_string()
        )
    }
}

impl FromStr for NodeAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_with_default(s, DEFAULT_SYSTEM)
    }
}

/// A node address plus the uid of one start of that node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UniqueAddress {
    /// The network address.
    pub address: NodeAddress,
    /// Random per start; a restart at the same address gets a new uid.
    pub uid: u64,
}

impl UniqueAddress {
    /// A unique address with a fresh random uid.
    pub fn new_random(address: NodeAddress) -> Self {
        Self {
            address,
            uid: rand::random::<u64>() | 1,
        }
    }
}

impl fmt::Display for UniqueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address, self.uid)
    }
}

/// An address that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid node address {text:?}: {reason}")]
pub struct AddressError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl AddressError {
    fn new(text: &str, reason: &'static str) -> Self {
        Self {
            text: text.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let a: NodeAddress = "akka.tcp://AkkaTrader@lighthouse-0.lighthouse:4053"
            .parse()
            .unwrap();
        assert_eq!(
            a,
            NodeAddress::new("AkkaTrader", "lighthouse-0.lighthouse", 4053)
        );
        let b: NodeAddress = "Sys@10.0.0.1:1".parse().unwrap();
        assert_eq!(b, NodeAddress::new("Sys", "10.0.0.1", 1));
        let c: NodeAddress = "127.0.0.1:4053".parse().unwrap();
        assert_eq!(c.system, DEFAULT_SYSTEM);
        let d: NodeAddress = "akka://X@[::1]:7/".parse().unwrap();
        assert_eq!(d.host, "::1");
        assert_eq!(d.socket_addr_string(), "[::1]:7");
    }

    #[test]
    fn display_round_trips() {
        let a = NodeAddress::new("AkkaTrader", "127.0.0.1", 4053);
        assert_eq!(a.to_string(), "akka.tcp://AkkaTrader@127.0.0.1:4053");
        assert_eq!(a.to_string().parse::<NodeAddress>().unwrap(), a);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "host",
            "h:99999",
            "http://a@b:1",
            "@h:1",
            ":1",
            "a b@h:1",
        ] {
            assert!(bad.parse::<NodeAddress>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn orders_by_host_then_port() {
        let a = NodeAddress::new("S", "a", 9);
        let b = NodeAddress::new("S", "b", 1);
        let c = NodeAddress::new("S", "b", 2);
        assert!(a < b && b < c);
    }
}
