"""Codecs: LengthPrefixed and Delimited over every split, streamed, and the native scanner."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from splitting import SPLITS, memory_split, reader_split

import membuf
import membuf.codecs
import membuf.writer
from membuf import Allocator, MalformedError, Memory, MemoryLimitError, Reader
from membuf._native import ffi, lib
from membuf.codecs import Codec, Delimited, LengthPrefixed


def enc_uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def encode(prefix: str, frames: list[bytes]) -> bytes:
    width = {"be16": 2, "be24": 3, "be32": 4, "le16": 2, "le32": 4}.get(prefix)
    order = "little" if prefix.startswith("le") else "big"
    return b"".join(
        (enc_uleb(len(f)) if width is None else len(f).to_bytes(width, order)) + f for f in frames
    )


PREFIXES = ["leb128", "be16", "be24", "be32", "le16", "le32"]
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


# -- v2: Netty's offset / adjust / strip, an MQTT fixed header, the Codec protocol ---------

HELLO = b"HELLO, WORLD"
NETTY = [   # LengthFieldBasedFrameDecoder's documented examples: (kwargs, stream, frame)
    ({"prefix": "be16", "strip": 0}, b"\x00\x0c" + HELLO, b"\x00\x0c" + HELLO),
    ({"prefix": "be16", "strip": 2}, b"\x00\x0c" + HELLO, HELLO),
    ({"prefix": "be16", "adjust": -2, "strip": 0}, b"\x00\x0e" + HELLO, b"\x00\x0e" + HELLO),
    ({"prefix": "be24", "offset": 2, "strip": 0}, b"\xca\xfe\x00\x00\x0c" + HELLO,
     b"\xca\xfe\x00\x00\x0c" + HELLO),
    ({"prefix": "be24", "adjust": 2, "strip": 0}, b"\x00\x00\x0c\xca\xfe" + HELLO,
     b"\x00\x00\x0c\xca\xfe" + HELLO),
    ({"prefix": "be16", "offset": 1, "adjust": 1, "strip": 3}, b"\xca\x00\x0c\xfe" + HELLO,
     b"\xfe" + HELLO),
    ({"prefix": "be16", "offset": 1, "adjust": -3, "strip": 3}, b"\xca\x00\x10\xfe" + HELLO,
     b"\xfe" + HELLO),
    ({"prefix": "le16", "offset": 1}, b"\x07\x0c\x00" + HELLO, HELLO),   # strip=None: the body
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("kw", "frame_bytes", "want"), NETTY)
def test_length_field_decoder_examples(split: str, kw: dict, frame_bytes: bytes, want: bytes) -> None:
    codec = LengthPrefixed(max_frame=1000, **kw)
    stream = frame_bytes * 3 + frame_bytes[:-1]           # three frames and a partial one
    r = reader_split(stream, split)
    assert [m.tobytes() for m in codec.split(r)] == [want] * 3
    assert len(r) == len(frame_bytes) - 1                 # the partial frame is left unread
    r2 = reader_split(stream, split)
    assert views_bytes(codec.split_views(r2)) == [want] * 3 and r2.offset == 3 * len(frame_bytes)


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + enc_uleb(len(body)) + body


@pytest.mark.parametrize("split", SPLITS)
def test_mqtt_fixed_header(split: str) -> None:
    """MQTT: a type byte, then the Remaining Length varint (LEB128's encoding), then the
    rest; offset=1 skips the type byte, strip=0 keeps the whole packet."""
    packets = [mqtt_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"),  # CONNECT
               mqtt_packet(0x30, b"\x00\x03a/b" + b"x" * 200),                    # PUBLISH
               mqtt_packet(0xC0, b""),                                          # PINGREQ
               mqtt_packet(0xE0, b"")]                                          # DISCONNECT
    codec = LengthPrefixed("leb128", offset=1, strip=0, max_frame=268_435_455)
    got = [m.tobytes() for m in codec.split(reader_split(b"".join(packets), split))]
    assert got == packets and [p[0] >> 4 for p in got] == [1, 3, 12, 14]
    bodies = LengthPrefixed("leb128", offset=1).split_views(reader_split(b"".join(packets), split))
    assert views_bytes(bodies)[0].startswith(b"\x00\x04MQTT") and len(bodies[3]) == 0


BAD_FRAMES = [   # (kwargs, one good frame, the bad one, its message)
    ({"prefix": "be16", "adjust": -3}, b"\x00\x04a", b"\x00\x01abc",
     r"be16 length field 1 with adjust=-3 is a negative frame length \(-2\)"),
    ({"prefix": "be16", "strip": 9}, b"\x00\x07abcdefg", b"\x00\x01abc",
     r"strip=9 is past the end of the 3-byte frame"),
    ({"prefix": "be16", "adjust": 2, "max_frame": 3}, b"\x00\x00ab", b"\x00\x02abcd",
     r"be16 frame of 4 bytes \(length field 2, adjust=2\) is over max_frame=3"),
    ({"prefix": "le32", "max_frame": 3}, b"\x01\x00\x00\x00a", b"\xff\xff\xff\xff",
     r"le32 frame of 4294967295 bytes"),
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("kw", "good", "bad", "message"), BAD_FRAMES)
def test_malformed_frames_after_good_ones(split: str, kw: dict, good: bytes, bad: bytes,
                                          message: str) -> None:
    codec = LengthPrefixed(**{"max_frame": 100, **kw})
    for method in ("split", "split_views"):
        r = reader_split(good * 2 + bad, split)
        first = getattr(codec, method)(r)         # the good frames first, no frame lost
        assert len(first) == 2 and r.offset == 2 * len(good)
        with pytest.raises(MalformedError, match=message):
            getattr(codec, method)(r)
        assert r.offset == 2 * len(good)


def test_construction_is_checked() -> None:
    for kw, exc in (({"max_frame": 2**64}, ValueError), ({"max_frame": 1.0}, TypeError),
                    ({"max_frame": True}, TypeError), ({"offset": -1}, ValueError),
                    ({"offset": 1.5}, TypeError), ({"adjust": 2**63}, ValueError),
                    ({"strip": -1}, ValueError), ({"strip": "2"}, TypeError),
                    ({"prefix": "be64"}, ValueError)):
        with pytest.raises(exc):
            LengthPrefixed(**kw)
    with pytest.raises(ValueError):
        Delimited(b"\n", max_frame=2**64)
    with pytest.raises(TypeError):
        Delimited(10)
    assert LengthPrefixed("leb128", max_frame=2**64 - 1).max_frame == 2**64 - 1
    c = LengthPrefixed("le32", max_frame=10, offset=2, adjust=-4, strip=1)
    assert (c.prefix, c.offset, c.adjust, c.strip) == ("le32", 2, -4, 1)
    assert repr(c) == "LengthPrefixed('le32', max_frame=10, offset=2, adjust=-4, strip=1)"


def test_codec_protocol_and_argument_types() -> None:
    class Lines:
        def split(self, reader: Reader) -> list[bytes]:
            return []

        def split_views(self, reader: Reader, allocator: object = None) -> list[memoryview]:
            return []

    for codec in (LengthPrefixed(), Delimited(), Lines()):
        assert isinstance(codec, Codec)
    with pytest.raises(TypeError, match="needs a membuf.Reader, got bytes"):
        LengthPrefixed().split(b"\x01a")                      # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allocator with malloc"):
        LengthPrefixed().split_views(Reader(b"\x01a"), allocator=5)  # type: ignore[arg-type]


def test_a_failed_join_keeps_the_frames_before_it() -> None:
    """malloc of a joined frame fails (a capped allocator): the frames before it are
    returned, the reader stands at the frame that could not be joined, and the next call
    raises; once memory is back the frame comes out whole. Nothing is lost."""
    codec = LengthPrefixed("be16", max_frame=1 << 16)
    big = b"z" * 5000
    stream = encode("be16", [b"a", b"bc"]) + encode("be16", [big])
    r = Reader(Memory(stream[:10], stream[10:]))              # the big frame spans both
    with Allocator(max_bytes=4096, arena_size=4096, max_arena_size=4096) as a:
        assert views_bytes(codec.split_views(r, a)) == [b"a", b"bc"] and r.offset == 7
        with pytest.raises(MemoryLimitError):
            codec.split_views(r, a)
        assert r.offset == 7 and codec.joined == 0
    assert views_bytes(codec.split_views(r)) == [big] and codec.joined == 1


def test_mqtt_packets_through_a_stream_reader() -> None:
    """The same framer under StreamReader.frames(): packets dribbled in odd pieces come
    out whole, with and without views (the stream layer's receive sizing must not
    assume the length field sits at the frame's start)."""
    import trio
    import trio.testing

    from membuf import StreamReader

    packets = [mqtt_packet(0x30, bytes([i]) * (i * 37 % 300)) for i in range(60)]
    stream = b"".join(packets)

    for views in (False, True):
        got: list[bytes] = []

        async def main(views: bool = views, got: list[bytes] = got) -> None:
            send, recv = trio.testing.memory_stream_one_way_pair()
            rx = StreamReader(recv, chunk_size=256)
            codec = LengthPrefixed("leb128", offset=1, strip=0, max_frame=1 << 16)

            async def feed() -> None:
                for i in range(0, len(stream), 97):
                    await send.send_all(stream[i : i + 97])
                    await trio.testing.wait_all_tasks_blocked()
                await send.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                async for frame in rx.frames(codec, views=views):
                    got.append(bytes(frame) if views else frame.tobytes())
            await rx.aclose()

        trio.run(main)
        assert got == packets, views


# -- encode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [LengthPrefixed, membuf.codecs.PyLengthPrefixed])
@pytest.mark.parametrize("prefix", ["leb128", "be16", "be24", "be32", "le16", "le32"])
@settings(max_examples=40, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=20), adjust=st.sampled_from([0, -2, 3]))
def test_encode_then_split_round_trips(impl: Any, prefix: str, payloads: list[bytes],
                                       adjust: int) -> None:
    codec = impl(prefix, max_frame=1 << 16, adjust=adjust)
    w = membuf.Writer()
    ok = []
    for p in payloads:
        if len(p) - adjust < 0:
            with pytest.raises(ValueError):
                codec.encode(p, w)
            continue
        assert codec.encode(p, w) is None
        ok.append(p)
    stream = w.take()
    r = stream.reader()
    assert [bytes(v) for v in codec.split_views(r)] == ok and len(r) == 0


def _released() -> memoryview:
    mv = memoryview(b"gone")
    mv.release()
    return mv


ENCODE_PAYLOADS = {
    "bytes": lambda: b"abc",
    "empty": lambda: b"",
    "bytearray": lambda: bytearray(b"x" * 300),
    "view": lambda: memoryview(b"0123456789")[2:7],
    "strided": lambda: memoryview(b"0123456789")[::2],
    "released": _released,
    "array": lambda: __import__("array").array("H", [1, 2, 3]),
    "memory": lambda: Memory(b"ab", b"", b"cde"),
    "int": lambda: 5,
    "str": lambda: "text",
    "big": lambda: b"y" * 70000,
}


def _encode_as(how: str, codec: Any, p: Any, w: Any) -> Any:
    if how == "none":
        return codec.encode(p)
    if how == "keyword":
        return codec.encode(p, writer=w)
    if how == "extra args":
        return codec.encode(p, w, 1, 2, 3, 4, 5, 6)
    return codec.encode(p, w)                   # "writer", "pywriter"


def _outcome(call: Any) -> Any:
    try:
        out = call()
    except Exception as e:  # noqa: BLE001 - the outcome compared is the exception itself
        return type(e).__name__, str(e)
    return "ok", None if out is None else bytes(out)


@pytest.mark.parametrize("payload", list(ENCODE_PAYLOADS))
@pytest.mark.parametrize("codec_args", [("leb128", {}), ("be16", {}), ("be24", {"adjust": -2}),
                                        ("le16", {"adjust": 3}), ("le32", {"max_frame": 4}),
                                        ("be32", {"offset": 1})],
                         ids=lambda a: f"{a[0]}{a[1] or ''}")
@pytest.mark.parametrize("writer", ["none", "writer", "keyword", "pywriter", "extra args"])
def test_encode_compiled_agrees_with_pure(payload: str, codec_args: Any, writer: str) -> None:
    """The compiled encode (C for a prefix and a flat payload, the shared Python code for
    the rest) and the pure one: the same frame or the same error and message, and a
    Writer left with the same bytes."""
    prefix, kw = codec_args
    outcomes = []
    for impl in (LengthPrefixed, membuf.codecs.PyLengthPrefixed):
        codec = impl(prefix, **{"max_frame": 1 << 20, **kw})
        w = membuf.writer.PyWriter() if writer == "pywriter" else membuf.Writer()
        w.write(b"<")
        p = ENCODE_PAYLOADS[payload]()
        call = partial(_encode_as, writer, codec, p, w)
        outcomes.append((_outcome(call), bytes(w.take())))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("impl", [Delimited, membuf.codecs.PyDelimited])
def test_delimited_encode(impl: Any) -> None:
    codec = impl(b"\r\n", max_frame=10)
    frame = codec.encode(membuf.Memory(b"ab", b"cd"))
    assert frame.tobytes() == b"abcd\r\n" and frame.count == 3   # by reference, not joined
    with pytest.raises(ValueError, match="delimiter"):
        codec.encode(b"a\r\nb")
    with pytest.raises(MalformedError):
        codec.encode(b"x" * 11)


@pytest.mark.parametrize("impl", [LengthPrefixed, membuf.codecs.PyLengthPrefixed])
def test_encode_refuses_what_the_peer_could_not_read(impl: Any) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        impl("be16", max_frame=1 << 20).encode(b"x" * 70000)
    with pytest.raises(MalformedError):
        impl("be32", max_frame=4).encode(b"hello")
    with pytest.raises(ValueError, match="header bytes"):
        impl("leb128", offset=1).encode(b"x")
    with pytest.raises(TypeError):
        impl("leb128").encode(5)
    w = membuf.Writer()
    with pytest.raises(ValueError):
        impl("be16", max_frame=1 << 20).encode(b"x" * 70000, w)
    assert len(w) == 0                                    # nothing was written
