#!/usr/bin/env bash
# Fuzzes every input a stranger can send to the cluster (fuzz/README.md): the transport's
# handshake, frames, envelopes and messages, the journal's JSON and BSON, pricing-web's HTTP and
# WebSocket, the management API and the configuration parser. libFuzzer through cargo-fuzz,
# installed from crates.io when missing.
#
# Usage: scripts/fuzz.sh [--smoke | --seconds N] [TARGET ...]
#   --smoke       every target for 20 s from the committed corpus, with a fixed seed (part of
#                 scripts/test.sh)
#   --seconds N   every target for N s (the closing note's runs: --seconds 600)
# Each run prints libFuzzer's last status line (executions, coverage, corpus) and fails on the
# first finding; libFuzzer writes the input that found it to fuzz/artifacts/TARGET/. Inputs
# that reached new code are added to fuzz/corpus/TARGET/ (commit the interesting ones; CI
# starts from what is committed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
seed=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    # A fixed seed: the smoke mutates the committed corpus the same way on every run, so CI
    # fails on a change to the code, not on a lucky draw.
    --smoke) seconds=20; seed=(-seed=1) ;;
    --seconds) seconds="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) targets+=("$1") ;;
  esac
  shift
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install --locked cargo-fuzz >/dev/null
fi

cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# No sanitizer: the fuzzed code is safe Rust, so AddressSanitizer would find nothing that a
# panic does not, at half the speed and a second build of every dependency. Debug assertions
# stay on (cargo-fuzz's default), so an integer overflow is a finding too.
echo "==> building the fuzz targets"
cargo fuzz build --sanitizer none --release --debug-assertions

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  echo "==> fuzz $t for ${seconds}s"
  if ! cargo fuzz run --sanitizer none --release --debug-assertions "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 "${seed[@]}" \
      >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t found a failure; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -n 1 | sed "s/^/    $t: /"
  grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec' "$log" | sed "s/^/    $t: /"
done
echo "==> fuzzing passed: ${#targets[@]} targets, ${seconds}s each"
