#!/bin/sh
# The echo benchmark of issue 10: cfutures (apps/echo_server +
# apps/echo_client), raw libuv callbacks (bench_uv_echo) and Python
# asyncio streams (bench_asyncio_echo.py), each as a server process and a
# client process (one thread each), at CONNS connections x MSGS round trips
# of SIZE bytes. Prints RESULT lines; bench/run.sh collects them.
#   bench/run_echo.sh BUILD_DIR
set -eu
build=${1:-build/bench}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
MSGS=${ECHO_MSGS:-100}
SIZE=${ECHO_SIZE:-64}
out=$(mktemp)
spid=""
# A server is never left behind, even when a client fails.
trap 'rm -f "$out"; [ -n "$spid" ] && kill "$spid" 2>/dev/null; true' EXIT

port_of() { # waits for the server's "port N" line
  for _ in $(seq 1 100); do
    p=$(sed -n 's/.*port \([0-9]*\)$/\1/p' "$out" | head -1)
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.1
  done
  echo "no port" >&2; exit 1
}

for conns in ${ECHO_CONNS:-1000 10000}; do
  : > "$out"; "$build/apps/echo_server" --port 0 --quiet > "$out" & spid=$!
  port=$(port_of)
  "$build/apps/echo_client" --port "$port" -c "$conns" -n "$MSGS" -s "$SIZE" | grep '^RESULT' || true
  kill -TERM "$spid"; wait "$spid" || true

  : > "$out"; "$build/bench/bench_uv_echo" server > "$out" & spid=$!
  port=$(port_of)
  "$build/bench/bench_uv_echo" client "$port" "$conns" "$MSGS" "$SIZE" || true
  kill "$spid"; wait "$spid" 2>/dev/null || true

  : > "$out"; "$python" "$here/bench_asyncio_echo.py" server > "$out" & spid=$!
  port=$(port_of)
  "$python" "$here/bench_asyncio_echo.py" client "$port" "$conns" "$MSGS" "$SIZE" || true
  kill "$spid"; wait "$spid" 2>/dev/null || true
done
