"""What finalizers raise while objects are dropped: ``with collected() as seen: del obj``.

A finalizer's exception cannot propagate; CPython hands it to
``sys.unraisablehook`` ("Exception ignored in ..."). A test that drops membuf
objects and wants to know that their finalizers raised nothing collects those
here: inside the block it deletes its references, and on the way out the block
runs the cyclic GC, restores the hook, and leaves the list of what arrived.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def collected(*, quiet: bool = False) -> Iterator[list[Any]]:
    """The unraisable exceptions of the block and of a GC pass after it.

    ``quiet``: ResourceWarnings are ignored meanwhile (debug mode warns about
    memory its finalizers had to free).
    """
    seen: list[Any] = []
    old, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", ResourceWarning)
            yield seen
            gc.collect()
    finally:
        sys.unraisablehook = old
