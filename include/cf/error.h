/*
 * cf/error.h - error codes shared by every cfutures module.
 *
 * Convention: every function that can fail returns 0 (or a documented
 * non-negative value) on success and a negative code on failure.
 *
 *   - System failures are exactly -errno (-EINVAL, -ENOMEM, -EAGAIN, ...).
 *   - Library conditions that POSIX names are that errno, negated, as in
 *     libuv: CF_ETIMEDOUT is -ETIMEDOUT, CF_ECANCELED is -ECANCELED,
 *     CF_EDEADLK is -EDEADLK. A code from libuv (UV_ETIMEDOUT, ...) or
 *     from a system call therefore compares equal to the library's own.
 *   - Library conditions that have no errno of that meaning use the
 *     reserved range -3000 .. -3099, listed in CF_ERRNO_MAP below.
 *   - A task's own failure carries whatever negative code the task chose;
 *     the library passes it through unchanged (so a task's own -ETIMEDOUT
 *     reads like a wait's: cf/future.h says how to tell them apart).
 *
 * cf_strerror() and cf_err_name() accept any of these and never return
 * NULL. Both are thread-safe and return static strings.
 */
#ifndef CF_ERROR_H
#define CF_ERROR_H

#include <errno.h>

/* The library is built with -fvisibility=hidden; CF_EXTERN exports. */
#if defined(__GNUC__)
#define CF_EXTERN __attribute__((visibility("default")))
#else
#define CF_EXTERN
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The library's own codes: XX(name, value, message). One list generates
 * the enum, cf_strerror() and cf_err_name().
 */
#define CF_ERRNO_MAP(XX)                                                       \
  XX(EBROKEN, -3003, "executor is broken (an initializer failed or a worker died)")\
  XX(ESHUTDOWN, -3004, "executor has been shut down")                          \
  XX(EINVALSTATE, -3005, "future is not in a state that allows this")          \
  XX(ETASK, -3007, "task failed")                                              \
  XX(EFORKED, -3008, "executor belongs to the parent of this forked process") \
  XX(EWRONGTHREAD, -3009, "called from a thread that is not the loop's")       \
  XX(ESTOPPED, -3010, "the loop was stopped before the future was done")    \
  XX(ENOTTASK, -3011, "only a task running on a loop can do this")          \
  XX(EUNKNOWNTASK, -3012, "no task is registered under that name")         \
  XX(EEOF, -3013, "the stream ended before the bytes expected")               \
  XX(EHTTPSTATUS, -3014, "the HTTP response has an error status")            \
  XX(EREQUEST, -3015, "the HTTP request failed before a response came")      \
  XX(EWORKER, -3016, "the worker process running the task died")            \
  XX(ERESOLVE, -3017, "the host name could not be resolved")

/** Library error codes. All are negative. */
enum cf_errno {
#define CF__ERRNO_ENUM(name, value, msg) CF_##name = (value),
  CF_ERRNO_MAP(CF__ERRNO_ENUM)
#undef CF__ERRNO_ENUM
  /* Aliases for the system codes the library returns, so callers can
   * compare against one prefix. */
  CF_ETIMEDOUT = -ETIMEDOUT, /**< a deadline passed */
  CF_ECANCELED = -ECANCELED, /**< the future was cancelled */
  CF_EDEADLK = -EDEADLK,     /**< waiting here would deadlock (own task) */
  CF_EINVAL = -EINVAL,
  CF_ENOMEM = -ENOMEM,
  CF_EAGAIN = -EAGAIN, /**< would block: a bounded queue is full */
  CF_EBUSY = -EBUSY,   /**< cancel: the task is already running or done */
  CF_EBADF = -EBADF,   /**< the handle is not (or no longer) a live object */
  CF_EEXIST = -EEXIST, /**< a task name is taken by another function */
  CF_ENOBUFS = -ENOBUFS /**< read_until: the limit came before the delimiter */
};

/**
 * A human-readable message for any code this library returns (library
 * codes, negated errno values, task codes). Unknown codes get a generic
 * message. Never NULL; the string is static. Thread-safe.
 */
CF_EXTERN const char *cf_strerror(int code);

/**
 * The symbolic name of a code: "CF_EBROKEN" for the library's own codes
 * (-3xxx), the errno name for a negated errno ("ENOENT"; and
 * "ETIMEDOUT", "ECANCELED" for CF_ETIMEDOUT and CF_ECANCELED, which are
 * those errnos), "OK" for 0, "UNKNOWN" otherwise. Never NULL; static.
 * Thread-safe.
 */
CF_EXTERN const char *cf_err_name(int code);

/**
 * A failure's code and message together (cf_future_get_error,
 * cf_map_get_error). `message` is never NULL: the failure's own text, or
 * cf_strerror(code); "" when code is 0. It is borrowed from the object it
 * came from and stays valid as long as that object does.
 */
typedef struct cf_error {
  int code;            /**< 0 or a negative code */
  const char *message; /**< never NULL */
} cf_error;

#ifdef __cplusplus
}
#endif

#endif /* CF_ERROR_H */
