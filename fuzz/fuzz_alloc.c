/* libFuzzer harness for the native allocator (native/alloc.c), with its own model check.
 *
 * Strategy. The input is a script: a few bytes choose the allocator's options
 * (arena size, max arena size, max_bytes, strategy: first-fit, best-fit or
 * good-fit, seed), then every further
 * group of bytes is one operation: malloc, partial free (prefix, suffix,
 * middle, whole, or a range spanning several live blocks), a malloc whose tail
 * is given back at once in one or more pieces, as a stream's receive chunk is
 * (good-fit's fast path for a suffix of the last malloc), a free the model
 * says must be refused (double, overlapping, foreign, past an arena's end),
 * a batch free with or without one bad item, owns, trim, reset, borrow.
 *
 * The model is the set of live byte ranges, each with the fill byte written
 * into it when it was malloc'd. For every operation it predicts the result:
 *
 *   free [s, s+n) succeeds  <=>  s is in an arena, s+n is not past that arena's
 *                                end, and every byte is live;
 *   refused frees return MB_EFOREIGN (not in one arena) or MB_EDOUBLE (some
 *   byte already free) and change nothing: stats, live bytes and fill
 *   patterns are exactly what they were; a refused batch frees nothing;
 *   malloc(n) with n <= largest_free never fails (no false failures), never
 *   overlaps a live range, and 0 or n over 1 TiB gives NULL;
 *   owns(s, n) is 1 exactly when every byte is live inside one arena.
 *
 * After every operation: mb_alloc_check() == 0 (every index and arena
 * invariant), in_use == the model's live bytes, and periodically (and at the
 * end) every live byte still holds its block's fill byte, so a malloc that
 * hands out live memory or a free that releases too much shows up as a
 * changed pattern or, once an arena is unmapped, as an ASan/SEGV report.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (make fuzz). Without
 * clang, -DMB_FUZZ_STANDALONE gives a main() that runs seeded random scripts
 * (any C99 compiler).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define MAX_LIVE 512
#define MAX_OPS 3000
#define CHECK_EVERY 32

#define FAIL(...)                                                           \
    do {                                                                    \
        fprintf(stderr, "fuzz_alloc: model check failed at op %d: ", op_no); \
        fprintf(stderr, __VA_ARGS__);                                       \
        fprintf(stderr, "\n");                                              \
        abort();                                                            \
    } while (0)

/* ---- input ------------------------------------------------------------------ */

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static unsigned u8(input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static uint32_t u32(input *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)u8(in) << (8 * i);
    return v;
}

/* ---- the model ---------------------------------------------------------------- */

typedef struct block {
    uintptr_t s;
    size_t n;
    uint8_t fill;
} block;

typedef struct model {
    block b[MAX_LIVE];
    int count;
    uint64_t live;          /* bytes in live blocks */
} model;

static int op_no;

static void model_add(model *m, uintptr_t s, size_t n, uint8_t fill)
{
    m->b[m->count++] = (block){s, n, fill};
    m->live += n;
}

/* The block holding byte a, or -1. */
static int model_find(const model *m, uintptr_t a)
{
    for (int i = 0; i < m->count; i++)
        if (a - m->b[i].s < m->b[i].n)
            return i;
    return -1;
}

/* Every byte of [s, s+n) is live. */
static int model_covers(const model *m, uintptr_t s, size_t n)
{
    uintptr_t pos = s, end = s + n;
    while (pos < end) {
        int i = model_find(m, pos);
        if (i < 0)
            return 0;
        pos = m->b[i].s + m->b[i].n;
    }
    return 1;
}

/* Cut [s, s+n) out of the live blocks (it is covered). */
static void model_remove(model *m, uintptr_t s, size_t n)
{
    uintptr_t end = s + n;
    for (int i = 0; i < m->count;) {
        block bl = m->b[i];
        uintptr_t be = bl.s + bl.n;
        if (be <= s || bl.s >= end) {
            i++;
            continue;
        }
        m->b[i] = m->b[--m->count];
        m->live -= bl.n;
        if (bl.s < s)
            model_add(m, bl.s, s - bl.s, bl.fill);
        if (be > end)
            model_add(m, end, be - end, bl.fill);
        /* the added pieces do not overlap [s, end): rescanning them is harmless */
    }
}

static void verify_block(const block *bl)
{
    const uint8_t *p = (const uint8_t *)bl->s;
    for (size_t k = 0; k < bl->n; k++)
        if (p[k] != bl->fill)
            FAIL("live byte %zu of a %zu-byte block at %p is 0x%02x, expected fill 0x%02x",
                 k, bl->n, (void *)bl->s, p[k], bl->fill);
}

/* Every live block, sampled: head, tail and every 512th byte (a full check of a block
 * happens before any part of it is freed). Full checks of up to 128 MiB of live
 * blocks every few ops would make the fuzzer crawl. */
static void verify_all(const model *m)
{
    for (int i = 0; i < m->count; i++) {
        const block *bl = &m->b[i];
        const uint8_t *p = (const uint8_t *)bl->s;
        for (size_t k = 0; k < bl->n; k = (k < 64 || k + 64 >= bl->n) ? k + 1 : k + 512) {
            if (k >= 64 && k + 64 < bl->n && k + 512 >= bl->n - 64)
                k = bl->n - 64;       /* jump straight to the tail */
            if (p[k] != bl->fill)
                FAIL("live byte %zu of a %zu-byte block at %p is 0x%02x, expected fill 0x%02x",
                     k, bl->n, (void *)bl->s, p[k], bl->fill);
        }
    }
}

/* ---- arenas, from the allocator's own table ---------------------------------- */

/* The arena holding a: 1 and its [base, end), or 0. */
static int arena_of(mb_alloc *a, uintptr_t addr, uintptr_t *base, uintptr_t *end)
{
    size_t cap = 64, count;
    uint64_t *t = NULL;
    for (;;) {                          /* one snapshot, sized to the whole table */
        t = realloc(t, 3 * cap * sizeof *t);
        count = mb_alloc_arena_table(a, t, cap);
        if (count <= cap)
            break;
        cap = count;
    }
    int found = 0;
    for (size_t i = 0; i < count && !found; i++) {
        if (addr - t[3 * i + 1] < t[3 * i + 2]) {
            *base = (uintptr_t)t[3 * i + 1];
            *end = (uintptr_t)(t[3 * i + 1] + t[3 * i + 2]);
            found = 1;
        }
    }
    free(t);
    return found;
}

/* What free(s, n) must return: 0, MB_EFOREIGN or MB_EDOUBLE. */
static int expected_free(mb_alloc *a, const model *m, uintptr_t s, size_t n)
{
    uintptr_t base, end;
    if (!arena_of(a, s, &base, &end) || s + n < s || s + n > end)
        return MB_EFOREIGN;
    return model_covers(m, s, n) ? 0 : MB_EDOUBLE;
}

static void check_stats(mb_alloc *a, const model *m, const char *after)
{
    int e = mb_alloc_check(a);
    if (e)
        FAIL("mb_alloc_check() = %d after %s", e, after);
    mb_stats st;
    mb_alloc_stats(a, &st);
    if (st.in_use != m->live)
        FAIL("in_use %llu != model's %llu after %s", (unsigned long long)st.in_use,
             (unsigned long long)m->live, after);
    if (st.free != st.reserved - st.in_use)
        FAIL("free != reserved - in_use after %s", after);
}

/* ---- operations ----------------------------------------------------------------- */

static size_t pick_size(input *in)
{
    unsigned k = u8(in);
    if (k < 170)
        return 1 + u8(in) + 8 * (size_t)(u8(in) & 7);          /* 1 .. ~2 KiB */
    if (k < 235)
        return 1 + (u32(in) & 0xFFFF);                          /* up to 64 KiB */
    if (k < 250)
        return 1 + (u32(in) & 0x3FFFF);                         /* up to 256 KiB: dedicated */
    if (k < 253)
        return 0;
    return (size_t)1 << (40 + (u8(in) & 23));                   /* 1 TiB and up: refused */
}

static void op_malloc(mb_alloc *a, model *m, input *in, uint8_t fill)
{
    size_t n = pick_size(in);
    mb_stats before;
    mb_alloc_stats(a, &before);
    uint8_t *p = mb_alloc_malloc_ptr(a, n);
    if (!p) {
        if (n && n <= before.largest_free)
            FAIL("malloc(%zu) failed with a %llu-byte free range (false failure)", n,
                 (unsigned long long)before.largest_free);
        return;                 /* over max_bytes, over 1 TiB, or n == 0 */
    }
    if (!n || n >= ((size_t)1 << MB_ID_SHIFT))
        FAIL("malloc(%zu) returned memory", n);
    for (int i = 0; i < m->count; i++)
        if ((uintptr_t)p < m->b[i].s + m->b[i].n && m->b[i].s < (uintptr_t)p + n)
            FAIL("malloc(%zu) = %p overlaps a live block", n, (void *)p);
    if (m->count >= MAX_LIVE - 16) {            /* model full: give it straight back */
        if (mb_alloc_free(a, p, n) < 0)
            FAIL("free of a fresh block refused");
        return;
    }
    if (!mb_alloc_owns(a, p, n))
        FAIL("owns() denies a fresh block");
    memset(p, fill, n);
    model_add(m, (uintptr_t)p, n, fill);
}

/* malloc, then give back tails of the new block at once: each cut frees [cut, end) of
 * what is left; a repeat of a tail just freed, or a tail reaching past it, must be
 * refused as a double free, and a tail of a block malloc'd before may be freed too. */
static void op_malloc_tails(mb_alloc *a, model *m, input *in, uint8_t fill)
{
    int before = m->count;
    op_malloc(a, m, in, fill);
    if (m->count == before)
        return;                 /* nothing new (failed, or given straight back) */
    block bl = m->b[m->count - 1];
    uintptr_t end = bl.s + bl.n;
    for (unsigned cuts = 1 + u8(in) % 3; cuts-- && end > bl.s;) {
        size_t keep = (size_t)(u32(in) % (end - bl.s));     /* 0: the whole rest */
        uintptr_t s = bl.s + keep;
        int r = mb_alloc_free(a, (void *)s, end - s);
        if (r < 0)
            FAIL("free of a tail [%zu, %zu) of a fresh %zu-byte block refused with %d", keep,
                 (size_t)(end - bl.s), bl.n, r);
        model_remove(m, s, end - s);
        unsigned again = u8(in) % 4;
        if (again < 2) {        /* the same tail, or a range from inside it past its end */
            uintptr_t t = again ? s + (end - s) / 2 : s;
            int want = expected_free(a, m, t, end - t + again);
            if (want == 0)
                FAIL("a tail just freed counts as live");
            int got = mb_alloc_free(a, (void *)t, end - t + again);
            if (got != want)
                FAIL("second free of a tail returned %d, expected %d", got, want);
        }
        end = s;
    }
}

/* A range inside or around live block i: whole, prefix, suffix, middle, or beyond it. */
static void pick_range(const model *m, input *in, uintptr_t *s, size_t *n)
{
    const block *bl = &m->b[u8(in) % m->count];
    size_t off = bl->n > 1 ? u32(in) % bl->n : 0;
    size_t len = 1 + u32(in) % (bl->n - off);
    unsigned shape = u8(in) % 6;
    if (m->count >= MAX_LIVE - 16)
        shape = 0;              /* a full model only shrinks: splits add blocks */
    switch (shape) {
    case 0: *s = bl->s; *n = bl->n; return;                          /* whole */
    case 1: *s = bl->s; *n = len; return;                            /* prefix */
    case 2: *s = bl->s + off; *n = bl->n - off; return;              /* suffix */
    case 3: *s = bl->s + off; *n = len; return;                      /* middle */
    case 4: *s = bl->s + off; *n = bl->n - off + 1 + u8(in); return; /* runs past the block */
    default: *s = bl->s - 1 - u8(in) % 64; *n = len + 64; return;    /* starts before it */
    }
}

static void op_free(mb_alloc *a, model *m, input *in)
{
    if (!m->count)
        return;
    uintptr_t s;
    size_t n;
    pick_range(m, in, &s, &n);
    int want = expected_free(a, m, s, n);
    if (want == 0) {                       /* check the bytes before they go */
        for (int i = 0; i < m->count; i++) {
            const block *bl = &m->b[i];
            if (bl->s < s + n && s < bl->s + bl->n)
                verify_block(bl);
        }
    }
    mb_stats before, after;
    mb_alloc_stats(a, &before);
    int r = mb_alloc_free(a, (void *)s, n);
    if (want == 0) {
        if (r < 0)
            FAIL("free(%p, %zu) of live bytes refused with %d", (void *)s, n, r);
        model_remove(m, s, n);
        return;
    }
    if (r != want)
        FAIL("free(%p, %zu) returned %d, expected %d", (void *)s, n, r, want);
    mb_alloc_stats(a, &after);
    if (memcmp(&before, &after, sizeof before))
        FAIL("a refused free changed the stats");
}

static void op_double_free(mb_alloc *a, model *m, input *in)
{
    if (!m->count)
        return;
    uintptr_t s;
    size_t n;
    const block *bl = &m->b[u8(in) % m->count];
    s = bl->s;
    n = bl->n;
    if (mb_alloc_free(a, (void *)s, n) < 0)
        FAIL("free of a whole live block refused");
    model_remove(m, s, n);
    /* the same bytes again, or any part of them, must be refused unless reused since */
    size_t off = u8(in) % n;
    int r = mb_alloc_free(a, (void *)(s + off), n - off);
    int want = expected_free(a, m, s + off, n - off);
    if (want == 0)
        FAIL("bytes just freed are live again without a malloc");
    if (r != want)
        FAIL("double free returned %d, expected %d", r, want);
}

static void op_foreign(mb_alloc *a, const model *m, input *in)
{
    uint8_t stack[64];
    static uint8_t global[64];
    const uint8_t *p = (u8(in) & 1) ? stack : global;
    int r = mb_alloc_free(a, p, 1 + u8(in) % 64);
    if (r != MB_EFOREIGN)
        FAIL("free of memory the allocator never had returned %d", r);
    if (mb_alloc_owns(a, p, 8))
        FAIL("owns() claims foreign memory");
    (void)m;
}

static void op_batch(mb_alloc *a, model *m, input *in)
{
    if (!m->count)
        return;
    uint64_t pairs[16];
    size_t count = 1 + u8(in) % 8;
    model trial = *m;           /* free the items one by one in a copy of the model */
    int ok = 1;
    for (size_t i = 0; i < count; i++) {
        uintptr_t s;
        size_t n;
        if (u8(in) % 8 == 0) {
            n = 0;              /* zero-length items are skipped */
            s = 12345;
        } else {
            pick_range(m, in, &s, &n);
        }
        pairs[2 * i] = s;
        pairs[2 * i + 1] = n;
        if (n && ok) {
            if (expected_free(a, &trial, s, n) == 0)
                model_remove(&trial, s, n);
            else
                ok = 0;
        }
    }
    mb_stats before, after;
    mb_alloc_stats(a, &before);
    int r = mb_alloc_free_batch(a, pairs, count);
    if (ok) {
        if (r < 0)
            FAIL("a legal batch of %zu frees was refused with %d", count, r);
        *m = trial;
        return;
    }
    if (r >= 0)
        FAIL("a batch with an illegal item was accepted");
    mb_alloc_stats(a, &after);
    if (memcmp(&before, &after, sizeof before))
        FAIL("a refused batch changed the stats (not all or nothing)");
    mb_free_report rep;
    mb_alloc_last_free_report(a, &rep);
    if (rep.batch_index < 0 || (size_t)rep.batch_index >= count)
        FAIL("a refused batch reports item %lld of %zu", (long long)rep.batch_index, count);
}

static void op_owns(mb_alloc *a, const model *m, input *in)
{
    if (!m->count)
        return;
    uintptr_t s;
    size_t n;
    pick_range(m, in, &s, &n);
    int want = expected_free(a, m, s, n) == 0;
    if (mb_alloc_owns(a, (void *)s, n) != want)
        FAIL("owns(%p, %zu) != %d", (void *)s, n, want);
}

static void op_borrow(mb_alloc *a, input *in)
{
    size_t cap = 0, n = 1 + u8(in) * 16;
    uint8_t *p = mb_alloc_borrow(a, n, &cap);
    if (!p || cap < n)
        FAIL("borrow(%zu) gave %p with capacity %zu", n, (void *)p, cap);
    memset(p, 0xEE, n);         /* scratch is not allocated: live fills must survive */
}

static void op_reset(mb_alloc *a, model *m)
{
    block old = m->count ? m->b[0] : (block){0, 0, 0};
    mb_alloc_reset(a);
    m->count = 0;
    m->live = 0;
    if (old.n && mb_alloc_free(a, (void *)old.s, old.n) != MB_EFOREIGN)
        FAIL("free after reset was not refused as foreign");
}

/* ---- the entry point ---------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    static model m;
    memset(&m, 0, sizeof m);
    size_t arena = (size_t)4096 << (u8(&in) % 5);                    /* 4 KiB .. 64 KiB */
    size_t max_arena = arena << (u8(&in) % 4);
    unsigned cap = u8(&in);
    size_t max_bytes = cap < 128 ? 0 : (size_t)(cap - 127) * 16384;  /* none, or 16 KiB .. 2 MiB */
    static const int strategies[3] = {MB_FIRST_FIT, MB_BEST_FIT, MB_GOOD_FIT};
    int strategy = strategies[u8(&in) % 3];
    mb_alloc *a = mb_alloc_new(arena, max_arena, max_bytes, strategy, 0, u32(&in));
    if (!a)
        FAIL("mb_alloc_new refused valid options");
    uint8_t fill = 1;
    for (op_no = 0; op_no < MAX_OPS && in.left; op_no++) {
        unsigned op = u8(&in) % 16;
        const char *name = "?";
        if (op < 6) {
            name = op < 5 ? "malloc" : "malloc and free tails";
            if (op < 5)
                op_malloc(a, &m, &in, fill);
            else
                op_malloc_tails(a, &m, &in, fill);
            fill = (uint8_t)(fill * 5 + 3) | 1;   /* never 0: freshly mapped pages are zero */
        } else if (op < 10) {
            name = "free";
            op_free(a, &m, &in);
        } else if (op == 10) {
            name = "double free";
            op_double_free(a, &m, &in);
        } else if (op == 11) {
            name = "batch free";
            op_batch(a, &m, &in);
        } else if (op == 12) {
            name = "owns";
            op_owns(a, &m, &in);
            op_foreign(a, &m, &in);
        } else if (op == 13) {
            name = "trim";
            if (mb_alloc_trim(a) < 0)
                FAIL("trim failed");
        } else if (op == 14) {
            name = "borrow";
            op_borrow(a, &in);
        } else {
            name = u8(&in) % 8 ? "owns" : "reset";
            if (name[0] == 'r')
                op_reset(a, &m);
            else
                op_owns(a, &m, &in);
        }
        check_stats(a, &m, name);
        if (op_no % CHECK_EVERY == 0)
            verify_all(&m);
    }
    verify_all(&m);
    /* give everything back: the allocator must end empty */
    while (m.count) {
        block bl = m.b[m.count - 1];
        if (mb_alloc_free(a, (void *)bl.s, bl.n) < 0)
            FAIL("final free of a live block refused");
        model_remove(&m, bl.s, bl.n);
    }
    check_stats(a, &m, "final frees");
    mb_stats st;
    mb_alloc_stats(a, &st);
    if (st.arenas > 1)
        FAIL("%llu arenas kept after everything was freed (at most one spare)",
             (unsigned long long)st.arenas);
    mb_alloc_delete(a);
    return 0;
}

#ifdef MB_FUZZ_STANDALONE
/* Without libFuzzer: replay files given on the command line, or run seeded random scripts. */
int main(int argc, char **argv)
{
    if (argc > 1 && argv[1][0] != '-') {
        for (int i = 1; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f)
                return 2;
            static uint8_t buf[1 << 16];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
        }
        return 0;
    }
    long runs = argc > 1 ? strtol(argv[1] + 1, NULL, 10) : 2000;
    uint64_t x = 0x9E3779B97F4A7C15u;
    static uint8_t buf[8192];
    for (long r = 0; r < runs; r++) {
        size_t n = 16 + (size_t)(r % 8000);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("fuzz_alloc: %ld random scripts, no failure\n", runs);
    return 0;
}
#endif
