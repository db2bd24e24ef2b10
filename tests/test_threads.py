"""Eight threads share one allocator: random mallocs and partial frees, checked by fill patterns.

cffi releases the GIL around every native call, so these threads really are
inside ``mb_alloc_malloc`` / ``mb_alloc_free`` at the same time; the
allocator's lock is what keeps its index sound. Each thread writes its own
pattern (thread number and a per-block counter) into every block it gets
and checks every byte of a block before freeing any part of it, so a block
handed to two threads, or a free that releases someone else's bytes, shows
up as a changed pattern. Partial frees take a prefix, a suffix or the
middle of a block, splitting it the way stream code does with ``free_rest``
and ``clip_front``. At the end every byte is freed, ``in_use`` is 0 and
``check()`` walks every native invariant.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from membuf import Allocator, Memory, RecyclableMemory

THREADS = 8


def run_threads(worker: Callable[[int], None], n: int = THREADS) -> None:
    """Start ``n`` workers together; re-raise the first failure in the main thread."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            start.wait()
            worker(i)
        except BaseException as exc:   # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]


def pattern(thread: int, serial: int, n: int) -> bytes:
    """Bytes no other block has: thread number, then a rolling per-block counter."""
    head = bytes([0xA0 | thread])
    body = bytes((serial + k) & 0xFF for k in range(min(n, 256)))
    return (head + body * (n // 256 + 1))[:n]


class Block:
    """A live view and the bytes it must hold."""

    __slots__ = ("view", "want")

    def __init__(self, view: memoryview, want: bytes) -> None:
        self.view = view
        self.want = want

    def verify(self) -> None:
        assert self.view.tobytes() == self.want, "a live block's bytes changed under it"


def churn(a: Allocator, thread: int, ops: int, seed: int) -> None:
    """Random malloc / partial free / whole free on ``a``, checking patterns; frees all at the end."""
    rng = random.Random(seed * 100 + thread)
    blocks: list[Block] = []
    serial = 0
    for _ in range(ops):
        roll = rng.random()
        if roll < 0.45 or not blocks:
            n = rng.choice((rng.randint(1, 64), rng.randint(64, 4096), rng.randint(4096, 70000)))
            mv = a.malloc(n)
            want = pattern(thread, serial, n)
            serial += 1
            mv[:] = want
            blocks.append(Block(mv, want))
            continue
        i = rng.randrange(len(blocks))
        b = blocks[i]
        b.verify()
        n = len(b.view)
        if roll < 0.6 or n < 3:                       # the whole block
            a.free(b.view)
            blocks.pop(i)
        elif roll < 0.75:                             # free_rest: keep a prefix
            k = rng.randint(1, n - 1)
            b.view = a.free_rest(b.view, k)
            b.want = b.want[:k]
        elif roll < 0.88:                             # drop a prefix (clip_front)
            k = rng.randint(1, n - 1)
            a.free(b.view[:k])
            b.view, b.want = b.view[k:], b.want[k:]
        else:                                         # punch out the middle: two blocks
            lo = rng.randint(1, n - 2)
            hi = rng.randint(lo + 1, n - 1)
            a.free(b.view[lo:hi])
            blocks[i] = Block(b.view[:lo], b.want[:lo])
            blocks.append(Block(b.view[hi:], b.want[hi:]))
        if rng.random() < 0.02:
            for other in blocks:
                other.verify()
    for b in blocks:
        b.verify()
        a.free(b.view)


@pytest.mark.parametrize("strategy", ["first-fit", "best-fit"])
def test_eight_threads_partial_frees(strategy: str) -> None:
    a = Allocator(arena_size=64 << 10, max_arena_size=256 << 10, strategy=strategy)
    run_threads(lambda i: churn(a, i, ops=1500, seed=1))
    s = a.stats()
    assert s.in_use == 0, s
    assert s.mallocs > 0 and s.frees >= s.mallocs
    a.check()


def test_eight_threads_with_max_bytes() -> None:
    """Under a cap, a thread that cannot get memory gets MemoryLimitError; nothing is corrupted."""
    a = Allocator(arena_size=64 << 10, max_arena_size=256 << 10, max_bytes=2 << 20)
    refused = [0] * THREADS

    def worker(i: int) -> None:
        from membuf import MemoryLimitError

        rng = random.Random(i)
        held: list[Block] = []
        for serial in range(600):
            if held and rng.random() < 0.45:
                b = held.pop(rng.randrange(len(held)))
                b.verify()
                a.free(b.view)
                continue
            n = rng.randint(1000, 60000)
            try:
                mv = a.malloc(n)
            except MemoryLimitError:
                refused[i] += 1
                continue
            want = pattern(i, serial, n)
            mv[:] = want
            held.append(Block(mv, want))
        for b in held:
            b.verify()
            a.free(b.view)

    run_threads(worker)
    assert a.stats().in_use == 0
    assert a.stats().reserved <= 2 << 20
    a.check()


def test_eight_threads_debug_allocator() -> None:
    """Debug mode adds a Python-side lock, poison and quarantine: still sound under threads."""
    a = Allocator(debug=True)
    run_threads(lambda i: churn(a, i, ops=300, seed=2))
    assert a.stats().in_use == 0
    assert a.leaks() == []
    a.check()


def test_eight_threads_recyclable_memory() -> None:
    """The same through RecyclableMemory: next_n, clip_front handing pieces to free, recycle."""
    a = Allocator()

    def worker(i: int) -> None:
        rng = random.Random(i)
        for round_ in range(120):
            rm = RecyclableMemory(a)
            expected = b""
            for k in range(rng.randint(1, 8)):
                n = rng.randint(1, 3000)
                data = pattern(i, round_ * 8 + k, n)
                rm.next_n(n)[:] = data
                expected += data
            r = rm.reader()
            take = rng.randint(0, len(rm))
            assert r.read_bytes(take) == expected[:take]
            r.clip_front(a.free)                    # the consumed prefix goes back now
            assert rm.to_bytes() == expected[take:]
            assert rm.owned_bytes == len(expected) - take
            if rng.random() < 0.5:
                rm.recycle()
            else:
                with rm:                            # recycle on exit
                    assert Memory(*rm) == expected[take:]

    run_threads(worker)
    assert a.stats().in_use == 0
    a.check()


def test_view_cache_survives_arena_churn() -> None:
    """Requests over ``max_arena_size`` get dedicated arenas, mapped on malloc and unmapped
    on free, so the native arena table changes on nearly every call while other threads
    malloc. Every malloc must still return its view (the Python side's per-arena view
    cache is rebuilt from the native table; a rebuild that reads the table while another
    thread inserts or removes an arena must not lose an arena that holds live bytes)."""
    a = Allocator(arena_size=16 << 10, max_arena_size=16 << 10)

    def worker(i: int) -> None:
        rng = random.Random(i)
        for serial in range(400):
            n = rng.randint(17 << 10, 40 << 10)          # always a dedicated arena
            mv = a.malloc(n)
            want = pattern(i, serial, n)
            mv[:] = want
            assert mv.tobytes() == want
            a.free(mv)

    run_threads(worker)
    assert a.stats().in_use == 0
    a.check()
