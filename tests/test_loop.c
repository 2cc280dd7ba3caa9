/*
 * test_loop.c - the event loop: callbacks, timers, thread-safe calls,
 * coroutine tasks and their waits, cancellation, the loop as an
 * executor, stacks.
 */
#include "support.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cf/loop.h"
#include "fault.h"

static cf_loop *new_loop(void) {
  cf_loop *L;
  assert_int_equal(cf_loop_new(test_loop_opts(NULL), &L), 0);
  return L;
}

static void stop_cb(void *arg) { cf_loop_stop(arg); }

/* ---------------------------------------------------------------------- */
/* Callbacks and timers                                                   */

typedef struct order_rec {
  int seen[256];
  int n;
  cf_loop *loop;
  int64_t due[256];
  int64_t at[256];
} order_rec;

typedef struct order_item {
  order_rec *rec;
  int id;
} order_item;

static void record_cb(void *arg) {
  order_item *it = arg;
  it->rec->at[it->rec->n] = cf_now_ns();
  it->rec->seen[it->rec->n++] = it->id;
}

CF_TEST(call_soon_runs_callbacks_in_order) {
  (void)state;
  cf_loop *L = new_loop();
  order_rec rec = {.n = 0};
  order_item items[100];
  for (int i = 0; i < 100; i++) {
    items[i] = (order_item){&rec, i};
    assert_int_equal(cf_loop_call_soon(L, record_cb, &items[i], NULL), 0);
  }
  assert_int_equal(cf_loop_call_soon(L, stop_cb, L, NULL), 0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(rec.n, 100);
  for (int i = 0; i < 100; i++)
    assert_int_equal(rec.seen[i], i);
  assert_int_equal(cf_loop_free(L), 0);
}

CF_TEST(timers_fire_in_order_and_never_early) {
  (void)state;
  cf_loop *L = new_loop();
  order_rec rec = {.n = 0};
  order_item items[40];
  /* Deadlines in a scrambled order, some equal (those keep the order in
   * which they were scheduled). */
  int64_t base = cf_now_ns() + CF_MSEC(20);
  for (int i = 0; i < 40; i++) {
    items[i] = (order_item){&rec, i};
    int64_t due = base + CF_MSEC((i * 7) % 13) + CF_USEC(i % 3 * 10);
    rec.due[i] = due;
    assert_int_equal(cf_loop_call_at(L, due, record_cb, &items[i], NULL), 0);
  }
  assert_int_equal(cf_loop_call_at(L, base + CF_MSEC(40), stop_cb, L, NULL),
                   0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(rec.n, 40);
  for (int k = 0; k < 40; k++) {
    int id = rec.seen[k];
    assert_true(rec.at[k] >= rec.due[id]); /* never early */
    if (k > 0) {
      int prev = rec.seen[k - 1];
      assert_true(rec.due[prev] < rec.due[id] ||
                  (rec.due[prev] == rec.due[id] && prev < id));
    }
  }
  assert_int_equal(cf_loop_free(L), 0);
}

/* The loop keeps timers that arrive in deadline order in sorted runs and
 * the others in a heap: a long in-order stretch, equal deadlines on both
 * sides (the runs' tails are later, so an equal one goes to the heap) and
 * cancellations anywhere must still fire in (deadline, schedule order). */
enum { MIXED = 240 }; /* within order_rec's 256 */

CF_TEST(timers_in_and_out_of_order_with_cancellations_keep_their_order) {
  (void)state;
  cf_loop *L = new_loop();
  order_rec rec = {.n = 0};
  order_item items[MIXED];
  cf_loop_call *h[MIXED];
  bool cancelled[MIXED] = {false};
  int64_t base = cf_now_ns() + CF_MSEC(30);
  uint32_t rnd = 12345;
  for (int i = 0; i < MIXED; i++) {
    int64_t off;
    if (i < 80) /* ascending, with repeats: the list */
      off = CF_USEC(100) * (i / 2);
    else if (i < 160) /* scrambled, some equal to earlier ones */
      off = CF_USEC(100) * ((i * 37) % 60);
    else { /* random, a few far ones, in between the rest */
      rnd = rnd * 1103515245u + 12345u;
      off = CF_USEC(100) * ((rnd >> 16) % 70);
    }
    items[i] = (order_item){&rec, i};
    rec.due[i] = base + off;
    assert_int_equal(cf_loop_call_at(L, rec.due[i], record_cb, &items[i], &h[i]),
                     0);
  }
  /* Cancel every seventh and a run of neighbours in the list's middle. */
  for (int i = 0; i < MIXED; i++)
    if (i % 7 == 3 || (i >= 30 && i < 36)) {
      assert_int_equal(cf_loop_call_cancel(h[i]), 0);
      cancelled[i] = true;
    }
  assert_int_equal(cf_loop_call_at(L, base + CF_MSEC(20), stop_cb, L, NULL),
                   0);
  assert_int_equal(cf_loop_run(L), 0);
  int expect = 0;
  for (int i = 0; i < MIXED; i++)
    expect += !cancelled[i];
  assert_int_equal(rec.n, expect);
  for (int k = 0; k < rec.n; k++) {
    int id = rec.seen[k];
    assert_false(cancelled[id]);
    assert_true(rec.at[k] >= rec.due[id]); /* never early */
    if (k > 0) {
      int prev = rec.seen[k - 1];
      assert_true(rec.due[prev] < rec.due[id] ||
                  (rec.due[prev] == rec.due[id] && prev < id));
    }
  }
  for (int i = 0; i < MIXED; i++)
    cf_loop_call_release(h[i]);
  /* Timers still queued in both places when the loop is freed go with
   * it (the leak checkers see the rest). */
  cf_loop_call *far;
  assert_int_equal(cf_loop_call_later(L, CF_SEC(60), record_cb, NULL, &far), 0);
  assert_int_equal(cf_loop_call_later(L, CF_SEC(30), record_cb, NULL, NULL), 0);
  assert_int_equal(cf_loop_call_later(L, CF_SEC(90), record_cb, NULL, NULL), 0);
  assert_int_equal(cf_loop_free(L), 0);
  cf_loop_call_release(far);
}

/* Equal deadlines where the later-scheduled timer sits in the structure
 * that a wrong tie-break would pick first: a heap timer scheduled before
 * a run's (every run's tail was later when it came; then one tail was
 * cancelled), and heads of two runs in the reverse order of the runs
 * (the loop keeps three runs: src/loop.c, NRUNS). */
CF_TEST(equal_deadlines_fire_in_schedule_order_across_runs_and_heap) {
  (void)state;
  cf_loop *L = new_loop();
  order_rec rec = {.n = 0};
  order_item it[8];
  cf_loop_call *h[8];
  int64_t base = cf_now_ns() + CF_MSEC(20);
  int64_t due[8] = {
      base + CF_MSEC(10), /* 0: run A (cancelled before 4) */
      base + CF_MSEC(9),  /* 1: run B (earlier than A's tail) */
      base + CF_MSEC(8),  /* 2: run C (cancelled before 5) */
      base + CF_MSEC(5),  /* 3: earlier than every tail: the heap */
      base + CF_MSEC(5),  /* 4: A, empty again: ties with 3, after it */
      base + CF_MSEC(9),  /* 5: A, behind 4: ties with B's head 1 */
      base + CF_MSEC(12), /* 6: A */
      base + CF_MSEC(9),  /* 7: B, behind 1: ties with 5, after it */
  };
  for (int i = 0; i < 8; i++) {
    it[i] = (order_item){&rec, i};
    rec.due[i] = due[i];
    if (i == 4)
      assert_int_equal(cf_loop_call_cancel(h[0]), 0);
    if (i == 5)
      assert_int_equal(cf_loop_call_cancel(h[2]), 0);
    assert_int_equal(cf_loop_call_at(L, due[i], record_cb, &it[i], &h[i]), 0);
  }
  assert_int_equal(cf_loop_call_at(L, base + CF_MSEC(30), stop_cb, L, NULL),
                   0);
  assert_int_equal(cf_loop_run(L), 0);
  static const int expect[] = {3, 4, 1, 5, 7, 6};
  assert_int_equal(rec.n, 6);
  for (int k = 0; k < 6; k++) {
    assert_int_equal(rec.seen[k], expect[k]);
    assert_true(rec.at[k] >= rec.due[rec.seen[k]]);
  }
  for (int i = 0; i < 8; i++)
    cf_loop_call_release(h[i]);
  assert_int_equal(cf_loop_free(L), 0);
}

static int calls;
static void count_cb(void *arg) {
  (void)arg;
  calls++;
}

CF_TEST(scheduled_calls_can_be_cancelled_until_they_run) {
  (void)state;
  cf_loop *L = new_loop();
  calls = 0;
  cf_loop_call *soon, *later, *ran;
  assert_int_equal(cf_loop_call_soon(L, count_cb, NULL, &soon), 0);
  assert_int_equal(cf_loop_call_later(L, CF_MSEC(5), count_cb, NULL, &later),
                   0);
  assert_int_equal(cf_loop_call_soon(L, count_cb, NULL, &ran), 0);
  assert_int_equal(cf_loop_call_cancel(soon), 0);
  assert_int_equal(cf_loop_call_cancel(later), 0);
  assert_int_equal(cf_loop_call_cancel(later), 0); /* again: no error */
  assert_int_equal(cf_loop_call_later(L, CF_MSEC(20), stop_cb, L, NULL), 0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(calls, 1);
  assert_int_equal(cf_loop_call_cancel(ran), CF_EBUSY);
  cf_loop_call_release(soon);
  cf_loop_call_release(later);
  cf_loop_call_release(ran);
  assert_int_equal(cf_loop_call_later(L, -1, count_cb, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_loop_call_soon(L, NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_loop_call_soon(NULL, count_cb, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_loop_free(L), 0);
}

typedef struct foreign_args {
  cf_loop *loop;
  cf_loop_call *h;
  int soon_rc, later_rc, cancel_rc, run_rc;
} foreign_args;

static void *foreign_calls(void *p) {
  foreign_args *a = p;
  a->soon_rc = cf_loop_call_soon(a->loop, count_cb, NULL, NULL);
  a->later_rc = cf_loop_call_later(a->loop, 0, count_cb, NULL, NULL);
  a->cancel_rc = cf_loop_call_cancel(a->h);
  return NULL;
}

CF_TEST(loop_thread_functions_refuse_other_threads) {
  (void)state;
  cf_loop *L = new_loop();
  calls = 0;
  foreign_args a = {.loop = L};
  assert_int_equal(cf_loop_call_soon(L, count_cb, NULL, &a.h), 0);
  pthread_join(spawn(foreign_calls, &a), NULL);
  assert_int_equal(a.soon_rc, CF_EWRONGTHREAD);
  assert_int_equal(a.later_rc, CF_EWRONGTHREAD);
  assert_int_equal(a.cancel_rc, CF_EWRONGTHREAD);
  assert_int_equal(cf_loop_call_soon(L, stop_cb, L, NULL), 0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(calls, 1); /* the foreign cancel changed nothing */
  cf_loop_call_release(a.h);
  assert_string_equal(cf_strerror(CF_EWRONGTHREAD),
                      "called from a thread that is not the loop's");
  assert_int_equal(cf_loop_free(L), 0);
}

enum { TS_THREADS = 8, TS_CALLS = 2000 };

typedef struct ts_state {
  cf_loop *loop;
  int last[TS_THREADS]; /* loop thread only */
  long total;
  int out_of_order;
} ts_state;

typedef struct ts_call {
  ts_state *s;
  int thread, seq;
} ts_call;

static void ts_cb(void *arg) {
  ts_call *c = arg;
  ts_state *s = c->s;
  if (c->seq != s->last[c->thread] + 1)
    s->out_of_order++;
  s->last[c->thread] = c->seq;
  if (++s->total == (long)TS_THREADS * TS_CALLS)
    cf_loop_stop(s->loop);
  free(c);
}

typedef struct ts_thread {
  ts_state *s;
  int id;
} ts_thread;

static void *ts_sender(void *p) {
  ts_thread *t = p;
  for (int i = 1; i <= TS_CALLS; i++) {
    ts_call *c = malloc(sizeof *c);
    *c = (ts_call){t->s, t->id, i};
    TCHECK(cf_loop_call_soon_threadsafe(t->s->loop, ts_cb, c) == 0);
  }
  return NULL;
}

CF_TEST(call_soon_threadsafe_from_many_threads_keeps_each_threads_order) {
  (void)state;
  ts_state s = {.loop = new_loop()};
  ts_thread th[TS_THREADS];
  pthread_t tid[TS_THREADS];
  for (int i = 0; i < TS_THREADS; i++) {
    th[i] = (ts_thread){&s, i};
    tid[i] = spawn(ts_sender, &th[i]);
  }
  assert_int_equal(cf_loop_run(s.loop), 0);
  for (int i = 0; i < TS_THREADS; i++)
    pthread_join(tid[i], NULL);
  assert_int_equal(s.total, (long)TS_THREADS * TS_CALLS);
  assert_int_equal(s.out_of_order, 0);
  for (int i = 0; i < TS_THREADS; i++)
    assert_int_equal(s.last[i], TS_CALLS);
  assert_int_equal(cf_loop_free(s.loop), 0);
  assert_int_equal(cf_loop_call_soon_threadsafe(NULL, ts_cb, NULL), CF_EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Tasks                                                                  */

static int answer_task(void *arg, cf_value *result) {
  (void)arg;
  TCHECK(cf_task_current() != NULL);
  TCHECK(cf_loop_current() != NULL);
  result->u.i = 42;
  return 0;
}

CF_TEST(run_main_returns_the_main_tasks_result) {
  (void)state;
  cf_future *f;
  assert_int_equal(cf_loop_run_main(answer_task, NULL, test_loop_opts(NULL), &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 42);
  cf_future_unref(f);
  assert_null(cf_loop_current());
  assert_null(cf_task_current());
  assert_int_equal(cf_loop_run_main(NULL, NULL, NULL, NULL), CF_EINVAL);
}

static int raising_task(void *arg, cf_value *result) {
  (void)result;
  /* The message survives a suspension while other tasks raise theirs. */
  int rc = cf_raise(-ENOENT, "no flag for %s", (const char *)arg);
  TCHECK(cf_sleep(CF_MSEC(5)) == 0);
  return rc;
}

static int raise_others(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return cf_raise(-EPERM, "other");
}

static int main_of_raisers(void *arg, cf_value *result) {
  (void)result;
  cf_future *f, *g[10];
  TCHECK(cf_loop_spawn(cf_loop_current(), raising_task, arg, &f) == 0);
  for (int i = 0; i < 10; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), raise_others, NULL, &g[i]) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  cf_error e = cf_future_get_error(f);
  TCHECK(e.code == -ENOENT);
  TCHECK(strcmp(e.message, "no flag for XX") == 0);
  for (int i = 0; i < 10; i++) {
    TCHECK(cf_future_wait(g[i], CF_FOREVER) == 0);
    TCHECK(strcmp(cf_future_get_error(g[i]).message, "other") == 0);
    cf_future_unref(g[i]);
  }
  cf_future_unref(f);
  return cf_raise(CF_ETASK, "main failed on purpose");
}

CF_TEST(task_errors_keep_their_messages_across_suspensions) {
  (void)state;
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_of_raisers, "XX", test_loop_opts(NULL), &f), CF_ETASK);
  assert_string_equal(cf_future_get_error(f).message, "main failed on purpose");
  cf_future_unref(f);
}

static cf_executor *pool;

static int pool_square(void *arg, cf_value *result) {
  intptr_t i = (intptr_t)arg;
  usleep(1000 * (unsigned)(i % 3));
  result->u.i = i * i;
  return 0;
}

static int await_pool_task(void *arg, cf_value *result) {
  cf_future *f;
  TCHECK(cf_executor_submit(pool, pool_square, arg, &f) == 0);
  const cf_value *v;
  int rc = cf_future_result(f, CF_FOREVER, &v);
  TCHECK(rc == 0);
  if (rc == 0)
    result->u.i = v->u.i;
  cf_future_unref(f);
  return rc;
}

static int main_awaits_pool(void *arg, cf_value *result) {
  (void)arg;
  enum { N = 200 };
  cf_future *fs[N];
  for (intptr_t i = 0; i < N; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), await_pool_task, (void *)i,
                         &fs[i]) == 0);
  int64_t sum = 0;
  for (int i = 0; i < N; i++) {
    const cf_value *v;
    TCHECK(cf_future_result(fs[i], CF_FOREVER, &v) == 0);
    sum += v->u.i;
    cf_future_unref(fs[i]);
  }
  result->u.i = sum;
  return 0;
}

CF_TEST(tasks_await_thread_pool_futures) {
  (void)state;
  pool = make_pool(4);
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_awaits_pool, NULL, test_loop_opts(NULL), &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  int64_t want = 0;
  for (int64_t i = 0; i < 200; i++)
    want += i * i;
  assert_int_equal(v->u.i, want);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(pool), 0);
}

typedef struct sleeper_rec {
  int64_t asked;
  int64_t woke;
} sleeper_rec;

static int sleeper(void *arg, cf_value *result) {
  (void)result;
  sleeper_rec *r = arg;
  int64_t t0 = cf_now_ns();
  TCHECK(cf_sleep(r->asked) == 0);
  r->woke = cf_now_ns() - t0;
  return 0;
}

static int main_sleepers(void *arg, cf_value *result) {
  (void)result;
  sleeper_rec *recs = arg;
  enum { N = 1000 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), sleeper, &recs[i], &fs[i]) == 0);
  for (int i = 0; i < N; i++) {
    TCHECK(cf_future_wait(fs[i], CF_FOREVER) == 0);
    cf_future_unref(fs[i]);
  }
  return 0;
}

CF_TEST(sleeping_tasks_wait_concurrently_and_never_wake_early) {
  (void)state;
  static sleeper_rec recs[1000];
  for (int i = 0; i < 1000; i++)
    recs[i].asked = CF_MSEC(100 + i % 7);
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_loop_run_main(main_sleepers, recs, test_loop_opts(NULL), NULL), 0);
  int64_t wall = cf_now_ns() - t0;
  for (int i = 0; i < 1000; i++)
    assert_true(recs[i].woke >= recs[i].asked);
  /* Sequential sleeps would take 100 s; concurrent ones about 0.1 s. The
   * bound only proves they overlapped. */
  assert_true(wall < CF_SEC(20));
}

/* ---------------------------------------------------------------------- */
/* Cancellation                                                           */

typedef struct cancel_rec {
  _Atomic int reached;
  int wait_rc;
  bool cleaned;
  bool suppress;
  int after_rc;
} cancel_rec;

static int cancellable(void *arg, cf_value *result) {
  cancel_rec *r = arg;
  atomic_store(&r->reached, 1);
  r->wait_rc = cf_sleep(CF_SEC(3600));
  r->cleaned = true; /* cleanup runs */
  if (r->suppress) {
    r->after_rc = cf_sleep(CF_MSEC(1)); /* waits work again */
    result->u.i = 7;
    return 0;
  }
  return r->wait_rc;
}

static int main_cancels(void *arg, cf_value *result) {
  (void)result;
  cancel_rec *r = arg;
  cf_future *f;
  TCHECK(cf_loop_spawn(cf_loop_current(), cancellable, r, &f) == 0);
  while (!atomic_load(&r->reached))
    TCHECK(cf_yield() == 0);
  TCHECK(cf_future_cancel(f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  result->u.i = cf_future_get_state(f);
  cf_future_unref(f);
  return 0;
}

CF_TEST(cancel_is_delivered_at_the_await_and_the_task_cleans_up) {
  (void)state;
  cancel_rec r = {.suppress = false};
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_cancels, &r, test_loop_opts(NULL), &f), 0);
  assert_int_equal(r.wait_rc, CF_ECANCELED);
  assert_true(r.cleaned);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, CF_CANCELLED);
  cf_future_unref(f);
}

CF_TEST(a_task_may_suppress_its_cancellation) {
  (void)state;
  cancel_rec r = {.suppress = true};
  cf_future *f;
  assert_int_equal(cf_loop_run_main(main_cancels, &r, test_loop_opts(NULL), &f), 0);
  assert_int_equal(r.wait_rc, CF_ECANCELED);
  assert_int_equal(r.after_rc, 0); /* delivered once */
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, CF_FINISHED);
  cf_future_unref(f);
}

static _Atomic int never_ran_flag;
static int must_not_run(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  atomic_store(&never_ran_flag, 1);
  return 0;
}

static int main_cancels_pending(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_future *f;
  TCHECK(cf_loop_spawn(cf_loop_current(), must_not_run, NULL, &f) == 0);
  TCHECK(cf_future_cancel(f) == 0);
  TCHECK(cf_future_cancelled(f));
  TCHECK(cf_sleep(CF_MSEC(5)) == 0);
  cf_future_unref(f);
  return 0;
}

CF_TEST(a_task_cancelled_before_it_starts_never_runs) {
  (void)state;
  atomic_store(&never_ran_flag, 0);
  assert_int_equal(cf_loop_run_main(main_cancels_pending, NULL, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(atomic_load(&never_ran_flag), 0);
}

typedef struct xcancel {
  cf_future *f;
  cancel_rec *r;
} xcancel;

static void *cancel_from_thread(void *p) {
  xcancel *x = p;
  while (!atomic_load(&x->r->reached))
    usleep(100);
  usleep(2000);
  TCHECK(cf_future_cancel(x->f) == 0);
  return NULL;
}

CF_TEST(another_thread_cancels_a_suspended_task) {
  (void)state;
  cf_loop *L = new_loop();
  cancel_rec r = {.suppress = false};
  xcancel x = {.r = &r};
  assert_int_equal(cf_loop_spawn(L, cancellable, &r, &x.f), 0);
  pthread_t t = spawn(cancel_from_thread, &x);
  assert_int_equal(cf_loop_run_until(L, x.f), 0);
  pthread_join(t, NULL);
  assert_true(cf_future_cancelled(x.f));
  assert_int_equal(r.wait_rc, CF_ECANCELED);
  cf_future_unref(x.f);
  assert_int_equal(cf_loop_free(L), 0);
}

static int cleanup_on_free(void *arg, cf_value *result) {
  (void)result;
  cancel_rec *r = arg;
  atomic_store(&r->reached, 1);
  r->wait_rc = cf_sleep(CF_SEC(3600));
  /* Cleanup may still wait (briefly) during the loop's shutdown. */
  r->after_rc = cf_sleep(CF_MSEC(1));
  r->cleaned = true;
  return r->wait_rc;
}

CF_TEST(freeing_a_loop_cancels_its_tasks_and_lets_them_clean_up) {
  (void)state;
  cf_loop *L = new_loop();
  cancel_rec r = {.suppress = false};
  cf_future *f, *g;
  assert_int_equal(cf_loop_spawn(L, cleanup_on_free, &r, &f), 0);
  assert_int_equal(cf_loop_spawn(L, must_not_run, NULL, &g), 0);
  /* Run until the first task sleeps, then stop with g still queued?  g
   * starts right after f; cancel it first to keep it from running. */
  assert_int_equal(cf_future_cancel(g), 0);
  assert_int_equal(cf_loop_call_later(L, CF_MSEC(10), stop_cb, L, NULL), 0);
  atomic_store(&never_ran_flag, 0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(atomic_load(&r.reached), 1);
  assert_int_equal(cf_loop_free(L), 0);
  assert_true(r.cleaned);
  assert_int_equal(r.wait_rc, CF_ECANCELED);
  assert_int_equal(r.after_rc, 0);
  assert_true(cf_future_cancelled(f));
  assert_true(cf_future_cancelled(g));
  assert_int_equal(atomic_load(&never_ran_flag), 0);
  cf_future_unref(f);
  cf_future_unref(g);
}

/* Cancelled by the loop's free, it asks the loop to stop (a helper's
 * cleanup might), then waits once more before it ends. */
static int stop_in_cleanup(void *arg, cf_value *result) {
  (void)result;
  cancel_rec *r = arg;
  atomic_store(&r->reached, 1);
  r->wait_rc = cf_sleep(CF_SEC(3600));
  cf_loop_stop(cf_loop_current());
  r->after_rc = cf_sleep(CF_MSEC(1));
  r->cleaned = true;
  return r->wait_rc;
}

CF_TEST(sleep_until_a_deadline_long_past_returns_at_once_outside_a_task) {
  (void)state;
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_sleep_until(INT64_MIN), 0); /* no overflow */
  assert_int_equal(cf_sleep_until(INT64_MIN + 1), 0);
  assert_int_equal(cf_sleep_until(t0 - CF_SEC(1)), 0);
  assert_true(cf_now_ns() - t0 < CF_SEC(10));
}

CF_TEST(a_stop_asked_while_the_loop_is_freed_does_not_cut_the_free_short) {
  (void)state;
  cf_loop *L = new_loop();
  cancel_rec r = {.suppress = false};
  cf_future *f;
  assert_int_equal(cf_loop_spawn(L, stop_in_cleanup, &r, &f), 0);
  assert_int_equal(cf_loop_call_later(L, CF_MSEC(10), stop_cb, L, NULL), 0);
  assert_int_equal(cf_loop_run(L), 0);
  assert_int_equal(atomic_load(&r.reached), 1);
  assert_int_equal(cf_loop_free(L), 0); /* runs the task to its end */
  assert_true(r.cleaned);
  assert_int_equal(r.wait_rc, CF_ECANCELED);
  assert_int_equal(r.after_rc, 0);
  assert_true(cf_future_cancelled(f));
  cf_future_unref(f);
}

/* ---------------------------------------------------------------------- */
/* Waiting on many futures, deadlines                                     */

static int pool_sleep_ms(void *arg, cf_value *result) {
  usleep(1000 * (unsigned)(intptr_t)arg);
  result->u.i = (intptr_t)arg;
  return 0;
}

static int main_waits_many(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_future *fs[3];
  TCHECK(cf_executor_submit(pool, pool_sleep_ms, (void *)(intptr_t)300,
                            &fs[0]) == 0);
  TCHECK(cf_executor_submit(pool, pool_sleep_ms, (void *)(intptr_t)5,
                            &fs[1]) == 0);
  TCHECK(cf_executor_submit(pool, pool_sleep_ms, (void *)(intptr_t)600,
                            &fs[2]) == 0);
  /* A task on the same loop keeps running while main waits: the wait
   * suspends main, it does not block the thread. */
  size_t ndone = 0;
  TCHECK(cf_wait(fs, 3, CF_FOREVER, CF_FIRST_COMPLETED, NULL, &ndone, NULL,
                 NULL) == 0);
  TCHECK(ndone >= 1 && cf_future_done(fs[1]));
  /* as_completed in the order they finish. */
  cf_as_completed *it;
  TCHECK(cf_as_completed_new(fs, 3, CF_FOREVER, &it) == 0);
  cf_future *got[3];
  for (int i = 0; i < 3; i++)
    TCHECK(cf_as_completed_next(it, &got[i]) == 1);
  TCHECK(got[0] == fs[1] && got[1] == fs[0] && got[2] == fs[2]);
  for (int i = 0; i < 3; i++)
    cf_future_unref(got[i]);
  cf_future *none;
  TCHECK(cf_as_completed_next(it, &none) == 0);
  cf_as_completed_free(it);
  for (int i = 0; i < 3; i++)
    cf_future_unref(fs[i]);
  return 0;
}

CF_TEST(tasks_wait_on_many_futures_with_wait_and_as_completed) {
  (void)state;
  pool = make_pool(3);
  assert_int_equal(cf_loop_run_main(main_waits_many, NULL, test_loop_opts(NULL), NULL), 0);
  assert_int_equal(cf_executor_free(pool), 0);
}

typedef struct acount {
  _Atomic long v;
} acount;

static int ticker(void *arg, cf_value *result) {
  (void)result;
  acount *ticks = arg;
  while (cf_sleep(CF_MSEC(1)) == 0)
    atomic_fetch_add(&ticks->v, 1);
  return CF_ECANCELED;
}

static int main_deadlines(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  static acount ticks;
  cf_future *tick;
  TCHECK(cf_loop_spawn(cf_loop_current(), ticker, &ticks, &tick) == 0);
  cf_future *never;
  TCHECK(cf_future_new(&never) == 0);
  int64_t t0 = cf_now_ns();
  TCHECK(cf_future_wait(never, CF_MSEC(50)) == CF_ETIMEDOUT);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(50));
  /* The loop ran the ticker meanwhile. */
  TCHECK(atomic_load(&ticks.v) > 0);
  size_t nnot = 0;
  t0 = cf_now_ns();
  TCHECK(cf_wait(&never, 1, CF_MSEC(30), CF_ALL_COMPLETED, NULL, NULL, NULL,
                 &nnot) == 0);
  TCHECK(nnot == 1);
  TCHECK(cf_now_ns() - t0 >= CF_MSEC(30));
  /* Waiting for itself is refused. */
  TCHECK(cf_future_wait(cf_task_current(), CF_MSEC(1)) == CF_EDEADLK);
  cf_future_unref(never);
  TCHECK(cf_future_cancel(tick) == 0);
  TCHECK(cf_future_wait(tick, CF_FOREVER) == 0);
  TCHECK(cf_future_cancelled(tick));
  cf_future_unref(tick);
  return 0;
}

CF_TEST(waits_in_tasks_honour_deadlines_and_refuse_self_waits) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_deadlines, NULL, test_loop_opts(NULL), NULL), 0);
}

static int quits_as_cancelled(void *arg, cf_value *result) {
  (void)arg;
  result->u.ptr = malloc(32); /* released: the task did not succeed */
  result->dtor = free;
  return cf_raise(CF_ECANCELED, "gave up after %d tries", 3);
}

static int main_task_quits_as_cancelled(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  cf_future *f;
  TCHECK(cf_loop_spawn(cf_loop_current(), quits_as_cancelled, NULL, &f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  TCHECK(cf_future_get_state(f) == CF_CANCELLED);
  TCHECK(cf_future_cancelled(f));
  TCHECK(cf_future_result(f, 0, NULL) == CF_ECANCELED);
  cf_future_unref(f);
  return 0;
}

/* A task that returns the cancelled code ends CANCELLED, as a coroutine
 * that raises CancelledError does; its value and its message are freed
 * (LSan), its future published once. */
CF_TEST(a_task_returning_the_cancelled_code_ends_cancelled) {
  (void)state;
  assert_int_equal(cf_loop_run_main(main_task_quits_as_cancelled, NULL,
                                    test_loop_opts(NULL), NULL),
                   0);
}

/* ---------------------------------------------------------------------- */
/* Done callbacks                                                         */

typedef struct cb_rec {
  pthread_t loop_thread;
  _Atomic int ran;
  bool on_loop_thread;
  bool returned_first;
  bool add_returned;
} cb_rec;

static int on_done_cb(cf_future *f, void *arg) {
  (void)f;
  cb_rec *r = arg;
  r->on_loop_thread = pthread_equal(pthread_self(), r->loop_thread);
  r->returned_first = r->add_returned;
  atomic_fetch_add(&r->ran, 1);
  return 0;
}

static int main_callbacks(void *arg, cf_value *result) {
  (void)result;
  cb_rec *r = arg;
  r[0].loop_thread = r[1].loop_thread = pthread_self();
  cf_future *f;
  TCHECK(cf_executor_submit(pool, pool_sleep_ms, (void *)(intptr_t)20, &f) ==
         0);
  TCHECK(cf_future_add_done_callback(f, on_done_cb, &r[0]) == 0);
  r[0].add_returned = true;
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  /* On a future that is done already: still scheduled, not inline. */
  TCHECK(cf_future_add_done_callback(f, on_done_cb, &r[1]) == 0);
  TCHECK(atomic_load(&r[1].ran) == 0);
  r[1].add_returned = true;
  while (atomic_load(&r[0].ran) == 0 || atomic_load(&r[1].ran) == 0)
    TCHECK(cf_yield() == 0);
  cf_future_unref(f);
  return 0;
}

CF_TEST(done_callbacks_added_on_the_loop_run_on_the_loop_thread) {
  (void)state;
  pool = make_pool(2);
  cb_rec r[2];
  memset(r, 0, sizeof r);
  assert_int_equal(cf_loop_run_main(main_callbacks, r, test_loop_opts(NULL), NULL), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(atomic_load(&r[i].ran), 1);
    assert_true(r[i].on_loop_thread);
    assert_true(r[i].returned_first);
  }
  assert_int_equal(cf_executor_free(pool), 0);
}

/* ---------------------------------------------------------------------- */
/* The loop as an executor, misuse                                        */

static cf_future *spawned_on_other;

static int twice_later(void *arg, cf_value *result) {
  result->u.i = 2 * (intptr_t)arg;
  return cf_yield();
}

static int nested_run(void *arg, cf_value *result) {
  (void)result;
  cf_loop *other = arg;
  TCHECK(cf_loop_run(cf_loop_current()) == CF_EBUSY);
  TCHECK(cf_loop_run(other) == CF_EBUSY);
  TCHECK(cf_loop_run_main(answer_task, NULL, test_loop_opts(NULL), NULL) == CF_EBUSY);
  TCHECK(cf_loop_free(cf_loop_current()) == CF_EBUSY);
  TCHECK(cf_executor_free(cf_loop_executor(cf_loop_current())) == CF_EDEADLK);
  /* Another loop cannot be driven from here: a free or a waiting
   * shutdown is refused and leaves it open for tasks; a shutdown without
   * a wait is posted to it. */
  TCHECK(cf_loop_free(other) == CF_EBUSY);
  cf_executor *ex = cf_loop_executor(other);
  TCHECK(cf_executor_free(ex) == CF_EDEADLK); /* refused before it claims */
  TCHECK(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER) == CF_EBUSY);
  TCHECK(cf_loop_spawn(other, twice_later, (void *)(intptr_t)4,
                       &spawned_on_other) == 0);
  TCHECK(cf_executor_shutdown(ex, 0, CF_FOREVER) == 0);
  TCHECK(cf_loop_spawn(other, twice_later, NULL, NULL) == CF_ESHUTDOWN);
  return 0;
}

CF_TEST(one_loop_per_thread_and_no_free_from_inside) {
  (void)state;
  cf_loop *other = new_loop();
  assert_int_equal(cf_loop_run_main(nested_run, other, test_loop_opts(NULL), NULL), 0);
  cf_future *f = spawned_on_other; /* before the shutdown: it still runs */
  assert_non_null(f);
  assert_int_equal(cf_loop_run_until(other, f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 8);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(other), 0);
}

static int twice(void *arg, cf_value *result) {
  result->u.i = 2 * (intptr_t)arg;
  return cf_yield();
}

CF_TEST(the_loop_is_an_executor_for_map_and_stats) {
  (void)state;
  cf_loop *L = new_loop();
  cf_executor *ex = cf_loop_executor(L);
  assert_int_equal(cf_executor_get_max_workers(ex), 1);
  cf_future *f;
  assert_int_equal(cf_executor_submit(ex, twice, (void *)(intptr_t)21, &f), 0);
  assert_int_equal(cf_loop_run_until(L, f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 42);
  cf_future_unref(f);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(ex, &st), 0);
  assert_int_equal(st.submitted, 1);
  assert_int_equal(st.completed, 1);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.queued, 0);
  /* Shutdown from this thread while the loop is not running drives it
   * until the queued tasks end. */
  for (intptr_t i = 0; i < 10; i++)
    assert_int_equal(cf_executor_submit(ex, twice, (void *)i, NULL), 0);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_SEC(30)), 0);
  assert_int_equal(cf_executor_get_stats(ex, &st), 0);
  assert_int_equal(st.submitted, 11);
  assert_int_equal(st.completed, 11);
  assert_int_equal(cf_executor_submit(ex, twice, NULL, NULL), CF_ESHUTDOWN);
  assert_int_equal(cf_loop_free(L), 0);
}

CF_MAP_CHUNK_FN(twice_chunks, twice)

/* One task per item, chunks, and chunks through a runner (explicit and
 * adaptive): the same sum each time, which it returns. */
static int map_main(void *arg, cf_value *result) {
  (void)arg;
  const cf_map_opts opts[] = {{.chunksize = 1},
                              {.chunksize = 100},
                              {.chunksize = 100, .chunk_fn = twice_chunks},
                              {.chunk_fn = twice_chunks}};
  int64_t first = -1;
  for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
    cf_range_iter items = cf_range_iter_init(0, 1000, 1);
    cf_map *m;
    TCHECK(cf_executor_map(cf_loop_executor(cf_loop_current()), twice,
                           cf_range_iter_next, &items, &opts[k], &m) == 0);
    cf_value val;
    int64_t sum = 0, n = 0;
    int rc;
    while ((rc = cf_map_next(m, &val)) == 1) {
      sum += val.u.i;
      n++;
    }
    cf_map_free(m);
    TCHECK(rc == 0 && n == 1000);
    TCHECK(first < 0 || sum == first);
    first = sum;
  }
  result->u.i = first;
  return 0;
}

CF_TEST(a_task_maps_over_its_own_loop) {
  (void)state;
  cf_future *f;
  assert_int_equal(cf_loop_run_main(map_main, NULL, test_loop_opts(NULL), &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 999 * 1000);
  cf_future_unref(f);
}

typedef struct runner {
  cf_loop *loop;
  int rc;
} runner;

static void *run_loop_thread(void *p) {
  runner *r = p;
  r->rc = cf_loop_run(r->loop);
  return NULL;
}

static int short_sleep(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return cf_sleep(CF_MSEC(20));
}

CF_TEST(other_threads_spawn_on_and_shut_down_a_running_loop) {
  (void)state;
  runner r = {.loop = new_loop()};
  pthread_t t = spawn(run_loop_thread, &r);
  cf_future *fs[50];
  for (int i = 0; i < 50; i++)
    assert_int_equal(cf_loop_spawn(r.loop, short_sleep, NULL, &fs[i]), 0);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(cf_future_wait(fs[i], SOON), 0);
    assert_int_equal(cf_future_get_error(fs[i]).code, 0);
    cf_future_unref(fs[i]);
  }
  cf_executor *ex = cf_loop_executor(r.loop);
  for (int i = 0; i < 20; i++)
    assert_int_equal(cf_executor_submit(ex, short_sleep, NULL, NULL), 0);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, SOON), 0);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(ex, &st), 0);
  assert_int_equal(st.completed, 70);
  assert_int_equal(cf_loop_stop(r.loop), 0);
  pthread_join(t, NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(cf_loop_free(r.loop), 0);
}

static int yielder(void *arg, cf_value *result) {
  (void)result;
  for (int i = 0; i < 3; i++)
    TCHECK(cf_yield() == 0);
  atomic_fetch_add(&((acount *)arg)->v, 1);
  return 0;
}

static int main_many(void *arg, cf_value *result) {
  (void)result;
  long n = (long)(intptr_t)arg;
  static acount done;
  atomic_store(&done.v, 0);
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  for (long i = 0; i < n; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), yielder, &done, &fs[i]) ==
           0);
  for (long i = 0; i < n; i++) {
    TCHECK(cf_future_wait(fs[i], CF_FOREVER) == 0);
    cf_future_unref(fs[i]);
  }
  free(fs);
  return atomic_load(&done.v) == n ? 0 : CF_ETASK;
}

CF_TEST(ten_thousand_tasks_suspended_at_once) {
  (void)state;
  /* Fewer under the sanitizers: ThreadSanitizer keeps ~270 KiB of state
   * per fiber. */
  cf_loop_opts o = {.stack_size = 64 * 1024};
  assert_int_equal(cf_loop_run_main(main_many, (void *)(intptr_t)scaled(10000),
                                    test_loop_opts(&o), NULL),
                   0);
}

static int await_pool_nop(void *arg, cf_value *result) {
  (void)result;
  cf_future *f;
  TCHECK(cf_executor_submit(arg, task_nop, NULL, &f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  cf_future_unref(f);
  return 0;
}

static int main_pool_waiters(void *arg, cf_value *result) {
  (void)result;
  static cf_future *fs[8];
  for (int i = 0; i < 8; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), await_pool_nop, arg, &fs[i]) ==
           0);
  TCHECK(cf_gather(fs, 8, 0, CF_FOREVER) == 0);
  for (int i = 0; i < 8; i++)
    cf_future_unref(fs[i]);
  return 0;
}

/* Pool threads wake the loop's tasks right up to the moment the loop is
 * freed: a wake-up still on its way must never reach a freed loop. */
CF_TEST(stress_loops_freed_while_other_threads_wake_their_tasks) {
  (void)state;
  cf_executor *p = make_pool(2);
  long n = scaled(2000);
  for (long k = 0; k < n; k++)
    assert_int_equal(cf_loop_run_main(main_pool_waiters, p,
                                      test_loop_opts(NULL), NULL),
                     0);
  assert_int_equal(cf_executor_free(p), 0);
}

static int keep_yielding(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  int rc;
  while ((rc = cf_yield()) == 0)
    ;
  return rc;
}

static int pool_5ms(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  usleep(5000); /* long enough for the waiting task to be suspended */
  return 0;
}

static int await_one_pool_nop(void *arg, cf_value *result) {
  (void)result;
  cf_future *f;
  TCHECK(cf_executor_submit(arg, pool_5ms, NULL, &f) == 0);
  TCHECK(cf_future_wait(f, CF_FOREVER) == 0);
  cf_future_unref(f);
  return 0;
}

/* A pool thread pauses (20 ms) after making its wake-up visible and
 * before sending it; the loop meanwhile runs the task to its end and is
 * freed. The free must wait for the wake-up to be sent, or the thread
 * sends it to a closed loop (libuv aborts on the closed descriptor, or
 * wakes whichever loop got the descriptor next). */
CF_TEST(a_loop_freed_during_a_late_wake_up_waits_for_it) {
  (void)state;
  cf_executor *p = make_pool(1);
  for (int k = 0; k < 5; k++) {
    cf_loop *L;
    assert_int_equal(cf_loop_new(test_loop_opts(NULL), &L), 0);
    cf_future *f, *busy;
    assert_int_equal(cf_loop_spawn(L, await_one_pool_nop, p, &f), 0);
    /* Keeps the loop turning, so that it drains the pushed node without
     * waiting for the wake-up. */
    assert_int_equal(cf_loop_spawn(L, keep_yielding, NULL, &busy), 0);
    int paused = atomic_load(&cf__fault_paused);
    cf__fault_arm(CF__FAULT_POST_PAUSE, 0, 1);
    assert_int_equal(cf_loop_run_until(L, f), 0);
    cf_future_unref(f);
    assert_int_equal(cf_loop_free(L), 0); /* cancels busy; waits the post */
    assert_true(cf_future_cancelled(busy));
    cf_future_unref(busy);
    /* The pause was taken, by the pool thread's post. */
    assert_true(atomic_load(&cf__fault_paused) > paused);
    cf__fault_arm(CF__FAULT_POST_PAUSE, 0, 0);
  }
  assert_int_equal(cf_executor_free(p), 0);
}

/* ---------------------------------------------------------------------- */
/* Stacks                                                                 */

static int frames_ok;

/* Recurses d deep, each frame with a pattern of its own, suspends at the
 * bottom (other tasks run on the same shared stack meanwhile), then
 * checks every frame on the way back. */
static int deep(int id, int d) {
  volatile unsigned char pat[96];
  for (size_t i = 0; i < sizeof pat; i++)
    pat[i] = (unsigned char)(id * 31 + d * 7 + (int)i);
  int bad = 0;
  if (d > 0) {
    bad = deep(id, d - 1);
  } else {
    for (int k = 0; k < 3; k++)
      TCHECK(k % 2 == 0 ? cf_yield() == 0 : cf_sleep(CF_USEC(200)) == 0);
  }
  for (size_t i = 0; i < sizeof pat; i++)
    if (pat[i] != (unsigned char)(id * 31 + d * 7 + (int)i))
      bad++;
  return bad;
}

static int deep_task(void *arg, cf_value *result) {
  int id = (int)(intptr_t)arg;
  result->u.i = deep(id, 1 + id % 60);
  return 0;
}

static int main_deep(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  enum { N = 300 };
  cf_future **fs = calloc(N, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  for (intptr_t i = 0; i < N; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), deep_task, (void *)i, &fs[i]) ==
           0);
  TCHECK(cf_gather(fs, N, 0, CF_FOREVER) == 0);
  int bad = 0;
  for (int i = 0; i < N; i++) {
    const cf_value *v;
    TCHECK(cf_future_result(fs[i], 0, &v) == 0);
    bad += (int)v->u.i;
    cf_future_unref(fs[i]);
  }
  free(fs);
  frames_ok = bad == 0;
  return 0;
}

CF_TEST(tasks_on_a_shared_stack_keep_their_frames_across_switches) {
  (void)state;
  cf_loop_opts o = {.shared_stack = true};
  frames_ok = 0;
  assert_int_equal(cf_loop_run_main(main_deep, NULL, &o, NULL), 0);
  assert_true(frames_ok);
}

static int tiny_sleeper(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return cf_sleep(CF_MSEC(20));
}

static int main_hundred_k(void *arg, cf_value *result) {
  (void)result;
  long n = (long)(intptr_t)arg;
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  if (fs == NULL)
    return CF_ENOMEM;
  for (long i = 0; i < n; i++)
    TCHECK(cf_loop_spawn(cf_loop_current(), tiny_sleeper, NULL, &fs[i]) == 0);
  TCHECK(cf_gather(fs, (size_t)n, 0, CF_FOREVER) == 0);
  for (long i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  return 0;
}

CF_TEST(a_hundred_thousand_tasks_sleep_at_once_on_a_shared_stack) {
  (void)state;
#ifdef CF_CORO_UCONTEXT
  skip(); /* no shared stack with the ucontext switch (own stacks) */
#endif
  /* With own stacks this many would exceed the kernel's mapping limit
   * (two mappings per stack, 65530 by default). */
  cf_loop_opts o = {.shared_stack = true};
  long n = scaled(100000);
#if defined(__SANITIZE_THREAD__)
  /* ThreadSanitizer counts each fiber as a thread and stops at 8128. */
  if (n > 4000)
    n = 4000;
#endif
  cf_loop *L;
  assert_int_equal(cf_loop_new(&o, &L), 0);
  cf_future *f;
  assert_int_equal(cf_loop_spawn(L, main_hundred_k, (void *)(intptr_t)n, &f),
                   0);
  assert_int_equal(cf_loop_run_until(L, f), 0);
  assert_int_equal(cf_future_get_error(f).code, 0);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(cf_loop_executor(L), &st), 0);
  assert_int_equal(st.completed, (uint64_t)n + 1);
  assert_int_equal(st.failed, 0);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(L), 0);
}

static int overflowing(void *arg, cf_value *result) {
  (void)arg;
  result->u.i = deep_recursion(1 << 20);
  return 0;
}

static void child_overflows(void *arg) {
  (void)arg;
  cf_loop_opts o = {.stack_size = 64 * 1024};
  cf_loop_run_main(overflowing, NULL, test_loop_opts(&o), NULL);
  _exit(0); /* not reached */
}

CF_TEST(a_stack_overflow_dies_with_a_message) {
  (void)state;
  expect_child_dies_saying(child_overflows, NULL,
                           "overflowed its stack of 65536 bytes");
}

CF_TEST(bad_options_and_arguments_are_refused) {
  (void)state;
  cf_loop *L;
  cf_loop_opts o = {.stack_size = 4096};
  assert_int_equal(cf_loop_new(&o, &L), CF_EINVAL);
  assert_int_equal(cf_loop_new(NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_loop_free(NULL), 0);
  assert_int_equal(cf_loop_run(NULL), CF_EINVAL);
  assert_int_equal(cf_loop_stop(NULL), CF_EINVAL);
  L = new_loop();
  assert_int_equal(cf_loop_run_until(L, NULL), CF_EINVAL);
  assert_int_equal(cf_loop_spawn(L, NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_sleep(-1), CF_EINVAL);
  assert_int_equal(cf_yield(), 0); /* outside a task */
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_sleep(CF_MSEC(2)), 0); /* blocks outside a task */
  assert_true(cf_now_ns() - t0 >= CF_MSEC(2));
  assert_int_equal(cf_loop_free(L), 0);
}

CF_TEST_MAIN()
