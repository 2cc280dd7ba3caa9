/*
 * generator.c - generators on coro.c's contexts (cf/generator.h).
 *
 * A resume captures the caller's context (a thread, a task, another
 * generator: it may differ from one resume to the next), puts the value
 * sent in g->xfer and switches to the body; cf_gen_yield puts the value
 * out in g->xfer and switches back. Stacks come from a small cache per
 * thread, so that short-lived generators (one per cell in `life`) do
 * not mmap each time.
 */
#include "cf/generator.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "coro.h"
#include "future_int.h"
#include "loop_int.h"

enum { G_NEW, G_SUSPENDED, G_RUNNING, G_DONE, G_FAILED, G_ABANDONED };
enum { CACHE_MAX = 8 };
#define DEFAULT_STACK ((size_t)64 * 1024)

struct cf_gen {
  cf__ctx ctx;    /* the body's */
  cf__ctx caller; /* whoever resumed it last */
  cf__stack stack;
  size_t stack_size;
  cf_gen_fn fn;
  void *arg;
  int state;
  int rc;
  bool closing;
  cf_value ret;
  cf_value xfer; /* the value crossing a switch, either way */
  char *errmsg;  /* the failed body's cf_raise message, or NULL */
};

/* ---------------------------------------------------------------------- */
/* Stacks                                                                 */

typedef struct stack_cache {
  cf__stack s[CACHE_MAX];
  size_t n;
} stack_cache;

static _Thread_local stack_cache *cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_free(void *p) {
  stack_cache *c = p;
  for (size_t i = 0; i < c->n; i++)
    cf__stack_free(&c->s[i]);
  free(c);
  cache = NULL; /* a later destructor that frees a generator starts anew */
}

static void cache_key_init(void) { pthread_key_create(&cache_key, cache_free); }

static int stack_get(cf__stack *s, size_t size) {
  if (size == DEFAULT_STACK && cache != NULL && cache->n > 0) {
    *s = cache->s[--cache->n];
    return 0;
  }
  return cf__stack_alloc(s, size);
}

static void stack_put(cf__stack *s) {
  if (s->lo == NULL)
    return;
  if (s->size == DEFAULT_STACK) {
    if (cache == NULL) {
      pthread_once(&cache_once, cache_key_init);
      cache = cf__calloc(1, sizeof *cache);
      if (cache != NULL)
        pthread_setspecific(cache_key, cache);
    }
    if (cache != NULL && cache->n < CACHE_MAX) {
      cache->s[cache->n++] = *s;
      s->lo = NULL;
      return;
    }
  }
  cf__stack_free(s);
}

/* ---------------------------------------------------------------------- */

static const cf_value zero_value;

int cf_gen_new(cf_gen_fn fn, void *arg, const cf_gen_opts *opts,
               cf_gen **out) {
  if (out == NULL)
    return CF_EINVAL;
  *out = NULL;
  if (fn == NULL)
    return CF_EINVAL;
  size_t size = opts != NULL && opts->stack_size != 0 ? opts->stack_size
                                                      : DEFAULT_STACK;
  if (size < 16 * 1024 || size > ((size_t)1 << 40))
    return CF_EINVAL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size = (size + page - 1) / page * page;
  cf_gen *g = cf__calloc(1, sizeof *g);
  if (g == NULL)
    return CF_ENOMEM;
  g->fn = fn;
  g->arg = arg;
  g->stack_size = size;
  g->state = G_NEW;
  *out = g;
  return 0;
}

static void body(void *p) {
  cf_gen *g = p;
  int rc = g->fn(g, g->arg, &g->ret);
  if (rc > 0)
    rc = CF_ETASK;
  if (g->closing && rc == CF_ECANCELED)
    rc = 0; /* ended by close: finished, as Python's GeneratorExit */
  g->rc = rc;
  if (rc != 0)
    g->errmsg = cf__raise_take(rc); /* the body ran on this thread */
  g->state = rc == 0 ? G_DONE : G_FAILED;
  cf__ctx_exit(&g->ctx, &g->caller);
}

/* The body has ended: its stack can go. */
static void release_body(cf_gen *g) {
  cf__ctx_destroy(&g->ctx);
  stack_put(&g->stack);
}

/* Switches into the body and back; returns the state it left in. */
static int resume(cf_gen *g) {
  g->state = G_RUNNING;
  cf__ctx_capture(&g->caller);
  /* Entering the outermost generator of a task on a loop's shared stack:
   * tell the loop where the task's frames there end (see loop.c
   * shared_evict), until the body hands control back. */
  cf__ctx **slot = cf__task_gen_caller_slot();
  bool outermost = slot != NULL && *slot == NULL;
  if (outermost)
    *slot = &g->caller;
  cf__ctx_switch(&g->caller, &g->ctx);
  if (outermost)
    *slot = NULL;
  if (g->state == G_DONE || g->state == G_FAILED)
    release_body(g);
  return g->state;
}

int cf_gen_send(cf_gen *g, const cf_value *in, cf_value *out) {
  if (g == NULL)
    return CF_EINVAL;
  switch (g->state) {
  case G_DONE:
    return 0;
  case G_FAILED:
    return g->rc;
  case G_RUNNING:
  case G_ABANDONED:
    return CF_EINVALSTATE;
  case G_NEW:
    if (in != NULL && (in->u.i != 0 || in->size != 0 || in->dtor != NULL ||
                       in->type != NULL))
      return CF_EINVAL;
    if (stack_get(&g->stack, g->stack_size) != 0)
      return CF_ENOMEM;
    /* An overflow of the body's stack says so on this thread too, not
     * only on a loop's (an alternate signal stack, once per thread). */
    static _Thread_local bool guarded;
    if (!guarded)
      guarded = cf__stack_guard_thread() == 0;
    cf__ctx_make(&g->ctx, &g->stack, body, g);
    break;
  default:
    break;
  }
  g->xfer = in != NULL ? *in : zero_value;
  int st = resume(g);
  if (st == G_SUSPENDED) {
    if (out != NULL)
      *out = g->xfer;
    else
      cf_value_release(&g->xfer);
    return 1;
  }
  return st == G_DONE ? 0 : g->rc;
}

int cf_gen_next(cf_gen *g, cf_value *out) { return cf_gen_send(g, NULL, out); }

int cf_gen_yield(cf_gen *g, const cf_value *v, cf_value *received) {
  /* Only from g's own body: on its stack (not from a generator it
   * delegates to, nor from a task it suspended, which run elsewhere). */
  if (g == NULL || g->state != G_RUNNING || cf__stack_current() != &g->stack)
    return CF_EINVAL;
  g->xfer = v != NULL ? *v : zero_value;
  g->state = G_SUSPENDED;
  cf__ctx_switch(&g->ctx, &g->caller);
  /* Resumed: by a send, or by close. */
  if (g->closing) {
    if (received != NULL)
      *received = zero_value;
    return CF_ECANCELED;
  }
  if (received != NULL)
    *received = g->xfer;
  else
    cf_value_release(&g->xfer);
  return 0;
}

int cf_gen_yield_from(cf_gen *g, cf_gen *sub, cf_value *result) {
  if (g == NULL || sub == NULL || g->state != G_RUNNING ||
      cf__stack_current() != &g->stack)
    return CF_EINVAL;
  cf_value sent = zero_value, v;
  bool first = sub->state == G_NEW;
  for (;;) {
    int r = cf_gen_send(sub, first ? NULL : &sent, &v);
    first = false;
    if (r == 0) {
      if (result != NULL) {
        *result = sub->ret; /* moved out: the caller owns it now */
        memset(&sub->ret, 0, sizeof sub->ret);
      }
      return 0;
    }
    if (r < 0) /* sub's message goes with its code, as an exception */
      return sub->errmsg != NULL ? cf_raise(r, "%s", sub->errmsg) : r;
    if (cf_gen_yield(g, &v, &sent) == CF_ECANCELED) {
      cf_gen_close(sub);
      return CF_ECANCELED;
    }
  }
}

const cf_value *cf_gen_get_return(const cf_gen *g) {
  return g != NULL ? &g->ret : &zero_value;
}

cf_error cf_gen_get_error(const cf_gen *g) {
  if (g == NULL)
    return (cf_error){CF_EINVAL, cf_strerror(CF_EINVAL)};
  if (g->state != G_FAILED)
    return (cf_error){0, ""};
  return (cf_error){g->rc, g->errmsg != NULL ? g->errmsg : cf_strerror(g->rc)};
}

int cf_gen_close(cf_gen *g) {
  if (g == NULL)
    return CF_EINVAL;
  if (g->state == G_NEW) {
    g->state = G_DONE; /* never started: nothing to unwind */
    return 0;
  }
  if (g->state == G_RUNNING)
    return CF_EINVALSTATE;
  if (g->state != G_SUSPENDED)
    return g->state == G_ABANDONED ? CF_EINVALSTATE : 0;
  g->closing = true;
  int st = resume(g);
  if (st == G_SUSPENDED) { /* it yielded instead of ending */
    cf_value_release(&g->xfer);
    g->state = G_ABANDONED;
    return CF_EINVALSTATE;
  }
  return st == G_FAILED ? g->rc : 0; /* as Python's close() re-raises */
}

void cf_gen_free(cf_gen *g) {
  if (g == NULL)
    return;
  if (g->state == G_RUNNING) {
    /* Its body is running (freeing itself, or from another task while
     * the one driving it waits in the body): it would write into freed
     * memory when it goes on. Misuse, refused loudly. */
    fprintf(stderr, "cfutures: cf_gen_free of a generator whose body is "
                    "running: not freed\n");
    return;
  }
  if (g->state == G_SUSPENDED)
    cf_gen_close(g);
  if (g->state == G_ABANDONED)
    release_body(g); /* never resumed again: its frames are dropped */
  cf_value_release(&g->ret);
  free(g->errmsg);
  free(g);
}
