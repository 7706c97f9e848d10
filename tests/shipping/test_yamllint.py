"""yamllint passes on every YAML file we ship, with the repository's .yamllint."""

from __future__ import annotations

import subprocess
import sys

from shipping import REPO

TARGETS = ["k8s", "docker", ".yamllint"]


def yamllint(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", "-c", str(REPO / ".yamllint"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_yamllint_passes():
    r = yamllint(*TARGETS)
    assert r.returncode == 0, f"yamllint found problems:\n{r.stdout}{r.stderr}"


def test_yamllint_config_catches_problems(tmp_path):
    """The check can fail: a duplicate key, a YAML 1.1 boolean and an over-long line are reported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: 1\n  b: 2\nc: yes\nd: " + "word " * 30 + "\n")
    r = yamllint(str(bad))
    assert r.returncode != 0
    assert "key-duplicates" in r.stdout and "truthy" in r.stdout and "line-length" in r.stdout, r.stdout
