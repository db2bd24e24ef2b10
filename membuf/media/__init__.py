"""membuf.media: FLV, RTMP, AMF0 and AV1 parsers built on Reader, and ingest servers.

Every parser here is sans-IO: it reads a :class:`~membuf.Reader` and raises
``NeedMore`` (consuming nothing, or keeping its progress) when the bytes are
not all there yet, so one implementation walks an mmap'd file, a
:class:`~membuf.StreamReader`'s receive buffer, or a test's byte splits.

Modules: :mod:`.flv` (tags, AVC/HEVC/AAC recognition, NAL splitting),
:mod:`.amf0`, :mod:`.rtmp` (handshake, chunk stream, publish session),
:mod:`.av1` (OBUs, temporal units, IVF), :mod:`.ring` (bounded frame ring),
:mod:`.probe` and :mod:`.servers` (the ``probe`` / ``serve-*`` commands;
``servers`` imports trio, so it is not imported here).
"""

from __future__ import annotations

from . import amf0 as amf0
from . import av1 as av1
from . import flv as flv
from . import rtmp as rtmp
from .av1 import Obu as Obu
from .av1 import ObuCounts as ObuCounts
from .av1 import read_obu as read_obu
from .flv import MediaCounts as MediaCounts
from .flv import Tag as Tag
from .flv import read_header as read_flv_header
from .flv import read_tag as read_flv_tag
from .probe import probe_file as probe_file
from .ring import FrameRing as FrameRing
from .rtmp import ChunkReader as ChunkReader
from .rtmp import ServerSession as ServerSession

__all__ = [
    "amf0",
    "av1",
    "flv",
    "rtmp",
    "ChunkReader",
    "FrameRing",
    "MediaCounts",
    "Obu",
    "ObuCounts",
    "ServerSession",
    "Tag",
    "probe_file",
    "read_flv_header",
    "read_flv_tag",
    "read_obu",
]
