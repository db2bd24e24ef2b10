"""Fuzz harness: every codec (LengthPrefixed leb128/be16/be24/be32, Delimited), streamed.

Strategy. The input picks a codec and its ``max_frame``, a byte stream and a
segmentation of it. The segments are pushed into a Memory a few at a time
(a growing receive buffer), and after each push ``split`` or ``split_views``
(with or without an allocator for joined frames) is called until it returns
nothing. A plain-Python reference framer over the joined stream says which
frames exist, where an incomplete frame starts and whether (and where) the
stream is malformed. The oracles:

* the frames returned, in order, are exactly the reference frames: none lost,
  duplicated or altered, however the stream was cut and fed;
* ``MalformedError`` is raised exactly when the reference finds a malformed
  frame, only after every frame before it was returned, with the Reader left
  at that frame's first byte; raising again changes nothing;
* a partial frame is left unread (``len(reader)`` is what follows the last
  complete frame);
* joined frames malloc'd from an allocator are the only bytes it holds, and
  freeing them leaves it empty.

Run: ``python fuzz/fuzz_codecs.py -max_total_time=60`` or ``--random 60``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_reader import leb128  # noqa: E402
from fuzzlib import Input, main, segments  # noqa: E402

from membuf import Allocator, MalformedError, Memory, NeedMore, Reader  # noqa: E402
from membuf.codecs import Delimited, Framer, LengthPrefixed  # noqa: E402

PREFIXES = ("leb128", "be16", "be24", "be32")
WIDTH = {"be16": 2, "be24": 3, "be32": 4}
MAX_FRAMES = (0, 1, 3, 16, 100, 1000, 65535, 1 << 20)


def reference(data: bytes, codec: Framer) -> tuple[list[bytes], int, bool]:
    """Frames of ``data``; where parsing stopped; whether it stopped on a malformed frame."""
    frames: list[bytes] = []
    pos = 0
    while True:
        rest = data[pos:]
        if isinstance(codec, LengthPrefixed):
            if codec.prefix == "leb128":
                got = leb128(rest, False)
                if got is MalformedError:
                    return frames, pos, True
                if got is NeedMore:
                    return frames, pos, False
                n, plen = got  # type: ignore[misc]
            else:
                plen = WIDTH[codec.prefix]
                if len(rest) < plen:
                    return frames, pos, False
                n = int.from_bytes(rest[:plen], "big")
            if n > codec.max_frame:
                return frames, pos, True
            if len(rest) < plen + n:
                return frames, pos, False
            frames.append(rest[plen : plen + n])
            pos += plen + n
        else:
            assert isinstance(codec, Delimited)
            d = codec.delim
            window = codec.max_frame + len(d)
            j = rest[:window].find(d)
            if j < 0:
                return frames, pos, len(rest) >= window
            frames.append(rest[:j])
            pos += j + len(d)


def make_codec(inp: Input) -> Framer:
    kind = inp.u8() % 6
    max_frame = MAX_FRAMES[inp.u8() % len(MAX_FRAMES)]
    if kind < 4:
        return LengthPrefixed(PREFIXES[kind], max_frame=max_frame)
    delim = inp.take(1 + inp.u8() % 3) or b"\n"
    if kind == 5:
        delim = b"\r\n"[: len(delim)] if len(delim) <= 2 else delim
    return Delimited(delim, max_frame=max_frame)


def one_input(data: bytes) -> None:
    """Stream the input's bytes through the input's codec and check every frame."""
    inp = Input(data)
    codec = make_codec(inp)
    mode = inp.u8() % 3                      # split / split_views / split_views+allocator
    stream = inp.take(inp.uint(2) % 1536)      # small: one-byte segments rescan frames
    segs = segments(stream, inp, max_cuts=32)
    want, stop, malformed = reference(stream, codec)
    allocator = Allocator(arena_size=4096) if mode == 2 else None

    mem = Memory()
    r = Reader(mem)
    got: list[bytes] = []
    raised = False
    i = 0
    while i < len(segs) and not raised:
        for seg in segs[i : i + 1 + inp.u8() % 4]:
            mem.push(seg)
            i += 1
        while True:
            before = (len(r), r.offset)
            try:
                if mode == 0:
                    frames = [f.to_bytes() for f in codec.split(r)]
                else:
                    views = codec.split_views(r, allocator)
                    frames = [bytes(v) for v in views]
                    if allocator is not None:
                        for v in views:
                            if allocator.owns(v):
                                allocator.free(v)
            except MalformedError as exc:
                assert (len(r), r.offset) == before, "MalformedError moved the reader"
                assert str(exc)
                raised = True
                break
            got += frames
            if not frames:
                break
    assert got == want[: len(got)], f"{codec!r}: frames differ from the reference"
    if raised:
        assert malformed, f"{codec!r}: MalformedError on a well-formed stream"
        assert got == want and r.offset == stop, f"{codec!r}: raised at {r.offset}, not {stop}"
        try:                                   # the error is sticky and changes nothing
            codec.split(r)
        except MalformedError:
            assert r.offset == stop
        else:
            raise AssertionError(f"{codec!r}: the second split did not raise again")
    else:
        assert got == want, f"{codec!r}: {len(got)} frames, the reference has {len(want)}"
        assert not malformed, f"{codec!r}: missed a malformed frame at byte {stop}"
        assert r.offset == stop and len(r) == len(stream) - stop, (r.offset, stop)
    if allocator is not None:
        assert allocator.stats().in_use == 0, "joined frames were not all freed"
        allocator.check()


def encode_leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def seeds() -> list[bytes]:
    """Well-formed streams for each codec, cut a few ways, plus malformed tails."""
    out = []
    bodies = [b"", b"a", b"hello", bytes(range(200)), b"x" * 60]
    for kind in range(6):
        for shape in (0, 1, 2, 5):
            if kind < 4:
                p = PREFIXES[kind]
                stream = b"".join(
                    (encode_leb(len(b)) if p == "leb128" else len(b).to_bytes(WIDTH[p], "big")) + b
                    for b in bodies)
                head = bytes([kind, 5])
            else:
                stream = b"".join(b.replace(b"\r", b"") + b"\r\n" for b in bodies)
                head = bytes([kind, 5, 1]) + b"\r\n"
            for tail in (b"", b"\xff" * 11, b"\x05ab"):
                s = stream + tail
                out.append(head + bytes([kind % 3]) + len(s).to_bytes(2, "little") + s
                           + bytes([shape, 7, 3, 40, 90, 200, 250, 251, 1, 2, 3]))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
