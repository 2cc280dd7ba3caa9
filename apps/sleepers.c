/*
 * sleepers.c - N tasks sleep concurrently on one loop: prints the wall
 * time and the memory each task costs. Used by the benchmark.
 *
 *   sleepers [-n TASKS] [-s SECONDS] [--own-stacks | --shared-stack]
 *            [--stack-size BYTES]
 *
 * The tasks run on the loop's shared stack unless --own-stacks is given:
 * 100,000 tasks with a stack each need 200,000 memory mappings, beyond
 * Linux's default vm.max_map_count of 65530 (each stack and its guard
 * page are two); --shared-stack is the default, accepted for scripts.
 *
 * Memory per task is the growth of the resident set (VmHWM, the peak)
 * over the process before the loop starts, divided by N: everything a
 * sleeping task holds (its future, its state, its stack pages or its
 * saved stack, timer-heap entries).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf/cfutures.h"
#include "args.h"

static long rss_peak_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return -1;
  char line[256];
  long v = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmHWM:", 6) == 0)
      v = atol(line + 6);
  fclose(f);
  return v;
}

typedef struct run {
  long n;
  int64_t sleep_ns;
} run;

static int sleeper(void *arg, cf_value *result) {
  (void)result;
  return cf_sleep(*(const int64_t *)arg);
}

static int wait_all(void *arg, cf_value *result) {
  (void)result;
  run *r = arg;
  cf_loop *L = cf_loop_current();
  cf_future **fs = calloc((size_t)r->n, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  for (long i = 0; i < r->n; i++) {
    int rc = cf_loop_spawn(L, sleeper, &r->sleep_ns, &fs[i]);
    if (rc != 0) {
      for (long k = 0; k < i; k++)
        cf_future_unref(fs[k]);
      free(fs);
      return cf_raise(rc, "spawning task %ld of %ld: %s", i, r->n,
                      cf_strerror(rc));
    }
  }
  int rc = cf_gather(fs, (size_t)r->n, 0, CF_FOREVER);
  if (rc != 0) {
    /* Say which task failed and why (its own message), not just the
     * code: the first one done with an error. */
    for (long i = 0; i < r->n; i++) {
      cf_error e = cf_future_get_error(fs[i]);
      if (e.code != 0 && e.code != CF_EINVALSTATE) {
        rc = cf_raise(e.code, "task %ld of %ld: %s", i, r->n, e.message);
        break;
      }
    }
  }
  for (long i = 0; i < r->n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  return rc;
}

int main(int argc, char **argv) {
  run r = {.n = 100000, .sleep_ns = CF_SEC(1)};
  cf_loop_opts o = {.shared_stack = true};
  for (int i = 1; i < argc; i++) {
    long v;
    double d;
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc &&
        arg_long(argv[i + 1], 1, 100000000, &v)) {
      r.n = v;
      i++;
    } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc &&
               arg_double(argv[i + 1], 0, 1e6, &d)) {
      r.sleep_ns = (int64_t)(d * 1e9);
      i++;
    } else if (strcmp(argv[i], "--shared-stack") == 0) {
      o.shared_stack = true;
    } else if (strcmp(argv[i], "--own-stacks") == 0) {
      o.shared_stack = false;
    } else if (strcmp(argv[i], "--stack-size") == 0 && i + 1 < argc &&
               arg_long(argv[i + 1], 0, 1L << 30, &v)) {
      o.stack_size = (size_t)v;
      i++;
    } else {
      fprintf(stderr, "usage: sleepers [-n TASKS] [-s SECONDS] "
                      "[--own-stacks | --shared-stack] "
                      "[--stack-size BYTES]\n");
      return 2;
    }
  }
  if (r.n < 1 || r.sleep_ns < 0) {
    fprintf(stderr, "sleepers: need -n >= 1 and -s >= 0\n");
    return 2;
  }
  long before = rss_peak_kib();
  int64_t t0 = cf_now_ns();
  cf_future *f;
  int rc = cf_loop_run_main(wait_all, &r, &o, &f);
  double wall = (double)(cf_now_ns() - t0) / 1e9;
  long after = rss_peak_kib();
  if (rc != 0) {
    fprintf(stderr, "sleepers: %s\n", cf_future_get_error(f).message);
    cf_future_unref(f);
    return 1;
  }
  cf_future_unref(f);
  double per_task = (double)(after - before) * 1024.0 / (double)r.n;
  printf("%ld tasks slept %.3f s each: wall %.3f s, %.0f bytes per task "
         "(peak RSS %ld KiB, %s stacks)\n",
         r.n, (double)r.sleep_ns / 1e9, wall, per_task, after,
         o.shared_stack ? "shared" : "own");
  printf("RESULT impl=cfutures bench=sleepers n=%ld wall_s=%.4f "
         "bytes_per_task=%.0f\n",
         r.n, wall, per_task);
  return 0;
}
