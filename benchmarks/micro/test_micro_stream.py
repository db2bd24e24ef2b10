"""The stream engine without sockets: StreamReader reads and frames over buffered data.

Setup (not timed) makes a StreamReader over a pre-filled
``trio.testing.MemoryReceiveStream`` and, inside ``trio.run``, receives every
byte (one ``peek`` of the whole stream: one receive, one segment). The timed
part then consumes the buffered bytes through the async API. A read served
from buffered bytes never suspends (docs/stream.md, "Checkpoints"), so the
consumer coroutine is driven with ``coro.send(None)`` outside an event loop:
the same bytecode runs as inside ``trio.run``, without the cost of starting
one per round; ``drive`` fails the test if the coroutine ever suspends.

Baselines: anyio's ``BufferedByteReceiveStream`` (``receive_exactly`` over a
``bytearray``, fed with ``feed_data``), what a trio or asyncio user reaches
for, and the synchronous membuf call underneath (``Reader.take``,
``split_views``): the gap to it is what the async layer costs per call.

Results of one round are checked before the next round's setup releases
that round's reader (views into its memory stay valid until then).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from anyio.streams.buffered import BufferedByteReceiveStream

from membuf import Allocator, Memory, Reader, StreamReader
from membuf.codecs import LengthPrefixed

N = 1000
R = range(N)
READ = 64
ALLOC = Allocator()


def drive(coro: Any) -> Any:
    """Run a coroutine that must complete without suspending; return its value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the consumer suspended: a read was not served from buffered bytes")


class Readers:
    """Fresh StreamReaders over ``data``, each filled in a short trio.run; the previous
    one is released when the next is made (and by ``release_all``)."""

    def __init__(self) -> None:
        self.live: list[StreamReader] = []

    def fresh(self, data: bytes) -> StreamReader:
        self.release_all()
        stream = trio.testing.MemoryReceiveStream()
        stream.put_data(data)
        stream.put_eof()
        rx = StreamReader(stream, allocator=ALLOC, max_buffered=max(1 << 20, 2 * len(data)))
        assert trio.run(rx.peek, len(data)) == data
        assert rx.stats().receives == 1
        self.live.append(rx)
        return rx

    def release_all(self) -> None:
        for rx in self.live:
            rx.release()
        self.live.clear()


@pytest.fixture
def readers():
    made = Readers()
    yield made
    made.release_all()
    assert ALLOC.stats().in_use == 0


def anyio_buffered(data: bytes) -> BufferedByteReceiveStream:
    rx = BufferedByteReceiveStream(receive_stream=None)  # type: ignore[arg-type]
    rx.feed_data(data)
    return rx


# -- read_exactly(64) ----------------------------------------------------------------------------

EXACT = f"stream: read_exactly({READ}) over buffered data"


@pytest.fixture(scope="module")
def exact_data():
    data = bytes(range(256)) * (N * READ // 256)
    return data, [data[i : i + READ] for i in range(0, len(data), READ)]


async def stream_read_exactly(rx: StreamReader) -> list[Memory]:
    read_exactly = rx.read_exactly
    out = []
    append = out.append
    for _ in R:
        append(await read_exactly(READ))
    return out


async def anyio_receive_exactly(rx: BufferedByteReceiveStream) -> list[bytes]:
    receive_exactly = rx.receive_exactly
    out = []
    append = out.append
    for _ in R:
        append(await receive_exactly(READ))
    return out


def sync_reader_take(r: Reader) -> list[Memory]:
    take = r.take
    out = []
    append = out.append
    for _ in R:
        append(take(READ))
    return out


def test_read_exactly_membuf(micro, readers, exact_data, check):
    data, want = exact_data
    out = micro(lambda rx: drive(stream_read_exactly(rx)), lambda: (readers.fresh(data),),
                group=EXACT, n=N, unit="read")
    assert check(out) == check(want)


def test_read_exactly_anyio_buffered(micro, exact_data, check):
    data, want = exact_data
    out = micro(lambda rx: drive(anyio_receive_exactly(rx)), lambda: (anyio_buffered(data),),
                group=EXACT, n=N, unit="read")
    assert check(out) == check(want)


def test_read_exactly_floor_sync_reader_take(micro, exact_data, check):
    data, want = exact_data
    out = micro(sync_reader_take, lambda: (Reader.from_bytes(data),), group=EXACT, n=N, unit="read")
    assert check(out) == check(want)


# -- frames(LengthPrefixed("leb128")) ------------------------------------------------------------

FRAMES = "stream: frames(leb128) of 16..300 B over buffered data"


@pytest.fixture(scope="module")
def frame_data(leb128_frames):
    return leb128_frames(N, 16, 300, seed=11)


def codec() -> LengthPrefixed:
    return LengthPrefixed("leb128", max_frame=1 << 16)


async def stream_frames(rx: StreamReader, views: bool) -> list[Any]:
    nxt = rx.frames(codec(), views=views).__anext__
    out = []
    append = out.append
    for _ in R:
        append(await nxt())
    return out


async def stream_frames_batch(rx: StreamReader) -> list[memoryview]:
    return await rx.frames(codec(), views=True, batch=True).__anext__()


async def anyio_frames(rx: BufferedByteReceiveStream) -> list[bytes]:
    receive_exactly = rx.receive_exactly
    out = []
    append = out.append
    for _ in R:
        b = (await receive_exactly(1))[0]
        n, shift = b & 0x7F, 7
        while b & 0x80:
            b = (await receive_exactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
        append(await receive_exactly(n))
    return out


def sync_split_views(r: Reader) -> list[memoryview]:
    return codec().split_views(r)


def _frames(micro, frame_data, check, target, setup):
    data, bodies = frame_data
    out = micro(target, lambda: setup(data), group=FRAMES, n=N, unit="frame")
    assert check(out) == check(bodies)


def test_frames_membuf_views(micro, readers, frame_data, check):
    _frames(micro, frame_data, check, lambda rx: drive(stream_frames(rx, True)),
            lambda data: (readers.fresh(data),))


def test_frames_membuf_views_batch(micro, readers, frame_data, check):
    _frames(micro, frame_data, check, lambda rx: drive(stream_frames_batch(rx)),
            lambda data: (readers.fresh(data),))


def test_frames_membuf_memory(micro, readers, frame_data, check):
    _frames(micro, frame_data, check, lambda rx: drive(stream_frames(rx, False)),
            lambda data: (readers.fresh(data),))


def test_frames_anyio_receive_exactly(micro, frame_data, check):
    _frames(micro, frame_data, check, lambda rx: drive(anyio_frames(rx)),
            lambda data: (anyio_buffered(data),))


def test_frames_floor_sync_split_views(micro, frame_data, check):
    _frames(micro, frame_data, check, sync_split_views, lambda data: (Reader.from_bytes(data),))
