/*
 * cf/thread_pool.h - the thread-pool executor (Python's ThreadPoolExecutor).
 *
 * Create one with cf_thread_pool_new() and use it through cf/executor.h.
 *
 * Workers start lazily, one per submission while no worker is idle, up to
 * max_workers, and stay until shutdown. Each worker runs the initializer
 * once before its first task; if it fails, the pool is broken: queued and
 * later work fails with CF_EBROKEN (Python's BrokenThreadPool).
 *
 * Beyond Python:
 *   - max_queued bounds the queue: submit then blocks, with a timeout, or
 *     fails with CF_EAGAIN (backpressure).
 *   - A task that waits on futures while running on a worker
 *     (cf_future_wait/result, cf_wait, as_completed) does not idle that
 *     worker when it is needed. If an awaited task is still queued in this
 *     pool and no other worker is free to start it (or it was batched
 *     behind the waiting task on this very worker), the waiting worker
 *     runs it right there, so a task may wait for tasks it submitted, even
 *     recursively, with max_workers = 1; nesting is bounded by the
 *     worker's stack, of which a quarter (at most 64 KiB) is kept free.
 *     When another worker is free, the awaited task is left to it and
 *     runs in parallel. A wait without a deadline also runs other queued
 *     work meanwhile if no other worker is free (at most 32 deep), so a
 *     saturated pool cannot deadlock on waits; a task run that way sits
 *     above the waiting one on the same stack: if it waits for that task
 *     it gets CF_EDEADLK, and if it blocks on something only that task
 *     would provide (a semaphore, a lock), the thread hangs.
 *     A wait with a deadline never runs unrelated work: it returns at its
 *     deadline, as in Python, unless it ran an awaited task itself (only
 *     when nobody else could), which may make it return late by that
 *     task's length.
 *     Waiting on a future this very thread is running returns
 *     CF_EDEADLK. Cycles across workers are not detected.
 *   - A full bounded queue makes a submit without a timeout from one of
 *     the pool's own workers run queued work instead of blocking (with a
 *     timeout it waits for room like any other thread; with 0 it fails at
 *     once with CF_EAGAIN).
 *   - If a worker thread cannot be created, the pool carries on with the
 *     workers it has; if it has none, the task's future fails with
 *     -EAGAIN. The library never aborts for that.
 *   - A done callback that fails while this pool completes or cancels a
 *     future is counted (stats.callbacks_failed) and reported to
 *     on_callback_error (callbacks run by other threads, as when user code
 *     cancels a future, go to the process-wide handler).
 *   - A finalizer undoes the initializer in each worker before it exits.
 *
 * Threads are named "<prefix>_<n>" (Linux truncates to 15 bytes).
 */
#ifndef CF_THREAD_POOL_H
#define CF_THREAD_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/executor.h"
#include "cf/future.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The largest max_workers accepted (the pool reserves a slot per
 * possible worker up front, and Linux caps threads well below this). */
#define CF_THREAD_POOL_MAX_WORKERS 65536

/** The smallest stack_size accepted (a task that waits for a subtask it
 * submitted still works with it, see above). */
#define CF_THREAD_POOL_MIN_STACK 65536

/** Options. Zero-initialise; every zero field means its default. */
typedef struct cf_thread_pool_opts {
  /** Maximum worker threads. 0: min(32, cpus + 4) as in Python, where
   * cpus is the number of CPUs this process may run on. < 0 or above
   * CF_THREAD_POOL_MAX_WORKERS: CF_EINVAL. */
  int max_workers;
  /** Thread name prefix (copied). NULL: "cfpool<k>", k counting pools. */
  const char *thread_name_prefix;
  /** Run in each worker before its first task; non-zero breaks the pool.
   * Return a negative code, with cf_raise() for a message: the code's
   * name and the message become part of the CF_EBROKEN error of every
   * future that fails because of it, and are printed once to stderr (as
   * Python logs "Exception in initializer"). */
  int (*initializer)(void *initarg);
  void *initarg;
  /** Run in each worker (whose initializer succeeded) as it exits. */
  void (*finalizer)(void *initarg);
  /** Most tasks in the pool's queue; 0: unbounded. < 0: CF_EINVAL. A
   * worker whose recent tasks were short (under ~2 us) takes up to 32 at
   * once off the queue into its own slots; those no longer count, so
   * with short tasks up to max_queued + 31 per worker are accepted and
   * not yet started. */
  int64_t max_queued;
  /** Worker stack size in bytes; 0: the system default. Below 64 KiB
   * (CF_THREAD_POOL_MIN_STACK): CF_EINVAL. */
  size_t stack_size;
  /** Called (from the thread that ran the callback) when a done callback
   * of one of this pool's futures returns non-zero. NULL: count only. */
  cf_callback_error_fn on_callback_error;
  void *on_callback_error_ctx;
} cf_thread_pool_opts;

/**
 * Creates a thread pool. No thread starts until the first submission.
 * opts may be NULL for all defaults; it is read during the call only
 * (thread_name_prefix is copied). Thread-safe: any thread may create
 * pools. The caller owns the executor: free it with cf_executor_free().
 *
 * Returns 0 and the executor in *out; CF_EINVAL (NULL out, bad option),
 * CF_ENOMEM. *out is NULL on error.
 */
CF_EXTERN int cf_thread_pool_new(const cf_thread_pool_opts *opts,
                                 cf_executor **out);

/** Python's default max_workers on this machine: min(32, cpus + 4),
 * where cpus is the number of CPUs this process may run on (at least 1).
 * Thread-safe; cannot fail. */
CF_EXTERN int cf_thread_pool_default_workers(void);

#ifdef __cplusplus
}
#endif

#endif /* CF_THREAD_POOL_H */
