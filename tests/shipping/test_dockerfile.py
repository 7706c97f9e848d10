"""The Dockerfiles parse and have the shape the container layout asks for.

No Docker engine is used: the Dockerfiles are parsed (dockerfile-parse) and their stages checked.

- docker/build.Dockerfile: the cargo-chef build (a cached dependency build before the sources
  are copied, the six binaries built once), ending in `binaries`, FROM scratch, holding /out/.
- docker/host-binaries.Dockerfile: the same /out/ from binaries built on the host.
- docker/Dockerfile: only the runtime: the binaries image, a slim Debian runtime with a non-root
  user and tradectl, and one target per service whose ports and entrypoint agree with the
  Kubernetes manifests. Nothing is compiled and nothing comes from the build context.
- docker/secantusdb/Dockerfile: the MongoDB stand-in, installed from wheels without network.

None of them needs BuildKit: the classic builder (the engine's default without buildx) builds them.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest
from dockerfile_parse import DockerfileParser

from shipping import (
    BINARIES,
    BINARIES_IMAGE,
    BUILD_DOCKERFILE,
    DOCKERFILE,
    HOST_BINARIES_DOCKERFILE,
    LOCAL_BASE_IMAGE,
    MANAGEMENT_PORT,
    MEMBER_PORT,
    PACKAGES,
    REPO,
    SCRIPTS,
    SECANTUSDB_DIR,
    SEED_PORT,
    SERVICES,
    base_docs,
    env_value,
    find,
    named_port,
)

SECANTUSDB_DOCKERFILE = SECANTUSDB_DIR / "Dockerfile"
ALL_DOCKERFILES = [DOCKERFILE, BUILD_DOCKERFILE, HOST_BINARIES_DOCKERFILE, SECANTUSDB_DOCKERFILE]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)

    def of(self, instr: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == instr]


def parse(path=DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name -> default) and the stages, FROM images resolved with those defaults."""
    parser = DockerfileParser(path=str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instr in parser.structure:
        kind = instr["instruction"]
        if kind == "FROM":
            parts = instr["value"].split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
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
BUILD_ARGS, BUILD_STAGES = parse(BUILD_DOCKERFILE)
BUILD_BY_NAME = {s.name: s for s in BUILD_STAGES}
HOST_ARGS, HOST_STAGES = parse(HOST_BINARIES_DOCKERFILE)


def chain(stage: Stage, by_name: dict[str, Stage] = BY_NAME) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = [stage]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for s in reversed(chain(stage)):
        for value in s.of("ENV"):
            for token in shlex.split(value):
                k, _, v = token.partition("=")
                env[k] = v
    return env


def copy_parts(value: str) -> tuple[dict[str, str], list[str], str]:
    """A COPY's flags (--from=..., --chown=...), its sources and its destination."""
    words = value.split()
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    rest = [w for w in words if not w.startswith("--")]
    return flags, rest[:-1], rest[-1]


def out_binaries_of_build() -> list[str]:
    """The binaries docker/build.Dockerfile's builder copies to /out/ (`cp target/release/X /out/`)."""
    (build,) = [v for v in BUILD_BY_NAME["builder"].of("RUN") if "cargo build" in v]
    m = re.search(r"\bcp\s+(.*?)\s+/out/?(?:\s|$)", build)
    assert m, "the builder copies no binaries to /out/"
    sources = m.group(1).split()
    assert all(s.startswith("target/release/") for s in sources), sources
    return sorted(s.rsplit("/", 1)[1] for s in sources)


# ------------------------------------------------------------------------------------------------
# All Dockerfiles


def test_dockerfiles_parse_into_named_stages():
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names)), f"duplicate stage names {names}"
    assert names == ["binaries", "runtime", *SERVICES], f"docker/Dockerfile stages {names}"
    build_names = [s.name for s in BUILD_STAGES]
    assert len(build_names) == len(set(build_names)), f"duplicate stage names {build_names}"
    for required in ["chef", "planner", "builder", "binaries"]:
        assert required in BUILD_BY_NAME, f"docker/build.Dockerfile: no stage named {required!r}"
    # Built without --target, so the last stage is the image: the binaries alone.
    assert build_names[-1] == "binaries", "docker/build.Dockerfile must end in the `binaries` stage"
    assert len(HOST_STAGES) == 1, "docker/host-binaries.Dockerfile: one stage"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_base_images_are_pinned(path):
    args, stages = parse(path)
    by_name = {s.name for s in stages}
    assert stages, f"{path}: no FROM"
    for s in stages:
        if s.base in by_name or s.base == "scratch":
            continue
        assert "$" not in s.base, f"{path.name} stage {s.name}: build arg without a default in {s.base}"
        image, _, tag = s.base.rpartition(":")
        assert image and tag and tag != "latest" and "/" not in tag, (
            f"{path.name} stage {s.name}: base image {s.base} must carry a fixed tag"
        )


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_copy_from_refers_to_earlier_stages(path):
    _, stages = parse(path)
    seen: set[str] = set()
    for s in stages:
        for value in s.of("COPY"):
            m = re.search(r"--from=(\S+)", value)
            if m:
                assert m.group(1) in seen, f"{path.name} stage {s.name}: COPY --from={m.group(1)} is no earlier stage"
        seen.add(s.name)


BUILDKIT_ONLY = [
    (re.compile(r"^\s*#\s*(syntax|check)\s*=", re.I), "a `# syntax=`/`# check=` parser directive"),
    (re.compile(r"^\s*RUN\s+(?:--\S+\s+)*--(mount|network|security)\b", re.I), "RUN --mount/--network/--security"),
    (
        re.compile(r"^\s*(COPY|ADD)\s+(?:--\S+\s+)*--(link|chmod|parents|exclude|checksum|keep-git-dir)\b", re.I),
        "COPY/ADD --link/--chmod/--parents/--exclude/--checksum/--keep-git-dir",
    ),
    (re.compile(r"^\s*(RUN|COPY|ADD)\b.*<<-?\s*[\"']?[A-Za-z_]\w*[\"']?", re.I), "a heredoc"),
    (
        re.compile(r"\$\{?(BUILDPLATFORM|BUILDOS|BUILDARCH|TARGETPLATFORM|TARGETOS|TARGETARCH|TARGETVARIANT)\b"),
        "an automatic platform ARG (BuildKit defines them, the classic builder does not)",
    ),
]


def buildkit_only(text: str) -> list[str]:
    """What in a Dockerfile the classic builder (DOCKER_BUILDKIT=0, no buildx) cannot build."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for pattern, what in BUILDKIT_ONLY:
            if pattern.search(line):
                found.append(f"line {n}: {what}: {line.strip()}")
    return found


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_dockerfiles_build_with_the_classic_builder(path):
    assert buildkit_only(path.read_text()) == []


def test_classic_builder_check_can_fail():
    bad = (
        "# syntax=docker/dockerfile:1.7\n"
        "FROM debian:bookworm-slim\n"
        "RUN --mount=type=cache,target=/root/.cargo cargo build\n"
        "COPY --link a /a\n"
        "RUN <<EOF\necho hi\nEOF\n"
    )
    found = buildkit_only(bad)
    assert len(found) == 4, found
    assert "parser directive" in found[0] and "RUN --mount" in found[1] and "--link" in found[2] and "heredoc" in found[3]
    assert buildkit_only("# No `# syntax=` line here.\nFROM scratch\nRUN cat <in >out\n") == []


# ------------------------------------------------------------------------------------------------
# docker/build.Dockerfile: the cargo-chef build


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
    assert cache_order_problem(BUILD_STAGES) is None, cache_order_problem(BUILD_STAGES)


def test_builder_builds_every_binary_once():
    builds = [v for st in BUILD_STAGES for v in st.of("RUN") if "cargo build" in v]
    assert len(builds) == 1, f"one `cargo build` in docker/build.Dockerfile, found {len(builds)}"
    (build,) = [v for v in BUILD_BY_NAME["builder"].of("RUN") if "cargo build" in v]
    assert "--release" in build and "--locked" in build
    packages = re.findall(r"-p\s+([\w-]+)", build)
    assert sorted(packages) == sorted(PACKAGES), f"cargo build -p {packages} != {sorted(PACKAGES)}"
    for binary in PACKAGES.values():
        assert f"target/release/{binary}" in build, f"{binary} is not copied out of target/release"
    assert out_binaries_of_build() == BINARIES, "the builder copies exactly the six binaries to /out/"
    # Nothing else in the workspace is compiled: no cargo in the runtime Dockerfile.
    assert not any("cargo" in v for st in STAGES for v in st.of("RUN")), "docker/Dockerfile must not compile"


def test_build_dockerfile_ends_in_an_image_of_the_binaries_alone():
    st = BUILD_BY_NAME["binaries"]
    assert st.base == "scratch", "the binaries image holds the binaries and nothing else (FROM scratch)"
    steps = [(i["instruction"], i["value"]) for i in st.instructions]
    assert steps == [("COPY", "--from=builder /out/ /out/")], f"binaries stage: {steps}"


def test_the_binaries_are_built_on_the_debian_release_they_run_on():
    """glibc: binaries linked on a newer Debian than the runtime base do not start on it."""
    release = BUILD_ARGS.get("DEBIAN_RELEASE")
    assert release, "docker/build.Dockerfile: ARG DEBIAN_RELEASE"
    assert BUILD_BY_NAME["chef"].base == f"rust:{BUILD_ARGS['RUST_VERSION']}-slim-{release}"
    assert BY_NAME["runtime"].base == f"debian:{release}-slim", "the default runtime base"
    base_script = (SCRIPTS / "build-base-image.sh").read_text()
    m = re.search(r"^readonly SUITE=(\S+)$", base_script, re.M)
    assert m and m.group(1) == release, "scripts/build-base-image.sh bootstraps the same release"
    assert LOCAL_BASE_IMAGE.endswith(f":{release}")
    assert f'"${{LOCAL_BASE_IMAGE:-{LOCAL_BASE_IMAGE}}}"' in base_script, "the local base's default tag"


# ------------------------------------------------------------------------------------------------
# docker/host-binaries.Dockerfile, and the two paths compared


def test_host_binaries_dockerfile_holds_the_binaries_alone():
    (st,) = HOST_STAGES
    assert st.base == "scratch"
    assert [i["instruction"] for i in st.instructions] == ["COPY"], "one COPY, nothing else"
    flags, sources, dest = copy_parts(st.of("COPY")[0])
    assert flags == {} and dest == "/out/", f"COPY to /out/: {st.of('COPY')[0]}"
    assert sorted(sources) == BINARIES, f"host-binaries.Dockerfile copies {sorted(sources)}"


def test_both_binaries_paths_hold_exactly_what_the_runtime_stages_copy():
    """build.Dockerfile and host-binaries.Dockerfile are interchangeable as BINARIES_IMAGE: both
    produce /out/ with the six binaries, and those are the files docker/Dockerfile copies."""
    from_build = out_binaries_of_build()
    from_host = sorted(copy_parts(HOST_STAGES[0].of("COPY")[0])[1])
    copied = []
    for st in STAGES:
        for value in st.of("COPY"):
            flags, sources, _ = copy_parts(value)
            if flags.get("from") == "binaries":
                copied += [s.removeprefix("/out/") for s in sources if s.startswith("/out/")]
    assert from_build == from_host == sorted(copied) == BINARIES


# ------------------------------------------------------------------------------------------------
# docker/Dockerfile: the runtime


def test_runtime_dockerfile_takes_its_base_and_binaries_from_build_args():
    assert ARGS == {"BASE_IMAGE": "debian:bookworm-slim", "BINARIES_IMAGE": BINARIES_IMAGE}
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \$\{BINARIES_IMAGE\} AS binaries$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS runtime$", text, re.M)


def test_runtime_dockerfile_needs_nothing_from_the_build_context():
    """scripts/build-images.sh builds it with an empty context: every file comes from the
    binaries image."""
    for st in STAGES:
        assert not st.of("ADD"), f"stage {st.name}: ADD"
        for value in st.of("COPY"):
            flags, sources, _ = copy_parts(value)
            assert flags.get("from") == "binaries", f"stage {st.name}: COPY {value} is not from the binaries image"
            assert all(s.startswith("/out/") for s in sources), value


def test_runtime_is_slim_debian_non_root_with_tradectl():
    rt = BY_NAME["runtime"]
    assert re.fullmatch(r"debian:[a-z]+-slim", rt.base), f"runtime base {rt.base} is not a slim Debian"
    users = rt.of("USER")
    assert users, "runtime sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (so Kubernetes can verify runAsNonRoot)"
    assert any("useradd" in r and f"--uid {uid}" in r for r in rt.of("RUN")), "the uid is created as a user"
    assert "--from=binaries /out/tradectl /usr/local/bin/tradectl" in rt.of("COPY")
    assert rt.of("STOPSIGNAL") == ["SIGTERM"]


def test_runtime_data_folder_belongs_to_the_user():
    """The working directory (embedded journal without MongoDB) and the blotter folder the
    container tests mount a volume on must be writable by the non-root user: a named volume
    takes the ownership of the image's folder."""
    rt = BY_NAME["runtime"]
    (workdir,) = rt.of("WORKDIR")
    run = " ".join(rt.of("RUN"))
    assert f"mkdir -p {workdir}/blotter" in run, "the blotter folder exists in the image"
    assert re.search(rf"chown -R (akka|10001):(akka|10001) {re.escape(workdir)}(\s|$)", run), f"{workdir} is the user's"


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
    assert f"--from=binaries /out/{svc} /usr/local/bin/{svc}" in st.of("COPY")
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
    """The context of docker/build.Dockerfile is the repository root (`COPY . .`)."""
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


# ------------------------------------------------------------------------------------------------
# docker/secantusdb/Dockerfile: the MongoDB stand-in


def test_secantusdb_image_installs_pinned_wheels_without_network_and_runs_as_a_user():
    args, stages = parse(SECANTUSDB_DOCKERFILE)
    (st,) = stages
    assert args.get("BASE_IMAGE") == LOCAL_BASE_IMAGE, "built on the local base (no registry needed)"
    requirements = [
        l.strip() for l in (SECANTUSDB_DIR / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")
    ]
    assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", r) for r in requirements), (
        f"pin every requirement: {requirements}"
    )
    installs = [r for r in st.of("RUN") if "pip install" in r]
    assert installs and all("--no-index" in r and "--find-links" in r for r in installs), (
        "Docker builds cannot reach PyPI there: install from the wheels in the context only"
    )
    copies = [copy_parts(v) for v in st.of("COPY")]
    sources = {s.rstrip("/") for _, srcs, _ in copies for s in srcs}
    assert sources == {"requirements.txt", "wheels"}, sources
    uid = st.of("USER")[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "non-root"
    assert any(f"--uid {uid}" in r and "chown" in r and "/data/db" in r for r in st.of("RUN")), "/data/db is the user's"
    entry = json.loads(st.of("ENTRYPOINT")[0])
    assert entry[0] == "secantusd-py" and entry[entry.index("--host") + 1] == "0.0.0.0"
    assert entry[entry.index("--port") + 1] == "27017" and {int(p) for p in " ".join(st.of("EXPOSE")).split()} == {27017}
    (health,) = st.of("HEALTHCHECK")
    assert "ping" in health and "directConnection=true" in health, "the healthcheck pings the server itself"

