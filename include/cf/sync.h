/*
 * cf/sync.h - semaphores, locks and events for tasks and threads
 * (asyncio.Semaphore, Lock, Event, and threading's, in one).
 *
 * Each works from any thread and from loop tasks at once: a wait
 * suspends a task (its loop keeps running) and blocks a thread. Waiters
 * are served in arrival order (FIFO). Every wait has a timeout
 * (CF_FOREVER for none) and ends with:
 *   0             acquired / the event is set
 *   CF_ETIMEDOUT  the timeout passed first (nothing acquired)
 *   CF_ECANCELED  the waiting task was cancelled (nothing acquired; a
 *                 permit handed over at the same moment goes on to the
 *                 next waiter, as in asyncio; for an event set at the
 *                 same moment, the cancellation is reported too)
 *   CF_EINVAL     NULL object or negative timeout
 *   CF_ENOMEM     no memory for the waiter
 *
 * Objects are created with *_new and freed with *_free; free one only
 * when nobody waits on it any more.
 */
#ifndef CF_SYNC_H
#define CF_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_semaphore cf_semaphore;

/** A counting semaphore with `value` permits (>= 0). Returns 0,
 * CF_EINVAL, CF_ENOMEM. */
CF_EXTERN int cf_semaphore_new(long value, cf_semaphore **out);

/** Frees it (NULL is ignored). */
CF_EXTERN void cf_semaphore_free(cf_semaphore *s);

/** Takes a permit, waiting up to timeout_ns for one. Returns as above. */
CF_EXTERN int cf_semaphore_acquire(cf_semaphore *s, int64_t timeout_ns);

/** Takes a permit if one is free now: 0, or CF_EAGAIN. */
CF_EXTERN int cf_semaphore_try_acquire(cf_semaphore *s);

/** Gives a permit back (to the first waiter, if any). Any thread or
 * task. Returns 0 or CF_EINVAL. */
CF_EXTERN int cf_semaphore_release(cf_semaphore *s);

/** The permits free now (0 while anyone waits). */
CF_EXTERN long cf_semaphore_get_value(const cf_semaphore *s);

typedef struct cf_lock cf_lock;

/** A mutual-exclusion lock (not reentrant). Returns 0, CF_EINVAL,
 * CF_ENOMEM. */
CF_EXTERN int cf_lock_new(cf_lock **out);
CF_EXTERN void cf_lock_free(cf_lock *l);

/** Locks it, waiting up to timeout_ns. Returns as above. */
CF_EXTERN int cf_lock_acquire(cf_lock *l, int64_t timeout_ns);

/** Unlocks it; returns 0, or CF_EINVALSTATE if it is not locked. */
CF_EXTERN int cf_lock_release(cf_lock *l);

CF_EXTERN bool cf_lock_locked(const cf_lock *l);

typedef struct cf_event cf_event;

/** An event, initially clear. Returns 0, CF_EINVAL, CF_ENOMEM. */
CF_EXTERN int cf_event_new(cf_event **out);
CF_EXTERN void cf_event_free(cf_event *e);

/** Sets it and wakes every waiter. Returns 0 or CF_EINVAL. */
CF_EXTERN int cf_event_set(cf_event *e);

/** Clears it. Returns 0 or CF_EINVAL. */
CF_EXTERN int cf_event_clear(cf_event *e);

CF_EXTERN bool cf_event_is_set(const cf_event *e);

/** Waits until it is set (0 at once if it is). Returns as above. */
CF_EXTERN int cf_event_wait(cf_event *e, int64_t timeout_ns);

#ifdef __cplusplus
}
#endif

#endif /* CF_SYNC_H */
