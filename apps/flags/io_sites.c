/*
 * io_sites - the download examples of the seeds' concurrency tutorial
 * (io_non_concurrent.py, io_threads.py, io_asyncio.py, io_processes.py),
 * against the local flag server instead of remote sites: the same 100
 * URLs (two pages, 50 times each), "Read N bytes from URL" for each, then
 * "Execution time: S.SSs".
 *
 *   io_sites [--mode sequential|threads|asyncio|processes]
 *
 * sequential: one session (a blocking HTTP client) for every request;
 * threads: a pool of 5 workers (executor.map), one session per thread,
 * made by the pool's initializer (the seed's threading.local);
 * asyncio: a task per URL on one loop, one session, gather with
 * return_exceptions; processes: a process pool (one worker per CPU), whose
 * initializer opens one session per process (the seed's init_process),
 * the URL sent as bytes and the size coming back.
 * The server is the LOCAL one (FLAGS_LOCAL_PORT moves its port).
 */
#include "flags_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NSITES 100
static char sites[NSITES][256];

static void make_sites(void) {
  const char *base = flags_server_url("LOCAL");
  for (int i = 0; i < NSITES; i++)
    snprintf(sites[i], sizeof sites[i], "%s/%s", base,
             i % 2 == 0 ? "cn/cn.gif" : "br/br.gif");
}

static int report(const char *url, int rc, const cf_http_response *r) {
  if (rc == 0)
    printf("Read %zu bytes from %s\n", r->body_len, url);
  else
    printf("Failed to read %s: %s (%s)\n", url, r->error, cf_err_name(rc));
  fflush(stdout);
  return rc;
}

/* sequential ----------------------------------------------------------- */

static int run_sequential(void) {
  cf_http_client *session;
  if (cf_http_client_new(0, &session) != 0)
    return 1;
  int failed = 0;
  for (int i = 0; i < NSITES; i++) {
    cf_http_response r = {0};
    failed |= report(sites[i], cf_http_get(session, sites[i], NULL, &r), &r) != 0;
    cf_http_response_release(&r);
  }
  cf_http_client_free(session);
  return failed;
}

/* threads -------------------------------------------------------------- */

static _Thread_local cf_http_client *thread_session;

static int init_session(void *arg) {
  (void)arg;
  return cf_http_client_new(CF_HTTP_CLIENT_BLOCKING, &thread_session);
}

static void close_session(void *arg) {
  (void)arg;
  cf_http_client_free(thread_session);
}

static int download_site(void *arg, cf_value *result) {
  (void)result;
  const char *url = arg;
  cf_http_response r = {0};
  int rc = report(url, cf_http_get(thread_session, url, NULL, &r), &r);
  cf_http_response_release(&r);
  return rc;
}

static int run_threads(void) {
  cf_thread_pool_opts o = {.max_workers = 5,
                           .initializer = init_session,
                           .finalizer = close_session};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool) != 0)
    return 1;
  void *items[NSITES];
  for (int i = 0; i < NSITES; i++)
    items[i] = sites[i];
  cf_array_iter it = {items, NSITES, 0};
  cf_map *m;
  int failed = 0;
  if (cf_executor_map(pool, download_site, cf_array_iter_next, &it, NULL, &m) == 0) {
    cf_value v;
    int rc;
    while ((rc = cf_map_next(m, &v)) == 1)
      cf_value_release(&v);
    failed = rc != 0;
    cf_map_free(m);
  } else
    failed = 1;
  cf_executor_free(pool);
  return failed;
}

/* processes ------------------------------------------------------------ */

static cf_http_client *process_session; /* one per worker process */

CF_TASK(init_process) {
  return cf_http_client_new(CF_HTTP_CLIENT_BLOCKING, &process_session);
}

CF_TASK(download_site_in_process) {
  char url[256];
  size_t n = cf_arg_size(arg);
  if (n >= sizeof url)
    return cf_raise(-EMSGSIZE, "URL too long");
  memcpy(url, arg, n);
  url[n] = '\0';
  cf_http_response r = {0};
  int rc = report(url, cf_http_get(process_session, url, NULL, &r), &r);
  result->u.i = (int64_t)r.body_len;
  cf_http_response_release(&r);
  return rc;
}

static int run_processes(void) {
  cf_executor *pool;
  cf_process_pool_opts o = {.initializer = "init_process"};
  if (cf_process_pool_new(&o, &pool) != 0)
    return 1;
  cf_future *fs[NSITES];
  int failed = 0;
  for (int i = 0; i < NSITES; i++)
    if (cf_executor_submit_bytes(pool, "download_site_in_process", sites[i],
                                 strlen(sites[i]), &fs[i]) != 0)
      return 1;
  for (int i = 0; i < NSITES; i++) {
    failed |= cf_future_result(fs[i], CF_FOREVER, NULL) != 0;
    cf_future_unref(fs[i]);
  }
  cf_executor_free(pool);
  return failed;
}

/* asyncio -------------------------------------------------------------- */

typedef struct site_job {
  cf_http_client *session;
  const char *url;
} site_job;

static int download_site_task(void *arg, cf_value *result) {
  (void)result;
  site_job *j = arg;
  cf_http_response r = {0};
  int rc = report(j->url, cf_http_get(j->session, j->url, NULL, &r), &r);
  cf_http_response_release(&r);
  return rc;
}

static int download_all_sites(void *arg, cf_value *result) {
  (void)arg, (void)result;
  cf_http_client *session;
  int rc = cf_http_client_new(0, &session);
  if (rc != 0)
    return rc;
  static site_job jobs[NSITES];
  cf_future *tasks[NSITES];
  size_t n = 0;
  for (int i = 0; i < NSITES; i++) {
    jobs[i] = (site_job){session, sites[i]};
    if (cf_loop_spawn(cf_loop_current(), download_site_task, &jobs[i],
                      &tasks[n]) == 0)
      n++;
  }
  cf_gather(tasks, n, CF_GATHER_RETURN_ERRORS, CF_FOREVER);
  int failed = n != NSITES;
  for (size_t i = 0; i < n; i++) {
    failed |= cf_future_get_error(tasks[i]).code != 0;
    cf_future_unref(tasks[i]);
  }
  cf_http_client_free(session);
  return failed ? CF_ETASK : 0;
}

static int run_asyncio(void) {
  return cf_loop_run_main(download_all_sites, NULL, NULL, NULL) != 0;
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* a worker of --mode processes stays here */
  const char *mode = "sequential";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
      mode = argv[++i];
    else if (strncmp(argv[i], "--mode=", 7) == 0)
      mode = argv[i] + 7;
    else {
      fprintf(stderr, "usage: io_sites [--mode sequential|threads|asyncio|"
                      "processes]\n");
      return 2;
    }
  }
  int (*run)(void) = strcmp(mode, "sequential") == 0  ? run_sequential
                     : strcmp(mode, "threads") == 0   ? run_threads
                     : strcmp(mode, "asyncio") == 0   ? run_asyncio
                     : strcmp(mode, "processes") == 0 ? run_processes
                                                      : NULL;
  if (run == NULL) {
    fprintf(stderr, "io_sites: unknown mode '%s' (sequential, threads, "
                    "asyncio, processes)\n", mode);
    return 2;
  }
  make_sites();
  int64_t t0 = cf_now_ns();
  int failed = run();
  printf("Execution time: %.2fs\n", (double)(cf_now_ns() - t0) / 1e9);
  return failed ? 1 : 0;
}
