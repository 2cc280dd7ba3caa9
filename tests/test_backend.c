/*
 * test_backend.c - the backend contract (executor_int.h, future_int.h),
 * proven by a second backend: a "manual" executor whose futures are run
 * and completed by a thread of its own (as a process pool's reader thread
 * or an event loop would), which can interrupt running work, keeps
 * per-task state in the future's room, and runs named tasks without a
 * function pointer.
 */
#include <stdlib.h>
#include <string.h>

#include "executor_int.h"
#include "fault.h"
#include "future_int.h"
#include "support.h"

/* What the backend keeps in each future's room. */
typedef struct task_room {
  uint64_t id;
  size_t arg_size;
  char name[32];
  bool interrupted;
} task_room;

enum { MANUAL_MAX = 256 };

typedef struct manual {
  cf_executor base;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  cf_future *queue[MANUAL_MAX]; /* submitted, not yet taken (refs held) */
  int head, tail;
  cf_future *running[MANUAL_MAX]; /* taken, not yet finished */
  int nrunning;
  bool stop, shut;
  bool auto_run; /* the backend's thread runs what it takes */
  uint64_t next_id;
  _Atomic int cancel_calls;
  pthread_t thread;
  pthread_t thread_id; /* the backend's own thread */
  cf__cb_sink sink;
} manual;

static task_room *room_of(cf_future *f) { return cf__future_room(f); }

static int manual_submit(cf_executor *ex, const cf_task *task,
                         int64_t deadline_ns, cf_future **out) {
  (void)deadline_ns;
  manual *m = (manual *)ex;
  /* This backend runs named tasks as well as functions: it checks what it
   * needs itself. */
  if (task->fn == NULL && task->name == NULL)
    return CF_EINVAL;
  cf_future *f = cf__future_alloc(ex, out != NULL ? 2 : 1, sizeof(task_room));
  if (f == NULL)
    return CF_ENOMEM;
  f->u.task.fn = task->fn;
  f->u.task.arg = task->arg;
  f->u.task.arg_dtor = task->arg_dtor;
  task_room *r = room_of(f);
  r->arg_size = task->arg_size;
  snprintf(r->name, sizeof r->name, "%s", task->name ? task->name : "");
  pthread_mutex_lock(&m->mu);
  if (m->shut || m->tail - m->head == MANUAL_MAX) {
    bool shut = m->shut;
    pthread_mutex_unlock(&m->mu);
    cf__future_discard(f);
    return shut ? CF_ESHUTDOWN : CF_EAGAIN;
  }
  r->id = m->next_id++;
  m->queue[m->tail++ % MANUAL_MAX] = f;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  if (out != NULL)
    *out = f;
  return 0;
}

/* Runs one taken future on the backend's thread: a chunk through the
 * contract's cf__map_chunk_task, a named task by its name, else fn. */
static void manual_run(manual *m, cf_future *f) {
  cf__task_rec t;
  cf__future_take_task(f, &t); /* the arg is the backend's now */
  cf__outcome o = {0, NULL, CF_VALUE_INIT};
  if (t.fn == NULL) {
    /* "Named" tasks: the only one this backend knows is "answer". */
    if (strcmp(room_of(f)->name, "answer") == 0)
      o.value.u.i = 42;
    else
      o.err = -ENOENT, o.msg = strdup("no task named that");
  } else {
    o.err = t.fn(t.arg, &o.value);
    if (o.err != 0) {
      o.msg = cf__raise_take(o.err);
      cf_value_release(&o.value);
    }
  }
  if (t.arg_dtor != NULL)
    t.arg_dtor(t.arg);
  cf__future_finish(f, &o, &m->sink);
}

static void *manual_thread(void *arg) {
  manual *m = arg;
  pthread_mutex_lock(&m->mu);
  for (;;) {
    while (!m->stop && (m->head == m->tail || !m->auto_run))
      pthread_cond_wait(&m->cv, &m->mu);
    if (m->head == m->tail && m->stop)
      break;
    cf_future *f = m->queue[m->head++ % MANUAL_MAX];
    pthread_mutex_unlock(&m->mu);
    if (cf__future_claim(f))
      manual_run(m, f);
    cf_future_unref(f);
    pthread_mutex_lock(&m->mu);
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

/* Takes the next queued future and leaves it RUNNING (test-driven). */
static cf_future *manual_take(manual *m) {
  pthread_mutex_lock(&m->mu);
  cf_future *f = m->head < m->tail ? m->queue[m->head++ % MANUAL_MAX] : NULL;
  if (f != NULL && cf__future_claim(f))
    m->running[m->nrunning++] = f;
  else if (f != NULL)
    cf_future_unref(f), f = NULL;
  pthread_mutex_unlock(&m->mu);
  return f;
}

/* A request to finish a running future from the backend's thread. */
typedef struct finish_req {
  manual *m;
  cf_future *f;
  int err;
  const char *msg;
  int64_t value;
  pthread_t ran_on;
} finish_req;

static void *finish_from_thread(void *arg) {
  finish_req *r = arg;
  r->ran_on = pthread_self();
  cf__outcome o = {r->err, r->msg ? strdup(r->msg) : NULL, CF_VALUE_INIT};
  o.value.u.i = r->value;
  TCHECK(cf__future_finish(r->f, &o, &r->m->sink) == 0);
  return NULL;
}

static int manual_cancel(cf_executor *ex, cf_future *f) {
  manual *m = (manual *)ex;
  atomic_fetch_add(&m->cancel_calls, 1);
  /* Interrupt it: this backend can. */
  room_of(f)->interrupted = true;
  return cf__future_finish_cancelled(f, &m->sink);
}

static void manual_settle_all(manual *m) {
  for (;;) {
    pthread_mutex_lock(&m->mu);
    cf_future *f = m->head < m->tail ? m->queue[m->head++ % MANUAL_MAX] : NULL;
    pthread_mutex_unlock(&m->mu);
    if (f == NULL)
      break;
    cf__future_settle(f, CF_ECANCELED, NULL, &m->sink, NULL);
    cf_future_unref(f);
  }
}

static int manual_shutdown(cf_executor *ex, unsigned flags, int64_t deadline) {
  (void)deadline;
  manual *m = (manual *)ex;
  pthread_mutex_lock(&m->mu);
  m->shut = true;
  pthread_mutex_unlock(&m->mu);
  if (flags & CF_SHUTDOWN_CANCEL_FUTURES)
    manual_settle_all(m);
  if (flags & CF_SHUTDOWN_WAIT) {
    /* Whatever the test left running finishes as cancelled. */
    pthread_mutex_lock(&m->mu);
    int n = m->nrunning;
    m->nrunning = 0;
    m->stop = true;
    m->auto_run = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++) {
      cf__future_finish_cancelled(m->running[i], &m->sink);
      cf_future_unref(m->running[i]);
    }
    if (m->thread_id != 0) {
      pthread_join(m->thread, NULL);
      m->thread_id = 0;
    }
    manual_settle_all(m);
  }
  return 0;
}

static void manual_destroy(cf_executor *ex) {
  manual *m = (manual *)ex;
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
}

static void manual_stats(cf_executor *ex, cf_executor_stats *st) {
  (void)ex;
  st->max_workers = 1;
}

static int manual_max_workers(cf_executor *ex) {
  (void)ex;
  return 1;
}

static const cf__executor_vtable manual_vt = {.name = "manual",
                                              .submit = manual_submit,
                                              .cancel = manual_cancel,
                                              .shutdown = manual_shutdown,
                                              .destroy = manual_destroy,
                                              .stats = manual_stats,
                                              .max_workers =
                                                  manual_max_workers};

static manual *manual_new(bool auto_run) {
  manual *m = calloc(1, sizeof *m);
  assert_non_null(m);
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  m->auto_run = auto_run;
  cf__executor_init(&m->base, &manual_vt);
  assert_int_equal(pthread_create(&m->thread, NULL, manual_thread, m), 0);
  m->thread_id = m->thread;
  return m;
}

/* ---------------------------------------------------------------------- */

static _Atomic long cb_calls;
static pthread_t cb_thread;
static int record_callback(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  cb_thread = pthread_self();
  atomic_fetch_add(&cb_calls, 1);
  return 0;
}

/* A backend's own thread (not the one that "ran" the task, not the
 * submitter) completes RUNNING futures it owns, with a value or with a
 * code and message; waiters wake, callbacks run in that thread. */
CF_TEST(backend_thread_completes_the_futures_it_owns) {
  (void)state;
  manual *m = manual_new(false);
  cf_future *a, *b;
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &a), 0);
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &b), 0);
  assert_ptr_equal(manual_take(m), a);
  assert_ptr_equal(manual_take(m), b);
  assert_int_equal(cf_future_get_state(a), CF_RUNNING);
  /* Nobody but its owner may complete an executor's running future. */
  assert_int_equal(cf_future_set_result(a, NULL), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_error(a, -EIO, "no"), CF_EINVALSTATE);
  atomic_store(&cb_calls, 0);
  assert_int_equal(cf_future_add_done_callback(a, record_callback, NULL), 0);
  finish_req ra = {m, a, 0, NULL, 77, 0};
  finish_req rb = {m, b, -EPROTO, "bad frame from worker 3", 0, 0};
  pthread_t ta = spawn(finish_from_thread, &ra);
  pthread_t tb = spawn(finish_from_thread, &rb);
  const cf_value *v;
  assert_int_equal(cf_future_result(a, SOON, &v), 0);
  assert_int_equal(v->u.i, 77);
  assert_int_equal(cf_future_result(b, SOON, NULL), -EPROTO);
  cf_error e = cf_future_get_error(b);
  assert_int_equal(e.code, -EPROTO);
  assert_string_equal(e.message, "bad frame from worker 3");
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(atomic_load(&cb_calls), 1);
  assert_true(pthread_equal(cb_thread, ra.ran_on));
  /* Finishing twice is refused. */
  cf__outcome o = {0, NULL, CF_VALUE_INIT};
  assert_int_equal(cf__future_finish(a, &o, NULL), CF_EINVALSTATE);
  m->nrunning = 0; /* both finished: nothing for shutdown to cancel */
  cf_future_unref(a);
  cf_future_unref(b);
  cf_future_unref(a); /* manual_take's reference */
  cf_future_unref(b);
  assert_int_equal(cf_executor_free(&m->base), 0);
}

/* The task's identity and argument size reach the backend, from submit
 * and from map; a backend that runs named tasks needs no function. */
CF_TEST(task_names_and_sizes_reach_the_backend) {
  (void)state;
  manual *m = manual_new(false);
  int64_t payload[3] = {1, 2, 3};
  cf_task t = {
      .fn = NULL, .arg = payload, .arg_size = sizeof payload, .name = "answer"};
  cf_future *f;
  assert_int_equal(cf_executor_submit_task(&m->base, &t, 0, &f), 0);
  assert_int_equal(room_of(f)->arg_size, sizeof payload);
  assert_string_equal(room_of(f)->name, "answer");
  /* Without a name or a function, this backend refuses. */
  cf_task none = {0};
  cf_future *g = (cf_future *)&none;
  assert_int_equal(cf_executor_submit_task(&m->base, &none, 0, &g), CF_EINVAL);
  assert_null(g);
  /* The thread pool needs a function: the check is the backend's. */
  cf_executor *pool = make_pool(1);
  assert_int_equal(cf_executor_submit_task(pool, &t, 0, &g), CF_EINVAL);
  assert_int_equal(cf_executor_free(pool), 0);
  /* Run by the backend's thread, by name. */
  pthread_mutex_lock(&m->mu);
  m->auto_run = true;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 42);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(&m->base), 0);
}

typedef struct pair {
  int64_t a, b;
} pair;

static int task_sum_pair(void *arg, cf_value *result) {
  const pair *p = arg;
  result->u.i = p->a + p->b;
  return 0;
}

/* A backend that records what the map hands it. */
static size_t seen_sizes[MANUAL_MAX];
static const char *seen_names[MANUAL_MAX];
static size_t seen_items[MANUAL_MAX];
static int nseen;
static int recording_submit(cf_executor *ex, const cf_task *task,
                            int64_t deadline_ns, cf_future **out) {
  if (task->fn == cf__map_chunk_task) {
    const cf__map_chunk *c = task->arg;
    seen_sizes[nseen] = c->item_size;
    seen_names[nseen] = c->name;
    seen_items[nseen] = c->n;
  } else {
    seen_sizes[nseen] = task->arg_size;
    seen_names[nseen] = task->name;
    seen_items[nseen] = 0;
  }
  nseen++;
  return manual_submit(ex, task, deadline_ns, out);
}
/* The manual backend's vtable, with recording_submit. */
static cf__executor_vtable recording_vt;

CF_TEST(map_items_are_sized_for_the_backend) {
  (void)state;
  pair pairs[12];
  void *items[12];
  for (int i = 0; i < 12; i++) {
    pairs[i].a = i;
    pairs[i].b = 100 * i;
    items[i] = &pairs[i];
  }
  recording_vt = manual_vt;
  recording_vt.name = "recording";
  recording_vt.submit = recording_submit;
  const int64_t chunks[] = {1, 5};
  for (size_t k = 0; k < 2; k++) {
    manual *m = manual_new(true);
    m->base.vt = &recording_vt;
    nseen = 0;
    cf_array_iter it = {items, 12, 0};
    cf_map_opts o = {
        .chunksize = chunks[k], .item_size = sizeof(pair), .name = "sum_pair"};
    cf_map *map;
    assert_int_equal(cf_executor_map(&m->base, task_sum_pair,
                                     cf_array_iter_next, &it, &o, &map),
                     0);
    cf_value v;
    for (int i = 0; i < 12; i++) {
      assert_int_equal(cf_map_next(map, &v), 1);
      assert_int_equal(v.u.i, 101 * i);
    }
    assert_int_equal(cf_map_next(map, &v), 0);
    cf_map_free(map);
    /* One task per item, or chunks of 5, 5 and 2 items. */
    assert_int_equal(nseen, chunks[k] == 1 ? 12 : 3);
    for (int i = 0; i < nseen; i++) {
      assert_int_equal(seen_sizes[i], sizeof(pair));
      assert_string_equal(seen_names[i], "sum_pair");
      if (chunks[k] > 1)
        assert_int_equal(seen_items[i], i < 2 ? 5 : 2);
    }
    assert_int_equal(cf_executor_free(&m->base), 0);
  }
}

/* cf_future_cancel of a RUNNING future asks its executor, which may
 * interrupt it; of a PENDING one it cancels at once (Python), without the
 * backend; the thread pool cannot interrupt a thread. */
CF_TEST(cancel_of_running_work_goes_through_the_backend) {
  (void)state;
  manual *m = manual_new(false);
  cf_future *run, *pend;
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &run), 0);
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &pend), 0);
  assert_ptr_equal(manual_take(m), run);
  atomic_store(&cb_calls, 0);
  assert_int_equal(cf_future_add_done_callback(run, record_callback, NULL), 0);
  assert_int_equal(cf_future_cancel(pend), 0);
  assert_int_equal(atomic_load(&m->cancel_calls), 0);
  assert_true(cf_future_cancelled(pend));
  assert_int_equal(cf_future_cancel(run), 0);
  assert_int_equal(atomic_load(&m->cancel_calls), 1);
  assert_true(room_of(run)->interrupted);
  assert_true(cf_future_cancelled(run));
  assert_int_equal(cf_future_result(run, SOON, NULL), CF_ECANCELED);
  assert_int_equal(atomic_load(&cb_calls), 1);
  /* Cancelling it again: already cancelled, the backend is not asked. */
  assert_int_equal(cf_future_cancel(run), 0);
  assert_int_equal(atomic_load(&m->cancel_calls), 1);
  m->nrunning = 0;
  cf_future_unref(run); /* manual_take's */
  cf_future_unref(run);
  cf_future_unref(pend);
  assert_int_equal(cf_executor_free(&m->base), 0);

  cf_executor *pool = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *f;
  assert_int_equal(cf_executor_submit(pool, task_wait_gate, &g, &f), 0);
  while (!cf_future_running(f))
    sched_yield();
  assert_int_equal(cf_future_cancel(f), CF_EBUSY);
  gate_open(&g);
  assert_int_equal(cf_future_result(f, SOON, NULL), 0);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(pool), 0);
  gate_destroy(&g);
}

/* The backend's per-task state lives in the future's own allocation: one
 * allocation per submit, and the room is 64-byte aligned and writable. */
CF_TEST(future_room_needs_no_second_allocation) {
  (void)state;
  manual *m = manual_new(false);
  cf_future *f = NULL;
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1); /* the first allocation fails */
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &f), CF_ENOMEM);
  cf__fault_arm(CF__FAULT_ALLOC, 1, -1); /* all but the first fail */
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &f), 0);
  cf__fault_arm(CF__FAULT_ALLOC, 0, 0);
  assert_int_equal((uintptr_t)f % 64, 0);
  assert_int_equal((uintptr_t)room_of(f) % 64, 0);
  memset(room_of(f), 0xab, sizeof(task_room)); /* ASan checks the bounds */
  cf_future_unref(f);
  /* A room that cannot be represented is refused, not truncated. */
  assert_null(cf__future_alloc(&m->base, 1, SIZE_MAX - 8));
  assert_int_equal(cf_executor_free(&m->base), 0);
}

/* Executors cancel through the contract when shut down with
 * CF_SHUTDOWN_CANCEL_FUTURES, and a shutdown racing nothing is clean. */
CF_TEST(shutdown_settles_queued_work_of_any_backend) {
  (void)state;
  manual *m = manual_new(false);
  cf_future *fs[5];
  for (int i = 0; i < 5; i++)
    assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, &fs[i]), 0);
  assert_int_equal(
      cf_executor_shutdown(&m->base, CF_SHUTDOWN_CANCEL_FUTURES, 0), 0);
  for (int i = 0; i < 5; i++) {
    assert_true(cf_future_cancelled(fs[i]));
    cf_future_unref(fs[i]);
  }
  assert_int_equal(cf_executor_submit(&m->base, task_nop, NULL, NULL),
                   CF_ESHUTDOWN);
  assert_int_equal(cf_executor_free(&m->base), 0);
}

CF_TEST_MAIN()
