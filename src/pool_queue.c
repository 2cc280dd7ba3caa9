/*
 * pool_queue.c - the thread pool's queue: the FIFO of segments, each
 * worker's slots, taking work (batches, stealing) and settling work the
 * pool will not run. See pool.h for the locks.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

/* Removes up to max items into out[]; returns how many. */
static size_t fifo_take_locked(pool *p, cf_future **out, size_t max) {
  size_t n = 0;
  while (n < max && p->qfirst != NULL) {
    qseg *s = p->qfirst;
    size_t avail = s->tail - s->head, k = max - n < avail ? max - n : avail;
    /* Start all the misses at once: the producer wrote these lines. */
    for (size_t i = 0; i < k; i += 8)
      __builtin_prefetch(&s->items[s->head + i]);
    for (size_t i = 0; i < k; i++)
      out[n + i] = s->items[s->head + i];
    n += k;
    s->head += (uint32_t)k;
    if (s->head == s->tail) {
      if (s->next == NULL) {
        s->head = s->tail = 0; /* empty: keep it for the producer */
        break;
      }
      p->qfirst = s->next;
      if (p->spare == NULL)
        p->spare = s;
      else
        free(s);
    }
  }
  set_qlen_locked(p, p->qlen - n);
  return n;
}

qseg *fifo_detach_locked(pool *p) {
  qseg *chain = p->qfirst;
  p->qfirst = p->qlast = NULL;
  set_qlen_locked(p, 0);
  return chain;
}

void settle(pool *p, cf_future *f, int err, const char *msg) {
  char *m = msg != NULL ? cf__asprintf("%s", msg) : NULL;
  _Atomic uint64_t *counter =
      err == CF_ECANCELED ? &p->settled_cancelled : &p->settled_failed;
  if (cf__future_settle(f, err, m, &p->sink, counter) != 0 &&
      !(atomic_load(&f->state) & CF__FL_INLINE)) {
    /* Cancelled by its owner while queued (an inline run was counted by
     * the worker that ran it). */
    atomic_fetch_add(&p->settled_cancelled, 1);
  }
  cf_future_unref(f);
}

void settle_chain(pool *p, qseg *chain, int err, const char *msg) {
  while (chain != NULL) {
    for (uint32_t i = chain->head; i < chain->tail; i++)
      settle(p, chain->items[i], err, msg);
    qseg *next = chain->next;
    free(chain);
    chain = next;
  }
}

void settle_everything(pool *p, int err, const char *msg) {
  cf__spin_lock(&p->qlock);
  qseg *chain = fifo_detach_locked(p);
  cf__spin_unlock(&p->qlock);
  settle_chain(p, chain, err, msg);
  wake_space_waiters(p);
  int nw = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < nw; i++) {
    for (int j = 0; j < BATCH_MAX; j++) {
      cf_future *f = atomic_exchange(&p->workers[i].slots[j], NULL);
      if (f != NULL)
        settle(p, f, err, msg);
    }
  }
}

bool anything_stealable(pool *p) {
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < BATCH_MAX; j++)
      if (atomic_load_explicit(&p->workers[i].slots[j], memory_order_relaxed) !=
          NULL)
        return true;
  return false;
}

/* Moves a batch taken from the FIFO into w's (empty) slots: the first
 * task is returned, the others are slotted for w to run next. */
static cf_future *slot_batch(worker *w, cf_future **batch, size_t k) {
  for (size_t i = 1; i < k; i++)
    /* Release: a stealer's exchange must see the task's fields. */
    atomic_store_explicit(&w->slots[i - 1], batch[i], memory_order_release);
  w->slot_pos = 0;
  w->slot_end = (int)k - 1;
  return batch[0];
}

/* Takes a task from another worker's slots (and runs it rather than
 * slotting it, so stolen work never hides from other workers). Slots
 * only ever hold short tasks (see next_task), so their order matters
 * little; taking the youngest keeps the thief off the cache line the
 * owner is working through. */
static cf_future *steal(worker *w) {
  pool *p = w->p;
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 1; i < n; i++) {
    worker *v = &p->workers[(w->index + i) % n];
    for (int j = BATCH_MAX - 1; j >= 0; j--) {
      if (atomic_load_explicit(&v->slots[j], memory_order_relaxed) == NULL)
        continue;
      cf_future *f =
          atomic_exchange_explicit(&v->slots[j], NULL, memory_order_acquire);
      if (f != NULL)
        return f;
    }
  }
  return NULL;
}

/* The next task for worker w: its own slots, then the FIFO, then the
 * youngest task in another worker's slots (steal). NULL if there is none.
 *
 * Batching. Taking one task per lock costs a cache-line transfer per task
 * between the submitter and the workers (~220 ns here), which dominates
 * short tasks; so a worker whose recent tasks were short (measured: the
 * time between its FIFO takes over the tasks taken) takes up to
 * BATCH_MAX at once, once every worker is started. A worker running
 * longer tasks takes one at a time, which costs nothing noticeable and
 * keeps Python's behaviour exactly: tasks start in submission order, and
 * none waits in a busy worker's slots. No batching while the pool is
 * still starting workers (the worker being started must find the task it
 * was started for). The one compromise: a long task that arrives inside a
 * batch of short ones delays the rest of that batch until the FIFO is
 * empty (then other workers steal it) or the long task ends. */
cf_future *next_task(worker *w) {
  pool *p = w->p;
  while (w->slot_pos < w->slot_end) {
    cf_future *f = atomic_exchange_explicit(&w->slots[w->slot_pos++], NULL,
                                            memory_order_acquire);
    if (f != NULL)
      return f;
  }
  if (atomic_load_explicit(&p->qlen_pub, memory_order_relaxed) > 0) {
    int64_t now = cf_now_ns();
    if (w->take_n > 0)
      w->short_tasks = now - w->take_ns < (int64_t)w->take_n * SHORT_TASK_NS;
    size_t max = w->short_tasks && atomic_load_explicit(&p->nworkers,
                                                        memory_order_relaxed) ==
                                       p->max_workers
                     ? BATCH_MAX
                     : 1;
    cf_future *batch[BATCH_MAX];
    cf__spin_lock(&p->qlock);
    size_t k = fifo_take_locked(p, batch, max);
    worker *wake = NULL;
    if (k > 0) {
      slot_batch(w, batch, k);
      /* Work is left (queued, or in our slots): let another worker in.
       * Under the lock, so a parking worker either is seen here or sees
       * our slots when it re-checks. */
      if (p->qlen > 0 || k > 1)
        wake = claim_idle_locked(p);
    }
    cf__spin_unlock(&p->qlock);
    if (k > 0) {
      w->take_ns = now;
      w->take_n = (int)k;
      wake_claimed(wake);
      if (p->max_queued != 0)
        wake_space_waiters(p);
      for (size_t i = 0; i < k && i < 4; i++)
        __builtin_prefetch(batch[i], 1);
      return batch[0];
    }
  }
  w->take_n = 0; /* the FIFO ran dry: the next gap is idle time */
  return steal(w);
}
