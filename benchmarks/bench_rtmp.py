"""RTMP ingest throughput: membuf's serve-rtmp against pyrtmp, same file, same run.

ffmpeg pushes one pre-encoded FLV as fast as it can (no ``-re``, ``-c copy``)
to each server in turn, several rounds, alternating. Each server runs in its
own process and reports the media payload bytes it received (audio + video
message bodies), the time from ``publish`` to the end of the connection (the
handshake and ffmpeg's start-up are left out, for both) and the CPU time it
spent over that interval. Printed: payload MB/s (best and median), the same
over ffmpeg's wall time, and MB per CPU-second of the server (a figure that
depends less on how busy the machine is).

    .venv/bin/python -m pip install pyrtmp     # benchmark only, not a dependency
    .venv/bin/python benchmarks/bench_rtmp.py [--rounds 3] [--seconds 20]

The FLV (x264 ultrafast at a high rate, AAC) is made once into a cache dir.
pyrtmp runs its own SimpleRTMPController with handlers that count bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# -- the pyrtmp side (runs in its own process) ---------------------------------


def run_pyrtmp(port_file: str) -> None:
    """Serve one publish with pyrtmp, then print {"bytes": ..., "seconds": ...}."""
    import asyncio
    import logging

    from pyrtmp.rtmp import RTMPProtocol, SimpleRTMPController

    logging.disable(logging.CRITICAL)  # pyrtmp configures DEBUG logging at import
    result: dict[str, float] = {}
    done = asyncio.Event()

    class Counting(SimpleRTMPController):
        async def client_callback(self, reader, writer):  # type: ignore[no-untyped-def]
            self.nbytes = 0
            self.t0 = time.perf_counter()
            await super().client_callback(reader, writer)
            result.update(bytes=self.nbytes, seconds=time.perf_counter() - self.t0,
                          cpu=time.process_time() - self.c0)
            done.set()

        async def on_ns_publish(self, session, message):  # type: ignore[no-untyped-def]
            await super().on_ns_publish(session, message)
            self.t0 = time.perf_counter()  # media time starts at publish, as for membuf
            self.c0 = time.process_time()

        async def on_video_message(self, session, message):  # type: ignore[no-untyped-def]
            self.nbytes += message.msg_length

        async def on_audio_message(self, session, message):  # type: ignore[no-untyped-def]
            self.nbytes += message.msg_length

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: RTMPProtocol(controller=Counting()),
                                          host="127.0.0.1", port=0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await done.wait()
        server.close()

    asyncio.run(main())
    print(json.dumps(result), flush=True)


def run_membuf(port_file: str) -> None:
    """Serve one publish with membuf's RtmpServer, then print {"bytes", "seconds"}."""
    import trio

    from membuf.media.servers import RtmpServer

    class Timed(RtmpServer):
        def start_stream(self, key, counts):  # type: ignore[no-untyped-def]
            self.t0 = time.perf_counter()  # at publish
            self.c0 = time.process_time()
            return super().start_stream(key, counts)

        async def ingest(self, conn, peer):  # type: ignore[no-untyped-def]
            try:
                await super().ingest(conn, peer)
            finally:
                self.t1 = time.perf_counter()  # at the end of the connection
                self.c1 = time.process_time()

    server = Timed(json_out=True, once=True, live=False, out=open(os.devnull, "w"))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.run, 0)
            Path(port_file).write_text(str(port))

    trio.run(main)
    counts = server.finished[0].counts
    print(json.dumps({"bytes": counts.bytes, "seconds": server.t1 - server.t0,
                      "cpu": server.c1 - server.c0}), flush=True)


# -- the driver ----------------------------------------------------------------


def push(kind: str, flv: Path) -> dict[str, float]:
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
            port = int(Path(port_file).read_text())
            t0 = time.perf_counter()
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(flv),
                            "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/bench"],
                           check=True, timeout=FFMPEG_TIMEOUT)
            wall = time.perf_counter() - t0
            out, _ = srv.communicate(timeout=60)
        finally:
            if srv.poll() is None:
                srv.kill()
    res = json.loads(out.strip().splitlines()[-1])
    res["wall"] = wall
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=20, help="length of the FLV to push")
    p.add_argument("--flv", type=Path, default=None, help="push this FLV instead")
    p.add_argument("--serve-membuf", metavar="PORT_FILE")
    p.add_argument("--serve-pyrtmp", metavar="PORT_FILE")
    args = p.parse_args()
    if args.serve_membuf:
        run_membuf(args.serve_membuf)
        return 0
    if args.serve_pyrtmp:
        run_pyrtmp(args.serve_pyrtmp)
        return 0
    if not shutil.which("ffmpeg"):
        print("ffmpeg is not installed (apt-get install -y ffmpeg)", file=sys.stderr)
        return 2
    kinds = ["membuf"]
    try:
        import pyrtmp  # noqa: F401
        kinds.append("pyrtmp")
    except ImportError:
        print("pyrtmp is not installed (pip install pyrtmp); membuf only", file=sys.stderr)
    flv = args.flv or Path(tempfile.gettempdir()) / "membuf-bench" / f"bench-{args.seconds}s.flv"
    make_fixture(flv, args.seconds)
    size = flv.stat().st_size
    print(f"file: {flv} ({size / 1e6:.1f} MB), {args.rounds} rounds, best of each")
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            results[k].append(push(k, flv))
    best = {}
    print(f"{'server':<8} {'media MB':>9} {'MB/s':>8} {'median MB/s':>12}"
          f" {'MB/s (ffmpeg wall)':>19} {'MB per CPU-s':>13}")
    per_cpu = {}
    for k, runs in results.items():
        rates = [r["bytes"] / r["seconds"] / 1e6 for r in runs]
        walls = [r["bytes"] / r["wall"] / 1e6 for r in runs]
        cpus = [r["bytes"] / max(r["cpu"], 1e-9) / 1e6 for r in runs]
        best[k], per_cpu[k] = max(rates), statistics.median(cpus)
        print(f"{k:<8} {runs[0]['bytes'] / 1e6:>9.1f} {max(rates):>8.1f}"
              f" {statistics.median(rates):>12.1f} {max(walls):>19.1f} {per_cpu[k]:>13.1f}")
    if "pyrtmp" in best:
        print(f"membuf / pyrtmp: {best['membuf'] / best['pyrtmp']:.1f}x MB/s (best),"
              f" {per_cpu['membuf'] / per_cpu['pyrtmp']:.1f}x MB per CPU-second (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
