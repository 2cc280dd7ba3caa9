/*
 * demo_executor_map - the seeds' Executor.map experiment (demo_executor_map.py)
 * on cfutures: three workers run loiter(n) for n in range(5); results come
 * back in input order although they finish out of order.
 *
 * Usage: demo_executor_map [COUNT]   (COUNT items, default 5; the second
 * seed uses 8)
 */
#include <cf/cfutures.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "args.h"

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* Python's display(): the message preceded by a [HH:MM:SS] timestamp.
 * One lock per line, so lines never interleave. */
static void display(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void display(const char *fmt, ...) {
  char stamp[16];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "[%H:%M:%S]", &tm);
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&out_mu);
  printf("%s ", stamp);
  vprintf(fmt, ap);
  putchar('\n');
  fflush(stdout);
  pthread_mutex_unlock(&out_mu);
  va_end(ap);
}

static const char *tabs(long n) {
  static const char t[] = "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t";
  if (n < 0)
    n = 0;
  if (n > 16)
    n = 16;
  return t + 16 - n;
}

/* Displays a message, sleeps n seconds, displays another, returns n * 10. */
static int loiter(void *arg, cf_value *result) {
  long n = (long)(intptr_t)arg;
  display("%sloiter(%ld): doing nothing for %lds...", tabs(n), n, n);
  sleep((unsigned)n);
  display("%sloiter(%ld): done.", tabs(n), n);
  result->u.i = n * 10;
  result->type = "int";
  return 0;
}

int main(int argc, char **argv) {
  long count = 5;
  if ((argc > 1 && !arg_long(argv[1], 0, 16, &count)) || argc > 2) {
    fprintf(stderr, "usage: %s [COUNT 0..16]\n", argv[0]);
    return 2;
  }
  display("Script starting.");
  cf_thread_pool_opts opts = {.max_workers = 3};
  cf_executor *executor;
  int rc = cf_thread_pool_new(&opts, &executor);
  if (rc != 0) {
    fprintf(stderr, "cannot create the pool: %s\n", cf_strerror(rc));
    return 1;
  }
  cf_range_iter items = cf_range_iter_init(0, count, 1);
  cf_map *results;
  rc = cf_executor_map(executor, loiter, cf_range_iter_next, &items, NULL,
                       &results);
  if (rc != 0) {
    fprintf(stderr, "map failed: %s\n", cf_strerror(rc));
    return 1;
  }
  char desc[64];
  cf_map_describe(results, desc, sizeof desc);
  display("results: %s", desc);
  display("Waiting for individual results:");
  cf_value v;
  long i = 0;
  bool wrong = false;
  for (; (rc = cf_map_next(results, &v)) == 1; i++) {
    display("result %ld: %lld", i, (long long)v.u.i);
    wrong |= v.u.i != i * 10; /* loiter(n) returns n * 10 */
  }
  if (rc == 0 && (wrong || i != count)) {
    fprintf(stderr, "wrong results: expected 0, 10, ... %ld\n",
            (count - 1) * 10);
    rc = -1;
  } else if (rc < 0)
    fprintf(stderr, "map failed: %s: %s\n", cf_strerror(rc),
            cf_map_get_error(results).message);
  cf_map_free(results);
  cf_executor_free(executor);
  return rc < 0 ? 1 : 0;
}
