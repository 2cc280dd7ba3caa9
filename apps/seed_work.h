/*
 * seed_work.h - the seeds' CPU-bound functions, once for every program
 * that runs them (cpu_bound, cpu_asyncio, cpu_processes, primes,
 * factors_pool, gcd): plain C, no library calls, so any executor can run
 * them.
 */
#ifndef CF_APPS_SEED_WORK_H
#define CF_APPS_SEED_WORK_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* fib(n), recursively (Real Python's cpu_*.py): hundreds of millions of
 * calls for n = 35. */
static inline long seed_fib(long n) {
  return n < 2 ? n : seed_fib(n - 2) + seed_fib(n - 1);
}

/* The largest i with i * i <= n (n >= 0), exact for every int64_t. */
static inline int64_t seed_isqrt(int64_t n) {
  int64_t r = (int64_t)floor(sqrt((double)n));
  while (r > 0 && r > n / r)
    r--;
  while ((r + 1) <= n / (r + 1))
    r++;
  return r;
}

/* The concurrent.futures notebook's factors(n) (n >= 1): trial division
 * by 2 and the odd numbers up to isqrt(n); what is left over is a factor
 * too. Writes at most 64 factors (enough for any int64_t) to out and
 * returns how many. factors(1) is (1,), as in the notebook. */
enum { SEED_MAX_FACTORS = 64 };

static inline int seed_factors(int64_t n, int64_t out[SEED_MAX_FACTORS]) {
  int k = 0;
  int64_t limit = seed_isqrt(n);
  for (int64_t i = 2; i <= limit; i = i == 2 ? 3 : i + 2) {
    while (n % i == 0) {
      out[k++] = i;
      n /= i;
      if (n == 1)
        return k;
    }
  }
  out[k++] = n;
  return k;
}

/* sum(factors(n)). */
static inline int64_t seed_sum_of_factors(int64_t n) {
  int64_t f[SEED_MAX_FACTORS], sum = 0;
  int k = seed_factors(n, f);
  for (int i = 0; i < k; i++)
    sum += f[i];
  return sum;
}

/* The seeds' primes.is_prime: trial division by the odd numbers up to
 * isqrt(n). */
static inline int seed_is_prime(int64_t n) {
  if (n < 2)
    return 0;
  if (n == 2)
    return 1;
  if (n % 2 == 0)
    return 0;
  for (int64_t i = 3; i <= n / i; i += 2)
    if (n % i == 0)
      return 0;
  return 1;
}

/* Effective Python's item 41 gcd: counts down from min(a, b) to the first
 * common divisor (slow on purpose). */
static inline int64_t seed_gcd(int64_t a, int64_t b) {
  int64_t low = a < b ? a : b;
  for (int64_t i = low; i > 0; i--)
    if (a % i == 0 && b % i == 0)
      return i;
  return 1;
}

#endif /* CF_APPS_SEED_WORK_H */
