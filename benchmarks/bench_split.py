"""Frame splitting: membuf codecs against what a user would write, same data, same run.

    .venv/bin/python benchmarks/bench_split.py [--mib 6] [--rounds 9] [--quick]

A seeded stream of LEB128-prefixed frames of 16..300 bytes, delivered in
64 KiB chunks, is split by:

* ``plain loop``: bytearray += chunk, manual varint, ``bytes()`` slice,
  ``del buf[:pos]`` (the loop a user would write);
* ``membuf split_views``: ``Memory.push`` + ``LengthPrefixed.split_views`` +
  ``Reader.clip_front``, one memoryview per frame;
* ``membuf split``: the same with ``split``, one Memory per frame;
* ``asyncio readexactly``: ``StreamReader.feed_data`` per chunk, a varint read
  with ``readexactly(1)`` per byte, then ``readexactly(n)``;
* ``anyio receive_exactly``: ``BufferedByteReceiveStream`` over a memory object
  stream holding the chunks, the same reads.

Every case runs once per round, in rotating order, with the garbage collector
paused; the figure is the median over rounds, in ns per frame. Each case's
output is checked first (frame count and byte total); the timed runs only
collect the frames of each chunk in a list and count them (asyncio and anyio
count as they read).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable

import _common

from membuf import Memory
from membuf.codecs import LengthPrefixed


def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median CPU seconds per case over ``rounds`` rotating rounds (the suite's harness)."""
    return {name: fig.median for name, fig in _common.interleaved(cases, rounds, warmup=0).items()}


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_stream(mib: float, seed: int = 1234, chunk: int = 64 << 10) -> tuple[list[bytes], int, int]:
    rng = random.Random(seed)
    parts, total, frames, body = [], 0, 0, 0
    while total < mib * (1 << 20):
        n = rng.randint(16, 300)
        frame = uleb(n) + rng.randbytes(n)
        parts.append(frame)
        total += len(frame)
        frames += 1
        body += n
    data = b"".join(parts)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)], frames, body


# -- the cases: each returns (frames, body bytes) -------------------------------------------


def plain_loop(chunks: list[bytes], check: bool = False) -> tuple[int, int]:
    buf = bytearray()
    count = total = 0
    for chunk in chunks:
        buf += chunk
        pos, end = 0, len(buf)
        out = []
        while True:
            p, shift, length = pos, 0, 0
            while p < end:
                b = buf[p]
                p += 1
                length |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            else:
                break
            if p + length > end:
                break
            out.append(bytes(buf[p : p + length]))
            pos = p + length
        del buf[:pos]
        count += len(out)
        if check:
            total += sum(map(len, out))
    return count, total


def membuf_case(views: bool) -> Callable[..., tuple[int, int]]:
    def run(chunks: list[bytes], check: bool = False) -> tuple[int, int]:
        codec = LengthPrefixed("leb128", max_frame=1 << 16)
        split = codec.split_views if views else codec.split
        m = Memory()
        r = m.reader()
        count = total = 0
        for chunk in chunks:
            m.push(chunk)
            out = split(r)
            r.clip_front()
            count += len(out)
            if check:
                total += sum(map(len, out))
        return count, total

    return run


async def _read_frames_asyncio(sr: asyncio.StreamReader) -> tuple[int, int]:
    count = total = 0
    readexactly = sr.readexactly
    while True:
        try:
            b = (await readexactly(1))[0]
        except asyncio.IncompleteReadError:
            return count, total
        length, shift = b & 0x7F, 7
        while b & 0x80:
            b = (await readexactly(1))[0]
            length |= (b & 0x7F) << shift
            shift += 7
        frame = await readexactly(length)
        count += 1
        total += len(frame)


def asyncio_case(chunks: list[bytes], check: bool = False) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        sr = asyncio.StreamReader(limit=1 << 20)
        task = asyncio.ensure_future(_read_frames_asyncio(sr))
        for chunk in chunks:
            sr.feed_data(chunk)
            await asyncio.sleep(0)
        sr.feed_eof()
        return await task

    return asyncio.run(main())


def anyio_case(chunks: list[bytes], check: bool = False) -> tuple[int, int]:
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    async def main() -> tuple[int, int]:
        send, recv = anyio.create_memory_object_stream[bytes](len(chunks) + 1)
        for chunk in chunks:
            send.send_nowait(chunk)
        send.close()
        rx = BufferedByteReceiveStream(recv)
        receive_exactly = rx.receive_exactly
        count = total = 0
        while True:
            try:
                b = (await receive_exactly(1))[0]
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return count, total
            length, shift = b & 0x7F, 7
            while b & 0x80:
                b = (await receive_exactly(1))[0]
                length |= (b & 0x7F) << shift
                shift += 7
            frame = await receive_exactly(length)
            count += 1
            total += len(frame)

    return anyio.run(main)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="1 MiB, 3 rounds (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.mib, args.rounds = 1.0, 3
    chunks, frames, body = make_stream(args.mib)
    cases: dict[str, Callable[..., tuple[int, int]]] = {
        "plain loop": plain_loop,
        "membuf split_views": membuf_case(True),
        "membuf split": membuf_case(False),
        "asyncio readexactly": asyncio_case,
    }
    try:
        import anyio  # noqa: F401

        cases["anyio receive_exactly"] = anyio_case
    except ImportError:
        print("(anyio not installed: skipped)")
    for name, fn in cases.items():
        got = fn(chunks, True)
        assert got == (frames, body), (name, got, (frames, body))
    medians = interleaved({name: (lambda f=fn: f(chunks)) for name, fn in cases.items()}, args.rounds)
    base = medians["plain loop"]
    print(f"{frames} LEB128 frames of 16..300 B, {sum(map(len, chunks)) / (1 << 20):.1f} MiB "
          f"in {len(chunks)} chunks of 64 KiB; median of {args.rounds} interleaved rounds")
    print(f"{'case':<24}{'ns/frame':>10}{'vs plain loop':>16}")
    for name, sec in medians.items():
        print(f"{name:<24}{sec / frames * 1e9:>10.1f}{base / sec:>15.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
