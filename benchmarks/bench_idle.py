"""Memory held by idle connections: membuf's StreamReader against bytearray receivers.

``--connections`` TCP connections (default 1,000) are opened over loopback in
one trio process. Each client sends a burst (about 64 KiB of 16..300 B LEB128
frames, then one 64 KiB frame) and stays connected; each server-side receiver
parses every frame of the burst and then waits for more: the connection is
idle and its buffers have drained. Then the process measures, per connection:

* native bytes: for membuf the allocators' ``reserved`` bytes (mapped arenas,
  spare included) and ``in_use``; for the bytearray receivers the capacity of
  their buffer (``sys.getsizeof``);
* RSS growth from before the connections were opened (server and client
  sides, Python objects included; kernel socket buffers are not in RSS).

membuf is measured twice: just after the burst drained (while the per-connection
allocators still keep their spare arena) and after ``idle_trim`` (1 s) passed,
when idle readers have returned their arenas. Each variant runs in its own
process so their heaps do not mix.

    .venv/bin/python benchmarks/bench_idle.py
    .venv/bin/python benchmarks/bench_idle.py --connections 200
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
from typing import Any

import trio

import membuf

VARIANTS = {
    "membuf": "StreamReader.frames(views, batch), one allocator per connection (default)",
    "membuf-shared": "StreamReader.frames(views, batch), one allocator shared by all",
    "membuf-1codec": "as membuf, with one LengthPrefixed instance shared by all connections",
    "membuf-nocodec": "StreamReader read_leb128 + read_exactly, one allocator per connection",
    "recv_into-64K": "trio recv_into one reused bytearray(64 KiB, doubled when a frame"
                     " does not fit) per connection + parsing",
    "receive_some": "trio receive_some + bytearray accumulate + parsing",
}


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def burst(seed: int) -> tuple[bytes, int]:
    rng = random.Random(seed)
    parts = []
    size = frames = 0
    while size < 64 << 10:
        n = rng.randint(16, 300)
        parts.append(leb128(n) + rng.randbytes(n))
        size += len(parts[-1])
        frames += 1
    parts.append(leb128(64 << 10) + rng.randbytes(64 << 10))
    return b"".join(parts), frames + 1


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def parse(buf: bytearray | memoryview, end: int) -> tuple[int, int]:
    """(frames, bytes consumed) of the complete LEB128 frames in buf[:end]."""
    pos = frames = 0
    while pos < end:
        n = shift = 0
        p = pos
        while p < end:
            b = buf[p]
            p += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        else:
            break
        if p + n > end:
            break
        frames += 1
        pos = p + n
    return frames, pos


async def run(variant: str, count: int) -> dict[str, Any]:
    expected = burst(0)[1]
    drained = 0
    all_drained = trio.Event()
    readers: list[Any] = []
    shared = membuf.Allocator() if variant == "membuf-shared" else None
    from membuf.codecs import LengthPrefixed

    one_codec = LengthPrefixed("leb128", max_frame=1 << 20)  # split() is synchronous: shareable

    def one_drained() -> None:
        nonlocal drained
        drained += 1
        if drained == count:
            all_drained.set()

    async def serve(stream: trio.SocketStream) -> None:
        frames = 0
        if variant == "membuf-nocodec":
            conn = membuf.Connection(stream)
            readers.append(conn)
            rx = conn.reader
            while True:
                await rx.read_exactly(await rx.read_leb128())
                frames += 1
                if frames == expected:
                    one_drained()
        elif variant.startswith("membuf"):
            conn = membuf.Connection(stream, shared)
            readers.append(conn)
            codec = one_codec if variant == "membuf-1codec" else LengthPrefixed("leb128", 1 << 20)
            async for batch in conn.reader.frames(codec, views=True, batch=True):
                frames += len(batch)
                if frames == expected:
                    one_drained()
        elif variant == "recv_into-64K":
            buf = bytearray(64 << 10)
            readers.append(buf)
            sock = stream.socket
            have = 0
            while True:
                if have == len(buf):  # a frame longer than the buffer: grow it
                    buf.extend(bytes(len(buf)))
                with memoryview(buf) as mv:
                    n = await sock.recv_into(mv[have:])
                if not n:
                    return
                have += n
                got, used = parse(buf, have)
                buf[: have - used] = buf[used:have]
                have -= used
                frames += got
                if frames == expected:
                    one_drained()
        else:
            acc = bytearray()
            readers.append(acc)
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                acc += data
                got, used = parse(acc, len(acc))
                del acc[:used]
                frames += got
                if frames == expected:
                    one_drained()

    gc.collect()
    base = rss()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=2048)
    port = listeners[0].socket.getsockname()[1]
    clients: list[trio.SocketStream] = []
    data = burst(0)[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)

        async def client() -> None:
            s = await trio.open_tcp_stream("127.0.0.1", port)
            clients.append(s)
            await s.send_all(data)

        for start in range(0, count, 100):
            async with trio.open_nursery() as opener:
                for _ in range(min(100, count - start)):
                    opener.start_soon(client)
        await all_drained.wait()
        await trio.sleep(0.2)
        gc.collect()
        out: dict[str, Any] = {"variant": variant, "connections": count,
                               "rss_drained": (rss() - base) / count}
        if variant.startswith("membuf"):
            allocs = {id(c.allocator): c.allocator for c in readers}.values()
            out["reserved_drained"] = sum(a.stats().reserved for a in allocs) / count
            out["in_use_drained"] = sum(a.stats().in_use for a in allocs) / count
            await trio.sleep(1.5)  # past idle_trim
            gc.collect()
            out["reserved_idle"] = sum(a.stats().reserved for a in allocs) / count
            out["in_use_idle"] = sum(a.stats().in_use for a in allocs) / count
            out["rss_idle"] = (rss() - base) / count
        else:
            out["buffer_bytes"] = sum(sys.getsizeof(b) for b in readers) / count
        nursery.cancel_scope.cancel()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--variant", choices=sorted(VARIANTS), help="run one variant (internal)")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if args.variant:
        print(json.dumps(trio.run(run, args.variant, args.connections)))
        return 0
    print(f"{args.connections} idle connections over loopback, load average "
          f"{os.getloadavg()[0]:.2f}")
    results = []
    for v in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--variant", v, "--connections",
                               str(args.connections)], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n{'receiver':<16} {'native B/conn':>14} {'RSS B/conn':>11}  note")
    for r in results:
        v = r["variant"]
        if v.startswith("membuf"):
            print(f"{v:<16} {r['reserved_drained']:>14,.0f} {r['rss_drained']:>11,.0f}  "
                  f"drained, before idle_trim (in_use {r['in_use_drained']:,.0f})")
            print(f"{v:<16} {r['reserved_idle']:>14,.0f} {r['rss_idle']:>11,.0f}  "
                  f"idle > idle_trim (in_use {r['in_use_idle']:,.0f})")
        else:
            print(f"{v:<16} {r['buffer_bytes']:>14,.0f} {r['rss_drained']:>11,.0f}  drained")
    print("\nnative B/conn: membuf = allocator reserved (mapped arenas); bytearray = buffer capacity."
          "\nRSS B/conn includes both ends' Python objects (client streams too).")
    for v, text in VARIANTS.items():
        print(f"  {v:<16} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
