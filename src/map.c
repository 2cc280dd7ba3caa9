/*
 * map.c - the lazy ordered map (cf_executor_map) and the library's input
 * iterators.
 *
 * The consumer thread submits tasks (one per item, or one per chunk of
 * items) and keeps at most `window` of them in flight in a ring; each
 * cf_map_next() yields the head's next result, drops the head once it is
 * fully yielded, and tops the window up again. Nothing here is shared
 * with workers except chunks, which are reference counted (one reference
 * for the map, one for the task's arg).
 *
 * Chunk sizes. An explicit chunksize is obeyed. With none (0), the map
 * adapts: every task is a chunk (so that it reports how long its items
 * took), the first ones of one item each, so that long items behave as
 * with chunksize 1; each time the consumer reaches a finished chunk it
 * estimates the time per item and sets the size of the chunks it submits
 * next towards ADAPT_TARGET_NS of work per chunk: at most doubling per
 * step (an estimate from a few tiny items is noisy), shrinking at once if
 * items got longer. While chunks are large the window holds fewer of
 * them (WINDOW_ITEMS), so the items in flight stay bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "executor_int.h"
#include "registry_int.h"
#include "future_int.h"

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

/* Takes the next n items (0 < n <= left, left = range_left(r)), as n
 * calls of cf_range_iter_next would: returns the first; the others follow
 * by the step (wrapping unsigned arithmetic gives each item exactly).
 * After the last item next is stop. */
static int64_t range_take(cf_range_iter *r, uint64_t n, uint64_t left) {
  int64_t first = r->next;
  uint64_t pos = (uint64_t)r->next, step = (uint64_t)r->step;
  r->next = n == left ? r->stop : (int64_t)(pos + n * step);
  return first;
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

/* Adaptive chunking (see the top of the file). */
#define ADAPT_TARGET_NS 100000 /* work per chunk: ~1 % for a ~1 us task */
#define ADAPT_MAX_CHUNK 65536
#define WINDOW_ITEMS 8192 /* items in flight beyond which fewer chunks are */
#define GROWTH 4          /* the most a chunk grows per measurement */

/* A chunk as the map keeps it: the contract's cf__map_chunk (the task's
 * arg) and the map's own bookkeeping. Two references: the task's
 * (dropped when the task is done or discarded) and the map's. If the map
 * drops the last one, it keeps the chunk and its buffers for the next
 * chunk of the same map: fresh memory costs a page fault per 4 KiB, which
 * on a VM can cost more than the items' work (bench/NOTES.md). */
typedef struct chunk {
  cf__map_chunk c;
  _Atomic int refs;
  struct chunk *spare_next; /* in the map's spare list */
  size_t next;              /* next result to yield (map only) */
  void **own;               /* items read one by one (c.items points here) */
  size_t cap;               /* own's capacity */
  char *bytes;              /* sized items: the chunk's copies of them */
  size_t bytes_cap;
  bool measured;            /* the map has read its timing (map only) */
} chunk;

static chunk *chunk_of(cf__map_chunk *c) {
  return cf__container_of(c, chunk, c);
}

static chunk *chunk_new(cf_task_fn fn, cf_map_chunk_fn run, const char *name,
                        size_t item_size) {
  chunk *ch = cf__calloc(1, sizeof *ch);
  if (ch == NULL)
    return NULL;
  atomic_init(&ch->refs, 2);
  ch->c.fn = fn;
  ch->c.run = run;
  ch->c.items = NULL;
  ch->c.name = name;
  ch->c.item_size = item_size;
  return ch;
}

/* Appends an item, growing the array with the items actually read (a
 * huge chunksize costs nothing until the input provides the items). */
static int chunk_add(chunk *ch, void *item) {
  if (ch->c.n == ch->cap) {
    size_t cap = ch->cap != 0 ? 2 * ch->cap : 16;
    void **own = cf__realloc(ch->own, cap, sizeof *own);
    if (own == NULL)
      return CF_ENOMEM;
    ch->own = own;
    ch->cap = cap;
  }
  ch->own[ch->c.n++] = item;
  ch->c.items = ch->own;
  return 0;
}

/* Releases the results not yet yielded and the error message. */
static void chunk_clear(chunk *ch) {
  if (!ch->c.plain)
    for (size_t i = ch->next; i < ch->c.nok; i++)
      cf_value_release(&ch->c.results[i]);
  free(ch->c.errmsg);
  ch->c.errmsg = NULL;
}

static void chunk_free(chunk *ch) {
  chunk_clear(ch);
  free(ch->bytes);
  free(ch->own);
  free(ch->c.results);
  free(ch->c.plain_results);
  free(ch);
}

/* The task's reference (its arg_dtor). */
static void chunk_unref(void *arg) {
  chunk *ch = chunk_of(arg);
  if (atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) == 1)
    chunk_free(ch);
}

static bool value_is_plain(const cf_value *v) {
  return v->size == 0 && v->dtor == NULL && v->type == NULL;
}

/* Makes room for n values of size `size` in *buf (capacity *cap). */
static bool chunk_room(void **buf, size_t *cap, size_t n, size_t size) {
  if (*cap >= n)
    return true;
  free(*buf);
  *cap = 0;
  *buf = n > SIZE_MAX / size ? NULL : cf__malloc(n * size);
  if (*buf == NULL)
    return false;
  *cap = n;
  return true;
}

/* The first result that is not plain: from now on full values, the
 * plain ones before it converted. */
static bool chunk_go_full(cf__map_chunk *c, size_t done) {
  if (!chunk_room((void **)&c->results, &c->results_cap, c->n,
                  sizeof *c->results))
    return false;
  for (size_t i = 0; i < done; i++) {
    cf_value *v = &c->results[i];
    memset(v, 0, sizeof *v);
    v->u = c->plain_results[i];
  }
  c->plain = false;
  return true;
}

/* The results' words go through cf__map_store (cf/executor.h): streamed
 * to memory, so the consumer reads them from there instead of taking
 * each line from this core, and reusing the buffer later needs no read
 * for ownership (bench/NOTES.md section 10: 3.9-7.8 against 9.4-10.8
 * ns/item). The fence orders them before the completion that publishes
 * them. It does not depend on the sanitizer macros as the stores do: a
 * chunk runner is compiled in the user's file, perhaps without the
 * sanitizer this library was built with, and streams its stores then. */
static inline void plain_fence(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __asm__ volatile("sfence" ::: "memory");
#endif
}

/* Starts running a chunk: its clock, and room for plain results (the
 * worker allocates them, not the map's consumer, so the memory is first
 * touched, and page-faulted, in parallel by the threads that write it).
 * Each slot is written before nok moves past it. */
static int chunk_begin(cf__map_chunk *c) {
  c->started_ns = cf_now_ns();
  c->plain = true;
  c->nok = 0;
  cf__raise_tls.code = 0;
  if (!chunk_room((void **)&c->plain_results, &c->plain_cap, c->n,
                  sizeof *c->plain_results))
    return CF_ENOMEM;
  return 0;
}

/* Ends a chunk: items [0, i) have results; item i failed with rc (its
 * value released), or rc is 0 and i is n. Returns the chunk task's
 * outcome: the chunk's own future fails too (for counters and
 * callbacks). */
static int chunk_end(cf__map_chunk *c, size_t i, int rc, char *argbuf) {
  c->err = rc;
  c->errmsg = rc != 0 ? cf__raise_take(rc) : NULL;
  c->nok = i;
  c->elapsed_ns = cf_now_ns() - c->started_ns;
  plain_fence(); /* the streamed results before the completion */
  cf__arg_free(argbuf);
  if (rc == 0)
    return 0;
  return c->errmsg != NULL ? cf_raise(rc, "%s", c->errmsg) : rc;
}

/* Keeps item i's outcome: 0 to go on, or the code that ends the chunk
 * (then v is released). */
static int chunk_keep(cf__map_chunk *c, size_t i, int rc, cf_value *v) {
  if (rc == 0 && c->plain) {
    if (value_is_plain(v)) {
      cf__map_store(&c->plain_results[i], v->u);
      return 0;
    }
    if (!chunk_go_full(c, i))
      rc = CF_ENOMEM;
  }
  if (rc != 0) {
    cf_value_release(v);
    return rc > 0 ? CF_ETASK : rc;
  }
  c->results[i] = *v;
  return 0;
}

/* The same while the results are plain and the items are not sized, with
 * what the loop reads held in locals (the item function could write
 * anything it has a pointer to, for all the compiler knows): a plain
 * result leaves v zero but for u, so only u is cleared again. From the
 * first result that is not plain on, chunk_loop's general way. */
static int chunk_loop_plain(cf__map_chunk *c, size_t i) {
  cf_task_fn fn = c->fn;
  void *const *items = c->items;
  uint64_t first = (uint64_t)c->first, step = c->step;
  cf_word *out = c->plain_results;
  int *raised = &cf__raise_tls.code;
  size_t n = c->n;
  cf_value v = CF_VALUE_INIT;
  for (; i < n; i++) {
    void *item = items != NULL ? items[i]
                               : (void *)(intptr_t)(int64_t)(first + i * step);
    *raised = 0; /* no message left by an earlier item */
    int rc = fn(item, &v);
    if (rc != 0 || !value_is_plain(&v))
      return cf__map_chunk_resume(c, i, rc, &v);
    cf__map_store(&out[i], v.u);
    v.u.i = 0;
  }
  return chunk_end(c, n, 0, NULL);
}

/* Runs items [i, n) through c->fn, one call each, and ends the chunk. */
static int chunk_loop(cf__map_chunk *c, size_t i) {
  if (c->plain && c->item_size == 0)
    return chunk_loop_plain(c, i);
  /* Sized items reach the task as argument buffers (cf_arg_size works),
   * as a process pool's worker rebuilds them: one buffer, refilled. */
  char *argbuf = NULL;
  if (c->item_size > 0 && (argbuf = cf__arg_alloc(c->item_size)) == NULL)
    return chunk_end(c, i, CF_ENOMEM, NULL);
  int *raised = &cf__raise_tls.code;
  for (; i < c->n; i++) {
    cf_value v = CF_VALUE_INIT;
    *raised = 0; /* no message left by an earlier item */
    void *item = cf__map_chunk_item(c, i);
    if (argbuf != NULL) {
      memcpy(argbuf, item, c->item_size);
      item = argbuf;
    }
    int rc = chunk_keep(c, i, c->fn(item, &v), &v);
    if (rc != 0)
      return chunk_end(c, i, rc, argbuf);
  }
  return chunk_end(c, c->n, 0, argbuf);
}

int cf__map_chunk_task(void *arg, cf_value *result) {
  (void)result;
  cf__map_chunk *c = arg;
  if (c->run != NULL)
    return c->run(c);
  int rc = chunk_begin(c);
  return rc != 0 ? chunk_end(c, 0, rc, NULL) : chunk_loop(c, 0);
}

int cf__map_chunk_open(cf_map_chunk *c, cf_task_fn fn, cf__map_span *s) {
  if (c->probe) {
    c->fn = fn;
    return 0;
  }
  int rc = chunk_begin(c);
  if (rc != 0)
    return chunk_end(c, 0, rc, NULL);
  if (c->item_size > 0 || fn != c->fn) /* the map checked fn; defensive */
    return chunk_loop(c, 0);
  s->items = c->items;
  s->first = c->first;
  s->step = c->step;
  s->n = c->n;
  s->out = c->plain_results;
  s->raised = &cf__raise_tls.code;
  return 1;
}

int cf__map_chunk_resume(cf_map_chunk *c, size_t i, int rc, cf_value *v) {
  rc = chunk_keep(c, i, rc, v);
  return rc != 0 ? chunk_end(c, i, rc, NULL) : chunk_loop(c, i + 1);
}

int cf__map_chunk_close(cf_map_chunk *c) { return chunk_end(c, c->n, 0, NULL); }

/* Moves result i of a finished chunk into *out. */
static inline void chunk_result(const chunk *ch, size_t i, cf_value *out) {
  if (ch->c.plain) {
    out->u = ch->c.plain_results[i];
    out->size = 0;
    out->dtor = NULL;
    out->type = NULL;
  } else {
    *out = ch->c.results[i]; /* only results from next on are owned */
  }
}

typedef struct entry {
  cf_future *f;
  chunk *ch; /* NULL when one item per task */
} entry;

struct cf_map {
  /* First: cf_map_next's inline fast path (cf/executor.h) reads it. While
   * the ready chunk is plain it covers its results from `next` up to, not
   * including, its last (which the slow path yields, to drop the chunk
   * and refill); else it is empty. The slow path syncs the chunk's `next`
   * from it before anything else. */
  cf__map_cursor cursor;
  cf_executor *ex;
  cf_task_fn fn;
  cf_map_chunk_fn chunk_fn; /* cf_map_opts.chunk_fn, checked */
  cf_iter_fn next;
  void *state;
  const char *name;
  size_t item_size;
  bool chunked;     /* every task is a chunk (chunksize > 1, or adaptive) */
  bool adaptive;    /* chunksize chosen by the map */
  bool measured;    /* adaptive: a chunk's timing has been read */
  size_t chunksize; /* items per chunk for the next submission */
  size_t capacity;  /* ring capacity: the most entries in flight */
  size_t window;    /* entries in flight allowed now (<= capacity) */
  size_t min_window;
  int64_t deadline; /* CF_FOREVER: none */
  entry *ring;
  size_t head, count;
  bool input_done;
  int input_err;      /* error to report once the ring drains, or 0 */
  char *input_msg;    /* the iterator's cf_raise message for it, or NULL */
  bool submit_failed; /* input_err came from the executor, not the input */
  int err;            /* sticky error once the map failed */
  char *errmsg;
  /* Tasks read but refused by a full bounded queue while others were in
   * flight: submitted first at the next refill (see map_push). */
  struct held *held;
  chunk *spare; /* chunks to reuse, linked by spare_next */
  chunk *ready; /* the head chunk once done and checked: its results up to
                   nok can be yielded without another look at its future */
};

/* A chunk for the next task: a spare one of this map, or a new one. */
static chunk *map_chunk_get(cf_map *m) {
  chunk *ch = m->spare;
  if (ch == NULL)
    return chunk_new(m->fn, m->chunk_fn, m->name, m->item_size);
  m->spare = ch->spare_next;
  ch->spare_next = NULL;
  ch->c.n = ch->c.nok = ch->next = 0;
  ch->c.items = ch->own;
  ch->c.err = 0;
  ch->c.elapsed_ns = 0;
  ch->measured = false;
  atomic_store_explicit(&ch->refs, 2, memory_order_relaxed);
  return ch;
}

/* Drops the map's reference to a chunk; keeps it if it was the last. */
static void map_chunk_put(cf_map *m, chunk *ch) {
  if (atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) != 1)
    return; /* the task still holds it and frees it when done */
  chunk_clear(ch);
  ch->spare_next = m->spare;
  m->spare = ch;
}

/* Makes ch the ready chunk (NULL: none) and points the cursor at what it
 * has left for the fast path. */
static void map_set_ready(cf_map *m, chunk *ch) {
  m->ready = ch;
  if (ch != NULL && ch->c.plain && ch->next + 1 < ch->c.nok) {
    m->cursor.next = &ch->c.plain_results[ch->next];
    m->cursor.end = &ch->c.plain_results[ch->c.nok - 1];
  } else {
    m->cursor.next = m->cursor.end = NULL;
  }
}

/* Brings the ready chunk's `next` up to what the fast path handed out. */
static void map_sync_cursor(cf_map *m) {
  chunk *ch = m->ready;
  if (ch != NULL && m->cursor.next != NULL)
    ch->next = (size_t)(m->cursor.next - ch->c.plain_results);
}

static void map_drop_entry(cf_map *m, entry *e) {
  if (e->ch != NULL && e->ch == m->ready)
    map_set_ready(m, NULL);
  if (e->ch != NULL)
    map_chunk_put(m, e->ch);
  cf_future_unref(e->f);
  e->f = NULL;
  e->ch = NULL;
}

static void map_drop_held(cf_map *m);

/* Cancels and drops everything in flight (and what waits to be). */
static void map_drop_all(cf_map *m) {
  map_drop_held(m);
  while (m->count > 0) {
    entry *e = &m->ring[m->head];
    cf_future_cancel(e->f);
    map_drop_entry(m, e);
    m->head = (m->head + 1) % m->capacity;
    m->count--;
  }
}

/* Ends the map with an error. */
static int map_fail(cf_map *m, int err, const char *msg) {
  m->err = err;
  free(m->errmsg);
  m->errmsg = cf__asprintf("%s", msg != NULL ? msg : cf_strerror(err));
  map_drop_all(m);
  return err;
}

/* The window for chunks of the current size: the full capacity for small
 * chunks, fewer chunks once they hold many items. */
static void map_set_window(cf_map *m) {
  size_t w = m->capacity;
  if (m->adaptive && !m->measured) {
    w = m->min_window; /* until the first chunk tells how long items are */
  } else if (m->adaptive) {
    size_t by_items = (WINDOW_ITEMS + m->chunksize - 1) / m->chunksize;
    if (by_items < w)
      w = by_items;
    if (w < m->min_window)
      w = m->min_window;
    if (w > m->capacity)
      w = m->capacity;
  }
  m->window = w;
}

/* Adaptive chunking: learns from a finished chunk how long items take. */
static void map_adapt(cf_map *m, chunk *ch) {
  ch->measured = true;
  if (!m->adaptive || ch->c.n == 0 || ch->c.nok != ch->c.n)
    return;
  if (!m->measured) {
    m->measured = true;
    map_set_window(m);
  }
  int64_t per_item = ch->c.elapsed_ns / (int64_t)ch->c.n;
  if (per_item < 1)
    per_item = 1;
  int64_t ideal = ADAPT_TARGET_NS / per_item;
  if (ideal < 1)
    ideal = 1;
  if (ideal > ADAPT_MAX_CHUNK)
    ideal = ADAPT_MAX_CHUNK;
  size_t cur = m->chunksize, want = (size_t)ideal;
  if (want > cur)
    want = want < GROWTH * cur ? want : GROWTH * cur; /* step by step */
  else if (2 * want > cur)
    want = cur; /* within a factor of two: keep it */
  if (want != cur) {
    m->chunksize = want;
    map_set_window(m);
  }
}

/* Sized items: the chunk takes copies of their bytes, so that whoever
 * runs it later (a worker thread, a process pool's dispatch) never reads
 * the caller's memory, which the iterator may already reuse. False (and
 * the chunk emptied) if out of memory. */
static bool chunk_copy_items(chunk *ch, size_t item_size) {
  size_t n = ch->c.n;
  if (n > SIZE_MAX / item_size)
    return false;
  if (n * item_size > ch->bytes_cap) {
    char *b = cf__realloc(ch->bytes, n, item_size);
    if (b == NULL)
      return false;
    ch->bytes = b;
    ch->bytes_cap = n * item_size;
  }
  if (n > ch->cap) {
    void **own = cf__realloc(ch->own, n, sizeof *own);
    if (own == NULL)
      return false;
    ch->own = own;
    ch->cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(ch->bytes + i * item_size, ch->c.items[i], item_size);
  }
  for (size_t i = 0; i < n; i++)
    ch->own[i] = ch->bytes + i * item_size;
  ch->c.items = ch->own;
  return true;
}

/* An item read one by one, sized: its bytes are copied at once (the
 * iterator may reuse its buffer for the next item); own[i] is pointed at
 * the copy once the chunk is full (the copies move while they grow). */
static int chunk_add_sized(chunk *ch, const void *item, size_t item_size) {
  size_t n = ch->c.n;
  if (n + 1 > SIZE_MAX / item_size)
    return CF_ENOMEM;
  if ((n + 1) * item_size > ch->bytes_cap) {
    size_t cap = ch->bytes_cap != 0 ? 2 * ch->bytes_cap : 16 * item_size;
    if (cap < (n + 1) * item_size || cap / 2 < ch->bytes_cap)
      cap = (n + 1) * item_size;
    char *b = cf__realloc(ch->bytes, cap, 1);
    if (b == NULL)
      return CF_ENOMEM;
    ch->bytes = b;
    ch->bytes_cap = cap;
  }
  memcpy(ch->bytes + n * item_size, item, item_size);
  return chunk_add(ch, NULL);
}

static void map_fill_chunk_items(cf_map *m, chunk *ch);

/* Reads up to chunksize items into the empty chunk ch; ends the input at
 * its end, on its error or when out of memory. The library's own
 * iterators are read in one pass without a call per item (with tiny
 * items the map's one consumer thread is the bottleneck, bench/NOTES.md
 * sections 8-9), with exactly the items and the final iterator state
 * that one call per item would give. Sized items are
 * copied into the chunk (see chunk_add_sized, chunk_copy_items). */
static void map_fill_chunk(cf_map *m, chunk *ch) {
  map_fill_chunk_items(m, ch);
  if (m->item_size == 0 || ch->c.n == 0 || ch->c.items == NULL)
    return;
  if (ch->c.items == ch->own) { /* read one by one: copied already */
    for (size_t i = 0; i < ch->c.n; i++)
      ch->own[i] = ch->bytes + i * m->item_size;
  } else if (!chunk_copy_items(ch, m->item_size)) { /* the caller's array */
    ch->c.n = 0; /* these items are lost to the map: end it with the error */
    m->input_done = true;
    m->input_err = CF_ENOMEM;
  }
}

/* Reads the next item through the caller's iterator. A failure keeps the
 * message the iterator gave it with cf_raise (as a task's is kept); a
 * message the consumer had pending before the call is kept for it. */
static int map_read(cf_map *m, void **item) {
  int saved = 0;
  char *saved_msg = NULL;
  if (CF__UNLIKELY(cf__raise_tls.code != 0))
    cf__raise_save(&saved, &saved_msg);
  int rc = m->next(m->state, item);
  if (rc < 0) {
    free(m->input_msg);
    m->input_msg = cf__raise_take(rc);
  } else if (CF__UNLIKELY(cf__raise_tls.code != 0)) {
    cf__raise_clear(); /* raised, then succeeded: not a failure */
  }
  if (CF__UNLIKELY(saved != 0))
    cf__raise_restore(saved, saved_msg);
  return rc;
}

static void map_fill_chunk_items(cf_map *m, chunk *ch) {
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
    } else if (m->next == cf_range_iter_next) {
      /* Nothing to copy: the worker computes the items. */
      cf_range_iter *r = m->state;
      ch->c.step = (uint64_t)r->step;
      ch->c.first = range_take(r, n, left);
      ch->c.items = NULL;
      ch->c.n = n;
    } else {
      /* Nothing to copy either: the chunk reads the caller's array. */
      cf_array_iter *a = m->state;
      ch->c.items = a->items + a->next;
      a->next += n;
      ch->c.n = n;
    }
    return;
  }
  while (ch->c.n < m->chunksize) {
    void *item = NULL;
    int rc = map_read(m, &item);
    if (rc <= 0) {
      m->input_done = true;
      m->input_err = rc;
      return;
    }
    if ((m->item_size > 0 ? chunk_add_sized(ch, item, m->item_size)
                          : chunk_add(ch, item)) != 0) {
      /* This item is lost to the map: end it here with the error. */
      m->input_done = true;
      m->input_err = CF_ENOMEM;
      return;
    }
  }
}

/* The task of one item. A sized item reaches the task as an argument
 * buffer (a copy, freed with the task: cf_arg_size works on every
 * executor, as the process pool's workers rebuild items that way).
 * Returns 0 or CF_ENOMEM. */
static int item_task(const cf_map *m, void *item, cf_task *t) {
  *t = (cf_task){m->fn, item, NULL, m->item_size, m->name};
  if (m->item_size > 0) {
    char *copy = cf__arg_alloc(m->item_size);
    if (copy == NULL)
      return CF_ENOMEM;
    memcpy(copy, item, m->item_size);
    t->arg = copy;
    t->arg_dtor = cf__arg_free;
  }
  return 0;
}

/* Makes the task of the next item from the input (a map of one task per
 * item). Returns 1 if it made one, 0 if not: the input is over (or
 * failed, or memory ran out: input_err). */
static CF__ALWAYS_INLINE int map_next_item(cf_map *m, cf_task *t) {
  void *item = NULL;
  int rc = map_read(m, &item);
  if (rc > 0)
    rc = item_task(m, item, t) == 0 ? 1 : CF_ENOMEM;
  if (rc <= 0) {
    m->input_done = true;
    m->input_err = rc;
    return 0;
  }
  return 1;
}

/* Makes the next task from the input: one item, or a chunk of them
 * (e->ch, which the task's arg references). Returns as map_next_item.
 * The caller submits it, or gives it back with map_unsubmitted. */
static int map_next_task(cf_map *m, cf_task *t, entry *e) {
  e->ch = NULL; /* (e->f is the submit's; *t is set once made) */
  if (m->input_done)
    return 0;
  if (!m->chunked)
    return map_next_item(m, t);
  e->ch = map_chunk_get(m);
  if (e->ch == NULL) {
    m->input_done = true;
    m->input_err = CF_ENOMEM;
    return 0;
  }
  map_fill_chunk(m, e->ch);
  if (e->ch->c.n == 0) {
    atomic_store(&e->ch->refs, 1);
    map_chunk_put(m, e->ch);
    e->ch = NULL;
    return 0;
  }
  *t = (cf_task){cf__map_chunk_task, &e->ch->c, chunk_unref, 0, NULL};
  return 1;
}

/* Gives back what a task that was never submitted holds: an item's copy,
 * or the chunk's second reference. */
static void map_unsubmitted(cf_map *m, const cf_task *t, const entry *e) {
  if (e->ch != NULL) {
    atomic_store(&e->ch->refs, 1); /* the task never got its reference */
    map_chunk_put(m, e->ch);
  } else if (t->arg_dtor != NULL) {
    t->arg_dtor(t->arg); /* the task never took the copy */
  }
}

/* A submission failed: report it at this position, after what is
 * already in flight. */
static void map_submit_failed(cf_map *m, int rc) {
  m->input_done = true;
  m->input_err = rc;
  free(m->input_msg); /* (an input failure after it is not reached) */
  m->input_msg = NULL;
  m->submit_failed = true;
}

#define REFILL_BATCH 32

/* What a full bounded queue refused while other tasks were in flight. */
struct held {
  cf_task tasks[REFILL_BATCH];
  chunk *chs[REFILL_BATCH];
  size_t n;
};

static void map_drop_held(cf_map *m) {
  struct held *h = m->held;
  for (size_t i = 0; h != NULL && i < h->n; i++) {
    entry e = {NULL, h->chs[i]};
    map_unsubmitted(m, &h->tasks[i], &e);
  }
  free(h);
  m->held = NULL;
}

/* Submits tasks[0..n) (their chunks in chs, if chunked) in a batch and
 * puts what went into the ring. A full bounded queue is waited for (up
 * to the map's deadline) only while nothing is in flight: with a task in
 * flight the consumer has a result to take meanwhile, so what the queue
 * refuses then is held, in order, for the next refill (cf_executor_map
 * used to block until its whole look-ahead was queued). Returns true if
 * all went. Any other refusal, or one after waiting, ends the input
 * (map_submit_failed). */
static bool map_push(cf_map *m, const cf_task *tasks, chunk *const *chs,
                     size_t n) {
  cf_future *fs[REFILL_BATCH];
  size_t done = 0;
  /* All at once without waiting (an unbounded queue never waits); */
  int rc = cf__executor_submit_batch(m->ex, tasks, n, cf_now_ns(), fs, &done);
  bool polled = true;
  if (rc == CF_EAGAIN && done == 0 && m->count == 0) {
    /* full, and nothing in flight: the first waits for room, */
    polled = false;
    rc = cf__executor_submit_batch(m->ex, tasks, 1, m->deadline, fs, &done);
    if (rc == 0 && done < n) { /* then the rest as before */
      polled = true;
      size_t more = 0;
      rc = cf__executor_submit_batch(m->ex, tasks + 1, n - 1, cf_now_ns(),
                                     fs + 1, &more);
      done += more;
    }
  }
  size_t at = m->head + m->count;
  for (size_t i = 0; i < done; i++, at++) {
    if (at >= m->capacity)
      at -= m->capacity;
    m->ring[at] = (entry){fs[i], m->chunked ? chs[i] : NULL};
  }
  m->count += done;
  if (done == n)
    return true;
  if (rc == CF_EAGAIN && polled) {
    struct held *h = m->held;
    if (h == NULL && (h = m->held = cf__calloc(1, sizeof *h)) == NULL) {
      rc = CF_ENOMEM;
    } else { /* (tasks may be h->tasks itself: memmove) */
      memmove(h->tasks, tasks + done, (n - done) * sizeof *tasks);
      if (m->chunked)
        memmove(h->chs, chs + done, (n - done) * sizeof *chs);
      h->n = n - done;
      return false;
    }
  }
  for (size_t i = done; i < n; i++) { /* tasks never submitted */
    entry e = {NULL, m->chunked ? chs[i] : NULL};
    map_unsubmitted(m, &tasks[i], &e);
  }
  if (m->held != NULL)
    m->held->n = 0; /* (their tasks were given back just now, if these) */
  map_submit_failed(m, rc != 0 ? rc : CF_EAGAIN);
  return false;
}

/* Tops the window up. Several free places: the tasks go in batches
 * (through the backend's submit_batch: one queue lock each on an unbounded
 * thread pool), so that the consumer and the workers do not hand the
 * lock back and forth once per item; and so that a pool whose workers
 * went idle gets several tasks at once: the submit wakes one worker,
 * which takes one and, seeing work left, wakes another, and so on.
 * Submitted one by one, chunks reached an idle pool one at a time: each
 * submit woke the worker parked last, which the kernel may run on the
 * consumer's CPU; it ran the chunk while the consumer waited for its CPU
 * back, and parked again before the next submit, while the other workers
 * slept on (bench/NOTES.md section 32). The first window goes as one
 * batch: in batches of two, the first map after a rest was slow again in
 * a third of the runs (section 32). The cost: a slow input iterator
 * delays the first task's start by the reads of the rest of the window
 * (which cf_executor_map makes before it returns either way). */
static void map_refill(cf_map *m) {
  if (m->held != NULL && m->held->n > 0) {
    struct held *h = m->held;
    if (!map_push(m, h->tasks, h->chs, h->n))
      return; /* still full (or failed) */
    h->n = 0;
  }
  while (!m->input_done && m->count < m->window) {
    cf_task tasks[REFILL_BATCH];
    chunk *chs[REFILL_BATCH]; /* each task's chunk (chunked maps only) */
    size_t n = 0, want = m->window - m->count;
    if (want > REFILL_BATCH)
      want = REFILL_BATCH;
    if (!m->chunked) { /* (the consumer's per-item path: kept short) */
      while (n < want && map_next_item(m, &tasks[n]))
        n++;
    } else {
      entry e;
      while (n < want && map_next_task(m, &tasks[n], &e))
        chs[n++] = e.ch;
    }
    if (n == 0 || !map_push(m, tasks, chs, n))
      return;
  }
}

/* Whether to top the window up now. Chunks: once two places are free, or
 * fewer than two chunks are in flight (so that one is always computed
 * ahead of the one being yielded, whatever the window), so that a
 * refill reaching a pool whose workers went idle is a batch, whose taker
 * wakes a second worker (see map_refill). One task per item: in bursts,
 * once a quarter of the window is free (or nothing is in flight): a
 * burst goes to the queue under one lock and a worker takes it as a
 * batch. */
static bool map_wants_refill(const cf_map *m) {
  if (!m->chunked) /* (a fixed window: count never exceeds it) */
    return m->count == 0 || 4 * (m->window - m->count) >= m->window;
  /* An adaptive window may shrink below count. */
  return m->count < m->window && (m->count < 2 || m->window - m->count >= 2);
}

int cf_executor_map(cf_executor *ex, cf_task_fn fn, cf_iter_fn next,
                    void *state, const cf_map_opts *opts, cf_map **out) {
  if (out != NULL)
    *out = NULL;
  int64_t workers = cf_executor_get_max_workers(ex);
  if (workers < 0)
    return (int)workers;
  cf_map_opts o = {0};
  if (opts != NULL)
    o = *opts;
  if (out == NULL || fn == NULL || next == NULL || o.chunksize < 0 ||
      o.prefetch < 0 || o.timeout_ns < 0 ||
      (!o.has_timeout && o.timeout_ns != 0) ||
      (o.item_size > 0 && next == cf_range_iter_next)) /* ints, not bytes */
    return CF_EINVAL;
  if (o.chunk_fn != NULL) { /* a runner of this fn's items, not another's */
    cf__map_chunk probe = {.probe = true};
    if (o.chunk_fn(&probe) != 0 || probe.fn != fn)
      return CF_EINVAL;
  }
  /* Chunks in flight: four per worker, at least 8. With two per worker
   * the consumer outran the window and waited for a worker's wake-up at
   * every chunk (bench/NOTES.md section 10: 15 against 5 ns/item). */
  int64_t min_window = workers > 2 ? 4 * workers : 8;
  if (o.prefetch == 0) {
    /* Enough single tasks to amortise each worker's queue round trip;
     * chunks are long tasks, so a few per worker keep every worker busy
     * while the map's buffers stay few and get reused. */
    if (o.chunksize > 1)
      o.prefetch = min_window;
    else
      o.prefetch = workers > 16 ? 4 * workers : 64;
  }
  cf_map *m = cf__calloc(1, sizeof *m);
  if (m == NULL)
    return CF_ENOMEM;
  m->ring = cf__calloc((size_t)o.prefetch, sizeof *m->ring);
  if (m->ring == NULL) {
    free(m);
    return CF_ENOMEM;
  }
  m->ex = ex;
  m->fn = fn;
  m->chunk_fn = o.chunk_fn;
  m->next = next;
  m->state = state;
  m->name = o.name;
  m->item_size = o.item_size;
  m->adaptive = o.chunksize == 0;
  m->chunked = o.chunksize != 1;
  m->chunksize = (size_t)(o.chunksize > 1 ? o.chunksize : 1);
  m->capacity = (size_t)o.prefetch;
  m->min_window = (size_t)(min_window < o.prefetch ? min_window : o.prefetch);
  map_set_window(m);
  m->deadline = o.has_timeout ? cf_deadline_after(o.timeout_ns) : CF_FOREVER;
  map_refill(m);
  /* If the very first submission failed, report it from this call, like
   * Python's map(). Input iterator errors and later failures are reported
   * by cf_map_next at their position. */
  int rc = m->input_err;
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
    __builtin_prefetch(m->ring[(m->head + i) % m->capacity].f);
  int rc = cf_future_wait_until(e->f, m->deadline);
  if (rc == CF_ETIMEDOUT)
    return map_fail(m, CF_ETIMEDOUT, "map: timed out waiting for a result");
  if (rc != 0)
    return map_fail(m, rc, NULL);
  bool last;
  if (e->ch == NULL) {
    cf_error err = cf_future_get_error(e->f);
    if (err.code != 0)
      return map_fail(m, err.code, err.message);
    cf__future_take_value(e->f, out);
    last = true;
  } else {
    chunk *ch = e->ch;
    if (cf_future_cancelled(e->f))
      return map_fail(m, CF_ECANCELED, NULL);
    if (!ch->measured)
      map_adapt(m, ch);
    if (ch->next >= ch->c.nok) {
      if (ch->c.err != 0)
        return map_fail(m, ch->c.err, ch->c.errmsg);
      /* No item failed: the chunk's task never ran its items (it was
       * cancelled or failed on its own); report the future's error. */
      cf_error err = cf_future_get_error(e->f);
      return map_fail(m, err.code != 0 ? err.code : CF_ETASK, err.message);
    }
    chunk_result(ch, ch->next++, out);
    map_set_ready(m, ch);
    last = ch->next == ch->c.n;
  }
  if (last) {
    map_drop_entry(m, e);
    m->head = (m->head + 1) % m->capacity;
    m->count--;
  }
  return 1;
}

int cf__map_next_slow(cf_map *m, cf_value *out) {
  if (m == NULL || out == NULL)
    return CF_EINVAL;
  map_sync_cursor(m);
  /* Fast path (full results; plain ones are handed out inline): more
   * results of a chunk already checked. The chunk's last result takes the
   * slow path, which drops the chunk and refills. */
  chunk *ch = m->ready;
  if (ch != NULL && ch->next + 1 < ch->c.nok) {
    chunk_result(ch, ch->next++, out);
    return 1;
  }
  memset(out, 0, sizeof *out);
  if (m->err != 0)
    return m->err;
  if (map_wants_refill(m))
    map_refill(m);
  if (m->count == 0) {
    if (m->input_err < 0)
      return map_fail(m, m->input_err,
                      m->input_msg != NULL        ? m->input_msg
                      : m->input_err == CF_ENOMEM ? "map: out of memory"
                                                  : NULL);
    return 0;
  }
  int rc = map_yield_head(m, out);
  if (rc == 1 && map_wants_refill(m))
    map_refill(m);
  return rc;
}

cf_error cf_map_get_error(const cf_map *m) {
  cf_error e = {0, ""};
  if (m != NULL && m->err != 0) {
    e.code = m->err;
    e.message = m->errmsg != NULL ? m->errmsg : cf_strerror(m->err);
  }
  return e;
}

int cf_map_describe(const cf_map *m, char *buf, size_t size) {
  if (m == NULL || (buf == NULL && size > 0))
    return CF_EINVAL;
  return snprintf(buf, size, "<cf_map iterator at %p>", (const void *)m);
}

void cf_map_free(cf_map *m) {
  if (m == NULL)
    return;
  map_sync_cursor(m);
  map_drop_all(m);
  while (m->spare != NULL) {
    chunk *ch = m->spare;
    m->spare = ch->spare_next;
    chunk_free(ch);
  }
  free(m->errmsg);
  free(m->input_msg);
  free(m->ring);
  free(m);
}
