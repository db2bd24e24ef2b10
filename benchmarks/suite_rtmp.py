"""Suite part: RTMP ingest, membuf's serve-rtmp against pyrtmp (full runs, when installed).

ffmpeg pushes one FLV (x264 ultrafast at a high rate + AAC, made once into a
cache directory) as fast as it can (``-c copy``, no ``-re``) to each server in
turn, rounds alternating. Each server runs in its own process (this file with
``--serve-membuf`` / ``--serve-pyrtmp``; pyrtmp's SimpleRTMPController with
handlers that count bytes) and reports the media payload bytes it received, the
time from ``publish`` to the end of the connection (handshake and ffmpeg's
start-up left out, for both) and its CPU time over that interval.

    .venv/bin/python -m pip install pyrtmp     # benchmark only, not a dependency
    python -m membuf bench --only rtmp
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from _common import Detail, Mode, Part, Progress, Row

MEDIA_DOC = "docs/media.md"
FFMPEG_TIMEOUT = 120


def make_fixture(path: Path, seconds: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flv")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-qp", "12",
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
    part = Part("RTMP ingest")
    missing = ("it runs in full runs only" if mode.quick or mode.check else
               "ffmpeg is not installed" if not shutil.which("ffmpeg") else
               "pyrtmp is not installed" if importlib.util.find_spec("pyrtmp") is None else "")
    if missing:
        part.notes.append(f"RTMP ingest (serve-rtmp vs pyrtmp) skipped: {missing}; last figures "
                          f"in {MEDIA_DOC}.")
        return [part]
    rounds, seconds = 5, 20
    prog.step(f"RTMP ingest: ffmpeg -> serve-rtmp / pyrtmp, {rounds} rounds of a {seconds} s FLV")
    flv = Path(tempfile.gettempdir()) / "membuf-bench" / f"bench-{seconds}s.flv"
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
    base = f"pyrtmp {version('pyrtmp')} (asyncio)"
    part.rows.append(Row.of("RTMP ingest", "ffmpeg -> server, MB per CPU-second", "MB/CPU-s",
                            "membuf serve-rtmp", m[4], base, p[4],
                            note="median of rounds; steadier than MB/s"))
    part.rows.append(Row.of("RTMP ingest", "ffmpeg -> server, payload MB/s", "MB/s",
                            "membuf serve-rtmp", m[2], base, p[2],
                            note=f"median of rounds; best {m[1]:.1f} vs {p[1]:.1f} MB/s"))
    return [part]


def steps(mode: Mode) -> int:
    return 0 if mode.quick or mode.check else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-membuf", metavar="PORT_FILE", help="internal")
    ap.add_argument("--serve-pyrtmp", metavar="PORT_FILE", help="internal")
    args = ap.parse_args()
    res = serve_membuf(args.serve_membuf) if args.serve_membuf else serve_pyrtmp(args.serve_pyrtmp)
    print(json.dumps(res), flush=True)
