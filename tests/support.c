/* support.c - see support.h. */
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "future_int.h"
#include "pool.h"

_Atomic int cf_test_thread_failures;
_Atomic long dtor_calls;

int cf_test_setup(void **state) {
  (void)state;
  atomic_store(&cf_test_thread_failures, 0);
  atomic_store(&dtor_calls, 0);
  return 0;
}

int cf_test_teardown(void **state) {
  (void)state;
  for (int i = 0; i < CF__FAULT_NPOINTS; i++)
    cf__fault_arm((cf__fault_point)i, 0, 0);
  int failures = atomic_load(&cf_test_thread_failures);
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed in other threads\n", failures);
    return -1;
  }
  return 0;
}

#define MAX_CASES 256
static struct CMUnitTest cases[MAX_CASES];
static size_t ncases;

void cf_test_register(const char *name, void (*fn)(void **state)) {
  if (ncases == MAX_CASES) {
    fprintf(stderr, "too many test cases in one file (max %d)\n", MAX_CASES);
    abort();
  }
  struct CMUnitTest t = {name, fn, cf_test_setup, cf_test_teardown, NULL};
  cases[ncases++] = t;
}

int cf_test_main(int argc, char **argv) {
  const struct CMUnitTest *tests = cases;
  size_t n = ncases;
  if (argc > 1) {
    /* Run exactly one case; an unknown name is an error, not a pass. */
    for (size_t i = 0; i < n; i++) {
      if (strcmp(tests[i].name, argv[1]) == 0) {
        cmocka_set_test_filter(argv[1]);
        return _cmocka_run_group_tests(argv[0], tests, n, NULL, NULL);
      }
    }
    fprintf(stderr, "%s: no test case named '%s'\n", argv[0], argv[1]);
    return 2;
  }
  return _cmocka_run_group_tests(argv[0], tests, n, NULL, NULL);
}

static void abs_deadline(struct timespec *ts, int64_t from_now_ns) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  int64_t ns = ts->tv_nsec + from_now_ns % 1000000000;
  ts->tv_sec += (time_t)(from_now_ns / 1000000000 + ns / 1000000000);
  ts->tv_nsec = (long)(ns % 1000000000);
}

static void cond_init_mono(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
}

void gate_init(gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  cond_init_mono(&g->cv);
  g->open = 0;
}

void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

bool gate_wait(gate *g) {
  struct timespec ts;
  abs_deadline(&ts, SOON);
  pthread_mutex_lock(&g->mu);
  int rc = 0;
  while (!g->open && rc == 0)
    rc = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
  bool open = g->open;
  pthread_mutex_unlock(&g->mu);
  return open;
}

void gate_destroy(gate *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

void counter_init(counter *c) {
  pthread_mutex_init(&c->mu, NULL);
  cond_init_mono(&c->cv);
  c->value = 0;
}

void counter_add(counter *c, long d) {
  pthread_mutex_lock(&c->mu);
  c->value += d;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

long counter_get(counter *c) {
  pthread_mutex_lock(&c->mu);
  long v = c->value;
  pthread_mutex_unlock(&c->mu);
  return v;
}

bool counter_wait_ge(counter *c, long target) {
  struct timespec ts;
  abs_deadline(&ts, SOON);
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  while (c->value < target && rc == 0)
    rc = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
  bool ok = c->value >= target;
  pthread_mutex_unlock(&c->mu);
  return ok;
}

void counter_destroy(counter *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

bool eventually(bool (*pred)(void *arg), void *arg) {
  int64_t end = cf_now_ns() + SOON;
  while (!pred(arg)) {
    if (cf_now_ns() > end)
      return false;
    usleep(1000);
  }
  return true;
}

cf_executor *make_pool_with(const cf_thread_pool_opts *opts) {
  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(opts, &ex), 0);
  assert_non_null(ex);
  return ex;
}

cf_executor *make_pool(int max_workers) {
  return make_pool_with(&(cf_thread_pool_opts){.max_workers = max_workers});
}

pthread_t spawn(void *(*fn)(void *), void *arg) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, arg) != 0) {
    fprintf(stderr, "pthread_create failed\n");
    abort();
  }
  return t;
}

void expect_map_multiples(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                          void *state, const cf_map_opts *o, int64_t factor,
                          int64_t n) {
  cf_map *m;
  assert_int_equal(cf_executor_map(ex, fn, next, state, o, &m), 0);
  cf_value v;
  int64_t i = 0;
  int rc;
  while ((rc = cf_map_next(m, &v)) == 1) {
    assert_int_equal(v.u.i, factor * i);
    i++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(i, n);
  cf_map_free(m);
}

int task_return_arg(void *arg, cf_value *result) {
  result->u.i = (intptr_t)arg;
  result->type = "int";
  return 0;
}

int task_wait_gate(void *arg, cf_value *result) {
  (void)result;
  TCHECK(gate_wait(arg));
  return 0;
}

int task_fail(void *arg, cf_value *result) {
  (void)result;
  int code = (int)(intptr_t)arg;
  return cf_raise(code, "task failed on purpose with %d", code);
}

int task_nop(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return 0;
}

void counting_dtor(void *p) {
  (void)p;
  atomic_fetch_add(&dtor_calls, 1);
}

long stress_div(void) {
  const char *d = getenv("CF_STRESS_DIV");
  long div = d != NULL ? atol(d) : 1;
  return div > 1 ? div : 1;
}

long scaled(long n) { return n / stress_div(); }

void capture_stderr(captured *c) {
  c->tmp = tmpfile();
  assert_non_null(c->tmp);
  fflush(stderr);
  c->saved = dup(2);
  assert_true(c->saved >= 0);
  assert_int_equal(dup2(fileno(c->tmp), 2), 2);
}

char *captured_text(captured *c) {
  fflush(stderr);
  dup2(c->saved, 2);
  close(c->saved);
  long n = ftell(c->tmp);
  char *text = calloc(1, n > 0 ? (size_t)n + 1 : 1);
  assert_non_null(text);
  rewind(c->tmp);
  if (n > 0 && fread(text, 1, (size_t)n, c->tmp) != (size_t)n)
    text[0] = '\0';
  fclose(c->tmp);
  return text;
}

int count_occurrences(const char *haystack, const char *needle) {
  int n = 0;
  size_t len = strlen(needle);
  for (const char *p = strstr(haystack, needle); p != NULL;
       p = strstr(p + len, needle))
    n++;
  return n;
}

int run_in_child(void (*fn)(void *arg), void *arg, char **err) {
  int fds[2];
  if (err != NULL && pipe(fds) != 0)
    return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    if (err != NULL) {
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
    }
    fn(arg);
    _exit(0);
  }
  char *text = NULL;
  size_t len = 0;
  if (err != NULL) {
    close(fds[1]);
    char buf[4096];
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof buf)) > 0) {
      char *t = realloc(text, len + (size_t)r + 1);
      if (t == NULL)
        break;
      text = t;
      memcpy(text + len, buf, (size_t)r);
      len += (size_t)r;
      text[len] = '\0';
    }
    close(fds[0]);
    *err = text != NULL ? text : calloc(1, 1);
  }
  return wait_child_for(pid, SOON);
}

int wait_child_for(pid_t pid, int64_t timeout_ns) {
  int64_t end = cf_now_ns() + timeout_ns;
  int status;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid)
      return status;
    if (w < 0 || cf_now_ns() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(1000);
  }
}

static bool all_listened(void *arg) {
  cf_future *const *fs = ((cf_future *const **)arg)[0];
  size_t n = (size_t)(uintptr_t)((void **)arg)[1];
  for (size_t i = 0; i < n; i++)
    if (!(atomic_load(&fs[i]->state) & CF__FL_LISTENERS) &&
        !cf_future_done(fs[i]))
      return false;
  return true;
}

bool wait_listened(cf_future *const *fs, size_t n) {
  const void *arg[2] = {fs, (void *)(uintptr_t)n};
  int64_t end = cf_now_ns() + SOON;
  while (!all_listened(arg)) {
    if (cf_now_ns() > end)
      return false;
    sched_yield();
  }
  return true;
}

bool wait_parked_on(cf_future *f) {
  int64_t end = cf_now_ns() + SOON;
  while (!(atomic_load(&f->state) & CF__FL_WAITERS)) {
    if (cf_now_ns() > end)
      return false;
    sched_yield();
  }
  return true;
}

bool wait_blocked_submitter(cf_executor *ex) {
  pool *p = (pool *)ex;
  int64_t end = cf_now_ns() + SOON;
  while (atomic_load(&p->space_waiters) == 0) {
    if (cf_now_ns() > end)
      return false;
    sched_yield();
  }
  return true;
}

const cf_loop_opts *test_loop_opts(const cf_loop_opts *o) {
  static cf_loop_opts opts;
  memset(&opts, 0, sizeof opts);
  if (o != NULL)
    opts = *o;
  const char *e = getenv("CF_TEST_SHARED_STACK");
  if (e != NULL && strcmp(e, "1") == 0)
    opts.shared_stack = true;
  return &opts;
}

void expect_child_dies_saying(void (*fn)(void *arg), void *arg,
                              const char *message) {
  char *err = NULL;
  int st = run_in_child(fn, arg, &err);
  assert_true(st != -1);
  assert_true(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
  assert_non_null(err);
  if (strstr(err, message) == NULL)
    fprintf(stderr, "child said: %s\n", err);
  assert_non_null(strstr(err, message));
  free(err);
}

static int recursion_sink;
int deep_recursion(int n) {
  volatile char pad[512];
  pad[0] = (char)n;
  recursion_sink += pad[0];
  return n <= 0 ? 0 : deep_recursion(n - 1) + pad[0];
}
