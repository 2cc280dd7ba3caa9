/*
 * flags2_threadpool - the seeds' flags2_threadpool.py: every download
 * submitted to a thread pool of --max_req workers (default 30, at most
 * 1000), results taken with as_completed to drive the progress bar and
 * count outcomes.
 *
 * Each worker has its own HTTP client, made by the pool's initializer
 * (the seeds' thread-local session). Ctrl-C cancels the downloads not yet
 * started (shutdown with cancel_futures), aborts those in flight, and the
 * final report prints what was done.
 */
#include "flags_common.h"

#include <pthread.h>
#include <stdlib.h>

enum { DEFAULT_CONCUR_REQ = 30, MAX_CONCUR_REQ = 1000 };

/* The pool the Ctrl-C thread shuts down; the lock keeps it from doing so
 * while download_many frees it. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *the_pool;

typedef struct job {
  const char *cc;
  const flags2_args *a;
  bool save;
} job;

/* download_one on a worker: the status as the value, or the error that
 * escaped it (its text as the message). */
static int download_one(void *arg, cf_value *result) {
  job *j = arg;
  char error_msg[600] = "";
  int status = flags2_download_one(flags_worker_client(), j->cc, j->a->base_url,
                                   j->a->verbose, j->save, error_msg,
                                   sizeof error_msg);
  if (status < 0)
    return cf_raise(status, "%s", error_msg);
  result->u.i = status;
  return 0;
}

/* On the sigwait thread, at Ctrl-C: cancel what has not started. */
static void on_interrupt(void *arg) {
  (void)arg;
  pthread_mutex_lock(&pool_lock);
  if (the_pool != NULL)
    cf_executor_shutdown(the_pool, CF_SHUTDOWN_CANCEL_FUTURES, 0);
  pthread_mutex_unlock(&pool_lock);
}

static void download_many(const flags2_args *a, dl_counter *counter) {
  cf_thread_pool_opts o = {.max_workers = (int)a->actual_req,
                           .initializer = flags_worker_init,
                           .finalizer = flags_worker_fini};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool) != 0) {
    fprintf(stderr, "cannot start the thread pool\n");
    return;
  }
  pthread_mutex_lock(&pool_lock);
  the_pool = pool;
  pthread_mutex_unlock(&pool_lock);
  if (atomic_load(&flags_interrupted)) /* Ctrl-C came before the pool */
    on_interrupt(NULL);
  job *jobs = calloc(a->ncc, sizeof *jobs);
  cf_future **to_do = calloc(a->ncc, sizeof *to_do);
  size_t nf = 0;
  for (size_t i = 0; jobs && to_do && i < a->ncc; i++) {
    jobs[i] = (job){a->cc[i], a, i < a->nunique};
    if (cf_executor_submit(pool, download_one, &jobs[i], &to_do[nf]) != 0)
      break; /* shut down by Ctrl-C */
    nf++;
  }
  cf_as_completed *done_iter = NULL;
  progress bar;
  if (!a->verbose)
    progress_start(&bar, (long)a->ncc);
  if (cf_as_completed_new(to_do, nf, CF_FOREVER, &done_iter) == 0) {
    cf_future *f;
    while (cf_as_completed_next(done_iter, &f) == 1) {
      if (atomic_load(&flags_interrupted)) { /* KeyboardInterrupt */
        cf_future_unref(f);
        break;
      }
      const cf_value *v;
      int rc = cf_future_result(f, 0, &v);
      int status = rc == 0 ? (int)v->u.i : DL_ERROR;
      counter->n[status]++;
      if (a->verbose && rc != 0) {
        job *j = NULL;
        for (size_t i = 0; i < nf; i++) /* to_do_map[future] */
          if (to_do[i] == f)
            j = &jobs[i];
        printf("%s error: %s\n", j ? j->cc : "??",
               cf_future_get_error(f).message);
      }
      if (!a->verbose)
        progress_update(&bar, 1);
      cf_future_unref(f);
    }
  }
  if (!a->verbose)
    progress_close(&bar);
  cf_as_completed_free(done_iter);
  pthread_mutex_lock(&pool_lock);
  the_pool = NULL;
  pthread_mutex_unlock(&pool_lock);
  cf_executor_shutdown(pool, CF_SHUTDOWN_WAIT |
                                 (atomic_load(&flags_interrupted)
                                      ? CF_SHUTDOWN_CANCEL_FUTURES
                                      : 0u),
                       CF_FOREVER);
  cf_executor_free(pool);
  for (size_t i = 0; i < nf; i++)
    cf_future_unref(to_do[i]);
  free(to_do);
  free(jobs);
}

int main(int argc, char **argv) {
  flags_interrupt_start(on_interrupt, NULL);
  flags2_args a;
  flags2_process_args(argc, argv, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ, &a);
  flags2_initial_report(&a);
  if (flags_make_dest_dir() != 0)
    return 1;
  cf_raise_fd_limit(NULL);
  int64_t t0 = cf_now_ns();
  dl_counter counter = {{0}};
  download_many(&a, &counter);
  flags2_final_report(&counter, t0);
  flags_interrupt_stop();
  free(a.cc);
  return 0;
}
