"""Reader reads against the plain-Python code a user would write over one ``bytes``.

Per round: 1000 reads from a fresh Reader over one segment (made in the
untimed setup); the table shows one read. Both sides include the same loop
step and ``s += value`` (or ``append``).

``read_until`` returns a zero-copy Memory per line; ``read_line`` the copied
``bytes`` a text protocol parses, against ``bytes.find`` and a slice.
"""

from __future__ import annotations

import random
from struct import Struct

import pytest
from contenders import inline_varint_reads

from membuf import Reader

N = 1000
R = range(N)


# -- read_be(4) ----------------------------------------------------------------------------

BE4 = "reader: read_be(4)"


@pytest.fixture(scope="module")
def be32():
    rng = random.Random(4)
    values = [rng.getrandbits(32) for _ in R]
    return b"".join(v.to_bytes(4, "big") for v in values), sum(values)


def reader_read_be4(r: Reader) -> int:
    read_be = r.read_be
    s = 0
    for _ in R:
        s += read_be(4)
    return s


def struct_unpack_from(data: bytes) -> int:
    unpack_from = Struct(">I").unpack_from
    s = pos = 0
    for _ in R:
        s += unpack_from(data, pos)[0]
        pos += 4
    return s


def int_from_bytes(data: bytes) -> int:
    s = pos = 0
    for _ in R:
        s += int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
    return s


def test_read_be4_membuf(micro, be32):
    data, want = be32
    assert micro(reader_read_be4, lambda: (Reader.from_bytes(data),), group=BE4, n=N) == want


def test_read_be4_struct_unpack_from(micro, be32):
    data, want = be32
    assert micro(struct_unpack_from, lambda: (data,), group=BE4, n=N) == want


def test_read_be4_int_from_bytes(micro, be32):
    data, want = be32
    assert micro(int_from_bytes, lambda: (data,), group=BE4, n=N) == want


# -- read_leb128 -----------------------------------------------------------------------------

WIDTHS = [pytest.param(1, id="1B"), pytest.param(3, id="3B"), pytest.param(5, id="5B")]


def _leb_group(width: int) -> str:
    return f"reader: read_leb128, {width}-byte values"


@pytest.fixture(scope="module")
def varints(uleb):
    """For each width: 1000 LEB128 values that encode in exactly that many bytes."""
    out = {}
    for width in (1, 3, 5):
        rng = random.Random(width)
        lo, hi = (0 if width == 1 else 1 << 7 * (width - 1)), (1 << 7 * width) - 1
        values = [rng.randint(lo, hi) for _ in R]
        data = b"".join(map(uleb, values))
        assert len(data) == width * N
        out[width] = data, sum(values)
    return out


def reader_read_leb128(r: Reader) -> int:
    read = r.read_leb128
    s = 0
    for _ in R:
        s += read()
    return s


def plain_varint_loop(data: bytes) -> int:
    """N values decoded by the suite's inline varint loop (contenders.py, defined once)."""
    return inline_varint_reads(data, N)


@pytest.mark.parametrize("width", WIDTHS)
def test_read_leb128_membuf(micro, varints, width):
    data, want = varints[width]
    got = micro(reader_read_leb128, lambda: (Reader.from_bytes(data),), group=_leb_group(width), n=N)
    assert got == want


@pytest.mark.parametrize("width", WIDTHS)
def test_read_leb128_plain_varint_loop(micro, varints, width):
    data, want = varints[width]
    assert micro(plain_varint_loop, lambda: (data,), group=_leb_group(width), n=N) == want


# -- read_until(b"\r\n") ------------------------------------------------------------------------

UNTIL = "reader: read_until(CRLF), 16..80 B lines"


@pytest.fixture(scope="module")
def lines(crlf_lines):
    return crlf_lines(N, 16, 80, seed=3)


def reader_read_until(r: Reader) -> list:
    read_until = r.read_until
    out = []
    append = out.append
    for _ in R:
        append(read_until(b"\r\n", 8192))
    return out


def find_and_bytes_slice(data: bytes) -> list:
    find = data.find
    out = []
    append = out.append
    pos = 0
    for _ in R:
        j = find(b"\r\n", pos)
        append(data[pos:j])
        pos = j + 2
    return out


def find_and_view_slice(data: bytes) -> list:
    find = data.find
    mv = memoryview(data)
    out = []
    append = out.append
    pos = 0
    for _ in R:
        j = find(b"\r\n", pos)
        append(mv[pos:j])
        pos = j + 2
    return out


def reader_read_line(r: Reader) -> list:
    read_line = r.read_line
    out = []
    append = out.append
    for _ in R:
        append(read_line(8192))
    return out


def test_read_line_membuf(micro, lines, check):
    data, want = lines
    out = micro(reader_read_line, lambda: (Reader(data),), group=UNTIL, n=N, unit="line")
    assert check(out) == check(want)


def test_read_until_membuf(micro, lines, check):
    data, want = lines
    out = micro(reader_read_until, lambda: (Reader.from_bytes(data),), group=UNTIL, n=N, unit="line")
    assert check(out) == check(want)


def test_read_until_bytes_find_bytes_slice(micro, lines, check):
    data, want = lines
    out = micro(find_and_bytes_slice, lambda: (data,), group=UNTIL, n=N, unit="line")
    assert check(out) == check(want)


def test_read_until_bytes_find_view_slice(micro, lines, check):
    data, want = lines
    out = micro(find_and_view_slice, lambda: (data,), group=UNTIL, n=N, unit="line")
    assert check(out) == check(want)
