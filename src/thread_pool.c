/*
 * thread_pool.c - the thread-pool executor: options, submit, workers,
 * shutdown, stats and fork. The queue, idle workers and waiting inside a
 * worker are in pool_queue.c, pool_idle.c and pool_help.c; pool.h has the
 * structures, the data flow and the locks.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "fork.h"
#include "pool.h"

static const cf__executor_vtable pool_vtable;
static _Atomic int pool_counter;
_Thread_local worker *cf__current_worker;

/* Live pools, for the fork handlers (registry_mu -> each pool's locks). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pool *registry;

/* The CPUs this process may run on. */
static int usable_cpus(void) {
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
  return cpus;
}

int cf_thread_pool_default_workers(void) {
  int cpus = usable_cpus();
  return cpus + 4 < 32 ? cpus + 4 : 32;
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */

/* A failing initializer breaks the pool: its code and message (cf_raise)
 * become part of every failed future's error, and are printed once. */
static void break_pool(pool *p, int rc, char *init_msg) {
  char *msg = cf__asprintf(
      "a worker initializer failed: %s (%s); the pool is broken",
      init_msg != NULL ? init_msg : cf_strerror(rc), cf_err_name(rc));
  free(init_msg);
  bool first = false;
  cf__spin_lock(&p->qlock);
  if (!atomic_load(&p->broken)) {
    p->broken_msg = msg;
    msg = NULL;
    atomic_store(&p->broken, true);
    first = true;
  }
  cf__spin_unlock(&p->qlock);
  free(msg);
  if (first) /* Python logs "Exception in initializer:" */
    fprintf(stderr, "cfutures: %s: %s\n", p->prefix,
            p->broken_msg != NULL ? p->broken_msg
                                  : "a worker initializer failed");
  settle_everything(p, CF_EBROKEN, p->broken_msg);
  wake_all(p);
}


static void *worker_main(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  char name[16];
  snprintf(name, sizeof name, "%s_%d", p->prefix, w->index);
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#endif
  cf__current_worker = w;
  w->stack_reserve = HELP_STACK_RESERVE;
#if defined(__linux__) && defined(__GLIBC__)
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *addr;
    size_t size;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      w->stack_lo = (uintptr_t)addr; /* stacks grow down on Linux targets */
      /* A quarter of the stack, at most HELP_STACK_RESERVE: with the
       * smallest stack accepted a task can still run what it waits for. */
      if (size / 4 < w->stack_reserve)
        w->stack_reserve = size / 4;
    }
    pthread_attr_destroy(&attr);
  }
#endif
  install_wait_hook(w);
  if (p->initializer != NULL) {
    cf__raise_clear();
    int rc = p->initializer(p->initarg);
    if (rc != 0) {
      rc = rc < 0 ? rc : CF_ETASK;
      break_pool(p, rc, cf__raise_take(rc));
      goto out;
    }
  }
  for (;;) {
    /* A task (or the initializer, or a callback this worker ran) that
     * forked returns in the child too: this copy of the worker has no
     * pool there, so it ends (see cf/executor.h). */
    if (CF__UNLIKELY(pool_forked(p))) {
      atomic_store(&p->child_done, 1); /* a free in the child waits */
      cf__park_wake(&p->child_done, INT32_MAX);
      return NULL;
    }
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
  cf__current_worker = NULL;
  atomic_fetch_add(&p->exited, 1);
  cf__park_wake(&p->exited, INT32_MAX);
  return NULL;
}

/* Starts one more worker unless the pool is full or shut down. Returns 0
 * or a negative errno. Called with wlock held. */
/* Starts a worker (wlock held) even after shutdown: the shutdown's own
 * start, for work queued before it that no worker is there to run. */
static int spawn_now_locked(pool *p) {
  int n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
  if (n >= p->max_workers || CF__UNLIKELY(pool_forked(p)))
    return 0; /* never a thread for a parent's pool in a fork child */
  worker *w = &p->workers[n];
  memset(w, 0, sizeof *w);
  w->p = p;
  w->index = n;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (p->stack_size != 0)
    pthread_attr_setstacksize(&attr, p->stack_size);
  /* Published before the thread exists: whoever sees a task it ran done
   * then also sees it among the workers (stats sum their counters). */
  w->started_ok = true;
  atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
  int rc = cf__fault(CF__FAULT_THREAD_CREATE)
               ? EAGAIN
               : pthread_create(&w->thread, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    w->started_ok = false;
    atomic_store_explicit(&p->nworkers, n, memory_order_release);
    return -rc;
  }
  return 0;
}

/* A submit's start of a worker (wlock held): none once shut down. */
static int spawn_locked(pool *p) {
  if (atomic_load(&p->shutdown))
    return 0;
  return spawn_now_locked(p);
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
 * seen (and nothing fails) or starts after the queue was taken. Returns
 * whether it detached the queue into *d, for settle_orphans() once the
 * caller no longer counts as starting a worker (settling runs callbacks,
 * which may free the pool). */
static bool take_queued_no_workers(pool *p, qdetached *d) {
  bool taken = false;
  pthread_mutex_lock(&p->wlock);
  if (atomic_load(&p->nworkers) == 0) {
    cf__spin_lock(&p->qlock);
    fifo_detach_locked(p, d);
    cf__spin_unlock(&p->qlock);
    taken = true;
  }
  pthread_mutex_unlock(&p->wlock);
  return taken;
}

static void settle_orphans(pool *p, qdetached *d, int rc) {
  char *msg = cf__asprintf("cannot start a worker thread: %s", cf_strerror(rc));
  settle_detached(p, d, rc, msg);
  free(msg);
  wake_space_waiters(p);
}

/* finish_start's failure: no worker could start. Out of line, with its
 * copy of the queue's last segment. */
static __attribute__((noinline)) void finish_start_failed(pool *p, int rc) {
  qdetached d;
  bool taken = take_queued_no_workers(p, &d);
  atomic_fetch_add(&p->starting_done, 1); /* destroy may go on from here */
  if (taken)
    settle_orphans(p, &d, rc);
}

/* The end of a submit that counted itself as starting a worker. */
static void finish_start(pool *p) {
  int rc = adjust_workers(p);
  if (CF__UNLIKELY(rc != 0)) {
    finish_start_failed(p, rc);
    return;
  }
  atomic_fetch_add(&p->starting_done, 1); /* destroy may go on from here */
}

/* The FIFO needs a new segment: allocates one with qlock released and
 * keeps it as the spare, unless the pool shut down meanwhile (destroy may
 * already have released its spares). Called and returns with qlock held;
 * the caller re-checks the pool's state. Returns 0 or CF_ENOMEM. */
static int grow_locked(pool *p) {
  cf__spin_unlock(&p->qlock);
  qseg *s = cf__malloc(sizeof *s);
  cf__spin_lock(&p->qlock);
  if (s == NULL)
    return CF_ENOMEM;
  if (atomic_load_explicit(&p->shutdown, memory_order_relaxed)) {
    free(s);
    return 0;
  }
  /* A consumer may have retired a segment meanwhile: keep one. */
  s = atomic_exchange_explicit(&p->spare, s, memory_order_acq_rel);
  if (s != NULL) {
    cf__spin_unlock(&p->qlock);
    free(s);
    cf__spin_lock(&p->qlock);
  }
  return 0;
}

/* Counts n tasks pushed and published (qlock held), and returns how many
 * worker starts the caller must ask for (finish_start each): one per
 * task, as Python's submit calls _adjust_thread_count once per task, up
 * to the workers the pool may still start. Starting one touches wlock and
 * the worker array: counted under the lock that saw the pool live, so
 * destroy waits for it (see finish_start). After unlocking, the caller
 * claims a parked worker to wake (claim_idle: the publication was the
 * barrier). */
static inline __attribute__((always_inline)) uint32_t
pushed_locked(pool *p, size_t n) {
  atomic_store_explicit(
      &p->submitted,
      atomic_load_explicit(&p->submitted, memory_order_relaxed) + n,
      memory_order_relaxed);
  int room =
      p->max_workers - atomic_load_explicit(&p->nworkers, memory_order_relaxed);
  uint32_t starts = room <= 0 ? 0 : n < (size_t)room ? (uint32_t)n : (uint32_t)room;
  p->starting += starts;
  return starts;
}

/* ---------------------------------------------------------------------- */
/* Submitting                                                              */

/* Waits for room in a bounded queue (called without qlock). Returns 0 to
 * retry, or CF_EAGAIN at the deadline. */
static int wait_for_room(pool *p, int64_t deadline) {
  if (cf_now_ns() >= deadline)
    return CF_EAGAIN;
  worker *w = cf__current_worker;
  if (deadline == CF_FOREVER && is_own_worker(p) && stack_allows_nesting(w)) {
    /* Backpressure inside our own worker, without a deadline: make room
     * by running work (if every worker blocked here, nothing would ever
     * drain the queue). */
    cf_future *t = next_task(w);
    if (t != NULL)
      run_one(w, t);
    else
      sched_yield();
    return 0;
  }
  /* Announce ourselves, re-check, then park; a worker that takes work
   * (and shutdown) bumps space_seq after a full fence. */
  atomic_fetch_add(&p->space_waiters, 1);
  uint32_t seq = atomic_load(&p->space_seq);
  uint64_t head = atomic_load(&p->chead);
  if ((int64_t)(atomic_load(&p->ptail) - head) >= p->max_queued &&
      !atomic_load(&p->shutdown) && !atomic_load(&p->broken))
    cf__park_wait(&p->space_seq, seq, deadline);
  atomic_fetch_sub(&p->space_waiters, 1);
  return 0;
}

static int pool_submit(cf_executor *ex, const cf_task *task, int64_t deadline,
                       cf_future **out) {
  pool *p = (pool *)ex;
  if (task->fn == NULL)
    return CF_EINVAL; /* this backend runs the function itself */
  if (atomic_load_explicit(&p->broken, memory_order_relaxed))
    return CF_EBROKEN;
  if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
    return CF_ESHUTDOWN;
  cf_future *f = cf__future_alloc(ex, out != NULL ? 2 : 1, 0);
  if (f == NULL)
    return CF_ENOMEM;
  f->u.task.fn = task->fn;
  f->u.task.arg = task->arg;

  int rc = 0;
  cf__spin_lock(&p->qlock);
  for (;;) {
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
      rc = CF_EBROKEN;
    else if (atomic_load_explicit(&p->shutdown, memory_order_relaxed))
      rc = CF_ESHUTDOWN;
    if (rc != 0)
      break;
    if (p->max_queued != 0 && (int64_t)queued_now(p) >= p->max_queued) {
      cf__spin_unlock(&p->qlock);
      rc = wait_for_room(p, deadline);
      /* A task run meanwhile (wait_for_room) may have forked: in the
       * child the pool is the parent's, and this submit must not start a
       * worker for it. */
      if (rc == 0 && CF__UNLIKELY(pool_forked(p)))
        rc = CF_EFORKED;
      cf__spin_lock(&p->qlock);
      if (rc != 0)
        break;
      continue;
    }
    f->u.task.arg_dtor = task->arg_dtor;
    if (fifo_push_locked(p, f))
      break;
    f->u.task.arg_dtor = NULL;
    rc = grow_locked(p);
    if (rc != 0)
      break;
  }
  if (rc != 0) {
    cf__spin_unlock(&p->qlock);
    cf__future_discard(f); /* never published: no destructor, listeners */
    return rc;
  }
  fifo_publish_locked(p, 1);
  bool start = pushed_locked(p, 1) != 0;
  cf__spin_unlock(&p->qlock);
  wake_claimed(claim_idle(p));
  if (out != NULL)
    *out = f;
  if (cf__fault(CF__FAULT_SUBMIT_PAUSE))
    cf__fault_pause();
  /* After the enqueue, as Python's _adjust_thread_count: a worker that
   * starts now finds this task, so idle tokens match queued work. */
  if (start)
    finish_start(p);
  return 0;
}

/* Many tasks under one queue lock (the map's refills). A bounded queue
 * takes the one-by-one path, which knows how to wait for room. */
static int pool_submit_batch(cf_executor *ex, const cf_task *tasks, size_t n,
                             int64_t deadline, cf_future **out, size_t *done) {
  pool *p = (pool *)ex;
  *done = 0;
  if (p->max_queued != 0 || n == 1) {
    for (size_t i = 0; i < n; i++) {
      int rc = pool_submit(ex, &tasks[i], deadline, &out[i]);
      if (rc != 0)
        return rc;
      *done = i + 1;
    }
    return 0;
  }
  size_t k = 0;
  int rc = 0;
  for (; k < n; k++) {
    if (tasks[k].fn == NULL) {
      rc = CF_EINVAL;
      break;
    }
    cf_future *f = cf__future_alloc(ex, 2, 0);
    if (f == NULL) {
      rc = CF_ENOMEM;
      break;
    }
    f->u.task.fn = tasks[k].fn;
    f->u.task.arg = tasks[k].arg;
    f->u.task.arg_dtor = tasks[k].arg_dtor;
    out[k] = f;
  }
  size_t pushed = 0, published = 0;
  cf__spin_lock(&p->qlock);
  while (pushed < k) {
    int state_rc = atomic_load_explicit(&p->broken, memory_order_relaxed)
                       ? CF_EBROKEN
                   : atomic_load_explicit(&p->shutdown, memory_order_relaxed)
                       ? CF_ESHUTDOWN
                       : 0;
    if (state_rc != 0) {
      rc = state_rc;
      break;
    }
    if (fifo_push_locked(p, out[pushed])) {
      pushed++;
      continue;
    }
    /* Nothing pushed stays unpublished while qlock is released. */
    fifo_publish_locked(p, pushed - published);
    published = pushed;
    rc = grow_locked(p);
    if (rc != 0)
      break;
  }
  if (pushed > published)
    fifo_publish_locked(p, pushed - published);
  uint32_t starts = pushed > 0 ? pushed_locked(p, pushed) : 0;
  cf__spin_unlock(&p->qlock);
  worker *wake = pushed > 0 ? claim_idle(p) : NULL;
  for (size_t i = pushed; i < k; i++) {
    out[i]->u.task.arg_dtor = NULL; /* refused: the caller keeps the arg */
    cf__future_discard(out[i]);
    out[i] = NULL;
  }
  wake_claimed(wake);
  *done = pushed;
  for (uint32_t i = 0; i < starts; i++)
    finish_start(p);
  return pushed == n ? 0 : rc;
}

/* ---------------------------------------------------------------------- */
/* Shutdown and destruction                                                */

/* A worker, or in a fork child the thread that forked from a task of
 * this pool while that task runs (waiting for the pool would wait for
 * its own stack). */
static bool is_own_thread_here(pool *p) {
  return is_own_worker(p) ||
         (p->child_worker != NULL && cf__keeper_here(&p->base));
}

/* Waits until every started worker has left worker_main, or the deadline. */
static int wait_exited(pool *p, int64_t deadline) {
  if (p->forked) {
    /* In a fork child only a task that forked runs here: wait for it to
     * return to its worker's loop (which then ends), as for a worker. */
    while (p->child_worker != NULL && cf__keeper_alive(&p->base) &&
           atomic_load(&p->child_done) == 0)
      if (cf__park_wait(&p->child_done, 0, deadline) == CF_ETIMEDOUT &&
          atomic_load(&p->child_done) == 0)
        return CF_ETIMEDOUT;
    return 0;
  }
  for (;;) {
    uint32_t seen = atomic_load(&p->exited);
    if ((int)seen >= atomic_load(&p->nworkers))
      return 0;
    if (cf__park_wait(&p->exited, seen, deadline) == CF_ETIMEDOUT &&
        (int)atomic_load(&p->exited) < atomic_load(&p->nworkers))
      return CF_ETIMEDOUT;
  }
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
  int n = p->forked ? 0 : atomic_load(&p->nworkers);
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

static int pool_shutdown(cf_executor *ex, unsigned flags, int64_t deadline) {
  pool *p = (pool *)ex;
  bool cancel_futures = flags & CF_SHUTDOWN_CANCEL_FUTURES;
  pthread_mutex_lock(&p->wlock); /* orders us against spawn_locked */
  cf__spin_lock(&p->qlock);
  atomic_store(&p->shutdown, true);
  /* From here no submit pushes (it checks the flag under qlock), and one
   * that pushed before may not have started the worker for its task yet
   * (its start is refused now): start one here, so queued work runs as
   * Python's shutdown would. Decided under qlock, where the queue is
   * final, so no task accepted before the flag is left without one. */
  bool start = atomic_load(&p->nworkers) == 0 && queued_now(p) > 0 &&
               !cancel_futures && !p->forked;
  cf__spin_unlock(&p->qlock);
  int spawn_rc = start ? spawn_now_locked(p) : 0;
  qdetached orphans;
  cf__spin_lock(&p->qlock);
  bool orphaned = atomic_load(&p->nworkers) == 0;
  if (orphaned)
    fifo_detach_locked(p, &orphans);
  cf__spin_unlock(&p->qlock);
  pthread_mutex_unlock(&p->wlock);
  /* Still no worker (none could start, or a submit queued after our
   * check): nothing will run what is queued; settle it. */
  if (orphaned) {
    char *msg = spawn_rc != 0 ? cf__asprintf("cannot start a worker thread: %s",
                                             cf_strerror(spawn_rc))
                              : NULL;
    settle_detached(p, &orphans, spawn_rc != 0 ? spawn_rc : CF_ECANCELED, msg);
    free(msg);
  }
  wake_space_waiters(p);
  if (cancel_futures) {
    atomic_store(&p->cancelling, true);
    settle_everything(p, CF_ECANCELED, NULL);
  }
  wake_all(p);
  if (!(flags & CF_SHUTDOWN_WAIT))
    return 0;
  if (is_own_thread_here(p))
    return CF_EDEADLK;
  int rc = wait_exited(p, deadline);
  if (rc != 0)
    return rc;
  join_all(p);
  return 0;
}

static bool pool_is_own_thread(cf_executor *ex) {
  return is_own_thread_here((pool *)ex);
}

static void registry_add(pool *p) {
  pthread_mutex_lock(&registry_mu);
  p->reg_prev = NULL;
  p->reg_next = registry;
  if (registry != NULL)
    registry->reg_prev = p;
  registry = p;
  pthread_mutex_unlock(&registry_mu);
}

static void registry_remove(pool *p) {
  pthread_mutex_lock(&registry_mu);
  if (p->reg_prev != NULL)
    p->reg_prev->reg_next = p->reg_next;
  else
    registry = p->reg_next;
  if (p->reg_next != NULL)
    p->reg_next->reg_prev = p->reg_prev;
  pthread_mutex_unlock(&registry_mu);
}

static void pool_destroy(cf_executor *ex) {
  pool *p = (pool *)ex;
  /* A submit that saw the pool live may still be starting a worker.
   * (In a fork child a submit that the forking thread was in the middle
   * of finishes later and counts one more: hence >=.) */
  for (;;) {
    cf__spin_lock(&p->qlock);
    uint32_t starting = p->starting;
    cf__spin_unlock(&p->qlock);
    if ((int32_t)(atomic_load(&p->starting_done) - starting) >= 0)
      break;
    sched_yield();
  }
  registry_remove(p);
  /* The FIFO is empty by now (every worker ran dry or settled it): its
   * segments from the head on, and the spare. */
  for (qseg *s = p->hseg, *next; s != NULL; s = next) {
    next = s != p->tseg ? s->next : NULL;
    free(s);
  }
  free(atomic_load(&p->spare));
  pthread_mutex_destroy(&p->wlock);
  pthread_cond_destroy(&p->joined_cv);
  free(p->workers);
  free(p->prefix);
  free(p->broken_msg);
  p->hseg = p->tseg = NULL;
  atomic_store(&p->spare, NULL);
  p->workers = NULL;
  p->prefix = NULL;
  p->broken_msg = NULL;
}

/* ---------------------------------------------------------------------- */
/* Stats                                                                   */

static uint64_t sub_floor(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

static void pool_stats(cf_executor *ex, cf_executor_stats *st) {
  pool *p = (pool *)ex;
  uint64_t started = 0, completed = 0, failed = 0, cancelled = 0;
  int n =
      p->forked ? 0 : atomic_load_explicit(&p->nworkers, memory_order_acquire);
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
  int idle_now = p->forked ? 0 : atomic_load(&p->idle_now);
  st->idle_workers = (uint32_t)(idle_now > 0 ? idle_now : 0);
  st->max_workers = (uint32_t)p->max_workers;
}

static int pool_max_workers(cf_executor *ex) {
  return ((pool *)ex)->max_workers;
}

/* ---------------------------------------------------------------------- */
/* fork                                                                    */

/* In a fork child, the parent's pool has no threads: settle everything it
 * would have run (queued, slotted, running on a worker of the parent)
 * with CF_EFORKED and make it refuse work. */
static void pool_forked_settle(cf_executor *ex) {
  pool *p = (pool *)ex;
  static const char msg[] =
      "the executor belongs to the parent process: its workers do not exist "
      "in this forked child";
  pthread_mutex_lock(&p->wlock);
  cf__spin_lock(&p->qlock);
  p->forked = true;
  atomic_store(&p->shutdown, true);
  /* What the parent's threads were in the middle of never ends here:
   * submits starting a worker, a join. */
  atomic_store(&p->starting_done, p->starting);
  cf__spin_unlock(&p->qlock);
  /* Nobody parked here will be woken by anyone: the idle stack is empty
   * (and no worker is on it, should anything look). */
  int n = atomic_load(&p->nworkers);
  cf__spin_lock(&p->ilock);
  for (int i = 0; i < n; i++)
    p->workers[i].on_stack = false;
  p->idle_top = NULL;
  atomic_store(&p->nidle, 0);
  cf__spin_unlock(&p->ilock);
  p->joining = p->joined = true;
  pthread_mutex_unlock(&p->wlock);
  settle_everything(p, CF_EFORKED, msg);
  /* Tasks the parent's workers were running: their frames are on those
   * workers' stacks, copied into this process. Not those of the worker
   * that forked: they go on here, and their returns finish them (they
   * write their outcomes into their futures as they run). */
  for (int i = 0; i < n; i++) {
    if (&p->workers[i] == p->child_worker && cf__keeper_alive(&p->base))
      continue; /* its frames are KEEP, and it is pushing and popping them */
    for (frame *fr = p->workers[i].top; fr != NULL; fr = fr->up) {
      cf__outcome o = {CF_EFORKED, cf__asprintf("%s", msg), CF_VALUE_INIT};
      cf__future_finish(fr->f, &o, &p->sink);
    }
  }
  wake_space_waiters(p);
}

/* Prepare holds every pool's spinlocks (the FIFO's ends and the idle
 * stack must not be copied half-updated: no push is caught between taking
 * an item and publishing it), not its wlock: what wlock guards is
 * published atomically (nworkers, a worker's struct before it), and the
 * child never spawns or joins for the parent's pool. Holding spinlocks
 * also keeps the number of mutexes held at once small (ThreadSanitizer
 * tracks at most 64). */
void cf__pool_atfork(int phase) {
  if (phase == CF__FORK_PREPARE) {
    pthread_mutex_lock(&registry_mu);
    for (pool *p = registry; p != NULL; p = p->reg_next) {
      cf__spin_lock(&p->qlock);
      cf__spin_lock(&p->hlock);
      cf__spin_lock(&p->ilock);
    }
    return;
  }
  for (pool *p = registry; p != NULL; p = p->reg_next) {
    if (phase == CF__FORK_PARENT) {
      cf__spin_unlock(&p->ilock);
      cf__spin_unlock(&p->hlock);
      cf__spin_unlock(&p->qlock);
    } else {
      atomic_store(&p->qlock.locked, 0);
      atomic_store(&p->hlock.locked, 0);
      atomic_store(&p->ilock.locked, 0);
      pthread_mutex_init(&p->wlock, NULL);
      pthread_cond_init(&p->joined_cv, NULL);
    }
  }
  if (phase == CF__FORK_PARENT) {
    pthread_mutex_unlock(&registry_mu);
  } else {
    pthread_mutex_init(&registry_mu, NULL);
    /* Forked from inside a task: this thread is no worker here, but the
     * tasks on its stack go on until they return, and finish their own
     * futures (KEEP). Its wait hook stays: waits from those tasks still
     * see their own stack (CF_EDEADLK), and the hook runs no more of the
     * pool's work once the pool is forked (pool_help.c). */
    worker *w = cf__current_worker;
    if (w != NULL) {
      w->p->child_worker = w;
      cf__keeper_mark(&w->p->base); /* even with no frame: its hook stays */
      for (frame *fr = w->top; fr != NULL; fr = fr->up)
        cf__future_keep_in_child(fr->f);
      cf__current_worker = NULL;
    }
  }
}

/* ---------------------------------------------------------------------- */
/* Creation                                                                */

/* A thread blocking on one of the pool's futures spins first only while
 * a CPU is left for it: once the pool's workers run tasks on every CPU,
 * its spin takes a CPU from the very tasks it waits for (a CPU-bound
 * map's consumer on two cores spun 20 us per chunk; bench/NOTES.md
 * section 29). Workers counted as running tasks: all but those inside
 * idle(). The idle spinner counts as idle although it holds a CPU for up
 * to 50 us: counting it made a map of 2 us chunks twice as slow, its
 * consumer sleeping on chunks the spin would have caught. A worker
 * sleeping in a wait inside its task counts as running (a shorter spin
 * for the thread waiting on it, never a missed wake-up); a worker
 * waiting here holds its own CPU, which its spin takes from nobody.
 * `cpus` is the affinity mask's size at creation (a CPU quota is not
 * seen). */
static int64_t pool_spin_ns(cf_executor *ex) {
  pool *p = (pool *)ex;
  if (pool_forked(p))
    return CF__WAIT_SPIN_NS;
  int running = atomic_load_explicit(&p->nworkers, memory_order_relaxed) -
                atomic_load_explicit(&p->idle_now, memory_order_relaxed);
  worker *self = cf__current_worker;
  if (self != NULL && self->p == p)
    running--;
  return running >= p->cpus ? 0 : CF__WAIT_SPIN_NS;
}

static const cf__executor_vtable pool_vtable = {
    .name = "thread_pool",
    .submit = pool_submit,
    .submit_batch = pool_submit_batch,
    .cancel = NULL, /* a running thread cannot be interrupted */
    .shutdown = pool_shutdown,
    .destroy = pool_destroy,
    .stats = pool_stats,
    .max_workers = pool_max_workers,
    .is_own_thread = pool_is_own_thread,
    .forked = pool_forked_settle,
    .spin_ns = pool_spin_ns,
};

int cf_thread_pool_new(const cf_thread_pool_opts *opts, cf_executor **out) {
  if (out != NULL)
    *out = NULL;
  cf_thread_pool_opts o;
  memset(&o, 0, sizeof o);
  if (opts != NULL)
    o = *opts;
  if (out == NULL || o.max_workers < 0 ||
      o.max_workers > CF_THREAD_POOL_MAX_WORKERS || o.max_queued < 0 ||
      (o.stack_size != 0 && o.stack_size < CF_THREAD_POOL_MIN_STACK))
    return CF_EINVAL;
  if (o.max_workers == 0)
    o.max_workers = cf_thread_pool_default_workers();
  pool *p = cf__aligned_alloc(CF__CACHELINE, sizeof *p);
  if (p == NULL)
    return CF_ENOMEM;
  memset(p, 0, sizeof *p);
  size_t wbytes = (size_t)o.max_workers * sizeof(worker);
  p->workers = cf__aligned_alloc(CF__CACHELINE, wbytes);
  if (o.thread_name_prefix != NULL)
    p->prefix = cf__asprintf("%s", o.thread_name_prefix);
  else
    p->prefix = cf__asprintf("cfpool%d", atomic_fetch_add(&pool_counter, 1));
  /* The FIFO always has a segment: its head and tail start there. */
  p->hseg = p->tseg = cf__malloc(sizeof(qseg));
  if (p->workers == NULL || p->prefix == NULL || p->hseg == NULL) {
    free(p->hseg);
    free(p->workers);
    free(p->prefix);
    free(p);
    return CF_ENOMEM;
  }
  p->hseg->next = NULL;
  memset(p->workers, 0, wbytes);
  p->max_workers = o.max_workers;
  p->cpus = usable_cpus();
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
  registry_add(p);
  *out = &p->base;
  return 0;
}
