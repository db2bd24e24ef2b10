"""Suite part: RTMP ingest, membuf serve-rtmp against pyrtmp (``bench_rtmp.py``, full runs only).

Runs ``benchmarks/bench_rtmp.py`` as a subprocess (ffmpeg pushes one
pre-encoded FLV into each server in turn, alternating, several rounds) and
reads its table. Skipped, with a note, when ffmpeg or pyrtmp is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

from _common import HERE, Detail, Mode, Part, Progress, Row

MEDIA_DOC = "docs/media.md"


def parse(text: str) -> dict[str, list[float]]:
    """``{server: [media MB, best MB/s, median MB/s, MB/s over ffmpeg wall, MB per CPU-s]}``."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(membuf|pyrtmp)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$",
                     line)
        if m:
            out[m.group(1)] = [float(x) for x in m.groups()[1:]]
    return out


def measure(mode: Mode, prog: Progress) -> list[Part]:
    part = Part("RTMP ingest")
    if mode.quick or mode.check:
        part.notes.append(f"RTMP ingest (serve-rtmp vs pyrtmp) runs in the full suite only; "
                          f"see {MEDIA_DOC} for its last figures.")
        return [part]
    if not shutil.which("ffmpeg"):
        part.notes.append("RTMP ingest skipped: ffmpeg is not installed.")
        return [part]
    if importlib.util.find_spec("pyrtmp") is None:
        part.notes.append("RTMP ingest skipped: pyrtmp is not installed (pip install pyrtmp); "
                          f"last figures in {MEDIA_DOC}.")
        return [part]
    rounds, seconds = 5, 20
    prog.step(f"RTMP ingest: ffmpeg -> serve-rtmp / pyrtmp, {rounds} rounds of a {seconds} s FLV")
    proc = subprocess.run([sys.executable, str(HERE / "bench_rtmp.py"), "--rounds", str(rounds),
                           "--seconds", str(seconds)], capture_output=True, text=True, timeout=600)
    prog.advance()
    res = parse(proc.stdout)
    if proc.returncode or "membuf" not in res:
        part.notes.append(f"RTMP ingest failed ({proc.returncode}): {proc.stderr[-500:]}")
        return [part]
    head = ["server", "media MB", "MB/s (best)", "MB/s (median)", "MB/s over ffmpeg wall",
            "MB per CPU-second (median)"]
    part.details.append(Detail(
        f"RTMP ingest: ffmpeg pushes a {seconds} s 720p FLV (-c copy, no -re), {rounds} rounds "
        "alternating (bench_rtmp.py)", head,
        [[k] + [f"{x:.1f}" for x in v] for k, v in res.items()], text=proc.stdout.strip()))
    part.notes.append(f"RTMP ingest: method, memory model and earlier figures in {MEDIA_DOC} "
                      "(section \"Speed: serve-rtmp against pyrtmp\").")
    if "pyrtmp" in res:
        m, p = res["membuf"], res["pyrtmp"]
        part.rows.append(Row("RTMP ingest", "ffmpeg -> server, MB per CPU-second", "MB/CPU-s",
                             "membuf serve-rtmp", m[4], m[4], m[4], "pyrtmp 0.3.1 (asyncio)",
                             p[4], p[4], p[4], note="median of rounds; steadier than MB/s"))
        part.rows.append(Row("RTMP ingest", "ffmpeg -> server, payload MB/s", "MB/s",
                             "membuf serve-rtmp", m[2], m[2], m[2], "pyrtmp 0.3.1 (asyncio)",
                             p[2], p[2], p[2],
                             note=f"median of rounds; best {m[1]:.1f} vs {p[1]:.1f} MB/s"))
    return [part]


def steps(mode: Mode) -> int:
    return 0 if mode.quick or mode.check else 1
