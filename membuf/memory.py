"""Memory (a list of byte segments) and RecyclableMemory (one that owns some).

Strategy. A :class:`Memory` is a scatter/gather buffer: a Python list of
one-dimensional unsigned-byte memoryviews kept by reference (never copied),
plus a running total length updated on every push, so ``len(m)`` is O(1) and
never recomputed. Readers (``membuf.reader``) share the list object itself, so
a Reader sees segments pushed after it was made. The list and the counters
live in C fields of the base class ``membuf._core.MemoryCore`` (native/core/
memcore.c), so the compiled Reader reads them directly and the framers make
Memory frames without a Python call; Python code sees them as attributes.

Invariants:

* ``_size == sum(len(s) for s in _segs)`` after every public call.
* ``_segs`` is only ever mutated in place (append/extend/del), never rebound:
  Readers hold the same list.
* ``_dropped`` / ``_dsegs`` count the bytes / segments ever removed from the
  front (``Reader.clip_front``, ``clear``). Readers keep absolute positions and
  subtract these, so clipping by one Reader does not corrupt another (GoMem's
  ``ClipFront`` bug).

:class:`RecyclableMemory` adds ownership: ``_own`` runs parallel to ``_segs``
(0 for a segment of owned bytes, -1 for one held by reference, -2 for a view of
stream-owned bytes) and ``_pairs`` is a flat ``[addr0, len0, addr1, len1, ...]``
list of owned native ranges that ``recycle`` frees in one native call. A
``next_n`` *run* (one native range that many pieces are bumped from) is one pair
from the moment it is reserved, its unused tail included, so recycle frees a
burst of pieces as a few ranges; ``next_n`` itself is compiled
(``_core.RecyclableCore``, native/core/bump.c), with a pure-Python twin under
``MEMBUF_PURE_PYTHON=1``. The finalizer closes over the pair and segment lists (not
over the object), so it never keeps the object alive; a range that was partly freed
behind the owner's back is left allocated (only a run's unused tail still goes back),
since a finalizer must never free bytes malloc may have handed to someone else. Bytes handed to a ``clip_front``
release callback are cut out of the pair that holds them (it shrinks or splits),
so nothing is ever freed twice.

Not handled on purpose: thread safety (one Memory per task), strided views
(refused with ``TypeError``).
"""

from __future__ import annotations

import functools
import operator
import os
import socket
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

from . import _core
from .errors import (
    FreeError,
    MalformedError,
    MembufError,
    MemoryLimitError,
    NeedMore,
    UseAfterFreeError,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .allocator import Allocator
    from .reader import Reader

__all__ = ["Memory", "RecyclableMemory"]

_FIRST_RUN = 4 << 10     # RecyclableMemory.next_n: the first run, doubling up to _MAX_RUN
_MAX_RUN = 256 << 10
_EAUTO = -103            # _core.free_refusal: bytes a stream chunk gives back on its own
_OWNED = 0               # RecyclableMemory._own: a segment of owned bytes (in _pairs)
_HELD = -2               # RecyclableMemory._own: a view of such bytes, let go by recycle

#: ``MEMBUF_PURE_PYTHON`` set (to anything but empty or ``0``) selects the pure-Python
#: ``RecyclableMemory.next_n`` (the compiled one is ``membuf._core.RecyclableCore``'s).
PURE_PYTHON: bool = os.environ.get("MEMBUF_PURE_PYTHON", "") not in ("", "0")

# The most segments one gather write (writev/sendmsg) takes: the OS limit, at most 1024.
IOV_MAX: int = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def as_view(obj: Any) -> memoryview:
    """``obj`` as a 1-D unsigned-byte memoryview over the same bytes (no copy).

    Raises:
        TypeError: ``obj`` is not bytes-like, or is not C-contiguous.
    """
    mv = obj if type(obj) is memoryview else memoryview(obj)
    if mv.format != "B" or mv.ndim != 1:
        try:
            mv = mv.cast("B")
        except TypeError:
            raise TypeError(
                f"Memory segments must be contiguous bytes-like objects, got a "
                f"non-contiguous {type(obj).__name__}; copy it with bytes() first"
            ) from None
    elif not mv.c_contiguous:
        raise TypeError(
            "Memory segments must be contiguous; got a strided memoryview, copy it with bytes() first"
        )
    elif mv.strides != (1,):     # one byte (or none) with another stride, as mv[::2] of 2
        mv = mv.cast("B")        # bytes: contiguous, but the compiled Reader wants stride 1
    return mv


def step_over(pending: list[memoryview], i: int, sent: int) -> int:
    """After a gather write from ``pending[i]`` sent ``sent`` bytes: the index of the
    first segment not fully sent, with that segment trimmed to its unsent tail."""
    while sent:
        n = len(pending[i])
        if sent >= n:
            sent -= n
            i += 1
        else:
            pending[i] = pending[i][sent:]
            sent = 0
    return i


class Memory(_core.MemoryCore):
    """An ordered list of byte segments held by reference, with a running length.

    Args:
        *segments: bytes-like objects (bytes, bytearray, memoryview, mmap, array...).

    >>> m = Memory(b"hel", bytearray(b"lo"))
    >>> m.push(memoryview(b" world"))
    >>> len(m), m.count, bytes(m), m[2:7].tobytes()
    (11, 3, b'hello world', b'llo w')
    >>> m == Memory(b"hello", b" ", b"world") == b"hello world"
    True
    """

    # _segs, _size, _dropped (bytes ever removed from the front) and _dsegs (segments
    # ever removed from the front) are MemoryCore's, and so are __init__(*segments)
    # (which pushes them), push and len(): C, with no Python frame per call.
    __slots__ = ("__weakref__",)

    # -- building -----------------------------------------------------------

    # push(*segments) is MemoryCore's (C): every segment through as_view's rules, all
    # or none appended.

    def extend(self, other: Memory) -> None:
        """Append every segment of ``other`` by reference (``other`` is unchanged)."""
        self._segs.extend(other._segs)
        self._size += other._size

    def clear(self) -> None:
        """Drop every segment. A Reader at the end keeps working on later pushes."""
        self._dropped += self._size
        self._dsegs += len(self._segs)
        self._segs.clear()
        self._size = 0

    # -- looking ------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of segments (empty ones included)."""
        return len(self._segs)

    def __iter__(self) -> Iterator[memoryview]:
        """The segments as memoryviews, in order (the views themselves, no copy)."""
        return iter(self._segs)

    def tobytes(self) -> bytes:
        """A copy of all the bytes, joined (also ``bytes(m)``; ``to_bytes`` is an alias)."""
        segs = self._segs
        if len(segs) == 1:
            return bytes(segs[0])
        return b"".join(segs)

    to_bytes = tobytes
    __bytes__ = tobytes

    @overload
    def __getitem__(self, key: slice) -> Memory: ...
    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...

    def __getitem__(self, key: slice | SupportsIndex) -> Memory | int:
        """``m[i:j]``: a zero-copy sub-range (a Memory of views); ``m[i]``: one byte.

        Indices follow ``bytes``: negative ones count from the end and a slice is
        clipped to the bytes there are. O(segments) to find the range.

        Raises:
            ValueError: a slice step other than 1 (a Memory range is contiguous).
            IndexError: ``m[i]`` with ``i`` out of range.
        """
        size = self._size
        if isinstance(key, slice):
            start, stop, step = key.indices(size)
            if step != 1:
                raise ValueError(f"a Memory slice has step 1 (its bytes are contiguous), got {step}")
            n = stop - start
            views: list[memoryview] = []
            if n > 0:
                for seg in self._segs:
                    k = len(seg)
                    if start >= k:
                        start -= k
                        continue
                    take = min(k - start, n)
                    views.append(seg[start : start + take])
                    n -= take
                    start = 0
                    if not n:
                        break
            return from_views(views, sum(map(len, views)))
        i = operator.index(key)
        if i < 0:
            i += size
        if not 0 <= i < size:
            raise IndexError(f"Memory index {operator.index(key)} out of range for {size} bytes")
        for seg in self._segs:
            if i < len(seg):
                return seg[i]
            i -= len(seg)
        raise IndexError("Memory index out of range")  # pragma: no cover - sizes agree

    def copy_to(self, dst: Any) -> int:
        """Copy every byte into the start of the writable buffer ``dst``.

        Returns:
            The number of bytes written (``len(self)``).

        Raises:
            ValueError: ``dst`` is shorter than ``len(self)``; nothing is written.
            TypeError: ``dst`` is not a writable bytes-like object.
        """
        out = as_view(dst)
        if out.readonly:
            raise TypeError(f"copy_to needs a writable buffer, got a read-only {type(dst).__name__}")
        if len(out) < self._size:
            raise ValueError(
                f"copy_to needs {self._size} bytes, the destination has {len(out)}; nothing written"
            )
        pos = 0
        for seg in self._segs:
            n = len(seg)
            out[pos : pos + n] = seg
            pos += n
        return pos

    def reader(self) -> Reader:
        """A new :class:`~membuf.Reader` at the start of this Memory."""
        from .reader import Reader  # the reader layer sits on top of this one

        return Reader(self)

    # -- comparing ----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        """Content equality with another Memory or any bytes-like, however split."""
        if isinstance(other, Memory):
            if other._size != self._size:
                return False
            theirs: Iterable[memoryview] = other._segs
        else:
            try:
                view = as_view(other)
            except TypeError:
                return NotImplemented
            if len(view) != self._size:
                return False
            theirs = (view,)
        return _same_content(self._segs, theirs)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        head = self.to_bytes()[:16] if self._size <= 4096 else bytes(self._segs[0][:16])
        more = "..." if self._size > 16 else ""
        return f"<{type(self).__name__} {self._size} bytes in {len(self._segs)} segments {head!r}{more}>"

    # -- writing out ----------------------------------------------------------

    def write_to(self, target: Any) -> int:
        """Write every byte with gather writes (``socket.sendmsg`` or ``os.writev``).

        Partial writes are continued until everything is written; the Memory is
        left unchanged. Meant for blocking sockets and file descriptors: if the
        target raises ``BlockingIOError`` after part of the data went out,
        the exception's ``characters_written`` says how much did.

        Args:
            target: a socket, an int file descriptor, or an object with ``fileno()``.

        Returns:
            The number of bytes written (``len(self)``).

        >>> import os
        >>> rfd, wfd = os.pipe()
        >>> Memory(b"ab", b"", b"cd").write_to(wfd), os.read(rfd, 10)
        (4, b'abcd')
        >>> os.close(rfd); os.close(wfd)
        """
        send: Callable[[list[memoryview]], int]
        if isinstance(target, socket.socket):
            send = target.sendmsg
        else:
            fd = target if isinstance(target, int) else target.fileno()
            send = functools.partial(os.writev, fd)

        pending = [s for s in self._segs if len(s)]
        total = 0
        i = 0
        while i < len(pending):
            try:
                sent = send(pending[i : i + IOV_MAX])
            except InterruptedError:
                continue
            except BlockingIOError as exc:
                exc.characters_written = total
                raise
            total += sent
            i = step_over(pending, i, sent)
        return total

    # -- hooks for Reader.clip_front ----------------------------------------
    # _drop_front(nsegs, head, release) is MemoryCore's (C): remove nsegs whole segments
    # and head bytes of the next one, return the removed non-empty pieces; `release` says
    # the caller hands them to a release callback (ownership leaves this Memory; see
    # RecyclableMemory._drop_front).


def from_views(views: list[memoryview], size: int) -> Memory:
    """A Memory over already-normalised views totalling ``size`` (no per-segment checks)."""
    m = _new_memory(Memory)
    m._segs = views
    m._size = size
    m._dropped = 0
    m._dsegs = 0
    return m


_new_memory = Memory.__new__
# The compiled Reader and framers make Memory frames and raise these errors.
_core._bind_reader(Memory, as_view, NeedMore, MalformedError, MembufError)


def _same_content(a: Iterable[memoryview], b: Iterable[memoryview]) -> bool:
    """Compare two equal-length segment sequences piece by piece, without joining."""
    ia, ib = iter(a), iter(b)
    va = vb = memoryview(b"")
    while True:
        while not len(va):
            va = next(ia, None)  # type: ignore[arg-type]
            if va is None:
                return True          # equal total lengths: b is exhausted too
        while not len(vb):
            vb = next(ib)
        n = min(len(va), len(vb))
        if va[:n] != vb[:n]:
            return False
        va, vb = va[n:], vb[n:]


def _free_owned(allocator: Any, pairs: list[int], epoch: list[int], origin: str | None,
                segs: list[memoryview], own: list[int]) -> None:
    """Finalizer of a RecyclableMemory collected without ``recycle``.

    ``pairs`` holds every owned range, a run's unused tail included (a run is one
    pair from the moment it is reserved). It never raises, and it never frees bytes
    that may not be the object's any more: a range the allocator refuses (some of
    it was freed elsewhere, behind the owner's back) is left allocated, because
    malloc may have handed any freed part to someone else since and nothing tells
    those bytes from the object's own; only the run's unused tail, which was never
    handed out, still goes back (:func:`_unused_tail`). A use-after-free its free
    finds (debug mode) is not lost: the allocator's next free or ``check()`` raises it.
    """
    live = _live_pairs(pairs, epoch, allocator)
    pairs.clear()
    if origin is not None and live:
        warnings.warn(
            f"RecyclableMemory with {len(live) // 2} owned ranges was collected without "
            f"recycle(); freed by its finalizer. It was made at:\n{origin}",
            ResourceWarning,
            stacklevel=2,
        )
    try:
        allocator._free_batch(live, epoch[0])
    except UseAfterFreeError as exc:         # the bytes were freed; check() reports the write
        _report_later(allocator, exc)
    except MembufError:
        for i in range(0, len(live), 2):
            try:
                allocator._free_batch(live[i : i + 2], epoch[0])
            except UseAfterFreeError as exc:
                _report_later(allocator, exc)    # freed (debug): check() reports the write
            except MembufError:              # partly freed elsewhere: keep all but the tail
                tail = _unused_tail(live[i], live[i + 1], segs, own)
                if tail:
                    try:
                        allocator._free_batch(tail, epoch[0])
                    except MembufError:      # pragma: no cover - a stale view freed it
                        pass


def _report_later(allocator: Any, exc: UseAfterFreeError) -> None:
    """A finalizer must not raise: leave a use-after-free its free found (debug mode) for
    the allocator's next free or ``check()`` to raise, not lost."""
    keep = getattr(allocator, "_report_later", None)
    if keep is not None:
        keep(exc)


def _unused_tail(addr: int, n: int, segs: list[memoryview], own: list[int]) -> list[int]:
    """``[start, length]`` of the unused tail of the run owned as ``[addr, addr + n)``,
    or ``[]`` when it cannot be known for sure.

    The tail starts where the last piece handed out ends. The pieces of a run still
    in ``segs`` are always the last ones handed out (a clip drops a prefix, ``clear``
    drops them all), so the highest end of an owned segment inside the range is that
    point, provided the range still reaches its chunk's end (an older run's tail went
    back when the next run was reserved). With no piece left there is no such point,
    and nothing is freed.
    """
    end = addr + n
    top = 0
    chunk: Any = None
    for seg, o in zip(segs, own, strict=False):    # (parallel; never raise here)
        if o != _OWNED:
            continue
        try:
            k, a = _core.extent(seg)
        except (ValueError, BufferError):    # a released view: no evidence
            continue
        if k and addr <= a and a + k <= end and a + k > top:
            top, chunk = a + k, seg.obj
    if not top or top >= end:
        return []
    start = getattr(chunk, "address", None)
    size = getattr(chunk, "nbytes", None)
    if not isinstance(start, int) or not isinstance(size, int) or not start <= addr \
            or start + size != end:
        return []
    return [top, end - top]


def _live_pairs(pairs: list[int], epoch: list[int], allocator: Any) -> list[int]:
    """The owned ranges still to free: none when the allocator was reset since they were
    taken (reset freed them, and their addresses may belong to someone else by now)."""
    if epoch[0] != allocator._epoch:
        return []
    out: list[int] = []
    for i in range(0, len(pairs), 2):
        if pairs[i + 1]:
            out += (pairs[i], pairs[i + 1])
    return out


def _run_size_for(n: int, size: int) -> int:
    """The size of the run to reserve for a next_n(n) the current run cannot serve:
    the next run size, doubled until it holds at least two such pieces; 0 (an exact
    malloc) for debug mode (``size == 0``) and for pieces of more than a quarter of
    the largest run, which gain nothing from sharing a range."""
    if not size or n > _MAX_RUN // 4:
        return 0
    while size < 2 * n:
        size *= 2
    return size


class RecyclableMemory(Memory, _core.RecyclableCore):
    """A Memory that owns some of its segments and frees them together.

    Args:
        allocator: the :class:`~membuf.Allocator` that owned segments come from.

    Owned segments come from :meth:`next_n` or :meth:`push_owned` (a view of
    bytes a StreamReader received is *held*: recycle lets go of it, and the
    bytes go back once no other view remains); segments
    added with :meth:`push` or :meth:`extend` are references and are never
    freed here. :meth:`recycle` frees every owned byte in one native call and
    clears the Memory; leaving a ``with`` block recycles; an object collected
    without ``recycle`` frees its owned bytes through a finalizer (and warns
    with a ``ResourceWarning`` naming where it was made when the allocator
    is in debug mode). :meth:`clear` only forgets segments: owned bytes stay
    owned until ``recycle``.

    ``next_n`` is compiled (``membuf._core.RecyclableCore``, native/core/bump.c)
    unless ``MEMBUF_PURE_PYTHON`` is set; the slow path, which reserves runs, is
    :meth:`_next_run` here in both cases.

    >>> from membuf import Allocator
    >>> with Allocator() as a, RecyclableMemory(a) as rm:
    ...     rm.next_n(3)[:] = b"abc"
    ...     rm.push(b"def")                       # a reference, never freed
    ...     rm.to_bytes(), a.stats().in_use
    (b'abcdef', 3)
    """

    # _own, _refs and the run (_run, _run_addr, _bump, _run_end, _run_size) are
    # RecyclableCore's C fields; next_n is its C method (the pure-Python twin below
    # replaces it under MEMBUF_PURE_PYTHON).
    __slots__ = ("allocator", "_pairs", "_epoch", "_finalizer")

    def __init__(self, allocator: Allocator) -> None:
        if not hasattr(allocator, "_epoch") or not callable(getattr(allocator, "_free_batch", None)):
            raise TypeError(f"RecyclableMemory needs a membuf.Allocator, got {type(allocator).__name__}")
        super().__init__()
        self.allocator = allocator
        # _own (parallel to _segs): _OWNED, -1 (a reference) or _HELD
        self._pairs: list[int] = []    # addr0, len0, addr1, len1, ...: every owned range
        self._epoch = [allocator._epoch]  # the allocator's reset count when _pairs was filled
        # next_n bumps inside a run: one malloc'd range, owned as one pair, whose unused
        # tail [_bump, _run_end) is not the user's (stats() and owned_bytes leave it out)
        debug = getattr(allocator, "debug", False)
        self._run_size = 0 if debug else _FIRST_RUN  # debug: one malloc per next_n, tracked
        origin = None
        if debug:
            origin = "".join(traceback.format_stack(limit=8)[:-1])
        self._finalizer = weakref.finalize(
            self, _free_owned, allocator, self._pairs, self._epoch, origin, self._segs,
            self._own,
        )

    # -- owned segments -----------------------------------------------------

    if PURE_PYTHON:
        def next_n(self, n: int) -> memoryview:
            """``n`` fresh bytes, appended as an owned segment and returned (writable).

            Consecutive calls bump through a *run*: one native range reserved at a
            time (4 KiB, doubling up to 256 KiB, at least twice ``n``; larger requests
            are exact), so a burst of small buffers costs one native call per run.
            ``recycle`` gives back the pieces and the run's unused tail in one batch.

            Raises:
                ValueError: ``n`` is negative.
                TypeError: ``n`` is not an int.
                MemoryLimitError: the allocator cannot grow.
            """
            bump = self._bump
            run = self._run
            if run is not None and type(n) is int and 0 < n <= self._run_end - bump:
                self._bump = bump + n              # (a run exists only while refs > 0)
                off = bump - self._run_addr
                view = run[off : off + n]
                self._own.append(_OWNED)
                self._segs.append(view)
                self._size += n
                return view
            return self._next_run(n)

    def _next_run(self, n: int) -> memoryview:
        """next_n when the run cannot serve ``n``: give its tail back, reserve a new one."""
        alloc = self.allocator
        size = _run_size_for(n, self._run_size) if type(n) is int and n > 0 else 0
        if not size:
            view, addr = alloc._malloc_addr(n)    # exact: debug, empty, large or bad n
            self._append_owned(view, addr)
            return view
        with alloc._tails_lock:              # stats() sees the run and its tail together
            self._give_back_tail()
            try:
                run, addr = alloc._malloc_addr(size)
            except MemoryLimitError:         # no room for a run: maybe for the piece
                view, addr = alloc._malloc_addr(n)
                self._append_owned(view, addr)
                return view
            self._run_size = min(2 * size, _MAX_RUN)
            if not self._append_owned(run[:n], addr, size):
                return self._segs[-1]        # a reset came between: no run to keep
            self._start_run(run, n)
            alloc._track_tail(self)
        return self._segs[-1]

    def _give_back_tail(self) -> None:
        """Free the run's unused tail now and drop the run (the caller holds the tails
        lock). The tail is the end of the last owned range that reaches the run's end."""
        start, end = self._bump, self._run_end
        if self._run is None or start >= end:
            self._run = None
            return
        pairs = self._pairs
        for k in range(len(pairs) - 2, -1, -2):
            addr, length = pairs[k], pairs[k + 1]
            if addr <= start and addr + length == end:
                pairs[k + 1] = start - addr
                break
        else:                                # pragma: no cover - B3 says it is there
            self._run = None
            return
        self._run = None
        self.allocator._free_batch([start, end - start], self._epoch[0])

    def _drop_run(self) -> None:
        """The allocator was reset: the run is gone (nothing to free)."""
        self._run = None

    def _tail_bytes(self) -> int:
        """Bytes reserved in the run and not handed out (0 once the allocator was reset)."""
        return self._run_tail() if self._epoch[0] == self.allocator._epoch else 0

    def push_owned(self, view: Any) -> None:
        """Take ownership of ``view``, which was malloc'd from this allocator.

        Raises:
            FreeError: the allocator does not own every byte of ``view``.
        """
        mv = as_view(view)
        if not len(mv):
            self._own.append(-1)
            self._segs.append(mv)
            return
        if _core.free_refusal(mv) == _EAUTO and self.allocator.owns(mv):
            self._hold(mv)
            return
        if not self.allocator.owns(mv):
            raise FreeError(
                f"push_owned of {len(mv)} bytes that this allocator does not own; "
                "push() it by reference instead"
            )
        self._append_owned(mv, _core.extent(mv)[1])

    def _hold(self, view: memoryview) -> None:
        """Append a view of stream-owned bytes (an auto chunk's): recycle drops it."""
        self._refs = self._refs or 1
        self._own.append(_HELD)
        self._segs.append(view)
        self._size += len(view)

    def _append_owned(self, view: memoryview, addr: int, span: int | None = None) -> bool:
        """Append ``view`` as owned, its range ``[addr, addr + span)`` (``span`` defaults
        to ``len(view)``; a run's first piece owns the whole run); False when its bytes
        belong to a reset allocator.

        The reset count recorded with the pairs is the one the bytes were taken in
        (their chunk's, read under the native lock), so a reset racing this call is
        always seen: bytes from before it are kept as references, never freed.
        """
        self._refs = self._refs or 1          # usable again after the last recycle
        got = getattr(view.obj, "epoch", None)
        taken = self.allocator._epoch if got is None else int(got)
        if taken != self._epoch[0]:
            if taken < self._epoch[0]:        # forgotten by a reset we already saw
                self._own.append(-1)
                self._segs.append(view)
                self._size += len(view)
                return False
            # a reset since the older pairs were taken: they are gone; keep those
            # segments as references (their bytes stay mapped) and start over
            self._own[:] = [-1 if o >= 0 else o for o in self._own]
            self._pairs.clear()
            self._run = None
            self._epoch[0] = taken
        n = len(view)
        if span is None:
            span = n
        if span:
            self._pairs += (addr, span)
        self._own.append(_OWNED if n else -1)
        self._segs.append(view)
        self._size += n
        return taken == self.allocator._epoch

    def retain(self) -> RecyclableMemory:
        """One more holder: the bytes stay until every holder has called :meth:`recycle`.

        This is how one received frame goes to N consumers without a copy (Netty's
        ``retain``, a clone of Rust's ``Bytes``): retain once per extra consumer,
        and each consumer recycles once. Returns ``self``. Counts are not
        thread-safe: retain and recycle one object from one thread (or under a lock).

        Raises:
            FreeError: the object was already recycled by its last holder.
        """
        if self._refs <= 0:
            raise FreeError(
                "retain of a RecyclableMemory whose last holder already recycled it; "
                "retain before handing it on, not after"
            )
        self._refs += 1
        return self

    @property
    def refcount(self) -> int:
        """How many holders still have to :meth:`recycle` (0 once the bytes are given back)."""
        return self._refs

    def recycle(self) -> None:
        """One holder less; the last one frees every owned byte (one native call) and clears.

        Recycling an object whose last holder already recycled it does nothing,
        as a second ``close()`` would not; a new ``next_n``/``push`` makes it
        usable again, with one holder.

        Raises:
            FreeError: an owned range was already freed elsewhere; nothing is freed,
                the Memory and its count are left as they were.
        """
        if self._refs > 1:
            self._refs -= 1
            return
        if self._refs == 0 and not self._segs and not self._pairs:
            return
        alloc = self.allocator
        with alloc._tails_lock:               # stats() never sees the tail half-given back
            live = _live_pairs(self._pairs, self._epoch, alloc)   # runs: tails included
            try:
                alloc._free_batch(live, self._epoch[0])   # nothing if reset since
            except UseAfterFreeError:
                self._forget()                # the free happened: never free them again
                raise
            self._forget()

    def _forget(self) -> None:
        """After the last holder's recycle: nothing owned, nothing held, empty."""
        self._run = None
        self._pairs.clear()
        self._own.clear()
        Memory.clear(self)
        self._refs = 0

    @property
    def owned_bytes(self) -> int:
        """How many bytes this object still owns (and ``recycle`` will free or let go)."""
        held = sum(len(s) for s, o in zip(self._segs, self._own, strict=True) if o == _HELD)
        if self._epoch[0] != self.allocator._epoch:
            return held
        return sum(self._pairs[1::2]) - self._run_tail() + held

    def __enter__(self) -> RecyclableMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.recycle()

    # -- keep _own parallel to _segs ----------------------------------------

    def push(self, *segments: Any) -> None:
        views = [as_view(s) for s in segments]
        self._refs = self._refs or 1
        self._segs.extend(views)
        self._own.extend([-1] * len(views))
        self._size += sum(map(len, views))

    def extend(self, other: Memory) -> None:
        super().extend(other)
        self._refs = self._refs or 1
        self._own.extend([-1] * len(other._segs))

    def clear(self) -> None:
        """Forget every segment; owned bytes stay owned until :meth:`recycle`."""
        super().clear()
        self._own.clear()

    def _drop_front(self, nsegs: int, head: int, release: bool) -> list[memoryview]:
        if release:                          # ownership of the pieces leaves with them
            own, segs = self._own, self._segs
            for i in range(nsegs):
                if own[i] >= 0:
                    self._release_owned(segs[i], len(segs[i]))
            if head and own[nsegs] >= 0:
                self._release_owned(segs[nsegs], head)
        del self._own[:nsegs]
        return super()._drop_front(nsegs, head, release)

    def _release_owned(self, seg: memoryview, h: int) -> None:
        """The first ``h`` bytes of the owned segment ``seg`` leave: cut them out of the
        owned range that holds them (it shrinks, or splits in two)."""
        if not h:
            return
        a = _core.extent(seg)[1]
        pairs = self._pairs
        for k in range(0, len(pairs), 2):
            addr, length = pairs[k], pairs[k + 1]
            if addr <= a and a + h <= addr + length:
                break
        else:                                # pragma: no cover - owned bytes are in a pair
            return
        if a == addr:                        # the front of the range: it shrinks
            pairs[k] = a + h
            pairs[k + 1] = length - h
        else:                                # split: [addr, a) [given away] [a + h, end)
            pairs[k + 1] = a - addr
            if a + h < addr + length:
                pairs += (a + h, addr + length - a - h)
