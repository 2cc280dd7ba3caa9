/*
 * sync.c - semaphores, locks and events on futures.
 *
 * A waiter queues a node with a future of its own and waits on that
 * future, which suspends a task (through the loop's wait hook) or blocks
 * a thread; whoever hands it the permit (or sets the event) marks the node
 * granted under the object's mutex and completes the future after
 * unlocking. The mutex is never held across a wait. A waiter whose wait
 * fails looks at `granted` under the mutex: not granted, it leaves the
 * queue; granted, it keeps the permit on a timeout (it got it at the
 * deadline) and passes it on when cancelled.
 */
#include "cf/sync.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cf/future.h"
#include "common.h"

typedef struct wnode {
  struct wnode *prev, *next;
  cf_future *f;
  bool granted;
} wnode;

typedef struct wqueue {
  wnode *head, *tail;
} wqueue;

static void q_push(wqueue *q, wnode *n) {
  n->next = NULL;
  n->prev = q->tail;
  if (q->tail != NULL)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
}

static void q_del(wqueue *q, wnode *n) {
  if (n->prev != NULL)
    n->prev->next = n->next;
  else
    q->head = n->next;
  if (n->next != NULL)
    n->next->prev = n->prev;
  else
    q->tail = n->prev;
}

/* Pops the first waiter, marks it granted and returns its future (a
 * reference) to complete once the mutex is released; NULL if none. */
static cf_future *q_grant_first(wqueue *q) {
  wnode *n = q->head;
  if (n == NULL)
    return NULL;
  q_del(q, n);
  n->granted = true;
  return cf_future_ref(n->f);
}

static void grant(cf_future *f) {
  if (f != NULL) {
    cf_future_set_result(f, NULL);
    cf_future_unref(f);
  }
}

/* Queues a waiter (mutex held), waits (mutex released), and tells
 * whether it was granted. Returns the wait's code, or CF_ENOMEM. */
static int wait_in_queue(pthread_mutex_t *mu, wqueue *q, int64_t timeout_ns,
                         bool *granted) {
  /* On the heap, not on this stack: a task on a loop's shared stack has
   * its stack moved away while it waits, and releasers walk the queue. */
  wnode *n = cf__calloc(1, sizeof *n);
  *granted = false;
  if (n == NULL || cf_future_new(&n->f) != 0) {
    pthread_mutex_unlock(mu);
    free(n);
    return CF_ENOMEM;
  }
  q_push(q, n);
  pthread_mutex_unlock(mu);
  int rc = cf_future_wait(n->f, timeout_ns);
  pthread_mutex_lock(mu);
  if (n->granted)
    *granted = true;
  else
    q_del(q, n);
  pthread_mutex_unlock(mu);
  cf_future_unref(n->f);
  free(n);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Semaphore                                                              */

struct cf_semaphore {
  pthread_mutex_t mu;
  long value;
  wqueue q;
};

int cf_semaphore_new(long value, cf_semaphore **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  if (value < 0)
    return CF_EINVAL;
  cf_semaphore *s = cf__calloc(1, sizeof *s);
  if (s == NULL)
    return CF_ENOMEM;
  pthread_mutex_init(&s->mu, NULL);
  s->value = value;
  *out = s;
  return 0;
}

void cf_semaphore_free(cf_semaphore *s) {
  if (s == NULL)
    return;
  pthread_mutex_destroy(&s->mu);
  free(s);
}

int cf_semaphore_try_acquire(cf_semaphore *s) {
  if (s == NULL)
    return CF_EINVAL;
  pthread_mutex_lock(&s->mu);
  int rc = CF_EAGAIN;
  if (s->value > 0 && s->q.head == NULL) {
    s->value--;
    rc = 0;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int cf_semaphore_acquire(cf_semaphore *s, int64_t timeout_ns) {
  if (s == NULL || timeout_ns < 0)
    return CF_EINVAL;
  pthread_mutex_lock(&s->mu);
  if (s->value > 0 && s->q.head == NULL) {
    s->value--;
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  if (timeout_ns == 0) {
    pthread_mutex_unlock(&s->mu);
    return CF_ETIMEDOUT;
  }
  bool granted;
  int rc = wait_in_queue(&s->mu, &s->q, timeout_ns, &granted);
  if (!granted)
    return rc == 0 ? CF_ETIMEDOUT : rc;
  if (rc == CF_ECANCELED) { /* cancelled as the permit came: pass it on */
    cf_semaphore_release(s);
    return rc;
  }
  return 0; /* granted, also at the deadline */
}

int cf_semaphore_release(cf_semaphore *s) {
  if (s == NULL)
    return CF_EINVAL;
  pthread_mutex_lock(&s->mu);
  cf_future *f = q_grant_first(&s->q);
  if (f == NULL)
    s->value++;
  pthread_mutex_unlock(&s->mu);
  grant(f);
  return 0;
}

long cf_semaphore_get_value(const cf_semaphore *s) {
  if (s == NULL)
    return 0;
  cf_semaphore *m = (cf_semaphore *)(uintptr_t)s;
  pthread_mutex_lock(&m->mu);
  long v = m->value;
  pthread_mutex_unlock(&m->mu);
  return v;
}

/* ---------------------------------------------------------------------- */
/* Lock                                                                   */

struct cf_lock {
  pthread_mutex_t mu;
  bool locked;
  wqueue q;
};

int cf_lock_new(cf_lock **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  cf_lock *l = cf__calloc(1, sizeof *l);
  if (l == NULL)
    return CF_ENOMEM;
  pthread_mutex_init(&l->mu, NULL);
  *out = l;
  return 0;
}

void cf_lock_free(cf_lock *l) {
  if (l == NULL)
    return;
  pthread_mutex_destroy(&l->mu);
  free(l);
}

int cf_lock_acquire(cf_lock *l, int64_t timeout_ns) {
  if (l == NULL || timeout_ns < 0)
    return CF_EINVAL;
  pthread_mutex_lock(&l->mu);
  if (!l->locked && l->q.head == NULL) {
    l->locked = true;
    pthread_mutex_unlock(&l->mu);
    return 0;
  }
  if (timeout_ns == 0) {
    pthread_mutex_unlock(&l->mu);
    return CF_ETIMEDOUT;
  }
  bool granted;
  int rc = wait_in_queue(&l->mu, &l->q, timeout_ns, &granted);
  if (!granted)
    return rc == 0 ? CF_ETIMEDOUT : rc;
  if (rc == CF_ECANCELED) { /* handed over as it was cancelled */
    cf_lock_release(l);
    return rc;
  }
  return 0;
}

int cf_lock_release(cf_lock *l) {
  if (l == NULL)
    return CF_EINVAL;
  pthread_mutex_lock(&l->mu);
  if (!l->locked) {
    pthread_mutex_unlock(&l->mu);
    return CF_EINVALSTATE;
  }
  /* Handed straight to the first waiter: it stays locked. */
  cf_future *f = q_grant_first(&l->q);
  if (f == NULL)
    l->locked = false;
  pthread_mutex_unlock(&l->mu);
  grant(f);
  return 0;
}

bool cf_lock_locked(const cf_lock *l) {
  if (l == NULL)
    return false;
  cf_lock *m = (cf_lock *)(uintptr_t)l;
  pthread_mutex_lock(&m->mu);
  bool v = m->locked;
  pthread_mutex_unlock(&m->mu);
  return v;
}

/* ---------------------------------------------------------------------- */
/* Event                                                                  */

struct cf_event {
  pthread_mutex_t mu;
  bool set;
  wqueue q;
};

int cf_event_new(cf_event **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  cf_event *e = cf__calloc(1, sizeof *e);
  if (e == NULL)
    return CF_ENOMEM;
  pthread_mutex_init(&e->mu, NULL);
  *out = e;
  return 0;
}

void cf_event_free(cf_event *e) {
  if (e == NULL)
    return;
  pthread_mutex_destroy(&e->mu);
  free(e);
}

int cf_event_set(cf_event *e) {
  if (e == NULL)
    return CF_EINVAL;
  pthread_mutex_lock(&e->mu);
  e->set = true;
  /* Take every waiter now; complete them after unlocking. */
  wnode *all = e->q.head;
  e->q.head = e->q.tail = NULL;
  size_t n = 0;
  for (wnode *w = all; w != NULL; w = w->next)
    n++;
  cf_future *stack_fs[16];
  cf_future **fs = n <= 16 ? stack_fs : cf__malloc(n * sizeof *fs);
  size_t k = 0;
  for (wnode *w = all; w != NULL;) {
    wnode *next = w->next;
    w->granted = true;
    if (fs != NULL)
      fs[k++] = cf_future_ref(w->f);
    else
      cf_future_set_result(w->f, NULL); /* no memory: complete under mu */
    w = next;
  }
  pthread_mutex_unlock(&e->mu);
  for (size_t i = 0; i < k; i++)
    grant(fs[i]);
  if (fs != stack_fs)
    free(fs);
  return 0;
}

int cf_event_clear(cf_event *e) {
  if (e == NULL)
    return CF_EINVAL;
  pthread_mutex_lock(&e->mu);
  e->set = false;
  pthread_mutex_unlock(&e->mu);
  return 0;
}

bool cf_event_is_set(const cf_event *e) {
  if (e == NULL)
    return false;
  cf_event *m = (cf_event *)(uintptr_t)e;
  pthread_mutex_lock(&m->mu);
  bool v = m->set;
  pthread_mutex_unlock(&m->mu);
  return v;
}

int cf_event_wait(cf_event *e, int64_t timeout_ns) {
  if (e == NULL || timeout_ns < 0)
    return CF_EINVAL;
  pthread_mutex_lock(&e->mu);
  if (e->set) {
    pthread_mutex_unlock(&e->mu);
    return 0;
  }
  if (timeout_ns == 0) {
    pthread_mutex_unlock(&e->mu);
    return CF_ETIMEDOUT;
  }
  bool granted;
  int rc = wait_in_queue(&e->mu, &e->q, timeout_ns, &granted);
  if (rc == CF_ECANCELED)
    return rc; /* delivered once: never swallowed, even if it was set */
  if (granted)
    return 0;
  return rc == 0 ? CF_ETIMEDOUT : rc;
}
