/*
 * cpu_asyncio - the seed's lesson (Real Python's cpu_asyncio.py) that
 * coroutines do not speed up CPU-bound work: fib(35) twenty times,
 * sequentially, then as twenty tasks on one loop gathered with
 * return-errors, as the seed does. Both times are printed, and the
 * ratio: one thread runs the same work either way, plus the tasks'
 * switches (here a few, at each task's start and end; in Python one at
 * every await, which is why its version takes twice as long).
 *
 * Usage: cpu_asyncio [N] [COUNT]   (default fib(35), 20 times)
 * Exits 1 if a result is wrong.
 */
#include <cf/cfutures.h>
#include <stdio.h>
#include <stdlib.h>

#include "seed_work.h"
#include "args.h"


static int fib_task(void *arg, cf_value *result) {
  result->u.i = seed_fib((long)(intptr_t)arg);
  return 0;
}

typedef struct job {
  long n, count;
  long expect;
  int wrong;
} job;

static int async_main(void *arg, cf_value *result) {
  (void)result;
  job *j = arg;
  cf_future **tasks = calloc((size_t)j->count, sizeof *tasks);
  if (tasks == NULL)
    return CF_ENOMEM;
  for (long i = 0; i < j->count; i++) {
    int rc = cf_loop_spawn(cf_loop_current(), fib_task, (void *)(intptr_t)j->n,
                           &tasks[i]);
    if (rc != 0)
      return cf_raise(rc, "spawning task %ld: %s", i, cf_strerror(rc));
  }
  int rc = cf_gather(tasks, (size_t)j->count, CF_GATHER_RETURN_ERRORS,
                     CF_FOREVER);
  for (long i = 0; i < j->count; i++) {
    const cf_value *v;
    if (cf_future_result(tasks[i], 0, &v) != 0 || v->u.i != j->expect)
      j->wrong++;
    cf_future_unref(tasks[i]);
  }
  free(tasks);
  return rc;
}

int main(int argc, char **argv) {
  job j = {.n = 35, .count = 20};
  if ((argc > 1 && !arg_long(argv[1], 0, 60, &j.n)) ||
      (argc > 2 && !arg_long(argv[2], 1, 1000000, &j.count)) || argc > 3) {
    fprintf(stderr, "usage: cpu_asyncio [N (0-60)] [COUNT (>= 1)]\n");
    return 2;
  }
  j.expect = seed_fib(j.n);

  printf("fib(%ld) x %ld, sequentially\n", j.n, j.count);
  int64_t t0 = cf_now_ns();
  for (long i = 0; i < j.count; i++)
    if (seed_fib(j.n) != j.expect)
      j.wrong++;
  double seq = (double)(cf_now_ns() - t0) / 1e9;
  printf("Execution time: %.2fs\n", seq);

  printf("fib(%ld) x %ld, as tasks on one loop (asyncio.gather)\n", j.n,
         j.count);
  t0 = cf_now_ns();
  cf_future *f;
  int rc = cf_loop_run_main(async_main, &j, NULL, &f);
  double loop = (double)(cf_now_ns() - t0) / 1e9;
  if (rc != 0) {
    fprintf(stderr, "cpu_asyncio: %s\n", cf_future_get_error(f).message);
    cf_future_unref(f);
    return 1;
  }
  cf_future_unref(f);
  printf("Execution time: %.2fs\n", loop);
  printf("on the loop / sequential: %.2fx (one thread either way: "
         "coroutines overlap waits, not computation)\n",
         loop / seq);
  if (j.wrong != 0) {
    fprintf(stderr, "cpu_asyncio: %d wrong results\n", j.wrong);
    return 1;
  }
  return 0;
}
