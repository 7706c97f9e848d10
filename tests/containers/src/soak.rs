//! The soak: the compose cluster under load for N minutes, with a random fault every 30-60 s
//! (`container-suite --soak MINUTES`, or `scripts/container-tests.sh --soak MINUTES`).
//!
//! The faults, drawn from a shuffled bag of all five kinds (so each kind comes once in every
//! five faults), each on a node drawn at random from the trade-processors, the pricing nodes and
//! two of the three lighthouses:
//! - **kill**: `docker kill`, then `docker start` (the node rejoins as a new incarnation);
//! - **partition**: the node's network disconnected for 8 s (below the split-brain resolver's
//!   stable-after, so nobody is downed), then reconnected;
//! - **sigterm**: `docker stop` (a graceful leave), then `docker start`;
//! - **outage**: the MongoDB container stopped for 10 s;
//! - **slow network**: `tc netem` in the node's network namespace (100 ms +- 20 ms of delay and
//!   1% loss) for 20 s; on a kernel built without netem (the VMs this project's CI runs on), a
//!   `tbf` token bucket instead (1 Mbit/s with at most 200 ms of queue), announced in the output.
//!
//! After each fault it waits until every member is Up and reachable and every book wrote to
//! the journal again, then checks the invariants of [`crate::ledger`] (nothing confirmed lost, nothing
//! placed twice, trade ids 1..N, pricing caught up, no rejected write). It stops at the first
//! fault after which they do not hold. At the end it prints a table per fault kind (how many,
//! and the slowest and median time from the fault's end to every book writing again) and each
//! container's memory at the start, every [`MEMORY_EVERY`] and at the end, so a reader sees
//! whether it levels off (a value marked `*` belongs to a container that a kill or SIGTERM
//! restarted since the previous sample). It is not run in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::docker::docker;
use crate::{MEMBERS, Progress, Suite, address, secs};

/// The kinds of fault, in the order the table lists them.
const KINDS: [&str; 5] = ["kill", "partition", "sigterm", "outage", "slow network"];

/// The nodes a fault may hit, with their cluster port.
const TARGETS: [(&str, u16); 6] = [
    ("trade-processor-0", 5055),
    ("trade-processor-1", 5055),
    ("pricing-0", 5055),
    ("pricing-1", 5055),
    ("lighthouse-1", 4053),
    ("lighthouse-2", 4053),
];

/// How often the soak samples each container's memory.
const MEMORY_EVERY: Duration = Duration::from_secs(10 * 60);

/// Longest wait for the cluster to be whole and every book to trade after a fault.
const RECOVERY: Duration = Duration::from_secs(180);

impl Suite<'_> {
    /// Runs the soak for `minutes`; `seed` draws the faults, their targets and their spacing.
    pub(crate) async fn soak(&mut self, minutes: u64, seed: u64) -> Result<()> {
        println!("==> soak: {minutes} min, a random fault every 30-60 s (seed {seed})");
        let mut rng = StdRng::seed_from_u64(seed);
        let started = Instant::now();
        // (minutes since the start, memory per container, services restarted since the last)
        let mut samples = vec![(0, self.memory().await?, BTreeSet::new())];
        let mut restarted: BTreeSet<&str> = BTreeSet::new();
        let deadline = started + Duration::from_secs(minutes * 60);
        let mut recoveries: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
        let mut bag: Vec<&str> = Vec::new();
        while Instant::now() + Duration::from_secs(60) < deadline {
            tokio::time::sleep(Duration::from_secs(rng.random_range(30..=60))).await;
            // Faults come from a shuffled bag of every kind, refilled when empty: random,
            // and every kind is seen within each five faults.
            if bag.is_empty() {
                bag = KINDS.to_vec();
                bag.shuffle(&mut rng);
            }
            let kind = bag.pop().expect("refilled");
            let (service, port) = TARGETS[rng.random_range(0..TARGETS.len())];
            let before = self.progress(Progress::Writes).await?;
            let target = if kind == "outage" { "mongodb" } else { service };
            println!("    {kind}: {target}");
            self.inject(kind, service, port).await?;
            let t0 = Instant::now();
            self.all_up(MEMBERS, RECOVERY).await?;
            self.every_book_moves(Progress::Writes, &before, RECOVERY)
                .await?;
            let took = t0.elapsed();
            self.invariants(&format!("{kind} of {target}")).await?;
            recoveries.entry(kind).or_default().push(took);
            if matches!(kind, "kill" | "sigterm") {
                restarted.insert(service);
            }
            let minute = started.elapsed().as_secs() / 60;
            if minute >= samples.last().map_or(0, |s| s.0) + MEMORY_EVERY.as_secs() / 60 {
                let memory = self.memory().await?;
                // Printed as taken too, so a soak that stops early still shows the trend.
                let line: Vec<String> = memory
                    .iter()
                    .map(|(n, m)| format!("{} {m}", self.label(n)))
                    .collect();
                println!("    memory at {minute} min: {}", line.join(", "));
                samples.push((minute, memory, std::mem::take(&mut restarted)));
            }
        }
        let minute = started.elapsed().as_secs() / 60;
        samples.push((minute, self.memory().await?, restarted));
        println!("==> soak: faults (recovery: from the fault's end to every book writing again)");
        println!(
            "    {:<13} {:>6} {:>15} {:>15} {:>10}",
            "fault", "count", "median recovery", "slowest", "invariants"
        );
        for kind in KINDS {
            let mut times = recoveries.remove(kind).unwrap_or_default();
            times.sort();
            let (median, slowest) =
                match (times.get(times.len().saturating_sub(1) / 2), times.last()) {
                    (Some(m), Some(s)) => (secs(*m), secs(*s)),
                    _ => ("-".into(), "-".into()),
                };
            println!(
                "    {kind:<13} {:>6} {median:>15} {slowest:>15} {:>10}",
                times.len(),
                if times.is_empty() { "-" } else { "held" }
            );
        }
        println!(
            "==> soak: memory per container (docker stats) by minute; * = restarted by a fault since the previous sample"
        );
        let mut header = format!("    {:<20}", "container");
        for (minute, _, _) in &samples {
            header.push_str(&format!(" {:>11}", format!("{minute} min")));
        }
        println!("{header}");
        for name in samples[0].1.keys() {
            let label = self.label(name);
            let service = label.split('_').next().unwrap_or(label);
            let mut line = format!("    {label:<20}");
            for (_, memory, restarted) in &samples {
                let used = memory.get(name).map_or("gone", String::as_str);
                let mark = if restarted.contains(service) { "*" } else { "" };
                line.push_str(&format!(" {:>11}", format!("{used}{mark}")));
            }
            println!("{line}");
        }
        Ok(())
    }

    /// Injects one fault of `kind` on `service` and returns once it is over.
    async fn inject(&mut self, kind: &str, service: &str, port: u16) -> Result<()> {
        let node = address(service, port);
        let id = self.project.container(service).await?;
        match kind {
            "kill" => {
                let old = self.member(&node).await?.context("a member")?;
                docker(&["kill", &id]).await?;
                // The restart policy does not restart a killed container: start it once the
                // cluster has seen it go, as an operator (or a StatefulSet) would.
                tokio::time::sleep(Duration::from_secs(5)).await;
                docker(&["start", &id]).await?;
                self.rejoined(&node, old.uid, RECOVERY).await
            }
            "partition" => {
                docker(&["network", "disconnect", &self.project.network(), &id]).await?;
                tokio::time::sleep(Duration::from_secs(8)).await;
                self.reconnect(&id, service).await
            }
            "sigterm" => {
                let old = self.member(&node).await?.context("a member")?;
                // Fails unless the node exits 0 within its grace period.
                self.restart_gracefully(&id).await?;
                self.rejoined(&node, old.uid, RECOVERY).await
            }
            "outage" => {
                let mongo = self.project.container("mongodb").await?;
                self.stores = None;
                docker(&["stop", "--time", "10", &mongo]).await?;
                tokio::time::sleep(Duration::from_secs(10)).await;
                docker(&["start", &mongo]).await.map(|_| ())
            }
            "slow network" => {
                let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &id]).await?;
                let pid = pid.trim().to_owned();
                let links = netns(&pid, &["ip", "-o", "link", "show"]).await?;
                let devices: Vec<String> = links
                    .lines()
                    .filter_map(|l| l.split(':').nth(1))
                    .map(|d| d.trim().split('@').next().unwrap_or_default().to_owned())
                    .filter(|d| !d.is_empty() && d != "lo")
                    .collect();
                if devices.is_empty() {
                    bail!("{service} has no network device to slow down");
                }
                for dev in &devices {
                    let netem = [
                        "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "100ms",
                        "20ms", "loss", "1%",
                    ];
                    if let Err(e) = netns(&pid, &netem).await {
                        if !e.to_string().contains("qdisc kind is unknown") {
                            return Err(e);
                        }
                        // Some kernels (this project's CI VMs among them) are built without
                        // sch_netem: slow the link down with a token bucket instead, and say so.
                        println!(
                            "      this kernel has no netem qdisc: {dev} throttled with tbf \
                             (1 Mbit/s, 200 ms of queue) instead"
                        );
                        let tbf = [
                            "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1mbit",
                            "burst", "32kbit", "latency", "200ms",
                        ];
                        netns(&pid, &tbf).await?;
                    }
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
                for dev in &devices {
                    netns(&pid, &["tc", "qdisc", "del", "dev", dev, "root"]).await?;
                }
                Ok(())
            }
            other => bail!("unknown fault {other}"),
        }
    }

    /// A container's name without the project: compose names containers PROJECT_SERVICE_N,
    /// so this is the service, with `_N` only where there are several (the traders).
    fn label<'n>(&self, name: &'n str) -> &'n str {
        name.strip_prefix(&format!("{}_", self.project.name))
            .unwrap_or(name)
            .trim_end_matches("_1")
    }

    /// Each of the project's containers and its memory use, as `docker stats` reports it.
    async fn memory(&self) -> Result<BTreeMap<String, String>> {
        let mut ids = Vec::new();
        for service in crate::NAMED
            .iter()
            .copied()
            .chain(["mongodb", "pricing-web"])
        {
            ids.push(self.project.container(service).await?);
        }
        ids.extend(self.project.containers("traders").await?);
        let mut args = vec![
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}\t{{.MemUsage}}",
        ];
        args.extend(ids.iter().map(String::as_str));
        let out = docker(&args).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, usage)| {
                let used = usage.split('/').next().unwrap_or(usage).trim();
                (name.to_owned(), used.to_owned())
            })
            .collect())
    }
}

/// Runs a command in the network namespace of the process `pid` (needs root, as Docker does).
async fn netns(pid: &str, cmd: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("nsenter")
        .args(["-t", pid, "-n"])
        .args(cmd)
        .output()
        .await
        .context("run nsenter (util-linux)")?;
    if !out.status.success() {
        bail!(
            "nsenter -t {pid} -n {}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
