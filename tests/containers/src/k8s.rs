//! `container-suite --kubernetes`: the manifests of `k8s/` run as pods on Docker by the
//! Kubernetes harness (`tests/k8s-harness`, `scripts/k8s-harness.sh serve`), deployed and stopped
//! by `scripts/deployK8sServices.sh` and `scripts/stopK8sServices.sh` themselves through the
//! harness's `kubectl` shim. In order:
//!
//! 1. **deploy** (`--without-observability`: those images cannot be pulled here): the time from
//!    the script's start to every workload rolled out, then the formation checks of the compose
//!    suite (9 members Up, `/ready` on each, prices of all 28 tickers through the `pricing-ui`
//!    LoadBalancer);
//! 2. **scale**: `kubectl scale statefulsets traders --replicas=4`, then back to 2;
//! 3. **rolling restart** of trade-processor under load (`kubectl rollout restart`): how often
//!    each shard moved and the longest pause a book saw;
//! 4. **kill**: `docker kill` of a trade-processor pod's container; the harness restarts it and
//!    it rejoins;
//! 5. **stop**: `scripts/stopK8sServices.sh`; no container of the namespace is left;
//! 6. **discovery**: the Kubernetes-API variant (`--discovery kubernetes-api`), its pods listing
//!    each other through the harness's fake API server, forms one cluster; then stopped.
//!
//! After each of 1-4 it checks the invariants of [`crate::ledger`], as the compose suite does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::docker::{Project, docker};
use crate::{MEMBERS, Suite, eventually, secs};

/// A StatefulSet pod's cluster address in the seeds variant (`CLUSTER_IP=$(POD_NAME).<set>`).
fn address(pod: &str, port: u16) -> String {
    let set = pod.rsplit_once('-').map_or(pod, |(set, _)| set);
    crate::address(&format!("{pod}.{set}"), port)
}

/// The harness's controller, stopped (SIGTERM, so it removes what it created) when dropped.
pub struct Harness {
    child: std::process::Child,
    repo: PathBuf,
    state: PathBuf,
    project: String,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("warning: the harness did not stop; removing its project by force");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new(self.repo.join("scripts/k8s-harness.sh"))
            .args(["cleanup", "--project", &self.project])
            .status();
    }
}

impl Harness {
    /// Starts `scripts/k8s-harness.sh serve` and waits until its state folder answers.
    pub fn start(
        repo: &Path,
        project: &str,
        work: &Path,
        blotters: &Path,
        orders_per_second: u32,
    ) -> Result<Harness> {
        let state = work.join("state");
        let log = std::fs::File::create(work.join("harness.log"))?;
        let child = std::process::Command::new(repo.join("scripts/k8s-harness.sh"))
            .current_dir(repo)
            .args(["serve", "--project", project, "--state"])
            .arg(&state)
            .arg("--blotter-dir")
            .arg(blotters)
            .args([
                "--orders-per-second",
                &orders_per_second.to_string(),
                "--free-lb-ports",
            ])
            // built beside this binary (scripts/container-tests.sh builds both)
            .arg("--api-server")
            .arg(std::env::current_exe()?.with_file_name("fake-apiserver"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start scripts/k8s-harness.sh serve")?;
        Ok(Harness {
            child,
            repo: repo.to_path_buf(),
            state,
            project: project.to_owned(),
        })
    }

    /// Runs `program ARGS` from the repository root with the shim first on PATH; returns its
    /// stdout, or fails with its output.
    pub async fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let path = format!(
            "{}:{}",
            self.repo.join("tests/k8s-harness").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = tokio::process::Command::new(program)
            .current_dir(&self.repo)
            .args(args)
            .env("PATH", path)
            .env("KUBE_HARNESS_STATE", &self.state)
            .output()
            .await
            .with_context(|| format!("run {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl -n akka-cqrs ARGS` through the shim.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["--namespace", "akka-cqrs"];
        all.extend_from_slice(args);
        self.run("kubectl", &all).await
    }

    /// Waits until the controller answers `kubectl get pods`.
    pub async fn ready(&self) -> Result<()> {
        eventually(
            "the harness's controller answers",
            Duration::from_secs(120),
            || async { Ok(self.kubectl(&["get", "pods"]).await.ok().map(|_| ())) },
        )
        .await
    }

    /// The host address of the `pricing-ui` LoadBalancer.
    pub async fn dashboard(&self) -> Result<SocketAddr> {
        let out = self
            .run(
                "scripts/k8s-harness.sh",
                &["port", "pricing-ui", "-n", "akka-cqrs"],
            )
            .await?;
        out.trim()
            .parse()
            .with_context(|| format!("pricing-ui's address {out:?}"))
    }

    /// Containers of the project still there (running or not).
    pub async fn containers(&self) -> Result<Vec<String>> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=akka-cqrs-rs.k8s-harness={}", self.project),
            "--format",
            "{{.Names}}",
        ])
        .await?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

impl Suite<'_> {
    async fn k8s_deploy(&mut self, h: &Harness, discovery: &str) -> Result<()> {
        println!(
            "==> deploy ({discovery}): scripts/deployK8sServices.sh through the harness's kubectl"
        );
        let t0 = Instant::now();
        h.run(
            "scripts/deployK8sServices.sh",
            &["--discovery", discovery, "--without-observability"],
        )
        .await?;
        self.figure(
            &format!("kubernetes ({discovery}): deploy to every workload rolled out"),
            secs(t0.elapsed()),
        );
        let pods = h.kubectl(&["get", "pods"]).await?;
        let not_ready: Vec<&str> = pods
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() < 3 || f[1] != "1/1" || f[2] != "Running"
            })
            .collect();
        if !not_ready.is_empty() {
            bail!("pods not Ready after the deploy:\n{pods}");
        }
        self.dashboard = h.dashboard().await?;
        self.formation(t0).await
    }

    async fn k8s_scale(&mut self, h: &Harness) -> Result<()> {
        println!("==> scale: kubectl scale statefulsets traders --replicas=4, then 2");
        let t0 = Instant::now();
        h.kubectl(&["scale", "statefulsets", "traders", "--replicas=4"])
            .await?;
        self.all_up(MEMBERS + 2, Duration::from_secs(180)).await?;
        self.figure("kubernetes: traders 2 -> 4, all Up", secs(t0.elapsed()));
        let t1 = Instant::now();
        h.kubectl(&["scale", "statefulsets", "traders", "--replicas=2"])
            .await?;
        self.all_up(MEMBERS, Duration::from_secs(180)).await?;
        h.kubectl(&["rollout", "status", "statefulset/traders", "--timeout=180s"])
            .await?;
        self.figure(
            "kubernetes: traders 4 -> 2, the two left and removed",
            secs(t1.elapsed()),
        );
        self.invariants("scaling the traders").await
    }

    async fn k8s_rolling(&mut self, h: &Harness) -> Result<()> {
        println!(
            "==> rolling restart: kubectl rollout restart statefulset/trade-processor, under load"
        );
        let (moves, pauses) = self.start_samplers().await?;
        let mut uids = Vec::new();
        for pod in ["trade-processor-0", "trade-processor-1"] {
            let node = address(pod, 5055);
            let m = self.member(&node).await?.context("a member")?;
            uids.push((node, m.uid));
        }
        let t0 = Instant::now();
        h.kubectl(&["rollout", "restart", "statefulset/trade-processor"])
            .await?;
        h.kubectl(&[
            "rollout",
            "status",
            "statefulset/trade-processor",
            "--timeout=300s",
        ])
        .await?;
        for (node, uid) in &uids {
            self.rejoined(node, *uid, Duration::from_secs(120)).await?;
        }
        self.all_up(MEMBERS, Duration::from_secs(120)).await?;
        let took = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(15)).await;
        let homes = moves.stop().await?;
        let pause = pauses.stop().await?;
        self.figure("kubernetes: rolling restart of trade-processor", secs(took));
        self.figure("kubernetes: moves per shard", crate::moves_summary(&homes)?);
        self.figure(
            "kubernetes: longest pause any book saw",
            format!("{} ({})", secs(pause.length), pause.ticker),
        );
        self.invariants("the rolling restart").await
    }

    async fn k8s_kill(&mut self, h: &Harness) -> Result<()> {
        println!("==> kill: docker kill of trade-processor-1's container; restarted, it rejoins");
        let node = address("trade-processor-1", 5055);
        let old = self.member(&node).await?.context("a member")?;
        let id = self.project.container("trade-processor-1").await?;
        let t0 = Instant::now();
        docker(&["kill", &id]).await?;
        self.rejoined(&node, old.uid, Duration::from_secs(180))
            .await?;
        self.all_up(MEMBERS, Duration::from_secs(180)).await?;
        let pods = h.kubectl(&["get", "pods"]).await?;
        let restarts: u64 = pods
            .lines()
            .find(|l| l.starts_with("trade-processor-1 "))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .context("trade-processor-1 in kubectl get pods")?;
        if restarts < 1 {
            bail!("kubectl get pods shows no restart of trade-processor-1:\n{pods}");
        }
        self.figure(
            "kubernetes: killed trade-processor-1 back Up as a new incarnation",
            format!(
                "{} (kubectl get pods: RESTARTS {restarts})",
                secs(t0.elapsed())
            ),
        );
        self.invariants("the kill").await
    }

    async fn k8s_stop(&mut self, h: &Harness) -> Result<()> {
        println!("==> stop: scripts/stopK8sServices.sh");
        self.stores = None;
        let t0 = Instant::now();
        h.run("scripts/stopK8sServices.sh", &[]).await?;
        let left = h.containers().await?;
        if !left.is_empty() {
            bail!("containers left after stopK8sServices.sh: {left:?}");
        }
        self.figure("kubernetes: stop, every pod gone", secs(t0.elapsed()));
        Ok(())
    }

    async fn k8s_discovery(&mut self, h: &Harness) -> Result<()> {
        self.k8s_deploy(h, "kubernetes-api").await?;
        let ms = self.members().await?;
        let lowest = ms
            .iter()
            .filter(|m| m.node.ends_with(":4053"))
            .map(|m| m.node.clone())
            .min()
            .context("lighthouse members")?;
        println!(
            "    one cluster of {} members formed through the API; lowest lighthouse {lowest}",
            ms.len()
        );
        self.invariants("the discovery deploy").await?;
        self.k8s_stop(h).await
    }
}

/// Runs the Kubernetes scenarios; prints the figures; true when all passed.
pub async fn run(cli: &crate::Cli, repo: &Path) -> bool {
    let name = format!("k8s-test-{}", std::process::id());
    let work = repo.join("target/container-tests").join(&name);
    let blotters = work.join("blotters");
    std::fs::create_dir_all(&blotters).expect("create the blotter folder");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&blotters, std::fs::Permissions::from_mode(0o777)).unwrap();
    let project = Project::harness(name.clone(), repo.to_path_buf());
    let mut suite = Suite {
        project: &project,
        blotters: blotters.clone(),
        dashboard: SocketAddr::from(([127, 0, 0, 1], 0)),
        figures: Vec::new(),
        stores: None,
    };
    println!(
        "==> Kubernetes harness: project {name}, {} orders/s per traders pod",
        cli.orders_per_second
    );
    let started = Instant::now();
    let outcome = async {
        let h = Harness::start(repo, &name, &work, &blotters, cli.orders_per_second)?;
        h.ready().await?;
        let result = async {
            suite.k8s_deploy(&h, "seeds").await?;
            suite.k8s_scale(&h).await?;
            suite.k8s_rolling(&h).await?;
            suite.k8s_kill(&h).await?;
            suite.k8s_stop(&h).await?;
            // a fresh journal and blotters for the second deployment
            std::fs::remove_dir_all(&blotters)?;
            std::fs::create_dir_all(&blotters)?;
            std::fs::set_permissions(&blotters, std::fs::Permissions::from_mode(0o777))?;
            suite.k8s_discovery(&h).await
        }
        .await;
        if result.is_err() {
            let log = std::fs::read_to_string(work.join("harness.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("--- last lines of the harness's log:");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        suite.stores = None;
        drop(h);
        result
    }
    .await;
    if let Err(e) = &outcome {
        eprintln!("FAILED: {e:#}");
    }
    if !cli.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("==> figures ({} in all)", secs(started.elapsed()));
    for (k, v) in &suite.figures {
        println!("    {k}: {v}");
    }
    outcome.is_ok()
}
