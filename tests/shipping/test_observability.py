"""Prometheus and Grafana for the cluster (issue 8): both deploy variants and docker-compose scrape
every node's /metrics, and Grafana shows the one dashboard k8s/environment/grafana-dashboard.json.

In docker-compose, Prometheus scrapes the services with names of their own as static targets and
a scaled service (traders) through DNS, one target per replica; the checks simulate Prometheus'
discovery and relabelling to see which targets, with which `service` label, it ends up with.

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
    compose_env,
    containers,
    discovery_docs,
    find,
    is_own_image,
    is_scaled,
    load_compose,
    pod_spec,
    replicas_of,
    service_of_image,
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


def relabel(rules: list[dict], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabelling (the `replace`, `keep` and `drop` actions) of one target's labels;
    None when the target is dropped."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(l, "") for l in rule.get("source_labels", []))
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep" and not m or action == "drop" and m:
            return None
        if action == "replace" and m:
            target = rule["target_label"]
            # Prometheus writes $1 / ${1}; Python's expand wants \1 / \g<1>.
            replacement = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            new = m.expand(replacement)
            if new:
                labels[target] = new
            else:
                labels.pop(target, None)
        elif action not in ("replace", "keep", "drop"):
            raise AssertionError(f"relabel action {action} is not simulated here")
    return labels


def compose_scrape_targets(job: dict, dns: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """The targets of a compose scrape job after relabelling: address -> labels. `dns` answers
    the A queries of dns_sd_configs (name -> addresses, as Docker's DNS does for a service)."""
    found = []
    for sc in job.get("static_configs", []):
        found += [{"__address__": t, **sc.get("labels", {})} for t in sc["targets"]]
    for sd in job.get("dns_sd_configs", []):
        assert sd.get("type") == "A" and "port" in sd, f"A records need the port: {sd}"
        for name in sd["names"]:
            found += [{"__address__": f"{ip}:{sd['port']}", "__meta_dns_name": name} for ip in dns.get(name, [])]
    out = {}
    for labels in found:
        after = relabel(job.get("relabel_configs", []), labels)
        if after is not None:
            assert after["__address__"] not in out, f"scraped twice: {after['__address__']}"
            out[after["__address__"]] = {k: v for k, v in after.items() if not k.startswith("__")}
    return out


def test_compose_prometheus_scrapes_every_node_and_grafana_mounts_the_dashboard():
    compose = load_compose()
    svcs = compose["services"]
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "akka-cqrs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # Docker's DNS answers a scaled service's name with one address per replica; each replica
    # must be scraped, however many there are.
    dns, expected = {}, {}
    for name, svc in svcs.items():
        image = svc.get("image", "")
        if not is_own_image(image):
            continue
        env = compose_env(svc)
        port = env["HTTP_PORT"] if image.startswith("akka-cqrs-rs/pricing-web:") else env["MANAGEMENT_PORT"]
        if is_scaled(svc):
            dns[name] = [f"10.0.9.{i}" for i in range(1, replicas_of(svc) + 2)]  # one more: scaled up
            hosts = dns[name]
        else:
            hosts = [name]
        for host in hosts:
            expected[f"{host}:{port}"] = {"service": service_of_image(image)}
    assert compose_scrape_targets(job, dns) == expected
    assert any(sd["names"] == ["traders"] for sd in job.get("dns_sd_configs", [])), "traders through DNS"
    mounts = svcs["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    grafana_mounts = [v.split(":")[0] for v in svcs["grafana"]["volumes"]]
    for source in grafana_mounts:
        assert (COMPOSE.parent / source).resolve().is_file(), f"grafana mounts a missing file {source}"
    assert (COMPOSE.parent / "../k8s/environment/grafana-dashboard.json").resolve() in [
        (COMPOSE.parent / s).resolve() for s in grafana_mounts
    ]


def test_compose_scrape_check_can_fail():
    """A scaled service scraped through its name as a static target reaches one replica only, and
    a DNS target without the relabelling has no `service` label: both are caught."""
    job = {"static_configs": [{"targets": ["traders:8558"], "labels": {"service": "traders"}}]}
    assert compose_scrape_targets(job, {"traders": ["10.0.9.1", "10.0.9.2"]}) == {"traders:8558": {"service": "traders"}}
    job = {"dns_sd_configs": [{"names": ["traders"], "type": "A", "port": 8558}]}
    assert compose_scrape_targets(job, {"traders": ["10.0.9.1"]}) == {"10.0.9.1:8558": {}}


def test_prometheus_config_has_one_job_for_the_cluster():
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    assert jobs == ["akka-cqrs", "prometheus"], "the dashboard's queries expect job akka-cqrs, as in Kubernetes"
    assert prometheus_config(base_docs())["scrape_configs"][0]["job_name"] == "akka-cqrs"
