#!/usr/bin/env bash
# The container fault suite (README "Run it in containers"): builds the images without a
# registry, then runs the whole cluster as containers with docker-compose and injects faults
# (docker kill, network disconnect, SIGTERM rolling restart, a rolling update, scaling, a
# MongoDB outage), checking after each that nothing confirmed was lost (tests/containers);
# then runs the k8s/ manifests as pods on Docker through the Kubernetes harness
# (tests/k8s-harness): deploy, scale, rolling restart, kill, stop, the discovery variant.
#
# Usage: scripts/container-tests.sh [container-suite options]   (e.g. --only crash --keep, or
#        --soak 20 for the 20-minute soak with random faults;
#        see `cargo run -p container-tests -- --help`); with options, only the compose suite
#        runs, unless they include --kubernetes, which runs only the Kubernetes one
# Environment:
#   SKIP_IMAGE_BUILD=1   use the images already built (scripts/build-images.sh --no-registry)
#
# Needs Docker with docker-compose (1.29 or later) and root or the docker group. Everything the
# suite creates belongs to a compose project of its own (akka-cqrs-test-<pid>) and is removed
# at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker docker-compose; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found: the container suite needs Docker and docker-compose" >&2
    exit 1
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine does not answer (docker info)" >&2
  exit 1
fi

if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  # The users' build (release): the lessons' `scripts/build-images.sh --no-registry` then finds
  # it done.
  scripts/build-images.sh --no-registry
fi
# The suite itself is a debug build: it shares the test build's dependencies. The fake API
# server is the Kubernetes harness's, for the discovery variant.
cargo build --locked -p container-tests -p fake-apiserver
suite="${CARGO_TARGET_DIR:-target}/debug/container-suite"
if [ "$#" -gt 0 ]; then
  exec "$suite" "$@"
fi
"$suite"
exec "$suite" --kubernetes
