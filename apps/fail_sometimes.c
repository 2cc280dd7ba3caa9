/*
 * fail_sometimes - the concurrent.futures notebook's resilience demo:
 * tasks that exit(1) for every multiple of 5, on a process pool, in both
 * of its modes, and never a frozen caller:
 *
 *   - the default: a dead worker fails only the task it was running
 *     (CF_EWORKER, "exited with status 1"), a new worker takes its place,
 *     and every other task returns its number;
 *   - broken_on_crash, Python's BrokenProcessPool: the first death breaks
 *     the pool, and every task not yet done fails with CF_EBROKEN, as do
 *     later submits.
 *
 * (The notebook's multiprocessing.Pool.map would freeze here; Python's
 * ProcessPoolExecutor raises BrokenProcessPool. The notebook's cell calls
 * the built-in map by mistake, so what it shows is the SystemExit of its
 * own process; this program runs the tasks on the pool, as the cell
 * meant.)
 *
 *   fail_sometimes [COUNT]   (default 10: range(10), as the notebook)
 *
 * Exits 1 if an outcome is not the one its mode promises.
 */
#include <cf/cfutures.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include "args.h"

CF_TASK(fail_sometimes) {
  int64_t n;
  int rc = cf_arg_get_i64(arg, &n);
  if (rc != 0)
    return rc;
  if (n % 5 == 0)
    exit(1); /* sys.exit(1) in a worker */
  cf_value_set_i64(result, n);
  return 0;
}

/* Runs fail_sometimes over range(count) with one worker (so that the
 * tasks queue behind the crashes), prints every outcome, and checks it. */
static int run(bool broken_mode, int count) {
  printf("%s\n", broken_mode
                     ? "broken_on_crash (Python's BrokenProcessPool):"
                     : "default (a dead worker fails only its own task):");
  cf_executor *ex;
  int rc = cf_process_pool_new(
      &(cf_process_pool_opts){.max_workers = 1, .broken_on_crash = broken_mode},
      &ex);
  if (rc != 0) {
    fprintf(stderr, "fail_sometimes: cannot start the pool: %s\n",
            cf_strerror(rc));
    return 1;
  }
  cf_future **fs = calloc((size_t)count, sizeof *fs);
  int bad = fs == NULL;
  int ok = 0, died = 0, broken = 0;
  for (int i = 0; !bad && i < count; i++) {
    rc = cf_executor_submit_i64(ex, "fail_sometimes", i, &fs[i]);
    /* In the broken mode the pool may break while we still submit. */
    if (rc == CF_EBROKEN && broken_mode)
      continue;
    if (rc != 0)
      bad = 1;
  }
  for (int i = 0; !bad && i < count; i++) {
    const cf_value *v;
    if (fs[i] == NULL) {
      printf("  fail_sometimes(%d): %s: refused at submit\n", i,
             cf_err_name(CF_EBROKEN));
      broken++;
      continue;
    }
    rc = cf_future_result(fs[i], CF_SEC(60), &v);
    if (rc == 0) {
      printf("  fail_sometimes(%d) = %lld\n", i, (long long)v->u.i);
      ok++;
      bad |= v->u.i != i || (broken_mode && broken > 0) || i % 5 == 0;
    } else {
      printf("  fail_sometimes(%d): %s: %s\n", i, cf_err_name(rc),
             cf_future_get_error(fs[i]).message);
      died += rc == CF_EWORKER;
      broken += rc == CF_EBROKEN;
      /* Default: exactly the multiples of 5 fail, each with its death. */
      bad |= !broken_mode && (rc != CF_EWORKER || i % 5 != 0);
      bad |= rc == CF_ETIMEDOUT; /* a freeze */
    }
  }
  for (int i = 0; fs != NULL && i < count; i++)
    cf_future_unref(fs[i]); /* NULL for a refused submit: ignored */
  free(fs);
  /* Broken: the first task (0) killed its worker; none ran after it. */
  if (broken_mode) {
    bad |= ok != 0 || died + broken != count || broken == 0;
    cf_future *f;
    rc = cf_executor_submit_i64(ex, "fail_sometimes", 1, &f);
    printf("  a later submit: %s\n",
           rc == 0 ? "accepted (wrong)" : cf_err_name(rc));
    bad |= rc != CF_EBROKEN;
    if (rc == 0)
      cf_future_unref(f);
  } else {
    bad |= ok != count - (count + 4) / 5;
  }
  printf("  %d returned, %d failed; the caller never froze\n\n", ok,
         count - ok);
  cf_executor_free(ex);
  return bad;
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* in a worker: serves tasks, never returns */
  long count = 10;
  if ((argc > 1 && !arg_long(argv[1], 1, 1000000, &count)) || argc > 2) {
    fprintf(stderr, "usage: fail_sometimes [COUNT >= 1]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int bad = run(false, count);
  bad |= run(true, count);
  return bad;
}
