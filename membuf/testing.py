"""Test helpers that fail a test which leaves native bytes in use.

Use them from your own suite to check parsers and handlers for leaks::

    # conftest.py
    pytest_plugins = ["membuf.testing"]

    def test_parser(membuf_allocator):          # a debug allocator, checked after the test
        rm = membuf.RecyclableMemory(membuf_allocator)
        ...                                      # forgetting rm.recycle() fails the test

    def test_server(membuf_leak_check):         # every Allocator made during the test
        ...

``assert_no_leaks(allocator)`` does the same check by hand.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from .allocator import LIVE_ALLOCATORS, Allocator

__all__ = ["assert_no_leaks", "membuf_allocator", "membuf_leak_check"]


def assert_no_leaks(allocator: Allocator, what: str = "allocator") -> None:
    """Raise AssertionError when ``allocator`` still has bytes in use.

    In debug mode the message lists every live range with the stack that
    allocated it; otherwise it gives the byte count.
    """
    in_use = allocator.stats().in_use
    if not in_use:
        return
    if allocator._debug is not None:
        details = "\n".join(str(leak) for leak in allocator.leaks())
        raise AssertionError(f"{what} leaked {in_use} native bytes:\n{details}")
    raise AssertionError(
        f"{what} leaked {in_use} native bytes; run with Allocator(debug=True) or "
        "MEMBUF_DEBUG=1 to see where they were allocated"
    )


@pytest.fixture
def membuf_allocator() -> Iterator[Allocator]:
    """A debug Allocator; the test fails if it leaves bytes in use."""
    allocator = Allocator(debug=True)
    yield allocator
    gc.collect()                    # let finalizers of dropped RecyclableMemory run first
    assert_no_leaks(allocator, "membuf_allocator")
    allocator.reset()


@pytest.fixture
def membuf_leak_check() -> Iterator[None]:
    """Fail the test if any Allocator created during it still has bytes in use."""
    before = set(map(id, LIVE_ALLOCATORS))
    yield
    gc.collect()
    for allocator in list(LIVE_ALLOCATORS):
        if id(allocator) not in before:
            assert_no_leaks(allocator, repr(allocator))
