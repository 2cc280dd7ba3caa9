/* test_thread_pool.c - the thread-pool executor. */
#include <stdlib.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "executor_int.h"
#include "fault.h"
#include "support.h"

static cf_executor_stats stats(cf_executor *ex) {
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(ex, &st), 0);
  return st;
}

static cf_future *submit(cf_executor *ex, cf_task_fn fn, void *arg) {
  cf_future *f = NULL;
  assert_int_equal(cf_executor_submit(ex, fn, arg, &f), 0);
  assert_non_null(f);
  return f;
}

/* A gate that blocked tasks wait on, and a count of those that started. */
typedef struct hold {
  gate g;
  counter started;
} hold;

static void hold_init(hold *h) {
  gate_init(&h->g);
  counter_init(&h->started);
}

static void hold_destroy(hold *h) {
  gate_destroy(&h->g);
  counter_destroy(&h->started);
}

typedef struct blocker {
  gate *g;
  counter *started;
} blocker;

static int task_block(void *arg, cf_value *result) {
  blocker *b = arg;
  counter_add(b->started, 1);
  TCHECK(gate_wait(b->g));
  result->u.i = 1;
  return 0;
}

static blocker blockers[256];
static int nblockers; /* next free slot: a slot is never reused in a case */

/* Occupies n workers with tasks blocked on h's gate (libuv's
 * saturate_threadpool) and waits until all have started. */
static void saturate(cf_executor *ex, hold *h, cf_future **fs, int n) {
  long before = counter_get(&h->started);
  for (int i = 0; i < n; i++) {
    blocker *b = &blockers[nblockers++];
    b->g = &h->g;
    b->started = &h->started;
    fs[i] = submit(ex, task_block, b);
  }
  assert_true(counter_wait_ge(&h->started, before + n));
}

static void unref_all(cf_future **fs, int n) {
  for (int i = 0; i < n; i++)
    cf_future_unref(fs[i]);
}

/* ---- creation and options ------------------------------------------------ */

CF_TEST(defaults_and_lazy_start) {
  (void)state;
  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  int def = cf_thread_pool_default_workers();
  /* Python: min(32, (os.process_cpu_count() or 1) + 4), the CPUs this
   * process may run on. */
  cpu_set_t set;
  CPU_ZERO(&set);
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  int cpus = CPU_COUNT(&set);
  assert_int_equal(def, cpus + 4 < 32 ? cpus + 4 : 32);
  assert_int_equal(cf_executor_get_max_workers(ex), def);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.workers, 0); /* nothing started before a submit */
  assert_int_equal(st.max_workers, (uint32_t)def);
  cf_future *f = submit(ex, task_return_arg, (void *)5);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 5);
  assert_int_equal(stats(ex).workers, 1);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(bad_options) {
  (void)state;
  cf_executor *ex = (cf_executor *)&ex;
  cf_thread_pool_opts o;
  memset(&o, 0, sizeof o);
  assert_int_equal(cf_thread_pool_new(NULL, NULL), CF_EINVAL);
  o.max_workers = -1;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  assert_null(ex);
  o.max_workers = CF_THREAD_POOL_MAX_WORKERS + 1;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  o.max_workers = CF_THREAD_POOL_MAX_WORKERS; /* accepted; starts lazily */
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  assert_int_equal(cf_executor_get_max_workers(ex), CF_THREAD_POOL_MAX_WORKERS);
  assert_int_equal(cf_executor_free(ex), 0);
  o.max_workers = 1;
  o.max_queued = -3;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  o.max_queued = 0;
  o.stack_size = 1024;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  o.stack_size = 0;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_ENOMEM);
  cf__fault_arm(CF__FAULT_ALLOC, 1, 1);
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_ENOMEM);
  o.stack_size = 256 * 1024;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  cf_future *f = submit(ex, task_return_arg, (void *)1);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(bad_submissions) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f = (cf_future *)ex;
  assert_int_equal(cf_executor_submit(ex, NULL, NULL, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_executor_submit(NULL, task_nop, NULL, &f), CF_EINVAL);
  cf_task t = {.fn = task_nop, .arg = NULL, .arg_dtor = NULL};
  assert_int_equal(cf_executor_submit_task(ex, NULL, 0, &f), CF_EINVAL);
  assert_int_equal(cf_executor_submit_task(ex, &t, -1, &f), CF_EINVAL);
  t.fn = NULL;
  assert_int_equal(cf_executor_submit_task(ex, &t, 0, &f), CF_EINVAL);
  assert_int_equal(cf_executor_get_stats(ex, NULL), CF_EINVAL);
  assert_int_equal(cf_executor_get_stats(NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_executor_get_max_workers(NULL), CF_EINVAL);
  assert_int_equal(cf_executor_shutdown(NULL, CF_SHUTDOWN_WAIT, CF_FOREVER),
                   CF_EINVAL);
  assert_int_equal(cf_executor_free(NULL), CF_EINVAL);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), CF_ENOMEM);
  assert_int_equal(stats(ex).submitted, 0);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(task_errors_surface_in_the_future) {
  (void)state;
  cf_executor *ex = make_pool(2);
  cf_future *f = submit(ex, task_fail, (void *)(intptr_t)-ENOENT);
  const cf_value *v = (const cf_value *)f;
  assert_int_equal(cf_future_result(f, SOON, &v), -ENOENT);
  assert_null(v);
  cf_error e = cf_future_get_error(f);
  const char *msg = e.message;
  assert_int_equal(e.code, -ENOENT);
  assert_string_equal(msg, "task failed on purpose with -2");
  char buf[128];
  cf_future_describe(f, buf, sizeof buf);
  assert_non_null(strstr(buf, "state=finished raised ENOENT"));
  cf_future_unref(f);
  /* A positive status is a failure too. */
  f = submit(ex, task_fail, (void *)(intptr_t)3);
  assert_int_equal(cf_future_result(f, SOON, NULL), CF_ETASK);
  cf_future_unref(f);
  /* Counters are exact once the pool is idle (not at the instant a
   * future completes). */
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.failed, 2);
  assert_int_equal(st.completed, 0);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_fail_without_message(void *arg, cf_value *result) {
  (void)arg;
  result->u.ptr = malloc(16); /* released by the library on failure */
  result->dtor = free;
  return -EIO;
}

CF_TEST(failed_task_value_is_released) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f = submit(ex, task_fail_without_message, NULL);
  assert_int_equal(cf_future_wait(f, SOON), 0);
  cf_error e = cf_future_get_error(f);
  const char *msg = e.message;
  assert_int_equal(e.code, -EIO);
  assert_string_equal(msg, cf_strerror(-EIO));
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0); /* LSan: no leak */
}

/* A task that fails with the cancelled code (say, a wait of its own was
 * cancelled) failed: its future ends FINISHED with CF_ECANCELED, not
 * CANCELLED, as a Python work item that raises CancelledError ends with
 * that exception. Its message survives. */
CF_TEST(task_failing_with_the_cancelled_code_is_finished_not_cancelled) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f = submit(ex, task_fail, (void *)(intptr_t)CF_ECANCELED);
  assert_int_equal(cf_future_result(f, SOON, NULL), CF_ECANCELED);
  assert_int_equal(cf_future_get_state(f), CF_FINISHED);
  assert_false(cf_future_cancelled(f));
  cf_error e = cf_future_get_error(f);
  assert_int_equal(e.code, CF_ECANCELED);
  assert_non_null(strstr(e.message, "task failed on purpose"));
  cf_future_unref(f);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.failed, 1);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_owned_text(void *arg, cf_value *result) {
  (void)arg;
  char *text = malloc(16);
  if (text == NULL)
    return CF_ENOMEM;
  strcpy(text, "ran inline");
  result->u.ptr = text;
  result->dtor = free; /* freed once, by the last unref (LSan, ASan) */
  return 0;
}

/* On the only worker: the awaited tasks run beneath this one. */
static int task_awaits_inline_runs(void *arg, cf_value *result) {
  cf_executor *ex = arg;
  cf_future *ok, *bad; /* no assert_* off the test's thread */
  if (cf_executor_submit(ex, task_owned_text, NULL, &ok) != 0)
    return CF_EINVAL;
  if (cf_executor_submit(ex, task_fail, (void *)(intptr_t)CF_ECANCELED,
                         &bad) != 0)
    return CF_EINVAL;
  const cf_value *v;
  int rc = cf_future_result(ok, SOON, &v);
  TCHECK(rc == 0 && strcmp(v->u.ptr, "ran inline") == 0);
  TCHECK(cf_future_result(bad, SOON, NULL) == CF_ECANCELED);
  TCHECK(cf_future_get_state(bad) == CF_FINISHED && !cf_future_cancelled(bad));
  cf_error e = cf_future_get_error(bad);
  TCHECK(strstr(e.message, "task failed on purpose") != NULL);
  cf_future_unref(ok);
  cf_future_unref(bad);
  result->u.i = 1;
  return 0;
}

/* A task a waiting worker runs itself ends as one a free worker runs: an
 * owned value kept and freed once, the cancelled code a failure with its
 * message, FINISHED. */
CF_TEST(awaited_tasks_run_inline_end_as_if_a_worker_ran_them) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f = submit(ex, task_awaits_inline_runs, ex);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 1);
  cf_future_unref(f);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.completed, 2);
  assert_int_equal(st.failed, 1);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- workers: lazy start, reuse, names, initializer ---------------------- */

static bool one_idle(void *arg) {
  cf_executor_stats st;
  return cf_executor_get_stats(arg, &st) == 0 && st.idle_workers == 1;
}

CF_TEST(workers_start_lazily_up_to_max_and_idle_ones_are_reused) {
  (void)state;
  cf_executor *ex = make_pool(3);
  hold h;
  hold_init(&h);
  cf_future *fs[5];
  saturate(ex, &h, fs, 1);
  assert_int_equal(stats(ex).workers, 1);
  saturate(ex, &h, fs + 1, 2);
  assert_int_equal(stats(ex).workers, 3);
  /* At the maximum: more work queues instead of starting threads. */
  fs[3] = submit(ex, task_return_arg, (void *)3);
  fs[4] = submit(ex, task_return_arg, (void *)4);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.workers, 3);
  assert_int_equal(st.running, 3);
  assert_int_equal(st.queued, 2);
  gate_open(&h.g);
  for (int i = 0; i < 5; i++)
    assert_int_equal(cf_future_result(fs[i], SOON, NULL), 0);
  unref_all(fs, 5);
  assert_int_equal(cf_executor_free(ex), 0);

  /* Reuse: with a worker idle, a submission does not start another. */
  ex = make_pool(4);
  for (int i = 0; i < 20; i++) {
    cf_future *f = submit(ex, task_return_arg, (void *)(intptr_t)i);
    assert_int_equal(cf_future_result(f, SOON, NULL), 0);
    cf_future_unref(f);
    assert_true(eventually(one_idle, ex));
  }
  assert_int_equal(stats(ex).workers, 1);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

static int task_thread_name(void *arg, cf_value *result) {
  (void)arg;
  char *name = calloc(1, 16);
  pthread_getname_np(pthread_self(), name, 16);
  result->u.ptr = name;
  result->dtor = free;
  result->type = "str";
  return 0;
}

CF_TEST(threads_are_named_by_prefix) {
  (void)state;
  cf_executor *ex = make_pool_with(
      &(cf_thread_pool_opts){.max_workers = 1, .thread_name_prefix = "flags"});
  cf_future *f = submit(ex, task_thread_name, NULL);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_string_equal(v->u.ptr, "flags_0");
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
  /* Default prefix: "cfpool<k>_<n>". */
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  f = submit(ex, task_thread_name, NULL);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(strncmp(v->u.ptr, "cfpool", 6), 0);
  assert_non_null(strstr(v->u.ptr, "_0"));
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

typedef struct init_state {
  _Atomic int inits, finis;
  int fail_with;
  gate *hold; /* if set, the initializer waits on it first */
} init_state;

static _Thread_local int worker_token;

static int initializer(void *arg) {
  init_state *s = arg;
  if (s->hold != NULL)
    TCHECK(gate_wait(s->hold));
  atomic_fetch_add(&s->inits, 1);
  worker_token = 1234;
  return s->fail_with;
}

static void finalizer(void *arg) {
  init_state *s = arg;
  TCHECK(worker_token == 1234);
  atomic_fetch_add(&s->finis, 1);
}

static int task_read_token(void *arg, cf_value *result) {
  (void)arg;
  result->u.i = worker_token;
  return 0;
}

CF_TEST(initializer_and_finalizer_run_once_per_worker) {
  (void)state;
  init_state s = {0};
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 2,
                                            .initializer = initializer,
                                            .finalizer = finalizer,
                                            .initarg = &s});
  hold h;
  hold_init(&h);
  cf_future *fs[2];
  saturate(ex, &h, fs, 2); /* forces both workers to start */
  gate_open(&h.g);
  for (int i = 0; i < 10; i++) {
    cf_future *f = submit(ex, task_read_token, NULL);
    const cf_value *v;
    assert_int_equal(cf_future_result(f, SOON, &v), 0);
    assert_int_equal(v->u.i, 1234); /* per-worker state is there */
    cf_future_unref(f);
  }
  unref_all(fs, 2);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  assert_int_equal(atomic_load(&s.inits), 2);
  assert_int_equal(atomic_load(&s.finis), 2);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

CF_TEST(failing_initializer_breaks_the_pool) {
  (void)state;
  gate init_gate;
  gate_init(&init_gate);
  init_state s = {.fail_with = -EPERM, .hold = &init_gate};
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1,
                                            .initializer = initializer,
                                            .finalizer = finalizer,
                                            .initarg = &s});
  /* Queue work while the only worker is still initializing. */
  cf_future *fs[4];
  for (int i = 0; i < 4; i++)
    fs[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  gate_open(&init_gate);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(cf_future_result(fs[i], SOON, NULL), CF_EBROKEN);
    const char *msg;
    msg = cf_future_get_error(fs[i]).message;
    assert_non_null(strstr(msg, "initializer failed"));
  }
  unref_all(fs, 4);
  cf_future *f = (cf_future *)ex;
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), CF_EBROKEN);
  assert_null(f);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.failed, 4);
  assert_int_equal(st.queued, 0);
  assert_int_equal(cf_executor_free(ex), 0);
  assert_int_equal(atomic_load(&s.finis), 0); /* no finalizer after failure */
  gate_destroy(&init_gate);
}

/* ---- shutdown ---------------------------------------------------------------
 */

CF_TEST(shutdown_wait_runs_queued_work) {
  (void)state;
  cf_executor *ex = make_pool(2);
  cf_future *fs[50];
  for (int i = 0; i < 50; i++)
    fs[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(cf_future_get_state(fs[i]), CF_FINISHED);
    const cf_value *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal(v->u.i, i);
  }
  unref_all(fs, 50);
  cf_future *f = (cf_future *)ex;
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), CF_ESHUTDOWN);
  assert_null(f);
  /* Shutting down again is harmless. */
  assert_int_equal(
      cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT | CF_SHUTDOWN_CANCEL_FUTURES,
                           CF_FOREVER),
      0);
  assert_int_equal(cf_executor_shutdown(ex, 0, 0), 0);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(shutdown_cancel_futures_cancels_pending_only) {
  (void)state;
  cf_executor *ex = make_pool(2);
  hold h;
  hold_init(&h);
  cf_future *running[2], *queued[10];
  saturate(ex, &h, running, 2);
  for (int i = 0; i < 10; i++)
    queued[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  /* Cancelled before shutdown returned; the running ones are untouched. */
  for (int i = 0; i < 10; i++)
    assert_true(cf_future_cancelled(queued[i]));
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_future_get_state(running[i]), CF_RUNNING);
  gate_open(&h.g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_future_result(running[i], 0, NULL), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.cancelled, 10);
  assert_int_equal(st.completed, 2);
  assert_int_equal(st.queued + st.running, 0);
  unref_all(running, 2);
  unref_all(queued, 10);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

static bool all_idle(void *arg) {
  cf_executor_stats st;
  return cf_executor_get_stats(arg, &st) == 0 && st.idle_workers == st.workers;
}

/* A thread blocking on a pool's future spins before it sleeps only while
 * a CPU is left for it: with as many workers running tasks as the
 * process has CPUs, the spin would take a CPU from the tasks. */
static int test_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int task_spin_budget(void *arg, cf_value *result) {
  cf_executor *ex = arg;
  result->u.i = ex->vt->spin_ns(ex);
  return 0;
}

static bool full_spin_budget(void *arg) {
  cf_executor *ex = arg;
  return ex->vt->spin_ns(ex) == CF__WAIT_SPIN_NS;
}

CF_TEST(waiters_spin_only_while_a_cpu_is_left_for_them) {
  (void)state;
  int cpus = test_cpus();
  if (cpus > 128) {
    skip(); /* saturate's blockers are bounded; the rule is the same */
    return;
  }
  cf_thread_pool_opts o = {.max_workers = cpus};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  int64_t (*spin_ns)(cf_executor *) = ex->vt->spin_ns;
  assert_non_null(spin_ns);
  hold h;
  hold_init(&h);
  cf_future **running = calloc((size_t)cpus, sizeof *running);
  assert_non_null(running);
  if (cpus > 1) {
    saturate(ex, &h, running, cpus - 1);
    assert_int_equal(spin_ns(ex), CF__WAIT_SPIN_NS); /* a CPU is free */
  }
  /* A worker that waits holds its own CPU: the last worker, asking from
   * inside a task, still gets the whole spin. */
  cf_future *probe = submit(ex, task_spin_budget, ex);
  const cf_value *v;
  assert_int_equal(cf_future_result(probe, CF_FOREVER, &v), 0);
  assert_int_equal(v->u.i, CF__WAIT_SPIN_NS);
  cf_future_unref(probe);
  saturate(ex, &h, running + cpus - 1, 1);
  assert_int_equal(spin_ns(ex), 0); /* every CPU runs a task */
  gate_open(&h.g);
  for (int i = 0; i < cpus; i++)
    assert_int_equal(cf_future_result(running[i], CF_FOREVER, NULL), 0);
  /* Once the workers are back in idle(). */
  assert_true(eventually(full_spin_budget, ex));
  unref_all(running, cpus);
  free(running);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

/* The queue is a list of 254-task segments: a cancelling shutdown takes
 * whole segments and the one being filled, each task once. */
CF_TEST(shutdown_cancel_futures_takes_a_queue_of_many_segments) {
  (void)state;
  enum { N = 1000 };
  cf_executor *ex = make_pool(2);
  hold h;
  hold_init(&h);
  cf_future *running[2], **queued = calloc(N, sizeof *queued);
  assert_non_null(queued);
  saturate(ex, &h, running, 2);
  for (int i = 0; i < N; i++)
    queued[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  for (int i = 0; i < N; i++)
    assert_true(cf_future_cancelled(queued[i]));
  gate_open(&h.g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.cancelled, N);
  assert_int_equal(st.completed, 2);
  assert_int_equal(st.submitted, N + 2);
  unref_all(running, 2);
  unref_all(queued, N);
  free(queued);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

/* The same after the head has moved on: the first segment retired and
 * reused as the spare, the head inside a later one. */
CF_TEST(shutdown_cancel_futures_after_the_head_moved_past_a_segment) {
  (void)state;
  enum { BEFORE = 300, AFTER = 700 };
  cf_executor *ex = make_pool(1);
  hold h;
  hold_init(&h);
  cf_future **before = calloc(BEFORE, sizeof *before);
  cf_future **after = calloc(AFTER, sizeof *after);
  assert_non_null(before);
  assert_non_null(after);
  for (int i = 0; i < BEFORE; i++)
    before[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  cf_future *blocked;
  saturate(ex, &h, &blocked, 1); /* runs once the 300 before it have */
  for (int i = 0; i < AFTER; i++)
    after[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  for (int i = 0; i < AFTER; i++)
    assert_true(cf_future_cancelled(after[i]));
  gate_open(&h.g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  for (int i = 0; i < BEFORE; i++) {
    const cf_value *v;
    assert_int_equal(cf_future_result(before[i], 0, &v), 0);
    assert_int_equal(v->u.i, i);
  }
  assert_int_equal(cf_future_result(blocked, 0, NULL), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.cancelled, AFTER);
  assert_int_equal(st.completed, BEFORE + 1);
  unref_all(before, BEFORE);
  unref_all(after, AFTER);
  cf_future_unref(blocked);
  free(before);
  free(after);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

/* CPython #87893: futures cancelled by shutdown(cancel_futures=True) must
 * still be yielded by as_completed and counted by wait. */
typedef struct shutdown_later {
  cf_executor *ex;
  counter *started;
  gate *g;
  cf_future **queued; /* the 7 futures the consumer must be waiting on */
} shutdown_later;

static void *do_shutdown_cancel(void *arg) {
  shutdown_later *s = arg;
  TCHECK(counter_wait_ge(s->started, 1));
  /* Once the consumer listens on every queued future, the cancellations
   * can only reach it through its listeners (the path under test). */
  TCHECK(wait_listened(s->queued, 7));
  TCHECK(cf_executor_shutdown(s->ex, CF_SHUTDOWN_CANCEL_FUTURES, 0) == 0);
  gate_open(s->g);
  return NULL;
}

CF_TEST(as_completed_and_wait_see_shutdown_cancellations) {
  (void)state;
  for (int use_wait = 0; use_wait < 2; use_wait++) {
    cf_executor *ex = make_pool(1);
    hold h;
    hold_init(&h);
    cf_future *fs[8];
    saturate(ex, &h, fs, 1);
    for (int i = 1; i < 8; i++)
      fs[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
    shutdown_later s = {ex, &h.started, &h.g, fs + 1};
    pthread_t t = spawn(do_shutdown_cancel, &s);
    if (use_wait) {
      size_t nd, nn;
      assert_int_equal(
          cf_wait(fs, 8, SOON, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn), 0);
      assert_int_equal(nd, 8);
      assert_int_equal(nn, 0);
    } else {
      cf_as_completed *it;
      assert_int_equal(cf_as_completed_new(fs, 8, SOON, &it), 0);
      int yielded = 0, cancelled = 0;
      cf_future *f;
      int rc;
      while ((rc = cf_as_completed_next(it, &f)) == 1) {
        yielded++;
        cancelled += cf_future_cancelled(f);
        cf_future_unref(f);
      }
      assert_int_equal(rc, 0);
      assert_int_equal(yielded, 8);
      assert_int_equal(cancelled, 7);
      cf_as_completed_free(it);
    }
    pthread_join(t, NULL);
    unref_all(fs, 8);
    assert_int_equal(cf_executor_free(ex), 0);
    hold_destroy(&h);
  }
}

CF_TEST(no_future_left_pending_after_shutdown) {
  (void)state;
  for (int round = 0; round < 40; round++) {
    cf_executor *ex = make_pool(1 + round % 4);
    enum { M = 200 };
    cf_future *fs[M];
    for (int i = 0; i < M; i++) {
      fs[i] = submit(ex, i % 7 == 3 ? task_fail : task_return_arg,
                     (void *)(intptr_t) - (i + 1));
      if (i % 5 == 0)
        cf_future_cancel(fs[i]);
    }
    bool cancel = round % 2 == 1;
    assert_int_equal(
        cf_executor_shutdown(
            ex, CF_SHUTDOWN_WAIT | (cancel ? CF_SHUTDOWN_CANCEL_FUTURES : 0),
            CF_FOREVER),
        0);
    cf_executor_stats st = stats(ex);
    for (int i = 0; i < M; i++) {
      cf_future_state s = cf_future_get_state(fs[i]);
      if (s != CF_FINISHED && s != CF_CANCELLED)
        fail_msg("round %d: future %d left %s", round, i,
                 cf_future_state_name(s));
    }
    assert_int_equal(st.submitted, M);
    assert_int_equal(st.completed + st.failed + st.cancelled, M);
    assert_int_equal(st.queued + st.running, 0);
    unref_all(fs, M);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* ---- nested work, waits inside workers ----------------------------------- */

typedef struct nest {
  cf_executor *ex;
  int depth;
} nest;

static int task_nested(void *arg, cf_value *result) {
  nest *n = arg;
  if (n->depth == 0) {
    result->u.i = 1;
    return 0;
  }
  nest child = {n->ex, n->depth - 1};
  cf_future *a = NULL, *b = NULL;
  TCHECK(cf_executor_submit(n->ex, task_nested, &child, &a) == 0);
  TCHECK(cf_executor_submit(n->ex, task_nested, &child, &b) == 0);
  const cf_value *va, *vb;
  int rc = cf_future_result(a, SOON, &va);
  int rc2 = cf_future_result(b, SOON, &vb);
  TCHECK(rc == 0 && rc2 == 0);
  result->u.i = (rc == 0 ? va->u.i : 0) + (rc2 == 0 ? vb->u.i : 0);
  cf_future_unref(a);
  cf_future_unref(b);
  return 0;
}

CF_TEST(task_waits_for_tasks_it_submits_even_with_one_worker) {
  (void)state;
  for (int workers = 1; workers <= 3; workers++) {
    cf_executor *ex = make_pool(workers);
    nest root = {ex, 6};
    cf_future *f = submit(ex, task_nested, &root);
    const cf_value *v;
    assert_int_equal(cf_future_result(f, SOON, &v), 0);
    assert_int_equal(v->u.i, 64); /* 2^6 leaves */
    cf_future_unref(f);
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    cf_executor_stats st = stats(ex);
    assert_int_equal(st.completed, 127); /* inline runs counted once */
    assert_int_equal(st.submitted, 127);
    assert_int_equal(st.queued + st.running + st.cancelled, 0);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

typedef struct self_wait {
  cf_future *_Atomic me;
  gate ready;
} self_wait;

static int task_wait_self(void *arg, cf_value *result) {
  self_wait *s = arg;
  TCHECK(gate_wait(&s->ready));
  result->u.i = cf_future_result(atomic_load(&s->me), SOON, NULL);
  return 0;
}

CF_TEST(waiting_for_own_future_is_a_deadlock_error) {
  (void)state;
  cf_executor *ex = make_pool(2);
  self_wait s;
  gate_init(&s.ready);
  cf_future *f = submit(ex, task_wait_self, &s);
  atomic_store(&s.me, f);
  gate_open(&s.ready);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, CF_EDEADLK);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&s.ready);
}

static int task_wait_foreign(void *arg, cf_value *result) {
  /* Waits on a future nobody completes: must time out, not hang. */
  result->u.i = cf_future_result(arg, CF_MSEC(20), NULL);
  return 0;
}

static int task_wait_foreign_then_done(void *arg, cf_value *result) {
  result->u.i = cf_future_result(arg, SOON, NULL);
  return 0;
}

static int task_wait_foreign_forever(void *arg, cf_value *result) {
  result->u.i = cf_future_result(arg, CF_FOREVER, NULL);
  return 0;
}

static void *complete_soon(void *arg) {
  TCHECK(wait_parked_on(arg)); /* the worker sleeps in its wait */
  TCHECK(cf_future_set_result(arg, NULL) == 0);
  return NULL;
}

CF_TEST(waits_inside_workers_time_out_and_wake) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *never;
  assert_int_equal(cf_future_new(&never), 0);
  cf_future *f = submit(ex, task_wait_foreign, never);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, CF_ETIMEDOUT);
  cf_future_unref(f);
  /* Completed by a foreign thread while the worker sleeps in the wait. */
  f = submit(ex, task_wait_foreign_then_done, never);
  pthread_t t = spawn(complete_soon, never);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 0);
  pthread_join(t, NULL);
  cf_future_unref(f);
  /* While a worker waits without a deadline, newly submitted work still
   * runs (on it: it is the only worker). */
  cf_future *pending;
  assert_int_equal(cf_future_new(&pending), 0);
  f = submit(ex, task_wait_foreign_forever, pending);
  cf_future *g = submit(ex, task_return_arg, (void *)9);
  assert_int_equal(cf_future_result(g, SOON, &v), 0);
  assert_int_equal(v->u.i, 9);
  assert_int_equal(cf_future_set_result(pending, NULL), 0);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_future_unref(pending);
  /* With a deadline it runs no unrelated work (it would overrun the
   * deadline by that work's length): the work waits for the wait to end. */
  assert_int_equal(cf_future_new(&pending), 0);
  f = submit(ex, task_wait_foreign_then_done, pending);
  g = submit(ex, task_return_arg, (void *)9);
  assert_int_equal(cf_future_wait(g, CF_MSEC(100)), CF_ETIMEDOUT);
  assert_int_equal(cf_future_get_state(g), CF_PENDING);
  assert_int_equal(cf_future_set_result(pending, NULL), 0);
  assert_int_equal(cf_future_result(g, SOON, &v), 0);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_future_unref(pending);
  cf_future_unref(never);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_free_own_pool(void *arg, cf_value *result) {
  result->u.i = cf_executor_free(arg);
  return 0;
}

static int task_shutdown_own_pool(void *arg, cf_value *result) {
  result->u.i = cf_executor_shutdown(arg, CF_SHUTDOWN_WAIT, CF_FOREVER);
  return 0;
}

CF_TEST(shutdown_or_free_from_own_worker_is_refused) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f = submit(ex, task_free_own_pool, ex);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, CF_EDEADLK);
  cf_future_unref(f);
  f = submit(ex, task_shutdown_own_pool, ex);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, CF_EDEADLK);
  cf_future_unref(f);
  /* The shutdown took effect all the same. */
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, NULL), CF_ESHUTDOWN);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- backpressure
 * ------------------------------------------------------------ */

typedef struct late_submit {
  cf_executor *ex;
  int rc;
  cf_future *f;
} late_submit;

static void *submit_blocking(void *arg) {
  late_submit *s = arg;
  s->rc = cf_executor_submit(s->ex, task_return_arg, (void *)77, &s->f);
  return NULL;
}

CF_TEST(bounded_queue_blocks_or_fails_with_eagain) {
  (void)state;
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1, .max_queued = 2});
  hold h;
  hold_init(&h);
  cf_future *fs[3];
  saturate(ex, &h, fs, 1);
  fs[1] = submit(ex, task_return_arg, (void *)1);
  fs[2] = submit(ex, task_return_arg, (void *)2);
  cf_task t = {
      .fn = task_return_arg, .arg = (void *)3, .arg_dtor = counting_dtor};
  cf_future *f = (cf_future *)ex;
  assert_int_equal(cf_executor_submit_task(ex, &t, 0, &f), CF_EAGAIN);
  assert_null(f);
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_executor_submit_task(ex, &t, CF_MSEC(20), &f), CF_EAGAIN);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(20));
  assert_int_equal(atomic_load(&dtor_calls), 0); /* refused: arg untouched */
  /* A blocking submit waits for room, then goes through. */
  late_submit ls = {ex, 1, NULL};
  pthread_t th = spawn(submit_blocking, &ls);
  assert_true(wait_blocked_submitter(ex)); /* it waits for room */
  gate_open(&h.g);
  pthread_join(th, NULL);
  assert_int_equal(ls.rc, 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(ls.f, SOON, &v), 0);
  assert_int_equal(v->u.i, 77);
  cf_future_unref(ls.f);
  unref_all(fs, 3);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

static void *shutdown_soon(void *arg) {
  TCHECK(wait_blocked_submitter(arg)); /* the submit is blocked on room */
  TCHECK(cf_executor_shutdown(arg, CF_SHUTDOWN_CANCEL_FUTURES, 0) == 0);
  return NULL;
}

CF_TEST(blocked_submit_wakes_on_shutdown) {
  (void)state;
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1, .max_queued = 1});
  hold h;
  hold_init(&h);
  cf_future *fs[2];
  saturate(ex, &h, fs, 1);
  fs[1] = submit(ex, task_nop, NULL);
  pthread_t th = spawn(shutdown_soon, ex);
  cf_future *f;
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), CF_ESHUTDOWN);
  pthread_join(th, NULL);
  gate_open(&h.g);
  assert_true(cf_future_cancelled(fs[1]));
  unref_all(fs, 2);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

typedef struct flood {
  cf_executor *ex;
  int n;
} flood;

static int task_flood_own_pool(void *arg, cf_value *result) {
  flood *fl = arg;
  int ok = 0;
  for (int i = 0; i < fl->n; i++)
    ok += cf_executor_submit(fl->ex, task_nop, NULL, NULL) == 0;
  result->u.i = ok;
  return 0;
}

CF_TEST(bounded_queue_inside_own_worker_makes_progress) {
  (void)state;
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1, .max_queued = 4});
  flood fl = {ex, 100};
  cf_future *f = submit(ex, task_flood_own_pool, &fl);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 100);
  cf_future_unref(f);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  assert_int_equal(stats(ex).completed, 101);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- thread creation failure ------------------------------------------------
 */

CF_TEST(thread_creation_failure_fails_the_future_not_the_process) {
  (void)state;
  cf_executor *ex = make_pool(2);
  cf__fault_arm(CF__FAULT_THREAD_CREATE, 0, -1);
  cf_task t = {
      .fn = task_return_arg, .arg = (void *)1, .arg_dtor = counting_dtor};
  cf_future *f = NULL;
  assert_int_equal(cf_executor_submit_task(ex, &t, CF_FOREVER, &f), 0);
  assert_true(cf_future_done(f));
  assert_int_equal(cf_future_result(f, 0, NULL), -EAGAIN);
  const char *msg;
  msg = cf_future_get_error(f).message;
  assert_non_null(strstr(msg, "cannot start a worker thread"));
  assert_int_equal(atomic_load(&dtor_calls), 1); /* arg released once */
  cf_future_unref(f);
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, NULL), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.workers, 0);
  assert_int_equal(st.failed, 2);
  /* Once threads can start again, the pool works. */
  cf__fault_arm(CF__FAULT_THREAD_CREATE, 0, 0);
  f = submit(ex, task_return_arg, (void *)2);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(partial_thread_creation_failure_keeps_working) {
  (void)state;
  cf_executor *ex = make_pool(4);
  hold h;
  hold_init(&h);
  cf_future *first;
  saturate(ex, &h, &first, 1);
  cf__fault_arm(CF__FAULT_THREAD_CREATE, 0, -1);
  cf_future *fs[6];
  for (int i = 0; i < 6; i++)
    fs[i] = submit(ex, task_return_arg, (void *)(intptr_t)i);
  assert_int_equal(stats(ex).workers, 1);
  gate_open(&h.g);
  for (int i = 0; i < 6; i++)
    assert_int_equal(cf_future_result(fs[i], SOON, NULL), 0);
  unref_all(fs, 6);
  cf_future_unref(first);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

/* ---- callbacks, counters, handles ------------------------------------------
 */

static _Atomic int hook_calls;
static void on_cb_error(void *ctx, cf_future *f, int rc) {
  TCHECK(ctx == &hook_calls);
  TCHECK(cf_future_done(f));
  TCHECK(rc == -EINVAL);
  atomic_fetch_add(&hook_calls, 1);
}

static _Atomic int cb_ok;
static _Thread_local char cb_thread[16];
static int cb_good(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  pthread_getname_np(pthread_self(), cb_thread, sizeof cb_thread);
  TCHECK(strncmp(cb_thread, "cbpool_", 7) == 0);
  atomic_fetch_add(&cb_ok, 1);
  return 0;
}
static int cb_bad(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  return -EINVAL;
}

CF_TEST(callback_failures_are_counted_and_reported) {
  (void)state;
  atomic_store(&hook_calls, 0);
  atomic_store(&cb_ok, 0);
  cf_executor *ex = make_pool_with(
      &(cf_thread_pool_opts){.max_workers = 1,
                             .thread_name_prefix = "cbpool",
                             .on_callback_error = on_cb_error,
                             .on_callback_error_ctx = &hook_calls});
  hold h;
  hold_init(&h);
  cf_future *fs[3];
  saturate(ex, &h, fs, 1);
  fs[1] = submit(ex, task_nop, NULL);
  fs[2] = submit(ex, task_nop, NULL);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(cf_future_add_done_callback(fs[i], cb_bad, NULL), 0);
    assert_int_equal(cf_future_add_done_callback(fs[i], cb_good, NULL), 0);
  }
  gate_open(&h.g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  /* Callbacks ran in the worker; a failing one never stopped the next. */
  assert_int_equal(atomic_load(&cb_ok), 3);
  assert_int_equal(atomic_load(&hook_calls), 3);
  assert_int_equal(stats(ex).callbacks_failed, 3);
  unref_all(fs, 3);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

CF_TEST(counters_are_exact_when_idle) {
  (void)state;
  cf_executor *ex = make_pool(3);
  hold h;
  hold_init(&h);
  cf_future *block[3];
  saturate(ex, &h, block, 3);
  cf_future *fs[30];
  for (int i = 0; i < 30; i++)
    fs[i] =
        submit(ex, i < 10 ? task_return_arg : task_fail, (void *)(intptr_t)-1);
  for (int i = 20; i < 30; i++)
    assert_int_equal(cf_future_cancel(fs[i]), 0);
  cf_executor_stats st = stats(ex);
  assert_int_equal(st.submitted, 33);
  assert_int_equal(st.running, 3);
  assert_int_equal(st.queued, 30); /* cancelled ones count until discarded */
  gate_open(&h.g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  st = stats(ex);
  assert_int_equal(st.submitted, 33);
  assert_int_equal(st.completed, 13);
  assert_int_equal(st.failed, 10);
  assert_int_equal(st.cancelled, 10);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.callbacks_failed, 0);
  unref_all(block, 3);
  unref_all(fs, 30);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

CF_TEST(freed_handle_is_detected) {
  (void)state;
  cf_executor *ex = make_pool(1);
  assert_int_equal(cf_executor_free(ex), 0);
  /* API misuse the library can still detect: a recently freed handle. */
  cf_future *f = (cf_future *)ex;
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), CF_EBADF);
  assert_null(f);
  assert_int_equal(
      cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT | CF_SHUTDOWN_CANCEL_FUTURES,
                           CF_FOREVER),
      CF_EBADF);
  assert_int_equal(cf_executor_get_max_workers(ex), CF_EBADF);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(ex, &st), CF_EBADF);
  cf_map *m = (cf_map *)ex;
  cf_range_iter r = cf_range_iter_init(0, 3, 1);
  assert_int_equal(
      cf_executor_map(ex, task_nop, cf_range_iter_next, &r, NULL, &m),
      CF_EBADF);
  assert_null(m);
  assert_int_equal(cf_executor_free(ex), CF_EBADF); /* double free */
}

static _Atomic int arg_dtors;
static void count_arg_dtor(void *arg) {
  (void)arg;
  atomic_fetch_add(&arg_dtors, 1);
}

static int task_check_arg_alive(void *arg, cf_value *result) {
  (void)result;
  TCHECK(atomic_load(&arg_dtors) == (int)(intptr_t)arg);
  return 0;
}

CF_TEST(arg_destructor_runs_exactly_once) {
  (void)state;
  atomic_store(&arg_dtors, 0);
  cf_executor *ex = make_pool(1);
  hold h;
  hold_init(&h);
  cf_future *block;
  saturate(ex, &h, &block, 1);
  /* arg = the number of arg destructor calls the task expects to see. */
  cf_task ran = {
      .fn = task_check_arg_alive, .arg = (void *)1, .arg_dtor = count_arg_dtor};
  cf_task cancelled = {
      .fn = task_check_arg_alive, .arg = (void *)0, .arg_dtor = count_arg_dtor};
  cf_future *a, *b;
  assert_int_equal(cf_executor_submit_task(ex, &ran, 0, &a), 0);
  assert_int_equal(cf_executor_submit_task(ex, &cancelled, 0, &b), 0);
  assert_int_equal(cf_future_cancel(b), 0);
  /* Released by the canceller before cancel returned. */
  assert_int_equal(atomic_load(&arg_dtors), 1);
  gate_open(&h.g);
  /* Released before the future is seen done. */
  assert_int_equal(cf_future_result(a, SOON, NULL), 0);
  assert_int_equal(atomic_load(&arg_dtors), 2);
  assert_int_equal(cf_executor_free(ex), 0);
  assert_int_equal(atomic_load(&arg_dtors), 2);
  cf_future_unref(a);
  cf_future_unref(b);
  cf_future_unref(block);
  hold_destroy(&h);
}

static counter fire_and_forget_runs;
static int task_count(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  counter_add(&fire_and_forget_runs, 1);
  return 0;
}

CF_TEST(fire_and_forget) {
  (void)state;
  counter_init(&fire_and_forget_runs);
  cf_executor *ex = make_pool(2);
  for (int i = 0; i < 100; i++)
    assert_int_equal(cf_executor_submit(ex, task_count, NULL, NULL), 0);
  assert_true(counter_wait_ge(&fire_and_forget_runs, 100));
  assert_int_equal(cf_executor_free(ex), 0);
  counter_destroy(&fire_and_forget_runs);
}

CF_TEST(long_tasks_spread_over_all_workers) {
  (void)state;
  /* With a batch-taking queue, a burst must still reach every worker:
   * 4 blocking tasks on 4 workers all start before any is released. */
  cf_executor *ex = make_pool(4);
  hold h;
  hold_init(&h);
  cf_future *fs[4];
  saturate(ex, &h, fs, 4); /* asserts all 4 started */
  gate_open(&h.g);
  for (int i = 0; i < 4; i++)
    assert_int_equal(cf_future_result(fs[i], SOON, NULL), 0);
  unref_all(fs, 4);
  /* Queue 64 blocking tasks at once on a warm pool: all 4 workers get
   * some (stealing or small batches), so 4 start before release. */
  hold h2;
  hold_init(&h2);
  cf_future *many[64];
  for (int i = 0; i < 64; i++) {
    blocker *b = &blockers[nblockers++];
    b->g = &h2.g;
    b->started = &h2.started;
    many[i] = submit(ex, task_block, b);
  }
  assert_true(counter_wait_ge(&h2.started, 4));
  gate_open(&h2.g);
  for (int i = 0; i < 64; i++)
    assert_int_equal(cf_future_result(many[i], SOON, NULL), 0);
  unref_all(many, 64);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
  hold_destroy(&h2);
}

typedef struct ordered {
  gate *g;
  counter *started;
  _Atomic int *log; /* start order: log[k] = index of the k-th task to start */
  _Atomic int *next;
  int index;
} ordered;

static char who[8][16];
static int task_log_start(void *arg, cf_value *result) {
  ordered *o = arg;
  int k = atomic_fetch_add(o->next, 1);
  atomic_store(&o->log[k], o->index);
  if (k < 8)
    pthread_getname_np(pthread_self(), who[k], 16);
  counter_add(o->started, 1);
  TCHECK(gate_wait(o->g));
  result->u.i = o->index;
  return 0;
}

CF_TEST(tasks_start_in_submission_order) {
  (void)state;
  /* Python's single queue starts tasks in FIFO order; the seed's
   * demo_executor_map shows it. Even when one worker takes a whole batch,
   * the first three of five long tasks on three workers are 0, 1, 2. */
  for (int round = 0; round < 20; round++) {
    cf_executor *ex = make_pool(3);
    hold h;
    hold_init(&h);
    cf_future *warm[3];
    saturate(ex, &h, warm, 3); /* start all three workers */
    gate_open(&h.g);
    for (int i = 0; i < 3; i++)
      assert_int_equal(cf_future_result(warm[i], SOON, NULL), 0);
    unref_all(warm, 3);
    assert_true(eventually(all_idle, ex));
    hold h2;
    hold_init(&h2);
    _Atomic int log[5], next = 0;
    ordered o[5];
    cf_future *fs[5];
    for (int i = 0; i < 5; i++) {
      o[i] = (ordered){&h2.g, &h2.started, log, &next, i};
      fs[i] = submit(ex, task_log_start, &o[i]);
    }
    assert_true(counter_wait_ge(&h2.started, 3));
    usleep(2000); /* a wrongly started 4th task would show up here */
    assert_int_equal(atomic_load(&next), 3);
    int seen = 0;
    for (int k = 0; k < 3; k++)
      seen |= 1 << atomic_load(&log[k]);
    if (seen != 7)
      fail_msg("round %d: first tasks to start were %d (%s), %d (%s), "
               "%d (%s)",
               round, atomic_load(&log[0]), who[0], atomic_load(&log[1]),
               who[1], atomic_load(&log[2]), who[2]);
    gate_open(&h2.g);
    for (int i = 0; i < 5; i++)
      assert_int_equal(cf_future_result(fs[i], SOON, NULL), 0);
    unref_all(fs, 5);
    assert_int_equal(cf_executor_free(ex), 0);
    hold_destroy(&h);
    hold_destroy(&h2);
  }
}

/* ---- regressions from review ------------------------------------------- */

/* Submits its child and a filler into a one-slot queue, then waits for
 * the child: the filler's submit finds the queue full and the worker
 * makes room by running the child nested, which does the same, so the
 * nesting follows the whole chain. */
static int task_chain_full_queue(void *arg, cf_value *result) {
  nest *a = arg;
  if (a->depth == 0) {
    result->u.i = 0;
    return 0;
  }
  nest *child = malloc(sizeof *child);
  *child = (nest){a->ex, a->depth - 1};
  cf_task t = {.fn = task_chain_full_queue, .arg = child, .arg_dtor = free};
  cf_future *f = NULL;
  TCHECK(cf_executor_submit_task(a->ex, &t, CF_FOREVER, &f) == 0);
  TCHECK(cf_executor_submit(a->ex, task_nop, NULL, NULL) == 0);
  const cf_value *v;
  int rc = cf_future_result(f, SOON, &v);
  TCHECK(rc == 0);
  result->u.i = rc == 0 ? v->u.i + 1 : -1;
  cf_future_unref(f);
  return 0;
}

CF_TEST(deep_nesting_through_a_full_queue_is_safe) {
  (void)state;
  /* Used to overflow a fixed array of running tasks at depth 33. */
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1, .max_queued = 1});
  nest root = {ex, 200};
  cf_future *f = submit(ex, task_chain_full_queue, &root);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 200);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_chain_wait(void *arg, cf_value *result) {
  nest *a = arg;
  if (a->depth == 0) {
    result->u.i = 0;
    return 0;
  }
  nest child = {a->ex, a->depth - 1};
  cf_future *f = NULL;
  TCHECK(cf_executor_submit(a->ex, task_chain_wait, &child, &f) == 0);
  const cf_value *v;
  int rc = cf_future_result(f, SOON, &v);
  TCHECK(rc == 0);
  result->u.i = rc == 0 ? v->u.i + 1 : -1;
  cf_future_unref(f);
  return 0;
}

CF_TEST(deep_recursion_on_one_worker) {
  (void)state;
  /* Each level waits for the next: the waiting worker runs the awaited
   * task inline, as deep as the dependency chain (it used to stop at 32
   * levels and block for good). */
  cf_executor *ex = make_pool(1);
  nest root = {ex, 500};
  cf_future *f = submit(ex, task_chain_wait, &root);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 500);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

typedef struct room_probe {
  cf_executor *ex;
  _Atomic int filler_ran;
} room_probe;

static int task_mark(void *arg, cf_value *result) {
  (void)result;
  atomic_store((_Atomic int *)arg, 1);
  return 0;
}

static int task_try_submit_full(void *arg, cf_value *result) {
  room_probe *r = arg;
  TCHECK(cf_executor_submit(r->ex, task_mark, &r->filler_ran, NULL) == 0);
  cf_task t = {.fn = task_nop, .arg = NULL, .arg_dtor = NULL};
  int64_t t0 = cf_now_ns();
  result->u.i = cf_executor_submit_task(r->ex, &t, 0, NULL);
  /* Timeout 0 fails at once: it must not run the queued filler first. */
  TCHECK(atomic_load(&r->filler_ran) == 0);
  TCHECK(cf_now_ns() - t0 < CF_SEC(5));
  return 0;
}

CF_TEST(zero_timeout_submit_in_worker_fails_at_once) {
  (void)state;
  cf_executor *ex =
      make_pool_with(&(cf_thread_pool_opts){.max_workers = 1, .max_queued = 1});
  room_probe r = {ex, 0};
  cf_future *f = submit(ex, task_try_submit_full, &r);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, CF_EAGAIN);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
  assert_int_equal(atomic_load(&r.filler_ran), 1);
}

typedef struct race {
  cf_executor *ex;
  pthread_barrier_t go;
  cf_future *f;
  int rc;
} race;

static void *race_submit(void *arg) {
  race *r = arg;
  pthread_barrier_wait(&r->go);
  r->rc = cf_executor_submit(r->ex, task_return_arg, (void *)5, &r->f);
  return NULL;
}

static bool submit_paused(void *arg) {
  (void)arg;
  return atomic_load(&cf__fault_paused) > 0;
}

CF_TEST(shutdown_between_enqueue_and_worker_start) {
  (void)state;
  /* A submit that queued its task but had not yet started the worker for
   * it when shutdown ran used to leave the future pending for ever. The
   * fault point holds the submit in exactly that window. */
  for (int cancel = 0; cancel < 2; cancel++) {
    atomic_store(&cf__fault_paused, 0);
    race r = {.ex = make_pool(1)};
    pthread_barrier_init(&r.go, NULL, 2);
    cf__fault_arm(CF__FAULT_SUBMIT_PAUSE, 0, 1);
    pthread_t t = spawn(race_submit, &r);
    pthread_barrier_wait(&r.go);
    assert_true(eventually(submit_paused, NULL));
    assert_int_equal(
        cf_executor_shutdown(
            r.ex, CF_SHUTDOWN_WAIT | (cancel ? CF_SHUTDOWN_CANCEL_FUTURES : 0),
            CF_FOREVER),
        0);
    /* shutdown(wait) returned: the queued task ran or was cancelled. */
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(cf_future_done(r.f));
    assert_int_equal(cf_future_get_state(r.f),
                     cancel ? CF_CANCELLED : CF_FINISHED);
    cf_future_unref(r.f);
    assert_int_equal(cf_executor_free(r.ex), 0);
    pthread_barrier_destroy(&r.go);
  }
}

/* A submit that lands while the only worker is between its last look at
 * the empty queue and its place on the idle stack finds nobody to wake;
 * the worker's look after it is on the stack finds the task. (The FIFO's
 * ends share no lock: without that re-check the task waited forever.) */
CF_TEST(a_submit_while_the_worker_goes_to_sleep_is_not_lost) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f;
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0); /* the worker exists */
  cf_future_unref(f);
  for (int round = 0; round < 3; round++) {
    int paused = atomic_load(&cf__fault_paused);
    cf__fault_arm(CF__FAULT_PARK_PAUSE, 0, 1);
    /* A task wakes the worker (it may be asleep already); after it, the
     * worker goes to sleep again, through the pause. */
    assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), 0);
    assert_int_equal(cf_future_result(f, SOON, NULL), 0);
    cf_future_unref(f);
    int64_t end = cf_now_ns() + SOON;
    while (atomic_load(&cf__fault_paused) == paused && cf_now_ns() < end)
      sched_yield();
    assert_true(atomic_load(&cf__fault_paused) > paused); /* in the window */
    assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &f), 0);
    assert_int_equal(cf_future_result(f, SOON, NULL), 0);
    cf_future_unref(f);
    cf__fault_arm(CF__FAULT_PARK_PAUSE, 0, 0);
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(stress_shutdown_racing_the_first_submit) {
  (void)state;
  long rounds = stress_div() > 1 ? 300 : 2000;
  for (long i = 0; i < rounds; i++) {
    race r = {.ex = make_pool(1)};
    pthread_barrier_init(&r.go, NULL, 2);
    pthread_t t = spawn(race_submit, &r);
    pthread_barrier_wait(&r.go);
    assert_int_equal(cf_executor_shutdown(r.ex, CF_SHUTDOWN_WAIT, CF_FOREVER),
                     0);
    pthread_join(t, NULL);
    assert_int_equal(cf_executor_shutdown(r.ex, CF_SHUTDOWN_WAIT, CF_FOREVER),
                     0);
    if (r.rc == 0) {
      /* Accepted before the shutdown, which cancels nothing: it ran. */
      if (!cf_future_done(r.f) || cf_future_cancelled(r.f))
        fail_msg("round %ld: an accepted task is %s after a shutdown that "
                 "cancels nothing",
                 i, cf_future_state_name(cf_future_get_state(r.f)));
      assert_int_equal(cf_future_get_error(r.f).code, 0);
      cf_future_unref(r.f);
    } else {
      assert_int_equal(r.rc, CF_ESHUTDOWN);
    }
    assert_int_equal(cf_executor_free(r.ex), 0);
    pthread_barrier_destroy(&r.go);
  }
}

CF_TEST(set_running_on_an_executor_future_is_refused) {
  (void)state;
  cf_executor *ex = make_pool(1);
  hold h;
  hold_init(&h);
  cf_future *block;
  saturate(ex, &h, &block, 1);
  cf_future *f = submit(ex, task_return_arg, (void *)1);
  assert_int_equal(cf_future_set_running(f), CF_EINVALSTATE);
  assert_int_equal(cf_future_get_state(f), CF_PENDING);
  gate_open(&h.g);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  cf_future_unref(block);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

typedef struct cross {
  cf_future *other;
  _Atomic int *calls;
} cross;

static void cancel_other(void *arg) {
  cross *c = arg;
  atomic_fetch_add(c->calls, 1);
  int rc = cf_future_cancel(c->other);
  TCHECK(rc == 0 || rc == CF_EBUSY);
}

CF_TEST(arg_destructors_that_cancel_each_other) {
  (void)state;
  /* f's destructor cancels g, whose destructor cancels f again: the
   * inner cancel must see f is being cancelled by this thread. */
  cf_executor *ex = make_pool(1);
  hold h;
  hold_init(&h);
  cf_future *block;
  saturate(ex, &h, &block, 1);
  _Atomic int calls = 0;
  cross cf_ = {NULL, &calls}, cg = {NULL, &calls};
  cf_task tf = {.fn = task_nop, .arg = &cf_, .arg_dtor = cancel_other};
  cf_task tg = {.fn = task_nop, .arg = &cg, .arg_dtor = cancel_other};
  cf_future *f, *g;
  assert_int_equal(cf_executor_submit_task(ex, &tf, 0, &f), 0);
  assert_int_equal(cf_executor_submit_task(ex, &tg, 0, &g), 0);
  cf_.other = g;
  cg.other = f;
  assert_int_equal(cf_future_cancel(f), 0);
  assert_true(cf_future_cancelled(f));
  assert_true(cf_future_cancelled(g));
  assert_int_equal(atomic_load(&calls), 2);
  gate_open(&h.g);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_future_unref(block);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

static bool many_running(void *arg) {
  cf_executor_stats st;
  return cf_executor_get_stats(arg, &st) == 0 && st.running >= 20;
}

static int64_t cpu_time_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * CF_SEC(1) +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* One worker, 40 tasks all waiting for a future nobody in the pool will
 * complete: the worker nests queued tasks while it waits, up to its depth
 * limit, and must then sleep. It used to spin at full speed (it tried to
 * park, saw the queue non-empty and looped). */
CF_TEST(worker_at_its_nesting_limit_sleeps_instead_of_spinning) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *foreign;
  assert_int_equal(cf_future_new(&foreign), 0);
  enum { N = 40 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++) /* waits without a deadline nest */
    fs[i] = submit(ex, task_wait_foreign_forever, foreign);
  assert_true(eventually(many_running, ex));
  usleep(50000);
  int64_t cpu0 = cpu_time_ns(), wall0 = cf_now_ns();
  usleep(300000);
  int64_t cpu = cpu_time_ns() - cpu0, wall = cf_now_ns() - wall0;
  /* Sleeping costs next to nothing; a spinning thread would use most of
   * the interval (even on a busy machine, far more than a fifth). */
  if (cpu > wall / 5)
    fail_msg("the waiting worker used %lld ns of CPU in %lld ns",
             (long long)cpu, (long long)wall);
  cf_value v = CF_VALUE_INIT;
  assert_int_equal(cf_future_set_result(foreign, &v), 0);
  for (int i = 0; i < N; i++) {
    const cf_value *r;
    assert_int_equal(cf_future_result(fs[i], SOON, &r), 0);
    assert_int_equal(r->u.i, 0); /* the task's own wait succeeded */
  }
  unref_all(fs, N);
  cf_future_unref(foreign);
  assert_int_equal(cf_executor_free(ex), 0);
}

static bool future_is_running(void *arg) { return cf_future_running(arg); }

/* Python: cancel() fails on a running future, which then completes
 * normally. */
CF_TEST(cancel_of_a_running_task_is_refused_and_it_completes) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *f = submit(ex, task_wait_gate, &g);
  assert_true(eventually(future_is_running, f));
  assert_int_equal(cf_future_cancel(f), CF_EBUSY);
  assert_true(cf_future_running(f));
  assert_false(cf_future_cancelled(f));
  gate_open(&g);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  assert_int_equal(cf_future_get_state(f), CF_FINISHED);
  assert_int_equal(cf_future_cancel(f), CF_EBUSY); /* done: still refused */
  assert_int_equal(cf_executor_free(ex), 0);
  cf_future_unref(f);
  gate_destroy(&g);
}

static _Atomic int ran_count;
static int task_count_run(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  atomic_fetch_add(&ran_count, 1);
  return 0;
}

/* set_result / set_error on an executor's future: refused while its task
 * runs; a still-queued one is taken from the executor, which never runs
 * it, and its argument destructor still runs once. */
CF_TEST(completing_executor_futures_by_hand) {
  (void)state;
  atomic_store(&ran_count, 0);
  atomic_store(&dtor_calls, 0);
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *running = submit(ex, task_wait_gate, &g);
  assert_true(eventually(future_is_running, running));
  cf_value v = CF_VALUE_INIT;
  v.u.i = 7;
  assert_int_equal(cf_future_set_result(running, &v), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_error(running, -EIO, "no"), CF_EINVALSTATE);
  cf_task t = {.fn = task_count_run, .arg = NULL, .arg_dtor = counting_dtor};
  cf_future *queued, *queued2;
  assert_int_equal(cf_executor_submit_task(ex, &t, CF_FOREVER, &queued), 0);
  assert_int_equal(cf_executor_submit_task(ex, &t, CF_FOREVER, &queued2), 0);
  assert_int_equal(cf_future_set_result(queued, &v), 0);
  assert_int_equal(cf_future_set_error(queued2, -EIO, "by hand %d", 2), 0);
  gate_open(&g);
  assert_int_equal(cf_future_result(running, SOON, NULL), 0);
  const cf_value *r;
  assert_int_equal(cf_future_result(queued, SOON, &r), 0);
  assert_int_equal(r->u.i, 7);
  assert_int_equal(cf_future_result(queued2, SOON, NULL), -EIO);
  cf_error e = cf_future_get_error(queued2);
  const char *msg = e.message;
  assert_int_equal(e.code, -EIO);
  assert_string_equal(msg, "by hand 2");
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  assert_int_equal(atomic_load(&ran_count), 0); /* neither ever ran */
  assert_int_equal(atomic_load(&dtor_calls), 2);
  cf_future_unref(running);
  cf_future_unref(queued);
  cf_future_unref(queued2);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

/* ---- second-pass defects ------------------------------------------------- */

typedef struct sub_wait {
  cf_executor *ex;
  int64_t timeout;
} sub_wait;

static int task_submit_and_wait(void *arg, cf_value *result) {
  sub_wait *sw = arg;
  cf_future *sub;
  int rc = cf_executor_submit(sw->ex, task_return_arg, (void *)41, &sub);
  if (rc != 0)
    return rc;
  const cf_value *v;
  rc = cf_future_result(sub, sw->timeout, &v);
  if (rc == 0)
    result->u.i = v->u.i + 1;
  cf_future_unref(sub);
  return rc;
}

/* The smallest stack accepted, one worker: a task that waits for a task it
 * submitted still runs it (the reserve kept free is a quarter of the
 * stack, not all of it). It used to hang. */
CF_TEST(smallest_stack_runs_what_it_waits_for) {
  (void)state;
  const int64_t timeouts[] = {CF_FOREVER, SOON};
  for (int k = 0; k < 2; k++) {
    cf_executor *ex = make_pool_with(&(cf_thread_pool_opts){
        .max_workers = 1, .stack_size = CF_THREAD_POOL_MIN_STACK});
    sub_wait sw = {ex, timeouts[k]};
    cf_future *f = submit(ex, task_submit_and_wait, &sw);
    const cf_value *v;
    assert_int_equal(cf_future_result(f, SOON, &v), 0);
    assert_int_equal(v->u.i, 42);
    cf_future_unref(f);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

typedef struct stats_snap {
  cf_executor *ex;
  cf_executor_stats st;
  _Atomic bool taken;
} stats_snap;

static int snap_stats(cf_future *f, void *arg) {
  (void)f;
  stats_snap *s = arg;
  TCHECK(cf_executor_get_stats(s->ex, &s->st) == 0);
  atomic_store(&s->taken, true);
  return 0;
}

/* Whoever sees the last future done reads exact counters: the worker
 * counts the task before it publishes the outcome. A done callback (which
 * runs right after the outcome is published, in the completing thread)
 * makes the window certain; it used to read running == 1 every time, and
 * a waiter about once in 20. */
CF_TEST(stats_are_exact_once_the_waiter_sees_the_last_future_done) {
  (void)state;
  cf_executor *ex = make_pool(2);
  for (int i = 0; i < 2000; i++) {
    cf_future *f =
        submit(ex, i % 3 ? task_return_arg : task_fail, (void *)(intptr_t)-5);
    stats_snap snap = {ex, {0}, false};
    assert_int_equal(cf_future_add_done_callback(f, snap_stats, &snap), 0);
    assert_int_equal(cf_future_wait(f, SOON), 0);
    while (!atomic_load(&snap.taken)) /* callbacks run after the wake */
      sched_yield();
    for (int k = 0; k < 2; k++) {
      cf_executor_stats st = k == 0 ? snap.st : stats(ex);
      if (st.running != 0 || st.queued != 0 ||
          st.submitted != st.completed + st.failed + st.cancelled)
        fail_msg("read %d: submitted %llu completed %llu failed %llu "
                 "cancelled %llu running %llu queued %llu",
                 i, (unsigned long long)st.submitted,
                 (unsigned long long)st.completed,
                 (unsigned long long)st.failed,
                 (unsigned long long)st.cancelled,
                 (unsigned long long)st.running, (unsigned long long)st.queued);
    }
    cf_future_unref(f);
  }
  /* Settled ones too: cancelled by shutdown while queued. */
  hold h;
  hold_init(&h);
  cf_future *block;
  cf_executor *one = make_pool(1);
  saturate(one, &h, &block, 1);
  cf_future *q = submit(one, task_nop, NULL);
  assert_int_equal(cf_executor_shutdown(one, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  assert_int_equal(cf_future_wait(q, SOON), 0);
  cf_executor_stats st = stats(one);
  assert_int_equal(st.cancelled, 1);
  gate_open(&h.g);
  cf_future_unref(q);
  cf_future_unref(block);
  assert_int_equal(cf_executor_free(one), 0);
  hold_destroy(&h);
  assert_int_equal(cf_executor_free(ex), 0);
}

static void unref_twice(void *arg) {
  (void)arg;
  cf_future *f;
  if (cf_future_new(&f) != 0)
    _exit(3);
  cf_future_unref(f);
  cf_future_unref(f); /* the bug under test */
  cf_future *g;
  if (cf_future_new(&g) == 0)
    cf_future_unref(g);
  _exit(0); /* not caught: the test fails */
}

/* A second unref of the same future is caught at once with a message
 * (AddressSanitizer builds report it as a use after free), instead of
 * corrupting the future cache so that a later cf_future_new crashes. */
CF_TEST(second_unref_of_a_future_is_caught) {
  (void)state;
  char *err = NULL;
  int status = run_in_child(unref_twice, NULL, &err);
  assert_true(status != -1);
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (strstr(err, "AddressSanitizer") == NULL) {
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    assert_non_null(strstr(err, "dropped twice"));
  } else {
    assert_non_null(strstr(err, "use-after-free"));
  }
  free(err);
}

typedef struct racer_shutdown {
  cf_executor *ex;
  gate started;
  int rc;
} racer_shutdown;

static void *shutdown_waiting(void *arg) {
  racer_shutdown *r = arg;
  gate_open(&r->started);
  r->rc = cf_executor_shutdown(r->ex, CF_SHUTDOWN_WAIT, CF_FOREVER);
  return NULL;
}

static int task_sleep_ms(void *arg, cf_value *result) {
  (void)result;
  usleep((useconds_t)(intptr_t)arg * 1000);
  return 0;
}

/* cf_executor_free racing a shutdown that waits: the shutdown either
 * completes (free waits for it) or, if it starts after free, fails with
 * CF_EBADF; nothing is touched after it is freed (ThreadSanitizer and
 * AddressSanitizer check). It used to be a use after free. */
CF_TEST(free_racing_a_waiting_shutdown_is_safe) {
  (void)state;
  for (int i = 0; i < scaled(200); i++) {
    cf_executor *ex = make_pool(2);
    cf_future *f = submit(ex, task_sleep_ms, (void *)(intptr_t)(i % 3));
    racer_shutdown r = {.ex = ex, .rc = 99};
    gate_init(&r.started);
    pthread_t t = spawn(shutdown_waiting, &r);
    assert_true(gate_wait(&r.started));
    if (i % 2)
      sched_yield();
    assert_int_equal(cf_executor_free(ex), 0);
    pthread_join(t, NULL);
    if (r.rc != 0 && r.rc != CF_EBADF)
      fail_msg("round %d: shutdown returned %d", i, r.rc);
    assert_true(cf_future_done(f));
    cf_future_unref(f);
    gate_destroy(&r.started);
  }
}

typedef struct deadline_probe {
  cf_executor *ex;
  gate *release;
  _Atomic(pthread_t) sub_thread;
  int wait_rc;
  pthread_t waiter_thread;
} deadline_probe;

static int task_record_thread_and_wait(void *arg, cf_value *result) {
  (void)result;
  deadline_probe *d = arg;
  atomic_store(&d->sub_thread, pthread_self());
  TCHECK(gate_wait(d->release));
  return 0;
}

static int task_wait_with_deadline(void *arg, cf_value *result) {
  (void)result;
  deadline_probe *d = arg;
  d->waiter_thread = pthread_self();
  cf_future *sub;
  int rc = cf_executor_submit(d->ex, task_record_thread_and_wait, d, &sub);
  if (rc != 0)
    return rc;
  d->wait_rc = cf_future_result(sub, CF_MSEC(50), NULL);
  cf_future_unref(sub);
  return 0;
}

static bool idle_at_least_4(void *arg) {
  cf_executor_stats st;
  return cf_executor_get_stats(arg, &st) == 0 && st.idle_workers >= 4;
}

/* Inside a worker, a wait with a deadline on a task it just submitted,
 * with idle workers around: another worker runs that task (in parallel)
 * and the wait times out at its deadline, as in Python. It used to run
 * the task inline and return when the task ended. */
CF_TEST(wait_with_deadline_in_a_worker_leaves_the_task_to_idle_workers) {
  (void)state;
  cf_executor *ex = make_pool(5);
  /* Start all five workers, then let them go idle. */
  hold h;
  hold_init(&h);
  cf_future *warm[5];
  saturate(ex, &h, warm, 5);
  gate_open(&h.g);
  for (int i = 0; i < 5; i++)
    assert_int_equal(cf_future_wait(warm[i], SOON), 0);
  unref_all(warm, 5);
  assert_true(eventually(idle_at_least_4, ex));
  gate release;
  gate_init(&release);
  deadline_probe d = {.ex = ex, .release = &release};
  cf_future *f = submit(ex, task_wait_with_deadline, &d);
  /* The subtask blocks until released: had the waiter run it inline, the
   * waiting task could not finish before we open the gate. */
  assert_int_equal(cf_future_wait(f, SOON), 0);
  assert_int_equal(d.wait_rc, CF_ETIMEDOUT);
  while (atomic_load(&d.sub_thread) == 0)
    sched_yield();
  assert_false(pthread_equal(atomic_load(&d.sub_thread), d.waiter_thread));
  gate_open(&release);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&release);
  hold_destroy(&h);
}

static int initializer_with_message(void *arg) {
  return cf_raise(-ENOENT, "no configuration at %s", (const char *)arg);
}

/* A failing initializer's own code and message reach every future it
 * breaks, and are reported once on stderr (Python logs them). */
CF_TEST(initializer_failure_carries_its_message_and_is_reported_once) {
  (void)state;
  captured c;
  capture_stderr(&c);
  cf_executor *ex = make_pool_with(
      &(cf_thread_pool_opts){.max_workers = 3,
                             .initializer = initializer_with_message,
                             .initarg = "/etc/flags.conf",
                             .thread_name_prefix = "initfail"});
  cf_future *fs[6];
  for (int i = 0; i < 6; i++) {
    fs[i] = NULL;
    if (cf_executor_submit(ex, task_nop, NULL, &fs[i]) != 0)
      fs[i] = NULL; /* the pool broke already: CF_EBROKEN */
  }
  for (int i = 0; i < 6; i++) {
    if (fs[i] == NULL)
      continue;
    assert_int_equal(cf_future_result(fs[i], SOON, NULL), CF_EBROKEN);
    cf_error e = cf_future_get_error(fs[i]);
    assert_non_null(strstr(e.message, "no configuration at /etc/flags.conf"));
    assert_non_null(strstr(e.message, "ENOENT"));
  }
  assert_int_equal(cf_executor_free(ex), 0);
  char *text = captured_text(&c);
  assert_int_equal(count_occurrences(text, "no configuration at"), 1);
  assert_non_null(strstr(text, "initfail"));
  free(text);
  for (int i = 0; i < 6; i++)
    cf_future_unref(fs[i]);
}

/* shutdown with a timeout returns CF_ETIMEDOUT while a task runs, and
 * waits again when called again; free after it does not block. */
CF_TEST(shutdown_wait_has_a_deadline) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *f = submit(ex, task_wait_gate, &g);
  while (!cf_future_running(f))
    sched_yield();
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_MSEC(20)),
                   CF_ETIMEDOUT);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, 0), CF_ETIMEDOUT);
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, NULL), CF_ESHUTDOWN);
  gate_open(&g);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, SOON), 0);
  assert_true(cf_future_done(f));
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_executor_free(ex), 0);
  assert_true(cf_now_ns() - t0 < SOON);
  /* Bad flags and timeouts. */
  cf_executor *ex2 = make_pool(1);
  assert_int_equal(cf_executor_shutdown(ex2, 1u << 7, 0), CF_EINVAL);
  assert_int_equal(cf_executor_shutdown(ex2, 0, -1), CF_EINVAL);
  assert_int_equal(cf_executor_free(ex2), 0);
  cf_future_unref(f);
  gate_destroy(&g);
}

typedef struct free_from_callback {
  cf_executor *ex;
  _Atomic int rc;
} free_from_callback;

static int try_free_in_callback(cf_future *f, void *arg) {
  (void)f;
  free_from_callback *fc = arg;
  atomic_store(&fc->rc, cf_executor_free(fc->ex));
  return 0;
}

/* A done callback that shutdown(CF_SHUTDOWN_CANCEL_FUTURES) runs, and
 * that frees the same pool: refused (the shutdown is still under way on
 * this very thread), instead of waiting for itself forever. */
CF_TEST(free_from_a_callback_run_by_shutdown_is_refused) {
  (void)state;
  cf_executor *ex = make_pool(1);
  hold h;
  hold_init(&h);
  cf_future *block;
  saturate(ex, &h, &block, 1);
  cf_future *q = submit(ex, task_nop, NULL);
  free_from_callback fc = {ex, 99};
  assert_int_equal(cf_future_add_done_callback(q, try_free_in_callback, &fc),
                   0);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  assert_int_equal(atomic_load(&fc.rc), CF_EDEADLK);
  assert_true(cf_future_cancelled(q));
  gate_open(&h.g);
  cf_future_unref(q);
  cf_future_unref(block);
  assert_int_equal(cf_executor_free(ex), 0);
  hold_destroy(&h);
}

static cf_executor *pool_to_free;
static _Atomic int freed_in_dtor = 99;
static void free_pool_dtor(void *arg) {
  (void)arg;
  atomic_store(&freed_in_dtor, cf_executor_free(pool_to_free));
}

/* No worker could start, and the failed task's arg destructor (run while
 * submit settles the queue) frees the pool: that works, instead of
 * waiting for the submit that runs it. */
CF_TEST(free_from_a_destructor_run_by_a_failing_submit_works) {
  (void)state;
  pool_to_free = make_pool(2);
  cf__fault_arm(CF__FAULT_THREAD_CREATE, 0, -1);
  cf_task t = {.fn = task_nop, .arg = NULL, .arg_dtor = free_pool_dtor};
  cf_future *f;
  assert_int_equal(cf_executor_submit_task(pool_to_free, &t, 0, &f), 0);
  cf__fault_arm(CF__FAULT_THREAD_CREATE, 0, 0);
  assert_int_equal(cf_future_result(f, SOON, NULL), -EAGAIN);
  assert_int_equal(atomic_load(&freed_in_dtor), 0);
  cf_future_unref(f);
}

CF_TEST_MAIN()
