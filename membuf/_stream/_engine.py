"""The receive engine: buffering into native chunks, with no event loop in it.

Strategy (h11's sans-IO style). A :class:`ReceiveEngine` owns one
:class:`~membuf.Memory` of received chunks and one :class:`~membuf.Reader`
following it; it never waits and never touches a socket. An adapter
(``_trio``, ``_asyncio``, ``_anyio``, ``_tls``) drives it:

* ``plan(needed)`` before a receive: let go of consumed chunks, pick the
  receive size (and how many buffered bytes to carry into the new chunk);
* ``buffer(size)`` hands out ``size`` writable bytes in the free tail of the
  current receive chunk (the ``recv_into`` / ``get_buffer`` /
  ``SSLObject.read`` target), reserving a new chunk only when the tail is too
  short;
* ``commit(n)`` keeps what arrived (the tail starts after it) or ``drop()``
  forgets the receive (the tail stays free); ``feed(data)`` is the copying
  path for streams that hand out bytes.

Nothing changes between ``buffer`` and ``commit`` except the chunk's bytes, so
a read cancelled while its adapter waits has consumed nothing and a retry finds
every byte that arrived (docs/design.md §6).

*Receive size.* It starts at ``chunk_size``, doubles while receives fill their
chunk and halves when they come back mostly empty. How far it may grow depends
on what reads wait for (a decaying maximum of "buffered + still needed"):
small items cap it at 4 x ``chunk_size`` (parsed while in cache), large ones
at 16 x the item, never past 64 x ``chunk_size`` or ``max_buffered``; and the
open engines of the process share ``RECEIVE_BUDGET`` (16 MiB): past 16
connections receiving large items, each is held towards one item per
receive. One connection gains from receiving ahead (64 KiB frames: 0.33x of
raw ``recv_into`` at one item per receive, 0.90x at 16), and many pay for it
in resident memory (peak RSS over a burst on 256 connections: 16 x the item,
675 MiB; 1 x the item, 98 MiB).
An engine that makes its own allocator starts it with a 256 KiB arena, room
for a receive chunk and the one after it without a chain of growing arenas.

*Coalescing.* With ``contiguous`` set (``frames(views=True)``) a partial item
of at most half the new chunk is carried to its head, so frames never span
chunks; in every mode a partial item that arrived in 8 or more pieces is
carried the same way, so a peer dribbling one byte per packet cannot make
each parse walk thousands of segments.

*Receiving into the tail.* A receive chunk holds at least ``4 x chunk_size``
bytes (or the whole receive, when larger), and receives fill it one after the
other: in steady state a receive makes no native call at all (no malloc, no
shrink, no free). Once every byte of it is consumed and no view of it is left
(``chunk.exports``: each receive makes its own view), receives start again at
its head, on pages already resident. A chunk is *retired* when the next receive does not fit in
its tail (or on ``idle()``/``release()``/a reset of the allocator): it gives
its unused tail back in one native call and joins the chunks being consumed.
Until then its tail is reserved but not in use: ``Allocator.stats()`` leaves
it out (the engine is one of the allocator's tracked tails), so the counts
stay exact at every public call.

*Ownership.* Chunks are ``membuf._core`` auto chunks kept in receive order
with the stream offset where each ends; a retired chunk is let go
(``disown``) once every byte of it is consumed, and from then on lives
exactly as long as the views the user holds (``Allocator.stats().pinned``).
A view the user keeps pins its whole chunk, several receives' worth. ``idle()`` (the stream
was quiet for ``idle_trim`` seconds) copies a buffered partial item out of
its receive chunk into a right-sized ``bytes`` and trims a reader-owned
allocator, so an idle connection holds no native memory, partial frame or
not. ``release()`` lets go of everything and never raises.

*Limit.* Bytes buffered but not consumed never exceed ``max_buffered``; a read
that needs more raises :class:`~membuf.BufferLimitError` with the exact count
when it is known (``frame_need`` reads a length prefix for that).
"""

from __future__ import annotations

import threading
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
_CHUNK_RECEIVES = 4  # a receive chunk holds at least this many chunk_size receives
_OWN_ARENA = 256 << 10  # the first arena of an allocator the engine makes for itself
# What the receive sizes of all open engines may add up to before each is held to about
# one item: one connection receives 16 items at a time, 256 connections one each.
RECEIVE_BUDGET = 16 << 20
_live = [0]             # engines not yet released, process-wide
_live_lock = threading.Lock()
_WIDTHS = {"be16": 2, "be24": 3, "be32": 4, "le16": 2, "le32": 4}


class ReceiveEngine:
    """Received-but-unconsumed bytes in native chunks, and the bookkeeping of receiving.

    Args:
        allocator: where chunks come from; ``None`` makes one owned by this engine.
        options: the :class:`StreamOptions` (sizes, limit, idle trim).
    """

    __slots__ = (
        "allocator", "own_allocator", "chunk_size", "max_buffered", "idle_trim",
        "mem", "reader", "contiguous", "_eof", "closed", "busy", "trimmed", "error",
        "_recv_size", "_base_recv", "_max_recv", "_cap", "_item", "_carry", "_chunk", "_view",
        "_cur", "_cur_off", "_start",
        "received", "receives", "copied", "compacted", "retained", "_chunks", "_kept",
        "_finalizer", "_counted", "__weakref__",
    )

    def __init__(self, allocator: Allocator | None, options: StreamOptions) -> None:
        if allocator is not None and not isinstance(allocator, Allocator):
            raise TypeError(f"allocator must be a membuf.Allocator, got {type(allocator).__name__}")
        self.own_allocator = allocator is None
        self.allocator: Allocator = (Allocator(arena_size=_OWN_ARENA) if allocator is None
                                     else allocator)
        chunk, limit = options.chunk_size, options.max_buffered
        self.chunk_size = chunk
        self.max_buffered = limit
        self.idle_trim = options.idle_trim
        self.mem = Memory()
        self.reader = Reader(self.mem)
        self.contiguous = False      # set by frames(views=True): keep frames in one chunk
        self._eof = False            # the peer ended the stream (or it broke: see error)
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
        self._view: memoryview | None = None   # ...and the region of it: carry + size
        self._start = 0              # where that region starts in the chunk
        # The current receive chunk: receives fill it from _cur_off on (its tail).
        self._cur: Any = None
        self._cur_off = 0
        self.received = self.receives = self.copied = self.compacted = self.retained = 0
        # Receive chunks in order, each with the stream offset where its bytes end.
        self._chunks: deque[tuple[Any, int]] = deque()
        self._kept = 0               # bytes ever appended to mem (where the last chunk ends)
        # An engine dropped without release() lets go of its chunks all the same.
        self._counted = [True]       # in _live until release() or the finalizer
        with _live_lock:
            _live[0] += 1
        self._finalizer = weakref.finalize(self, _finish, self._chunks, self._counted)

    @property
    def eof(self) -> bool:
        """The peer ended the stream (or it broke: see ``error``); no more receives."""
        return self._eof

    @eof.setter
    def eof(self, value: bool) -> None:
        self._eof = value
        if value:
            self.retire()            # no receive comes: the chunk's tail goes back now

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
        # 16 items per receive when few connections share the receive budget, one item
        # each when many do: receiving ahead buys few syscalls, and costs resident memory
        # on every connection
        share = max(item, RECEIVE_BUDGET // max(1, _live[0]))
        self._cap = min(self._max_recv, max(self._base_recv, min(16 * item, share)))
        size = max(1, min(max(self._recv_size, needed), room))
        carry = 0
        if buffered <= size >> 1 and (self.contiguous or self.mem.count >= _MAX_SEGMENTS):
            carry = buffered
        self._carry = carry
        return size

    def buffer(self, size: int) -> memoryview:
        """``size`` writable bytes for a receive, after ``carry`` bytes kept for the
        partial item: in the current chunk's tail when it is long enough (no native
        call), else in a new chunk (the old one retires).

        Nothing is committed until :meth:`commit`: an adapter that does not commit
        (would block, error, cancelled) just forgets the view (or calls :meth:`drop`).
        """
        carry = self._carry
        need = carry + size
        cur, off = self._cur, self._cur_off
        if cur is None or cur.nbytes - off < need:
            self.retire()
            cur = self._new_chunk(need)
            off = 0
        # a view of its own per receive: chunk.exports then counts live views exactly
        view = memoryview(cur)[off : off + need]
        self._chunk = cur
        self._view = view
        self._start = off
        return view[carry:] if carry else view

    def _new_chunk(self, need: int) -> Any:
        """A new current receive chunk of at least ``need`` bytes (the caller retired the
        old one); its tail is counted out of the allocator's in_use from now on."""
        alloc = self.allocator
        with alloc._tails_lock:               # stats() sees the chunk and its tail together
            chunk = alloc._auto_chunk(max(need, _CHUNK_RECEIVES * self.chunk_size))
            if chunk.epoch != alloc._epoch:   # pragma: no cover - a reset raced the malloc
                return chunk                  # (a chunk of a stale epoch frees nothing)
            self._cur, self._cur_off = chunk, 0
            alloc._track_tail(self)
        return chunk

    def retire(self) -> None:
        """The current receive chunk takes no more receives: its unused tail goes back
        now (one native call) and, once consumed, it is let go like any other chunk."""
        cur = self._cur
        if cur is None:
            return
        alloc = self.allocator
        with alloc._tails_lock:
            if self._cur is not cur:          # pragma: no cover - a reset dropped it
                return
            self._cur = None
            used = self._cur_off
            self._cur_off = 0
            if cur.epoch == alloc._epoch:     # after a reset the bytes are not ours
                cur.shrink(used)              # (no view of the tail exists: receives ended)
        if not used:
            return                            # nothing committed in it: it dies here
        consumed = self._kept - len(self.reader)
        if self._chunks and self._chunks[-1][0] is cur and self._chunks[-1][1] <= consumed:
            self._chunks.pop()[0].disown()    # consumed already: let go at once

    def _tail_bytes(self) -> int:
        """Bytes of the current receive chunk not received into (stats() leaves them out)."""
        cur = self._cur
        if cur is None or cur.epoch != self.allocator._epoch:
            return 0
        return int(cur.nbytes) - self._cur_off

    def _drop_run(self) -> None:
        """The allocator was reset: receive into a new chunk next time (the old one's
        bytes are no longer the allocator's; buffered bytes in it stay readable)."""
        self._cur = None
        self._cur_off = 0

    def drop(self) -> None:
        """Forget the region handed out by :meth:`buffer` (nothing arrived in it)."""
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
        self.mem.push(view[:size] if size < len(view) else view)
        self._kept += size
        chunks = self._chunks
        if chunk is self._cur:
            self._cur_off = self._start + size    # the tail starts after what arrived
            if chunks and chunks[-1][0] is chunk:
                chunks[-1] = (chunk, self._kept)  # one entry per chunk: where it ends
            else:
                chunks.append((chunk, self._kept))
        else:                                     # pragma: no cover - a reset dropped it
            chunks.append((chunk, self._kept))
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
        cur = self._cur
        while chunks and chunks[0][1] <= consumed and chunks[0][0] is not cur:
            chunks.popleft()[0].disown()      # (the current chunk stays: it receives on)
        if chunks and chunks[0][0] is cur and chunks[0][1] <= consumed and not cur.exports:
            chunks.popleft()                  # consumed and viewed by no one: receive
            self._cur_off = 0                 # from its start again (the same pages)

    def idle(self) -> None:
        """The stream was quiet for ``idle_trim``: hold no native memory beyond need.

        A buffered partial item is copied out of its receive chunk(s) into one
        right-sized ``bytes`` (counted in ``compacted``), every chunk is let go,
        and a reader-owned allocator returns its free arenas to the OS.
        """
        self._chunk = self._view = None
        self.retire()
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
        try:
            self.retire()
        except Exception:             # pragma: no cover - a refused shrink keeps the tail
            self._cur = None
        old_reader, old_mem = self.reader, self.mem
        self.mem = Memory()
        self.reader = Reader(self.mem)
        try:
            old_mem.clear()
            old_reader._park()        # a read suspended in another task holds it
        except Exception:             # pragma: no cover - a broken reader still lets go below
            pass
        disown_all(self._chunks)
        _uncount(self._counted)
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


def _uncount(counted: list[bool]) -> None:
    with _live_lock:
        if counted[0]:
            counted[0] = False
            _live[0] -= 1


def _finish(chunks: deque[tuple[Any, int]], counted: list[bool]) -> None:
    """The finalizer of an engine dropped without release()."""
    disown_all(chunks)
    _uncount(counted)


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
