/*
 * cpu_bound - the seeds' CPU-bound workloads, sequentially and on a
 * cfutures thread pool, with the time of each and the speedup:
 *
 *   - fib(35) twenty times (Real Python's cpu_threads.py / cpu_processes.py);
 *   - the sum of the prime factors of six large numbers, = 568206055343329,
 *     and of every number in range(1, 40000), = 139614694, with map() and
 *     with map(chunksize=1000) (the concurrent.futures notebook).
 *
 * In Python, threads cannot speed these up (the GIL); here they can: the
 * speedup is bounded by the number of CPUs. Exits 1 if a result is wrong.
 *
 * Each time printed is the median of three runs (a single run of a few
 * milliseconds is mostly noise on a shared machine); every run's result
 * is checked.
 *
 * Usage: cpu_bound [--quick] [WORKERS]   (WORKERS default: Python's
 * ThreadPoolExecutor default, min(32, cpus + 4); --quick uses fib(30)
 * instead of fib(35), for the test suite)
 */
#include <cf/cfutures.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "map_sum.h"
#include "args.h"
#include "seed_work.h"

static int fib_task(void *arg, cf_value *result) {
  result->u.i = seed_fib((long)(intptr_t)arg);
  return 0;
}

static int factors_task(void *arg, cf_value *result) {
  result->u.i = seed_sum_of_factors((int64_t)(intptr_t)arg);
  return 0;
}

static double seconds(void) { return (double)cf_now_ns() / 1e9; }

static const int64_t large_numbers[] = {112272535095293, 112582705942171,
                                        112272535095293, 115280095190773,
                                        115797848077099, 1099726899285419};
#define NLARGE 6

static int failures;

static void check(const char *what, int64_t got, int64_t want) {
  if (got != want) {
    printf("  WRONG: %s = %lld, expected %lld\n", what, (long long)got,
           (long long)want);
    failures++;
  }
}

static void report(const char *what, double seq, double par) {
  printf("%-36s sequential %7.3fs   thread pool %7.3fs   speedup %5.2fx\n",
         what, seq, par, par > 0 ? seq / par : 0.0);
}

/* One workload: computes its answer sequentially or on the pool. */
typedef struct job {
  const char *what;
  int64_t (*seq)(const struct job *j);
  int64_t (*par)(const struct job *j, cf_executor *ex, int *err);
  long n;           /* fib's argument */
  int64_t chunksize; /* map's chunksize (0: one task per item) */
  int64_t want;
  bool show_sum; /* print the pool's answer after the timing line */
} job;

#define RUNS 3

static int64_t fib_seq(const job *j) {
  int64_t sum = 0;
  volatile long n = j->n; /* twenty real calls, not one reused */
  for (int i = 0; i < 20; i++)
    sum += seed_fib(n);
  return sum;
}

static int64_t fib_par(const job *j, cf_executor *ex, int *err) {
  void *args[20];
  for (int i = 0; i < 20; i++)
    args[i] = (void *)(intptr_t)j->n;
  cf_array_iter items = {args, 20, 0};
  return app_map_sum(ex, fib_task, cf_array_iter_next, &items, 0, err);
}

static int64_t large_seq(const job *j) {
  (void)j;
  int64_t sum = 0;
  for (int i = 0; i < NLARGE; i++)
    sum += seed_sum_of_factors(large_numbers[i]);
  return sum;
}

static int64_t large_par(const job *j, cf_executor *ex, int *err) {
  void *args[NLARGE];
  for (int i = 0; i < NLARGE; i++)
    args[i] = (void *)(intptr_t)large_numbers[i];
  cf_array_iter items = {args, NLARGE, 0};
  return app_map_sum(ex, factors_task, cf_array_iter_next, &items, j->chunksize,
                     err);
}

static int64_t small_seq(const job *j) {
  (void)j;
  int64_t sum = 0;
  for (int64_t n = 1; n < 40000; n++)
    sum += seed_sum_of_factors(n);
  return sum;
}

static int64_t small_par(const job *j, cf_executor *ex, int *err) {
  cf_range_iter items = cf_range_iter_init(1, 40000, 1);
  return app_map_sum(ex, factors_task, cf_range_iter_next, &items, j->chunksize,
                     err);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* Times the job RUNS times each way, checks every answer, prints the
 * medians (and the pool's answer if the job shows it). */
static void run_job(const job *j, cf_executor *ex, int *err) {
  double seq[RUNS], par[RUNS];
  int64_t answer = 0;
  for (int r = 0; r < RUNS; r++) {
    double t0 = seconds();
    int64_t got = j->seq(j);
    seq[r] = seconds() - t0;
    check(j->what, got, j->want);
    t0 = seconds();
    answer = j->par(j, ex, err);
    par[r] = seconds() - t0;
    check(j->what, answer, j->want);
  }
  report(j->what, median(seq, RUNS), median(par, RUNS));
  if (j->show_sum)
    printf("%-36s = %lld\n", "  sum of their factors", (long long)answer);
}

int main(int argc, char **argv) {
  int fib_n = 35;
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
    fib_n = 30;
    argc--;
    argv++;
  }
  long workers = cf_thread_pool_default_workers();
  if ((argc > 1 && !arg_long(argv[1], 1, 4096, &workers)) || argc > 2) {
    fprintf(stderr, "usage: cpu_bound [--quick] [WORKERS >= 1]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  printf("CPU-bound workloads: sequential vs a cfutures thread pool of %ld "
         "workers on %ld CPUs (median of %d runs each)\n\n",
         workers, cpus, RUNS);
  cf_thread_pool_opts opts = {.max_workers = (int)workers};
  cf_executor *ex;
  int rc = cf_thread_pool_new(&opts, &ex);
  if (rc != 0) {
    fprintf(stderr, "cannot create the pool: %s\n", cf_strerror(rc));
    return 1;
  }
  int err = 0;
  char fib_what[32];
  snprintf(fib_what, sizeof fib_what, "fib(%d) x 20", fib_n);
  const job jobs[] = {
      {fib_what, fib_seq, fib_par, fib_n, 0,
       20 * (fib_n == 35 ? 9227465 : 832040), false},
      {"factors of 6 large numbers", large_seq, large_par, 0, 0,
       568206055343329, true},
      {"factors of 1..39999, map()", small_seq, small_par, 0, 0, 139614694,
       false},
      {"factors of 1..39999, chunksize=1000", small_seq, small_par, 0, 1000,
       139614694, true},
  };
  for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++)
    run_job(&jobs[i], ex, &err);
  cf_executor_free(ex);
  if (err != 0) {
    printf("a map failed: %s\n", cf_strerror(err));
    return 1;
  }
  if (failures != 0)
    return 1;
  printf("\nAll results match the seeds (568206055343329, 139614694).\n");
  return 0;
}
