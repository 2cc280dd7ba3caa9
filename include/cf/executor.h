/*
 * cf/executor.h - the executor interface and the combinators over futures.
 *
 * An executor runs tasks (cf_task_fn) and hands back futures. Every
 * backend (thread pool today; process pool, MPI and the event loop later)
 * is created by its own constructor and then used only through the
 * functions below, so switching backends changes one line.
 *
 * Thread-safety: every function taking a cf_executor may be called from
 * any thread concurrently, including from tasks running on that executor.
 * cf_executor_free() must be the last call on it: a call that starts
 * after it is a bug, which the library detects while the handle is recent
 * (the call returns CF_EBADF instead of touching freed memory). A
 * shutdown waiting, a stats read or a cancel already under way when free
 * starts completes normally, and free waits for it; a submit racing free
 * fails (CF_EBADF or CF_ESHUTDOWN) or goes through before the shutdown.
 *
 * Conventions of the whole API: out-parameters come last (the object,
 * then inputs, then options, then what the call hands back); getters are
 * cf_<object>_get_<what> and return the value, or fill a struct passed
 * last and return 0; predicates (cf_future_done) return bool.
 *
 * fork. In the child of a fork(), the library is usable as if freshly
 * loaded: create new executors and futures there. Executors created
 * before the fork belong to the parent (their threads do not exist in the
 * child): submit and map fail with CF_EFORKED; the first call on such an
 * executor in the child (submit, shutdown, stats, free) or the first wait
 * on one of its futures settles every one of its futures that is not done
 * with CF_EFORKED (their callbacks run then), so nothing in the child
 * waits for them forever; cf_executor_free releases it without joining
 * threads. A future created with cf_future_new that a thread of the
 * parent would have completed stays pending in the child. A child forked
 * from inside a task should exec() or _exit() before that task returns:
 * the child's copy of the worker ends when the task returns, and with it
 * the child, if it has no other thread. Until then that task's future
 * (and those of the tasks it was run beneath while they waited) stay
 * RUNNING in the child and are not settled: the returns finish them as
 * usual. From that thread, a wait that would block on one of them
 * (single or cf_wait, as_completed; a zero timeout does not block), and
 * the pool's shutdown with CF_SHUTDOWN_WAIT or free, are CF_EDEADLK; a
 * coroutine of a loop run on that thread waits as a coroutine does.
 * Another thread of the child that waits for them, or frees the pool,
 * waits until those tasks have returned. Waits of those tasks run none
 * of the parent's queued work in the child, and a submit of theirs that
 * waited for room fails with CF_EFORKED. In a grandchild forked by
 * another thread, those futures are the parent's again: settled with
 * CF_EFORKED. A loop forked from one of its own
 * tasks is the exception: it goes on in the child (its thread is the one
 * that forked), its futures are not settled and waits on them get what
 * its tasks return; but libuv's kernel state is shared with the parent,
 * so that child too should exec() or _exit() soon.
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
  /** The function. Required by executors that run tasks in this process
   * (the thread pool: CF_EINVAL if NULL). */
  cf_task_fn fn;
  void *arg; /**< passed to fn */
  /**
   * If non-NULL, called with arg exactly once when the executor is done
   * with it: after fn returns, or when the task is cancelled or fails
   * without running. Not called when submission itself fails. It runs
   * in whichever thread ends the task (a worker, a canceller, a
   * shutdown, a loop task that cancels it) and should only release the
   * argument: it must not wait (no cf_future_wait, cf_sleep or lock
   * that a task holds), since inside a loop task a wait would suspend a
   * cancellation half-way.
   */
  void (*arg_dtor)(void *arg);
  /**
   * 0: arg is an opaque pointer. > 0: arg points to arg_size bytes that
   * a backend may copy (process and MPI pools copy them to the worker).
   * The thread pool passes arg through unchanged either way.
   */
  size_t arg_size;
  /**
   * The task's identity across processes: the name it is registered under
   * (the process pool's task registry), so that a worker in another
   * process (forked, exec'ed, an MPI rank) can find the same function.
   * NULL: none. Executors in this process ignore it; executors in other
   * processes require it (or find fn's name in the registry). Borrowed:
   * a static string, or one that outlives the task.
   */
  const char *name;
} cf_task;

/**
 * Submits fn(arg) (Python's submit). On success *out (if out is non-NULL)
 * receives a new reference to the task's future; pass NULL to fire and
 * forget. If the executor bounds its queue and the queue is full, this
 * blocks until there is room (see cf_executor_submit_task for a timeout).
 *
 * Returns 0, CF_EINVAL (NULL executor, or a NULL fn for an executor that
 * needs one), CF_ESHUTDOWN (after shutdown), CF_EBROKEN (an initializer
 * failed), CF_ENOMEM, CF_EBADF (freed executor), CF_EFORKED (an executor
 * of the parent process, see "fork" above). On error *out is NULL and
 * nothing will run.
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

/** Flags of cf_executor_shutdown (Python's wait and cancel_futures). */
enum cf_shutdown_flags {
  /** Wait until every task has finished or been cancelled and every
   * worker has exited (within the timeout). */
  CF_SHUTDOWN_WAIT = 1u << 0,
  /** Cancel every task that has not started, before returning. */
  CF_SHUTDOWN_CANCEL_FUTURES = 1u << 1
};

/**
 * Stops accepting work (Python's shutdown), flags read at the call site:
 *
 *     cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER);
 *     cf_executor_shutdown(ex, CF_SHUTDOWN_CANCEL_FUTURES, 0);
 *
 * Later submits fail with CF_ESHUTDOWN. Work already queued still runs
 * unless CF_SHUTDOWN_CANCEL_FUTURES is given, in which case every queued
 * future is cancelled before this returns (its waiters and
 * as_completed/wait see it); a task a worker was taking at that very
 * instant may still start, as in Python. With CF_SHUTDOWN_WAIT it then
 * waits, at most timeout_ns (cf/time.h; CF_FOREVER: no limit), until every
 * task has finished or been cancelled and every worker has exited; without
 * it, timeout_ns is not used (pass 0). May be called more than once, from
 * any thread: a call after a timed-out one waits again.
 *
 * Returns 0; CF_ETIMEDOUT if the wait expired first (the shutdown still
 * took effect; call again to keep waiting); CF_EINVAL (NULL, unknown flag
 * bits, negative timeout); CF_EBADF; CF_EDEADLK if CF_SHUTDOWN_WAIT is
 * given and the caller is one of this executor's own workers (it cannot
 * wait for itself; the shutdown still takes effect).
 */
CF_EXTERN int cf_executor_shutdown(cf_executor *ex, unsigned flags,
                                   int64_t timeout_ns);

/**
 * Shuts down with wait (without cancelling, without limit) and frees the
 * executor. Futures it returned stay valid (you own them). To bound the
 * wait, shut down first: once cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT,
 * t) has returned 0, cf_executor_free(ex) does not block. Returns 0,
 * CF_EBADF for an executor already freed, CF_EDEADLK if called from one of
 * its own workers, or from a callback or destructor that a shutdown or a
 * cancel on this executor is running (it could never finish; nothing is
 * freed then), CF_EINVAL for NULL.
 */
CF_EXTERN int cf_executor_free(cf_executor *ex);

/** Counters, readable at any time (cf_executor_get_stats). */
typedef struct cf_executor_stats {
  uint64_t submitted; /**< tasks accepted by submit */
  uint64_t queued;    /**< accepted, not yet started or discarded */
  uint64_t running;   /**< running now */
  uint64_t completed; /**< finished with a value */
  /** Finished with an error: the task's own, a broken pool's, or (process
   * pool) a worker that crashed or ran past the time limit. */
  uint64_t failed;
  /** Discarded without running: cancelled before they ran (as seen by
   * the executor), or completed by hand (cf_future_set_result) while
   * queued; and (process pool) running tasks whose worker it killed for
   * a cancel. */
  uint64_t cancelled;
  /** Done callbacks that returned non-zero (counted once the callback
   * has returned: after its future is seen done). */
  uint64_t callbacks_failed;
  /** Workers: a thread pool's threads started (still counted after they
   * exit at shutdown); a process pool's worker processes alive now. */
  uint32_t workers;
  uint32_t idle_workers; /**< of which waiting for work right now */
  uint32_t max_workers;  /**< the configured maximum */
} cf_executor_stats;

/**
 * Fills *st. Each counter is read atomically, but the set is not one
 * snapshot: while tasks run, queued/running may be off by the tasks in
 * flight between two counters (and a future you cancelled still counts
 * as queued until a worker discards it). When the executor is idle the
 * counters are exact and submitted == completed + failed + cancelled;
 * in particular a waiter that sees the last future done reads counters
 * that already count it. Returns 0, CF_EINVAL, CF_EBADF.
 */
CF_EXTERN int cf_executor_get_stats(cf_executor *ex, cf_executor_stats *st);

/** The maximum number of tasks the executor runs at once (> 0), or a
 * negative error (CF_EINVAL, CF_EBADF). Thread-safe. */
CF_EXTERN int cf_executor_get_max_workers(cf_executor *ex);

/* ---------------------------------------------------------------------- */
/* map                                                                     */

/**
 * The input of a map: returns 1 and stores the next item in *item, 0 at
 * the end, or a negative code to fail the map at this position; as a
 * task does, it may give that code a message with cf_raise (then
 * cf_map_get_error reports it; else the code's text). It is called only
 * from the thread that calls cf_executor_map / cf_map_next.
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
 * state. A chunked map reads a whole chunk of this iterator (and of
 * cf_range_iter_next) in one step, with the same items and the same final
 * state as one call per item, and its tasks read the items in place: the
 * array must stay unchanged until the map is freed. */
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

/** A chunk of a map's items, as a chunk runner gets it. Opaque. */
typedef struct cf__map_chunk cf_map_chunk;
/** A chunk runner (cf_map_opts.chunk_fn): define it with CF_MAP_CHUNK_FN. */
typedef int (*cf_map_chunk_fn)(cf_map_chunk *chunk);

/**
 * Defines `static int name(cf_map_chunk *)`, a chunk runner for maps of
 * the task function item_fn (cf_map_opts.chunk_fn): the loop over a
 * chunk's items with item_fn written into it, so that the compiler can
 * inline it (item_fn must be visible where the macro is used). Worth it
 * for items of a few nanoseconds, where the call through a pointer per
 * item is most of the cost (bench/NOTES.md section 17). Sized items
 * (item_size > 0) go per item for the whole chunk, and a chunk whose
 * results are not plain from its first such result on. The runner runs
 * where the chunks run (the executor's workers), as fn would; it adds no
 * state of its own, so the thread-safety is fn's. Use it at file scope:
 *
 *     static int square(void *arg, cf_value *r) {
 *       r->u.i = (intptr_t)arg * (intptr_t)arg;
 *       return 0;
 *     }
 *     CF_MAP_CHUNK_FN(square_chunks, square)
 *     ...
 *     cf_map_opts o = {.chunksize = 1000, .chunk_fn = square_chunks};
 *     cf_executor_map(ex, square, cf_range_iter_next, &range, &o, &m);
 */
#define CF_MAP_CHUNK_FN(name, item_fn)                                         \
  static int name(cf_map_chunk *cf__chunk) {                                   \
    return cf__map_chunk_run(cf__chunk, item_fn);                              \
  }

/** Options of a map. Zero-initialise; zero means the default. */
typedef struct cf_map_opts {
  /** Items per task (Python's chunksize), obeyed as given when > 0: 1 is
   * one task per item, exactly as Python's map. 0 (the default): adaptive.
   * The map starts with one item per task, so long items run exactly as
   * with 1 (each starts as soon as a worker is free, in input order), and
   * once items turn out short it lets chunks grow (up to 4x per step,
   * towards about a hundred microseconds of work, at most 65536 items),
   * so that tiny items are not swamped by the cost of a task; it shrinks
   * them again if items get longer. Results stay in input order and
   * lazy; memory stays bounded by prefetch chunks. Negative: CF_EINVAL. */
  int64_t chunksize;
  /** Look-ahead: the most tasks (chunks) submitted but not yet yielded.
   * 0: with chunksize 0 or 1, 4 * max_workers, at least 64; with
   * chunksize > 1, 4 * max_workers, at least 8. Adaptive chunks (chunksize
   * 0) start with 4 * max_workers, at least 8, in flight until the first
   * chunk tells how long items take; then the full look-ahead while
   * chunks are small, fewer once they hold many items (about 8192 items
   * in flight). Negative: CF_EINVAL. */
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
  /** 0: items are opaque pointers (or integers cast to pointers) passed
   * as they are. > 0: every item points to item_size bytes, and the task
   * gets a copy of them as an argument buffer, on every executor: the
   * thread pool copies them as cf_executor_submit_bytes does (so
   * cf_arg_size and cf_arg_get work in the task), a process pool ships
   * them to the worker. The map copies an item's bytes as it reads the
   * item (into its task's argument, or into its chunk), so an iterator
   * may hand out one buffer for every item. With cf_range_iter_next
   * (integers, not pointers): CF_EINVAL. */
  size_t item_size;
  /** fn's identity across processes (as cf_task.name); NULL: none. */
  const char *name;
  /** Runs a whole chunk with fn inlined: a function defined with
   * CF_MAP_CHUNK_FN(name, fn) from this map's fn, or NULL (the default:
   * fn is called through its pointer, once per item). It changes nothing
   * but speed: the results, errors and messages are the ones of the
   * per-item calls. Used for chunks run in this process (chunksize > 1,
   * or adaptive once chunks grow); ignored with chunksize 1 and by
   * executors that run chunks in another process. cf_executor_map calls
   * the runner once on the calling thread with a probe chunk (it runs no
   * item; the runner reports which function it was made from) and
   * returns CF_EINVAL if that is not fn: a runner must come from
   * CF_MAP_CHUNK_FN, and fn must be the same function, with one address
   * (a static inline fn defined in a header has one per file). */
  cf_map_chunk_fn chunk_fn;
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
 * Where laziness differs from Python, which submits every item at the
 * call: shut the executor down only once the map is drained (a shutdown
 * ends the map with CF_ESHUTDOWN at the first item not yet submitted, so
 * Python's `with` block that ends before the results are read does not
 * carry over); and a deadline, counted from the call as Python's, also
 * covers items submitted late, as the consumer advances: a consumer
 * that pauses past the deadline gets CF_ETIMEDOUT at the first item not
 * done when it comes back, where Python's may have finished meanwhile.
 * With chunks (chunksize > 1, or adaptive once they grow), a chunk's
 * results are yielded once the whole chunk is done, as with Python's
 * chunksize; a deadline that passes while a chunk runs ends the map at
 * the chunk's first item not yet yielded.
 *
 * fn is required on every executor, the process pool's included (there
 * it runs by the name it is registered under, or opts->name).
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
 * (the task's code, CF_ECANCELED), when the deadline passed
 * (CF_ETIMEDOUT), when submission failed or when the input iterator
 * failed; the map is then over: every later call returns the same code
 * and the outstanding tasks have been cancelled (Python's behaviour).
 * These codes include the task's own, CF_ECANCELED, CF_ETIMEDOUT,
 * CF_ENOMEM (the map could not buffer more items), the executor's submit
 * errors (CF_ESHUTDOWN, CF_EBROKEN, CF_EAGAIN) and the iterator's.
 * CF_EINVAL for a NULL map or out (then nothing is touched). On any
 * other return but 1, *out is a zero value. cf_map_get_error() gives the
 * code and its text. The map drops its reference to each future as soon as
 * its results are yielded.
 *
 * Not thread-safe: one consumer per map (different maps are independent).
 *
 * It is inline, like stdio's getc: while the current chunk holds plain
 * results (values without size, destructor or type) it reads them from a
 * private cursor at the start of the map object without a call; anything
 * else goes to cf__map_next_slow. The cursor is not part of the API.
 */
static inline int cf_map_next(cf_map *m, cf_value *out);

/* Private: the map's fast-path cursor (the first member of every map)
 * and the out-of-line rest of cf_map_next. */
typedef struct cf__map_cursor {
  const cf_word *next, *end; /* plain results ready to hand out, or equal */
} cf__map_cursor;
CF_EXTERN int cf__map_next_slow(cf_map *m, cf_value *out);

static inline int cf_map_next(cf_map *m, cf_value *out) {
  cf__map_cursor *c = (cf__map_cursor *)(void *)m;
  if (m == NULL || out == NULL)
    return CF_EINVAL; /* nothing touched */
  if (c->next != c->end) {
    out->u = *c->next++;
    out->size = 0;
    out->dtor = NULL;
    out->type = NULL;
    return 1;
  }
  /* Through a copy (which the slow path always fills), so that out's
   * address does not escape here: a caller's local value then stays in
   * registers, and the fields it does not read are never stored
   * (bench/NOTES.md section 17). */
  cf_value v;
  int rc = cf__map_next_slow(m, &v);
  *out = v;
  return rc;
}

/* Private: what CF_MAP_CHUNK_FN expands to. cf__map_chunk_open prepares
 * the chunk and returns 1 with its items and result slots in *s; else
 * it has run the chunk the per-item way (sized items), or recorded fn
 * (the map's check of its runner), and returns that outcome.
 * cf__map_chunk_resume takes item i's outcome when it is not a plain
 * success and runs the rest per item; cf__map_chunk_close ends a chunk
 * whose results were all plain. */
typedef struct cf__map_span {
  void *const *items; /* the items, or NULL: first, first + step, ... */
  int64_t first;
  uint64_t step;
  size_t n;
  cf_word *out; /* where result i's word goes */
  int *raised;  /* this thread's cf_raise code, cleared before each item */
} cf__map_span;
CF_EXTERN int cf__map_chunk_open(cf_map_chunk *c, cf_task_fn fn,
                                 cf__map_span *s);
CF_EXTERN int cf__map_chunk_resume(cf_map_chunk *c, size_t i, int rc,
                                   cf_value *v);
CF_EXTERN int cf__map_chunk_close(cf_map_chunk *c);

#if defined(__GNUC__)
#define CF__ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CF__ALWAYS_INLINE inline
#endif

/* Results are streamed to memory (non-temporal stores: the consumer, on
 * another core, reads them from there, bench/NOTES.md section 10), except
 * under the sanitizers, which do not see such stores. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CF__PLAIN_STORES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CF__PLAIN_STORES 1
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(CF__PLAIN_STORES)
#define CF__STREAM_STORES 1
#endif

static CF__ALWAYS_INLINE void cf__map_store(cf_word *slot, cf_word w) {
#ifdef CF__STREAM_STORES
  __asm__("movnti %1, %0" : "=m"(slot->i) : "r"(w.i));
#else
  *slot = w;
#endif
}

static CF__ALWAYS_INLINE int cf__map_chunk_loop(cf_map_chunk *c,
                                                cf_task_fn fn,
                                                const cf__map_span *s,
                                                bool range) {
  for (size_t i = 0; i < s->n; i++) {
    cf_value v = CF_VALUE_INIT;
    void *item = range ? (void *)(intptr_t)(int64_t)((uint64_t)s->first +
                                                     i * s->step)
                       : s->items[i];
    *s->raised = 0;
    int rc = fn(item, &v);
    if (rc != 0 || v.size != 0 || v.dtor != NULL || v.type != NULL)
      return cf__map_chunk_resume(c, i, rc, &v);
    cf__map_store(&s->out[i], v.u);
  }
  return cf__map_chunk_close(c);
}

static CF__ALWAYS_INLINE int cf__map_chunk_run(cf_map_chunk *c,
                                               cf_task_fn fn) {
  cf__map_span s;
  int rc = cf__map_chunk_open(c, fn, &s);
  if (rc != 1)
    return rc;
  return s.items == NULL ? cf__map_chunk_loop(c, fn, &s, true)
                         : cf__map_chunk_loop(c, fn, &s, false);
}

/** The error that ended the map, code and message together: {0, ""} while
 * none (also for a NULL map), else what cf_map_next returns and its text
 * (the task's cf_raise message, or cf_strerror). The message is borrowed
 * from the map: valid until cf_map_free. Call it from the map's consumer
 * thread, like cf_map_next. */
CF_EXTERN cf_error cf_map_get_error(const cf_map *m);

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
 * including those cancelled by cf_executor_shutdown with
 * CF_SHUTDOWN_CANCEL_FUTURES.
 *
 * On a thread with a wait hook (a thread-pool worker, a coroutine) the
 * wait goes through the hook's sleep/wake pair: the waiter sleeps until
 * the first completion in the set and wakes once for it (a worker keeps
 * running queued work meanwhile when no other worker is free and there is
 * no deadline). The hook's errors are returned: CF_EDEADLK if a pending
 * future is a task the calling worker is itself running.
 *
 * Not thread-safe: one consumer per iterator (cf_as_completed_get_remaining
 * may be called from any thread).
 */
CF_EXTERN int cf_as_completed_next(cf_as_completed *it, cf_future **out);

/** How many futures have not been yielded yet (0 for NULL). Safe to call
 * from any thread while the consumer iterates. */
CF_EXTERN size_t cf_as_completed_get_remaining(const cf_as_completed *it);

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
 * On a thread with a wait hook (a thread-pool worker, a coroutine) the
 * wait goes through the hook like cf_as_completed_next's: it wakes once
 * per completion in the set that could end it, not on a timer.
 *
 * Returns 0, CF_EINVAL (bad arguments, negative timeout, unknown
 * return_when), CF_ENOMEM, or the hook's error (CF_EDEADLK: a future
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
