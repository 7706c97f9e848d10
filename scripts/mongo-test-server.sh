#!/usr/bin/env bash
# A throw-away MongoDB wire-protocol server for tests: SecantusDB (`pip install SecantusDB`),
# a single-node replica set over WiredTiger, on a free loopback port with its own storage dir.
#
#   scripts/mongo-test-server.sh start DIR    start it; DIR keeps its data, pid and port;
#                                             prints the connection string on stdout
#   scripts/mongo-test-server.sh stop DIR     stop it and delete DIR
#   scripts/mongo-test-server.sh restart DIR  stop it and start it again (same port, same data)
#   scripts/mongo-test-server.sh uri DIR      print the connection string again
#
# A `mongod --replSet rs0` works the same way for the tests; point MONGO_CONNECTION_STR at it.
set -euo pipefail

usage() { echo "usage: $0 start|stop|restart|uri DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd="$1"
dir="$2"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT up|down
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, want = int(sys.argv[1]), sys.argv[2]
deadline = time.time() + 60
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        up = True
    except OSError:
        up = False
    if up == (want == "up"):
        sys.exit(0)
    time.sleep(0.1)
sys.exit(f"port {port} did not come {want} within 60 s")
PY
}

uri() { echo "mongodb://127.0.0.1:$(cat "$dir/port")/?directConnection=true"; }

launch() {
  if ! command -v secantusd-py >/dev/null 2>&1; then
    echo "secantusd-py not found: pip install SecantusDB" >&2
    exit 1
  fi
  mkdir -p "$dir/data"
  nohup secantusd-py --host 127.0.0.1 --port "$(cat "$dir/port")" --storage-path "$dir/data" \
    >>"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  if ! wait_port "$(cat "$dir/port")" up; then
    tail -20 "$dir/server.log" >&2
    exit 1
  fi
}

halt() {
  if [ -f "$dir/pid" ]; then
    pid="$(cat "$dir/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    wait_port "$(cat "$dir/port")" down
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ -f "$dir/port" ] || free_port >"$dir/port"
    launch
    uri
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    halt
    rm -rf "$dir"
    ;;
  restart)
    halt
    launch
    uri
    ;;
  uri) uri ;;
  *) usage ;;
esac
