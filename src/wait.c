/*
 * wait.c - as_completed and wait over any set of futures.
 *
 * Both attach an internal listener to each pending future. A listener's
 * notify runs under the future's stripe lock and takes the iterator's (or
 * waiter's) mutex: lock order stripe -> mu. Owners therefore never hold
 * their mu while attaching or detaching (which take the stripe lock), and
 * detach every listener before freeing the memory it lives in.
 *
 * Because cancelling a future fires its listeners like any completion,
 * futures cancelled by an executor's shutdown are yielded and counted
 * (unlike CPython, issue #87893).
 *
 * On a thread with a wait hook (a pool worker; later a coroutine) the
 * condition variable would block the thread without the hook's say, so
 * both sleep through the hook's sleep/wake pair instead: the waiter
 * publishes its token under its mutex, a listener that records a
 * relevant completion calls wake(token) (under the stripe lock and the
 * mutex: lock order stripe -> mu -> whatever wake takes), and the waiter
 * re-checks after each return of sleep. It wakes once per relevant
 * completion, never on a timer. The token is withdrawn under the mutex
 * (as_completed) or every listener is detached (wait) before the call
 * returns, so wake is never called for a waiter that has left.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf/executor.h"
#include "common.h"
#include "fork.h"
#include "fault.h"
#include "future_int.h"

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

static void *alloc_array(size_t n, size_t size) { return cf__calloc(n, size); }

/* The calling thread's hook if it can sleep on several futures. */
static const cf_wait_hook *multi_hook(void) {
  const cf_wait_hook *h = cf__wait_hook_current();
  return h != NULL && h->sleep != NULL ? h : NULL;
}

static int cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  int rc = pthread_condattr_init(&ca);
  if (rc != 0)
    return -rc;
#if !defined(__APPLE__)
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
#endif
  rc = pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
  return -rc;
}

/* Waits on cv until signalled or the deadline passes: 0 or CF_ETIMEDOUT.
 * Callers loop on their predicate. */
static int cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                           int64_t deadline) {
  if (deadline == CF_FOREVER) {
    pthread_cond_wait(cv, mu);
    return 0;
  }
  if (cf_now_ns() >= deadline)
    return CF_ETIMEDOUT;
  struct timespec ts = {(time_t)(deadline / 1000000000),
                        (long)(deadline % 1000000000)};
  pthread_cond_timedwait(cv, mu, &ts);
  return 0;
}

static size_t hash_ptr(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  return (size_t)x;
}

/* Copies the distinct futures of fs (first occurrence order) into uniq;
 * returns how many, or CF_EINVAL (NULL element) / CF_ENOMEM. */
static long dedupe(cf_future *const *fs, size_t n, cf_future **uniq) {
  size_t cap = 16;
  while (cap < 2 * n)
    cap *= 2;
  cf_future **set = alloc_array(cap, sizeof *set);
  if (set == NULL)
    return CF_ENOMEM;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    cf_future *f = fs[i];
    if (f == NULL) {
      free(set);
      return CF_EINVAL;
    }
    size_t h = hash_ptr(f) & (cap - 1);
    while (set[h] != NULL && set[h] != f)
      h = (h + 1) & (cap - 1);
    if (set[h] == NULL) {
      set[h] = f;
      uniq[m++] = f;
    }
  }
  free(set);
  return (long)m;
}

/* ---------------------------------------------------------------------- */
/* as_completed                                                            */

typedef struct ac_node {
  cf__listener l;
  cf_future *f; /* reference held until yielded; NULL after */
  struct ac_node *next_done;
  struct cf_as_completed *it;
} ac_node;

struct cf_as_completed {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ac_node *nodes;
  size_t n;           /* distinct futures */
  ac_node *done_head; /* done, not yet yielded (guarded by mu) */
  ac_node **done_tail;
  _Atomic size_t remaining; /* not yet yielded (written under mu) */
  int64_t deadline;
  bool timed_out;
  /* A hooked consumer sleeping in cf_as_completed_next (guarded by mu). */
  void *token;
  void (*wake)(void *token);
  cf_future **pending; /* n entries: the futures not yet yielded, or NULL
                          (for the hook's sleep; consumer only) */
  uint32_t fork_gen;   /* when the parent's futures were last settled */
};

static void ac_push_done(cf_as_completed *it, ac_node *node) {
  node->next_done = NULL;
  *it->done_tail = node;
  it->done_tail = &node->next_done;
}

static void ac_notify(cf__listener *l, cf_future *f) {
  (void)f;
  ac_node *node = cf__container_of(l, ac_node, l);
  cf_as_completed *it = node->it;
  pthread_mutex_lock(&it->mu);
  ac_push_done(it, node);
  if (it->token != NULL)
    it->wake(it->token);
  else
    pthread_cond_signal(&it->cv);
  pthread_mutex_unlock(&it->mu);
}

int cf_as_completed_new(cf_future *const *fs, size_t n, int64_t timeout_ns,
                        cf_as_completed **out) {
  if (out != NULL)
    *out = NULL;
  if (out == NULL || (fs == NULL && n > 0) || timeout_ns < 0)
    return CF_EINVAL;
  cf_as_completed *it = alloc_array(1, sizeof *it);
  cf_future **uniq = alloc_array(n, sizeof *uniq);
  if (it == NULL || uniq == NULL) {
    free(it);
    free(uniq);
    return CF_ENOMEM;
  }
  long m = dedupe(fs, n, uniq);
  for (long i = 0; i < m; i++)
    cf__future_orphan_check(uniq[i]); /* a fork child: settle the parent's */
  if (m >= 0) {
    it->nodes = alloc_array((size_t)m, sizeof *it->nodes);
    if (it->nodes == NULL)
      m = CF_ENOMEM;
  }
  int rc = m < 0 ? (int)m : cond_init_monotonic(&it->cv);
  if (rc != 0) {
    free(it->nodes);
    free(it);
    free(uniq);
    return rc;
  }
  pthread_mutex_init(&it->mu, NULL);
  it->n = (size_t)m;
  atomic_init(&it->remaining, it->n);
  it->done_tail = &it->done_head;
  it->deadline = cf_deadline_after(timeout_ns);
  /* Done futures first, in input order; then attach to the others. */
  for (size_t i = 0; i < it->n; i++) {
    ac_node *node = &it->nodes[i];
    node->f = cf_future_ref(uniq[i]);
    node->it = it;
    node->l.notify = ac_notify;
    if (cf_future_done(node->f)) {
      pthread_mutex_lock(&it->mu);
      ac_push_done(it, node);
      pthread_mutex_unlock(&it->mu);
      node->l.notify = NULL; /* marks "never attached" */
    }
  }
  for (size_t i = 0; i < it->n; i++) {
    ac_node *node = &it->nodes[i];
    if (node->l.notify != NULL && cf__future_listen(node->f, &node->l) == 1) {
      pthread_mutex_lock(&it->mu);
      ac_push_done(it, node);
      pthread_mutex_unlock(&it->mu);
    }
  }
  it->pending = uniq; /* for hooked sleeps; entries cleared as yielded */
  it->fork_gen = cf__fork_generation();
  *out = it;
  return 0;
}

int cf_as_completed_next(cf_as_completed *it, cf_future **out) {
  if (out != NULL)
    *out = NULL;
  if (it == NULL || out == NULL)
    return CF_EINVAL;
  int rc;
  if (CF__UNLIKELY(it->fork_gen != cf__fork_generation())) {
    /* Used in a fork child: the parent's executors run nothing here. */
    it->fork_gen = cf__fork_generation();
    for (size_t i = 0; i < it->n; i++)
      if (it->pending[i] != NULL)
        cf__future_orphan_check(it->pending[i]);
  }
  const cf_wait_hook *hook = multi_hook();
  void *token = hook != NULL ? hook->waiter(hook->ctx) : NULL;
  pthread_mutex_lock(&it->mu);
  for (;;) {
    if (it->timed_out) {
      rc = CF_ETIMEDOUT;
      break;
    }
    if (it->done_head != NULL) {
      ac_node *node = it->done_head;
      it->done_head = node->next_done;
      if (it->done_head == NULL)
        it->done_tail = &it->done_head;
      *out = node->f; /* the iterator's reference moves to the caller */
      node->f = NULL;
      it->pending[node - it->nodes] = NULL;
      it->remaining--;
      rc = 1;
      break;
    }
    if (it->remaining == 0) {
      rc = 0;
      break;
    }
    if (hook != NULL) {
      it->token = token;
      it->wake = hook->wake;
      pthread_mutex_unlock(&it->mu);
      int hrc = hook->sleep(hook->ctx, token, it->pending, it->n, it->deadline);
      pthread_mutex_lock(&it->mu);
      it->token = NULL;
      if (hrc == CF_ETIMEDOUT && it->done_head == NULL) {
        it->timed_out = true;
      } else if (hrc != 0 && hrc != CF_ETIMEDOUT) {
        rc = hrc; /* the hook's own failure */
        break;
      }
    } else if (cond_wait_until(&it->cv, &it->mu, it->deadline) ==
                   CF_ETIMEDOUT &&
               it->done_head == NULL) {
      it->timed_out = true;
    }
  }
  pthread_mutex_unlock(&it->mu);
  return rc;
}

size_t cf_as_completed_get_remaining(const cf_as_completed *it) {
  if (it == NULL)
    return 0;
  return atomic_load(&it->remaining);
}

void cf_as_completed_free(cf_as_completed *it) {
  if (it == NULL)
    return;
  /* Detach first (no notify can run after), then drop references. */
  for (size_t i = 0; i < it->n; i++) {
    ac_node *node = &it->nodes[i];
    if (node->f != NULL && node->l.notify != NULL)
      cf__future_unlisten(node->f, &node->l);
  }
  for (size_t i = 0; i < it->n; i++)
    cf_future_unref(it->nodes[i].f);
  pthread_cond_destroy(&it->cv);
  pthread_mutex_destroy(&it->mu);
  free(it->nodes);
  free(it->pending);
  free(it);
}

/* ---------------------------------------------------------------------- */
/* wait                                                                    */

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t done;   /* distinct futures done (guarded by mu) */
  size_t failed; /* of which finished with an error */
  cf_return_when when;
  size_t total;
  /* A hooked waiter (set before any listener is attached). */
  void *token;
  void (*wake)(void *token);
} waiter;

typedef struct wait_node {
  cf__listener l;
  waiter *w;
  bool attached;
} wait_node;

/* FINISHED with an error. Decided by the state, not the code: a task may
 * fail with any code, CF_ECANCELED and CF_EINVALSTATE included. */
static bool failed_future(const cf_future *f) {
  return cf_future_get_state(f) == CF_FINISHED &&
         cf_future_get_error(f).code != 0;
}

static bool wait_satisfied(cf_return_when when, size_t done, size_t failed,
                           size_t total);

/* Wakes the waiter only for a completion that ends its wait. */
static void wait_notify(cf__listener *l, cf_future *f) {
  wait_node *node = cf__container_of(l, wait_node, l);
  waiter *w = node->w;
  pthread_mutex_lock(&w->mu);
  w->done++;
  if (failed_future(f))
    w->failed++;
  if (wait_satisfied(w->when, w->done, w->failed, w->total)) {
    if (w->token != NULL)
      w->wake(w->token);
    else
      pthread_cond_signal(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
}

static bool wait_satisfied(cf_return_when when, size_t done, size_t failed,
                           size_t total) {
  if (done == total)
    return true;
  switch (when) {
  case CF_FIRST_COMPLETED:
    return done > 0;
  case CF_FIRST_EXCEPTION:
    return failed > 0;
  case CF_ALL_COMPLETED:
    break;
  }
  return false;
}

int cf_wait(cf_future *const *fs, size_t n, int64_t timeout_ns,
            cf_return_when return_when, cf_future **done, size_t *ndone,
            cf_future **not_done, size_t *nnot_done) {
  if (ndone != NULL)
    *ndone = 0;
  if (nnot_done != NULL)
    *nnot_done = 0;
  if ((fs == NULL && n > 0) || timeout_ns < 0 ||
      (return_when != CF_FIRST_COMPLETED && return_when != CF_FIRST_EXCEPTION &&
       return_when != CF_ALL_COMPLETED))
    return CF_EINVAL;
  if (n == 0)
    return 0;
  int64_t deadline = cf_deadline_after(timeout_ns);
  cf_future **uniq = alloc_array(n, sizeof *uniq);
  if (uniq == NULL)
    return CF_ENOMEM;
  long m = dedupe(fs, n, uniq);
  if (m < 0) {
    free(uniq);
    return (int)m;
  }
  size_t total = (size_t)m, ndone0 = 0, nfailed0 = 0;
  for (size_t i = 0; i < total; i++)
    cf__future_orphan_check(uniq[i]); /* a fork child: settle the parent's */
  for (size_t i = 0; i < total; i++) {
    if (cf_future_done(uniq[i])) {
      ndone0++;
      nfailed0 += failed_future(uniq[i]);
    }
  }
  int rc = 0;
  if (!wait_satisfied(return_when, ndone0, nfailed0, total) &&
      deadline > cf_now_ns()) {
    const cf_wait_hook *hook = multi_hook();
    void *token = hook != NULL ? hook->waiter(hook->ctx) : NULL;
    /* The waiter lives with the nodes on the heap, not on this stack: a
     * task on a loop's shared stack has its stack moved away while it
     * is suspended here, and the listeners reach the waiter meanwhile. */
    waiter *w = cf__calloc(1, sizeof *w);
    wait_node *nodes = w != NULL ? alloc_array(total, sizeof *nodes) : NULL;
    rc = nodes == NULL ? CF_ENOMEM : cond_init_monotonic(&w->cv);
    if (rc != 0) {
      free(nodes);
      free(w);
      free(uniq);
      return rc;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->done = 0;
    w->failed = 0;
    w->when = return_when;
    w->total = total;
    w->token = token;
    w->wake = hook != NULL ? hook->wake : NULL;
    /* Futures that completed before their listener went on count here;
     * the listeners count the rest (w->done starts at the pre-done). */
    size_t pre_done = 0, pre_failed = 0;
    for (size_t i = 0; i < total; i++) {
      nodes[i].w = w;
      nodes[i].l.notify = wait_notify;
      if (cf__future_listen(uniq[i], &nodes[i].l) == 0) {
        nodes[i].attached = true;
      } else {
        pre_done++;
        pre_failed += failed_future(uniq[i]);
      }
    }
    pthread_mutex_lock(&w->mu);
    w->done += pre_done;
    w->failed += pre_failed;
    while (!wait_satisfied(return_when, w->done, w->failed, total)) {
      if (hook != NULL) {
        pthread_mutex_unlock(&w->mu);
        int hrc = hook->sleep(hook->ctx, token, uniq, total, deadline);
        pthread_mutex_lock(&w->mu);
        if (hrc == CF_ETIMEDOUT)
          break;
        if (hrc != 0) {
          rc = hrc;
          break;
        }
      } else if (cond_wait_until(&w->cv, &w->mu, deadline) == CF_ETIMEDOUT) {
        break;
      }
    }
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < total; i++)
      if (nodes[i].attached)
        cf__future_unlisten(uniq[i], &nodes[i].l);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    free(nodes);
    if (rc != 0) {
      free(uniq);
      return rc;
    }
  }
  size_t a = 0, b = 0;
  for (size_t i = 0; i < total; i++) {
    if (cf_future_done(uniq[i])) {
      if (done != NULL)
        done[a] = uniq[i];
      a++;
    } else {
      if (not_done != NULL)
        not_done[b] = uniq[i];
      b++;
    }
  }
  if (ndone != NULL)
    *ndone = a;
  if (nnot_done != NULL)
    *nnot_done = b;
  free(uniq);
  return 0;
}
