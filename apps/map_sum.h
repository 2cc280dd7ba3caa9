/*
 * map_sum.h - sum(executor.map(fn, items)) for the CPU-bound programs
 * (cpu_bound, cpu_processes) whose tasks return integers.
 */
#ifndef CF_APPS_MAP_SUM_H
#define CF_APPS_MAP_SUM_H

#include <cf/cfutures.h>

/* Sums the integer results of a map of fn over the items `next` gives
 * from `state` (chunksize as cf_map_opts). A failure of the map or of a
 * task stores its negative code in *err and returns the partial sum. */
static inline int64_t app_map_sum(cf_executor *ex, cf_task_fn fn,
                                  cf_iter_fn next, void *state,
                                  int64_t chunksize, int *err) {
  cf_map_opts o = {.chunksize = chunksize};
  cf_map *m;
  int rc = cf_executor_map(ex, fn, next, state, &o, &m);
  int64_t sum = 0;
  if (rc == 0) {
    cf_value v;
    while ((rc = cf_map_next(m, &v)) == 1)
      sum += v.u.i;
    cf_map_free(m);
  }
  if (rc < 0)
    *err = rc;
  return sum;
}

#endif
