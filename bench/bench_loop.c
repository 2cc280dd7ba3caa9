/*
 * bench_loop.c - the event loop and its tasks, against raw libuv timers
 * (the same program with -DRAW_UV) and Python's asyncio (bench_asyncio.py):
 *
 *   sleepers   N tasks each sleep 1 s at once: wall time (s) and memory
 *              per task (bytes: peak RSS growth / N), each run in a fresh
 *              process; raw libuv: N uv_timer_t of 1 s
 *   spawn      N tasks that return at once, spawned and gathered: ns/task
 *   pingpong   two tasks pass a future back and forth: ns per switch
 *
 *   bench_loop MODE N RUNS      (prints RESULT lines, bench/report.py)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#ifdef RAW_UV
#include <uv.h>
#define IMPL "libuv"
#else
#include "cf/cfutures.h"
#define IMPL "cfutures"
#endif

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

/* ---------------------------------------------------------------------- */
/* One sleepers run, in this process: wall seconds, bytes per task.       */

#ifdef RAW_UV
static void on_timer(uv_timer_t *t) { (void)t; }

static void sleepers_once(long n, double *wall, double *per_task) {
  long before = rss_peak_kib();
  int64_t t0 = bench_now_ns();
  uv_loop_t *loop = uv_default_loop();
  uv_timer_t *timers = malloc((size_t)n * sizeof *timers);
  if (timers == NULL)
    exit(1);
  for (long i = 0; i < n; i++) {
    uv_timer_init(loop, &timers[i]);
    uv_timer_start(&timers[i], on_timer, 1000, 0);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  *wall = (double)(bench_now_ns() - t0) / 1e9;
  *per_task = (double)(rss_peak_kib() - before) * 1024.0 / (double)n;
}
#else
static int sleeper(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return cf_sleep(CF_SEC(1));
}

static int sleepers_main(void *arg, cf_value *result) {
  (void)result;
  long n = *(long *)arg;
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  for (long i = 0; i < n; i++)
    if (cf_loop_spawn(cf_loop_current(), sleeper, NULL, &fs[i]) != 0)
      return CF_ENOMEM;
  int rc = cf_gather(fs, (size_t)n, 0, CF_FOREVER);
  for (long i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  return rc;
}

static void sleepers_once(long n, double *wall, double *per_task) {
  long before = rss_peak_kib();
  int64_t t0 = bench_now_ns();
  cf_loop_opts o = {.shared_stack = true};
  if (cf_loop_run_main(sleepers_main, &n, &o, NULL) != 0) {
    fprintf(stderr, "bench_loop: sleepers failed\n");
    exit(1);
  }
  *wall = (double)(bench_now_ns() - t0) / 1e9;
  *per_task = (double)(rss_peak_kib() - before) * 1024.0 / (double)n;
}

/* ---------------------------------------------------------------------- */

static int noop(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return 0;
}

static int spawn_main(void *arg, cf_value *result) {
  long n = *(long *)arg;
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  int64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    cf_loop_spawn(cf_loop_current(), noop, NULL, &fs[i]);
  int rc = cf_gather(fs, (size_t)n, 0, CF_FOREVER);
  int64_t dt = bench_now_ns() - t0;
  for (long i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  result->u.d = (double)dt / (double)n;
  return rc;
}

typedef struct court {
  cf_future *ball, *reply;
  long rounds;
} court;

static int server(void *arg, cf_value *result) {
  (void)result;
  court *c = arg;
  for (long i = 0; i < c->rounds; i++) {
    cf_future_wait(c->ball, CF_FOREVER);
    cf_future_unref(c->ball);
    cf_future *rep = c->reply;
    cf_future_new(&c->ball);
    cf_future_set_result(rep, NULL);
  }
  return 0;
}

static int client(void *arg, cf_value *result) {
  (void)result;
  court *c = arg;
  for (long i = 0; i < c->rounds; i++) {
    cf_future_new(&c->reply);
    cf_future_set_result(c->ball, NULL);
    cf_future *rep = c->reply;
    cf_future_wait(rep, CF_FOREVER);
    cf_future_unref(rep);
  }
  return 0;
}

static int pingpong_main(void *arg, cf_value *result) {
  static court c; /* not on this task's stack: the players use it */
  c.rounds = *(long *)arg;
  cf_future_new(&c.ball);
  cf_future *a, *b;
  int64_t t0 = bench_now_ns();
  cf_loop_spawn(cf_loop_current(), server, &c, &a);
  cf_loop_spawn(cf_loop_current(), client, &c, &b);
  cf_future *both[2] = {a, b};
  int rc = cf_gather(both, 2, 0, CF_FOREVER);
  int64_t dt = bench_now_ns() - t0;
  cf_future_unref(a);
  cf_future_unref(b);
  cf_future_unref(c.ball);
  /* Two switches per round: server -> client -> server. */
  result->u.d = (double)dt / (2.0 * (double)c.rounds);
  return rc;
}

static double run_task(cf_task_fn fn, long n) {
  cf_future *f;
  if (cf_loop_run_main(fn, &n, NULL, &f) != 0) {
    fprintf(stderr, "bench_loop: run failed\n");
    exit(1);
  }
  const cf_value *v;
  cf_future_result(f, 0, &v);
  double d = v->u.d;
  cf_future_unref(f);
  return d;
}
#endif

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *bench, long n, const char *unit, double *v,
                   int runs) {
  double sorted[64];
  memcpy(sorted, v, (size_t)runs * sizeof *v);
  qsort(sorted, (size_t)runs, sizeof *sorted, cmp_double);
  printf("RESULT impl=%s bench=%s n=%ld workers=1 unit=%s median=%.4f runs=",
         IMPL, bench, n, unit, sorted[runs / 2]);
  for (int i = 0; i < runs; i++)
    printf("%s%.4f", i ? "," : "", v[i]);
  printf("\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_loop sleepers|spawn|pingpong N RUNS\n");
    return 2;
  }
  const char *mode = argv[1];
  long n = atol(argv[2]);
  int runs = atoi(argv[3]);
  if (n < 1 || runs < 1 || runs > 64)
    return 2;
  double v[64], mem[64];
  if (strcmp(mode, "sleepers") == 0) {
    for (int r = 0; r < runs; r++) {
      int fd[2];
      if (pipe(fd) != 0)
        return 1;
      pid_t pid = fork();
      if (pid == 0) {
        double out[2];
        sleepers_once(n, &out[0], &out[1]);
        if (write(fd[1], out, sizeof out) != (ssize_t)sizeof out)
          _exit(1);
        _exit(0);
      }
      close(fd[1]);
      double in[2] = {0, 0};
      if (read(fd[0], in, sizeof in) != (ssize_t)sizeof in)
        return 1;
      close(fd[0]);
      waitpid(pid, NULL, 0);
      v[r] = in[0];
      mem[r] = in[1];
    }
    report("sleepers_wall", n, "s", v, runs);
    report("sleepers_mem", n, "bytes/task", mem, runs);
    return 0;
  }
#ifndef RAW_UV
  if (strcmp(mode, "spawn") == 0) {
    for (int r = 0; r < runs; r++)
      v[r] = run_task(spawn_main, n);
    report("spawn", n, "ns/task", v, runs);
    return 0;
  }
  if (strcmp(mode, "pingpong") == 0) {
    for (int r = 0; r < runs; r++)
      v[r] = run_task(pingpong_main, n);
    report("pingpong", n, "ns/switch", v, runs);
    return 0;
  }
#endif
  fprintf(stderr, "bench_loop: unknown mode %s\n", mode);
  return 2;
}
