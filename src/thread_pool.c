/*
 * thread_pool.c - the thread-pool executor.
 *
 * Data flow. submit() allocates the future (which is also the task record:
 * one allocation per task) and appends it to the pool's FIFO under qlock.
 * A worker that runs dry takes a batch from the FIFO under qlock: the
 * first item to run now, the rest into its `slots`. Batches are small
 * when the queue is short (qlen / (2 * workers), at most BATCH_MAX), so
 * long tasks still spread over all workers, and other workers steal from
 * slots when the FIFO is empty. Slots are atomic pointers taken with an
 * exchange, so the owner, stealers and shutdown(cancel_futures) each get
 * a task exactly once without a lock.
 *
 * Sleeping. An idle worker first spins (at most one at a time, bounded by
 * IDLE_SPIN_NS), then parks on the `epoch` word. A submitter wakes one
 * parked worker only if nobody spins; a worker that takes work and sees
 * more queued wakes the next one (chain wake-up). The usual eventcount
 * order makes lost wake-ups impossible: a sleeper increments `sleepers`,
 * reads `epoch`, then re-checks the queue before parking; a submitter
 * publishes the task, issues a full fence, then reads `sleepers` and bumps
 * `epoch` before waking.
 *
 * Waiting inside a worker. Each worker installs a wait hook: a task that
 * waits on a future runs queued work of this pool meanwhile (nested on
 * its stack, at most MAX_DEPTH deep), and gets CF_EDEADLOCK if it waits
 * for a future this very thread is running.
 *
 * Locks (none is held while user code runs):
 *   qlock  the FIFO, qlen, submitted, backpressure waiters, shutdown and
 *          broken flags' transitions. Leaf, except that it is taken under
 *          wlock by shutdown.
 *   wlock  spawning and joining workers. Order: wlock -> qlock.
 *
 * Lifetime. The pool holds one reference on every queued future and drops
 * it after running, cancelling or failing it. Worker structs live until
 * the pool is destroyed (after all workers are joined).
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
#define MAX_DEPTH 32
#define IDLE_SPIN_NS 50000

typedef struct pool pool;

typedef struct worker {
  /* Tasks this worker took from the FIFO and has not started. The owner
   * takes slot_pos..slot_end in order; stealers take from the end. */
  _Atomic(cf_future *) slots[BATCH_MAX];
  /* Counters: written by this worker only, read by stats. */
  _Atomic uint64_t started, completed, failed, cancelled;
  /* Owner-only fields. */
  int slot_pos, slot_end;
  bool token_given;  /* offered an idle token since its last task */
  int depth;                    /* nesting of tasks run on this stack */
  cf_future *running[MAX_DEPTH]; /* the futures being run, outermost first */
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

  /* The FIFO: guarded by qlock. */
  pthread_mutex_t qlock __attribute__((aligned(CF__CACHELINE)));
  cf_future *qhead, *qtail;
  _Atomic size_t qlen;          /* written under qlock; read anywhere */
  _Atomic uint64_t submitted;   /* written under qlock */
  pthread_cond_t qspace;        /* producers waiting for room */
  int qspace_waiters;
  _Atomic bool shutdown;        /* set under qlock */
  _Atomic bool cancelling;      /* shutdown(cancel_futures) happened */
  _Atomic bool broken;          /* set under qlock */
  char *broken_msg;             /* set once, before broken */

  /* Sleeping and waking. */
  _Atomic uint32_t epoch __attribute__((aligned(CF__CACHELINE)));
  _Atomic int sleepers;
  _Atomic int spinning;
  _Atomic int idle_tokens; /* idle workers not yet claimed by a submit */
  _Atomic int idle_now;    /* workers inside idle() (for stats) */

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

static void wake_one_if_needed(pool *p) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load(&p->sleepers) > 0 && atomic_load(&p->spinning) == 0) {
    atomic_fetch_add(&p->epoch, 1);
    cf__park_wake(&p->epoch, 1);
  }
}

static void wake_all(pool *p) {
  atomic_fetch_add(&p->epoch, 1);
  cf__park_wake(&p->epoch, INT32_MAX);
}

static bool anything_stealable(pool *p) {
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < BATCH_MAX; j++)
      if (atomic_load_explicit(&p->workers[i].slots[j],
                               memory_order_relaxed) != NULL)
        return true;
  return false;
}

static bool work_available(pool *p) {
  return atomic_load_explicit(&p->qlen, memory_order_relaxed) > 0 ||
         anything_stealable(p);
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

/* Takes every queued and slotted task out of the pool (for shutdown with
 * cancel_futures and for a broken pool). Returns a list linked by qnext. */
static cf_future *take_everything(pool *p) {
  pthread_mutex_lock(&p->qlock);
  cf_future *list = p->qhead;
  cf_future *tail = p->qtail;
  p->qhead = p->qtail = NULL;
  atomic_store(&p->qlen, 0);
  if (p->qspace_waiters > 0)
    pthread_cond_broadcast(&p->qspace);
  pthread_mutex_unlock(&p->qlock);
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < BATCH_MAX; j++) {
      cf_future *f = atomic_exchange(&p->workers[i].slots[j], NULL);
      if (f == NULL)
        continue;
      f->qnext = NULL;
      if (tail != NULL)
        tail->qnext = f;
      else
        list = f;
      tail = f;
    }
  }
  return list;
}

/* ---------------------------------------------------------------------- */
/* Taking and running work                                                 */

/* The next task for worker w: its own slots, then a batch from the FIFO,
 * then one stolen from another worker. NULL if there is none. */
static cf_future *next_task(worker *w) {
  pool *p = w->p;
  while (w->slot_pos < w->slot_end) {
    cf_future *f = atomic_exchange_explicit(&w->slots[w->slot_pos++], NULL,
                                            memory_order_acquire);
    if (f != NULL)
      return f;
  }
  if (atomic_load_explicit(&p->qlen, memory_order_relaxed) > 0) {
    pthread_mutex_lock(&p->qlock);
    size_t qlen = atomic_load_explicit(&p->qlen, memory_order_relaxed);
    cf_future *first = NULL;
    size_t more = 0;
    if (qlen > 0) {
      int nw = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
      size_t k = qlen / (2 * (size_t)(nw > 0 ? nw : 1));
      if (k < 1)
        k = 1;
      if (k > BATCH_MAX)
        k = BATCH_MAX;
      first = p->qhead;
      cf_future *f = first->qnext;
      for (size_t i = 1; i < k; i++) {
        /* Release: a stealer's exchange must see the task's fields. */
        atomic_store_explicit(&w->slots[i - 1], f, memory_order_release);
        f = f->qnext;
      }
      p->qhead = f;
      if (f == NULL)
        p->qtail = NULL;
      atomic_store_explicit(&p->qlen, qlen - k, memory_order_relaxed);
      more = qlen - k;
      w->slot_pos = 0;
      w->slot_end = (int)k - 1;
      if (p->qspace_waiters > 0)
        pthread_cond_broadcast(&p->qspace);
    }
    pthread_mutex_unlock(&p->qlock);
    if (first != NULL) {
      if (more > 0)
        wake_one_if_needed(p);
      return first;
    }
  }
  /* Steal from the end of another worker's slots. */
  int n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    worker *v = &p->workers[(w->index + 1 + i) % n];
    if (v == w)
      continue;
    for (int j = BATCH_MAX - 1; j >= 0; j--) {
      if (atomic_load_explicit(&v->slots[j], memory_order_relaxed) == NULL)
        continue;
      cf_future *f = atomic_exchange_explicit(&v->slots[j], NULL,
                                              memory_order_acquire);
      if (f != NULL)
        return f;
    }
  }
  return NULL;
}

static inline void bump(_Atomic uint64_t *c) {
  /* Single writer: a plain load and store, no locked instruction. */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Runs a future this worker has claimed. */
static void run_claimed(worker *w, cf_future *f) {
  w->token_given = false;
  bump(&w->started);
  w->running[w->depth++] = f;
  int rc = cf__future_run(f, &w->p->sink);
  w->depth--;
  bump(rc == 0 ? &w->completed : &w->failed);
}

static void run_one(worker *w, cf_future *f) {
  pool *p = w->p;
  if (CF__UNLIKELY(atomic_load_explicit(&p->cancelling,
                                        memory_order_relaxed))) {
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

/* ---------------------------------------------------------------------- */
/* Waiting inside a worker                                                 */

typedef struct help_listener {
  cf__listener l;
  pool *p;
} help_listener;

static void help_notify(cf__listener *l, cf_future *f) {
  (void)f;
  help_listener *h = cf__container_of(l, help_listener, l);
  wake_all(h->p);
}

static int help_wait(void *ctx, cf_future *f, int64_t deadline) {
  worker *w = ctx;
  pool *p = w->p;
  for (int i = 0; i < w->depth; i++)
    if (w->running[i] == f)
      return CF_EDEADLOCK;
  if (w->depth >= MAX_DEPTH)
    return cf_future_wait_blocking(f, deadline);
  help_listener h = {{0}, p};
  h.l.notify = help_notify;
  bool listening = false;
  int rc = 0;
  for (;;) {
    if (cf_future_done(f))
      break;
    /* Still queued in this pool: run it here and now (the queue entry
     * is discarded later). This keeps nested waits as deep as the
     * dependency chain, not as the queue. */
    if (f->owner == p && cf__future_claim_inline(f)) {
      run_claimed(w, f);
      continue;
    }
    cf_future *t = next_task(w);
    if (t != NULL) {
      run_one(w, t);
      continue;
    }
    if (cf_now_ns() >= deadline) {
      rc = CF_ETIMEDOUT;
      break;
    }
    if (!listening) {
      if (cf__future_listen(f, &h.l) == 1)
        break;
      listening = true;
    }
    atomic_fetch_add(&p->sleepers, 1);
    uint32_t e = atomic_load(&p->epoch);
    if (!cf_future_done(f) && !work_available(p))
      cf__park_wait(&p->epoch, e, deadline);
    atomic_fetch_sub(&p->sleepers, 1);
  }
  if (listening)
    cf__future_unlisten(f, &h.l);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */

static void break_pool(pool *p, int rc) {
  char *msg = cf__asprintf(
      "a worker initializer failed (%s); the pool is broken: %s",
      cf_err_name(rc), cf_strerror(rc));
  pthread_mutex_lock(&p->qlock);
  if (!atomic_load(&p->broken)) {
    p->broken_msg = msg;
    msg = NULL;
    atomic_store(&p->broken, true);
  }
  pthread_mutex_unlock(&p->qlock);
  free(msg);
  cf_future *list = take_everything(p);
  while (list != NULL) {
    cf_future *next = list->qnext;
    settle(p, list, CF_EBROKEN, p->broken_msg);
    list = next;
  }
  wake_all(p);
}

/* Idles until there may be work. Returns false when the worker must exit. */
static bool idle(worker *w) {
  pool *p = w->p;
  atomic_fetch_add(&p->idle_now, 1);
  /* One token per idle period (Python's idle semaphore): a submit that
   * claims it does not start a thread. The worker never takes it back:
   * if it finds the work itself, the claim was still right. */
  if (!w->token_given) {
    w->token_given = true;
    atomic_fetch_add(&p->idle_tokens, 1);
  }
  bool exit_now = false;
  int zero = 0;
  if (atomic_compare_exchange_strong(&p->spinning, &zero, 1)) {
    int64_t end = cf_now_ns() + IDLE_SPIN_NS;
    bool found = false, stop = false;
    do {
      for (int i = 0; i < 64 && !found && !stop; i++) {
        cf__cpu_relax();
        found = atomic_load_explicit(&p->qlen, memory_order_relaxed) > 0;
        stop = atomic_load_explicit(&p->shutdown, memory_order_relaxed);
      }
    } while (!found && !stop && cf_now_ns() < end);
    atomic_fetch_sub(&p->spinning, 1);
    if (found)
      goto out; /* (on shutdown, fall through to the exit check) */
  }
  atomic_fetch_add(&p->sleepers, 1);
  uint32_t e = atomic_load(&p->epoch);
  if (!work_available(p)) {
    if (atomic_load(&p->shutdown) || atomic_load(&p->broken))
      exit_now = true;
    else
      cf__park_wait(&p->epoch, e, CF_FOREVER);
  }
  atomic_fetch_sub(&p->sleepers, 1);
out:
  atomic_fetch_sub(&p->idle_now, 1);
  return !exit_now;
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
 * fails (the task that triggered this included) instead of hanging. */
static void fail_queued_no_workers(pool *p, int rc) {
  char *msg = cf__asprintf("cannot start a worker thread: %s",
                           cf_strerror(rc));
  cf_future *list = take_everything(p);
  while (list != NULL) {
    cf_future *next = list->qnext;
    settle(p, list, rc, msg);
    list = next;
  }
  free(msg);
}

/* ---------------------------------------------------------------------- */
/* The executor interface                                                  */

static int pool_submit(cf_executor *ex, const cf_task *task,
                       int64_t deadline, cf_future **out) {
  pool *p = (pool *)ex;
  if (atomic_load_explicit(&p->broken, memory_order_relaxed))
    return CF_EBROKEN;
  if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
    return CF_ESHUTDOWN;
  cf_future *f = cf__future_alloc(out != NULL ? 2 : 1);
  if (f == NULL)
    return CF_ENOMEM;
  f->fn = task->fn;
  f->arg = task->arg;
  f->owner = p;

  pthread_mutex_lock(&p->qlock);
  for (;;) {
    int rc = 0;
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
      rc = CF_EBROKEN;
    else if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
      rc = CF_ESHUTDOWN;
    else if (p->max_queued == 0 ||
             (int64_t)atomic_load_explicit(&p->qlen, memory_order_relaxed) <
                 p->max_queued)
      break;
    else if (is_own_worker(p)) {
      /* Backpressure inside our own worker: make room by running work. */
      pthread_mutex_unlock(&p->qlock);
      cf_future *t = next_task(current_worker);
      if (t != NULL)
        run_one(current_worker, t);
      else if (cf_now_ns() >= deadline)
        rc = CF_EAGAIN;
      else
        sched_yield();
      pthread_mutex_lock(&p->qlock);
      if (rc == 0)
        continue;
    } else if (cf_now_ns() >= deadline) {
      rc = CF_EAGAIN;
    } else {
      p->qspace_waiters++;
      if (deadline == CF_FOREVER) {
        pthread_cond_wait(&p->qspace, &p->qlock);
      } else {
        struct timespec ts = {(time_t)(deadline / 1000000000),
                              (long)(deadline % 1000000000)};
        pthread_cond_timedwait(&p->qspace, &p->qlock, &ts);
      }
      p->qspace_waiters--;
      continue;
    }
    pthread_mutex_unlock(&p->qlock);
    free(f); /* never published: no destructor, no listeners */
    return rc;
  }
  f->arg_dtor = task->arg_dtor;
  if (p->qtail != NULL)
    p->qtail->qnext = f;
  else
    p->qhead = f;
  p->qtail = f;
  atomic_store_explicit(&p->qlen,
                        atomic_load_explicit(&p->qlen, memory_order_relaxed) +
                            1,
                        memory_order_relaxed);
  atomic_store_explicit(
      &p->submitted,
      atomic_load_explicit(&p->submitted, memory_order_relaxed) + 1,
      memory_order_relaxed);
  pthread_mutex_unlock(&p->qlock);
  if (out != NULL)
    *out = f;
  /* After the enqueue, as Python's _adjust_thread_count: a worker that
   * starts now finds this task, so idle tokens match queued work. */
  if (atomic_load_explicit(&p->nworkers, memory_order_relaxed) <
      p->max_workers) {
    int rc = adjust_workers(p);
    if (rc != 0)
      fail_queued_no_workers(p, rc);
  }
  wake_one_if_needed(p);
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
  pthread_mutex_lock(&p->qlock);
  atomic_store(&p->shutdown, true);
  if (p->qspace_waiters > 0)
    pthread_cond_broadcast(&p->qspace);
  pthread_mutex_unlock(&p->qlock);
  pthread_mutex_unlock(&p->wlock);
  if (cancel_futures) {
    atomic_store(&p->cancelling, true);
    cf_future *list = take_everything(p);
    while (list != NULL) {
      cf_future *next = list->qnext;
      settle(p, list, CF_ECANCELLED, NULL);
      list = next;
    }
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
  pthread_mutex_destroy(&p->qlock);
  pthread_cond_destroy(&p->qspace);
  pthread_mutex_destroy(&p->wlock);
  pthread_cond_destroy(&p->joined_cv);
  free(p->workers);
  free(p->prefix);
  free(p->broken_msg);
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
    completed += atomic_load_explicit(&p->workers[i].completed,
                                      memory_order_relaxed);
    failed += atomic_load_explicit(&p->workers[i].failed, memory_order_relaxed);
  }
  for (int i = 0; i < n; i++) {
    started += atomic_load_explicit(&p->workers[i].started,
                                    memory_order_relaxed);
    cancelled += atomic_load_explicit(&p->workers[i].cancelled,
                                      memory_order_relaxed);
  }
  uint64_t settled_c = atomic_load(&p->settled_cancelled);
  uint64_t settled_f = atomic_load(&p->settled_failed);
  uint64_t submitted = atomic_load(&p->submitted);
  st->submitted = submitted;
  st->running = sub_floor(started, completed + failed);
  st->completed = completed;
  st->failed = failed + settled_f;
  st->cancelled = cancelled + settled_c;
  st->queued = sub_floor(submitted, started + cancelled + settled_c + settled_f);
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
    "thread_pool", pool_submit, pool_shutdown, pool_destroy, pool_stats,
    pool_max_workers};

int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_opts *opts) {
  if (out != NULL)
    *out = NULL;
  cf_thread_pool_opts o;
  memset(&o, 0, sizeof o);
  if (opts != NULL)
    o = *opts;
  if (out == NULL || o.max_workers < 0 || o.max_queued < 0 ||
      (o.stack_size != 0 && o.stack_size < 65536))
    return CF_EINVAL;
  if (o.max_workers == 0)
    o.max_workers = cf_thread_pool_default_workers();
  pool *p = cf__fault(CF__FAULT_ALLOC)
                ? NULL
                : aligned_alloc(CF__CACHELINE,
                                (sizeof *p + CF__CACHELINE - 1) /
                                    CF__CACHELINE * CF__CACHELINE);
  if (p == NULL)
    return CF_ENOMEM;
  memset(p, 0, sizeof *p);
  size_t wbytes = (size_t)o.max_workers * sizeof(worker);
  p->workers = cf__fault(CF__FAULT_ALLOC)
                   ? NULL
                   : aligned_alloc(CF__CACHELINE, wbytes);
  if (o.thread_name_prefix != NULL)
    p->prefix = cf__asprintf("%s", o.thread_name_prefix);
  else
    p->prefix = cf__asprintf("cfpool%d", atomic_fetch_add(&pool_counter, 1));
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (p->workers == NULL || p->prefix == NULL ||
      pthread_cond_init(&p->qspace, &ca) != 0) {
    pthread_condattr_destroy(&ca);
    free(p->workers);
    free(p->prefix);
    free(p);
    return CF_ENOMEM;
  }
  pthread_condattr_destroy(&ca);
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
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
#if defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  pthread_mutex_init(&p->qlock, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_mutex_init(&p->wlock, NULL);
  pthread_cond_init(&p->joined_cv, NULL);
  cf__executor_init(&p->base, &pool_vtable);
  *out = &p->base;
  return 0;
}
