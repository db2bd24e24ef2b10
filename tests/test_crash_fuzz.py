"""A short run of the crash fuzzer (fuzz/crash.py): random API sequences, misuse included.

Each child process runs one seed's sequence of allocator, RecyclableMemory,
Reader, codec and socketpair-stream calls, with double, foreign, strided,
read-only and released views, resets, trims, dropped allocators and writes
after free mixed in, and every kept view read and written after every step.
A child must exit 0: a negative return code is a crash (a signal), 1 is an
undocumented exception or a broken content / model check, reported with the
seed, the step and the last operations (replay with the printed command).

The budget here is small and fixed (the same seeds every run): 8 children x
300 steps, a few seconds on 2 cores. ``make fuzz`` runs the long one with new
seeds. ``MEMBUF_CRASH_RUNS`` / ``MEMBUF_CRASH_STEPS`` / ``MEMBUF_CRASH_SEED``
change the budget and the seeds.
"""

from __future__ import annotations

import os
import sys

FUZZ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
if FUZZ_DIR not in sys.path:
    sys.path.insert(0, FUZZ_DIR)

import crash  # noqa: E402

RUNS = int(os.environ.get("MEMBUF_CRASH_RUNS", "8"))
STEPS = int(os.environ.get("MEMBUF_CRASH_STEPS", "300"))
BASE_SEED = int(os.environ.get("MEMBUF_CRASH_SEED", "0"))


def test_every_child_exits_cleanly() -> None:
    report = crash.drive(RUNS, STEPS, budget_seconds=120, jobs=min(2, os.cpu_count() or 1),
                         base_seed=BASE_SEED, child_timeout=60)
    text = report.text(["--steps", str(STEPS)])
    print(text)
    assert len(report.results) == RUNS, text
    assert not report.failures, text
    assert report.steps == RUNS * STEPS, text


def test_a_child_is_deterministic() -> None:
    """One seed, run twice, takes the same path (same counts in its summary line)."""
    first, second = (crash.drive(1, 120, budget_seconds=60, jobs=1, base_seed=BASE_SEED + 100)
                     for _ in range(2))
    assert not first.failures and not second.failures, first.text() + second.text()
    assert first.results[0].summary == second.results[0].summary
