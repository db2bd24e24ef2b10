/* RecyclableCore: the storage of membuf.RecyclableMemory and its next_n bump, in C.
 *
 * membuf.RecyclableMemory (membuf/memory.py) subclasses both membuf.Memory and this
 * type (itself a MemoryCore), so its ownership fields are C fields and the hot call,
 * next_n(n), is a C method: a piece carved from the current *run* (one native range
 * reserved by the Python slow path, RecyclableMemory._next_run) is one memoryview
 * sliced off the run's view and appended, with no native call, no Python frame and
 * no per-piece address bookkeeping. The run's whole range is one owned pair in the
 * Python-side `_pairs` list from the moment it is reserved, so recycle() and the
 * finalizer free every piece and the unused tail in one batch of a few ranges.
 *
 * Fields (Python sees them as attributes; membuf.memory alone writes them):
 *   own        list parallel to segs: 0 owned, -1 a reference, -2 held (stream bytes)
 *   run        memoryview of the current run, or NULL when there is none
 *   run_addr   address of the run's first byte
 *   bump       address of the run's first byte not handed out
 *   run_end    address one past the run's last byte
 *   run_size   the next run's size (0: debug mode, one exact malloc per next_n)
 *   refs       holders left to recycle()
 *
 * Invariants:
 *   B1  run == NULL implies bump == run_end (no tail to bump into or to count);
 *   B2  run != NULL implies run_addr <= bump <= run_end and the run's view covers
 *       [run_addr, run_end) exactly;
 *   B3  every byte of [bump, run_end) is owned (inside one of _pairs' ranges) and
 *       not in any segment: stats() leaves those bytes out of in_use.
 * A reset of the allocator drops the run (RecyclableMemory._drop_run under the
 * allocator's tails lock); pieces already handed out keep their run's mapping through
 * their views, so no view ever dangles. */
#include "reader.h"

#include <stddef.h>
#include <structmember.h>

typedef struct RecyclableCoreObject {
    MemCoreObject base;
    PyObject *own;
    PyObject *run;
    unsigned long long run_addr, bump, run_end;
    Py_ssize_t run_size;
    Py_ssize_t refs;
} RecyclableCoreObject;

static PyObject *str_next_run;      /* "_next_run", interned */
static PyObject *owned_mark;        /* 0: the _own entry of an owned segment */

static PyObject *rc_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *own = PyList_New(0);
    if (!own)
        return NULL;
    RecyclableCoreObject *m = (RecyclableCoreObject *)MemCore_Type.tp_new(type, args, kwds);
    if (!m) {
        Py_DECREF(own);
        return NULL;
    }
    m->own = own;
    m->refs = 1;
    return (PyObject *)m;
}

static int rc_traverse(RecyclableCoreObject *m, visitproc visit, void *arg)
{
    Py_VISIT(m->own);
    Py_VISIT(m->run);
    return MemCore_Type.tp_traverse((PyObject *)m, visit, arg);
}

static void rc_dealloc(RecyclableCoreObject *m)
{
    PyObject_GC_UnTrack(m);
    Py_CLEAR(m->own);
    Py_CLEAR(m->run);
    MemCore_Type.tp_dealloc((PyObject *)m);
}

static PyObject *slow_path(RecyclableCoreObject *m, PyObject *arg)
{
    return PyObject_CallMethodOneArg((PyObject *)m, str_next_run, arg);
}

/* Undo a reservation of [at, at + n) if nothing else moved the run meanwhile. */
static void unreserve(RecyclableCoreObject *m, PyObject *run, unsigned long long at, Py_ssize_t n)
{
    if (m->run == run && m->bump == at + (unsigned long long)n)
        m->bump = at;
}

/* next_n(n): n bytes bumped from the run, appended as an owned segment and returned. */
static PyObject *rc_next_n(RecyclableCoreObject *m, PyObject *arg)
{
    if (!m->run || !PyLong_CheckExact(arg))
        return slow_path(m, arg);
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();                  /* too large: the slow path says so */
        return slow_path(m, arg);
    }
    if (n <= 0 || m->bump < m->run_addr || m->bump > m->run_end ||
        (unsigned long long)n > m->run_end - m->bump)
        return slow_path(m, arg);       /* (B2 is checked: _bump is writable from Python) */
    MemCoreObject *base = &m->base;
    PyObject *run = Py_NewRef(m->run), *segs = Py_NewRef(base->segs), *own = Py_NewRef(m->own);
    unsigned long long at = m->bump;
    m->bump = at + (unsigned long long)n;   /* reserved before anything can run Python code */
    PyObject *view = view_slice(run, (Py_ssize_t)(at - m->run_addr), n), *result = NULL;
    if (!view) {
        unreserve(m, run, at, n);
        goto done;
    }
    if (m->run != run || m->bump != at + (unsigned long long)n || base->segs != segs ||
        m->own != own) {
        /* A finalizer run by the allocation recycled, reset or refilled this object:
         * the bytes may be gone. Forget this piece and take the careful path. */
        Py_DECREF(view);
        result = slow_path(m, arg);
        goto done;
    }
    if (PyList_Append(own, owned_mark) < 0) {
        unreserve(m, run, at, n);
        Py_DECREF(view);
        goto done;
    }
    if (PyList_Append(segs, view) < 0) {
        Py_ssize_t k = PyList_GET_SIZE(own);
        (void)PyList_SetSlice(own, k - 1, k, NULL);   /* shrinking a list cannot fail */
        unreserve(m, run, at, n);
        Py_DECREF(view);
        goto done;
    }
    base->size += n;
    result = view;
done:
    Py_DECREF(run);
    Py_DECREF(segs);
    Py_DECREF(own);
    return result;
}

static PyObject *rc_tail_bytes_now(RecyclableCoreObject *m, PyObject *unused)
{
    (void)unused;
    int ok = m->run && m->run_addr <= m->bump && m->bump <= m->run_end;
    return PyLong_FromUnsignedLongLong(ok ? m->run_end - m->bump : 0);
}


static PyObject *rc_get_own(RecyclableCoreObject *m, void *closure)
{
    (void)closure;
    return Py_NewRef(m->own);
}

static int rc_set_own(RecyclableCoreObject *m, PyObject *value, void *closure)
{
    (void)closure;
    if (!value || !PyList_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "RecyclableMemory._own must be a list");
        return -1;
    }
    Py_SETREF(m->own, Py_NewRef(value));
    return 0;
}

static PyObject *rc_get_run(RecyclableCoreObject *m, void *closure)
{
    (void)closure;
    return Py_NewRef(m->run ? m->run : Py_None);
}

/* _run = None drops the run and empties the tail (B1); a run is set by _start_run. */
static int rc_set_run(RecyclableCoreObject *m, PyObject *value, void *closure)
{
    (void)closure;
    if (value && value != Py_None) {
        PyErr_SetString(PyExc_TypeError, "RecyclableMemory._run can only be set to None "
                        "(a run starts with _start_run)");
        return -1;
    }
    Py_CLEAR(m->run);
    m->run_addr = m->bump = m->run_end = 0;
    return 0;
}

/* _start_run(view, used): view (a whole run, 1-D unsigned bytes) becomes the run, its
 * first `used` bytes already handed out. */
static PyObject *rc_start_run(RecyclableCoreObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_start_run(view, used) takes 2 arguments");
        return NULL;
    }
    const unsigned char *p;
    Py_ssize_t len, used = PyLong_AsSsize_t(args[1]);
    if (used == -1 && PyErr_Occurred())
        return NULL;
    if (view_segment(args[0], &p, &len) < 0)
        return NULL;
    if (used < 0 || used > len || !len) {
        PyErr_Format(PyExc_ValueError, "_start_run: %zd bytes used of a %zd-byte run", used, len);
        return NULL;
    }
    Py_XSETREF(m->run, Py_NewRef(args[0]));
    m->run_addr = (unsigned long long)(uintptr_t)p;
    m->bump = m->run_addr + (unsigned long long)used;
    m->run_end = m->run_addr + (unsigned long long)len;
    Py_RETURN_NONE;
}

static PyMethodDef rc_methods[] = {
    {"next_n", (PyCFunction)rc_next_n, METH_O,
     "next_n(n): n fresh bytes, appended as an owned segment and returned (writable).\n\n"
     "Consecutive calls bump through a run: one native range reserved at a time (4 KiB,\n"
     "doubling up to 256 KiB, at least twice n; larger requests are exact), so a burst\n"
     "of small buffers costs one native call per run. recycle() gives back the pieces\n"
     "and the run's unused tail in one batch.\n\n"
     "Raises ValueError (n negative), TypeError (n not an int), MemoryLimitError."},
    {"_run_tail", (PyCFunction)rc_tail_bytes_now, METH_NOARGS,
     "Bytes of the current run not handed out (0 without a run)."},
    {"_start_run", (PyCFunction)(void (*)(void))rc_start_run, METH_FASTCALL,
     "_start_run(view, used): view becomes the run, its first used bytes handed out."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rc_getset[] = {
    {"_own", (getter)rc_get_own, (setter)rc_set_own,
     "parallel to _segs: 0 owned, -1 a reference, -2 held", NULL},
    {"_run", (getter)rc_get_run, (setter)rc_set_run,
     "the current run's memoryview, or None (setting None empties the tail)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef rc_members[] = {
    {"_run_addr", T_ULONGLONG, offsetof(RecyclableCoreObject, run_addr), READONLY,
     "address of the run's first byte"},
    {"_bump", T_ULONGLONG, offsetof(RecyclableCoreObject, bump), 0,
     "address of the run's first byte not handed out"},
    {"_run_end", T_ULONGLONG, offsetof(RecyclableCoreObject, run_end), READONLY,
     "address one past the run's last byte"},
    {"_run_size", T_PYSSIZET, offsetof(RecyclableCoreObject, run_size), 0,
     "the next run's size (0: one exact malloc per next_n)"},
    {"_refs", T_PYSSIZET, offsetof(RecyclableCoreObject, refs), 0, "holders left to recycle()"},
    {NULL, 0, 0, 0, NULL},
};

int bump_exec(PyObject *module)
{
    if (!str_next_run && !(str_next_run = PyUnicode_InternFromString("_next_run")))
        return -1;
    if (!owned_mark && !(owned_mark = PyLong_FromLong(0)))
        return -1;
    if (PyType_Ready(&RecyclableCore_Type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "RecyclableCore", (PyObject *)&RecyclableCore_Type);
}

PyTypeObject RecyclableCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf._core.RecyclableCore",
    .tp_doc = "The ownership fields of a membuf.RecyclableMemory and its next_n bump.",
    .tp_basicsize = sizeof(RecyclableCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_base = &MemCore_Type,
    .tp_new = rc_new,
    .tp_dealloc = (destructor)rc_dealloc,
    .tp_traverse = (traverseproc)rc_traverse,
    .tp_methods = rc_methods,
    .tp_getset = rc_getset,
    .tp_members = rc_members,
};
