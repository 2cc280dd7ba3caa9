/*
 * test_io.c - descriptors and signals on the loop (cf/io.h): waits with
 * deadlines, watchers, signals delivered while tasks wait, the limit.
 */
#include "support.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cf/io.h"

static cf_loop *here(void) { return cf_loop_current(); }

typedef struct pipe_case {
  int fds[2];
  int wait_rc;
  unsigned revents;
  int64_t waited_ns;
} pipe_case;

static int wait_readable(void *arg, cf_value *result) {
  (void)result;
  pipe_case *p = arg;
  int64_t t0 = cf_now_ns();
  p->wait_rc = cf_wait_fd(p->fds[0], CF_READABLE, CF_SEC(30), &p->revents);
  p->waited_ns = cf_now_ns() - t0;
  return 0;
}

static int write_later(void *arg, cf_value *result) {
  (void)result;
  pipe_case *p = arg;
  TCHECK(cf_sleep(CF_MSEC(10)) == 0);
  TCHECK(write(p->fds[1], "x", 1) == 1);
  return 0;
}

static int main_fd_waits(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static pipe_case p;
  TCHECK(pipe(p.fds) == 0);
  /* Readable once another task writes; the loop runs it meanwhile. */
  static cf_future *fs[2];
  TCHECK(cf_loop_spawn(here(), wait_readable, &p, &fs[0]) == 0);
  TCHECK(cf_loop_spawn(here(), write_later, &p, &fs[1]) == 0);
  TCHECK(cf_gather(fs, 2, 0, CF_FOREVER) == 0);
  TCHECK(p.wait_rc == 0 && (p.revents & CF_READABLE));
  TCHECK(p.waited_ns >= CF_MSEC(10));
  for (int i = 0; i < 2; i++)
    cf_future_unref(fs[i]);
  char c;
  TCHECK(read(p.fds[0], &c, 1) == 1);
  /* A deadline with nothing to read. */
  unsigned ev = 99;
  int64_t t0 = cf_now_ns();
  TCHECK(cf_wait_fd(p.fds[0], CF_READABLE, CF_MSEC(20), &ev) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(20));
  TCHECK(ev == 0);
  /* Writable at once. */
  TCHECK(cf_wait_fd(p.fds[1], CF_WRITABLE, CF_SEC(30), &ev) == 0);
  TCHECK(ev & CF_WRITABLE);
  /* The pipe was blocking, and still is after those waits (libuv's poll
   * makes it non-blocking while it watches); a non-blocking one stays so. */
  TCHECK(!(fcntl(p.fds[0], F_GETFL) & O_NONBLOCK));
  TCHECK(!(fcntl(p.fds[1], F_GETFL) & O_NONBLOCK));
  TCHECK(fcntl(p.fds[1], F_SETFL, fcntl(p.fds[1], F_GETFL) | O_NONBLOCK) == 0);
  TCHECK(cf_wait_fd(p.fds[1], CF_WRITABLE, CF_SEC(30), &ev) == 0);
  TCHECK(fcntl(p.fds[1], F_GETFL) & O_NONBLOCK);
  /* Two waiters of one descriptor: the second is refused. */
  static pipe_case q;
  q.fds[0] = p.fds[0];
  cf_future *w;
  TCHECK(cf_loop_spawn(here(), wait_readable, &q, &w) == 0);
  TCHECK(cf_yield() == 0); /* w is waiting now */
  TCHECK(cf_wait_fd(p.fds[0], CF_READABLE, CF_MSEC(5), &ev) == CF_EEXIST);
  /* End of file counts as readable. */
  close(p.fds[1]);
  TCHECK(cf_future_wait(w, CF_FOREVER) == 0);
  TCHECK(q.wait_rc == 0 && (q.revents & CF_READABLE));
  cf_future_unref(w);
  close(p.fds[0]);
  /* Descriptors that cannot be polled. */
  TCHECK(cf_wait_fd(p.fds[0], CF_READABLE, CF_MSEC(5), &ev) == -EBADF);
  int file = open("/proc/self/status", O_RDONLY);
  TCHECK(file >= 0);
  TCHECK(cf_wait_fd(file, CF_READABLE, CF_MSEC(5), &ev) == -EPERM);
  close(file);
  TCHECK(cf_wait_fd(-1, CF_READABLE, 0, &ev) == CF_EINVAL);
  TCHECK(cf_wait_fd(0, 0, 0, &ev) == CF_EINVAL);
  return 0;
}

CF_TEST(tasks_wait_for_descriptors_with_deadlines) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_fd_waits, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

static int wait_forever_on(void *arg, cf_value *result) {
  (void)result;
  return cf_wait_fd(*(int *)arg, CF_READABLE, CF_FOREVER, NULL);
}

static int main_fd_cancel(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static int fds[2];
  TCHECK(pipe(fds) == 0);
  cf_future *w;
  TCHECK(cf_loop_spawn(here(), wait_forever_on, &fds[0], &w) == 0);
  TCHECK(cf_yield() == 0);
  TCHECK(cf_future_cancel(w) == 0);
  TCHECK(cf_future_wait(w, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(w));
  cf_future_unref(w);
  /* The descriptor is free again: a new wait may take it. */
  TCHECK(write(fds[1], "y", 1) == 1);
  TCHECK(cf_wait_fd(fds[0], CF_READABLE, CF_SEC(30), NULL) == 0);
  close(fds[0]);
  close(fds[1]);
  return 0;
}

CF_TEST(a_task_waiting_on_a_descriptor_can_be_cancelled) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_fd_cancel, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

static void *write_after_10ms(void *p) {
  usleep(10000);
  TCHECK(write(*(int *)p, "z", 1) == 1);
  return NULL;
}

CF_TEST(outside_a_task_wait_fd_blocks_in_poll) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  unsigned ev;
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_wait_fd(fds[0], CF_READABLE, CF_MSEC(15), &ev),
                   CF_ETIMEDOUT);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(15));
  pthread_t t = spawn(write_after_10ms, &fds[1]);
  assert_int_equal(cf_wait_fd(fds[0], CF_READABLE, SOON, &ev), 0);
  assert_true(ev & CF_READABLE);
  pthread_join(t, NULL);
  close(fds[1]);
  char c;
  assert_int_equal(read(fds[0], &c, 1), 1);
  assert_int_equal(cf_wait_fd(fds[0], CF_READABLE, SOON, &ev), 0); /* EOF */
  close(fds[0]);
}

/* ---------------------------------------------------------------------- */
/* Watchers                                                               */

typedef struct watch_case {
  cf_loop *loop;
  cf_fd_watch *w;
  int fds[2];
  int bytes;
  int calls;
} watch_case;

static void on_readable(void *arg, int fd, int revents) {
  watch_case *c = arg;
  c->calls++;
  TCHECK(revents > 0 && (revents & CF_READABLE));
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n > 0)
    c->bytes += (int)n;
  if (c->bytes >= 3) {
    cf_fd_watch_free(c->w); /* from inside its own callback */
    c->w = NULL;
    cf_loop_stop(c->loop);
  }
}

static void *write_three(void *p) {
  watch_case *c = p;
  for (int i = 0; i < 3; i++) {
    usleep(2000);
    TCHECK(write(c->fds[1], "w", 1) == 1);
  }
  return NULL;
}

CF_TEST(a_watcher_calls_back_on_the_loop_while_its_descriptor_is_ready) {
  (void)state;
  watch_case c = {0};
  assert_int_equal(cf_loop_new(test_loop_opts(NULL), &c.loop), 0);
  assert_int_equal(pipe(c.fds), 0);
  assert_int_equal(cf_fd_watch_start(c.loop, c.fds[0], CF_READABLE,
                                     on_readable, &c, &c.w),
                   0);
  cf_fd_watch *dup;
  assert_int_equal(cf_fd_watch_start(c.loop, c.fds[0], CF_READABLE,
                                     on_readable, &c, &dup),
                   CF_EEXIST);
  pthread_t t = spawn(write_three, &c);
  assert_int_equal(cf_loop_run(c.loop), 0);
  pthread_join(t, NULL);
  assert_int_equal(c.bytes, 3);
  assert_true(c.calls >= 1 && c.calls <= 3);
  /* Paused and resumed, then freed. */
  assert_int_equal(cf_fd_watch_start(c.loop, c.fds[0], 0, on_readable, &c,
                                     &c.w),
                   0);
  assert_int_equal(cf_fd_watch_update(c.w, CF_READABLE), 0);
  assert_int_equal(cf_fd_watch_update(c.w, 0), 0);
  cf_fd_watch_free(c.w);
  close(c.fds[0]);
  close(c.fds[1]);
  assert_int_equal(cf_loop_free(c.loop), 0);
  assert_int_equal(cf_fd_watch_start(NULL, 0, CF_READABLE, on_readable, &c,
                                     &dup),
                   CF_EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Signals                                                                */

typedef struct sig_case {
  cf_signal_watch *w;
  _Atomic int handled; /* callbacks run (the loop's thread writes it) */
  int woken;
  pthread_t loop_thread;
} sig_case;

static void on_usr1(void *arg, int signum) {
  sig_case *s = arg;
  TCHECK(signum == SIGUSR1);
  atomic_fetch_add(&s->handled, 1);
}

static int sig_waiter(void *arg, cf_value *result) {
  (void)result;
  sig_case *s = arg;
  int rc = cf_signal_wait(s->w, CF_SEC(30));
  if (rc == 0)
    s->woken++;
  return rc;
}

/* Sends three SIGUSR1, each once the one before has been handled (the
 * kernel merges a signal that is still pending). To the loop's thread:
 * a process-directed signal may land on any thread, and ThreadSanitizer
 * defers a signal until its thread reaches an intercepted call, which a
 * thread parked elsewhere may not (a suite run hung that way). A delivery
 * not handled in SOON fails the case instead of hanging it. */
static void *send_three_usr1(void *p) {
  sig_case *s = p;
  for (int k = 0; k < 3; k++) {
    TCHECK(pthread_kill(s->loop_thread, SIGUSR1) == 0);
    int64_t until = cf_now_ns() + SOON;
    while (atomic_load(&s->handled) < k + 1 && cf_now_ns() < until)
      usleep(100);
    TCHECK(atomic_load(&s->handled) >= k + 1);
  }
  return NULL;
}

static int main_signals(void *arg, cf_value *result) {
  (void)result;
  sig_case *s = arg;
  s->loop_thread = pthread_self();
  TCHECK(cf_signal_watch_start(here(), SIGUSR1, on_usr1, s, &s->w) == 0);
  static cf_future *fs[3];
  for (int i = 0; i < 3; i++)
    TCHECK(cf_loop_spawn(here(), sig_waiter, s, &fs[i]) == 0);
  /* After a turn of the loop, all three are suspended in their waits. */
  TCHECK(cf_yield() == 0);
  pthread_t t = spawn(send_three_usr1, s);
  TCHECK(cf_gather(fs, 3, 0, CF_FOREVER) == 0);
  pthread_join(t, NULL);
  for (int i = 0; i < 3; i++)
    cf_future_unref(fs[i]);
  TCHECK(s->woken == 3);
  TCHECK(atomic_load(&s->handled) == 3);
  TCHECK(cf_signal_watch_get_count(s->w) == 3);
  /* A delivery nobody waited for is kept for the next wait. */
  TCHECK(pthread_kill(pthread_self(), SIGUSR1) == 0);
  while (atomic_load(&s->handled) < 4)
    TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(cf_signal_wait(s->w, 0) == 0);
  /* Timeouts, and waiters woken by the watch's end. */
  TCHECK(cf_signal_wait(s->w, CF_MSEC(10)) == CF_ETIMEDOUT);
  cf_future *last;
  TCHECK(cf_loop_spawn(here(), sig_waiter, s, &last) == 0);
  TCHECK(cf_yield() == 0);
  cf_signal_watch_free(s->w);
  TCHECK(cf_future_wait(last, CF_FOREVER) == 0);
  TCHECK(cf_future_get_error(last).code == CF_ECANCELED);
  cf_future_unref(last);
  return 0;
}

CF_TEST(a_signal_delivered_while_tasks_wait_wakes_one_per_delivery) {
  (void)state;
  sig_case s;
  memset(&s, 0, sizeof s);
  assert_int_equal(cf_loop_run_main(main_signals, &s, test_loop_opts(NULL),
                                    NULL),
                   0);
  /* Bad arguments; outside a task. */
  cf_loop *L;
  assert_int_equal(cf_loop_new(NULL, &L), 0);
  cf_signal_watch *w;
  assert_int_equal(cf_signal_watch_start(L, SIGKILL, NULL, NULL, &w),
                   CF_EINVAL);
  assert_int_equal(cf_signal_watch_start(L, 0, NULL, NULL, &w), CF_EINVAL);
  assert_int_equal(cf_signal_watch_start(L, SIGUSR2, NULL, NULL, &w), 0);
  assert_int_equal(cf_signal_wait(w, 0), CF_ENOTTASK);
  cf_signal_watch_free(w);
  assert_int_equal(cf_loop_free(L), 0);
}

static bool usr1_blocked(void) {
  sigset_t cur;
  TCHECK(pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0);
  return sigismember(&cur, SIGUSR1) == 1;
}

typedef struct blocked_case {
  cf_signal_watch *w;
  pthread_t loop_thread;
  bool unblocked_inside;
} blocked_case;

static void *kill_loop_thread(void *p) {
  blocked_case *b = p;
  TCHECK(pthread_kill(b->loop_thread, SIGUSR1) == 0);
  return NULL;
}

static int main_blocked(void *arg, cf_value *result) {
  (void)result;
  blocked_case *b = arg;
  b->loop_thread = pthread_self();
  /* One delivery held back by the mask before the watch exists. */
  TCHECK(pthread_kill(pthread_self(), SIGUSR1) == 0);
  TCHECK(cf_signal_watch_start(here(), SIGUSR1, NULL, NULL, &b->w) == 0);
  b->unblocked_inside = !usr1_blocked();
  TCHECK(cf_signal_wait(b->w, SOON) == 0);
  /* And one sent while the task waits. */
  pthread_t t = spawn(kill_loop_thread, b);
  TCHECK(cf_signal_wait(b->w, SOON) == 0);
  pthread_join(t, NULL);
  TCHECK(cf_signal_watch_get_count(b->w) == 2);
  cf_signal_watch_free(b->w);
  return 0;
}

/* A program may start with the signal blocked (the mask is inherited;
 * a CI run did, and every delivery was lost): the watch unblocks it on
 * the loop's thread while it exists, and the mask is back afterwards. */
CF_TEST(a_watched_signal_is_delivered_though_the_thread_blocked_it) {
  (void)state;
  sigset_t one, before;
  sigemptyset(&one);
  sigaddset(&one, SIGUSR1);
  assert_int_equal(pthread_sigmask(SIG_BLOCK, &one, &before), 0);
  blocked_case b;
  memset(&b, 0, sizeof b);
  assert_int_equal(cf_loop_run_main(main_blocked, &b, test_loop_opts(NULL),
                                    NULL),
                   0);
  assert_true(b.unblocked_inside);
  assert_true(usr1_blocked());
  assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, NULL), 0);
}

CF_TEST(the_descriptor_limit_is_raised_to_the_hard_limit) {
  (void)state;
  struct rlimit rl;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  uint64_t lim = 0;
  assert_int_equal(cf_raise_fd_limit(&lim), 0);
  assert_true(lim == (uint64_t)rl.rlim_max);
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  assert_true((uint64_t)rl.rlim_cur == lim);
  assert_int_equal(cf_raise_fd_limit(NULL), 0);
}

CF_TEST_MAIN()
