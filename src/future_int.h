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
 *   bit 6     KEEP: in a fork child, a RUNNING future on the stack of the
 *             thread that forked (a pool task that forked, and the tasks
 *             it runs beneath); that thread goes on and finishes it, so
 *             it is not settled as the parent's (cf__future_keep_in_child).
 *
 * Transitions are CAS loops on the word; the outcome fields (err, errmsg,
 * value) are written only by the completer between COMPLETING and the
 * final state, or, for a task that writes its outcome into its own future
 * (cf__future_exec_self: a loop task, a thread pool's task), by that
 * task's thread while the future is RUNNING, which only its owner may
 * complete; it then publishes the final state in one exchange from
 * RUNNING, with no COMPLETING step. (In a fork child, the parent's pool
 * finishes the futures its vanished workers were running: a value half
 * written there is overwritten by the error, and leaked, never freed.
 * The futures on the stack of the worker that forked are left to it: its
 * tasks go on in the child and finish them, KEEP.) Either
 * way the final state is published with release order, so a reader that sees
 * FINISHED (acquire) sees the outcome, and no reader looks at the fields
 * before.
 *
 * Task ownership: whoever moves a future out of PENDING owns the task's
 * arg. A backend that claims a future (cf__future_claim: PENDING ->
 * RUNNING) takes the task out of it (cf__future_take_task) before anything
 * else, and from then on the arg is the backend's: the thread pool's
 * runner calls arg_dtor after fn returns (cf__future_exec_self); a
 * process pool may release it once it has copied the bytes. A completer that wins
 * straight from PENDING (cancel, set_result, a settle) calls arg_dtor
 * before publishing. Either way it runs once.
 *
 * The backend contract (the owner): while an executor's future is RUNNING
 * only that executor completes it, from any of its threads (the worker
 * that ran it, a process pool's reader thread, an event loop):
 * cf__future_finish with a value or a code and message,
 * cf__future_finish_cancelled when it interrupted the work, or, for a
 * task run with cf__future_exec_self, cf__future_publish_self (a pool's
 * worker) or cf__future_finish_self (a loop task). A fork child never
 * settles the futures of an executor that lives on there (the vtable's
 * lives_in_child), nor those a task that forked is running on the
 * child's stack (KEEP): a task may be writing into them.
 * The public cf_future_set_result/set_error refuse such a future
 * (CF_EINVALSTATE).
 * cf_future_cancel of a RUNNING future asks the owner (vtable `cancel`,
 * executor_int.h); of a PENDING one it cancels at once.
 *
 * Room for backends: cf__future_alloc(owner, refs, room) gives `room`
 * more bytes right after the future (cf__future_room), in the same
 * allocation: a process pool's task id and payload, a coroutine's
 * pointer. With room 0 the future is one 64-byte cache line from the
 * future cache (the thread pool's path).
 *
 * Locks: listener lists are guarded by one of 64 stripe spinlocks chosen
 * by the future's address. A stripe lock may be held while an internal
 * listener's notify() takes its own lock (as_completed, wait, pool); it is
 * never held while user code runs.
 */
#ifndef CF_FUTURE_INT_H
#define CF_FUTURE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cf/executor.h"
#include "cf/future.h"

enum {
  CF__ST_MASK = 0x7,
  CF__ST_COMPLETING = 4,
  CF__ST_CANCELLING = 5,
  CF__FL_WAITERS = 0x8,
  CF__FL_LISTENERS = 0x10,
  CF__FL_INLINE = 0x20, /* run by a waiting worker, not from the queue */
  CF__FL_KEEP = 0x40    /* fork child: run on the forking thread's stack */
};

/* The state word of a future whose memory went back to the cache: a
 * later cf_future_unref of it finds refs == 0 and this state. */
#define CF__ST_FREED 0xdeadbee7u

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
  /* Who attached it, and in which fork generation: in a fork child the
   * internal listeners of the parent's threads are skipped (their
   * waiters do not exist there); the forking thread's own are kept. */
  uint64_t tid;
  uint32_t fork_gen;
  bool attached;     /* on a list; guarded by the stripe lock */
};

/* Where failed done callbacks are reported. */
typedef struct cf__cb_sink {
  cf_callback_error_fn fn;
  void *ctx;
  _Atomic uint64_t *failed; /* counter to bump, or NULL */
} cf__cb_sink;

/* A task as the future holds it until a backend takes it. */
typedef struct cf__task_rec {
  cf_task_fn fn;
  void *arg;
  void (*arg_dtor)(void *arg);
} cf__task_rec;

/* One cache line (64 bytes, 64-byte aligned): the submitter writes it, one
 * worker runs it, the waiter reads it, and each of those moves only this
 * line between cores. The task's fields and the outcome share storage:
 * the task fields are dead (taken by the backend) before the outcome is
 * written. */
struct cf_future {
  _Atomic uint32_t state; /* see above */
  _Atomic uint32_t refs;
  cf_executor *owner;      /* the executor that runs it, or NULL */
  cf__listener *listeners; /* first node of a circular list, or NULL */
  int err;                 /* outcome: 0, a task code, or CF_ECANCELED */
  uint32_t room_lines;     /* backend room after the future, 64-byte lines */
  union {
    /* While PENDING, and RUNNING until the backend takes it: written by
     * the executor before the future is published. */
    cf__task_rec task;
    /* Once FINISHED with err == 0. */
    cf_value value;
    /* Once FINISHED with err != 0: malloc'ed message, or NULL (then
     * cf_strerror(err)). */
    char *errmsg;
  } u;
};

#define CF__FUTURE_SIZE 64

static inline bool cf__state_final(uint32_t s) {
  uint32_t st = s & CF__ST_MASK;
  return st == CF_FINISHED || st == CF_CANCELLED;
}

/* Allocates a PENDING future owned by `owner` (NULL for cf_future_new)
 * holding `refs` references, with `room` bytes of backend room after it;
 * NULL on failure. The caller fills u.task before publishing it. */
cf_future *cf__future_alloc(cf_executor *owner, uint32_t refs, size_t room);

/* The backend room of a future allocated with room > 0 (64-byte aligned). */
static inline void *cf__future_room(cf_future *f) {
  return (char *)f + CF__FUTURE_SIZE;
}

/* Frees a future that was never published (no listener, no waiter, its
 * task not taken): a submit that failed after allocating it. */
void cf__future_discard(cf_future *f);

/* The future cache (future_cache.c): 64-byte aligned blocks in a few
 * size classes (64, 512, 832 bytes; the largest is a task of a loop on
 * its shared stack, with its room for saved frames, src/loop.c).
 * cf__fcache_class gives the class for a size, or -1 if it is too large
 * for the cache. */
enum { CF__FCACHE_CLASSES = 3, CF__FCACHE_TASK_BLOCK = 832 };
static inline int cf__fcache_class(size_t size) {
  return size <= 64                      ? 0
         : size <= 512                   ? 1
         : size <= CF__FCACHE_TASK_BLOCK ? 2
                                         : -1;
}
void *cf__fcache_alloc_class(int c);
void cf__fcache_free_class(void *p, int c);
void *cf__fcache_alloc(void); /* class 0: one future */
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

/* Takes the task out of a future this backend has claimed: from now on
 * the arg (and calling arg_dtor) is the backend's. */
static inline void cf__future_take_task(const cf_future *f, cf__task_rec *t) {
  *t = f->u.task;
}

/* An outcome about to be published: err == 0 and a value, or err < 0 and
 * a malloc'ed message (or NULL). */
typedef struct cf__outcome {
  int err;
  char *msg;
  cf_value value;
} cf__outcome;

/* Runs a claimed future's task on this thread (takes the task, runs fn,
 * releases the arg) with its outcome written into the future itself as
 * the task runs: its code in f->err; its value, or its message when it
 * failed, in f->u. Nobody but the owner writes a RUNNING future, so no
 * outcome needs holding elsewhere. The caller counts it, then publishes
 * it: cf__future_finish_self (a loop task: a code of CF_ECANCELED ends
 * the future CANCELLED, its message dropped; any other FINISHED) or
 * cf__future_publish_self (FINISHED whatever the code: a thread pool's
 * task that returns CF_ECANCELED failed with it, as in Python, where a
 * work item that raises CancelledError ends with that exception). Both
 * return 0, or CF_EINVALSTATE if f is not RUNNING (then the outcome is
 * left where it is, unreleased: a backend's bug, as nobody but the owner
 * completes a RUNNING future). */
void cf__future_exec_self(cf_future *f);
int cf__future_finish_self(cf_future *f, const cf__cb_sink *sink);
int cf__future_publish_self(cf_future *f, const cf__cb_sink *sink);

/* Publishes the outcome of a RUNNING future: its owner's call, from any
 * of the owner's threads. Takes o->msg and o->value in all cases (released
 * on failure). Waiters wake and callbacks run in this thread (failures go
 * to sink, which may be NULL). Returns 0, or CF_EINVALSTATE if f is not
 * RUNNING. */
int cf__future_finish(cf_future *f, cf__outcome *o, const cf__cb_sink *sink);

/* RUNNING -> CANCELLED, for an owner that interrupted the running work
 * (its backend's cancel). Returns 0, or CF_EINVALSTATE if f is not
 * RUNNING. */
int cf__future_finish_cancelled(cf_future *f, const cf__cb_sink *sink);

/* Completes a future that is not running with an error (err < 0, msg
 * malloc'ed or NULL, taken in all cases) or cancels it (err ==
 * CF_ECANCELED, msg NULL). Used by executors to settle queued work. If it
 * wins, *counter (when non-NULL) is bumped before the outcome is published,
 * so that a waiter who sees the future done reads counters that count it.
 * Returns 0, or CF_EINVALSTATE if the future was already taken. */
int cf__future_settle(cf_future *f, int err, char *msg, const cf__cb_sink *sink,
                      _Atomic uint64_t *counter);

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

/* For tasks that run other task functions themselves (map chunks):
 * storing 0 in cf__raise_tls.code (below) forgets any message an earlier
 * cf_raise left, without a call (the address is valid for the thread's
 * lifetime). cf__raise_take hands over (malloc'ed) the message cf_raise
 * attached to `code`, or NULL. */
char *cf__raise_take(int code);
void cf__raise_clear(void);

/* The message of the failure the running task is about to return (code
 * 0: none). `msg` is malloc'ed, of any length; it may outlive its code (a
 * stale message is freed by the next cf_raise, or when the thread exits,
 * through a key destructor). Thread-local; future.c owns it. */
typedef struct cf__raise_state {
  int code;
  char *msg;
} cf__raise_state;
extern _Thread_local cf__raise_state cf__raise_tls;

/* For a scheduler that runs tasks on one thread (the loop): moves the
 * calling thread's pending cf_raise message out (leaving none), or back
 * in (freeing one left there), so that each task keeps its own across
 * its suspensions. The save is inline: it runs at every switch. */
static inline void cf__raise_save(int *code, char **msg) {
  *code = cf__raise_tls.code;
  *msg = cf__raise_tls.msg;
  cf__raise_tls.code = 0;
  cf__raise_tls.msg = NULL;
}
void cf__raise_restore(int code, char *msg);

/* Where cf_future_add_done_callback sends callbacks added on this thread
 * (the loop, while it runs: it runs them on its own thread). add returns
 * as cf_future_add_done_callback. */
typedef struct cf__cb_router {
  int (*add)(void *ctx, cf_future *f, cf_done_fn fn, void *arg);
  void *ctx;
} cf__cb_router;
void cf__cb_router_swap(const cf__cb_router *r, cf__cb_router *prev);

/* The calling thread's wait hook, or NULL. */
const cf_wait_hook *cf__wait_hook_current(void);

/* Reports a failed done callback to sink, or to the process handler. */
void cf__report_callback_error(const cf__cb_sink *sink, cf_future *f, int rc);

/* If f belongs to an executor of the parent of this forked process,
 * settles that executor's futures (f among them, unless it is kept: then
 * it stays RUNNING) and returns 1; returns CF_EDEADLK instead if f is
 * kept and this is the thread that runs it; 0 if f's executor is not the
 * parent's. */
int cf__future_orphan_check(cf_future *f);

/* In a fork child's handler, on the forking thread: marks f, a RUNNING
 * future on this thread's stack, as this thread's to finish here (KEEP).
 * The thread that did so is the keeper of f's executor while it exists in
 * this process (in a grandchild another thread forked, it does not). */
void cf__future_keep_in_child(cf_future *f);
/* The calling thread as ex's keeper, with no future to mark (a worker
 * that forked outside any task: its wait hook stays, so the pool must
 * outlive it). */
void cf__keeper_mark(cf_executor *ex);
/* Whether f is kept and its keeper exists in this process. */
bool cf__future_kept(const cf_future *f);
/* Whether ex's keeper exists in this process, and whether it is this
 * thread. */
bool cf__keeper_alive(const cf_executor *ex);
bool cf__keeper_here(const cf_executor *ex);

#endif /* CF_FUTURE_INT_H */
