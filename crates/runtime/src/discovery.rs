//! Discovery of whom to join: a static seed list (`CLUSTER_SEEDS`), the A records of a
//! headless DNS service, or the Kubernetes API (pods by label selector in the pod's
//! namespace, with the service-account token).
//!
//! The rule that keeps one cluster:
//! - static seeds: only the first seed may form a cluster by itself, and only after
//!   none of the other seeds answered within the seed-node timeout; every other node
//!   only joins a node that is already a member;
//! - DNS and Kubernetes: the node waits until at least `required_contact_points` are
//!   discovered and the set is the same on two consecutive lookups; then the lowest
//!   address of that set, and only it, may form the cluster (after probing that no
//!   contact point is a member already); the others join whoever is a member.

use std::time::Duration;

use serde::Deserialize;

use crate::address::NodeAddress;
use crate::http_client::{self, percent_encode};

/// Where contact points come from.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// A fixed list; the first entry is the seed that may form the cluster.
    Static(Vec<NodeAddress>),
    /// A headless service: every A/AAAA record of `name` is a contact point at `port`.
    Dns {
        /// DNS name, e.g. `lighthouse.akka-cqrs.svc.cluster.local`.
        name: String,
        /// Cluster port of the contact points.
        port: u16,
        /// Actor-system name.
        system: String,
        /// Contact points needed before the lowest may form the cluster.
        required_contact_points: usize,
    },
    /// The Kubernetes pods API.
    Kubernetes(KubernetesDiscovery),
}

/// Settings of Kubernetes-API discovery.
#[derive(Clone, Debug)]
pub struct KubernetesDiscovery {
    /// API base URL, e.g. `http://127.0.0.1:8001` (a `kubectl proxy` sidecar).
    pub api_url: String,
    /// Namespace of the pods (the pod's own, from the service-account files or `POD_NAMESPACE`).
    pub namespace: String,
    /// Label selector, e.g. `app=lighthouse` or `cluster=akka-trader`.
    pub label_selector: String,
    /// Bearer token (the service-account token), if any.
    pub token: Option<String>,
    /// Name of the container port to use; when absent or not found, `default_port`.
    pub port_name: Option<String>,
    /// Cluster port used when no named port matches.
    pub default_port: u16,
    /// Actor-system name.
    pub system: String,
    /// Contact points needed before the lowest may form the cluster.
    pub required_contact_points: usize,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// DNS failure.
    #[error("dns lookup of {0} failed: {1}")]
    Dns(String, std::io::Error),
    /// API failure.
    #[error("kubernetes api: {0}")]
    Api(String),
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    ports: Vec<ContainerPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    #[serde(default)]
    name: Option<String>,
    container_port: u16,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
}

impl KubernetesDiscovery {
    /// Lists the running pods that match and returns their cluster addresses.
    pub async fn lookup(&self) -> Result<Vec<NodeAddress>, DiscoveryError> {
        let url = format!(
            "{}/api/v1/namespaces/{}/pods?labelSelector={}",
            self.api_url.trim_end_matches('/'),
            self.namespace,
            percent_encode(&self.label_selector)
        );
        let (status, body) = http_client::request(
            "GET",
            &url,
            self.token.as_deref(),
            None,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| DiscoveryError::Api(e.to_string()))?;
        if status != 200 {
            return Err(DiscoveryError::Api(format!(
                "GET {url} answered {status}: {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        self.addresses(&body)
    }

    /// Contact points in a pods-list answer: running pods with an IP that are not
    /// being deleted, at the named container port (or the default port), sorted.
    pub fn addresses(&self, body: &str) -> Result<Vec<NodeAddress>, DiscoveryError> {
        let list: PodList = serde_json::from_str(body)
            .map_err(|e| DiscoveryError::Api(format!("unexpected pod list: {e}")))?;
        let mut out: Vec<NodeAddress> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.phase.as_deref() == Some("Running"))
            .filter_map(|p| {
                let ip = p.status.pod_ip?;
                let port = self
                    .port_name
                    .as_ref()
                    .and_then(|n| {
                        p.spec
                            .containers
                            .iter()
                            .flat_map(|c| &c.ports)
                            .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                            .map(|cp| cp.container_port)
                    })
                    .unwrap_or(self.default_port);
                Some(NodeAddress::new(self.system.clone(), ip, port))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl Discovery {
    /// The current contact points (static: as configured; otherwise sorted).
    pub async fn contact_points(&self) -> Result<Vec<NodeAddress>, DiscoveryError> {
        match self {
            Discovery::Static(v) => Ok(v.clone()),
            Discovery::Dns {
                name, port, system, ..
            } => {
                let addrs = tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .map_err(|e| DiscoveryError::Dns(name.clone(), e))?;
                let mut v: Vec<NodeAddress> = addrs
                    .map(|a| NodeAddress::new(system.clone(), a.ip().to_string(), a.port()))
                    .collect();
                v.sort();
                v.dedup();
                Ok(v)
            }
            Discovery::Kubernetes(k) => k.lookup().await,
        }
    }

    /// Whether `me` may form a new cluster given these contact points (see module docs;
    /// for DNS and Kubernetes `stable` says the set did not change since the last lookup).
    pub fn may_form(&self, points: &[NodeAddress], me: &NodeAddress, stable: bool) -> bool {
        match self {
            Discovery::Static(_) => points.first() == Some(me),
            Discovery::Dns {
                required_contact_points,
                ..
            }
            | Discovery::Kubernetes(KubernetesDiscovery {
                required_contact_points,
                ..
            }) => {
                stable
                    && points.len() >= *required_contact_points
                    && points.iter().min() == Some(me)
            }
        }
    }

    /// True for the static seed list (where the first seed waits for the seed-node
    /// timeout before forming the cluster alone).
    pub fn is_static(&self) -> bool {
        matches!(self, Discovery::Static(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_only_first_seed_forms() {
        let a = NodeAddress::new("S", "a", 1);
        let b = NodeAddress::new("S", "b", 1);
        let d = Discovery::Static(vec![b.clone(), a.clone()]);
        assert!(d.may_form(&[b.clone(), a.clone()], &b, false));
        assert!(!d.may_form(&[b.clone(), a.clone()], &a, true));
    }

    #[test]
    fn dynamic_lowest_forms_only_with_enough_stable_points() {
        let d = Discovery::Dns {
            name: "x".into(),
            port: 1,
            system: "S".into(),
            required_contact_points: 2,
        };
        let a = NodeAddress::new("S", "a", 1);
        let b = NodeAddress::new("S", "b", 1);
        assert!(!d.may_form(std::slice::from_ref(&a), &a, true));
        assert!(!d.may_form(&[a.clone(), b.clone()], &a, false));
        assert!(d.may_form(&[a.clone(), b.clone()], &a, true));
        assert!(!d.may_form(&[a.clone(), b.clone()], &b, true));
    }

    #[tokio::test]
    async fn dns_resolves_localhost() {
        let d = Discovery::Dns {
            name: "localhost".into(),
            port: 4053,
            system: "S".into(),
            required_contact_points: 1,
        };
        let v = d.contact_points().await.unwrap();
        assert!(v.iter().any(|a| a.port == 4053));
    }

    #[test]
    fn pod_list_in_the_api_shape() {
        let k = KubernetesDiscovery {
            api_url: "http://x".into(),
            namespace: "ns".into(),
            label_selector: "app=lighthouse".into(),
            token: None,
            port_name: Some("remoting".into()),
            default_port: 4053,
            system: "S".into(),
            required_contact_points: 2,
        };
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[
          {"metadata":{"name":"b"},"spec":{"containers":[{"ports":[{"name":"remoting","containerPort":5000}]}]},
           "status":{"phase":"Running","podIP":"10.0.0.2"}},
          {"metadata":{"name":"a"},"spec":{"containers":[{"ports":[{"containerPort":80}]}]},
           "status":{"phase":"Running","podIP":"10.0.0.1"}},
          {"metadata":{"name":"c","deletionTimestamp":"2024-01-01T00:00:00Z"},"spec":{"containers":[]},
           "status":{"phase":"Running","podIP":"10.0.0.3"}},
          {"metadata":{"name":"d"},"spec":{"containers":[]},"status":{"phase":"Pending"}}]}"#;
        let got = k.addresses(body).unwrap();
        assert_eq!(
            got,
            vec![
                NodeAddress::new("S", "10.0.0.1", 4053),
                NodeAddress::new("S", "10.0.0.2", 5000)
            ]
        );
        assert!(k.addresses("{\"items\": 3}").is_err());
    }

    #[test]
    fn selector_is_encoded() {
        assert_eq!(
            percent_encode("app=lighthouse,tier in (a)"),
            "app%3Dlighthouse%2Ctier%20in%20%28a%29"
        );
    }
}
