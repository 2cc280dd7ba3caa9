/*
 * cpu_processes - Real Python's CPU-bound trio on cfutures: fib(35)
 * twenty times with no concurrency (cpu_no_concurrent.py), on a thread
 * pool of five (cpu_threads.py) and on a process pool with a worker per
 * CPU (cpu_processes.py), each with the seeds' "Execution time: 23.67s"
 * line. The thread and process versions differ in one line, as in the
 * article; unlike Python, the threads are as fast as the processes here
 * (there is no GIL to share).
 *
 *   cpu_processes [--quick]   (--quick: fib(30), for the test suite)
 *
 * Exits 1 if a sum of the twenty results is wrong.
 */
#include <cf/cfutures.h>
#include <stdio.h>
#include <string.h>

#include "map_sum.h"
#include "seed_work.h"

/* The number travels as the pointer value of a map item. */
CF_TASK(fib) {
  cf_value_set_i64(result, seed_fib((long)(intptr_t)arg));
  return 0;
}

static double seconds(void) { return (double)cf_now_ns() / 1e9; }

/* executor.map(fib, [n] * 20), summed; -1 if the map failed. */
static int64_t map_fib(cf_executor *ex, long n) {
  void *items[20];
  for (int i = 0; i < 20; i++)
    items[i] = (void *)(intptr_t)n;
  cf_array_iter it = {items, 20, 0};
  int rc = 0;
  int64_t sum = app_map_sum(ex, fib, cf_array_iter_next, &it, 0, &rc);
  if (rc < 0) {
    fprintf(stderr, "cpu_processes: %s\n", cf_strerror(rc));
    return -1;
  }
  return sum;
}

static int report(const char *what, int64_t sum, int64_t want, double t0) {
  printf("%-44s Execution time: %.2fs\n", what, seconds() - t0);
  if (sum != want) {
    printf("  WRONG: the twenty results add up to %lld, not %lld\n",
           (long long)sum, (long long)want);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* in a worker: serves tasks, never returns */
  long n = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 30 : 35;
  if (argc > 2 || (argc == 2 && n != 30)) {
    fprintf(stderr, "usage: cpu_processes [--quick]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int64_t want = 20 * seed_fib(n);
  char what[64];
  int bad = 0;

  snprintf(what, sizeof what, "cpu_no_concurrent: fib(%ld) x 20", n);
  double t0 = seconds();
  int64_t sum = 0;
  volatile long vn = n; /* twenty real calls, not one the compiler reuses */
  for (int i = 0; i < 20; i++)
    sum += seed_fib(vn);
  bad |= report(what, sum, want, t0);

  cf_executor *executor;
  t0 = seconds();
  if (cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers = 5}, &executor) !=
      0)
    return 1;
  sum = map_fib(executor, n);
  cf_executor_free(executor);
  bad |=
      report("cpu_threads: ThreadPoolExecutor(max_workers=5)", sum, want, t0);

  t0 = seconds();
  if (cf_process_pool_new(NULL, &executor) != 0)
    return 1;
  int workers = cf_executor_get_max_workers(executor);
  sum = map_fib(executor, n);
  cf_executor_free(executor);
  snprintf(what, sizeof what, "cpu_processes: ProcessPoolExecutor() (%d)",
           workers);
  bad |= report(what, sum, want, t0);
  return bad;
}
