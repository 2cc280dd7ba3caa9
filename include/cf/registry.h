/*
 * cf/registry.h - named tasks and byte payloads: tasks that can run in
 * another process (the process pool; later MPI ranks).
 *
 * Functions cannot be shipped between processes, so a task that may run
 * in another process is registered under a stable name, and its argument
 * and result are bytes:
 *
 *     CF_TASK(is_prime) {                    // defines and registers it
 *       int64_t n;
 *       memcpy(&n, arg, sizeof n);           // the argument's bytes
 *       result->u.i = check(n);              // an 8-byte word comes back
 *       return 0;
 *     }
 *     ...
 *     int64_t n = 112272535095293;
 *     cf_executor_submit_bytes(ex, "is_prime", &n, sizeof n, &f);
 *
 * Registration runs before main (a constructor), so the name resolves in
 * every process that runs the same program: a forked child, or one started
 * afresh with exec. The same task runs unchanged on the thread pool: the
 * executor is a one-line change.
 *
 * Payloads. cf_executor_submit_bytes copies the argument (the caller may
 * free or reuse its buffer at once, whatever the executor); the task
 * sees a pointer to its copy, 16-byte aligned, and cf_arg_size(arg) gives
 * its length. A task returns bytes with cf_value_set_bytes or
 * cf_value_set_string (an owned copy, freed with the future), or a plain
 * 8-byte word in result->u (integers, doubles) with size 0.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef CF_REGISTRY_H
#define CF_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"
#include "cf/executor.h"
#include "cf/future.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The longest task name, in bytes (without the terminating NUL). */
#define CF_TASK_NAME_MAX 255

/**
 * Defines a task function `name` (a cf_task_fn: its parameters are
 * `void *arg` and `cf_value *result`, either may go unused) and registers
 * it under the name "name" when the program starts (GCC and Clang: it
 * uses a constructor). Use at file scope, followed by the
 * function's body. A name registered twice for different functions
 * (two files defining the same task) is reported on stderr at start-up,
 * and the first one keeps the name.
 */
#define CF_TASK(name)                                                          \
  static int name(void *arg, cf_value *result);                                \
  __attribute__((constructor)) static void cf__task_register_##name(void) {    \
    cf__task_register_static(#name, name);                                     \
  }                                                                            \
  static int name(void *arg __attribute__((unused)),                           \
                  cf_value *result __attribute__((unused)))

/**
 * Registers fn under name (copied). Returns 0 (also if fn already has
 * that name), CF_EEXIST if another function has it, CF_EINVAL for a NULL
 * fn, or a name that is empty or longer than CF_TASK_NAME_MAX, CF_ENOMEM.
 */
CF_EXTERN int cf_task_register(const char *name, cf_task_fn fn);

/** The function registered under name, or NULL. */
CF_EXTERN cf_task_fn cf_task_lookup(const char *name);

/** The name fn is registered under (static: valid for the program's
 * lifetime), or NULL. */
CF_EXTERN const char *cf_task_name_of(cf_task_fn fn);

/**
 * Submits the task registered under name with a copy of arg[0..size) as
 * its argument (Python's submit with a picklable argument). On any
 * executor: the thread pool runs the function on the copy; a process pool
 * ships the copy and the name. Returns what cf_executor_submit_task
 * returns, plus CF_EUNKNOWNTASK for a name nobody registered, CF_EINVAL
 * (NULL arg with size > 0), CF_ENOMEM.
 */
CF_EXTERN int cf_executor_submit_bytes(cf_executor *ex, const char *name,
                                       const void *arg, size_t size,
                                       cf_future **out);

/**
 * The length of an argument a task received from cf_executor_submit_bytes,
 * or as a sized map item (cf_map_opts.item_size > 0), on any executor (a
 * process pool passes arguments the same way). Only for those arguments:
 * anything else is undefined.
 */
CF_EXTERN size_t cf_arg_size(const void *arg);

/**
 * Makes *v own a copy of p[0..n): u.ptr, size n, a destructor, type
 * "bytes". Any value *v held is released first. Returns 0, CF_EINVAL,
 * CF_ENOMEM (then *v is a zero value).
 */
CF_EXTERN int cf_value_set_bytes(cf_value *v, const void *p, size_t n);

/** cf_value_set_bytes of s and its NUL (size strlen(s) + 1), type "str". */
CF_EXTERN int cf_value_set_string(cf_value *v, const char *s);

/* Plain values. Small helpers over the byte payloads above, for the
 * common cases: an integer, a double, a fixed-size struct, a string. A
 * struct travels as its bytes: the same program runs on both sides, so
 * the layout matches (pointers inside it do not travel). */

/** cf_executor_submit_bytes of the 8 bytes of v. */
CF_EXTERN int cf_executor_submit_i64(cf_executor *ex, const char *name,
                                     int64_t v, cf_future **out);

/** cf_executor_submit_bytes of the 8 bytes of v. */
CF_EXTERN int cf_executor_submit_f64(cf_executor *ex, const char *name,
                                     double v, cf_future **out);

/** cf_executor_submit_bytes of s and its NUL. CF_EINVAL for a NULL s. */
CF_EXTERN int cf_executor_submit_string(cf_executor *ex, const char *name,
                                        const char *s, cf_future **out);

/**
 * In a task, reads its argument (one from cf_executor_submit_bytes or a
 * pool that passes arguments that way) as exactly `size` bytes into out:
 * a fixed struct, or any plain value. Returns 0, or CF_EINVAL if the
 * argument has another length (out is then untouched) or a pointer is
 * NULL. A task that returns the code reports the mismatch as its error.
 */
CF_EXTERN int cf_arg_get(const void *arg, void *out, size_t size);

/** cf_arg_get of an int64_t. */
CF_EXTERN int cf_arg_get_i64(const void *arg, int64_t *out);

/** cf_arg_get of a double. */
CF_EXTERN int cf_arg_get_f64(const void *arg, double *out);

/**
 * The argument as a string: arg itself if its bytes end with their first
 * NUL (what cf_executor_submit_string sends), else NULL.
 */
CF_EXTERN const char *cf_arg_get_string(const void *arg);

/** Makes *v the integer x (u.i, size 0, type "int"); any value *v held is
 * released first. NULL v is ignored. */
CF_EXTERN void cf_value_set_i64(cf_value *v, int64_t x);

/** Makes *v the double x (u.d, size 0, type "float"), as above. */
CF_EXTERN void cf_value_set_f64(cf_value *v, double x);

/**
 * Copies a bytes value (a result from cf_value_set_bytes, here or in a
 * worker process) of exactly `size` bytes into out: the reading side of a
 * fixed struct. Returns 0, or CF_EINVAL if the value holds another length
 * or is not an owned buffer (a plain word, whatever its size field), or a
 * pointer is NULL.
 */
CF_EXTERN int cf_value_get(const cf_value *v, void *out, size_t size);

/* Private: CF_TASK's registration (reports a clash instead of returning). */
CF_EXTERN void cf__task_register_static(const char *name, cf_task_fn fn);

#ifdef __cplusplus
}
#endif

#endif /* CF_REGISTRY_H */
