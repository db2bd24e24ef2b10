"""Codecs per frame: split_views / split against the plain loops, and the floor of one view.

Per round: one ``split_views`` (or ``split``) call over a fresh Reader on one
segment holding the frames (1000 LEB128-prefixed frames of 16..300 B, or 128
frames of 64 KiB); the table shows one frame. The frames sit in one segment,
so none spans segments: this is the per-frame cost of the native scan plus
one view. Chunked delivery (frames across 64 KiB segments, ``clip_front``)
is the whole-suite benchmark's job (``make bench``, ``benchmarks/bench_split.py``).

Rows of each group:

* ``split_views`` / ``split``: membuf (one view / one Memory per frame);
* ``plain_loop_bytes``: manual varint and a ``bytes`` slice (a copy) per frame;
* ``plain_loop_views``: the same loop, a ``memoryview`` slice per frame;
* ``floor_c_loop_slices``: the frame views taken by a C loop from precomputed
  slices (``list(map(mv.__getitem__, slices))``): what one view per frame
  costs with no parsing at all.
"""

from __future__ import annotations

import pytest

from membuf import Memory, Reader
from membuf.codecs import Delimited, LengthPrefixed

SMALL = 1000
BIG = 128
WORKLOADS = {
    "small": (SMALL, 16, 300, "codecs: split leb128 frames of 16..300 B"),
    "64k": (BIG, 64 << 10, 64 << 10, "codecs: split leb128 frames of 64 KiB"),
}
KINDS = [pytest.param("small", id="16-300B"), pytest.param("64k", id="64KiB")]


@pytest.fixture(scope="module")
def streams(leb128_frames):
    out = {}
    for kind, (count, lo, hi, _) in WORKLOADS.items():
        data, bodies = leb128_frames(count, lo, hi, seed=7)
        slices, pos = [], 0
        for body in bodies:
            n = len(body)
            pos += (n.bit_length() + 6) // 7 or 1
            slices.append(slice(pos, pos + n))
            pos += n
        assert pos == len(data)
        out[kind] = data, bodies, slices
    return out


def fresh(data: bytes) -> tuple[LengthPrefixed, Reader]:
    return LengthPrefixed("leb128", max_frame=1 << 20), Reader(Memory(data))


def split_views(codec: LengthPrefixed, r: Reader) -> list[memoryview]:
    return codec.split_views(r)


def split(codec: LengthPrefixed, r: Reader) -> list[Memory]:
    return codec.split(r)


def _plain_loop(buf, end: int) -> list:
    """Manual varint, then a slice of ``buf`` per frame (bytes: a copy; memoryview: a view)."""
    out = []
    append = out.append
    pos = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
        append(buf[pos : pos + n])
        pos += n
    return out


def plain_loop_bytes(data: bytes) -> list[bytes]:
    return _plain_loop(data, len(data))


def plain_loop_views(data: bytes) -> list[memoryview]:
    return _plain_loop(memoryview(data), len(data))


def floor_c_loop_slices(mv: memoryview, slices: list[slice]) -> list[memoryview]:
    return list(map(mv.__getitem__, slices))


def _run(micro, streams, check, kind, target, setup):
    data, bodies, slices = streams[kind]
    count, _, _, group = WORKLOADS[kind]
    out = micro(target, lambda: setup(data, slices), group=group, n=count, unit="frame")
    assert check(out) == check(bodies)


@pytest.mark.parametrize("kind", KINDS)
def test_split_views_membuf(micro, streams, check, kind):
    _run(micro, streams, check, kind, split_views, lambda data, _: fresh(data))


@pytest.mark.parametrize("kind", KINDS)
def test_split_membuf(micro, streams, check, kind):
    _run(micro, streams, check, kind, split, lambda data, _: fresh(data))


@pytest.mark.parametrize("kind", KINDS)
def test_split_plain_loop_bytes(micro, streams, check, kind):
    _run(micro, streams, check, kind, plain_loop_bytes, lambda data, _: (data,))


@pytest.mark.parametrize("kind", KINDS)
def test_split_plain_loop_views(micro, streams, check, kind):
    _run(micro, streams, check, kind, plain_loop_views, lambda data, _: (data,))


@pytest.mark.parametrize("kind", KINDS)
def test_split_floor_c_loop_slices(micro, streams, check, kind):
    _run(micro, streams, check, kind, floor_c_loop_slices,
         lambda data, slices: (memoryview(data), slices))


# -- Delimited(b"\r\n") -----------------------------------------------------------------------

LINES = 1000
DELIM = "codecs: split CRLF lines of 16..80 B"


@pytest.fixture(scope="module")
def lines(crlf_lines):
    return crlf_lines(LINES, 16, 80, seed=3)


def delimited_split_views(codec: Delimited, r: Reader) -> list[memoryview]:
    return codec.split_views(r)


def find_loop(buf, data: bytes) -> list:
    """``bytes.find`` for each CRLF, then a slice of ``buf`` (bytes: a copy; memoryview: a view)."""
    find = data.find
    out = []
    append = out.append
    pos = 0
    while True:
        j = find(b"\r\n", pos)
        if j < 0:
            return out
        append(buf[pos:j])
        pos = j + 2


def find_bytes_slice(data: bytes) -> list[bytes]:
    return find_loop(data, data)


def find_view_slice(data: bytes) -> list[memoryview]:
    return find_loop(memoryview(data), data)


def floor_bytes_split(data: bytes) -> list[bytes]:
    out = data.split(b"\r\n")
    out.pop()                     # the empty piece after the last CRLF
    return out


def _lines(micro, lines, check, target, setup):
    data, want = lines
    out = micro(target, lambda: setup(data), group=DELIM, n=LINES, unit="line")
    assert check(out) == check(want)


def test_delimited_split_views_membuf(micro, lines, check):
    _lines(micro, lines, check, delimited_split_views,
           lambda data: (Delimited(b"\r\n", max_frame=8192), Reader(Memory(data))))


def test_delimited_bytes_find_bytes_slice(micro, lines, check):
    _lines(micro, lines, check, find_bytes_slice, lambda data: (data,))


def test_delimited_bytes_find_view_slice(micro, lines, check):
    _lines(micro, lines, check, find_view_slice, lambda data: (data,))


def test_delimited_floor_bytes_split(micro, lines, check):
    _lines(micro, lines, check, floor_bytes_split, lambda data: (data,))
