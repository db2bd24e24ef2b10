"""Only here for cffi's `cffi_modules`; all metadata lives in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
