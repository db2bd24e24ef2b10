/* The allocator entry points the compiled core (membuf._core) calls directly.
 *
 * The allocator is compiled once, into the cffi module membuf._native; _core is a
 * separate CPython extension. Rather than linking a second copy of the allocator,
 * _core receives this table's address from Python at import time and calls through
 * it: C to C, no cffi argument conversion, no GIL release. */
#ifndef MEMBUF_API_H
#define MEMBUF_API_H

#include "alloc.h"
#include "region.h"

#define MB_CORE_API_VERSION 2

typedef struct mb_core_api {
    unsigned version;
    size_t stats_size;      /* sizeof(mb_stats): a stale build fails loudly, not silently */
    mb_alloc *(*alloc_new)(size_t arena_size, size_t max_arena_size, size_t max_bytes,
                           int strategy, int hugepages, uint32_t seed);
    void (*alloc_delete)(mb_alloc *a);
    void *(*malloc_pinned)(mb_alloc *a, size_t n, mb_region **region, uint64_t *epoch, int *err);
    int (*free)(mb_alloc *a, const void *p, size_t n);
    void (*disown)(mb_alloc *a, size_t n, uint64_t epoch);
    int (*chunk_done)(mb_alloc *a, const void *p, size_t n, uint64_t epoch, int disowned);
    void (*stats)(mb_alloc *a, mb_stats *out);
    void (*region_release)(mb_region *r);
    uint64_t (*epoch)(mb_alloc *a);
    int (*pin)(mb_alloc *a, const void *p, size_t n, mb_region **region);
} mb_core_api;

const mb_core_api *mb_core_api_table(void);

#endif
