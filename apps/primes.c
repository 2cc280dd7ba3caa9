/*
 * primes - the seeds' proc_pool.py (the multicore prime checker): 20
 * large numbers checked with is_prime on a process pool, results in the
 * order given by executor.map, each with its own time:
 *
 *   Checking 20 numbers with 2 processes:
 *   9999999999999999   0.000002s
 *   9999999999999917 P  0.469812s
 *   ...
 *   Total time: 3.14s
 *
 *   primes [WORKERS] [--threads] [--quick]
 *
 * WORKERS: the pool's size (default: the number of CPUs, as Python's).
 * --threads runs the same named task on a thread pool instead: the
 * executor is a one-line change. --quick checks 20 smaller numbers (for
 * the test suite). The check runs in worker processes started by exec
 * of this program (cf_process_init, first in main, serves them), and
 * each result crosses back as bytes: {n, prime, elapsed}.
 */
#include <cf/cfutures.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seed_work.h"
#include "args.h"

/* The seeds' primes.NUMBERS. */
static const int64_t NUMBERS[] = {
    2,
    142702110479723,
    299593572317531,
    3333333333333301,
    3333333333333333,
    3333335652092209,
    4444444444444423,
    4444444444444444,
    4444444488888889,
    5555553133149889,
    5555555555555503,
    5555555555555555,
    6666666666666666,
    6666666666666719,
    6666667141414921,
    7777777536340681,
    7777777777777753,
    7777777777777777,
    9999999999999917,
    9999999999999999,
};
/* --quick: primes and composites near 10^12 (a thousandth of the work). */
static const int64_t QUICK[] = {
    2,           999999000001, 999999999989, 999999999999, 1000000000039,
    1000000000037, 1000000000041, 100000000003, 100000000019, 99999999977,
    4294967291,  4294967295,  2147483647,  2147483649,  999999866,
    999999937,   9999999967,  9999999999,  99999999999, 999999999961,
};
enum { N = sizeof NUMBERS / sizeof NUMBERS[0] };

/* PrimeResult(n, flag, elapsed), as bytes. */
typedef struct prime_result {
  int64_t n;
  int64_t prime;
  double elapsed;
} prime_result;

CF_TASK(check) {
  prime_result r;
  memcpy(&r.n, arg, sizeof r.n);
  int64_t t0 = cf_now_ns();
  r.prime = seed_is_prime(r.n);
  r.elapsed = (double)(cf_now_ns() - t0) / 1e9;
  return cf_value_set_bytes(result, &r, sizeof r);
}

static int cmp_desc(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x < y) - (x > y);
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* in a worker: serves tasks, never returns */
  long workers = 0;
  bool threads = false, quick = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0)
      threads = true;
    else if (strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (!arg_long(argv[i], 1, 4096, &workers)) {
      fprintf(stderr, "usage: primes [WORKERS] [--threads] [--quick]\n");
      return 2;
    }
  }
  cf_executor *executor;
  int rc = threads ? cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers =
                                                                  (int)workers},
                                        &executor)
                   : cf_process_pool_new(&(cf_process_pool_opts){.max_workers =
                                                                   (int)workers},
                                         &executor);
  if (rc != 0) {
    fprintf(stderr, "primes: cannot start the pool: %s\n", cf_strerror(rc));
    return 1;
  }
  int actual_workers = cf_executor_get_max_workers(executor);
  printf("Checking %d numbers with %d %s:\n", N, actual_workers,
         threads ? "threads" : "processes");
  fflush(stdout);
  int64_t t0 = cf_now_ns();
  int64_t numbers[N];
  memcpy(numbers, quick ? QUICK : NUMBERS, sizeof numbers);
  qsort(numbers, N, sizeof numbers[0], cmp_desc);
  void *items[N];
  for (int i = 0; i < N; i++)
    items[i] = &numbers[i];
  cf_array_iter it = {items, N, 0};
  /* One number per task, as Python's map without chunksize. */
  cf_map_opts mo = {.chunksize = 1, .item_size = sizeof(int64_t)};
  cf_map *results;
  rc = cf_executor_map(executor, check, cf_array_iter_next, &it, &mo, &results);
  cf_value v;
  int failed = rc != 0;
  while (!failed && (rc = cf_map_next(results, &v)) == 1) {
    prime_result r;
    memcpy(&r, v.u.ptr, sizeof r);
    cf_value_release(&v);
    printf("%16lld %c %9.6fs\n", (long long)r.n, r.prime ? 'P' : ' ',
           r.elapsed);
    fflush(stdout);
  }
  if (rc < 0) {
    fprintf(stderr, "primes: %s (%s)\n", cf_map_get_error(results).message,
            cf_err_name(rc));
    failed = 1;
  }
  cf_map_free(results);
  cf_executor_free(executor);
  printf("Total time: %.2fs\n", (double)(cf_now_ns() - t0) / 1e9);
  return failed;
}
