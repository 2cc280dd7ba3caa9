/*
 * pool_help.c - running tasks on a worker, and waiting inside one.
 *
 * Each worker installs a wait hook. A task that waits on one future
 * without a deadline (help_wait) runs that future's task inline if it is
 * still queued in this pool and no other worker is free to start it (or
 * it sits in this worker's own slots, behind the waiting task), and runs
 * other queued work meanwhile only if no other worker is free (at most
 * MAX_HELP_DEPTH deep, never closer to the stack's end than its reserve);
 * otherwise it parks on the idle stack, where submitters can claim it
 * like any idle worker, until the future completes. A wait with a
 * deadline never runs a task on the waiting stack: it could not return
 * at its deadline; it blocks like any thread.
 *
 * Waits on several futures (cf_wait, as_completed) use the hook's
 * waiter/sleep/wake entries: the waiter is the worker; wake() sets the
 * worker's permit and unparks it; sleep() runs one queued task when no
 * other worker is free (no deadline), or parks until woken. So a worker
 * waiting on a set sleeps until the first relevant completion and wakes
 * once, with no timer.
 *
 * The tasks a worker is running form a list of frames on its stack;
 * waiting on any of them returns CF_EDEADLK.
 */
#include "pool.h"

/* Runs a future this worker has claimed, its outcome written straight
 * into it (only this worker completes it while it runs). The counters
 * move before the outcome is published, so a waiter that sees it done
 * reads counters that count it. */
static void run_claimed(worker *w, cf_future *f) {
  frame fr = {f, w->top};
  w->token_given = false;
  bump(&w->started);
  w->top = &fr;
  w->depth++;
  cf__future_exec_self(f);
  w->depth--;
  w->top = fr.up;
  bump(f->err == 0 ? &w->completed : &w->failed);
  cf__future_publish_self(f, &w->p->sink);
}

bool stack_allows_nesting(worker *w) {
  if (w->stack_lo == 0)
    return w->depth < MAX_HELP_DEPTH;
    /* The frame address, not a local's: sanitizers may move locals to a
     * heap-allocated fake stack. */
#if defined(__GNUC__) || defined(__clang__)
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);
#else
  char local;
  uintptr_t here = (uintptr_t)&local;
#endif
  return here > w->stack_lo + w->stack_reserve;
}

/* No other worker is free to take queued work: none is idle or spinning.
 * (Python would leave the work queued; we run it so that a saturated
 * pool cannot deadlock on waits.) */
static bool nobody_free(pool *p) {
  return atomic_load_explicit(&p->spinning, memory_order_relaxed) == 0 &&
         atomic_load_explicit(&p->idle_now, memory_order_relaxed) == 0;
}

/* Whether this worker should run unrelated queued work while it waits. */
static bool should_help(worker *w) {
  return w->depth < MAX_HELP_DEPTH && stack_allows_nesting(w) &&
         nobody_free(w->p);
}

void run_one(worker *w, cf_future *f) {
  pool *p = w->p;
  if (CF__UNLIKELY(
          atomic_load_explicit(&p->cancelling, memory_order_relaxed))) {
    settle(p, f, CF_ECANCELED, NULL);
    return;
  }
  if (!cf__future_claim(f)) {
    /* Cancelled while queued, or already run inline by a worker that
     * waited for it (counted there). A future its owner completed by
     * hand while queued counts as cancelled: it never ran here. */
    if (!(atomic_load_explicit(&f->state, memory_order_acquire) &
          CF__FL_INLINE))
      bump(&w->cancelled);
    cf_future_unref(f);
    return;
  }
  run_claimed(w, f);
  cf_future_unref(f);
}

/* A waiting worker that will not take the queued work (another worker is
 * free) hands it on: a submitter may have claimed this very worker off
 * the idle stack for it, and the free worker would then sleep on. */
static void pass_on_work(pool *p) {
  if (queued_now(p) > 0 || anything_stealable(p))
    wake_claimed(claim_idle(p));
}

static bool in_own_slots(const worker *w, const cf_future *f) {
  for (int i = w->slot_pos; i < w->slot_end; i++)
    if (atomic_load_explicit(&w->slots[i], memory_order_relaxed) == f)
      return true;
  return false;
}

/* ---------------------------------------------------------------------- */
/* Waiting on one future                                                   */

typedef struct help_listener {
  cf__listener l;
  worker *w;
} help_listener;

/* Runs under the future's stripe lock (then ilock: see the lock order). */
static void help_notify(cf__listener *l, cf_future *f) {
  (void)f;
  help_listener *h = cf__container_of(l, help_listener, l);
  idle_wake_worker(h->w->p, h->w);
}

static bool future_done_ready(worker *w, void *ctx) {
  (void)w;
  return cf_future_done(ctx);
}

static int help_wait(void *ctx, cf_future *f, int64_t deadline) {
  worker *w = ctx;
  pool *p = w->p;
  /* Waiting for a task this thread is running (itself, or one below it
   * on this stack) can never end. */
  if (running_here(w, f))
    return CF_EDEADLK;
  /* In a fork child (a task that forked goes on): a plain wait, never
   * the parent's queued work. */
  if (CF__UNLIKELY(pool_forked(p)))
    return cf_future_wait_blocking(f, deadline);
  if (deadline != CF_FOREVER) {
    /* With a deadline, no unrelated work on this stack: at most the
     * awaited task itself, when nobody else would start it before the
     * deadline. */
    if (f->owner == &p->base && stack_allows_nesting(w) &&
        (nobody_free(p) || in_own_slots(w, f)) && cf__future_claim_inline(f))
      run_claimed(w, f);
    return cf_future_wait_blocking(f, deadline);
  }
  help_listener h = {{0}, w};
  h.l.notify = help_notify;
  bool listening = false;
  int rc = 0;
  for (;;) {
    if (cf_future_done(f))
      break;
    if (CF__UNLIKELY(pool_forked(p))) {
      /* A task run here forked, and this is the child: see above. */
      rc = cf_future_wait_blocking(f, deadline);
      break;
    }
    /* Still queued in this pool, and nobody else would start it soon:
     * run it here and now (the queue entry is discarded later). This
     * keeps nested waits as deep as the dependency chain, not as the
     * queue. */
    if (f->owner == &p->base && stack_allows_nesting(w) &&
        (nobody_free(p) || in_own_slots(w, f)) && cf__future_claim_inline(f)) {
      run_claimed(w, f);
      continue;
    }
    if (w->depth >= MAX_HELP_DEPTH || !stack_allows_nesting(w)) {
      /* Too deep to run anything more on this stack: block like any
       * other thread. */
      rc = cf_future_wait_blocking(f, deadline);
      break;
    }
    if (should_help(w)) {
      cf_future *t = next_task(w);
      if (t != NULL) {
        run_one(w, t);
        continue;
      }
    }
    if (!listening) {
      if (cf__future_listen(f, &h.l) == 1)
        break;
      listening = true;
    }
    /* Park until f completes (help_notify), work arrives (submitters may
     * claim us like any idle worker). If we could not park (work is
     * queued or slotted, and another worker is free to take it), wait a
     * slice and look again: that worker may have become busy. */
    if (!park_worker(w, deadline, future_done_ready, f)) {
      pass_on_work(p);
      cf_future_wait_blocking(f, cf_now_ns() + HELP_RECHECK_NS);
    }
  }
  if (listening)
    cf__future_unlisten(f, &h.l);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Waiting on several futures: the park/unpark pair                        */

static void *hook_waiter(void *ctx) { return ctx; }

/* Any thread, under a stripe lock and the waiter's mutex: records the
 * wake-up and unparks the worker (from its permit word or the idle
 * stack). */
static void hook_wake(void *token) {
  worker *w = token;
  if (atomic_exchange(&w->permit, 1) == 2)
    cf__park_wake(&w->permit, 1);
  idle_wake_worker(w->p, w);
}

static bool permit_ready(worker *w, void *ctx) {
  (void)ctx;
  return atomic_load(&w->permit) == 1;
}

/* Sleeps on the permit word alone (not on the idle stack). */
static int sleep_on_permit(worker *w, int64_t deadline) {
  uint32_t zero = 0;
  if (!atomic_compare_exchange_strong(&w->permit, &zero, 2)) {
    atomic_store(&w->permit, 0); /* it was 1: woken already */
    return 0;
  }
  int rc = 0;
  while (atomic_load(&w->permit) == 2 && rc == 0)
    rc = cf__park_wait(&w->permit, 2, deadline);
  uint32_t old = atomic_exchange(&w->permit, 0);
  return old == 1 ? 0 : rc;
}

/* Runs one of fs inline if it is still queued here and nobody else
 * would start it: what the waiter waits for, so this is progress. */
static bool run_awaited(worker *w, cf_future *const *fs, size_t n) {
  pool *p = w->p;
  if (!stack_allows_nesting(w))
    return false;
  bool free_worker = !nobody_free(p);
  for (size_t i = 0; i < n; i++) {
    cf_future *f = fs[i];
    if (f != NULL && f->owner == &p->base && !cf_future_done(f) &&
        (!free_worker || in_own_slots(w, f)) && cf__future_claim_inline(f)) {
      run_claimed(w, f);
      return true;
    }
  }
  return false;
}

static int hook_sleep(void *ctx, void *token, cf_future *const *fs, size_t n,
                      int64_t deadline) {
  (void)ctx;
  worker *w = token;
  for (size_t i = 0; i < n; i++)
    if (fs[i] != NULL && !cf_future_done(fs[i]) && running_here(w, fs[i]))
      return CF_EDEADLK;
  if (CF__UNLIKELY(pool_forked(w->p))) {
    /* In a fork child (a task that forked goes on): settle the parent's
     * futures of the set (the wait may have begun before the fork), then
     * sleep like any thread; none of the parent's queued work. */
    for (size_t i = 0; i < n; i++)
      if (fs[i] != NULL)
        cf__future_orphan_check(fs[i]);
    if (atomic_exchange(&w->permit, 0) == 1)
      return 0;
    return sleep_on_permit(w, deadline);
  }
  if (atomic_exchange(&w->permit, 0) == 1)
    return 0;
  if (cf_now_ns() >= deadline)
    return CF_ETIMEDOUT;
  if (run_awaited(w, fs, n))
    return 0; /* the caller looks at its set again */
  /* With a deadline, or too deep to nest: sleep like any thread. */
  if (deadline != CF_FOREVER || w->depth >= MAX_HELP_DEPTH ||
      !stack_allows_nesting(w))
    return sleep_on_permit(w, deadline);
  if (should_help(w)) {
    cf_future *t = next_task(w);
    if (t != NULL) {
      run_one(w, t);
      return 0;
    }
  }
  if (park_worker(w, CF_FOREVER, permit_ready, NULL)) {
    atomic_store(&w->permit, 0);
    return 0;
  }
  /* Work is queued or slotted for the free workers: sleep a slice. */
  pass_on_work(w->p);
  int rc = sleep_on_permit(w, cf_now_ns() + HELP_RECHECK_NS);
  return rc == CF_ETIMEDOUT ? 0 : rc;
}

void install_wait_hook(worker *w) {
  cf_wait_hook hook = {help_wait, w, hook_waiter, hook_sleep, hook_wake};
  cf_wait_hook_swap(&hook, NULL);
}
