"""``python -m membuf probe FILE``: a small ffprobe for .flv, .obu and .ivf files.

Strategy. The file is mmap'd and wrapped in a :class:`~membuf.Memory`, so the
parsers walk the page cache with zero-copy ``take``s, the very code that
parses a TCP receive buffer. The format is told by the first bytes, not the
name, and as strictly as ffmpeg's probes: an FLV header with a plausible
version and data offset, an IVF header of version 0, or (a raw OBU stream) a
temporal delimiter OBU followed by well-formed OBUs with a sequence header
before the first frame. Anything else is "unknown format" (exit code 1),
where ffprobe says "Invalid data found". Counts follow ffprobe's
packet counts (see :class:`~membuf.media.flv.MediaCounts` and
:class:`~membuf.media.av1.ObuCounts`), so ``--json`` output can be checked
against ``ffprobe -count_packets``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedError, NeedMore
from ..memory import Memory
from ..reader import Reader
from . import av1, flv

__all__ = ["ProbeResult", "probe_file", "probe_memory", "main"]

AVC_NAL_NAMES = {1: "slice", 5: "idr", 6: "sei", 7: "sps", 8: "pps", 9: "aud", 12: "filler"}


@dataclass
class ProbeResult:
    """What :func:`probe_memory` found; ``error`` is set when the input is corrupt or cut short."""

    format: str
    size: int
    counts: flv.MediaCounts | av1.ObuCounts
    details: list[str] = field(default_factory=list)
    nalus: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object (exactly the documented keys)."""
        return self.counts.summary()


SNIFF_BYTES = 1 << 16  # how far sniff looks (ffmpeg probes 2 KiB, then more)
_RESERVED_OBU_TYPES = frozenset((0, 9, 10, 11, 12, 13, 14))


def _looks_like_obus(head: bytes) -> bool:
    """A temporal delimiter first, then well-formed OBUs, a sequence header before any frame
    (ffmpeg's ``obu_probe`` rule), as far as ``head`` reaches."""
    r = Memory(head).reader()
    try:
        first = av1.read_obu(r)
    except (NeedMore, MalformedError):
        return False
    if first.type != av1.TEMPORAL_DELIMITER or first.size != first.header_size:
        return False
    seen_sequence = False
    while len(r):
        try:
            obu = av1.read_obu(r)
        except NeedMore:
            break                      # runs past what sniff looks at: fine so far
        except MalformedError:
            return False
        if obu.type in _RESERVED_OBU_TYPES or obu.data.reader().peek_byte() & 1:
            return False             # a reserved type, or obu_reserved_1bit set
        if obu.type == av1.SEQUENCE_HEADER:
            seen_sequence = True
        elif obu.type in (av1.FRAME, av1.FRAME_HEADER) and not seen_sequence:
            return False
    return True


def sniff(head: bytes) -> str:
    """``flv``, ``ivf`` or ``obu`` from the first bytes (up to :data:`SNIFF_BYTES`).

    Raises:
        MalformedError: "unknown format", for anything that is none of them.
    """
    if (len(head) >= 9 and head.startswith(b"FLV") and head[3] < 5
            and int.from_bytes(head[5:9], "big") > 8):
        return "flv"
    if len(head) >= 8 and head.startswith(b"DKIF") and head[4:6] == b"\0\0" \
            and int.from_bytes(head[6:8], "little") >= av1.IVF_HEADER_SIZE:
        return "ivf"
    if _looks_like_obus(head):
        return "obu"
    raise MalformedError(f"unknown format: starts with {head[:8]!r}; expected FLV, IVF or a raw"
                         " AV1 OBU stream (a temporal delimiter OBU first)")


def probe_memory(data: Memory) -> ProbeResult:
    """Probe an FLV, IVF or OBU byte stream held in ``data``.

    Raises:
        MalformedError: "unknown format" (see :func:`sniff`).
    """
    r = data.reader()
    fmt = sniff(r.peek(min(SNIFF_BYTES, len(r))))
    if fmt == "flv":
        return _probe_flv(r, len(data))
    return _probe_av1(r, len(data), fmt)


def probe_file(path: str | os.PathLike[str]) -> ProbeResult:
    """Probe a file through an mmap (the file is never read into Python bytes)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise MalformedError("unknown format: the file is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return probe_memory(Memory(mm))
    finally:
        try:
            mm.close()
        except BufferError:  # a view is still referenced (a traceback); the GC unmaps it
            pass


def _probe_flv(r: Reader, size: int) -> ProbeResult:
    counts = flv.MediaCounts(bytes=size)
    res = ProbeResult("flv", size, counts)
    try:
        header = flv.read_header(r)
    except NeedMore:
        res.error = "truncated FLV header"
        return res
    streams = "+".join(k for k, v in (("audio", header.has_audio), ("video", header.has_video)) if v)
    res.details.append(f"FLV version {header.version}, {streams or 'no streams'} announced")
    length_size = 4
    while len(r):
        try:
            tag = flv.read_tag(r)
        except NeedMore:
            res.error = f"truncated: the last tag is cut short ({len(r)} bytes left over)"
            break
        except MalformedError as e:
            res.error = str(e)
            break
        head = tag.body.reader().peek(min(5, len(tag.body)))
        kind = counts.add(tag.type, head, tag.timestamp)
        if tag.type == flv.VIDEO and counts.video_codec in ("h264", "hevc"):
            if kind == flv.CONFIG:
                try:
                    length_size = flv.nalu_length_size(tag.body, counts.video_codec)
                except MalformedError as e:
                    res.details.append(str(e))
            elif kind == flv.FRAME:
                _count_nalus(res, tag.body, length_size, counts.video_codec)
        elif tag.type == flv.AUDIO and kind == flv.CONFIG and counts.audio_codec == "aac":
            res.details.append(flv.aac_config(tag.body))
    return res


def _count_nalus(res: ProbeResult, body: Memory, length_size: int, codec: str) -> None:
    br = body.reader()
    br.skip(min(5, len(br)))
    try:
        nalus = flv.split_nalus(br, length_size)
    except MalformedError:
        res.nalus["malformed"] += 1
        return
    for nalu in nalus:
        if not len(nalu):
            continue
        b = nalu.reader().peek_byte()
        t = (b >> 1) & 0x3F if codec == "hevc" else b & 0x1F
        res.nalus[AVC_NAL_NAMES.get(t, f"type{t}") if codec == "h264" else f"type{t}"] += 1


def _probe_av1(r: Reader, size: int, fmt: str) -> ProbeResult:
    counts = av1.ObuCounts(format=fmt)
    res = ProbeResult(fmt, size, counts)
    try:
        if fmt == "ivf":
            hdr = av1.read_ivf_header(r)
            res.details.append(f"IVF {hdr.fourcc.decode('latin-1')} {hdr.width}x{hdr.height},"
                               f" {hdr.rate}/{hdr.scale} time base, {hdr.frames} frames announced")
            units = 0
            while len(r):
                _, data = av1.read_ivf_frame(r)
                av1.walk_obus(data.reader(), counts, rest=len(data))
                units += 1
            counts.temporal_units = units  # an IVF frame is one temporal unit
        else:
            av1.walk_obus(r, counts)
            if len(r):
                res.error = f"truncated: the last OBU is cut short ({len(r)} bytes left over)"
    except NeedMore:
        res.error = f"truncated: the last IVF frame is cut short ({len(r)} bytes left over)"
    except MalformedError as e:
        res.error = str(e)
    counts.bytes = size
    return res


def _ts(v: int | None) -> str:
    return "-" if v is None else f"{v} ms"


def format_text(path: str, res: ProbeResult) -> str:
    """The human-readable report."""
    lines = [f"{path}: {res.format}, {res.size} bytes"]
    lines += [f"  {d}" for d in res.details]
    c = res.counts
    if isinstance(c, flv.MediaCounts):
        lines.append(f"  video: {c.video_codec or '-'}: {c.video_frames} frames, {c.keyframes}"
                     f" keyframes, first timestamp {_ts(c.first_video_ts)}")
        lines.append(f"  audio: {c.audio_codec or '-'}: {c.audio_frames} frames,"
                     f" first timestamp {_ts(c.first_audio_ts)}")
        lines.append("  tags by kind:")
        lines += [f"    {k:<24} {v:>8}" for k, v in sorted(c.by_kind.items())]
        if res.nalus:
            lines.append("  NAL units by type:")
            lines += [f"    {k:<24} {v:>8}" for k, v in sorted(res.nalus.items())]
    else:
        lines.append(f"  temporal units {c.temporal_units}, shown frames {c.frames},"
                     f" hidden frames {c.hidden_frames}, OBUs {c.obus}")
        lines.append("  OBUs by type:")
        lines += [f"    {k:<24} {v:>8}" for k, v in sorted(c.by_type.items())]
    if res.error:
        lines.append(f"  error: {res.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m membuf probe``; returns the exit code (1: corrupt input)."""
    p = argparse.ArgumentParser(prog="python -m membuf probe",
                                description="Summarise an .flv, .obu or .ivf file.")
    p.add_argument("file", help="an FLV file, a raw AV1 OBU stream (ffmpeg -f obu) or an IVF file")
    p.add_argument("--json", action="store_true", help="print one JSON object (counts only)")
    args = p.parse_args(argv)
    try:
        res = probe_file(args.file)
    except (OSError, MalformedError) as e:
        print(f"probe: {args.file}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res.summary()))
    else:
        print(format_text(args.file, res))
    if res.error:
        print(f"probe: {args.file}: {res.error}", file=sys.stderr)
        return 1
    return 0
