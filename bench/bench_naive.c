/*
 * bench_naive - the pool a C programmer writes in an afternoon: one mutex,
 * one condition variable for workers, a linked FIFO, and a per-task
 * "future" (done flag) signalled on a shared condition variable.
 */
#include <pthread.h>
#include <stdbool.h>

#include "bench.h"

typedef struct task {
  struct task *next;
  void (*fn)(void *);
  void *arg;
  bool done;
} task;

typedef struct naive {
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  task *head, *tail;
  bool stop;
  int nthreads;
  pthread_t threads[64];
} naive;

static void *worker(void *p) {
  naive *n = p;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    while (n->head == NULL && !n->stop)
      pthread_cond_wait(&n->work, &n->mu);
    if (n->head == NULL)
      break;
    task *t = n->head;
    n->head = t->next;
    if (n->head == NULL)
      n->tail = NULL;
    pthread_mutex_unlock(&n->mu);
    t->fn(t->arg);
    pthread_mutex_lock(&n->mu);
    t->done = true;
    pthread_cond_broadcast(&n->done);
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

static void naive_init(naive *n, int workers) {
  memset(n, 0, sizeof *n);
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->work, NULL);
  pthread_cond_init(&n->done, NULL);
  n->nthreads = workers;
  for (int i = 0; i < workers; i++)
    pthread_create(&n->threads[i], NULL, worker, n);
}

static task *naive_submit(naive *n, void (*fn)(void *), void *arg) {
  task *t = calloc(1, sizeof *t);
  t->fn = fn;
  t->arg = arg;
  pthread_mutex_lock(&n->mu);
  if (n->tail)
    n->tail->next = t;
  else
    n->head = t;
  n->tail = t;
  pthread_cond_signal(&n->work);
  pthread_mutex_unlock(&n->mu);
  return t;
}

static void naive_wait(naive *n, task *t) {
  pthread_mutex_lock(&n->mu);
  while (!t->done)
    pthread_cond_wait(&n->done, &n->mu);
  pthread_mutex_unlock(&n->mu);
  free(t);
}

static void naive_free(naive *n) {
  pthread_mutex_lock(&n->mu);
  n->stop = true;
  pthread_cond_broadcast(&n->work);
  pthread_mutex_unlock(&n->mu);
  for (int i = 0; i < n->nthreads; i++)
    pthread_join(n->threads[i], NULL);
}

static void nop(void *arg) { (void)arg; }

static bench_map the_map;
static void map_task(void *arg) { bench_map_run(&the_map, (long)(intptr_t)arg); }

typedef struct map_ctx {
  naive *pool;
  task **ts;
  int workers;
} map_ctx;

/* Submits every task, then waits for each in input order. */
static int64_t map_once(bench_map *m, void *arg) {
  map_ctx *c = arg;
  long tasks = bench_map_tasks(m);
  naive_init(c->pool, c->workers);
  int64_t t0 = bench_now_ns();
  for (long t = 0; t < tasks; t++)
    c->ts[t] = naive_submit(c->pool, map_task, (void *)(intptr_t)(t * m->chunk));
  for (long t = 0; t < tasks; t++)
    naive_wait(c->pool, c->ts[t]);
  bench_map_consume(m);
  int64_t ns = bench_now_ns() - t0;
  naive_free(c->pool);
  return ns;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  double v[64];
  task **ts = malloc(sizeof(task *) * (size_t)a.n_tasks);
  static naive n;
  for (int r = 0; r < a.runs; r++) {
    naive_init(&n, a.workers);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_tasks; i++)
      ts[i] = naive_submit(&n, nop, NULL);
    for (long i = 0; i < a.n_tasks; i++)
      naive_wait(&n, ts[i]);
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_tasks;
    naive_free(&n);
  }
  bench_report("naive", "throughput", a.n_tasks, a.workers, "ns/task", v,
               a.runs);
  for (int r = 0; r < a.runs; r++) {
    naive_init(&n, a.workers);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_rounds; i++)
      naive_wait(&n, naive_submit(&n, nop, NULL));
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_rounds / 1000.0;
    naive_free(&n);
  }
  bench_report("naive", "latency", a.n_rounds, a.workers, "us/roundtrip", v,
               a.runs);
  map_ctx c = {&n, ts, a.workers};
  bench_map_measure("naive", a, map_once, &c, &the_map);
  free(ts);
  return 0;
}
