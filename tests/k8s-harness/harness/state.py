"""The state directory shared by the controller (`serve`) and the kubectl shim. Standard library only:
the shim runs on any python3, without the harness's virtualenv.

Layout under KUBE_HARNESS_STATE:

  controller.json    project, context and pid of the running controller (written by `serve`)
  status.json        the controller's view of everything (objects, workloads, pods), rewritten
                     every tick; the shim only reads it
  requests/ID.json   one shim request (apply, delete, scale, rollout restart)
  responses/ID.json  the controller's answer: {"rc": N, "stdout": "...", "stderr": "..."}

Race-freedom: every file is written whole to a hidden temporary name in the same folder and then
renamed into place (os.replace is atomic), and readers ignore names starting with a dot. Only the
controller consumes requests, one at a time, in ID order (IDs start with a nanosecond timestamp).
"""

import json
import os
import time
import uuid


def write_json(path, obj):
    """Writes obj to path atomically (temporary file in the same folder, then rename)."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class StateDir:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.requests = os.path.join(self.root, "requests")
        self.responses = os.path.join(self.root, "responses")
        self.controller_file = os.path.join(self.root, "controller.json")
        self.status_file = os.path.join(self.root, "status.json")

    def create(self):
        for d in (self.root, self.requests, self.responses):
            os.makedirs(d, exist_ok=True)

    # --- shim side -------------------------------------------------------------------------
    def controller(self):
        """The running controller's record, or None when no controller is alive."""
        info = read_json(self.controller_file)
        if not info:
            return None
        try:
            os.kill(info["pid"], 0)
        except (ProcessLookupError, PermissionError):
            return None
        return info

    def status(self):
        return read_json(self.status_file, {})

    def call(self, op, args, timeout=120.0):
        """Sends one request to the controller and waits for its response."""
        rid = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        write_json(os.path.join(self.requests, rid + ".json"), {"id": rid, "op": op, "args": args})
        answer = os.path.join(self.responses, rid + ".json")
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while time.monotonic() < deadline:
            resp = read_json(answer)
            if resp is not None:
                os.unlink(answer)
                return resp
            if time.monotonic() > next_check:
                if self.controller() is None:
                    return {"rc": 1, "stdout": "", "stderr": "error: the k8s-harness controller stopped\n"}
                next_check = time.monotonic() + 1.0
            time.sleep(0.05)
        return {"rc": 1, "stdout": "", "stderr": f"error: no answer from the k8s-harness controller in {timeout:.0f}s\n"}

    # --- controller side -------------------------------------------------------------------
    def pending_requests(self):
        names = sorted(n for n in os.listdir(self.requests) if n.endswith(".json") and not n.startswith("."))
        out = []
        for n in names:
            path = os.path.join(self.requests, n)
            req = read_json(path)
            os.unlink(path)
            if req is not None:
                out.append(req)
        return out

    def respond(self, rid, rc, stdout="", stderr=""):
        write_json(os.path.join(self.responses, rid + ".json"), {"rc": rc, "stdout": stdout, "stderr": stderr})
