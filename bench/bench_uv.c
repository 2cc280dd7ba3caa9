/*
 * bench_uv - libuv's uv_queue_work (the threadpool size comes from
 * UV_THREADPOOL_SIZE, set by this program before first use).
 *   throughput  queue N work requests, run the loop until all are done
 *   latency     queue one, run the loop until it is done, N times
 *   map         queue a request per item (or per 1000), run the loop,
 *               read the results in order
 */
#include <uv.h>

#include "bench.h"

static long done_count;

static void work_cb(uv_work_t *req) { (void)req; }

static bench_map the_map;
static void map_work_cb(uv_work_t *req) {
  bench_map_run(&the_map, (long)(intptr_t)req->data);
}

static void after_cb(uv_work_t *req, int status) {
  (void)req;
  (void)status;
  done_count++;
}

typedef struct map_ctx {
  uv_loop_t *loop;
  uv_work_t *reqs;
} map_ctx;

static int64_t map_once(bench_map *m, void *arg) {
  map_ctx *c = arg;
  long tasks = bench_map_tasks(m);
  done_count = 0;
  int64_t t0 = bench_now_ns();
  for (long t = 0; t < tasks; t++) {
    c->reqs[t].data = (void *)(intptr_t)(t * m->chunk);
    uv_queue_work(c->loop, &c->reqs[t], map_work_cb, after_cb);
  }
  uv_run(c->loop, UV_RUN_DEFAULT);
  bench_map_consume(m);
  int64_t ns = bench_now_ns() - t0;
  if (done_count != tasks)
    exit(1);
  return ns;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  char size[16];
  snprintf(size, sizeof size, "%d", a.workers);
  setenv("UV_THREADPOOL_SIZE", size, 1);
  double v[64];
  uv_loop_t *loop = uv_default_loop();
  uv_work_t *reqs = malloc(sizeof(uv_work_t) * (size_t)a.n_tasks);
  /* Warm the pool up (its threads start on first use). */
  uv_queue_work(loop, &reqs[0], work_cb, after_cb);
  uv_run(loop, UV_RUN_DEFAULT);
  for (int r = 0; r < a.runs; r++) {
    done_count = 0;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_tasks; i++)
      uv_queue_work(loop, &reqs[i], work_cb, after_cb);
    uv_run(loop, UV_RUN_DEFAULT);
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_tasks;
    if (done_count != a.n_tasks)
      return 1;
  }
  bench_report("libuv", "throughput", a.n_tasks, a.workers, "ns/task", v,
               a.runs);
  for (int r = 0; r < a.runs; r++) {
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < a.n_rounds; i++) {
      uv_queue_work(loop, &reqs[0], work_cb, after_cb);
      uv_run(loop, UV_RUN_DEFAULT);
    }
    v[r] = (double)(bench_now_ns() - t0) / (double)a.n_rounds / 1000.0;
  }
  bench_report("libuv", "latency", a.n_rounds, a.workers, "us/roundtrip", v,
               a.runs);
  map_ctx c = {loop, reqs};
  bench_map_measure("libuv", a, map_once, &c, &the_map);
  free(reqs);
  uv_loop_close(loop);
  return 0;
}
