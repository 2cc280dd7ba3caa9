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
run "$build/bench/bench_cf" "$N" "$ROUNDS" "$RUNS" "$W"
[ -x "$build/bench/bench_glib" ] && run "$build/bench/bench_glib" "$N" "$ROUNDS" "$RUNS" "$W"
[ -x "$build/bench/bench_uv" ] && run "$build/bench/bench_uv" "$N" "$ROUNDS" "$RUNS" "$W"
run "$build/bench/bench_naive" "$N" "$ROUNDS" "$RUNS" "$W"
run "$python" "$here/bench_python.py" "$PY_N" "$ROUNDS" "$PY_RUNS" "$W"

"$python" "$here/report.py" "$raw" \
  "N=$N ROUNDS=$ROUNDS RUNS=$RUNS W=$W PY_N=$PY_N PY_RUNS=$PY_RUNS make bench" \
  > "$here/RESULTS.md"
echo "wrote $here/RESULTS.md" >&2
