"""Python-level malloc + free against bytearray, same run, interleaved rounds.

    .venv/bin/python benchmarks/bench_alloc.py [--quick]

Prints ns per pair (median and min-max over rounds) and the ratio, and counts
the native calls one malloc/free pair makes (the design keeps it at one each).
The C-level comparison with glibc is benchmarks/alloc_bench.c.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import membuf.allocator as allocator_module
from membuf import Allocator


def time_per_op(fn: Callable[[int], None], n: int) -> float:
    t = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t) / n


def membuf_pairs(size: int) -> Callable[[int], None]:
    a = Allocator()
    malloc, free = a.malloc, a.free

    def run(n: int) -> None:
        for _ in range(n):
            free(malloc(size))

    return run


def bytearray_pairs(size: int) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            bytearray(size)     # allocate (zero-filled) and drop: CPython's pair

    return run


def count_native_calls() -> tuple[int, int]:
    """Native calls made by one malloc and one free (wrapping the bound entry points)."""
    calls = {"malloc": 0, "free": 0}
    real_malloc, real_free = allocator_module._native_malloc, allocator_module._native_free

    def counting_malloc(h: object, n: int) -> int:
        calls["malloc"] += 1
        return real_malloc(h, n)

    def counting_free(h: object, p: object, n: int) -> int:
        calls["free"] += 1
        return real_free(h, p, n)

    a = Allocator()
    a.free(a.malloc(64))                     # first use maps the arena: not the steady state
    allocator_module._native_malloc, allocator_module._native_free = counting_malloc, counting_free
    try:
        for _ in range(100):
            a.free(a.malloc(256))
    finally:
        allocator_module._native_malloc, allocator_module._native_free = real_malloc, real_free
    return calls["malloc"] // 100, calls["free"] // 100


def measure(quick: bool = False) -> list[dict[str, object]]:
    """Rows of {size, membuf_ns, bytearray_ns, ratio, ...} for 256 B and 64 KiB."""
    rows = []
    rounds, n = (5, 20_000) if quick else (11, 100_000)
    for size in (256, 64 << 10):
        contenders = {"membuf": membuf_pairs(size), "bytearray": bytearray_pairs(size)}
        for fn in contenders.values():
            time_per_op(fn, n // 10)                         # warm-up
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(rounds):                              # interleaved rounds
            for name, fn in contenders.items():
                samples[name].append(time_per_op(fn, n))
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({
            "size": size,
            "membuf_ns": med["membuf"], "bytearray_ns": med["bytearray"],
            "membuf_range": (min(samples["membuf"]), max(samples["membuf"])),
            "bytearray_range": (min(samples["bytearray"]), max(samples["bytearray"])),
            "ratio": med["membuf"] / med["bytearray"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    m, f = count_native_calls()
    print(f"native calls per pair: malloc {m}, free {f}")
    print(f"{'size':>8} {'membuf ns':>12} {'bytearray ns':>14} {'membuf/bytearray':>18}")
    for r in measure(args.quick):
        print(f"{r['size']:>8} {r['membuf_ns']:>12.1f} {r['bytearray_ns']:>14.1f} {r['ratio']:>17.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
