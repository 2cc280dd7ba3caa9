/*
 * loop.c - the event loop (on libuv) and its coroutine tasks.
 *
 * Data flow. Everything that is to run on the loop is a node (rnode) in
 * one FIFO, touched only by the loop's thread: a callback (cf_loop_call),
 * a task to start or to resume, a routed done callback. Other threads
 * push nodes onto a lock-free stack (`remote`) and wake the loop through
 * a uv_async_t; the loop moves them, in push order, into the FIFO. Timers
 * (call_later, sleeps, wait deadlines) are ordered by (deadline,
 * sequence) on cf_now_ns()'s clock, in a few sorted lists (runs) and a
 * binary heap: a timer goes to the tail of the first run whose tail is
 * due no later than it (same-length sleeps and timeouts arrive in order,
 * and cost O(1) to add, cancel and fire; more than one run, so that one
 * far-off timeout does not send every shorter timer after it to the
 * heap), else to the heap; the earliest is the earliest of the runs'
 * heads and the heap's root. One uv_timer_t wakes the loop for it. libuv
 * polls; the driver (drive) alternates: due timers, the FIFO (up to a
 * budget), then uv_run, blocking only when the FIFO is empty.
 *
 * A task is a future of this executor with an ltask in its room (one
 * allocation). It starts from the FIFO (claim, take a stack, switch in),
 * runs until it waits, and is resumed from the FIFO by whoever ends the
 * wait. Waits use one protocol: the task sets `armed`, registers what
 * may end the wait (a listener on a future, a timer, a permit), and
 * suspends; every waker (a completion on any thread, a timer, a
 * cancellation, hook_wake) races to CAS armed 1 -> 0, and only the winner
 * writes the reason and posts the task, exactly once. One exception: a
 * one-future wait ended by a completion on the loop's own thread clears
 * armed with a plain store (task_on_done), as every other waker of such a
 * wait runs on this thread too. The task then detaches what it registered
 * (unlisten waits for a notify in progress).
 *
 * Cancellation of a started task sets cancel_req and tries to end its
 * current wait; a wait that starts with cancel_req set ends at once. The
 * task consumes the request when it is delivered (CF_ECANCELED from the
 * wait), so it is delivered once.
 *
 * Threads: the FIFO, the timers, the task list, the stack cache and every
 * ltask field not marked atomic belong to the loop's thread. The owner
 * changes only while the loop is not running (running is claimed by
 * CAS, which orders the hand-over).
 */
#define _GNU_SOURCE
#include "cf/loop.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common.h"
#include "coro.h"
#include "executor_int.h"
#include "fault.h"
#include "future_int.h"
#include "loop_int.h"
#include "park.h"

enum { KIND_TASK = 1, KIND_THREAD = 2 };
enum { R_NONE, R_DONE, R_TIMEOUT, R_CANCEL, R_SIGNAL };
enum { BUDGET = 4096 };     /* nodes run between two polls */
enum { DIRECT_MAX = 256 };  /* task-to-task switches in a row */
#define SHUTDOWN_CANCEL_RUNNING (1u << 8) /* internal: cf_loop_free */

typedef struct rnode rnode;
struct rnode {
  rnode *next;
  void (*run)(rnode *n);
};

/* A timer is in a run (next != NULL: prev and next link it), in the
 * heap (next == NULL, idx its position) or not queued (next == NULL,
 * idx == NOT_QUEUED; timer_init). */
typedef struct ltimer ltimer;
struct ltimer {
  int64_t due;
  uint64_t seq;
  union {
    size_t idx;
    ltimer *prev;
  };
  ltimer *next;
  void (*fire)(ltimer *t);
};
#define NOT_QUEUED SIZE_MAX
enum { NRUNS = 3 }; /* sorted lists of timers beside the heap */

static inline void timer_init(ltimer *t, void (*fire)(ltimer *t)) {
  t->idx = NOT_QUEUED;
  t->next = NULL;
  t->fire = fire;
}

static inline bool timer_queued(const ltimer *t) {
  return t->next != NULL || t->idx != NOT_QUEUED;
}

struct ltask {
  int kind;   /* KIND_TASK: first, tells tokens apart */
  int reason; /* R_*: why the wait ended, written by the winner */
  cf_future *f;
  cf_loop *loop;
  rnode node; /* start, then resume */
  cf__ctx ctx;
  union {
    cf__stack stack; /* a task with a stack of its own */
    struct {         /* a task on the shared stack (t->shared) */
      /* Its frames while evicted: the part nearest the top in its room
       * inline (inline_save, INLINE_SAVE bytes), any more below that in
       * `saved` (saved_cap bytes, on the heap). */
      char *saved;
      uint32_t saved_len, saved_cap; /* a shared stack is < 4 GiB */
      /* While the task runs inside generators: the outermost one's
       * caller context, whose saved stack pointer is the task's lowest
       * on the shared stack (the task's own is on a generator's). */
      cf__ctx *gen_caller;
    };
  };
  cf__listener lis; /* waiting on one future */
  ltimer timer;     /* a wait's deadline, a sleep */
  _Atomic uint32_t armed;
  _Atomic uint32_t permit; /* hook_wake before or during a sleep */
  uint32_t soft_pending;   /* cancellations owed to scopes and groups */
  int raise_code;
  uint32_t cancel_gen;       /* deliveries so far (wrapping) */
  uint32_t external_gen;     /* cancel_gen after the last one from outside */
  struct scope_impl *scopes; /* innermost open timeout scope */
  rnode cancel_node;         /* carries a foreign cancel to the loop */
  char *raise_msg;
  struct ltask *prev, *next;  /* the loop's list of tasks */
  _Atomic bool cancel_posted; /* a foreign cancel is on its way */
  bool cancel_req;            /* loop thread: a cancellation to deliver */
  bool last_external; /* the last one delivered included cancel_req */
  bool shared;        /* runs on the loop's shared stack (from submit) */
  bool exited;
};
typedef struct ltask ltask;

typedef struct thread_waiter {
  int kind; /* KIND_THREAD */
  _Atomic uint32_t permit;
} thread_waiter;

struct cf_loop_call {
  rnode node;
  ltimer timer;
  cf_loop *loop;
  cf_callback_fn fn;
  void *arg;
  _Atomic uint32_t refs;
  int state; /* CALL_*; loop thread */
};
enum { CALL_SCHEDULED, CALL_RAN, CALL_CANCELLED };

/* A done callback added on the loop's thread, to run there. */
typedef struct route {
  cf__listener lis;
  rnode node;
  cf_loop *loop;
  cf_future *f;
  cf_done_fn fn;
  void *arg;
  _Atomic bool fired;
  struct route *prev, *next;
} route;

struct cf_loop {
  cf_executor base; /* first: the loop is an executor */
  uv_loop_t uv;
  uv_async_t async;
  uv_timer_t utimer;
  cf__ctx sched; /* the loop thread's own context while running */
  const char *name;
  size_t stack_size, stack_cache_max;
  char *read_scratch; /* streams read into it, then keep what came */

  /* The loop's thread only. */
  rnode *rhead, **rtail;
  size_t rlen;
  ltimer runs[NRUNS]; /* the runs' sentinels: runs[r].next a head */
  struct hent *heap; /* the other timers, keys inline */
  size_t nheap, capheap;
  uint64_t seq;
  ltask *tasks;
  route *routes;
  cf__stack *stacks;
  size_t nstacks;
  ltask *last;      /* the task that switched to the scheduler */
  bool shared_mode;   /* cf_loop_opts.shared_stack */
  cf__stack shared;   /* the shared stack, mapped at the first task */
  ltask *shared_owner; /* the task whose frames are on it now, or NULL */
  int direct_left;  /* task-to-task switches left before the scheduler */
  cf_wait_hook prev_hook;
  cf__cb_router prev_router;

  /* Any thread. */
  _Atomic(rnode *) remote;
  _Atomic uintptr_t owner; /* thread id of the loop's thread */
  _Atomic int running;
  _Atomic bool stop_req;
  _Atomic bool closing;
  _Atomic size_t live; /* tasks submitted and not ended */
  _Atomic uint32_t cancel_flags; /* cancel-all requests for the loop */
  _Atomic uint32_t posting; /* foreign pushes between their CAS and wake */
  rnode cancel_node;
  _Atomic bool cancel_posted;
  thread_waiter tw;
  pthread_mutex_t mu; /* with cv: shutdown waits from other threads */
  pthread_cond_t cv;
  _Atomic uint64_t submitted, completed, failed, cancelled, started, ended,
      callbacks_failed;
  cf__cb_sink sink;
};

static _Thread_local cf_loop *tls_loop;   /* running on this thread */
static _Thread_local ltask *tls_task;     /* the task running now */
static _Thread_local char tid_anchor;

static uintptr_t self_id(void) { return (uintptr_t)&tid_anchor; }

static bool on_loop_thread(cf_loop *L) {
  return atomic_load_explicit(&L->owner, memory_order_relaxed) == self_id();
}

/* ---------------------------------------------------------------------- */
/* The FIFO and the remote stack                                          */

static void fifo_push(cf_loop *L, rnode *n) {
  n->next = NULL;
  *L->rtail = n;
  L->rtail = &n->next;
  L->rlen++;
}

static rnode *fifo_pop(cf_loop *L) {
  rnode *n = L->rhead;
  if (n != NULL) {
    L->rhead = n->next;
    if (L->rhead == NULL)
      L->rtail = &L->rhead;
    L->rlen--;
  }
  return n;
}

static void remote_push(cf_loop *L, rnode *n) {
  /* Counted until the wake-up is sent: once the node is visible the loop
   * may run it, end its last task and be freed while this thread is still
   * on its way to uv_async_send; the destroy waits for the count. */
  atomic_fetch_add_explicit(&L->posting, 1, memory_order_seq_cst);
  rnode *h = atomic_load_explicit(&L->remote, memory_order_relaxed);
  do
    n->next = h;
  while (!atomic_compare_exchange_weak_explicit(
      &L->remote, &h, n, memory_order_release, memory_order_relaxed));
  if (cf__fault(CF__FAULT_POST_PAUSE))
    cf__fault_pause(); /* widens the window the count closes */
  /* A push onto a non-empty stack needs no wake-up: the one that made it
   * non-empty sent it, and the drain that follows takes this node too. */
  if (h == NULL)
    uv_async_send(&L->async);
  atomic_fetch_sub_explicit(&L->posting, 1, memory_order_release);
}

static void drain_remote(cf_loop *L) {
  if (atomic_load_explicit(&L->remote, memory_order_relaxed) == NULL)
    return;
  rnode *n = atomic_exchange_explicit(&L->remote, NULL, memory_order_acquire);
  rnode *rev = NULL;
  while (n != NULL) { /* newest first: reverse into push order */
    rnode *next = n->next;
    n->next = rev;
    rev = n;
    n = next;
  }
  while (rev != NULL) {
    rnode *next = rev->next;
    fifo_push(L, rev);
    rev = next;
  }
}

/* Schedules n on L from any thread. */
static void post(cf_loop *L, rnode *n) {
  if (tls_loop == L)
    fifo_push(L, n);
  else
    remote_push(L, n);
}

/* ---------------------------------------------------------------------- */
/* Timers                                                                 */

/* A heap entry carries its keys, so that sifting compares within the
 * array instead of chasing each timer (100,000 sleepers: 16% of the time
 * went to those misses). */
typedef struct hent {
  int64_t due;
  uint64_t seq;
  ltimer *t;
} hent;

/* The timers' order: (deadline, sequence). */
static inline bool key_before(int64_t due_a, uint64_t seq_a, int64_t due_b,
                              uint64_t seq_b) {
  return due_a < due_b || (due_a == due_b && seq_a < seq_b);
}

static bool hent_before(const hent *a, const hent *b) {
  return key_before(a->due, a->seq, b->due, b->seq);
}

static void heap_set(cf_loop *L, size_t i, hent e) {
  L->heap[i] = e;
  e.t->idx = i;
}

static void sift_up(cf_loop *L, size_t i) {
  hent e = L->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!hent_before(&e, &L->heap[parent]))
      break;
    heap_set(L, i, L->heap[parent]);
    i = parent;
  }
  heap_set(L, i, e);
}

static void sift_down(cf_loop *L, size_t i) {
  hent e = L->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= L->nheap)
      break;
    if (c + 1 < L->nheap && hent_before(&L->heap[c + 1], &L->heap[c]))
      c++;
    if (!hent_before(&L->heap[c], &e))
      break;
    heap_set(L, i, L->heap[c]);
    i = c;
  }
  heap_set(L, i, e);
}

static int timer_add(cf_loop *L, ltimer *t, int64_t due) {
  t->due = due;
  for (ltimer *run = L->runs; run < L->runs + NRUNS; run++) {
    ltimer *tail = run->prev;
    if (tail == run || due >= tail->due) { /* in this run's order */
      t->seq = L->seq++;
      t->prev = tail;
      t->next = run;
      tail->next = t;
      run->prev = t;
      return 0;
    }
  }
  if (L->nheap == L->capheap) {
    size_t cap = L->capheap != 0 ? 2 * L->capheap : 64;
    hent *h = cf__realloc(L->heap, cap, sizeof *h);
    if (h == NULL)
      return CF_ENOMEM;
    L->heap = h;
    L->capheap = cap;
  }
  t->seq = L->seq++;
  t->next = NULL;
  hent e = {due, t->seq, t};
  heap_set(L, L->nheap++, e);
  sift_up(L, t->idx);
  return 0;
}

static void timer_del(cf_loop *L, ltimer *t) {
  if (t->next != NULL) { /* in a run */
    t->prev->next = t->next;
    t->next->prev = t->prev;
    timer_init(t, t->fire);
    return;
  }
  size_t i = t->idx;
  if (i == NOT_QUEUED)
    return;
  t->idx = NOT_QUEUED;
  hent last = L->heap[--L->nheap];
  if (i == L->nheap)
    return;
  heap_set(L, i, last);
  if (i > 0 && hent_before(&last, &L->heap[(i - 1) / 2]))
    sift_up(L, i);
  else
    sift_down(L, i);
}

/* The earliest timer (a run's head or the heap's root), or NULL. */
static ltimer *timer_first(cf_loop *L) {
  ltimer *best = NULL;
  for (ltimer *run = L->runs; run < L->runs + NRUNS; run++) {
    ltimer *h = run->next;
    if (h != run &&
        (best == NULL || key_before(h->due, h->seq, best->due, best->seq)))
      best = h;
  }
  if (L->nheap == 0)
    return best;
  const hent *h = &L->heap[0];
  if (best == NULL || key_before(h->due, h->seq, best->due, best->seq))
    return h->t;
  return best;
}

static void run_due_timers(cf_loop *L) {
  ltimer *t = timer_first(L);
  if (t == NULL)
    return;
  int64_t now = cf_now_ns();
  for (; t != NULL && t->due <= now; t = timer_first(L)) {
    timer_del(L, t);
    t->fire(t);
  }
}

/* ---------------------------------------------------------------------- */
/* Callbacks                                                              */

static void call_unref(cf_loop_call *h) {
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
    free(h);
}

static void call_run(rnode *n) {
  cf_loop_call *h = cf__container_of(n, cf_loop_call, node);
  if (h->state == CALL_SCHEDULED) {
    h->state = CALL_RAN;
    h->fn(h->arg);
  }
  call_unref(h);
}

static void call_fire(ltimer *t) {
  cf_loop_call *h = cf__container_of(t, cf_loop_call, timer);
  fifo_push(h->loop, &h->node);
}

static cf_loop_call *call_new(cf_loop *L, cf_callback_fn fn, void *arg,
                              bool handle) {
  cf_loop_call *h = cf__malloc(sizeof *h);
  if (h == NULL)
    return NULL;
  memset(h, 0, sizeof *h);
  h->node.run = call_run;
  timer_init(&h->timer, call_fire);
  h->loop = L;
  h->fn = fn;
  h->arg = arg;
  atomic_init(&h->refs, handle ? 2u : 1u);
  h->state = CALL_SCHEDULED;
  return h;
}

static int check_loop(cf_loop *L) {
  if (L == NULL)
    return CF_EINVAL;
  if (atomic_load_explicit(&L->base.magic, memory_order_acquire) !=
      CF__EXECUTOR_LIVE)
    return CF_EBADF;
  return 0;
}

static int schedule(cf_loop *L, int64_t due, bool timed, cf_callback_fn fn,
                    void *arg, cf_loop_call **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check_loop(L);
  if (rc != 0)
    return rc;
  if (fn == NULL)
    return CF_EINVAL;
  if (!on_loop_thread(L))
    return CF_EWRONGTHREAD;
  cf_loop_call *h = call_new(L, fn, arg, out != NULL);
  if (h == NULL)
    return CF_ENOMEM;
  if (timed) {
    if (timer_add(L, &h->timer, due) != 0) {
      free(h);
      return CF_ENOMEM;
    }
  } else {
    fifo_push(L, &h->node);
  }
  if (out != NULL)
    *out = h;
  return 0;
}

int cf_loop_call_soon(cf_loop *loop, cf_callback_fn fn, void *arg,
                      cf_loop_call **out) {
  return schedule(loop, 0, false, fn, arg, out);
}

int cf_loop_call_at(cf_loop *loop, int64_t deadline_ns, cf_callback_fn fn,
                    void *arg, cf_loop_call **out) {
  return schedule(loop, deadline_ns, true, fn, arg, out);
}

int cf_loop_call_later(cf_loop *loop, int64_t delay_ns, cf_callback_fn fn,
                       void *arg, cf_loop_call **out) {
  if (delay_ns < 0) {
    if (out != NULL)
      *out = NULL;
    return CF_EINVAL;
  }
  return schedule(loop, cf_deadline_after(delay_ns), true, fn, arg, out);
}

int cf_loop_call_soon_threadsafe(cf_loop *loop, cf_callback_fn fn,
                                 void *arg) {
  if (loop == NULL || fn == NULL)
    return CF_EINVAL;
  cf__pin pin;
  int rc = cf__executor_pin(&loop->base, &pin);
  if (rc != 0)
    return rc == CF_EBADF ? CF_ESHUTDOWN : rc;
  cf_loop_call *h = call_new(loop, fn, arg, false);
  if (h == NULL) {
    cf__executor_unpin(&pin);
    return CF_ENOMEM;
  }
  post(loop, &h->node);
  cf__executor_unpin(&pin);
  return 0;
}

int cf_loop_call_cancel(cf_loop_call *h) {
  if (h == NULL)
    return CF_EINVAL;
  if (!on_loop_thread(h->loop))
    return CF_EWRONGTHREAD;
  if (h->state == CALL_CANCELLED)
    return 0; /* again: as Python's Handle.cancel, no error */
  if (h->state != CALL_SCHEDULED)
    return CF_EBUSY;
  h->state = CALL_CANCELLED;
  if (timer_queued(&h->timer)) {
    timer_del(h->loop, &h->timer);
    call_unref(h); /* the loop's reference: it will never be queued */
  }
  /* A call in the FIFO stays there and is dropped when reached. */
  return 0;
}

void cf_loop_call_release(cf_loop_call *h) {
  if (h != NULL)
    call_unref(h);
}

/* ---------------------------------------------------------------------- */
/* Stacks                                                                 */

static int stack_get(cf_loop *L, cf__stack *s) {
  if (L->nstacks > 0) {
    *s = L->stacks[--L->nstacks];
    return 0;
  }
  return cf__stack_alloc(s, L->stack_size);
}

static void stack_put(cf_loop *L, cf__stack *s) {
  if (L->nstacks < L->stack_cache_max)
    L->stacks[L->nstacks++] = *s;
  else
    cf__stack_free(s);
  s->lo = NULL;
}

/* ---------------------------------------------------------------------- */
/* Tasks                                                                  */

static ltask *task_of(cf_future *f) { return cf__future_room(f); }

/* A shared task's room for its saved frames, right after its ltask in
 * the future's allocation: the rest of the future cache's 832-byte block
 * (a sleeping task saves about 350 bytes, a server connection waiting for
 * input about 460). The part of the frames nearest the stack's top goes
 * here and only what is deeper goes to the heap, so the room is never
 * wasted: a task with deeper frames allocates just the excess. */
enum { TASK_BLOCK = 832 };
#ifndef CF_CORO_UCONTEXT
#define INLINE_SAVE (TASK_BLOCK - CF__FUTURE_SIZE - sizeof(ltask))
_Static_assert(sizeof(ltask) + 480 <= TASK_BLOCK - CF__FUTURE_SIZE,
               "a task's inline room for saved frames shrank");
_Static_assert((int)TASK_BLOCK == (int)CF__FCACHE_TASK_BLOCK,
               "a shared task fills the future cache's largest class");
#else
/* A ucontext_t makes the task larger than the block, and the shared stack
 * (the only user of this room) needs the hand-written switch: unused. */
#define INLINE_SAVE ((size_t)384)
#endif
static char *inline_save(ltask *t) { return (char *)(t + 1); }

static void list_add(cf_loop *L, ltask *t) {
  t->prev = NULL;
  t->next = L->tasks;
  if (L->tasks != NULL)
    L->tasks->prev = t;
  L->tasks = t;
}

static void list_del(cf_loop *L, ltask *t) {
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    L->tasks = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

/* The last live task is gone while the loop closes: wakes a shutdown
 * waiting on another thread (L->cv). */
static void wake_shutdown_waiters(cf_loop *L) {
  pthread_mutex_lock(&L->mu);
  pthread_cond_broadcast(&L->cv);
  pthread_mutex_unlock(&L->mu);
}

/* A task has ended (or never started): the loop lets go of it. */
static void task_gone(cf_loop *L, ltask *t) {
  list_del(L, t);
  cf_future *f = t->f;
  /* seq_cst with the shutdown's store of closing and load of live: one
   * of the two sees the other (a Dekker pair). */
  if (atomic_fetch_sub_explicit(&L->live, 1, memory_order_seq_cst) == 1 &&
      atomic_load_explicit(&L->closing, memory_order_seq_cst))
    wake_shutdown_waiters(L);
  cf_future_unref(f); /* the loop's reference; t may be gone now */
}

/* The task's function returned: publish its outcome. */
static void scopes_abandon(ltask *t);

static void task_end(cf_loop *L, ltask *t) {
  atomic_fetch_add_explicit(&L->ended, 1, memory_order_relaxed);
  scopes_abandon(t); /* scopes it never exited: their timers go */
  cf__ctx_destroy(&t->ctx);
  if (t->shared) {
    if (L->shared_owner == t)
      L->shared_owner = NULL;
    free(t->saved);
    t->saved = NULL;
  } else {
    stack_put(L, &t->stack);
  }
  int err = t->f->err; /* the task's code, written in place */
  atomic_fetch_add_explicit(err == CF_ECANCELED ? &L->cancelled
                            : err == 0          ? &L->completed
                                                : &L->failed,
                            1, memory_order_relaxed);
  cf__future_finish_self(t->f, &L->sink);
  task_gone(L, t);
}

/* Shared stacks. The owner's frames are on the shared stack; another
 * shared task gets it by saving the owner's used part, [saved sp, top),
 * (the top INLINE_SAVE bytes to the owner's inline room, any deeper rest
 * to its heap buffer) and copying its own back. Always done from the
 * scheduler's stack. */
static void shared_evict(cf_loop *L) {
  ltask *o = L->shared_owner;
  if (o == NULL)
    return;
  char *top = cf__stack_top(&L->shared);
  char *sp = cf__ctx_saved_sp(&o->ctx);
  /* A task suspended inside a generator saved a stack pointer on the
   * generator's stack: its frames here end where it entered the
   * outermost generator; all of the shared stack is kept only where
   * that is not known (the ucontext switch). */
  if (sp == NULL || sp < L->shared.lo || sp > top) {
    sp = o->gen_caller != NULL ? cf__ctx_saved_sp(o->gen_caller) : NULL;
    if (sp == NULL || sp < L->shared.lo || sp > top)
      sp = L->shared.lo;
  }
  size_t len = (size_t)(top - sp);
  size_t in = len < INLINE_SAVE ? len : INLINE_SAVE; /* the top part */
  size_t deep = len - in;                           /* the rest, [sp, +deep) */
  if (deep > o->saved_cap) {
    char *b = cf__malloc(deep);
    if (b == NULL) {
      /* Nothing else can run on the stack without destroying the owner;
       * there is no way on but to stop, loudly. */
      fprintf(stderr, "cfutures: no memory to save a task's stack (%zu "
                      "bytes beyond its %zu inline); aborting\n",
              deep, (size_t)INLINE_SAVE);
      abort();
    }
    free(o->saved);
    o->saved = b;
    o->saved_cap = (uint32_t)deep;
  }
  cf__stack_copy_out(inline_save(o), top - in, in);
  if (deep > 0)
    cf__stack_copy_out(o->saved, sp, deep);
  o->saved_len = (uint32_t)len;
  L->shared_owner = NULL;
}

/* The most of a task's deep frames kept saved between evictions. */
#define SAVED_KEEP ((uint32_t)64 << 10)

/* Puts t's frames back on the shared stack (from the scheduler). */
static void shared_take(cf_loop *L, ltask *t) {
  if (L->shared_owner == t)
    return;
  shared_evict(L);
  size_t len = t->saved_len;
  if (len > 0) {
    char *top = cf__stack_top(&L->shared);
    size_t in = len < INLINE_SAVE ? len : INLINE_SAVE;
    cf__stack_copy_in(top - in, inline_save(t), in);
    if (len > in)
      cf__stack_copy_in(top - len, t->saved, len - in);
    t->saved_len = 0;
    if (t->saved_cap > SAVED_KEEP) { /* a deep moment: not kept for life */
      free(t->saved);
      t->saved = NULL;
      t->saved_cap = 0;
    }
  }
  L->shared_owner = t;
}

/* Makes t the running task (before switching to it). */
static inline void task_enter(ltask *t) {
  tls_task = t;
  if (t->raise_code != 0 || t->raise_msg != NULL) {
    cf__raise_restore(t->raise_code, t->raise_msg);
    t->raise_code = 0;
    t->raise_msg = NULL;
  }
}

static void task_resume(rnode *n) {
  ltask *t = cf__container_of(n, ltask, node);
  cf_loop *L = t->loop;
  if (t->shared)
    shared_take(L, t);
  task_enter(t);
  L->direct_left = DIRECT_MAX;
  cf__ctx_switch(&L->sched, &t->ctx);
  /* Back from whichever task ran last (tasks switch to each other). */
  ltask *last = L->last;
  tls_task = NULL;
  if (last->exited)
    task_end(L, last);
}

static void task_entry(void *p) {
  ltask *t = p;
  cf__future_exec_self(t->f);
  t->exited = true;
  t->loop->last = t;
  cf__ctx_exit(&t->ctx, &t->loop->sched); /* its stack is freed there */
}

static void task_start(rnode *n) {
  ltask *t = cf__container_of(n, ltask, node);
  cf_loop *L = t->loop;
  list_add(L, t);
  if (!cf__future_claim(t->f)) { /* cancelled before it started */
    atomic_fetch_add_explicit(&L->cancelled, 1, memory_order_relaxed);
    task_gone(L, t);
    return;
  }
  atomic_fetch_add_explicit(&L->started, 1, memory_order_relaxed);
  int src = 0;
  if (t->shared) {
    if (L->shared.lo == NULL)
      src = cf__stack_alloc(&L->shared, L->stack_size);
  } else {
    src = stack_get(L, &t->stack);
  }
  if (src != 0) {
    cf__task_rec rec;
    cf__future_take_task(t->f, &rec);
    if (rec.arg_dtor != NULL)
      rec.arg_dtor(rec.arg);
    cf__outcome o = {
        .err = CF_ENOMEM,
        .msg = cf__asprintf(
            "no memory for a task stack of %zu bytes (or the process's "
            "limit of memory mappings, vm.max_map_count, is reached: each "
            "stack of its own takes two; tasks on the shared stack take "
            "none)",
            L->stack_size)};
    atomic_fetch_add_explicit(&L->ended, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&L->failed, 1, memory_order_relaxed);
    cf__future_finish(t->f, &o, &L->sink);
    task_gone(L, t);
    return;
  }
  if (t->shared) {
    shared_evict(L); /* the new frames start at the top */
    L->shared_owner = t;
    cf__ctx_make(&t->ctx, &L->shared, task_entry, t);
  } else {
    cf__ctx_make(&t->ctx, &t->stack, task_entry, t);
  }
  t->node.run = task_resume;
  task_resume(&t->node);
}

/* Suspends the running task t until someone posts it. When the next node
 * in the FIFO resumes a task, switches to that task directly (one switch
 * instead of two through the scheduler), at most DIRECT_MAX times in a
 * row, so that timers and I/O still get their turn. */
static void task_suspend(ltask *t) {
  cf_loop *L = t->loop;
  cf__raise_save(&t->raise_code, &t->raise_msg);
  rnode *n = L->rhead;
  ltask *u = n != NULL && n->run == task_resume
                  ? cf__container_of(n, ltask, node)
                  : NULL;
  /* Not to a shared task whose frames are saved away: putting them back
   * needs the scheduler's stack. */
  if (u != NULL && L->direct_left > 0 &&
      (!u->shared || L->shared_owner == u)) {
    L->direct_left--;
    fifo_pop(L);
    if (u == t) { /* it yielded and nothing else is ready */
      task_enter(t);
      return;
    }
    task_enter(u);
    cf__ctx_switch(&t->ctx, &u->ctx);
    return;
  }
  L->last = t;
  cf__ctx_switch(&t->ctx, &L->sched);
}

/* Ends t's current wait with `reason` if it is still armed: only the
 * winner posts the task. Any thread. */
static bool task_wake(ltask *t, int reason) {
  uint32_t one = 1;
  if (!atomic_compare_exchange_strong(&t->armed, &one, 0))
    return false;
  t->reason = reason;
  post(t->loop, &t->node);
  return true;
}

static void task_timer_fire(ltimer *tm) {
  task_wake(cf__container_of(tm, ltask, timer), R_TIMEOUT);
}

static void task_on_done(cf__listener *l, cf_future *f) {
  (void)f;
  ltask *t = cf__container_of(l, ltask, lis);
  if (tls_loop == t->loop) {
    /* Completed on the task's own loop thread: every other waker of a
     * one-future wait runs on this thread too (its timer; a cancellation,
     * which another thread posts here; hook_wake, the one waker that runs
     * on any thread, is only registered for cf_wait and as_completed,
     * never during a one-future wait), so there is no race to win and no
     * locked exchange to pay (a ping-pong switch pays one per hand-over). */
    if (atomic_load_explicit(&t->armed, memory_order_relaxed) == 0)
      return;
    atomic_store_explicit(&t->armed, 0, memory_order_relaxed);
    t->reason = R_DONE;
    fifo_push(t->loop, &t->node);
    return;
  }
  task_wake(t, R_DONE);
}

static inline bool cancel_owed(const ltask *t) {
  return t->cancel_req || t->soft_pending != 0;
}

/* A wait is returning CF_ECANCELED: every request owed is delivered. */
static void cancel_delivered(ltask *t) {
  t->last_external = t->cancel_req;
  if (t->cancel_req)
    t->external_gen = t->cancel_gen + 1u;
  t->cancel_req = false;
  t->soft_pending = 0;
  t->cancel_gen++;
}

/* The common part of every wait of a task, once armed and registered:
 * the deadline, a pending cancellation, the suspension. Returns the
 * reason the wait ended. task_block below takes the common case (no
 * deadline, nothing owed) without this frame. */
static __attribute__((noinline)) int task_block_slow(ltask *t,
                                                     int64_t deadline) {
  cf_loop *L = t->loop;
  bool timed = false;
  if (deadline != CF_FOREVER) {
    if (timer_add(L, &t->timer, deadline) != 0) {
      uint32_t one = 1;
      if (atomic_compare_exchange_strong(&t->armed, &one, 0))
        return R_NONE; /* no memory for the timer: CF_ENOMEM */
      task_suspend(t); /* someone else ended it already */
      return t->reason;
    }
    timed = true;
  }
  int reason;
  if (cancel_owed(t)) {
    uint32_t one = 1;
    if (atomic_compare_exchange_strong(&t->armed, &one, 0)) {
      reason = R_CANCEL;
    } else {
      task_suspend(t); /* consume the post of whoever won */
      reason = t->reason;
    }
  } else {
    task_suspend(t);
    reason = t->reason;
  }
  if (timed)
    timer_del(L, &t->timer);
  if (reason == R_CANCEL || (reason != R_NONE && cancel_owed(t))) {
    cancel_delivered(t);
    reason = R_CANCEL;
  }
  return reason;
}

/* Blocks task t until its wait ends. A cancellation that came after the
 * wait was ended by something else (a completion, the deadline) but
 * before the task resumed is delivered here, as Python raises
 * CancelledError at the await whose future was already done: a waiter
 * granted a permit then cancelled passes it on (sync.c), a sleep that
 * ended returns CF_ECANCELED. */
static inline int task_block(ltask *t, int64_t deadline) {
  if (deadline != CF_FOREVER || cancel_owed(t))
    return task_block_slow(t, deadline);
  task_suspend(t);
  int reason = t->reason;
  if (reason == R_CANCEL || CF__UNLIKELY(cancel_owed(t))) {
    cancel_delivered(t);
    reason = R_CANCEL;
  }
  return reason;
}

static int reason_code(int reason) {
  switch (reason) {
  case R_TIMEOUT:
    return CF_ETIMEDOUT;
  case R_CANCEL:
    return CF_ECANCELED;
  case R_NONE:
    return CF_ENOMEM;
  default:
    return 0;
  }
}

/* Waits in task t for f. */
static int task_wait_future(ltask *t, cf_future *f, int64_t deadline) {
  if (f == t->f)
    return CF_EDEADLK;
  /* A deadline already past is a poll (cf/time.h's 0): no await point,
   * nothing else runs, no cancellation delivered. */
  if (CF__UNLIKELY(deadline != CF_FOREVER) && deadline <= cf_now_ns())
    return cf_future_done(f) ? 0 : CF_ETIMEDOUT;
  /* Whoever may end this wait sees armed through the stripe lock that
   * listen takes (a completer), or runs on this thread (timers,
   * cancellation): no fence needed. */
  atomic_store_explicit(&t->armed, 1, memory_order_relaxed);
  t->lis.attached = false;
  t->lis.notify = task_on_done;
  if (cf__future_listen(f, &t->lis) == 1) {
    uint32_t one = 1;
    if (atomic_compare_exchange_strong(&t->armed, &one, 0))
      return 0; /* done already */
    task_suspend(t); /* a cancellation won meanwhile */
    if (t->reason == R_CANCEL)
      cancel_delivered(t);
    return reason_code(t->reason);
  }
  int reason = task_block(t, deadline);
  /* A completion detached the listener before it posted the task. */
  if (reason != R_DONE)
    cf__future_unlisten(f, &t->lis);
  return reason_code(reason);
}

/* ---------------------------------------------------------------------- */
/* The wait hook and the callback router                                  */

static int hook_wait(void *ctx, cf_future *f, int64_t deadline) {
  cf_loop *L = ctx;
  ltask *t = tls_task;
  if (t == NULL) {
    /* A callback on the loop's thread: only blocking is possible, and a
     * future this loop runs would never end. */
    if (f->owner == &L->base)
      return CF_EDEADLK;
    return cf_future_wait_blocking(f, deadline);
  }
  return task_wait_future(t, f, deadline);
}

static void *hook_waiter(void *ctx) {
  cf_loop *L = ctx;
  ltask *t = tls_task;
  return t != NULL ? (void *)t : (void *)&L->tw;
}

static int hook_sleep(void *ctx, void *token, cf_future *const *fs, size_t n,
                      int64_t deadline) {
  cf_loop *L = ctx;
  if (*(int *)token == KIND_THREAD) {
    for (size_t i = 0; i < n; i++)
      if (fs[i] != NULL && fs[i]->owner == &L->base && !cf_future_done(fs[i]))
        return CF_EDEADLK;
    thread_waiter *w = token;
    while (atomic_exchange(&w->permit, 0) == 0)
      if (cf__park_wait(&w->permit, 0, deadline) == CF_ETIMEDOUT &&
          atomic_exchange(&w->permit, 0) == 0)
        return CF_ETIMEDOUT;
    return 0;
  }
  ltask *t = token;
  for (size_t i = 0; i < n; i++)
    if (fs[i] == t->f)
      return CF_EDEADLK;
  if (CF__UNLIKELY(deadline != CF_FOREVER) && deadline <= cf_now_ns())
    return atomic_exchange(&t->permit, 0) != 0 ? 0 : CF_ETIMEDOUT; /* a poll */
  atomic_store(&t->armed, 1);
  if (atomic_exchange(&t->permit, 0) != 0) {
    uint32_t one = 1;
    if (atomic_compare_exchange_strong(&t->armed, &one, 0))
      return 0;
    task_suspend(t);
    if (t->reason == R_CANCEL)
      cancel_delivered(t);
    return reason_code(t->reason);
  }
  int reason = task_block(t, deadline);
  atomic_store(&t->permit, 0);
  return reason_code(reason);
}

static void hook_wake(void *token) {
  if (*(int *)token == KIND_THREAD) {
    thread_waiter *w = token;
    atomic_store(&w->permit, 1);
    cf__park_wake(&w->permit, 1);
    return;
  }
  ltask *t = token;
  atomic_store(&t->permit, 1);
  task_wake(t, R_SIGNAL);
}

static void route_run(rnode *n) {
  route *r = cf__container_of(n, route, node);
  cf_loop *L = r->loop;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    L->routes = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  int rc = r->fn(r->f, r->arg);
  if (rc != 0)
    cf__report_callback_error(&L->sink, r->f, rc);
  cf_future_unref(r->f);
  free(r);
}

static void route_notify(cf__listener *l, cf_future *f) {
  (void)f;
  route *r = cf__container_of(l, route, lis);
  atomic_store(&r->fired, true);
  post(r->loop, &r->node);
}

static int route_add(void *ctx, cf_future *f, cf_done_fn fn, void *arg) {
  cf_loop *L = ctx;
  route *r = cf__malloc(sizeof *r);
  if (r == NULL)
    return CF_ENOMEM;
  memset(r, 0, sizeof *r);
  r->lis.notify = route_notify;
  r->node.run = route_run;
  r->loop = L;
  r->f = cf_future_ref(f);
  r->fn = fn;
  r->arg = arg;
  r->next = L->routes;
  if (L->routes != NULL)
    L->routes->prev = r;
  L->routes = r;
  if (cf__future_listen(f, &r->lis) == 1) {
    atomic_store(&r->fired, true);
    fifo_push(L, &r->node);
  }
  return 0;
}

static void report_to_handler(void *ctx, cf_future *f, int rc) {
  (void)ctx;
  cf__report_callback_error(NULL, f, rc);
}

/* ---------------------------------------------------------------------- */
/* Running                                                                */

static void on_async(uv_async_t *a) { (void)a; }
/* The earliest deadline is due. libuv runs due timers before it polls:
 * stop it, or the poll that follows would block with no timer left. */
static void on_utimer(uv_timer_t *t) { uv_stop(t->loop); }

static int claim(cf_loop *L) {
  if (tls_loop != NULL)
    return CF_EBUSY;
  int zero = 0;
  if (!atomic_compare_exchange_strong(&L->running, &zero, 1))
    return CF_EBUSY;
  atomic_store_explicit(&L->owner, self_id(), memory_order_relaxed);
  cf__stack_guard_thread();
  cf__ctx_init_thread(&L->sched);
  tls_loop = L;
  cf_wait_hook hook = {.wait = hook_wait,
                       .ctx = L,
                       .waiter = hook_waiter,
                       .sleep = hook_sleep,
                       .wake = hook_wake};
  cf_wait_hook_swap(&hook, &L->prev_hook);
  cf__cb_router router = {.add = route_add, .ctx = L};
  cf__cb_router_swap(&router, &L->prev_router);
  return 0;
}

static void unclaim(cf_loop *L) {
  cf_wait_hook_swap(&L->prev_hook, NULL);
  cf__cb_router_swap(&L->prev_router, NULL);
  tls_loop = NULL;
  atomic_store(&L->running, 0);
}

static void cancel_all(cf_loop *L, unsigned flags);
static void cancel_node_of_task(rnode *n);

/* One turn, as asyncio's: the timers that are due, then the nodes that
 * were ready when the turn began (at most BUDGET); what they make ready
 * runs in the next turn, after a poll for I/O. */
static void run_ready(cf_loop *L) {
  drain_remote(L);
  run_due_timers(L);
  size_t n = L->rlen < BUDGET ? L->rlen : BUDGET;
  for (size_t i = 0; i < n; i++) {
    rnode *node = fifo_pop(L); /* NULL: tasks resumed the rest directly */
    if (node == NULL)
      break;
    node->run(node);
  }
}

/* Waits in libuv for I/O, a wake-up or the earliest timer (or just polls
 * when there is work ready). */
static void poll_io(cf_loop *L, int64_t deadline) {
  drain_remote(L);
  bool ready = L->rhead != NULL;
  if (!ready) {
    ltimer *first = timer_first(L);
    int64_t due = first != NULL ? first->due : CF_FOREVER;
    if (deadline < due)
      due = deadline;
    if (due != CF_FOREVER) {
      int64_t now = cf_now_ns();
      if (due <= now) {
        ready = true;
      } else {
        uint64_t ms = (uint64_t)((due - now + 999999) / 1000000);
        uv_update_time(&L->uv);
        uv_timer_start(&L->utimer, on_utimer, ms, 0);
      }
    }
  }
  uv_run(&L->uv, ready ? UV_RUN_NOWAIT : UV_RUN_ONCE);
  uv_timer_stop(&L->utimer);
}

enum { UNTIL_STOP, UNTIL_FUTURE, UNTIL_NO_TASKS };

static void wake_loop(cf__listener *l, cf_future *f) {
  (void)f;
  cf_loop *L = l->arg;
  uv_async_send(&L->async);
}

/* Runs the loop (claimed) until the condition holds, cf_loop_stop, or
 * the deadline. */
static int drive(cf_loop *L, int until, cf_future *f, int64_t deadline) {
  cf__listener lis;
  memset(&lis, 0, sizeof lis);
  lis.notify = wake_loop;
  lis.arg = L;
  bool listening = until == UNTIL_FUTURE && cf__future_listen(f, &lis) == 0;
  int rc = 0;
  for (int phase = 0;; phase ^= 1) {
    /* The conditions are checked after running the ready work too, so
     * that the poll never blocks once they hold. */
    if (until == UNTIL_FUTURE && cf_future_done(f))
      break;
    if (until == UNTIL_NO_TASKS && atomic_load(&L->live) == 0 &&
        L->rhead == NULL &&
        atomic_load_explicit(&L->remote, memory_order_relaxed) == NULL)
      break;
    /* A stop asks run and run_until to return; a shutdown or free runs
     * until every task has ended, and leaves a stop asked meanwhile for
     * the next run (a task's cleanup may ask one). */
    if (until != UNTIL_NO_TASKS && atomic_exchange(&L->stop_req, false)) {
      rc = until == UNTIL_STOP ? 0 : CF_ESTOPPED;
      break;
    }
    if (deadline != CF_FOREVER && cf_now_ns() >= deadline) {
      rc = CF_ETIMEDOUT;
      break;
    }
    if (phase == 0)
      run_ready(L);
    else
      poll_io(L, deadline);
  }
  if (listening)
    cf__future_unlisten(f, &lis);
  return rc;
}

/* Claims the loop for this thread, drives it until `until`, lets go. */
static int run_claimed(cf_loop *loop, int until, cf_future *f) {
  int rc = claim(loop);
  if (rc != 0)
    return rc;
  rc = drive(loop, until, f, CF_FOREVER);
  unclaim(loop);
  return rc;
}

int cf_loop_run(cf_loop *loop) {
  int rc = check_loop(loop);
  return rc != 0 ? rc : run_claimed(loop, UNTIL_STOP, NULL);
}

int cf_loop_run_until(cf_loop *loop, cf_future *f) {
  int rc = check_loop(loop);
  if (rc != 0)
    return rc;
  return f == NULL ? CF_EINVAL : run_claimed(loop, UNTIL_FUTURE, f);
}

int cf_loop_stop(cf_loop *loop) {
  if (loop == NULL)
    return CF_EINVAL;
  cf__pin pin;
  int rc = cf__executor_pin(&loop->base, &pin);
  if (rc != 0)
    return rc;
  atomic_store(&loop->stop_req, true);
  uv_async_send(&loop->async);
  cf__executor_unpin(&pin);
  return 0;
}

cf_loop *cf_loop_current(void) { return tls_loop; }

cf_future *cf_task_current(void) {
  return tls_task != NULL ? tls_task->f : NULL;
}

/* ---------------------------------------------------------------------- */
/* Waiting in a task                                                      */

int cf_sleep_until(int64_t deadline_ns) {
  ltask *t = tls_task;
  if (t == NULL) {
    for (;;) {
      int64_t now = cf_now_ns();
      if (deadline_ns <= now) /* before subtracting: no overflow */
        return 0;
      int64_t left = deadline_ns - now;
      struct timespec ts = {.tv_sec = left / 1000000000,
                            .tv_nsec = left % 1000000000};
      nanosleep(&ts, NULL);
    }
  }
  atomic_store_explicit(&t->armed, 1, memory_order_relaxed);
  int reason = task_block(t, deadline_ns);
  return reason == R_TIMEOUT ? 0 : reason_code(reason);
}

int cf__task_park(ltask *t, int64_t deadline) {
  atomic_store_explicit(&t->armed, 1, memory_order_relaxed);
  return reason_code(task_block(t, deadline));
}

void cf__task_unpark(ltask *t) { task_wake(t, R_DONE); }

int cf_sleep(int64_t ns) {
  if (ns < 0)
    return CF_EINVAL;
  return cf_sleep_until(cf_deadline_after(ns));
}

int cf_yield(void) {
  ltask *t = tls_task;
  if (t == NULL)
    return 0;
  if (cancel_owed(t)) {
    cancel_delivered(t);
    return CF_ECANCELED;
  }
  /* A turn of the loop: through the scheduler, never straight to the
   * next task, so due timers and I/O are seen. */
  fifo_push(t->loop, &t->node);
  t->loop->direct_left = 0;
  task_suspend(t);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Cancellations owed to scopes and groups                                */

cf__ltask *cf__task_self(void) { return tls_task; }

cf__ctx **cf__task_gen_caller_slot(void) {
  ltask *t = tls_task;
  return t != NULL && t->shared ? &t->gen_caller : NULL;
}

struct uv_loop_s *cf__loop_uv(cf_loop *L) { return &L->uv; }

bool cf__loop_on_thread(cf_loop *L) { return on_loop_thread(L); }

cf_loop *cf__task_loop(cf__ltask *t) { return t->loop; }

cf_future *cf__task_future(cf__ltask *t) { return t->f; }

uint64_t cf__task_soft_cancel(cf__ltask *t) {
  t->soft_pending++;
  uint64_t ticket = t->cancel_gen;
  task_wake(t, R_CANCEL);
  return ticket;
}

void cf__task_soft_withdraw(cf__ltask *t, uint64_t ticket) {
  if (t->cancel_gen == ticket && t->soft_pending > 0)
    t->soft_pending--;
}

bool cf__task_last_cancel_external(const cf__ltask *t) {
  return t->last_external;
}

uint64_t cf__task_cancel_gen(const cf__ltask *t) { return t->cancel_gen; }

typedef struct scope_impl {
  ltimer timer;
  ltask *task;
  struct scope_impl *outer;
  uint64_t ticket;
  bool expired, requested;
  uint32_t magic; /* SCOPE_OPEN while it is */
} scope_impl;
#define SCOPE_OPEN 0x73636f70u /* "scop" */

static void scope_fire(ltimer *tm) {
  scope_impl *sc = cf__container_of(tm, scope_impl, timer);
  sc->expired = true;
  sc->requested = true;
  sc->ticket = cf__task_soft_cancel(sc->task);
}

int cf_timeout_enter_at(cf_timeout_scope *scope, int64_t deadline_ns) {
  if (scope == NULL)
    return CF_EINVAL;
  scope->cf__impl = NULL;
  ltask *t = tls_task;
  if (t == NULL)
    return CF_ENOTTASK;
  /* On the heap: the timers and the task's list point at it, and a
   * task on the shared stack has its stack moved away while it waits. */
  scope_impl *sc = cf__calloc(1, sizeof *sc);
  if (sc == NULL)
    return CF_ENOMEM;
  timer_init(&sc->timer, scope_fire);
  sc->task = t;
  if (deadline_ns != CF_FOREVER && timer_add(t->loop, &sc->timer,
                                             deadline_ns) != 0) {
    free(sc);
    return CF_ENOMEM;
  }
  sc->outer = t->scopes;
  t->scopes = sc;
  sc->magic = SCOPE_OPEN;
  scope->cf__impl = sc;
  return 0;
}

int cf_timeout_enter(cf_timeout_scope *scope, int64_t timeout_ns) {
  if (timeout_ns < 0)
    return CF_EINVAL;
  return cf_timeout_enter_at(scope, cf_deadline_after(timeout_ns));
}

int cf_timeout_exit(cf_timeout_scope *scope) {
  if (scope == NULL)
    return CF_EINVAL;
  scope_impl *sc = scope->cf__impl;
  ltask *t = tls_task;
  if (sc == NULL || sc->magic != SCOPE_OPEN || t == NULL || sc->task != t ||
      t->scopes != sc)
    return CF_EINVAL;
  timer_del(t->loop, &sc->timer);
  t->scopes = sc->outer;
  if (sc->requested)
    cf__task_soft_withdraw(t, sc->ticket);
  int rc = sc->expired ? CF_ETIMEDOUT : 0;
  /* A cancellation from outside that came with the expiry is the one that
   * leaves the scope, as Python's CancelledError does (asyncio.timeout
   * turns only its own into TimeoutError): delivered together with the
   * scope's, or owed still. */
  if (sc->expired && t->cancel_req) {
    t->cancel_req = false; /* delivered: it is this return */
    t->last_external = true;
    rc = CF_ECANCELED;
  } else if (sc->expired && t->cancel_gen != (uint32_t)sc->ticket &&
             t->external_gen == (uint32_t)(sc->ticket + 1)) {
    rc = CF_ECANCELED;
  }
  free(sc);
  scope->cf__impl = NULL;
  return rc;
}

static void scopes_abandon(ltask *t) {
  for (scope_impl *sc = t->scopes; sc != NULL;) {
    scope_impl *outer = sc->outer;
    timer_del(t->loop, &sc->timer);
    free(sc);
    sc = outer;
  }
  t->scopes = NULL;
}

bool cf_timeout_expired(const cf_timeout_scope *scope) {
  if (scope == NULL)
    return false;
  const scope_impl *sc = scope->cf__impl;
  return sc != NULL && sc->expired;
}

/* ---------------------------------------------------------------------- */
/* The executor                                                           */

static int loop_submit(cf_executor *ex, const cf_task *task, int64_t deadline,
                       cf_future **out) {
  (void)deadline;
  cf_loop *L = (cf_loop *)ex;
  if (task->fn == NULL)
    return CF_EINVAL;
  if (atomic_load_explicit(&L->closing, memory_order_acquire))
    return CF_ESHUTDOWN;
  cf_future *f = cf__future_alloc(
      ex, out != NULL ? 2 : 1,
      sizeof(ltask) + (L->shared_mode ? (size_t)INLINE_SAVE : 0));
  if (f == NULL)
    return CF_ENOMEM;
  f->u.task.fn = task->fn;
  f->u.task.arg = task->arg;
  f->u.task.arg_dtor = task->arg_dtor;
  ltask *t = task_of(f);
  memset(t, 0, sizeof *t);
  t->kind = KIND_TASK;
  t->f = f;
  t->loop = L;
  t->node.run = task_start;
  t->cancel_node.run = cancel_node_of_task;
  t->shared = L->shared_mode; /* saved or stack: one of the union's */
  timer_init(&t->timer, task_timer_fire);
  if (tls_loop == L) {
    atomic_fetch_add_explicit(&L->live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&L->submitted, 1, memory_order_relaxed);
    fifo_push(L, &t->node);
  } else {
    /* From another thread: pinned, so that the loop is not destroyed
     * under the post (a submit that loses the race with a shutdown is
     * cancelled by the destroy). Counted live only once pinned: a count
     * taken back after a failed pin could leave a free's drive waiting
     * for a task whose post, and wake-up, never come; once pinned, the
     * post wakes the loop. */
    cf__pin pin;
    if (cf__executor_pin(ex, &pin) != 0) {
      cf__future_discard(f);
      return CF_ESHUTDOWN;
    }
    /* Counted, then the flag looked at again (seq_cst, the Dekker pair of
     * a shutdown's store of closing and its loads of live): a shutdown
     * either waits for this task or this submit sees it and backs out,
     * waking a shutdown that may have counted it. */
    atomic_fetch_add_explicit(&L->live, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&L->closing, memory_order_seq_cst)) {
      if (atomic_fetch_sub_explicit(&L->live, 1, memory_order_seq_cst) == 1) {
        wake_shutdown_waiters(L);
        uv_async_send(&L->async); /* a drive polling for the last task */
      }
      cf__executor_unpin(&pin);
      cf__future_discard(f);
      return CF_ESHUTDOWN;
    }
    atomic_fetch_add_explicit(&L->submitted, 1, memory_order_relaxed);
    remote_push(L, &t->node);
    cf__executor_unpin(&pin);
  }
  if (out != NULL)
    *out = f;
  return 0;
}

/* Delivers a cancellation on the loop's thread. */
static void cancel_here(ltask *t) {
  t->cancel_req = true;
  task_wake(t, R_CANCEL);
}

static void cancel_node_of_task(rnode *n) {
  ltask *t = cf__container_of(n, ltask, cancel_node);
  atomic_store(&t->cancel_posted, false);
  if (!t->exited)
    cancel_here(t);
  cf_future_unref(t->f); /* the canceller's reference for the trip */
}

static int loop_cancel(cf_executor *ex, cf_future *f) {
  cf_loop *L = (cf_loop *)ex;
  ltask *t = task_of(f);
  if (tls_loop == L) {
    cancel_here(t);
    return 0;
  }
  /* From another thread: the request travels to the loop's thread, which
   * alone reads and writes cancel_req (so waits need no fence). */
  if (!atomic_exchange(&t->cancel_posted, true)) {
    cf_future_ref(f);
    remote_push(L, &t->cancel_node);
  }
  return 0;
}

static void cancel_all(cf_loop *L, unsigned flags) {
  drain_remote(L);
  /* Not-started tasks are still in the FIFO (not yet on the list): they
   * are cancelled by their future (PENDING), and dropped at their start. */
  for (rnode *n = L->rhead; n != NULL; n = n->next)
    if (n->run == task_start)
      cf_future_cancel(cf__container_of(n, ltask, node)->f);
  if (flags & SHUTDOWN_CANCEL_RUNNING)
    for (ltask *t = L->tasks; t != NULL; t = t->next)
      cancel_here(t);
}

static void cancel_node_run(rnode *n) {
  cf_loop *L = cf__container_of(n, cf_loop, cancel_node);
  atomic_store(&L->cancel_posted, false);
  cancel_all(L, atomic_exchange(&L->cancel_flags, 0));
}

static int loop_shutdown(cf_executor *ex, unsigned flags, int64_t deadline) {
  cf_loop *L = (cf_loop *)ex;
  /* A thread that runs another loop cannot wait for L (it could only
   * drive L by leaving its own): refused, and L left as it was. Without
   * a wait the shutdown is posted to L, as from any other thread. */
  bool other_loop = tls_loop != NULL && tls_loop != L;
  if (other_loop && (flags & CF_SHUTDOWN_WAIT))
    return CF_EBUSY;
  atomic_store(&L->closing, true);
  if (tls_loop == L) {
    if (flags & (CF_SHUTDOWN_CANCEL_FUTURES | SHUTDOWN_CANCEL_RUNNING))
      cancel_all(L, flags);
    return (flags & CF_SHUTDOWN_WAIT) && atomic_load(&L->live) != 0
               ? CF_EDEADLK
               : 0;
  }
  if (!other_loop && claim(L) == 0) {
    if (flags & (CF_SHUTDOWN_CANCEL_FUTURES | SHUTDOWN_CANCEL_RUNNING))
      cancel_all(L, flags);
    int rc = 0;
    if (flags & CF_SHUTDOWN_WAIT)
      rc = drive(L, UNTIL_NO_TASKS, NULL, deadline);
    unclaim(L);
    return rc;
  }
  /* Running on another thread: ask it, and wait for the last task. */
  if (flags & (CF_SHUTDOWN_CANCEL_FUTURES | SHUTDOWN_CANCEL_RUNNING)) {
    atomic_fetch_or(&L->cancel_flags, flags);
    if (!atomic_exchange(&L->cancel_posted, true))
      remote_push(L, &L->cancel_node);
  }
  if (!(flags & CF_SHUTDOWN_WAIT))
    return 0;
  int rc = 0;
  pthread_mutex_lock(&L->mu);
  while (atomic_load(&L->live) != 0) {
    if (deadline == CF_FOREVER) {
      pthread_cond_wait(&L->cv, &L->mu);
      continue;
    }
    struct timespec ts = {.tv_sec = deadline / 1000000000,
                          .tv_nsec = deadline % 1000000000};
    if (pthread_cond_timedwait(&L->cv, &L->mu, &ts) != 0 &&
        cf_now_ns() >= deadline) {
      rc = atomic_load(&L->live) != 0 ? CF_ETIMEDOUT : 0;
      break;
    }
  }
  pthread_mutex_unlock(&L->mu);
  return rc;
}

static void on_closed(uv_handle_t *h) { (void)h; }

static void drop_unstarted(cf_loop *L, ltask *t) {
  cf_future_cancel(t->f); /* PENDING: cancelled at once */
  atomic_fetch_add_explicit(&L->cancelled, 1, memory_order_relaxed);
  t->prev = t->next = NULL;
  if (L->tasks == t)
    L->tasks = NULL;
  cf_future *f = t->f;
  atomic_fetch_sub_explicit(&L->live, 1, memory_order_acq_rel);
  cf_future_unref(f);
}

static void loop_destroy(cf_executor *ex) {
  cf_loop *L = (cf_loop *)ex;
  /* Done callbacks routed here whose future is not done: they run where
   * any callback would (in the completing thread). */
  for (route *r = L->routes; r != NULL;) {
    route *next = r->next;
    cf__future_unlisten(r->f, &r->lis);
    if (!atomic_load(&r->fired)) {
      if (r->prev != NULL)
        r->prev->next = r->next;
      else
        L->routes = r->next;
      if (r->next != NULL)
        r->next->prev = r->prev;
      cf_future_add_done_callback(r->f, r->fn, r->arg);
      cf_future_unref(r->f);
      free(r);
    }
    r = next;
  }
  /* Callbacks already scheduled run; timers not yet due are dropped; a
   * task submitted in a race with the shutdown is cancelled unrun. */
  cf_loop *was = tls_loop;
  tls_loop = L;
  atomic_store_explicit(&L->owner, self_id(), memory_order_relaxed);
  for (int round = 0; round < 16; round++) {
    drain_remote(L);
    if (L->rhead == NULL)
      break;
    rnode *batch = L->rhead;
    L->rhead = NULL;
    L->rtail = &L->rhead;
    L->rlen = 0;
    while (batch != NULL) {
      rnode *next = batch->next;
      if (batch->run == task_start)
        drop_unstarted(L, cf__container_of(batch, ltask, node));
      else
        batch->run(batch);
      batch = next;
    }
  }
  while (L->rhead != NULL) { /* rescheduled forever: dropped */
    rnode *n = fifo_pop(L);
    if (n->run == call_run)
      call_unref(cf__container_of(n, cf_loop_call, node));
    else if (n->run == task_start)
      drop_unstarted(L, cf__container_of(n, ltask, node));
  }
  tls_loop = was;
  /* The timers left: the calls' go with their references (any other's
   * owner is gone: its task ended or the loop cancelled it). */
  for (ltimer *t = timer_first(L); t != NULL; t = timer_first(L)) {
    timer_del(L, t);
    if (t->fire == call_fire) {
      cf_loop_call *h = cf__container_of(t, cf_loop_call, timer);
      h->state = CALL_CANCELLED;
      call_unref(h);
    }
  }
  free(L->heap);
  for (size_t i = 0; i < L->nstacks; i++)
    cf__stack_free(&L->stacks[i]);
  cf__stack_free(&L->shared);
  free(L->stacks);
  /* A foreign thread may still be between its push and its wake-up. */
  while (atomic_load_explicit(&L->posting, memory_order_acquire) != 0)
    sched_yield();
  uv_close((uv_handle_t *)&L->async, on_closed);
  uv_close((uv_handle_t *)&L->utimer, on_closed);
  uv_run(&L->uv, UV_RUN_NOWAIT);
  uv_loop_close(&L->uv);
  free(L->read_scratch);
  pthread_mutex_destroy(&L->mu);
  pthread_cond_destroy(&L->cv);
}

char *cf__loop_read_scratch(cf_loop *L) {
  if (L->read_scratch == NULL)
    L->read_scratch = malloc(CF__LOOP_READ_SCRATCH);
  return L->read_scratch;
}

static void loop_stats(cf_executor *ex, cf_executor_stats *st) {
  cf_loop *L = (cf_loop *)ex;
  st->submitted = atomic_load(&L->submitted);
  st->completed = atomic_load(&L->completed);
  st->failed = atomic_load(&L->failed);
  st->cancelled = atomic_load(&L->cancelled);
  /* ended before started, so running never reads negative. */
  uint64_t ended = atomic_load(&L->ended);
  uint64_t started = atomic_load(&L->started);
  st->running = started - ended;
  size_t live = atomic_load(&L->live);
  st->queued = live > st->running ? live - st->running : 0;
  st->callbacks_failed = atomic_load(&L->callbacks_failed);
  st->workers = 1;
  st->idle_workers = 0;
  st->max_workers = 1;
}

static int loop_max_workers(cf_executor *ex) {
  (void)ex;
  return 1;
}

static bool loop_is_own_thread(cf_executor *ex) {
  return tls_loop == (cf_loop *)ex;
}

/* cf_executor_free refuses (CF_EDEADLK) on any thread that runs a loop:
 * its own cannot wait for itself, and another's cannot drive this one
 * (its shutdown would be refused after free had claimed the handle). */
static bool loop_free_refused_here(cf_executor *ex) {
  (void)ex;
  return tls_loop != NULL;
}

static const cf__executor_vtable loop_vt = {
    .name = "loop",
    .submit = loop_submit,
    .cancel = loop_cancel,
    .shutdown = loop_shutdown,
    .destroy = loop_destroy,
    .stats = loop_stats,
    .max_workers = loop_max_workers,
    .is_own_thread = loop_free_refused_here,
    /* A loop forked from its own thread goes on in the child: its tasks
     * were suspended on this thread, and one may have written its result
     * into its future already, so settling them as the parent's would
     * race the task that resumes. */
    .lives_in_child = loop_is_own_thread,
};

/* ---------------------------------------------------------------------- */
/* Life cycle                                                             */

int cf_loop_new(const cf_loop_opts *opts, cf_loop **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  cf_loop_opts o = {0};
  if (opts != NULL)
    o = *opts;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (o.stack_size == 0)
    o.stack_size = 256 * 1024;
  if (o.stack_size < 16 * 1024 || o.stack_size > ((size_t)1 << 40))
    return CF_EINVAL;
  o.stack_size = (o.stack_size + page - 1) / page * page;
  if (o.shared_stack && o.stack_size > UINT32_MAX) /* saved sizes: 32 bits */
    return CF_EINVAL;
  if (o.stack_cache == 0)
    o.stack_cache = 64;
  cf_loop *L = cf__aligned_alloc(CF__CACHELINE, sizeof *L);
  if (L == NULL)
    return CF_ENOMEM;
  memset(L, 0, sizeof *L);
  L->stacks = cf__calloc(o.stack_cache, sizeof *L->stacks);
  if (L->stacks == NULL) {
    free(L);
    return CF_ENOMEM;
  }
  int rc = uv_loop_init(&L->uv);
  if (rc != 0) {
    free(L->stacks);
    free(L);
    return rc;
  }
  uv_async_init(&L->uv, &L->async, on_async);
  uv_timer_init(&L->uv, &L->utimer);
  for (int r = 0; r < NRUNS; r++)
    L->runs[r].prev = L->runs[r].next = &L->runs[r];
  pthread_mutex_init(&L->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&L->cv, &ca);
  pthread_condattr_destroy(&ca);
  L->name = o.name != NULL ? o.name : "loop";
  L->stack_size = o.stack_size;
#ifndef CF_CORO_UCONTEXT
  L->shared_mode = o.shared_stack;
#endif
  L->stack_cache_max = o.stack_cache;
  L->rtail = &L->rhead;
  L->tw.kind = KIND_THREAD;
  L->cancel_node.run = cancel_node_run;
  L->sink.fn = report_to_handler;
  L->sink.failed = &L->callbacks_failed;
  atomic_store(&L->owner, self_id());
  cf__executor_init(&L->base, &loop_vt);
  *out = L;
  return 0;
}

cf_executor *cf_loop_executor(cf_loop *loop) {
  return loop != NULL ? &loop->base : NULL;
}

int cf_loop_free(cf_loop *loop) {
  int rc = check_loop(loop);
  if (loop == NULL)
    return 0;
  if (rc != 0)
    return rc;
  if (tls_loop == loop || atomic_load(&loop->running))
    return CF_EBUSY;
  rc = loop_shutdown(&loop->base,
                     CF_SHUTDOWN_WAIT | CF_SHUTDOWN_CANCEL_FUTURES |
                         SHUTDOWN_CANCEL_RUNNING,
                     CF_FOREVER);
  if (rc != 0)
    return rc;
  return cf_executor_free(&loop->base);
}

int cf_loop_spawn(cf_loop *loop, cf_task_fn fn, void *arg, cf_future **out) {
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || fn == NULL)
    return CF_EINVAL;
  return cf_executor_submit(&loop->base, fn, arg, out);
}

int cf_loop_run_main(cf_task_fn fn, void *arg, const cf_loop_opts *opts,
                     cf_future **out) {
  if (out != NULL)
    *out = NULL;
  if (fn == NULL)
    return CF_EINVAL;
  if (tls_loop != NULL)
    return CF_EBUSY;
  cf_loop *L;
  int rc = cf_loop_new(opts, &L);
  if (rc != 0)
    return rc;
  cf_future *f;
  rc = cf_loop_spawn(L, fn, arg, &f);
  if (rc != 0) {
    cf_loop_free(L);
    return rc;
  }
  rc = cf_loop_run_until(L, f);
  cf_loop_free(L);
  if (rc == 0)
    rc = cf_future_get_error(f).code;
  if (out != NULL)
    *out = f;
  else
    cf_future_unref(f);
  return rc;
}
