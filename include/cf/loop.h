/*
 * cf/loop.h - the event loop and coroutine tasks (Python's asyncio).
 *
 * A loop runs on one thread, on libuv. Its tasks are stackful coroutines:
 * a task is an ordinary C function (cf_task_fn) that runs on a stack of
 * its own and is suspended, not blocked, wherever it waits: in
 * cf_future_wait / cf_future_result, cf_wait, cf_as_completed_next and
 * cf_sleep. Thousands of tasks wait at once on one thread, in code that
 * reads like the sequential version.
 *
 * A task is a cf_future like every other: spawn one with cf_loop_spawn,
 * or submit to the loop's executor (cf_loop_executor), and wait for it,
 * add callbacks to it, cancel it, put it in cf_wait or as_completed, from
 * any thread. Inside a task, a future of any executor (a thread pool's,
 * another loop's) is awaited the same way: there is no to_thread,
 * run_in_executor or wrap_future, because there is one future type.
 *
 *     static int main_task(void *arg, cf_value *result) {
 *       cf_future *f;
 *       cf_executor_submit(pool, slow_call, arg, &f); // on a thread pool
 *       const cf_value *v;
 *       int rc = cf_future_result(f, CF_SEC(5), &v);  // suspends the task
 *       ...
 *     }
 *     cf_future *done;
 *     int rc = cf_loop_run_main(main_task, NULL, NULL, &done);
 *
 * Threads. A loop belongs to one thread at a time: the thread that
 * created it, or that last ran it. Functions marked "loop thread" return
 * CF_EWRONGTHREAD when called from any other thread, and change nothing.
 * A thread runs at most one loop at a time (cf_loop_run inside a running
 * loop: CF_EBUSY). cf_loop_call_soon_threadsafe, cf_loop_stop,
 * cf_loop_spawn and everything in cf/future.h work from any thread.
 *
 * Cancellation (cf_future_cancel of a task). A task that has not started
 * is cancelled at once and never runs. A started task gets the
 * cancellation at its current or next wait, which returns CF_ECANCELED;
 * the task may clean up and return CF_ECANCELED (its future ends
 * CANCELLED), or ignore it and carry on (Python's "suppress"): a request
 * is delivered once. A wait that something else ended (its future done,
 * its deadline) but that the task has not returned from yet also takes
 * a cancellation that comes meanwhile, as Python raises CancelledError
 * at an await whose future was already done: it returns CF_ECANCELED
 * (the future keeps its outcome; a semaphore or lock permit handed over
 * goes on to the next waiter). A poll (a zero timeout) is no wait: it
 * delivers nothing. Not every library call a task makes is a wait:
 * cancelling a task blocked in cf_future_wait or cf_future_result does
 * not cancel the future it waits for (Python's `await fut` does; here
 * futures are shared: use cf_wait_for, whose cancellation cancels f). A
 * task whose function returns CF_ECANCELED ends CANCELLED in any case.
 *
 * Done callbacks. A callback that code running on a loop's thread adds to
 * any future (cf_future_add_done_callback, while the loop runs) runs on
 * that loop's thread, scheduled like cf_loop_call_soon, also when the
 * future is completed by another thread or is already done: never inline
 * in a foreign thread, never before add_done_callback returns.
 *
 * Stacks. Each running or suspended task has its own stack (mmap'ed, a
 * 64 KiB guard region below it, recycled through a per-loop cache). Only the
 * pages a task touches use memory. A task that overflows its stack dies
 * with a message naming the stack size on stderr (SIGSEGV), never with
 * silent corruption. Memory that a task passes to other tasks or threads
 * may live on its stack: it stays put while the task is suspended.
 *
 * Errors: 0 or a negative code (cf/error.h); CF_EWRONGTHREAD as above,
 * CF_ESHUTDOWN once the loop is shutting down, CF_EBADF (where it can be
 * told) once it is freed, CF_EINVAL for bad arguments, CF_ENOMEM.
 */
#ifndef CF_LOOP_H
#define CF_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/executor.h"
#include "cf/future.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_loop cf_loop;

/** Options for cf_loop_new. Zero-initialise; every zero is a default. */
typedef struct cf_loop_opts {
  /** Stack size of each task, in bytes (0: 256 KiB). Rounded up to whole
   * pages; at least 16 KiB. Address space only: a task uses the pages it
   * touches. */
  size_t stack_size;
  /** Stacks kept for reuse when tasks end (0: 64). */
  size_t stack_cache;
  /**
   * Run every task on one stack of stack_size bytes shared by the loop's
   * tasks, saving the part a task uses when another needs the stack (a
   * copy of typically a few hundred bytes) and putting it back when it
   * resumes. For very many tasks: a sleeping task then holds about 1 KiB
   * instead of its own stack's pages (at least 4 KiB), and the number of
   * tasks is not bounded by the kernel's mapping limit (each own stack
   * is two mappings; vm.max_map_count is 65530 by default, so about
   * 32,000 tasks with own stacks). The price: a switch to a task that is
   * not the stack's current one copies, and while a task is suspended
   * its stack memory is elsewhere, so no other task or thread may use a
   * pointer into it (its locals are fine for its own use across waits).
   * The library itself keeps nothing on a task's stack across a wait.
   * The shared stack is below 4 GiB (a larger stack_size: CF_EINVAL).
   * Ignored (own stacks) in builds with the ucontext switch.
   */
  bool shared_stack;
  /** Name in descriptions and messages (borrowed; NULL: "loop"). */
  const char *name;
} cf_loop_opts;

/**
 * Creates a loop, owned by the calling thread until another thread runs
 * it. Returns 0 and the loop in *out, or CF_EINVAL (NULL out, bad
 * options), CF_ENOMEM, or a libuv failure as -errno.
 */
CF_EXTERN int cf_loop_new(const cf_loop_opts *opts, cf_loop **out);

/**
 * Frees the loop, from any thread while it is not running (else
 * CF_EBUSY; also from a task of another loop, which cannot drive this
 * one). Tasks that never started are cancelled; tasks that are suspended
 * get a cancellation, and the loop runs (on this thread) until they have
 * all ended; callbacks still scheduled then run or, for timers not yet
 * due, are dropped. Returns 0 (NULL: nothing to do), CF_EBUSY, CF_EBADF
 * (already freed).
 */
CF_EXTERN int cf_loop_free(cf_loop *loop);

/**
 * The loop as an executor (borrowed; valid until cf_loop_free): submit
 * spawns a task, map runs a task per item or chunk, shutdown with
 * CF_SHUTDOWN_CANCEL_FUTURES cancels what has not started, and
 * stats count tasks. Do not cf_executor_free it: free the loop (on a
 * thread that runs a loop, cf_executor_free of it is CF_EDEADLK).
 * A shutdown with CF_SHUTDOWN_WAIT from the loop's thread, while the loop
 * is not running, runs it until every task has ended; from another thread
 * it waits for the running loop to finish them. From a task of the loop
 * itself it returns CF_EDEADLK, the shutdown taking effect all the same
 * (no new tasks; the cancellations asked are delivered), as a pool's
 * does from one of its workers; from a task of another loop CF_EBUSY,
 * changing nothing (that thread cannot drive this loop). A shutdown
 * without a wait works from any thread.
 */
CF_EXTERN cf_executor *cf_loop_executor(cf_loop *loop);

/**
 * Runs the loop on the calling thread until cf_loop_stop is called
 * (Python's run_forever). The calling thread becomes the loop's thread.
 * Returns 0 once stopped; CF_EBUSY if the loop already runs (on any
 * thread) or this thread already runs a loop; CF_EINVAL for NULL.
 */
CF_EXTERN int cf_loop_run(cf_loop *loop);

/**
 * Runs the loop until f is done (Python's run_until_complete), then
 * returns 0; read f's outcome with the future API. Returns CF_ESTOPPED if
 * cf_loop_stop stopped the loop first, else as cf_loop_run.
 */
CF_EXTERN int cf_loop_run_until(cf_loop *loop, cf_future *f);

/**
 * Asks a running loop to stop: cf_loop_run returns after the callbacks
 * already due have run. Any thread; a loop that is not running returns
 * from its next cf_loop_run at once (once). Returns 0, CF_EINVAL,
 * CF_EBADF (freed loop).
 */
CF_EXTERN int cf_loop_stop(cf_loop *loop);

/** The loop running on the calling thread, or NULL (get_running_loop). */
CF_EXTERN cf_loop *cf_loop_current(void);

/**
 * Python's asyncio.run: creates a loop with opts (NULL: defaults), runs
 * fn(arg) as its main task until it ends, cancels the tasks still alive
 * and lets them end, frees the loop, and returns the main task's outcome:
 * 0, its error code, or CF_ECANCELED. If out is non-NULL it gets the main
 * task's future (done; a reference: cf_future_unref it) for the value
 * and the message. Returns CF_EBUSY if this thread already runs a loop,
 * CF_EINVAL for a NULL fn, or what cf_loop_new returns.
 */
CF_EXTERN int cf_loop_run_main(cf_task_fn fn, void *arg,
                               const cf_loop_opts *opts, cf_future **out);

/* ---------------------------------------------------------------------- */
/* Callbacks                                                              */

/** A callback scheduled on a loop. */
typedef void (*cf_callback_fn)(void *arg);

/** A scheduled callback, for cancelling it (Python's Handle). */
typedef struct cf_loop_call cf_loop_call;

/**
 * Schedules fn(arg) to run on the loop's next turn (loop thread). Calls
 * scheduled this way run in the order they were scheduled. If out is
 * non-NULL it gets a handle (release it with cf_loop_call_release).
 * Calls are accepted while the loop shuts down (tasks cleaning up may
 * need them). Returns 0, CF_EWRONGTHREAD, CF_EBADF (freed loop),
 * CF_EINVAL, CF_ENOMEM.
 */
CF_EXTERN int cf_loop_call_soon(cf_loop *loop, cf_callback_fn fn, void *arg,
                                cf_loop_call **out);

/**
 * Schedules fn(arg) to run once delay_ns have passed (loop thread), never
 * earlier; calls due at the same time run in the order they were
 * scheduled. Returns as cf_loop_call_soon, CF_EINVAL for a negative
 * delay.
 */
CF_EXTERN int cf_loop_call_later(cf_loop *loop, int64_t delay_ns,
                                 cf_callback_fn fn, void *arg,
                                 cf_loop_call **out);

/** cf_loop_call_later at an absolute deadline on cf_now_ns()'s clock. */
CF_EXTERN int cf_loop_call_at(cf_loop *loop, int64_t deadline_ns,
                              cf_callback_fn fn, void *arg,
                              cf_loop_call **out);

/**
 * Schedules fn(arg) on the loop from any thread (Python's
 * call_soon_threadsafe) and wakes the loop. Calls from one thread run in
 * the order made. Returns 0, CF_ESHUTDOWN (the loop is being or has been
 * freed: fn will not run), CF_EINVAL, CF_ENOMEM.
 */
CF_EXTERN int cf_loop_call_soon_threadsafe(cf_loop *loop, cf_callback_fn fn,
                                           void *arg);

/**
 * Cancels a scheduled call that has not run (loop thread). Returns 0
 * (cancelled: it will not run; also for a call cancelled already),
 * CF_EBUSY (it ran, or is running),
 * CF_EWRONGTHREAD, CF_EINVAL.
 */
CF_EXTERN int cf_loop_call_cancel(cf_loop_call *h);

/** Releases a handle (any thread, once; NULL is ignored). */
CF_EXTERN void cf_loop_call_release(cf_loop_call *h);

/* ---------------------------------------------------------------------- */
/* Tasks                                                                  */

/**
 * Spawns fn(arg) as a task of the loop (Python's create_task), from any
 * thread: it starts on the loop's next turn, on a stack of its own (or,
 * with cf_loop_opts.shared_stack, on the loop's shared stack). The
 * future (a reference: unref it) ends with fn's outcome: its value, or
 * its error and cf_raise message, or CANCELLED. Same as cf_executor_submit
 * on cf_loop_executor(loop). Returns 0, CF_ESHUTDOWN, CF_EINVAL,
 * CF_ENOMEM.
 *
 * On a shared stack, arg must not point into the spawning task's stack
 * if the spawner waits before the new task is done with it (the common
 * `cf_loop_spawn(L, fn, &local, &f); cf_future_wait(f, ...)`): while the
 * spawner waits, its stack is saved elsewhere. Pass heap memory, or use
 * own stacks (the default).
 */
CF_EXTERN int cf_loop_spawn(cf_loop *loop, cf_task_fn fn, void *arg,
                            cf_future **out);

/** The loop task running on the calling thread (borrowed), or NULL: also
 * in a task of a thread pool (a pool's task is not a coroutine). */
CF_EXTERN cf_future *cf_task_current(void);

/**
 * Sleeps for ns nanoseconds (Python's asyncio.sleep). In a task it
 * suspends the task; anywhere else it blocks the thread. Returns 0, or
 * CF_ECANCELED if the task was cancelled while sleeping (it wakes at
 * once), CF_EINVAL for a negative time, CF_ENOMEM (no room for its
 * timer).
 */
CF_EXTERN int cf_sleep(int64_t ns);

/** cf_sleep until an absolute deadline on cf_now_ns()'s clock. */
CF_EXTERN int cf_sleep_until(int64_t deadline_ns);

/**
 * Lets the other ready tasks and callbacks run, then resumes (Python's
 * asyncio.sleep(0)). Outside a task: returns 0 at once. Returns 0 or
 * CF_ECANCELED.
 */
CF_EXTERN int cf_yield(void);


/* ---------------------------------------------------------------------- */
/* Combinators, deadlines, task groups                                    */

/** Flags of cf_gather. */
enum cf_gather_flags {
  /** Wait for every future and return 0; read each outcome from its
   * future (Python's return_exceptions=True). Without it, the first
   * failure or cancellation seen ends the gather with its code. */
  CF_GATHER_RETURN_ERRORS = 1u << 0
};

/**
 * Waits for fs[0..n) (Python's asyncio.gather). In a task it suspends;
 * elsewhere it blocks. Returns 0 once all are done and (without
 * CF_GATHER_RETURN_ERRORS) all finished without error; else the code of
 * the first failed or cancelled future it sees done (CF_ECANCELED for a
 * cancelled one); the others keep running, as in Python. CF_ETIMEDOUT
 * when the timeout passes first (nothing is cancelled). If the waiting
 * task is cancelled, every future of fs is cancelled too and the gather
 * returns CF_ECANCELED once each that took the cancellation (a task, a
 * queued job) has ended, as in Python: what they use may be freed then;
 * work that cannot be interrupted (running on a thread pool) is not
 * waited for. CF_EINVAL for a NULL fs with n > 0, a NULL
 * element, bad flags or a negative timeout; CF_ENOMEM.
 */
CF_EXTERN int cf_gather(cf_future *const *fs, size_t n, unsigned flags,
                        int64_t timeout_ns);

/**
 * Waits for f for at most timeout_ns (Python's asyncio.wait_for). Returns
 * 0 when f is done in time (read its outcome from f). At the timeout, f
 * is cancelled: if its executor can interrupt it (a task, a queued
 * job), this waits for it to end, then returns CF_ETIMEDOUT; work that
 * cannot be interrupted (running on a thread pool) keeps running and
 * CF_ETIMEDOUT is returned at once. If the waiting task is cancelled, f
 * is cancelled too and CF_ECANCELED returned, once f has ended if it
 * took the cancellation (as at the timeout). CF_EINVAL for NULL f or a
 * negative timeout; CF_EDEADLK as cf_future_wait.
 */
CF_EXTERN int cf_wait_for(cf_future *f, int64_t timeout_ns);

/**
 * A timeout scope (Python's async with asyncio.timeout()): the code of a
 * task between cf_timeout_enter and cf_timeout_exit runs under a deadline.
 * When it passes, the task is cancelled: its current or next wait returns
 * CF_ECANCELED, and the code unwinds to cf_timeout_exit, which then
 * returns CF_ETIMEDOUT; or CF_ECANCELED if a cancellation from outside
 * came with the expiry (delivered at the same wait, or still owed at the
 * exit): that one leaves the scope, as Python's CancelledError does, and
 * is not delivered again. Scopes nest, and must be exited in reverse order
 * of entering, by the same task (a scope not exited when the task ends
 * is dropped with it).
 *
 *     cf_timeout_scope sc;
 *     cf_timeout_enter(&sc, CF_SEC(2));
 *     int rc = fetch_all();                  // CF_ECANCELED on expiry
 *     int trc = cf_timeout_exit(&sc);
 *     if (trc != 0) rc = trc;                // CF_ETIMEDOUT
 */
typedef struct cf_timeout_scope {
  void *cf__impl; /* private */
} cf_timeout_scope;

/** Enters a scope with a timeout (CF_FOREVER: none, but still a scope).
 * Returns 0, CF_ENOTTASK outside a task, CF_EINVAL, CF_ENOMEM. */
CF_EXTERN int cf_timeout_enter(cf_timeout_scope *sc, int64_t timeout_ns);

/** The same with an absolute deadline on cf_now_ns()'s clock. */
CF_EXTERN int cf_timeout_enter_at(cf_timeout_scope *sc, int64_t deadline_ns);

/** Leaves the scope: returns CF_ETIMEDOUT if its deadline passed (a
 * cancellation it caused and that was not delivered yet is withdrawn),
 * else 0. CF_EINVAL if sc is not the task's innermost open scope. */
CF_EXTERN int cf_timeout_exit(cf_timeout_scope *sc);

/** Whether the scope's deadline has passed (its cancellation is owed). */
CF_EXTERN bool cf_timeout_expired(const cf_timeout_scope *sc);

/**
 * A task group (Python's TaskGroup): tasks spawned into it, and futures
 * of any executor added to it, are its children. When a child fails (an
 * error; a cancelled child is not a failure), the group cancels its other
 * children and cancels the task that owns the group (its current or next
 * wait returns CF_ECANCELED), so the owner unwinds to cf_task_group_join,
 * which waits until every child has ended and returns the first failure's
 * code (cf_task_group_get_error has its message). No child outlives the
 * group: cf_task_group_free cancels the children still running and waits
 * for them. A child of another executor is cancelled as that executor
 * can (pending work always; running work if the executor can interrupt
 * it).
 *
 * A group belongs to the task that created it (the owner); all its
 * functions are for that task (CF_ENOTTASK elsewhere, CF_EWRONGTHREAD
 * from another task), which must join or free it before it returns (the
 * children's callbacks refer to the group and its owner).
 */
typedef struct cf_task_group cf_task_group;

/** Creates a group owned by the running task. Returns 0, CF_ENOTTASK,
 * CF_EINVAL, CF_ENOMEM. */
CF_EXTERN int cf_task_group_new(cf_task_group **out);

/** Spawns fn(arg) on the owner's loop as a child. *out (if non-NULL) gets
 * a reference. Returns 0, CF_ESHUTDOWN once the group is failing or
 * joined, or what cf_loop_spawn returns. */
CF_EXTERN int cf_task_group_spawn(cf_task_group *g, cf_task_fn fn, void *arg,
                                  cf_future **out);

/** Makes f (any executor's future) a child; the group takes its own
 * reference. Returns 0, CF_ESHUTDOWN (f is then cancelled), CF_EINVAL,
 * CF_ENOMEM. */
CF_EXTERN int cf_task_group_add(cf_task_group *g, cf_future *f);

/**
 * Waits until every child has ended. Returns 0 if none failed, else the
 * first failure's code; CF_ECANCELED if the owner was cancelled from
 * outside the group, during the join or at a wait of its own since the
 * group was made (the children are then cancelled and waited for first,
 * as Python's TaskGroup does when a cancellation leaves its body). Later
 * spawns fail with CF_ESHUTDOWN.
 */
CF_EXTERN int cf_task_group_join(cf_task_group *g);

/** The first failure (code 0 if none); the message is borrowed until
 * cf_task_group_free. */
CF_EXTERN cf_error cf_task_group_get_error(const cf_task_group *g);

/** Cancels the children still running, waits for them, frees the group
 * (NULL is ignored). */
CF_EXTERN void cf_task_group_free(cf_task_group *g);

#ifdef __cplusplus
}
#endif

#endif /* CF_LOOP_H */
