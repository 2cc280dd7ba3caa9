/* test_map.c - cf_executor_map: order, chunks, laziness, errors, deadlines. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "executor_int.h"
#include "fault.h"
#include "future_int.h"
#include "support.h"

/* Later items finish first: results must still come in input order. */
static int task_square_slow_first(void *arg, cf_value *result) {
  intptr_t n = (intptr_t)arg;
  if (n < 4)
    usleep((useconds_t)(4 - n) * 3000);
  result->u.i = n * n;
  return 0;
}

CF_TEST(results_come_in_input_order) {
  (void)state;
  cf_executor *ex = make_pool(4);
  cf_range_iter r = cf_range_iter_init(0, 50, 1);
  cf_map *m = NULL;
  assert_int_equal(cf_executor_map(ex, task_square_slow_first,
                                   cf_range_iter_next, &r, NULL, &m),
                   0);
  cf_value v;
  int64_t n = 0;
  int rc;
  while ((rc = cf_map_next(m, &v)) == 1) {
    assert_int_equal(v.u.i, n * n);
    n++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(n, 50);
  assert_int_equal(cf_map_next(m, &v), 0); /* stays at the end */
  assert_string_equal(cf_map_get_error(m).message, "");
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_identity(void *arg, cf_value *result) {
  result->u.i = (intptr_t)arg;
  return 0;
}
CF_MAP_CHUNK_FN(identity_chunks, task_identity)

/* Items that wait (up to 10 s each) until `want` of them run at once. */
typedef struct crowd {
  _Atomic int active, most;
  int want;
} crowd;
static crowd the_crowd;

static int task_meets_the_crowd(void *arg, cf_value *result) {
  crowd *c = &the_crowd;
  int now = atomic_fetch_add(&c->active, 1) + 1;
  int most = atomic_load(&c->most);
  while (now > most && !atomic_compare_exchange_weak(&c->most, &most, now))
    ;
  int64_t until = cf_now_ns() + CF_SEC(10);
  while (atomic_load(&c->most) < c->want && cf_now_ns() < until)
    usleep(200);
  atomic_fetch_sub(&c->active, 1);
  result->u.i = (intptr_t)arg;
  return 0;
}

/* One task per item on a fresh pool: every item a worker can take runs
 * at once, as Python's map (each submission may start a worker). The
 * map submits its first window in one batch: that batch starts as many
 * workers as it has tasks, up to max_workers (it started one). */
CF_TEST(one_task_per_item_runs_on_every_worker_of_a_fresh_pool) {
  (void)state;
  cf_executor *ex = make_pool(4);
  for (int k = 0; k < 2; k++) { /* fresh, then warm with idle workers */
    atomic_store(&the_crowd.active, 0);
    atomic_store(&the_crowd.most, 0);
    the_crowd.want = 4;
    cf_range_iter r = cf_range_iter_init(0, 8, 1);
    cf_map_opts o = {.chunksize = 1};
    cf_map *m = NULL;
    assert_int_equal(cf_executor_map(ex, task_meets_the_crowd,
                                     cf_range_iter_next, &r, &o, &m),
                     0);
    cf_value v;
    for (int64_t i = 0; i < 8; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    assert_int_equal(atomic_load(&the_crowd.most), 4);
    cf_map_free(m);
    cf_executor_stats st;
    assert_int_equal(cf_executor_get_stats(ex, &st), 0);
    assert_int_equal(st.workers, 4); /* never more than max_workers */
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(chunksize_keeps_order_and_counts_tasks) {
  (void)state;
  const int64_t sizes[] = {2, 7, 100, 1000, 5000};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    cf_executor *ex = make_pool(3);
    cf_range_iter r = cf_range_iter_init(0, 2500, 1);
    cf_map_opts o = {.chunksize = sizes[s]};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &o, &m), 0);
    cf_value v;
    int64_t n = 0;
    while (cf_map_next(m, &v) == 1) {
      assert_int_equal(v.u.i, n);
      n++;
    }
    assert_int_equal(n, 2500);
    cf_map_free(m);
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    cf_executor_stats st;
    cf_executor_get_stats(ex, &st);
    /* One task per chunk. */
    assert_int_equal(st.submitted, (2500 + sizes[s] - 1) / sizes[s]);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* Counts tasks started but not yet consumed, to show the look-ahead. */
static _Atomic long in_flight, max_in_flight;

static int task_track(void *arg, cf_value *result) {
  long now = atomic_fetch_add(&in_flight, 1) + 1;
  long seen = atomic_load(&max_in_flight);
  while (now > seen &&
         !atomic_compare_exchange_weak(&max_in_flight, &seen, now))
    ;
  result->u.i = (intptr_t)arg;
  return 0;
}

CF_TEST(map_is_lazy_on_endless_input) {
  (void)state;
  atomic_store(&in_flight, 0);
  atomic_store(&max_in_flight, 0);
  cf_executor *ex = make_pool(2);
  cf_range_iter endless = cf_range_iter_init(0, INT64_MAX, 1);
  cf_map_opts o = {.chunksize = 1, .prefetch = 8};
  cf_map *m;
  assert_int_equal(
      cf_executor_map(ex, task_track, cf_range_iter_next, &endless, &o, &m), 0);
  cf_value v;
  for (int64_t i = 0; i < 100000; i++) {
    assert_int_equal(cf_map_next(m, &v), 1);
    assert_int_equal(v.u.i, i);
    atomic_fetch_sub(&in_flight, 1);
  }
  /* Never more than the look-ahead submitted ahead of the consumer (plus
   * the item the consumer holds, which it counts down only after
   * cf_map_next has already topped the window up again). */
  assert_true(atomic_load(&max_in_flight) <= 8 + 1);
  cf_executor_stats st;
  cf_executor_get_stats(ex, &st);
  assert_true(st.submitted <= 100000 + 8);
  assert_true(endless.next <= 100000 + 8);
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* Without a chunksize, the map still keeps what is in flight bounded on
 * an endless input, while its chunks grow for tiny items. */
CF_TEST(adaptive_map_is_lazy_and_bounded_on_endless_input) {
  (void)state;
  atomic_store(&in_flight, 0);
  atomic_store(&max_in_flight, 0);
  cf_executor *ex = make_pool(2);
  cf_range_iter endless = cf_range_iter_init(0, INT64_MAX, 1);
  cf_map_opts o = {.prefetch = 8};
  cf_map *m;
  assert_int_equal(
      cf_executor_map(ex, task_track, cf_range_iter_next, &endless, &o, &m), 0);
  cf_value v;
  const int64_t n = scaled(2000000);
  for (int64_t i = 0; i < n; i++) {
    assert_int_equal(cf_map_next(m, &v), 1);
    assert_int_equal(v.u.i, i);
    atomic_fetch_sub(&in_flight, 1);
  }
  /* At most 8 chunks of at most 65536 items ahead of the consumer. */
  assert_true(atomic_load(&max_in_flight) <= 8 * 65536 + 1);
  assert_true(endless.next - n <= 8 * 65536);
  cf_executor_stats st;
  cf_executor_get_stats(ex, &st);
  /* Tiny items: far fewer tasks than items. */
  assert_true(st.submitted * 10 < (uint64_t)endless.next);
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_fail_at_7(void *arg, cf_value *result) {
  intptr_t n = (intptr_t)arg;
  if (n == 7)
    return cf_raise(-EDOM, "item %ld is bad", (long)n);
  result->u.i = n;
  return 0;
}
CF_MAP_CHUNK_FN(fail_at_7_chunks, task_fail_at_7)

CF_TEST(first_error_surfaces_at_its_item) {
  (void)state;
  const int64_t chunks[] = {1, 3, 4, 100};
  for (size_t k = 0; k < 2 * sizeof chunks / sizeof chunks[0]; k++) {
    size_t c = k / 2; /* each chunk size per item, then with a runner */
    cf_executor *ex = make_pool(2);
    cf_range_iter r = cf_range_iter_init(0, 20, 1);
    cf_map_opts o = {.chunksize = chunks[c],
                     .chunk_fn = k % 2 ? fail_at_7_chunks : NULL};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_fail_at_7, cf_range_iter_next, &r, &o, &m), 0);
    cf_value v;
    for (int64_t i = 0; i < 7; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
    }
    assert_int_equal(cf_map_next(m, &v), -EDOM);
    assert_string_equal(cf_map_get_error(m).message, "item 7 is bad");
    /* The map is over: the same error again (Python: generator closed). */
    assert_int_equal(cf_map_next(m, &v), -EDOM);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

static int input_fails_at_3(void *state, void **item) {
  int *i = state;
  if (*i == 3)
    return -EIO;
  *item = (void *)(intptr_t)(*i)++;
  return 1;
}

CF_TEST(input_error_surfaces_at_its_position) {
  (void)state;
  for (int64_t chunk = 1; chunk <= 2; chunk++) {
    cf_executor *ex = make_pool(2);
    int pos = 0;
    cf_map_opts o = {.chunksize = chunk};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_identity, input_fails_at_3, &pos, &o, &m), 0);
    cf_value v;
    for (int64_t i = 0; i < 3; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
    }
    assert_int_equal(cf_map_next(m, &v), -EIO);
    assert_int_equal(cf_map_next(m, &v), -EIO);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* Items 0, 1, 2; item 1 raises a message but succeeds (not a failure:
 * the message must not reach the later one); then fails at 3 with a
 * message of its own (*state 0) or a bare -EIO (*state 100). */
static int input_raises_at_3(void *state, void **item) {
  int *i = state;
  int n = *i % 100;
  if (n == 3)
    return *i >= 100 ? -EIO : cf_raise(-EBADMSG, "input blew up at %d", n);
  if (n == 1)
    (void)cf_raise(-EIO, "stale message of item 1");
  *item = (void *)(intptr_t)n;
  (*i)++;
  return 1;
}

/* A failing iterator's cf_raise message is the map's, as a task's is. */
CF_TEST(an_input_failure_keeps_its_message) {
  (void)state;
  for (int64_t chunk = 0; chunk <= 2; chunk++) {
    for (int bare = 0; bare <= 1; bare++) {
      cf_executor *ex = make_pool(2);
      int pos = bare ? 100 : 0;
      cf_map_opts o = {.chunksize = chunk};
      cf_map *m;
      assert_int_equal(
          cf_executor_map(ex, task_identity, input_raises_at_3, &pos, &o, &m),
          0);
      cf_value v;
      for (int64_t i = 0; i < 3; i++) {
        assert_int_equal(cf_map_next(m, &v), 1);
        assert_int_equal(v.u.i, i);
      }
      int want = bare ? -EIO : -EBADMSG;
      assert_int_equal(cf_map_next(m, &v), want);
      cf_error e = cf_map_get_error(m);
      assert_int_equal(e.code, want);
      assert_string_equal(e.message,
                          bare ? cf_strerror(-EIO) : "input blew up at 3");
      cf_map_free(m);
      assert_int_equal(cf_executor_free(ex), 0);
    }
  }
}

static gate bounded_gate;
static int task_behind_gate(void *arg, cf_value *result) {
  TCHECK(gate_wait(&bounded_gate));
  result->u.i = (intptr_t)arg;
  return 0;
}

/* With a bounded queue, the map does not wait for room while it has
 * tasks in flight: cf_executor_map returns at once with part of its
 * look-ahead queued (it blocked until all of it was, up to the deadline,
 * and then ended with CF_EAGAIN); the rest goes as room appears. */
CF_TEST(a_full_bounded_queue_does_not_block_the_map_while_work_is_in_flight) {
  (void)state;
  for (int64_t chunk = 1; chunk <= 3; chunk += 2) {
    gate_init(&bounded_gate);
    cf_thread_pool_opts po = {.max_workers = 1, .max_queued = 2};
    cf_executor *ex = make_pool_with(&po);
    cf_range_iter r = cf_range_iter_init(0, 40, 1);
    cf_map_opts o = {.chunksize = chunk, .has_timeout = true,
                     .timeout_ns = CF_SEC(20)};
    cf_map *m;
    int64_t t0 = cf_now_ns();
    assert_int_equal(
        cf_executor_map(ex, task_behind_gate, cf_range_iter_next, &r, &o, &m),
        0);
    assert_true(cf_now_ns() - t0 < CF_SEC(10)); /* not the deadline's wait */
    gate_open(&bounded_gate);
    cf_value v;
    for (int64_t i = 0; i < 40; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
    gate_destroy(&bounded_gate);
  }
}

CF_TEST(deadline_expires_at_the_item_and_cancels_the_rest) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  void *items[6] = {&g, &g, &g, &g, &g, &g};
  cf_array_iter it = {items, 6, 0};
  cf_map_opts o = {.has_timeout = true, .timeout_ns = CF_MSEC(30)};
  cf_map *m;
  int64_t t0 = cf_now_ns(); /* the deadline counts from the map call */
  assert_int_equal(
      cf_executor_map(ex, task_wait_gate, cf_array_iter_next, &it, &o, &m), 0);
  cf_value v;
  assert_int_equal(cf_map_next(m, &v), CF_ETIMEDOUT);
  assert_true(cf_now_ns() - t0 >= CF_MSEC(30)); /* never early */
  assert_int_equal(cf_map_next(m, &v), CF_ETIMEDOUT);
  gate_open(&g);
  cf_map_free(m);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  cf_executor_stats st;
  cf_executor_get_stats(ex, &st);
  /* The running one finished; the five queued behind it were cancelled. */
  assert_int_equal(st.completed, 1);
  assert_int_equal(st.cancelled, 5);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

/* timeout 0 polls (cf/time.h): an item already done is yielded, one not
 * done when the consumer reaches it times out at once. */
CF_TEST(zero_timeout_polls) {
  (void)state;
  /* chunk 3: items 0 and 1 come from the fast path (a checked chunk). */
  for (int64_t chunk = 1; chunk <= 3; chunk += 2) {
    cf_executor *ex = make_pool(1);
    cf_range_iter r = cf_range_iter_init(0, 4, 1);
    cf_map_opts o = {.chunksize = chunk, .has_timeout = true, .timeout_ns = 0};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &o, &m), 0);
    /* Every task was submitted at once (4 items < look-ahead); shutdown
     * with wait returns when all of them are done. */
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    cf_value v;
    for (int64_t i = 0; i < 4; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);

    ex = make_pool(1);
    gate g;
    gate_init(&g);
    void *items[3] = {&g, &g, &g};
    cf_array_iter it = {items, 3, 0};
    assert_int_equal(
        cf_executor_map(ex, task_wait_gate, cf_array_iter_next, &it, &o, &m),
        0);
    int64_t t0 = cf_now_ns();
    assert_int_equal(cf_map_next(m, &v), CF_ETIMEDOUT);
    /* A correctness margin: with the old "0 means none" it never returned. */
    assert_true(cf_now_ns() - t0 < CF_SEC(10));
    gate_open(&g);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(ex), 0);
    gate_destroy(&g);
  }
}

static void count_and_free(void *p) {
  counting_dtor(p);
  free(p);
}

static int task_owned_value(void *arg, cf_value *result) {
  (void)arg;
  result->u.ptr = malloc(8);
  result->dtor = count_and_free;
  return 0;
}

CF_TEST(values_are_moved_to_the_caller) {
  (void)state;
  for (int64_t chunk = 1; chunk <= 4; chunk += 3) {
    atomic_store(&dtor_calls, 0);
    cf_executor *ex = make_pool(2);
    cf_range_iter r = cf_range_iter_init(0, 10, 1);
    cf_map_opts o = {.chunksize = chunk};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_owned_value, cf_range_iter_next, &r, &o, &m),
        0);
    cf_value v;
    for (int i = 0; i < 3; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_ptr_equal(v.dtor, count_and_free);
      cf_value_release(&v); /* ours now: exactly one destructor call */
    }
    assert_int_equal(atomic_load(&dtor_calls), 3);
    /* Freeing early releases every produced but unyielded value once. */
    cf_map_free(m);
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    cf_executor_stats st;
    cf_executor_get_stats(ex, &st);
    long produced = (long)st.completed * chunk;
    if (produced > 10)
      produced = 10;
    assert_int_equal(atomic_load(&dtor_calls), produced);
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

CF_TEST(bad_arguments_and_shutdown) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_range_iter r = cf_range_iter_init(0, 3, 1);
  cf_map *m = (cf_map *)ex;
  cf_map_opts bad[] = {
      {.chunksize = -1},
      {.prefetch = -2},
      {.has_timeout = true, .timeout_ns = -3},
      {.timeout_ns = CF_SEC(1)}, /* without has_timeout */
      {0, 0, CF_SEC(1), 0, NULL, NULL, false} /* positional: the same */};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(
        cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &bad[i], &m),
        CF_EINVAL);
    assert_null(m);
  }
  assert_int_equal(cf_executor_map(ex, NULL, cf_range_iter_next, &r, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_executor_map(ex, task_identity, NULL, &r, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, NULL, NULL),
      CF_EINVAL);
  assert_int_equal(
      cf_executor_map(NULL, task_identity, cf_range_iter_next, &r, NULL, &m),
      CF_EINVAL);
  cf_value v;
  assert_int_equal(cf_map_next(NULL, &v), CF_EINVAL);
  cf_map_free(NULL);
  assert_string_equal(cf_map_get_error(NULL).message, "");
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, NULL, &m),
      CF_ENOMEM);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, NULL, &m),
      CF_ESHUTDOWN);
  assert_null(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(empty_input_and_describe) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_range_iter r = cf_range_iter_init(5, 5, 1);
  cf_map *m;
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, NULL, &m), 0);
  char buf[64];
  assert_true(cf_map_describe(m, buf, sizeof buf) > 0);
  assert_int_equal(strncmp(buf, "<cf_map iterator at 0x", 22), 0);
  assert_int_equal(cf_map_describe(NULL, buf, sizeof buf), CF_EINVAL);
  cf_value v;
  assert_int_equal(cf_map_next(m, &v), 0);
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(iterators) {
  (void)state;
  void *item;
  cf_range_iter r = cf_range_iter_init(10, 0, -3);
  int64_t expect[] = {10, 7, 4, 1};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(cf_range_iter_next(&r, &item), 1);
    assert_int_equal((intptr_t)item, expect[i]);
  }
  assert_int_equal(cf_range_iter_next(&r, &item), 0);
  r = cf_range_iter_init(0, 10, 0);
  assert_int_equal(cf_range_iter_next(&r, &item), 0);
  assert_int_equal(cf_range_iter_next(NULL, &item), CF_EINVAL);
  void *items[] = {&r, NULL};
  cf_array_iter a = {items, 2, 0};
  assert_int_equal(cf_array_iter_next(&a, &item), 1);
  assert_ptr_equal(item, &r);
  assert_int_equal(cf_array_iter_next(&a, &item), 1);
  assert_null(item);
  assert_int_equal(cf_array_iter_next(&a, &item), 0);
  assert_int_equal(cf_array_iter_next(NULL, &item), CF_EINVAL);
}

/* An iterator the map cannot recognise: it reads it one call per item. */
typedef struct wrapped_iter {
  cf_iter_fn next;
  void *state;
} wrapped_iter;

static int wrapped_next(void *state, void **item) {
  wrapped_iter *w = state;
  return w->next(w->state, item);
}

/* Maps task_identity over next(state) with the chunksize; stores up to cap
 * results in out; returns how many came, or the map's error. */
static long map_collect(cf_executor *ex, cf_iter_fn next, void *state,
                        int64_t chunk, int64_t *out, long cap) {
  cf_map_opts o = {.chunksize = chunk};
  cf_map *m;
  assert_int_equal(cf_executor_map(ex, task_identity, next, state, &o, &m), 0);
  cf_value v;
  long n = 0;
  int rc;
  while ((rc = cf_map_next(m, &v)) == 1) {
    assert_true(n < cap);
    out[n++] = v.u.i;
  }
  cf_map_free(m);
  return rc < 0 ? rc : n;
}

__extension__ typedef __int128 wide;

/* The map reads cf_range_iter and cf_array_iter a chunk at a time: the
 * items, their order and the iterator's final state must be exactly what
 * one call per item gives, also at the ends of int64_t (where stepping
 * past the last item would overflow). The expected items are computed in
 * 128-bit arithmetic, independently of the iterator. */
CF_TEST(bulk_reads_match_one_call_per_item) {
  (void)state;
  enum { CAP = 3000 };
  static const int64_t ranges[][3] = {
      {0, 2500, 1},
      {10, -7, -3},
      {5, 5, 1},
      {5, 0, 1},
      {0, 10, 0},
      {INT64_MAX - 10, INT64_MAX, 4},
      {INT64_MIN + 10, INT64_MIN, -3},
      {0, INT64_MAX, INT64_MAX / 2},
      {INT64_MIN, INT64_MAX, INT64_MAX},
      {INT64_MAX, INT64_MIN, INT64_MIN},
      {-1000, 1001, 7},
  };
  static const int64_t chunks[] = {1, 2, 3, 1000};
  int64_t *want = malloc(CAP * sizeof *want), *got = malloc(CAP * sizeof *got);
  assert_non_null(want);
  assert_non_null(got);
  cf_executor *ex = make_pool(2);
  for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
    const int64_t *rg = ranges[k];
    long nwant = 0;
    for (wide x = rg[0]; rg[2] > 0 ? x < rg[1] : rg[2] < 0 && x > rg[1];
         x += rg[2]) {
      assert_true(nwant < CAP);
      want[nwant++] = (int64_t)x;
    }
    /* One call at a time, directly. */
    cf_range_iter r = cf_range_iter_init(rg[0], rg[1], rg[2]);
    void *item;
    for (long i = 0; i < nwant; i++) {
      assert_int_equal(cf_range_iter_next(&r, &item), 1);
      assert_true((int64_t)(intptr_t)item == want[i]);
    }
    assert_int_equal(cf_range_iter_next(&r, &item), 0);
    assert_int_equal(cf_range_iter_next(&r, &item), 0);
    const int64_t end = r.next;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
      /* In bulk, and through a wrapper (one call per item). */
      for (int wrap = 0; wrap < 2; wrap++) {
        r = cf_range_iter_init(rg[0], rg[1], rg[2]);
        wrapped_iter w = {cf_range_iter_next, &r};
        long n =
            wrap ? map_collect(ex, wrapped_next, &w, chunks[c], got, CAP)
                 : map_collect(ex, cf_range_iter_next, &r, chunks[c], got, CAP);
        assert_int_equal(n, nwant);
        assert_memory_equal(got, want, (size_t)nwant * sizeof *want);
        assert_true(r.next == end);
      }
    }
  }
  /* Arrays: in bulk, the items and the final position. */
  void **items = malloc(2500 * sizeof *items);
  assert_non_null(items);
  for (long i = 0; i < 2500; i++)
    items[i] = (void *)(intptr_t)(i * 3);
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    cf_array_iter a = {items, 2500, 100}; /* starts where next says */
    assert_int_equal(
        map_collect(ex, cf_array_iter_next, &a, chunks[c], got, CAP), 2400);
    for (long i = 0; i < 2400; i++)
      assert_int_equal(got[i], (i + 100) * 3);
    assert_int_equal(a.next, 2500);
  }
  /* An array iterator without items: CF_EINVAL at the first item, in
   * bulk or not; none at all is just empty. */
  void *item;
  cf_array_iter bad = {NULL, 3, 0};
  assert_int_equal(cf_array_iter_next(&bad, &item), CF_EINVAL);
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    bad.next = 0;
    assert_int_equal(
        map_collect(ex, cf_array_iter_next, &bad, chunks[c], got, CAP),
        CF_EINVAL);
    cf_array_iter none = {NULL, 0, 0};
    assert_int_equal(
        map_collect(ex, cf_array_iter_next, &none, chunks[c], got, CAP), 0);
  }
  free(items);
  free(want);
  free(got);
  assert_int_equal(cf_executor_free(ex), 0);
}

static int task_map_inside(void *arg, cf_value *result) {
  /* A map consumed inside a task of the same one-worker pool: the wait
   * helper runs the map's tasks. */
  cf_executor *ex = arg;
  cf_range_iter r = cf_range_iter_init(0, 100, 1);
  cf_map *m;
  if (cf_executor_map(ex, task_identity, cf_range_iter_next, &r, NULL, &m) != 0)
    return -EIO;
  cf_value v;
  int64_t sum = 0;
  while (cf_map_next(m, &v) == 1)
    sum += v.u.i;
  cf_map_free(m);
  result->u.i = sum;
  return 0;
}

CF_TEST(map_inside_a_task_of_the_same_pool) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_future *f;
  assert_int_equal(cf_executor_submit(ex, task_map_inside, ex, &f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, 4950);
  cf_future_unref(f);
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(huge_chunksize_allocates_only_what_is_read) {
  (void)state;
  /* chunksize * item size used to overflow the chunk allocation. In bulk
   * (a range) and one item per call (through a wrapper). */
  cf_executor *ex = make_pool(2);
  for (int wrap = 0; wrap < 2; wrap++) {
    cf_range_iter r = cf_range_iter_init(0, 10, 1);
    wrapped_iter w = {cf_range_iter_next, &r};
    int64_t got[10];
    long n = map_collect(ex, wrap ? wrapped_next : cf_range_iter_next,
                         wrap ? (void *)&w : (void *)&r, INT64_MAX, got, 10);
    assert_int_equal(n, 10);
    for (int64_t i = 0; i < 10; i++)
      assert_int_equal(got[i], i);
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST(first_submission_failure_is_returned_by_map) {
  (void)state;
  cf_executor *ex = make_pool(1);
  cf_range_iter r = cf_range_iter_init(0, 3, 1);
  cf_map *m = (cf_map *)ex;
  /* Allocations, one task per item: the map, its ring, then the first
   * future. */
  cf_map_opts o = {.chunksize = 1};
  cf__fault_arm(CF__FAULT_ALLOC, 2, 1);
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &o, &m),
      CF_ENOMEM);
  assert_null(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

static bool three_finished(void *arg) {
  cf_executor_stats st;
  return cf_executor_get_stats(arg, &st) == 0 && st.completed + st.failed >= 3;
}

CF_TEST(chunk_result_allocation_failure_surfaces_at_its_item) {
  (void)state;
  cf_executor *ex = make_pool(1);
  gate g;
  gate_init(&g);
  cf_future *hold;
  assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &hold), 0);
  /* Two chunks of 4, both submitted by cf_executor_map while the only
   * worker is held. */
  cf_range_iter r = cf_range_iter_init(0, 8, 1);
  cf_map_opts o = {.chunksize = 4};
  cf_map *m;
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &o, &m), 0);
  /* The next allocation is the first chunk's results, in the worker. */
  cf__fault_arm(CF__FAULT_ALLOC, 0, 1);
  gate_open(&g);
  assert_true(eventually(three_finished, ex));
  cf__fault_arm(CF__FAULT_ALLOC, 0, 0);
  cf_executor_stats st;
  assert_int_equal(cf_executor_get_stats(ex, &st), 0);
  assert_int_equal(st.failed, 1);
  cf_value v;
  assert_int_equal(cf_map_next(m, &v), CF_ENOMEM);
  assert_string_not_equal(cf_map_get_error(m).message, "");
  assert_int_equal(cf_map_next(m, &v), CF_ENOMEM);
  cf_map_free(m);
  cf_future_unref(hold);
  assert_int_equal(cf_executor_free(ex), 0);
  gate_destroy(&g);
}

static _Atomic long owned_made;

static int task_owned_index(void *arg, cf_value *result) {
  int64_t *p = malloc(sizeof *p);
  if (p == NULL)
    return cf_raise(CF_ENOMEM, "no memory");
  *p = (int64_t)(intptr_t)arg;
  atomic_fetch_add(&owned_made, 1);
  result->u.ptr = p;
  result->dtor = count_and_free;
  return 0;
}

/* A small look-ahead makes the map reuse its chunks many times over:
 * order, values and destructor counts must survive the reuse, also when
 * the map is freed with chunks in flight. */
CF_TEST(reused_chunks_keep_order_and_release_values_once) {
  (void)state;
  for (int rep = 0; rep < 20; rep++) {
    atomic_store(&dtor_calls, 0);
    atomic_store(&owned_made, 0);
    cf_executor *ex = make_pool(2);
    const int64_t n = 5000, stop_at = rep % 2 == 0 ? n : 1234;
    cf_range_iter r = cf_range_iter_init(0, n, 1);
    cf_map_opts o = {.chunksize = 7 + rep % 5, .prefetch = 2};
    cf_map *m;
    assert_int_equal(
        cf_executor_map(ex, task_owned_index, cf_range_iter_next, &r, &o, &m),
        0);
    cf_value v;
    int64_t i = 0;
    for (; i < stop_at; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(*(int64_t *)v.u.ptr, i);
      cf_value_release(&v);
    }
    if (stop_at == n)
      assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
    assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
    assert_true(atomic_load(&owned_made) >= stop_at);
    assert_int_equal(atomic_load(&dtor_calls), atomic_load(&owned_made));
    assert_int_equal(cf_executor_free(ex), 0);
  }
}

/* Fails item 30 after making its value (the chunk's task releases it). */
static int task_owned_fail_at_30(void *arg, cf_value *result) {
  int rc = task_owned_index(arg, result);
  if (rc == 0 && (intptr_t)arg == 30)
    return cf_raise(-EDOM, "item 30 is bad");
  return rc;
}

/* With a look-ahead of one chunk, each chunk reuses the last one's
 * buffers: the failing chunk's slots past the failure still hold copies
 * of values the consumer already released. They must not be released
 * again, and the failed item's own value exactly once. */
CF_TEST(failure_in_a_reused_chunk_releases_each_value_once) {
  (void)state;
  atomic_store(&dtor_calls, 0);
  atomic_store(&owned_made, 0);
  cf_executor *ex = make_pool(2);
  cf_range_iter r = cf_range_iter_init(0, 40, 1);
  cf_map_opts o = {.chunksize = 4, .prefetch = 1};
  cf_map *m;
  assert_int_equal(cf_executor_map(ex, task_owned_fail_at_30,
                                   cf_range_iter_next, &r, &o, &m),
                   0);
  cf_value v;
  for (int64_t i = 0; i < 30; i++) {
    assert_int_equal(cf_map_next(m, &v), 1);
    assert_int_equal(*(int64_t *)v.u.ptr, i);
    cf_value_release(&v);
  }
  assert_int_equal(cf_map_next(m, &v), -EDOM);
  assert_string_equal(cf_map_get_error(m).message, "item 30 is bad");
  cf_map_free(m);
  assert_int_equal(cf_executor_shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER), 0);
  assert_int_equal(atomic_load(&owned_made), 31);
  assert_int_equal(atomic_load(&dtor_calls), 31);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* Every allocation of a map (its ring, chunks and their buffers, the
 * bulk read's item array, futures, result arrays in the workers) failing
 * in turn: the map yields an in-order prefix, then CF_ENOMEM; never a
 * wrong item, a crash, a leak (ASan) or a hang. */
CF_TEST(allocation_failures_anywhere_give_a_prefix_then_enomem) {
  (void)state;
  cf_executor *ex = make_pool(2);
  /* Start both workers first, so the faults hit the map, not the pool. */
  gate g;
  gate_init(&g);
  cf_future *hold[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_executor_submit(ex, task_wait_gate, &g, &hold[i]), 0);
  gate_open(&g);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(cf_future_result(hold[i], SOON, NULL), 0);
    cf_future_unref(hold[i]);
  }
  /* Chunks of 3; one task per item, submitted in batches; adaptive;
   * chunks of 3 through a runner. */
  static const cf_map_opts shapes[] = {
      {.chunksize = 3, .prefetch = 2},
      {.chunksize = 1, .prefetch = 16},
      {.chunksize = 0, .prefetch = 16},
      {.chunksize = 3, .prefetch = 2, .chunk_fn = identity_chunks}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    int partial = 0, complete = 0;
    for (int skip = 0; skip < 120 && complete < 5; skip++) {
      for (int wrap = 0; wrap < 2; wrap++) {
        cf_range_iter r = cf_range_iter_init(0, 40, 1);
        wrapped_iter w = {cf_range_iter_next, &r};
        cf_map_opts o = shapes[k];
        cf_map *m = NULL;
        cf__fault_arm(CF__FAULT_ALLOC, skip, 1);
        int rc = cf_executor_map(ex, task_identity,
                                 wrap ? wrapped_next : cf_range_iter_next,
                                 wrap ? (void *)&w : (void *)&r, &o, &m);
        long n = 0;
        if (rc == 0) {
          cf_value v;
          while ((rc = cf_map_next(m, &v)) == 1) {
            assert_int_equal(v.u.i, n);
            n++;
          }
          cf_map_free(m);
        }
        cf__fault_arm(CF__FAULT_ALLOC, 0, 0);
        if (rc == 0) {
          assert_int_equal(n, 40);
          complete += wrap;
        } else {
          assert_int_equal(rc, CF_ENOMEM);
          partial += n > 0;
        }
      }
    }
    assert_true(partial > 0);  /* failures after some results were made */
    assert_true(complete > 0); /* and the sweep went past every allocation */
  }
  gate_destroy(&g);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* The pool shuts down while a map (one task per item, submitted in
 * batches) is under way: what was submitted still runs and is yielded in
 * order, then the map ends with CF_ESHUTDOWN at the first item it could
 * not submit. */
CF_TEST(shutdown_during_a_batched_map_ends_it_at_its_position) {
  (void)state;
  cf_executor *ex = make_pool(2);
  cf_range_iter r = cf_range_iter_init(0, 100000, 1);
  cf_map_opts o = {.chunksize = 1, .prefetch = 64};
  cf_map *m;
  assert_int_equal(
      cf_executor_map(ex, task_identity, cf_range_iter_next, &r, &o, &m), 0);
  cf_value v;
  int64_t n = 0;
  for (; n < 100; n++) {
    assert_int_equal(cf_map_next(m, &v), 1);
    assert_int_equal(v.u.i, n);
  }
  assert_int_equal(cf_executor_shutdown(ex, 0, 0), 0);
  int rc;
  while ((rc = cf_map_next(m, &v)) == 1) {
    assert_int_equal(v.u.i, n);
    n++;
  }
  assert_int_equal(rc, CF_ESHUTDOWN);
  assert_int_equal(cf_map_get_error(m).code, CF_ESHUTDOWN);
  assert_true(n < 100 + 64 + 1); /* no more than the window went through */
  assert_int_equal(cf_map_next(m, &v), CF_ESHUTDOWN); /* sticky */
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
}

/* A backend that forwards to a thread pool and keeps its own reference
 * to every future it hands out, so a test can watch the map's. */
enum { SPY_MAX = 16 };
typedef struct spy {
  cf_executor base;
  cf_executor *inner;
  cf_future *seen[SPY_MAX];
  int n;
} spy;

static int spy_submit(cf_executor *ex, const cf_task *task, int64_t deadline_ns,
                      cf_future **out) {
  spy *s = (spy *)ex;
  int64_t timeout = CF_FOREVER;
  if (deadline_ns != CF_FOREVER) {
    timeout = deadline_ns - cf_now_ns();
    timeout = timeout < 0 ? 0 : timeout;
  }
  int rc = cf_executor_submit_task(s->inner, task, timeout, out);
  if (rc == 0 && s->n < SPY_MAX)
    s->seen[s->n++] = cf_future_ref(*out);
  return rc;
}
static int spy_shutdown(cf_executor *ex, unsigned flags, int64_t deadline_ns) {
  int64_t timeout = deadline_ns == CF_FOREVER   ? CF_FOREVER
                    : deadline_ns > cf_now_ns() ? deadline_ns - cf_now_ns()
                                                : 0;
  return cf_executor_shutdown(((spy *)ex)->inner, flags, timeout);
}
static void spy_destroy(cf_executor *ex) {
  spy *s = (spy *)ex;
  for (int i = 0; i < s->n; i++)
    cf_future_unref(s->seen[i]);
  TCHECK(cf_executor_free(s->inner) == 0);
}
static void spy_stats(cf_executor *ex, cf_executor_stats *st) {
  cf_executor_get_stats(((spy *)ex)->inner, st);
}
static int spy_max_workers(cf_executor *ex) {
  return cf_executor_get_max_workers(((spy *)ex)->inner);
}
static const cf__executor_vtable spy_vt = {.name = "spy",
                                           .submit = spy_submit,
                                           .shutdown = spy_shutdown,
                                           .destroy = spy_destroy,
                                           .stats = spy_stats,
                                           .max_workers = spy_max_workers};

static bool only_the_spy_holds_it(void *f) {
  return atomic_load(&((cf_future *)f)->refs) == 1;
}

/* The map drops its reference to each future as soon as the results of
 * its task are yielded (memory stays flat over endless input), not when
 * the map ends. With chunks, one future per chunk. */
CF_TEST(map_drops_each_future_once_yielded) {
  (void)state;
  for (int64_t chunk = 1; chunk <= 3; chunk += 2) {
    spy *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->inner = make_pool(2);
    cf__executor_init(&s->base, &spy_vt);
    cf_range_iter r = cf_range_iter_init(0, 12, 1);
    cf_map_opts o = {.chunksize = chunk};
    cf_map *m;
    assert_int_equal(cf_executor_map(&s->base, task_identity,
                                     cf_range_iter_next, &r, &o, &m),
                     0);
    assert_int_equal(s->n, (int)(12 / chunk)); /* all within the look-ahead */
    cf_value v;
    for (int64_t i = 0; i < 12; i++) {
      cf_future *f = s->seen[i / chunk];
      /* Not yet fully yielded: the map still holds it. */
      assert_true(atomic_load(&f->refs) >= 2);
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
      if (i % chunk == chunk - 1) /* its last result: dropped now */
        assert_true(eventually(only_the_spy_holds_it, f));
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
    assert_int_equal(cf_executor_free(&s->base), 0);
  }
}

/* A backend that forwards to a thread pool and records how many tasks
 * each submission carried (a batch, or one submit). */
enum { BATCHES_MAX = 64 };
typedef struct batch_spy {
  cf_executor base;
  cf_executor *inner;
  size_t sizes[BATCHES_MAX];
  int n;
} batch_spy;

static void batch_spy_note(batch_spy *s, size_t k) {
  if (s->n < BATCHES_MAX)
    s->sizes[s->n++] = k;
}
static int batch_spy_submit(cf_executor *ex, const cf_task *task,
                            int64_t deadline_ns, cf_future **out) {
  batch_spy *s = (batch_spy *)ex;
  size_t done = 0;
  int rc = cf__executor_submit_batch(s->inner, task, 1, deadline_ns, out, &done);
  batch_spy_note(s, done);
  return rc;
}
static int batch_spy_submit_batch(cf_executor *ex, const cf_task *tasks,
                                  size_t n, int64_t deadline_ns,
                                  cf_future **out, size_t *done) {
  batch_spy *s = (batch_spy *)ex;
  int rc = cf__executor_submit_batch(s->inner, tasks, n, deadline_ns, out, done);
  batch_spy_note(s, *done);
  return rc;
}
static void batch_spy_destroy(cf_executor *ex) {
  TCHECK(cf_executor_free(((batch_spy *)ex)->inner) == 0);
}
static int batch_spy_max_workers(cf_executor *ex) {
  return cf_executor_get_max_workers(((batch_spy *)ex)->inner);
}
static const cf__executor_vtable batch_spy_vt = {
    .name = "batch spy",
    .submit = batch_spy_submit,
    .submit_batch = batch_spy_submit_batch,
    .shutdown = spy_shutdown, /* (spy's: they read only inner) */
    .destroy = batch_spy_destroy,
    .stats = spy_stats,
    .max_workers = batch_spy_max_workers};

/* Chunks reach the executor in batches: the first window at once, then
 * two at a time, never a lone chunk while two places are free; with a window of two,
 * one chunk is always in flight ahead of the one being yielded. One by
 * one, each submit to an idle pool woke the worker parked last, which
 * ran that chunk alone while the other workers slept on (bench/NOTES.md
 * section 32). */
CF_TEST(chunks_are_submitted_in_batches) {
  (void)state;
  for (int64_t prefetch = 2; prefetch <= 8; prefetch += 6) {
    batch_spy *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->inner = make_pool(2);
    cf__executor_init(&s->base, &batch_spy_vt);
    cf_range_iter r = cf_range_iter_init(0, 200, 1);
    cf_map_opts o = {.chunksize = 10, .prefetch = prefetch};
    cf_map *m;
    assert_int_equal(cf_executor_map(&s->base, task_identity,
                                     cf_range_iter_next, &r, &o, &m),
                     0);
    assert_int_equal(s->n, 1); /* the first window, in one batch */
    assert_int_equal(s->sizes[0], (size_t)prefetch);
    cf_value v;
    for (int64_t i = 0; i < 200; i++) {
      int before = s->n;
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, i);
      if (prefetch == 2 && i % 10 == 9 && i < 180) /* a chunk's last */
        assert_int_equal(s->n, before + 1); /* the next one, ahead */
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
    /* 20 chunks: then two per submission, or one ahead with a window of
     * 2. */
    for (int i = 1; i < s->n; i++)
      assert_int_equal(s->sizes[i], prefetch == 2 ? 1 : 2);
    assert_int_equal(s->n, prefetch == 2 ? 19 : 7);
    assert_int_equal(cf_executor_free(&s->base), 0);
  }
}

/* ---- chunk runners (CF_MAP_CHUNK_FN) ---------------------------------- */

/* Item n: 17 mod 50 an owned, sized, typed buffer holding n; 3 mod 50 a
 * plain n * n after a cf_raise it does not fail with (the message must
 * not reach a later failure); fail_at fails with -EIO without a message;
 * else n * n. */
static atomic_int mixed_dtors, mixed_allocs;
static intptr_t mixed_fail_at = -1;
static void mixed_free(void *p) {
  atomic_fetch_add(&mixed_dtors, 1);
  free(p);
}
static int mixed_item(void *arg, cf_value *r) {
  intptr_t n = (intptr_t)arg;
  if (n == mixed_fail_at)
    return -EIO;
  if (n % 50 == 17) {
    int64_t *p = malloc(sizeof *p);
    if (p == NULL)
      return CF_ENOMEM;
    *p = n;
    atomic_fetch_add(&mixed_allocs, 1);
    r->u.ptr = p;
    r->size = sizeof *p;
    r->dtor = mixed_free;
    r->type = "bytes";
    return 0;
  }
  if (n % 50 == 3)
    (void)cf_raise(-EIO, "stale message of item %ld", (long)n);
  r->u.i = n * n;
  return 0;
}
static atomic_int mixed_runs;
/* CF_MAP_CHUNK_FN's expansion, counting its chunks. */
static int mixed_chunks(cf_map_chunk *c) {
  atomic_fetch_add(&mixed_runs, 1);
  return cf__map_chunk_run(c, mixed_item);
}

static int count_next(void *state, void **item) { /* 0, 1, ... forever */
  intptr_t *n = state;
  *item = (void *)(*n)++;
  return 1;
}

/* Maps mixed_item over 0..count-1 (count < 0: an endless counter, read
 * up to -count) and checks every result and the end: the map's code
 * after the last one. */
static void check_mixed_map(int iter, int64_t chunksize, bool runner,
                            long count, int want_end) {
  cf_executor *ex = make_pool(2); /* freed at the end: no task left over */
  static void *items[5000];
  for (intptr_t i = 0; i < 5000; i++)
    items[i] = (void *)i;
  long n = count < 0 ? -count : count;
  cf_range_iter r = cf_range_iter_init(0, n, 1);
  cf_array_iter a = {items, (size_t)n, 0};
  intptr_t upto = 0;
  cf_iter_fn next = iter == 0   ? cf_range_iter_next
                    : iter == 1 ? cf_array_iter_next
                                : count_next;
  void *st = iter == 0 ? (void *)&r : iter == 1 ? (void *)&a : &upto;
  cf_map_opts o = {.chunksize = chunksize,
                   .chunk_fn = runner ? mixed_chunks : NULL};
  cf_map *m;
  assert_int_equal(cf_executor_map(ex, mixed_item, next, st, &o, &m), 0);
  cf_value v;
  long i = 0;
  int rc;
  for (; i < n && (rc = cf_map_next(m, &v)) == 1; i++) {
    if (i % 50 == 17) {
      assert_ptr_equal(v.dtor, mixed_free);
      assert_int_equal(v.size, sizeof(int64_t));
      assert_string_equal(v.type, "bytes");
      assert_int_equal(*(int64_t *)v.u.ptr, i);
      cf_value_release(&v);
    } else {
      assert_null(v.dtor);
      assert_int_equal(v.size, 0);
      assert_null(v.type);
      assert_int_equal(v.u.i, (int64_t)i * i);
    }
  }
  if (want_end == 0) {
    assert_int_equal(i, n);
    if (count > 0) {
      assert_int_equal(cf_map_next(m, &v), 0);
      assert_int_equal(atomic_load(&mixed_allocs), (n + 32) / 50);
    }
  } else {
    assert_int_equal(i, mixed_fail_at);
    assert_int_equal(rc, want_end);
    assert_string_equal(cf_map_get_error(m).message, cf_strerror(want_end));
  }
  cf_map_free(m);
  assert_int_equal(cf_executor_free(ex), 0);
  /* Every buffer made, yielded or not, freed once. */
  assert_int_equal(atomic_load(&mixed_dtors), atomic_load(&mixed_allocs));
}

CF_TEST(chunk_runner_gives_what_per_item_calls_give) {
  (void)state;
  const int64_t chunks[] = {1, 2, 7, 100, 1000, 0};
  for (int iter = 0; iter < 3; iter++)
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
      for (int runner = 0; runner < 2; runner++) {
        atomic_store(&mixed_runs, 0);
        /* No failure; after item 2003's stale message, before 2017's
         * buffer (which takes a runner's chunk to the library's per-item
         * loop); and after 2053's, in that loop. */
        static const intptr_t fail_at[] = {-1, 2010, 2060};
        for (int f = 0; f < 3; f++) {
          atomic_store(&mixed_dtors, 0);
          atomic_store(&mixed_allocs, 0);
          mixed_fail_at = fail_at[f];
          if (f == 0)
            check_mixed_map(iter, chunks[c], runner, iter == 2 ? -3000 : 3000,
                            0);
          else
            check_mixed_map(iter, chunks[c], runner, 3000, -EIO);
        }
        /* The runner runs every chunk it is given, and only chunks: with
         * one item per task it is not used. Each map calls it once more
         * up front, to check that it runs mixed_item. */
        int probes = runner ? 3 : 0;
        if (!runner || chunks[c] == 1)
          assert_int_equal(atomic_load(&mixed_runs), probes);
        else if (chunks[c] > 1)
          assert_true(atomic_load(&mixed_runs) >= probes + 3000 / chunks[c]);
        else /* adaptive: every task is a chunk, and each map has some */
          assert_true(atomic_load(&mixed_runs) >= probes + 3);
      }
}

static int task_sized_square(void *arg, cf_value *r) {
  if (cf_arg_size(arg) != sizeof(int64_t))
    return cf_raise(-EINVAL, "argument of %zu bytes", cf_arg_size(arg));
  int64_t x;
  memcpy(&x, arg, sizeof x);
  r->u.i = x * x;
  return 0;
}
CF_MAP_CHUNK_FN(sized_square_chunks, task_sized_square)

CF_TEST(chunk_runner_of_sized_items_and_of_another_function) {
  (void)state;
  cf_executor *ex = make_pool(2);
  int64_t nums[300];
  void *items[300];
  for (int i = 0; i < 300; i++) {
    nums[i] = i - 150;
    items[i] = &nums[i];
  }
  /* Sized items go per item (their argument buffers), with the same
   * results. */
  for (int64_t chunk = 0; chunk <= 64; chunk += 32) {
    cf_array_iter a = {items, 300, 0};
    cf_map_opts o = {.chunksize = chunk,
                     .item_size = sizeof(int64_t),
                     .chunk_fn = sized_square_chunks};
    cf_map *m;
    assert_int_equal(cf_executor_map(ex, task_sized_square, cf_array_iter_next,
                                     &a, &o, &m),
                     0);
    cf_value v;
    for (int i = 0; i < 300; i++) {
      assert_int_equal(cf_map_next(m, &v), 1);
      assert_int_equal(v.u.i, nums[i] * nums[i]);
    }
    assert_int_equal(cf_map_next(m, &v), 0);
    cf_map_free(m);
  }
  /* A runner made from another function is refused up front. */
  for (int64_t chunk = 0; chunk <= 10; chunk += 10) {
    cf_range_iter r = cf_range_iter_init(0, 10, 1);
    cf_map_opts o = {.chunksize = chunk, .chunk_fn = identity_chunks};
    cf_map *m = (cf_map *)ex;
    assert_int_equal(
        cf_executor_map(ex, task_fail_at_7, cf_range_iter_next, &r, &o, &m),
        CF_EINVAL);
    assert_null(m);
    assert_int_equal(r.next, 0); /* nothing read */
  }
  assert_int_equal(cf_executor_free(ex), 0);
}

CF_TEST_MAIN()
