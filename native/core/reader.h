/* The compiled Reader (docs/design.md §4) and framers (§5): shared declarations.
 *
 * Files, one concern each:
 *   view.c        checking segments, making sub-views in C (view.h)
 *   memcore.c     MemoryCore: the segment list and counters under membuf.Memory
 *   cursor.c      the cursor: stepping over segments, walks, commits (the Buf primitives)
 *   reader.c      Reader: the reads (ints, LEB128, bytes, views), the type
 *   clip.c        Reader.clip_front and Reader.transaction (the Transaction type)
 *   search.c      find / read_until / read_line and their resume memo
 *   framer.c      Framer: split / split_views, the in-segment scan and the slow frame
 *   scan_unit.c   native/scan.c compiled into this module too (pure functions)
 *
 * Positions are absolute, as in the pure-Python reference (membuf.reader.PyReader):
 * `base` is the absolute offset of the current segment's first byte and `si` its
 * absolute segment number, counted from the first byte and segment the Memory ever
 * held; the Memory counts what was removed from its front (`dropped`, `dsegs`), so
 * the list index of segment si is si - dsegs.
 *
 * Re-entrancy rule. Any allocation of a GC-tracked object and any decref may run
 * Python code (a finalizer), which may use this Reader or its Memory. So a read works
 * on a *local* copy of the cursor while it walks segments (no Python code runs during
 * a walk: borrowed segment references stay valid), and makes the result afterwards;
 * the local cursor is committed into the Reader only after checking that the Reader
 * still stands where the read began (cursor_same), and the old segment is released
 * last, when the Reader is consistent again. A read whose Reader moved under it
 * raises RuntimeError and consumes nothing.
 *
 * Invariants (MB_ASSERT at every commit into a Reader, cursor.c):
 *   R1  0 <= pos <= end; seg == NULL only when the cursor is parked (pos == end == 0);
 *   R2  end == len(seg), the segment's length when the cursor stepped onto it (a
 *       memoryview's length never changes);
 *   R3  base + pos is the cursor's absolute offset and never below start (unread
 *       stops there, and at the Memory's clip point). */
#ifndef MEMBUF_CORE_READER_H
#define MEMBUF_CORE_READER_H

#include "core.h"
#include "view.h"

typedef struct MemCoreObject {
    PyObject_HEAD
    PyObject *segs;             /* list of segment memoryviews; never NULL, never rebound
                                   except by the _segs setter of a fresh Memory */
    Py_ssize_t size;            /* the sum of the segments' lengths */
    long long dropped;          /* bytes ever removed from the front */
    Py_ssize_t dsegs;           /* segments ever removed from the front */
} MemCoreObject;

/* One position in a Memory. seg is strong in a Reader, borrowed during a walk. */
typedef struct mb_cursor {
    PyObject *seg;              /* the memoryview of segment si; NULL when parked */
    const unsigned char *p;     /* its bytes */
    Py_ssize_t pos, end;        /* at p[pos]; the segment has end bytes */
    Py_ssize_t si;              /* absolute segment number */
    long long base;             /* absolute offset of p[0] */
} mb_cursor;

typedef struct ReaderObject {
    PyObject_HEAD
    MemCoreObject *m;           /* NULL only before __init__ */
    mb_cursor c;                /* c.seg strong */
    long long start;            /* absolute offset where the Reader began */
    /* find / read_until resume memo (search.c): a failed search from `memo_here` for
     * memo_sub may resume at absolute segment memo_k, whose first byte is memo_kstart. */
    PyObject *memo_sub;         /* bytes, or NULL */
    long long memo_here, memo_kstart;
    Py_ssize_t memo_k;
    /* the framers' memo (framer.c): framer `split_serial` found no complete frame in
     * the absolute range [split_at, split_end) of one segment. */
    unsigned long long split_serial;
    long long split_at, split_end;
} ReaderObject;

extern PyTypeObject MemCore_Type, Reader_Type, Transaction_Type, Framer_Type;

/* membuf's Python pieces, bound once by membuf.memory (_bind_reader). */
extern PyObject *mb_NeedMore, *mb_MalformedError, *mb_MembufError;
extern PyMethodDef framer_module_methods[];    /* framer.c: _bind_encode */
extern PyTypeObject *mb_Memory;         /* membuf.Memory, a subclass of MemoryCore */
extern PyObject *mb_as_view;            /* membuf.memory.as_view */
/* Segments scanned or searched so far (a work meter for the linear-work tests). */
extern unsigned long long mb_segment_visits;

/* memcore.c: a new membuf.Memory holding `segs` (stolen list) of `size` bytes. */
PyObject *memory_from_list(PyObject *segs, Py_ssize_t size);
/* memcore.c: Memory._drop_front in C: remove nsegs segments and head bytes of the next;
 * the removed non-empty pieces (a new list), or NULL with nothing changed. */
PyObject *memory_drop_front(MemCoreObject *m, Py_ssize_t nsegs, long long head);

/* ---- cursor.c: the Buf primitives ------------------------------------------------ */

static inline long long cursor_remaining(const MemCoreObject *m, const mb_cursor *c)
{
    return m->dropped + (long long)m->size - c->base - c->pos;
}

static inline int cursor_same(const mb_cursor *a, const mb_cursor *b)
{
    return a->seg == b->seg && a->pos == b->pos && a->end == b->end && a->si == b->si &&
           a->base == b->base;
}

/* Park c before the Memory's first segment (Python's _park). */
void cursor_park(const MemCoreObject *m, mb_cursor *c);
/* Step c (borrowed) from its exhausted segment to the next: 1 moved, 0 none, -1 error
 * (MembufError when c is behind a clip point; a bad segment). */
int cursor_next(const MemCoreObject *m, mb_cursor *c);
/* Walk n available bytes (borrowed c): advance, copy out, or record the pieces. */
int cursor_advance(const MemCoreObject *m, mb_cursor *c, long long n);
int cursor_copy(const MemCoreObject *m, mb_cursor *c, long long n, unsigned char *dst);

typedef struct mb_piece {
    PyObject *seg;              /* borrowed during the walk, then owned (pieces_own) */
    Py_ssize_t start, len;
} mb_piece;

typedef struct mb_pieces {
    mb_piece *v;
    Py_ssize_t n, cap;
    mb_piece small[8];
    int owned;
} mb_pieces;

void pieces_init(mb_pieces *ps);
/* Record the non-empty pieces of the next n available bytes (borrowed walk). */
int cursor_pieces(const MemCoreObject *m, mb_cursor *c, long long n, mb_pieces *ps);
/* Take a reference to every recorded segment (before anything may run Python code). */
void pieces_own(mb_pieces *ps);
/* A list of views, one per piece; NULL on error. */
PyObject *pieces_views(const mb_pieces *ps);
void pieces_free(mb_pieces *ps);

/* Settle an owned local cursor as reader_settle does (its own references): 1, 0, -1. */
int cursor_settle_owned(const MemCoreObject *m, mb_cursor *c);
/* Settle r onto a segment with an unread byte (commits): 1, 0 none buffered, -1. */
int reader_settle(ReaderObject *r);
/* Commit a borrowed cursor into r (takes its own reference to c->seg). */
void reader_commit(ReaderObject *r, const mb_cursor *c);
/* Commit an owned cursor into r (steals the reference). */
void reader_commit_owned(ReaderObject *r, mb_cursor *c);
/* The RuntimeError for a Reader that was used while one of its reads was running. */
int reader_moved(const char *what);
/* Check r was initialised; -1 with RuntimeError if not. */
int reader_ready(ReaderObject *r);

/* ---- reader.c: pieces the framers share -------------------------------------------- */

/* The NeedMore of `what` needing n bytes where `have` are buffered (returns NULL). */
PyObject *need_more(const char *what, long long n, long long have);
/* The name of obj's type, for messages (a new reference). */
PyObject *type_name(PyObject *obj);
/* Decode a LEB128 value at cursor c without moving it (the rules and messages of
 * read_leb128 / read_sleb128): 1 with *value and *length, 0 with NeedMore set, -1 with
 * MalformedError (or another error) set. */
int cursor_peek_leb128(const MemCoreObject *m, const mb_cursor *c, int is_signed, int max_bytes,
                       unsigned long long *value, int *length);

/* ---- clip.c ------------------------------------------------------------------------ */

PyObject *reader_clip_front(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *reader_transaction(ReaderObject *r, PyObject *unused);

/* ---- search.c ------------------------------------------------------------------------ */

/* Offset from cursor c (r's, or a local copy) of the first sub ending within `limit`
 * bytes, or -1 (leaving r's resume memo), or -2 with an exception set. */
long long reader_find(ReaderObject *r, const mb_cursor *c, PyObject *sub_bytes, long long limit);
/* Python-visible methods of the Reader defined in search.c. */
PyObject *reader_find_method(ReaderObject *r, PyObject *arg);
PyObject *reader_read_until(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *reader_read_line(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames);
/* The MalformedError / NeedMore of a delimiter search that failed with `have` bytes
 * buffered (what: "read_until", "read_line"); returns NULL. */
PyObject *delim_failure(const char *what, PyObject *delim, long long max_size, long long have);

/* Registers every type and function above in the module (called by core_exec). */
int reader_exec(PyObject *module);

#endif
