"""serve-rtmp as a relay, end to end: real ffmpeg publishers and players on loopback.

* three ffmpeg players join a live (``-re``) publish mid-stream and record it
  with ``-c copy``: each recording starts on a keyframe, decodes without an
  error, and holds exactly the source's packets from that keyframe on; the
  server's ``--json`` line reports the players and zero payload copies;
* a player that never reads costs at most its byte budget and stalls neither
  the publisher nor a player that reads (paced on what the reader received,
  so the test cannot pass if the publisher waited on the stalled player);
* a player that arrives before the publisher waits for it, past the idle
  timeout, and then gets every message from the first;
* unpublishing ends every player: Stream EOF, ``NetStream.Play.UnpublishNotify``,
  then end of stream from the server.

Every server runs with ``--once``/in-process and ends with its allocator back
to ``in_use == 0``. No timing assertions: waits are bounded and sequenced on
what the peers report.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from media_fixtures import (
    AUDIO_IN,
    H264_AAC,
    VIDEO_IN,
    avc_frame,
    ffmpeg,
    needs_ffmpeg,
    rtmp_command,
    rtmp_handshake,
    rtmp_play_commands,
    rtmp_publish,
    rtmp_video,
    run_server,
    wait_for,
)

from membuf import Allocator, Memory
from membuf.errors import NeedMore
from membuf.media import amf0, rtmp
from membuf.media.limits import Limits
from membuf.media.servers import RtmpServer

pytestmark = needs_ffmpeg

TIMEOUT = 90
MiB = 1 << 20


def ffprobe_rows(path: Path) -> list[tuple[int, int, bool]]:
    """(stream index, pts, keyframe) of every packet, in file order."""
    res = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "packet=stream_index,pts,flags", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=TIMEOUT, check=True)
    rows = []
    for line in res.stdout.split():
        index, pts, flags = line.split(",")[:3]
        rows.append((int(index), int(pts), flags.startswith("K")))
    return rows


def decode_errors(path: Path) -> str:
    res = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "null", "-"], capture_output=True, text=True, timeout=TIMEOUT)
    return res.stderr.strip() if res.returncode == 0 else f"rc {res.returncode}: {res.stderr}"


def video_index(rows: list[tuple[int, int, bool]], path: Path) -> int:
    res = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                          "stream=index", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=TIMEOUT, check=True)
    return int(res.stdout.split()[0])


def start_server(*flags: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "membuf", "serve-rtmp", "--port", "0",
                             "--once", "--json", "--quiet", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on" in line, line + proc.stderr.read()
    return proc, int(line.split("127.0.0.1:")[1].split("/")[0])


def ffmpeg_proc(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(server: subprocess.Popen[str], procs: list[subprocess.Popen[str]]) -> tuple[str, str]:
    """Wait for every ffmpeg (each must exit 0), then for the ``--once`` server."""
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, f"{p.args}: {err}"
    return server.communicate(timeout=TIMEOUT)


def test_players_join_mid_stream_and_record_exactly_the_source_from_a_keyframe(
        tmp_path: Path) -> None:
    src = tmp_path / "src.flv"    # 8 s, a keyframe every second
    ffmpeg(*VIDEO_IN, *AUDIO_IN, "-t", "8", *H264_AAC, "-f", "flv", str(src))
    server, port = start_server()
    url = f"rtmp://127.0.0.1:{port}/live/relay"
    procs: list[subprocess.Popen[str]] = []
    try:
        publisher = ffmpeg_proc("-re", "-i", str(src), "-c", "copy", "-f", "flv", url)
        procs.append(publisher)
        recordings = []
        for i in range(3):                            # join mid-stream, about a GOP apart
            time.sleep(2.5 if i == 0 else 1.0)
            rec = tmp_path / f"rec{i}.flv"
            # -copyts: the recording keeps the stream's timestamps, so it can be lined
            # up with the source
            procs.append(ffmpeg_proc("-copyts", "-i", url, "-c", "copy", "-f", "flv", str(rec)))
            recordings.append(rec)
        out, err = finish(server, procs)
    finally:
        for p in [server, *procs]:
            if p.poll() is None:
                p.kill()
    assert server.returncode == 0, err
    summary = json.loads(out)["streams"]["live/relay"]
    assert summary["players"] == 3 and summary["payload_copies"] == 0, summary
    assert summary["skipped"] == 0 and summary["relayed_bytes"] > 0, summary
    assert "allocator in use 0 B" in err, err

    source = ffprobe_rows(src)
    sv = video_index(source, src)
    starts = []
    for rec in recordings:
        assert decode_errors(rec) == "", rec
        got = ffprobe_rows(rec)
        rv = video_index(got, rec)
        first_video = next(row for row in got if row[0] == rv)
        assert first_video[2], f"{rec.name} starts on a non-key frame {first_video}"
        # the source from the recording's first packet on, in file order: a keyframe
        # (or the very start, for a player that joined before the first frame)
        same = {rv: sv, 1 - rv: 1 - sv}
        first = got[0]
        at = next(i for i, row in enumerate(source)
                  if row[0] == same[first[0]] and row[1] == first[1])
        assert at == 0 or (source[at][0] == sv and source[at][2]), (rec.name, source[at])
        span = source[at:]
        assert [(same[i], pts) for i, pts, _ in got] == [(i, pts) for i, pts, _ in span], rec.name
        starts.append(first_video[1])
        assert summary["relayed_messages"] >= len(got)
    assert starts == sorted(starts) and starts[-1] > 0, starts   # joined mid-stream


# -- in-process: a raw RTMP player -------------------------------------------------


class RawPlayer:
    """A player that parses what the server sends with membuf's own ChunkReader."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.reader = self.memory.reader()
        self.chunks = rtmp.ChunkReader(Allocator())
        self.video: list[int] = []        # the tag number of every video message
        self.statuses: list[str] = []
        self.user_control: list[int] = []
        self.ended = False                # the server closed (end of stream)

    def feed(self, data: bytes) -> None:
        self.memory.push(data)
        while True:
            try:
                msg = self.chunks.read_message(self.reader)
            except NeedMore:
                return
            view = msg.view()
            if msg.type == rtmp.VIDEO:
                self.video.append(int.from_bytes(view[5:9], "big"))
            elif msg.type == rtmp.COMMAND_AMF0:
                values = amf0.decode_all(msg.reader())
                if values[0] == "onStatus":
                    self.statuses.append(values[3]["code"])
            elif msg.type == rtmp.USER_CONTROL:
                self.user_control.append(int.from_bytes(view[:2], "big"))
            msg.body.recycle()

    async def play(self, stream: trio.SocketStream, name: str) -> None:
        await rtmp_handshake(stream)
        await stream.send_all(rtmp_play_commands(name))
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                self.ended = True
                return
            self.feed(data)


async def connect(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:   # before connect: the window a stalled player offers stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def make(**limits: Any) -> RtmpServer:
    return RtmpServer(live=False, json_out=True, out=io.StringIO(), limits=Limits(**limits))


def players_of(server: RtmpServer) -> list[Any]:
    return [p for hub in server.relays.values() for p in hub.players]


def test_a_stalled_player_is_bounded_and_stalls_nobody() -> None:
    budget, frame, frames = 1 * MiB, 256 << 10, 96       # 24 MiB pushed
    server = make(player_budget=budget, ring_bytes=2 * MiB)
    held: list[int] = []
    in_use: list[int] = []
    reader = RawPlayer()

    async def body(port: int) -> None:
        stalled = await connect(port, rcvbuf=4096)
        await rtmp_handshake(stalled)
        await stalled.send_all(rtmp_play_commands("s"))          # and never reads again
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.play, await connect(port), "s")
            await wait_for(lambda: len(players_of(server)) == 2)
            pub = await connect(port)
            await rtmp_publish(pub, "s")
            for i in range(frames):
                body_ = avc_frame(i, frame, key=i % 8 == 0)
                await pub.send_all(rtmp_video(body_, ts=40 * i, chunk_size=128))
                # paced on the reader: if the server waited on the stalled player,
                # this would never come true (and the test would time out)
                await wait_for(lambda i=i: reader.video and reader.video[-1] == i)
                held.append(max(p.held for p in players_of(server)))
                in_use.append(server.allocator.stats().in_use)
            await pub.send_all(rtmp_command("deleteStream", 5.0, None, 1.0))
            await wait_for(lambda: reader.ended)
            await pub.aclose()
        # the reader is done; the stalled player still holds its (bounded) queue, and the
        # stream's summary waits for it
        assert [p.held <= budget for p in players_of(server)] == [True]
        assert not server.finished
        await stalled.aclose()                               # its unsent queue is dropped
        await wait_for(lambda: server.finished)

    run_server(server, body)
    assert reader.video == list(range(frames))              # every frame, in order
    assert max(held) <= budget, max(held)
    # the ring, one player's budget, the receive buffers: never what was pushed (24 MiB)
    assert max(in_use) <= 2 * MiB + budget + 2 * server.max_buffered + frame, max(in_use)
    relay = server.finished[-1].relay
    assert relay is not None and relay.players == 2 and relay.payload_copies == 0
    assert relay.skipped > 0                                 # the stalled player skipped
    assert server.allocator.stats().in_use == 0


def test_a_player_waits_for_its_publisher_and_gets_every_message() -> None:
    server = make(idle_timeout=0.3)
    reader = RawPlayer()

    async def body(port: int) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.play, await connect(port), "late")
            await wait_for(lambda: len(players_of(server)) == 1)
            await trio.sleep(1.0)             # past the idle timeout: waiting is not idle
            assert players_of(server) and not reader.ended
            pub = await connect(port)
            await rtmp_publish(pub, "late")
            for i in range(20):   # the first frame is not a keyframe: nothing is skipped
                await pub.send_all(rtmp_video(avc_frame(i, 500, key=i == 5), ts=40 * i))
            await wait_for(lambda: len(reader.video) == 20)
            await pub.send_all(rtmp_command("deleteStream", 5.0, None, 1.0))
            await wait_for(lambda: reader.ended)
            await pub.aclose()

    run_server(server, body)
    assert reader.video == list(range(20))
    # unpublish ends the player: Stream EOF (1), then UnpublishNotify, then end of stream
    assert reader.user_control[0] == 0 and reader.user_control[-1] == 1  # Begin ... EOF
    assert reader.statuses == ["NetStream.Play.Reset", "NetStream.Play.Start",
                               "NetStream.Play.UnpublishNotify"]
    assert reader.ended and not server.errors, server.errors
    relay = server.finished[-1].relay
    assert relay is not None and relay.players == 1 and relay.messages == 20


def test_a_player_joining_mid_stream_starts_at_the_last_keyframe() -> None:
    server = make()
    reader = RawPlayer()

    async def body(port: int) -> None:
        pub = await connect(port)
        await rtmp_publish(pub, "gop")
        for i in range(12):                    # keyframes at 0, 4 and 8
            await pub.send_all(rtmp_video(avc_frame(i, 300, key=i % 4 == 0), ts=40 * i))
        await wait_for(lambda: server.active and server.active["live/gop"].frames == 12)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.play, await connect(port), "gop")
            await wait_for(lambda: reader.video[-1:] == [11])
            await pub.send_all(rtmp_video(avc_frame(12, 300, key=False), ts=480))
            await wait_for(lambda: reader.video[-1:] == [12])
            await pub.send_all(rtmp_command("deleteStream", 5.0, None, 1.0))
            await wait_for(lambda: reader.ended)
            await pub.aclose()

    run_server(server, body)
    assert reader.video == [8, 9, 10, 11, 12]   # the GOP since keyframe 8, then live


# -- HTTP-FLV ---------------------------------------------------------------------------


def test_http_flv_player_records_the_stream(tmp_path: Path) -> None:
    """``--http-port``: ffmpeg reading ``http://host:port/live/name.flv`` (before the
    publisher, so it gets the stream from its first message) records exactly the
    source's packets and exits 0 when the chunked body ends with the stream."""
    src = tmp_path / "src.flv"
    ffmpeg(*VIDEO_IN, *AUDIO_IN, "-t", "3", *H264_AAC, "-f", "flv", str(src))
    server, port = start_server("--http-port", "0")
    assert server.stderr is not None
    line = server.stderr.readline()
    assert "HTTP-FLV on" in line, line
    http = int(line.split("127.0.0.1:")[1].split("/")[0])
    rec = tmp_path / "rec.flv"
    procs: list[subprocess.Popen[str]] = []
    try:
        player = ffmpeg_proc("-copyts", "-i", f"http://127.0.0.1:{http}/live/h.flv", "-c", "copy",
                             "-f", "flv", str(rec))
        procs.append(player)
        time.sleep(1.0)                          # the player is waiting for the stream
        procs.append(ffmpeg_proc("-i", str(src), "-c", "copy", "-f", "flv",
                                 f"rtmp://127.0.0.1:{port}/live/h"))
        out, err = finish(server, procs)
    finally:
        for p in [server, *procs]:
            if p.poll() is None:
                p.kill()
    summary = json.loads(out)["streams"]["live/h"]
    assert summary["players"] == 1 and summary["payload_copies"] == 0, summary
    assert decode_errors(rec) == ""
    got, source = ffprobe_rows(rec), ffprobe_rows(src)
    assert len(got) == len(source) and sum(r[2] for r in got) == sum(r[2] for r in source)
    assert "allocator in use 0 B" in err, err


def test_http_flv_refuses_what_it_does_not_serve() -> None:
    """Not a GET of ``/app/name.flv``: a status line and a closed connection, one per
    request, and the server goes on (its allocator back to 0)."""
    server = RtmpServer(live=False, json_out=True, out=io.StringIO(), http_port=0)
    replies: list[bytes] = []

    async def ask(port: int, request: bytes) -> bytes:
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(request)
        data = b""
        while chunk := await s.receive_some(1 << 16):
            data += chunk
        await s.aclose()
        return data

    async def body(port: int) -> None:
        http = server.extra_ports["http"]
        for request in (b"GET /live/x.mp4 HTTP/1.1\r\nHost: a\r\n\r\n",
                        b"POST /live/x.flv HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                        b"hello there\r\n\r\n",
                        b"GET /live/x.flv HTTP/1.1\r\nX: " + b"a" * (9 << 10) + b"\r\n\r\n"):
            replies.append(await ask(http, request))

    run_server(server, body)
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [
        b"HTTP/1.1 404 Not Found", b"HTTP/1.1 405 Method Not Allowed",
        b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert server.dropped == {"malformed": 1, "limit": 1}, server.dropped


def test_players_waiting_for_unpublished_streams_are_capped() -> None:
    """A waiting player is exempt from the timeouts, so waiting is capped: past
    ``max_waiting`` a play of a stream nobody publishes is refused (HTTP-FLV: 503) and the
    slots stay free for publishers; the cap is at most half of ``max_connections``."""
    limits = Limits(max_connections=6, max_waiting=100, handshake_timeout=0.5,
                    idle_timeout=0.5)
    server = RtmpServer(live=False, json_out=True, out=io.StringIO(), http_port=0,
                        limits=limits)
    status: list[bytes] = []

    def waiting() -> int:
        return sum(1 for h in server.relays.values() for p in h.players if p.counts is None)

    async def body(port: int) -> None:
        http = server.extra_ports["http"]
        squatters = []
        for i in range(3):                       # the cap: min(100, 6 // 2) = 3
            s = await trio.open_tcp_stream("127.0.0.1", http)
            await s.send_all(b"GET /live/nobody%d.flv HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            squatters.append(s)
            await wait_for(lambda n=i + 1: waiting() == n)
        await trio.sleep(1.0)                    # past both timeouts: still waiting
        assert waiting() == 3 and server.open_connections == 3
        s = await trio.open_tcp_stream("127.0.0.1", http)
        await s.send_all(b"GET /live/nobody.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while chunk := await s.receive_some(1 << 16):
            data += chunk
        status.append(data.split(b"\r\n", 1)[0])
        await s.aclose()
        assert waiting() == 3
        for s in squatters:
            await s.aclose()

    run_server(server, body)
    assert status == [b"HTTP/1.1 503 Service Unavailable"]
    assert server.dropped.get("limit") == 1, server.dropped
    assert any("--max-waiting 3" in e for e in server.errors), server.errors
