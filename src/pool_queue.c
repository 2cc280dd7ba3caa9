/*
 * pool_queue.c - the thread pool's queue: the FIFO of segments, each
 * worker's slots, taking work (batches, stealing) and settling work the
 * pool will not run. See pool.h for the locks.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

/* A segment the head moved past: kept as the spare (the producer's next
 * segment), or, if there is one already, chained on *done for the caller
 * to free once it released hlock. */
static void retire_locked(pool *p, qseg *s, qseg **done) {
  qseg *old = atomic_exchange_explicit(&p->spare, s, memory_order_acq_rel);
  if (old != NULL) {
    old->next = *done;
    *done = old;
  }
}

/* Takes up to max published tasks into out[]; returns how many. hlock
 * held. */
static size_t fifo_take_locked(pool *p, cf_future **out, size_t max,
                               qseg **done) {
  uint64_t h = atomic_load_explicit(&p->chead, memory_order_relaxed);
  /* seq_cst: a spinner that found work takes with this load after its
   * seq_cst leave of `spinning`, and a producer that left its task to it
   * must not be missed (Dekker with claim_idle). */
  uint64_t avail = atomic_load(&p->ptail) - h;
  size_t k = avail < max ? (size_t)avail : max;
  qseg *s = p->hseg;
  uint32_t i = p->hidx;
  /* Start the misses at once: the producer wrote these lines. */
  for (uint32_t j = i; j < SEG_CAP && j < i + k; j += 8)
    __builtin_prefetch(&s->items[j]);
  for (size_t n = 0; n < k; n++) {
    if (i == SEG_CAP) {
      qseg *next = s->next; /* linked before ptail counted its items */
      retire_locked(p, s, done);
      s = next;
      i = 0;
    }
    out[n] = s->items[i++];
  }
  p->hseg = s;
  p->hidx = i;
  return k;
}

/* Counts k tasks taken (hlock held, after they are slotted). A seq_cst
 * add when a bounded queue's blocked producers or other workers must see
 * it (wait_for_room's and park_worker's re-checks: the Dekker pairs of
 * wake_space_waiters and claim_idle), else a plain store. Two calls, not
 * a computed order: compilers treat a non-constant order as seq_cst. */
static void fifo_taken_locked(pool *p, size_t k, bool others_may_steal) {
  if (p->max_queued != 0 || others_may_steal)
    atomic_fetch_add_explicit(&p->chead, k, memory_order_seq_cst);
  else
    atomic_store_explicit(
        &p->chead,
        atomic_load_explicit(&p->chead, memory_order_relaxed) + k,
        memory_order_release); /* continues the release chain of a slotter's add */
}

static void free_chain(qseg *s) {
  while (s != NULL) {
    qseg *next = s->next;
    free(s);
    s = next;
  }
}

void fifo_detach_locked(pool *p, qdetached *d) {
  cf__spin_lock(&p->hlock);
  qseg *s = p->hseg;
  uint32_t i = p->hidx;
  d->chain = NULL;
  d->first = 0;
  if (s != p->tseg) {
    /* Whole segments up to the one the FIFO goes on in: the head has not
     * passed the one linked before it, so that one ends the chain. */
    d->chain = s;
    d->first = i;
    p->tprev->next = NULL;
    i = 0;
  }
  /* No push is half-done under qlock: everything up to tidx is
   * published. */
  d->ntail = p->tidx - i;
  memcpy(d->tail, &p->tseg->items[i], d->ntail * sizeof d->tail[0]);
  p->hseg = p->tseg;
  p->hidx = p->tidx;
  atomic_store(&p->chead, atomic_load(&p->ptail));
  cf__spin_unlock(&p->hlock);
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

void settle_detached(pool *p, qdetached *d, int err, const char *msg) {
  for (qseg *s = d->chain; s != NULL; s = s->next) {
    for (uint32_t i = s == d->chain ? d->first : 0; i < SEG_CAP; i++)
      settle(p, s->items[i], err, msg);
  }
  free_chain(d->chain);
  d->chain = NULL;
  for (uint32_t i = 0; i < d->ntail; i++)
    settle(p, d->tail[i], err, msg);
  d->ntail = 0;
}

void settle_everything(pool *p, int err, const char *msg) {
  qdetached d;
  cf__spin_lock(&p->qlock);
  fifo_detach_locked(p, &d);
  cf__spin_unlock(&p->qlock);
  settle_detached(p, &d, err, msg);
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
      if (f == NULL)
        continue;
      /* More left in those slots: let one more idle worker in, as a take
       * from the FIFO that leaves work does. A batch of tasks that looked
       * short but run long then spreads over every idle worker, each
       * thief waking the next, instead of waiting behind its taker. */
      for (int k = j - 1; k >= 0; k--)
        if (atomic_load_explicit(&v->slots[k], memory_order_relaxed) != NULL) {
          wake_claimed(claim_idle(p));
          break;
        }
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
  if (queued_now(p) > 0) {
    int64_t now = cf_now_ns();
    if (w->take_n > 0)
      w->short_tasks = now - w->take_ns < (int64_t)w->take_n * SHORT_TASK_NS;
    size_t max = w->short_tasks && atomic_load_explicit(&p->nworkers,
                                                        memory_order_relaxed) ==
                                       p->max_workers
                     ? BATCH_MAX
                     : 1;
    cf_future *batch[BATCH_MAX];
    qseg *done = NULL;
    cf__spin_lock(&p->hlock);
    size_t k = fifo_take_locked(p, batch, max, &done);
    if (k > 0) {
      slot_batch(w, batch, k);
      fifo_taken_locked(p, k, k > 1);
    }
    cf__spin_unlock(&p->hlock);
    free_chain(done);
    if (k > 0) {
      w->take_ns = now;
      w->take_n = (int)k;
      /* Work is left (queued, or in our slots): let another worker in.
       * After chead's seq_cst add (k > 1), so a parking worker either is
       * seen here or sees our slots when it re-checks. */
      if (k > 1 || queued_now_sc(p) > 0)
        wake_claimed(claim_idle(p));
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
