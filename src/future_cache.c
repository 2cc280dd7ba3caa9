/*
 * future_cache.c - memory for futures: 64-byte aligned blocks of 64, 512
 * or 832 bytes (a future alone; a future with a backend's room, such as
 * a loop task's state and saved frames).
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
 * Each size class has its own chains, chunks and lock; a thread's cache
 * has one slot per class.
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

static const size_t class_size[CF__FCACHE_CLASSES] = {64, 512,
                                                      CF__FCACHE_TASK_BLOCK};

_Static_assert(CF__FCACHE_CLASSES == 3, "cf__fcache_class knows 3 sizes");

#if defined(CF_NO_FUTURE_CACHE)

void *cf__fcache_alloc_class(int c) {
  return aligned_alloc(BLOCK, class_size[c]);
}
void cf__fcache_free_class(void *p, int c) {
  (void)c;
  free(p);
}
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

/* One size class's shared state. */
typedef struct sclass {
  pthread_mutex_t mu;
  block *chains;         /* global stack of chains (guarded by mu) */
  char *bump, *bump_end; /* the chunk being carved (guarded by mu) */
} sclass;

static sclass classes[CF__FCACHE_CLASSES] = {
    {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL},
    {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL},
    {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL}};

typedef struct tslot {
  block *cur; /* free blocks, LIFO */
  uint32_t ncur;
  block *spare; /* a full chain (count == BATCH), or NULL */
} tslot;

typedef struct tcache {
  tslot slot[CF__FCACHE_CLASSES];
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

/* Pushes a chain on its class's global stack; the class's mu held. */
static void push_chain_locked(sclass *k, block *head, uint32_t count) {
  head->count = count;
  head->next_chain = k->chains;
  k->chains = head;
}

/* Gives a thread's blocks back when it exits. */
static void thread_exit(void *unused) {
  (void)unused;
  for (int c = 0; c < CF__FCACHE_CLASSES; c++) {
    sclass *k = &classes[c];
    tslot *t = &tc.slot[c];
    pthread_mutex_lock(&k->mu);
    if (t->spare != NULL)
      push_chain_locked(k, t->spare, BATCH);
    if (t->cur != NULL)
      push_chain_locked(k, t->cur, t->ncur);
    pthread_mutex_unlock(&k->mu);
    t->spare = t->cur = NULL;
    t->ncur = 0;
  }
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

/* Gets a chain into the thread's slot c: from the global stack, or
 * carved. */
static bool refill(int c) {
  if (!tc.registered)
    register_thread();
  sclass *k = &classes[c];
  size_t size = class_size[c];
  pthread_mutex_lock(&k->mu);
  block *head = k->chains;
  uint32_t count = 0;
  if (head != NULL) {
    k->chains = head->next_chain;
    count = head->count;
  } else {
    if ((size_t)(k->bump_end - k->bump) < size) {
      char *chunk = new_chunk();
      if (chunk == NULL) {
        pthread_mutex_unlock(&k->mu);
        return false;
      }
      k->bump = chunk;
      k->bump_end = chunk + CHUNK;
    }
    /* Carve one chain of consecutive blocks. */
    size_t n = (size_t)(k->bump_end - k->bump) / size;
    if (n > BATCH)
      n = BATCH;
    head = (block *)(void *)k->bump;
    for (size_t i = 0; i < n; i++) {
      block *b = (block *)(void *)(k->bump + i * size);
      b->next =
          i + 1 < n ? (block *)(void *)(k->bump + (i + 1) * size) : NULL;
    }
    k->bump += n * size;
    count = (uint32_t)n;
  }
  pthread_mutex_unlock(&k->mu);
  tc.slot[c].cur = head;
  tc.slot[c].ncur = count;
  return true;
}

/* The rest of an allocation when the thread's current chain is empty:
 * its spare chain, or one from the global stack (or carved). Out of line,
 * so that the common path saves no registers (bench/NOTES.md section 20). */
static __attribute__((noinline)) void *alloc_slow(int c) {
  tslot *t = &tc.slot[c];
  if (t->spare != NULL) {
    t->cur = t->spare;
    t->ncur = BATCH;
    t->spare = NULL;
  } else if (!refill(c)) {
    return NULL;
  }
  block *b = t->cur;
  t->cur = b->next;
  t->ncur--;
  return b;
}

void *cf__fcache_alloc_class(int c) {
  tslot *t = &tc.slot[c];
  block *b = t->cur;
  if (CF__UNLIKELY(b == NULL))
    return alloc_slow(c);
  t->cur = b->next;
  t->ncur--;
  return b;
}

/* The rest of a free when the thread's current chain is full (it becomes
 * the spare; an older spare goes to the global stack for other threads)
 * or the thread has not registered its exit yet. */
static __attribute__((noinline)) void free_slow(block *b, int c) {
  tslot *t = &tc.slot[c];
  if (t->ncur == BATCH) {
    if (t->spare != NULL) {
      sclass *k = &classes[c];
      pthread_mutex_lock(&k->mu);
      push_chain_locked(k, t->spare, BATCH);
      pthread_mutex_unlock(&k->mu);
    }
    t->spare = t->cur;
    t->cur = NULL;
    t->ncur = 0;
  }
  if (!tc.registered)
    register_thread();
  b->next = t->cur;
  t->cur = b;
  t->ncur++;
}

void cf__fcache_free_class(void *p, int c) {
  if (p == NULL)
    return;
  tslot *t = &tc.slot[c];
  block *b = p;
  if (CF__UNLIKELY(t->ncur == BATCH || !tc.registered)) {
    free_slow(b, c);
    return;
  }
  b->next = t->cur;
  t->cur = b;
  t->ncur++;
}

/* The forking thread keeps its chains (its TLS is copied); other threads'
 * chains are lost to the child, which is a bounded leak, never a fault. */
void cf__fcache_atfork(int phase) {
  for (int c = 0; c < CF__FCACHE_CLASSES; c++) {
    if (phase == CF__FORK_PREPARE)
      pthread_mutex_lock(&classes[c].mu);
    else if (phase == CF__FORK_PARENT)
      pthread_mutex_unlock(&classes[c].mu);
    else
      pthread_mutex_init(&classes[c].mu, NULL);
  }
}

#endif /* CF_NO_FUTURE_CACHE */

void *cf__fcache_alloc(void) { return cf__fcache_alloc_class(0); }
void cf__fcache_free(void *p) { cf__fcache_free_class(p, 0); }
