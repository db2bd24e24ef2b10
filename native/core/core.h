/* membuf._core: CPython objects over the native allocator (hand-written C-API).
 *
 * Concerns, one file each:
 *   module.c  the module: binding to the allocator's entry table, exception types
 *   heap.c    Heap: owns one native allocator; malloc returns views of chunks
 *   chunk.c   Chunk: a buffer exporter over one native range
 *   writer.c  Writer: encodes fields into native (or bytearray) chunks
 *   bump.c    RecyclableCore: RecyclableMemory's fields and its next_n bump in C
 *
 * Ownership chain (what makes a view safe to keep): a memoryview holds its
 * managed buffer, which holds the Chunk it was exported from, which holds a
 * reference to its arena's mapped region (region.h) and, for a chunk the
 * stream layer frees on the user's behalf ("auto" chunk), to its Heap. So a
 * view never outlives the mapping under it, and an auto chunk's bytes go back
 * to the allocator only when its last view is gone.
 *
 * Every entry point runs with the GIL held; the native allocator has its own
 * lock for the cffi callers that release the GIL. */
#ifndef MEMBUF_CORE_H
#define MEMBUF_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "api.h"

/* Set once by module.c's _bind; every other entry point checks core_ready(). */
extern const mb_core_api *mb_api;
extern PyObject *mb_FreeError, *mb_MemoryLimitError;

int core_ready(void);

typedef struct HeapObject {
    PyObject_HEAD
    mb_alloc *a;                /* owned: deleted with the Heap */
    size_t max_bytes;           /* for error messages; 0 means no cap */
} HeapObject;

typedef struct ChunkObject {
    PyObject_HEAD
    char *ptr;
    Py_ssize_t len;
    Py_ssize_t exports;         /* live buffer exports (memoryviews' managed buffers) */
    mb_region *region;          /* a reference to the mapping; NULL for an empty chunk */
    HeapObject *heap;           /* auto chunks: the bytes go back here when the chunk dies */
    uint64_t epoch;             /* the allocator epoch the bytes came from */
    int disowned;               /* the stream let go; counted in the allocator's pinned */
} ChunkObject;

extern PyTypeObject Heap_Type;
extern PyTypeObject Chunk_Type;
extern PyTypeObject Writer_Type;                /* writer.c */
extern PyTypeObject RecyclableCore_Type;        /* bump.c: under membuf.RecyclableMemory */
int bump_exec(PyObject *module);                /* bump.c: readies and adds RecyclableCore */
extern PyMethodDef writer_module_methods[];     /* writer.c: _bind_writer */
extern PyMethodDef heap_module_methods[];       /* heap.c: _bind_free_refusal */

/* For the framers' encode (framer.c), on a compiled Writer (exact type): a length field
 * (width 0: LEB128; else width bytes, little or big endian), a payload view of n bytes
 * by reference, and take(). -1 / NULL with an exception set. */
int mb_writer_put_field(PyObject *w, int width, int little, unsigned long long v);
int mb_writer_put_ref(PyObject *w, PyObject *view, Py_ssize_t n);
PyObject *mb_writer_take(PyObject *w);

/* Result codes of Heap.free beyond the allocator's own (alloc.h). */
#define HEAP_ENOTBUFFER (-100)  /* not a bytes-like object */
#define HEAP_ENOTCONTIG (-101)  /* a strided view */
#define HEAP_ERELEASED (-102)   /* a released memoryview */
#define HEAP_EAUTO (-103)       /* bytes the stream layer owns (an auto chunk) */

/* obj's bytes for a free: 0 with *b filled (release it), or a HEAP_E* code with no
 * exception set and nothing to release. */
int core_free_buffer(PyObject *obj, Py_buffer *b);

/* A new chunk over [ptr, ptr + len) owning one region reference (stolen). */
ChunkObject *chunk_new(char *ptr, Py_ssize_t len, mb_region *region, HeapObject *heap,
                       uint64_t epoch);
/* The size argument of malloc-like calls: an int (not bool), >= 0, else an exception. */
int core_size_arg(PyObject *arg, const char *what, size_t *out);

#endif
