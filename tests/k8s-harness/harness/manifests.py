"""Manifests: loading the YAML files of k8s/ (read where they are, never copied), checking every
field against what the harness emulates, and the test overlay (stand-ins.yaml).

The check is a whitelist. A field the harness does not emulate is refused with a message naming
it (`Refused`), so a manifest never runs with part of it silently ignored. A few fields are
accepted but only recorded, because on one Docker host they have nothing to act on; each is
marked RECORD below:
  - resources.requests (scheduling hints; limits ARE applied: --cpus / --memory),
  - volumeClaimTemplates' accessModes and storage size (a Docker volume has no size),
  - ServiceAccount, Role, RoleBinding, PodDisruptionBudget (nothing here evicts pods; the RBAC
    rules are not enforced: every pod with a serviceAccountName gets the one token of the fake
    API server, which serves only the pods list; see controller.py),
  - labels/annotations (labels select; the restartedAt annotation changes the template),
  - imagePullPolicy IfNotPresent/Never (nothing can be pulled; Always is refused).
"""

import copy
import fnmatch
import hashlib
import json
import re

import yaml


class Refused(Exception):
    """A manifest (or a command) asks for something the harness does not emulate."""


ANY = object()  # accepted as it is (RECORD or checked elsewhere)


def one_of(*allowed):
    def check(value, where):
        if value not in allowed:
            raise Refused(f"{where}: {value!r} is not emulated (only {', '.join(map(repr, allowed))})")
    return check


def is_str(value, where):
    if not isinstance(value, str):
        raise Refused(f"{where} must be a string (Kubernetes refuses {type(value).__name__} here)")


def str_list(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(f"{where} must be a list of strings (Kubernetes refuses anything else)")


def is_false(value, where):
    if value is not False:
        raise Refused(f"{where}: only false is emulated (no service account token is mounted)")


def check(obj, schema, where):
    """Refuses every key of obj that schema does not name; schema: dict, [item schema], callable, ANY."""
    if schema is ANY:
        return
    if isinstance(schema, list):
        if not isinstance(obj, list):
            raise Refused(f"{where} must be a list")
        for i, item in enumerate(obj):
            check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict):
        if not isinstance(obj, dict):
            raise Refused(f"{where} must be a mapping")
        for key, value in obj.items():
            if key not in schema:
                raise Refused(f"{where}.{key} is not emulated by the k8s harness")
            check(value, schema[key], f"{where}.{key}")
    else:
        schema(obj, where)


META = {"name": is_str, "namespace": is_str, "labels": ANY, "annotations": ANY}
EXEC = {"command": str_list}
PROBE = {
    "httpGet": {"path": is_str, "port": ANY, "scheme": one_of("HTTP")},
    "exec": EXEC,
    "initialDelaySeconds": ANY,
    "periodSeconds": ANY,
    "timeoutSeconds": ANY,
    "failureThreshold": ANY,
    "successThreshold": ANY,
}
ENV = [{
    "name": is_str,
    "value": is_str,
    "valueFrom": {
        "fieldRef": {"fieldPath": one_of("metadata.name", "metadata.namespace", "status.podIP"), "apiVersion": one_of("v1")},
        "secretKeyRef": {"name": is_str, "key": is_str},
    },
}]
CONTAINER = {
    "name": is_str,
    "image": is_str,
    "imagePullPolicy": one_of("IfNotPresent", "Never"),  # RECORD: nothing is ever pulled
    "command": str_list,
    "args": str_list,
    "workingDir": is_str,
    "env": ENV,
    "ports": [{"name": is_str, "containerPort": ANY, "protocol": one_of("TCP")}],
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
    "lifecycle": {"preStop": {"exec": EXEC}, "postStart": {"exec": EXEC}},
    "resources": {"requests": ANY, "limits": {"cpu": ANY, "memory": ANY}},  # requests: RECORD
    "securityContext": {
        "allowPrivilegeEscalation": one_of(False),  # --security-opt no-new-privileges
        "readOnlyRootFilesystem": ANY,               # --read-only
        "capabilities": {"drop": ANY, "add": ANY},   # --cap-drop / --cap-add
        "runAsUser": ANY,
        "runAsGroup": ANY,
        "runAsNonRoot": ANY,
    },
    "volumeMounts": [{"name": is_str, "mountPath": is_str, "readOnly": ANY}],
}
POD_SPEC = {
    "containers": [CONTAINER],
    "restartPolicy": one_of("Always"),
    "automountServiceAccountToken": ANY,
    "serviceAccountName": is_str,  # the fake API server's folder and address (serve --api-server)
    "terminationGracePeriodSeconds": ANY,
    "securityContext": {
        "runAsNonRoot": ANY,
        "runAsUser": ANY,
        "runAsGroup": ANY,
        "fsGroup": ANY,                                # --group-add (see pods.py)
        "seccompProfile": {"type": one_of("RuntimeDefault")},  # Docker's default profile
        "sysctls": [{"name": is_str, "value": is_str}],        # --sysctl
    },
    "volumes": [{"name": is_str, "emptyDir": {}}],
}
TEMPLATE = {"metadata": {"labels": ANY, "annotations": ANY}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": ANY}
STATEFULSET = {
    "serviceName": is_str,
    "replicas": ANY,
    "podManagementPolicy": one_of("OrderedReady", "Parallel"),
    "updateStrategy": {"type": one_of("RollingUpdate")},
    "selector": SELECTOR,
    "template": TEMPLATE,
    "volumeClaimTemplates": [{
        "metadata": {"name": is_str, "labels": ANY, "annotations": ANY},
        # RECORD: a Docker volume has no access mode or size.
        "spec": {"accessModes": ANY, "resources": {"requests": {"storage": ANY}}},
    }],
}
DEPLOYMENT = {
    "replicas": ANY,
    "strategy": {"type": one_of("RollingUpdate"), "rollingUpdate": {"maxSurge": ANY, "maxUnavailable": ANY}},
    "selector": SELECTOR,
    "template": TEMPLATE,
}
SERVICE = {
    "type": one_of("ClusterIP", "LoadBalancer"),
    "clusterIP": one_of("None"),  # headless; a virtual IP is not emulated (DNS gives pod IPs)
    "publishNotReadyAddresses": ANY,
    "selector": ANY,
    "ports": [{"name": is_str, "port": ANY, "targetPort": ANY, "protocol": one_of("TCP")}],
}
TOP = {"apiVersion": ANY, "kind": ANY, "metadata": META}
KINDS = {
    # kind: (apiVersion, schema of the remaining top-level keys)
    "Namespace": ("v1", {}),
    "Secret": ("v1", {"type": one_of("Opaque"), "stringData": ANY, "data": ANY}),
    "ConfigMap": ("v1", {"data": ANY, "binaryData": ANY}),
    # RECORD only: see the module docstring.
    "ServiceAccount": ("v1", {"automountServiceAccountToken": ANY}),
    "Role": ("rbac.authorization.k8s.io/v1", {"rules": ANY}),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", {"roleRef": ANY, "subjects": ANY}),
    "PodDisruptionBudget": ("policy/v1", {"spec": ANY}),
    "Service": ("v1", {"spec": SERVICE}),
    "StatefulSet": ("apps/v1", {"spec": STATEFULSET}),
    "Deployment": ("apps/v1", {"spec": DEPLOYMENT}),
}
NAMESPACED = set(KINDS) - {"Namespace"}
# kubectl's names: "statefulset.apps/lighthouse created"
RESOURCE = {
    "Namespace": "namespace", "Secret": "secret", "ConfigMap": "configmap",
    "ServiceAccount": "serviceaccount", "Role": "role.rbac.authorization.k8s.io",
    "RoleBinding": "rolebinding.rbac.authorization.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudget.policy", "Service": "service",
    "StatefulSet": "statefulset.apps", "Deployment": "deployment.apps",
}


def load(path):
    """The documents of one (multi-document) YAML file, empty documents skipped."""
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or "kind" not in d:
            raise Refused(f"{path}: document {i + 1} is not a Kubernetes object")
    return docs


def validate(doc):
    """Checks one object against the whitelist; raises Refused naming the first unsupported field."""
    kind = doc.get("kind")
    if kind not in KINDS:
        raise Refused(f"kind {kind!r} is not emulated (only {', '.join(KINDS)})")
    api, rest = KINDS[kind]
    name = (doc.get("metadata") or {}).get("name")
    where = f"{kind} {name}"
    if doc.get("apiVersion") != api:
        raise Refused(f"{where}: apiVersion {doc.get('apiVersion')!r} is not emulated (only {api})")
    if not name:
        raise Refused(f"{where}: metadata.name is required")
    check(doc, {**TOP, **rest}, where)
    if kind in ("StatefulSet", "Deployment"):
        _validate_workload(doc, where)
    if kind == "Service":
        spec = doc.get("spec") or {}
        if not spec.get("selector"):
            raise Refused(f"{where}: a Service without a selector is not emulated")
        if not spec.get("ports"):
            raise Refused(f"{where}: spec.ports is required")


def _validate_workload(doc, where):
    spec = doc["spec"]
    tpl = spec.get("template") or {}
    pod = tpl.get("spec") or {}
    containers = pod.get("containers") or []
    if len(containers) != 1:
        raise Refused(f"{where}: exactly one container per pod is emulated ({len(containers)} given)")
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        raise Refused(f"{where}: spec.selector.matchLabels must be non-empty and match the template's labels")
    c = containers[0]
    volumes = {v["name"] for v in pod.get("volumes") or []}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
    for m in c.get("volumeMounts") or []:
        if m["name"] not in volumes | claims:
            raise Refused(f"{where}: volumeMount {m['name']!r} names no volume or volumeClaimTemplate")
    for kind in ("readinessProbe", "livenessProbe"):
        p = c.get(kind)
        if p is not None and len([h for h in ("httpGet", "exec") if h in p]) != 1:
            raise Refused(f"{where}: {kind} needs exactly one of httpGet, exec")
    for e in c.get("env") or []:
        if ("value" in e) == ("valueFrom" in e) and "valueFrom" in e:
            raise Refused(f"{where}: env {e['name']}: value and valueFrom together")
        vf = e.get("valueFrom")
        if vf is not None and len(vf) != 1:
            raise Refused(f"{where}: env {e['name']}: valueFrom needs exactly one source")


def revision(template):
    """A stable hash of a pod template (what a rolling update compares)."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def parse_cpu(v):
    s = str(v)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_memory(v):
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(v))
    if not m or (m.group(2) and m.group(2) not in _MEM):
        raise Refused(f"memory quantity {v!r} is not understood")
    return int(m.group(1)) * _MEM.get(m.group(2), 1)


def expand(value, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, `$$` is a literal `$`, and a
    reference to a name not defined earlier stays as written."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i):
            j = value.find(")", i + 2)
            name = value[i + 2:j] if j > 0 else None
            if name is not None and name in env:
                out.append(env[name])
                i = j + 1
            else:
                out.append("$(")
                i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class StandIns:
    """The test overlay (stand-ins.yaml): image replacements, env overrides, host mounts and the
    images that cannot be run here. `${orders_per_second}` and `${blotter_dir}` in it are the
    harness options of the same names."""

    def __init__(self, path, options):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for k, v in options.items():
            text = text.replace("${" + k + "}", str(v))
        data = yaml.safe_load(text) or {}
        check(data, {"unavailableImages": ANY, "replaceImages": ANY, "containers": ANY}, "stand-ins.yaml")
        self.unavailable = {u["image"]: u.get("why", "") for u in data.get("unavailableImages") or []}
        self.replace = data.get("replaceImages") or {}
        self.rules = data.get("containers") or []
        for i, r in enumerate(self.rules):
            check(r, {"images": ANY, "env": ANY, "replaceEnv": ANY, "hostMounts": [{"hostPath": ANY, "mountPath": ANY}]},
                  f"stand-ins.yaml containers[{i}]")
        for img, r in self.replace.items():
            check(r, {"image": ANY, "command": ANY, "args": ANY, "dropPostStart": ANY, "readinessProbe": ANY,
                      "livenessProbe": ANY}, f"stand-ins.yaml replaceImages[{img}]")

    def refuse_unavailable(self, doc):
        """Refuses a workload that uses an image listed as unavailable, naming it. Checked before
        anything else, so the image is what the error names."""
        try:
            containers = doc["spec"]["template"]["spec"]["containers"]
        except (KeyError, TypeError):
            return
        for c in containers if isinstance(containers, list) else []:
            if isinstance(c, dict) and c.get("image") in self.unavailable:
                raise Refused(f"{doc['kind']} {doc['metadata']['name']}: image {c['image']} is not available "
                              f"on this machine and has no stand-in ({self.unavailable[c['image']]})")

    def apply(self, pod_spec):
        """The pod spec as the harness runs it: a deep copy with the overlay applied. The extra
        key `x-hostMounts` on the container lists bind mounts of host folders."""
        spec = copy.deepcopy(pod_spec)
        c = spec["containers"][0]
        original = c["image"]  # the env rules match the manifest's image, not its stand-in
        r = self.replace.get(original)
        if r:
            c["image"] = r["image"]
            if "command" in r:
                c["command"] = r["command"]
            if "args" in r:
                c["args"] = r["args"]
            if r.get("dropPostStart"):
                (c.get("lifecycle") or {}).pop("postStart", None)
            for kind in ("readinessProbe", "livenessProbe"):
                if kind in r:  # the handler is replaced; the manifest's timings stay
                    old = {k: v for k, v in (c.get(kind) or {}).items() if k not in ("exec", "httpGet")}
                    c[kind] = {**old, **r[kind]}
        for rule in self.rules:
            if not any(fnmatch.fnmatchcase(original, pat) for pat in rule.get("images") or []):
                continue
            env = c.setdefault("env", [])
            for name, value in (rule.get("replaceEnv") or {}).items():
                for e in env:
                    if e["name"] == name:
                        e.pop("valueFrom", None)
                        e["value"] = str(value)
            for name, value in (rule.get("env") or {}).items():
                env[:] = [e for e in env if e["name"] != name]
                env.append({"name": name, "value": str(value)})
            c.setdefault("x-hostMounts", []).extend(rule.get("hostMounts") or [])
        return spec
