/*
 * future.c - cf_future: states, outcome, waiting, callbacks.
 *
 * See future_int.h for the state word and the ownership rules. Lock order:
 * stripe lock -> (an internal listener's own lock). No lock is held while
 * a task, a done callback, an arg destructor or a value destructor runs.
 *
 * Lifetime: a completer always holds a reference across the completion
 * (executors hold theirs until after it; cf_future_set_* callers must hold
 * one), so waking waiters and firing listeners never touches freed memory
 * even if a waiter drops the last user reference at once.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "executor_int.h"
#include "fault.h"
#include "fork.h"
#include "future_int.h"
#include "park.h"

/* ---------------------------------------------------------------------- */
/* Stripe locks for listener lists                                          */

/* Spinlocks, not mutexes: the sections are a few list operations and the
 * internal listeners' notify (record, wake), and the fork handler must
 * hold all of them at once, which a mutex-tracking tool such as
 * ThreadSanitizer's deadlock detector (64 locks at most) refuses. Each on
 * its own cache line. */
#define NSTRIPES 64
static struct {
  cf__spinlock lock;
} __attribute__((aligned(CF__CACHELINE))) stripes[NSTRIPES];

static cf__spinlock *stripe_of(const cf_future *f) {
  uintptr_t h = (uintptr_t)f;
  h ^= h >> 6;
  h ^= h >> 12;
  return &stripes[h % NSTRIPES].lock;
}

/* ---------------------------------------------------------------------- */
/* Threads across fork                                                     */

/* A thread's id (never reused; 0 until first asked for). After a fork,
 * the forking thread keeps its id in the child: forker_tid, alive there
 * since generation forker_since. */
static _Thread_local uint64_t my_tid;
static _Atomic uint64_t tid_counter;
static uint64_t forker_tid;
static uint32_t forker_since;

static uint64_t thread_id(void) {
  if (CF__UNLIKELY(my_tid == 0))
    my_tid = atomic_fetch_add(&tid_counter, 1) + 1;
  return my_tid;
}

/* Whether the thread that attached l (an internal listener) exists in
 * this process: attached in this generation, or by the thread that has
 * done every fork since. */
static bool listener_alive(const cf__listener *l, uint32_t gen) {
  return CF__LIKELY(l->fork_gen == gen) ||
         (l->tid == forker_tid && l->fork_gen >= forker_since);
}

/* ---------------------------------------------------------------------- */
/* Values, cf_raise                                                        */

void cf_value_release(cf_value *v) {
  if (v == NULL)
    return;
  void (*dtor)(void *) = v->dtor;
  void *p = v->u.ptr;
  memset(v, 0, sizeof *v);
  if (dtor != NULL)
    dtor(p);
}

/* The pending cf_raise message (future_int.h). */
_Thread_local cf__raise_state cf__raise_tls;
static pthread_key_t raise_key;
static pthread_once_t raise_once = PTHREAD_ONCE_INIT;

static void raise_thread_exit(void *p) {
  cf__raise_state *r = p;
  free(r->msg);
  r->msg = NULL;
  r->code = 0;
}

static bool raise_key_ok;

static void raise_key_init(void) {
  raise_key_ok = pthread_key_create(&raise_key, raise_thread_exit) == 0;
}

int cf_raise(int code, const char *fmt, ...) {
  if (code >= 0)
    code = CF_ETASK;
  cf__raise_tls.code = 0;
  free(cf__raise_tls.msg);
  cf__raise_tls.msg = NULL;
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    cf__raise_tls.msg = cf__vasprintf(fmt, ap);
    va_end(ap);
    if (cf__raise_tls.msg != NULL) {
      cf__raise_tls.code = code;
      pthread_once(&raise_once, raise_key_init);
      /* Without a key (none left) a message left at thread exit leaks. */
      if (raise_key_ok && pthread_getspecific(raise_key) == NULL)
        pthread_setspecific(raise_key, &cf__raise_tls);
    }
  }
  return code;
}

void cf__raise_clear(void) { cf__raise_tls.code = 0; }


char *cf__raise_take(int code) {
  char *msg = NULL;
  if (cf__raise_tls.code != 0 && cf__raise_tls.code == code) {
    msg = cf__raise_tls.msg;
    cf__raise_tls.msg = NULL;
  }
  cf__raise_tls.code = 0;
  return msg;
}

void cf__raise_restore(int code, char *msg) {
  free(cf__raise_tls.msg);
  cf__raise_tls.code = code;
  cf__raise_tls.msg = msg;
  if (msg != NULL) {
    pthread_once(&raise_once, raise_key_init);
    if (raise_key_ok && pthread_getspecific(raise_key) == NULL)
      pthread_setspecific(raise_key, &cf__raise_tls);
  }
}

/* ---------------------------------------------------------------------- */
/* Callback failures                                                       */

static pthread_mutex_t handler_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_callback_error_fn handler_fn;
static void *handler_ctx;

void cf_set_callback_error_handler(cf_callback_error_fn fn, void *ctx) {
  pthread_mutex_lock(&handler_mu);
  handler_fn = fn;
  handler_ctx = ctx;
  pthread_mutex_unlock(&handler_mu);
}

void cf__report_callback_error(const cf__cb_sink *sink, cf_future *f, int rc) {
  if (sink != NULL) {
    if (sink->failed != NULL)
      atomic_fetch_add_explicit(sink->failed, 1, memory_order_relaxed);
    if (sink->fn != NULL)
      sink->fn(sink->ctx, f, rc);
    return;
  }
  pthread_mutex_lock(&handler_mu);
  cf_callback_error_fn fn = handler_fn;
  void *ctx = handler_ctx;
  pthread_mutex_unlock(&handler_mu);
  if (fn != NULL) {
    fn(ctx, f, rc);
    return;
  }
  char desc[128];
  cf_future_describe(f, desc, sizeof desc);
  fprintf(stderr, "cfutures: exception calling callback for %s: %s (%d)\n",
          desc, cf_strerror(rc), rc);
}

/* ---------------------------------------------------------------------- */
/* Lifetime                                                                */

_Static_assert(sizeof(struct cf_future) == CF__FUTURE_SIZE,
               "a future is one cache line");

cf_future *cf__future_alloc(cf_executor *owner, uint32_t refs, size_t room) {
  cf_future *f;
  if (room > (size_t)UINT32_MAX * CF__CACHELINE)
    return NULL; /* more than room_lines can say */
  size_t lines = (room + CF__CACHELINE - 1) / CF__CACHELINE;
  size_t total = CF__FUTURE_SIZE + lines * CF__CACHELINE;
  int cls = cf__fcache_class(total);
  if (cls >= 0) /* from the cache: no malloc header, huge pages */
    f = cf__fault(CF__FAULT_ALLOC) ? NULL : cf__fcache_alloc_class(cls);
  else
    f = cf__aligned_alloc(CF__CACHELINE, total);
  if (f == NULL)
    return NULL;
  memset(f, 0, sizeof *f);
  atomic_init(&f->state, CF_PENDING);
  atomic_init(&f->refs, refs);
  f->owner = owner;
  f->room_lines = (uint32_t)lines;
  return f;
}

/* Returns a future's memory. The cache keeps the first 8 bytes of a free
 * block intact, so the poisoned state and the zero count stay readable
 * until the block is reused: a second unref then aborts with a message
 * instead of corrupting the cache. */
static void future_release_memory(cf_future *f) {
  atomic_store_explicit(&f->refs, 0, memory_order_relaxed);
  atomic_store_explicit(&f->state, CF__ST_FREED, memory_order_relaxed);
  int cls = cf__fcache_class(CF__FUTURE_SIZE +
                             (size_t)f->room_lines * CF__CACHELINE);
  if (cls >= 0)
    cf__fcache_free_class(f, cls);
  else
    free(f);
}

void cf__future_discard(cf_future *f) { future_release_memory(f); }

int cf_future_new(cf_future **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = cf__future_alloc(NULL, 1, 0);
  return *out != NULL ? 0 : CF_ENOMEM;
}

cf_future *cf_future_ref(cf_future *f) {
  if (f != NULL)
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
  return f;
}

void cf_future_unref(cf_future *f) {
  if (f == NULL)
    return;
  /* acq_rel rather than release + an acquire fence on the last drop:
   * same code on x86, and ThreadSanitizer understands it. (A load that
   * skips the decrement when it reads 1 was tried: no measurable gain,
   * and two racing drops of one last reference would both free it
   * unnoticed; bench/NOTES.md §13.) */
  uint32_t old = atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel);
  if (CF__UNLIKELY(old == 0))
    cf__fatal("cf_future_unref: future %p has no reference left (state "
              "%#x): a reference was dropped twice, or the future was "
              "already freed",
              (void *)f, (unsigned)atomic_load(&f->state));
  if (old != 1)
    return;
  /* No listener can be attached: internal owners detach before dropping
   * their reference and user callbacks run before completion returns. A
   * future freed while never completed (cf_future_new, then unref) may
   * still carry user callbacks, which then never run: free them. */
  cf__listener *l = f->listeners;
  if (l != NULL) {
    l->prev->next = NULL;
    while (l != NULL) {
      cf__listener *next = l->next;
      CF__ASSERT(l->notify == NULL);
      free(l);
      l = next;
    }
  }
  uint32_t st =
      atomic_load_explicit(&f->state, memory_order_relaxed) & CF__ST_MASK;
  if (st == CF_PENDING) {
    /* A task that never left PENDING (its executor never took it). */
    if (f->u.task.arg_dtor != NULL)
      f->u.task.arg_dtor(f->u.task.arg);
  } else if (st == CF_FINISHED) {
    if (f->err != 0)
      free(f->u.errmsg);
    else if (f->u.value.dtor != NULL) /* memory about to go: no clearing */
      f->u.value.dtor(f->u.value.u.ptr);
  }
  future_release_memory(f);
}

/* ---------------------------------------------------------------------- */
/* Queries                                                                 */

static cf_future_state public_state(uint32_t s) {
  uint32_t st = s & CF__ST_MASK;
  if (st == CF__ST_COMPLETING)
    return CF_RUNNING; /* still not done; close enough for a snapshot */
  if (st == CF__ST_CANCELLING)
    return CF_PENDING;
  return (cf_future_state)st;
}

cf_future_state cf_future_get_state(const cf_future *f) {
  if (f == NULL)
    return CF_STATE_INVALID;
  return public_state(atomic_load_explicit(&f->state, memory_order_acquire));
}

bool cf_future_done(const cf_future *f) {
  return f != NULL &&
         cf__state_final(atomic_load_explicit(&f->state, memory_order_acquire));
}

bool cf_future_running(const cf_future *f) {
  return f != NULL && (atomic_load_explicit(&f->state, memory_order_acquire) &
                       CF__ST_MASK) == CF_RUNNING;
}

bool cf_future_cancelled(const cf_future *f) {
  return f != NULL && (atomic_load_explicit(&f->state, memory_order_acquire) &
                       CF__ST_MASK) == CF_CANCELLED;
}

const char *cf_future_state_name(cf_future_state state) {
  switch (state) {
  case CF_PENDING:
    return "pending";
  case CF_RUNNING:
    return "running";
  case CF_FINISHED:
    return "finished";
  case CF_CANCELLED:
    return "cancelled";
  case CF_STATE_INVALID:
    break;
  }
  return "invalid";
}

cf_error cf_future_get_error(const cf_future *f) {
  cf_error e = {CF_EINVAL, cf_strerror(CF_EINVAL)};
  if (f == NULL)
    return e;
  uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
  if (!cf__state_final(s)) {
    e.code = CF_EINVALSTATE;
    e.message = "future is not done yet";
  } else if ((s & CF__ST_MASK) == CF_CANCELLED) {
    e.code = CF_ECANCELED;
    e.message = cf_strerror(CF_ECANCELED);
  } else {
    e.code = f->err;
    e.message = f->err == 0           ? ""
                : f->u.errmsg != NULL ? f->u.errmsg
                                      : cf_strerror(f->err);
  }
  return e;
}

/* ---------------------------------------------------------------------- */
/* Completion                                                              */

/* Fires the listener list of a completed future: internal listeners under
 * the stripe lock, then user callbacks in order with no lock held. In the
 * child of a fork, the internal listeners of the parent's threads are
 * dropped unrun: whoever waits behind them does not exist here. */
static void fire_listeners(cf_future *f, const cf__cb_sink *sink) {
  cf__spinlock *mu = stripe_of(f);
  cf__listener *user_head = NULL, **user_tail = &user_head;
  uint32_t gen = cf__fork_generation();
  cf__spin_lock(mu);
  cf__listener *l = f->listeners;
  f->listeners = NULL;
  /* The common case, one waiter (a task, a worker, a wait): no list to
   * walk, no callbacks to run after the lock. */
  if (l != NULL && l->next == l && l->notify != NULL) {
    l->attached = false;
    if (listener_alive(l, gen))
      l->notify(l, f);
    cf__spin_unlock(mu);
    return;
  }
  if (l != NULL)
    l->prev->next = NULL; /* open the circle */
  while (l != NULL) {
    cf__listener *next = l->next;
    l->attached = false;
    if (l->notify != NULL) {
      if (listener_alive(l, gen))
        l->notify(l, f);
    } else {
      l->next = NULL;
      *user_tail = l;
      user_tail = &l->next;
    }
    l = next;
  }
  cf__spin_unlock(mu);
  while (user_head != NULL) {
    cf__listener *next = user_head->next;
    int rc = user_head->fn(f, user_head->arg);
    if (rc != 0)
      cf__report_callback_error(sink, f, rc);
    free(user_head);
    user_head = next;
  }
}

/* Wins the right to complete f from one of the states in `from` (a mask
 * of 1 << state): moves it to `interim` and returns the state it had, or
 * -1 if it is in none of them. */
static int begin_complete(cf_future *f, unsigned from, uint32_t interim) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
  for (;;) {
    uint32_t st = s & CF__ST_MASK;
    if (!(from & (1u << st)))
      return -1;
    if (atomic_compare_exchange_weak_explicit(
            &f->state, &s, (s & ~(uint32_t)CF__ST_MASK) | interim,
            memory_order_acquire, memory_order_relaxed))
      return (int)st;
  }
}

#define FROM_PENDING (1u << CF_PENDING)
#define FROM_RUNNING (1u << CF_RUNNING)

/* The states a caller of cf_future_set_result/set_error may complete: a
 * future of its own in either state, an executor's only while PENDING
 * (while RUNNING its owner completes it). */
static unsigned user_completable(const cf_future *f) {
  return f->owner != NULL ? FROM_PENDING : FROM_PENDING | FROM_RUNNING;
}

/* Wakes and notifies whoever the state word `old`, just replaced by a
 * final state, says is waiting. */
static inline void announce(cf_future *f, uint32_t old,
                            const cf__cb_sink *sink) {
  if (old & CF__FL_WAITERS)
    cf__park_wake(&f->state, INT32_MAX);
  if (old & CF__FL_LISTENERS)
    fire_listeners(f, sink);
}

/* Publishes the final state and notifies everyone. */
static void end_complete(cf_future *f, uint32_t final,
                         const cf__cb_sink *sink) {
  uint32_t old = atomic_load_explicit(&f->state, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      &f->state, &old, final | (old & CF__FL_INLINE), memory_order_acq_rel,
      memory_order_relaxed))
    ;
  announce(f, old, sink);
}

/* RUNNING -> final in one exchange, for an owner that wrote the outcome
 * into the future while it ran (cf__future_exec_self): nobody else writes
 * a RUNNING future's fields, so no COMPLETING step is needed to claim
 * them (one locked instruction less per task; bench/NOTES.md 21). False
 * if f is not RUNNING. */
static bool publish_running(cf_future *f, uint32_t final,
                            const cf__cb_sink *sink) {
  uint32_t old = atomic_load_explicit(&f->state, memory_order_relaxed);
  do {
    if ((old & CF__ST_MASK) != CF_RUNNING)
      return false;
  } while (!atomic_compare_exchange_weak_explicit(
      &f->state, &old, final | (old & CF__FL_INLINE), memory_order_acq_rel,
      memory_order_relaxed));
  announce(f, old, sink);
  return true;
}

/* Writes the outcome of a future this thread has moved to COMPLETING from
 * `prev` (releasing the task's arg if it never left PENDING), and
 * publishes it. Takes o's message and value. */
static void write_outcome(cf_future *f, int prev, cf__outcome *o,
                          const cf__cb_sink *sink, _Atomic uint64_t *counter) {
  if (prev == CF_PENDING && f->u.task.arg_dtor != NULL)
    f->u.task.arg_dtor(f->u.task.arg);
  f->err = o->err;
  if (o->err != 0) {
    f->u.errmsg = o->msg;
  } else {
    if (o->msg != NULL) /* rare: a success that left a message */
      free(o->msg);
    f->u.value = o->value;
  }
  o->msg = NULL;
  memset(&o->value, 0, sizeof o->value);
  if (counter != NULL)
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
  end_complete(f, CF_FINISHED, sink);
}

static void outcome_drop(cf__outcome *o) {
  free(o->msg);
  o->msg = NULL;
  cf_value_release(&o->value);
}

/* The outcome is written into the future itself: once the task is taken
 * out, the union that held it is unused until the outcome is published,
 * and nobody but the owner touches a RUNNING future's outcome fields
 * (readers look only after the final state; a fork child does not settle
 * an executor's futures that live on there, lives_in_child, nor those
 * the forking thread is still running, KEEP: it settles only those no
 * thread of the child will finish). */
void cf__future_exec_self(cf_future *f) {
  cf__task_rec t;
  cf__future_take_task(f, &t);
  cf_value *v = &f->u.value;
  *v = (cf_value)CF_VALUE_INIT;
  cf__raise_clear();
  int rc = t.fn(t.arg, v);
  char *msg = NULL;
  if (rc != 0) {
    if (rc > 0)
      rc = CF_ETASK;
    msg = cf__raise_take(rc);
    cf_value_release(v);
  }
  cf__raise_clear();
  if (t.arg_dtor != NULL)
    t.arg_dtor(t.arg);
  f->err = rc;
  if (rc != 0)
    f->u.errmsg = msg;
}

int cf__future_publish_self(cf_future *f, const cf__cb_sink *sink) {
  /* Not RUNNING: not the owner's to finish; leave it alone. */
  return publish_running(f, CF_FINISHED, sink) ? 0 : CF_EINVALSTATE;
}

int cf__future_finish_self(cf_future *f, const cf__cb_sink *sink) {
  if (f->err != CF_ECANCELED)
    return cf__future_publish_self(f, sink);
  if ((atomic_load_explicit(&f->state, memory_order_relaxed) &
       CF__ST_MASK) != CF_RUNNING)
    return CF_EINVALSTATE;
  free(f->u.errmsg);
  f->u.errmsg = NULL;
  return publish_running(f, CF_CANCELLED, sink) ? 0 : CF_EINVALSTATE;
}

int cf__future_finish(cf_future *f, cf__outcome *o, const cf__cb_sink *sink) {
  if (begin_complete(f, FROM_RUNNING, CF__ST_COMPLETING) < 0) {
    outcome_drop(o);
    return CF_EINVALSTATE;
  }
  write_outcome(f, CF_RUNNING, o, sink, NULL);
  return 0;
}

int cf__future_finish_cancelled(cf_future *f, const cf__cb_sink *sink) {
  if (begin_complete(f, FROM_RUNNING, CF__ST_CANCELLING) < 0)
    return CF_EINVALSTATE;
  f->err = CF_ECANCELED;
  end_complete(f, CF_CANCELLED, sink);
  return 0;
}

/* The futures whose arg destructors this thread is running while
 * cancelling them, innermost first (a chain on the stack), so that a
 * destructor that cancels one of them again does not wait for itself. */
typedef struct cancel_frame {
  cf_future *f;
  struct cancel_frame *up;
} cancel_frame;
static _Thread_local cancel_frame *cancelling_here;

static bool cancelling_on_this_thread(const cf_future *f) {
  for (cancel_frame *c = cancelling_here; c != NULL; c = c->up)
    if (c->f == f)
      return true;
  return false;
}

/* Cancels a PENDING future. Returns 0 if this call cancelled it, 2 if it
 * was (or is being) cancelled by another, 1 if it is RUNNING, CF_EBUSY if
 * it is finished. */
static int cancel_pending(cf_future *f, const cf__cb_sink *sink,
                          _Atomic uint64_t *counter) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
  for (;;) {
    uint32_t st = s & CF__ST_MASK;
    if (st == CF_CANCELLED)
      return 2;
    if (st == CF__ST_CANCELLING) {
      /* Another canceller won and is releasing the task's arg: "0" must
       * mean "is cancelled", so wait for it to publish (unless it is this
       * very thread, in an arg destructor). A running future being
       * cancelled by its owner is in this state too. */
      if (!cancelling_on_this_thread(f))
        cf_future_wait_blocking(f, CF_FOREVER);
      return 2;
    }
    if (st == CF_RUNNING)
      return 1;
    if (st != CF_PENDING)
      return CF_EBUSY;
    if (atomic_compare_exchange_weak_explicit(
            &f->state, &s, (s & ~(uint32_t)CF__ST_MASK) | CF__ST_CANCELLING,
            memory_order_acquire, memory_order_relaxed))
      break;
  }
  if (f->u.task.arg_dtor != NULL) {
    cancel_frame fr = {f, cancelling_here};
    cancelling_here = &fr;
    f->u.task.arg_dtor(f->u.task.arg);
    cancelling_here = fr.up;
  }
  f->err = CF_ECANCELED;
  if (counter != NULL)
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
  end_complete(f, CF_CANCELLED, sink);
  return 0;
}

int cf__future_settle(cf_future *f, int err, char *msg, const cf__cb_sink *sink,
                      _Atomic uint64_t *counter) {
  if (err == CF_ECANCELED) {
    free(msg);
    return cancel_pending(f, sink, counter) == 0 ? 0 : CF_EINVALSTATE;
  }
  cf__outcome o = {err, msg, CF_VALUE_INIT};
  int prev = begin_complete(f, FROM_PENDING, CF__ST_COMPLETING);
  if (prev < 0) {
    outcome_drop(&o);
    return CF_EINVALSTATE;
  }
  write_outcome(f, prev, &o, sink, counter);
  return 0;
}

int cf_future_cancel(cf_future *f) {
  if (f == NULL)
    return CF_EINVAL;
  int rc = cancel_pending(f, NULL, NULL);
  if (rc != 1)
    return rc == 2 ? 0 : rc;
  /* RUNNING: only its executor can interrupt it. The pin keeps the
   * executor from being destroyed under us; once pinned, a future still
   * running means the executor is still running it (it cannot finish a
   * shutdown with wait before the future is done). */
  cf_executor *ex = f->owner;
  cf__pin pin;
  if (ex == NULL || ex->vt->cancel == NULL || cf__executor_pin(ex, &pin) != 0)
    return CF_EBUSY;
  rc = CF_EBUSY;
  if ((atomic_load(&f->state) & CF__ST_MASK) == CF_RUNNING &&
      !cf__executor_forked(ex))
    rc = ex->vt->cancel(ex, f);
  cf__executor_unpin(&pin);
  /* A backend that found the work finished meanwhile: not cancelled. */
  return rc == 0 ? 0 : CF_EBUSY;
}

int cf_future_set_running(cf_future *f) {
  if (f == NULL)
    return CF_EINVAL;
  if (f->owner != NULL)
    return CF_EINVALSTATE; /* its executor decides when it runs */
  if (cf__future_claim(f))
    return 0;
  uint32_t st =
      atomic_load_explicit(&f->state, memory_order_acquire) & CF__ST_MASK;
  return (st == CF_CANCELLED || st == CF__ST_CANCELLING) ? CF_ECANCELED
                                                         : CF_EINVALSTATE;
}

/* cf_future_set_result/set_error: completes from PENDING (taking the task
 * from its executor, which then drops it) or, for a future of the
 * caller's own, from RUNNING. */
static int user_complete(cf_future *f, cf__outcome *o) {
  int prev = begin_complete(f, user_completable(f), CF__ST_COMPLETING);
  if (prev < 0) {
    free(o->msg);
    return CF_EINVALSTATE;
  }
  write_outcome(f, prev, o, NULL, NULL);
  return 0;
}

/* A success has no message to place or free: written straight into the
 * future, without an outcome to fill and clear (a ping-pong switch is one
 * set_result; bench/NOTES.md 22). */
int cf_future_set_result(cf_future *f, const cf_value *value) {
  if (f == NULL)
    return CF_EINVAL;
  /* Copied first: the value may live in the task's arg, which a future
   * completed from PENDING releases below. */
  cf_value v = CF_VALUE_INIT;
  if (value != NULL)
    v = *value;
  int prev = begin_complete(f, user_completable(f), CF__ST_COMPLETING);
  if (prev < 0)
    return CF_EINVALSTATE;
  if (prev == CF_PENDING && f->u.task.arg_dtor != NULL)
    f->u.task.arg_dtor(f->u.task.arg);
  f->err = 0;
  f->u.value = v;
  end_complete(f, CF_FINISHED, NULL);
  return 0;
}

int cf_future_set_error(cf_future *f, int code, const char *fmt, ...) {
  if (f == NULL)
    return CF_EINVAL;
  if (code >= 0)
    code = CF_ETASK;
  cf__outcome o = {code, NULL, CF_VALUE_INIT};
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    o.msg = cf__vasprintf(fmt, ap);
    va_end(ap);
  }
  return user_complete(f, &o);
}

void cf__future_take_value(cf_future *f, cf_value *out) {
  *out = f->u.value;
  f->u.value.dtor = NULL;
}

/* ---------------------------------------------------------------------- */
/* Listeners and callbacks                                                 */

int cf__future_listen(cf_future *f, cf__listener *l) {
  cf__spinlock *mu = stripe_of(f);
  cf__spin_lock(mu);
  uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
  for (;;) {
    if (cf__state_final(s)) {
      cf__spin_unlock(mu);
      return 1;
    }
    if ((s & CF__FL_LISTENERS) ||
        atomic_compare_exchange_weak_explicit(
            &f->state, &s, s | CF__FL_LISTENERS, memory_order_acq_rel,
            memory_order_acquire))
      break;
  }
  /* The completer sees LISTENERS in its exchange and takes this lock, so
   * it finds l on the list. */
  l->fork_gen = cf__fork_generation();
  l->tid = thread_id();
  if (f->listeners == NULL) {
    l->prev = l->next = l;
    f->listeners = l;
  } else {
    cf__listener *first = f->listeners;
    l->prev = first->prev;
    l->next = first;
    first->prev->next = l;
    first->prev = l;
  }
  l->attached = true;
  cf__spin_unlock(mu);
  return 0;
}

void cf__future_unlisten(cf_future *f, cf__listener *l) {
  cf__spinlock *mu = stripe_of(f);
  cf__spin_lock(mu);
  if (l->attached) {
    if (l->next == l) {
      f->listeners = NULL;
    } else {
      l->prev->next = l->next;
      l->next->prev = l->prev;
      if (f->listeners == l)
        f->listeners = l->next;
    }
    l->attached = false;
  }
  cf__spin_unlock(mu);
}

static _Thread_local cf__cb_router cb_router;

void cf__cb_router_swap(const cf__cb_router *r, cf__cb_router *prev) {
  if (prev != NULL)
    *prev = cb_router;
  if (r != NULL)
    cb_router = *r;
  else
    memset(&cb_router, 0, sizeof cb_router);
}

int cf_future_add_done_callback(cf_future *f, cf_done_fn fn, void *arg) {
  if (f == NULL || fn == NULL)
    return CF_EINVAL;
  if (cb_router.add != NULL)
    return cb_router.add(cb_router.ctx, f, fn, arg);
  if (!cf_future_done(f)) {
    cf__listener *l = cf__malloc(sizeof *l);
    if (l == NULL)
      return CF_ENOMEM;
    memset(l, 0, sizeof *l);
    l->fn = fn;
    l->arg = arg;
    if (cf__future_listen(f, l) == 0)
      return 0;
    free(l); /* completed meanwhile: run it here */
  }
  int rc = fn(f, arg);
  if (rc != 0)
    cf__report_callback_error(NULL, f, rc);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Waiting                                                                 */

static _Thread_local cf_wait_hook wait_hook;

void cf_wait_hook_swap(const cf_wait_hook *hook, cf_wait_hook *prev) {
  if (prev != NULL)
    *prev = wait_hook;
  if (hook != NULL && hook->wait != NULL) {
    wait_hook = *hook;
    if (hook->waiter == NULL || hook->wake == NULL)
      wait_hook.sleep = NULL; /* incomplete: single waits only */
  } else {
    memset(&wait_hook, 0, sizeof wait_hook);
  }
}

const cf_wait_hook *cf__wait_hook_current(void) {
  return wait_hook.wait != NULL ? &wait_hook : NULL;
}

/* In a fork child, after its executor was orphaned, f is still not done
 * if whoever held it does not exist here: a worker of the parent between
 * taking it and running it, or a completer half-way through. Settle it
 * here. A transient state (a completer writing the outcome) is given a
 * moment first, in case a thread of the child is that completer. */
static void settle_stranded(cf_future *f) {
  static const char why[] = "the executor belongs to the parent process: "
                            "this future was in the hands of one of its "
                            "threads at the fork";
  for (int i = 0; i < 1000; i++) {
    uint32_t st = atomic_load(&f->state) & CF__ST_MASK;
    if (st != CF__ST_COMPLETING && st != CF__ST_CANCELLING)
      break;
    sched_yield();
  }
  uint32_t s = atomic_load(&f->state), st = s & CF__ST_MASK;
  if (st == CF_PENDING) {
    cf__future_settle(f, CF_EFORKED, cf__asprintf("%s", why), NULL, NULL);
  } else if (st == CF_RUNNING) {
    cf__outcome o = {CF_EFORKED, cf__asprintf("%s", why), CF_VALUE_INIT};
    cf__future_finish(f, &o, NULL);
  } else if (st == CF__ST_COMPLETING) {
    /* The outcome may be half-written: give up on it (a value it held is
     * leaked, never freed twice). */
    f->err = CF_EFORKED;
    f->u.errmsg = NULL;
    end_complete(f, CF_FINISHED, NULL);
  } else if (st == CF__ST_CANCELLING) {
    f->err = CF_ECANCELED;
    end_complete(f, CF_CANCELLED, NULL);
  }
}

void cf__keeper_mark(cf_executor *ex) { ex->keep_tid = thread_id(); }

void cf__future_keep_in_child(cf_future *f) {
  atomic_fetch_or(&f->state, CF__FL_KEEP);
  cf__keeper_mark(f->owner);
}

/* The keeper exists here while it is the thread that did every fork
 * since (forker_tid: set by this module's child handler, which may run
 * before or after the one that marked the futures: both name the same
 * thread). */
bool cf__keeper_alive(const cf_executor *ex) {
  return ex->keep_tid != 0 && ex->keep_tid == forker_tid;
}

bool cf__keeper_here(const cf_executor *ex) {
  return cf__keeper_alive(ex) && thread_id() == ex->keep_tid;
}

bool cf__future_kept(const cf_future *f) {
  return (atomic_load(&f->state) & CF__FL_KEEP) && f->owner != NULL &&
         cf__keeper_alive(f->owner);
}

int cf__future_orphan_check(cf_future *f) {
  cf_executor *ex = f->owner;
  if (CF__LIKELY(ex == NULL || !cf__executor_forked(ex)))
    return 0;
  cf__executor_orphan(ex);
  if (!cf__state_final(atomic_load(&f->state))) {
    /* A task that forked goes on here and finishes f itself: on its own
     * thread a wait would be for its own stack; elsewhere, the wait ends
     * when it does. */
    if (cf__future_kept(f))
      return cf__keeper_here(ex) ? CF_EDEADLK : 1;
    settle_stranded(f);
  }
  return 1;
}

/* The wait's check for a future of a forked parent's executor: 0 to go
 * on waiting, 1 if f is done now, or CF_EDEADLK. The common case (no
 * executor, or one not forked) without a call. */
static inline int orphan_wait_check(cf_future *f) {
  if (CF__LIKELY(f->owner == NULL || !cf__executor_forked(f->owner)))
    return 0;
  int rc = cf__future_orphan_check(f);
  if (rc < 0)
    return rc;
  return cf__state_final(atomic_load_explicit(&f->state,
                                              memory_order_acquire));
}

int cf_future_wait_blocking(cf_future *f, int64_t deadline_ns) {
  if (f == NULL)
    return CF_EINVAL;
  if (cf__state_final(atomic_load_explicit(&f->state, memory_order_acquire)))
    return 0;
  /* In a fork child, nobody runs a future of the parent's executors:
   * settle them instead of waiting forever. */
  int orphan = orphan_wait_check(f);
  if (orphan != 0)
    return orphan < 0 ? orphan : 0;
  /* Bounded spin: most waits in a busy pool end within a microsecond or
   * two, far below the cost of a sleep and a wake-up. */
  int64_t now = cf_now_ns();
  if (now >= deadline_ns)
    return CF_ETIMEDOUT;
  const cf__executor_vtable *vt = f->owner != NULL ? f->owner->vt : NULL;
  bool yields = vt != NULL && vt->spin_yields;
  int64_t spin_end = INT64_MIN;
  do {
    for (int i = 0; i < 64; i++) {
      cf__cpu_relax();
      if (cf__state_final(
              atomic_load_explicit(&f->state, memory_order_acquire)))
        return 0;
    }
    if (yields)
      sched_yield();
    /* The backend's budget after the first round: most waits end within
     * it, and the backend's answer may read lines other threads write. */
    if (spin_end == INT64_MIN) {
      spin_end = now + (vt != NULL && vt->spin_ns != NULL
                            ? vt->spin_ns(f->owner)
                            : CF__WAIT_SPIN_NS);
      if (spin_end > deadline_ns)
        spin_end = deadline_ns;
    }
  } while (cf_now_ns() < spin_end);

  uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
  for (;;) {
    if (cf__state_final(s))
      return 0;
    if (!(s & CF__FL_WAITERS)) {
      if (!atomic_compare_exchange_weak_explicit(
              &f->state, &s, s | CF__FL_WAITERS, memory_order_acquire,
              memory_order_acquire))
        continue;
      s |= CF__FL_WAITERS;
    }
    if (cf__park_wait(&f->state, s, deadline_ns) == CF_ETIMEDOUT) {
      s = atomic_load_explicit(&f->state, memory_order_acquire);
      return cf__state_final(s) ? 0 : CF_ETIMEDOUT;
    }
    s = atomic_load_explicit(&f->state, memory_order_acquire);
  }
}

/* The body of cf_future_wait_until, inline in cf_future_wait too: one
 * frame less on every wait of a coroutine (bench/NOTES.md 21). */
static inline int wait_until(cf_future *f, int64_t deadline_ns) {
  if (cf__state_final(atomic_load_explicit(&f->state, memory_order_acquire)))
    return 0;
  int orphan = orphan_wait_check(f);
  if (orphan != 0)
    return orphan < 0 ? orphan : 0;
  if (wait_hook.wait != NULL)
    return wait_hook.wait(wait_hook.ctx, f, deadline_ns);
  return cf_future_wait_blocking(f, deadline_ns);
}

int cf_future_wait_until(cf_future *f, int64_t deadline_ns) {
  if (f == NULL)
    return CF_EINVAL;
  return wait_until(f, deadline_ns);
}

int cf_future_wait(cf_future *f, int64_t timeout_ns) {
  if (f == NULL || timeout_ns < 0)
    return CF_EINVAL;
  /* No clock read (nor a call) for the common "no deadline". */
  return wait_until(f, timeout_ns == CF_FOREVER
                           ? CF_FOREVER
                           : cf_deadline_after(timeout_ns));
}

int cf_future_result(cf_future *f, int64_t timeout_ns, const cf_value **value) {
  if (value != NULL)
    *value = NULL;
  uint32_t s;
  /* Done already (collecting a burst of results): no deadline to compute,
   * no wait to enter. */
  if (f == NULL || timeout_ns < 0 ||
      !cf__state_final(
          s = atomic_load_explicit(&f->state, memory_order_acquire))) {
    int rc = cf_future_wait(f, timeout_ns);
    if (rc != 0)
      return rc;
    s = atomic_load_explicit(&f->state, memory_order_acquire);
  }
  if ((s & CF__ST_MASK) == CF_CANCELLED)
    return CF_ECANCELED;
  if (f->err != 0)
    return f->err;
  if (value != NULL)
    *value = &f->u.value;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Description                                                             */

int cf_future_describe(const cf_future *f, char *buf, size_t size) {
  if (f == NULL || (buf == NULL && size > 0))
    return CF_EINVAL;
  uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
  cf_future_state st = public_state(s);
  int n;
  if (st == CF_FINISHED && f->err != 0 &&
      strcmp(cf_err_name(f->err), "UNKNOWN") == 0)
    n = snprintf(buf, size, "<Future at %p state=finished raised error %d>",
                 (const void *)f, f->err);
  else if (st == CF_FINISHED && f->err != 0)
    n = snprintf(buf, size, "<Future at %p state=finished raised %s>",
                 (const void *)f, cf_err_name(f->err));
  else if (st == CF_FINISHED)
    n = snprintf(buf, size, "<Future at %p state=finished returned %s>",
                 (const void *)f,
                 f->u.value.type != NULL ? f->u.value.type : "value");
  else
    n = snprintf(buf, size, "<Future at %p state=%s>", (const void *)f,
                 cf_future_state_name(st));
  return n;
}

/* ---------------------------------------------------------------------- */
/* fork                                                                    */

void cf__future_atfork(int phase) {
  if (phase == CF__FORK_PREPARE) {
    for (int i = 0; i < NSTRIPES; i++)
      cf__spin_lock(&stripes[i].lock);
    pthread_mutex_lock(&handler_mu);
  } else if (phase == CF__FORK_PARENT) {
    pthread_mutex_unlock(&handler_mu);
    for (int i = NSTRIPES - 1; i >= 0; i--)
      cf__spin_unlock(&stripes[i].lock);
  } else {
    pthread_mutex_init(&handler_mu, NULL);
    for (int i = 0; i < NSTRIPES; i++)
      cf__spin_unlock(&stripes[i].lock);
    /* This thread lives on here; it has since generation gen - 1, or
     * longer if it also did the previous fork. */
    uint64_t me = thread_id();
    if (me != forker_tid) {
      forker_tid = me;
      forker_since = cf__fork_generation() - 1;
    }
  }
}
