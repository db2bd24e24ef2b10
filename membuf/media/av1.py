"""AV1: OBUs with LEB128 sizes (``ffmpeg -f obu``) and the IVF container.

Strategy. An AV1 "Low Overhead Bitstream Format" stream (AV1 spec section
5.2) is nothing but OBUs back to back, each a header byte, an optional
extension byte and a LEB128 ``obu_size``; a temporal unit (everything for one
instant, exactly one shown frame when there is one layer) starts at each
temporal-delimiter OBU. :func:`read_obu` is a sans-IO parser over a
:class:`~membuf.Reader`: atomic (``NeedMore`` consumes nothing), payload a
zero-copy ``take``. It therefore walks an mmap'd file, an IVF frame, or a TCP
receive buffer with the same code.

:class:`ObuCounts` counts what ffprobe reports: temporal units (ffprobe's
packets for ``-f obu`` and IVF input), OBUs by type, and shown frames
(ffprobe's decoded frames): a frame or frame-header OBU whose first header
bits say ``show_existing_frame`` or ``show_frame``. Hidden (alt-ref) frames
are counted apart.

A MalformedError means the stream is corrupt or misaligned; where the Reader
is left after one is unspecified.

Not handled: scalability (several spatial layers per temporal unit are
counted as several shown frames), and OBUs without a size field outside a
container that gives their length (the low-overhead format forbids them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedError, NeedMore
from ..memory import Memory
from ..reader import Reader
from .flv import Head
from .limits import check_reader, check_size

__all__ = [
    "OBU_NAMES",
    "Obu",
    "ObuCounts",
    "IvfHeader",
    "read_obu",
    "read_ivf_header",
    "read_ivf_frame",
    "walk_obus",
]

SEQUENCE_HEADER, TEMPORAL_DELIMITER, FRAME_HEADER, TILE_GROUP = 1, 2, 3, 4
METADATA, FRAME, REDUNDANT_FRAME_HEADER, TILE_LIST, PADDING = 5, 6, 7, 8, 15
OBU_NAMES = {
    SEQUENCE_HEADER: "sequence_header", TEMPORAL_DELIMITER: "temporal_delimiter",
    FRAME_HEADER: "frame_header", TILE_GROUP: "tile_group", METADATA: "metadata",
    FRAME: "frame", REDUNDANT_FRAME_HEADER: "redundant_frame_header",
    TILE_LIST: "tile_list", PADDING: "padding",
}
IVF_HEADER_SIZE = 32
IVF_FRAME_HEADER_SIZE = 12


@dataclass
class Obu:
    """One OBU: type, layer ids, header size (with the LEB128 size) and its bytes as views."""

    type: int
    temporal_id: int
    spatial_id: int
    header_size: int
    data: Memory  # the whole OBU, header included (zero-copy)

    @property
    def name(self) -> str:
        return OBU_NAMES.get(self.type, f"reserved{self.type}")

    @property
    def size(self) -> int:
        """Bytes the whole OBU takes in the stream."""
        return len(self.data)

    @property
    def payload(self) -> Memory:
        """The OBU payload (after the header and size field), zero-copy."""
        r = self.data.reader()
        r.skip(self.header_size)
        return r.take(len(r))

    def first_payload_byte(self) -> int | None:
        """The first payload byte (frame headers start with their show flags), or None."""
        if len(self.data) <= self.header_size:
            return None
        return self.data.reader().peek(self.header_size + 1)[-1]


def read_obu(r: Reader, rest: int | None = None, max_size: int = 16 << 20) -> Obu:
    """Read one OBU.

    Args:
        rest: bytes left in the enclosing container unit (an IVF frame), for
            an OBU without a size field; ``None`` in a raw OBU stream.
        max_size: the largest payload accepted (a corrupt size cannot make
            the caller wait for gigabytes).

    Raises:
        NeedMore: the whole OBU is not buffered yet (nothing consumed).
        MalformedError: the forbidden bit is set, a size is missing or too
            large, or an over-long LEB128.
        TypeError, ValueError: ``rest`` or ``max_size`` is not a size (nothing consumed).
    """
    if type(max_size) is not int or max_size < 0:
        check_size("read_obu", "max_size", max_size)
    if rest is not None and (type(rest) is not int or rest < 0):
        check_size("read_obu", "rest", rest)
    if type(r) is not Reader:
        check_reader("read_obu", r)
    with r.transaction():
        start = r.offset
        h = r.read_byte()
        if h & 0x80:
            raise MalformedError(f"OBU at byte {start}: forbidden bit set (header 0x{h:02x});"
                                 " not an AV1 OBU stream or misaligned")
        obu_type = (h >> 3) & 15
        tid = sid = 0
        if h & 4:
            ext = r.read_byte()
            tid, sid = ext >> 5, (ext >> 3) & 3
        if h & 2:
            size = r.read_leb128()
        elif rest is not None:
            size = rest - (r.offset - start)
            if size < 0:
                raise MalformedError(f"OBU at byte {start} overruns its container")
        else:
            raise MalformedError(f"OBU at byte {start} has no size field; a raw OBU stream"
                                 " (low-overhead format) needs one on every OBU")
        if size > max_size:
            raise MalformedError(f"OBU at byte {start} claims {size} bytes, over max_size={max_size}")
        header_size = r.offset - start
        if rest is not None and header_size + size > rest:
            raise MalformedError(f"OBU at byte {start} ({header_size + size} bytes) overruns its"
                                 f" container ({rest} bytes left)")
        if len(r) < size:
            raise NeedMore(f"OBU at byte {start} needs {size - len(r)} more bytes", size - len(r))
        r.unread(header_size)
        data = r.take(header_size + size)
    return Obu(obu_type, tid, sid, header_size, data)


@dataclass(frozen=True)
class IvfHeader:
    """The 32-byte IVF file header."""

    fourcc: bytes
    width: int
    height: int
    rate: int
    scale: int
    frames: int


def read_ivf_header(r: Reader) -> IvfHeader:
    """Read the IVF file header. Raises MalformedError when it is not IVF."""
    check_reader("read_ivf_header", r)
    with r.transaction():
        sig = r.read_bytes(4)
        if sig != b"DKIF":
            raise MalformedError(f"not an IVF file: starts with {sig!r}, expected b'DKIF'")
        r.skip(2)  # version
        size = r.read_le(2)
        fourcc = r.read_bytes(4)
        width, height = r.read_le(2), r.read_le(2)
        rate, scale, frames = r.read_le(4), r.read_le(4), r.read_le(4)
        r.skip(4)
        if size < IVF_HEADER_SIZE:
            raise MalformedError(f"IVF header size {size} is below {IVF_HEADER_SIZE}")
        r.skip(size - IVF_HEADER_SIZE)
    return IvfHeader(fourcc, width, height, rate, scale, frames)


def read_ivf_frame(r: Reader, max_size: int = 64 << 20) -> tuple[int, Memory]:
    """Read one IVF frame: ``(pts, data)`` with data as zero-copy views.

    Raises:
        NeedMore: the whole frame is not buffered yet (nothing consumed).
        MalformedError: a frame over ``max_size``.
        TypeError, ValueError: ``r`` is not a Reader, ``max_size`` not a size.
    """
    check_size("read_ivf_frame", "max_size", max_size)
    check_reader("read_ivf_frame", r)
    with r.transaction():
        size = r.read_le(4)
        pts = r.read_le(8)
        if size > max_size:
            raise MalformedError(f"IVF frame of {size} bytes, over max_size={max_size}")
        data = r.take(size)
    return pts, data


@dataclass
class ObuCounts:
    """Counts over an OBU stream, comparable with ffprobe (see the module docstring)."""

    obus: int = 0
    temporal_units: int = 0
    frames: int = 0
    hidden_frames: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    reduced_still_picture: bool = False
    format: str = "obu"

    def add(self, obu_type: int, head: Head) -> bool:
        """Count one OBU given the first byte(s) of its payload.

        Returns:
            True when the OBU starts a new temporal unit.
        """
        self.obus += 1
        name = OBU_NAMES.get(obu_type, f"reserved{obu_type}")
        self.by_type[name] = self.by_type.get(name, 0) + 1
        if obu_type == TEMPORAL_DELIMITER:
            self.temporal_units += 1
            return True
        if obu_type == SEQUENCE_HEADER and head:
            self.reduced_still_picture = bool(head[0] & 0x08)
        elif obu_type in (FRAME, FRAME_HEADER) and head:
            if self.reduced_still_picture or head[0] & 0x80 or head[0] & 0x10:
                self.frames += 1  # show_existing_frame or show_frame
            else:
                self.hidden_frames += 1
        return False

    def add_obu(self, obu: Obu) -> bool:
        """Count a parsed :class:`Obu` (see :meth:`add`)."""
        self.bytes += obu.size
        b = obu.first_payload_byte()
        return self.add(obu.type, b"" if b is None else bytes((b,)))

    def summary(self) -> dict[str, Any]:
        """Exactly the keys ``probe --json`` documents for AV1."""
        return {"format": self.format, "obus": self.obus,
                "temporal_units": self.temporal_units, "frames": self.frames}


def walk_obus(r: Reader, counts: ObuCounts, rest: int | None = None) -> list[Obu]:
    """Read and count every complete OBU in ``r`` (all of them when ``rest`` bounds a unit)."""
    out = []
    while len(r) if rest is None else rest > 0:
        try:
            obu = read_obu(r, rest)
        except NeedMore:
            if rest is not None:
                raise MalformedError("OBU cut short at the end of its container") from None
            break
        if rest is not None:
            rest -= obu.size
        counts.add_obu(obu)
        out.append(obu)
    return out
