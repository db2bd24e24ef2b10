"""Reader: a cursor over a Memory with atomic, zero-copy reads (docs/design.md §4).

Two implementations with the same names, results and error messages:

* ``membuf._core.Reader`` (native/core/: cursor.c, reader.c, search.c), the
  default: the cursor state and every read in C, no Python frame per call;
* :class:`PyReader` below, the executable reference it is tested against
  (tests/test_differential.py, every split of the input), selected with
  ``MEMBUF_PURE_PYTHON=1`` at import. :data:`COMPILED` says which is active.

Strategy (both). Everything is built on the cursor's primitives, as in Rust's
``bytes::Buf``: the contiguous view at the cursor (``chunk()``; internally
``_cur[_pos:_end]``, and ``_settle`` moves onto the next segment that has a
byte, following segments pushed after the Reader was made), the bytes
remaining (``len(r)``, computed from the Memory's running total, never by
walking segments) and advance (``skip(n)``; internally ``_advance`` /
``_gather``, for an ``n`` already known to be available). Every public read
first tries a fast path that only touches the current segment; anything else
goes to one shared slow path that checks what remains *before* moving (so
``NeedMore``, ``MalformedError`` and ``TypeError`` consume nothing), then
gathers across segments.

Positions are absolute: ``_base`` is the absolute offset of ``_cur``'s first
byte and ``_si`` its absolute segment number, counted from the very first byte
and segment the Memory ever held. The Memory counts what ``clip_front`` and
``clear`` removed (``_dropped``, ``_dsegs``), so list index = ``_si - _dsegs``.
A clip by one Reader therefore leaves another Reader over the same Memory
coherent as long as it is at or after the clip point; a Reader left behind a
clip point raises ``MembufError`` when it next changes segment.

The named operations other layers use (docs/reader.md, "The cursor"):
``chunk()``, ``skip(n)``, ``len(r)``, ``offset``, ``transaction()`` and, for the
stream layer only, ``_park()``. Codecs and media use nothing else.

Complexity: fast paths O(1); slow paths O(segments touched); ``find`` is
O(bytes scanned) and, retried after every receive, linear overall (the resume
memo). Not handled on purpose: thread safety (one Reader per task).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from struct import Struct
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _core
from ._native import ffi, lib
from .errors import MalformedError, MembufError, NeedMore
from .memory import Memory, as_view, from_views

__all__ = ["COMPILED", "PURE_PYTHON", "PyReader", "Reader", "find_in"]

#: ``MEMBUF_PURE_PYTHON`` set (to anything but empty or ``0``) selects the pure-Python twin.
PURE_PYTHON: bool = os.environ.get("MEMBUF_PURE_PYTHON", "") not in ("", "0")
#: True when the compiled Reader and framers (``membuf._core``) are active.
COMPILED: bool = not PURE_PYTHON

_EMPTY = memoryview(b"")
_SMALL_FIND = 512          # segments up to this size are searched with bytes.find
_find_native = lib.mb_scan_find
_from_buffer = ffi.from_buffer
_BE: dict[int, Callable[..., tuple[int]]] = {
    n: Struct(">" + c).unpack_from for n, c in ((1, "B"), (2, "H"), (4, "I"), (8, "Q"))
}
_LE: dict[int, Callable[..., tuple[int]]] = {
    n: Struct("<" + c).unpack_from for n, c in ((1, "B"), (2, "H"), (4, "I"), (8, "Q"))
}


def _seg_len(seg: memoryview) -> int:
    """``len(seg)``, with the compiled Reader's ValueError for a released view."""
    try:
        return len(seg)
    except ValueError:
        raise ValueError(
            "a segment of this Memory is a released memoryview; the Reader cannot read it "
            "(do not release() views you pushed while they are buffered)"
        ) from None


def _is_int(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def bytes_arg(obj: Any, what: str) -> bytes:
    """``obj`` as bytes, for a search: TypeError unless it is bytes-like (an int, a str)."""
    if type(obj) is bytes:
        return obj
    try:
        memoryview(obj).release()
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, got {type(obj).__name__}") from None
    return bytes(obj)


def find_in(segs: list[memoryview], i: int, seg: memoryview, pos: int, sub: bytes, limit: int) -> int:
    """Offset of the first ``sub`` that ends within ``limit`` bytes of ``seg[pos]``, or -1.

    ``seg`` is segment ``i`` of ``segs`` (or an older, longer view of it); the
    search continues into ``segs[i + 1:]``. Matches straddling segments are
    found through a carry of the last ``len(sub) - 1`` bytes. Large segments
    are searched in C (``mb_scan_find``), small ones with ``bytes.find``.
    """
    m = len(sub)
    if m == 0:
        return 0
    if m > limit:
        return -1
    seen = 0                    # bytes looked at before `view`
    carry = b""                 # the last m - 1 of them
    while True:
        view = seg[pos : pos + limit - seen]
        if view:
            if carry:           # a match straddling the boundary starts in carry
                j = (carry + view[: m - 1].tobytes()).find(sub)
                if 0 <= j < len(carry):
                    return seen - len(carry) + j
            if len(view) <= _SMALL_FIND:
                j = view.tobytes().find(sub)
            else:
                j = _find_native(_from_buffer(view), len(view), sub, m)
            if j >= 0:
                return seen + j
            seen += len(view)
            if seen >= limit:
                return -1
            if m > 1:
                carry = (carry + view[1 - m :].tobytes())[1 - m :]
        i = max(i + 1, 0)       # (a cursor whose segment was clipped: on to the first)
        if i >= len(segs):
            return -1
        seg, pos = segs[i], 0


class PyReader:
    """A cursor over a :class:`~membuf.Memory`; every read is atomic.

    Args:
        memory: the Memory to read (shared, not copied), or any bytes-like object
            (read through a new Memory, by reference); a new empty Memory if omitted.

    When fewer bytes remain than a read needs, it raises :class:`~membuf.NeedMore`
    (``.needed`` more bytes) and consumes nothing; malformed input raises
    :class:`~membuf.MalformedError` and consumes nothing; a count of the wrong
    type (a float, a bool) or a delimiter that is not bytes-like is ``TypeError``.

    >>> r = PyReader.from_bytes(b"\\x00\\x2a\\xe5\\x8e", b"\\x26rest")
    >>> r.read_be(2), r.read_leb128(), len(r), r.offset
    (42, 624485, 4, 5)
    >>> r.read_be(8)
    Traceback (most recent call last):
    ...
    membuf.errors.NeedMore: read_be(8) needs 8 bytes, 4 are buffered; retry when 4 more arrive
    """

    __slots__ = ("_m", "_segs", "_si", "_cur", "_pos", "_end", "_base", "_start", "_memo")

    def __init__(self, memory: Any = None) -> None:
        if memory is None:
            m = Memory()
        elif isinstance(memory, _core.MemoryCore):
            m = memory                   # type: ignore[assignment]
        else:
            m = Memory(memory)           # any bytes-like, by reference
        self._m = m
        self._segs = m._segs
        self._start = m._dropped
        self._memo: tuple[bytes, int, int, int] | None = None   # see _find
        self._park()
        self._settle()

    @classmethod
    def from_bytes(cls, *bufs: Any) -> PyReader:
        """A Reader over a new Memory of ``bufs`` (kept by reference)."""
        return cls(Memory(*bufs))

    # -- the cursor's primitives and their helpers --------------------------------

    def _park(self) -> None:
        """Put the cursor before the Memory's first segment, holding no view (after clear())."""
        m = self._m
        self._si = m._dsegs - 1
        self._cur = _EMPTY
        self._pos = self._end = 0
        self._base = m._dropped

    def _next(self) -> bool:
        """Step from an exhausted ``_cur`` to the next segment; False if there is none."""
        m = self._m
        if self._base + self._end < m._dropped:
            raise MembufError(
                "this Reader is behind bytes that clip_front() or clear() removed from its "
                "Memory (another Reader clipped them); make a new Reader"
            )
        i = self._si + 1 - m._dsegs
        if i < 0:                     # our segment was clipped away whole, exactly at our end
            self._park()
            i = 0
        segs = self._segs
        if i >= len(segs):
            return False
        cur = segs[i]
        n = _seg_len(cur)             # before the cursor moves: a released view changes nothing
        self._base += self._end
        self._si += 1
        self._cur = cur
        self._pos = 0
        self._end = n
        return True

    def _settle(self) -> bool:
        """Move onto a segment with an unread byte; False when none is buffered."""
        while self._pos == self._end:
            if not self._next():
                return False
        return True

    def _remaining(self) -> int:
        m = self._m
        return m._dropped + m._size - self._base - self._pos

    def _advance(self, n: int) -> None:
        """Consume ``n`` bytes, which must be available (all or nothing)."""
        st = self._save()
        try:
            while True:
                avail = self._end - self._pos
                if n <= avail:
                    self._pos += n
                    return
                n -= avail
                self._pos = self._end
                if not self._next():
                    raise RuntimeError("the Memory holds fewer bytes than its length says")
        except BaseException:
            self._restore(st)
            raise

    def _gather(self, n: int) -> list[memoryview]:
        """Consume ``n`` available bytes; return the non-empty views they span (all or nothing)."""
        out: list[memoryview] = []
        st = self._save()
        try:
            while True:
                pos, end = self._pos, self._end
                if n <= end - pos:
                    if n:
                        out.append(self._cur[pos : pos + n])
                    self._pos = pos + n
                    return out
                if pos < end:
                    out.append(self._cur[pos:end])
                    n -= end - pos
                self._pos = end
                if not self._next():
                    raise RuntimeError("the Memory holds fewer bytes than its length says")
        except BaseException:
            self._restore(st)
            raise

    def _save(self) -> tuple[int, memoryview, int, int, int]:
        return (self._si, self._cur, self._pos, self._end, self._base)

    def _restore(self, st: tuple[int, memoryview, int, int, int]) -> None:
        self._si, self._cur, self._pos, self._end, self._base = st

    def _need(self, what: str, n: int) -> NeedMore:
        have = self._remaining()
        return NeedMore(
            f"{what} needs {n} bytes, {have} are buffered; retry when {n - have} more arrive",
            needed=n - have,
        )

    def _check_size(self, what: str, n: Any) -> None:
        if not _is_int(n):
            raise TypeError(f"{what} size must be an int, got {type(n).__name__}")
        if n < 0:
            raise MalformedError(f"{what} size must be an int >= 0, got {n!r}")
        if n > self._remaining():
            raise self._need(f"{what}({n})", n)

    # -- state ----------------------------------------------------------------

    def __len__(self) -> int:
        """Bytes left to read (including segments pushed since the Reader was made)."""
        m = self._m
        return m._dropped + m._size - self._base - self._pos

    @property
    def offset(self) -> int:
        """Bytes consumed since the Reader was made (``unread`` lowers it)."""
        return self._base + self._pos - self._start

    @property
    def memory(self) -> Memory:
        """The Memory this Reader reads."""
        return self._m

    def __repr__(self) -> str:
        return f"<Reader offset={self.offset} remaining={len(self)} over {self._m!r}>"

    # -- integers ---------------------------------------------------------------

    def read_byte(self) -> int:
        """Consume and return one byte.

        Raises:
            NeedMore: nothing is buffered.
        """
        pos = self._pos
        if pos < self._end:
            b = self._cur[pos]          # (read before the cursor moves: a released view
            self._pos = pos + 1         # raises ValueError having consumed nothing)
            return b
        if self._settle():
            pos = self._pos
            b = self._cur[pos]
            self._pos = pos + 1
            return b
        raise self._need("read_byte()", 1)

    def peek_byte(self) -> int:
        """Return the next byte without consuming it.

        Raises:
            NeedMore: nothing is buffered.
        """
        if self._pos < self._end or self._settle():
            return self._cur[self._pos]
        raise self._need("peek_byte()", 1)

    def read_be(self, n: int) -> int:
        """Consume an ``n``-byte big-endian unsigned integer.

        Args:
            n: the width in bytes, ``1 <= n <= 8``.

        Returns:
            The value, ``0 <= value < 2 ** (8 * n)``.

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is out of range.
            TypeError: ``n`` is not an int (a float, a bool).
        """
        pos = self._pos
        if type(n) is int and pos + n <= self._end:
            unpack = _BE.get(n)
            if unpack is not None:
                v = unpack(self._cur, pos)[0]
                self._pos = pos + n
                return v
        return self._read_int(n, "big")

    def read_le(self, n: int) -> int:
        """Consume an ``n``-byte little-endian unsigned integer; otherwise as :meth:`read_be`."""
        pos = self._pos
        if type(n) is int and pos + n <= self._end:
            unpack = _LE.get(n)
            if unpack is not None:
                v = unpack(self._cur, pos)[0]
                self._pos = pos + n
                return v
        return self._read_int(n, "little")

    def _read_int(self, n: Any, order: Any) -> int:
        what = "read_be" if order == "big" else "read_le"
        if not _is_int(n):
            raise TypeError(f"{what}(n) needs an int n, got {type(n).__name__}")
        if not 1 <= n <= 8:
            raise MalformedError(f"{what}(n) reads 1 to 8 bytes, got n={n!r}")
        if self._settle() and n <= self._end - self._pos:
            pos = self._pos
            v = int.from_bytes(self._cur[pos : pos + n], order)
            self._pos = pos + n
            return v
        if n > self._remaining():
            raise self._need(f"{what}({n})", n)
        return int.from_bytes(b"".join(self._gather(n)), order)

    def read_leb128(self, max_bytes: int = 10) -> int:
        """Consume an unsigned LEB128 varint (at most ``max_bytes`` bytes, value below 2**64).

        Args:
            max_bytes: the longest encoding accepted, 1 to 10 (padded, non-canonical
                encodings within it are accepted).

        Raises:
            NeedMore: the varint is not complete yet.
            MalformedError: it is longer than ``max_bytes`` or over 64 bits.

        >>> PyReader.from_bytes(b"\\xe5\\x8e\\x26").read_leb128()
        624485
        """
        if max_bytes == 10 and type(max_bytes) is int:
            cur = self._cur
            pos = self._pos
            try:
                b = cur[pos]
                if b < 0x80:
                    self._pos = pos + 1
                    return b
                c = cur[pos + 1]
                if c < 0x80:
                    self._pos = pos + 2
                    return (b & 0x7F) | c << 7
                d = cur[pos + 2]
                if d < 0x80:
                    self._pos = pos + 3
                    return (b & 0x7F) | (c & 0x7F) << 7 | d << 14
            except IndexError:
                pass
        return self._read_varint(False, max_bytes)

    def read_sleb128(self, max_bytes: int = 10) -> int:
        """Consume a signed LEB128 varint (at most ``max_bytes`` bytes, a 64-bit signed value).

        Raises:
            NeedMore: the varint is not complete yet.
            MalformedError: it is longer than ``max_bytes`` or outside 64-bit range.

        >>> PyReader.from_bytes(b"\\xc0\\xbb\\x78").read_sleb128()
        -123456
        """
        if max_bytes == 10 and type(max_bytes) is int:
            cur = self._cur
            pos = self._pos
            try:
                b = cur[pos]
                if b < 0x80:
                    self._pos = pos + 1
                    return b - 0x80 if b & 0x40 else b
                v = b & 0x7F
                b = cur[pos + 1]
                if b < 0x80:
                    self._pos = pos + 2
                    v |= b << 7
                    return v - 0x4000 if b & 0x40 else v
            except IndexError:
                pass
        return self._read_varint(True, max_bytes)

    def _read_varint(self, signed: bool, max_bytes: Any) -> int:
        """Slow path for both LEB128 flavours: look at up to max_bytes bytes, then consume."""
        bare = "read_sleb128" if signed else "read_leb128"
        if not _is_int(max_bytes):
            raise TypeError(f"{bare}(max_bytes) needs an int, got {type(max_bytes).__name__}")
        if not 1 <= max_bytes <= 10:
            raise MalformedError(f"{bare}(max_bytes) reads 1 to 10 bytes, got max_bytes={max_bytes!r}")
        name = bare + "()"
        st = self._save()
        data = b"".join(self._gather(min(max_bytes, max(self._remaining(), 0))))
        self._restore(st)
        v = shift = length = 0
        for b in data:
            v |= (b & 0x7F) << shift
            shift += 7
            length += 1
            if b < 0x80:
                break
        else:
            if len(data) == max_bytes:
                raise MalformedError(
                    f"{name}: a LEB128 value longer than {max_bytes} bytes ({data.hex(' ')} ...)"
                )
            raise self._need(name, len(data) + 1)
        if length == 10 and (b not in (0, 0x7F) if signed else b > 1):
            raise MalformedError(f"{name}: a LEB128 value over 64 bits ({data.hex(' ')})")
        self._advance(length)
        if signed and b & 0x40:
            v -= 1 << shift
        return v

    # -- bytes ----------------------------------------------------------------

    def read_bytes(self, n: int) -> bytes:
        """Consume ``n`` bytes and return a copy of them.

        Args:
            n: how many bytes, ``>= 0``.

        Returns:
            The bytes, copied (``take`` is the zero-copy form).

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is negative.
            TypeError: ``n`` is not an int.
        """
        pos = self._pos
        if type(n) is int and 0 <= n <= self._end - pos:
            data = self._cur[pos : pos + n].tobytes()
            self._pos = pos + n
            return data
        self._check_size("read_bytes", n)
        return b"".join(self._gather(n))

    def peek(self, n: int) -> bytes:
        """Return a copy of the next ``n`` bytes without consuming them.

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is negative.
            TypeError: ``n`` is not an int.
        """
        pos = self._pos
        if type(n) is int and 0 <= n <= self._end - pos:
            return self._cur[pos : pos + n].tobytes()
        self._check_size("peek", n)
        st = self._save()
        data = b"".join(self._gather(n))
        self._restore(st)
        return data

    def read_into(self, buf: Any) -> int:
        """Fill the start of the writable buffer ``buf`` with up to ``len(buf)`` bytes.

        Args:
            buf: a writable bytes-like object.

        Returns:
            How many bytes were copied: ``min(len(buf), len(self))`` (never raises NeedMore).
        """
        out = as_view(buf)
        if out.readonly:
            raise TypeError(f"read_into needs a writable buffer, got a read-only {type(buf).__name__}")
        n = min(len(out), max(self._remaining(), 0))
        pos = 0
        for piece in self._gather(n):
            k = len(piece)
            out[pos : pos + k] = piece
            pos += k
        return n

    def take(self, n: int) -> Memory:
        """Consume ``n`` bytes and return them as a Memory of views (zero-copy).

        Args:
            n: how many bytes, ``>= 0``.

        Returns:
            A new Memory over views of the source segments (several if they span).

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is negative.
            TypeError: ``n`` is not an int.
        """
        pos = self._pos
        if type(n) is int and 0 < n <= self._end - pos:
            view = self._cur[pos : pos + n]
            self._pos = pos + n
            return from_views([view], n)
        self._check_size("take", n)
        return from_views(self._gather(n), n)

    def range(self, n: int) -> Iterator[memoryview]:
        """Consume ``n`` bytes and return the views they span.

        Args:
            n: how many bytes, ``>= 0``.

        Returns:
            An iterator over non-empty views of the source segments (zero-copy).
            The bytes are consumed by this call, not as the iterator advances.

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is negative.
            TypeError: ``n`` is not an int.
        """
        self._check_size("range", n)
        return iter(self._gather(n))

    def chunk(self) -> memoryview:
        """The contiguous bytes at the cursor, as a view, without consuming them (``Buf::chunk``).

        Empty only when nothing is buffered (``len(r) == 0``); otherwise the rest of
        the current segment, which may be less than ``len(r)``.

        >>> r = PyReader.from_bytes(b"ab", b"cd"); r.skip(1)
        >>> bytes(r.chunk()), len(r)
        (b'b', 3)
        """
        if self._pos < self._end or self._settle():
            return self._cur[self._pos : self._end]
        return memoryview(b"")

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes without looking at them (``Buf::advance``).

        Raises:
            NeedMore: fewer than ``n`` bytes are buffered.
            MalformedError: ``n`` is negative.
            TypeError: ``n`` is not an int.
        """
        pos = self._pos
        if type(n) is int and 0 <= n <= self._end - pos:
            self._pos = pos + n
            return
        self._check_size("skip", n)
        self._advance(n)

    def unread(self, n: int) -> None:
        """Step the cursor back ``n`` bytes (not before the Reader's start or a clip).

        Raises:
            MalformedError: ``n`` is negative or more than can be stepped back.
            TypeError: ``n`` is not an int.
        """
        if not _is_int(n):
            raise TypeError(f"unread size must be an int, got {type(n).__name__}")
        m = self._m
        here = self._base + self._pos
        back = here - max(self._start, m._dropped)
        if not 0 <= n <= back:
            raise MalformedError(f"unread(n) can step back 0 to {back} bytes here, got n={n!r}")
        segs = self._segs
        st = self._save()
        try:
            while n > self._pos:
                n -= self._pos
                prev = segs[self._si - 1 - m._dsegs]
                k = _seg_len(prev)    # a released view: ValueError, the cursor restored
                self._si -= 1
                self._cur = prev
                self._end = self._pos = k
                self._base -= k
        except BaseException:
            self._restore(st)
            raise
        self._pos -= n

    # -- searching ----------------------------------------------------------------

    def find(self, sub: bytes) -> int:
        """Find ``sub`` at or after the cursor without consuming anything.

        Args:
            sub: the bytes-like object to look for (may straddle segments).

        Returns:
            Its offset from the cursor, or -1 if it is not in the buffered bytes.

        Raises:
            TypeError: ``sub`` is not bytes-like (an int, a str).

        >>> PyReader.from_bytes(b"GET / HT", b"TP/1.1\\r", b"\\n").find(b"\\r\\n")
        14
        """
        return self._find(bytes_arg(sub, "find's argument"), self._remaining())

    def _find(self, sub: bytes, limit: int) -> int:
        """``find`` restricted to matches that end within the next ``limit`` bytes.

        A parser retrying ``read_until`` after every receive would search the
        same bytes again each time: quadratic in a frame dribbled one byte per
        receive. So a failed search leaves a memo (what was sought, from which
        cursor, and a later segment from which to resume with enough overlap for
        a match straddling the old end); the next search from the same cursor
        starts there. Each byte is then searched a bounded number of times.
        """
        here = self._base + self._pos
        m = self._m
        if here < m._dropped:
            raise MembufError("find: another Reader already clipped past this one's cursor")
        segs, dsegs = self._segs, m._dsegs
        limit = min(limit, self._remaining())
        memo = self._memo
        if memo is not None and memo[0] == sub and memo[1] == here:
            k, kstart = memo[2] - dsegs, memo[3]
            if self._si - dsegs < k < len(segs) and kstart - here < limit:
                j = find_in(segs, k, segs[k], 0, sub, limit - (kstart - here))
                if j >= 0:
                    self._memo = None
                    return kstart - here + j
                self._remember(sub, here, limit)
                return -1
        j = find_in(segs, self._si - dsegs, self._cur, self._pos, sub, limit)
        if j < 0:
            self._remember(sub, here, limit)
        else:
            self._memo = None
        return j

    def _remember(self, sub: bytes, here: int, limit: int) -> None:
        """After a search of every buffered byte failed: where the next one may resume."""
        self._memo = None
        if limit < self._remaining():
            return                          # the window ended first: the caller raises
        segs, first = self._segs, max(self._si - self._m._dsegs, -1)   # (behind a clip)
        k = len(segs) - 1
        overlap = len(segs[k]) if k > first else 0
        while overlap < len(sub) - 1 and k - 1 > first:
            k -= 1
            overlap += len(segs[k])
        if k > first and overlap >= len(sub) - 1:
            self._memo = (sub, here, k + self._m._dsegs, here + self._remaining() - overlap)

    def _delimited(self, what: str, delim: Any, max_size: Any) -> tuple[bytes, int]:
        """Check a delimiter search's arguments, then search: (delimiter, offset of it)."""
        d = bytes_arg(delim, f"{what} delimiter")
        if not d:
            raise MalformedError(f"{what} needs a non-empty delimiter")
        if not _is_int(max_size):
            raise TypeError(f"{what} max_size must be an int, got {type(max_size).__name__}")
        if max_size < 0:
            raise MalformedError(f"{what} max_size must be an int >= 0, got {max_size!r}")
        window = max_size + len(d)
        j = self._find(d, window)
        if j < 0:
            have = self._remaining()
            if have >= window:
                raise MalformedError(
                    f"{what}: no {d!r} within {window} bytes (max_size={max_size}); "
                    "nothing consumed"
                )
            raise NeedMore(
                f"{what}({d!r}): no delimiter in the {have} bytes buffered; retry when more arrive",
                needed=1,
            )
        return d, j

    def read_until(self, delim: bytes, max_size: int) -> Memory:
        """Consume up to and including ``delim``; return what came before it (zero-copy).

        Args:
            delim: the delimiter (non-empty, bytes-like).
            max_size: the most bytes allowed before the delimiter.

        Raises:
            NeedMore: no delimiter yet and fewer than ``max_size + len(delim)`` bytes buffered.
            MalformedError: no delimiter within ``max_size + len(delim)`` bytes, or a bad
                argument. Nothing is consumed.
            TypeError: ``delim`` is not bytes-like or ``max_size`` not an int.

        >>> r = PyReader.from_bytes(b"HTTP/1.1 200 OK\\r", b"\\nrest")
        >>> r.read_until(b"\\r\\n", 100).tobytes(), r.read_bytes(4)
        (b'HTTP/1.1 200 OK', b'rest')
        """
        d, j = self._delimited("read_until", delim, max_size)
        st = self._save()
        out = self.take(j) if j else Memory()
        try:
            self._advance(len(d))
        except BaseException:
            self._restore(st)
            raise
        return out

    def read_line(self, max_size: int, delim: bytes = b"\r\n") -> bytes:
        """Consume up to and including ``delim``; return a copy of what came before it.

        As :meth:`read_until` (the same limits and errors), but the line is copied
        into one ``bytes``: the form for text protocols whose lines are parsed
        at once (RESP, HTTP/1 headers, SMTP).

        >>> PyReader.from_bytes(b"+OK\\r", b"\\n:1\\r\\n").read_line(64)
        b'+OK'
        """
        d, j = self._delimited("read_line", delim, max_size)
        st = self._save()
        line = self.read_bytes(j)
        try:
            self._advance(len(d))
        except BaseException:
            self._restore(st)
            raise
        return line

    # -- releasing consumed bytes ---------------------------------------------------

    def clip_front(self, release: Callable[[memoryview], Any] | None = None) -> list[memoryview]:
        """Remove the consumed prefix from the Memory; return (and release) its pieces.

        Every fully consumed segment, and the consumed head of a partly consumed
        one (as a view), is handed to ``release`` in order (for example
        ``allocator.free``) and returned. The partly consumed segment is
        replaced by its unread tail. ``len(self)`` and ``offset`` are unchanged;
        ``unread`` can no longer step back over the clipped bytes.
        For a RecyclableMemory, pieces handed to ``release`` are no longer owned
        by it; with no ``release`` they stay owned until ``recycle``.

        Raises:
            MembufError: another Reader already clipped bytes this one has not read.

        >>> m = Memory(b"ab", b"cd", b"ef")
        >>> r = PyReader(m); r.skip(3)
        >>> [bytes(p) for p in r.clip_front()], m.tobytes(), r.read_bytes(3)
        ([b'ab', b'c'], b'def', b'def')
        """
        m = self._m
        here = self._base + self._pos
        if here < m._dropped:
            raise MembufError("clip_front: another Reader already clipped past this one's cursor")
        local = self._si - m._dsegs
        if local < 0:
            nsegs = head = 0
        else:
            nsegs = local + 1 if self._pos == self._end else local
            segs = self._segs
            head = here - m._dropped - sum(map(len, segs[:nsegs]))
            while not head and nsegs < len(segs) and not len(segs[nsegs]):
                nsegs += 1            # empty segments at the cursor go too
        pieces = m._drop_front(nsegs, head, release is not None)  # type: ignore[attr-defined]
        if head:
            cur = self._segs[0]
            self._si = m._dsegs
            self._cur = cur
            self._pos = 0
            self._end = len(cur)
            self._base = m._dropped
        else:
            self._park()
            try:
                self._settle()
            except ValueError:        # a released segment next: parked, the read that
                pass                  # needs it raises (the clip itself is done)
        if release is not None:
            for piece in pieces:
                release(piece)
        return pieces

    # -- transactions -------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        """A context manager: an exception inside rewinds the Reader to where it began.

        ``NeedMore`` is the usual one (retry when more bytes arrive), but a
        ``MalformedError`` halfway through a record rewinds too, so a failed
        parse consumes nothing. The exception still propagates (catch it
        outside the ``with``).

        >>> r = PyReader.from_bytes(b"\\x00\\x05ab")
        >>> try:
        ...     with r.transaction():
        ...         n = r.read_be(2); body = r.read_bytes(n)
        ... except NeedMore:
        ...     pass
        >>> r.offset
        0
        """
        return _Transaction(self)


class _Transaction:
    __slots__ = ("_r", "_st")

    def __init__(self, reader: PyReader) -> None:
        self._r = reader
        self._st = reader._save()

    def __enter__(self) -> PyReader:
        self._st = self._r._save()
        return self._r

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None and issubclass(et, Exception):
            r = self._r
            if self._st[4] + self._st[2] < r._m._dropped:
                raise MembufError("transaction cannot rewind past bytes that were clipped") from ev
            r._restore(self._st)


if TYPE_CHECKING:
    Reader = PyReader
else:
    #: The Reader in use: the compiled one unless MEMBUF_PURE_PYTHON is set.
    Reader = PyReader if PURE_PYTHON else _core.Reader
