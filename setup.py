"""Builds the two extensions; all metadata lives in pyproject.toml.

``membuf._native`` (cffi, API mode) is the allocator and the scanners;
``membuf._core`` (hand-written CPython C-API) is the chunk exporter and the
objects that make views. Both compile from ``native/`` with gcc alone.
"""
from pathlib import Path

from setuptools import Extension, setup

CORE_SOURCES = sorted(str(p) for p in Path("native/core").glob("*.c"))

setup(
    cffi_modules=["native/build_ffi.py:ffibuilder"],
    ext_modules=[
        Extension(
            "membuf._core",
            sources=CORE_SOURCES,
            include_dirs=["native"],
            depends=sorted(str(p) for p in Path("native").rglob("*.h")),
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ],
)
