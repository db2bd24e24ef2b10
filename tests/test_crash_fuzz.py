"""A short run of the crash fuzzer (fuzz/crash.py): random API sequences, misuse included.

Each child process runs one seed's sequence of allocator, RecyclableMemory,
Reader, codec and socketpair-stream calls, with double, foreign, strided,
read-only and released views, resets, trims, dropped allocators and writes
after free mixed in, and every kept view read and written after every step.
A child must exit 0: a negative return code is a crash (a signal), 1 is an
undocumented exception or a broken content / model check, reported with the
seed, the step and the last operations (replay with the printed command).

The budget here is small and fixed (the same seeds every run): 8 children x
300 steps, a few seconds on 2 cores. ``make fuzz`` runs the long one with new
seeds. ``MEMBUF_CRASH_RUNS`` / ``MEMBUF_CRASH_STEPS`` / ``MEMBUF_CRASH_SEED``
change the budget and the seeds.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from unraisable import collected

from membuf import Allocator, Memory, NeedMore, Reader, RecyclableMemory, UseAfterFreeError
from membuf.reader import PyReader

FUZZ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
if FUZZ_DIR not in sys.path:
    sys.path.insert(0, FUZZ_DIR)

import crash  # noqa: E402

RUNS = int(os.environ.get("MEMBUF_CRASH_RUNS", "8"))
STEPS = int(os.environ.get("MEMBUF_CRASH_STEPS", "300"))
BASE_SEED = int(os.environ.get("MEMBUF_CRASH_SEED", "0"))


def test_every_child_exits_cleanly() -> None:
    report = crash.drive(RUNS, STEPS, budget_seconds=120, jobs=min(2, os.cpu_count() or 1),
                         base_seed=BASE_SEED, child_timeout=60)
    text = report.text(["--steps", str(STEPS)])
    print(text)
    assert len(report.results) == RUNS, text
    assert not report.failures, text
    assert report.steps == RUNS * STEPS, text


def test_a_child_is_deterministic() -> None:
    """One seed, run twice, takes the same path (same counts in its summary line)."""
    first, second = (crash.drive(1, 120, budget_seconds=60, jobs=1, base_seed=BASE_SEED + 100)
                     for _ in range(2))
    assert not first.failures and not second.failures, first.text() + second.text()
    assert first.results[0].summary == second.results[0].summary


# -- the findings the fuzzer once tolerated (KNOWN_BUGS), one regression test each ---------


def _uaf_pending(a: Allocator) -> None:
    """Make the next free that evicts (or check()) find a write after free: a 1 MiB range
    freed and written, so the next free pushes it out of the quarantine."""
    big = a.malloc(1 << 20)
    a.free(big)
    big[0] = 1


def test_recycle_that_finds_a_use_after_free_forgets_its_ranges() -> None:
    """recycle-uaf-keeps-pairs: the batch free raises UseAfterFreeError after freeing;
    the object must forget its ranges, or its next recycle or its finalizer frees them
    again (after malloc may have handed them to someone else)."""
    a = Allocator(debug=True)
    rm = RecyclableMemory(a)
    rm.next_n(16)[:] = b"x" * 16
    _uaf_pending(a)
    with pytest.raises(UseAfterFreeError):
        rm.recycle()
    assert len(rm) == 0 and rm.count == 0 and rm.owned_bytes == 0
    assert a.stats().in_use == 0
    rm.recycle()                       # nothing left to free: no FreeError (a double free)
    with collected() as seen:
        del rm
    assert seen == []
    a.check()
    a.reset()


def test_a_use_after_free_the_finalizer_finds_is_reported_by_check() -> None:
    """finalizer-uaf-unraisable: the finalizer's free found a write after free. It must
    not escape as an unraisable exception, nor be lost: check() raises it (once)."""
    a = Allocator(debug=True)
    rm = RecyclableMemory(a)
    rm.next_n(16)
    _uaf_pending(a)
    with collected(quiet=True) as seen:
        del rm
    assert seen == []
    assert a.stats().in_use == 0       # the finalizer's free happened
    with pytest.raises(UseAfterFreeError, match="written after they were freed"):
        a.check()
    a.check()
    a.reset()


@pytest.mark.parametrize("debug", [False, True])
def test_clip_release_after_a_reset_owns_no_negative_range(debug: bool) -> None:
    """rm-reset-clip-negative-range: segments from before a reset, clipped with a release
    callback after a next_n of the new epoch, once cut a negative length out of the new
    ranges (recycle and the finalizer then raised OverflowError)."""
    a = Allocator(debug=debug)
    rm = RecyclableMemory(a)
    rm.next_n(10)
    rm.next_n(20)
    r = rm.reader()
    a.reset()
    rm.next_n(30)[:] = b"n" * 30       # a new epoch: the old ranges are forgotten
    r.skip(25)                         # inside the second old segment
    released: list[int] = []
    r.clip_front(lambda v: released.append(len(v)))
    assert released == [10, 15]
    assert rm.owned_bytes == 30
    assert all(n >= 0 for n in rm._pairs[1::2])
    assert len(r) == 5 + 30 and r.take(35).tobytes()[5:] == b"n" * 30
    rm.recycle()
    assert a.stats().in_use == 0
    rm.next_n(10)                      # and once more without a new next_n between
    rm.next_n(20)
    r = rm.reader()
    a.reset()
    r.skip(25)
    r.clip_front(lambda v: None)
    rm.next_n(5)
    assert rm.owned_bytes == 5
    with collected(quiet=True) as seen:
        del rm, r
    assert seen == [] and a.stats().in_use == 0
    a.check()
    a.reset()


@pytest.mark.parametrize("reader", [Reader, PyReader])
def test_a_read_onto_a_released_segment_consumes_nothing(reader: Any) -> None:
    """reader-released-segment: stepping onto a segment whose view was released raised
    ValueError after the cursor had moved (the pure twin), so the next read skipped it
    while len() still counted it, and a read of len() bytes failed inside the cursor."""
    seg = memoryview(bytearray(b"bbbb"))
    m = Memory(b"aa", seg, b"cc")
    r = reader(m)
    r.skip(2)                          # at the end of b"aa": the next read steps onto seg
    seg.release()
    calls = [r.read_byte, r.peek_byte, lambda: r.read_be(2), lambda: r.read_bytes(3),
             lambda: r.peek(3), lambda: r.take(3), lambda: r.skip(4), lambda: r.skip(len(r)),
             lambda: r.read_bytes(len(r)), lambda: list(r.range(len(r)))]
    for call in calls * 2:
        with pytest.raises(ValueError, match="released"):
            call()
        assert (r.offset, len(r)) == (2, 6)
    assert r.read_bytes(0) == b"" and r.offset == 2
    head = memoryview(bytearray(b"bbbb"))         # unread back onto a released segment
    r = reader(Memory(head, b"aa", b"cc"))
    r.skip(8)
    head.release()
    with pytest.raises(ValueError, match="released"):
        r.unread(7)
    assert (r.offset, len(r)) == (8, 0)
    r.unread(3)
    assert r.read_bytes(3) == b"acc"


@pytest.mark.parametrize("reader", [Reader, PyReader])
def test_read_until_after_a_clear_under_a_cursor_before_empty_segments(reader: Any) -> None:
    """reader-find-indexerror: find / read_until over a Memory cleared while the Reader
    sat at the end of a segment followed by empty segments (IndexError in the pure
    twin's search memo)."""
    m = Memory(b"ab", b"", b"")
    r = reader(m)
    r.skip(2)
    with pytest.raises(NeedMore):
        r.read_until(b"\n", 10)
    m.clear()
    with pytest.raises(NeedMore):
        r.read_until(b"\n", 10)
    m.push(b"", b"x", b"", b"y\nz")
    assert r.find(b"\n") == 2
    assert r.read_until(b"\n", 10).tobytes() == b"xy" and r.read_bytes(1) == b"z"
