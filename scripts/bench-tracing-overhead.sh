#!/usr/bin/env bash
# The cost of trace export under load (issue 8, "Measure"): the sandbox bench twice in one run,
# first with export off (no OTEL_EXPORTER_OTLP_ENDPOINT), then exporting to a local OTLP sink
# (crates/telemetry/examples/otlp-sink.rs, which only counts what it gets) with the production
# sampling: OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01. Prints
# both confirmed-orders/s figures and the loss in percent. Each run starts on an empty journal
# (books grow as they trade, which changes the rate), with the same load.
#
# Usage: scripts/bench-tracing-overhead.sh [SECONDS] [-- SANDBOX_ARGS...]
#   SECONDS        length of each measured run (default 60; each run also warms up for 10 s)
#   SANDBOX_ARGS   more flags for both sandbox runs, e.g. --orders-per-second 5000
#   RATIO          the sampler's ratio (environment, default 0.01)
#
# It runs CPU-heavy loads for 2 x (SECONDS + ~15) s: on a shared machine, say so to the others.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=60
if [ "$#" -gt 0 ] && [ "$1" != "--" ]; then
  secs="$1"
  shift
fi
if [ "$#" -gt 0 ] && [ "$1" = "--" ]; then
  shift
fi
case "$secs" in
  '' | *[!0-9]*) echo "error: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;;
esac
ratio="${RATIO:-0.01}"

echo "==> building the sandbox and the OTLP sink (release)"
cargo build --release --quiet -p sandbox
cargo build --release --quiet -p telemetry --features testing --example otlp-sink

work="$(mktemp -d)"
sink_pid=""
cleanup() {
  if [ -n "$sink_pid" ]; then kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# One sandbox bench on a fresh journal; prints its output and leaves the orders/s in $work/$1.rate.
bench() {
  local name="$1"
  shift
  echo "==> sandbox --bench $secs ($name)"
  # `env` sets what the caller passed (NAME=VALUE, the export-on run) on top of a clean OTEL_*
  # environment.
  env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
    -u OTEL_EXPORTER_OTLP_METRICS_ENDPOINT -u OTEL_TRACES_SAMPLER -u OTEL_TRACES_SAMPLER_ARG \
    -u OTEL_SDK_DISABLED "$@" \
    cargo run --release --quiet -p sandbox -- --bench "$secs" --data-dir "$work/data-$name" \
    ${sandbox_args[@]+"${sandbox_args[@]}"} | tee "$work/$name.out"
  sed -n 's/^bench: [0-9]* s: \([0-9][0-9]*\) confirmed orders\/s.*/\1/p' "$work/$name.out" >"$work/$name.rate"
  if [ ! -s "$work/$name.rate" ]; then
    echo "error: the $name run printed no 'confirmed orders/s' line" >&2
    exit 1
  fi
}
sandbox_args=("$@")

bench export-off

echo "==> starting the OTLP sink"
cargo run --release --quiet -p telemetry --features testing --example otlp-sink -- 0 >"$work/sink.out" &
sink_pid=$!
endpoint=""
for _ in $(seq 1 100); do
  endpoint="$(sed -n 's/^otlp-sink listening on \(http:[^ ]*\)$/\1/p' "$work/sink.out")"
  [ -n "$endpoint" ] && break
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  echo "error: the OTLP sink did not start" >&2
  cat "$work/sink.out" >&2
  exit 1
fi
echo "    $endpoint"

bench export-on OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
  OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$ratio"

kill -TERM "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
sink_pid=""

off="$(cat "$work/export-off.rate")"
on="$(cat "$work/export-on.rate")"
received="$(tail -n 1 "$work/sink.out")"
echo
echo "tracing overhead, sandbox --bench $secs ${sandbox_args[*]:-}"
echo "  export off:                              $off confirmed orders/s"
echo "  export on (parentbased_traceidratio $ratio): $on confirmed orders/s"
awk -v off="$off" -v on="$on" 'BEGIN { printf "  loss:                                    %.1f %%\n", (off - on) * 100 / off }'
echo "  the sink received ${received#*total }"
