#!/bin/sh
# Runs every benchmark side by side in one invocation and rewrites
# bench/RESULTS.md. Usage: bench/run.sh [BUILD_DIR]   (make bench)
#
# Sizes (environment): N tasks for throughput/map (1000000), ROUNDS round
# trips for latency (20000), RUNS repetitions per figure (5), W workers
# (2). Python is slow enough that it runs PY_N tasks (200000) and PY_RUNS
# repetitions (3); per-task figures do not depend on N.
set -eu
build=${1:-build/bench}
N=${N:-1000000}
ROUNDS=${ROUNDS:-20000}
RUNS=${RUNS:-5}
W=${W:-2}
PY_N=${PY_N:-200000}
PY_RUNS=${PY_RUNS:-3}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3 # Debian's, with Debian's packages (not pyenv's)
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

run() {
  echo "+ $*" >&2
  "$@" | tee -a "$raw"
}
# The host's core-to-core latency, before and after (bimodal on this VM,
# and every cross-core figure moves with it: bench/NOTES.md section 19).
run "$build/bench/probe_c2c" 200000 5 start
run "$build/bench/bench_cf" "$N" "$ROUNDS" "$RUNS" "$W"
[ -x "$build/bench/bench_glib" ] && run "$build/bench/bench_glib" "$N" "$ROUNDS" "$RUNS" "$W"
[ -x "$build/bench/bench_uv" ] && run "$build/bench/bench_uv" "$N" "$ROUNDS" "$RUNS" "$W"
run "$build/bench/bench_naive" "$N" "$ROUNDS" "$RUNS" "$W"
run "$python" "$here/bench_python.py" "$PY_N" "$ROUNDS" "$PY_RUNS" "$W"
run "$build/bench/probe_c2c" 200000 5 after-the-thread-pools

# The event loop (issue 8): sleepers in fresh processes, spawn, ping-pong.
LOOP_N=${LOOP_N:-100000}
LOOP_RUNS=${LOOP_RUNS:-3}
SPAWN_N=${SPAWN_N:-200000}
PP_N=${PP_N:-1000000}
PY_PP_N=${PY_PP_N:-200000}
run "$build/bench/bench_loop" sleepers "$LOOP_N" "$LOOP_RUNS"
[ -x "$build/bench/bench_uv_timers" ] && run "$build/bench/bench_uv_timers" sleepers "$LOOP_N" "$LOOP_RUNS"
run "$python" "$here/bench_asyncio.py" sleepers "$LOOP_N" "$LOOP_RUNS"
run "$build/bench/bench_loop" spawn "$SPAWN_N" "$RUNS"
run "$python" "$here/bench_asyncio.py" spawn "$SPAWN_N" "$PY_RUNS"
run "$build/bench/bench_loop" pingpong "$PP_N" "$RUNS"
run "$python" "$here/bench_asyncio.py" pingpong "$PY_PP_N" "$PY_RUNS"

# Async I/O (issue 10): the echo benchmark, servers and clients as
# processes (needs the apps: make bench builds them).
"$here/run_echo.sh" "$build" | tee -a "$raw"

# The process pool (issue 9): the seeds' factor map and the round trip.
run "$build/bench/bench_procpool" "$RUNS" "$W" 2000
run "$python" "$here/bench_procpool.py" "$PY_RUNS" "$W" 500

# The flag programs (issue 11): downloads against flags_server, and the
# server under wrk beside nginx, aiohttp and http.server.
"$here/run_flags.sh" "$build" | tee -a "$raw"
run "$build/bench/probe_c2c" 200000 5 end

"$python" "$here/report.py" "$raw" \
  "N=$N ROUNDS=$ROUNDS RUNS=$RUNS W=$W PY_N=$PY_N PY_RUNS=$PY_RUNS LOOP_N=$LOOP_N LOOP_RUNS=$LOOP_RUNS SPAWN_N=$SPAWN_N PP_N=$PP_N PY_PP_N=$PY_PP_N make bench" \
  > "$here/RESULTS.md"
echo "wrote $here/RESULTS.md" >&2
