"""Bounded service under memory pressure, over real loopback TCP (docs/design.md §6).

``serve_tcp(handler, port, allocator=Allocator(max_bytes=...))``: every
connection shares one capped allocator. A greedy client sends frames that
its handler retains (``read_frame``) until the allocator cannot give the
connection another receive chunk. Then:

* that connection gets ``MemoryLimitError``, is closed, and the reason is
  logged (logger ``membuf.stream``, with the exception);
* the other connections, idle and open while it happened, keep working:
  every frame they echo comes back intact (checked byte for byte);
* the memory is reusable: once the greedy handler is gone its bytes are
  free again, a fresh malloc of half the cap succeeds, and new connections
  work; at the end the allocator holds nothing and passes ``check()``.

Phases are sequenced with trio events rather than sleeps, so the test has no
timing assertions: which connection exhausts the cap is deterministic.
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import membuf
from membuf import Allocator, Connection, MemoryLimitError, _core
from membuf import reader as reader_module
from membuf.codecs import Delimited, LengthPrefixed

CAP = 1 << 20                 # max_bytes for the whole service
GREEDY, ECHO = b"G", b"E"


async def handler(conn: Connection) -> None:
    """``G``: retain every frame (a leak by design); ``E``: echo length-prefixed frames."""
    rx = conn.reader
    kind = bytes([await rx.read_byte()])
    if kind == GREEDY:
        kept = []
        while True:
            n = await rx.read_be(4)
            kept.append(await rx.read_frame(n))        # retained: owns its bytes
    while True:
        try:
            n = await rx.read_be(4)
        except membuf.IncompleteReadError:
            return                                     # the client hung up between frames
        body = await rx.read_exactly(n)
        await conn.send(membuf.Memory(n.to_bytes(4, "big"), *body))
        # echoed: let go of it. A zero-copy result pins its receive chunk for as long
        # as it is held, and this loop would otherwise hold it across the next wait.
        del body


async def echo_round(stream: trio.SocketStream, rng: random.Random, frames: int) -> None:
    """Send ``frames`` random frames and check each comes back exactly."""
    for _ in range(frames):
        body = rng.randbytes(rng.randint(0, 3000))
        await stream.send_all(len(body).to_bytes(4, "big") + body)
        want = len(body).to_bytes(4, "big") + body
        got = b""
        while len(got) < len(want):
            piece = await stream.receive_some(len(want) - len(got))
            assert piece, "the echo connection was closed under pressure"
            got += piece
        assert got == want


async def flood(port: int) -> int:
    """Greedy client: send 32 KiB frames until the server closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sent = 0
    body = b"g" * (32 << 10)
    try:
        await stream.send_all(GREEDY)
        while sent < 64 * CAP:                          # bounded: the cap is hit long before
            await stream.send_all(len(body).to_bytes(4, "big") + body)
            sent += len(body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    else:
        raise AssertionError("the greedy connection was never cut off")
    finally:
        await trio.aclose_forcefully(stream)
    return sent


class Reasons(logging.Handler):
    """Keep the message, exception type and text of each record, never the record or the
    exception: its traceback would keep the failed handler's frame, and so the frames it
    retained, alive (pytest's caplog keeps records, which is why propagation is cut)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[tuple[str, type[BaseException] | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.seen.append((record.getMessage(), type(exc) if exc else None, str(exc)))


def test_connection_out_of_memory_is_closed_and_others_keep_running() -> None:
    log = logging.getLogger("membuf.stream")
    reasons = Reasons()
    log.addHandler(reasons)
    log.propagate = False          # pytest's own capture handler keeps records too
    try:
        run_pressure()
    finally:
        log.removeHandler(reasons)
        log.propagate = True
    assert len(reasons.seen) == 1, reasons.seen
    message, kind, text = reasons.seen[0]
    assert kind is MemoryLimitError, (kind, text)
    assert f"max_bytes={CAP}" in text
    assert "connection closed" in message


def run_pressure() -> None:
    a = Allocator(arena_size=64 << 10, max_arena_size=256 << 10, max_bytes=CAP)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                membuf.serve_tcp, handler, 0, "127.0.0.1", a,
            )
            port = listeners[0].socket.getsockname()[1]
            rng = random.Random(7)

            echoes = []
            for _ in range(4):                          # open, and proven working
                s = await trio.open_tcp_stream("127.0.0.1", port)
                await s.send_all(ECHO)
                await echo_round(s, rng, 10)
                echoes.append(s)

            sent = await flood(port)                    # cut off by MemoryLimitError
            assert sent > 0

            # the greedy handler is gone: its chunks and retained frames are free again
            # (and the idle echo handlers hold nothing: each dropped its last body)
            with trio.fail_after(30):
                while True:
                    gc.collect()
                    if a.stats().in_use == 0:
                        break
                    await trio.sleep(0.01)
            half = a.malloc(CAP // 2)                   # memory is reusable
            a.free(half)

            for s in echoes:                            # the others kept running
                await echo_round(s, rng, 20)
            late = await trio.open_tcp_stream("127.0.0.1", port)
            await late.send_all(ECHO)
            await echo_round(late, rng, 20)             # and new connections work
            for s in [*echoes, late]:
                await s.aclose()
            with trio.fail_after(30):
                while a.stats().in_use:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    gc.collect()
    s = a.stats()
    assert s.in_use == 0 and s.pinned == 0 and s.reserved <= CAP and s.failed >= 1
    a.check()


def test_read_over_max_buffered_is_malformed_not_out_of_memory() -> None:
    """A frame bigger than a connection's max_buffered is refused before any memory is spent."""
    a = Allocator(max_bytes=CAP)
    outcome: list[BaseException] = []

    async def big_frame(conn: Connection) -> None:
        try:
            await conn.reader.read_exactly(4 * CAP)
        except membuf.MalformedError as exc:
            outcome.append(exc)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                membuf.serve_tcp, big_frame, 0, "127.0.0.1", a,
            )
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"x" * 1000)
            assert await stream.receive_some(10) == b""  # the handler returned: closed
            await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert len(outcome) == 1 and "max_buffered" in str(outcome[0])
    assert a.stats().in_use == 0 and a.stats().failed == 0


def work_meter(codec: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Segment visits from now on: the compiled core counts the segments its framers scan
    and its searches walk (``membuf._core.segment_visits()``); under MEMBUF_PURE_PYTHON the
    reference's frame attempts and the segments handed to its search are counted."""
    if membuf.COMPILED:
        start = _core.segment_visits()
        return lambda: _core.segment_visits() - start
    work = 0
    attempt, search = type(codec)._frame, reader_module.find_in

    def counting_attempt(self: Any, r: Any) -> Any:
        nonlocal work
        work += 1
        return attempt(self, r)

    def counting_search(segs: list[memoryview], i: int, *rest: Any) -> int:
        nonlocal work
        work += len(segs) - i             # the segments this search may walk
        return search(segs, i, *rest)

    monkeypatch.setattr(type(codec), "_frame", counting_attempt)
    monkeypatch.setattr(reader_module, "find_in", counting_search)
    return lambda: work


@pytest.mark.parametrize("codec", [
    LengthPrefixed("be32", max_frame=1 << 20),
    Delimited(b"\r\n", max_frame=1 << 20),
], ids=["be32", "delimited"])
def test_dribbled_frame_costs_linear_work(codec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile peer sends one frame one byte per packet, so every receive is a 1-byte
    segment and ``frames()`` tries to split after each one. The server's work must grow
    linearly with the frame, not with its square. Counted, not timed: native segment
    scans plus the segments walked by the delimiter search (reached through
    ``Reader.read_until``): see ``work_meter``.

    Found by this test: every attempt walked every buffered 1-byte segment again, so
    a 16,000-byte CRLF line dribbled through ``frames(Delimited)`` cost 35 s of server CPU
    and a 24,000-byte one 172 s (a 64 KiB line, Delimited's default max_frame, about 20
    minutes). Fixed by coalescing dribbled items in StreamReader and a resume memo in
    ``Reader.read_until``. The 256-byte chunk makes a 900-byte line long enough to show it.
    """
    work = work_meter(codec, monkeypatch)
    n = 900
    data = (n.to_bytes(4, "big") + b"x" * n if isinstance(codec, LengthPrefixed)
            else b"x" * n + b"\r\n")
    got: list[int] = []

    async def main() -> None:
        send, recv = trio.testing.memory_stream_one_way_pair()
        rx = membuf.StreamReader(recv, chunk_size=256, max_buffered=1 << 16)

        async def dribble() -> None:
            for i in range(len(data)):
                await send.send_all(data[i : i + 1])
                await trio.testing.wait_all_tasks_blocked()   # one byte per receive
            await send.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            async for frame in rx.frames(codec):
                got.append(len(frame))
        await rx.aclose()

    trio.run(main)
    assert got == [n]
    assert work() <= 16 * len(data), f"{work()} segment visits for a {len(data)}-byte frame"


@pytest.mark.parametrize("codec", [
    LengthPrefixed("be32", max_frame=1 << 20),
    Delimited(b"\r\n", max_frame=1 << 20),
], ids=["be32", "delimited"])
def test_codec_over_one_byte_segments_costs_linear_work(
    codec: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same without a StreamReader: a Memory that grows one 1-byte segment at a time
    (as a hand-written receive loop would make it) and ``split`` after every push. Before
    ``Reader``'s resume memo, each attempt searched every buffered segment again:
    182,103 segment visits for this 602-byte line, 7.5 s for a 2,000-byte one."""
    work = work_meter(codec, monkeypatch)
    n = 600
    data = (n.to_bytes(4, "big") + b"x" * n if isinstance(codec, LengthPrefixed)
            else b"x" * n + b"\r\n")
    mem = membuf.Memory()
    r = membuf.Reader(mem)
    frames = 0
    for i in range(len(data)):
        mem.push(data[i : i + 1])
        frames += len(codec.split(r))
    assert frames == 1
    assert work() <= 16 * len(data), f"{work()} segment visits for a {len(data)}-byte frame"


def _rtmp_first_chunks(streams: int, length: int) -> bytes:
    """The first 128-byte chunk of a ``length``-byte video message on each of ``streams``
    chunk streams (fmt 0 headers, csid 3 and up)."""
    out = b""
    for csid in range(3, 3 + streams):
        out += bytes([csid]) + bytes(3) + length.to_bytes(3, "big") + b"\x09" + bytes(4)
        out += b"p" * 128
    return out


def test_rtmp_peer_cannot_reserve_far_more_than_it_sent() -> None:
    """A peer that opens 61 chunk streams, each with the first 128 bytes of a 16 MiB
    message, made ``ChunkReader`` (which malloc'd each whole message at its first header)
    hold 976 MiB of native memory for 8.5 KiB sent; servers.py gives each connection its
    own uncapped allocator. Memory held must stay proportional to bytes received (message
    buffers now grow as payload arrives)."""
    from membuf.media import rtmp

    a = Allocator()
    cr = rtmp.ChunkReader(a)
    data = _rtmp_first_chunks(61, 0xFFFFFF)
    r = membuf.Reader.from_bytes(data)
    with pytest.raises(membuf.NeedMore):
        while True:
            cr.read_message(r)
    held = a.stats().in_use
    cr.close()
    assert held <= 64 * len(data) + (1 << 20), f"{held >> 20} MiB held for {len(data)} bytes"


def test_rtmp_payload_refused_for_memory_changes_nothing() -> None:
    """When the message buffer cannot grow (MemoryLimitError), nothing of the chunk payload
    is consumed and the chunk stream is unchanged, so the same call fails the same way again;
    once memory is available the message completes intact."""
    from membuf.media import rtmp

    a = Allocator(arena_size=64 << 10, max_arena_size=64 << 10, max_bytes=64 << 10)
    cr = rtmp.ChunkReader(a)
    cr.chunk_size = 1 << 20                     # the whole message arrives in one chunk
    length = 100 << 10
    hog = a.malloc(60 << 10)
    data = bytes([3]) + bytes(3) + length.to_bytes(3, "big") + b"\x09" + bytes(4) + b"p" * length
    r = membuf.Reader.from_bytes(data)
    for _ in range(2):
        with pytest.raises(MemoryLimitError):
            cr.read_message(r)
        assert r.offset == 12 and cr.pending() == 0 and a.stats().in_use == 60 << 10
    a.free(hog)
    a.trim()
    with pytest.raises(MemoryLimitError):       # still over the cap: 100 KiB > 64 KiB
        cr.read_message(r)
    cr.max_message = length
    cr.close()
    assert a.stats().in_use == 0
    big = Allocator()
    cr = rtmp.ChunkReader(big)
    cr.chunk_size = 1 << 20
    msg = cr.read_message(membuf.Reader.from_bytes(data))
    assert msg.body.to_bytes() == b"p" * length and msg.body.count == 1
    msg.body.recycle()
    cr.close()
    assert big.stats().in_use == 0
