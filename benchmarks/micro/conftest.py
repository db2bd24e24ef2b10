"""Shared helpers of the micro-benchmarks (``make bench-micro``; docs/benchmarks.md, last section).

Every benchmark does a fixed batch of work per round (1000 calls, or 1000 frames,
...) and declares it through the ``micro`` fixture, so that:

* the table shows the time of **one call**: ``pytest_benchmark_scale_unit``
  below divides each group by its per-round work (the header reads
  ``time in ns per call, rounds of 1000 calls``); a group whose rows do not all
  declare the same work falls back to pytest-benchmark's per-round times;
* the saved JSON keeps it: ``extra_info`` holds ``per_round``, ``unit`` and
  ``per_call_ns`` (min and median), and every saved run records the load
  average at its start and end (``loadavg``);
* a contender and its baseline always sit in the same ``group`` of the same run,
  and each test asserts that it computed the same result as the others in its
  group (checked on the result of the last timed round).

Rounds run through ``benchmark.pedantic``: a ``setup`` (not timed) makes fresh
state for each round (a new Reader over the same bytes, ...), so nothing has
to be rewound inside the timed code. The number of rounds is calibrated the
way plain ``benchmark(...)`` does it: one round is timed first, then enough
rounds to fill ``--benchmark-max-time`` (at least ``--benchmark-min-rounds``).
The garbage collector is paused during rounds by default (the same as
``--benchmark-disable-gc``). With ``--benchmark-disable`` every test runs its
round once and checks the result (``make test-micro``).
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Iterable
from math import ceil
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark import plugin as _pb_plugin

from membuf import Memory

# the suite's baselines (benchmarks/contenders.py) and its data generator's encoder are
# defined once and shared with this layer
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import uleb as _uleb  # noqa: E402

MAX_ROUNDS = 10_000
WARMUP_ROUNDS = 2


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


_LOAD: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Pause the GC during rounds whatever the command line says (there is no
    # --benchmark-enable-gc); tryfirst, so pytest-benchmark reads it when it starts.
    if hasattr(config.option, "benchmark_disable_gc"):
        config.option.benchmark_disable_gc = True
    _LOAD["start"] = _loadavg()


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    output_json["loadavg"] = {"start": _LOAD.get("start", "n/a"), "end": _loadavg()}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.getoption("benchmark_disable", False):
        terminalreporter.write_line(
            f"load average (1/5/15 min): {_LOAD.get('start', 'n/a')} at start, {_loadavg()} at end"
        )


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def _work(bench: dict[str, Any]) -> tuple[int, str] | None:
    info = bench.get("extra_info") or {}
    n, unit = info.get("per_round"), info.get("unit")
    return (n, unit) if isinstance(n, int) and n > 0 and isinstance(unit, str) else None


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_scale_unit(
    config: Any, unit: str, benchmarks: list[dict[str, Any]], best: Any, worst: Any, sort: Any
) -> tuple[str, float]:
    """Per-call times for a group whose rows all declare the same work per round.

    Also used by ``pytest-benchmark compare`` when it runs from this directory
    (it calls this function directly, hence the explicit fallback to the default).
    An explicit ``--benchmark-time-unit`` (or ``--time-unit``) keeps per-round times.
    """
    explicit = config is not None and config.getoption("benchmark_time_unit", None) not in (None, "auto")
    works = {_work(b) for b in benchmarks}
    if not explicit and len(works) == 1 and None not in works:
        n, what = next(iter(works))          # type: ignore[misc]
        if unit == "seconds":                # the table prints "Name (time in {label}s)"
            return f"ns per {what}, rounds of {n} {_plural(what)[:-1]}", 1e9 / n
        if unit == "operations":             # OPS: million calls (frames, ...) per second
            return "M", n / 1e6
    return _pb_plugin.pytest_benchmark_scale_unit(
        config=config, unit=unit, benchmarks=benchmarks, best=best, worst=worst, sort=sort
    )


@pytest.fixture
def micro(benchmark: Any, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``micro(target, setup, group=..., n=..., unit="call")``: time ``target`` per round.

    ``setup()`` returns the positional arguments of one round (a tuple), made
    fresh for every round and not timed; ``target(*args)`` does ``n`` units of
    work and returns what the test checks. Returns the last round's result.
    """
    config = request.config

    def run(
        target: Callable[..., Any],
        setup: Callable[[], tuple[Any, ...]],
        *,
        group: str,
        n: int,
        unit: str = "call",
    ) -> Any:
        benchmark.group = group
        benchmark.extra_info.update(per_round=n, unit=unit)
        rounds = 1
        if not benchmark.disabled:
            args = setup()
            t0 = time.perf_counter()
            target(*args)
            once = max(time.perf_counter() - t0, 1e-7)
            del args
            max_time = float(config.getoption("benchmark_max_time"))
            min_rounds = int(config.getoption("benchmark_min_rounds"))
            rounds = min(MAX_ROUNDS, max(min_rounds, ceil(max_time / once)))
        result = benchmark.pedantic(
            target, setup=lambda: (setup(), {}), rounds=rounds, warmup_rounds=WARMUP_ROUNDS
        )
        if benchmark.stats is not None:
            st = benchmark.stats.stats
            benchmark.extra_info["per_call_ns"] = {
                "min": round(st.min / n * 1e9, 2),
                "median": round(st.median / n * 1e9, 2),
            }
        return result

    return run


def digest(items: Iterable[Any]) -> tuple[int, int, int]:
    """(count, total bytes, crc32 of every byte in order) of bytes-like items or Memory."""
    count = total = 0
    crc = 0
    for item in items:
        data = item.to_bytes() if isinstance(item, Memory) else bytes(item)
        count += 1
        total += len(data)
        crc = zlib.crc32(data, crc)
    return count, total, crc


@pytest.fixture(scope="session")
def check() -> Callable[[Iterable[Any]], tuple[int, int, int]]:
    """The ``digest`` function, for tests: compare every row of a group with it."""
    return digest


@pytest.fixture(scope="session")
def uleb() -> Callable[[int], bytes]:
    """The unsigned LEB128 encoding of an int (the suite's generator's, plain Python)."""
    return _uleb


@pytest.fixture(scope="session")
def leb128_frames() -> Callable[..., tuple[bytes, list[bytes]]]:
    """``leb128_frames(count, lo, hi, seed=1)``: LEB128-prefixed frames of lo..hi bytes.

    Returns the stream and the list of bodies (the expected frames).
    """
    import random

    cache: dict[tuple[int, int, int, int], tuple[bytes, list[bytes]]] = {}

    def make(count: int, lo: int, hi: int, seed: int = 1) -> tuple[bytes, list[bytes]]:
        key = (count, lo, hi, seed)
        if key not in cache:
            rng = random.Random(seed)
            bodies = [rng.randbytes(rng.randint(lo, hi)) for _ in range(count)]
            cache[key] = b"".join(_uleb(len(b)) + b for b in bodies), bodies
        return cache[key]

    return make


@pytest.fixture(scope="session")
def crlf_lines() -> Callable[..., tuple[bytes, list[bytes]]]:
    """``crlf_lines(count, lo, hi, seed=1)``: printable lines of lo..hi bytes, each + CRLF."""
    import random

    printable = bytes(range(0x20, 0x7F))

    def make(count: int, lo: int, hi: int, seed: int = 1) -> tuple[bytes, list[bytes]]:
        rng = random.Random(seed)
        lines = [bytes(rng.choices(printable, k=rng.randint(lo, hi))) for _ in range(count)]
        return b"".join(line + b"\r\n" for line in lines), lines

    return make
