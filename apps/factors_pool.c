/*
 * factors_pool - the concurrent.futures notebook's factors workloads, on
 * a process pool and a thread pool, cell by cell:
 *
 *   - submit a conversion and wait for its result (the notebook's
 *     executor.submit(int, "123456789"));
 *   - the sum of all prime factors of six numbers with large prime
 *     factors (568206055343329): sequentially, with the process pool's
 *     map, with the thread pool's map;
 *   - the same for every number in range(1, 40000) (139614694):
 *     sequentially, the process pool's map without and with
 *     chunksize=1000, the thread pool's map.
 *
 * Each result is the tuple of factors, as in the notebook: a task returns
 * the factors as bytes (an array of int64_t) and the caller adds them up.
 * In Python the threads do not help (the GIL) and the unchunked process
 * map over 40k tiny items is 30 times slower than the sequential loop;
 * here both executors use every CPU, and the map chunks by itself.
 *
 *   factors_pool [WORKERS] [--quick]
 *
 * WORKERS: both pools' size (default: the number of CPUs for the process
 * pool, Python's min(32, CPUs + 4) for the thread pool). --quick leaves
 * out the slow six numbers (for the test suite). Exits 1 if a sum is not
 * the notebook's.
 */
#include <cf/cfutures.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seed_work.h"
#include "args.h"

/* factors(n) -> the tuple, as int64_t bytes. The argument is the number
 * itself (a map item: an integer passed as the pointer value). */
CF_TASK(factors) {
  int64_t f[SEED_MAX_FACTORS];
  int k = seed_factors((int64_t)(intptr_t)arg, f);
  return cf_value_set_bytes(result, f, (size_t)k * sizeof f[0]);
}

/* int("123456789"), the notebook's first submit. */
CF_TASK(parse_int) {
  const char *s = cf_arg_get_string(arg);
  char *end;
  if (s == NULL)
    return cf_raise(CF_EINVAL, "not a string");
  long long v = strtoll(s, &end, 10);
  if (end == s || *end != '\0')
    return cf_raise(CF_EINVAL, "invalid literal for int(): '%s'", s);
  cf_value_set_i64(result, v);
  return 0;
}

static const int64_t few_numbers_large_prime_factors[] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419};
enum { NFEW = 6, SMALL_END = 40000 };

static int failures;

static double seconds(void) { return (double)cf_now_ns() / 1e9; }

/* Python's f"{x:.03}" for a float: three significant digits, fixed
 * notation with at least one digit after the point (3.0, 10.8, 0.176),
 * scientific once that would take a fourth digit or below 1e-4
 * (1.23e+02, 1e+02, 1.23e-05). */
static void py_3g(double x, char *out, size_t size) {
  char e[32];
  snprintf(e, sizeof e, "%.2e", x); /* rounded to three digits: its exponent */
  int exp10 = atoi(strchr(e, 'e') + 1);
  if (x != 0 && (exp10 < -4 || exp10 >= 2)) {
    /* %g's scientific form drops the trailing zeros, as Python does. */
    snprintf(out, size, "%.3g", x);
    if (strchr(out, 'e') == NULL) { /* %g stayed fixed: write it out */
      char mant[16];
      snprintf(mant, sizeof mant, "%.2f", x / pow(10, exp10));
      size_t n = strlen(mant);
      while (n > 0 && mant[n - 1] == '0')
        mant[--n] = '\0';
      if (n > 0 && mant[n - 1] == '.')
        mant[--n] = '\0';
      snprintf(out, size, "%se%c%02d", mant, exp10 < 0 ? '-' : '+',
               exp10 < 0 ? -exp10 : exp10);
    }
    return;
  }
  snprintf(out, size, "%.3g", x);
  if (strpbrk(out, ".e") == NULL && strlen(out) + 2 < size)
    strcat(out, ".0");
}

/* The notebook's measure_time: "Elapsed time: 6.47 seconds.". */
static void elapsed(double t0) {
  char t[32];
  py_3g(seconds() - t0, t, sizeof t);
  printf("Elapsed time: %s seconds.\n\n", t);
}

static void check(int64_t got, int64_t want) {
  printf("%lld\n", (long long)got);
  if (got != want) {
    printf("WRONG: expected %lld\n", (long long)want);
    failures++;
  }
}

/* sum(sum(result) for result in executor.map(factors, items, chunksize)) */
static int64_t map_sum(cf_executor *ex, cf_iter_fn next, void *state,
                       int64_t chunksize) {
  cf_map_opts o = {.chunksize = chunksize};
  cf_map *m;
  int rc = cf_executor_map(ex, factors, next, state, &o, &m);
  int64_t sum = 0;
  if (rc == 0) {
    cf_value v;
    while ((rc = cf_map_next(m, &v)) == 1) {
      const int64_t *f = v.u.ptr;
      for (size_t i = 0; i < v.size / sizeof *f; i++)
        sum += f[i];
      cf_value_release(&v);
    }
    if (rc < 0)
      printf("the map failed: %s (%s)\n", cf_map_get_error(m).message,
             cf_err_name(rc));
    cf_map_free(m);
  } else {
    printf("the map did not start: %s\n", cf_strerror(rc));
  }
  if (rc < 0)
    failures++;
  return sum;
}

static int64_t few_on(cf_executor *ex) {
  void *items[NFEW];
  for (int i = 0; i < NFEW; i++)
    items[i] = (void *)(intptr_t)few_numbers_large_prime_factors[i];
  cf_array_iter it = {items, NFEW, 0};
  return map_sum(ex, cf_array_iter_next, &it, 0);
}

static int64_t small_on(cf_executor *ex, int64_t chunksize) {
  cf_range_iter it = cf_range_iter_init(1, SMALL_END, 1);
  return map_sum(ex, cf_range_iter_next, &it, chunksize);
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* in a worker: serves tasks, never returns */
  long workers = 0;
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (!arg_long(argv[i], 1, 4096, &workers)) {
      fprintf(stderr, "usage: factors_pool [WORKERS] [--quick]\n");
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  cf_executor *procs, *threads;
  int rc = cf_process_pool_new(&(cf_process_pool_opts){.max_workers = (int)workers},
                               &procs);
  if (rc == 0)
    rc = cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers = (int)workers},
                            &threads);
  if (rc != 0) {
    fprintf(stderr, "factors_pool: cannot start a pool: %s\n", cf_strerror(rc));
    return 1;
  }
  printf("A process pool of %d workers and a thread pool of %d\n\n",
         cf_executor_get_max_workers(procs),
         cf_executor_get_max_workers(threads));

  printf("## Creating Future objects\n");
  cf_future *f;
  const cf_value *v;
  rc = cf_executor_submit_string(procs, "parse_int", "123456789", &f);
  if (rc == 0 && (rc = cf_future_result(f, CF_FOREVER, &v)) == 0)
    check(v->u.i, 123456789);
  else {
    printf("submit failed: %s\n", cf_strerror(rc));
    failures++;
  }
  cf_future_unref(f);
  int64_t fs[SEED_MAX_FACTORS];
  int k = seed_factors(123456789, fs);
  printf("factors(123456789) = (");
  for (int i = 0; i < k; i++)
    printf("%s%lld", i ? ", " : "", (long long)fs[i]);
  printf(")\n\n");

  double t0;
  if (!quick) {
    printf("## Calculate the sum of all factors of a few numbers\n");
    printf("### Sequentially on a single CPU core\n");
    t0 = seconds();
    int64_t sum = 0;
    for (int i = 0; i < NFEW; i++)
      sum += seed_sum_of_factors(few_numbers_large_prime_factors[i]);
    check(sum, 568206055343329);
    elapsed(t0);
    printf("### ProcessPoolExecutor.map()\n");
    t0 = seconds();
    check(few_on(procs), 568206055343329);
    elapsed(t0);
    printf("### ThreadPoolExecutor.map() (no GIL here: as fast)\n");
    t0 = seconds();
    check(few_on(threads), 568206055343329);
    elapsed(t0);
  }

  printf("## Repeat the experiment with many small numbers, range(1, %d)\n",
         SMALL_END);
  printf("### Sequentially on a single CPU core\n");
  t0 = seconds();
  int64_t sum = 0;
  for (int64_t n = 1; n < SMALL_END; n++)
    sum += seed_sum_of_factors(n);
  check(sum, 139614694);
  elapsed(t0);
  printf("### ProcessPoolExecutor.map() without chunksize (chunks itself)\n");
  t0 = seconds();
  check(small_on(procs, 0), 139614694);
  elapsed(t0);
  printf("### ProcessPoolExecutor.map(chunksize=1000)\n");
  t0 = seconds();
  check(small_on(procs, 1000), 139614694);
  elapsed(t0);
  printf("### ThreadPoolExecutor.map()\n");
  t0 = seconds();
  check(small_on(threads, 0), 139614694);
  elapsed(t0);

  cf_executor_free(threads);
  cf_executor_free(procs);
  return failures != 0;
}
