/* Segment views: checking a Memory segment and making sub-views of it in C.
 *
 * A Memory's segments are 1-D unsigned-byte contiguous memoryviews (membuf.memory's
 * as_view makes them so). The Reader and the framers read their bytes through the
 * pointer of the view's buffer, and hand out sub-views made here without a slice
 * object or a Python int per view.
 *
 * Why the view's own state is checked rather than a buffer export held: a held
 * export would make memoryview.release() raise, but the cyclic GC's tp_clear of a
 * memoryview frees its managed buffer even while exports are held, leaving the
 * pointer dangling; a released (or cleared) view always has its RELEASED flag set,
 * so view_alive() is the one check that is never wrong. Code that holds a segment's
 * pointer across a call that may run Python code (an allocation, a decref) takes a
 * real export (PyObject_GetBuffer) for that span, which makes release() refuse
 * meanwhile; nothing that span calls can be a GC clear of the view, which the
 * caller holds a reference to. */
#ifndef MEMBUF_CORE_VIEW_H
#define MEMBUF_CORE_VIEW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The memoryview struct is declared (not public) in memoryobject.h. These helpers
 * read its flags and adjust a fresh copy's buffer; known to hold for 3.10 to 3.14.
 * Elsewhere view_slice falls back to slicing through the public protocol. */
#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030F0000 && !defined(Py_LIMITED_API)
#define MB_VIEW_DIRECT 1
#else
#define MB_VIEW_DIRECT 0
#endif

/* 1 when the memoryview mv can be read (not released, not cleared by the GC). */
static inline int view_alive(PyObject *mv)
{
#if MB_VIEW_DIRECT
    return !(((PyMemoryViewObject *)mv)->flags & _Py_MEMORYVIEW_RELEASED);
#else
    Py_buffer b;
    if (PyObject_GetBuffer(mv, &b, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    PyBuffer_Release(&b);
    return 1;
#endif
}

/* obj as a segment: its bytes and length. -1 with TypeError or ValueError when obj is
 * not a live 1-D unsigned-byte contiguous memoryview (a Memory's segments always
 * are, unless someone edited its private segment list). */
int view_segment(PyObject *obj, const unsigned char **p, Py_ssize_t *len);

/* obj as a new reference to a segment view: obj itself when it already is one, a view
 * of a bytes or bytearray, else whatever as_view (membuf.memory.as_view, bound at
 * import) makes of it, with its checks and messages. */
PyObject *view_as_segment(PyObject *obj, PyObject *as_view);

/* The ValueError for a segment whose memoryview was released; returns -1. */
int view_released(void);

/* A new memoryview of mv[start:start + n] (mv a segment, the range inside it),
 * sharing mv's managed buffer: one object, as `mv[start:stop]` makes, but no slice
 * object or ints. */
PyObject *view_slice(PyObject *mv, Py_ssize_t start, Py_ssize_t n);

/* An empty read-only memoryview (over b""). */
PyObject *view_empty(void);

#endif
