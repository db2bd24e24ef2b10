"""Suite part: splitting frames in memory (no I/O), CRLF lines, reader calls, and their floor.

One seeded stream per (framing, frame size), cut into 64 KiB chunks, is fed to
every contender of ``contenders.split_cases``; each one's checksum is verified
before it is timed. Reader calls time one value per call (``Reader.read_be``
against ``struct`` and ``int.from_bytes``, ``Reader.read_leb128`` against the
plain varint decoder and PyPI ``leb128``), each form's sum of values checked.

The floor: the cost of one memoryview made in C (slices taken in a C loop, kept
until the batch is dropped), the least a frame handed out as a view can cost;
the split rows are read against it as the allocator is against one cffi call
(and one row puts split_views' ns per frame next to it).

Targets (docs/benchmarks.md, "Compiled Reader and framers"): split_views leb128
16..300 B at 3x the plain loop and 2x its memoryview form, within 1.5x of the
floor; 64 KiB frames at 1x the memoryview form; read_be(4) at 1.2x struct with a
manual cursor; read_leb128() at 2x the inline varint loop.

    python -m membuf bench --only split [--quick | --check]
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from functools import partial
from itertools import repeat
from typing import Any

import contenders as c
from _common import (
    Detail,
    Figure,
    Mode,
    Part,
    Progress,
    Row,
    chunked,
    fmt,
    frame_stream,
    interleaved,
    size_label,
    uleb,
    verify,
)

from membuf import Reader
from membuf.codecs import LengthPrefixed

MEMBUF = "membuf split_views"
PLAIN = "plain loop"
VIEWS = "plain loop, memoryview slices"
# (framing, frame size, baseline) -> the ratio split_views must reach
TARGETS = {("leb128", "16-300", PLAIN): 3.0, ("leb128", "16-300", VIEWS): 2.0,
           ("leb128", "65536", VIEWS): 1.0}


def stream_for(kind: str, spec: str, mode: Mode) -> tuple[bytes, tuple[int, int, int]]:
    budget, lo, hi = mode.pick((160 << 10, 4, 2_000), (2 << 20, 32, 12_000),
                               (16 << 20, 256, 100_000))
    mean = (sum(int(x) for x in spec.split("-")) / 2) if "-" in spec else int(spec)
    frames = int(min(max(budget / (mean + 4), lo), hi))
    return frame_stream(kind, spec, int(frames * (mean + 4)), seed=7, min_frames=frames)


def per_second(count: int, seconds: float) -> float:
    return count / seconds / 1e6


Result = dict[str, tuple[Figure, Figure]]        # contender -> (MB/s, M frames/s)


def run_matrix(kind: str, specs: list[str], mode: Mode, prog: Progress,
               rounds: int) -> dict[str, Result]:
    out: dict[str, Result] = {}
    for spec in specs:
        prog.step(f"split {kind} {size_label(spec)}")
        data, want = stream_for(kind, spec, mode)
        chunks = chunked(data)
        cases = c.split_cases(kind)
        for name, fn in cases.items():
            verify(f"{kind} {spec} {name}", fn(chunks), want)
        figs = interleaved({n: partial(f, chunks) for n, f in cases.items()}, rounds,
                           warmup=0 if mode.check else 1)
        out[spec] = {n: (f.scaled(partial(per_second, want[1])),
                         f.scaled(partial(per_second, want[0]))) for n, f in figs.items()}
        prog.advance()
    return out


def best_baseline(res: Result) -> str:
    return max((n for n in res if not n.startswith("membuf")), key=lambda n: res[n][1].median)


def view_floor(mode: Mode, prog: Progress) -> tuple[Row, Detail, Any, Any]:
    """ns per memoryview made in C, the cheapest of a few honest forms: each view a real
    object, alive until its batch is dropped, as split_views hands them out (the cast form
    views the whole chunk: no offsets to apply, the least a view can cost). Measured in the
    same rounds: split_views of the same frames (LEB128-prefixed, in one 64 KiB segment),
    the per-frame cost the floor bounds."""
    prog.step("limit: one memoryview made in C")
    rng = random.Random(11)
    chunk = memoryview(rng.randbytes(64 << 10))
    slices, p = [], 0
    while (n := rng.randint(16, 300)) + p + 1 <= len(chunk):
        slices.append(slice(p + 1, p + 1 + n))
        p += 1 + n
    batches, k = mode.pick(20, 300, 2_000), len(slices)
    many = operator.itemgetter(*slices)
    get = chunk.__getitem__

    def loop(form: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(batches):
                form()
        return run

    cast = chunk.cast
    # C loops, the views of a batch kept in a tuple or a list
    forms: dict[str, Callable[[], object]] = {
        "operator.itemgetter(*slices)(mv)": loop(lambda: many(chunk)),
        "list(map(mv.__getitem__, slices))": loop(lambda: list(map(get, slices))),
        "list(map(mv.cast, repeat('B', n)))": loop(lambda: list(map(cast, repeat("B", k)))),
    }
    framed = b"".join(uleb(s.stop - s.start) + bytes(chunk[s]) for s in slices)
    codec = LengthPrefixed("leb128", max_frame=1 << 20)
    split_form = "LengthPrefixed.split_views, one segment"
    split_views = codec.split_views
    assert [bytes(v) for v in split_views(Reader(framed))] == [bytes(chunk[s]) for s in slices]
    views = many(chunk)
    verify("memoryview floor", (len(views), sum(map(len, views)), sum(v[0] for v in views)),
           (k, sum(s.stop - s.start for s in slices), sum(chunk[s.start] for s in slices)))
    forms[split_form] = loop(lambda: split_views(Reader(framed)))
    figs = {n: f.scaled(lambda s: s / (batches * k) * 1e9)
            for n, f in interleaved(forms, mode.pick(1, 5, 9)).items()}
    mine = figs.pop(split_form)
    best = min(figs, key=lambda n: figs[n].median)
    f = figs[best]
    prog.advance()
    row = Row.of("limit", "one memoryview made in C, per view (16..300 B slices, 64 KiB chunk)",
                 "ns/view", best, f, note=f"the floor of a frame as a view: at most "
                 f"{1e3 / f.median:.1f} M frames/s; the frame split rows follow")
    detail = Detail(f"One memoryview made in C: ns per view, {k} views per batch, CPU time "
                    "(the row above uses the cheapest)", ["form", "ns/view", "min..max"],
                    [[n, fmt(v.median), f"{fmt(v.lo)}..{fmt(v.hi)}"]
                     for n, v in {**figs, split_form: mine}.items()])
    return row, detail, f, mine


def split_part(mode: Mode, prog: Progress) -> Part:
    part = Part("frame split")
    row, floor, floor_fig, split_fig = view_floor(mode, prog)
    part.rows.append(row)
    part.rows.append(Row.of(
        "frame split", "leb128 16..300 B, one segment, per frame vs the floor", "ns/frame",
        "LengthPrefixed.split_views", split_fig, "one memoryview made in C (limit)", floor_fig,
        higher_is_better=False, target=1 / 1.5, target_text="within 1.5x",
        note="same rounds; the scan and the output list are in the membuf figure"))
    rounds = mode.pick(1, 3, 9)
    specs = mode.pick(["16-300", "16", "65536"], ["16-300", "16", "256", "4096", "65536"],
                      ["16-300", "16", "64", "256", "1024", "4096", "16384", "65536"])
    shown = {"leb128": ("16-300", "16", "65536"), "be32": ("16-300", "65536")}
    matrix: dict[str, Any] = {}
    for kind in ("leb128", "be32"):
        res = run_matrix(kind, specs, mode, prog, rounds)
        matrix[kind] = {spec: {n: v[0].median for n, v in r.items()} for spec, r in res.items()}
        part.details.append(Detail(
            f"Frame split in memory, {kind} prefix: M frames/s and payload MB/s, median of "
            f"{rounds} interleaved rounds (CPU time)", ["frame size", *next(iter(res.values()))],
            [[size_label(spec)] + [f"{fmt(v[1].median)} M/s, {fmt(v[0].median)} MB/s"
                                   for v in r.values()] for spec, r in res.items()]))
        for spec in (s for s in specs if s in shown[kind]):
            r, best = res[spec], best_baseline(res[spec])
            for base in dict.fromkeys(([PLAIN, VIEWS] if spec == "16-300" else [VIEWS]) + [best]):
                tgt = TARGETS.get((kind, spec, base)) if base in r else None
                if base not in r:
                    continue
                part.rows.append(Row.of(
                    "frame split", f"{kind} {size_label(spec)}", "M frames/s",
                    f"{MEMBUF} (batch sums)", r[MEMBUF][1], base, r[base][1],
                    target=tgt, note="best baseline" if base == best else ""))
    part.details.append(floor)
    part.data["split"] = matrix
    lines = run_matrix("crlf", ["16-300"], mode, prog, rounds)["16-300"]
    part.details.append(Detail(
        f"CRLF lines of 16..300 B in memory, median of {rounds} rounds",
        ["contender", "M lines/s", "min..max", "MB/s"],
        [[n, fmt(v[1].median), f"{fmt(v[1].lo)}..{fmt(v[1].hi)}", fmt(v[0].median)]
         for n, v in lines.items()]))
    for base in dict.fromkeys([best_baseline(lines), "plain loop (bytearray.find)"]):
        part.rows.append(Row.of("delimiter", "CRLF lines 16..300 B", "M lines/s",
                                "membuf Delimited.split_views (batch sums)", lines[MEMBUF][1],
                                base, lines[base][1]))
    return part


def reader_part(mode: Mode, prog: Progress) -> Part:
    """Every form is checked (its sum of values) and then timed as it was checked."""
    part = Part("reader calls")
    prog.step("reader calls: read_be / read_leb128 against struct, int.from_bytes, leb128")
    n, rounds = mode.pick(2_000, 30_000, 200_000), mode.pick(1, 3, 9)
    rng = random.Random(3)
    be = [rng.getrandbits(32) for _ in range(n)]
    blob = b"".join(v.to_bytes(4, "big") for v in be)
    leb = [rng.randrange(1 << 14, 1 << 21) for _ in range(n)]      # 3 bytes each
    lblob = b"".join(map(uleb, leb))
    forms: dict[str, tuple[Callable[[], int], int]] = {
        "struct.Struct('>I').unpack_from": (partial(c.struct_reads, blob, n), sum(be)),
        "Reader.read_be(4), one segment": (partial(c.reader_be_reads, [blob], n), sum(be)),
        "Reader.read_be(4), 4 KiB segments": (partial(c.reader_be_reads, chunked(blob, 4096), n),
                                              sum(be)),
        "int.from_bytes(mv[i:i+4], 'big')": (partial(c.from_bytes_reads, blob, n), sum(be)),
        "Reader.read_leb128()": (partial(c.reader_leb128_reads, lblob, n), sum(leb)),
        "plain-Python varint loop": (partial(c.varint_reads, lblob, n), sum(leb)),
        "plain-Python varint loop, inline": (partial(c.inline_varint_reads, lblob, n), sum(leb)),
    }
    if c.have("leb128"):
        forms["leb128.u.decode_reader(BytesIO)"] = (partial(c.leb128_reader_reads, lblob, n),
                                                    sum(leb))
        forms["leb128.u.decode(pre-cut slice)"] = (partial(c.leb128_decode_reads, lblob, n),
                                                   sum(leb))
    for name, (fn, want) in forms.items():
        verify(f"reader {name}", (fn(),), (want,))
    figs = interleaved({k: f for k, (f, _) in forms.items()}, rounds)
    per = {k: v.scaled(lambda s: s / n * 1e9) for k, v in figs.items()}
    prog.advance()
    part.details.append(Detail(
        f"Reader calls, ns per read (the loop and a running sum included, alike for every "
        f"form), {n} reads per round, median of {rounds} rounds", ["form", "ns/read",
                                                                    "min..max"],
        [[k, fmt(v.median), f"{fmt(v.lo)}..{fmt(v.hi)}"] for k, v in per.items()]))
    for mine, bases in (
        ("Reader.read_be(4), 4 KiB segments",
         ["struct.Struct('>I').unpack_from", "int.from_bytes(mv[i:i+4], 'big')"]),
        ("Reader.read_leb128()", ["plain-Python varint loop, inline", "plain-Python varint loop",
                                  "leb128.u.decode_reader(BytesIO)"]),
    ):
        for base in bases:
            if base not in per:
                part.notes.append(f"{base}: not installed, not compared")
                continue
            tgt = {"struct.Struct('>I').unpack_from": 1.2,
                   "plain-Python varint loop, inline": 2.0}.get(base)
            part.rows.append(Row.of("reader calls", mine.split(",")[0], "ns/read", mine,
                                    per[mine], base, per[base], higher_is_better=False,
                                    target=tgt))
    return part


def steps(mode: Mode) -> int:
    return 2 * len(mode.pick([0] * 3, [0] * 5, [0] * 8)) + 1 + 1 + 1


def measure(mode: Mode, prog: Progress) -> list[Part]:
    return [split_part(mode, prog), reader_part(mode, prog)]
