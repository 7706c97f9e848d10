#!/usr/bin/env bash
# Static checks of everything that ships the cluster: docker/, k8s/, .dockerignore and the
# deploy/stop/build scripts (tests in tests/shipping/). No Docker engine or Kubernetes needed.
#
# Usage: scripts/check-shipping.sh [--with-crates] [-- PYTEST_ARGS...]
#
#   (default)       Kubernetes schemas (kubernetes-validate, strict, offline), yamllint, the
#                   Dockerfile's stages, the compose file against the Compose spec, images and
#                   tags, shellcheck, and the deploy/stop/build scripts against fake kubectl/docker
#   --with-crates   also the checks that read the Rust sources under crates/: every environment
#                   variable the manifests set is read by a binary, the Dockerfile's cargo
#                   packages exist with their binaries, and tradectl has what the preStop hook
#                   uses (--addr, cluster leave, MANAGEMENT_TOKEN). These fail until the services
#                   exist.
#
# It installs what it needs when missing: the Python tools (tests/shipping/requirements.txt) into
# a virtualenv under ${XDG_CACHE_HOME:-~/.cache}/akka-cqrs-rs/ (SHIPPING_VENV overrides the path),
# and shellcheck with apt-get when run as root. Last line: "shipping: N passed, M failed".
set -euo pipefail

cd "$(dirname "$0")/.."

with_crates=false
pytest_args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --with-crates) with_crates=true ;;
    --)
      shift
      pytest_args=("$@")
      break
      ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    *)
      echo "error: unknown argument '$1' (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

die() { echo "error: $*" >&2; exit 1; }

# --- Python tools ------------------------------------------------------------------------------
requirements="tests/shipping/requirements.txt"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "python3 not found (the checks need Python 3.11 or newer)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
  die "the checks need Python 3.11 or newer ($("$python" --version 2>&1) found)"

req_hash="$(sha256sum "$requirements" | cut -c1-12)"
venv="${SHIPPING_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/akka-cqrs-rs/shipping-venv-$req_hash}"
if [ ! -f "$venv/.installed" ]; then
  echo "==> installing the check tools into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv" || die "could not create a virtualenv at $venv (install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" ||
    die "pip could not install $requirements"
  touch "$venv/.installed"
fi

# --- shellcheck --------------------------------------------------------------------------------
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing shellcheck (apt-get)"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null ||
      die "apt-get could not install shellcheck"
  else
    die "shellcheck not found; install it (Debian/Ubuntu: apt-get install shellcheck)"
  fi
fi

# --- run ---------------------------------------------------------------------------------------
marker="not crates"
if [ "$with_crates" = true ]; then
  marker=""
fi
report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT

export PYTHONDONTWRITEBYTECODE=1
echo "==> shipping checks (tests/shipping)"
status=0
"$venv/bin/python" -m pytest tests/shipping -q -m "$marker" --junitxml="$report/junit.xml" \
  ${pytest_args[@]+"${pytest_args[@]}"} || status=$?

summary="$("$venv/bin/python" - "$report/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0")
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - failed - skipped, failed, skipped)
PY
)"
read -r passed failed skipped <<<"$summary"

if [ "$with_crates" = false ]; then
  echo "note: the env-var cross-check against crates/ was not run (scripts/check-shipping.sh --with-crates)"
fi
if [ "$passed" -eq 0 ] && [ "$status" -eq 0 ]; then
  status=1
  echo "error: no check ran" >&2
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # pytest itself failed (collection error, bad arguments): count it
fi
if [ "$skipped" -gt 0 ]; then
  echo "shipping: $passed passed, $failed failed, $skipped skipped"
else
  echo "shipping: $passed passed, $failed failed"
fi
exit "$status"
