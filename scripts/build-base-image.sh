#!/usr/bin/env bash
# Builds the runtime base image from Debian's packages, for machines that cannot pull
# `debian:bookworm-slim` from a registry:
#
#   debootstrap --variant=minbase bookworm DIR <mirror>  ->  trim docs and caches  ->  docker import
#
# The result is tagged akka-cqrs-rs/base:bookworm (override with LOCAL_BASE_IMAGE) and is what
# `scripts/build-images.sh --local-base` passes to docker/Dockerfile as BASE_IMAGE.
#
# Idempotent: when the tag exists already, nothing is built (pass --rebuild to build it again).
# Needs root (debootstrap) and the debootstrap package; it installs debootstrap with apt when
# missing. The mirror is the one this machine's apt sources name (override with DEBIAN_MIRROR).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly IMAGE="${LOCAL_BASE_IMAGE:-akka-cqrs-rs/base:bookworm}"
readonly SUITE=bookworm
DOCKER="${DOCKER:-docker}"

rebuild=0
case "${1:-}" in
  --rebuild) rebuild=1 ;;
  "") ;;
  *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

if [ "$rebuild" = 0 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "==> base image $IMAGE exists; reusing it"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
debootstrap="$(command -v debootstrap || true)"
[ -n "$debootstrap" ] || [ ! -x /usr/sbin/debootstrap ] || debootstrap=/usr/sbin/debootstrap
if [ -z "$debootstrap" ]; then
  echo "==> installing debootstrap"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
  debootstrap=/usr/sbin/debootstrap
fi

# The mirror this machine's apt uses: deb822 sources (URIs:) or one-line sources (deb URL ...).
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }')"
fi
if [ -z "$mirror" ]; then
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d)"
trap '$SUDO rm -rf "$root"' EXIT
echo "==> debootstrap --variant=minbase $SUITE from $mirror"
$SUDO "$debootstrap" --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  echo "error: debootstrap failed (full log: $root.log)" >&2
  exit 1
}
rm -f "$root.log"

# What a container image does not need: documentation, locales, package lists and caches.
$SUDO rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/tmp/*
# apt inside image builds keeps no package cache and installs no recommends, as the official
# slim images do.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  | $SUDO tee "$root/etc/apt/apt.conf.d/90-slim" >/dev/null
echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
  | $SUDO tee "$root/etc/apt/apt.conf.d/91-no-cache" >/dev/null

echo "==> docker import -> $IMAGE"
$SUDO tar -C "$root" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE ($mirror), scripts/build-base-image.sh" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE ($("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%d MB", $1 / 1e6 }'))"
