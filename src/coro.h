/*
 * coro.h - execution contexts and their stacks, for the loop's tasks.
 * Internal: not installed.
 *
 * A context is a saved stack pointer; the switch (hand-written for x86-64
 * and aarch64, ucontext elsewhere or with CF_CORO_UCONTEXT) saves the
 * callee-saved registers on the stack it leaves and restores them from
 * the one it enters. Every switch is announced to AddressSanitizer (fiber
 * switch API), ThreadSanitizer (fibers) and valgrind (registered stacks).
 *
 * Stacks are mmap'ed with a PROT_NONE guard page below them. A fault in a
 * guard page of the thread's current context is reported by a SIGSEGV
 * handler on an alternate signal stack (one per thread that runs
 * contexts), which prints a message and lets the signal kill the
 * process; other faults go to the handler that was there before.
 *
 * Not thread-safe: a context runs on one thread at a time, and each
 * thread switches only between its own contexts.
 */
#ifndef CF_CORO_H
#define CF_CORO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(CF_CORO_UCONTEXT) && !defined(__x86_64__) && !defined(__aarch64__)
#define CF_CORO_UCONTEXT 1
#endif
#ifdef CF_CORO_UCONTEXT
#include <ucontext.h>
#endif

/* Which sanitizer this file is built under: a context keeps what each
 * needs only when it is there (40 bytes less per task without them). */
#if defined(__SANITIZE_ADDRESS__)
#define CF__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CF__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CF__TSAN 1
#endif
#endif

/* A stack: [lo, lo + size) usable, the guard page just below lo. */
typedef struct cf__stack {
  char *lo;
  size_t size;
  unsigned vg_id; /* valgrind's id for it */
} cf__stack;

typedef struct cf__ctx {
#ifdef CF_CORO_UCONTEXT
  ucontext_t uc;
#else
  void *sp; /* saved stack pointer while not running */
#endif
  /* What was running when this context was switched away from: its own
   * stack, or a generator's that it called into (NULL: the thread's). */
  const cf__stack *stack;
#ifdef CF__ASAN
  void *asan_fake;     /* ASan's fake stack of this context */
  const void *asan_lo; /* the thread's own stack, for ASan */
  size_t asan_size;
#endif
#ifdef CF__TSAN
  void *tsan_fiber; /* TSan's fiber running when switched away */
  void *tsan_own;   /* the fiber created for this context (destroyed) */
#endif
} cf__ctx;

/* Allocates a stack of `size` bytes (a multiple of the page size) plus a
 * guard page. Returns 0 or CF_ENOMEM. */
int cf__stack_alloc(cf__stack *s, size_t size);
void cf__stack_free(cf__stack *s);

/* Makes ctx the calling thread's own context (the scheduler's), which
 * other contexts switch back to. */
void cf__ctx_init_thread(cf__ctx *ctx);

/* Makes ctx stand for whatever context is running now (a thread, a
 * task, a generator), so that another context can switch back to it:
 * for callers that change from one resume to the next (generators). */
void cf__ctx_capture(cf__ctx *ctx);

/* Prepares ctx to run entry(arg) on stack s at its first switch. entry
 * must never return: it ends with cf__ctx_exit. */
void cf__ctx_make(cf__ctx *ctx, const cf__stack *s, void (*entry)(void *),
                  void *arg);

/* Saves the running context in from and resumes to. Returns when someone
 * switches back to from. */
void cf__ctx_switch(cf__ctx *from, cf__ctx *to);

/* Like cf__ctx_switch, for a context that will never run again (its
 * stack may be freed or reused once to runs). */
void cf__ctx_exit(cf__ctx *from, cf__ctx *to);

/* The stack pointer a context saved when it was switched away from
 * (NULL with the ucontext switch, which keeps it elsewhere). */
static inline void *cf__ctx_saved_sp(const cf__ctx *ctx) {
#ifdef CF_CORO_UCONTEXT
  (void)ctx;
  return NULL;
#else
  return ctx->sp;
#endif
}

/* The top of a stack as cf__ctx_make uses it (16-byte aligned). */
static inline char *cf__stack_top(const cf__stack *s) {
  return (char *)(((uintptr_t)s->lo + s->size) & ~(uintptr_t)15);
}

/* Copies n bytes of a stack region out or back (shared stacks), clearing
 * the sanitizer's marks on the stack side first. */
void cf__stack_copy_out(void *dst, const void *stack_src, size_t n);
void cf__stack_copy_in(void *stack_dst, const void *src, size_t n);

/* Releases what the sanitizers keep for a context that has exited or
 * never run. */
void cf__ctx_destroy(cf__ctx *ctx);

/* Installs the guard-page handler (once per process) and an alternate
 * signal stack for the calling thread if it has none. Returns 0 or
 * CF_ENOMEM. The overflow message names `what` (a static string). */
int cf__stack_guard_thread(void);

/* The stack the calling thread is running on now, for the overflow
 * handler (NULL: the thread's own). Set by the switch. */
void cf__stack_set_current(const cf__stack *s);
const cf__stack *cf__stack_current(void);

#endif /* CF_CORO_H */
