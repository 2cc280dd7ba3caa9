/*
 * fork.c - the library across fork() (see fork.h).
 *
 * The handlers are registered once, when the library is loaded (a
 * constructor: no call of ours may race the first fork). Prepare takes
 * every library lock in the library's lock order, so the child never
 * inherits a lock held by a thread it does not have, nor a structure
 * half-updated under one; no library lock is held while user code runs,
 * so a fork called from a task, a callback or any user code cannot find
 * one held by its own thread. The child re-initialises the locks rather
 * than unlocking them (their owner, the forking thread, has another id
 * there) and moves to the next fork generation.
 */
#include <pthread.h>

#include "fork.h"

_Atomic uint32_t cf__fork_gen;

static void prepare(void) {
  cf__future_atfork(CF__FORK_PREPARE);
  cf__executor_atfork(CF__FORK_PREPARE);
  cf__pool_atfork(CF__FORK_PREPARE);
  cf__fcache_atfork(CF__FORK_PREPARE);
  cf__fault_atfork(CF__FORK_PREPARE);
  cf__park_atfork(CF__FORK_PREPARE);
}

static void in_parent(void) {
  cf__park_atfork(CF__FORK_PARENT);
  cf__fault_atfork(CF__FORK_PARENT);
  cf__fcache_atfork(CF__FORK_PARENT);
  cf__pool_atfork(CF__FORK_PARENT);
  cf__executor_atfork(CF__FORK_PARENT);
  cf__future_atfork(CF__FORK_PARENT);
}

static void in_child(void) {
  atomic_fetch_add(&cf__fork_gen, 1);
  cf__park_atfork(CF__FORK_CHILD);
  cf__fault_atfork(CF__FORK_CHILD);
  cf__fcache_atfork(CF__FORK_CHILD);
  cf__pool_atfork(CF__FORK_CHILD);
  cf__executor_atfork(CF__FORK_CHILD);
  cf__future_atfork(CF__FORK_CHILD);
}

__attribute__((constructor)) static void register_fork_handlers(void) {
  pthread_atfork(prepare, in_parent, in_child);
}
