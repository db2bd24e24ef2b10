/* Size classes of free ranges: segregated free lists with a two-level bitmap, for
 * the "good-fit" strategy. See sizeclass.c for the strategy and the invariants.
 *
 * The lists hold the free-range index's own nodes (index.h): a node's sl and sr,
 * the size-tree links that only best-fit uses, are its list links here. Every
 * function takes the index whose nodes it links. The operations malloc and free
 * run are inline here (one call less each on the hot path); the check is in
 * sizeclass.c. Not thread-safe: the allocator locks. */
#ifndef MEMBUF_SIZECLASS_H
#define MEMBUF_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "index.h"

/* Second level: 2^MB_SC_SL_BITS linear classes per power of two. First level: one
 * per power of two from 2^MB_SC_SL_BITS up, level 0 holding the lengths below it
 * one class each. Lengths up to 2^MB_SC_MAX_BITS - 1 (above any arena) have a class. */
#define MB_SC_SL_BITS 5
#define MB_SC_SL_COUNT (1u << MB_SC_SL_BITS)
#define MB_SC_MAX_BITS 41
#define MB_SC_FL_COUNT (MB_SC_MAX_BITS - MB_SC_SL_BITS + 1)
#define MB_SC_COUNT (MB_SC_FL_COUNT * MB_SC_SL_COUNT)

typedef struct mb_sizeclass {
    uint64_t fl_map;                    /* bit f set iff sl_map[f] != 0 */
    uint32_t sl_map[MB_SC_FL_COUNT];    /* bit s of sl_map[f] set iff head[f * SL_COUNT + s] */
    uint32_t head[MB_SC_COUNT];         /* first node of each class's list, 0 = empty */
} mb_sizeclass;

/* The class step of len, as a shift: 0 below 2 * SL_COUNT (those lengths are a class
 * each), else the power of two of len minus SL_BITS. */
static inline unsigned mb_sc_step(size_t len)
{
    return 63u - MB_SC_SL_BITS - (unsigned)__builtin_clzll((unsigned long long)(len | MB_SC_SL_COUNT));
}

/* The class of a free range of len bytes: classes are numbered in increasing order of
 * length (a larger length never has a smaller class). With step s, the top SL_BITS + 1
 * bits of len (between SL_COUNT and 2 * SL_COUNT - 1) plus SL_COUNT * s: first level
 * s + 1, second level the SL_BITS bits below the leading one. No branch. */
static inline unsigned mb_sc_class(size_t len)
{
    unsigned s = mb_sc_step(len);
    return (unsigned)(len >> s) + (s << MB_SC_SL_BITS);
}

/* The smallest length of class c (the inverse of mb_sc_class on class boundaries). */
static inline size_t mb_sc_class_min(unsigned c)
{
    unsigned s = c >= 2 * MB_SC_SL_COUNT ? (c >> MB_SC_SL_BITS) - 1 : 0;
    return (size_t)(c - (s << MB_SC_SL_BITS)) << s;
}

void mb_sc_clear(mb_sizeclass *sc);

/* Check the invariants of the lists and bitmaps against the index; 0 when sound, else
 * the code (check.h) of the first broken one. */
int mb_sc_check(const mb_sizeclass *sc, const mb_index *ix);

/* ---- the hot operations ----------------------------------------------------- */

/* Put node x (on no list) at the head of list c; the node records c. */
static inline void mb_sc_push(mb_sizeclass *sc, mb_index *ix, uint32_t x, unsigned c)
{
    MB_ASSERT(c < MB_SC_COUNT);
    mb_node *n = ix->n;
    uint32_t h = sc->head[c];
    n[x].sl = h;
    n[x].sr = 0;
    n[x].list = c;
    n[h].sr = x;        /* h == 0 writes the nil node's sr: scratch, never read */
    sc->head[c] = x;
    sc->sl_map[c >> MB_SC_SL_BITS] |= 1u << (c & (MB_SC_SL_COUNT - 1));
    sc->fl_map |= UINT64_C(1) << (c >> MB_SC_SL_BITS);
}

/* Take node x off its list (the one it records). */
static inline void mb_sc_unlink(mb_sizeclass *sc, mb_index *ix, uint32_t x)
{
    mb_node *n = ix->n;
    uint32_t nx = n[x].sl, pv = n[x].sr;
    n[nx].sr = pv;      /* nx == 0: the nil node again */
    if (pv) {
        n[pv].sl = nx;
        return;
    }
    unsigned c = n[x].list;
    MB_ASSERT(sc->head[c] == x);
    sc->head[c] = nx;
    if (!nx) {
        unsigned f = c >> MB_SC_SL_BITS;
        sc->sl_map[f] &= ~(1u << (c & (MB_SC_SL_COUNT - 1)));
        if (!sc->sl_map[f])
            sc->fl_map &= ~(UINT64_C(1) << f);
    }
}

/* Put a new free range x on the list of its class. */
static inline void mb_sc_link(mb_sizeclass *sc, mb_index *ix, uint32_t x)
{
    mb_sc_push(sc, ix, x, mb_sc_class(ix->n[x].len));
}

/* 1 iff lengths a and b have one class, by one bit scan: they agree above the class
 * step of the larger (every length below 64 is a class of its own, step 1). */
static inline int mb_sc_same_class(size_t a, size_t b)
{
    unsigned step = mb_sc_step(a > b ? a : b);
    return (a >> step) == (b >> step);
}

/* Node x's length changed. It stays on its list while that list is its class's or the
 * one just below, so a range that grows back and forth across one class boundary (a
 * carve from a fresh power-of-two arena, given back at once) is not moved every time;
 * otherwise it moves to its class's list. Every range on list c still holds at least
 * the smallest length of class c. One class computation: the node records its list.
 * 1 when it moved. */
static inline int mb_sc_moved(mb_sizeclass *sc, mb_index *ix, uint32_t x)
{
    unsigned now = mb_sc_class(ix->n[x].len), on = ix->n[x].list;
    if (now - on <= 1)                  /* unsigned: now is on or on + 1 */
        return 0;
    mb_sc_unlink(sc, ix, x);
    mb_sc_push(sc, ix, x, now);
    return 1;
}

/* A node whose length is >= n, from the lowest list all of whose lengths are >= n
 * (the request rounded up to a class boundary, as TLSF does): O(1), two bit scans.
 * 0 when those lists are empty; a range of n or more may still sit on a lower list
 * (the caller asks the index then, so that no request fails while one range fits). */
static inline uint32_t mb_sc_find(const mb_sizeclass *sc, size_t n)
{
    /* n's class if n is its first length, else the next one up: all of whose lengths
     * hold n (n - 1 has n's class exactly when n is not its class's first length) */
    unsigned c = mb_sc_class(n - 1) + 1;
    if (c >= MB_SC_COUNT)
        return 0;
    unsigned f = c >> MB_SC_SL_BITS;
    uint32_t here = sc->sl_map[f] & (~UINT32_C(0) << (c & (MB_SC_SL_COUNT - 1)));
    if (!here) {
        uint64_t above = sc->fl_map & (~UINT64_C(0) << (f + 1));   /* f + 1 < 64 */
        if (!above)
            return 0;
        f = (unsigned)__builtin_ctzll(above);
        here = sc->sl_map[f];
        MB_ASSERT(here != 0);           /* fl_map bit set => some list of level f non-empty */
    }
    return sc->head[(f << MB_SC_SL_BITS) | (unsigned)__builtin_ctz(here)];
}

#endif
