/*
 * probe_map.c - one cfutures map configuration, many runs: for A/B
 * comparisons of map changes (bench/NOTES.md section 9), not part of
 * RESULTS.md.
 *
 *   probe_map [ITEMS] [CHUNKSIZE] [RUNS] [WORKERS] [PREFETCH] [RUNNER]
 *
 * Maps item -> item * item over range(ITEMS) (default 1000000, chunksize
 * 1000 (0: adaptive), 21 runs, 2 workers, default look-ahead), checks the sum,
 * and prints the median, minimum and maximum ns per item. RUNNER 1 runs
 * the chunks through a CF_MAP_CHUNK_FN runner (the item function
 * inlined), 0 (the default) calls it per item.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "cf/cfutures.h"

static int square(void *arg, cf_value *result) {
  int64_t i = (int64_t)(intptr_t)arg;
  result->u.i = i * i;
  return 0;
}
CF_MAP_CHUNK_FN(square_chunks, square)

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  long chunk = argc > 2 ? atol(argv[2]) : 1000;
  int runs = argc > 3 ? atoi(argv[3]) : 21;
  int workers = argc > 4 ? atoi(argv[4]) : 2;
  long prefetch = argc > 5 ? atol(argv[5]) : 0;
  int runner = argc > 6 ? atoi(argv[6]) : 0;
  if (n < 1 || chunk < 0 || runs < 1 || runs > 64 || workers < 1 ||
      prefetch < 0) {
    fprintf(stderr, "usage: probe_map [ITEMS] [CHUNKSIZE] [RUNS 1-64] "
                    "[WORKERS] [PREFETCH] [RUNNER 0/1]\n");
    return 2;
  }
  int64_t want = 0;
  for (long i = 0; i < n; i++)
    want += (int64_t)i * i;
  double v[64];
  for (int r = 0; r < runs; r++) {
    cf_thread_pool_opts po = {.max_workers = workers};
    cf_executor *ex;
    if (cf_thread_pool_new(&po, &ex) != 0)
      return 1;
    cf_range_iter items = cf_range_iter_init(0, n, 1);
    cf_map_opts o = {.chunksize = chunk,
                     .prefetch = prefetch,
                     .chunk_fn = runner ? square_chunks : NULL};
    cf_map *m;
    int64_t t0 = bench_now_ns();
    if (cf_executor_map(ex, square, cf_range_iter_next, &items, &o, &m) != 0)
      return 1;
    cf_value val;
    int64_t sum = 0;
    int rc;
    if (getenv("SPAN")) {
      cf__map_cursor *c = (cf__map_cursor *)(void *)m;
      for (;;) {
        const cf_word *p = c->next, *e = c->end;
        for (; p < e; p++) sum += p->i;
        c->next = e;
        if ((rc = cf_map_next(m, &val)) != 1) break;
        sum += val.u.i;
      }
    } else
    while ((rc = cf_map_next(m, &val)) == 1)
      sum += val.u.i;
    v[r] = (double)(bench_now_ns() - t0) / (double)n;
    cf_map_free(m);
    cf_executor_free(ex);
    if (rc != 0 || sum != want) {
      fprintf(stderr, "probe_map: wrong result (rc %d)\n", rc);
      return 1;
    }
  }
  qsort(v, (size_t)runs, sizeof v[0], bench_cmp_double);
  printf("map items=%ld chunksize=%ld workers=%d runs=%d runner=%d: median "
         "%.2f ns/item (min %.2f, max %.2f)\n",
         n, chunk, workers, runs, runner, v[runs / 2], v[0], v[runs - 1]);
  return 0;
}
