/*
 * cf/process_pool.h - an executor whose workers are processes (Python's
 * ProcessPoolExecutor), for isolation: a task that crashes, aborts, calls
 * exit or hangs takes down its worker, never the caller.
 *
 * Tasks are named (cf/registry.h: CF_TASK) and their arguments and
 * results are bytes, so the same task runs on the thread pool and here
 * (a submit or map of a function that is not registered has no name to
 * send: CF_EINVAL; a name nobody registered: CF_EUNKNOWNTASK):
 *
 *     int main(int argc, char **argv) {
 *       cf_process_init(argc, argv);   // first: a worker stays in here
 *       cf_executor *ex;
 *       cf_process_pool_new(NULL, &ex);   // or cf_thread_pool_new
 *       cf_executor_submit_bytes(ex, "is_prime", &n, sizeof n, &f);
 *
 * Workers are started by exec of this program (/proc/self/exe), never by
 * fork of the caller: the caller may run threads (the thread pool's, a
 * loop's), and a fork child of a multi-threaded process may only call
 * async-signal-safe functions. The new process runs main, whose first
 * call, cf_process_init, sees that it is a worker (an environment
 * variable and an inherited socket) and serves tasks until the pool lets
 * it go, then exits; tasks registered with CF_TASK resolve there as in
 * the caller because registration runs before main. A pool refuses to
 * start (CF_EINVAL) in a program that has not called cf_process_init, so
 * a forgotten call cannot make workers run the program's main.
 *
 * Arguments: a task's arg_size bytes are copied to the worker
 * (cf_executor_submit_bytes; the task reads cf_arg_size there); an
 * argument without a size is sent as its pointer value (an integer cast
 * to a pointer, as cf_range_iter's items are), never dereferenced.
 * Results: an 8-byte word (u, size 0) or bytes (cf_value_set_bytes,
 * _string) come back; a value's destructor runs in the worker. Arguments
 * and results are at most 1 GiB (-EMSGSIZE: at submit for an argument, as
 * the task's error for a result). A worker that sends a malformed frame
 * is ended and its task fails with -EPROTO.
 *
 * A worker that dies (a signal, exit, the OOM killer) fails the task it
 * was running with CF_EWORKER and a message naming the signal or the exit
 * status; the pool starts another worker and carries on (opts.broken_on_
 * crash: Python's BrokenProcessPool instead: every pending and later
 * task fails with CF_EBROKEN). A task running longer than
 * opts.task_timeout_ns has its worker killed and fails with CF_ETIMEDOUT.
 * cf_future_cancel of a running task kills its worker and the future ends
 * CANCELLED.
 *
 * Futures are completed, and their done callbacks run, on the pool's
 * own thread (the tasks a cancelling shutdown drops: on the thread that
 * shuts down). A callback that fails in either is counted
 * (stats.callbacks_failed) and reported to the process-wide handler
 * (cf_set_callback_error_handler; without one, a line on stderr).
 *
 * Thread-safety: as every executor (cf/executor.h): submit, cancel and
 * shutdown from any thread.
 */
#ifndef CF_PROCESS_POOL_H
#define CF_PROCESS_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/executor.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Options. Zero-initialise; every zero is a default. */
typedef struct cf_process_pool_opts {
  /** Worker processes (0: the number of CPUs, as Python). */
  int max_workers;
  /** A task registered under this name runs once in each worker before
   * its first task, with initarg[0..initarg_size) as its argument; a
   * failure breaks the pool (CF_EBROKEN), as in Python. NULL: none. */
  const char *initializer;
  const void *initarg;
  size_t initarg_size;
  /** Tasks a worker runs before it is replaced by a fresh one (0: no
   * limit; Python's max_tasks_per_child). */
  int max_tasks_per_child;
  /** A task running longer than this has its worker killed and fails
   * with CF_ETIMEDOUT (0: no limit). */
  int64_t task_timeout_ns;
  /** Python's semantics for a dead worker: the pool is broken, every
   * task not done fails with CF_EBROKEN, later submits too. false: only
   * the dead worker's task fails (CF_EWORKER) and a new worker starts. */
  bool broken_on_crash;
} cf_process_pool_opts;

/**
 * Call first thing in main. In a worker process started by a pool it
 * serves tasks and exits the process when the pool is done with it (it
 * does not return); in any other process it returns 0 at once and allows
 * this program to create process pools. argc and argv are not used yet.
 */
CF_EXTERN int cf_process_init(int argc, char **argv);

/**
 * Creates a process pool. Workers start lazily, as tasks arrive (the
 * first submit starts one, and more while tasks wait, up to max_workers).
 * Returns 0 and the executor in *out; CF_EINVAL (NULL out, bad options,
 * an unregistered initializer, or cf_process_init was not called: these
 * two also print a line saying so on stderr),
 * CF_ENOMEM, or -errno (the pool's thread could not start).
 */
CF_EXTERN int cf_process_pool_new(const cf_process_pool_opts *opts,
                                  cf_executor **out);

#ifdef __cplusplus
}
#endif

#endif /* CF_PROCESS_POOL_H */
