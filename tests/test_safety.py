"""The safety contract (docs/safety.md): every scenario that once crashed the
interpreter (rc -11) or read changed bytes.

* a view outlives its allocator, or is used after ``reset()``, ``trim()``,
  ``recycle()`` + ``trim()``: it stays mapped (no crash), and the region goes
  (``mb_region_live()``) once the view does;
* a ``read_exactly`` result read after its connection closed, frames handed to
  other tasks or kept in lists across idle trims, many receives and close: the
  bytes read exactly as sent (seeded, varied payloads, and every free byte of
  the allocator overwritten afterwards, so stale bytes would show);
* ``stats().pinned`` counts what such views hold and returns to 0, with
  ``in_use == 0``, once they are dropped;
* ``Allocator.free()`` of stream-owned bytes is refused and changes nothing;
  ``read_frame`` results survive close and ``recycle()`` lets them go.

A scenario that could crash runs in a child process (``python -c``) whose exit
code and output are checked, so a regression is a failing test, not a dead test
run. Real loopback TCP on 127.0.0.1, every child bounded in time; sleeps (the
idle-trim scenario) but no timing assertions.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_stream import codec, encode, leb128, loopback, make_frames, trio_test

from membuf import Allocator, FreeError, StreamReader

TESTS_DIR = Path(__file__).resolve().parent

# What every child starts with: the test_stream helpers and two of its own.
PRELUDE = f"""
import gc, random, sys
from collections import deque
sys.path.insert(0, {str(TESTS_DIR)!r})
import trio, trio.testing
import membuf
from membuf import Allocator, RecyclableMemory, StreamReader
from membuf._native import lib
from test_stream import codec, dribble, encode, leb128, loopback, make_frames

def clobber_free_bytes(alloc):
    '''malloc every free byte of ``alloc`` and fill it with 0xEE (then give it back):
    any byte a kept view wrongly lost to the allocator would read 0xEE afterwards.'''
    junk = []
    for _ in range(10_000):
        n = alloc.stats().largest_free
        if n <= 0:
            break
        mv = alloc.malloc(n)
        mv[:] = b"\\xee" * n
        junk.append(mv)
    for mv in junk:
        alloc.free(mv)
    return len(junk)

def all_back(alloc):
    s = alloc.stats()
    assert (s.in_use, s.pinned) == (0, 0), s
"""


def run_child(body: str, *args: str, timeout: float = 120) -> str:
    """Run ``PRELUDE + body`` in a fresh interpreter; it must exit 0. Returns its stdout."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"     # a file, so tracebacks show the failing line
        script.write_text(PRELUDE + textwrap.dedent(body))
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", str(script), *args],
            capture_output=True, text=True, timeout=timeout, cwd=TESTS_DIR.parent,
        )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (-11: it crashed)\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc.stdout


# -- plain allocations --------------------------------------------------------------


def test_a_view_outlives_its_allocator() -> None:
    out = run_child("""
        base = lib.mb_region_live()
        membuf.Allocator().malloc(100)[0] = 1          # the allocator is gone at once
        assert lib.mb_region_live() == base

        def f(n):
            a = membuf.Allocator()
            return a.malloc(n)

        rng = random.Random(1)
        views, wants = [], []
        for n in (1, 100, 70_000, 5 << 20):            # 5 MiB: a dedicated arena
            v = f(n)
            gc.collect()
            want = rng.randbytes(n)
            v[:] = want
            f(n)[:] = b"\\xee" * n                     # more allocators come and go
            gc.collect()
            assert bytes(v) == want
            views.append(v)
            wants.append(want)
        assert lib.mb_region_live() == base + len(views)   # each view keeps its region
        assert [bytes(v) for v in views] == wants
        del v, views
        gc.collect()
        assert lib.mb_region_live() == base                # ... and only that long
        print("malloc ok")

        def g(n):
            a = membuf.Allocator()
            return a.borrow(n)

        b = g(1000)
        gc.collect()
        b[:] = wants[1] * 10
        assert bytes(b) == wants[1] * 10
        a = Allocator()
        old = a.borrow(10)
        old[:] = b"0123456789"
        a.borrow(1 << 20)[:] = b"\\xee" * (1 << 20)   # a bigger scratch replaces the old one
        del a
        gc.collect()
        old[0] = 1
        assert len(bytes(old)) == 10 and old[0] == 1
        print("borrow ok")
    """)
    assert out.split() == ["malloc", "ok", "borrow", "ok"]


def test_a_view_used_after_reset_trim_and_recycle() -> None:
    out = run_child("""
        rng = random.Random(2)
        base = lib.mb_region_live()
        a = Allocator()

        # reset: every allocation forgotten, every arena released by the allocator
        v = a.malloc(1000)
        v[:] = rng.randbytes(1000)
        a.reset()
        assert a.stats().reserved == 0
        assert lib.mb_region_live() == base + 1            # v's region stays mapped
        want = rng.randbytes(1000)
        v[:] = want
        assert bytes(v) == want
        del v
        assert lib.mb_region_live() == base
        print("reset ok")

        # trim: free everything first, so every arena is empty, then trim
        views = [a.malloc(n) for n in (10, 5000, 70_000, 3 << 20)]
        for mv in views:
            mv[:] = rng.randbytes(len(mv))
        for mv in views:
            a.free(mv)
        assert a.stats().in_use == 0
        a.trim()
        assert a.stats().reserved == 0 and lib.mb_region_live() > base
        wants = [rng.randbytes(len(mv)) for mv in views]
        for mv, want in zip(views, wants):
            mv[:] = want
        assert [bytes(mv) for mv in views] == wants
        del mv, views
        assert lib.mb_region_live() == base
        print("trim ok")

        # recycle + trim: the RecyclableMemory's segments, kept past both
        rm = RecyclableMemory(a)
        for n in (1, 300, 20_000, 2 << 20):
            rm.next_n(n)[:] = rng.randbytes(n)
        segs = list(rm)
        rm.recycle()
        a.trim()
        assert a.stats().reserved == 0 and a.stats().in_use == 0
        wants = [rng.randbytes(len(s)) for s in segs]
        for s, want in zip(segs, wants):
            s[:] = want
        assert [bytes(s) for s in segs] == wants
        del s, segs
        assert lib.mb_region_live() == base
        print("recycle ok")

        # leaving `with Allocator()` resets it; a view kept past the block stays mapped
        with Allocator() as b:
            kept = b.malloc(4096)
        kept[:] = b"k" * 4096
        del b
        gc.collect()
        assert bytes(kept) == b"k" * 4096
        del kept
        del a
        gc.collect()
        assert lib.mb_region_live() == base
        print("with ok")
    """)
    assert out.split() == ["reset", "ok", "trim", "ok", "recycle", "ok", "with", "ok"]


# -- the stream layer ------------------------------------------------------------------


def test_a_read_exactly_result_outlives_its_connection() -> None:
    out = run_child("""
        DATA = random.Random(3).randbytes(1000)
        JUNK = b"\\xee" * 300_000

        async def handler(conn):
            what = await conn.reader.read_byte()
            await conn.send(DATA if what == ord("D") else JUNK)
            try:
                await conn.reader.read_byte()               # until the client hangs up
            except (membuf.IncompleteReadError, trio.BrokenResourceError):
                pass

        async def main():
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(membuf.serve_tcp, handler, 0, "127.0.0.1")
                port = listeners[0].socket.getsockname()[1]

                # the connection's own allocator: connection and allocator are dropped
                async with await membuf.open_tcp("127.0.0.1", port) as c:
                    await c.send(b"D")
                    m = await c.reader.read_exactly(1000)
                s = c.allocator.stats()
                assert s.in_use == s.pinned > 0, s
                del c
                gc.collect()
                assert m.to_bytes() == DATA
                print("own allocator ok")

                # a shared allocator: later connections receive into the same memory
                shared = Allocator()
                async with await membuf.open_tcp("127.0.0.1", port, allocator=shared) as c:
                    await c.send(b"D")
                    m2 = await c.reader.read_exactly(1000)
                shared.trim()
                for _ in range(3):
                    async with await membuf.open_tcp("127.0.0.1", port, allocator=shared) as c:
                        await c.send(b"J")
                        j = await c.reader.read_exactly(len(JUNK))
                        assert j.to_bytes() == JUNK
                        del j
                clobber_free_bytes(shared)
                assert m.to_bytes() == DATA and m2.to_bytes() == DATA
                s = shared.stats()
                assert s.in_use == s.pinned > 0, s
                del m, m2
                all_back(shared)
                print("shared allocator ok")
                nursery.cancel_scope.cancel()

        base = lib.mb_region_live()
        trio.run(main)
        gc.collect()
        print("regions", lib.mb_region_live() - base)
    """)
    assert out.splitlines() == ["own allocator ok", "shared allocator ok", "regions 0"]


CHILD_IDLE = """
    views, batch = sys.argv[1] == "views", sys.argv[2] == "batch"

    async def idle_sender(stream, groups):
        for group in groups:
            await stream.send_all(encode(group))
            await trio.sleep(0.2)              # idle for longer than idle_trim
        await stream.send_eof()

    async def main():
        groups = [make_frames(seed, 40, big=seed == 1) for seed in range(3)]
        want = [f for g in groups for f in g]
        got, kept, trims = [], [], []
        async with loopback() as (server, client), trio.open_nursery() as nursery:
            rx = StreamReader(server, chunk_size=2048, idle_trim=0.05)
            alloc = rx.allocator
            real_trim = alloc.trim

            def counting_trim():
                trims.append(alloc.stats())
                return real_trim()

            alloc.trim = counting_trim
            nursery.start_soon(idle_sender, client, groups)

            async def process(i, frame):
                await trio.sleep(0.2)          # touched after the peer went idle (and later)
                got.append((i, bytes(frame) if views else frame.to_bytes()))

            i = 0
            async for item in rx.frames(codec(), views=views, batch=batch):
                for frame in item if batch else [item]:
                    if batch:
                        kept.append(frame)     # keep.extend(batch)
                    else:
                        nursery.start_soon(process, i, frame)
                    i += 1
            del item, frame
            assert trims                       # the reader went idle and trimmed meanwhile
            s = alloc.stats()
            if batch:
                assert s.pinned > 0, s
            await rx.aclose()                  # processes may still be sleeping: fine
        if batch:
            s = alloc.stats()
            assert s.in_use == s.pinned > 0, s
            for _ in range(2):                 # before and after a trim of the rest
                clobber_free_bytes(alloc)
                assert [bytes(v) if views else v.to_bytes() for v in kept] == want
                alloc.trim()
            del kept
        else:
            assert [b for _, b in sorted(got)] == want
        all_back(alloc)
        print("ok", i)

    trio.run(main)
"""


@pytest.mark.parametrize(("views", "batch"), [
    ("memory", "one"), ("views", "one"), ("memory", "batch"), ("views", "batch"),
])
def test_frames_kept_past_idle_trim(views: str, batch: str) -> None:
    out = run_child(CHILD_IDLE, views, batch)
    assert out.split() == ["ok", "120"]


CHILD_MANY = """
    mode, seed = sys.argv[1], int(sys.argv[2])
    views, batch = "views" in mode, "batch" in mode

    async def main():
        frames = make_frames(seed, 400)
        alloc = Allocator()
        kept = []
        async with loopback() as (server, client), trio.open_nursery() as nursery:
            nursery.start_soon(dribble, client, encode(frames), seed, 4096)
            async with StreamReader(server, alloc, chunk_size=2048) as rx:
                if mode == "read_exactly":
                    window = deque()
                    for i, want in enumerate(frames):
                        m = await rx.read_exactly(await rx.read_leb128())
                        window.append((want, m))
                        if len(window) > 6:        # checked after 6 more reads
                            w, old = window.popleft()
                            assert old == w
                        if i % 5 == 0:
                            kept.append(m)         # and every fifth kept to the end
                    del m, old, window
                    frames = frames[::5]
                else:
                    async for item in rx.frames(codec(), views=views, batch=batch):
                        kept.extend(item if batch else [item])
                    del item
                assert rx.stats().receives >= 5    # at most 128 KiB each: many chunks
                assert alloc.stats().pinned > 0
        s = alloc.stats()
        assert s.in_use == s.pinned > 0, s
        for _ in range(2):                     # before and after a trim of the rest
            clobber_free_bytes(alloc)
            if views:
                assert [bytes(f) for f in kept] == frames
            else:
                assert [f.to_bytes() for f in kept] == frames
            alloc.trim()
        s = alloc.stats()
        assert s.in_use == s.pinned > 0, s
        del kept
        all_back(alloc)
        alloc.check()
        print("ok", len(frames))

    trio.run(main)
"""


@pytest.mark.parametrize("mode", ["memory", "views", "memory-batch", "views-batch", "read_exactly"])
def test_results_kept_across_many_receives(mode: str) -> None:
    for seed in (1, 2):
        out = run_child(CHILD_MANY, mode, str(seed))
        assert out.split() == ["ok", "80" if mode == "read_exactly" else "400"]


def test_read_frame_results_survive_close_and_recycle_lets_them_go() -> None:
    out = run_child("""
        async def main():
            frames = make_frames(7, 300)
            alloc = Allocator()
            kept, dropped = [], 0
            async with loopback() as (server, client), trio.open_nursery() as nursery:
                nursery.start_soon(dribble, client, encode(frames), 7)
                rx = StreamReader(server, alloc, chunk_size=1024)
                for i, want in enumerate(frames):
                    n = await rx.read_leb128()
                    if i % 2:
                        kept.append((want, await rx.read_frame(n)))
                    elif i % 3:
                        await rx.read_frame(n)    # dropped without recycle: a finalizer
                        dropped += 1
                    else:
                        assert await rx.read_exactly(n) == want
                await rx.aclose()
            return alloc, kept, dropped

        base = lib.mb_region_live()
        alloc, kept, dropped = trio.run(main)
        gc.collect()
        assert dropped > 0
        s = alloc.stats()
        assert s.in_use == s.pinned > 0, s
        assert sum(f.owned_bytes for _, f in kept) == sum(len(w) for w, _ in kept)
        clobber_free_bytes(alloc)
        assert all(f.to_bytes() == w for w, f in kept)
        print("survive ok")
        for _, f in kept:
            f.recycle()
            assert f.owned_bytes == 0 and len(f) == 0
        all_back(alloc)
        alloc.check()
        print("recycle ok")
        del f, kept, alloc
        gc.collect()
        assert lib.mb_region_live() == base
        print("regions ok")
    """)
    assert out.split() == ["survive", "ok", "recycle", "ok", "regions", "ok"]


# -- refused frees (no crash to fear: in process) ----------------------------------------


@trio_test
async def test_free_of_stream_owned_bytes_is_refused_and_changes_nothing() -> None:
    big = bytes(range(256)) * 300                 # 76,800 B: joined in views mode
    alloc = Allocator()                           # shared by three readers
    async with loopback() as (s1, c1), loopback() as (s2, c2), loopback() as (s3, c3):
        await c1.send_all(leb128(5) + b"frame" + leb128(len(big)) + big)
        await c2.send_all(leb128(4) + b"view" + leb128(len(big)) + big)
        await c3.send_all(b"exact" + b"held" + b"line\r\n")
        for c in (c1, c2, c3):
            await c.send_eof()
        readers = [StreamReader(s, alloc, chunk_size=4096) for s in (s1, s2, s3)]
        r1, r2, r3 = readers
        held: list[tuple[bytes, Any, list[memoryview]]] = []
        frames = [f async for f in r1.frames(codec())]                 # Memory frames
        held += [(w, f, list(f)) for w, f in zip([b"frame", big], frames, strict=True)]
        views = [v async for v in r2.frames(codec(), views=True)]       # views, one joined
        held += [(w, v, [v, v[1:]]) for w, v in zip([b"view", big], views, strict=True)]
        m = await r3.read_exactly(5)
        rf = await r3.read_frame(4)
        line = await r3.read_until(b"\r\n", 100)
        held += [(b"exact", m, list(m)), (b"held", rf, list(rf)), (b"line", line, list(line))]
        del frames, views, m, line
        for stage in ("open", "closed"):
            for want, obj, pieces in held:
                assert pieces
                for piece in pieces:
                    before = alloc.stats()
                    with pytest.raises(FreeError, match="StreamReader owns"):
                        alloc.free(piece)
                    with pytest.raises(FreeError, match="StreamReader owns"):
                        alloc.free_rest(piece, 0)
                    assert alloc.stats() == before, stage
                    assert alloc.owns(piece)
                assert (bytes(obj) if isinstance(obj, memoryview) else obj.to_bytes()) == want
            for r in readers:
                await r.aclose()
    s = alloc.stats()
    assert s.in_use == s.pinned > 0, s
    rf.recycle()
    del obj, piece, pieces, held, rf
    s = alloc.stats()
    assert (s.in_use, s.pinned) == (0, 0), s
    alloc.check()


@trio_test
async def test_pinned_counts_held_views_in_process() -> None:
    # the cheap in-process version of the accounting the child processes check
    frames = make_frames(4, 50, big=False)
    async with loopback() as (server, client):
        await client.send_all(encode(frames))
        await client.send_eof()
        rx = StreamReader(server)
        kept = [f async for f in rx.frames(codec(), views=True)]
        assert [bytes(v) for v in kept] == frames
        s = rx.allocator.stats()
        assert s.pinned > 0 and s.in_use >= s.pinned
        await rx.aclose()
        s = rx.allocator.stats()
        assert s.in_use == s.pinned > 0, s
        assert [bytes(v) for v in kept] == frames
        del kept
        s = rx.allocator.stats()
        assert (s.in_use, s.pinned) == (0, 0), s


@trio_test
async def test_a_codec_keeps_no_view_after_close() -> None:
    # one codec for every connection is the documented use (docs/stream.md), so a view
    # it keeps pins memory of a connection that is long gone
    c = codec()
    send, recv = trio.testing.memory_stream_one_way_pair()
    rx = StreamReader(recv)

    async def drain() -> None:
        async for f in rx.frames(c, views=True):
            assert bytes(f) == b"abcde"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await send.send_all(leb128(5) + b"ab")     # incomplete: the codec memoizes it
        await trio.testing.wait_all_tasks_blocked()
        await send.send_all(b"cde")                # completes it, carried into a new chunk
        await trio.testing.wait_all_tasks_blocked()
        await send.aclose()
    await rx.aclose()
    s = rx.allocator.stats()
    assert (s.in_use, s.pinned) == (0, 0), s
