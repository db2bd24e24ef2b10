"""One allocator shared by 8 threads, with the GIL switching every microsecond.

Every public call must either work or raise its documented error: no KeyError,
no leak, no torn ``stats()`` snapshot, no crash. Each threaded test churns for
about 1.5 s with ``sys.setswitchinterval(1e-6)`` (restored afterwards), so
threads are preempted between almost every pair of bytecodes: inside the Python
halves of free, recycle, reset, stats and the debug bookkeeping, while cffi
calls (trim, reset, batch free, check) run without the GIL next to the C
methods (malloc, free) that hold it.

* ``stats()`` from a watcher thread while the others malloc, free, partially
  free (``free_rest``), fill and recycle RecyclableMemory objects and let auto
  chunks go (the stream layer's ``pinned`` bytes): every snapshot consistent;
  at the end ``in_use == 0`` and ``check()`` passes.
* ``reset()`` racing malloc/free (a free of bytes a concurrent reset already
  forgot is refused with FreeError, as documented) and racing next_n/recycle
  (recycle after a reset frees nothing, so it must not raise); after joining, a
  final reset leaves nothing in use.
* ``trim()`` racing malloc/free.

Known races (reported, not yet fixed) are pinned down twice: the threaded test
turns into an xfail when it sees that race (and only that one: anything else
still fails it), and a deterministic test forces the interleaving in one thread
(``Interleave`` runs the other thread's call at the exact point) and is
``xfail(strict=True)``, so it fails (XPASS) once the race is fixed, as a reminder
to drop the marker. The debug allocator's reset race crashes the interpreter,
so those scenarios run in a child process.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from membuf import Allocator, AllocatorStats, FreeError, RecyclableMemory

THREADS = 8
SECONDS = 1.5          # churn per threaded test

RACE_TAILS = (
    "stats() subtracts the RecyclableMemory run tails (a Python-side sum) from a native "
    "snapshot taken before: a next_n reserving a run in between makes in_use negative and "
    "free > reserved")
RACE_QUARANTINE = (
    "debug stats() reads the native counters, then the quarantine total: a malloc + free into "
    "quarantine in between makes in_use negative and free > reserved")
RACE_RESET_RECORD = (
    "Allocator.reset bumps the Python epoch before the native reset, and RecyclableMemory "
    "reads the epoch after its native malloc: bytes a concurrent reset forgot are recorded as "
    "current, so recycle(), next_n (giving a run tail back) and the finalizer raise "
    "FreeError 'not memory of this allocator'")
RACE_DEBUG_RESET = (
    "debug malloc records its bytes after the native malloc, and reset clears the records "
    "before the native reset: bytes malloc'd before a concurrent reset are recorded as live, "
    "quarantined on free as a raw cffi view holding no region, and check() reads them after "
    "the region is unmapped (SIGSEGV)")


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(workers: list[Callable[[], None]], timeout: float = 60.0) -> None:
    """Start the workers together; re-raise the first failure in the main thread."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def body(work: Callable[[], None]) -> None:
        try:
            start.wait()
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]


def inconsistent(s: AllocatorStats) -> list[str]:
    """What is wrong with a snapshot (empty when it is consistent)."""
    bad = []
    if s.free != s.reserved - s.in_use:
        bad.append("free != reserved - in_use")
    if not 0 <= s.in_use <= s.reserved:
        bad.append("in_use outside 0..reserved")
    if s.largest_free > s.free:
        bad.append("largest_free > free")
    if (s.arenas == 0) != (s.reserved == 0):
        bad.append("arenas == 0 iff reserved == 0 broken")
    if not 0 <= s.pinned <= s.in_use:
        bad.append("pinned outside 0..in_use")
    return bad


def only_in_use_low(bad: list[tuple[list[str], AllocatorStats]]) -> bool:
    """Every torn snapshot is the known kind: in_use too low (by bytes counted elsewhere),
    so ``free`` too high; the native counters themselves agree."""
    for _, s in bad:
        native_free = s.reserved - s.in_use - s.free     # 0 when free == reserved - in_use
        if native_free != 0 or s.largest_free > s.reserved or \
                (s.arenas == 0) != (s.reserved == 0):
            return False
        if s.in_use >= 0 and s.free <= s.reserved and s.pinned <= s.in_use:
            return False
    return True


def pattern(tag: int, n: int) -> bytes:
    unit = bytes((tag * 31 + k) & 0xFF for k in range(251))
    return (unit * (n // 251 + 1))[:n]


class Churn:
    """One worker's random traffic on ``a``: malloc, whole and partial free, bursts of
    short-lived blocks, RecyclableMemory next_n + recycle, auto chunks let go (pinned).

    Every block is filled with a pattern no other block has and checked before any
    part of it is freed, so bytes handed to two owners show up. With ``reset_race`` a
    concurrent reset may forget blocks: their frees are refused (FreeError, counted).
    """

    def __init__(self, a: Allocator, seed: int, deadline: float, *, reset_race: bool = False,
                 rm_only: bool = False, use_rm: bool = True) -> None:
        self.a = a
        self.rng = random.Random(seed)
        self.tag = seed * 1000
        self.deadline = deadline
        self.reset_race = reset_race
        self.rm_only = rm_only
        self.use_rm = use_rm
        self.refused: Counter[str] = Counter()

    def free(self, view: memoryview) -> None:
        try:
            self.a.free(view)
        except FreeError:
            if not self.reset_race:
                raise
            self.refused["free after a concurrent reset"] += 1

    def __call__(self) -> None:
        rng, a = self.rng, self.a
        blocks: list[tuple[memoryview, bytes]] = []
        views: list[memoryview] = []
        while time.monotonic() < self.deadline:
            roll = rng.random()
            if self.rm_only or (roll < 0.2 and self.use_rm):
                self.recyclable()
            elif roll < 0.3:
                for _ in range(20):               # short-lived blocks: many frees per second
                    self.free(a.malloc(rng.randint(1, 300)))
            elif roll < 0.4:
                # what the stream layer does: an auto chunk, viewed, let go (pinned), dropped
                chunk = a._auto_chunk(rng.randint(1, 3000))
                view = memoryview(chunk)
                view[:1] = b"x"
                chunk.disown()
                del chunk
                views.append(view)
                if len(views) > 4:
                    del views[: rng.randint(1, 4)]
            elif roll < 0.7 or not blocks:
                n = rng.choice((rng.randint(1, 64), rng.randint(65, 4096), rng.randint(4097, 70000)))
                self.tag += 1
                view = a.malloc(n)
                want = pattern(self.tag, n)
                view[:] = want
                blocks.append((view, want))
            else:
                view, want = blocks.pop(rng.randrange(len(blocks)))
                if not self.reset_race:
                    assert view.tobytes() == want, "a live block's bytes changed under it"
                k = rng.randint(0, len(view))
                if rng.random() < 0.5:
                    self.free(view)
                else:
                    try:
                        blocks.append((a.free_rest(view, k), want[:k]))
                    except FreeError:
                        if not self.reset_race:
                            raise
                        self.refused["free after a concurrent reset"] += 1
        del views
        for view, want in blocks:
            if not self.reset_race:
                assert view.tobytes() == want, "a live block's bytes changed under it"
            self.free(view)

    def recyclable(self) -> None:
        rng = self.rng
        with RecyclableMemory(self.a) as rm:   # leaving the block recycles
            for _ in range(rng.randint(1, 6)):
                n = rng.randint(1, 5000)
                rm.next_n(n)[:] = pattern(self.tag, n)
            rm.push(b"a reference, never freed")


def tight(a: Allocator, seed: int, deadline: float) -> Callable[[], None]:
    """malloc + free as fast as Python goes: the most frees per second."""
    def loop() -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            a.free(a.malloc(rng.randint(1, 300)))
    return loop


def tight_rm(a: Allocator, seed: int, deadline: float) -> Callable[[], None]:
    """next_n + recycle as fast as Python goes (each first next_n reserves a run)."""
    def loop() -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            with RecyclableMemory(a) as rm:
                rm.next_n(rng.randint(1, 300))
    return loop


def watch_stats(a: Allocator, deadline: float, bad: list[tuple[list[str], AllocatorStats]],
                count: list[int]) -> Callable[[], None]:
    def watcher() -> None:
        while time.monotonic() < deadline:
            s = a.stats()
            count[0] += 1
            problems = inconsistent(s)
            if problems and len(bad) < 5:
                bad.append((problems, s))
    return watcher


def churn(a: Allocator, workers: list[Callable[[], None]], *, watch: bool = True
          ) -> tuple[list[tuple[list[str], AllocatorStats]], int]:
    """Run workers (and a stats watcher); check nothing leaked; return the torn snapshots."""
    bad: list[tuple[list[str], AllocatorStats]] = []
    count = [0]
    deadline = time.monotonic() + SECONDS
    for w in workers:
        if isinstance(w, Churn):
            w.deadline = deadline
    run_threads(workers + ([watch_stats(a, deadline, bad, count)] if watch else []))
    assert count[0] > 100 or not watch, "the watcher hardly ran"
    s = a.stats()
    assert s.in_use == 0 and s.pinned == 0, f"leaked: {s}"
    a.check()
    return bad, count[0]


def expect_consistent(bad: list[tuple[list[str], AllocatorStats]], count: int,
                      known: str | None = None) -> None:
    if bad and known is not None and only_in_use_low(bad):
        pytest.xfail(f"known race seen ({len(bad)}+ of {count} snapshots): {known}")
    assert not bad, f"torn stats() snapshots (of {count}): {bad[:3]}"


# ---------------------------------------------------------------------------
# stats() while 8 threads churn
# ---------------------------------------------------------------------------


def test_stats_consistent_while_threads_churn() -> None:
    """malloc / free / free_rest / next_n + recycle / auto chunks, and a stats() watcher."""
    a = Allocator(arena_size=16 << 10)
    workers: list[Callable[[], None]] = [Churn(a, i, 0.0) for i in range(THREADS // 2)]
    workers += [tight_rm(a, i, time.monotonic() + SECONDS) for i in range(THREADS // 4)]
    workers += [tight(a, i, time.monotonic() + SECONDS) for i in range(THREADS // 4)]
    expect_consistent(*churn(a, workers), known=RACE_TAILS)


def test_stats_consistent_while_threads_churn_without_recyclable_memory() -> None:
    """The same traffic without RecyclableMemory: every snapshot must be consistent."""
    a = Allocator(arena_size=16 << 10)
    workers: list[Callable[[], None]] = [Churn(a, i, 0.0, use_rm=False)
                                         for i in range(THREADS // 2)]
    workers += [tight(a, i, time.monotonic() + SECONDS) for i in range(THREADS // 2)]
    expect_consistent(*churn(a, workers))


def test_stats_consistent_while_threads_churn_debug() -> None:
    a = Allocator(arena_size=16 << 10, debug=True)
    workers: list[Callable[[], None]] = [Churn(a, i, 0.0) for i in range(THREADS // 2)]
    workers += [tight(a, i, time.monotonic() + SECONDS) for i in range(THREADS // 2)]
    expect_consistent(*churn(a, workers), known=RACE_QUARANTINE)


# ---------------------------------------------------------------------------
# reset() racing malloc / free / next_n
# ---------------------------------------------------------------------------


def resetter(a: Allocator, deadline: float, resets: list[int]) -> Callable[[], None]:
    def reset_loop() -> None:
        while time.monotonic() < deadline:
            a.reset()
            resets[0] += 1
            time.sleep(0.0005)
    return reset_loop


def test_reset_racing_malloc_and_free() -> None:
    a = Allocator(arena_size=16 << 10)
    deadline = time.monotonic() + SECONDS
    resets = [0]
    bad: list[tuple[list[str], AllocatorStats]] = []
    count = [0]
    workers = [Churn(a, i, deadline, reset_race=True, use_rm=False) for i in range(THREADS)]
    run_threads(list(workers) + [resetter(a, deadline, resets),
                                 watch_stats(a, deadline, bad, count)])
    assert resets[0] > 10
    assert not bad, f"torn stats() snapshots: {bad[:3]}"
    a.reset()
    s = a.stats()
    assert (s.in_use, s.reserved, s.pinned, s.arenas) == (0, 0, 0, 0), s
    a.check()


def test_reset_racing_next_n_and_recycle() -> None:
    a = Allocator(arena_size=16 << 10)
    deadline = time.monotonic() + SECONDS
    resets = [0]
    refused: list[FreeError] = []

    def worker(seed: int) -> Callable[[], None]:
        def loop() -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                rm = RecyclableMemory(a)
                try:
                    for _ in range(rng.randint(1, 4)):
                        rm.next_n(rng.randint(1, 5000))   # (gives a run's tail back: a free)
                    rm.recycle()
                except FreeError as exc:       # the known race: recorded, then let go
                    refused.append(exc)
                    rm._finalizer.detach()
        return loop

    run_threads([worker(i) for i in range(THREADS)] + [resetter(a, deadline, resets)])
    assert resets[0] > 10
    a.reset()
    s = a.stats()
    assert (s.in_use, s.reserved, s.pinned, s.arenas) == (0, 0, 0, 0), s
    a.check()
    if refused:
        assert all("not memory of this allocator" in str(e) for e in refused), refused[:3]
        pytest.xfail(f"known race seen ({len(refused)} recycles refused): {RACE_RESET_RECORD}")


DEBUG_RESET_CHILD = textwrap.dedent("""
    import random, sys, threading, time
    from membuf import Allocator, FreeError, RecyclableMemory
    sys.setswitchinterval(1e-6)
    a = Allocator(debug=True)
    deadline = time.monotonic() + {seconds}
    errors = []
    def worker(i):
        rng = random.Random(i)
        while time.monotonic() < deadline:
            try:
                if rng.random() < 0.5:
                    a.free(a.malloc(rng.randint(1, 3000)))
                else:
                    with RecyclableMemory(a) as rm:
                        rm.next_n(rng.randint(1, 3000))
            except FreeError:
                pass                      # bytes a concurrent reset forgot: documented
            except BaseException as exc:
                errors.append(repr(exc))
    def resetter():
        while time.monotonic() < deadline:
            try:
                a.reset(); a.check()
            except BaseException as exc:
                errors.append(repr(exc))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range({threads})]
    threads.append(threading.Thread(target=resetter))
    for t in threads: t.start()
    for t in threads: t.join()
    a.reset()
    assert a.stats().in_use == 0, a.stats()
    a.check()
    print("errors:", errors[:5])
    sys.exit(1 if errors else 0)
""")


def test_reset_racing_debug_allocator_in_a_child() -> None:
    code = DEBUG_RESET_CHILD.format(seconds=SECONDS, threads=THREADS - 1)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode < 0 and "_poison_broken" in proc.stderr:
        pytest.xfail(f"known race seen (signal {-proc.returncode}): {RACE_DEBUG_RESET}")
    assert proc.returncode == 0, (
        f"return code {proc.returncode}"
        + (" (killed by a signal)" if proc.returncode < 0 else "")
        + f"\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------
# trim() racing malloc / free
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_trim_racing_malloc_and_free(debug: bool) -> None:
    a = Allocator(arena_size=8 << 10, max_arena_size=64 << 10, debug=debug)
    deadline = time.monotonic() + SECONDS
    trims = [0]

    def trimmer() -> None:
        while time.monotonic() < deadline:
            released = a.trim()
            assert isinstance(released, int) and released >= 0
            trims[0] += 1

    workers: list[Callable[[], None]] = [Churn(a, 100 + i, deadline, use_rm=False)
                                         for i in range(THREADS)]
    bad, count = churn(a, workers + [trimmer], watch=not debug)
    assert trims[0] > 10
    expect_consistent(bad, count)
    a.trim()
    assert a.stats().reserved == 0, a.stats()


# ---------------------------------------------------------------------------
# the known races, forced deterministically in one thread
# ---------------------------------------------------------------------------


class Interleave:
    """Stands in for ``Allocator._heap``: right after the first call of ``method``, runs
    ``between`` in another thread, as a racing thread would, and gives it a moment
    (it may be blocked by a lock the caller holds: that is the point); ``join()`` waits
    for it. Everything else is forwarded unchanged."""

    def __init__(self, real: Any, method: str, between: Callable[[], Any]) -> None:
        self._real = real
        self._method = method
        self._between: Callable[[], Any] | None = between
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def join(self) -> None:
        for t in self._threads:
            t.join(30)
            assert not t.is_alive(), "the racing thread never finished"

    def _run(self, between: Callable[[], Any]) -> None:
        try:
            between()
        except BaseException as exc:          # reported by the test, not lost in the thread
            self.errors.append(exc)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        def call(*args: Any) -> Any:
            result = attr(*args)
            between, self._between = self._between, None
            if between is not None:
                t = threading.Thread(target=self._run, args=(between,))
                self._threads.append(t)
                t.start()
                t.join(0.2)
            return result
        return call


def test_stats_is_one_snapshot_with_run_tails() -> None:
    a = Allocator()
    rm = RecyclableMemory(a)
    a._heap = hook = Interleave(a._heap, "stats", lambda: rm.next_n(10))  # type: ignore
    s = a.stats()
    hook.join()
    assert not hook.errors and not inconsistent(s), (s, hook.errors)
    assert not inconsistent(a.stats())
    rm.recycle()


def test_stats_is_one_snapshot_debug() -> None:
    a = Allocator(debug=True)
    a._heap = hook = Interleave(a._heap, "stats", lambda: a.free(a.malloc(100)))  # type: ignore
    s = a.stats()
    hook.join()
    assert not hook.errors and not inconsistent(s), (s, hook.errors)


def test_recycle_after_a_reset_between_malloc_and_record() -> None:
    a = Allocator()
    rm = RecyclableMemory(a)
    real = a._malloc_addr

    def malloc_then_reset(n: int) -> Any:      # another thread resets right after the malloc
        result = real(n)
        a._malloc_addr = real                  # type: ignore[method-assign]
        a.reset()
        return result

    a._malloc_addr = malloc_then_reset         # type: ignore[method-assign]
    rm.next_n(10)
    try:
        rm.recycle()                           # documented: frees nothing after a reset
    finally:
        rm._finalizer.detach()
    assert a.stats().in_use == 0


DEBUG_RESET_FORCED = textwrap.dedent("""
    import gc, sys
    sys.path.insert(0, {here!r})
    from test_threads_v2 import Interleave
    from membuf import Allocator, FreeError
    a = Allocator(debug=True)
    a._heap = hook = Interleave(a._heap, "malloc_addr", a.reset)  # another thread's reset
    v = a.malloc(64)          # the racing reset lands before or after the records: never between
    hook.join()
    try:
        a.free(v)             # after the reset: refused (documented), or quarantined safely
    except FreeError:
        pass
    del v; gc.collect()       # the last view goes
    a.check()                 # reads whatever is quarantined: its views hold their regions
""")


def test_debug_reset_between_malloc_and_record_in_a_child() -> None:
    import os

    code = DEBUG_RESET_FORCED.format(here=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"return code {proc.returncode}: {proc.stderr[-2000:]}"
