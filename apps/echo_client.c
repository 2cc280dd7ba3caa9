/*
 * echo_client - opens N connections concurrently (one task each, one
 * thread), sends M messages of S bytes on each and waits for each echo;
 * prints connections per second, round trips per second and the p50 and
 * p99 round-trip latency.
 *
 *   echo_client --port P [--host H] [-c CONNECTIONS] [-n MESSAGES]
 *               [-s SIZE] [--self] [--shared-stack]
 *
 * --shared-stack runs the connection tasks on the loop's shared stack
 * (cf_loop_opts.shared_stack: no stack mapped per task), else each task
 * has its own 64 KiB stack.
 * --self runs the echo server on the same loop (one thread for both
 * ends), for tests. Exits 1 if any connection failed or an echo differed.
 */
#include <cf/cfutures.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "args.h"

typedef struct config {
  const char *host;
  int port;
  long conns, msgs;
  size_t size;
  bool self, shared_stack;
} config;

typedef struct run {
  config *c;
  int64_t *lat; /* conns * msgs round-trip times, ns */
  long failed, connected;
  int64_t connect_done_ns; /* when the last connection was up */
  long up;
  cf_event *all_up; /* set once every connection is up (or failed) */
} run;

static run R;

static int echo(cf_stream *s, void *arg) {
  (void)arg;
  char buf[16384];
  for (;;) {
    ssize_t n = cf_stream_read(s, buf, sizeof buf, CF_FOREVER);
    if (n <= 0)
      return n == 0 || n == CF_ECANCELED ? 0 : (int)n;
    if (cf_stream_write(s, buf, (size_t)n, CF_SEC(60)) != 0)
      return CF_ETASK;
  }
}

static void settle_connect(void) {
  if (++R.up == R.c->conns) {
    R.connect_done_ns = cf_now_ns();
    cf_event_set(R.all_up);
  }
}

static int client(void *arg, cf_value *result) {
  (void)result;
  long id = (long)(intptr_t)arg;
  config *c = R.c;
  cf_stream *s;
  int rc = cf_tcp_connect(c->host, c->port, CF_SEC(60), &s);
  settle_connect();
  if (rc != 0) {
    R.failed++;
    return rc;
  }
  R.connected++;
  /* Round trips start once all connections are up, as in the benchmark. */
  cf_event_wait(R.all_up, CF_FOREVER);
  char *out = malloc(c->size), *in = malloc(c->size);
  if (out == NULL || in == NULL) {
    free(out);
    free(in);
    cf_stream_close(s);
    R.failed++;
    return CF_ENOMEM;
  }
  for (long m = 0; m < c->msgs && rc == 0; m++) {
    for (size_t i = 0; i < c->size; i++)
      out[i] = (char)(id + m + (long)i);
    int64_t t0 = cf_now_ns();
    rc = cf_stream_write(s, out, c->size, CF_SEC(60));
    if (rc == 0)
      rc = cf_stream_read_exactly(s, in, c->size, CF_SEC(60), NULL);
    if (rc == 0 && memcmp(in, out, c->size) != 0)
      rc = CF_ETASK;
    R.lat[id * c->msgs + m] = cf_now_ns() - t0;
  }
  free(out);
  free(in);
  cf_stream_close(s);
  if (rc != 0)
    R.failed++;
  return rc;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int main_task(void *arg, cf_value *result) {
  (void)result;
  config *c = arg;
  cf_raise_fd_limit(NULL);
  R.c = c;
  cf_server *srv = NULL;
  if (c->self) {
    int rc = cf_server_start("127.0.0.1", 0, 4096, echo, NULL, &srv);
    if (rc != 0)
      return cf_raise(rc, "cannot start the echo server: %s", cf_strerror(rc));
    c->port = cf_server_get_port(srv);
  }
  R.lat = calloc((size_t)(c->conns * c->msgs), sizeof *R.lat);
  cf_future **fs = calloc((size_t)c->conns, sizeof *fs);
  if (R.lat == NULL || fs == NULL || cf_event_new(&R.all_up) != 0)
    return CF_ENOMEM;
  int64_t t0 = cf_now_ns();
  for (long i = 0; i < c->conns; i++)
    if (cf_loop_spawn(cf_loop_current(), client, (void *)(intptr_t)i,
                      &fs[i]) != 0)
      return CF_ENOMEM;
  cf_gather(fs, (size_t)c->conns, CF_GATHER_RETURN_ERRORS, CF_FOREVER);
  int64_t t1 = cf_now_ns();
  for (long i = 0; i < c->conns; i++)
    cf_future_unref(fs[i]);
  free(fs);
  double connect_s = (double)(R.connect_done_ns - t0) / 1e9;
  double rt_s = (double)(t1 - R.connect_done_ns) / 1e9;
  long n = c->conns * c->msgs;
  qsort(R.lat, (size_t)n, sizeof *R.lat, cmp_i64);
  printf("%ld connections (%ld up, %ld failed), %ld messages of %zu bytes "
         "each\n",
         c->conns, R.connected, R.failed, c->msgs, c->size);
  printf("connect: %.0f connections/s; round trips: %.0f/s; latency p50 "
         "%.1f us, p99 %.1f us\n",
         (double)c->conns / connect_s, (double)n / rt_s,
         (double)R.lat[n / 2] / 1e3, (double)R.lat[n * 99 / 100] / 1e3);
  printf("RESULT impl=cfutures bench=echo conns=%ld msgs=%ld connect_per_s=%.0f "
         "rt_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
         c->conns, c->msgs, (double)c->conns / connect_s, (double)n / rt_s,
         (double)R.lat[n / 2] / 1e3, (double)R.lat[n * 99 / 100] / 1e3);
  free(R.lat);
  cf_event_free(R.all_up);
  if (srv != NULL)
    cf_server_stop(srv, CF_SEC(5));
  return R.failed == 0 ? 0 : cf_raise(CF_ETASK, "%ld connections failed",
                                      R.failed);
}

int main(int argc, char **argv) {
  config c = {.host = "127.0.0.1", .conns = 100, .msgs = 100, .size = 64};
  for (int i = 1; i < argc; i++) {
    long v;
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      if (!arg_long(argv[++i], 1, 65535, &v))
        goto usage;
      c.port = (int)v;
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
      c.host = argv[++i];
    else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
      if (!arg_long(argv[++i], 1, 10000000, &c.conns))
        goto usage;
    } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      if (!arg_long(argv[++i], 1, 1000000000, &c.msgs))
        goto usage;
    } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
      if (!arg_long(argv[++i], 1, 1L << 30, &v))
        goto usage;
      c.size = (size_t)v;
    }
    else if (strcmp(argv[i], "--self") == 0)
      c.self = true;
    else if (strcmp(argv[i], "--shared-stack") == 0)
      c.shared_stack = true;
    else
      goto usage;
  }
  if (c.conns < 1 || c.msgs < 1 || c.size < 1 || (!c.self && c.port <= 0))
    goto usage;
  cf_loop_opts o = {.stack_size = 64 * 1024, .shared_stack = c.shared_stack};
  cf_future *f;
  int rc = cf_loop_run_main(main_task, &c, &o, &f);
  if (rc != 0)
    fprintf(stderr, "echo_client: %s\n", cf_future_get_error(f).message);
  cf_future_unref(f);
  return rc == 0 ? 0 : 1;
usage:
  fprintf(stderr, "usage: echo_client --port P [--host H] [-c CONNECTIONS] "
                  "[-n MESSAGES] [-s SIZE] [--self] [--shared-stack]\n");
  return 2;
}
