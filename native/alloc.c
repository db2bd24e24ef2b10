/* membuf allocator.
 *
 * Strategy. An allocator owns arenas: contiguous regions from anonymous mmap,
 * kept in an array sorted by base address so that the owner of any address is
 * a binary search. Inside arenas only *free* ranges are recorded, in one
 * free-range index shared by all arenas (index.c), keyed by address: there are
 * no block headers, so any sub-range of an allocation can be freed (prefix,
 * suffix, middle) and the index alone decides whether a free is legal:
 *
 *   legal free [s, s+n)  <=>  inside one arena, and the free ranges just
 *                             before and just after it do not overlap it.
 *
 * A freed range is merged with free neighbours in the same arena (two arenas
 * may be adjacent in the address space; their ranges are never merged), so
 * "no two free ranges touch inside an arena" is an invariant.
 *
 * Growth: when nothing fits, release empty arenas, then map one of at least
 * twice the last regular size (capped at max_arena_size) and at least the
 * request; a request above max_arena_size gets a dedicated arena of its own.
 * max_bytes caps the sum of arena sizes; over it, the largest arena that still
 * fits is tried before MB_ELIMIT. When an arena becomes empty, dedicated ones
 * are unmapped at once and at most one regular empty arena (the largest) is
 * kept as a spare against map/unmap thrash.
 *
 * Every entry point takes the allocator's lock (lock.h): cffi releases the GIL around
 * native calls, so two Python threads can be in here at once.
 *
 * Lifetime of the memory itself: each arena's mapping is a reference-counted
 * region (region.h). Releasing an arena drops the allocator's reference only;
 * the compiled core's chunks hold their own, so memory under a live view stays
 * mapped after trim, reset or mb_alloc_delete. Chunks the stream layer frees on
 * the user's behalf are "disowned" while views of them remain: their bytes are
 * still in use and are counted again in `pinned`. A reset starts a new epoch;
 * a chunk of an older epoch gives nothing back when it dies (the allocator has
 * forgotten those bytes already).
 *
 * Not handled here: debug poisoning, quarantine and leak tracking (Python
 * side), alignment (allocations are byte-granular and exactly sized, which is
 * what makes partial free and exact stats possible).
 */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "index.h"
#include "lock.h"
#include "os.h"
#include "region.h"

#define MAX_ID ((UINT64_C(1) << (63 - MB_ID_SHIFT)) - 1)
#define MAX_REQUEST ((UINT64_C(1) << MB_ID_SHIFT) - 1)

typedef struct arena {
    mb_region *region;  /* the mapping; the allocator holds one reference */
    uintptr_t base;
    size_t size;
    size_t used;        /* bytes allocated in this arena */
    uint64_t id;        /* stable name for Python's view cache, never reused while live */
    int dedicated;      /* made for one request above max_arena_size */
} arena;

struct mb_alloc {
    mb_lock lock;
    mb_index ix;
    arena *arenas;      /* sorted by base */
    size_t narenas, cap;
    size_t arena_size, max_arena_size, max_bytes, last_size;
    int strategy, hugepages;
    uint64_t next_id;
    uint64_t reserved, in_use, peak_in_use, mallocs, frees, failed;
    uint64_t pinned;    /* disowned chunk bytes still viewed (a part of in_use) */
    uint64_t epoch;     /* bumped by reset: chunks of older epochs give nothing back */
    void *scratch;
    size_t scratch_cap;
    mb_free_report report;
};

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* ---- arena table ----------------------------------------------------------- */

/* Index of the arena holding addr, or -1. */
static long find_arena(const mb_alloc *a, uintptr_t addr)
{
    size_t lo = 0, hi = a->narenas;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a->arenas[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const arena *ar = &a->arenas[lo - 1];
    return addr - ar->base < ar->size ? (long)(lo - 1) : -1;
}

static int id_in_use(const mb_alloc *a, uint64_t id)
{
    for (size_t i = 0; i < a->narenas; i++)
        if (a->arenas[i].id == id)
            return 1;
    return 0;
}

static uint64_t fresh_id(mb_alloc *a)
{
    do {
        a->next_id = a->next_id >= MAX_ID ? 1 : a->next_id + 1;
    } while (id_in_use(a, a->next_id));
    return a->next_id;
}

static int add_arena(mb_alloc *a, size_t size, int dedicated)
{
    if (a->narenas == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        arena *grown = realloc(a->arenas, cap * sizeof(arena));
        if (!grown)
            return MB_ENOMEM;
        a->arenas = grown;
        a->cap = cap;
    }
    mb_region *rg = mb_region_map(size, a->hugepages);
    if (!rg)
        return MB_ENOMEM;
    void *p = (void *)rg->base;
    if (mb_index_insert(&a->ix, (uintptr_t)p, size) < 0) {
        mb_region_release(rg);
        return MB_ENOMEM;
    }
    size_t i = a->narenas;
    while (i > 0 && a->arenas[i - 1].base > (uintptr_t)p) {
        a->arenas[i] = a->arenas[i - 1];
        i--;
    }
    a->arenas[i] = (arena){rg, (uintptr_t)p, size, 0, fresh_id(a), dedicated};
    a->narenas++;
    a->reserved += size;
    return 0;
}

static void release_arena(mb_alloc *a, size_t i)
{
    arena ar = a->arenas[i];
    mb_index_remove(&a->ix, ar.base);   /* an empty arena is exactly one free range */
    mb_region_release(ar.region);       /* unmapped now, or when its last chunk goes */
    memmove(&a->arenas[i], &a->arenas[i + 1], (a->narenas - i - 1) * sizeof(arena));
    a->narenas--;
    a->reserved -= ar.size;
}

/* Unmap empty arenas: all of them, or all but the largest regular one. */
static int release_empties(mb_alloc *a, int keep_spare)
{
    long keep = -1;
    if (keep_spare)
        for (size_t i = 0; i < a->narenas; i++)
            if (!a->arenas[i].used && !a->arenas[i].dedicated &&
                (keep < 0 || a->arenas[i].size > a->arenas[keep].size))
                keep = (long)i;
    int released = 0;
    for (size_t i = a->narenas; i-- > 0;) {
        if (!a->arenas[i].used && (long)i != keep) {
            release_arena(a, i);
            released++;
        }
    }
    return released;
}

static int grow(mb_alloc *a, size_t n)
{
    size_t page = mb_os_page_size();
    release_empties(a, 0);
    int dedicated = n > a->max_arena_size;
    size_t size;
    if (dedicated) {
        size = round_up(n, page);
    } else {
        size = a->last_size ? a->last_size * 2 : a->arena_size;
        if (size > a->max_arena_size)
            size = a->max_arena_size;
        if (size < n)
            size = n;
        size = round_up(size, page);
    }
    if (a->max_bytes && a->reserved + size > a->max_bytes) {
        size_t room = a->max_bytes > a->reserved ? (a->max_bytes - a->reserved) / page * page : 0;
        if (room < n)
            return MB_ELIMIT;
        size = room;
    }
    int r = add_arena(a, size, dedicated);
    if (r == 0 && !dedicated)
        a->last_size = size;
    return r;
}

/* ---- life cycle ---------------------------------------------------------- */

mb_alloc *mb_alloc_new(size_t arena_size, size_t max_arena_size, size_t max_bytes,
                       int strategy, int hugepages, uint32_t seed)
{
    if (arena_size == 0 || max_arena_size < arena_size || arena_size > MAX_REQUEST ||
        (strategy != MB_FIRST_FIT && strategy != MB_BEST_FIT))
        return NULL;
    mb_alloc *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    if (mb_index_init(&a->ix, strategy == MB_BEST_FIT, seed) < 0) {
        free(a);
        return NULL;
    }
    size_t page = mb_os_page_size();
    a->arena_size = round_up(arena_size, page);
    a->max_arena_size = max_arena_size < a->arena_size ? a->arena_size : max_arena_size;
    if (a->max_arena_size > MAX_REQUEST)
        a->max_arena_size = MAX_REQUEST;
    a->max_bytes = max_bytes;
    a->strategy = strategy;
    a->hugepages = hugepages;
    a->report.batch_index = -1;
    a->report.dup_index = -1;
    return a;
}

void mb_alloc_delete(mb_alloc *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->narenas; i++)
        mb_region_release(a->arenas[i].region);
    free(a->arenas);
    free(a->scratch);
    mb_index_destroy(&a->ix);
    free(a);
}

/* ---- malloc / free ------------------------------------------------------- */

static uintptr_t take(mb_alloc *a, size_t n)
{
    return a->strategy == MB_BEST_FIT ? mb_index_take_best_fit(&a->ix, n)
                                      : mb_index_take_first_fit(&a->ix, n);
}

/* Carve n bytes, growing when nothing fits; the caller holds the lock. */
static uintptr_t malloc_locked(mb_alloc *a, size_t n, arena **where, int *err)
{
    uintptr_t s = n > MAX_REQUEST ? 0 : take(a, n);
    if (!s) {
        int g = n > MAX_REQUEST ? MB_ELIMIT : grow(a, n);
        if (g == 0)
            s = take(a, n);
        if (!s) {
            a->failed++;
            *err = g ? g : MB_ENOMEM;
            return 0;
        }
    }
    long ai = find_arena(a, s);
    MB_ASSERT(ai >= 0);             /* the index only holds ranges inside arenas */
    arena *ar = &a->arenas[ai];
    ar->used += n;
    a->in_use += n;
    if (a->in_use > a->peak_in_use)
        a->peak_in_use = a->in_use;
    a->mallocs++;
    *where = ar;
    return s;
}

int64_t mb_alloc_malloc(mb_alloc *a, size_t n)
{
    if (n == 0)
        return MB_EINVAL;
    arena *ar = NULL;
    int err = 0;
    mb_lock_take(&a->lock);
    uintptr_t s = malloc_locked(a, n, &ar, &err);
    int64_t r = s ? (int64_t)((ar->id << MB_ID_SHIFT) | (uint64_t)(s - ar->base)) : err;
    mb_lock_give(&a->lock);
    return r;
}

void *mb_alloc_malloc_ptr(mb_alloc *a, size_t n)
{
    if (n == 0)
        return NULL;
    arena *ar = NULL;
    int err = 0;
    mb_lock_take(&a->lock);
    uintptr_t s = malloc_locked(a, n, &ar, &err);
    mb_lock_give(&a->lock);
    return (void *)s;
}

void *mb_alloc_malloc_pinned(mb_alloc *a, size_t n, mb_region **region, uint64_t *epoch,
                             int *err)
{
    if (n == 0) {
        *err = MB_EINVAL;
        return NULL;
    }
    arena *ar = NULL;
    *err = 0;
    mb_lock_take(&a->lock);
    uintptr_t s = malloc_locked(a, n, &ar, err);
    if (s) {
        mb_region_retain(ar->region);   /* under the lock: the arena cannot go meanwhile */
        *region = ar->region;
        *epoch = a->epoch;
    }
    mb_lock_give(&a->lock);
    return (void *)s;
}

static int refuse(mb_alloc *a, int code, uintptr_t s, size_t n, long ai, uint32_t overlap)
{
    mb_free_report *rp = &a->report;
    memset(rp, 0, sizeof *rp);
    rp->addr = s;
    rp->len = n;
    rp->batch_index = -1;
    rp->dup_index = -1;
    if (ai >= 0) {
        rp->arena_id = a->arenas[ai].id;
        rp->arena_base = a->arenas[ai].base;
        rp->arena_size = a->arenas[ai].size;
    }
    if (overlap) {
        rp->free_start = a->ix.n[overlap].start;
        rp->free_len = a->ix.n[overlap].len;
    }
    return code;
}

/* Free one range without releasing arenas; 0 or an error (state unchanged). */
static int free_one(mb_alloc *a, uintptr_t s, size_t n, long *arena_out)
{
    long ai = find_arena(a, s);
    if (ai < 0)
        return refuse(a, MB_EFOREIGN, s, n, -1, 0);
    arena *ar = &a->arenas[ai];
    uintptr_t end = s + n;
    if (end < s || end - ar->base > ar->size)
        return refuse(a, MB_EFOREIGN, s, n, ai, 0);
    uint32_t p, q;
    mb_index_neighbours(&a->ix, s, &p, &q);
    const mb_node *pn = &a->ix.n[p], *qn = &a->ix.n[q];
    if (p && pn->start + pn->len > s)
        return refuse(a, MB_EDOUBLE, s, n, ai, p);
    if (q && qn->start < end)
        return refuse(a, MB_EDOUBLE, s, n, ai, q);
    int left = p && pn->start + pn->len == s && s != ar->base;
    int right = q && qn->start == end && end != ar->base + ar->size;
    if (left && right) {
        size_t merged = pn->len + n + qn->len;
        mb_index_remove_node(&a->ix, q);
        mb_index_set(&a->ix, p, a->ix.n[p].start, merged);
    } else if (left) {
        mb_index_set(&a->ix, p, pn->start, pn->len + n);
    } else if (right) {
        mb_index_set(&a->ix, q, s, qn->len + n);
    } else if (mb_index_insert(&a->ix, s, n) < 0) {
        return refuse(a, MB_ENOMEM, s, n, ai, 0);
    }
    ar->used -= n;
    a->in_use -= n;
    a->frees++;
    *arena_out = ai;
    return 0;
}

/* Make a range that free_one just freed allocated again (undo of a batch). */
static void unfree(mb_alloc *a, uintptr_t s, size_t n)
{
    uint32_t p, q;
    mb_index_neighbours(&a->ix, s, &p, &q);
    uintptr_t ps = a->ix.n[p].start, pe = ps + a->ix.n[p].len;
    if (ps < s)
        mb_index_resize(&a->ix, ps, ps, s - ps);
    else
        mb_index_remove(&a->ix, ps);
    if (s + n < pe) {
        /* cannot fail: free_one took at most one node, and undoing it gives one back */
        int inserted = mb_index_insert(&a->ix, s + n, pe - (s + n));
        MB_ASSERT(inserted == 0);
        (void)inserted;
    }
    long ai = find_arena(a, s);
    MB_ASSERT(ai >= 0);
    a->arenas[ai].used += n;
    a->in_use += n;
    a->frees--;
}

int mb_alloc_free(mb_alloc *a, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    mb_lock_take(&a->lock);
    long ai;
    int r = free_one(a, (uintptr_t)p, n, &ai);
    if (r == 0 && !a->arenas[ai].used)
        r = release_empties(a, 1);
    mb_lock_give(&a->lock);
    return r;
}

/* Say what a refused batch item overlaps in the state the caller sees again (after the
 * undo): a range that was free before the batch, or an earlier item of the batch. The
 * report made mid-batch could name a range merged from items that are now undone. */
static void describe_overlap(const mb_alloc *a, const uint64_t *pairs, size_t k,
                             mb_free_report *rp)
{
    uintptr_t s = (uintptr_t)pairs[2 * k], end = s + (uintptr_t)pairs[2 * k + 1];
    uint32_t p, q;
    mb_index_neighbours(&a->ix, s, &p, &q);
    const mb_node *pn = &a->ix.n[p], *qn = &a->ix.n[q];
    if (p && pn->start + pn->len > s) {
        rp->free_start = pn->start;
        rp->free_len = pn->len;
        return;
    }
    if (q && qn->start < end) {
        rp->free_start = qn->start;
        rp->free_len = qn->len;
        return;
    }
    for (size_t j = 0; j < k; j++) {
        uintptr_t js = (uintptr_t)pairs[2 * j], je = js + (uintptr_t)pairs[2 * j + 1];
        if (js < end && s < je && js != je) {
            rp->dup_index = (int64_t)j;
            rp->free_start = js;
            rp->free_len = je - js;
            return;
        }
    }
}

int mb_alloc_free_batch(mb_alloc *a, const uint64_t *pairs, size_t count)
{
    mb_lock_take(&a->lock);
    int r = 0, emptied = 0;
    size_t i;
    for (i = 0; i < count; i++) {
        long ai;
        if (!pairs[2 * i + 1])
            continue;
        r = free_one(a, (uintptr_t)pairs[2 * i], (size_t)pairs[2 * i + 1], &ai);
        if (r < 0)
            break;
        emptied |= !a->arenas[ai].used;
    }
    if (r < 0) {
        size_t failed = i;
        mb_free_report keep = a->report;
        keep.batch_index = (int64_t)failed;
        while (i-- > 0)
            if (pairs[2 * i + 1])
                unfree(a, (uintptr_t)pairs[2 * i], (size_t)pairs[2 * i + 1]);
        if (r == MB_EDOUBLE)
            describe_overlap(a, pairs, failed, &keep);
        a->report = keep;
    } else if (emptied) {
        r = release_empties(a, 1);
    }
    mb_lock_give(&a->lock);
    return r;
}

/* ---- chunks of the compiled core (api.h) ---------------------------------- */

void mb_alloc_disown(mb_alloc *a, size_t n, uint64_t epoch)
{
    mb_lock_take(&a->lock);
    if (epoch == a->epoch)
        a->pinned += n;
    mb_lock_give(&a->lock);
}

int mb_alloc_chunk_done(mb_alloc *a, const void *p, size_t n, uint64_t epoch, int disowned)
{
    int r = 0;
    mb_lock_take(&a->lock);
    if (epoch == a->epoch && n) {
        long ai;
        r = free_one(a, (uintptr_t)p, n, &ai);
        if (r == 0) {
            if (disowned) {
                MB_ASSERT(a->pinned >= n);
                a->pinned -= n;
            }
            if (!a->arenas[ai].used)
                r = release_empties(a, 1);
        }
    }
    mb_lock_give(&a->lock);
    return r;
}

int mb_alloc_owns(mb_alloc *a, const void *p, size_t n)
{
    uintptr_t s = (uintptr_t)p;
    mb_lock_take(&a->lock);
    long ai = find_arena(a, s);
    int r = 0;
    if (ai >= 0 && n <= a->arenas[ai].size - (s - a->arenas[ai].base)) {
        uint32_t pr, q;
        mb_index_neighbours(&a->ix, s, &pr, &q);
        r = (!pr || a->ix.n[pr].start + a->ix.n[pr].len <= s) && (!q || a->ix.n[q].start >= s + n);
    }
    mb_lock_give(&a->lock);
    return r;
}

/* ---- whole-allocator operations ------------------------------------------ */

void mb_alloc_stats(mb_alloc *a, mb_stats *out)
{
    mb_lock_take(&a->lock);
    out->reserved = a->reserved;
    out->in_use = a->in_use;
    out->peak_in_use = a->peak_in_use;
    out->free = a->reserved - a->in_use;
    out->largest_free = mb_index_largest(&a->ix);
    out->arenas = a->narenas;
    out->mallocs = a->mallocs;
    out->frees = a->frees;
    out->failed = a->failed;
    out->pinned = a->pinned;
    mb_lock_give(&a->lock);
}

int mb_alloc_trim(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    int r = release_empties(a, 0);
    mb_lock_give(&a->lock);
    return r;
}

void mb_alloc_reset(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    for (size_t i = 0; i < a->narenas; i++)
        mb_region_release(a->arenas[i].region);
    a->narenas = 0;
    a->reserved = a->in_use = a->pinned = 0;
    a->epoch++;
    a->last_size = 0;
    mb_index_clear(&a->ix);
    mb_lock_give(&a->lock);
}

void *mb_alloc_borrow(mb_alloc *a, size_t n, size_t *capacity)
{
    mb_lock_take(&a->lock);
    if (n > a->scratch_cap || !a->scratch) {
        size_t cap = a->scratch_cap * 2 > n ? a->scratch_cap * 2 : n;
        void *p = malloc(cap ? cap : 1);
        if (p) {
            free(a->scratch);
            a->scratch = p;
            a->scratch_cap = cap;
        }
    }
    void *r = n <= a->scratch_cap ? a->scratch : NULL;
    *capacity = a->scratch_cap;
    mb_lock_give(&a->lock);
    return r;
}

void mb_alloc_last_free_report(mb_alloc *a, mb_free_report *out)
{
    mb_lock_take(&a->lock);
    *out = a->report;
    mb_lock_give(&a->lock);
}

size_t mb_alloc_arena_count(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    size_t n = a->narenas;
    mb_lock_give(&a->lock);
    return n;
}

size_t mb_alloc_arena_table(mb_alloc *a, uint64_t *out, size_t cap)
{
    mb_lock_take(&a->lock);
    size_t n = a->narenas;
    for (size_t i = 0; i < n && i < cap; i++) {
        out[3 * i] = a->arenas[i].id;
        out[3 * i + 1] = a->arenas[i].base;
        out[3 * i + 2] = a->arenas[i].size;
    }
    mb_lock_give(&a->lock);
    return n;
}

/* ---- invariants ------------------------------------------------------------ */

typedef struct walk {
    const mb_alloc *a;
    size_t *free_in;        /* free bytes seen per arena */
    uintptr_t prev_end;
    long prev_arena;
    int err;
} walk;

static void walk_ranges(walk *w, uint32_t t)
{
    const mb_index *ix = &w->a->ix;
    if (!t || w->err)
        return;
    walk_ranges(w, ix->n[t].l);
    uintptr_t s = ix->n[t].start;
    long ai = find_arena(w->a, s);
    if (ai < 0 || s + ix->n[t].len - w->a->arenas[ai].base > w->a->arenas[ai].size)
        w->err = MB_BAD_OUTSIDE;
    else if (ai == w->prev_arena && w->prev_end == s)
        w->err = MB_BAD_UNMERGED;
    else
        w->free_in[ai] += ix->n[t].len;
    w->prev_end = s + ix->n[t].len;
    w->prev_arena = ai;
    walk_ranges(w, ix->n[t].r);
}

int mb_alloc_check(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    int e = mb_index_check(&a->ix);
    size_t *free_in = calloc(a->narenas + 1, sizeof(size_t));
    if (!e && !free_in)
        e = MB_BAD_CHECK_MEMORY;
    uint64_t reserved = 0, used = 0;
    int spare = 0;
    for (size_t i = 0; !e && i < a->narenas; i++) {
        const arena *ar = &a->arenas[i];
        if (i && a->arenas[i - 1].base + a->arenas[i - 1].size > ar->base)
            e = MB_BAD_ARENA_ORDER;
        reserved += ar->size;
        used += ar->used;
        if (!ar->used)
            spare += ar->dedicated ? 2 : 1;
    }
    if (!e) {
        walk w = {a, free_in, 0, -1, 0};
        walk_ranges(&w, a->ix.root);
        e = w.err;
    }
    for (size_t i = 0; !e && i < a->narenas; i++)
        if (free_in[i] + a->arenas[i].used != a->arenas[i].size)
            e = MB_BAD_ARENA_SUM;
    if (!e && (reserved != a->reserved || used != a->in_use))
        e = MB_BAD_STATS;
    if (!e && spare > 1)
        e = MB_BAD_SPARES;
    if (!e && a->max_bytes && a->reserved > a->max_bytes)
        e = MB_BAD_MAX_BYTES;
    if (!e && a->pinned > a->in_use)
        e = MB_BAD_PINNED;
    free(free_in);
    mb_lock_give(&a->lock);
    return e;
}
