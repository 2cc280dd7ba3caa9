/*
 * coro.c - context switches, stacks with guard pages, and the stack
 * overflow report. See coro.h.
 */
#define _GNU_SOURCE /* MAP_STACK, sigaltstack */
#include "coro.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "fault.h"

#ifdef CF__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef CF__TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>) && __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define CF__VALGRIND 1
#endif
#endif

static size_t page_size(void) {
  static size_t ps;
  if (ps == 0) {
    long v = sysconf(_SC_PAGESIZE);
    ps = v > 0 ? (size_t)v : 4096;
  }
  return ps;
}

/* ---------------------------------------------------------------------- */
/* Stacks                                                                 */

/* The guard below each stack: 64 KiB of PROT_NONE address space (free:
 * one mapping either way), so that a frame larger than a page does not
 * jump over it into the next mapping, often another task's stack. */
static size_t guard_size(void) {
  size_t g = (size_t)64 * 1024;
  return g > page_size() ? g : page_size();
}

int cf__stack_alloc(cf__stack *s, size_t size) {
  size_t guard = guard_size();
  if (cf__fault(CF__FAULT_ALLOC))
    return CF_ENOMEM;
  char *base = mmap(NULL, size + guard, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                    -1, 0);
  if (base == MAP_FAILED)
    return CF_ENOMEM;
  if (mprotect(base, guard, PROT_NONE) != 0) {
    munmap(base, size + guard);
    return CF_ENOMEM;
  }
  s->lo = base + guard;
  s->size = size;
#ifdef CF__VALGRIND
  s->vg_id = VALGRIND_STACK_REGISTER(s->lo, s->lo + size);
#else
  s->vg_id = 0;
#endif
  return 0;
}

void cf__stack_free(cf__stack *s) {
  if (s->lo == NULL)
    return;
#ifdef CF__VALGRIND
  VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
  size_t guard = guard_size();
  munmap(s->lo - guard, s->size + guard);
  s->lo = NULL;
}

/* ---------------------------------------------------------------------- */
/* The overflow report                                                    */

static _Thread_local const cf__stack *current_stack;
static struct sigaction prev_segv, prev_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_rc;
static pthread_key_t altstack_key;

void cf__stack_set_current(const cf__stack *s) { current_stack = s; }

const cf__stack *cf__stack_current(void) { return current_stack; }

void cf__ctx_capture(cf__ctx *ctx) {
  ctx->stack = current_stack;
#ifdef CF__TSAN
  ctx->tsan_fiber = __tsan_get_current_fiber();
#endif
}

static size_t fmt_size(char *buf, size_t n) {
  char tmp[24];
  size_t len = 0;
  do {
    tmp[len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n != 0);
  for (size_t i = 0; i < len; i++)
    buf[i] = tmp[len - 1 - i];
  return len;
}

static void say(const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

static void chain(const struct sigaction *prev, int sig, siginfo_t *si,
                  void *uc) {
  if (prev->sa_flags & SA_SIGINFO) {
    prev->sa_sigaction(sig, si, uc);
    return;
  }
  if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  /* Default (or ignored, which cannot be for a real fault): die of it.
   * Returning re-runs the faulting instruction under SIG_DFL; a signal
   * sent by kill() or raise() (si_code <= 0) has none to re-run, so it is
   * sent again, to be delivered once this handler returns. */
  signal(sig, SIG_DFL);
  if (si->si_code <= 0)
    raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  const cf__stack *s = current_stack;
  const char *a = si->si_addr;
  /* The guard, or just past it (a frame larger than the guard); only a
   * real fault has an address (si_code > 0: not one sent by kill()). */
  if (si->si_code > 0 && s != NULL && a < s->lo &&
      a >= s->lo - (guard_size() + 65536)) {
    char msg[160];
    static const char head[] =
        "cfutures: a task or generator overflowed its stack of ";
    static const char tail[] =
        " bytes (give it a larger stack_size)\n";
    size_t n = 0;
    memcpy(msg, head, sizeof head - 1);
    n += sizeof head - 1;
    n += fmt_size(msg + n, s->size);
    memcpy(msg + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    say(msg, n);
    signal(sig, SIG_DFL);
    return;
  }
  chain(sig == SIGBUS ? &prev_bus : &prev_segv, sig, si, uc);
}

static void free_altstack(void *p) {
  stack_t off = {.ss_flags = SS_DISABLE};
  sigaltstack(&off, NULL);
  munmap(p, (size_t)65536);
}

static void install_handler(void) {
  if (pthread_key_create(&altstack_key, free_altstack) != 0) {
    handler_rc = CF_ENOMEM;
    return;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &prev_segv);
  sigaction(SIGBUS, &sa, &prev_bus);
}

int cf__stack_guard_thread(void) {
  pthread_once(&handler_once, install_handler);
  if (handler_rc != 0)
    return handler_rc;
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
    return 0; /* the thread has one (its own, or ours) */
  size_t size = 65536;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return CF_ENOMEM;
  stack_t ss = {.ss_sp = p, .ss_size = size, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(p, size);
    return CF_ENOMEM;
  }
  pthread_setspecific(altstack_key, p);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Sanitizer announcements                                                */

#ifdef CF__ASAN
/* The context that is switching to another one, so that the one entered
 * can tell ASan's report of the stack it came from to its owner. */
static _Thread_local cf__ctx *switching_from;
#endif

#ifdef CF__TSAN
/* ThreadSanitizer defers a signal that arrives outside a blocking call
 * to the current fiber's next intercepted call. A fiber that suspends
 * before making one would keep it (a task waiting for that very signal
 * would wait forever, the scheduler's epoll_wait never sees it). So the
 * switch blocks signals first (the intercepted call hands the outgoing
 * fiber's deferred ones to their handlers), and the fiber entered restores
 * the mask (anything that arrived meanwhile is taken there). Only in
 * ThreadSanitizer builds: two system calls per switch. */
static _Thread_local sigset_t tsan_saved_mask;
#endif

static void before_switch(cf__ctx *from, cf__ctx *to, bool exiting) {
#ifdef CF__TSAN
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &tsan_saved_mask);
#endif
  /* `from` is whatever runs now: a task may have called into a generator
   * and be suspended from the generator's stack. Resuming it must resume
   * that stack (and fiber), not the task's own. */
  cf__ctx_capture(from);
#ifdef CF__ASAN
  switching_from = from;
  const void *lo = to->stack != NULL ? to->stack->lo : to->asan_lo;
  size_t size = to->stack != NULL ? to->stack->size : to->asan_size;
  __sanitizer_start_switch_fiber(exiting ? NULL : &from->asan_fake, lo, size);
#else
  (void)exiting;
#endif
#ifdef CF__TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  cf__stack_set_current(to->stack);
}

static void after_switch(cf__ctx *self) {
#ifdef CF__TSAN
  pthread_sigmask(SIG_SETMASK, &tsan_saved_mask, NULL);
#endif
#ifdef CF__ASAN
  const void *lo;
  size_t size;
  __sanitizer_finish_switch_fiber(self->asan_fake, &lo, &size);
  cf__ctx *from = switching_from;
  if (from != NULL && from->stack == NULL) {
    from->asan_lo = lo;
    from->asan_size = size;
  }
#else
  (void)self;
#endif
}

void cf__ctx_init_thread(cf__ctx *ctx) {
  memset(ctx, 0, sizeof *ctx);
#ifdef CF__TSAN
  ctx->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void cf__ctx_destroy(cf__ctx *ctx) {
#ifdef CF__TSAN
  if (ctx->tsan_own != NULL)
    __tsan_destroy_fiber(ctx->tsan_own);
  ctx->tsan_own = NULL;
  ctx->tsan_fiber = NULL;
#else
  (void)ctx;
#endif
}

/* ---------------------------------------------------------------------- */
/* The switch                                                             */

typedef struct boot_args {
  void (*entry)(void *);
  void *arg;
  cf__ctx *self;
} boot_args;

/* The first code on a new stack: tells the sanitizers, then runs entry. */
static void boot(boot_args *b) {
  after_switch(b->self);
  b->entry(b->arg);
  abort(); /* entry ends with cf__ctx_exit */
}

/* A reused stack may hold the redzones of frames that were abandoned
 * (a generator never resumed): clear them for the new context. */
static void stack_fresh(const cf__stack *s) {
#ifdef CF__ASAN
  __asan_unpoison_memory_region(s->lo, s->size);
#else
  (void)s;
#endif
}

void cf__stack_copy_out(void *dst, const void *stack_src, size_t n) {
#ifdef CF__ASAN
  /* The frames' redzones would make the copy look like a bad read. */
  __asan_unpoison_memory_region(stack_src, n);
#endif
  memcpy(dst, stack_src, n);
}

void cf__stack_copy_in(void *stack_dst, const void *src, size_t n) {
#ifdef CF__ASAN
  __asan_unpoison_memory_region(stack_dst, n);
#endif
#ifdef CF__VALGRIND
  /* memcheck marked what lay below the last task's stack pointer as gone;
   * these frames are about to live there again. */
  VALGRIND_MAKE_MEM_UNDEFINED(stack_dst, n);
#endif
  memcpy(stack_dst, src, n);
}

/* Starts making ctx for stack s: clears it and puts the boot arguments
 * at the top of the stack itself. */
static boot_args *ctx_prepare(cf__ctx *ctx, const cf__stack *s,
                              void (*entry)(void *), void *arg) {
  memset(ctx, 0, sizeof *ctx);
  stack_fresh(s);
  ctx->stack = s;
  uintptr_t top = ((uintptr_t)s->lo + s->size) & ~(uintptr_t)15;
  boot_args *b = (boot_args *)(top - ((sizeof(boot_args) + 15) & ~15u));
  b->entry = entry;
  b->arg = arg;
  b->self = ctx;
#ifdef CF__TSAN
  ctx->tsan_own = __tsan_create_fiber(0);
  ctx->tsan_fiber = ctx->tsan_own;
#endif
  return b;
}

#ifndef CF_CORO_UCONTEXT

/* cf__ctx_swap(save, load): pushes the callee-saved registers, stores the
 * stack pointer in *save, switches to the stack `load` and pops them
 * from there. A new context's stack is laid out as if it had been saved
 * in cf__ctx_swap, with cf__ctx_boot as the return address. */
void cf__ctx_swap(void **save, void *load);
void cf__ctx_boot(void);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl cf__ctx_swap\n"
        ".hidden cf__ctx_swap\n"
        ".type cf__ctx_swap,@function\n"
        "cf__ctx_swap:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size cf__ctx_swap, .-cf__ctx_swap\n"
        ".globl cf__ctx_boot\n"
        ".hidden cf__ctx_boot\n"
        ".type cf__ctx_boot,@function\n"
        "cf__ctx_boot:\n"
        "  movq %r13, %rdi\n"
        "  callq *%r12\n"
        "  ud2\n"
        ".size cf__ctx_boot, .-cf__ctx_boot\n");

/* r15..rbp (6), the return address, two spare: after the return into
 * cf__ctx_boot the stack is 16-byte aligned for its call. The floating-point control words (MXCSR, x87)
 * are not switched: a thread's rounding mode is shared by its tasks (as
 * in Go and most coroutine libraries; saving them costs ~15 ns a switch,
 * bench/NOTES.md). */
enum { FRAME_WORDS = 9 };

static void frame_init(void **sp, void (*fn)(boot_args *), boot_args *b) {
  sp[0] = NULL;                  /* r15 */
  sp[1] = NULL;                  /* r14 */
  sp[2] = b;                     /* r13: boot's argument */
  sp[3] = (void *)(uintptr_t)fn; /* r12: boot */
  sp[4] = NULL;                  /* rbx */
  sp[5] = NULL;                  /* rbp */
  sp[6] = (void *)(uintptr_t)cf__ctx_boot;
  sp[7] = NULL; /* a zero return address above boot, for unwinders */
  sp[8] = NULL;
}

#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl cf__ctx_swap\n"
        ".hidden cf__ctx_swap\n"
        ".type cf__ctx_swap,%function\n"
        "cf__ctx_swap:\n"
        "  sub sp, sp, #160\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mov x2, sp\n"
        "  str x2, [x0]\n"
        "  mov sp, x1\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  add sp, sp, #160\n"
        "  ret\n"
        ".size cf__ctx_swap, .-cf__ctx_swap\n"
        ".globl cf__ctx_boot\n"
        ".hidden cf__ctx_boot\n"
        ".type cf__ctx_boot,%function\n"
        "cf__ctx_boot:\n"
        "  mov x0, x20\n"
        "  blr x19\n"
        "  brk #0\n"
        ".size cf__ctx_boot, .-cf__ctx_boot\n");

enum { FRAME_WORDS = 22 }; /* the 20 saved registers, 2 spare above */

static void frame_init(void **sp, void (*fn)(boot_args *), boot_args *b) {
  memset(sp, 0, FRAME_WORDS * sizeof *sp);
  sp[0] = (void *)(uintptr_t)fn; /* x19: boot */
  sp[1] = b;                     /* x20: its argument */
  sp[11] = (void *)(uintptr_t)cf__ctx_boot; /* x30 */
}
#endif

void cf__ctx_make(cf__ctx *ctx, const cf__stack *s, void (*entry)(void *),
                  void *arg) {
  boot_args *b = ctx_prepare(ctx, s, entry, arg);
  void **sp = (void **)((uintptr_t)b - FRAME_WORDS * sizeof(void *));
  frame_init(sp, boot, b);
  ctx->sp = sp;
}

void cf__ctx_switch(cf__ctx *from, cf__ctx *to) {
  before_switch(from, to, false);
  cf__ctx_swap(&from->sp, to->sp);
  after_switch(from);
}

void cf__ctx_exit(cf__ctx *from, cf__ctx *to) {
  before_switch(from, to, true);
  cf__ctx_swap(&from->sp, to->sp);
  abort(); /* never resumed */
}

#else /* CF_CORO_UCONTEXT */

static void uc_boot(unsigned hi, unsigned lo) {
  boot((boot_args *)(((uintptr_t)hi << 16 << 16) | (uintptr_t)lo));
}

void cf__ctx_make(cf__ctx *ctx, const cf__stack *s, void (*entry)(void *),
                  void *arg) {
  boot_args *b = ctx_prepare(ctx, s, entry, arg);
  getcontext(&ctx->uc);
  ctx->uc.uc_stack.ss_sp = s->lo;
  ctx->uc.uc_stack.ss_size = (size_t)((char *)b - s->lo);
  ctx->uc.uc_link = NULL;
  uintptr_t p = (uintptr_t)b;
  makecontext(&ctx->uc, (void (*)(void))uc_boot, 2,
              (unsigned)(p >> 16 >> 16), (unsigned)(p & 0xffffffffu));
}

/* swapcontext restores the mask saved with the context entered, which
 * would make the signal mask a per-coroutine thing here only (a watch
 * that unblocks a signal in one task would see it blocked again after the
 * next switch). The mask stays the thread's: the context entered gets the
 * current one. */
static void uc_swap(cf__ctx *from, cf__ctx *to) {
  pthread_sigmask(SIG_BLOCK, NULL, &to->uc.uc_sigmask);
  swapcontext(&from->uc, &to->uc);
}

void cf__ctx_switch(cf__ctx *from, cf__ctx *to) {
  before_switch(from, to, false);
  uc_swap(from, to);
  after_switch(from);
}

void cf__ctx_exit(cf__ctx *from, cf__ctx *to) {
  before_switch(from, to, true);
  uc_swap(from, to);
  abort();
}

#endif /* CF_CORO_UCONTEXT */
