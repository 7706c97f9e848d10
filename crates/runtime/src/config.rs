//! Node configuration from command-line flags and the workshop's environment variables
//! (a flag wins over its variable). Every value is checked at start; a wrong one is
//! refused with a message that names the variable and the flag.
//!
//! Every variable, its flag and its default are listed once, in the configuration table of
//! `docs/architecture.md`; `tests/config_table.rs` checks that table against [`NodeArgs`] and
//! the defaults [`NodeArgs::resolve`] applies.
//!
//! Durations are written like `500ms`, `2s`, `1m` (a bare number is seconds).
//!
//! `CLUSTER_IP` also takes the placeholders of Akka.NET's Lighthouse and Akka.Bootstrap.Docker,
//! for replicas that all get the same environment (`docker compose --scale traders=4`):
//! [`HOST_ADDRESS_PLACEHOLDER`] (`<getHostAddress>`) becomes the first non-loopback IPv4
//! address this host's name resolves to (in a container, its address on the compose network),
//! [`HOST_NAME_PLACEHOLDER`] (`<getHostName>`) the host name itself (in a container the short
//! container id unless `hostname:` is set; the other nodes must be able to resolve it). Either
//! is resolved once, at start; any other `<...>` value is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::address::{DEFAULT_SYSTEM, NodeAddress};
use crate::app_version::AppVersion;
use crate::cluster::ClusterConfig;
use crate::discovery::kubernetes::SERVICE_ACCOUNT_DIR;
use crate::discovery::{Discovery, KubernetesDiscovery, KubernetesSettings};
use crate::failure_detector::FailureDetectorConfig;
use crate::handshake::DEFAULT_COOKIE;
use crate::management::ManagementConfig;
use crate::membership::MinMembers;
use crate::remote::RemotingConfig;
use crate::sbr::SbrConfig;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Transport settings.
    pub remoting: RemotingConfig,
    /// Membership settings.
    pub cluster: ClusterConfig,
    /// Management HTTP; `None` disables it.
    pub management: Option<ManagementConfig>,
    /// Pod name, for logs.
    pub pod_name: Option<String>,
    /// Time each coordinated-shutdown phase may take.
    pub shutdown_phase_timeout: Duration,
    /// The meter provider whose instruments `/metrics` renders (a process's
    /// `telemetry::init(..).metrics()`, or one per node when a process runs several);
    /// `None` gives the node a provider of its own without OTLP push.
    pub metrics: Option<telemetry::Metrics>,
}

impl NodeConfig {
    /// A configuration for tests and embedding: loopback, OS-chosen ports, fast timings
    /// (gossip and heartbeat every `tick`), joining through `seeds`.
    pub fn local(seeds: Vec<NodeAddress>, roles: &[&str], tick: Duration) -> Self {
        let mut cluster = ClusterConfig::fast(tick);
        cluster.discovery = Discovery::Static(seeds);
        cluster.roles = roles.iter().map(|r| r.to_string()).collect();
        Self {
            remoting: RemotingConfig::default(),
            cluster,
            management: Some(ManagementConfig {
                host: "127.0.0.1".into(),
                port: 0,
                token: None,
                routes: None,
                readiness: Vec::new(),
            }),
            pod_name: None,
            shutdown_phase_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }
}

/// A refused configuration value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {variable} ({flag}) value {value:?}: {reason}")]
pub struct ConfigError {
    /// Environment variable.
    pub variable: &'static str,
    /// Command-line flag.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses `500ms`, `2s`, `1m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| "expected a duration like 500ms, 2s or 1m".to_string())?;
    if !n.is_finite() || n < 0.0 {
        return Err("duration must be positive".into());
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| "duration too long".to_string())
}

/// Command-line flags (each also read from its environment variable) shared by every
/// service binary; flatten it into the binary's own clap parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// Actor-system name.
    #[arg(long, env = "ACTORSYSTEM")]
    pub system: Option<String>,
    /// Host name or IP other nodes use to reach this node; `<getHostAddress>` for this
    /// host's first non-loopback IPv4 address, `<getHostName>` for its host name.
    #[arg(long, env = "CLUSTER_IP")]
    pub host: Option<String>,
    /// Interface to bind the cluster port on.
    #[arg(long, env = "CLUSTER_BIND_HOST")]
    pub bind_host: Option<String>,
    /// Cluster port (0 = any free port).
    #[arg(long, env = "CLUSTER_PORT")]
    pub port: Option<String>,
    /// Seed nodes, comma separated (`host:port` or `akka.tcp://System@host:port`).
    #[arg(long, env = "CLUSTER_SEEDS")]
    pub seeds: Option<String>,
    /// Roles, comma separated.
    #[arg(long, env = "CLUSTER_ROLES")]
    pub roles: Option<String>,
    /// Shared cluster secret.
    #[arg(long, env = "CLUSTER_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// Node certificate chain (PEM) for mutual TLS.
    #[arg(long, env = "CLUSTER_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// Node private key (PEM) for mutual TLS.
    #[arg(long, env = "CLUSTER_TLS_KEY")]
    pub tls_key: Option<String>,
    /// CA certificate (PEM) that signs every node certificate.
    #[arg(long, env = "CLUSTER_TLS_CA")]
    pub tls_ca: Option<String>,
    /// How to find contact points: seeds, dns or kubernetes.
    #[arg(long, env = "CLUSTER_DISCOVERY")]
    pub discovery: Option<String>,
    /// Headless service name for DNS discovery.
    #[arg(long, env = "CLUSTER_DISCOVERY_SERVICE")]
    pub discovery_service: Option<String>,
    /// Kubernetes API server host (set by Kubernetes in every pod).
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    pub kubernetes_service_host: Option<String>,
    /// Kubernetes API server port (https).
    #[arg(long, env = "KUBERNETES_SERVICE_PORT")]
    pub kubernetes_service_port: Option<String>,
    /// Folder with the service account's `ca.crt`, `token` and `namespace`.
    #[arg(long, env = "KUBERNETES_SERVICE_ACCOUNT_DIR")]
    pub service_account_dir: Option<String>,
    /// Contact points as `<pod>.<service>` (this headless service) instead of the pod IP.
    #[arg(long, env = "CLUSTER_DISCOVERY_POD_SERVICE")]
    pub pod_service: Option<String>,
    /// Pod label selector for Kubernetes discovery.
    #[arg(long, env = "CLUSTER_DISCOVERY_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Namespace of the pods.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Container port name that carries the cluster port.
    #[arg(long, env = "CLUSTER_DISCOVERY_PORT_NAME")]
    pub port_name: Option<String>,
    /// Contact points needed before the lowest one forms the cluster.
    #[arg(long, env = "REQUIRED_CONTACT_POINT_NR")]
    pub required_contact_points: Option<String>,
    /// Members needed before the leader moves any Up.
    #[arg(long, env = "CLUSTER_MIN_NR_OF_MEMBERS")]
    pub min_nr_of_members: Option<String>,
    /// Per-role minimums, `role=n,role=n`.
    #[arg(long, env = "CLUSTER_ROLE_MIN_NR_OF_MEMBERS")]
    pub role_min_nr_of_members: Option<String>,
    /// Split-brain resolver strategy (or `off`).
    #[arg(long, env = "CLUSTER_SBR_STRATEGY")]
    pub sbr_strategy: Option<String>,
    /// Time the unreachable set must be stable before the resolver acts.
    #[arg(long, env = "CLUSTER_SBR_STABLE_AFTER")]
    pub sbr_stable_after: Option<String>,
    /// Heartbeat interval.
    #[arg(long, env = "CLUSTER_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// Acceptable heartbeat pause.
    #[arg(long, env = "CLUSTER_ACCEPTABLE_HEARTBEAT_PAUSE")]
    pub acceptable_heartbeat_pause: Option<String>,
    /// Phi threshold of the failure detector.
    #[arg(long, env = "CLUSTER_PHI_THRESHOLD")]
    pub phi_threshold: Option<String>,
    /// Gossip interval.
    #[arg(long, env = "CLUSTER_GOSSIP_INTERVAL")]
    pub gossip_interval: Option<String>,
    /// Time the first seed waits for the others before forming the cluster alone.
    #[arg(long, env = "CLUSTER_SEED_NODE_TIMEOUT")]
    pub seed_node_timeout: Option<String>,
    /// Exit non-zero when not joined after this long (`off` to retry forever).
    #[arg(long, env = "CLUSTER_JOIN_TIMEOUT")]
    pub join_timeout: Option<String>,
    /// How long an Exiting node waits for its removal.
    #[arg(long, env = "CLUSTER_EXITING_TIMEOUT")]
    pub exiting_timeout: Option<String>,
    /// Management HTTP bind address.
    #[arg(long, env = "MANAGEMENT_HOST")]
    pub management_host: Option<String>,
    /// Management HTTP port (`0` = any free port, `off` = disabled).
    #[arg(long, env = "MANAGEMENT_PORT")]
    pub management_port: Option<String>,
    /// Bearer token required by mutating management routes.
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub management_token: Option<String>,
    /// Pod name (logged with this node's address).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The application version this node runs (rolling updates place shards on the newest).
    #[arg(long, env = "APP_VERSION")]
    pub app_version: Option<String>,
}

/// Defaults a service binary chooses for itself.
#[derive(Debug, Clone, Default)]
pub struct ServiceDefaults {
    /// Cluster port when none is configured.
    pub port: u16,
    /// Roles when none are configured.
    pub roles: Vec<String>,
    /// When no seeds are configured, join this node itself (the lighthouse does).
    pub self_seed: bool,
}

fn err(
    variable: &'static str,
    flag: &'static str,
    value: &str,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        variable,
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `CLUSTER_IP` placeholder for this host's first non-loopback IPv4 address.
pub const HOST_ADDRESS_PLACEHOLDER: &str = "<getHostAddress>";
/// `CLUSTER_IP` placeholder for this host's name.
pub const HOST_NAME_PLACEHOLDER: &str = "<getHostName>";

/// `value` itself, or what a placeholder stands for on this host; an unknown `<...>` or a
/// placeholder that cannot be resolved is an error (the reason).
fn resolve_host_placeholder(value: &str) -> Result<String, String> {
    match value {
        HOST_ADDRESS_PLACEHOLDER => host_address().map(|ip| ip.to_string()),
        HOST_NAME_PLACEHOLDER => host_name(),
        v if v.starts_with('<') || v.ends_with('>') => Err(format!(
            "unknown placeholder (use a host name, an IP address, \
             {HOST_ADDRESS_PLACEHOLDER} or {HOST_NAME_PLACEHOLDER})"
        )),
        v => Ok(v.to_string()),
    }
}

/// This host's name (`<getHostName>`).
fn host_name() -> Result<String, String> {
    let name = gethostname::gethostname()
        .into_string()
        .map_err(|n| format!("{HOST_NAME_PLACEHOLDER}: this host's name {n:?} is not UTF-8"))?;
    if name.is_empty() {
        return Err(format!("{HOST_NAME_PLACEHOLDER}: this host has no name"));
    }
    Ok(name)
}

/// The first non-loopback IPv4 address this host's name resolves to (`<getHostAddress>`).
fn host_address() -> Result<Ipv4Addr, String> {
    let name =
        host_name().map_err(|e| e.replace(HOST_NAME_PLACEHOLDER, HOST_ADDRESS_PLACEHOLDER))?;
    let resolved = (name.as_str(), 0).to_socket_addrs().map_err(|e| {
        format!("{HOST_ADDRESS_PLACEHOLDER}: cannot resolve this host's name {name:?}: {e}")
    })?;
    first_non_loopback_ipv4(resolved).ok_or_else(|| {
        format!(
            "{HOST_ADDRESS_PLACEHOLDER}: this host's name {name:?} resolves to no \
             non-loopback IPv4 address (set CLUSTER_IP to an address or a host name)"
        )
    })
}

/// The first IPv4 address that is neither loopback nor unspecified.
fn first_non_loopback_ipv4(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<Ipv4Addr> {
    addrs.into_iter().find_map(|a| match a.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    })
}

fn list(s: &str) -> Vec<String> {
    s.split([',', ';'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

macro_rules! dur {
    ($v:expr, $var:literal, $flag:literal) => {
        match $v.as_deref() {
            None => None,
            Some(s) => Some(parse_duration(s).map_err(|r| err($var, $flag, s, r))?),
        }
    };
}

impl NodeArgs {
    /// Checks every value and builds the node configuration.
    pub fn resolve(&self, defaults: &ServiceDefaults) -> Result<NodeConfig, ConfigError> {
        let system = self
            .system
            .clone()
            .unwrap_or_else(|| DEFAULT_SYSTEM.to_string());
        if system.is_empty()
            || !system
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                "ACTORSYSTEM",
                "--system",
                &system,
                "letters, digits, - and _ only",
            ));
        }
        let host = match self.host.as_deref() {
            None => "127.0.0.1".to_string(),
            Some(h) => resolve_host_placeholder(h)
                .map_err(|reason| err("CLUSTER_IP", "--host", h, reason))?,
        };
        if host.is_empty() || host.contains(['/', ' ', '@', '<', '>']) {
            return Err(err(
                "CLUSTER_IP",
                "--host",
                &host,
                "not a host name or IP address",
            ));
        }
        let bind_host = match &self.bind_host {
            Some(b) => {
                b.parse::<IpAddr>()
                    .map_err(|_| err("CLUSTER_BIND_HOST", "--bind-host", b, "not an IP address"))?;
                b.clone()
            }
            None if host.parse::<IpAddr>().is_ok() => host.clone(),
            None => "0.0.0.0".to_string(),
        };
        let port = match &self.port {
            None => defaults.port,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| err("CLUSTER_PORT", "--port", p, "not a port number (0-65535)"))?,
        };
        let roles: BTreeSet<String> = match &self.roles {
            Some(r) => list(r).into_iter().collect(),
            None => defaults.roles.iter().cloned().collect(),
        };
        let cookie = self
            .cookie
            .clone()
            .unwrap_or_else(|| DEFAULT_COOKIE.to_string());
        if cookie.len() < 8 {
            return Err(err(
                "CLUSTER_COOKIE",
                "--cookie",
                "<hidden>",
                "at least 8 characters",
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => None,
            (Some(c), Some(k), Some(ca)) => Some(
                crate::tls::TlsSettings::from_pem_files(c.as_ref(), k.as_ref(), ca.as_ref())
                    .map_err(|r| err("CLUSTER_TLS_CERT", "--tls-cert", c, r))?,
            ),
            (c, k, _) => {
                let (var, flag) = if c.is_none() {
                    ("CLUSTER_TLS_CERT", "--tls-cert")
                } else if k.is_none() {
                    ("CLUSTER_TLS_KEY", "--tls-key")
                } else {
                    ("CLUSTER_TLS_CA", "--tls-ca")
                };
                return Err(err(
                    var,
                    flag,
                    "",
                    "TLS needs CLUSTER_TLS_CERT, CLUSTER_TLS_KEY and CLUSTER_TLS_CA together",
                ));
            }
        };
        let seeds: Vec<NodeAddress> = match &self.seeds {
            Some(s) => list(s)
                .iter()
                .map(|x| NodeAddress::parse_with_default(x, &system))
                .collect::<Result<_, _>>()
                .map_err(|e| err("CLUSTER_SEEDS", "--seeds", s, e.to_string()))?,
            None => Vec::new(),
        };
        if let Some(bad) = seeds.iter().find(|s| s.system != system) {
            return Err(err(
                "CLUSTER_SEEDS",
                "--seeds",
                &bad.to_string(),
                format!(
                    "seed belongs to system {:?}, this node to {system:?}",
                    bad.system
                ),
            ));
        }
        let required = match &self.required_contact_points {
            None => 2,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    err(
                        "REQUIRED_CONTACT_POINT_NR",
                        "--required-contact-points",
                        v,
                        "a number >= 1",
                    )
                })?,
        };
        let kind = self
            .discovery
            .clone()
            .unwrap_or_else(|| "seeds".to_string());
        let discovery = match kind.as_str() {
            "seeds" | "static" | "config" => {
                if seeds.is_empty() {
                    if defaults.self_seed {
                        // filled in with the bound address at start
                        Discovery::Static(Vec::new())
                    } else {
                        return Err(err(
                            "CLUSTER_SEEDS",
                            "--seeds",
                            "",
                            "no seed nodes given (or set CLUSTER_DISCOVERY=dns|kubernetes)",
                        ));
                    }
                } else {
                    Discovery::Static(seeds)
                }
            }
            "dns" => {
                let name = self.discovery_service.clone().ok_or_else(|| {
                    err(
                        "CLUSTER_DISCOVERY_SERVICE",
                        "--discovery-service",
                        "",
                        "required for dns discovery",
                    )
                })?;
                if port == 0 {
                    return Err(err(
                        "CLUSTER_PORT",
                        "--port",
                        "0",
                        "dns discovery needs a fixed cluster port",
                    ));
                }
                Discovery::Dns {
                    name,
                    port,
                    system: system.clone(),
                    required_contact_points: required,
                }
            }
            "kubernetes" | "kubernetes-api" => {
                let host = self.kubernetes_service_host.clone().ok_or_else(|| {
                    err(
                        "KUBERNETES_SERVICE_HOST",
                        "--kubernetes-service-host",
                        "",
                        "required for kubernetes discovery (Kubernetes sets it in every pod)",
                    )
                })?;
                let api_port = match &self.kubernetes_service_port {
                    None => 443,
                    Some(v) => v.trim().parse::<u16>().map_err(|_| {
                        err(
                            "KUBERNETES_SERVICE_PORT",
                            "--kubernetes-service-port",
                            v,
                            "a port number",
                        )
                    })?,
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let label_selector = self.label_selector.clone().ok_or_else(|| {
                    err(
                        "CLUSTER_DISCOVERY_LABEL_SELECTOR",
                        "--label-selector",
                        "",
                        "required for kubernetes discovery",
                    )
                })?;
                if port == 0 && self.port_name.is_none() {
                    return Err(err(
                        "CLUSTER_PORT",
                        "--port",
                        "0",
                        "kubernetes discovery needs a fixed cluster port or a port name",
                    ));
                }
                let sa_dir = self
                    .service_account_dir
                    .clone()
                    .unwrap_or_else(|| SERVICE_ACCOUNT_DIR.to_string());
                let k = KubernetesDiscovery::new(KubernetesSettings {
                    api_url: format!("https://{host}:{api_port}"),
                    service_account_dir: sa_dir.clone().into(),
                    namespace: self.namespace.clone(),
                    label_selector,
                    port_name: self.port_name.clone(),
                    default_port: port,
                    pod_service: self.pod_service.clone(),
                    system: system.clone(),
                    required_contact_points: required,
                })
                .map_err(|e| {
                    err(
                        "KUBERNETES_SERVICE_ACCOUNT_DIR",
                        "--service-account-dir",
                        &sa_dir,
                        e.to_string(),
                    )
                })?;
                Discovery::Kubernetes(k)
            }
            other => {
                return Err(err(
                    "CLUSTER_DISCOVERY",
                    "--discovery",
                    other,
                    "one of seeds, dns, kubernetes",
                ));
            }
        };
        let min_total = match &self.min_nr_of_members {
            None => 1,
            Some(v) => v.trim().parse::<usize>().map_err(|_| {
                err(
                    "CLUSTER_MIN_NR_OF_MEMBERS",
                    "--min-nr-of-members",
                    v,
                    "a number",
                )
            })?,
        };
        let mut per_role = BTreeMap::new();
        if let Some(v) = &self.role_min_nr_of_members {
            for item in list(v) {
                let (r, n) = item
                    .split_once('=')
                    .and_then(|(r, n)| Some((r.trim(), n.trim().parse::<usize>().ok()?)))
                    .ok_or_else(|| {
                        err(
                            "CLUSTER_ROLE_MIN_NR_OF_MEMBERS",
                            "--role-min-nr-of-members",
                            v,
                            "expected role=n,role=n",
                        )
                    })?;
                per_role.insert(r.to_string(), n);
            }
        }
        let mut fd = FailureDetectorConfig::default();
        if let Some(d) = dur!(
            self.heartbeat_interval,
            "CLUSTER_HEARTBEAT_INTERVAL",
            "--heartbeat-interval"
        ) {
            if d.is_zero() {
                return Err(err(
                    "CLUSTER_HEARTBEAT_INTERVAL",
                    "--heartbeat-interval",
                    "0",
                    "must be > 0",
                ));
            }
            fd.heartbeat_interval = d;
        }
        if let Some(d) = dur!(
            self.acceptable_heartbeat_pause,
            "CLUSTER_ACCEPTABLE_HEARTBEAT_PAUSE",
            "--acceptable-heartbeat-pause"
        ) {
            fd.acceptable_pause = d;
        }
        if let Some(v) = &self.phi_threshold {
            fd.threshold = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| {
                    err(
                        "CLUSTER_PHI_THRESHOLD",
                        "--phi-threshold",
                        v,
                        "a positive number",
                    )
                })?;
        }
        let sbr = match self.sbr_strategy.as_deref() {
            Some("off") | Some("none") => None,
            other => {
                let strategy = match other {
                    None => crate::sbr::Strategy::KeepMajority,
                    Some(s) => s
                        .parse()
                        .map_err(|r: String| err("CLUSTER_SBR_STRATEGY", "--sbr-strategy", s, r))?,
                };
                Some(SbrConfig {
                    strategy,
                    stable_after: dur!(
                        self.sbr_stable_after,
                        "CLUSTER_SBR_STABLE_AFTER",
                        "--sbr-stable-after"
                    )
                    .unwrap_or(Duration::from_secs(20)),
                    role: None,
                })
            }
        };
        let base = ClusterConfig::default();
        let gossip_interval = dur!(
            self.gossip_interval,
            "CLUSTER_GOSSIP_INTERVAL",
            "--gossip-interval"
        )
        .unwrap_or(base.gossip_interval);
        if gossip_interval.is_zero() {
            return Err(err(
                "CLUSTER_GOSSIP_INTERVAL",
                "--gossip-interval",
                "0",
                "must be > 0",
            ));
        }
        let join_timeout = match self.join_timeout.as_deref() {
            Some("off") | Some("never") => None,
            None => base.shutdown_after_unsuccessful_join,
            Some(s) => Some(
                parse_duration(s)
                    .map_err(|r| err("CLUSTER_JOIN_TIMEOUT", "--join-timeout", s, r))?,
            ),
        };
        let app_version = match &self.app_version {
            None => base.app_version.clone(),
            Some(v) => {
                AppVersion::parse(v).map_err(|r| err("APP_VERSION", "--app-version", v, r))?
            }
        };
        let cluster = ClusterConfig {
            roles,
            app_version,
            discovery,
            min_members: MinMembers {
                total: min_total,
                per_role,
            },
            gossip_interval,
            join_retry_interval: gossip_interval.min(Duration::from_secs(1)),
            failure_detector: fd,
            sbr,
            seed_node_timeout: dur!(
                self.seed_node_timeout,
                "CLUSTER_SEED_NODE_TIMEOUT",
                "--seed-node-timeout"
            )
            .unwrap_or(base.seed_node_timeout),
            shutdown_after_unsuccessful_join: join_timeout,
            exiting_timeout: dur!(
                self.exiting_timeout,
                "CLUSTER_EXITING_TIMEOUT",
                "--exiting-timeout"
            )
            .unwrap_or(base.exiting_timeout),
        };
        let management = match self.management_port.as_deref() {
            Some("off") | Some("none") => None,
            p => {
                let port = match p {
                    None => 8558,
                    Some(v) => v.trim().parse::<u16>().map_err(|_| {
                        err(
                            "MANAGEMENT_PORT",
                            "--management-port",
                            v,
                            "a port number or off",
                        )
                    })?,
                };
                let host = self
                    .management_host
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".to_string());
                host.parse::<IpAddr>().map_err(|_| {
                    err(
                        "MANAGEMENT_HOST",
                        "--management-host",
                        &host,
                        "not an IP address",
                    )
                })?;
                Some(ManagementConfig {
                    host,
                    port,
                    token: self.management_token.clone().filter(|t| !t.is_empty()),
                    routes: None,
                    readiness: Vec::new(),
                })
            }
        };
        Ok(NodeConfig {
            remoting: RemotingConfig {
                system,
                bind_host,
                public_host: host,
                port,
                cookie,
                tls,
                ..RemotingConfig::default()
            },
            cluster,
            management,
            pod_name: self.pod_name.clone(),
            shutdown_phase_timeout: Duration::from_secs(10),
            metrics: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            port: 4053,
            roles: vec!["lighthouse".into()],
            self_seed: true,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
    }

    /// Found by the `config` fuzz target (fuzz/README.md): a number of seconds beyond what a
    /// `Duration` holds made `Duration::from_secs_f64` panic, so a service given such a flag
    /// or variable crashed at start instead of naming the bad value.
    #[test]
    fn a_duration_too_long_to_hold_is_an_error_not_a_panic() {
        let huge = "5051111111111111111111111111111111111111111111111111111111115";
        assert_eq!(parse_duration(huge), Err("duration too long".to_string()));
        assert!(parse_duration(&format!("{huge}h")).is_err());
        let a = NodeArgs {
            seeds: Some("127.0.0.1:4053".into()),
            heartbeat_interval: Some(huge.into()),
            ..NodeArgs::default()
        };
        let e = a.resolve(&ServiceDefaults::default()).unwrap_err();
        assert_eq!(e.variable, "CLUSTER_HEARTBEAT_INTERVAL");
        assert_eq!(e.reason, "duration too long");
    }

    #[test]
    fn defaults_and_workshop_seeds() {
        let a = NodeArgs {
            seeds: Some("akka.tcp://AkkaTrader@lighthouse-0.lighthouse:4053, 10.0.0.2:4053".into()),
            roles: Some("trader,trade-events".into()),
            ..NodeArgs::default()
        };
        let c = a.resolve(&defaults()).unwrap();
        assert_eq!(c.remoting.port, 4053);
        assert_eq!(c.cluster.roles.len(), 2);
        match &c.cluster.discovery {
            Discovery::Static(s) => {
                assert_eq!(s.len(), 2);
                assert_eq!(s[0].host, "lighthouse-0.lighthouse");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.management.unwrap().port, 8558);
    }

    #[test]
    fn cluster_ip_host_name_placeholder() {
        let a = NodeArgs {
            host: Some(HOST_NAME_PLACEHOLDER.into()),
            ..NodeArgs::default()
        };
        let c = a.resolve(&defaults()).unwrap();
        let expected = gethostname::gethostname().into_string().unwrap();
        assert_eq!(c.remoting.public_host, expected);
        if expected.parse::<IpAddr>().is_err() {
            assert_eq!(c.remoting.bind_host, "0.0.0.0");
        }
    }

    #[test]
    fn cluster_ip_host_address_placeholder() {
        let a = NodeArgs {
            host: Some(HOST_ADDRESS_PLACEHOLDER.into()),
            ..NodeArgs::default()
        };
        match a.resolve(&defaults()) {
            Ok(c) => {
                let ip: Ipv4Addr = c.remoting.public_host.parse().unwrap_or_else(|_| {
                    panic!("not an IPv4 address: {:?}", c.remoting.public_host)
                });
                assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
                // An IP address is also the interface bound by default.
                assert_eq!(c.remoting.bind_host, ip.to_string());
            }
            // A host whose name maps only to loopback (127.0.1.1 in Debian's /etc/hosts):
            // refused, naming the variable and the placeholder.
            Err(e) => {
                assert_eq!(e.variable, "CLUSTER_IP");
                let text = e.to_string();
                assert!(text.contains("CLUSTER_IP"), "{text}");
                assert!(text.contains(HOST_ADDRESS_PLACEHOLDER), "{text}");
                assert!(text.contains("IPv4") || text.contains("resolve"), "{text}");
            }
        }
    }

    #[test]
    fn first_non_loopback_ipv4_skips_loopback_v6_and_unspecified() {
        let addrs: Vec<SocketAddr> = ["127.0.1.1:0", "[::1]:0", "[fd00::5]:0", "0.0.0.0:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(first_non_loopback_ipv4(addrs.clone()), None);
        let mut more = addrs;
        more.push("172.18.0.5:0".parse().unwrap());
        more.push("10.0.0.2:0".parse().unwrap());
        assert_eq!(
            first_non_loopback_ipv4(more),
            Some(Ipv4Addr::new(172, 18, 0, 5))
        );
    }

    #[test]
    fn unknown_cluster_ip_placeholders_are_refused() {
        for bad in [
            "<foo>",
            "<gethostaddress>",
            "<getHostAddress",
            "getHostName>",
            "a<b>",
        ] {
            let e = NodeArgs {
                host: Some(bad.into()),
                ..NodeArgs::default()
            }
            .resolve(&defaults())
            .unwrap_err();
            assert_eq!(e.variable, "CLUSTER_IP", "{bad}");
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("--host"), "{e}");
        }
        let e = NodeArgs {
            host: Some("<foo>".into()),
            ..NodeArgs::default()
        }
        .resolve(&defaults())
        .unwrap_err();
        assert!(e.reason.contains("unknown placeholder"), "{e}");
        assert!(e.reason.contains(HOST_ADDRESS_PLACEHOLDER), "{e}");
    }

    #[test]
    fn wrong_values_name_the_variable() {
        let cases: Vec<(NodeArgs, &str)> = vec![
            (
                NodeArgs {
                    port: Some("99999".into()),
                    ..Default::default()
                },
                "CLUSTER_PORT",
            ),
            (
                NodeArgs {
                    seeds: Some("nohost".into()),
                    ..Default::default()
                },
                "CLUSTER_SEEDS",
            ),
            (
                NodeArgs {
                    management_port: Some("x".into()),
                    ..Default::default()
                },
                "MANAGEMENT_PORT",
            ),
            (
                NodeArgs {
                    management_host: Some("my host".into()),
                    ..Default::default()
                },
                "MANAGEMENT_HOST",
            ),
            (
                NodeArgs {
                    system: Some("a b".into()),
                    ..Default::default()
                },
                "ACTORSYSTEM",
            ),
            (
                NodeArgs {
                    required_contact_points: Some("0".into()),
                    ..Default::default()
                },
                "REQUIRED_CONTACT_POINT_NR",
            ),
            (
                NodeArgs {
                    sbr_strategy: Some("majority".into()),
                    ..Default::default()
                },
                "CLUSTER_SBR_STRATEGY",
            ),
            (
                NodeArgs {
                    heartbeat_interval: Some("fast".into()),
                    ..Default::default()
                },
                "CLUSTER_HEARTBEAT_INTERVAL",
            ),
            (
                NodeArgs {
                    cookie: Some("short".into()),
                    ..Default::default()
                },
                "CLUSTER_COOKIE",
            ),
            (
                NodeArgs {
                    discovery: Some("dns".into()),
                    ..Default::default()
                },
                "CLUSTER_DISCOVERY_SERVICE",
            ),
            (
                NodeArgs {
                    app_version: Some("1 2".into()),
                    ..Default::default()
                },
                "APP_VERSION",
            ),
            (
                NodeArgs {
                    discovery: Some("kubernetes-api".into()),
                    label_selector: Some("app=lighthouse".into()),
                    ..Default::default()
                },
                "KUBERNETES_SERVICE_HOST",
            ),
            (
                NodeArgs {
                    discovery: Some("kubernetes-api".into()),
                    label_selector: Some("app=lighthouse".into()),
                    kubernetes_service_host: Some("10.96.0.1".into()),
                    kubernetes_service_port: Some("https".into()),
                    ..Default::default()
                },
                "KUBERNETES_SERVICE_PORT",
            ),
            (
                NodeArgs {
                    discovery: Some("kubernetes-api".into()),
                    label_selector: Some("app=lighthouse".into()),
                    kubernetes_service_host: Some("10.96.0.1".into()),
                    service_account_dir: Some("/nonexistent/serviceaccount".into()),
                    ..Default::default()
                },
                "KUBERNETES_SERVICE_ACCOUNT_DIR",
            ),
            (
                NodeArgs {
                    tls_cert: Some("/nonexistent/cert.pem".into()),
                    ..Default::default()
                },
                "CLUSTER_TLS_KEY",
            ),
            (
                NodeArgs {
                    tls_cert: Some("/nonexistent/cert.pem".into()),
                    tls_key: Some("/nonexistent/key.pem".into()),
                    tls_ca: Some("/nonexistent/ca.pem".into()),
                    ..Default::default()
                },
                "CLUSTER_TLS_CERT",
            ),
            (
                NodeArgs {
                    discovery: Some("consul".into()),
                    ..Default::default()
                },
                "CLUSTER_DISCOVERY",
            ),
        ];
        for (args, var) in cases {
            let e = args.resolve(&defaults()).unwrap_err();
            assert_eq!(e.variable, var);
            assert!(e.to_string().contains(var), "{e}");
        }
        let no_seeds = NodeArgs::default()
            .resolve(&ServiceDefaults::default())
            .unwrap_err();
        assert_eq!(no_seeds.variable, "CLUSTER_SEEDS");
    }
}
