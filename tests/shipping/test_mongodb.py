"""Every MongoDB the manifests start satisfies what the journal requires.

The MongoDB journal (crates/persistence-mongodb) writes each batch in a multi-document
transaction, which a standalone mongod refuses. So wherever the cluster runs (docker-compose as
users run it, docker-compose with the container tests' override, both Kubernetes variants):

- every MongoDB is a replica set (`--replSet <name>`), or the SecantusDB stand-in (which reports
  itself as a one-node replica set);
- something initiates the set, idempotently (a healthcheck or a postStart hook: `rs.initiate`
  only when `rs.status()` says it is not initiated yet), with member addresses clients resolve;
- MongoDB is healthy/ready only once it can take writes: PRIMARY (`isWritablePrimary`), or, for
  the stand-in, answering a ping; the services wait for that (compose `service_healthy`);
- every MONGO_CONNECTION_STR given to a service points at that MongoDB (a host that is its
  service, its port) and names the replica set (`replicaSet=<name>`) or connects directly
  (`directConnection=true`, required for the stand-in, which advertises the address it binds).

The checks collect problems instead of stopping at the first, and each kind of problem is shown
to be caught on a broken copy of the real files.
"""

from __future__ import annotations

import copy
import re
import shlex
from urllib.parse import parse_qs, urlsplit

import pytest

from shipping import (
    COMPOSE,
    COMPOSE_TEST,
    CRATES_DIR,
    SECANTUSDB_IMAGE_NAME,
    WORKLOAD_KINDS,
    Doc,
    base_docs,
    compose_config,
    containers,
    discovery_docs,
    env_map,
    is_own_image,
    selector_matches,
)

MONGO_PORT = 27017


def is_mongo_image(image: str) -> bool:
    return image == "mongo" or image.startswith(("mongo:", "mongo@"))


def is_stand_in(image: str) -> bool:
    return image.startswith(SECANTUSDB_IMAGE_NAME + ":")


def as_args(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in an argument list."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


INITIATE_GUARDED = re.compile(
    r"try\s*\{\s*rs\.status\(\)[^{}]*\}\s*catch\s*\(\s*\w*\s*\)\s*\{[^{}]*?rs\.initiate\(", re.S
)


def initiation_problems(script: str, where: str, set_name: str, members: list[str]) -> list[str]:
    """`script` (mongosh JavaScript, possibly inside a shell command) must initiate `set_name`
    with exactly `members`, and only when the set is not initiated yet."""
    if "rs.initiate(" not in script:
        return [f"{where}: nothing initiates the replica set {set_name} (rs.initiate)"]
    out = []
    if not INITIATE_GUARDED.search(script):
        out.append(f"{where}: rs.initiate is not guarded by `try {{ rs.status() }} catch` (not idempotent)")
    m = re.search(r"rs\.initiate\(\s*\{\s*_id\s*:\s*[\"'](\w+)[\"']", script)
    if not m or m.group(1) != set_name:
        out.append(f"{where}: rs.initiate names set {m.group(1) if m else None!r}, mongod runs {set_name!r}")
    hosts = re.findall(r"host\s*:\s*[\"']([^\"']+)[\"']", script)
    if hosts != members:
        out.append(f"{where}: the set's members are {hosts}, expected {members} (the names clients resolve)")
    return out


def requires_primary(script: str) -> bool:
    """A mongosh check that fails unless this node is a writable PRIMARY."""
    return bool(re.search(r"!\s*db\.hello\(\)\.isWritablePrimary\s*\)\s*\{?\s*quit\(\s*[1-9]", script))


def pings(script: str) -> bool:
    return "ping" in script


def connection_problems(where: str, url: str, targets: dict[str, dict]) -> list[str]:
    """`targets`: host name -> {"port", "replica_set", "stand_in"} of each MongoDB by the names
    clients use for it."""
    parts = urlsplit(url)
    if parts.scheme != "mongodb":
        return [f"{where}: MONGO_CONNECTION_STR {url!r} is no mongodb:// URL"]
    out = []
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    direct = options.get("directConnection", "").lower() == "true"
    replica_set = options.get("replicaSet")
    if not parts.path.strip("/"):
        out.append(f"{where}: MONGO_CONNECTION_STR {url!r} names no database")
    for hostport in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = hostport.partition(":")
        port = int(port or MONGO_PORT)
        mongo = targets.get(host)
        if mongo is None:
            out.append(f"{where}: MONGO_CONNECTION_STR host {host!r} is no MongoDB (those are {sorted(targets)})")
            continue
        if port != mongo["port"]:
            out.append(f"{where}: MONGO_CONNECTION_STR port {port}, MongoDB {host} listens on {mongo['port']}")
        if mongo["stand_in"]:
            if not direct or replica_set:
                out.append(f"{where}: the stand-in {host} needs directConnection=true (and no replicaSet): {url}")
        elif not direct and replica_set != mongo["replica_set"]:
            out.append(
                f"{where}: MONGO_CONNECTION_STR {url!r} names replicaSet={replica_set}, "
                f"{host} runs {mongo['replica_set']!r} (or use directConnection=true)"
            )
    return out


# ------------------------------------------------------------------------------------------------
# docker-compose


def compose_mongo_problems(config: dict, label: str) -> tuple[list[str], int, int]:
    """Problems of a docker-compose model (`docker-compose config` output), the number of
    MongoDB services and the number of connection strings checked."""
    services = config["services"]
    problems: list[str] = []
    targets: dict[str, dict] = {}
    for name, s in services.items():
        image = s.get("image", "")
        if not (is_mongo_image(image) or is_stand_in(image)):
            continue
        where = f"{label} service {name}"
        args = as_args(s.get("entrypoint")) + as_args(s.get("command"))
        port = int(option(args, "--port") or MONGO_PORT)
        health = s.get("healthcheck") or {}
        test = as_args(health.get("test"))
        script = " ".join(test[1:]) if test[:1] in (["CMD"], ["CMD-SHELL"]) else " ".join(test)
        if health.get("disable") or not script:
            problems.append(f"{where}: no healthcheck (the services cannot wait for a usable MongoDB)")
        replica_set = option(args, "--replSet")
        if is_stand_in(image):
            if not pings(script):
                problems.append(f"{where}: the stand-in's healthcheck does not ping it")
        elif replica_set is None:
            problems.append(f"{where}: mongod runs standalone (no --replSet); the journal's transactions need a replica set")
        else:
            # Clients resolve the member address the set advertises: the service's name.
            problems += initiation_problems(script, f"{where} healthcheck", replica_set, [f"{name}:{port}"])
            if not requires_primary(script):
                problems.append(f"{where}: healthy before it is PRIMARY (the healthcheck must require isWritablePrimary)")
        targets[name] = {"port": port, "replica_set": replica_set, "stand_in": is_stand_in(image)}
    checked = 0
    for name, s in services.items():
        env = s.get("environment") or {}
        if "MONGO_CONNECTION_STR" not in env:
            continue
        checked += 1
        where = f"{label} service {name}"
        url = str(env["MONGO_CONNECTION_STR"])
        problems += connection_problems(where, url, targets)
        deps = s.get("depends_on") or {}
        for host in {h.split(":")[0] for h in urlsplit(url).netloc.rsplit("@", 1)[-1].split(",")} & set(targets):
            condition = deps.get(host, {}).get("condition") if isinstance(deps, dict) else None
            if condition != "service_healthy":
                problems.append(f"{where}: does not wait for {host} to be healthy (depends_on condition service_healthy)")
    return problems, len(targets), checked


COMPOSE_CASES = {"users-file": (COMPOSE,), "users-file+test-override": (COMPOSE, COMPOSE_TEST)}


@pytest.fixture(scope="module")
def compose_models():
    return {case: compose_config(*files) for case, files in COMPOSE_CASES.items()}


@pytest.mark.parametrize("case", COMPOSE_CASES)
def test_every_compose_mongodb_satisfies_the_journal(case, compose_models):
    problems, mongos, checked = compose_mongo_problems(compose_models[case], case)
    assert problems == []
    assert mongos >= 1 and checked >= 4, f"{case}: {mongos} MongoDB, {checked} connection strings: nothing checked?"


def test_the_users_file_runs_mongodb_and_the_override_the_stand_in(compose_models):
    users = compose_models["users-file"]["services"]["mongodb"]
    assert is_mongo_image(users["image"]) and option(as_args(users["command"]), "--replSet")
    tests = compose_models["users-file+test-override"]["services"]["mongodb"]
    assert is_stand_in(tests["image"])


def _broken(model: dict, edit) -> list[str]:
    model = copy.deepcopy(model)
    edit(model["services"])
    return compose_mongo_problems(model, "x")[0]


def test_compose_mongodb_check_can_fail(compose_models):
    users = compose_models["users-file"]
    tests = compose_models["users-file+test-override"]

    def standalone(s):
        s["mongodb"]["command"] = ["--bind_ip_all"]

    def unguarded(s):
        s["mongodb"]["healthcheck"]["test"] = [
            "CMD", "mongosh", "--eval", 'rs.initiate({_id: "rs0", members: [{_id: 0, host: "mongodb:27017"}]}); '
            "if (!db.hello().isWritablePrimary) { quit(1) }",
        ]

    def ping_only(s):
        s["mongodb"]["healthcheck"]["test"] = ["CMD", "mongosh", "--eval", "db.adminCommand('ping')"]

    def localhost_member(s):
        test = s["mongodb"]["healthcheck"]["test"]
        s["mongodb"]["healthcheck"]["test"] = [t.replace("mongodb:27017", "localhost:27017") for t in test]

    def no_replica_set_in_url(s):
        s["pricing-0"]["environment"]["MONGO_CONNECTION_STR"] = "mongodb://mongodb:27017/akkaTrader"

    def other_host(s):
        s["pricing-0"]["environment"]["MONGO_CONNECTION_STR"] = "mongodb://mongo:27017/akkaTrader?replicaSet=rs0"

    def no_wait(s):
        s["trade-processor-1"]["depends_on"]["mongodb"] = {"condition": "service_started"}

    problems = _broken(users, standalone)
    assert problems[0] == (
        "x service mongodb: mongod runs standalone (no --replSet); the journal's transactions need a replica set"
    )
    assert "names replicaSet=rs0, mongodb runs None" in problems[1], "and the clients expect a set it does not run"
    assert any("not guarded" in p for p in _broken(users, unguarded))
    (p1, p2) = _broken(users, ping_only)
    assert "nothing initiates" in p1 and "before it is PRIMARY" in p2
    assert any("members are ['localhost:27017'], expected ['mongodb:27017']" in p for p in _broken(users, localhost_member))
    assert _broken(users, no_replica_set_in_url) == [
        "x service pricing-0: MONGO_CONNECTION_STR 'mongodb://mongodb:27017/akkaTrader' names replicaSet=None, "
        "mongodb runs 'rs0' (or use directConnection=true)"
    ]
    assert any("host 'mongo' is no MongoDB" in p for p in _broken(users, other_host))
    assert any("does not wait for mongodb" in p for p in _broken(users, no_wait))
    # The stand-in advertises 0.0.0.0: replicaSet= discovery would fail.
    assert any("needs directConnection=true" in p for p in _broken(tests, no_replica_set_in_url))

    def stand_in_url(s):
        s["pricing-0"]["environment"]["MONGO_CONNECTION_STR"] = "mongodb://mongodb:27017/akkaTrader?replicaSet=rs0"

    assert any("needs directConnection=true" in p for p in _broken(tests, stand_in_url))


# ------------------------------------------------------------------------------------------------
# Kubernetes


def k8s_mongo_problems(docs: list[Doc], label: str) -> tuple[list[str], int, int]:
    problems: list[str] = []
    targets: dict[str, dict] = {}
    mongos = 0
    workloads = [d for d in docs if d.kind in WORKLOAD_KINDS]
    for w in workloads:
        for c in containers(w):
            image = c["image"]
            if not (is_mongo_image(image) or is_stand_in(image)):
                continue
            mongos += 1
            where = f"{label} {w.kind}/{w.name} container {c['name']}"
            args = as_args(c.get("command")) + as_args(c.get("args"))
            port = int(option(args, "--port") or MONGO_PORT)
            replica_set = option(args, "--replSet")
            ready = " ".join(as_args(c.get("readinessProbe", {}).get("exec", {}).get("command")))
            started = " ".join(as_args(c.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command")))
            service_name = w.body["spec"].get("serviceName")
            if is_stand_in(image):
                if not pings(ready):
                    problems.append(f"{where}: the stand-in's readiness does not ping it")
            elif replica_set is None:
                problems.append(f"{where}: mongod runs standalone (no --replSet); the journal's transactions need a replica set")
            else:
                if w.kind != "StatefulSet" or not service_name:
                    problems.append(f"{where}: a replica set member needs a stable name (a StatefulSet with serviceName)")
                    members = []
                else:
                    members = [f"{w.name}-{i}.{service_name}:{port}" for i in range(w.body["spec"].get("replicas", 1))]
                problems += initiation_problems(started, f"{where} postStart", replica_set, members)
                if not requires_primary(ready):
                    problems.append(f"{where}: ready before it is PRIMARY (readiness must require isWritablePrimary)")
            labels = w.body["spec"]["template"]["metadata"]["labels"]
            services = [d for d in docs if d.kind == "Service" and selector_matches(d.body["spec"].get("selector", {}), labels)]
            if service_name and service_name not in {s.name for s in services}:
                problems.append(f"{where}: no Service {service_name} selects its pods")
            named = {p.get("name") for p in c.get("ports", []) if p["containerPort"] == port} - {None}
            if not named and not any(p["containerPort"] == port for p in c.get("ports", [])):
                problems.append(f"{where}: no container port {port}")
            for svc in services:
                spec = svc.body["spec"]
                if svc.name == service_name and replica_set and spec.get("publishNotReadyAddresses") is not True:
                    problems.append(
                        f"{label} Service/{svc.name}: publishNotReadyAddresses must be true (rs.initiate checks the "
                        "member's own name resolves, before the pod is ready)"
                    )
                ports = [p["port"] for p in spec["ports"] if p.get("targetPort", p["port"]) in named | {port}]
                if ports:
                    targets[svc.name] = {"port": ports[0], "replica_set": replica_set, "stand_in": is_stand_in(image)}
    checked = 0
    for w in workloads:
        for c in containers(w):
            if not is_own_image(c["image"]) or "MONGO_CONNECTION_STR" not in env_map(c):
                continue
            checked += 1
            value = env_map(c)["MONGO_CONNECTION_STR"].get("value")
            where = f"{label} {w.kind}/{w.name}"
            if value is None:
                problems.append(f"{where}: MONGO_CONNECTION_STR is not a literal (cannot be checked)")
                continue
            problems += connection_problems(where, value, targets)
    return problems, mongos, checked


K8S_CASES = {"seeds": base_docs, "kubernetes-api": discovery_docs}


@pytest.mark.parametrize("case", K8S_CASES)
def test_every_kubernetes_mongodb_satisfies_the_journal(case):
    problems, mongos, checked = k8s_mongo_problems(K8S_CASES[case](), case)
    assert problems == []
    assert mongos >= 1 and checked >= 2, f"{case}: {mongos} MongoDB, {checked} connection strings: nothing checked?"


def test_kubernetes_mongodb_check_can_fail():
    docs = base_docs()

    def broken(edit) -> list[str]:
        copies = [Doc(d.path, d.index, copy.deepcopy(d.body)) for d in docs]
        by = {(d.kind, d.name): d.body for d in copies}
        edit(by)
        return k8s_mongo_problems(copies, "x")[0]

    def mongo_container(by):
        return by[("StatefulSet", "mongodb")]["spec"]["template"]["spec"]["containers"][0]

    def standalone(by):
        mongo_container(by)["args"] = ["--bind_ip_all"]

    def no_post_start(by):
        del mongo_container(by)["lifecycle"]

    def tcp_ready(by):
        mongo_container(by)["readinessProbe"] = {"tcpSocket": {"port": "mongodb"}}

    def hidden_while_not_ready(by):
        by[("Service", "mongodb")]["spec"]["publishNotReadyAddresses"] = False

    def three_replicas(by):
        by[("StatefulSet", "mongodb")]["spec"]["replicas"] = 3

    def plain_url(by):
        env = by[("StatefulSet", "pricing")]["spec"]["template"]["spec"]["containers"][0]["env"]
        (e,) = [e for e in env if e["name"] == "MONGO_CONNECTION_STR"]
        e["value"] = "mongodb://mongodb:27017/akkaTrader"

    assert any("runs standalone" in p for p in broken(standalone))
    assert any("nothing initiates" in p for p in broken(no_post_start))
    assert any("ready before it is PRIMARY" in p for p in broken(tcp_ready))
    assert any("publishNotReadyAddresses" in p for p in broken(hidden_while_not_ready))
    assert any("members are ['mongodb-0.mongodb:27017'], expected ['mongodb-0.mongodb:27017', 'mongodb-1" in p for p in broken(three_replicas))
    assert any("StatefulSet/pricing: MONGO_CONNECTION_STR" in p and "replicaSet=None" in p for p in broken(plain_url))


# ------------------------------------------------------------------------------------------------
# The requirement itself


@pytest.mark.crates
def test_the_journal_writes_in_transactions():
    """Why all of the above: the MongoDB journal uses multi-document transactions."""
    src = "\n".join(p.read_text() for p in (CRATES_DIR / "persistence-mongodb" / "src").rglob("*.rs"))
    assert re.search(r"\.start_transaction\(|\.with_transaction\(", src), (
        "the journal no longer uses transactions: the replica-set requirement may be relaxed"
    )
