/*
 * taskgroup.c - gather, wait_for and task groups: combinators over
 * futures for loop tasks (gather and wait_for work on any thread).
 *
 * A group keeps its children (references) in an array and a done
 * callback on each. The callbacks are added by the owner task, on the
 * loop's thread, so they run there (cf/loop.h, "Done callbacks") and the
 * group needs no lock: everything runs on that one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf/loop.h"
#include "common.h"
#include "loop_int.h"

/* Waits until f, whose cancellation was delivered, has ended (a task
 * cleans up first), as Python's _cancel_and_wait: none of it runs once
 * the caller returns. Returns whether a cancellation of the waiter came
 * meanwhile (it is delivered once: the caller reports it). */
static bool wait_out(cf_future *f) {
  bool cancelled = false;
  while (!cf_future_done(f)) {
    int r = cf_future_wait(f, CF_FOREVER);
    if (r == CF_ECANCELED)
      cancelled = true;
    else if (r != 0)
      break;
  }
  return cancelled;
}

int cf_gather(cf_future *const *fs, size_t n, unsigned flags,
              int64_t timeout_ns) {
  if ((fs == NULL && n > 0) || (flags & ~(unsigned)CF_GATHER_RETURN_ERRORS) ||
      timeout_ns < 0)
    return CF_EINVAL;
  cf_as_completed *it;
  int rc = cf_as_completed_new(fs, n, timeout_ns, &it);
  if (rc != 0)
    return rc;
  for (;;) {
    cf_future *f;
    int r = cf_as_completed_next(it, &f);
    if (r == 0) {
      rc = 0;
      break;
    }
    if (r < 0) {
      rc = r;
      if (r == CF_ECANCELED) { /* the waiting task: the children go too */
        /* All cancelled first (they clean up side by side), then waited
         * for: those that took the cancellation (a running pool job that
         * cannot be interrupted did not) are over when this returns, as
         * in Python, where the gather ends once every child is done. */
        bool *took = n > 0 ? calloc(n, sizeof *took) : NULL;
        for (size_t i = 0; i < n; i++) {
          bool t = !cf_future_done(fs[i]) && cf_future_cancel(fs[i]) == 0;
          if (took != NULL)
            took[i] = t;
          else if (t)
            (void)wait_out(fs[i]); /* (out of memory: one at a time) */
        }
        for (size_t i = 0; took != NULL && i < n; i++)
          if (took[i])
            (void)wait_out(fs[i]);
        free(took);
      }
      break;
    }
    int code = cf_future_cancelled(f) ? CF_ECANCELED
                                      : cf_future_get_error(f).code;
    cf_future_unref(f);
    if (code != 0 && !(flags & CF_GATHER_RETURN_ERRORS)) {
      rc = code;
      break;
    }
  }
  cf_as_completed_free(it);
  return rc;
}

int cf_wait_for(cf_future *f, int64_t timeout_ns) {
  if (f == NULL || timeout_ns < 0)
    return CF_EINVAL;
  int rc = cf_future_wait(f, timeout_ns);
  if (rc == CF_ECANCELED) {
    /* The waiter is cancelled: so is f, and, as in Python, it has ended
     * when this returns (unless it cannot be interrupted). */
    if (!cf_future_done(f) && cf_future_cancel(f) == 0)
      (void)wait_out(f);
    return rc;
  }
  if (rc != CF_ETIMEDOUT)
    return rc;
  if (cf_future_cancel(f) != 0) /* finished just now, or not interruptible */
    return cf_future_done(f) && !cf_future_cancelled(f) ? 0 : CF_ETIMEDOUT;
  /* Interruptible: let it end (a task cleans up first). A cancellation
   * of the waiter meanwhile is reported rather than the timeout. */
  return wait_out(f) ? CF_ECANCELED : CF_ETIMEDOUT;
}

/* ---------------------------------------------------------------------- */
/* Task groups                                                            */

struct cf_task_group {
  cf__ltask *owner;
  cf_future **kids;
  size_t n, cap;
  size_t remaining; /* children not done */
  cf_future *idle;  /* completed when remaining reaches 0 during a join */
  int err;
  char *msg;
  bool failing, joined;
  bool requested; /* the owner's cancellation, owed until joined */
  uint64_t ticket;
  uint64_t owner_gen; /* the owner's deliveries when the group was made */
};

static int check_owner(const cf_task_group *g) {
  if (g == NULL)
    return CF_EINVAL;
  cf__ltask *self = cf__task_self();
  if (self == NULL)
    return CF_ENOTTASK;
  return self == g->owner ? 0 : CF_EWRONGTHREAD;
}

static void abort_children(cf_task_group *g) {
  for (size_t i = 0; i < g->n; i++)
    if (!cf_future_done(g->kids[i]))
      cf_future_cancel(g->kids[i]);
}

static int on_child_done(cf_future *f, void *arg) {
  cf_task_group *g = arg;
  g->remaining--;
  if (!g->failing && !cf_future_cancelled(f)) {
    cf_error e = cf_future_get_error(f);
    if (e.code != 0) {
      g->failing = true;
      g->err = e.code;
      g->msg = cf__asprintf("%s", e.message);
      abort_children(g);
      g->ticket = cf__task_soft_cancel(g->owner);
      g->requested = true;
    }
  }
  if (g->remaining == 0 && g->idle != NULL)
    cf_future_set_result(g->idle, NULL);
  return 0;
}

int cf_task_group_new(cf_task_group **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  cf__ltask *self = cf__task_self();
  if (self == NULL)
    return CF_ENOTTASK;
  cf_task_group *g = cf__calloc(1, sizeof *g);
  if (g == NULL)
    return CF_ENOMEM;
  g->owner = self;
  g->owner_gen = cf__task_cancel_gen(self);
  *out = g;
  return 0;
}

int cf_task_group_add(cf_task_group *g, cf_future *f) {
  int rc = check_owner(g);
  if (rc != 0)
    return rc;
  if (f == NULL)
    return CF_EINVAL;
  if (g->failing || g->joined) {
    cf_future_cancel(f);
    return CF_ESHUTDOWN;
  }
  if (g->n == g->cap) {
    size_t cap = g->cap != 0 ? 2 * g->cap : 8;
    cf_future **k = cf__realloc(g->kids, cap, sizeof *k);
    if (k == NULL) {
      cf_future_cancel(f); /* not watched: it must not outlive the group */
      return CF_ENOMEM;
    }
    g->kids = k;
    g->cap = cap;
  }
  g->kids[g->n++] = cf_future_ref(f);
  g->remaining++;
  rc = cf_future_add_done_callback(f, on_child_done, g);
  if (rc != 0) { /* no callback: it cannot be watched, so it is not kept */
    g->remaining--;
    g->n--;
    cf_future_cancel(f);
    cf_future_unref(f);
  }
  return rc;
}

int cf_task_group_spawn(cf_task_group *g, cf_task_fn fn, void *arg,
                        cf_future **out) {
  if (out != NULL)
    *out = NULL;
  int rc = check_owner(g);
  if (rc != 0)
    return rc;
  if (g->failing || g->joined)
    return CF_ESHUTDOWN;
  cf_future *f;
  rc = cf_loop_spawn(cf__task_loop(g->owner), fn, arg, &f);
  if (rc != 0)
    return rc;
  rc = cf_task_group_add(g, f);
  if (rc != 0) {
    cf_future_unref(f);
    return rc;
  }
  if (out != NULL)
    *out = f;
  else
    cf_future_unref(f);
  return 0;
}

int cf_task_group_join(cf_task_group *g) {
  int rc = check_owner(g);
  if (rc != 0)
    return rc;
  g->joined = true;
  int outside = 0;
  /* The owner was cancelled from outside since the group was made, at a
   * wait before this join (its body's sleep, say): the cancellation is
   * the group's too, as Python's TaskGroup sees it leave the body. */
  if (cf__task_cancel_gen(g->owner) != g->owner_gen &&
      cf__task_last_cancel_external(g->owner)) {
    outside = CF_ECANCELED;
    abort_children(g);
  }
  while (g->remaining > 0) {
    int r;
    if (g->idle == NULL && cf_future_new(&g->idle) != 0) {
      /* No memory for the wait object: wait on a child itself. */
      size_t i = 0;
      while (i < g->n && cf_future_done(g->kids[i]))
        i++;
      r = i < g->n ? cf_future_wait(g->kids[i], CF_FOREVER)
                   : cf_yield(); /* their callbacks are still to run */
    } else {
      r = cf_future_wait(g->idle, CF_FOREVER);
    }
    /* A cancellation the group did not cause itself (cf_future_cancel of
     * the owner, a timeout scope around the join): the children go, and
     * the join reports it once they have ended. */
    if (r == CF_ECANCELED && outside == 0 &&
        (!g->failing || cf__task_last_cancel_external(g->owner))) {
      outside = CF_ECANCELED;
      abort_children(g);
    }
  }
  /* Let the callbacks routed to this thread for the last children run. */
  if (g->requested) {
    cf__task_soft_withdraw(g->owner, g->ticket);
    g->requested = false;
  }
  return g->failing ? g->err : outside;
}

cf_error cf_task_group_get_error(const cf_task_group *g) {
  cf_error e = {0, ""};
  if (g != NULL && g->failing) {
    e.code = g->err;
    e.message = g->msg != NULL ? g->msg : cf_strerror(g->err);
  }
  return e;
}

void cf_task_group_free(cf_task_group *g) {
  if (g == NULL)
    return;
  if (g->remaining > 0) {
    abort_children(g);
    if (check_owner(g) != 0) {
      /* Misuse: the children's callbacks still point here and run on the
       * owner's loop, so the group cannot be freed from here. */
      fprintf(stderr, "cfutures: cf_task_group_free outside its owner task "
                      "with children running: the group is leaked\n");
      return;
    }
    cf_task_group_join(g);
  }
  /* Freed without a join after a child failed: the group's cancellation
   * of its owner goes with the group, unless a wait already took it. */
  if (g->requested && check_owner(g) == 0)
    cf__task_soft_withdraw(g->owner, g->ticket);
  for (size_t i = 0; i < g->n; i++)
    cf_future_unref(g->kids[i]);
  if (g->idle != NULL)
    cf_future_unref(g->idle);
  free(g->kids);
  free(g->msg);
  free(g);
}
