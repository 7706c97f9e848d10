#!/usr/bin/env bash
# Builds the five service images of the AkkaTrader cluster:
#
#   akka-cqrs-rs/lighthouse:0.1.0       akka-cqrs-rs/trade-processor:0.1.0
#   akka-cqrs-rs/traders:0.1.0          akka-cqrs-rs/pricing:0.1.0
#   akka-cqrs-rs/pricing-web:0.1.0
#
# Each image also holds `tradectl`. The tag is the one k8s/ and docker/docker-compose.yaml use.
#
# Two ways to get the binaries into the one runtime stage of docker/Dockerfile:
#   default       docker/build.Dockerfile compiles them with cargo-chef in the Rust toolchain
#                 image (rust:1.95-slim-bookworm): for machines that can pull images.
#   --from-host   `cargo build --release` on this machine, then docker/host-binaries.Dockerfile
#                 wraps them in an image of the same shape: for machines without a registry, and
#                 faster where the workspace is already built. The host must be Debian bookworm
#                 (or as old a glibc) for the binaries to run on the base image.
# and two bases for the runtime stage:
#   default       debian:bookworm-slim, pulled from Docker Hub
#   --local-base  akka-cqrs-rs/base:bookworm, made from Debian's packages by
#                 scripts/build-base-image.sh (debootstrap + docker import), once
# and, for the tests on machines that cannot pull mongo:7.0:
#   --stand-ins   also akka-cqrs-rs/secantusdb:0.7.0b3 (docker/secantusdb), the MongoDB stand-in
#                 docker/docker-compose.test.yaml runs
#   --no-registry all three: --from-host --local-base --stand-ins
#
# Every image built is then started once (`--version`), so an image that cannot run its own
# binary (a missing library, a wrong entrypoint) fails here and not in a cluster.
#
# Usage: scripts/build-images.sh [--from-host] [--local-base] [--stand-ins] [--no-registry] [SERVICE ...]
# Environment:
#   DOCKER            the docker-compatible CLI (default: docker; podman works too)
#   IMAGE_TAG         the services' tag (default 0.1.0; the manifests expect 0.1.0)
#   LOCAL_BASE_IMAGE  the tag of the local base (default akka-cqrs-rs/base:bookworm)
#   CARGO_TARGET_DIR  where --from-host finds target/release (default: target)
#   HOST_BUILD_PROFILE the cargo profile of --from-host (default release)
set -euo pipefail

cd "$(dirname "$0")/.."

readonly PREFIX="akka-cqrs-rs"
readonly TAG="${IMAGE_TAG:-0.1.0}"
readonly ALL_SERVICES=(lighthouse trade-processor traders pricing pricing-web)
readonly BINARIES=(lighthouse trade-processor traders pricing pricing-web tradectl)
readonly SECANTUSDB_IMAGE="$PREFIX/secantusdb:0.7.0b3"
DOCKER="${DOCKER:-docker}"

from_host=0
local_base=0
stand_ins=0
services=()
for arg in "$@"; do
  case "$arg" in
    --from-host) from_host=1 ;;
    --local-base) local_base=1 ;;
    --stand-ins) stand_ins=1 ;;
    --no-registry) from_host=1; local_base=1; stand_ins=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option '$arg' (see --help)" >&2; exit 2 ;;
    *)
      case " ${ALL_SERVICES[*]} " in
        *" $arg "*) services+=("$arg") ;;
        *) echo "error: unknown service '$arg' (known: ${ALL_SERVICES[*]})" >&2; exit 2 ;;
      esac
      ;;
  esac
done
if [ "${#services[@]}" -eq 0 ]; then
  services=("${ALL_SERVICES[@]}")
fi

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "error: '$DOCKER' not found on PATH; install Docker (or set DOCKER=podman)" >&2
  exit 1
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

# 1. The base of the runtime stage.
base="debian:bookworm-slim"
if [ "$local_base" = 1 ]; then
  scripts/build-base-image.sh
  base="${LOCAL_BASE_IMAGE:-$PREFIX/base:bookworm}"
fi

# 2. The binaries, as an image holding /out/<binary>.
binaries_image="$PREFIX/binaries:$TAG"
if [ "$from_host" = 1 ]; then
  profile="${HOST_BUILD_PROFILE:-release}"
  if [ "$profile" = release ]; then profile_args=(--release); else profile_args=(--profile "$profile"); fi
  echo "==> cargo build ${profile_args[*]} (the binaries, on the host)"
  cargo build "${profile_args[@]}" --locked \
    -p lighthouse -p trade-processor -p traders -p pricing -p pricing-web -p ctl
  release="${CARGO_TARGET_DIR:-target}/$profile"
  mkdir -p "$stage/binaries"
  for b in "${BINARIES[@]}"; do cp "$release/$b" "$stage/binaries/"; done
  echo "==> building $binaries_image (docker/host-binaries.Dockerfile)"
  "$DOCKER" build --quiet --file docker/host-binaries.Dockerfile --tag "$binaries_image" \
    "$stage/binaries" >/dev/null
else
  echo "==> building $binaries_image (docker/build.Dockerfile: cargo-chef in the Rust image)"
  "$DOCKER" build --file docker/build.Dockerfile --tag "$binaries_image" .
fi

# 3. The five runtime images: the same Dockerfile and stage either way. Its context is an empty
#    folder: everything it copies comes from the two images above.
mkdir -p "$stage/empty"
for service in "${services[@]}"; do
  image="$PREFIX/$service:$TAG"
  echo "==> building $image (target '$service' of docker/Dockerfile, base $base)"
  if ! "$DOCKER" build --quiet --file docker/Dockerfile --target "$service" \
    --build-arg "BASE_IMAGE=$base" --build-arg "BINARIES_IMAGE=$binaries_image" \
    --tag "$image" "$stage/empty" >/dev/null; then
    echo "error: building $image failed" >&2
    exit 1
  fi
done

# 4. The MongoDB stand-in, from wheels downloaded on the host.
if [ "$stand_ins" = 1 ]; then
  echo "==> building $SECANTUSDB_IMAGE (docker/secantusdb, wheels from PyPI on the host)"
  cp -r docker/secantusdb "$stage/secantusdb"
  python3 -m pip download --quiet --disable-pip-version-check --dest "$stage/secantusdb/wheels" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any \
    -r docker/secantusdb/requirements.txt
  "$DOCKER" build --quiet --build-arg "BASE_IMAGE=$base" --tag "$SECANTUSDB_IMAGE" \
    "$stage/secantusdb" >/dev/null
fi

# 5. Smoke: every image runs its own binary (and tradectl).
for service in "${services[@]}"; do
  image="$PREFIX/$service:$TAG"
  version="$("$DOCKER" run --rm "$image" --version)"
  "$DOCKER" run --rm --entrypoint tradectl "$image" --version >/dev/null
  echo "    $image: $version"
done
if [ "$stand_ins" = 1 ]; then
  "$DOCKER" run --rm --entrypoint secantusd-py "$SECANTUSDB_IMAGE" --help >/dev/null
  echo "    $SECANTUSDB_IMAGE: secantusd-py"
fi

built=("${services[@]/#/$PREFIX/}")
if [ "$stand_ins" = 1 ]; then built+=("$SECANTUSDB_IMAGE"); fi
echo "built: ${built[*]} (tag $TAG, base $base)"
