/* Named invariants of the allocator and its free-range index, and a debug assert.
 *
 * mb_alloc_check and mb_index_check return MB_SOUND (0) or the code of the first
 * broken invariant; mb_check_name turns a code into its sentence, so a failed
 * check names what broke instead of printing a bare number. Codes are stable:
 * the index owns 1..99, the allocator 100..199, the size classes (sizeclass.c,
 * good-fit only) 200 and up. */
#ifndef MEMBUF_CHECK_H
#define MEMBUF_CHECK_H

#define MB_INVARIANTS(X)                                                              \
    X(MB_SOUND, 0, "sound")                                                          \
    X(MB_BAD_EMPTY_RANGE, 1, "index: an empty free range is recorded")               \
    X(MB_BAD_ADDRESS_ORDER, 2, "index: free ranges out of address order or overlapping") \
    X(MB_BAD_ADDRESS_HEAP, 3, "index: address tree breaks the heap order of priorities") \
    X(MB_BAD_MAXLEN, 4, "index: a subtree's largest-length augmentation is stale")   \
    X(MB_BAD_SIZE_ORDER, 5, "index: size tree out of (length, address) order")       \
    X(MB_BAD_SIZE_HEAP, 6, "index: size tree breaks the heap order of priorities")   \
    X(MB_BAD_SIZE_MEMBER, 7, "index: a size-tree node is missing from the address tree") \
    X(MB_BAD_NIL, 8, "index: the nil node was written")                             \
    X(MB_BAD_COUNT, 9, "index: address tree node count differs from the range count") \
    X(MB_BAD_SIZE_COUNT, 10, "index: size tree node count differs from the range count") \
    X(MB_BAD_PARENT, 11, "index: a parent link is broken")                           \
    X(MB_BAD_CHECK_MEMORY, 100, "allocator: no memory to run the check")             \
    X(MB_BAD_OUTSIDE, 101, "allocator: a free range lies outside every arena")      \
    X(MB_BAD_UNMERGED, 102, "allocator: two free ranges of one arena touch (a merge was missed)") \
    X(MB_BAD_ARENA_ORDER, 103, "allocator: arenas unsorted or overlapping")         \
    X(MB_BAD_ARENA_SUM, 104, "allocator: an arena's used plus free bytes differ from its size") \
    X(MB_BAD_STATS, 105, "allocator: reserved or in_use drifted from the arena table") \
    X(MB_BAD_SPARES, 106, "allocator: more than one empty arena is kept")            \
    X(MB_BAD_MAX_BYTES, 107, "allocator: reserved bytes exceed max_bytes")           \
    X(MB_BAD_PINNED, 108, "allocator: more bytes pinned than in use")                \
    X(MB_BAD_EMPTY_COUNT, 109, "allocator: the count of empty arenas drifted")        \
    X(MB_BAD_HOT, 110, "allocator: the record of the last malloc disagrees with the index") \
    X(MB_BAD_CLASS_FL_MAP, 200, "size classes: a first-level bitmap bit disagrees with its lists") \
    X(MB_BAD_CLASS_SL_MAP, 201, "size classes: a second-level bitmap bit disagrees with its list") \
    X(MB_BAD_CLASS_TWICE, 202, "size classes: a free range is on a list twice or on two lists") \
    X(MB_BAD_CLASS_LINK, 203, "size classes: a list's back links disagree with its forward links") \
    X(MB_BAD_CLASS_STALE, 204, "size classes: a listed node is not a free range of the index") \
    X(MB_BAD_CLASS_WRONG, 205, "size classes: a free range is on a list neither of its class nor just below") \
    X(MB_BAD_CLASS_MISSING, 206, "size classes: a free range of the index is on no list") \
    X(MB_BAD_CLASS_LIST, 207, "size classes: a node's record of its list names another list")

enum mb_invariant {
#define MB_INVARIANT_ENUM(name, code, text) name = code,
    MB_INVARIANTS(MB_INVARIANT_ENUM)
#undef MB_INVARIANT_ENUM
};

/* The sentence for a check result; "unknown invariant" for a code not in the list. */
const char *mb_check_name(int code);

/* MB_ASSERT: a fact the code relies on without checking it at run time. Built with
 * -DMB_DEBUG (the C tests, the fuzz harness) it aborts naming the fact; otherwise it
 * costs nothing. */
#ifdef MB_DEBUG
#include <stdio.h>
#include <stdlib.h>
#define MB_ASSERT(expr)                                                               \
    ((expr) ? (void)0                                                                 \
            : (fprintf(stderr, "%s:%d: MB_ASSERT failed: %s\n", __FILE__, __LINE__, #expr), \
               abort()))
#else
#define MB_ASSERT(expr) ((void)0)
#endif

#endif
