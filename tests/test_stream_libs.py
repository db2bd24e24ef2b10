"""The stream layer under every library, over real loopback TCP (docs/design.md §6).

Every test here runs once per runner: trio, asyncio, uvloop (when installed),
and anyio on its asyncio and its trio backend. The code under test is the same
handler and client code each time; only the way a server is started differs,
each library's own way (``nursery.start(serve_tcp)``, ``start_server``,
``tg.start(serve_tcp)``). The tests' own concurrency uses anyio, which runs
inside any of them. Data is seeded and dribbled in random pieces; every test
checks that the allocators are back to ``in_use == 0`` once the views it kept
are dropped. No timing assertions: sleeps only pace senders, and waits for a
state ("the reader went idle") are bounded by ``fail_after``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trio
from test_stream import encode, leb128, make_frames

import membuf
from membuf import Allocator, BufferLimitError, IncompleteReadError, Memory, StreamReader
from membuf.codecs import Delimited, LengthPrefixed

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra where it installs
    uvloop = None

LIBS = ["trio", "asyncio", "uvloop", "anyio-asyncio", "anyio-trio"]


def run(lib: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fn(*args)`` under ``lib``'s event loop."""
    if lib == "trio":
        return trio.run(fn, *args)
    if lib == "asyncio":
        return asyncio.run(fn(*args))
    if lib == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not installed")
        return uvloop.run(fn(*args))
    return anyio.run(fn, *args, backend=lib.split("-")[1])


def each_lib(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Parametrize an ``async def test(lib, ...)`` over LIBS and run it under each."""

    @pytest.mark.parametrize("lib", LIBS)
    @functools.wraps(test)
    def wrapper(lib: str, *args: Any, **kwargs: Any) -> None:
        run(lib, functools.partial(test, lib, *args, **kwargs))

    return wrapper


@asynccontextmanager
async def serving(lib: str, handler: Any, **kw: Any) -> AsyncIterator[int]:
    """Serve ``handler`` the library's own way on 127.0.0.1; yield the port."""
    if lib in ("asyncio", "uvloop"):
        server = await membuf.start_server(handler, "127.0.0.1", 0, **kw)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
        return
    start = functools.partial(membuf.serve_tcp, handler, 0, **kw)
    if lib == "trio":
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(start)
            yield listeners[0].socket.getsockname()[1]
            nursery.cancel_scope.cancel()
        return
    async with anyio.create_task_group() as tg:
        listeners = await tg.start(start)
        yield listeners[0].socket.getsockname()[1]
        tg.cancel_scope.cancel()


async def dribble(conn: membuf.Connection, data: bytes, seed: int, max_piece: int = 4096,
                  eof: bool = True) -> None:
    """Send ``data`` in random pieces, yielding often so the reader sees the splits."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.choice([1, rng.randint(1, 16), rng.randint(1, max_piece)])
        await conn.send(data[pos : pos + n])
        pos += n
        if rng.random() < 0.3:
            await anyio.sleep(0)
    if eof:
        await conn.send_eof()


async def until(predicate: Callable[[], bool], what: str, seconds: float = 20) -> None:
    """Wait (bounded) until ``predicate()`` holds, collecting garbage as it goes."""
    with anyio.fail_after(seconds):
        while not predicate():
            gc.collect()
            await anyio.sleep(0.005)


def back(alloc: Allocator) -> bool:
    s = alloc.stats()
    return s.in_use == 0 and s.pinned == 0


# -- echo ------------------------------------------------------------------------------


async def echo_handler(conn: membuf.Connection) -> None:
    """LEB128 frames back as they came, until the client half-closes."""
    rx = conn.reader
    while True:
        try:
            n = await rx.read_leb128()
        except IncompleteReadError:
            return
        body = await rx.read_exactly(n)
        await conn.send(Memory(leb128(n), *body))
        del body


@each_lib
async def test_echo(lib: str) -> None:
    frames = make_frames(31, 300)
    data = encode(frames)
    server_allocs: list[Allocator] = []

    async def handler(conn: membuf.Connection) -> None:
        server_allocs.append(conn.allocator)
        await echo_handler(conn)

    async with serving(lib, handler) as port:
        async with await membuf.open_tcp("127.0.0.1", port) as conn, \
                anyio.create_task_group() as tg:
            tg.start_soon(dribble, conn, data, 31)
            rx = conn.reader
            for want in frames:
                assert await rx.read_leb128() == len(want)
                assert await rx.read_exactly(len(want)) == want
            with pytest.raises(IncompleteReadError):
                await rx.read_byte()              # the server closed after our EOF
            assert rx.stats().copied == 0         # straight into native memory
        assert back(conn.allocator)
        await until(lambda: len(server_allocs) == 1 and back(server_allocs[0]), "server freed")


# -- frames, all four modes ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["memory", "memory-batch", "views", "views-batch"])
@each_lib
async def test_frames_in_every_mode(lib: str, mode: str) -> None:
    frames = make_frames(7, 400)
    views, batch = "views" in mode, "batch" in mode
    got: list[bytes] = []
    done = anyio.Event()

    async def handler(conn: membuf.Connection) -> None:
        count = 0
        async for item in conn.reader.frames(LengthPrefixed("leb128"), views=views, batch=batch):
            for f in item if batch else [item]:
                got.append(bytes(f) if views else f.to_bytes())
                count += 1
            del item, f
        await conn.send(leb128(count))
        done.set()

    async with serving(lib, handler, chunk_size=2048) as port:
        async with await membuf.open_tcp("127.0.0.1", port) as conn:
            await dribble(conn, encode(frames), 7, max_piece=9000)
            assert await conn.reader.read_leb128() == len(frames)
        with anyio.fail_after(20):
            await done.wait()
    assert got == frames


# -- read_frame kept past close ------------------------------------------------------------


@each_lib
async def test_read_frame_is_retained_past_close(lib: str) -> None:
    frames = make_frames(13, 120)

    async def handler(conn: membuf.Connection) -> None:
        await conn.send(encode(frames))

    alloc = Allocator()
    kept: list[tuple[bytes, membuf.RecyclableMemory]] = []
    async with serving(lib, handler) as port:
        async with await membuf.open_tcp("127.0.0.1", port, allocator=alloc,
                                         chunk_size=1024) as conn:
            rx = conn.reader
            for i, want in enumerate(frames):
                n = await rx.read_leb128()
                if i % 2:
                    kept.append((want, await rx.read_frame(n)))
                else:
                    await rx.skip(n)
    s = alloc.stats()
    assert s.in_use == s.pinned > 0, s          # only the retained frames hold memory
    for want, frame in kept:
        assert frame == want
        frame.recycle()
    del frame
    assert back(alloc)
    alloc.check()


# -- cancellation ---------------------------------------------------------------------------


async def slow_sender(conn: membuf.Connection, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 30)
        await conn.send(data[pos : pos + n])
        pos += n
        await anyio.sleep(rng.choice([0, 0.0005, 0.001]))
    await conn.send_eof()


async def cancellable(lib: str, read: Callable[[], Awaitable[Any]], rng: random.Random) -> Any:
    """One attempt at ``read()``, cancelled after a short random while; None if it was.

    asyncio: ``asyncio.wait_for`` or ``Task.cancel()`` (a result that won the race
    is kept, as it must be); trio and anyio: a cancel scope.
    """
    delay = rng.choice([0.0001, 0.0003, 0.001])
    if lib in ("asyncio", "uvloop"):
        if rng.random() < 0.5:
            try:
                return await asyncio.wait_for(read(), delay)
            except asyncio.TimeoutError:
                return None
        task = asyncio.ensure_future(read())
        await asyncio.sleep(rng.choice([0, 0, delay]))   # 0: cancelled as soon as it waits
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return None
    with anyio.move_on_after(delay):
        return await read()
    return None


@each_lib
async def test_cancelled_reads_lose_and_duplicate_nothing(lib: str) -> None:
    frames = [random.Random(i).randbytes(random.Random(i).randint(1, 40)) for i in range(1500)]
    data = encode(frames)

    async def handler(conn: membuf.Connection) -> None:
        await slow_sender(conn, data, 3)

    rng = random.Random(5)
    cancelled = 0
    async with serving(lib, handler) as port:
        async with await membuf.open_tcp("127.0.0.1", port, chunk_size=512) as conn:
            rx = conn.reader
            for want in frames:
                n = None
                while n is None:
                    n = await cancellable(lib, rx.read_leb128, rng)
                    cancelled += n is None
                got = None
                while got is None:
                    got = await cancellable(lib, functools.partial(rx.read_exactly, n), rng)
                    cancelled += got is None
                assert got == want
            with pytest.raises(IncompleteReadError):
                await rx.read_byte()
    assert cancelled >= 1000, cancelled
    del got
    assert back(conn.allocator)


# -- handler errors -------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """The ERROR records of the membuf.stream logger (message and exception type only)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str, type[BaseException] | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.records.append((record.levelno, record.getMessage(), type(exc) if exc else None))

    def at(self, level: int) -> list[tuple[int, str, type[BaseException] | None]]:
        return [r for r in self.records if r[0] == level]


@pytest.fixture
def stream_log() -> Any:
    log = logging.getLogger("membuf.stream")
    rec = ErrorRecords()
    old = log.level
    log.addHandler(rec)
    log.setLevel(logging.DEBUG)
    log.propagate = False          # pytest's capture keeps records (and their tracebacks)
    yield rec
    log.removeHandler(rec)
    log.setLevel(old)
    log.propagate = True


@pytest.mark.parametrize("lib", LIBS)
def test_a_handler_error_closes_only_its_own_connection(lib: str, stream_log: Any) -> None:
    async def main() -> None:
        allocs: list[Allocator] = []
        steady_ready = anyio.Event()

        async def handler(conn: membuf.Connection) -> None:
            allocs.append(conn.allocator)
            kind = await conn.reader.read_byte()
            await conn.reader.read_exactly(3)       # held, never dropped by the handler
            if kind == ord("X"):
                raise RuntimeError("boom")
            steady_ready.set()
            await echo_handler(conn)

        async with serving(lib, handler) as port:
            steady = await membuf.open_tcp("127.0.0.1", port)
            await steady.send(b"Sabc")
            with anyio.fail_after(10):
                await steady_ready.wait()
            for _ in range(3):
                async with await membuf.open_tcp("127.0.0.1", port) as bad:
                    await bad.send(b"Xabc")
                    with pytest.raises(IncompleteReadError):
                        await bad.reader.read_byte()   # the server closed this one only
            for i in range(20):                        # the steady one still echoes
                body = bytes([i]) * i
                await steady.send(leb128(len(body)) + body)
                assert await steady.reader.read_leb128() == len(body)
                assert await steady.reader.read_exactly(len(body)) == body
            async with await membuf.open_tcp("127.0.0.1", port) as late:   # and new ones work
                await late.send(b"Sabc" + leb128(2) + b"ok")
                assert await late.reader.read_leb128() == 2
                assert (await late.reader.read_exactly(2)) == b"ok"
            await steady.aclose()
            await until(lambda: len(allocs) == 5 and all(back(a) for a in allocs), "all freed")

    run(lib, main)
    errors = stream_log.at(logging.ERROR)
    assert len(errors) == 3 and all(kind is RuntimeError for _, _, kind in errors), errors
    assert all("connection closed" in message for _, message, _ in errors)


# -- options, limits, what a StreamReader accepts ------------------------------------------


@each_lib
async def test_options_pass_through_every_constructor(lib: str) -> None:
    seen: list[membuf.StreamOptions] = []

    async def handler(conn: membuf.Connection) -> None:
        seen.append(conn.options)
        await conn.send(b"x")

    async with serving(lib, handler, chunk_size=4096, max_buffered=1 << 16,
                       idle_trim=0.25) as port:
        async with await membuf.open_tcp("127.0.0.1", port, chunk_size=2048,
                                         max_buffered=1 << 15, idle_trim=None) as conn:
            assert await conn.reader.read_byte() == ord("x")
            assert conn.options == membuf.StreamOptions(2048, 1 << 15, None)
            assert conn.reader.max_buffered == 1 << 15 and conn.reader.chunk_size == 2048
    await until(lambda: len(seen) == 1, "handler ran")
    assert seen[0] == membuf.StreamOptions(chunk_size=4096, max_buffered=1 << 16, idle_trim=0.25)


@each_lib
async def test_a_frame_of_the_default_max_frame_fits_the_default_limit(lib: str) -> None:
    body = random.Random(1).randbytes(1 << 20)
    got: list[tuple[str, int]] = []
    codecs = {"l": LengthPrefixed("leb128"), "b": LengthPrefixed("be32")}   # default max_frame

    async def handler(conn: membuf.Connection) -> None:
        prefix = chr(await conn.reader.read_byte())
        async for frame in conn.reader.frames(codecs[prefix]):
            got.append((prefix, len(frame)))
            assert frame == body
        await conn.send(b"k")

    async with serving(lib, handler) as port:
        for prefix, head in (("l", leb128(len(body))), ("b", len(body).to_bytes(4, "big"))):
            async with await membuf.open_tcp("127.0.0.1", port) as conn:
                await conn.send(Memory(prefix.encode(), head, body))
                await conn.send_eof()
                assert await conn.reader.read_byte() == ord("k")
    assert got == [("l", 1 << 20), ("b", 1 << 20)]


@each_lib
async def test_buffer_limit_error_has_the_exact_counts(lib: str) -> None:
    outcome: list[BaseException] = []

    async def handler(conn: membuf.Connection) -> None:
        try:
            async for _ in conn.reader.frames(LengthPrefixed("be32")):
                pass
        except BufferLimitError as exc:
            outcome.append(exc)
        try:
            await conn.reader.read_exactly((1 << 20) + 1)
        except BufferLimitError as exc:
            outcome.append(exc)

    async with serving(lib, handler, max_buffered=1 << 20) as port:
        async with await membuf.open_tcp("127.0.0.1", port) as conn:
            with pytest.raises((IncompleteReadError, *_broken())):
                await conn.send((1 << 20).to_bytes(4, "big") + bytes(1 << 20))
                await conn.reader.read_byte()    # the handler ends and the server closes
    await until(lambda: len(outcome) == 2, "handler done")
    frame, read = outcome
    assert (frame.size, frame.limit, frame.exact) == ((1 << 20) + 4, 1 << 20, True)
    assert "1048580 bytes" in str(frame) and "max_buffered=1048576" in str(frame)
    assert isinstance(frame, membuf.MalformedError)
    assert (read.size, read.limit) == ((1 << 20) + 1, 1 << 20)


def _broken() -> tuple[type[BaseException], ...]:
    return (ConnectionError, trio.BrokenResourceError, anyio.BrokenResourceError)


class LinesCodec:
    """A user codec whose split raises NeedMore when no complete line is buffered."""

    def split(self, reader: membuf.Reader) -> list[Memory]:
        out = [reader.read_until(b"\n", 1000)]        # raises NeedMore: no line yet
        while reader.find(b"\n") >= 0:
            out.append(reader.read_until(b"\n", 1000))
        return out


@each_lib
async def test_a_user_codec_raising_need_more_means_no_frame_yet(lib: str) -> None:
    lines = [random.Random(i).randbytes(20).hex().encode() for i in range(200)]
    got: list[bytes] = []

    async def handler(conn: membuf.Connection) -> None:
        async for line in conn.reader.frames(LinesCodec()):
            got.append(line.to_bytes())

    async with serving(lib, handler) as port:
        async with await membuf.open_tcp("127.0.0.1", port) as conn:
            await dribble(conn, b"\n".join(lines) + b"\n", 3, max_piece=50)
            with pytest.raises(IncompleteReadError):
                await conn.reader.read_byte()
    await until(lambda: len(got) == len(lines), "all lines")
    assert got == lines


@each_lib
async def test_streamreader_refuses_what_it_cannot_read(lib: str) -> None:
    for bad in (object(), b"bytes", 3, asyncio.Queue()):
        with pytest.raises(TypeError, match="cannot read"):
            StreamReader(bad)
    with pytest.raises(TypeError, match="send_memory cannot send"):
        await membuf.send_memory(object(), b"x")
    with pytest.raises(TypeError):
        await membuf.open_tcp("127.0.0.1", 1, bogus=1)   # type: ignore[call-arg]
    with pytest.raises(TypeError, match="membuf.Allocator"):
        await membuf.open_tcp("127.0.0.1", 1, allocator="mine")   # type: ignore[arg-type]
    with pytest.raises(TypeError, match="membuf.Allocator"):
        await membuf.serve_tcp(echo_handler, 0, allocator=object())   # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ssl must be"):
        await membuf.open_tcp("127.0.0.1", 1, ssl="yes")   # type: ignore[arg-type]
    with pytest.raises(TypeError, match="server_hostname"):
        await membuf.open_tcp("127.0.0.1", 1, server_hostname="x")
    with pytest.raises(TypeError):
        membuf.StreamOptions(chunk_size=True)
    with pytest.raises(ValueError):
        membuf.StreamOptions(chunk_size=4096, max_buffered=1024)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_byte_streams_on_both_backends(backend: str) -> None:
    """A StreamReader over anyio's own socket stream (copied once) and Connection(stream)."""
    frames = make_frames(17, 200)

    async def main() -> None:
        async def serve(stream: Any) -> None:
            async with stream:
                conn = membuf.Connection(stream)
                async for f in conn.reader.frames(LengthPrefixed("leb128"), views=True):
                    await conn.send(Memory(leb128(len(f)), f))
                del f                                # the last view pins its chunk
                await conn.aclose()
                assert back(conn.allocator)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            stream = await anyio.connect_tcp("127.0.0.1", port)
            rx = StreamReader(stream, chunk_size=1024)
            async with anyio.create_task_group() as senders:
                async def send() -> None:
                    await membuf.send_memory(stream, encode(frames))
                    await stream.send_eof()

                senders.start_soon(send)
                for want in frames:
                    assert await rx.read_exactly(await rx.read_leb128()) == want
            assert rx.stats().copied == rx.stats().received > 0     # the copying path
            with pytest.raises(IncompleteReadError):
                await rx.read_byte()
            await rx.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await rx.read_byte()
            assert back(rx.allocator)
            tg.cancel_scope.cancel()

    anyio.run(main, backend=backend)


def test_an_asyncio_stream_reader_is_read_by_copy() -> None:
    async def main() -> None:
        sr = asyncio.StreamReader()
        sr.feed_data(encode([b"abc", b"de"]) + b"line\r\n")
        sr.feed_eof()
        async with StreamReader(sr) as rx:
            assert [f.to_bytes() async for f in _take(rx.frames(LengthPrefixed()), 2)] == \
                [b"abc", b"de"]
            assert await rx.read_line(100) == b"line"
            assert rx.stats().copied == rx.stats().received
            with pytest.raises(IncompleteReadError):
                await rx.read_byte()
        with pytest.raises(ConnectionAbortedError):
            await rx.read_byte()

    asyncio.run(main())


async def _take(it: Any, n: int) -> AsyncIterator[Any]:
    for _ in range(n):
        yield await it.__anext__()


@each_lib
async def test_start_server_is_asyncio_only_and_serve_tcp_checks_its_arguments(lib: str) -> None:
    if lib in ("asyncio", "uvloop", "anyio-asyncio"):
        server = await membuf.start_server(echo_handler, "127.0.0.1", 0, reuse_address=True)
        assert server.is_serving() and server.sockets      # the loop's own Server object
        server.close()
    else:
        with pytest.raises(RuntimeError, match="start_server is asyncio's"):
            await membuf.start_server(echo_handler, "127.0.0.1", 0)
    with pytest.raises(TypeError, match="TLS server needs"):
        await membuf.serve_tcp(echo_handler, 0, ssl=True)   # type: ignore[arg-type]


def test_outside_an_event_loop_is_a_clear_error() -> None:
    coro = membuf.open_tcp("127.0.0.1", 1)
    with pytest.raises(RuntimeError, match="inside trio, asyncio or anyio"):
        coro.send(None)
    coro.close()


def test_delimited_frames_under_asyncio_dribbled_one_byte_at_a_time() -> None:
    """A peer dribbling one byte per packet is coalesced under asyncio too (linear work)."""
    line = bytes(random.Random(4).choice(b"abcdefgh") for _ in range(3000))

    async def main() -> None:
        got: list[bytes] = []
        counts: list[int] = []

        async def handler(conn: membuf.Connection) -> None:
            async for f in conn.reader.frames(Delimited(b"\r\n", 1 << 16)):
                got.append(f.to_bytes())
            counts.append(conn.reader._eng.mem.count)

        async with serving("asyncio", handler) as port:
            async with await membuf.open_tcp("127.0.0.1", port) as conn:
                for b in line + b"\r\ntail\r\n":
                    await conn.send(bytes([b]))
                    await asyncio.sleep(0)
                await conn.send_eof()
                with pytest.raises(IncompleteReadError):
                    await conn.reader.read_byte()
        await until(lambda: bool(counts), "handler done")
        assert got == [line, b"tail"]
        assert counts[0] <= 8 + 1

    asyncio.run(main())
