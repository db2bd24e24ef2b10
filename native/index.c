/* Free-range index.
 *
 * Strategy. The allocator records only free ranges. They live in a treap keyed
 * by start address; each node also knows the largest free length in its
 * subtree (maxlen), so "lowest address with len >= n" is one descent that only
 * enters subtrees whose maxlen says a fit is there: no false failures, and
 * O(log n) expected depth whatever the free pattern, because priorities are
 * random (an adversary cannot unbalance it through addresses).
 *
 *                 [start,len | maxlen]
 *                 /                  \
 *     lower addresses             higher addresses
 *
 * Best-fit also threads the same nodes through a second treap ordered by
 * (len, start), sharing the priority; it is kept only when by_size is set, so
 * first-fit pays nothing for it.
 *
 * Address-tree nodes carry parent links so that updates walk up from the
 * changed node and stop early (see mb_ix_grow_up, mb_ix_shrink_up). The
 * operations every malloc and free runs (the neighbour search, a range growing
 * or shrinking in place) are inline in index.h; this file does the rest.
 *
 * Nodes come from one pool addressed by 32-bit numbers (node 0 is nil, with
 * maxlen 0), so growing the pool with realloc never leaves a dangling link. A
 * node is 64 bytes and the pool starts on a 64-byte boundary (pool_grow): a node
 * number becomes an address by one shift, and a node is one cache line.
 * The pool only grows before a tree operation, never during one.
 *
 * Invariants (mb_index_check): both trees are search trees and heaps on prio;
 * maxlen is exact; ranges do not overlap; both trees hold the same count nodes.
 * Merging neighbours is the allocator's business (it knows arena edges).
 */
#include "index.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

#define N(i) (ix->n[(i)])
#define L(i) (ix->n[(i)].c[0])   /* left child: lower addresses */
#define R(i) (ix->n[(i)].c[1])   /* right child: higher addresses */

static uint32_t next_prio(mb_index *ix)
{
    uint32_t x = ix->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ix->rng = x;
    return x;
}

/* The pool of cap nodes in block, whose first old nodes are in use (the rest is zeroed
 * here), each node on a cache line of its own: block is realloc'd with 63 bytes of room
 * and n is the first 64-byte boundary in it. realloc may move the block to another
 * offset from a boundary; the nodes then move to the new boundary. NULL when out of
 * memory, the pool as it was. */
static mb_node *pool_grow(mb_index *ix, uint32_t cap, uint32_t old)
{
    size_t used = (size_t)old * sizeof(mb_node);
    size_t was = ix->block ? (size_t)((unsigned char *)ix->n - (unsigned char *)ix->block) : 0;
    unsigned char *raw = realloc(ix->block, (size_t)cap * sizeof(mb_node) + 63);
    if (!raw)
        return NULL;
    size_t at = (64 - (uintptr_t)raw % 64) % 64;
    if (at != was && used)
        memmove(raw + at, raw + was, used);
    mb_node *n = (mb_node *)(raw + at);
    memset(n + old, 0, (size_t)(cap - old) * sizeof(mb_node));
    ix->block = raw;
    ix->n = n;
    return n;
}

int mb_index_init(mb_index *ix, int by_size, uint32_t seed)
{
    memset(ix, 0, sizeof *ix);
    ix->cap = 64;
    if (!pool_grow(ix, ix->cap, 0))
        return -1;
    for (uint32_t i = 1; i + 1 < ix->cap; i++)
        ix->n[i].c[0] = i + 1;
    ix->spare = 1;
    ix->by_size = by_size;
    ix->rng = seed ? seed : 0x9e3779b9u;
    return 0;
}

void mb_index_destroy(mb_index *ix)
{
    free(ix->block);
    ix->n = NULL;
    ix->block = NULL;
}

void mb_index_clear(mb_index *ix)
{
    memset(ix->n, 0, (size_t)ix->cap * sizeof(mb_node));
    for (uint32_t i = 1; i + 1 < ix->cap; i++)
        ix->n[i].c[0] = i + 1;
    ix->spare = 1;
    ix->root = ix->sroot = ix->count = 0;
}

static uint32_t node_new(mb_index *ix)
{
    if (!ix->spare) {
        uint32_t old = ix->cap;
        if (old > UINT32_MAX / 2)
            return 0;
        mb_node *grown = pool_grow(ix, old * 2, old);
        if (!grown)
            return 0;
        for (uint32_t i = old; i + 1 < old * 2; i++)
            grown[i].c[0] = i + 1;
        ix->cap = old * 2;
        ix->spare = old;
    }
    uint32_t t = ix->spare;
    ix->spare = L(t);
    memset(&N(t), 0, sizeof(mb_node));
    N(t).prio = next_prio(ix);
    return t;
}

static void node_release(mb_index *ix, uint32_t t)
{
    memset(&N(t), 0, sizeof(mb_node));
    L(t) = ix->spare;
    ix->spare = t;
}

/* ---- address tree ------------------------------------------------------
 * Iterative, with parent links: a change of len at one node is pushed up by
 * mb_ix_grow_up or mb_ix_shrink_up (index.h), which stop at the first ancestor
 * whose maxlen does not change, so the common case touches two or three nodes
 * instead of a whole path; a longer range costs one compare a level. */

static inline void set_child(mb_index *ix, uint32_t parent, uint32_t old, uint32_t x)
{
    if (!parent)
        ix->root = x;
    else if (L(parent) == old)
        L(parent) = x;
    else
        R(parent) = x;
    if (x)
        N(x).p = parent;
}

/* Lift x above its parent (one rotation), keeping maxlen exact for both. */
static void rotate_up(mb_index *ix, uint32_t x)
{
    uint32_t p = N(x).p, g = N(p).p;
    if (L(p) == x) {
        L(p) = R(x);
        if (R(x))
            N(R(x)).p = p;
        R(x) = p;
    } else {
        R(p) = L(x);
        if (L(x))
            N(L(x)).p = p;
        L(x) = p;
    }
    N(p).p = x;
    set_child(ix, g, p, x);
    mb_ix_update(ix, p);
    mb_ix_update(ix, x);
}

/* Lift a new node x above its parent while it rises: rotate_up, except that x's own
 * maxlen is left for the caller to derive once it stops (nothing reads it meanwhile:
 * each rotation re-derives only the old parent, from subtrees that do not hold x). */
static void rotate_up_rising(mb_index *ix, uint32_t x)
{
    uint32_t p = N(x).p, g = N(p).p;
    unsigned side = R(p) == x;          /* x is p's child on this side */
    uint32_t inner = N(x).c[!side];     /* moves from x to p */
    N(p).c[side] = inner;
    if (inner)
        N(inner).p = p;
    N(x).c[!side] = p;
    N(p).p = x;
    set_child(ix, g, p, x);
    mb_ix_update(ix, p);
}

/* Hang x as a leaf below parent (0: x is the whole tree), then lift it to its heap place. */
static void a_attach(mb_index *ix, uint32_t x, uint32_t parent)
{
    N(x).p = parent;
    if (!parent)
        ix->root = x;
    else if (N(x).start < N(parent).start)
        L(parent) = x;
    else
        R(parent) = x;
    if (parent && N(parent).prio < N(x).prio) {
        do
            rotate_up_rising(ix, x);
        while (N(x).p && N(N(x).p).prio < N(x).prio);
        mb_ix_update(ix, x);
    }
    mb_ix_grow_up(ix, N(x).p, N(x).len);   /* maxlen is exact at and below x */
}

static void a_insert(mb_index *ix, uint32_t x)
{
    uint32_t parent = 0, t = ix->root;
    while (t) {
        parent = t;
        t = N(x).start < N(t).start ? L(t) : R(t);
    }
    a_attach(ix, x, parent);
}

/* Unlink x: rotate it down below its higher-priority child until it is a leaf. */
static void a_unlink(mb_index *ix, uint32_t x)
{
    while (L(x) && R(x))
        rotate_up(ix, N(L(x)).prio > N(R(x)).prio ? L(x) : R(x));
    uint32_t child = L(x) ? L(x) : R(x), parent = N(x).p;
    set_child(ix, parent, x, child);
    mb_ix_shrink_up(ix, parent, N(x).len);
}

static uint32_t a_find(const mb_index *ix, uintptr_t key)
{
    uint32_t t = ix->root;
    while (t && N(t).start != key)
        t = key < N(t).start ? L(t) : R(t);
    return t;
}

/* ---- size tree: (len, start) order ------------------------------------- */

static inline int s_less(const mb_index *ix, uint32_t a, uint32_t b)
{
    return N(a).len < N(b).len || (N(a).len == N(b).len && N(a).start < N(b).start);
}

static uint32_t s_insert(mb_index *ix, uint32_t t, uint32_t x)
{
    if (!t)
        return x;
    if (s_less(ix, x, t)) {
        N(t).sl = s_insert(ix, N(t).sl, x);
        if (N(N(t).sl).prio > N(t).prio) {
            uint32_t l = N(t).sl;
            N(t).sl = N(l).sr;
            N(l).sr = t;
            return l;
        }
    } else {
        N(t).sr = s_insert(ix, N(t).sr, x);
        if (N(N(t).sr).prio > N(t).prio) {
            uint32_t r = N(t).sr;
            N(t).sr = N(r).sl;
            N(r).sl = t;
            return r;
        }
    }
    return t;
}

static uint32_t s_merge(mb_index *ix, uint32_t a, uint32_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (N(a).prio > N(b).prio) {
        N(a).sr = s_merge(ix, N(a).sr, b);
        return a;
    }
    N(b).sl = s_merge(ix, a, N(b).sl);
    return b;
}

/* Unlink node x (its len/start still as they were when it was inserted). */
static uint32_t s_remove(mb_index *ix, uint32_t t, uint32_t x)
{
    if (!t)
        return 0;
    if (t == x)
        return s_merge(ix, N(t).sl, N(t).sr);
    if (s_less(ix, x, t))
        N(t).sl = s_remove(ix, N(t).sl, x);
    else
        N(t).sr = s_remove(ix, N(t).sr, x);
    return t;
}

/* ---- public operations ------------------------------------------------- */

uint32_t mb_index_insert_node(mb_index *ix, uintptr_t start, size_t len)
{
    uint32_t x = node_new(ix);
    if (!x)
        return 0;
    N(x).start = start;
    N(x).len = N(x).maxlen = len;
    a_insert(ix, x);
    if (ix->by_size)
        ix->sroot = s_insert(ix, ix->sroot, x);
    ix->count++;
    return x;
}

int mb_index_insert(mb_index *ix, uintptr_t start, size_t len)
{
    return mb_index_insert_node(ix, start, len) ? 0 : -1;
}

uint32_t mb_index_insert_between(mb_index *ix, uintptr_t start, size_t len, uint32_t pred,
                                 uint32_t succ)
{
    uint32_t x = node_new(ix);
    if (!x)
        return 0;
    N(x).start = start;
    N(x).len = N(x).maxlen = len;
    /* The leaf a descent for start would reach: pred's empty right slot, or else succ's
     * left slot, empty because succ is then the leftmost node of pred's right subtree. */
    MB_ASSERT(!pred || N(pred).start < start);
    MB_ASSERT(!succ || start < N(succ).start);
    uint32_t parent = pred && !R(pred) ? pred : succ;
    MB_ASSERT(parent == pred || !L(succ));
    a_attach(ix, x, parent);
    if (ix->by_size)
        ix->sroot = s_insert(ix, ix->sroot, x);
    ix->count++;
    return x;
}

uint32_t mb_index_find(const mb_index *ix, uintptr_t start) { return a_find(ix, start); }

void mb_index_remove_node(mb_index *ix, uint32_t x)
{
    a_unlink(ix, x);
    if (ix->by_size)
        ix->sroot = s_remove(ix, ix->sroot, x);
    node_release(ix, x);
    ix->count--;
}

void mb_index_remove(mb_index *ix, uintptr_t start)
{
    uint32_t x = a_find(ix, start);
    if (x)
        mb_index_remove_node(ix, x);
}

void mb_index_set(mb_index *ix, uint32_t x, uintptr_t new_start, size_t new_len)
{
    if (ix->by_size)
        ix->sroot = s_remove(ix, ix->sroot, x);
    size_t old = N(x).len;
    N(x).start = new_start;
    N(x).len = new_len;
    if (new_len > old)
        mb_ix_grow_up(ix, x, new_len);
    else if (new_len < old)
        mb_ix_shrink_up(ix, x, old);
    if (ix->by_size) {
        N(x).sl = N(x).sr = 0;
        ix->sroot = s_insert(ix, ix->sroot, x);
    }
}

void mb_index_resize(mb_index *ix, uintptr_t old_start, uintptr_t new_start, size_t new_len)
{
    uint32_t x = a_find(ix, old_start);
    if (x)
        mb_index_set(ix, x, new_start, new_len);
}

/* Carve n bytes from the front of node x. */
static uintptr_t carve(mb_index *ix, uint32_t x, size_t n)
{
    uintptr_t start = N(x).start;
    if (N(x).len == n)
        mb_index_remove_node(ix, x);
    else
        mb_index_set(ix, x, start + n, N(x).len - n);
    return start;
}

uint32_t mb_index_first_fit(const mb_index *ix, size_t n)
{
    if (N(ix->root).maxlen < n || n == 0)
        return 0;
    uint32_t t = ix->root;
    for (;;) {                  /* leftmost node with len >= n: maxlen says where it is */
        if (N(L(t)).maxlen >= n)
            t = L(t);
        else if (N(t).len >= n)
            return t;
        else
            t = R(t);
    }
}

uintptr_t mb_index_take_first_fit(mb_index *ix, size_t n)
{
    uint32_t t = mb_index_first_fit(ix, n);
    return t ? carve(ix, t, n) : 0;
}

uintptr_t mb_index_take_best_fit(mb_index *ix, size_t n)
{
    if (!ix->by_size)
        return mb_index_take_first_fit(ix, n);
    if (N(ix->root).maxlen < n || n == 0)
        return 0;
    uint32_t t = ix->sroot, best = 0;
    while (t) {
        if (N(t).len >= n) {
            best = t;
            t = N(t).sl;
        } else {
            t = N(t).sr;
        }
    }
    return carve(ix, best, n);
}

/* ---- invariant checks --------------------------------------------------- */

static int check_a(const mb_index *ix, uint32_t t, uintptr_t lo, uintptr_t hi, uint32_t *count)
{
    if (!t)
        return 0;
    const mb_node *x = &N(t);
    if (x->len == 0)
        return MB_BAD_EMPTY_RANGE;
    if (x->start < lo || x->start + x->len > hi || x->start + x->len < x->start)
        return MB_BAD_ADDRESS_ORDER;
    if (x->c[0] && N(x->c[0]).prio > x->prio)
        return MB_BAD_ADDRESS_HEAP;
    if (x->c[1] && N(x->c[1]).prio > x->prio)
        return MB_BAD_ADDRESS_HEAP;
    if (x->maxlen != mb_ix_max3(x->len, N(x->c[0]).maxlen, N(x->c[1]).maxlen))
        return MB_BAD_MAXLEN;
    if ((x->c[0] && N(x->c[0]).p != t) || (x->c[1] && N(x->c[1]).p != t))
        return MB_BAD_PARENT;
    (*count)++;
    int e = check_a(ix, x->c[0], lo, x->start, count);
    return e ? e : check_a(ix, x->c[1], x->start + x->len, hi, count);
}

static int check_s(const mb_index *ix, uint32_t t, uint32_t lo, uint32_t hi, uint32_t *count)
{
    if (!t)
        return 0;
    if (lo && !s_less(ix, lo, t))
        return MB_BAD_SIZE_ORDER;
    if (hi && !s_less(ix, t, hi))
        return MB_BAD_SIZE_ORDER;
    if ((N(t).sl && N(N(t).sl).prio > N(t).prio) || (N(t).sr && N(N(t).sr).prio > N(t).prio))
        return MB_BAD_SIZE_HEAP;
    if (a_find(ix, N(t).start) != t)
        return MB_BAD_SIZE_MEMBER;
    (*count)++;
    int e = check_s(ix, N(t).sl, lo, t, count);
    return e ? e : check_s(ix, N(t).sr, t, hi, count);
}

int mb_index_check(const mb_index *ix)
{
    if (ix->n[0].maxlen || ix->n[0].len)
        return MB_BAD_NIL;
    uint32_t count = 0;
    if (ix->root && N(ix->root).p)
        return MB_BAD_PARENT;
    int e = check_a(ix, ix->root, 0, UINTPTR_MAX, &count);
    if (e)
        return e;
    if (count != ix->count)
        return MB_BAD_COUNT;
    if (ix->by_size) {
        count = 0;
        e = check_s(ix, ix->sroot, 0, 0, &count);
        if (e)
            return e;
        if (count != ix->count)
            return MB_BAD_SIZE_COUNT;
    }
    return 0;
}
