"""Suite part: memory over a burst and on idle connections, membuf against bytearray receivers.

Each receiver runs in a fresh process (this file with ``--variant``, so heaps do
not mix), a thread sampling its RSS (``/proc/self/statm``) every 10 ms:

1. *before*: trio running, nothing received;
2. *burst*: the sender (``sender.py --hold``) writes a seeded burst to every
   connection (9 in 10 frames of 16..300 B, 1 in 10 of 64 KiB); the receivers
   parse it, every connection's checksum is verified (*drained*);
3. *idle*: the connections stay open, drained, past membuf's ``idle_trim`` (1 s);
4. *closed*: every connection closed, ``gc.collect()``, half a second later.

Besides RSS, the bytes each receiver holds per connection: for membuf its
allocators' ``reserved`` (mapped arenas, spare included), drained and after
``idle_trim``; for the bytearray receivers their buffer's capacity. Two
configurations: a big burst on 256 connections (RSS) and a small one on
1,000 idle connections (bytes per connection).

    python -m membuf bench --only memory [--quick | --check]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import contenders as c
from _common import CheckError, Detail, Mode, Part, Progress, Row, verify
from sender import accept_sender, expected

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
SIZES = "burst"
RECEIVERS = {"membuf": c.membuf_views, "receive_some": c.trio_receive_some,
             "recv_into": c.trio_recv_into}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.marks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.t0, rss()))
            time.sleep(0.01)

    def mark(self, name: str) -> int:
        self.marks[name] = time.monotonic() - self.t0
        self.samples.append((self.marks[name], rss()))
        return self.samples[-1][1]


def held(tallies: list[c.Tally]) -> float:
    """Bytes held per connection: allocator reserved (membuf), buffer capacity (bytearray)."""
    if isinstance(tallies[0].held, (bytearray, bytes)):
        return sum(sys.getsizeof(t.held) for t in tallies) / len(tallies)
    allocs = {id(t.held.allocator): t.held.allocator for t in tallies}.values()
    return sum(a.stats().reserved for a in allocs) / len(tallies)


async def child(variant: str, conns: int, per_conn: int, idle: float, seed: int) -> dict[str, Any]:
    import trio

    _, want = expected(SIZES, per_conn, seed)
    sampler = Sampler()
    gc.collect()
    sampler.start()
    await trio.sleep(0.2)
    out: dict[str, Any] = {"before": sampler.mark("before")}
    socks, proc = accept_sender(conns, SIZES, per_conn, seed, hold=True)
    streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in socks]
    tallies = [c.Tally() for _ in streams]
    async with trio.open_nursery() as nursery:
        for s, t in zip(streams, tallies, strict=True):
            nursery.start_soon(RECEIVERS[variant], s, t)
        while any(t.frames < want[0] for t in tallies):
            await trio.sleep(0.005)
        out["drained"] = sampler.mark("drained")
        for i, t in enumerate(tallies):
            verify(f"memory {variant} conn {i}", t.checksum(), want)
        out["held_drained"] = held(tallies)
        await trio.sleep(idle)
        gc.collect()
        out["idle"] = sampler.mark("idle")
        out["held_idle"] = held(tallies)
        nursery.cancel_scope.cancel()
    for s in streams:
        await s.aclose()
    tallies.clear()
    await trio.to_thread.run_sync(proc.wait)
    gc.collect()
    await trio.sleep(0.5)
    out["closed"] = sampler.mark("closed")
    sampler.stop.set()
    sampler.join()
    out["peak"] = max(v for _, v in sampler.samples)
    out["timeline"] = sampler.samples[:: max(1, len(sampler.samples) // 400)]
    out["marks"] = sampler.marks
    return out


def run_variant(variant: str, conns: int, per_conn: int, idle: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--conns",
           str(conns), "--per-conn", str(per_conn), "--idle", str(idle)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise CheckError(f"memory {variant} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(mode: Mode, prog: Progress) -> list[Part]:
    part = Part("memory")
    conns, per = mode.pick(16, 256, 256), mode.pick(128 << 10, 1 << 20, 4 << 20)
    burst: dict[str, dict[str, Any]] = {}
    for v in RECEIVERS:
        prog.step(f"memory: RSS over a burst, {v}, {conns} conns x {per >> 10} KiB")
        burst[v] = run_variant(v, conns, per, idle=1.5)
        prog.advance()
    part.data["burst"] = burst
    part.details.append(Detail(
        f"RSS over a burst: {conns} connections, {per >> 10} KiB each (9 in 10 frames of "
        "16..300 B, 1 in 10 of 64 KiB), one process per receiver",
        ["receiver", "before MiB", "peak MiB", "drained MiB", "idle 1.5 s MiB", "closed MiB",
         "idle/before", "closed/before"],
        [[v, *(f"{r[k] / MIB:.1f}" for k in ("before", "peak", "drained", "idle", "closed")),
          f"{r['idle'] / r['before']:.2f}", f"{r['closed'] / r['before']:.2f}"]
         for v, r in burst.items()]))
    m = burst["membuf"]
    base = min((v for v in burst if v != "membuf"), key=lambda v: burst[v]["peak"])
    pk = m["peak"] / MIB
    part.rows.append(Row.of("memory", f"peak RSS, {conns} conns x {per >> 10} KiB burst", "MiB",
                            "membuf StreamReader", pk, f"trio {base}",
                            burst[base]["peak"] / MIB, higher_is_better=False,
                            note="one run each"))
    for point, text in (("idle", "after the burst, connections idle 1.5 s"),
                        ("closed", "after the burst, connections closed")):
        part.rows.append(Row.of(
            "memory", f"RSS {text}", "MiB", "membuf StreamReader", m[point] / MIB,
            "RSS before the burst (start)", m["before"] / MIB, higher_is_better=False,
            target=1 / 1.1, target_text="within 10% of start",
            note=f"peak {pk:.1f} MiB; " + ", ".join(
                f"{v} {burst[v][point] / burst[v]['before']:.2f}x of start"
                for v in burst if v != "membuf")))

    n_idle, per_idle = mode.pick(16, 256, 1000), 128 << 10
    idle: dict[str, dict[str, Any]] = {}
    for v in RECEIVERS:
        prog.step(f"memory: idle connections ({n_idle}), {v}")
        idle[v] = run_variant(v, n_idle, per_idle, idle=1.5)
        prog.advance()
    part.data["idle"] = idle
    rows = []
    for v, r in idle.items():
        rss_drained, rss_idle = ((r[k] - r["before"]) / n_idle for k in ("drained", "idle"))
        if v == "membuf":
            rows.append([f"{v} (drained)", f"{r['held_drained']:,.0f}", f"{rss_drained:,.0f}"])
        rows.append([f"{v} (idle 1.5 s)", f"{r['held_idle']:,.0f}", f"{rss_idle:,.0f}"])
    part.details.append(Detail(
        f"Idle connections ({n_idle}, a {per_idle >> 10} KiB burst each), bytes per "
        "connection: held = allocator reserved for membuf, buffer capacity for the bytearray "
        "receivers; RSS growth from before the connections opened", ["receiver", "held B/conn",
                                                                      "RSS B/conn"], rows))
    mi = idle["membuf"]
    b = min((v for v in idle if v != "membuf"), key=lambda v: idle[v]["held_idle"])
    part.rows.append(Row.of(
        "memory", f"native bytes per idle connection ({n_idle} conns)", "B/conn",
        "membuf StreamReader (after idle_trim)", mi["held_idle"],
        f"trio {b} (buffer capacity)", idle[b]["held_idle"], higher_is_better=False,
        note=f"before idle_trim {mi['held_drained']:,.0f} B/conn; RSS/conn membuf "
             f"{(mi['idle'] - mi['before']) / n_idle:,.0f} vs "
             f"{(idle[b]['idle'] - idle[b]['before']) / n_idle:,.0f}"))
    return [part]


def steps(mode: Mode) -> int:
    return 2 * len(RECEIVERS)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=list(RECEIVERS), required=True)
    ap.add_argument("--conns", type=int, default=256)
    ap.add_argument("--per-conn", type=int, default=4 << 20)
    ap.add_argument("--idle", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import trio

    print(json.dumps(trio.run(child, args.variant, args.conns, args.per_conn, args.idle,
                              args.seed)))
