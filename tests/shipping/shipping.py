"""Shared helpers of the shipping checks: where things are, and how to read them.

Facts fixed by DESIGN.md and issue 7 live here once (service names, image names and tag, the
namespace), so every test checks the files against the same expectations.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "docker-compose.yaml"
SCRIPTS = REPO / "scripts"

NAMESPACE = "akka-cqrs"
IMAGE_PREFIX = "akka-cqrs-rs"
TAG = "0.1.0"
SERVICES = ["lighthouse", "trade-processor", "traders", "pricing", "pricing-web"]
# Cluster members (pricing-web is a cluster client, not a member).
MEMBERS = ["lighthouse", "trade-processor", "traders", "pricing"]
# Services that persist (journal/snapshots in MongoDB).
PERSISTENT = ["trade-processor", "pricing"]
SEED_PORT = 4053
MEMBER_PORT = 5055
MANAGEMENT_PORT = 8558
SECRET_NAME = "akka-cqrs-secrets"
MONGO_URL = "mongodb://mongodb:27017/akkaTrader"
# Cargo packages and the binary each must produce.
PACKAGES = {
    "lighthouse": "lighthouse",
    "trade-processor": "trade-processor",
    "traders": "traders",
    "pricing": "pricing",
    "pricing-web": "pricing-web",
    "ctl": "tradectl",
}
DISCOVERY_ENV = [
    "CLUSTER_DISCOVERY",
    "POD_NAMESPACE",
    "CLUSTER_DISCOVERY_LABEL_SELECTOR",
    "REQUIRED_CONTACT_POINT_NR",
    "CLUSTER_DISCOVERY_PORT_NAME",
    "KUBERNETES_API_URL",
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


def load_compose() -> dict:
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


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
# Fakes on PATH that record their calls (one JSON array of argv per line).

FAKE_TEMPLATE = r"""#!PYTHON
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"argv": args, "cwd": os.getcwd()}) + "\n")
BODY
"""


def write_fake(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(FAKE_TEMPLATE.replace("PYTHON", sys.executable).replace("BODY", body))
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
