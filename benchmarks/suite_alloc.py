"""Suite part: allocators and the limits that need no socket.

* the C harness ``benchmarks/alloc_bench.c`` (membuf first-fit / best-fit against
  glibc, and mimalloc / jemalloc through dlopen when their Debian packages are
  installed), run several times as separate processes; each cell is the median
  over runs;
* Python ``Allocator.malloc`` + ``free`` against ``bytearray(n)``
  (``bench_alloc.measure``), and the native calls one pair makes;
* the limits: ``memcpy`` bandwidth (``mv[:] = src``) and one empty cffi call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import cast

from _common import REPO, CheckError, Detail, Figure, Mode, Part, Progress, Row, fmt, interleaved

HARNESS = REPO / "benchmarks" / "alloc_bench"
# jemalloc's shared library uses initial-exec TLS: dlopen needs room in the static TLS block
_TLS_ENV = {"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=65536"}


def build_harness() -> Path | None:
    src = REPO / "benchmarks" / "alloc_bench.c"
    if HARNESS.exists() and HARNESS.stat().st_mtime >= src.stat().st_mtime:
        return HARNESS
    if shutil.which("make") and shutil.which(os.environ.get("CC", "cc")):
        proc = subprocess.run(["make", "-s", "benchmarks/alloc_bench"], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode == 0 and HARNESS.exists():
            return HARNESS
    return None


def parse_harness(text: str) -> dict[str, dict[str, float]]:
    """``{pattern: {contender: ns}}`` from alloc_bench's table (label in the first 30 columns)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    names = lines[0][30:].split()
    out: dict[str, dict[str, float]] = {}
    for ln in lines[1:]:
        values = [float(v) for v in ln[30:].split()]
        out[ln[:30].strip()] = dict(zip(names, values, strict=True))
    return out


def c_harness(mode: Mode, prog: Progress) -> Part:
    part = Part("allocator (C)")
    exe = build_harness()
    if exe is None:
        part.notes.append("C harness not built (no make/cc): allocator rows skipped.")
        return part
    runs, scale = mode.pick((1, 0.001), (2, 0.05), (5, 1.0))
    env = dict(os.environ, **_TLS_ENV)
    tables = []
    for i in range(runs):
        prog.step(f"allocator C harness, run {i + 1}/{runs} (scale {scale})")
        proc = subprocess.run([str(exe), str(scale)], capture_output=True, text=True, env=env,
                              timeout=600)
        if proc.returncode:                               # e.g. jemalloc refusing to dlopen
            proc = subprocess.run([str(exe), str(scale)], capture_output=True, text=True,
                                  timeout=600)
        if proc.returncode:
            raise CheckError(f"alloc_bench failed ({proc.returncode}): {proc.stderr[-500:]}")
        tables.append(parse_harness(proc.stdout))
        prog.advance()
    patterns = list(tables[0])
    names = [n for n in tables[0][patterns[0]] if n != "membuf/glibc"]
    for t in tables:
        for p in patterns:
            for n in names:
                if not t[p][n] > 0:
                    raise CheckError(f"alloc_bench: {p} {n} = {t[p][n]}")
    med = {p: {n: Figure([t[p][n] for t in tables]) for n in names} for p in patterns}
    head = ["ns per malloc+free pair"] + names + ["glibc/membuf"]
    rows = []
    for p in patterns:
        rows.append([p] + [f"{fmt(med[p][n].median)} ({fmt(med[p][n].lo)}..{fmt(med[p][n].hi)})"
                           for n in names]
                    + [f"{med[p]['glibc'].median / med[p]['membuf'].median:.2f}x"])
    part.details.append(Detail(
        f"Allocator, C harness (median of {runs} runs at scale {scale}; each run a separate "
        "process; blocks touched at both ends)", head, rows))
    others = [n for n in names if n not in ("membuf", "membuf-bestfit", "glibc")]
    for p in patterns:
        m, g = med[p]["membuf"], med[p]["glibc"]
        note = ", ".join(f"{n} {fmt(med[p][n].median)}" for n in others + ["membuf-bestfit"])
        target = p.startswith("random") and "1k" in p
        part.rows.append(Row(
            "allocator (C)", p, "ns/pair", "membuf first-fit", m.median, m.lo, m.hi,
            "glibc malloc/free", g.median, g.lo, g.hi, higher_is_better=False,
            target=1.0 if target else None, target_text="<= glibc" if target else "",
            note=note))
    part.data["c_harness"] = {p: {n: med[p][n].median for n in names} for p in patterns}
    if "jemalloc" not in names:
        part.notes.append("jemalloc not in the C harness (libjemalloc2 not installed or refused "
                          "dlopen).")
    if "mimalloc" not in names:
        part.notes.append("mimalloc not in the C harness (libmimalloc2.0 not installed).")
    return part


def python_alloc(mode: Mode, prog: Progress) -> Part:
    import bench_alloc

    part = Part("allocator (Python)")
    prog.step("Python malloc/free vs bytearray")
    calls = bench_alloc.count_native_calls()
    if calls != (1, 1):
        raise CheckError(f"one malloc + free made {calls} native calls, expected (1, 1)")
    rows = bench_alloc.measure(quick=mode.quick or mode.check)
    prog.advance()
    for r in rows:
        size = int(r["size"])  # type: ignore[call-overload]
        label = f"{size} B" if size < 1024 else f"{size >> 10} KiB"
        mlo, mhi = cast(tuple[float, float], r["membuf_range"])
        blo, bhi = cast(tuple[float, float], r["bytearray_range"])
        part.rows.append(Row(
            "allocator (Python)", f"malloc+free {label}", "ns/pair", "Allocator.malloc/free",
            float(r["membuf_ns"]), mlo, mhi,  # type: ignore[arg-type]
            "bytearray(n) then drop", float(r["bytearray_ns"]), blo, bhi,  # type: ignore[arg-type]
            higher_is_better=False, note="1 native call each for malloc and free"))
    return part


def _gbs(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def limits(mode: Mode, prog: Progress) -> Part:
    from membuf import Allocator
    from membuf._native import lib

    part = Part("limits")
    rounds = mode.pick(1, 5, 9)
    # one empty cffi call: a trivial native entry point, loop overhead subtracted
    prog.step("limit: one empty cffi call")
    n = mode.pick(2_000, 200_000, 1_000_000)
    a = Allocator()
    h, call = a._h, lib.mb_alloc_arena_count

    def calls() -> None:
        for _ in range(n):
            call(h)

    def empty() -> None:
        for _ in range(n):
            pass

    f = interleaved({"call": calls, "empty": empty}, rounds)
    ns = [(c - e) / n * 1e9 for c, e in zip(f["call"].samples, f["empty"].samples, strict=True)]
    ns_fig = Figure(ns)
    part.rows.append(Row("limit", "one empty cffi call (mb_alloc_arena_count)", "ns/call",
                         "cffi API mode", ns_fig.median, ns_fig.lo, ns_fig.hi,
                         note=f"loop overhead {f['empty'].median / n * 1e9:.1f} ns subtracted"))
    prog.advance()
    # memcpy: mv[:] = src, in cache and far out of it
    for size, label in ((64 << 10, "64 KiB (in cache)"), (64 << 20, "64 MiB")):
        prog.step(f"limit: memcpy {label}")
        size = size if not mode.check else min(size, 1 << 20)
        src = bytearray(os.urandom(1 << 16)) * (size >> 16)
        dst = bytearray(size)
        mv = memoryview(dst)
        reps = max(1, mode.pick(4 << 20, 256 << 20, 1 << 30) // size)

        def copy(mv: memoryview = mv, src: bytearray = src, reps: int = reps) -> None:
            for _ in range(reps):
                mv[:] = src

        g = interleaved({"copy": copy}, rounds, timer=time.perf_counter)["copy"]
        gbs = g.scaled(partial(_gbs, size * reps))
        if dst != src:
            raise CheckError("memcpy: destination differs from source")
        part.rows.append(Row("limit", f"memcpy {label}", "GB/s", "mv[:] = src",
                             gbs.median, gbs.lo, gbs.hi, note="wall clock"))
        prog.advance()
    a.reset()
    return part


def steps(mode: Mode) -> int:
    return mode.pick(1, 2, 5) + 1 + 3


def measure(mode: Mode, prog: Progress) -> list[Part]:
    return [c_harness(mode, prog), python_alloc(mode, prog), limits(mode, prog)]


if __name__ == "__main__":
    m = Mode(quick="--quick" in sys.argv, check="--check" in sys.argv)
    with Progress(steps(m)) as p:
        parts = measure(m, p)
    for part in parts:
        for r in part.rows:
            print(r.group, r.workload, fmt(r.value), r.unit, fmt(r.base_value), r.ratio, r.status)
