/*
 * bench_cf - cfutures' thread pool:
 *   throughput    N no-op tasks submitted (futures kept), then all waited
 *   latency       submit one task and wait for its result, N times
 *   map           cf_executor_map of N tiny items, chunksize 1
 *   map_chunked   the same with chunksize 1000
 *   map_adaptive  the same with no chunksize given (the map chooses)
 *                 (map_chunked and map_adaptive again as cfutures_runner:
 *                 with square's chunk runner, CF_MAP_CHUNK_FN)
 *   factors       the seeds' sum of the prime factors of 1..39999: a C
 *                 loop, and the map with no chunksize and with 1000
 */
#include <cf/cfutures.h>

#include "bench.h"

static int nop(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return 0;
}

static int square(void *arg, cf_value *result) {
  intptr_t x = (intptr_t)arg;
  result->u.i = x * x;
  return 0;
}

CF_MAP_CHUNK_FN(square_chunks, square)

static int factors(void *arg, cf_value *result) {
  result->u.i = bench_sum_of_factors((int64_t)(intptr_t)arg);
  return 0;
}

static cf_executor *pool(int workers) {
  cf_thread_pool_opts o = {.max_workers = workers};
  cf_executor *ex;
  if (cf_thread_pool_new(&o, &ex) != 0)
    exit(1);
  return ex;
}

static void must(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", what, cf_strerror(rc));
    exit(1);
  }
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  double v[64];
  cf_future **fs = malloc(sizeof(cf_future *) * (size_t)a.n_tasks);

  for (int r = 0; r < a.runs; r++) {
    cf_executor *ex = pool(a.workers);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_tasks; i++)
      must(cf_executor_submit(ex, nop, NULL, &fs[i]), "submit");
    for (long i = 0; i < a.n_tasks; i++) {
      must(cf_future_result(fs[i], CF_FOREVER, NULL), "result");
      cf_future_unref(fs[i]);
    }
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_tasks;
    cf_executor_free(ex);
  }
  bench_report("cfutures", "throughput", a.n_tasks, a.workers, "ns/task", v,
               a.runs);

  for (int r = 0; r < a.runs; r++) {
    cf_executor *ex = pool(a.workers);
    cf_future *f;
    must(cf_executor_submit(ex, nop, NULL, &f), "warm-up");
    must(cf_future_result(f, CF_FOREVER, NULL), "warm-up");
    cf_future_unref(f);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_rounds; i++) {
      must(cf_executor_submit(ex, nop, NULL, &f), "submit");
      must(cf_future_result(f, CF_FOREVER, NULL), "result");
      cf_future_unref(f);
    }
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_rounds / 1000.0;
    cf_executor_free(ex);
  }
  bench_report("cfutures", "latency", a.n_rounds, a.workers, "us/roundtrip", v,
               a.runs);

  /* The last two again with square's chunk runner (CF_MAP_CHUNK_FN). */
  static const int64_t chunks[5] = {1, 1000, 0, 1000, 0};
  static const char *const map_names[5] = {
      "map", "map_chunked", "map_adaptive", "map_chunked", "map_adaptive"};
  for (int k = 0; k < 5; k++) {
    for (int r = 0; r < a.runs; r++) {
      cf_executor *ex = pool(a.workers);
      cf_range_iter items = cf_range_iter_init(0, a.n_tasks, 1);
      cf_map_opts o = {.chunksize = chunks[k],
                       .chunk_fn = k >= 3 ? square_chunks : NULL};
      cf_map *m;
      int64_t t0 = bench_now_ns();
      must(cf_executor_map(ex, square, cf_range_iter_next, &items, &o, &m),
           "map");
      cf_value val;
      int64_t sum = 0;
      int rc;
      while ((rc = cf_map_next(m, &val)) == 1)
        sum += val.u.i;
      v[r] = (double)(bench_now_ns() - t0) / (double)a.n_tasks;
      cf_map_free(m);
      cf_executor_free(ex);
      int64_t want = 0;
      for (long i = 0; i < a.n_tasks; i++)
        want += (int64_t)i * i;
      if (rc != 0 || sum != want) {
        fprintf(stderr, "map: wrong results (rc %d)\n", rc);
        return 1;
      }
    }
    bench_report(k >= 3 ? "cfutures_runner" : "cfutures", map_names[k],
                 a.n_tasks, a.workers, "ns/item", v, a.runs);
  }

  /* The seeds' factors: sequential, then the map on one warm pool (as a
   * program that maps twice would), many short runs. */
  {
    int runs = BENCH_FACTORS_RUNS;
    double seq[64], par[2][64];
    cf_executor *ex = pool(a.workers);
    for (int r = 0; r < runs; r++) {
      int64_t t0 = bench_now_ns(), sum = 0;
      for (int64_t n = 1; n < BENCH_FACTORS_N; n++)
        sum += bench_sum_of_factors(n);
      seq[r] = (double)(bench_now_ns() - t0) / 1e6;
      if (sum != BENCH_FACTORS_SUM)
        return 1;
      for (int k = 0; k < 2; k++) {
        cf_range_iter items = cf_range_iter_init(1, BENCH_FACTORS_N, 1);
        cf_map_opts o = {.chunksize = k == 0 ? 0 : 1000};
        cf_map *m;
        t0 = bench_now_ns();
        must(cf_executor_map(ex, factors, cf_range_iter_next, &items, &o, &m),
             "map");
        cf_value val;
        sum = 0;
        while (cf_map_next(m, &val) == 1)
          sum += val.u.i;
        par[k][r] = (double)(bench_now_ns() - t0) / 1e6;
        cf_map_free(m);
        if (sum != BENCH_FACTORS_SUM)
          return 1;
      }
    }
    cf_executor_free(ex);
    bench_report("c_sequential", "factors", BENCH_FACTORS_N - 1, 1, "ms", seq,
                 runs);
    bench_report("cfutures", "factors", BENCH_FACTORS_N - 1, a.workers, "ms",
                 par[0], runs);
    bench_report("cfutures_chunked", "factors", BENCH_FACTORS_N - 1, a.workers,
                 "ms", par[1], runs);
  }
  free(fs);
  return 0;
}
