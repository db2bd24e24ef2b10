/* A mapped region (one arena's memory) with a reference count.
 *
 * The allocator holds one reference to each arena's region; every view object
 * of the compiled core (a chunk) holds one more. Releasing an arena (trim, the
 * spare policy, reset, deleting the allocator) drops only the allocator's
 * reference, so the memory is unmapped when the last chunk of it is gone and
 * never under a live view. Counts are atomic: the allocator drops its
 * reference under its own lock in a thread that need not hold the GIL, while
 * chunks drop theirs under the GIL. */
#ifndef MEMBUF_REGION_H
#define MEMBUF_REGION_H

#include <stddef.h>
#include <stdint.h>

typedef struct mb_region {
    uintptr_t base;
    size_t size;
    long refs;              /* > 0 while mapped; touched only atomically */
} mb_region;

/* Map size bytes with one reference (the caller's); NULL when the OS refuses. */
mb_region *mb_region_map(size_t size, int hugepages);
void mb_region_retain(mb_region *r);
/* Drop one reference; the last one unmaps the memory and frees the record. */
void mb_region_release(mb_region *r);

/* Regions mapped and not yet unmapped, process-wide: what tests read to prove
 * that nothing leaks and that a live view kept its region. */
long mb_region_live(void);

#endif
