/* The table of api.h, filled once. */
#include "api.h"

static const mb_core_api table = {
    MB_CORE_API_VERSION,
    sizeof(mb_stats),
    mb_alloc_new,
    mb_alloc_delete,
    mb_alloc_malloc_pinned,
    mb_alloc_free,
    mb_alloc_disown,
    mb_alloc_chunk_done,
    mb_alloc_stats,
    mb_region_release,
    mb_alloc_epoch,
    mb_alloc_pin,
};

const mb_core_api *mb_core_api_table(void) { return &table; }
