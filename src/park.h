/*
 * park.h - sleeping on a 32-bit word until another thread changes it
 * (Linux futex; a striped mutex/condvar table elsewhere or with
 * CF_NO_FUTEX). Internal.
 *
 * The protocol is the futex one: a waiter re-checks its condition, then
 * calls cf__park_wait(addr, seen, deadline), which returns at once if
 * *addr != seen. A waker changes *addr first, then calls cf__park_wake.
 * Spurious returns are possible: callers loop on their predicate.
 */
#ifndef CF_PARK_H
#define CF_PARK_H

#include <stdatomic.h>
#include <stdint.h>

/* Returns 0 (woken, value changed, or spurious) or CF_ETIMEDOUT once
 * cf_now_ns() >= deadline_ns (CF_FOREVER: never). */
int cf__park_wait(_Atomic uint32_t *addr, uint32_t seen, int64_t deadline_ns);

/* Wakes up to n waiters parked on addr (INT32_MAX: all). */
void cf__park_wake(_Atomic uint32_t *addr, int n);

#endif /* CF_PARK_H */
