/* The cursor: the Buf primitives under every read (see reader.h for the rules).
 *
 * Rust's bytes::Buf names three operations: chunk() (the contiguous bytes at the
 * cursor: p[pos:end]), advance(n) (cursor_advance) and remaining()
 * (cursor_remaining, from the Memory's running total, never by walking). The rest
 * are walks built on them: copy the next n bytes out, or record the pieces (segment
 * ranges) they span so that views can be made afterwards.
 *
 * These functions mirror membuf.reader.PyReader's _next / _advance / _gather step
 * for step, so both implementations stand on the same segment after every call.
 * A walk uses borrowed segment references and runs no Python code; the caller
 * commits the walked cursor into the Reader (reader_commit) when the read has
 * succeeded, so a failed read consumes nothing. */
#include "reader.h"

#include <string.h>

#include "check.h"

/* R1 and R3 of reader.h, for a cursor about to become a Reader's. */
static void cursor_assert(const ReaderObject *r, const mb_cursor *c)
{
    MB_ASSERT(0 <= c->pos && c->pos <= c->end);
    MB_ASSERT(c->seg || (c->pos == 0 && c->end == 0));
    MB_ASSERT(c->base + c->pos >= r->start);
    (void)r;
    (void)c;
}

static const char BEHIND[] =
    "this Reader is behind bytes that clip_front() or clear() removed from its Memory "
    "(another Reader clipped them); make a new Reader";

void cursor_park(const MemCoreObject *m, mb_cursor *c)
{
    c->si = m->dsegs - 1;
    c->seg = NULL;
    c->p = NULL;
    c->pos = c->end = 0;
    c->base = m->dropped;
}

int cursor_next(const MemCoreObject *m, mb_cursor *c)
{
    if (c->base + c->end < m->dropped) {
        PyErr_SetString(mb_MembufError, BEHIND);
        return -1;
    }
    Py_ssize_t i = c->si + 1 - m->dsegs;
    if (i < 0) {                /* our segment was clipped away whole, exactly at our end */
        cursor_park(m, c);
        i = 0;
    }
    if (i >= PyList_GET_SIZE(m->segs))
        return 0;
    PyObject *seg = PyList_GET_ITEM(m->segs, i);
    const unsigned char *p;
    Py_ssize_t n;
    if (view_segment(seg, &p, &n) < 0)
        return -1;
    c->base += c->end;
    c->si += 1;
    c->seg = seg;
    c->p = p;
    c->pos = 0;
    c->end = n;
    return 1;
}

/* The Memory's length promised bytes its segments do not have: someone edited it. */
static int short_memory(void)
{
    PyErr_SetString(PyExc_RuntimeError,
                    "the Memory holds fewer bytes than its length says (its private segment "
                    "list or counters were edited); nothing was consumed");
    return -1;
}

/* The next segment for a walk that still needs bytes: 0 stepped, -1 error. */
static int walk_on(const MemCoreObject *m, mb_cursor *c)
{
    c->pos = c->end;
    int k = cursor_next(m, c);
    return k > 0 ? 0 : k < 0 ? -1 : short_memory();
}

int cursor_advance(const MemCoreObject *m, mb_cursor *c, long long n)
{
    for (;;) {
        Py_ssize_t avail = c->end - c->pos;
        if (n <= avail) {
            c->pos += (Py_ssize_t)n;
            return 0;
        }
        n -= avail;
        if (walk_on(m, c) < 0)
            return -1;
    }
}

int cursor_copy(const MemCoreObject *m, mb_cursor *c, long long n, unsigned char *dst)
{
    for (;;) {
        Py_ssize_t avail = c->end - c->pos;
        Py_ssize_t k = n <= avail ? (Py_ssize_t)n : avail;
        if (k) {
            if (!view_alive(c->seg))
                return view_released();
            memmove(dst, c->p + c->pos, (size_t)k);   /* (dst may be a view of the segment) */
            dst += k;
        }
        if (n <= avail) {
            c->pos += k;
            return 0;
        }
        n -= avail;
        if (walk_on(m, c) < 0)
            return -1;
    }
}

void pieces_init(mb_pieces *ps)
{
    ps->v = ps->small;
    ps->n = 0;
    ps->cap = (Py_ssize_t)(sizeof ps->small / sizeof ps->small[0]);
    ps->owned = 0;
}

static int pieces_add(mb_pieces *ps, PyObject *seg, Py_ssize_t start, Py_ssize_t len)
{
    if (ps->n == ps->cap) {
        Py_ssize_t cap = 2 * ps->cap;
        mb_piece *v = PyMem_Malloc((size_t)cap * sizeof *v);
        if (!v) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(v, ps->v, (size_t)ps->n * sizeof *v);
        if (ps->v != ps->small)
            PyMem_Free(ps->v);
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n++] = (mb_piece){seg, start, len};
    return 0;
}

int cursor_pieces(const MemCoreObject *m, mb_cursor *c, long long n, mb_pieces *ps)
{
    for (;;) {
        Py_ssize_t avail = c->end - c->pos;
        Py_ssize_t k = n <= avail ? (Py_ssize_t)n : avail;
        if (k) {
            if (!view_alive(c->seg))
                return view_released();
            if (pieces_add(ps, c->seg, c->pos, k) < 0)
                return -1;
        }
        if (n <= avail) {
            c->pos += k;
            return 0;
        }
        n -= avail;
        if (walk_on(m, c) < 0)
            return -1;
    }
}

void pieces_own(mb_pieces *ps)
{
    for (Py_ssize_t i = 0; i < ps->n; i++)
        Py_INCREF(ps->v[i].seg);
    ps->owned = 1;
}

PyObject *pieces_views(const mb_pieces *ps)
{
    PyObject *list = PyList_New(ps->n);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < ps->n; i++) {
        PyObject *v = view_slice(ps->v[i].seg, ps->v[i].start, ps->v[i].len);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

void pieces_free(mb_pieces *ps)
{
    if (ps->owned)
        for (Py_ssize_t i = 0; i < ps->n; i++)
            Py_DECREF(ps->v[i].seg);
    if (ps->v != ps->small)
        PyMem_Free(ps->v);
    pieces_init(ps);
}

void reader_commit(ReaderObject *r, const mb_cursor *c)
{
    cursor_assert(r, c);
    PyObject *old = r->c.seg;
    Py_XINCREF(c->seg);
    r->c = *c;
    Py_XDECREF(old);            /* last: r is consistent if this runs a finalizer */
}

void reader_commit_owned(ReaderObject *r, mb_cursor *c)
{
    cursor_assert(r, c);
    PyObject *old = r->c.seg;
    r->c = *c;
    c->seg = NULL;
    Py_XDECREF(old);
}

int cursor_settle_owned(const MemCoreObject *m, mb_cursor *c)
{
    if (c->pos < c->end)
        return view_alive(c->seg) ? 1 : view_released();
    mb_cursor w = *c;
    int k;
    do {
        k = cursor_next(m, &w);
    } while (k > 0 && w.pos == w.end);
    if (k < 0)
        return -1;
    PyObject *old = c->seg;
    Py_XINCREF(w.seg);
    *c = w;
    Py_XDECREF(old);
    return k > 0;
}

int reader_settle(ReaderObject *r)
{
    for (;;) {
        if (r->c.pos < r->c.end)
            return view_alive(r->c.seg) ? 1 : view_released();
        mb_cursor c = r->c;
        int k;
        do {
            k = cursor_next(r->m, &c);
        } while (k > 0 && c.pos == c.end);
        if (k < 0)
            return -1;
        if (!cursor_same(&c, &r->c))
            reader_commit(r, &c);
        if (k == 0)
            return 0;
    }
}

int reader_moved(const char *what)
{
    PyErr_Format(PyExc_RuntimeError,
                 "%s: the Reader was used by other code (a finalizer?) while this call ran; "
                 "nothing was consumed", what);
    return -1;
}

int reader_ready(ReaderObject *r)
{
    if (r->m)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "this Reader was not initialised (Reader.__init__ not called)");
    return 0;
}
