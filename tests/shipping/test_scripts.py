"""The shell scripts: shellcheck-clean, and the deploy/stop scripts run against a fake kubectl.

The fake records every call (argv and working directory) and answers like kubectl would for the
few reads the scripts make (current context, does the Secret/namespace exist, the LoadBalancer's
address), and can be told to fail on a given call. The .cmd twins cannot run here; they are
checked to issue the same kubectl commands in the same order as the .sh scripts did.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from shipping import (
    K8S,
    NAMESPACE,
    REPO,
    SCRIPTS,
    SECRET_NAME,
    WORKLOAD_KINDS,
    base_docs,
    discovery_docs,
    docs_in,
    load_docs,
    read_calls,
    tool_dir,
    write_fake,
)

# Every shell script in scripts/ is shellchecked; these must be among them.
REQUIRED_SCRIPTS = [
    "build-images.sh",
    "build-base-image.sh",
    "deployK8sServices.sh",
    "stopK8sServices.sh",
    "check-shipping.sh",
    "bench-tracing-overhead.sh",
]
SHELL_SCRIPTS = sorted(
    p for p in SCRIPTS.iterdir() if p.is_file() and (p.suffix == ".sh" or p.read_bytes()[:2] == b"#!")
)

FAKE_KUBECTL = r"""
joined = " ".join(args)
fail = os.environ.get("FAKE_FAIL_MATCH")
if fail and fail in joined:
    print(f"fake kubectl: injected failure of `{joined}`", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["config", "current-context"]:
    ctx = os.environ.get("FAKE_CONTEXT", "")
    if not ctx:
        print("error: current-context is not set", file=sys.stderr)
        sys.exit(1)
    print(ctx)
    sys.exit(0)
if "get" in args:
    what = args[args.index("get") + 1]
    if what == "secret":
        sys.exit(0 if os.environ.get("FAKE_SECRET_EXISTS") == "1" else 1)
    if what == "namespace":
        sys.exit(0 if os.environ.get("FAKE_NAMESPACE_EXISTS", "1") == "1" else 1)
    if what == "service":
        print(os.environ.get("FAKE_LB_ADDRESS", ""), end="")
        sys.exit(0)
    sys.exit(1)
if "apply" in args:
    path = args[args.index("-f") + 1]
    if not os.path.isfile(path):
        print(f"error: the path \"{path}\" does not exist", file=sys.stderr)
        sys.exit(1)
sys.exit(0)
"""


# ------------------------------------------------------------------------------------------------
# shellcheck


def test_shellcheck_is_installed():
    assert shutil.which("shellcheck"), "shellcheck is missing (scripts/check-shipping.sh installs it with apt-get)"


def test_every_script_is_shellchecked():
    names = [p.name for p in SHELL_SCRIPTS]
    for required in REQUIRED_SCRIPTS:
        assert required in names, f"scripts/{required} is missing"
    for p in SHELL_SCRIPTS:
        assert p.stat().st_mode & 0o111, f"scripts/{p.name} is not executable"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script):
    r = subprocess.run(["shellcheck", "--severity=style", "--format=gcc", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_check_can_fail(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    r = subprocess.run(["shellcheck", "--format=gcc", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "SC2086" in r.stdout


# ------------------------------------------------------------------------------------------------
# Running the scripts against the fake kubectl


def run(tmp_path, script: str, *args, kubectl=True, **fake_env):
    bin_dir = tmp_path / "fakebin"
    if kubectl:
        write_fake(bin_dir, "kubectl", FAKE_KUBECTL)
    else:
        bin_dir.mkdir(parents=True)
    log = tmp_path / "kubectl.log"
    env = {
        # The fake, then only the tools the scripts use: the machine's real kubectl stays out.
        "PATH": f"{bin_dir}:{tool_dir(tmp_path, ['dirname', 'awk'])}",
        "FAKE_LOG": str(log),
        "HOME": str(tmp_path),
        "FAKE_CONTEXT": "fake-context",
    }
    env.update({k: str(v) for k, v in fake_env.items()})
    r = subprocess.run(["/bin/bash", str(SCRIPTS / script), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    return r, read_calls(log)


def namespace_of(argv: list[str]) -> str | None:
    for flag in ("--namespace", "-n"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def applied(calls) -> list[str]:
    return [c["argv"][c["argv"].index("-f") + 1] for c in calls if "apply" in c["argv"]]


def rollouts(calls) -> list[str]:
    return [c["argv"][c["argv"].index("status") + 1] for c in calls if "rollout" in c["argv"]]


def index_of(calls, pred) -> int:
    hits = [i for i, c in enumerate(calls) if pred(c["argv"])]
    assert hits, "expected call not made"
    return hits[0]


def workloads_in(files: list[str]) -> set[str]:
    out = set()
    for f in files:
        for d in load_docs(REPO / f):
            if d.kind in WORKLOAD_KINDS:
                out.add(f"{d.kind.lower()}/{d.name}")
    return out


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    r, calls = run(tmp_path_factory.mktemp("deploy"), "deployK8sServices.sh", FAKE_LB_ADDRESS="203.0.113.7")
    assert r.returncode == 0, r.stdout + r.stderr
    return r, calls


@pytest.fixture(scope="module")
def discovery_run(tmp_path_factory):
    r, calls = run(tmp_path_factory.mktemp("deploy-d"), "deployK8sServices.sh", "--discovery", "kubernetes-api")
    assert r.returncode == 0, r.stdout + r.stderr
    return r, calls


def test_deploy_checks_kubectl_and_prints_its_context(seeds_run):
    r, calls = seeds_run
    assert calls[0]["argv"] == ["config", "current-context"]
    assert "kubectl context 'fake-context'" in r.stdout
    assert {c["cwd"] for c in calls} == {str(REPO)}, "manifest paths are relative to the repository root"


def test_deploy_uses_the_namespace_everywhere(seeds_run, discovery_run):
    for _, calls in (seeds_run, discovery_run):
        (ns_apply,) = [c for c in calls if applied([c]) == ["k8s/namespace.yaml"]]
        for c in calls:
            if c is ns_apply or c["argv"][:2] == ["config", "current-context"]:
                continue
            assert namespace_of(c["argv"]) == NAMESPACE, f"kubectl {' '.join(c['argv'])}: not in {NAMESPACE}"


@pytest.mark.parametrize("variant", ["seeds", "kubernetes-api"])
def test_deploy_applies_namespace_then_environment_then_services(variant, seeds_run, discovery_run):
    r, calls = seeds_run if variant == "seeds" else discovery_run
    files = applied(calls)
    docs = base_docs() if variant == "seeds" else discovery_docs()
    expected_files = sorted({d.path.relative_to(REPO).as_posix() for d in docs})
    assert sorted(files) == expected_files, "every manifest of this variant applied exactly once"
    assert files[0] == "k8s/namespace.yaml"
    env_files = [f for f in files if f.startswith("k8s/environment/")]
    svc_files = [f for f in files if f not in env_files and f != "k8s/namespace.yaml"]
    assert files == ["k8s/namespace.yaml", *env_files, *svc_files], "environment before services"
    assert env_files[0] == "k8s/environment/secret.yaml", "the Secret before the pods that read it"
    if variant == "kubernetes-api":
        assert svc_files[0] == "k8s/discovery-kubernetes-api/rbac.yaml", "RBAC before the pods that use it"
        assert "k8s/services/lighthouse.yaml" not in files
    # Every workload waited for, environment first, then the seeds before the other members.
    waits = rollouts(calls)
    env_waits = workloads_in(env_files)
    assert set(waits) == env_waits | workloads_in(svc_files)
    assert set(waits[: len(env_waits)]) == env_waits
    last_env_wait = index_of(calls, lambda a: "rollout" in a and a[a.index("status") + 1] == waits[len(env_waits) - 1])
    first_svc_apply = index_of(calls, lambda a: "apply" in a and a[a.index("-f") + 1] == svc_files[0])
    assert last_env_wait < first_svc_apply, "services are applied once the environment is up"
    assert waits[len(env_waits)] == "statefulset/lighthouse", "the seeds are waited for first"
    for c in calls:
        if "rollout" in c["argv"]:
            assert any(a.startswith("--timeout=") for a in c["argv"]), "every wait is bounded"


def test_deploy_prints_the_dashboard(seeds_run, discovery_run):
    assert "dashboard: http://203.0.113.7/" in seeds_run[0].stdout
    out = discovery_run[0].stdout
    assert "no external address yet" in out and "port-forward service/pricing-ui 8080:80" in out


def test_deploy_without_observability_leaves_out_jaeger_prometheus_grafana(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", "--without-observability")
    assert r.returncode == 0, r.stdout + r.stderr
    files = applied(calls)
    left_out = {"k8s/environment/jaeger.yaml", "k8s/environment/prometheus.yaml", "k8s/environment/grafana.yaml"}
    assert not left_out & set(files) and "k8s/environment/mongodb.yaml" in files
    waits = rollouts(calls)
    assert waits[0] == "statefulset/mongodb" and not {"deployment/jaeger", "deployment/prometheus", "deployment/grafana"} & set(waits)
    assert "statefulset/lighthouse" in waits and "port-forward service/jaeger" not in r.stdout
    # The Windows twin skips exactly the same commands.
    cmd = (SCRIPTS / "deployK8sServices.cmd").read_text()
    for f in sorted(left_out):
        apply_line = f"apply -f {f.replace('/', chr(92))}"
        assert cmd.index('if "%OBSERVABILITY%"=="off" goto environment_applied') < cmd.index(apply_line) < cmd.index(":environment_applied")
    for w in ("deployment/jaeger", "deployment/prometheus", "deployment/grafana"):
        assert cmd.index('if "%OBSERVABILITY%"=="off" goto environment_ready') < cmd.index(f"rollout status {w}") < cmd.index(":environment_ready")


def test_deploy_keeps_an_existing_secret(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", FAKE_SECRET_EXISTS=1)
    assert r.returncode == 0, r.stderr
    assert "k8s/environment/secret.yaml" not in applied(calls)
    assert f"secret/{SECRET_NAME} exists: keeping it" in r.stdout


def test_deploy_stops_at_the_first_failure(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", FAKE_FAIL_MATCH="rollout status statefulset/lighthouse")
    assert r.returncode == 1
    assert "error: 'kubectl --namespace akka-cqrs rollout status statefulset/lighthouse" in r.stderr
    assert rollouts(calls)[-1] == "statefulset/lighthouse", "nothing runs after the failed wait"
    assert "==> done" not in r.stdout


def test_deploy_fails_when_an_apply_fails(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", FAKE_FAIL_MATCH="k8s/environment/mongodb.yaml")
    assert r.returncode == 1 and "mongodb.yaml' failed" in r.stderr
    assert rollouts(calls) == []


def test_deploy_without_kubectl(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", kubectl=False)
    assert r.returncode == 1 and "kubectl not found on PATH" in r.stderr


def test_deploy_without_a_context(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", FAKE_CONTEXT="")
    assert r.returncode == 1 and "no current context" in r.stderr
    assert [c["argv"] for c in calls] == [["config", "current-context"]], "nothing applied without a context"


def test_deploy_rejects_bad_arguments(tmp_path):
    r, calls = run(tmp_path, "deployK8sServices.sh", "--bogus")
    assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr and calls == []
    r, calls = run(tmp_path, "deployK8sServices.sh", "--discovery", "dns")
    assert r.returncode == 1 and "unknown discovery 'dns'" in r.stderr and calls == []


# stop


def deleted_kinds(calls) -> list[str]:
    (c,) = [c for c in calls if c["argv"][:1] == ["--namespace"] and "delete" in c["argv"]]
    argv = c["argv"]
    assert "--all" in argv
    return argv[argv.index("delete") + 1].split(",")


# Kinds kubectl's `all` category covers; the rest must be named.
ALL_CATEGORY = {"Pod", "Service", "Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job", "CronJob"}
PLURALS = {
    "Secret": "secrets",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ConfigMap": "configmaps",
}


def test_stop_deletes_everything_in_the_namespace(tmp_path):
    r, calls = run(tmp_path, "stopK8sServices.sh")
    assert r.returncode == 0, r.stderr
    assert calls[0]["argv"] == ["config", "current-context"]
    assert "context 'fake-context'" in r.stdout
    kinds = deleted_kinds(calls)
    assert "all" in kinds and "persistentvolumeclaims" in kinds
    for doc in docs_in(K8S):
        if doc.kind == "Namespace" or doc.kind in ALL_CATEGORY:
            continue
        assert PLURALS.get(doc.kind) in kinds, f"{doc}: the stop script does not delete {doc.kind}"
    for c in calls[1:]:
        assert NAMESPACE in c["argv"], f"kubectl {' '.join(c['argv'])}: not scoped to {NAMESPACE}"
    waits = [c["argv"] for c in calls if "wait" in c["argv"]]
    assert waits and "--for=delete" in waits[0], "waits for the pods to go"
    assert not any(c["argv"][:2] == ["delete", "namespace"] for c in calls)


def test_stop_options(tmp_path):
    r, calls = run(tmp_path / "a", "stopK8sServices.sh", "--keep-data")
    assert r.returncode == 0 and "persistentvolumeclaims" not in deleted_kinds(calls)
    r, calls = run(tmp_path / "b", "stopK8sServices.sh", "--delete-namespace")
    assert r.returncode == 0 and calls[-1]["argv"][:3] == ["delete", "namespace", NAMESPACE]


def test_stop_when_nothing_is_deployed(tmp_path):
    r, calls = run(tmp_path, "stopK8sServices.sh", FAKE_NAMESPACE_EXISTS=0)
    assert r.returncode == 0 and "nothing to stop" in r.stdout
    assert not any("delete" in c["argv"] for c in calls)


def test_stop_fails_when_delete_fails(tmp_path):
    r, calls = run(tmp_path, "stopK8sServices.sh", FAKE_FAIL_MATCH="delete all")
    assert r.returncode == 1 and "failed" in r.stderr
    assert not any("wait" in c["argv"] for c in calls)
    r, _ = run(tmp_path / "x", "stopK8sServices.sh", kubectl=False)
    assert r.returncode == 1 and "kubectl not found on PATH" in r.stderr


# ------------------------------------------------------------------------------------------------
# The Windows twins


def cmd_kube_lines(path, skip_section: str | None) -> list[str]:
    """`call :kube ...` commands of a .cmd, normalised to the .sh echo form, skipping one branch."""
    text = path.read_bytes()
    assert b"\r\n" in text and text.count(b"\n") == text.count(b"\r\n"), f"{path.name}: needs CRLF line endings"
    out, section = [], None
    for line in text.decode().splitlines():
        s = line.strip()
        if s.startswith("if /i \"%DISCOVERY%\"==\"kubernetes-api\" goto apply_discovery"):
            section = "seeds"
            continue
        if s == ":apply_discovery":
            section = "kubernetes-api"
            continue
        if s == ":wait_services":
            section = None
            continue
        m = re.match(r"call :kube (.*?)(?: \|\| .*)?$", s)
        if m and (section is None or section != skip_section):
            cmd = m.group(1).replace("%NAMESPACE%", NAMESPACE).replace("%ROLLOUT_TIMEOUT%", "300s")
            cmd = cmd.replace("%DELETE_TIMEOUT%", "180s").replace("\\", "/")
            out.append("+ kubectl " + cmd)
    return out


def sh_kube_lines(stdout: str) -> list[str]:
    return [l for l in stdout.splitlines() if l.startswith("+ kubectl ")]


def test_deploy_cmd_issues_the_same_commands(seeds_run, discovery_run):
    cmd = SCRIPTS / "deployK8sServices.cmd"
    assert cmd_kube_lines(cmd, skip_section="kubernetes-api") == sh_kube_lines(seeds_run[0].stdout)
    assert cmd_kube_lines(cmd, skip_section="seeds") == sh_kube_lines(discovery_run[0].stdout)


def test_stop_cmd_issues_the_same_commands(tmp_path):
    r, _ = run(tmp_path, "stopK8sServices.sh", "--delete-namespace")
    cmd = SCRIPTS / "stopK8sServices.cmd"
    text = cmd.read_text()
    kinds = re.search(r'set "KINDS=([^"]+)"', text).group(1)
    extra = re.search(r'set "KINDS=%KINDS%(,[^"]+)"', text).group(1)
    lines = [l.replace("%KINDS%", kinds + extra) for l in cmd_kube_lines(cmd, skip_section=None)]
    assert lines == sh_kube_lines(r.stdout)
