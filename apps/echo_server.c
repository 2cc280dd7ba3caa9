/*
 * echo_server - echoes whatever each connection sends, one task per
 * connection on one thread, until SIGINT or SIGTERM.
 *
 *   echo_server [--port P] [--bind ADDR] [--quiet] [--shared-stack]
 *
 * --shared-stack runs the connection tasks on the loop's shared stack
 * (a few hundred bytes of saved frames per idle connection instead of a
 * stack's pages: the handler waits with cf_stream_wait_readable and keeps
 * its buffer only while it echoes).
 * --port 0 (the default) picks a free port; the port is printed either
 * way: "echo_server: listening on ADDR port P". On Ctrl-C it stops
 * accepting, gives running connections 5 s to finish, and prints how many
 * it served.
 */
#include <cf/cfutures.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "args.h"

typedef struct config {
  const char *bind;
  int port;
  bool quiet;
  bool shared_stack;
} config;

/* Echoes what is buffered: > 0 bytes echoed, 0 at end of stream, or a
 * negative code. Its buffer lives only while it runs (not inlined into
 * the waiting loop below): with --shared-stack a waiting connection keeps
 * its frames, and an idle one then keeps no buffer. The write waits only
 * under back-pressure. */
static __attribute__((noinline)) ssize_t echo_buffered(cf_stream *s) {
  char buf[4096];
  ssize_t n = cf_stream_read(s, buf, sizeof buf, 0);
  if (n > 0) {
    int rc = cf_stream_write(s, buf, (size_t)n, CF_SEC(60));
    if (rc != 0)
      return rc;
  }
  return n;
}

static int echo(cf_stream *s, void *arg) {
  (void)arg;
  for (;;) {
    int rc = cf_stream_wait_readable(s, CF_FOREVER);
    ssize_t n = rc != 0 ? rc : echo_buffered(s);
    if (n <= 0)
      return n == 0 || n == CF_ECANCELED ? 0 : (int)n;
  }
}

static void on_stop_signal(void *arg, int signum) {
  (void)signum;
  cf_event_set(arg);
}

static int serve(void *arg, cf_value *result) {
  (void)result;
  config *c = arg;
  cf_raise_fd_limit(NULL);
  /* Whichever of SIGINT and SIGTERM comes first sets the event; watched
   * before the port is printed, so a script may stop the server at once. */
  cf_event *stop;
  cf_signal_watch *intr, *term;
  if (cf_event_new(&stop) != 0 ||
      cf_signal_watch_start(cf_loop_current(), SIGINT, on_stop_signal, stop,
                            &intr) != 0 ||
      cf_signal_watch_start(cf_loop_current(), SIGTERM, on_stop_signal, stop,
                            &term) != 0)
    return cf_raise(CF_ENOMEM, "cannot watch SIGINT and SIGTERM");
  cf_server *srv;
  int rc = cf_server_start(c->bind, c->port, 4096, echo, NULL, &srv);
  if (rc != 0)
    return cf_raise(rc, "cannot listen on %s port %d: %s", c->bind, c->port,
                    cf_strerror(rc));
  printf("echo_server: listening on %s port %d\n", c->bind,
         cf_server_get_port(srv));
  fflush(stdout);
  cf_event_wait(stop, CF_FOREVER);
  uint64_t served = cf_server_get_accepted(srv);
  rc = cf_server_stop(srv, CF_SEC(5));
  cf_signal_watch_free(intr);
  cf_signal_watch_free(term);
  cf_event_free(stop);
  if (!c->quiet)
    printf("echo_server: stopped after %llu connections%s\n",
           (unsigned long long)served,
           rc == CF_ETIMEDOUT ? " (some were cancelled)" : "");
  return 0;
}

int main(int argc, char **argv) {
  config c = {.bind = "127.0.0.1", .port = 0};
  for (int i = 1; i < argc; i++) {
    long v;
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc &&
        arg_long(argv[i + 1], 0, 65535, &v)) {
      c.port = (int)v;
      i++;
    } else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc)
      c.bind = argv[++i];
    else if (strcmp(argv[i], "--quiet") == 0)
      c.quiet = true;
    else if (strcmp(argv[i], "--shared-stack") == 0)
      c.shared_stack = true;
    else {
      fprintf(stderr, "usage: echo_server [--port P] [--bind ADDR] [--quiet] "
                      "[--shared-stack]\n");
      return 2;
    }
  }
  cf_loop_opts o = {.shared_stack = c.shared_stack};
  cf_future *f;
  int rc = cf_loop_run_main(serve, &c, &o, &f);
  if (rc != 0)
    fprintf(stderr, "echo_server: %s\n", cf_future_get_error(f).message);
  cf_future_unref(f);
  return rc == 0 ? 0 : 1;
}
