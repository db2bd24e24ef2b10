"""The receive engine behind :mod:`membuf.stream`: StreamReader and its frames iterator.

See the Strategy in ``membuf/stream.py`` (receive path, ownership, cancellation
safety, checkpoints, memory bound); this module implements it. Public names are
re-exported by ``membuf.stream`` and ``membuf``.
"""

from __future__ import annotations

import errno
import socket as _stdlib_socket
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from .allocator import Allocator
from .errors import IncompleteReadError, MalformedError, NeedMore
from .memory import Memory, RecyclableMemory
from .reader import Reader

__all__ = ["Frames", "StreamReader", "StreamStats"]

# the socket was closed under us (WSAENOTSOCK is Windows' name for it)
_CLOSED_ERRNOS = {errno.EBADF, getattr(errno, "WSAENOTSOCK", 10038)}
_T = TypeVar("_T")
_MAX_SEGMENTS = 8   # unconsumed segments before a receive coalesces them (if short)


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of what a :class:`StreamReader` did and holds.

    ``received`` bytes came in through ``receives`` receive calls, of which
    ``copied`` bytes went through a ``receive_some`` copy (non-socket streams);
    ``compacted`` bytes of partial frames were moved to the head of a new chunk
    (``frames(views=True)`` only, so that frames never span chunks);
    ``buffered`` bytes are received but not yet consumed; ``owned`` bytes of
    native memory are held by the reader right now (buffered plus consumed
    bytes not yet freed); ``retained`` bytes were handed to frames from
    :meth:`StreamReader.read_frame`; ``recv_size`` is the current receive size.
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
    """Read bytes, integers and frames from a trio stream, into native memory.

    Args:
        stream: any :class:`trio.abc.ReceiveStream`; a :class:`trio.SocketStream`
            gets the zero-copy ``recv_into`` path.
        allocator: where received chunks come from; ``None`` makes one for this reader.
        chunk_size: the starting receive size (bytes).
        max_buffered: the most bytes kept received but not yet consumed; a read
            that needs more raises :class:`~membuf.MalformedError`.
        idle_trim: with a reader-owned allocator, seconds without data after which
            its free arenas are returned to the OS (``None``: never). Ignored for
            an allocator passed in, which may be shared.

    Reads are atomic and safe to cancel and retry. A read that hits the end of
    the stream part-way raises :class:`~membuf.IncompleteReadError` and consumes
    nothing. Zero-copy results (``read_exactly``, ``read_until``, ``frames``)
    stay valid and unchanged for as long as you hold them, across later reads,
    idle trims and close: the bytes go back to the allocator when the last view
    of them is gone (``Allocator.stats().pinned`` counts such bytes meanwhile).
    ``read_frame`` results are owned: ``recycle`` them when done.

    Raises:
        ValueError: a size that cannot work.
    """

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        allocator: Allocator | None = None,
        chunk_size: int = 16 << 10,
        max_buffered: int = 1 << 20,
        *,
        idle_trim: float | None = 1.0,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if max_buffered < chunk_size:
            raise ValueError(
                f"max_buffered ({max_buffered}) must be at least chunk_size ({chunk_size})"
            )
        self.stream = stream
        self._own_allocator = allocator is None
        self.allocator: Allocator = Allocator() if allocator is None else allocator
        self.chunk_size = chunk_size
        self.max_buffered = max_buffered
        self._idle_trim = idle_trim if self._own_allocator else None
        self._mem = Memory()
        self._reader = Reader(self._mem)
        self._raw: _stdlib_socket.socket | None = _raw_socket(stream)
        self._recv_size = chunk_size
        self._base_recv = max(chunk_size, min(max_buffered, 4 * chunk_size))
        self._max_recv = max(chunk_size, min(max_buffered, 64 * chunk_size))
        self._item = 0               # decaying max of what reads waited for
        self._contiguous = False     # set by frames(views=True): keep frames in one chunk
        self._eof = False
        self._closed = False
        self._busy = False
        self._trimmed = True
        self._received = 0
        self._receives = 0
        self._copied = 0
        self._retained = 0
        self._compacted = 0
        # Receive chunks in order, each with the stream offset where its bytes end; a
        # chunk is let go (disowned) once every byte of it is consumed, and its memory
        # returns when the last view of it dies (native/core/chunk.c).
        self._chunks: deque[tuple[Any, int]] = deque()
        self._kept = 0               # bytes ever appended to _mem (the end of the last chunk)
        # A reader dropped without aclose lets go of its chunks all the same.
        self._finalizer = weakref.finalize(self, _disown_all, self._chunks)

    # -- reads ----------------------------------------------------------------

    async def read_exactly(self, n: int) -> Memory:
        """The next ``n`` bytes, zero-copy, as a Memory valid for as long as it is held.

        Raises:
            IncompleteReadError: the stream ended first (``partial`` bytes were there).
            MalformedError: ``n`` is negative or larger than ``max_buffered``.
        """
        r = self._reader
        if len(r) >= n >= 0:
            return r.take(n)
        return await self._retry(r.take, n)

    async def read_frame(self, n: int) -> RecyclableMemory:
        """The next ``n`` bytes as a retained frame that owns them (no copy).

        The frame stays valid after later reads and after ``aclose``; give its
        bytes back with ``frame.recycle()`` (or let it be collected).

        Raises:
            IncompleteReadError: the stream ended first.
            MalformedError: ``n`` is negative or larger than ``max_buffered``.
        """
        r = self._reader
        if not len(r) >= n >= 0:
            await self._retry(self._check_buffered, n)
        self._release_consumed()
        r.skip(n)
        frame = RecyclableMemory(self.allocator)
        for piece in r.clip_front():
            frame._hold(piece)
        self._retained += n
        return frame

    async def read_byte(self) -> int:
        """One byte as an int.

        Raises:
            IncompleteReadError: the stream ended first.
        """
        try:
            return self._reader.read_byte()
        except NeedMore:
            return await self._retry(self._reader.read_byte)

    async def read_be(self, n: int) -> int:
        """An unsigned big-endian integer of ``n`` bytes (1 <= n <= 8).

        Raises:
            IncompleteReadError: the stream ended first.
            MalformedError: ``n`` is out of range.
        """
        try:
            return self._reader.read_be(n)
        except NeedMore:
            return await self._retry(self._reader.read_be, n)

    async def read_le(self, n: int) -> int:
        """An unsigned little-endian integer of ``n`` bytes (1 <= n <= 8).

        Raises:
            IncompleteReadError: the stream ended first.
            MalformedError: ``n`` is out of range.
        """
        try:
            return self._reader.read_le(n)
        except NeedMore:
            return await self._retry(self._reader.read_le, n)

    async def read_leb128(self) -> int:
        """An unsigned LEB128 varint (at most 10 bytes, 64 bits).

        Raises:
            IncompleteReadError: the stream ended inside the varint.
            MalformedError: the varint is longer than 10 bytes or over 64 bits.
        """
        try:
            return self._reader.read_leb128()
        except NeedMore:
            return await self._retry(self._reader.read_leb128)

    async def read_until(self, delim: bytes, max_size: int) -> Memory:
        """The bytes before the next ``delim`` (consumed, not included), zero-copy.

        Raises:
            IncompleteReadError: the stream ended before the delimiter.
            MalformedError: no delimiter within ``max_size`` bytes (or ``max_buffered``).
        """
        return await self._retry(self._reader.read_until, delim, max_size, expected=None)

    async def peek(self, n: int) -> bytes:
        """A copy of the next ``n`` bytes, without consuming them.

        Raises:
            IncompleteReadError: the stream ended with fewer than ``n`` bytes left.
            MalformedError: ``n`` is negative or larger than ``max_buffered``.
        """
        return await self._retry(self._reader.peek, n)

    async def skip(self, n: int) -> None:
        """Consume and drop the next ``n`` bytes (atomically: all or none).

        Raises:
            IncompleteReadError: the stream ended first; nothing was skipped.
            MalformedError: ``n`` is negative or larger than ``max_buffered``.
        """
        await self._retry(self._reader.skip, n)

    def frames(self, codec: Any, *, views: bool = False, batch: bool = False) -> Frames[Any]:
        """Iterate the frames ``codec`` cuts from the stream, until a clean end of stream.

        Args:
            codec: a framer from :mod:`membuf.codecs` (``split`` / ``split_views``).
            views: yield memoryviews (``codec.split_views``; frames spanning chunks
                are joined into one buffer) instead of Memory frames (``codec.split``).
            batch: yield lists of every frame available at once, instead of one by one.

        Frames and batches stay valid and unchanged for as long as you hold
        them (their bytes are pinned until the last view of them is gone).

        Raises (from the iteration):
            IncompleteReadError: the stream ended in the middle of a frame.
            MalformedError: a frame over the codec's ``max_frame`` or ``max_buffered``.
        """
        return Frames(self, codec, views=views, batch=batch)

    # -- state ----------------------------------------------------------------

    def __len__(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._reader)

    @property
    def at_eof(self) -> bool:
        """True once the stream has ended and every byte has been consumed."""
        return self._eof and not len(self._reader)

    def stats(self) -> StreamStats:
        """Counters and holdings (cheap, no native call)."""
        return StreamStats(
            received=self._received,
            receives=self._receives,
            copied=self._copied,
            compacted=self._compacted,
            buffered=len(self._reader),
            owned=sum(c.nbytes for c, _ in self._chunks),
            retained=self._retained,
            recv_size=self._recv_size,
            eof=self._eof,
        )

    async def aclose(self) -> None:
        """Free every byte the reader owns and close the stream.

        Retained frames keep their bytes. Idempotent; the stream is closed even
        if this is cancelled.
        """
        self.release()
        await self.stream.aclose()

    def release(self) -> None:
        """Free every byte the reader owns, without closing the stream (sync).

        Later reads raise :class:`trio.ClosedResourceError`.
        """
        if not self._closed:
            self._closed = True
            self._reader.skip(len(self._reader))  # a read suspended in another task
            self._mem.clear()
            self._reader._park()
            _disown_all(self._chunks)             # views the user holds stay valid
            self._mem = Memory()
            self._reader = Reader(self._mem)
            if self._own_allocator and not self.allocator.stats().in_use:
                self.allocator.trim()

    async def __aenter__(self) -> StreamReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<StreamReader buffered={s.buffered} owned={s.owned} received={s.received}"
            f"{' eof' if s.eof else ''}{' closed' if self._closed else ''}>"
        )

    # -- internals ------------------------------------------------------------

    def _check_buffered(self, n: int) -> None:
        if n < 0:
            raise MalformedError(f"read size must be >= 0, got {n}")
        have = len(self._reader)
        if have < n:
            raise NeedMore(f"need {n} bytes, {have} buffered", n - have)

    async def _retry(
        self, op: Callable[..., _T], *args: Any, expected: int | None | bool = True
    ) -> _T:
        """Run ``op(*args)`` on the reader, receiving and retrying while it needs more."""
        r = self._reader
        while True:
            try:
                return op(*args)
            except NeedMore as exc:
                needed = exc.needed
            have = len(r)
            if not await self._receive(needed):
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

    def _release_consumed(self) -> None:
        """Drop the consumed prefix of the Memory and let go of fully consumed chunks.

        A chunk let go returns its bytes at once when nobody views them, else when
        the last view dies: the reader never frees memory behind a held view.
        """
        mem = self._mem
        left = len(self._reader)
        if len(mem) != left:
            if left:
                self._reader.clip_front()
            else:                     # all consumed (the common case): no clipping to do
                mem.clear()
                self._reader._park()  # drop its view of the last segment too
        chunks = self._chunks
        consumed = self._kept - left
        while chunks and chunks[0][1] <= consumed:
            chunks.popleft()[0].disown()

    async def _receive(self, needed: int = 1) -> bool:
        """Receive at least one more byte; False at end of stream.

        Raises:
            MalformedError: keeping ``needed`` more bytes would pass ``max_buffered``.
            trio.BusyResourceError: another task is receiving on this reader.
            trio.ClosedResourceError: the reader was closed.
        """
        if self._busy:
            raise trio.BusyResourceError("another task is already reading from this StreamReader")
        if self._closed:
            raise trio.ClosedResourceError("this StreamReader was closed")
        if self._eof:
            await trio.lowlevel.checkpoint()
            return False
        self._release_consumed()
        buffered = len(self._reader)
        room = self.max_buffered - buffered
        if needed > room:
            raise MalformedError(
                f"a read needs {buffered + needed} bytes buffered, over max_buffered="
                f"{self.max_buffered}; raise max_buffered or read in smaller pieces"
            )
        # What reads wait for (a partial frame, a read_exactly) sets how far the
        # receive size may grow: small items stay at 4 x chunk_size (cache-warm
        # parsing), large ones go up to 64 x chunk_size (fewer syscalls).
        item = self._item - (self._item >> 3)
        self._item = item = max(item, buffered + needed)
        cap = min(self._max_recv, max(self._base_recv, 16 * item))
        size = min(max(self._recv_size, needed), room)
        # Frames as views: move a short partial frame to the head of the new chunk,
        # so frames never span chunks and split_views never has to join one. In any
        # mode, a partial item dribbled in over many receives is coalesced the same
        # way, so parsers never walk more than _MAX_SEGMENTS segments per attempt.
        carry = 0
        if buffered <= size >> 1 and (self._contiguous or self._mem.count >= _MAX_SEGMENTS):
            carry = buffered
        self._busy = True
        try:
            if self._raw is not None:
                n = await self._recv_socket(self._raw, size, carry)
            else:
                n = await self._recv_stream(size, carry)
        finally:
            self._busy = False
        if not n:
            self._eof = True
            return False
        self._received += n
        self._receives += 1
        recv_size = self._recv_size
        if recv_size > cap:
            self._recv_size = max(recv_size >> 1, cap)
        elif n >= recv_size:
            self._recv_size = min(2 * recv_size, cap)
        elif n < recv_size >> 3 and recv_size > self.chunk_size:
            self._recv_size = max(recv_size >> 1, self.chunk_size)
        return True

    def _keep(self, chunk: Any, view: memoryview, carry: int, n: int) -> None:
        """Append ``view[:carry + n]``: the carried bytes first move into its head.

        ``chunk`` gives its unused tail back now; nobody has seen that part.
        """
        if carry:
            self._reader.read_into(view[:carry])    # consumes the partial frame...
            self._release_consumed()                # ...and lets go of where it was
            self._compacted += carry
        size = carry + n
        chunk.shrink(size)
        self._mem.push(view[:size])
        self._kept += size
        self._chunks.append((chunk, self._kept))

    async def _recv_socket(self, raw: _stdlib_socket.socket, size: int, carry: int) -> int:
        """recv_into a fresh chunk with trio's semantics; keep what arrived.

        Nothing changes before ``recv_into`` succeeds, and nothing awaits
        between its success and the bytes being appended.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        new_chunk = self.allocator._auto_chunk
        waited = False
        while True:
            # An auto chunk gives its bytes back when dropped: every path out of this
            # loop that does not keep it frees it (an idle reader holds no chunk).
            chunk = new_chunk(carry + size)
            view = memoryview(chunk)
            try:
                n = raw.recv_into(view[carry:] if carry else view, size)
            except BlockingIOError:
                del view, chunk
                await self._wait_readable(raw)
                waited = True
                continue
            except OSError as exc:
                raise _stream_error(exc) from None
            break
        if n:
            self._keep(chunk, view, carry, n)
            self._trimmed = False
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return n

    async def _wait_readable(self, raw: _stdlib_socket.socket) -> None:
        if self._idle_trim is not None and not self._trimmed and not len(self._mem):
            with trio.move_on_after(self._idle_trim):
                await trio.lowlevel.wait_readable(raw)
                return
            self.allocator.trim()
            self._trimmed = True
        await trio.lowlevel.wait_readable(raw)

    async def _recv_stream(self, size: int, carry: int) -> int:
        """receive_some from any ReceiveStream and copy once into native memory."""
        data = await self.stream.receive_some(size)
        n = len(data)
        if n:
            chunk = self.allocator._auto_chunk(carry + n)
            view = memoryview(chunk)
            view[carry:] = data
            self._keep(chunk, view, carry, n)
            self._copied += n
        return n


class Frames(Generic[_T]):
    """The async iterator behind :meth:`StreamReader.frames` (a class, not an
    async generator, so an abandoned loop leaves nothing to finalize)."""

    def __init__(self, rx: StreamReader, codec: Any, *, views: bool, batch: bool) -> None:
        self._rx = rx
        self._batch = batch
        rx._contiguous = views
        if views:
            joiner = _JoinAllocator(rx)
            self._split: Callable[[Reader], list[Any]] = lambda r: codec.split_views(r, joiner)
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
        r = rx._reader
        split = self._split
        while True:
            frames = split(r)
            if frames:
                self._pending = frames
                if self._batch:
                    return frames
                self._next = 1
                return frames[0]
            if not await rx._receive():
                if len(r):
                    raise IncompleteReadError(
                        f"the stream ended inside a frame: {len(r)} bytes of it arrived",
                        partial=len(r),
                    )
                raise StopAsyncIteration


def _raw_socket(stream: Any) -> _stdlib_socket.socket | None:
    """The stdlib socket a trio.SocketStream wraps, for non-blocking recv_into/sendmsg."""
    if isinstance(stream, trio.SocketStream):
        raw = getattr(stream.socket, "_sock", None)
        if isinstance(raw, _stdlib_socket.socket):
            return raw
    return None


def _stream_error(exc: OSError) -> Exception:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def _disown_all(chunks: deque[tuple[Any, int]]) -> None:
    """Let go of every chunk: each returns its bytes when its last view is gone."""
    while chunks:
        chunks.popleft()[0].disown()


class _JoinAllocator:
    """What ``split_views`` mallocs a joined frame from: a chunk of the reader's
    allocator that the reader lets go of at once, so it returns when the frame's
    last view is gone."""

    __slots__ = ("_rx",)

    def __init__(self, rx: StreamReader) -> None:
        self._rx = rx

    def malloc(self, n: int) -> memoryview:
        chunk = self._rx.allocator._auto_chunk(n)
        chunk.disown()
        return memoryview(chunk)
