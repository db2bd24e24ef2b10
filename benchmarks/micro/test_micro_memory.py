"""Memory.push and Memory(view) against plain lists, the floor (one memoryview made in C),
and the cost of the chunk exporters per receive and per chunk.

Per round: 1000 segments, objects or views; the table shows one.

The floor group answers "what does one Python-level view cost at the very
least?": slices of one buffer taken by a C loop (``map(mv.__getitem__,
precomputed slices)``) or ``cast('B')`` in a C loop, against the same slices
taken by a Python comprehension (what ``split_views`` does per frame).
"""

from __future__ import annotations

from itertools import repeat

import pytest

from membuf import Memory

N = 1000
R = range(N)
SEG = 64


@pytest.fixture(scope="module")
def views() -> list[memoryview]:
    """1000 views of 64 bytes over one buffer."""
    buf = memoryview(bytes(range(256)) * (N * SEG // 256))
    return [buf[i * SEG : (i + 1) * SEG] for i in R]


# -- push ---------------------------------------------------------------------------------

PUSH = "memory: push(64 B view)"


def memory_push(m: Memory, segs: list[memoryview]) -> Memory:
    push = m.push
    for v in segs:
        push(v)
    return m


def list_push(out: list[memoryview], segs: list[memoryview]) -> tuple[list[memoryview], int]:
    append = out.append
    size = 0
    for v in segs:
        append(v)
        size += len(v)
    return out, size


def test_push_membuf(micro, views, check):
    m = micro(memory_push, lambda: (Memory(), views), group=PUSH, n=N, unit="push")
    assert (len(m), m.count) == (N * SEG, N)
    assert check(m) == check(views)


def test_push_list_and_total(micro, views, check):
    out, size = micro(list_push, lambda: ([], views), group=PUSH, n=N, unit="push")
    assert (size, len(out)) == (N * SEG, N)
    assert check(out) == check(views)


# -- Memory(view): the object split() makes per frame ---------------------------------------

OBJ = "memory: Memory(view) per frame"


class FourSlots:
    """The floor of a Python-level object like Memory: a list of one view and 3 more fields."""

    __slots__ = ("segs", "size", "dropped", "dsegs")

    def __init__(self, view: memoryview) -> None:
        self.segs = [view]
        self.size = len(view)
        self.dropped = 0
        self.dsegs = 0


def make_memories(segs: list[memoryview]) -> list[Memory]:
    return [Memory(v) for v in segs]


def make_four_slots(segs: list[memoryview]) -> list[FourSlots]:
    return [FourSlots(v) for v in segs]


def test_memory_of_view_membuf(micro, views, check):
    out = micro(make_memories, lambda: (views,), group=OBJ, n=N, unit="object")
    assert check(out) == check(views)


def test_memory_of_view_four_slot_class(micro, views, check):
    out = micro(make_four_slots, lambda: (views,), group=OBJ, n=N, unit="object")
    assert check(o.segs[0] for o in out) == check(views)


# -- the floor: one memoryview -----------------------------------------------------------

FLOOR = "memory: one 64 B memoryview (the floor)"


@pytest.fixture(scope="module")
def floor_input(views):
    whole = memoryview(b"".join(views))
    slices = [slice(i * SEG, (i + 1) * SEG) for i in R]
    offsets = [x for i in R for x in (i * SEG, (i + 1) * SEG)]
    return whole, slices, offsets


def c_loop_slices(mv: memoryview, slices: list[slice]) -> list[memoryview]:
    return list(map(mv.__getitem__, slices))


def c_loop_cast(segs: list[memoryview]) -> list[memoryview]:
    return list(map(memoryview.cast, segs, repeat("B")))


def python_comprehension_slices(mv: memoryview, offsets: list[int]) -> list[memoryview]:
    it = iter(offsets)
    return [mv[a:b] for a, b in zip(it, it, strict=False)]


def test_floor_c_loop_slices(micro, floor_input, views, check):
    whole, slices, _ = floor_input
    out = micro(c_loop_slices, lambda: (whole, slices), group=FLOOR, n=N, unit="view")
    assert check(out) == check(views)


def test_floor_c_loop_cast(micro, views, check):
    out = micro(c_loop_cast, lambda: (views,), group=FLOOR, n=N, unit="view")
    assert check(out) == check(views)


def test_floor_python_comprehension_slices(micro, floor_input, views, check):
    whole, _, offsets = floor_input
    out = micro(python_comprehension_slices, lambda: (whole, offsets), group=FLOOR, n=N,
                unit="view")
    assert check(out) == check(views)


# -- the exporter objects: per receive and per receive chunk ---------------------------------
#
# A stream receive takes a view of its chunk's free tail: ``memoryview(chunk)[off:off+n]``
# on the chunk exporter (``_core.Chunk``, which counts its exports so the bytes stay
# mapped while viewed), against the same view of a bytearray a hand-written receive loop
# makes. A new chunk (one native malloc, one exporter, its free when the last view goes)
# is made once per several receives; its row is per chunk. Frames are views of the
# receive's bytes made in C (the floor group above; ``split_views`` per frame in
# test_micro_codecs.py).

EXPORT = "memory: the view a receive takes of its buffer"
CHUNK = "memory: a receive chunk (exporter + native malloc + free), per chunk"
RECV = 16 << 10                 # one receive's bytes
OFFSETS = [(i * RECV) % (256 << 10) for i in R]


def views_of(buf: object) -> int:
    """N receive-sized views of ``buf`` at moving offsets, each released at once."""
    total = 0
    for off in OFFSETS:
        v = memoryview(buf)[off : off + RECV]
        total += len(v)
    return total


@pytest.fixture(scope="module")
def allocator():
    from membuf import Allocator

    a = Allocator()
    yield a
    a.reset()


def test_receive_view_of_chunk_membuf(micro, allocator):
    chunk = allocator._auto_chunk(256 << 10)
    assert micro(views_of, lambda: (chunk,), group=EXPORT, n=N, unit="receive") == N * RECV


def test_receive_view_of_bytearray(micro):
    buf = bytearray(256 << 10)
    assert micro(views_of, lambda: (buf,), group=EXPORT, n=N, unit="receive") == N * RECV


def new_chunks(make: object, size: int) -> int:
    """N receive chunks made and dropped (the drop frees an auto chunk's bytes)."""
    total = 0
    for _ in R:
        total += len(memoryview(make(size)))        # type: ignore[operator]
    return total


def test_receive_chunk_membuf(micro, allocator):
    got = micro(new_chunks, lambda: (allocator._auto_chunk, 64 << 10), group=CHUNK, n=N,
                unit="chunk")
    assert got == N * (64 << 10) and allocator.stats().in_use == 0


def test_receive_chunk_bytearray(micro):
    got = micro(new_chunks, lambda: (bytearray, 64 << 10), group=CHUNK, n=N, unit="chunk")
    assert got == N * (64 << 10)
