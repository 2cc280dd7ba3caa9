/*
 * executor_int.h - the backend contract: what an executor implements and
 * what it may rely on. Internal: not installed.
 *
 * A backend embeds `struct cf_executor` as the first member of its own
 * object, allocated with malloc/aligned_alloc (the base frees it, after
 * a quarantine), and fills in a vtable. The public functions in
 * executor.c validate what every backend needs (the handle, the
 * timeouts, the flags) and dispatch; checks that only some backends need
 * (a thread pool needs task->fn, a process pool a task name) are the
 * backend's own.
 *
 * What a backend does with a future (future_int.h has the functions):
 *
 *   submit   cf__future_alloc(ex, refs, room): the future, with `room`
 *            bytes of its own after it if it needs per-task state (no
 *            second allocation); fill u.task; publish (queue) it.
 *   run      cf__future_claim (PENDING -> RUNNING; false: cancelled
 *            meanwhile, drop it), cf__future_take_task; the arg is now
 *            the backend's. In this process: cf__future_exec_self runs
 *            it, writing its outcome into the future.
 *   finish   cf__future_finish(f, outcome) or cf__future_finish_cancelled,
 *            from any thread of the backend's (a worker, a reader thread,
 *            the loop), exactly once per claimed future; after
 *            cf__future_exec_self, cf__future_publish_self or
 *            cf__future_finish_self on the thread that ran it.
 *   settle   cf__future_settle for queued futures it will never run
 *            (shutdown with cancel, a broken pool, fork).
 *   cancel   vt->cancel is called for a RUNNING future the backend owns
 *            (cf_future_cancel); a PENDING future is cancelled by
 *            cf_future_cancel itself, and the backend notices when its
 *            claim fails.
 *
 * Lifetime: every future a backend handed out is done (finished,
 * cancelled or settled) before vt->shutdown with CF_SHUTDOWN_WAIT returns
 * 0, and vt->destroy is only called after that. Calls that may run while
 * cf_executor_free does (shutdown, stats, cancel of a running future) are
 * pinned (cf__executor_pin): free waits for them before destroy. submit
 * is not pinned (it is the hot path): a backend must make a submit that
 * raced free harmless itself (the thread pool refuses it under its queue
 * lock once shut down, and destroy waits for a submit still starting a
 * worker).
 *
 * Maps: cf_executor_map submits one task per item, or one per chunk of
 * items: a task whose fn is cf__map_chunk_task and whose arg is a
 * cf__map_chunk (below). A backend that runs tasks in another process
 * recognises it by fn and ships the chunk's items itself (each item_size
 * bytes, or opaque pointer-sized values when item_size is 0); it then
 * writes results[0..nok), err/errmsg and elapsed_ns before finishing the
 * chunk's future. In this process cf__map_chunk_task(arg, result) does it.
 */
#ifndef CF_EXECUTOR_INT_H
#define CF_EXECUTOR_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cf/executor.h"
#include "common.h"
#include "fork.h"

typedef struct cf__executor_vtable {
  const char *name;
  /* Submits task with an absolute deadline for room in a bounded queue.
   * Same returns as cf_executor_submit_task. task->fn may be NULL (check
   * it if the backend needs it); the deadline is valid. */
  int (*submit)(cf_executor *ex, const cf_task *task, int64_t deadline_ns,
                cf_future **out);
  /* Optional: submits tasks[0..n) in order as n submits would (out[i]
   * gets task i's future, a reference), cheaper (one queue lock). Stores
   * how many were submitted in *done; returns 0 if all were, else the
   * error that stopped it at task *done. NULL: the base loops on submit. */
  int (*submit_batch)(cf_executor *ex, const cf_task *tasks, size_t n,
                      int64_t deadline_ns, cf_future **out, size_t *done);
  /* Cancels f, RUNNING and owned by ex, if the backend can interrupt it:
   * returns 0 once the cancellation is delivered (the future will be
   * finished, cancelled with cf__future_finish_cancelled or, if the task
   * handles it, with its outcome), or CF_EBUSY. NULL: always CF_EBUSY.
   * Called pinned, from any thread, with no library lock held. */
  int (*cancel)(cf_executor *ex, cf_future *f);
  /* flags: validated CF_SHUTDOWN_* bits; deadline_ns: absolute, for
   * CF_SHUTDOWN_WAIT. Returns as cf_executor_shutdown. */
  int (*shutdown)(cf_executor *ex, unsigned flags, int64_t deadline_ns);
  /* Releases everything except the object itself (which the base keeps in
   * quarantine). Called only after a successful shutdown with
   * CF_SHUTDOWN_WAIT and once no pinned call is running. */
  void (*destroy)(cf_executor *ex);
  void (*stats)(cf_executor *ex, cf_executor_stats *st);
  int (*max_workers)(cf_executor *ex);
  /* True if the calling thread is one of ex's own (a worker, the loop):
   * free refuses with CF_EDEADLK there. NULL: never. */
  bool (*is_own_thread)(cf_executor *ex);
  /* In the child of a fork: settle every future of ex that is not done
   * with CF_EFORKED, and forget threads that do not exist here, so that a
   * later destroy releases memory without joining them. Called once, from
   * the first call on ex (or wait on one of its futures) in the child.
   * NULL: the backend has no threads or futures of its own to settle. */
  void (*forked)(cf_executor *ex);
  /* Called in a fork child's handler, on the thread that forked, for
   * every live executor: true if ex goes on in the child because its one
   * thread is the forking thread (a loop forked from its own thread: its
   * suspended tasks still run there and write their futures). ex then
   * counts as the child's own: no CF_EFORKED, its futures are never
   * settled. NULL: never (threads the child lacks run its futures). */
  bool (*lives_in_child)(cf_executor *ex);
  /* True if ex's futures are completed by a thread of this process that
   * needs a CPU to do it (a process pool's manager reading results): a
   * waiter's bounded spin then yields the CPU between checks, so that on
   * a machine with as many busy threads as CPUs it does not keep the
   * completing thread off the CPU it spins on. */
  bool spin_yields;
  /* How long a thread blocking on one of ex's futures may spin before it
   * sleeps, in ns (0: one short round of checks only). NULL: always
   * CF__WAIT_SPIN_NS. For backends whose completers need the CPU the
   * waiter would spin on: with every CPU busy running ex's tasks, a
   * spinning waiter only delays the task it waits for. */
  int64_t (*spin_ns)(cf_executor *ex);
} cf__executor_vtable;

#define CF__EXECUTOR_LIVE 0x63665845u /* "cfXE" */
#define CF__EXECUTOR_DEAD 0x64656164u /* "dead" */

struct cf_executor {
  _Atomic uint32_t magic; /* LIVE, or DEAD once freed (quarantined) */
  _Atomic uint32_t pins;  /* calls under way that free must wait for */
  const cf__executor_vtable *vt;
  uint32_t fork_gen;       /* cf__fork_gen when created */
  _Atomic int orphan_done; /* forked(): 0 not yet, 1 running, 2 done */
  /* In a fork child: the pins the parent's threads held at the fork, which
   * nobody will ever release (set by the fork handler). */
  uint32_t pin_base;
  /* In a fork child: the thread whose stack holds this executor's kept
   * futures (cf__future_keep_in_child), 0 if none. Per executor: a later
   * keeper of another executor, in a grandchild, does not revive it. */
  uint64_t keep_tid;
  struct cf_executor *live_prev, *live_next; /* the live executors */
};

/* A pin held by the calling thread (on its stack): the thread's pins
 * form a chain, so that a callback run inside a pinned call that frees
 * the same executor is refused (CF_EDEADLK) instead of waiting for
 * itself. */
typedef struct cf__pin {
  cf_executor *ex;
  struct cf__pin *up;
} cf__pin;

/* Initialises the base of a new backend object. */
void cf__executor_init(cf_executor *ex, const cf__executor_vtable *vt);

/* Submits tasks[0..n) through vt->submit_batch, or one by one; the
 * checks of cf_executor_submit_task first. Returns as submit_batch. */
int cf__executor_submit_batch(cf_executor *ex, const cf_task *tasks, size_t n,
                              int64_t deadline_ns, cf_future **out,
                              size_t *done);

/* Pins ex for the duration of a call that free must wait for (pin lives
 * on the caller's stack until the matching unpin). Returns 0, CF_EINVAL
 * (NULL), CF_EBADF (freed or being freed: not pinned). */
int cf__executor_pin(cf_executor *ex, cf__pin *pin);
void cf__executor_unpin(cf__pin *pin);

/* In a fork child, for an executor of the parent: runs vt->forked once
 * (concurrent callers wait for it to end). */
void cf__executor_orphan(cf_executor *ex);

/* True if ex was created before a fork of this process (then it has been
 * or is being orphaned: its futures settled with CF_EFORKED). Inline: one
 * comparison on every wait. */
static inline bool cf__executor_forked(const cf_executor *ex) {
  return CF__UNLIKELY(ex->fork_gen != cf__fork_generation());
}

/* The map's chunk: items run by one task, in order. The map fills fn,
 * name, item_size, n and items and reads the rest once the chunk's future
 * is done (the future's release/acquire orders it).
 *
 * Results come in one of two forms. While every value is plain (no size,
 * dtor or type: an integer, a double or a borrowed pointer, what most
 * maps return) only its 8 bytes are stored, in plain[] (plain == true),
 * which moves a quarter of the memory between the worker's core and the
 * consumer's; the first value that is not plain switches the chunk to
 * full cf_values in results[] (plain == false), converting the ones
 * before it. A backend that runs chunks elsewhere may always produce
 * full results. */
typedef struct cf__map_chunk {
  cf_task_fn fn;
  cf_map_chunk_fn run; /* cf_map_opts.chunk_fn (run in this process), or NULL */
  bool probe;          /* cf_executor_map's check of run: records fn only */
  const char *name; /* cf_map_opts.name */
  size_t item_size; /* cf_map_opts.item_size */
  size_t n;         /* items */
  /* The items: items[0..n), or, when items is NULL, the range first,
   * first + step, ... (item i is (void *)(intptr_t)(first + i * step),
   * computed with wrapping arithmetic): cf__map_chunk_item(). items may
   * point into the caller's array (cf_array_iter), not copied. */
  void *const *items;
  int64_t first;
  uint64_t step;
  bool plain; /* results are in plain_results[], else in results[] */
  cf_word *plain_results; /* the u of each plain result */
  size_t plain_cap;
  cf_value *results; /* full results, allocated by whoever runs it */
  size_t results_cap;
  size_t nok;         /* results produced: [0..nok) */
  int err;            /* failure of item nok, or 0 */
  char *errmsg;       /* its message (malloc'ed), or NULL */
  int64_t started_ns; /* when running the items started */
  int64_t elapsed_ns; /* how long running the items took */
} cf__map_chunk;

/* Item i of a chunk. */
static inline void *cf__map_chunk_item(const cf__map_chunk *c, size_t i) {
  if (c->items != NULL)
    return c->items[i];
  return (void *)(intptr_t)(int64_t)((uint64_t)c->first + i * c->step);
}

/* Runs a chunk in this process (the task of a chunk). */
int cf__map_chunk_task(void *arg, cf_value *result);

#endif /* CF_EXECUTOR_INT_H */
