/*
 * probe_c2c.c - the host's core-to-core latency: two threads hand one
 * cache line back and forth; prints the median one-way hand-off in ns as
 * a RESULT line (impl=host bench=c2c). bench/run.sh runs it at the start
 * and at the end of a run: on this VM it is bimodal (about 28 ns or about
 * 170 ns, bench/NOTES.md section 19), and every figure that hands work
 * between cores (throughput, maps, round trips) moves with it.
 *
 *   probe_c2c [ROUNDS] [RUNS] [WHEN]   (200000 round trips, 5 runs)
 *
 * WHEN (one word, such as "start") goes into the RESULT line as when=. 
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

static _Alignas(64) _Atomic long line;
static long rounds;

static void *echo(void *arg) {
  (void)arg;
  for (long i = 0; i < rounds; i++) {
    while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1)
      ;
    atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
  }
  return NULL;
}

int main(int argc, char **argv) {
  rounds = argc > 1 ? atol(argv[1]) : 200000;
  int runs = argc > 2 ? atoi(argv[2]) : 5;
  const char *when = argc > 3 ? argv[3] : "now";
  if (rounds < 1 || runs < 1 || runs > 64) {
    fprintf(stderr, "usage: probe_c2c [ROUNDS] [RUNS 1-64]\n");
    return 2;
  }
  double v[64];
  for (int r = 0; r < runs; r++) {
    atomic_store(&line, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, echo, NULL) != 0)
      return 1;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < rounds; i++) {
      atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
      while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2)
        ;
    }
    v[r] = (double)(bench_now_ns() - t0) / (double)rounds / 2.0;
    pthread_join(t, NULL);
  }
  /* The label rides in impl: the report reads "impl=host when=..." as
   * two fields. */
  char impl[96];
  snprintf(impl, sizeof impl, "host when=%s", when);
  bench_report(impl, "c2c", rounds, 2, "ns/handoff", v, runs);
  return 0;
}
