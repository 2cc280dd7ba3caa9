/*
 * fork.h - what the library does around fork() (fork.c). Internal.
 *
 * pthread_atfork handlers, registered when the library is loaded, take
 * every library lock before a fork (so no lock is copied held, and no
 * structure it guards is copied half-updated), release them in the
 * parent, and re-initialise them in the child. The child then bumps
 * cf__fork_gen: an executor remembers the generation it was created in,
 * so that one of the parent's is recognised (and refused, CF_EFORKED)
 * in the child. Lock order of the prepare handler: future stripes, then
 * each module's locks as listed in docs/ARCHITECTURE.md.
 */
#ifndef CF_FORK_H
#define CF_FORK_H

#include <stdatomic.h>
#include <stdint.h>

enum { CF__FORK_PREPARE = 0, CF__FORK_PARENT = 1, CF__FORK_CHILD = 2 };

/* How many forks this process descends through (0 in the original). */
extern _Atomic uint32_t cf__fork_gen;

static inline uint32_t cf__fork_generation(void) {
  return atomic_load_explicit(&cf__fork_gen, memory_order_relaxed);
}

/* Each module's part (called in this order for PREPARE, reverse order
 * for PARENT and CHILD). */
void cf__future_atfork(int phase);
void cf__executor_atfork(int phase);
void cf__pool_atfork(int phase);
void cf__fcache_atfork(int phase);
void cf__fault_atfork(int phase);
void cf__park_atfork(int phase);

#endif /* CF_FORK_H */
