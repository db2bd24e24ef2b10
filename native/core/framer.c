/* Framer: split a Reader into length-prefixed or delimited frames (docs/design.md §5).
 *
 * Strategy. One pass per segment: the scan walks the bytes of the segment at the
 * cursor and makes each complete frame's view (split_views) or Memory (split) as it
 * finds it, straight into the output list: no offsets array, no Python int, tuple or
 * slice object per frame. A frame whose header, prefix, body or delimiter spans
 * segments takes the slow path, the Reader's own atomic reads on a local cursor;
 * there is at most one such frame per segment boundary.
 *
 * Length-prefixed frames follow Netty's LengthFieldBasedFrameDecoder: `offset`
 * header bytes, the length field (LEB128, or 2/3/4 bytes big- or little-endian),
 * then `value + adjust` body bytes; the frame handed out is the whole frame minus
 * its first `strip` bytes (strip -1: the header and the length field, so the body).
 * max_frame bounds the body. Checks, in the reference's order: the header and the
 * length field are complete (else wait), the length field is well formed, the body
 * length is not negative and not over max_frame, strip is not past the frame's end
 * (all MalformedError as soon as the length field is read), then the body is all
 * here (else wait).
 *
 * Contract: only complete frames are returned; a partial frame is left unread. A
 * malformed frame raises MalformedError with the reader at its start; complete frames
 * before it in the same call are returned first and the next call raises, so no frame
 * is lost (also when malloc'ing a joined frame fails with a MemoryError).
 *
 * The memo. A frame that is incomplete at the end of the buffered bytes would be
 * scanned again by each retry after a receive; the Reader remembers (this framer's
 * serial number, the absolute range of the segment it scanned) and the retry skips
 * that scan while nothing new arrived in the segment. Serial numbers are never
 * reused, so a memo can never be taken for another framer's. */
#include "reader.h"

#include <limits.h>
#include <string.h>

#include "scan.h"

enum { FR_NONE, FR_LEB128, FR_BE, FR_LE, FR_DELIM };

#if defined(__GNUC__)
#define MB_PREFETCH(p) __builtin_prefetch(p)
#else
#define MB_PREFETCH(p) ((void)0)
#endif
enum { SCAN_END, SCAN_MALFORMED };

typedef struct FramerObject {
    PyObject_HEAD
    int kind, width;            /* FR_*; the length field's width (fixed kinds) */
    unsigned long long max_frame;
    Py_ssize_t offset;          /* header bytes before the length field */
    long long adjust;           /* added to the length field's value */
    Py_ssize_t strip;           /* bytes removed from each frame's front; -1: header+field */
    PyObject *delim;            /* bytes (FR_DELIM) */
    PyObject *prefix;           /* the prefix name (str), for messages; None for FR_DELIM */
    Py_ssize_t joined;          /* frames split_views copied into one buffer */
    unsigned long long serial;
} FramerObject;

static unsigned long long next_serial;

/* ---- configuration -------------------------------------------------------------------- */

static int framer_init(FramerObject *f, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prefix", "max_frame", "offset", "adjust", "strip", "delim", NULL};
    PyObject *prefix = Py_None, *max_frame, *strip = Py_None, *delim = Py_None;
    Py_ssize_t offset = 0;
    long long adjust = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|nLOO:Framer", kwlist, &prefix, &max_frame,
                                     &offset, &adjust, &strip, &delim))
        return -1;
    static const struct { const char *name; int kind, width; } kinds[] = {
        {"leb128", FR_LEB128, 0}, {"be16", FR_BE, 2}, {"be24", FR_BE, 3}, {"be32", FR_BE, 4},
        {"le16", FR_LE, 2}, {"le32", FR_LE, 4},
    };
    int kind = FR_NONE, width = 0;
    if (prefix == Py_None) {
        if (delim == Py_None || !PyBytes_Check(delim) || !PyBytes_GET_SIZE(delim)) {
            PyErr_SetString(PyExc_ValueError, "Framer needs a prefix name or a non-empty bytes delimiter");
            return -1;
        }
        kind = FR_DELIM;
    } else if (PyUnicode_Check(prefix)) {
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (!PyUnicode_CompareWithASCIIString(prefix, kinds[i].name)) {
                kind = kinds[i].kind;
                width = kinds[i].width;
            }
    }
    if (kind == FR_NONE) {
        PyErr_Format(PyExc_ValueError, "Framer: unknown prefix %R", prefix);
        return -1;
    }
    unsigned long long mf = PyLong_Check(max_frame) ? PyLong_AsUnsignedLongLong(max_frame) : 0;
    if (!PyLong_Check(max_frame) || PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "Framer: max_frame must be an int in 0..2**64-1, got %R", max_frame);
        return -1;
    }
    Py_ssize_t st = -1;
    if (strip != Py_None && ((st = PyLong_AsSsize_t(strip)) < 0)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "Framer: strip must be None or an int >= 0, got %R", strip);
        return -1;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "Framer: offset must be >= 0");
        return -1;
    }
    f->kind = kind;
    f->width = width;
    f->max_frame = mf;
    f->offset = offset;
    f->adjust = adjust;
    f->strip = st;
    Py_XSETREF(f->delim, kind == FR_DELIM ? Py_NewRef(delim) : NULL);
    Py_XSETREF(f->prefix, Py_NewRef(kind == FR_DELIM ? Py_None : prefix));
    f->serial = ++next_serial;
    return 0;
}

static int framer_ready(FramerObject *f)
{
    if (f->kind != FR_NONE)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "this framer was not initialised (Framer.__init__ not called)");
    return 0;
}

static void framer_dealloc(FramerObject *f)
{
    Py_CLEAR(f->delim);
    Py_CLEAR(f->prefix);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

/* ---- the errors of a frame ------------------------------------------------------------ */

static const char NOTHING_CONSUMED[] = "nothing consumed past the last complete frame";

/* The body length for `value` (header and field: hdr bytes): >= 0, or BODY_NEGATIVE,
 * BODY_TOO_LONG, BODY_STRIP (strip past the frame's end), in the order they are checked. */
enum { BODY_NEGATIVE = -1, BODY_TOO_LONG = -2, BODY_STRIP = -3 };
#define BODY_NEVER (LLONG_MAX / 4)      /* allowed, but more than any Memory will hold */

static long long body_of(const FramerObject *f, unsigned long long value, Py_ssize_t hdr)
{
    unsigned long long body;
    if (f->adjust >= 0) {
        unsigned long long add = (unsigned long long)f->adjust;
        if (value > ULLONG_MAX - add)
            return BODY_TOO_LONG;           /* past 2**64: over any max_frame */
        body = value + add;
    } else {
        unsigned long long sub = 0ULL - (unsigned long long)f->adjust;
        if (value < sub)
            return BODY_NEGATIVE;
        body = value - sub;
    }
    if (body > f->max_frame)
        return BODY_TOO_LONG;
    if (f->strip > hdr && (unsigned long long)(f->strip - hdr) > body)
        return BODY_STRIP;
    return body > (unsigned long long)BODY_NEVER ? BODY_NEVER : (long long)body;
}

/* The MalformedError of a frame body_of refused (why: its result); returns -1. */
static int frame_error(FramerObject *f, unsigned long long value, Py_ssize_t hdr, long long why)
{
    PyObject *v = PyLong_FromUnsignedLongLong(value), *a = PyLong_FromLongLong(f->adjust);
    PyObject *body = v && a ? PyNumber_Add(v, a) : NULL;
    if (body && why == BODY_NEGATIVE)
        PyErr_Format(mb_MalformedError, "%S length field %S with adjust=%lld is a negative frame "
                     "length (%S); %s", f->prefix, v, f->adjust, body, NOTHING_CONSUMED);
    else if (body && why == BODY_TOO_LONG && f->adjust)
        PyErr_Format(mb_MalformedError, "%S frame of %S bytes (length field %S, adjust=%lld) is "
                     "over max_frame=%llu; %s", f->prefix, body, v, f->adjust, f->max_frame,
                     NOTHING_CONSUMED);
    else if (body && why == BODY_TOO_LONG)
        PyErr_Format(mb_MalformedError, "%S frame of %S bytes is over max_frame=%llu; %s",
                     f->prefix, body, f->max_frame, NOTHING_CONSUMED);
    else if (body) {
        PyObject *h = PyLong_FromSsize_t(hdr), *total = h ? PyNumber_Add(h, body) : NULL;
        if (total)
            PyErr_Format(mb_MalformedError, "strip=%zd is past the end of the %S-byte frame (%S "
                         "length field %S); %s", f->strip, total, f->prefix, v, NOTHING_CONSUMED);
        Py_XDECREF(h);
        Py_XDECREF(total);
    }
    Py_XDECREF(v);
    Py_XDECREF(a);
    Py_XDECREF(body);
    return -1;
}

/* ---- making frames ---------------------------------------------------------------------- */

/* Append the frame seg[start:start+n] found by the scan (views: a view; else a Memory). */
static int emit(PyObject *out, PyObject *seg, Py_ssize_t start, Py_ssize_t n, int views)
{
    PyObject *v;
    if (views)
        v = view_slice(seg, start, n);
    else {                      /* a Memory of one view; of none for an empty frame */
        PyObject *list = PyList_New(n ? 1 : 0);
        PyObject *piece = list && n ? view_slice(seg, start, n) : NULL;
        if (!list || (n && !piece)) {
            Py_XDECREF(list);
            return -1;
        }
        if (n)
            PyList_SET_ITEM(list, 0, piece);
        v = memory_from_list(list, n);
    }
    if (!v)
        return -1;
    int r = PyList_Append(out, v);
    Py_DECREF(v);
    return r;
}

/* One frame from owned pieces: a Memory (split), or one view (split_views; a frame of
 * several pieces is copied into a bytearray or into allocator.malloc(n)). */
static PyObject *make_frame(FramerObject *f, const mb_pieces *ps, Py_ssize_t n, int views,
                            PyObject *allocator)
{
    if (!views) {
        PyObject *list = pieces_views(ps);
        return list ? memory_from_list(list, n) : NULL;
    }
    if (ps->n == 0)
        return view_empty();
    if (ps->n == 1)
        return view_slice(ps->v[0].seg, ps->v[0].start, ps->v[0].len);
    /* Our own views of the pieces: they keep the bytes readable whatever the
     * allocator's malloc (Python code) does meanwhile. */
    PyObject *parts = pieces_views(ps), *buf = NULL, *frame = NULL;
    if (!parts)
        return NULL;
    if (allocator == Py_None)
        buf = PyByteArray_FromStringAndSize(NULL, n);
    else
        buf = PyObject_CallMethod(allocator, "malloc", "n", n);
    Py_buffer b;
    if (buf && PyObject_GetBuffer(buf, &b, PyBUF_WRITABLE) == 0) {
        if (b.len != n) {
            PyErr_Format(PyExc_ValueError, "allocator.malloc(%zd) returned %zd bytes", n, b.len);
        } else {
            char *dst = b.buf;
            for (Py_ssize_t i = 0; i < ps->n; i++) {
                const Py_buffer *pb = PyMemoryView_GET_BUFFER(PyList_GET_ITEM(parts, i));
                memmove(dst, pb->buf, (size_t)pb->len);  /* (a user malloc may alias) */
                dst += pb->len;
            }
            frame = allocator == Py_None ? PyMemoryView_FromObject(buf) : Py_NewRef(buf);
        }
        PyBuffer_Release(&b);
    }
    Py_XDECREF(buf);
    Py_DECREF(parts);
    if (frame)
        f->joined++;
    return frame;
}

/* ---- the scan of one segment -------------------------------------------------------------- */

/* Decode a LEB128 length field in q[0:n]: its length, 0 incomplete, -1 malformed. */
static int scan_leb128(const unsigned char *q, Py_ssize_t n, unsigned long long *value)
{
    unsigned long long v = 0;
    for (int i = 0; i < 10; i++) {
        if (i >= n)
            return 0;
        unsigned b = q[i];
        if (i == 9 && b > 1)
            return -1;
        v |= (unsigned long long)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *value = v;
            return i + 1;
        }
    }
    return -1;
}

/* Frames of p[pos:end] (seg's bytes) into out; *stop: where the first frame not made
 * starts. SCAN_END (ran out of bytes there) or SCAN_MALFORMED, -1 on error. */
static int scan_prefixed(FramerObject *f, PyObject *seg, const unsigned char *p, Py_ssize_t pos,
                         Py_ssize_t end, int views, PyObject *out, Py_ssize_t *stop)
{
    int status = SCAN_END;
    while (pos < end) {
        Py_ssize_t avail = end - pos;
        if (avail > 512)                        /* frames' first bytes are a memory stall */
            MB_PREFETCH(p + pos + 512);
        if (avail <= f->offset)
            break;                              /* the header is not all here */
        const unsigned char *q = p + pos + f->offset;
        Py_ssize_t qa = avail - f->offset, plen;
        unsigned long long value = 0;
        if (f->kind == FR_LEB128) {
            int k = scan_leb128(q, qa, &value);
            if (k == 0)
                break;
            if (k < 0) {
                status = SCAN_MALFORMED;
                break;
            }
            plen = k;
        } else {
            plen = f->width;
            if (qa < plen)
                break;
            if (f->kind == FR_BE)
                for (Py_ssize_t i = 0; i < plen; i++)
                    value = value << 8 | q[i];
            else
                for (Py_ssize_t i = plen - 1; i >= 0; i--)
                    value = value << 8 | q[i];
        }
        Py_ssize_t hdr = f->offset + plen;
        long long body = body_of(f, value, hdr);
        if (body < 0) {
            status = SCAN_MALFORMED;
            break;
        }
        if (body > avail - hdr)
            break;                              /* the body is not all here */
        Py_ssize_t s = f->strip < 0 ? hdr : f->strip, total = hdr + (Py_ssize_t)body;
        if (emit(out, seg, pos + s, total - s, views) < 0)
            return -1;
        pos += total;
    }
    *stop = pos;
    return status;
}

static int scan_delimited(FramerObject *f, PyObject *seg, const unsigned char *p, Py_ssize_t pos,
                          Py_ssize_t end, int views, PyObject *out, Py_ssize_t *stop)
{
    const char *d = PyBytes_AS_STRING(f->delim);
    Py_ssize_t dn = PyBytes_GET_SIZE(f->delim);
    int status = SCAN_END;
    /* The delimiter must end within max_frame + dn bytes of a frame's start. */
    unsigned long long window = f->max_frame > ULLONG_MAX - (unsigned long long)dn
                                    ? ULLONG_MAX : f->max_frame + (unsigned long long)dn;
    while (pos < end) {
        Py_ssize_t span = end - pos, look = span;
        int bounded = 0;
        if (window <= (unsigned long long)span) {
            look = (Py_ssize_t)window;
            bounded = 1;
        }
        int64_t j = mb_scan_find((const char *)p + pos, (size_t)look, d, (size_t)dn);
        if (j < 0) {
            if (bounded)
                status = SCAN_MALFORMED;
            break;
        }
        if (emit(out, seg, pos, (Py_ssize_t)j, views) < 0)
            return -1;
        pos += (Py_ssize_t)j + dn;
    }
    *stop = pos;
    return status;
}

/* ---- the slow path: one frame across segments ------------------------------------------- */

/* Parse one frame at the local cursor *w (owned): 1 appended (*w moved past it), 0 not
 * complete yet (no exception), -1 with an exception (MalformedError). *w is unchanged
 * unless 1. */
static int slow_frame(FramerObject *f, ReaderObject *r, MemCoreObject *m, mb_cursor *w,
                      int views, PyObject *allocator, PyObject *out)
{
    mb_cursor c = *w;           /* borrowed walks from here */
    long long have = cursor_remaining(m, &c), skip, n;
    if (f->kind == FR_DELIM) {
        Py_ssize_t dn = PyBytes_GET_SIZE(f->delim);
        long long max = f->max_frame > (unsigned long long)(LLONG_MAX / 4) ? LLONG_MAX / 4
                                                                            : (long long)f->max_frame;
        long long j = reader_find(r, &c, f->delim, max + dn);
        if (j == -2)
            return -1;
        if (j < 0) {
            if (have < max + dn)
                return 0;
            delim_failure("read_until", f->delim, max, have);
            return -1;
        }
        skip = 0;
        n = j;
    } else {
        if (have <= f->offset)
            return 0;
        if (cursor_advance(m, &c, f->offset) < 0)
            return -1;
        unsigned long long value = 0;
        Py_ssize_t plen;
        unsigned char field[10];
        if (f->kind == FR_LEB128) {
            long long left = have - f->offset;
            int k = left < 10 ? (int)left : 10;
            mb_cursor peek = c;
            if (cursor_copy(m, &peek, k, field) < 0)
                return -1;
            int len = scan_leb128(field, k, &value);
            if (len < 0) {              /* read_leb128's own error, from the field's start */
                if (cursor_peek_leb128(m, &c, 0, 10, &value, &len) > 0)
                    PyErr_SetString(PyExc_RuntimeError, "framer: two LEB128 decoders disagree");
                return -1;
            }
            if (len == 0)
                return 0;
            plen = len;
        } else {
            plen = f->width;
            if (have - f->offset < plen)
                return 0;
            if (cursor_copy(m, &c, plen, field) < 0)
                return -1;
            if (f->kind == FR_BE)
                for (Py_ssize_t i = 0; i < plen; i++)
                    value = value << 8 | field[i];
            else
                for (Py_ssize_t i = plen - 1; i >= 0; i--)
                    value = value << 8 | field[i];
        }
        Py_ssize_t hdr = f->offset + plen;
        long long body = body_of(f, value, hdr);
        if (body < 0)
            return frame_error(f, value, hdr, body);
        if (body > have - hdr)
            return 0;
        skip = f->strip < 0 ? hdr : f->strip;
        n = hdr + body - skip;
    }
    /* The frame: from the frame's start, skip `skip` bytes, then n bytes of pieces. */
    mb_pieces ps;
    pieces_init(&ps);
    c = *w;
    if (cursor_advance(m, &c, skip) < 0 || cursor_pieces(m, &c, n, &ps) < 0 ||
        (f->kind == FR_DELIM && cursor_advance(m, &c, PyBytes_GET_SIZE(f->delim)) < 0)) {
        pieces_free(&ps);
        return -1;
    }
    pieces_own(&ps);
    Py_XINCREF(c.seg);          /* c owned from here on (making the frame may run Python) */
    PyObject *frame = make_frame(f, &ps, (Py_ssize_t)n, views, allocator);
    pieces_free(&ps);
    int rc = frame ? PyList_Append(out, frame) : -1;
    Py_XDECREF(frame);
    if (rc < 0) {
        Py_XDECREF(c.seg);
        return -1;
    }
    PyObject *old = w->seg;
    *w = c;
    Py_XDECREF(old);
    return 1;
}

/* ---- split / split_views ------------------------------------------------------------------ */

/* An error after some frames: keep them (the next call raises again) when it is a
 * MalformedError or a MemoryError; anything else propagates. */
static int keep_frames(PyObject *out)
{
    if (PyList_GET_SIZE(out) &&
        (PyErr_ExceptionMatches(mb_MalformedError) || PyErr_ExceptionMatches(PyExc_MemoryError))) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* The whole call works on a local cursor `w` and commits it once at the end, after
 * checking that the Reader still stands where the call began (reader.h, re-entrancy):
 * a split either hands out its frames and consumes them, or consumes nothing. */
static PyObject *framer_run(FramerObject *f, PyObject *reader, int views, PyObject *allocator)
{
    const char *what = views ? "split_views" : "split";
    if (!framer_ready(f))
        return NULL;
    if (!PyObject_TypeCheck(reader, &Reader_Type)) {
        PyObject *t = type_name(reader);
        if (t) {
            PyErr_Format(PyExc_TypeError, "%s needs a membuf.Reader, got %U", what, t);
            Py_DECREF(t);
        }
        return NULL;
    }
    ReaderObject *r = (ReaderObject *)reader;
    if (!reader_ready(r))
        return NULL;
    /* Our own reference to the Memory: a finalizer could re-initialise the Reader. */
    MemCoreObject *m = (MemCoreObject *)Py_NewRef((PyObject *)r->m);
    PyObject *out = PyList_New(0);
    if (!out) {
        Py_DECREF(m);
        return NULL;
    }
    mb_cursor start = r->c, w = r->c;
    Py_XINCREF(w.seg);
    for (;;) {
        int k = cursor_settle_owned(m, &w);
        if (k < 0)
            goto error;
        if (!k)
            break;
        Py_ssize_t stop, pos = w.pos, end = w.end;
        long long base = w.base;
        int status = SCAN_END;
        if (r->split_serial == f->serial && r->split_at == base + pos &&
            r->split_end == base + end) {
            stop = pos;                 /* scanned by the last call: a frame starts here */
        } else {
            /* Pin the segment: the scan reads it across the allocations of the frames. */
            Py_buffer pin;
            if (PyObject_GetBuffer(w.seg, &pin, PyBUF_SIMPLE) < 0)
                goto error;
            mb_segment_visits++;
            status = f->kind == FR_DELIM
                         ? scan_delimited(f, w.seg, w.p, pos, end, views, out, &stop)
                         : scan_prefixed(f, w.seg, w.p, pos, end, views, out, &stop);
            PyBuffer_Release(&pin);
            if (status < 0)
                goto error;
            w.pos = stop;
            if (stop == end)
                continue;
        }
        if (status == SCAN_MALFORMED) {
            if (PyList_GET_SIZE(out))
                break;                  /* what came before first; the next call raises */
            if (slow_frame(f, r, m, &w, views, allocator, out) >= 0)
                PyErr_SetString(PyExc_RuntimeError, "framer: the scan and the slow path disagree");
            goto error;
        }
        r->split_serial = 0;
        if (cursor_remaining(m, &w) == end - stop) {    /* an incomplete frame, alone */
            r->split_serial = f->serial;
            r->split_at = base + stop;
            r->split_end = base + end;
            break;
        }
        int s = slow_frame(f, r, m, &w, views, allocator, out);
        if (s == 0)
            break;
        if (s < 0) {
            if (keep_frames(out))
                break;
            goto error;
        }
    }
    if (!cursor_same(&start, &r->c)) {
        reader_moved(what);
        goto error;
    }
    reader_commit_owned(r, &w);
    Py_DECREF(m);
    return out;
error:
    /* Nothing was consumed. Like the reference, the Reader still steps onto the segment
     * where the failing frame starts (w, when no frame was made before it). */
    if (!PyList_GET_SIZE(out) && cursor_same(&start, &r->c))
        reader_commit_owned(r, &w);
    else
        Py_XDECREF(w.seg);
    Py_DECREF(out);
    Py_DECREF(m);
    return NULL;
}

static PyObject *framer_split(FramerObject *f, PyObject *reader)
{
    return framer_run(f, reader, 0, Py_None);
}

static PyObject *framer_split_views(FramerObject *f, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *reader = nargs > 0 ? args[0] : NULL, *allocator = nargs > 1 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "split_views takes 2 arguments (reader, allocator), got %zd", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot = !PyUnicode_CompareWithASCIIString(key, "reader")      ? &reader
                          : !PyUnicode_CompareWithASCIIString(key, "allocator") ? &allocator
                                                                                : NULL;
        if (!slot || *slot) {
            PyErr_Format(PyExc_TypeError, "split_views got %s keyword argument %R",
                         slot ? "a repeated" : "an unexpected", key);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (!reader) {
        PyErr_SetString(PyExc_TypeError, "split_views needs a reader");
        return NULL;
    }
    if (allocator && allocator != Py_None) {        /* checked before any frame needs it */
        PyObject *malloc = PyObject_GetAttrString(allocator, "malloc");
        if (!malloc || !PyCallable_Check(malloc)) {
            Py_XDECREF(malloc);
            PyErr_Clear();
            PyObject *t = type_name(allocator);
            if (t) {
                PyErr_Format(PyExc_TypeError, "split_views needs an allocator with malloc(n), or "
                             "None, got %U", t);
                Py_DECREF(t);
            }
            return NULL;
        }
        Py_DECREF(malloc);
    }
    return framer_run(f, reader, 1, allocator ? allocator : Py_None);
}

/* ---- the type ------------------------------------------------------------------------------ */

static PyObject *framer_get_max_frame(FramerObject *f, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(f->max_frame);
}

static PyObject *framer_get_offset(FramerObject *f, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(f->offset);
}

static PyObject *framer_get_adjust(FramerObject *f, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(f->adjust);
}

static PyObject *framer_get_strip(FramerObject *f, void *closure)
{
    (void)closure;
    return f->strip < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(f->strip);
}

static PyObject *framer_get_prefix(FramerObject *f, void *closure)
{
    (void)closure;
    return Py_NewRef(f->prefix ? f->prefix : Py_None);
}

static PyObject *framer_get_delim(FramerObject *f, void *closure)
{
    (void)closure;
    return Py_NewRef(f->delim ? f->delim : Py_None);
}

static PyObject *framer_get_joined(FramerObject *f, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(f->joined);
}

static int framer_set_joined(FramerObject *f, PyObject *value, void *closure)
{
    (void)closure;
    Py_ssize_t n = value ? PyLong_AsSsize_t(value) : -1;
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "joined must be an int >= 0");
        return -1;
    }
    f->joined = n;
    return 0;
}

static PyGetSetDef framer_getset[] = {
    {"prefix", (getter)framer_get_prefix, NULL, "the length field's encoding (None: delimited)", NULL},
    {"delim", (getter)framer_get_delim, NULL, "the delimiter (None: length-prefixed)", NULL},
    {"max_frame", (getter)framer_get_max_frame, NULL, "the largest frame body allowed", NULL},
    {"offset", (getter)framer_get_offset, NULL, "header bytes before the length field", NULL},
    {"adjust", (getter)framer_get_adjust, NULL, "added to the length field's value", NULL},
    {"strip", (getter)framer_get_strip, NULL, "bytes removed from each frame's front (None: "
     "the header and the length field)", NULL},
    {"joined", (getter)framer_get_joined, (setter)framer_set_joined,
     "frames split_views had to copy into one buffer so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- encode ---------------------------------------------------------------------------- */

/* membuf.codecs._Encodes.encode, bound at import (_bind_encode): the general encode
 * (a Memory payload, a delimiter, another Writer, keywords), whose checks and messages
 * the common case below repeats word for word. */
static PyObject *encode_general;

static PyObject *bind_encode(PyObject *self, PyObject *fn)
{
    (void)self;
    Py_XSETREF(encode_general, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *encode_fallback(FramerObject *f, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    if (!encode_general) {
        PyErr_SetString(PyExc_RuntimeError, "membuf._core is not bound yet (import membuf)");
        return NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, total = nargs + nkw + 1;
    PyObject *small[4], **stack = small;    /* self, then the arguments as they came */
    if (total > 4 && !(stack = PyMem_New(PyObject *, (size_t)total)))
        return PyErr_NoMemory();
    stack[0] = (PyObject *)f;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    PyObject *out = PyObject_Vectorcall(encode_general, stack, (size_t)(nargs + 1), kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return out;
}

/* encode(payload, writer=None): the length field, then the payload by reference. Here
 * the common case: a prefix framer, a bytes, bytearray or segment memoryview payload,
 * a compiled Writer or none; everything else goes to encode_general. */
static PyObject *framer_encode(FramerObject *f, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    PyObject *payload = nargs >= 1 ? args[0] : NULL;
    PyObject *writer = nargs >= 2 ? args[1] : Py_None;
    if (kwnames || nargs < 1 || nargs > 2 || (f->kind != FR_LEB128 && f->kind != FR_BE &&
                                              f->kind != FR_LE) ||
        (writer != Py_None && !Py_IS_TYPE(writer, &Writer_Type)))
        return encode_fallback(f, args, nargs, kwnames);
    PyObject *view;
    if (PyBytes_CheckExact(payload) || PyByteArray_CheckExact(payload)) {
        if (!(view = PyMemoryView_FromObject(payload)))
            return NULL;
    } else if (PyMemoryView_Check(payload)) {
        const unsigned char *p;
        Py_ssize_t len;
        if (!view_alive(payload) || view_segment(payload, &p, &len) < 0) {
            PyErr_Clear();
            return encode_fallback(f, args, nargs, kwnames);
        }
        view = Py_NewRef(payload);
    } else
        return encode_fallback(f, args, nargs, kwnames);
    Py_ssize_t n = PyMemoryView_GET_BUFFER(view)->len;
    /* beyond these the exact (big-int) arithmetic of the general path decides */
    const long long far = 1LL << 62;
    if (n > far || f->adjust > far || f->adjust < -far) {
        Py_DECREF(view);
        return encode_fallback(f, args, nargs, kwnames);
    }
    PyObject *out = NULL, *own = NULL;
    long long field = (long long)n - f->adjust;
    unsigned long long fmax = f->width ? (1ULL << (8 * f->width)) - 1 : ~0ULL;
    int ok = 0;
    if ((unsigned long long)n > f->max_frame)
        PyErr_Format(mb_MalformedError, "encode of a %zd-byte payload: over max_frame=%llu; "
                     "nothing was written", n, f->max_frame);
    else if (f->offset)
        PyErr_Format(PyExc_ValueError, "encode cannot make the %zd header bytes before the "
                     "length field: write them first, then encode with an offset=0 codec",
                     f->offset);
    else if (field < 0 || (unsigned long long)field > fmax)
        PyErr_Format(PyExc_ValueError, "encode: a %zd-byte payload needs a length field of %lld "
                     "(adjust=%lld), which %U cannot hold", n, field, f->adjust, f->prefix);
    else if (writer != Py_None)
        ok = 1;
    else
        ok = (writer = own = PyObject_CallNoArgs((PyObject *)&Writer_Type)) != NULL;
    if (ok && mb_writer_put_field(writer, f->width, f->kind == FR_LE,
                                  (unsigned long long)field) == 0 &&
        mb_writer_put_ref(writer, view, n) == 0)
        out = own ? mb_writer_take(own) : Py_NewRef(Py_None);
    Py_DECREF(view);
    Py_XDECREF(own);
    return out;
}

PyMethodDef framer_module_methods[] = {
    {"_bind_encode", bind_encode, METH_O, "Bind the general encode (membuf.codecs)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef framer_methods[] = {
    {"split", (PyCFunction)framer_split, METH_O,
     "Consume every complete frame now buffered; each as a Memory (zero-copy)."},
    {"split_views", (PyCFunction)(void (*)(void))framer_split_views, METH_FASTCALL | METH_KEYWORDS,
     "split_views(reader, allocator=None): every complete frame as one memoryview."},
    {"encode", (PyCFunction)(void (*)(void))framer_encode, METH_FASTCALL | METH_KEYWORDS,
     "encode(payload, writer=None): the frame for payload, its length prefix (or delimiter)\n"
     "and the payload itself by reference, appended to writer (then None is returned) or\n"
     "returned as a Memory. MalformedError over max_frame; ValueError when the prefix\n"
     "cannot hold the length or the payload contains the delimiter; TypeError for a\n"
     "payload that is not bytes-like or a Memory. Nothing is written on error."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Framer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "membuf._core.Framer",
    .tp_doc = "The compiled split engine under membuf.codecs' LengthPrefixed and Delimited.",
    .tp_basicsize = sizeof(FramerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)framer_init,
    .tp_dealloc = (destructor)framer_dealloc,
    .tp_methods = framer_methods,
    .tp_getset = framer_getset,
};
