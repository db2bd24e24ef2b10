"""The ingest servers against hostile peers, over real loopback TCP (docs/design.md §12).

Each test is one attack that was reproduced on the servers before they had
limits, with the figure it produced then:

* AV1 padding: 512 x 1 MiB padding OBUs were copied into one temporal unit
  (513 MiB in use while the client idled);
* an idle RTMP publisher pinned its ring, 64 slots of up to 16 MiB (1 GiB);
* 200 connections x 60 partial messages held 46.9 MiB for 1.6 MiB sent (29x);
* 1 MiB of 1-byte fmt-3 headers (empty messages) took 21.7 s of server CPU,
  and a new client's handshake waited 5.4 s meanwhile;
* 500 connections stalled in the RTMP handshake were still open after 15 s;
* the server allocator had no cap, so one connection could take everything.

Every test drives a server in this process with small limits, sequences its
phases on what the server reports (never on sleeps), and ends with the
allocator back to ``in_use == 0`` and the server still serving a
well-behaved client whose every frame is counted. No timing assertions:
the timeout tests wait (bounded) until the server closes the connection.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import trio
from media_fixtures import (
    RTMP_HANDSHAKE,
    TEMPORAL_DELIMITER,
    VIDEO,
    av1_stream,
    avc_frame,
    leb128,
    obu,
    rtmp_command,
    rtmp_handshake,
    rtmp_header,
    rtmp_publish,
    rtmp_video,
    run_server,
    until_closed,
    wait_for,
)

from membuf import Allocator
from membuf.media.limits import Limits
from membuf.media.servers import Av1Server, IngestServer, RtmpServer

TIMEOUT = 60
MiB = 1 << 20


def make(cls: type[IngestServer], **limits: Any) -> IngestServer:
    return cls(live=False, json_out=True, out=io.StringIO(), limits=Limits(**limits))


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def good_publisher(port: int, name: str, frames: int, size: int = 1000) -> None:
    """Publish ``frames`` AVC frames of ``size`` bytes and unpublish."""
    s = await connect(port)
    async with s:
        await rtmp_publish(s, name)
        for i in range(frames):
            await s.send_all(rtmp_video(avc_frame(i, size), ts=40 * i))
        await s.send_all(rtmp_command("deleteStream", 4.0, None, 1.0))
        await s.send_eof()
        await until_closed(s)


def assert_good_stream(server: IngestServer, key: str, frames: int) -> None:
    done = [s for s in server.finished if s.key == key]
    assert len(done) == 1 and done[0].error is None, [s.summary() for s in done]
    assert done[0].summary()["video_frames"] == frames


# -- AV1: a temporal unit that never ends ------------------------------------------------


def test_av1_padding_obus_cannot_grow_a_temporal_unit_without_bound() -> None:
    server = make(Av1Server, max_obu=1 * MiB, max_temporal_unit=4 * MiB)
    pad = obu(15, bytes(MiB - 8))   # padding OBUs just under max_obu
    sent = 0

    async def body(port: int) -> None:
        nonlocal sent
        s = await connect(port)
        async with s:
            try:
                await s.send_all(TEMPORAL_DELIMITER)
                for _ in range(16):          # 16 MiB of padding in one temporal unit
                    await s.send_all(pad)
                    sent += len(pad)
            except trio.BrokenResourceError:
                pass                         # dropped mid-send: the point
            await until_closed(s)
        await wait_for(lambda: server.errors)
        c = await connect(port)              # the server still serves a well-behaved peer
        async with c:
            await c.send_all(av1_stream(30))
            await c.send_eof()
            await until_closed(c)

    run_server(server, body)
    assert "--max-temporal-unit" in server.errors[0]
    # the unit's cap, plus what the receive side holds: the OBU being copied (pinned by
    # its views), the next one arriving, a receive chunk, each at most max_buffered
    # (measured: 7.0 MiB in all); the 16 MiB sent are far above this bound
    assert server.allocator.stats().peak_in_use <= 4 * MiB + 4 * server.max_buffered
    assert server.finished[-1].summary() == {"format": "obu", "obus": 61, "temporal_units": 30,
                                             "frames": 30}
    assert server.finished[-1].error is None


# -- RTMP ring: bounded in bytes --------------------------------------------------------


def test_rtmp_ring_is_bounded_in_bytes_not_slots() -> None:
    server = make(RtmpServer, ring_bytes=2 * MiB)   # 64 slots by default
    held: list[int] = []

    async def body(port: int) -> None:
        s = await connect(port)
        async with s:
            await rtmp_publish(s, "big")
            for i in range(32):                     # 32 x 256 KiB frames = 8 MiB
                await s.send_all(rtmp_video(avc_frame(i, 256 << 10), ts=i, chunk_size=128))
            await wait_for(lambda: server.active and
                           server.active["live/big"].frames == 32)
            ring = server.active["live/big"].ring
            held.extend([len(ring), ring.bytes, server.allocator.stats().in_use])
            await s.send_all(rtmp_command("deleteStream", 4.0, None, 1.0))
            await s.send_eof()
            await until_closed(s)

    run_server(server, body)
    frames, ring_bytes, in_use = held
    assert (frames, ring_bytes) == (8, 8 * (256 << 10))   # the newest 8 frames: 2 MiB
    assert in_use <= 2 * MiB + server.max_buffered   # the ring plus at most a receive buffer
    assert_good_stream(server, "live/big", 32)


# -- RTMP partial messages ----------------------------------------------------------------


def partial_messages(count: int, announce: int, payload: int) -> bytes:
    """``count`` messages of ``announce`` bytes on chunk streams 6.., each with ``payload``."""
    return b"".join(rtmp_header(0, 6 + k, 0, announce, VIDEO, 1) + bytes(payload)
                    for k in range(count))


def test_rtmp_partial_messages_hold_what_was_sent_not_what_was_announced() -> None:
    server = make(RtmpServer)
    sent = 0
    held = []

    async def body(port: int) -> None:
        nonlocal sent
        conns = []
        for i in range(20):
            s = await connect(port)
            await rtmp_publish(s, f"p{i}")
            data = partial_messages(56, 4 * MiB - 1, 128)   # chunk streams 6..61
            await s.send_all(data)
            sent += len(data) + 1 + 2 * RTMP_HANDSHAKE
            conns.append(s)
        await wait_for(lambda: len(server.active) == 20 and
                       server.allocator.stats().in_use >= 20 * 56 * 128)
        held.append(server.allocator.stats().in_use)
        for s in conns:
            await s.aclose()

    run_server(server, body)
    assert held[0] <= 2 * sent, f"{held[0]} bytes held for {sent} sent"
    assert all("RTMP message" in e for e in server.errors)   # each ended inside a message


def test_rtmp_partial_message_budget_drops_only_that_connection() -> None:
    server = make(RtmpServer, max_message=1 * MiB, max_partial=2 * MiB)

    async def body(port: int) -> None:
        hog = await connect(port)
        async with hog:
            await rtmp_publish(hog, "hog")
            try:   # three messages of 1 MiB, 900 KiB of each: 2.7 MiB in part
                for k in range(3):
                    head = rtmp_header(0, 6 + k, 0, MiB, VIDEO, 1)
                    chunks = [head, bytes(128)] + [rtmp_header(3, 6 + k) + bytes(128)] * 7199
                    await hog.send_all(b"".join(chunks))
            except trio.BrokenResourceError:
                pass
            await until_closed(hog)
        await good_publisher(port, "good", 20)

    run_server(server, body)
    assert len(server.errors) == 1 and "max_partial=2097152" in server.errors[0]
    assert_good_stream(server, "live/good", 20)


# -- RTMP: floods of empty messages and tiny chunks ---------------------------------------


def test_rtmp_flood_of_empty_messages_is_closed_after_the_allowance() -> None:
    server = make(RtmpServer, item_allowance=1000, min_chunk_bytes=16)

    async def body(port: int) -> None:
        s = await connect(port)
        async with s:
            await rtmp_publish(s, "flood")
            try:  # a zero-length video message, then 1 MiB of 1-byte headers: a message each
                await s.send_all(rtmp_header(0, 6, 0, 0, VIDEO, 1) + b"\xc6" * MiB)
            except trio.BrokenResourceError:
                pass
            await until_closed(s)
        await good_publisher(port, "good", 10)

    run_server(server, body)
    assert len(server.errors) == 1 and "RTMP flood" in server.errors[0]
    # the work done was bounded by the bytes: at most the allowance + 1 chunk per 16 bytes
    words = server.errors[0].split("RTMP flood: ")[1].split()
    chunks, seen = words[0], words[3]
    assert int(chunks) <= 1000 + int(seen) // 16 + 1 and int(seen) < 16 << 10
    assert_good_stream(server, "live/good", 10)


class StepWatcher(trio.abc.Instrument):
    """The most video frames the server counted during any one task step (between two
    checkpoints of that task): what one connection can keep the others waiting for."""

    def __init__(self, server: IngestServer) -> None:
        self.server = server
        self.before = 0
        self.most = 0

    def frames(self) -> int:
        return (sum(s.frames for s in self.server.active.values())
                + sum(s.frames for s in self.server.finished))

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.before = self.frames()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.most = max(self.most, self.frames() - self.before)


def test_rtmp_many_small_messages_let_other_connections_run() -> None:
    """Within the average-size rule a peer can still send many small messages; the server
    parses at most ``pause_every`` chunks between two checkpoints of that connection."""
    server = make(RtmpServer, pause_every=64)
    watcher = StepWatcher(server)
    frames = 20000

    async def body(port: int) -> None:
        trio.lowlevel.add_instrument(watcher)
        try:
            s = await connect(port)
            async with s:
                await rtmp_publish(s, "small")
                # one 24-byte frame, then fmt-3 headers of more such messages: 25 bytes each
                one = avc_frame(0, 24)
                await s.send_all(rtmp_video(one) + (rtmp_header(3, 6) + one) * (frames - 1))
                await s.send_all(rtmp_command("deleteStream", 4.0, None, 1.0))
                await s.send_eof()
                await until_closed(s)
        finally:
            trio.lowlevel.remove_instrument(watcher)

    run_server(server, body)
    assert_good_stream(server, "live/small", frames)
    assert 0 < watcher.most <= 64


# -- handshake and idle timeouts -----------------------------------------------------------


def test_stalled_rtmp_handshakes_are_closed() -> None:
    server = make(RtmpServer, handshake_timeout=0.5, idle_timeout=30)

    async def stall(port: int, data: bytes) -> None:
        s = await connect(port)
        async with s:
            await s.send_all(data)
            await until_closed(s)

    async def slowloris(port: int) -> None:
        """Sends a byte every 50 ms: activity, but no handshake ever completes."""
        s = await connect(port)
        async with s:
            try:
                for _ in range(10_000):
                    await s.send_all(b"\x03")
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                pass

    async def body(port: int) -> None:
        async with trio.open_nursery() as n:
            for i in range(50):
                n.start_soon(stall, port, b"\x03" + bytes(i * 20))   # inside C0/C1
            n.start_soon(stall, port, b"")                           # connects, says nothing
            n.start_soon(slowloris, port)

            async def handshake_only() -> None:   # completes the handshake, never publishes
                s = await connect(port)
                async with s:
                    await rtmp_handshake(s)
                    await until_closed(s)

            n.start_soon(handshake_only)
        await good_publisher(port, "good", 5)

    run_server(server, body)
    assert len(server.errors) == 53
    assert all("handshake timeout" in e and "--handshake-timeout" in e for e in server.errors)
    assert_good_stream(server, "live/good", 5)


@pytest.mark.parametrize("cls", [RtmpServer, Av1Server])
def test_idle_connection_is_closed_and_its_memory_freed(cls: type[IngestServer]) -> None:
    server = make(cls, idle_timeout=0.5)
    during: list[int] = []

    async def body(port: int) -> None:
        s = await connect(port)
        async with s:
            if cls is RtmpServer:   # publish, then half a message, then nothing
                await rtmp_publish(s, "idle")
                await s.send_all(rtmp_video(avc_frame(1, 5000))[:3000])
            else:                   # a stream, then half an OBU, then nothing
                await s.send_all(av1_stream(3) + obu(6, bytes(5000))[:3000])
            await wait_for(lambda: server.active and server.allocator.stats().in_use)
            during.append(server.allocator.stats().in_use)
            await until_closed(s)     # the server hangs up: the test waits, bounded

    run_server(server, body)
    assert during[0] > 0 and len(server.errors) == 1
    assert "idle timeout" in server.errors[0] and "--idle-timeout" in server.errors[0]
    assert "idle timeout" in (server.finished[-1].error or "")


def test_av1_peer_that_sends_no_obu_is_closed_at_the_handshake_timeout() -> None:
    server = make(Av1Server, handshake_timeout=0.5)

    async def body(port: int) -> None:
        s = await connect(port)
        async with s:
            await s.send_all(obu(6, bytes(100))[:50])   # half an OBU, never the rest
            await until_closed(s)

    run_server(server, body)
    assert len(server.errors) == 1 and "handshake timeout" in server.errors[0]


# -- work per byte on AV1 ----------------------------------------------------------------


def test_av1_flood_of_tiny_obus_is_closed_after_the_allowance() -> None:
    server = make(Av1Server, item_allowance=1000, min_obu_bytes=4)

    async def body(port: int) -> None:
        s = await connect(port)
        async with s:
            try:   # empty padding OBUs: 2 bytes each
                await s.send_all(TEMPORAL_DELIMITER + obu(15, b"") * (MiB // 2))
            except trio.BrokenResourceError:
                pass
            await until_closed(s)
        c = await connect(port)
        async with c:
            await c.send_all(av1_stream(10))
            await c.send_eof()
            await until_closed(c)

    run_server(server, body)
    assert len(server.errors) == 1 and "AV1 flood" in server.errors[0]
    assert server.finished[-1].summary()["frames"] == 10


# -- the process-wide memory cap -----------------------------------------------------------


def test_rtmp_connection_over_the_memory_cap_is_dropped_and_the_others_go_on() -> None:
    server = make(RtmpServer, max_memory=6 * MiB, max_message=4 * MiB, max_partial=16 * MiB)
    assert server.allocator.stats() is not None

    async def body(port: int) -> None:
        good = await connect(port)
        async with good:
            await rtmp_publish(good, "good")
            for i in range(10):
                await good.send_all(rtmp_video(avc_frame(i, 1000), ts=i))
            await wait_for(lambda: "live/good" in server.active
                           and server.active["live/good"].frames == 10)
            hog = await connect(port)
            async with hog:
                await rtmp_publish(hog, "hog")
                try:   # partial 4 MiB messages until the cap refuses one
                    for k in range(4):
                        head = rtmp_header(0, 6 + k, 0, 4 * MiB - 1, VIDEO, 1) + bytes(128)
                        await hog.send_all(head + (rtmp_header(3, 6 + k) + bytes(128)) * 30000)
                except trio.BrokenResourceError:
                    pass
                await until_closed(hog)
            assert server.errors and "memory cap" in server.errors[0]
            for i in range(10, 20):
                await good.send_all(rtmp_video(avc_frame(i, 1000), ts=i))
            await good.send_all(rtmp_command("deleteStream", 4.0, None, 1.0))
            await good.send_eof()
            await until_closed(good)

    run_server(server, body)
    assert len(server.errors) == 1 and "max_bytes=6291456" in server.errors[0]
    assert_good_stream(server, "live/good", 20)
    hog = [s for s in server.finished if s.key == "live/hog"]
    assert hog and "memory cap reached (--max-memory 6 MiB)" in (hog[0].error or "")


def test_av1_connection_over_the_memory_cap_is_dropped_and_the_others_go_on() -> None:
    server = make(Av1Server, max_memory=2 * MiB, max_obu=4 * MiB)

    async def body(port: int) -> None:
        hog = await connect(port)
        async with hog:
            try:   # one 3 MiB OBU: the receive buffer cannot hold it under a 2 MiB cap
                await hog.send_all(TEMPORAL_DELIMITER + obu(6, bytes(3 * MiB)))
            except trio.BrokenResourceError:
                pass
            await until_closed(hog)
        c = await connect(port)
        async with c:
            await c.send_all(av1_stream(20))
            await c.send_eof()
            await until_closed(c)

    run_server(server, body)
    assert len(server.errors) == 1 and "memory cap" in server.errors[0]
    assert server.finished[-1].summary()["frames"] == 20 and server.finished[-1].error is None


def test_default_server_allocator_is_capped_at_max_memory() -> None:
    server = make(RtmpServer, max_memory=64 * MiB)
    with pytest.raises(MemoryError):
        server.allocator.malloc(65 * MiB)
    given = Allocator()
    assert RtmpServer(allocator=given, live=False).allocator is given


# -- connections -------------------------------------------------------------------------


def test_connections_over_max_connections_are_closed_at_once() -> None:
    server = make(RtmpServer, max_connections=3)

    async def body(port: int) -> None:
        held = [await connect(port) for _ in range(3)]
        for s in held:
            await s.send_all(b"\x03")          # each is inside its handshake
        await wait_for(lambda: server.open_connections == 3)
        extra = await connect(port)
        async with extra:
            assert await until_closed(extra) == 0   # closed without a byte
        for s in held:
            await s.aclose()
        await wait_for(lambda: server.open_connections == 0)
        await good_publisher(port, "good", 3)

    run_server(server, body)
    assert server.refused == 1
    assert_good_stream(server, "live/good", 3)


def test_limits_refuse_values_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        Limits(idle_timeout=0)
    with pytest.raises(TypeError, match="max_memory must be an int, got float"):
        Limits(max_memory=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        Limits(max_connections=True)
    with pytest.raises(ValueError, match="max_temporal_unit"):
        Limits(max_obu=8 * MiB, max_temporal_unit=4 * MiB)
    with pytest.raises(ValueError, match="max_partial"):
        Limits(max_message=8 * MiB, max_partial=4 * MiB)
    with pytest.raises(ValueError, match="2\\*\\*62"):
        Limits(max_memory=2**64)
    assert leb128(300) == b"\xac\x02"
