/*
 * pool.h - the thread pool's internals, shared by its files. Internal.
 *
 *   thread_pool.c  the executor: options, submit, shutdown, workers, stats,
 *                  fork
 *   pool_queue.c   the FIFO of segments, the workers' slots, taking work
 *                  (batches, stealing), settling queued work
 *   pool_idle.c    idle workers: spinning, the idle stack, parking, waking
 *   pool_help.c    running tasks, and waiting inside a worker (the wait
 *                  hook: help while waiting, the multi-future sleep/wake)
 *
 * Data flow. submit() allocates the future (which is also the task record:
 * one allocation per task) and appends a pointer to it to the pool's FIFO,
 * a list of array segments: producers append under qlock and publish with
 * one locked add of `ptail`, the count of tasks ever queued; consumers
 * take under hlock and store `chead`, the count ever taken. The two locks
 * live on their own cache lines, so a burst of submits and the workers
 * taking it share only the lines of the items and of the two counts,
 * which each side reads (bench/NOTES.md section 23: a lock both ends
 * take costs twice as much, and swings with the host's phase). A worker
 * that runs dry takes one
 * task at a time while its tasks are long, or, once its recent tasks were
 * short and every worker is started, up to BATCH_MAX in one critical
 * section: the first to run now, the rest into its `slots`
 * (pool_queue.c). On the target machines moving one cache line between
 * cores costs ~220 ns (bench/NOTES.md), so every line both sides touch is
 * paid for once per batch, not once per task.
 *
 * Locks (none is held while user code runs; the three spinlocks are never
 * held across anything that can block or allocate):
 *   qlock  (a spinlock) the FIFO's tail, submitted, starting, the
 *          shutdown and broken flags' transitions (a submit checks them
 *          and pushes under it, so none slips past a shutdown). Taken
 *          under wlock.
 *   hlock  (a spinlock) the FIFO's head. Taken alone, or under qlock to
 *          detach the whole FIFO.
 *   ilock  (a spinlock) the idle stack. A leaf: taken alone, and under a
 *          future's stripe lock (and an as_completed/wait mutex) when a
 *          completion wakes a waiting worker.
 *   wlock  spawning and joining workers. Order: wlock -> qlock -> hlock.
 *   registry_mu (thread_pool.c) the list of live pools, for fork. Order:
 *          registry_mu -> each pool's spinlocks (the fork handler holds
 *          them all).
 *
 * Wake-ups without a shared lock (Dekker, in seq_cst operations, which
 * ThreadSanitizer follows, not fences, which it does not). A producer
 * publishes with a seq_cst add to ptail, then loads nidle (seq_cst); a
 * worker that slots a batch others may steal publishes with a seq_cst add
 * to chead, then loads nidle; a worker going to sleep pushes itself on the
 * idle stack with a seq_cst add to nidle, then loads chead and ptail
 * (seq_cst) and the slots. Whichever comes second in the seq_cst order
 * sees the other, so no task waits for a sleeping worker while another
 * could run it.
 *
 * Lifetime. The pool holds one reference on every queued future and drops
 * it after running, cancelling or failing it. Worker structs live until
 * the pool is destroyed (after all workers are joined), so waking a
 * worker after it was claimed never touches freed memory.
 */
#ifndef CF_POOL_H
#define CF_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cf/thread_pool.h"
#include "common.h"
#include "executor_int.h"
#include "future_int.h"
#include "park.h"

#define BATCH_MAX 32
/* Helping with other queued work nests it on the waiting task's stack:
 * at most this deep, and never with less than the worker's stack reserve
 * left (a quarter of its stack, at most HELP_STACK_RESERVE). Running the
 * awaited task itself is bounded by the stack only, since it follows the
 * program's own dependency chain. */
#define MAX_HELP_DEPTH 32
#define HELP_STACK_RESERVE (64 * 1024)
/* A waiting worker that leaves queued work to a free worker looks again
 * after this long (the free worker was just woken; this is rare). */
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

/* A piece of the FIFO. The producer fills items[] in order (under qlock)
 * and links the next segment before it publishes anything there; a
 * consumer (under hlock) reads an item only once ptail says it exists,
 * and moves to next once it has read the last item. */
typedef struct qseg {
  struct qseg *next;
  cf_future *items[SEG_CAP];
} qseg;

/* What fifo_detach_locked took out of the FIFO: whole segments (items
 * [first, SEG_CAP) of the first, all of the others), then the items that
 * were in the segment the FIFO goes on in, copied. */
typedef struct qdetached {
  qseg *chain;
  uint32_t first;
  uint32_t ntail;
  cf_future *tail[SEG_CAP];
} qdetached;

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
  bool short_tasks;     /* its recent tasks averaged under SHORT_TASK_NS */
  int depth;            /* nesting of tasks run on this stack */
  struct frame *top;    /* the futures being run, innermost first */
  uintptr_t stack_lo;   /* lowest usable stack address, or 0 */
  size_t stack_reserve; /* stack kept free when nesting tasks */
  /* 1 while parked and unclaimed; a waker sets 0 and wakes it. */
  _Atomic uint32_t parked;
  /* Multi-future waits (pool_help.c): 1 once woken, 2 while sleeping on
   * this word outside the idle stack, 0 otherwise. */
  _Atomic uint32_t permit;
  struct worker *idle_next; /* idle stack link (guarded by ilock) */
  bool on_stack;            /* guarded by ilock */
  pool *p;
  pthread_t thread;
  int index;
  bool started_ok; /* pthread_create succeeded (guarded by wlock) */
} __attribute__((aligned(CF__CACHELINE))) worker;

struct pool {
  cf_executor base; /* first: the public handle */
  /* Configuration (read-only after creation). */
  int max_workers;
  int cpus; /* usable_cpus() at creation: see pool_spin_ns */
  int64_t max_queued; /* 0: unbounded */
  size_t stack_size;
  char *prefix;
  int (*initializer)(void *);
  void (*finalizer)(void *);
  void *initarg;
  cf__cb_sink sink;
  _Atomic uint64_t callbacks_failed;
  struct pool *reg_prev, *reg_next; /* the registry (thread_pool.c) */

  /* The FIFO's tail: everything a submitter touches on each submit,
   * guarded by qlock. */
  cf__spinlock qlock __attribute__((aligned(CF__CACHELINE)));
  qseg *tseg;     /* the segment being filled */
  qseg *tprev;    /* the one linked before it (valid while hseg != tseg) */
  uint32_t tidx;  /* its next free item */
  _Atomic uint64_t submitted; /* written under qlock, read by stats */
  _Atomic bool shutdown;      /* set under qlock */
  _Atomic bool broken;        /* set under qlock */
  char *broken_msg;           /* set once, before broken */
  uint32_t starting;          /* worker starts asked by submits, between
                                 enqueue and adjust_workers (counted under
                                 qlock; wraps: compared by difference);
                                 destroy waits for starting_done */
  /* Tasks ever queued: a locked add under qlock publishes them (release,
   * and the full barrier of the wake-up check); read by anyone. On a
   * line of its own: workers poll it, and each poll would otherwise
   * take qlock's line from the next submit (4 % on throughput (a),
   * bench/NOTES.md section 27; the idle spinner reads the shutdown flag
   * only once per round of polls, for the same reason). */
  _Atomic uint64_t ptail __attribute__((aligned(CF__CACHELINE)));

  /* The FIFO's head, guarded by hlock. */
  cf__spinlock hlock __attribute__((aligned(CF__CACHELINE)));
  qseg *hseg;    /* the segment being read */
  uint32_t hidx; /* its next item to take */
  /* Tasks ever taken from the FIFO (stored under hlock, read by anyone;
   * seq_cst in a bounded pool, for wait_for_room). */
  _Atomic uint64_t chead;

  /* The idle stack, guarded by ilock; nidle is read without it. */
  cf__spinlock ilock __attribute__((aligned(CF__CACHELINE)));
  worker *idle_top; /* parked workers, most recent first */
  _Atomic int nidle;
  _Atomic(qseg *) spare; /* a free segment kept for reuse (exchanged) */

  _Atomic int spinning __attribute__((aligned(CF__CACHELINE)));
  _Atomic int idle_tokens; /* idle workers not yet claimed by a submit */
  _Atomic int idle_now;    /* workers inside idle() (for stats) */
  _Atomic bool cancelling; /* shutdown(cancel_futures) happened */
  /* Producers blocked on a full queue park on space_seq. */
  _Atomic uint32_t space_seq;
  _Atomic int space_waiters;
  /* Settled by the pool without running (shutdown, broken). */
  _Atomic uint64_t settled_cancelled, settled_failed;
  _Atomic uint32_t starting_done; /* starts that left adjust_workers */

  /* Workers: guarded by wlock; the array is fixed at max_workers. */
  pthread_mutex_t wlock __attribute__((aligned(CF__CACHELINE)));
  pthread_cond_t joined_cv;
  worker *workers;
  _Atomic int nworkers;    /* published count of workers[] in use */
  _Atomic uint32_t exited; /* workers that left worker_main (futex word) */
  bool joining, joined;
  bool forked; /* the parent's pool in a fork child: no threads here */
  /* In a fork child: the worker whose task forked (its copy goes on here
   * until that task returns), or NULL. Set by the child's handler. */
  worker *child_worker;
  _Atomic uint32_t child_done; /* 1 once its task returned (futex word) */
};

/* In a fork child: the pool is the parent's (its workers are not here). */
static inline bool pool_forked(pool *p) {
  return cf__executor_forked(&p->base);
}

extern _Thread_local worker *cf__current_worker;

/* Whether f is one of the futures w is running (its own or one it runs
 * beneath another while that waits). Owner only (or the fork child). */
static inline bool running_here(const worker *w, const cf_future *f) {
  for (const frame *fr = w->top; fr != NULL; fr = fr->up)
    if (fr->f == f)
      return true;
  return false;
}

static inline bool is_own_worker(pool *p) {
  return cf__current_worker != NULL && cf__current_worker->p == p;
}

static inline void bump(_Atomic uint64_t *c) {
  /* Single writer: a plain load and store, no locked instruction. */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Tasks in the FIFO now (a snapshot: chead first and acquire, so the
 * ptail read after it is no older and the count never wraps). */
static inline uint64_t queued_now(pool *p) {
  uint64_t h = atomic_load_explicit(&p->chead, memory_order_acquire);
  return atomic_load_explicit(&p->ptail, memory_order_relaxed) - h;
}

/* The same in seq_cst loads: the re-checks of the Dekker pairs (a worker
 * about to sleep, a producer blocked on a full queue). */
static inline uint64_t queued_now_sc(pool *p) {
  uint64_t h = atomic_load(&p->chead);
  return atomic_load(&p->ptail) - h;
}

/* ---- pool_idle.c ------------------------------------------------------ */

static inline void idle_push_locked(pool *p, worker *w) {
  atomic_store_explicit(&w->parked, 1, memory_order_relaxed);
  w->idle_next = p->idle_top;
  p->idle_top = w;
  w->on_stack = true;
  atomic_fetch_add_explicit(&p->nidle, 1, memory_order_seq_cst); /* Dekker */
}

static inline void idle_unlink_locked(pool *p, worker *w) {
  worker **pp = &p->idle_top;
  while (*pp != w)
    pp = &(*pp)->idle_next;
  *pp = w->idle_next;
  w->on_stack = false;
  atomic_store_explicit(&p->nidle,
                        atomic_load_explicit(&p->nidle, memory_order_relaxed) -
                            1,
                        memory_order_relaxed);
  atomic_store_explicit(&w->parked, 0, memory_order_release);
}

/* Claims a parked worker to wake, if work needs one: nobody is spinning
 * (a spinner would find the work) and somebody is parked. Call after the
 * seq_cst add that made the work visible (ptail's, or chead's for
 * slots): then a worker that parks meanwhile sees the work (see
 * "Wake-ups" above). The caller wakes the result with wake_claimed(). */
static inline worker *claim_idle(pool *p) {
  if (CF__LIKELY(atomic_load_explicit(&p->nidle, memory_order_seq_cst) ==
                 0) ||
      atomic_load_explicit(&p->spinning, memory_order_seq_cst) != 0)
    return NULL;
  cf__spin_lock(&p->ilock);
  worker *w = p->idle_top;
  if (w != NULL)
    idle_unlink_locked(p, w);
  cf__spin_unlock(&p->ilock);
  return w;
}


static inline void wake_claimed(worker *w) {
  if (w != NULL)
    cf__park_wake(&w->parked, 1);
}

/* Claims and wakes w if it is parked on the idle stack. */
void idle_wake_worker(pool *p, worker *w);
/* Wakes every parked worker (shutdown, broken pool). */
void wake_all(pool *p);
/* Wakes producers blocked on a full queue (call after making room or
 * changing state, without qlock). */
void wake_space_waiters(pool *p);
/* Parks w on the idle stack until a waker claims it or the deadline
 * passes, unless work is queued or `ready` already holds once w is on the
 * stack (the re-check that makes lost wake-ups impossible). Returns false
 * if it did not park. */
bool park_worker(worker *w, int64_t deadline,
                 bool (*ready)(worker *w, void *ctx), void *ctx);
/* Idles until there may be work. Returns false when the worker must exit. */
bool idle(worker *w);

/* ---- pool_queue.c ----------------------------------------------------- */

/* Appends f, unpublished: consumers see it once fifo_publish_locked()
 * counts it, which must happen before qlock is released. Returns false
 * if a segment is needed and none is spare (the caller publishes what it
 * pushed, allocates one outside the lock and retries). qlock held. */
static inline bool fifo_push_locked(pool *p, cf_future *f) {
  qseg *s = p->tseg;
  if (CF__UNLIKELY(p->tidx == SEG_CAP)) {
    qseg *n = atomic_load_explicit(&p->spare, memory_order_relaxed) != NULL
                  ? atomic_exchange_explicit(&p->spare, NULL,
                                             memory_order_acquire)
                  : NULL;
    if (n == NULL)
      return false;
    n->next = NULL;
    s->next = n; /* before any item of n is published */
    p->tprev = s;
    p->tseg = s = n;
    p->tidx = 0;
  }
  s->items[p->tidx++] = f;
  return true;
}

/* Publishes the n tasks pushed last (qlock held). The locked add is also
 * the full barrier before claim_idle(). */
static inline void fifo_publish_locked(pool *p, uint64_t n) {
  atomic_fetch_add_explicit(&p->ptail, n, memory_order_seq_cst);
}

/* Detaches the whole FIFO into *d: qlock held (no push is half-done),
 * takes hlock. */
void fifo_detach_locked(pool *p, qdetached *d);
/* Settles every task of a detached FIFO and frees its segments. */
void settle_detached(pool *p, qdetached *d, int err, const char *msg);
/* Settles every queued and slotted task with err, no lock held while
 * settling (it runs user callbacks and arg destructors). */
void settle_everything(pool *p, int err, const char *msg);
/* Settles one future the pool will not run and drops its reference. */
void settle(pool *p, cf_future *f, int err, const char *msg);
/* The next task for w (its slots, the FIFO, another worker's slots), or
 * NULL. */
cf_future *next_task(worker *w);
/* Whether any worker's slots hold a task. */
bool anything_stealable(pool *p);

/* ---- pool_help.c ------------------------------------------------------ */

/* Runs a future taken from the queue (unless cancelled meanwhile) and
 * drops the queue's reference. */
void run_one(worker *w, cf_future *f);
/* Whether this worker may nest one more task on its stack. */
bool stack_allows_nesting(worker *w);
/* Installs the worker's wait hook on the calling thread. */
void install_wait_hook(worker *w);

#endif /* CF_POOL_H */
