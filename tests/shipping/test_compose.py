"""docker/docker-compose.yaml: valid against the Compose specification, the services issue 7
lists, and wired by the same environment variables as the Kubernetes manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipping import (
    COMPOSE,
    IMAGE_PREFIX,
    MEMBER_PORT,
    MEMBERS,
    MONGO_URL,
    PERSISTENT,
    SEED_PORT,
    TAG,
    base_docs,
    env_map,
    find,
    is_own_image,
    load_compose,
    parse_addresses,
    service_of_image,
)

COMPOSE_DOC = load_compose()
SVCS = COMPOSE_DOC["services"]
OWN = {name: s for name, s in SVCS.items() if is_own_image(s["image"])}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True
    )


def test_compose_matches_the_compose_specification():
    r = check_jsonschema(COMPOSE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_schema_check_can_fail(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period: 35s", "stop_grace_periode: 35s", 1))
    r = check_jsonschema(bad)
    assert r.returncode != 0 and "stop_grace_periode" in r.stdout + r.stderr


def test_compose_has_the_services_of_the_issue():
    images = sorted(s["image"] for s in OWN.values())
    assert images == sorted(
        [f"{IMAGE_PREFIX}/{s}:{TAG}" for s in ("lighthouse", "trade-processor", "trade-processor", "traders", "pricing", "pricing-web")]
    ), "lighthouse, two trade-processors, traders, pricing, pricing-web"
    assert SVCS["mongodb"]["image"].startswith("mongo:")
    assert SVCS["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert "16686:16686" in SVCS["jaeger"]["ports"], "Jaeger UI on the host"
    assert "8080:80" in SVCS["pricing-web"]["ports"], "the dashboard on port 8080 of the host"
    for name, s in OWN.items():
        assert s.get("pull_policy") == "never", f"{name}: local images are never pulled"
        assert s.get("stop_grace_period") == "35s", f"{name}: same grace period as Kubernetes"


def k8s_container(svc: str) -> dict:
    kind = "Deployment" if svc == "pricing-web" else "StatefulSet"
    return find(base_docs(), kind, svc).body["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", sorted(OWN))
def test_compose_sets_the_same_variables_as_kubernetes(name):
    env = OWN[name]["environment"]
    svc = service_of_image(OWN[name]["image"])
    k8s_env = env_map(k8s_container(svc))
    assert set(env) == set(k8s_env), (
        f"compose {name} and k8s {svc} differ: only compose {sorted(set(env) - set(k8s_env))}, "
        f"only k8s {sorted(set(k8s_env) - set(env))}"
    )
    for same in ("ACTORSYSTEM", "LOG_FORMAT", "HTTP_PORT", "MANAGEMENT_PORT", "MANAGEMENT_HOST", "OTEL_SERVICE_NAME",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "MONGO_CONNECTION_STR", "CLUSTER_PORT"):
        if same in env:
            assert str(env[same]) == k8s_env[same]["value"], f"compose {name}: {same}"


@pytest.mark.parametrize("name", sorted(n for n, s in OWN.items() if service_of_image(s["image"]) in MEMBERS))
def test_compose_member_addresses(name):
    s = OWN[name]
    env = s["environment"]
    svc = service_of_image(s["image"])
    assert env["CLUSTER_IP"] == name == s["hostname"], f"{name}: CLUSTER_IP is the service's own name"
    assert env["POD_NAME"] == name
    assert env["CLUSTER_PORT"] == str(SEED_PORT if svc == "lighthouse" else MEMBER_PORT)
    lighthouse_port = int(SVCS["lighthouse"]["environment"]["CLUSTER_PORT"])
    assert parse_addresses(env["CLUSTER_SEEDS"]) == [("AkkaTrader", "lighthouse", lighthouse_port)]
    if svc in PERSISTENT:
        assert env["MONGO_CONNECTION_STR"] == MONGO_URL
        assert s["depends_on"]["mongodb"]["condition"] == "service_healthy", f"{name}: wait for MongoDB"
    else:
        assert "MONGO_CONNECTION_STR" not in env
    if svc != "lighthouse":
        assert "lighthouse" in s["depends_on"], f"{name}: starts after the seed"


def test_compose_pricing_web_contacts_the_pricing_node():
    env = SVCS["pricing-web"]["environment"]
    pricing_port = int(SVCS["pricing"]["environment"]["CLUSTER_PORT"])
    assert parse_addresses(env["CLUSTER_CONTACTS"]) == [("AkkaTrader", "pricing", pricing_port)]
    assert env["HTTP_PORT"] == "80"
    assert SVCS["pricing-web"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0


def test_compose_secrets_are_the_same_everywhere():
    cookies = {str(s["environment"]["CLUSTER_COOKIE"]) for s in OWN.values()}
    assert len(cookies) == 1 and next(iter(cookies)).startswith("${CLUSTER_COOKIE:-"), (
        "one cookie for all nodes, overridable from the environment"
    )
