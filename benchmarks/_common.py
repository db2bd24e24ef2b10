"""Shared harness of the benchmark suite (``python -m membuf bench``).

Everything the suite's parts have in common, so that every comparison follows
the same rules (docs/benchmarks.md, "Fairness rules"):

* seeded data: :func:`frame_stream` builds one byte stream per workload from a
  seed, and its checksum ``(frames, payload bytes, sum of first payload bytes)``
  is computed from the generator, never from a contender;
* :func:`verify` checks every contender's checksum against it (and counts the
  checks, so the run can say how many it made);
* :func:`interleaved`: a warm-up run of every case, then rounds in which every
  case runs once, in rotating order, with the garbage collector paused;
* :class:`Figure`: median and min..max of the samples;
* :class:`Row`: one line of the suite's table of ratios;
* :class:`Progress`: a rich progress bar when rich is installed, plain lines
  on stderr otherwise;
* :class:`Mode` (how big a run is) and :class:`Part` (what a part returns).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

Checksum = tuple[int, int, int]


class CheckError(AssertionError):
    """A contender returned the wrong checksum, or the harness failed a self-check."""


# -- checksums ---------------------------------------------------------------------------

_checks = {"verified": 0}


def verify(name: str, got: Any, want: Any) -> None:
    """Raise :class:`CheckError` unless ``got == want``; count the check."""
    if tuple(got) != tuple(want):
        raise CheckError(f"{name}: checksum {tuple(got)} != expected {tuple(want)}")
    _checks["verified"] += 1


def checks_made() -> int:
    return _checks["verified"]


# -- seeded data ---------------------------------------------------------------------------


def uleb(n: int) -> bytes:
    """Unsigned LEB128, by hand on purpose: the expected data must not come from the code
    under test (membuf's Writer), so the generator keeps its own encoder."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def parse_sizes(spec: str) -> Callable[[random.Random], int]:
    """A frame-size draw from a spec: ``"256"`` (fixed), ``"16-300"`` (uniform),
    ``"burst"`` (9 in 10 frames of 16..300 B, 1 in 10 of 64 KiB)."""
    if spec == "burst":
        return lambda rng: 65536 if rng.random() < 0.1 else rng.randint(16, 300)
    if "-" in spec:
        lo, hi = (int(x) for x in spec.split("-"))
        return lambda rng: rng.randint(lo, hi)
    n = int(spec)
    return lambda rng: n


_PRINTABLE = bytes(range(33, 127))


def frame_stream(kind: str, sizes: str, nbytes: int, seed: int = 1,
                 min_frames: int = 1) -> tuple[bytes, Checksum]:
    """A seeded stream of whole frames of at least ``nbytes`` bytes, and its checksum.

    ``kind``: ``"leb128"`` or ``"be32"`` (length prefix + random payload) or
    ``"crlf"`` (printable lines ended by CRLF, the CRLF not counted as payload).
    """
    draw = parse_sizes(sizes)
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = frames = payload = first = 0
    while total < nbytes or frames < min_frames:
        n = draw(rng)
        if kind == "crlf":
            body = bytes(rng.choices(_PRINTABLE, k=n))
            parts += (body, b"\r\n")
            total += n + 2
        else:
            body = rng.randbytes(n)
            head = uleb(n) if kind == "leb128" else n.to_bytes(4, "big")
            parts += (head, body)
            total += len(head) + n
        frames += 1
        payload += n
        first += body[0]
    return b"".join(parts), (frames, payload, first)


def chunked(data: bytes, chunk: int = 64 << 10) -> list[bytes]:
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def size_label(spec: str) -> str:
    if "-" in spec:
        return f"{spec.replace('-', '..')} B"
    n = int(spec)
    return f"{n} B" if n < 1024 else f"{n >> 10} KiB"


# -- timing ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """Samples of one contender on one workload (seconds, or any unit)."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)

    def scaled(self, f: Callable[[float], float]) -> Figure:
        return Figure([f(x) for x in self.samples])


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of every round: each name once per round, the start rotating."""
    k = len(names)
    return [list(names[r % k:]) + list(names[: r % k]) for r in range(rounds)]


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                timer: Callable[[], float] = time.process_time) -> dict[str, Figure]:
    """Seconds per case: ``warmup`` untimed runs each, then ``rounds`` interleaved rounds.

    CPU time (``time.process_time``) by default: on a shared machine it leaves
    out the time other processes hold the core.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for order in rotations(names, rounds):
        for name in order:
            gc.collect()
            gc.disable()
            try:
                t0 = timer()
                cases[name]()
                times[name].append(timer() - t0)
            finally:
                gc.enable()
    return {name: Figure(ts) for name, ts in times.items()}


# -- rows of the table -----------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: membuf against the best baseline (or a limit alone)."""

    group: str
    workload: str
    unit: str
    membuf: str                       # contender name (form)
    value: float                      # membuf's median
    lo: float
    hi: float
    baseline: str = ""                # best baseline's name (form), or the limit's
    base_value: float | None = None
    base_lo: float | None = None
    base_hi: float | None = None
    higher_is_better: bool = True
    target: float | None = None       # ratio membuf must reach (>=)
    target_text: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])
    note: str = ""

    @classmethod
    def of(cls, group: str, workload: str, unit: str, membuf: str, m: Figure | float,
           baseline: str = "", b: Figure | float | None = None, **kw: Any) -> Row:
        """A row from Figures, or from single values (one run each)."""
        fm, fb = (x if isinstance(x, Figure) or x is None else Figure([x]) for x in (m, b))
        assert fm is not None
        base = (fb.median, fb.lo, fb.hi) if fb is not None else (None, None, None)
        return cls(group, workload, unit, membuf, fm.median, fm.lo, fm.hi, baseline, *base, **kw)

    @property
    def ratio(self) -> float | None:
        """How many times better membuf is (>1: membuf ahead), whatever the unit's direction."""
        if self.base_value is None or not self.base_value:
            return None
        if not self.value:                   # membuf at zero: infinitely better or worse
            return 0.0 if self.higher_is_better else float("inf")
        if self.higher_is_better:
            return self.value / self.base_value
        return self.base_value / self.value

    @property
    def status(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        return "met" if self.ratio >= self.target else "MISSED"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"], d["status"] = self.ratio, self.status
        return d


def fmt(x: float | None) -> str:
    """Three significant digits or so: ``1,234``, ``123``, ``12.3``, ``1.23``, ``0.123``."""
    if x is None:
        return "-"
    ax = abs(x)
    return (f"{x:,.0f}" if ax >= 1000 else f"{x:.0f}" if ax >= 100 else f"{x:.1f}" if ax >= 10
            else f"{x:.2f}" if ax >= 1 else f"{x:.3f}")


TABLE_HEAD = ("group", "workload", "unit", "membuf (form)", "median", "min..max",
              "best baseline / limit (form)", "median", "min..max", "ratio", "target", "load")


def fmt_ratio(ratio: float | None, target: float | None = None) -> str:
    """``1.23x``; three decimals where two would round across the target."""
    if ratio is None:
        return "-"
    if ratio == float("inf"):
        return "inf"
    if target is not None and (round(ratio, 2) >= target) != (ratio >= target):
        return f"{ratio:.3f}x"
    return f"{ratio:.2f}x"


def row_cells(r: Row) -> list[str]:
    ratio = r.ratio
    tgt = r.target_text or (f">= {r.target:g}x" if r.target is not None else "")
    if r.status:
        tgt = f"{tgt} {r.status}"
    return [
        r.group, r.workload, r.unit, r.membuf, fmt(r.value), f"{fmt(r.lo)}..{fmt(r.hi)}",
        r.baseline or "-", fmt(r.base_value),
        f"{fmt(r.base_lo)}..{fmt(r.base_hi)}" if r.base_lo is not None else "-",
        fmt_ratio(ratio, r.target), tgt, f"{r.load:.2f}",
    ]


def text_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """Progress on stderr: a rich bar when rich is installed and stderr is a terminal,
    else one plain line per step."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled, self._t0 = total, 0, enabled, time.monotonic()
        self._bar: Any = None
        if enabled and sys.stderr.isatty() and importlib.util.find_spec("rich"):
            import rich.progress as rp
            from rich.console import Console

            self._bar = rp.Progress(rp.SpinnerColumn(), rp.TextColumn("{task.description}"),
                                    rp.BarColumn(), rp.MofNCompleteColumn(),
                                    rp.TimeElapsedColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task("starting", total=total)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def step(self, label: str) -> None:
        """Announce what runs next."""
        if self._bar is not None:
            self._bar.update(self._task, description=label)
        elif self.enabled:
            print(f"  [{self.done}/{self.total} {time.monotonic() - self._t0:5.0f}s] {label}",
                  file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)

    def log(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)


# -- the machine -------------------------------------------------------------------------------


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cmd(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def _grep(path: str, pattern: str) -> str | None:
    try:
        m = re.search(pattern, Path(path).read_text(), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def machine() -> dict[str, Any]:
    mem = _grep("/proc/meminfo", r"MemTotal:\s*(\d+)")
    return {
        "cpu": _grep("/proc/cpuinfo", r"^model name\s*:\s*(.+)$") or "?", "cores": os.cpu_count(),
        "memory": f"{int(mem) / (1 << 20):.1f} GiB" if mem else "?",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "glibc": " ".join(platform.libc_ver()),
        "cc": _cmd(os.environ.get("CC", "cc"), "--version"),
        "libs": {name: _version(name) for name in ("membuf", "cffi", "trio", "anyio", "leb128",
                                                   "pyrtmp", "uvloop", "rich", "matplotlib")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_before": list(os.getloadavg()),
    }


# -- how big a run is, and what a part returns ---------------------------------------------------


@dataclass
class Mode:
    """``check``: tiny sizes, one round, every checksum verified; ``quick``: under 2 minutes."""

    quick: bool = False
    check: bool = False

    def pick(self, check: Any, quick: Any, full: Any) -> Any:
        return check if self.check else quick if self.quick else full

    @property
    def name(self) -> str:
        return "check" if self.check else "quick" if self.quick else "full"


@dataclass
class Detail:
    """A detail table for docs/benchmarks.md."""

    title: str
    head: list[str]
    rows: list[list[str]]


@dataclass
class Part:
    """What one part of the suite returns."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[Detail] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)      # for the plots and the JSON
