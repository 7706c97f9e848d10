"""Shared helpers of the shipping checks: where things are, and how to read them.

Facts fixed by docs/architecture.md, k8s/README.md and issue 7 live here once (service names, image names and tag, the
namespace), so every test checks the files against the same expectations.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRATES_DIR = REPO / "crates"
DOCKER_DIR = REPO / "docker"
# The runtime images (one stage per service), FROM the binaries image.
DOCKERFILE = DOCKER_DIR / "Dockerfile"
# The two ways to the binaries image (/out/<binary>): cargo-chef in the Rust image, or host-built.
BUILD_DOCKERFILE = DOCKER_DIR / "build.Dockerfile"
HOST_BINARIES_DOCKERFILE = DOCKER_DIR / "host-binaries.Dockerfile"
# The MongoDB stand-in of the container tests.
SECANTUSDB_DIR = DOCKER_DIR / "secantusdb"
# The users' compose file, and the override the container tests put over it.
COMPOSE = DOCKER_DIR / "docker-compose.yaml"
COMPOSE_TEST = DOCKER_DIR / "docker-compose.test.yaml"
COMPOSE_ENV_FILE = DOCKER_DIR / ".env"
SCRIPTS = REPO / "scripts"

NAMESPACE = "akka-cqrs"
IMAGE_PREFIX = "akka-cqrs-rs"
TAG = "0.1.0"
SERVICES = ["lighthouse", "trade-processor", "traders", "pricing", "pricing-web"]
# Cluster members (pricing-web is a cluster client, not a member).
MEMBERS = ["lighthouse", "trade-processor", "traders", "pricing"]
# Replicas of each service in Kubernetes (docker-compose runs as many of each member).
REPLICAS = {"lighthouse": 3, "trade-processor": 2, "traders": 2, "pricing": 2, "pricing-web": 2}
# Services that persist (journal/snapshots in MongoDB).
PERSISTENT = ["trade-processor", "pricing"]
SEED_PORT = 4053
MEMBER_PORT = 5055
MANAGEMENT_PORT = 8558
SECRET_NAME = "akka-cqrs-secrets"
# The journal writes in transactions: MongoDB must be a replica set, and the driver is told so.
MONGO_REPLICA_SET = "rs0"
MONGO_URL = f"mongodb://mongodb:27017/akkaTrader?replicaSet={MONGO_REPLICA_SET}"
# The SecantusDB stand-in advertises the address it binds, so clients connect to it directly.
MONGO_TEST_URL = "mongodb://mongodb:27017/akkaTrader?directConnection=true"
SECANTUSDB_IMAGE_NAME = f"{IMAGE_PREFIX}/secantusdb"
# The image holding /out/<binary> that docker/Dockerfile copies from, and the local base image.
BINARIES_IMAGE = f"{IMAGE_PREFIX}/binaries:{TAG}"
LOCAL_BASE_IMAGE = f"{IMAGE_PREFIX}/base:bookworm"
# Cargo packages and the binary each must produce.
PACKAGES = {
    "lighthouse": "lighthouse",
    "trade-processor": "trade-processor",
    "traders": "traders",
    "pricing": "pricing",
    "pricing-web": "pricing-web",
    "ctl": "tradectl",
}
# What every binaries image holds under /out/.
BINARIES = sorted(PACKAGES.values())
DISCOVERY_ENV = [
    "CLUSTER_DISCOVERY",
    "POD_NAMESPACE",
    "CLUSTER_DISCOVERY_LABEL_SELECTOR",
    "REQUIRED_CONTACT_POINT_NR",
    "CLUSTER_DISCOVERY_PORT_NAME",
]

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
CLUSTER_SCOPED_KINDS = ("Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass")


def manifest_files(under: Path = K8S) -> list[Path]:
    return sorted(p for p in under.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


@dataclass
class Doc:
    path: Path
    index: int
    body: dict

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index} {self.kind}/{self.name}"


def load_docs(path: Path) -> list[Doc]:
    with open(path) as f:
        bodies = list(yaml.safe_load_all(f))
    return [Doc(path, i, b) for i, b in enumerate(bodies) if b is not None]


def docs_in(*dirs: Path) -> list[Doc]:
    out: list[Doc] = []
    for d in dirs:
        files = [d] if d.is_file() else manifest_files(d)
        for f in files:
            out.extend(load_docs(f))
    return out


def base_docs() -> list[Doc]:
    """What the default deploy applies: namespace, environment, services."""
    return docs_in(K8S / "namespace.yaml", K8S / "environment", K8S / "services")


def discovery_docs() -> list[Doc]:
    """What `--discovery kubernetes-api` applies."""
    return docs_in(
        K8S / "namespace.yaml",
        K8S / "environment",
        K8S / "discovery-kubernetes-api",
        K8S / "services" / "pricing-web.yaml",
    )


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    hits = [d for d in docs if d.kind == kind and d.name == name]
    assert len(hits) == 1, f"expected exactly one {kind}/{name}, found {len(hits)}: {[str(h) for h in hits]}"
    return hits[0]


def pod_spec(doc: Doc) -> dict:
    return doc.body["spec"]["template"]["spec"]


def containers(doc: Doc) -> list[dict]:
    spec = pod_spec(doc)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_list(container: dict) -> list[dict]:
    return list(container.get("env", []))


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in env_list(container)}


def env_value(container: dict, name: str) -> str | None:
    e = env_map(container).get(name)
    return None if e is None else e.get("value")


def named_port(container: dict, name: str) -> int | None:
    for p in container.get("ports", []):
        if p.get("name") == name:
            return p["containerPort"]
    return None


def is_own_image(image: str) -> bool:
    return image.startswith(IMAGE_PREFIX + "/")


def service_of_image(image: str) -> str:
    assert is_own_image(image), image
    return image[len(IMAGE_PREFIX) + 1 :].split(":")[0]


def selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def load_compose(path: Path = COMPOSE) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


# ------------------------------------------------------------------------------------------------
# Compose: variable interpolation as docker-compose does it, and docker-compose itself.

_INTERPOLATION_RE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(value, env: dict[str, str] | None = None):
    """`${VAR:-default}`, `${VAR-default}`, `${VAR}`, `$VAR` and `$$` of a compose value, with
    the variables in `env` (none by default: what an empty shell gets)."""
    if not isinstance(value, str):
        return value
    env = env or {}

    def sub(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("plain") or m.group("name")
        op, arg = m.group("op"), m.group("arg")
        if op is None:
            return env.get(name, "")
        if env.get(name) if op.startswith(":") else name in env:
            return env[name]
        assert not op.endswith("?"), f"{name} is required ({arg}) in {value!r}"
        return arg

    return _INTERPOLATION_RE.sub(sub, value)


def compose_env(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    """A compose service's environment (mapping or list form), interpolated, values as strings."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: "" if v is None else str(interpolate(v, env)) for k, v in raw.items()}


def docker_compose(*args: str, files: tuple[Path, ...] = (COMPOSE,), cwd: Path | None = None, env=None):
    """Runs the installed docker-compose (v1.29, the one the container tests use) on `files`,
    with an empty environment so only the files and docker/.env decide."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (Debian: apt-get install docker-compose)"
    argv = [exe]
    for f in files:
        argv += ["-f", str(f)]
    run_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})}
    return subprocess.run([*argv, *args], cwd=cwd or "/", env=run_env, capture_output=True, text=True)


def compose_config(*files: Path) -> dict:
    """The model docker-compose builds from `files`: anchors resolved, overrides merged,
    variables interpolated (with their defaults). A fresh copy each call."""
    return copy.deepcopy(_compose_config(files or (COMPOSE,)))


@functools.cache
def _compose_config(files: tuple[Path, ...]) -> dict:
    r = docker_compose("config", files=files)
    assert r.returncode == 0, f"docker-compose config failed:\n{r.stdout}{r.stderr}"
    return yaml.safe_load(r.stdout)


def is_scaled(service: dict) -> bool:
    """A compose service run as several interchangeable replicas (`scale:` / `--scale`), as
    opposed to one container with a name of its own (`hostname:`)."""
    return "scale" in service or "deploy" in service and "replicas" in service["deploy"]


def replicas_of(service: dict) -> int:
    if "scale" in service:
        return int(service["scale"])
    if "deploy" in service and "replicas" in service["deploy"]:
        return int(service["deploy"]["replicas"])
    return 1


# ------------------------------------------------------------------------------------------------
# Addresses in CLUSTER_SEEDS / CLUSTER_CONTACTS: "akka.tcp://System@host:port" or "host:port".

ADDRESS_RE = re.compile(r"^(?:akka(?:\.tcp)?://(?P<system>[^@/]+)@)?(?P<host>[A-Za-z0-9.\-]+):(?P<port>\d+)$")


def parse_addresses(value: str, env: dict[str, str] | None = None) -> list[tuple[str | None, str, int]]:
    """Splits a comma-separated address list, expanding $(VAR) references from `env`."""
    if env:
        value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
    out = []
    for part in value.split(","):
        m = ADDRESS_RE.match(part.strip())
        assert m, f"not an address: {part!r} (in {value!r})"
        out.append((m.group("system"), m.group("host"), int(m.group("port"))))
    return out


# ------------------------------------------------------------------------------------------------
# Fakes on PATH that record their calls (one JSON object per line: tool, argv, cwd, ...

FAKE_HEADER = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
record = {{"tool": os.path.basename(sys.argv[0]), "argv": args, "cwd": os.getcwd()}}
"""
FAKE_LOG_CALL = r"""
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\n")
"""


def write_fake(bin_dir: Path, name: str, body: str, record: str = "") -> Path:
    """A fake `name` that logs its call (tool, argv, cwd) to $FAKE_LOG, then runs `body`.
    `record` is code that may add keys to the dict `record` first (what the fake saw)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(FAKE_HEADER.format(python=sys.executable) + record + FAKE_LOG_CALL + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def read_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def tool_dir(tmp: Path, tools: list[str]) -> Path:
    """A bin dir with symlinks to the given system tools only (to run a script without kubectl)."""
    d = tmp / "sysbin"
    d.mkdir(parents=True, exist_ok=True)
    for t in tools:
        for base in ("/usr/bin", "/bin", "/usr/local/bin"):
            src = Path(base) / t
            if src.exists():
                if not (d / t).exists():
                    (d / t).symlink_to(src)
                break
        else:
            raise FileNotFoundError(t)
    return d
