//! The suite's hands on Docker: one project of its own, either a compose project
//! (docker/docker-compose.yaml with docker/docker-compose.test.yaml over it, driven through
//! `docker-compose` 1.29) or the pods the Kubernetes harness runs (`tests/k8s-harness`, which
//! names each pod's container `<project>-<pod>` on the network `<project>`), and `docker`.
//!
//! Everything it creates carries the project's name (containers, the network, volumes), and
//! [`Project::down`] removes exactly those, so parallel runs and the user's own
//! `akka-cqrs` project are never touched.

use std::path::PathBuf;
use std::process::Output;

use anyhow::{Context, Result, bail};

/// What runs the project's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `docker-compose -p NAME`: a service's containers carry compose's labels.
    Compose,
    /// The Kubernetes harness: a pod's container is `NAME-<pod>` (`mongodb` is the pod
    /// `mongodb-0`, `traders` every `traders-<n>`), labelled `akka-cqrs-rs.k8s-harness=NAME`.
    Harness,
}

/// One project.
pub struct Project {
    /// The project name (`-p`), unique per run.
    pub name: String,
    repo: PathBuf,
    env: Vec<(String, String)>,
    kind: Kind,
}

fn check(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `docker ARGS` and returns its stdout.
pub async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .context("docker runs")?;
    check(&format!("docker {}", args.join(" ")), out)
}

impl Project {
    /// A project of the repository at `repo`, with `env` for the compose files' variables.
    pub fn new(name: String, repo: PathBuf, env: Vec<(String, String)>) -> Project {
        Project {
            name,
            repo,
            env,
            kind: Kind::Compose,
        }
    }

    /// The pods the Kubernetes harness runs as project `name`.
    pub fn harness(name: String, repo: PathBuf) -> Project {
        Project {
            name,
            repo,
            env: Vec::new(),
            kind: Kind::Harness,
        }
    }

    fn compose_command(&self, args: &[&str]) -> std::process::Command {
        let docker_dir = self.repo.join("docker");
        let mut command = std::process::Command::new("docker-compose");
        command
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(docker_dir.join("docker-compose.yaml"))
            .arg("--file")
            .arg(docker_dir.join("docker-compose.test.yaml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Runs `docker-compose -p NAME -f users' -f test's ARGS` and returns its stdout.
    pub async fn compose(&self, args: &[&str]) -> Result<String> {
        if self.kind != Kind::Compose {
            bail!("{} is not a compose project", self.name);
        }
        self.compose_with(&[], args).await
    }

    /// As [`Project::compose`], with `extra` variables for the compose files on top of the
    /// project's.
    pub async fn compose_with(&self, extra: &[(&str, &str)], args: &[&str]) -> Result<String> {
        let mut command = self.compose_command(args);
        command.envs(extra.iter().copied());
        let out = tokio::process::Command::from(command)
            .output()
            .await
            .context("docker-compose runs")?;
        check(&format!("docker-compose {}", args.join(" ")), out)
    }

    /// The container ids of a service (several for a scaled one), in replica order.
    pub async fn containers(&self, service: &str) -> Result<Vec<String>> {
        if self.kind == Kind::Harness {
            return self.pod_containers(service).await;
        }
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Label \"com.docker.compose.container-number\"}} {{.ID}}",
        ])
        .await?;
        let mut rows: Vec<(u32, String)> = out
            .lines()
            .filter_map(|l| {
                let (n, id) = l.split_once(' ')?;
                Some((n.parse().ok()?, id.to_owned()))
            })
            .collect();
        rows.sort();
        Ok(rows.into_iter().map(|(_, id)| id).collect())
    }

    /// The harness's containers of `service`: the pod of that name, or the pods of the set
    /// of that name (`<service>-<ordinal>`), by ordinal.
    async fn pod_containers(&self, service: &str) -> Result<Vec<String>> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=akka-cqrs-rs.k8s-harness={}", self.name),
            "--format",
            "{{.Names}} {{.ID}}",
        ])
        .await?;
        let prefix = format!("{}-", self.name);
        let mut exact = None;
        let mut set: Vec<(u32, String)> = Vec::new();
        for l in out.lines() {
            let Some((name, id)) = l.split_once(' ') else {
                continue;
            };
            let Some(pod) = name.strip_prefix(&prefix) else {
                continue;
            };
            if pod == service {
                exact = Some(id.to_owned());
            } else if let Some(n) = pod
                .strip_prefix(service)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|n| n.parse().ok())
            {
                set.push((n, id.to_owned()));
            }
        }
        if let Some(id) = exact {
            return Ok(vec![id]);
        }
        set.sort();
        Ok(set.into_iter().map(|(_, id)| id).collect())
    }

    /// The one container of a service.
    pub async fn container(&self, service: &str) -> Result<String> {
        let ids = self.containers(service).await?;
        match ids.as_slice() {
            [id] => Ok(id.clone()),
            _ => bail!(
                "service {service} has {} containers, expected one",
                ids.len()
            ),
        }
    }

    /// The network of the project (compose's default network, or the harness's).
    pub fn network(&self) -> String {
        match self.kind {
            Kind::Compose => format!("{}_default", self.name),
            Kind::Harness => self.name.clone(),
        }
    }

    /// A container's address on the project's network (empty while it is disconnected or
    /// stopped).
    pub async fn ip(&self, container: &str) -> Result<String> {
        let format = format!(
            "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
            self.network()
        );
        Ok(docker(&["inspect", "--format", &format, container])
            .await?
            .trim()
            .to_owned())
    }

    /// State of a container: (running, exit code, restart count).
    pub async fn state(&self, container: &str) -> Result<(bool, i64, u64)> {
        let out = docker(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}} {{.RestartCount}}",
            container,
        ])
        .await?;
        let f: Vec<&str> = out.split_whitespace().collect();
        Ok((f[0] == "true", f[1].parse()?, f[2].parse()?))
    }

    /// The container's log (stdout and stderr).
    pub async fn logs(&self, container: &str) -> Result<String> {
        let out = tokio::process::Command::new("docker")
            .args(["logs", container])
            .output()
            .await?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// `docker-compose down --volumes`: this project's containers, network and volumes.
    /// Blocking, so that it also runs from a destructor while a failed check unwinds.
    pub fn down(&self) -> Result<()> {
        if self.kind == Kind::Harness {
            // the harness's controller removes what it created when it stops
            return Ok(());
        }
        let out = self
            .compose_command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .output()
            .context("docker-compose runs")?;
        check("docker-compose down", out).map(|_| ())
    }
}

/// Removes the project when dropped (unless kept): at the end of a run, and also when a
/// check panics, so no container, network or volume of a test run outlives it.
pub struct Teardown<'a> {
    /// The project to remove.
    pub project: &'a Project,
    /// Leave it running instead.
    pub keep: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "==> kept: docker-compose -p {} -f docker/docker-compose.yaml -f docker/docker-compose.test.yaml down -v",
                self.project.name
            );
        } else if let Err(e) = self.project.down() {
            eprintln!("warning: could not remove the project: {e:#}");
        }
    }
}
