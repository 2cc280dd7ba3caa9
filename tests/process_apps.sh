#!/bin/sh
# Runs the seeds' process-pool programs and checks what they print besides
# their exit status (each exits 1 on a wrong result): the notebook's
# totals (factors_pool), the book's four gcds on every executor (gcd), the
# fib sums on threads and processes (cpu_processes), and both crash modes
# (fail_sometimes).
# Usage: process_apps.sh APPS_DIR
set -eu
d=$1
fail() { echo "$*" >&2; exit 1; }

out=$("$d/factors_pool") || fail "factors_pool failed: $out"
[ "$(echo "$out" | grep -c '^568206055343329$')" = 3 ] ||
  fail "factors_pool: the few large numbers: $out"
[ "$(echo "$out" | grep -c '^139614694$')" = 4 ] ||
  fail "factors_pool: range(1, 40000): $out"
echo "$out" | grep -q '^factors(123456789) = (3, 3, 3607, 3803)$' ||
  fail "factors_pool: factors(123456789): $out"
[ "$(echo "$out" | grep -Ec '^Elapsed time: [0-9.e+-]+ seconds\.$')" = 7 ] ||
  fail "factors_pool: timings: $out"

out=$("$d/gcd") || fail "gcd failed: $out"
[ "$(echo "$out" | grep -Ec '\[1, 1, 5, 1\]  Took [0-9]+\.[0-9]{3} seconds$')" = 3 ] ||
  fail "gcd: $out"

out=$("$d/cpu_processes" --quick) || fail "cpu_processes failed: $out"
[ "$(echo "$out" | grep -Ec 'Execution time: [0-9]+\.[0-9]{2}s$')" = 3 ] ||
  fail "cpu_processes: $out"

out=$("$d/fail_sometimes") || fail "fail_sometimes failed: $out"
echo "$out" | grep -q '^  8 returned, 2 failed' || fail "fail_sometimes: $out"
echo "$out" | grep -q 'fail_sometimes(5): CF_EWORKER: .*exited with status 1' ||
  fail "fail_sometimes: the default mode: $out"
echo "$out" | grep -q '^  0 returned, 10 failed' || fail "fail_sometimes: $out"
echo "$out" | grep -q '^  a later submit: CF_EBROKEN$' ||
  fail "fail_sometimes: the broken mode: $out"
echo ok
