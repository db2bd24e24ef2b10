/* Free-range index: a treap of free byte ranges keyed by start address.
 * See index.c for the strategy. Not thread-safe: the allocator locks. */
#ifndef MEMBUF_INDEX_H
#define MEMBUF_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "check.h"

typedef struct mb_node {
    uintptr_t start;    /* first free byte */
    uint32_t c[2];      /* address-tree children: lower, higher addresses (0 = none); beside
                           start, so that a descent reads 16 bytes of one cache line a level */
    size_t len;         /* free bytes, > 0 */
    size_t maxlen;      /* largest len in this node's address subtree */
    uint32_t p;         /* address-tree parent (0 = none) */
    uint32_t sl, sr;    /* size-tree children when by_size (best-fit); otherwise free for
                           the size-class lists of good-fit (sizeclass.c: next, prev) */
    uint32_t prio;      /* heap priority, random, shared by both trees */
    uint32_t list;      /* good-fit: the size-class list the node is on (sizeclass.h) */
    uint32_t spare_[3]; /* to 64 bytes: a node number becomes an address by one shift */
} mb_node;

/* C99 static assertion: the node is 64 bytes (see spare_). */
typedef char mb_node_is_64_bytes[sizeof(mb_node) == 64 ? 1 : -1];

typedef struct mb_index {
    mb_node *n;         /* node pool; n[0] is the nil node (maxlen 0); 64-byte aligned */
    void *block;        /* the allocation n lies in (what free takes) */
    uint32_t cap;       /* nodes in the pool */
    uint32_t spare;     /* head of the list of unused nodes, linked by c[0] */
    uint32_t root;      /* address tree */
    uint32_t sroot;     /* size tree: ordered by (len, start) */
    uint32_t count;     /* free ranges */
    uint32_t rng;       /* xorshift32 state for priorities */
    int by_size;        /* keep the size tree (best-fit) */
} mb_index;

int mb_index_init(mb_index *ix, int by_size, uint32_t seed);
void mb_index_destroy(mb_index *ix);
void mb_index_clear(mb_index *ix);

/* Insert a new free range; it must not overlap any range. 0, or -1 if out of memory. */
int mb_index_insert(mb_index *ix, uintptr_t start, size_t len);
/* The same, returning the new node's number (0 if out of memory). */
uint32_t mb_index_insert_node(mb_index *ix, uintptr_t start, size_t len);
/* The same for a range whose neighbours are known: pred and succ exactly as
 * mb_index_neighbours(ix, start) just gave them, no change since. Saves the descent. */
uint32_t mb_index_insert_between(mb_index *ix, uintptr_t start, size_t len, uint32_t pred,
                                 uint32_t succ);
/* The node of the range that starts exactly at start, or 0. */
uint32_t mb_index_find(const mb_index *ix, uintptr_t start);
/* Remove the range that starts exactly at start (it must exist). */
void mb_index_remove(mb_index *ix, uintptr_t start);
/* Remove node x (a node number from mb_index_neighbours). */
void mb_index_remove_node(mb_index *ix, uint32_t x);
/* Give node x a new start and length that keep the address order. */
void mb_index_set(mb_index *ix, uint32_t x, uintptr_t new_start, size_t new_len);
/* Give the range starting at old_start a new start and length that keep the order. */
void mb_index_resize(mb_index *ix, uintptr_t old_start, uintptr_t new_start, size_t new_len);
/* Carve n bytes from the front of the lowest-addressed range that holds them (first-fit)
 * or of the smallest such range, ties by address (best-fit). Returns the start, 0 if none. */
uintptr_t mb_index_take_first_fit(mb_index *ix, size_t n);
/* The node of the lowest-addressed range with len >= n, untouched; 0 if none. */
uint32_t mb_index_first_fit(const mb_index *ix, size_t n);
uintptr_t mb_index_take_best_fit(mb_index *ix, size_t n);

static inline size_t mb_index_largest(const mb_index *ix) { return ix->n[ix->root].maxlen; }

/* Walk both trees and check every invariant; 0 when sound, else a code naming the broken one. */
int mb_index_check(const mb_index *ix);

/* ---- hot operations, inline: every malloc and free runs some ------------------ */

static inline size_t mb_ix_max3(size_t a, size_t b, size_t c)
{
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Re-derive node t's maxlen from its length and its children's. */
static inline void mb_ix_update(mb_index *ix, uint32_t t)
{
    mb_node *x = &ix->n[t];
    x->maxlen = mb_ix_max3(x->len, ix->n[x->c[0]].maxlen, ix->n[x->c[1]].maxlen);
}

/* A range of m bytes is now at x or below it: raise maxlen from x upwards until an
 * ancestor covers m already (one compare a level, no children read). */
static inline void mb_ix_grow_up(mb_index *ix, uint32_t x, size_t m)
{
    for (; x && ix->n[x].maxlen < m; x = ix->n[x].p)
        ix->n[x].maxlen = m;
}

/* A range of old bytes at x or below it shrank or left: re-derive maxlen upwards while
 * an ancestor's maxlen was that length and no longer is. The walk needs no test for
 * the top: the nil node above the root has maxlen 0, never a range's length. */
static inline void mb_ix_shrink_up(mb_index *ix, uint32_t x, size_t old)
{
    MB_ASSERT(old > 0 && ix->n[0].maxlen == 0);
    for (; ix->n[x].maxlen == old; x = ix->n[x].p) {
        mb_ix_update(ix, x);
        if (ix->n[x].maxlen == old)
            break;              /* another range of old bytes below: ancestors unchanged */
    }
}

/* The ranges around key: *pred has the greatest start <= key, *succ the least start > key
 * (node numbers, 0 when there is none). Branch-free: which way a descent turns is a
 * coin toss, and a mispredicted branch a level costs more than indexing the children
 * by the comparison. */
static inline void mb_index_neighbours(const mb_index *ix, uintptr_t key, uint32_t *pred,
                                       uint32_t *succ)
{
    const mb_node *n = ix->n;
    uint32_t last[2] = {0, 0}, t = ix->root;    /* last node right of key / left of it */
    while (t) {
        unsigned right = n[t].start <= key;
        last[right] = t;
        t = n[t].c[right];
    }
    *pred = last[1];
    *succ = last[0];
}

/* Node x's range becomes [start, start+len), shorter (a malloc carved its front) or
 * longer (a free merged into it), in the same place of the address order. Only
 * without the size tree (by_size == 0): best-fit goes through mb_index_set. */
static inline void mb_index_shrink(mb_index *ix, uint32_t x, uintptr_t start, size_t len)
{
    size_t old = ix->n[x].len;
    ix->n[x].start = start;
    ix->n[x].len = len;
    mb_ix_shrink_up(ix, x, old);
}

static inline void mb_index_grow(mb_index *ix, uint32_t x, uintptr_t start, size_t len)
{
    ix->n[x].start = start;
    ix->n[x].len = len;
    mb_ix_grow_up(ix, x, len);
}

#endif
