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
 *
 * Locks: quarantine_mu is a leaf lock.
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

static pthread_mutex_t quarantine_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *quarantine[QUARANTINE];
static unsigned quarantine_pos;

void cf__executor_init(cf_executor *ex, const cf__executor_vtable *vt) {
  ex->vt = vt;
  ex->fork_gen = cf__fork_generation();
  atomic_init(&ex->pins, 0);
  atomic_init(&ex->orphan_done, 0);
  atomic_store_explicit(&ex->magic, CF__EXECUTOR_LIVE, memory_order_release);
}

static int check(cf_executor *ex) {
  if (ex == NULL)
    return CF_EINVAL;
  uint32_t m = atomic_load_explicit(&ex->magic, memory_order_acquire);
  return m == CF__EXECUTOR_LIVE ? 0 : CF_EBADF;
}

int cf__executor_pin(cf_executor *ex) {
  if (ex == NULL)
    return CF_EINVAL;
  atomic_fetch_add(&ex->pins, 1);
  if (atomic_load(&ex->magic) != CF__EXECUTOR_LIVE) {
    atomic_fetch_sub(&ex->pins, 1);
    return CF_EBADF;
  }
  return 0;
}

void cf__executor_unpin(cf_executor *ex) { atomic_fetch_sub(&ex->pins, 1); }

static void wait_unpinned(cf_executor *ex) {
  while (atomic_load(&ex->pins) != 0)
    sched_yield(); /* pinned calls are short once the executor is shut down */
}

bool cf__executor_forked(cf_executor *ex) {
  return CF__UNLIKELY(ex->fork_gen != cf__fork_generation());
}

void cf__executor_orphan(cf_executor *ex) {
  int zero = 0;
  if (atomic_compare_exchange_strong(&ex->orphan_done, &zero, 1)) {
    if (ex->vt->forked != NULL)
      ex->vt->forked(ex);
    atomic_store(&ex->orphan_done, 2);
    return;
  }
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
  int rc = cf__executor_pin(ex);
  if (rc != 0)
    return rc;
  orphaned(ex);
  rc = ex->vt->shutdown(ex, flags, deadline);
  cf__executor_unpin(ex);
  return rc;
}

int cf_executor_free(cf_executor *ex) {
  int rc = check(ex);
  if (rc != 0)
    return rc;
  orphaned(ex);
  /* From one of its own threads it could never finish: refuse before
   * claiming the handle, so nothing changes. */
  if (ex->vt->is_own_thread != NULL && ex->vt->is_own_thread(ex))
    return CF_EDEADLK;
  /* Claim the handle so two racing frees cannot both proceed; calls that
   * pin from now on fail with CF_EBADF. */
  uint32_t live = CF__EXECUTOR_LIVE;
  if (!atomic_compare_exchange_strong(&ex->magic, &live, CF__EXECUTOR_DEAD))
    return CF_EBADF;
  rc = ex->vt->shutdown(ex, CF_SHUTDOWN_WAIT, CF_FOREVER);
  CF__ASSERT(rc == 0); /* no timeout, not from its own thread */
  wait_unpinned(ex);
  ex->vt->destroy(ex);
  pthread_mutex_lock(&quarantine_mu);
  cf_executor *old = quarantine[quarantine_pos];
  quarantine[quarantine_pos] = ex;
  quarantine_pos = (quarantine_pos + 1) % QUARANTINE;
  pthread_mutex_unlock(&quarantine_mu);
  if (old != NULL)
    wait_unpinned(old); /* a stale call may still be failing on it */
  free(old);
  return 0;
}

int cf_executor_get_stats(cf_executor *ex, cf_executor_stats *st) {
  if (st == NULL)
    return ex == NULL ? CF_EINVAL : check(ex) != 0 ? CF_EBADF : CF_EINVAL;
  int rc = cf__executor_pin(ex);
  if (rc != 0)
    return rc;
  orphaned(ex);
  memset(st, 0, sizeof *st);
  ex->vt->stats(ex, st);
  cf__executor_unpin(ex);
  return 0;
}

int cf_executor_get_max_workers(cf_executor *ex) {
  int rc = check(ex);
  return rc != 0 ? rc : ex->vt->max_workers(ex);
}

void cf__executor_atfork(int phase) {
  if (phase == CF__FORK_PREPARE)
    pthread_mutex_lock(&quarantine_mu);
  else if (phase == CF__FORK_PARENT)
    pthread_mutex_unlock(&quarantine_mu);
  else
    pthread_mutex_init(&quarantine_mu, NULL);
}
