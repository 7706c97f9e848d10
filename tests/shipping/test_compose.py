"""docker/docker-compose.yaml (the users' file) and docker/docker-compose.test.yaml (the container
tests' override): valid against the Compose specification and accepted by docker-compose 1.29,
the topology of the Kubernetes manifests, wired by the same environment variables.

Values are read as docker-compose reads them in an empty shell: `${VAR:-default}` is the default.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shipping import (
    COMPOSE,
    COMPOSE_ENV_FILE,
    COMPOSE_TEST,
    IMAGE_PREFIX,
    MANAGEMENT_PORT,
    MEMBER_PORT,
    MEMBERS,
    MONGO_TEST_URL,
    MONGO_URL,
    PERSISTENT,
    REPLICAS,
    SEED_PORT,
    SERVICES,
    TAG,
    base_docs,
    compose_config,
    compose_env,
    docker_compose,
    env_map,
    find,
    interpolate,
    is_own_image,
    is_scaled,
    load_compose,
    parse_addresses,
    replicas_of,
    service_of_image,
)

COMPOSE_DOC = load_compose()
SVCS = COMPOSE_DOC["services"]
OWN = {name: s for name, s in SVCS.items() if is_own_image(s["image"])}
TEST_DOC = load_compose(COMPOSE_TEST)
TEST_SVCS = TEST_DOC["services"]


def env_of(name: str) -> dict[str, str]:
    return compose_env(SVCS[name])


def named(svc: str) -> list[str]:
    """The compose services running `svc`'s image, in file order."""
    return [n for n, s in OWN.items() if service_of_image(s["image"]) == svc]


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: (v or {}).get("condition", "service_started") for d, v in deps.items()}


def published(service: dict) -> list[str]:
    return [interpolate(str(p)) for p in service.get("ports", [])]


# ------------------------------------------------------------------------------------------------
# The files are valid, for the schema and for the docker-compose the tests run


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True
    )


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_TEST], ids=lambda p: p.name)
def test_compose_matches_the_compose_specification(path):
    r = check_jsonschema(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_schema_check_can_fail(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period: 35s", "stop_grace_periode: 35s", 1))
    r = check_jsonschema(bad)
    assert r.returncode != 0 and "stop_grace_periode" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "files", [(COMPOSE,), (COMPOSE, COMPOSE_TEST)], ids=["users-file", "users-file+test-override"]
)
def test_docker_compose_accepts_the_files(files):
    r = docker_compose("config", "-q", files=files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_compose_check_can_fail(tmp_path):
    """docker-compose 1.29 rejects the top-level `name:` the Compose specification allows."""
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text("name: akka-cqrs\n" + COMPOSE.read_text())
    assert check_jsonschema(bad).returncode == 0, "valid for the specification..."
    r = docker_compose("config", "-q", files=(bad,))
    assert r.returncode != 0 and "'name' does not match" in r.stdout + r.stderr, "...but not for docker-compose 1.29"


def test_project_name_comes_from_the_env_file(tmp_path):
    for doc, path in ((COMPOSE_DOC, COMPOSE), (TEST_DOC, COMPOSE_TEST)):
        assert "name" not in doc, f"{path.name}: no top-level `name:` (docker-compose 1.29 rejects it)"
        assert "version" not in doc, f"{path.name}: no obsolete top-level `version:`"
    settings = dict(
        l.split("=", 1) for l in COMPOSE_ENV_FILE.read_text().splitlines() if l.strip() and not l.startswith("#")
    )
    assert settings == {"COMPOSE_PROJECT_NAME": "akka-cqrs"}
    # docker-compose reads that .env from the folder of the first file, wherever it is run from.
    probe = tmp_path / "probe.yaml"
    probe.write_text("services:\n  pricing-web:\n    labels:\n      project: ${COMPOSE_PROJECT_NAME}\n")
    r = docker_compose("config", files=(COMPOSE, probe), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["services"]["pricing-web"]["labels"] == {"project": "akka-cqrs"}


# ------------------------------------------------------------------------------------------------
# The users' file: the topology of the Kubernetes manifests


def test_compose_has_the_topology_of_the_manifests():
    replicas = {svc: sum(replicas_of(OWN[n]) for n in named(svc)) for svc in SERVICES}
    assert {s: replicas[s] for s in MEMBERS} == {s: REPLICAS[s] for s in MEMBERS}, (
        "as many members of each kind as the Kubernetes manifests run"
    )
    assert replicas["pricing-web"] == 1
    for svc in SERVICES:
        names = named(svc)
        if svc == "traders":
            # One scaled service: its replicas are interchangeable order generators.
            assert names == ["traders"] and is_scaled(OWN["traders"]), "traders: one service with `scale:`"
        elif svc == "pricing-web":
            assert names == ["pricing-web"]
        else:
            # Members others must address (seeds, receptionists, shard hosts) get names of their
            # own, like the StatefulSet's pods.
            assert names == [f"{svc}-{i}" for i in range(REPLICAS[svc])], f"{svc}: {names}"
    for name, s in OWN.items():
        assert s["image"] == f"{IMAGE_PREFIX}/{service_of_image(s['image'])}:{TAG}"
        assert s.get("pull_policy") == "never", f"{name}: local images are never pulled"
        assert s.get("stop_grace_period") == "35s", f"{name}: same grace period as Kubernetes"
        assert s.get("restart") == "unless-stopped", f"{name}: a node that stopped by itself starts again"


def test_compose_third_party_services_and_published_ports():
    assert SVCS["mongodb"]["image"].startswith("mongo:")
    assert SVCS["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    # Host ports are overridable from the environment; the defaults are the documented ones.
    assert published(SVCS["jaeger"]) == ["16686:16686"], "Jaeger UI on the host"
    assert "${JAEGER_UI_PORT:-16686}:16686" in SVCS["jaeger"]["ports"]
    assert published(SVCS["pricing-web"]) == ["8080:80"], "the dashboard on port 8080 of the host"
    assert "${DASHBOARD_PORT:-8080}:80" in SVCS["pricing-web"]["ports"]
    assert published(SVCS["lighthouse-0"]) == [f"{MANAGEMENT_PORT}:{MANAGEMENT_PORT}"], "tradectl from the host"
    assert f"${{MANAGEMENT_PORT:-{MANAGEMENT_PORT}}}:{MANAGEMENT_PORT}" in SVCS["lighthouse-0"]["ports"]
    for name, s in SVCS.items():
        if name not in ("lighthouse-0", "pricing-web", "jaeger", "prometheus", "grafana"):
            assert not s.get("ports"), f"{name}: publishes {s['ports']} (and would clash when scaled)"
    hosts = [p.split(":")[0] for s in SVCS.values() for p in published(s)]
    assert len(hosts) == len(set(hosts)), f"two services publish the same host port: {hosts}"


def k8s_container(svc: str) -> dict:
    kind = "Deployment" if svc == "pricing-web" else "StatefulSet"
    return find(base_docs(), kind, svc).body["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", sorted(OWN))
def test_compose_sets_the_same_variables_as_kubernetes(name):
    env = env_of(name)
    svc = service_of_image(OWN[name]["image"])
    k8s_env = env_map(k8s_container(svc))
    expected = set(k8s_env)
    if is_scaled(OWN[name]):
        # Replicas share one environment, so no POD_NAME (it would be the same for all): the
        # binaries then name themselves after HOSTNAME, the container's own id.
        expected.discard("POD_NAME")
        assert "POD_NAME" not in env, f"{name}: a POD_NAME shared by every replica"
    assert set(env) == expected, (
        f"compose {name} and k8s {svc} differ: only compose {sorted(set(env) - expected)}, "
        f"only k8s {sorted(expected - set(env))}"
    )
    for same in ("ACTORSYSTEM", "LOG_FORMAT", "HTTP_PORT", "MANAGEMENT_PORT", "MANAGEMENT_HOST", "OTEL_SERVICE_NAME",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "MONGO_CONNECTION_STR", "CLUSTER_PORT"):
        if same in env:
            assert env[same] == k8s_env[same]["value"], f"compose {name}: {same}"
    if "APP_VERSION" in env:
        tag = OWN[name]["image"].rsplit(":", 1)[1]
        assert env["APP_VERSION"] == tag, f"compose {name}: APP_VERSION must be the image tag {tag!r}"


def seed_addresses() -> list[tuple[str, str, int]]:
    return [("AkkaTrader", n, int(env_of(n)["CLUSTER_PORT"])) for n in named("lighthouse")]


@pytest.mark.parametrize("name", sorted(n for n, s in OWN.items() if service_of_image(s["image"]) in MEMBERS))
def test_compose_member_addresses(name):
    s = OWN[name]
    env = env_of(name)
    svc = service_of_image(s["image"])
    if is_scaled(s):
        # Every replica advertises its own container address, resolved at start.
        assert env["CLUSTER_IP"] == "<getHostAddress>", f"{name}: replicas cannot share a CLUSTER_IP"
        assert "hostname" not in s and "container_name" not in s, f"{name}: replicas cannot share a name"
    else:
        assert env["CLUSTER_IP"] == name == s["hostname"] == env["POD_NAME"], (
            f"{name}: CLUSTER_IP is the service's own name"
        )
    assert env["CLUSTER_PORT"] == str(SEED_PORT if svc == "lighthouse" else MEMBER_PORT)
    assert parse_addresses(env["CLUSTER_SEEDS"]) == seed_addresses(), f"{name}: seeds are the lighthouses"
    if svc in PERSISTENT:
        assert env["MONGO_CONNECTION_STR"] == MONGO_URL
        assert depends_on(s).get("mongodb") == "service_healthy", f"{name}: wait for MongoDB"
    else:
        assert "MONGO_CONNECTION_STR" not in env
    if svc != "lighthouse":
        assert named("lighthouse")[0] in depends_on(s), f"{name}: starts after the first seed"


def test_compose_first_seed_recognises_itself():
    """Only the first seed may form the cluster; it knows it is the first by comparing its own
    address with the first entry of CLUSTER_SEEDS."""
    first = named("lighthouse")[0]
    env = env_of(first)
    assert seed_addresses()[0] == (env["ACTORSYSTEM"], env["CLUSTER_IP"], int(env["CLUSTER_PORT"]))
    assert parse_addresses(env["CLUSTER_SEEDS"])[0] == seed_addresses()[0]


def test_compose_pricing_web_contacts_the_pricing_nodes():
    web = SVCS["pricing-web"]
    env = env_of("pricing-web")
    pricing = named("pricing")
    assert len(pricing) == REPLICAS["pricing"]
    host, port = env["CLUSTER_CONTACTS_SERVICE"].rsplit(":", 1)
    for n in pricing:
        # the name resolves to every pricing node, as the headless Service's does in Kubernetes
        aliases = SVCS[n].get("networks", {}).get("default", {}).get("aliases", [])
        assert host in aliases, f"{n} must answer to {host!r} (a network alias) for pricing-web"
        assert int(port) == int(env_of(n)["CLUSTER_PORT"]), f"{n}: the contact port"
    assert "CLUSTER_CONTACTS" not in env, "one way of naming the contacts"
    assert set(pricing) <= set(depends_on(web))
    assert env["HTTP_PORT"] == "80"
    assert web["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0
    for not_a_member in ("CLUSTER_SEEDS", "CLUSTER_IP", "CLUSTER_PORT", "MONGO_CONNECTION_STR"):
        assert not_a_member not in env, f"pricing-web is not a member: no {not_a_member}"


def test_compose_secrets_are_the_same_everywhere():
    for var, members_only in (("CLUSTER_COOKIE", False), ("MANAGEMENT_TOKEN", True)):
        raw = {
            str(s["environment"][var])
            for s in OWN.values()
            if not members_only or service_of_image(s["image"]) in MEMBERS
        }
        assert len(raw) == 1 and next(iter(raw)).startswith(f"${{{var}:-"), (
            f"one {var} for all nodes, overridable from the environment"
        )


def test_compose_services_only_depend_on_services_that_exist():
    for name, s in SVCS.items():
        for dep in depends_on(s):
            assert dep in SVCS, f"{name} depends on unknown service {dep}"


# ------------------------------------------------------------------------------------------------
# The test override


def test_override_only_overrides_services_of_the_users_file():
    extra = sorted(set(TEST_SVCS) - set(SVCS))
    assert not extra, f"docker-compose.test.yaml adds services the users' file does not have: {extra}"


def test_override_never_changes_the_images_of_the_five_services():
    merged = compose_config(COMPOSE, COMPOSE_TEST)["services"]
    for name, s in OWN.items():
        override = TEST_SVCS.get(name, {})
        for key in ("image", "build", "entrypoint", "command", "pull_policy"):
            assert key not in override, f"docker-compose.test.yaml changes {name}'s {key}"
        assert merged[name]["image"] == s["image"], f"{name}: the tests run another image than users do"


def test_override_replaces_mongodb_with_the_stand_in():
    mongo = TEST_SVCS["mongodb"]
    assert mongo["image"].startswith(f"{IMAGE_PREFIX}/secantusdb:") and mongo["pull_policy"] == "never"
    merged = compose_config(COMPOSE, COMPOSE_TEST)["services"]
    for name, s in merged.items():
        if "MONGO_CONNECTION_STR" in s.get("environment", {}):
            assert s["environment"]["MONGO_CONNECTION_STR"] == MONGO_TEST_URL, f"{name}: connects to the stand-in"


def test_override_leaves_out_the_observability_services_by_default():
    merged = compose_config(COMPOSE, COMPOSE_TEST)["services"]
    profiled = {n for n, s in merged.items() if s.get("profiles")}
    assert profiled == {"jaeger", "prometheus", "grafana"}
    for n in profiled:
        assert merged[n]["profiles"] == ["observability"]
    for name, s in merged.items():
        if name in profiled:
            continue
        assert not set(depends_on(s)) & profiled, f"{name} depends on a service that does not start by default"
        env = s.get("environment", {})
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            assert env.get("OTEL_SDK_DISABLED") == "true", f"{name}: exports traces to a Jaeger that is not there"


def test_override_traders_generate_load_and_keep_a_blotter():
    from test_dockerfile import BY_NAME

    merged = compose_config(COMPOSE, COMPOSE_TEST)["services"]["traders"]
    env = merged["environment"]
    assert int(env["ORDERS_PER_SECOND"]) > 0
    assert "${TRADERS_ORDERS_PER_SECOND:-" in str(TEST_SVCS["traders"]["environment"]["ORDERS_PER_SECOND"])
    blotter = env["BLOTTER_DIR"]
    targets = {v.split(":")[1]: v.split(":")[0] for v in merged.get("volumes", [])}
    assert targets.get(blotter) == "blotters", f"BLOTTER_DIR {blotter} is on the volume `blotters`"
    assert "blotters" in TEST_DOC.get("volumes", {})
    assert TEST_SVCS["traders"]["volumes"] == [f"${{BLOTTER_HOST_DIR:-blotters}}:{blotter}"], (
        "the volume, or the host folder BLOTTER_HOST_DIR"
    )
    # The image creates that folder for its user (a new named volume copies its ownership).
    (workdir,) = BY_NAME["runtime"].of("WORKDIR")
    assert blotter == f"{workdir}/blotter"
    assert re.search(rf"mkdir -p {re.escape(blotter)}\b", " ".join(BY_NAME["runtime"].of("RUN")))
