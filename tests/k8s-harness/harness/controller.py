"""The controller (`serve`): one long-running process that owns the applied objects, decides which
pods must exist (StatefulSet and Deployment controllers), starts a Pod (pods.py) for each, runs
the LoadBalancer proxies, answers the shim's requests and publishes status.json (state.py).

Emulation choices:
  - Objects live in memory; a request is handled whole, under one lock, between two ticks.
    `apply -f` checks every document of the file first and applies none if one is refused.
  - Namespace, Secret, ConfigMap, ServiceAccount, Role, RoleBinding, PodDisruptionBudget are
    recorded (Secrets feed secretKeyRef; the others have nothing to act on here, see manifests.py).
  - Services are DNS only: every pod a Service selects carries the network alias `<service>`,
    so the name resolves to all its pods (ready or not: Docker aliases are fixed at container
    start, so publishNotReadyAddresses=false cannot be honoured for in-network DNS; the
    LoadBalancer proxy below does route to Ready pods only). A Service port must equal the
    container port its targetPort names (a Docker network cannot translate ports), except for a
    LoadBalancer. A Service that selects pods already running without its alias is refused.
  - A `type: LoadBalancer` Service is a TCP proxy on the host, 127.0.0.1:<port> -> a Ready
    selected pod (round robin). It listens on the Service's own port when it can bind it, and
    then reports status.loadBalancer.ingress[0].ip = 127.0.0.1; otherwise on a free port, with no
    ingress (as a cloud LB still pending), and `scripts/k8s-harness.sh port SERVICE -n NS`
    prints it.
  - StatefulSet: pods `<set>-<ordinal>`; OrderedReady creates ordinal n+1 once n is Ready and
    scales down one pod at a time, highest first; Parallel creates and deletes all at once.
    RollingUpdate replaces the highest-ordinal outdated pod once every pod exists and is Ready.
  - Deployment: pods `<name>-<5 chars>`, rolling update within maxSurge/maxUnavailable (one pod
    per tick: start new, wait Ready, delete an old).
  - A PersistentVolumeClaim `<claim>-<pod>` is the Docker volume `<project>-<claim>-<pod>`; it
    outlives its pod and is removed by `delete persistentvolumeclaims` once no pod uses it.
  - The Kubernetes API, for pods with a serviceAccountName (the kubernetes-api discovery
    variant): `serve --api-server PATH` runs that `fake-apiserver` binary (tests/fake-apiserver)
    on the network's gateway address, over HTTPS with a CA of its own, once the first such pod
    starts. It serves the pods list from `<state>/pods.json`, which the controller rewrites from
    its pods in the API's shape (terminating pods carry deletionTimestamp, a container that is
    not running is `waiting`). Such a pod gets the server's service-account folder (ca.crt,
    token, namespace) mounted at /var/run/secrets/kubernetes.io/serviceaccount and
    KUBERNETES_SERVICE_HOST/_PORT, as the kubelet gives them. Without --api-server, applying a
    workload with a serviceAccountName is refused. The RBAC objects are not enforced.
"""

import copy
import datetime
import json
import subprocess
import ipaddress
import math
import os
import random
import socket
import threading
import time
import traceback

from . import docker
from .manifests import NAMESPACED, RESOURCE, Refused, load, revision, validate
from .pods import Pod
from .state import StateDir, write_json

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
WORKLOADS = ("StatefulSet", "Deployment")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Controller:
    def __init__(self, project, state_dir, stand_ins, subnet=None, free_lb_ports=False, api_server=None):
        self.project = project
        self.api_server = api_server  # path of the fake-apiserver binary, or None
        self.api = None               # {"host", "port", "dir", "namespace", "proc"} once started
        self.network = project
        self.context = f"k8s-harness-{project}"
        self.state = StateDir(state_dir)
        self.stand_ins = stand_ins
        self.free_lb_ports = free_lb_ports
        self.subnet = ipaddress.ip_network(subnet) if subnet else None
        self.lock = threading.RLock()
        self.objects = {}       # (kind, namespace, name) -> {"doc": dict, "created": t}
        self.ns_deleting = set()
        self.pods = {}          # (namespace, name) -> Pod
        self.pvcs = {}          # (namespace, claim-pod) -> {"volume": str, "deleting": bool}
        self.lbs = {}           # (namespace, service) -> LoadBalancer
        self.ips_in_use = set()
        self._next_ip = 10
        self._obs = (0.0, {})   # (monotonic time the `docker ps` began, {container: state})
        self.stop_requested = False  # set by SIGTERM/SIGINT: leave the serve loop
        self.stopping = False        # set at the very end of shutdown: the observer stops
        self._logfile = open(os.path.join(self.state.root, "controller.log"), "a", encoding="utf-8")

    # --- small services for pods --------------------------------------------------------------
    def log(self, msg):
        line = f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S.%f')[:-3]} {msg}"
        print(line, flush=True)
        self._logfile.write(line + "\n")
        self._logfile.flush()

    def observed(self, container, since):
        """The container's Docker state from a `docker ps` begun after `since` (monotonic), or
        None when there is no such observation yet; 'missing' when it does not exist."""
        t, states = self._obs
        if t < since:
            return None
        return states.get(container, "missing")

    def secret_value(self, ns, name, key):
        with self.lock:
            obj = self.objects.get(("Secret", ns, name))
        if obj is None:
            return None
        doc = obj["doc"]
        if key in (doc.get("stringData") or {}):
            return str(doc["stringData"][key])
        if key in (doc.get("data") or {}):
            import base64
            return base64.b64decode(doc["data"][key]).decode()
        return None

    def service_account(self, ns):
        """The fake API server's address and service-account folder for a pod of namespace `ns`;
        starts the server on first use. Raises Refused when it cannot serve that pod."""
        with self.lock:
            if self.api is None:
                if not self.api_server:
                    raise Refused("a pod with a serviceAccountName needs the Kubernetes API: "
                                  "serve --api-server PATH (tests/fake-apiserver)")
                gateway = str(next(self.subnet.hosts()))
                folder = os.path.join(self.state.root, "serviceaccount")
                self._write_api_pods()
                proc = subprocess.Popen(
                    [self.api_server, "--bind", f"{gateway}:0", "--name", gateway, "--namespace", ns,
                     "--service-account-dir", folder, "--pods-file", self._api_pods_file()],
                    stdout=subprocess.PIPE, stderr=open(os.path.join(self.state.root, "apiserver.log"), "a"),
                    text=True)
                line = proc.stdout.readline().strip()
                if not line.startswith("listening on https://"):
                    proc.kill()
                    raise Refused(f"the fake API server did not start ({line!r}; see apiserver.log)")
                port = int(line.rsplit(":", 1)[1])
                for f in ("ca.crt", "token", "namespace"):  # readable by the pods' users
                    os.chmod(os.path.join(folder, f), 0o644)
                os.chmod(folder, 0o755)
                self.api = {"host": gateway, "port": port, "dir": folder, "namespace": ns, "proc": proc}
                self.log(f"fake API server at https://{gateway}:{port} for namespace {ns}")
            if self.api["namespace"] != ns:
                raise Refused(f"the fake API server serves namespace {self.api['namespace']!r}, "
                              f"not {ns!r} (one namespace per harness)")
            return self.api

    def _api_pods_file(self):
        return os.path.join(self.state.root, "pods.json")

    def _write_api_pods(self):
        """pods.json: the pods in the API's shape, for the fake API server."""
        items = []
        for (ns, name), p in self.pods.items():
            c = p.container
            meta = {"name": name, "namespace": ns, "labels": p.labels,
                    "uid": f"{self.project}-{ns}-{name}-{int(p.created * 1000)}"}
            if p.terminating:
                meta["deletionTimestamp"] = datetime.datetime.now(datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
            state = {"running": {}} if p.running else {"waiting": {"reason": p.reason}}
            status = {"phase": "Running" if p.running else "Pending",
                      "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "",
                                             "ready": p.ready, "restartCount": p.restarts, "state": state}]}
            if p.running:
                status["podIP"] = p.ip
            items.append({"metadata": meta, "spec": {"containers": [{"name": c["name"], "ports": c.get("ports") or []}]},
                          "status": status})
        tmp = self._api_pods_file() + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(items, f)
        os.replace(tmp, self._api_pods_file())

    # --- life -----------------------------------------------------------------------------
    def setup(self):
        self.state.create()
        other = self.state.controller()
        if other and other["pid"] != os.getpid():
            raise SystemExit(f"error: a controller (pid {other['pid']}) already serves {self.state.root}")
        c, v, n = docker.leftovers(self.project)
        if c or v or n:
            raise SystemExit(f"error: project {self.project!r} has leftovers of an earlier run (containers {c}, "
                             f"volumes {v}, networks {n}); remove them with: scripts/k8s-harness.sh cleanup "
                             f"--project {self.project}")
        for d in (self.state.requests, self.state.responses):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
        chosen = self.subnet
        for attempt in range(10):
            self.subnet = chosen or docker.choose_subnet()
            try:
                docker.run(["network", "create", *docker.label_args(self.project), "--subnet",
                            str(self.subnet), self.network])
                break
            except docker.DockerError:
                # another harness took the same subnet a moment ago: pick again
                if chosen or attempt == 9:
                    raise
                time.sleep(random.uniform(0.1, 0.5))
        self.log(f"network {self.network} {self.subnet}")
        write_json(self.state.controller_file, {"pid": os.getpid(), "project": self.project,
                                                "context": self.context, "network": self.network})
        threading.Thread(target=self._observer, name="observer", daemon=True).start()

    def _observer(self):
        while not self.stopping:
            t0 = time.monotonic()
            try:
                self._obs = (t0, docker.container_states(self.project))
            except Exception as e:  # keep the old observation; pods then just wait
                self.log(f"docker ps failed: {e}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    def serve(self):
        last_status = None
        while not self.stop_requested:
            try:
                for req in self.state.pending_requests():
                    answer = self._handle(req)
                    # the status a shim reads next already shows what it asked for
                    with self.lock:
                        last_status = self._status()
                    write_json(self.state.status_file, last_status)
                    self.state.respond(req["id"], *answer)
                with self.lock:
                    self._reconcile()
                    status = self._status()
                if status != last_status:
                    write_json(self.state.status_file, status)
                    last_status = status
                    if self.api is not None:
                        with self.lock:
                            self._write_api_pods()
            except Exception:
                self.log("controller error:\n" + traceback.format_exc())
            time.sleep(0.25)

    def shutdown(self):
        """Deletes everything the controller created: pods gracefully, then every container,
        volume and network that carries the project's label."""
        self.log("shutting down: deleting every pod")
        with self.lock:
            for key in list(self.objects):
                if key[0] in WORKLOADS:
                    del self.objects[key]
            for pod in self.pods.values():
                pod.terminate()
        deadline = time.monotonic() + max([p.grace for p in self.pods.values()] + [0]) + 60
        while time.monotonic() < deadline and not all(p.gone for p in self.pods.values()):
            time.sleep(0.25)
        for lb in self.lbs.values():
            lb.close()
        for req in self.state.pending_requests():
            self.state.respond(req["id"], 1, stderr="error: the k8s-harness controller is stopping\n")
        self.stopping = True
        if self.api is not None:
            self.api["proc"].terminate()
            try:
                self.api["proc"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.api["proc"].kill()
        c, v, n = docker.remove_all(self.project)
        self.log(f"removed containers {c}, volumes {v}, networks {n}")
        try:
            os.unlink(self.state.controller_file)
        except FileNotFoundError:
            pass
        with self.lock:
            self.pods.clear()
            self.objects.clear()
            write_json(self.state.status_file, self._status())

    # --- requests -------------------------------------------------------------------------
    def _handle(self, req):
        op, args = req["op"], req["args"]
        """Runs one request; returns (rc, stdout, stderr) for the shim."""
        try:
            with self.lock:
                out, extra = getattr(self, "_op_" + op)(**args)
            if extra:
                self.log(extra)
            return 0, out, ""
        except Refused as e:
            self.log(f"refused {op}: {e}")
            return 1, "", f"error: {e}\n"
        except Exception as e:
            self.log(f"{op} failed:\n" + traceback.format_exc())
            return 1, "", f"error: k8s-harness: {e}\n"

    def _op_apply(self, path, namespace):
        docs = load(path)
        planned = []  # (kind, ns, name, doc), all checked before anything is stored
        new_ns = set()
        for doc in docs:
            if doc.get("kind") in WORKLOADS:
                self.stand_ins.refuse_unavailable(doc)
            validate(doc)
            kind, meta = doc["kind"], doc["metadata"]
            if kind in NAMESPACED:
                ns = meta.get("namespace") or namespace or "default"
                if namespace and meta.get("namespace") and namespace != meta["namespace"]:
                    raise Refused(f"the namespace from the provided object {meta['namespace']!r} does not match "
                                  f"the namespace {namespace!r}. You must pass '--namespace={meta['namespace']}'")
                if ("Namespace", "", ns) not in self.objects and ns not in new_ns:
                    raise Refused(f'namespaces "{ns}" not found')
                if ns in self.ns_deleting:
                    raise Refused(f"namespace {ns} is being deleted")
            else:
                ns = ""
                new_ns.add(meta["name"])
            if kind in WORKLOADS:
                self._check_workload_change(kind, ns, doc)
                if doc["spec"]["template"]["spec"].get("serviceAccountName") and not self.api_server:
                    raise Refused(f"{kind} {meta['name']}: serviceAccountName needs the Kubernetes API: "
                                  "serve --api-server PATH (tests/fake-apiserver)")
            planned.append((kind, ns, meta["name"], doc))
        self._check_services(planned)
        lines = []
        for kind, ns, name, doc in planned:
            key = (kind, ns, name)
            old = self.objects.get(key)
            doc = copy.deepcopy(doc)
            if kind in WORKLOADS and old:
                # Like a three-way apply: kubectl rollout restart's annotation is not in the file
                # and survives the re-apply.
                was = ((old["doc"]["spec"]["template"].get("metadata") or {}).get("annotations") or {})
                if RESTARTED_AT in was:
                    doc["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {}).setdefault(
                        RESTARTED_AT, was[RESTARTED_AT])
            if old is None:
                verb = "created"
                self.objects[key] = {"doc": doc, "created": time.time()}
            elif old["doc"] == doc:
                verb = "unchanged"
            else:
                verb = "configured"
                old["doc"] = doc
            if kind == "Service" and verb != "unchanged":
                self._delete_lbs(ns, name)
                if doc["spec"].get("type") == "LoadBalancer":
                    self.lbs[(ns, name)] = LoadBalancer(self, ns, name, doc)
            lines.append(f"{RESOURCE[kind]}/{name} {verb}")
        return "".join(line + "\n" for line in lines), f"applied {path}: " + ", ".join(lines)

    def _check_workload_change(self, kind, ns, doc):
        name = doc["metadata"]["name"]
        for (k, other_ns, n) in self.objects:
            if k in WORKLOADS and n == name and other_ns != ns:
                raise Refused(f"{kind} {name}: a workload of that name runs in namespace {other_ns}; pod and "
                              f"container names are not per namespace in the harness")
        old = self.objects.get((kind, ns, name))
        if old:
            for field in ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"):
                if old["doc"]["spec"].get(field) != doc["spec"].get(field):
                    raise Refused(f"{kind} {name}: spec.{field} is immutable (Kubernetes refuses the change too)")

    def _check_services(self, planned):
        """Service ports against container ports, and Services over already-running pods."""
        services = {(ns, n): d for (k, ns, n), o in self.objects.items() if k == "Service" for d in [o["doc"]]}
        workloads = {(k, ns, n): o["doc"] for (k, ns, n), o in self.objects.items() if k in WORKLOADS}
        for kind, ns, name, doc in planned:
            if kind == "Service":
                services[(ns, name)] = doc
            elif kind in WORKLOADS:
                workloads[(kind, ns, name)] = doc
        for (ns, sname), svc in services.items():
            spec = svc["spec"]
            for (kind, wns, wname), w in workloads.items():
                tpl = w["spec"]["template"]
                if wns != ns or not selects(spec["selector"], tpl["metadata"].get("labels") or {}):
                    continue
                ports = {p.get("name"): int(p["containerPort"]) for p in tpl["spec"]["containers"][0].get("ports") or []}
                for p in spec["ports"]:
                    target = p.get("targetPort", p["port"])
                    if isinstance(target, str) and not target.isdigit():
                        if target not in ports:
                            raise Refused(f"Service {sname}: targetPort {target!r} is not a container port of "
                                          f"{kind} {wname}")
                        target = ports[target]
                    if int(target) != int(p["port"]) and spec.get("type") != "LoadBalancer":
                        raise Refused(f"Service {sname}: port {p['port']} -> container port {target} of {kind} "
                                      f"{wname} cannot be emulated on a Docker network (no port translation); only "
                                      f"a LoadBalancer Service may map ports")
        for kind, ns, name, doc in planned:
            if kind != "Service":
                continue
            stale = [p.name for (pns, _), p in self.pods.items()
                     if pns == ns and not p.terminating and selects(doc["spec"]["selector"], p.labels)
                     and name not in p.aliases]
            if stale:
                raise Refused(f"Service {name} selects pods that started before it ({', '.join(sorted(stale))}): "
                              f"Docker network aliases are fixed when a container starts; apply Services before "
                              f"their workloads, or delete those pods first")

    def _find_workload(self, kind, ns, name):
        obj = self.objects.get((kind, ns, name))
        if obj is None:
            res = {"StatefulSet": "statefulsets.apps", "Deployment": "deployments.apps"}[kind]
            raise Refused(f'{res} "{name}" not found (Error from server (NotFound))')
        return obj["doc"]

    def _op_scale(self, kind, name, namespace, replicas):
        doc = self._find_workload(kind, namespace, name)
        doc["spec"]["replicas"] = int(replicas)
        return f"{RESOURCE[kind]}/{name} scaled\n", f"scale {kind} {namespace}/{name} to {replicas}"

    def _op_rollout_restart(self, kind, name, namespace):
        doc = self._find_workload(kind, namespace, name)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = now
        return f"{RESOURCE[kind]}/{name} restarted\n", f"rollout restart {kind} {namespace}/{name}"

    def _op_delete(self, kinds, names, namespace, ignore_not_found):
        """Deletes objects of the given kinds ('Pod', 'PersistentVolumeClaim', 'Namespace', or a
        kind of manifests.KINDS); names=None means --all. Returns the lines kubectl prints."""
        found, cascaded = set(), set()
        by_kind = {kind: [] for kind in kinds}  # printed in the order asked, as kubectl does
        order = sorted(kinds, key=lambda k: 0 if k in WORKLOADS else 1)  # owners first: no re-creation
        for kind in order:
            lines = by_kind[kind]
            if kind == "Namespace":
                for n in names or []:
                    if ("Namespace", "", n) in self.objects:
                        found.add(n)
                        self.ns_deleting.add(n)
                        for key in [k for k in self.objects if k[1] == n]:
                            del self.objects[key]
                        self._delete_lbs(n, None)
                        for (pns, _), p in self.pods.items():
                            if pns == n:
                                p.terminate()
                        for (pns, _), c in self.pvcs.items():
                            if pns == n:
                                c["deleting"] = True
                        lines.append(f'namespace "{n}" deleted')
                continue
            if kind == "Pod":
                for (pns, pname), p in self.pods.items():
                    if pns == namespace and (names is None or pname in names) and (
                            not p.terminating or pname in cascaded):
                        found.add(pname)
                        p.terminate()
                        lines.append(f'pod "{pname}" deleted')
                continue
            if kind == "PersistentVolumeClaim":
                for (pns, cname), c in self.pvcs.items():
                    if pns == namespace and (names is None or cname in names) and not c["deleting"]:
                        found.add(cname)
                        c["deleting"] = True
                        lines.append(f'persistentvolumeclaim "{cname}" deleted')
                continue
            for key in [k for k in self.objects if k[0] == kind and k[1] == namespace]:
                if names is None or key[2] in names:
                    found.add(key[2])
                    del self.objects[key]
                    if kind == "Service":
                        self._delete_lbs(namespace, key[2])
                    if kind in WORKLOADS:  # cascade: its pods go too
                        for p in self.pods.values():
                            if p.namespace == namespace and tuple(p.owner) == (kind, key[2]) and not p.terminating:
                                p.terminate()
                                cascaded.add(p.name)
                    lines.append(f'{RESOURCE[kind]} "{key[2]}" deleted')
        lines = [line for kind in kinds for line in by_kind[kind]]
        missing = [n for n in (names or []) if n not in found]
        if missing and not ignore_not_found:
            raise Refused(f"(NotFound) {', '.join(missing)} not found" + ("\n" + "\n".join(lines) if lines else ""))
        if not lines and names is None and not ignore_not_found:
            lines.append("No resources found")
        return "".join(line + "\n" for line in lines), ("delete: " + "; ".join(lines)) if lines else None

    def _delete_lbs(self, ns, name):
        for key in [k for k in self.lbs if k[0] == ns and (name is None or k[1] == name)]:
            self.lbs.pop(key).close()

    # --- the workload controllers -----------------------------------------------------------
    def _reconcile(self):
        for key, pod in list(self.pods.items()):
            if pod.gone:
                del self.pods[key]
                self.ips_in_use.discard(pod.ip)
        for (kind, ns, name), obj in list(self.objects.items()):
            if kind == "StatefulSet":
                self._statefulset(ns, obj["doc"])
            elif kind == "Deployment":
                self._deployment(ns, obj["doc"])
        volumes_in_use = {v for p in self.pods.values() for v in p.claims.values()}
        for key, c in list(self.pvcs.items()):
            if c["deleting"] and c["volume"] not in volumes_in_use:
                docker.run(["volume", "rm", "-f", c["volume"]], check=False)
                del self.pvcs[key]
                self.log(f"persistentvolumeclaim {key[0]}/{key[1]}: volume {c['volume']} removed")
        for n in list(self.ns_deleting):
            if not any(p.namespace == n for p in self.pods.values()) and not any(k[0] == n for k in self.pvcs):
                self.objects.pop(("Namespace", "", n), None)
                self.ns_deleting.discard(n)
                self.log(f"namespace {n} deleted")

    def _pods_of(self, ns, kind, name):
        return [p for p in self.pods.values() if p.namespace == ns and tuple(p.owner) == (kind, name)]

    def _statefulset(self, ns, doc):
        name, spec = doc["metadata"]["name"], doc["spec"]
        replicas = int(spec.get("replicas", 1))
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        rev = revision(spec["template"])
        pods = self._pods_of(ns, "StatefulSet", name)
        live = {p.ordinal: p for p in pods if not p.terminating}
        dying = {p.ordinal for p in pods if p.terminating}
        # Scale down: highest ordinal first; OrderedReady one at a time, each gone before the next.
        extra = sorted((o for o in live if o >= replicas), reverse=True)
        if extra:
            for o in (extra[:1] if ordered else extra):
                if ordered and dying:
                    break
                self.log(f"statefulset {ns}/{name}: scale down, deleting {live[o].name}")
                live[o].terminate()
            if ordered:
                return
        # Create missing ordinals (a pod whose predecessor of that name is still terminating waits).
        for o in range(replicas):
            if o in live:
                continue
            if o in dying:
                if ordered:
                    return
                continue
            if ordered and not all(k in live and live[k].ready for k in range(o)):
                return
            self._create_pod(ns, doc, o, f"{name}-{o}", rev)
            if ordered:
                return
        # Rolling update: highest outdated ordinal, once all pods exist and are Ready.
        if len(live) == replicas and not dying and all(p.ready for p in live.values()):
            outdated = [o for o, p in live.items() if p.revision != rev]
            if outdated:
                victim = live[max(outdated)]
                self.log(f"statefulset {ns}/{name}: rolling update, replacing {victim.name} (revision {rev})")
                victim.terminate()

    @staticmethod
    def _surge(value, replicas, default, up):
        v = default if value is None else value
        if isinstance(v, str) and v.endswith("%"):
            x = replicas * int(v[:-1]) / 100
            return math.ceil(x) if up else math.floor(x)
        return int(v)

    def _deployment(self, ns, doc):
        name, spec = doc["metadata"]["name"], doc["spec"]
        replicas = int(spec.get("replicas", 1))
        ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge = self._surge(ru.get("maxSurge"), replicas, "25%", True)
        unavailable = self._surge(ru.get("maxUnavailable"), replicas, "25%", False)
        if surge == 0 and unavailable == 0:
            surge = 1
        rev = revision(spec["template"])
        live = [p for p in self._pods_of(ns, "Deployment", name) if not p.terminating]
        new = [p for p in live if p.revision == rev]
        old = [p for p in live if p.revision != rev]
        if len(new) < replicas and len(live) < replicas + surge:
            suffix = "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            self._create_pod(ns, doc, None, f"{name}-{suffix}", rev)
            return
        # As the Deployment controller: old pods may go while at least replicas - maxUnavailable
        # stay available, counting a new pod only once it is Ready; not-Ready pods go first.
        scale_down = len(live) - (replicas - unavailable) - sum(not p.ready for p in new)
        victims = old if old else new[replicas:]
        if victims and (scale_down > 0 or not old):
            p = sorted(victims, key=lambda p: (p.ready, -p.created))[0]
            self.log(f"deployment {ns}/{name}: deleting {p.name}")
            p.terminate()

    def _create_pod(self, ns, doc, ordinal, pod_name, rev):
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc["spec"]
        tpl = spec["template"]
        labels = dict(tpl["metadata"].get("labels") or {})
        aliases = []
        claims = {}
        if kind == "StatefulSet":
            labels["statefulset.kubernetes.io/pod-name"] = pod_name
            aliases.append(f"{pod_name}.{spec['serviceName']}")
            for t in spec.get("volumeClaimTemplates") or []:
                claim = t["metadata"]["name"]
                pvc = self.pvcs.setdefault((ns, f"{claim}-{pod_name}"),
                                           {"volume": f"{self.project}-{claim}-{pod_name}", "deleting": False})
                if pvc["deleting"]:
                    return  # Kubernetes too keeps the pod pending until the old claim is gone
                claims[claim] = pvc["volume"]
        labels["controller-revision-hash" if kind == "StatefulSet" else "pod-template-hash"] = rev
        for (k, sns, sname), o in self.objects.items():
            if k == "Service" and sns == ns and selects(o["doc"]["spec"]["selector"], labels):
                aliases.append(sname)
        pod = Pod(self, ns, pod_name, (kind, name), ordinal, rev, labels, self.stand_ins.apply(tpl["spec"]),
                  self._allocate_ip(), aliases, claims)
        self.pods[(ns, pod_name)] = pod
        self.log(f"{kind.lower()} {ns}/{name}: creating pod {pod_name} ({pod.ip}, aliases {', '.join(aliases)})")
        pod.start()

    def _allocate_ip(self):
        hosts = list(self.subnet.hosts())
        for _ in range(len(hosts)):
            self._next_ip = self._next_ip + 1 if self._next_ip < len(hosts) - 1 else 10
            ip = str(hosts[self._next_ip])
            if ip not in self.ips_in_use:
                self.ips_in_use.add(ip)
                return ip
        raise Refused(f"no free IP in {self.subnet}")

    # --- status ---------------------------------------------------------------------------
    def _status(self):
        objects = {}
        for (kind, ns, name), o in self.objects.items():
            doc = o["doc"]
            if kind == "Secret":  # the values stay in the controller
                keys = sorted(set(doc.get("stringData") or {}) | set(doc.get("data") or {}))
                doc = {"kind": "Secret", "metadata": doc["metadata"], "type": doc.get("type", "Opaque"),
                       "keys": keys}
            entry = {"created": o["created"], "doc": doc}
            if kind == "Service" and (ns, name) in self.lbs:
                lb = self.lbs[(ns, name)]
                entry["doc"] = {**doc, "status": lb.status()}
                entry["hostPorts"] = {str(s): h for s, h in lb.ports.items()}
            objects.setdefault(kind, {})[f"{ns}/{name}"] = entry
        workloads = {}
        for (kind, ns, name), o in self.objects.items():
            if kind not in WORKLOADS:
                continue
            spec = o["doc"]["spec"]
            rev = revision(spec["template"])
            pods = self._pods_of(ns, kind, name)
            live = [p for p in pods if not p.terminating]
            workloads[f"{kind}/{ns}/{name}"] = {
                "replicas": int(spec.get("replicas", 1)),
                "pods": len(live),
                "ready": sum(p.ready for p in live),
                "updated": sum(p.revision == rev for p in live),
                "updatedReady": sum(p.revision == rev and p.ready for p in live),
                "terminating": len(pods) - len(live),
                "revision": f"{name}-{rev}",
                "strategy": (spec.get("updateStrategy") or spec.get("strategy") or {}).get("type", "RollingUpdate"),
            }
        return {
            "project": self.project, "context": self.context, "network": self.network,
            "subnet": str(self.subnet), "stopping": self.stopping,
            "namespaces": {n: {"created": o["created"], "deleting": n in self.ns_deleting}
                           for (k, _, n), o in self.objects.items() if k == "Namespace"},
            "objects": objects, "workloads": workloads,
            "pods": {f"{ns}/{n}": p.status_row() for (ns, n), p in self.pods.items()},
            "pvcs": {f"{ns}/{n}": c for (ns, n), c in self.pvcs.items()},
        }

    # --- for the LoadBalancer -----------------------------------------------------------------
    def backends(self, ns, service, port):
        """(podIP, containerPort) of the Ready pods a Service port leads to."""
        with self.lock:
            obj = self.objects.get(("Service", ns, service))
            if obj is None:
                return []
            sel = obj["doc"]["spec"]["selector"]
            target = port.get("targetPort", port["port"])
            out = []
            for p in self.pods.values():
                if p.namespace == ns and p.ready and not p.terminating and selects(sel, p.labels):
                    try:
                        out.append((p.ip, p._port(target)))
                    except ValueError:
                        pass
            return out


class LoadBalancer:
    """A `type: LoadBalancer` Service: one TCP proxy on 127.0.0.1 per Service port."""

    def __init__(self, ctl, ns, name, doc):
        self.ctl, self.ns, self.name = ctl, ns, name
        self.ports = {}  # service port -> host port
        self._socks = []
        self._rr = 0
        for port in doc["spec"]["ports"]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bound = False
            if not ctl.free_lb_ports:
                try:
                    sock.bind(("127.0.0.1", int(port["port"])))
                    bound = True
                except OSError:
                    pass
            if not bound:
                sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            self.ports[int(port["port"])] = sock.getsockname()[1]
            self._socks.append(sock)
            threading.Thread(target=self._accept, args=(sock, port), daemon=True,
                             name=f"lb-{name}-{port['port']}").start()
            ctl.log(f"service {ns}/{name}: LoadBalancer port {port['port']} on 127.0.0.1:{self.ports[int(port['port'])]}")

    def status(self):
        # An ingress address only when every port is served on its own port number.
        if self.ports and all(s == h for s, h in self.ports.items()):
            return {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
        return {"loadBalancer": {}}

    def close(self):
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self, sock, port):
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, port), daemon=True).start()

    def _serve(self, client, port):
        backends = self.ctl.backends(self.ns, self.name, port)
        if not backends:
            client.close()
            return
        self._rr += 1
        ip, p = backends[self._rr % len(backends)]
        try:
            upstream = socket.create_connection((ip, p), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        other = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        other.start()
        _pump(upstream, client)
        other.join()
        client.close()
        upstream.close()


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass
