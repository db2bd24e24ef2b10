"""StreamReader: the async reads over a receive engine and one source adapter.

A :class:`StreamReader` is a :class:`~._engine.ReceiveEngine` (the buffering,
no event loop) plus a :class:`Source`: the adapter that knows how to wait for
bytes under one library (``_trio``, ``_asyncio``, ``_anyio``, ``_tls``).
Every read is "parse, or receive and retry": the parse is synchronous and
atomic (the Reader raises ``NeedMore`` and consumes nothing), and a receive
appends its bytes before anything else can run, so a cancelled read has
consumed nothing and its retry finds every byte that arrived. Reads served
from buffered bytes do not suspend; every receive does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from ..allocator import Allocator
from ..codecs import Codec, Splitter
from ..errors import IncompleteReadError, MalformedError, NeedMore
from ..memory import Memory, RecyclableMemory
from ..reader import Reader
from ._engine import JoinAllocator, ReceiveEngine
from ._options import UNSET, StreamOptions

__all__ = ["Frames", "Source", "StreamReader", "StreamStats"]

_T = TypeVar("_T")


class Source:
    """One library's way of receiving into a :class:`ReceiveEngine` (subclassed per adapter).

    ``lib`` names the library whose exceptions it raises (``"trio"``,
    ``"asyncio"``, ``"anyio"``); ``stream`` is what it reads.
    """

    lib = "trio"
    stream: Any = None
    engine: ReceiveEngine

    def attach(self, engine: ReceiveEngine) -> None:
        self.engine = engine

    async def receive(self, needed: int, exact: bool = True) -> bool:
        """Receive at least one more byte; False at a clean end of stream.

        Raises:
            BufferLimitError: ``needed`` more bytes would pass ``max_buffered``.
            the library's busy / closed / broken errors (see ``_errors``).
        """
        raise NotImplementedError

    def released(self) -> None:
        """The reader let go of everything: stop receiving into it (sync)."""

    async def aclose(self) -> None:
        """Close the underlying stream."""
        raise NotImplementedError


def source_for(stream: Any) -> Source:
    """The adapter for ``stream``, chosen by its type; TypeError for anything unreadable."""
    if isinstance(stream, Source):
        return stream
    if "trio" in sys.modules:
        from . import _trio

        src = _trio.source_for(stream)
        if src is not None:
            return src
    if "anyio" in sys.modules:
        from . import _anyio

        src = _anyio.source_for(stream)
        if src is not None:
            return src
    if "asyncio" in sys.modules:
        from . import _asyncio

        src = _asyncio.source_for(stream)
        if src is not None:
            return src
    raise TypeError(
        f"StreamReader cannot read a {type(stream).__module__}.{type(stream).__qualname__}: "
        "it reads trio streams (trio.abc.ReceiveStream), anyio byte streams "
        "(anyio.abc.ByteReceiveStream) and asyncio.StreamReader; for TCP and TLS use "
        "membuf.open_tcp / serve_tcp / start_server, under trio, asyncio or anyio"
    )


def _count(what: str, n: Any) -> None:
    """Refuse a count that is not an int >= 0 (a float would leave a float cursor)."""
    if type(n) is not int:
        raise TypeError(f"{what} needs an int count, got {type(n).__name__} {n!r}")
    if n < 0:
        raise MalformedError(f"{what} size must be >= 0, got {n}")


def _width(what: str, n: Any) -> None:
    if type(n) is not int:
        raise TypeError(f"{what} needs an int width (1 to 8), got {type(n).__name__} {n!r}")


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of what a :class:`StreamReader` did and holds.

    ``received`` bytes came in through ``receives`` receive calls, of which
    ``copied`` bytes went through a copy (streams that hand out bytes; 0 on
    sockets and on TLS, which decrypts straight into native memory);
    ``compacted`` bytes of partial items were moved into a new chunk (so that
    frames never span chunks, or out of a receive chunk when the stream went
    idle); ``buffered`` bytes are received but not yet consumed; ``owned``
    bytes of native memory are held by the reader right now; ``retained`` bytes
    were handed to frames from :meth:`StreamReader.read_frame`; ``recv_size``
    is the current receive size.
    """

    received: int
    receives: int
    copied: int
    compacted: int
    buffered: int
    owned: int
    retained: int
    recv_size: int
    eof: bool


class StreamReader:
    """Read bytes, integers and frames from a stream, received into native memory.

    Args:
        stream: a trio stream (a :class:`trio.SocketStream` or membuf's TLS stream get
            the zero-copy path), an anyio byte stream or an ``asyncio.StreamReader``
            (copied once into native memory). For TCP under asyncio use
            :func:`membuf.open_tcp` / :func:`membuf.start_server`, whose readers
            receive straight into native memory.
        allocator: where received chunks come from; ``None`` makes one for this reader.
        chunk_size, max_buffered, idle_trim, options: see :class:`StreamOptions`.

    Reads are atomic and safe to cancel and retry. A read that hits the end of
    the stream part-way raises :class:`~membuf.IncompleteReadError` and consumes
    nothing. Zero-copy results (``read_exactly``, ``read_until``, ``frames``)
    stay valid and unchanged for as long as you hold them, across later reads,
    idle trims and close. ``read_frame`` results are owned: ``recycle`` them.

    Raises:
        TypeError: ``stream`` is nothing this reader can read, or a bad option type.
        ValueError: an option value that cannot work.
    """

    def __init__(
        self,
        stream: Any,
        allocator: Allocator | None = None,
        chunk_size: int | None = None,
        max_buffered: int | None = None,
        *,
        idle_trim: float | None = UNSET,
        options: StreamOptions | None = None,
    ) -> None:
        source = source_for(stream)
        opts = StreamOptions.make(options, chunk_size=chunk_size, max_buffered=max_buffered,
                                  idle_trim=idle_trim)
        self._eng = eng = ReceiveEngine(allocator, opts)
        source.attach(eng)
        self._source = source
        self.stream: Any = source.stream
        self.allocator: Allocator = eng.allocator
        self.options = opts

    # -- reads ----------------------------------------------------------------

    async def read_exactly(self, n: int) -> Memory:
        """The next ``n`` bytes, zero-copy, as a Memory valid for as long as it is held.

        Raises:
            IncompleteReadError: the stream ended first (``partial`` bytes were there).
            BufferLimitError: ``n`` is larger than ``max_buffered``.
            TypeError / MalformedError: ``n`` is not an int / is negative.
        """
        r = self._eng.reader
        if type(n) is int and len(r) >= n >= 0:
            return r.take(n)
        _count("read_exactly", n)
        return await self._retry(r.take, n)

    async def read_frame(self, n: int) -> RecyclableMemory:
        """The next ``n`` bytes as a retained frame that owns them (no copy).

        The frame stays valid after later reads and after ``aclose``; give its
        bytes back with ``frame.recycle()`` (or let it be collected).

        Raises:
            IncompleteReadError: the stream ended first.
            BufferLimitError: ``n`` is larger than ``max_buffered``.
            TypeError / MalformedError: ``n`` is not an int / is negative.
        """
        eng = self._eng
        if not (type(n) is int and len(eng.reader) >= n >= 0):
            _count("read_frame", n)
            await self._retry(self._check_buffered, n)
        return eng.take_frame(n)

    async def read_byte(self) -> int:
        """One byte as an int.

        Raises:
            IncompleteReadError: the stream ended first.
        """
        try:
            return self._eng.reader.read_byte()
        except NeedMore:
            return await self._retry(self._eng.reader.read_byte)

    async def read_be(self, n: int) -> int:
        """An unsigned big-endian integer of ``n`` bytes (1 <= n <= 8).

        Raises:
            IncompleteReadError: the stream ended first.
            MalformedError: ``n`` is out of range; TypeError: not an int.
        """
        if type(n) is not int:
            _width("read_be", n)
        try:
            return self._eng.reader.read_be(n)
        except NeedMore:
            return await self._retry(self._eng.reader.read_be, n)

    async def read_le(self, n: int) -> int:
        """An unsigned little-endian integer of ``n`` bytes (1 <= n <= 8).

        Raises:
            IncompleteReadError: the stream ended first.
            MalformedError: ``n`` is out of range; TypeError: not an int.
        """
        if type(n) is not int:
            _width("read_le", n)
        try:
            return self._eng.reader.read_le(n)
        except NeedMore:
            return await self._retry(self._eng.reader.read_le, n)

    async def read_leb128(self) -> int:
        """An unsigned LEB128 varint (at most 10 bytes, 64 bits).

        Raises:
            IncompleteReadError: the stream ended inside the varint.
            MalformedError: the varint is longer than 10 bytes or over 64 bits.
        """
        try:
            return self._eng.reader.read_leb128()
        except NeedMore:
            return await self._retry(self._eng.reader.read_leb128)

    async def read_sleb128(self) -> int:
        """A signed LEB128 varint (at most 10 bytes, the 64-bit signed range).

        Raises:
            IncompleteReadError: the stream ended inside the varint.
            MalformedError: the varint is longer than 10 bytes or out of range.
        """
        try:
            return self._eng.reader.read_sleb128()
        except NeedMore:
            return await self._retry(self._eng.reader.read_sleb128)

    async def read_until(self, delim: bytes, max_size: int) -> Memory:
        """The bytes before the next ``delim`` (consumed, not included), zero-copy.

        Raises:
            IncompleteReadError: the stream ended before the delimiter.
            MalformedError: no delimiter within ``max_size`` bytes.
            BufferLimitError: ``max_buffered`` bytes arrived without a delimiter.
            TypeError: ``delim`` is not bytes-like or ``max_size`` is not an int.
        """
        if not isinstance(delim, (bytes, bytearray, memoryview)):
            raise TypeError(f"read_until needs a bytes delimiter, got {type(delim).__name__}")
        _count("read_until max_size", max_size)
        return await self._retry(self._eng.reader.read_until, bytes(delim), max_size, expected=None)

    async def read_line(self, max_size: int, delim: bytes = b"\r\n") -> bytes:
        """A copy of the bytes before the next ``delim`` (consumed, not included).

        Raises: as :meth:`read_until`.
        """
        return (await self.read_until(delim, max_size)).to_bytes()

    async def peek(self, n: int) -> bytes:
        """A copy of the next ``n`` bytes, without consuming them.

        Raises:
            IncompleteReadError: the stream ended with fewer than ``n`` bytes left.
            BufferLimitError: ``n`` is larger than ``max_buffered``.
            TypeError / MalformedError: ``n`` is not an int / is negative.
        """
        _count("peek", n)
        return await self._retry(self._eng.reader.peek, n)

    async def skip(self, n: int) -> None:
        """Consume and drop the next ``n`` bytes (atomically: all or none).

        Raises:
            IncompleteReadError: the stream ended first; nothing was skipped.
            BufferLimitError: ``n`` is larger than ``max_buffered`` (skip in pieces).
            TypeError / MalformedError: ``n`` is not an int / is negative.
        """
        _count("skip", n)
        await self._retry(self._eng.reader.skip, n)

    @overload
    def frames(self, codec: Codec, *, views: bool, batch: bool = False) -> Frames[Any]: ...
    @overload
    def frames(self, codec: Splitter, *, batch: bool = False) -> Frames[Any]: ...

    def frames(self, codec: Splitter, *, views: bool = False, batch: bool = False) -> Frames[Any]:
        """Iterate the frames ``codec`` cuts from the stream, until a clean end of stream.

        Args:
            codec: a framer from :mod:`membuf.codecs`, or any object with
                ``split(reader) -> list`` (and ``split_views(reader, allocator)`` for
                ``views=True``); a ``NeedMore`` it raises means "no complete frame yet".
            views: yield memoryviews (``codec.split_views``; frames spanning chunks
                are joined into one buffer) instead of Memory frames (``codec.split``).
            batch: yield lists of every frame available at once, instead of one by one.

        Raises (from the iteration):
            IncompleteReadError: the stream ended in the middle of a frame.
            MalformedError: a frame over the codec's ``max_frame``;
                BufferLimitError: one over ``max_buffered``.

        Raises (at the call):
            TypeError: ``codec`` has no ``split`` (or ``split_views``).
        """
        need = "split_views" if views else "split"
        if not callable(getattr(codec, need, None)):
            raise TypeError(f"frames(views={views}) needs a codec with {need}(reader), "
                            f"got {type(codec).__name__}")
        return Frames(self, codec, views=views, batch=batch)

    # -- state ----------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return self._eng.chunk_size

    @property
    def max_buffered(self) -> int:
        return self._eng.max_buffered

    def __len__(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._eng.reader)

    @property
    def at_eof(self) -> bool:
        """True once the stream has ended and every byte has been consumed."""
        eng = self._eng
        return eng.eof and not len(eng.reader)

    def stats(self) -> StreamStats:
        """Counters and holdings (cheap, no native call)."""
        eng = self._eng
        return StreamStats(
            received=eng.received,
            receives=eng.receives,
            copied=eng.copied,
            compacted=eng.compacted,
            buffered=len(eng.reader),
            owned=eng.owned(),
            retained=eng.retained,
            recv_size=eng.recv_size,
            eof=eng.eof,
        )

    async def aclose(self) -> None:
        """Free every byte the reader owns and close the stream.

        Retained frames and held views keep their bytes. Idempotent.
        """
        self.release()
        await self._source.aclose()

    def release(self) -> None:
        """Free every byte the reader owns, without closing the stream (sync, never raises).

        Later reads raise the library's closed-resource error.
        """
        self._eng.release()
        self._source.released()

    async def __aenter__(self) -> StreamReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<StreamReader {self._source.lib} buffered={s.buffered} owned={s.owned} "
            f"received={s.received}{' eof' if s.eof else ''}"
            f"{' closed' if self._eng.closed else ''}>"
        )

    # -- internals ------------------------------------------------------------

    def _check_buffered(self, n: int) -> None:
        have = len(self._eng.reader)
        if have < n:
            raise NeedMore(f"need {n} bytes, {have} buffered", n - have)

    async def _retry(
        self, op: Callable[..., _T], *args: Any, expected: int | None | bool = True
    ) -> _T:
        """Run ``op(*args)`` on the reader, receiving and retrying while it needs more."""
        eng = self._eng
        while True:
            try:
                return op(*args)
            except NeedMore as exc:
                needed = exc.needed
            have = len(eng.reader)
            if not await self._source.receive(needed, expected is True):
                if expected is True:
                    want: int | None = have + needed
                    detail = f"needed {want} bytes"
                else:
                    want = None
                    detail = "was looking for a delimiter"
                raise IncompleteReadError(
                    f"the stream ended with {have} bytes buffered; the read {detail}. "
                    "Those bytes are still buffered",
                    partial=have,
                    expected=want,
                )


class Frames(Generic[_T]):
    """The async iterator behind :meth:`StreamReader.frames` (a class, not an
    async generator, so an abandoned loop leaves nothing to finalize)."""

    def __init__(self, rx: StreamReader, codec: Any, *, views: bool, batch: bool) -> None:
        self._rx = rx
        self._codec = codec
        self._batch = batch
        eng = rx._eng
        eng.contiguous = views
        if views:
            joiner = JoinAllocator(eng)
            split_views = codec.split_views
            self._split: Callable[[Reader], list[Any]] = lambda r: split_views(r, joiner)
        else:
            self._split = codec.split
        self._pending: list[Any] = []
        self._next = 0

    def __aiter__(self) -> Frames[_T]:
        return self

    async def __anext__(self) -> Any:
        pending = self._pending
        if pending:
            if not self._batch:
                i = self._next
                if i < len(pending):
                    self._next = i + 1
                    return pending[i]
            # Forget the last batch (the caller may keep it: its views stay valid),
            # so this iterator does not hold thousands of views across an await.
            self._pending = []
        del pending                  # nor this frame: it lives across the receive below
        rx = self._rx
        eng = rx._eng
        split = self._split
        while True:
            r = eng.reader
            before = r.offset
            try:
                frames = split(r)
            except NeedMore as exc:  # a user codec's "no complete frame yet"
                frames = None
                back = r.offset - before
                if back:
                    r.unread(back)
                need, exact = exc.needed, exc.needed > 1
            else:
                if frames:
                    self._pending = frames
                    if self._batch:
                        return frames
                    self._next = 1
                    return frames[0]
                need, exact = eng.frame_need(self._codec)
            del frames
            if not await rx._source.receive(need, exact):
                left = len(eng.reader)
                if left:
                    raise IncompleteReadError(
                        f"the stream ended inside a frame: {left} bytes of it arrived",
                        partial=left,
                    )
                raise StopAsyncIteration
