"""FLV: file header, tags, and what a tag body carries (AVC / HEVC / AAC).

Strategy. FLV is the payload format of RTMP too: an RTMP audio or video
message body is exactly an FLV tag body. So this module has two layers:

* the container (:func:`read_header`, :func:`read_tag`): sans-IO parsers
  over a :class:`~membuf.Reader`. Each is atomic: when the Reader does not
  yet hold the whole header or tag (plus its previous-tag size) it raises
  ``NeedMore`` and consumes nothing, so the same code parses an mmap'd file
  and a growing receive buffer. A tag body is a zero-copy ``take``.
* the payload (:func:`classify_video`, :func:`classify_audio`,
  :func:`split_nalus`): look at the first bytes of a body to say whether it
  is a frame, a codec configuration record, an end-of-sequence marker or a
  command, and split AVCC length-prefixed NAL units into views.

:class:`MediaCounts` counts the way ffprobe counts packets: codec
configuration tags (AVC/HEVC/AAC sequence headers), AVC end-of-sequence tags,
video info/command frames, empty bodies and script data are not frames.

A MalformedError means the stream is corrupt or misaligned and cannot be
resynchronised; where the Reader is left after one is unspecified.

Not handled: encrypted tags (the filter bit) are refused; AMF3 script data
is counted but not decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedError, NeedMore
from ..memory import Memory
from ..reader import Reader
from .limits import check_reader, check_size

# The first bytes of a payload, as the media recognisers here (FLV, AV1) take them.
# An alias, because a class body that defines a `bytes` field shadows the builtin.
Head = bytes | memoryview

__all__ = [
    "AUDIO",
    "VIDEO",
    "SCRIPT",
    "FlvHeader",
    "Tag",
    "MediaCounts",
    "read_header",
    "read_tag",
    "classify_video",
    "classify_audio",
    "split_nalus",
    "nalu_length_size",
    "aac_config",
]

AUDIO, VIDEO, SCRIPT = 8, 9, 18
TAG_HEADER_SIZE = 11
HEADER_SIZE = 9

# what a tag body is; only FRAME counts as a packet
FRAME, CONFIG, END_OF_SEQUENCE, INFO, METADATA, EMPTY = (
    "frame", "config", "end-of-sequence", "info", "metadata", "empty",
)

VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}
AUDIO_CODECS = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 4: "nellymoser16", 5: "nellymoser8",
                6: "nellymoser", 7: "g711a", 8: "g711u", 10: "aac", 11: "speex", 14: "mp3_8k"}
EX_VIDEO_CODECS = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class FlvHeader:
    """The 9-byte FLV file header."""

    version: int
    has_audio: bool
    has_video: bool
    data_offset: int


@dataclass
class Tag:
    """One FLV tag: its type, timestamp (ms) and body (zero-copy views)."""

    type: int
    timestamp: int
    body: Memory


def read_header(r: Reader) -> FlvHeader:
    """Read the FLV file header and the first previous-tag size (always 0).

    Raises:
        NeedMore: fewer than ``data_offset + 4`` bytes are buffered (nothing consumed).
        MalformedError: the signature is not ``FLV`` or the offset is impossible.
        TypeError: ``r`` is not a Reader.
    """
    check_reader("flv.read_header", r)
    with r.transaction():
        sig = r.read_bytes(3)
        if sig != b"FLV":
            raise MalformedError(f"not an FLV stream: starts with {sig!r}, expected b'FLV'")
        version = r.read_byte()
        flags = r.read_byte()
        offset = r.read_be(4)
        if offset < HEADER_SIZE or offset > 1 << 16:
            raise MalformedError(f"FLV header size {offset} is impossible (expected 9)")
        r.skip(offset - HEADER_SIZE)
        r.skip(4)  # PreviousTagSize0
    return FlvHeader(version, bool(flags & 4), bool(flags & 1), offset)


def read_tag(r: Reader, max_size: int = 16 << 20) -> Tag:
    """Read one tag and the previous-tag size that follows it.

    Raises:
        NeedMore: the whole tag is not buffered yet (nothing consumed).
        MalformedError: an unknown or encrypted tag type, or a previous-tag
            size that disagrees with the tag (a corrupt or misaligned stream).
        TypeError, ValueError: ``r`` is not a Reader, ``max_size`` not a size
            (nothing consumed).
    """
    if type(max_size) is not int or max_size < 0:
        check_size("flv.read_tag", "max_size", max_size)
    if type(r) is not Reader:
        check_reader("flv.read_tag", r)
    with r.transaction():
        start = r.offset
        kind = r.read_byte()
        size = r.read_be(3)
        ts = r.read_be(3)
        ts |= r.read_byte() << 24
        r.skip(3)  # stream id, always 0
        if kind not in (AUDIO, VIDEO, SCRIPT):
            raise MalformedError(
                f"FLV tag at byte {start} has type {kind}"
                + (" (encrypted tags are not supported)" if kind & 0x20 else "")
                + "; expected 8 (audio), 9 (video) or 18 (script)")
        if size > max_size:
            raise MalformedError(f"FLV tag at byte {start} is {size} bytes, over max_size={max_size}")
        if len(r) < size + 4:
            raise NeedMore(f"FLV tag needs {size + 4} more bytes", size + 4 - len(r))
        body = r.take(size)
        prev = r.read_be(4)
        if prev != size + TAG_HEADER_SIZE:
            raise MalformedError(
                f"FLV tag at byte {start}: previous-tag size {prev} != {size + TAG_HEADER_SIZE}"
                " (corrupt stream)")
    return Tag(kind, ts, body)


def classify_video(head: bytes | memoryview) -> tuple[str, bool, str]:
    """Say what a video tag body is from its first (up to 5) bytes.

    Returns:
        ``(kind, keyframe, codec)``: kind is one of ``frame``, ``config``,
        ``end-of-sequence``, ``info`` or ``empty``; keyframe is true for key
        frames only (never for configs).
    """
    if not head:
        return EMPTY, False, "?"
    b0 = head[0]
    if b0 & 0x80:  # enhanced RTMP: frame type 3 bits, packet type 4 bits, FourCC
        frame_type, packet_type = (b0 >> 4) & 7, b0 & 0x0F
        codec = EX_VIDEO_CODECS.get(bytes(head[1:5]), "?")
        if frame_type == 5 or packet_type == 4:
            return INFO, False, codec
        if packet_type in (0, 5):
            return CONFIG, False, codec
        if packet_type == 2:
            return END_OF_SEQUENCE, False, codec
        return FRAME, frame_type == 1, codec
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    codec = VIDEO_CODECS.get(codec_id, f"codec{codec_id}")
    if frame_type == 5:
        return INFO, False, codec
    if codec_id in (7, 12) and len(head) > 1:
        if head[1] == 0:
            return CONFIG, False, codec
        if head[1] == 2:
            return END_OF_SEQUENCE, False, codec
    return FRAME, frame_type == 1, codec


def classify_audio(head: bytes | memoryview) -> tuple[str, str]:
    """Say what an audio tag body is: ``(kind, codec)``; an AAC sequence header is a config."""
    if not head:
        return EMPTY, "?"
    fmt = head[0] >> 4
    codec = AUDIO_CODECS.get(fmt, f"codec{fmt}")
    if fmt == 10 and len(head) > 1 and head[1] == 0:
        return CONFIG, codec
    return FRAME, codec


def nalu_length_size(config_body: Memory, codec: str) -> int:
    """NAL unit length-prefix size (1-4) from an AVC or HEVC sequence-header tag body."""
    r = config_body.reader()
    try:
        r.skip(5)  # frame/codec byte, packet type, composition time
        r.skip(4 if codec == "h264" else 21)  # to lengthSizeMinusOne
        return (r.read_byte() & 3) + 1
    except NeedMore:
        raise MalformedError(f"{codec} decoder configuration record is truncated") from None


def split_nalus(r: Reader, length_size: int = 4) -> list[Memory]:
    """Split AVCC/HVCC length-prefixed NAL units into zero-copy Memories.

    ``r`` is positioned after the 5-byte video tag prefix; every byte left
    must belong to a NAL unit.

    Raises:
        MalformedError: a length runs past the end of the data.
    """
    nalus = []
    while len(r):
        if len(r) < length_size:
            raise MalformedError(f"{len(r)} stray bytes after the last NAL unit")
        n = r.read_be(length_size)
        if n > len(r):
            raise MalformedError(f"NAL unit of {n} bytes but only {len(r)} left in the frame")
        nalus.append(r.take(n))
    return nalus


def aac_config(config_body: Memory) -> str:
    """Describe an AAC sequence header (AudioSpecificConfig), e.g. ``AAC type 2, 44100 Hz, 1 ch``."""
    head = config_body.reader().peek(min(4, len(config_body)))
    if len(head) < 4:
        return "AAC (truncated config)"
    bits = int.from_bytes(head[2:4], "big")
    obj, rate_index, channels = bits >> 11, (bits >> 7) & 15, (bits >> 3) & 15
    rate = AAC_RATES[rate_index] if rate_index < len(AAC_RATES) else 0
    return f"AAC type {obj}, {rate} Hz, {channels} ch"


@dataclass
class MediaCounts:
    """Per-stream counters, counted the way ffprobe counts packets.

    ``bytes`` is what the caller says it is (the probe counts the file, the
    RTMP server counts audio and video payload bytes).
    """

    video_frames: int = 0
    audio_frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    configs: int = 0
    end_of_sequence: int = 0
    scripts: int = 0
    skipped: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    first_video_ts: int | None = None
    first_audio_ts: int | None = None
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, tag_type: int, head: Head, timestamp: int) -> str:
        """Count one tag (or RTMP message) of ``tag_type``; return its kind."""
        if tag_type == VIDEO:
            kind, key, self.video_codec = classify_video(head)
            if kind == FRAME:
                self.video_frames += 1
                self.keyframes += key
                if self.first_video_ts is None:
                    self.first_video_ts = timestamp
        elif tag_type == AUDIO:
            kind, self.audio_codec = classify_audio(head)
            if kind == FRAME:
                self.audio_frames += 1
                if self.first_audio_ts is None:
                    self.first_audio_ts = timestamp
        else:
            kind = METADATA
            self.scripts += 1
        if kind == CONFIG:
            self.configs += 1
        elif kind == END_OF_SEQUENCE:
            self.end_of_sequence += 1
        elif kind in (INFO, EMPTY):
            self.skipped += 1
        key_ = f"{_TYPE_NAMES.get(tag_type, tag_type)} {kind}"
        self.by_kind[key_] = self.by_kind.get(key_, 0) + 1
        return kind

    @property
    def frames(self) -> int:
        return self.video_frames + self.audio_frames

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary: exactly the keys ``probe --json`` documents."""
        return {"format": "flv", "video_frames": self.video_frames,
                "audio_frames": self.audio_frames, "keyframes": self.keyframes,
                "bytes": self.bytes}


_TYPE_NAMES = {AUDIO: "audio", VIDEO: "video", SCRIPT: "script"}

