/* Chunk: a buffer exporter over one native range.
 *
 * Every view membuf hands out is a memoryview of a Chunk, or a slice of one,
 * so the view's managed buffer keeps the Chunk alive, and the Chunk keeps its
 * region mapped (region.h). A plain chunk (Allocator.malloc) gives nothing
 * back when it dies: freeing is the user's explicit call. An auto chunk (the
 * stream layer's receive chunks and joined frames) gives its bytes back to
 * its Heap when it dies, that is when the owner and every view have let go.
 *
 * Invariants (MB_ASSERT in debug builds):
 *   C1  len >= 0, and ptr is non-NULL;
 *   C2  region == NULL only for an empty chunk;
 *   C3  exports >= 0; a chunk with live exports is alive (the exports hold it);
 *   C4  disowned implies heap != NULL (only auto chunks are disowned). */
#include "core.h"

#include "check.h"

static char empty_byte;

ChunkObject *chunk_new(char *ptr, Py_ssize_t len, mb_region *region, HeapObject *heap,
                       uint64_t epoch)
{
    ChunkObject *c = PyObject_New(ChunkObject, &Chunk_Type);
    if (!c) {
        if (region)
            mb_api->region_release(region);
        return NULL;
    }
    c->ptr = ptr ? ptr : &empty_byte;
    c->len = len;
    c->exports = 0;
    c->region = region;
    c->heap = heap;
    Py_XINCREF(heap);
    c->epoch = epoch;
    c->disowned = 0;
    MB_ASSERT(c->len >= 0 && (c->region || c->len == 0));
    return c;
}

static void chunk_dealloc(ChunkObject *c)
{
    MB_ASSERT(c->exports == 0);     /* C3: an export holds a reference */
    if (c->heap) {
        /* A refusal here means the user freed these bytes by hand through a wrapper
         * free() could not see through; the index refuses it, so nothing breaks. */
        (void)mb_api->chunk_done(c->heap->a, c->ptr, c->len, c->epoch, c->disowned);
        Py_DECREF(c->heap);
    }
    if (c->region)
        mb_api->region_release(c->region);
    PyObject_Free(c);
}

static int chunk_getbuffer(ChunkObject *c, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)c, c->ptr, c->len, 0, flags) < 0)
        return -1;
    c->exports++;
    return 0;
}

static void chunk_releasebuffer(ChunkObject *c, Py_buffer *view)
{
    (void)view;
    c->exports--;
    MB_ASSERT(c->exports >= 0);
}

static PyBufferProcs chunk_as_buffer = {
    (getbufferproc)chunk_getbuffer,
    (releasebufferproc)chunk_releasebuffer,
};

/* disown(): the owner lets go; the bytes count as pinned until the chunk dies. */
static PyObject *chunk_disown(ChunkObject *c, PyObject *unused)
{
    (void)unused;
    if (!c->heap) {
        PyErr_SetString(PyExc_ValueError, "only a chunk that frees itself can be disowned");
        return NULL;
    }
    if (!c->disowned) {
        c->disowned = 1;
        mb_api->disown(c->heap->a, (size_t)c->len, c->epoch);
    }
    Py_RETURN_NONE;
}

/* shrink(k): give bytes k.. back now (an auto chunk that received fewer bytes than it
 * could hold). Only before disown and before any view of the tail exists: the caller
 * (the stream layer) guarantees the latter; views of it would show reused bytes. */
static PyObject *chunk_shrink(ChunkObject *c, PyObject *arg)
{
    size_t want;
    if (core_size_arg(arg, "shrink", &want) < 0)
        return NULL;
    if (!c->heap || c->disowned || want > (size_t)c->len) {
        PyErr_Format(PyExc_ValueError, "shrink keeps 0..%zd bytes of an owned auto chunk, asked for %zu",
                     c->len, want);
        return NULL;
    }
    Py_ssize_t k = (Py_ssize_t)want;
    if (k < c->len) {
        int r = mb_api->free(c->heap->a, c->ptr + k, (size_t)(c->len - k));
        if (r < 0) {
            PyErr_Format(mb_FreeError, "shrinking a chunk of %zd bytes to %zd was refused (code %d)",
                         c->len, k, r);
            return NULL;
        }
        c->len = k;
    }
    Py_RETURN_NONE;
}

static PyObject *chunk_get_address(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(c->len ? c->ptr : NULL);
}

static PyObject *chunk_get_nbytes(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(c->len);
}

static PyObject *chunk_get_exports(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(c->exports);
}

static PyObject *chunk_get_auto(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyBool_FromLong(c->heap != NULL);
}

static PyObject *chunk_get_epoch(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong((unsigned long long)c->epoch);
}

static PyObject *chunk_get_disowned(ChunkObject *c, void *closure)
{
    (void)closure;
    return PyBool_FromLong(c->disowned);
}

static PyObject *chunk_repr(ChunkObject *c)
{
    return PyUnicode_FromFormat("<membuf._core.Chunk %zd bytes%s%s exports=%zd>", c->len,
                                c->heap ? " auto" : "", c->disowned ? " disowned" : "",
                                c->exports);
}

static PyMethodDef chunk_methods[] = {
    {"disown", (PyCFunction)chunk_disown, METH_NOARGS,
     "The owner lets go: the bytes go back when the last view dies (counted as pinned)."},
    {"shrink", (PyCFunction)chunk_shrink, METH_O, "Give bytes k.. back now (owner only)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef chunk_getset[] = {
    {"address", (getter)chunk_get_address, NULL, "address of the first byte (0 when empty)", NULL},
    {"nbytes", (getter)chunk_get_nbytes, NULL, "length in bytes", NULL},
    {"exports", (getter)chunk_get_exports, NULL, "live buffer exports", NULL},
    {"auto", (getter)chunk_get_auto, NULL, "frees itself when it dies", NULL},
    {"disowned", (getter)chunk_get_disowned, NULL, "the owner let go", NULL},
    {"epoch", (getter)chunk_get_epoch, NULL, "the allocator's reset count when the bytes were taken",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Chunk_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf._core.Chunk",
    .tp_doc = "A native byte range exported through the buffer protocol; views keep it alive.",
    .tp_basicsize = sizeof(ChunkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)chunk_dealloc,
    .tp_repr = (reprfunc)chunk_repr,
    .tp_as_buffer = &chunk_as_buffer,
    .tp_methods = chunk_methods,
    .tp_getset = chunk_getset,
};
