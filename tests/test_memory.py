"""Memory and RecyclableMemory (docs/design.md §3)."""

from __future__ import annotations

import array
import gc
import mmap
import os
import socket
import threading
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from splitting import SPLITS, memory_split, split

from membuf import Allocator, FreeError, Memory, MemoryLimitError, RecyclableMemory, _core

DATA = bytes(range(50))


# -- Memory -------------------------------------------------------------------------


def test_segments_by_reference_any_bytes_like() -> None:
    ba = bytearray(b"abc")
    mm = mmap.mmap(-1, 4)
    mm[:] = b"mmap"
    arr = array.array("H", [0x4241])                     # cast to bytes, native order
    m = Memory(b"xy", ba, memoryview(b"zz"), mm, arr)
    assert len(m) == 2 + 3 + 2 + 4 + 2 and m.count == 5
    ba[0] = ord("A")
    mm[0:1] = b"M"
    assert m.to_bytes() == b"xyAbczzMmap" + arr.tobytes()
    assert all(isinstance(v, memoryview) and v.format == "B" for v in m)
    for v in m:
        v.release() if False else None
    del m
    mm.close()


def test_rejects_strided_and_non_buffers() -> None:
    with pytest.raises(TypeError):
        Memory(memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        Memory("text")
    m = Memory(b"ab")
    with pytest.raises(TypeError):
        m.push(3)
    assert len(m) == 2 and m.count == 1


def test_push_extend_len_is_running() -> None:
    m = Memory()
    assert len(m) == 0 and m.count == 0 and m.to_bytes() == b""
    m.push(b"ab", b"", b"cde")
    other = Memory(b"f", b"gh")
    m.extend(other)
    assert len(m) == 8 and m.count == 5 and m.to_bytes() == b"abcdefgh"
    assert len(other) == 3 and other.count == 2
    m.clear()
    assert len(m) == 0 and m.count == 0 and list(m) == []


@pytest.mark.parametrize("split_name", SPLITS)
def test_equality_however_split(split_name: str) -> None:
    m = memory_split(DATA, split_name)
    assert m == Memory(DATA) == DATA
    assert m == bytearray(DATA) and m == memoryview(DATA)
    assert m != DATA[:-1] + b"\xff" and m != DATA[:-1] and m != Memory()
    assert (m == "text") is False
    with pytest.raises(TypeError):
        hash(m)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.data())
def test_equality_model(data: bytes, draw: st.DataObject) -> None:
    def cut() -> Memory:
        cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
        return Memory(*(data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)))

    a, b = cut(), cut()
    assert a == b and a.to_bytes() == data
    if data:
        i = draw.draw(st.integers(0, len(data) - 1))
        changed = bytearray(data)
        changed[i] ^= 0x01
        assert a != Memory(bytes(changed))


@pytest.mark.parametrize("split_name", SPLITS)
def test_bytes_tobytes_and_alias(split_name: str) -> None:
    m = memory_split(DATA, split_name)
    assert bytes(m) == m.tobytes() == m.to_bytes() == DATA
    assert bytes(Memory()) == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.data())
def test_slices_match_bytes_however_split(data: bytes, draw: st.DataObject) -> None:
    """m[i:j] is a zero-copy Memory with exactly bytes' slice semantics; m[i] an int."""
    how = draw.draw(st.sampled_from(SPLITS))
    m = Memory(*split(data, how)) if data else Memory()
    i = draw.draw(st.integers(-50, 50) | st.none())
    j = draw.draw(st.integers(-50, 50) | st.none())
    part = m[i:j]
    assert isinstance(part, Memory) and part.tobytes() == data[i:j] and len(part) == len(data[i:j])
    assert all(len(v) for v in part)                  # no empty pieces
    if data:
        k = draw.draw(st.integers(-len(data), len(data) - 1))
        assert m[k] == data[k]
    with pytest.raises(IndexError):
        m[len(data)]
    with pytest.raises(ValueError, match="step 1"):
        m[::2]


def test_slices_are_views_of_the_segments() -> None:
    a, b = bytearray(b"hello "), bytearray(b"world")
    m = Memory(a, b)
    mid = m[3:8]
    a[4] = ord("O")
    b[0] = ord("W")
    assert mid.tobytes() == b"lO Wo" and mid.count == 2


def test_push_is_all_or_nothing() -> None:
    m = Memory(b"abc")
    r = m.reader()
    with pytest.raises(TypeError):
        m.push(b"xy", 5)
    assert (len(m), m.count, m.tobytes(), len(r)) == (3, 1, b"abc", 3)
    m.push(b"xy", bytearray(b"z"), memoryview(b"!"))
    assert m.tobytes() == b"abcxyz!" and len(r) == 7


@pytest.mark.parametrize("split_name", SPLITS)
def test_copy_to(split_name: str) -> None:
    m = memory_split(DATA, split_name)
    dst = bytearray(len(DATA) + 3)
    assert m.copy_to(dst) == len(DATA) and dst[: len(DATA)] == DATA and dst[-3:] == b"\0\0\0"
    small = bytearray(b"\x01" * (len(DATA) - 1))
    with pytest.raises(ValueError):
        m.copy_to(small)
    assert small == b"\x01" * (len(DATA) - 1)           # nothing written
    with pytest.raises(TypeError):
        m.copy_to(bytes(100))


@pytest.mark.parametrize("split_name", SPLITS)
def test_write_to_pipe(split_name: str) -> None:
    data = DATA * 3
    m = memory_split(data, split_name)
    rfd, wfd = os.pipe()
    try:
        assert m.write_to(wfd) == len(data)
        assert os.read(rfd, 1000) == data
        assert len(m) == len(data)                       # unchanged
    finally:
        os.close(rfd)
        os.close(wfd)


def test_write_to_socket_partial_writes() -> None:
    # more than a socket buffer, in many segments (> IOV_MAX too): sendmsg writes partially
    chunks = [os.urandom(997) for _ in range(1500)]
    m = Memory(*chunks)
    a, b = socket.socketpair()
    got = bytearray()

    def drain() -> None:
        while len(got) < len(m):
            piece = b.recv(65536)
            if not piece:
                break
            got.extend(piece)

    t = threading.Thread(target=drain)
    t.start()
    try:
        assert m.write_to(a) == len(m)
        t.join(10)
    finally:
        a.close()
        b.close()
    assert bytes(got) == b"".join(chunks)


def test_write_to_nonblocking_reports_progress() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    m = Memory(*(b"x" * 65536 for _ in range(64)))
    try:
        with pytest.raises(BlockingIOError) as ei:
            m.write_to(a)
        assert 0 < ei.value.characters_written < len(m)
    finally:
        a.close()
        b.close()


def test_repr() -> None:
    assert "3 bytes in 2 segments" in repr(Memory(b"ab", b"c"))


# -- RecyclableMemory ------------------------------------------------------------------


@pytest.fixture
def alloc() -> Allocator:
    with Allocator(arena_size=64 << 10) as a:
        yield a


def test_next_n_push_recycle(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    buf = rm.next_n(10)
    buf[:] = b"0123456789"
    rm.push(b"ref")
    view = alloc.malloc(5)
    view[:] = b"owned"
    rm.push_owned(view)
    rm.next_n(0)
    assert rm.to_bytes() == b"0123456789refowned" and rm.count == 4
    assert alloc.stats().in_use == 15 and rm.owned_bytes == 15
    rm.recycle()
    assert alloc.stats().in_use == 0 and len(rm) == 0 and rm.count == 0
    rm.next_n(7)                                          # reusable after recycle
    rm.recycle()
    assert alloc.stats().in_use == 0


def test_recycle_is_one_native_call(alloc: Allocator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = alloc._free_batch
    monkeypatch.setattr(alloc, "_free_batch",
                        lambda pairs, epoch=None: (calls.append(len(pairs)), real(pairs, epoch)))
    rm = RecyclableMemory(alloc)
    for n in (1, 20, 300, 4000):
        rm.next_n(n)
    calls.clear()                 # next_n gave back a run's tail when 4000 did not fit
    rm.recycle()
    assert len(calls) == 1 and alloc.stats().in_use == 0   # the pieces and the tail at once


def test_next_n_bumps_inside_runs(alloc: Allocator) -> None:
    """A burst of small next_n calls costs one native malloc per run, and stats() stays
    exact between calls (a run's unused tail is not counted as in use)."""
    rm = RecyclableMemory(alloc)
    before = alloc.stats().mallocs
    views = [rm.next_n(100) for _ in range(40)]           # 4000 bytes: one 4 KiB run
    assert alloc.stats().mallocs - before == 1
    assert alloc.stats().in_use == 4000 == rm.owned_bytes
    for i, v in enumerate(views):
        v[:] = bytes([i]) * 100
    assert rm.to_bytes() == b"".join(bytes([i]) * 100 for i in range(40))
    big = rm.next_n(1 << 20)                              # larger than a run: exact
    assert len(big) == 1 << 20 and alloc.stats().in_use == 4000 + (1 << 20)
    rm.recycle()
    assert alloc.stats().in_use == 0
    alloc.check()


def test_next_n_after_reset_forgets_the_old_run(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    rm.next_n(10)
    alloc.reset()
    v = rm.next_n(10)                 # the old run is gone: a new one, owned again
    v[:] = b"x" * 10
    assert alloc.stats().in_use == 10 == rm.owned_bytes
    rm.next_n(5000)
    assert alloc.stats().in_use == 5010
    rm.recycle()                      # frees only what the new epoch owns
    assert alloc.stats().in_use == 0
    alloc.check()


def test_push_owned_refuses_foreign(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    with pytest.raises(FreeError):
        rm.push_owned(bytearray(8))
    with Allocator() as other:
        with pytest.raises(FreeError):
            rm.push_owned(other.malloc(8))
    assert rm.count == 0
    rm.recycle()


def test_context_manager_recycles(alloc: Allocator) -> None:
    with RecyclableMemory(alloc) as rm:
        rm.next_n(100)
        assert alloc.stats().in_use == 100
    assert alloc.stats().in_use == 0


def test_finalizer_frees_without_keeping_alive(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    rm.next_n(64)
    rm.next_n(32)
    rm.push(b"ref")
    assert alloc.stats().in_use == 96
    del rm
    gc.collect()
    assert alloc.stats().in_use == 0


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_finalizer_warns_in_debug_mode() -> None:
    with Allocator(debug=True) as a:
        rm = RecyclableMemory(a)
        rm.next_n(8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del rm
            gc.collect()
        assert a.stats().in_use == 0
        assert any(issubclass(w.category, ResourceWarning) and "recycle" in str(w.message)
                   for w in caught)


def test_clear_keeps_ownership(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    rm.next_n(10)
    rm.clear()
    assert len(rm) == 0 and rm.owned_bytes == 10 and alloc.stats().in_use == 10
    rm.recycle()
    assert alloc.stats().in_use == 0


@pytest.mark.parametrize("split_name", SPLITS)
def test_clip_front_with_release_is_not_double_freed(alloc: Allocator, split_name: str) -> None:
    rm = RecyclableMemory(alloc)
    for seg in split(DATA, split_name):
        if len(seg):
            rm.next_n(len(seg))[:] = seg
        rm.push(b"")
    r = rm.reader()
    r.skip(7)
    r.clip_front(alloc.free)                 # the consumed prefix goes back now
    assert alloc.stats().in_use == len(DATA) - 7 == rm.owned_bytes
    r.skip(3)
    r.clip_front()                           # no release: still owned until recycle
    assert alloc.stats().in_use == len(DATA) - 7 == rm.owned_bytes
    r.skip(5)
    r.clip_front(alloc.free)
    assert alloc.stats().in_use == len(DATA) - 15 + 3 == rm.owned_bytes
    assert rm.to_bytes() == DATA[15:]
    rm.recycle()                             # raises FreeError on any double free
    assert alloc.stats().in_use == 0
    alloc.check()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.sampled_from(["free", "keep", "none"])),
                min_size=1, max_size=12))
def test_ownership_bookkeeping_model(steps: list[tuple[int, bool, str]]) -> None:
    with Allocator(arena_size=64 << 10) as a:
        rm = RecyclableMemory(a)
        r = rm.reader()
        kept: list[memoryview] = []              # pieces released to "keep": user frees them later
        for n, owned, action in steps:
            if owned:
                rm.next_n(n)[:] = bytes(n)
            else:
                rm.push(bytes(n))
            r.skip(min(len(r), n // 2 + 1))
            if action == "free":
                r.clip_front(lambda v: a.free(v) if a.owns(v) else None)
            elif action == "keep":
                r.clip_front(kept.append)
            else:
                r.clip_front()
        in_use = a.stats().in_use
        kept_owned = sum(len(v) for v in kept if a.owns(v))
        assert in_use == rm.owned_bytes + kept_owned
        rm.recycle()
        for v in kept:
            if a.owns(v):
                a.free(v)
        assert a.stats().in_use == 0
        a.check()


def test_finalizer_after_reset_frees_nothing_new() -> None:
    """A RecyclableMemory that outlives its allocator's reset must not free whatever
    now sits at its old addresses (reported by the media and reader work)."""
    import gc

    a = Allocator()
    rm = RecyclableMemory(a)
    rm.next_n(100)
    a.reset()
    mv = a.malloc(100)                 # very likely lands where rm's bytes were
    assert rm.owned_bytes == 0
    del rm
    gc.collect()
    assert a.stats().in_use == 100 and a.owns(mv)
    rm2 = RecyclableMemory(a)
    rm2.next_n(10)
    a.reset()
    rm2.next_n(20)                     # owned after the reset: only this one is freed
    assert rm2.owned_bytes == 20
    rm2.recycle()
    assert a.stats().in_use == 0


def test_a_one_byte_strided_view_is_a_readable_segment() -> None:
    """``mv[::2]`` of two bytes is one byte with stride 2: contiguous, so push() takes
    it, and the Reader must read it (it raised TypeError; found by the crash fuzzer,
    seed 153196174)."""
    a = Allocator()
    mv = a.malloc(2)
    mv[:] = b"xy"
    rm = RecyclableMemory(a)
    rm.push(mv[::2])
    rm.push_owned(mv[::2])
    m = Memory(mv[::2])
    m.push(mv[::2])
    assert rm.reader().read_bytes(2) == b"xx" and m.reader().read_bytes(2) == b"xx"
    rm.recycle()
    assert a.stats().in_use == 1
    a.reset()


@pytest.mark.parametrize("strategy", ["good-fit", "first-fit", "best-fit"])
def test_finalizer_never_frees_what_malloc_put_in_a_hole_of_its_run(strategy: str) -> None:
    """Bytes of a next_n run freed behind the RecyclableMemory's back and then handed to
    someone else by malloc are that someone's: the finalizer frees the run's unused
    tail (never handed out) and leaves the rest of the run alone (found by the crash
    fuzzer, seed 152371129: a StreamReader's receive chunk in the hole went back to the
    allocator while a frame viewed it)."""
    a = Allocator(strategy=strategy)
    rm = RecyclableMemory(a)
    piece = rm.next_n(2000)                  # one 4 KiB run: one owned range, tail included
    piece[:] = b"p" * 2000
    _, base = _core.extent(piece)
    a.free(piece[500:1000])                  # misuse: a 500-byte hole in the owned range
    theirs: list[memoryview] = []
    while not any(base + 500 <= _core.extent(mv)[1] < base + 1000 for mv in theirs):
        assert len(theirs) < 100, "malloc never used the hole"
        mv = a.malloc(200)                   # someone else's bytes, some in the hole
        mv[:] = bytes([len(theirs) + 1]) * 200
        theirs.append(mv)
    del piece, rm
    gc.collect()
    for i, mv in enumerate(theirs):
        assert a.owns(mv) and mv.tobytes() == bytes([i + 1]) * 200
    # the 2096-byte tail went back; the handed-out 1500 bytes stay allocated (the
    # RecyclableMemory cannot tell its own from malloc's) until the allocator is reset
    assert a.stats().in_use == 200 * len(theirs) + 1500
    a.check()
    a.reset()


def test_next_n_4096_bumps_inside_growing_runs(alloc: Allocator) -> None:
    """4 KiB pieces share runs too (each run holds at least two), and stats() is exact
    after every call: a run's unused tail is never counted as in use."""
    rm = RecyclableMemory(alloc)
    before = alloc.stats().mallocs
    for i in range(100):
        rm.next_n(4096)[:] = bytes([i]) * 4096
        assert alloc.stats().in_use == 4096 * (i + 1) == rm.owned_bytes
    assert alloc.stats().mallocs - before <= 10           # 8 KiB, 16 KiB, ... 256 KiB runs
    assert rm.to_bytes() == b"".join(bytes([i]) * 4096 for i in range(100))
    rm.recycle()
    assert alloc.stats().in_use == 0
    alloc.check()


def test_next_n_without_room_for_a_run_takes_the_exact_bytes() -> None:
    with Allocator(arena_size=64 << 10, max_arena_size=64 << 10, max_bytes=64 << 10) as a:
        a.malloc(16)
        rm = RecyclableMemory(a)
        v = rm.next_n(30000)               # its run would be 64 KiB: no room, so exact
        assert len(v) == 30000 and a.stats().in_use == 30016 == rm.owned_bytes + 16
        rm.recycle()
        assert a.stats().in_use == 16


def test_next_n_bad_sizes_change_nothing(alloc: Allocator) -> None:
    rm = RecyclableMemory(alloc)
    rm.next_n(10)
    for bad, err in ((True, TypeError), (1.0, TypeError), ("3", TypeError), (-1, ValueError)):
        with pytest.raises(err):
            rm.next_n(bad)                                # type: ignore[arg-type]
    with pytest.raises(MemoryLimitError):
        rm.next_n(1 << 70)
    assert rm.count == 1 and len(rm) == 10 == alloc.stats().in_use
    rm.recycle()
    assert alloc.stats().in_use == 0


def test_next_n_run_fields_cannot_point_outside_the_run(alloc: Allocator) -> None:
    """The run's bounds are set from its view only; a wrong _bump (writable for the
    pure-Python twin) sends next_n to the slow path, never past the run."""
    rm = RecyclableMemory(alloc)
    rm.next_n(10)
    with pytest.raises(TypeError):
        rm._run = memoryview(bytearray(10))               # type: ignore[assignment]
    with pytest.raises(AttributeError):
        rm._run_end = 0                                   # type: ignore[misc]
    with pytest.raises(ValueError):
        rm._start_run(memoryview(bytearray(8)), 9)
    end = rm._run_end
    rm._bump = end + 100                                  # past the run: no tail
    assert rm._run_tail() == 0
    v = rm.next_n(10)
    assert len(v) == 10 and alloc.stats().in_use >= 20    # (the cut-off tail stays owned)
    rm.recycle()
    assert alloc.stats().in_use == 0
    alloc.check()


def test_release_inside_runs_then_more_runs(alloc: Allocator) -> None:
    """clip_front(release) cuts pieces out of a run's one owned range; giving back the
    tail later and recycling free exactly the rest."""
    rm = RecyclableMemory(alloc)
    r = rm.reader()
    freed = 0
    for i in range(30):
        rm.next_n(1000)[:] = bytes([i]) * 1000
        if i % 3 == 1:
            r.skip(min(len(r), 1500))
            r.clip_front(lambda v: alloc.free(v))
            freed = r.offset
        assert alloc.stats().in_use == 1000 * (i + 1) - freed == rm.owned_bytes
        alloc.check()
    rm.recycle()
    assert alloc.stats().in_use == 0
    alloc.check()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["free", "keep", "none"])),
                min_size=1, max_size=16))
def test_ownership_model_across_runs(steps: list[tuple[int, str]]) -> None:
    with Allocator(arena_size=64 << 10) as a:
        rm = RecyclableMemory(a)
        r = rm.reader()
        kept: list[memoryview] = []
        for n, action in steps:
            rm.next_n(n)[:] = bytes([n & 255]) * n
            r.skip(min(len(r), n // 2 + 1))
            if action == "free":
                r.clip_front(a.free)
            elif action == "keep":
                r.clip_front(kept.append)
            else:
                r.clip_front()
            assert a.stats().in_use == rm.owned_bytes + sum(map(len, kept))
        rm.recycle()
        for v in kept:
            a.free(v)
        assert a.stats().in_use == 0
        a.check()


# -- shared frames: retain / recycle / refcount --------------------------------------


class RetainModel(RuleBasedStateMachine):
    """Holders of one RecyclableMemory against a counter: the bytes stay (unchanged)
    while any holder is left, and in_use drops to 0 exactly at the last recycle."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Allocator()
        self.rm = RecyclableMemory(self.a)
        for i in range(5):
            self.rm.next_n(300)[:] = bytes([i]) * 300
        self.rm.push(b"by reference")
        self.want = b"".join(bytes([i]) * 300 for i in range(5)) + b"by reference"
        self.holders = 1

    @rule()
    def retain(self) -> None:
        if self.holders == 0:
            with pytest.raises(FreeError):
                self.rm.retain()
        else:
            assert self.rm.retain() is self.rm
            self.holders += 1

    @rule()
    def recycle(self) -> None:
        self.rm.recycle()                     # at 0 a no-op, like a second close()
        self.holders = max(0, self.holders - 1)

    @invariant()
    def counts(self) -> None:
        assert self.rm.refcount == self.holders
        if self.holders:
            assert self.a.stats().in_use == 1500 and self.rm.to_bytes() == self.want
        else:
            assert self.a.stats().in_use == 0 and len(self.rm) == 0

    def teardown(self) -> None:
        self.a.check()


TestRetainModel = RetainModel.TestCase
TestRetainModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_fan_out_to_consumers(alloc: Allocator) -> None:
    """One frame, N consumers: each recycles once, the bytes go after the last."""
    frame = RecyclableMemory(alloc)
    frame.next_n(100)[:] = b"f" * 100
    consumers = [frame.retain() for _ in range(3)]      # 4 holders
    assert frame.refcount == 4
    for c in consumers:
        c.recycle()
        assert alloc.stats().in_use == 100 and frame.to_bytes() == b"f" * 100
    frame.recycle()
    assert frame.refcount == 0 and alloc.stats().in_use == 0
    frame.next_n(10)                                    # reusable: one holder again
    assert frame.refcount == 1
    frame.recycle()
    assert alloc.stats().in_use == 0


def test_forgotten_holders_are_freed_by_the_finalizer() -> None:
    a = Allocator(debug=True)
    rm = RecyclableMemory(a)
    rm.next_n(64)
    rm.retain()
    rm.retain()
    rm.recycle()                                        # two holders forget theirs
    with pytest.warns(ResourceWarning, match="collected without"):
        del rm
        gc.collect()
    assert a.stats().in_use == 0
