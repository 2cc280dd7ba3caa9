/*
 * cf/executor.h - the executor interface and the combinators over futures.
 *
 * An executor runs tasks (cf_task_fn) and hands back futures. Every
 * backend (thread pool today; process pool, MPI and the event loop later)
 * is created by its own constructor and then used only through the
 * functions below, so switching backends changes one line.
 *
 * Thread-safety: every function taking a cf_executor may be called from
 * any thread concurrently, including from tasks running on that executor,
 * except cf_executor_free(), which must be the last call on it.
 * Using an executor after cf_executor_free() is a bug; where the library
 * can still detect it (a recently freed executor) the call returns
 * CF_EBADF instead of touching freed memory.
 */
#ifndef CF_EXECUTOR_H
#define CF_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/future.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_executor cf_executor;

/** A task to submit, for cf_executor_submit_task(). Zero-initialise it. */
typedef struct cf_task {
  cf_task_fn fn; /**< required */
  void *arg;     /**< passed to fn */
  /**
   * If non-NULL, called with arg exactly once when the executor is done
   * with it: after fn returns, or when the task is cancelled or fails
   * without running. Not called when submission itself fails.
   */
  void (*arg_dtor)(void *arg);
  /**
   * 0: arg is an opaque pointer. > 0: arg points to arg_size bytes that
   * a backend may copy (process and MPI pools copy them to the worker).
   * The thread pool passes arg through unchanged either way.
   */
  size_t arg_size;
} cf_task;

/**
 * Submits fn(arg) (Python's submit). On success *out (if out is non-NULL)
 * receives a new reference to the task's future; pass NULL to fire and
 * forget. If the executor bounds its queue and the queue is full, this
 * blocks until there is room (see cf_executor_submit_task for a timeout).
 *
 * Returns 0, CF_EINVAL (NULL executor or fn), CF_ESHUTDOWN (after
 * shutdown), CF_EBROKEN (an initializer failed), CF_ENOMEM, CF_EBADF
 * (freed executor). On error *out is NULL and nothing will run.
 */
CF_EXTERN int cf_executor_submit(cf_executor *ex, cf_task_fn fn, void *arg,
                                 cf_future **out);

/**
 * Submits a task with options. timeout_ns bounds the wait for room in a
 * bounded queue (0: fail at once; CF_FOREVER: wait). Returns what
 * cf_executor_submit returns, plus CF_EAGAIN if the queue stayed full
 * ("would block"; task->arg_dtor is not called) and CF_EINVAL for a
 * negative timeout.
 */
CF_EXTERN int cf_executor_submit_task(cf_executor *ex, const cf_task *task,
                                      int64_t timeout_ns, cf_future **out);

/**
 * Stops accepting work (Python's shutdown). Later submits fail with
 * CF_ESHUTDOWN. Work already queued still runs unless cancel_futures is
 * true, in which case every queued future is cancelled before this
 * returns (its waiters and as_completed/wait see it); a task a worker was
 * taking at that very instant may still start, as in Python. With wait,
 * returns once every task has finished or been cancelled and every
 * worker has exited. May be called more than once, from any thread.
 *
 * Returns 0, CF_EINVAL, CF_EBADF, or CF_EDEADLOCK if wait is true and the
 * caller is one of this executor's own workers (it cannot wait for itself;
 * the shutdown still takes effect).
 */
CF_EXTERN int cf_executor_shutdown(cf_executor *ex, bool wait,
                                   bool cancel_futures);

/**
 * Shuts down with wait (and without cancelling) and frees the executor.
 * Futures it returned stay valid (you own them). Returns 0, CF_EBADF for
 * an executor already freed, CF_EDEADLOCK if called from one of its own
 * workers (nothing is freed then), CF_EINVAL for NULL.
 */
CF_EXTERN int cf_executor_free(cf_executor *ex);

/** Counters, readable at any time (cf_executor_stats). */
typedef struct cf_executor_stats {
  uint64_t submitted; /**< tasks accepted by submit */
  uint64_t queued;    /**< accepted, not yet started or discarded */
  uint64_t running;   /**< running now */
  uint64_t completed; /**< finished with a value */
  uint64_t failed;    /**< finished with an error (incl. broken pool) */
  uint64_t
      cancelled; /**< cancelled before they ran (as seen by the executor) */
  uint64_t callbacks_failed; /**< done callbacks that returned non-zero */
  uint32_t workers;          /**< worker threads/processes started */
  uint32_t idle_workers;     /**< of which waiting for work right now */
  uint32_t max_workers;      /**< the configured maximum */
} cf_executor_stats;

/**
 * Fills *st. Each counter is read atomically, but the set is not one
 * snapshot: while tasks run, queued/running may be off by the tasks in
 * flight between two counters (and a future you cancelled still counts
 * as queued until a worker discards it). When the executor is idle the
 * counters are exact and submitted == completed + failed + cancelled.
 * Returns 0, CF_EINVAL, CF_EBADF.
 */
CF_EXTERN int cf_executor_stats_get(cf_executor *ex, cf_executor_stats *st);

/** The maximum number of tasks the executor runs at once (> 0), or a
 * negative error (CF_EINVAL, CF_EBADF). */
CF_EXTERN int cf_executor_max_workers(cf_executor *ex);

/* ---------------------------------------------------------------------- */
/* map                                                                     */

/**
 * The input of a map: returns 1 and stores the next item in *item, 0 at
 * the end, or a negative code to fail the map at this position. It is
 * called only from the thread that calls cf_executor_map / cf_map_next.
 */
typedef int (*cf_iter_fn)(void *state, void **item);

/** Iterates an array of pointers: state is a cf_array_iter. */
typedef struct cf_array_iter {
  void *const *items;
  size_t count;
  size_t next; /**< index of the next item; start at 0 */
} cf_array_iter;
/** A cf_iter_fn over a cf_array_iter: returns 1 and items[next++] (the
 * pointer is passed on, not copied or owned; NULL elements are items like
 * any other), 0 past the end, CF_EINVAL for NULL arguments or a NULL
 * items array with next < count. Not thread-safe: one map per iterator
 * state. A map with chunksize > 1 reads a whole chunk of this iterator
 * (and of cf_range_iter_next) in one step, with the same items and the
 * same final state as one call per item. */
CF_EXTERN int cf_array_iter_next(void *state, void **item);

/** Python's range(start, stop, step) as items (void *)(intptr_t)i:
 * state is a cf_range_iter. step 0 ends at once. */
typedef struct cf_range_iter {
  int64_t start, stop, step;
  int64_t next; /**< set to start before use (cf_range_iter_init) */
} cf_range_iter;
/** A cf_range_iter positioned at start. Pure; cannot fail. */
CF_EXTERN cf_range_iter cf_range_iter_init(int64_t start, int64_t stop,
                                           int64_t step);
/** A cf_iter_fn over a cf_range_iter: returns 1 and the next number as
 * (void *)(intptr_t)n, 0 past the end (or at once for step 0), CF_EINVAL
 * for NULL arguments. After the last item next is stop (so stepping past
 * the ends of int64_t never overflows). Not thread-safe: one map per
 * iterator state. */
CF_EXTERN int cf_range_iter_next(void *state, void **item);

/** Options of a map. Zero-initialise; zero means the default. */
typedef struct cf_map_opts {
  /** Items per task (Python's chunksize). 0 or 1: one task per item.
   * Negative: CF_EINVAL. */
  int64_t chunksize;
  /** Look-ahead: the most tasks (chunks) submitted but not yet yielded.
   * 0: 4 * max_workers, at least 64; with chunks (chunksize > 1),
   * 2 * max_workers, at least 4. Negative: CF_EINVAL. */
  int64_t prefetch;
  /** With has_timeout: the deadline for the whole map, counted from the
   * call to cf_executor_map, with cf/time.h's meanings (0: poll, so an
   * item not done when cf_map_next reaches it times out; CF_FOREVER:
   * none). It also bounds the map's waits for room in a bounded queue
   * (cf_thread_pool_opts.max_queued): a queue still full at the deadline
   * ends the map with CF_EAGAIN at that position. Negative, or non-zero
   * without has_timeout (a forgotten flag must not silently mean "no
   * deadline"): CF_EINVAL. */
  int64_t timeout_ns;
  /** Whether the map has a deadline (Python's timeout is not None).
   * false (the zero default): none, and timeout_ns must stay 0. Last, so
   * a positional {chunksize, prefetch, timeout} is refused, not a poll. */
  bool has_timeout;
} cf_map_opts;

typedef struct cf_map cf_map;

/**
 * Starts a lazy map of fn over the items of `next(state)` (Python's
 * Executor.map, but lazy: only `prefetch` tasks are submitted ahead of
 * the consumer, so an endless input works). Tasks are submitted from
 * this call and from cf_map_next(); results come back in input order.
 *
 * Returns 0 and a new iterator in *out; CF_EINVAL (NULL arguments or bad
 * options), CF_EBADF (freed executor), CF_ENOMEM, or the executor's
 * submit error if the very first submission fails (CF_ESHUTDOWN,
 * CF_EBROKEN, CF_EAGAIN from a bounded queue past the deadline, ...).
 * *out is NULL on error. The map owns nothing of the caller's: `state`
 * must stay valid and untouched by others until cf_map_free(); items are
 * passed to fn as they are.
 *
 * Thread-safety: call it from any thread; the map it returns then belongs
 * to one consumer thread at a time (see cf_map_next).
 */
CF_EXTERN int cf_executor_map(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                              void *state, const cf_map_opts *opts,
                              cf_map **out);

/**
 * The next result in input order. Returns 1 and moves the result into
 * *out: the caller now owns it (cf_value_release when done). Returns 0 at
 * the end. Returns a negative code when the item at this position failed
 * (the task's code, CF_ECANCELLED), when the deadline passed
 * (CF_ETIMEDOUT), when submission failed or when the input iterator
 * failed; the map is then over: every later call returns the same code
 * and the outstanding tasks have been cancelled (Python's behaviour).
 * These codes include the task's own, CF_ECANCELLED, CF_ETIMEDOUT,
 * CF_ENOMEM (the map could not buffer more items), the executor's submit
 * errors (CF_ESHUTDOWN, CF_EBROKEN, CF_EAGAIN) and the iterator's.
 * CF_EINVAL for a NULL map or out (then nothing is touched). On any
 * other return but 1, *out is a zero value. cf_map_error_message() gives the
 * text. The map drops its reference to each future as soon as its results are
 * yielded.
 *
 * Not thread-safe: one consumer per map (different maps are independent).
 */
CF_EXTERN int cf_map_next(cf_map *m, cf_value *out);

/** The message of the error cf_map_next returned, or "" if none (also for
 * a NULL map). Borrowed from the map: valid until cf_map_free. Call it
 * from the map's consumer thread, like cf_map_next. */
CF_EXTERN const char *cf_map_error_message(const cf_map *m);

/** Describes the iterator like Python's repr of the map generator
 * ("<cf_map iterator at 0x...>") into buf, as snprintf: returns the
 * length the full text needs (truncated to size - 1 bytes), or CF_EINVAL
 * (NULL m, or NULL buf with size > 0). */
CF_EXTERN int cf_map_describe(const cf_map *m, char *buf, size_t size);

/** Cancels every task it submitted that has not started, releases
 * results not yet yielded, and frees the map. NULL is ignored. Call it
 * from the map's consumer thread, never concurrently with cf_map_next;
 * tasks still running finish on their own and their results are freed. */
CF_EXTERN void cf_map_free(cf_map *m);

/* ---------------------------------------------------------------------- */
/* as_completed and wait over any set of futures                          */

typedef struct cf_as_completed cf_as_completed;

/**
 * Starts iterating over `fs` in completion order (Python's as_completed).
 * Futures already done come first, in input order; duplicates in fs are
 * yielded once. The deadline counts from this call (timeout_ns as in
 * cf/time.h; CF_FOREVER for none). The iterator holds a reference on
 * each future until it yields it.
 *
 * Returns 0, CF_EINVAL (NULL out, NULL fs with n > 0, a NULL element,
 * negative timeout), CF_ENOMEM. *out is NULL on error.
 */
CF_EXTERN int cf_as_completed_new(cf_future *const *fs, size_t n,
                                  int64_t timeout_ns, cf_as_completed **out);

/**
 * Returns 1 and the next done future in *out (a reference the caller now
 * owns: cf_future_unref it), 0 when all were yielded, CF_ETIMEDOUT when
 * the deadline passes first (and again on every later call, as Python's
 * generator is finished by its TimeoutError), CF_EINVAL for NULL
 * arguments. Cancelled futures are yielded like any other done future,
 * including those cancelled by cf_executor_shutdown(..., true).
 *
 * On a thread with a wait hook (a thread-pool worker) the wait goes
 * through the hook, one pending future at a time, so the worker keeps
 * running queued work; a completion elsewhere in the set is then noticed
 * within about a millisecond. The hook's errors are returned:
 * CF_EDEADLOCK if a pending future is a task the calling worker is
 * itself running.
 *
 * Not thread-safe: one consumer per iterator (cf_as_completed_remaining
 * may be called from any thread).
 */
CF_EXTERN int cf_as_completed_next(cf_as_completed *it, cf_future **out);

/** How many futures have not been yielded yet (0 for NULL). Safe to call
 * from any thread while the consumer iterates. */
CF_EXTERN size_t cf_as_completed_remaining(const cf_as_completed *it);

/** Drops the references still held and frees the iterator. NULL is
 * ignored. Futures are not cancelled. Must not run concurrently with
 * cf_as_completed_next on the same iterator. */
CF_EXTERN void cf_as_completed_free(cf_as_completed *it);

/** When cf_wait returns (Python's FIRST_COMPLETED etc.). */
typedef enum cf_return_when {
  CF_FIRST_COMPLETED = 0, /**< any future done (finished or cancelled) */
  CF_FIRST_EXCEPTION = 1, /**< any future failed, or all done */
  CF_ALL_COMPLETED = 2    /**< all done */
} cf_return_when;

/**
 * Waits for the futures in fs (Python's wait). Duplicates count once.
 * When the condition holds or the timeout expires, the distinct futures
 * are split by their state at return: done ones into done[0..*ndone),
 * the others into not_done[0..*nnot_done). Either array may be NULL if
 * not wanted (its count is still set if its count pointer is non-NULL);
 * each must have room for n entries. Pointers are borrowed (no
 * references added). A timeout is not an error: check *nnot_done.
 * Thread-safe: any number of threads may wait on overlapping sets.
 *
 * On a thread with a wait hook (a thread-pool worker) the wait goes
 * through the hook like cf_as_completed_next's, so the worker keeps
 * running queued work instead of blocking the pool.
 *
 * Returns 0, CF_EINVAL (bad arguments, negative timeout, unknown
 * return_when), CF_ENOMEM, or the hook's error (CF_EDEADLOCK: a future
 * in the set is a task the calling worker is itself running; the output
 * sets are then not written).
 */
CF_EXTERN int cf_wait(cf_future *const *fs, size_t n, int64_t timeout_ns,
                      cf_return_when return_when, cf_future **done,
                      size_t *ndone, cf_future **not_done, size_t *nnot_done);

#ifdef __cplusplus
}
#endif

#endif /* CF_EXECUTOR_H */
