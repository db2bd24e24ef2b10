"""``python -m membuf demo``: what membuf does, in a few seconds.

Part 1 walks the allocator: malloc, partial free, growth past an arena and a
dedicated arena, with ``stats()`` printed as a table after each step.

Part 2 runs a loopback server and client over trio: the client gather-sends
LEB128-framed messages (prefix and payload as separate segments, never
joined), the server receives them into native memory and cuts them into
batches of zero-copy views (``frames(codec, views=True, batch=True)``) and
acknowledges every batch with a LEB128 count. Frames/s, MB/s and both
allocators' stats are shown live (with ``rich`` when it is installed, plain
carriage-return lines otherwise); at the end every byte is freed.

Part 3 relays a live RTMP stream (``serve-rtmp`` in this process, about 2 s):
one publisher, a player that was waiting for it, one that joins mid-stream
(it starts at the last keyframe) and one that never reads (it skips to
keyframes within its byte budget and stalls nobody). Every payload goes to
the players by reference: the payload-copy count is 0.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import trio

from .allocator import STAT_FIELDS, Allocator, AllocatorStats
from .codecs import LengthPrefixed
from .errors import IncompleteReadError, NeedMore
from .media import amf0, rtmp
from .media.limits import Limits
from .media.servers import RtmpServer
from .memory import Memory
from .stream import Connection, open_tcp, serve_tcp
from .writer import Writer


def stats_table(rows: list[tuple[str, AllocatorStats]]) -> str:
    """Render stats snapshots as a plain-text table, one column per snapshot."""
    width = max(12, *(len(label) for label, _ in rows))
    head = "".join(f"{label:>{width + 2}}" for label, _ in rows)
    lines = [f"{'':<13}{head}"]
    for name in STAT_FIELDS:
        values = "".join(f"{getattr(s, name):>{width + 2},}" for _, s in rows)
        lines.append(f"{name:<13}{values}")
    return "\n".join(lines)


def allocator_walkthrough(out: list[str] | None = None) -> Allocator:
    """Allocate, partially free, grow past an arena; print stats after each step."""
    a = Allocator(arena_size=64 << 10, max_arena_size=256 << 10)
    snaps: list[tuple[str, AllocatorStats]] = [("fresh", a.stats())]

    mv = a.malloc(10_000)
    mv[:] = b"m" * len(mv)
    snaps.append(("malloc 10k", a.stats()))

    a.free(mv[2_000:8_000])                    # a hole in the middle
    head = a.free_rest(mv[:2_000], 100)        # keep 100 bytes of the prefix
    snaps.append(("partial free", a.stats()))

    grown = [a.malloc(60_000) for _ in range(3)]   # past the first arena: it doubles
    big = a.malloc(1 << 20)                    # above max_arena_size: dedicated arena
    snaps.append(("grow", a.stats()))

    for block in (*grown, big, head, mv[8_000:]):
        a.free(block)
    snaps.append(("all freed", a.stats()))
    a.trim()
    snaps.append(("trim", a.stats()))

    text = stats_table(snaps)
    if out is None:
        print("membuf allocator: malloc, partial free, growth, trim\n")
        print(text)
    else:
        out.append(text)
    return a


# -- part 2: loopback server and client ------------------------------------------------


def make_block(seed: int = 1, frames: int = 2000) -> tuple[Memory, int]:
    """A Memory of ``frames`` messages, each a LEB128 prefix written by the Writer and
    the payload by reference (``LengthPrefixed.encode``).

    Mostly 16..300 byte messages with a 16 KiB one every 50; returns the Memory
    and the message count.
    """
    rng = random.Random(seed)
    codec, w = LengthPrefixed("leb128", max_frame=1 << 20), Writer()
    for i in range(frames):
        n = 16 << 10 if i % 50 == 49 else rng.randint(16, 300)
        codec.encode(rng.randbytes(n), w)
    return w.take(), frames


@dataclass
class Traffic:
    """What the demo moved so far."""

    sent_frames: int = 0
    sent_bytes: int = 0
    frames: int = 0          # received by the server
    payload: int = 0         # payload bytes received by the server
    batches: int = 0
    acked: int = 0           # frames the client has seen acknowledged
    started: float = 0.0


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def status_line(t: Traffic, server: AllocatorStats, client: AllocatorStats | None) -> str:
    """One line of live figures (the plain display)."""
    dt = max(time.perf_counter() - t.started, 1e-9)
    line = (
        f"{dt:4.1f}s {t.frames:>10,} frames {t.frames / dt / 1e6:5.2f} M/s "
        f"{t.payload / dt / 1e6:6.1f} MB/s | server {_fmt_bytes(server.in_use)} in use, "
        f"{_fmt_bytes(server.reserved)} mapped"
    )
    if client is not None:
        line += f" | client {_fmt_bytes(client.in_use)}"
    return line


class _Display:
    """Live figures: a rich Live table if rich is installed, else one rewritten line."""

    def __init__(self, out: TextIO, use_rich: bool | None) -> None:
        self.out = out
        self.live: Any = None
        if use_rich is not False:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                pass                      # rich is optional (the bench extra): plain lines
            else:
                self.live = Live(console=Console(file=out), refresh_per_second=8, transient=False)
        self.tty = out.isatty()
        self.last_plain = 0.0

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
        elif self.tty:
            self.out.write("\n")

    def update(self, t: Traffic, server: AllocatorStats, client: AllocatorStats | None) -> None:
        if self.live is not None:
            self.live.update(_rich_table(t, server, client))
        elif self.tty:   # one rewritten line, never wider than the terminal
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.out.write("\r" + status_line(t, server, client)[:width].ljust(width))
            self.out.flush()
        elif time.perf_counter() - self.last_plain >= 1.0:   # a log, not a terminal
            self.last_plain = time.perf_counter()
            print(status_line(t, server, client), file=self.out, flush=True)


def _rich_table(t: Traffic, server: AllocatorStats, client: AllocatorStats | None) -> Any:
    from rich.table import Table

    dt = max(time.perf_counter() - t.started, 1e-9)
    table = Table(title=f"membuf loopback demo, {dt:.1f}s")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in (
        ("frames received", f"{t.frames:,}"),
        ("frames/s", f"{t.frames / dt / 1e6:.2f} M"),
        ("payload MB/s", f"{t.payload / dt / 1e6:.1f}"),
        ("batches", f"{t.batches:,}"),
        ("acknowledged", f"{t.acked:,}"),
    ):
        table.add_row(name, value)
    for who, st in (("server", server), ("client", client)):
        if st is not None:
            table.add_row(f"{who} in_use / peak", f"{_fmt_bytes(st.in_use)} / {_fmt_bytes(st.peak_in_use)}")
            table.add_row(f"{who} reserved", _fmt_bytes(st.reserved))
    return table


async def loopback_demo(
    seconds: float, out: TextIO = sys.stdout, use_rich: bool | None = None
) -> tuple[Traffic, AllocatorStats, AllocatorStats]:
    """Run the loopback exchange for ``seconds``; return traffic and final stats.

    Returns:
        (traffic, server allocator stats after close, client allocator stats after close)
    """
    server_alloc = Allocator()      # shared by every server connection
    traffic = Traffic()
    served = trio.Event()

    async def handler(conn: Connection) -> None:
        codec = LengthPrefixed("leb128", max_frame=1 << 20)
        ack = Writer()              # the reply per batch: its frame count as a LEB128
        try:
            async for batch in conn.reader.frames(codec, views=True, batch=True):
                traffic.frames += len(batch)
                traffic.payload += sum(map(len, batch))
                traffic.batches += 1
                ack.write_leb128(len(batch))
                await conn.send(ack.take())
        finally:
            served.set()

    block, per_block = make_block()
    client_stats: AllocatorStats | None = None
    with _Display(out, use_rich) as display:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, handler, 0, "127.0.0.1", server_alloc)
            port = listeners[0].socket.getsockname()[1]
            conn = await open_tcp("127.0.0.1", port)

            async def show() -> None:
                while True:
                    display.update(traffic, server_alloc.stats(), conn.allocator.stats())
                    await trio.sleep(0.125)

            async def read_acks() -> None:
                while True:
                    try:
                        traffic.acked += await conn.reader.read_leb128()
                    except IncompleteReadError:
                        return      # the server closed after our end of stream

            nursery.start_soon(show)
            traffic.started = time.perf_counter()
            async with conn, trio.open_nursery() as exchange:
                exchange.start_soon(read_acks)
                end = trio.current_time() + seconds
                while trio.current_time() < end:
                    await conn.send(block)        # gather send: prefix and payload segments
                    traffic.sent_frames += per_block
                    traffic.sent_bytes += len(block)
                await conn.send_eof()
            await served.wait()
            with trio.move_on_after(1.0):        # serve_tcp closes the connection next
                while server_alloc.stats().in_use:
                    await trio.sleep(0.01)
            client_stats = conn.allocator.stats()
            display.update(traffic, server_alloc.stats(), client_stats)
            nursery.cancel_scope.cancel()
    server_stats = server_alloc.stats()
    server_alloc.trim()
    return traffic, server_stats, client_stats


# -- part 3: an RTMP relay ---------------------------------------------------------------


@dataclass
class DemoPlayer:
    """A minimal RTMP player: handshake, connect/createStream/play, count what arrives."""

    name: str
    frames: list[int]
    ended: bool = False


def _command(*values: Any, csid: int = 3, stream_id: int = 0) -> bytes:
    return rtmp.encode_chunks(rtmp.COMMAND_AMF0, amf0.encode(*values), csid=csid,
                              stream_id=stream_id).to_bytes()


async def _rtmp_connect(port: int, commands: bytes, rcvbuf: int | None = None) -> Any:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(b"\x03" + bytes(rtmp.HANDSHAKE_SIZE))             # C0 + C1
    got = 0
    while got < 1 + 2 * rtmp.HANDSHAKE_SIZE:    # S0 + S1 + S2; nothing follows before C2
        got += len(await stream.receive_some(1 << 16))
    await stream.send_all(bytes(rtmp.HANDSHAKE_SIZE) + _command(
        "connect", 1.0, {"app": "live"}) + _command("createStream", 2.0, None) + commands)
    return stream


async def _play(port: int, player: DemoPlayer) -> None:
    stream = await _rtmp_connect(port, _command("play", 3.0, None, "demo", csid=8, stream_id=1))
    memory, chunks = Memory(), rtmp.ChunkReader(Allocator())
    reader = memory.reader()
    while data := await stream.receive_some(1 << 16):
        memory.push(data)
        while True:
            try:
                msg = chunks.read_message(reader)
            except NeedMore:
                break
            if msg.type == rtmp.VIDEO:
                player.frames.append(int.from_bytes(msg.view()[5:9], "big"))
            msg.body.recycle()
    player.ended = True
    await stream.aclose()


async def relay_demo(out: TextIO, frames: int = 60, size: int = 24 << 10) -> tuple[RtmpServer, list[DemoPlayer]]:
    """Publish ``frames`` video messages at 30/s; three players watch (see the module doc)."""
    server = RtmpServer(live=False, out=open(os.devnull, "w"),  # noqa: SIM115 (closed below)
                        limits=Limits(player_budget=256 << 10))
    waiting, joining = DemoPlayer("waiting", []), DemoPlayer("joins at frame 30", [])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run, 0)
        nursery.start_soon(_play, port, waiting)
        stalled = await _rtmp_connect(port, _command("play", 3.0, None, "demo", csid=8,
                                                     stream_id=1), rcvbuf=4096)
        while server.players < 2:
            await trio.sleep(0.01)
        pub = await _rtmp_connect(port, _command("publish", 3.0, None, "demo", "live", csid=5,
                                                 stream_id=1))
        for i in range(frames):
            if i == 30:
                nursery.start_soon(_play, port, joining)
            key = i % 15 == 0                    # a keyframe every half second
            body = bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + i.to_bytes(4, "big")
            await pub.send_all(rtmp.encode_chunks(rtmp.VIDEO, body + bytes(size), csid=6,
                                                  stream_id=1, timestamp=33 * i,
                                                  chunk_size=128).to_bytes())
            await trio.sleep(1 / 30)
        await pub.send_all(_command("deleteStream", 4.0, None, 1.0))
        while not (waiting.ended and joining.ended):
            await trio.sleep(0.01)
        await pub.aclose()
        await stalled.aclose()                  # the server drops what it still had queued
        while server.active or server.relays or server.allocator.stats().in_use:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    server.out.close()
    return server, [waiting, joining]


def print_relay(out: TextIO, server: RtmpServer, players: list[DemoPlayer], frames: int) -> bool:
    state = server.finished[-1]
    relay = state.relay
    assert relay is not None
    ok = players[0].frames == list(range(frames))
    first = players[1].frames[0] if players[1].frames else None
    ok = ok and first is not None and first % 15 == 0 and players[1].frames == list(
        range(first, frames))
    print(f"published {state.counts.frames} video frames; {relay.players} players:", file=out)
    print(f"  waiting before the publisher: {len(players[0].frames)} frames, all of them"
          if ok else f"  waiting player: {players[0].frames[:5]}... MISMATCH", file=out)
    print(f"  joined at frame 30: frames {first}..{frames - 1} (from the last keyframe)",
          file=out)
    print(f"  never reads: {relay.skipped} messages skipped (budget 256 KiB), nobody stalled",
          file=out)
    print(f"relayed {relay.messages} messages, {relay.bytes / 1e6:.1f} MB, payload copies:"
          f" {relay.payload_copies}; server allocator in use after:"
          f" {server.allocator.stats().in_use} B", file=out)
    return ok and relay.payload_copies == 0 and server.allocator.stats().in_use == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membuf demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="how long the loopback exchange runs (default 3)")
    parser.add_argument("--plain", action="store_true", help="no rich display even if installed")
    args = parser.parse_args(argv)
    a = allocator_walkthrough()
    s = a.stats()
    print(f"\nevery byte freed: in_use={s.in_use}, reserved={s.reserved}")

    print(f"\nmembuf loopback: LEB128 frames over trio TCP for {args.seconds:g}s "
          "(server: frames(codec, views=True, batch=True); client: gather send)\n")
    traffic, server, client = trio.run(loopback_demo, args.seconds, sys.stdout,
                                       False if args.plain else None)
    dt = max(time.perf_counter() - traffic.started, 1e-9)
    ok = traffic.frames == traffic.sent_frames == traffic.acked
    print(f"\n{traffic.frames:,} frames ({_fmt_bytes(traffic.payload)} of payload) in "
          f"{traffic.batches:,} batches; sent {traffic.sent_frames:,}, acknowledged "
          f"{traffic.acked:,}: {'all there' if ok else 'MISMATCH'}")
    print(f"about {traffic.frames / dt / 1e6:.2f} M frames/s, {traffic.payload / dt / 1e6:.0f} MB/s "
          "(server and client share one thread here)\n")
    print("allocators after the connections closed:\n")
    print(stats_table([("server", server), ("client", client)]))
    print("\nmembuf relay: serve-rtmp fans one live stream out to three players (2 s)\n")
    frames = 60
    rtmp_server, players = trio.run(relay_demo, sys.stdout, frames)
    relayed = print_relay(sys.stdout, rtmp_server, players, frames)
    freed = s.in_use == 0 and server.in_use == 0 and client.in_use == 0
    freed = freed and rtmp_server.allocator.stats().in_use == 0
    print(f"\nevery byte freed: {'yes' if freed else 'NO'} "
          f"(server in_use={server.in_use}, client in_use={client.in_use}, relay in_use="
          f"{rtmp_server.allocator.stats().in_use})")
    return 0 if freed and ok and relayed else 1
