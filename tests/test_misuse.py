"""The misuse table (docs/design.md §7, docs/reliability.md): every misuse gets its
documented exception, a message that names what was asked and what was there,
and changes nothing.

Each row builds a fresh situation and returns the bad call plus a snapshot
function; the test checks the exception type, that every message pattern
matches, and that the snapshot (allocator stats and the bytes of every live
view, or a Reader's offset, length and content) is the same afterwards.
Allocator rows run with and without debug mode, whose free path is separate.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pytest
import trio
import trio.testing

from membuf import (
    Allocator,
    FreeError,
    MalformedError,
    MembufError,
    Memory,
    MemoryLimitError,
    NeedMore,
    Reader,
    RecyclableMemory,
    StreamReader,
)
from membuf.allocator import AllocatorStats
from membuf.codecs import Delimited, LengthPrefixed

Situation = tuple[Callable[[], object], Callable[[], object]]   # (the misuse, a snapshot)


@dataclass(frozen=True)
class Row:
    name: str
    make: Callable[[Allocator], Situation]
    exc: type[BaseException]
    patterns: tuple[str, ...]       # regexes the message must all match
    allocator: bool = True          # run with a normal and a debug allocator


def _stats(a: Allocator, *ignore: str) -> dict[str, int]:
    s = a.stats()
    return {f.name: getattr(s, f.name) for f in fields(AllocatorStats) if f.name not in ignore}


def alloc_snapshot(a: Allocator, *views: memoryview, ignore: tuple[str, ...] = ()) -> Callable[[], object]:
    """Stats (minus ``ignore``), and for each live view: still owned, same bytes."""
    return lambda: (_stats(a, *ignore), [(a.owns(v), bytes(v)) for v in views])


def reader_snapshot(r: Reader) -> Callable[[], object]:
    return lambda: (r.offset, len(r), len(r.memory), r.memory.to_bytes())


def live(a: Allocator, n: int, fill: bytes = b"k") -> memoryview:
    mv = a.malloc(n)
    mv[:] = fill * n
    return mv


# -- allocator rows --------------------------------------------------------------------


def double_free(a: Allocator) -> Situation:
    keep = live(a, 10)
    mv = a.malloc(64)
    a.free(mv)
    return (lambda: a.free(mv)), alloc_snapshot(a, keep)


def double_free_of_a_part(a: Allocator) -> Situation:
    keep = live(a, 10)
    mv = live(a, 64)
    a.free(mv[16:32])
    return (lambda: a.free(mv[20:24])), alloc_snapshot(a, keep, mv[:16], mv[32:])


def overlapping_free(a: Allocator) -> Situation:
    mv = live(a, 100)
    a.free(mv[40:60])
    return (lambda: a.free(mv[30:50])), alloc_snapshot(a, mv[:40], mv[60:])


def foreign_free(a: Allocator) -> Situation:
    keep = live(a, 10)
    return (lambda: a.free(bytearray(16))), alloc_snapshot(a, keep)


def other_allocators_view(a: Allocator) -> Situation:
    keep = live(a, 10)
    other = Allocator()
    theirs = other.malloc(32)
    return (lambda: a.free(theirs)), alloc_snapshot(a, keep)


def free_after_reset(a: Allocator) -> Situation:
    mv = a.malloc(64)
    a.reset()
    return (lambda: a.free(mv)), alloc_snapshot(a)


def free_non_contiguous(a: Allocator) -> Situation:
    mv = live(a, 64)
    return (lambda: a.free(mv[::2])), alloc_snapshot(a, mv)


def batch_free_with_one_bad_item(a: Allocator) -> Situation:
    rm = RecyclableMemory(a)
    rm.next_n(32)[:] = b"r" * 32
    rm.next_n(32)[:] = b"s" * 32
    second = list(rm)[1]
    a.free(second)                      # freed behind the RecyclableMemory's back
    return rm.recycle, lambda: (_stats(a), rm.owned_bytes, len(rm))


def push_owned_foreign(a: Allocator) -> Situation:
    rm = RecyclableMemory(a)
    rm.next_n(8)
    return (lambda: rm.push_owned(bytearray(5))), lambda: (_stats(a), rm.owned_bytes, len(rm))


def negative_malloc(a: Allocator) -> Situation:
    keep = live(a, 10)
    return (lambda: a.malloc(-1)), alloc_snapshot(a, keep)


def negative_next_n(a: Allocator) -> Situation:
    rm = RecyclableMemory(a)
    return (lambda: rm.next_n(-5)), lambda: (_stats(a), rm.owned_bytes, len(rm))


def negative_borrow(a: Allocator) -> Situation:
    return (lambda: a.borrow(-1)), alloc_snapshot(a)


def free_rest_out_of_range(a: Allocator) -> Situation:
    mv = live(a, 64)
    return (lambda: a.free_rest(mv, 65)), alloc_snapshot(a, mv)


def huge_malloc(n: int) -> Callable[[Allocator], Situation]:
    def make(a: Allocator) -> Situation:
        keep = live(a, 10)
        return (lambda: a.malloc(n)), alloc_snapshot(a, keep, ignore=("failed",))
    return make


def huge_next_n(a: Allocator) -> Situation:
    rm = RecyclableMemory(a)
    return (lambda: rm.next_n(2**63)), lambda: (_stats(a, "failed"), rm.owned_bytes, len(rm))


def over_max_bytes(a: Allocator) -> Situation:
    capped = Allocator(max_bytes=1 << 20, debug=a.debug)
    keep = live(capped, 1000)
    return (lambda: capped.malloc(2 << 20)), alloc_snapshot(capped, keep, ignore=("failed",))


# -- reader and codec rows (no allocator involved) -----------------------------------------


def reader_op(data: list[bytes], op: Callable[[Reader], Any], skip: int = 0) -> Callable[[Allocator], Situation]:
    def make(_: Allocator) -> Situation:
        r = Reader.from_bytes(*data)
        r.skip(skip)
        return (lambda: op(r)), reader_snapshot(r)
    return make


def codec_split(codec: Any, data: list[bytes], views: bool = False) -> Callable[[Allocator], Situation]:
    def make(_: Allocator) -> Situation:
        r = Reader.from_bytes(*data)
        return (lambda: codec.split_views(r) if views else codec.split(r)), reader_snapshot(r)
    return make


def stream_over_max_buffered(_: Allocator) -> Situation:
    """A read bigger than max_buffered is MalformedError, not an out-of-memory."""
    send, recv = trio.testing.memory_stream_one_way_pair()
    rx = StreamReader(recv, chunk_size=64, max_buffered=256)

    async def fill() -> None:
        await send.send_all(b"x" * 100)
        await rx.peek(100)

    trio.run(fill)

    async def misuse() -> None:
        await rx.read_exactly(1000)

    def snapshot() -> object:
        s = rx.stats()
        return s.buffered, s.received, rx.allocator.stats().in_use

    return (lambda: trio.run(misuse)), snapshot


LEB_TOO_LONG = [b"\xff" * 5, b"\xff" * 6]            # 11 continuation bytes, split
LEB_OVER_64 = [b"\xff" * 9, b"\x02"]

ROWS = [
    Row("double free", double_free, FreeError,
        (r"free of 64 bytes at 0x[0-9a-f]+", r"already freed|already free", r"nothing was freed")),
    Row("double free of part of a view", double_free_of_a_part, FreeError,
        (r"free of 4 bytes", r"already free", r"nothing was freed")),
    Row("overlapping free", overlapping_free, FreeError,
        (r"free of 20 bytes", r"already free", r"nothing was freed")),
    Row("foreign free (a bytearray)", foreign_free, FreeError,
        (r"free of 16 bytes", r"not memory of this allocator")),
    Row("free of another allocator's view", other_allocators_view, FreeError,
        (r"free of 32 bytes", r"not memory of this allocator", r"allocator that made them")),
    Row("free after reset", free_after_reset, FreeError,
        (r"free of 64 bytes", r"not memory of this allocator")),
    Row("free of a non-contiguous view", free_non_contiguous, FreeError,
        (r"contiguous", r"strides=\(2,\)")),
    Row("batch free (recycle) with one range already freed", batch_free_with_one_bad_item, FreeError,
        (r"item \d of a batch free|quarantine", r"32 bytes|bytes 32\.\.64", r"already free")),
    Row("push_owned of memory the allocator does not own", push_owned_foreign, FreeError,
        (r"push_owned of 5 bytes", r"does not own")),
    Row("negative malloc", negative_malloc, ValueError, (r"malloc size must be >= 0, got -1",)),
    Row("negative next_n", negative_next_n, ValueError, (r"must be >= 0, got -5",)),
    Row("negative borrow", negative_borrow, ValueError, (r"borrow size must be >= 0, got -1",)),
    Row("free_rest past the end", free_rest_out_of_range, ValueError,
        (r"keeps 0\.\.64 bytes", r"asked for 65")),
    Row("malloc(2**63)", huge_malloc(2**63), MemoryLimitError,
        (r"malloc\(9223372036854775808\)", r"1 TiB", r"\d+ bytes reserved")),
    Row("malloc(2**64), over size_t", huge_malloc(2**64), MemoryLimitError,
        (r"malloc\(18446744073709551616\)", r"1 TiB")),
    Row("malloc(1 TiB)", huge_malloc(1 << 40), MemoryLimitError, (r"malloc\(1099511627776\)", r"1 TiB")),
    Row("next_n(2**63)", huge_next_n, MemoryLimitError, (r"malloc\(9223372036854775808\)",)),
    Row("malloc over max_bytes", over_max_bytes, MemoryLimitError,
        (r"malloc\(2097152\)", r"max_bytes=1048576", r"\d+ bytes reserved, 1000 in use")),
    Row("read past the end (read_bytes)", reader_op([b"abc", b"de"], lambda r: r.read_bytes(10)),
        NeedMore, (r"read_bytes\(10\) needs 10 bytes, 5 are buffered", r"5 more"), allocator=False),
    Row("read past the end (read_be across segments)",
        reader_op([b"\x01", b"\x02"], lambda r: r.read_be(4)), NeedMore,
        (r"read_be\(4\) needs 4 bytes, 2 are buffered",), allocator=False),
    Row("read past the end (take 2**63)", reader_op([b"abc"], lambda r: r.take(2**63)), NeedMore,
        (r"take\(9223372036854775808\)", r"3 are buffered"), allocator=False),
    Row("read past the end after a skip", reader_op([b"abcdef"], lambda r: r.skip(4), skip=3),
        NeedMore, (r"skip\(4\) needs 4 bytes, 3 are buffered",), allocator=False),
    Row("negative read size", reader_op([b"abc"], lambda r: r.read_bytes(-1)), MalformedError,
        (r"read_bytes size must be an int >= 0, got -1",), allocator=False),
    Row("read_be(9)", reader_op([b"x" * 16], lambda r: r.read_be(9)), MalformedError,
        (r"read_be\(n\) reads 1 to 8 bytes, got n=9",), allocator=False),
    Row("unread before the start", reader_op([b"abcdef"], lambda r: r.unread(3), skip=2),
        MalformedError, (r"step back 0 to 2 bytes", r"n=3"), allocator=False),
    Row("malformed LEB128: longer than 10 bytes", reader_op(LEB_TOO_LONG, lambda r: r.read_leb128()),
        MalformedError, (r"longer than 10 bytes", r"ff ff ff"), allocator=False),
    Row("malformed LEB128: over 64 bits", reader_op(LEB_OVER_64, lambda r: r.read_leb128()),
        MalformedError, (r"over 64 bits", r"ff 02"), allocator=False),
    Row("malformed signed LEB128: over 64 bits", reader_op(LEB_OVER_64, lambda r: r.read_sleb128()),
        MalformedError, (r"read_sleb128", r"over 64 bits"), allocator=False),
    Row("read_until with no delimiter within max_size",
        reader_op([b"abc", b"defgh"], lambda r: r.read_until(b"\r\n", 4)), MalformedError,
        (r"no b'\\r\\n' within 6 bytes", r"max_size=4", r"nothing consumed"), allocator=False),
    Row("over-long frame (be16)",
        codec_split(LengthPrefixed("be16", max_frame=10), [b"\x00", b"\x20" + b"x" * 40]),
        MalformedError, (r"be16 frame of 32 bytes", r"max_frame=10"), allocator=False),
    Row("over-long frame (be32, split_views)",
        codec_split(LengthPrefixed("be32", max_frame=1000), [b"\xff\xff\xff\xff" + b"x" * 8], True),
        MalformedError, (r"frame of 4294967295 bytes", r"max_frame=1000"), allocator=False),
    Row("over-long frame (leb128 prefix over 10 bytes)",
        codec_split(LengthPrefixed("leb128", max_frame=10), LEB_TOO_LONG), MalformedError,
        (r"longer than 10 bytes",), allocator=False),
    Row("over-long frame (leb128 prefix, value over max_frame)",
        codec_split(LengthPrefixed("leb128", max_frame=100), [b"\x80\x01" + b"x" * 200]),
        MalformedError, (r"frame of 128 bytes", r"max_frame=100"), allocator=False),
    Row("over-long frame (Delimited)",
        codec_split(Delimited(b"\r\n", max_frame=4), [b"abcd", b"efgh"]), MalformedError,
        (r"no b'\\r\\n' within 6 bytes", r"max_size=4"), allocator=False),
    Row("a float count (skip)", reader_op([b"abc", b"de"], lambda r: r.skip(0.5), skip=1),
        TypeError, (r"skip size must be an int, got float",), allocator=False),
    Row("a bool width (read_be)", reader_op([b"abc"], lambda r: r.read_be(True)), TypeError,
        (r"read_be\(n\) needs an int n, got bool",), allocator=False),
    Row("an int delimiter (read_until)", reader_op([b"a\r", b"\nb"], lambda r: r.read_until(10, 9)),
        TypeError, (r"read_until delimiter must be a bytes-like object, got int",), allocator=False),
    Row("an int to find", reader_op([b"abc"], lambda r: r.find(98)), TypeError,
        (r"find's argument must be a bytes-like object, got int",), allocator=False),
    Row("read_line with no delimiter within max_size",
        reader_op([b"+O", b"K but long"], lambda r: r.read_line(4)), MalformedError,
        (r"read_line: no b'\\r\\n' within 6 bytes", r"max_size=4", r"nothing consumed"),
        allocator=False),
    Row("LEB128 longer than max_bytes", reader_op([b"\x80", b"\x80\x01"],
                                                   lambda r: r.read_leb128(max_bytes=2)),
        MalformedError, (r"longer than 2 bytes", r"80 80"), allocator=False),
    Row("negative adjusted frame length",
        codec_split(LengthPrefixed("be16", adjust=-4), [b"\x00", b"\x02ab"]), MalformedError,
        (r"be16 length field 2 with adjust=-4", r"negative frame length \(-2\)"), allocator=False),
    Row("strip past the frame's end",
        codec_split(LengthPrefixed("be16", strip=6), [b"\x00\x01", b"x"], True), MalformedError,
        (r"strip=6 is past the end of the 3-byte frame",), allocator=False),
    Row("stream read over max_buffered", stream_over_max_buffered, MalformedError,
        (r"needs 1000 bytes buffered", r"max_buffered=256"), allocator=False),
]


def _cases() -> list[Any]:
    out = []
    for row in ROWS:
        modes = (False, True) if row.allocator else (False,)
        for debug in modes:
            out.append(pytest.param(row, debug, id=row.name + (" [debug]" if debug else "")))
    return out


# the batch row leaves a RecyclableMemory whose owned range was freed behind its back:
# its finalizer's own FreeError is reported as unraisable, which is the point of that row
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(("row", "debug"), _cases())
def test_misuse(row: Row, debug: bool) -> None:
    a = Allocator(debug=debug)
    misuse, snapshot = row.make(a)
    before = snapshot()
    with pytest.raises(row.exc) as info:
        misuse()
    message = str(info.value)
    del info     # no exception -> traceback -> this frame cycle (see the GC crash test below)
    for pattern in row.patterns:
        assert re.search(pattern, message), f"{row.name}: {pattern!r} not in {message!r}"
    assert snapshot() == before, f"{row.name}: the failed call changed something"


@pytest.mark.parametrize(("row", "debug"), _cases())
def test_membuf_errors_are_also_builtin_errors(row: Row, debug: bool) -> None:
    """Code that knows nothing of membuf still catches these: ValueError, EOFError, MemoryError."""
    if issubclass(row.exc, MembufError):
        builtin = {FreeError: ValueError, MalformedError: ValueError, NeedMore: EOFError,
                   MemoryLimitError: MemoryError}[row.exc]   # type: ignore[index]
        assert issubclass(row.exc, builtin)


def test_failed_malloc_is_counted() -> None:
    """The one stat a refused malloc changes on purpose: ``failed``."""
    a = Allocator()
    with pytest.raises(MemoryLimitError):
        a.malloc(2**63)
    assert a.stats().failed == 1 and a.stats().in_use == 0


def test_reader_still_works_after_each_misuse() -> None:
    """A failed read leaves a Reader fully usable: the next good read sees every byte."""
    r = Reader(Memory(b"\xff" * 5, b"\xff" * 6, b"\x01tail"))
    for bad in (lambda: r.read_leb128(), lambda: r.read_bytes(99), lambda: r.read_be(0)):
        with pytest.raises(MembufError):
            bad()
    assert r.read_bytes(11) == b"\xff" * 11 and r.read_leb128() == 1 and r.read_bytes(4) == b"tail"


def test_dangling_view_after_reset_and_regrowth_is_not_detected() -> None:
    """The documented limit of the safety contract: after reset, a new arena may be mapped
    at the same address, and a stale view then aliases new memory (a dangling pointer,
    as in C). Nothing can tell the two apart by address; docs/reliability.md says so."""
    a = Allocator()
    stale = a.malloc(64)
    a.reset()
    fresh = a.malloc(64)
    if a.owns(stale):                       # same address again: free would succeed
        a.free(stale)
        assert a.stats().in_use == 0        # ... and free the *new* allocation's bytes
    del fresh


GC_CYCLE_SCRIPT = """
import gc
from membuf import Allocator, FreeError
a = Allocator(debug={debug})
keep = a.malloc(8)

def misuse():
    mv = a.malloc(64)
    a.free(mv)
    try:
        a.free(mv)
    except FreeError as exc:
        err = exc      # exception -> traceback -> this frame -> err: an ordinary reference cycle
    return None

for _ in range(50):
    misuse()
    gc.collect()
print("survived")
"""


@pytest.mark.parametrize("debug", [False, True])
def test_caught_free_error_in_a_reference_cycle_does_not_crash_the_gc(debug: bool) -> None:
    """Keeping a caught FreeError in a local makes a cycle through the traceback, which
    holds Allocator.free's frame. If that frame still holds the ``ffi.from_buffer(mv)``
    cdata, the cyclic GC clears the memoryview while cffi still has it exported, and
    the cdata's later release dereferences the cleared view: a segfault (CPython 3.11
    memoryview tp_clear + cffi). Run in a subprocess so a crash fails only this test."""
    proc = subprocess.run([sys.executable, "-c", GC_CYCLE_SCRIPT.format(debug=debug)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "survived" in proc.stdout, (
        f"exit {proc.returncode}: {proc.stderr[-800:]}")
