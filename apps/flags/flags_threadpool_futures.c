/*
 * flags_threadpool_futures - the seeds' flags_threadpool_futures.py: the
 * first five of the 20 codes, submitted one by one to a pool of three
 * workers, each future printed when scheduled and again when done:
 *
 *   Scheduled for BR: <Future at 0x... state=running>
 *   ...
 *   Scheduled for US: <Future at 0x... state=pending>
 *   CN <Future at 0x... state=finished returned str> result: 'CN'
 *   ...
 *   5 downloads in 0.53s
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
  if (n > 5)
    n = 5; /* just for this demonstration */
  const char *cc[5];
  memcpy(cc, cc_list, n * sizeof *cc);
  sort_codes(cc, n);
  /* max_workers=3 to see pending futures in the output */
  cf_thread_pool_opts o = {.max_workers = 3,
                           .initializer = flags_worker_init,
                           .finalizer = flags_worker_fini};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool) != 0)
    return -1;
  cf_future *to_do[5];
  size_t nf = 0;
  char desc[128];
  for (size_t i = 0; i < n; i++) {
    if (cf_executor_submit(pool, download_one, (void *)(uintptr_t)cc[i],
                           &to_do[nf]) != 0)
      break;
    cf_future_describe(to_do[nf], desc, sizeof desc);
    printf("Scheduled for %s: %s\n", cc[i], desc);
    nf++;
  }
  fflush(stdout);
  long count = 0;
  cf_as_completed *it;
  if (cf_as_completed_new(to_do, nf, CF_FOREVER, &it) == 0) {
    cf_future *f;
    while (cf_as_completed_next(it, &f) == 1) {
      count++;
      const cf_value *v;
      int rc = cf_future_result(f, CF_FOREVER, &v);
      cf_future_describe(f, desc, sizeof desc);
      if (rc != 0) { /* future.result() raises */
        fflush(stdout);
        fprintf(stderr, "\n%s (%s)\n", cf_future_get_error(f).message,
                cf_err_name(rc));
        cf_future_unref(f);
        count = -1;
        break;
      }
      printf("%s result: '%s'\n", desc, (const char *)v->u.ptr);
      fflush(stdout);
      cf_future_unref(f);
    }
    cf_as_completed_free(it);
  }
  cf_executor_free(pool);
  for (size_t i = 0; i < nf; i++)
    cf_future_unref(to_do[i]);
  return count;
}

int main(void) {
  flags_interrupt_start(NULL, NULL);
  int status = flags_main(download_many);
  flags_interrupt_stop();
  return status;
}
