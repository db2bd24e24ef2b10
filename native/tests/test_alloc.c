/* C tests of the allocator and its free-range index, run under ASan + UBSan by `make test`.
 *
 * Three parts: scripted cases for every rule (partial free, refusals that change
 * nothing, growth, limits, trim, reset, batches, best-fit); a randomized run
 * against a model of live ranges with fill patterns and a full invariant check
 * after every step; and four threads sharing one allocator.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "check.h"

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

static void test_partial_free(void)
{
    mb_alloc *a = mb_alloc_new(4096, 1 << 20, 0, MB_FIRST_FIT, 0, 1);
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
    /* first-fit reuses the lowest hole that fits */
    uint8_t *q = xmalloc(a, 100);
    CHECK(q == p);
    uint8_t *r = xmalloc(a, 100);
    CHECK(r == p + 400);
    CHECK(mb_alloc_free(a, q, 100) == 0);
    CHECK(mb_alloc_free(a, r, 100) == 0);
    CHECK(mb_alloc_free(a, p + 100, 300) == 0);
    CHECK(mb_alloc_free(a, p + 500, 400) == 0);
    CHECK(stats(a).in_use == 0);
    CHECK(stats(a).largest_free == stats(a).reserved);    /* everything merged back */
    SOUND(a);
    mb_alloc_delete(a);
}

static void test_growth_and_limits(void)
{
    mb_alloc *a = mb_alloc_new(4096, 16384, 65536, MB_FIRST_FIT, 0, 2);
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

static void test_spare_and_trim(void)
{
    mb_alloc *a = mb_alloc_new(4096, 1 << 20, 0, MB_FIRST_FIT, 0, 3);
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

static void test_batch(void)
{
    mb_alloc *a = mb_alloc_new(65536, 1 << 20, 0, MB_FIRST_FIT, 0, 4);
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

static void test_threads(void)
{
    shared = mb_alloc_new(4096, 1 << 20, 0, MB_FIRST_FIT, 0, 7);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(stats(shared).in_use == 0);
    SOUND(shared);
    mb_alloc_delete(shared);
}

/* Every invariant code has its own sentence; codes outside the list say so. */
static void test_check_names(void)
{
    CHECK(strcmp(mb_check_name(MB_SOUND), "sound") == 0);
    CHECK(strstr(mb_check_name(MB_BAD_UNMERGED), "merge") != NULL);
    CHECK(strstr(mb_check_name(MB_BAD_PARENT), "parent") != NULL);
    CHECK(strcmp(mb_check_name(12345), "unknown invariant") == 0);
    CHECK(strcmp(mb_check_name(MB_BAD_NIL), mb_check_name(MB_BAD_COUNT)) != 0);
}

int main(void)
{
    test_check_names();
    test_partial_free();
    test_growth_and_limits();
    test_spare_and_trim();
    test_batch();
    test_best_fit();
    test_random(MB_FIRST_FIT, 20000);
    test_random(MB_BEST_FIT, 20000);
    test_threads();
    if (failures) {
        fprintf(stderr, "test_alloc: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_alloc: all C allocator tests passed\n");
    return 0;
}
