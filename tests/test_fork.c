/*
 * test_fork.c - the library in the child of a fork(): fresh pools work
 * even when the parent forked while its threads were inside the library,
 * and the parent's pools fail clearly there, never leaving a future
 * pending.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cf/loop.h"
#include "executor_int.h"
#include "future_int.h"
#include "support.h"

/* ThreadSanitizer cannot follow a child of a multi-threaded process that
 * starts threads (it dies, or reports the reused thread ids of the
 * parent's threads): under it the child checks what needs no new thread,
 * and the plain and AddressSanitizer builds run everything. */
#if defined(__SANITIZE_THREAD__)
#define CHILD_MAY_START_THREADS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHILD_MAY_START_THREADS 0
#endif
#endif
#ifndef CHILD_MAY_START_THREADS
#define CHILD_MAY_START_THREADS 1
#endif

/* The AddressSanitizer of gcc 12 and clang 14 takes no lock of its
 * allocator around fork() (LLVM added that at the end of 2023, PR 75290):
 * a child forked while other threads allocate may hang in its first
 * malloc, whatever the program does. Under it, the test that forks while
 * threads churn checks the parent's side only. */
#if defined(__SANITIZE_ADDRESS__)
#define CHILD_MAY_ALLOCATE_UNDER_LOAD 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHILD_MAY_ALLOCATE_UNDER_LOAD 0
#endif
#endif
#ifndef CHILD_MAY_ALLOCATE_UNDER_LOAD
#define CHILD_MAY_ALLOCATE_UNDER_LOAD 1
#endif

/* Fails the case unless a child from run_in_child ended by exiting 0. */
#define assert_child_ok(status)                                                \
  do {                                                                         \
    int st_ = (status);                                                        \
    if (st_ == -1)                                                             \
      fail_msg("the child hung");                                              \
    if (!WIFEXITED(st_) || WEXITSTATUS(st_) != 0)                              \
      fail_msg("the child failed (status %#x, exit %d)", st_,                  \
               WIFEXITED(st_) ? WEXITSTATUS(st_) : -1);                        \
  } while (0)

/* In the child: a new pool runs a task; exits 0 if it worked. */
static int child_uses_a_new_pool(void) {
  cf_future *own;
  if (cf_future_new(&own) != 0 || cf_future_set_result(own, NULL) != 0 ||
      cf_future_wait(own, 0) != 0)
    return 9;
  cf_future_unref(own);
  if (!CHILD_MAY_START_THREADS)
    return 0;
  cf_executor *ex;
  if (cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers = 2}, &ex) != 0)
    return 10;
  cf_future *fs[4];
  for (int i = 0; i < 4; i++)
    if (cf_executor_submit(ex, task_return_arg, (void *)(intptr_t)(i + 1),
                           &fs[i]) != 0)
      return 11;
  size_t nd = 0;
  if (cf_wait(fs, 4, SOON, CF_ALL_COMPLETED, NULL, &nd, NULL, NULL) != 0 ||
      nd != 4)
    return 12;
  cf_as_completed *it;
  if (cf_as_completed_new(fs, 4, SOON, &it) != 0)
    return 13;
  int64_t sum = 0;
  cf_future *f;
  while (cf_as_completed_next(it, &f) == 1) {
    const cf_value *v;
    if (cf_future_result(f, 0, &v) != 0)
      return 14;
    sum += v->u.i;
    cf_future_unref(f);
  }
  cf_as_completed_free(it);
  for (int i = 0; i < 4; i++)
    cf_future_unref(fs[i]);
  if (sum != 10)
    return 15;
  return cf_executor_free(ex) == 0 ? 0 : 16;
}

static void child_main(void *arg) {
  (void)arg;
  _exit(CHILD_MAY_ALLOCATE_UNDER_LOAD ? child_uses_a_new_pool() : 0);
}

/* Threads of the parent that keep the library's locks busy: waiting in
 * as_completed and cf_wait on futures that complete all the time, and
 * running done callbacks. */
typedef struct churn {
  cf_executor *ex;
  _Atomic bool stop;
  int kind;
} churn;

static int noop_callback(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  return 0;
}

static void *churner(void *arg) {
  churn *c = arg;
  while (!atomic_load(&c->stop)) {
    cf_future *fs[8];
    for (int i = 0; i < 8; i++) {
      if (cf_executor_submit(c->ex, task_nop, NULL, &fs[i]) != 0)
        return NULL;
      cf_future_add_done_callback(fs[i], noop_callback, NULL);
    }
    if (c->kind == 0) {
      cf_as_completed *it;
      if (cf_as_completed_new(fs, 8, SOON, &it) == 0) {
        cf_future *f;
        while (cf_as_completed_next(it, &f) == 1)
          cf_future_unref(f);
        cf_as_completed_free(it);
      }
    } else {
      cf_wait(fs, 8, SOON, c->kind == 1 ? CF_FIRST_COMPLETED : CF_ALL_COMPLETED,
              NULL, NULL, NULL, NULL);
    }
    for (int i = 0; i < 8; i++) {
      cf_future_wait(fs[i], SOON);
      cf_future_unref(fs[i]);
    }
  }
  return NULL;
}

/* A child forked while other threads are inside as_completed, cf_wait
 * and callbacks can use a new pool. It used to deadlock on a stripe mutex
 * about 7 times in 200. */
CF_TEST(child_can_use_a_new_pool_while_parent_threads_are_inside) {
  (void)state;
  cf_executor *ex = make_pool(2);
  churn cs[3];
  pthread_t ts[3];
  for (int i = 0; i < 3; i++) {
    cs[i].ex = ex;
    cs[i].kind = i;
    atomic_init(&cs[i].stop, false);
    ts[i] = spawn(churner, &cs[i]);
  }
  long rounds = scaled(200);
  for (long r = 0; r < rounds; r++) {
    int status = run_in_child(child_main, NULL, NULL);
    if (status == -1)
      fail_msg("round %ld: the child hung", r);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("round %ld: the child failed (status %#x)", r, status);
  }
  for (int i = 0; i < 3; i++) {
    atomic_store(&cs[i].stop, true);
    pthread_join(ts[i], NULL);
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

/* The parent's pool, with a task running and tasks queued, as the child
 * sees it. */
typedef struct parent_pool {
  cf_executor *ex;
  cf_future *running, *queued[3];
} parent_pool;

static int parent_pool_in_child(parent_pool *pp) {
  /* Work is refused with a clear error. */
  cf_future *f = NULL;
  if (cf_executor_submit(pp->ex, task_nop, NULL, &f) != CF_EFORKED || f != NULL)
    return 20;
  /* Its futures do not stay pending: waiting settles them. */
  const cf_value *v;
  if (cf_future_result(pp->queued[0], SOON, &v) != CF_EFORKED)
    return 21;
  cf_error e = cf_future_get_error(pp->queued[0]);
  if (strstr(e.message, "parent") == NULL)
    return 22;
  if (cf_future_result(pp->running, SOON, NULL) != CF_EFORKED)
    return 23;
  for (int i = 1; i < 3; i++)
    if (!cf_future_done(pp->queued[i]))
      return 24;
  /* It reports no worker, and is freed without joining threads that do
   * not exist here. */
  cf_executor_stats st;
  if (cf_executor_get_stats(pp->ex, &st) != 0 || st.workers != 0)
    return 25;
  if (cf_executor_free(pp->ex) != 0)
    return 26;
  /* A new pool works. */
  return child_uses_a_new_pool();
}

static void parent_pool_child_main(void *arg) {
  _exit(parent_pool_in_child(arg));
}

CF_TEST(parent_pool_fails_clearly_in_the_child) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  parent_pool pp = {ex, NULL, {NULL}};
  assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &pp.running), 0);
  while (!cf_future_running(pp.running))
    sched_yield();
  for (int i = 0; i < 3; i++)
    assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &pp.queued[i]), 0);
  assert_child_ok(run_in_child(parent_pool_child_main, &pp, NULL));
  /* The parent's pool is untouched by all that. */
  gate_open(&g);
  assert_int_equal(cf_future_result(pp.running, SOON, NULL), 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(cf_future_result(pp.queued[i], SOON, NULL), 0);
    cf_future_unref(pp.queued[i]);
  }
  cf_future_unref(pp.running);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

static int task_fork(void *arg, cf_value *result) {
  (void)arg;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0)
    _exit(child_uses_a_new_pool());
  if (pid < 0)
    return -errno;
  int status;
  if (waitpid(pid, &status, 0) != pid)
    return -errno;
  result->u.i = status;
  return 0;
}

/* A task that forks: the child (which is a copy of that worker) can use
 * the library afresh. */
CF_TEST(child_forked_inside_a_task_can_use_the_library) {
  (void)state;
  cf_executor *ex = make_pool(2);
  cf_future *f;
  assert_int_equal(cf_executor_submit(ex, task_fork, NULL, &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  int status = (int)v->u.i;
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* A task that forks and, in the child, touches the parent's pool: the
 * futures the forking worker is running (its own, and the outer task it
 * ran it beneath) stay RUNNING there and its returns finish them, with
 * what the tasks return; a wait on one of them from that thread is
 * CF_EDEADLK. They used to be settled with CF_EFORKED, and the tasks then
 * wrote their outcomes over the published ones. */
/* The child's own waits are bounded by SOON: twice that for the child. */
static int wait_child_bounded(pid_t pid) {
  return wait_child_for(pid, 2 * SOON);
}

/* Forks from inside a task. Returns 0 in the child; in the parent waits
 * for the child (bounded), stores its wait status in *status and returns
 * 1; a negative errno if fork fails. */
static int fork_in_task(int64_t *status) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid == 0)
    return 0;
  *status = wait_child_bounded(pid);
  return 1;
}

typedef struct forking_pair {
  cf_executor *ex;
  _Atomic(cf_future *) outer, inner;
} forking_pair;

#define CHILD_SAW_ITS_OWN_RESULT 7

/* Fails the test unless a child's wait status says it exited with
 * CHILD_SAW_ITS_OWN_RESULT. */
static void assert_child_saw_its_own_result(int status) {
  if (!WIFEXITED(status) || WEXITSTATUS(status) != CHILD_SAW_ITS_OWN_RESULT)
    fail_msg("a child failed (status %#x, exit %d)", status,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static int child_sees_outer_result(cf_future *f, void *arg) {
  (void)arg;
  const cf_value *v;
  if (cf_future_result(f, 0, &v) != 0 || v->u.i != 4243)
    _exit(50);
  _exit(CHILD_SAW_ITS_OWN_RESULT);
}

static int task_inner_forks(void *arg, cf_value *result) {
  forking_pair *fp = arg;
  int rc = fork_in_task(&result->u.i);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  /* The child: this submit finds the parent's pool and settles it. */
  cf_future *g = NULL;
  if (cf_executor_submit(fp->ex, task_nop, NULL, &g) != CF_EFORKED)
    _exit(40);
  cf_future *outer = atomic_load(&fp->outer);
  cf_future *inner = atomic_load(&fp->inner);
  if (cf_future_get_state(outer) != CF_RUNNING ||
      cf_future_get_state(inner) != CF_RUNNING)
    _exit(41);
  if (cf_future_wait(outer, CF_MSEC(100)) != CF_EDEADLK ||
      cf_future_wait(inner, CF_MSEC(100)) != CF_EDEADLK)
    _exit(42);
  /* The waits on many see their own stack too, and so do the pool's
   * shutdown and free, which would wait for this task. */
  cf_future *both[2] = {outer, inner};
  if (cf_wait(both, 2, CF_MSEC(100), CF_ALL_COMPLETED, NULL, NULL, NULL,
              NULL) != CF_EDEADLK)
    _exit(44);
  cf_as_completed *it;
  cf_future *next = NULL;
  if (cf_as_completed_new(both, 2, CF_MSEC(100), &it) != 0 ||
      cf_as_completed_next(it, &next) != CF_EDEADLK)
    _exit(45);
  cf_as_completed_free(it);
  if (cf_executor_shutdown(fp->ex, CF_SHUTDOWN_WAIT, CF_MSEC(100)) !=
          CF_EDEADLK ||
      cf_executor_free(fp->ex) != CF_EDEADLK)
    _exit(46);
  if (cf_future_add_done_callback(outer, child_sees_outer_result, NULL) != 0)
    _exit(43);
  result->u.i = 4242;
  return 0; /* the outer task goes on, and its return ends this child */
}

static int task_outer_waits(void *arg, cf_value *result) {
  forking_pair *fp = arg;
  while (atomic_load(&fp->outer) == NULL) /* the test stored our future */
    sched_yield();
  cf_future *inner;
  int rc = cf_executor_submit(fp->ex, task_inner_forks, fp, &inner);
  if (rc != 0)
    return rc;
  atomic_store(&fp->inner, inner);
  /* The only worker is this one: it runs the inner task beneath us. */
  const cf_value *v;
  rc = cf_future_result(inner, SOON, &v);
  if (rc == 0)
    result->u.i = v->u.i + 1;
  cf_future_unref(inner);
  return rc;
}

CF_TEST(a_task_that_forks_finishes_its_own_futures_in_the_child) {
  (void)state;
  forking_pair fp = {make_pool(1), NULL, NULL};
  cf_future *outer;
  assert_int_equal(
      cf_executor_submit(fp.ex, task_outer_waits, &fp, &outer), 0);
  atomic_store(&fp.outer, outer);
  const cf_value *v;
  assert_int_equal(cf_future_result(outer, SOON, &v), 0);
  int status = (int)(v->u.i - 1);
  assert_child_saw_its_own_result(status);
  cf_future_unref(outer);
  assert_int_equal(cf_executor_free(fp.ex), 0);
}

/* The same with the forking task run by a worker that was helping while
 * its task waited: in the child, once the forking task returns, the wait
 * goes on as a plain wait, never running the parent's queued work (it
 * used to run the next queued task a second time in the child), and a
 * free from another thread of the child waits for the task that forked
 * to return instead of freeing the pool under it. */
typedef struct helper_fork {
  cf_executor *ex;
  cf_future *u;               /* what the outer task waits for */
  _Atomic int forked_status;  /* the child's status, in the parent */
  _Atomic int status_known;
} helper_fork;

static int ran_in_this_process; /* by task_marks, in this process */

static int task_marks(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  ran_in_this_process = 1;
  return 0;
}

static bool has_a_sleeping_waiter(void *arg) {
  return (atomic_load(&((cf_future *)arg)->state) & CF__FL_WAITERS) != 0;
}

static void *child_completes_then_frees(void *arg) {
  helper_fork *hf = arg;
  /* Once the outer task sleeps on u it is past whatever its wait ran
   * first (with the defect, the queued task_marks). */
  if (!eventually(has_a_sleeping_waiter, hf->u))
    _exit(64);
  if (cf_future_set_result(hf->u, NULL) != 0)
    _exit(60);
  if (cf_executor_free(hf->ex) != 0) /* waits for the outer task */
    _exit(61);
  _exit(ran_in_this_process ? 62 : CHILD_SAW_ITS_OWN_RESULT);
}

static int task_forks_beneath_a_helper(void *arg, cf_value *result) {
  (void)result;
  helper_fork *hf = arg;
  int64_t status;
  int rc = fork_in_task(&status);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    atomic_store(&hf->forked_status, (int)status);
    atomic_store(&hf->status_known, 1);
    return 0;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, child_completes_then_frees, hf) != 0)
    _exit(63);
  return 0; /* back into the outer task's wait, in the child */
}

static int task_helps_while_waiting(void *arg, cf_value *result) {
  (void)result;
  helper_fork *hf = arg;
  cf_future *forks, *marks;
  if (cf_executor_submit(hf->ex, task_forks_beneath_a_helper, hf, &forks) !=
          0 ||
      cf_executor_submit(hf->ex, task_marks, NULL, &marks) != 0)
    return CF_EINVAL;
  /* The only worker waits with no deadline on a future no task of the
   * pool completes: it runs the queued tasks meanwhile, in order. */
  int rc = cf_future_wait(hf->u, CF_FOREVER);
  cf_future_unref(forks);
  cf_future_unref(marks);
  return rc;
}

CF_TEST(a_helping_worker_that_forked_runs_nothing_more_in_the_child) {
  (void)state;
#if !CHILD_MAY_START_THREADS
  skip(); /* the child starts a thread */
#endif
  ran_in_this_process = 0;
  helper_fork hf = {make_pool(1), NULL, 0, 0};
  assert_int_equal(cf_future_new(&hf.u), 0);
  cf_future *outer;
  assert_int_equal(
      cf_executor_submit(hf.ex, task_helps_while_waiting, &hf, &outer), 0);
  /* The child's own waits are bounded by SOON, and the wait for it too. */
  int64_t end = cf_now_ns() + 3 * SOON;
  while (!atomic_load(&hf.status_known) && cf_now_ns() < end)
    usleep(1000);
  assert_true(atomic_load(&hf.status_known));
  int status = atomic_load(&hf.forked_status);
  assert_child_saw_its_own_result(status);
  assert_int_equal(cf_future_set_result(hf.u, NULL), 0);
  assert_int_equal(cf_future_result(outer, SOON, NULL), 0);
  cf_future_unref(outer);
  cf_future_unref(hf.u);
  assert_int_equal(cf_executor_free(hf.ex), 0);
}

/* A task of pool A forks (child C1, where that task goes on and keeps
 * A's futures); there it runs a task on a new pool B, which forks again
 * (grandchild C2). In C2 the thread that kept A's futures does not exist:
 * they are settled as the parent's (CF_EFORKED) and A frees at once. B's
 * forking task, the keeper of B's futures in C2, used to revive A's
 * keeper too, and both hung. */
typedef struct nested_keepers {
  cf_executor *a;
  _Atomic(cf_future *) fa; /* the task of A that forks first */
} nested_keepers;

static int task_forks_into_grandchild(void *arg, cf_value *result) {
  nested_keepers *nk = arg;
  int rc = fork_in_task(&result->u.i);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  cf_future *fa = atomic_load(&nk->fa);
  if (cf_future_wait(fa, CF_SEC(5)) != 0)
    _exit(70); /* waited for a keeper that is not here */
  cf_error e = cf_future_get_error(fa);
  if (cf_future_get_state(fa) != CF_FINISHED || e.code != CF_EFORKED)
    _exit(71);
  if (cf_executor_free(nk->a) != 0) /* hung here, waiting for the keeper */
    _exit(72);
  _exit(CHILD_SAW_ITS_OWN_RESULT);
}

static int task_forks_then_uses_a_new_pool(void *arg, cf_value *result) {
  nested_keepers *nk = arg;
  while (atomic_load(&nk->fa) == NULL)
    sched_yield();
  int frc = fork_in_task(&result->u.i);
  if (frc != 0)
    return frc < 0 ? frc : 0;
  /* C1: this task goes on here, keeper of A's futures. */
  cf_executor *b;
  cf_thread_pool_opts o = {.max_workers = 1};
  if (cf_thread_pool_new(&o, &b) != 0)
    _exit(73);
  cf_future *fb;
  if (cf_executor_submit(b, task_forks_into_grandchild, nk, &fb) != 0)
    _exit(74);
  const cf_value *v;
  if (cf_future_result(fb, CF_FOREVER, &v) != 0)
    _exit(75);
  int status = (int)v->u.i;
  cf_future_unref(fb);
  if (cf_executor_free(b) != 0)
    _exit(76);
  if (!WIFEXITED(status))
    _exit(77);
  _exit(WEXITSTATUS(status));
}

CF_TEST(a_keeper_in_a_grandchild_does_not_revive_an_older_one) {
  (void)state;
#if !CHILD_MAY_START_THREADS
  skip(); /* the child starts a pool */
#endif
  nested_keepers nk = {make_pool(1), NULL};
  cf_future *fa;
  assert_int_equal(
      cf_executor_submit(nk.a, task_forks_then_uses_a_new_pool, &nk, &fa), 0);
  atomic_store(&nk.fa, fa);
  const cf_value *v;
  assert_int_equal(cf_future_result(fa, 3 * SOON, &v), 0);
  int status = (int)v->u.i;
  assert_child_saw_its_own_result(status);
  cf_future_unref(fa);
  assert_int_equal(cf_executor_free(nk.a), 0);
}

/* A worker whose submit waits for room in a full queue runs queued work
 * meanwhile; one of those tasks forks. In the child the submit resumes
 * for a pool that is now the parent's: it fails with CF_EFORKED (it used
 * to queue the task, and could start a worker for the parent's pool). */
static bool forked_here; /* set in the child's copy only */

static int task_forks_and_returns(void *arg, cf_value *result) {
  (void)arg;
  int rc = fork_in_task(&result->u.i);
  if (rc == 0)
    forked_here = true; /* and back into the submit that ran it */
  return rc < 0 ? rc : 0;
}

static int task_submits_into_a_full_queue(void *arg, cf_value *result) {
  cf_executor *ex = arg;
  cf_future *forks, *nop;
  if (cf_executor_submit(ex, task_forks_and_returns, NULL, &forks) != 0)
    return CF_EINVAL; /* the queue (max_queued 1) is full now */
  int rc = cf_executor_submit(ex, task_nop, NULL, &nop);
  if (forked_here)
    _exit(rc == CF_EFORKED ? CHILD_SAW_ITS_OWN_RESULT : 80);
  if (rc != 0)
    return rc;
  const cf_value *v;
  rc = cf_future_result(forks, CF_FOREVER, &v);
  if (rc == 0)
    result->u.i = v->u.i;
  cf_future_unref(forks);
  cf_future_unref(nop);
  return rc;
}

CF_TEST(a_submit_waiting_for_room_fails_in_the_child_of_a_task_it_ran) {
  (void)state;
  cf_thread_pool_opts o = {.max_workers = 1, .max_queued = 1};
  cf_executor *ex = make_pool_with(&o);
  cf_future *outer;
  assert_int_equal(
      cf_executor_submit(ex, task_submits_into_a_full_queue, ex, &outer), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(outer, 3 * SOON, &v), 0);
  int status = (int)v->u.i;
  assert_child_saw_its_own_result(status);
  cf_future_unref(outer);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- what the parent's threads were doing at the fork -------------------- */

typedef struct waiting_shutdown {
  cf_executor *ex;
  int rc;
} waiting_shutdown;

static void *shutdown_and_wait(void *arg) {
  waiting_shutdown *w = arg;
  w->rc = cf_executor_shutdown(w->ex, CF_SHUTDOWN_WAIT, CF_FOREVER);
  return NULL;
}

static int free_parent_pool(cf_executor *ex, cf_future *queued) {
  /* The parent's thread that is inside shutdown (pinned, waiting) does
   * not exist here: free must not wait for it. */
  if (cf_executor_free(ex) != 0)
    return 30;
  return cf_future_done(queued) ? 0 : 31;
}

typedef struct pool_and_future {
  cf_executor *ex;
  cf_future *f;
} pool_and_future;

static void free_parent_pool_child(void *arg) {
  pool_and_future *pf = arg;
  _exit(free_parent_pool(pf->ex, pf->f));
}

/* A parent thread was waiting inside cf_executor_shutdown when the parent
 * forked: the child frees the pool without waiting for that thread (the
 * pin it held is not the child's). It used to hang. */
CF_TEST(child_frees_a_pool_the_parent_was_shutting_down) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *running, *queued;
  assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &running), 0);
  while (!cf_future_running(running))
    sched_yield();
  assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &queued), 0);
  waiting_shutdown w = {ex, 99};
  pthread_t t = spawn(shutdown_and_wait, &w);
  while (atomic_load(&ex->pins) == 0) /* it is inside, pinned */
    sched_yield();
  pool_and_future pf = {ex, queued};
  assert_child_ok(run_in_child(free_parent_pool_child, &pf, NULL));
  gate_open(&g);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, 0);
  assert_int_equal(cf_future_result(queued, 0, NULL), 0);
  cf_future_unref(running);
  cf_future_unref(queued);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

static _Atomic int resubmit_rc;
static int resubmit_to_owner(cf_future *f, void *arg) {
  (void)f;
  cf_future *g = NULL;
  atomic_store(&resubmit_rc, cf_executor_submit(arg, task_nop, NULL, &g));
  cf_future_unref(g); /* NULL when refused */
  return 0;
}

/* In the child, the parent's futures are settled without any submit
 * first: by cf_wait and by as_completed, not only by a single wait; and a
 * callback they run that uses the same pool again does not wait for the
 * settling that runs it. */
static int waits_settle_in_child(cf_executor *ex, cf_future **queued) {
  size_t nd = 0;
  if (cf_wait(queued, 1, CF_FOREVER, CF_ALL_COMPLETED, NULL, &nd, NULL, NULL) !=
          0 ||
      nd != 1)
    return 40;
  if (cf_future_result(queued[0], 0, NULL) != CF_EFORKED)
    return 41;
  if (atomic_load(&resubmit_rc) != CF_EFORKED)
    return 42;
  cf_as_completed *it;
  if (cf_as_completed_new(queued + 1, 1, CF_FOREVER, &it) != 0)
    return 43;
  cf_future *f;
  if (cf_as_completed_next(it, &f) != 1 || f != queued[1])
    return 44;
  cf_future_unref(f);
  cf_as_completed_free(it);
  return cf_executor_free(ex) == 0 ? 0 : 45;
}

typedef struct pool_and_queue {
  cf_executor *ex;
  cf_future **queued;
} pool_and_queue;

static void waits_settle_child(void *arg) {
  pool_and_queue *pq = arg;
  _exit(waits_settle_in_child(pq->ex, pq->queued));
}

CF_TEST(waits_in_the_child_settle_the_parents_futures) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *running, *queued[2];
  assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &running), 0);
  while (!cf_future_running(running))
    sched_yield();
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_executor_submit(ex, task_nop, NULL, &queued[i]), 0);
  atomic_store(&resubmit_rc, 1);
  assert_int_equal(
      cf_future_add_done_callback(queued[0], resubmit_to_owner, ex), 0);
  pool_and_queue pq = {ex, queued};
  assert_child_ok(run_in_child(waits_settle_child, &pq, NULL));
  gate_open(&g);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(cf_future_result(queued[i], SOON, NULL), 0);
    cf_future_unref(queued[i]);
  }
  assert_int_equal(atomic_load(&resubmit_rc), 0); /* in the parent: ran */
  cf_future_unref(running);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

typedef struct own_iterator {
  cf_as_completed *it;
  cf_future *f;
} own_iterator;

static void own_iterator_child(void *arg) {
  own_iterator *o = arg;
  if (cf_future_set_result(o->f, NULL) != 0)
    _exit(50);
  cf_future *got = NULL;
  if (cf_as_completed_next(o->it, &got) != 1 || got != o->f)
    _exit(51);
  _exit(0);
}

/* The forking thread's own as_completed iterator keeps working in the
 * child (its listeners are not the dead threads'). */
CF_TEST(forking_threads_own_iterator_works_in_the_child) {
  (void)state;
  own_iterator o;
  assert_int_equal(cf_future_new(&o.f), 0);
  assert_int_equal(cf_as_completed_new(&o.f, 1, SOON, &o.it), 0);
  assert_child_ok(run_in_child(own_iterator_child, &o, NULL));
  cf_as_completed_free(o.it);
  cf_future_unref(o.f);
}

/* ---- a loop forked from one of its own tasks ----------------------------- */

/* Writes its result, then waits: its future is RUNNING with a value in. */
static int writes_then_sleeps(void *arg, cf_value *result) {
  (void)arg;
  result->u.i = 42;
  return cf_sleep(CF_MSEC(20));
}

static void waits_for_the_sleeper(void *arg) {
  const cf_value *v = NULL;
  int rc = cf_future_result(arg, SOON, &v);
  _exit(rc != 0 ? 60 : v == NULL || v->u.i != 42 ? 61 : 0);
}

static int forks_beside_a_sleeper(void *arg, cf_value *result) {
  (void)arg;
  cf_future *b;
  TCHECK(cf_loop_spawn(cf_loop_current(), writes_then_sleeps, NULL, &b) == 0);
  TCHECK(cf_yield() == 0); /* b runs, writes 42 and suspends */
  TCHECK(cf_future_get_state(b) == CF_RUNNING);
  result->u.i = run_in_child(waits_for_the_sleeper, b, NULL);
  TCHECK(cf_future_result(b, SOON, NULL) == 0);
  cf_future_unref(b);
  return 0;
}

/* The loop goes on in the child when its own thread forked: a task
 * suspended with its result written still completes its future there,
 * and a wait in the child gets that result (the future used to be
 * settled as the parent's, CF_EFORKED over the value the task had
 * written, which the task then overwrote). */
CF_TEST(a_loop_forked_from_its_own_task_goes_on_in_the_child) {
  (void)state;
#if !CHILD_MAY_START_THREADS
  /* ThreadSanitizer loses the order of fiber switches in a fork child:
   * it reports the loop's own switches there as races (exit 66). */
  skip();
#endif
  cf_future *f;
  assert_int_equal(
      cf_loop_run_main(forks_beside_a_sleeper, NULL, test_loop_opts(NULL), &f),
      0);
  const cf_value *status;
  assert_int_equal(cf_future_result(f, 0, &status), 0);
  assert_child_ok((int)status->u.i);
  cf_future_unref(f);
}

CF_TEST_MAIN()
