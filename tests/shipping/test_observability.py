"""Prometheus and Grafana for the cluster (issue 8): both deploy variants and docker-compose scrape
every node's /metrics, and Grafana shows the one dashboard k8s/environment/grafana-dashboard.json.

The dashboard's metric names are checked against the Rust side by crates/telemetry's own tests
(tests/dashboard.rs), which render every instrument and compare.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from shipping import (
    COMPOSE,
    K8S,
    MANAGEMENT_PORT,
    MEMBERS,
    REPO,
    base_docs,
    containers,
    discovery_docs,
    find,
    load_compose,
    pod_spec,
)

DASHBOARD = K8S / "environment" / "grafana-dashboard.json"
SETS = {"seeds": base_docs(), "kubernetes-api": discovery_docs()}


def prometheus_config(docs) -> dict:
    cm = find(docs, "ConfigMap", "prometheus-config")
    return yaml.safe_load(cm.body["data"]["prometheus.yml"])


def keep_rule(config: dict) -> re.Pattern:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "akka-cqrs"]
    (keep,) = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["source_labels"] == [
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
        "__meta_kubernetes_pod_container_port_name",
        "__meta_kubernetes_pod_label_app",
    ]
    # Prometheus anchors relabel regexes at both ends.
    return re.compile(f"^(?:{keep['regex']})$")


@pytest.mark.parametrize("variant", SETS)
def test_prometheus_scrapes_the_management_port_of_every_member_and_pricing_web(variant):
    docs = SETS[variant]
    rule = keep_rule(prometheus_config(docs))
    scraped = {}
    for w in [d for d in docs if d.kind in ("Deployment", "StatefulSet")]:
        labels = w.body["spec"]["template"]["metadata"]["labels"]
        for c in containers(w):
            for p in c.get("ports", []):
                key = ";".join([labels.get("app.kubernetes.io/part-of", ""), p.get("name", ""), labels.get("app", "")])
                if rule.match(key):
                    scraped.setdefault(labels["app"], []).append(p["containerPort"])
    for member in MEMBERS:
        assert scraped.get(member) == [MANAGEMENT_PORT], f"{variant}: {member} scraped on {scraped.get(member)}"
    assert scraped.get("pricing-web") == [80]
    assert set(scraped) == {*MEMBERS, "pricing-web"}, f"nothing else is scraped: {sorted(scraped)}"


@pytest.mark.parametrize("variant", SETS)
def test_prometheus_may_list_pods_and_nothing_else(variant):
    docs = SETS[variant]
    role = find(docs, "Role", "prometheus-pod-reader")
    assert role.body["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = find(docs, "RoleBinding", "prometheus-pod-reader")
    assert binding.body["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "akka-cqrs"}]
    prom = find(docs, "Deployment", "prometheus")
    assert pod_spec(prom)["serviceAccountName"] == "prometheus"
    assert pod_spec(find(docs, "Deployment", "grafana")).get("automountServiceAccountToken") is False


def test_grafana_configmap_holds_the_dashboard_file_verbatim():
    dashboard = json.loads(DASHBOARD.read_text())
    cm = find(base_docs(), "ConfigMap", "grafana-dashboards")
    assert json.loads(cm.body["data"]["akka-cqrs.json"]) == dashboard, (
        "k8s/environment/grafana.yaml embeds an outdated copy of grafana-dashboard.json"
    )
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            assert t["expr"].strip(), f"panel {panel['title']}: empty query"


def test_grafana_datasources_point_at_the_prometheus_and_jaeger_services():
    docs = base_docs()
    cm = find(docs, "ConfigMap", "grafana-provisioning")
    sources = {d["type"]: d["url"] for d in yaml.safe_load(cm.body["data"]["datasources.yaml"])["datasources"]}
    prom_port = find(docs, "Service", "prometheus").body["spec"]["ports"][0]["port"]
    jaeger_ports = {p["name"]: p["port"] for p in find(docs, "Service", "jaeger").body["spec"]["ports"]}
    assert sources == {
        "prometheus": f"http://prometheus:{prom_port}",
        "jaeger": f"http://jaeger:{jaeger_ports['ui']}",
    }
    compose_sources = yaml.safe_load((REPO / "docker" / "grafana" / "datasources.yaml").read_text())
    assert yaml.safe_load(cm.body["data"]["datasources.yaml"]) == compose_sources, "same datasources in compose"


def test_compose_prometheus_scrapes_every_node_and_grafana_mounts_the_dashboard():
    compose = load_compose()
    svcs = compose["services"]
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "akka-cqrs"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = set()
    for name, svc in svcs.items():
        image = svc.get("image", "")
        if not image.startswith("akka-cqrs-rs/"):
            continue
        if image.startswith("akka-cqrs-rs/pricing-web:"):
            expected.add(f"{name}:{svc['environment']['HTTP_PORT']}")
        else:
            expected.add(f"{name}:{svc['environment']['MANAGEMENT_PORT']}")
    assert targets == expected
    mounts = svcs["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    grafana_mounts = [v.split(":")[0] for v in svcs["grafana"]["volumes"]]
    for source in grafana_mounts:
        assert (COMPOSE.parent / source).resolve().is_file(), f"grafana mounts a missing file {source}"
    assert (COMPOSE.parent / "../k8s/environment/grafana-dashboard.json").resolve() in [
        (COMPOSE.parent / s).resolve() for s in grafana_mounts
    ]
