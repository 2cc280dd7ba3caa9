/*
 * executor.c - the public executor functions (validation and dispatch to
 * a backend's vtable), freed-handle detection, and the lazy ordered map.
 *
 * Freed handles: cf_executor_free() does not return a backend's object to
 * malloc at once. It marks it DEAD and keeps it in a quarantine ring of
 * QUARANTINE objects, so a call through a stale pointer to a recently
 * freed executor reads valid memory and gets CF_EBADF. Older objects are
 * freed when pushed out of the ring. The ring's mutex is a leaf lock.
 *
 * map: the consumer thread submits tasks (one per item, or one per chunk
 * of items) and keeps at most `window` of them in flight in a ring; each
 * cf_map_next() yields the head's next result, drops the head once it is
 * fully yielded, and tops the window up again. Nothing here is shared
 * with workers except chunks, which are reference counted (one reference
 * for the map, one for the task's arg).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "executor_int.h"
#include "fault.h"
#include "future_int.h"

/* ---------------------------------------------------------------------- */
/* Handles                                                                 */

#define QUARANTINE 32

static pthread_mutex_t quarantine_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *quarantine[QUARANTINE];
static unsigned quarantine_pos;

void cf__executor_init(cf_executor *ex, const cf__executor_vtable *vt) {
  ex->vt = vt;
  atomic_store_explicit(&ex->magic, CF__EXECUTOR_LIVE, memory_order_release);
}

static int check(cf_executor *ex) {
  if (ex == NULL)
    return CF_EINVAL;
  uint32_t m = atomic_load_explicit(&ex->magic, memory_order_acquire);
  return m == CF__EXECUTOR_LIVE ? 0 : CF_EBADF;
}

int cf_executor_submit_task(cf_executor *ex, const cf_task *task,
                            int64_t timeout_ns, cf_future **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (task == NULL || task->fn == NULL || timeout_ns < 0)
    return CF_EINVAL;
  return ex->vt->submit(ex, task, cf_deadline_after(timeout_ns), out);
}

int cf_executor_submit(cf_executor *ex, cf_task_fn fn, void *arg,
                       cf_future **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (fn == NULL)
    return CF_EINVAL;
  cf_task t = {fn, arg, NULL, 0};
  return ex->vt->submit(ex, &t, CF_FOREVER, out);
}

int cf_executor_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  int rc = check(ex);
  return rc != 0 ? rc : ex->vt->shutdown(ex, wait, cancel_futures);
}

int cf_executor_free(cf_executor *ex) {
  int rc = check(ex);
  if (rc != 0)
    return rc;
  /* Claim the handle first so two racing frees cannot both proceed. */
  uint32_t live = CF__EXECUTOR_LIVE;
  if (!atomic_compare_exchange_strong(&ex->magic, &live, CF__EXECUTOR_DEAD))
    return CF_EBADF;
  rc = ex->vt->destroy(ex);
  if (rc != 0) {
    atomic_store(&ex->magic, CF__EXECUTOR_LIVE);
    return rc;
  }
  pthread_mutex_lock(&quarantine_mu);
  cf_executor *old = quarantine[quarantine_pos];
  quarantine[quarantine_pos] = ex;
  quarantine_pos = (quarantine_pos + 1) % QUARANTINE;
  pthread_mutex_unlock(&quarantine_mu);
  free(old);
  return 0;
}

int cf_executor_stats_get(cf_executor *ex, cf_executor_stats *st) {
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (st == NULL)
    return CF_EINVAL;
  memset(st, 0, sizeof *st);
  ex->vt->stats(ex, st);
  return 0;
}

int cf_executor_max_workers(cf_executor *ex) {
  int rc = check(ex);
  return rc != 0 ? rc : ex->vt->max_workers(ex);
}

/* ---------------------------------------------------------------------- */
/* Input iterators                                                         */

int cf_array_iter_next(void *state, void **item) {
  cf_array_iter *it = state;
  if (it == NULL || item == NULL)
    return CF_EINVAL;
  if (it->next >= it->count)
    return 0;
  if (it->items == NULL)
    return CF_EINVAL;
  *item = it->items[it->next++];
  return 1;
}

cf_range_iter cf_range_iter_init(int64_t start, int64_t stop, int64_t step) {
  cf_range_iter r = {start, stop, step, start};
  return r;
}

/* The distance from next to stop and the step's magnitude, if any item
 * is left. Unsigned: both fit in a uint64_t for any int64_t values. */
static bool range_span(const cf_range_iter *r, uint64_t *dist, uint64_t *mag) {
  if (r->step > 0 && r->next < r->stop) {
    *dist = (uint64_t)r->stop - (uint64_t)r->next;
    *mag = (uint64_t)r->step;
  } else if (r->step < 0 && r->next > r->stop) {
    *dist = (uint64_t)r->next - (uint64_t)r->stop;
    *mag = (uint64_t)0 - (uint64_t)r->step;
  } else {
    return false;
  }
  return true;
}

/* The items left in a range. */
static uint64_t range_left(const cf_range_iter *r) {
  uint64_t dist, mag;
  return range_span(r, &dist, &mag) ? (dist - 1) / mag + 1 : 0;
}

/* Takes n items (0 < n <= left, left = range_left(r)) into items, as n
 * calls of cf_range_iter_next would, in one pass. Wrapping unsigned
 * arithmetic gives each item exactly; after the last item next is stop. */
static void range_take(cf_range_iter *r, void **items, uint64_t n,
                       uint64_t left) {
  uint64_t pos = (uint64_t)r->next, step = (uint64_t)r->step;
  for (uint64_t i = 0; i < n; i++)
    items[i] = (void *)(intptr_t)(int64_t)(pos + i * step);
  r->next = n == left ? r->stop : (int64_t)(pos + n * step);
}

int cf_range_iter_next(void *state, void **item) {
  cf_range_iter *r = state;
  if (r == NULL || item == NULL)
    return CF_EINVAL;
  uint64_t dist, mag;
  if (!range_span(r, &dist, &mag))
    return 0;
  *item = (void *)(intptr_t)r->next;
  /* The last item leaves next at stop: stepping past it could overflow. */
  r->next = dist <= mag ? r->stop : r->next + r->step;
  return 1;
}

/* ---------------------------------------------------------------------- */
/* map                                                                     */

/* A chunk: several items run by one task. The task writes nok, results,
 * err and errmsg; the map reads them after the chunk's future is done
 * (the future's release/acquire orders it). Two references: the task's
 * (dropped when the task is done or discarded) and the map's. If the map
 * drops the last one, it keeps the chunk and its buffers for the next
 * chunk of the same map: fresh memory costs a page fault per 4 KiB, which
 * on a VM can cost more than the items' work (bench/NOTES.md). */
typedef struct chunk {
  _Atomic int refs;
  struct chunk *spare_next; /* in the map's spare list */
  cf_task_fn fn;
  size_t n;     /* items */
  size_t nok;   /* results produced */
  size_t next;  /* next result to yield (map only) */
  int err;      /* failure of item nok, or 0 */
  char *errmsg; /* its message, or NULL */
  void **items; /* n items (cap allocated, grown as items arrive) */
  size_t cap;
  cf_value *results; /* results_cap slots, allocated by the chunk's task */
  size_t results_cap;
} chunk;

static chunk *chunk_new(cf_task_fn fn) {
  chunk *c = cf__fault(CF__FAULT_ALLOC) ? NULL : calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  atomic_init(&c->refs, 2);
  c->fn = fn;
  return c;
}

/* Makes room for n items in all. */
static int chunk_reserve(chunk *c, size_t n) {
  if (n <= c->cap)
    return 0;
  void **items = n > SIZE_MAX / sizeof *items || cf__fault(CF__FAULT_ALLOC)
                     ? NULL
                     : realloc(c->items, n * sizeof *items);
  if (items == NULL)
    return CF_ENOMEM;
  c->items = items;
  c->cap = n;
  return 0;
}

/* Appends an item, growing the array with the items actually read (a
 * huge chunksize costs nothing until the input provides the items). */
static int chunk_add(chunk *c, void *item) {
  if (c->n == c->cap && chunk_reserve(c, c->cap != 0 ? 2 * c->cap : 16) != 0)
    return CF_ENOMEM;
  c->items[c->n++] = item;
  return 0;
}

/* Releases the results not yet yielded and the error message. */
static void chunk_clear(chunk *c) {
  for (size_t i = c->next; i < c->nok; i++)
    cf_value_release(&c->results[i]);
  free(c->errmsg);
  c->errmsg = NULL;
}

static void chunk_unref(void *arg) {
  chunk *c = arg;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  chunk_clear(c);
  free(c->items);
  free(c->results);
  free(c);
}

static int chunk_task(void *arg, cf_value *result) {
  (void)result;
  chunk *c = arg;
  /* The worker allocates the results, not the map's consumer: the memory
   * is first touched (and page-faulted) in parallel, by the threads that
   * write it. Each slot is written before nok moves past it. */
  if (c->results_cap < c->n) {
    free(c->results);
    c->results_cap = 0;
    c->results =
        c->n > SIZE_MAX / sizeof *c->results || cf__fault(CF__FAULT_ALLOC)
            ? NULL
            : malloc(c->n * sizeof *c->results);
    if (c->results == NULL) {
      c->err = CF_ENOMEM;
      c->nok = 0;
      return CF_ENOMEM;
    }
    c->results_cap = c->n;
  }
  int *raised = cf__raise_code_slot();
  for (size_t i = 0; i < c->n; i++) {
    cf_value *v = &c->results[i];
    memset(v, 0, sizeof *v);
    *raised = 0; /* no message left by an earlier item */
    int rc = c->fn(c->items[i], v);
    if (rc != 0) {
      if (rc > 0)
        rc = CF_ETASK;
      cf_value_release(v);
      c->err = rc;
      c->errmsg = cf__raise_take(rc);
      c->nok = i;
      /* The chunk's own future fails too (for counters and callbacks). */
      return c->errmsg != NULL ? cf_raise(rc, "%s", c->errmsg) : rc;
    }
  }
  c->nok = c->n;
  return 0;
}

typedef struct entry {
  cf_future *f;
  chunk *c; /* NULL when one item per task */
} entry;

struct cf_map {
  cf_executor *ex;
  cf_task_fn fn;
  cf_iter_fn next;
  void *state;
  size_t chunksize;
  size_t window;    /* ring capacity: most entries in flight */
  int64_t deadline; /* CF_FOREVER: none */
  entry *ring;
  size_t head, count;
  bool input_done;
  int input_err;      /* error to report once the ring drains, or 0 */
  bool submit_failed; /* input_err came from the executor, not the input */
  int err;            /* sticky error once the map failed */
  char *errmsg;
  chunk *spare; /* chunks to reuse, linked by spare_next */
  chunk *ready; /* the head chunk once done and checked: its results up to
                   nok can be yielded without another look at its future */
};

/* A chunk for the next task: a spare one of this map, or a new one. */
static chunk *map_chunk_get(cf_map *m) {
  chunk *c = m->spare;
  if (c == NULL)
    return chunk_new(m->fn);
  m->spare = c->spare_next;
  c->spare_next = NULL;
  c->n = c->nok = c->next = 0;
  c->err = 0;
  atomic_store_explicit(&c->refs, 2, memory_order_relaxed);
  return c;
}

/* Drops the map's reference to a chunk; keeps it if it was the last. */
static void map_chunk_put(cf_map *m, chunk *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return; /* the task still holds it and frees it when done */
  chunk_clear(c);
  c->spare_next = m->spare;
  m->spare = c;
}

static void map_drop_entry(cf_map *m, entry *e) {
  if (e->c != NULL && e->c == m->ready)
    m->ready = NULL;
  if (e->c != NULL)
    map_chunk_put(m, e->c);
  cf_future_unref(e->f);
  e->f = NULL;
  e->c = NULL;
}

/* Ends the map with an error: cancel and drop everything in flight. */
static int map_fail(cf_map *m, int err, const char *msg) {
  m->err = err;
  free(m->errmsg);
  m->errmsg = cf__asprintf("%s", msg != NULL ? msg : cf_strerror(err));
  while (m->count > 0) {
    entry *e = &m->ring[m->head];
    cf_future_cancel(e->f);
    map_drop_entry(m, e);
    m->head = (m->head + 1) % m->window;
    m->count--;
  }
  return err;
}

/* Reads up to chunksize items into the empty chunk c; ends the input at
 * its end, on its error or when out of memory. The library's own
 * iterators are read in one pass without a call per item (with tiny
 * items the map's one consumer thread is the bottleneck, bench/NOTES.md
 * sections 8-9), with exactly the items and the final iterator state
 * that one call per item would give. */
static void map_fill_chunk(cf_map *m, chunk *c) {
  uint64_t left = 0;
  bool bulk = false;
  if (m->state != NULL && m->next == cf_range_iter_next) {
    left = range_left(m->state);
    bulk = true;
  } else if (m->state != NULL && m->next == cf_array_iter_next) {
    const cf_array_iter *a = m->state;
    left = a->next < a->count ? a->count - a->next : 0;
    bulk = a->items != NULL || left == 0;
  }
  if (bulk) {
    size_t n = left < m->chunksize ? (size_t)left : m->chunksize;
    if (n == 0) {
      m->input_done = true;
      m->input_err = 0;
    } else if (chunk_reserve(c, n) != 0) {
      m->input_done = true; /* nothing was read: end the input here */
      m->input_err = CF_ENOMEM;
    } else if (m->next == cf_range_iter_next) {
      range_take(m->state, c->items, n, left);
      c->n = n;
    } else {
      cf_array_iter *a = m->state;
      memcpy(c->items, a->items + a->next, n * sizeof *c->items);
      a->next += n;
      c->n = n;
    }
    return;
  }
  while (c->n < m->chunksize) {
    void *item = NULL;
    int rc = m->next(m->state, &item);
    if (rc <= 0) {
      m->input_done = true;
      m->input_err = rc;
      return;
    }
    if (chunk_add(c, item) != 0) {
      /* This item is lost to the map: end it here with the error. */
      m->input_done = true;
      m->input_err = CF_ENOMEM;
      return;
    }
  }
}

/* Submits one more task if the window and the input allow. Returns 1 if
 * it submitted, 0 if not (window full or input over). */
static int map_submit_one(cf_map *m) {
  if (m->input_done || m->count == m->window)
    return 0;
  entry e = {NULL, NULL};
  cf_task t = {m->fn, NULL, NULL, 0};
  void *item = NULL;
  int rc;
  if (m->chunksize <= 1) {
    rc = m->next(m->state, &item);
    if (rc <= 0) {
      m->input_done = true;
      m->input_err = rc;
      return 0;
    }
    t.arg = item;
  } else {
    e.c = map_chunk_get(m);
    if (e.c == NULL) {
      m->input_done = true;
      m->input_err = CF_ENOMEM;
      return 0;
    }
    map_fill_chunk(m, e.c);
    if (e.c->n == 0) {
      atomic_store(&e.c->refs, 1);
      map_chunk_put(m, e.c);
      return 0;
    }
    t.fn = chunk_task;
    t.arg = e.c;
    t.arg_dtor = chunk_unref;
  }
  int64_t timeout = CF_FOREVER;
  if (m->deadline != CF_FOREVER) {
    timeout = m->deadline - cf_now_ns();
    if (timeout < 0)
      timeout = 0;
  }
  rc = cf_executor_submit_task(m->ex, &t, timeout, &e.f);
  if (rc != 0) {
    if (e.c != NULL) {
      atomic_store(&e.c->refs, 1); /* the task never got its reference */
      map_chunk_put(m, e.c);
    }
    /* Report it at this position, after what is already in flight. */
    m->input_done = true;
    m->input_err = rc;
    m->submit_failed = true;
    return 0;
  }
  m->ring[(m->head + m->count) % m->window] = e;
  m->count++;
  return 1;
}

int cf_executor_map(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                    void *state, const cf_map_opts *opts, cf_map **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  cf_map_opts o = {0};
  if (opts != NULL)
    o = *opts;
  if (out == NULL || fn == NULL || next == NULL || o.chunksize < 0 ||
      o.prefetch < 0 || o.timeout_ns < 0 ||
      (!o.has_timeout && o.timeout_ns != 0))
    return CF_EINVAL;
  if (o.prefetch == 0) {
    /* Enough single tasks to amortise each worker's queue round trip;
     * chunks are long tasks, so two per worker keep every worker busy
     * while the map's buffers stay few and get reused. */
    int64_t w = cf_executor_max_workers(ex);
    if (o.chunksize > 1)
      o.prefetch = w > 2 ? 2 * w : 4;
    else
      o.prefetch = w > 16 ? 4 * w : 64;
  }
  cf_map *m = cf__fault(CF__FAULT_ALLOC) ? NULL : calloc(1, sizeof *m);
  if (m == NULL)
    return CF_ENOMEM;
  m->ring = cf__fault(CF__FAULT_ALLOC)
                ? NULL
                : calloc((size_t)o.prefetch, sizeof *m->ring);
  if (m->ring == NULL) {
    free(m);
    return CF_ENOMEM;
  }
  m->ex = ex;
  m->fn = fn;
  m->next = next;
  m->state = state;
  m->chunksize = (size_t)(o.chunksize > 1 ? o.chunksize : 1);
  m->window = (size_t)o.prefetch;
  m->deadline = o.has_timeout ? cf_deadline_after(o.timeout_ns) : CF_FOREVER;
  while (map_submit_one(m))
    ;
  /* If the very first submission failed, report it from this call, like
   * Python's map(). Input iterator errors and later failures are reported
   * by cf_map_next at their position. */
  rc = m->input_err;
  if (m->count == 0 && m->submit_failed) {
    cf_map_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* Yields the head entry's next result, or fails the map at it. */
static int map_yield_head(cf_map *m, cf_value *out) {
  entry *e = &m->ring[m->head];
  /* The next futures were last written by workers on other cores: start
   * fetching them now so their misses overlap (bench/NOTES.md). */
  for (size_t i = 1; i <= 4 && i < m->count; i++)
    __builtin_prefetch(m->ring[(m->head + i) % m->window].f);
  int rc = cf_future_wait_until(e->f, m->deadline);
  if (rc == CF_ETIMEDOUT)
    return map_fail(m, CF_ETIMEDOUT, "map: timed out waiting for a result");
  if (rc != 0)
    return map_fail(m, rc, NULL);
  const char *msg = NULL;
  bool last;
  if (e->c == NULL) {
    rc = cf_future_error(e->f, &msg);
    if (rc != 0)
      return map_fail(m, rc, msg);
    cf__future_take_value(e->f, out);
    last = true;
  } else {
    chunk *c = e->c;
    if (cf_future_cancelled(e->f))
      return map_fail(m, CF_ECANCELLED, NULL);
    if (c->next >= c->nok) {
      if (c->err != 0)
        return map_fail(m, c->err, c->errmsg);
      /* No item failed: the chunk's task never ran its items (it was
       * cancelled or failed on its own); report the future's error. */
      rc = cf_future_error(e->f, &msg);
      return map_fail(m, rc != 0 ? rc : CF_ETASK, msg);
    }
    m->ready = c;
    /* No need to clear the slot: only results from next on are owned. */
    *out = c->results[c->next++];
    last = c->next == c->n;
  }
  if (last) {
    map_drop_entry(m, e);
    m->head = (m->head + 1) % m->window;
    m->count--;
  }
  return 1;
}

int cf_map_next(cf_map *m, cf_value *out) {
  if (m == NULL || out == NULL)
    return CF_EINVAL;
  /* Fast path: more results of a chunk already checked. The chunk's last
   * result takes the slow path, which drops the chunk and refills. */
  chunk *c = m->ready;
  if (c != NULL && c->next + 1 < c->nok) {
    *out = c->results[c->next++];
    return 1;
  }
  memset(out, 0, sizeof *out);
  if (m->err != 0)
    return m->err;
  while (map_submit_one(m))
    ;
  if (m->count == 0) {
    if (m->input_err < 0)
      return map_fail(m, m->input_err,
                      m->input_err == CF_ENOMEM ? "map: out of memory" : NULL);
    return 0;
  }
  int rc = map_yield_head(m, out);
  if (rc == 1)
    while (map_submit_one(m))
      ;
  return rc;
}

const char *cf_map_error_message(const cf_map *m) {
  return m != NULL && m->errmsg != NULL ? m->errmsg : "";
}

int cf_map_describe(const cf_map *m, char *buf, size_t size) {
  if (m == NULL || (buf == NULL && size > 0))
    return CF_EINVAL;
  return snprintf(buf, size, "<cf_map iterator at %p>", (const void *)m);
}

void cf_map_free(cf_map *m) {
  if (m == NULL)
    return;
  while (m->count > 0) {
    entry *e = &m->ring[m->head];
    cf_future_cancel(e->f);
    map_drop_entry(m, e);
    m->head = (m->head + 1) % m->window;
    m->count--;
  }
  while (m->spare != NULL) {
    chunk *c = m->spare;
    m->spare = c->spare_next;
    atomic_store_explicit(&c->refs, 1, memory_order_relaxed);
    chunk_unref(c);
  }
  free(m->errmsg);
  free(m->ring);
  free(m);
}
