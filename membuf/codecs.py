"""Framers: split a Reader into length-prefixed or delimited frames.

Strategy. The hot loop, finding frame boundaries inside a segment, runs in C
(``mb_scan_frames`` in ``native/scan.c``): each segment is handed to C once
(``ffi.from_buffer``) and C fills a preallocated, reused array with the
``[start, end)`` body offsets of every complete frame in it. Python then
slices the segment with one list comprehension over that offset list, so a
small frame costs one memoryview slice (``split_views``) or one slice plus one
Memory (``split``), never a Python loop iteration of parsing. A frame whose
prefix, body or delimiter straddles two or more segments takes the Python
slow path (the Reader's own atomic reads); there is at most one such frame
per segment boundary.

Contract (docs/design.md §5): only complete frames are returned; a partial
frame is left unread. A frame over ``max_frame`` (or a malformed LEB128
prefix) raises ``MalformedError`` with the reader left at the start of that
frame; if complete frames came before it in the same call, they are returned
first and the error is raised by the next call, so no frame is ever lost.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._native import ffi, lib
from .errors import MalformedError, NeedMore
from .memory import Memory
from .memory import from_views as _memory
from .reader import Reader

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .allocator import Allocator

__all__ = ["Framer", "LengthPrefixed", "Delimited"]

_CAP = 4096                     # frames per native call (the offsets array holds 2 * _CAP)
_from_buffer = ffi.from_buffer
_scan = lib.mb_scan_frames
_FULL = lib.MB_SCAN_FULL
_MALFORMED = lib.MB_SCAN_MALFORMED
_PREFIXES = {
    "leb128": (lib.MB_FRAME_LEB128, 0),
    "be16": (lib.MB_FRAME_BE16, 2),
    "be24": (lib.MB_FRAME_BE24, 3),
    "be32": (lib.MB_FRAME_BE32, 4),
}


# The scanner's output arrays (64 KiB) are scratch: shared by every codec of a thread
# (a split never awaits, and cffi calls release the GIL, hence per thread), so a codec
# per connection costs no resident memory.
_scratch = threading.local()


def _new_scratch() -> tuple[Any, memoryview, Any]:
    offs = ffi.new("uint64_t[]", 2 * _CAP)
    offv = memoryview(ffi.buffer(offs)).cast("Q")        # tolist() beats ffi.unpack
    return offs, offv, ffi.new("uint64_t[2]")


class Framer:
    """Base of the framers: the shared split loop over the native scanner.

    Subclasses set ``_kind``, ``_delim`` and implement ``_slow_frame``.
    ``joined`` counts frames that ``split_views`` had to copy into one buffer
    because they spanned segments.
    """

    _kind: int
    _delim: bytes = b""

    def __init__(self, max_frame: int) -> None:
        if type(max_frame) is not int or max_frame < 0:
            raise ValueError(f"max_frame must be an int >= 0, got {max_frame!r}")
        self.max_frame = max_frame
        self.joined = 0

    def _slow_frame(self, reader: Reader) -> list[memoryview]:
        """Consume one frame that spans segments; return its body views.

        Raises NeedMore (nothing consumed) or MalformedError (nothing consumed).
        """
        raise NotImplementedError

    def _scan(self, reader: Reader, views: bool, allocator: Any) -> list[Any]:
        out: list[Any] = []
        try:
            offs, offv, state = _scratch.arrays
        except AttributeError:
            offs, offv, state = _scratch.arrays = _new_scratch()
        kind = self._kind
        delim, dlen, max_frame = self._delim, len(self._delim), self.max_frame
        while reader._pos < reader._end or reader._settle():
            cur, pos, end = reader._cur, reader._pos, reader._end
            # The reader remembers (codec, segment, offset) of an incomplete frame this
            # codec already scanned, so a retry after each receive does not rescan it.
            # It lives on the reader (per connection) and never outlives its cursor.
            stuck = reader._split_memo
            if stuck is not None and stuck[0] is self and stuck[1] is cur and stuck[2] == pos:
                stop = pos                   # scanned last call: an incomplete frame starts here
            else:
                k = _scan(_from_buffer(cur), pos, end, kind, delim, dlen, max_frame, offs, _CAP, state)
                if k:
                    it = iter(offv[: 2 * k].tolist())
                    if views:
                        out += [cur[a:b] for a, b in zip(it, it, strict=False)]
                    else:
                        out += [_memory([cur[a:b]], b - a) for a, b in zip(it, it, strict=False)]
                stop, status = state[0], state[1]
                reader._pos = stop
                if status == _FULL or stop == end:
                    continue
                if status == _MALFORMED:
                    if out:
                        break                # return what came before; the next call raises
                    self._malformed(reader)
            reader._split_memo = None
            if len(reader) == end - stop:
                reader._split_memo = (self, cur, stop)   # an incomplete frame, nothing after it
                break
            st = reader._save()
            try:
                pieces = self._slow_frame(reader)
            except NeedMore:
                reader._restore(st)
                break
            except MalformedError:
                reader._restore(st)
                if out:
                    break
                raise
            if not views:
                out.append(_memory(pieces, sum(map(len, pieces))))
            elif len(pieces) == 1:
                out.append(pieces[0])        # e.g. the body sat in one segment after all
            else:
                out.append(self._join(pieces, allocator))
        return out

    def _join(self, pieces: list[memoryview], allocator: Allocator | None) -> memoryview:
        self.joined += 1
        if allocator is None:
            return memoryview(bytearray().join(pieces))
        n = sum(map(len, pieces))
        buf = allocator.malloc(n)
        pos = 0
        for p in pieces:
            buf[pos : pos + len(p)] = p
            pos += len(p)
        return buf

    def _malformed(self, reader: Reader) -> None:
        """Raise the MalformedError for the frame at the cursor (re-parsed by the slow path)."""
        st = reader._save()
        try:
            self._slow_frame(reader)
        finally:
            reader._restore(st)
        raise AssertionError("native scanner and slow path disagree")  # pragma: no cover

    def split(self, reader: Reader) -> list[Memory]:
        """Consume every complete frame now available; return each as a Memory (zero-copy).

        A frame that spans segments is a Memory of several views. A partial
        frame is left unread.

        Raises:
            MalformedError: the next frame is over ``max_frame`` or its prefix is
                malformed; the reader is left at its start (complete frames before
                it are returned first, by this call).
        """
        return self._scan(reader, False, None)

    def split_views(self, reader: Reader, allocator: Allocator | None = None) -> list[memoryview]:
        """Consume every complete frame now available; return one memoryview per frame.

        A frame inside one segment is a view of it (zero-copy); a frame that
        spans segments is copied into one buffer, malloc'd from ``allocator``
        when given (the caller frees it), else a bytearray; ``joined`` counts them.

        Raises:
            MalformedError: as :meth:`split`.
        """
        return self._scan(reader, True, allocator)


class LengthPrefixed(Framer):
    """Frames with a length prefix: ``"leb128"``, ``"be16"``, ``"be24"`` or ``"be32"``.

    Args:
        prefix: how the body length is encoded before each body.
        max_frame: the largest body allowed; longer -> MalformedError.

    >>> from membuf import Reader
    >>> r = Reader.from_bytes(b"\\x03abc\\x02d", b"e\\x05par")
    >>> codec = LengthPrefixed("leb128", max_frame=1024)
    >>> [bytes(v) for v in codec.split_views(r)], codec.joined, len(r)
    ([b'abc', b'de'], 1, 4)
    """

    def __init__(self, prefix: str = "leb128", max_frame: int = 1 << 20) -> None:
        if prefix not in _PREFIXES:
            raise ValueError(f"prefix must be one of {sorted(_PREFIXES)}, got {prefix!r}")
        super().__init__(max_frame)
        self.prefix = prefix
        self._kind, self._width = _PREFIXES[prefix]

    def _slow_frame(self, reader: Reader) -> list[memoryview]:
        n = reader.read_leb128() if self._width == 0 else reader.read_be(self._width)
        if n > self.max_frame:
            raise MalformedError(
                f"{self.prefix} frame of {n} bytes is over max_frame={self.max_frame}; "
                "nothing consumed past the last complete frame"
            )
        return list(reader.range(n))

    def __repr__(self) -> str:
        return f"LengthPrefixed({self.prefix!r}, max_frame={self.max_frame})"


class Delimited(Framer):
    """Frames ended by a delimiter (not included in the frame), e.g. ``b"\\r\\n"``.

    Args:
        delim: the non-empty delimiter.
        max_frame: the most bytes allowed before a delimiter; more -> MalformedError.

    >>> from membuf import Reader
    >>> r = Reader.from_bytes(b"a\\r\\nbc\\r", b"\\nde")
    >>> [m.to_bytes() for m in Delimited(b"\\r\\n", max_frame=64).split(r)], r.peek(2)
    ([b'a', b'bc'], b'de')
    """

    _kind = lib.MB_FRAME_DELIM

    def __init__(self, delim: bytes = b"\r\n", max_frame: int = 1 << 16) -> None:
        if not delim:
            raise ValueError("Delimited needs a non-empty delimiter")
        super().__init__(max_frame)
        self._delim = bytes(delim)
        self.delim = self._delim

    def _slow_frame(self, reader: Reader) -> list[memoryview]:
        return list(reader.read_until(self._delim, self.max_frame))

    def __repr__(self) -> str:
        return f"Delimited({self._delim!r}, max_frame={self.max_frame})"
