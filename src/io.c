/*
 * io.c - descriptors, signals and descriptor limits on the loop
 * (cf/io.h), on libuv's uv_poll_t and uv_signal_t.
 *
 * A task's wait on a descriptor is a future: a poll handle made for the
 * wait completes it when the descriptor is ready, and the task waits on
 * it like on any future (so deadlines and cancellation come for free).
 * Handles are closed through uv_close and freed in its callback, on a
 * later turn of the loop; what they point to (their future) lives until
 * then. Signal waits are futures too, queued on the watch.
 */
#define _GNU_SOURCE
#include "cf/io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "common.h"
#include "loop_int.h"

static int to_uv_events(unsigned events) {
  return ((events & CF_READABLE) ? UV_READABLE : 0) |
         ((events & CF_WRITABLE) ? UV_WRITABLE : 0);
}

static int from_uv_events(int ev) {
  int r = ((ev & UV_READABLE) ? CF_READABLE : 0) |
          ((ev & UV_WRITABLE) ? CF_WRITABLE : 0);
  if (ev & UV_DISCONNECT)
    r |= CF_READABLE | CF_WRITABLE;
  return r;
}

/* ---------------------------------------------------------------------- */
/* Waiting for a descriptor                                               */

/* poll(2) for threads that are not tasks; retries EINTR with the time
 * left. */
static int poll_blocking(int fd, unsigned events, int64_t timeout_ns,
                         unsigned *revents) {
  int64_t deadline = cf_deadline_after(timeout_ns);
  for (;;) {
    int ms = -1;
    if (deadline != CF_FOREVER) {
      int64_t left = deadline - cf_now_ns();
      if (left < 0)
        left = 0;
      int64_t m = (left + 999999) / 1000000;
      ms = m > INT32_MAX ? INT32_MAX : (int)m;
    }
    struct pollfd p = {.fd = fd,
                       .events = (short)(((events & CF_READABLE) ? POLLIN : 0) |
                                         ((events & CF_WRITABLE) ? POLLOUT : 0))};
    int n = poll(&p, 1, ms);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0) {
      if (deadline != CF_FOREVER && cf_now_ns() < deadline)
        continue; /* woke early (rounding): wait the rest */
      return CF_ETIMEDOUT;
    }
    if (p.revents & POLLNVAL)
      return -EBADF;
    unsigned r = ((p.revents & POLLIN) ? CF_READABLE : 0) |
                 ((p.revents & POLLOUT) ? CF_WRITABLE : 0);
    if (p.revents & (POLLERR | POLLHUP))
      r |= CF_READABLE | CF_WRITABLE;
    if (revents != NULL)
      *revents = r & (events | CF_READABLE | CF_WRITABLE);
    return 0;
  }
}

typedef struct fd_wait {
  uv_poll_t poll;
  cf_future *ready;
  int status;
  int revents;
} fd_wait;

static void on_wait_ready(uv_poll_t *h, int status, int events) {
  fd_wait *w = h->data;
  w->status = status;
  w->revents = events;
  uv_poll_stop(h);
  cf_future_set_result(w->ready, NULL); /* posts the waiting task */
}

static void on_wait_closed(uv_handle_t *h) {
  fd_wait *w = h->data;
  cf_future_unref(w->ready);
  free(w);
}

int cf_wait_fd(int fd, unsigned events, int64_t timeout_ns,
               unsigned *revents) {
  if (revents != NULL)
    *revents = 0;
  if (fd < 0 || timeout_ns < 0 ||
      (events & (CF_READABLE | CF_WRITABLE)) == 0 ||
      (events & ~(unsigned)(CF_READABLE | CF_WRITABLE)) != 0)
    return CF_EINVAL;
  cf_loop *L = cf_loop_current();
  if (L == NULL || cf_task_current() == NULL)
    return poll_blocking(fd, events, timeout_ns, revents);
  fd_wait *w = cf__calloc(1, sizeof *w);
  if (w == NULL)
    return CF_ENOMEM;
  if (cf_future_new(&w->ready) != 0) {
    free(w);
    return CF_ENOMEM;
  }
  /* libuv's poll makes the descriptor non-blocking (for good: the flag
   * is the open file's, shared with whoever else uses it): a blocking
   * one is made blocking again once the wait is over. */
  int flags = fcntl(fd, F_GETFL);
  int rc = uv_poll_init(cf__loop_uv(L), &w->poll, fd);
  if (rc != 0) { /* not registered: nothing to close, nothing changed */
    cf_future_unref(w->ready);
    free(w);
    return rc; /* libuv's codes are -errno */
  }
  w->poll.data = w;
  rc = uv_poll_start(&w->poll, to_uv_events(events), on_wait_ready);
  if (rc == 0)
    rc = cf_future_wait(w->ready, timeout_ns);
  if (!cf_future_done(w->ready))
    uv_poll_stop(&w->poll);
  int status = w->status;
  int ev = w->revents;
  uv_close((uv_handle_t *)&w->poll, on_wait_closed);
  int now = flags >= 0 && !(flags & O_NONBLOCK) ? fcntl(fd, F_GETFL) : -1;
  if (now >= 0 && (now & O_NONBLOCK)) /* only that flag, as it was */
    fcntl(fd, F_SETFL, now & ~O_NONBLOCK);
  if (rc != 0)
    return rc;
  if (status < 0)
    return status;
  if (revents != NULL)
    *revents = (unsigned)from_uv_events(ev);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Watchers                                                               */

struct cf_fd_watch {
  uv_poll_t poll;
  cf_loop *loop;
  cf_fd_fn cb;
  void *arg;
  int fd;
};

static void on_watch(uv_poll_t *h, int status, int events) {
  cf_fd_watch *w = h->data;
  w->cb(w->arg, w->fd, status < 0 ? status : from_uv_events(events));
}

static void on_handle_closed_free(uv_handle_t *h) { free(h->data); }

int cf_fd_watch_start(cf_loop *loop, int fd, unsigned events, cf_fd_fn cb,
                      void *arg, cf_fd_watch **out) {
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || fd < 0 || cb == NULL || out == NULL ||
      (events & ~(unsigned)(CF_READABLE | CF_WRITABLE)) != 0)
    return CF_EINVAL;
  if (!cf__loop_on_thread(loop))
    return CF_EWRONGTHREAD;
  cf_fd_watch *w = cf__calloc(1, sizeof *w);
  if (w == NULL)
    return CF_ENOMEM;
  int rc = uv_poll_init(cf__loop_uv(loop), &w->poll, fd);
  if (rc != 0) {
    free(w);
    return rc;
  }
  w->poll.data = w;
  w->loop = loop;
  w->cb = cb;
  w->arg = arg;
  w->fd = fd;
  if (events != 0 &&
      (rc = uv_poll_start(&w->poll, to_uv_events(events), on_watch)) != 0) {
    uv_close((uv_handle_t *)&w->poll, on_handle_closed_free);
    return rc;
  }
  *out = w;
  return 0;
}

int cf_fd_watch_update(cf_fd_watch *w, unsigned events) {
  if (w == NULL || (events & ~(unsigned)(CF_READABLE | CF_WRITABLE)) != 0)
    return CF_EINVAL;
  if (!cf__loop_on_thread(w->loop))
    return CF_EWRONGTHREAD;
  if (events == 0)
    return uv_poll_stop(&w->poll);
  return uv_poll_start(&w->poll, to_uv_events(events), on_watch);
}

void cf_fd_watch_free(cf_fd_watch *w) {
  if (w == NULL)
    return;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, on_handle_closed_free);
}

/* ---------------------------------------------------------------------- */
/* Signals                                                                */

typedef struct sig_waiter {
  struct sig_waiter *next;
  cf_future *f;
} sig_waiter;

struct cf_signal_watch {
  uv_signal_t sig;
  bool counted;    /* in its thread's sig_watches[signum] */
  pthread_t owner; /* that thread */
  cf_loop *loop;
  cf_signal_fn cb;
  void *arg;
  int signum;
  uint64_t count;    /* deliveries */
  uint64_t consumed; /* deliveries handed to a waiter */
  sig_waiter *head, **tail;
};

/* A thread that watches a signal must not block it: a program started
 * with the signal blocked (some supervisors and CI runners block SIGUSR1
 * or SIGINT for their children, and the mask is inherited) would never see
 * it, and a task waiting for it would wait forever. The first watch of a
 * signal on a thread unblocks it there; the last one to go blocks it again
 * if it was blocked before. Per thread: a loop's watches live on its
 * thread. */
/* Compact (counts, and a bit per signal for "was blocked"): the
 * library's thread-locals take glibc's static TLS reserve when it is
 * dlopen'ed (initial-exec, CMakeLists.txt), so they stay small. */
#define SIG_WORDS ((NSIG + 63) / 64)
static _Thread_local uint32_t sig_watches[NSIG];
static _Thread_local uint64_t sig_was_blocked[SIG_WORDS];

static void sig_watches_add(int signum) {
  if (sig_watches[signum]++ > 0)
    return;
  sigset_t cur, one;
  sigemptyset(&one);
  sigaddset(&one, signum);
  uint64_t bit = (uint64_t)1 << (signum % 64);
  if (pthread_sigmask(SIG_UNBLOCK, &one, &cur) == 0 &&
      sigismember(&cur, signum) == 1)
    sig_was_blocked[signum / 64] |= bit;
  else
    sig_was_blocked[signum / 64] &= ~bit;
}

static void sig_watches_remove(int signum) {
  uint64_t bit = (uint64_t)1 << (signum % 64);
  if (sig_watches[signum] == 0 || --sig_watches[signum] > 0 ||
      !(sig_was_blocked[signum / 64] & bit))
    return;
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, signum);
  (void)pthread_sigmask(SIG_BLOCK, &one, NULL);
  sig_was_blocked[signum / 64] &= ~bit;
}

static void on_signal(uv_signal_t *h, int signum) {
  cf_signal_watch *w = h->data;
  w->count++;
  if (w->head != NULL) { /* the oldest waiter takes this delivery */
    sig_waiter *sw = w->head;
    w->head = sw->next;
    if (w->head == NULL)
      w->tail = &w->head;
    w->consumed++;
    cf_future_set_result(sw->f, NULL);
    cf_future_unref(sw->f); /* the queue's reference */
    free(sw);
  }
  if (w->cb != NULL)
    w->cb(w->arg, signum);
}

int cf_signal_watch_start(cf_loop *loop, int signum, cf_signal_fn cb,
                          void *arg, cf_signal_watch **out) {
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || out == NULL || signum <= 0 || signum >= NSIG ||
      signum == SIGKILL || signum == SIGSTOP)
    return CF_EINVAL;
  if (!cf__loop_on_thread(loop))
    return CF_EWRONGTHREAD;
  cf_signal_watch *w = cf__calloc(1, sizeof *w);
  if (w == NULL)
    return CF_ENOMEM;
  int rc = uv_signal_init(cf__loop_uv(loop), &w->sig);
  if (rc != 0) {
    free(w);
    return rc;
  }
  w->sig.data = w;
  w->loop = loop;
  w->cb = cb;
  w->arg = arg;
  w->signum = signum;
  w->tail = &w->head;
  if ((rc = uv_signal_start(&w->sig, on_signal, signum)) != 0) {
    uv_close((uv_handle_t *)&w->sig, on_handle_closed_free);
    return rc;
  }
  /* After libuv's handler is in: a delivery that was held back by the
   * mask is handled, not acted on by the default disposition. */
  sig_watches_add(signum);
  w->counted = true;
  w->owner = pthread_self();
  *out = w;
  return 0;
}

int cf_signal_wait(cf_signal_watch *w, int64_t timeout_ns) {
  if (w == NULL || timeout_ns < 0)
    return CF_EINVAL;
  if (cf_task_current() == NULL || cf_loop_current() != w->loop)
    return CF_ENOTTASK;
  if (w->count > w->consumed) {
    w->consumed++;
    return 0;
  }
  sig_waiter *sw = cf__calloc(1, sizeof *sw);
  if (sw == NULL)
    return CF_ENOMEM;
  if (cf_future_new(&sw->f) != 0) {
    free(sw);
    return CF_ENOMEM;
  }
  cf_future *f = cf_future_ref(sw->f); /* ours; the queue holds one too */
  *w->tail = sw;
  w->tail = &sw->next;
  int rc = cf_future_wait(f, timeout_ns);
  if (!cf_future_done(f)) { /* timed out or cancelled: leave the queue */
    for (sig_waiter **p = &w->head; *p != NULL; p = &(*p)->next) {
      if (*p == sw) {
        *p = sw->next;
        if (w->tail == &sw->next)
          w->tail = p;
        cf_future_unref(sw->f);
        free(sw);
        break;
      }
    }
  } else if (rc == 0) {
    rc = cf_future_get_error(f).code; /* CF_ECANCELED if the watch went */
  }
  cf_future_unref(f);
  return rc;
}

uint64_t cf_signal_watch_get_count(const cf_signal_watch *w) {
  return w != NULL ? w->count : 0;
}

void cf_signal_watch_free(cf_signal_watch *w) {
  if (w == NULL)
    return;
  /* Blocked again (if it was) before libuv restores the default action:
   * a delivery in between stays pending instead of taking that action.
   * Only on the thread that unblocked it (a loop that moved to another
   * thread leaves the signal unblocked on the first one; should that
   * thread have ended and a new one got its id, the new one's count may
   * re-block the signal early: a rare misuse, left documented here). */
  if (w->counted && pthread_equal(w->owner, pthread_self()))
    sig_watches_remove(w->signum);
  uv_signal_stop(&w->sig);
  while (w->head != NULL) {
    sig_waiter *sw = w->head;
    w->head = sw->next;
    cf_future_set_error(sw->f, CF_ECANCELED, "the signal watch was freed");
    cf_future_unref(sw->f);
    free(sw);
  }
  uv_close((uv_handle_t *)&w->sig, on_handle_closed_free);
}

/* ---------------------------------------------------------------------- */

int cf_raise_fd_limit(uint64_t *limit) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -errno;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      return -errno;
  }
  if (limit != NULL)
    *limit = (uint64_t)rl.rlim_cur;
  return 0;
}
