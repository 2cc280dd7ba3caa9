#!/bin/bash
# The flag benchmarks of issue 11, side by side in one run, printing
# RESULT lines (bench/run.sh collects them into RESULTS.md):
#   (i)  20 flags from flags_server with a fixed 0.5 s delay: the C
#        downloaders and the seeds' Python ones (httpx, tqdm);
#   (j)  10,000 downloads with a 1 s delay: flags2_asyncio -m 10000, then
#        flags2_threadpool -m 1000 and an aiohttp client on the same work;
#   (k)  the servers alone under wrk -t2 -c100: flags_server, nginx with
#        one and two workers, aiohttp's static files, python3 -m http.server.
#   bench/run_flags.sh BUILD_DIR        (FLAGS_RUNS: repetitions, 3)
set -eu
build=$(cd "${1:-build/bench}" && pwd)
apps=$build/apps
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
RUNS=${FLAGS_RUNS:-3}
WRK_SECONDS=${WRK_SECONDS:-5}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  $python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}
start_flags_server() { # args...: sets $port, appends the pid
  port=$(free_port)
  "$apps/flags_server" --port "$port" --quiet "$@" > /dev/null 2>&1 &
  pids+=($!)
  wait_port "$port"
}
stop_last() {
  local p=${pids[-1]}
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset 'pids[-1]'
}
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
elapsed_of() { # the program's own report of its time
  sed -n 's/^Elapsed time: \([0-9.]*\)s$/\1/p; s/^[0-9]* downloads in \([0-9.]*\)s$/\1/p; s/.*elapsed=\([0-9.]*\).*/\1/p' "$1" | tail -1
}
measure() { # impl bench prog runs env... -- command...
  local impl=$1 bench=$2 prog=$3 runs=$4
  shift 4
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local times=""
  for _ in $(seq 1 "$runs"); do
    rm -rf "$work/cwd/downloaded"
    (cd "$work/cwd" && env "${envs[@]}" "$@" > "$work/out.txt" 2> /dev/null) || true
    t=$(elapsed_of "$work/out.txt")
    [ -n "$t" ] || { echo "no time from $prog:" >&2; cat "$work/out.txt" >&2; t=nan; }
    times="$times $t"
  done
  times=${times# }
  echo "RESULT impl=$impl bench=$bench prog=$prog median=$(echo "$times" | median) runs=${times// /,} unit=s"
}

mkdir -p "$work/cwd" "$work/root/flags"
for f in /usr/share/flags/countries/16x11/??.gif; do
  cc=$(basename "$f" .gif)
  mkdir -p "$work/root/flags/$cc"
  cp "$f" "$work/root/flags/$cc/"
done
ls "$work/root/flags" | tr a-z A-Z > "$work/cwd/codes.txt"

# (i) 20 flags, 0.5 s each --------------------------------------------------
start_flags_server --delay 0.5
E="FLAGS_LOCAL_PORT=$port"
py="$here/flags_py"
measure cfutures flags20 flags2_sequential 1 "$E" -- "$apps/flags2_sequential"
measure cfutures flags20 "flags2_threadpool -m 20" "$RUNS" "$E" -- "$apps/flags2_threadpool" -m 20
measure cfutures flags20 "flags2_asyncio -m 20" "$RUNS" "$E" -- "$apps/flags2_asyncio" -m 20
measure cfutures flags20 flags "1" "$E" -- "$apps/flags"
measure cfutures flags20 flags_threadpool "$RUNS" "$E" -- "$apps/flags_threadpool"
measure cfutures flags20 flags_asyncio "$RUNS" "$E" -- "$apps/flags_asyncio"
measure python flags20 flags2_sequential.py 1 "$E" -- $python "$py/flags2_sequential.py"
measure python flags20 "flags2_threadpool.py -m 20" "$RUNS" "$E" -- $python "$py/flags2_threadpool.py" -m 20
measure python flags20 "flags2_asyncio.py -m 20" "$RUNS" "$E" -- $python "$py/flags2_asyncio.py" -m 20
stop_last

# (j) 10,000 downloads, 1 s each ---------------------------------------------
start_flags_server --delay 1 --shared-stack
E="FLAGS_LOCAL_PORT=$port"
R="FLAGS_REPEAT=50"
measure cfutures flags10k "flags2_asyncio -m 10000" "$RUNS" "$E" "$R" FLAGS_MAX_CONCUR_REQ=10000 -- \
  "$apps/flags2_asyncio" -a -l 200 -m 10000
measure cfutures flags10k "flags2_threadpool -m 1000" 1 "$E" "$R" -- \
  "$apps/flags2_threadpool" -a -l 200 -m 1000
measure python flags10k "aiohttp, 10000 at once" 1 "$E" -- \
  $python "$py/many_aiohttp.py" "http://localhost:$port/flags" 10000 10000
stop_last

# (k) servers under wrk ------------------------------------------------------
wrk_rate() { # impl url runs
  local rates=""
  for _ in $(seq 1 "$3"); do
    r=$(wrk -t2 -c100 -d"${WRK_SECONDS}s" "$2" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p')
    rates="$rates ${r:-nan}"
  done
  rates=${rates# }
  echo "RESULT impl=$1 bench=wrk median=$(echo "$rates" | median) runs=${rates// /,} unit=req/s"
}
path=/flags/cn/cn.gif
start_flags_server --dir "$work/root" && sleep 0.2
wrk_rate cfutures "http://127.0.0.1:$port$path" "$RUNS"
stop_last
start_flags_server && sleep 0.2 # its own layout, Debian's directory
wrk_rate "cfutures (flags layout)" "http://127.0.0.1:$port$path" 1
stop_last
for workers in 1 2; do
  port=$(free_port)
  mkdir -p "$work/nginx$workers"
  cat > "$work/nginx$workers/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
error_log $work/nginx$workers/error.log;
pid $work/nginx$workers/nginx.pid;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { image/gif gif; }
  server { listen 127.0.0.1:$port; root $work/root; }
}
CONF
  nginx -c "$work/nginx$workers/nginx.conf" -p "$work/nginx$workers" &
  pids+=($!)
  wait_port "$port"
  wrk_rate "nginx-$workers" "http://127.0.0.1:$port$path" "$RUNS"
  stop_last
done
port=$(free_port)
$python "$py/static_aiohttp.py" "$work/root" "$port" > /dev/null 2>&1 & pids+=($!)
wait_port "$port"
wrk_rate aiohttp "http://127.0.0.1:$port$path" 1
stop_last
port=$(free_port)
$python -m http.server --bind 127.0.0.1 -d "$work/root" "$port" > /dev/null 2>&1 & pids+=($!)
wait_port "$port"
wrk_rate http.server "http://127.0.0.1:$port$path" 1
stop_last
