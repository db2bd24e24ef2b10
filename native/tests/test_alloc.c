/* C tests of the allocator and its free-range index, run under ASan + UBSan by `make test`.
 *
 * Three parts: scripted cases for every rule (partial free, refusals that change
 * nothing, growth, limits, trim, reset, batches, best-fit, good-fit's classes and
 * its fallback); a randomized run against a model of live ranges with fill
 * patterns and a full invariant check every few steps; and four threads sharing
 * one allocator. Every case that does not depend on where a strategy places a
 * block runs under all three strategies.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "check.h"
#include "sizeclass.h"

#include "tests/testhelper.h"

#define SOUND(a)                                                                   \
    do {                                                                           \
        int broken_ = mb_alloc_check(a);                                           \
        if (broken_)                                                               \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, mb_check_name(broken_)); \
        CHECK(broken_ == MB_SOUND);                                                \
    } while (0)

static uint8_t *addr_of(mb_alloc *a, int64_t r)
{
    uint64_t id = (uint64_t)r >> MB_ID_SHIFT, off = (uint64_t)r & ((UINT64_C(1) << MB_ID_SHIFT) - 1);
    size_t cap = 64, n;
    uint64_t *table = NULL;
    for (;;) {                          /* the table may hold more arenas than we made room for */
        table = realloc(table, 3 * cap * sizeof *table);
        n = mb_alloc_arena_table(a, table, cap);
        if (n <= cap)
            break;
        cap = n;
    }
    uint8_t *p = NULL;
    for (size_t i = 0; i < n && !p; i++)
        if (table[3 * i] == id)
            p = (uint8_t *)(uintptr_t)(table[3 * i + 1] + off);
    free(table);
    return p;
}

static uint8_t *xmalloc(mb_alloc *a, size_t n)
{
    int64_t r = mb_alloc_malloc(a, n);
    return r < 0 ? NULL : addr_of(a, r);
}

static mb_stats stats(mb_alloc *a)
{
    mb_stats s;
    mb_alloc_stats(a, &s);
    return s;
}

static const int strategies[] = {MB_FIRST_FIT, MB_BEST_FIT, MB_GOOD_FIT};
#define EACH_STRATEGY(s) for (size_t k_ = 0; k_ < 3 && ((s) = strategies[k_], 1); k_++)

static void test_partial_free(int strategy)
{
    mb_alloc *a = mb_alloc_new(4096, 1 << 20, 0, strategy, 0, 1);
    uint8_t *p = xmalloc(a, 1000);
    CHECK(p != NULL);
    memset(p, 0xab, 1000);
    CHECK(mb_alloc_free(a, p + 400, 100) == 0);           /* middle */
    SOUND(a);
    CHECK(mb_alloc_free(a, p, 100) == 0);                 /* prefix */
    CHECK(mb_alloc_free(a, p + 900, 100) == 0);           /* suffix */
    CHECK(stats(a).in_use == 700);
    /* refusals change nothing */
    mb_stats before = stats(a);
    CHECK(mb_alloc_free(a, p + 450, 10) == MB_EDOUBLE);   /* inside a free hole */
    CHECK(mb_alloc_free(a, p + 350, 100) == MB_EDOUBLE);  /* overlaps the hole's start */
    CHECK(mb_alloc_free(a, p + 50, 100) == MB_EDOUBLE);   /* overlaps the freed prefix */
    uint8_t local[16];
    CHECK(mb_alloc_free(a, local, 16) == MB_EFOREIGN);
    CHECK(mb_alloc_free(a, p + 100, 1 << 20) == MB_EFOREIGN); /* runs past the arena */
    mb_stats after = stats(a);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    SOUND(a);
    CHECK(mb_alloc_owns(a, p + 100, 300) == 1);
    CHECK(mb_alloc_owns(a, p + 100, 301) == 0);
    CHECK(mb_alloc_owns(a, local, 1) == 0);
    /* first-fit reuses the lowest hole that fits; the others both 100-byte holes too
     * (the smallest that fit; good-fit: the class of exactly 100 holds both) */
    uint8_t *q = xmalloc(a, 100);
    uint8_t *r = xmalloc(a, 100);
    if (strategy == MB_FIRST_FIT)
        CHECK(q == p && r == p + 400);
    else
        CHECK((q == p && r == p + 400) || (q == p + 400 && r == p));
    CHECK(mb_alloc_free(a, q, 100) == 0);
    CHECK(mb_alloc_free(a, r, 100) == 0);
    CHECK(mb_alloc_free(a, p + 100, 300) == 0);
    CHECK(mb_alloc_free(a, p + 500, 400) == 0);
    CHECK(stats(a).in_use == 0);
    CHECK(stats(a).largest_free == stats(a).reserved);    /* everything merged back */
    SOUND(a);
    mb_alloc_delete(a);
}

static void test_growth_and_limits(int strategy)
{
    mb_alloc *a = mb_alloc_new(4096, 16384, 65536, strategy, 0, 2);
    uint8_t *p = xmalloc(a, 4096);
    uint8_t *q = xmalloc(a, 1);                           /* needs a second arena: 8 KiB */
    CHECK(p && q);
    CHECK(stats(a).arenas == 2 && stats(a).reserved == 4096 + 8192);
    uint8_t *big = xmalloc(a, 20000);                     /* above max_arena_size: dedicated */
    CHECK(big != NULL);
    CHECK(stats(a).arenas == 3);
    CHECK(mb_alloc_free(a, big + 10000, 10000) == 0);     /* partial free on a dedicated arena */
    SOUND(a);
    /* max_bytes: 4096 + 8192 + 20480 reserved; 32768 left, a 40000 request must fail ... */
    CHECK(mb_alloc_malloc(a, 40000) == MB_ELIMIT);
    CHECK(stats(a).failed == 1);
    /* ... but a request that fits under the cap gets the largest arena that fits */
    CHECK(xmalloc(a, 30000) != NULL);
    CHECK(stats(a).reserved <= 65536);
    SOUND(a);
    CHECK(mb_alloc_malloc(a, (size_t)1 << 41) == MB_ELIMIT);
    CHECK(mb_alloc_malloc(a, 0) == MB_EINVAL);
    mb_alloc_reset(a);
    CHECK(stats(a).reserved == 0 && stats(a).in_use == 0 && stats(a).arenas == 0);
    SOUND(a);
    CHECK(xmalloc(a, 100) != NULL);                       /* usable after reset */
    mb_alloc_delete(a);
}

static void test_spare_and_trim(int strategy)
{
    mb_alloc *a = mb_alloc_new(4096, 1 << 20, 0, strategy, 0, 3);
    uint8_t *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = xmalloc(a, 4096 << i);                     /* one arena each, growing */
    CHECK(stats(a).arenas == 4);
    for (int i = 0; i < 4; i++) {
        CHECK(mb_alloc_free(a, p[i], 4096 << i) == (i == 0 ? 0 : 1));
        SOUND(a);                                         /* at most one empty arena kept */
    }
    CHECK(stats(a).arenas == 1 && stats(a).in_use == 0);
    CHECK(mb_alloc_trim(a) == 1);
    CHECK(stats(a).arenas == 0 && stats(a).reserved == 0);
    mb_alloc_delete(a);
}

static void test_batch(int strategy)
{
    mb_alloc *a = mb_alloc_new(65536, 1 << 20, 0, strategy, 0, 4);
    uint8_t *p = xmalloc(a, 300);
    uint64_t ok[] = {(uintptr_t)p, 100, (uintptr_t)p + 200, 100};
    CHECK(mb_alloc_free_batch(a, ok, 2) == 0);
    CHECK(stats(a).in_use == 100);
    mb_stats before = stats(a);
    /* second item double-frees the first: all or nothing */
    uint64_t bad[] = {(uintptr_t)p + 100, 50, (uintptr_t)p + 120, 10};
    CHECK(mb_alloc_free_batch(a, bad, 2) == MB_EDOUBLE);
    mb_free_report rep;
    mb_alloc_last_free_report(a, &rep);
    CHECK(rep.batch_index == 1);
    mb_stats after = stats(a);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    SOUND(a);
    CHECK(mb_alloc_owns(a, p + 100, 100) == 1);
    mb_alloc_delete(a);
}

static void test_best_fit(void)
{
    mb_alloc *a = mb_alloc_new(65536, 1 << 20, 0, MB_BEST_FIT, 0, 5);
    uint8_t *p = xmalloc(a, 1000);
    CHECK(mb_alloc_free(a, p + 100, 300) == 0);           /* hole of 300 at 100 */
    CHECK(mb_alloc_free(a, p + 500, 50) == 0);            /* hole of 50 at 500 */
    CHECK(xmalloc(a, 40) == p + 500);                     /* smallest fit, not lowest */
    CHECK(xmalloc(a, 200) == p + 100);
    SOUND(a);
    mb_alloc_delete(a);
}

/* Classes are ordered by length, cover every length once, and their bounds agree. */
static void test_size_classes(void)
{
    unsigned prev = 0;
    for (size_t len = 1; len < 70000; len++) {
        unsigned c = mb_sc_class(len);
        CHECK(c >= prev && c <= prev + 1);                /* monotone, no class skipped */
        CHECK(mb_sc_class_min(c) <= len && len < mb_sc_class_min(c + 1));
        /* malloc's rounding: the first class all of whose lengths hold len */
        CHECK(mb_sc_class(len - 1) + 1 == c + (mb_sc_class_min(c) < len));
        prev = c;
        if (failures)
            return;
    }
    for (unsigned b = 6; b < MB_SC_MAX_BITS; b++) {        /* each power of two: 32 classes */
        size_t lo = (size_t)1 << b;
        CHECK(mb_sc_class(lo) == mb_sc_class(lo - 1) + 1);
        CHECK(mb_sc_class(2 * lo - 1) - mb_sc_class(lo) == MB_SC_SL_COUNT - 1);
        CHECK(mb_sc_class_min(mb_sc_class(lo)) == lo);
    }
    uint64_t x = 7;
    for (int i = 0; i < 200000; i++) {                     /* the one-scan class test agrees */
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t a = 1 + (size_t)(x % ((size_t)1 << (1 + i % 40)));
        size_t b = i % 3 ? a + (x >> 40) % 97 - 48 : 1 + (size_t)((x >> 20) % ((size_t)1 << (i % 41)));
        if (b == 0 || b >= ((size_t)1 << MB_SC_MAX_BITS))
            continue;
        CHECK(mb_sc_same_class(a, b) == (mb_sc_class(a) == mb_sc_class(b)));
        if (failures)
            return;
    }
    CHECK(mb_sc_same_class(65536, 65504) == 0 && mb_sc_same_class(65535, 65504) == 1);
    CHECK(mb_sc_class(((size_t)1 << MB_SC_MAX_BITS) - 1) == MB_SC_COUNT - 1);
    CHECK(mb_sc_class(((size_t)1 << 40)) < MB_SC_COUNT);   /* the largest arena has a class */
}

/* Good-fit takes from the smallest class that guarantees a fit ... */
static void test_good_fit(void)
{
    mb_alloc *a = mb_alloc_new(65536, 1 << 20, 0, MB_GOOD_FIT, 0, 8);
    uint8_t *p = xmalloc(a, 1000);
    CHECK(mb_alloc_free(a, p + 100, 300) == 0);           /* hole of 300 at 100 */
    CHECK(mb_alloc_free(a, p + 500, 50) == 0);            /* hole of 50 at 500 */
    SOUND(a);
    CHECK(xmalloc(a, 40) == p + 500);                     /* class 50 before 300 and the tail */
    CHECK(xmalloc(a, 200) == p + 100);                    /* 300's class before the tail */
    CHECK(xmalloc(a, 10) == p + 540);                     /* the 10 left of the 50 */
    SOUND(a);
    CHECK(xmalloc(a, 100) == p + 300);                    /* the rest of the 300 hole */
    /* a 99-byte range sits in the class [98, 100): a request of 99 is rounded up to the
     * class starting at 100, whose every range fits, so it is taken from the tail */
    CHECK(mb_alloc_free(a, p + 600, 99) == 0);
    CHECK(xmalloc(a, 99) == p + 1000);
    CHECK(xmalloc(a, 98) == p + 600);                     /* 98 is its class's bound */
    SOUND(a);
    mb_alloc_delete(a);

    /* ... and never fails while a range fits, even when growing is not allowed */
    a = mb_alloc_new(4096, 4096, 4096, MB_GOOD_FIT, 0, 9);
    p = xmalloc(a, 4096);
    CHECK(p != NULL);
    CHECK(mb_alloc_free(a, p + 1000, 99) == 0);
    CHECK(mb_alloc_malloc(a, 100) == MB_ELIMIT);          /* nothing holds 100 */
    CHECK(xmalloc(a, 99) == p + 1000);
    CHECK(mb_alloc_free(a, p + 2000, 33) == 0);
    CHECK(mb_alloc_free(a, p + 3000, 34) == 0);
    CHECK(xmalloc(a, 34) == p + 3000);                    /* classes below 64 are exact */
    CHECK(xmalloc(a, 33) == p + 2000);
    CHECK(stats(a).failed == 1 && stats(a).in_use == 4096);
    SOUND(a);
    /* reset empties the lists with the index */
    mb_alloc_reset(a);
    SOUND(a);
    p = xmalloc(a, 100);
    CHECK(p != NULL && mb_alloc_free(a, p + 10, 20) == 0);
    SOUND(a);
    mb_alloc_delete(a);
}

/* Good-fit's last-malloc path: a suffix of the newest block goes straight back to the
 * range it came from; anything else, or anything after a change, goes to the index. */
static void test_good_fit_last_malloc(void)
{
    mb_alloc *a = mb_alloc_new(65536, 1 << 20, 0, MB_GOOD_FIT, 0, 10);
    uint8_t *base = xmalloc(a, 100);
    mb_stats empty = stats(a);
    for (int i = 0; i < 3; i++) {                         /* malloc, give back at once */
        uint8_t *p = xmalloc(a, 32);
        CHECK(p == base + 100);
        CHECK(mb_alloc_free(a, p, 32) == 0);
        SOUND(a);
    }
    CHECK(stats(a).largest_free == empty.largest_free && stats(a).in_use == 100);
    uint8_t *p = xmalloc(a, 4096);                        /* a receive chunk ... */
    CHECK(mb_alloc_free(a, p + 1000, 3096) == 0);         /* ... its unused tail */
    CHECK(mb_alloc_free(a, p + 600, 400) == 0);           /* ... and more of it */
    SOUND(a);
    mb_stats before = stats(a);
    CHECK(mb_alloc_free(a, p + 600, 400) == MB_EDOUBLE);  /* the same tail again */
    CHECK(mb_alloc_free(a, p + 500, 200) == MB_EDOUBLE);  /* runs into it */
    CHECK(mb_alloc_free(a, p + 100, 501) == MB_EDOUBLE);  /* ends one byte inside it */
    mb_stats after = stats(a);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    CHECK(stats(a).in_use == 700 && stats(a).largest_free == empty.largest_free - 600);
    CHECK(mb_alloc_free(a, p + 100, 100) == 0);           /* a middle piece: the index */
    CHECK(mb_alloc_owns(a, p, 100) && mb_alloc_owns(a, p + 200, 400));
    SOUND(a);
    /* another malloc in between: p's tail is no longer the last malloc's */
    uint8_t *q = xmalloc(a, 50);
    CHECK(mb_alloc_free(a, p + 300, 300) == 0);
    CHECK(mb_alloc_free(a, q + 10, 40) == 0);
    SOUND(a);
    /* a batch whose first item takes the fast path and whose second is bad: undone */
    uint8_t *r = xmalloc(a, 1000);
    before = stats(a);
    uint64_t bad[] = {(uintptr_t)r + 500, 500, (uintptr_t)r + 400, 200};
    CHECK(mb_alloc_free_batch(a, bad, 2) == MB_EDOUBLE);
    after = stats(a);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    CHECK(mb_alloc_owns(a, r, 1000));
    SOUND(a);
    uint64_t good[] = {(uintptr_t)r + 500, 500, (uintptr_t)r, 500};
    CHECK(mb_alloc_free_batch(a, good, 2) == 0);
    SOUND(a);
    /* a reset forgets the last malloc with everything else */
    uint8_t *t = xmalloc(a, 64);
    mb_alloc_reset(a);
    CHECK(mb_alloc_free(a, t + 32, 32) == MB_EFOREIGN);
    SOUND(a);
    mb_alloc_delete(a);
}

/* ---- randomized run against a model ----------------------------------- */

typedef struct { uint8_t *p; size_t n; uint8_t fill; } live;

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static int intact(const live *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->p[i] != l->fill)
            return 0;
    return 1;
}

static void test_random(int strategy, int steps)
{
    mb_alloc *a = mb_alloc_new(4096, 1 << 16, 1 << 22, strategy, 0, 6);
    live *L = calloc(4096, sizeof *L);
    size_t nl = 0, in_use = 0;
    for (int step = 0; step < steps; step++) {
        uint64_t op = next() % 10;
        if (op < 5 && nl < 4096) {
            size_t n = 1 + next() % (next() % 8 == 0 ? 70000 : 600);
            uint8_t *p = xmalloc(a, n);
            if (p) {
                L[nl] = (live){p, n, (uint8_t)next()};
                memset(p, L[nl].fill, n);
                nl++;
                in_use += n;
            } else {
                /* no false failure: nothing free fits and the cap leaves no room */
                mb_stats s = stats(a);
                CHECK(s.largest_free < n);
                CHECK(((1 << 22) - s.reserved) / 4096 * 4096 < n);
            }
        } else if (nl) {
            size_t i = next() % nl;
            live *l = &L[i];
            CHECK(intact(l));
            size_t cut = next() % l->n, len = 1 + next() % (l->n - cut);
            int kind = (int)(next() % 4);
            if (kind == 0) { cut = 0; len = l->n; }            /* whole */
            int released = mb_alloc_free(a, l->p + cut, len);
            CHECK(released >= 0);
            if (next() % 4 == 0) {   /* a double free is refused; foreign once its arena is gone */
                int again = mb_alloc_free(a, l->p + cut, len);
                CHECK(again == MB_EDOUBLE || (released > 0 && again == MB_EFOREIGN));
            }
            in_use -= len;
            /* keep the model: the remaining prefix and suffix are live ranges */
            live pre = {l->p, cut, l->fill}, suf = {l->p + cut + len, l->n - cut - len, l->fill};
            L[i] = L[--nl];
            if (pre.n) L[nl++] = pre;
            if (suf.n && nl < 4096) L[nl++] = suf;
            else if (suf.n) { CHECK(mb_alloc_free(a, suf.p, suf.n) >= 0); in_use -= suf.n; }
        }
        CHECK(stats(a).in_use == in_use);
        if (step % 16 == 0)
            SOUND(a);
        if (failures)
            break;
    }
    while (nl) {
        CHECK(intact(&L[nl - 1]));
        CHECK(mb_alloc_free(a, L[nl - 1].p, L[nl - 1].n) >= 0);
        nl--;
    }
    CHECK(stats(a).in_use == 0);
    CHECK(stats(a).arenas <= 1);
    SOUND(a);
    free(L);
    mb_alloc_delete(a);
}

/* ---- threads ------------------------------------------------------------ */

static mb_alloc *shared;

static void *worker(void *arg)
{
    uint8_t fill = (uint8_t)(uintptr_t)arg;
    uint8_t *held[64] = {0};
    size_t sizes[64] = {0};
    uint64_t x = 1234567 + fill;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = (int)(x % 64);
        if (held[k]) {
            for (size_t j = 0; j < sizes[k]; j++)
                if (held[k][j] != fill) { failures++; return NULL; }
            size_t half = sizes[k] / 2;
            mb_alloc_free(shared, held[k] + half, sizes[k] - half);   /* partial, then the rest */
            if (half) mb_alloc_free(shared, held[k], half);
            held[k] = NULL;
        } else {
            sizes[k] = 1 + x % 2000;
            held[k] = mb_alloc_malloc_ptr(shared, sizes[k]);   /* the table may move under us */
            if (!held[k]) { failures++; return NULL; }
            memset(held[k], fill, sizes[k]);
        }
    }
    for (int k = 0; k < 64; k++)
        if (held[k]) mb_alloc_free(shared, held[k], sizes[k]);
    return NULL;
}

static void test_threads(int strategy)
{
    shared = mb_alloc_new(4096, 1 << 20, 0, strategy, 0, 7);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(stats(shared).in_use == 0);
    SOUND(shared);
    mb_alloc_delete(shared);
}

/* The node pool stays on a 64-byte boundary as it grows (realloc may hand back a block
 * at another offset: the nodes move with it), and no range is lost on the way. */
static void test_index_pool(int by_size)
{
    mb_index ix;
    CHECK(mb_index_init(&ix, by_size, 3) == 0);
    CHECK(sizeof(mb_node) == 64 && (uintptr_t)ix.n % 64 == 0);
    for (uint32_t i = 0; i < 20000; i++) {         /* 64 nodes at first: 9 doublings */
        uintptr_t start = 4096 + (uintptr_t)((i * 7919u) % 20000u) * 64;
        CHECK(mb_index_insert(&ix, start, 1 + i % 63) == 0);
        CHECK((uintptr_t)ix.n % 64 == 0);
        if (failures)
            break;
    }
    CHECK(ix.count == 20000 && mb_index_check(&ix) == MB_SOUND);
    CHECK(mb_index_largest(&ix) == 63);
    for (uint32_t i = 0; i < 20000; i++)           /* every range where it was put */
        CHECK(mb_index_find(&ix, 4096 + (uintptr_t)((i * 7919u) % 20000u) * 64) != 0);
    mb_index_destroy(&ix);
}

/* A good-fit node records the list it is on: a record that names another list is
 * caught by the check, by name. */
static void test_class_record(void)
{
    mb_sizeclass sc;
    mb_index ix;
    mb_sc_clear(&sc);
    CHECK(mb_index_init(&ix, 0, 9) == 0);
    uint32_t x = mb_index_insert_node(&ix, 1000, 700), y = mb_index_insert_node(&ix, 5000, 90);
    mb_sc_link(&sc, &ix, x);
    mb_sc_link(&sc, &ix, y);
    CHECK(ix.n[x].list == mb_sc_class(700) && mb_sc_check(&sc, &ix) == MB_SOUND);
    mb_index_grow(&ix, x, 1000, 705);               /* one class up: stays (hysteresis) */
    CHECK(mb_sc_moved(&sc, &ix, x) == 0 && mb_sc_check(&sc, &ix) == MB_SOUND);
    mb_index_grow(&ix, x, 1000, 2000);              /* far up: moves, and records it */
    CHECK(mb_sc_moved(&sc, &ix, x) == 1 && ix.n[x].list == mb_sc_class(2000));
    CHECK(mb_sc_check(&sc, &ix) == MB_SOUND);
    mb_index_shrink(&ix, x, 1000, 20);              /* below its list: must move down */
    CHECK(mb_sc_moved(&sc, &ix, x) == 1 && ix.n[x].list == mb_sc_class(20));
    CHECK(mb_sc_check(&sc, &ix) == MB_SOUND);
    ix.n[y].list++;                                 /* a record naming the next list up */
    CHECK(mb_sc_check(&sc, &ix) == MB_BAD_CLASS_LIST);
    ix.n[y].list--;
    mb_sc_unlink(&sc, &ix, y);
    mb_index_remove_node(&ix, y);
    CHECK(mb_sc_check(&sc, &ix) == MB_SOUND);
    mb_index_destroy(&ix);
}

/* Every invariant code has its own sentence; codes outside the list say so. */
static void test_check_names(void)
{
    CHECK(strcmp(mb_check_name(MB_SOUND), "sound") == 0);
    CHECK(strstr(mb_check_name(MB_BAD_UNMERGED), "merge") != NULL);
    CHECK(strstr(mb_check_name(MB_BAD_PARENT), "parent") != NULL);
    CHECK(strcmp(mb_check_name(12345), "unknown invariant") == 0);
    CHECK(strcmp(mb_check_name(MB_BAD_NIL), mb_check_name(MB_BAD_COUNT)) != 0);
    for (int code = MB_BAD_CLASS_FL_MAP; code <= MB_BAD_CLASS_LIST; code++)
        CHECK(strncmp(mb_check_name(code), "size classes: ", 14) == 0);
    CHECK(strcmp(mb_check_name(MB_BAD_CLASS_TWICE), mb_check_name(MB_BAD_CLASS_LINK)) != 0);
}

int main(void)
{
    int strategy;
    test_check_names();
    test_size_classes();
    EACH_STRATEGY(strategy) {
        test_partial_free(strategy);
        test_growth_and_limits(strategy);
        test_spare_and_trim(strategy);
        test_batch(strategy);
    }
    test_index_pool(0);
    test_index_pool(1);
    test_class_record();
    test_best_fit();
    test_good_fit();
    test_good_fit_last_malloc();
    EACH_STRATEGY(strategy)
        test_random(strategy, 20000);
    EACH_STRATEGY(strategy)
        test_threads(strategy);
    if (failures) {
        fprintf(stderr, "test_alloc: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_alloc: all C allocator tests passed\n");
    return 0;
}
