"""Command line of the harness (run through scripts/k8s-harness.sh):

  serve   --project P [--state DIR] [--blotter-dir DIR] [--orders-per-second N]
          [--stand-ins FILE] [--subnet CIDR] [--free-lb-ports]
          the controller, in the foreground until SIGTERM/SIGINT; then it deletes every pod
          (gracefully) and every container, volume and network it created
  env     --project P | --state DIR    prints the exports the kubectl shim needs
  port    SERVICE [-n NAMESPACE] [PORT] prints 127.0.0.1:<host port> of a LoadBalancer Service
  cleanup --project P                  force-removes whatever carries the project's label
                                       (after a controller that was killed with SIGKILL)
  kubectl ARGS...                      the shim itself (tests/k8s-harness/kubectl is the same)
"""

import argparse
import os
import re
import signal
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/k8s-harness


def default_state(project):
    return f"/tmp/k8s-harness-{project}"


def project_name(value):
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", value):
        raise argparse.ArgumentTypeError("a project is 1-31 of a-z, 0-9, '-'")
    if value.startswith("akcq"):
        raise argparse.ArgumentTypeError("names starting with 'akcq' belong to the container test suite")
    return value


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kubectl"]:
        from .kubectl import main as kubectl
        return kubectl(argv[1:])
    ap = argparse.ArgumentParser(prog="k8s-harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--project", required=True, type=project_name)
    s.add_argument("--state")
    s.add_argument("--blotter-dir")
    s.add_argument("--orders-per-second", type=int, default=50)
    s.add_argument("--stand-ins", default=os.path.join(HERE, "stand-ins.yaml"))
    s.add_argument("--subnet")
    s.add_argument("--api-server", help="the fake-apiserver binary, for pods with a serviceAccountName")
    s.add_argument("--free-lb-ports", action="store_true",
                   help="never try a LoadBalancer's own port on the host; always a free one")
    e = sub.add_parser("env")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--project", type=project_name)
    g.add_argument("--state")
    p = sub.add_parser("port")
    p.add_argument("service")
    p.add_argument("port", nargs="?", type=int)
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--state", default=os.environ.get("KUBE_HARNESS_STATE"))
    c = sub.add_parser("cleanup")
    c.add_argument("--project", required=True, type=project_name)
    a = ap.parse_args(argv)

    if a.cmd == "env":
        state = os.path.abspath(a.state or default_state(a.project))
        print(f"export PATH={HERE}:$PATH KUBE_HARNESS_STATE={state}")
        return 0
    if a.cmd == "port":
        from .state import StateDir
        if not a.state:
            print("error: give --state or set KUBE_HARNESS_STATE", file=sys.stderr)
            return 1
        svc = StateDir(a.state).status().get("objects", {}).get("Service", {}).get(f"{a.namespace}/{a.service}")
        if svc is None:
            print(f"error: no Service {a.namespace}/{a.service}", file=sys.stderr)
            return 1
        lb = svc.get("hostPorts")
        if not lb:
            print(f"error: Service {a.namespace}/{a.service} is not a LoadBalancer", file=sys.stderr)
            return 1
        port = str(a.port) if a.port else sorted(lb)[0]
        if port not in lb:
            print(f"error: Service {a.namespace}/{a.service} has no port {port}", file=sys.stderr)
            return 1
        print(f"127.0.0.1:{lb[port]}")
        return 0
    from . import docker
    if a.cmd == "cleanup":
        c, v, n = docker.remove_all(a.project)
        print(f"removed containers {c}, volumes {v}, networks {n}")
        return 0

    # serve
    from .controller import Controller
    from .manifests import StandIns
    state = os.path.abspath(a.state or default_state(a.project))
    blotters = os.path.abspath(a.blotter_dir or os.path.join(state, "blotters"))
    os.makedirs(blotters, exist_ok=True)
    os.chmod(blotters, 0o777)  # the traders run as uid 10001 in their containers
    stand_ins = StandIns(a.stand_ins, {"orders_per_second": a.orders_per_second, "blotter_dir": blotters})
    os.makedirs(state, exist_ok=True)
    ctl = Controller(a.project, state, stand_ins, subnet=a.subnet, free_lb_ports=a.free_lb_ports,
                     api_server=os.path.abspath(a.api_server) if a.api_server else None)

    def stop(signum, _frame):
        ctl.log(f"signal {signum}: stopping")
        ctl.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctl.setup()
    ctl.log(f"serving project {a.project}: state {state}, blotters {blotters}, context {ctl.context}")
    ctl.log(f"use it: eval \"$(scripts/k8s-harness.sh env --state {state})\"")
    try:
        ctl.serve()
    finally:
        ctl.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
