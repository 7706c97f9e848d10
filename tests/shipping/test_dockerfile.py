"""docker/Dockerfile parses and has the shape issue 7 asks for.

No Docker engine exists on these machines, so the Dockerfile is parsed (dockerfile-parse) and its
stages are checked: a cached dependency build before the sources are copied, the six binaries
built once, a slim Debian runtime with a non-root user and tradectl, and one target per service
whose ports and entrypoint agree with the Kubernetes manifests.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest
from dockerfile_parse import DockerfileParser

from shipping import (
    DOCKERFILE,
    MANAGEMENT_PORT,
    MEMBER_PORT,
    PACKAGES,
    REPO,
    SEED_PORT,
    SERVICES,
    base_docs,
    env_value,
    find,
    named_port,
)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)

    def of(self, instr: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == instr]


def parse(path=DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    parser = DockerfileParser(path=str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instr in parser.structure:
        kind = instr["instruction"]
        if kind == "FROM":
            parts = instr["value"].split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stages.append(Stage(name, base))
        elif kind == "ARG" and not stages:
            k, _, v = instr["value"].partition("=")
            global_args[k.strip()] = v.strip()
        elif kind == "COMMENT":
            continue
        else:
            assert stages, f"{kind} before the first FROM"
            stages[-1].instructions.append(instr)
    return global_args, stages


ARGS, STAGES = parse()
BY_NAME = {s.name: s for s in STAGES}


def chain(stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = [stage]
    while out[-1].base in BY_NAME:
        out.append(BY_NAME[out[-1].base])
    return out


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for s in reversed(chain(stage)):
        for value in s.of("ENV"):
            for token in shlex.split(value):
                k, _, v = token.partition("=")
                env[k] = v
    return env


def test_dockerfile_parses_into_named_stages():
    assert len(STAGES) >= 3, "multi-stage: builder(s), runtime, services"
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names)), f"duplicate stage names {names}"
    for required in ["builder", "runtime", *SERVICES]:
        assert required in BY_NAME, f"no stage named {required!r}"


def test_base_images_are_pinned():
    for s in STAGES:
        if s.base in BY_NAME:
            continue
        assert "${" not in s.base, f"stage {s.name}: unresolved build arg in {s.base}"
        image, _, tag = s.base.rpartition(":")
        assert image and tag and tag != "latest", f"stage {s.name}: base image {s.base} must carry a fixed tag"


def test_copy_from_refers_to_earlier_stages():
    seen: set[str] = set()
    for s in STAGES:
        for value in s.of("COPY"):
            m = re.search(r"--from=(\S+)", value)
            if m:
                assert m.group(1) in seen, f"stage {s.name}: COPY --from={m.group(1)} is no earlier stage"
        seen.add(s.name)


def cache_order_problem(stages: list[Stage]) -> str | None:
    """Why the builder stage would not cache dependencies, or None when it does."""
    by_name = {s.name: s for s in stages}
    if "builder" not in by_name:
        return "no builder stage"
    line, st = [], by_name["builder"]
    while True:
        line.append(st)
        if st.base not in by_name:
            break
        st = by_name[st.base]
    steps = [(i["instruction"], i["value"]) for st in reversed(line) for i in st.instructions]

    def first(pred):
        return next((n for n, step in enumerate(steps) if pred(*step)), None)

    cook = first(lambda k, v: k == "RUN" and "cargo chef cook" in v and "--release" in v)
    sources = first(lambda k, v: k == "COPY" and v.split()[:2] == [".", "."])
    build = first(lambda k, v: k == "RUN" and "cargo build" in v)
    if None in (cook, sources, build):
        return "builder needs `cargo chef cook --release`, `COPY . .` and `cargo build`"
    if not cook < sources < build:
        return "dependencies must be built (and cached) before the sources are copied"
    recipe = [v for k, v in steps if k == "COPY" and "recipe.json" in v]
    if not recipe or "--from=planner" not in recipe[0]:
        return "the recipe must come from the planner stage"
    return None


def test_builder_caches_dependencies_before_copying_the_sources():
    assert cache_order_problem(STAGES) is None, cache_order_problem(STAGES)


def test_builder_builds_every_binary_once():
    (build,) = [v for v in BY_NAME["builder"].of("RUN") if "cargo build" in v]
    assert "--release" in build and "--locked" in build
    packages = re.findall(r"-p\s+([\w-]+)", build)
    assert sorted(packages) == sorted(PACKAGES), f"cargo build -p {packages} != {sorted(PACKAGES)}"
    for binary in PACKAGES.values():
        assert f"target/release/{binary}" in build, f"{binary} is not copied out of target/release"


def test_runtime_is_slim_debian_non_root_with_tradectl():
    rt = BY_NAME["runtime"]
    assert re.fullmatch(r"debian:[a-z]+-slim", rt.base), f"runtime base {rt.base} is not a slim Debian"
    users = rt.of("USER")
    assert users, "runtime sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (so Kubernetes can verify runAsNonRoot)"
    assert any("useradd" in r and f"--uid {uid}" in r for r in rt.of("RUN")), "the uid is created as a user"
    assert "--from=builder /out/tradectl /usr/local/bin/tradectl" in rt.of("COPY")
    assert rt.of("STOPSIGNAL") == ["SIGTERM"]


def test_image_uid_matches_the_manifests():
    uid = int(BY_NAME["runtime"].of("USER")[-1].split(":")[0])
    for svc in SERVICES:
        kind = "Deployment" if svc == "pricing-web" else "StatefulSet"
        spec = find(base_docs(), kind, svc).body["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uid, f"{svc}: runAsUser != image uid {uid}"


@pytest.mark.parametrize("svc", SERVICES)
def test_service_stage(svc):
    st = BY_NAME[svc]
    assert st.base == "runtime", f"{svc} must build FROM runtime"
    assert f"--from=builder /out/{svc} /usr/local/bin/{svc}" in st.of("COPY")
    (entry,) = st.of("ENTRYPOINT")
    assert json.loads(entry) == [f"/usr/local/bin/{svc}"], f"{svc}: exec-form ENTRYPOINT of its binary"
    assert not any(s.of("USER") and s.of("USER")[-1].split(":")[0] in ("0", "root") for s in chain(st))
    exposed = {int(p.split("/")[0]) for v in st.of("EXPOSE") for p in v.split()}
    env = env_of(st)
    kind = "Deployment" if svc == "pricing-web" else "StatefulSet"
    container = find(base_docs(), kind, svc).body["spec"]["template"]["spec"]["containers"][0]
    if svc == "pricing-web":
        assert exposed == {80} and env["HTTP_PORT"] == "80" == env_value(container, "HTTP_PORT")
    else:
        port = SEED_PORT if svc == "lighthouse" else MEMBER_PORT
        assert exposed == {port, MANAGEMENT_PORT}, f"{svc}: EXPOSE {exposed}"
        assert env["CLUSTER_PORT"] == str(port) == env_value(container, "CLUSTER_PORT")
        assert env["MANAGEMENT_PORT"] == str(MANAGEMENT_PORT) == str(named_port(container, "management"))
    assert env["LOG_FORMAT"] == "json" and env["ACTORSYSTEM"] == "AkkaTrader"


def test_dockerignore_keeps_the_context_small():
    lines = {l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    for must in (".git", "target", "k8s"):
        assert must in lines, f".dockerignore must exclude {must}"
    for keep in ("crates", "Cargo.toml", "Cargo.lock"):
        assert keep not in lines, f".dockerignore must not exclude {keep}"


def test_cache_check_can_fail(tmp_path):
    """The caching check flags a builder that copies the sources before building dependencies."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM rust:1.95 AS planner\nRUN cargo chef prepare\n"
        "FROM rust:1.95 AS builder\nCOPY --from=planner /src/recipe.json recipe.json\nCOPY . .\n"
        "RUN cargo chef cook --release --recipe-path recipe.json\nRUN cargo build --release\n"
    )
    _, stages = parse(bad)
    assert cache_order_problem(stages) == "dependencies must be built (and cached) before the sources are copied"
