"""Allocator: native memory handed out as writable memoryviews, freed by range.

Strategy. The native allocator (``native/alloc.c``) lives inside a
``membuf._core.Heap``, a C object that owns it. ``malloc`` is the Heap's C
method itself (no Python frame): one call carves the bytes and wraps them in a
*chunk*, a buffer exporter that holds a reference to its arena's mapping, and
returns a memoryview of it. So a view keeps its memory mapped, whatever
happens to the allocator (trim, reset, being dropped). ``free`` hands the
view's bytes back in one C call: the free-range index decides whether the
range may be freed (double, overlapping and foreign frees are refused there,
state unchanged). The rarer calls (stats detail, trim, reset, batch free) go
through cffi on the Heap's handle.

>>> with Allocator() as a:
...     mv = a.malloc(100)
...     mv[:5] = b"hello"
...     head = a.free_rest(mv, 5)     # give back the 95 bytes not needed
...     bytes(head), a.stats().in_use
(b'hello', 5)

Safety contract (docs/safety.md): no view ever points into unmapped memory.
Freeing is explicit, as in C: after ``free``, ``free_rest``, ``recycle`` or
``reset`` a view you kept may show bytes that were handed out again (stale
data, never a crash); debug mode detects writes into freed bytes.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, fields
from typing import Any

from . import _core
from ._native import ffi, lib
from .debug import DebugTracker, Leak
from .errors import FreeError, MemoryLimitError

_core._bind(int(ffi.cast("uintptr_t", lib.mb_core_api_table())), FreeError, MemoryLimitError)

__all__ = ["Allocator", "AllocatorStats"]

_STRATEGIES = {"first-fit": lib.MB_FIRST_FIT, "best-fit": lib.MB_BEST_FIT, "good-fit": lib.MB_GOOD_FIT}
_from_buffer = ffi.from_buffer
# free() result codes beyond the native ones (native/core/heap.c)
_ENOTBUFFER, _ENOTCONTIG, _ERELEASED, _EAUTO = -100, -101, -102, -103


@dataclass(frozen=True)
class AllocatorStats:
    """A snapshot of an allocator's counters, exact at the moment it was taken.

    ``reserved`` bytes are mapped in arenas; ``in_use`` = bytes malloc'd minus
    bytes freed (``borrow`` does not count); ``free = reserved - in_use``;
    ``largest_free`` is the largest request that fits without growing;
    ``pinned`` bytes (a part of ``in_use``) were let go by the stream layer
    but are still viewed: they return to the allocator when the last view of
    them is gone.
    """

    reserved: int
    in_use: int
    peak_in_use: int
    free: int
    largest_free: int
    arenas: int
    mallocs: int
    frees: int
    failed: int
    pinned: int


STAT_FIELDS = tuple(f.name for f in fields(AllocatorStats))

# every Allocator alive in this process, for membuf.testing's leak check
LIVE_ALLOCATORS: weakref.WeakSet[Allocator] = weakref.WeakSet()


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


class Allocator:
    """A native memory allocator with partial free (docs/design.md §2).

    Args:
        arena_size: size of the first arena; later ones double.
        max_arena_size: cap on a regular arena; larger requests get a dedicated arena.
        max_bytes: cap on reserved memory (arenas, spare included); ``None`` for none.
        strategy: ``"first-fit"`` (lowest address) or ``"best-fit"`` (smallest range).
        hugepages: ask the kernel for transparent huge pages (falls back silently).
        debug: poison fresh and freed bytes, quarantine freed ranges, remember the
            stack of every allocation for :meth:`leaks` (also ``MEMBUF_DEBUG=1``).
            Slower; see docs/reliability.md.

    Raises:
        ValueError: a size or strategy that cannot work.
    """

    def __init__(
        self,
        arena_size: int = 64 << 10,
        max_arena_size: int = 4 << 20,
        max_bytes: int | None = None,
        strategy: str = "first-fit",
        hugepages: bool = False,
        debug: bool = False,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(_STRATEGIES)}, not {strategy!r}")
        if not 0 < arena_size <= max_arena_size:
            raise ValueError(
                f"need 0 < arena_size <= max_arena_size, got arena_size={arena_size} "
                f"and max_arena_size={max_arena_size}"
            )
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
        self.strategy = strategy
        self.max_bytes = max_bytes
        self.debug = debug or os.environ.get("MEMBUF_DEBUG", "") not in ("", "0")
        # The Heap owns the native allocator; every cffi call below uses its handle,
        # which is valid for as long as this object holds the Heap.
        self._heap = _core.Heap(
            arena_size, max_arena_size, max_bytes or 0, _STRATEGIES[strategy], int(hugepages),
            int.from_bytes(os.urandom(4), "little"),
        )
        self._h = ffi.cast("mb_alloc *", self._heap.handle)
        self._scratch = memoryview(bytearray())
        # RecyclableMemory objects holding a reserved run tail (next_n): stats() leaves
        # those bytes out of in_use, so counts stay exact between next_n calls
        self._tails: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._tails_lock = threading.Lock()
        self._debug: DebugTracker | None = None
        self._epoch = 0        # bumped by reset(): owners of older ranges must not free them
        LIVE_ALLOCATORS.add(self)
        # The hot calls are the Heap's C methods, bound on the instance: no Python frame.
        self.malloc = self._heap.malloc                 # type: ignore[method-assign]
        self._malloc_addr = self._heap.malloc_addr      # type: ignore[method-assign]
        self._free_code = self._heap.free
        if self.debug:
            self._debug = DebugTracker()
            self._debug_lock = threading.RLock()
            # instance attributes shadow the fast methods: normal allocators never pay
            self.malloc = self._debug_malloc       # type: ignore[method-assign]
            self.free = self._debug_free           # type: ignore[method-assign]
            self._malloc_addr = self._debug_malloc_addr  # type: ignore[method-assign]

    # -- the hot pair ------------------------------------------------------

    def malloc(self, n: int) -> memoryview:
        """Return a writable memoryview of ``n`` fresh native bytes (not zeroed).

        ``n == 0`` gives an empty view and touches nothing. The view keeps its
        memory mapped for as long as it lives (the bytes stay allocated until
        you free them).

        Raises:
            MemoryLimitError: growing would pass ``max_bytes``, the OS refused, or
                ``n`` is larger than any allocator can hold.
            ValueError: ``n`` is negative.
            TypeError: ``n`` is not an int (``bool`` included).
        """
        return self._heap.malloc(n)   # the instance attribute set in __init__ skips this frame

    def free(self, mv: Any) -> None:
        """Give back exactly the bytes ``mv`` covers (all or part of an allocation).

        Raises:
            FreeError: the bytes are not all allocated from this allocator (double,
                overlapping or foreign free), or ``mv`` is not contiguous. Nothing changes.
        """
        r = self._free_code(mv)
        if r < 0:
            self._after_free(r, mv)

    # -- the rest of the API --------------------------------------------------

    def free_rest(self, mv: memoryview, k: int) -> memoryview:
        """Free ``mv[k:]`` and return ``mv[:k]``: keep what was used of a chunk.

        Raises:
            ValueError: ``k`` is not within ``0..len(mv)``.
            FreeError: as :meth:`free`.
        """
        if not 0 <= k <= len(mv):
            raise ValueError(f"free_rest keeps 0..{len(mv)} bytes of this view, asked for {k}")
        if k < len(mv):
            self.free(mv[k:])
        return mv[:k]

    def borrow(self, n: int) -> memoryview:
        """Scratch space of ``n`` bytes, reused by the next ``borrow``.

        Not allocated (stats do not count it) and never to be freed. A bigger
        request gets a new scratch buffer; views of the old one keep it alive,
        so a kept view never dangles (it may see a later borrower's bytes).
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"borrow size must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"borrow size must be >= 0, got {n}")
        scratch = self._scratch
        if n > len(scratch):
            scratch = self._scratch = memoryview(bytearray(max(n, 2 * len(scratch))))
        return scratch[:n]

    def owns(self, mv: Any) -> bool:
        """True when every byte of ``mv`` is currently allocated from this allocator."""
        try:
            p = ffi.from_buffer(mv)
        except (TypeError, BufferError, ValueError):
            return False
        if not len(p) or not lib.mb_alloc_owns(self._h, p, len(p)):
            return False
        if self._debug is not None:   # quarantined bytes are freed, whatever the index says
            return self._debug.quarantine_overlap(int(ffi.cast("uintptr_t", p)), len(p)) is None
        return True

    def stats(self) -> AllocatorStats:
        """Exact counters: one consistent snapshot (one native call, safe from any thread)."""
        values = self._heap.stats()
        with self._tails_lock:
            owners = list(self._tails.values())
        reserved_tails = sum(rm._tail_bytes() for rm in owners)
        if reserved_tails:
            fixed = dict(zip(STAT_FIELDS, values, strict=True))
            fixed["in_use"] -= reserved_tails
            fixed["free"] += reserved_tails
            values = tuple(fixed.values())
        if self._debug is not None and self._debug.quarantined:
            # quarantined bytes are freed as far as the user is concerned
            with self._debug_lock:
                q, ranges = self._debug.quarantined, len(self._debug._quarantine)
            fixed = dict(zip(STAT_FIELDS, values, strict=True))
            fixed["in_use"] -= q
            fixed["free"] += q
            fixed["frees"] += ranges
            return AllocatorStats(**fixed)
        return AllocatorStats(*values)

    def leaks(self) -> list[Leak]:
        """Every live allocated range with the stack that made it (debug mode only).

        Raises:
            RuntimeError: the allocator is not in debug mode.
        """
        if self._debug is None:
            raise RuntimeError("leaks() needs Allocator(debug=True) or MEMBUF_DEBUG=1")
        with self._debug_lock:
            return self._debug.leaks()

    def trim(self) -> int:
        """Release every completely free arena, the spare included; returns how many."""
        if self._debug is not None:
            with self._debug_lock:
                self._native_free_pairs(self._debug.drain())
        return int(lib.mb_alloc_trim(self._h))

    def reset(self) -> None:
        """Forget every allocation and release every arena.

        Views you still hold stay mapped (their arenas are unmapped when the
        last of them goes) but the bytes are no longer allocated: as after a
        free, what they show later is unspecified.
        """
        if self._debug is not None:
            with self._debug_lock:
                self._debug.clear()
        self._epoch += 1
        with self._tails_lock:                # next_n runs are gone: no bump into them
            for rm in self._tails.values():
                rm._drop_run()
            self._tails.clear()
        lib.mb_alloc_reset(self._h)

    def check(self) -> None:
        """Walk every native invariant; raise AssertionError naming a broken one (for tests).

        In debug mode it first checks the poison of every quarantined range.

        Raises:
            UseAfterFreeError: (debug mode) freed bytes were written to.
        """
        if self._debug is not None:
            with self._debug_lock:
                self._debug.check_poison()
        code = lib.mb_alloc_check(self._h)
        if code:
            name = ffi.string(lib.mb_check_name(code)).decode()
            raise AssertionError(f"allocator invariant {code} broken: {name}")

    def __enter__(self) -> Allocator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<Allocator {self.strategy} in_use={_fmt(s.in_use)} "
            f"reserved={_fmt(s.reserved)} arenas={s.arenas}>"
        )

    # -- internals ------------------------------------------------------------

    def _malloc_addr(self, n: int) -> tuple[memoryview, int]:
        """malloc that also returns the address, for owners that free in batches."""
        return self._heap.malloc_addr(n)   # shadowed in __init__ by the C method itself

    def _track_tail(self, owner: Any) -> None:
        """``owner`` (a RecyclableMemory) now holds a run tail that stats() leaves out."""
        with self._tails_lock:
            self._tails[id(owner)] = owner

    def _auto_chunk(self, n: int) -> Any:
        """n bytes as a chunk that gives them back when it and its views are gone.

        For the stream layer, which frees on the user's behalf: it ``disown()``s the
        chunk when done with it, and the bytes stay allocated (``pinned``) while any
        view of them lives. ``free`` refuses such bytes.
        """
        return self._heap.auto_chunk(n)

    def _free_batch(self, pairs: list[int]) -> None:
        """Free many ranges in one native call; ``pairs`` is addr0, len0, addr1, len1, ...

        All or nothing: on error nothing is freed.
        """
        if not pairs:
            return
        if self._debug is not None:
            self._debug_free_batch(pairs)
            return
        self._native_free_flat(pairs)

    def _native_free_flat(self, pairs: list[int]) -> None:
        """The one native batch free: addr0, len0, addr1, len1, ... (no debug bookkeeping)."""
        r = lib.mb_alloc_free_batch(self._h, ffi.new("uint64_t[]", pairs), len(pairs) // 2)
        if r:
            self._after_free(r, None)

    # -- debug mode (see membuf/debug.py) --------------------------------------

    def _debug_malloc(self, n: int) -> memoryview:
        return self._debug_malloc_addr(n, internal_frames=3)[0]

    def _debug_malloc_addr(self, n: int, internal_frames: int = 2) -> tuple[memoryview, int]:
        mv, address = Allocator._malloc_addr(self, n)
        if n:
            assert self._debug is not None
            with self._debug_lock:
                self._debug.on_malloc(address, mv, internal_frames)
        return mv, address

    def _debug_free(self, mv: Any) -> None:
        refused = _core.free_refusal(mv)     # what the normal path refuses, refused alike
        if refused:
            self._after_free(refused, mv)
        n, address = _core.extent(mv)
        if not n:
            return
        assert self._debug is not None
        with self._debug_lock:
            self._debug_check(address, n)
            view = memoryview(ffi.buffer(ffi.cast("char *", address), n))
            self._evicted(self._debug.on_free(address, view))

    def _evicted(self, ranges: list[tuple[int, int]]) -> None:
        """Free what left quarantine, then report a write into it (use after free)."""
        assert self._debug is not None
        corrupt = self._debug.take_corrupt()
        self._native_free_pairs(ranges)
        if corrupt is not None:
            raise corrupt

    def _debug_check(self, address: int, n: int) -> None:
        assert self._debug is not None
        hit = self._debug.quarantine_overlap(address, n)
        if hit is not None:
            raise FreeError(
                f"free of {n} bytes at {address:#x}: bytes {hit[0]:#x}..{hit[0] + hit[1]:#x} "
                "were already freed and are in quarantine (double free); nothing was freed"
            )
        if not self._debug.covered(address, n):
            # not live: let the native index name the problem (foreign, double, overlap)
            r = lib.mb_alloc_free(self._h, ffi.cast("char *", address), n)
            if r < 0:
                self._after_free(r, None)
            raise AssertionError("debug records and the native index disagree")  # pragma: no cover

    def _debug_free_batch(self, pairs: list[int]) -> None:
        assert self._debug is not None
        ranges = list(zip(pairs[::2], pairs[1::2], strict=True))
        with self._debug_lock:
            for address, n in ranges:          # all or nothing: check everything first
                if n:
                    self._debug_check(address, n)
            evicted = []
            for address, n in ranges:
                if n:
                    view = memoryview(ffi.buffer(ffi.cast("char *", address), n))
                    evicted += self._debug.on_free(address, view)
            self._evicted(evicted)

    def _native_free_pairs(self, ranges: list[tuple[int, int]]) -> None:
        if ranges:
            self._native_free_flat([x for r in ranges for x in r])

    def _after_free(self, r: int, mv: Any) -> None:
        """Raise the FreeError (or MemoryLimitError) for a refused free's result code."""
        if r >= 0:
            return
        if r in (_ENOTBUFFER, _ENOTCONTIG):
            raise FreeError(f"free needs a contiguous bytes-like view, got {_describe(mv)}")
        if r == _ERELEASED:
            raise FreeError("free of a released memoryview: it no longer says which bytes it covered")
        if r == _EAUTO:
            raise FreeError(
                f"free of {len(mv)} bytes that a StreamReader owns (a frame or a read result): "
                "they go back on their own when the last view of them is gone; just drop the view"
            )
        rep = ffi.new("mb_free_report *")
        lib.mb_alloc_last_free_report(self._h, rep)
        where = f"{rep.len} bytes at {rep.addr:#x}"
        if rep.batch_index >= 0:
            where = f"item {rep.batch_index} of a batch free ({where})"
        if r == lib.MB_EFOREIGN:
            raise FreeError(
                f"free of {where}: not memory of this allocator"
                + (f" (it runs past the end of arena {rep.arena_id})" if rep.arena_size else "")
                + "; free views only to the allocator that made them"
            )
        if r == lib.MB_EDOUBLE and rep.dup_index >= 0:
            raise FreeError(
                f"free of {where}: it overlaps item {rep.dup_index} of the same batch "
                "(the batch frees some bytes twice); nothing was freed"
            )
        if r == lib.MB_EDOUBLE:
            off = rep.free_start - rep.arena_base
            raise FreeError(
                f"free of {where}: bytes {off}..{off + rep.free_len} of arena {rep.arena_id} "
                "are already free (double or overlapping free); nothing was freed"
            )
        raise MemoryLimitError(f"free of {where} needed bookkeeping memory the OS refused")


def _describe(obj: Any) -> str:
    if isinstance(obj, memoryview):
        return f"a memoryview (contiguous={obj.contiguous}, strides={obj.strides})"
    return type(obj).__name__
