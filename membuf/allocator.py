"""Allocator: native memory handed out as writable memoryviews, freed by range.

Strategy. The C core (``native/alloc.c``) returns ``(arena id << 40) | offset``
from one call; this side keeps one memoryview per arena, made once, and
answers ``malloc`` with a slice of it, so a malloc is one native call plus one
slice and no cffi buffer object. ``free`` hands the view's address and length
back in one call: the free-range index decides whether the range may be freed
(double, overlapping and foreign frees are refused there, state unchanged).

>>> with Allocator() as a:
...     mv = a.malloc(100)
...     mv[:5] = b"hello"
...     head = a.free_rest(mv, 5)     # give back the 95 bytes not needed
...     bytes(head), a.stats().in_use
(b'hello', 5)

Safety contract: a view into memory that was freed, trimmed or reset is a
dangling pointer, as in C; membuf frees only when you call ``free``,
``free_rest``, ``recycle``, ``reset`` or when a RecyclableMemory is collected.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, fields
from typing import Any

from ._native import ffi, lib
from .debug import DebugTracker, Leak
from .errors import FreeError, MemoryLimitError

__all__ = ["Allocator", "AllocatorStats"]

_ID_SHIFT: int = lib.MB_ID_SHIFT
_OFF_MASK: int = (1 << _ID_SHIFT) - 1
_STRATEGIES = {"first-fit": lib.MB_FIRST_FIT, "best-fit": lib.MB_BEST_FIT}
_EMPTY = memoryview(bytearray())
# bound once: a module-global lookup is cheaper than lib.<attr> on the hot path
_native_malloc = lib.mb_alloc_malloc
_native_free = lib.mb_alloc_free
_from_buffer = ffi.from_buffer


@dataclass(frozen=True)
class AllocatorStats:
    """A snapshot of an allocator's counters, exact at the moment it was taken.

    ``reserved`` bytes are mapped in arenas; ``in_use`` = bytes malloc'd minus
    bytes freed (``borrow`` does not count); ``free = reserved - in_use``;
    ``largest_free`` is the largest request that fits without growing.
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
    """A native memory allocator with partial free (DESIGN.md section 2).

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
        handle = lib.mb_alloc_new(
            arena_size, max_arena_size, max_bytes or 0, _STRATEGIES[strategy], int(hugepages),
            int.from_bytes(os.urandom(4), "little"),
        )
        if handle == ffi.NULL:
            raise MemoryError("could not create the native allocator")
        self._h = ffi.gc(handle, lib.mb_alloc_delete)
        self._views: dict[int, memoryview] = {}   # arena id -> view of the whole arena
        self._bases: dict[int, int] = {}          # arena id -> base address
        self._scratch: memoryview = _EMPTY
        self._stats = ffi.new("mb_stats *")
        self._lock = threading.Lock()             # guards the view cache, not native state
        self._debug: DebugTracker | None = None
        self._epoch = 0        # bumped by reset(): owners of older ranges must not free them
        LIVE_ALLOCATORS.add(self)
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

        ``n == 0`` gives an empty view and touches nothing.

        Raises:
            MemoryLimitError: growing would pass ``max_bytes``, or the OS refused.
            ValueError: ``n`` is negative.
        """
        try:
            r = _native_malloc(self._h, n)
        except (OverflowError, TypeError):
            raise _bad_size("malloc", n) from None
        if r < 0:
            return self._malloc_failed(n, r)
        off = r & _OFF_MASK
        try:
            return self._views[r >> _ID_SHIFT][off : off + n]
        except KeyError:
            return self._arena_view(r >> _ID_SHIFT)[off : off + n]

    def free(self, mv: Any) -> None:
        """Give back exactly the bytes ``mv`` covers (all or part of an allocation).

        Raises:
            FreeError: the bytes are not all allocated from this allocator (double,
                overlapping or foreign free), or ``mv`` is not contiguous. Nothing changes.
        """
        try:
            p = _from_buffer(mv)
        except (TypeError, BufferError, ValueError) as exc:
            raise FreeError(f"free needs a contiguous buffer, got {_describe(mv)}: {exc}") from None
        r = _native_free(self._h, p, len(p))
        if r:
            # Release the buffer export before raising: a caught error's traceback can end
            # up in a reference cycle, and the GC must not clear mv while p still exports it.
            del p
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
        """Scratch space of ``n`` bytes, valid until the next ``malloc`` or ``borrow``.

        Not allocated (stats do not count it) and never to be freed.
        """
        if n < 0:
            raise ValueError(f"borrow size must be >= 0, got {n}")
        if n > len(self._scratch):
            cap = ffi.new("size_t *")
            p = lib.mb_alloc_borrow(self._h, n, cap)
            if p == ffi.NULL:
                raise MemoryLimitError(f"could not get {n} bytes of scratch memory")
            self._scratch = memoryview(ffi.buffer(p, cap[0]))
        return self._scratch[:n]

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
        """Exact counters (one native call)."""
        s = self._stats
        lib.mb_alloc_stats(self._h, s)
        if self._debug is not None and self._debug.quarantined:
            # quarantined bytes are freed as far as the user is concerned
            q = self._debug.quarantined
            values = {name: getattr(s, name) for name in STAT_FIELDS}
            values["in_use"] -= q
            values["frees"] += len(self._debug._quarantine)
            return AllocatorStats(**values)
        return AllocatorStats(*(getattr(s, name) for name in STAT_FIELDS))

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
        released = int(lib.mb_alloc_trim(self._h))
        if released:
            self._sync_views()
        return released

    def reset(self) -> None:
        """Forget every allocation and unmap every arena: all views become dangling."""
        if self._debug is not None:
            self._debug.clear()
        self._epoch += 1
        lib.mb_alloc_reset(self._h)
        self._sync_views()

    def check(self) -> None:
        """Walk every native invariant; raise AssertionError naming a broken one (for tests)."""
        code = lib.mb_alloc_check(self._h)
        if code:
            raise AssertionError(f"allocator invariant {code} broken (see native/*.c checks)")

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
        """malloc that also returns the address, for owners that free in batches.

        Repeats malloc's body on purpose: calling malloc from here would add a Python
        call to every RecyclableMemory.next_n.
        """
        try:
            r = lib.mb_alloc_malloc(self._h, n)
        except (OverflowError, TypeError):
            raise _bad_size("malloc", n) from None
        if r < 0:
            return self._malloc_failed(n, r), 0
        aid = r >> _ID_SHIFT
        try:
            view = self._views[aid]
        except KeyError:
            view = self._arena_view(aid)
        off = r & _OFF_MASK
        return view[off : off + n], self._bases[aid] + off

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
        try:
            p = _from_buffer(mv, require_writable=True)
        except (TypeError, BufferError, ValueError) as exc:
            raise FreeError(f"free needs a contiguous buffer, got {_describe(mv)}: {exc}") from None
        n, address = len(p), int(ffi.cast("uintptr_t", p))
        del p                              # no buffer export may outlive this line (see free)
        if not n:
            return
        assert self._debug is not None
        with self._debug_lock:
            self._debug_check(address, n)
            view = memoryview(ffi.buffer(ffi.cast("char *", address), n))
            self._native_free_pairs(self._debug.on_free(address, view))

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
            r = _native_free(self._h, ffi.cast("char *", address), n)
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
            for address, n in ranges:
                if n:
                    view = memoryview(ffi.buffer(ffi.cast("char *", address), n))
                    self._native_free_pairs(self._debug.on_free(address, view))

    def _native_free_pairs(self, ranges: list[tuple[int, int]]) -> None:
        if ranges:
            self._native_free_flat([x for r in ranges for x in r])

    def _malloc_failed(self, n: int, code: int) -> memoryview:
        if n == 0:
            return memoryview(bytearray())
        s = self.stats()
        if code == lib.MB_ELIMIT:
            limit = f"max_bytes={self.max_bytes}" if self.max_bytes else "the 1 TiB request limit"
            raise MemoryLimitError(
                f"malloc({n}) would pass {limit}: {s.reserved} bytes reserved, "
                f"{s.in_use} in use, largest free range {s.largest_free}; free or trim first"
            )
        raise MemoryLimitError(
            f"malloc({n}) failed: the OS refused more memory ({s.reserved} bytes reserved)"
        )

    def _arena_view(self, aid: int) -> memoryview:
        self._sync_views()
        return self._views[aid]

    def _sync_views(self) -> None:
        """Make the view cache match the native arena table (after growth or release).

        The table is read in one native call, and rebuilds are serialised, so the
        last cache written is the newest: a thread that just got bytes in a new arena
        always finds it after its own rebuild.
        """
        with self._lock:
            cap = 16
            while True:
                table = ffi.new("uint64_t[]", 3 * cap)
                n = lib.mb_alloc_arena_table(self._h, table, cap)
                if n <= cap:
                    break
                cap = n
            triples = ffi.unpack(table, 3 * n)
            live = {triples[i]: (triples[i + 1], triples[i + 2]) for i in range(0, 3 * n, 3)}
            old = self._views
            self._views = {
                aid: old[aid] if aid in old else memoryview(ffi.buffer(ffi.cast("char *", base), size))
                for aid, (base, size) in live.items()
            }
            self._bases = {aid: base for aid, (base, _) in live.items()}

    def _after_free(self, r: int, mv: Any) -> None:
        if r > 0:                 # arenas were released: drop their views
            self._sync_views()
            return
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
        if r == lib.MB_EDOUBLE:
            off = rep.free_start - rep.arena_base
            raise FreeError(
                f"free of {where}: bytes {off}..{off + rep.free_len} of arena {rep.arena_id} "
                "are already free (double or overlapping free); nothing was freed"
            )
        raise MemoryLimitError(f"free of {where} needed bookkeeping memory the OS refused")


def _bad_size(what: str, n: Any) -> Exception:
    if isinstance(n, int) and n < 0:
        return ValueError(f"{what} size must be >= 0, got {n}")
    if isinstance(n, int):
        return MemoryLimitError(f"{what}({n}): no allocator can hold {n} bytes (limit 1 TiB)")
    return TypeError(f"{what} size must be an int, got {type(n).__name__}")


def _describe(obj: Any) -> str:
    if isinstance(obj, memoryview):
        return f"a memoryview (contiguous={obj.contiguous}, strides={obj.strides})"
    return type(obj).__name__
