/* Size classes of free ranges (the "good-fit" strategy's front end).
 *
 * Strategy. The free-range index (index.c) stays the one authority on which
 * bytes are free: it orders every free range by address, decides whether a
 * free is legal and finds the neighbours a freed range merges with. In front
 * of it, for malloc, every free range is also on a doubly linked list of its
 * size class, as in TLSF (Masmano et al., "TLSF: a new dynamic memory
 * allocator for real-time systems"): the first level is the power of two of
 * the length, the second level divides that power of two into 32 linear
 * classes, and lengths below 32 get one class each. Two bitmaps say which
 * lists are non-empty:
 *
 *     fl_map  . 1 . . 1 . 1 ...          bit f: some list of first level f is non-empty
 *               |     |
 *     sl_map[f] . . 1 . . 1 ...          bit s: the list of class (f, s) is non-empty
 *                     |
 *     head[(f, s)] -> node <-> node <-> node      nodes of the index, linked by sl/sr
 *
 * malloc(n) rounds n up to the first class boundary at or above it, so that
 * every range on that list and on every list above it holds n, and takes the
 * head of the first non-empty one: two bit scans, no search, no walk. Only
 * when those lists are all empty can a range of n or more still sit lower
 * (on n's own class's list, or one class down, see below); the caller then
 * asks the index (an O(log n) descent), so no request fails while some range
 * fits. Lists are LIFO: a range freed last is reused first, while its cache
 * lines are warm.
 *
 * Hysteresis. A range whose length changes stays on its list while that list
 * is its class's or the one just below; it moves only when it leaves that
 * pair. A fresh arena is a power of two, the first length of its class: carve
 * 32 bytes and it drops one class, give them back and it climbs again. Without
 * the slack every such pair moved it twice. A range on the list below its
 * class is still at least as long as every length of that list's class, so
 * the rounding above stays exact; such a range is merely not offered to the
 * requests of its own class's size (they take another list, or the index).
 *
 * Each node records the list it is on (mb_node.list), so that the stay-or-move
 * test above costs one class computation and unlinking needs none.
 *
 * Invariants (mb_sc_check): every free range of the index is on exactly one
 * list, the list of its class or of the class just below, and that is the list
 * its node records; a list's links agree in both directions and its head has no
 * predecessor; a bitmap bit is set iff its list (or, for fl_map, one list of its
 * first level) is non-empty. The nil
 * node's sr is scratch: linking writes it to save a branch, nothing reads it.
 */
#include "sizeclass.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

void mb_sc_clear(mb_sizeclass *sc) { memset(sc, 0, sizeof *sc); }

int mb_sc_check(const mb_sizeclass *sc, const mb_index *ix)
{
    for (unsigned f = 0; f < MB_SC_FL_COUNT; f++) {
        if (((sc->fl_map >> f) & 1) != (sc->sl_map[f] != 0))
            return MB_BAD_CLASS_FL_MAP;
        for (unsigned s = 0; s < MB_SC_SL_COUNT; s++)
            if (((sc->sl_map[f] >> s) & 1) != (sc->head[(f << MB_SC_SL_BITS) | s] != 0))
                return MB_BAD_CLASS_SL_MAP;
    }
    if (sc->fl_map >> MB_SC_FL_COUNT)
        return MB_BAD_CLASS_FL_MAP;
    uint8_t *seen = calloc(ix->cap, 1);
    if (!seen)
        return MB_BAD_CHECK_MEMORY;
    int e = 0;
    uint32_t listed = 0;
    for (unsigned c = 0; !e && c < MB_SC_COUNT; c++) {
        uint32_t prev = 0, x = sc->head[c];
        while (x && !e) {
            if (x >= ix->cap || seen[x]) {
                e = MB_BAD_CLASS_TWICE;        /* on two lists, or a list runs in a loop */
                break;
            }
            const mb_node *nx = &ix->n[x];
            if (nx->sr != prev)
                e = MB_BAD_CLASS_LINK;
            else if (!nx->len || mb_index_find(ix, nx->start) != x)
                e = MB_BAD_CLASS_STALE;
            else if (mb_sc_class(nx->len) != c && mb_sc_class(nx->len) != c + 1)
                e = MB_BAD_CLASS_WRONG;
            else if (nx->list != c)
                e = MB_BAD_CLASS_LIST;
            if (e)
                break;
            seen[x] = 1;
            listed++;
            prev = x;
            x = nx->sl;
        }
    }
    if (!e && listed != ix->count)
        e = MB_BAD_CLASS_MISSING;              /* listed nodes are distinct tree nodes */
    free(seen);
    return e;
}
