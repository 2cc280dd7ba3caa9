/*
 * future_int.h - the future's layout and the interface executors use.
 * Internal: not installed.
 *
 * The state word packs the state and two flags:
 *
 *   bits 0-2  PENDING, RUNNING, FINISHED, CANCELLED (the public values),
 *             or COMPLETING / CANCELLING: a completer has won the race and
 *             is writing the outcome; nobody else may change the future,
 *             and it is not done yet.
 *   bit 3     WAITERS: a thread may be parked on the word (futex); the
 *             completer must wake it.
 *   bit 4     LISTENERS: the listener list may be non-empty; the completer
 *             must take the stripe lock and fire it.
 *   bit 5     INLINE: a worker waiting for this future ran it directly
 *             while it was still queued; kept in the final state so the
 *             executor, dequeuing it later, knows it was not cancelled.
 *
 * Transitions are CAS loops on the word; the outcome fields (err, errmsg,
 * value) are written only by the completer between COMPLETING and the
 * final state, which it publishes with release order, so a reader that
 * sees FINISHED (acquire) sees the outcome.
 *
 * Task ownership: whoever moves a future out of PENDING owns the task's
 * arg. The runner (cf__future_claim) calls arg_dtor after fn returns;
 * a completer that wins straight from PENDING (cancel, set_result,
 * broken-pool drain) calls it before publishing. Either way it runs once.
 * While an executor runs a future's task (RUNNING with an owner), only
 * the runner may complete it: cf_future_set_result/set_error refuse, as
 * the task fields they would overwrite are still in use.
 *
 * Locks: listener lists are guarded by one of 64 stripe mutexes chosen by
 * the future's address. A stripe lock may be held while an internal
 * listener's notify() takes its own lock (as_completed, wait, pool); it is
 * never held while user code runs.
 */
#ifndef CF_FUTURE_INT_H
#define CF_FUTURE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cf/future.h"

enum {
  CF__ST_MASK = 0x7,
  CF__ST_COMPLETING = 4,
  CF__ST_CANCELLING = 5,
  CF__FL_WAITERS = 0x8,
  CF__FL_LISTENERS = 0x10,
  CF__FL_INLINE = 0x20 /* run by a waiting worker, not from the queue */
};

typedef struct cf__listener cf__listener;

/* A node in a future's listener list. Internal listeners (as_completed,
 * wait, helping workers) live in their owner's memory and set notify,
 * which runs under the future's stripe lock: it must only record the
 * event and wake someone, never call back into the future API. User done
 * callbacks are allocated by the future and have notify == NULL. */
struct cf__listener {
  cf__listener *prev, *next; /* circular list; guarded by the stripe lock */
  void (*notify)(cf__listener *l, cf_future *f);
  cf_done_fn fn; /* user callback (notify == NULL) */
  void *arg;
  bool attached; /* on a list; guarded by the stripe lock */
};

/* Where failed done callbacks are reported. */
typedef struct cf__cb_sink {
  cf_callback_error_fn fn;
  void *ctx;
  _Atomic uint64_t *failed; /* counter to bump, or NULL */
} cf__cb_sink;

/* One cache line (64 bytes, 64-byte aligned when it comes from the
 * future cache): the submitter writes it, one worker runs it, the waiter
 * reads it, and each of those moves only this line between cores. The
 * task's fields and the outcome share storage: the task fields are dead
 * (copied out, arg released) before the outcome is written. */
struct cf_future {
  _Atomic uint32_t state; /* see above */
  _Atomic uint32_t refs;
  void *owner;             /* the executor that queued it, or NULL */
  cf__listener *listeners; /* first node of a circular list, or NULL */
  int err;                 /* outcome: 0, a task code, or CF_ECANCELLED */
  union {
    /* While PENDING/RUNNING: written by the executor before the future
     * is published; read by whoever takes it out of PENDING. */
    struct {
      cf_task_fn fn;
      void *arg;
      void (*arg_dtor)(void *arg);
    } task;
    /* Once FINISHED with err == 0. */
    cf_value value;
    /* Once FINISHED with err != 0: malloc'ed message, or NULL (then
     * cf_strerror(err)). */
    char *errmsg;
  } u;
};

static inline bool cf__state_final(uint32_t s) {
  uint32_t st = s & CF__ST_MASK;
  return st == CF_FINISHED || st == CF_CANCELLED;
}

/* Allocates a PENDING future holding `refs` references; NULL on failure. */
cf_future *cf__future_alloc(uint32_t refs);

/* The future cache (future_cache.c): 64-byte, 64-byte aligned blocks. */
void *cf__fcache_alloc(void);
void cf__fcache_free(void *p);

/* PENDING -> RUNNING for the executor that will run the task. False if the
 * future is no longer pending (cancelled, or completed by its owner): the
 * executor then drops it without touching the task. */
static inline bool cf__future_claim(cf_future *f) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
  while ((s & CF__ST_MASK) == CF_PENDING) {
    if (atomic_compare_exchange_weak_explicit(
            &f->state, &s, (s & ~(uint32_t)CF__ST_MASK) | CF_RUNNING,
            memory_order_acquire, memory_order_relaxed))
      return true;
  }
  return false;
}

/* Like cf__future_claim, for a worker that runs a queued future it is
 * waiting for (sets INLINE). */
static inline bool cf__future_claim_inline(cf_future *f) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
  while ((s & CF__ST_MASK) == CF_PENDING) {
    if (atomic_compare_exchange_weak_explicit(
            &f->state, &s,
            (s & ~(uint32_t)CF__ST_MASK) | CF_RUNNING | CF__FL_INLINE,
            memory_order_acquire, memory_order_relaxed))
      return true;
  }
  return false;
}

/* Runs a claimed future's task on this thread, releases its arg and
 * completes it (callback failures go to sink, which may be NULL).
 * Returns the task's status: 0 or its negative code. */
int cf__future_run(cf_future *f, const cf__cb_sink *sink);

/* Completes a future that is not running with an error (err < 0, msg
 * malloc'ed or NULL, taken in all cases) or cancels it (err ==
 * CF_ECANCELLED, msg NULL). Used by executors to settle queued work.
 * Returns 0, or CF_EINVALSTATE if the future was already taken. */
int cf__future_settle(cf_future *f, int err, char *msg,
                      const cf__cb_sink *sink);

/* Attaches an internal listener. Returns 0 if attached (notify will run
 * once, under the stripe lock, when f completes, unless detached first),
 * or 1 if f is already done (not attached; notify will not run). */
int cf__future_listen(cf_future *f, cf__listener *l);

/* Detaches l if still attached. After this returns, notify is not
 * running and will not run. */
void cf__future_unlisten(cf_future *f, cf__listener *l);

/* Moves the value out of a FINISHED future: *out gets it and the future
 * forgets the destructor. Only for a consumer that is the sole reader of
 * the value (map). */
void cf__future_take_value(cf_future *f, cf_value *out);

/* For tasks that run other task functions themselves (map chunks): forget
 * any message a previous cf_raise left, and take (malloc'ed copy) the
 * message cf_raise attached to `code`, or NULL. */
void cf__raise_clear(void);
/* The calling thread's pending-message code: storing 0 there is
 * cf__raise_clear() without a call (for loops that run many tasks on one
 * thread; the address is valid for the thread's lifetime). */
int *cf__raise_code_slot(void);
char *cf__raise_take(int code);

/* The calling thread's wait hook, or NULL. */
const cf_wait_hook *cf__wait_hook_current(void);

/* Reports a failed done callback to sink, or to the process handler. */
void cf__report_callback_error(const cf__cb_sink *sink, cf_future *f, int rc);

#endif /* CF_FUTURE_INT_H */
