/*
 * cf/generator.h - generators (Python's generator functions and
 * generator coroutines), on the same stacks and switches as loop tasks,
 * usable anywhere: on a plain thread, in a task, in another generator.
 *
 * A generator runs a body, fn(g, arg, &ret), on a stack of its own. The
 * body hands values out with cf_gen_yield, which suspends it until the
 * caller asks for the next one (cf_gen_next) or sends one in
 * (cf_gen_send: the value cf_gen_yield then returns, as `x = yield v`).
 * When the body returns, the generator is finished: its return value
 * (Python's StopIteration.value) is ret; a negative return code is its
 * error. cf_gen_yield_from delegates to another generator (`yield from`).
 *
 *     static int countdown(cf_gen *g, void *arg, cf_value *ret) {
 *       for (long i = (long)(intptr_t)arg; i > 0; i--) {
 *         cf_value v = {.u.i = i};
 *         if (cf_gen_yield(g, &v, NULL) != 0)
 *           return CF_ECANCELED;      // closed: clean up and return
 *       }
 *       ret->u.i = 0;
 *       return 0;
 *     }
 *
 * Values are passed by copy (the 32-byte cf_value); a value's dtor, if
 * any, goes with it to whoever receives it. A pointer into the body's own
 * stack is a fine value: the stack stays in place while the body is
 * suspended.
 *
 * Threads: a generator is not thread-safe; one caller at a time, from
 * any thread. Not for waiting: a body that waits (cf_future_wait, in a
 * task) suspends its caller's task with it, which is allowed.
 */
#ifndef CF_GENERATOR_H
#define CF_GENERATOR_H

#include <stddef.h>

#include "cf/error.h"
#include "cf/future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_gen cf_gen;

/** A generator's body. Returns 0 (finished; *ret is its return value,
 * initialised to zero) or a negative error code. */
typedef int (*cf_gen_fn)(cf_gen *g, void *arg, cf_value *ret);

/** Options for cf_gen_new; zero is the default. */
typedef struct cf_gen_opts {
  size_t stack_size; /**< 0: 64 KiB; at least 16 KiB */
} cf_gen_opts;

/** Creates a generator (not started: the first cf_gen_next runs the body
 * up to its first yield). Returns 0, CF_EINVAL, CF_ENOMEM. */
CF_EXTERN int cf_gen_new(cf_gen_fn fn, void *arg, const cf_gen_opts *opts,
                         cf_gen **out);

/**
 * Resumes the body with `in` (NULL: a zero value; Python's send(None))
 * as the result of its pending cf_gen_yield. Returns 1 and the yielded
 * value in *out (if out is non-NULL); 0 once the body has returned (the
 * return value: cf_gen_get_return), also on later calls; the body's
 * negative code if it failed (also on later calls); CF_EINVALSTATE when
 * called from inside its own body; CF_EINVAL for NULL g. The first call
 * starts the body: a non-zero `in` there is refused with CF_EINVAL (as
 * Python's "can't send non-None value to a just-started generator").
 */
CF_EXTERN int cf_gen_send(cf_gen *g, const cf_value *in, cf_value *out);

/** cf_gen_send(g, NULL, out): Python's next(). */
CF_EXTERN int cf_gen_next(cf_gen *g, cf_value *out);

/**
 * In the body: hands v out (NULL: a zero value) and suspends until the
 * caller resumes it; then stores what was sent (zero for next) in
 * *received if non-NULL and returns 0. Returns CF_ECANCELED when the
 * generator is being closed (Python's GeneratorExit): the body should
 * clean up and return. CF_EINVAL if g is not the running generator.
 */
CF_EXTERN int cf_gen_yield(cf_gen *g, const cf_value *v, cf_value *received);

/**
 * In the body: runs sub to its end (`yield from`): every value sub
 * yields is yielded by g, and what g's caller sends goes to sub. Returns
 * 0 and sub's return value in *result (if non-NULL); sub's error; or
 * CF_ECANCELED if g is closed meanwhile (sub is closed first). sub stays
 * the caller's to free.
 */
CF_EXTERN int cf_gen_yield_from(cf_gen *g, cf_gen *sub, cf_value *result);

/** The return value of a finished generator (a zero value otherwise);
 * borrowed, valid until cf_gen_free. */
CF_EXTERN const cf_value *cf_gen_get_return(const cf_gen *g);

/**
 * A failed generator's code and message together (cf/error.h): the
 * body's negative code and its cf_raise text (or cf_strerror(code));
 * {0, ""} while it has not failed (suspended, finished, closed);
 * {CF_EINVAL, ...} for NULL. A failure that cf_gen_yield_from passed up
 * keeps the delegate's message. The message is borrowed, valid until
 * cf_gen_free.
 */
CF_EXTERN cf_error cf_gen_get_error(const cf_gen *g);

/**
 * Closes a suspended generator (Python's close()): its pending
 * cf_gen_yield returns CF_ECANCELED and the body runs to its end. A body
 * that then returns CF_ECANCELED or 0 is finished, as a Python generator
 * that lets GeneratorExit through (cf_gen_next returns 0 from then on).
 * Returns 0 (closed, or it was not started or already finished); the
 * body's code if it failed with another one while closing (Python's
 * close() raises it; the generator has failed with it: cf_gen_next
 * returns it, cf_gen_get_error tells its message); or CF_EINVALSTATE if
 * the body yielded again instead of ending (it is then abandoned: its
 * stack is released by cf_gen_free without running it).
 */
CF_EXTERN int cf_gen_close(cf_gen *g);

/** Closes it if needed, releases its return value and frees it (NULL
 * is ignored). */
CF_EXTERN void cf_gen_free(cf_gen *g);

#ifdef __cplusplus
}
#endif

#endif /* CF_GENERATOR_H */
