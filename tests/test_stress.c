/*
 * test_stress.c - many threads, many iterations. Every case here is named
 * stress_* (label "stress", longer timeout). Sizes are divided by the
 * environment variable CF_STRESS_DIV (set for sanitizer builds) but stay
 * in the thousands of iterations.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

static unsigned rnd(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  return (*seed >> 16) & 0x7fff;
}

/* ---- producers, cancellers and waiters on one pool ------------------------
 */

#define STAMP_NEW 0xdeadu
#define STAMP_RAN 0xbeefu

typedef struct record {
  _Atomic unsigned stamp;
  _Atomic int runs;
  long id;
} record;

static int task_stamp(void *arg, cf_value *result) {
  record *r = arg;
  unsigned expect = STAMP_NEW;
  /* Exactly once: a second run or a run after free would fail here. */
  TCHECK(atomic_compare_exchange_strong(&r->stamp, &expect, STAMP_RAN));
  atomic_fetch_add(&r->runs, 1);
  if (r->id % 13 == 0)
    return cf_raise(-EAGAIN, "record %ld fails", r->id);
  result->u.i = r->id;
  return 0;
}

typedef struct world {
  cf_executor *ex;
  long per_producer;
  int producers;
  record *records;
  cf_future *_Atomic *slots;
  _Atomic int producers_done;
} world;

typedef struct producer_arg {
  world *w;
  int index;
} producer_arg;

static void *producer(void *p) {
  producer_arg *a = p;
  world *w = a->w;
  for (long k = 0; k < w->per_producer; k++) {
    long id = a->index * w->per_producer + k;
    record *r = &w->records[id];
    r->id = id;
    atomic_init(&r->stamp, STAMP_NEW);
    cf_future *f = NULL;
    TCHECK(cf_executor_submit(w->ex, task_stamp, r, &f) == 0);
    atomic_store(&w->slots[id], f); /* the slot owns this reference */
  }
  atomic_fetch_add(&w->producers_done, 1);
  return NULL;
}

static cf_future *random_slot(world *w, unsigned *seed) {
  long n = w->per_producer * w->producers;
  long i = ((long)rnd(seed) << 15 | rnd(seed)) % n;
  return atomic_load(&w->slots[i]);
}

static void *canceller(void *p) {
  world *w = p;
  unsigned seed = 7;
  while (atomic_load(&w->producers_done) < w->producers) {
    cf_future *f = random_slot(w, &seed);
    if (f != NULL) {
      int rc = cf_future_cancel(f);
      TCHECK(rc == 0 || rc == CF_EBUSY);
      TCHECK(rc != 0 || cf_future_cancelled(f));
    }
  }
  return NULL;
}

static void *waiter(void *p) {
  world *w = p;
  unsigned seed = 99;
  while (atomic_load(&w->producers_done) < w->producers) {
    cf_future *f = random_slot(w, &seed);
    if (f == NULL)
      continue;
    const cf_value *v;
    int rc = cf_future_result(f, SOON, &v);
    TCHECK(rc == 0 || rc == CF_ECANCELED || rc == -EAGAIN);
    TCHECK(cf_future_done(f));
  }
  return NULL;
}

CF_TEST(stress_producers_cancellers_waiters) {
  (void)state;
  world w = {0};
  w.ex = make_pool(3);
  w.producers = 4;
  w.per_producer = scaled(25000);
  long n = w.per_producer * w.producers;
  w.records = calloc((size_t)n, sizeof *w.records);
  w.slots = calloc((size_t)n, sizeof *w.slots);
  pthread_t t[8];
  producer_arg pa[4];
  for (int i = 0; i < 4; i++) {
    pa[i].w = &w;
    pa[i].index = i;
    t[i] = spawn(producer, &pa[i]);
  }
  t[4] = spawn(canceller, &w);
  t[5] = spawn(canceller, &w);
  t[6] = spawn(waiter, &w);
  t[7] = spawn(waiter, &w);
  for (int i = 0; i < 8; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(cf_executor_shutdown(w.ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  long ran = 0, cancelled = 0, failed = 0;
  for (long i = 0; i < n; i++) {
    cf_future *f = atomic_load(&w.slots[i]);
    record *r = &w.records[i];
    if (cf_future_cancelled(f)) {
      cancelled++;
      assert_int_equal(atomic_load(&r->runs), 0);
      assert_int_equal(atomic_load(&r->stamp), STAMP_NEW);
    } else {
      assert_int_equal(cf_future_get_state(f), CF_FINISHED);
      assert_int_equal(atomic_load(&r->runs), 1);
      assert_int_equal(atomic_load(&r->stamp), STAMP_RAN);
      const cf_value *v;
      int rc = cf_future_result(f, 0, &v);
      if (i % 13 == 0) {
        assert_int_equal(rc, -EAGAIN);
        failed++;
      } else {
        assert_int_equal(rc, 0);
        assert_int_equal(v->u.i, i);
      }
      ran++;
    }
    cf_future_unref(f);
  }
  cf_executor_stats st;
  cf_executor_get_stats(w.ex, &st);
  assert_int_equal(st.submitted, n);
  assert_int_equal(st.cancelled, cancelled);
  assert_int_equal(st.completed + st.failed, ran);
  assert_int_equal(st.failed, failed);
  assert_int_equal(st.queued + st.running, 0);
  assert_int_equal(cf_executor_free(w.ex), 0);
  free(w.records);
  free(w.slots);
}

/* ---- wake-ups: round trips that sometimes park ----------------------------
 */

static int task_jitter(void *arg, cf_value *result) {
  unsigned n = (unsigned)(uintptr_t)arg;
  if (n % 16 == 0)
    usleep(n % 64); /* long enough, sometimes, for the waiter to park */
  result->u.i = n;
  return 0;
}

CF_TEST(stress_wait_never_loses_a_wakeup) {
  (void)state;
  cf_executor *ex = make_pool(2);
  long n = scaled(40000);
  for (long i = 0; i < n; i++) {
    cf_future *f = NULL;
    assert_int_equal(cf_executor_submit(ex, task_jitter, (void *)i, &f), 0);
    const cf_value *v;
    int rc = cf_future_result(f, SOON, &v);
    if (rc != 0)
      fail_msg("iteration %ld: %s", i, cf_strerror(rc));
    assert_int_equal(v->u.i, i);
    cf_future_unref(f);
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- bursts after idle gaps: the FIFO's ends and the idle stack ---------- */

/* The pool's two ends share no lock: a submitter publishes and then looks
 * for a parked worker, a worker going to sleep pushes itself and then
 * looks at the queue and the slots. A lost wake-up leaves a task queued
 * with every worker asleep, and the wait below times out. Rounds alternate
 * idle gaps (longer than a worker's spin, so workers park) with bursts
 * from two producers, tasks that submit subtasks (workers as producers)
 * and short tasks (batches in the slots, stealing). */
typedef struct burst {
  cf_executor *ex;
  pthread_barrier_t go;
  long rounds;
  int per_round;
  _Atomic long done;
} burst;

static int task_count_done(void *arg, cf_value *result) {
  (void)result;
  atomic_fetch_add(&((burst *)arg)->done, 1);
  return 0;
}

static int task_submits_one_more(void *arg, cf_value *result) {
  (void)result;
  burst *b = arg;
  cf_future *g = NULL;
  int rc = cf_executor_submit(b->ex, task_count_done, b, &g);
  if (rc == 0)
    cf_future_unref(g); /* not waited: the pool still runs it */
  atomic_fetch_add(&b->done, 1);
  return rc;
}

static void burst_round(burst *b, unsigned seed, cf_future **fs) {
  int k = 1 + (int)(seed % (unsigned)b->per_round);
  for (int i = 0; i < k; i++)
    TCHECK(cf_executor_submit(b->ex,
                              i % 5 == 0 ? task_submits_one_more
                                         : task_count_done,
                              b, &fs[i]) == 0);
  for (int i = 0; i < k; i++) {
    TCHECK(cf_future_result(fs[i], SOON, NULL) == 0);
    cf_future_unref(fs[i]);
  }
}

static void *burst_producer(void *arg) {
  burst *b = arg;
  cf_future *fs[64];
  for (long r = 0; r < b->rounds; r++) {
    pthread_barrier_wait(&b->go);
    burst_round(b, (unsigned)(r * 2654435761u) >> 7, fs);
    pthread_barrier_wait(&b->go);
  }
  return NULL;
}

static void run_bursts(const cf_thread_pool_opts *o) {
  burst b = {.ex = make_pool_with(o), .rounds = scaled(1500), .per_round = 40};
  pthread_barrier_init(&b.go, NULL, 2);
  pthread_t t = spawn(burst_producer, &b);
  cf_future *fs[64];
  for (long r = 0; r < b.rounds; r++) {
    /* Gaps from 0 to 120 us, spun (usleep's slack would round them):
     * around IDLE_SPIN_NS (50 us) the burst meets workers that are just
     * going to sleep, the window a lost wake-up needs. */
    int64_t until = cf_now_ns() + (int64_t)((unsigned)(r * 7919u) % 120u) * 1000;
    while (cf_now_ns() < until)
      ;
    pthread_barrier_wait(&b.go);
    burst_round(&b, (unsigned)(r * 40503u) >> 3, fs);
    pthread_barrier_wait(&b.go);
  }
  pthread_join(t, NULL);
  pthread_barrier_destroy(&b.go);
  /* The unwaited subtasks run too: free waits for them. */
  assert_int_equal(
      cf_executor_shutdown(b.ex, CF_SHUTDOWN_WAIT, SOON), 0);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(b.ex, &st), 0);
  assert_int_equal(st.completed, (uint64_t)atomic_load(&b.done));
  assert_int_equal(st.submitted, st.completed);
  assert_int_equal(cf_executor_free(b.ex), 0);
}

CF_TEST(stress_bursts_after_idle_gaps_never_wait_for_a_sleeping_worker) {
  (void)state;
  run_bursts(&(cf_thread_pool_opts){.max_workers = 1});
  run_bursts(&(cf_thread_pool_opts){.max_workers = 2});
  run_bursts(&(cf_thread_pool_opts){.max_workers = 3});
}

CF_TEST(stress_bursts_into_a_bounded_queue) {
  (void)state;
  /* Producers block on room and workers wake them (wake_space_waiters). */
  run_bursts(&(cf_thread_pool_opts){.max_workers = 2, .max_queued = 3});
}

/* ---- callbacks added while the future completes -------------------------- */

typedef struct cb_race {
  pthread_barrier_t start;
  cf_future *f;
  _Atomic int calls[4];
  long rounds;
} cb_race;

static int cb_count(cf_future *f, void *arg) {
  TCHECK(cf_future_done(f));
  atomic_fetch_add((_Atomic int *)arg, 1);
  return 0;
}

static void *cb_adder(void *p) {
  cb_race *r = p;
  for (long i = 0; i < r->rounds; i++) {
    pthread_barrier_wait(&r->start);
    for (int k = 0; k < 4; k++)
      TCHECK(cf_future_add_done_callback(r->f, cb_count, &r->calls[k]) == 0);
    pthread_barrier_wait(&r->start);
  }
  return NULL;
}

CF_TEST(stress_callbacks_race_completion) {
  (void)state;
  cb_race r;
  r.rounds = scaled(20000);
  pthread_barrier_init(&r.start, NULL, 2);
  pthread_t t = spawn(cb_adder, &r);
  for (long i = 0; i < r.rounds; i++) {
    assert_int_equal(cf_future_new(&r.f), 0);
    for (int k = 0; k < 4; k++)
      atomic_store(&r.calls[k], 0);
    pthread_barrier_wait(&r.start);
    if (i % 2)
      assert_int_equal(cf_future_set_result(r.f, NULL), 0);
    else
      assert_int_equal(cf_future_cancel(r.f), 0);
    pthread_barrier_wait(&r.start);
    /* Every callback ran exactly once, whichever side won each race. */
    for (int k = 0; k < 4; k++)
      if (atomic_load(&r.calls[k]) != 1)
        fail_msg("round %ld: callback %d ran %d times", i, k,
                 atomic_load(&r.calls[k]));
    cf_future_unref(r.f);
  }
  pthread_join(t, NULL);
  pthread_barrier_destroy(&r.start);
}

/* ---- as_completed and wait over many futures ------------------------------
 */

CF_TEST(stress_as_completed_many) {
  (void)state;
  cf_executor *ex = make_pool(3);
  long n = scaled(60000);
  cf_future **fs = calloc((size_t)n, sizeof *fs);
  for (long i = 0; i < n; i++)
    assert_int_equal(cf_executor_submit(ex, task_return_arg, (void *)i, &fs[i]),
                     0);
  unsigned seed = 3;
  for (long i = 0; i < n; i += 1 + rnd(&seed) % 50)
    cf_future_cancel(fs[i]);
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, (size_t)n, SOON, &it), 0);
  char *seen = calloc((size_t)n, 1);
  cf_future *f;
  long count = 0;
  int rc;
  while ((rc = cf_as_completed_next(it, &f)) == 1) {
    const cf_value *v;
    int r = cf_future_result(f, 0, &v);
    if (r == 0) {
      assert_false(seen[v->u.i]);
      seen[v->u.i] = 1;
    } else {
      assert_int_equal(r, CF_ECANCELED);
    }
    count++;
    cf_future_unref(f);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(count, n);
  cf_as_completed_free(it);
  size_t nd, nn;
  assert_int_equal(
      cf_wait(fs, (size_t)n, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn), 0);
  assert_int_equal(nd, n);
  for (long i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  free(seen);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* ---- shutdown racing submitters --------------------------------------------
 */

typedef struct racer {
  cf_executor *ex;
  cf_future **fs;
  long cap;
  long n;
} racer;

static void *submit_until_shutdown(void *p) {
  racer *r = p;
  while (r->n < r->cap) {
    cf_future *f = NULL;
    int rc = cf_executor_submit(r->ex, task_return_arg, (void *)r->n, &f);
    if (rc == CF_ESHUTDOWN)
      break;
    TCHECK(rc == 0);
    if (rc != 0)
      break;
    r->fs[r->n++] = f;
  }
  return NULL;
}

CF_TEST(stress_shutdown_races_submitters) {
  (void)state;
  long rounds = scaled(600);
  unsigned seed = 11;
  for (long round = 0; round < rounds; round++) {
    cf_executor *ex = make_pool(1 + (int)(round % 3));
    racer rs[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
      rs[i].ex = ex;
      rs[i].cap = 2000;
      rs[i].n = 0;
      rs[i].fs = calloc(2000, sizeof(cf_future *));
      t[i] = spawn(submit_until_shutdown, &rs[i]);
    }
    usleep(rnd(&seed) % 200);
    bool wait = rnd(&seed) % 2, cancel = rnd(&seed) % 2;
    assert_int_equal(
        cf_executor_shutdown(ex,
                             (wait ? CF_SHUTDOWN_WAIT : 0) |
                                 (cancel ? CF_SHUTDOWN_CANCEL_FUTURES : 0),
                             CF_FOREVER),
        0);
    for (int i = 0; i < 2; i++)
      pthread_join(t[i], NULL);
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    long total = 0;
    for (int i = 0; i < 2; i++) {
      for (long k = 0; k < rs[i].n; k++) {
        cf_future *f = rs[i].fs[k];
        if (!cf_future_done(f))
          fail_msg("round %ld: a future is still %s after shutdown", round,
                   cf_future_state_name(cf_future_get_state(f)));
        cf_future_unref(f);
      }
      total += rs[i].n;
      free(rs[i].fs);
    }
    cf_executor_stats st;
    cf_executor_get_stats(ex, &st);
    assert_int_equal(st.submitted, total);
    assert_int_equal(st.completed + st.failed + st.cancelled, total);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* ---- nested submission with waits inside workers
 * ----------------------------- */

typedef struct fib_arg {
  cf_executor *ex;
  int n;
} fib_arg;

static int task_fib(void *arg, cf_value *result) {
  fib_arg *a = arg;
  if (a->n < 2) {
    result->u.i = a->n;
    return 0;
  }
  fib_arg l = {a->ex, a->n - 1}, r = {a->ex, a->n - 2};
  cf_future *fl = NULL, *fr = NULL;
  TCHECK(cf_executor_submit(a->ex, task_fib, &l, &fl) == 0);
  TCHECK(cf_executor_submit(a->ex, task_fib, &r, &fr) == 0);
  const cf_value *vl, *vr;
  TCHECK(cf_future_result(fr, SOON, &vr) == 0);
  TCHECK(cf_future_result(fl, SOON, &vl) == 0);
  result->u.i = vl->u.i + vr->u.i;
  cf_future_unref(fl);
  cf_future_unref(fr);
  return 0;
}

CF_TEST(stress_nested_fib_on_small_pools) {
  (void)state;
  int n = stress_div() > 1 ? 16 : 20; /* 3k / 22k tasks */
  long expect[21] = {0, 1};
  for (int i = 2; i <= 20; i++)
    expect[i] = expect[i - 1] + expect[i - 2];
  for (int workers = 1; workers <= 4; workers++) {
    cf_executor *ex = make_pool(workers);
    fib_arg root = {ex, n};
    cf_future *f;
    assert_int_equal(cf_executor_submit(ex, task_fib, &root, &f), 0);
    const cf_value *v;
    assert_int_equal(cf_future_result(f, SOON * 4, &v), 0);
    assert_int_equal(v->u.i, expect[n]);
    cf_future_unref(f);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* ---- a long map keeps its footprint flat
 * -------------------------------------- */

static _Atomic long live, peak;

static int task_live(void *arg, cf_value *result) {
  long now = atomic_fetch_add(&live, 1) + 1;
  long p = atomic_load(&peak);
  while (now > p && !atomic_compare_exchange_weak(&peak, &p, now))
    ;
  result->u.i = (intptr_t)arg;
  return 0;
}

CF_TEST(stress_map_million_items_flat) {
  (void)state;
  for (int64_t chunk = 1; chunk <= 64; chunk *= 64) {
    atomic_store(&live, 0);
    atomic_store(&peak, 0);
    cf_executor *ex = make_pool(2);
    long n = scaled(1000000);
    cf_range_iter r = cf_range_iter_init(0, n, 1);
    cf_map_opts o = {.chunksize = chunk};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_live, cf_range_iter_next, &r, &o, &m), 0);
    cf_value v;
    long i = 0;
    while (cf_map_next(m, &v) == 1) {
      if (v.u.i != i)
        fail_msg("item %ld came back as %lld", i, (long long)v.u.i);
      atomic_fetch_sub(&live, 1);
      i++;
    }
    assert_int_equal(i, n);
    /* Results produced but not consumed never exceed the look-ahead
     * (default 64 tasks) times the chunk, plus the one in hand. */
    assert_true(atomic_load(&peak) <= 64 * chunk + 1);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* Every 4099th result an owned buffer: a runner's chunk then finishes
 * per item. */
static atomic_long sq_buffers;
static void sq_free(void *p) {
  atomic_fetch_add(&sq_buffers, -1);
  free(p);
}
static int task_square_or_buffer(void *arg, cf_value *result) {
  intptr_t n = (intptr_t)arg;
  if (n % 4099 == 4098) {
    int64_t *p = malloc(sizeof *p);
    if (p == NULL)
      return CF_ENOMEM;
    atomic_fetch_add(&sq_buffers, 1);
    *p = n;
    result->u.ptr = p;
    result->dtor = sq_free;
    return 0;
  }
  result->u.i = n * n;
  return 0;
}
CF_MAP_CHUNK_FN(square_or_buffer_chunks, task_square_or_buffer)

CF_TEST(stress_map_chunk_runner_million_items) {
  (void)state;
  const int64_t chunks[] = {1000, 0, 7};
  for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
    cf_executor *ex = make_pool(2);
    long n = scaled(1000000);
    cf_range_iter r = cf_range_iter_init(0, n, 1);
    cf_map_opts o = {.chunksize = chunks[k],
                     .chunk_fn = square_or_buffer_chunks};
    cf_map *m;
    assert_int_equal(cf_executor_map(ex, task_square_or_buffer,
                                     cf_range_iter_next, &r, &o, &m),
                     0);
    cf_value v;
    long i = 0;
    int rc;
    while ((rc = cf_map_next(m, &v)) == 1) {
      if (i % 4099 == 4098) {
        if (v.dtor != sq_free || *(int64_t *)v.u.ptr != i)
          fail_msg("item %ld: not its buffer", i);
        cf_value_release(&v);
      } else if (v.dtor != NULL || v.u.i != (int64_t)i * i) {
        fail_msg("item %ld came back as %lld", i, (long long)v.u.i);
      }
      i++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(i, n);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
    assert_int_equal(atomic_load(&sq_buffers), 0); /* each freed once */
  }
}

CF_TEST_MAIN()
