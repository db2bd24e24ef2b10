"""Debug mode: poison, quarantine, leak reports, and membuf.testing's fixtures."""

from __future__ import annotations

import pytest
from unraisable import collected

import membuf
import membuf._core
from membuf import Allocator, FreeError
from membuf.debug import POISON_FREED, POISON_FRESH

pytest_plugins = ["pytester"]


def test_fresh_and_freed_bytes_are_poisoned() -> None:
    a = Allocator(debug=True)
    mv = a.malloc(64)
    assert bytes(mv) == bytes([POISON_FRESH]) * 64
    mv[:] = b"x" * 64
    a.free(mv[16:32])
    assert bytes(mv[16:32]) == bytes([POISON_FREED]) * 16   # quarantined, so still mapped
    assert bytes(mv[:16]) == b"x" * 16


def test_quarantine_delays_reuse_and_catches_double_free() -> None:
    a = Allocator(debug=True)
    first = a.malloc(100)
    a.free(first)
    again = a.malloc(100)
    assert not a.owns(first) and a.owns(again)
    # first-fit would have handed the same bytes back at once without the quarantine
    from membuf._native import ffi
    assert ffi.from_buffer(again) != ffi.from_buffer(first)
    before = a.stats()
    with pytest.raises(FreeError, match="quarantine"):
        a.free(first[10:20])
    assert a.stats() == before
    assert before.in_use == 100                 # quarantined bytes count as freed


def test_quarantine_is_bounded() -> None:
    a = Allocator(debug=True)
    assert a._debug is not None
    a._debug.quarantine_bytes = 1000
    views = [a.malloc(300) for _ in range(10)]
    for v in views:
        a.free(v)
    assert a._debug.quarantined <= 1000
    assert a.stats().in_use == 0
    a.trim()                                    # drains the quarantine, then unmaps
    assert a.stats().reserved == 0


def test_leaks_name_the_allocation_site() -> None:
    a = Allocator(debug=True)

    def make_leak() -> memoryview:
        return a.malloc(48)

    mv = make_leak()
    a.free(mv[:8])
    (leak,) = a.leaks()
    assert leak.size == 40 and "make_leak" in leak.traceback
    a.free(mv[8:])
    assert a.leaks() == []


def test_leaks_needs_debug_mode() -> None:
    with pytest.raises(RuntimeError, match="debug"):
        Allocator().leaks()


def test_env_variable_turns_debug_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBUF_DEBUG", "1")
    assert Allocator().debug
    monkeypatch.setenv("MEMBUF_DEBUG", "0")
    assert not Allocator().debug


def test_debug_errors_match_normal_mode() -> None:
    a = Allocator(debug=True)
    mv = a.malloc(32)
    for bad in (bytearray(4), mv[::2]):
        with pytest.raises(FreeError):
            a.free(bad)
    a._free_batch([0, 0])                        # zero-length items are ignored
    with pytest.raises(FreeError):
        a._free_batch([12345, 10])
    assert a.stats().in_use == 32


def test_fixture_fails_a_leaking_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["membuf.testing"]')
    pytester.makepyfile(
        """
        def test_leaky(membuf_allocator):
            membuf_allocator.malloc(10)

        def test_clean(membuf_allocator):
            membuf_allocator.free(membuf_allocator.malloc(10))

        KEEP = []

        def test_any_allocator(membuf_leak_check):
            import membuf
            a = membuf.Allocator()      # kept alive past the test: its bytes stay in use
            a.malloc(5)
            KEEP.append(a)
        """
    )
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*membuf_allocator leaked 10 native bytes*", "*test_leaky*"])


# -- use after free, and the debug/normal differences that were bugs --------------------


def test_write_into_freed_bytes_is_caught_by_check() -> None:
    a = membuf.Allocator(debug=True)
    v = a.malloc(64)
    a.free(v)
    v[10] = 1                                   # a write after free (the view stays mapped)
    with pytest.raises(membuf.UseAfterFreeError) as info:
        a.check()
    text = str(info.value)
    assert "offset 10" in text and "Allocated at" in text and "Freed at" in text
    assert "test_write_into_freed_bytes_is_caught_by_check" in text   # both stacks name us
    assert info.value.size == 64
    a.check()                                   # reported once: poisoned again
    a.reset()


def test_write_into_freed_bytes_is_caught_when_it_leaves_quarantine() -> None:
    a = membuf.Allocator(debug=True)
    assert a._debug is not None
    a._debug.quarantine_ranges = 1
    v = a.malloc(32)
    a.free(v)
    v[0] = 0
    w = a.malloc(32)
    with pytest.raises(membuf.UseAfterFreeError):
        a.free(w)                               # evicts v's range: its poison is checked
    assert a.stats().in_use == 0                # the free itself happened
    a.check()
    a.reset()


def test_untouched_freed_bytes_pass_check() -> None:
    a = membuf.Allocator(debug=True)
    for _ in range(100):
        a.free(a.malloc(50))
    a.check()
    a.reset()


@pytest.mark.parametrize("debug", [False, True])
def test_read_only_views_free_alike(debug: bool) -> None:
    a = membuf.Allocator(debug=debug)
    v = a.malloc(10)
    a.free(v.toreadonly())
    assert a.stats().in_use == 0
    a.reset()


@pytest.mark.parametrize("debug", [False, True])
def test_released_view_is_a_free_error(debug: bool) -> None:
    a = membuf.Allocator(debug=debug)
    v = a.malloc(10)
    w = v[:]
    w.release()
    with pytest.raises(membuf.FreeError, match="released"):
        a.free(w)
    assert a.stats().in_use == 10
    a.reset()


def test_failed_recycle_does_not_raise_again_from_the_finalizer() -> None:
    a = membuf.Allocator()
    rm = membuf.RecyclableMemory(a)
    v = rm.next_n(10)
    a.free(v)                                   # freed behind the owner's back
    with pytest.raises(membuf.FreeError):
        rm.recycle()
    with collected() as seen:
        del rm
    assert seen == []
    assert a.stats().in_use == 0


def test_batch_free_error_names_the_overlapping_item() -> None:
    a = membuf.Allocator()
    v = a.malloc(100)
    with pytest.raises(membuf.FreeError, match="overlaps item 0 of the same batch") as info:
        a._free_batch([*_pair(v[:60]), *_pair(v[40:])])
    assert "item 1" in str(info.value)
    assert a.stats().in_use == 100
    a.free(v)


def _pair(view: memoryview) -> tuple[int, int]:
    length, address = membuf._core.extent(view)
    return address, length
