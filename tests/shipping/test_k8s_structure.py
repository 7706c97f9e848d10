"""What the Kubernetes manifests must say, beyond schema validity (issue 7, k8s/README.md).

Each test reads the manifests and checks one property for every resource it applies to, computing
expected values from other manifests where they depend on each other (seed list from the
lighthouse StatefulSet, contact points from the pricing StatefulSet, MongoDB and Jaeger addresses
from their Services, secret keys from the Secret), so a change in one place that is not followed
elsewhere fails here rather than in a cluster.
"""

from __future__ import annotations

import copy
import re

import pytest

from shipping import (
    CLUSTER_SCOPED_KINDS,
    DISCOVERY_ENV,
    IMAGE_PREFIX,
    K8S,
    MANAGEMENT_PORT,
    MEMBER_PORT,
    MEMBERS,
    MONGO_URL,
    NAMESPACE,
    PERSISTENT,
    REPLICAS,
    SECRET_NAME,
    SEED_PORT,
    SERVICES,
    TAG,
    WORKLOAD_KINDS,
    Doc,
    base_docs,
    containers,
    discovery_docs,
    docs_in,
    env_list,
    env_map,
    env_value,
    find,
    is_own_image,
    named_port,
    parse_addresses,
    pod_spec,
    selector_matches,
    service_of_image,
)

BASE = base_docs()
DISCOVERY = discovery_docs()
SETS = {"seeds": BASE, "kubernetes-api": DISCOVERY}
ALL = docs_in(K8S)

def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d.kind in WORKLOAD_KINDS]


def own_workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in workloads(docs) if any(is_own_image(c["image"]) for c in containers(d))]


def own_container(doc: Doc) -> dict:
    mine = [c for c in containers(doc) if is_own_image(c["image"])]
    assert len(mine) == 1, f"{doc}: expected one akka-cqrs-rs container"
    return mine[0]


def member_workloads(docs):
    return [d for d in own_workloads(docs) if service_of_image(own_container(d)["image"]) in MEMBERS]


def params(fn):
    """Parametrize over (set name, workload) for our own workloads in both deploy variants."""
    cases = [(name, d) for name, docs in SETS.items() for d in fn(docs)]
    return pytest.mark.parametrize("variant,doc", cases, ids=[f"{n}:{d.name}" for n, d in cases])


# ------------------------------------------------------------------------------------------------
# Namespace, names, labels


def test_namespace_manifest():
    ns = find(ALL, "Namespace", NAMESPACE)
    assert ns.path == K8S / "namespace.yaml"


@pytest.mark.parametrize("doc", ALL, ids=str)
def test_every_namespaced_resource_is_in_the_namespace(doc):
    if doc.kind in CLUSTER_SCOPED_KINDS:
        assert "namespace" not in doc.body["metadata"], f"{doc}: cluster-scoped resource with a namespace"
    else:
        assert doc.body["metadata"].get("namespace") == NAMESPACE, f"{doc}: metadata.namespace must be {NAMESPACE}"
    assert doc.body["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "akka-cqrs", (
        f"{doc}: label app.kubernetes.io/part-of=akka-cqrs missing (the stop script and operators select on it)"
    )


@pytest.mark.parametrize("variant", SETS)
def test_no_duplicate_resources_in_a_deploy(variant):
    seen = {}
    for d in SETS[variant]:
        key = (d.kind, d.name)
        assert key not in seen, f"{d} duplicates {seen[key]} in the {variant} deploy"
        seen[key] = d


@pytest.mark.parametrize("variant", SETS)
def test_every_service_has_its_workload_with_the_replicas_of_the_issue(variant):
    docs = SETS[variant]
    for svc in SERVICES:
        kind = "Deployment" if svc == "pricing-web" else "StatefulSet"
        w = find(docs, kind, svc)
        assert w.body["spec"]["replicas"] == REPLICAS[svc], f"{w}: replicas"
        assert own_container(w)["image"] == f"{IMAGE_PREFIX}/{svc}:{TAG}", f"{w}: image"
    find(docs, "StatefulSet", "mongodb")
    find(docs, "Deployment", "jaeger")
    find(docs, "Secret", SECRET_NAME)


@pytest.mark.parametrize("doc", workloads(ALL), ids=str)
def test_workload_selector_matches_its_pod_labels(doc):
    sel = doc.body["spec"]["selector"]["matchLabels"]
    labels = doc.body["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(sel, labels), f"{doc}: selector {sel} does not select its own pods {labels}"


@pytest.mark.parametrize("variant", SETS)
def test_every_service_selects_pods_and_its_target_ports_exist(variant):
    docs = SETS[variant]
    for svc in [d for d in docs if d.kind == "Service"]:
        sel = svc.body["spec"]["selector"]
        targets = [w for w in workloads(docs) if selector_matches(sel, w.body["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"{svc}: selector {sel} selects no workload"
        for port in svc.body["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in targets:
                cports = [p for c in containers(w) for p in c.get("ports", [])]
                ok = any(p.get("name") == target or p["containerPort"] == target for p in cports)
                assert ok, f"{svc}: targetPort {target!r} is no container port of {w}"


# ------------------------------------------------------------------------------------------------
# StatefulSets: headless services, DNS, disruption budgets


@pytest.mark.parametrize("variant", SETS)
def test_statefulsets_have_headless_services_publishing_not_ready_pods(variant):
    docs = SETS[variant]
    for sts in [d for d in docs if d.kind == "StatefulSet"]:
        svc = find(docs, "Service", sts.body["spec"]["serviceName"])
        assert svc.body["spec"].get("clusterIP") == "None", f"{svc}: must be headless for {sts}"
        labels = sts.body["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(svc.body["spec"]["selector"], labels), f"{svc} does not select {sts}'s pods"
        if sts.name in MEMBERS:
            # A joining node is not ready until Up, and cannot get Up unless its name resolves.
            assert svc.body["spec"].get("publishNotReadyAddresses") is True, f"{svc}: publishNotReadyAddresses"


@pytest.mark.parametrize("variant", SETS)
def test_every_own_workload_has_a_disruption_budget(variant):
    docs = SETS[variant]
    pdbs = [d for d in docs if d.kind == "PodDisruptionBudget"]
    for w in own_workloads(docs):
        labels = w.body["spec"]["template"]["metadata"]["labels"]
        hits = [p for p in pdbs if selector_matches(p.body["spec"]["selector"]["matchLabels"], labels)]
        assert len(hits) == 1, f"{w}: expected one PodDisruptionBudget, found {len(hits)}"
        spec = hits[0].body["spec"]
        if w.kind == "StatefulSet":
            assert spec.get("maxUnavailable") == 1, f"{hits[0]}: StatefulSets lose at most one pod at a time"
        else:
            assert spec.get("minAvailable", 0) >= 1 or spec.get("maxUnavailable", 99) < w.body["spec"]["replicas"]


@pytest.mark.parametrize("doc", own_workloads(BASE), ids=str)
def test_seed_based_pods_get_no_api_token(doc):
    assert pod_spec(doc).get("automountServiceAccountToken") is False, f"{doc}: automountServiceAccountToken: false"
    assert "serviceAccountName" not in pod_spec(doc)


def test_lighthouse_starts_ordered_with_seeds_and_parallel_with_discovery():
    # Seeds: lighthouse-0 must form the cluster before the others start. Discovery: all three must
    # run at once, or lighthouse-0 would wait forever for REQUIRED_CONTACT_POINT_NR contact points.
    assert find(BASE, "StatefulSet", "lighthouse").body["spec"]["podManagementPolicy"] == "OrderedReady"
    assert find(DISCOVERY, "StatefulSet", "lighthouse").body["spec"]["podManagementPolicy"] == "Parallel"


# ------------------------------------------------------------------------------------------------
# Pods of our services


@params(own_workloads)
def test_env_references_are_defined_earlier(variant, doc):
    """Kubernetes expands $(VAR) only for variables defined earlier in the same env list."""
    for c in containers(doc):
        defined: set[str] = set()
        for e in env_list(c):
            for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                assert ref in defined, f"{doc}: {e['name']} uses $({ref}) before {ref} is defined"
            defined.add(e["name"])
        names = [e["name"] for e in env_list(c)]
        assert len(names) == len(set(names)), f"{doc}: duplicate env names {names}"


@params(own_workloads)
def test_pod_basics(variant, doc):
    spec = pod_spec(doc)
    c = own_container(doc)
    svc = service_of_image(c["image"])
    assert doc.name == svc, f"{doc}: workload name differs from its image's service {svc}"
    assert spec.get("terminationGracePeriodSeconds") == 35, f"{doc}: terminationGracePeriodSeconds"
    assert env_value(c, "ACTORSYSTEM") == "AkkaTrader", f"{doc}: ACTORSYSTEM"
    pod_name = env_map(c).get("POD_NAME", {})
    assert pod_name.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", (
        f"{doc}: POD_NAME must come from the downward API (metadata.name)"
    )
    assert env_value(c, "LOG_FORMAT") == "json", f"{doc}: LOG_FORMAT=json for containers"
    assert env_value(c, "RUST_LOG"), f"{doc}: RUST_LOG"
    assert env_value(c, "OTEL_SERVICE_NAME") == svc, f"{doc}: OTEL_SERVICE_NAME"
    assert c.get("imagePullPolicy") == "IfNotPresent", f"{doc}: locally built images must not be pulled"


@params(own_workloads)
def test_secrets_come_from_the_secret(variant, doc):
    secret = find(SETS[variant], "Secret", SECRET_NAME).body
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    c = own_container(doc)
    env = env_map(c)
    wanted = {"CLUSTER_COOKIE": "cluster-cookie"}
    if doc.name in MEMBERS:
        wanted["MANAGEMENT_TOKEN"] = "management-token"
    for name, key in wanted.items():
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{doc}: {name} must come from a secretKeyRef, never a literal"
        assert ref["name"] == SECRET_NAME and ref["key"] == key and key in keys, f"{doc}: {name} -> {ref}"
    for e in env_list(c):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == SECRET_NAME and ref["key"] in keys, f"{doc}: {e['name']} references {ref}"


@params(own_workloads)
def test_otlp_endpoint_points_at_the_jaeger_service(variant, doc):
    jaeger = find(SETS[variant], "Service", "jaeger").body
    ports = {p["port"] for p in jaeger["spec"]["ports"]}
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", env_value(own_container(doc), "OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    assert m, f"{doc}: OTEL_EXPORTER_OTLP_ENDPOINT must be http://<service>:<port>"
    assert m.group(1) == "jaeger" and int(m.group(2)) in ports, f"{doc}: no such Jaeger port"


@params(member_workloads)
def test_member_cluster_address(variant, doc):
    c = own_container(doc)
    service_name = doc.body["spec"]["serviceName"]
    if variant == "seeds":
        assert env_value(c, "CLUSTER_IP") == f"$(POD_NAME).{service_name}", f"{doc}: CLUSTER_IP=$(POD_NAME).<service>"
    else:
        # Kubernetes-API discovery returns contact points as pod IPs; the lowest forms the cluster
        # only if it recognises itself, so the node must advertise its pod IP.
        ref = env_map(c)["CLUSTER_IP"].get("valueFrom", {}).get("fieldRef", {})
        assert ref.get("fieldPath") == "status.podIP", f"{doc}: CLUSTER_IP must be the pod IP with discovery"
    expected_port = SEED_PORT if doc.name == "lighthouse" else MEMBER_PORT
    assert named_port(c, "cluster") == expected_port, f"{doc}: container port 'cluster'"
    assert env_value(c, "CLUSTER_PORT") == str(expected_port), f"{doc}: CLUSTER_PORT"


@params(member_workloads)
def test_member_app_version_is_the_image_tag(variant, doc):
    """Rolling updates place shards on the newest APP_VERSION, so it must change with the image."""
    c = own_container(doc)
    tag = c["image"].rsplit(":", 1)[1]
    assert env_value(c, "APP_VERSION") == tag, f"{doc}: APP_VERSION must be the image tag {tag!r}"


@params(member_workloads)
def test_member_management_port_probes_and_leave(variant, doc):
    c = own_container(doc)
    assert named_port(c, "management") == MANAGEMENT_PORT, f"{doc}: named port 'management' 8558"
    assert env_value(c, "MANAGEMENT_PORT") == str(MANAGEMENT_PORT), f"{doc}: MANAGEMENT_PORT"
    assert env_value(c, "MANAGEMENT_HOST") == "0.0.0.0", f"{doc}: management must listen where the kubelet reaches it"
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/alive")):
        get = c.get(probe, {}).get("httpGet", {})
        assert get.get("path") == path and get.get("port") == "management", f"{doc}: {probe} must GET {path} on management"
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd == ["/usr/local/bin/tradectl", "--addr", f"127.0.0.1:{MANAGEMENT_PORT}", "cluster", "leave"], (
        f"{doc}: preStop must be `tradectl --addr 127.0.0.1:8558 cluster leave`, got {cmd}"
    )


@params(member_workloads)
def test_members_use_mongodb_where_they_persist(variant, doc):
    c = own_container(doc)
    docs = SETS[variant]
    value = env_value(c, "MONGO_CONNECTION_STR")
    if doc.name in PERSISTENT:
        # (That the named replica set is the one MongoDB runs: test_mongodb.py.)
        assert value == MONGO_URL, f"{doc}: MONGO_CONNECTION_STR"
        m = re.fullmatch(r"mongodb://([a-z0-9-]+):(\d+)/(\w+)\?replicaSet=\w+", value)
        assert m, f"{doc}: mongodb://<service>:<port>/<database>?replicaSet=<set>"
        svc = find(docs, "Service", m.group(1))
        assert int(m.group(2)) in {p["port"] for p in svc.body["spec"]["ports"]}, f"{doc}: MongoDB port"
    else:
        assert value is None, f"{doc}: does not persist, so it gets no MONGO_CONNECTION_STR"


def test_seed_lists_name_exactly_the_lighthouse_pods():
    lh = find(BASE, "StatefulSet", "lighthouse")
    lh_port = named_port(own_container(lh), "cluster")
    expected = [("AkkaTrader", f"lighthouse-{i}.{lh.body['spec']['serviceName']}", lh_port) for i in range(lh.body["spec"]["replicas"])]
    for doc in member_workloads(BASE):
        c = own_container(doc)
        env = {k: v.get("value", "") for k, v in env_map(c).items()}
        seeds = parse_addresses(env["CLUSTER_SEEDS"], env)
        assert seeds == expected, f"{doc}: CLUSTER_SEEDS {seeds} != lighthouse pods {expected}"


def test_the_first_seed_recognises_itself():
    """With seeds, only the first seed may form the cluster, and it knows it is the first seed by
    comparing its own address (CLUSTER_IP:CLUSTER_PORT, for pod lighthouse-0) with the first entry
    of CLUSTER_SEEDS, so both must be spelt the same way."""
    lh = find(BASE, "StatefulSet", "lighthouse")
    c = own_container(lh)
    env = {k: v.get("value", "") for k, v in env_map(c).items()}
    env["POD_NAME"] = f"{lh.name}-0"
    own_host = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], env["CLUSTER_IP"])
    first = parse_addresses(env["CLUSTER_SEEDS"], env)[0]
    assert first == (env["ACTORSYSTEM"], own_host, int(env["CLUSTER_PORT"])), f"{first} is not lighthouse-0's own address"


def test_pricing_web_is_a_cluster_client_of_the_pricing_pods():
    web = find(BASE, "Deployment", "pricing-web")
    c = own_container(web)
    pricing = find(BASE, "StatefulSet", "pricing")
    port = named_port(own_container(pricing), "cluster")
    service = find(BASE, "Service", pricing.body["spec"]["serviceName"]).body
    env = {k: v.get("value", "") for k, v in env_map(c).items()}
    # Every pricing pod, however many, through the headless Service's DNS name.
    assert env["CLUSTER_CONTACTS_SERVICE"] == f"{service['metadata']['name']}:{port}", "CLUSTER_CONTACTS_SERVICE"
    assert service["spec"].get("clusterIP") == "None", "the pricing Service must be headless (one address per pod)"
    assert "CLUSTER_CONTACTS" not in env, "one way of naming the contacts"
    for not_a_member in ("CLUSTER_SEEDS", "CLUSTER_IP", "CLUSTER_PORT", "MONGO_CONNECTION_STR"):
        assert not_a_member not in env, f"pricing-web is not a member: no {not_a_member}"
    http = named_port(c, "http")
    assert http == 80 and env["HTTP_PORT"] == "80", "pricing-web serves HTTP on port 80 in containers"
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/alive")):
        get = c[probe]["httpGet"]
        assert get == {"path": path, "port": "http"}, f"pricing-web {probe}"
    sysctls = {s["name"]: s["value"] for s in pod_spec(web).get("securityContext", {}).get("sysctls", [])}
    assert sysctls.get("net.ipv4.ip_unprivileged_port_start") == "0", "non-root pricing-web needs port 80"
    strategy = web.body["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_pricing_ui_load_balancer():
    ui = find(BASE, "Service", "pricing-ui")
    assert ui.body["spec"]["type"] == "LoadBalancer"
    web = find(BASE, "Deployment", "pricing-web")
    assert selector_matches(ui.body["spec"]["selector"], web.body["spec"]["template"]["metadata"]["labels"])
    (port,) = ui.body["spec"]["ports"]
    assert port["port"] == 80 and port["targetPort"] == "http"


@params(own_workloads)
def test_resources_and_security(variant, doc):
    spec = pod_spec(doc)
    sc = spec.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001, f"{doc}: run as the image's uid 10001"
    for c in containers(doc):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{doc}/{c['name']}: resources.{kind} cpu and memory"
        assert _quantity(res["requests"]["cpu"]) <= _quantity(res["limits"]["cpu"]), f"{doc}: cpu request > limit"
        assert _quantity(res["requests"]["memory"]) <= _quantity(res["limits"]["memory"]), f"{doc}: memory request > limit"
        csc = c.get("securityContext", {})
        assert csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
        assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{doc}: drop all capabilities"


def _quantity(q) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?", str(q))
    assert m, f"unsupported quantity {q!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


def test_mongodb_has_a_volume_and_a_headless_service():
    svc = find(BASE, "Service", "mongodb")
    assert svc.body["spec"]["clusterIP"] == "None"
    sts = find(BASE, "StatefulSet", "mongodb")
    (claim,) = sts.body["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(sts)["containers"][0]["volumeMounts"]}
    assert mounts.get(claim["metadata"]["name"]) == "/data/db", "MongoDB data must be on the claimed volume"


# ------------------------------------------------------------------------------------------------
# Kubernetes-API discovery variant


def test_discovery_rbac():
    role = find(DISCOVERY, "Role", "pod-reader").body
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]}]
    binding = find(DISCOVERY, "RoleBinding", "akka-cluster-pod-reader").body
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "akka-cluster", "namespace": NAMESPACE}]
    find(DISCOVERY, "ServiceAccount", "akka-cluster")


@pytest.mark.parametrize("doc", member_workloads(DISCOVERY), ids=str)
def test_discovery_members_find_the_lighthouse_pods_through_the_api(doc):
    assert pod_spec(doc).get("serviceAccountName") == "akka-cluster", f"{doc}: serviceAccountName"
    c = own_container(doc)
    env = env_map(c)
    assert "CLUSTER_SEEDS" not in env, f"{doc}: discovery replaces CLUSTER_SEEDS"
    assert env_value(c, "CLUSTER_DISCOVERY") == "kubernetes-api"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    selector = dict(kv.split("=", 1) for kv in env_value(c, "CLUSTER_DISCOVERY_LABEL_SELECTOR").split(","))
    selected = [w for w in workloads(DISCOVERY) if selector_matches(selector, w.body["spec"]["template"]["metadata"]["labels"])]
    assert len(selected) == 1, f"{doc}: the label selector must select exactly one StatefulSet, got {[str(s) for s in selected]}"
    replicas = selected[0].body["spec"]["replicas"]
    assert env_value(c, "REQUIRED_CONTACT_POINT_NR") == str(replicas), (
        f"{doc}: REQUIRED_CONTACT_POINT_NR must equal the {selected[0].name} replicas ({replicas})"
    )
    port_name = env_value(c, "CLUSTER_DISCOVERY_PORT_NAME")
    assert named_port(own_container(selected[0]), port_name) == SEED_PORT, f"{doc}: contact points' port {port_name!r}"
    # The API server is reached directly over HTTPS with the pod's own service account: no
    # proxy sidecar, no plain-HTTP API URL, and the token must be mounted.
    assert [x["name"] for x in containers(doc)] == [c["name"]], f"{doc}: no sidecar containers"
    assert "KUBERNETES_API_URL" not in env, f"{doc}: plain-HTTP API access is gone"
    assert pod_spec(doc).get("automountServiceAccountToken", True) is True, f"{doc}: the token is needed"


def _strip_discovery(body: dict) -> dict:
    body = copy.deepcopy(body)
    if body["kind"] in WORKLOAD_KINDS:
        spec = body["spec"]["template"]["spec"]
        spec.pop("serviceAccountName", None)
        spec.pop("automountServiceAccountToken", None)
        body["spec"].pop("podManagementPolicy", None)
        for c in spec["containers"]:
            c["env"] = [e for e in c.get("env", []) if e["name"] not in DISCOVERY_ENV + ["CLUSTER_SEEDS", "CLUSTER_IP"]]
    return body


@pytest.mark.parametrize("svc", MEMBERS)
def test_discovery_variant_does_not_drift_from_the_seed_manifests(svc):
    """The discovery files are copies of k8s/services/ that differ only in how the cluster forms."""
    base = docs_in(K8S / "services" / f"{svc}.yaml")
    disc = docs_in(K8S / "discovery-kubernetes-api" / f"{svc}.yaml")
    assert [(d.kind, d.name) for d in base] == [(d.kind, d.name) for d in disc]
    for b, d in zip(base, disc):
        assert _strip_discovery(b.body) == _strip_discovery(d.body), f"{d} drifted from {b}"

