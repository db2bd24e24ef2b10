"""Allocator behaviour: a hypothesis state machine against an interval model,
threads, and every error path of docs/design.md §2 and §7 that it touches."""

from __future__ import annotations

import pathlib
import re
import threading

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import membuf
from membuf import Allocator, FreeError, MemoryLimitError
from membuf._native import ffi, lib
from membuf.allocator import STAT_FIELDS

PAGE = 4096


def addr(mv: memoryview) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(mv)))


def arenas(a: Allocator) -> list[tuple[int, int]]:
    """(base, size) of every live arena, from the native table."""
    table = ffi.new("uint64_t[]", 3 * 4096)
    n = lib.mb_alloc_arena_table(a._h, table, 4096)
    return sorted((table[3 * i + 1], table[3 * i + 2]) for i in range(n))


def size_class(n: int) -> int:
    """Good-fit's size class of an n-byte range (native/sizeclass.h): lengths below 64
    one class each, then 32 classes per power of two, numbered in length order."""
    step = max((n | 32).bit_length() - 6, 0)
    return (n >> step) + (step << 5)


class AllocatorModel(RuleBasedStateMachine):
    """Live allocations are intervals; free space is the arenas minus them.

    First-fit must return the lowest free address that fits, best-fit the
    smallest gap (ties by address); good-fit the start of a gap that fits, from
    the lowest size classes that guarantee a fit (a gap may wait on the list one
    class below its own, so the bound is "at most the smallest such class");
    a failed malloc must be a true failure, whatever the strategy.
    """

    MAX_BYTES = 1 << 20

    def __init__(self) -> None:
        super().__init__()
        self.a: Allocator
        self.live: dict[int, tuple[memoryview, int]] = {}   # address -> (view, fill)
        self.freed: list[tuple[int, int]] = []              # recently freed (addr, len)
        self.strategy = "first-fit"

    @initialize(strategy=st.sampled_from(["first-fit", "best-fit", "good-fit"]))
    def make(self, strategy: str) -> None:
        self.strategy = strategy
        self.a = Allocator(arena_size=PAGE, max_arena_size=16 * PAGE, max_bytes=self.MAX_BYTES,
                           strategy=strategy)

    def gaps(self) -> list[tuple[int, int]]:
        taken = sorted((p, len(v)) for p, (v, _) in self.live.items())
        out = []
        for base, size in arenas(self.a):
            cur = base
            for p, n in taken:
                if base <= p < base + size:
                    if p > cur:
                        out.append((cur, p - cur))
                    cur = p + n
            if cur < base + size:
                out.append((cur, base + size - cur))
        return out

    def check_placement(self, p: int, n: int, fits: list[tuple[int, int]]) -> None:
        """A malloc of n that some gap holds (fits) returned p: where the strategy says."""
        if self.strategy == "first-fit":
            assert p == min(fits)[0]
        elif self.strategy == "best-fit":
            assert p == min(fits, key=lambda g: (g[1], g[0]))[0]
        else:
            chosen = [length for start, length in fits if start == p]
            assert chosen, "good-fit must carve from the front of a gap that fits"
            want = size_class(n - 1) + 1     # the lowest class all of whose lengths hold n
            sure = [size_class(length) for _, length in fits if size_class(length) > want]
            if sure:                         # such a gap is on a list >= want: no fallback
                assert want <= size_class(chosen[0]) <= min(sure)

    def malloc_view(self, n: int, fill: int) -> memoryview | None:
        """malloc(n) checked against the model (placement, true failures), then filled."""
        fits = [g for g in self.gaps() if g[1] >= n]
        before = {b for b, _ in arenas(self.a)}
        try:
            mv = self.a.malloc(n)
        except MemoryLimitError:
            # no false failure: nothing fits and the cap leaves no room to grow
            assert not fits
            s = self.a.stats()
            assert (self.MAX_BYTES - s.reserved) // PAGE * PAGE < n
            return None
        assert len(mv) == n and not mv.readonly
        p = addr(mv)
        if fits:
            self.check_placement(p, n, fits)
        else:
            assert p in {b for b, _ in arenas(self.a)} - before   # the start of a new arena
        mv[:] = bytes([fill]) * n
        self.live[p] = (mv, fill)
        return mv

    @rule(n=st.one_of(st.integers(1, 600), st.integers(1, 40 * PAGE)), fill=st.integers(0, 255))
    def malloc(self, n: int, fill: int) -> None:
        self.malloc_view(n, fill)

    # A stream's receive chunk: malloc, then give the unused tail back at once, maybe in
    # two steps (good-fit frees a tail of its last malloc without searching the index).
    @rule(n=st.integers(1, 3 * PAGE), fill=st.integers(0, 255),
          keep=st.lists(st.integers(0, 2**16), min_size=1, max_size=2), again=st.booleans())
    def malloc_then_free_tail(self, n: int, fill: int, keep: list[int], again: bool) -> None:
        mv = self.malloc_view(n, fill)
        if mv is None:
            return
        p = addr(mv)
        for k in keep:
            if not len(mv):
                break
            cut = k * len(mv) // 2**16
            before = self.a.stats()
            head = self.a.free_rest(mv, cut)
            assert self.a.stats().in_use == before.in_use - (len(mv) - cut)
            if cut < len(mv):
                self.freed.append((p + cut, len(mv) - cut))
                if again:                    # the same tail again: a double free
                    with pytest.raises(FreeError, match="already free"):
                        self.a.free(mv[cut:])
            mv = head
        del self.live[p]
        if len(mv):
            self.live[p] = (mv, fill)

    # Draws never depend on the state (mmap placement differs between runs, and hypothesis
    # needs the same draws to replay): raw integers, scaled to what is there.
    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 2**16), cut=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)),
          kind=st.sampled_from(["whole", "prefix", "suffix", "middle"]))
    def free(self, pick: int, cut: tuple[int, int], kind: str) -> None:
        p = list(self.live)[pick % len(self.live)]
        mv, fill = self.live[p]
        n = len(mv)
        assert bytes(mv) == bytes([fill]) * n
        x, y = (c * n // 2**16 for c in cut)
        lo, hi = {
            "whole": (0, n),
            "prefix": (0, max(1, y)),
            "suffix": (min(x, n - 1), n),
            "middle": (min(x, y), max(x, y)),
        }[kind]
        if lo == hi:
            return
        self.a.free(mv[lo:hi])
        del self.live[p]
        if lo:
            self.live[p] = (mv[:lo], fill)
        if hi < n:
            self.live[p + hi] = (mv[hi:], fill)
        self.freed.append((p + lo, hi - lo))

    @precondition(lambda self: self.freed)
    @rule(pick=st.integers(0, 2**16))
    def double_free_is_refused(self, pick: int) -> None:
        p, n = self.freed[pick % len(self.freed)]
        if any(q < p + n and p < q + len(v) for q, (v, _) in self.live.items()):
            return  # reallocated since: freeing it again would be legal
        if not any(b <= p < b + s for b, s in arenas(self.a)):
            return  # its arena is gone: the view is dangling and must not be touched
        before = self.a.stats()
        view = memoryview(ffi.buffer(ffi.cast("char *", p), n))
        with pytest.raises(FreeError, match="already free"):
            self.a.free(view)
        assert self.a.stats() == before

    @rule()
    def foreign_free_is_refused(self) -> None:
        before = self.a.stats()
        with pytest.raises(FreeError):
            self.a.free(memoryview(bytearray(16)))
        assert self.a.stats() == before

    @rule()
    def trim(self) -> None:
        self.a.trim()

    @invariant()
    def exact(self) -> None:
        if not hasattr(self, "a"):
            return
        s = self.a.stats()
        assert s.in_use == sum(len(v) for v, _ in self.live.values())
        assert s.free == s.reserved - s.in_use
        assert s.largest_free == max((g[1] for g in self.gaps()), default=0)
        assert s.arenas == len(arenas(self.a))
        assert s.reserved <= self.MAX_BYTES
        self.a.check()

    def teardown(self) -> None:
        if hasattr(self, "a"):
            for mv, fill in self.live.values():
                assert bytes(mv) == bytes([fill]) * len(mv)
                self.a.free(mv)
            assert self.a.stats().in_use == 0
            self.a.check()


AllocatorModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorModel = AllocatorModel.TestCase


# -- scripted behaviour ------------------------------------------------------


def test_partial_free_prefix_suffix_middle() -> None:
    with Allocator() as a:
        mv = a.malloc(1000)
        a.free(mv[:100])
        a.free(mv[900:])
        a.free(mv[400:500])
        assert a.stats().in_use == 700
        a.check()
        with pytest.raises(FreeError):
            a.free(mv[450:460])
        a.free(mv[100:400])
        a.free(mv[500:900])
        assert a.stats().in_use == 0


def test_free_rest_keeps_the_head() -> None:
    with Allocator() as a:
        mv = a.malloc(64)
        mv[:3] = b"abc"
        head = a.free_rest(mv, 3)
        assert bytes(head) == b"abc" and a.stats().in_use == 3
        assert a.free_rest(head, 3) is not None and a.stats().in_use == 3
        with pytest.raises(ValueError, match="0..3"):
            a.free_rest(head, 4)
        a.free(head)
        assert a.stats().in_use == 0


def test_growth_doubles_then_dedicated_arena() -> None:
    with Allocator(arena_size=PAGE, max_arena_size=4 * PAGE) as a:
        first = a.malloc(PAGE)
        second = a.malloc(1)
        assert sorted(s for _, s in arenas(a)) == [PAGE, 2 * PAGE]
        big = a.malloc(10 * PAGE + 1)            # above max_arena_size: its own arena
        assert a.stats().arenas == 3
        a.free(big[PAGE:])                       # partial free works on it too
        a.free(big[:PAGE])
        a.free(first)
        a.free(second)
        assert a.stats().in_use == 0 and a.stats().arenas == 1   # one spare kept
        assert a.trim() == 1 and a.stats().reserved == 0


def test_max_bytes_limit_and_recovery() -> None:
    with Allocator(arena_size=PAGE, max_arena_size=8 * PAGE, max_bytes=8 * PAGE) as a:
        held = [a.malloc(PAGE) for _ in range(8)]
        with pytest.raises(MemoryLimitError, match="max_bytes=32768") as err:
            a.malloc(PAGE)
        assert isinstance(err.value, MemoryError)
        assert a.stats().failed == 1
        a.free(held.pop())
        a.malloc(PAGE)                           # works again after a free


@pytest.mark.parametrize("n", [2**63, 2**64, 2**70])
def test_huge_sizes_are_memory_limit_errors(n: int) -> None:
    a = Allocator()
    with pytest.raises(MemoryLimitError):
        a.malloc(n)
    assert a.stats().in_use == 0


def test_bad_arguments() -> None:
    a = Allocator()
    with pytest.raises(ValueError, match="-1"):
        a.malloc(-1)
    with pytest.raises(TypeError):
        a.malloc("12")  # type: ignore[arg-type]
    assert len(a.malloc(0)) == 0
    a.free(memoryview(bytearray()))              # freeing nothing is a no-op
    with pytest.raises(ValueError, match="strategy"):
        Allocator(strategy="worst-fit")
    with pytest.raises(ValueError, match="arena_size"):
        Allocator(arena_size=0)
    with pytest.raises(ValueError, match="max_bytes"):
        Allocator(max_bytes=0)


def test_refused_frees_change_nothing() -> None:
    a = Allocator()
    mv = a.malloc(256)
    other = Allocator().malloc(16)
    before = a.stats()
    for bad in (mv[::2], b"bytes", bytearray(8), other, memoryview(bytearray(4))):
        with pytest.raises(FreeError):
            a.free(bad)
        assert a.stats() == before
    a.free(mv[:10])
    with pytest.raises(FreeError, match="already free"):
        a.free(mv[:20])                          # overlaps the freed prefix
    a.check()


def test_free_after_reset_is_foreign() -> None:
    a = Allocator()
    mv = a.malloc(100)
    p = addr(mv)
    a.reset()
    assert a.stats().in_use == 0 and a.stats().reserved == 0
    dangling = memoryview(ffi.buffer(ffi.cast("char *", p), 100))
    with pytest.raises(FreeError, match="not memory of this allocator"):
        a.free(dangling)


def test_owns_and_borrow() -> None:
    a = Allocator()
    mv = a.malloc(100)
    assert a.owns(mv) and a.owns(mv[10:20])
    assert not a.owns(bytearray(10)) and not a.owns(mv[:0])
    a.free(mv[:50])
    assert not a.owns(mv) and a.owns(mv[50:])
    tmp = a.borrow(1000)
    tmp[:] = b"x" * 1000
    assert len(tmp) == 1000 and a.stats().in_use == 50   # borrow does not count
    assert len(a.borrow(10)) == 10


def test_stats_fields_match_the_native_table() -> None:
    native = pathlib.Path(__file__).resolve().parents[1] / "native"
    macro = re.search(r"#define MB_STATS\(X\)(.*?)\n\n", (native / "alloc.h").read_text(), re.S)
    assert macro is not None
    assert tuple(re.findall(r"X\((\w+)\)", macro.group(1))) == STAT_FIELDS
    cdef = re.search(r"typedef struct mb_stats \{(.*?)\}", (native / "alloc.cdef").read_text(), re.S)
    assert cdef is not None
    assert tuple(re.findall(r"uint64_t (\w+);", cdef.group(1))) == STAT_FIELDS


def test_threads_share_one_allocator() -> None:
    a = Allocator(arena_size=PAGE)
    errors: list[str] = []

    def work(fill: int) -> None:
        held: list[memoryview] = []
        for i in range(3000):
            if held and i % 3 == 0:
                mv = held.pop(i % len(held))
                if bytes(mv) != bytes([fill]) * len(mv):
                    errors.append(f"thread {fill}: pattern broken")
                half = len(mv) // 2
                a.free(mv[half:])                # partial free, then the rest
                if half:
                    a.free(mv[:half])
            else:
                mv = a.malloc(1 + (i * 37 + fill) % 3000)
                mv[:] = bytes([fill]) * len(mv)
                held.append(mv)
        for mv in held:
            a.free(mv)

    threads = [threading.Thread(target=work, args=(f,)) for f in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert a.stats().in_use == 0
    a.check()


def test_public_names() -> None:
    assert membuf.Allocator is Allocator
    assert issubclass(membuf.FreeError, ValueError)
    assert issubclass(membuf.MemoryLimitError, MemoryError)


def test_every_invariant_has_a_name() -> None:
    """check() names a broken invariant instead of printing a bare code."""
    check_h = pathlib.Path(__file__).resolve().parents[1] / "native" / "check.h"
    codes = [int(c) for c in re.findall(r"X\(MB_\w+, (\d+),", check_h.read_text())]
    assert len(codes) > 20
    names = {code: ffi.string(lib.mb_check_name(code)).decode() for code in codes}
    assert names[0] == "sound"
    assert len(set(names.values())) == len(names)          # one sentence per invariant
    assert "unknown invariant" not in names.values()
    assert ffi.string(lib.mb_check_name(999)).decode() == "unknown invariant"


def test_debug_stats_free_is_reserved_minus_in_use() -> None:
    """Quarantined bytes are free as far as the user is concerned, in every counter."""
    a = Allocator(debug=True)
    views = [a.malloc(100) for _ in range(10)]
    for v in views[:5]:
        a.free(v)
    s = a.stats()
    assert s.in_use == 500 and s.free == s.reserved - s.in_use
    a.reset()
