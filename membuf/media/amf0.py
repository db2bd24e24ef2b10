"""AMF0: the value encoding of RTMP commands (``connect``, ``publish``, ...).

Strategy. RTMP command messages are short (tens to hundreds of bytes) and
rare next to media, so clarity beats speed here: :func:`decode` reads one
value from a :class:`~membuf.Reader` and :func:`write_value` appends one to a
:class:`~membuf.Writer` (:func:`encode` is the bytes form). Decoding is atomic in the Reader sense only at the level of a
whole message: callers decode from a message that is already complete, so a
``NeedMore`` inside means the message itself is truncated and is reported as
:class:`~membuf.MalformedError`.

Mapping (AMF0 spec, section 2): number <-> float, boolean <-> bool, string and
long string <-> str, object and ECMA array <-> dict, strict array <-> list,
null <-> None, undefined <-> :data:`UNDEFINED`, date <-> :class:`Date`.
References, XML documents and typed objects decode (as dicts or strings) so a
peer that sends them does not kill the connection; the AMF3 switch marker is
refused because this module speaks AMF0 only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedError, NeedMore
from ..reader import Reader
from ..writer import PyWriter, Writer

__all__ = ["UNDEFINED", "Date", "EcmaArray", "decode", "decode_all", "encode", "write_value"]

NUMBER, BOOLEAN, STRING, OBJECT, MOVIECLIP, NULL, UNDEFINED_MARKER, REFERENCE = range(8)
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING, UNSUPPORTED = range(8, 14)
RECORDSET, XML_DOCUMENT, TYPED_OBJECT, AVMPLUS = range(14, 18)

_DOUBLE = struct.Struct(">d")
_MAX_DEPTH = 32  # nesting limit: a hostile peer cannot blow the Python stack


class _Undefined:
    """The AMF0 ``undefined`` value (distinct from ``null``, which is None)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@dataclass(frozen=True)
class Date:
    """An AMF0 date: milliseconds since the Unix epoch and a timezone (minutes)."""

    millis: float
    timezone: int = 0


class EcmaArray(dict):  # type: ignore[type-arg]
    """A dict that encodes as an AMF0 ECMA array (``onMetaData`` uses one)."""


def decode(r: Reader, _depth: int = 0) -> Any:
    """Read one AMF0 value from ``r``.

    Raises:
        MalformedError: an unknown marker, AMF3 data, nesting deeper than 32,
            or a value cut short (the caller passes complete messages).
    """
    try:
        return _decode(r, _depth)
    except NeedMore as e:
        raise MalformedError(f"AMF0 value is truncated: {e}") from None


def decode_all(r: Reader) -> list[Any]:
    """Read AMF0 values until ``r`` is empty (a command's whole argument list)."""
    values = []
    while len(r):
        values.append(decode(r))
    return values


def _decode(r: Reader, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise MalformedError(f"AMF0 nesting deeper than {_MAX_DEPTH} levels")
    marker = r.read_byte()
    if marker == NUMBER:
        return _DOUBLE.unpack(r.read_bytes(8))[0]
    if marker == BOOLEAN:
        return r.read_byte() != 0
    if marker == STRING:
        return _utf8(r.read_bytes(r.read_be(2)))
    if marker == LONG_STRING or marker == XML_DOCUMENT:
        return _utf8(r.read_bytes(r.read_be(4)))
    if marker == OBJECT:
        return _read_properties(r, {}, depth)
    if marker == ECMA_ARRAY:
        r.skip(4)  # the count is advisory; the end marker is what ends it
        return _read_properties(r, EcmaArray(), depth)
    if marker == TYPED_OBJECT:
        r.skip(r.read_be(2))  # class name
        return _read_properties(r, {}, depth)
    if marker == STRICT_ARRAY:
        count = r.read_be(4)
        if count > len(r):  # every value takes at least one byte
            raise MalformedError(f"AMF0 strict array claims {count} values in {len(r)} bytes")
        return [_decode(r, depth + 1) for _ in range(count)]
    if marker == NULL:
        return None
    if marker == UNDEFINED_MARKER or marker == UNSUPPORTED:
        return UNDEFINED
    if marker == DATE:
        millis = _DOUBLE.unpack(r.read_bytes(8))[0]
        tz = r.read_be(2)
        return Date(millis, tz - 0x10000 if tz & 0x8000 else tz)
    if marker == REFERENCE:
        return {"$ref": r.read_be(2)}
    if marker == AVMPLUS:
        raise MalformedError("AMF3 value inside AMF0 (marker 0x11): AMF3 is not supported")
    raise MalformedError(f"unknown AMF0 marker 0x{marker:02x}")


def _read_properties(r: Reader, out: dict[str, Any], depth: int) -> dict[str, Any]:
    while True:
        key = _utf8(r.read_bytes(r.read_be(2)))
        if not key and r.peek_byte() == OBJECT_END:
            r.skip(1)
            return out
        out[key] = _decode(r, depth + 1)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def encode(*values: Any) -> bytes:
    """Encode ``values`` one after another, as a command message body.

    >>> encode("connect", 1.0, None)
    b'\\x02\\x00\\x07connect\\x00?\\xf0\\x00\\x00\\x00\\x00\\x00\\x00\\x05'
    """
    w = Writer()
    for v in values:
        write_value(w, v)
    return w.take().to_bytes()


def write_value(w: PyWriter, v: Any) -> None:
    """Append the AMF0 encoding of ``v`` to ``w``.

    Raises:
        TypeError: ``v`` has no AMF0 form (what was written before ``v`` stays).
    """
    if v is None:
        w.write_byte(NULL)
    elif v is UNDEFINED:
        w.write_byte(UNDEFINED_MARKER)
    elif isinstance(v, bool):
        w.write_byte(BOOLEAN)
        w.write_byte(1 if v else 0)
    elif isinstance(v, (int, float)):
        w.write_byte(NUMBER)
        w.write(_DOUBLE.pack(float(v)))
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        if len(raw) <= 0xFFFF:
            w.write_byte(STRING)
            w.write_be(2, len(raw))
        else:
            w.write_byte(LONG_STRING)
            w.write_be(4, len(raw))
        w.write(raw)
    elif isinstance(v, Date):
        w.write_byte(DATE)
        w.write(_DOUBLE.pack(v.millis))
        w.write_be(2, v.timezone & 0xFFFF)
    elif isinstance(v, dict):
        if isinstance(v, EcmaArray):
            w.write_byte(ECMA_ARRAY)
            w.write_be(4, len(v))
        else:
            w.write_byte(OBJECT)
        _write_properties(w, v.items())
    elif isinstance(v, (list, tuple)):
        w.write_byte(STRICT_ARRAY)
        w.write_be(4, len(v))
        for item in v:
            write_value(w, item)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as AMF0")


def _write_properties(w: PyWriter, items: Iterable[tuple[Any, Any]]) -> None:
    for key, value in items:
        raw = str(key).encode("utf-8")
        w.write_be(2, len(raw))
        w.write(raw)
        write_value(w, value)
    w.write(b"\x00\x00\x09")
