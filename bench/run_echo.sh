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

kib() { # a /proc/PID/status field, in KiB
  sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status"
}

# The server's memory per connection: its peak resident set during the
# run, less its resident set before the clients came.
server_mem() { # impl conns rss_before
  hwm=$(kib "$spid" VmHWM)
  echo "RESULT impl=$1 bench=echo_mem conns=$2 bytes_per_conn=$(( (hwm - $3) * 1024 / $2 ))"
}

for conns in ${ECHO_CONNS:-1000 10000}; do
  # The connection tasks on the loop's shared stack: the mode for many
  # connections (a suspended task keeps its frames, not a stack).
  : > "$out"; "$build/apps/echo_server" --port 0 --quiet --shared-stack > "$out" & spid=$!
  port=$(port_of); before=$(kib "$spid" VmRSS)
  "$build/apps/echo_client" --port "$port" -c "$conns" -n "$MSGS" -s "$SIZE" | grep '^RESULT' || true
  server_mem cfutures "$conns" "$before"
  kill -TERM "$spid"; wait "$spid" || true

  : > "$out"; "$build/bench/bench_uv_echo" server > "$out" & spid=$!
  port=$(port_of); before=$(kib "$spid" VmRSS)
  "$build/bench/bench_uv_echo" client "$port" "$conns" "$MSGS" "$SIZE" || true
  server_mem libuv "$conns" "$before"
  kill "$spid"; wait "$spid" 2>/dev/null || true

  # The same libuv client against a libuv server careful with memory (a
  # static read buffer, try_write first): the floor for bytes per
  # connection; its round trips are reported under libuv_lean.
  : > "$out"; "$build/bench/bench_uv_echo" server-lean > "$out" & spid=$!
  port=$(port_of); before=$(kib "$spid" VmRSS)
  "$build/bench/bench_uv_echo" client "$port" "$conns" "$MSGS" "$SIZE" |
    sed 's/impl=libuv /impl=libuv_lean /' || true
  server_mem libuv_lean "$conns" "$before"
  kill "$spid"; wait "$spid" 2>/dev/null || true

  : > "$out"; "$python" "$here/bench_asyncio_echo.py" server > "$out" & spid=$!
  port=$(port_of); before=$(kib "$spid" VmRSS)
  "$python" "$here/bench_asyncio_echo.py" client "$port" "$conns" "$MSGS" "$SIZE" || true
  server_mem python "$conns" "$before"
  kill "$spid"; wait "$spid" 2>/dev/null || true
done
