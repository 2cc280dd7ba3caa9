/*
 * pool_idle.c - idle workers: a bounded spin, then the idle stack.
 *
 * An idle worker first spins (at most one at a time, bounded by
 * IDLE_SPIN_NS), polling the FIFO's counts (ptail, chead), never a lock's
 * line. Then it pushes itself on the idle stack (ilock) and parks on its
 * own `parked` word. A submitter that finds a parked worker and no
 * spinner pops (claims) that worker and wakes it, so a sleeper costs at
 * most one wake-up syscall however many tasks arrive while the kernel
 * schedules it. No lock orders "a sleeper re-checks the queue" against "a
 * submitter checks for sleepers": a full barrier on each side does (the
 * submitter's is the locked add that publishes its tasks; see pool.h).
 *
 * Lazy workers (Python's _adjust_thread_count): a worker offers one idle
 * token per idle period; a submit that claims one does not start a
 * thread (thread_pool.c).
 */
#include "fault.h"
#include "pool.h"

/* Takes w off the stack unless a waker claimed it already. */
static void idle_remove(pool *p, worker *w) {
  cf__spin_lock(&p->ilock);
  if (w->on_stack)
    idle_unlink_locked(p, w);
  cf__spin_unlock(&p->ilock);
}

void idle_wake_worker(pool *p, worker *w) {
  cf__spin_lock(&p->ilock);
  bool was = w->on_stack;
  if (was)
    idle_unlink_locked(p, w);
  cf__spin_unlock(&p->ilock);
  if (was)
    cf__park_wake(&w->parked, 1);
}

void wake_all(pool *p) {
  for (;;) {
    cf__spin_lock(&p->ilock);
    worker *w = p->idle_top;
    if (w != NULL)
      idle_unlink_locked(p, w);
    cf__spin_unlock(&p->ilock);
    if (w == NULL)
      return;
    cf__park_wake(&w->parked, 1);
  }
}

void wake_space_waiters(pool *p) {
  /* Dekker with wait_for_room: we stored chead (or shutdown/broken)
   * seq_cst, then load space_waiters seq_cst; the producer increments
   * space_waiters, then loads chead. One of us sees the other. */
  if (atomic_load(&p->space_waiters) > 0) {
    atomic_fetch_add(&p->space_seq, 1);
    cf__park_wake(&p->space_seq, INT32_MAX);
  }
}

bool park_worker(worker *w, int64_t deadline,
                 bool (*ready)(worker *w, void *ctx), void *ctx) {
  pool *p = w->p;
  if (queued_now(p) > 0)
    return false;
  if (cf__fault(CF__FAULT_PARK_PAUSE))
    cf__fault_pause(); /* a submit now finds nobody on the stack */
  cf__spin_lock(&p->ilock);
  idle_push_locked(p, w);
  cf__spin_unlock(&p->ilock);
  /* On the stack (a seq_cst add), then look (Dekker with the submitter
   * and with a worker slotting a batch). */
  if (queued_now_sc(p) > 0 || anything_stealable(p) ||
      (ready != NULL && ready(w, ctx))) {
    idle_remove(p, w);
    return false;
  }
  while (atomic_load_explicit(&w->parked, memory_order_acquire) == 1 &&
         cf__park_wait(&w->parked, 1, deadline) != CF_ETIMEDOUT)
    ;
  idle_remove(p, w);
  return true;
}

static bool stop_ready(worker *w, void *ctx) {
  (void)ctx;
  return atomic_load(&w->p->shutdown) || atomic_load(&w->p->broken);
}

bool idle(worker *w) {
  pool *p = w->p;
  bool keep = true;
  /* One token per idle period (Python's idle semaphore): a submit that
   * claims it does not start a thread. The worker never takes it back:
   * if it finds the work itself, the claim was still right. Offered
   * before idle_now counts us, so whoever sees us idle finds the token. */
  if (!w->token_given) {
    w->token_given = true;
    atomic_fetch_add(&p->idle_tokens, 1);
  }
  atomic_fetch_add(&p->idle_now, 1);
  int zero = 0;
  if (atomic_compare_exchange_strong(&p->spinning, &zero, 1)) {
    int64_t end = cf_now_ns() + IDLE_SPIN_NS;
    bool found = false, stop = false;
    do {
      for (int i = 0; i < 64 && !found; i++) {
        cf__cpu_relax();
        found = queued_now(p) > 0;
      }
      /* Once per round: the flag lives on qlock's line, which a poll
       * would take from the next submit. */
      stop = atomic_load_explicit(&p->shutdown, memory_order_relaxed);
    } while (!found && !stop && cf_now_ns() < end);
    atomic_fetch_sub(&p->spinning, 1);
    if (found)
      goto out; /* (on shutdown, fall through to the exit check) */
  }
  if (stop_ready(w, NULL)) {
    /* Exit once nothing is left; queued work still runs after shutdown. */
    keep = queued_now(p) > 0 || anything_stealable(p);
    goto out;
  }
  park_worker(w, CF_FOREVER, stop_ready, NULL);
out:
  atomic_fetch_sub(&p->idle_now, 1);
  return keep;
}
