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
 *   - A task that waits on a future (cf_future_wait/result) while running
 *     on a worker does not idle that worker. If the awaited task is still
 *     queued in this pool, the worker runs it right there (so a task may
 *     wait for tasks it submitted, even recursively, with max_workers =
 *     1; nesting is bounded by the worker's stack, 64 KiB of which are
 *     kept free). If no other worker is free, it also runs other queued
 *     work meanwhile (at most 32 deep), so a saturated pool cannot
 *     deadlock on waits. Consequences: such a wait may return later than
 *     its deadline by the length of a task it ran; a task run this way
 *     sits above the waiting one on the same stack, so if it waits for
 *     that task it gets CF_EDEADLOCK, and if it blocks on something only
 *     that task would provide (a semaphore, a lock), the thread hangs.
 *     Waiting on a future this very thread is running returns
 *     CF_EDEADLOCK. Cycles across workers are not detected.
 *   - A full bounded queue makes a submit from one of the pool's own
 *     workers run queued work instead of blocking (unless its timeout is
 *     0: then it fails at once with CF_EAGAIN).
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

/** Options. Zero-initialise; every zero field means its default. */
typedef struct cf_thread_pool_opts {
  /** Maximum worker threads. 0: min(32, cpus + 4) as in Python, where
   * cpus is the number of CPUs this process may run on. < 0 or above
   * CF_THREAD_POOL_MAX_WORKERS: CF_EINVAL. */
  int max_workers;
  /** Thread name prefix (copied). NULL: "cfpool<k>", k counting pools. */
  const char *thread_name_prefix;
  /** Run in each worker before its first task; non-zero breaks the pool. */
  int (*initializer)(void *initarg);
  void *initarg;
  /** Run in each worker (whose initializer succeeded) as it exits. */
  void (*finalizer)(void *initarg);
  /** Most tasks queued and not started; 0: unbounded. < 0: CF_EINVAL. */
  int64_t max_queued;
  /** Worker stack size in bytes; 0: the system default. Below 64 KiB:
   * CF_EINVAL. */
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
CF_EXTERN int cf_thread_pool_new(cf_executor **out,
                                 const cf_thread_pool_opts *opts);

/** Python's default max_workers on this machine: min(32, cpus + 4),
 * where cpus is the number of CPUs this process may run on (at least 1).
 * Thread-safe; cannot fail. */
CF_EXTERN int cf_thread_pool_default_workers(void);

#ifdef __cplusplus
}
#endif

#endif /* CF_THREAD_POOL_H */
