"""Debug mode for the allocator: poison, quarantine, creation tracebacks.

Strategy. ``Allocator(debug=True)`` (or ``MEMBUF_DEBUG=1``) routes malloc and
free through a :class:`DebugTracker`:

- fresh bytes are filled with 0xCD and freed bytes with 0xDD, so a read of
  uninitialised or freed memory shows a recognisable pattern instead of
  plausible old data;
- a freed range is *quarantined*: held back from the native allocator until
  more than ``quarantine_bytes`` (or ``quarantine_ranges``) are waiting, so a
  use-after-free reads poison rather than someone else's new data, and a second
  free of it is refused with a message that says it is in quarantine;
- every live range remembers the stack that allocated it, so ``leaks()`` can
  say where each unfreed byte came from (Netty's leak detector, in Python terms);
- a quarantined range remembers where it was allocated and freed, and its
  poison is checked when it leaves quarantine and on ``check()``: a write into
  freed bytes becomes a :class:`~membuf.UseAfterFreeError` naming both places.

Costs (measured in docs/reliability.md): a walk of up to ``stack_depth`` frames per
malloc (text is made only by ``leaks()``) and a bisect per free; only debug
allocators pay, the normal path is untouched.
"""

from __future__ import annotations

import bisect
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from types import CodeType, FrameType

from .errors import UseAfterFreeError

__all__ = ["DebugTracker", "Leak"]

Stack = tuple[tuple[CodeType, int], ...]   # (code, line) pairs, innermost first

POISON_FRESH = 0xCD
POISON_FREED = 0xDD


@dataclass(frozen=True)
class Leak:
    """A live allocated range and the stack that made it."""

    address: int
    size: int
    traceback: str

    def __str__(self) -> str:
        return f"{self.size} bytes at {self.address:#x}, allocated at:\n{self.traceback}"


class DebugTracker:
    """Bookkeeping for one debug allocator (not thread-safe: the allocator locks)."""

    def __init__(self, quarantine_bytes: int = 1 << 20, quarantine_ranges: int = 4096,
                 stack_depth: int = 12) -> None:
        self.quarantine_bytes = quarantine_bytes
        self.quarantine_ranges = quarantine_ranges
        self.stack_depth = stack_depth
        self._starts: list[int] = []                       # sorted starts of live ranges
        self._live: dict[int, tuple[int, tuple[tuple[CodeType, int], ...]]] = {}
        # (address, length), oldest first; _q_info has each one's view and stacks
        self._quarantine: deque[tuple[int, int]] = deque()
        self._q_info: dict[int, tuple[memoryview, Stack, Stack]] = {}
        self._corrupt: UseAfterFreeError | None = None     # found on eviction, not yet raised
        self._q_starts: list[int] = []                     # sorted, for overlap checks
        self._q_len: dict[int, int] = {}
        self.quarantined = 0                               # bytes waiting in quarantine

    # -- malloc ------------------------------------------------------------

    def on_malloc(self, address: int, view: memoryview, internal_frames: int = 2) -> None:
        """Poison fresh bytes and remember the caller's stack (minus membuf's own frames).

        Only (code, line) pairs are kept; they are turned into text by ``leaks()``,
        which is what keeps the per-malloc cost low.
        """
        view[:] = bytes([POISON_FRESH]) * len(view)
        bisect.insort(self._starts, address)
        self._live[address] = (len(view), self._stack(internal_frames + 1))

    def _stack(self, skip: int) -> Stack:
        frame: FrameType | None = sys._getframe(skip)
        stack: list[tuple[CodeType, int]] = []
        while frame is not None and len(stack) < self.stack_depth:
            stack.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        return tuple(stack)

    # -- free --------------------------------------------------------------

    def quarantine_overlap(self, address: int, n: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._q_starts, address + n - 1)
        if i:
            start = self._q_starts[i - 1]
            if start + self._q_len[start] > address:
                return start, self._q_len[start]
        return None

    def covered(self, address: int, n: int) -> bool:
        """True when [address, address+n) is entirely live (allocated, not freed)."""
        i = bisect.bisect_right(self._starts, address) - 1
        pos, end = address, address + n
        while pos < end:
            if i < 0 or i >= len(self._starts):
                return False
            start = self._starts[i]
            length = self._live[start][0]
            if not start <= pos < start + length:
                return False
            pos = start + length
            i += 1
        return True

    def on_free(self, address: int, view: memoryview) -> list[tuple[int, int]]:
        """Record a legal free: poison it, quarantine it; return ranges leaving quarantine."""
        n = len(view)
        allocated_at = self._forget(address, n)
        view[:] = bytes([POISON_FREED]) * n
        self._quarantine.append((address, n))
        self._q_info[address] = (view, allocated_at, self._stack(3))
        bisect.insort(self._q_starts, address)
        self._q_len[address] = n
        self.quarantined += n
        evicted = []
        while self._quarantine and (self.quarantined > self.quarantine_bytes
                                    or len(self._quarantine) > self.quarantine_ranges):
            evicted.append(self._evict())
        return evicted

    def drain(self) -> list[tuple[int, int]]:
        """Empty the quarantine; the caller frees what comes back."""
        return [self._evict() for _ in range(len(self._quarantine))]

    def take_corrupt(self) -> UseAfterFreeError | None:
        """The use-after-free found when ranges left quarantine, once."""
        found, self._corrupt = self._corrupt, None
        return found

    def check_poison(self) -> None:
        """Check every quarantined range's poison.

        Raises:
            UseAfterFreeError: the first range written to since its free (it is
                poisoned again, so it is reported once).
        """
        found = self.take_corrupt()
        if found is not None:
            raise found
        for address, _ in self._quarantine:
            found = self._poison_broken(address)
            if found is not None:
                view = self._q_info[address][0]
                view[:] = bytes([POISON_FREED]) * len(view)
                raise found

    def _poison_broken(self, address: int) -> UseAfterFreeError | None:
        view, allocated_at, freed_at = self._q_info[address]
        n = len(view)
        data = view.tobytes()
        if data.count(POISON_FREED) == n:
            return None
        first = next(i for i, b in enumerate(data) if b != POISON_FREED)
        return UseAfterFreeError(
            f"use after free: {n} bytes at {address:#x} were written after they were freed "
            f"(first changed byte at offset {first}).\nAllocated at:\n{_format(allocated_at)}"
            f"Freed at:\n{_format(freed_at)}",
            address,
            n,
        )

    def clear(self) -> None:
        self.__init__(self.quarantine_bytes, self.quarantine_ranges, self.stack_depth)  # type: ignore[misc]

    def _evict(self) -> tuple[int, int]:
        address, n = self._quarantine.popleft()
        if self._corrupt is None:
            self._corrupt = self._poison_broken(address)
        del self._q_info[address]
        del self._q_starts[bisect.bisect_left(self._q_starts, address)]
        del self._q_len[address]
        self.quarantined -= n
        return address, n

    def _forget(self, address: int, n: int) -> Stack:
        """Cut [address, address+n) out of the live records (it is covered); return the
        stack that allocated its first byte."""
        end = address + n
        first: Stack = ()
        i = bisect.bisect_right(self._starts, address) - 1
        while i < len(self._starts) and self._starts[i] < end:
            start = self._starts[i]
            length, stack = self._live.pop(start)
            first = first or stack
            del self._starts[i]
            if start < address:                               # keep the head
                self._live[start] = (address - start, stack)
                self._starts.insert(i, start)
                i += 1
            if start + length > end:                          # keep the tail
                self._live[end] = (start + length - end, stack)
                self._starts.insert(i, end)
                i += 1
        return first

    # -- reports -----------------------------------------------------------

    def leaks(self) -> list[Leak]:
        return [
            Leak(start, self._live[start][0], _format(self._live[start][1])) for start in self._starts
        ]


def _format(stack: Stack) -> str:
    """Innermost-last text of a remembered stack, like a traceback."""
    summary = traceback.StackSummary.from_list(
        [(code.co_filename, line, code.co_name, None) for code, line in reversed(stack)]
    )
    return "".join(summary.format())
