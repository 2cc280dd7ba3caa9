/* The context switch alone: two contexts ping-pong 1000 times, keeping
 * integer and floating-point callee-saved registers across switches.
 * Built for other architectures by tests/cross/aarch64.sh. */
#include <stdio.h>
#include <stdlib.h>
#include "coro.h"
static cf__ctx main_ctx, a_ctx, b_ctx;
static cf__stack sa, sb;
static long counter;
static double fsum;
static void fa(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) {
    double d = i * 0.5; /* callee-saved FP regs across switches */
    counter += 1;
    cf__ctx_switch(&a_ctx, &b_ctx);
    fsum += d;
  }
  cf__ctx_exit(&a_ctx, &main_ctx);
}
static void fb(void *arg) {
  long base = (long)arg;
  for (;;) {
    counter += base;
    cf__ctx_switch(&b_ctx, &a_ctx);
  }
}
int main(void) {
  cf__ctx_init_thread(&main_ctx);
  if (cf__stack_alloc(&sa, 65536) || cf__stack_alloc(&sb, 65536)) return 1;
  cf__ctx_make(&a_ctx, &sa, fa, NULL);
  cf__ctx_make(&b_ctx, &sb, fb, (void *)1000L);
  cf__ctx_switch(&main_ctx, &a_ctx);
  printf("counter=%ld fsum=%.1f\n", counter, fsum);
  return counter == 1000 + 1000 * 1000 && fsum == 249750.0 ? 0 : 1;
}
