"""One pod = one Docker container, driven by its own thread, as a kubelet drives a pod:
start, postStart hook, readiness and liveness probes, restarts, and termination (preStop hook,
SIGTERM, SIGKILL after the grace period).

Emulation choices:
  - The container is `<project>-<pod>`, hostname = pod name, on the harness network with the IP
    the controller assigned (`docker run --ip`), so status.podIP is known before it starts. Its
    network aliases (`<pod>.<serviceName>`, `<service>` of every selecting Service) are fixed at
    start, as Docker network aliases are.
  - Restarts are the harness's, not Docker's (no --restart policy), so they can be counted: a
    container that exits, fails its postStart hook, or fails its liveness probe failureThreshold
    times is started again, the first time at once, then after 10 s, 20 s, ... (at most 300 s),
    like the kubelet's CrashLoopBackOff. `docker start` reuses the container: same IP and mounts.
  - emptyDir: a named Docker volume per pod (`<project>-<pod>-emptydir-<volume>`) that survives
    container restarts and is removed with the pod. volumeClaimTemplates: a named volume
    `<project>-<claim>-<pod>`, kept when the pod goes. Both are mounted empty (volume-nocopy), and
    a new one is prepared as the kubelet would (mode 0777, or group fsGroup with setgid) by a
    short-lived helper container of the pod's image; fsGroup also joins the process
    (`--group-add`).
  - Probes: httpGet from the host to podIP:port (Docker bridge IPs are routable from the host),
    exec through `docker exec`; successThreshold, failureThreshold, periods and timeouts honoured.
"""

import os
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.request

from . import docker
from .manifests import Refused, expand, parse_cpu, parse_memory


class Pod:
    def __init__(self, ctl, namespace, name, owner, ordinal, revision, labels, spec, ip, aliases, claims):
        self.ctl = ctl
        self.namespace = namespace
        self.name = name
        self.owner = owner  # (kind, name)
        self.ordinal = ordinal
        self.revision = revision
        self.labels = labels
        self.spec = spec  # the effective pod spec (stand-ins applied)
        self.container = spec["containers"][0]
        self.ip = ip
        self.aliases = aliases
        self.claims = claims  # {claim name: docker volume}
        self.cname = f"{ctl.project}-{name}"
        self.created = time.time()
        self.grace = int(spec.get("terminationGracePeriodSeconds", 30))
        # status, read by the controller under its lock
        self.reason = "ContainerCreating"
        self.message = ""
        self.running = False
        self.ready = False
        self.restarts = 0
        self.last_restart = None
        self.terminating = False
        self.gone = False
        self._backoff_until = 0.0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"pod-{name}", daemon=True)

    # --- interface to the controller -------------------------------------------------------
    def start(self):
        self._thread.start()

    def terminate(self):
        """Requests graceful deletion; the thread does it (preStop, SIGTERM, SIGKILL) and exits."""
        self.terminating = True
        self.ready = False
        self._wake.set()

    def status_row(self):
        if self.terminating:
            status = "Terminating"
        elif self.running:
            status = "Running"
        else:
            status = self.reason
        return {
            "name": self.name, "namespace": self.namespace, "owner": list(self.owner),
            "ordinal": self.ordinal, "revision": self.revision, "labels": self.labels,
            "container": self.cname, "containerName": self.container["name"], "podIP": self.ip,
            "created": self.created, "ready": self.ready, "running": self.running, "status": status,
            "message": self.message, "restarts": self.restarts, "lastRestart": self.last_restart,
            "terminating": self.terminating,
        }

    def log(self, msg):
        self.ctl.log(f"pod {self.namespace}/{self.name}: {msg}")

    # --- the thread ---------------------------------------------------------------------------
    def _main(self):
        try:
            self._lifecycle()
        except Exception:  # a harness bug: say so, keep the pod (no re-creation loop) until deleted
            self.log("harness error:\n" + traceback.format_exc())
            self.running = self.ready = False
            self.reason, self.message = "HarnessError", "see the controller's log"
            while not self.terminating:
                self._sleep(1)
            self._stop()
        finally:
            try:
                self._remove()
            finally:
                self.gone = True

    def _sleep(self, seconds):
        self._wake.wait(seconds)
        self._wake.clear()

    def _lifecycle(self):
        created = False
        while not self.terminating:
            if not created:
                err = self._prepare_and_run()
                if err:
                    self.reason, self.message = err
                    self.log(f"{err[0]}: {err[1]}")
                    self._sleep(5)
                    continue
                created = True
                self._after_start()
                continue
            state = self.ctl.observed(self.cname, self._started_mono)
            if state == "missing":  # removed behind the harness's back: create it again
                self._died("container removed")
                created = False
                continue
            if state is not None and state != "running":
                if self.running:  # it exited (or was killed) on its own
                    self._died(f"container exited ({state})")
                if time.monotonic() >= self._backoff_until and not self.terminating:
                    docker.run(["start", self.cname], check=False)
                    self._after_start()
                    continue
            elif self.running:
                self._probe()
            self._sleep(0.5)
        self._stop()

    def _backoff(self):
        # the first restart at once, then 10 s doubling up to 300 s (the kubelet's CrashLoopBackOff)
        return 0 if self.restarts <= 1 else min(300, 10 * 2 ** (self.restarts - 2))

    def _died(self, why):
        self.running = False
        self.ready = False
        self.restarts += 1
        self.last_restart = time.time()
        self.reason = "CrashLoopBackOff" if self.restarts > 1 else "Error"
        self._backoff_until = time.monotonic() + self._backoff()
        self.log(f"{why}; restart #{self.restarts}")

    def _after_start(self):
        """Runs the postStart hook; a failure kills the container (it is then restarted)."""
        self._started_mono = time.monotonic()
        self._probe_state = {k: {"next": self._started_mono + float((self.container.get(k) or {}).get("initialDelaySeconds", 0)),
                                 "fails": 0, "oks": 0}
                             for k in ("readinessProbe", "livenessProbe")}
        self.running = True
        self.ready = False
        self.reason = "Running"
        hook = ((self.container.get("lifecycle") or {}).get("postStart") or {}).get("exec")
        if hook:
            rc, out = self._exec(hook["command"], timeout=self.grace)
            if rc != 0:
                self.log(f"postStart hook failed ({rc}): {out.strip()[-300:]}; killing the container")
                docker.run(["kill", self.cname], check=False)
                self._died("postStart hook failed")

    # --- docker run -------------------------------------------------------------------------
    def _prepare_and_run(self):
        """Builds the env and volumes and runs the container. Returns (reason, message) when the
        pod cannot start yet (missing Secret, image, runAsNonRoot...), as the kubelet reports."""
        c, spec = self.container, self.spec
        if not docker.image_exists(c["image"]):
            return ("ErrImageNeverPull", f"image {c['image']} is not present and there is no registry")
        env = {}
        for e in c.get("env") or []:
            vf = e.get("valueFrom")
            if vf is None:
                env[e["name"]] = expand(e.get("value", ""), env)
            elif "fieldRef" in vf:
                path = vf["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                                  "status.podIP": self.ip}[path]
            else:
                ref = vf["secretKeyRef"]
                value = self.ctl.secret_value(self.namespace, ref["name"], ref["key"])
                if value is None:
                    return ("CreateContainerConfigError",
                            f"secret {ref['name']!r} or its key {ref['key']!r} not found (env {e['name']})")
                env[e["name"]] = value
        psc = spec.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            user = str(uid) if uid is not None else docker.image_user(c["image"]).split(":")[0]
            if not user.isdigit() or int(user) == 0:
                return ("CreateContainerConfigError",
                        f"runAsNonRoot and the image's user {user or 'root'!r} is not a non-zero numeric uid")

        args = ["run", "-d", "--name", self.cname, "--hostname", self.name,
                *docker.label_args(self.ctl.project, pod=f"{self.namespace}.{self.name}"),
                "--network", self.ctl.network, "--ip", self.ip]
        for a in self.aliases:
            args += ["--network-alias", a]
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if psc.get("fsGroup") is not None:
            args += ["--group-add", str(psc["fsGroup"])]
        for s in psc.get("sysctls") or []:
            args += ["--sysctl", f"{s['name']}={s['value']}"]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for cap in (csc.get("capabilities") or {}).get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in (csc.get("capabilities") or {}).get("add") or []:
            args += ["--cap-add", cap]
        limits = (c.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            args += ["--cpus", f"{parse_cpu(limits['cpu']):g}"]
        if "memory" in limits:
            args += ["--memory", str(parse_memory(limits["memory"]))]
        # Volumes: mounted with volume-nocopy, so they start empty as in Kubernetes (Docker
        # would otherwise copy the image's folder into a new volume).
        fs_group = psc.get("fsGroup")
        emptydirs = {v["name"] for v in spec.get("volumes") or []}
        fresh = []  # (volume, mode, group) of volumes created now, prepared below
        for m in c.get("volumeMounts") or []:
            if m["name"] in emptydirs:
                vol = self.emptydir_volume(m["name"])
                docker.run(["volume", "rm", "-f", vol], check=False)  # a new pod: a new emptyDir
                docker.run(["volume", "create", *docker.label_args(self.ctl.project), vol])
                fresh.append((vol, "2777" if fs_group is not None else "0777", fs_group))
            else:
                vol = self.claims[m["name"]]
                if docker.run(["volume", "inspect", vol], check=False).returncode != 0:
                    docker.run(["volume", "create", *docker.label_args(self.ctl.project, pvc=m["name"]), vol])
                    fresh.append((vol, "2775" if fs_group is not None else "0777", fs_group))
            ro = ",readonly" if m.get("readOnly") else ""
            args += ["--mount", f"type=volume,src={vol},dst={m['mountPath']},volume-nocopy{ro}"]
        if fresh:
            err = self._prepare_volumes(fresh)
            if err:
                return ("CreateContainerError", err)
        for hm in c.get("x-hostMounts") or []:  # stand-ins.yaml: host folders (the blotter)
            args += ["--mount", f"type=bind,src={hm['hostPath']},dst={hm['mountPath']}"]
        if c.get("workingDir"):
            args += ["--workdir", c["workingDir"]]
        # The service account (the kubernetes-api discovery variant): the fake API server's
        # folder and address, as the kubelet mounts and sets them.
        if spec.get("serviceAccountName") and spec.get("automountServiceAccountToken", True) is not False:
            try:
                sa = self.ctl.service_account(self.namespace)
            except Refused as e:
                return ("CreateContainerConfigError", str(e))
            args += ["--mount", f"type=bind,src={sa['dir']},dst=/var/run/secrets/kubernetes.io/serviceaccount,readonly"]
            env["KUBERNETES_SERVICE_HOST"] = sa["host"]
            env["KUBERNETES_SERVICE_PORT"] = str(sa["port"])
        # Secrets stay out of argv: `-e NAME` takes the value from docker's own environment.
        penv = dict(os.environ)
        for k, v in env.items():
            args += ["-e", k]
            penv[k] = v
        # command replaces the image's ENTRYPOINT, args its CMD (Kubernetes semantics).
        command = c.get("command")
        if command:
            args += ["--entrypoint", command[0]]
        args.append(c["image"])
        if command:
            args += list(command[1:]) + list(c.get("args") or [])
        elif c.get("args") is not None:
            args += list(c["args"])
        docker.run(["rm", "-f", "-v", self.cname], check=False)
        p = docker.run(args, check=False, env=penv)
        if p.returncode != 0:
            docker.run(["rm", "-f", "-v", self.cname], check=False)
            return ("RunContainerError", p.stderr.strip())
        self.log(f"started {self.cname} at {self.ip}")
        return None

    def _prepare_volumes(self, fresh):
        """Sets a new volume's mode, and its group to fsGroup, as the kubelet does: emptyDir 0777
        (setgid with fsGroup), a claim group fsGroup with g+rwxs (0777 without fsGroup, like a
        local-path provisioner). Done by a short helper container of the pod's own image, as root."""
        script, mounts = [], []
        for i, (vol, mode, group) in enumerate(fresh):
            mounts += ["--mount", f"type=volume,src={vol},dst=/harness-volumes/{i},volume-nocopy"]
            if group is not None:
                script.append(f"chgrp {int(group)} /harness-volumes/{i}")
            script.append(f"chmod {mode} /harness-volumes/{i}")
        p = docker.run(["run", "--rm", "--name", f"{self.cname}-volumes", *docker.label_args(self.ctl.project),
                        "--network", "none", "--user", "0", "--entrypoint", "/bin/sh", *mounts,
                        self.container["image"], "-c", " && ".join(script)], check=False)
        return None if p.returncode == 0 else f"preparing the volumes failed: {p.stderr.strip()}"

    def emptydir_volume(self, volume):
        return f"{self.ctl.project}-{self.name}-emptydir-{volume}"

    # --- probes and hooks ---------------------------------------------------------------------
    def _exec(self, command, timeout):
        try:
            p = subprocess.run(["docker", "exec", self.cname, *command], capture_output=True, text=True,
                               timeout=timeout)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            return -1, f"timed out after {timeout}s"

    def _port(self, port):
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"port {port!r} is not a container port")

    def _check(self, probe):
        timeout = float(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            rc, _ = self._exec(probe["exec"]["command"], timeout)
            return rc == 0
        h = probe["httpGet"]
        url = f"http://{self.ip}:{self._port(h['port'])}{h.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return 200 <= r.status < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _probe(self):
        now = time.monotonic()
        for kind in ("readinessProbe", "livenessProbe"):
            probe = self.container.get(kind)
            st = self._probe_state[kind]
            if probe is None:
                if kind == "readinessProbe":
                    self.ready = True  # no readiness probe: ready once running
                continue
            if now < st["next"]:
                continue
            ok = self._check(probe)
            st["next"] = time.monotonic() + float(probe.get("periodSeconds", 10))
            if self.terminating:
                return
            if ok:
                st["fails"], st["oks"] = 0, st["oks"] + 1
            else:
                st["fails"], st["oks"] = st["fails"] + 1, 0
            if kind == "readinessProbe":
                if ok and st["oks"] >= int(probe.get("successThreshold", 1)):
                    if not self.ready:
                        self.log("Ready")
                    self.ready = True
                elif not ok and st["fails"] >= int(probe.get("failureThreshold", 3)):
                    if self.ready:
                        self.log("not Ready")
                    self.ready = False
            elif not ok and st["fails"] >= int(probe.get("failureThreshold", 3)):
                self.log(f"liveness probe failed {st['fails']} times: restarting the container")
                self.ready = False
                self._stop_container()
                self._died("liveness probe failed")  # the loop starts it again after the back-off
                return

    # --- termination -----------------------------------------------------------------------
    def _stop_container(self):
        """preStop hook (bounded by the grace period), then SIGTERM, SIGKILL when the grace
        period is over (`docker stop -t`). Kubernetes adds 2 s when preStop used it all."""
        deadline = time.monotonic() + self.grace
        hook = ((self.container.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook and self.running:
            t0 = time.monotonic()
            rc, out = self._exec(hook["command"], timeout=self.grace)
            self.log(f"preStop hook exited {rc} after {time.monotonic() - t0:.1f}s: {out.strip()[-200:]}")
        remaining = max(2, int(deadline - time.monotonic() + 0.999))
        t0 = time.monotonic()
        docker.run(["stop", "-t", str(remaining), self.cname], check=False, timeout=remaining + 30)
        self.log(f"stopped (SIGTERM, {time.monotonic() - t0:.1f}s to exit, grace {remaining}s)")
        self.running = False

    def _stop(self):
        self.ready = False
        self._stop_container()

    def _remove(self):
        docker.run(["rm", "-f", "-v", self.cname], check=False)
        for v in self.spec.get("volumes") or []:
            docker.run(["volume", "rm", "-f", self.emptydir_volume(v["name"])], check=False)
