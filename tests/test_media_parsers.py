"""Unit tests of the sans-IO media parsers, each run over every split of its input.

The inputs are built here by hand from the specs (FLV, AMF0, RTMP chunking,
AV1 OBUs, IVF), independently of the encoders in membuf.media, and fed the
way a receive buffer grows: segment by segment into one Memory, calling the
parser until it raises NeedMore after each push.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from splitting import SPLITS, feed, memory_split, split

from membuf.allocator import Allocator
from membuf.errors import MalformedError, NeedMore
from membuf.media import amf0, av1, flv, rtmp
from membuf.media.ring import FrameRing
from membuf.memory import Memory, RecyclableMemory
from membuf.reader import Reader

# -- FLV ---------------------------------------------------------------------


def flv_tag(kind: int, ts: int, body: bytes) -> bytes:
    return (bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes([ts >> 24]) + b"\0\0\0" + body + (11 + len(body)).to_bytes(4, "big"))


SPS, PPS = b"\x67\x64\x00\x1e\xac", b"\x68\xee\x3c\x80"
AVC_CONFIG = (bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1E, 0xFF, 0xE1]) + len(SPS).to_bytes(2, "big")
              + SPS + b"\x01" + len(PPS).to_bytes(2, "big") + PPS)
NALUS = [b"\x06" + b"s" * 7, b"\x65" + bytes(range(200)), b"\x65" + b"x" * 30]
AVC_KEY = bytes([0x17, 1, 0, 0, 0]) + b"".join(len(n).to_bytes(4, "big") + n for n in NALUS)
AVC_INTER = bytes([0x27, 1, 0, 0, 0x21]) + (5).to_bytes(4, "big") + b"\x41abcd"
AVC_EOS = bytes([0x17, 2, 0, 0, 0])
AAC_CONFIG = bytes([0xAF, 0, 0x12, 0x08])
AAC_RAW = bytes([0xAF, 1]) + b"\x21" * 40
FLV_TAGS = [
    (flv.SCRIPT, 0, amf0.encode("onMetaData", amf0.EcmaArray(duration=1.0, width=160.0))),
    (flv.VIDEO, 0, AVC_CONFIG), (flv.AUDIO, 0, AAC_CONFIG),
    (flv.VIDEO, 0, AVC_KEY), (flv.AUDIO, 0, AAC_RAW), (flv.AUDIO, 23, AAC_RAW),
    (flv.VIDEO, 40, AVC_INTER), (flv.VIDEO, 0x1234567, AVC_INTER), (flv.VIDEO, 0x1234567, AVC_EOS),
]
FLV_DATA = b"FLV\x01\x05\0\0\0\x09\0\0\0\0" + b"".join(flv_tag(*t) for t in FLV_TAGS)


def parse_flv(segments: list[Any]) -> list[flv.Tag]:
    state = {"header": False}

    def parse(r: Reader) -> Any:
        if not state["header"]:
            flv.read_header(r)
            state["header"] = True
        return flv.read_tag(r)

    tags, r = feed(segments, parse)
    assert len(r) == 0
    return tags


@pytest.mark.parametrize("how", SPLITS)
def test_flv_tags_every_split(how: str) -> None:
    tags = parse_flv(split(FLV_DATA, how))
    assert [(t.type, t.timestamp, t.body.to_bytes()) for t in tags] == FLV_TAGS
    counts = flv.MediaCounts()
    for t in tags:
        counts.add(t.type, t.body.reader().peek(min(5, len(t.body))), t.timestamp)
    # ffprobe's view: configs, end-of-sequence and script data are not packets
    assert counts.summary() == {"format": "flv", "video_frames": 3, "audio_frames": 2,
                                "keyframes": 1, "bytes": 0}
    assert (counts.configs, counts.end_of_sequence, counts.scripts) == (2, 1, 1)
    assert (counts.video_codec, counts.audio_codec) == ("h264", "aac")
    assert (counts.first_video_ts, counts.first_audio_ts) == (0, 0)


def test_flv_every_prefix_is_atomic() -> None:
    """Cut anywhere: the parser consumes whole tags only and says how much is missing."""
    bounds = [13]
    for t in FLV_TAGS:
        bounds.append(bounds[-1] + 15 + len(t[2]))
    for cut in range(len(FLV_DATA)):
        r = Reader(Memory(FLV_DATA[:cut]))
        n = 0
        try:
            flv.read_header(r)
            while True:
                flv.read_tag(r)
                n += 1
        except NeedMore as e:
            assert e.needed >= 1
        assert r.offset == (bounds[n] if cut >= 13 else 0)


def test_flv_corruption_is_malformed() -> None:
    with pytest.raises(MalformedError, match="not an FLV"):
        flv.read_header(Reader(Memory(b"FLX\x01\x05\0\0\0\x09\0\0\0\0")))
    bad_type = bytearray(flv_tag(flv.VIDEO, 0, AVC_INTER))
    bad_type[0] = 7
    with pytest.raises(MalformedError, match="type 7"):
        flv.read_tag(Reader(Memory(bytes(bad_type))))
    bad_prev = bytearray(flv_tag(flv.VIDEO, 0, AVC_INTER))
    bad_prev[-1] ^= 0x40
    with pytest.raises(MalformedError, match="previous-tag size"):
        flv.read_tag(Reader(Memory(bytes(bad_prev))))


@pytest.mark.parametrize("how", SPLITS)
def test_split_nalus_every_split(how: str) -> None:
    r = memory_split(AVC_KEY, how).reader()
    r.skip(5)
    nalus = flv.split_nalus(r, 4)
    assert [n.to_bytes() for n in nalus] == NALUS
    assert flv.nalu_length_size(Memory(AVC_CONFIG), "h264") == 4
    r = Reader(Memory(AVC_KEY[5:-3]))
    with pytest.raises(MalformedError, match="NAL unit"):
        flv.split_nalus(r, 4)


def test_classify() -> None:
    assert flv.classify_video(AVC_CONFIG[:5]) == (flv.CONFIG, False, "h264")
    assert flv.classify_video(AVC_KEY[:5]) == (flv.FRAME, True, "h264")
    assert flv.classify_video(AVC_INTER[:5]) == (flv.FRAME, False, "h264")
    assert flv.classify_video(AVC_EOS) == (flv.END_OF_SEQUENCE, False, "h264")
    assert flv.classify_video(bytes([0x1C, 0])) == (flv.CONFIG, False, "hevc")   # codec id 12
    assert flv.classify_video(bytes([0x52, 0])) == (flv.INFO, False, "h263")     # command frame
    assert flv.classify_video(b"\x90hvc1") == (flv.CONFIG, False, "hevc")        # enhanced RTMP
    assert flv.classify_video(b"\x91av01") == (flv.FRAME, True, "av1")
    assert flv.classify_video(b"") == (flv.EMPTY, False, "?")
    assert flv.classify_audio(AAC_CONFIG) == (flv.CONFIG, "aac")
    assert flv.classify_audio(AAC_RAW) == (flv.FRAME, "aac")
    assert flv.classify_audio(b"\x2f\xff") == (flv.FRAME, "mp3")
    assert flv.aac_config(Memory(AAC_CONFIG)) == "AAC type 2, 44100 Hz, 1 ch"


# -- AMF0 --------------------------------------------------------------------


AMF_VALUES: list[Any] = [
    "connect", 1.0, True, False, None, amf0.UNDEFINED, "",
    {"app": "live", "tcUrl": "rtmp://h/live", "nested": {"a": [1.0, "b", None]}},
    amf0.EcmaArray(width=160.0, height=120.0), [], amf0.Date(1.5e12, -60), "é" * 40000,
]


@pytest.mark.parametrize("how", SPLITS)
def test_amf0_roundtrip_every_split(how: str) -> None:
    data = amf0.encode(*AMF_VALUES)
    values = amf0.decode_all(memory_split(data, how).reader())
    assert values == AMF_VALUES
    assert isinstance(values[8], amf0.EcmaArray)


def test_amf0_known_bytes_and_errors() -> None:
    assert amf0.encode("a", 2.0, None) == b"\x02\x00\x01a\x00@\x00\x00\x00\x00\x00\x00\x00\x05"
    obj = b"\x03\x00\x01k\x02\x00\x01v\x00\x00\x09"
    assert amf0.decode(Reader(Memory(obj))) == {"k": "v"}
    with pytest.raises(MalformedError, match="truncated"):
        amf0.decode(Reader(Memory(obj[:-2])))
    with pytest.raises(MalformedError, match="AMF3"):
        amf0.decode(Reader(Memory(b"\x11\x01")))
    with pytest.raises(MalformedError, match="unknown AMF0 marker"):
        amf0.decode(Reader(Memory(b"\x42")))
    with pytest.raises(MalformedError, match="nesting"):
        amf0.decode(Reader(Memory(b"\x0a\x00\x00\x00\x01" * 40 + b"\x05")))
    with pytest.raises(TypeError):
        amf0.encode(object())


# -- AV1 OBUs and IVF ----------------------------------------------------------


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def obu(obu_type: int, payload: bytes, ext: int | None = None, size_field: bool = True) -> bytes:
    h = obu_type << 3 | (4 if ext is not None else 0) | (2 if size_field else 0)
    return (bytes([h]) + (bytes([ext]) if ext is not None else b"")
            + (leb(len(payload)) if size_field else b"") + payload)


TD = obu(av1.TEMPORAL_DELIMITER, b"")
SEQ = obu(av1.SEQUENCE_HEADER, b"\x00\x00\x00\x0a\x0b")
SHOWN_KEY = obu(av1.FRAME, b"\x10" + bytes(300))      # show_existing 0, KEY, show_frame 1
HIDDEN = obu(av1.FRAME, b"\x20" + b"h" * 50)          # show_frame 0: an alt-ref
SHOWN = obu(av1.FRAME, b"\x30" + b"s" * 20, ext=0x28)  # with extension: temporal 1, spatial 1
SHOW_EXISTING = obu(av1.FRAME_HEADER, b"\x80")
OBU_STREAM = (TD + SEQ + SHOWN_KEY + TD + HIDDEN + SHOWN + TD + SHOW_EXISTING
              + obu(av1.PADDING, b"\0" * 3) + TD + obu(av1.METADATA, b"\x01\x02") + SHOWN)


@pytest.mark.parametrize("how", SPLITS)
def test_obu_stream_every_split(how: str) -> None:
    counts = av1.ObuCounts()
    obus, r = feed(split(OBU_STREAM, how), av1.read_obu)
    for o in obus:
        counts.add_obu(o)
    assert len(r) == 0
    assert b"".join(o.data.to_bytes() for o in obus) == OBU_STREAM
    assert counts.summary() == {"format": "obu", "obus": 12, "temporal_units": 4, "frames": 4}
    assert counts.hidden_frames == 1 and counts.bytes == len(OBU_STREAM)
    assert [o.name for o in obus][:3] == ["temporal_delimiter", "sequence_header", "frame"]
    assert (obus[5].temporal_id, obus[5].spatial_id, obus[5].header_size) == (1, 1, 3)
    assert obus[2].payload.to_bytes() == b"\x10" + bytes(300) and obus[2].header_size == 3


def test_obu_every_prefix_is_atomic_and_errors() -> None:
    for cut in range(len(SHOWN_KEY)):
        r = Reader(Memory(SHOWN_KEY[:cut]))
        with pytest.raises(NeedMore):
            av1.read_obu(r)
        assert r.offset == 0
    with pytest.raises(MalformedError, match="forbidden bit"):
        av1.read_obu(Reader(Memory(b"\x92\x00")))
    with pytest.raises(MalformedError, match="no size field"):
        av1.read_obu(Reader(Memory(obu(av1.FRAME, b"\x10", size_field=False))))
    with pytest.raises(MalformedError):
        av1.read_obu(Reader(Memory(b"\x32" + b"\xff" * 11)))  # LEB128 over 10 bytes
    with pytest.raises(MalformedError, match="max_size"):
        av1.read_obu(Reader(Memory(b"\x32" + leb(1 << 30))))
    # inside a container, an OBU without a size field runs to the end of the unit
    unit = TD + obu(av1.FRAME, b"\x10abc", size_field=False)
    counts = av1.ObuCounts()
    obus = av1.walk_obus(Reader(Memory(unit)), counts, rest=len(unit))
    assert [o.payload.to_bytes() for o in obus] == [b"", b"\x10abc"] and counts.frames == 1


def ivf(frames: list[bytes]) -> bytes:
    head = (b"DKIF" + struct.pack("<HH4sHHIII", 0, 32, b"AV01", 160, 120, 25, 1, len(frames))
            + bytes(4))
    return head + b"".join(struct.pack("<IQ", len(f), i) + f for i, f in enumerate(frames))


@pytest.mark.parametrize("how", SPLITS)
def test_ivf_every_split(how: str) -> None:
    data = ivf([TD + SEQ + SHOWN_KEY, HIDDEN + SHOWN, TD + SHOW_EXISTING])
    r = memory_split(data, how).reader()
    hdr = av1.read_ivf_header(r)
    assert (hdr.fourcc, hdr.width, hdr.height, hdr.frames) == (b"AV01", 160, 120, 3)
    counts = av1.ObuCounts(format="ivf")
    pts = []
    while len(r):
        p, unit = av1.read_ivf_frame(r)
        pts.append(p)
        av1.walk_obus(unit.reader(), counts, rest=len(unit))
    assert pts == [0, 1, 2] and (counts.obus, counts.frames, counts.hidden_frames) == (7, 3, 1)


# -- RTMP chunk stream ----------------------------------------------------------


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1]) + (csid - 64).to_bytes(2, "little")


def header(fmt: int, csid: int, ts: int = 0, length: int = 0, mtype: int = 0, sid: int = 0,
           ext: bool = False) -> bytes:
    field = 0xFFFFFF if ext else ts
    out = basic(fmt, csid)
    if fmt < 3:
        out += field.to_bytes(3, "big")
    if fmt < 2:
        out += length.to_bytes(3, "big") + bytes([mtype])
    if fmt == 0:
        out += sid.to_bytes(4, "little")
    return out + (ts.to_bytes(4, "big") if ext else b"")


A = bytes(range(256)) + bytes(44)        # 300 bytes: three chunks at size 128
E = b"\xab" * 200
H = bytes(reversed(range(200)))
CHUNKED = b"".join([
    header(0, 4, 1000, 300, 9, 1), A[:128],
    header(0, 70, 0x1000000, 200, 9, 1, ext=True), E[:128],   # 2-byte basic header, ext ts
    header(3, 4), A[128:256],                                  # interleaved continuation
    header(3, 70) + (0x1000000).to_bytes(4, "big"), E[128:],   # ext ts repeated on fmt 3
    header(3, 4), A[256:],
    header(1, 4, 40, 50, 8), b"b" * 50,                        # fmt 1: delta 40
    header(2, 4, 20), b"c" * 50,                               # fmt 2: delta 20
    header(3, 4), b"d" * 50,                                   # fmt 3 new message: delta again
    header(0, 400, 0x2000000, 200, 9, 1, ext=True), E[:128],   # 3-byte basic header
    header(3, 400), E[128:],                                   # ext ts not repeated: accepted
    header(0, 2, 0, 4, rtmp.SET_CHUNK_SIZE), (64).to_bytes(4, "big"),
    header(0, 4, 2000, 200, 9, 1), H[:64], header(3, 4), H[64:128], header(3, 4), H[128:192],
    header(3, 4), H[192:],
    header(0, 5, 0, 100, 9, 1), b"x" * 64,                     # a message we abort
    header(0, 2, 0, 4, rtmp.ABORT), (5).to_bytes(4, "big"),
    header(0, 5, 7, 10, 9, 1), b"y" * 10,
    header(0, 6, 9, 0, 18, 1),                                 # an empty message
])
EXPECTED = [
    (9, 1, 0x1000000, E), (9, 1, 1000, A), (8, 1, 1040, b"b" * 50), (8, 1, 1060, b"c" * 50),
    (8, 1, 1080, b"d" * 50), (9, 1, 0x2000000, E), (rtmp.SET_CHUNK_SIZE, 0, 0, b"\0\0\0\x40"),
    (9, 1, 2000, H), (rtmp.ABORT, 0, 0, b"\0\0\0\x05"), (9, 1, 7, b"y" * 10), (18, 1, 9, b""),
]


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_reader_every_split(how: str) -> None:
    with Allocator() as a:
        reader = rtmp.ChunkReader(a)
        msgs, r = feed(split(CHUNKED, how), reader.read_message)
        got = [(m.type, m.stream_id, m.timestamp, m.body.to_bytes()) for m in msgs]
        assert got == EXPECTED
        assert reader.chunk_size == 64 and reader.bytes_read == len(CHUNKED) and len(r) == 0
        assert all(m.body.count == 1 for m in msgs)  # one buffer per message
        for m in msgs:
            m.body.recycle()
        reader.close()
        assert a.stats().in_use == 0


def test_chunk_reader_errors_and_partial_close() -> None:
    with Allocator() as a:
        with pytest.raises(MalformedError, match="starts with a fmt 3"):
            rtmp.ChunkReader(a).read_message(Reader(Memory(header(3, 9) + b"x")))
        with pytest.raises(MalformedError, match="middle of a"):
            rtmp.ChunkReader(a).read_message(Reader(Memory(
                header(0, 4, 0, 300, 9) + A[:128] + header(0, 4, 0, 10, 9))))
        with pytest.raises(MalformedError, match="max_message"):
            rtmp.ChunkReader(a, max_message=1000).read_message(
                Reader(Memory(header(0, 4, 0, 5000, 9))))
        cr = rtmp.ChunkReader(a)
        with pytest.raises(NeedMore):
            cr.read_message(Reader(Memory(header(0, 4, 0, 300, 9) + A[:100])))
        # the buffer holds what arrived, not the 300 bytes announced
        assert cr.pending() == 100 and a.stats().in_use == cr.partial_bytes == 100
        cr.close()
        assert a.stats().in_use == cr.partial_bytes == 0


def feed_pausing(segments: list[Any], reader: rtmp.ChunkReader) -> tuple[list[Any], int]:
    """``feed`` for a ChunkReader made with ``pause_every``: a Paused is retried at once."""
    mem = Memory()
    r = mem.reader()
    out, pauses = [], 0
    for seg in segments:
        mem.push(seg)
        while True:
            try:
                out.append(reader.read_message(r))
            except rtmp.Paused:
                pauses += 1
            except NeedMore:
                break
    return out, pauses


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_reader_pauses_lose_nothing(how: str) -> None:
    """With pause_every, read_message stops between chunks; retried, every message comes
    out exactly as without pauses, however the input is split."""
    with Allocator() as a:
        reader = rtmp.ChunkReader(a, pause_every=2)
        msgs, pauses = feed_pausing(split(CHUNKED, how), reader)
        got = [(m.type, m.stream_id, m.timestamp, m.body.to_bytes()) for m in msgs]
        assert got == EXPECTED and pauses >= reader.chunks // 2 - 1
        assert reader.bytes_read == len(CHUNKED)
        for m in msgs:
            m.body.recycle()
        reader.close()
        assert a.stats().in_use == 0


EMPTY_FLOOD = header(0, 6, 0, 0, 9, 1) + header(3, 6) * 3000   # 3001 empty messages


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_reader_flood_rule_is_the_same_however_split(how: str) -> None:
    """Past the allowance, chunks must average min_chunk_bytes: 1-byte headers of empty
    messages are refused at the same chunk wherever the receive boundaries fall."""
    from membuf.media.limits import LimitError

    with Allocator() as a:
        reader = rtmp.ChunkReader(a, min_chunk_bytes=16, item_allowance=100)
        mem = Memory()
        r = mem.reader()
        messages = 0
        # chunk k has come in k + 11 bytes (a 12-byte header, then 1 byte each): refused
        # at the first k over 100 + (k + 11) // 16
        with pytest.raises(LimitError, match="RTMP flood: 108 chunks in 119 bytes"):
            for seg in split(EMPTY_FLOOD, how):
                mem.push(seg)
                while True:
                    try:
                        reader.read_message(r).body.recycle()
                        messages += 1
                    except NeedMore:
                        break
        assert messages == 107 and reader.chunks == 107
        assert a.stats().in_use == 0


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_reader_flood_rule_counts_one_byte_continuation_chunks(how: str) -> None:
    """Chunk size 1: every payload byte comes with a 1-byte fmt-3 continuation header
    (the parser's fast path); past the allowance the average rule refuses them at the
    same chunk however the input is split, and nothing is left held."""
    from membuf.media.limits import LimitError

    payload = 5000
    data = (header(0, 2, 0, 4, 1, 0) + (1).to_bytes(4, "big")      # Set Chunk Size 1
            + header(0, 6, 0, payload, 9, 1) + b"\x17"
            + (header(3, 6) + b"x") * (payload - 1))
    with Allocator() as a:
        reader = rtmp.ChunkReader(a, min_chunk_bytes=16, item_allowance=100)
        mem = Memory()
        r = mem.reader()
        # the control message (one 16-byte chunk), the message's first chunk (12 + 1
        # bytes), then 2 bytes a chunk: chunk k has come in 2k + 24 bytes, refused at the
        # first k over 100 + (2k + 24) // 16, k = 117 (258 bytes)
        with pytest.raises(LimitError, match="RTMP flood: 117 chunks in 258 bytes"):
            for seg in split(data, how):
                mem.push(seg)
                while True:
                    try:
                        reader.read_message(r).body.recycle()
                    except NeedMore:
                        break
        reader.close()
        assert a.stats().in_use == 0


def test_chunk_reader_partial_budget_holds_what_arrived_and_refuses_past_it() -> None:
    from membuf.media.limits import LimitError

    with Allocator() as a:
        reader = rtmp.ChunkReader(a, max_partial=1000)
        r = Memory(header(0, 4, 0, 5000, 9, 1) + bytes(128) + header(0, 6, 0, 5000, 9, 1)
                   + bytes(128)).reader()
        with pytest.raises(NeedMore):
            reader.read_message(r)
        # two messages in part, 128 bytes of each: the buffers hold exactly that
        assert reader.partial_bytes == a.stats().in_use == 256 and reader.pending() == 256
        more = Memory((header(3, 4) + bytes(128) + header(3, 6) + bytes(128)) * 10)
        r2 = more.reader()
        with pytest.raises(LimitError, match="over max_partial=1000"):
            while True:
                reader.read_message(r2)
        held, left = reader.partial_bytes, len(r2)
        assert held <= 1000 and held <= 2 * reader.pending() and a.stats().in_use == held
        with pytest.raises(LimitError):   # refused again, nothing consumed meanwhile
            reader.read_message(r2)
        assert (reader.partial_bytes, len(r2)) == (held, left)
        reader.close()
        assert a.stats().in_use == reader.partial_bytes == 0


def test_encode_chunks_roundtrip() -> None:
    payload = Memory(b"x" * 100, b"y" * 200)
    out = rtmp.encode_chunks(9, payload, csid=6, stream_id=1, timestamp=0x1234567, chunk_size=128)
    with Allocator() as a:
        m = rtmp.ChunkReader(a).read_message(out.reader())
        assert (m.type, m.stream_id, m.timestamp, m.csid) == (9, 1, 0x1234567, 6)
        assert m.body.to_bytes() == payload.to_bytes()
        m.body.recycle()


# -- RTMP session: a whole publish ---------------------------------------------


def command(csid: int, *values: Any, sid: int = 0) -> bytes:
    body = amf0.encode(*values)
    return header(0, csid, 0, len(body), rtmp.COMMAND_AMF0, sid) + body  # < 128: one chunk


PUBLISH = b"".join([
    b"\x03", bytes(1536), bytes(1536),                          # C0, C1, C2
    header(0, 2, 0, 4, rtmp.SET_CHUNK_SIZE), (4096).to_bytes(4, "big"),
    header(0, 2, 0, 4, rtmp.WINDOW_ACK_SIZE), (500).to_bytes(4, "big"),
    command(3, "connect", 1.0, {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0"}),
    command(3, "releaseStream", 2.0, None, "test"),
    command(3, "FCPublish", 3.0, None, "test"),
    command(3, "createStream", 4.0, None),
    command(4, "publish", 5.0, None, "test", "live", sid=1),
    header(0, 4, 0, len(AVC_CONFIG), 9, 1), AVC_CONFIG,
    header(0, 6, 0, len(AVC_KEY), 9, 1), AVC_KEY,
    header(0, 7, 0, len(AAC_RAW), 8, 1), AAC_RAW,
    command(3, "FCUnpublish", 6.0, None, "test"),
    command(3, "deleteStream", 7.0, None, 1.0),
])


@pytest.mark.parametrize("how", SPLITS)
def test_server_session_publish_every_split(how: str) -> None:
    with Allocator() as a:
        session = rtmp.ServerSession(a)
        sent = bytearray()

        def parse(r: Reader) -> Any:
            try:
                return session.next_event(r)
            finally:
                for piece in session.data_to_send():
                    sent.extend(piece)

        events, r = feed(split(PUBLISH, how), parse)
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["Publish", "Media", "Media", "Media", "Unpublish"]
        assert (events[0].app, events[0].name) == ("live", "test")
        assert [e.message.body.to_bytes() for e in events[1:4]] == [AVC_CONFIG, AVC_KEY, AAC_RAW]
        for e in events[1:4]:
            e.message.body.recycle()
        session.close()
        assert a.stats().in_use == 0

        # what the server said: S0 S1 S2, then chunked messages a client can parse
        assert sent[0] == 3 and sent[1 + 1536:1 + 3072] == bytes(1536)  # S2 echoes C1
        client = rtmp.ChunkReader(a)
        msgs, _ = feed([bytes(sent[3073:])], client.read_message)
        types = [m.type for m in msgs]
        control = [t for t in types if t != rtmp.ACK]
        assert control[:3] == [rtmp.WINDOW_ACK_SIZE, rtmp.SET_PEER_BANDWIDTH, rtmp.SET_CHUNK_SIZE]
        assert rtmp.ACK in types  # the peer asked for a 500-byte window
        cmds = [amf0.decode_all(m.reader()) for m in msgs if m.type == rtmp.COMMAND_AMF0]
        assert cmds[0][0] == "_result" and cmds[0][3]["code"] == "NetConnection.Connect.Success"
        assert ["_result", 4.0, None, 1.0] in cmds                    # createStream -> id 1
        status = [c for c in cmds if c[0] == "onStatus"]
        assert status[0][3]["code"] == "NetStream.Publish.Start"
        for m in msgs:
            m.body.recycle()
        assert a.stats().in_use == 0


def test_server_session_rejects_bad_handshake() -> None:
    with Allocator() as a, pytest.raises(MalformedError, match="C0 version 6"):
        rtmp.ServerSession(a).next_event(Reader(Memory(b"\x06" + bytes(1536))))


def test_frame_ring_is_bounded_in_bytes() -> None:
    with Allocator() as a:
        ring = FrameRing(64, max_bytes=10_000)
        for i in range(100):
            rm = RecyclableMemory(a)
            rm.next_n(1 + i * 37 % 3000)
            ring.push(rm)
            assert ring.bytes == a.stats().in_use <= 10_000
            assert ring.bytes == sum(len(f) for f in ring)  # type: ignore[arg-type]
        big = RecyclableMemory(a)
        big.next_n(10_001)
        kept = ring.bytes
        ring.push(big)                       # larger than the whole bound: not retained
        assert (ring.dropped, ring.bytes, a.stats().in_use) == (1, kept, kept)
        assert ring.written == 101 and ring.recycled == 101 - 1 - len(ring)
        ring.clear()
        assert a.stats().in_use == 0 and len(ring) == 0 and ring.bytes == 0


def test_frame_ring_recycles_what_it_overwrites() -> None:
    with Allocator() as a:
        ring = FrameRing(8)
        for i in range(100):
            rm = RecyclableMemory(a)
            rm.next_n(1000)[:4] = i.to_bytes(4, "big")
            ring.push(rm)
            assert a.stats().in_use == 1000 * min(i + 1, 8)
        assert [int.from_bytes(f.to_bytes()[:4], "big") for f in ring] == list(range(92, 100))  # type: ignore[attr-defined]
        assert (len(ring), ring.written, ring.recycled) == (8, 100, 92)
        ring.clear()
        assert a.stats().in_use == 0 and len(ring) == 0
