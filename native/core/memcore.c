/* MemoryCore: the storage of membuf.Memory (docs/design.md §3), in C.
 *
 * membuf.Memory (a Python class, membuf/memory.py) subclasses this type, which holds
 * its segment list and counters as C fields, so the compiled Reader reads them with
 * no attribute lookup or int unboxing, and the framers make Memory frames without a
 * Python call. Python code sees the same names as before (`_segs`, `_size`,
 * `_dropped`, `_dsegs`) as attributes.
 *
 * Invariants (kept by membuf.memory, which alone writes these):
 *   M1  segs is a list (the _segs setter refuses anything else);
 *   M2  size == the sum of the segments' lengths after every public call;
 *   M3  dropped / dsegs only grow.
 * The Reader never trusts M2 for memory safety: every walk checks each segment's own
 * length and stops at the end of the list. No tp_clear: a cycle through a Memory
 * runs through its list, whose own tp_clear breaks it, and Readers may still look
 * at segs while the GC clears other objects. */
#include "reader.h"

#include <stddef.h>
#include <structmember.h>

static PyObject *memcore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;                 /* the segments are Memory.__init__'s business */
    PyObject *segs = PyList_New(0);
    if (!segs)
        return NULL;
    MemCoreObject *m = (MemCoreObject *)type->tp_alloc(type, 0);
    if (!m) {
        Py_DECREF(segs);
        return NULL;
    }
    m->segs = segs;
    return (PyObject *)m;
}

PyObject *memory_from_list(PyObject *segs, Py_ssize_t size)
{
    MemCoreObject *m = (MemCoreObject *)mb_Memory->tp_alloc(mb_Memory, 0);
    if (!m) {
        Py_DECREF(segs);
        return NULL;
    }
    m->segs = segs;
    m->size = size;
    return (PyObject *)m;
}

static int memcore_traverse(MemCoreObject *m, visitproc visit, void *arg)
{
    Py_VISIT(m->segs);          /* (subtype_traverse visits a Python subclass's type) */
    return 0;
}

static void memcore_dealloc(MemCoreObject *m)
{
    /* (subtype_dealloc, for a Python subclass, drops the type's reference) */
    PyObject_GC_UnTrack(m);
    Py_CLEAR(m->segs);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static Py_ssize_t memcore_length(MemCoreObject *m)
{
    return m->size;
}

/* push(*segments): append by reference, all or nothing. */
static PyObject *memcore_push(MemCoreObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *views = PyList_New(nargs);
    if (!views)
        return NULL;
    Py_ssize_t added = 0;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *v = view_as_segment(args[i], mb_as_view);
        if (!v) {
            Py_DECREF(views);
            return NULL;
        }
        PyList_SET_ITEM(views, i, v);
        added += PyMemoryView_GET_BUFFER(v)->len;
    }
    Py_ssize_t end = PyList_GET_SIZE(m->segs);
    int r = PyList_SetSlice(m->segs, end, end, views);
    Py_DECREF(views);
    if (r < 0)
        return NULL;
    m->size += added;
    Py_RETURN_NONE;
}

PyObject *memory_drop_front(MemCoreObject *m, Py_ssize_t nsegs, long long head)
{
    PyObject *segs = m->segs;
    Py_ssize_t count = PyList_GET_SIZE(segs);
    if (nsegs < 0 || nsegs > count || head < 0 || (head && nsegs >= count)) {
        PyErr_Format(PyExc_ValueError, "_drop_front(%zd, %lld) of a Memory of %zd segments",
                     nsegs, head, count);
        return NULL;
    }
    PyObject *pieces = PyList_New(0), *gone = PyList_GetSlice(segs, 0, nsegs), *back = NULL;
    long long dropped = 0;
    if (!pieces || !gone)
        goto error;
    for (Py_ssize_t i = 0; i < nsegs; i++) {
        PyObject *seg = PyList_GET_ITEM(gone, i);
        Py_ssize_t n = PyObject_Length(seg);
        if (n < 0 || (n && PyList_Append(pieces, seg) < 0))
            goto error;
        dropped += n;
    }
    if (head) {
        PyObject *seg = PyList_GET_ITEM(segs, nsegs);
        const unsigned char *p;
        Py_ssize_t n;
        if (view_segment(seg, &p, &n) < 0)
            goto error;
        if (head > n) {
            PyErr_Format(PyExc_ValueError, "_drop_front: %lld bytes of a %zd-byte segment", head, n);
            goto error;
        }
        PyObject *front = view_slice(seg, 0, (Py_ssize_t)head);
        if (!front || PyList_Append(pieces, front) < 0) {
            Py_XDECREF(front);
            goto error;
        }
        Py_DECREF(front);
        if (!(back = view_slice(seg, (Py_ssize_t)head, n - (Py_ssize_t)head)))
            goto error;
        dropped += head;
    }
    /* Everything is made: change the Memory (the removed segments stay alive in `gone`
     * until it is consistent again, so no finalizer sees it half-changed). */
    if (PyList_SetSlice(segs, 0, nsegs, NULL) < 0)
        goto error;
    if (back)
        PyList_SetItem(segs, 0, back);      /* steals back; the old head lives in pieces */
    m->dsegs += nsegs;
    m->size -= (Py_ssize_t)dropped;
    m->dropped += dropped;
    Py_DECREF(gone);
    return pieces;
error:
    Py_XDECREF(back);
    Py_XDECREF(pieces);
    Py_XDECREF(gone);
    return NULL;
}

/* Memory(*segments): push them (the list itself was made by tp_new). */
static int memcore_init(MemCoreObject *m, PyObject *args, PyObject *kwds)
{
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Memory() takes segments by position only");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (!n)
        return 0;
    PyObject *r = memcore_push(m, &PyTuple_GET_ITEM(args, 0), n);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *memcore_drop_front_method(MemCoreObject *m, PyObject *args)
{
    Py_ssize_t nsegs;
    long long head;
    int release;
    if (!PyArg_ParseTuple(args, "nLp:_drop_front", &nsegs, &head, &release))
        return NULL;
    return memory_drop_front(m, nsegs, head);
}

static PyMethodDef memcore_methods[] = {
    {"push", (PyCFunction)(void (*)(void))memcore_push, METH_FASTCALL,
     "push(*segments): append bytes-like segments by reference (no copy), all or none.\n\n"
     "Empty segments are kept and harmless. Raises TypeError when a segment is not a\n"
     "contiguous bytes-like object; nothing is appended then."},
    {"_drop_front", (PyCFunction)memcore_drop_front_method, METH_VARARGS,
     "_drop_front(nsegs, head, release): remove nsegs whole segments and head bytes of the\n"
     "next one; return the removed non-empty pieces (Reader.clip_front's hook)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *memcore_get_segs(MemCoreObject *m, void *closure)
{
    (void)closure;
    return Py_NewRef(m->segs);
}

static int memcore_set_segs(MemCoreObject *m, PyObject *value, void *closure)
{
    (void)closure;
    if (!value || !PyList_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "Memory._segs must be a list");
        return -1;
    }
    Py_SETREF(m->segs, Py_NewRef(value));
    return 0;
}

static PyGetSetDef memcore_getset[] = {
    {"_segs", (getter)memcore_get_segs, (setter)memcore_set_segs,
     "the segment list (shared with Readers: mutate it in place)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef memcore_members[] = {
    {"_size", T_PYSSIZET, offsetof(MemCoreObject, size), 0, "total bytes"},
    {"_dropped", T_LONGLONG, offsetof(MemCoreObject, dropped), 0, "bytes ever removed from the front"},
    {"_dsegs", T_PYSSIZET, offsetof(MemCoreObject, dsegs), 0, "segments ever removed from the front"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods memcore_as_sequence = {
    .sq_length = (lenfunc)memcore_length,
};

static PyMappingMethods memcore_as_mapping = {
    .mp_length = (lenfunc)memcore_length,
};

PyTypeObject MemCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf._core.MemoryCore",
    .tp_doc = "The segment list and counters of a membuf.Memory (its base class).",
    .tp_basicsize = sizeof(MemCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = memcore_new,
    .tp_init = (initproc)memcore_init,
    .tp_dealloc = (destructor)memcore_dealloc,
    .tp_traverse = (traverseproc)memcore_traverse,
    .tp_as_sequence = &memcore_as_sequence,
    .tp_as_mapping = &memcore_as_mapping,
    .tp_methods = memcore_methods,
    .tp_getset = memcore_getset,
    .tp_members = memcore_members,
};
