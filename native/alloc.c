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
 * Strategies pick the range a malloc carves from (always from its front):
 * first-fit the lowest address, best-fit the smallest range (the index's own
 * searches, O(log n)); good-fit keeps every free range also on the list of its
 * size class (sizeclass.c, TLSF-style bitmaps) and takes the head of the first
 * class whose every range fits: O(1), falling back to the index's first-fit
 * only when those classes are empty, so that no request fails while a range
 * fits. The range_* helpers below change the index and the class lists
 * together; the index alone still decides every free, with one exception that
 * is a proof rather than a search:
 *
 *   The last malloc. Good-fit remembers the bytes its last malloc carved, the
 *   node they came from (which now starts right after them) and the
 *   generation `gen`, which every change of the free ranges bumps. While gen
 *   is unchanged, nothing was freed or carved since, so a free of a suffix of
 *   those bytes is legal and merges into that node, exactly as the index
 *   would decide: no search. A malloc given back at once, or a receive
 *   chunk's unused tail (free_rest), costs O(1). And when all of those bytes
 *   came back that way, the state is what it was at that malloc, so the same
 *   malloc again gets the same answer without asking the classes: a
 *   malloc/free pair repeated is a replay.
 *
 * The owner of an address is found through a small cache of the arena each
 * 64 KiB granule belonged to last time (locate), checked against that arena's
 * bounds, so a stale entry only costs the binary search.
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
#include "sizeclass.h"

/* The arena cache: which arena held an address of each 64 KiB granule, last time. */
#define SEEN_BITS 9
#define SEEN_SHIFT 16

/* The bodies of malloc and free, inlined into each entry point (gcc and clang): a call
 * and its register saves are a tenth of a malloc/free pair on the fast paths. */
#define HOT_PATH static inline __attribute__((always_inline))

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
    mb_sizeclass *sc;   /* good-fit: the size-class lists in front of ix; NULL otherwise */
    arena *arenas;      /* sorted by base */
    size_t narenas, cap;
    size_t nempty;      /* arenas with nothing allocated (used == 0) */
    uint16_t seen[1 << SEEN_BITS];  /* arena cache (locate): an arena index, or junk */
    uint64_t gen;       /* bumped by every change of the free ranges (range_*, reset) */
    struct {            /* good-fit: the last malloc, [start, end) carved from the front of */
        uintptr_t start, end;   /* node `node` in arena `arena`; meaningful while node != 0 */
        uint32_t node;          /* and gen is still the generation it was taken at */
        long arena;
        uint64_t gen;
        size_t len0, n;         /* the node's length before that malloc; its size */
        int moved;              /* the node changed lists since */
    } hot;
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

/* ---- free ranges: the index and, for good-fit, the class lists together ------ */

/* A new free range; its node, or 0 when out of memory (nothing changed). */
static uint32_t range_insert(mb_alloc *a, uintptr_t start, size_t len)
{
    a->gen++;
    uint32_t x = mb_index_insert_node(&a->ix, start, len);
    if (x && a->sc)
        mb_sc_link(a->sc, &a->ix, x);
    return x;
}

/* The same between the neighbours mb_index_neighbours just found for start. */
static uint32_t range_insert_between(mb_alloc *a, uintptr_t start, size_t len, uint32_t pred,
                                     uint32_t succ)
{
    a->gen++;
    uint32_t x = mb_index_insert_between(&a->ix, start, len, pred, succ);
    if (x && a->sc)
        mb_sc_link(a->sc, &a->ix, x);
    return x;
}

/* Node x covers [start, start+len) now (the address order is kept). */
static void range_set(mb_alloc *a, uint32_t x, uintptr_t start, size_t len)
{
    a->gen++;
    mb_index_set(&a->ix, x, start, len);
    if (a->sc)
        mb_sc_moved(a->sc, &a->ix, x);
}

/* The same for a range that only grew (a free merged into it): the fast path. */
HOT_PATH void range_grow(mb_alloc *a, uint32_t x, uintptr_t start, size_t len)
{
    a->gen++;
    if (a->ix.by_size)
        mb_index_set(&a->ix, x, start, len);
    else
        mb_index_grow(&a->ix, x, start, len);
    if (a->sc)
        mb_sc_moved(a->sc, &a->ix, x);
}

static void range_remove(mb_alloc *a, uint32_t x)
{
    a->gen++;
    if (a->sc)
        mb_sc_unlink(a->sc, &a->ix, x);
    mb_index_remove_node(&a->ix, x);
}

/* ---- arena table ----------------------------------------------------------- */

/* Index of the arena holding addr, or -1. A binary search without branches (the
 * halving selects with a conditional move): every malloc and free makes one. */
static long find_arena(const mb_alloc *a, uintptr_t addr)
{
    size_t n = a->narenas;
    if (!n)
        return -1;
    const arena *lo = a->arenas;    /* the last arena with base <= addr, if any is */
    while (n > 1) {
        size_t half = n / 2;
        lo = lo[half].base <= addr ? lo + half : lo;
        n -= half;
    }
    return addr - lo->base < lo->size ? (long)(lo - a->arenas) : -1;
}

/* find_arena for malloc and free: first the arena that held an address of addr's 64 KiB
 * granule last time. Any entry is safe: arenas never overlap, so an arena that holds
 * addr is the answer, and an entry that is stale (arenas come and go, indices shift)
 * or out of range just costs the search. */
static inline long locate(mb_alloc *a, uintptr_t addr)
{
    uint16_t *slot = &a->seen[(addr >> SEEN_SHIFT) & ((1u << SEEN_BITS) - 1)];
    size_t i = *slot;
    if (i < a->narenas && addr - a->arenas[i].base < a->arenas[i].size)
        return (long)i;
    long ai = find_arena(a, addr);
    if (ai >= 0)
        *slot = (uint16_t)ai;      /* past 65535 arenas a truncated index: only a miss */
    return ai;
}

/* Account n bytes allocated in / given back to arena ar, keeping nempty exact. */
static inline void arena_take(mb_alloc *a, arena *ar, size_t n)
{
    a->nempty -= !ar->used;
    ar->used += n;
}

static inline void arena_give(mb_alloc *a, arena *ar, size_t n)
{
    ar->used -= n;
    a->nempty += !ar->used;
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
    if (!range_insert(a, (uintptr_t)p, size)) {
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
    a->nempty++;
    a->reserved += size;
    return 0;
}

static void release_arena(mb_alloc *a, size_t i)
{
    arena ar = a->arenas[i];
    uint32_t x = mb_index_find(&a->ix, ar.base);
    MB_ASSERT(x && a->ix.n[x].len == ar.size);  /* an empty arena is exactly one free range */
    range_remove(a, x);
    mb_region_release(ar.region);       /* unmapped now, or when its last chunk goes */
    memmove(&a->arenas[i], &a->arenas[i + 1], (a->narenas - i - 1) * sizeof(arena));
    a->narenas--;
    a->nempty--;
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

/* After a free emptied arena ai: the spare policy, when there is something to release
 * (a dedicated arena, or a second empty one). */
static int after_emptied(mb_alloc *a, long ai)
{
    if (a->nempty == 1 && !a->arenas[ai].dedicated)
        return 0;                   /* it is the one spare kept */
    return release_empties(a, 1);
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
        (strategy != MB_FIRST_FIT && strategy != MB_BEST_FIT && strategy != MB_GOOD_FIT))
        return NULL;
    mb_alloc *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    if (strategy == MB_GOOD_FIT && !(a->sc = calloc(1, sizeof *a->sc))) {
        free(a);
        return NULL;
    }
    if (mb_index_init(&a->ix, strategy == MB_BEST_FIT, seed) < 0) {
        free(a->sc);
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
    free(a->sc);
    free(a);
}

/* ---- malloc / free ------------------------------------------------------- */

/* Good-fit: the head of the first size class that guarantees a fit, else (those
 * classes empty) the index's lowest fitting range; carve n from its front. */
static inline uintptr_t take_good_fit(mb_alloc *a, size_t n)
{
    uint32_t x = mb_sc_find(a->sc, n);
    if (!x && !(x = mb_index_first_fit(&a->ix, n)))
        return 0;
    uintptr_t s = a->ix.n[x].start;
    size_t len = a->ix.n[x].len;
    MB_ASSERT(len >= n);
    if (len == n) {
        range_remove(a, x);
        a->hot.node = 0;
    } else {
        a->gen++;
        mb_index_shrink(&a->ix, x, s + n, len - n);
        a->hot.moved = mb_sc_moved(a->sc, &a->ix, x);
        a->hot.node = x;            /* malloc_locked records the rest */
        a->hot.len0 = len;
        a->hot.n = n;
    }
    return s;
}

static inline uintptr_t take(mb_alloc *a, size_t n)
{
    if (a->sc)
        return take_good_fit(a, n);
    return a->strategy == MB_BEST_FIT ? mb_index_take_best_fit(&a->ix, n)
                                      : mb_index_take_first_fit(&a->ix, n);
}

/* Nothing fits n: grow and carve, or count a failure; the caller holds the lock. */
static uintptr_t malloc_cold(mb_alloc *a, size_t n, int *err)
{
    int g = n > MAX_REQUEST ? MB_ELIMIT : grow(a, n);
    uintptr_t s = g == 0 ? take(a, n) : 0;
    if (!s) {
        a->failed++;
        *err = g ? g : MB_ENOMEM;
    }
    return s;
}

/* Good-fit, the same malloc as the last one, whose bytes have all come back since
 * (free_hot) with nothing else changed: the free ranges and the lists are exactly as
 * they were then, so the same request gets the same answer, the front of the same
 * node, which stays on its list as it did then. No class search, no arena search. */
static inline int malloc_again(const mb_alloc *a, size_t n)
{
    return a->hot.node && a->hot.gen == a->gen && a->hot.end == a->hot.start &&
           !a->hot.moved && n == a->hot.n;
}

static inline uintptr_t malloc_replay(mb_alloc *a, size_t n, arena **where)
{
    uint32_t x = a->hot.node;
    uintptr_t s = a->hot.start;
    MB_ASSERT(a->ix.n[x].start == s && a->ix.n[x].len == a->hot.len0);
    a->gen++;
    mb_index_shrink(&a->ix, x, s + n, a->hot.len0 - n);
    a->hot.end = s + n;
    a->hot.gen = a->gen;
    arena *ar = &a->arenas[a->hot.arena];
    arena_take(a, ar, n);
    a->in_use += n;
    if (a->in_use > a->peak_in_use)
        a->peak_in_use = a->in_use;
    a->mallocs++;
    *where = ar;
    return s;
}

/* Carve n bytes, growing when nothing fits; the caller holds the lock. */
HOT_PATH uintptr_t malloc_locked(mb_alloc *a, size_t n, arena **where, int *err)
{
    if (malloc_again(a, n))
        return malloc_replay(a, n, where);
    uintptr_t s = n > MAX_REQUEST ? 0 : take(a, n);
    if (!s && !(s = malloc_cold(a, n, err)))
        return 0;
    long ai = locate(a, s);
    MB_ASSERT(ai >= 0);             /* the index only holds ranges inside arenas */
    arena *ar = &a->arenas[ai];
    arena_take(a, ar, n);
    if (a->hot.node) {
        a->hot.start = s;
        a->hot.end = s + n;
        a->hot.arena = ai;
        a->hot.gen = a->gen;
    }
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

/* Free a suffix [s, hot.end) of the last malloc while nothing changed since (the caller
 * checked): those bytes are allocated, the range they were carved from still starts at
 * hot.end, and the bytes before them are allocated or lie in another arena, so freeing
 * them is legal and gives them back to that range, exactly as the index would. */
HOT_PATH void free_hot(mb_alloc *a, uintptr_t s, size_t n)
{
    uint32_t x = a->hot.node;
    size_t old = a->ix.n[x].len;
    MB_ASSERT(a->ix.n[x].start == s + n);
    a->gen++;
    mb_index_grow(&a->ix, x, s, old + n);
    if (s != a->hot.start || a->hot.moved)
        a->hot.moved |= mb_sc_moved(a->sc, &a->ix, x);
    else    /* the whole malloc is back: the node is as before it, on the list it was on */
        MB_ASSERT(old + n == a->hot.len0);
    a->hot.end = s;
    a->hot.gen = a->gen;
}

/* free_one for every range but a suffix of the last malloc: the index decides. */
HOT_PATH int free_cold(mb_alloc *a, uintptr_t s, size_t n, long *arena_out)
{
    long ai = locate(a, s);
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
        range_remove(a, q);
        range_grow(a, p, a->ix.n[p].start, merged);
    } else if (left) {
        range_grow(a, p, pn->start, pn->len + n);
    } else if (right) {
        range_grow(a, q, s, qn->len + n);
    } else if (!range_insert_between(a, s, n, p, q)) {
        return refuse(a, MB_ENOMEM, s, n, ai, 0);
    }
    arena_give(a, ar, n);
    a->in_use -= n;
    a->frees++;
    *arena_out = ai;
    return 0;
}

/* Free one range without releasing arenas; 0 or an error (state unchanged). */
HOT_PATH int free_one(mb_alloc *a, uintptr_t s, size_t n, long *arena_out)
{
    if (!(a->hot.node && a->hot.gen == a->gen && s - a->hot.start < a->hot.end - a->hot.start &&
          s + n == a->hot.end))
        return free_cold(a, s, n, arena_out);
    long ai = a->hot.arena;
    free_hot(a, s, n);
    arena_give(a, &a->arenas[ai], n);
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
    MB_ASSERT(p && a->ix.n[p].start <= s);  /* the range holding [s, s+n) */
    uintptr_t ps = a->ix.n[p].start, pe = ps + a->ix.n[p].len;
    if (ps < s)
        range_set(a, p, ps, s - ps);
    else
        range_remove(a, p);
    if (s + n < pe) {
        /* cannot fail: free_one took at most one node, and undoing it gives one back */
        uint32_t inserted = range_insert(a, s + n, pe - (s + n));
        MB_ASSERT(inserted != 0);
        (void)inserted;
    }
    long ai = find_arena(a, s);
    MB_ASSERT(ai >= 0);
    arena_take(a, &a->arenas[ai], n);
    a->in_use += n;
    a->frees--;
}

int mb_alloc_free(mb_alloc *a, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    mb_lock_take(&a->lock);
    long ai = -1;       /* set by free_one when it succeeds */
    int r = free_one(a, (uintptr_t)p, n, &ai);
    if (r == 0 && !a->arenas[ai].used)
        r = after_emptied(a, ai);
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

static int free_batch_locked(mb_alloc *a, const uint64_t *pairs, size_t count);

int mb_alloc_free_batch(mb_alloc *a, const uint64_t *pairs, size_t count)
{
    mb_lock_take(&a->lock);
    int r = free_batch_locked(a, pairs, count);
    mb_lock_give(&a->lock);
    return r;
}

int mb_alloc_free_batch_epoch(mb_alloc *a, const uint64_t *pairs, size_t count, uint64_t epoch)
{
    mb_lock_take(&a->lock);
    int r = epoch == a->epoch ? free_batch_locked(a, pairs, count) : 0;
    mb_lock_give(&a->lock);
    return r;
}

uint64_t mb_alloc_epoch(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    uint64_t e = a->epoch;
    mb_lock_give(&a->lock);
    return e;
}

int mb_alloc_pin(mb_alloc *a, const void *p, size_t n, mb_region **region)
{
    uintptr_t s = (uintptr_t)p;
    mb_lock_take(&a->lock);
    long ai = find_arena(a, s);
    int ok = ai >= 0 && n <= a->arenas[ai].size - (s - a->arenas[ai].base);
    if (ok) {
        mb_region_retain(a->arenas[ai].region);
        *region = a->arenas[ai].region;
    }
    mb_lock_give(&a->lock);
    return ok;
}

/* The body of a batch free; the caller holds the lock. */
static int free_batch_locked(mb_alloc *a, const uint64_t *pairs, size_t count)
{
    int r = 0, emptied = 0;
    size_t i;
    for (i = 0; i < count; i++) {
        long ai = -1;
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
        long ai = -1;
        r = free_one(a, (uintptr_t)p, n, &ai);
        if (r == 0) {
            if (disowned) {
                MB_ASSERT(a->pinned >= n);
                a->pinned -= n;
            }
            if (!a->arenas[ai].used)
                r = after_emptied(a, ai);
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
    a->narenas = a->nempty = 0;
    a->reserved = a->in_use = a->pinned = 0;
    a->gen++;
    a->hot.node = 0;
    a->epoch++;
    a->last_size = 0;
    mb_index_clear(&a->ix);
    if (a->sc)
        mb_sc_clear(a->sc);
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
    walk_ranges(w, ix->n[t].c[0]);
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
    walk_ranges(w, ix->n[t].c[1]);
}

/* While current, the record of the last malloc describes allocated bytes [start, end)
 * of one arena, followed by the free range of its node. */
static int hot_sound(const mb_alloc *a)
{
    if (!a->hot.node || a->hot.gen != a->gen)
        return 1;                   /* stale: never used again */
    uintptr_t s = a->hot.start, end = a->hot.end;
    if (!a->sc || a->hot.node >= a->ix.cap || mb_index_find(&a->ix, end) != a->hot.node ||
        s > end || a->hot.arena < 0 || (size_t)a->hot.arena >= a->narenas)
        return 0;
    const arena *ar = &a->arenas[a->hot.arena];
    if (s < ar->base || a->ix.n[a->hot.node].start + a->ix.n[a->hot.node].len - ar->base > ar->size)
        return 0;
    uint32_t p, q;
    mb_index_neighbours(&a->ix, s, &p, &q);
    return s == end || ((!p || a->ix.n[p].start + a->ix.n[p].len <= s) && q == a->hot.node);
}

int mb_alloc_check(mb_alloc *a)
{
    mb_lock_take(&a->lock);
    int e = mb_index_check(&a->ix);
    if (!e && a->sc)
        e = mb_sc_check(a->sc, &a->ix);
    size_t *free_in = calloc(a->narenas + 1, sizeof(size_t));
    if (!e && !free_in)
        e = MB_BAD_CHECK_MEMORY;
    uint64_t reserved = 0, used = 0;
    size_t empty = 0;
    int spare = 0;
    for (size_t i = 0; !e && i < a->narenas; i++) {
        const arena *ar = &a->arenas[i];
        if (i && a->arenas[i - 1].base + a->arenas[i - 1].size > ar->base)
            e = MB_BAD_ARENA_ORDER;
        reserved += ar->size;
        used += ar->used;
        empty += !ar->used;
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
    if (!e && empty != a->nempty)
        e = MB_BAD_EMPTY_COUNT;
    if (!e && !hot_sound(a))
        e = MB_BAD_HOT;
    if (!e && a->max_bytes && a->reserved > a->max_bytes)
        e = MB_BAD_MAX_BYTES;
    if (!e && a->pinned > a->in_use)
        e = MB_BAD_PINNED;
    free(free_in);
    mb_lock_give(&a->lock);
    return e;
}
