"""The caps and timeouts of the ingest servers, and the error a peer gets for passing one.

Strategy. A server facing the internet must bound what any peer can make it
hold or compute, and every bound must be a number an operator can change.
:class:`Limits` gathers them in one frozen value (each field is one
command-line flag of ``serve-rtmp`` / ``serve-av1``, docs/media.md); the
sans-IO parsers take the few that concern them as plain arguments, so they
stay usable without a server. The defaults are sized for an internet-facing
port: memory a peer makes the server hold is proportional to what it sent
and capped per connection, per stream and per process; work per input byte
is bounded; a peer that stalls is dropped.

:class:`LimitError` is a :class:`~membuf.MalformedError` (the connection is
dropped like one for corrupt input) whose message names the limit and the
flag that sets it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from ..errors import MalformedError
from ..reader import Reader

__all__ = ["LimitError", "Limits", "check_reader", "check_size", "default_max_memory",
           "format_size", "parse_size"]

_MIB = 1 << 20


class LimitError(MalformedError):
    """A peer passed one of the server's limits; its connection is dropped."""


def default_max_memory() -> int:
    """The process-wide cap on native memory: an eighth of physical memory, 256 MiB to 4 GiB.

    An eighth leaves room for the Python heap, the page cache and other
    processes; 256 MiB is enough for a few publishers at full rate, and 4
    GiB holds hundreds. Without ``sysconf`` (not Linux/BSD): 1 GiB.
    """
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 30
    return max(256 * _MIB, min(4 << 30, phys // 8 // _MIB * _MIB))


_SIZE = re.compile(r"\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*\Z")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"4M"`` -> 4194304: an integer byte count with an optional binary suffix (K, M, G, T).

    Raises:
        ValueError: not a size (the message quotes the text).
    """
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 512K, 4M, 2G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    """4194304 -> ``"4 MiB"``; sizes that are not a whole number of KiB stay in bytes."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit and n % (unit // 16) == 0:
            value = n / unit
            return f"{value:g} {name}" if value == int(value) else f"{value:.2f} {name}"
    return f"{n} B"


@dataclass(frozen=True)
class Limits:
    """Every cap and timeout of ``serve-rtmp`` and ``serve-av1`` (one flag each).

    Sizes are bytes, times seconds. ``ValueError`` at construction for a
    value that cannot work, ``TypeError`` for one of the wrong type, so a
    bad flag is refused before the server binds its port.
    """

    #: native memory of the whole process (the shared allocator's ``max_bytes``)
    max_memory: int = field(default_factory=default_max_memory)
    #: connections served at once; more are accepted and closed at once, with a log line
    max_connections: int = 1000
    #: seconds from accept until the peer publishes (RTMP) or sends its first OBU (AV1)
    handshake_timeout: float = 10.0
    #: seconds without a received byte before a connection is closed
    idle_timeout: float = 30.0
    #: bytes of frames a stream retains (its ring); ``--ring`` bounds the count
    ring_bytes: int = 8 * _MIB
    #: RTMP: payload bytes one player may hold queued; past it, it skips to the next keyframe
    player_budget: int = 4 * _MIB
    #: RTMP: the largest message accepted
    max_message: int = 4 * _MIB
    #: RTMP: bytes one connection may hold in messages received in part
    max_partial: int = 8 * _MIB
    #: RTMP: after the first ``item_allowance`` chunks, chunks must average this many bytes
    min_chunk_bytes: int = 16
    #: AV1: the largest OBU accepted (it must be buffered whole)
    max_obu: int = 4 * _MIB
    #: AV1: the largest temporal unit (the OBUs between two temporal delimiters)
    max_temporal_unit: int = 8 * _MIB
    #: AV1: after the first ``item_allowance`` OBUs, OBUs must average this many bytes
    min_obu_bytes: int = 4
    #: chunks or OBUs a connection may send before the average-size rule applies
    item_allowance: int = 4096
    #: chunks or OBUs parsed before the connection's task lets the others run
    pause_every: int = 64
    #: RTMP and HTTP-FLV players waiting for a stream not yet published, at most (and at
    #: most half of ``max_connections``): a waiting player is exempt from the timeouts,
    #: so without a cap players of a name nobody publishes could fill every slot
    max_waiting: int = 500
    #: RTMP: seconds a player has to close after the end of its stream is sent
    play_linger: float = 5.0
    #: HTTP-FLV: the largest request head (request line and headers)
    max_http_head: int = 8 << 10

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"Limits.{f.name} must be a number of seconds,"
                                    f" got {type(value).__name__}")
                if not value > 0:
                    raise ValueError(f"Limits.{f.name} must be > 0 seconds, got {value}")
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Limits.{f.name} must be an int, got {type(value).__name__}")
            if not 0 < value < 1 << 62:
                raise ValueError(f"Limits.{f.name} must be between 1 and 2**62, got {value}")
        if self.max_temporal_unit < self.max_obu:
            raise ValueError(f"Limits.max_temporal_unit ({self.max_temporal_unit}) must be at"
                             f" least max_obu ({self.max_obu}): a temporal unit holds whole OBUs")
        if self.max_partial < self.max_message:
            raise ValueError(f"Limits.max_partial ({self.max_partial}) must be at least"
                             f" max_message ({self.max_message}): a message is partial while"
                             " it arrives")


def check_size(owner: str, name: str, value: object, *, minimum: int = 0) -> int:
    """``value`` as a size argument of ``owner``: an int (not a bool), ``minimum`` .. 2**62.

    Raises:
        TypeError: not an int (a float, a bool, None...).
        ValueError: below ``minimum`` or above 2**62.
    """
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{owner} {name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= 1 << 62:
        raise ValueError(f"{owner} {name} must be between {minimum} and 2**62, got {value}")
    return int(value)


def check_reader(owner: str, r: object) -> None:
    """Raise TypeError unless ``r`` is a :class:`~membuf.Reader` (parsers read only Readers)."""
    if not isinstance(r, Reader):
        raise TypeError(f"{owner} reads a membuf.Reader, got {type(r).__name__}"
                        " (wrap bytes with membuf.Reader.from_bytes)")
