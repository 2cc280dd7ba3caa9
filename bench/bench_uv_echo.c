/*
 * bench_uv_echo.c - the echo benchmark written directly on libuv
 * callbacks (what a C programmer would otherwise write), for the same
 * runs as apps/echo_server and apps/echo_client:
 *
 *   bench_uv_echo server                     (prints its port)
 *   bench_uv_echo server-lean                (the same, careful with memory)
 *   bench_uv_echo client PORT CONNS MSGS SIZE
 *
 * "server" is libuv's documented echo pattern (a malloc'ed buffer per
 * read, handed to the write and freed when it completes). "server-lean"
 * is what a programmer who counts bytes per connection writes: one static
 * read buffer, uv_try_write first, and a copy only of what the kernel did
 * not take.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

static int64_t now_ns(void) { return (int64_t)uv_hrtime(); }

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = malloc(16384);
  buf->len = 16384;
}

/* ---------------------------------------------------------------------- */
/* Server                                                                 */

typedef struct wreq {
  uv_write_t req;
  char *data;
} wreq;

static void on_echoed(uv_write_t *req, int status) {
  (void)status;
  wreq *w = (wreq *)req;
  free(w->data);
  free(w);
}

static void on_closed_free(uv_handle_t *h) { free(h); }

static void on_server_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    wreq *w = malloc(sizeof *w);
    w->data = buf->base;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    uv_write(&w->req, s, &b, 1, on_echoed);
    return;
  }
  free(buf->base);
  if (n < 0)
    uv_close((uv_handle_t *)s, on_closed_free);
}

static char lean_buf[65536];

static void on_alloc_lean(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = lean_buf;
  buf->len = sizeof lean_buf;
}

static void on_lean_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    int k = uv_try_write(s, &b, 1);
    size_t sent = k > 0 ? (size_t)k : 0;
    if (sent < (size_t)n) {
      wreq *w = malloc(sizeof *w);
      w->data = malloc((size_t)n - sent);
      memcpy(w->data, buf->base + sent, (size_t)n - sent);
      b = uv_buf_init(w->data, (unsigned)((size_t)n - sent));
      uv_write(&w->req, s, &b, 1, on_echoed);
    }
  } else if (n < 0) {
    uv_close((uv_handle_t *)s, on_closed_free);
  }
}

static int lean;

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  uv_tcp_t *c = malloc(sizeof *c);
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) == 0) {
    uv_tcp_nodelay(c, 1);
    if (lean)
      uv_read_start((uv_stream_t *)c, on_alloc_lean, on_lean_read);
    else
      uv_read_start((uv_stream_t *)c, on_alloc, on_server_read);
  } else {
    uv_close((uv_handle_t *)c, on_closed_free);
  }
}

static int run_server(void) {
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_bind(&server, (const struct sockaddr *)&a, 0);
  if (uv_listen((uv_stream_t *)&server, 4096, on_connection) != 0)
    return 1;
  struct sockaddr_in bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
  printf("listening on 127.0.0.1 port %d\n", ntohs(bound.sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}

/* ---------------------------------------------------------------------- */
/* Client                                                                 */

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  long id, sent;
  size_t got;
  int64_t t0;
} conn;

static long conns, msgs, up, done_conns;
static size_t size;
static char *payload;
static conn *all;
static int64_t *lat, t_start, t_up, t_end;
static long nlat;

static void send_next(conn *c);

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;
  free(buf->base);
  if (n < 0) {
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  c->got += (size_t)n;
  if (c->got >= size) {
    lat[nlat++] = now_ns() - c->t0;
    c->got -= size;
    if (++c->sent < msgs) {
      send_next(c);
    } else {
      uv_read_stop(s);
      uv_close((uv_handle_t *)s, NULL);
      if (++done_conns == conns)
        t_end = now_ns();
    }
  }
}

static void on_sent(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* A request per write: the echo can come back before the write's own
 * callback has run, so a request cannot be reused for the next one. */
static void send_next(conn *c) {
  c->t0 = now_ns();
  uv_buf_t b = uv_buf_init(payload, (unsigned)size);
  uv_write_t *w = malloc(sizeof *w);
  uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_sent);
}

static void on_connected(uv_connect_t *req, int status) {
  conn *c = req->data;
  if (status < 0) {
    fprintf(stderr, "connect: %s\n", uv_strerror(status));
    exit(1);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_client_read);
  if (++up == conns) {
    t_up = now_ns();
    for (long i = 0; i < conns; i++)
      send_next(&all[i]);
  }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int run_client(int port) {
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  all = calloc((size_t)conns, sizeof *all);
  lat = calloc((size_t)(conns * msgs), sizeof *lat);
  payload = malloc(size);
  memset(payload, 'x', size);
  t_start = now_ns();
  for (long i = 0; i < conns; i++) {
    conn *c = &all[i];
    c->id = i;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&a,
                   on_connected);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  qsort(lat, (size_t)nlat, sizeof *lat, cmp_i64);
  printf("RESULT impl=libuv bench=echo conns=%ld msgs=%ld connect_per_s=%.0f "
         "rt_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
         conns, msgs, (double)conns / ((double)(t_up - t_start) / 1e9),
         (double)nlat / ((double)(t_end - t_up) / 1e9),
         (double)lat[nlat / 2] / 1e3, (double)lat[nlat * 99 / 100] / 1e3);
  return nlat == conns * msgs ? 0 : 1;
}

int main(int argc, char **argv) {
  raise_fd_limit();
  if (argc >= 2 && strcmp(argv[1], "server") == 0)
    return run_server();
  if (argc >= 2 && strcmp(argv[1], "server-lean") == 0) {
    lean = 1;
    return run_server();
  }
  if (argc >= 6 && strcmp(argv[1], "client") == 0) {
    conns = atol(argv[3]);
    msgs = atol(argv[4]);
    size = (size_t)atol(argv[5]);
    return run_client(atoi(argv[2]));
  }
  fprintf(stderr, "usage: bench_uv_echo server | client PORT CONNS MSGS SIZE\n");
  return 2;
}
