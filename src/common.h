/*
 * common.h - small internal helpers shared by every module (not installed).
 */
#ifndef CF_COMMON_H
#define CF_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"

/* Invariant checks that stay on in release builds: a failure is a bug in
 * cfutures, never a user error (those get CF_EINVAL). */
#define CF__ASSERT(x)                                                          \
  do {                                                                         \
    if (__builtin_expect(!(x), 0))                                             \
      cf__assert_fail(#x, __FILE__, __LINE__);                                 \
  } while (0)

#define CF__LIKELY(x) __builtin_expect(!!(x), 1)
#define CF__UNLIKELY(x) __builtin_expect(!!(x), 0)

#define cf__container_of(ptr, type, member)                                    \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define CF__CACHELINE 64

_Noreturn void cf__assert_fail(const char *expr, const char *file, int line);

/* Prints "cfutures: <message>" to stderr and aborts: for misuse that
 * cannot be reported as an error code and must not go on (a reference
 * dropped twice). */
_Noreturn void cf__fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The library's allocations, all through here so that fault injection
 * (fault.h, CF__FAULT_ALLOC) reaches every one. NULL on failure or on an
 * overflowing size. cf__aligned_alloc rounds size up to a multiple of
 * align (a power of two). Free with free(). */
void *cf__malloc(size_t size);
void *cf__calloc(size_t n, size_t size);
void *cf__realloc(void *p, size_t n, size_t size); /* n * size bytes */
void *cf__aligned_alloc(size_t align, size_t size);

/* One CPU-friendly step of a bounded spin. */
static inline void cf__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* A spinlock for critical sections of a few instructions that are taken
 * at a high rate by several threads (the pool's queue). It spins with
 * `pause`, then yields the CPU, so a preempted holder is not starved;
 * it never sleeps in the kernel. Not for sections that may block. */
typedef struct cf__spinlock {
  _Atomic int locked;
} cf__spinlock;

void cf__spin_lock_slow(cf__spinlock *l);

static inline void cf__spin_lock(cf__spinlock *l) {
  if (__builtin_expect(
          !atomic_exchange_explicit(&l->locked, 1, memory_order_acquire), 1))
    return;
  cf__spin_lock_slow(l);
}

static inline void cf__spin_unlock(cf__spinlock *l) {
  atomic_store_explicit(&l->locked, 0, memory_order_release);
}

/* malloc'ed printf; NULL on allocation failure or a NULL fmt. */
char *cf__vasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));
char *cf__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How long a waiter spins before it sleeps (ns). A cross-core round trip
 * (submit, run, complete) takes about a microsecond on the target
 * machines while a sleep/wake pair costs ~9 us per direction, so a short
 * bounded spin pays off; see bench/NOTES.md. */
#define CF__WAIT_SPIN_NS 20000

#endif /* CF_COMMON_H */
