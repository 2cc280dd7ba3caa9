/* test_future.c - cf_future on its own (no executor). */
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "support.h"

static cf_future *new_future(void) {
  cf_future *f = NULL;
  assert_int_equal(cf_future_new(&f), 0);
  assert_non_null(f);
  return f;
}

static void assert_describes(const cf_future *f, const char *needle) {
  char buf[160];
  int n = cf_future_describe(f, buf, sizeof buf);
  assert_true(n > 0 && (size_t)n < sizeof buf);
  if (strstr(buf, needle) == NULL)
    fail_msg("description '%s' lacks '%s'", buf, needle);
  assert_int_equal(strncmp(buf, "<Future at 0x", 13), 0);
}

CF_TEST(new_future_is_pending) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_get_state(f), CF_PENDING);
  assert_false(cf_future_done(f));
  assert_false(cf_future_running(f));
  assert_false(cf_future_cancelled(f));
  assert_int_equal(cf_future_get_error(f).code, CF_EINVALSTATE);
  assert_describes(f, "state=pending>");
  cf_future_unref(f);
}

CF_TEST(bad_arguments) {
  (void)state;
  assert_int_equal(cf_future_new(NULL), CF_EINVAL);
  assert_int_equal(cf_future_cancel(NULL), CF_EINVAL);
  assert_int_equal(cf_future_wait(NULL, 0), CF_EINVAL);
  assert_int_equal(cf_future_wait_until(NULL, CF_FOREVER), CF_EINVAL);
  assert_int_equal(cf_future_wait_blocking(NULL, CF_FOREVER), CF_EINVAL);
  assert_int_equal(cf_future_result(NULL, 0, NULL), CF_EINVAL);
  assert_int_equal(cf_future_set_running(NULL), CF_EINVAL);
  assert_int_equal(cf_future_set_result(NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_future_set_error(NULL, -1, NULL), CF_EINVAL);
  assert_int_equal(cf_future_get_error(NULL).code, CF_EINVAL);
  assert_int_equal(cf_future_add_done_callback(NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_future_describe(NULL, NULL, 0), CF_EINVAL);
  assert_false(cf_future_done(NULL));
  assert_int_equal(cf_future_get_state(NULL), CF_STATE_INVALID);
  assert_string_equal(cf_future_state_name(CF_STATE_INVALID), "invalid");
  assert_false(cf_future_running(NULL));
  assert_false(cf_future_cancelled(NULL));
  assert_null(cf_future_ref(NULL));
  cf_future_unref(NULL);
  cf_future *f = new_future();
  assert_int_equal(cf_future_add_done_callback(f, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_future_wait(f, -1), CF_EINVAL);
  const cf_value *v = (const cf_value *)f;
  assert_int_equal(cf_future_result(f, -5, &v), CF_EINVAL);
  assert_null(v);
  char buf[8];
  assert_int_equal(cf_future_describe(f, NULL, sizeof buf), CF_EINVAL);
  assert_string_equal(cf_future_state_name((cf_future_state)42), "invalid");
  /* Done: a negative timeout is still refused (before the done path). */
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  v = (const cf_value *)f;
  assert_int_equal(cf_future_result(f, -5, &v), CF_EINVAL);
  assert_null(v);
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_non_null(v);
  cf_future_unref(f);
}

CF_TEST(running_then_result) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_set_running(f), 0);
  assert_true(cf_future_running(f));
  assert_describes(f, "state=running>");
  assert_int_equal(cf_future_set_running(f), CF_EINVALSTATE);
  cf_value v = CF_VALUE_INIT;
  v.u.i = 42;
  v.type = "int";
  assert_int_equal(cf_future_set_result(f, &v), 0);
  assert_true(cf_future_done(f));
  assert_int_equal(cf_future_get_state(f), CF_FINISHED);
  const cf_value *out = NULL;
  assert_int_equal(cf_future_result(f, 0, &out), 0);
  assert_non_null(out);
  assert_int_equal(out->u.i, 42);
  assert_int_equal(cf_future_get_error(f).code, 0);
  assert_describes(f, "state=finished returned int>");
  cf_future_unref(f);
}

CF_TEST(result_from_pending_and_null_value) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_set_result(f, NULL), 0); /* PENDING -> FINISHED */
  const cf_value *out = NULL;
  assert_int_equal(cf_future_result(f, CF_FOREVER, &out), 0);
  assert_null(out->u.ptr);
  assert_describes(f, "returned value>");
  assert_int_equal(cf_future_result(f, 0, NULL), 0);
  cf_future_unref(f);
}

CF_TEST(second_completion_is_refused) {
  (void)state;
  cf_future *f = new_future();
  cf_value v = CF_VALUE_INIT;
  v.u.ptr = &v;
  v.dtor = counting_dtor;
  assert_int_equal(cf_future_set_result(f, &v), 0);
  /* Refused: the caller keeps ownership; the future's value is kept. */
  assert_int_equal(cf_future_set_result(f, &v), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_error(f, -EIO, "late"), CF_EINVALSTATE);
  assert_int_equal(cf_future_cancel(f), CF_EBUSY);
  assert_int_equal(cf_future_set_running(f), CF_EINVALSTATE);
  assert_int_equal(atomic_load(&dtor_calls), 0);
  cf_future_unref(f);
  assert_int_equal(atomic_load(&dtor_calls), 1); /* exactly once */
}

CF_TEST(error_with_message) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_set_error(f, -ENOENT, "not found: %s", "xx.gif"),
                   0);
  const cf_value *out = (const cf_value *)f;
  assert_int_equal(cf_future_result(f, 0, &out), -ENOENT);
  assert_null(out);
  cf_error e = cf_future_get_error(f);
  const char *msg = e.message;
  assert_int_equal(e.code, -ENOENT);
  assert_string_equal(msg, "not found: xx.gif");
  assert_describes(f, "state=finished raised ENOENT>");
  cf_future_unref(f);
}

CF_TEST(error_defaults) {
  (void)state;
  cf_future *f = new_future();
  /* A non-negative code becomes CF_ETASK; no message: cf_strerror. */
  assert_int_equal(cf_future_set_error(f, 7, NULL), 0);
  cf_error e = cf_future_get_error(f);
  const char *msg = e.message;
  assert_int_equal(e.code, CF_ETASK);
  assert_string_equal(msg, cf_strerror(CF_ETASK));
  assert_describes(f, "raised CF_ETASK>");
  cf_future_unref(f);
  f = new_future();
  assert_int_equal(cf_future_set_error(f, -777, NULL), 0);
  assert_describes(f, "raised error -777>");
  cf_future_unref(f);
}

CF_TEST(cancel_pending) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_cancel(f), 0);
  assert_true(cf_future_cancelled(f));
  assert_true(cf_future_done(f));
  assert_int_equal(cf_future_cancel(f), 0); /* again: still true */
  assert_int_equal(cf_future_result(f, CF_FOREVER, NULL), CF_ECANCELED);
  cf_error e = cf_future_get_error(f);
  const char *msg = e.message;
  assert_int_equal(e.code, CF_ECANCELED);
  assert_non_null(msg);
  assert_int_equal(cf_future_set_running(f), CF_ECANCELED);
  assert_int_equal(cf_future_set_result(f, NULL), CF_EINVALSTATE);
  assert_describes(f, "state=cancelled>");
  cf_future_unref(f);
}

CF_TEST(cancel_running_is_refused) {
  (void)state;
  cf_future *f = new_future();
  assert_int_equal(cf_future_set_running(f), 0);
  assert_int_equal(cf_future_cancel(f), CF_EBUSY);
  assert_true(cf_future_running(f));
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  assert_int_equal(cf_future_cancel(f), CF_EBUSY);
  cf_future_unref(f);
}

CF_TEST(result_times_out) {
  (void)state;
  cf_future *f = new_future();
  int64_t t0 = cf_now_ns();
  assert_int_equal(cf_future_result(f, CF_MSEC(20), NULL), CF_ETIMEDOUT);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(20)); /* never early */
  assert_false(cf_future_done(f));
  assert_int_equal(cf_future_wait(f, 0), CF_ETIMEDOUT); /* poll */
  assert_int_equal(cf_future_wait_until(f, cf_now_ns() - 1), CF_ETIMEDOUT);
  assert_int_equal(cf_future_wait_blocking(f, cf_now_ns() + CF_MSEC(5)),
                   CF_ETIMEDOUT);
  cf_future_unref(f);
}

typedef struct completer_arg {
  cf_future *f;
  gate go;
  int how;     /* 0 result, 1 error, 2 cancel */
  bool waiter; /* someone waits: complete once it sleeps */
} completer_arg;

static void *completer(void *p) {
  completer_arg *a = p;
  TCHECK(gate_wait(&a->go));
  if (a->waiter)
    TCHECK(wait_parked_on(a->f)); /* the waiter sleeps: the sleep path */
  if (a->how == 0) {
    cf_value v = CF_VALUE_INIT;
    v.u.i = 7;
    TCHECK(cf_future_set_result(a->f, &v) == 0);
  } else if (a->how == 1) {
    TCHECK(cf_future_set_error(a->f, -EPIPE, "broken") == 0);
  } else {
    TCHECK(cf_future_cancel(a->f) == 0);
  }
  return NULL;
}

CF_TEST(wait_wakes_on_each_outcome) {
  (void)state;
  for (int how = 0; how < 3; how++) {
    completer_arg a;
    a.f = new_future();
    a.how = how;
    a.waiter = true;
    gate_init(&a.go);
    pthread_t t = spawn(completer, &a);
    gate_open(&a.go);
    const cf_value *v = NULL;
    int rc = cf_future_result(a.f, SOON, &v);
    pthread_join(t, NULL);
    if (how == 0) {
      assert_int_equal(rc, 0);
      assert_int_equal(v->u.i, 7);
    } else {
      assert_int_equal(rc, how == 1 ? -EPIPE : CF_ECANCELED);
    }
    gate_destroy(&a.go);
    cf_future_unref(a.f);
  }
}

/* ---- callbacks ---------------------------------------------------------- */

typedef struct cb_log {
  pthread_mutex_t mu;
  int order[16];
  int n;
  pthread_t thread[16];
  bool saw_done[16];
} cb_log;

static cb_log *the_log;

static int cb_record(cf_future *f, void *arg) {
  pthread_mutex_lock(&the_log->mu);
  int i = the_log->n++;
  the_log->order[i] = (int)(intptr_t)arg;
  the_log->thread[i] = pthread_self();
  the_log->saw_done[i] = cf_future_done(f);
  pthread_mutex_unlock(&the_log->mu);
  return 0;
}

static int cb_fail(cf_future *f, void *arg) {
  cb_record(f, arg);
  return -EIO;
}

static _Atomic int handler_calls;
static void count_handler(void *ctx, cf_future *f, int rc) {
  TCHECK(ctx == &handler_calls);
  TCHECK(f != NULL);
  TCHECK(rc == -EIO);
  atomic_fetch_add(&handler_calls, 1);
}

CF_TEST(callbacks_run_in_order_once_after_done) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  atomic_store(&handler_calls, 0);
  cf_set_callback_error_handler(count_handler, &handler_calls);
  cf_future *f = new_future();
  assert_int_equal(cf_future_add_done_callback(f, cb_record, (void *)1), 0);
  assert_int_equal(cf_future_add_done_callback(f, cb_fail, (void *)2), 0);
  assert_int_equal(cf_future_add_done_callback(f, cb_record, (void *)3), 0);
  assert_int_equal(log.n, 0);
  completer_arg a = {.f = f, .how = 0};
  gate_init(&a.go);
  pthread_t t = spawn(completer, &a);
  gate_open(&a.go);
  pthread_join(t, NULL);
  /* All three ran, in order, in the completing thread, seeing done; the
   * failing one did not stop the third and was reported once. */
  assert_int_equal(log.n, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(log.order[i], i + 1);
    assert_true(pthread_equal(log.thread[i], t));
    assert_true(log.saw_done[i]);
  }
  assert_int_equal(atomic_load(&handler_calls), 1);
  /* Added after completion: runs at once, in the caller. */
  assert_int_equal(cf_future_add_done_callback(f, cb_fail, (void *)4), 0);
  assert_int_equal(log.n, 4);
  assert_true(pthread_equal(log.thread[3], pthread_self()));
  assert_int_equal(atomic_load(&handler_calls), 2);
  cf_set_callback_error_handler(NULL, NULL);
  gate_destroy(&a.go);
  cf_future_unref(f);
}

CF_TEST(default_handler_reports_to_stderr) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  cf_future *f = new_future();
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  /* It prints one line to stderr (captured in a file here). */
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stderr);
  int saved = dup(2);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), 2) == 2);
  int rc = cf_future_add_done_callback(f, cb_fail, (void *)9);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  assert_int_equal(rc, 0);
  assert_int_equal(log.n, 1);
  char line[512] = "";
  rewind(tmp);
  assert_non_null(fgets(line, sizeof line, tmp));
  fclose(tmp);
  assert_non_null(strstr(line, "cfutures: exception calling callback for "
                               "<Future at 0x"));
  assert_non_null(strstr(line, "state=finished"));
  assert_non_null(strstr(line, "(-5)")); /* -EIO */
  cf_future_unref(f);
}

CF_TEST(cancel_runs_callbacks) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  cf_future *f = new_future();
  assert_int_equal(cf_future_add_done_callback(f, cb_record, (void *)5), 0);
  assert_int_equal(cf_future_cancel(f), 0);
  assert_int_equal(log.n, 1);
  assert_true(log.saw_done[0]);
  cf_future_unref(f);
}

CF_TEST(callback_alloc_failure_means_never_called) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  cf_future *f = new_future();
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(cf_future_add_done_callback(f, cb_record, (void *)1),
                   CF_ENOMEM);
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  assert_int_equal(log.n, 0); /* the libuv rule: error => never called */
  cf_future_unref(f);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(cf_future_new(&f), CF_ENOMEM);
  assert_null(f);
}

/* A callback may use the future API on the same future and others. */
static cf_future *other;
static int cb_reenter(cf_future *f, void *arg) {
  (void)arg;
  TCHECK(cf_future_result(f, 0, NULL) == 0);
  TCHECK(cf_future_add_done_callback(f, cb_record, (void *)8) == 0);
  TCHECK(cf_future_cancel(other) == 0);
  char buf[100];
  TCHECK(cf_future_describe(f, buf, sizeof buf) > 0);
  return 0;
}

CF_TEST(callbacks_may_reenter) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  cf_future *f = new_future();
  other = new_future();
  assert_int_equal(cf_future_add_done_callback(f, cb_reenter, NULL), 0);
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  assert_int_equal(log.n, 1); /* the nested add ran at once */
  assert_true(cf_future_cancelled(other));
  cf_future_unref(other);
  cf_future_unref(f);
}

CF_TEST(callbacks_freed_when_never_completed) {
  (void)state;
  cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
  the_log = &log;
  cf_future *f = new_future();
  assert_int_equal(cf_future_add_done_callback(f, cb_record, NULL), 0);
  assert_int_equal(cf_future_add_done_callback(f, cb_record, NULL), 0);
  cf_future_unref(f); /* LeakSanitizer checks the nodes are freed */
  assert_int_equal(log.n, 0);
}

CF_TEST(references_and_value_destructor) {
  (void)state;
  cf_future *f = new_future();
  assert_ptr_equal(cf_future_ref(f), f);
  assert_ptr_equal(cf_future_ref(f), f);
  cf_value v = CF_VALUE_INIT;
  v.u.ptr = &v;
  v.dtor = counting_dtor;
  assert_int_equal(cf_future_set_result(f, &v), 0);
  cf_future_unref(f);
  cf_future_unref(f);
  assert_int_equal(atomic_load(&dtor_calls), 0);
  cf_future_unref(f);
  assert_int_equal(atomic_load(&dtor_calls), 1);
}

CF_TEST(describe_truncates_like_snprintf) {
  (void)state;
  cf_future *f = new_future();
  char full[128], small[10];
  int n = cf_future_describe(f, full, sizeof full);
  assert_int_equal(cf_future_describe(f, small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_int_equal(strncmp(full, small, sizeof small - 1), 0);
  assert_int_equal(cf_future_describe(f, NULL, 0), n);
  cf_future_unref(f);
}

/* ---- wait hooks ---------------------------------------------------------- */

static _Atomic int hook_calls;
static int counting_hook(void *ctx, cf_future *f, int64_t deadline) {
  TCHECK(ctx == &hook_calls);
  atomic_fetch_add(&hook_calls, 1);
  return cf_future_wait_blocking(f, deadline);
}

CF_TEST(wait_hook_is_used_and_restored) {
  (void)state;
  atomic_store(&hook_calls, 0);
  cf_wait_hook mine = {.wait = counting_hook, .ctx = &hook_calls}, prev = {0};
  cf_wait_hook_swap(&mine, &prev);
  assert_null(prev.wait);
  cf_future *f = new_future();
  assert_int_equal(cf_future_wait(f, CF_MSEC(1)), CF_ETIMEDOUT);
  assert_int_equal(atomic_load(&hook_calls), 1);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_ETIMEDOUT);
  assert_int_equal(atomic_load(&hook_calls), 2);
  assert_int_equal(cf_future_set_result(f, NULL), 0);
  /* A done future never reaches the hook. */
  assert_int_equal(cf_future_result(f, CF_FOREVER, NULL), 0);
  assert_int_equal(atomic_load(&hook_calls), 2);
  cf_wait_hook back = {0};
  cf_wait_hook_swap(&prev, &back);
  assert_ptr_equal(back.wait, counting_hook);
  cf_future *g = new_future();
  assert_int_equal(cf_future_wait(g, 0), CF_ETIMEDOUT);
  assert_int_equal(atomic_load(&hook_calls), 2); /* removed */
  cf_future_unref(g);
  cf_future_unref(f);
}

static void *hook_in_thread(void *arg) {
  (void)arg;
  cf_wait_hook prev;
  cf_wait_hook_swap(NULL, &prev);
  TCHECK(prev.wait == NULL); /* hooks are per thread */
  return NULL;
}

CF_TEST(wait_hook_is_per_thread) {
  (void)state;
  cf_wait_hook mine = {.wait = counting_hook, .ctx = &hook_calls};
  cf_wait_hook_swap(&mine, NULL);
  pthread_join(spawn(hook_in_thread, NULL), NULL);
  cf_wait_hook_swap(NULL, NULL);
}

CF_TEST(raise_outside_a_task_is_harmless) {
  (void)state;
  assert_int_equal(cf_raise(-EIO, "nobody listens %d", 1), -EIO);
  assert_int_equal(cf_raise(0, NULL), CF_ETASK);
  assert_int_equal(cf_raise(5, "%s", "x"), CF_ETASK);
}

CF_TEST_MAIN()
