"""Soak test: hundreds of loopback connections for N minutes, then check nothing leaked or changed.

Run: ``make soak`` (``SOAK_MINUTES=2 SOAK_CONNECTIONS=500``) or
``python fuzz/soak.py --minutes 2 --connections 500``.

Strategy. This process runs the server: ``membuf.serve_tcp`` with one shared
:class:`~membuf.Allocator`, so "every byte freed" is one number. A second
process (this script with ``--client``) keeps ``--connections`` loopback
connections open at all times; each sends a 4-byte connection id, then
length-prefixed frames of random size (mostly small, some up to 256 KiB)
at random intervals, and ends in one of three ways: a clean close between
frames, a disconnect in the middle of a frame (half a frame, then close),
or a cancellation of the connection's task while it waits (then close).
Every ended connection is replaced until the time is up.

Each frame body is ``conn id (4) | sequence (4) | crc32(payload) (4) | payload``.
The server reads frames three ways, by connection id: ``read_be`` +
``read_exactly`` and ``read_be`` + ``read_frame`` (retained, then recycled),
both with random trio cancellations of the read that are then retried (a
cancelled read must lose nothing), and ``frames(LengthPrefixed("be32"))`` in
batches of views. It checks every frame's crc and that sequence numbers
have no gap, and keeps per connection a frame count and a running digest.
The client reports the same for what it fully sent. At the end:

* every connection the client made was seen by the server with the same
  frame count and digest: no frame lost, duplicated or altered;
* the shared allocator has ``in_use == 0``: every connection's bytes freed;
* the server's RSS at the end of the load is within 10% of its value
  after warm-up (no growth under steady load);
* no handler failed with anything but the expected end-of-stream.

Loopback only, bounded by ``--minutes`` and ``--max-connections``; it
prints every figure and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import trio

import membuf
from membuf import Allocator, Connection, IncompleteReadError, Memory
from membuf.codecs import LengthPrefixed

HEADER = 12
MAX_FRAME = 1 << 20


def frame_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.80:
        return rng.randint(0, 600)
    if roll < 0.97:
        return rng.randint(600, 16 << 10)
    return rng.randint(16 << 10, 256 << 10)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# -- client (a separate process) -----------------------------------------------------------


@dataclass
class ClientStats:
    connections: int = 0
    frames: int = 0
    bytes: int = 0
    clean: int = 0
    midframe: int = 0
    cancelled: int = 0
    per_conn: dict[int, tuple[int, int]] = field(default_factory=dict)   # id -> (frames, digest)


async def client_connection(port: int, cid: int, rng: random.Random, stats: ClientStats,
                            deadline: float) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    frames = digest = 0
    try:
        await stream.send_all(cid.to_bytes(4, "big"))
        ending = rng.choices(("clean", "midframe", "cancel"), (0.6, 0.25, 0.15))[0]
        lifetime = 1 + int(rng.expovariate(1 / 40))
        with trio.CancelScope() as scope:
            for seq in range(lifetime):
                if trio.current_time() > deadline:
                    ending = "clean"
                    break
                pause = rng.uniform(0, 0.2)
                if ending == "cancel" and seq == lifetime - 1:
                    scope.deadline = trio.current_time() + pause / 2   # cancelled while waiting
                await trio.sleep(pause)
                payload = rng.randbytes(frame_size(rng))
                crc = zlib.crc32(payload)
                body = cid.to_bytes(4, "big") + seq.to_bytes(4, "big") + crc.to_bytes(4, "big") + payload
                await stream.send_all(len(body).to_bytes(4, "big") + body)
                frames += 1
                digest = zlib.crc32(seq.to_bytes(4, "big") + crc.to_bytes(4, "big"), digest)
                stats.bytes += len(body) + 4
        if scope.cancelled_caught:
            stats.cancelled += 1
        elif ending == "midframe":
            payload = rng.randbytes(frame_size(rng))
            whole = (len(payload) + HEADER).to_bytes(4, "big") + cid.to_bytes(4, "big") + payload
            await stream.send_all(whole[: rng.randint(1, len(whole) - 1)])   # then hang up
            stats.midframe += 1
        else:
            stats.clean += 1
    finally:
        await stream.aclose()                       # FIN: everything sent is delivered
        stats.frames += frames
        stats.per_conn[cid] = (frames, digest)


async def client_main(port: int, slots: int, seconds: float, max_connections: int, seed: int) -> None:
    stats = ClientStats()
    rng = random.Random(seed)
    deadline = trio.current_time() + seconds
    next_id = 0

    async def slot(k: int) -> None:
        nonlocal next_id
        r = random.Random(rng.random())
        await trio.sleep(k * 0.002)                 # stagger the first connects
        while trio.current_time() < deadline and next_id < max_connections:
            cid = next_id
            next_id += 1
            stats.connections += 1
            await client_connection(port, cid, r, stats, deadline)

    async with trio.open_nursery() as nursery:
        for k in range(slots):
            nursery.start_soon(slot, k)
    out = {k: v for k, v in vars(stats).items() if k != "per_conn"}
    out["per_conn"] = {str(k): list(v) for k, v in stats.per_conn.items()}
    json.dump(out, sys.stdout)


# -- server (this process) -------------------------------------------------------------------


@dataclass
class ConnRecord:
    frames: int = 0
    digest: int = 0
    next_seq: int = 0


@dataclass
class ServerStats:
    connections: int = 0
    active: int = 0
    frames: int = 0
    bytes: int = 0
    clean: int = 0
    midframe: int = 0
    read_cancels: int = 0
    bad: list[str] = field(default_factory=list)


RECORD = struct.Struct("<III")          # connection id, frames, digest


class Server:
    """The handler and its bookkeeping. Finished connections' records go to a file, not to
    a dict in this process, so the bookkeeping itself does not grow the RSS being watched."""

    def __init__(self, allocator: Allocator, seed: int, records: BinaryIO) -> None:
        self.allocator = allocator
        self.stats = ServerStats()
        self.rng = random.Random(seed)
        self.records = records

    def conns(self) -> dict[int, tuple[int, int]]:
        """Every finished connection: id -> (frames, digest)."""
        self.records.flush()
        self.records.seek(0)
        data = self.records.read()
        return {cid: (frames, digest) for cid, frames, digest in RECORD.iter_unpack(data)}

    def check(self, rec: ConnRecord, cid: int, body: Memory | memoryview) -> None:
        """Verify one frame body (crc, connection id, sequence) and fold it into the digest."""
        m = body if isinstance(body, Memory) else Memory(body)
        r = m.reader()
        got_cid, seq, crc = r.read_be(4), r.read_be(4), r.read_be(4)
        actual = 0
        for piece in r.range(len(r)):
            actual = zlib.crc32(piece, actual)
        if got_cid != cid or seq != rec.next_seq or crc != actual:
            self.stats.bad.append(f"conn {cid}: frame seq {seq} (expected {rec.next_seq}), "
                                  f"id {got_cid}, crc {crc:#x} vs {actual:#x}")
        rec.next_seq = seq + 1
        rec.frames += 1
        rec.digest = zlib.crc32(seq.to_bytes(4, "big") + crc.to_bytes(4, "big"), rec.digest)
        self.stats.frames += 1
        self.stats.bytes += len(m) + 4

    async def retrying(self, op: Any, *args: Any) -> Any:
        """Run a read under a random short deadline; when cancelled, retry it (nothing may be lost)."""
        while True:
            with trio.move_on_after(self.rng.uniform(0, 0.3)) as scope:
                return await op(*args)
            if scope.cancelled_caught:
                self.stats.read_cancels += 1

    async def handle(self, conn: Connection) -> None:
        st = self.stats
        st.connections += 1
        st.active += 1
        rx = conn.reader
        cid = -1
        rec = ConnRecord()
        try:
            cid = int.from_bytes((await rx.read_exactly(4)).to_bytes(), "big")
            mode = cid % 3
            if mode == 2:
                codec = LengthPrefixed("be32", max_frame=MAX_FRAME)
                async for batch in rx.frames(codec, views=True, batch=True):
                    for view in batch:
                        self.check(rec, cid, view)
                st.clean += 1
                return
            while True:
                try:
                    n = await self.retrying(rx.read_be, 4)
                except IncompleteReadError as exc:
                    if exc.partial:
                        raise
                    st.clean += 1
                    return
                if mode == 0:
                    self.check(rec, cid, await self.retrying(rx.read_exactly, n))
                else:
                    frame = await self.retrying(rx.read_frame, n)
                    self.check(rec, cid, frame)
                    frame.recycle()
        except IncompleteReadError:
            st.midframe += 1
        finally:
            st.active -= 1
            if cid >= 0:
                self.records.write(RECORD.pack(cid, rec.frames, rec.digest))


class Failures(logging.Handler):
    """Count handler failures that serve_tcp logs (keep text only, never the exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.messages.append(f"{record.getMessage()}: {type(exc).__name__}: {exc}")


async def server_main(args: argparse.Namespace) -> int:
    allocator = Allocator()
    server = Server(allocator, args.seed, tempfile.TemporaryFile())
    failures = Failures()
    log = logging.getLogger("membuf.stream")
    log.addHandler(failures)
    log.propagate = False
    seconds = args.minutes * 60
    warmup = max(5.0, min(30.0, seconds * 0.2))
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    warm_rss = 0
    load_end_rss = 0

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: membuf.serve_tcp(server.handle, 0, "127.0.0.1", allocator,
                                                 backlog=1024, task_status=task_status))
        port = listeners[0].socket.getsockname()[1]

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - start, rss_bytes()))
                await trio.sleep(1)

        nursery.start_soon(sample)
        cmd = [sys.executable, os.path.abspath(__file__), "--client", "--port", str(port),
               "--connections", str(args.connections), "--seconds", str(seconds),
               "--max-connections", str(args.max_connections), "--seed", str(args.seed + 1)]
        client_done = trio.Event()
        result: dict[str, Any] = {}

        async def run_client() -> None:
            proc = await trio.run_process(cmd, capture_stdout=True, check=False)
            if proc.returncode:
                result["error"] = f"client exited {proc.returncode}"
            else:
                result.update(json.loads(proc.stdout))
            client_done.set()

        nursery.start_soon(run_client)
        await trio.sleep(warmup)
        gc.collect()
        warm_rss = rss_bytes()
        print(f"warm-up done after {warmup:.0f} s: RSS {mib(warm_rss)}, "
              f"{server.stats.active} connections open", flush=True)
        await trio.sleep(max(0.0, seconds - warmup - 2))
        gc.collect()
        load_end_rss = rss_bytes()                  # still under full load
        print(f"end of load at {time.monotonic() - start:.0f} s: RSS {mib(load_end_rss)}, "
              f"{server.stats.active} connections open", flush=True)
        with trio.fail_after(seconds + 120):
            await client_done.wait()
            while server.stats.active:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    log.removeHandler(failures)

    gc.collect()
    s = allocator.stats()
    final_rss = rss_bytes()
    st = server.stats
    after = [r for t, r in samples if t >= warmup]
    print("\n== soak results ==")
    print(f"duration {args.minutes:g} min, {args.connections} concurrent connections (loopback)")
    if "error" in result:
        print(f"FAIL: {result['error']}")
        return 1
    print(f"client: {result['connections']} connections, {result['frames']} frames, "
          f"{mib(result['bytes'])}; ended clean {result['clean']}, mid-frame {result['midframe']}, "
          f"cancelled {result['cancelled']}")
    print(f"server: {st.connections} connections, {st.frames} frames, {mib(st.bytes)}; "
          f"clean {st.clean}, mid-frame {st.midframe}, reads cancelled and retried {st.read_cancels}")
    print(f"allocator: in_use {s.in_use} B, peak_in_use {mib(s.peak_in_use)}, reserved {mib(s.reserved)}, "
          f"mallocs {s.mallocs}, frees {s.frees}, failed {s.failed}")
    ratio = load_end_rss / warm_rss
    print(f"RSS: after warm-up {mib(warm_rss)}, end of load {mib(load_end_rss)} ({ratio:.3f}x), "
          f"after close {mib(final_rss)}, min/max after warm-up {mib(min(after))}/{mib(max(after))}")

    step = max(1, len(samples) // 10)
    print("RSS timeline: " + ", ".join(f"{t:.0f}s {r / (1 << 20):.1f}" for t, r in samples[::step])
          + " (MiB)")

    problems = list(st.bad[:10]) + failures.messages[:10]
    per_conn = {int(k): tuple(v) for k, v in result["per_conn"].items()}
    seen = server.conns()
    lost = [cid for cid, want in per_conn.items() if seen.get(cid, (0, 0)) != want]
    extra = [cid for cid in seen if cid not in per_conn]
    if lost:
        problems.append(f"{len(lost)} connections whose frames differ, e.g. {lost[:5]}")
    if extra:
        problems.append(f"{len(extra)} connections the client never made: {extra[:5]}")
    if result["frames"] != st.frames:
        problems.append(f"client sent {result['frames']} frames, server checked {st.frames}")
    if s.in_use:
        problems.append(f"{s.in_use} bytes still in use after every connection closed")
    if not 0.9 <= ratio <= 1.1:
        problems.append(f"RSS at the end of the load is {ratio:.3f}x the post-warm-up value")
    allocator.check()
    for p in problems:
        print("FAIL:", p)
    print("soak: OK" if not problems else f"soak: {len(problems)} problem(s)")
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=500, help="kept open at all times")
    p.add_argument("--max-connections", type=int, default=200_000, help="total bound")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        trio.run(client_main, args.port, args.connections, args.seconds, args.max_connections,
                 args.seed)
        return 0
    return trio.run(server_main, args)


if __name__ == "__main__":
    sys.exit(main())
