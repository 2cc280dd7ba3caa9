/*
 * gcd - Effective Python's item 41 ("Consider concurrent.futures for true
 * parallelism"): the greatest common divisors of four pairs by a slow
 * count-down, with map, on a thread pool of two and on a process pool of
 * two, each timed as the book does ("Took 1.053 seconds").
 *
 * The book's point is that Python's threads take as long as the plain
 * loop (the GIL) and only processes halve the time. Here the thread pool
 * halves it as well; the process pool does too, paying for its workers'
 * start (they are started by exec at the first submit, inside the timing,
 * as the book's pool starts its processes inside it).
 *
 *   gcd [--quick]   (--quick: smaller pairs, for the test suite)
 *
 * Prints the four results of each run; exits 1 if a run disagrees with
 * the sequential one.
 */
#include <cf/cfutures.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "seed_work.h"

typedef struct pair {
  int64_t a, b;
} pair;

/* gcd(pair): the pair travels as its bytes. */
CF_TASK(gcd) {
  pair p;
  int rc = cf_arg_get(arg, &p, sizeof p);
  if (rc != 0)
    return rc;
  cf_value_set_i64(result, seed_gcd(p.a, p.b));
  return 0;
}

static const pair numbers[] = {{1963309, 2265973},
                               {2030677, 3814172},
                               {1551645, 2229620},
                               {2039045, 2020802}};
static const pair quick_numbers[] = {
    {196330, 226597}, {203067, 381417}, {155164, 222962}, {203904, 202080}};
enum { N = 4 };

static double seconds(void) { return (double)cf_now_ns() / 1e9; }

/* list(pool.map(gcd, numbers)) on ex; NULL ex: the built-in map. */
static int run(const char *what, cf_executor *ex, const pair *in,
               int64_t out[N]) {
  double t0 = seconds();
  int rc = 0;
  if (ex == NULL) {
    for (int i = 0; i < N; i++)
      out[i] = seed_gcd(in[i].a, in[i].b);
  } else {
    pair copy[N]; /* the items point to their bytes */
    void *items[N];
    for (int i = 0; i < N; i++) {
      copy[i] = in[i];
      items[i] = &copy[i];
    }
    cf_array_iter it = {items, N, 0};
    cf_map_opts o = {.item_size = sizeof(pair)};
    cf_map *m;
    rc = cf_executor_map(ex, gcd, cf_array_iter_next, &it, &o, &m);
    if (rc == 0) {
      cf_value v;
      for (int i = 0; (rc = cf_map_next(m, &v)) == 1; i++)
        out[i] = v.u.i;
      cf_map_free(m);
    }
  }
  double took = seconds() - t0;
  if (rc < 0) {
    printf("%s: failed: %s\n", what, cf_strerror(rc));
    return rc;
  }
  printf("%-26s [%lld, %lld, %lld, %lld]  Took %.3f seconds\n", what,
         (long long)out[0], (long long)out[1], (long long)out[2],
         (long long)out[3], took);
  return 0;
}

int main(int argc, char **argv) {
  cf_process_init(argc, argv); /* in a worker: serves tasks, never returns */
  bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  if (argc > 2 || (argc == 2 && !quick)) {
    fprintf(stderr, "usage: gcd [--quick]\n");
    return 2;
  }
  const pair *in = quick ? quick_numbers : numbers;
  int64_t want[N], got[N];
  int bad = run("map (sequential)", NULL, in, want) != 0;
  cf_executor *ex;
  if (cf_thread_pool_new(&(cf_thread_pool_opts){.max_workers = 2}, &ex) == 0) {
    bad |= run("ThreadPoolExecutor(2)", ex, in, got) != 0 ||
           memcmp(got, want, sizeof got) != 0;
    cf_executor_free(ex);
  } else {
    bad = 1;
  }
  if (cf_process_pool_new(&(cf_process_pool_opts){.max_workers = 2}, &ex) ==
      0) {
    bad |= run("ProcessPoolExecutor(2)", ex, in, got) != 0 ||
           memcmp(got, want, sizeof got) != 0;
    cf_executor_free(ex);
  } else {
    bad = 1;
  }
  return bad;
}
