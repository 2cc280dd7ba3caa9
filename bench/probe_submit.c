/*
 * probe_submit.c - what the locked instruction of a submit costs when the
 * task records are cold: a model of throughput (a) outside the library.
 * One producer initialises N 64-byte records (recycled between runs, as
 * the future cache recycles futures) and queues them; two consumers take
 * batches of up to 32, claim each (CAS), publish it (CAS) and drop a
 * reference (xadd); the producer then collects every record (acquire
 * load, xadd), as `bench_cf`'s throughput does.
 *
 *   lock  the queue is an array under a spinlock (xchg), as the pool's
 *         FIFO under qlock: one locked instruction per submit
 *   free  the queue is an array the producer publishes with a release
 *         store of its tail (no locked instruction); consumers take
 *         batches with a CAS on the head; then a plain load of a
 *         sleepers word (a wake check whose order a membarrier() on the
 *         sleeping side would provide)
 *   fence the same with a full fence before that load (a wake check
 *         that orders itself, as a symmetric Dekker protocol needs)
 *   pre   as lock, but a consumer reads the entries it is about to take
 *         before it takes the lock (the critical section takes no miss)
 *
 *   probe_submit [N] [RUNS]      (1000000, 7; the modes alternate)
 *
 * Prints RESULT lines: ns per task for the whole run and for the submit
 * phase alone. bench/NOTES.md section 23.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { PENDING = 0, RUNNING = 1, FINISHED = 2 };

typedef struct rec {
  _Atomic uint32_t state;
  _Atomic uint32_t refs;
  void *fn, *arg, *dtor;
  char pad[64 - 8 - 3 * sizeof(void *)];
} __attribute__((aligned(64))) rec;

static rec *recs;
static rec **q;
static long n;
static int mode; /* 0 lock, 1 free, 2 fence */
static _Alignas(64) _Atomic int sleepers;

static _Alignas(64) _Atomic int qlock;
static _Alignas(64) _Atomic long q_tail;
static _Alignas(64) _Atomic long q_head;
static _Alignas(64) _Atomic long taken;
static _Alignas(64) _Atomic int go;

static void lock(void) {
  while (atomic_exchange_explicit(&qlock, 1, memory_order_acquire))
    while (atomic_load_explicit(&qlock, memory_order_relaxed))
      __builtin_ia32_pause();
}
static void unlock(void) {
  atomic_store_explicit(&qlock, 0, memory_order_release);
}

static void run_rec(rec *r) {
  uint32_t s = PENDING;
  atomic_compare_exchange_strong_explicit(&r->state, &s, RUNNING,
                                          memory_order_acquire,
                                          memory_order_relaxed);
  s = RUNNING;
  atomic_compare_exchange_strong_explicit(&r->state, &s, FINISHED,
                                          memory_order_acq_rel,
                                          memory_order_relaxed);
  atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel);
}

static void *consumer(void *arg) {
  (void)arg;
  while (atomic_load(&go) == 0)
    ;
  rec *batch[32];
  while (atomic_load_explicit(&taken, memory_order_relaxed) < n) {
    long k = 0;
    if (mode == 0 || mode == 3) {
      /* Look before locking, as the pool's workers look at qlen. */
      if (atomic_load_explicit(&q_tail, memory_order_relaxed) ==
          atomic_load_explicit(&q_head, memory_order_relaxed)) {
        __builtin_ia32_pause();
        continue;
      }
      if (mode == 3) {
        /* Read the entries before the lock: the critical section then
         * takes no miss, and the producer waits less for the lock. */
        long h0 = atomic_load_explicit(&q_head, memory_order_relaxed);
        long t0 = atomic_load_explicit(&q_tail, memory_order_acquire);
        for (long i = h0; i < t0 && i < h0 + 32; i += 8)
          __builtin_prefetch(&q[i]);
      }
      lock();
      long h = atomic_load_explicit(&q_head, memory_order_relaxed);
      long t = atomic_load_explicit(&q_tail, memory_order_relaxed);
      k = t - h < 32 ? t - h : 32;
      for (long i = 0; i < k; i++)
        batch[i] = q[h + i];
      atomic_store_explicit(&q_head, h + k, memory_order_relaxed);
      unlock();
    } else {
      long h = atomic_load_explicit(&q_head, memory_order_relaxed);
      long t = atomic_load_explicit(&q_tail, memory_order_acquire);
      k = t - h < 32 ? t - h : 32;
      if (k > 0) {
        for (long i = 0; i < k; i++)
          batch[i] = q[h + i];
        if (!atomic_compare_exchange_weak_explicit(&q_head, &h, h + k,
                                                   memory_order_relaxed,
                                                   memory_order_relaxed))
          k = 0;
      }
    }
    if (k == 0) {
      __builtin_ia32_pause();
      continue;
    }
    atomic_fetch_add_explicit(&taken, k, memory_order_relaxed);
    for (long i = 0; i < k; i++)
      run_rec(batch[i]);
  }
  return NULL;
}

static void one_run(double *total, double *submit) {
  atomic_store(&q_head, 0);
  atomic_store(&q_tail, 0);
  atomic_store(&taken, 0);
  atomic_store(&go, 0);
  pthread_t c[2];
  for (int i = 0; i < 2; i++)
    if (pthread_create(&c[i], NULL, consumer, NULL) != 0)
      exit(1);
  atomic_store(&go, 1);
  int64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    rec *r = &recs[i];
    memset(r, 0, sizeof *r);
    atomic_store_explicit(&r->refs, 2, memory_order_relaxed);
    r->fn = r;
    r->arg = (void *)i;
    if (mode == 0 || mode == 3) {
      lock();
      long t = atomic_load_explicit(&q_tail, memory_order_relaxed);
      q[t] = r;
      atomic_store_explicit(&q_tail, t + 1, memory_order_relaxed);
      unlock();
    } else {
      long t = atomic_load_explicit(&q_tail, memory_order_relaxed);
      q[t] = r;
      atomic_store_explicit(&q_tail, t + 1, memory_order_release);
      if (mode == 2) /* a wake check that needs store-load order */
        atomic_thread_fence(memory_order_seq_cst);
      if (atomic_load_explicit(&sleepers, memory_order_relaxed) != 0)
        abort(); /* nobody sleeps in this probe */
    }
  }
  int64_t t1 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    rec *r = &recs[i];
    while (atomic_load_explicit(&r->state, memory_order_acquire) != FINISHED)
      __builtin_ia32_pause();
    atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel);
  }
  int64_t t2 = bench_now_ns();
  for (int i = 0; i < 2; i++)
    pthread_join(c[i], NULL);
  *total = (double)(t2 - t0) / (double)n;
  *submit = (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
  n = argc > 1 ? atol(argv[1]) : 1000000;
  int runs = argc > 2 ? atoi(argv[2]) : 7;
  if (n < 1 || runs < 1 || runs > 64) {
    fprintf(stderr, "usage: probe_submit [N] [RUNS 1-64]\n");
    return 2;
  }
  recs = aligned_alloc(64, (size_t)n * sizeof *recs);
  q = malloc((size_t)n * sizeof *q);
  if (recs == NULL || q == NULL)
    return 1;
  memset(recs, 0, (size_t)n * sizeof *recs);
  double tot[4][64], sub[4][64];
  for (int r = 0; r < runs; r++)
    for (int m = 0; m < 4; m++) {
      mode = (r & 1) ? 3 - m : m; /* ABCD DCBA */
      one_run(&tot[mode][r], &sub[mode][r]);
    }
  const char *names[4] = {"lock", "free", "fence", "pre"};
  for (int m = 0; m < 4; m++) {
    char impl[64];
    snprintf(impl, sizeof impl, "probe_%s", names[m]);
    bench_report(impl, "total", n, 2, "ns/task", tot[m], runs);
    bench_report(impl, "submit", n, 2, "ns/task", sub[m], runs);
  }
  return 0;
}
