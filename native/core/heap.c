/* Heap: one native allocator, owned, and the calls that make chunks from it.
 *
 * membuf.Allocator holds a Heap; its cffi calls use the Heap's handle, so the
 * native allocator lives exactly as long as the Heap. Auto chunks hold their
 * Heap, so an allocator dropped by the user stays alive until the stream
 * memory it lent out is gone; plain chunks hold only their region.
 *
 * Result codes of free() beyond the allocator's own (alloc.h): */
#include "core.h"


static PyObject *heap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"arena_size", "max_arena_size", "max_bytes", "strategy",
                             "hugepages", "seed", NULL};
    Py_ssize_t arena_size, max_arena_size, max_bytes;
    int strategy, hugepages;
    unsigned int seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnniiI:Heap", kwlist, &arena_size,
                                     &max_arena_size, &max_bytes, &strategy, &hugepages, &seed))
        return NULL;
    if (!core_ready())
        return NULL;
    if (arena_size <= 0 || max_arena_size < arena_size || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "Heap needs 0 < arena_size <= max_arena_size, max_bytes >= 0");
        return NULL;
    }
    HeapObject *h = (HeapObject *)type->tp_alloc(type, 0);
    if (!h)
        return NULL;
    h->a = mb_api->alloc_new((size_t)arena_size, (size_t)max_arena_size, (size_t)max_bytes,
                             strategy, hugepages, seed);
    if (!h->a) {
        Py_DECREF(h);
        PyErr_SetString(PyExc_MemoryError, "could not create the native allocator");
        return NULL;
    }
    h->max_bytes = (size_t)max_bytes;
    return (PyObject *)h;
}

static void heap_dealloc(HeapObject *h)
{
    if (h->a)
        mb_api->alloc_delete(h->a);   /* arenas under live plain chunks stay mapped */
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* The MemoryLimitError of a failed malloc, with the counts that explain it. */
static void malloc_failed(HeapObject *h, size_t n, int code)
{
    mb_stats s;
    mb_api->stats(h->a, &s);
    if (code == MB_ELIMIT) {
        char limit[64];
        if (h->max_bytes)
            PyOS_snprintf(limit, sizeof limit, "max_bytes=%zu", h->max_bytes);
        else
            PyOS_snprintf(limit, sizeof limit, "the 1 TiB request limit");
        PyErr_Format(mb_MemoryLimitError,
                     "malloc(%zu) would pass %s: %llu bytes reserved, %llu in use, largest free "
                     "range %llu; free or trim first",
                     n, limit, (unsigned long long)s.reserved, (unsigned long long)s.in_use,
                     (unsigned long long)s.largest_free);
    } else {
        PyErr_Format(mb_MemoryLimitError,
                     "malloc(%zu) failed: the OS refused more memory (%llu bytes reserved)", n,
                     (unsigned long long)s.reserved);
    }
}

/* n fresh bytes as a chunk (auto: gives them back when it dies); NULL with an exception. */
static ChunkObject *heap_chunk_of(HeapObject *h, PyObject *arg, const char *what, int autofree)
{
    size_t n;
    if (core_size_arg(arg, what, &n) < 0)
        return NULL;
    if (n == 0)
        return chunk_new(NULL, 0, NULL, autofree ? h : NULL, 0);
    mb_region *region = NULL;
    uint64_t epoch = 0;
    int err = 0;
    char *p = mb_api->malloc_pinned(h->a, n, &region, &epoch, &err);
    if (!p) {
        malloc_failed(h, n, err);
        return NULL;
    }
    /* n <= 1 TiB here: the allocator refuses larger requests */
    ChunkObject *c = chunk_new(p, (Py_ssize_t)n, region, autofree ? h : NULL, epoch);
    if (!c)
        (void)mb_api->free(h->a, p, n);   /* no object: give the bytes back */
    return c;
}

static PyObject *view_of(ChunkObject *c)
{
    if (!c)
        return NULL;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)c);
    Py_DECREF(c);   /* the view's managed buffer holds the chunk now (or it is gone) */
    return mv;
}

static PyObject *heap_malloc(HeapObject *h, PyObject *arg)
{
    return view_of(heap_chunk_of(h, arg, "malloc", 0));
}

static PyObject *heap_malloc_addr(HeapObject *h, PyObject *arg)
{
    ChunkObject *c = heap_chunk_of(h, arg, "malloc", 0);
    if (!c)
        return NULL;
    PyObject *address = PyLong_FromVoidPtr(c->len ? c->ptr : NULL);
    PyObject *mv = view_of(c);
    if (!address || !mv) {
        Py_XDECREF(address);
        Py_XDECREF(mv);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, mv, address);
    Py_DECREF(mv);
    Py_DECREF(address);
    return pair;
}

static PyObject *heap_auto_chunk(HeapObject *h, PyObject *arg)
{
    return (PyObject *)heap_chunk_of(h, arg, "malloc", 1);
}

static int is_auto(PyObject *obj)
{
    PyObject *base = PyMemoryView_Check(obj) ? PyMemoryView_GET_BASE(obj) : obj;
    return base && Py_TYPE(base) == &Chunk_Type && ((ChunkObject *)base)->heap != NULL;
}

int core_free_buffer(PyObject *obj, Py_buffer *b)
{
    if (PyObject_GetBuffer(obj, b, PyBUF_SIMPLE) < 0) {
        int code = PyErr_ExceptionMatches(PyExc_BufferError) ? HEAP_ENOTCONTIG
                   : PyErr_ExceptionMatches(PyExc_ValueError) ? HEAP_ERELEASED
                                                              : HEAP_ENOTBUFFER;
        PyErr_Clear();
        return code;
    }
    if (b->len && is_auto(obj)) {
        PyBuffer_Release(b);
        return HEAP_EAUTO;
    }
    return 0;
}

/* free(view) -> int: 0, how many arenas were released, or a negative code (alloc.h,
 * core.h's HEAP_E*) that membuf.allocator turns into a FreeError message. */
static int free_view(HeapObject *h, PyObject *arg)
{
    Py_buffer b;
    int r = core_free_buffer(arg, &b);
    if (r)
        return r;
    if (b.len)
        r = mb_api->free(h->a, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return r;
}

static PyObject *heap_free(HeapObject *h, PyObject *arg)
{
    return PyLong_FromLong(free_view(h, arg));
}

/* membuf.allocator's refusal(heap, code, view), bound at import: it raises the FreeError
 * (or MemoryLimitError) that explains a refused free, from the allocator's report. */
static PyObject *free_refusal;

static PyObject *bind_free_refusal(PyObject *self, PyObject *fn)
{
    (void)self;
    Py_XSETREF(free_refusal, Py_NewRef(fn));
    Py_RETURN_NONE;
}

PyMethodDef heap_module_methods[] = {
    {"_bind_free_refusal", bind_free_refusal, METH_O,
     "Bind the function that raises a refused free's error (membuf.allocator)."},
    {NULL, NULL, 0, NULL},
};

/* free_checked(view) -> None: as free, but a refusal raises (through free_refusal), so
 * membuf.Allocator.free is this one C call, with no Python frame on the way. */
static PyObject *heap_free_checked(HeapObject *h, PyObject *arg)
{
    int r = free_view(h, arg);
    if (r >= 0)
        Py_RETURN_NONE;
    if (!free_refusal) {
        PyErr_SetString(PyExc_RuntimeError, "membuf._core is not bound yet (import membuf)");
        return NULL;
    }
    PyObject *code = PyLong_FromLong(r);
    if (!code)
        return NULL;
    PyObject *out = PyObject_CallFunctionObjArgs(free_refusal, (PyObject *)h, code, arg, NULL);
    Py_DECREF(code);
    return out;
}

static PyObject *heap_stats(HeapObject *h, PyObject *unused)
{
    (void)unused;
    mb_stats s;
    mb_api->stats(h->a, &s);
    PyObject *t = PyTuple_New(0
#define MB_STATS_COUNT(name) +1
                              MB_STATS(MB_STATS_COUNT)
#undef MB_STATS_COUNT
    );
    if (!t)
        return NULL;
    Py_ssize_t i = 0;
#define MB_STATS_ITEM(name)                                                  \
    {                                                                        \
        PyObject *v = PyLong_FromUnsignedLongLong((unsigned long long)s.name); \
        if (!v) {                                                            \
            Py_DECREF(t);                                                    \
            return NULL;                                                     \
        }                                                                    \
        PyTuple_SET_ITEM(t, i++, v);                                         \
    }
    MB_STATS(MB_STATS_ITEM)
#undef MB_STATS_ITEM
    return t;
}

/* view_at(address, n): a view of [address, address+n) that holds its arena's region,
 * or None when no arena of this allocator holds those bytes. For debug mode, which
 * keeps (and checks) freed ranges by address. */
static PyObject *heap_view_at(HeapObject *h, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "view_at(address, n) takes 2 arguments");
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    mb_region *region = NULL;
    if (n <= 0 || !p || !mb_api->pin(h->a, p, (size_t)n, &region))
        Py_RETURN_NONE;
    return view_of(chunk_new(p, n, region, NULL, 0));
}

static PyObject *heap_get_epoch(HeapObject *h, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong((unsigned long long)mb_api->epoch(h->a));
}

static PyObject *heap_get_handle(HeapObject *h, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(h->a);
}

static PyMethodDef heap_methods[] = {
    {"malloc", (PyCFunction)heap_malloc, METH_O, "n fresh bytes as a writable memoryview."},
    {"malloc_addr", (PyCFunction)heap_malloc_addr, METH_O, "(view, address) of n fresh bytes."},
    {"auto_chunk", (PyCFunction)heap_auto_chunk, METH_O,
     "n fresh bytes as a Chunk that gives them back when it dies."},
    {"free", (PyCFunction)heap_free, METH_O, "Give back a view's bytes; returns a result code."},
    {"free_checked", (PyCFunction)heap_free_checked, METH_O,
     "Give back a view's bytes; a refusal raises its FreeError."},
    {"stats", (PyCFunction)heap_stats, METH_NOARGS, "The counters, in mb_stats order."},
    {"view_at", (PyCFunction)(void (*)(void))heap_view_at, METH_FASTCALL,
     "A region-holding view of [address, address+n), or None."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef heap_getset[] = {
    {"handle", (getter)heap_get_handle, NULL, "address of the native allocator", NULL},
    {"epoch", (getter)heap_get_epoch, NULL, "how many times the allocator was reset", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Heap_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf._core.Heap",
    .tp_doc = "One native allocator, owned; hands out views of chunks.",
    .tp_basicsize = sizeof(HeapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = heap_new,
    .tp_dealloc = (destructor)heap_dealloc,
    .tp_methods = heap_methods,
    .tp_getset = heap_getset,
};
