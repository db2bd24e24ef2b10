"""cffi builder for ``membuf._native`` (API mode, out-of-line).

Every ``native/*.cdef`` file is the Python-visible part of one C concern
(``alloc.cdef`` for the allocator, ``scan.cdef`` for the boundary scanners);
they are concatenated here so that adding a concern never touches this file.
Every ``native/*.c`` (not ``native/tests``) is compiled into the extension.
"""

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef("\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef"))))
ffibuilder.set_source(
    "membuf._native",
    '#include "membuf.h"',
    sources=[str(p.relative_to(HERE.parent)) for p in sorted(HERE.glob("*.c"))],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=[
        "-std=c99",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror=implicit-function-declaration",
        "-Werror=incompatible-pointer-types",
    ],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
