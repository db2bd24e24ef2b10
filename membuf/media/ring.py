"""FrameRing: a bounded ring of retained frames, recycled when overwritten.

Strategy. Monibuca keeps each track's recent frames in a ring and recycles a
frame when its slot is reused, so a stream of any length holds at most
``size`` frames of native memory. Readers of the ring (a player, a recorder)
would take a frame before it is overwritten; an ingest-only server just keeps
the last ``size`` frames, which bounds memory and keeps the last GOP handy.

A frame is anything with ``recycle()`` (a :class:`~membuf.RecyclableMemory`,
or a list-like wrapper of them). The ring never copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["FrameRing", "Recyclable"]


class Recyclable(Protocol):
    def recycle(self) -> None: ...


class FrameRing:
    """A fixed number of slots; :meth:`push` recycles the frame it overwrites.

    >>> class F:
    ...     def __init__(self, n): self.n = n
    ...     def recycle(self): print("recycled", self.n)
    >>> ring = FrameRing(2)
    >>> for i in range(3): ring.push(F(i))
    recycled 0
    >>> [f.n for f in ring]
    [1, 2]
    >>> ring.clear()
    recycled 1
    recycled 2
    """

    __slots__ = ("_slots", "_next", "_count", "written", "recycled")

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"ring size must be >= 1, got {size}")
        self._slots: list[Recyclable | None] = [None] * size
        self._next = 0
        self._count = 0
        self.written = 0
        self.recycled = 0

    def push(self, frame: Recyclable) -> None:
        """Store ``frame`` in the next slot, recycling the frame that was there."""
        i = self._next
        old = self._slots[i]
        if old is not None:
            old.recycle()
            self.recycled += 1
        else:
            self._count += 1
        self._slots[i] = frame
        self._next = (i + 1) % len(self._slots)
        self.written += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Recyclable]:
        """Frames from oldest to newest."""
        n = len(self._slots)
        for k in range(n):
            f = self._slots[(self._next + k) % n]
            if f is not None:
                yield f

    def clear(self) -> None:
        """Recycle every frame still held (at the end of a stream)."""
        for f in list(self):
            f.recycle()
        self._slots = [None] * len(self._slots)
        self._next = self._count = 0
