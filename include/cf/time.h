/*
 * cf/time.h - time and timeouts.
 *
 * Every blocking call in cfutures takes a relative timeout in nanoseconds
 * (int64_t timeout_ns) with these meanings:
 *
 *   CF_FOREVER   wait without limit (the only spelling of "forever")
 *   0            do not wait: poll once (in a loop's task too: a poll
 *                is no await point, nothing else runs meanwhile and no
 *                cancellation is delivered there)
 *   > 0          wait at most this long (but see thread_pool.h: a wait
 *                inside one of a pool's own workers may run a task
 *                meanwhile and return up to that task's length late)
 *   < 0          invalid: the call returns CF_EINVAL and does nothing
 *
 * Internally a timeout is turned once into an absolute deadline on the
 * monotonic clock and the time left is recomputed on every retry, so
 * spurious wake-ups never extend a wait. Functions whose name ends in
 * _until take such an absolute deadline directly (from cf_now_ns()).
 */
#ifndef CF_TIME_H
#define CF_TIME_H

#include <stdint.h>

#include "cf/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/** No timeout / no deadline. */
#define CF_FOREVER INT64_MAX

/** Convenience conversions to nanoseconds (integer arguments). */
#define CF_USEC(n) ((int64_t)(n)*INT64_C(1000))
#define CF_MSEC(n) ((int64_t)(n)*INT64_C(1000000))
#define CF_SEC(n) ((int64_t)(n)*INT64_C(1000000000))

/** The monotonic clock in nanoseconds. Thread-safe, never fails. */
CF_EXTERN int64_t cf_now_ns(void);

/**
 * The absolute deadline for a relative timeout started now: CF_FOREVER
 * for CF_FOREVER (or any timeout that would overflow), now + timeout
 * otherwise. A negative timeout yields a deadline in the past; callers
 * that must reject negative timeouts check before calling.
 */
CF_EXTERN int64_t cf_deadline_after(int64_t timeout_ns);

#ifdef __cplusplus
}
#endif

#endif /* CF_TIME_H */
