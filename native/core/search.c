/* Searching: find, read_until, read_line, and the resume memo that keeps a search
 * retried after every receive linear (docs/design.md §4).
 *
 * find_in walks the segments from the cursor and searches each one whole with
 * mb_scan_find (native/scan.c); a match straddling two or more segments is found
 * through a carry of the last len(sub) - 1 bytes looked at. Only matches that *end*
 * within `limit` bytes of the cursor count, which is how read_until bounds its
 * window at max_size + len(delim).
 *
 * The memo. A parser retrying read_until after every receive would search the same
 * bytes again each time: quadratic in a line dribbled one byte per receive. So a
 * failed search of every buffered byte remembers what it sought, from which cursor
 * position, and a later segment from which the next search may resume with enough
 * overlap for a match straddling the old end; the next search from the same cursor
 * starts there. Each byte is then searched a bounded number of times. Exactly the
 * reference's algorithm (membuf.reader.PyReader._find / _remember). */
#include "reader.h"

#include <limits.h>
#include <string.h>

#include "scan.h"

/* The first sub in buf[0:n] or -1 (mb_scan_find on unsigned bytes). */
static Py_ssize_t search(const unsigned char *buf, Py_ssize_t n, const char *sub, Py_ssize_t m)
{
    return (Py_ssize_t)mb_scan_find((const char *)buf, (size_t)n, sub, (size_t)m);
}

/* Offset of the first sub ending within `limit` bytes of seg[pos], continuing into the
 * list's segments after index i (seg is segment i, or an older, longer view of it; NULL
 * for the parked cursor); -1, or -2 with an exception set. */
static long long find_in(const MemCoreObject *m, Py_ssize_t i, PyObject *seg, Py_ssize_t pos,
                         const char *sub, Py_ssize_t sn, long long limit)
{
    if (sn == 0)
        return 0;
    if (sn > limit)
        return -1;
    unsigned char small[3 * 32], *scratch = small;
    Py_ssize_t keep = sn - 1;   /* carry: the last sn - 1 bytes looked at */
    if (3 * keep > (Py_ssize_t)sizeof small && !(scratch = PyMem_Malloc((size_t)(3 * keep)))) {
        PyErr_NoMemory();
        return -2;
    }
    unsigned char *carry = scratch, *joined = scratch + keep;     /* joined: 2 * keep */
    Py_ssize_t clen = 0;
    long long seen = 0, found = -1;
    for (;;) {
        const unsigned char *p = NULL;
        Py_ssize_t len = 0;
        if (seg && view_segment(seg, &p, &len) < 0) {
            found = -2;
            break;
        }
        Py_ssize_t vn = len > pos ? len - pos : 0;
        if (vn > limit - seen)
            vn = (Py_ssize_t)(limit - seen);
        if (vn > 0) {
            const unsigned char *v = p + pos;
            mb_segment_visits++;
            if (clen) {                 /* a match straddling the boundary starts in carry */
                Py_ssize_t head = vn < keep ? vn : keep;
                memcpy(joined, carry, (size_t)clen);
                memcpy(joined + clen, v, (size_t)head);
                Py_ssize_t j = search(joined, clen + head, sub, sn);
                if (j >= 0 && j < clen) {
                    found = seen - clen + j;
                    break;
                }
            }
            Py_ssize_t j = search(v, vn, sub, sn);
            if (j >= 0) {
                found = seen + j;
                break;
            }
            seen += vn;
            if (seen >= limit)
                break;
            if (keep) {                 /* carry = (carry + v[-keep:])[-keep:] */
                Py_ssize_t tail = vn < keep ? vn : keep;
                Py_ssize_t total = clen + tail, drop = total > keep ? total - keep : 0;
                memmove(carry, carry + drop, (size_t)(clen - drop));
                memcpy(carry + clen - drop, v + vn - tail, (size_t)tail);
                clen = total - drop;
            }
        }
        i = i + 1 > 0 ? i + 1 : 0;  /* (a cursor whose segment was clipped: on to the first) */
        if (i >= PyList_GET_SIZE(m->segs))
            break;
        seg = PyList_GET_ITEM(m->segs, i);
        pos = 0;
    }
    if (scratch != small)
        PyMem_Free(scratch);
    return found;
}

static Py_ssize_t seg_len(PyObject *seg)
{
    return PyMemoryView_Check(seg) ? PyMemoryView_GET_BUFFER(seg)->len : -1;
}

/* After a search of every buffered byte from c failed: where the next one may resume.
 * (The memo holds only bytes and positions: setting or clearing it runs no Python code.) */
static void remember(ReaderObject *r, const mb_cursor *c, PyObject *sub, long long here,
                     long long limit)
{
    MemCoreObject *m = r->m;
    Py_CLEAR(r->memo_sub);
    long long rem = cursor_remaining(m, c);
    if (limit < rem)
        return;                 /* the window ended first: the caller raises */
    Py_ssize_t first = c->si - m->dsegs, k = PyList_GET_SIZE(m->segs) - 1;
    if (first < -1)
        first = -1;             /* a cursor behind a clip: only segments still listed count */
    Py_ssize_t sn = PyBytes_GET_SIZE(sub);
    long long overlap = 0;
    if (k > first) {
        Py_ssize_t n = seg_len(PyList_GET_ITEM(m->segs, k));
        if (n < 0)
            return;
        overlap = n;
    }
    while (overlap < sn - 1 && k - 1 > first) {
        k--;
        Py_ssize_t n = seg_len(PyList_GET_ITEM(m->segs, k));
        if (n < 0)
            return;
        overlap += n;
    }
    if (k > first && overlap >= sn - 1) {
        r->memo_sub = Py_NewRef(sub);
        r->memo_here = here;
        r->memo_k = k + m->dsegs;
        r->memo_kstart = here + rem - overlap;
    }
}

static int same_bytes(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(a);
    return n == PyBytes_GET_SIZE(b) && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)n) == 0;
}

long long reader_find(ReaderObject *r, const mb_cursor *c, PyObject *sub, long long limit)
{
    MemCoreObject *m = r->m;
    long long here = c->base + c->pos;
    if (here < m->dropped) {
        PyErr_SetString(mb_MembufError, "find: another Reader already clipped past this one's cursor");
        return -2;
    }
    long long rem = cursor_remaining(m, c);
    if (limit > rem)
        limit = rem;
    const char *s = PyBytes_AS_STRING(sub);
    Py_ssize_t sn = PyBytes_GET_SIZE(sub), dsegs = m->dsegs, count = PyList_GET_SIZE(m->segs);
    long long j;
    if (r->memo_sub && r->memo_here == here && same_bytes(r->memo_sub, sub)) {
        Py_ssize_t k = r->memo_k - dsegs;
        long long kstart = r->memo_kstart;
        if (c->si - dsegs < k && k < count && kstart - here < limit) {
            j = find_in(m, k, PyList_GET_ITEM(m->segs, k), 0, s, sn, limit - (kstart - here));
            if (j == -2)
                return -2;
            if (j >= 0) {
                Py_CLEAR(r->memo_sub);
                return kstart - here + j;
            }
            remember(r, c, sub, here, limit);
            return -1;
        }
    }
    j = find_in(m, c->si - dsegs, c->seg, c->pos, s, sn, limit);
    if (j == -2)
        return -2;
    if (j < 0)
        remember(r, c, sub, here, limit);
    else
        Py_CLEAR(r->memo_sub);
    return j;
}

/* sub as bytes for `what` `part` ("read_until", " delimiter"): TypeError unless bytes-like
 * (an int, a str are refused). */
static PyObject *bytes_arg(PyObject *arg, const char *what, const char *part)
{
    if (PyBytes_CheckExact(arg))
        return Py_NewRef(arg);
    if (!PyObject_CheckBuffer(arg)) {
        PyObject *t = type_name(arg);
        if (t) {
            PyErr_Format(PyExc_TypeError, "%s%s must be a bytes-like object, got %U", what, part, t);
            Py_DECREF(t);
        }
        return NULL;
    }
    return PyBytes_FromObject(arg);
}

PyObject *reader_find_method(ReaderObject *r, PyObject *arg)
{
    PyObject *sub = bytes_arg(arg, "find", "'s argument");
    if (!sub)
        return NULL;
    if (!reader_ready(r)) {
        Py_DECREF(sub);
        return NULL;
    }
    long long j = reader_find(r, &r->c, sub, LLONG_MAX);
    Py_DECREF(sub);
    return j == -2 ? NULL : PyLong_FromLongLong(j);
}

PyObject *delim_failure(const char *what, PyObject *delim, long long max_size, long long have)
{
    long long window = max_size + PyBytes_GET_SIZE(delim);
    if (have >= window) {
        PyErr_Format(mb_MalformedError, "%s: no %R within %lld bytes (max_size=%lld); nothing consumed",
                     what, delim, window, max_size);
        return NULL;
    }
    PyObject *msg = PyUnicode_FromFormat("%s(%R): no delimiter in the %lld bytes buffered; retry "
                                         "when more arrive", what, delim, have);
    PyObject *needed = PyLong_FromLong(1);
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

/* Two arguments by position or name (kw names given), the second optional (dflt). */
static int two_args(const char *fname, const char *n1, const char *n2, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames, PyObject **a1, PyObject **a2, PyObject *dflt)
{
    *a1 = nargs > 0 ? args[0] : NULL;
    *a2 = nargs > 1 ? args[1] : NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s takes 2 arguments (%s, %s), got %zd", fname, n1, n2, nargs);
        return -1;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *val = args[nargs + i];
        PyObject **slot = !PyUnicode_CompareWithASCIIString(key, n1) ? a1
                          : !PyUnicode_CompareWithASCIIString(key, n2) ? a2 : NULL;
        if (!slot || *slot) {
            PyErr_Format(PyExc_TypeError, "%s got %s keyword argument %R", fname,
                         slot ? "a repeated" : "an unexpected", key);
            return -1;
        }
        *slot = val;
    }
    if (!*a2)
        *a2 = dflt;
    if (!*a1 || !*a2) {             /* worded as CPython words a missing argument */
        if (!*a1 && !*a2)
            PyErr_Format(PyExc_TypeError, "%s() missing 2 required arguments: '%s' and '%s'",
                         fname, n1, n2);
        else
            PyErr_Format(PyExc_TypeError, "%s() missing 1 required argument: '%s'", fname,
                         *a1 ? n2 : n1);
        return -1;
    }
    return 0;
}

/* read_until / read_line's delimiter and max_size: 0 with *delim (new ref) and *max. */
static int delim_args(const char *what, PyObject *darg, PyObject *marg, PyObject **delim,
                      long long *max)
{
    PyObject *d = bytes_arg(darg, what, " delimiter");
    if (!d)
        return -1;
    if (!PyBytes_GET_SIZE(d)) {
        PyErr_Format(mb_MalformedError, "%s needs a non-empty delimiter", what);
        Py_DECREF(d);
        return -1;
    }
    if (!PyLong_Check(marg) || PyBool_Check(marg)) {
        PyObject *t = type_name(marg);
        if (t) {
            PyErr_Format(PyExc_TypeError, "%s max_size must be an int, got %U", what, t);
            Py_DECREF(t);
        }
        Py_DECREF(d);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(marg, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(d);
        return -1;
    }
    if (overflow < 0 || (!overflow && v < 0)) {
        PyErr_Format(mb_MalformedError, "%s max_size must be an int >= 0, got %R", what, marg);
        Py_DECREF(d);
        return -1;
    }
    /* No Memory holds 2**62 bytes: a larger bound is as good as none. */
    *max = overflow || v > LLONG_MAX / 4 ? LLONG_MAX / 4 : v;
    *delim = d;
    return 0;
}

/* The delimiter search shared by read_until and read_line: the offset of d from the
 * cursor (>= 0) with *dn = len(d), or -1 with the error raised. Always releases d. */
static long long find_delim(ReaderObject *r, const char *what, PyObject *d, long long max,
                            Py_ssize_t *dn)
{
    if (!reader_ready(r)) {
        Py_DECREF(d);
        return -1;
    }
    *dn = PyBytes_GET_SIZE(d);
    long long j = reader_find(r, &r->c, d, max + *dn);
    if (j == -1)
        delim_failure(what, d, max, cursor_remaining(r->m, &r->c));
    Py_DECREF(d);
    return j < 0 ? -1 : j;
}

PyObject *reader_read_until(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    PyObject *darg, *marg, *d;
    long long max;
    if (two_args("read_until", "delim", "max_size", args, nargs, kwnames, &darg, &marg, NULL) < 0 ||
        delim_args("read_until", darg, marg, &d, &max) < 0)
        return NULL;
    Py_ssize_t dn;
    long long j = find_delim(r, "read_until", d, max, &dn);
    if (j < 0)
        return NULL;
    mb_cursor was = r->c, w = r->c;
    mb_pieces ps;
    pieces_init(&ps);
    if (cursor_pieces(r->m, &w, j, &ps) < 0 || cursor_advance(r->m, &w, dn) < 0) {
        pieces_free(&ps);
        return NULL;
    }
    pieces_own(&ps);
    Py_XINCREF(w.seg);
    PyObject *list = pieces_views(&ps);
    PyObject *out = list ? memory_from_list(list, (Py_ssize_t)j) : NULL;
    pieces_free(&ps);
    if (out && !cursor_same(&was, &r->c)) {
        Py_CLEAR(out);
        reader_moved("read_until");
    }
    if (out)
        reader_commit_owned(r, &w);
    else
        Py_XDECREF(w.seg);
    return out;
}

PyObject *reader_read_line(ReaderObject *r, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static PyObject *crlf;
    if (!crlf && !(crlf = PyBytes_FromStringAndSize("\r\n", 2)))
        return NULL;
    PyObject *marg, *darg, *d;
    long long max;
    if (two_args("read_line", "max_size", "delim", args, nargs, kwnames, &marg, &darg, crlf) < 0 ||
        delim_args("read_line", darg, marg, &d, &max) < 0)
        return NULL;
    Py_ssize_t dn;
    long long j = find_delim(r, "read_line", d, max, &dn);
    if (j < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)j);
    if (!out)
        return NULL;
    mb_cursor w = r->c;         /* no Python code runs from here to the commit */
    if (cursor_copy(r->m, &w, j, (unsigned char *)PyBytes_AS_STRING(out)) < 0 ||
        cursor_advance(r->m, &w, dn) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    reader_commit(r, &w);
    return out;
}
