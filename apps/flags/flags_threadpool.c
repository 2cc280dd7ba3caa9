/*
 * flags_threadpool - the seeds' flags_threadpool.py: the same downloads
 * with executor.map on a thread pool (Python's default size, min(32,
 * cpus + 4)). Codes print in the order downloads end.
 *
 * Each worker has its own HTTP client (a kept-alive connection), made by
 * the pool's initializer and freed by its finalizer: the seeds'
 * thread-local session.
 */
#include "flags_common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* download_one(cc): returns cc, as the seed's. */
static int download_one(void *arg, cf_value *result) {
  const char *cc = arg;
  int rc = flags_fetch_and_save(flags_worker_client(), cc);
  if (rc != 0)
    return rc;
  printf("%s ", cc);
  fflush(stdout);
  return cf_value_set_string(result, cc);
}

static long download_many(const char *const *cc_list, size_t n) {
  const char **cc = malloc(n * sizeof *cc);
  if (cc == NULL)
    return -1;
  memcpy(cc, cc_list, n * sizeof *cc);
  sort_codes(cc, n);
  cf_thread_pool_opts o = {.initializer = flags_worker_init,
                           .finalizer = flags_worker_fini};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool) != 0) {
    free(cc);
    return -1;
  }
  void **items = malloc(n * sizeof *items); /* map items are void * */
  for (size_t i = 0; items != NULL && i < n; i++)
    items[i] = (void *)(uintptr_t)cc[i];
  cf_array_iter it = {items, n, 0};
  cf_map *res;
  long count = 0;
  int rc = items == NULL ? CF_ENOMEM
                         : cf_executor_map(pool, download_one,
                                           cf_array_iter_next, &it, NULL, &res);
  if (rc == 0) {
    cf_value v;
    while ((rc = cf_map_next(res, &v)) == 1) {
      cf_value_release(&v);
      count++;
    }
    if (rc < 0) {
      /* The item at this position failed: the seed's exception. */
      fflush(stdout);
      fprintf(stderr, "\n%s (%s)\n", cf_map_get_error(res).message,
              cf_err_name(rc));
      count = -1;
    }
    cf_map_free(res);
  } else {
    fprintf(stderr, "flags_threadpool: %s\n", cf_strerror(rc));
    count = -1;
  }
  cf_executor_free(pool); /* the with block's shutdown(wait=True) */
  free(items);
  free(cc);
  return count;
}

int main(void) {
  flags_interrupt_start(NULL, NULL); /* before the pool: workers block it */
  int status = flags_main(download_many);
  flags_interrupt_stop();
  return status;
}
