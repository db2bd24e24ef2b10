"""The exceptions membuf raises (docs/design.md §7).

Every error subclasses :class:`MembufError` and also the builtin a caller would
naturally catch (``EOFError``, ``ValueError``, ``MemoryError``), so code that
knows nothing about membuf still handles it sensibly. Messages say what was
asked, what was there and what to do.
"""

from __future__ import annotations

__all__ = [
    "MembufError",
    "NeedMore",
    "IncompleteReadError",
    "MalformedError",
    "BufferLimitError",
    "FreeError",
    "MemoryLimitError",
    "UseAfterFreeError",
]


class MembufError(Exception):
    """Base class of every membuf error."""


class NeedMore(MembufError, EOFError):
    """A read needs more bytes than are buffered; nothing was consumed.

    ``needed`` is how many more bytes the read needs (at least 1), so a
    parser can wait for that much and simply retry.
    """

    def __init__(self, message: str, needed: int = 1) -> None:
        super().__init__(message)
        self.needed = needed


class IncompleteReadError(NeedMore):
    """The stream ended in the middle of a read.

    ``partial`` is how many bytes of the read had arrived; ``expected`` is
    the size of the read when it is known (``None`` for delimiter reads).
    """

    def __init__(self, message: str, partial: int, expected: int | None = None) -> None:
        super().__init__(message, needed=max(1, (expected or 0) - partial))
        self.partial = partial
        self.expected = expected


class MalformedError(MembufError, ValueError):
    """Input that can never parse: over-long LEB128, a frame over max_frame, a bad n."""


class BufferLimitError(MalformedError):
    """A read or frame needs more bytes buffered than a stream's ``max_buffered`` allows.

    ``size`` is how many bytes the read needs buffered at once (a lower bound
    when ``exact`` is false: a delimiter search, a frame whose length is not
    known yet), ``limit`` is ``max_buffered``. Nothing was consumed. A
    :class:`MalformedError`, so code that catches oversized input keeps working.
    """

    def __init__(self, message: str, size: int, limit: int, exact: bool = True) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.exact = exact


class FreeError(MembufError, ValueError):
    """A free that would corrupt the allocator: double, overlapping, foreign or strided."""


class MemoryLimitError(MembufError, MemoryError):
    """The allocator cannot reserve more native memory (``max_bytes`` or the OS said no)."""


class UseAfterFreeError(MembufError):
    """(Debug mode) bytes were written after they were freed.

    Raised when a quarantined range is checked, on leaving quarantine or by
    ``Allocator.check()``. ``address`` and ``size`` name the range; the
    message carries where it was allocated and where it was freed.
    """

    def __init__(self, message: str, address: int = 0, size: int = 0) -> None:
        super().__init__(message)
        self.address = address
        self.size = size
