/*
 * flags_asyncio - the seeds' flags_asyncio.py: the same downloads as
 * coroutine tasks on one thread, all at once, gathered:
 *
 *   async with AsyncClient() as client:
 *       to_do = [download_one(client, cc) for cc in sorted(cc_list)]
 *       res = await asyncio.gather(*to_do)
 *
 * One loop HTTP client: curl's multi-socket interface on the cfutures
 * loop, no thread per request.
 */
#include "flags_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct job {
  cf_http_client *client;
  const char *cc;
} job;

static int download_one(void *arg, cf_value *result) {
  job *j = arg;
  int rc = flags_fetch_and_save(j->client, j->cc);
  if (rc != 0)
    return rc;
  printf("%s ", j->cc);
  fflush(stdout);
  return cf_value_set_string(result, j->cc);
}

typedef struct sup_args {
  const char **cc;
  size_t n;
} sup_args;

static int supervisor(void *arg, cf_value *result) {
  sup_args *a = arg;
  cf_http_client *client;
  int rc = cf_http_client_new(0, &client);
  if (rc != 0)
    return cf_raise(rc, "cannot make an HTTP client");
  job *jobs = calloc(a->n, sizeof *jobs);
  cf_future **to_do = calloc(a->n, sizeof *to_do);
  size_t nt = 0;
  for (size_t i = 0; jobs && to_do && i < a->n; i++) {
    jobs[i] = (job){client, a->cc[i]};
    if (cf_loop_spawn(cf_loop_current(), download_one, &jobs[i],
                      &to_do[nt]) != 0)
      break;
    nt++;
  }
  rc = nt == a->n ? cf_gather(to_do, nt, 0, CF_FOREVER) : CF_ENOMEM;
  if (rc != 0) {
    /* gather raised the first failure; the rest are cancelled and
     * waited for, as asyncio.run does on the way out. */
    for (size_t i = 0; i < nt; i++)
      if (cf_future_get_state(to_do[i]) == CF_FINISHED &&
          cf_future_get_error(to_do[i]).code != 0) {
        rc = cf_raise(rc, "%s", cf_future_get_error(to_do[i]).message);
        break;
      }
    for (size_t i = 0; i < nt; i++)
      cf_future_cancel(to_do[i]);
    cf_gather(to_do, nt, CF_GATHER_RETURN_ERRORS, CF_FOREVER);
  }
  for (size_t i = 0; i < nt; i++)
    cf_future_unref(to_do[i]);
  free(to_do);
  free(jobs);
  cf_http_client_free(client);
  result->u.i = (int64_t)nt;
  return rc;
}

static long download_many(const char *const *cc_list, size_t n) {
  const char **cc = malloc(n * sizeof *cc);
  if (cc == NULL)
    return -1;
  memcpy(cc, cc_list, n * sizeof *cc);
  sort_codes(cc, n);
  sup_args a = {cc, n};
  cf_future *f = NULL;
  int rc = cf_loop_run_main(supervisor, &a, NULL, &f);
  long count = (long)n;
  if (rc != 0) {
    fflush(stdout);
    fprintf(stderr, "\n%s (%s)\n", f ? cf_future_get_error(f).message : "",
            cf_err_name(rc));
    count = -1;
  }
  cf_future_unref(f);
  free(cc);
  return count;
}

int main(void) { return flags_main(download_many); }
