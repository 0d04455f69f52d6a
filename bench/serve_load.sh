#!/usr/bin/env bash
# Load test of `segicl serve` on loopback (issue 8): starts the server with a token, runs
# segicl_serve_load (good clients + a stream of bad requests + slow bodies) for LOAD_SECONDS, then
# stops the server with SIGTERM and checks it exits cleanly. Also checks the bind defaults: a
# default start binds 127.0.0.1, and a non-loopback --host without --token logs a warning.
#
#   bench/serve_load.sh [BUILD_DIR]        (default build; needs bin/segicl, bin/segicl_serve_load,
#                                           tests/train/segicl_toy_pack)
#   env: LOAD_SECONDS (60), LOAD_CLIENTS (8), LOAD_SLOW (2), MODEL (default: a random-weight
#        crossconv-tiny checkpoint made here), NICE (15), LOAD_JSON (copy of the JSON summary)
# Exit 0 = pass. Not a model benchmark: segment latencies include the queue.
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/bin/segicl
LOAD=$BUILD/bin/segicl_serve_load
SECS=${LOAD_SECONDS:-60}
CLIENTS=${LOAD_CLIENTS:-8}
SLOW=${LOAD_SLOW:-2}
NICE=${NICE:-15}
TOKEN=load-test-$RANDOM$RANDOM
WORK=$(mktemp -d /tmp/segicl_serve_load.XXXXXX)
SERVER=""
cleanup() {
  if [[ -n "$SERVER" ]] && kill -0 "$SERVER" 2>/dev/null; then kill -TERM "$SERVER"; wait "$SERVER" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for f in "$BIN" "$LOAD"; do [[ -x $f ]] || { echo "missing $f (build it first)" >&2; exit 2; }; done

# Starts `segicl serve ARGS...` in the background; sets SERVER (pid) and PORT.
start_server() {
  local log=$1; shift
  # A fresh stdout file per start: the shell truncates a reused one only once the child runs, and
  # the wait below must not read the previous server's address.
  OUT=$log.stdout
  nice -n "$NICE" "$BIN" --threads 1 serve --port 0 "$@" >"$OUT" 2>"$log" &
  SERVER=$!
  for _ in $(seq 1 600); do
    if grep -q "listening on" "$OUT" 2>/dev/null; then break; fi
    if ! kill -0 "$SERVER" 2>/dev/null; then echo "server died on start:" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.1
  done
  PORT=$(sed -n 's|.*http://[^:]*:\([0-9]*\)/.*|\1|p' "$OUT" | head -1)
  [[ -n "$PORT" ]] || { echo "server printed no address:" >&2; cat "$OUT" "$log" >&2; exit 1; }
}

stop_server() {
  kill -TERM "$SERVER"
  local rc=0
  wait "$SERVER" || rc=$?
  SERVER=""
  return $rc
}

MODEL=${MODEL:-}
if [[ -z "$MODEL" ]]; then
  "$BUILD/tests/train/segicl_toy_pack" "$WORK/toy.pack"
  nice -n "$NICE" "$BIN" --threads 1 --quiet train --preset crossconv-tiny --pack "$WORK/toy.pack" \
    -o "$WORK/run" --steps 1 --batch-size 1 >/dev/null
  MODEL=$WORK/run/checkpoint.pt
fi

# Bind defaults: loopback without --host; a warning for a non-loopback address without a token
# (127.0.0.2 is outside the server's loopback names but still unreachable from other machines).
start_server "$WORK/default.log" --model "$MODEL"
grep -q "listening on http://127.0.0.1:" "$OUT" || { echo "FAIL: default bind is not 127.0.0.1" >&2; exit 1; }
stop_server
start_server "$WORK/other.log" --model "$MODEL" --host 127.0.0.2
grep -q "without --token" "$WORK/other.log" || { echo "FAIL: no warning for a non-loopback bind without --token" >&2; exit 1; }
stop_server
echo "bind: default 127.0.0.1 ok; non-loopback without token warns ok"

start_server "$WORK/server.log" --model "$MODEL" --token "$TOKEN"
rc=0
"$LOAD" --port "$PORT" --token "$TOKEN" --pid "$SERVER" --clients "$CLIENTS" --seconds "$SECS" \
  --slow-clients "$SLOW" --samples data/samples >"$WORK/summary.json" || rc=$?
cat "$WORK/summary.json"
[[ -n "${LOAD_JSON:-}" ]] && cp "$WORK/summary.json" "$LOAD_JSON"
server_rc=0
stop_server || server_rc=$?
if [[ $server_rc -ne 0 ]]; then
  echo "FAIL: server exited with $server_rc after the load" >&2; tail -20 "$WORK/server.log" >&2; exit 1
fi
if [[ $rc -ne 0 ]]; then echo "FAIL: see failures above" >&2; tail -20 "$WORK/server.log" >&2; exit 1; fi
echo "serve_load: PASS ($SECS s, $CLIENTS clients, $SLOW slow bodies, server exited 0)"
