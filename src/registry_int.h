/*
 * registry_int.h - argument buffers in the layout cf_arg_size reads (its
 * length, then 16-byte aligned bytes), for executors that rebuild an
 * argument in another process. Internal: not installed.
 */
#ifndef CF_REGISTRY_INT_H
#define CF_REGISTRY_INT_H

#include <stddef.h>

/* Room for size bytes, with the length recorded; NULL if out of memory.
 * Free with cf__arg_free. */
char *cf__arg_alloc(size_t size);
void cf__arg_free(void *arg);

#endif /* CF_REGISTRY_INT_H */
