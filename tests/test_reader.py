"""Reader: every method under every split, known vectors, GoMem's bugs, and a model."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from splitting import SPLITS, memory_split, reader_split, readers

import membuf
from membuf import MalformedError, MembufError, Memory, NeedMore, Reader
from membuf.reader import PyReader

# -- LEB128 helpers (independent of the code under test) -------------------------


def enc_uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if (v == 0 and not b & 0x40) or (v == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


# -- known vectors ---------------------------------------------------------------

VECTORS_U = [(0, "00"), (127, "7f"), (128, "8001"), (624485, "e58e26"),
             (2**64 - 1, "ffffffffffffffffff01")]
VECTORS_S = [(0, "00"), (-1, "7f"), (63, "3f"), (-64, "40"), (64, "c000"), (-123456, "c0bb78"),
             (2**63 - 1, "ffffffffffffffffff00"), (-(2**63), "8080808080808080807f")]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("value,hexed", VECTORS_U)
def test_leb128_vectors(split: str, value: int, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert enc_uleb(value) == data
    r = reader_split(data + b"!", split)
    assert r.read_leb128() == value
    assert r.offset == len(data) and r.read_byte() == ord("!")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("value,hexed", VECTORS_S)
def test_sleb128_vectors(split: str, value: int, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert enc_sleb(value) == data
    r = reader_split(data + b"!", split)
    assert r.read_sleb128() == value
    assert r.offset == len(data) and r.read_byte() == ord("!")


MALFORMED_U = ["80" * 10 + "00",            # 11 bytes
               "ff" * 9 + "02",             # ten bytes, bit 64 set
               "ff" * 9 + "7f",
               "80" * 10]                   # continuation on byte 10: longer than 10
MALFORMED_S = ["80" * 10 + "00", "ff" * 9 + "01", "80" * 9 + "40", "80" * 10]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("hexed", MALFORMED_U)
def test_leb128_malformed_leaves_cursor(split: str, hexed: str) -> None:
    r = reader_split(b"\x07" + bytes.fromhex(hexed) + b"tail", split)
    r.skip(1)
    with pytest.raises(MalformedError):
        r.read_leb128()
    assert r.offset == 1 and len(r) == len(bytes.fromhex(hexed)) + 4


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("hexed", MALFORMED_S)
def test_sleb128_malformed_leaves_cursor(split: str, hexed: str) -> None:
    r = reader_split(b"\x07" + bytes.fromhex(hexed) + b"tail", split)
    r.skip(1)
    with pytest.raises(MalformedError):
        r.read_sleb128()
    assert r.offset == 1


@pytest.mark.parametrize("split", SPLITS)
def test_leb128_incomplete_is_needmore(split: str) -> None:
    data = bytes.fromhex("e58e26")
    for cut in range(len(data)):
        if cut == 0:
            r = Reader()
        else:
            r = reader_split(data[:cut], split)
        with pytest.raises(NeedMore) as ei:
            r.read_leb128()
        assert ei.value.needed == 1 and r.offset == 0
        r.memory.push(data[cut:])
        assert r.read_leb128() == 624485


@settings(max_examples=250, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.data())
def test_leb128_round_trip_any_split(u: int, s: int, data: st.DataObject) -> None:
    blob = enc_uleb(u) + enc_sleb(s)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    segs = [blob[a:b] for a, b in zip([0] + cuts, cuts + [len(blob)], strict=True)]
    r = Memory(*segs).reader()
    assert r.read_leb128() == u
    assert r.read_sleb128() == s
    assert len(r) == 0


# -- every method under every split -----------------------------------------------

DATA = bytes(range(1, 40))


@pytest.mark.parametrize("split", SPLITS)
def test_fixed_width_ints(split: str) -> None:
    for n in range(1, 9):
        r = reader_split(DATA, split)
        r.skip(3)
        assert r.read_be(n) == int.from_bytes(DATA[3 : 3 + n], "big")
        assert r.read_le(n) == int.from_bytes(DATA[3 + n : 3 + 2 * n], "little")
        assert r.offset == 3 + 2 * n


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("bad", [0, 9, -1, 100])
def test_bad_width_is_malformed_and_consumes_nothing(split: str, bad: int) -> None:
    r = reader_split(DATA, split)
    r.skip(1)
    for method in (r.read_be, r.read_le):
        with pytest.raises(MalformedError):
            method(bad)
    assert r.offset == 1


@pytest.mark.parametrize("split", SPLITS)
def test_needmore_is_atomic_with_needed(split: str) -> None:
    r = reader_split(DATA[:6], split)
    r.skip(2)
    for call, n in ((lambda: r.read_be(8), 8), (lambda: r.read_le(5), 5),
                    (lambda: r.read_bytes(7), 7), (lambda: r.take(9), 9),
                    (lambda: r.peek(5), 5), (lambda: r.skip(10), 10), (lambda: r.range(6), 6)):
        with pytest.raises(NeedMore) as ei:
            call()
        assert ei.value.needed == n - 4
        assert isinstance(ei.value, EOFError)
        assert r.offset == 2 and len(r) == 4
    assert r.read_bytes(4) == DATA[2:6]
    with pytest.raises(NeedMore):
        r.read_byte()
    with pytest.raises(NeedMore):
        r.peek_byte()


@pytest.mark.parametrize("split", SPLITS)
def test_bytes_methods(split: str) -> None:
    r = reader_split(DATA, split)
    assert r.peek_byte() == 1 and r.read_byte() == 1
    assert r.peek(5) == DATA[1:6] and r.offset == 1
    assert r.read_bytes(5) == DATA[1:6]
    assert r.take(7).to_bytes() == DATA[6:13]
    assert b"".join(bytes(v) for v in r.range(4)) == DATA[13:17]
    r.skip(3)
    r.unread(8)
    assert r.offset == 12 and r.read_bytes(2) == DATA[12:14]
    buf = bytearray(5)
    assert r.read_into(buf) == 5 and buf == DATA[14:19]
    big = bytearray(100)
    assert r.read_into(big) == len(DATA) - 19 and big[: len(DATA) - 19] == DATA[19:]
    assert len(r) == 0 and r.read_into(bytearray(3)) == 0
    assert r.read_bytes(0) == b"" and r.take(0).to_bytes() == b""
    r.unread(len(DATA))
    assert r.offset == 0 and r.read_bytes(len(DATA)) == DATA


@pytest.mark.parametrize("split", SPLITS)
def test_negative_sizes_are_malformed(split: str) -> None:
    r = reader_split(DATA, split)
    r.skip(2)
    for method in (r.read_bytes, r.peek, r.take, r.range, r.skip, r.unread):
        with pytest.raises(MalformedError):
            method(-1)
    with pytest.raises(MalformedError):
        r.unread(3)                     # only 2 consumed
    with pytest.raises(MalformedError):
        r.read_until(b"", 10)
    assert r.offset == 2


@pytest.mark.parametrize("split", SPLITS)
def test_find_and_read_until(split: str) -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"
    r = reader_split(data, split)
    assert r.find(b"\r\n") == 14 and r.find(b"nope") == -1 and r.find(b"") == 0
    assert r.find(b"\r\n\r\n") == data.index(b"\r\n\r\n")
    lines = []
    while True:
        line = r.read_until(b"\r\n", 100)
        if not len(line):
            break
        lines.append(line.to_bytes())
    assert lines == [b"GET / HTTP/1.1", b"Host: x"]
    assert r.read_bytes(4) == b"body"


@pytest.mark.parametrize("split", SPLITS)
def test_read_until_limits(split: str) -> None:
    r = reader_split(b"abcdefgh\r\n", split)
    with pytest.raises(MalformedError):
        r.read_until(b"\r\n", 7)        # 8 bytes before the delimiter
    assert r.offset == 0
    assert r.read_until(b"\r\n", 8).to_bytes() == b"abcdefgh"
    r2 = reader_split(b"abcdef\r", split)
    with pytest.raises(NeedMore):
        r2.read_until(b"\r\n", 8)
    assert r2.offset == 0
    r2.memory.push(b"\n")
    assert r2.read_until(b"\r\n", 8).to_bytes() == b"abcdef"
    r3 = reader_split(b"abcdefghij", split)
    with pytest.raises(MalformedError):
        r3.read_until(b"\r\n", 8)       # 10 bytes, no delimiter: can never fit


def test_find_large_segments_use_native_and_straddle() -> None:
    a = b"x" * 5000 + b"ne"
    b = b"edle" + b"y" * 3000 + b"needle"
    r = Reader.from_bytes(a, b)
    assert r.find(b"needle") == 5000
    r.skip(5003)
    assert r.find(b"needle") == 3003
    assert Reader.from_bytes(a * 2).find(b"nex") == 5000


@pytest.mark.parametrize("split", SPLITS)
def test_transaction_rewinds_on_needmore(split: str) -> None:
    r = reader_split(b"\x00\x05abc", split)
    with pytest.raises(NeedMore):
        with r.transaction():
            n = r.read_be(2)
            r.read_bytes(n)
    assert r.offset == 0
    r.memory.push(b"de")
    with r.transaction():
        n = r.read_be(2)
        assert r.read_bytes(n) == b"abcde"
    with pytest.raises(KeyError), r.transaction():   # any failure rewinds
        r.unread(2)
        raise KeyError
    assert r.offset == 7
    r.unread(7)
    r.memory.push(b"\xff" * 11)
    with pytest.raises(MalformedError), r.transaction():  # a malformed record consumes nothing
        r.skip(7)
        r.read_leb128()
    assert r.offset == 0


# -- zero copy -------------------------------------------------------------------


def test_take_range_read_until_are_zero_copy() -> None:
    a, b = bytearray(b"hello "), bytearray(b"world\n")
    r = Reader.from_bytes(a, b)
    spanning = r.take(8)
    a[0] = ord("J")
    b[1] = ord("O")
    assert spanning.to_bytes() == b"Jello wO"
    r.unread(8)
    pieces = list(r.range(3))
    a[1] = ord("E")
    assert b"".join(bytes(p) for p in pieces) == b"JEl"
    line = r.read_until(b"\n", 20)
    b[0] = ord("W")
    assert line.to_bytes() == b"lo WOrld"


# -- following pushes, clip_front ----------------------------------------------------


def test_reader_follows_later_pushes() -> None:
    m = Memory()
    r = m.reader()
    assert len(r) == 0
    with pytest.raises(NeedMore):
        r.read_byte()
    m.push(b"", b"\x01")
    assert len(r) == 1 and r.read_byte() == 1
    m.push(b"\x00", b"", b"\x02")
    assert r.read_be(2) == 2 and len(r) == 0


@pytest.mark.parametrize("split", SPLITS)
def test_clip_front_releases_consumed_pieces(split: str) -> None:
    m = memory_split(DATA, split)
    r = m.reader()
    r.skip(10)
    released: list[bytes] = []
    pieces = r.clip_front(lambda v: released.append(bytes(v)))
    assert b"".join(released) == DATA[:10] == b"".join(bytes(p) for p in pieces)
    assert all(len(p) for p in pieces)
    assert len(m) == len(DATA) - 10 and m.to_bytes() == DATA[10:]
    assert r.offset == 10 and len(r) == len(DATA) - 10
    with pytest.raises(MalformedError):
        r.unread(1)
    assert r.read_bytes(5) == DATA[10:15]
    r.unread(5)
    r.skip(len(DATA) - 10)
    r.clip_front()
    assert len(m) == 0 and len(r) == 0
    m.push(b"more")
    assert r.read_bytes(4) == b"more" and r.offset == len(DATA) + 4


def test_clip_front_keeps_other_readers_coherent() -> None:
    # GoMem: ClipFront through one reader corrupted another reader of the same Memory.
    m = Memory(b"abc", b"defg", b"hij")
    ahead, behind = m.reader(), m.reader()
    ahead.skip(5)
    behind.skip(5)
    behind.unread(1)
    ahead.skip(0)
    behind.skip(1)
    ahead.clip_front()
    assert behind.read_bytes(5) == b"fghij"          # at the clip point: still coherent
    m2 = Memory(b"abc", b"defg", b"hij")
    fast, slow = m2.reader(), m2.reader()
    fast.skip(8)
    slow.skip(1)
    fast.clip_front()
    assert len(m2) == 2 and fast.read_bytes(2) == b"ij"
    with pytest.raises(MembufError):
        slow.skip(6)                                  # its bytes are gone: it says so
    with pytest.raises(MembufError):
        slow.clip_front()
    with pytest.raises(MembufError):
        slow.find(b"j")
    r = Reader.from_bytes(b"abc")
    with pytest.raises(TypeError):
        r.read_into(b"xx")                            # read-only: refused before consuming
    assert len(r) == 3 and r.offset == 0


def test_clip_front_at_segment_boundaries_and_empties() -> None:
    m = Memory(b"", b"ab", b"", b"", b"cd", b"")
    r = m.reader()
    r.skip(2)
    pieces = r.clip_front()
    assert [bytes(p) for p in pieces] == [b"ab"]
    assert m.to_bytes() == b"cd" and r.read_bytes(2) == b"cd"
    r.clip_front()
    assert len(m) == 0 and m.count == 0


def test_clear_and_reader_at_end() -> None:
    m = Memory(b"abc")
    r = m.reader()
    r.skip(3)
    m.clear()
    m.push(b"xy")
    assert r.read_bytes(2) == b"xy"


# -- GoMem's reader bugs, one test each --------------------------------------------


def test_gomem_skip_across_uneven_boundaries() -> None:
    data = bytes(range(30))
    for cut in ([1, 2], [3, 1, 7], [1, 1, 1, 20]):
        segs, pos = [], 0
        for c in cut:
            segs.append(data[pos : pos + c])
            pos += c
        segs.append(data[pos:])
        r = Memory(*segs).reader()
        r.skip(sum(cut) + 1)
        assert r.read_byte() == data[sum(cut) + 1]
        r.skip(2)
        assert r.offset == sum(cut) + 4 and len(r) == 30 - sum(cut) - 4


def test_gomem_read_byte_on_empty_segments() -> None:
    r = Reader.from_bytes(b"", b"", b"\x05", b"", b"\x06", b"")
    assert r.read_byte() == 5 and r.peek_byte() == 6 and r.read_byte() == 6
    with pytest.raises(NeedMore):
        r.read_byte()
    assert len(Reader.from_bytes(b"", b"")) == 0


def test_gomem_size_after_segment_replaced() -> None:
    # clip_front replaces the head segment with its tail: the size must follow exactly.
    m = Memory(b"abcdef", b"gh")
    r = m.reader()
    r.skip(4)
    r.clip_front()
    assert len(m) == 4 == sum(len(s) for s in m) and m.count == 2
    r.skip(1)
    r.clip_front()
    assert len(m) == 3 == sum(len(s) for s in m)


def test_gomem_equality_independent_of_split() -> None:
    for name, r in readers(DATA):
        assert r.take(len(DATA)) == Memory(DATA), name
    assert Memory(b"ab", b"c") == Memory(b"a", b"", b"bc")
    assert Memory(b"ab", b"c") != Memory(b"a", b"bd")


# -- fast paths agree with struct ---------------------------------------------------


def test_fast_path_matches_struct() -> None:
    blob = bytes(range(256)) * 2
    r = Reader.from_bytes(blob)
    for fmt, n in (("I", 4), ("H", 2), ("Q", 8), ("B", 1)):
        r.unread(r.offset)
        r.skip(3)
        assert r.read_be(n) == struct.unpack_from(">" + fmt, blob, 3)[0]
        assert r.read_le(n) == struct.unpack_from("<" + fmt, blob, 3 + n)[0]


# -- model-based: random splits and random operations --------------------------------


class Ref:
    """The obvious reader over one bytearray: what Reader must match."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.pos = 0
        self.floor = 0           # clip point: unread cannot go before it

    def left(self) -> int:
        return len(self.data) - self.pos

    def need(self, n: int) -> None:
        if n > self.left():
            raise NeedMore("ref", n - self.left())

    def varint(self, signed: bool) -> int:
        v = 0
        for i in range(10):
            if self.pos + i >= len(self.data):
                raise NeedMore("ref", 1)
            b = self.data[self.pos + i]
            v |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                if i == 9 and (b not in (0, 0x7F) if signed else b > 1):
                    raise MalformedError("ref")
                self.pos += i + 1
                return v - (1 << (7 * i + 7)) if signed and b & 0x40 else v
        raise MalformedError("ref")

    def take(self, n: int) -> bytes:
        if n < 0:
            raise MalformedError("ref")
        self.need(n)
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos])

    def do(self, op: str, arg: int, sub: bytes) -> object:
        if op == "read_byte":
            return self.take(1)[0]
        if op == "peek_byte":
            self.need(1)
            return self.data[self.pos]
        if op in ("read_be", "read_le"):
            if not 1 <= arg <= 8:
                raise MalformedError("ref")
            return int.from_bytes(self.take(arg), "big" if op == "read_be" else "little")
        if op == "read_leb128":
            return self.varint(False)
        if op == "read_sleb128":
            return self.varint(True)
        if op in ("read_bytes", "take", "range", "skip"):
            got = self.take(arg)
            return None if op == "skip" else got
        if op == "peek":
            got = self.take(arg)
            self.pos -= arg
            return got
        if op == "unread":
            if not 0 <= arg <= self.pos - self.floor:
                raise MalformedError("ref")
            self.pos -= arg
            return None
        if op == "find":
            return self.data.find(sub, self.pos) - self.pos if sub in self.data[self.pos :] else -1
        if op == "read_until":
            j = self.data.find(sub, self.pos, self.pos + arg + len(sub))
            if j < 0:
                if self.left() >= arg + len(sub):
                    raise MalformedError("ref")
                raise NeedMore("ref", 1)
            got = bytes(self.data[self.pos : j])
            self.pos = j + len(sub)
            return got
        if op == "read_into":
            k = min(arg, self.left())
            return self.take(k)
        if op == "clip_front":
            got = bytes(self.data[self.floor : self.pos])
            self.floor = self.pos
            return got
        if op == "push":
            self.data += sub
            return None
        raise AssertionError(op)


def run_real(r: Reader, m: Memory, op: str, arg: int, sub: bytes) -> object:
    if op in ("read_byte", "peek_byte", "read_leb128", "read_sleb128"):
        return getattr(r, op)()
    if op in ("read_be", "read_le", "read_bytes", "peek", "skip", "unread"):
        return getattr(r, op)(arg)
    if op == "take":
        got = r.take(arg)
        assert len(got) == arg
        return got.to_bytes()
    if op == "range":
        return b"".join(bytes(v) for v in r.range(arg))
    if op == "find":
        return r.find(sub)
    if op == "read_until":
        return r.read_until(sub, arg).to_bytes()
    if op == "read_into":
        buf = bytearray(arg)
        n = r.read_into(buf)
        return bytes(buf[:n])
    if op == "clip_front":
        return b"".join(bytes(p) for p in r.clip_front())
    if op == "push":
        m.push(sub[:1], b"", sub[1:])
        return None
    raise AssertionError(op)


OPS = ["read_byte", "peek_byte", "read_be", "read_le", "read_leb128", "read_sleb128",
       "read_bytes", "take", "range", "skip", "peek", "unread", "find", "read_until",
       "read_into", "clip_front", "push"]

varint_bytes = st.one_of(
    st.integers(0, 2**64 - 1).map(enc_uleb),
    st.integers(-(2**63), 2**63 - 1).map(enc_sleb),
    st.binary(min_size=1, max_size=12).map(lambda b: bytes(x | 0x80 for x in b[:-1]) + b[-1:]),
)
payload = st.lists(st.one_of(varint_bytes, st.binary(max_size=8), st.sampled_from([b"\r\n", b"ab"])),
                   max_size=8).map(b"".join)
operation = st.tuples(st.sampled_from(OPS), st.integers(-1, 12), st.sampled_from([b"\r\n", b"a", b"ab", b"\x80"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload, st.data(), st.lists(operation, max_size=25))
def test_reader_matches_reference(data: bytes, draw: st.DataObject, ops: list) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    segs = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]
    m = Memory(*segs)
    r = m.reader()
    ref = Ref(data)
    for op, arg, sub in ops:
        if op in ("read_until", "read_into"):
            arg = abs(arg)
        if op == "push":
            sub = sub * (arg % 3)
        try:
            expect: object = ref.do(op, arg, sub)
        except (NeedMore, MalformedError) as exc:
            expect = exc
        before = r.offset
        try:
            got: object = run_real(r, m, op, arg, sub)
        except (NeedMore, MalformedError) as exc:
            got = exc
            assert r.offset == before, (op, arg)
        if isinstance(expect, Exception):
            assert type(got) is type(expect), (op, arg, sub, got, expect)
            if isinstance(expect, NeedMore) and op in ("read_be", "read_le", "read_bytes", "take", "skip"):
                assert got.needed == expect.needed  # type: ignore[attr-defined]
        else:
            assert got == expect, (op, arg, sub)
        assert r.offset == ref.pos and len(r) == ref.left(), op
        assert len(m) == len(ref.data) - ref.floor == sum(len(s) for s in m)


def test_public_names() -> None:
    assert membuf.Reader is Reader and membuf.Memory is Memory


@settings(max_examples=300, deadline=None)
@example(data=b"xabc", delim=b"abc", cuts=[1, 1, 1, 1])      # straddles three 1-byte segments
@example(data=b"x\x00\x00\x00\x00y", delim=b"\x00" * 4, cuts=[1, 1, 1, 1, 1])
@example(data=b"xx\r\n", delim=b"\r\n", cuts=[2, 1, 1])
@given(
    # an alphabet made of delimiter pieces, so delimiters straddle boundaries often
    data=st.lists(st.sampled_from([b"a", b"b", b"c", b"\r", b"\n", b"\x00", b"x"]),
                  max_size=200).map(b"".join),
    delim=st.sampled_from([b"\n", b"\r\n", b"abc", b"\x00\x00\x00\x00"]),
    cuts=st.lists(st.integers(0, 9), max_size=60),
)
def test_read_until_retried_as_bytes_dribble_in(data: bytes, delim: bytes, cuts: list[int]) -> None:
    """read_until retried after every push (the resumed search) finds exactly what one
    search over all the bytes finds, however the bytes arrive."""
    expected = []
    rest = data
    while (j := rest.find(delim)) >= 0:
        expected.append(rest[:j])
        rest = rest[j + len(delim):]
    m = Memory()
    r = m.reader()
    got = []
    pos = 0
    for c in [*cuts, len(data)]:
        m.push(data[pos:pos + c])
        pos += c
        while True:
            try:
                got.append(r.read_until(delim, 1 << 20).to_bytes())
            except NeedMore:
                break
        if r.find(delim) == -1 and len(r) and r.peek(len(r)).find(delim) != -1:
            raise AssertionError("find missed a delimiter the bytes contain")
    assert got == expected
    assert r.peek(len(r)) == rest


# -- v2 additions: Reader(bytes-like), read_line, chunk(), max_bytes, argument types --------


@pytest.mark.parametrize("src", [b"\x00\x07payload", bytearray(b"\x00\x07payload"),
                                 memoryview(b"xx\x00\x07payload")[2:]])
def test_reader_of_a_bytes_like(src: object) -> None:
    r = Reader(src)
    assert r.read_be(2) == 7 and r.read_bytes(7) == b"payload" and len(r) == 0
    assert r.memory.count == 1                # by reference: one segment, no copy
    with pytest.raises(TypeError):
        Reader(5)


@pytest.mark.parametrize("split", SPLITS)
def test_read_line(split: str) -> None:
    r = reader_split(b"+OK\r\n:1000\r\n\r\n$3\nfoo\nrest", split)
    assert r.read_line(64) == b"+OK" and r.read_line(64) == b":1000" and r.read_line(64) == b""
    assert r.read_line(8, b"\n") == b"$3" and r.read_line(3, delim=b"\n") == b"foo"
    assert r.offset == 21 and len(r) == 4
    with pytest.raises(NeedMore) as ei:
        r.read_line(64)
    assert ei.value.needed == 1 and r.offset == 21
    with pytest.raises(MalformedError, match=r"read_line: no b'\\r\\n' within 3 bytes"):
        r.read_line(1)                        # 4 bytes buffered, none of them a CRLF
    assert r.read_bytes(4) == b"rest"


@pytest.mark.parametrize("split", SPLITS)
def test_chunk_walks_the_segments(split: str) -> None:
    r = reader_split(DATA, split)
    got = b""
    while len(r):
        c = r.chunk()
        assert 0 < len(c) <= len(r)           # empty only when nothing is left
        got += bytes(c)
        r.skip(len(c))                        # Buf::advance
    assert got == DATA and len(r.chunk()) == 0 and r.offset == len(DATA)
    r.unread(5)
    assert bytes(r.chunk()).startswith(DATA[-5:][: len(r.chunk())]) and r.offset == len(DATA) - 5


@pytest.mark.parametrize("split", SPLITS)
def test_leb128_max_bytes(split: str) -> None:
    data = bytes.fromhex("e58e26") + b"\x05"
    r = reader_split(data, split)
    with pytest.raises(MalformedError, match=r"longer than 2 bytes \(e5 8e \.\.\.\)"):
        r.read_leb128(max_bytes=2)
    assert r.offset == 0
    assert r.read_leb128(max_bytes=3) == 624485 and r.read_leb128(max_bytes=1) == 5
    r2 = reader_split(b"\x80", split)
    with pytest.raises(NeedMore) as ei:
        r2.read_sleb128(2)
    assert ei.value.needed == 1 and r2.offset == 0
    for bad, exc in ((0, MalformedError), (11, MalformedError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_bytes"):
            reader_split(data, split).read_leb128(max_bytes=bad)


BAD_TYPES = [
    (lambda r: r.skip(0.5), "skip size must be an int, got float"),
    (lambda r: r.skip(True), "skip size must be an int, got bool"),
    (lambda r: r.read_be(2.0), r"read_be\(n\) needs an int n, got float"),
    (lambda r: r.read_le(True), r"read_le\(n\) needs an int n, got bool"),
    (lambda r: r.read_bytes(1.5), "read_bytes size must be an int, got float"),
    (lambda r: r.peek(None), "peek size must be an int, got NoneType"),
    (lambda r: r.take("2"), "take size must be an int, got str"),
    (lambda r: r.range(1.0), "range size must be an int, got float"),
    (lambda r: r.unread(0.0), "unread size must be an int, got float"),
    (lambda r: r.read_until(5, 10), "read_until delimiter must be a bytes-like object, got int"),
    (lambda r: r.read_until("\n", 10), "read_until delimiter must be a bytes-like object, got str"),
    (lambda r: r.read_until(b"\n", 1.5), "read_until max_size must be an int, got float"),
    (lambda r: r.read_line(10, 13), "read_line delimiter must be a bytes-like object, got int"),
    (lambda r: r.find(3), "find's argument must be a bytes-like object, got int"),
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("call", "message"), BAD_TYPES)
def test_wrong_argument_types_are_type_errors_and_consume_nothing(
        split: str, call: object, message: str) -> None:
    r = reader_split(DATA, split)
    r.skip(3)
    with pytest.raises(TypeError, match=message):
        call(r)  # type: ignore[operator]
    assert r.offset == 3 and len(r) == len(DATA) - 3 and r.peek(2) == DATA[3:5]


def test_range_consumes_when_called() -> None:
    """range(n) consumes its n bytes at once (not as the iterator is advanced)."""
    r = Reader.from_bytes(b"ab", b"cd")
    pieces = r.range(3)
    assert r.offset == 3 and [bytes(p) for p in pieces] == [b"ab", b"c"]


# -- the compiled cursor never reads freed or released memory -------------------------------


def test_released_segment_is_an_error_not_a_crash() -> None:
    seg = memoryview(bytearray(b"abcdef"))
    m = Memory(b"xy")
    m.push(seg)
    r = m.reader()
    r.skip(3)                                 # on `seg` now
    seg.release()
    with pytest.raises(ValueError, match="released"):
        r.read_byte()
    with pytest.raises(ValueError, match="released"):
        r.read_bytes(2)


@pytest.mark.skipif(not membuf.COMPILED, reason="the compiled cursor's check (the pure twin "
                    "reads any sequence of bytes it finds)")
def test_edited_segment_list_is_an_error_not_a_crash() -> None:
    m = Memory(b"ab")
    r = m.reader()
    r.skip(2)
    m._segs.append(b"not a view")             # behind Memory's back
    m._size += 10
    with pytest.raises(TypeError, match="segment"):
        r.read_byte()
    with pytest.raises((RuntimeError, TypeError)):
        r.skip(5)
    assert r.offset == 2


@pytest.mark.skipif(not membuf.COMPILED, reason="the compiled Reader's check")
def test_reader_without_init_is_an_error() -> None:
    r = Reader.__new__(Reader)
    for call in (r.read_byte, lambda: r.read_bytes(3), r.chunk, r.transaction, lambda: r.find(b"x")):
        with pytest.raises((RuntimeError, NeedMore)):
            call()


@pytest.mark.skipif(not membuf.COMPILED, reason="the compiled Reader's re-entrancy check (the "
                    "pure twin cannot crash, but a finalizer may see it half-way through a call)")
def test_finalizers_that_use_the_reader_mid_call_cannot_corrupt_it() -> None:
    """Allocations inside a compiled call may run the GC, and a finalizer may read from
    the same Reader meanwhile. The call then either completes or raises RuntimeError
    having consumed nothing: every byte is read exactly once, by the call or the thief,
    in order."""
    import gc

    from membuf.codecs import LengthPrefixed

    frames = [bytes([i % 251]) * (i % 7 + 1) for i in range(300)]
    data = b"".join(bytes([len(f)]) + f for f in frames)
    m = Memory(*[data[i : i + 37] for i in range(0, len(data), 37)])
    r = m.reader()
    reads: list[tuple[int, bytes]] = []      # (offset, bytes) of every successful read
    refused = [0]

    class Thief:
        """Garbage whose finalizer reads one byte and leaves another thief behind, so
        that every collection (each allocation, at threshold 1) steals mid-call."""

        def __init__(self, left: int) -> None:
            self.me, self.left = self, left   # a cycle: only the GC frees it

        def __del__(self) -> None:
            at = r.offset
            try:
                reads.append((at, r.read_bytes(1)))
            except Exception:
                pass
            if self.left:
                Thief(self.left - 1)

    whole = LengthPrefixed("leb128", max_frame=255, strip=0)     # frames with their prefix
    old = gc.get_threshold()
    gc.set_threshold(1)
    try:
        for i in range(5000):
            if not len(r):
                break
            Thief(3)
            at = r.offset
            try:
                if i % 3 == 2:
                    got = [r.take(min(3, len(r))).tobytes()]
                else:
                    got = [bytes(v) for v in (whole.split_views(r) if i % 2 else whole.split(r))]
                reads.append((at, b"".join(got)))
                if not got and len(r):        # a thief broke the framing: step over a byte
                    reads.append((r.offset, r.read_bytes(1)))
            except RuntimeError:
                refused[0] += 1
            except Exception:
                pass                          # e.g. MalformedError: the framing is off
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert len(r) == 0 and refused[0] > 0      # the re-entrant path was taken
    assert b"".join(b for _, b in sorted(reads)) == data


def test_find_after_the_memory_was_cleared_under_the_cursor() -> None:
    """A failed find whose cursor's segments were cleared remembers nothing out of range
    (it once read the segment list at index -1 in C: a crash)."""
    for reader in (Reader, PyReader):
        m = Memory(b"ab", b"", b"")
        r = reader(m)
        r.skip(2)
        m.clear()
        assert r.find(b"x") == -1
        m.push(b"..x")
        assert r.find(b"x") == 2
