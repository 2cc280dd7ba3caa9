/*
 * thread_pool.c - the thread-pool executor.
 *
 * Data flow. submit() allocates the future (which is also the task record:
 * one allocation per task) and appends a pointer to it to the pool's FIFO,
 * a list of array segments, under qlock. A worker that runs dry takes one
 * task if another worker is idle (so tasks start in submission order, as
 * with Python's single queue), or, when all are busy, everything queued up
 * to BATCH_MAX in one critical section: the first item to run now, the
 * rest into its `slots`. The lock is taken once per
 * batch and a batch is copied from contiguous memory, because on the
 * target machines moving one cache line between cores costs ~220 ns
 * (bench/NOTES.md): every line both sides touch must be paid for once per
 * batch, not once per task. Long tasks still spread over all workers:
 * taking work while more is left wakes another worker, and a worker with
 * nothing to do steals from other workers' slots. Slots are atomic
 * pointers taken with an exchange, so the owner, stealers and
 * shutdown(cancel_futures) each get a task exactly once without a lock.
 *
 * Sleeping. An idle worker first spins (at most one at a time, bounded by
 * IDLE_SPIN_NS), polling `qlen_pub`, a line the submitter only stores to,
 * never the lock's line. Then it pushes itself on the idle stack and
 * parks on its own `parked` word. A submitter that finds a parked worker
 * and no spinner pops (claims) that worker and wakes it after unlocking,
 * so a sleeper costs at most one wake-up syscall however many tasks
 * arrive while the kernel schedules it. The idle stack is guarded by
 * qlock, so the lock orders "a sleeper re-checks the queue" against "a
 * submitter checks for sleepers" and submit needs no memory fence.
 *
 * Waiting inside a worker. Each worker installs a wait hook: a task that
 * waits on a future runs that future's task inline if it is still queued
 * in this pool (bounded by the stack: HELP_STACK_RESERVE stays free),
 * runs other queued work meanwhile only if no other worker is free (at
 * most MAX_HELP_DEPTH deep), and gets CF_EDEADLOCK if it waits for a
 * future this very thread is running (a frame list on its stack).
 *
 * Locks (none is held while user code runs):
 *   qlock  (a spinlock) the FIFO, qlen, submitted, the idle stack, and
 *          the shutdown and broken flags' transitions. Never held across
 *          anything that can block. Taken under wlock by shutdown, and
 *          under a future's stripe lock when a waited-for future wakes a
 *          helping worker; it never takes another lock itself.
 *   wlock  spawning and joining workers. Order: wlock -> qlock.
 *
 * Lifetime. The pool holds one reference on every queued future and drops
 * it after running, cancelling or failing it. Worker structs live until
 * the pool is destroyed (after all workers are joined), so waking a
 * worker after it was claimed never touches freed memory.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cf/thread_pool.h"
#include "common.h"
#include "executor_int.h"
#include "fault.h"
#include "future_int.h"
#include "park.h"

#define BATCH_MAX 32
/* Helping with other queued work nests it on the waiting task's stack:
 * at most this deep, and never with less than HELP_STACK_RESERVE bytes
 * of stack left (running the awaited task itself is bounded by the stack
 * only, since it follows the program's own dependency chain). */
#define MAX_HELP_DEPTH 32
#define HELP_STACK_RESERVE (64 * 1024)
/* A waiting worker that leaves queued work to a free worker looks again
 * after this long. */
#define HELP_RECHECK_NS CF_MSEC(1)
#define IDLE_SPIN_NS 50000
#define SEG_CAP 254 /* a segment is 2 KiB */
/* Tasks shorter than this on average are batched (see next_task). */
#define SHORT_TASK_NS 2000

typedef struct pool pool;

/* A task being run by a worker, on that worker's stack. */
typedef struct frame {
  cf_future *f;
  struct frame *up;
} frame;

/* A piece of the FIFO. items[head..tail) are queued; the producer fills
 * at tail, consumers take from head (all under qlock). */
typedef struct qseg {
  struct qseg *next;
  uint32_t head, tail;
  cf_future *items[SEG_CAP];
} qseg;

typedef struct worker {
  /* Tasks this worker took from the FIFO and has not started. The owner
   * takes slot_pos..slot_end in order; thieves take the youngest. */
  _Atomic(cf_future *) slots[BATCH_MAX];
  /* Counters: written by this worker only (per task), read by stats;
   * on their own line, away from the fields other workers poll. */
  _Atomic uint64_t started __attribute__((aligned(CF__CACHELINE)));
  _Atomic uint64_t completed, failed, cancelled;
  /* Owner-only fields. */
  int slot_pos __attribute__((aligned(CF__CACHELINE)));
  int slot_end;
  bool token_given; /* offered an idle token since its last task */
  /* When this worker last took from the FIFO, and how many tasks: the
   * time to its next take gives the length of its tasks. */
  int64_t take_ns;
  int take_n;
  bool short_tasks;   /* its recent tasks averaged under SHORT_TASK_NS */
  int depth;          /* nesting of tasks run on this stack */
  struct frame *top;  /* the futures being run, innermost first */
  uintptr_t stack_lo; /* lowest usable stack address, or 0 */
  /* 1 while parked and unclaimed; a waker sets 0 and wakes it. */
  _Atomic uint32_t parked;
  struct worker *idle_next; /* idle stack link (guarded by qlock) */
  bool on_stack;            /* guarded by qlock */
  pool *p;
  pthread_t thread;
  int index;
  bool started_ok; /* pthread_create succeeded (guarded by wlock) */
} __attribute__((aligned(CF__CACHELINE))) worker;

struct pool {
  cf_executor base; /* first: the public handle */
  /* Configuration (read-only after creation). */
  int max_workers;
  int64_t max_queued; /* 0: unbounded */
  size_t stack_size;
  char *prefix;
  int (*initializer)(void *);
  void (*finalizer)(void *);
  void *initarg;
  cf__cb_sink sink;
  _Atomic uint64_t callbacks_failed;

  /* Everything the submitter touches on each submit, guarded by qlock. */
  cf__spinlock qlock __attribute__((aligned(CF__CACHELINE)));
  qseg *qfirst, *qlast; /* the FIFO */
  qseg *spare;          /* a free segment kept for reuse */
  size_t qlen;
  _Atomic uint64_t submitted; /* written under qlock, read by stats */
  worker *idle_top;           /* parked workers, most recent first */
  int nidle;
  _Atomic bool shutdown; /* set under qlock */
  _Atomic bool broken;   /* set under qlock */
  char *broken_msg;      /* set once, before broken */

  /* qlen as seen by spinners and stats: stored by lock holders, polled
   * by idle workers without touching the lock's line. */
  _Atomic size_t qlen_pub __attribute__((aligned(CF__CACHELINE)));

  _Atomic int spinning __attribute__((aligned(CF__CACHELINE)));
  _Atomic int idle_tokens; /* idle workers not yet claimed by a submit */
  _Atomic int idle_now;    /* workers inside idle() (for stats) */
  _Atomic bool cancelling; /* shutdown(cancel_futures) happened */
  /* Producers blocked on a full queue park on space_seq. */
  _Atomic uint32_t space_seq;
  _Atomic int space_waiters;
  /* Settled by the pool without running (shutdown, broken). */
  _Atomic uint64_t settled_cancelled, settled_failed;

  /* Workers: guarded by wlock; the array is fixed at max_workers. */
  pthread_mutex_t wlock __attribute__((aligned(CF__CACHELINE)));
  pthread_cond_t joined_cv;
  worker *workers;
  _Atomic int nworkers; /* published count of workers[] in use */
  bool joining, joined;
};

static const cf__executor_vtable pool_vtable;
static _Atomic int pool_counter;
static _Thread_local worker *current_worker;

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

int cf_thread_pool_default_workers(void) {
  int cpus = 0;
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    cpus = CPU_COUNT(&set);
#endif
  if (cpus <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpus = n > 0 ? (int)n : 1;
  }
  return cpus + 4 < 32 ? cpus + 4 : 32;
}

static bool is_own_worker(pool *p) {
  return current_worker != NULL && current_worker->p == p;
}

static void set_qlen_locked(pool *p, size_t n) {
  p->qlen = n;
  /* seq_cst only for bounded queues: it pairs with a blocked producer's
   * announce-then-recheck in wait_for_room (wake_space_waiters). Two
   * calls, not a computed order: compilers treat a non-constant order as
   * seq_cst, a locked instruction on every submit. */
  if (p->max_queued != 0)
    atomic_store_explicit(&p->qlen_pub, n, memory_order_seq_cst);
  else
    atomic_store_explicit(&p->qlen_pub, n, memory_order_relaxed);
}

/* ---------------------------------------------------------------------- */
/* The idle stack (all under qlock)                                        */

static void idle_push_locked(pool *p, worker *w) {
  atomic_store_explicit(&w->parked, 1, memory_order_relaxed);
  w->idle_next = p->idle_top;
  p->idle_top = w;
  w->on_stack = true;
  p->nidle++;
}

static void idle_unlink_locked(pool *p, worker *w) {
  worker **pp = &p->idle_top;
  while (*pp != w)
    pp = &(*pp)->idle_next;
  *pp = w->idle_next;
  w->on_stack = false;
  p->nidle--;
  atomic_store_explicit(&w->parked, 0, memory_order_release);
}

/* Claims a parked worker to wake, if work needs one: nobody is spinning
 * (a spinner would find the work) and somebody is parked. The caller
 * wakes the result with wake_claimed() after unlocking. */
static worker *claim_idle_locked(pool *p) {
  if (p->nidle == 0 ||
      atomic_load_explicit(&p->spinning, memory_order_relaxed) != 0)
    return NULL;
  worker *w = p->idle_top;
  idle_unlink_locked(p, w);
  return w;
}

static void wake_claimed(worker *w) {
  if (w != NULL)
    cf__park_wake(&w->parked, 1);
}

/* Takes w off the stack unless a waker claimed it already. */
static void idle_remove(pool *p, worker *w) {
  cf__spin_lock(&p->qlock);
  if (w->on_stack)
    idle_unlink_locked(p, w);
  cf__spin_unlock(&p->qlock);
}

/* Claims and wakes w if it is parked (a helper whose future completed). */
static void idle_wake_worker(pool *p, worker *w) {
  cf__spin_lock(&p->qlock);
  bool was = w->on_stack;
  if (was)
    idle_unlink_locked(p, w);
  cf__spin_unlock(&p->qlock);
  if (was)
    cf__park_wake(&w->parked, 1);
}

static void wake_all(pool *p) {
  for (;;) {
    cf__spin_lock(&p->qlock);
    worker *w = p->idle_top;
    if (w != NULL)
      idle_unlink_locked(p, w);
    cf__spin_unlock(&p->qlock);
    if (w == NULL)
      return;
    cf__park_wake(&w->parked, 1);
  }
}

static bool anything_stealable(pool *p) {
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < BATCH_MAX; j++)
      if (atomic_load_explicit(&p->workers[i].slots[j], memory_order_relaxed) !=
          NULL)
        return true;
  return false;
}

/* Wakes producers blocked on a full queue (call after making room or
 * changing state, without qlock). */
static void wake_space_waiters(pool *p) {
  /* Dekker with wait_for_room: we stored qlen_pub (or shutdown/broken)
   * seq_cst, then load space_waiters seq_cst; the producer increments
   * space_waiters, then loads qlen_pub. One of us sees the other. */
  if (atomic_load(&p->space_waiters) > 0) {
    atomic_fetch_add(&p->space_seq, 1);
    cf__park_wake(&p->space_seq, INT32_MAX);
  }
}

/* Settles a future the pool will not run and drops the pool's reference. */
static void settle(pool *p, cf_future *f, int err, const char *msg) {
  char *m = msg != NULL ? cf__asprintf("%s", msg) : NULL;
  if (cf__future_settle(f, err, m, &p->sink) == 0) {
    if (err == CF_ECANCELLED)
      atomic_fetch_add(&p->settled_cancelled, 1);
    else
      atomic_fetch_add(&p->settled_failed, 1);
  } else if (!(atomic_load(&f->state) & CF__FL_INLINE)) {
    /* Cancelled by its owner while queued (an inline run was counted by
     * the worker that ran it). */
    atomic_fetch_add(&p->settled_cancelled, 1);
  }
  cf_future_unref(f);
}

/* ---------------------------------------------------------------------- */
/* The FIFO                                                                */

/* Appends f. Returns false if a segment is needed and none is spare
 * (the caller allocates one outside the lock and retries). */
static bool fifo_push_locked(pool *p, cf_future *f) {
  qseg *s = p->qlast;
  if (s == NULL || s->tail == SEG_CAP) {
    if (s != NULL && s->head == SEG_CAP) {
      s->head = s->tail = 0; /* fully consumed: reuse in place */
    } else {
      qseg *n = p->spare;
      if (n == NULL)
        return false;
      p->spare = NULL;
      n->next = NULL;
      n->head = n->tail = 0;
      if (s != NULL)
        s->next = n;
      else
        p->qfirst = n;
      p->qlast = s = n;
    }
  }
  s->items[s->tail++] = f;
  return true;
}

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

/* Detaches the whole FIFO (a chain of segments); qlock held. */
static qseg *fifo_detach_locked(pool *p) {
  qseg *chain = p->qfirst;
  p->qfirst = p->qlast = NULL;
  set_qlen_locked(p, 0);
  return chain;
}

/* Settles every task of a detached FIFO and frees its segments. */
static void settle_chain(pool *p, qseg *chain, int err, const char *msg) {
  while (chain != NULL) {
    for (uint32_t i = chain->head; i < chain->tail; i++)
      settle(p, chain->items[i], err, msg);
    qseg *next = chain->next;
    free(chain);
    chain = next;
  }
}

/* Settles every queued and slotted task with err (CF_ECANCELLED for
 * shutdown(cancel_futures), CF_EBROKEN, or a thread creation error),
 * with no lock held while settling (it runs user callbacks and arg
 * destructors). */
static void settle_everything(pool *p, int err, const char *msg) {
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

/* ---------------------------------------------------------------------- */
/* Taking and running work                                                 */

/* The next task for worker w: its own slots, then a batch from the FIFO,
 * then one stolen from another worker. NULL if there is none. */
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
 * oldest task in another worker's slots. NULL if there is none.
 *
 * Batching. Taking one task per lock costs a cache-line transfer per task
 * between the submitter and the workers (~220 ns here), which dominates
 * short tasks; so a worker whose recent tasks were short (measured: the
 * time between its FIFO takes over the tasks taken) takes up to
 * BATCH_MAX at once. A worker running longer tasks takes one at a time,
 * which costs nothing noticeable and keeps Python's behaviour exactly:
 * tasks start in submission order, and none waits in a busy worker's
 * slots. No batching either while the pool is still starting workers
 * (the worker being started must find the task it was started for). The
 * one compromise: a long task that arrives inside a batch of short ones
 * delays the rest of that batch until the FIFO is empty (then other
 * workers steal it) or the long task ends. */
static cf_future *next_task(worker *w) {
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

static inline void bump(_Atomic uint64_t *c) {
  /* Single writer: a plain load and store, no locked instruction. */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Runs a future this worker has claimed. */
static void run_claimed(worker *w, cf_future *f) {
  frame fr = {f, w->top};
  w->token_given = false;
  bump(&w->started);
  w->top = &fr;
  w->depth++;
  int rc = cf__future_run(f, &w->p->sink);
  w->depth--;
  w->top = fr.up;
  bump(rc == 0 ? &w->completed : &w->failed);
}

/* Whether this worker may nest one more task on its stack. */
static bool stack_allows_nesting(worker *w) {
  if (w->stack_lo == 0)
    return w->depth < MAX_HELP_DEPTH;
  /* The frame address, not a local's: sanitizers may move locals to a
   * heap-allocated fake stack. */
#if defined(__GNUC__) || defined(__clang__)
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);
#else
  char local;
  uintptr_t here = (uintptr_t)&local;
#endif
  return here > w->stack_lo + HELP_STACK_RESERVE;
}

/* Whether this worker should run unrelated queued work while it waits:
 * only if it can nest and no other worker is free to run it (Python would
 * leave it queued; we run it so a saturated pool cannot deadlock). */
static bool should_help(worker *w) {
  pool *p = w->p;
  return w->depth < MAX_HELP_DEPTH && stack_allows_nesting(w) &&
         atomic_load_explicit(&p->spinning, memory_order_relaxed) == 0 &&
         atomic_load_explicit(&p->idle_now, memory_order_relaxed) == 0;
}

static void run_one(worker *w, cf_future *f) {
  pool *p = w->p;
  if (CF__UNLIKELY(
          atomic_load_explicit(&p->cancelling, memory_order_relaxed))) {
    settle(p, f, CF_ECANCELLED, NULL);
    return;
  }
  if (!cf__future_claim(f)) {
    /* Cancelled while queued, or already run inline by a worker that
     * waited for it (counted there). A future its owner completed by
     * hand while queued counts as cancelled: it never ran here. */
    if (!(atomic_load_explicit(&f->state, memory_order_acquire) &
          CF__FL_INLINE))
      bump(&w->cancelled);
    cf_future_unref(f);
    return;
  }
  run_claimed(w, f);
  cf_future_unref(f);
}

/* Parks w until a waker claims it or the deadline passes, unless
 * `ready` already holds once w is on the idle stack (the re-check that
 * makes lost wake-ups impossible). Returns false if it did not park. */
static bool park_worker(worker *w, int64_t deadline,
                        bool (*ready)(worker *w, void *ctx), void *ctx) {
  pool *p = w->p;
  cf__spin_lock(&p->qlock);
  if (p->qlen > 0) {
    cf__spin_unlock(&p->qlock);
    return false;
  }
  idle_push_locked(p, w);
  cf__spin_unlock(&p->qlock);
  if (anything_stealable(p) || (ready != NULL && ready(w, ctx))) {
    idle_remove(p, w);
    return false;
  }
  while (atomic_load_explicit(&w->parked, memory_order_acquire) == 1 &&
         cf__park_wait(&w->parked, 1, deadline) != CF_ETIMEDOUT)
    ;
  idle_remove(p, w);
  return true;
}

/* ---------------------------------------------------------------------- */
/* Waiting inside a worker                                                 */

typedef struct help_listener {
  cf__listener l;
  worker *w;
} help_listener;

/* Runs under the future's stripe lock (then qlock: see lock order). */
static void help_notify(cf__listener *l, cf_future *f) {
  (void)f;
  help_listener *h = cf__container_of(l, help_listener, l);
  idle_wake_worker(h->w->p, h->w);
}

static bool future_done_ready(worker *w, void *ctx) {
  (void)w;
  return cf_future_done(ctx);
}

static int help_wait(void *ctx, cf_future *f, int64_t deadline) {
  worker *w = ctx;
  pool *p = w->p;
  /* Waiting for a task this thread is running (itself, or one below it
   * on this stack) can never end. */
  for (frame *fr = w->top; fr != NULL; fr = fr->up)
    if (fr->f == f)
      return CF_EDEADLOCK;
  help_listener h = {{0}, w};
  h.l.notify = help_notify;
  bool listening = false;
  int rc = 0;
  for (;;) {
    if (cf_future_done(f))
      break;
    if (cf_now_ns() >= deadline) {
      rc = cf_future_done(f) ? 0 : CF_ETIMEDOUT;
      break;
    }
    /* Still queued in this pool: run it here and now (the queue entry
     * is discarded later). This keeps nested waits as deep as the
     * dependency chain, not as the queue. */
    if (f->owner == p && stack_allows_nesting(w) &&
        cf__future_claim_inline(f)) {
      run_claimed(w, f);
      continue;
    }
    if (w->depth >= MAX_HELP_DEPTH || !stack_allows_nesting(w)) {
      /* Too deep to run anything more on this stack: block like any
       * other thread (parking below would return at once while work is
       * queued, and the loop would spin). */
      rc = cf_future_wait_blocking(f, deadline);
      break;
    }
    if (should_help(w)) {
      cf_future *t = next_task(w);
      if (t != NULL) {
        run_one(w, t);
        continue;
      }
    } else if (atomic_load_explicit(&p->qlen_pub, memory_order_relaxed) > 0) {
      /* Work is queued but another worker is free to take it: wait a
       * slice, then look again (that worker may have become busy). */
      int64_t slice = cf_now_ns() + HELP_RECHECK_NS;
      cf_future_wait_blocking(f, slice < deadline ? slice : deadline);
      continue;
    }
    if (!listening) {
      if (cf__future_listen(f, &h.l) == 1)
        break;
      listening = true;
    }
    /* Park until f completes (help_notify), work arrives (submitters may
     * claim us like any idle worker), or the deadline. */
    park_worker(w, deadline, future_done_ready, f);
  }
  if (listening)
    cf__future_unlisten(f, &h.l);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */

static void break_pool(pool *p, int rc) {
  char *msg =
      cf__asprintf("a worker initializer failed (%s); the pool is broken: %s",
                   cf_err_name(rc), cf_strerror(rc));
  cf__spin_lock(&p->qlock);
  if (!atomic_load(&p->broken)) {
    p->broken_msg = msg;
    msg = NULL;
    atomic_store(&p->broken, true);
  }
  cf__spin_unlock(&p->qlock);
  free(msg);
  settle_everything(p, CF_EBROKEN, p->broken_msg);
  wake_all(p);
}

static bool stop_ready(worker *w, void *ctx) {
  (void)ctx;
  return atomic_load(&w->p->shutdown) || atomic_load(&w->p->broken);
}

/* Idles until there may be work. Returns false when the worker must exit. */
static bool idle(worker *w) {
  pool *p = w->p;
  bool keep = true;
  /* One token per idle period (Python's idle semaphore): a submit that
   * claims it does not start a thread. The worker never takes it back:
   * if it finds the work itself, the claim was still right. Offered
   * before idle_now counts us, so whoever sees us idle finds the token. */
  if (!w->token_given) {
    w->token_given = true;
    atomic_fetch_add(&p->idle_tokens, 1);
  }
  atomic_fetch_add(&p->idle_now, 1);
  int zero = 0;
  if (atomic_compare_exchange_strong(&p->spinning, &zero, 1)) {
    int64_t end = cf_now_ns() + IDLE_SPIN_NS;
    bool found = false, stop = false;
    do {
      for (int i = 0; i < 64 && !found && !stop; i++) {
        cf__cpu_relax();
        found = atomic_load_explicit(&p->qlen_pub, memory_order_relaxed) > 0;
        stop = atomic_load_explicit(&p->shutdown, memory_order_relaxed);
      }
    } while (!found && !stop && cf_now_ns() < end);
    atomic_fetch_sub(&p->spinning, 1);
    if (found)
      goto out; /* (on shutdown, fall through to the exit check) */
  }
  if (stop_ready(w, NULL)) {
    /* Exit once nothing is left; queued work still runs after shutdown. */
    keep = atomic_load(&p->qlen_pub) > 0 || anything_stealable(p);
    goto out;
  }
  park_worker(w, CF_FOREVER, stop_ready, NULL);
out:
  atomic_fetch_sub(&p->idle_now, 1);
  return keep;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  char name[16];
  snprintf(name, sizeof name, "%s_%d", p->prefix, w->index);
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#endif
  current_worker = w;
#if defined(__linux__) && defined(__GLIBC__)
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *addr;
    size_t size;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0)
      w->stack_lo = (uintptr_t)addr; /* stacks grow down on Linux targets */
    pthread_attr_destroy(&attr);
  }
#endif
  cf_wait_hook hook = {help_wait, w};
  cf_wait_hook_swap(&hook, NULL);
  if (p->initializer != NULL) {
    int rc = p->initializer(p->initarg);
    if (rc != 0) {
      break_pool(p, rc < 0 ? rc : CF_ETASK);
      goto out;
    }
  }
  for (;;) {
    cf_future *f = next_task(w);
    if (f != NULL) {
      run_one(w, f);
      continue;
    }
    if (!idle(w))
      break;
  }
  if (p->finalizer != NULL)
    p->finalizer(p->initarg);
out:
  cf_wait_hook_swap(NULL, NULL);
  current_worker = NULL;
  return NULL;
}

/* Starts one more worker unless the pool is full or shut down. Returns 0
 * or a negative errno. Called with wlock held. */
static int spawn_locked(pool *p) {
  int n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
  if (n >= p->max_workers || atomic_load(&p->shutdown))
    return 0;
  worker *w = &p->workers[n];
  memset(w, 0, sizeof *w);
  w->p = p;
  w->index = n;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (p->stack_size != 0)
    pthread_attr_setstacksize(&attr, p->stack_size);
  int rc = cf__fault(CF__FAULT_THREAD_CREATE)
               ? EAGAIN
               : pthread_create(&w->thread, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return -rc;
  w->started_ok = true;
  atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
  return 0;
}

/* Python's _adjust_thread_count: start a worker unless one is idle. */
static int adjust_workers(pool *p) {
  int t = atomic_load(&p->idle_tokens);
  while (t > 0)
    if (atomic_compare_exchange_weak(&p->idle_tokens, &t, t - 1))
      return 0;
  pthread_mutex_lock(&p->wlock);
  int rc = spawn_locked(p);
  int n = atomic_load(&p->nworkers);
  pthread_mutex_unlock(&p->wlock);
  return n > 0 ? 0 : rc;
}

/* No worker exists and none could start: queued work cannot run, so it
 * fails (the task that triggered this included) instead of hanging.
 * Under wlock, so a worker another submitter starts meanwhile is either
 * seen (and nothing fails) or starts after the queue was taken. */
static void fail_queued_no_workers(pool *p, int rc) {
  qseg *chain = NULL;
  pthread_mutex_lock(&p->wlock);
  if (atomic_load(&p->nworkers) == 0) {
    cf__spin_lock(&p->qlock);
    chain = fifo_detach_locked(p);
    cf__spin_unlock(&p->qlock);
  }
  pthread_mutex_unlock(&p->wlock);
  if (chain == NULL)
    return;
  char *msg = cf__asprintf("cannot start a worker thread: %s", cf_strerror(rc));
  settle_chain(p, chain, rc, msg);
  free(msg);
  wake_space_waiters(p);
}

/* ---------------------------------------------------------------------- */
/* The executor interface                                                  */

/* Waits for room in a bounded queue (called without qlock). Returns 0 to
 * retry, or CF_EAGAIN at the deadline. */
static int wait_for_room(pool *p, int64_t deadline) {
  if (cf_now_ns() >= deadline)
    return CF_EAGAIN;
  if (is_own_worker(p) && stack_allows_nesting(current_worker)) {
    /* Backpressure inside our own worker: make room by running work (if
     * every worker blocked here, nothing would ever drain the queue). */
    cf_future *t = next_task(current_worker);
    if (t != NULL)
      run_one(current_worker, t);
    else
      sched_yield();
    return 0;
  }
  /* Announce ourselves, re-check, then park; a worker that takes work
   * (and shutdown) bumps space_seq after a full fence. */
  atomic_fetch_add(&p->space_waiters, 1);
  uint32_t seq = atomic_load(&p->space_seq);
  if ((int64_t)atomic_load(&p->qlen_pub) >= p->max_queued &&
      !atomic_load(&p->shutdown) && !atomic_load(&p->broken))
    cf__park_wait(&p->space_seq, seq, deadline);
  atomic_fetch_sub(&p->space_waiters, 1);
  return 0;
}

static int pool_submit(cf_executor *ex, const cf_task *task, int64_t deadline,
                       cf_future **out) {
  pool *p = (pool *)ex;
  if (atomic_load_explicit(&p->broken, memory_order_relaxed))
    return CF_EBROKEN;
  if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
    return CF_ESHUTDOWN;
  cf_future *f = cf__future_alloc(out != NULL ? 2 : 1);
  if (f == NULL)
    return CF_ENOMEM;
  f->u.task.fn = task->fn;
  f->u.task.arg = task->arg;
  f->owner = p;

  worker *wake = NULL;
  int rc = 0;
  cf__spin_lock(&p->qlock);
  for (;;) {
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
      rc = CF_EBROKEN;
    else if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
      rc = CF_ESHUTDOWN;
    if (rc != 0)
      break;
    if (p->max_queued != 0 && (int64_t)p->qlen >= p->max_queued) {
      cf__spin_unlock(&p->qlock);
      rc = wait_for_room(p, deadline);
      cf__spin_lock(&p->qlock);
      if (rc != 0)
        break;
      continue;
    }
    f->u.task.arg_dtor = task->arg_dtor;
    if (fifo_push_locked(p, f))
      break;
    f->u.task.arg_dtor = NULL;
    /* Needs a new segment: allocate it outside the spinlock. */
    cf__spin_unlock(&p->qlock);
    qseg *s = cf__fault(CF__FAULT_ALLOC) ? NULL : malloc(sizeof *s);
    cf__spin_lock(&p->qlock);
    if (s == NULL) {
      rc = CF_ENOMEM;
      break;
    }
    if (p->spare == NULL)
      p->spare = s;
    else
      free(s);
  }
  if (rc != 0) {
    cf__spin_unlock(&p->qlock);
    cf__fcache_free(f); /* never published: no destructor, no listeners */
    return rc;
  }
  set_qlen_locked(p, p->qlen + 1);
  atomic_store_explicit(
      &p->submitted,
      atomic_load_explicit(&p->submitted, memory_order_relaxed) + 1,
      memory_order_relaxed);
  wake = claim_idle_locked(p);
  cf__spin_unlock(&p->qlock);
  wake_claimed(wake);
  if (out != NULL)
    *out = f;
  if (cf__fault(CF__FAULT_SUBMIT_PAUSE))
    cf__fault_pause();
  /* After the enqueue, as Python's _adjust_thread_count: a worker that
   * starts now finds this task, so idle tokens match queued work. */
  if (atomic_load_explicit(&p->nworkers, memory_order_relaxed) <
      p->max_workers) {
    rc = adjust_workers(p);
    if (rc != 0)
      fail_queued_no_workers(p, rc);
  }
  return 0;
}

static void join_all(pool *p) {
  pthread_mutex_lock(&p->wlock);
  if (p->joining) {
    while (!p->joined)
      pthread_cond_wait(&p->joined_cv, &p->wlock);
    pthread_mutex_unlock(&p->wlock);
    return;
  }
  p->joining = true;
  int n = atomic_load(&p->nworkers);
  pthread_mutex_unlock(&p->wlock);
  /* No worker can start now: spawn_locked refuses after shutdown. */
  for (int i = 0; i < n; i++)
    if (p->workers[i].started_ok)
      pthread_join(p->workers[i].thread, NULL);
  pthread_mutex_lock(&p->wlock);
  p->joined = true;
  pthread_cond_broadcast(&p->joined_cv);
  pthread_mutex_unlock(&p->wlock);
}

static int pool_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  pool *p = (pool *)ex;
  pthread_mutex_lock(&p->wlock); /* orders us against spawn_locked */
  /* A submit may have queued a task and not yet started the worker for
   * it: start one now, so queued work runs as Python's shutdown would. */
  int spawn_rc = 0;
  if (atomic_load(&p->nworkers) == 0 && atomic_load(&p->qlen_pub) > 0 &&
      !cancel_futures)
    spawn_rc = spawn_locked(p);
  cf__spin_lock(&p->qlock);
  atomic_store(&p->shutdown, true);
  qseg *orphans = atomic_load(&p->nworkers) == 0 ? fifo_detach_locked(p) : NULL;
  cf__spin_unlock(&p->qlock);
  pthread_mutex_unlock(&p->wlock);
  /* Still no worker (none could start, or a submit queued after our
   * check): nothing will run what is queued; settle it. */
  if (orphans != NULL) {
    char *msg = spawn_rc != 0 ? cf__asprintf("cannot start a worker thread: %s",
                                             cf_strerror(spawn_rc))
                              : NULL;
    settle_chain(p, orphans, spawn_rc != 0 ? spawn_rc : CF_ECANCELLED, msg);
    free(msg);
  }
  wake_space_waiters(p);
  if (cancel_futures) {
    atomic_store(&p->cancelling, true);
    settle_everything(p, CF_ECANCELLED, NULL);
  }
  wake_all(p);
  if (!wait)
    return 0;
  if (is_own_worker(p))
    return CF_EDEADLOCK;
  join_all(p);
  return 0;
}

static int pool_destroy(cf_executor *ex) {
  pool *p = (pool *)ex;
  if (is_own_worker(p))
    return CF_EDEADLOCK;
  pool_shutdown(ex, true, false);
  for (qseg *s = p->qfirst, *next; s != NULL; s = next) {
    next = s->next;
    free(s);
  }
  free(p->spare);
  pthread_mutex_destroy(&p->wlock);
  pthread_cond_destroy(&p->joined_cv);
  free(p->workers);
  free(p->prefix);
  free(p->broken_msg);
  p->qfirst = p->qlast = p->spare = NULL;
  p->workers = NULL;
  p->prefix = NULL;
  p->broken_msg = NULL;
  return 0;
}

static uint64_t sub_floor(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

static void pool_stats(cf_executor *ex, cf_executor_stats *st) {
  pool *p = (pool *)ex;
  uint64_t started = 0, completed = 0, failed = 0, cancelled = 0;
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  /* Read the later stages first so that, while tasks move on, derived
   * counts err towards zero rather than wrap. */
  for (int i = 0; i < n; i++) {
    completed +=
        atomic_load_explicit(&p->workers[i].completed, memory_order_relaxed);
    failed += atomic_load_explicit(&p->workers[i].failed, memory_order_relaxed);
  }
  for (int i = 0; i < n; i++) {
    started +=
        atomic_load_explicit(&p->workers[i].started, memory_order_relaxed);
    cancelled +=
        atomic_load_explicit(&p->workers[i].cancelled, memory_order_relaxed);
  }
  uint64_t settled_c = atomic_load(&p->settled_cancelled);
  uint64_t settled_f = atomic_load(&p->settled_failed);
  uint64_t submitted = atomic_load(&p->submitted);
  st->submitted = submitted;
  st->running = sub_floor(started, completed + failed);
  st->completed = completed;
  st->failed = failed + settled_f;
  st->cancelled = cancelled + settled_c;
  st->queued =
      sub_floor(submitted, started + cancelled + settled_c + settled_f);
  st->callbacks_failed = atomic_load(&p->callbacks_failed);
  st->workers = (uint32_t)n;
  int idle_now = atomic_load(&p->idle_now);
  st->idle_workers = (uint32_t)(idle_now > 0 ? idle_now : 0);
  st->max_workers = (uint32_t)p->max_workers;
}

static int pool_max_workers(cf_executor *ex) {
  return ((pool *)ex)->max_workers;
}

static const cf__executor_vtable pool_vtable = {
    "thread_pool", pool_submit, pool_shutdown,
    pool_destroy,  pool_stats,  pool_max_workers};

int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_opts *opts) {
  if (out != NULL)
    *out = NULL;
  cf_thread_pool_opts o;
  memset(&o, 0, sizeof o);
  if (opts != NULL)
    o = *opts;
  if (out == NULL || o.max_workers < 0 ||
      o.max_workers > CF_THREAD_POOL_MAX_WORKERS || o.max_queued < 0 ||
      (o.stack_size != 0 && o.stack_size < 65536))
    return CF_EINVAL;
  if (o.max_workers == 0)
    o.max_workers = cf_thread_pool_default_workers();
  pool *p =
      cf__fault(CF__FAULT_ALLOC)
          ? NULL
          : aligned_alloc(CF__CACHELINE, (sizeof *p + CF__CACHELINE - 1) /
                                             CF__CACHELINE * CF__CACHELINE);
  if (p == NULL)
    return CF_ENOMEM;
  memset(p, 0, sizeof *p);
  size_t wbytes = (size_t)o.max_workers * sizeof(worker);
  p->workers =
      cf__fault(CF__FAULT_ALLOC) ? NULL : aligned_alloc(CF__CACHELINE, wbytes);
  if (o.thread_name_prefix != NULL)
    p->prefix = cf__asprintf("%s", o.thread_name_prefix);
  else
    p->prefix = cf__asprintf("cfpool%d", atomic_fetch_add(&pool_counter, 1));
  if (p->workers == NULL || p->prefix == NULL) {
    free(p->workers);
    free(p->prefix);
    free(p);
    return CF_ENOMEM;
  }
  memset(p->workers, 0, wbytes);
  p->max_workers = o.max_workers;
  p->max_queued = o.max_queued;
  p->stack_size = o.stack_size;
  p->initializer = o.initializer;
  p->finalizer = o.finalizer;
  p->initarg = o.initarg;
  p->sink.fn = o.on_callback_error;
  p->sink.ctx = o.on_callback_error_ctx;
  p->sink.failed = &p->callbacks_failed;
  pthread_mutex_init(&p->wlock, NULL);
  pthread_cond_init(&p->joined_cv, NULL);
  cf__executor_init(&p->base, &pool_vtable);
  *out = &p->base;
  return 0;
}
