"""Soak test: well-behaved and hostile peers on loopback for N minutes, then check nothing leaked.

Run: ``make soak`` (``SOAK_MINUTES=2 SOAK_CONNECTIONS=500``) or
``python fuzz/soak.py --minutes 2 --connections 500 --media 16 --hostile 32``.

Strategy. This process runs three servers: a frame server
(``membuf.serve_tcp`` with one shared :class:`~membuf.Allocator`, so "every
byte freed" is one number) and the two media ingest servers
(``RtmpServer``, ``Av1Server``) sharing a second, capped allocator. A second
process (this script with ``--client``) keeps, at all times:

* ``--connections`` well-behaved frame clients: each sends a 4-byte
  connection id, then length-prefixed frames of random size (mostly small,
  some up to 256 KiB) at random intervals, and ends in one of three ways: a
  clean close between frames, a disconnect in the middle of a frame, or a
  cancellation of its task while it waits;
* ``--media`` well-behaved publishers, half RTMP (handshake, connect,
  publish, AVC frames, deleteStream) and half raw AV1 OBU streams;
* ``--hostile`` hostile peers, each running one attack after another:
  slowloris (a byte per second), resets mid-frame, oversized length
  prefixes, stalled RTMP handshakes, floods of empty RTMP messages, floods
  of small but legal RTMP messages, partial-message hogs, AV1 padding that
  never ends a temporal unit, floods of tiny OBUs, stalled OBUs.

Every ended connection is replaced until the time is up. The media servers
run with the default limits except shorter handshake and idle timeouts (so
stalled attackers are cycled within minutes) and a 512 MiB memory cap.

Each frame body is ``conn id (4) | sequence (4) | crc32(payload) (4) | payload``.
The server reads frames three ways, by connection id: ``read_be`` +
``read_exactly`` and ``read_be`` + ``read_frame`` (retained, then recycled),
both with random trio cancellations of the read that are then retried (a
cancelled read must lose nothing), and ``frames(LengthPrefixed("be32"))`` in
batches of views. It checks every frame's crc and that sequence numbers
have no gap, and keeps per connection a frame count and a running digest.
The client reports the same for what it fully sent. At the end:

* every frame connection the client made was seen by the server with the
  same frame count and digest: no frame lost, duplicated or altered;
* every well-behaved RTMP stream ended without error with exactly the frames
  its publisher sent; the error-free AV1 streams are exactly the
  well-behaved ones (their temporal-unit counts match);
* both allocators have ``in_use == 0``: every connection's bytes freed;
* the server's RSS outside the two allocators at the end of the load is
  within 10% of its value after warm-up (no growth under steady load), and
  the RSS never passed the bound stated up front;
* no handler failed with anything but an expected end (hostile peers are
  dropped by the servers' limits, each with one log line, counted by kind).

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
import socket
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import trio

import membuf
from membuf import Allocator, Connection, IncompleteReadError, MalformedError, Memory
from membuf.codecs import LengthPrefixed
from membuf.media.limits import Limits, format_size
from membuf.media.servers import Av1Server, IngestServer, RtmpServer, StreamState

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from media_fixtures import (  # noqa: E402  (the peers' bytes, shared with the tests)
    TEMPORAL_DELIMITER,
    VIDEO,
    av1_stream,
    avc_frame,
    obu,
    rtmp_command,
    rtmp_header,
    rtmp_publish,
    rtmp_video,
    until_closed,
)

HEADER = 12
MAX_FRAME = 1 << 20
HOSTILE_ID = 1 << 31            # frame connection ids of hostile peers have this bit set
MEDIA_CAP = 512 << 20           # the media servers' shared allocator (--max-memory)
MEDIA_LIMITS = dict(max_memory=MEDIA_CAP, handshake_timeout=5.0, idle_timeout=5.0)
MiB = 1 << 20


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
    rtmp_good: dict[str, int] = field(default_factory=dict)              # stream -> frames sent
    av1_good: list[int] = field(default_factory=list)                    # temporal units sent
    media_failed: list[str] = field(default_factory=list)                # a good publisher broke
    hostile: Counter[str] = field(default_factory=Counter)               # attack -> times run


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


async def good_rtmp(port: int, name: str, rng: random.Random, stats: ClientStats) -> None:
    """A well-behaved publisher: every frame it sends must be counted by the server."""
    frames = rng.randint(20, 150)
    s = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with s:
            await rtmp_publish(s, name)
            for i in range(frames):
                body = avc_frame(i, rng.choice((rng.randint(50, 2000), rng.randint(2000, 30000))),
                                 key=i % 25 == 0)
                await s.send_all(rtmp_video(body, ts=40 * i, chunk_size=128))
                await trio.sleep(rng.uniform(0, 0.05))
            await s.send_all(rtmp_command("deleteStream", 4.0, None, 1.0))
            await s.send_eof()
            await until_closed(s)
        stats.rtmp_good[name] = frames
    except (OSError, trio.BrokenResourceError, ConnectionError) as e:
        stats.media_failed.append(f"rtmp {name}: {type(e).__name__}: {e}")


async def good_av1(port: int, rng: random.Random, stats: ClientStats) -> None:
    units = rng.randint(20, 150)
    data = av1_stream(units, rng.randint(40, 4000))
    s = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with s:
            step = max(1, len(data) // rng.randint(5, 40))
            for i in range(0, len(data), step):
                await s.send_all(data[i:i + step])
                await trio.sleep(rng.uniform(0, 0.05))
            await s.send_eof()
            await until_closed(s)
        stats.av1_good.append(units)
    except (OSError, trio.BrokenResourceError, ConnectionError) as e:
        stats.media_failed.append(f"av1: {type(e).__name__}: {e}")


async def send_until_dropped(s: trio.SocketStream, data: bytes, piece: int = 1 << 16) -> None:
    """Send ``data`` until the server hangs up (the point of an attack), then drain."""
    try:
        for i in range(0, len(data), piece):
            await s.send_all(data[i:i + piece])
    except trio.BrokenResourceError:
        return
    await until_closed(s)


def reset(s: trio.SocketStream) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    s.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def attack(kind: str, ports: dict[str, int], hid: int, rng: random.Random) -> None:
    """One hostile peer's attack; every one ends (the server drops it, or it gives up)."""
    cid = (HOSTILE_ID | hid).to_bytes(4, "big")
    target = ports[kind.split("-")[0]]
    s = await trio.open_tcp_stream("127.0.0.1", target)
    async with s:
        if kind == "frame-slowloris":           # a prefix and a body, one byte per second
            await s.send_all(cid)
            for b in (100).to_bytes(4, "big") + bytes(20):
                await s.send_all(bytes([b]))
                await trio.sleep(1)
        elif kind == "frame-reset":             # half a frame, then RST
            await s.send_all(cid + (5000).to_bytes(4, "big") + bytes(rng.randint(0, 4999)))
            reset(s)
        elif kind == "frame-oversized":         # a length prefix far over max_buffered
            await send_until_dropped(s, cid + (0xFFFFFF00).to_bytes(4, "big") + bytes(1000))
        elif kind == "rtmp-stall":              # inside C0/C1, then nothing
            await s.send_all(b"\x03" + bytes(rng.randint(0, 1500)))
            await until_closed(s)
        elif kind == "rtmp-slowloris":          # the handshake, one byte per second
            for _ in range(60):
                await s.send_all(b"\x03")
                await trio.sleep(1)
        elif kind == "rtmp-empty-flood":        # 1-byte headers of empty messages
            await rtmp_publish(s, f"hostile-{hid}")
            await send_until_dropped(s, rtmp_header(0, 6, 0, 0, VIDEO, 1) + b"\xc6" * (256 << 10))
        elif kind == "rtmp-small-flood":        # small messages, within the average rule
            await rtmp_publish(s, f"hostile-{hid}")
            one = avc_frame(0, 24)
            await send_until_dropped(s, rtmp_video(one) + (rtmp_header(3, 6) + one) * 5000)
        elif kind == "rtmp-partial-hog":        # messages announced at 4 MiB, sent in part
            await rtmp_publish(s, f"hostile-{hid}")
            parts = b"".join(rtmp_header(0, 6 + k, 0, 4 * MiB - 1, VIDEO, 1) + bytes(128)
                             + (rtmp_header(3, 6 + k) + bytes(128)) * rng.randint(10, 9000)
                             for k in range(rng.randint(1, 4)))
            await send_until_dropped(s, parts)  # over --max-partial, or idle until the timeout
        elif kind == "rtmp-reset":
            await rtmp_publish(s, f"hostile-{hid}")
            await s.send_all(rtmp_video(avc_frame(1, 3000))[:1000])
            reset(s)
        elif kind == "av1-padding":             # one temporal unit that never ends
            pad = obu(15, bytes(MiB - 8))
            await send_until_dropped(s, TEMPORAL_DELIMITER + pad * 12)
        elif kind == "av1-tiny-flood":          # empty padding OBUs, 2 bytes each
            await send_until_dropped(s, TEMPORAL_DELIMITER + obu(15, b"") * (128 << 10))
        elif kind == "av1-stall":               # half an OBU, then nothing
            await s.send_all(obu(6, bytes(1000))[:rng.randint(1, 500)])
            await until_closed(s)
        else:
            raise ValueError(kind)


ATTACKS = {
    "frame-slowloris": 1, "frame-reset": 3, "frame-oversized": 2,
    "rtmp-stall": 2, "rtmp-slowloris": 1, "rtmp-empty-flood": 2, "rtmp-small-flood": 1,
    "rtmp-partial-hog": 2, "rtmp-reset": 2,
    "av1-padding": 1, "av1-tiny-flood": 1, "av1-stall": 2,
}


async def client_main(ports: dict[str, int], slots: int, media: int, hostile: int,
                      seconds: float, max_connections: int, seed: int) -> None:
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
            await client_connection(ports["frame"], cid, r, stats, deadline)

    async def media_slot(k: int) -> None:
        r = random.Random(rng.random())
        n = 0
        await trio.sleep(k * 0.01)
        while trio.current_time() < deadline - 10:  # leave time for the last stream to end
            n += 1
            if k % 2:
                await good_rtmp(ports["rtmp"], f"good-{k}-{n}", r, stats)
            else:
                await good_av1(ports["av1"], r, stats)

    async def hostile_slot(k: int) -> None:
        r = random.Random(rng.random())
        kinds, weights = list(ATTACKS), list(ATTACKS.values())
        n = 0
        await trio.sleep(k * 0.05)
        while trio.current_time() < deadline - 10:
            n += 1
            kind = r.choices(kinds, weights)[0]
            stats.hostile[kind] += 1
            with trio.move_on_at(deadline - 5):     # every attack ends before the checks
                try:
                    await attack(kind, ports, k << 16 | n, r)
                except (OSError, trio.BrokenResourceError, ConnectionError):
                    pass                             # dropped: what the server should do

    async with trio.open_nursery() as nursery:
        for k in range(slots):
            nursery.start_soon(slot, k)
        for k in range(media):
            nursery.start_soon(media_slot, k)
        for k in range(hostile):
            nursery.start_soon(hostile_slot, k)
    out: dict[str, Any] = {k: v for k, v in vars(stats).items() if k != "per_conn"}
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
    hostile: int = 0
    hostile_dropped: int = 0
    bad: list[str] = field(default_factory=list)


RECORD = struct.Struct("<III")          # connection id, frames, digest


class Server:
    """The frame handler and its bookkeeping. Finished connections' records go to a file,
    not to a dict in this process, so the bookkeeping itself does not grow the RSS."""

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
            if cid & HOSTILE_ID:
                cid = -1
                await self.hostile_frames(conn)
                return
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

    async def hostile_frames(self, conn: Connection) -> None:
        """A hostile peer on the frame server: read frames the plain way; a prefix over
        max_buffered is refused (MalformedError), a reset or a cut frame ends it."""
        rx = conn.reader
        self.stats.hostile += 1
        try:
            while True:
                n = await rx.read_be(4)
                await rx.read_exactly(n)   # over max_buffered: MalformedError
        except (MalformedError, IncompleteReadError, trio.BrokenResourceError):
            self.stats.hostile_dropped += 1


class Recorder:
    """What the media servers report per finished stream, kept small (a server runs long)."""

    def __init__(self) -> None:
        self.rtmp: dict[str, tuple[int, str | None]] = {}   # good streams: key -> (frames, error)
        self.av1_clean: list[int] = []                        # error-free AV1 streams' units
        self.av1_frames_mismatch = 0
        self.hostile_clean = 0

    def install(self, server: IngestServer) -> None:
        finish = server.finish_stream

        def finish_stream(state: StreamState, error: str | None = None) -> None:
            finish(state, error)
            c = state.counts
            if isinstance(server, RtmpServer):
                key = state.key.split("/", 1)[-1]
                if key.startswith("good-"):
                    self.rtmp[key] = (c.video_frames, state.error)  # type: ignore[union-attr]
                elif state.error is None:
                    self.hostile_clean += 1
            elif state.error is None:
                self.av1_clean.append(c.temporal_units)  # type: ignore[union-attr]
                if c.frames != c.temporal_units:  # type: ignore[union-attr]
                    self.av1_frames_mismatch += 1

        server.finish_stream = finish_stream  # type: ignore[method-assign]


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
    media_allocator = Allocator(max_bytes=MEDIA_CAP)
    limits = Limits(**MEDIA_LIMITS)  # type: ignore[arg-type]
    devnull = open(os.devnull, "w")
    rtmp = RtmpServer(allocator=media_allocator, limits=limits, live=False, json_out=True,
                      out=devnull)
    av1 = Av1Server(allocator=media_allocator, limits=limits, live=False, json_out=True,
                    out=devnull)
    recorder = Recorder()
    recorder.install(rtmp)
    recorder.install(av1)
    server = Server(allocator, args.seed, tempfile.TemporaryFile())
    failures = Failures()
    quiet = [logging.getLogger("membuf.stream"), logging.getLogger("membuf.media")]
    for lg in quiet:
        lg.propagate = False   # one line per dropped hostile peer: counted below, not printed
        lg.addHandler(logging.NullHandler())
    quiet[0].addHandler(failures)
    seconds = args.minutes * 60
    warmup = max(5.0, min(30.0, seconds * 0.2))
    samples: list[tuple[float, int, int]] = []      # (t, rss, reserved by both allocators)
    start = time.monotonic()
    base_rss = rss_bytes()

    def reserved() -> int:
        return allocator.stats().reserved + media_allocator.stats().reserved

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: membuf.serve_tcp(server.handle, 0, "127.0.0.1", allocator,
                                                 backlog=1024, task_status=task_status))
        ports = {"frame": listeners[0].socket.getsockname()[1],
                 "rtmp": await nursery.start(rtmp.run, 0),
                 "av1": await nursery.start(av1.run, 0)}

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - start, rss_bytes(), reserved()))
                await trio.sleep(1)

        nursery.start_soon(sample)
        cmd = [sys.executable, os.path.abspath(__file__), "--client", "--ports", json.dumps(ports),
               "--connections", str(args.connections), "--media", str(args.media),
               "--hostile", str(args.hostile), "--seconds", str(seconds),
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
        warm_rss, warm_reserved = rss_bytes(), reserved()
        bound = warm_rss + MEDIA_CAP + (64 << 20)
        print(f"warm-up done after {warmup:.0f} s: RSS {mib(warm_rss)} ({mib(warm_reserved)} in"
              f" the allocators), {server.stats.active} frame connections open; RSS bound"
              f" {mib(bound)} (warm-up + the media cap + 64 MiB)", flush=True)
        await trio.sleep(max(0.0, seconds - warmup - 2))
        gc.collect()
        load_end_rss, load_end_reserved = rss_bytes(), reserved()
        print(f"end of load at {time.monotonic() - start:.0f} s: RSS {mib(load_end_rss)}"
              f" ({mib(load_end_reserved)} in the allocators), {server.stats.active} frame"
              " connections open", flush=True)
        with trio.fail_after(seconds + 120):
            await client_done.wait()
            while server.stats.active or rtmp.open_connections or av1.open_connections:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    quiet[0].removeHandler(failures)
    devnull.close()

    gc.collect()
    s = allocator.stats()
    ms = media_allocator.stats()
    final_rss = rss_bytes()
    st = server.stats
    after = [(r, res) for t, r, res in samples if t >= warmup]
    print("\n== soak results ==")
    print(f"duration {args.minutes:g} min, {args.connections} frame connections, {args.media}"
          f" publishers, {args.hostile} hostile peers (loopback)")
    if "error" in result:
        print(f"FAIL: {result['error']}")
        return 1
    print(f"client: {result['connections']} frame connections, {result['frames']} frames, "
          f"{mib(result['bytes'])}; ended clean {result['clean']}, mid-frame {result['midframe']}, "
          f"cancelled {result['cancelled']}")
    print(f"server: {st.connections} frame connections, {st.frames} frames, {mib(st.bytes)}; "
          f"clean {st.clean}, mid-frame {st.midframe}, reads cancelled and retried {st.read_cancels}")
    print(f"publishers: {len(result['rtmp_good'])} RTMP streams"
          f" ({sum(result['rtmp_good'].values())} frames), {len(result['av1_good'])} AV1 streams"
          f" ({sum(result['av1_good'])} temporal units)")
    attacks = ", ".join(f"{k} {v}" for k, v in sorted(result["hostile"].items()))
    print(f"hostile: {sum(result['hostile'].values())} attacks: {attacks}")
    print(f"  frame server: {st.hostile} hostile connections, {st.hostile_dropped} refused or cut")
    for srv in (rtmp, av1):
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(srv.dropped.items()))
        print(f"  {srv.name}: {srv.connections} connections, dropped: {dropped}")
    print(f"frame allocator: in_use {s.in_use} B, peak_in_use {mib(s.peak_in_use)}, reserved"
          f" {mib(s.reserved)}, mallocs {s.mallocs}, frees {s.frees}, failed {s.failed}")
    print(f"media allocator (cap {format_size(MEDIA_CAP)}): in_use {ms.in_use} B, peak_in_use"
          f" {mib(ms.peak_in_use)}, reserved {mib(ms.reserved)}, failed {ms.failed}")
    other_warm, other_end = warm_rss - warm_reserved, load_end_rss - load_end_reserved
    ratio = other_end / other_warm
    top = max(r for r, _ in after)
    print(f"RSS: before load {mib(base_rss)}, after warm-up {mib(warm_rss)}, end of load"
          f" {mib(load_end_rss)}, after close {mib(final_rss)}, min/max after warm-up"
          f" {mib(min(r for r, _ in after))}/{mib(top)}")
    print(f"RSS outside the allocators: after warm-up {mib(other_warm)}, end of load"
          f" {mib(other_end)} ({ratio:.3f}x)")

    step = max(1, len(samples) // 10)
    print("RSS timeline: " + ", ".join(f"{t:.0f}s {r / MiB:.1f}" for t, r, _ in samples[::step])
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
    problems += result["media_failed"][:10]
    for name, frames in result["rtmp_good"].items():
        got = recorder.rtmp.get(name)
        if got != (frames, None):
            problems.append(f"RTMP stream {name}: sent {frames} frames, server has {got}")
    if sorted(recorder.av1_clean) != sorted(result["av1_good"]):
        problems.append(f"AV1: error-free streams {len(recorder.av1_clean)} vs well-behaved"
                        f" {len(result['av1_good'])}, units differ")
    if recorder.av1_frames_mismatch:
        problems.append(f"{recorder.av1_frames_mismatch} AV1 streams miscounted frames")
    if s.in_use or ms.in_use:
        problems.append(f"{s.in_use} + {ms.in_use} bytes still in use after every connection closed")
    if not 0.9 <= ratio <= 1.1:
        problems.append(f"RSS outside the allocators at the end of the load is {ratio:.3f}x the"
                        " post-warm-up value")
    if top > bound:
        problems.append(f"RSS reached {mib(top)}, over the stated bound {mib(bound)}")
    allocator.check()
    media_allocator.check()
    for p in problems:
        print("FAIL:", p)
    print("soak: OK" if not problems else f"soak: {len(problems)} problem(s)")
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=500, help="frame clients kept open")
    p.add_argument("--media", type=int, default=16, help="well-behaved publishers kept going")
    p.add_argument("--hostile", type=int, default=32, help="hostile peers kept attacking")
    p.add_argument("--max-connections", type=int, default=200_000, help="total bound")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        trio.run(client_main, json.loads(args.ports), args.connections, args.media, args.hostile,
                 args.seconds, args.max_connections, args.seed)
        return 0
    return trio.run(server_main, args)


if __name__ == "__main__":
    sys.exit(main())
