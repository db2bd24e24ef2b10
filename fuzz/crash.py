"""Crash fuzzer: random membuf API sequences, misuse included, each run in a child process.

Two modes:

* child: ``python fuzz/crash.py --seed S --steps N [--debug-share P] [--wild] [--strict]
  [--verbose]`` runs one sequence and prints one summary line, ``crash child seed=S:
  steps=N ...``. The sequence is a function of the seed (automatic garbage collection is
  off: collections happen at the steps that ask for one), so the same command replays it.
  Exit code 0: no finding; 1: a finding, described on stderr with the seed, the step, the
  operation and the last steps (``MEMBUF_CRASH_TRAIL=N`` shows more); a negative code:
  the process died of a signal (the segfault this fuzzer exists to catch).
* driver: ``python fuzz/crash.py --runs R --budget-seconds T [--steps N] [--jobs J]
  [--base-seed B]`` runs children (``subprocess``, ``--jobs`` at a time, faulthandler
  on), starts none after ``T`` seconds, and prints ``crash fuzz: R runs, K steps, C
  crashes`` and, for each failing child, its seed, return code, the step it was in (a
  progress file the child rewrites with one ``pwrite`` per step, so it survives a
  segfault), the tail of its stderr and the replay command. Exit code 0 when no child
  failed. Seeds are B+1..B+R (B from the clock by default).

What a child does. Up to three allocators (normal and ``debug=True``, various arena
sizes, ``max_bytes`` or not) and everything built on them, driven at random:

* Allocator: malloc (odd sizes, 0, negative, bool, float, too large), free, free_rest,
  borrow, owns, stats, trim, reset, check, and dropping it (``del a; gc.collect()``)
  while views, RecyclableMemory objects and stream readers still use it;
* RecyclableMemory: next_n, push, push_owned (of its own bytes, of other bytes, twice),
  recycle, clear, dropping it unrecycled (its finalizer frees), clip_front through a
  Reader with no release, with ``allocator.free`` and with a collecting callback;
* Reader, over Memory, RecyclableMemory and stream results: every read, peek, take,
  range, skip, unread, find, read_until, read_into, clip_front and transaction;
* codecs: LengthPrefixed (leb128, be16, be24, be32) and Delimited, ``split`` and
  ``split_views`` (with and without an allocator), over native segments;
* streams: a ``socket.socketpair()`` wrapped as a ``trio.SocketStream`` read by a
  StreamReader (its own allocator or a shared one): read_exactly, read_frame,
  read_until, read_byte/be/le/leb128, peek, skip, ``frames`` (Memory or views, one by
  one or in batches), cancelled reads, end of stream, ``release``/``aclose`` and
  dropping the reader, at random points;
* misuse of views: double free, foreign free (another allocator, bytes, bytearray,
  non-buffers), strided (``mv[::2]``), read-only (``mv.toreadonly()``) and released
  (``mv.release()``) views given to free, push, push_owned and owns; writes after free
  (debug allocators).

After every step every view kept so far is touched: read, and written (a new pattern
where the bytes are still promised to the test, the same bytes back where they are not).

Oracles. The exit code (a crash is a negative code). Only documented exceptions may
escape a call: FreeError, MemoryLimitError, ValueError, TypeError, NeedMore,
MalformedError, UseAfterFreeError (a debug allocator after a deliberate write after
free), trio.ClosedResourceError (a closed reader), MembufError from a Reader left
behind a clip; a Reader call that raises leaves ``offset`` and ``len`` as they were.
Content: bytes from the stream (read results, frames, batches) equal
what was sent for as long as they are held; malloc'd bytes not freed or reset hold
what was last written into them (also after the allocator is dropped). A model of
the bytes the test owns per allocator also says which frees must succeed and which
must be refused, that malloc never returns bytes still owned or still viewed, that
``stats()`` is consistent, and what every Reader and codec call returns.

Frees the model cannot follow are skipped, not made: a free (double, through a stale
view) of bytes that are allocated but not the test's, that is bytes a StreamReader
now holds. Such a free is accepted by the allocator (explicit frees are the user's
statement) and the chunk gives the same bytes back again when it dies, so what else
it frees depends on garbage collection timing. ``--wild`` makes them anyway (content
checks are then off for that allocator's bytes).

KNOWN_BUGS lists findings in membuf that are tolerated (counted in the summary line
as ``known=...``) until they are fixed; ``--strict`` turns each into a failure. It is
empty at present: every finding fails the run.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FUZZ_DIR = os.path.dirname(os.path.abspath(__file__))
if FUZZ_DIR not in sys.path:
    sys.path.insert(0, FUZZ_DIR)

from fuzz_codecs import encode_leb, reference  # noqa: E402
from fuzz_reader import leb128  # noqa: E402

from membuf import (  # noqa: E402
    Allocator,
    FreeError,
    MalformedError,
    MembufError,
    Memory,
    MemoryLimitError,
    NeedMore,
    Reader,
    RecyclableMemory,
    StreamReader,
    UseAfterFreeError,
    _core,  # noqa: E402
)
from membuf._native import ffi, lib  # noqa: E402
from membuf.codecs import Delimited, Framer, LengthPrefixed  # noqa: E402

# Known findings, tolerated unless --strict (each is counted when it shows up): none now.
# Fixed, and failures again (each with a regression test in tests/test_crash_fuzz.py or the
# module's own tests): recycle-uaf-keeps-pairs, rm-reset-clip-negative-range,
# reader-released-segment, reader-find-indexerror, finalizer-uaf-unraisable (and before
# them split-views and debug-batch).
KNOWN_BUGS: dict[str, str] = {}

CHILD_TIMEOUT = 120.0     # seconds before the driver kills a child (reported as a hang)


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


@dataclass
class ChildResult:
    seed: int
    returncode: int | None      # None: killed after CHILD_TIMEOUT (a hang)
    steps: int
    summary: str
    stderr: str
    seconds: float
    last_step: str = ""         # "step op" the child was in (from its progress file)

    @property
    def failed(self) -> bool:
        return self.returncode != 0


@dataclass
class DriveReport:
    results: list[ChildResult]
    seconds: float

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.results)

    @property
    def failures(self) -> list[ChildResult]:
        return [r for r in self.results if r.failed]

    def text(self, child_args: list[str] | None = None) -> str:
        lines = [
            f"crash fuzz: {len(self.results)} runs, {self.steps} steps, "
            f"{len(self.failures)} crashes ({self.seconds:.1f} s)"
        ]
        known = Counter[str]()
        for r in self.results:
            for part in r.summary.split():
                if part.startswith("known="):
                    for item in part[6:].split(","):
                        if ":" in item:
                            name, _, count = item.partition(":")
                            known[name] += int(count)
        if known:
            lines.append("  known bugs tolerated: " + ", ".join(f"{k} x{v}" for k, v in known.items()))
        for r in self.failures:
            code = "hang (killed)" if r.returncode is None else f"return code {r.returncode}"
            if r.returncode is not None and r.returncode < 0:
                code += " (killed by a signal: a crash)"
            where = f" at step {r.last_step}" if r.last_step else ""
            lines.append(f"  FAILED seed={r.seed}: {code}{where}")
            tail = r.stderr.strip().splitlines()[-30:]
            lines += ["    | " + t for t in tail]
            replay = " ".join([sys.executable, os.path.abspath(__file__), "--seed", str(r.seed)]
                              + list(child_args or []))
            lines.append(f"    replay: {replay}")
        return "\n".join(lines)


def drive(runs: int, steps: int, *, budget_seconds: float, jobs: int | None = None,
          base_seed: int = 0, child_args: list[str] | None = None,
          child_timeout: float = CHILD_TIMEOUT) -> DriveReport:
    """Run up to ``runs`` children (seeds base_seed+1, +2, ...), ``jobs`` at a time.

    No child is started once ``budget_seconds`` have passed; those running finish.
    A child still running after ``child_timeout`` seconds is killed (a hang).
    """
    jobs = jobs or os.cpu_count() or 2
    argv = [sys.executable, os.path.abspath(__file__), "--steps", str(steps)]
    argv += list(child_args or [])
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    start = time.monotonic()
    results: list[ChildResult] = []
    running: list[tuple[subprocess.Popen[bytes], int, float, Any, Any, Any]] = []
    launched = 0
    while True:
        while launched < runs and len(running) < jobs and time.monotonic() - start < budget_seconds:
            launched += 1
            seed = base_seed + launched
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            progress = tempfile.NamedTemporaryFile(prefix="membuf-crash-", delete=False)
            progress.close()
            proc = subprocess.Popen(argv + ["--seed", str(seed), "--progress", progress.name],
                                    stdout=out, stderr=err, env=env)
            running.append((proc, seed, time.monotonic(), out, err, progress.name))
        if not running:
            break
        time.sleep(0.005)
        for item in list(running):
            proc, seed, t0, out, err, progress_path = item
            rc = proc.poll()
            if rc is None:
                if time.monotonic() - t0 < child_timeout:
                    continue
                proc.kill()
                proc.wait()
            running.remove(item)
            out.seek(0)
            err.seek(0)
            text, errtext = out.read().decode(errors="replace"), err.read().decode(errors="replace")
            out.close()
            err.close()
            summary = next((ln for ln in text.splitlines() if ln.startswith("crash child")), "")
            done = 0
            for part in summary.split():
                if part.startswith("steps="):
                    done = int(part[6:])
            with open(progress_path, "rb") as f:
                last = f.read().decode(errors="replace").strip()
            os.unlink(progress_path)
            results.append(ChildResult(seed, rc, done, summary, errtext, time.monotonic() - t0,
                                       last))
    results.sort(key=lambda r: r.seed)
    return DriveReport(results, time.monotonic() - start)


# ---------------------------------------------------------------------------
# child
# ---------------------------------------------------------------------------


class Finding(AssertionError):
    """An oracle failed: a bug (or a model error) to report with the seed and step."""


class Ranges:
    """Disjoint half-open address ranges, sorted; touching ranges are merged."""

    __slots__ = ("iv",)

    def __init__(self) -> None:
        self.iv: list[tuple[int, int]] = []

    def add(self, s: int, e: int) -> None:
        if s >= e:
            return
        out = []
        for a, b in self.iv:
            if b < s or a > e:
                out.append((a, b))
            else:
                s, e = min(a, s), max(b, e)
        out.append((s, e))
        out.sort()
        self.iv = out

    def remove(self, s: int, e: int) -> None:
        if s >= e:
            return
        out = []
        for a, b in self.iv:
            if b <= s or a >= e:
                out.append((a, b))
                continue
            if a < s:
                out.append((a, s))
            if b > e:
                out.append((e, b))
        self.iv = out

    def covers(self, s: int, e: int) -> bool:
        return s >= e or any(a <= s and e <= b for a, b in self.iv)

    def overlaps(self, s: int, e: int) -> bool:
        return s < e and any(a < e and s < b for a, b in self.iv)

    def total(self) -> int:
        return sum(b - a for a, b in self.iv)

    def clear(self) -> None:
        self.iv = []


def child_main(seed: int, steps: int, debug_share: float, wild: bool, strict: bool,
               verbose: bool = False, progress: str | None = None) -> int:
    import trio

    fz = Child(seed, steps, debug_share, wild, strict)
    if progress:
        fz.progress_fd = os.open(progress, os.O_WRONLY)
    try:
        trio.run(fz.run)
    except Finding as exc:
        print(f"FINDING seed={seed} step={fz.step} op={fz.op}: {exc}", file=sys.stderr)
        print(fz.trail(), file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - anything undocumented is the finding
        print(f"UNEXPECTED {type(exc).__name__} seed={seed} step={fz.step} op={fz.op}: {exc}",
              file=sys.stderr)
        traceback.print_exc()
        print(fz.trail(), file=sys.stderr)
        return 1
    print(fz.summary())
    if verbose:
        print("ops:", dict(sorted(fz.ops.items())))
        print("documented errors:", dict(sorted(fz.errors.items())))
        print("outcomes:", dict(sorted(fz.outcomes.items())))
        print("skipped:", dict(fz.skipped))
    sys.stdout.flush()
    return 0


DOCUMENTED: tuple[type[BaseException], ...] = (
    FreeError, MemoryLimitError, ValueError, TypeError, NeedMore, MalformedError,
)
MAX_RECORDS = 40
MAX_RMS = 6
MAX_ALLOCS = 3


class AllocModel:
    """What the test knows about one allocator: the bytes it owns there."""

    def __init__(self, label: int, alloc: Allocator, debug: bool, max_bytes: int | None) -> None:
        self.label = label
        self.alloc: Allocator | None = alloc     # None once the test dropped it
        self.debug = debug
        self.max_bytes = max_bytes
        self.owned = Ranges()                    # malloc'd by the test, not freed since
        self.waf = False                         # a deliberate write after free may be pending
        self.tainted = False                     # a wild free happened: content checks off
        # a weak reference only: dropping the allocator must really drop it (its native
        # allocator is deleted once no RecyclableMemory, reader or auto chunk holds it)
        self.ref = weakref.ref(alloc)

    def natively_allocated(self, addr: int, n: int) -> bool:
        """Every byte of [addr, addr+n) is allocated in the native allocator (anyone's);
        False once the allocator is gone."""
        a = self.alloc or self.ref()
        return bool(n) and a is not None and bool(lib.mb_alloc_owns(a._h, ffi.cast("char *", addr),
                                                                    n))

    def gone(self) -> bool:
        return self.alloc is None and self.ref() is None

    def __repr__(self) -> str:
        return f"A{self.label}{'d' if self.debug else ''}"


class Rec:
    """A view kept by the test, with the bytes it must hold where they are still promised."""

    __slots__ = ("id", "kind", "view", "addr", "n", "am", "want", "claimed", "derived",
                 "released", "pinned")

    def __init__(self, rid: int, kind: str, view: memoryview, am: AllocModel | None,
                 want: bytes | None = None) -> None:
        self.id = rid
        self.kind = kind                  # "malloc" (the test frees it) or "stream"
        self.view = view
        self.n, self.addr = _core.extent(view) if len(view) else (0, 0)
        self.am = am
        self.want = bytearray(view.tobytes() if want is None else want)
        self.claimed = Ranges()
        self.claimed.add(self.addr, self.addr + self.n)
        self.derived: list[tuple[str, memoryview, int]] = []
        self.released = False
        # stream bytes stay allocated (pinned) while viewed, until a reset forgets them (a
        # reader may hand out bytes it received before a reset: those are forgotten already)
        self.pinned = kind == "stream" and am is not None and am.natively_allocated(self.addr,
                                                                                   self.n)

    def __repr__(self) -> str:
        return f"<rec {self.id} {self.kind} {self.n}B @{self.addr:#x} {self.am!r}>"


class RMModel:
    def __init__(self, rm: RecyclableMemory, am: AllocModel) -> None:
        self.rm = rm
        self.am = am
        self.ranges = Ranges()        # over-approximation of what recycle() frees
        self.dirty = False            # recycle may legitimately fail or free less
        self.dup = False              # some bytes were made owned twice (push_owned misuse)
        self.readers: list[Reader] = []


class StreamModel:
    """One socketpair: a StreamReader on one end, the test sends on the other."""

    def __init__(self, fz: Child, am: AllocModel | None) -> None:
        import trio

        rng = fz.rng
        self.am = am
        a, b = socket.socketpair()
        b.setblocking(False)
        self.tx = b
        self.chunk_size = rng.choice((16, 64, 256, 1024, 4096, 16384))
        self.max_buffered = max(self.chunk_size, rng.choice((32768, 65536)))
        alloc = am.alloc if am is not None else None
        self.rx = StreamReader(
            trio.SocketStream(trio.socket.from_stdlib_socket(a)), alloc, self.chunk_size,
            self.max_buffered, idle_trim=rng.choice((None, 0.0, 0.001, 1.0)),
        )
        kind = rng.randrange(5)
        max_frame = rng.choice((64, 1000, 8192, self.max_buffered // 2))
        if kind < 4:
            self.codec: Framer = LengthPrefixed(("leb128", "be16", "be24", "be32")[kind],
                                                max_frame=min(max_frame, 65535))
        else:
            self.codec = Delimited(rng.choice((b"\n", b"\r\n", b"\x00\xff\x00")),
                                   max_frame=max_frame)
        self.sent = bytearray()
        self.consumed = 0             # bytes delivered to the test
        self.boundaries: list[int] = [0]
        self.eof_sent = False
        self.closed = False
        self.close_pos = 0
        self.frames: Any = None       # a Frames iterator
        self.frames_batch = False
        self.frames_views = False

    def reader_pos(self) -> int:
        if self.closed:
            return self.close_pos
        s = self.rx.stats()
        return s.received - s.buffered

    def avail(self) -> int:
        return len(self.sent) - self.consumed


def _frame_end(data: bytes, codec: Framer, k: int) -> int:
    """Where the reference framer's frame ``k`` (0-based) starts in ``data``: the end of
    the first ``k`` frames (the shortest prefix holding ``k`` of them)."""
    if not k:
        return 0
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(reference(data[:mid], codec)[0]) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _pattern(rid: int, step: int, n: int) -> bytes:
    unit = bytes(((rid * 37) & 0xFF, step & 0xFF, 0xA5, (rid >> 8) & 0xFF, 0x5A))
    return (unit * (n // 5 + 1))[:n]


class Child:
    def __init__(self, seed: int, steps: int, debug_share: float, wild: bool, strict: bool) -> None:
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.debug_share = debug_share
        self.wild = wild
        self.strict = strict
        self.step = 0
        self.op = "start"
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.known: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # what happened, for --verbose
        self.skipped = Counter[str]()
        self.allocs: list[AllocModel] = []       # alive, reachable by the test
        self.all_models: list[AllocModel] = []
        self.records: list[Rec] = []
        self.rms: list[RMModel] = []
        self.limbo: list[RMModel] = []           # RMs that cannot be dropped safely (yet)
        self.mems: list[tuple[Memory, list[Reader]]] = []
        self.streams: list[StreamModel] = []
        self.loose: list[Any] = []               # released views and other misuse objects
        self.history: list[str] = []
        self.next_id = 0
        self.labels = 0
        self.unraisable: list[BaseException] = []
        self.pipe = os.pipe()
        self.progress_fd: int | None = None     # where the driver reads the step of a crash

    # -- bookkeeping -------------------------------------------------------

    def trail(self) -> str:
        keep = int(os.environ.get("MEMBUF_CRASH_TRAIL", "25"))
        return "last steps:\n  " + "\n  ".join(self.history[-keep:])

    def summary(self) -> str:
        known = ",".join(f"{k}:{v}" for k, v in self.known.items()) or "-"
        skipped = sum(self.skipped.values())
        ok = sum(v for k, v in self.outcomes.items() if k.startswith("ok:"))
        return (f"crash child seed={self.seed}: steps={self.step} "
                f"documented-errors={sum(self.errors.values())} stream-results={ok} "
                f"skipped={skipped} known={known}")

    def fail(self, msg: str) -> None:
        raise Finding(msg)

    def allowed(self, am: AllocModel | None = None, *, stream: bool = False,
                reader: bool = False) -> tuple[type[BaseException], ...]:
        """The exceptions a call may raise: the documented ones, UseAfterFreeError once a
        deliberate write after free is pending (in ``am``, or anywhere when ``am`` is None),
        trio.ClosedResourceError for streams, MembufError for Readers (left behind a clip)."""
        import trio

        allowed: tuple[type[BaseException], ...] = DOCUMENTED
        if am.waf if am is not None else any(m.waf for m in self.all_models):
            allowed += (UseAfterFreeError,)
        if stream:
            allowed += (trio.ClosedResourceError,)
        if reader:
            allowed += (MembufError,)
        return allowed

    def call(self, what: str, fn: Callable[[], Any], allowed: tuple[type[BaseException], ...]
             ) -> tuple[Any, BaseException | None]:
        """fn() -> (result, None), or (None, exc) for a documented exception."""
        try:
            return fn(), None
        except allowed as exc:
            self.errors[f"{what}:{type(exc).__name__}"] += 1
            return None, exc

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_record(self, kind: str, view: memoryview, am: AllocModel | None,
                   want: bytes | None = None) -> Rec:
        rec = Rec(self.new_id(), kind, view, am, want)
        if rec.n:
            s, e = rec.addr, rec.addr + rec.n
            for other in self.records:
                if other.claimed.overlaps(s, e) and not self.tainted(other):
                    chunk = other.view.obj
                    self.fail(f"new {kind} bytes {s:#x}..{e:#x} ({am!r}) overlap {other!r}, whose "
                              f"bytes are still promised to the test; its exporter: {chunk!r} "
                              f"at {getattr(chunk, 'address', 0):#x}")
        self.records.append(rec)
        self.history.append(f"    + {rec!r}")
        while len(self.records) > MAX_RECORDS:
            self.records.pop(self.rng.randrange(len(self.records) // 2))
        return rec

    def tainted(self, rec: Rec) -> bool:
        return rec.am is not None and rec.am.tainted

    def invalidate(self, s: int, e: int) -> None:
        for rec in self.records:
            if rec.n and rec.addr < e and s < rec.addr + rec.n:
                rec.claimed.remove(s, e)

    def live_allocs(self) -> list[AllocModel]:
        return [m for m in self.allocs if m.alloc is not None]

    # -- the main loop ---------------------------------------------------------

    async def run(self) -> None:
        # Collections happen where the sequence says (op "gc", drops), not when allocation
        # counts say: a replay (or a replay under a debugger) takes the same path.
        gc.disable()
        warnings.simplefilter("ignore", ResourceWarning)
        sys.unraisablehook = lambda u: self.unraisable.append(u.exc_value)  # type: ignore[assignment]
        self.new_allocator()
        ops = self.op_table()
        names = [n for n, _, _ in ops]
        weights = [w for _, w, _ in ops]
        table = {n: f for n, _, f in ops}
        for step in range(1, self.steps + 1):
            self.step = step
            name = self.rng.choices(names, weights)[0]
            self.op = name
            self.history.append(f"{self.step}: {name}")
            self.ops[name] += 1
            if self.progress_fd is not None:    # one pwrite: survives a segfault
                os.pwrite(self.progress_fd, f"{step} ({name})".ljust(48).encode(), 0)
            r = table[name]()
            if hasattr(r, "__await__"):
                await r
            self.op = f"{name} (after: touch)"
            self.touch()
            self.check_unraisable()
        self.op = "end"
        await self.finish()

    def op_table(self) -> list[tuple[str, int, Callable[[], Any]]]:
        return [
            ("new_allocator", 2, self.new_allocator),
            ("malloc", 30, self.op_malloc),
            ("malloc_misuse", 3, self.op_malloc_misuse),
            ("free", 16, self.op_free),
            ("free_rest", 6, self.op_free_rest),
            ("free_misuse", 8, self.op_free_misuse),
            ("write_after_free", 2, self.op_write_after_free),
            ("borrow", 2, self.op_borrow),
            ("owns", 3, self.op_owns),
            ("stats", 4, self.op_stats),
            ("trim", 3, self.op_trim),
            ("reset", 2, self.op_reset),
            ("check", 3, self.op_check),
            ("drop_allocator", 1, self.op_drop_allocator),
            ("derive", 5, self.op_derive),
            ("release_view", 3, self.op_release_view),
            ("drop_record", 4, self.op_drop_record),
            ("rm_new", 4, self.op_rm_new),
            ("rm_next_n", 8, self.op_rm_next_n),
            ("rm_push", 4, self.op_rm_push),
            ("rm_push_owned", 4, self.op_rm_push_owned),
            ("rm_recycle", 4, self.op_rm_recycle),
            ("rm_clip", 4, self.op_rm_clip),
            ("rm_clear", 1, self.op_rm_clear),
            ("rm_drop", 2, self.op_rm_drop),
            ("mem_new", 4, self.op_mem_new),
            ("reader_op", 22, self.op_reader),
            ("mem_write_to", 2, self.op_mem_write_to),
            ("codec", 8, self.op_codec),
            ("stream_new", 2, self.op_stream_new),
            ("stream_send", 10, self.op_stream_send),
            ("stream_read", 16, self.op_stream_read),
            ("stream_frames", 12, self.op_stream_frames),
            ("stream_close", 2, self.op_stream_close),
            ("stream_eof", 1, self.op_stream_eof),
            ("gc", 1, self.op_gc),
        ]

    # -- touching every kept view ---------------------------------------------------

    def segment_spans(self) -> Ranges:
        """Bytes some Memory (or RecyclableMemory) has as a segment."""
        spans = Ranges()
        mems: list[Any] = [m for m, _ in self.mems] + [r.rm for r in self.rms + self.limbo]
        for m in mems:
            for seg in m:
                try:
                    n, addr = _core.extent(seg)
                except (ValueError, BufferError):
                    continue
                spans.add(addr, addr + n)
        return spans

    def touch(self) -> None:
        """Read every kept view and write it: new bytes where the test still owns them."""
        write_new = self.rng.random() < 0.4
        # A Reader remembers where a search failed and does not look there again, so the
        # bytes of Memory segments are written back unchanged, never changed.
        frozen = self.segment_spans() if write_new else Ranges()
        for rec in self.records:
            if rec.released:
                try:
                    rec.view.tobytes()
                except ValueError:
                    pass
                else:
                    self.fail(f"{rec!r}: a released view could still be read")
                continue
            data = rec.view.tobytes()
            if rec.pinned and not self.tainted(rec) and not rec.am.gone() \
                    and not rec.am.natively_allocated(rec.addr, rec.n):  # type: ignore[union-attr]
                self.fail(f"{rec!r}: bytes of a held stream view went back to the allocator")
            if not self.tainted(rec):
                for a, b in rec.claimed.iv:
                    o, p = a - rec.addr, b - rec.addr
                    if data[o:p] != rec.want[o:p]:
                        first = next(i for i in range(o, p) if data[i] != rec.want[i])
                        self.fail(
                            f"{rec!r}: promised bytes changed at offset {first} "
                            f"(want {rec.want[first]:#04x}, got {data[first]:#04x}; "
                            f"bytes {o}..{p} are still the test's)"
                        )
            for kind, v, off in rec.derived:
                try:
                    got = v.tobytes()
                except ValueError:
                    continue               # a released derived view
                want = data[::2] if kind == "strided" else data[off : off + len(v)]
                if got != want:
                    self.fail(f"{rec!r}: its {kind} view disagrees with it")
            if rec.view.readonly or not rec.n:
                continue
            rec.view[:] = data                      # the same bytes back: a write, no change
            if write_new and not self.tainted(rec) and not frozen.overlaps(rec.addr,
                                                                           rec.addr + rec.n):
                pat = _pattern(rec.id, self.step, rec.n)
                for a, b in rec.claimed.iv:
                    o, p = a - rec.addr, b - rec.addr
                    rec.view[o:p] = pat[o:p]
                    rec.want[o:p] = pat[o:p]
        for obj in self.loose:
            if isinstance(obj, memoryview):
                try:
                    obj.tobytes()
                except ValueError:
                    pass

    def known_bug(self, name: str, detail: str = "") -> None:
        """A KNOWN_BUGS finding: counted, or a failure with --strict."""
        if self.strict:
            self.fail(f"{name}: {KNOWN_BUGS[name]} {detail}")
        self.known[name] += 1

    def check_unraisable(self) -> None:
        while self.unraisable:
            exc = self.unraisable.pop(0)
            self.fail(f"an exception escaped a finalizer or callback: {type(exc).__name__}: {exc}")

    # -- allocators ---------------------------------------------------------------

    def new_allocator(self) -> None:
        if len(self.live_allocs()) >= MAX_ALLOCS:
            self.op_drop_allocator()
        rng = self.rng
        arena = rng.choice((4096, 8192, 65536))
        max_arena = arena * rng.choice((1, 4, 64))
        max_bytes = rng.choice((None, None, 1 << 18, 1 << 20, 4 << 20))
        debug = rng.random() < self.debug_share
        a = Allocator(arena_size=arena, max_arena_size=max_arena, max_bytes=max_bytes,
                      strategy=rng.choice(("first-fit", "best-fit")), debug=debug)
        self.labels += 1
        m = AllocModel(self.labels, a, debug, max_bytes)
        self.allocs.append(m)
        self.all_models.append(m)
        self.history.append(f"    new {m!r} arena={arena} max_arena={max_arena} "
                            f"max_bytes={max_bytes}")

    def pick_alloc(self) -> AllocModel:
        live = self.live_allocs()
        if not live:
            self.new_allocator()
            live = self.live_allocs()
        return self.rng.choice(live)

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return 0
        if r < 0.55:
            return self.rng.randint(1, 64)
        if r < 0.9:
            return self.rng.randint(65, 4096)
        if r < 0.99:
            return self.rng.randint(4097, 70000)
        return self.rng.randint(70001, 300000)

    def malloc_into(self, am: AllocModel, n: int, via: Callable[[int], Any]) -> Rec | None:
        view, exc = self.call("malloc", lambda: via(n), self.allowed(am))
        if exc is not None:
            if not isinstance(exc, MemoryLimitError):
                self.fail(f"malloc({n}) raised {type(exc).__name__}: {exc}")
            if am.max_bytes is None and n < (1 << 30):
                self.fail(f"malloc({n}) without max_bytes raised MemoryLimitError: {exc}")
            return None
        if isinstance(view, tuple):
            view = view[0]
        if len(view) != n or view.readonly or view.format != "B":
            self.fail(f"malloc({n}) gave a view of {len(view)} bytes, readonly={view.readonly}")
        self.fill(view)
        rec = self.add_record("malloc", view, am)
        if n:
            if am.owned.overlaps(rec.addr, rec.addr + n):
                self.fail(f"malloc({n}) returned bytes {rec.addr:#x}.. that the test still owns")
            am.owned.add(rec.addr, rec.addr + n)
        return rec

    def fill(self, view: memoryview) -> None:
        if len(view):
            view[:] = _pattern(self.next_id + 1, self.step, len(view))

    def op_malloc(self) -> None:
        am = self.pick_alloc()
        assert am.alloc is not None
        self.malloc_into(am, self.size(), am.alloc.malloc)

    def op_malloc_misuse(self) -> None:
        am = self.pick_alloc()
        a = am.alloc
        assert a is not None
        arg = self.rng.choice((-1, -(1 << 70), True, 1.5, "8", None, 1 << 41, 1 << 70))
        _, exc = self.call("malloc_misuse", lambda: a.malloc(arg), self.allowed(am))
        if exc is None:
            self.fail(f"malloc({arg!r}) did not raise")
        want = (TypeError if not isinstance(arg, int) or isinstance(arg, bool)
                else ValueError if arg < 0 else MemoryLimitError)
        if not isinstance(exc, want):
            self.fail(f"malloc({arg!r}) raised {type(exc).__name__}, documented {want.__name__}")

    # -- frees --------------------------------------------------------------------

    def pick_record(self, *, kind: str | None = None, live: bool = False) -> Rec | None:
        recs = [r for r in self.records
                if (kind is None or r.kind == kind) and not (live and r.released)]
        return self.rng.choice(recs) if recs else None

    def free_target(self, rec: Rec) -> Any:
        """A view over (part of) rec to free: the view, a derived one, or a slice."""
        rng = self.rng
        if rec.released:
            return rec.view
        r = rng.random()
        if r < 0.5 or rec.n < 2:
            return rec.view
        if r < 0.6 and rec.derived:
            return rng.choice(rec.derived)[1]
        if r < 0.7:
            return rec.view.toreadonly()
        i = rng.randrange(rec.n)
        j = rng.randint(i, rec.n)
        return rec.view[i:j]

    def do_free(self, am: AllocModel, target: Any, what: str = "free",
                call: Callable[[], Any] | None = None) -> BaseException | None:
        """Free ``target`` through ``am``'s allocator, checking the model's prediction.

        The prediction: refused (FreeError) for what free() cannot take (not contiguous,
        released, a StreamReader's view) and for bytes that are not all allocated (a
        double or foreign free); accepted for bytes the test owns. Bytes allocated but
        not the test's (a StreamReader's, through a stale view) are skipped unless --wild.
        Returns the documented exception raised, if any.
        """
        a = am.alloc
        assert a is not None
        refusal = _core.free_refusal(target)
        span: tuple[int, int] | None = None
        if not refusal:
            n, addr = _core.extent(target)
            span = (addr, addr + n)
        if span is None:
            expect = "refused"
        elif span[0] == span[1] or am.owned.covers(*span):
            expect = "ok"
        elif not am.natively_allocated(span[0], span[1] - span[0]) or not a.owns(target):
            expect = "refused"              # free bytes, foreign bytes, or (debug) quarantined
        elif not self.wild:
            self.skipped[f"{what}:wild"] += 1
            return None
        else:
            expect = "either"
            am.tainted = True
        where = f"{span[0]:#x}+{span[1] - span[0]}" if span else f"refusal {refusal}"
        self.history.append(f"    {what} {am!r} {where} expect={expect}")
        _, exc = self.call(what, call or (lambda: a.free(target)), self.allowed(am))
        freed = exc is None or isinstance(exc, UseAfterFreeError)
        if expect == "ok" and not freed:
            self.fail(f"{what} of {_describe(target)} ({am!r}), bytes the test owns, was refused: "
                      f"{type(exc).__name__}: {exc}")
        if expect == "refused" and not isinstance(exc, FreeError):
            self.fail(f"{what} of {_describe(target)} ({am!r}) should be refused with FreeError "
                      f"(the model says those bytes are not the test's to free), got {exc!r}")
        if freed and span is not None and span[1] > span[0]:
            am.owned.remove(*span)
            self.invalidate(*span)
            for rmm in self.rms + self.limbo:
                if rmm.ranges.overlaps(*span):
                    rmm.dirty = True        # its ranges are freed (maybe handed out again)
        return exc

    def op_free(self) -> None:
        rec = self.pick_record(kind="malloc")
        if rec is None or rec.am is None or rec.am.alloc is None:
            return self.op_malloc()
        self.do_free(rec.am, self.free_target(rec))

    def op_free_rest(self) -> None:
        rec = self.pick_record(kind="malloc")
        if rec is None or rec.am is None or rec.am.alloc is None:
            return None
        am = rec.am
        a = am.alloc
        assert a is not None
        mv = self.free_target(rec)
        try:
            length = len(mv)
        except ValueError:                  # released
            _, exc = self.call("free_rest", lambda: a.free_rest(mv, 0), self.allowed(am))
            if not isinstance(exc, ValueError):
                self.fail(f"free_rest of a released view raised {exc!r}")
            return None
        k = self.rng.choice((0, length, self.rng.randint(0, length), -1, length + 1))
        if not 0 <= k <= length:
            _, exc = self.call("free_rest", lambda: a.free_rest(mv, k), self.allowed(am))
            if not isinstance(exc, ValueError):
                self.fail(f"free_rest(mv, {k}) of {length} bytes raised {exc!r}, not ValueError")
            return None
        result: list[Any] = []
        if k == length:                     # nothing to free: mv[:k] back, whatever mv is
            head, exc = self.call("free_rest", lambda: a.free_rest(mv, k), self.allowed(am))
            if exc is not None or len(head) != k:
                self.fail(f"free_rest(mv, len(mv)) raised {exc!r} or returned the wrong view")
            return None
        exc = self.do_free(am, mv[k:], "free_rest",
                           call=lambda: result.append(a.free_rest(mv, k)))
        if result and len(result[0]) != k:
            self.fail(f"free_rest(mv, {k}) returned {len(result[0])} bytes, not mv[:{k}]")
        del exc
        return None

    def op_free_misuse(self) -> None:
        rng = self.rng
        am = self.pick_alloc()
        choice = rng.randrange(8)
        if choice == 0:
            target: Any = rng.choice((b"abc", bytearray(b"abcdef"), memoryview(bytearray(9)), b""))
        elif choice == 1:
            target = rng.choice((42, "str", None, object(), [1, 2]))
        elif choice == 2:                     # strided
            rec = self.pick_record(live=True)
            if rec is None or rec.n < 2:
                return
            target = rec.view[:: rng.choice((2, 3, -1))]
        elif choice == 3:                     # released
            rec = self.pick_record(live=True)
            if rec is None:
                return
            target = memoryview(rec.view)
            target.release()
            self.loose.append(target)
        elif choice == 4:                     # another allocator's bytes
            others = [r for r in self.records if r.am is not am and not r.released and r.n]
            if not others:
                return
            target = rng.choice(others).view
        elif choice == 5:                     # a stream view (the reader owns it)
            rec = self.pick_record(kind="stream", live=True)
            if rec is None:
                return
            target = self.free_target(rec)
        elif choice == 6:                     # a borrowed scratch view
            assert am.alloc is not None
            target = am.alloc.borrow(rng.randint(0, 100))
        else:                                 # a double free: free a record twice
            rec = self.pick_record(kind="malloc", live=True)
            if rec is None or rec.am is None or rec.am.alloc is None:
                return
            am = rec.am
            self.do_free(am, rec.view)
            target = rec.view
        self.do_free(am, target, "free_misuse")

    def op_write_after_free(self) -> None:
        """Debug allocators: free bytes, then write into them (UseAfterFreeError later)."""
        debug = [m for m in self.live_allocs() if m.debug]
        if not debug:
            return
        am = self.rng.choice(debug)
        assert am.alloc is not None
        rec = self.malloc_into(am, self.rng.randint(1, 4096), am.alloc.malloc)
        if rec is None or not rec.n:
            return
        exc = self.do_free(am, rec.view)
        if exc is None:
            i = self.rng.randrange(rec.n)
            rec.view[i] = rec.view[i] ^ 0xFF
            am.waf = True

    def op_borrow(self) -> None:
        am = self.pick_alloc()
        a = am.alloc
        assert a is not None
        n = self.rng.choice((0, 1, 100, 5000, -1, True))
        v, exc = self.call("borrow", lambda: a.borrow(n), self.allowed(am))
        if exc is not None:
            if not isinstance(exc, ValueError | TypeError):
                self.fail(f"borrow({n!r}) raised {exc!r}")
            return
        if len(v) != n:
            self.fail(f"borrow({n}) gave {len(v)} bytes")
        if n:
            v[:] = b"\x77" * n
            if v.tobytes() != b"\x77" * n:
                self.fail("borrowed bytes did not keep a write")
        self.loose.append(v)
        if len(self.loose) > 20:
            del self.loose[:10]

    def op_owns(self) -> None:
        am = self.pick_alloc()
        a = am.alloc
        assert a is not None
        rec = self.pick_record()
        target: Any = (rec.view if rec is not None else b"xyz") if self.rng.random() < 0.8 \
            else self.rng.choice((b"xyz", 5, bytearray(3)))
        got, exc = self.call("owns", lambda: a.owns(target), self.allowed(am))
        if exc is not None:
            self.fail(f"owns() raised {type(exc).__name__}: {exc}")
        if not isinstance(got, bool):
            self.fail(f"owns() returned {got!r}")
        if rec is not None and target is rec.view and not rec.released and rec.n \
                and am.owned.covers(rec.addr, rec.addr + rec.n) and not got:
            self.fail(f"owns({rec!r}) is False, but the test owns those bytes")
        if not isinstance(target, memoryview) and got:
            self.fail(f"owns({target!r}) is True")

    def op_stats(self) -> None:
        am = self.pick_alloc()
        assert am.alloc is not None
        s, exc = self.call("stats", am.alloc.stats, self.allowed(am))
        if exc is not None:
            self.fail(f"stats() raised {exc!r}")
        self.check_stats(am, s)

    def check_stats(self, am: AllocModel, s: Any) -> None:
        bad = []
        if s.free != s.reserved - s.in_use:
            bad.append("free != reserved - in_use")
        if not 0 <= s.in_use <= s.reserved:
            bad.append("in_use outside 0..reserved")
        if s.largest_free > s.free:
            bad.append("largest_free > free")
        if (s.arenas == 0) != (s.reserved == 0):
            bad.append("arenas == 0 but reserved != 0 (or the reverse)")
        if s.pinned > s.in_use:
            bad.append("pinned > in_use")
        if am.max_bytes is not None and s.reserved > am.max_bytes:
            bad.append("reserved > max_bytes")
        if not am.tainted and s.in_use < am.owned.total():
            bad.append(f"in_use < the {am.owned.total()} bytes the test owns")
        if bad:
            self.fail(f"{am!r} stats inconsistent ({'; '.join(bad)}): {s}")

    def op_trim(self) -> None:
        am = self.pick_alloc()
        assert am.alloc is not None
        got, exc = self.call("trim", am.alloc.trim, self.allowed(am))
        if exc is None and (not isinstance(got, int) or got < 0):
            self.fail(f"trim() returned {got!r}")
        if exc is not None and not isinstance(exc, UseAfterFreeError):
            self.fail(f"trim() raised {type(exc).__name__}: {exc}")

    def op_reset(self) -> None:
        am = self.pick_alloc()
        assert am.alloc is not None
        _, exc = self.call("reset", am.alloc.reset, self.allowed(am))
        if exc is not None:
            self.fail(f"reset() raised {type(exc).__name__}: {exc}")
        self.after_reset(am)

    def after_reset(self, am: AllocModel) -> None:
        for s, e in am.owned.iv:
            self.invalidate(s, e)
        am.owned.clear()
        am.waf = False
        for rmm in self.rms + self.limbo:
            if rmm.am is am:
                rmm.ranges.clear()      # recycle frees nothing from before a reset
                rmm.dirty = rmm.dup = False
        for rec in self.records:
            if rec.am is am and rec.kind == "malloc":
                rec.claimed.clear()
            if rec.am is am:
                rec.pinned = False
        assert am.alloc is not None
        s = am.alloc.stats()
        if s.in_use or s.reserved or s.arenas or s.pinned:
            self.fail(f"after reset {am!r} still counts bytes: {s}")

    def op_check(self) -> None:
        am = self.pick_alloc()
        assert am.alloc is not None
        try:
            am.alloc.check()
        except UseAfterFreeError:
            if not am.waf:
                self.fail(f"check() of {am!r} raised UseAfterFreeError with no write after free")
            self.errors["check:UseAfterFreeError"] += 1
        except AssertionError as exc:
            self.fail(f"check() of {am!r}: {exc}")

    def op_drop_allocator(self) -> None:
        live = self.live_allocs()
        if len(live) <= 1:
            return
        am = self.rng.choice(live)
        am.alloc = None
        self.allocs.remove(am)
        gc.collect()
        # gone now unless a RecyclableMemory or a reader still holds it
        self.outcomes["allocator dropped" if am.gone() else "allocator dropped, held"] += 1

    # -- views --------------------------------------------------------------------

    def op_derive(self) -> None:
        rec = self.pick_record(live=True)
        if rec is None or not rec.n:
            return
        kind = self.rng.choice(("ro", "strided", "slice"))
        if kind == "ro":
            rec.derived.append(("ro", rec.view.toreadonly(), 0))
        elif kind == "strided":
            rec.derived.append(("strided", rec.view[::2], 0))
        else:
            i = self.rng.randrange(rec.n)
            rec.derived.append(("slice", rec.view[i : self.rng.randint(i, rec.n)], i))
        del rec.derived[:-4]

    def op_release_view(self) -> None:
        rec = self.pick_record(live=True)
        if rec is None:
            return
        if rec.derived and self.rng.random() < 0.5:
            _, v, _ = self.rng.choice(rec.derived)
            v.release()
            return
        if self.rng.random() < 0.5:
            v = memoryview(rec.view)
            v.release()
            self.loose.append(v)
            return
        try:
            rec.view.release()
        except BufferError:
            self.errors["release:BufferError"] += 1   # exported: Python refuses, fine
            return
        rec.released = True             # the promise ends with the view
        rec.claimed.clear()
        rec.pinned = False

    def op_drop_record(self) -> None:
        if self.records:
            self.records.pop(self.rng.randrange(len(self.records)))
            if self.rng.random() < 0.3:
                gc.collect()
        while len(self.records) > MAX_RECORDS:
            self.records.pop(self.rng.randrange(len(self.records) // 2))

    # -- RecyclableMemory -----------------------------------------------------------

    def pick_rm(self) -> RMModel | None:
        return self.rng.choice(self.rms) if self.rms else None

    def op_rm_new(self) -> None:
        if len(self.rms) >= MAX_RMS:
            self.op_rm_drop()
        am = self.pick_alloc()
        assert am.alloc is not None
        self.rms.append(RMModel(RecyclableMemory(am.alloc), am))

    def op_rm_next_n(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return self.op_rm_new()
        n = self.size() if self.rng.random() < 0.95 else -1
        am = rmm.am
        if n < 0:
            _, exc = self.call("next_n", lambda: rmm.rm.next_n(n), self.allowed(am))
            if not isinstance(exc, ValueError):
                self.fail(f"next_n(-1) raised {exc!r}")
            return None
        rec = self.malloc_into(am, n, rmm.rm.next_n)
        if rec is not None and rec.n:
            if rmm.ranges.overlaps(rec.addr, rec.addr + rec.n):
                # it owned these bytes before they were freed: now it owns them twice
                rmm.dirty = rmm.dup = True
            rmm.ranges.add(rec.addr, rec.addr + rec.n)
        return None

    def op_rm_push(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return
        rec = self.pick_record()
        seg: Any = rec.view if rec is not None and self.rng.random() < 0.7 else \
            self.rng.choice((b"ref", bytearray(b"refs"), memoryview(b"xyz")))
        if rec is not None and rec.derived and self.rng.random() < 0.3:
            seg = self.rng.choice(rec.derived)[1]
        self.call("rm_push", lambda: rmm.rm.push(seg), self.allowed(rmm.am))

    def op_rm_push_owned(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return
        am = rmm.am
        rec = self.pick_record()
        if rec is None:
            return
        seg = self.free_target(rec) if self.rng.random() < 0.5 else rec.view
        refusal = _core.free_refusal(seg)
        span = None
        if not refusal:
            n, addr = _core.extent(seg)
            span = (addr, addr + n)
        if refusal == -103 or span is None or span[0] == span[1]:
            expect = "held-or-refused"      # a StreamReader's view, or nothing to own
        elif am.owned.covers(*span):
            expect = "owned"
        elif am.natively_allocated(span[0], span[1] - span[0]) and rmm.rm.allocator.owns(seg):
            if not self.wild:               # a StreamReader's bytes through a stale view
                self.skipped["push_owned:wild"] += 1
                return
            expect = "either"
            am.tainted = True
        else:
            expect = "refused"
        _, exc = self.call("push_owned", lambda: rmm.rm.push_owned(seg), self.allowed(am))
        if exc is None and span is not None and span[1] > span[0] and refusal != -103:
            if expect == "refused":
                self.fail(f"push_owned of bytes {am!r} does not hold was accepted")
            if rmm.ranges.overlaps(*span):
                rmm.dup = True              # owned twice: recycle is refused (all or nothing)
            if rmm.dup or expect != "owned":
                rmm.dirty = True
            rmm.ranges.add(*span)
        if exc is not None and expect == "owned":
            self.fail(f"push_owned of bytes the test owns was refused: {exc!r}")

    def rm_pairs(self, rmm: RMModel) -> list[tuple[int, int]]:
        """The ranges recycle() (or the finalizer) will free as the user's: the object's own
        record of them (internal), exact where the model's ranges are an over-approximation
        (a clip_front release shrinks them; the model keeps them whole)."""
        rm = rmm.rm
        if rm._epoch[0] != rm.allocator._epoch:
            return []
        p = rm._pairs
        return [(p[i], p[i + 1]) for i in range(0, len(p), 2) if p[i + 1]]

    def rm_unsafe(self, rmm: RMModel) -> bool:
        """Recycling (or dropping) rmm could free bytes that are not the test's. A batch
        free is all or nothing (ranges that overlap each other are refused, debug mode
        too) and each range must be allocated whole, so a range that is not entirely
        allocated makes it refused: harmless. The finalizer then frees range by range
        and, of a refused range, only a run's unused tail (never handed out, so never
        the test's to free or anyone else's: a partly freed run's other bytes stay
        allocated, since malloc may have handed the freed part to someone else)."""
        am = rmm.am
        pairs = self.rm_pairs(rmm)
        if any(n < 0 for _, n in pairs):
            self.fail(f"a RecyclableMemory owns a range of negative length: {rmm.rm._pairs}")
        for a, n in pairs:
            if not am.owned.covers(a, a + n) and am.natively_allocated(a, n):
                return True
        return False

    def rm_freed(self, rmm: RMModel, pairs: list[tuple[int, int]] | None = None) -> None:
        """After recycle() or the finalizer: whatever it may have freed is not the test's
        (``pairs``: its ranges as they were before a recycle)."""
        pairs = self.rm_pairs(rmm) if pairs is None else pairs
        spans = list(rmm.ranges.iv) + [(a, a + n) for a, n in pairs if n > 0]
        for s, e in spans:
            rmm.am.owned.remove(s, e)
            self.invalidate(s, e)

    def op_rm_recycle(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return
        am = rmm.am
        if self.rm_unsafe(rmm):
            self.skipped["recycle:unsafe"] += 1
            return
        clean = not rmm.dirty and all(am.owned.covers(s, e) for s, e in rmm.ranges.iv)
        before = self.rm_pairs(rmm)
        _, exc = self.call("recycle", rmm.rm.recycle, self.allowed(am))
        if exc is None or isinstance(exc, UseAfterFreeError):
            # (UseAfterFreeError, debug: raised after the batch was freed; the object must
            # forget its ranges, or its next recycle or its finalizer frees them again)
            self.rm_freed(rmm, before)
            rmm.ranges.clear()
            rmm.dirty = False
            if len(rmm.rm) or rmm.rm.count or rmm.rm.owned_bytes or rmm.rm._pairs:
                self.fail(f"after recycle() ({exc!r}) the RecyclableMemory holds {len(rmm.rm)} "
                          f"bytes, owns {rmm.rm.owned_bytes}, ranges {rmm.rm._pairs}")
        elif clean:
            self.fail(f"recycle() of a clean RecyclableMemory was refused: {exc!r}")
        elif not isinstance(exc, FreeError):
            self.fail(f"recycle() raised {type(exc).__name__}: {exc}")

    def op_rm_clip(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return
        self.clip(rmm)
        if min(rmm.rm._pairs[1::2], default=0) < 0:
            self.fail(f"after clip_front a RecyclableMemory owns a range of negative length: "
                      f"{rmm.rm._pairs}")

    def clip(self, rmm: RMModel) -> None:
        if not rmm.readers or self.rng.random() < 0.2:
            new, exc = self.call("reader()", rmm.rm.reader, self.allowed(rmm.am, reader=True))
            if exc is not None:
                return
            rmm.readers.append(new)
            del rmm.readers[:-2]
        r = self.rng.choice(rmm.readers)
        k = self.rng.randint(0, len(r))
        self.call("reader.skip", lambda: r.skip(k), self.allowed(rmm.am, reader=True))
        mode = self.rng.randrange(3)
        am = rmm.am
        if mode == 0:
            self.call("clip_front", r.clip_front, self.allowed(am, reader=True))
            return
        rmm.dirty = True
        if mode == 1:
            got: list[memoryview] = []
            self.call("clip_front", lambda: r.clip_front(got.append), self.allowed(am, reader=True))
            self.loose.extend(got[:4])
            del self.loose[:-20]
            return
        if am.alloc is None:
            return

        def release(piece: memoryview) -> None:
            exc = self.do_free(am, piece, "clip_release")
            if exc is not None:
                raise exc

        self.call("clip_front", lambda: r.clip_front(release), self.allowed(am, reader=True))

    def op_rm_clear(self) -> None:
        rmm = self.pick_rm()
        if rmm is not None:
            rmm.rm.clear()   # a Reader not at the end is left behind (MembufError)

    def op_rm_drop(self) -> None:
        rmm = self.pick_rm()
        if rmm is None:
            return
        self.rms.remove(rmm)
        if self.rm_unsafe(rmm):
            self.skipped["rm_drop:unsafe"] += 1
            self.limbo.append(rmm)
            return
        self.rm_freed(rmm)
        del rmm.rm, rmm.readers
        gc.collect()
        # limbo RMs whose allocator was reset (or whose ranges became the test's) can go now
        for old in list(self.limbo):
            if old.rm._finalizer.alive and not self.rm_unsafe(old):
                self.limbo.remove(old)
                self.rm_freed(old)
                del old.rm, old.readers
        gc.collect()

    # -- Memory and Reader ---------------------------------------------------------------

    def op_mem_new(self) -> None:
        m = Memory()
        for _ in range(self.rng.randint(0, 5)):
            rec = self.pick_record()
            seg: Any = rec.view if rec is not None and self.rng.random() < 0.7 else \
                self.rng.choice((b"", b"hello", bytearray(b"\x80\x01xyz\r\n"), bytes(300)))
            self.call("mem.push", lambda seg=seg: m.push(seg), self.allowed())
        self.mems.append((m, []))
        del self.mems[:-6]

    def pick_reader(self) -> tuple[Memory, Reader, AllocModel | None] | None:
        cands: list[tuple[Memory, list[Reader], AllocModel | None]] = \
            [(m, rs, None) for m, rs in self.mems]
        cands += [(rmm.rm, rmm.readers, rmm.am) for rmm in self.rms]
        if not cands:
            return None
        m, rs, am = self.rng.choice(cands)
        if not rs or self.rng.random() < 0.1:
            r, exc = self.call("Reader()", lambda: Reader(m), self.allowed(am, reader=True))
            if exc is not None:
                return None
            rs.append(r)
            del rs[:-2]
        return m, self.rng.choice(rs), am

    def op_reader(self) -> None:
        got = self.pick_reader()
        if got is None:
            return self.op_mem_new()
        m, r, am = got
        self.reader_step(m, r, am)
        return None

    def reader_step(self, m: Memory, r: Reader, am: AllocModel | None) -> None:
        """One Reader call, its result checked against the bytes the Memory holds now."""
        rng = self.rng
        allowed = self.allowed(am, reader=True)
        remaining = len(r)
        try:
            data = m.to_bytes()
            rest: bytes | None = data[len(data) - remaining:] if remaining <= len(data) else None
        except (ValueError, TypeError):          # a released segment
            rest = None
        op = rng.randrange(16)
        n = rng.choice((0, 1, 2, 3, 7, rng.randint(0, 64), rng.randint(0, 5000), -1))
        before = r.offset
        if op == 0:
            what, fn, want = "read_byte", r.read_byte, (rest[0] if rest else NeedMore) \
                if rest is not None else None
        elif op == 1:
            w = rng.choice((1, 2, 3, 4, 8, 0, 9))
            order = rng.choice(("big", "little"))
            fn = (lambda: r.read_be(w)) if order == "big" else (lambda: r.read_le(w))
            what = f"read_{order[0]}e({w})"
            want = None if rest is None else MalformedError if not 1 <= w <= 8 else \
                NeedMore if len(rest) < w else int.from_bytes(rest[:w], order)  # type: ignore
        elif op == 2:
            what, fn = "read_bytes", lambda: r.read_bytes(n)
            want = None if rest is None else MalformedError if n < 0 else \
                NeedMore if n > len(rest) else rest[:n]
        elif op == 3:
            what, fn = "peek", lambda: r.peek(n)
            want = None if rest is None else MalformedError if n < 0 else \
                NeedMore if n > len(rest) else rest[:n]
        elif op == 4:
            what, fn = "take", lambda: r.take(n).to_bytes()
            want = None if rest is None else MalformedError if n < 0 else \
                NeedMore if n > len(rest) else rest[:n]
        elif op == 5:
            what, fn = "range", lambda: b"".join(bytes(v) for v in r.range(n))
            want = None if rest is None else MalformedError if n < 0 else \
                NeedMore if n > len(rest) else rest[:n]
        elif op == 6:
            what, fn = "skip", lambda: r.skip(n)
            want = None if rest is None else MalformedError if n < 0 else \
                NeedMore if n > len(rest) else None
        elif op == 7:
            signed = rng.random() < 0.5
            what = "read_sleb128" if signed else "read_leb128"
            fn = r.read_sleb128 if signed else r.read_leb128
            exp = leb128(rest, signed) if rest is not None else None
            want = exp[0] if isinstance(exp, tuple) else exp
        elif op == 8:
            sub = rng.choice((b"\r\n", b"\x00", b"x", bytes(rest[1:3]) if rest else b"q"))
            what, fn = "find", lambda: r.find(sub)
            want = None if rest is None else rest.find(sub)
        elif op == 9:
            delim = rng.choice((b"\n", b"\r\n", b"\x00"))
            mx = rng.choice((0, 5, 100, 10000))
            what, fn = "read_until", lambda: r.read_until(delim, mx).to_bytes()
            if rest is None:
                want = None
            else:
                j = rest.find(delim, 0, mx + len(delim))
                want = rest[:j] if j >= 0 else MalformedError \
                    if len(rest) >= mx + len(delim) else NeedMore
        elif op == 10:
            buf = bytearray(max(n, 0))
            what, fn = "read_into", lambda: (r.read_into(buf), bytes(buf))
            want = None if rest is None else (min(len(buf), len(rest)),
                                              rest[: len(buf)] + bytes(buf[len(rest):]))
        elif op == 11:
            k = max(n, 0)
            what, fn, want = "unread", lambda: r.unread(k), None
        elif op == 12:
            what, fn, want = "clip_front", lambda: len(r.clip_front()), None
        elif op == 13:
            what = "transaction"

            def fn() -> Any:
                with r.transaction():
                    r.read_bytes(min(len(r), 3))
                    raise NeedMore("rewind", 1)
            want = NeedMore
        elif op == 14:
            what, fn = "peek_byte", r.peek_byte
            want = None if rest is None else rest[0] if rest else NeedMore
        else:
            seg = self.pick_record()
            what = "push"
            fn = (lambda: m.push(seg.view)) if seg is not None else (lambda: m.push(b"late"))
            want = None
        got, exc = self.call(f"reader.{what}", fn, allowed)
        # (MembufError: a Reader left behind another's clip; its fast paths read on
        # unchecked, and a transaction cannot rewind there: documented, "stop using it")
        if exc is not None and type(exc) is not MembufError \
                and (r.offset != before or len(r) != remaining):
            self.fail(f"Reader.{what} (n={n}) raised {exc!r:.120} but moved the cursor: offset "
                      f"{before} -> {r.offset}, len {remaining} -> {len(r)}")
        if want is None or rest is None or _released_error(exc):
            return                # (a Reader may still hold a view released since)
        if isinstance(want, type):
            if exc is None or not isinstance(exc, want):
                self.fail(f"Reader.{what} (n={n}) over {len(rest)} bytes: want {want.__name__}, "
                          f"got {got!r} / {exc!r}")
            if r.offset != before and what != "transaction":
                self.fail(f"Reader.{what} raised {want.__name__} but moved the cursor")
            if what == "transaction" and r.offset != before:
                self.fail("a transaction did not rewind")
            return
        if exc is not None:
            self.fail(f"Reader.{what} (n={n}) over {len(rest)} bytes raised {exc!r}, want {want!r}")
        if got != want:
            self.fail(f"Reader.{what} (n={n}) returned {got!r:.80}, want {want!r:.80}")

    def op_mem_write_to(self) -> None:
        if not self.mems:
            return
        m, _ = self.rng.choice(self.mems)
        try:
            want = m.to_bytes()
        except (ValueError, TypeError):
            want = None
        if want is not None and len(want) > 32768:
            return
        rfd, wfd = self.pipe
        n, exc = self.call("write_to", lambda: m.write_to(wfd), self.allowed())
        if exc is None:
            got = b""
            while len(got) < n:
                got += os.read(rfd, n - len(got))
            if want is not None and got != want:
                self.fail("Memory.write_to wrote other bytes than to_bytes() shows")

    # -- codecs ------------------------------------------------------------------------

    def encode_frames(self, codec: Framer, count: int, garbage: float) -> bytes:
        out = bytearray()
        rng = self.rng
        for _ in range(count):
            if rng.random() < garbage:
                out += rng.randbytes(rng.randint(1, 12))
                continue
            size = rng.choice((0, rng.randint(1, 40), rng.randint(41, 600),
                               rng.randint(0, max(0, codec.max_frame))))
            size = min(size, codec.max_frame)
            if isinstance(codec, LengthPrefixed):
                body = rng.randbytes(size)
                if codec.prefix == "leb128":
                    out += encode_leb(size) + body
                else:
                    out += size.to_bytes({"be16": 2, "be24": 3, "be32": 4}[codec.prefix], "big") \
                        + body
            else:
                assert isinstance(codec, Delimited)
                body = bytes(b for b in rng.randbytes(size) if b not in codec.delim)
                out += body + codec.delim
        return bytes(out)

    def random_codec(self) -> Framer:
        rng = self.rng
        mf = rng.choice((0, 3, 64, 1000, 65535))
        if rng.random() < 0.7:
            return LengthPrefixed(rng.choice(("leb128", "be16", "be24", "be32")), max_frame=mf)
        return Delimited(rng.choice((b"\n", b"\r\n")), max_frame=mf)

    def op_codec(self) -> None:
        """Frames written into native segments (some misused), split, checked by reference.

        Most segments are freed afterwards (a few stay as kept views)."""
        am = self.pick_alloc()
        mine: list[Rec] = []
        try:
            self.codec_round(am, mine)
        finally:
            for rec in mine:
                if rec in self.records and not rec.released and self.rng.random() < 0.85 \
                        and am.alloc is not None and am.owned.covers(rec.addr, rec.addr + rec.n):
                    self.records.remove(rec)
                    self.do_free(am, rec.view, "codec_cleanup")

    def codec_round(self, am: AllocModel, mine: list[Rec]) -> None:
        rng = self.rng
        codec = self.random_codec()
        stream = self.encode_frames(codec, rng.randint(0, 12), garbage=0.1)
        assert am.alloc is not None
        m = Memory()
        pos = 0
        while pos < len(stream):
            k = rng.choice((1, 2, 5, rng.randint(1, 400)))
            k = max(k, len(stream) // 24)        # at most ~24 segments
            piece = stream[pos : pos + k]
            pos += k
            if rng.random() < 0.6:
                rec = self.malloc_into(am, len(piece), am.alloc.malloc)
                if rec is None:
                    return
                mine.append(rec)
                rec.view[:] = piece
                rec.want[:] = piece
                m.push(rec.view)
            else:
                m.push(piece)
        stale = False
        if rng.random() < 0.1:                 # misuse: a record freed, maybe a segment
            rec = self.pick_record(kind="malloc", live=True)
            if rec is not None and rec.am is am:
                self.do_free(am, rec.view)
                # a join may then reuse a segment's bytes while copying it: stale bytes
                stale = any(seg.obj is rec.view.obj for seg in m)
        r = Reader(m)
        views = rng.randrange(3)
        alloc_for_join = am.alloc if views == 2 else None
        try:
            snapshot = m.to_bytes()
        except (ValueError, TypeError):
            snapshot = None
        got: list[bytes] = []
        joined: list[memoryview] = []
        seg_spans = []
        for seg in m:
            try:
                n, addr = _core.extent(seg)
                seg_spans.append((addr, addr + n))
            except (ValueError, BufferError):
                pass
        raised: BaseException | None = None
        for _ in range(3):
            if views == 0:
                res, exc = self.call("codec.split", lambda: codec.split(r), self.allowed(am))
                frames = [f.to_bytes() for f in res] if exc is None else []
            else:
                res, exc = self.call("codec.split_views",
                                     lambda: codec.split_views(r, alloc_for_join),
                                     self.allowed(am))
                frames = [bytes(v) for v in res] if exc is None else []
                for v in res or ():
                    if alloc_for_join is not None and len(v):
                        n, addr = _core.extent(v)
                        if not any(a <= addr and addr + n <= b for a, b in seg_spans):
                            joined.append(v)
            got += frames
            if exc is not None:
                raised = exc
                break
            if not frames:
                break
        for v in joined:
            rec = self.add_record("malloc", v, am)
            if am.owned.overlaps(rec.addr, rec.addr + rec.n):
                self.fail("a joined frame was malloc'd over bytes the test still owns")
            am.owned.add(rec.addr, rec.addr + rec.n)
        if snapshot is None or stale:
            return
        want, stop, malformed = reference(snapshot, codec)
        if isinstance(raised, MemoryLimitError) and am.max_bytes is not None:
            # a join malloc failed: the frames cut before it were returned, and the reader
            # stands at the first byte of the frame that could not be joined
            end = _frame_end(snapshot, codec, len(got))
            if got != want[: len(got)] or len(got) >= len(want) or r.offset != end:
                self.fail(f"{codec!r}: a failed join lost frames: {len(got)} frames returned "
                          f"of {len(want)}, the reader at {r.offset}, the frame's start {end}")
            return
        if raised is not None:
            if not isinstance(raised, MalformedError) or not malformed:
                self.fail(f"{codec!r} raised {raised!r}; the reference says malformed={malformed}")
            if got != want or r.offset != stop:
                self.fail(f"{codec!r}: frames before the malformed one differ, or the reader "
                          f"is at {r.offset}, not {stop}")
        elif got != want[: len(got)] or (len(got) < len(want)):
            pairs = enumerate(zip(got, want, strict=False))
            k = next((i for i, (g, w) in pairs if g != w), min(len(got), len(want)))
            self.fail(f"{codec!r} ({['split', 'split_views', 'split_views+allocator'][views]}): "
                      f"{len(got)} frames, the reference has {len(want)}; first difference at "
                      f"frame {k}: {got[k:k + 1]!r:.120} vs {want[k:k + 1]!r:.120}; segments "
                      f"{[len(x) for x in m]}")

    # -- streams -----------------------------------------------------------------------

    def op_stream_new(self) -> None:
        if len([s for s in self.streams if not s.closed]) >= 2:
            return
        am = self.pick_alloc() if self.rng.random() < 0.7 else None
        if am is not None and am.tainted:
            am = None                       # (--wild) its bytes may be freed under the reader
        self.streams.append(StreamModel(self, am))
        del self.streams[:-3]

    def pick_stream(self, open_only: bool = False) -> StreamModel | None:
        open_only = open_only or self.rng.random() < 0.9
        for sm in [s for s in self.streams if s.am is not None and s.am.tainted]:
            # (--wild) a wild free may have freed bytes it buffers: its content is unknown
            self.streams.remove(sm)
            sm.rx.release()
            sm.tx.close()
        cands = [s for s in self.streams if not (open_only and s.closed)]
        if not cands:
            if open_only or not self.streams:
                self.op_stream_new()
                cands = [s for s in self.streams if not (open_only and s.closed)]
            if not cands:
                return None
        return self.rng.choice(cands)

    def op_stream_send(self) -> None:
        sm = self.pick_stream(open_only=True)
        if sm is None or sm.eof_sent or sm.avail() > 200_000:
            return
        data = self.encode_frames(sm.codec, self.rng.randint(1, 8), garbage=0.03)
        try:
            n = sm.tx.send(data)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            return
        start = len(sm.sent)
        sm.sent += data[:n]
        # frame starts inside what was sent (for re-synchronising after garbage)
        sm.boundaries.append(start)

    def op_stream_eof(self) -> None:
        sm = self.pick_stream(open_only=True)
        if sm is None or sm.eof_sent:
            return
        sm.tx.shutdown(socket.SHUT_WR)
        sm.eof_sent = True

    async def drain_frames(self, sm: StreamModel) -> None:
        """Take the frames a one-by-one iterator already cut (consumed) but did not yield."""
        while sm.frames is not None and not sm.frames_batch and sm.reader_pos() > sm.consumed:
            before = sm.consumed
            await self.pull_frames(sm, must=True)
            if sm.consumed == before:
                self.fail("a frames pull with frames already cut made no progress")
        sm.frames = None

    async def stream_call(self, sm: StreamModel, what: str, fn: Callable[[], Any],
                          will_complete: bool) -> tuple[Any, BaseException | None, bool]:
        """Await fn(); (result, exc, cancelled). A read that can complete must, in 10 s."""
        import trio

        allowed = self.allowed(sm.am, stream=True)
        if will_complete or sm.eof_sent:
            try:
                with trio.fail_after(10):
                    return await fn(), None, False
            except trio.TooSlowError:
                self.fail(f"stream {what} hung: {sm.avail()} bytes sent and unread, "
                          f"eof_sent={sm.eof_sent}")
            except allowed as exc:
                self.errors[f"stream.{what}:{type(exc).__name__}"] += 1
                return None, exc, False
        with trio.move_on_after(self.rng.choice((0, 0.0005, 0.002))) as scope:
            try:
                return await fn(), None, False
            except allowed as exc:
                self.errors[f"stream.{what}:{type(exc).__name__}"] += 1
                return None, exc, False
        if not scope.cancelled_caught:
            self.fail("move_on_after neither finished nor cancelled")
        return None, None, True

    async def op_stream_read(self) -> None:
        import trio

        sm = self.pick_stream()
        if sm is None:
            return
        await self.drain_frames(sm)
        rng = self.rng
        rx = sm.rx
        avail = sm.avail()
        rest = bytes(sm.sent[sm.consumed:])
        op = rng.randrange(8) if rng.random() < 0.97 else rng.choice((8, 9))
        boundary = next((b for b in sm.boundaries if b > sm.consumed and b <= len(sm.sent)), None)
        if rng.random() < 0.4 and boundary is not None:
            n = boundary - sm.consumed
        else:
            n = rng.choice((0, 1, rng.randint(1, 100), rng.randint(0, max(avail, 1)),
                            avail + rng.randint(1, 50), rng.randint(0, 3000)))
        if rng.random() < 0.02:
            n = rng.choice((-1, sm.max_buffered + 1))
        need: int | None                        # bytes needed from `consumed`; None: never
        if op == 0:
            what, fn, need = "read_exactly", lambda: rx.read_exactly(n), n
        elif op == 1:
            what, fn, need = "read_frame", lambda: rx.read_frame(n), n
        elif op == 2:
            what, fn, need = "peek", lambda: rx.peek(n), n
        elif op == 3:
            what, fn, need = "skip", lambda: rx.skip(n), n
        elif op == 4:
            what, fn, need = "read_byte", rx.read_byte, 1
        elif op == 5:
            w = rng.choice((1, 2, 4, 8))
            le = rng.random() < 0.5
            what = "read_le" if le else "read_be"
            fn, need = (lambda: rx.read_le(w)) if le else (lambda: rx.read_be(w)), w
            n = w
        elif op == 6:
            what, fn = "read_leb128", rx.read_leb128
            got_leb = leb128(rest, False)
            need = got_leb[1] if isinstance(got_leb, tuple) else \
                None if got_leb is MalformedError else len(rest) + 1
        elif op == 7:
            delim = sm.codec.delim if isinstance(sm.codec, Delimited) else b"\n"
            mx = rng.choice((10, 1000, sm.max_buffered))
            what, fn = "read_until", lambda: rx.read_until(delim, mx)
            j = rest.find(delim, 0, mx + len(delim))
            need = j + len(delim) if j >= 0 else None if len(rest) >= mx + len(delim) else \
                len(rest) + 1
            n = mx
        elif op == 8:
            what = "release"
            if not sm.closed:
                sm.close_pos = sm.reader_pos()
            rx.release()
            sm.closed = True
            return
        else:
            what = "aclose"
            if not sm.closed:
                sm.close_pos = sm.reader_pos()
            with trio.fail_after(5):
                await rx.aclose()
            sm.closed = True
            return
        if op in (0, 1, 2, 3) and n < 0 or need is not None and need > sm.max_buffered:
            need = None                          # MalformedError: never completes
        can = need is not None and need <= avail and not sm.closed
        self.history.append(f"    stream.{what}(n={n}) avail={avail} need={need} "
                            f"closed={sm.closed} eof={sm.eof_sent}")
        res, exc, cancelled = await self.stream_call(sm, what, fn, can)
        pos = sm.reader_pos()
        if cancelled:
            self.outcomes[f"cancelled:stream.{what}"] += 1
        if cancelled or exc is not None:
            if pos != sm.consumed:
                self.fail(f"stream {what} failed ({exc!r}, cancelled={cancelled}) but the reader "
                          f"consumed {pos - sm.consumed} bytes")
            capped = isinstance(exc, MemoryLimitError) and sm.am is not None \
                and sm.am.max_bytes is not None
            if can and exc is not None and not (n == 0 and sm.closed) and not capped:
                self.fail(f"stream {what}(n={n}) with {avail} bytes available raised {exc!r}")
            if sm.closed and not cancelled and exc is not None \
                    and not isinstance(exc, trio.ClosedResourceError | MalformedError):
                self.fail(f"stream {what} on a closed reader raised {exc!r}")
            return
        if sm.closed and not (op in (0, 1, 2, 3) and n == 0):
            self.fail(f"stream {what} succeeded on a closed reader")
        if not can and not (sm.closed and n == 0):
            self.fail(f"stream {what}(n={n}) completed with only {avail} bytes sent and unread "
                      f"(need={need})")
        assert need is not None
        want = rest[:need]
        if what in ("read_exactly", "read_frame"):
            segs = list(res)
            if b"".join(bytes(s) for s in segs) != want:
                self.fail(f"stream {what}({n}) returned other bytes than were sent")
            for s in segs:
                self.add_record("stream", s, sm.am, bytes(s))
            if what == "read_frame" and rng.random() < 0.5:
                res.recycle()
        elif what == "peek":
            if res != want:
                self.fail("stream peek returned other bytes than were sent")
            need = 0
        elif what == "read_byte" and res != want[0]:
            self.fail("stream read_byte returned another byte than was sent")
        elif what in ("read_be", "read_le") and \
                res != int.from_bytes(want, "little" if what == "read_le" else "big"):
            self.fail(f"stream {what} returned another value than was sent")
        elif what == "read_leb128" and res != leb128(rest, False)[0]:  # type: ignore[index]
            self.fail("stream read_leb128 returned another value than was sent")
        elif what == "read_until":
            body = want[: -len(sm.codec.delim if isinstance(sm.codec, Delimited) else b"\n")]
            if res.to_bytes() != body:
                self.fail("stream read_until returned other bytes than were sent")
            for s in res:
                self.add_record("stream", s, sm.am, bytes(s))
        sm.consumed += need
        self.outcomes[f"ok:stream.{what}"] += 1
        if sm.reader_pos() != sm.consumed:
            self.fail(f"after stream {what} the reader consumed {sm.reader_pos()}, the model "
                      f"{sm.consumed}")

    async def pull_frames(self, sm: StreamModel, must: bool = False) -> None:
        """One step of the frames iterator, checked against the reference framer."""
        rest = bytes(sm.sent[sm.consumed:])
        want, stop, malformed = reference(rest, sm.codec)
        lag = sm.reader_pos() - sm.consumed
        can = bool(want) or lag > 0
        if sm.closed and lag == 0:
            can = False
        it = sm.frames
        self.history.append(f"    frames pull views={sm.frames_views} batch={sm.frames_batch} "
                            f"ref={len(want)} malformed={malformed} lag={lag} closed={sm.closed}")
        async def pull() -> Any:
            try:
                return await it.__anext__()
            except StopAsyncIteration:
                return StopAsyncIteration

        res, exc, cancelled = await self.stream_call(sm, "frames", pull, can or malformed)
        if isinstance(exc, MemoryLimitError) and sm.am is not None and sm.am.max_bytes is not None:
            # a shared allocator with max_bytes is full: the join of the next frame failed,
            # and nothing was consumed (the frames cut before it were yielded)
            if sm.reader_pos() != sm.consumed + lag:
                self.fail(f"frames(views=True) lost frames on a MemoryLimitError: the reader "
                          f"moved from {sm.consumed + lag} to {sm.reader_pos()}")
            sm.frames = None
            return
        if must and (exc is not None or cancelled):
            self.fail(f"a frame already cut was not yielded: {exc!r}")
        if cancelled:
            self.outcomes["cancelled:stream.frames"] += 1
            if sm.reader_pos() != sm.consumed + lag:
                self.fail("a cancelled frames pull consumed bytes")
            return
        if exc is not None:
            import trio

            if isinstance(exc, MalformedError):
                if not malformed or want:
                    self.fail(f"frames raised {exc!r}; the reference has {len(want)} frames "
                              f"first, malformed={malformed}")
            elif isinstance(exc, NeedMore):       # IncompleteReadError at the end of stream
                if not sm.eof_sent or want or not rest:
                    self.fail(f"frames raised {exc!r} with eof_sent={sm.eof_sent}, "
                              f"{len(want)} reference frames, {len(rest)} bytes left")
            elif isinstance(exc, trio.ClosedResourceError):
                if not sm.closed:
                    self.fail("frames raised ClosedResourceError on an open reader")
            sm.frames = None
            return
        if res is StopAsyncIteration:
            if not sm.eof_sent or rest or lag:
                self.fail(f"frames ended with eof_sent={sm.eof_sent}, {len(rest)} bytes left, "
                          f"{lag} cut and not yielded")
            sm.frames = None
            return
        if res is None:
            self.fail("frames yielded None")
        items = res if sm.frames_batch else [res]
        self.outcomes["ok:stream.frames"] += 1
        if not items:
            self.fail("frames yielded an empty batch")
        for k, item in enumerate(items):
            if k >= len(want):
                self.fail(f"frames yielded {len(items)} frames; the reference has {len(want)}")
            if sm.frames_views:
                if not isinstance(item, memoryview):
                    self.fail(f"frames(views=True) yielded {type(item).__name__}")
                got, segs = bytes(item), [item]
            else:
                got, segs = item.to_bytes(), list(item)
            if got != want[k]:
                self.fail(f"frame {k} differs from the reference ({len(got)} vs {len(want[k])} "
                          "bytes)")
            for s in segs:
                if self.rng.random() < 0.7:
                    self.add_record("stream", s, sm.am, bytes(s))
        sm.consumed += frame_ends(rest, sm.codec, len(items))
        if sm.frames_batch and sm.reader_pos() != sm.consumed:
            self.fail(f"after a batch the reader consumed {sm.reader_pos()}, the model "
                      f"{sm.consumed}")
        if sm.reader_pos() < sm.consumed:
            self.fail("the reader consumed less than the frames it yielded")
        if isinstance(res, list) and self.rng.random() < 0.3:
            self.loose.append(res)                 # keep the batch list itself too
            del self.loose[:-20]

    async def op_stream_frames(self) -> None:
        sm = self.pick_stream()
        if sm is None:
            return
        if sm.frames is None or self.rng.random() < 0.1:
            await self.drain_frames(sm)
            sm.frames_views = self.rng.random() < 0.5
            sm.frames_batch = self.rng.random() < 0.4
            sm.frames = sm.rx.frames(sm.codec, views=sm.frames_views, batch=sm.frames_batch)
        await self.pull_frames(sm)

    async def op_stream_close(self) -> None:
        import trio

        sm = self.pick_stream()
        if sm is None:
            return
        r = self.rng.random()
        if r < 0.4:
            if not sm.closed:
                sm.close_pos = sm.reader_pos()
            with trio.fail_after(5):
                await sm.rx.aclose()
            sm.closed = True
        elif r < 0.7:
            if not sm.closed:
                sm.close_pos = sm.reader_pos()
            sm.rx.release()
            sm.closed = True
        else:                                      # drop the reader without closing it
            self.streams.remove(sm)
            sm.tx.close()
            del sm.rx, sm.frames
            gc.collect()

    def op_gc(self) -> None:
        gc.collect()

    # -- the end -----------------------------------------------------------------------

    async def finish(self) -> None:
        """Close everything; every allocator the test still reaches must check out."""
        import trio

        for sm in self.streams:
            with trio.fail_after(5):
                await sm.rx.aclose()
            sm.tx.close()
        self.touch()
        # RecyclableMemory finalizers run here (checked), not at interpreter exit
        for rmm in self.rms:
            if self.rm_unsafe(rmm):
                rmm.rm._finalizer.detach()
            else:
                self.rm_freed(rmm)
        self.rms.clear()
        self.mems.clear()
        gc.collect()
        self.check_unraisable()
        for am in self.live_allocs():
            assert am.alloc is not None
            self.check_stats(am, am.alloc.stats())
            try:
                am.alloc.check()
            except UseAfterFreeError:
                if not am.waf:
                    raise
        self.check_unraisable()
        for rmm in self.limbo:              # unsafe to free, even at exit: never freed
            if rmm.rm._finalizer.alive:
                rmm.rm._finalizer.detach()
        os.close(self.pipe[0])
        os.close(self.pipe[1])


def frame_ends(data: bytes, codec: Framer, count: int) -> int:
    """Where the first ``count`` frames of ``data`` end (the reference found them complete)."""
    pos = 0
    for _ in range(count):
        rest = data[pos:]
        if isinstance(codec, LengthPrefixed):
            if codec.prefix == "leb128":
                got = leb128(rest, False)
                assert isinstance(got, tuple)
                n, plen = got
            else:
                plen = {"be16": 2, "be24": 3, "be32": 4}[codec.prefix]
                n = int.from_bytes(rest[:plen], "big")
            pos += plen + n
        else:
            assert isinstance(codec, Delimited)
            pos += rest.find(codec.delim) + len(codec.delim)
    return pos


def _released_error(exc: BaseException | None) -> bool:
    """The error Python raises for a released memoryview (directly or through a join)."""
    return isinstance(exc, ValueError | TypeError) and (
        "released memoryview" in str(exc) or "memoryview found" in str(exc))


def _describe(obj: Any) -> str:
    if isinstance(obj, memoryview):
        try:
            return f"a memoryview of {len(obj)} bytes (contiguous={obj.contiguous})"
        except ValueError:
            return "a released memoryview"
    return type(obj).__name__


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, help="child mode: run this seed's sequence")
    p.add_argument("--steps", type=int, default=300, help="steps per child (default 300)")
    p.add_argument("--runs", type=int, help="driver mode: how many children")
    p.add_argument("--budget-seconds", type=float, default=60.0,
                   help="driver: start no child after this many seconds (default 60)")
    p.add_argument("--jobs", type=int, default=None, help="driver: children at once (CPUs)")
    p.add_argument("--base-seed", type=int, default=None,
                   help="driver: seeds are base+1..base+runs (default: from the clock)")
    p.add_argument("--debug-share", type=float, default=0.35,
                   help="share of allocators made with debug=True (default 0.35)")
    p.add_argument("--wild", action="store_true",
                   help="also make frees the model cannot follow (content checks off there)")
    p.add_argument("--strict", action="store_true", help="KNOWN_BUGS fail instead of counting")
    p.add_argument("--verbose", action="store_true", help="child: print per-operation counts")
    p.add_argument("--progress", help="child: keep 'step (op)' in this file (set by the driver)")
    args = p.parse_args(argv)
    if args.seed is not None:
        return child_main(args.seed, args.steps, args.debug_share, args.wild, args.strict,
                          args.verbose, args.progress)
    if args.runs is None:
        p.error("give --seed (one child) or --runs (the driver)")
    base = args.base_seed if args.base_seed is not None else int(time.time()) % 1_000_000 * 1000
    child_args = ["--debug-share", str(args.debug_share)]
    child_args += ["--wild"] if args.wild else []
    child_args += ["--strict"] if args.strict else []
    print(f"crash fuzz: up to {args.runs} children x {args.steps} steps, seeds {base + 1}.., "
          f"budget {args.budget_seconds:.0f} s", flush=True)
    report = drive(args.runs, args.steps, budget_seconds=args.budget_seconds, jobs=args.jobs,
                   base_seed=base, child_args=child_args)
    print(report.text(["--steps", str(args.steps)] + child_args))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
