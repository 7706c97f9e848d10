#!/usr/bin/env bash
# Runs the k8s/ manifests as containers on this Docker host, so that scripts/deployK8sServices.sh
# and scripts/stopK8sServices.sh can run unchanged against a kubectl shim (tests/k8s-harness/).
# Test tooling: a manifest feature it does not emulate is refused with a clear error.
#
# Usage: scripts/k8s-harness.sh serve --project P [--state DIR] [--blotter-dir DIR]
#                                     [--orders-per-second N] [--subnet CIDR] [--free-lb-ports]
#                                     [--api-server PATH]
#        scripts/k8s-harness.sh env (--project P | --state DIR)
#        scripts/k8s-harness.sh port SERVICE [-n NAMESPACE] [PORT]
#        scripts/k8s-harness.sh cleanup --project P
#
#   serve    the controller, in the foreground until SIGTERM/SIGINT; then it deletes everything it
#            created (state in --state, default /tmp/k8s-harness-P); --api-server names the
#            fake-apiserver binary (cargo build -p fake-apiserver) that pods with a
#            serviceAccountName (the kubernetes-api discovery variant) list each other through
#   env      prints `export PATH=...:$PATH KUBE_HARNESS_STATE=...`: eval it, then kubectl is the shim
#   port     the host address of a LoadBalancer Service (127.0.0.1:PORT)
#   cleanup  force-removes every container, volume and network labelled with the project
#
# Example:
#   scripts/k8s-harness.sh serve --project k8sh1 --state /tmp/k8sh1 &
#   eval "$(scripts/k8s-harness.sh env --state /tmp/k8sh1)"
#   scripts/deployK8sServices.sh --without-observability
#   kubectl -n akka-cqrs get pods
#   scripts/stopK8sServices.sh; kill %1
#
# It installs PyYAML (tests/k8s-harness/requirements.txt) into a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/akka-cqrs-rs/ (K8S_HARNESS_VENV overrides the path).
set -euo pipefail

cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 1; }

case "${1:-}" in
  -h | --help | "")
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [ -n "${1:-}" ] || exit 2
    exit 0
    ;;
esac

requirements="tests/k8s-harness/requirements.txt"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "python3 not found (the harness needs Python 3.11 or newer)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
  die "the harness needs Python 3.11 or newer ($("$python" --version 2>&1) found)"

req_hash="$(sha256sum "$requirements" | cut -c1-12)"
venv="${K8S_HARNESS_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/akka-cqrs-rs/k8s-harness-venv-$req_hash}"
if [ ! -f "$venv/.installed" ]; then
  echo "==> installing the harness's Python packages into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv" || die "could not create a virtualenv at $venv (install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" ||
    die "pip could not install $requirements"
  touch "$venv/.installed"
fi

# exec: `serve` gets SIGTERM/SIGINT directly and cleans up before it exits.
PYTHONPATH="$PWD/tests/k8s-harness${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m harness "$@"
