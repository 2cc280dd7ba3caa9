/*
 * test_aio.c - what tasks build on: gather, wait_for, timeout scopes,
 * task groups, and the semaphores, locks and events of cf/sync.h.
 */
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cf/loop.h"
#include "cf/sync.h"

static cf_loop *here(void) { return cf_loop_current(); }

static int sleep_then_return(void *arg, cf_value *result) {
  intptr_t ms = (intptr_t)arg;
  int rc = cf_sleep(CF_MSEC(ms));
  result->u.i = ms;
  return rc;
}

static int fail_after(void *arg, cf_value *result) {
  (void)result;
  cf_sleep(CF_MSEC((intptr_t)arg));
  return cf_raise(-EIO, "child failed after %d ms", (int)(intptr_t)arg);
}

typedef struct watched {
  _Atomic int started;
  int rc;
  bool cleaned;
} watched;

static int sleep_forever_watched(void *arg, cf_value *result) {
  (void)result;
  watched *w = arg;
  atomic_store(&w->started, 1);
  w->rc = cf_sleep(CF_SEC(3600));
  w->cleaned = true;
  return w->rc;
}

/* ---------------------------------------------------------------------- */
/* gather                                                                 */

static int main_gather_ok(void *arg, cf_value *result) {
  (void)arg;
  cf_future *fs[10];
  for (intptr_t i = 0; i < 10; i++)
    TCHECK(cf_loop_spawn(here(), sleep_then_return, (void *)(i % 4), &fs[i]) ==
           0);
  TCHECK(cf_gather(fs, 10, 0, CF_FOREVER) == 0);
  int64_t sum = 0;
  for (int i = 0; i < 10; i++) {
    const cf_value *v;
    TCHECK(cf_future_result(fs[i], 0, &v) == 0);
    sum += v->u.i;
    cf_future_unref(fs[i]);
  }
  result->u.i = sum;
  return 0;
}

CF_TEST(gather_waits_for_all_and_keeps_their_results) {
  (void)state;
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_gather_ok, NULL, test_loop_opts(NULL), &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 0 + 1 + 2 + 3 + 0 + 1 + 2 + 3 + 0 + 1);
  cf_future_unref(f);
}

static int main_gather_fail(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_future *fs[2];
  TCHECK(cf_loop_spawn(here(), sleep_then_return, (void *)(intptr_t)80,
                       &fs[0]) == 0);
  TCHECK(cf_loop_spawn(here(), fail_after, (void *)(intptr_t)1, &fs[1]) == 0);
  TCHECK(cf_gather(fs, 2, 0, CF_FOREVER) == -EIO);
  TCHECK(!cf_future_done(fs[0])); /* the other keeps running */
  /* With return-errors it waits for all and reports success. */
  TCHECK(cf_gather(fs, 2, CF_GATHER_RETURN_ERRORS, CF_FOREVER) == 0);
  TCHECK(cf_future_get_error(fs[0]).code == 0);
  TCHECK(!cf_future_cancelled(fs[0]));
  TCHECK(strcmp(cf_future_get_error(fs[1]).message,
                "child failed after 1 ms") == 0);
  cf_future_unref(fs[0]);
  cf_future_unref(fs[1]);
  return 0;
}

CF_TEST(gather_ends_at_the_first_failure_unless_it_returns_errors) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_gather_fail, NULL, test_loop_opts(NULL), NULL), 0);
}

static int gatherer(void *arg, cf_value *result) {
  (void)result;
  return cf_gather(arg, 3, 0, CF_FOREVER);
}

static int main_gather_cancelled(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static watched w[3];
  /* Not on this task's stack: the gatherer reads it while this task is
   * suspended (with shared stacks, its stack is elsewhere then). */
  static cf_future *kids[3];
  cf_future *g;
  for (int i = 0; i < 3; i++)
    TCHECK(cf_loop_spawn(here(), sleep_forever_watched, &w[i], &kids[i]) == 0);
  TCHECK(cf_loop_spawn(here(), gatherer, kids, &g) == 0);
  TCHECK(cf_sleep(CF_MSEC(5)) == 0);
  TCHECK(cf_future_cancel(g) == 0);
  TCHECK(cf_gather(kids, 3, CF_GATHER_RETURN_ERRORS, CF_FOREVER) == 0);
  TCHECK(cf_future_wait(g, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(g));
  for (int i = 0; i < 3; i++) {
    TCHECK(cf_future_cancelled(kids[i]));
    TCHECK(w[i].cleaned && w[i].rc == CF_ECANCELED);
    cf_future_unref(kids[i]);
  }
  cf_future_unref(g);
  return 0;
}

CF_TEST(cancelling_a_gather_cancels_its_children) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_gather_cancelled, NULL, test_loop_opts(NULL), NULL),
                   0);
}

static int pool_ms(void *arg, cf_value *result) {
  usleep(1000 * (unsigned)(intptr_t)arg);
  result->u.i = (intptr_t)arg;
  return 0;
}

/* Takes its cancellation, then cleans up for 20 ms more (a wait of its
 * own) before it ends. */
static int slow_cleanup(void *arg, cf_value *result) {
  (void)result;
  watched *w = arg;
  atomic_store(&w->started, 1);
  w->rc = cf_sleep(CF_SEC(3600));
  TCHECK(cf_sleep(CF_MSEC(20)) == 0);
  w->cleaned = true;
  return w->rc;
}

typedef struct slow_kids {
  cf_future *kids[2];
  watched *w;
  bool use_wait_for;
  bool cleaned_at_return; /* every child had cleaned up when it returned */
} slow_kids;

static int wait_on_slow_kids(void *arg, cf_value *result) {
  (void)result;
  slow_kids *k = arg;
  int rc = k->use_wait_for ? cf_wait_for(k->kids[0], CF_SEC(3600))
                           : cf_gather(k->kids, 2, 0, CF_FOREVER);
  k->cleaned_at_return = k->w[0].cleaned && (k->use_wait_for || k->w[1].cleaned);
  return rc;
}

static int main_cancel_waits_for_cleanup(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  /* Static: the children read them while this task is suspended (with
   * shared stacks, its stack is elsewhere then). */
  static watched w[2];
  static slow_kids k;
  for (int mode = 0; mode <= 1; mode++) {
    memset(w, 0, sizeof w);
    k = (slow_kids){.w = w, .use_wait_for = mode == 1};
    for (int i = 0; i < 2; i++)
      TCHECK(cf_loop_spawn(here(), slow_cleanup, &w[i], &k.kids[i]) == 0);
    cf_future *waiter;
    TCHECK(cf_loop_spawn(here(), wait_on_slow_kids, &k, &waiter) == 0);
    TCHECK(cf_sleep(CF_MSEC(5)) == 0);
    TCHECK(cf_future_cancel(waiter) == 0);
    TCHECK(cf_future_wait(waiter, CF_FOREVER) == 0);
    TCHECK(cf_future_cancelled(waiter));
    TCHECK(k.cleaned_at_return);
    TCHECK(cf_future_cancelled(k.kids[0]) && w[0].rc == CF_ECANCELED);
    if (mode == 1) /* wait_for's other child is not its business */
      TCHECK(cf_future_cancel(k.kids[1]) == 0);
    TCHECK(cf_gather(k.kids, 2, CF_GATHER_RETURN_ERRORS, CF_FOREVER) == 0);
    for (int i = 0; i < 2; i++)
      cf_future_unref(k.kids[i]);
    cf_future_unref(waiter);
  }
  return 0;
}

/* A cancelled gather or wait_for returns once the children it cancelled
 * have ended, as Python's: a caller may then free what they use. */
CF_TEST(a_cancelled_gather_or_wait_for_returns_once_the_children_ended) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_cancel_waits_for_cleanup, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

static int mark_ran(void *arg, cf_value *result) {
  (void)result;
  *(bool *)arg = true;
  return 0;
}

static int main_zero_timeouts_poll(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static bool ran[3];
  cf_future *f[3];
  for (int i = 0; i < 3; i++)
    TCHECK(cf_loop_spawn(here(), mark_ran, &ran[i], &f[i]) == 0);
  /* Polls: nothing else runs meanwhile, so the children have not started. */
  const cf_value *v;
  TCHECK(cf_future_wait(f[0], 0) == CF_ETIMEDOUT);
  TCHECK(cf_future_result(f[0], 0, &v) == CF_ETIMEDOUT);
  TCHECK(cf_gather(f, 3, 0, 0) == CF_ETIMEDOUT);
  TCHECK(!ran[0] && !ran[1] && !ran[2]);
  /* Python's wait_for(t, 0): t is cancelled before it ever runs. */
  TCHECK(cf_wait_for(f[2], 0) == CF_ETIMEDOUT);
  TCHECK(cf_future_cancelled(f[2]) && !ran[2]);
  TCHECK(cf_gather(f, 2, 0, CF_FOREVER) == 0);
  TCHECK(ran[0] && ran[1] && !ran[2]);
  /* Done: a poll says so. */
  TCHECK(cf_future_wait(f[0], 0) == 0);
  TCHECK(cf_wait_for(f[1], 0) == 0);
  for (int i = 0; i < 3; i++)
    cf_future_unref(f[i]);
  return 0;
}

/* A zero timeout (cf/time.h: poll once) in a task is no await point: it
 * neither suspends the task nor lets other tasks run. */
CF_TEST(zero_timeouts_in_a_task_poll_without_suspending) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_zero_timeouts_poll, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

CF_TEST(gather_and_wait_for_work_on_plain_threads) {
  (void)state;
  cf_executor *pool = make_pool(2);
  cf_future *fs[4];
  for (intptr_t i = 0; i < 4; i++)
    assert_int_equal(cf_executor_submit(pool, pool_ms, (void *)i, &fs[i]), 0);
  assert_int_equal(cf_gather(fs, 4, 0, SOON), 0);
  cf_future *slow;
  assert_int_equal(cf_executor_submit(pool, pool_ms, (void *)(intptr_t)300,
                                      &slow),
                   0);
  int64_t t0 = cf_now_ns();
  /* Running on a thread: it cannot be interrupted, so wait_for returns at
   * its timeout and the work goes on. */
  assert_int_equal(cf_wait_for(slow, CF_MSEC(20)), CF_ETIMEDOUT);
  assert_true(cf_now_ns() - t0 < CF_MSEC(250));
  assert_int_equal(cf_future_wait(slow, SOON), 0);
  assert_int_equal(cf_future_get_error(slow).code, 0);
  assert_int_equal(cf_wait_for(slow, 0), 0);
  for (int i = 0; i < 4; i++)
    cf_future_unref(fs[i]);
  cf_future_unref(slow);
  assert_int_equal(cf_gather(NULL, 1, 0, 0), CF_EINVAL);
  assert_int_equal(cf_gather(fs, 0, 99, 0), CF_EINVAL);
  assert_int_equal(cf_wait_for(NULL, 0), CF_EINVAL);
  assert_int_equal(cf_executor_free(pool), 0);
}

/* ---------------------------------------------------------------------- */
/* wait_for and timeout scopes                                            */

static int main_wait_for(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static watched w;
  cf_future *f;
  TCHECK(cf_loop_spawn(here(), sleep_forever_watched, &w, &f) == 0);
  int64_t t0 = cf_now_ns();
  TCHECK(cf_wait_for(f, CF_MSEC(30)) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(30));
  TCHECK(cf_future_cancelled(f)); /* waited for: it has cleaned up */
  TCHECK(w.cleaned && w.rc == CF_ECANCELED);
  cf_future_unref(f);
  TCHECK(cf_loop_spawn(here(), sleep_then_return, (void *)(intptr_t)1, &f) ==
         0);
  TCHECK(cf_wait_for(f, CF_SEC(30)) == 0);
  TCHECK(cf_future_get_error(f).code == 0);
  cf_future_unref(f);
  return 0;
}

CF_TEST(wait_for_cancels_a_task_at_its_timeout_and_waits_for_it) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_wait_for, NULL, test_loop_opts(NULL), NULL), 0);
}

static int main_scopes(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_timeout_scope sc, inner;
  /* Expires: the wait inside is cancelled, exit reports the timeout. */
  int64_t t0 = cf_now_ns();
  TCHECK(cf_timeout_enter(&sc, CF_MSEC(20)) == 0);
  TCHECK(cf_sleep(CF_SEC(3600)) == CF_ECANCELED);
  TCHECK(cf_timeout_expired(&sc));
  TCHECK(cf_timeout_exit(&sc) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(20));
  /* Does not expire. */
  TCHECK(cf_timeout_enter(&sc, CF_SEC(3600)) == 0);
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(cf_timeout_exit(&sc) == 0);
  /* Nested, the outer expires first. */
  TCHECK(cf_timeout_enter(&sc, CF_MSEC(10)) == 0);
  TCHECK(cf_timeout_enter(&inner, CF_SEC(3600)) == 0);
  TCHECK(cf_sleep(CF_SEC(3600)) == CF_ECANCELED);
  TCHECK(cf_timeout_exit(&inner) == 0);
  TCHECK(cf_timeout_exit(&sc) == CF_ETIMEDOUT);
  /* Nested, the inner expires first; the outer goes on. */
  TCHECK(cf_timeout_enter(&sc, CF_SEC(3600)) == 0);
  TCHECK(cf_timeout_enter(&inner, CF_MSEC(10)) == 0);
  TCHECK(cf_sleep(CF_SEC(3600)) == CF_ECANCELED);
  TCHECK(cf_timeout_exit(&inner) == CF_ETIMEDOUT);
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(cf_timeout_exit(&sc) == 0);
  /* Expired with no wait inside: the owed cancellation is withdrawn. */
  TCHECK(cf_timeout_enter(&sc, CF_MSEC(1)) == 0);
  int64_t until = cf_now_ns() + CF_MSEC(5);
  while (cf_now_ns() < until)
    ;
  /* A turn of the loop fires the timer; the task is ready, not waiting,
   * so the cancellation is owed, and exit withdraws it. */
  TCHECK(cf_yield() == 0);
  TCHECK(cf_timeout_exit(&sc) == CF_ETIMEDOUT);
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  /* Misuse. */
  TCHECK(cf_timeout_exit(&sc) == CF_EINVAL);
  TCHECK(cf_timeout_enter(&sc, -1) == CF_EINVAL);
  return 0;
}

CF_TEST(timeout_scopes_cancel_at_their_deadline_and_nest) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_scopes, NULL, test_loop_opts(NULL), NULL), 0);
  cf_timeout_scope sc;
  assert_int_equal(cf_timeout_enter(&sc, CF_SEC(1)), CF_ENOTTASK);
}

static int main_scope_no_wait(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_timeout_scope sc;
  TCHECK(cf_timeout_enter(&sc, CF_MSEC(1)) == 0);
  /* Another task runs past the deadline while this one is ready, not
   * waiting: the timer fires, the cancellation is owed, never delivered. */
  cf_future *f;
  TCHECK(cf_loop_spawn(here(), sleep_then_return, (void *)(intptr_t)5, &f) ==
         0);
  int64_t until = cf_now_ns() + CF_MSEC(3);
  while (cf_now_ns() < until)
    ;
  /* The timer could not fire: nothing ran the loop since the deadline
   * passed (as in Python, the scope ends normally). */
  TCHECK(!cf_timeout_expired(&sc));
  TCHECK(cf_timeout_exit(&sc) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  cf_future_unref(f);
  TCHECK(cf_sleep(CF_MSEC(1)) == 0); /* no stray cancellation */
  return 0;
}

CF_TEST(a_scope_left_without_waiting_owes_nothing_afterwards) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_scope_no_wait, NULL, test_loop_opts(NULL), NULL), 0);
}

/* ---------------------------------------------------------------------- */
/* Task groups                                                            */

static int main_group_fails(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static watched w[3];
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  for (int i = 0; i < 3; i++)
    TCHECK(cf_task_group_spawn(g, sleep_forever_watched, &w[i], NULL) == 0);
  TCHECK(cf_task_group_spawn(g, fail_after, (void *)(intptr_t)5, NULL) == 0);
  /* The body waits; the failure cancels it. */
  int body = cf_sleep(CF_SEC(3600));
  TCHECK(body == CF_ECANCELED);
  TCHECK(cf_task_group_spawn(g, sleep_then_return, NULL, NULL) ==
         CF_ESHUTDOWN);
  TCHECK(cf_task_group_join(g) == -EIO);
  cf_error e = cf_task_group_get_error(g);
  TCHECK(e.code == -EIO && strcmp(e.message, "child failed after 5 ms") == 0);
  for (int i = 0; i < 3; i++)
    TCHECK(w[i].cleaned && w[i].rc == CF_ECANCELED);
  cf_task_group_free(g);
  /* The group's cancellation of the owner was delivered once: this
   * task's waits work again. */
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  return 0;
}

CF_TEST(a_failing_child_cancels_its_siblings_and_the_owner) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_group_fails, NULL, test_loop_opts(NULL), NULL), 0);
}

/* The owner waits on the failing child's own future (not the join),
 * then frees the group without a join: the group's cancellation of the
 * owner, if it has not reached a wait, is withdrawn with the group. */
static int main_group_freed_after_a_failure(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  cf_future *child;
  TCHECK(cf_task_group_spawn(g, fail_after, (void *)(intptr_t)1, &child) == 0);
  int rc = cf_future_wait(child, CF_FOREVER);
  /* Either the wait ended on the child (then the group's request may
   * still be owed) or the request cut it short; both are fine here. */
  TCHECK(rc == 0 || rc == CF_ECANCELED);
  while (!cf_future_done(child))
    TCHECK(cf_future_wait(child, CF_FOREVER) == 0);
  cf_task_group_free(g);
  cf_future_unref(child);
  /* No group any more: nothing may cancel this task's waits. */
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  return 0;
}

CF_TEST(a_group_freed_without_a_join_withdraws_its_cancellation_of_the_owner) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_group_freed_after_a_failure, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

static int main_group_ok(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  cf_future *fs[5];
  for (intptr_t i = 0; i < 5; i++)
    TCHECK(cf_task_group_spawn(g, sleep_then_return, (void *)i, &fs[i]) == 0);
  TCHECK(cf_task_group_join(g) == 0);
  for (int i = 0; i < 5; i++) {
    TCHECK(cf_future_done(fs[i]) && cf_future_get_error(fs[i]).code == 0);
    cf_future_unref(fs[i]);
  }
  TCHECK(cf_task_group_get_error(g).code == 0);
  TCHECK(cf_task_group_spawn(g, sleep_then_return, NULL, NULL) ==
         CF_ESHUTDOWN);
  cf_task_group_free(g);
  return 0;
}

CF_TEST(a_group_join_waits_for_every_child) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_group_ok, NULL, test_loop_opts(NULL), NULL), 0);
}

static cf_executor *pool1;

static _Atomic int blocker_started;

static int blocker(void *arg, cf_value *result) {
  (void)result;
  atomic_store(&blocker_started, 1);
  return gate_wait(arg) ? 0 : CF_ETIMEDOUT;
}

static int main_group_owns_pool_work(void *arg, cf_value *result) {
  (void)result;
  gate *gt = arg;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  cf_future *busy, *queued;
  TCHECK(cf_executor_submit(pool1, blocker, gt, &busy) == 0);
  TCHECK(cf_executor_submit(pool1, pool_ms, NULL, &queued) == 0);
  TCHECK(cf_task_group_add(g, busy) == 0);
  TCHECK(cf_task_group_add(g, queued) == 0);
  while (!atomic_load(&blocker_started)) /* running: it cannot be cancelled */
    TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(cf_task_group_spawn(g, fail_after, (void *)(intptr_t)1, NULL) == 0);
  TCHECK(cf_sleep(CF_SEC(3600)) == CF_ECANCELED);
  /* The queued job was cancelled; the running one cannot be: let it end. */
  TCHECK(cf_future_cancelled(queued));
  gate_open(gt);
  TCHECK(cf_task_group_join(g) == -EIO);
  TCHECK(cf_future_done(busy) && !cf_future_cancelled(busy));
  cf_task_group_free(g);
  cf_future_unref(busy);
  cf_future_unref(queued);
  return 0;
}

CF_TEST(a_group_cancels_the_pending_work_of_other_executors_it_owns) {
  (void)state;
  pool1 = make_pool(1);
  gate gt;
  gate_init(&gt);
  assert_int_equal(cf_loop_run_main(main_group_owns_pool_work, &gt,
                                    test_loop_opts(NULL), NULL),
                   0);
  gate_destroy(&gt);
  assert_int_equal(cf_executor_free(pool1), 0);
}

typedef struct owner_args {
  watched w[2];
  int join_rc;
} owner_args;

static int group_owner(void *arg, cf_value *result) {
  (void)result;
  owner_args *a = arg;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  for (int i = 0; i < 2; i++)
    TCHECK(cf_task_group_spawn(g, sleep_forever_watched, &a->w[i], NULL) == 0);
  a->join_rc = cf_task_group_join(g);
  cf_task_group_free(g);
  return a->join_rc;
}

static int main_cancel_owner(void *arg, cf_value *result) {
  (void)result;
  owner_args *a = arg;
  cf_future *f;
  TCHECK(cf_loop_spawn(here(), group_owner, a, &f) == 0);
  while (!atomic_load(&a->w[0].started) || !atomic_load(&a->w[1].started))
    TCHECK(cf_yield() == 0);
  TCHECK(cf_future_cancel(f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(f));
  cf_future_unref(f);
  return 0;
}

typedef struct early_owner {
  watched w[2];
  _Atomic int sleeping;
  int sleep_rc, join_rc;
} early_owner;

/* Cancelled in its body's sleep, before it reaches the join. */
static int owner_cancelled_before_join(void *arg, cf_value *result) {
  (void)result;
  early_owner *a = arg;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  for (int i = 0; i < 2; i++)
    TCHECK(cf_task_group_spawn(g, sleep_forever_watched, &a->w[i], NULL) == 0);
  atomic_store(&a->sleeping, 1);
  a->sleep_rc = cf_sleep(CF_SEC(3600));
  a->join_rc = cf_task_group_join(g); /* the cancellation is the group's */
  cf_task_group_free(g);
  return a->join_rc;
}

static int main_cancel_owner_early(void *arg, cf_value *result) {
  (void)result;
  early_owner *a = arg;
  cf_future *f;
  TCHECK(cf_loop_spawn(here(), owner_cancelled_before_join, a, &f) == 0);
  while (!atomic_load(&a->sleeping) || !atomic_load(&a->w[0].started) ||
         !atomic_load(&a->w[1].started))
    TCHECK(cf_yield() == 0);
  TCHECK(cf_future_cancel(f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(f));
  cf_future_unref(f);
  return 0;
}

/* An owner cancelled from outside while in its body (before the join),
 * as Python's TaskGroup sees the CancelledError leave the body: the join
 * cancels the children, waits for them, and reports the cancellation. */
CF_TEST(an_owner_cancelled_before_its_join_cancels_the_children) {
  (void)state;
  early_owner a;
  memset(&a, 0, sizeof a);
  assert_int_equal(cf_loop_run_main(main_cancel_owner_early, &a,
                                    test_loop_opts(NULL), NULL),
                   0);
  assert_int_equal(a.sleep_rc, CF_ECANCELED);
  assert_int_equal(a.join_rc, CF_ECANCELED);
  for (int i = 0; i < 2; i++)
    assert_true(a.w[i].cleaned && a.w[i].rc == CF_ECANCELED);
}

CF_TEST(cancelling_the_owner_in_join_cancels_the_children_first) {
  (void)state;
  owner_args a;
  memset(&a, 0, sizeof a);
  assert_int_equal(cf_loop_run_main(main_cancel_owner, &a, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(a.join_rc, CF_ECANCELED);
  for (int i = 0; i < 2; i++)
    assert_true(a.w[i].cleaned && a.w[i].rc == CF_ECANCELED);
}

static int main_group_free(void *arg, cf_value *result) {
  (void)result;
  watched *w = arg;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  TCHECK(cf_task_group_spawn(g, sleep_forever_watched, w, NULL) == 0);
  TCHECK(cf_yield() == 0);
  cf_task_group_free(g); /* no orphans: cancelled and waited for */
  TCHECK(w->cleaned);
  return 0;
}

CF_TEST(freeing_a_group_cancels_and_waits_for_its_children) {
  (void)state;
  watched w;
  memset(&w, 0, sizeof w);
  assert_int_equal(cf_loop_run_main(main_group_free, &w, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(w.rc, CF_ECANCELED);
  cf_task_group *g;
  assert_int_equal(cf_task_group_new(&g), CF_ENOTTASK);
}

/* ---------------------------------------------------------------------- */
/* Semaphores, locks, events                                              */

typedef struct limiter {
  cf_semaphore *sem;
  int active, max_active;
} limiter;

static int limited(void *arg, cf_value *result) {
  (void)result;
  limiter *l = arg;
  TCHECK(cf_semaphore_acquire(l->sem, CF_FOREVER) == 0);
  if (++l->active > l->max_active)
    l->max_active = l->active;
  cf_sleep(CF_MSEC(2));
  l->active--;
  TCHECK(cf_semaphore_release(l->sem) == 0);
  return 0;
}

static int main_limited(void *arg, cf_value *result) {
  (void)result;
  limiter *l = arg;
  cf_future *fs[20];
  for (int i = 0; i < 20; i++)
    TCHECK(cf_loop_spawn(here(), limited, l, &fs[i]) == 0);
  TCHECK(cf_gather(fs, 20, 0, CF_FOREVER) == 0);
  for (int i = 0; i < 20; i++)
    cf_future_unref(fs[i]);
  return 0;
}

CF_TEST(a_semaphore_bounds_how_many_tasks_run_at_once) {
  (void)state;
  limiter l = {0};
  assert_int_equal(cf_semaphore_new(3, &l.sem), 0);
  assert_int_equal(cf_loop_run_main(main_limited, &l, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(l.max_active, 3);
  assert_int_equal(cf_semaphore_get_value(l.sem), 3);
  cf_semaphore_free(l.sem);
}

static void *thread_releases(void *p) {
  usleep(5000);
  TCHECK(cf_semaphore_release(p) == 0);
  return NULL;
}

static int main_sem_edges(void *arg, cf_value *result) {
  (void)result;
  cf_semaphore *s = arg;
  /* A thread's release wakes a suspended task. */
  pthread_t t = spawn(thread_releases, s);
  TCHECK(cf_semaphore_acquire(s, CF_FOREVER) == 0);
  pthread_join(t, NULL);
  /* Timeouts. */
  TCHECK(cf_semaphore_acquire(s, 0) == CF_ETIMEDOUT);
  TCHECK(cf_semaphore_try_acquire(s) == CF_EAGAIN);
  int64_t t0 = cf_now_ns();
  TCHECK(cf_semaphore_acquire(s, CF_MSEC(10)) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(10));
  TCHECK(cf_semaphore_get_value(s) == 0);
  return 0;
}

static int sem_waiter(void *arg, cf_value *result) {
  (void)result;
  return cf_semaphore_acquire(arg, CF_FOREVER);
}

static int main_sem_cancel(void *arg, cf_value *result) {
  (void)result;
  cf_semaphore *s = arg;
  cf_future *a, *b;
  TCHECK(cf_loop_spawn(here(), sem_waiter, s, &a) == 0);
  TCHECK(cf_loop_spawn(here(), sem_waiter, s, &b) == 0);
  TCHECK(cf_yield() == 0);
  TCHECK(cf_future_cancel(a) == 0); /* leaves the queue */
  TCHECK(cf_future_wait(a, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(a));
  TCHECK(cf_semaphore_release(s) == 0); /* goes to b, not to a */
  TCHECK(cf_future_wait(b, CF_FOREVER) == 0);
  TCHECK(cf_future_get_error(b).code == 0);
  TCHECK(cf_semaphore_get_value(s) == 0);
  cf_future_unref(a);
  cf_future_unref(b);
  return 0;
}

CF_TEST(semaphore_waits_time_out_and_cancelled_waiters_leave_the_queue) {
  (void)state;
  cf_semaphore *s;
  assert_int_equal(cf_semaphore_new(0, &s), 0);
  assert_int_equal(cf_loop_run_main(main_sem_edges, s, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(cf_loop_run_main(main_sem_cancel, s, test_loop_opts(NULL), NULL), 0);
  cf_semaphore_free(s);
  assert_int_equal(cf_semaphore_new(-1, &s), CF_EINVAL);
  assert_int_equal(cf_semaphore_acquire(NULL, 0), CF_EINVAL);
}

typedef struct locked_counter {
  cf_lock *lock;
  long value;
  int inside;
  int overlaps;
} locked_counter;

static int lock_user(void *arg, cf_value *result) {
  (void)result;
  locked_counter *c = arg;
  for (int i = 0; i < 50; i++) {
    TCHECK(cf_lock_acquire(c->lock, CF_FOREVER) == 0);
    if (++c->inside != 1)
      c->overlaps++;
    long v = c->value;
    cf_yield(); /* others run while it is held */
    c->value = v + 1;
    c->inside--;
    TCHECK(cf_lock_release(c->lock) == 0);
  }
  return 0;
}

static int main_locks(void *arg, cf_value *result) {
  (void)result;
  cf_future *fs[8];
  for (int i = 0; i < 8; i++)
    TCHECK(cf_loop_spawn(here(), lock_user, arg, &fs[i]) == 0);
  TCHECK(cf_gather(fs, 8, 0, CF_FOREVER) == 0);
  for (int i = 0; i < 8; i++)
    cf_future_unref(fs[i]);
  return 0;
}

CF_TEST(a_lock_excludes_tasks_that_suspend_while_holding_it) {
  (void)state;
  locked_counter c = {0};
  assert_int_equal(cf_lock_new(&c.lock), 0);
  assert_int_equal(cf_loop_run_main(main_locks, &c, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(c.value, 8 * 50);
  assert_int_equal(c.overlaps, 0);
  assert_false(cf_lock_locked(c.lock));
  assert_int_equal(cf_lock_release(c.lock), CF_EINVALSTATE);
  assert_int_equal(cf_lock_acquire(c.lock, 0), 0);
  assert_int_equal(cf_lock_acquire(c.lock, 0), CF_ETIMEDOUT);
  assert_int_equal(cf_lock_release(c.lock), 0);
  cf_lock_free(c.lock);
}

static int event_waiter(void *arg, cf_value *result) {
  (void)result;
  return cf_event_wait(arg, CF_FOREVER);
}

static void *thread_waits_event(void *p) {
  TCHECK(cf_event_wait(p, SOON) == 0);
  return NULL;
}

static int main_event(void *arg, cf_value *result) {
  (void)result;
  cf_event *e = arg;
  cf_future *fs[5];
  for (int i = 0; i < 5; i++)
    TCHECK(cf_loop_spawn(here(), event_waiter, e, &fs[i]) == 0);
  pthread_t t = spawn(thread_waits_event, e);
  TCHECK(cf_sleep(CF_MSEC(5)) == 0);
  for (int i = 0; i < 5; i++)
    TCHECK(!cf_future_done(fs[i]));
  TCHECK(cf_event_wait(e, CF_MSEC(5)) == CF_ETIMEDOUT);
  TCHECK(cf_event_set(e) == 0);
  TCHECK(cf_gather(fs, 5, 0, CF_FOREVER) == 0);
  pthread_join(t, NULL);
  TCHECK(cf_event_is_set(e));
  TCHECK(cf_event_wait(e, 0) == 0);
  TCHECK(cf_event_clear(e) == 0);
  TCHECK(cf_event_wait(e, 0) == CF_ETIMEDOUT);
  for (int i = 0; i < 5; i++)
    cf_future_unref(fs[i]);
  return 0;
}

CF_TEST(an_event_wakes_every_task_and_thread_waiting_on_it) {
  (void)state;
  cf_event *e;
  assert_int_equal(cf_event_new(&e), 0);
  assert_int_equal(cf_loop_run_main(main_event, e, test_loop_opts(NULL), NULL), 0);
  cf_event_free(e);
}


typedef struct slow_case {
  _Atomic int cleaning; /* the timeout cancelled it: it is cleaning up */
  cf_event *release;    /* lets its cleanup end */
} slow_case;

static int slow_to_cancel(void *arg, cf_value *result) {
  (void)result;
  slow_case *sc = arg;
  int rc = cf_sleep(CF_SEC(3600));
  atomic_store(&sc->cleaning, 1);
  cf_event_wait(sc->release, CF_SEC(60)); /* a long cleanup */
  return rc;
}

static int waits_for_slow(void *arg, cf_value *result) {
  (void)result;
  return cf_wait_for(arg, CF_MSEC(10));
}

static int main_wait_for_cancelled(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static slow_case sc;
  TCHECK(cf_event_new(&sc.release) == 0);
  cf_future *slow, *w;
  TCHECK(cf_loop_spawn(here(), slow_to_cancel, &sc, &slow) == 0);
  TCHECK(cf_loop_spawn(here(), waits_for_slow, slow, &w) == 0);
  /* w timed out and cancelled slow, which is now cleaning up: w waits
   * for it to end. That is the state to cancel w in. */
  while (!atomic_load(&sc.cleaning))
    TCHECK(cf_sleep(CF_MSEC(1)) == 0);
  TCHECK(!cf_future_done(w));
  TCHECK(cf_future_cancel(w) == 0);
  TCHECK(cf_yield() == 0); /* the cancellation reaches w's wait */
  TCHECK(cf_event_set(sc.release) == 0);
  TCHECK(cf_future_wait(w, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(w)); /* reported, not swallowed */
  TCHECK(cf_future_done(slow));
  cf_future_unref(w);
  cf_future_unref(slow);
  cf_event_free(sc.release);
  return 0;
}

CF_TEST(wait_for_reports_a_cancellation_that_comes_during_cleanup) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_wait_for_cancelled, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

static int main_scoped_join(void *arg, cf_value *result) {
  (void)result;
  watched *w = arg;
  cf_task_group *g;
  TCHECK(cf_task_group_new(&g) == 0);
  TCHECK(cf_task_group_spawn(g, sleep_forever_watched, w, NULL) == 0);
  cf_timeout_scope sc;
  TCHECK(cf_timeout_enter(&sc, CF_MSEC(20)) == 0);
  int jrc = cf_task_group_join(g); /* the scope bounds the join */
  TCHECK(jrc == CF_ECANCELED);
  TCHECK(cf_timeout_exit(&sc) == CF_ETIMEDOUT);
  cf_task_group_free(g);
  return 0;
}

typedef struct sync_waiter {
  int kind; /* 0 semaphore, 1 lock, 2 event */
  cf_semaphore *s;
  cf_lock *l;
  cf_event *e;
  int rc;
} sync_waiter;

static int wait_on_sync(void *arg, cf_value *result) {
  (void)result;
  sync_waiter *w = arg;
  w->rc = w->kind == 0   ? cf_semaphore_acquire(w->s, CF_FOREVER)
          : w->kind == 1 ? cf_lock_acquire(w->l, CF_FOREVER)
                         : cf_event_wait(w->e, CF_FOREVER);
  return 0;
}

static int main_woken_then_cancelled(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static sync_waiter w[2]; /* read by the tasks while this one waits */
  for (int kind = 0; kind <= 2; kind++) {
    cf_semaphore *s = NULL;
    cf_lock *l = NULL;
    cf_event *e = NULL;
    TCHECK(cf_semaphore_new(0, &s) == 0 && cf_lock_new(&l) == 0 &&
           cf_event_new(&e) == 0);
    TCHECK(cf_lock_acquire(l, 0) == 0);
    cf_future *f[2];
    for (int i = 0; i < 2; i++) {
      w[i] = (sync_waiter){kind, s, l, e, 1};
      TCHECK(cf_loop_spawn(here(), wait_on_sync, &w[i], &f[i]) == 0);
    }
    TCHECK(cf_sleep(CF_MSEC(5)) == 0); /* both wait, in order */
    /* Woken, then cancelled before it resumes: Python raises
     * CancelledError at the wait, and the permit goes on. */
    TCHECK((kind == 0   ? cf_semaphore_release(s)
            : kind == 1 ? cf_lock_release(l)
                        : cf_event_set(e)) == 0);
    TCHECK(cf_future_cancel(f[0]) == 0);
    TCHECK(cf_gather(f, 2, 0, CF_FOREVER) == 0);
    TCHECK(w[0].rc == CF_ECANCELED);
    TCHECK(w[1].rc == 0); /* the permit passed on; an event wakes all */
    if (kind == 0)
      TCHECK(cf_semaphore_get_value(s) == 0);
    if (kind == 1)
      TCHECK(cf_lock_release(l) == 0); /* the second waiter holds it */
    for (int i = 0; i < 2; i++)
      cf_future_unref(f[i]);
    cf_semaphore_free(s);
    cf_lock_free(l);
    cf_event_free(e);
  }
  return 0;
}

/* A waiter woken (a permit handed over, the event set) and cancelled
 * before it resumes gets CF_ECANCELED; a permit goes to the next waiter
 * (sync.h; Python's behaviour). */
CF_TEST(a_waiter_woken_then_cancelled_before_it_resumes_passes_the_permit) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_woken_then_cancelled, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

typedef struct scoped {
  int64_t deadline;
  int wait_rc, exit_rc, after_rc;
} scoped;

static int sleep_in_scope(void *arg, cf_value *result) {
  (void)result;
  scoped *sc = arg;
  cf_timeout_scope scope;
  TCHECK(cf_timeout_enter_at(&scope, sc->deadline) == 0);
  sc->wait_rc = cf_sleep(CF_SEC(3600));
  sc->exit_rc = cf_timeout_exit(&scope);
  sc->after_rc = cf_sleep(CF_MSEC(1)); /* not cancelled again */
  return sc->exit_rc;
}

static void cancel_cb(void *arg) { TCHECK(cf_future_cancel(arg) == 0); }

static int main_cancel_at_the_deadline(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static scoped sc;
  for (int order = 0; order <= 1; order++) {
    sc = (scoped){.deadline = cf_now_ns() + CF_MSEC(20), .wait_rc = 1};
    cf_future *t;
    /* Timers of one deadline run in the order they were set. */
    if (order == 0) { /* the outside cancel first, then the scope's */
      TCHECK(cf_loop_spawn(here(), sleep_in_scope, &sc, &t) == 0);
      TCHECK(cf_loop_call_at(here(), sc.deadline, cancel_cb, t, NULL) == 0);
      TCHECK(cf_yield() == 0); /* (t enters its scope after the call) */
    } else { /* the scope's first */
      TCHECK(cf_loop_spawn(here(), sleep_in_scope, &sc, &t) == 0);
      TCHECK(cf_yield() == 0);
      TCHECK(cf_loop_call_at(here(), sc.deadline, cancel_cb, t, NULL) == 0);
    }
    TCHECK(cf_future_wait(t, CF_FOREVER) == 0);
    TCHECK(sc.wait_rc == CF_ECANCELED);
    if (order == 0) {
      TCHECK(sc.exit_rc == CF_ECANCELED); /* the outside cancel leaves it */
      TCHECK(sc.after_rc == 0);           /* delivered once */
    } else {
      /* The scope's cancellation resumed the task before the call ran
       * (a timer's wake-up is queued like a callback, in deadline
       * order): the outside cancel is a later one, owed at the next
       * wait, not lost. */
      TCHECK(sc.exit_rc == CF_ETIMEDOUT);
      TCHECK(sc.after_rc == CF_ECANCELED);
    }
    TCHECK(cf_future_done(t));
    cf_future_unref(t);
  }
  return 0;
}

/* An outside cancellation that comes with a scope's expiry (delivered
 * at the same wait) leaves the scope as CF_ECANCELED; it was lost, the
 * exit saying CF_ETIMEDOUT and no later wait cancelled. One that comes
 * after the scope's has resumed the task is delivered at its next wait. */
CF_TEST(an_outside_cancel_at_a_scope_deadline_is_not_lost) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_cancel_at_the_deadline, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

CF_TEST(a_timeout_scope_bounds_a_group_join) {
  (void)state;
  watched w;
  memset(&w, 0, sizeof w);
  assert_int_equal(cf_loop_run_main(main_scoped_join, &w,
                                    test_loop_opts(NULL), NULL),
                   0);
  assert_true(w.cleaned);
  assert_int_equal(w.rc, CF_ECANCELED);
}

CF_TEST_MAIN()
