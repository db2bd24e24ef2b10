/* Reference-counted mapped regions: see region.h. */
#include "region.h"

#include <stdlib.h>

#include "check.h"
#include "os.h"

static long live_regions;

mb_region *mb_region_map(size_t size, int hugepages)
{
    mb_region *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    void *p = mb_os_map(size, hugepages);
    if (!p) {
        free(r);
        return NULL;
    }
    r->base = (uintptr_t)p;
    r->size = size;
    r->refs = 1;
    __atomic_add_fetch(&live_regions, 1, __ATOMIC_RELAXED);
    return r;
}

void mb_region_retain(mb_region *r)
{
    long before = __atomic_fetch_add(&r->refs, 1, __ATOMIC_RELAXED);
    MB_ASSERT(before > 0);          /* nobody revives an unmapped region */
    (void)before;
}

void mb_region_release(mb_region *r)
{
    if (!r)
        return;
    long left = __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL);
    MB_ASSERT(left >= 0);
    if (left == 0) {
        mb_os_unmap((void *)r->base, r->size);
        free(r);
        __atomic_sub_fetch(&live_regions, 1, __ATOMIC_RELAXED);
    }
}

long mb_region_live(void) { return __atomic_load_n(&live_regions, __ATOMIC_RELAXED); }
