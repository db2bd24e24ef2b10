/* Free-range index: a treap of free byte ranges keyed by start address.
 * See index.c for the strategy. Not thread-safe: the allocator locks. */
#ifndef MEMBUF_INDEX_H
#define MEMBUF_INDEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct mb_node {
    uintptr_t start;    /* first free byte */
    size_t len;         /* free bytes, > 0 */
    size_t maxlen;      /* largest len in this node's address subtree */
    uint32_t l, r, p;   /* address-tree children and parent (0 = none) */
    uint32_t sl, sr;    /* size-tree children, used when by_size */
    uint32_t prio;      /* heap priority, random, shared by both trees */
} mb_node;

typedef struct mb_index {
    mb_node *n;         /* node pool; n[0] is the nil node (maxlen 0) */
    uint32_t cap;       /* nodes in the pool */
    uint32_t spare;     /* head of the list of unused nodes, linked by .l */
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
/* Remove the range that starts exactly at start (it must exist). */
void mb_index_remove(mb_index *ix, uintptr_t start);
/* Remove node x (a node number from mb_index_neighbours). */
void mb_index_remove_node(mb_index *ix, uint32_t x);
/* Give node x a new start and length that keep the address order. */
void mb_index_set(mb_index *ix, uint32_t x, uintptr_t new_start, size_t new_len);
/* Give the range starting at old_start a new start and length that keep the order. */
void mb_index_resize(mb_index *ix, uintptr_t old_start, uintptr_t new_start, size_t new_len);
/* The ranges around key: *pred has the greatest start <= key, *succ the least start > key
 * (node numbers, 0 when there is none). */
void mb_index_neighbours(const mb_index *ix, uintptr_t key, uint32_t *pred, uint32_t *succ);
/* Carve n bytes from the front of the lowest-addressed range that holds them (first-fit)
 * or of the smallest such range, ties by address (best-fit). Returns the start, 0 if none. */
uintptr_t mb_index_take_first_fit(mb_index *ix, size_t n);
uintptr_t mb_index_take_best_fit(mb_index *ix, size_t n);

static inline size_t mb_index_largest(const mb_index *ix) { return ix->n[ix->root].maxlen; }

/* Walk both trees and check every invariant; 0 when sound, else a code naming the broken one. */
int mb_index_check(const mb_index *ix);

#endif
