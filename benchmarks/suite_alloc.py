"""Suite part: allocators and the limits that need no socket.

* the C harness ``benchmarks/alloc_bench.c`` (membuf first-fit / best-fit /
  good-fit against glibc, and mimalloc / jemalloc through dlopen when their
  Debian packages are installed), run several times as separate processes; each
  cell is the median over runs; good-fit carries the native targets;
* instructions per pair of the same harness under callgrind (when valgrind is
  installed): a count, not a time, so it does not move with the machine's load;
* Python ``Allocator.malloc`` + ``free`` against ``bytearray(n)``, after
  checking that one pair makes one C call each;
* the limits: ``memcpy`` bandwidth (``mv[:] = src``) and one empty cffi call.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from _common import (
    REPO,
    CheckError,
    Detail,
    Figure,
    Mode,
    Part,
    Progress,
    Row,
    fmt,
    interleaved,
    size_label,
)

from membuf import Allocator

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
    names = [n for n in tables[0][patterns[0]] if "/" not in n]     # not the ratio columns
    if bad := [(p, n, t[p][n]) for t in tables for p in patterns for n in names
               if not t[p][n] > 0]:
        raise CheckError(f"alloc_bench: not a time: {bad[:3]}")
    med = {p: {n: Figure([t[p][n] for t in tables]) for n in names} for p in patterns}
    head = ["ns per malloc+free pair"] + names + ["glibc/membuf", "glibc/good-fit"]
    rows = []
    for p in patterns:
        rows.append([p] + [f"{fmt(med[p][n].median)} ({fmt(med[p][n].lo)}..{fmt(med[p][n].hi)})"
                           for n in names]
                    + [f"{med[p]['glibc'].median / med[p][n].median:.2f}x"
                       for n in ("membuf", "membuf-goodfit")])
    part.details.append(Detail(
        f"Allocator, C harness (median of {runs} runs at scale {scale}; each run a separate "
        "process; blocks touched at both ends)", head, rows))
    others = [n for n in names if n not in ("membuf", "membuf-bestfit", "membuf-goodfit", "glibc")]
    for p in patterns:
        m, g = med[p]["membuf"], med[p]["glibc"]
        note = ", ".join(f"{n} {fmt(med[p][n].median)}" for n in others + ["membuf-bestfit"])
        part.rows.append(Row.of(
            "allocator (C)", p, "ns/pair", "membuf first-fit", m, "glibc malloc/free", g,
            higher_is_better=False, note=note))
    for p in patterns:
        gf = med[p]["membuf-goodfit"]
        for base, target, text in _GOOD_FIT_TARGETS.get(p, [("glibc", None, "")]):
            if base not in med[p]:
                continue                                  # mimalloc not installed
            part.rows.append(Row.of(
                "allocator (C)", p, "ns/pair", "membuf good-fit", gf, _BASE_FORM[base],
                med[p][base], higher_is_better=False, target=target, target_text=text,
                note=f"first-fit {fmt(med[p]['membuf'].median)}"))
    part.data["c_harness"] = {p: {n: med[p][n].median for n in names} for p in patterns}
    part.notes += [f"{lib} not in the C harness ({why})." for lib, why in (
        ("jemalloc", "libjemalloc2 not installed or refused dlopen"),
        ("mimalloc", "libmimalloc2.0 not installed")) if lib not in names]
    return part


# The native targets (docs/benchmarks.md, "Native allocator: good-fit"): per pattern, the
# baselines good-fit is held against, the ratio it must reach (baseline ns / good-fit ns)
# and how the target reads. A bar and a goal per pattern; every other pattern has one
# row against glibc without a target.
_GOOD_FIT_TARGETS: dict[str, list[tuple[str, float | None, str]]] = {
    "pair 32 B": [("glibc", 1 / 1.5, "bar <= 1.5x glibc"), ("glibc", 1.0, "goal <= glibc")],
    "random 16..8192 B, 1k live": [("glibc", 1.0, "bar <= glibc"),
                                   ("mimalloc", 1 / 1.5, "goal <= 1.5x mimalloc")],
    "random 16..8192 B, 100k live": [("glibc", 1.0, "bar <= glibc"),
                                     ("mimalloc", 1.0, "goal <= mimalloc")],
}
_BASE_FORM = {"glibc": "glibc malloc/free", "mimalloc": "mimalloc (mi_malloc/mi_free)"}

# callgrind: instructions per pair, for these contenders (when present) and harness rows
_COUNTED = ("membuf", "membuf-goodfit", "glibc", "mimalloc", "jemalloc")
_COUNT_ROWS = {0: "pair 32 B", 2: "random 16..8192 B, 1k live", 4: "random 16..8192 B, 100k live"}


def _instructions(exe: Path, who: str, row: int, iters: int) -> int:
    """Instructions one ``alloc_bench --only`` run executes (callgrind's total)."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(exe), "--only",
         who, str(row), str(iters)], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, **_TLS_ENV))
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode or not m:
        raise CheckError(f"callgrind of alloc_bench --only {who} {row} failed: "
                         f"{proc.stderr[-500:]}")
    return int(m.group(1))


def instruction_counts(mode: Mode, prog: Progress, harness: dict[str, dict[str, float]]) -> Part:
    """Instructions per malloc+free pair under callgrind: two runs, N and 2N pairs, after
    the same set-up; the difference over N cancels set-up and warm-up. Deterministic.
    ``harness`` is the timed table (which contenders this machine has)."""
    part = Part("allocator (C), instructions")
    prog.step("allocator C harness under callgrind (instructions per pair)")
    exe = build_harness()
    if exe is None or not harness or not shutil.which("valgrind"):
        part.notes.append("valgrind not installed (or no C harness): no instruction counts.")
        prog.advance()
        return part
    iters = mode.pick(1_000, 20_000, 50_000)
    rows = mode.pick({0: _COUNT_ROWS[0]}, _COUNT_ROWS, _COUNT_ROWS)
    present = [n for n in _COUNTED if n in next(iter(harness.values()))]
    counts: dict[str, dict[str, float]] = {}
    for row, label in rows.items():
        counts[label] = {}
        for who in present:
            one, two = (_instructions(exe, who, row, k) for k in (iters, 2 * iters))
            counts[label][who] = (two - one) / iters
            if not counts[label][who] > 0:
                raise CheckError(f"callgrind: {who} on {label}: {counts[label][who]} instructions")
    for label, c in counts.items():
        note = ", ".join(f"{n} {c[n]:,.0f}" for n in present if n not in ("membuf-goodfit", "glibc"))
        part.rows.append(Row.of(
            "allocator (C)", f"{label}, instructions", "instr/pair", "membuf good-fit",
            c["membuf-goodfit"], "glibc malloc/free", c["glibc"], higher_is_better=False,
            note=f"{note} (callgrind, {iters:,} pairs)"))
    part.data["instructions"] = counts
    prog.advance()
    return part


def c_calls(fn: Callable[..., object], *args: object) -> tuple[object, int]:
    """``fn(*args)`` and the number of C functions it called (``sys.setprofile``)."""
    n = 0

    def prof(frame: object, event: str, arg: object) -> None:
        nonlocal n
        n += event == "c_call"

    sys.setprofile(prof)
    try:
        out = fn(*args)
    finally:
        sys.setprofile(None)                     # itself one c_call: see c_calls(noop)
    return out, n


def native_calls() -> tuple[int, int]:
    """C calls one ``malloc`` and one ``free`` make, in the steady state."""
    a = Allocator()
    a.free(a.malloc(64))                      # first use maps the arena
    base = c_calls(lambda: None)[1]
    mv, m = c_calls(a.malloc, 256)
    f = c_calls(a.free, mv)[1]
    return m - base, f - base


def python_alloc(mode: Mode, prog: Progress) -> Part:
    """``Allocator.malloc`` + ``free`` against ``bytearray(n)`` (allocate, zero, drop)."""
    part = Part("allocator (Python)")
    prog.step("Python malloc/free vs bytearray")
    calls = native_calls()
    if calls != (1, 1):
        raise CheckError(f"one malloc + free made {calls} C calls, expected (1, 1)")
    n, rounds = mode.pick((2_000, 1), (20_000, 5), (100_000, 11))
    a = Allocator()
    malloc, free = a.malloc, a.free
    for size in (256, 64 << 10):
        def pairs(size: int = size) -> None:
            for _ in range(n):
                free(malloc(size))

        def arrays(size: int = size) -> None:
            for _ in range(n):
                bytearray(size)

        f = {k: v.scaled(lambda s: s / n * 1e9)
             for k, v in interleaved({"membuf": pairs, "bytearray": arrays}, rounds).items()}
        part.rows.append(Row.of(
            "allocator (Python)", f"malloc+free {size_label(str(size))}", "ns/pair",
            "Allocator.malloc/free", f["membuf"], "bytearray(n) then drop", f["bytearray"],
            higher_is_better=False, note="1 C call each for malloc and free"))
    if a.stats().in_use:
        raise CheckError(f"malloc/free pairs left {a.stats().in_use} bytes in use")
    prog.advance()
    return part


def _gbs(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def limits(mode: Mode, prog: Progress) -> Part:
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
    part.rows.append(Row.of("limit", "one empty cffi call (mb_alloc_arena_count)", "ns/call",
                            "cffi API mode", Figure(ns),
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
        part.rows.append(Row.of("limit", f"memcpy {label}", "GB/s", "mv[:] = src", gbs,
                                note="wall clock"))
        prog.advance()
    a.reset()
    return part


def steps(mode: Mode) -> int:
    return mode.pick(1, 2, 5) + 1 + 1 + 3


def measure(mode: Mode, prog: Progress) -> list[Part]:
    timed = c_harness(mode, prog)
    return [timed, instruction_counts(mode, prog, timed.data.get("c_harness", {})),
            python_alloc(mode, prog), limits(mode, prog)]
