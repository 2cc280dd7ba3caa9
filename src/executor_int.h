/*
 * executor_int.h - what a backend implements. Internal: not installed.
 *
 * A backend embeds `struct cf_executor` as the first member of its own
 * object, allocated with malloc/aligned_alloc, and fills in a vtable. The
 * public functions in executor.c validate arguments and the handle, then
 * dispatch. Adding a backend never touches callers.
 */
#ifndef CF_EXECUTOR_INT_H
#define CF_EXECUTOR_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cf/executor.h"

typedef struct cf__executor_vtable {
  const char *name;
  /* Submit task (validated: fn non-NULL) with an absolute deadline for
   * room in a bounded queue. Same returns as cf_executor_submit_task. */
  int (*submit)(cf_executor *ex, const cf_task *task, int64_t deadline_ns,
                cf_future **out);
  int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
  /* Shut down with wait and release everything except the object itself
   * (which the base keeps in quarantine). CF_EDEADLOCK: refused (called
   * from one of its workers); nothing was released. */
  int (*destroy)(cf_executor *ex);
  void (*stats)(cf_executor *ex, cf_executor_stats *st);
  int (*max_workers)(cf_executor *ex);
} cf__executor_vtable;

#define CF__EXECUTOR_LIVE 0x63665845u /* "cfXE" */
#define CF__EXECUTOR_DEAD 0x64656164u /* "dead" */

struct cf_executor {
  _Atomic uint32_t magic; /* LIVE, or DEAD once freed (quarantined) */
  const cf__executor_vtable *vt;
};

/* Initialises the base of a new backend object. */
void cf__executor_init(cf_executor *ex, const cf__executor_vtable *vt);

#endif /* CF_EXECUTOR_INT_H */
