"""The benchmark suite: every comparison in one run, side by side, one table of ratios.

    python -m membuf bench [--quick | --check] [--only alloc split stream memory rtmp]
    make bench            # the full run (under 15 minutes on 2 cores); regenerates docs/benchmarks.md
    make bench-quick      # under 2 minutes

Parts (each a module of this directory with ``measure(mode, progress) -> [Part]``):

* ``alloc``  (suite_alloc.py): C harness vs glibc / mimalloc / jemalloc; Python
  malloc+free vs bytearray; limits: memcpy, one empty cffi call;
* ``split``  (suite_split.py): frame splitting (LEB128, be32; 16 B .. 64 KiB),
  CRLF lines, reader calls vs struct / int.from_bytes / PyPI leb128;
* ``stream`` (suite_stream.py): trio loopback, 1 and 256 connections, a separate
  sender process; raw recv_into as the limit; a frame-size sweep (full runs);
* ``memory`` (bench_memory.py): RSS before / peak / after a burst; native bytes
  per idle connection (bench_idle.py);
* ``rtmp``   (suite_rtmp.py): serve-rtmp vs pyrtmp (full runs, when installed).

``--check``: tiny sizes, one round, no warm-up; every checksum still verified,
plus self-checks of the harness (a wrong checksum and a corrupted stream must be
caught, the data generator must be deterministic and agree with a reference
decoder, rounds must rotate, the report and plots must render). Timings from a
check run mean nothing; it never writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    TABLE_HEAD,
    CheckError,
    Figure,
    Mode,
    Part,
    Progress,
    Row,
    checks_made,
    fmt,
    fmt_ratio,
    frame_stream,
    machine,
    md_table,
    rotations,
    row_cells,
    text_table,
    verify,
)

PARTS = {"alloc": "suite_alloc", "split": "suite_split", "stream": "suite_stream",
         "memory": "bench_memory", "rtmp": "suite_rtmp"}
DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img"

FAIRNESS = """\
1. **Same bytes for every contender.** Each workload's byte stream is generated
   once from a seed (`benchmarks/_common.py: frame_stream`); the expected
   checksum is computed by the generator, never by a contender.
2. **Socket runs use a separate sender process** (`suite_stream.py --send`)
   that writes the seeded stream over loopback TCP as fast as it can; the
   receiving process runs one contender at a time, on every connection at once.
3. **Every receiver returns a checksum that is verified**: `(frames, payload
   bytes, sum of the first payload byte of every frame)`; the first-byte sum
   proves a parser found the real frame boundaries (payloads are seeded random).
   A wrong checksum fails the run. In-memory contenders are checked before
   their timed runs; the raw `recv_into` limit is checked by byte count.
4. **Warm-up, then interleaved rounds**: every contender runs once untimed, then
   once per round in rotating order (so background load hits all alike), with
   the garbage collector paused for in-memory timings. Figures are medians,
   with min..max over rounds. In-memory timings are CPU time of the process
   (`time.process_time`); socket timings are wall clock (the receiver's CPU
   time per frame is reported beside them).
5. **Each baseline in its best idiomatic form, named**, and both forms where a
   library has two: asyncio `StreamReader.readexactly` *and* a
   `BufferedProtocol` parsing in place; trio `receive_some` + bytearray *and*
   raw `recv_into`; anyio `BufferedByteReceiveStream.receive_exactly` *and*
   `receive()` + own parsing; `struct.Struct.unpack_from` *and*
   `int.from_bytes`; PyPI `leb128` as `decode_reader` (streaming) and `decode`
   (pre-cut, for reference); plain-Python frame splitting over a `bytearray`
   (`bytes` per frame) *and* over `tail + chunk` with memoryview slices
   (zero-copy); CRLF lines with a `bytearray.find` loop *and*
   `bytes.split` with the tail carried over. No baseline is tuned down: the
   table compares membuf with the best baseline of each workload.
6. **Limits in the same table**: memcpy bandwidth, raw `recv_into` throughput
   and the cost of one empty cffi call, so each figure can be read against
   what the machine allows.
"""


# -- self-checks of the harness (``--check``) ------------------------------------------------------


def _reference_checksum(kind: str, data: bytes) -> tuple[int, int, int]:
    """An independent, obviously-correct decoder of a generated stream."""
    pos = frames = payload = first = 0
    while pos < len(data):
        if kind == "crlf":
            end = data.index(b"\r\n", pos)
            body = data[pos:end]
            pos = end + 2
        else:
            if kind == "be32":
                n, pos = int.from_bytes(data[pos : pos + 4], "big"), pos + 4
            else:
                n = shift = 0
                while True:
                    b = data[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if b < 0x80:
                        break
            body = data[pos : pos + n]
            pos += n
        frames += 1
        payload += len(body)
        first += body[0]
    return frames, payload, first


def self_check() -> list[str]:
    """Harness sanity; raise CheckError on the first failure; return what was checked."""
    done = []
    for kind in ("leb128", "be32", "crlf"):
        a, ca = frame_stream(kind, "16-300", 50_000, seed=5)
        b, cb = frame_stream(kind, "16-300", 50_000, seed=5)
        c, _ = frame_stream(kind, "16-300", 50_000, seed=6)
        if a != b or ca != cb or a == c:
            raise CheckError(f"frame_stream {kind}: not deterministic per seed")
        verify(f"reference decoder {kind}", _reference_checksum(kind, a), ca)
    done.append("the data generator is deterministic per seed and agrees with a reference decoder")
    try:
        verify("negative control", (1, 2, 3), (1, 2, 4))
    except CheckError:
        pass
    else:
        raise CheckError("verify() accepted a wrong checksum")
    from suite_split import plain_leb128

    data, want = frame_stream("leb128", "16-300", 200_000, seed=9)
    bad = bytearray(data)
    bad[2] ^= 0xFF                          # a payload byte of the first frame (1-byte prefix)
    try:
        verify("corrupted stream", plain_leb128([bytes(bad)]), want)
    except CheckError:
        pass
    else:
        raise CheckError("a corrupted stream went unnoticed")
    done.append("a wrong checksum and a corrupted stream are caught")
    orders = rotations(["a", "b", "c"], 3)
    if orders != [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]:
        raise CheckError(f"rounds do not rotate: {orders}")
    f = Figure([3.0, 1.0, 2.0, 10.0, 4.0])
    if (f.median, f.lo, f.hi) != (3.0, 1.0, 10.0):
        raise CheckError("Figure median/min/max wrong")
    r = Row("g", "w", "ns", "m", 50.0, 40.0, 60.0, "b", 100.0, 90.0, 110.0,
            higher_is_better=False, target=1.5)
    if r.ratio != 2.0 or r.status != "met":
        raise CheckError("Row ratio/status wrong for a lower-is-better unit")
    done.append("rounds rotate; medians, ranges, ratios and target status compute correctly")
    return done


# -- the report -------------------------------------------------------------------------------------


def targets(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.target is not None]


def render_doc(mode: Mode, argv: list[str], info: dict[str, Any], parts: list[Part],
               plots: list[Path], load_after: list[float], elapsed: float,
               errors: list[str]) -> str:
    rows = [r for p in parts for r in p.rows]
    libs = ", ".join(f"{k} {v}" for k, v in info["libs"].items())
    cmd = "python -m membuf bench" + (" " + " ".join(argv) if argv else "")
    out = [
        "# Benchmarks",
        "",
        f"Generated by `{cmd}` ({mode.name} run, {elapsed / 60:.1f} minutes) on "
        f"{info['date']}. Do not edit by hand: `make bench` regenerates this file and the "
        "plots in `docs/img/`.",
        "",
        "## Machine and conditions",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory']}; {info['os']}",
        f"- {info['python']}, {info['glibc']}, C compiler: {info['cc']}",
        f"- Libraries: {libs}",
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in info['load_before'])}"
        f"; after: {', '.join(f'{x:.2f}' for x in load_after)}. Every row of the table also "
        "carries the 1-minute load average when it was measured.",
        "- The machine is a shared 2-vCPU VM: other jobs run beside the suite, and the "
        "sender and the receiver of the socket runs share the two cores. Figures are "
        "relative: read the ratios, not the absolute numbers, and expect run-to-run "
        "movement of 10-30 % on the socket rows (the min..max columns show it).",
        "",
        "## Fairness rules",
        "",
        FAIRNESS,
        "## Results",
        "",
        "One row per comparison: membuf's figure, the best baseline's (or the limit's), and "
        "the ratio = how many times better membuf is (above 1: membuf ahead; below 1: "
        "behind), whatever the direction of the unit.",
        "",
        md_table((*TABLE_HEAD, "note"), [[*row_cells(r), r.note] for r in rows]),
        "",
        "## Targets",
        "",
    ]
    for r in targets(rows):
        out.append(f"- **{r.status}**: {r.group}, {r.workload}: {r.membuf} "
                   f"{fmt(r.value)} {r.unit} vs {r.baseline} {fmt(r.base_value)} -> "
                   f"{fmt_ratio(r.ratio, r.target)} (target {r.target_text or f'>= {r.target:g}x'}).")
    missed = [r for r in targets(rows) if r.status == "MISSED"]
    if missed:
        out += ["", f"membuf misses {len(missed)} of its {len(targets(rows))} targets in this "
                "run; the rows above give the figures. Nothing in the baselines was changed "
                "to narrow a gap."]
    compared = [r for r in rows if r.ratio is not None and r.group != "limit"
                and "start" not in r.baseline and "(limit)" not in r.baseline]
    out += ["", "## Summary", "",
            "Where membuf stands against the best baseline in this run (ratio as in the table; "
            "the limits and the RSS-after-burst targets are left out here):",
            ""]
    for title, keep in (("ahead (ratio above 1.1)", lambda x: x > 1.1),
                        ("about even (0.9 to 1.1)", lambda x: 0.9 <= x <= 1.1),
                        ("behind (ratio below 0.9)", lambda x: x < 0.9)):
        sel = [r for r in compared if keep(r.ratio)]
        if sel:
            out.append(f"- **{title}**: " + "; ".join(
                f"{r.group} {r.workload} vs {r.baseline} {fmt_ratio(r.ratio)}" for r in sel) + ".")
    if plots:
        out += ["", "## Plots", ""]
        for p in plots:
            out.append(f"![{p.stem.replace('_', ' ')}](img/{p.name})")
            out.append("")
    out += ["", "## Details", ""]
    for part in parts:
        for d in part.details:
            out += [f"### {d.title}", "", md_table(d.head, d.rows), ""]
            if d.text:
                out += ["```", d.text, "```", ""]
    notes = [n for p in parts for n in p.notes] + errors
    if "uvloop" in info["libs"] and info["libs"]["uvloop"] == "not installed":
        notes.append("uvloop is not installed: asyncio runs on its default event loop.")
    notes.append("Not included yet: h11's ReceiveBuffer inside an event loop; byte-at-a-time "
                 "delivery; 4 MiB frames over loopback.")
    out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Reproducing", "", "```sh", "make bench          # full run, rewrites this file",
            "make bench-quick    # under 2 minutes, prints the table only",
            ".venv/bin/python -m membuf bench --only split stream   # some parts",
            "```", "", "Every part also runs alone: `benchmarks/suite_alloc.py`, "
            "`suite_split.py`, `suite_stream.py`, `bench_memory.py`, and the older "
            "single-purpose scripts (`bench_alloc.py`, `bench_split.py`, `bench_reader.py`, "
            "`bench_stream.py`, `bench_idle.py`, `bench_rtmp.py`).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m membuf bench",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs: under 2 minutes")
    ap.add_argument("--check", action="store_true",
                    help="tiny sizes, checksums and harness self-checks only (timings mean nothing)")
    ap.add_argument("--only", nargs="+", choices=list(PARTS), help="run only these parts")
    ap.add_argument("--docs", type=Path, default=None,
                    help=f"write the report here (default: {DOC.relative_to(REPO)} on full runs "
                         "of every part)")
    ap.add_argument("--no-docs", action="store_true", help="do not write the report or plots")
    ap.add_argument("--json", type=Path, help="also write every figure as JSON")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    mode = Mode(quick=args.quick, check=args.check)
    names = args.only or list(PARTS)
    if mode.check:
        names = [n for n in names if n != "rtmp"] if args.only is None else names
    modules = {n: importlib.import_module(PARTS[n]) for n in names}
    info = machine()
    t0 = time.monotonic()
    print(f"membuf benchmark suite, {mode.name} run: {info['cpu']}, {info['cores']} cores, "
          f"{info['python']}, load average {info['load_before'][0]:.2f}", flush=True)
    sanity: list[str] = []
    parts: list[Part] = []
    errors: list[str] = []
    total = sum(m.steps(mode) for m in modules.values()) + (1 if mode.check else 0)
    with Progress(total, enabled=not args.no_progress) as prog:
        if mode.check:
            prog.step("self-checks of the harness")
            sanity = self_check()
            prog.advance()
        for name, module in modules.items():
            try:
                parts += module.measure(mode, prog)
            except CheckError as exc:
                errors.append(f"{name}: CHECK FAILED: {exc}")
                prog.log(errors[-1])
            except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                prog.log("".join(traceback.format_exception(exc))[-3000:])
    elapsed = time.monotonic() - t0
    rows = [r for p in parts for r in p.rows]
    if mode.check:                       # tiny sizes: the figures say nothing about targets
        for r in rows:
            r.target, r.target_text = None, ""
    print()
    print(text_table(("#", *TABLE_HEAD), [[str(i), *row_cells(r)] for i, r in enumerate(rows, 1)]))
    for i, r in enumerate(rows, 1):
        if r.note:
            print(f"  #{i}: {r.note}")
    print("\nratio: how many times better membuf is (>1 ahead, <1 behind) whatever the unit's "
          "direction; load: 1-minute load average when the row was measured")
    tg = targets(rows)
    if tg:
        print(f"targets: {sum(r.status == 'met' for r in tg)} met, "
              f"{sum(r.status == 'MISSED' for r in tg)} missed")
        for r in tg:
            print(f"  {r.status:<6} {r.group}, {r.workload}: {fmt_ratio(r.ratio, r.target)} "
                  f"(target {r.target_text or f'>= {r.target:g}x'})")
    for n in (n for p in parts for n in p.notes):
        print(f"note: {n}")
    if mode.check:
        print("check run: tiny sizes, one round; the figures mean nothing, targets not judged")
    for line in sanity:
        print(f"self-check ok: {line}")
    print(f"{checks_made()} checksums verified; {len(errors)} failures; "
          f"{elapsed:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    for e in errors:
        print(f"FAILED: {e}", file=sys.stderr)
    data: dict[str, Any] = {}
    for p in parts:
        data.update(p.data)
    subtitle = f"{info['cpu']}, {info['cores']} cores, {info['date']}, {mode.name} run"
    write_docs = not args.no_docs and (args.docs is not None or (
        not mode.quick and not mode.check and not args.only))   # docs/benchmarks.md: whole runs
    if mode.check:                       # the report and plots must render; written nowhere
        with tempfile.TemporaryDirectory() as d:
            import plots

            drawn = plots.draw_all(data, Path(d), subtitle)
            render_doc(mode, argv, info, parts, drawn, list(os.getloadavg()), elapsed, errors)
            print(f"self-check ok: the report renders; {len(drawn)} plots render"
                  + ("" if drawn else " (matplotlib not installed)"))
    elif write_docs:
        import plots

        drawn = plots.draw_all(data, IMG, subtitle)
        doc = args.docs or DOC
        doc.write_text(render_doc(mode, argv, info, parts, drawn, list(os.getloadavg()),
                                  elapsed, errors))
        print(f"wrote {doc}" + (f" and {', '.join(str(p.relative_to(REPO)) for p in drawn)}"
                                if drawn else " (no plots: matplotlib not installed)"))
        headline = next((p for p in drawn if p.name == plots.HEADLINE), None) or next(
            (p for p in drawn if p.name == plots.HEADLINE_FALLBACK), None)
        if headline:
            print(f"headline plot: {headline.relative_to(REPO)}")
    if args.json:
        args.json.write_text(json.dumps({"mode": mode.name, "machine": info,
                                         "rows": [r.to_json() for r in rows], "data": data,
                                         "errors": errors}, indent=1, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
