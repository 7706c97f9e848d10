//! The application version a node runs (Akka's `akka.cluster.app-version`): carried by
//! the node's `Join`, gossiped with its member entry, shown by `/cluster/members` and
//! `tradectl cluster show`. During a rolling update the cluster holds members of two
//! versions, and sharding uses the order defined here to place shards on the newest.
//!
//! Versions compare as Akka's `akka.util.Version` does: split on `.` and `-`, numeric
//! parts numerically (`1.10` > `1.9`), other parts as text, and a release is newer than
//! its pre-releases (`1.2.0` > `1.2.0-rc1`). The default is the crate version of the
//! binary's workspace.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An application version, e.g. `0.1.0`, `1.4.2-rc1` or `2026.12.04`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppVersion(String);

impl AppVersion {
    /// The version these binaries were built as (the workspace's crate version).
    pub fn built() -> Self {
        AppVersion(env!("CARGO_PKG_VERSION").to_string())
    }

    /// A version from its text; refused when empty or holding whitespace.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err("a version such as 1.2.3 or 1.2.3-rc1".into());
        }
        Ok(AppVersion(s.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (Vec<&str>, Option<&str>) {
        match self.0.split_once('-') {
            Some((release, pre)) => (release.split('.').collect(), Some(pre)),
            None => (self.0.split('.').collect(), None),
        }
    }
}

impl Default for AppVersion {
    fn default() -> Self {
        AppVersion::built()
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        // a number sorts before text, as in semantic versioning's pre-release rules
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn compare_parts<'a>(
    a: impl IntoIterator<Item = &'a str>,
    b: impl IntoIterator<Item = &'a str>,
) -> Ordering {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.into_iter().collect(), b.into_iter().collect());
    for i in 0..a.len().max(b.len()) {
        // a missing part counts as 0: 1.2 == 1.2.0
        let ord = compare_part(
            a.get(i).copied().unwrap_or("0"),
            b.get(i).copied().unwrap_or("0"),
        );
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl Ord for AppVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let (ra, pa) = self.parts();
        let (rb, pb) = other.parts();
        compare_parts(ra, rb)
            .then_with(|| match (pa, pb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => compare_parts(x.split(['.', '-']), y.split(['.', '-'])),
            })
            // equal by these rules but written differently (1.2 and 1.2.0): still a total order
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for AppVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AppVersion {
        AppVersion::parse(s).unwrap()
    }

    #[test]
    fn orders_like_akka_versions() {
        let sorted = [
            "0.9",
            "0.10.0-rc1",
            "0.10.0-rc2",
            "0.10.0",
            "0.10.1",
            "1.0.0-M1",
            "1.0.0",
            "1.2",
            "1.10",
            "2026.12.4",
        ];
        for w in sorted.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.2").cmp(&v("1.2")), Ordering::Equal);
        assert!(AppVersion::parse("").is_err());
        assert!(AppVersion::parse("1 2").is_err());
        assert_eq!(AppVersion::built().as_str(), env!("CARGO_PKG_VERSION"));
    }
}
