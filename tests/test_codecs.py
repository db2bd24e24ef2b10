"""Codecs: LengthPrefixed and Delimited over every split, streamed, and the native scanner."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from splitting import SPLITS, memory_split, reader_split

from membuf import Allocator, MalformedError, Memory, Reader
from membuf._native import ffi, lib
from membuf.codecs import Delimited, LengthPrefixed


def enc_uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def encode(prefix: str, frames: list[bytes]) -> bytes:
    width = {"be16": 2, "be24": 3, "be32": 4}.get(prefix)
    return b"".join(
        (enc_uleb(len(f)) if width is None else len(f).to_bytes(width, "big")) + f for f in frames
    )


PREFIXES = ["leb128", "be16", "be24", "be32"]
FRAMES = [b"", b"a", b"hello", bytes(range(200)), b"x" * 130, b"\r\n", b"end"]


def views_bytes(vs: list[memoryview]) -> list[bytes]:
    return [bytes(v) for v in vs]


# -- complete streams under every split --------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_length_prefixed_every_split(split: str, prefix: str) -> None:
    data = encode(prefix, FRAMES)
    codec = LengthPrefixed(prefix, max_frame=1000)
    r = reader_split(data + b"\x05ab"[: 1 if prefix == "leb128" else 0], split)
    got = codec.split(r)
    assert [m.to_bytes() for m in got] == FRAMES
    assert all(isinstance(m, Memory) for m in got)
    r2 = reader_split(data, split)
    assert views_bytes(codec.split_views(r2)) == FRAMES and len(r2) == 0


@pytest.mark.parametrize("split", SPLITS)
def test_delimited_every_split(split: str) -> None:
    lines = [b"GET / HTTP/1.1", b"Host: example", b"", b"x" * 100, b"\r"]
    data = b"".join(line + b"\r\n" for line in lines) + b"partial\r"
    codec = Delimited(b"\r\n", max_frame=100)
    r = reader_split(data, split)
    assert [m.to_bytes() for m in codec.split(r)] == lines
    assert r.read_bytes(len(r)) == b"partial\r"
    r2 = reader_split(data, split)
    assert views_bytes(codec.split_views(r2)) == lines and r2.peek(len(r2)) == b"partial\r"


@pytest.mark.parametrize("split", SPLITS)
def test_partial_frame_left_unread(split: str) -> None:
    data = encode("be16", [b"abc", b"defgh"])
    r = reader_split(data[:-2], split)
    codec = LengthPrefixed("be16", max_frame=100)
    assert views_bytes(codec.split_views(r)) == [b"abc"]
    assert r.offset == 5 and len(r) == 5
    assert codec.split_views(r) == [] and r.offset == 5
    r.memory.push(data[-2:])
    assert views_bytes(codec.split_views(r)) == [b"defgh"] and len(r) == 0


# -- over-long and malformed ------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_max_frame_nothing_consumed_past_last_complete(split: str, prefix: str) -> None:
    data = encode(prefix, [b"ok", b"fine", b"x" * 11, b"never"])
    codec = LengthPrefixed(prefix, max_frame=10)
    for method in ("split", "split_views"):
        r = reader_split(data, split)
        first = getattr(codec, method)(r)     # complete frames first, no frame lost
        assert [bytes(f) if isinstance(f, memoryview) else f.to_bytes() for f in first] == [b"ok", b"fine"]
        at = r.offset
        for _ in range(2):
            with pytest.raises(MalformedError):
                getattr(codec, method)(r)
            assert r.offset == at


@pytest.mark.parametrize("split", SPLITS)
def test_max_frame_first_frame_raises(split: str) -> None:
    for max_frame in (0, 5):
        r = reader_split(encode("leb128", [b"y" * 6]), split)
        with pytest.raises(MalformedError):
            LengthPrefixed("leb128", max_frame=max_frame).split(r)
        assert r.offset == 0
    # the prefix alone (body not here yet) is enough to know
    r = reader_split(enc_uleb(1 << 40), split)
    with pytest.raises(MalformedError):
        LengthPrefixed("leb128", max_frame=1 << 20).split_views(r)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("bad", ["80" * 10 + "00", "ff" * 9 + "02"])
def test_malformed_leb128_prefix(split: str, bad: str) -> None:
    r = reader_split(b"\x01a" + bytes.fromhex(bad) + b"zz", split)
    codec = LengthPrefixed("leb128", max_frame=2**64 - 1)
    assert views_bytes(codec.split_views(r)) == [b"a"]
    with pytest.raises(MalformedError):
        codec.split_views(r)
    assert r.offset == 2


@pytest.mark.parametrize("split", SPLITS)
def test_delimited_max_frame(split: str) -> None:
    codec = Delimited(b"\r\n", max_frame=4)
    r = reader_split(b"abcd\r\nabcde\r\n", split)
    assert views_bytes(codec.split_views(r)) == [b"abcd"]
    with pytest.raises(MalformedError):
        codec.split_views(r)
    assert r.offset == 6
    r2 = reader_split(b"abcd\r", split)          # could still end in time: wait
    assert codec.split(r2) == [] and r2.offset == 0
    r3 = reader_split(b"abcdef", split)          # can never end in time
    with pytest.raises(MalformedError):
        codec.split(r3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LengthPrefixed("be64")
    with pytest.raises(ValueError):
        LengthPrefixed("be16", max_frame=-1)
    with pytest.raises(ValueError):
        Delimited(b"")


# -- zero copy, joins ---------------------------------------------------------------------


def test_frames_are_zero_copy() -> None:
    src = bytearray(encode("leb128", [b"hello", b"world"]))
    half = bytearray(b"\x03ab")
    rest = bytearray(b"c")
    codec = LengthPrefixed("leb128", max_frame=100)
    frames = codec.split(Reader.from_bytes(src, half, rest))
    views = codec.split_views(Reader.from_bytes(src))
    src[1] = ord("J")
    half[1] = ord("A")
    rest[0] = ord("C")
    assert [m.to_bytes() for m in frames] == [b"Jello", b"world", b"AbC"]
    assert frames[2].count == 2                    # spanning frame: views, not a copy
    assert bytes(views[0]) == b"Jello"


def test_joined_counts_and_allocator() -> None:
    codec = LengthPrefixed("be16", max_frame=100)
    r = Reader.from_bytes(b"\x00\x03a", b"b", b"c\x00\x01z\x00")
    out = codec.split_views(r)
    assert views_bytes(out) == [b"abc", b"z"] and codec.joined == 1
    with Allocator() as a:
        r = Reader.from_bytes(b"\x00\x04ab", b"cd")
        out = codec.split_views(r, allocator=a)
        assert views_bytes(out) == [b"abcd"] and codec.joined == 2
        assert a.owns(out[0]) and a.stats().in_use == 4
        a.free(out[0])


def test_frame_body_in_next_segment_is_not_joined() -> None:
    codec = LengthPrefixed("be16", max_frame=100)
    r = Reader.from_bytes(b"\x00", b"\x03abc")
    assert views_bytes(codec.split_views(r)) == [b"abc"] and codec.joined == 0


# -- streaming, model-based --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PREFIXES + ["delim"]),
       st.lists(st.binary(max_size=40), max_size=20),
       st.lists(st.integers(0, 30), max_size=30),
       st.booleans())
def test_streamed_chunks_give_every_frame_once(kind: str, frames: list[bytes],
                                               sizes: list[int], views: bool) -> None:
    if kind == "delim":
        frames = [f.replace(b"|", b"") for f in frames]
        data = b"".join(f + b"||" for f in frames)
        codec: LengthPrefixed | Delimited = Delimited(b"||", max_frame=40)
    else:
        data = encode(kind, frames)
        codec = LengthPrefixed(kind, max_frame=40)
    m = Memory()
    r = m.reader()
    got: list[bytes] = []
    pos = 0
    for size in sizes + [len(data)]:
        chunk = data[pos : pos + size]
        pos += len(chunk)
        m.push(chunk[: size // 2], b"", chunk[size // 2 :])
        if views:
            got += views_bytes(codec.split_views(r))
        else:
            got += [f.to_bytes() for f in codec.split(r)]
        r.clip_front()
        assert len(m) == len(r) == pos - r.offset
    assert got == frames and len(r) == 0


# -- the native scanner directly -------------------------------------------------------------


def scan(data: bytes, kind: int, max_frame: int = 1 << 30, delim: bytes = b"",
         start: int = 0, cap: int = 64) -> tuple[list[int], int, int]:
    offs = ffi.new("uint64_t[]", 2 * cap)
    state = ffi.new("uint64_t[2]")
    k = lib.mb_scan_frames(ffi.from_buffer(data), start, len(data), kind, delim, len(delim),
                           max_frame, offs, cap, state)
    return list(offs[0 : 2 * k]), state[0], state[1]


def test_scanner_contract() -> None:
    data = encode("be24", [b"ab", b"", b"cde"])
    assert scan(data, lib.MB_FRAME_BE24) == ([3, 5, 8, 8, 11, 14], 14, lib.MB_SCAN_END)
    assert scan(data, lib.MB_FRAME_BE24, cap=2) == ([3, 5, 8, 8], 8, lib.MB_SCAN_FULL)
    assert scan(data[:-1], lib.MB_FRAME_BE24) == ([3, 5, 8, 8], 8, lib.MB_SCAN_END)
    assert scan(data, lib.MB_FRAME_BE24, start=5) == ([8, 8, 11, 14], 14, lib.MB_SCAN_END)
    assert scan(data, lib.MB_FRAME_BE24, max_frame=2) == ([3, 5, 8, 8], 8, lib.MB_SCAN_MALFORMED)
    assert scan(b"\x80\x80", lib.MB_FRAME_LEB128) == ([], 0, lib.MB_SCAN_END)
    assert scan(b"\x80" * 10, lib.MB_FRAME_LEB128) == ([], 0, lib.MB_SCAN_MALFORMED)
    assert scan(b"a;bc;d", lib.MB_FRAME_DELIM, delim=b";") == ([0, 1, 2, 4], 5, lib.MB_SCAN_END)
    assert scan(b"abc;", lib.MB_FRAME_DELIM, delim=b";", max_frame=2) == ([], 0, lib.MB_SCAN_MALFORMED)
    assert scan(b"ab", lib.MB_FRAME_DELIM, delim=b";", max_frame=2) == ([], 0, lib.MB_SCAN_END)
    assert scan(b"", lib.MB_FRAME_LEB128) == ([], 0, lib.MB_SCAN_END)


def test_more_frames_than_one_native_call_holds() -> None:
    frames = [bytes([i % 251]) * (i % 7) for i in range(10000)]
    r = Reader.from_bytes(encode("leb128", frames))
    assert views_bytes(LengthPrefixed("leb128", max_frame=10).split_views(r)) == frames


def test_native_find() -> None:
    assert lib.mb_scan_find(b"abcabd", 6, b"abd", 3) == 3
    assert lib.mb_scan_find(b"abcabd", 6, b"", 0) == 0
    assert lib.mb_scan_find(b"ab", 2, b"abc", 3) == -1
    assert lib.mb_scan_find(b"aaab", 4, b"ab", 2) == 2
    assert lib.mb_scan_find(b"xyz", 3, b"z", 1) == 2


@pytest.mark.parametrize("split", SPLITS)
def test_codec_on_memory_split_helper(split: str) -> None:
    m = memory_split(encode("be32", FRAMES), split)
    assert [f.to_bytes() for f in LengthPrefixed("be32").split(m.reader())] == FRAMES


def test_codecs_in_threads_do_not_share_scan_output() -> None:
    """The scanner's output arrays are per thread: concurrent splits never see each
    other's offsets (cffi releases the GIL during the scan)."""
    import threading

    def stream(seed: int) -> tuple[bytes, list[bytes]]:
        # long segments of tiny frames: each native scan runs long enough to overlap
        frames = [bytes([seed]) * (1 + (seed * 7 + i) % 5) for i in range(20000)]
        def prefix(n: int) -> bytes:
            return bytes([n]) if n < 128 else bytes([0x80 | n & 0x7F, n >> 7])

        return b"".join(prefix(len(f)) + f for f in frames), frames

    errors: list[int] = []

    def work(seed: int) -> None:
        data, frames = stream(seed)
        for _ in range(15):
            got = LengthPrefixed("leb128", max_frame=1 << 10).split_views(Reader.from_bytes(data))
            if [bytes(v) for v in got] != frames:
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
