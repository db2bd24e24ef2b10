"""Framers: split a Reader into length-prefixed or delimited frames (docs/design.md §5).

Two implementations with the same names, results and errors:

* the compiled framers (:class:`LengthPrefixed` and :class:`Delimited` over
  ``membuf._core.Framer``, native/core/framer.c), the default: one pass over
  each segment that makes every complete frame's view (``split_views``) or
  Memory (``split``) as it finds it, straight into the output list, with no
  Python int, tuple or slice per frame; a frame spanning segments takes a slow
  path made of the Reader's own atomic reads, at most one per segment boundary;
* :class:`PyLengthPrefixed` and :class:`PyDelimited`, the executable
  reference: one frame at a time in plain Python over the Reader's public reads
  (``skip``, ``read_leb128`` / ``read_be`` / ``read_le``, ``range``,
  ``read_until`` in a ``transaction``), selected with ``MEMBUF_PURE_PYTHON=1``.

Length-prefixed frames follow Netty's LengthFieldBasedFrameDecoder: ``offset``
header bytes come before the length field, ``adjust`` is added to the field's
value to give the body length (the bytes after the field), and ``strip`` bytes
are removed from the front of each frame (by default the header and the field,
so only the body is returned). ``max_frame`` bounds the body.

Contract: only complete frames are returned; a partial frame is left unread. A
frame over ``max_frame`` (or a malformed length field, a negative body, a
``strip`` past the frame's end) raises ``MalformedError`` with the reader left
at the start of that frame; if complete frames came before it in the same call,
they are returned first and the error is raised by the next call, so no frame
is ever lost. The same holds when ``malloc`` of a joined frame fails.

Any object with the :class:`Codec` methods works with ``StreamReader.frames``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _core
from .errors import MalformedError, NeedMore
from .memory import Memory, from_views
from .reader import COMPILED, PyReader, Reader, bytes_arg
from .writer import Writer

__all__ = ["Codec", "Delimited", "Framer", "LengthPrefixed", "PyDelimited", "PyFramer",
           "PyLengthPrefixed", "Splitter", "SupportsMalloc"]

_PREFIXES = {"leb128": 0, "be16": 2, "be24": 3, "be32": 4, "le16": 2, "le32": 4}
_NOTHING = "nothing consumed past the last complete frame"
_READERS = (PyReader, _core.Reader)      # what the pure-Python framers read (both cursors)


class SupportsMalloc(Protocol):
    """What ``split_views`` copies a frame spanning segments into: ``malloc(n)`` returns a
    writable buffer of exactly ``n`` bytes (an :class:`~membuf.Allocator`, or the stream
    layer's own joiner)."""

    def malloc(self, n: int) -> Any: ...


@runtime_checkable
class Splitter(Protocol):
    """What ``StreamReader.frames(codec)`` needs for Memory frames: ``split(reader)``
    consumes every complete frame buffered and returns them (``[]`` when none is
    complete; a ``NeedMore`` raised inside means the same)."""

    def split(self, reader: Reader) -> list[Any]: ...


@runtime_checkable
class Codec(Splitter, Protocol):
    """A framer: :class:`Splitter` plus ``split_views``, which ``frames(codec,
    views=True)`` needs.

    ``split_views`` returns one memoryview per frame, copying a frame that spans
    segments into ``allocator.malloc(n)`` (or a bytearray). A codec may also have
    ``encode(payload, writer=None)`` (the built-in framers will); it is not part of
    this protocol because ``frames()`` never calls it.
    """

    def split_views(self, reader: Reader, allocator: SupportsMalloc | None = None) -> list[Any]: ...


# -- arguments (one check for both implementations, so their errors are the same) --------


def _int_arg(name: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return int(v)


def check_max_frame(max_frame: Any) -> int:
    """``max_frame``: an int in 0..2**64-1 (a larger one could never be enforced)."""
    v = _int_arg("max_frame", max_frame)
    if not 0 <= v < 1 << 64:
        raise ValueError(f"max_frame must be in 0..2**64-1, got {max_frame!r}")
    return v


def check_prefixed(prefix: Any, max_frame: Any, offset: Any, adjust: Any,
                   strip: Any) -> tuple[str, int, int, int, int | None]:
    """The arguments of LengthPrefixed, checked: (prefix, max_frame, offset, adjust, strip)."""
    if not isinstance(prefix, str) or prefix not in _PREFIXES:
        raise ValueError(f"prefix must be one of {sorted(_PREFIXES)}, got {prefix!r}")
    mf = check_max_frame(max_frame)
    off = _int_arg("offset", offset)
    if not 0 <= off < 1 << 32:
        raise ValueError(f"offset (header bytes before the length field) must be in 0..2**32-1, got {offset!r}")
    adj = _int_arg("adjust", adjust)
    if not -(1 << 63) <= adj < 1 << 63:
        raise ValueError(f"adjust must be in -2**63..2**63-1, got {adjust!r}")
    st: int | None = None
    if strip is not None:
        st = _int_arg("strip", strip)
        if not 0 <= st < 1 << 62:
            raise ValueError(f"strip must be None or in 0..2**62-1, got {strip!r}")
    return prefix, mf, off, adj, st


def check_delimited(delim: Any, max_frame: Any) -> tuple[bytes, int]:
    """The arguments of Delimited, checked: (delimiter, max_frame)."""
    d = bytes_arg(delim, "Delimited's delimiter")
    if not d:
        raise ValueError("Delimited needs a non-empty delimiter")
    return d, check_max_frame(max_frame)


def _prefixed_repr(c: Any) -> str:
    extra = "".join(f", {k}={getattr(c, k)!r}" for k, default in
                    (("offset", 0), ("adjust", 0), ("strip", None)) if getattr(c, k) != default)
    return f"LengthPrefixed({c.prefix!r}, max_frame={c.max_frame}{extra})"


# -- encoding (one implementation for both: it only writes a prefix and references) -------

_FIELD_MAX = {"be16": 0xFFFF, "le16": 0xFFFF, "be24": 0xFFFFFF, "be32": 0xFFFFFFFF,
              "le32": 0xFFFFFFFF, "leb128": 2**64 - 1}


def _payload_views(payload: Any) -> list[Any]:
    if isinstance(payload, Memory):
        return list(payload)
    try:
        return [memoryview(payload)]
    except TypeError:
        raise TypeError(f"encode needs a bytes-like payload or a Memory, got "
                        f"{type(payload).__name__}") from None


class _Encodes:
    """``encode`` of the pure-Python framers, and the general case of the compiled ones
    (their C ``encode`` does a prefix and a flat payload itself, with the same checks
    and messages, and hands everything else here)."""

    __slots__ = ()

    def encode(self: Any, payload: Any, writer: Any = None) -> Memory | None:
        """The frame for ``payload``: its length prefix (or delimiter) and the payload
        itself by reference, so a received frame can be echoed or relayed as it is.

        Args:
            payload: any bytes-like, or a Memory (its segments are referenced, not joined).
            writer: a :class:`~membuf.Writer` to append the frame to; then nothing is
                returned. ``None``: the frame is returned as a Memory.

        Raises:
            MalformedError: the payload is over ``max_frame`` (the peer would refuse it).
            ValueError: the length cannot be encoded in this prefix (or with this
                ``adjust``/``offset``), or the payload contains the delimiter.
            TypeError: the payload is not bytes-like.
        """
        kind = type(payload)
        if kind is bytes or kind is bytearray:     # one flat payload (the common case): no views
            parts: Any = (payload,)
            n = len(payload)
        else:
            parts = _payload_views(payload)
            n = sum(v.nbytes for v in parts)
        if n > self.max_frame:
            raise MalformedError(f"encode of a {n}-byte payload: over "
                                 f"max_frame={self.max_frame}; nothing was written")
        delim = self.delim
        if delim is not None:
            if n and Memory(*parts).reader().find(delim) >= 0:
                raise ValueError(f"encode: the payload contains the delimiter {delim!r}, so the "
                                 "peer would cut it in two; nothing was written")
        else:
            if self.offset:
                raise ValueError(f"encode cannot make the {self.offset} header bytes before the "
                                 "length field: write them first, then encode with an offset=0 "
                                 "codec")
            prefix = self.prefix
            field = n - self.adjust
            if not 0 <= field <= _FIELD_MAX[prefix]:
                raise ValueError(f"encode: a {n}-byte payload needs a length field of {field} "
                                 f"(adjust={self.adjust}), which {prefix} cannot hold")
        w = Writer() if writer is None else writer
        if delim is None:
            width = _PREFIXES[prefix]
            if not width:
                w.write_leb128(field)
            elif prefix[0] == "l":
                w.write_le(width, field)
            else:
                w.write_be(width, field)
        for v in parts:
            w.write_ref(v)
        if delim is not None:
            w.write(delim)
        return w.take() if writer is None else None


_core._bind_encode(_Encodes.encode)


# -- the compiled framers ---------------------------------------------------------------


class Framer(_core.Framer):
    """Base of the compiled framers: ``split`` / ``split_views`` in C (native/core/framer.c),
    and ``encode`` (in C for a prefix and a flat payload; else :meth:`_Encodes.encode`).

    ``joined`` counts frames that ``split_views`` had to copy into one buffer
    because they spanned segments.
    """

    __slots__ = ()


class LengthPrefixed(Framer):
    """Frames with a length field: ``"leb128"``, ``"be16"``, ``"be24"``, ``"be32"``,
    ``"le16"`` or ``"le32"``, after Netty's LengthFieldBasedFrameDecoder.

    Args:
        prefix: how the length field is encoded.
        max_frame: the largest body allowed (bytes after the length field); longer ->
            MalformedError. At most 2**64-1.
        offset: header bytes before the length field (part of the frame).
        adjust: added to the length field's value to give the body length (e.g. -2
            when a be16 field counts itself).
        strip: bytes removed from the front of each frame; ``None`` (the default)
            removes the header and the length field, so a frame is its body.

    >>> from membuf import Reader
    >>> r = Reader.from_bytes(b"\\x03abc\\x02d", b"e\\x05par")
    >>> codec = LengthPrefixed("leb128", max_frame=1024)
    >>> [bytes(v) for v in codec.split_views(r)], codec.joined, len(r)
    ([b'abc', b'de'], 1, 4)

    An MQTT-like fixed header (a type byte, then a LEB128 length), whole packets:

    >>> mqtt = LengthPrefixed("leb128", offset=1, strip=0)
    >>> [bytes(v) for v in mqtt.split_views(Reader(b"\\x30\\x02hi\\xc0\\x00"))]
    [b'0\\x02hi', b'\\xc0\\x00']
    """

    __slots__ = ()

    def __init__(self, prefix: str = "leb128", max_frame: int = 1 << 20, *, offset: int = 0,
                 adjust: int = 0, strip: int | None = None) -> None:
        super().__init__(*check_prefixed(prefix, max_frame, offset, adjust, strip), None)

    def __repr__(self) -> str:
        return _prefixed_repr(self)


class Delimited(Framer):
    """Frames ended by a delimiter (not included in the frame), e.g. ``b"\\r\\n"``.

    Args:
        delim: the non-empty delimiter.
        max_frame: the most bytes allowed before a delimiter; more -> MalformedError.

    >>> from membuf import Reader
    >>> r = Reader.from_bytes(b"a\\r\\nbc\\r", b"\\nde")
    >>> [m.tobytes() for m in Delimited(b"\\r\\n", max_frame=64).split(r)], r.peek(2)
    ([b'a', b'bc'], b'de')
    """

    __slots__ = ()

    def __init__(self, delim: bytes = b"\r\n", max_frame: int = 1 << 16) -> None:
        d, mf = check_delimited(delim, max_frame)
        super().__init__(None, mf, 0, 0, None, d)

    def __repr__(self) -> str:
        return f"Delimited({self.delim!r}, max_frame={self.max_frame})"


# -- the pure-Python reference -----------------------------------------------------------


class PyFramer:
    """The pure-Python split loop: one frame per iteration, each in a ``transaction``."""

    max_frame: int
    joined: int

    def _frame(self, reader: Reader) -> list[memoryview]:
        """Consume one frame; return the views of the bytes it hands out.

        Raises NeedMore or MalformedError (the caller's transaction rewinds).
        """
        raise NotImplementedError

    def _make(self, pieces: list[memoryview], views: bool, allocator: Any) -> Any:
        if not views:
            return from_views(pieces, sum(map(len, pieces)))
        if not pieces:
            return memoryview(b"")
        if len(pieces) == 1:
            return pieces[0]               # e.g. the body sat in one segment after all
        n = sum(map(len, pieces))
        buf = bytearray(n) if allocator is None else allocator.malloc(n)
        dst = memoryview(buf)
        if len(dst) != n:
            raise ValueError(f"allocator.malloc({n}) returned {len(dst)} bytes")
        pos = 0
        for p in pieces:
            dst[pos : pos + len(p)] = p
            pos += len(p)
        self.joined += 1
        return dst if allocator is None else buf

    def _run(self, reader: Reader, views: bool, allocator: Any) -> list[Any]:
        if not isinstance(reader, _READERS):
            what = "split_views" if views else "split"
            raise TypeError(f"{what} needs a membuf.Reader, got {type(reader).__name__}")
        out: list[Any] = []
        while reader.chunk():              # (steps onto the next segment with a byte)
            try:
                with reader.transaction():
                    frame = self._make(self._frame(reader), views, allocator)
            except NeedMore:
                break
            except (MalformedError, MemoryError):
                if out:
                    break                  # return what came before; the next call raises
                raise
            out.append(frame)
        return out

    def split(self, reader: Reader) -> list[Memory]:
        """Consume every complete frame now available; return each as a Memory (zero-copy).

        A frame that spans segments is a Memory of several views. A partial
        frame is left unread.

        Raises:
            MalformedError: the next frame is over ``max_frame`` or malformed; the
                reader is left at its start (complete frames before it are
                returned first, by this call).
        """
        return self._run(reader, False, None)

    def split_views(self, reader: Reader, allocator: SupportsMalloc | None = None) -> list[memoryview]:
        """Consume every complete frame now available; return one memoryview per frame.

        A frame inside one segment is a view of it (zero-copy); a frame that
        spans segments is copied into one buffer, malloc'd from ``allocator``
        when given (the caller frees it), else a bytearray; ``joined`` counts them.

        Raises:
            MalformedError: as :meth:`split`.
            TypeError: ``allocator`` has no ``malloc`` (checked before any frame).
        """
        if allocator is not None and not callable(getattr(allocator, "malloc", None)):
            raise TypeError("split_views needs an allocator with malloc(n), or None, got "
                            f"{type(allocator).__name__}")
        return self._run(reader, True, allocator)


class PyLengthPrefixed(_Encodes, PyFramer):
    """The reference twin of :class:`LengthPrefixed` (same arguments, results, errors)."""

    def __init__(self, prefix: str = "leb128", max_frame: int = 1 << 20, *, offset: int = 0,
                 adjust: int = 0, strip: int | None = None) -> None:
        (self.prefix, self.max_frame, self.offset, self.adjust,
         self.strip) = check_prefixed(prefix, max_frame, offset, adjust, strip)
        self.delim = None
        self.joined = 0
        self._width = _PREFIXES[self.prefix]

    def _frame(self, reader: Reader) -> list[memoryview]:
        start = reader.offset
        reader.skip(self.offset)                     # the header must be all here
        w = self._width
        if not w:
            n = reader.read_leb128()
        else:
            n = reader.read_le(w) if self.prefix[0] == "l" else reader.read_be(w)
        hdr = reader.offset - start
        body = n + self.adjust
        if body < 0:
            raise MalformedError(f"{self.prefix} length field {n} with adjust={self.adjust} is a "
                                 f"negative frame length ({body}); {_NOTHING}")
        if body > self.max_frame:
            field = f" (length field {n}, adjust={self.adjust})" if self.adjust else ""
            raise MalformedError(f"{self.prefix} frame of {body} bytes{field} is over "
                                 f"max_frame={self.max_frame}; {_NOTHING}")
        s = hdr if self.strip is None else self.strip
        if s > hdr + body:
            raise MalformedError(f"strip={s} is past the end of the {hdr + body}-byte frame "
                                 f"({self.prefix} length field {n}); {_NOTHING}")
        reader.unread(hdr)                           # back to the frame's first byte
        reader.skip(s)
        return list(reader.range(hdr + body - s))   # NeedMore until the body is all here

    def __repr__(self) -> str:
        return _prefixed_repr(self)


class PyDelimited(_Encodes, PyFramer):
    """The reference twin of :class:`Delimited` (same arguments, results, errors)."""

    def __init__(self, delim: bytes = b"\r\n", max_frame: int = 1 << 16) -> None:
        self.delim, self.max_frame = check_delimited(delim, max_frame)
        self.prefix = None
        self.joined = 0

    def _frame(self, reader: Reader) -> list[memoryview]:
        return list(reader.read_until(self.delim, self.max_frame))

    def __repr__(self) -> str:
        return f"Delimited({self.delim!r}, max_frame={self.max_frame})"


#: The compiled framers, whichever implementation is selected (the differential tests).
COMPILED_FRAMERS = (LengthPrefixed, Delimited)
#: The pure-Python framers, likewise.
PURE_FRAMERS = (PyLengthPrefixed, PyDelimited)

if not TYPE_CHECKING and not COMPILED:
    Framer, LengthPrefixed, Delimited = PyFramer, PyLengthPrefixed, PyDelimited
