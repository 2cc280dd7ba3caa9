/*
 * loop_int.h - what the loop's task groups and combinators
 * (taskgroup.c) use of its tasks. Internal: not installed. All of it is
 * for the loop's thread.
 */
#ifndef CF_LOOP_INT_H
#define CF_LOOP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "cf/loop.h"

typedef struct ltask cf__ltask;

/* The running task, or NULL. */
cf__ltask *cf__task_self(void);

/* For generator.c: where a task on the loop's shared stack keeps the
 * caller context of the outermost generator it runs inside (NULL while
 * in none), so that evicting it saves only its own frames; NULL when no
 * shared-stack task runs. */
struct cf__ctx;
struct cf__ctx **cf__task_gen_caller_slot(void);
cf_loop *cf__task_loop(cf__ltask *t);
cf_future *cf__task_future(cf__ltask *t);

/* A cancellation a scope or a group owes t: delivered at its current or
 * next wait like cf_future_cancel's, and withdrawn by
 * cf__task_soft_withdraw(t, ticket) if it has not been delivered by
 * then. */
uint64_t cf__task_soft_cancel(cf__ltask *t);
void cf__task_soft_withdraw(cf__ltask *t, uint64_t ticket);

/* Whether the last cancellation delivered to t included one from
 * cf_future_cancel (not only scopes' and groups'). */
bool cf__task_last_cancel_external(const cf__ltask *t);
/* How many cancellations have been delivered to t so far. */
uint64_t cf__task_cancel_gen(const cf__ltask *t);

/* For net.c: a wait without a future. cf__task_park suspends the running
 * task t until cf__task_unpark(t), the deadline, or a cancellation, and
 * returns 0, CF_ETIMEDOUT, CF_ECANCELED (delivered as any wait's), or
 * CF_ENOMEM (no memory for the deadline's timer). It may also return 0
 * without an unpark (the wait hook's wake of the task): callers recheck
 * what they wait for. cf__task_unpark ends
 * t's park if t is parked, and does nothing otherwise (its park ended
 * already: the caller's record of who waits must be cleared by the
 * parked task when its park returns). Loop thread only. */
int cf__task_park(cf__ltask *t, int64_t deadline);
void cf__task_unpark(cf__ltask *t);

/* For io.c: the loop's libuv loop, and whether the calling thread is the
 * loop's (running it, or its owner while it is not running). */
struct uv_loop_s;
struct uv_loop_s *cf__loop_uv(cf_loop *L);
bool cf__loop_on_thread(cf_loop *L);

/* For net.c: the loop's read buffer of CF__LOOP_READ_SCRATCH bytes
 * (allocated at the first call; NULL if out of memory), which libuv reads
 * into and a stream copies out of in the same callback, so that a stream
 * holds only the bytes that arrived. Loop thread only. */
#define CF__LOOP_READ_SCRATCH ((size_t)64 * 1024)
char *cf__loop_read_scratch(cf_loop *L);

/* net.c: a libuv resolver code (UV_EAI_*, whose numbers the library's own
 * codes share) as the library reports it: CF_ERESOLVE, CF_ENOMEM,
 * CF_ECANCELED; any other code unchanged. */
int cf__resolve_error(int uv);

#endif /* CF_LOOP_INT_H */
