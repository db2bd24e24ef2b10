"""Loopback stream benchmark: membuf's StreamReader against the usual Python receivers.

One TCP connection over loopback per run. A separate sender process
(``benchmarks/sender.py``) writes a seeded stream of LEB128-framed messages as
fast as it can; the receiver parses every frame and returns a checksum
``(frames, payload bytes, sum of first payload bytes)`` that must equal the
one computed from the generator, or the run fails. Contenders run round-robin
(every contender once per round, ``--rounds`` rounds) so background load hits
them alike; the table shows the median and the spread.

Workloads: ``big`` = 64 KiB frames, ``small`` = 16..300 B frames.

    .venv/bin/python benchmarks/bench_stream.py                # both workloads
    .venv/bin/python benchmarks/bench_stream.py --workload small --rounds 7

Contenders (same stream, same per-frame work):
  raw recv_into      trio ``sock.recv_into`` into one reused buffer, no parsing: the limit
  membuf views       ``rx.frames(codec, views=True, batch=True)``
  membuf Memory      ``rx.frames(codec)`` (one Memory per frame)
  membuf read_exactly ``await rx.read_leb128()`` + ``await rx.read_exactly(n)`` per frame
  trio bytearray     trio ``receive_some`` + bytearray accumulate + parse + slice per frame
  asyncio readexactly asyncio ``StreamReader.readexactly`` per prefix byte and payload
  anyio exactly      anyio ``BufferedByteReceiveStream.receive_exactly`` (asyncio backend)
  anyio receive      anyio ``receive()`` + own bytearray parsing (asyncio backend)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import trio
from anyio.streams.buffered import BufferedByteReceiveStream

import membuf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sender import expected  # noqa: E402

Checksum = tuple[int, int, int]
MAX_FRAME = 1 << 20
BASELINES = ("trio bytearray", "asyncio readexactly", "anyio exactly", "anyio receive")


def start_sender(port: int, workload: str, total: int, seed: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(HERE / "sender.py"), "--port", str(port),
           "--workload", workload, "--bytes", str(total), "--seed", str(seed)]
    return subprocess.Popen(cmd)


# -- plain-Python frame parsing shared by the bytearray baselines ---------------------


def parse_bytearray(buf: bytearray, acc: list[int]) -> int:
    """Parse every complete LEB128 frame in ``buf``; return bytes consumed.

    Each frame is sliced out (one copy, the idiomatic bytearray way) and fed
    to the checksum exactly like every other contender.
    """
    pos = 0
    end = len(buf)
    frames, payload, first = acc
    while pos < end:
        b = buf[pos]
        p = pos + 1
        if b < 0x80:
            n = b
        else:
            n = b & 0x7F
            shift = 7
            while True:
                if p >= end:
                    acc[:] = frames, payload, first
                    return pos
                b = buf[p]
                p += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
        if p + n > end:
            break
        frame = buf[p : p + n]
        frames += 1
        payload += len(frame)
        first += frame[0]
        pos = p + n
    acc[:] = frames, payload, first
    return pos


# -- trio contenders ----------------------------------------------------------------


async def trio_raw(stream: trio.SocketStream) -> Any:
    sock = stream.socket
    buf = bytearray(256 << 10)
    total = 0
    while True:
        n = await sock.recv_into(buf)
        if not n:
            return ("bytes", total)
        total += n


async def trio_raw64(stream: trio.SocketStream) -> Any:
    sock = stream.socket
    buf = bytearray(64 << 10)
    total = 0
    while True:
        n = await sock.recv_into(buf)
        if not n:
            return ("bytes", total)
        total += n


async def trio_bytearray(stream: trio.SocketStream) -> Checksum:
    buf = bytearray()
    acc = [0, 0, 0]
    while True:
        data = await stream.receive_some()
        if not data:
            break
        buf += data
        used = parse_bytearray(buf, acc)
        del buf[:used]
    assert not buf, f"{len(buf)} bytes left over"
    return acc[0], acc[1], acc[2]


async def membuf_views(stream: trio.SocketStream) -> Checksum:
    frames = payload = first = 0
    from membuf.codecs import LengthPrefixed

    codec = LengthPrefixed("leb128", max_frame=MAX_FRAME)
    async with membuf.StreamReader(stream) as rx:
        async for batch in rx.frames(codec, views=True, batch=True):
            for v in batch:
                frames += 1
                payload += len(v)
                first += v[0]
    return frames, payload, first


async def membuf_memory(stream: trio.SocketStream) -> Checksum:
    frames = payload = first = 0
    from membuf.codecs import LengthPrefixed

    codec = LengthPrefixed("leb128", max_frame=MAX_FRAME)
    async with membuf.StreamReader(stream) as rx:
        async for f in rx.frames(codec):
            frames += 1
            payload += len(f)
            for seg in f:  # the first byte: first segment, first byte
                first += seg[0]
                break
    return frames, payload, first


async def membuf_read_exactly(stream: trio.SocketStream) -> Checksum:
    frames = payload = first = 0
    async with membuf.StreamReader(stream) as rx:
        read_leb128, read_exactly = rx.read_leb128, rx.read_exactly
        while True:
            try:
                n = await read_leb128()
            except membuf.IncompleteReadError as exc:
                if exc.partial:
                    raise
                break
            f = await read_exactly(n)
            frames += 1
            payload += len(f)
            for seg in f:
                first += seg[0]
                break
    return frames, payload, first


def run_trio(receiver: Callable[[trio.SocketStream], Any], workload: str, total: int,
             seed: int) -> tuple[float, Any]:
    async def main() -> tuple[float, Any]:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proc = start_sender(listener.getsockname()[1], workload, total, seed)
        sock, _ = await listener.accept()
        listener.close()
        stream = trio.SocketStream(sock)
        t0 = time.perf_counter()
        result = await receiver(stream)
        dt = time.perf_counter() - t0
        await stream.aclose()
        await trio.to_thread.run_sync(proc.wait)
        return dt, result

    return trio.run(main)


# -- asyncio contender ----------------------------------------------------------------


async def asyncio_readexactly(reader: asyncio.StreamReader) -> Checksum:
    frames = payload = first = 0
    readexactly = reader.readexactly
    while True:
        try:
            b = (await readexactly(1))[0]
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return frames, payload, first
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            b = (await readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
        frame = await readexactly(n)
        frames += 1
        payload += len(frame)
        first += frame[0]


def run_asyncio(receiver: Callable[[asyncio.StreamReader], Any], workload: str, total: int,
                seed: int) -> tuple[float, Any]:
    async def main() -> tuple[float, Any]:
        loop = asyncio.get_running_loop()
        import socket

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        proc = start_sender(listener.getsockname()[1], workload, total, seed)
        sock, _ = await loop.sock_accept(listener)
        listener.close()
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME)
        t0 = time.perf_counter()
        result = await receiver(reader)
        dt = time.perf_counter() - t0
        writer.close()
        await loop.run_in_executor(None, proc.wait)
        return dt, result

    return asyncio.run(main())


# -- anyio contenders (asyncio backend) -----------------------------------------------


async def anyio_exactly(stream: Any) -> Checksum:
    frames = payload = first = 0
    buffered = BufferedByteReceiveStream(stream)
    receive_exactly = buffered.receive_exactly
    while True:
        try:
            b = (await receive_exactly(1))[0]
        except anyio.IncompleteRead:
            assert not buffered.buffer
            return frames, payload, first
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            b = (await receive_exactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
        frame = await receive_exactly(n)
        frames += 1
        payload += len(frame)
        first += frame[0]


async def anyio_receive(stream: Any) -> Checksum:
    buf = bytearray()
    acc = [0, 0, 0]
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            break
        buf += data
        used = parse_bytearray(buf, acc)
        del buf[:used]
    assert not buf, f"{len(buf)} bytes left over"
    return acc[0], acc[1], acc[2]


def run_anyio(receiver: Callable[[Any], Any], workload: str, total: int,
              seed: int) -> tuple[float, Any]:
    async def main() -> tuple[float, Any]:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener = multi.listeners[0]
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        proc = start_sender(port, workload, total, seed)
        stream = await listener.accept()
        await multi.aclose()
        t0 = time.perf_counter()
        result = await receiver(stream)
        dt = time.perf_counter() - t0
        await stream.aclose()
        await anyio.to_thread.run_sync(proc.wait)
        return dt, result

    return anyio.run(main)


CONTENDERS: dict[str, tuple[Callable[..., tuple[float, Any]], Callable[..., Any]]] = {
    "raw recv_into 256K": (run_trio, trio_raw),
    "raw recv_into 64K": (run_trio, trio_raw64),
    "membuf views": (run_trio, membuf_views),
    "membuf Memory": (run_trio, membuf_memory),
    "membuf read_exactly": (run_trio, membuf_read_exactly),
    "trio bytearray": (run_trio, trio_bytearray),
    "asyncio readexactly": (run_asyncio, asyncio_readexactly),
    "anyio exactly": (run_anyio, anyio_exactly),
    "anyio receive": (run_anyio, anyio_receive),
}


def bench(workload: str, total: int, rounds: int, seed: int, only: list[str] | None,
          slow_total: int) -> dict[str, list[float]]:
    """Every contender ``rounds`` times, round-robin; returns seconds per byte-rate sample."""
    names = [n for n in CONTENDERS if not only or any(o in n for o in only)]
    rates: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for rnd in range(rounds):
        for name in names:
            runner, receiver = CONTENDERS[name]
            n_bytes = slow_total if (name == "anyio exactly" and workload == "small") else total
            length, checksum = expected(workload, seed, n_bytes)
            dt, result = runner(receiver, workload, n_bytes, seed)
            if isinstance(result, tuple) and result and result[0] == "bytes":
                if result[1] != length:
                    raise SystemExit(f"{name}: received {result[1]} bytes, sent {length}")
            elif tuple(result) != checksum:
                raise SystemExit(f"{name}: checksum {result} != expected {checksum}")
            rates[name].append((checksum[0] / dt, length / dt))
            print(f"  round {rnd + 1}/{rounds} {name:<20} {checksum[0] / dt / 1e6:8.3f} M frames/s"
                  f" {length / dt / 1e6:9.1f} MB/s", file=sys.stderr)
    return rates  # type: ignore[return-value]


def report(workload: str, rates: dict[str, list[tuple[float, float]]]) -> None:
    med = {n: statistics.median(r[1] for r in v) for n, v in rates.items()}
    medf = {n: statistics.median(r[0] for r in v) for n, v in rates.items()}
    raw = max((v for n, v in med.items() if n.startswith("raw")), default=None)
    base = {n: v for n, v in medf.items() if n in BASELINES}
    best = max(base, key=lambda n: base[n]) if base else None
    title = {"big": "(a) 64 KiB frames", "small": "(b) 16..300 B frames"}[workload]
    print(f"\n{title}: median of {len(next(iter(rates.values())))} rounds")
    print(f"{'receiver':<20} {'M frames/s':>11} {'MB/s':>8} {'spread MB/s':>16} "
          f"{'vs raw':>7} {'vs best baseline':>17}")
    for n, v in rates.items():
        lo, hi = min(r[1] for r in v) / 1e6, max(r[1] for r in v) / 1e6
        vs_raw = f"{med[n] / raw:6.0%}" if raw else "-"
        vs_best = f"{medf[n] / base[best]:6.2f}x" if best and not n.startswith("raw") else "-"
        print(f"{n:<20} {medf[n] / 1e6:11.3f} {med[n] / 1e6:8.1f} {lo:7.1f}..{hi:<8.1f} "
              f"{vs_raw:>7} {vs_best:>17}")
    if best:
        print(f"best baseline: {best}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=["big", "small", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big-bytes", type=int, default=512 << 20)
    ap.add_argument("--small-bytes", type=int, default=64 << 20)
    ap.add_argument("--slow-bytes", type=int, default=16 << 20,
                    help="stream size for anyio exactly on small frames (it is ~30x slower)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="substrings of contender names to run")
    args = ap.parse_args(argv)
    print(f"python {platform.python_version()}, trio {version('trio')}, anyio {version('anyio')} "
          f"(asyncio backend), membuf {membuf.__version__}; {os.cpu_count()} CPUs, "
          f"load average before {os.getloadavg()[0]:.2f}")
    workloads = ["big", "small"] if args.workload == "both" else [args.workload]
    for w in workloads:
        total = args.big_bytes if w == "big" else args.small_bytes
        rates = bench(w, total, args.rounds, args.seed, args.only, args.slow_bytes)
        report(w, rates)
    print(f"\nload average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
