#!/usr/bin/env bash
# The project's one test command (README "Test it"): formatting, lints, every test, a fuzzing
# smoke (scripts/fuzz.sh), the container fault suite (scripts/container-tests.sh, which needs a
# running Docker engine), then every workshop lesson run as a reader would
# (scripts/check-lessons.sh).
#
# It installs nothing system-wide by itself except what a test needs and is missing
# (see the sections below), so it works on a fresh machine and stays fast on a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dashboard's browser tests drive Debian's chromium through its WebDriver, chromium-driver
# (from Rust: tests/support/web.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "==> installing chromium and chromium-driver (browser tests)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> shipping checks (Dockerfile, compose, Kubernetes manifests, deploy scripts)"
scripts/check-shipping.sh --with-crates

# The MongoDB persistence tests need a MongoDB wire-protocol server: SecantusDB, started on a
# free port for this run and stopped afterwards (the fault test also starts its own).
if ! command -v secantusd-py >/dev/null 2>&1; then
  echo "==> pip install SecantusDB (MongoDB test server)"
  python3 -m pip install --quiet --disable-pip-version-check SecantusDB
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
if [ -z "${MONGO_CONNECTION_STR:-}" ]; then
  echo "==> starting the MongoDB test server"
  mongo_dir="$(mktemp -d)"
  trap 'scripts/mongo-test-server.sh stop "$mongo_dir"' EXIT
  MONGO_CONNECTION_STR="$(scripts/mongo-test-server.sh start "$mongo_dir")"
  export MONGO_CONNECTION_STR
fi

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so nextest's summary closes the output
  cargo test --workspace --locked --doc
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

# Every fuzz target (fuzz/README.md) for 20 s from the committed corpus: what a stranger can send
# to a node, a journal, the dashboard or the management API.
echo "==> fuzzing smoke"
scripts/fuzz.sh --smoke

# The container fault suite: the images built without a registry, the whole cluster as
# containers, faults injected and the journal checked from outside (tests/containers).
echo "==> container fault suite"
scripts/container-tests.sh

# The workshop lessons (docs/lessons), every runnable command of each, output checked; after the
# container suite, whose images lessons 2, 3 and 5 use.
echo "==> workshop lessons"
scripts/check-lessons.sh --parallel
