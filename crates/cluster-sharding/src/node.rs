//! Wiring sharding into a runtime [`Node`]: the membership view read from the
//! node's membership daemon, the coordinator as a cluster singleton
//! (`cluster_tools::ClusterSingletonManager`, on the oldest Up member with the role),
//! and the coordinated-shutdown tasks (hand off every local shard in phase
//! `cluster-sharding-shutdown-region`, which runs before `cluster-leave` and before
//! the singleton hands over in `cluster-exiting`; stop the region in
//! `before-actor-system-terminate`).

use cluster_tools::{ClusterSingletonManager, SingletonSettings};
use runtime::Node;
use runtime::cluster::Cluster;
use runtime::membership::MemberStatus as RtStatus;
use runtime::shutdown::{CoordinatedShutdown, ShutdownError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::coordinator::{CoordinatorArgs, ShardCoordinator};
use crate::entity::EntityFactory;
use crate::membership::{MemberStatus, MemberView, Membership};
use crate::region::{RegionError, ShardRegion};
use crate::settings::ShardingSettings;

fn convert(s: &runtime::cluster::ClusterSnapshot) -> Membership {
    let members = s
        .members
        .iter()
        .filter_map(|m| {
            let address = m.node.parse().ok()?;
            let status = match m.status {
                RtStatus::Joining => MemberStatus::Joining,
                RtStatus::Up => MemberStatus::Up,
                RtStatus::Leaving => MemberStatus::Leaving,
                RtStatus::Exiting => MemberStatus::Exiting,
                RtStatus::Down => MemberStatus::Down,
                RtStatus::Removed => MemberStatus::Removed,
            };
            Some(MemberView {
                address,
                uid: m.uid,
                status,
                roles: m.roles.clone(),
                up_number: m.up_number,
                app_version: m.app_version.clone(),
            })
        })
        .collect();
    Membership { members }
}

/// The membership view of `cluster`, updated on every change of its members.
pub fn membership_of(cluster: &Cluster) -> watch::Receiver<Membership> {
    let mut snaps = cluster.watch();
    let first = convert(&snaps.borrow_and_update());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        while snaps.changed().await.is_ok() {
            let m = convert(&snaps.borrow_and_update());
            tx.send_if_modified(|cur| {
                if *cur == m {
                    false
                } else {
                    *cur = m;
                    true
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// Adds the region's graceful hand-off to `shutdown` (before the node leaves
/// membership) and its stop at the end of the shutdown.
pub fn hand_off_on_shutdown<M>(
    region: &ShardRegion<M>,
    shutdown: &CoordinatedShutdown,
) -> Result<(), ShutdownError>
where
    M: Send + 'static,
{
    let r = region.clone();
    let name = format!("sharding-{}-hand-off", region.type_name());
    shutdown.add_task(
        "cluster-sharding-shutdown-region",
        &name,
        move |_| async move {
            let t = std::time::Instant::now();
            match r.graceful_handoff().await {
                Ok(()) => info!(
                    type_name = r.type_name(),
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "shards handed off"
                ),
                Err(e) => warn!(type_name = r.type_name(), error = %e, "shard hand-off failed"),
            }
        },
    )?;
    let r = region.clone();
    let name = format!("sharding-{}-stop", region.type_name());
    shutdown.add_task(
        "before-actor-system-terminate",
        &name,
        move |_| async move {
            r.stop();
        },
    )
}

impl<M> ShardRegion<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts a hosting region on `node` (membership from its daemon, hand-off in its
    /// coordinated shutdown) and this node's singleton manager of the type's
    /// coordinator. Call it on every node with the type's role.
    pub async fn start_on_node<F>(
        settings: ShardingSettings,
        factory: F,
        node: &Node,
    ) -> Result<Self, RegionError>
    where
        F: EntityFactory<Message = M>,
    {
        let membership = membership_of(node.cluster());
        let r = Self::start(
            settings.clone(),
            factory,
            node.remoting().clone(),
            membership.clone(),
        )
        .await?;
        start_coordinator_singleton(&settings, node, membership).await?;
        if let Err(e) = hand_off_on_shutdown(&r, node.coordinated_shutdown()) {
            warn!(error = %e, "region started during shutdown: no hand-off task");
        }
        Ok(r)
    }

    /// Starts a proxy-only region on `node`.
    pub async fn start_proxy_on_node(
        settings: ShardingSettings,
        node: &Node,
    ) -> Result<Self, RegionError> {
        let r = Self::start_proxy(
            settings,
            node.remoting().clone(),
            membership_of(node.cluster()),
        )
        .await?;
        let _ = hand_off_on_shutdown(&r, node.coordinated_shutdown());
        Ok(r)
    }
}

/// Starts this node's singleton manager for the coordinator of `settings.type_name`
/// (done by [`ShardRegion::start_on_node`]; call it directly only when the region is
/// started otherwise).
pub async fn start_coordinator_singleton(
    settings: &ShardingSettings,
    node: &Node,
    membership: watch::Receiver<Membership>,
) -> Result<ClusterSingletonManager, ractor::SpawnErr> {
    let singleton = SingletonSettings {
        role: settings.role.clone(),
        retry_interval: settings.retry_interval,
        ..SingletonSettings::default()
    };
    let s = settings.clone();
    let remoting = node.remoting().clone();
    ClusterSingletonManager::start(
        node.cluster(),
        node.remoting(),
        node.coordinated_shutdown(),
        &settings.singleton_name(),
        singleton,
        move |cell| {
            let args = CoordinatorArgs {
                settings: s.clone(),
                remoting: remoting.clone(),
                membership: membership.clone(),
            };
            ShardCoordinator::spawn_linked(args, cell)
        },
    )
    .await
}
