/*
 * executor.c - the public executor functions: validation, dispatch to a
 * backend's vtable, freed-handle detection, pins, and executors of the
 * parent in a fork child.
 *
 * Freed handles: cf_executor_free() does not return a backend's object to
 * malloc at once. It marks it DEAD and keeps it in a quarantine ring of
 * QUARANTINE objects, so a call through a stale pointer to a recently
 * freed executor reads valid memory and gets CF_EBADF. Older objects are
 * freed when pushed out of the ring (never while pinned).
 *
 * Pins: calls that may still be running when free starts (a shutdown
 * waiting for workers, a stats read, the cancel of a running future) pin
 * the executor: pins++ then check the magic word, both seq_cst. free
 * marks the object DEAD (seq_cst), shuts it down, then waits for pins to
 * drain before destroy releases anything, so a pinned call never sees
 * freed memory; a call that pins after DEAD unpins and fails CF_EBADF.
 * A thread's pins form a chain on its stack: free from inside a pinned
 * call on the same executor (a callback run by shutdown's cancellation,
 * or by a backend's cancel) is refused with CF_EDEADLK.
 *
 * fork: the live executors are on a list, so that the child handler can
 * record the pins the parent's threads held (pin_base; nobody in the
 * child will release them). Orphaning runs the backend's `forked` once;
 * a callback it runs that uses the same executor again returns at once
 * instead of waiting for itself.
 *
 * Locks: handles_mu (the quarantine and the live list) is a leaf lock.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "executor_int.h"
#include "fork.h"
#include "future_int.h"

#define QUARANTINE 32

static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *quarantine[QUARANTINE];
static unsigned quarantine_pos;
static cf_executor *live_list; /* live executors (guarded by handles_mu) */

static _Thread_local cf__pin *pins_here;      /* this thread's pins */
static _Thread_local cf__pin *orphaning_here; /* executors it orphans */

void cf__executor_init(cf_executor *ex, const cf__executor_vtable *vt) {
  ex->vt = vt;
  ex->fork_gen = cf__fork_generation();
  ex->pin_base = 0;
  atomic_init(&ex->pins, 0);
  atomic_init(&ex->orphan_done, 0);
  pthread_mutex_lock(&handles_mu);
  ex->live_prev = NULL;
  ex->live_next = live_list;
  if (live_list != NULL)
    live_list->live_prev = ex;
  live_list = ex;
  pthread_mutex_unlock(&handles_mu);
  atomic_store_explicit(&ex->magic, CF__EXECUTOR_LIVE, memory_order_release);
}

static bool pinned_here(const cf_executor *ex) {
  for (const cf__pin *p = pins_here; p != NULL; p = p->up)
    if (p->ex == ex)
      return true;
  return false;
}

static int check(cf_executor *ex) {
  if (ex == NULL)
    return CF_EINVAL;
  uint32_t m = atomic_load_explicit(&ex->magic, memory_order_acquire);
  return m == CF__EXECUTOR_LIVE ? 0 : CF_EBADF;
}

/* The pin lives in the caller's frame and is linked into this thread's
 * list only until cf__executor_unpin, which the same frame calls before it
 * returns: GCC's -Wdangling-pointer cannot see the pairing. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
int cf__executor_pin(cf_executor *ex, cf__pin *pin) {
  if (ex == NULL)
    return CF_EINVAL;
  atomic_fetch_add(&ex->pins, 1);
  if (atomic_load(&ex->magic) != CF__EXECUTOR_LIVE) {
    atomic_fetch_sub(&ex->pins, 1);
    return CF_EBADF;
  }
  pin->ex = ex;
  pin->up = pins_here;
  pins_here = pin;
  return 0;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif

void cf__executor_unpin(cf__pin *pin) {
  pins_here = pin->up;
  atomic_fetch_sub(&pin->ex->pins, 1);
}

static void wait_unpinned(cf_executor *ex) {
  /* Pins inherited from a parent's threads (pin_base) never go; ours do,
   * and pinned calls are short once the executor is shut down. */
  while ((int32_t)(atomic_load(&ex->pins) - ex->pin_base) > 0)
    sched_yield();
}

void cf__executor_orphan(cf_executor *ex) {
  int zero = 0;
  if (atomic_compare_exchange_strong(&ex->orphan_done, &zero, 1)) {
    cf__pin frame = {ex, orphaning_here};
    orphaning_here = &frame;
    if (ex->vt->forked != NULL)
      ex->vt->forked(ex); /* runs callbacks, which may use ex again */
    orphaning_here = frame.up;
    atomic_store(&ex->orphan_done, 2);
    return;
  }
  for (cf__pin *p = orphaning_here; p != NULL; p = p->up)
    if (p->ex == ex)
      return; /* this thread is orphaning it, further up its stack */
  while (atomic_load(&ex->orphan_done) != 2)
    sched_yield();
}

/* For calls on an executor that may be the parent's: settles it once. */
static bool orphaned(cf_executor *ex) {
  if (!cf__executor_forked(ex))
    return false;
  cf__executor_orphan(ex);
  return true;
}

int cf_executor_submit_task(cf_executor *ex, const cf_task *task,
                            int64_t timeout_ns, cf_future **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (task == NULL || timeout_ns < 0)
    return CF_EINVAL;
  if (orphaned(ex))
    return CF_EFORKED;
  return ex->vt->submit(ex, task, cf_deadline_after(timeout_ns), out);
}

int cf__executor_submit_batch(cf_executor *ex, const cf_task *tasks, size_t n,
                              int64_t deadline_ns, cf_future **out,
                              size_t *done) {
  *done = 0;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (orphaned(ex))
    return CF_EFORKED;
  if (ex->vt->submit_batch != NULL)
    return ex->vt->submit_batch(ex, tasks, n, deadline_ns, out, done);
  for (size_t i = 0; i < n; i++) {
    rc = ex->vt->submit(ex, &tasks[i], deadline_ns, &out[i]);
    if (rc != 0)
      return rc;
    *done = i + 1;
  }
  return 0;
}

int cf_executor_submit(cf_executor *ex, cf_task_fn fn, void *arg,
                       cf_future **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check(ex);
  if (rc != 0)
    return rc;
  if (orphaned(ex))
    return CF_EFORKED;
  cf_task t = {fn, arg, NULL, 0, NULL};
  return ex->vt->submit(ex, &t, CF_FOREVER, out);
}

#define SHUTDOWN_FLAGS (CF_SHUTDOWN_WAIT | CF_SHUTDOWN_CANCEL_FUTURES)

int cf_executor_shutdown(cf_executor *ex, unsigned flags, int64_t timeout_ns) {
  if (ex == NULL || (flags & ~(unsigned)SHUTDOWN_FLAGS) != 0 || timeout_ns < 0)
    return CF_EINVAL;
  int64_t deadline = cf_deadline_after(timeout_ns);
  cf__pin pin;
  int rc = cf__executor_pin(ex, &pin);
  if (rc != 0)
    return rc;
  orphaned(ex);
  rc = ex->vt->shutdown(ex, flags, deadline);
  cf__executor_unpin(&pin);
  return rc;
}

int cf_executor_free(cf_executor *ex) {
  int rc = check(ex);
  if (rc != 0)
    return rc;
  orphaned(ex);
  /* From one of its own threads, or from inside a call on it that free
   * would wait for (a callback its shutdown or cancel runs), it could never
   * finish: refuse before claiming the handle, so nothing changes. */
  if ((ex->vt->is_own_thread != NULL && ex->vt->is_own_thread(ex)) ||
      pinned_here(ex))
    return CF_EDEADLK;
  /* Claim the handle so two racing frees cannot both proceed; calls that
   * pin from now on fail with CF_EBADF. */
  uint32_t magic = CF__EXECUTOR_LIVE;
  if (!atomic_compare_exchange_strong(&ex->magic, &magic, CF__EXECUTOR_DEAD))
    return CF_EBADF;
  rc = ex->vt->shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER);
  CF__ASSERT(rc == 0); /* no timeout, not from its own thread */
  wait_unpinned(ex);
  ex->vt->destroy(ex);
  pthread_mutex_lock(&handles_mu);
  if (ex->live_prev != NULL)
    ex->live_prev->live_next = ex->live_next;
  else
    live_list = ex->live_next;
  if (ex->live_next != NULL)
    ex->live_next->live_prev = ex->live_prev;
  cf_executor *old = quarantine[quarantine_pos];
  quarantine[quarantine_pos] = ex;
  quarantine_pos = (quarantine_pos + 1) % QUARANTINE;
  pthread_mutex_unlock(&handles_mu);
  if (old != NULL)
    wait_unpinned(old); /* a stale call may still be failing on it */
  free(old);
  return 0;
}

int cf_executor_get_stats(cf_executor *ex, cf_executor_stats *st) {
  if (st == NULL)
    return ex == NULL ? CF_EINVAL : check(ex) != 0 ? CF_EBADF : CF_EINVAL;
  cf__pin pin;
  int rc = cf__executor_pin(ex, &pin);
  if (rc != 0)
    return rc;
  orphaned(ex);
  memset(st, 0, sizeof *st);
  ex->vt->stats(ex, st);
  cf__executor_unpin(&pin);
  return 0;
}

int cf_executor_get_max_workers(cf_executor *ex) {
  int rc = check(ex);
  return rc != 0 ? rc : ex->vt->max_workers(ex);
}

void cf__executor_atfork(int phase) {
  if (phase == CF__FORK_PREPARE) {
    pthread_mutex_lock(&handles_mu);
  } else if (phase == CF__FORK_PARENT) {
    pthread_mutex_unlock(&handles_mu);
  } else {
    /* Single-threaded here: the pins of the parent's other threads stay
     * held forever. The forking thread's own (a fork from a callback run
     * inside a pinned call) are in its chain and will be released. */
    for (cf_executor *ex = live_list; ex != NULL; ex = ex->live_next) {
      uint32_t mine = 0;
      for (cf__pin *p = pins_here; p != NULL; p = p->up)
        mine += p->ex == ex;
      ex->pin_base = atomic_load(&ex->pins) - mine;
      if (ex->vt->lives_in_child != NULL && ex->vt->lives_in_child(ex))
        ex->fork_gen = cf__fork_generation();
    }
    pthread_mutex_init(&handles_mu, NULL);
  }
}
