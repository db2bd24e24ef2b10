/* Reader: a cursor over a Memory with atomic, zero-copy reads (docs/design.md §4).
 *
 * Strategy. The same algorithm as the pure-Python reference
 * (membuf.reader.PyReader), with the cursor state in C (reader.h): every read first
 * tries a fast path on the current segment (one bounds check, one liveness check of
 * the segment's view, then the bytes), and otherwise takes one shared slow path that
 * checks what remains *before* moving, walks a local copy of the cursor across
 * segments and commits it only when the read has succeeded, so NeedMore and
 * MalformedError consume nothing. Names, results and messages are those of the
 * reference; tests/test_differential.py holds the two to that.
 *
 * Arguments. A count must be an int (not a bool): TypeError otherwise, before
 * anything is looked at; a negative count is MalformedError; a count beyond what is
 * buffered is NeedMore with `.needed` the bytes still missing (also for counts past
 * 2**63, which no Memory can hold). */
#include "reader.h"

#include <limits.h>
#include <string.h>

PyObject *mb_NeedMore, *mb_MalformedError, *mb_MembufError;
PyTypeObject *mb_Memory;
PyObject *mb_as_view;
unsigned long long mb_segment_visits;

/* ---- errors and arguments ------------------------------------------------------- */

/* The name of obj's type, for messages (a new reference). */
PyObject *type_name(PyObject *obj)
{
    return PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
}

static PyObject *raise_need(PyObject *msg, PyObject *needed)
{
    if (msg && needed) {
        PyObject *exc = PyObject_CallFunctionObjArgs(mb_NeedMore, msg, needed, NULL);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    Py_XDECREF(msg);
    Py_XDECREF(needed);
    return NULL;
}

PyObject *need_more(const char *what, long long n, long long have)
{
    return raise_need(PyUnicode_FromFormat("%s needs %lld bytes, %lld are buffered; retry when "
                                           "%lld more arrive", what, n, have, n - have),
                      PyLong_FromLongLong(n - have));
}

/* NeedMore for a count past LLONG_MAX (`arg`, a Python int): "what(arg) needs arg bytes". */
static PyObject *need_more_big(const char *what, PyObject *arg, long long have)
{
    PyObject *h = PyLong_FromLongLong(have);
    PyObject *needed = h ? PyNumber_Subtract(arg, h) : NULL;
    Py_XDECREF(h);
    if (!needed)
        return NULL;
    return raise_need(PyUnicode_FromFormat("%s(%S) needs %S bytes, %lld are buffered; retry when "
                                           "%S more arrive", what, arg, arg, have, needed),
                      needed);
}

/* TypeError "{what} size must be an int, got {type}"; returns -1. */
static int size_type_error(const char *what, PyObject *arg)
{
    PyObject *name = type_name(arg);
    if (name) {
        PyErr_Format(PyExc_TypeError, "%s size must be an int, got %U", what, name);
        Py_DECREF(name);
    }
    return -1;
}

/* A count argument: 0 with *n (0 <= *n <= LLONG_MAX), 1 when it is past LLONG_MAX,
 * -1 with TypeError (not an int, or a bool) or MalformedError (negative) set. */
static int size_arg(PyObject *arg, const char *what, long long *n)
{
    if (!PyLong_Check(arg) || PyBool_Check(arg))
        return size_type_error(what, arg);
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (!overflow && v < 0)) {
        PyErr_Format(mb_MalformedError, "%s size must be an int >= 0, got %R", what, arg);
        return -1;
    }
    if (overflow)
        return 1;
    *n = v;
    return 0;
}

/* After size_arg: raise NeedMore unless n (big: past LLONG_MAX) bytes are buffered. */
static int size_available(ReaderObject *r, PyObject *arg, const char *what, long long n, int big)
{
    long long have = cursor_remaining(r->m, &r->c);
    if (big) {
        need_more_big(what, arg, have);
        return -1;
    }
    if (n > have) {
        char label[64];
        PyOS_snprintf(label, sizeof label, "%s(%lld)", what, n);
        need_more(label, n, have);
        return -1;
    }
    return 0;
}

/* ---- the Reader object -------------------------------------------------------------- */

static PyObject *reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return type->tp_alloc(type, 0);     /* zeroed: m == NULL until __init__ */
}

static void reader_drop_state(ReaderObject *r)
{
    mb_cursor c = r->c;
    PyObject *m = (PyObject *)r->m, *memo = r->memo_sub;
    memset(&r->c, 0, sizeof r->c);
    r->m = NULL;
    r->memo_sub = NULL;
    r->split_serial = 0;
    Py_XDECREF(c.seg);
    Py_XDECREF(memo);
    Py_XDECREF(m);
}

static int reader_init(ReaderObject *r, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"memory", NULL};
    PyObject *arg = Py_None, *m;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Reader", kwlist, &arg))
        return -1;
    if (!mb_Memory) {
        PyErr_SetString(PyExc_RuntimeError, "membuf._core's Reader is not bound yet (import membuf)");
        return -1;
    }
    if (arg == Py_None)
        m = PyObject_CallNoArgs((PyObject *)mb_Memory);
    else if (PyObject_TypeCheck(arg, &MemCore_Type))
        m = Py_NewRef(arg);
    else
        m = PyObject_CallOneArg((PyObject *)mb_Memory, arg);   /* any bytes-like, by reference */
    if (!m)
        return -1;
    reader_drop_state(r);
    r->m = (MemCoreObject *)m;
    r->start = r->m->dropped;
    cursor_park(r->m, &r->c);
    return reader_settle(r) < 0 ? -1 : 0;
}

static int reader_traverse(ReaderObject *r, visitproc visit, void *arg)
{
    Py_VISIT(r->m);
    Py_VISIT(r->c.seg);
    Py_VISIT(r->memo_sub);
    return 0;
}

static int reader_clear(ReaderObject *r)
{
    reader_drop_state(r);
    return 0;
}

static void reader_dealloc(ReaderObject *r)
{
    PyObject_GC_UnTrack(r);
    reader_drop_state(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *reader_from_bytes(PyObject *cls, PyObject *args)
{
    if (!mb_Memory) {
        PyErr_SetString(PyExc_RuntimeError, "membuf._core's Reader is not bound yet (import membuf)");
        return NULL;
    }
    PyObject *m = PyObject_Call((PyObject *)mb_Memory, args, NULL);
    if (!m)
        return NULL;
    PyObject *r = PyObject_CallOneArg(cls, m);
    Py_DECREF(m);
    return r;
}

static Py_ssize_t reader_length(ReaderObject *r)
{
    long long n = r->m ? cursor_remaining(r->m, &r->c) : 0;
    return n > 0 ? (Py_ssize_t)n : 0;
}

static PyObject *reader_get_offset(ReaderObject *r, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(r->c.base + r->c.pos - r->start);
}

static PyObject *reader_get_memory(ReaderObject *r, void *closure)
{
    (void)closure;
    if (!reader_ready(r))
        return NULL;
    return Py_NewRef((PyObject *)r->m);
}

static PyObject *reader_repr(ReaderObject *r)
{
    if (!r->m)
        return PyUnicode_FromString("<Reader (not initialised)>");
    return PyUnicode_FromFormat("<Reader offset=%lld remaining=%lld over %R>",
                                r->c.base + r->c.pos - r->start,
                                cursor_remaining(r->m, &r->c), (PyObject *)r->m);
}

/* _park(): put the cursor before the Memory's first segment, holding no view. */
static PyObject *reader_park(ReaderObject *r, PyObject *unused)
{
    (void)unused;
    if (!reader_ready(r))
        return NULL;
    mb_cursor c;
    cursor_park(r->m, &c);
    r->split_serial = 0;
    reader_commit(r, &c);
    Py_RETURN_NONE;
}

/* ---- integers ------------------------------------------------------------------------- */

static PyObject *reader_read_byte(ReaderObject *r, PyObject *unused)
{
    (void)unused;
    mb_cursor *c = &r->c;
    if (c->pos < c->end && view_alive(c->seg))
        return PyLong_FromLong(c->p[c->pos++]);
    if (!reader_ready(r))
        return NULL;
    int k = reader_settle(r);
    if (k < 0)
        return NULL;
    if (!k)
        return need_more("read_byte()", 1, cursor_remaining(r->m, c));
    return PyLong_FromLong(c->p[c->pos++]);
}

static PyObject *reader_peek_byte(ReaderObject *r, PyObject *unused)
{
    (void)unused;
    mb_cursor *c = &r->c;
    if (c->pos < c->end && view_alive(c->seg))
        return PyLong_FromLong(c->p[c->pos]);
    if (!reader_ready(r))
        return NULL;
    int k = reader_settle(r);
    if (k < 0)
        return NULL;
    if (!k)
        return need_more("peek_byte()", 1, cursor_remaining(r->m, c));
    return PyLong_FromLong(c->p[c->pos]);
}

static PyObject *read_fixed(ReaderObject *r, PyObject *arg, int big_endian)
{
    const char *name = big_endian ? "read_be" : "read_le";
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyObject *t = type_name(arg);
        if (t) {
            PyErr_Format(PyExc_TypeError, "%s(n) needs an int n, got %U", name, t);
            Py_DECREF(t);
        }
        return NULL;
    }
    int overflow;
    long n = PyLong_AsLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || n < 1 || n > 8) {
        PyErr_Format(mb_MalformedError, "%s(n) reads 1 to 8 bytes, got n=%R", name, arg);
        return NULL;
    }
    mb_cursor *c = &r->c;
    unsigned char buf[8];
    const unsigned char *src;
    if (c->pos + n <= c->end && view_alive(c->seg)) {
        src = c->p + c->pos;
        c->pos += n;
    } else {
        if (!reader_ready(r))
            return NULL;
        int k = reader_settle(r);
        if (k < 0)
            return NULL;
        if (k && n <= c->end - c->pos) {
            src = c->p + c->pos;
            c->pos += n;
        } else {
            long long have = cursor_remaining(r->m, c);
            if (n > have) {
                char label[16];
                PyOS_snprintf(label, sizeof label, "%s(%ld)", name, n);
                return need_more(label, n, have);
            }
            mb_cursor w = *c;
            if (cursor_copy(r->m, &w, n, buf) < 0)
                return NULL;
            reader_commit(r, &w);
            src = buf;
        }
    }
    unsigned long long v = 0;
    if (big_endian)
        for (long i = 0; i < n; i++)
            v = v << 8 | src[i];
    else
        for (long i = n - 1; i >= 0; i--)
            v = v << 8 | src[i];
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *reader_read_be(ReaderObject *r, PyObject *arg)
{
    return read_fixed(r, arg, 1);
}

static PyObject *reader_read_le(ReaderObject *r, PyObject *arg)
{
    return read_fixed(r, arg, 0);
}

/* "ff ff 02": bytes as bytes.hex(" ") writes them (n <= 10). */
static void hex_bytes(const unsigned char *b, int n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < n; i++) {
        if (i)
            *o++ = ' ';
        *o++ = digits[b[i] >> 4];
        *o++ = digits[b[i] & 15];
    }
    *o = 0;
}

/* Decode LEB128 from b[0:n] (all the bytes available, n <= max_bytes or the first
 * max_bytes of more): 1 done, 0 not terminated within n bytes, -1 MalformedError. */
static int leb128_decode(const unsigned char *b, int n, int is_signed, int max_bytes,
                         unsigned long long *value, int *length)
{
    const char *name = is_signed ? "read_sleb128()" : "read_leb128()";
    unsigned long long v = 0;
    int lim = n < max_bytes ? n : max_bytes;
    for (int i = 0; i < lim; i++) {
        unsigned byte = b[i];
        v |= (unsigned long long)(byte & 0x7f) << (7 * i);      /* 7 * i <= 63 */
        if (byte < 0x80) {
            int len = i + 1;
            if (len == 10 && (is_signed ? (byte != 0 && byte != 0x7f) : byte > 1)) {
                char hex[32];
                hex_bytes(b, 10, hex);
                PyErr_Format(mb_MalformedError, "%s: a LEB128 value over 64 bits (%s)", name, hex);
                return -1;
            }
            if (is_signed && (byte & 0x40) && 7 * len < 64)
                v |= ~0ULL << (7 * len);
            *value = v;
            *length = len;
            return 1;
        }
    }
    if (n >= max_bytes) {
        char hex[32];
        hex_bytes(b, max_bytes, hex);
        PyErr_Format(mb_MalformedError, "%s: a LEB128 value longer than %d bytes (%s ...)", name,
                     max_bytes, hex);
        return -1;
    }
    return 0;
}

int cursor_peek_leb128(const MemCoreObject *m, const mb_cursor *c, int is_signed, int max_bytes,
                       unsigned long long *value, int *length)
{
    Py_ssize_t avail = c->end - c->pos;
    if (avail > 0 && view_alive(c->seg)) {
        int n = avail < max_bytes ? (int)avail : max_bytes;
        int k = leb128_decode(c->p + c->pos, n, is_signed, max_bytes, value, length);
        if (k)
            return k;
    }
    long long have = cursor_remaining(m, c);
    int n = have < max_bytes ? (int)(have > 0 ? have : 0) : max_bytes;
    unsigned char buf[10];
    mb_cursor w = *c;
    if (cursor_copy(m, &w, n, buf) < 0)
        return -1;
    int k = leb128_decode(buf, n, is_signed, max_bytes, value, length);
    if (k)
        return k;
    need_more(is_signed ? "read_sleb128()" : "read_leb128()", n + 1, have);
    return 0;
}

/* The max_bytes argument of the LEB128 reads: 0 with *out, -1 with an error set. */
static int max_bytes_arg(const char *name, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, int *out)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *arg = NULL;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (max_bytes), got %zd", name,
                     nargs + nkw);
        return -1;
    }
    if (nargs)
        arg = args[0];
    else if (nkw) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, 0);
        if (!PyUnicode_Check(key) || PyUnicode_CompareWithASCIIString(key, "max_bytes") != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", name, key);
            return -1;
        }
        arg = args[0];
    }
    *out = 10;
    if (!arg)
        return 0;
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyObject *t = type_name(arg);
        if (t) {
            PyErr_Format(PyExc_TypeError, "%s(max_bytes) needs an int, got %U", name, t);
            Py_DECREF(t);
        }
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(arg, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 1 || v > 10) {
        PyErr_Format(mb_MalformedError, "%s(max_bytes) reads 1 to 10 bytes, got max_bytes=%R",
                     name, arg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static PyObject *read_varint(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames, int is_signed)
{
    int max_bytes = 10;
    if ((nargs || kwnames) &&
        max_bytes_arg(is_signed ? "read_sleb128" : "read_leb128", args, nargs, kwnames,
                      &max_bytes) < 0)
        return NULL;
    mb_cursor *c = &r->c;
    unsigned long long v;
    int len;
    Py_ssize_t avail = c->end - c->pos;
    int k = 0;
    if (avail > 0 && view_alive(c->seg)) {              /* the common case: in this segment */
        k = leb128_decode(c->p + c->pos, avail < max_bytes ? (int)avail : max_bytes, is_signed,
                          max_bytes, &v, &len);
        if (k < 0)
            return NULL;
        if (k)
            c->pos += len;
    }
    if (!k) {
        if (!reader_ready(r))
            return NULL;
        k = cursor_peek_leb128(r->m, c, is_signed, max_bytes, &v, &len);
        if (k <= 0)
            return NULL;
        mb_cursor w = *c;
        if (cursor_advance(r->m, &w, len) < 0)
            return NULL;
        reader_commit(r, &w);
    }
    return is_signed ? PyLong_FromLongLong((long long)v) : PyLong_FromUnsignedLongLong(v);
}

static PyObject *reader_read_leb128(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    return read_varint(r, args, nargs, kwnames, 0);
}

static PyObject *reader_read_sleb128(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    return read_varint(r, args, nargs, kwnames, 1);
}

/* ---- bytes ------------------------------------------------------------------------------ */

/* read_bytes and peek: a copy of the next n bytes, consumed or not. */
static PyObject *copy_bytes(ReaderObject *r, PyObject *arg, const char *what, int consume)
{
    long long n = 0;
    int big = size_arg(arg, what, &n);
    if (big < 0)
        return NULL;
    mb_cursor *c = &r->c;
    if (!big && n == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (!big && n <= c->end - c->pos && view_alive(c->seg)) {
        PyObject *out = PyBytes_FromStringAndSize((const char *)c->p + c->pos, (Py_ssize_t)n);
        if (out && consume)
            c->pos += (Py_ssize_t)n;
        return out;
    }
    if (!reader_ready(r) || size_available(r, arg, what, n, big) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!out)
        return NULL;
    mb_cursor w = *c;
    if (cursor_copy(r->m, &w, n, (unsigned char *)PyBytes_AS_STRING(out)) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if (consume)
        reader_commit(r, &w);
    return out;
}

static PyObject *reader_read_bytes(ReaderObject *r, PyObject *arg)
{
    return copy_bytes(r, arg, "read_bytes", 1);
}

static PyObject *reader_peek(ReaderObject *r, PyObject *arg)
{
    return copy_bytes(r, arg, "peek", 0);
}

static PyObject *reader_skip(ReaderObject *r, PyObject *arg)
{
    long long n = 0;
    int big = size_arg(arg, "skip", &n);
    if (big < 0)
        return NULL;
    mb_cursor *c = &r->c;
    if (!big && n <= c->end - c->pos) {
        c->pos += (Py_ssize_t)n;
        Py_RETURN_NONE;
    }
    if (!reader_ready(r) || size_available(r, arg, "skip", n, big) < 0)
        return NULL;
    mb_cursor w = *c;
    if (cursor_advance(r->m, &w, n) < 0)
        return NULL;
    reader_commit(r, &w);
    Py_RETURN_NONE;
}

/* take / range: the views of the next n bytes, consumed; as a Memory or an iterator. */
static PyObject *take_views(ReaderObject *r, PyObject *arg, const char *what, int as_memory)
{
    long long n = 0;
    int big = size_arg(arg, what, &n);
    if (big < 0)
        return NULL;
    mb_cursor *c = &r->c;
    mb_cursor was = *c;
    PyObject *list;
    if (as_memory && !big && 0 < n && n <= c->end - c->pos && view_alive(c->seg)) {
        PyObject *seg = Py_NewRef(c->seg);              /* one view: the fast path */
        PyObject *v = view_slice(seg, c->pos, (Py_ssize_t)n);
        list = v ? PyList_New(1) : NULL;
        if (!list) {
            Py_XDECREF(v);
            Py_DECREF(seg);
            return NULL;
        }
        PyList_SET_ITEM(list, 0, v);
        PyObject *mem = memory_from_list(list, (Py_ssize_t)n);
        if (mem && !cursor_same(&was, c)) {
            Py_CLEAR(mem);
            reader_moved(what);
        }
        if (mem)
            c->pos += (Py_ssize_t)n;
        Py_DECREF(seg);
        return mem;
    }
    if (!reader_ready(r) || size_available(r, arg, what, n, big) < 0)
        return NULL;
    mb_pieces ps;
    pieces_init(&ps);
    mb_cursor w = *c;
    if (cursor_pieces(r->m, &w, n, &ps) < 0) {
        pieces_free(&ps);
        return NULL;
    }
    pieces_own(&ps);
    Py_XINCREF(w.seg);                                   /* w is owned from here on */
    list = pieces_views(&ps);
    PyObject *out = NULL;
    if (list)
        out = as_memory ? memory_from_list(list, (Py_ssize_t)n) : PyObject_GetIter(list);
    if (list && !as_memory)
        Py_DECREF(list);
    pieces_free(&ps);
    if (out && !cursor_same(&was, c)) {
        Py_CLEAR(out);
        reader_moved(what);
    }
    if (out)
        reader_commit_owned(r, &w);
    else
        Py_XDECREF(w.seg);
    return out;
}

static PyObject *reader_take(ReaderObject *r, PyObject *arg)
{
    return take_views(r, arg, "take", 1);
}

static PyObject *reader_range(ReaderObject *r, PyObject *arg)
{
    return take_views(r, arg, "range", 0);
}

static PyObject *reader_unread(ReaderObject *r, PyObject *arg)
{
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        size_type_error("unread", arg);
        return NULL;
    }
    if (!reader_ready(r))
        return NULL;
    MemCoreObject *m = r->m;
    mb_cursor w = r->c;
    long long here = w.base + w.pos;
    long long floor = r->start > m->dropped ? r->start : m->dropped;
    long long back = here - floor;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || n < 0 || n > back) {
        PyErr_Format(mb_MalformedError, "unread(n) can step back 0 to %lld bytes here, got n=%R",
                     back, arg);
        return NULL;
    }
    while (n > w.pos) {
        n -= w.pos;
        Py_ssize_t i = w.si - 1 - m->dsegs;
        const unsigned char *p;
        Py_ssize_t len;
        if (i < 0 || i >= PyList_GET_SIZE(m->segs)) {
            PyErr_SetString(PyExc_RuntimeError, "unread: the Memory's segments do not match its "
                            "counters (its private state was edited); nothing was moved");
            return NULL;
        }
        PyObject *prev = PyList_GET_ITEM(m->segs, i);
        if (view_segment(prev, &p, &len) < 0)
            return NULL;
        w.si -= 1;
        w.seg = prev;
        w.p = p;
        w.end = w.pos = len;
        w.base -= len;
    }
    w.pos -= (Py_ssize_t)n;
    reader_commit(r, &w);
    Py_RETURN_NONE;
}

/* The writable contiguous bytes of `buf` for read_into (the reference's as_view rules). */
static int writable_buffer(PyObject *buf, PyObject **view, Py_buffer *out)
{
    PyObject *v;
    if (PyMemoryView_Check(buf) || PyByteArray_Check(buf))
        v = Py_NewRef(buf);
    else if (!(v = PyObject_CallOneArg(mb_as_view, buf)))
        return -1;
    if (PyMemoryView_Check(v)) {
        const Py_buffer *b = PyMemoryView_GET_BUFFER(v);
        int simple = view_alive(v) && b->ndim == 1 && b->itemsize == 1 &&
                     (!b->strides || b->strides[0] == 1);
        if (!simple && v == buf) {                      /* as_view's refusal and message */
            Py_DECREF(v);
            if (!(v = PyObject_CallOneArg(mb_as_view, buf)))
                return -1;
        }
        if (PyMemoryView_GET_BUFFER(v)->readonly) {
            PyObject *t = type_name(buf);
            if (t) {
                PyErr_Format(PyExc_TypeError, "read_into needs a writable buffer, got a read-only %U", t);
                Py_DECREF(t);
            }
            Py_DECREF(v);
            return -1;
        }
    }
    if (PyObject_GetBuffer(v, out, PyBUF_WRITABLE) < 0) {
        Py_DECREF(v);
        return -1;
    }
    *view = v;
    return 0;
}

static PyObject *reader_read_into(ReaderObject *r, PyObject *buf)
{
    if (!reader_ready(r))
        return NULL;
    PyObject *v;
    Py_buffer b;
    if (writable_buffer(buf, &v, &b) < 0)
        return NULL;
    long long have = cursor_remaining(r->m, &r->c);
    long long n = b.len < have ? b.len : have;
    if (n < 0)
        n = 0;
    mb_cursor w = r->c;
    int rc = cursor_copy(r->m, &w, n, b.buf);
    if (rc == 0)
        reader_commit(r, &w);
    PyBuffer_Release(&b);
    Py_DECREF(v);
    return rc < 0 ? NULL : PyLong_FromLongLong(n);
}

/* chunk(): the contiguous bytes at the cursor (not consumed); empty only at the end. */
static PyObject *reader_chunk(ReaderObject *r, PyObject *unused)
{
    (void)unused;
    if (!reader_ready(r))
        return NULL;
    int k = reader_settle(r);
    if (k < 0)
        return NULL;
    if (!k)
        return view_empty();
    PyObject *seg = Py_NewRef(r->c.seg);
    PyObject *v = view_slice(seg, r->c.pos, r->c.end - r->c.pos);
    Py_DECREF(seg);
    return v;
}

/* ---- the type ---------------------------------------------------------------------------- */

#define FAST (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef reader_methods[] = {
    {"from_bytes", (PyCFunction)reader_from_bytes, METH_VARARGS | METH_CLASS,
     "A Reader over a new Memory of the given bytes-like objects (kept by reference)."},
    {"read_byte", (PyCFunction)reader_read_byte, METH_NOARGS, "Consume and return one byte."},
    {"peek_byte", (PyCFunction)reader_peek_byte, METH_NOARGS, "The next byte, not consumed."},
    {"read_be", (PyCFunction)reader_read_be, METH_O,
     "Consume an n-byte big-endian unsigned int (1 <= n <= 8)."},
    {"read_le", (PyCFunction)reader_read_le, METH_O,
     "Consume an n-byte little-endian unsigned int (1 <= n <= 8)."},
    {"read_leb128", (PyCFunction)(void (*)(void))reader_read_leb128, FAST,
     "read_leb128(max_bytes=10): consume an unsigned LEB128 value (below 2**64)."},
    {"read_sleb128", (PyCFunction)(void (*)(void))reader_read_sleb128, FAST,
     "read_sleb128(max_bytes=10): consume a signed LEB128 value (64-bit range)."},
    {"read_bytes", (PyCFunction)reader_read_bytes, METH_O, "Consume n bytes; return a copy."},
    {"peek", (PyCFunction)reader_peek, METH_O, "A copy of the next n bytes, not consumed."},
    {"skip", (PyCFunction)reader_skip, METH_O, "Consume n bytes (Buf::advance)."},
    {"take", (PyCFunction)reader_take, METH_O, "Consume n bytes as a Memory of views (zero-copy)."},
    {"range", (PyCFunction)reader_range, METH_O,
     "Consume n bytes; an iterator over the views they span (zero-copy)."},
    {"unread", (PyCFunction)reader_unread, METH_O, "Step back n bytes."},
    {"read_into", (PyCFunction)reader_read_into, METH_O,
     "Fill a writable buffer with up to len(buf) bytes; return how many."},
    {"chunk", (PyCFunction)reader_chunk, METH_NOARGS,
     "The contiguous bytes at the cursor as a view, not consumed (Buf::chunk)."},
    {"find", (PyCFunction)reader_find_method, METH_O,
     "Offset of sub from the cursor, or -1 (nothing consumed)."},
    {"read_until", (PyCFunction)(void (*)(void))reader_read_until, FAST,
     "read_until(delim, max_size): consume through delim; the bytes before it (zero-copy)."},
    {"read_line", (PyCFunction)(void (*)(void))reader_read_line, FAST,
     "read_line(max_size, delim=b'\\r\\n'): consume through delim; a copy of the bytes before it."},
    {"clip_front", (PyCFunction)(void (*)(void))reader_clip_front, FAST,
     "clip_front(release=None): drop the consumed prefix from the Memory; return its pieces."},
    {"transaction", (PyCFunction)reader_transaction, METH_NOARGS,
     "A context manager: an exception inside rewinds the Reader to where it began."},
    {"_park", (PyCFunction)reader_park, METH_NOARGS,
     "Put the cursor before the Memory's first segment, holding no view (after clear())."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef reader_getset[] = {
    {"offset", (getter)reader_get_offset, NULL, "bytes consumed since the Reader was made", NULL},
    {"memory", (getter)reader_get_memory, NULL, "the Memory this Reader reads", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods reader_as_sequence = {
    .sq_length = (lenfunc)reader_length,
};

PyTypeObject Reader_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf.Reader",
    .tp_doc = "Reader(memory=None): a cursor over a Memory (or a bytes-like object); every "
              "read is atomic (docs/design.md §4).",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = reader_new,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_repr = (reprfunc)reader_repr,
    .tp_as_sequence = &reader_as_sequence,
    .tp_methods = reader_methods,
    .tp_getset = reader_getset,
};

/* ---- module functions ----------------------------------------------------------------------- */

/* _bind_reader(Memory, as_view, NeedMore, MalformedError, MembufError): by membuf.memory. */
static PyObject *bind_reader(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *memory, *as_view, *need, *malformed, *base;
    if (!PyArg_ParseTuple(args, "OOOOO:_bind_reader", &memory, &as_view, &need, &malformed, &base))
        return NULL;
    if (!PyType_Check(memory) || !PyType_IsSubtype((PyTypeObject *)memory, &MemCore_Type)) {
        PyErr_SetString(PyExc_TypeError, "_bind_reader needs a subclass of MemoryCore");
        return NULL;
    }
    Py_XSETREF(mb_Memory, (PyTypeObject *)Py_NewRef(memory));
    Py_XSETREF(mb_as_view, Py_NewRef(as_view));
    Py_XSETREF(mb_NeedMore, Py_NewRef(need));
    Py_XSETREF(mb_MalformedError, Py_NewRef(malformed));
    Py_XSETREF(mb_MembufError, Py_NewRef(base));
    Py_RETURN_NONE;
}

static PyObject *segment_visits(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromUnsignedLongLong(mb_segment_visits);
}

static PyMethodDef reader_module_methods[] = {
    {"_bind_reader", bind_reader, METH_VARARGS, "Bind membuf's Memory class and errors."},
    {"segment_visits", segment_visits, METH_NOARGS,
     "Segments the Reader's searches and the framers' scans have visited so far."},
    {NULL, NULL, 0, NULL},
};

int reader_exec(PyObject *module)
{
    PyTypeObject *types[] = {&MemCore_Type, &Reader_Type, &Transaction_Type, &Framer_Type};
    const char *names[] = {"MemoryCore", "Reader", "Transaction", "Framer"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (PyType_Ready(types[i]) < 0 ||
            PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0)
            return -1;
    if (PyModule_AddFunctions(module, framer_module_methods) < 0)
        return -1;
    return PyModule_AddFunctions(module, reader_module_methods);
}
