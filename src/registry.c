/*
 * registry.c - named tasks (cf/registry.h): a hash table from names to
 * functions under a read-write lock, and the byte-payload helpers.
 *
 * Registration happens mostly before main (CF_TASK's constructors), in
 * whatever order the loader runs them; lookups happen per task in
 * process-pool workers, so they take the lock for reading only. Names
 * are copied and never freed: cf_task_name_of hands them out as static.
 */
#include "cf/registry.h"
#include "registry_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct entry {
  const char *name; /* NULL: empty slot */
  cf_task_fn fn;
} entry;

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static entry *table; /* open addressing, capacity a power of two */
static size_t cap, used;

static uint64_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s != '\0'; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return h;
}

/* The slot of name, or the empty slot where it would go; lock held. */
static entry *find_locked(const char *name) {
  if (cap == 0)
    return NULL;
  size_t i = (size_t)hash_name(name) & (cap - 1);
  for (;;) {
    entry *e = &table[i];
    if (e->name == NULL || strcmp(e->name, name) == 0)
      return e;
    i = (i + 1) & (cap - 1);
  }
}

static int grow_locked(void) {
  size_t ncap = cap != 0 ? 2 * cap : 64;
  entry *nt = cf__calloc(ncap, sizeof *nt);
  if (nt == NULL)
    return CF_ENOMEM;
  entry *old = table;
  size_t ocap = cap;
  table = nt;
  cap = ncap;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].name != NULL)
      *find_locked(old[i].name) = old[i];
  free(old);
  return 0;
}

static bool valid_name(const char *name) {
  if (name == NULL)
    return false;
  size_t n = strnlen(name, CF_TASK_NAME_MAX + 1);
  return n > 0 && n <= CF_TASK_NAME_MAX;
}

int cf_task_register(const char *name, cf_task_fn fn) {
  if (fn == NULL || !valid_name(name))
    return CF_EINVAL;
  pthread_rwlock_wrlock(&lock);
  int rc = 0;
  entry *e = find_locked(name);
  if (e != NULL && e->name != NULL) {
    rc = e->fn == fn ? 0 : CF_EEXIST;
  } else if ((used + 1) * 2 > cap && (rc = grow_locked()) != 0) {
    /* no room */
  } else {
    char *copy = cf__asprintf("%s", name);
    if (copy == NULL) {
      rc = CF_ENOMEM;
    } else {
      e = find_locked(name);
      e->name = copy;
      e->fn = fn;
      used++;
    }
  }
  pthread_rwlock_unlock(&lock);
  return rc;
}

void cf__task_register_static(const char *name, cf_task_fn fn) {
  int rc = cf_task_register(name, fn);
  if (rc != 0)
    fprintf(stderr, "cfutures: cannot register task \"%s\": %s\n", name,
            cf_strerror(rc));
}

cf_task_fn cf_task_lookup(const char *name) {
  if (!valid_name(name))
    return NULL;
  pthread_rwlock_rdlock(&lock);
  entry *e = find_locked(name);
  cf_task_fn fn = e != NULL && e->name != NULL ? e->fn : NULL;
  pthread_rwlock_unlock(&lock);
  return fn;
}

const char *cf_task_name_of(cf_task_fn fn) {
  if (fn == NULL)
    return NULL;
  const char *name = NULL;
  pthread_rwlock_rdlock(&lock);
  for (size_t i = 0; i < cap && name == NULL; i++)
    if (table[i].name != NULL && table[i].fn == fn)
      name = table[i].name;
  pthread_rwlock_unlock(&lock);
  return name;
}

/* ---------------------------------------------------------------------- */
/* Payloads                                                               */

/* An argument copy: its length, then (16-byte aligned) its bytes. */
enum { ARG_HEADER = 16 };

static void free_arg(void *arg) { free((char *)arg - ARG_HEADER); }

char *cf__arg_alloc(size_t size) {
  if (size > SIZE_MAX - ARG_HEADER)
    return NULL;
  char *buf = cf__aligned_alloc(16, ARG_HEADER + (size != 0 ? size : 1));
  if (buf == NULL)
    return NULL;
  memcpy(buf, &size, sizeof size);
  return buf + ARG_HEADER;
}

void cf__arg_free(void *arg) {
  if (arg != NULL)
    free_arg(arg);
}

size_t cf_arg_size(const void *arg) {
  size_t n;
  memcpy(&n, (const char *)arg - ARG_HEADER, sizeof n);
  return n;
}

int cf_executor_submit_bytes(cf_executor *ex, const char *name,
                             const void *arg, size_t size, cf_future **out) {
  if (out != NULL)
    *out = NULL;
  if (ex == NULL || (arg == NULL && size > 0))
    return CF_EINVAL;
  if (!valid_name(name))
    return CF_EINVAL;
  cf_task_fn fn = cf_task_lookup(name);
  if (fn == NULL)
    return CF_EUNKNOWNTASK;
  const char *stable = cf_task_name_of(fn); /* outlives the task */
  if (size > SIZE_MAX - ARG_HEADER)
    return CF_ENOMEM;
  char *buf = cf__aligned_alloc(16, ARG_HEADER + (size != 0 ? size : 1));
  if (buf == NULL)
    return CF_ENOMEM;
  memcpy(buf, &size, sizeof size);
  if (size > 0)
    memcpy(buf + ARG_HEADER, arg, size);
  cf_task t = {.fn = fn,
               .arg = buf + ARG_HEADER,
               .arg_dtor = free_arg,
               .arg_size = size,
               .name = stable};
  int rc = cf_executor_submit_task(ex, &t, CF_FOREVER, out);
  if (rc != 0)
    free(buf); /* a failed submission never calls arg_dtor */
  return rc;
}

int cf_value_set_bytes(cf_value *v, const void *p, size_t n) {
  if (v == NULL || (p == NULL && n > 0))
    return CF_EINVAL;
  cf_value_release(v);
  void *copy = cf__malloc(n != 0 ? n : 1);
  if (copy == NULL)
    return CF_ENOMEM;
  if (n > 0)
    memcpy(copy, p, n);
  v->u.ptr = copy;
  v->size = n;
  v->dtor = free;
  v->type = "bytes";
  return 0;
}

int cf_value_set_string(cf_value *v, const char *s) {
  if (v == NULL || s == NULL)
    return CF_EINVAL;
  int rc = cf_value_set_bytes(v, s, strlen(s) + 1);
  if (rc == 0)
    v->type = "str";
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Plain values                                                           */

int cf_executor_submit_i64(cf_executor *ex, const char *name, int64_t v,
                           cf_future **out) {
  return cf_executor_submit_bytes(ex, name, &v, sizeof v, out);
}

int cf_executor_submit_f64(cf_executor *ex, const char *name, double v,
                           cf_future **out) {
  return cf_executor_submit_bytes(ex, name, &v, sizeof v, out);
}

int cf_executor_submit_string(cf_executor *ex, const char *name,
                              const char *s, cf_future **out) {
  if (s == NULL) {
    if (out != NULL)
      *out = NULL;
    return CF_EINVAL;
  }
  return cf_executor_submit_bytes(ex, name, s, strlen(s) + 1, out);
}

int cf_arg_get(const void *arg, void *out, size_t size) {
  if (arg == NULL || out == NULL || cf_arg_size(arg) != size)
    return CF_EINVAL;
  memcpy(out, arg, size);
  return 0;
}

int cf_arg_get_i64(const void *arg, int64_t *out) {
  return cf_arg_get(arg, out, sizeof *out);
}

int cf_arg_get_f64(const void *arg, double *out) {
  return cf_arg_get(arg, out, sizeof *out);
}

const char *cf_arg_get_string(const void *arg) {
  if (arg == NULL)
    return NULL;
  size_t n = cf_arg_size(arg);
  if (n == 0 || memchr(arg, '\0', n) != (const char *)arg + n - 1)
    return NULL;
  return arg;
}

/* Makes *v the word w with a static type label, releasing what it held
 * (cf_value_release leaves a zero value). */
static void set_word(cf_value *v, cf_word w, const char *type) {
  if (v == NULL)
    return;
  cf_value_release(v);
  v->u = w;
  v->type = type;
}

void cf_value_set_i64(cf_value *v, int64_t x) {
  set_word(v, (cf_word){.i = x}, "int");
}

void cf_value_set_f64(cf_value *v, double x) {
  set_word(v, (cf_word){.d = x}, "float");
}

int cf_value_get(const cf_value *v, void *out, size_t size) {
  /* A buffer owns its bytes (a destructor); a word has none. */
  if (v == NULL || out == NULL || v->size != size || v->u.ptr == NULL ||
      v->dtor == NULL)
    return CF_EINVAL;
  if (size > 0)
    memcpy(out, v->u.ptr, size);
  return 0;
}
