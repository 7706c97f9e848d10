#!/usr/bin/env bash
# Builds the five service images of the AkkaTrader cluster from docker/Dockerfile:
#
#   akka-cqrs-rs/lighthouse:0.1.0       akka-cqrs-rs/trade-processor:0.1.0
#   akka-cqrs-rs/traders:0.1.0          akka-cqrs-rs/pricing:0.1.0
#   akka-cqrs-rs/pricing-web:0.1.0
#
# Each image also holds `tradectl`. The tag is the one k8s/ and docker/docker-compose.yaml use.
#
# Usage: scripts/build-images.sh [SERVICE ...]     (default: all five)
# Environment:
#   DOCKER      the docker-compatible CLI to use (default: docker; podman works too)
#   IMAGE_TAG   overrides the tag (default 0.1.0; the manifests expect 0.1.0)
set -euo pipefail

cd "$(dirname "$0")/.."

readonly REGISTRY_PREFIX="akka-cqrs-rs"
readonly TAG="${IMAGE_TAG:-0.1.0}"
readonly ALL_SERVICES=(lighthouse trade-processor traders pricing pricing-web)
DOCKER="${DOCKER:-docker}"

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "error: '$DOCKER' not found on PATH; install Docker (or set DOCKER=podman)" >&2
  exit 1
fi

services=("$@")
if [ "${#services[@]}" -eq 0 ]; then
  services=("${ALL_SERVICES[@]}")
fi
for service in "${services[@]}"; do
  case " ${ALL_SERVICES[*]} " in
    *" $service "*) ;;
    *)
      echo "error: unknown service '$service' (known: ${ALL_SERVICES[*]})" >&2
      exit 2
      ;;
  esac
done

for service in "${services[@]}"; do
  image="$REGISTRY_PREFIX/$service:$TAG"
  echo "==> building $image (target '$service' of docker/Dockerfile)"
  # The first build compiles the workspace; the others reuse the cached builder stage.
  if ! "$DOCKER" build --file docker/Dockerfile --target "$service" --tag "$image" .; then
    echo "error: building $image failed" >&2
    exit 1
  fi
done

echo "built: ${services[*]/#/$REGISTRY_PREFIX/} (tag $TAG)"
