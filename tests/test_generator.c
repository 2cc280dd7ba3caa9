/*
 * test_generator.c - generators: next, send, return values, yield from,
 * close, errors, and generators driven from inside loop tasks.
 */
#include "support.h"

#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>
#include <signal.h>

#include "cf/generator.h"
#include "cf/loop.h"

static cf_value val(int64_t i) {
  cf_value v = {0};
  v.u.i = i;
  return v;
}

static int countdown(cf_gen *g, void *arg, cf_value *ret) {
  for (int64_t i = (int64_t)(intptr_t)arg; i > 0; i--) {
    cf_value v = val(i);
    if (cf_gen_yield(g, &v, NULL) != 0)
      return CF_ECANCELED;
  }
  ret->u.i = -1;
  return 0;
}

CF_TEST(next_yields_each_value_then_the_return_value) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(countdown, (void *)(intptr_t)3, NULL, &g), 0);
  cf_value v;
  for (int64_t want = 3; want > 0; want--) {
    assert_int_equal(cf_gen_next(g, &v), 1);
    assert_int_equal(v.u.i, want);
  }
  assert_int_equal(cf_gen_next(g, &v), 0);
  assert_int_equal(cf_gen_get_return(g)->u.i, -1);
  assert_int_equal(cf_gen_next(g, &v), 0); /* finished stays finished */
  cf_gen_free(g);
}

/* The seed's minimize(): a bare yield primes it, then each send returns
 * the minimum so far. */
static int minimize(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  (void)ret;
  cf_value current, value;
  if (cf_gen_yield(g, NULL, &current) != 0)
    return CF_ECANCELED;
  for (;;) {
    if (cf_gen_yield(g, &current, &value) != 0)
      return CF_ECANCELED;
    if (value.u.i < current.u.i)
      current = value;
  }
}

CF_TEST(send_passes_values_in_as_the_seeds_minimize_shows) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(minimize, NULL, NULL, &g), 0);
  cf_value in = val(10), out;
  assert_int_equal(cf_gen_send(g, &in, &out), CF_EINVAL); /* just started */
  assert_int_equal(cf_gen_next(g, &out), 1);
  int64_t sent[] = {10, 4, 22, -1}, want[] = {10, 4, 4, -1};
  for (int i = 0; i < 4; i++) {
    in = val(sent[i]);
    assert_int_equal(cf_gen_send(g, &in, &out), 1);
    assert_int_equal(out.u.i, want[i]);
  }
  assert_int_equal(cf_gen_close(g), 0);
  assert_int_equal(cf_gen_next(g, &out), 0);
  cf_gen_free(g);
}

static int inner(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  int64_t sum = 0;
  for (int i = 1; i <= 2; i++) {
    cf_value v = val(i), got;
    if (cf_gen_yield(g, &v, &got) != 0)
      return CF_ECANCELED;
    sum += got.u.i;
  }
  ret->u.i = sum;
  return 0;
}

static int outer(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  cf_value a = val(100);
  if (cf_gen_yield(g, &a, NULL) != 0)
    return CF_ECANCELED;
  cf_gen *sub;
  if (cf_gen_new(inner, NULL, NULL, &sub) != 0)
    return CF_ENOMEM;
  cf_value r;
  int rc = cf_gen_yield_from(g, sub, &r);
  cf_gen_free(sub);
  if (rc != 0)
    return rc;
  ret->u.i = r.u.i * 10;
  return 0;
}

CF_TEST(yield_from_delegates_values_both_ways_and_returns_the_result) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(outer, NULL, NULL, &g), 0);
  cf_value out, in;
  assert_int_equal(cf_gen_next(g, &out), 1);
  assert_int_equal(out.u.i, 100);
  assert_int_equal(cf_gen_next(g, &out), 1); /* from inner */
  assert_int_equal(out.u.i, 1);
  in = val(5);
  assert_int_equal(cf_gen_send(g, &in, &out), 1);
  assert_int_equal(out.u.i, 2);
  in = val(7);
  assert_int_equal(cf_gen_send(g, &in, &out), 0);
  assert_int_equal(cf_gen_get_return(g)->u.i, 120);
  cf_gen_free(g);
}

typedef struct closing_rec {
  bool cleaned;
  int yields_after;
} closing_rec;

static int cleanup_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)ret;
  closing_rec *r = arg;
  for (;;) {
    if (cf_gen_yield(g, NULL, NULL) == CF_ECANCELED) {
      r->cleaned = true;
      if (r->yields_after > 0) { /* misbehaves: yields again */
        cf_gen_yield(g, NULL, NULL);
      }
      return CF_ECANCELED;
    }
  }
}

CF_TEST(close_delivers_generator_exit_and_free_closes) {
  (void)state;
  closing_rec r = {0};
  cf_gen *g;
  assert_int_equal(cf_gen_new(cleanup_body, &r, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  cf_gen_free(g); /* suspended: closed first */
  assert_true(r.cleaned);
  closing_rec bad = {.yields_after = 1};
  assert_int_equal(cf_gen_new(cleanup_body, &bad, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_close(g), CF_EINVALSTATE);
  assert_true(bad.cleaned);
  cf_gen_free(g); /* abandoned: freed without running it */
  /* Never started: closing just finishes it. */
  assert_int_equal(cf_gen_new(cleanup_body, &r, NULL, &g), 0);
  assert_int_equal(cf_gen_close(g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 0);
  cf_gen_free(g);
}

static int failing_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  (void)ret;
  cf_gen_yield(g, NULL, NULL);
  return -ENOENT;
}

/* Yields once, then fails with a message; arg: fail on close instead. */
static int raising_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)ret;
  int rc = cf_gen_yield(g, NULL, NULL);
  if (arg != NULL && rc == CF_ECANCELED)
    return cf_raise(-EIO, "flushing on close failed");
  return cf_raise(-ENOENT, "item %d: not found", 7);
}

/* Delegates to raising_body and passes its failure up. */
static int delegating_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  (void)ret;
  cf_gen *sub;
  if (cf_gen_new(raising_body, NULL, NULL, &sub) != 0)
    return CF_ENOMEM;
  int rc = cf_gen_yield_from(g, sub, NULL);
  cf_gen_free(sub);
  return rc;
}

CF_TEST(a_failed_generator_tells_its_code_and_message) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(raising_body, NULL, NULL, &g), 0);
  assert_int_equal(cf_gen_get_error(g).code, 0); /* not started */
  assert_string_equal(cf_gen_get_error(g).message, "");
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_get_error(g).code, 0); /* suspended */
  assert_int_equal(cf_gen_next(g, NULL), -ENOENT);
  cf_error e = cf_gen_get_error(g);
  assert_int_equal(e.code, -ENOENT);
  assert_string_equal(e.message, "item 7: not found");
  cf_gen_free(g);

  /* Through yield from: the delegate's message comes along. */
  assert_int_equal(cf_gen_new(delegating_body, NULL, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_next(g, NULL), -ENOENT);
  assert_string_equal(cf_gen_get_error(g).message, "item 7: not found");
  cf_gen_free(g);

  /* A body that fails while being closed: close reports it. */
  assert_int_equal(cf_gen_new(raising_body, &e, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_close(g), -EIO);
  assert_int_equal(cf_gen_next(g, NULL), -EIO);
  assert_string_equal(cf_gen_get_error(g).message, "flushing on close failed");
  cf_gen_free(g);

  /* Without cf_raise: the code's own text; NULL: CF_EINVAL. */
  assert_int_equal(cf_gen_new(failing_body, NULL, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_next(g, NULL), -ENOENT);
  assert_string_equal(cf_gen_get_error(g).message, cf_strerror(-ENOENT));
  cf_gen_free(g);
  assert_int_equal(cf_gen_get_error(NULL).code, CF_EINVAL);
}

/* A body that tries to free its own generator, then yields and ends. */
static int self_freeing_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  cf_gen_free(g); /* refused: its body is running */
  cf_value v = val(7);
  if (cf_gen_yield(g, &v, NULL) != 0)
    return CF_ECANCELED;
  ret->u.i = 8;
  return 0;
}

CF_TEST(freeing_a_generator_from_its_running_body_is_refused) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(self_freeing_body, NULL, NULL, &g), 0);
  cf_value v;
  assert_int_equal(cf_gen_next(g, &v), 1); /* it is still there */
  assert_int_equal(v.u.i, 7);
  assert_int_equal(cf_gen_next(g, &v), 0);
  assert_int_equal(cf_gen_get_return(g)->u.i, 8);
  cf_gen_free(g);
}

static int overflowing_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)g;
  (void)arg;
  ret->u.i = deep_recursion(1 << 20);
  return 0;
}

static void child_generator_overflows(void *arg) {
  (void)arg;
  cf_gen *g;
  cf_gen_opts o = {.stack_size = 64 * 1024};
  if (cf_gen_new(overflowing_body, NULL, &o, &g) == 0)
    cf_gen_next(g, NULL); /* on this plain thread: no loop ever ran */
  _exit(0); /* not reached */
}

/* An overflow in a generator's body on a thread that never ran a loop
 * says so too (the alternate signal stack is set up for generators). */
CF_TEST(a_generator_overflow_on_a_plain_thread_dies_with_a_message) {
  (void)state;
  expect_child_dies_saying(child_generator_overflows, NULL,
                           "overflowed its stack of 65536 bytes");
}

static void child_gets_a_sent_sigsegv(void *arg) {
  (void)arg;
  signal(SIGSEGV, SIG_DFL); /* not the test framework's handler */
  cf_gen *g; /* the library's fault handler installed, then a kill() */
  if (cf_gen_new(raising_body, NULL, NULL, &g) != 0 ||
      cf_gen_next(g, NULL) != 1)
    _exit(4);
  /* The library's handler must be the one in place (SA_ONSTACK): in a
   * process that installed it before this fork, the reset above took it
   * away, and the test would prove nothing. (ctest runs one case per
   * process.) */
  struct sigaction cur;
  if (sigaction(SIGSEGV, NULL, &cur) != 0 || !(cur.sa_flags & SA_ONSTACK))
    _exit(3);
  kill(getpid(), SIGSEGV);
  _exit(0); /* the signal must not be swallowed */
}

/* A SIGSEGV sent by kill() (no faulting instruction to re-run) kills
 * the process as it would without the library's handler. */
CF_TEST(a_sigsegv_sent_by_kill_is_not_swallowed) {
  (void)state;
  char *err = NULL;
  int st = run_in_child(child_gets_a_sent_sigsegv, NULL, &err);
  assert_true(st != -1);
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
  free(err);
}

static int reentrant_body(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  (void)ret;
  int *rc = arg;
  *rc = cf_gen_next(g, NULL); /* resuming itself */
  return 0;
}

CF_TEST(errors_and_misuse_are_reported) {
  (void)state;
  cf_gen *g;
  assert_int_equal(cf_gen_new(failing_body, NULL, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 1);
  assert_int_equal(cf_gen_next(g, NULL), -ENOENT);
  assert_int_equal(cf_gen_next(g, NULL), -ENOENT);
  cf_gen_free(g);
  int rc = 0;
  assert_int_equal(cf_gen_new(reentrant_body, &rc, NULL, &g), 0);
  assert_int_equal(cf_gen_next(g, NULL), 0);
  assert_int_equal(rc, CF_EINVALSTATE);
  cf_gen_free(g);
  assert_int_equal(cf_gen_new(NULL, NULL, NULL, &g), CF_EINVAL);
  cf_gen_opts small = {.stack_size = 1024};
  assert_int_equal(cf_gen_new(countdown, NULL, &small, &g), CF_EINVAL);
  assert_int_equal(cf_gen_yield(NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_gen_next(NULL, NULL), CF_EINVAL);
  cf_gen_free(NULL);
}

/* Generators driven by tasks that suspend between steps: each resume
 * comes from a different point of the loop. */
static int stepper(void *arg, cf_value *result) {
  cf_gen *g;
  TCHECK(cf_gen_new(countdown, arg, NULL, &g) == 0);
  int64_t sum = 0;
  cf_value v;
  while (cf_gen_next(g, &v) == 1) {
    sum += v.u.i;
    TCHECK(cf_yield() == 0);
  }
  cf_gen_free(g);
  result->u.i = sum;
  return 0;
}

static int main_steppers(void *arg, cf_value *result) {
  (void)arg;
  cf_future *fs[20];
  for (intptr_t i = 0; i < 20; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), stepper, (void *)(i + 1),
                         &fs[i]) == 0);
  TCHECK(cf_gather(fs, 20, 0, CF_FOREVER) == 0);
  int64_t total = 0;
  for (int i = 0; i < 20; i++) {
    const cf_value *v;
    TCHECK(cf_future_result(fs[i], 0, &v) == 0);
    total += v->u.i;
    cf_future_unref(fs[i]);
  }
  result->u.i = total;
  return 0;
}

CF_TEST(tasks_drive_generators_across_their_own_suspensions) {
  (void)state;
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_steppers, NULL, test_loop_opts(NULL), &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  int64_t want = 0;
  for (int64_t n = 1; n <= 20; n++)
    want += n * (n + 1) / 2;
  assert_int_equal(v->u.i, want);
  cf_future_unref(f);
}

CF_TEST(stress_many_short_generators) {
  (void)state;
  long n = scaled(20000);
  int64_t sum = 0;
  for (long k = 0; k < n; k++) {
    cf_gen *g;
    assert_int_equal(cf_gen_new(countdown, (void *)(intptr_t)3, NULL, &g), 0);
    cf_value v;
    while (cf_gen_next(g, &v) == 1)
      sum += v.u.i;
    cf_gen_free(g);
  }
  assert_int_equal(sum, 6 * (int64_t)n);
}


/* A body that waits (suspends the task driving it) between its yields,
 * while other tasks drive generators of their own on the same thread. */
static int sleepy_counter(cf_gen *g, void *arg, cf_value *ret) {
  (void)arg;
  for (int64_t i = 1; i <= 3; i++) {
    if (cf_sleep(CF_MSEC(1)) != 0)
      return CF_ECANCELED;
    cf_value v = val(i);
    if (cf_gen_yield(g, &v, NULL) != 0)
      return CF_ECANCELED;
  }
  ret->u.i = 100;
  return 0;
}

static int drive_sleepy(void *arg, cf_value *result) {
  (void)arg;
  cf_gen *g;
  TCHECK(cf_gen_new(sleepy_counter, NULL, NULL, &g) == 0);
  int64_t sum = 0;
  cf_value v;
  while (cf_gen_next(g, &v) == 1)
    sum += v.u.i;
  sum += cf_gen_get_return(g)->u.i;
  cf_gen_free(g);
  result->u.i = sum;
  return 0;
}

static int main_sleepy(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static cf_future *fs[8];
  for (int i = 0; i < 8; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), drive_sleepy, NULL, &fs[i]) ==
           0);
  TCHECK(cf_gather(fs, 8, 0, CF_FOREVER) == 0);
  for (int i = 0; i < 8; i++) {
    const cf_value *v;
    TCHECK(cf_future_result(fs[i], 0, &v) == 0 && v->u.i == 106);
    cf_future_unref(fs[i]);
  }
  return 0;
}

CF_TEST(a_generator_body_may_wait_inside_a_task) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_sleepy, NULL, test_loop_opts(NULL),
                                    NULL),
                   0);
}

static cf_gen *outer_gen;

static int misyielding_inner(cf_gen *g, void *arg, cf_value *ret) {
  (void)g;
  (void)ret;
  int *rc = arg;
  *rc = cf_gen_yield(outer_gen, NULL, NULL); /* not its own body */
  return 0;
}

static int delegating(cf_gen *g, void *arg, cf_value *ret) {
  (void)ret;
  cf_gen *sub;
  if (cf_gen_new(misyielding_inner, arg, NULL, &sub) != 0)
    return CF_ENOMEM;
  int rc = cf_gen_yield_from(g, sub, NULL);
  cf_gen_free(sub);
  return rc;
}

CF_TEST(only_a_generators_own_body_may_yield_for_it) {
  (void)state;
  int rc = 0;
  assert_int_equal(cf_gen_new(delegating, &rc, NULL, &outer_gen), 0);
  assert_int_equal(cf_gen_next(outer_gen, NULL), 0);
  assert_int_equal(rc, CF_EINVAL);
  cf_gen_free(outer_gen);
}

CF_TEST_MAIN()
