/*
 * args.h - strict number arguments for the programs: the whole string
 * must be the number, in range ("8x", "1e5", "" and overflow are
 * refused), so that a typo is a usage error, as Python's int() and
 * float() in argparse make it, not a different run.
 */
#ifndef CF_APPS_ARGS_H
#define CF_APPS_ARGS_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* A decimal integer in [min, max]: true and *out, or false. */
static inline bool arg_long(const char *s, long min, long max, long *out) {
  if (s == NULL || *s == '\0')
    return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (*end != '\0' || errno != 0 || v < min || v > max)
    return false;
  *out = v;
  return true;
}

/* A finite number in [min, max]: true and *out, or false. */
static inline bool arg_double(const char *s, double min, double max,
                              double *out) {
  if (s == NULL || *s == '\0')
    return false;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end != '\0' || errno != 0 || !(v >= min && v <= max))
    return false;
  *out = v;
  return true;
}

#endif /* CF_APPS_ARGS_H */
