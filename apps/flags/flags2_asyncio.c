/*
 * flags2_asyncio - the seeds' flags2_asyncio.py: one coroutine task per
 * flag on one thread, at most --max_req requests at once (a semaphore;
 * default 5, at most 1000), results taken with as_completed for the
 * progress bar and the counts; each image is saved on a thread pool
 * (asyncio.to_thread(save_flag, ...)).
 *
 * The HTTP client is a loop client: curl's multi-socket interface driven
 * by the cfutures loop (no thread per request). Ctrl-C (a signal watch of
 * the loop) cancels the supervisor, which cancels the downloads still
 * going, waits for them, and the final report prints what was done.
 */
#include "flags_common.h"

#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

enum { DEFAULT_CONCUR_REQ = 5, MAX_CONCUR_REQ = 1000 };

typedef struct shared {
  const flags2_args *a;
  cf_http_client *client;
  cf_semaphore *semaphore;
  cf_executor *save_pool; /* asyncio.to_thread's default executor */
} shared;

typedef struct job {
  shared *sh;
  const char *cc;
  bool save;
  const void *img;
  size_t len;
} job;

static int save_task(void *arg, cf_value *result) {
  (void)result;
  job *j = arg;
  char name[8];
  snprintf(name, sizeof name, "%s.gif", j->cc);
  int rc = save_flag(j->img, j->len, name);
  return rc == 0 ? 0 : cf_raise(rc, "cannot save %s: %s", name, cf_strerror(rc));
}

static int download_one(void *arg, cf_value *result) {
  job *j = arg;
  shared *sh = j->sh;
  cf_http_response r = {0};
  int rc = cf_semaphore_acquire(sh->semaphore, CF_FOREVER);
  if (rc != 0)
    return rc; /* cancelled while queued */
  rc = flags2_get_flag(sh->client, sh->a->base_url, j->cc, &r);
  cf_semaphore_release(sh->semaphore);
  int status;
  char msg[600];
  if (rc == CF_EHTTPSTATUS && r.status == 404) {
    status = DL_NOT_FOUND;
    snprintf(msg, sizeof msg, "not found: %s", r.url ? r.url : "?");
  } else if (rc != 0) {
    char error_msg[600];
    flags2_error_msg(rc, &r, error_msg, sizeof error_msg);
    cf_http_response_release(&r);
    return cf_raise(rc, "%s", error_msg);
  } else if (!j->save) { /* a repeat (FLAGS_REPEAT): saved by the first */
    status = DL_OK;
    snprintf(msg, sizeof msg, "OK");
  } else {
    /* await asyncio.to_thread(save_flag, image, f'{cc}.gif') */
    j->img = r.body;
    j->len = r.body_len;
    cf_future *saved;
    rc = cf_executor_submit(sh->save_pool, save_task, j, &saved);
    if (rc == 0) {
      rc = cf_future_wait(saved, CF_FOREVER);
      if (rc != 0) /* cancelled: the save still ends before the body goes */
        while (cf_future_wait(saved, CF_FOREVER) != 0)
          ;
      int src = cf_future_get_error(saved).code;
      if (rc == 0 && src != 0)
        rc = cf_raise(src, "%s", cf_future_get_error(saved).message);
      cf_future_unref(saved);
    }
    cf_http_response_release(&r);
    if (rc != 0)
      return rc;
    status = DL_OK;
    snprintf(msg, sizeof msg, "OK");
  }
  cf_http_response_release(&r);
  if (sh->a->verbose) {
    printf("%s %s\n", j->cc, msg);
    fflush(stdout);
  }
  result->u.i = status;
  return 0;
}

typedef struct sup_args {
  const flags2_args *a;
  dl_counter *counter;
  cf_executor *save_pool;
} sup_args;

static void on_signal(void *arg, int signum) {
  (void)signum;
  if (atomic_exchange(&flags_interrupted, 1) != 0)
    _exit(130); /* a second Ctrl-C: the user means it */
  cf_future_cancel(arg); /* the supervisor: its wait returns CF_ECANCELED */
}

static int supervisor(void *arg, cf_value *result) {
  (void)result;
  sup_args *sa = arg;
  const flags2_args *a = sa->a;
  /* Static, not on this task's stack: the download tasks read it while
   * this one waits, and the loop runs tasks on a shared stack. */
  static shared sh;
  sh = (shared){.a = a, .save_pool = sa->save_pool};
  cf_signal_watch *intr = NULL, *term = NULL;
  cf_signal_watch_start(cf_loop_current(), SIGINT, on_signal,
                        cf_task_current(), &intr);
  cf_signal_watch_start(cf_loop_current(), SIGTERM, on_signal,
                        cf_task_current(), &term);
  int rc = cf_http_client_new(0, &sh.client);
  if (rc == 0)
    rc = cf_semaphore_new(a->actual_req, &sh.semaphore);
  if (rc != 0)
    return cf_raise(rc, "cannot start: %s", cf_strerror(rc));
  job *jobs = calloc(a->ncc, sizeof *jobs);
  cf_future **to_do = calloc(a->ncc, sizeof *to_do);
  size_t nt = 0;
  for (size_t i = 0; jobs && to_do && i < a->ncc; i++) {
    jobs[i] = (job){.sh = &sh, .cc = a->cc[i], .save = i < a->nunique};
    if (cf_loop_spawn(cf_loop_current(), download_one, &jobs[i],
                      &to_do[nt]) != 0)
      break;
    nt++;
  }
  progress bar;
  if (!a->verbose)
    progress_start(&bar, (long)a->ncc);
  cf_as_completed *it = NULL;
  if (cf_as_completed_new(to_do, nt, CF_FOREVER, &it) == 0) {
    cf_future *f;
    while ((rc = cf_as_completed_next(it, &f)) == 1) {
      const cf_value *v;
      int frc = cf_future_result(f, 0, &v);
      int status = frc == 0 ? (int)v->u.i : DL_ERROR;
      if (frc == CF_ECANCELED && atomic_load(&flags_interrupted)) {
        cf_future_unref(f); /* cancelled by Ctrl-C: not an error */
        continue;
      }
      sa->counter->n[status]++;
      if (frc != 0 && a->verbose) {
        const char *cc = "??";
        for (size_t i = 0; i < nt; i++)
          if (to_do[i] == f)
            cc = jobs[i].cc;
        printf("%s error: %s\n", cc, cf_future_get_error(f).message);
      }
      if (!a->verbose)
        progress_update(&bar, 1);
      cf_future_unref(f);
    }
    /* rc == CF_ECANCELED: Ctrl-C (KeyboardInterrupt: break) */
  }
  if (!a->verbose)
    progress_close(&bar);
  cf_as_completed_free(it);
  /* Leave nothing running: cancel what is left and let it end. */
  for (size_t i = 0; i < nt; i++)
    cf_future_cancel(to_do[i]);
  while (cf_gather(to_do, nt, CF_GATHER_RETURN_ERRORS, CF_FOREVER) ==
         CF_ECANCELED)
    ; /* a second Ctrl-C while cleaning up: keep waiting */
  for (size_t i = 0; i < nt; i++)
    cf_future_unref(to_do[i]);
  free(to_do);
  free(jobs);
  cf_semaphore_free(sh.semaphore);
  cf_http_client_free(sh.client);
  cf_signal_watch_free(intr);
  cf_signal_watch_free(term);
  return 0;
}

int main(int argc, char **argv) {
  flags2_args a;
  flags2_process_args(argc, argv, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ, &a);
  flags2_initial_report(&a);
  if (flags_make_dest_dir() != 0)
    return 1;
  cf_raise_fd_limit(NULL);
  cf_executor *save_pool;
  if (cf_thread_pool_new(NULL, &save_pool) != 0) {
    fprintf(stderr, "cannot start the thread pool\n");
    return 1;
  }
  int64_t t0 = cf_now_ns();
  dl_counter counter = {{0}};
  sup_args sa = {&a, &counter, save_pool};
  cf_future *f = NULL;
  /* Tasks on one shared stack: a waiting download holds about a
   * kilobyte of saved stack instead of pages of its own (-m 10000). */
  cf_loop_opts lo = {.shared_stack = getenv("FLAGS_OWN_STACKS") == NULL};
  int rc = cf_loop_run_main(supervisor, &sa, &lo, &f);
  if (rc != 0 && rc != CF_ECANCELED)
    fprintf(stderr, "flags2_asyncio: %s\n",
            f ? cf_future_get_error(f).message : cf_strerror(rc));
  cf_future_unref(f);
  flags2_final_report(&counter, t0);
  cf_executor_free(save_pool);
  free(a.cc);
  return 0;
}
