"""membuf's stream layer (docs/design.md §6): one API under trio, asyncio and anyio.

This module only re-exports; the code lives in ``membuf/_stream/`` (one file
per concern) and docs/stream.md describes it: receiving straight into native
memory (sockets, TLS), reads and frames, ownership, cancellation, limits,
servers and clients.
"""

from __future__ import annotations

from ._stream._connection import Connection
from ._stream._options import DEFAULT_MAX_BUFFERED, StreamOptions
from ._stream._receive import Frames, StreamReader, StreamStats
from ._stream._send import send_memory
from ._stream._tcp import open_tcp, serve_tcp, start_server

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "Connection",
    "Frames",
    "StreamOptions",
    "StreamReader",
    "StreamStats",
    "open_tcp",
    "send_memory",
    "serve_tcp",
    "start_server",
]
