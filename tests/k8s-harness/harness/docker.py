"""Every call to Docker: the `docker` CLI through subprocess (no SDK). It owns the label that marks
what the harness created (LABEL=<project>) and nothing else; callers build the arguments.
"""

import ipaddress
import json
import random
import subprocess

LABEL = "akka-cqrs-rs.k8s-harness"


class DockerError(RuntimeError):
    pass


def run(args, check=True, timeout=120, env=None, capture=True):
    """Runs `docker ARGS`; returns the CompletedProcess (text). check=True raises DockerError."""
    try:
        p = subprocess.run(["docker", *args], capture_output=capture, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        if check:
            raise DockerError(f"docker {' '.join(args[:3])}... timed out after {timeout}s") from e
        return subprocess.CompletedProcess(e.cmd, 124, "", "timed out")
    if check and p.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} failed ({p.returncode}): {(p.stderr or '').strip()}")
    return p


def label_args(project, **extra):
    out = ["--label", f"{LABEL}={project}"]
    for k, v in extra.items():
        out += ["--label", f"{LABEL}.{k}={v}"]
    return out


def image_exists(image):
    return run(["image", "inspect", "--format", "{{.Id}}", image], check=False).returncode == 0


def image_user(image):
    """The image's configured USER ('' when none, i.e. root)."""
    p = run(["image", "inspect", "--format", "{{.Config.User}}", image], check=False)
    return p.stdout.strip() if p.returncode == 0 else ""


def container_states(project):
    """{container name: docker state ('running', 'exited', 'created', ...)} of the project."""
    p = run(["ps", "-a", "--filter", f"label={LABEL}={project}", "--format", "{{.Names}}\t{{.State}}"], timeout=30)
    out = {}
    for line in p.stdout.splitlines():
        if "\t" in line:
            name, state = line.split("\t", 1)
            out[name] = state.strip()
    return out


def leftovers(project):
    """Names of containers, volumes and networks that carry the project's label."""
    flt = ["--filter", f"label={LABEL}={project}"]
    c = run(["ps", "-a", *flt, "--format", "{{.Names}}"]).stdout.split()
    v = run(["volume", "ls", "-q", *flt]).stdout.split()
    n = run(["network", "ls", *flt, "--format", "{{.Name}}"]).stdout.split()
    return c, v, n


def remove_all(project):
    """Force-removes every container, volume and network labelled with the project."""
    c, v, n = leftovers(project)
    if c:
        run(["rm", "-f", "-v", *c], check=False)
    if v:
        run(["volume", "rm", "-f", *v], check=False)
    for net in n:
        run(["network", "rm", net], check=False)
    return c, v, n


def used_subnets():
    ids = run(["network", "ls", "-q"]).stdout.split()
    if not ids:
        return []
    p = run(["network", "inspect", *ids])
    nets = []
    for n in json.loads(p.stdout):
        for cfg in (n.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                try:
                    nets.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
                except ValueError:
                    pass
    return nets


def choose_subnet():
    """A 10.231.N.0/24 that overlaps no Docker network, picked at random among the free ones so
    that harnesses starting at the same moment rarely pick the same (the caller retries then)."""
    used = used_subnets()
    free = [c for c in (ipaddress.ip_network(f"10.231.{n}.0/24") for n in range(256))
            if not any(c.overlaps(u) for u in used if u.version == 4)]
    if not free:
        raise DockerError("no free 10.231.N.0/24 subnet for the harness network (give --subnet)")
    return random.choice(free)
