#!/bin/sh
# The main demo (make demo): the seeds' flag downloads three ways against
# the built-in server, then a comparison table.
#
#   scripts/demo_flags.sh APPS_DIR
#
# Starts flags_server on a free local port with a fixed 0.5 s delay per
# request (the seeds' DELAY server draws 0.5 to 5 s), runs the downloaders
# for the 20 countries in a scratch directory, prints what each prints and
# a table, and stops the server on the way out (also on Ctrl-C or
# failure). Nothing leaves localhost.
set -eu
apps=$(cd "$1" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cfutures-demo.XXXXXX")
srv=""
cleanup() {
  if [ -n "$srv" ]; then
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$apps/flags_server" --port 0 --delay 0.5 --quiet >"$work/server.out" 2>&1 &
srv=$!
port=""
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
  port=$(sed -n 's|^flags_server: listening on http://127.0.0.1:\([0-9]*\)/$|\1|p' \
         "$work/server.out")
  [ -n "$port" ] || sleep 0.1
  i=$((i + 1))
done
if [ -z "$port" ]; then
  echo "demo: flags_server did not start:" >&2
  cat "$work/server.out" >&2
  exit 1
fi
export FLAGS_LOCAL_PORT="$port"
echo "flags_server on http://127.0.0.1:$port/flags, 0.5 s delay per request"
cd "$work"

rows=""
run() { # label, program, arguments...
  label=$1
  shift
  echo
  echo "\$ $*"
  rm -rf downloaded
  "$apps/$@" | tee out.txt
  # "20 downloads in 10.05s" (flags*) or "20 flags downloaded." and
  # "Elapsed time: 0.52s" (flags2_*)
  n=$(sed -n 's/^\([0-9]*\) downloads in .*/\1/p; s/^ *\([0-9]*\) flags* downloaded\./\1/p' out.txt)
  t=$(sed -n 's/^[0-9]* downloads in \([0-9.]*\)s$/\1/p; s/^Elapsed time: \([0-9.]*\)s$/\1/p' out.txt)
  saved=$(ls downloaded | wc -l)
  rows="$rows$label|$*|$n|$saved|$t
"
}
run sequential flags
run "thread pool" flags_threadpool
run asyncio flags_asyncio
run "thread pool" flags2_threadpool -m 20
run asyncio flags2_asyncio -m 20

echo
echo "Flag downloads: 20 flags, 0.5 s server delay each, one machine"
printf '%s' "$rows" | awk -F'|' '
  NR == 1 { base = $5 }
  { rows[NR] = $0 }
  END {
    printf "%-12s %-26s %6s %6s %9s %8s\n", "model", "program", "flags", "saved", "elapsed", "speedup"
    for (i = 1; i <= NR; i++) {
      split(rows[i], f, "|")
      printf "%-12s %-26s %6s %6s %8.2fs %7.1fx\n", f[1], f[2], f[3], f[4], f[5], base / f[5]
    }
  }'
echo "(flags_threadpool uses Python's default pool size, min(32, cpus + 4) ="
echo " $(nproc | awk '{n = $1 + 4; print (n > 32 ? 32 : n)}') workers here; -m 20 gives the pool one worker per flag)"
