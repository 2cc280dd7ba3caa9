/*
 * future_cache.c - memory for futures: 64-byte, 64-byte aligned blocks.
 *
 * Why not malloc: a future is written by the submitter, run by a worker
 * and read by the waiter, so it crosses cores twice. One cache line per
 * future (malloc gives 16-byte alignment, so a 64-byte object spans two)
 * and huge pages (a million live futures on 4 KiB pages fault 16k times
 * and miss the TLB constantly) roughly halve the cost of a task on the
 * target machines; glibc also trims its heap between bursts, so the next
 * burst faults its memory in again. See bench/NOTES.md.
 *
 * Design. Each thread keeps a chain of free blocks (LIFO, at most BATCH)
 * and one full spare chain. Full chains move between threads through a
 * global stack of chains under `mu`, so the mutex is taken once per BATCH
 * allocations or releases, and a block freed by a worker is reused by the
 * submitter after one hand-over. Blocks are carved BATCH at a time from
 * CHUNK-sized regions (2 MiB, aligned, madvise(MADV_HUGEPAGE)). Memory is
 * never returned to the system: the cache keeps the high-water mark of
 * live futures, which stays flat however many tasks run.
 *
 * Thread exit gives the thread's chains back (a pthread key destructor).
 * Under AddressSanitizer the cache is bypassed so that use-after-free of a
 * future is still detected; -DCF_NO_FUTURE_CACHE does the same.
 *
 * Lock order: `mu` is a leaf lock.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fork.h"
#include "future_int.h"

#if defined(__SANITIZE_ADDRESS__)
#define CF_NO_FUTURE_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_NO_FUTURE_CACHE 1
#endif
#endif

#define BLOCK 64
#define BATCH 64

#if defined(CF_NO_FUTURE_CACHE)

void *cf__fcache_alloc(void) { return aligned_alloc(BLOCK, BLOCK); }
void cf__fcache_free(void *p) { free(p); }
void cf__fcache_atfork(int phase) { (void)phase; }

#else

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CHUNK (2u << 20)

/* A free block. The first 8 bytes (a future's state and reference count)
 * are left as the future left them (poisoned, count 0), so that a
 * second cf_future_unref of a freed future is caught (future.c). */
typedef struct block {
  uint64_t keep;            /* untouched: the freed future's state, refs */
  struct block *next;       /* next block of the same chain */
  struct block *next_chain; /* in the global stack: the next chain */
  uint32_t count;           /* in a chain's head: the chain's length */
} block;

_Static_assert(sizeof(block) <= BLOCK, "a free block fits in a future");

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static block *chains;         /* global stack of chains (guarded by mu) */
static char *bump, *bump_end; /* the chunk being carved (guarded by mu) */

typedef struct tcache {
  block *cur; /* free blocks, LIFO */
  uint32_t ncur;
  block *spare; /* a full chain (count == BATCH), or NULL */
  bool registered;
} tcache;

static _Thread_local tcache tc;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void *new_chunk(void) {
#if defined(__linux__)
  /* Map twice the size and keep an aligned CHUNK, so that the kernel can
   * back it with huge pages. */
  char *p = mmap(NULL, 2 * (size_t)CHUNK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  uintptr_t a = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
  char *start = (char *)a;
  if (start > p)
    munmap(p, (size_t)(start - p));
  char *end = start + CHUNK, *map_end = p + 2 * (size_t)CHUNK;
  if (map_end > end)
    munmap(end, (size_t)(map_end - end));
  madvise(start, CHUNK, MADV_HUGEPAGE);
  return start;
#else
  return aligned_alloc(CHUNK, CHUNK);
#endif
}

/* Pushes a chain on the global stack; mu held. */
static void push_chain_locked(block *head, uint32_t count) {
  head->count = count;
  head->next_chain = chains;
  chains = head;
}

/* Gives a thread's blocks back when it exits. */
static void thread_exit(void *unused) {
  (void)unused;
  pthread_mutex_lock(&mu);
  if (tc.spare != NULL)
    push_chain_locked(tc.spare, BATCH);
  if (tc.cur != NULL)
    push_chain_locked(tc.cur, tc.ncur);
  pthread_mutex_unlock(&mu);
  tc.spare = tc.cur = NULL;
  tc.ncur = 0;
  /* A future freed later in this thread's teardown (another destructor)
   * registers again, so its block is not stranded. */
  tc.registered = false;
}

static void make_exit_key(void) { pthread_key_create(&exit_key, thread_exit); }

/* Makes sure this thread's blocks are given back when it exits. */
static void register_thread(void) {
  pthread_once(&exit_once, make_exit_key);
  pthread_setspecific(exit_key, &tc); /* non-NULL: the destructor runs */
  tc.registered = true;
}

/* Gets a chain into tc.cur: from the global stack, or carved. */
static bool refill(void) {
  if (!tc.registered)
    register_thread();
  pthread_mutex_lock(&mu);
  block *head = chains;
  uint32_t count = 0;
  if (head != NULL) {
    chains = head->next_chain;
    count = head->count;
  } else {
    if (bump == bump_end) {
      char *c = new_chunk();
      if (c == NULL) {
        pthread_mutex_unlock(&mu);
        return false;
      }
      bump = c;
      bump_end = c + CHUNK;
    }
    /* Carve one chain of consecutive blocks. */
    size_t n = (size_t)(bump_end - bump) / BLOCK;
    if (n > BATCH)
      n = BATCH;
    head = (block *)(void *)bump;
    for (size_t i = 0; i < n; i++) {
      block *b = (block *)(void *)(bump + i * BLOCK);
      b->next = i + 1 < n ? (block *)(void *)(bump + (i + 1) * BLOCK) : NULL;
    }
    bump += n * BLOCK;
    count = (uint32_t)n;
  }
  pthread_mutex_unlock(&mu);
  tc.cur = head;
  tc.ncur = count;
  return true;
}

void *cf__fcache_alloc(void) {
  if (CF__UNLIKELY(tc.cur == NULL)) {
    if (tc.spare != NULL) {
      tc.cur = tc.spare;
      tc.ncur = BATCH;
      tc.spare = NULL;
    } else if (!refill()) {
      return NULL;
    }
  }
  block *b = tc.cur;
  tc.cur = b->next;
  tc.ncur--;
  return b;
}

void cf__fcache_free(void *p) {
  if (p == NULL)
    return;
  if (CF__UNLIKELY(tc.ncur == BATCH)) {
    /* Current chain full: it becomes the spare; an older spare goes to
     * the global stack for other threads. */
    if (tc.spare != NULL) {
      pthread_mutex_lock(&mu);
      push_chain_locked(tc.spare, BATCH);
      pthread_mutex_unlock(&mu);
    }
    tc.spare = tc.cur;
    tc.cur = NULL;
    tc.ncur = 0;
  }
  if (CF__UNLIKELY(!tc.registered))
    register_thread();
  block *b = p;
  b->next = tc.cur;
  tc.cur = b;
  tc.ncur++;
}

/* The forking thread keeps its chains (its TLS is copied); other threads'
 * chains are lost to the child, which is a bounded leak, never a fault. */
void cf__fcache_atfork(int phase) {
  if (phase == CF__FORK_PREPARE)
    pthread_mutex_lock(&mu);
  else if (phase == CF__FORK_PARENT)
    pthread_mutex_unlock(&mu);
  else
    pthread_mutex_init(&mu, NULL);
}

#endif /* CF_NO_FUTURE_CACHE */
