"""The receive engine: buffering into native chunks, with no event loop in it.

Strategy (h11's sans-IO style). A :class:`ReceiveEngine` owns one
:class:`~membuf.Memory` of received chunks and one :class:`~membuf.Reader`
following it; it never waits and never touches a socket. An adapter
(``_trio``, ``_asyncio``, ``_anyio``, ``_tls``) drives it:

* ``plan(needed)`` before a receive: let go of consumed chunks, pick the
  receive size (and how many buffered bytes to carry into the new chunk);
* ``buffer(size)`` hands out the writable tail of a fresh auto chunk (the
  ``recv_into`` / ``get_buffer`` / ``SSLObject.read`` target);
* ``commit(n)`` keeps what arrived (the chunk gives its unused tail back at
  once) or ``drop()`` forgets the chunk; ``feed(data)`` is the copying path
  for streams that hand out bytes.

Nothing changes between ``buffer`` and ``commit`` except the chunk's bytes, so
a read cancelled while its adapter waits has consumed nothing and a retry finds
every byte that arrived (docs/design.md §6).

*Receive size.* It starts at ``chunk_size``, doubles while receives fill their
chunk and halves when they come back mostly empty. How far it may grow depends
on what reads wait for (a decaying maximum of "buffered + still needed"):
small items cap it at 4 x ``chunk_size`` (parsed while in cache), large ones
at 64 x ``chunk_size``, never past ``max_buffered``.

*Coalescing.* With ``contiguous`` set (``frames(views=True)``) a partial item
of at most half the new chunk is carried to its head, so frames never span
chunks; in every mode a partial item that arrived in 8 or more pieces is
carried the same way, so a peer dribbling one byte per packet cannot make
each parse walk thousands of segments.

*Ownership.* Chunks are ``membuf._core`` auto chunks kept in receive order
with the stream offset where each ends; a chunk is let go (``disown``) once
every byte of it is consumed, and from then on lives exactly as long as the
views the user holds (``Allocator.stats().pinned``). ``idle()`` (the stream
was quiet for ``idle_trim`` seconds) copies a buffered partial item out of
its receive chunk into a right-sized ``bytes`` and trims a reader-owned
allocator, so an idle connection holds no native memory, partial frame or
not. ``release()`` lets go of everything and never raises.

*Limit.* Bytes buffered but not consumed never exceed ``max_buffered``; a read
that needs more raises :class:`~membuf.BufferLimitError` with the exact count
when it is known (``frame_need`` reads a length prefix for that).
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

from .._core import Chunk
from ..allocator import Allocator
from ..codecs import LengthPrefixed
from ..errors import BufferLimitError, MalformedError, NeedMore
from ..memory import Memory, RecyclableMemory
from ..reader import Reader
from ._options import StreamOptions

__all__ = ["ReceiveEngine", "disown_all"]

_MAX_SEGMENTS = 8   # unconsumed segments before a receive coalesces them (if short)
_WIDTHS = {"be16": 2, "be24": 3, "be32": 4, "le16": 2, "le32": 4}


class ReceiveEngine:
    """Received-but-unconsumed bytes in native chunks, and the bookkeeping of receiving.

    Args:
        allocator: where chunks come from; ``None`` makes one owned by this engine.
        options: the :class:`StreamOptions` (sizes, limit, idle trim).
    """

    __slots__ = (
        "allocator", "own_allocator", "chunk_size", "max_buffered", "idle_trim",
        "mem", "reader", "contiguous", "eof", "closed", "busy", "trimmed", "error",
        "_recv_size", "_base_recv", "_max_recv", "_cap", "_item", "_carry", "_chunk", "_view",
        "received", "receives", "copied", "compacted", "retained", "_chunks", "_kept",
        "_finalizer", "__weakref__",
    )

    def __init__(self, allocator: Allocator | None, options: StreamOptions) -> None:
        if allocator is not None and not isinstance(allocator, Allocator):
            raise TypeError(f"allocator must be a membuf.Allocator, got {type(allocator).__name__}")
        self.own_allocator = allocator is None
        self.allocator: Allocator = Allocator() if allocator is None else allocator
        chunk, limit = options.chunk_size, options.max_buffered
        self.chunk_size = chunk
        self.max_buffered = limit
        self.idle_trim = options.idle_trim
        self.mem = Memory()
        self.reader = Reader(self.mem)
        self.contiguous = False      # set by frames(views=True): keep frames in one chunk
        self.eof = False             # the peer ended the stream (or it broke: see error)
        self.closed = False          # release() ran: reads refuse
        self.busy = False            # a receive is in progress (one reader task at a time)
        self.trimmed = True          # nothing received since the last idle()
        self.error: BaseException | None = None   # why the stream broke, raised after the data
        self._recv_size = chunk
        self._base_recv = max(chunk, min(limit, 4 * chunk))
        self._max_recv = max(chunk, min(limit, 64 * chunk))
        self._cap = self._base_recv
        self._item = 0               # decaying max of what reads waited for
        self._carry = 0
        self._chunk: Any = None      # the chunk handed out by buffer(), until commit/drop
        self._view: memoryview | None = None
        self.received = self.receives = self.copied = self.compacted = self.retained = 0
        # Receive chunks in order, each with the stream offset where its bytes end.
        self._chunks: deque[tuple[Any, int]] = deque()
        self._kept = 0               # bytes ever appended to mem (where the last chunk ends)
        # An engine dropped without release() lets go of its chunks all the same.
        self._finalizer = weakref.finalize(self, disown_all, self._chunks)

    # -- receiving -------------------------------------------------------------

    def check(self, needed: int, exact: bool = True) -> None:
        """Raise BufferLimitError when ``needed`` more bytes would pass ``max_buffered``.

        ``exact``: ``needed`` is what the read needs, not a lower bound.
        """
        buffered = len(self.reader)
        if needed > self.max_buffered - buffered:
            raise self.limit_error(buffered + needed, exact)

    def limit_error(self, size: int, exact: bool = True) -> BufferLimitError:
        limit = self.max_buffered
        need = f"{size} bytes" if exact else f"more than {size - 1} bytes"
        return BufferLimitError(
            f"a read needs {need} buffered at once, over max_buffered={limit}; raise "
            "max_buffered (an option of open_tcp/serve_tcp/start_server/StreamReader) or "
            "read in smaller pieces",
            size=size, limit=limit, exact=exact,
        )

    def plan(self, needed: int = 1, item: int = 0) -> int:
        """Before a receive: let go of consumed chunks, return the receive size (>= 1).

        The size is clipped to the room left under ``max_buffered`` (callers
        check the limit first, see :meth:`check`), and never below one byte.
        ``item``: the size of what the waiting read waits for, when bytes beyond
        it are buffered (a push adapter receiving ahead of its reader); by
        default, everything buffered plus ``needed``.
        """
        self.release_consumed()
        buffered = len(self.reader)
        room = self.max_buffered - buffered
        decayed = self._item - (self._item >> 3)
        self._item = item = max(decayed, item or buffered + needed)
        self._cap = min(self._max_recv, max(self._base_recv, 16 * item))
        size = max(1, min(max(self._recv_size, needed), room))
        carry = 0
        if buffered <= size >> 1 and (self.contiguous or self.mem.count >= _MAX_SEGMENTS):
            carry = buffered
        self._carry = carry
        return size

    def buffer(self, size: int) -> memoryview:
        """A fresh chunk for ``carry + size`` bytes; returns the part a receive fills.

        The chunk gives its bytes back when dropped, so an adapter that does not
        commit it (would block, error, cancelled) frees it by dropping it.
        """
        carry = self._carry
        chunk = self.allocator._auto_chunk(carry + size)
        view = memoryview(chunk)
        self._chunk = chunk
        self._view = view
        return view[carry:] if carry else view

    def drop(self) -> None:
        """Forget the chunk handed out by :meth:`buffer` (nothing arrived in it)."""
        self._chunk = self._view = None

    def commit(self, n: int) -> None:
        """``n`` bytes (> 0) arrived in the last :meth:`buffer`: keep them."""
        chunk, view, carry = self._chunk, self._view, self._carry
        self._chunk = self._view = None
        assert chunk is not None and view is not None, "commit without buffer"
        if carry:
            self.reader.read_into(view[:carry])   # consumes the partial item...
            self.release_consumed()               # ...and lets go of where it was
            self.compacted += carry
        size = carry + n
        chunk.shrink(size)
        self.mem.push(view[:size])
        self._kept += size
        self._chunks.append((chunk, self._kept))
        self.trimmed = False
        self.received += n
        self.receives += 1
        recv_size, cap = self._recv_size, self._cap
        if recv_size > cap:
            self._recv_size = max(recv_size >> 1, cap)
        elif n >= recv_size:
            self._recv_size = min(2 * recv_size, cap)
        elif n < recv_size >> 3 and recv_size > self.chunk_size:
            self._recv_size = max(recv_size >> 1, self.chunk_size)

    def feed(self, data: Any) -> None:
        """The copying path: ``data`` (bytes-like, non-empty) arrived; copy it into a chunk.

        Call :meth:`plan` first (it decides the carry); ``stats().copied`` counts it.
        """
        n = len(data)
        view = self.buffer(n)
        view[:] = data
        self.copied += n
        self.commit(n)

    def release_consumed(self) -> None:
        """Drop the consumed prefix of the Memory and let go of fully consumed chunks."""
        mem = self.mem
        left = len(self.reader)
        if len(mem) != left:
            if left:
                self.reader.clip_front()
            else:                     # all consumed (the common case): nothing to clip
                mem.clear()
                self.reader._park()   # drop its view of the last segment too
        chunks = self._chunks
        consumed = self._kept - left
        while chunks and chunks[0][1] <= consumed:
            chunks.popleft()[0].disown()

    def idle(self) -> None:
        """The stream was quiet for ``idle_trim``: hold no native memory beyond need.

        A buffered partial item is copied out of its receive chunk(s) into one
        right-sized ``bytes`` (counted in ``compacted``), every chunk is let go,
        and a reader-owned allocator returns its free arenas to the OS.
        """
        self._chunk = self._view = None
        self.release_consumed()
        buffered = len(self.reader)
        if buffered and self._chunks:
            data = self.reader.read_bytes(buffered)
            self.release_consumed()   # all consumed: every chunk let go
            self.mem.push(data)
            self._kept += buffered
            self.compacted += buffered
        if self.own_allocator:
            self.allocator.trim()
        self.trimmed = True

    # -- frames and read_frame -----------------------------------------------------

    def frame_need(self, codec: Any) -> tuple[int, bool]:
        """How many more bytes the partial frame at the cursor needs, and whether exact.

        A length-prefixed frame says (its prefix is read without consuming it);
        any other codec needs at least one more byte.
        """
        if not isinstance(codec, LengthPrefixed) or codec.offset or codec.adjust:
            return 1, False         # (a header before the field, or an adjusted length)
        r = self.reader
        have = len(r)
        before = r.offset
        prefix = codec.prefix
        try:
            if prefix == "leb128":
                n = r.read_leb128()
            elif prefix in _WIDTHS:
                n = r.read_le(_WIDTHS[prefix]) if prefix[0] == "l" else r.read_be(_WIDTHS[prefix])
            else:                                   # a prefix kind this engine does not know
                return 1, False
        except NeedMore as exc:
            return exc.needed, False
        except MalformedError:
            return 1, False                          # the codec raises it on the next split
        head = r.offset - before
        r.unread(head)
        if n > codec.max_frame:
            return 1, False
        return max(1, head + n - have), True

    def take_frame(self, n: int) -> RecyclableMemory:
        """Consume ``n`` buffered bytes as a frame that holds them (no copy)."""
        self.release_consumed()
        r = self.reader
        r.skip(n)
        frame = RecyclableMemory(self.allocator)
        for piece in r.clip_front():
            if isinstance(piece.obj, Chunk):
                frame._hold(piece)    # a stream-owned chunk: recycle lets go of it
            else:
                frame.push(piece)     # the bytes of an idle-compacted partial item
        self.retained += n
        return frame

    # -- closing ---------------------------------------------------------------

    def release(self) -> None:
        """Let go of every chunk and of the buffered bytes (idempotent, never raises).

        Views the user holds stay valid (their chunks return when the views die).
        Whatever a handler did to the reader, this brings every byte back.
        """
        if self.closed:
            return
        self.closed = True
        self._chunk = self._view = None
        old_reader, old_mem = self.reader, self.mem
        self.mem = Memory()
        self.reader = Reader(self.mem)
        try:
            old_mem.clear()
            old_reader._park()        # a read suspended in another task holds it
        except Exception:             # pragma: no cover - a broken reader still lets go below
            pass
        disown_all(self._chunks)
        if self.own_allocator:
            try:
                if not self.allocator.stats().in_use:
                    self.allocator.trim()
            except Exception:         # pragma: no cover - trimming is an optimisation
                pass

    # -- state -------------------------------------------------------------------

    def owned(self) -> int:
        return sum(c.nbytes for c, _ in self._chunks)

    @property
    def recv_size(self) -> int:
        return self._recv_size


def disown_all(chunks: deque[tuple[Any, int]]) -> None:
    """Let go of every chunk: each returns its bytes when its last view is gone."""
    while chunks:
        chunks.popleft()[0].disown()


class JoinAllocator:
    """What ``split_views`` mallocs a joined frame from: a chunk of the engine's
    allocator let go of at once, so it returns when the frame's last view is gone."""

    __slots__ = ("_engine",)

    def __init__(self, engine: ReceiveEngine) -> None:
        self._engine = engine

    def malloc(self, n: int) -> memoryview:
        chunk = self._engine.allocator._auto_chunk(n)
        chunk.disown()
        return memoryview(chunk)
