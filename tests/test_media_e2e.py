"""End to end with real processes: ffmpeg pushes into membuf's servers, ffprobe checks.

Every count is compared with what ffprobe (or ffmpeg's trace_headers filter,
for OBUs) reports for the very same packets: the RTMP and AV1 pushes use
ffmpeg's tee muxer to write the file that ffprobe reads in the same run.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from media_fixtures import (  # the fixtures (flv_file, ...) come from conftest.py's plugin
    AUDIO_IN,
    AV1,
    H264_AAC,
    TIMEOUT,
    VIDEO_IN,
    expected_av1,
    expected_flv,
    ffmpeg,
    needs_ffmpeg,
    run_server,
)

from membuf.media import av1, flv
from membuf.media.servers import Av1Server, IngestServer, RtmpServer
from membuf.memory import Memory

pytestmark = needs_ffmpeg


def probe_json(path: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "membuf", "probe", "--json", str(path)],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# -- probe ---------------------------------------------------------------------


def test_probe_flv_agrees_with_ffprobe(flv_file: Path) -> None:
    got = probe_json(flv_file)
    assert got == {**expected_flv(flv_file), "bytes": flv_file.stat().st_size}
    assert got["video_frames"] == 75 and got["keyframes"] == 3  # 3 s at 25 fps, GOP 25


def test_probe_obu_agrees_with_ffprobe(obu_file: Path) -> None:
    assert probe_json(obu_file) == expected_av1(obu_file, "obu")


def test_probe_ivf_agrees_with_ffprobe(ivf_file: Path) -> None:
    got = probe_json(ivf_file)
    assert got == expected_av1(ivf_file, "ivf")
    assert got["obus"] > got["temporal_units"] * 2  # SVT-AV1 adds hidden frames + headers


def test_probe_text_and_errors(flv_file: Path, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "membuf", "probe", str(flv_file)],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0 and "video: h264: 75 frames" in res.stdout
    assert "idr" in res.stdout and "AAC type 2, 44100 Hz" in res.stdout
    cut = tmp_path / "cut.flv"
    cut.write_bytes(flv_file.read_bytes()[:-100])
    res = subprocess.run([sys.executable, "-m", "membuf", "probe", str(cut)],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 1 and "truncated" in res.stderr


# -- in-process servers --------------------------------------------------------


RELAY_KEYS = ("players", "relayed_messages", "relayed_bytes", "payload_copies", "skipped")


def make(cls: type[IngestServer]) -> IngestServer:
    return cls(live=False, json_out=True, out=io.StringIO(), ring_size=16)


async def in_thread(*args: str) -> None:
    await trio.to_thread.run_sync(lambda: ffmpeg(*args))


def test_rtmp_push_counts_match_ffprobe(media_dir: Path) -> None:
    server = make(RtmpServer)
    copy = media_dir / "pushed.flv"

    async def push(port: int) -> None:
        # ffmpeg_ raises unless ffmpeg exits 0: the publish completed without an error
        await in_thread(*VIDEO_IN, *AUDIO_IN, "-t", "3", *H264_AAC, "-f", "tee",
                        f"[f=flv]{copy}|[f=flv]rtmp\\://127.0.0.1\\:{port}/live/test")

    run_server(server, push)
    assert not server.errors and [s.key for s in server.finished] == ["live/test"]
    got = server.finished[0].summary()
    relayed = {k: got.pop(k) for k in RELAY_KEYS}
    assert relayed == {"players": 0, "relayed_messages": 0, "relayed_bytes": 0,
                       "payload_copies": 0, "skipped": 0}     # nobody played it
    assert {k: v for k, v in got.items() if k != "bytes"} == expected_flv(copy)
    assert got["video_frames"] == 75 and got["audio_frames"] > 100
    # the ring saw every frame and the end-of-sequence message (relayed to players too)
    counts = server.finished[0].counts
    assert isinstance(counts, flv.MediaCounts) and counts.end_of_sequence == 1
    assert server.finished[0].ring.written == got["video_frames"] + got["audio_frames"] + 1
    assert server.allocator.stats().in_use == 0  # idle again: every frame was recycled
    assert json.loads(server.out.getvalue()) == {"streams": {"live/test": {**got, **relayed}}}  # type: ignore[attr-defined]


def test_av1_push_counts_match_ffprobe(media_dir: Path) -> None:
    server = make(Av1Server)
    copy = media_dir / "pushed.obu"

    async def push(port: int) -> None:
        await in_thread(*VIDEO_IN, "-t", "2", *AV1, "-map", "0:v", "-f", "tee",
                        f"[f=obu]{copy}|[f=obu]tcp\\://127.0.0.1\\:{port}")

    run_server(server, push)
    assert not server.errors and len(server.finished) == 1
    assert server.finished[0].summary() == expected_av1(copy, "obu")
    assert server.finished[0].summary()["temporal_units"] == 50
    assert server.allocator.stats().in_use == 0


def test_rtmp_memory_stays_flat_for_a_long_stream(flv_file: Path) -> None:
    """Frames live in a bounded ring, so peak memory does not grow with the stream.

    The bound is constant: the receive buffer (at most ``max_buffered`` plus
    the chunk being received) and ``ring_size`` frames of this small video.
    """
    peaks, sizes = [], []
    for loops in (10, 80):
        server = make(RtmpServer)

        async def push(port: int, loops: int = loops) -> None:
            await in_thread("-stream_loop", str(loops), "-i", str(flv_file), "-c", "copy",
                            "-f", "flv", f"rtmp://127.0.0.1:{port}/live/long")

        run_server(server, push)
        assert not server.errors
        peaks.append(server.allocator.stats().peak_in_use)
        sizes.append(server.finished[0].counts.bytes)
    bound = 2 * make(RtmpServer).max_buffered + (256 << 10)
    assert sizes[1] > 6 * sizes[0] and sizes[1] > 3 * bound
    assert max(peaks) < bound


# -- the command line ------------------------------------------------------------


def serve_cli(command: str, push: Callable[[int], None]) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "membuf", command, "--port", "0", "--once",
                             "--json", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split("/")[0].split(" ")[0])
        push(port)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def test_serve_rtmp_cli_once_json(flv_file: Path) -> None:
    rc, out = serve_cli("serve-rtmp", lambda port: ffmpeg(
        "-i", str(flv_file), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/cli"))
    assert rc == 0
    counts = json.loads(out)["streams"]["live/cli"]
    assert {k: counts.pop(k) for k in RELAY_KEYS}["players"] == 0
    assert counts == {**expected_flv(flv_file), "bytes": counts["bytes"]}


def test_serve_av1_cli_once_json(obu_file: Path) -> None:
    rc, out = serve_cli("serve-av1", lambda port: ffmpeg(
        "-i", str(obu_file), "-c", "copy", "-f", "obu", f"tcp://127.0.0.1:{port}"))
    assert rc == 0
    assert json.loads(out) == {"streams": {"av1/1": expected_av1(obu_file, "obu")}}


# -- malformed input: captures replayed, truncated and bit-flipped -------------------


async def replay(port: int, data: bytes) -> None:
    """Send ``data`` as a client would, half-close, and read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
            while await stream.receive_some(1 << 16):
                pass
        except trio.BrokenResourceError:
            pass  # the server dropped us mid-send: what it should do with garbage


def capture_rtmp(flv: Path) -> bytes:
    """What ffmpeg sends when it publishes ``flv`` (recorded by a TCP proxy)."""
    server = make(RtmpServer)
    captured = bytearray()

    async def body(port: int) -> None:
        async def proxy(client: trio.SocketStream) -> None:
            upstream = await trio.open_tcp_stream("127.0.0.1", port)
            async with upstream, client, trio.open_nursery() as n:
                async def down() -> None:
                    async for data in upstream:
                        await client.send_all(data)
                n.start_soon(down)
                async for data in client:
                    captured.extend(data)
                    await upstream.send_all(data)
                await upstream.send_eof()

        async with trio.open_nursery() as n:
            listeners = await n.start(trio.serve_tcp, proxy, 0)
            pport = listeners[0].socket.getsockname()[1]
            await in_thread("-i", str(flv), "-c", "copy", "-f", "flv",
                            f"rtmp://127.0.0.1:{pport}/live/cap")
            while not server.finished:
                await trio.sleep(0.01)
            n.cancel_scope.cancel()

    run_server(server, body)
    assert server.finished[0].summary()["video_frames"] == 75
    return bytes(captured)


def check_malformed(server: IngestServer, good: bytes, bad: list[bytes], must_fail: int) -> None:
    """Replay each bad capture, then the good one: errors are per connection only."""
    async def body(port: int) -> None:
        for data in bad:
            await replay(port, data)
        await replay(port, good)

    run_server(server, body)
    assert len(server.errors) >= must_fail
    assert all(("malformed" in e or "truncated" in e or "broken" in e) for e in server.errors)
    last = server.finished[-1]
    assert last.error is None and last.summary()["format"] in ("flv", "obu")
    assert server.connections == len(bad) + 1
    assert server.allocator.stats().in_use == 0


def test_rtmp_truncated_and_bitflipped_captures(flv_file: Path) -> None:
    good = capture_rtmp(flv_file)
    handshake = 1 + 2 * 1536
    flip = lambda data, i, bit: data[:i] + bytes([data[i] ^ bit]) + data[i + 1:]  # noqa: E731
    sure = [
        good[:1000],                  # inside the handshake
        good[:len(good) // 2],        # inside a media message
        good[:-7],                    # inside the last command
        flip(good, 0, 0x04),          # C0 says version 7
        flip(good, handshake, 0x80),  # first chunk header: fmt 2 on a new chunk stream
    ]
    rng = random.Random(6)
    flipped = [flip(good, rng.randrange(handshake, len(good) // 4), 1 << rng.randrange(8))
               for _ in range(8)]
    server = make(RtmpServer)
    check_malformed(server, good, sure + flipped, must_fail=len(sure))
    errors = "\n".join(server.errors)
    assert "C0 version 7" in errors and "starts with a fmt 2 header" in errors
    assert server.finished[-1].counts.summary() == {**expected_flv(flv_file),
                                                    "bytes": server.finished[-1].counts.bytes}


def test_av1_truncated_and_bitflipped_streams(obu_file: Path) -> None:
    good = obu_file.read_bytes()
    starts, r = [], Memory(good).reader()
    while len(r):
        starts.append(r.offset)
        av1.read_obu(r)
    i = starts[len(starts) // 2]
    forbidden = good[:i] + bytes([good[i] | 0x80]) + good[i + 1:]
    huge = good[:i + 1] + b"\xff\xff\xff\xff\x0f" + good[i + 2:]  # a 4 GiB OBU size
    server = make(Av1Server)
    check_malformed(server, good, [b"", good[:-5], good[:i + 1], forbidden, huge], must_fail=4)
    assert "av1/1" not in [s.key for s in server.finished]  # a connection without OBUs
    errors = "\n".join(server.errors)
    assert "forbidden bit" in errors and "max_size" in errors and "truncated" in errors
    assert server.finished[-1].summary() == expected_av1(obu_file, "obu")


# -- the examples ----------------------------------------------------------------


def load_example(name: str) -> Any:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_walk_flv(flv_file: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "media_probe" / "walk_flv.py"
    res = subprocess.run([sys.executable, str(script), str(flv_file), "--limit", "8"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert "video h264 config" in res.stdout and "IDR" in res.stdout


def test_example_rtmp_record(flv_file: Path, tmp_path: Path) -> None:
    from membuf.stream import serve_tcp

    record = load_example("media_rtmp_record/record.py")
    handler = record.make_handler(str(tmp_path))
    done = trio.Event()

    async def once(conn: Any) -> None:
        try:
            await handler(conn)
        finally:
            done.set()

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as n:
                listeners = await n.start(serve_tcp, once, 0)
                port = listeners[0].socket.getsockname()[1]
                await in_thread("-i", str(flv_file), "-c", "copy", "-f", "flv",
                                f"rtmp://127.0.0.1:{port}/live/rec")
                await done.wait()
                n.cancel_scope.cancel()

    trio.run(main)
    recorded = tmp_path / "live-rec.flv"
    assert probe_json(recorded) == {**expected_flv(flv_file), "bytes": recorded.stat().st_size}
