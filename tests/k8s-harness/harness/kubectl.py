"""The kubectl shim: exactly the commands scripts/deployK8sServices.sh, scripts/stopK8sServices.sh
and the workshop use, against the controller's state directory (KUBE_HARNESS_STATE). Standard
library only. Anything else prints "kubectl (k8s-harness): '<args>' is not emulated" and exits 1.

  config current-context
  apply -f FILE                                   (the controller reads FILE where it is)
  get namespace|secret|service|pod|statefulset|deployment [NAME] [-o jsonpath=TEMPLATE]
  rollout status KIND/NAME [--timeout=D]          (statefulset, deployment; D like 300s, 5m)
  rollout restart KIND/NAME
  scale statefulsets NAME --replicas=N            (also statefulset/NAME, deployment/NAME)
  delete KIND[,KIND...] (NAME... | --all) [--ignore-not-found] [--wait=true|false]
  delete namespace NAME [--wait=true|false]
  wait --for=delete pods --all|pod/NAME [--timeout=D]
  exec POD [-c CONTAINER] [-i] [-t] -- COMMAND...  (docker exec; its exit code is passed through)

`--namespace X`, `--namespace=X` and `-n X` are accepted anywhere before `--`.
"""

import json
import os
import re
import subprocess
import sys
import time

from .state import StateDir

KINDS = {  # kubectl's resource names -> the harness's kinds
    "pod": "Pod", "pods": "Pod", "po": "Pod",
    "service": "Service", "services": "Service", "svc": "Service",
    "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
    "statefulset.apps": "StatefulSet", "statefulsets.apps": "StatefulSet",
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "deployment.apps": "Deployment", "deployments.apps": "Deployment",
    "secret": "Secret", "secrets": "Secret",
    "configmap": "ConfigMap", "configmaps": "ConfigMap", "cm": "ConfigMap",
    "serviceaccount": "ServiceAccount", "serviceaccounts": "ServiceAccount", "sa": "ServiceAccount",
    "role": "Role", "roles": "Role", "rolebinding": "RoleBinding", "rolebindings": "RoleBinding",
    "poddisruptionbudget": "PodDisruptionBudget", "poddisruptionbudgets": "PodDisruptionBudget",
    "pdb": "PodDisruptionBudget",
    "persistentvolumeclaim": "PersistentVolumeClaim", "persistentvolumeclaims": "PersistentVolumeClaim",
    "pvc": "PersistentVolumeClaim",
    "namespace": "Namespace", "namespaces": "Namespace", "ns": "Namespace",
    # `all`: what kubectl's category covers that the harness has (it has no ReplicaSets)
    "all": ["Pod", "Service", "StatefulSet", "Deployment"],
    "replicasets": [], "replicaset": [], "rs": [],
}
PLURAL = {"Pod": "pods", "Service": "services", "StatefulSet": "statefulsets.apps", "Deployment": "deployments.apps",
          "Secret": "secrets", "Namespace": "namespaces", "ConfigMap": "configmaps"}


class NotEmulated(Exception):
    pass


def fail(msg, rc=1):
    sys.stderr.write(msg.rstrip("\n") + "\n")
    return rc


def duration(text):
    m = re.fullmatch(r"(\d+)(s|m|h)?", text or "")
    if not m:
        raise NotEmulated()
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def age(created):
    s = int(time.time() - created)
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60}m"


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def jsonpath(template, obj):
    """kubectl's jsonpath for `{.a.b[0].c}` pieces and literal text; a missing key prints nothing."""
    def one(path):
        cur = obj
        for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
            key, idx = part
            if key:
                cur = cur.get(key) if isinstance(cur, dict) else None
            else:
                cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
            if cur is None:
                return ""
        return cur if isinstance(cur, str) else json.dumps(cur)
    if re.search(r"\{[^}]*[*?@]|range|\{end\}", template):
        raise NotEmulated()
    return re.sub(r"\{([^}]*)\}", lambda m: one(m.group(1)), template)


class Shim:
    def __init__(self, argv):
        self.argv = argv
        root = os.environ.get("KUBE_HARNESS_STATE")
        if not root:
            raise SystemExit(fail("kubectl (k8s-harness): KUBE_HARNESS_STATE is not set "
                                  "(eval \"$(scripts/k8s-harness.sh env --state DIR)\")"))
        self.state = StateDir(root)
        self.namespace = None
        rest, i = [], 0
        while i < len(argv):
            a = argv[i]
            if a == "--":
                rest += argv[i:]
                break
            if a in ("-n", "--namespace") and i + 1 < len(argv):
                self.namespace = argv[i + 1]
                i += 2
                continue
            if a.startswith("--namespace="):
                self.namespace = a.split("=", 1)[1]
            else:
                rest.append(a)
            i += 1
        self.args = rest

    @property
    def ns(self):
        return self.namespace or "default"

    def run(self):
        if not self.args:
            raise NotEmulated()
        cmd, args = self.args[0], self.args[1:]
        if cmd == "config" and args == ["current-context"]:
            info = self.state.controller()
            if not info:
                return fail("error: current-context is not set (no k8s-harness controller serves "
                            f"{self.state.root})")
            print(info["context"])
            return 0
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise NotEmulated()
        if not self.state.controller():
            return fail(f"error: no k8s-harness controller serves {self.state.root} "
                        "(start it: scripts/k8s-harness.sh serve ...)")
        return handler(args)

    def call(self, op, **args):
        resp = self.state.call(op, args)
        sys.stdout.write(resp["stdout"])
        sys.stderr.write(resp["stderr"])
        return resp["rc"]

    # --- apply ------------------------------------------------------------------------------
    def cmd_apply(self, args):
        if len(args) == 2 and args[0] in ("-f", "--filename"):
            path = args[1]
        elif len(args) == 1 and args[0].startswith(("-f=", "--filename=")):
            path = args[0].split("=", 1)[1]
        else:
            raise NotEmulated()
        if not os.path.isfile(path):
            return fail(f'error: the path "{path}" does not exist')
        return self.call("apply", path=os.path.abspath(path), namespace=self.namespace)

    # --- get --------------------------------------------------------------------------------
    def cmd_get(self, args):
        output = None
        names = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-o", "--output") and i + 1 < len(args):
                output = args[i + 1]
                i += 2
                continue
            if a.startswith(("-o=", "--output=")):
                output = a.split("=", 1)[1]
            elif a.startswith("-"):
                raise NotEmulated()
            else:
                names.append(a)
            i += 1
        if not names or names[0] not in KINDS or isinstance(KINDS[names[0]], list):
            raise NotEmulated()
        kind, names = KINDS[names[0]], names[1:]
        if output is not None and not (output.startswith("jsonpath=") and len(names) == 1):
            raise NotEmulated()
        status = self.state.status()
        items = self._items(status, kind)
        if names:
            missing = [n for n in names if n not in items]
            if missing:
                return fail(f'Error from server (NotFound): {PLURAL.get(kind, kind.lower())} "{missing[0]}" not found')
            items = {n: items[n] for n in names}
        if output:
            sys.stdout.write(jsonpath(output[len("jsonpath="):], items[names[0]]["doc"]))
            return 0
        if not items:
            return fail(f"No resources found in {self.ns} namespace.", rc=0)
        sys.stdout.write(table(self._rows(kind, items)))
        return 0

    def _items(self, status, kind):
        if kind == "Pod":
            return {p["name"]: p for k, p in status.get("pods", {}).items() if p["namespace"] == self.ns}
        if kind == "Namespace":
            return {n: {**o, "doc": {"metadata": {"name": n}}} for n, o in status.get("namespaces", {}).items()}
        if kind not in ("Secret", "Service", "StatefulSet", "Deployment", "ConfigMap"):
            raise NotEmulated()
        return {k.split("/", 1)[1]: o for k, o in status.get("objects", {}).get(kind, {}).items()
                if k.split("/", 1)[0] == self.ns}

    def _rows(self, kind, items):
        if kind == "Pod":
            rows = [("NAME", "READY", "STATUS", "RESTARTS", "AGE")]
            for n, p in sorted(items.items()):
                restarts = str(p["restarts"])
                if p["lastRestart"]:
                    restarts += f" ({age(p['lastRestart'])} ago)"
                rows.append((n, f"{int(p['ready'])}/1", p["status"], restarts, age(p["created"])))
            return rows
        if kind == "Namespace":
            return [("NAME", "STATUS", "AGE")] + [
                (n, "Terminating" if o["deleting"] else "Active", age(o["created"])) for n, o in sorted(items.items())]
        if kind == "Secret":
            return [("NAME", "TYPE", "DATA", "AGE")] + [
                (n, o["doc"]["type"], len(o["doc"]["keys"]), age(o["created"])) for n, o in sorted(items.items())]
        if kind == "Service":
            rows = [("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE")]
            for n, o in sorted(items.items()):
                spec = o["doc"]["spec"]
                ingress = ((o["doc"].get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                ext = ingress[0]["ip"] if ingress else ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>")
                ports = ",".join(f"{p['port']}/TCP" for p in spec["ports"])
                rows.append((n, spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), ext, ports,
                             age(o["created"])))
            return rows
        if kind in ("StatefulSet", "Deployment"):
            status = self.state.status()
            rows = [("NAME", "READY", "AGE")]
            for n, o in sorted(items.items()):
                w = status["workloads"].get(f"{kind}/{self.ns}/{n}", {})
                rows.append((n, f"{w.get('ready', 0)}/{w.get('replicas', 0)}", age(o["created"])))
            return rows
        return [("NAME", "AGE")] + [(n, age(o["created"])) for n, o in sorted(items.items())]

    # --- rollout ----------------------------------------------------------------------------
    def _workload(self, ref):
        if "/" not in ref:
            raise NotEmulated()
        kind, name = ref.split("/", 1)
        kind = KINDS.get(kind)
        if kind not in ("StatefulSet", "Deployment"):
            raise NotEmulated()
        return kind, name

    def cmd_rollout(self, args):
        if len(args) == 2 and args[0] == "restart":
            kind, name = self._workload(args[1])
            return self.call("rollout_restart", kind=kind, name=name, namespace=self.ns)
        if not args or args[0] != "status" or len(args) < 2:
            raise NotEmulated()
        kind, name = self._workload(args[1])
        timeout = 0
        rest = args[2:]
        while rest:
            if rest[0].startswith("--timeout="):
                timeout = duration(rest[0].split("=", 1)[1])
                rest = rest[1:]
            elif rest[0] == "--timeout" and len(rest) > 1:
                timeout, rest = duration(rest[1]), rest[2:]
            else:
                raise NotEmulated()
        deadline = time.monotonic() + timeout if timeout else None
        last = None
        res = PLURAL[kind]
        while True:
            status = self.state.status()
            obj = status.get("objects", {}).get(kind, {}).get(f"{self.ns}/{name}")
            w = status.get("workloads", {}).get(f"{kind}/{self.ns}/{name}")
            if obj is None or w is None:
                return fail(f'Error from server (NotFound): {res} "{name}" not found')
            msg, done = self._rollout_message(kind, name, w)
            if msg != last:
                print(msg, flush=True)
                last = msg
            if done:
                return 0
            if deadline and time.monotonic() > deadline:
                return fail("error: timed out waiting for the condition")
            time.sleep(0.5)

    @staticmethod
    def _rollout_message(kind, name, w):
        r = w["replicas"]
        if kind == "StatefulSet":
            if w["strategy"] != "RollingUpdate":
                return "rollout status is only available for RollingUpdate strategy type", True
            if w["ready"] < r or w["pods"] < r:
                return f"Waiting for {r - min(w['ready'], r)} pods to be ready...", False
            if w["updated"] < r or w["terminating"] or w["pods"] > r:
                return (f"waiting for statefulset rolling update to complete {w['updated']} pods at revision "
                        f"{w['revision']}..."), False
            return f"statefulset rolling update complete {r} pods at revision {w['revision']}...", True
        prefix = f'Waiting for deployment "{name}" rollout to finish: '
        if w["updated"] < r:
            return prefix + f"{w['updated']} out of {r} new replicas have been updated...", False
        if w["pods"] > w["updated"]:
            return prefix + f"{w['pods'] - w['updated']} old replicas are pending termination...", False
        if w["updatedReady"] < w["updated"]:
            return prefix + f"{w['updatedReady']} of {w['updated']} updated replicas are available...", False
        return f'deployment "{name}" successfully rolled out', True

    # --- scale ------------------------------------------------------------------------------
    def cmd_scale(self, args):
        replicas, refs = None, []
        for a in args:
            if a.startswith("--replicas="):
                replicas = a.split("=", 1)[1]
            elif a.startswith("-"):
                raise NotEmulated()
            else:
                refs.append(a)
        if replicas is None or not replicas.isdigit():
            raise NotEmulated()
        if len(refs) == 1:
            kind, name = self._workload(refs[0])
        elif len(refs) == 2 and KINDS.get(refs[0]) in ("StatefulSet", "Deployment"):
            kind, name = KINDS[refs[0]], refs[1]
        else:
            raise NotEmulated()
        return self.call("scale", kind=kind, name=name, namespace=self.ns, replicas=int(replicas))

    # --- delete / wait ----------------------------------------------------------------------
    def cmd_delete(self, args):
        all_, ignore, wait, words = False, False, True, []
        for a in args:
            if a == "--all":
                all_ = True
            elif a in ("--ignore-not-found", "--ignore-not-found=true"):
                ignore = True
            elif a in ("--wait", "--wait=true"):
                wait = True
            elif a == "--wait=false":
                wait = False
            elif a.startswith("-"):
                raise NotEmulated()
            else:
                words.append(a)
        if not words:
            raise NotEmulated()
        kinds = []
        for k in words[0].split(","):
            if k not in KINDS:
                raise NotEmulated()
            kinds += KINDS[k] if isinstance(KINDS[k], list) else [KINDS[k]]
        names = words[1:]
        if all_ == bool(names) or ("Namespace" in kinds and (len(kinds) > 1 or all_)):
            raise NotEmulated()
        rc = self.call("delete", kinds=kinds, names=names or None, namespace=self.ns, ignore_not_found=ignore)
        if rc != 0 or not wait:
            return rc
        # kubectl delete waits until the objects are gone (pods terminated, claims released)
        while True:
            st = self.state.status()
            busy = False
            if "Namespace" in kinds:
                busy = any(n in st.get("namespaces", {}) for n in names)
            if "Pod" in kinds or "Namespace" in kinds:
                busy = busy or any(p["terminating"] and (p["namespace"] == self.ns or p["namespace"] in names)
                                   for p in st.get("pods", {}).values())
            if "PersistentVolumeClaim" in kinds:
                busy = busy or any(c["deleting"] and k.split("/")[0] == self.ns for k, c in st.get("pvcs", {}).items())
            if not busy:
                return 0
            time.sleep(0.5)

    def cmd_wait(self, args):
        target, timeout, for_ = None, 30, None
        for a in args:
            if a.startswith("--for="):
                for_ = a.split("=", 1)[1]
            elif a.startswith("--timeout="):
                timeout = duration(a.split("=", 1)[1])
            elif a in ("pods", "pod", "po"):
                target = target or "pods"
            elif a == "--all" and target == "pods":
                target = "all"
            elif a.startswith("pod/"):
                target = a
            else:
                raise NotEmulated()
        if for_ != "delete" or target in (None, "pods"):
            raise NotEmulated()
        deadline = time.monotonic() + timeout
        while True:
            pods = [p for p in self.state.status().get("pods", {}).values() if p["namespace"] == self.ns
                    and (target == "all" or p["name"] == target[4:])]
            if not pods:
                return 0
            if time.monotonic() > deadline:
                return fail("error: timed out waiting for the condition on " + ", ".join(
                    "pods/" + p["name"] for p in pods))
            time.sleep(0.5)

    # --- exec -------------------------------------------------------------------------------
    def cmd_exec(self, args):
        if "--" not in args:
            raise NotEmulated()
        cut = args.index("--")
        opts, command = args[:cut], args[cut + 1:]
        pod, container, flags = None, None, []
        i = 0
        while i < len(opts):
            a = opts[i]
            if a in ("-c", "--container") and i + 1 < len(opts):
                container = opts[i + 1]
                i += 2
                continue
            if a.startswith("--container="):
                container = a.split("=", 1)[1]
            elif a in ("-i", "-t", "-it", "-ti", "--stdin", "--tty"):
                flags += {"-i": ["-i"], "--stdin": ["-i"], "-t": ["-t"], "--tty": ["-t"]}.get(a, ["-i", "-t"])
            elif a.startswith("-") or pod is not None:
                raise NotEmulated()
            else:
                pod = a[4:] if a.startswith("pod/") else a
            i += 1
        if pod is None or not command:
            raise NotEmulated()
        p = self.state.status().get("pods", {}).get(f"{self.ns}/{pod}")
        if p is None:
            return fail(f'Error from server (NotFound): pods "{pod}" not found')
        if container is not None and container != p["containerName"]:
            return fail(f"error: container {container} is not valid for pod {pod}")
        if not p["running"]:
            return fail(f"error: unable to upgrade connection: container not found ({p['status']})")
        return subprocess.call(["docker", "exec", *flags, p["container"], *command])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        shim = Shim(argv)
        return shim.run()
    except NotEmulated:
        return fail(f"kubectl (k8s-harness): '{' '.join(argv)}' is not emulated")
