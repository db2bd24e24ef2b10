"""FrameRing: a ring of retained frames bounded in count and in bytes, recycled when dropped.

Strategy. Monibuca keeps each track's recent frames in a ring and recycles a
frame when its slot is reused, so a stream of any length holds a bounded
amount of native memory. A bound in slots alone is not a bound in bytes (64
slots of 16 MiB messages are 1 GiB), so the ring has both: at most ``size``
frames and at most ``max_bytes`` bytes. :meth:`push` recycles the oldest
frames until the new one fits; a frame larger than ``max_bytes`` on its own
is not retained at all (recycled at once and counted in ``dropped``).
The ring doubles as the GOP cache of a relay: ``push(frame, key=True)``
marks a keyframe, and :meth:`since_key` returns the frames from the newest
keyframe on, which is what a joining player needs first (``None`` once that
keyframe was dropped: the player then waits for the next one).

A frame is anything with ``recycle()`` and ``len()`` (a
:class:`~membuf.RecyclableMemory`). The ring never copies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Protocol

from .limits import check_size

__all__ = ["FrameRing", "Recyclable"]


class Recyclable(Protocol):
    def recycle(self) -> None: ...

    def __len__(self) -> int: ...


class FrameRing:
    """At most ``size`` frames and ``max_bytes`` bytes; :meth:`push` recycles what it drops.

    Args:
        size: the most frames kept.
        max_bytes: the most bytes kept (``None``: no byte bound).

    Raises:
        TypeError: a bound that is not an int.
        ValueError: a bound below 1.

    >>> class F:
    ...     def __init__(self, n, size=1): self.n, self.size = n, size
    ...     def __len__(self): return self.size
    ...     def recycle(self): print("recycled", self.n)
    >>> ring = FrameRing(2)
    >>> for i in range(3): ring.push(F(i))
    recycled 0
    >>> [f.n for f in ring]
    [1, 2]
    >>> ring = FrameRing(8, max_bytes=10)
    >>> for i in range(3): ring.push(F(i, 4))
    recycled 0
    >>> ring.push(F(3, 11))
    recycled 3
    >>> ([f.n for f in ring], ring.bytes, ring.dropped)
    ([1, 2], 8, 1)
    >>> ring.clear()
    recycled 1
    recycled 2
    """

    __slots__ = ("size", "max_bytes", "_frames", "bytes", "written", "recycled", "dropped",
                 "_key_at", "_kept")

    def __init__(self, size: int = 64, max_bytes: int | None = None) -> None:
        self.size = check_size("FrameRing", "size", size, minimum=1)
        self.max_bytes = (None if max_bytes is None
                          else check_size("FrameRing", "max_bytes", max_bytes, minimum=1))
        self._frames: deque[tuple[Recyclable, int]] = deque()
        #: bytes of the frames held now
        self.bytes = 0
        #: frames pushed, frames recycled to make room, frames too large to keep
        self.written = 0
        self.recycled = 0
        self.dropped = 0
        self._kept = 0         # frames ever appended (``written`` minus ``dropped``)
        self._key_at = -1      # ``_kept`` count of the newest keyframe (-1: none yet)

    def push(self, frame: Recyclable, key: bool = False) -> None:
        """Keep ``frame`` as the newest, recycling the oldest frames until both bounds hold.

        A frame larger than ``max_bytes`` is recycled at once (``dropped``);
        the frames already held stay. ``key``: the frame is a keyframe (see
        :meth:`since_key`).
        """
        n = len(frame)
        self.written += 1
        cap = self.max_bytes
        if cap is not None and n > cap:
            frame.recycle()
            self.dropped += 1
            self._key_at = -1   # the current GOP has a hole: not servable from the ring
            return
        self._kept += 1
        if key:
            self._key_at = self._kept
        frames = self._frames
        while frames and (len(frames) >= self.size or (cap is not None and self.bytes + n > cap)):
            old, size = frames.popleft()
            self.bytes -= size
            old.recycle()
            self.recycled += 1
        frames.append((frame, n))
        self.bytes += n

    def __len__(self) -> int:
        return len(self._frames)

    def since_key(self) -> list[Recyclable] | None:
        """The frames from the newest keyframe on, oldest first; ``None`` if the ring no
        longer holds that keyframe (or never saw one)."""
        first = self._kept - len(self._frames) + 1       # ``_kept`` count of the oldest
        if self._key_at < first:
            return None
        return [f for f, _ in list(self._frames)[self._key_at - first:]]

    def __iter__(self) -> Iterator[Recyclable]:
        """Frames from oldest to newest."""
        return (f for f, _ in list(self._frames))

    def clear(self) -> None:
        """Recycle every frame still held (at the end of a stream)."""
        frames = self._frames
        while frames:
            frame, _ = frames.popleft()
            frame.recycle()
        self.bytes = 0
        self._key_at = -1
