"""Every-split helper: run a parser test over the same bytes cut many ways.

h11 and Rust's ``bytes`` test each parser on whole input, byte-by-byte input
and odd splits; this is that helper for membuf. Use it from any Reader, codec
or media-parser test::

    from splitting import every_split, memory_split, splits

    @every_split                      # = pytest.mark.parametrize("split", SPLITS)
    def test_thing(split):
        r = memory_split(b"...", split).reader()
        ...

    def test_other():
        for name, segs in splits(data):
            ...

``splits(data)`` yields ``(name, segments)`` for: one segment, two halves,
1 + rest, rest + 1, all one-byte segments, one-byte segments with an empty
segment between every two (and at both ends), halves with empty segments
around, and three uneven pieces. The segment types vary (bytes, bytearray,
memoryview) so nothing depends on the exporter. Concatenating the segments
always gives ``data`` back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import membuf


def _whole(d: bytes) -> list[Any]:
    return [d]


def _halves(d: bytes) -> list[Any]:
    h = len(d) // 2
    return [d[:h], bytearray(d[h:])]


def _one_rest(d: bytes) -> list[Any]:
    return [d[:1], memoryview(d[1:])]


def _rest_one(d: bytes) -> list[Any]:
    return [bytearray(d[:-1]), d[-1:]]


def _bytewise(d: bytes) -> list[Any]:
    return [d[i : i + 1] for i in range(len(d))]


def _bytewise_empties(d: bytes) -> list[Any]:
    out: list[Any] = [b""]
    for i in range(len(d)):
        out += [memoryview(d)[i : i + 1], bytearray()]
    return out + [b""]


def _halves_empties(d: bytes) -> list[Any]:
    h = len(d) // 2
    return [b"", b"", d[:h], b"", memoryview(b""), d[h:], b""]


def _uneven(d: bytes) -> list[Any]:
    a, b = len(d) // 3, (2 * len(d)) // 3 + 1
    return [d[:a], b"", d[a:b], bytearray(d[b:])]


SPLITTERS: dict[str, Callable[[bytes], list[Any]]] = {
    "whole": _whole,
    "halves": _halves,
    "one+rest": _one_rest,
    "rest+one": _rest_one,
    "bytewise": _bytewise,
    "bytewise+empties": _bytewise_empties,
    "halves+empties": _halves_empties,
    "uneven3": _uneven,
}

#: the split names, for ``pytest.mark.parametrize("split", SPLITS)``
SPLITS: list[str] = list(SPLITTERS)

#: ``@every_split`` on a test taking a ``split`` argument runs it once per way
every_split = pytest.mark.parametrize("split", SPLITS)


def split(data: bytes, how: str) -> list[Any]:
    """The segments of ``data`` cut the way named ``how`` (one of ``SPLITS``)."""
    segs = SPLITTERS[how](bytes(data))
    assert b"".join(bytes(s) for s in segs) == data
    return segs


def splits(data: bytes) -> Iterator[tuple[str, list[Any]]]:
    """Yield ``(name, segments)`` for every way in ``SPLITS``."""
    for name in SPLITS:
        yield name, split(data, name)


def memory_split(data: bytes, how: str) -> membuf.Memory:
    """A Memory holding ``data`` cut the way named ``how``."""
    return membuf.Memory(*split(data, how))


def reader_split(data: bytes, how: str) -> membuf.Reader:
    """A Reader over ``data`` cut the way named ``how``."""
    return membuf.Memory(*split(data, how)).reader()


def readers(data: bytes) -> Iterator[tuple[str, membuf.Reader]]:
    """Yield ``(name, reader)`` over ``data`` for every way in ``SPLITS``."""
    for name, segs in splits(data):
        yield name, membuf.Memory(*segs).reader()


def feed(segments: list[Any], parse: Callable[[membuf.Reader], Any]) -> tuple[list[Any], membuf.Reader]:
    """Push segments one at a time into one Memory, parsing everything available after
    each push (a sans-IO parser raises ``NeedMore`` when it needs more); returns what
    was parsed and the Reader (what it left unparsed)."""
    mem = membuf.Memory()
    r = mem.reader()
    out = []
    for seg in segments:
        mem.push(seg)
        while True:
            try:
                out.append(parse(r))
            except membuf.NeedMore:
                break
    return out, r
