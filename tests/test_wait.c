/* test_wait.c - as_completed and wait over futures (no executor needed). */
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fault.h"
#include "support.h"

#define N 6

static void make(cf_future **fs, size_t n) {
  for (size_t i = 0; i < n; i++)
    assert_int_equal(cf_future_new(&fs[i]), 0);
}

static void unref_all(cf_future **fs, size_t n) {
  for (size_t i = 0; i < n; i++)
    cf_future_unref(fs[i]);
}

static void finish(cf_future *f, intptr_t i) {
  cf_value v = CF_VALUE_INIT;
  v.u.i = i;
  assert_int_equal(cf_future_set_result(f, &v), 0);
}

/* Completes futures in a given order from another thread, one after the
 * other, each only after the consumer has taken the previous one. */
typedef struct sequencer {
  cf_future **fs;
  const int *order;
  int n;
  counter taken;
} sequencer;

static void *sequence(void *arg) {
  sequencer *s = arg;
  for (int k = 0; k < s->n; k++) {
    TCHECK(counter_wait_ge(&s->taken, k));
    cf_value v = CF_VALUE_INIT;
    v.u.i = s->order[k];
    TCHECK(cf_future_set_result(s->fs[s->order[k]], &v) == 0);
  }
  return NULL;
}

CF_TEST(as_completed_yields_done_first_then_completion_order) {
  (void)state;
  cf_future *fs[N];
  make(fs, N);
  finish(fs[4], 4);
  finish(fs[1], 1);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, CF_FOREVER, &it), 0);
  assert_int_equal(cf_as_completed_get_remaining(it), N);
  cf_future *f = NULL;
  /* Already done: input order. */
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  assert_ptr_equal(f, fs[1]);
  cf_future_unref(f);
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  assert_ptr_equal(f, fs[4]);
  cf_future_unref(f);
  /* The rest in the order another thread completes them. */
  static const int order[] = {3, 0, 5, 2};
  sequencer s = {.fs = fs, .order = order, .n = 4};
  counter_init(&s.taken);
  pthread_t t = spawn(sequence, &s);
  for (int k = 0; k < 4; k++) {
    assert_int_equal(cf_as_completed_next(it, &f), 1);
    assert_ptr_equal(f, fs[order[k]]);
    assert_true(cf_future_done(f));
    cf_future_unref(f);
    counter_add(&s.taken, 1);
  }
  pthread_join(t, NULL);
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_null(f);
  assert_int_equal(cf_as_completed_get_remaining(it), 0);
  cf_as_completed_free(it);
  counter_destroy(&s.taken);
  unref_all(fs, N);
}

CF_TEST(as_completed_duplicates_once) {
  (void)state;
  cf_future *fs[3];
  make(fs, 3);
  cf_future *in[] = {fs[0], fs[1], fs[0], fs[2], fs[1], fs[0]};
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(in, 6, CF_FOREVER, &it), 0);
  assert_int_equal(cf_as_completed_get_remaining(it), 3);
  finish(fs[2], 2);
  finish(fs[0], 0);
  finish(fs[1], 1);
  int seen[3] = {0, 0, 0};
  cf_future *f;
  while (cf_as_completed_next(it, &f) == 1) {
    for (int i = 0; i < 3; i++)
      seen[i] += f == fs[i];
    cf_future_unref(f);
  }
  assert_int_equal(seen[0], 1);
  assert_int_equal(seen[1], 1);
  assert_int_equal(seen[2], 1);
  cf_as_completed_free(it);
  unref_all(fs, 3);
}

CF_TEST(as_completed_timeout_is_sticky) {
  (void)state;
  cf_future *fs[2];
  make(fs, 2);
  finish(fs[0], 0);
  cf_as_completed *it;
  int64_t t0 = cf_now_ns(); /* the deadline counts from creation */
  assert_int_equal(cf_as_completed_new(fs, 2, CF_MSEC(30), &it), 0);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  cf_future_unref(f);
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  assert_null(f);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(30)); /* never early */
  finish(fs[1], 1); /* too late: Python's generator is finished too */
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  assert_int_equal(cf_as_completed_get_remaining(it), 1);
  cf_as_completed_free(it);
  unref_all(fs, 2);
}

CF_TEST(as_completed_zero_timeout_yields_done_ones) {
  (void)state;
  cf_future *fs[2];
  make(fs, 2);
  finish(fs[1], 1);
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 2, 0, &it), 0);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  assert_ptr_equal(f, fs[1]);
  cf_future_unref(f);
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  cf_as_completed_free(it);
  unref_all(fs, 2);
}

CF_TEST(as_completed_empty_and_bad_arguments) {
  (void)state;
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(NULL, 0, CF_FOREVER, &it), 0);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  cf_as_completed_free(it);
  cf_future *fs[2];
  make(fs, 1);
  fs[1] = NULL;
  it = (cf_as_completed *)fs[0];
  assert_int_equal(cf_as_completed_new(fs, 2, CF_FOREVER, &it), CF_EINVAL);
  assert_null(it);
  assert_int_equal(cf_as_completed_new(fs, 1, -1, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(NULL, 1, 0, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(fs, 1, 0, NULL), CF_EINVAL);
  assert_int_equal(cf_as_completed_next(NULL, &f), CF_EINVAL);
  assert_int_equal(cf_as_completed_get_remaining(NULL), 0);
  cf_as_completed_free(NULL);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(cf_as_completed_new(fs, 1, 0, &it), CF_ENOMEM);
  cf__fault_arm(CF__FAULT_ALLOC, 3, 1); /* the node array */
  assert_int_equal(cf_as_completed_new(fs, 1, 0, &it), CF_ENOMEM);
  unref_all(fs, 1);
}

CF_TEST(as_completed_yields_cancelled) {
  (void)state;
  cf_future *fs[2];
  make(fs, 2);
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 2, SOON, &it), 0);
  assert_int_equal(cf_future_cancel(fs[1]), 0);
  assert_int_equal(cf_future_cancel(fs[0]), 0);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  assert_ptr_equal(f, fs[1]);
  assert_true(cf_future_cancelled(f));
  cf_future_unref(f);
  assert_int_equal(cf_as_completed_next(it, &f), 1);
  assert_ptr_equal(f, fs[0]);
  cf_future_unref(f);
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  cf_as_completed_free(it);
  unref_all(fs, 2);
}

CF_TEST(as_completed_drops_references_as_it_yields) {
  (void)state;
  cf_future *fs[4];
  make(fs, 4);
  for (int i = 0; i < 4; i++) {
    cf_value v = CF_VALUE_INIT;
    v.u.ptr = fs[i];
    v.dtor = counting_dtor;
    assert_int_equal(cf_future_set_result(fs[i], &v), 0);
  }
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 4, CF_FOREVER, &it), 0);
  unref_all(fs, 4); /* the iterator now holds the only references */
  cf_future *f;
  for (int i = 1; i <= 4; i++) {
    assert_int_equal(cf_as_completed_next(it, &f), 1);
    cf_future_unref(f);
    /* Each future is freed as soon as the caller drops it. */
    assert_int_equal(atomic_load(&dtor_calls), i);
  }
  cf_as_completed_free(it);
}

CF_TEST(as_completed_free_early_then_complete) {
  (void)state;
  cf_future *fs[3];
  make(fs, 3);
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 3, CF_FOREVER, &it), 0);
  finish(fs[0], 0);
  cf_as_completed_free(it); /* detaches from fs[1], fs[2] */
  finish(fs[1], 1);         /* must not touch the freed iterator (ASan) */
  assert_int_equal(cf_future_cancel(fs[2]), 0);
  unref_all(fs, 3);
}

/* ---- wait -----------------------------------------------------------------
 */

CF_TEST(wait_first_completed) {
  (void)state;
  cf_future *fs[N], *done[N], *not_done[N];
  make(fs, N);
  static const int order[] = {2};
  sequencer s = {.fs = fs, .order = order, .n = 1};
  counter_init(&s.taken);
  pthread_t t = spawn(sequence, &s);
  size_t nd = 99, nn = 99;
  assert_int_equal(
      cf_wait(fs, N, SOON, CF_FIRST_COMPLETED, done, &nd, not_done, &nn), 0);
  pthread_join(t, NULL);
  assert_int_equal(nd, 1);
  assert_int_equal(nn, N - 1);
  assert_ptr_equal(done[0], fs[2]);
  for (size_t i = 0; i < nn; i++)
    assert_false(cf_future_done(not_done[i]));
  counter_destroy(&s.taken);
  unref_all(fs, N);
}

CF_TEST(wait_first_exception) {
  (void)state;
  cf_future *fs[4], *done[4];
  make(fs, 4);
  /* A cancelled future is not an exception: keep waiting. */
  assert_int_equal(cf_future_cancel(fs[0]), 0);
  finish(fs[1], 1);
  size_t nd, nn;
  assert_int_equal(
      cf_wait(fs, 4, CF_MSEC(10), CF_FIRST_EXCEPTION, done, &nd, NULL, &nn), 0);
  assert_int_equal(nd, 2);
  assert_int_equal(nn, 2);
  assert_int_equal(cf_future_set_error(fs[3], -EIO, "boom"), 0);
  assert_int_equal(
      cf_wait(fs, 4, SOON, CF_FIRST_EXCEPTION, done, &nd, NULL, &nn), 0);
  assert_int_equal(nd, 3);
  assert_int_equal(nn, 1);
  /* All done without an exception also returns. */
  cf_future *gs[2];
  make(gs, 2);
  finish(gs[0], 0);
  assert_int_equal(cf_future_cancel(gs[1]), 0);
  assert_int_equal(
      cf_wait(gs, 2, SOON, CF_FIRST_EXCEPTION, NULL, &nd, NULL, &nn), 0);
  assert_int_equal(nd, 2);
  assert_int_equal(nn, 0);
  unref_all(gs, 2);
  unref_all(fs, 4);
}

/* A task may fail with any negative code, including the library's own:
 * one that returns CF_ECANCELED or CF_EINVALSTATE has FINISHED with an
 * error (Python: a task that raises CancelledError), so FIRST_EXCEPTION
 * counts it and the pool counts it as failed, not cancelled. */
CF_TEST(wait_first_exception_counts_tasks_failing_with_library_codes) {
  (void)state;
  static const int codes[] = {CF_ECANCELED, CF_EINVALSTATE, CF_ETIMEDOUT};
  for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
    cf_executor *ex = make_pool(1);
    gate g;
    gate_init(&g);
    cf_future *fs[2], *done[2];
    assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &fs[0]), 0);
    assert_int_equal(
        cf_executor_submit(ex, task_fail, (void *)(intptr_t)codes[k], &fs[1]),
        0);
    gate_open(&g);
    size_t nd, nn;
    assert_int_equal(
        cf_wait(fs, 2, SOON, CF_ALL_COMPLETED, done, &nd, NULL, &nn), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(cf_future_get_state(fs[1]), CF_FINISHED);
    assert_false(cf_future_cancelled(fs[1]));
    assert_int_equal(cf_future_get_error(fs[1]).code, codes[k]);
    /* Done, so even the timeout code is the task's, not the wait's. */
    assert_int_equal(cf_future_result(fs[1], SOON, NULL), codes[k]);
    cf_future *again[2] = {fs[0], fs[1]};
    assert_int_equal(
        cf_wait(again, 2, 0, CF_FIRST_EXCEPTION, done, &nd, NULL, &nn), 0);
    assert_int_equal(nd, 2);
    cf_executor_stats st;
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER),
                     0); /* exact */
    assert_int_equal(cf_executor_get_stats(ex, &st), 0);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.cancelled, 0);
    /* A pending future plus the failed one: FIRST_EXCEPTION returns at
     * once with the failure instead of waiting out its 10 s (the bound
     * below is a correctness margin, not a speed expectation). */
    cf_future *p;
    assert_int_equal(cf_future_new(&p), 0);
    cf_future *mixed[2] = {p, fs[1]};
    int64_t t0 = cf_now_ns();
    assert_int_equal(
        cf_wait(mixed, 2, CF_SEC(10), CF_FIRST_EXCEPTION, done, &nd, NULL, &nn),
        0);
    assert_true(cf_now_ns() - t0 < CF_SEC(5));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 1);
    assert_ptr_equal(done[0], fs[1]);
    cf_future_unref(p);
    unref_all(fs, 2);
    assert_int_equal(cf_executor_free(ex), 0);
    gate_destroy(&g);
  }
}

CF_TEST(wait_all_completed_and_timeout) {
  (void)state;
  cf_future *fs[N];
  make(fs, N);
  static const int order[] = {5, 0, 1, 4, 3, 2};
  sequencer s = {.fs = fs, .order = order, .n = N};
  counter_init(&s.taken);
  counter_add(&s.taken, N); /* no pacing: complete all at once */
  pthread_t t = spawn(sequence, &s);
  size_t nd, nn;
  assert_int_equal(cf_wait(fs, N, SOON, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn),
                   0);
  pthread_join(t, NULL);
  assert_int_equal(nd, N);
  assert_int_equal(nn, 0);
  counter_destroy(&s.taken);
  /* Timeout: returns normally with what is not done. */
  cf_future *gs[2];
  make(gs, 2);
  finish(gs[0], 0);
  int64_t t0 = cf_now_ns();
  cf_future *not_done[2];
  assert_int_equal(
      cf_wait(gs, 2, CF_MSEC(20), CF_ALL_COMPLETED, NULL, &nd, not_done, &nn),
      0);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(20));
  assert_int_equal(nd, 1);
  assert_int_equal(nn, 1);
  assert_ptr_equal(not_done[0], gs[1]);
  unref_all(gs, 2);
  unref_all(fs, N);
}

CF_TEST(wait_duplicates_empty_bad_arguments) {
  (void)state;
  cf_future *fs[2];
  make(fs, 2);
  finish(fs[0], 0);
  cf_future *in[] = {fs[0], fs[1], fs[1], fs[0]};
  cf_future *done[4], *not_done[4];
  size_t nd, nn;
  assert_int_equal(
      cf_wait(in, 4, 0, CF_ALL_COMPLETED, done, &nd, not_done, &nn), 0);
  assert_int_equal(nd, 1);
  assert_int_equal(nn, 1);
  assert_int_equal(cf_wait(NULL, 0, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn),
                   0);
  assert_int_equal(nd + nn, 0);
  assert_int_equal(cf_wait(fs, 2, -1, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
                   CF_EINVAL);
  assert_int_equal(cf_wait(fs, 2, 0, (cf_return_when)7, NULL, NULL, NULL, NULL),
                   CF_EINVAL);
  assert_int_equal(
      cf_wait(NULL, 2, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL), CF_EINVAL);
  cf_future *with_null[] = {fs[0], NULL};
  assert_int_equal(
      cf_wait(with_null, 2, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
      CF_EINVAL);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(cf_wait(fs, 2, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL),
                   CF_ENOMEM);
  unref_all(fs, 2);
}

CF_TEST(wait_returns_at_once_when_satisfied) {
  (void)state;
  cf_future *fs[2];
  make(fs, 2);
  finish(fs[1], 1);
  size_t nd, nn;
  /* FIRST_COMPLETED with one done: no waiting even with no timeout. */
  assert_int_equal(
      cf_wait(fs, 2, CF_FOREVER, CF_FIRST_COMPLETED, NULL, &nd, NULL, &nn), 0);
  assert_int_equal(nd, 1);
  assert_int_equal(nn, 1);
  unref_all(fs, 2);
}

typedef struct late_failure {
  cf_future **fs;
  int code;
} late_failure;

/* Finishes fs[0] normally, then, once the main thread waits inside
 * cf_wait (its listeners are attached to fs[1..3]), fails fs[2] with
 * lf->code: the wait must end on that failure, reported by a listener. */
static void *fail_later(void *arg) {
  late_failure *lf = arg;
  cf_value v = CF_VALUE_INIT;
  TCHECK(cf_future_set_result(lf->fs[0], &v) == 0);
  TCHECK(wait_listened(lf->fs + 1, 3));
  TCHECK(cf_future_set_error(lf->fs[2], lf->code, "late") == 0);
  return NULL;
}

/* Also with the library's own codes as the failure (see cf_task_fn). */
CF_TEST(wait_first_exception_ends_on_a_failure_during_the_wait) {
  (void)state;
  static const int codes[] = {-EIO, CF_ECANCELED, CF_EINVALSTATE};
  for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
    cf_future *fs[4], *done[4], *not_done[4];
    make(fs, 4);
    late_failure lf = {fs, codes[k]};
    pthread_t t = spawn(fail_later, &lf);
    size_t nd, nn;
    assert_int_equal(
        cf_wait(fs, 4, SOON, CF_FIRST_EXCEPTION, done, &nd, not_done, &nn), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(nn, 2);
    assert_true((done[0] == fs[0] && done[1] == fs[2]) ||
                (done[0] == fs[2] && done[1] == fs[0]));
    assert_int_equal(cf_future_get_error(fs[2]).code, codes[k]);
    assert_false(cf_future_done(not_done[0]) || cf_future_done(not_done[1]));
    pthread_join(t, NULL);
    unref_all(fs, 4);
  }
}

typedef struct hooked_failure {
  cf_executor *ex;
  int code;
  int64_t elapsed; /* of the wait */
} hooked_failure;

/* Inside the only worker: submits a child failing with hf->code and waits
 * FIRST_EXCEPTION on it and on a future nobody completes. The wait runs
 * the child itself (the hooked path) and must end on its failure. */
static int task_wait_for_failing_child(void *arg, cf_value *result) {
  (void)result;
  hooked_failure *hf = arg;
  cf_future *fs[2], *done[2];
  TCHECK(cf_future_new(&fs[0]) == 0);
  TCHECK(cf_executor_submit(hf->ex, task_fail, (void *)(intptr_t)hf->code,
                            &fs[1]) == 0);
  size_t nd = 0, nn = 0;
  int64_t t0 = cf_now_ns();
  TCHECK(cf_wait(fs, 2, CF_SEC(10), CF_FIRST_EXCEPTION, done, &nd, NULL, &nn) ==
         0);
  hf->elapsed = cf_now_ns() - t0;
  TCHECK(nd == 1 && nn == 1 && done[0] == fs[1]);
  TCHECK(cf_future_get_error(fs[1]).code == hf->code);
  cf_future_unref(fs[0]);
  cf_future_unref(fs[1]);
  return 0;
}

CF_TEST(wait_first_exception_inside_a_worker_ends_on_library_codes) {
  (void)state;
  static const int codes[] = {-EIO, CF_ECANCELED, CF_EINVALSTATE};
  for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
    cf_executor *ex = make_pool(1);
    hooked_failure hf = {ex, codes[k], 0};
    cf_future *f;
    assert_int_equal(
        cf_executor_submit(ex, task_wait_for_failing_child, &hf, &f), 0);
    assert_int_equal(cf_future_result(f, SOON, NULL), 0);
    /* Not the 10 s timeout (a correctness margin, not a speed bound). */
    assert_true(hf.elapsed < CF_SEC(5));
    cf_future_unref(f);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* ---- waits inside a pool worker (through the wait hook) ------------------ */

typedef struct inner {
  cf_executor *ex;
  int mode; /* 0: wait ALL, 1: wait FIRST_COMPLETED, 2: as_completed */
} inner;

/* Submits three children to its own pool and waits for them with
 * cf_wait or as_completed. With one worker, only the waiting worker can
 * run them: a wait that blocked the thread would never return. */
static int task_wait_for_children(void *arg, cf_value *result) {
  inner *in = arg;
  cf_future *kids[3];
  for (intptr_t i = 0; i < 3; i++)
    TCHECK(cf_executor_submit(in->ex, task_return_arg, (void *)(i + 1),
                              &kids[i]) == 0);
  int64_t sum = 0;
  if (in->mode < 2) {
    cf_future *done[3];
    size_t nd = 0, nn = 0;
    cf_return_when when = in->mode == 0 ? CF_ALL_COMPLETED : CF_FIRST_COMPLETED;
    TCHECK(cf_wait(kids, 3, SOON, when, done, &nd, NULL, &nn) == 0);
    TCHECK(in->mode == 0 ? nd == 3 && nn == 0 : nd >= 1 && nd + nn == 3);
    for (size_t i = 0; i < nd; i++)
      sum += cf_future_done(done[i]) ? 1 : 0;
    sum = sum == (int64_t)nd ? (int64_t)nd : -1;
  } else {
    cf_as_completed *it;
    TCHECK(cf_as_completed_new(kids, 3, SOON, &it) == 0);
    cf_future *f;
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == 1) {
      const cf_value *v;
      TCHECK(cf_future_result(f, 0, &v) == 0);
      sum += v->u.i;
      cf_future_unref(f);
    }
    TCHECK(rc == 0);
    cf_as_completed_free(it);
  }
  for (int i = 0; i < 3; i++)
    cf_future_unref(kids[i]);
  result->u.i = sum;
  return 0;
}

CF_TEST(wait_and_as_completed_inside_a_worker_run_the_work) {
  (void)state;
  for (int mode = 0; mode < 3; mode++) {
    cf_executor *ex = make_pool(1);
    inner in = {ex, mode};
    cf_future *f;
    assert_int_equal(cf_executor_submit(ex, task_wait_for_children, &in, &f),
                     0);
    const cf_value *v;
    assert_int_equal(cf_future_result(f, SOON, &v), 0);
    if (mode == 0)
      assert_int_equal(v->u.i, 3); /* all three done */
    else if (mode == 1)
      assert_true(v->u.i >= 1);
    else
      assert_int_equal(v->u.i, 1 + 2 + 3);
    cf_future_unref(f);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

typedef struct self_wait {
  gate g;
  cf_future *self;
  int wait_rc, ac_rc;
} self_wait;

/* Waits on a set that holds its own future: can never complete. */
static int task_wait_on_itself(void *arg, cf_value *result) {
  (void)result;
  self_wait *sw = arg;
  TCHECK(gate_wait(&sw->g));
  size_t nd = 99, nn = 99;
  sw->wait_rc =
      cf_wait(&sw->self, 1, SOON, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn);
  TCHECK(nd == 0 && nn == 0);
  cf_as_completed *it;
  TCHECK(cf_as_completed_new(&sw->self, 1, SOON, &it) == 0);
  cf_future *f = NULL;
  sw->ac_rc = cf_as_completed_next(it, &f);
  TCHECK(f == NULL);
  cf_as_completed_free(it);
  return 0;
}

CF_TEST(waiting_inside_a_worker_on_its_own_task_is_a_deadlock_error) {
  (void)state;
  cf_executor *ex = make_pool(1);
  self_wait sw = {.wait_rc = 1, .ac_rc = 1};
  gate_init(&sw.g);
  assert_int_equal(cf_executor_submit(ex, task_wait_on_itself, &sw, &sw.self),
                   0);
  gate_open(&sw.g);
  assert_int_equal(cf_future_result(sw.self, SOON, NULL), 0);
  assert_int_equal(sw.wait_rc, CF_EDEADLK);
  assert_int_equal(sw.ac_rc, CF_EDEADLK);
  cf_future_unref(sw.self);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&sw.g);
}

/* ---- waiting on many futures inside a worker, without polling ----------- */

typedef struct quiet_wait {
  cf_future *fs[3]; /* completed by a foreign thread, later */
  int mode;         /* 0 cf_wait FIRST_COMPLETED, 1 as_completed */
  int64_t timeout;
  long switches; /* voluntary context switches during the wait */
  int rc;
} quiet_wait;

static long voluntary_switches(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_nvcsw;
}

static int task_wait_quietly(void *arg, cf_value *result) {
  (void)result;
  quiet_wait *q = arg;
  long before = voluntary_switches();
  if (q->mode == 0) {
    size_t nd = 0;
    q->rc = cf_wait(q->fs, 3, q->timeout, CF_FIRST_COMPLETED, NULL, &nd, NULL,
                    NULL);
    if (q->rc == 0 && nd != 1)
      q->rc = -1000;
  } else {
    cf_as_completed *it;
    q->rc = cf_as_completed_new(q->fs, 3, q->timeout, &it);
    if (q->rc == 0) {
      cf_future *f;
      q->rc = cf_as_completed_next(it, &f);
      q->rc = q->rc == 1 && f == q->fs[1] ? 0 : -1000 + q->rc;
      cf_future_unref(f);
      cf_as_completed_free(it);
    }
  }
  q->switches = voluntary_switches() - before;
  return 0;
}

/* A worker waiting on several futures sleeps until the first completion
 * and wakes once (plus the odd wake-up a scheduler causes): it used to
 * wake every millisecond, about 200 times in these 200 ms. */
CF_TEST(waits_on_many_inside_a_worker_do_not_poll) {
  (void)state;
  const int64_t timeouts[] = {CF_FOREVER, SOON};
  for (int mode = 0; mode < 2; mode++) {
    for (int k = 0; k < 2; k++) {
      cf_executor *ex = make_pool(2);
      quiet_wait q = {.mode = mode, .timeout = timeouts[k]};
      make(q.fs, 3);
      cf_future *w = NULL;
      assert_int_equal(cf_executor_submit(ex, task_wait_quietly, &q, &w), 0);
      assert_true(wait_listened(q.fs, 3)); /* it waits */
      usleep(200000); /* the interval measured, not a coordination */
      finish(q.fs[1], 1);
      assert_int_equal(cf_future_wait(w, SOON), 0);
      assert_int_equal(q.rc, 0);
      if (q.switches > 20)
        fail_msg("mode %d, timeout %lld: %ld wake-ups in a 200 ms wait", mode,
                 (long long)timeouts[k], q.switches);
      cf_future_unref(w);
      unref_all(q.fs, 3);
      assert_int_equal(cf_executor_free(ex), 0);
    }
  }
}

CF_TEST_MAIN()
