"""Allocator.malloc + free and RecyclableMemory.next_n + recycle, against bytearray.

Per round: 1000 pairs (or 1000 next_n and one recycle); the table shows one pair.
``bytearray(n)`` zero-fills and is freed by refcounting when the next one
replaces it; membuf's memory is not zeroed and every free is a native call.
"""

from __future__ import annotations

import pytest

from membuf import Allocator, RecyclableMemory

N = 1000
R = range(N)
SIZES = [pytest.param(256, id="256B"), pytest.param(64 << 10, id="64KiB")]


def _label(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1024 else f"{n} B"


# -- malloc + free ------------------------------------------------------------------


def membuf_pairs(a: Allocator, n: int) -> tuple[int, int]:
    malloc, free = a.malloc, a.free
    mv = None
    for _ in R:
        mv = malloc(n)
        free(mv)
    return N, len(mv)  # type: ignore[arg-type]


def bytearray_pairs(n: int) -> tuple[int, int]:
    b = None
    for _ in R:
        b = bytearray(n)
    return N, len(b)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", SIZES)
def test_malloc_free_membuf(micro, n):
    a = Allocator()
    before = a.stats()
    got = micro(membuf_pairs, lambda: (a, n), group=f"allocator: malloc+free {_label(n)}", n=N,
                unit="pair")
    after = a.stats()
    assert got == (N, n)
    assert after.in_use == 0
    done = after.mallocs - before.mallocs
    assert done >= N and done % N == 0 and after.frees - before.frees == done
    a.reset()


@pytest.mark.parametrize("n", SIZES)
def test_malloc_free_bytearray(micro, n):
    got = micro(bytearray_pairs, lambda: (n,), group=f"allocator: malloc+free {_label(n)}", n=N,
                unit="pair")
    assert got == (N, n)


# -- RecyclableMemory.next_n x 1000, then one recycle -----------------------------------

RM_SIZES = [pytest.param(256, id="256B"), pytest.param(4096, id="4KiB")]


def _rm_group(n: int) -> str:
    return f"allocator: RecyclableMemory.next_n({n}) + 1/{N} of recycle()"


def recyclable_round(rm: RecyclableMemory, n: int) -> tuple[int, int]:
    next_n = rm.next_n
    for _ in R:
        next_n(n)
    got = rm.count, sum(map(len, rm))
    rm.recycle()
    return got


def bytearray_round(bufs: list[bytearray], n: int) -> tuple[int, int]:
    append = bufs.append
    for _ in R:
        append(bytearray(n))
    got = len(bufs), sum(map(len, bufs))
    bufs.clear()
    return got


@pytest.mark.parametrize("n", RM_SIZES)
def test_next_n_recycle_membuf(micro, n):
    a = Allocator()
    got = micro(recyclable_round, lambda: (RecyclableMemory(a), n), group=_rm_group(n), n=N)
    assert got == (N, N * n)
    assert a.stats().in_use == 0
    a.reset()


@pytest.mark.parametrize("n", RM_SIZES)
def test_next_n_recycle_bytearray(micro, n):
    got = micro(bytearray_round, lambda: ([], n), group=_rm_group(n), n=N)
    assert got == (N, N * n)


# -- the floor: one crossing each way ---------------------------------------------------


def cffi_calls(call: object, h: object) -> tuple[int, int]:
    got = 0
    for _ in R:
        got = call(h)  # type: ignore[operator]
    return N, got


def capi_calls(call: object, view: memoryview) -> tuple[int, int]:
    got = 0
    for _ in R:
        got = call(view)  # type: ignore[operator]
    return N, got


def test_floor_one_cffi_call(micro):
    """One cffi call with a pointer argument (``mb_alloc_arena_count``): the crossing the
    Python malloc/free used to make, arguments tuple, GIL release and errno included."""
    from membuf._native import lib

    a = Allocator()
    a.free(a.malloc(16))                      # one arena
    got = micro(cffi_calls, lambda: (lib.mb_alloc_arena_count, a._h),
                group="allocator: the floor, one call", n=N, unit="call")
    assert got == (N, 1)


def test_floor_one_core_call(micro):
    """One C-API call into ``membuf._core`` with a buffer argument (``free_refusal``: the
    check ``free`` makes of a view): the crossing malloc and free make now."""
    from membuf import _core

    a = Allocator()
    view = a.malloc(16)
    got = micro(capi_calls, lambda: (_core.free_refusal, view),
                group="allocator: the floor, one call", n=N, unit="call")
    assert got == (N, 0)                      # a view membuf made: free would take it
    a.free(view)
