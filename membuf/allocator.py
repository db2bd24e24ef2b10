"""Allocator: native memory handed out as writable memoryviews, freed by range.

Strategy. The native allocator (``native/alloc.c``) lives inside a
``membuf._core.Heap``, a C object that owns it. ``malloc`` is the Heap's C
method itself (no Python frame): one call carves the bytes and wraps them in a
*chunk*, a buffer exporter that holds a reference to its arena's mapping, and
returns a memoryview of it. So a view keeps its memory mapped, whatever
happens to the allocator (trim, reset, being dropped). ``free`` is the Heap's
C method too: it hands the view's bytes back in one call, the free-range index
deciding whether the range may be freed (double, overlapping and foreign frees
are refused there, state unchanged); only a refusal comes back to Python, to
word its ``FreeError`` from the allocator's report. The rarer calls (stats
detail, trim, reset, batch free) go through cffi on the Heap's handle.

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
from .errors import FreeError, MemoryLimitError, UseAfterFreeError

_core._bind(int(ffi.cast("uintptr_t", lib.mb_core_api_table())), FreeError, MemoryLimitError)

__all__ = ["Allocator", "AllocatorStats"]

_STRATEGIES = {"first-fit": lib.MB_FIRST_FIT, "best-fit": lib.MB_BEST_FIT, "good-fit": lib.MB_GOOD_FIT}
_from_buffer = ffi.from_buffer
_MAX_SIZE = 1 << 62       # sizes and caps past this are refused at the door
_MAX_REQUEST = 1 << 40    # the native allocator's largest request (1 TiB)
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
        strategy: ``"good-fit"`` (the default: size-class lists in front of the
            address-ordered index, O(1) malloc; docs/allocator.md), ``"first-fit"``
            (lowest address) or ``"best-fit"`` (smallest range), both exact.
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
        strategy: str = "good-fit",
        hugepages: bool = False,
        debug: bool = False,
    ) -> None:
        for name, value in (("arena_size", arena_size), ("max_arena_size", max_arena_size),
                            ("max_bytes", max_bytes)):
            if value is None and name == "max_bytes":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value > _MAX_SIZE:
                raise ValueError(f"{name}={value} is more than any allocator can hold "
                                 f"(2**62)" + ("; use None for no cap" if name == "max_bytes" else ""))
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
        self._tails_lock = threading.RLock()   # (next_n takes it around its own malloc)
        self._debug: DebugTracker | None = None
        LIVE_ALLOCATORS.add(self)
        # The hot calls are the Heap's C methods, bound on the instance: no Python frame.
        self.malloc = self._heap.malloc                 # type: ignore[method-assign]
        self._malloc_addr = self._heap.malloc_addr      # type: ignore[method-assign]
        self.free = self._heap.free_checked  # type: ignore[method-assign,assignment]
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
        self._heap.free_checked(mv)         # (an instance binds this C method directly)

    # -- the rest of the API --------------------------------------------------

    def free_rest(self, mv: memoryview, k: int) -> memoryview:
        """Free ``mv[k:]`` and return ``mv[:k]``: keep what was used of a chunk.

        Raises:
            ValueError: ``k`` is not within ``0..len(mv)``.
            FreeError: as :meth:`free`.
        """
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError(f"free_rest keeps an int number of bytes, got {type(k).__name__}")
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
        if n > _MAX_REQUEST:
            raise MemoryLimitError(f"borrow({n}): no allocator can hold {n} bytes (limit 1 TiB)")
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
        """Exact counters: one consistent snapshot (one native call, safe from any thread).

        Two Python-side amounts are taken out of the native counters under the locks
        that guard them, so no change can fall between the two readings: the unused
        tails of ``RecyclableMemory.next_n`` runs, and (debug mode) the quarantine.
        """
        with self._tails_lock:
            if self._debug is not None:
                with self._debug_lock:
                    values = self._heap.stats()
                    q, ranges = self._debug.quarantined, len(self._debug._quarantine)
            else:
                values, q, ranges = self._heap.stats(), 0, 0
            tails = sum(rm._tail_bytes() for rm in self._tails.values())
        if not tails and not q:
            return AllocatorStats(*values)
        fixed = dict(zip(STAT_FIELDS, values, strict=True))
        fixed["in_use"] -= tails + q          # reserved tails and quarantined bytes are
        fixed["free"] += tails + q            # not in use as far as the user is concerned
        fixed["frees"] += ranges
        return AllocatorStats(**fixed)

    @property
    def _epoch(self) -> int:
        """The native reset count: what an owner records with the bytes it takes."""
        return int(self._heap.epoch)

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
        with self._tails_lock:                # next_n runs are gone: no bump into them
            for rm in self._tails.values():
                rm._drop_run()
            self._tails.clear()
            if self._debug is not None:       # records and native state change together
                with self._debug_lock:
                    self._debug.clear()
                    lib.mb_alloc_reset(self._h)
            else:
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

    def _free_batch(self, pairs: list[int], epoch: int | None = None) -> None:
        """Free many ranges in one native call; ``pairs`` is addr0, len0, addr1, len1, ...

        All or nothing: on error nothing is freed. With ``epoch`` (the reset count
        recorded when the ranges were taken), nothing is freed if the allocator was
        reset since, checked under the native lock, so a concurrent reset cannot
        slip in between the check and the free.
        """
        if not pairs:
            return
        if self._debug is not None:
            with self._debug_lock:
                if epoch is None or epoch == self._epoch:
                    self._debug_free_batch(pairs)
            return
        self._native_free_flat(pairs, epoch)

    def _native_free_flat(self, pairs: list[int], epoch: int | None = None) -> None:
        """The one native batch free: addr0, len0, addr1, len1, ... (no debug bookkeeping);
        with ``epoch``, only if the allocator was not reset since."""
        arr, count = ffi.new("uint64_t[]", pairs), len(pairs) // 2
        r = (lib.mb_alloc_free_batch(self._h, arr, count) if epoch is None
             else lib.mb_alloc_free_batch_epoch(self._h, arr, count, epoch))
        if r:
            self._after_free(r, None)

    # -- debug mode (see membuf/debug.py) --------------------------------------

    def _debug_malloc(self, n: int) -> memoryview:
        return self._debug_malloc_addr(n, internal_frames=3)[0]

    def _debug_malloc_addr(self, n: int, internal_frames: int = 2) -> tuple[memoryview, int]:
        assert self._debug is not None
        with self._debug_lock:                 # native state and records change together
            mv, address = self._heap.malloc_addr(n)
            if n:
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
            self._evicted(self._debug.on_free(address, self._quarantine_view(address, n)))

    def _quarantine_view(self, address: int, n: int) -> memoryview:
        """A view of freed bytes that holds their arena's mapping while quarantined."""
        view = self._heap.view_at(address, n)
        if view is None:                       # pragma: no cover - _debug_check ran first
            raise FreeError(f"free of {n} bytes at {address:#x}: not memory of this allocator")
        return view

    def _evicted(self, ranges: list[tuple[int, int]]) -> None:
        """Free what left quarantine, then report a write into it (use after free)."""
        assert self._debug is not None
        corrupt = self._debug.take_corrupt()
        self._native_free_pairs(ranges)
        if corrupt is not None:
            raise corrupt

    def _report_later(self, exc: UseAfterFreeError) -> None:
        """Keep a use-after-free found where nothing could raise it (a finalizer's free)
        for the next free, batch free or ``check()`` to raise, as one found on eviction."""
        if self._debug is not None:
            with self._debug_lock:
                if self._debug._corrupt is None:
                    self._debug._corrupt = exc

    def _debug_check(self, address: int, n: int) -> None:
        """Refuse, changing nothing, a free the debug records do not cover."""
        assert self._debug is not None
        hit = self._debug.quarantine_overlap(address, n)
        if hit is not None:
            raise FreeError(
                f"free of {n} bytes at {address:#x}: bytes {hit[0]:#x}..{hit[0] + hit[1]:#x} "
                "were already freed and are in quarantine (double free); nothing was freed"
            )
        if not self._debug.covered(address, n):
            # Never a native free here (it could succeed on bytes someone else owns now):
            # name the problem from what the index and the arena table say.
            where = f"free of {n} bytes at {address:#x}"
            if self._heap.view_at(address, n) is None:
                raise FreeError(f"{where}: not memory of this allocator; free views only to "
                                "the allocator that made them")
            if lib.mb_alloc_owns(self._h, ffi.cast("char *", address), n):
                raise FreeError(f"{where}: allocated, but not by this allocator's malloc or "
                                "next_n (bytes a StreamReader owns, or a stale view of bytes "
                                "handed out again); nothing was freed")
            raise FreeError(f"{where}: some of these bytes are already free (double or "
                            "overlapping free); nothing was freed")

    def _debug_free_batch(self, pairs: list[int]) -> None:
        """The caller holds the debug lock."""
        assert self._debug is not None
        ranges = sorted((a, n) for a, n in zip(pairs[::2], pairs[1::2], strict=True) if n)
        for i, (address, n) in enumerate(ranges):   # all or nothing: check everything first
            if i and ranges[i - 1][0] + ranges[i - 1][1] > address:
                raise FreeError(
                    f"batch free of {n} bytes at {address:#x}: it overlaps another item of "
                    "the same batch (bytes freed twice); nothing was freed"
                )
            self._debug_check(address, n)
        evicted = []
        for address, n in ranges:
            evicted += self._debug.on_free(address, self._quarantine_view(address, n))
        self._evicted(evicted)

    def _native_free_pairs(self, ranges: list[tuple[int, int]]) -> None:
        if ranges:
            self._native_free_flat([x for r in ranges for x in r])

    def _after_free(self, r: int, mv: Any) -> None:
        """Raise the FreeError (or MemoryLimitError) for a refused free's result code."""
        _refuse_free(self._h, r, mv)


def _refused(heap: Any, r: int, mv: Any) -> None:
    """The refusal of ``Heap.free_checked`` (the C free behind ``Allocator.free``)."""
    _refuse_free(ffi.cast("mb_alloc *", heap.handle), r, mv)


def _refuse_free(h: Any, r: int, mv: Any) -> None:
    """Raise the FreeError (or MemoryLimitError) for result code ``r`` of a free of ``mv``
    on the native allocator ``h``, from its report of the refused free."""
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
    lib.mb_alloc_last_free_report(h, rep)
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


_core._bind_free_refusal(_refused)
