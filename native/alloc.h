/* membuf allocator: arenas of mmap'd memory, partial free of any range.
 * See alloc.c for the strategy. Every mb_alloc_* call takes the allocator's lock. */
#ifndef MEMBUF_ALLOC_H
#define MEMBUF_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "region.h"

typedef struct mb_alloc mb_alloc;

/* Results: >= 0 success, < 0 one of these. */
#define MB_ENOMEM   (-1)   /* the OS refused memory (mmap or bookkeeping) */
#define MB_ELIMIT   (-2)   /* growing would pass max_bytes, or the request is too large */
#define MB_EFOREIGN (-3)   /* the range is not inside one arena of this allocator */
#define MB_EDOUBLE  (-4)   /* the range overlaps free memory (double or overlapping free) */
#define MB_EINVAL   (-5)   /* bad argument (zero length, bad option) */

#define MB_FIRST_FIT 0  /* lowest address that fits (the index's search, O(log n)) */
#define MB_BEST_FIT  1  /* smallest range that fits, ties by address (O(log n)) */
#define MB_GOOD_FIT  2  /* size-class lists in front of the index (sizeclass.c): O(1) */

/* mb_alloc_malloc returns (arena id << MB_ID_SHIFT) | offset in that arena. */
#define MB_ID_SHIFT 40

/* Every counter once; the cdef's struct and Python's AllocatorStats mirror this list
 * (a test checks that they agree). */
#define MB_STATS(X) \
    X(reserved)     \
    X(in_use)       \
    X(peak_in_use)  \
    X(free)         \
    X(largest_free) \
    X(arenas)       \
    X(mallocs)      \
    X(frees)        \
    X(failed)       \
    X(pinned)

typedef struct mb_stats {
#define MB_STATS_FIELD(name) uint64_t name;
    MB_STATS(MB_STATS_FIELD)
#undef MB_STATS_FIELD
} mb_stats;

/* What the last failed free found, for the error message. */
typedef struct mb_free_report {
    uint64_t addr, len;         /* the range asked for */
    uint64_t arena_id;          /* its arena, when it has one */
    uint64_t arena_base, arena_size;
    uint64_t free_start, free_len;   /* a free range it overlaps (MB_EDOUBLE) */
    int64_t batch_index;        /* which item of a batch failed, else -1 */
    int64_t dup_index;          /* an earlier item of that batch it overlaps, else -1 */
} mb_free_report;

mb_alloc *mb_alloc_new(size_t arena_size, size_t max_arena_size, size_t max_bytes,
                       int strategy, int hugepages, uint32_t seed);
void mb_alloc_delete(mb_alloc *a);

int64_t mb_alloc_malloc(mb_alloc *a, size_t n);
/* The same for C callers: the address, or NULL on failure (n == 0 included). */
void *mb_alloc_malloc_ptr(mb_alloc *a, size_t n);
/* For the compiled core's chunks. malloc_pinned: n bytes (NULL and *err on failure) with a
 * reference to their arena's region in *region and the allocator's epoch in *epoch.
 * disown: n bytes of a chunk that the stream layer let go while views of them remain
 * (counted in `pinned`). chunk_done: a chunk died: free its [p, p+n) (n may be 0) and,
 * if it was disowned, take its bytes out of `pinned`; nothing when the epoch is old. */
void *mb_alloc_malloc_pinned(mb_alloc *a, size_t n, mb_region **region, uint64_t *epoch,
                             int *err);
void mb_alloc_disown(mb_alloc *a, size_t n, uint64_t epoch);
int mb_alloc_chunk_done(mb_alloc *a, const void *p, size_t n, uint64_t epoch, int disowned);
/* Returns how many arenas the free released (>= 0), or an error. */
int mb_alloc_free(mb_alloc *a, const void *p, size_t n);
/* pairs = addr0, len0, addr1, len1, ...; all or nothing. */
int mb_alloc_free_batch(mb_alloc *a, const uint64_t *pairs, size_t count);
/* The same, only while the allocator is still in epoch (no reset since): else it frees
 * nothing and returns 0. What an owner recorded before a reset is never freed after it. */
int mb_alloc_free_batch_epoch(mb_alloc *a, const uint64_t *pairs, size_t count, uint64_t epoch);
/* The reset count (an owner records it with what it allocates). */
uint64_t mb_alloc_epoch(mb_alloc *a);
/* A reference to the region of the arena holding [p, p+n) in *region: 1, or 0 if no
 * arena holds it. (Debug mode keeps views of freed ranges; they must hold their region.) */
int mb_alloc_pin(mb_alloc *a, const void *p, size_t n, mb_region **region);
/* 1 when every byte of [p, p+n) is allocated from this allocator, else 0. */
int mb_alloc_owns(mb_alloc *a, const void *p, size_t n);
void mb_alloc_stats(mb_alloc *a, mb_stats *out);
int mb_alloc_trim(mb_alloc *a);
void mb_alloc_reset(mb_alloc *a);
/* Scratch memory of at least n bytes, not counted, reused by the next borrow. NULL if no memory. */
void *mb_alloc_borrow(mb_alloc *a, size_t n, size_t *capacity);
void mb_alloc_last_free_report(mb_alloc *a, mb_free_report *out);

/* The whole arena table at once, as (id, base, size) triples, taken under the lock so that a
 * concurrent grow or release cannot shift it mid-read. Returns the arena count; when
 * it is above cap only the first cap triples were written: call again with more room. */
size_t mb_alloc_arena_table(mb_alloc *a, uint64_t *out, size_t cap);
size_t mb_alloc_arena_count(mb_alloc *a);

/* Check every invariant of the allocator and its index: MB_SOUND (0) or the first broken
 * one, named by mb_check_name (check.h). */
int mb_alloc_check(mb_alloc *a);

#endif
