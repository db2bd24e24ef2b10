/* Writer: appends encoded fields and payload references (docs/design.md §11).
 *
 * Strategy. Fields are encoded straight into the free tail of the current
 * chunk (a native chunk from the Writer's allocator, else a bytearray), so a
 * write_be or write_leb128 is one bounds check and a few stores. Consecutive
 * writes form one *run*; a run becomes one segment of the output only when
 * something interrupts it: a write_ref (a payload appended by reference, never
 * copied), a full chunk, or take(). take() hands the segments to a Memory (a
 * RecyclableMemory owning the native runs when there is an allocator) and
 * keeps the chunk's unused tail for the next message, so a stream of small
 * messages costs one chunk per chunk_size bytes, not one per message.
 *
 * Ownership. Native runs written but not yet taken, and the current chunk's
 * tail, belong to the Writer: it frees them when it dies (one batch free). A
 * reset of the allocator (its epoch changes) forgets them on the allocator's
 * side; they stay mapped (the Writer's views hold their region) and no one
 * else can be given them, so the Writer keeps their bytes as plain
 * references: nothing written is lost and nothing is freed.
 *
 * Invariants (MB_ASSERT in debug builds):
 *   W1  0 <= run_start <= pos <= cap, and cap == 0 exactly when there is no chunk;
 *   W2  len(segs) == len(addrs); addrs[i] is None for a reference or a bytearray run;
 *   W3  size == the sum of the segments' lengths + (pos - run_start).
 * Not thread-safe: one Writer per task, like a list. */
#include "core.h"

#include "check.h"
#include "view.h"

typedef struct WriterObject {
    PyObject_HEAD
    PyObject *allocator;        /* membuf.Allocator, or NULL: bytearray chunks */
    PyObject *epoch;            /* allocator._epoch when the native ranges were taken */
    Py_ssize_t chunk_size;
    PyObject *segs;             /* list of memoryviews, in order */
    PyObject *addrs;            /* parallel: int address of an owned native run, or None */
    PyObject *cur;              /* memoryview of the whole current chunk, or NULL */
    Py_buffer buf;              /* cur's buffer while cur is set */
    uintptr_t cur_addr;         /* native address of cur's first byte; 0 for a bytearray */
    Py_ssize_t cap, run_start, pos;
    Py_ssize_t size;            /* bytes written since the last take() */
} WriterObject;

/* membuf.memory's helpers, bound by membuf.writer at import (_bind_writer). */
static PyObject *make_memory;   /* (allocator or None, segs, addrs, size) -> Memory */
static PyObject *as_view;       /* bytes-like -> 1-D unsigned-byte memoryview */

static PyObject *bind_writer(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *mm, *av;
    if (!PyArg_ParseTuple(args, "OO:_bind_writer", &mm, &av))
        return NULL;
    Py_XSETREF(make_memory, Py_NewRef(mm));
    Py_XSETREF(as_view, Py_NewRef(av));
    Py_RETURN_NONE;
}

PyMethodDef writer_module_methods[] = {
    {"_bind_writer", bind_writer, METH_VARARGS, "Bind the Memory builders (membuf.writer)."},
    {NULL, NULL, 0, NULL},
};

/* ---- chunks ------------------------------------------------------------------- */

/* 1 when the allocator was reset since our native ranges were taken (they are gone). */
static int epoch_moved(WriterObject *w)
{
    if (!w->allocator || !w->epoch)
        return 0;
    PyObject *now = PyObject_GetAttrString(w->allocator, "_epoch");
    if (!now)
        return -1;
    int same = PyObject_RichCompareBool(now, w->epoch, Py_EQ);
    Py_DECREF(now);
    return same < 0 ? -1 : !same;
}

/* Forget the current chunk (its buffer export released); frees nothing. */
static void drop_chunk(WriterObject *w)
{
    if (w->cur) {
        PyBuffer_Release(&w->buf);
        Py_CLEAR(w->cur);
    }
    w->cur_addr = 0;
    w->cap = w->run_start = w->pos = 0;
}

/* Free native ranges given as a flat [addr, len, ...] list through the allocator. */
static int free_pairs(WriterObject *w, PyObject *pairs)
{
    if (!PyList_GET_SIZE(pairs))
        return 0;
    PyObject *r = PyObject_CallMethod(w->allocator, "_free_batch", "O", pairs);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int append_pair(PyObject *pairs, uintptr_t addr, Py_ssize_t n)
{
    PyObject *a = PyLong_FromVoidPtr((void *)addr), *b = PyLong_FromSsize_t(n);
    int r = (!a || !b || PyList_Append(pairs, a) < 0 || PyList_Append(pairs, b) < 0) ? -1 : 0;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return r;
}

/* Close the open run into a segment. */
static int close_run(WriterObject *w)
{
    if (w->pos == w->run_start)
        return 0;
    PyObject *seg = view_slice(w->cur, w->run_start, w->pos - w->run_start);
    if (!seg)
        return -1;
    PyObject *addr = w->cur_addr ? PyLong_FromVoidPtr((void *)(w->cur_addr + (uintptr_t)w->run_start))
                                 : Py_NewRef(Py_None);
    int r = (!addr || PyList_Append(w->segs, seg) < 0 || PyList_Append(w->addrs, addr) < 0) ? -1 : 0;
    Py_DECREF(seg);
    Py_XDECREF(addr);
    if (r == 0)
        w->run_start = w->pos;
    return r;
}

/* Give back the current native chunk's unused tail and let go of the chunk. */
static int retire_chunk(WriterObject *w)
{
    int r = 0;
    if (w->cur && w->cur_addr && w->pos < w->cap) {
        PyObject *pairs = PyList_New(0);
        if (!pairs)
            return -1;
        r = append_pair(pairs, w->cur_addr + (uintptr_t)w->pos, w->cap - w->pos);
        if (r == 0)
            r = free_pairs(w, pairs);
        Py_DECREF(pairs);
    }
    drop_chunk(w);
    return r;
}

/* The allocator was reset: it forgot our native ranges. Keep their bytes (still mapped,
 * nobody else's) as references that nobody frees. */
static int forget_native(WriterObject *w)
{
    Py_ssize_t n = PyList_GET_SIZE(w->addrs);
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyList_SetItem(w->addrs, i, Py_NewRef(Py_None)) < 0)
            return -1;
    w->cur_addr = 0;
    Py_CLEAR(w->epoch);
    return 0;
}

/* Room for n contiguous bytes at pos, opening a new chunk if needed. */
static int ensure(WriterObject *w, Py_ssize_t n)
{
    if (w->cap - w->pos >= n)
        return 0;
    int moved = epoch_moved(w);     /* first: a reset chunk's tail is not ours to free */
    if (moved < 0 || (moved && forget_native(w) < 0))
        return -1;
    if (close_run(w) < 0 || retire_chunk(w) < 0)
        return -1;
    Py_ssize_t want = n > w->chunk_size ? n : w->chunk_size;
    PyObject *view;
    uintptr_t addr = 0;
    if (w->allocator) {
        PyObject *pair = PyObject_CallMethod(w->allocator, "_malloc_addr", "n", want);
        if (!pair)
            return -1;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_TypeError, "allocator._malloc_addr must return (view, address)");
            return -1;
        }
        view = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
        addr = (uintptr_t)PyLong_AsVoidPtr(PyTuple_GET_ITEM(pair, 1));
        Py_DECREF(pair);
        if (PyErr_Occurred()) {
            Py_DECREF(view);
            return -1;
        }
        if (!w->epoch && !(w->epoch = PyObject_GetAttrString(w->allocator, "_epoch"))) {
            Py_DECREF(view);
            return -1;
        }
    } else {
        PyObject *ba = PyByteArray_FromStringAndSize(NULL, want);
        if (!ba)
            return -1;
        view = PyMemoryView_FromObject(ba);
        Py_DECREF(ba);
        if (!view)
            return -1;
    }
    const unsigned char *seg_p;     /* view_slice needs a 1-D unsigned-byte view */
    Py_ssize_t seg_len;
    if (view_segment(view, &seg_p, &seg_len) < 0 ||
        PyObject_GetBuffer(view, &w->buf, PyBUF_WRITABLE) < 0) {
        Py_DECREF(view);
        return -1;
    }
    w->cur = view;
    w->cur_addr = addr;
    w->cap = w->buf.len;
    w->run_start = w->pos = 0;
    MB_ASSERT(w->cap >= n);
    return 0;
}

static inline unsigned char *room(WriterObject *w, Py_ssize_t n)
{
    if (w->cap - w->pos < n && ensure(w, n) < 0)
        return NULL;
    unsigned char *p = (unsigned char *)w->buf.buf + w->pos;
    w->pos += n;
    w->size += n;
    return p;
}

/* ---- argument checks ------------------------------------------------------------ */

static int int_arg(PyObject *v, const char *what)
{
    if (PyLong_Check(v) && !PyBool_Check(v))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s needs an int, got %s", what, Py_TYPE(v)->tp_name);
    return -1;
}

static int width_arg(PyObject *v, const char *what, int *out)
{
    if (int_arg(v, what) < 0)
        return -1;
    long n = PyLong_AsLong(v);
    if (n == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (n < 1 || n > 8) {
        PyErr_Format(PyExc_ValueError, "%s(n, v) needs 1 <= n <= 8, got n=%S", what, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* v as an unsigned value below 2**bits, else ValueError naming the range. */
static int unsigned_arg(PyObject *v, int bits, const char *what, unsigned long long *out)
{
    if (int_arg(v, what) < 0)
        return -1;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    int bad = x == (unsigned long long)-1 && PyErr_Occurred();
    if (bad)
        PyErr_Clear();
    if (bad || (bits < 64 && x >> bits)) {
        if (bits == 64)
            PyErr_Format(PyExc_ValueError, "%s: %S is out of range 0..2**64-1", what, v);
        else
            PyErr_Format(PyExc_ValueError, "%s: %S is out of range 0..%llu", what, v,
                         (1ULL << bits) - 1);
        return -1;
    }
    *out = x;
    return 0;
}

/* ---- the write calls ---------------------------------------------------------------- */

static PyObject *writer_write_byte(WriterObject *w, PyObject *v)
{
    unsigned long long x;
    if (unsigned_arg(v, 8, "write_byte", &x) < 0)
        return NULL;
    unsigned char *p = room(w, 1);
    if (!p)
        return NULL;
    *p = (unsigned char)x;
    Py_RETURN_NONE;
}

/* n bytes of x, big or little endian (1 <= n <= 8, x below 2**(8n)). */
static int put_fixed(WriterObject *w, int n, int big, unsigned long long x)
{
    unsigned char *p = room(w, n);
    if (!p)
        return -1;
    for (int i = 0; i < n; i++)
        p[big ? n - 1 - i : i] = (unsigned char)(x >> (8 * i));
    return 0;
}

static PyObject *write_fixed(WriterObject *w, PyObject *const *args, Py_ssize_t nargs, int big,
                             const char *what)
{
    int n;
    unsigned long long x;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(n, v) takes 2 arguments, got %zd", what, nargs);
        return NULL;
    }
    if (width_arg(args[0], what, &n) < 0 || unsigned_arg(args[1], 8 * n, what, &x) < 0 ||
        put_fixed(w, n, big, x) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *writer_write_be(WriterObject *w, PyObject *const *args, Py_ssize_t nargs)
{
    return write_fixed(w, args, nargs, 1, "write_be");
}

static PyObject *writer_write_le(WriterObject *w, PyObject *const *args, Py_ssize_t nargs)
{
    return write_fixed(w, args, nargs, 0, "write_le");
}

static int put_leb128(WriterObject *w, unsigned long long x)
{
    unsigned char tmp[10];
    Py_ssize_t n = 0;
    do {
        unsigned char b = x & 0x7F;
        x >>= 7;
        tmp[n++] = x ? (unsigned char)(b | 0x80) : b;
    } while (x);
    unsigned char *p = room(w, n);
    if (!p)
        return -1;
    memcpy(p, tmp, (size_t)n);
    return 0;
}

static PyObject *writer_write_leb128(WriterObject *w, PyObject *v)
{
    unsigned long long x;
    if (unsigned_arg(v, 64, "write_leb128", &x) < 0 || put_leb128(w, x) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *writer_write_sleb128(WriterObject *w, PyObject *v)
{
    if (int_arg(v, "write_sleb128") < 0)
        return NULL;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return NULL;
    if (overflow) {
        PyErr_Format(PyExc_ValueError, "write_sleb128: %S is out of range -2**63..2**63-1", v);
        return NULL;
    }
    unsigned char tmp[10];
    Py_ssize_t n = 0;
    for (;;) {
        unsigned char b = (unsigned char)(x & 0x7F);
        x >>= 7;   /* arithmetic shift: gcc defines it for signed values */
        int done = (x == 0 && !(b & 0x40)) || (x == -1 && (b & 0x40));
        tmp[n++] = done ? b : (unsigned char)(b | 0x80);
        if (done)
            break;
    }
    unsigned char *p = room(w, n);
    if (!p)
        return NULL;
    memcpy(p, tmp, (size_t)n);
    Py_RETURN_NONE;
}

/* write(b): copy a bytes-like in, across chunks as needed. */
static PyObject *writer_write(WriterObject *w, PyObject *obj)
{
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *src = b.buf;
    Py_ssize_t left = b.len;
    while (left) {
        if (w->cap == w->pos && ensure(w, left < w->chunk_size ? left : w->chunk_size) < 0) {
            PyBuffer_Release(&b);
            return NULL;
        }
        Py_ssize_t k = w->cap - w->pos < left ? w->cap - w->pos : left;
        memcpy((char *)w->buf.buf + w->pos, src, (size_t)k);
        w->pos += k;
        w->size += k;
        src += k;
        left -= k;
    }
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* write_ref(view): append by reference: the bytes are never copied. */
static int put_ref(WriterObject *w, PyObject *view, Py_ssize_t n)
{
    if (n > 0 && (close_run(w) < 0 || PyList_Append(w->segs, view) < 0 ||
                  PyList_Append(w->addrs, Py_None) < 0))
        return -1;
    w->size += n;
    return 0;
}

static PyObject *writer_write_ref(WriterObject *w, PyObject *obj)
{
    PyObject *view = view_as_segment(obj, as_view);
    if (!view)
        return NULL;
    Py_ssize_t n = PyObject_Length(view);
    int r = n < 0 ? -1 : put_ref(w, view, n);
    Py_DECREF(view);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* reserve(n): a writable view of the next n bytes, to fill in later. */
static PyObject *writer_reserve(WriterObject *w, PyObject *arg)
{
    size_t n;
    if (core_size_arg(arg, "reserve", &n) < 0)
        return NULL;
    if (n > (size_t)PY_SSIZE_T_MAX / 2) {
        PyErr_Format(mb_MemoryLimitError, "reserve(%zu): too large for one chunk", n);
        return NULL;
    }
    if (ensure(w, (Py_ssize_t)n) < 0)
        return NULL;
    if (!w->cur)                 /* n == 0 with no chunk yet: a writable empty view */
        return PyMemoryView_FromMemory((char *)"", 0, PyBUF_WRITE);
    PyObject *slot = view_slice(w->cur, w->pos, (Py_ssize_t)n);
    if (!slot)
        return NULL;
    w->pos += (Py_ssize_t)n;
    w->size += (Py_ssize_t)n;
    return slot;
}

/* take(): everything written so far as a Memory; the Writer is empty again. */
static PyObject *writer_take(WriterObject *w, PyObject *unused)
{
    (void)unused;
    int moved = epoch_moved(w);
    if (moved < 0 || (moved && forget_native(w) < 0))
        return NULL;
    if (close_run(w) < 0)
        return NULL;
    PyObject *segs = PyList_New(0), *addrs = PyList_New(0);
    if (!segs || !addrs) {
        Py_XDECREF(segs);
        Py_XDECREF(addrs);
        return NULL;
    }
    PyObject *m = PyObject_CallFunction(make_memory, "OOOn", w->allocator ? w->allocator : Py_None,
                                        w->segs, w->addrs, w->size);
    if (!m) {
        Py_DECREF(segs);
        Py_DECREF(addrs);
        return NULL;
    }
    Py_SETREF(w->segs, segs);
    Py_SETREF(w->addrs, addrs);
    w->size = 0;
    return m;
}

static Py_ssize_t writer_len(WriterObject *w) { return w->size; }

/* ---- life cycle ------------------------------------------------------------------ */

static PyObject *writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"allocator", "chunk_size", NULL};
    PyObject *allocator = Py_None, *chunk = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:Writer", kwlist, &allocator, &chunk))
        return NULL;
    Py_ssize_t chunk_size = 4096;
    if (chunk) {
        if (int_arg(chunk, "Writer chunk_size") < 0)
            return NULL;
        chunk_size = PyLong_AsSsize_t(chunk);
        if (chunk_size == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (chunk_size < 1 || chunk_size > (1 << 30)) {
            PyErr_Format(PyExc_ValueError, "Writer chunk_size must be 1..2**30, got %S", chunk);
            return NULL;
        }
    }
    if (!make_memory) {
        PyErr_SetString(PyExc_RuntimeError, "import membuf.writer before making a Writer");
        return NULL;
    }
    if (allocator != Py_None && !PyObject_HasAttrString(allocator, "_malloc_addr")) {
        PyErr_Format(PyExc_TypeError, "Writer allocator must be a membuf.Allocator or None, got %s",
                     Py_TYPE(allocator)->tp_name);
        return NULL;
    }
    WriterObject *w = (WriterObject *)type->tp_alloc(type, 0);
    if (!w)
        return NULL;
    w->allocator = allocator == Py_None ? NULL : Py_NewRef(allocator);
    w->chunk_size = chunk_size;
    w->segs = PyList_New(0);
    w->addrs = PyList_New(0);
    if (!w->segs || !w->addrs) {
        Py_DECREF(w);
        return NULL;
    }
    return (PyObject *)w;
}

/* Give back every native byte not handed out by take(): one batch free. */
static int release_owned(WriterObject *w)
{
    if (!w->allocator || !w->segs)
        return 0;
    int moved = epoch_moved(w);
    if (moved)
        return moved < 0 ? -1 : forget_native(w);
    PyObject *pairs = PyList_New(0);
    if (!pairs)
        return -1;
    int r = 0;
    Py_ssize_t n = PyList_GET_SIZE(w->segs);
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        PyObject *a = PyList_GET_ITEM(w->addrs, i);
        if (a != Py_None)
            r = append_pair(pairs, (uintptr_t)PyLong_AsVoidPtr(a),
                            PyObject_Length(PyList_GET_ITEM(w->segs, i)));
    }
    if (r == 0 && w->cur && w->cur_addr && w->run_start < w->cap)
        r = append_pair(pairs, w->cur_addr + (uintptr_t)w->run_start, w->cap - w->run_start);
    drop_chunk(w);
    if (r == 0) {
        PyList_SetSlice(w->segs, 0, n, NULL);
        PyList_SetSlice(w->addrs, 0, n, NULL);
        w->size = 0;
        r = free_pairs(w, pairs);
    }
    Py_DECREF(pairs);
    return r;
}

static int writer_traverse(WriterObject *w, visitproc visit, void *arg)
{
    Py_VISIT(w->allocator);
    Py_VISIT(w->segs);
    Py_VISIT(w->addrs);
    Py_VISIT(w->cur);
    return 0;
}

static int writer_clear(WriterObject *w)
{
    drop_chunk(w);
    Py_CLEAR(w->segs);
    Py_CLEAR(w->addrs);
    Py_CLEAR(w->allocator);
    Py_CLEAR(w->epoch);
    return 0;
}

static void writer_dealloc(WriterObject *w)
{
    PyObject_GC_UnTrack(w);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (release_owned(w) < 0)
        PyErr_WriteUnraisable((PyObject *)w);
    PyErr_Restore(type, value, tb);
    writer_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *writer_close(WriterObject *w, PyObject *unused)
{
    (void)unused;
    if (release_owned(w) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *writer_repr(WriterObject *w)
{
    return PyUnicode_FromFormat("<membuf.Writer %zd bytes in %zd segments%s>", w->size,
                                PyList_GET_SIZE(w->segs) + (w->pos > w->run_start),
                                w->allocator ? ", native" : "");
}

/* ---- for the framers' encode (framer.c) ------------------------------------------ */

int mb_writer_put_field(PyObject *wo, int width, int little, unsigned long long v)
{
    WriterObject *w = (WriterObject *)wo;
    MB_ASSERT(Py_IS_TYPE(wo, &Writer_Type) && width >= 0 && width <= 8);
    return width ? put_fixed(w, width, !little, v) : put_leb128(w, v);
}

int mb_writer_put_ref(PyObject *wo, PyObject *view, Py_ssize_t n)
{
    MB_ASSERT(Py_IS_TYPE(wo, &Writer_Type));
    return put_ref((WriterObject *)wo, view, n);
}

PyObject *mb_writer_take(PyObject *wo)
{
    MB_ASSERT(Py_IS_TYPE(wo, &Writer_Type));
    return writer_take((WriterObject *)wo, NULL);
}

static PyMethodDef writer_methods[] = {
    {"write", (PyCFunction)writer_write, METH_O, "Copy a bytes-like in."},
    {"write_ref", (PyCFunction)writer_write_ref, METH_O, "Append a bytes-like by reference."},
    {"write_byte", (PyCFunction)writer_write_byte, METH_O, "One byte, 0..255."},
    {"write_be", (PyCFunction)(void (*)(void))writer_write_be, METH_FASTCALL,
     "write_be(n, v): v as n big-endian bytes (1 <= n <= 8)."},
    {"write_le", (PyCFunction)(void (*)(void))writer_write_le, METH_FASTCALL,
     "write_le(n, v): v as n little-endian bytes (1 <= n <= 8)."},
    {"write_leb128", (PyCFunction)writer_write_leb128, METH_O, "An unsigned LEB128 varint."},
    {"write_sleb128", (PyCFunction)writer_write_sleb128, METH_O, "A signed LEB128 varint."},
    {"reserve", (PyCFunction)writer_reserve, METH_O, "A writable view of the next n bytes."},
    {"take", (PyCFunction)writer_take, METH_NOARGS, "Everything written so far, as a Memory."},
    {"close", (PyCFunction)writer_close, METH_NOARGS,
     "Give back the native bytes not taken (also done when the Writer dies)."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods writer_as_sequence = {
    .sq_length = (lenfunc)writer_len,
};

PyTypeObject Writer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf.Writer",
    .tp_doc = "Appends encoded fields and payload references; take() returns them as a Memory.",
    .tp_basicsize = sizeof(WriterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = writer_new,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_repr = (reprfunc)writer_repr,
    .tp_as_sequence = &writer_as_sequence,
    .tp_methods = writer_methods,
};
