"""cffi builder for ``membuf._native`` (API mode, out-of-line).

Every ``native/*.cdef`` file is the Python-visible part of one C concern
(``alloc.cdef`` for the allocator, ``scan.cdef`` for the boundary scanners);
they are concatenated here so that adding a concern never touches this file.
Every ``native/*.c`` (not ``native/tests``) is compiled into the extension.
"""

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

def make_builder(absolute: bool = False, extra: tuple[str, ...] = ()) -> FFI:
    """The builder; ``absolute`` paths let it compile from another directory
    (the AddressSanitizer build in build/asan, see native/build_asan.py)."""
    root = HERE.parent

    def path(p: pathlib.Path) -> str:
        return str(p if absolute else p.relative_to(root))

    builder = FFI()
    builder.cdef("\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef"))))
    builder.set_source(
        "membuf._native",
        '#include "membuf.h"',
        sources=[path(p) for p in sorted(HERE.glob("*.c"))],
        include_dirs=[path(HERE)],
        extra_compile_args=[
            "-std=c99",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror=implicit-function-declaration",
            "-Werror=incompatible-pointer-types",
            *extra,
        ],
        extra_link_args=list(extra),
        libraries=["pthread"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
