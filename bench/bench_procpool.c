/*
 * bench_procpool - the process pool (issue 9) against the C sequential
 * loop and the thread pool, on the seeds' workload: the sum of the prime
 * factors of every n in 1..39999 (the concurrent.futures notebook), as a
 * map with no chunksize, with chunksize 1000, and sequentially; the
 * submit/result round trip to an idle worker; fib(35) x 20 on 1 and on
 * WORKERS workers (the speedup); and the recovery from a killed worker:
 * from the submit of a task whose worker dies (SIGKILL) to the result of
 * the next task, which a fresh worker runs. RESULT lines for run.sh.
 *
 *   bench_procpool RUNS WORKERS ROUNDS
 */
#include <cf/cfutures.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../apps/seed_work.h"

CF_TASK(factors_sum) {
  result->u.i = seed_sum_of_factors((int64_t)(intptr_t)arg);
  return 0;
}

CF_TASK(fib) {
  result->u.i = seed_fib((long)(intptr_t)arg);
  return 0;
}

CF_TASK(crash) {
  raise(SIGKILL); /* the OOM killer's way: no handler, no message */
  return 0;
}

CF_TASK(nothing) {
  result->u.i = 1;
  return 0;
}

enum { N = 40000 };
static const int64_t WANT = 139614694; /* cpu_bound's check */

static double map_once(cf_executor *ex, int64_t chunksize) {
  cf_range_iter it = cf_range_iter_init(1, N, 1);
  cf_map_opts o = {.chunksize = chunksize};
  cf_map *m;
  int64_t t0 = cf_now_ns();
  if (cf_executor_map(ex, factors_sum, cf_range_iter_next, &it, &o, &m) != 0)
    return -1;
  cf_value v;
  int64_t sum = 0;
  while (cf_map_next(m, &v) == 1)
    sum += v.u.i;
  cf_map_free(m);
  double s = (double)(cf_now_ns() - t0) / 1e9;
  if (sum != WANT) {
    fprintf(stderr, "bench_procpool: wrong sum %lld\n", (long long)sum);
    exit(1);
  }
  return s;
}

/* executor.map(fib, [35] * count), checked; seconds. */
static double map_fib(cf_executor *ex, int count) {
  void *items[64];
  for (int i = 0; i < count; i++)
    items[i] = (void *)(intptr_t)35;
  cf_array_iter it = {items, (size_t)count, 0};
  cf_map *m;
  int64_t t0 = cf_now_ns();
  if (cf_executor_map(ex, fib, cf_array_iter_next, &it, NULL, &m) != 0)
    exit(1);
  cf_value v;
  int64_t sum = 0;
  while (cf_map_next(m, &v) == 1)
    sum += v.u.i;
  cf_map_free(m);
  if (sum != (int64_t)count * 9227465) {
    fprintf(stderr, "bench_procpool: wrong fib sum %lld\n", (long long)sum);
    exit(1);
  }
  return (double)(cf_now_ns() - t0) / 1e9;
}

/* The machine's own ceiling for the fib speedup: the same twenty calls on
 * plain threads, no library (a shared or throttled host gives less than
 * the CPU count). */
typedef struct fib_share {
  int count;
  int64_t sum;
} fib_share;

static void *fib_thread(void *arg) {
  fib_share *s = arg;
  volatile long n = 35;
  for (int i = 0; i < s->count; i++)
    s->sum += seed_fib(n);
  return NULL;
}

static double plain_threads_fib(int threads) {
  pthread_t t[64];
  fib_share sh[64];
  int64_t t0 = cf_now_ns();
  for (int i = 0; i < threads; i++) {
    sh[i] = (fib_share){20 / threads + (i < 20 % threads), 0};
    if (pthread_create(&t[i], NULL, fib_thread, &sh[i]) != 0)
      exit(1);
  }
  int64_t sum = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    sum += sh[i].sum;
  }
  if (sum != 20 * 9227465)
    exit(1);
  return (double)(cf_now_ns() - t0) / 1e9;
}

/* Submits the named task (no argument) and waits; its code must be want. */
static void roundtrip(cf_executor *ex, const char *name, int want) {
  cf_future *f;
  if (cf_executor_submit_bytes(ex, name, NULL, 0, &f) != 0)
    exit(1);
  int rc = cf_future_result(f, CF_FOREVER, NULL);
  cf_future_unref(f);
  if (rc != want) {
    fprintf(stderr, "bench_procpool: %s returned %s\n", name, cf_err_name(rc));
    exit(1);
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void report(const char *impl, const char *bench, int workers,
                   const char *unit, double *runs, int n, double scale) {
  double sorted[64];
  memcpy(sorted, runs, (size_t)n * sizeof *runs);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_d);
  printf("RESULT impl=%s bench=%s n=%d workers=%d unit=%s median=%.4f runs=",
         impl, bench, N - 1, workers, unit, sorted[n / 2] * scale);
  for (int i = 0; i < n; i++)
    printf("%s%.4f", i ? "," : "", runs[i] * scale);
  printf("\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv);
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  int workers = argc > 2 ? atoi(argv[2]) : 2;
  int rounds = argc > 3 ? atoi(argv[3]) : 2000;
  if (runs < 1 || runs > 64 || workers < 1 || workers > 32 || rounds < 1)
    return 2; /* the fixed arrays below: 64 runs, 64 fib items, 64 threads */
  double t[64];
  for (int r = 0; r < runs; r++) {
    int64_t t0 = cf_now_ns(), sum = 0;
    for (int64_t n = 1; n < N; n++)
      sum += seed_sum_of_factors(n);
    t[r] = (double)(cf_now_ns() - t0) / 1e9;
    if (sum != WANT)
      return 1;
  }
  report("c_sequential", "pp_factors", 1, "s", t, runs, 1);
  cf_executor *pp, *tp;
  if (cf_process_pool_new(&(cf_process_pool_opts){.max_workers = workers}, &pp) ||
      cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers = workers}, &tp))
    return 1;
  map_once(pp, 0); /* the workers start */
  for (int r = 0; r < runs; r++)
    t[r] = map_once(pp, 0);
  report("cfutures_process", "pp_factors", workers, "s", t, runs, 1);
  for (int r = 0; r < runs; r++)
    t[r] = map_once(pp, 1000);
  report("cfutures_process_chunked", "pp_factors", workers, "s", t, runs, 1);
  for (int r = 0; r < runs; r++)
    t[r] = map_once(tp, 0);
  report("cfutures_thread", "pp_factors", workers, "s", t, runs, 1);
  /* Round trip: one task at a time to an idle worker. */
  for (int r = 0; r < runs; r++) {
    int64_t t0 = cf_now_ns();
    for (int i = 0; i < rounds; i++) {
      cf_future *f;
      if (cf_executor_submit_bytes(pp, "nothing", NULL, 0, &f) != 0 ||
          cf_future_wait(f, CF_FOREVER) != 0)
        return 1;
      cf_future_unref(f);
    }
    t[r] = (double)(cf_now_ns() - t0) / 1e9 / rounds;
  }
  report("cfutures_process", "pp_roundtrip", 1, "us", t, runs, 1e6);
  cf_executor_free(pp);
  cf_executor_free(tp);
  /* fib(35) x 20 on one worker, then on all (warm pools: the workers'
   * start is the round trip's business, not this one's). */
  int counts[2] = {1, workers};
  const char *names[2] = {"cfutures_process_1", "cfutures_process"};
  int fib_runs = runs < 5 ? runs : 5;
  for (int k = 0; k < 2; k++) {
    if (cf_process_pool_new(&(cf_process_pool_opts){.max_workers = counts[k]},
                            &pp))
      return 1;
    map_fib(pp, 2 * counts[k]); /* start the workers */
    for (int r = 0; r < fib_runs; r++)
      t[r] = map_fib(pp, 20);
    report(names[k], "pp_fib", counts[k], "s", t, fib_runs, 1);
    cf_executor_free(pp);
  }
  for (int k = 0; k < 2; k++) {
    for (int r = 0; r < fib_runs; r++)
      t[r] = plain_threads_fib(counts[k]);
    report(k == 0 ? "c_threads_1" : "c_threads", "pp_fib", counts[k], "s", t,
           fib_runs, 1);
  }
  /* Recovery: one worker; its task kills it; the next task waits for a
   * new worker (exec of this program, its start, its first task). */
  if (cf_process_pool_new(&(cf_process_pool_opts){.max_workers = 1}, &pp))
    return 1;
  roundtrip(pp, "nothing", 0); /* the first worker is up */
  for (int r = 0; r < runs; r++) {
    int64_t t0 = cf_now_ns();
    roundtrip(pp, "crash", CF_EWORKER);
    roundtrip(pp, "nothing", 0);
    t[r] = (double)(cf_now_ns() - t0) / 1e9;
  }
  report("cfutures_process", "pp_recovery", 1, "ms", t, runs, 1e3);
  cf_executor_free(pp);
  return 0;
}
