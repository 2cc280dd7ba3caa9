/*
 * cf/future.h - the future: one deferred result, shared by every backend.
 *
 * A cf_future is the C form of Python's concurrent.futures.Future. It is
 * created PENDING by an executor (or by cf_future_new) and ends exactly
 * once in FINISHED (with a value or with an error) or CANCELLED:
 *
 *     PENDING --set_running--> RUNNING --set_result/set_error--> FINISHED
 *        |                          |                             ^
 *        +-------------------set_result/set_error-----------------+
 *        +--cancel--> CANCELLED <---+ cancel, where the executor can
 *                                     interrupt running work
 *
 * There is no FAILED state: as in Python, a task that fails ends FINISHED
 * with an error (a negative code and a message; cf_future_get_error), and
 * cf_future_result returns that code.
 *
 * Ownership. Futures are reference counted. Every function that gives you
 * a future (cf_future_new, cf_executor_submit, cf_as_completed_next, ...)
 * gives you one reference, which you drop with cf_future_unref(). Borrowed
 * pointers (values, messages) stay valid while you hold a reference.
 *
 * Thread-safety. Every function here may be called from any thread, on the
 * same future, at the same time; state changes are atomic and exactly one
 * of several racing completers (set_result, set_error, cancel) wins.
 *
 * Waiting never loses a wake-up and never spins without bound: a waiter
 * spins for at most 20 us (a cross-thread round trip takes about one),
 * then sleeps in the kernel until the future completes or the deadline
 * passes. Waiting on a plain thread allocates nothing (inside a loop
 * task, a wait with a deadline may grow the loop's timer heap).
 *
 * Callbacks. A done callback runs exactly once: in the thread that
 * completes the future, after the state is published and with no library
 * lock held; or at once in the caller of cf_future_add_done_callback if
 * the future is already done. Callbacks added before the future completes
 * run in the order they were added; one added while it is completing may
 * run (in the adder's thread) before them. When
 * cf_future_add_done_callback returns an error the callback is never
 * called. If the last reference to a future that never completes is
 * dropped, its callbacks are freed without running.
 *
 * On a thread that runs an event loop (cf/loop.h), callbacks added there
 * (by its tasks or callbacks) run on that thread instead, scheduled like
 * cf_loop_call_soon: never inline in the thread that completes the
 * future, and never before cf_future_add_done_callback returns, also for
 * a future that is already done (asyncio's rule). The future is kept
 * alive until they ran. If the loop is freed first, those of futures not
 * done yet fall back to the rule above.
 */
#ifndef CF_FUTURE_H
#define CF_FUTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_future cf_future;

/** The four states of a future (Python's PENDING/RUNNING/FINISHED/CANCELLED).
 */
typedef enum cf_future_state {
  CF_STATE_INVALID = -1, /**< only from cf_future_get_state(NULL) */
  CF_PENDING = 0,
  CF_RUNNING = 1,
  CF_FINISHED = 2,
  CF_CANCELLED = 3
} cf_future_state;

/**
 * A result value. Plain data: copy it freely. Which member of the union
 * is meaningful is up to the task and its caller (use `i` for integers,
 * `ptr` for objects and buffers, `d` for floating point).
 *
 * If `dtor` is non-NULL it is called with `ptr` exactly once, by whoever
 * owns the value last: the future when it is freed, or the caller that
 * took ownership (cf_map_next) through cf_value_release().
 */
/** The 8 bytes of a value: a pointer, an integer or a double. */
typedef union cf_word {
  void *ptr;
  int64_t i;
  double d;
} cf_word;

typedef struct cf_value {
  cf_word u;
  size_t size;             /**< byte length when u.ptr is a buffer, else 0 */
  void (*dtor)(void *ptr); /**< frees u.ptr, or NULL */
  const char *type; /**< static type label for descriptions ("str"), or NULL */
} cf_value;

/** A zero value (NULL pointer, no destructor). */
#define CF_VALUE_INIT                                                          \
  { {NULL}, 0, NULL, NULL }

/**
 * Runs the value's destructor (if any) and clears it, so a second call is
 * harmless. NULL is ignored. Not synchronised: the caller owns v (a value
 * moved out of a future or a map is the caller's alone).
 */
CF_EXTERN void cf_value_release(cf_value *v);

/**
 * The signature of every task: the same function runs on any executor.
 *
 * `arg` is the argument given at submission. The task stores its result
 * in `*result` (zeroed before the call) and returns 0, or fails by
 * returning a negative code (its "exception"); use cf_raise() to attach a
 * message. A positive return is treated as failure with code CF_ETASK.
 * When a task fails, anything it stored in *result is released.
 *
 * Every negative code is passed through unchanged, the library's own
 * included: a task that returns CF_ECANCELED (or the CF_ETIMEDOUT of a
 * wait of its own) ends FINISHED with that error, like a Python task that
 * raises CancelledError. It counts as failed, not cancelled (executor
 * counters, CF_FIRST_EXCEPTION); cf_future_cancelled() and
 * cf_future_get_state() tell it from a real cancellation.
 */
typedef int (*cf_task_fn)(void *arg, cf_value *result);

/**
 * Attaches a printf-style message to the failure the calling task is
 * about to return, and returns `code` so it reads as one statement:
 *
 *     return cf_raise(-ENOENT, "not found: %s", url);
 *
 * Call it as the task's return expression: the message is kept in the
 * calling thread and taken by the executor when the task returns. A
 * non-negative `code` is replaced by CF_ETASK. The message may be of any
 * length (it is allocated; nothing is cut). Outside a task the message is
 * simply dropped at the next task start (or when the thread exits). A
 * worker initializer may call it too: its message then becomes part of
 * the broken pool's error. Never fails (on allocation failure the message
 * is lost, the code is kept).
 */
CF_EXTERN int cf_raise(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Signature of done callbacks; see cf_future_add_done_callback(). */
typedef int (*cf_done_fn)(cf_future *f, void *arg);

/* ---------------------------------------------------------------------- */
/* Lifetime                                                               */

/**
 * Creates a PENDING future owned by the caller (one reference), for code
 * that completes futures itself (cf_future_set_result and friends).
 * Executors create their futures themselves.
 *
 * Returns 0, CF_EINVAL if out is NULL, CF_ENOMEM. *out is NULL on error.
 */
CF_EXTERN int cf_future_new(cf_future **out);

/** Adds a reference and returns f (the caller owns the new reference and
 * drops it with cf_future_unref). NULL is returned unchanged. Thread-safe:
 * any thread that holds a reference may add one. Cannot fail. */
CF_EXTERN cf_future *cf_future_ref(cf_future *f);

/**
 * Drops a reference. The last one frees the future and runs its value's
 * destructor. NULL is ignored. Dropping a reference you do not own is
 * undefined behaviour (as with free()).
 */
CF_EXTERN void cf_future_unref(cf_future *f);

/* ---------------------------------------------------------------------- */
/* Queries (non-blocking; a snapshot that may change right after)        */

/** The current state; CF_STATE_INVALID for NULL. Thread-safe. */
CF_EXTERN cf_future_state cf_future_get_state(const cf_future *f);
/** True once FINISHED or CANCELLED. False for NULL. */
CF_EXTERN bool cf_future_done(const cf_future *f);
/** True while RUNNING. False for NULL. */
CF_EXTERN bool cf_future_running(const cf_future *f);
/** True once CANCELLED. False for NULL. */
CF_EXTERN bool cf_future_cancelled(const cf_future *f);
/** "pending", "running", "finished", "cancelled" (or "invalid" for any
 * other value). A static string; thread-safe; cannot fail. */
CF_EXTERN const char *cf_future_state_name(cf_future_state state);

/**
 * The outcome of a done future, without waiting (Python's exception()),
 * code and message together:
 *
 *   - {0, ""} if it finished with a value;
 *   - the task's negative code and its message (cf_raise's text, or
 *     cf_strerror(code)) if it failed;
 *   - {CF_ECANCELED, "cancelled"} if it was cancelled;
 *   - {CF_EINVALSTATE, ...} if it is not done yet; {CF_EINVAL, ...} for NULL.
 *
 * The message is borrowed from the future (valid while you hold a
 * reference) or static; never NULL. A task may fail with any code, the
 * library's included (see cf_task_fn): where that matters, tell the cases
 * apart with cf_future_get_state() (FINISHED: the code is the task's).
 * Thread-safe.
 */
CF_EXTERN cf_error cf_future_get_error(const cf_future *f);

/* ---------------------------------------------------------------------- */
/* Cancelling and waiting                                                 */

/**
 * Cancels the future (Python's cancel()).
 *
 * A PENDING future is cancelled at once, whoever owns it (Python's
 * semantics): its task never runs, its waiters wake and its callbacks run,
 * in this thread, before this returns 0.
 *
 * A RUNNING future is cancelled only if the executor running it can
 * interrupt the work (a process pool kills the worker; the event loop
 * delivers the cancellation to the coroutine at its next wait). Then this
 * returns 0 once the cancellation is delivered; the future ends soon after,
 * CANCELLED, unless the task handles the cancellation and finishes (as an
 * asyncio task may). Use cf_future_wait to see the outcome. The thread pool
 * cannot interrupt a thread: CF_EBUSY.
 *
 * Returns 0 (cancelled, also if it already was, or cancellation delivered),
 * CF_EBUSY if it is finished or running where it cannot be interrupted
 * (nothing changes), CF_EINVAL if f is NULL.
 */
CF_EXTERN int cf_future_cancel(cf_future *f);

/**
 * Waits until the future is done (any outcome) or the timeout expires.
 * Returns 0 when done, CF_ETIMEDOUT on expiry, CF_EINVAL for a NULL
 * future or negative timeout, CF_EDEADLK if the calling task would wait
 * for itself. In the child of a fork, a future of an executor that belongs
 * to the parent is settled by the wait (it fails with CF_EFORKED; see
 * cf/executor.h, "fork") and the wait returns 0. On a thread with a wait
 * hook (see below) the hook decides how to wait; inside a loop task the
 * wait suspends the task and may also return CF_ECANCELED (the task was
 * cancelled: cf/loop.h) or CF_ENOMEM (no memory for its deadline's
 * timer). A wait on the caller's own running task is CF_EDEADLK whatever
 * the timeout, 0 included (cf_wait with a zero timeout only reports it
 * not done).
 */
CF_EXTERN int cf_future_wait(cf_future *f, int64_t timeout_ns);

/** cf_future_wait with an absolute deadline on cf_now_ns()'s clock. */
CF_EXTERN int cf_future_wait_until(cf_future *f, int64_t deadline_ns);

/**
 * Waits like cf_future_wait, then reports the outcome (Python's result()).
 *
 * Returns 0 and sets *value (if value is non-NULL) to the result, which
 * the future keeps owning: it stays valid while you hold a reference.
 * Otherwise returns the task's own negative code (see cf_future_get_error for
 * its message), CF_ECANCELED, CF_ETIMEDOUT if the wait expired,
 * CF_EDEADLK, or CF_EINVAL. On error *value is set to NULL. A task may
 * itself fail with CF_ETIMEDOUT (-ETIMEDOUT, as a connect that times out
 * does); to tell the two apart, wait with cf_future_wait (whose
 * CF_ETIMEDOUT is always the wait's own), then read the outcome with
 * cf_future_get_error. cf_future_get_error also gives the message.
 */
CF_EXTERN int cf_future_result(cf_future *f, int64_t timeout_ns,
                               const cf_value **value);

/* ---------------------------------------------------------------------- */
/* Callbacks                                                              */

/**
 * Arranges for fn(f, arg) to run once f is done (Python's
 * add_done_callback). See the top of this file for the thread that runs
 * it. A callback signals failure by returning non-zero; that never stops
 * the other callbacks: the failure is counted and reported by the
 * executor that completed the future (its on_callback_error hook), or by
 * the process-wide handler (cf_set_callback_error_handler) when no
 * executor is involved.
 *
 * Returns 0 (fn will run exactly once, possibly before this returns,
 * except on a loop's thread: see the top of this file), CF_EINVAL (NULL f
 * or fn), CF_ENOMEM (fn will never run).
 */
CF_EXTERN int cf_future_add_done_callback(cf_future *f, cf_done_fn fn,
                                          void *arg);

/** Handler for callback failures that no executor reports. */
typedef void (*cf_callback_error_fn)(void *ctx, cf_future *f, int rc);

/**
 * Sets the process-wide handler for failed done callbacks that ran
 * outside an executor's threads (completion or cancellation by user code,
 * or a callback added to an already-done future). NULL restores the
 * default, which prints one line to stderr, like Python's logger.
 * Thread-safe; the handler may be called from any thread, and a handler
 * that was just replaced may still be running or about to run in another
 * thread, so keep its ctx valid.
 */
CF_EXTERN void cf_set_callback_error_handler(cf_callback_error_fn fn,
                                             void *ctx);

/* ---------------------------------------------------------------------- */
/* Completing a future (for executors and for code that owns a future)    */

/**
 * PENDING -> RUNNING (Python's set_running_or_notify_cancel), for a future
 * of your own (cf_future_new). Returns 0, CF_ECANCELED if the future was
 * cancelled (the caller must then not run the work), CF_EINVALSTATE in any
 * other state and for an executor's future (its executor decides when it
 * runs), CF_EINVAL for NULL.
 */
CF_EXTERN int cf_future_set_running(cf_future *f);

/**
 * Completes a PENDING or RUNNING future with a value (copied; NULL means
 * a zero value). On success the future owns value->u.ptr (its dtor will
 * run exactly once). Waiters wake and callbacks run in this thread before
 * this returns. A future an executor is running can only be completed by
 * its task's return; completing one still pending takes it from the
 * executor (which then never runs it, as with cancel).
 *
 * Returns 0; CF_EINVALSTATE if the future is already done or its task is
 * running on an executor (the caller keeps ownership of the value);
 * CF_EINVAL for NULL f.
 */
CF_EXTERN int cf_future_set_result(cf_future *f, const cf_value *value);

/**
 * Completes a PENDING or RUNNING future with an error: `code` (negative;
 * a non-negative code is replaced by CF_ETASK) and a printf-style message
 * (NULL: cf_strerror(code)). Returns like cf_future_set_result.
 */
CF_EXTERN int cf_future_set_error(cf_future *f, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---------------------------------------------------------------------- */
/* Description                                                            */

/**
 * Writes a description like Python's repr into buf (snprintf rules:
 * always NUL-terminated when size > 0, truncated if needed):
 *
 *     <Future at 0x55d0c2a8b2a0 state=pending>
 *     <Future at 0x55d0c2a8b2a0 state=finished returned str>
 *     <Future at 0x55d0c2a8b2a0 state=finished raised ENOENT>
 *
 * "returned" names the value's type label (cf_value.type, or "value").
 * Returns the length the full description needs (excluding the NUL), or
 * CF_EINVAL for a NULL f or a NULL buf with non-zero size.
 */
CF_EXTERN int cf_future_describe(const cf_future *f, char *buf, size_t size);

/* ---------------------------------------------------------------------- */
/* Scheduler integration: wait hooks                                      */

/**
 * A wait hook lets a scheduler that runs on a thread decide how waits on
 * that thread happen: a thread pool's worker runs queued work while it
 * waits (so a task may wait for work it submitted), and an event loop
 * suspends the calling coroutine instead of blocking its thread.
 *
 * Waiting on one future. When a hook is installed on the calling thread,
 * cf_future_wait(), cf_future_wait_until() and cf_future_result() call
 * hook.wait(hook.ctx, f, deadline_ns) instead of blocking, once they know
 * f is not done yet. It must return 0 once f is done, CF_ETIMEDOUT at the
 * deadline (CF_FOREVER: none) or another negative code (CF_EDEADLK: the
 * waiter is running f itself); it may call cf_future_wait_blocking() to
 * block the thread in the ordinary way.
 *
 * Waiting on several futures (cf_wait, cf_as_completed_next) uses the
 * other three entries, in the manner of a park/unpark pair, so that the
 * waiter sleeps until the first relevant completion and wakes once:
 *
 *   - waiter(ctx) names whoever is waiting on this thread right now (the
 *     worker, the current coroutine): an opaque token, valid until that
 *     waiter's wait returns;
 *   - sleep(ctx, token, fs, n, deadline_ns) blocks or suspends that
 *     waiter until wake(token) is called, the deadline passes
 *     (CF_ETIMEDOUT) or the hook fails (another negative code; CF_EDEADLK
 *     if the waiter is itself running one of fs[0..n), whose NULL entries
 *     are to be skipped). A wake() that came first makes the next sleep()
 *     return at once; spurious returns (0) are allowed, as the caller
 *     re-checks its condition and sleeps again. fs is what the caller
 *     waits for: a scheduler may run one of those futures' tasks instead
 *     of sleeping (a pool worker does, when no other worker is free);
 *   - wake(token) may be called from any thread, including with the
 *     library's internal locks held: it must only record the wake-up and
 *     make the waiter runnable (set a flag, wake a thread, post to a
 *     loop), never block or call back into cfutures.
 *
 * A hook with sleep == NULL handles single waits only; waits on several
 * futures then block the thread as they would without a hook.
 */
typedef struct cf_wait_hook {
  int (*wait)(void *ctx, cf_future *f, int64_t deadline_ns);
  void *ctx;
  void *(*waiter)(void *ctx);
  int (*sleep)(void *ctx, void *token, cf_future *const *fs, size_t n,
               int64_t deadline_ns);
  void (*wake)(void *token);
} cf_wait_hook;

/**
 * Installs `hook` for the calling thread (NULL or a NULL hook->wait
 * removes it) and stores the previous one in *prev if prev is non-NULL,
 * so nested schedulers can restore it. Affects only the calling thread.
 * A hook with sleep set must set waiter and wake too (else sleep is
 * ignored: waits on several futures block the thread).
 */
CF_EXTERN void cf_wait_hook_swap(const cf_wait_hook *hook, cf_wait_hook *prev);

/**
 * Blocks the calling thread until f is done or the deadline passes,
 * ignoring any wait hook. Returns 0, CF_ETIMEDOUT or CF_EINVAL.
 */
CF_EXTERN int cf_future_wait_blocking(cf_future *f, int64_t deadline_ns);

#ifdef __cplusplus
}
#endif

#endif /* CF_FUTURE_H */
