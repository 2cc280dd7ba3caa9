/*
 * test_registry.c - named tasks and byte payloads (cf/registry.h), on the
 * thread pool and the loop: the executors a process pool will sit beside.
 */
#include "support.h"

#include <stdlib.h>
#include <string.h>

#include "cf/process_pool.h"
#include "cf/registry.h"

typedef struct point {
  int32_t x, y;
  double w;
} point;

/* Registered before main. */
CF_TASK(square_i64) {
  int64_t n;
  TCHECK(cf_arg_size(arg) == sizeof n);
  memcpy(&n, arg, sizeof n);
  result->u.i = n * n;
  return 0;
}

CF_TASK(describe_point) {
  TCHECK(cf_arg_size(arg) == sizeof(point));
  TCHECK((uintptr_t)arg % 16 == 0);
  const point *p = arg;
  char buf[64];
  snprintf(buf, sizeof buf, "(%d, %d) weight %.1f", p->x, p->y, p->w);
  return cf_value_set_string(result, buf);
}

CF_TASK(reverse_bytes) {
  size_t n = cf_arg_size(arg);
  const unsigned char *in = arg;
  unsigned char *out = malloc(n != 0 ? n : 1);
  if (out == NULL)
    return CF_ENOMEM;
  for (size_t i = 0; i < n; i++)
    out[i] = in[n - 1 - i];
  int rc = cf_value_set_bytes(result, out, n);
  free(out);
  return rc;
}

CF_TASK(fails_with_message) {
  return cf_raise(-ERANGE, "%s is out of range", (const char *)arg);
}

static int not_registered(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return 0;
}

CF_TEST(tasks_defined_with_cf_task_are_registered_before_main) {
  (void)state;
  assert_ptr_equal(cf_task_lookup("square_i64"), square_i64);
  assert_ptr_equal(cf_task_lookup("describe_point"), describe_point);
  assert_string_equal(cf_task_name_of(reverse_bytes), "reverse_bytes");
  assert_null(cf_task_lookup("no_such_task"));
  assert_null(cf_task_name_of(not_registered));
  assert_null(cf_task_lookup(NULL));
  assert_null(cf_task_name_of(NULL));
}

CF_TEST(registration_refuses_clashes_and_bad_names) {
  (void)state;
  assert_int_equal(cf_task_register("square_i64", square_i64), 0); /* same */
  assert_int_equal(cf_task_register("square_i64", not_registered), CF_EEXIST);
  assert_ptr_equal(cf_task_lookup("square_i64"), square_i64);
  assert_int_equal(cf_task_register("", not_registered), CF_EINVAL);
  assert_int_equal(cf_task_register(NULL, not_registered), CF_EINVAL);
  assert_int_equal(cf_task_register("x", NULL), CF_EINVAL);
  char longest[CF_TASK_NAME_MAX + 2];
  memset(longest, 'a', sizeof longest);
  longest[CF_TASK_NAME_MAX + 1] = '\0';
  assert_int_equal(cf_task_register(longest, not_registered), CF_EINVAL);
  longest[CF_TASK_NAME_MAX] = '\0';
  assert_int_equal(cf_task_register(longest, not_registered), 0);
  assert_ptr_equal(cf_task_lookup(longest), not_registered);
  assert_string_equal(cf_strerror(CF_EEXIST), strerror(EEXIST));
  /* A clash at start-up (CF_TASK in two files) is reported, not fatal. */
  captured c;
  capture_stderr(&c);
  cf__task_register_static("describe_point", not_registered);
  char *err = captured_text(&c);
  assert_non_null(strstr(err, "cannot register task \"describe_point\""));
  free(err);
  assert_ptr_equal(cf_task_lookup("describe_point"), describe_point);
}

static void check_payloads(cf_executor *ex) {
  /* An integer. */
  int64_t n = 123456789;
  cf_future *f;
  assert_int_equal(cf_executor_submit_bytes(ex, "square_i64", &n, sizeof n,
                                            &f),
                   0);
  n = 0; /* the argument was copied */
  const cf_value *v;
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->u.i, (int64_t)123456789 * 123456789);
  assert_int_equal(v->size, 0);
  cf_future_unref(f);
  /* A fixed struct in, a string out. */
  point p = {3, -4, 2.5};
  assert_int_equal(cf_executor_submit_bytes(ex, "describe_point", &p,
                                            sizeof p, &f),
                   0);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_string_equal(v->u.ptr, "(3, -4) weight 2.5");
  assert_int_equal(v->size, strlen("(3, -4) weight 2.5") + 1);
  assert_string_equal(v->type, "str");
  cf_future_unref(f);
  /* Bytes in and out, empty ones too. */
  const unsigned char blob[5] = {1, 2, 3, 0, 5};
  assert_int_equal(cf_executor_submit_bytes(ex, "reverse_bytes", blob,
                                            sizeof blob, &f),
                   0);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->size, 5);
  const unsigned char want[5] = {5, 0, 3, 2, 1};
  assert_memory_equal(v->u.ptr, want, 5);
  assert_string_equal(v->type, "bytes");
  cf_future_unref(f);
  assert_int_equal(cf_executor_submit_bytes(ex, "reverse_bytes", NULL, 0, &f),
                   0);
  assert_int_equal(cf_future_result(f, SOON, &v), 0);
  assert_int_equal(v->size, 0);
  cf_future_unref(f);
  /* A failure keeps its code and message. */
  assert_int_equal(cf_executor_submit_bytes(ex, "fails_with_message", "x9",
                                            3, &f),
                   0);
  assert_int_equal(cf_future_wait(f, SOON), 0);
  cf_error e = cf_future_get_error(f);
  assert_int_equal(e.code, -ERANGE);
  assert_string_equal(e.message, "x9 is out of range");
  cf_future_unref(f);
  /* Bad submissions. */
  assert_int_equal(cf_executor_submit_bytes(ex, "no_such_task", &n, sizeof n,
                                            &f),
                   CF_EUNKNOWNTASK);
  assert_null(f);
  assert_int_equal(cf_executor_submit_bytes(ex, "square_i64", NULL, 8, &f),
                   CF_EINVAL);
  assert_int_equal(cf_executor_submit_bytes(ex, "", &n, sizeof n, &f),
                   CF_EINVAL);
  assert_int_equal(cf_executor_submit_bytes(NULL, "square_i64", &n, sizeof n,
                                            &f),
                   CF_EINVAL);
}

CF_TEST(byte_payloads_cross_the_thread_pool) {
  (void)state;
  cf_executor *ex = make_pool(2);
  check_payloads(ex);
  assert_int_equal(cf_executor_free(ex), 0);
  assert_string_equal(cf_strerror(CF_EUNKNOWNTASK),
                      "no task is registered under that name");
}

CF_TEST(the_same_named_tasks_run_on_a_loop) {
  (void)state;
  cf_loop *L;
  assert_int_equal(cf_loop_new(NULL, &L), 0);
  cf_executor *ex = cf_loop_executor(L);
  int64_t n = 7;
  cf_future *f;
  assert_int_equal(cf_executor_submit_bytes(ex, "square_i64", &n, sizeof n,
                                            &f),
                   0);
  assert_int_equal(cf_loop_run_until(L, f), 0);
  const cf_value *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal(v->u.i, 49);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(L), 0);
}

CF_TEST(set_bytes_releases_what_the_value_held) {
  (void)state;
  cf_value v = CF_VALUE_INIT;
  static char held[4];
  atomic_store(&dtor_calls, 0);
  v.u.ptr = held; /* counting_dtor only counts */
  v.dtor = counting_dtor;
  assert_int_equal(cf_value_set_bytes(&v, "abc", 3), 0);
  assert_int_equal(atomic_load(&dtor_calls), 1);
  assert_memory_equal(v.u.ptr, "abc", 3);
  assert_int_equal(cf_value_set_string(&v, "hello"), 0);
  assert_string_equal(v.u.ptr, "hello");
  assert_int_equal(v.size, 6);
  cf_value_release(&v);
  assert_int_equal(cf_value_set_bytes(NULL, "a", 1), CF_EINVAL);
  assert_int_equal(cf_value_set_bytes(&v, NULL, 1), CF_EINVAL);
  assert_int_equal(cf_value_set_string(&v, NULL), CF_EINVAL);
}

static int named_dummy(void *arg, cf_value *result) {
  (void)arg;
  (void)result;
  return 0;
}

static void *register_and_look_up(void *p) {
  long id = (long)(intptr_t)p;
  for (int i = 0; i < 200; i++) {
    char name[32];
    snprintf(name, sizeof name, "t%ld_%d", id, i);
    TCHECK(cf_task_register(name, named_dummy) == 0);
    TCHECK(cf_task_lookup(name) == named_dummy);
    TCHECK(cf_task_lookup("square_i64") == square_i64);
  }
  return NULL;
}

CF_TEST(registration_and_lookup_from_many_threads) {
  (void)state;
  pthread_t t[8];
  for (long i = 0; i < 8; i++)
    t[i] = spawn(register_and_look_up, (void *)(intptr_t)i);
  for (int i = 0; i < 8; i++)
    pthread_join(t[i], NULL);
  for (long i = 0; i < 8; i++) {
    char name[32];
    snprintf(name, sizeof name, "t%ld_%d", i, 199);
    assert_ptr_equal(cf_task_lookup(name), named_dummy);
  }
}

/* A sized map item reaches its task as an argument buffer on the thread
 * pool as on a process pool: one task per item (alone and in batches),
 * fixed chunks and adaptive ones. */
typedef struct pair {
  int64_t a, b;
} pair;

CF_TASK(add_pair) {
  pair p;
  int rc = cf_arg_get(arg, &p, sizeof p);
  if (rc != 0)
    return cf_raise(rc, "argument of %zu bytes", cf_arg_size(arg));
  cf_value_set_i64(result, p.a + p.b);
  return 0;
}

typedef struct reuse_iter {
  int next, n;
  pair buf; /* every item is this buffer, rewritten */
} reuse_iter;

static int reuse_next(void *state, void **item) {
  reuse_iter *r = state;
  if (r->next >= r->n)
    return 0;
  r->buf = (pair){r->next, 2 * r->next};
  r->next++;
  *item = &r->buf;
  return 1;
}

CF_TEST(sized_map_items_are_argument_buffers_on_the_thread_pool) {
  (void)state;
  enum { N = 3000 };
  pair *ps = malloc(N * sizeof *ps);
  void **items = malloc(N * sizeof *items);
  assert_non_null(ps);
  assert_non_null(items);
  for (int i = 0; i < N; i++) {
    ps[i] = (pair){i, 2 * i};
    items[i] = &ps[i];
  }
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  const int64_t chunksizes[] = {1, 0, 7};
  for (size_t c = 0; c < 3; c++) {
    cf_array_iter it = {items, N, 0};
    cf_map_opts o = {.chunksize = chunksizes[c], .item_size = sizeof(pair)};
    expect_map_multiples(ex, add_pair, cf_array_iter_next, &it, &o, 3, N);
  }
  /* Integers from a range are not bytes to copy. */
  cf_range_iter r = cf_range_iter_init(0, 10, 1);
  cf_map_opts bad = {.item_size = sizeof(pair)};
  cf_map *nomap;
  assert_int_equal(cf_executor_map(ex, add_pair, cf_range_iter_next, &r, &bad,
                                   &nomap),
                   CF_EINVAL);
  /* An iterator that hands out one buffer for every item: the map copies
   * each item as it reads it. */
  for (size_t c = 0; c < 3; c++) {
    reuse_iter it = {0, N, {0, 0}};
    cf_map_opts o = {.chunksize = chunksizes[c], .item_size = sizeof(pair)};
    expect_map_multiples(ex, add_pair, reuse_next, &it, &o, 3, N);
  }
  assert_int_equal(cf_executor_free(ex), 0);
  free(items);
  free(ps);
}

/* This program never calls cf_process_init: a process pool refuses to
 * start (its workers would run this main), and says why. */
CF_TEST(a_process_pool_needs_cf_process_init_first) {
  (void)state;
  cf_executor *ex = (cf_executor *)&ex;
  assert_int_equal(cf_process_pool_new(NULL, &ex), CF_EINVAL);
  assert_null(ex);
}

CF_TEST_MAIN()
