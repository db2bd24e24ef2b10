"""Memory over a burst: RSS before, at peak and after, membuf against bytearray receivers.

Each variant runs in its own process (so heaps do not mix), with a thread
sampling the process's RSS (``/proc/self/statm``) every 10 ms:

1. *before*: trio running, the listener open, nothing received;
2. *burst*: a separate sender process (``suite_stream.py --send --hold``) opens
   ``--conns`` connections and writes a seeded burst to each (9 in 10 frames of
   16..300 B, 1 in 10 of 64 KiB, LEB128-framed); every receiver parses every
   frame and checks its checksum;
3. *idle*: the connections stay open, drained, for ``--idle`` seconds (past
   membuf's ``idle_trim`` of 1 s);
4. *closed*: every connection closed, ``gc.collect()``, half a second later.

Printed: RSS at each point, the peak, and what stayed after the burst
(after / before). Variants:

* ``membuf``: ``StreamReader.frames(codec, views=True, batch=True)``, one
  allocator per connection (the default);
* ``receive_some``: trio ``receive_some`` + bytearray accumulate + parse + ``bytes`` per frame;
* ``recv_into``: trio ``recv_into`` one reused bytearray per connection (64 KiB,
  doubled when a frame does not fit) + parse in place.

    python benchmarks/bench_memory.py [--conns 256] [--per-conn 2097152]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import CheckError, verify  # noqa: E402

VARIANTS = ("membuf", "receive_some", "recv_into")
SIZES = "burst"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Sampler(threading.Thread):
    def __init__(self, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.every, self.t0 = every, time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.marks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.t0, rss()))
            time.sleep(self.every)

    def mark(self, name: str) -> int:
        self.marks[name] = time.monotonic() - self.t0
        value = rss()
        self.samples.append((self.marks[name], value))
        return value


def parse(buf: Any, end: int, acc: list[int], copy: bool) -> int:
    """Checksum every complete LEB128 frame in buf[:end] into acc; return bytes consumed."""
    pos = 0
    frames, payload, first = acc
    while pos < end:
        b = buf[pos]
        p = pos + 1
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if p >= end:
                break
            b = buf[p]
            p += 1
            n |= (b & 0x7F) << shift
            shift += 7
        else:
            if p + n <= end:
                frame = bytes(buf[p : p + n]) if copy else buf[p : p + n]
                frames += 1
                payload += len(frame)
                first += frame[0]
                pos = p + n
                continue
        break
    acc[:] = frames, payload, first
    return pos


async def run(variant: str, conns: int, per_conn: int, idle: float, seed: int) -> dict[str, Any]:
    import trio
    from suite_stream import expected, start_sender

    import membuf
    from membuf.codecs import LengthPrefixed

    _, want = expected(SIZES, per_conn, seed)
    sampler = Sampler()
    done = 0
    drained = trio.Event()
    readers: list[Any] = []
    sums: list[list[int]] = []

    def progress(acc: list[int]) -> None:
        nonlocal done
        if acc[0] == want[0]:
            done += 1
            if done == conns:
                drained.set()

    async def serve(stream: trio.SocketStream) -> None:
        acc = [0, 0, 0]
        sums.append(acc)
        if variant == "membuf":
            rx = membuf.StreamReader(stream)
            readers.append(rx)
            codec = LengthPrefixed("leb128", max_frame=1 << 20)
            async for batch in rx.frames(codec, views=True, batch=True):
                acc[0] += len(batch)
                acc[1] += sum(map(len, batch))
                acc[2] += sum(v[0] for v in batch)
                progress(acc)
        elif variant == "recv_into":
            buf = bytearray(64 << 10)
            readers.append(buf)
            sock, have = stream.socket, 0
            while True:
                if have == len(buf):
                    buf.extend(bytes(len(buf)))
                with memoryview(buf) as mv:
                    n = await sock.recv_into(mv[have:])
                    if not n:
                        return
                    have += n
                    used = parse(mv, have, acc, copy=False)
                    mv[: have - used] = mv[used:have]
                have -= used
                progress(acc)
        else:
            data = bytearray()
            readers.append(data)
            while True:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
                del data[: parse(data, len(data), acc, copy=True)]
                progress(acc)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=conns + 16)
    port = listeners[0].socket.getsockname()[1]
    gc.collect()
    sampler.start()
    await trio.sleep(0.2)
    out: dict[str, Any] = {"variant": variant, "conns": conns, "per_conn": per_conn}
    out["before"] = sampler.mark("before")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        proc = start_sender(port, conns, SIZES, per_conn, seed, hold=True)
        await drained.wait()
        out["drained"] = sampler.mark("drained")
        for i, acc in enumerate(sums):
            verify(f"memory {variant} conn {i}", acc, want)
        if variant == "membuf":
            out["reserved_drained"] = sum(r.allocator.stats().reserved for r in readers)
        await trio.sleep(idle)
        gc.collect()
        out["idle"] = sampler.mark("idle")
        if variant == "membuf":
            out["reserved_idle"] = sum(r.allocator.stats().reserved for r in readers)
        else:
            out["buffers_idle"] = sum(sys.getsizeof(b) for b in readers)
        nursery.cancel_scope.cancel()
    for rx in readers:
        if variant == "membuf":
            await rx.aclose()
    for lst in listeners:
        await lst.aclose()
    readers.clear()
    await trio.to_thread.run_sync(proc.wait)
    gc.collect()
    await trio.sleep(0.5)
    out["closed"] = sampler.mark("closed")
    sampler.stop.set()
    sampler.join()
    out["peak"] = max(v for _, v in sampler.samples)
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step = max(1, len(sampler.samples) // 400)
    out["timeline"] = sampler.samples[::step]
    out["marks"] = sampler.marks
    return out


def run_variant(variant: str, conns: int, per_conn: int, idle: float, seed: int = 1,
                timeout: float = 300) -> dict[str, Any]:
    """One variant in a fresh process; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--conns",
           str(conns), "--per-conn", str(per_conn), "--idle", str(idle), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise CheckError(f"bench_memory {variant} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=256)
    ap.add_argument("--per-conn", type=int, default=2 << 20)
    ap.add_argument("--idle", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variant", choices=VARIANTS, help="run one variant here (internal)")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * args.conns + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2 * args.conns + 64, hard), hard))
    if args.variant:
        import trio

        res = trio.run(run, args.variant, args.conns, args.per_conn, args.idle, args.seed)
        print(json.dumps(res))
        return 0
    print(f"{args.conns} connections, burst of {args.per_conn >> 10} KiB each; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'variant':<14}{'before MB':>10}{'peak MB':>9}{'drained MB':>11}{'idle MB':>9}"
          f"{'closed MB':>10}{'idle/before':>12}{'closed/before':>14}")
    for v in VARIANTS:
        r = run_variant(v, args.conns, args.per_conn, args.idle, args.seed)
        mb = 1 << 20
        print(f"{v:<14}{r['before'] / mb:>10.1f}{r['peak'] / mb:>9.1f}{r['drained'] / mb:>11.1f}"
              f"{r['idle'] / mb:>9.1f}{r['closed'] / mb:>10.1f}{r['idle'] / r['before']:>12.2f}"
              f"{r['closed'] / r['before']:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- the suite's part ------------------------------------------------------------------------------


def idle_variant(variant: str, conns: int) -> dict[str, Any]:
    """bench_idle.py's figures for one variant (its own process), as JSON."""
    cmd = [sys.executable, str(HERE / "bench_idle.py"), "--variant", variant, "--connections",
           str(conns)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"bench_idle {variant} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(mode: Any, prog: Any) -> list[Any]:
    from _common import Detail, Part, Row

    part = Part("memory")
    conns = mode.pick(16, 256, 256)
    per = mode.pick(128 << 10, 1 << 20, 4 << 20)
    mib = 1 << 20
    burst: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        prog.step(f"memory: RSS over a burst, {v}, {conns} conns x {per >> 10} KiB")
        burst[v] = run_variant(v, conns, per, idle=mode.pick(1.2, 1.5, 1.5))
        prog.advance()
    part.data["burst"] = burst
    rows = []
    for v, r in burst.items():
        rows.append([v, f"{r['before'] / mib:.1f}", f"{r['peak'] / mib:.1f}",
                     f"{r['drained'] / mib:.1f}", f"{r['idle'] / mib:.1f}",
                     f"{r['closed'] / mib:.1f}", f"{r['idle'] / r['before']:.2f}",
                     f"{r['closed'] / r['before']:.2f}"])
    part.details.append(Detail(
        f"RSS over a burst: {conns} connections, {per >> 10} KiB each (9 in 10 frames of "
        "16..300 B, 1 in 10 of 64 KiB), one process per receiver", [
            "receiver", "before MiB", "peak MiB", "drained MiB", "idle 1.5 s MiB", "closed MiB",
            "idle/before", "closed/before"], rows))
    m = burst["membuf"]
    base = min((v for v in burst if v != "membuf"), key=lambda v: burst[v]["peak"])
    b = burst[base]
    label = f"{conns} conns x {per >> 10} KiB burst"
    part.rows.append(Row("memory", f"peak RSS, {label}", "MiB", "membuf StreamReader",
                         m["peak"] / mib, m["peak"] / mib, m["peak"] / mib, f"trio {base}",
                         b["peak"] / mib, b["peak"] / mib, b["peak"] / mib,
                         higher_is_better=False, note="one run each"))
    for point, text in (("idle", "after the burst, connections idle 1.5 s"),
                        ("closed", "after the burst, connections closed")):
        part.rows.append(Row(
            "memory", f"RSS {text}", "MiB", "membuf StreamReader", m[point] / mib,
            m[point] / mib, m[point] / mib, "RSS before the burst (start)",
            m["before"] / mib, m["before"] / mib, m["before"] / mib, higher_is_better=False,
            target=1 / 1.1, target_text="within 10% of start",
            note=f"peak {m['peak'] / mib:.1f} MiB; "
                 + ", ".join(f"{v} {burst[v][point] / burst[v]['before']:.2f}x of start"
                             for v in burst if v != "membuf")))

    # native bytes per idle connection: bench_idle.py, one process per variant
    n_idle = mode.pick(16, 256, 1000)
    idle: dict[str, dict[str, Any]] = {}
    for v in ("membuf", "recv_into-64K", "receive_some"):
        prog.step(f"memory: idle connections ({n_idle}), {v}")
        try:
            idle[v] = idle_variant(v, n_idle)
        except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            part.notes.append(f"bench_idle.py {v}: {exc}")
        prog.advance()
    part.data["idle"] = idle
    if "membuf" in idle:
        mi = idle["membuf"]
        rows = [["membuf (drained, before idle_trim)", f"{mi['reserved_drained']:,.0f}",
                 f"{mi['rss_drained']:,.0f}"],
                ["membuf (idle > idle_trim)", f"{mi['reserved_idle']:,.0f}",
                 f"{mi['rss_idle']:,.0f}"]]
        rows += [[v, f"{r['buffer_bytes']:,.0f}", f"{r['rss_drained']:,.0f}"]
                 for v, r in idle.items() if v != "membuf"]
        part.details.append(Detail(
            f"Idle connections ({n_idle}), bytes per connection (bench_idle.py): native = "
            "allocator reserved for membuf, buffer capacity for bytearray receivers; RSS "
            "includes both ends' Python objects", ["receiver", "native B/conn", "RSS B/conn"],
            rows))
        others = {v: r["buffer_bytes"] for v, r in idle.items() if v != "membuf"}
        if others:
            best = min(others, key=lambda v: others[v])
            part.rows.append(Row(
                "memory", f"native bytes per idle connection ({n_idle} conns)", "B/conn",
                "membuf StreamReader (after idle_trim)", mi["reserved_idle"],
                mi["reserved_idle"], mi["reserved_idle"], f"trio {best} (buffer capacity)",
                others[best], others[best], others[best], higher_is_better=False,
                note=f"before idle_trim {mi['reserved_drained']:,.0f} B/conn; RSS/conn "
                     f"membuf {mi['rss_idle']:,.0f} vs {idle[best]['rss_drained']:,.0f}"))
    return [part]


def steps(mode: Any) -> int:
    return len(VARIANTS) + 3
