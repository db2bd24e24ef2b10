/* Releasing and rewinding: Reader.clip_front and Reader.transaction (docs/design.md §4).
 *
 * clip_front removes the consumed prefix from the Memory through its _drop_front hook
 * (memcore.c's, in C, for a plain Memory; a subclass's own, such as RecyclableMemory's
 * ownership bookkeeping, through Python), then sets the cursor from the Memory's new
 * state and only then calls `release` on the pieces, so a callback sees a consistent
 * Reader. A transaction holds a copy of the cursor (its own reference to the segment)
 * and commits it back when an Exception leaves the block. */
#include "reader.h"

/* ---- clip_front ------------------------------------------------------------------------ */

static PyObject *clip_front(ReaderObject *r, MemCoreObject *m, PyObject *release);

PyObject *reader_clip_front(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *names[] = {"release"};
    PyObject *release = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "clip_front takes at most 1 argument (release)");
        return NULL;
    }
    if (nargs)
        release = args[0];
    else if (nkw) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, 0);
        if (PyUnicode_CompareWithASCIIString(key, names[0]) != 0) {
            PyErr_Format(PyExc_TypeError, "clip_front got an unexpected keyword argument %R", key);
            return NULL;
        }
        release = args[0];
    }
    if (!reader_ready(r))
        return NULL;
    PyObject *held = Py_NewRef((PyObject *)r->m);   /* _drop_front / release run Python */
    PyObject *res = clip_front(r, (MemCoreObject *)held, release);
    Py_DECREF(held);
    return res;
}

static PyObject *clip_front(ReaderObject *r, MemCoreObject *m, PyObject *release)
{
    long long here = r->c.base + r->c.pos;
    if (here < m->dropped) {
        PyErr_SetString(mb_MembufError,
                        "clip_front: another Reader already clipped past this one's cursor");
        return NULL;
    }
    Py_ssize_t local = r->c.si - m->dsegs, nsegs = 0;
    long long head = 0;
    if (local >= 0) {
        Py_ssize_t count = PyList_GET_SIZE(m->segs);
        nsegs = r->c.pos == r->c.end ? local + 1 : local;
        long long before = 0;
        for (Py_ssize_t i = 0; i < nsegs && i < count; i++) {
            const unsigned char *p;
            Py_ssize_t len;
            if (view_segment(PyList_GET_ITEM(m->segs, i), &p, &len) < 0)
                return NULL;
            before += len;
        }
        head = here - m->dropped - before;
        while (!head && nsegs < count && PyMemoryView_Check(PyList_GET_ITEM(m->segs, nsegs)) &&
               !PyMemoryView_GET_BUFFER(PyList_GET_ITEM(m->segs, nsegs))->len)
            nsegs++;                            /* empty segments at the cursor go too */
        if (head < 0 || nsegs > count) {
            PyErr_SetString(PyExc_RuntimeError, "clip_front: the Memory's segments do not match "
                            "its counters (its private state was edited); nothing was clipped");
            return NULL;
        }
    }
    PyObject *pieces = Py_TYPE(m) == mb_Memory  /* no override: straight to C */
                           ? memory_drop_front(m, nsegs, head)
                           : PyObject_CallMethod((PyObject *)m, "_drop_front", "nLO", nsegs, head,
                                                 release == Py_None ? Py_False : Py_True);
    if (!pieces)
        return NULL;
    /* The Memory changed under the cursor: set it from the Memory's new state. */
    mb_cursor c;
    if (head) {
        if (!PyList_GET_SIZE(m->segs)) {
            Py_DECREF(pieces);
            PyErr_SetString(PyExc_RuntimeError, "clip_front: _drop_front left no segment");
            return NULL;
        }
        PyObject *seg = PyList_GET_ITEM(m->segs, 0);
        if (view_segment(seg, &c.p, &c.end) < 0) {
            Py_DECREF(pieces);
            return NULL;
        }
        c.seg = seg;
        c.si = m->dsegs;
        c.pos = 0;
        c.base = m->dropped;
        reader_commit(r, &c);
    } else {
        cursor_park(m, &c);
        r->split_serial = 0;
        reader_commit(r, &c);
        if (reader_settle(r) < 0) {
            Py_DECREF(pieces);
            return NULL;
        }
    }
    if (release != Py_None) {
        PyObject *it = PyObject_GetIter(pieces), *piece;
        if (!it) {
            Py_DECREF(pieces);
            return NULL;
        }
        while ((piece = PyIter_Next(it))) {
            PyObject *res = PyObject_CallOneArg(release, piece);
            Py_DECREF(piece);
            if (!res)
                break;
            Py_DECREF(res);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_DECREF(pieces);
            return NULL;
        }
    }
    return pieces;
}

/* ---- transactions ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    ReaderObject *r;
    mb_cursor saved;            /* saved.seg strong */
} TxnObject;

PyObject *reader_transaction(ReaderObject *r, PyObject *unused)
{
    (void)unused;
    if (!reader_ready(r))
        return NULL;
    TxnObject *t = PyObject_GC_New(TxnObject, &Transaction_Type);
    if (!t)
        return NULL;
    t->r = (ReaderObject *)Py_NewRef((PyObject *)r);
    t->saved = r->c;
    Py_XINCREF(t->saved.seg);
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

static int txn_ready(TxnObject *t)
{
    if (t->r)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "this transaction was cleared");
    return 0;
}

static PyObject *txn_enter(TxnObject *t, PyObject *unused)
{
    (void)unused;
    if (!txn_ready(t))
        return NULL;
    PyObject *old = t->saved.seg;
    t->saved = t->r->c;
    Py_XINCREF(t->saved.seg);
    Py_XDECREF(old);
    return Py_NewRef((PyObject *)t->r);
}

static PyObject *txn_exit(TxnObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *et = nargs > 0 ? args[0] : Py_None, *ev = nargs > 1 ? args[1] : Py_None;
    if (et == Py_None || !PyType_Check(et) ||
        !PyType_IsSubtype((PyTypeObject *)et, (PyTypeObject *)PyExc_Exception))
        Py_RETURN_NONE;
    if (!txn_ready(t) || !reader_ready(t->r))
        return NULL;
    ReaderObject *r = t->r;
    if (t->saved.base + t->saved.pos < r->m->dropped) {
        PyErr_SetString(mb_MembufError, "transaction cannot rewind past bytes that were clipped");
        if (ev != Py_None && PyExceptionInstance_Check(ev)) {     /* raise ... from ev */
            PyObject *et2, *ev2, *tb2;
            PyErr_Fetch(&et2, &ev2, &tb2);
            PyErr_NormalizeException(&et2, &ev2, &tb2);
            PyException_SetCause(ev2, Py_NewRef(ev));
            PyErr_Restore(et2, ev2, tb2);
        }
        return NULL;
    }
    reader_commit(r, &t->saved);
    Py_RETURN_NONE;
}

static int txn_traverse(TxnObject *t, visitproc visit, void *arg)
{
    Py_VISIT(t->r);
    Py_VISIT(t->saved.seg);
    return 0;
}

static int txn_clear(TxnObject *t)
{
    PyObject *seg = t->saved.seg;
    t->saved.seg = NULL;
    t->saved.end = t->saved.pos = 0;
    Py_XDECREF(seg);
    Py_CLEAR(t->r);
    return 0;
}

static void txn_dealloc(TxnObject *t)
{
    PyObject_GC_UnTrack(t);
    txn_clear(t);
    PyObject_GC_Del(t);
}

static PyMethodDef txn_methods[] = {
    {"__enter__", (PyCFunction)txn_enter, METH_NOARGS, "Save the cursor; return the Reader."},
    {"__exit__", (PyCFunction)(void (*)(void))txn_exit, METH_FASTCALL,
     "Rewind the Reader if an exception is leaving the block."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Transaction_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf.reader.Transaction",
    .tp_doc = "A context manager: an exception inside rewinds the Reader to where it began.",
    .tp_basicsize = sizeof(TxnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)txn_dealloc,
    .tp_traverse = (traverseproc)txn_traverse,
    .tp_clear = (inquiry)txn_clear,
    .tp_methods = txn_methods,
};

