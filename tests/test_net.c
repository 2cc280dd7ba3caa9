/*
 * test_net.c - TCP streams and servers for tasks (cf/net.h): round trips
 * on loopback, early close, a silent peer, refusal, 64 MiB through
 * partial reads and writes, many connections at once, a stop with grace.
 */
#include "support.h"

#include "loop_int.h"

#include <uv.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cf/io.h"
#include "cf/net.h"
#include "cf/sync.h"

static cf_loop *here(void) { return cf_loop_current(); }

/* Echoes every line back until the peer closes. */
static int echo_handler(cf_stream *s, void *arg) {
  (void)arg;
  char buf[4096];
  for (;;) {
    ssize_t n = cf_stream_read(s, buf, sizeof buf, CF_SEC(30));
    if (n <= 0)
      return (int)n;
    if (cf_stream_write(s, buf, (size_t)n, CF_SEC(30)) != 0)
      return CF_ETASK;
  }
}

static int main_echo(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, echo_handler, NULL, &srv) == 0);
  int port = cf_server_get_port(srv);
  TCHECK(port > 0);
  cf_stream *c;
  TCHECK(cf_tcp_connect("127.0.0.1", port, CF_SEC(30), &c) == 0);
  char peer[64];
  TCHECK(cf_stream_get_peer(c, peer, sizeof peer) == 0);
  char want_peer[64];
  snprintf(want_peer, sizeof want_peer, "127.0.0.1:%d", port);
  TCHECK(strcmp(peer, want_peer) == 0);
  char cut[4];
  TCHECK(cf_stream_get_peer(c, cut, sizeof cut) == CF_ENOBUFS);
  TCHECK(strcmp(cut, "127") == 0); /* what fits, cut */
  TCHECK(cf_stream_read_until(c, "\r\n", 2, cut, 1, CF_SEC(1)) ==
         CF_EINVAL); /* no match could fit */
  for (int i = 0; i < 50; i++) {
    char line[64], got[64];
    int n = snprintf(line, sizeof line, "line %d\n", i);
    TCHECK(cf_stream_write(c, line, (size_t)n, CF_SEC(30)) == 0);
    ssize_t r = cf_stream_read_until(c, "\n", 1, got, sizeof got, CF_SEC(30));
    TCHECK(r == n && memcmp(got, line, (size_t)n) == 0);
  }
  /* read_exactly across several writes; read_until's limit. */
  TCHECK(cf_stream_write(c, "abc", 3, CF_SEC(30)) == 0);
  TCHECK(cf_stream_write(c, "defgh", 5, CF_SEC(30)) == 0);
  char eight[8];
  TCHECK(cf_stream_read_exactly(c, eight, 8, CF_SEC(30), NULL) == 0);
  TCHECK(memcmp(eight, "abcdefgh", 8) == 0);
  TCHECK(cf_stream_write(c, "no newline here", 15, CF_SEC(30)) == 0);
  char small[8];
  TCHECK(cf_stream_read_until(c, "\n", 1, small, sizeof small, CF_SEC(30)) ==
         CF_ENOBUFS);
  char rest[32];
  size_t got_total = 0;
  while (got_total < 15) {
    ssize_t r = cf_stream_read(c, rest + got_total, sizeof rest - got_total,
                               CF_SEC(30));
    TCHECK(r > 0);
    if (r <= 0)
      break;
    got_total += (size_t)r;
  }
  TCHECK(got_total == 15 && memcmp(rest, "no newline here", 15) == 0);
  /* Half-close: the echo handler sees the end and closes; we see ours. */
  TCHECK(cf_stream_shutdown(c, CF_SEC(30)) == 0);
  TCHECK(cf_stream_read(c, rest, sizeof rest, CF_SEC(30)) == 0);
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  return 0;
}

CF_TEST(a_client_and_a_server_talk_on_loopback) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_echo, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

/* Writes "hello" once the event is set, then closes. */
static int hello_on_cue(cf_stream *s, void *arg) {
  cf_event *go = arg;
  TCHECK(cf_event_wait(go, SOON) == 0);
  TCHECK(cf_stream_write(s, "hello", 5, SOON) == 0);
  TCHECK(cf_stream_drain(s, SOON) == 0);
  cf_stream_close(s);
  return 0;
}

static int read_one_byte(void *arg, cf_value *result) {
  (void)result;
  char b;
  return (int)cf_stream_read(arg, &b, 1, CF_MSEC(50));
}

static int main_wait_readable(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_event *go;
  TCHECK(cf_event_new(&go) == 0);
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, hello_on_cue, go, &srv) == 0);
  cf_stream *c;
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), SOON, &c) == 0);
  /* Nothing comes before the cue. */
  TCHECK(cf_stream_wait_readable(c, CF_MSEC(20)) == CF_ETIMEDOUT);
  /* One reader at a time, waiting or reading. */
  cf_future *reader;
  TCHECK(cf_loop_spawn(here(), read_one_byte, c, &reader) == 0);
  TCHECK(cf_yield() == 0); /* the reader is waiting now */
  TCHECK(cf_stream_wait_readable(c, 0) == CF_EBUSY);
  TCHECK(cf_future_result(reader, SOON, NULL) == CF_ETIMEDOUT);
  cf_future_unref(reader);
  /* Bytes arrive: the wait ends and consumes nothing. */
  TCHECK(cf_event_set(go) == 0);
  TCHECK(cf_stream_wait_readable(c, SOON) == 0);
  TCHECK(cf_stream_wait_readable(c, 0) == 0);
  char got[5];
  TCHECK(cf_stream_read_exactly(c, got, 5, SOON, NULL) == 0);
  TCHECK(memcmp(got, "hello", 5) == 0);
  /* The end of the stream ends a wait too; the read then says so. */
  TCHECK(cf_stream_wait_readable(c, SOON) == 0);
  TCHECK(cf_stream_read(c, got, sizeof got, 0) == 0);
  TCHECK(cf_stream_wait_readable(c, -1) == CF_EINVAL);
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, SOON) == 0);
  cf_event_free(go);
  return 0;
}

CF_TEST(waiting_for_input_reads_nothing_and_ends_with_data_or_the_end) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_wait_readable, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
  assert_int_equal(cf_stream_wait_readable(NULL, 0), CF_EINVAL);
}

static int close_at_once(cf_stream *s, void *arg) {
  (void)arg;
  cf_stream_close(s);
  return 0;
}

static int silent(cf_stream *s, void *arg) {
  (void)s;
  (void)arg;
  return cf_sleep(CF_SEC(3600)); /* never answers; cancelled by the stop */
}

/* A port nothing listens on: bound, then closed. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  bind(fd, (struct sockaddr *)&a, sizeof a);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

static int main_failures(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  /* The peer closes early. */
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, close_at_once, NULL, &srv) == 0);
  cf_stream *c;
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), CF_SEC(30),
                        &c) == 0);
  char buf[16];
  size_t got = 99;
  TCHECK(cf_stream_read_exactly(c, buf, 4, CF_SEC(30), &got) == CF_EEOF);
  TCHECK(got == 0);
  TCHECK(cf_stream_read(c, buf, sizeof buf, CF_SEC(30)) == 0);
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  /* The peer never answers: the deadline ends the read. */
  TCHECK(cf_server_start("127.0.0.1", 0, 0, silent, NULL, &srv) == 0);
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), CF_SEC(30),
                        &c) == 0);
  int64_t t0 = cf_now_ns();
  TCHECK(cf_stream_read(c, buf, sizeof buf, CF_MSEC(50)) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(50));
  cf_stream_close(c);
  /* Its handler is still running: the stop cancels it after the grace. */
  TCHECK(cf_server_stop(srv, CF_MSEC(20)) == CF_ETIMEDOUT);
  /* Refused, unknown host, bad arguments. */
  TCHECK(cf_tcp_connect("127.0.0.1", free_port(), CF_SEC(30), &c) ==
         -ECONNREFUSED);
  TCHECK(c == NULL);
  TCHECK(cf_tcp_connect("no-such-host.invalid", 80, CF_SEC(30), &c) < 0);
  TCHECK(cf_tcp_connect("127.0.0.1", 0, CF_SEC(1), &c) == CF_EINVAL);
  /* Not an address and no such name: the resolver's error. */
  TCHECK(cf_server_start("no-such-host.invalid", 0, 0, silent, NULL, &srv) <
         0);
  TCHECK(srv == NULL);
  /* Address in use. */
  cf_server *a, *b;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, silent, NULL, &a) == 0);
  TCHECK(cf_server_start("127.0.0.1", cf_server_get_port(a), 0, silent, NULL,
                         &b) == -EADDRINUSE);
  TCHECK(cf_server_stop(a, CF_SEC(30)) == 0);
  return 0;
}

/* A stream closed by one task while others are inside its calls: a
 * writer held by back-pressure (the peer never reads) and a reader
 * waiting for input both return CF_EBADF, at once, and nothing touches
 * the freed stream (ASan); a drain beside the held writer is refused, as
 * a second writer is. Then a server handler that closes its stream and
 * waits before it returns: its connection task still holds the stream. */
static int never_reads(cf_stream *s, void *arg) {
  cf_event *done = arg;
  (void)s;
  return cf_event_wait(done, SOON);
}

static int close_then_wait(cf_stream *s, void *arg) {
  (void)arg;
  cf_stream_close(s);
  /* A sleep cannot end without the loop polling (it waits there), and
   * each libuv iteration runs its close callbacks: when it returns, the
   * handle's close has completed, whatever the duration. */
  return cf_sleep(CF_MSEC(20));
}

typedef struct closing {
  cf_stream *c;
  char *big;
  size_t big_len;
  _Atomic int writer_held, reader_waiting;
} closing;

static int held_writer(void *arg, cf_value *result) {
  (void)result;
  closing *k = arg;
  /* Far more than the kernel takes: the rest stays queued. */
  TCHECK(cf_stream_write(k->c, k->big, k->big_len, SOON) == 0);
  atomic_store(&k->writer_held, 1); /* and the next write waits: */
  return cf_stream_write(k->c, "x", 1, SOON);
}

static int waiting_reader(void *arg, cf_value *result) {
  (void)result;
  closing *k = arg;
  char b;
  atomic_store(&k->reader_waiting, 1);
  return (int)cf_stream_read(k->c, &b, 1, SOON);
}

static int waiting_shutdown(void *arg, cf_value *result) {
  (void)result;
  closing *k = arg;
  atomic_store(&k->reader_waiting, 1);
  return cf_stream_shutdown(k->c, SOON);
}

static int main_close_under_calls(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static closing k; /* the tasks read it: not on a task's stack */
  k = (closing){.big_len = (size_t)64 << 20};
  k.big = calloc(1, k.big_len);
  TCHECK(k.big != NULL);
  cf_event *done;
  TCHECK(cf_event_new(&done) == 0);
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, never_reads, done, &srv) == 0);
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), SOON, &k.c) ==
         0);
  cf_future *w, *r;
  TCHECK(cf_loop_spawn(here(), held_writer, &k, &w) == 0);
  /* Each task sets its flag and enters its call without yielding. */
  while (atomic_load(&k.writer_held) == 0)
    TCHECK(cf_yield() == 0);
  TCHECK(cf_stream_drain(k.c, SOON) == CF_EBUSY);
  TCHECK(cf_stream_shutdown(k.c, SOON) == CF_EBUSY); /* a writer's turn */
  TCHECK(cf_loop_spawn(here(), waiting_reader, &k, &r) == 0);
  while (atomic_load(&k.reader_waiting) == 0)
    TCHECK(cf_yield() == 0);
  TCHECK(!cf_future_done(w) && !cf_future_done(r));
  cf_stream_close(k.c);
  TCHECK(cf_future_result(w, SOON, NULL) == CF_EBADF);
  TCHECK(cf_future_result(r, SOON, NULL) == CF_EBADF);
  cf_future_unref(w);
  cf_future_unref(r);
  TCHECK(cf_event_set(done) == 0);
  TCHECK(cf_server_stop(srv, SOON) == 0);
  /* A shutdown waiting behind queued writes (the peer reads nothing)
   * when the stream is closed: it ends with CF_EBADF, and the stream
   * stays until it has. */
  TCHECK(cf_event_clear(done) == 0);
  TCHECK(cf_server_start("127.0.0.1", 0, 0, never_reads, done, &srv) == 0);
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), SOON, &k.c) ==
         0);
  TCHECK(cf_stream_write(k.c, k.big, k.big_len, SOON) == 0); /* queued */
  atomic_store(&k.reader_waiting, 0);
  cf_future *sd;
  TCHECK(cf_loop_spawn(here(), waiting_shutdown, &k, &sd) == 0);
  while (atomic_load(&k.reader_waiting) == 0)
    TCHECK(cf_yield() == 0);
  TCHECK(cf_yield() == 0);
  TCHECK(!cf_future_done(sd));
  cf_stream_close(k.c);
  TCHECK(cf_future_result(sd, SOON, NULL) == CF_EBADF);
  cf_future_unref(sd);
  TCHECK(cf_event_set(done) == 0);
  TCHECK(cf_server_stop(srv, SOON) == 0);
  free(k.big);
  cf_event_free(done);
  /* The handler closes, waits, returns; the server then lets go. */
  TCHECK(cf_server_start("127.0.0.1", 0, 0, close_then_wait, NULL, &srv) ==
         0);
  cf_stream *c;
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv), SOON, &c) == 0);
  char buf[4];
  TCHECK(cf_stream_read(c, buf, sizeof buf, SOON) == 0); /* the end */
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, SOON) == 0);
  return 0;
}

CF_TEST(a_stream_closed_under_other_tasks_calls_ends_them_with_ebadf) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_close_under_calls, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

/* A server bound by a name (this machine's host name, from /etc/hosts
 * or the resolver), and a client that connects to the same name. */
static int main_named(void *arg, cf_value *result) {
  (void)result;
  const char *name = arg;
  cf_server *srv;
  TCHECK(cf_server_start(name, 0, 0, echo_handler, NULL, &srv) == 0);
  cf_stream *c;
  TCHECK(cf_tcp_connect(name, cf_server_get_port(srv), CF_SEC(30), &c) == 0);
  char buf[8];
  TCHECK(cf_stream_write(c, "named\n", 6, CF_SEC(30)) == 0);
  TCHECK(cf_stream_read_until(c, "\n", 1, buf, sizeof buf, CF_SEC(30)) == 6);
  TCHECK(memcmp(buf, "named\n", 6) == 0);
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  return 0;
}

CF_TEST(a_server_binds_to_a_host_name) {
  (void)state;
  static char name[256];
  assert_int_equal(gethostname(name, sizeof name - 1), 0);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(name, "80", &hints, &res) != 0) {
    /* Not resolvable here: the name the resolver always knows. */
    snprintf(name, sizeof name, "%s", "localhost");
  } else
    freeaddrinfo(res);
  assert_int_equal(
      cf_loop_run_main(main_named, name, test_loop_opts(NULL), NULL), 0);
}

/* An address literal connects without a lookup: with every thread of
 * libuv's pool held (where names are resolved), a name cannot resolve
 * (its connect reaches its deadline) while "127.0.0.1" and "::1"
 * connect at once. The pool's threads are held by work items queued on a
 * private libuv loop, blocked on a semaphore until the end. */
static uv_sem_t pool_hold;
static void hold_work(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&pool_hold);
}
static void held_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
}

static int main_literal(void *arg, cf_value *result) {
  (void)result;
  (void)arg;
  cf_server *srv4, *srv6 = NULL;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, echo_handler, NULL, &srv4) == 0);
  bool v6 = cf_server_start("::1", 0, 0, echo_handler, NULL, &srv6) == 0;
  cf_stream *c;
  /* The pool is held: a name's lookup cannot run before the deadline. */
  TCHECK(cf_tcp_connect("localhost", cf_server_get_port(srv4), CF_MSEC(200),
                        &c) == CF_ETIMEDOUT);
  TCHECK(c == NULL);
  TCHECK(cf_tcp_connect("127.0.0.1", cf_server_get_port(srv4), CF_SEC(30),
                        &c) == 0);
  char buf[8];
  TCHECK(cf_stream_write(c, "lit\n", 4, CF_SEC(30)) == 0);
  TCHECK(cf_stream_read_until(c, "\n", 1, buf, sizeof buf, CF_SEC(30)) == 4);
  cf_stream_close(c);
  if (v6) { /* (a host without IPv6 loopback skips this half) */
    TCHECK(cf_tcp_connect("::1", cf_server_get_port(srv6), CF_SEC(30), &c) ==
           0);
    cf_stream_close(c);
    TCHECK(cf_server_stop(srv6, CF_SEC(30)) == 0);
  }
  /* A literal with nothing listening is refused, not looked up. */
  TCHECK(cf_tcp_connect("127.0.0.1", free_port(), CF_SEC(30), &c) ==
         -ECONNREFUSED);
  TCHECK(cf_server_stop(srv4, CF_SEC(30)) == 0);
  return 0;
}

static int main_unknown_name(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_stream *c;
  /* .invalid never resolves (RFC 6761): a failed lookup, or no answer
   * in time where there is no resolver at all; never a code that means
   * something else. */
  int rc = cf_tcp_connect("no-such-host.invalid", 80, CF_SEC(20), &c);
  TCHECK(rc == CF_ERESOLVE || rc == CF_ETIMEDOUT);
  TCHECK(c == NULL);
  cf_server *srv;
  rc = cf_server_start("no-such-host.invalid", 0, 0, echo_handler, NULL, &srv);
  TCHECK(rc == CF_ERESOLVE || rc == CF_ETIMEDOUT);
  return 0;
}

/* libuv's resolver codes share their numbers with the library's own
 * (UV_EAI_NONAME is -3008, CF_EFORKED's): they come back as CF_ERESOLVE. */
CF_TEST(a_failed_name_lookup_is_cf_eresolve) {
  (void)state;
  assert_int_equal(cf__resolve_error(UV_EAI_NONAME), CF_ERESOLVE);
  assert_int_equal(cf__resolve_error(UV_EAI_AGAIN), CF_ERESOLVE);
  assert_int_equal(cf__resolve_error(UV_EAI_NODATA), CF_ERESOLVE);
  assert_int_equal(cf__resolve_error(UV_EAI_MEMORY), CF_ENOMEM);
  assert_int_equal(cf__resolve_error(UV_EAI_CANCELED), CF_ECANCELED);
  assert_int_equal(cf__resolve_error(-ECONNREFUSED), -ECONNREFUSED);
  assert_int_equal(cf__resolve_error(0), 0);
  assert_string_equal(cf_err_name(CF_ERESOLVE), "CF_ERESOLVE");
  assert_int_equal(cf_loop_run_main(main_unknown_name, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

CF_TEST(an_address_literal_connects_without_a_lookup) {
  (void)state;
  const char *env = getenv("UV_THREADPOOL_SIZE");
  int held = env != NULL && atoi(env) > 0 ? atoi(env) : 4;
  if (held > 1024)
    held = 1024;
  assert_int_equal(uv_sem_init(&pool_hold, 0), 0);
  uv_loop_t other;
  assert_int_equal(uv_loop_init(&other), 0);
  uv_work_t *w = calloc((size_t)held, sizeof *w);
  assert_non_null(w);
  for (int i = 0; i < held; i++)
    assert_int_equal(uv_queue_work(&other, &w[i], hold_work, held_done), 0);
  int rc = cf_loop_run_main(main_literal, NULL, test_loop_opts(NULL), NULL);
  for (int i = 0; i < held; i++) /* released whatever happened */
    uv_sem_post(&pool_hold);
  assert_int_equal(rc, 0);
  assert_int_equal(uv_run(&other, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&other), 0);
  free(w);
  uv_sem_destroy(&pool_hold);
}

CF_TEST(early_closes_silent_peers_and_refusals_are_errors_not_hangs) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_failures, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
  cf_stream *c;
  assert_int_equal(cf_tcp_connect("127.0.0.1", 80, 0, &c), CF_ENOTTASK);
}

/* Reads everything, checks the pattern, answers with the byte count. */
static int count_handler(cf_stream *s, void *arg) {
  (void)arg;
  static char buf[200000];
  uint64_t total = 0;
  int bad = 0;
  for (;;) {
    ssize_t n = cf_stream_read(s, buf, sizeof buf, CF_SEC(60));
    if (n < 0)
      return (int)n;
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != (char)((total + (uint64_t)i) % 251))
        bad++;
    total += (uint64_t)n;
  }
  TCHECK(bad == 0);
  return cf_stream_write(s, &total, sizeof total, CF_SEC(60));
}

static int main_big(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_server *srv;
  TCHECK(cf_server_start("::1", 0, 0, count_handler, NULL, &srv) == 0 ||
         cf_server_start("127.0.0.1", 0, 0, count_handler, NULL, &srv) == 0);
  cf_stream *c;
  int port = cf_server_get_port(srv);
  if (cf_tcp_connect("::1", port, CF_SEC(30), &c) != 0)
    TCHECK(cf_tcp_connect("127.0.0.1", port, CF_SEC(30), &c) == 0);
  size_t total = (size_t)64 << 20;
  size_t chunk = 1 << 20;
  char *buf = malloc(chunk);
  for (size_t off = 0; off < total; off += chunk) {
    for (size_t i = 0; i < chunk; i++)
      buf[i] = (char)((off + i) % 251);
    /* Each write waits while 256 KiB are queued: back-pressure. */
    TCHECK(cf_stream_write(c, buf, chunk, CF_SEC(60)) == 0);
  }
  free(buf);
  TCHECK(cf_stream_drain(c, CF_SEC(60)) == 0);
  TCHECK(cf_stream_shutdown(c, CF_SEC(60)) == 0);
  uint64_t echoed = 0;
  TCHECK(cf_stream_read_exactly(c, &echoed, sizeof echoed, CF_SEC(60),
                                NULL) == 0);
  TCHECK(echoed == total);
  cf_stream_close(c);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  return 0;
}

CF_TEST(sixty_four_mib_cross_in_partial_reads_and_writes) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_big, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

typedef struct many {
  int port;
  int ok;
} many;

static int one_client(void *arg, cf_value *result) {
  (void)result;
  many *m = arg;
  cf_stream *c;
  int rc = cf_tcp_connect("127.0.0.1", m->port, CF_SEC(60), &c);
  if (rc != 0)
    return rc;
  char msg[32], got[32];
  int n = snprintf(msg, sizeof msg, "hello %p\n", (void *)c);
  rc = cf_stream_write(c, msg, (size_t)n, CF_SEC(60));
  ssize_t r = rc == 0 ? cf_stream_read_until(c, "\n", 1, got, sizeof got,
                                             CF_SEC(60))
                      : rc;
  if (r == n && memcmp(got, msg, (size_t)n) == 0)
    m->ok++;
  cf_stream_close(c);
  return r == n ? 0 : (int)r;
}

static int main_many(void *arg, cf_value *result) {
  (void)result;
  long n = (long)(intptr_t)arg;
  static many m;
  m.ok = 0;
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 4096, echo_handler, NULL, &srv) ==
         0);
  m.port = cf_server_get_port(srv);
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  for (long i = 0; i < n; i++)
    TCHECK(cf_loop_spawn(here(), one_client, &m, &fs[i]) == 0);
  TCHECK(cf_gather(fs, (size_t)n, CF_GATHER_RETURN_ERRORS, CF_FOREVER) == 0);
  int failed = 0;
  for (long i = 0; i < n; i++) {
    if (cf_future_get_error(fs[i]).code != 0)
      failed++;
    cf_future_unref(fs[i]);
  }
  free(fs);
  TCHECK(failed == 0);
  TCHECK(m.ok == n);
  TCHECK(cf_server_get_accepted(srv) == (uint64_t)n);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  return 0;
}

CF_TEST(a_thousand_connections_at_once_on_one_thread) {
  (void)state;
  assert_int_equal(cf_raise_fd_limit(NULL), 0);
  long n = scaled(1000);
  assert_int_equal(cf_loop_run_main(main_many, (void *)(intptr_t)n,
                                    test_loop_opts(NULL), NULL),
                   0);
}


typedef struct wave {
  int port;
  int ok, failed, settled;
  cf_event *release; /* served clients hold their connection until set */
} wave;

static int wave_client(void *arg, cf_value *result) {
  (void)result;
  wave *w = arg;
  cf_stream *c;
  int rc = cf_tcp_connect("127.0.0.1", w->port, CF_SEC(30), &c);
  if (rc == 0) {
    char got[8];
    rc = cf_stream_write(c, "ping\n", 5, CF_SEC(30));
    if (rc == 0) {
      ssize_t r = cf_stream_read_until(c, "\n", 1, got, sizeof got,
                                       CF_SEC(30));
      rc = r == 5 ? 0 : r < 0 ? (int)r : CF_EEOF;
    }
  }
  if (rc == 0)
    w->ok++;
  else
    w->failed++;
  w->settled++;
  if (rc == 0) { /* served: keep the descriptors in use */
    cf_event_wait(w->release, CF_SEC(60));
    cf_stream_close(c);
  } else if (c != NULL) {
    cf_stream_close(c);
  }
  return 0;
}

/* Clients one after the other, each held open once served, until n have
 * settled: the descriptors run out part-way. */
static void run_wave(wave *w, int n) {
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  TCHECK(fs != NULL && cf_event_new(&w->release) == 0);
  if (fs == NULL)
    return;
  for (int i = 0; i < n; i++) {
    TCHECK(cf_loop_spawn(here(), wave_client, w, &fs[i]) == 0);
    while (w->settled < i + 1)
      TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  }
  cf_event_set(w->release);
  TCHECK(cf_gather(fs, (size_t)n, 0, CF_FOREVER) == 0);
  for (int i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  cf_event_free(w->release);
}

static int main_emfile(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_server *srv;
  TCHECK(cf_server_start("127.0.0.1", 0, 0, echo_handler, NULL, &srv) == 0);
  /* Few descriptors: each served client holds two, so they run out. */
  struct rlimit saved, low;
  TCHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  low = saved;
  low.rlim_cur = 64;
  TCHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
  /* Static, not on this task's stack: the clients use them while this
   * task is suspended (with shared stacks its stack is elsewhere then). */
  static wave big, after;
  memset(&big, 0, sizeof big);
  memset(&after, 0, sizeof after);
  big.port = cf_server_get_port(srv);
  run_wave(&big, 60);
  TCHECK(big.ok + big.failed == 60); /* every client ended */
  TCHECK(big.ok > 10);               /* served while descriptors lasted */
  TCHECK(big.failed > 0);            /* the rest hit the limit */
  /* The server still serves once descriptors are free again. */
  after.port = big.port;
  run_wave(&after, 10);
  TCHECK(after.ok == 10);
  TCHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  TCHECK(cf_server_stop(srv, CF_SEC(30)) == 0);
  return 0;
}

CF_TEST(running_out_of_descriptors_fails_those_connections_only) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_emfile, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

CF_TEST_MAIN()
