/*
 * park.c - see park.h.
 *
 * Linux: FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so
 * a retry after a spurious wake-up never extends the wait.
 *
 * Fallback: 64 stripes of (mutex, condvar); a waiter re-reads the word
 * under its stripe's mutex before sleeping and a waker takes the same
 * mutex before broadcasting, so no wake-up is lost. Lock order: a stripe
 * mutex is a leaf lock.
 */
#define _GNU_SOURCE /* syscall() */
#include "park.h"

#include <limits.h>
#include <time.h>

#include "cf/time.h"
#include "fork.h"

#if defined(__linux__) && !defined(CF_NO_FUTEX)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int cf__park_wait(_Atomic uint32_t *addr, uint32_t seen, int64_t deadline_ns) {
  struct timespec ts, *tsp = NULL;
  if (deadline_ns != CF_FOREVER) {
    if (cf_now_ns() >= deadline_ns)
      return CF_ETIMEDOUT;
    ts.tv_sec = (time_t)(deadline_ns / 1000000000);
    ts.tv_nsec = (long)(deadline_ns % 1000000000);
    tsp = &ts;
  }
  long r =
      syscall(SYS_futex, (uint32_t *)(uintptr_t)addr, FUTEX_WAIT_BITSET_PRIVATE,
              seen, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
  if (r == -1 && errno == ETIMEDOUT)
    return CF_ETIMEDOUT;
  return 0; /* woken, EAGAIN (value changed) or EINTR: caller re-checks */
}

void cf__park_wake(_Atomic uint32_t *addr, int n) {
  syscall(SYS_futex, (uint32_t *)(uintptr_t)addr, FUTEX_WAKE_PRIVATE, n, NULL,
          NULL, 0);
}

void cf__park_atfork(int phase) { (void)phase; /* the kernel's business */ }

#else /* portable fallback */
#include <pthread.h>
#include <stdbool.h>

#define NSTRIPES 64

static struct stripe {
  pthread_mutex_t mu;
  pthread_cond_t cv;
} stripes[NSTRIPES];
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;

static void stripes_init(void) {
  for (int i = 0; i < NSTRIPES; i++) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
#if !defined(__APPLE__)
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
#endif
    pthread_mutex_init(&stripes[i].mu, NULL);
    pthread_cond_init(&stripes[i].cv, &ca);
    pthread_condattr_destroy(&ca);
  }
}

static struct stripe *stripe_of(const void *addr) {
  uintptr_t h = (uintptr_t)addr;
  h ^= h >> 7;
  h ^= h >> 13;
  return &stripes[h % NSTRIPES];
}

int cf__park_wait(_Atomic uint32_t *addr, uint32_t seen, int64_t deadline_ns) {
  pthread_once(&stripes_once, stripes_init);
  struct stripe *s = stripe_of(addr);
  int rc = 0;
  pthread_mutex_lock(&s->mu);
  if (atomic_load(addr) == seen) {
    if (deadline_ns == CF_FOREVER) {
      pthread_cond_wait(&s->cv, &s->mu);
    } else if (cf_now_ns() >= deadline_ns) {
      rc = CF_ETIMEDOUT;
    } else {
      struct timespec ts = {(time_t)(deadline_ns / 1000000000),
                            (long)(deadline_ns % 1000000000)};
      /* Only once the deadline has passed by the monotonic clock: where
       * the condvar cannot use it (__APPLE__), its ETIMEDOUT is early. */
      if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT &&
          cf_now_ns() >= deadline_ns)
        rc = CF_ETIMEDOUT;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void cf__park_wake(_Atomic uint32_t *addr, int n) {
  (void)n; /* stripes are shared: always broadcast */
  pthread_once(&stripes_once, stripes_init);
  struct stripe *s = stripe_of(addr);
  pthread_mutex_lock(&s->mu);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* The stripes guard no data (the words are atomic), only the sleeping
 * itself, and the parked threads of the parent do not exist in the child:
 * the child gets fresh stripes, and prepare holds none of them. */
void cf__park_atfork(int phase) {
  if (phase == CF__FORK_CHILD)
    stripes_init();
}
#endif
