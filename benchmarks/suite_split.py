"""Suite part: frame splitting in memory (no I/O), the CRLF delimiter workload, reader calls.

Frame splitting: one seeded stream per (prefix, frame size) is cut into 64 KiB
chunks and fed to every contender; each returns the checksum ``(frames,
payload bytes, sum of first payload bytes)``, checked against the generator's.

* ``plain loop``: ``bytearray += chunk``, a hand-written prefix parse
  (varint loop for LEB128, ``struct.unpack_from('>I')`` for be32), one
  ``bytes`` slice per frame, ``del buf[:pos]`` (the form of
  ``bench_stream.parse_bytearray`` and ``bench_split.plain_loop``);
* ``plain loop, memoryview slices``: the zero-copy pure-Python form: ``tail +
  chunk`` as one ``bytes``, frames as memoryview slices of it, the unparsed
  tail carried over;
* ``membuf split_views``: ``Memory.push`` + ``LengthPrefixed.split_views`` +
  ``Reader.clip_front``; the batch checksummed with ``len``/``sum(map(...))``;
* ``membuf split_views, per-frame loop``: the same batches, a Python loop per frame;
* ``membuf split``: one ``Memory`` per frame;
* ``asyncio readexactly``: ``StreamReader.feed_data`` per chunk, the prefix read
  with ``readexactly`` (1 byte at a time for LEB128, 4 for be32), then the body;
* ``anyio receive_exactly``: ``BufferedByteReceiveStream`` over a memory
  object stream holding the chunks, the same reads.

CRLF lines (16..300 printable bytes): a ``bytearray.find`` loop, ``bytes.split``
with the tail carried over (batch-checksummed, like membuf's batch), asyncio
``readuntil``, anyio ``receive_until``, membuf ``Delimited.split_views``.

Reader calls: ``bench_reader``'s cases (``read_be(4)`` vs ``struct``,
``read_leb128`` vs a plain varint loop and PyPI ``leb128``) plus
``int.from_bytes`` on a memoryview slice; every form's decoded values are
checked against the generator's first.
"""

from __future__ import annotations

import asyncio
import io
import operator
import random
import struct
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from _common import (
    CheckError,
    Checksum,
    Detail,
    Figure,
    Mode,
    Part,
    Progress,
    Row,
    chunked,
    fmt,
    frame_stream,
    interleaved,
    verify,
)

from membuf import Memory, Reader
from membuf.codecs import Delimited, LengthPrefixed

_first = operator.itemgetter(0)
_be32 = struct.Struct(">I").unpack_from
Case = Callable[[list[bytes]], Checksum]


# -- plain-Python loops -------------------------------------------------------------------------


def plain_leb128(chunks: list[bytes]) -> Checksum:
    buf = bytearray()
    frames = payload = first = 0
    for chunk in chunks:
        buf += chunk
        pos, end = 0, len(buf)
        while pos < end:
            b = buf[pos]
            p = pos + 1
            n = b & 0x7F
            shift = 7
            while b & 0x80:
                if p >= end:
                    break
                b = buf[p]
                p += 1
                n |= (b & 0x7F) << shift
                shift += 7
            else:
                if p + n <= end:
                    frame = bytes(buf[p : p + n])
                    frames += 1
                    payload += len(frame)
                    first += frame[0]
                    pos = p + n
                    continue
            break
        del buf[:pos]
    if buf:
        raise CheckError(f"plain loop: {len(buf)} bytes left over")
    return frames, payload, first


def plain_be32(chunks: list[bytes]) -> Checksum:
    buf = bytearray()
    frames = payload = first = 0
    unpack = _be32
    for chunk in chunks:
        buf += chunk
        pos, end = 0, len(buf)
        while pos + 4 <= end:
            n = unpack(buf, pos)[0]
            if pos + 4 + n > end:
                break
            frame = bytes(buf[pos + 4 : pos + 4 + n])
            frames += 1
            payload += len(frame)
            first += frame[0]
            pos += 4 + n
        del buf[:pos]
    if buf:
        raise CheckError(f"plain loop: {len(buf)} bytes left over")
    return frames, payload, first


def plain_views(kind: str) -> Case:
    """The zero-copy plain-Python form: ``tail + chunk`` as bytes, frames as memoryview slices."""

    def run(chunks: list[bytes]) -> Checksum:
        tail = b""
        frames = payload = first = 0
        unpack = _be32
        for chunk in chunks:
            data = tail + chunk if tail else chunk
            mv = memoryview(data)
            pos, end = 0, len(data)
            while pos < end:
                if kind == "be32":
                    if pos + 4 > end:
                        break
                    n = unpack(data, pos)[0]
                    p = pos + 4
                else:
                    b = data[pos]
                    p = pos + 1
                    n = b & 0x7F
                    shift = 7
                    while b & 0x80:
                        if p >= end:
                            break
                        b = data[p]
                        p += 1
                        n |= (b & 0x7F) << shift
                        shift += 7
                    if b & 0x80:                     # the prefix itself is incomplete
                        break
                if p + n > end:
                    break
                frame = mv[p : p + n]
                frames += 1
                payload += len(frame)
                first += frame[0]
                pos = p + n
            tail = data[pos:]
        if tail:
            raise CheckError(f"plain views: {len(tail)} bytes left over")
        return frames, payload, first

    return run


def plain_crlf_find(chunks: list[bytes]) -> Checksum:
    buf = bytearray()
    frames = payload = first = 0
    for chunk in chunks:
        buf += chunk
        pos = 0
        find = buf.find
        while (i := find(b"\r\n", pos)) >= 0:
            line = bytes(buf[pos:i])
            frames += 1
            payload += len(line)
            first += line[0]
            pos = i + 2
        del buf[:pos]
    if buf:
        raise CheckError(f"find loop: {len(buf)} bytes left over")
    return frames, payload, first


def plain_crlf_split(chunks: list[bytes]) -> Checksum:
    rest = b""
    frames = payload = first = 0
    for chunk in chunks:
        lines = (rest + chunk).split(b"\r\n")
        rest = lines.pop()
        frames += len(lines)
        payload += sum(map(len, lines))
        first += sum(map(_first, lines))
    if rest:
        raise CheckError(f"bytes.split: {len(rest)} bytes left over")
    return frames, payload, first


# -- membuf ---------------------------------------------------------------------------------------


def membuf_views(codec_factory: Callable[[], Any], loop: bool = False) -> Case:
    def run(chunks: list[bytes]) -> Checksum:
        codec = codec_factory()
        split = codec.split_views
        m = Memory()
        r = m.reader()
        clip = r.clip_front
        frames = payload = first = 0
        for chunk in chunks:
            m.push(chunk)
            out = split(r)
            clip()
            if loop:
                for v in out:
                    frames += 1
                    payload += len(v)
                    first += v[0]
            else:
                frames += len(out)
                payload += sum(map(len, out))
                first += sum(map(_first, out))
        if len(r):
            raise CheckError(f"membuf: {len(r)} bytes left over")
        return frames, payload, first

    return run


def membuf_memory(codec_factory: Callable[[], Any]) -> Case:
    def run(chunks: list[bytes]) -> Checksum:
        split = codec_factory().split
        m = Memory()
        r = m.reader()
        frames = payload = first = 0
        for chunk in chunks:
            m.push(chunk)
            out = split(r)
            r.clip_front()
            frames += len(out)
            for f in out:
                payload += len(f)
                for seg in f:
                    first += seg[0]
                    break
        if len(r):
            raise CheckError(f"membuf: {len(r)} bytes left over")
        return frames, payload, first

    return run


# -- asyncio / anyio (in memory) -------------------------------------------------------------------


async def _frames_asyncio(sr: asyncio.StreamReader, kind: str) -> Checksum:
    frames = payload = first = 0
    readexactly, readuntil = sr.readexactly, sr.readuntil
    while True:
        try:
            if kind == "crlf":
                line = await readuntil(b"\r\n")
                frames += 1
                payload += len(line) - 2
                first += line[0]
                continue
            if kind == "be32":
                n = int.from_bytes(await readexactly(4), "big")
            else:
                b = (await readexactly(1))[0]
                n, shift = b & 0x7F, 7
                while b & 0x80:
                    b = (await readexactly(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise CheckError("asyncio: stream ended inside a frame") from exc
            return frames, payload, first
        frame = await readexactly(n)
        frames += 1
        payload += len(frame)
        first += frame[0]


def asyncio_case(kind: str) -> Case:
    def run(chunks: list[bytes]) -> Checksum:
        async def main() -> Checksum:
            sr = asyncio.StreamReader(limit=1 << 20)
            task = asyncio.ensure_future(_frames_asyncio(sr, kind))
            for chunk in chunks:
                sr.feed_data(chunk)
                await asyncio.sleep(0)
            sr.feed_eof()
            return await task

        return asyncio.run(main())

    return run


def anyio_case(kind: str) -> Case:
    def run(chunks: list[bytes]) -> Checksum:
        import anyio
        from anyio.streams.buffered import BufferedByteReceiveStream

        async def main() -> Checksum:
            send, recv = anyio.create_memory_object_stream[bytes](len(chunks) + 1)
            for chunk in chunks:
                send.send_nowait(chunk)
            send.close()
            rx = BufferedByteReceiveStream(recv)
            receive_exactly, receive_until = rx.receive_exactly, rx.receive_until
            frames = payload = first = 0
            while True:
                try:
                    if kind == "crlf":
                        line = await receive_until(b"\r\n", 1 << 16)
                        frames += 1
                        payload += len(line)
                        first += line[0]
                        continue
                    if kind == "be32":
                        n = int.from_bytes(await receive_exactly(4), "big")
                    else:
                        b = (await receive_exactly(1))[0]
                        n, shift = b & 0x7F, 7
                        while b & 0x80:
                            b = (await receive_exactly(1))[0]
                            n |= (b & 0x7F) << shift
                            shift += 7
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    if rx.buffer:
                        raise CheckError("anyio: stream ended inside a frame") from None
                    return frames, payload, first
                frame = await receive_exactly(n)
                frames += 1
                payload += len(frame)
                first += frame[0]

        return anyio.run(main)

    return run


def have_anyio() -> bool:
    try:
        import anyio  # noqa: F401
    except ImportError:
        return False
    return True


MEMBUF_MAIN = "membuf split_views"
PLAIN = "plain loop"


def split_cases(kind: str) -> dict[str, Case]:
    if kind == "crlf":
        def lines() -> Any:
            return Delimited(b"\r\n", max_frame=1 << 16)
        cases: dict[str, Case] = {
            MEMBUF_MAIN: membuf_views(lines),
            "plain loop (bytearray.find)": plain_crlf_find,
            "bytes.split, tail carried": plain_crlf_split,
            "asyncio readuntil": asyncio_case(kind),
        }
        if have_anyio():
            cases["anyio receive_until"] = anyio_case(kind)
        return cases

    def codec() -> Any:
        return LengthPrefixed(kind, max_frame=1 << 20)
    cases = {
        MEMBUF_MAIN: membuf_views(codec),
        "membuf split_views, per-frame loop": membuf_views(codec, loop=True),
        "membuf split (Memory per frame)": membuf_memory(codec),
        PLAIN: plain_leb128 if kind == "leb128" else plain_be32,
        "plain loop, memoryview slices": plain_views(kind),
        "asyncio readexactly": asyncio_case(kind),
    }
    if have_anyio():
        cases["anyio receive_exactly"] = anyio_case(kind)
    return cases


def is_membuf(name: str) -> bool:
    return name.startswith("membuf")


def size_label(spec: str) -> str:
    if "-" in spec:
        return f"{spec.replace('-', '..')} B"
    n = int(spec)
    return f"{n} B" if n < 1024 else f"{n >> 10} KiB"


def stream_for(kind: str, spec: str, mode: Mode) -> tuple[bytes, Checksum]:
    budget, lo, hi = mode.pick((160 << 10, 4, 2_000), (2 << 20, 32, 12_000), (16 << 20, 256, 100_000))
    mean = (sum(int(x) for x in spec.split("-")) / 2) if "-" in spec else int(spec)
    frames = int(min(max(budget / (mean + 4), lo), hi))
    return frame_stream(kind, spec, int(frames * (mean + 4)), seed=7, min_frames=frames)


def _rate(count: float, seconds: float) -> float:
    return count / seconds / 1e6


def run_matrix(kind: str, specs: list[str], mode: Mode, prog: Progress,
               rounds: int) -> dict[str, dict[str, tuple[Figure, Figure]]]:
    """``{size spec: {contender: (MB/s figure, M frames/s figure)}}``."""
    out: dict[str, dict[str, tuple[Figure, Figure]]] = {}
    for spec in specs:
        prog.step(f"split {kind} {size_label(spec)}")
        data, want = stream_for(kind, spec, mode)
        chunks = chunked(data)
        cases = split_cases(kind)
        for name, fn in cases.items():          # every contender's output, checked before timing
            verify(f"{kind} {spec} {name}", fn(chunks), want)
        timed: dict[str, Callable[[], object]] = {n: partial(f, chunks) for n, f in cases.items()}
        figs = interleaved(timed, rounds, warmup=0 if mode.check else 1)
        nframes, nbytes = want[0], want[1]
        out[spec] = {n: (f.scaled(partial(_rate, nbytes)), f.scaled(partial(_rate, nframes)))
                     for n, f in figs.items()}
        prog.advance()
    return out


def best_baseline(res: dict[str, tuple[Figure, Figure]], idx: int) -> str:
    base = {n: v[idx].median for n, v in res.items() if not is_membuf(n)}
    return max(base, key=lambda n: base[n])


def split_part(mode: Mode, prog: Progress) -> Part:
    part = Part("frame split")
    rounds = mode.pick(1, 3, 9)
    specs = mode.pick(["16-300", "16", "65536"], ["16-300", "16", "256", "4096", "65536"],
                      ["16-300", "16", "64", "256", "1024", "4096", "16384", "65536"])
    matrix: dict[str, Any] = {}
    for kind in ("leb128", "be32"):
        res = run_matrix(kind, specs, mode, prog, rounds)
        matrix[kind] = {spec: {n: v[0].median for n, v in r.items()} for spec, r in res.items()}
        head = ["frame size"] + list(next(iter(res.values())))
        rows = []
        for spec, r in res.items():
            rows.append([size_label(spec)] + [f"{fmt(v[1].median)} M/s, {fmt(v[0].median)} MB/s"
                                              for v in r.values()])
        part.details.append(Detail(
            f"Frame split in memory, {kind} prefix: M frames/s and payload MB/s, median of "
            f"{rounds} interleaved rounds (CPU time)", head, rows))
        for spec in specs:
            if kind == "be32" and spec not in ("16-300", "65536"):
                continue
            if kind == "leb128" and spec not in ("16-300", "16", "65536"):
                continue
            r = res[spec]
            m = r[MEMBUF_MAIN][1]
            targets = [PLAIN] if spec == "16-300" else []
            best = best_baseline(r, 1)
            for base in dict.fromkeys(targets + [best]):
                b = r[base][1]
                tgt = base == PLAIN and spec == "16-300" and kind == "leb128"
                part.rows.append(Row(
                    "frame split", f"{kind} {size_label(spec)}", "M frames/s",
                    f"{MEMBUF_MAIN} (batch sums)", m.median, m.lo, m.hi, base, b.median, b.lo,
                    b.hi, target=3.0 if tgt else None,
                    note="best baseline" if base == best else ""))
    part.data["split"] = matrix
    part.data["split_specs"] = specs
    return part


def crlf_part(mode: Mode, prog: Progress) -> Part:
    part = Part("CRLF lines")
    rounds = mode.pick(1, 3, 9)
    res = run_matrix("crlf", ["16-300"], mode, prog, rounds)["16-300"]
    part.details.append(Detail(
        f"CRLF lines of 16..300 B in memory, median of {rounds} rounds", ["contender",
                                                                          "M lines/s", "min..max",
                                                                          "MB/s"],
        [[n, fmt(v[1].median), f"{fmt(v[1].lo)}..{fmt(v[1].hi)}", fmt(v[0].median)]
         for n, v in res.items()]))
    m = res[MEMBUF_MAIN][1]
    for base in dict.fromkeys([best_baseline(res, 1), "plain loop (bytearray.find)"]):
        b = res[base][1]
        part.rows.append(Row("delimiter", "CRLF lines 16..300 B", "M lines/s",
                             "membuf Delimited.split_views (batch sums)", m.median, m.lo, m.hi,
                             base, b.median, b.lo, b.hi))
    return part


# -- reader calls --------------------------------------------------------------------------------


def check_reader_forms(n: int = 2000) -> None:
    """Every form used in the reader timings decodes the generator's values."""
    rng = random.Random(3)
    vals = [rng.getrandbits(32) for _ in range(n)]
    blob = b"".join(v.to_bytes(4, "big") for v in vals)
    r = Reader.from_bytes(*(blob[i : i + 4096] for i in range(0, len(blob), 4096)))
    mv = memoryview(blob)
    got = {
        "Reader.read_be(4)": [r.read_be(4) for _ in vals],
        "struct.unpack_from": [_be32(blob, 4 * i)[0] for i in range(n)],
        "int.from_bytes": [int.from_bytes(mv[4 * i : 4 * i + 4], "big") for i in range(n)],
    }
    lvals = [rng.getrandbits(rng.choice((7, 14, 21, 28))) for _ in range(n)]
    from _common import uleb

    lblob = b"".join(uleb(v) for v in lvals)
    rl = Reader.from_bytes(lblob)
    got["Reader.read_leb128()"] = [rl.read_leb128() for _ in lvals]
    try:
        import leb128

        bio = io.BytesIO(lblob)
        got["leb128.u.decode_reader"] = [leb128.u.decode_reader(bio)[0] for _ in lvals]
    except ImportError:
        pass
    for name, values in got.items():
        want = lvals if "leb" in name else vals
        verify(f"reader {name}", (len(values), sum(values), values[-1]),
               (len(want), sum(want), want[-1]))


def reader_part(mode: Mode, prog: Progress) -> Part:
    import bench_reader

    part = Part("reader calls")
    prog.step("reader calls: forms checked, read_be / read_leb128 timed")
    check_reader_forms()
    n = mode.pick(2_000, 30_000, 200_000)
    rounds = mode.pick(1, 3, 9)
    fixed = bench_reader.fixed_cases(n)
    blob = bytes(range(256)) * (4 * n // 256 + 1)
    mv = memoryview(blob)

    def from_bytes_loop() -> object:
        fb = int.from_bytes
        off = 0
        for _ in range(n):
            fb(mv[off : off + 4], "big")
            off += 4
        return off

    fixed["int.from_bytes(mv[i:i+4], 'big')"] = from_bytes_loop
    fixed.pop("(empty loop)", None)
    ff = interleaved(fixed, rounds)
    prog.advance()
    leb = bench_reader.leb_cases(n)
    lf = interleaved(leb, rounds)
    prog.advance()
    per = {k: v.scaled(lambda s: s / n * 1e9) for k, v in {**ff, **lf}.items()}
    part.details.append(Detail(
        f"Reader calls, ns per read, {n} reads per round, median of {rounds} rounds "
        "(bench_reader.py's cases + int.from_bytes)", ["form", "ns/read", "min..max"],
        [[k, fmt(v.median), f"{fmt(v.lo)}..{fmt(v.hi)}"] for k, v in per.items()]))
    for mine, bases in (
        ("Reader.read_be(4), 4 KiB segments",
         ["struct.Struct('>I').unpack_from", "int.from_bytes(mv[i:i+4], 'big')"]),
        ("Reader.read_leb128()",
         ["plain-Python varint loop", "leb128.u.decode_reader(BytesIO)"]),
    ):
        m = per[mine]
        for base in bases:
            if base not in per:
                part.notes.append(f"{base}: not installed, not compared")
                continue
            b = per[base]
            part.rows.append(Row("reader calls", mine.split(",")[0], "ns/read", mine, m.median,
                                 m.lo, m.hi, base, b.median, b.lo, b.hi,
                                 higher_is_better=False))
    return part


def steps(mode: Mode) -> int:
    return 2 * len(mode.pick([0] * 3, [0] * 5, [0] * 8)) + 1 + 2


def measure(mode: Mode, prog: Progress) -> list[Part]:
    return [split_part(mode, prog), crlf_part(mode, prog), reader_part(mode, prog)]


if __name__ == "__main__":
    m = Mode(quick="--quick" in sys.argv, check="--check" in sys.argv)
    with Progress(steps(m)) as p:
        parts = measure(m, p)
    for part in parts:
        for d in part.details:
            print(d.title)
            for cells in d.rows:
                print("   ", cells)
        for r in part.rows:
            print(r.group, r.workload, r.membuf, fmt(r.value), r.unit, r.baseline,
                  fmt(r.base_value), f"{r.ratio:.2f}" if r.ratio else "-", r.status)
