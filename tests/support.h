/*
 * support.h - what every test file shares.
 *
 * Each case is `CF_TEST(name) { ... }`, written once: the macro registers
 * it (a constructor adds it to the file's list), and CF_TEST_MAIN() at
 * the end of the file runs the list. CMake finds the CF_TEST lines and
 * registers every case as its own ctest test (`test_x name`), so each
 * runs in a fresh process under its own timeout.
 *
 * cmocka's assert_* may only be called from the test's main thread.
 * Worker threads and tasks use TCHECK(), which records a failure that the
 * case's teardown then reports.
 */
#ifndef CF_TEST_SUPPORT_H
#define CF_TEST_SUPPORT_H

/* cmocka needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdio.h>

#include "cf/cfutures.h"

#define CF_TEST(name)                                                          \
  static void name(void **state);                                              \
  __attribute__((constructor)) static void cf_register_##name(void) {          \
    cf_test_register(#name, name);                                             \
  }                                                                            \
  static void name(void **state)
#define CF_TEST_MAIN()                                                         \
  int main(int argc, char **argv) { return cf_test_main(argc, argv); }

/* Adds a case (in definition order) to the file's list. */
void cf_test_register(const char *name, void (*fn)(void **state));
/* Runs the case named argv[1], or all of them. */
int cf_test_main(int argc, char **argv);
int cf_test_setup(void **state);
int cf_test_teardown(void **state);

extern _Atomic int cf_test_thread_failures;
#define TCHECK(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed in a thread: %s\n", __FILE__,       \
              __LINE__, #cond);                                                \
      atomic_fetch_add(&cf_test_thread_failures, 1);                           \
    }                                                                          \
  } while (0)

/* Generous limit for things that must happen "soon": a correctness bound,
 * never a speed expectation. */
#define SOON CF_SEC(30)

/* A one-shot event. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
} gate;
void gate_init(gate *g);
void gate_open(gate *g);
/* Waits until open; returns false if not opened within SOON. */
bool gate_wait(gate *g);
void gate_destroy(gate *g);

/* A counter others can wait on reaching a value. */
typedef struct counter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long value;
} counter;
void counter_init(counter *c);
void counter_add(counter *c, long d);
long counter_get(counter *c);
/* Waits until value >= target; false if that does not happen within SOON. */
bool counter_wait_ge(counter *c, long target);
void counter_destroy(counter *c);

/* Polls pred(arg) (with short sleeps) until it holds or SOON passes. For
 * conditions that have no event to wait on (pool statistics). */
bool eventually(bool (*pred)(void *arg), void *arg);

/* A thread pool with max_workers, or with options (asserts on failure;
 * main thread only). */
cf_executor *make_pool(int max_workers);
cf_executor *make_pool_with(const cf_thread_pool_opts *opts);

/* Stress sizes: CF_STRESS_DIV (> 1 in the slow sanitizer builds, 1 or
 * unset otherwise) divides them. */
long stress_div(void);
long scaled(long n);

/* Starts a thread; aborts the test on failure. */
pthread_t spawn(void *(*fn)(void *), void *arg);

/* Runs a map of fn over next(state) with options o on ex and asserts
 * that it yields exactly n results, result i being factor * i. */
void expect_map_multiples(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                          void *state, const cf_map_opts *o, int64_t factor,
                          int64_t n);

/* Captures what the process writes to stderr (fd 2) until
 * captured_text(), which restores it and returns the text (malloc'ed;
 * free it). Main thread only. */
typedef struct captured {
  FILE *tmp;
  int saved;
} captured;
void capture_stderr(captured *c);
char *captured_text(captured *c);

/* How many times needle occurs in haystack. */
int count_occurrences(const char *haystack, const char *needle);

/* Runs fn(arg) in a forked child and returns its wait status, or -1 if it
 * did not end within SOON (it is then killed). The child's stderr is
 * captured into *err (malloc'ed) if err is non-NULL. */
int run_in_child(void (*fn)(void *arg), void *arg, char **err);

/* Runs fn(arg) in a forked child that must die (a signal or a non-zero
 * exit) with `message` in its stderr (which is shown if not). */
void expect_child_dies_saying(void (*fn)(void *arg), void *arg,
                              const char *message);

/* Recurses n levels with 512 bytes of frame each: a stack overflow for a
 * large n. */
int deep_recursion(int n);

/* Waits for the child pid for up to timeout_ns and returns its wait
 * status, or -1 if it did not end by then (it is then killed). */
int wait_child_for(pid_t pid, int64_t timeout_ns);

/* Waits (up to SOON) for a state that proves a test is on its path,
 * instead of sleeping and hoping: every future of fs has a listener
 * attached (a cf_wait or as_completed is waiting on it), or a thread is
 * blocked in a submit to the thread pool ex, waiting for room. */
bool wait_listened(cf_future *const *fs, size_t n);
/* A thread is parked (asleep, past its spin) waiting for f. */
bool wait_parked_on(cf_future *f);
bool wait_blocked_submitter(cf_executor *ex);

/* Loop options for the loop tests: o (or defaults for NULL), with
 * shared_stack set when CF_TEST_SHARED_STACK=1 (the suite runs the loop
 * tests a second time that way). Returns a pointer to a static copy. */
struct cf_loop_opts;
const struct cf_loop_opts *test_loop_opts(const struct cf_loop_opts *o);

/* Common tasks. */
int task_return_arg(void *arg, cf_value *result); /* result.i = (intptr_t)arg */
int task_wait_gate(void *arg, cf_value *result);  /* waits on (gate *)arg */
int task_fail(void *arg, cf_value *result); /* cf_raise((intptr_t)arg, ...) */
int task_nop(void *arg, cf_value *result);

/* A value destructor that counts its calls in a global. */
extern _Atomic long dtor_calls;
void counting_dtor(void *p);

#endif
