"""Fuzz harness: the media parsers (FLV, AV1 OBU / IVF, AMF0, RTMP chunks and session, probe).

Strategy. The first input byte picks a parser; the rest is a byte stream and
a segmentation of it. Each parser runs twice: once over the whole stream in
one segment, once fed a few segments at a time, as a TCP receive buffer
grows, calling the parser again after every push until it needs more. The
oracles:

* only ``MembufError`` subclasses escape (anything else is a bug);
* split invariance: both runs produce the same items (tags, OBUs, frames,
  messages, events, probe report) and end the same way (clean, needs more,
  malformed, out of memory), however the stream was cut;
* atomicity: a parser documented as atomic (``read_header``, ``read_tag``,
  ``read_obu``, ``read_ivf_header``, ``read_ivf_frame``) that raises
  ``NeedMore`` leaves the Reader where it was;
* AMF0 round trip: ``encode(decode(x))`` decodes back to the same encoding;
* no leak: after every RTMP message is recycled and the reader/session is
  closed, its allocator holds no bytes and passes ``check()``.

Run: ``python fuzz/fuzz_media.py -max_total_time=60`` or ``--random 60``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import Input, main, segments  # noqa: E402

from membuf import (  # noqa: E402
    Allocator,
    MalformedError,
    MembufError,
    Memory,
    MemoryLimitError,
    NeedMore,
    Reader,
)
from membuf.media import amf0, av1, flv, rtmp  # noqa: E402
from membuf.media.probe import format_text, probe_memory  # noqa: E402

Step = Callable[[Reader], Any]
MAX_BYTES = 32 << 20            # the RTMP allocators' cap: a hostile length cannot map more


def feed(groups: list[list[Any]], make_step: Callable[[], Step], atomic: bool) -> tuple[list[Any], str]:
    """Push each group of segments, then call the step until it raises; return items and ending."""
    mem = Memory()
    r = Reader(mem)
    step = make_step()
    items: list[Any] = []
    end = "clean"
    for group in groups:
        mem.push(*group)
        while True:
            before = (len(r), r.offset)
            try:
                items.append(step(r))
            except NeedMore as exc:
                if atomic:
                    assert (len(r), r.offset) == before, f"NeedMore moved the reader: {exc}"
                assert exc.needed >= 1
                end = "needmore"
                break
            except StopIteration:
                end = "clean"
                break
            except MembufError as exc:
                assert str(exc)
                return items, type(exc).__name__
    return items, end


def both_ways(segs: list[Any], inp: Input, make_step: Callable[[], Step], atomic: bool) -> None:
    """Run the parser over the whole stream and fed in groups; the results must agree."""
    whole = b"".join(bytes(s) for s in segs)
    groups: list[list[Any]] = []
    i = 0
    while i < len(segs):
        k = 1 + inp.u8() % 4
        groups.append(segs[i : i + k])
        i += k
    a = feed([[whole]], make_step, atomic)
    b = feed(groups or [[]], make_step, atomic)
    assert a == b, f"split changed the result:\n whole: {a!r}\n split: {b!r}"


# -- FLV -------------------------------------------------------------------------


def flv_step() -> Step:
    state: dict[str, Any] = {"header": False, "length_size": 4}

    def step(r: Reader) -> Any:
        if not state["header"]:
            h = flv.read_header(r)
            state["header"] = True
            return ("header", h)
        if not len(r):
            raise NeedMore("no tag yet", 1)
        tag = flv.read_tag(r, max_size=1 << 16)
        body = tag.body.to_bytes()
        head = tag.body.reader().peek(min(5, len(tag.body)))
        extra: Any = None
        if tag.type == flv.VIDEO:
            kind, key, codec = flv.classify_video(head)
            extra = (kind, key, codec)
            if kind == flv.CONFIG and codec in ("h264", "hevc"):
                try:
                    state["length_size"] = flv.nalu_length_size(tag.body, codec)
                except MalformedError as exc:
                    extra += (str(exc),)
            elif kind == flv.FRAME:
                br = tag.body.reader()
                br.skip(min(5, len(br)))
                try:
                    nalus = [n.to_bytes() for n in flv.split_nalus(br, state["length_size"])]
                    extra += (nalus,)
                except MalformedError as exc:
                    extra += (str(exc),)
        elif tag.type == flv.AUDIO:
            extra = flv.classify_audio(head)
            if extra[0] == flv.CONFIG:
                extra += (flv.aac_config(tag.body),)
        return ("tag", tag.type, tag.timestamp, body, extra)

    return step


# -- AV1 -------------------------------------------------------------------------


def obu_step() -> Step:
    counts = av1.ObuCounts()

    def step(r: Reader) -> Any:
        if not len(r):
            raise NeedMore("no OBU yet", 1)
        obu = av1.read_obu(r, max_size=1 << 16)
        counts.add_obu(obu)
        return (obu.type, obu.temporal_id, obu.spatial_id, obu.header_size, obu.data.to_bytes(),
                obu.payload.to_bytes(), counts.summary(), counts.hidden_frames)

    return step


def ivf_step() -> Step:
    state = {"header": False}
    counts = av1.ObuCounts(format="ivf")

    def step(r: Reader) -> Any:
        if not state["header"]:
            h = av1.read_ivf_header(r)
            state["header"] = True
            return h
        if not len(r):
            raise NeedMore("no frame yet", 1)
        pts, data = av1.read_ivf_frame(r, max_size=1 << 16)
        obus: list[Any]
        try:
            obus = [o.data.to_bytes() for o in av1.walk_obus(data.reader(), counts, rest=len(data))]
        except MalformedError as exc:
            obus = [str(exc)]
        return pts, data.to_bytes(), obus, counts.summary()

    return step


# -- AMF0 ------------------------------------------------------------------------


def amf0_check(segs: list[Any]) -> None:
    """Decode split and whole; then the re-encoding must be a fixed point."""
    whole = b"".join(bytes(s) for s in segs)
    outcomes: list[tuple[str, Any, int]] = []
    for r in (Reader.from_bytes(*segs), Reader.from_bytes(whole)):
        try:
            values = amf0.decode_all(r)
        except MalformedError as exc:
            outcomes.append(("malformed", str(exc), r.offset))
            continue
        enc = amf0.encode(*values)
        outcomes.append(("ok", enc, r.offset))
        again = amf0.decode_all(Reader.from_bytes(enc))
        assert amf0.encode(*again) == enc, "AMF0 encode/decode is not a fixed point"
    assert outcomes[0] == outcomes[1], f"split changed the AMF0 result: {outcomes!r}"


# -- RTMP ------------------------------------------------------------------------


def chunk_step(allocators: list[Allocator], readers: list[rtmp.ChunkReader],
               max_message: int) -> Callable[[], Step]:
    def make() -> Step:
        a = Allocator(arena_size=64 << 10, max_bytes=MAX_BYTES)
        allocators.append(a)
        cr = rtmp.ChunkReader(a, max_message=max_message)
        readers.append(cr)

        def step(r: Reader) -> Any:
            msg = cr.read_message(r)
            out = (msg.type, msg.stream_id, msg.timestamp, msg.csid, msg.body.to_bytes(),
                   cr.chunk_size)
            msg.body.recycle()
            return out

        return step

    return make


HANDSHAKE = b"\x03" + bytes(rtmp.HANDSHAKE_SIZE) + bytes(rtmp.HANDSHAKE_SIZE)


def session_step(allocators: list[Allocator], sessions: list[rtmp.ServerSession]) -> Callable[[], Step]:
    def make() -> Step:
        a = Allocator(arena_size=64 << 10, max_bytes=MAX_BYTES)
        allocators.append(a)
        s = rtmp.ServerSession(a)
        sessions.append(s)

        def step(r: Reader) -> Any:
            ev = s.next_event(r)
            # what is sent depends on arrival (acks follow bytes read per call): drain, don't compare
            for piece in s.data_to_send():
                assert len(memoryview(piece)) > 0
            if isinstance(ev, rtmp.Media):
                m = ev.message
                out: Any = ("media", m.type, m.timestamp, m.body.to_bytes())
                m.body.recycle()
            else:
                out = ev
            return out

        return step

    return make


def rtmp_check(segs: list[Any], inp: Input, session: bool) -> None:
    allocators: list[Allocator] = []
    if session:
        sessions: list[rtmp.ServerSession] = []
        make = session_step(allocators, sessions)
        both_ways([HANDSHAKE, *segs], inp, make, atomic=False)
        for s in sessions:
            s.close()
    else:
        readers: list[rtmp.ChunkReader] = []
        max_message = (1 << 16) if inp.bool() else 16 << 20
        both_ways(segs, inp, chunk_step(allocators, readers, max_message), atomic=False)
        for cr in readers:
            cr.close()
    for a in allocators:
        assert a.stats().in_use == 0, f"RTMP parsing leaked {a.stats().in_use} bytes"
        a.check()


# -- probe -------------------------------------------------------------------------


def probe_check(segs: list[Any]) -> None:
    whole = b"".join(bytes(s) for s in segs)
    reports = []
    for mem in (Memory(*segs), Memory(whole)):
        try:
            reports.append(format_text("input", probe_memory(mem)))
        except MalformedError as exc:
            reports.append(f"malformed: {exc}")
    assert reports[0] == reports[1], f"split changed the probe report: {reports!r}"


PARSERS = ("flv", "obu", "ivf", "amf0", "chunks", "session", "probe")


def one_input(data: bytes) -> None:
    """Pick a parser, cut the stream, check split invariance, atomicity and leaks."""
    inp = Input(data)
    which = PARSERS[inp.u8() % len(PARSERS)]
    stream = inp.take(inp.uint(2) % 8192)
    segs = segments(stream, inp, max_cuts=32)
    try:
        if which == "flv":
            both_ways(segs, inp, flv_step, atomic=True)
        elif which == "obu":
            both_ways(segs, inp, obu_step, atomic=True)
        elif which == "ivf":
            both_ways(segs, inp, ivf_step, atomic=True)
        elif which == "amf0":
            amf0_check(segs)
        elif which in ("chunks", "session"):
            rtmp_check(segs, inp, which == "session")
        else:
            probe_check(segs)
    except MemoryLimitError:
        pass                       # a hostile length met the allocator's cap: refused, fine


# -- seeds -------------------------------------------------------------------------


def _frame(which: str, stream: bytes, shape: int = 2) -> bytes:
    return bytes([PARSERS.index(which)]) + len(stream).to_bytes(2, "little") + stream + bytes(
        [shape, 9, 2, 77, 150, 3, 4, 1, 2, 3, 1, 2])


def flv_stream() -> bytes:
    def tag(kind: int, ts: int, body: bytes) -> bytes:
        head = bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        head += bytes([ts >> 24]) + bytes(3)
        return head + body + (len(body) + 11).to_bytes(4, "big")

    avc_config = bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"sps!" + b"\x01\x00\x02pp"
    frame = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x03\x65ab" + b"\x00\x00\x00\x02\x41c"
    aac = bytes([0xAF, 0, 0x12, 0x10])
    return (b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4) + tag(18, 0, amf0.encode("onMetaData", {"w": 1.0}))
            + tag(9, 0, avc_config) + tag(8, 0, aac) + tag(9, 40, frame)
            + tag(8, 23, bytes([0xAF, 1]) + b"aac") + tag(9, 0x1000000, bytes([0x27, 2, 0, 0, 0])))


def obu_stream() -> bytes:
    def obu(t: int, payload: bytes, ext: bool = False) -> bytes:
        h = bytes([(t << 3) | 2 | (4 if ext else 0)]) + (b"\x20" if ext else b"")
        return h + bytes([len(payload)]) + payload
    return (obu(2, b"") + obu(1, b"\x08\x00\x00") + obu(6, b"\x10frame") + obu(3, b"\x00hidden", True)
            + obu(2, b"") + obu(6, b"\x80show-existing") + obu(15, b"pad"))


def ivf_stream() -> bytes:
    head = b"DKIF" + bytes(2) + (32).to_bytes(2, "little") + b"AV01" + (64).to_bytes(2, "little")
    head += (48).to_bytes(2, "little") + (30).to_bytes(4, "little") + (1).to_bytes(4, "little")
    head += (2).to_bytes(4, "little") + bytes(4)
    obus = obu_stream()
    return (head + len(obus[:9]).to_bytes(4, "little") + (0).to_bytes(8, "little") + obus[:9]
            + len(obus[9:]).to_bytes(4, "little") + (1).to_bytes(8, "little") + obus[9:])


def rtmp_stream(chunk_size: int = 128) -> bytes:
    cmd = amf0.encode
    msgs = [
        rtmp.encode_chunks(rtmp.COMMAND_AMF0, cmd("connect", 1.0, {"app": "live", "tcUrl": "x"}), csid=3),
        rtmp.encode_chunks(rtmp.SET_CHUNK_SIZE, (4096).to_bytes(4, "big"), csid=2),
        rtmp.encode_chunks(rtmp.WINDOW_ACK_SIZE, (100).to_bytes(4, "big"), csid=2),
        rtmp.encode_chunks(rtmp.COMMAND_AMF0, cmd("createStream", 2.0, None), csid=3,
                           chunk_size=4096),
        rtmp.encode_chunks(rtmp.COMMAND_AMF0, cmd("publish", 0.0, None, "key", "live"), csid=4,
                           stream_id=1, chunk_size=4096),
        rtmp.encode_chunks(rtmp.VIDEO, bytes([0x17, 1, 0, 0, 0]) + b"v" * 300, csid=6,
                           stream_id=1, timestamp=0x1000000, chunk_size=4096),
        rtmp.encode_chunks(rtmp.AUDIO, b"\xaf\x01" + b"a" * 20, csid=7, stream_id=1,
                           chunk_size=4096),
        rtmp.encode_chunks(rtmp.COMMAND_AMF0, cmd("deleteStream", 3.0, None, 1.0), csid=3,
                           chunk_size=4096),
    ]
    return b"".join(m.to_bytes() for m in msgs)


def seeds() -> list[bytes]:
    """Valid streams of every format, whole and cut, and AMF0 values of every type."""
    amf = amf0.encode("s", 1.5, True, None, amf0.UNDEFINED, {"k": [1.0, {"n": None}]},
                      amf0.EcmaArray(a=1.0), amf0.Date(1e12, -60), "x" * 70000)
    amf = amf[:8000]
    out = []
    for shape in (0, 1, 2, 3):
        out += [_frame("flv", flv_stream(), shape), _frame("probe", flv_stream(), shape),
                _frame("obu", obu_stream(), shape), _frame("probe", obu_stream(), shape),
                _frame("ivf", ivf_stream(), shape), _frame("probe", ivf_stream(), shape),
                _frame("amf0", amf0.encode("s", 1.5, True, None, {"k": [1.0, {"n": None}]},
                                            amf0.EcmaArray(a=1.0), amf0.Date(1e12, -60)), shape),
                _frame("chunks", rtmp_stream(), shape), _frame("session", rtmp_stream(), shape)]
    out.append(_frame("amf0", amf))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
