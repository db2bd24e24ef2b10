/* Segment views: see view.h. */
#include "view.h"

#include <string.h>

static PyObject *empty_bytes;

int view_released(void)
{
    PyErr_SetString(PyExc_ValueError,
                    "a segment of this Memory is a released memoryview; the Reader cannot read it "
                    "(do not release() views you pushed while they are buffered)");
    return -1;
}

int view_segment(PyObject *obj, const unsigned char **p, Py_ssize_t *len)
{
    if (!PyMemoryView_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "a Memory segment must be a memoryview, got %.100s (segments are added "
                     "with push(), never by editing the segment list)", Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (!view_alive(obj))
        return view_released();
    const Py_buffer *b = PyMemoryView_GET_BUFFER(obj);
    int one_d = b->ndim == 1 && b->itemsize == 1 && (!b->strides || b->strides[0] == 1);
    if (!one_d || (b->format && strcmp(b->format, "B") != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "a Memory segment must be a 1-D unsigned-byte contiguous memoryview "
                        "(segments are added with push(), never by editing the segment list)");
        return -1;
    }
    *p = (const unsigned char *)b->buf;
    *len = b->len;
    return 0;
}

PyObject *view_slice(PyObject *mv, Py_ssize_t start, Py_ssize_t n)
{
#if MB_VIEW_DIRECT
    /* PyMemoryView_FromObject(a memoryview) registers one more view of the same
     * managed buffer, copying mv's layout (1-D, itemsize 1, stride 1: checked by
     * view_segment); narrowing it is what memoryview slicing does (init_slice). */
    PyObject *v = PyMemoryView_FromObject(mv);
    if (!v)
        return NULL;
    Py_buffer *b = PyMemoryView_GET_BUFFER(v);
    b->buf = (char *)b->buf + start;
    b->len = n;
    b->shape[0] = n;
    return v;
#else
    return PySequence_GetSlice(mv, start, start + n);
#endif
}

PyObject *view_empty(void)
{
    if (!empty_bytes && !(empty_bytes = PyBytes_FromStringAndSize(NULL, 0)))
        return NULL;
    return PyMemoryView_FromObject(empty_bytes);
}

PyObject *view_as_segment(PyObject *obj, PyObject *as_view)
{
    if (PyMemoryView_Check(obj)) {       /* (memoryview cannot be subclassed) */
        const unsigned char *p;
        Py_ssize_t n;
        if (view_alive(obj) && view_segment(obj, &p, &n) == 0)
            return Py_NewRef(obj);
        PyErr_Clear();
    } else if (PyBytes_CheckExact(obj) || PyByteArray_CheckExact(obj))
        return PyMemoryView_FromObject(obj);
    if (!as_view) {
        PyErr_SetString(PyExc_RuntimeError, "membuf._core is not bound yet (import membuf)");
        return NULL;
    }
    return PyObject_CallOneArg(as_view, obj);
}
