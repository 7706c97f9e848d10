//! Kubernetes-API discovery: the contact points are the pods that match a label selector
//! in one namespace, listed from the API server itself, as Akka's kubernetes-api discovery
//! does.
//!
//! The pod's own credentials, read the standard way (as client-go and Akka do):
//! - the API server at `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`;
//! - in the service-account folder (`/var/run/secrets/kubernetes.io/serviceaccount/` unless
//!   configured): `ca.crt`, the only CA trusted for the API server (re-read when it
//!   rotates); `token`, sent as the bearer token and re-read before it ages a minute, since
//!   projected tokens expire and the kubelet rewrites the file; `namespace`, the pods'
//!   namespace unless one is configured.
//!
//! Plain HTTP is not accepted: the API is reached over TLS with the service account, so the
//! pod needs no `kubectl proxy` sidecar. The Role this needs is `get`/`list`/`watch` on pods.
//!
//! A pod is a contact point when it is not being deleted (`deletionTimestamp`), is in phase
//! `Running`, has an IP, and none of its containers is waiting (starting or crash-looping).
//! Its address is the pod IP, or `<pod>.<service>` when a service is configured (the stable
//! DNS name a StatefulSet's headless service gives), and its port the container port with
//! the configured name, else this node's cluster port.
//!
//! The client is `kube-client` over rustls with typed pods from `k8s-openapi`; it is built
//! on the first lookup, inside the runtime, and then reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube_client::api::{Api, ListParams};
use kube_client::{Client, Config};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::OnceCell;

use super::DiscoveryError;
use crate::address::NodeAddress;

/// Where Kubernetes mounts a pod's service-account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Settings of Kubernetes-API discovery.
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    /// API server, `https://host:port` (in a pod: from `KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_url: String,
    /// Folder with `ca.crt`, `token` and `namespace`.
    pub service_account_dir: PathBuf,
    /// Namespace of the pods; `None` reads the service account's `namespace` file.
    pub namespace: Option<String>,
    /// Label selector, e.g. `app=lighthouse`.
    pub label_selector: String,
    /// Name of the container port that carries the cluster port; when absent or not
    /// found on a pod, `default_port`.
    pub port_name: Option<String>,
    /// Cluster port used when no named port matches.
    pub default_port: u16,
    /// When set, contact points are `<pod-name>.<service>` instead of the pod IP.
    pub pod_service: Option<String>,
    /// Actor-system name.
    pub system: String,
    /// Contact points needed before the lowest may form the cluster.
    pub required_contact_points: usize,
}

/// Kubernetes-API discovery (see the module docs).
#[derive(Clone)]
pub struct KubernetesDiscovery {
    settings: KubernetesSettings,
    namespace: String,
    api: Arc<OnceCell<Api<Pod>>>,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("settings", &self.settings)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DiscoveryError> {
    std::fs::read(path)
        .map_err(|e| DiscoveryError::Api(format!("cannot read {}: {e}", path.display())))
}

fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, DiscoveryError> {
    let pem = read(path)?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            DiscoveryError::Api(format!("{} is not a PEM CA bundle: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(DiscoveryError::Api(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The error and every cause under it, on one line: kube's own message for a TLS or
/// connection failure is only "client error (Connect)"; the reason is further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

impl KubernetesDiscovery {
    /// Checks the settings and reads what must be there before the first lookup: an
    /// `https://` API URL, a CA bundle, a token file and the namespace.
    pub fn new(settings: KubernetesSettings) -> Result<Self, DiscoveryError> {
        let url: http::Uri = settings
            .api_url
            .parse()
            .map_err(|e| DiscoveryError::Api(format!("bad API url {:?}: {e}", settings.api_url)))?;
        if url.scheme_str() != Some("https") {
            return Err(DiscoveryError::Api(format!(
                "the API server must be reached over https, not {:?} (the pod's service account authenticates over TLS; no kubectl proxy is needed)",
                settings.api_url
            )));
        }
        let dir = &settings.service_account_dir;
        ca_certificates(&dir.join("ca.crt"))?;
        read(&dir.join("token"))?;
        let namespace = match &settings.namespace {
            Some(ns) => ns.clone(),
            None => String::from_utf8_lossy(&read(&dir.join("namespace"))?)
                .trim()
                .to_string(),
        };
        if namespace.is_empty() {
            return Err(DiscoveryError::Api(format!(
                "no namespace: {}/namespace is empty",
                dir.display()
            )));
        }
        Ok(KubernetesDiscovery {
            settings,
            namespace,
            api: Arc::new(OnceCell::new()),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &KubernetesSettings {
        &self.settings
    }

    /// The namespace whose pods are listed.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn api(&self) -> Result<&Api<Pod>, DiscoveryError> {
        self.api
            .get_or_try_init(|| async {
                let dir = &self.settings.service_account_dir;
                let url = self
                    .settings
                    .api_url
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| DiscoveryError::Api(e.to_string()))?;
                let mut config = Config::new(url);
                config.default_namespace = self.namespace.clone();
                config.root_cert = Some(ca_certificates(&dir.join("ca.crt"))?);
                config.root_cert_file = Some(dir.join("ca.crt"));
                config.auth_info.token_file =
                    Some(dir.join("token").to_string_lossy().into_owned());
                config.connect_timeout = Some(Duration::from_secs(3));
                config.read_timeout = Some(Duration::from_secs(5));
                let client = Client::try_from(config).map_err(|e| {
                    DiscoveryError::Api(format!("kubernetes client: {}", chain(&e)))
                })?;
                Ok(Api::namespaced(client, &self.namespace))
            })
            .await
    }

    /// Lists the matching pods and returns their contact points, sorted.
    pub async fn lookup(&self) -> Result<Vec<NodeAddress>, DiscoveryError> {
        let api = self.api().await?;
        let params = ListParams::default().labels(&self.settings.label_selector);
        let pods = api.list(&params).await.map_err(|e| {
            let detail = chain(&e);
            let hint = if detail.contains("certificate") || detail.contains("UnknownIssuer") {
                format!(
                    " (the API server's certificate is not signed by a CA in {})",
                    self.settings.service_account_dir.join("ca.crt").display()
                )
            } else if detail.contains("401") || detail.contains("Unauthorized") {
                format!(
                    " (the token in {} was refused)",
                    self.settings.service_account_dir.join("token").display()
                )
            } else {
                String::new()
            };
            DiscoveryError::Api(format!(
                "listing pods {:?} in namespace {} at {}: {detail}{hint}",
                self.settings.label_selector, self.namespace, self.settings.api_url
            ))
        })?;
        Ok(self.contact_points(&pods.items))
    }

    /// The contact points among `pods` (see the module docs), sorted and without duplicates.
    pub fn contact_points(&self, pods: &[Pod]) -> Vec<NodeAddress> {
        let mut out: Vec<NodeAddress> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let status = p.status.as_ref()?;
                if status.phase.as_deref() != Some("Running") {
                    return None;
                }
                let waiting = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()));
                if waiting {
                    return None;
                }
                // without an IP the pod is not reachable yet, by its IP or its DNS name
                let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
                let host = match &self.settings.pod_service {
                    Some(service) => format!("{}.{service}", p.metadata.name.as_deref()?),
                    None => ip,
                };
                let port = self
                    .settings
                    .port_name
                    .as_ref()
                    .and_then(|name| {
                        p.spec
                            .iter()
                            .flat_map(|s| &s.containers)
                            .flat_map(|c| c.ports.iter().flatten())
                            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                            .and_then(|cp| u16::try_from(cp.container_port).ok())
                    })
                    .unwrap_or(self.settings.default_port);
                Some(NodeAddress::new(self.settings.system.clone(), host, port))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Contact points needed before the lowest may form the cluster.
    pub fn required_contact_points(&self) -> usize {
        self.settings.required_contact_points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> KubernetesSettings {
        KubernetesSettings {
            api_url: "https://10.96.0.1:443".into(),
            service_account_dir: dir.to_path_buf(),
            namespace: Some("ns".into()),
            label_selector: "app=lighthouse".into(),
            port_name: Some("cluster".into()),
            default_port: 4053,
            pod_service: None,
            system: "S".into(),
            required_contact_points: 2,
        }
    }

    fn with_credentials() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), TEST_CA).unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        std::fs::write(dir.path().join("namespace"), "from-file\n").unwrap();
        dir
    }

    // Any well-formed certificate serves for the settings checks (no connection is made).
    const TEST_CA: &str = include_str!("../../tests/tls/ca.pem");

    #[test]
    fn pods_that_are_not_contact_points_are_left_out() {
        let dir = with_credentials();
        let k = KubernetesDiscovery::new(settings(dir.path())).unwrap();
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[
          {"metadata":{"name":"lighthouse-1"},"spec":{"containers":[{"name":"n","ports":[{"name":"cluster","containerPort":5000}]}]},
           "status":{"phase":"Running","podIP":"10.0.0.2","containerStatuses":[{"name":"n","image":"i","imageID":"","ready":true,"restartCount":0,"state":{"running":{}}}]}},
          {"metadata":{"name":"lighthouse-0"},"spec":{"containers":[{"name":"n","ports":[{"containerPort":80}]}]},
           "status":{"phase":"Running","podIP":"10.0.0.1"}},
          {"metadata":{"name":"terminating","deletionTimestamp":"2024-01-01T00:00:00Z"},"spec":{"containers":[]},
           "status":{"phase":"Running","podIP":"10.0.0.3"}},
          {"metadata":{"name":"crashlooping"},"spec":{"containers":[]},
           "status":{"phase":"Running","podIP":"10.0.0.4","containerStatuses":[{"name":"n","image":"i","imageID":"","ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}},
          {"metadata":{"name":"pending"},"spec":{"containers":[]},"status":{"phase":"Pending"}},
          {"metadata":{"name":"no-ip"},"spec":{"containers":[]},"status":{"phase":"Running"}}]}"#;
        let list: k8s_openapi::List<Pod> = serde_json::from_str(body).unwrap();
        assert_eq!(
            k.contact_points(&list.items),
            vec![
                NodeAddress::new("S", "10.0.0.1", 4053),
                NodeAddress::new("S", "10.0.0.2", 5000)
            ]
        );
        let mut by_name = settings(dir.path());
        by_name.pod_service = Some("lighthouse".into());
        let k = KubernetesDiscovery::new(by_name).unwrap();
        assert_eq!(
            k.contact_points(&list.items),
            vec![
                NodeAddress::new("S", "lighthouse-0.lighthouse", 4053),
                NodeAddress::new("S", "lighthouse-1.lighthouse", 5000)
            ]
        );
    }

    #[test]
    fn settings_are_checked_before_the_first_lookup() {
        let dir = with_credentials();
        let mut s = settings(dir.path());
        s.namespace = None;
        assert_eq!(
            KubernetesDiscovery::new(s.clone()).unwrap().namespace(),
            "from-file"
        );

        let mut plain = s.clone();
        plain.api_url = "http://127.0.0.1:8001".into();
        let e = KubernetesDiscovery::new(plain).unwrap_err().to_string();
        assert!(e.contains("https"), "{e}");

        std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        let e = KubernetesDiscovery::new(s.clone()).unwrap_err().to_string();
        assert!(e.contains("ca.crt holds no certificate"), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let e = KubernetesDiscovery::new(settings(empty.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("ca.crt"), "{e}");
    }
}
