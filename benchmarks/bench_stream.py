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
  raw recv_into      trio ``sock.recv_into`` into one reused buffer (256 KiB, 64 KiB, 1 MiB),
                     no parsing: the limit is the best of the three
  membuf views       ``rx.frames(codec, views=True, batch=True)``, each batch checksummed
                     with ``len(batch)``, ``sum(map(len, batch))``, ``sum(map(itemgetter(0), batch))``
  membuf views loop  the same batches, checksummed frame by frame in a Python loop
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
import operator
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
_first = operator.itemgetter(0)
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


async def trio_raw1m(stream: trio.SocketStream) -> Any:
    sock = stream.socket
    buf = bytearray(1 << 20)
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
    """Batches of views, consumed a batch at a time (C-level map/sum over the batch)."""
    frames = payload = first = 0
    from membuf.codecs import LengthPrefixed

    codec = LengthPrefixed("leb128", max_frame=MAX_FRAME)
    async with membuf.StreamReader(stream) as rx:
        async for batch in rx.frames(codec, views=True, batch=True):
            frames += len(batch)
            payload += sum(map(len, batch))
            first += sum(map(_first, batch))
    return frames, payload, first


async def membuf_views_loop(stream: trio.SocketStream) -> Checksum:
    """Batches of views, consumed with the same per-frame Python loop as the baselines."""
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
             seed: int) -> tuple[float, float, Any]:
    async def main() -> tuple[float, float, Any]:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proc = start_sender(listener.getsockname()[1], workload, total, seed)
        sock, _ = await listener.accept()
        listener.close()
        stream = trio.SocketStream(sock)
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await receiver(stream)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        await stream.aclose()
        await trio.to_thread.run_sync(proc.wait)
        return dt, cpu, result

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
                seed: int) -> tuple[float, float, Any]:
    async def main() -> tuple[float, float, Any]:
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
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await receiver(reader)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        writer.close()
        await loop.run_in_executor(None, proc.wait)
        return dt, cpu, result

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
              seed: int) -> tuple[float, float, Any]:
    async def main() -> tuple[float, float, Any]:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener = multi.listeners[0]
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        proc = start_sender(port, workload, total, seed)
        stream = await listener.accept()
        await multi.aclose()
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await receiver(stream)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        await stream.aclose()
        await anyio.to_thread.run_sync(proc.wait)
        return dt, cpu, result

    return anyio.run(main)


CONTENDERS: dict[str, tuple[Callable[..., tuple[float, float, Any]], Callable[..., Any]]] = {
    "raw recv_into 256K": (run_trio, trio_raw),
    "raw recv_into 64K": (run_trio, trio_raw64),
    "raw recv_into 1M": (run_trio, trio_raw1m),
    "membuf views": (run_trio, membuf_views),
    "membuf views loop": (run_trio, membuf_views_loop),
    "membuf Memory": (run_trio, membuf_memory),
    "membuf read_exactly": (run_trio, membuf_read_exactly),
    "trio bytearray": (run_trio, trio_bytearray),
    "asyncio readexactly": (run_asyncio, asyncio_readexactly),
    "anyio exactly": (run_anyio, anyio_exactly),
    "anyio receive": (run_anyio, anyio_receive),
}


Sample = tuple[float, float, float]   # (frames/s, bytes/s, receiver CPU seconds per GB)


def bench(workload: str, total: int, rounds: int, seed: int, only: list[str] | None,
          slow_total: int) -> dict[str, list[Sample]]:
    """Every contender ``rounds`` times, round-robin; returns one sample per run."""
    names = [n for n in CONTENDERS if not only or any(o in n for o in only)]
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    for rnd in range(rounds):
        for name in names:
            runner, receiver = CONTENDERS[name]
            n_bytes = slow_total if (name == "anyio exactly" and workload == "small") else total
            length, checksum = expected(workload, seed, n_bytes)
            dt, cpu, result = runner(receiver, workload, n_bytes, seed)
            if isinstance(result, tuple) and result and result[0] == "bytes":
                if result[1] != length:
                    raise SystemExit(f"{name}: received {result[1]} bytes, sent {length}")
            elif tuple(result) != checksum:
                raise SystemExit(f"{name}: checksum {result} != expected {checksum}")
            samples[name].append((checksum[0] / dt, length / dt, cpu / length * 1e9))
            print(f"  round {rnd + 1}/{rounds} {name:<20} {checksum[0] / dt / 1e6:8.3f} M frames/s"
                  f" {length / dt / 1e6:9.1f} MB/s  receiver CPU {cpu / length * 1e9:6.3f} s/GB",
                  file=sys.stderr)
    return samples


def report(workload: str, samples: dict[str, list[Sample]], frame_bytes: float) -> None:
    """Median table with ratios to the raw limit and to the best baseline."""
    fps = {n: statistics.median(x[0] for x in v) for n, v in samples.items()}
    bps = {n: statistics.median(x[1] for x in v) for n, v in samples.items()}
    cpu = {n: statistics.median(x[2] for x in v) for n, v in samples.items()}
    raw = max((v for n, v in bps.items() if n.startswith("raw")), default=None)
    base = {n: v for n, v in fps.items() if n in BASELINES}
    best = max(base, key=lambda n: base[n]) if base else None
    title = {"big": "(a) 64 KiB frames", "small": "(b) 16..300 B frames"}[workload]
    print(f"\n{title}: median of {len(next(iter(samples.values())))} rounds "
          "(wall clock; receiver CPU = CPU time of the receiving thread)")
    print(f"{'receiver':<20} {'M frames/s':>10} {'MB/s':>7} {'MB/s min..max':>15} "
          f"{'vs raw':>6} {'vs best':>7} {'CPU ns/frame':>12} {'CPU vs best':>11}")
    for n, v in samples.items():
        lo, hi = min(x[1] for x in v) / 1e6, max(x[1] for x in v) / 1e6
        vs_raw = f"{bps[n] / raw:.0%}" if raw else "-"
        is_raw = n.startswith("raw")
        vs_best = f"{fps[n] / base[best]:.2f}x" if best and not is_raw else "-"
        ns_frame = cpu[n] * frame_bytes  # s/GB * bytes/frame = ns/frame
        cpu_best = f"{cpu[best] / cpu[n]:.2f}x" if best and not is_raw else "-"
        print(f"{n:<20} {fps[n] / 1e6:10.3f} {bps[n] / 1e6:7.0f} {lo:7.0f}..{hi:<7.0f} "
              f"{vs_raw:>6} {vs_best:>7} {ns_frame:12.0f} {cpu_best:>11}")
    if best:
        print(f"best baseline by frames/s: {best}")


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
        samples = bench(w, total, args.rounds, args.seed, args.only, args.slow_bytes)
        length, (frames, _, _) = expected(w, args.seed, total)
        report(w, samples, length / frames)
    print(f"\nload average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
