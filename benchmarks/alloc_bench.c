/* ns per malloc+free pair: membuf's allocator (first-fit, best-fit, good-fit)
 * against glibc (and, when their Debian packages are installed, mimalloc and
 * jemalloc through dlopen), same patterns, same random sequence, one process,
 * one run.
 *
 *   make benchmarks/alloc_bench && ./benchmarks/alloc_bench [scale]
 *   ./benchmarks/alloc_bench --only CONTENDER ROW ITERS
 *
 * Patterns: pair 32 B; pair 64 KiB; random 16..8192 B with a live set of
 * 1,000 blocks (random replacement); the same with 10,000 and 100,000 live
 * blocks, to show how the cost grows with the free-range index.
 * Every block has its first and last byte touched, as a real user would.
 *
 * --only runs one contender (by name) on one row (0-based, in the order of the
 * table) for exactly ITERS timed pairs, after the row's usual set-up: run it
 * twice under valgrind --tool=callgrind with ITERS and 2 * ITERS, and the
 * difference of the instruction counts over ITERS is instructions per pair,
 * set-up and warm-up cancelled out (benchmarks/suite_alloc.py does that).
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

typedef struct contender {
    const char *name;
    void *(*malloc)(void *ctx, size_t n);
    void (*free)(void *ctx, void *p, size_t n);
    void *ctx;
} contender;

static void *sys_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void sys_free(void *ctx, void *p, size_t n) { (void)ctx; (void)n; free(p); }
static void *mb_malloc(void *ctx, size_t n) { return mb_alloc_malloc_ptr(ctx, n); }
static void mb_free(void *ctx, void *p, size_t n) { mb_alloc_free(ctx, p, n); }

typedef struct { void *(*m)(size_t); void (*f)(void *); } dl_pair;
static void *dl_malloc(void *ctx, size_t n) { return ((dl_pair *)ctx)->m(n); }
static void dl_free(void *ctx, void *p, size_t n) { (void)n; ((dl_pair *)ctx)->f(p); }

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);   /* CPU time: the machine is shared */
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static inline uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double pair(const contender *c, size_t size, long iters)
{
    double t = now_ns();
    for (long i = 0; i < iters; i++) {
        volatile char *p = c->malloc(c->ctx, size);
        p[0] = 1;
        p[size - 1] = 2;
        c->free(c->ctx, (void *)p, size);
    }
    return (now_ns() - t) / (double)iters;
}

static double random_mix(const contender *c, size_t live, long iters)
{
    char **ptr = calloc(live, sizeof *ptr);
    size_t *len = calloc(live, sizeof *len);
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < live; i++) {
        len[i] = 16 + rnd(&s) % (8192 - 16 + 1);
        ptr[i] = c->malloc(c->ctx, len[i]);
        ptr[i][0] = 1;
    }
    double t = now_ns();
    for (long i = 0; i < iters; i++) {
        size_t k = rnd(&s) % live;
        c->free(c->ctx, ptr[k], len[k]);
        len[k] = 16 + rnd(&s) % (8192 - 16 + 1);
        volatile char *p = ptr[k] = c->malloc(c->ctx, len[k]);
        p[0] = 1;
        p[len[k] - 1] = 2;
    }
    double ns = (now_ns() - t) / (double)iters;
    for (size_t i = 0; i < live; i++)
        c->free(c->ctx, ptr[i], len[i]);
    free(ptr);
    free(len);
    return ns;
}

static int add_dl(contender *cs, int n, const char *name, const char *lib, const char *m, const char *f)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return n;
    static dl_pair pairs[6];     /* indexed by contender number (up to 5) */
    pairs[n].m = (void *(*)(size_t))dlsym(h, m);
    pairs[n].f = (void (*)(void *))dlsym(h, f);
    if (!pairs[n].m || !pairs[n].f)
        return n;
    cs[n] = (contender){name, dl_malloc, dl_free, &pairs[n]};
    return n + 1;
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    long pairs_n = (long)(5e6 * scale), mix_n = (long)(2e6 * scale);
    if (pairs_n < 1000) pairs_n = 1000;
    if (mix_n < 1000) mix_n = 1000;
    enum { MEMBUF = 3 };    /* the first three contenders are membuf's strategies */
    contender cs[6];
    int n = 0;
    cs[n++] = (contender){"membuf", mb_malloc, mb_free,
                          mb_alloc_new(64 << 10, 4 << 20, 0, MB_FIRST_FIT, 0, 1)};
    cs[n++] = (contender){"membuf-bestfit", mb_malloc, mb_free,
                          mb_alloc_new(64 << 10, 4 << 20, 0, MB_BEST_FIT, 0, 1)};
    cs[n++] = (contender){"membuf-goodfit", mb_malloc, mb_free,
                          mb_alloc_new(64 << 10, 4 << 20, 0, MB_GOOD_FIT, 0, 1)};
    cs[n++] = (contender){"glibc", sys_malloc, sys_free, NULL};
    n = add_dl(cs, n, "mimalloc", "libmimalloc.so.2", "mi_malloc", "mi_free");
    n = add_dl(cs, n, "jemalloc", "libjemalloc.so.2", "malloc", "free");

    struct { const char *label; int kind; size_t arg; long iters; } rows[] = {
        {"pair 32 B", 0, 32, pairs_n},
        {"pair 64 KiB", 0, 64 << 10, pairs_n / 5},
        {"random 16..8192 B, 1k live", 1, 1000, mix_n},
        {"random 16..8192 B, 10k live", 1, 10000, mix_n},
        {"random 16..8192 B, 100k live", 1, 100000, mix_n / 2},
    };
    int nrows = (int)(sizeof rows / sizeof rows[0]);
    if (argc > 4 && strcmp(argv[1], "--only") == 0) {
        int who = -1, r = atoi(argv[3]);
        long iters = atol(argv[4]);
        for (int i = 0; i < n; i++)
            if (strcmp(cs[i].name, argv[2]) == 0)
                who = i;
        if (who < 0 || r < 0 || r >= nrows || iters < 1) {
            fprintf(stderr, "alloc_bench --only: no contender %s or row %s (0..%d)\n", argv[2],
                    argv[3], nrows - 1);
            return 2;
        }
        double ns = rows[r].kind == 0 ? (pair(&cs[who], rows[r].arg, 1000),
                                         pair(&cs[who], rows[r].arg, iters))
                                      : random_mix(&cs[who], rows[r].arg, iters);
        printf("%s, %s: %.1f ns per pair over %ld\n", cs[who].name, rows[r].label, ns, iters);
        for (int i = 0; i < MEMBUF; i++)
            mb_alloc_delete(cs[i].ctx);
        return 0;
    }
    printf("%-30s", "ns per malloc+free pair");
    for (int i = 0; i < n; i++)
        printf("%16s", cs[i].name);
    printf("%16s%16s\n", "membuf/glibc", "goodfit/glibc");
    for (int r = 0; r < nrows; r++) {
        double ns[6];
        for (int i = 0; i < n; i++) {     /* warm-up, then the timed run */
            if (rows[r].kind == 0) {
                pair(&cs[i], rows[r].arg, rows[r].iters / 10);
                ns[i] = pair(&cs[i], rows[r].arg, rows[r].iters);
            } else {
                ns[i] = random_mix(&cs[i], rows[r].arg, rows[r].iters);
            }
        }
        printf("%-30s", rows[r].label);
        for (int i = 0; i < n; i++)
            printf("%16.1f", ns[i]);
        printf("%16.2f%16.2f\n", ns[0] / ns[MEMBUF], ns[2] / ns[MEMBUF]);
        fflush(stdout);
    }
    for (int i = 0; i < MEMBUF; i++)
        mb_alloc_delete(cs[i].ctx);
    return 0;
}
