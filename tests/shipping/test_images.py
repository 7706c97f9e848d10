"""scripts/build-images.sh builds exactly the five images, and k8s/ and compose use only those.

The script runs for real with a fake `docker` first on PATH that records its calls, so what
"the build script produces" is what the script does, not what a test assumes it does.
"""

from __future__ import annotations

import subprocess

import pytest

from shipping import (
    IMAGE_PREFIX,
    K8S,
    REPO,
    SCRIPTS,
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
from test_dockerfile import BY_NAME

FAKE_DOCKER = r"""
fail = os.environ.get("FAKE_FAIL_MATCH")
if fail and fail in " ".join(args):
    print("fake docker: injected failure", file=sys.stderr)
    sys.exit(1)
"""


def run_build(tmp_path, *args, fail=None, with_docker=True):
    bin_dir = tmp_path / "bin"
    if with_docker:
        write_fake(bin_dir, "docker", FAKE_DOCKER)
    else:
        bin_dir.mkdir()
    log = tmp_path / "docker.log"
    # Only the fake and the few tools the script needs: a real docker on this machine stays out.
    env = {"PATH": f"{bin_dir}:{tool_dir(tmp_path, ['dirname'])}", "FAKE_LOG": str(log), "HOME": str(tmp_path)}
    if fail:
        env["FAKE_FAIL_MATCH"] = fail
    r = subprocess.run(
        ["/bin/bash", str(SCRIPTS / "build-images.sh"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return r, read_calls(log)


def built_images(calls) -> dict[str, list[str]]:
    out = {}
    for call in calls:
        argv = call["argv"]
        assert argv[0] == "build", argv
        tag = argv[argv.index("--tag") + 1]
        out[tag] = argv
    return out


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    r, calls = run_build(tmp_path_factory.mktemp("build"))
    assert r.returncode == 0, r.stderr
    return r, calls


def test_build_script_builds_exactly_the_five_images(produced):
    _, calls = produced
    images = built_images(calls)
    assert sorted(images) == sorted(f"{IMAGE_PREFIX}/{s}:{TAG}" for s in SERVICES)
    for tag, argv in images.items():
        svc = tag.split("/")[1].split(":")[0]
        assert argv[argv.index("--target") + 1] == svc, f"{tag}: built from target {svc}"
        assert svc in BY_NAME, f"{tag}: docker/Dockerfile has no stage {svc}"
        assert argv[argv.index("--file") + 1] == "docker/Dockerfile"
        assert argv[-1] == "."
    # The build context is the repository root, wherever the script is started from.
    assert {c["cwd"] for c in calls} == {str(REPO)}


def test_build_script_builds_one_service_and_refuses_unknown_ones(tmp_path):
    r, calls = run_build(tmp_path, "pricing")
    assert r.returncode == 0 and list(built_images(calls)) == [f"{IMAGE_PREFIX}/pricing:{TAG}"]
    r, calls = run_build(tmp_path / "x", "pricing-api")
    assert r.returncode == 2 and "unknown service 'pricing-api'" in r.stderr and calls == []


def test_build_script_fails_when_a_build_fails(tmp_path):
    r, calls = run_build(tmp_path, fail="akka-cqrs-rs/traders:")
    assert r.returncode == 1 and "building akka-cqrs-rs/traders:0.1.0 failed" in r.stderr
    # It stops at the failure: pricing and pricing-web (after traders) are not attempted.
    assert [c["argv"][c["argv"].index("--tag") + 1].split("/")[1] for c in calls] == [
        "lighthouse:0.1.0",
        "trade-processor:0.1.0",
        "traders:0.1.0",
    ]


def test_build_script_without_docker(tmp_path):
    r, _ = run_build(tmp_path, with_docker=False)
    assert r.returncode == 1 and "'docker' not found" in r.stderr


def used_images() -> list[tuple[str, str]]:
    out = []
    for doc in docs_in(K8S):
        if doc.kind in ("Deployment", "StatefulSet"):
            out += [(str(doc), c["image"]) for c in containers(doc)]
    for name, svc in load_compose()["services"].items():
        out.append((f"compose service {name}", svc["image"]))
    return out


def test_manifests_and_compose_use_only_images_the_script_builds(produced):
    _, calls = produced
    built = set(built_images(calls))
    used = used_images()
    assert used
    for where, image in used:
        if is_own_image(image):
            assert image in built, f"{where}: {image} is not built by scripts/build-images.sh ({sorted(built)})"
    own_used = {image for _, image in used if is_own_image(image)}
    assert own_used == built, f"images built but never deployed: {sorted(built - own_used)}"


def test_third_party_images_are_pinned():
    for where, image in used_images():
        if not is_own_image(image):
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, f"{where}: pin {image} to a version"
