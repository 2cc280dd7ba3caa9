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
 * Usage: cpu_bound [--quick] [WORKERS]   (WORKERS default: Python's
 * ThreadPoolExecutor default, min(32, cpus + 4); --quick uses fib(30)
 * instead of fib(35), for the test suite)
 */
#include <cf/cfutures.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long fib(long n) { return n < 2 ? n : fib(n - 2) + fib(n - 1); }

static int fib_task(void *arg, cf_value *result) {
  result->u.i = fib((long)(intptr_t)arg);
  return 0;
}

/* sum(factors(n)) with the notebook's algorithm: trial division by 2 and
 * the odd numbers up to sqrt(n); what is left over is a factor too. */
static int64_t sum_of_factors(int64_t n) {
  int64_t sum = 0, left = n;
  int64_t limit = (int64_t)floor(sqrt((double)n));
  while ((limit + 1) * (limit + 1) <= n)
    limit++;
  while (limit * limit > n)
    limit--;
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

static int factors_task(void *arg, cf_value *result) {
  result->u.i = sum_of_factors((int64_t)(intptr_t)arg);
  return 0;
}

static double seconds(void) { return (double)cf_now_ns() / 1e9; }

static const int64_t large_numbers[] = {112272535095293, 112582705942171,
                                        112272535095293, 115280095190773,
                                        115797848077099, 1099726899285419};
#define NLARGE 6

/* Sums the results of a map of fn over items (an array) or a range. */
static int64_t map_sum(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                       void *state, int64_t chunksize, int *err) {
  cf_map_opts o = {.chunksize = chunksize};
  cf_map *m;
  int rc = cf_executor_map(ex, fn, next, state, &o, &m);
  int64_t sum = 0;
  if (rc == 0) {
    cf_value v;
    while ((rc = cf_map_next(m, &v)) == 1)
      sum += v.u.i;
    cf_map_free(m);
  }
  if (rc < 0)
    *err = rc;
  return sum;
}

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

int main(int argc, char **argv) {
  int fib_n = 35;
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
    fib_n = 30;
    argc--;
    argv++;
  }
  int workers = argc > 1 ? atoi(argv[1]) : cf_thread_pool_default_workers();
  if (workers < 1) {
    fprintf(stderr, "usage: cpu_bound [--quick] [WORKERS >= 1]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  printf("CPU-bound workloads: sequential vs a cfutures thread pool of %d "
         "workers on %ld CPUs\n\n",
         workers, cpus);
  cf_thread_pool_opts opts = {.max_workers = workers};
  cf_executor *ex;
  int rc = cf_thread_pool_new(&ex, &opts);
  if (rc != 0) {
    fprintf(stderr, "cannot create the pool: %s\n", cf_strerror(rc));
    return 1;
  }
  int err = 0;

  /* fib(35) x 20 */
  const int64_t fib_value = fib_n == 35 ? 9227465 : 832040;
  double t0 = seconds();
  int64_t seq = 0;
  for (int i = 0; i < 20; i++)
    seq += fib(fib_n);
  double t_seq = seconds() - t0;
  void *fib_args[20];
  for (int i = 0; i < 20; i++)
    fib_args[i] = (void *)(intptr_t)fib_n;
  cf_array_iter fib_items = {fib_args, 20, 0};
  t0 = seconds();
  int64_t par = map_sum(ex, fib_task, cf_array_iter_next, &fib_items, 0, &err);
  double t_par = seconds() - t0;
  char what[32];
  snprintf(what, sizeof what, "fib(%d) x 20", fib_n);
  report(what, t_seq, t_par);
  check("20 * fib(n)", seq, 20 * fib_value);
  check("20 * fib(n) on the pool", par, 20 * fib_value);

  /* Six large numbers. */
  t0 = seconds();
  seq = 0;
  for (int i = 0; i < NLARGE; i++)
    seq += sum_of_factors(large_numbers[i]);
  t_seq = seconds() - t0;
  void *large_args[NLARGE];
  for (int i = 0; i < NLARGE; i++)
    large_args[i] = (void *)(intptr_t)large_numbers[i];
  cf_array_iter large_items = {large_args, NLARGE, 0};
  t0 = seconds();
  par = map_sum(ex, factors_task, cf_array_iter_next, &large_items, 0, &err);
  t_par = seconds() - t0;
  report("factors of 6 large numbers", t_seq, t_par);
  printf("%-36s = %lld\n", "  sum of their factors", (long long)par);
  check("factors of the large numbers", seq, 568206055343329);
  check("factors of the large numbers on the pool", par, 568206055343329);

  /* range(1, 40000), without and with chunksize. */
  t0 = seconds();
  seq = 0;
  for (int64_t n = 1; n < 40000; n++)
    seq += sum_of_factors(n);
  t_seq = seconds() - t0;
  cf_range_iter small = cf_range_iter_init(1, 40000, 1);
  t0 = seconds();
  par = map_sum(ex, factors_task, cf_range_iter_next, &small, 0, &err);
  t_par = seconds() - t0;
  report("factors of 1..39999, map()", t_seq, t_par);
  check("factors of 1..39999", seq, 139614694);
  check("factors of 1..39999 on the pool", par, 139614694);
  small = cf_range_iter_init(1, 40000, 1);
  t0 = seconds();
  par = map_sum(ex, factors_task, cf_range_iter_next, &small, 1000, &err);
  t_par = seconds() - t0;
  report("factors of 1..39999, chunksize=1000", t_seq, t_par);
  printf("%-36s = %lld\n", "  sum of their factors", (long long)par);
  check("factors of 1..39999 with chunks", par, 139614694);

  cf_executor_free(ex);
  if (err != 0) {
    printf("a map failed: %s\n", cf_strerror(err));
    return 1;
  }
  printf("\nAll results match the seeds (568206055343329, 139614694).\n");
  return failures != 0 ? 1 : 0;
}
