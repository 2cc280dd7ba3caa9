/*
 * bench.h - shared by the C benchmarks: timing, medians, one output line
 * per measurement:
 *
 *   RESULT impl=<name> bench=<throughput|latency|map|map_chunked> n=<items>
 *          workers=<w> median=<value> unit=<unit> runs=<v1,v2,...>
 *
 * bench/run.sh collects these lines from every program into RESULTS.md.
 */
#ifndef CF_BENCH_H
#define CF_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Prints the RESULT line for `runs` samples (sorted in place). */
static inline void bench_report(const char *impl, const char *bench, long n,
                                int workers, const char *unit, double *v,
                                int runs) {
  double sorted[64];
  memcpy(sorted, v, sizeof(double) * (size_t)runs);
  qsort(sorted, (size_t)runs, sizeof(double), bench_cmp_double);
  double median = runs % 2 ? sorted[runs / 2]
                           : (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2;
  printf("RESULT impl=%s bench=%s n=%ld workers=%d median=%.3f unit=%s runs=",
         impl, bench, n, workers, median, unit);
  for (int i = 0; i < runs; i++)
    printf("%s%.3f", i ? "," : "", v[i]);
  printf("\n");
  fflush(stdout);
}

/* Command line: [N_THROUGHPUT] [N_LATENCY] [RUNS] [WORKERS] */
typedef struct bench_args {
  long n_tasks, n_rounds;
  int runs, workers;
} bench_args;

static inline bench_args bench_parse(int argc, char **argv) {
  bench_args a = {1000000, 20000, 5, 2};
  if (argc > 1)
    a.n_tasks = atol(argv[1]);
  if (argc > 2)
    a.n_rounds = atol(argv[2]);
  if (argc > 3)
    a.runs = atoi(argv[3]);
  if (argc > 4)
    a.workers = atoi(argv[4]);
  if (a.runs < 1)
    a.runs = 1;
  if (a.runs > 64)
    a.runs = 64;
  if (a.workers < 1)
    a.workers = 1;
  return a;
}

/* The map benchmarks of the libraries without a map: what their users
 * write by hand. Item i maps to i * i; a task computes the items
 * [first, first + chunk) into a results array; the consumer then reads
 * the results in input order (as a map's consumer does). */
typedef struct bench_map {
  int64_t *results;
  long n, chunk;
} bench_map;

static inline long bench_map_tasks(const bench_map *m) {
  return (m->n + m->chunk - 1) / m->chunk;
}

static inline void bench_map_run(const bench_map *m, long first) {
  long end = first + m->chunk < m->n ? first + m->chunk : m->n;
  for (long i = first; i < end; i++)
    m->results[i] = (int64_t)i * i;
}

/* Reads the results in order; exits if any is wrong. */
static inline void bench_map_consume(const bench_map *m) {
  int64_t sum = 0, want = 0;
  for (long i = 0; i < m->n; i++) {
    sum += m->results[i];
    want += (int64_t)i * i;
  }
  if (sum != want) {
    fprintf(stderr, "map: wrong results\n");
    exit(1);
  }
}

/* Measures a hand-written map with one task per item, then with 1000
 * items per task, and reports both. run_once(m, ctx) sets its pool up,
 * then times submitting bench_map_tasks(m) tasks (task k computes from
 * item k * m->chunk), waiting for them and bench_map_consume(m), tears
 * the pool down and returns the timed nanoseconds. */
static inline void bench_map_measure(const char *impl, bench_args a,
                                     int64_t (*run_once)(bench_map *m,
                                                         void *ctx),
                                     void *ctx, bench_map *m) {
  static const long chunks[2] = {1, 1000};
  static const char *const names[2] = {"map", "map_chunked"};
  double v[64];
  m->n = a.n_tasks;
  m->results = malloc(sizeof(int64_t) * (size_t)a.n_tasks);
  if (m->results == NULL)
    exit(1);
  for (int k = 0; k < 2; k++) {
    m->chunk = chunks[k];
    for (int r = 0; r < a.runs; r++)
      v[r] = (double)run_once(m, ctx) / (double)a.n_tasks;
    bench_report(impl, names[k], a.n_tasks, a.workers, "ns/item", v, a.runs);
  }
  free(m->results);
  m->results = NULL;
}

/* The seeds' sum of prime factors (the concurrent.futures notebook), as
 * apps/cpu_bound.c has it: trial division by 2 and the odd numbers up to
 * sqrt(n); what is left over is a factor too. Without libm: the integer
 * square root by Newton's method. */
static inline int64_t bench_isqrt(int64_t n) {
  if (n < 2)
    return n;
  int64_t x = n, y = (x + 1) / 2;
  while (y < x) {
    x = y;
    y = (x + n / x) / 2;
  }
  return x;
}

static inline int64_t bench_sum_of_factors(int64_t n) {
  int64_t sum = 0, left = n, limit = bench_isqrt(n);
  for (int64_t i = 2; i <= limit; i = i == 2 ? 3 : i + 2) {
    while (left % i == 0) {
      sum += i;
      left /= i;
      if (left == 1)
        return sum;
    }
  }
  return sum + left;
}

/* The seeds' small-factors workload: range(1, 40000), sum 139614694. */
#define BENCH_FACTORS_N 40000
#define BENCH_FACTORS_SUM INT64_C(139614694)
#define BENCH_FACTORS_RUNS 21

#endif
