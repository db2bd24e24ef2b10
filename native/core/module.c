/* membuf._core module: see core.h for the layout and the ownership chain. */
#include "core.h"
#include "reader.h"

const mb_core_api *mb_api;
PyObject *mb_FreeError, *mb_MemoryLimitError;

int core_ready(void)
{
    if (mb_api)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "membuf._core is not bound to membuf._native yet");
    return 0;
}

int core_size_arg(PyObject *arg, const char *what, size_t *out)
{
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "%s size must be an int, got %s", what, Py_TYPE(arg)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (small == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (!overflow && small < 0)) {
        PyErr_Format(PyExc_ValueError, "%s size must be >= 0, got %S", what, arg);
        return -1;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(mb_MemoryLimitError, "%s(%S): no allocator can hold %S bytes (limit 1 TiB)",
                     what, arg, arg);
        return -1;
    }
    *out = (size_t)n;     /* anything over the 1 TiB request limit is the allocator's refusal */
    return 0;
}

/* _bind(table_address, FreeError, MemoryLimitError): called once by membuf.allocator. */
static PyObject *core_bind(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long address;
    PyObject *free_error, *limit_error;
    if (!PyArg_ParseTuple(args, "KOO:_bind", &address, &free_error, &limit_error))
        return NULL;
    const mb_core_api *api = (const mb_core_api *)(uintptr_t)address;
    if (!api || api->version != MB_CORE_API_VERSION || api->stats_size != sizeof(mb_stats)) {
        PyErr_SetString(PyExc_ImportError,
                        "membuf._core and membuf._native were built from different sources; "
                        "reinstall membuf");
        return NULL;
    }
    Py_XSETREF(mb_FreeError, Py_NewRef(free_error));
    Py_XSETREF(mb_MemoryLimitError, Py_NewRef(limit_error));
    mb_api = api;
    Py_RETURN_NONE;
}

/* extent(buffer) -> (length, address) of any contiguous buffer (address 0 when empty). */
static PyObject *core_extent(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = Py_BuildValue("(nN)", b.len, PyLong_FromVoidPtr(b.len ? b.buf : NULL));
    PyBuffer_Release(&b);
    return r;
}

/* free_refusal(obj) -> int: 0 when Heap.free would try obj's bytes, else its HEAP_E* code. */
static PyObject *core_free_refusal(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer b;
    int r = core_free_buffer(arg, &b);
    if (!r)
        PyBuffer_Release(&b);
    return PyLong_FromLong(r);
}

static PyMethodDef core_methods[] = {
    {"_bind", core_bind, METH_VARARGS, "Bind to the allocator entry table (membuf.allocator)."},
    {"extent", core_extent, METH_O, "(length, address) of a contiguous buffer."},
    {"free_refusal", core_free_refusal, METH_O, "Why Heap.free would refuse obj, or 0."},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject *m)
{
    if (PyType_Ready(&Heap_Type) < 0 || PyType_Ready(&Chunk_Type) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Heap", (PyObject *)&Heap_Type) < 0 ||
        PyModule_AddObjectRef(m, "Chunk", (PyObject *)&Chunk_Type) < 0 ||
        PyModule_AddFunctions(m, heap_module_methods) < 0)
        return -1;
    /* writer.c */
    if (PyType_Ready(&Writer_Type) < 0 ||
        PyModule_AddObjectRef(m, "Writer", (PyObject *)&Writer_Type) < 0 ||
        PyModule_AddFunctions(m, writer_module_methods) < 0)
        return -1;
    /* reader.c: MemoryCore, Reader, Transaction, Framer (framer.c) */
    if (reader_exec(m) < 0)
        return -1;
    /* bump.c: RecyclableCore (a MemoryCore, so after reader_exec) */
    if (bump_exec(m) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, (void *)core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "membuf._core",
    .m_doc = "membuf's compiled core: native views that keep their memory alive.",
    .m_size = 0,
    .m_methods = core_methods,
    .m_slots = core_slots,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
