"""StreamOptions: the one set of per-connection options every constructor threads through.

``open_tcp``, ``serve_tcp``, ``start_server``, ``Connection`` and
``StreamReader`` all take the same option keywords (or a ready
:class:`StreamOptions`); each builds one frozen object, checked once, and hands
that object down unchanged, so no option is dropped on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypedDict

__all__ = ["DEFAULT_MAX_BUFFERED", "OptionKeywords", "StreamOptions"]

# The default codecs' largest frame is 1 MiB (LengthPrefixed) and a frame is buffered
# whole together with its prefix (at most 10 bytes) or delimiter: the default limit
# leaves room for both, so a frame of a codec's default max_frame is always accepted.
DEFAULT_MAX_BUFFERED = (1 << 20) + 64
# More than a process can map (x86-64 and arm64 user space are 47 to 48 bits): a size
# above it could never be buffered, so it is refused when the options are made.
_MAX_SIZE = 1 << 47


class OptionKeywords(TypedDict, total=False):
    """The option keywords, for ``**options`` signatures."""

    chunk_size: int
    max_buffered: int
    idle_trim: float | None


@dataclass(frozen=True)
class StreamOptions:
    """How a StreamReader receives and how much it may hold.

    Args:
        chunk_size: the starting receive size in bytes (it adapts, see docs/stream.md).
        max_buffered: the most bytes held received but not yet consumed; a read or frame
            that needs more raises :class:`~membuf.BufferLimitError`. The default
            (1 MiB + 64) takes a frame of a codec's default ``max_frame`` with its prefix.
        idle_trim: seconds without data after which the reader holds no more native
            memory than what is buffered (a partial frame is copied out of its receive
            chunk) and a reader-owned allocator returns its arenas to the OS; ``None``:
            never.

    Raises:
        TypeError: an option of the wrong type (``bool`` is not a size).
        ValueError: a value that cannot work.
    """

    chunk_size: int = 16 << 10
    max_buffered: int = DEFAULT_MAX_BUFFERED
    idle_trim: float | None = 1.0

    def __post_init__(self) -> None:
        for name in ("chunk_size", "max_buffered"):
            value = getattr(self, name)
            if type(value) is not int:
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        for name in ("chunk_size", "max_buffered"):
            if getattr(self, name) > _MAX_SIZE:
                raise ValueError(
                    f"{name}={getattr(self, name)} is more than a process can map "
                    f"(at most 2**47 bytes)"
                )
        if self.max_buffered < self.chunk_size:
            raise ValueError(
                f"max_buffered ({self.max_buffered}) must be at least chunk_size "
                f"({self.chunk_size})"
            )
        trim = self.idle_trim
        if trim is not None:
            if type(trim) not in (int, float):
                raise TypeError(
                    f"idle_trim must be seconds (a number) or None, got {type(trim).__name__}"
                )
            if not trim >= 0:                    # also refuses NaN
                raise ValueError(f"idle_trim must be >= 0 seconds or None, got {trim!r}")

    @classmethod
    def make(cls, options: StreamOptions | None = None, **overrides: Any) -> StreamOptions:
        """``options`` (or the defaults) with the given keywords replaced.

        Keywords whose value is ``None`` are left out, except ``idle_trim``, where
        ``None`` means "never" (pass :data:`UNSET` to leave it out).

        Raises:
            TypeError: ``options`` is not a StreamOptions, or an unknown keyword.
        """
        if options is not None and not isinstance(options, StreamOptions):
            raise TypeError(f"options must be a StreamOptions, got {type(options).__name__}")
        unknown = set(overrides) - _NAMES
        if unknown:
            raise TypeError(
                f"unknown stream option(s) {', '.join(sorted(unknown))}; "
                f"the options are {', '.join(sorted(_NAMES))}"
            )
        given = {k: v for k, v in overrides.items()
                 if v is not UNSET and (v is not None or k == "idle_trim")}
        base = options if options is not None else _DEFAULT
        return replace(base, **given) if given else base


class _Unset:
    """The marker of an option keyword that was not given."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
_NAMES = {f.name for f in fields(StreamOptions)}
_DEFAULT = StreamOptions()
