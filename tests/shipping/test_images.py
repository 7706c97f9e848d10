"""scripts/build-images.sh builds the binaries image, then exactly the five service images (and,
with --stand-ins, the MongoDB stand-in), smoke-runs them, and k8s/ and compose use only those.

The script runs for real with fakes first on PATH that record their calls: `docker` (which also
records what each `docker build` was given: its Dockerfile and the files of its context, since
the script's temporary folders are gone afterwards), and, for --from-host and --stand-ins,
`cargo` (which "builds" empty binaries into CARGO_TARGET_DIR) and `python3` (pip download). So
what "the build script produces" is what the script does, not what a test assumes it does.
"""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest
from dockerfile_parse import DockerfileParser

from shipping import (
    BINARIES,
    BINARIES_IMAGE,
    COMPOSE,
    COMPOSE_TEST,
    IMAGE_PREFIX,
    K8S,
    LOCAL_BASE_IMAGE,
    PACKAGES,
    REPO,
    SCRIPTS,
    SECANTUSDB_DIR,
    SECANTUSDB_IMAGE_NAME,
    SERVICES,
    TAG,
    containers,
    docs_in,
    is_own_image,
    load_compose,
    read_calls,
    tool_dir,
    write_fake,
)
from test_dockerfile import ARGS, BY_NAME, copy_parts, parse

SECANTUSDB_VERSION = next(
    l.split("==", 1)[1].strip()
    for l in (SECANTUSDB_DIR / "requirements.txt").read_text().splitlines()
    if l.lower().startswith("secantusdb==")
)
SECANTUSDB_IMAGE = f"{SECANTUSDB_IMAGE_NAME}:{SECANTUSDB_VERSION}"
SERVICE_IMAGES = [f"{IMAGE_PREFIX}/{s}:{TAG}" for s in SERVICES]

# What `docker build` was given: the Dockerfile's text and the files of its context (a folder the
# script made; the repository root is not listed).
FAKE_DOCKER_RECORD = r"""
if args[:1] == ["build"]:
    context = args[-1]
    if os.path.isdir(context) and os.path.realpath(context) != os.environ["FAKE_REPO"]:
        files = []
        for root, _, names in os.walk(context):
            files += [os.path.relpath(os.path.join(root, n), context) for n in names]
        record["context_files"] = sorted(files)
    dockerfile = args[args.index("--file") + 1] if "--file" in args else os.path.join(context, "Dockerfile")
    record["dockerfile"] = open(dockerfile).read() if os.path.isfile(dockerfile) else None
"""
FAKE_DOCKER = r"""
fail = os.environ.get("FAKE_FAIL_MATCH")
if fail and fail in " ".join(args):
    print("fake docker: injected failure", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["image", "inspect"]:
    sys.exit(0 if os.environ.get("FAKE_IMAGES_EXIST", "1") == "1" else 1)
if args[:1] == ["run"] and args[-1] in ("--version", "--help"):
    print("fake 0.1.0")
"""
# `cargo build --release|--profile P -p X ...`: an (empty) binary per package into
# $CARGO_TARGET_DIR/release (or /P).
FAKE_CARGO = r"""
target = os.environ.get("CARGO_TARGET_DIR")
if not target:
    print("fake cargo: CARGO_TARGET_DIR must be set (never write into the repository)", file=sys.stderr)
    sys.exit(1)
binaries = json.loads(os.environ["FAKE_PACKAGES"])
profile = args[args.index("--profile") + 1] if "--profile" in args else "release"
release = os.path.join(target, profile)
os.makedirs(release, exist_ok=True)
for i, a in enumerate(args):
    if a == "-p":
        open(os.path.join(release, binaries[args[i + 1]]), "w").close()
"""
# `python3 -m pip download ... --dest DIR -r requirements.txt`: one fake wheel per requirement.
FAKE_PYTHON = r"""
if args[:3] != ["-m", "pip", "download"]:
    print(f"fake python3: unexpected {args}", file=sys.stderr)
    sys.exit(1)
dest = args[args.index("--dest") + 1]
os.makedirs(dest, exist_ok=True)
for line in open(args[args.index("-r") + 1]):
    line = line.strip()
    if line and not line.startswith("#"):
        name, _, version = line.partition("==")
        open(os.path.join(dest, f"{name}-{version}-py3-none-any.whl"), "w").close()
"""
TOOLS = ["bash", "dirname", "mktemp", "rm", "mkdir", "cp", "sed"]


def run_build(tmp_path, *args, fail=None, with_docker=True, images_exist=True, **env_extra):
    bin_dir = tmp_path / "bin"
    if with_docker:
        write_fake(bin_dir, "docker", FAKE_DOCKER, record=FAKE_DOCKER_RECORD)
    write_fake(bin_dir, "cargo", FAKE_CARGO)
    write_fake(bin_dir, "python3", FAKE_PYTHON)
    log = tmp_path / "calls.log"
    (tmp_path / "tmp").mkdir(exist_ok=True)
    # Only the fakes and the few tools the script needs: a real docker or cargo stays out.
    env = {
        "PATH": f"{bin_dir}:{tool_dir(tmp_path, TOOLS)}",
        "FAKE_LOG": str(log),
        "FAKE_REPO": str(REPO),
        "FAKE_PACKAGES": json.dumps(PACKAGES),
        "FAKE_IMAGES_EXIST": "1" if images_exist else "0",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "CARGO_TARGET_DIR": str(tmp_path / "target"),
        **env_extra,
    }
    if fail:
        env["FAKE_FAIL_MATCH"] = fail
    r = subprocess.run(
        ["/bin/bash", str(SCRIPTS / "build-images.sh"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return r, read_calls(log)


DOCKER_CLIS = ("docker", "podman")


def of(calls, tool: str) -> list[dict]:
    return [c for c in calls if c["tool"] == tool]


def builds(calls) -> list[dict]:
    return [c for c in calls if c["tool"] in DOCKER_CLIS and c["argv"][0] == "build"]


def dockerfile_of(call) -> str:
    """The --file of a build, or "<context>/Dockerfile"."""
    argv = call["argv"]
    return argv[argv.index("--file") + 1] if "--file" in argv else "<context>/Dockerfile"


def tag_of(call) -> str:
    argv = call["argv"]
    return argv[argv.index("--tag") + 1]


def build_args(call) -> dict[str, str]:
    argv = call["argv"]
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")


def smoke_runs(calls) -> list[list[str]]:
    return [c["argv"] for c in calls if c["tool"] in DOCKER_CLIS and c["argv"][0] == "run"]


def built_images(calls) -> dict[str, dict]:
    return {tag_of(c): c for c in builds(calls)}


def normalised(calls, tmp_path) -> list[tuple[str, list[str]]]:
    """The calls with the script's temporary folder names replaced, to compare two runs."""
    out = []
    for c in calls:
        argv = [re.sub(re.escape(str(tmp_path)) + r"/tmp/tmp\.\w+", "<stage>", a) for a in c["argv"]]
        out.append((c["tool"], argv))
    return out


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """The default path: cargo-chef binaries image, debian:bookworm-slim base, no stand-ins."""
    r, calls = run_build(tmp_path_factory.mktemp("build"))
    assert r.returncode == 0, r.stdout + r.stderr
    return r, calls


@pytest.fixture(scope="module")
def no_registry(tmp_path_factory):
    """--no-registry: host-built binaries, the local base, and the MongoDB stand-in."""
    tmp = tmp_path_factory.mktemp("no-registry")
    r, calls = run_build(tmp, "--no-registry")
    assert r.returncode == 0, r.stdout + r.stderr
    return r, calls, tmp


def test_build_script_builds_the_binaries_then_exactly_the_five_images(produced):
    r, calls = produced
    assert of(calls, "cargo") == [] and of(calls, "python3") == [], "the default path compiles in Docker only"
    first, *rest = builds(calls)
    # 1. The binaries image, from docker/build.Dockerfile with the repository as its context.
    assert first["argv"] == ["build", "--file", "docker/build.Dockerfile", "--tag", BINARIES_IMAGE, "."]
    assert "--target" not in first["argv"], "its last stage (binaries) is the image"
    # 2. The five service images, all from the one runtime Dockerfile.
    images = {tag_of(c): c for c in rest}
    assert list(images) == SERVICE_IMAGES, "each service once, in order"
    for tag, call in images.items():
        argv = call["argv"]
        svc = tag.split("/")[1].split(":")[0]
        assert argv[argv.index("--target") + 1] == svc, f"{tag}: built from target {svc}"
        assert svc in BY_NAME, f"{tag}: docker/Dockerfile has no stage {svc}"
        assert argv[argv.index("--file") + 1] == "docker/Dockerfile"
        assert build_args(call) == {"BASE_IMAGE": ARGS["BASE_IMAGE"], "BINARIES_IMAGE": BINARIES_IMAGE}, (
            f"{tag}: the default base and the binaries image just built"
        )
        assert call["context_files"] == [], f"{tag}: an empty context (everything comes from the images)"
    # The repository root is the context of the binaries build, wherever the script starts.
    assert {c["cwd"] for c in calls} == {str(REPO)}
    assert SECANTUSDB_IMAGE not in images and not any(c["argv"][:2] == ["image", "inspect"] for c in calls)


def test_build_script_smoke_runs_every_image_it_built(produced):
    r, calls = produced
    runs = smoke_runs(calls)
    expected = []
    for image in SERVICE_IMAGES:
        expected += [["run", "--rm", image, "--version"], ["run", "--rm", "--entrypoint", "tradectl", image, "--version"]]
    assert runs == expected
    last_build = max(i for i, c in enumerate(calls) if c["argv"][0] == "build")
    first_run = min(i for i, c in enumerate(calls) if c["argv"][0] == "run")
    assert last_build < first_run, "images are run once all are built"
    for image in SERVICE_IMAGES:
        assert f"{image}: fake 0.1.0" in r.stdout, "the version each image reports is printed"


def test_build_script_builds_one_service_and_refuses_unknown_ones(tmp_path):
    r, calls = run_build(tmp_path / "a", "pricing")
    assert r.returncode == 0, r.stderr
    assert list(built_images(calls)) == [BINARIES_IMAGE, f"{IMAGE_PREFIX}/pricing:{TAG}"]
    assert [a[-2] for a in smoke_runs(calls)] == [f"{IMAGE_PREFIX}/pricing:{TAG}"] * 2
    r, calls = run_build(tmp_path / "b", "pricing-api")
    assert r.returncode == 2 and "unknown service 'pricing-api'" in r.stderr and calls == []
    r, calls = run_build(tmp_path / "c", "--from-hosts", "pricing")
    assert r.returncode == 2 and "unknown option '--from-hosts'" in r.stderr and calls == []


def test_build_script_help(tmp_path):
    r, calls = run_build(tmp_path, "--help")
    assert r.returncode == 0 and calls == []
    for flag in ("--from-host", "--local-base", "--stand-ins", "--no-registry", "Usage: scripts/build-images.sh"):
        assert flag in r.stdout, f"--help does not mention {flag}"
    assert "set -euo" not in r.stdout and not r.stdout.startswith("#!")


def test_build_script_fails_when_a_build_fails(tmp_path):
    r, calls = run_build(tmp_path / "a", fail="akka-cqrs-rs/traders:")
    assert r.returncode != 0 and "injected failure" in r.stderr
    # It stops at the failure: pricing and pricing-web (after traders) are not attempted, and
    # nothing is smoke-run.
    assert [tag_of(c).split("/")[1] for c in builds(calls)] == [
        f"binaries:{TAG}",
        f"lighthouse:{TAG}",
        f"trade-processor:{TAG}",
        f"traders:{TAG}",
    ]
    assert smoke_runs(calls) == []
    assert r.stdout.strip().splitlines()[-1].startswith(f"==> building {IMAGE_PREFIX}/traders:{TAG}"), (
        "the last step printed names the image that failed"
    )
    # A failing binaries build stops everything after it.
    r, calls = run_build(tmp_path / "b", fail="docker/build.Dockerfile")
    assert r.returncode != 0 and len(builds(calls)) == 1 and smoke_runs(calls) == []


def test_build_script_fails_when_an_image_does_not_run(tmp_path):
    r, calls = run_build(tmp_path / "a", fail=f"run --rm {IMAGE_PREFIX}/pricing:")
    assert r.returncode != 0 and f"{IMAGE_PREFIX}/pricing:{TAG}: fake" not in r.stdout
    assert "built:" not in r.stdout
    r, calls = run_build(tmp_path / "b", fail="--entrypoint tradectl akka-cqrs-rs/lighthouse:")
    assert r.returncode != 0 and "built:" not in r.stdout, "an image without a working tradectl fails too"


def test_build_script_without_docker(tmp_path):
    r, _ = run_build(tmp_path, with_docker=False)
    assert r.returncode == 1 and "'docker' not found" in r.stderr


def test_build_script_uses_the_docker_variable(tmp_path):
    bin_dir = tmp_path / "bin"
    write_fake(bin_dir, "podman", FAKE_DOCKER, record=FAKE_DOCKER_RECORD)
    r, calls = run_build(tmp_path, "pricing", with_docker=False, DOCKER="podman")
    assert r.returncode == 0, r.stderr
    assert {c["tool"] for c in calls} == {"podman"} and len(builds(calls)) == 2 and len(smoke_runs(calls)) == 2


# ------------------------------------------------------------------------------------------------
# --no-registry: --from-host --local-base --stand-ins


def test_no_registry_is_the_three_flags(no_registry, tmp_path):
    _, calls, tmp = no_registry
    r, explicit = run_build(tmp_path, "--from-host", "--local-base", "--stand-ins")
    assert r.returncode == 0, r.stderr
    assert normalised(explicit, tmp_path) == normalised(calls, tmp)


def test_from_host_builds_the_binaries_with_cargo_like_the_build_dockerfile(no_registry):
    _, calls, _ = no_registry
    (cargo,) = of(calls, "cargo")
    assert cargo["cwd"] == str(REPO)
    argv = cargo["argv"]
    assert argv[:2] == ["build", "--release"] and "--locked" in argv
    assert sorted(argv[i + 1] for i, a in enumerate(argv) if a == "-p") == sorted(PACKAGES), (
        "the same packages as docker/build.Dockerfile builds"
    )


def test_from_host_takes_another_profile_from_the_environment(tmp_path):
    r, calls = run_build(tmp_path, "--no-registry", HOST_BUILD_PROFILE="dev")
    assert r.returncode == 0, r.stderr
    (cargo,) = of(calls, "cargo")
    argv = cargo["argv"]
    assert argv[:3] == ["build", "--profile", "dev"] and "--release" not in argv


def test_both_binaries_paths_give_the_runtime_the_same_binaries_image(produced, no_registry):
    """Whichever path, the runtime builds get a binaries image of the same name, and the
    host-built one holds exactly the six binaries host-binaries.Dockerfile copies to /out/."""
    _, default_calls = produced
    _, calls, _ = no_registry
    host = built_images(calls)[BINARIES_IMAGE]
    argv = host["argv"]
    assert argv[argv.index("--file") + 1] == "docker/host-binaries.Dockerfile"
    assert host["context_files"] == BINARIES, "the context holds the six binaries and nothing else"
    (stage,) = parse_text(host["dockerfile"])
    (copy,) = [i["value"] for i in stage if i["instruction"] == "COPY"]
    assert sorted(copy_parts(copy)[1]) == host["context_files"]
    for c in builds(calls) + builds(default_calls):
        if dockerfile_of(c) == "docker/Dockerfile":
            assert build_args(c)["BINARIES_IMAGE"] == BINARIES_IMAGE
    assert BINARIES_IMAGE == ARGS["BINARIES_IMAGE"], "docker/Dockerfile's default is the image the script builds"


def test_local_base_comes_from_build_base_image(no_registry, tmp_path):
    _, calls, _ = no_registry
    # scripts/build-base-image.sh (here: the image exists, so it is reused) before any build.
    assert calls[0]["argv"] == ["image", "inspect", LOCAL_BASE_IMAGE]
    based = [c for c in builds(calls) if dockerfile_of(c) != "docker/host-binaries.Dockerfile"]
    assert len(based) == len(SERVICE_IMAGES) + 1, "the five services and the stand-in"
    for c in based:
        assert build_args(c).get("BASE_IMAGE") == LOCAL_BASE_IMAGE, f"{tag_of(c)}: on the local base"
    # Another tag for the local base reaches every build.
    r, other = run_build(tmp_path, "--local-base", "traders", LOCAL_BASE_IMAGE="example/base:7")
    assert r.returncode == 0, r.stderr
    assert other[0]["argv"] == ["image", "inspect", "example/base:7"]
    assert build_args(built_images(other)[f"{IMAGE_PREFIX}/traders:{TAG}"])["BASE_IMAGE"] == "example/base:7"


def test_stand_ins_build_the_secantusdb_image_from_wheels_downloaded_on_the_host(no_registry):
    r, calls, _ = no_registry
    (pip,) = of(calls, "python3")
    argv = pip["argv"]
    assert argv[:3] == ["-m", "pip", "download"] and argv[argv.index("-r") + 1] == "docker/secantusdb/requirements.txt"
    assert "--only-binary=:all:" in argv, "wheels only: nothing is compiled in the image"
    build = built_images(calls)[SECANTUSDB_IMAGE]
    assert build["dockerfile"] == (SECANTUSDB_DIR / "Dockerfile").read_text()
    # Every file the Dockerfile copies is in the context the script gave it.
    context = set(build["context_files"])
    (stage,) = parse_text(build["dockerfile"])
    for value in [i["value"] for i in stage if i["instruction"] == "COPY"]:
        for src in copy_parts(value)[1]:
            src = src.rstrip("/")
            assert src in context or any(f.startswith(src + "/") for f in context), f"COPY {src}: not in the context"
    assert any(f.startswith("wheels/SecantusDB-") for f in context)
    # The python of the base (Debian bookworm: 3.11) is the one the wheels are downloaded for.
    assert argv[argv.index("--python-version") + 1] == "3.11" and LOCAL_BASE_IMAGE.endswith(":bookworm")
    assert ["run", "--rm", "--entrypoint", "secantusd-py", SECANTUSDB_IMAGE, "--help"] in smoke_runs(calls)
    assert smoke_runs(calls)[-1][-2] == SECANTUSDB_IMAGE


def parse_text(text: str) -> list[list[dict]]:
    """The instructions of each stage of a Dockerfile given as text."""
    stages: list[list[dict]] = []
    for instr in DockerfileParser(fileobj=io.BytesIO(text.encode())).structure:
        if instr["instruction"] == "FROM":
            stages.append([])
        elif stages and instr["instruction"] != "COMMENT":
            stages[-1].append(instr)
    return stages


# ------------------------------------------------------------------------------------------------
# scripts/build-base-image.sh (only what runs without root and debootstrap)


def run_base(tmp_path, *args, **env_extra):
    bin_dir = tmp_path / "bin"
    write_fake(bin_dir, "docker", FAKE_DOCKER)
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{bin_dir}:{tool_dir(tmp_path, ['bash', 'dirname'])}",
        "FAKE_LOG": str(log),
        "HOME": str(tmp_path),
        **env_extra,
    }
    r = subprocess.run(
        ["/bin/bash", str(SCRIPTS / "build-base-image.sh"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return r, read_calls(log)


def test_build_base_image_is_idempotent(tmp_path):
    r, calls = run_base(tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert [c["argv"] for c in calls] == [["image", "inspect", LOCAL_BASE_IMAGE]], "an existing base is reused"
    assert "reusing it" in r.stdout
    r, calls = run_base(tmp_path / "b", LOCAL_BASE_IMAGE="example/base:7")
    assert r.returncode == 0 and [c["argv"] for c in calls] == [["image", "inspect", "example/base:7"]]
    r, calls = run_base(tmp_path / "c", "--bogus")
    assert r.returncode == 2 and "usage" in r.stderr and calls == []


def test_local_base_default_is_the_same_everywhere():
    build_images = (SCRIPTS / "build-images.sh").read_text()
    assert '"${LOCAL_BASE_IMAGE:-$PREFIX/base:bookworm}"' in build_images and IMAGE_PREFIX == "akka-cqrs-rs"
    assert f'"${{LOCAL_BASE_IMAGE:-{LOCAL_BASE_IMAGE}}}"' in (SCRIPTS / "build-base-image.sh").read_text()
    args, _ = parse(SECANTUSDB_DIR / "Dockerfile")
    assert args["BASE_IMAGE"] == LOCAL_BASE_IMAGE


# ------------------------------------------------------------------------------------------------
# What the manifests use


def used_images() -> list[tuple[str, str]]:
    out = []
    for doc in docs_in(K8S):
        if doc.kind in ("Deployment", "StatefulSet"):
            out += [(str(doc), c["image"]) for c in containers(doc)]
    for path in (COMPOSE, COMPOSE_TEST):
        for name, svc in load_compose(path)["services"].items():
            if "image" in svc:
                out.append((f"{path.name} service {name}", svc["image"]))
    return out


def test_manifests_and_compose_use_only_images_the_script_builds(no_registry):
    _, calls, _ = no_registry
    built = set(built_images(calls))
    assert built == {BINARIES_IMAGE, *SERVICE_IMAGES, SECANTUSDB_IMAGE}
    used = used_images()
    assert used
    for where, image in used:
        if is_own_image(image):
            assert image in built, f"{where}: {image} is not built by scripts/build-images.sh ({sorted(built)})"
    own_used = {image for _, image in used if is_own_image(image)}
    deployable = built - {BINARIES_IMAGE}
    assert own_used == deployable, f"images built but never deployed: {sorted(deployable - own_used)}"


def test_third_party_images_are_pinned():
    for where, image in used_images():
        if not is_own_image(image):
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, f"{where}: pin {image} to a version"
