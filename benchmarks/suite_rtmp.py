"""Suite part: RTMP ingest against pyrtmp, and RTMP relay against nginx-rtmp.

Ingest (full runs, when pyrtmp is installed).

ffmpeg pushes one FLV (x264 ultrafast at a high rate + AAC, made once into a
cache directory) as fast as it can (``-c copy``, no ``-re``) to each server in
turn, rounds alternating. Each server runs in its own process (this file with
``--serve-membuf`` / ``--serve-pyrtmp``; pyrtmp's SimpleRTMPController with
handlers that count bytes) and reports the media payload bytes it received, the
time from ``publish`` to the end of the connection (handshake and ffmpeg's
start-up left out, for both) and its CPU time over that interval.

Relay (full runs: 0 (the publisher alone), 1, 10 and 50 players, 3 rounds; quick runs: 10
players, one round; when nginx and libnginx-mod-rtmp are installed). Each relay
(contenders.py: nginx-rtmp with one worker, ``python -m membuf serve-rtmp --quiet --json``)
runs fresh per measurement on a free loopback port. N ffmpeg players (``-c copy -f flv``, one
recording each) connect first and wait; once the server is idle the suite reads its RSS,
then ``ffmpeg -re`` pushes one 8 s 640x360 H.264 + AAC FLV once, and every player ends when
the publisher leaves. Server CPU (the run time of every thread of every process of the
server, utime + stime to the nanosecond) is read before the push and after the last player
ended; relayed MB = the FLV's size x N. ffprobe counts each recording's packets, which must
equal its count on the source (a mismatch is printed and noted, never hidden).

    make bench-deps     # pyrtmp (pip), nginx + libnginx-mod-rtmp (apt-get): benchmark only
    python -m membuf bench --only rtmp
    python benchmarks/suite_rtmp.py --relay [--players 0 1 10 50] [--rounds 3]  # relay alone
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import contenders
from _common import TABLE_HEAD, Detail, Figure, Mode, Part, Progress, Row, fmt, md_table, row_cells

MEDIA_DOC = "docs/media.md"
FFMPEG_TIMEOUT = 120
CACHE = Path(tempfile.gettempdir()) / "membuf-bench"
INGEST_X264 = ["-qp", "12"]                                    # 720p at a high rate
RELAY_X264 = ["-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M"]  # 360p at a live rate


def make_fixture(path: Path, seconds: int, size: str = "1280x720",
                 rate: list[str] = INGEST_X264) -> None:
    """An H.264 (x264 ultrafast, a keyframe every 2 s) + AAC FLV from ffmpeg's test sources,
    made once into ``path``."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flv")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
         "-preset", "ultrafast", *rate,
         "-g", "60", "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(tmp)],
        check=True, timeout=FFMPEG_TIMEOUT * 4)
    tmp.rename(path)


def serve_pyrtmp(port_file: str) -> dict[str, float]:
    import asyncio
    import logging

    from pyrtmp.rtmp import RTMPProtocol, SimpleRTMPController

    logging.disable(logging.CRITICAL)  # pyrtmp configures DEBUG logging at import
    result: dict[str, float] = {}
    done = asyncio.Event()

    class Counting(SimpleRTMPController):
        async def client_callback(self, reader, writer):  # type: ignore[no-untyped-def]
            self.nbytes = 0
            self.t0, self.c0 = time.perf_counter(), time.process_time()
            await super().client_callback(reader, writer)
            result.update(bytes=self.nbytes, seconds=time.perf_counter() - self.t0,
                          cpu=time.process_time() - self.c0)
            done.set()

        async def on_ns_publish(self, session, message):  # type: ignore[no-untyped-def]
            await super().on_ns_publish(session, message)
            self.t0, self.c0 = time.perf_counter(), time.process_time()   # at publish

        async def on_video_message(self, session, message):  # type: ignore[no-untyped-def]
            self.nbytes += message.msg_length

        async def on_audio_message(self, session, message):  # type: ignore[no-untyped-def]
            self.nbytes += message.msg_length

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: RTMPProtocol(controller=Counting()), host="127.0.0.1", port=0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await done.wait()
        server.close()

    asyncio.run(main())
    return result


def serve_membuf(port_file: str) -> dict[str, float]:
    import trio

    from membuf.media.servers import RtmpServer

    class Timed(RtmpServer):
        def start_stream(self, key, counts):  # type: ignore[no-untyped-def]
            self.t0, self.c0 = time.perf_counter(), time.process_time()   # at publish
            return super().start_stream(key, counts)

        async def ingest(self, conn, peer):  # type: ignore[no-untyped-def]
            try:
                await super().ingest(conn, peer)
            finally:
                self.t1, self.c1 = time.perf_counter(), time.process_time()

    server = Timed(json_out=True, once=True, live=False, out=open(os.devnull, "w"))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            Path(port_file).write_text(str(await nursery.start(server.run, 0)))

    trio.run(main)
    return {"bytes": server.finished[0].counts.bytes, "seconds": server.t1 - server.t0,
            "cpu": server.c1 - server.c0}


def push(kind: str, flv: Path) -> dict[str, float]:
    """One ffmpeg push into a fresh server process; its figures and ffmpeg's wall time."""
    with tempfile.TemporaryDirectory() as d:
        port_file = os.path.join(d, "port")
        srv = subprocess.Popen([sys.executable, __file__, f"--serve-{kind}", port_file],
                               stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                if time.monotonic() > deadline or srv.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start")
                time.sleep(0.05)
            t0 = time.perf_counter()
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(flv),
                            "-c", "copy", "-f", "flv",
                            f"rtmp://127.0.0.1:{Path(port_file).read_text()}/live/bench"],
                           check=True, timeout=FFMPEG_TIMEOUT)
            wall = time.perf_counter() - t0
            out, _ = srv.communicate(timeout=60)
        finally:
            if srv.poll() is None:
                srv.kill()
    res: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    res["wall"] = wall
    return res


def measure(mode: Mode, prog: Progress) -> list[Part]:
    """The ingest part, then the relay part; a relay that fails keeps the ingest rows and
    says so loudly in the notes (and on stderr), with its error."""
    parts = [ingest(mode, prog)]
    try:
        parts.append(relay(mode, prog))
    except Exception as exc:  # noqa: BLE001 - the ingest rows must not be lost with it
        msg = f"RTMP relay FAILED: {type(exc).__name__}: {exc}"
        prog.log(msg)
        parts.append(Part("RTMP relay", notes=[msg]))
    return parts


def ingest(mode: Mode, prog: Progress) -> Part:
    part = Part("RTMP ingest")
    missing = ("it runs in full runs only" if mode.quick or mode.check else
               "ffmpeg is not installed" if not shutil.which("ffmpeg") else
               "pyrtmp is not installed" if importlib.util.find_spec("pyrtmp") is None else "")
    if missing:
        part.notes.append(f"RTMP ingest (serve-rtmp vs pyrtmp) skipped: {missing}; last figures "
                          f"in {MEDIA_DOC}.")
        return part
    rounds, seconds = 5, 20
    prog.step(f"RTMP ingest: ffmpeg -> serve-rtmp / pyrtmp, {rounds} rounds of a {seconds} s FLV")
    flv = CACHE / f"bench-{seconds}s.flv"
    make_fixture(flv, seconds)
    runs: dict[str, list[dict[str, float]]] = {"membuf": [], "pyrtmp": []}
    for _ in range(rounds):
        for k, v in runs.items():
            v.append(push(k, flv))
    prog.advance()
    fig: dict[str, list[float]] = {}
    for k, v in runs.items():
        rates = [r["bytes"] / r["seconds"] / 1e6 for r in v]
        fig[k] = [v[0]["bytes"] / 1e6, max(rates), statistics.median(rates),
                  max(r["bytes"] / r["wall"] / 1e6 for r in v),
                  statistics.median(r["bytes"] / max(r["cpu"], 1e-9) / 1e6 for r in v)]
    part.details.append(Detail(
        f"RTMP ingest: ffmpeg pushes a {seconds} s 720p FLV (-c copy, no -re), {rounds} rounds "
        "alternating", ["server", "media MB", "MB/s (best)", "MB/s (median)",
                        "MB/s over ffmpeg wall", "MB per CPU-second (median)"],
        [[k] + [f"{x:.1f}" for x in v] for k, v in fig.items()]))
    part.notes.append(f"RTMP ingest: method, memory model and earlier figures in {MEDIA_DOC} "
                      "(section \"Speed: serve-rtmp against pyrtmp\").")
    m, p = fig["membuf"], fig["pyrtmp"]
    per_cpu = {k: Figure([r["bytes"] / max(r["cpu"], 1e-9) / 1e6 for r in v])
               for k, v in runs.items()}
    base = f"pyrtmp {version('pyrtmp')} (asyncio)"
    part.rows.append(Row.of("RTMP ingest", "ffmpeg -> server, MB per CPU-second", "MB/CPU-s",
                            "membuf serve-rtmp", per_cpu["membuf"], base, per_cpu["pyrtmp"],
                            target=6.0,
                            target_text=">= 6x (goal 10x)",
                            note="median of rounds; steadier than MB/s"))
    part.rows.append(Row.of("RTMP ingest", "ffmpeg -> server, payload MB/s", "MB/s",
                            "membuf serve-rtmp", m[2], base, p[2],
                            note=f"median of rounds; best {m[1]:.1f} vs {p[1]:.1f} MB/s"))
    return part


# -- relay: one publisher, N players, each relay in turn -------------------------------------------

RELAY_SECONDS = 8
RELAY_SIZE = "640x360"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def relay_plan(mode: Mode) -> tuple[list[int], int]:
    """(player counts, rounds) of a run; no relay run in check runs."""
    return mode.pick(([], 0), ([10], 1), ([0, 1, 10, 50], 3))


def relay_missing(mode: Mode) -> str:
    if mode.check:
        return "check runs leave it out"
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        return "ffmpeg/ffprobe are not installed"
    return contenders.NginxRelay.missing()


def cpu_ticks(pids: list[int]) -> float:
    """utime + stime of these processes (/proc/PID/stat), in seconds (10 ms steps)."""
    ticks = 0
    for pid in pids:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(f[11]) + int(f[12])
    return ticks / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes in seconds, to the nanosecond: the run time of each of
    their threads (/proc/PID/task/TID/schedstat); :func:`cpu_ticks` where that is missing.
    The same clock as utime + stime, finer: nginx relays 22 MB in a few ticks."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0])
                   for pid in pids for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_ticks(pids)


def rss_bytes(pids: list[int], field: str = "VmRSS") -> int:
    """The sum of /proc/PID/status ``field`` (VmRSS, VmHWM) over these processes."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1]) * 1024
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def packets(path: Path) -> tuple[int, int]:
    """ffprobe's (video, audio) packet counts of an FLV; (-1, -1) if it cannot read it."""
    res = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,nb_read_packets", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=FFMPEG_TIMEOUT)
    if res.returncode != 0 or not path.exists():
        return (-1, -1)
    got = {s.get("codec_type"): int(s.get("nb_read_packets", 0))
           for s in json.loads(res.stdout).get("streams", [])}
    return (got.get("video", 0), got.get("audio", 0))


def wait_quiet(pids: list[int], settle: float = 0.5, limit: float = 10) -> None:
    """Until the server has used no CPU for ``settle`` seconds (every player's handshake and
    play answered), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = cpu_seconds(pids)
        if now == last:
            return
        last = now


def relay_once(kind: str, n: int, flv: Path, want: tuple[int, int],
               tmp: Path) -> dict[str, Any]:
    """One measurement: a fresh ``kind`` relay, ``n`` players waiting, one ``-re`` push."""
    run = tmp / f"{kind}-{n}"
    run.mkdir()
    port = free_port()
    server = contenders.RELAYS[kind](port, run)
    url = f"rtmp://127.0.0.1:{port}/live/bench"
    players: list[subprocess.Popen[bytes]] = []
    problems: list[str] = []
    load = os.getloadavg()[0]
    server.start()
    try:
        pids = server.pids()
        time.sleep(0.3)
        rss0 = rss_bytes(pids)
        for i in range(n):
            with open(run / f"p{i}.err", "wb") as err:
                players.append(subprocess.Popen(
                    ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", url,
                     "-c", "copy", "-f", "flv", str(run / f"p{i}.flv")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err))
        deadline = time.monotonic() + 60
        while contenders.tcp_sockets(port, "01") < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: only {contenders.tcp_sockets(port, '01')} of {n} "
                                   "players connected within 60 s")
            time.sleep(0.1)
        wait_quiet(pids)
        early = [i for i, p in enumerate(players) if p.poll() is not None]
        if early:
            problems.append(f"{len(early)} players ended before the publisher came (player "
                            f"{early[0]}: {(run / f'p{early[0]}.err').read_text()[-300:]!r})")
        rss_idle = rss_bytes(pids)
        cpu0, tick0, t0 = cpu_seconds(pids), cpu_ticks(pids), time.perf_counter()
        pub = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-re",
                              "-i", str(flv), "-c", "copy", "-f", "flv", url],
                             capture_output=True, text=True, timeout=FFMPEG_TIMEOUT)
        if pub.returncode != 0:
            problems.append(f"the publisher failed ({pub.returncode}): {pub.stderr[-300:]!r}")
        t_push = time.perf_counter() - t0
        deadline = time.monotonic() + 30
        for p in players:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        hung = [i for i, p in enumerate(players) if p.poll() is None]
        if hung:
            problems.append(f"{len(hung)} of {n} players had not ended 30 s after the "
                            "publisher left: stopped with SIGINT (ffmpeg closes its recording)")
            for i in hung:
                players[i].send_signal(signal.SIGINT)
            stop_by = time.monotonic() + 3
            for i in hung:
                try:
                    players[i].wait(timeout=max(0.1, stop_by - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass                                # killed below
        t_end = time.perf_counter() - t0
        cpu1, tick1 = cpu_seconds(pids), cpu_ticks(pids)
        hwm = rss_bytes(pids, "VmHWM")
    finally:
        for p in players:
            if p.poll() is None:
                p.kill()
                p.wait()
        summary = server.stop()
    failed = [i for i, p in enumerate(players) if p.returncode not in (0, None)]
    if failed and not hung:
        problems.append(f"{len(failed)} players exited with an error (player {failed[0]}: "
                        f"{(run / f'p{failed[0]}.err').read_text()[-300:]!r})")
    counts = [packets(run / f"p{i}.flv") for i in range(n)]
    bad = [(i, c) for i, c in enumerate(counts) if c != want]
    if bad:
        problems.append(f"PACKET COUNT MISMATCH: {len(bad)} of {n} players; source (video, "
                        f"audio) = {want}, player {bad[0][0]} got {bad[0][1]}"
                        + (f", counts seen {sorted(set(counts))[:6]}" if len(bad) > 1 else ""))
    stream = summary.get("live/bench", {})
    res: dict[str, Any] = {
        "relay": kind, "players": n, "load": load, "source_bytes": flv.stat().st_size,
        "relayed_mb": flv.stat().st_size * n / 1e6, "cpu": cpu1 - cpu0,
        "cpu_stat": tick1 - tick0,
        "rss_before": rss0, "rss_idle": rss_idle, "rss_peak": hwm, "push_wall": t_push,
        "end_wall": t_end, "counts": counts, "problems": problems, "summary": stream,
    }
    res["cpu_ms_per_mb"] = res["cpu"] * 1e3 / max(res["relayed_mb"], 1e-9)
    res["rss_per_player"] = (rss_idle - rss0) / max(n, 1)
    shutil.rmtree(run, ignore_errors=True)
    return res


def relay_runs(kinds: list[str], ns: list[int], rounds: int, prog: Progress | None = None,
               ) -> tuple[Path, tuple[int, int], dict[tuple[str, int], list[dict[str, Any]]]]:
    """Every (relay, N) ``rounds`` times: per N, the relays alternate and the first rotates."""
    flv = CACHE / f"relay-{RELAY_SIZE}-{RELAY_SECONDS}s.flv"
    make_fixture(flv, RELAY_SECONDS, RELAY_SIZE, RELAY_X264)
    want = packets(flv)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(k, n): [] for k in kinds for n in ns}
    with tempfile.TemporaryDirectory(prefix="membuf-relay-") as d:
        for r in range(rounds):
            for n in ns:
                order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
                for kind in order:
                    if prog is not None:
                        prog.step(f"RTMP relay: {kind}, {n} players, round {r + 1}/{rounds}")
                    res = relay_once(kind, n, flv, want, Path(d))
                    runs[(kind, n)].append(res)
                    line = (f"  relay {kind:<10} N={n:<3} CPU {res['cpu']:.3f} s "
                            f"(utime+stime {res['cpu_stat']:.2f} s) = "
                            f"{res['cpu_ms_per_mb'] if n else float('nan'):.2f} ms/MB; RSS/idle player "
                            f"{res['rss_per_player'] / 1024:.0f} KiB; packets ok "
                            f"{sum(c == want for c in res['counts'])}/{n}")
                    for msg in res["problems"]:
                        line += f"\n  !!! {kind} N={n}: {msg}"
                    if prog is not None:
                        prog.log(line)
                        prog.advance()
                    else:
                        print(line, flush=True)
    return flv, want, runs


def relay(mode: Mode, prog: Progress) -> Part:
    part = Part("RTMP relay")
    missing = relay_missing(mode)
    if missing:
        part.notes.append(f"RTMP relay (serve-rtmp vs nginx-rtmp) skipped: {missing}; last "
                          "figures in docs/benchmarks.md, section \"RTMP relay vs nginx-rtmp\".")
        return part
    ns, rounds = relay_plan(mode)
    flv, want, runs = relay_runs(list(contenders.RELAYS), ns, rounds, prog)
    return relay_report(part, flv, want, runs)


def relay_report(part: Part, flv: Path, want: tuple[int, int],
                 runs: dict[tuple[str, int], list[dict[str, Any]]]) -> Part:
    """The relay's detail tables, rows and notes from its runs (``relay_runs``)."""
    part.data["rtmp_relay"] = {f"{k}/{n}": v for (k, n), v in runs.items()}
    kinds = list(dict.fromkeys(k for k, _ in runs))
    ns = sorted({n for _, n in runs})
    rounds = max(len(v) for v in runs.values())
    form = {k: contenders.RELAYS[k].form() for k in kinds}
    fig = {key: {x: Figure([r[x] for r in v]) for x in
                 ("cpu", "cpu_ms_per_mb", "rss_per_player", "rss_idle", "rss_before", "rss_peak")}
           for key, v in runs.items()}
    problems = {key: [p for r in v for p in r["problems"]] for key, v in runs.items()}
    load = f"{flv.stat().st_size / 1e6:.2f} MB FLV, {RELAY_SECONDS} s {RELAY_SIZE} 30 fps " \
           f"H.264 2 Mbit/s + AAC, {want[0]} video + {want[1]} audio packets"
    rows = []
    for (k, n), f in fig.items():
        per_mb = (f"{fmt(f['cpu_ms_per_mb'].median)} "
                  f"({fmt(f['cpu_ms_per_mb'].lo)}..{fmt(f['cpu_ms_per_mb'].hi)})")
        counts = [c for r in runs[(k, n)] for c in r["counts"]]
        ok = sum(tuple(c) == tuple(want) for c in counts)
        copies = [r["summary"].get("payload_copies") for r in runs[(k, n)]]
        rows.append([form[k], str(n), f"{runs[(k, n)][0]['relayed_mb']:.1f}",
                     f"{f['cpu'].median:.3f}", per_mb if n else "- (publisher alone)",
                     f"{f['rss_before'].median / 2**20:.1f}",
                     f"{f['rss_idle'].median / 2**20:.1f}",
                     f"{f['rss_per_player'].median / 1024:.0f}" if n else "-",
                     f"{f['rss_peak'].median / 2**20:.1f}",
                     f"{ok}/{len(counts)}" + ("" if ok == len(counts) else " MISMATCH"),
                     "-" if copies[0] is None else str(sum(c or 0 for c in copies))])
    part.details.append(Detail(
        f"RTMP relay: one ffmpeg -re push of a {load}, to N ffmpeg players waiting "
        f"(median of {_rounds(rounds)}; each relay fresh per measurement)",
        ["relay", "players", "relayed MB", "server CPU s", "CPU ms per MB (min..max)",
         "RSS before, MiB", "RSS N waiting, MiB", "RSS per idle player, KiB", "peak RSS, MiB",
         "players with the source's packet counts", "payload copies"], rows))
    lo, hi = min([n for n in ns if n] or [0]), max(ns)
    marginal: dict[str, tuple[float, float]] = {}     # relay: (CPU ms per extra MB, B/player)
    if lo >= 1 and hi > lo:
        for k in kinds:
            a, b = fig[(k, lo)], fig[(k, hi)]
            mb = runs[(k, hi)][0]["relayed_mb"] - runs[(k, lo)][0]["relayed_mb"]
            marginal[k] = ((b["cpu"].median - a["cpu"].median) * 1e3 / mb,
                           (b["rss_idle"].median - a["rss_idle"].median) / (hi - lo))
    if "membuf" in kinds and "nginx" in kinds:
        ratio_rows = []
        for n in ns:
            m, g = fig[("membuf", n)], fig[("nginx", n)]
            if not n:
                ratio_rows.append([f"0 (publisher alone: membuf {m['cpu'].median:.3f} vs nginx "
                                   f"{g['cpu'].median:.3f} CPU s)",
                                   _times(m["cpu"].median, g["cpu"].median), "-"])
                continue
            ratio_rows.append([str(n), _times(m["cpu_ms_per_mb"].median, g["cpu_ms_per_mb"].median),
                               _times(m["rss_per_player"].median, g["rss_per_player"].median)])
        if marginal:
            (mc, mr), (gc, gr) = marginal["membuf"], marginal["nginx"]
            ratio_rows.append([f"each player from {lo} to {hi}: membuf {mc:.2f} vs nginx "
                               f"{gc:.2f} CPU ms per MB, {mr / 1024:.0f} vs {gr / 1024:.0f} KiB",
                               _times(mc, gc), _times(mr, gr)])
        part.details.append(Detail("RTMP relay: membuf / nginx-rtmp (below 1: membuf uses less)",
                                   ["players", "CPU per relayed MB", "RSS per idle player"],
                                   ratio_rows))
    for key, msgs in problems.items():
        for msg in dict.fromkeys(msgs):
            part.notes.append(f"RTMP relay {key[0]}, {key[1]} players: {msg}")
    if "membuf" not in kinds or "nginx" not in kinds:
        return part
    base = form["nginx"]
    loads = {n: statistics.median(r["load"] for k in kinds for r in runs[(k, n)]) for n in ns}
    for n in ns:
        m, g = fig[("membuf", n)], fig[("nginx", n)]
        bad = problems[("membuf", n)] + problems[("nginx", n)]
        if not n:
            part.rows.append(Row.of(
                "RTMP relay", f"server CPU, publisher alone ({RELAY_SECONDS} s at -re)", "CPU-ms",
                form["membuf"], m["cpu"].scaled(lambda x: x * 1e3), base,
                g["cpu"].scaled(lambda x: x * 1e3), higher_is_better=False, load=loads[n],
                note="no players: the ingest at live rate, a fixed cost in every row below"))
            continue
        tgt = {"target": 0.25, "target_text": ">= 0.25x: within 4x (goal 2x)"} if n == 10 else {}
        part.rows.append(Row.of(
            "RTMP relay", f"server CPU per relayed MB, {_players(n)}", "CPU-ms/MB",
            form["membuf"], m["cpu_ms_per_mb"], base, g["cpu_ms_per_mb"],
            higher_is_better=False, load=loads[n], **tgt,
            note=f"median of {_rounds(rounds)}, relayed MB = source x {n}"
                 + ("; PROBLEMS: see notes" if bad else "")))
    for n in ns:
        if n < 10:
            continue        # N=1 measures a relay's first-player set-up (nginx: its pools)
        m, g = fig[("membuf", n)], fig[("nginx", n)]
        # judged at 50 players: at 10, nginx's first session (~1.7 MB of pools) dominates
        tgt = {"target": 0.5, "target_text": ">= 0.5x: <= 2x (goal <= 1x)"} if n == 50 else {}
        part.rows.append(Row.of(
            "RTMP relay", f"RSS per idle player, {n} waiting", "KiB/player", form["membuf"],
            m["rss_per_player"].scaled(lambda x: x / 1024), base,
            g["rss_per_player"].scaled(lambda x: x / 1024), higher_is_better=False,
            load=loads[n], **tgt,
            note="(RSS with N players waiting - RSS before) / N"))
    if marginal:
        (mc, mr), (gc, gr) = marginal["membuf"], marginal["nginx"]
        part.rows.append(Row.of(
            "RTMP relay", f"server CPU per extra relayed MB, {lo} -> {hi} players", "CPU-ms/MB",
            form["membuf"], mc, base, gc, higher_is_better=False, load=max(loads.values()),
            note="the fan-out alone: (CPU at N=hi - CPU at N=lo) / (MB relayed more); medians"))
        part.rows.append(Row.of(
            "RTMP relay", f"RSS per extra idle player, {lo} -> {hi} waiting", "KiB/player",
            form["membuf"], mr / 1024, base, gr / 1024, higher_is_better=False,
            load=max(loads.values()),
            note="(RSS at N=hi - RSS at N=lo) / (hi - lo): without a relay's first-player cost"))
    copies = [r["summary"].get("payload_copies") for n in ns for r in runs[("membuf", n)]]
    msgs = sum(r["summary"].get("relayed_messages", 0) for n in ns for r in runs[("membuf", n)])
    if None in copies:
        part.notes.append("RTMP relay: membuf's --json summary carries no payload_copies")
    else:
        total = sum(c or 0 for c in copies)
        part.rows.append(Row.of(
            "RTMP relay", "payload copies per relayed message", "copies/msg", form["membuf"],
            total / max(msgs, 1), load=max(loads.values()),
            note=f"{total} copies over {msgs:,} relayed messages (serve-rtmp --json); "
                 f"bar and goal 0: {'met' if total == 0 else 'MISSED'}"))
    return part


def _rounds(n: int) -> str:
    return f"{n} round" + ("" if n == 1 else "s")


def _players(n: int) -> str:
    return f"{n} player" + ("" if n == 1 else "s")


def _times(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def steps(mode: Mode) -> int:
    ns, rounds = relay_plan(mode)
    relay_steps = 0 if relay_missing(mode) else len(ns) * rounds * len(contenders.RELAYS)
    return (0 if mode.quick or mode.check else 1) + relay_steps


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-membuf", metavar="PORT_FILE", help="internal")
    ap.add_argument("--serve-pyrtmp", metavar="PORT_FILE", help="internal")
    ap.add_argument("--relay", nargs="*", choices=list(contenders.RELAYS), default=None,
                    help="run the relay comparison alone (these relays; default both)")
    ap.add_argument("--players", nargs="+", type=int, default=[0, 1, 10, 50])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="the relay tables again from a `bench --json` file")
    args = ap.parse_args()
    if args.relay is not None:
        flv, want, results = relay_runs(args.relay or list(contenders.RELAYS), args.players,
                                        args.rounds)
        print(f"source packets (video, audio): {want}")
        part = relay_report(Part("RTMP relay"), flv, want, results)
        for d in part.details:
            print(f"\n### {d.title}\n\n{md_table(d.head, d.rows)}")
        if part.rows:
            print("\n" + md_table((*TABLE_HEAD, "note"), [[*row_cells(r), r.note]
                                                          for r in part.rows]))
        for n in part.notes:
            print(f"note: {n}")
        sys.exit(1 if any(r["problems"] for v in results.values() for r in v) else 0)
    if args.report:
        data = json.loads(args.report.read_text())["data"]["rtmp_relay"]
        runs = {(k, int(n)): v for key, v in data.items() for k, n in [key.split("/")]}
        flv = CACHE / f"relay-{RELAY_SIZE}-{RELAY_SECONDS}s.flv"
        part = relay_report(Part("RTMP relay"), flv, packets(flv), runs)
        for d in part.details:
            print(f"\n### {d.title}\n\n{md_table(d.head, d.rows)}")
        print("\n" + md_table((*TABLE_HEAD, "note"), [[*row_cells(r), r.note] for r in part.rows]))
        sys.exit(0)
    res = serve_membuf(args.serve_membuf) if args.serve_membuf else serve_pyrtmp(args.serve_pyrtmp)
    print(json.dumps(res), flush=True)
