/*
 * fault.h - fault injection for tests (SQLite's sqlite3FaultSim idea).
 * Internal: the tests link the static library and arm a fault point; the
 * library asks cf__fault(point) on the failure-prone paths it guards.
 */
#ifndef CF_FAULT_H
#define CF_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>

typedef enum cf__fault_point {
  CF__FAULT_THREAD_CREATE = 0, /* pthread_create fails with EAGAIN */
  CF__FAULT_ALLOC = 1,         /* library allocations return NULL */
  CF__FAULT_SUBMIT_PAUSE = 2,  /* submit pauses between enqueue and
                                  starting a worker (race tests) */
  CF__FAULT_POST_PAUSE = 3,    /* a foreign post to a loop pauses between
                                  its push and its wake-up (race tests) */
  CF__FAULT_PARK_PAUSE = 4,    /* a pool worker going to sleep pauses after
                                  its last look at the queue, before it is
                                  on the idle stack (race tests) */
  CF__FAULT_NPOINTS
} cf__fault_point;

/* Arms `point`: the next `skip` checks pass, then `count` checks fail
 * (count < 0: all later ones). cf__fault_arm(p, 0, 0) disarms. */
void cf__fault_arm(cf__fault_point point, int skip, int count);

extern _Atomic int cf__fault_armed; /* any point armed: the cheap test */
bool cf__fault_check(cf__fault_point point);

/* Pauses the caller (for CF__FAULT_SUBMIT_PAUSE): counts the pause in
 * cf__fault_paused, then sleeps 20 ms. */
extern _Atomic int cf__fault_paused;
void cf__fault_pause(void);

/* True if this check must fail. Costs one relaxed load when disarmed. */
static inline bool cf__fault(cf__fault_point point) {
  if (__builtin_expect(
          atomic_load_explicit(&cf__fault_armed, memory_order_relaxed) == 0, 1))
    return false;
  return cf__fault_check(point);
}

#endif /* CF_FAULT_H */
