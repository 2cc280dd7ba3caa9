/*
 * bench_glib - GLib's GThreadPool. It has no futures: a task signals its
 * completion through a counter and a GCond, which is how GLib users wait.
 *   throughput  push N items, wait until all have run
 *   latency     push one item, wait for it, N times
 *   map         push a task per item (or per 1000), wait, read in order
 */
#include <glib.h>

#include "bench.h"

typedef struct sync_state {
  GMutex mu;
  GCond cv;
  gint remaining;
} sync_state;

static void task_fn(gpointer data, gpointer user) {
  (void)data;
  sync_state *s = user;
  if (g_atomic_int_dec_and_test(&s->remaining)) {
    g_mutex_lock(&s->mu);
    g_cond_signal(&s->cv);
    g_mutex_unlock(&s->mu);
  }
}

static bench_map the_map;

static void map_fn(gpointer data, gpointer user) {
  /* data is first + 1: a GThreadPool item may not be NULL. */
  bench_map_run(&the_map, (long)GPOINTER_TO_SIZE(data) - 1);
  task_fn(NULL, user);
}

static void wait_all(sync_state *s) {
  g_mutex_lock(&s->mu);
  while (g_atomic_int_get(&s->remaining) > 0)
    g_cond_wait(&s->cv, &s->mu);
  g_mutex_unlock(&s->mu);
}

static int glib_workers;

static int64_t map_once(bench_map *m, void *ctx) {
  sync_state *s = ctx;
  long tasks = bench_map_tasks(m);
  GThreadPool *p = g_thread_pool_new(map_fn, s, glib_workers, TRUE, NULL);
  g_atomic_int_set(&s->remaining, (gint)tasks);
  int64_t t0 = bench_now_ns();
  for (long t = 0; t < tasks; t++)
    g_thread_pool_push(p, GSIZE_TO_POINTER(t * m->chunk + 1), NULL);
  wait_all(s);
  bench_map_consume(m);
  int64_t ns = bench_now_ns() - t0;
  g_thread_pool_free(p, FALSE, TRUE);
  return ns;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  double v[64];
  sync_state s;
  g_mutex_init(&s.mu);
  g_cond_init(&s.cv);
  for (int r = 0; r < a.runs; r++) {
    GThreadPool *p = g_thread_pool_new(task_fn, &s, a.workers, TRUE, NULL);
    g_atomic_int_set(&s.remaining, (gint)a.n_tasks);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_tasks; i++)
      g_thread_pool_push(p, GINT_TO_POINTER(1), NULL);
    wait_all(&s);
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_tasks;
    g_thread_pool_free(p, FALSE, TRUE);
  }
  bench_report("glib", "throughput", a.n_tasks, a.workers, "ns/task", v,
               a.runs);
  for (int r = 0; r < a.runs; r++) {
    GThreadPool *p = g_thread_pool_new(task_fn, &s, a.workers, TRUE, NULL);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_rounds; i++) {
      g_atomic_int_set(&s.remaining, 1);
      g_thread_pool_push(p, GINT_TO_POINTER(1), NULL);
      wait_all(&s);
    }
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_rounds / 1000.0;
    g_thread_pool_free(p, FALSE, TRUE);
  }
  bench_report("glib", "latency", a.n_rounds, a.workers, "us/roundtrip", v,
               a.runs);
  glib_workers = a.workers;
  bench_map_measure("glib", a, map_once, &s, &the_map);
  return 0;
}
