#!/bin/sh
# echo_server and echo_client as two processes: the server prints its
# port, the client talks to it, SIGTERM stops the server cleanly.
set -eu
server=$1
client=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$server" --port 0 > "$out" &
pid=$!
for _ in $(seq 1 100); do
  grep -q "listening" "$out" && break
  sleep 0.1
done
port=$(sed -n 's/.*port \([0-9]*\)$/\1/p' "$out" | head -1)
[ -n "$port" ] || { echo "no port from echo_server"; kill "$pid"; exit 1; }
"$client" --port "$port" -c 50 -n 10 -s 64
kill -TERM "$pid"
wait "$pid"
grep -q "stopped after 50 connections" "$out" || { cat "$out"; exit 1; }
