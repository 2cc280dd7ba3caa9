/* util.c - errors, time and the small helpers of common.h. */
#define _GNU_SOURCE /* strerrordesc_np, strerrorname_np */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf/error.h"
#include "cf/time.h"
#include "common.h"
#include "fault.h"

void cf__assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "cfutures: internal invariant failed: %s (%s:%d)\n", expr,
          file, line);
  abort();
}

void cf__fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cfutures: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

void *cf__malloc(size_t size) {
  return cf__fault(CF__FAULT_ALLOC) ? NULL : malloc(size != 0 ? size : 1);
}

void *cf__calloc(size_t n, size_t size) {
  if (cf__fault(CF__FAULT_ALLOC) || (n != 0 && size > SIZE_MAX / n))
    return NULL;
  return calloc(n != 0 ? n : 1, size != 0 ? size : 1);
}

void *cf__realloc(void *p, size_t n, size_t size) {
  if (cf__fault(CF__FAULT_ALLOC) || (n != 0 && size > SIZE_MAX / n))
    return NULL;
  return realloc(p, n * size != 0 ? n * size : 1);
}

void *cf__aligned_alloc(size_t align, size_t size) {
  if (cf__fault(CF__FAULT_ALLOC) || size > SIZE_MAX - align)
    return NULL;
  return aligned_alloc(align, (size + align - 1) / align * align);
}

char *cf__vasprintf(const char *fmt, va_list ap) {
  if (fmt == NULL)
    return NULL;
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s != NULL)
    vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

char *cf__asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = cf__vasprintf(fmt, ap);
  va_end(ap);
  return s;
}

const char *cf_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
  /* The codes the library shares with POSIX read as what they mean here
   * (glibc says "Connection timed out" for ETIMEDOUT). */
  case CF_ETIMEDOUT:
    return "timed out";
  case CF_ECANCELED:
    return "cancelled";
  case CF_EDEADLK:
    return "waiting here would deadlock";
#define CF__ERRNO_MSG(name, value, msg)                                        \
  case value:                                                                  \
    return msg;
    CF_ERRNO_MAP(CF__ERRNO_MSG)
#undef CF__ERRNO_MSG
  default:
    break;
  }
  if (code < 0 && code > -4096) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *s = strerrordesc_np(-code);
    if (s != NULL)
      return s;
#endif
  }
  return "unknown error";
}

const char *cf_err_name(int code) {
  switch (code) {
  case 0:
    return "OK";
#define CF__ERRNO_NAME(name, value, msg)                                       \
  case value:                                                                  \
    return "CF_" #name;
    CF_ERRNO_MAP(CF__ERRNO_NAME)
#undef CF__ERRNO_NAME
  default:
    break;
  }
  if (code < 0 && code > -4096) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *s = strerrorname_np(-code);
    if (s != NULL)
      return s;
#endif
  }
  return "UNKNOWN";
}

int64_t cf_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cf_deadline_after(int64_t timeout_ns) {
  if (timeout_ns == CF_FOREVER)
    return CF_FOREVER;
  int64_t now = cf_now_ns();
  if (timeout_ns > 0 && now > CF_FOREVER - timeout_ns)
    return CF_FOREVER;
  return now + timeout_ns;
}

void cf__spin_lock_slow(cf__spinlock *l) {
  for (unsigned n = 0;; n++) {
    while (atomic_load_explicit(&l->locked, memory_order_relaxed)) {
      if (++n < 256) {
        cf__cpu_relax();
      } else {
        sched_yield(); /* the holder may have been preempted */
        n = 0;
      }
    }
    if (!atomic_exchange_explicit(&l->locked, 1, memory_order_acquire))
      return;
  }
}
