"""StreamReader over real loopback TCP and over trio memory streams (docs/design.md §6).

Every test runs real sockets or trio's in-memory streams (no mocks): data is
split at random points and dribbled in pieces of 1 byte to 64 KiB, reads are
cancelled and retried, streams end mid-read, and every test checks that the
allocator is back to ``in_use == 0`` (and ``pinned == 0``) once everything is
closed and the test has dropped the views it kept; while it holds them,
``in_use == pinned`` covers exactly the chunks they view. No timing
assertions; the idle-trim test runs on trio's autojump clock.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import membuf
from membuf import Allocator, IncompleteReadError, MalformedError, _core
from membuf.memory import Memory
from membuf.stream import StreamReader, send_memory


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an ``async def`` test under ``trio.run`` (no plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_frames(seed: int, count: int, big: bool = True) -> list[bytes]:
    """Seeded payloads: mostly small, some around and above chunk size."""
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, rng.randint(2, 300), rng.randint(300, 5000)]) for _ in range(count)]
    if big:
        sizes[count // 3] = 70_000     # bigger than a 64 KiB chunk
        sizes[count // 2] = 16 << 10   # exactly a chunk
    return [rng.randbytes(n) for n in sizes]


def encode(frames: list[bytes]) -> bytes:
    return b"".join(leb128(len(f)) + f for f in frames)


@asynccontextmanager
async def loopback() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """A connected (server side, client side) pair of real TCP streams on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.testing.open_stream_to_socket_listener(listeners[0])
    server = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(server, trio.SocketStream) and isinstance(client, trio.SocketStream)
    try:
        yield server, client
    finally:
        await server.aclose()
        await client.aclose()


async def dribble(
    stream: trio.abc.SendStream, data: bytes, seed: int, max_piece: int = 64 << 10,
    eof: bool = True,
) -> None:
    """Send ``data`` in random pieces (1 byte .. max_piece), yielding often so the
    reader sees the splits."""
    rng = random.Random(seed)
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        n = rng.choice([1, rng.randint(1, 16), rng.randint(1, 4096), rng.randint(1, max_piece)])
        await stream.send_all(view[pos : pos + n])
        pos += n
        if rng.random() < 0.5:
            await trio.sleep(0)
    if eof and isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()


def memory_pair_1byte() -> tuple[trio.abc.SendStream, trio.abc.ReceiveStream]:
    """trio.testing.memory_stream_pair, pumped one byte per receive."""
    left, right = trio.testing.memory_stream_pair()
    send, recv = left.send_stream, right.receive_stream
    assert isinstance(send, trio.testing.MemorySendStream)
    assert isinstance(recv, trio.testing.MemoryReceiveStream)
    send.send_all_hook = None  # data moves only when the reader asks: one byte a time
    send.close_hook = None

    async def pump() -> None:
        trio.testing.memory_stream_pump(send, recv, max_bytes=1)

    recv.receive_some_hook = pump
    return send, recv


async def send_quietly(stream: trio.abc.SendStream, data: bytes) -> None:
    """send_all that shrugs off the reader closing first (tests that stop early)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def read_all_frames(rx: StreamReader, expected: list[bytes]) -> None:
    for want in expected:
        n = await rx.read_leb128()
        assert n == len(want)
        got = await rx.read_exactly(n)
        assert got == want


def chunk_bytes(*held: Any) -> int:
    """The bytes of the distinct receive chunks that ``held`` views point into.

    ``held``: memoryviews, or Memory objects (their segments), or lists of either.
    A zero-copy result pins its whole chunk(s), so once the reader is closed this
    is exactly what ``Allocator.stats().pinned`` (and ``in_use``) must be.
    """
    chunks: dict[int, int] = {}

    def visit(x: Any) -> None:
        if isinstance(x, memoryview):
            if not len(x) and not isinstance(x.obj, _core.Chunk):
                return                      # an empty frame may view nothing at all
            assert isinstance(x.obj, _core.Chunk), f"not a view of a chunk: {x.obj!r}"
            chunks[id(x.obj)] = x.obj.nbytes
        elif isinstance(x, (list, tuple, Memory)):
            for y in x:
                visit(y)

    for x in held:
        visit(x)
    return sum(chunks.values())


def assert_only_held(alloc: Allocator, *held: Any) -> None:
    """The reader is closed: what is still in use is pinned by ``held`` and nothing else."""
    s = alloc.stats()
    assert s.in_use == s.pinned == chunk_bytes(*held), s


def assert_all_back(alloc: Allocator) -> None:
    """Nothing in use and nothing pinned (call once every view has been dropped)."""
    s = alloc.stats()
    assert (s.in_use, s.pinned) == (0, 0), s


# -- reads over real TCP -------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@trio_test
async def test_dribbled_frames_read_exactly(seed: int) -> None:
    frames = make_frames(seed, 300)
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(dribble, client, encode(frames), seed)
        rx = StreamReader(server, chunk_size=4096, max_buffered=1 << 20)
        await read_all_frames(rx, frames)
        with pytest.raises(IncompleteReadError) as info:
            await rx.read_byte()
        assert info.value.partial == 0
        assert rx.at_eof
        await rx.aclose()
        assert rx.allocator.stats().in_use == 0


@trio_test
async def test_integers_and_delimiters_across_splits() -> None:
    data = (
        b"\xab"
        + (0x0102).to_bytes(2, "big")
        + (0x030405).to_bytes(3, "little")
        + (2**64 - 1).to_bytes(8, "big")
        + leb128(624485)
        + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"tail!"
    )
    for seed in range(8):
        async with loopback() as (server, client), trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(dribble, client, data, seed, max_piece=3))
            async with StreamReader(server) as rx:
                assert await rx.read_byte() == 0xAB
                assert await rx.read_be(2) == 0x0102
                assert await rx.read_le(3) == 0x030405
                assert await rx.read_be(8) == 2**64 - 1
                assert await rx.read_leb128() == 624485
                line = await rx.read_until(b"\r\n", 100)
                assert line == b"GET / HTTP/1.1"
                assert await rx.peek(7) == b"Host: x"
                await rx.skip(9)
                assert (await rx.read_until(b"\r\n", 0)).to_bytes() == b""
                assert (await rx.read_exactly(5)).to_bytes() == b"tail!"
                assert not rx.at_eof                    # end of stream not seen yet
                with pytest.raises(IncompleteReadError):
                    await rx.read_le(2)
                assert rx.at_eof
            # closed: only `line` (zero-copy) still pins its chunks, and reads as it did
            assert line.count and chunk_bytes(line) > 0
            assert_only_held(rx.allocator, line)
            assert line == b"GET / HTTP/1.1"
            del line
            assert_all_back(rx.allocator)


@trio_test
async def test_retained_frames_survive_later_reads_and_close() -> None:
    frames = make_frames(7, 200)
    alloc = Allocator()
    kept: list[tuple[bytes, Any]] = []
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(dribble, client, encode(frames), 7)
        rx = StreamReader(server, alloc, chunk_size=1024)
        for i, want in enumerate(frames):
            n = await rx.read_leb128()
            if i % 3 == 0:
                kept.append((want, await rx.read_frame(n)))
            else:
                assert await rx.read_exactly(n) == want
        await rx.aclose()
    # the reader is gone; retained frames still hold their bytes, which pin exactly
    # the chunks they view (and nothing else: the read_exactly results were dropped)
    assert alloc.stats().in_use >= sum(len(w) for w, _ in kept)
    assert_only_held(alloc, [frame for _, frame in kept])
    for want, frame in kept:
        assert frame == want
        frame.recycle()
        assert not frame.owned_bytes
    del want, frame
    assert_all_back(alloc)
    alloc.check()


@trio_test
async def test_cancelled_reads_retry_without_loss() -> None:
    frames = make_frames(11, 150)
    async with loopback() as (server, client), trio.open_nursery() as nursery:

        async def slow_sender() -> None:
            data = encode(frames)
            rng = random.Random(5)
            pos = 0
            while pos < len(data):
                n = rng.randint(1, 2000)
                await client.send_all(data[pos : pos + n])
                pos += n
                await trio.sleep(rng.choice([0, 0, 0.0005]))
            await client.send_eof()

        nursery.start_soon(slow_sender)
        rx = StreamReader(server, chunk_size=512)
        rng = random.Random(12)
        cancelled = 0
        for want in frames:
            n = None
            while n is None:
                with trio.move_on_after(0.0002):
                    n = await rx.read_leb128()
                cancelled += n is None
            got = None
            while got is None:
                with trio.CancelScope() as scope:
                    if rng.random() < 0.05:
                        scope.cancel()  # cancelled before or while it waits
                    got = await rx.read_exactly(n)
                if got is None:
                    cancelled += 1
                    continue
                assert got == want
        assert cancelled > 0
        await rx.aclose()
        # the last frame read is still held (as `got`): it alone pins memory
        assert_only_held(rx.allocator, got)
        assert got == frames[-1]
        del got
        assert_all_back(rx.allocator)


@trio_test
async def test_eof_mid_read_is_incomplete_and_consumes_nothing() -> None:
    async with loopback() as (server, client):
        await client.send_all(leb128(100) + b"x" * 40)
        await client.send_eof()
        rx = StreamReader(server)
        assert await rx.read_leb128() == 100
        with pytest.raises(IncompleteReadError) as info:
            await rx.read_exactly(100)
        assert info.value.partial == 40 and info.value.expected == 100
        assert isinstance(info.value, EOFError)
        assert len(rx) == 40                          # still there
        assert (await rx.read_exactly(40)).to_bytes() == b"x" * 40
        with pytest.raises(IncompleteReadError):
            await rx.read_until(b"\n", 10)
        await rx.aclose()
        assert rx.allocator.stats().in_use == 0


@trio_test
async def test_max_buffered_bounds_memory() -> None:
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(send_quietly, client, b"\x00" * 300_000)
        rx = StreamReader(server, chunk_size=4096, max_buffered=64 << 10)
        with pytest.raises(MalformedError):
            await rx.read_exactly((64 << 10) + 1)     # before receiving anything
        assert len(rx) == 0
        with pytest.raises(MalformedError):
            await rx.read_until(b"\n", 1 << 20)       # delimiter never comes
        assert rx.stats().buffered <= 64 << 10
        assert rx.allocator.stats().in_use <= 64 << 10
        await rx.aclose()
        assert rx.allocator.stats().in_use == 0


@trio_test
async def test_concurrent_reads_are_refused() -> None:
    async with loopback() as (server, _client):
        rx = StreamReader(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rx.read_exactly, 10)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await rx.read_byte()
            nursery.cancel_scope.cancel()
        await rx.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await rx.read_byte()


def test_idle_reader_trims_its_allocator() -> None:
    # real sockets, virtual time: the autojump clock advances while the reader waits
    async def main() -> None:
        async with loopback() as (server, client):
            rx = StreamReader(server, idle_trim=1.0)
            await client.send_all(b"abc")
            assert (await rx.read_exactly(3)).to_bytes() == b"abc"
            assert rx.allocator.stats().reserved > 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rx.read_exactly, 2)
                await trio.sleep(3)
                s = rx.allocator.stats()
                assert (s.in_use, s.reserved) == (0, 0)  # idle: no native memory at all
                await client.send_all(b"de")
            await rx.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- non-socket streams ------------------------------------------------------------


@trio_test
async def test_memory_stream_one_byte_at_a_time() -> None:
    frames = make_frames(3, 60, big=False)
    send, recv = memory_pair_1byte()
    await send.send_all(encode(frames))
    await send.aclose()
    async with StreamReader(recv, chunk_size=64) as rx:
        await read_all_frames(rx, frames)
        assert rx.stats().receives == len(encode(frames))      # one byte each
        assert rx.stats().copied == len(encode(frames))
        with pytest.raises(IncompleteReadError):
            await rx.read_byte()
    assert rx.allocator.stats().in_use == 0


@trio_test
async def test_memory_stream_cancel_between_pumps() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    send.send_all_hook = None
    rx = StreamReader(recv)
    await send.send_all(b"0123456789")
    for _ in range(3):           # three bytes arrive, the read is cancelled each time
        trio.testing.memory_stream_pump(send, recv, max_bytes=1)
        with trio.move_on_after(0.01) as scope:
            await rx.read_exactly(10)
        assert scope.cancelled_caught
    trio.testing.memory_stream_pump(send, recv)
    assert (await rx.read_exactly(10)).to_bytes() == b"0123456789"
    await rx.aclose()
    assert rx.allocator.stats().in_use == 0


# -- codecs and frames() ------------------------------------------------------------------


def codec(max_frame: int = 1 << 20) -> Any:
    codecs = pytest.importorskip("membuf.codecs")
    return codecs.LengthPrefixed("leb128", max_frame=max_frame)


@pytest.mark.parametrize("mode", ["memory", "memory-batch", "views", "views-batch"])
@pytest.mark.parametrize("seed", [1, 2])
@trio_test
async def test_frames_over_dribbled_tcp(mode: str, seed: int) -> None:
    frames = make_frames(seed, 400)
    c = codec()
    views, batch = "views" in mode, "batch" in mode
    got: list[bytes] = []
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(dribble, client, encode(frames), seed)
        async with StreamReader(server, chunk_size=2048) as rx:
            async for item in rx.frames(c, views=views, batch=batch):
                for f in item if batch else [item]:
                    got.append(bytes(f) if views else f.to_bytes())
        # closed: the loop variables still hold the last frame (or batch), and only
        # that pins memory; it reads as it did. (The codec goes first: its resume memo
        # may keep a view too: test_safety.py::test_a_codec_keeps_no_view_after_close.)
        del c
        assert_only_held(rx.allocator, item)
        last = item if batch else [item]
        assert [bytes(f) if views else f.to_bytes() for f in last] == got[-len(last):]
        del item, f, last
        assert_all_back(rx.allocator)
    assert got == frames


@trio_test
async def test_views_never_span_chunks_when_frames_are_short() -> None:
    # frames up to 300 B, chunks of 2 KiB: every partial frame is carried into the
    # next chunk, so the codec never has to join one
    frames = make_frames(5, 2000, big=False)
    frames = [f[:300] for f in frames]
    c = codec()
    got: list[bytes] = []
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(dribble, client, encode(frames), 5, 700)
        async with StreamReader(server, chunk_size=2048) as rx:
            async for batch in rx.frames(c, views=True, batch=True):
                got += map(bytes, batch)
            assert rx.stats().compacted > 0
    assert c.joined == 0
    assert got == frames


@trio_test
async def test_a_batch_kept_by_the_caller_stays_valid_after_the_next_one() -> None:
    # v1 cleared the previous list (its views pointed into memory the next receive
    # freed). Now its views pin their chunks: the list is left as it was, and reads
    # the same after later batches, after close, until the caller drops it.
    rng = random.Random(21)
    send, recv = trio.testing.memory_stream_one_way_pair()
    kept: list[tuple[list[bytes], list[memoryview]]] = []
    async with StreamReader(recv) as rx:
        it = rx.frames(codec(), views=True, batch=True)
        await send.send_all(leb128(2) + b"ab" + leb128(1) + b"c")
        first = await it.__anext__()
        assert [bytes(v) for v in first] == [b"ab", b"c"]
        await send.send_all(leb128(1) + b"d")
        second = await it.__anext__()
        assert [bytes(v) for v in first] == [b"ab", b"c"]     # not cleared, not changed
        assert [bytes(v) for v in second] == [b"d"]
        for _ in range(30):                 # later receives overwrite nothing kept
            want = [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 6))]
            await send.send_all(encode(want))
            batch = await it.__anext__()
            assert [bytes(v) for v in batch] == want
            kept.append((want, batch))
        s = rx.allocator.stats()                   # kept views hold their chunk's bytes
        assert s.in_use >= sum(len(v) for _, b in kept for v in b) and s.in_use >= s.pinned
        del it, batch
    assert_only_held(rx.allocator, first, second, [b for _, b in kept])
    assert [bytes(v) for v in first] == [b"ab", b"c"]
    assert [bytes(v) for v in second] == [b"d"]
    for want, batch in kept:
        assert [bytes(v) for v in batch] == want
    del first, second, batch, kept
    assert_all_back(rx.allocator)


@trio_test
async def test_frames_eof_inside_a_frame() -> None:
    async with loopback() as (server, client):
        await client.send_all(leb128(3) + b"abc" + leb128(10) + b"12345")
        await client.send_eof()
        async with StreamReader(server) as rx:
            seen = []
            with pytest.raises(IncompleteReadError) as info:
                async for f in rx.frames(codec()):
                    seen.append(f.to_bytes())
            assert seen == [b"abc"]
            assert info.value.partial == 6


@trio_test
async def test_frames_oversized_length_is_malformed() -> None:
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(send_quietly, client, leb128(1 << 30) + b"\x00" * 200_000)
        # the codec's own limit
        rx = StreamReader(server, max_buffered=64 << 10)
        with pytest.raises(MalformedError):
            async for _ in rx.frames(codec(max_frame=1000)):
                pass
        await rx.aclose()
    async with loopback() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(send_quietly, client, leb128(1 << 19) + b"\x00" * 200_000)
        # the codec would allow it, max_buffered does not: MalformedError, not out-of-memory
        rx = StreamReader(server, max_buffered=64 << 10)
        with pytest.raises(MalformedError):
            async for _ in rx.frames(codec(max_frame=1 << 30), views=True, batch=True):
                pass
        assert rx.allocator.stats().in_use <= 64 << 10
        await rx.aclose()
        assert rx.allocator.stats().in_use == 0


# -- sending --------------------------------------------------------------------------------


@trio_test
async def test_send_memory_gathers_many_segments() -> None:
    rng = random.Random(9)
    segs = [rng.randbytes(rng.choice([0, 1, 100, 5000])) for _ in range(3000)]   # > IOV_MAX
    segs.append(rng.randbytes(4 << 20))                                          # partial sends
    mem = Memory(*segs)
    want = mem.to_bytes()
    async with loopback() as (server, client), trio.open_nursery() as nursery:

        async def send() -> None:
            await send_memory(client, mem)
            await client.send_eof()

        nursery.start_soon(send)
        async with StreamReader(server, max_buffered=8 << 20) as rx:
            got = await rx.read_exactly(len(want))
            assert got == want
            with pytest.raises(IncompleteReadError):
                await rx.read_byte()
    assert len(mem) == len(want)                  # the Memory is not consumed


@trio_test
async def test_send_memory_to_a_non_socket_stream() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    await send_memory(send, Memory(b"ab", b"", bytearray(b"cd")))
    await send_memory(send, b"ef")
    await send.aclose()
    async with StreamReader(recv) as rx:
        assert (await rx.read_exactly(6)).to_bytes() == b"abcdef"


# -- servers, clients, many connections ---------------------------------------------------


async def echo_sum_handler(conn: membuf.Connection) -> None:
    """Reads LEB128 frames until EOF; answers with the count and byte sum."""
    count = total = 0
    rx = conn.reader
    while True:
        try:
            n = await rx.read_leb128()
        except IncompleteReadError:
            break
        frame = await rx.read_exactly(n)
        count += 1
        total += sum(frame.to_bytes())
    await conn.send(leb128(count) + leb128(total))


@pytest.mark.parametrize("shared", [False, True])
@trio_test
async def test_many_concurrent_connections(shared: bool) -> None:
    alloc = Allocator() if shared else None
    server_allocs: list[Allocator] = []

    async def handler(conn: membuf.Connection) -> None:
        server_allocs.append(conn.allocator)
        await echo_sum_handler(conn)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(membuf.serve_tcp, handler, 0, "127.0.0.1", alloc)
        port = listeners[0].socket.getsockname()[1]

        async def client(i: int) -> None:
            frames = make_frames(100 + i, 30, big=False)
            async with await membuf.open_tcp("127.0.0.1", port) as conn:
                async with trio.open_nursery() as n2:
                    n2.start_soon(dribble, conn.stream, encode(frames), i, 2000)
                    assert await conn.reader.read_leb128() == len(frames)
                    assert await conn.reader.read_leb128() == sum(map(sum, frames))
            assert conn.allocator.stats().in_use == 0

        async with trio.open_nursery() as clients:
            for i in range(100):
                clients.start_soon(client, i)
        # handlers finish right after answering; give them a moment to close
        while len(server_allocs) < 100:
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(server_allocs) == 100
    assert len({id(a) for a in server_allocs}) == (1 if shared else 100)
    for a in server_allocs:
        assert a.stats().in_use == 0
        a.check()


@trio_test
async def test_handler_error_is_logged_and_server_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    allocs: list[Allocator] = []

    async def handler(conn: membuf.Connection) -> None:
        allocs.append(conn.allocator)
        n = await conn.reader.read_byte()
        await conn.reader.read_exactly(3)    # held, never freed by the handler
        if n == 1:
            raise RuntimeError("boom")
        await conn.send(b"ok")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(membuf.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        async with await membuf.open_tcp("127.0.0.1", port) as conn:
            await conn.send(b"\x01abc")
            with pytest.raises(IncompleteReadError):
                await conn.reader.read_byte()      # the server closed the connection
        async with await membuf.open_tcp("127.0.0.1", port) as conn:
            await conn.send(b"\x02abc")
            assert (await conn.reader.read_exactly(2)).to_bytes() == b"ok"
        nursery.cancel_scope.cancel()
    assert "boom" in caplog.text
    assert [a.stats().in_use for a in allocs] == [0, 0]


@trio_test
async def test_connection_close_frees_everything_but_retained_frames() -> None:
    async def handler(conn: membuf.Connection) -> None:
        await conn.send(b"\x05hello\x03abc" + b"z" * 50_000)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(membuf.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        conn = await membuf.open_tcp("127.0.0.1", port)
        rx = conn.reader
        frame = await rx.read_frame(await rx.read_leb128())
        await rx.read_exactly(await rx.read_leb128())
        await rx.read_exactly(10_000)
        assert conn.allocator.stats().in_use >= 5
        await conn.close()
        # only the retained frame holds memory: the chunk(s) its 5 bytes sit in
        assert rx.stats().owned == 0 and frame.owned_bytes == 5
        assert_only_held(conn.allocator, frame)
        assert frame == b"hello"
        frame.recycle()
        assert_all_back(conn.allocator)
        nursery.cancel_scope.cancel()


@trio_test
async def test_aclose_from_another_task_ends_a_pending_read() -> None:
    async with loopback() as (server, client):
        rx = StreamReader(server)
        await client.send_all(b"abc")
        assert await rx.read_byte() == ord("a")
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await rx.read_exactly(10)

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await rx.aclose()
        assert rx.allocator.stats().in_use == 0


def test_demo_runs_and_frees_every_byte(capsys: pytest.CaptureFixture[str]) -> None:
    from membuf import demo

    assert demo.main(["--seconds", "0.3", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "all there" in out and "every byte freed: yes" in out


@trio_test
async def test_a_dribbled_line_is_coalesced_not_rescanned_segment_by_segment() -> None:
    # one byte per receive: without coalescing, every split would walk every 1-byte
    # segment received so far (quadratic in Python); with it, at most a few segments
    codecs = pytest.importorskip("membuf.codecs")
    line = bytes(random.Random(4).choice(b"abcdefgh") for _ in range(3000))
    send, recv = memory_pair_1byte()
    await send.send_all(line + b"\r\n" + b"tail\r\n")
    await send.aclose()
    async with StreamReader(recv, chunk_size=64 << 10) as rx:
        got = [f.to_bytes() async for f in rx.frames(codecs.Delimited(b"\r\n", 1 << 16))]
        assert got == [line, b"tail"]
        assert rx.stats().compacted > 0
        assert rx._eng.mem.count <= 8 + 1


# -- receiving into the tail of the current chunk -------------------------------------


async def _ping_pong_native_calls(open_pair: Callable[[], Any], messages: int) -> None:
    """``messages`` small messages, each received on its own (the sender waits for the
    reader): the receives fill one chunk's tail, with no native call per receive."""
    async with open_pair() as (rx, send):
        await send(b"x" * 100)
        assert (await rx.read_exactly(100)).to_bytes() == b"x" * 100
        before, receives = rx.allocator.stats(), rx.stats().receives
        for i in range(messages):
            msg = bytes([i & 255]) * 100
            await send(msg)
            assert (await rx.read_exactly(100)).to_bytes() == msg
            s = rx.allocator.stats()                 # exact at every call: no tail counted
            assert s.in_use <= rx.stats().received < s.reserved, s
        after = rx.allocator.stats()
        assert rx.stats().receives - receives >= messages
        # 100 receives of 100 B fit in one 64 KiB receive chunk: at most one new chunk,
        # and the retired one's tail given back
        assert after.mallocs - before.mallocs <= 1, (before, after)
        assert after.frees - before.frees <= 2, (before, after)
    s = rx.allocator.stats()
    assert (s.in_use, s.pinned) == (0, 0), s


@trio_test
async def test_small_receives_make_no_native_call_trio() -> None:
    @asynccontextmanager
    async def pair() -> AsyncIterator[tuple[StreamReader, Any]]:
        async with loopback() as (server, client):
            async with StreamReader(server) as rx:
                yield rx, client.send_all

    await _ping_pong_native_calls(pair, 100)


def test_small_receives_make_no_native_call_asyncio() -> None:
    import asyncio

    @asynccontextmanager
    async def pair() -> AsyncIterator[tuple[StreamReader, Any]]:
        got: asyncio.Queue[Any] = asyncio.Queue()
        done = asyncio.Event()

        async def handler(conn: Any) -> None:
            await got.put(conn)
            await done.wait()

        server = await membuf.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = await got.get()

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            yield conn.reader, send
        finally:
            conn.reader.release()
            done.set()
            writer.close()
            server.close()

    asyncio.run(_ping_pong_native_calls(pair, 100))


@trio_test
async def test_receive_chunk_tail_is_not_in_use_and_goes_back_on_idle() -> None:
    async with loopback() as (server, client):
        async with StreamReader(server, idle_trim=0.05) as rx:
            await client.send_all(b"abc")
            assert (await rx.read_exactly(2)).to_bytes() == b"ab"
            s = rx.allocator.stats()
            assert s.in_use == 3 and s.reserved >= 64 << 10, s     # the tail is free
            with trio.move_on_after(0.3):
                await rx.read_exactly(2)                 # waits past idle_trim
            s = rx.allocator.stats()                 # the partial item, copied out
            assert (s.in_use, s.pinned, rx.stats().compacted) == (0, 0, 1), s
    s = rx.allocator.stats()
    assert (s.in_use, s.pinned) == (0, 0), s


def test_open_engines_share_the_receive_budget() -> None:
    """One connection waiting for a 64 KiB item may receive 16 of them at a time; with
    enough connections open that 16 x the item each would pass RECEIVE_BUDGET, each is
    held to about one item (resident memory grows with connections, not with items)."""
    from membuf._stream import _engine
    from membuf._stream._options import StreamOptions

    opts = StreamOptions.make(None, max_buffered=16 << 20)
    item = 64 << 10

    def cap_with(open_engines: int) -> int:
        engines = [_engine.ReceiveEngine(None, opts) for _ in range(open_engines)]
        try:
            engines[0].plan(item)
            return engines[0]._cap
        finally:
            for e in engines:
                e.release()

    before = _engine._live[0]
    alone = cap_with(1)
    crowded = cap_with(_engine.RECEIVE_BUDGET // item + 1)
    assert _engine._live[0] == before           # released engines left the count
    assert alone == 16 * item
    assert item <= crowded < 2 * item


@trio_test
async def test_send_nowait_takes_what_the_kernel_takes_and_send_sends_the_rest() -> None:
    """``Connection.send_nowait`` over real loopback TCP: an idle socket takes a small
    gather send whole; a full one takes part or nothing, never blocking; it refuses to cut
    into a ``send`` in progress; what it took plus what ``send`` sends arrives in order."""
    import socket as stdlib_socket

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listeners[0].accept()
    server_stream.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    conn = membuf.Connection(server_stream)
    assert conn.zero_copy_send
    small = [memoryview(b"head"), memoryview(b"-payload-"), memoryview(b"tail")]
    assert conn.send_nowait(small) == 17              # an idle socket takes it all
    big = [memoryview(bytes([i]) * 65536) for i in range(64)]   # 4 MiB: the socket fills
    total = sum(len(s) for s in big)
    rest = list(big)
    took = conn.send_nowait(rest)
    assert 0 < took < total
    i = membuf.memory.step_over(rest, 0, took)
    more = conn.send_nowait(rest[i:])           # full: little or nothing, never blocking
    assert 0 <= more < total - took
    i = membuf.memory.step_over(rest, i, more)
    got = bytearray()

    async def read_all(n: int) -> None:
        while len(got) < n:
            got.extend(await client.receive_some(1 << 16))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all, 17 + total)
        sending = trio.Event()

        async def rest_of_it() -> None:
            sending.set()
            await conn.send(Memory(*rest[i:]))

        nursery.start_soon(rest_of_it)
        await sending.wait()
        assert conn.send_nowait([memoryview(b"cut in")]) == 0   # a send is in progress
    want = b"head-payload-tail" + b"".join(bytes(s) for s in big)
    assert bytes(got) == want
    await conn.aclose()
    await client.aclose()
    await listeners[0].aclose()
