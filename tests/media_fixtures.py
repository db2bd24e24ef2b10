"""Helpers for the media tests: ffmpeg/ffprobe with timeouts, fixtures made once, peers.

``tests/conftest.py`` registers this module as a pytest plugin, so its fixtures
(``media_dir``, ``flv_file``, ``obu_file``, ``ivf_file``) are available to every
test without an import; the helpers are imported by name
(``from media_fixtures import ffmpeg, needs_ffmpeg, ...``).
Every ffmpeg or ffprobe call has a timeout: an encoder that fails to open its
output can hang ffmpeg. Tests that need ffmpeg skip, with the reason, only
when it is not installed (``.ci/run`` installs it with apt-get).

The second half builds what RTMP and AV1 peers send, byte by byte (a
publisher's handshake and commands, chunk headers, OBUs), for the tests of
hostile peers and for ``fuzz/soak.py``, which imports this module too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 60
HAVE_FFMPEG = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
needs_ffmpeg = pytest.mark.skipif(
    not HAVE_FFMPEG,
    reason="ffmpeg/ffprobe not installed and not installable here (apt-get install -y ffmpeg)")

VIDEO_IN = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
AUDIO_IN = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
H264_AAC = ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
            "-c:a", "aac", "-b:a", "64k"]
AV1 = ["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime", "-g", "25"]


def ffmpeg(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg quietly; raise with its stderr when it fails."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"ffmpeg failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res


def encode_flv(path: Path, seconds: float = 3) -> Path:
    ffmpeg(*VIDEO_IN, *AUDIO_IN, "-t", str(seconds), *H264_AAC, "-f", "flv", str(path))
    return path


def encode_av1(path: Path, fmt: str, seconds: float = 2, encoder: list[str] | None = None) -> Path:
    ffmpeg(*VIDEO_IN, "-t", str(seconds), *(encoder or AV1), "-f", fmt, str(path))
    return path


def ffprobe_packets(path: Path, stream: str) -> int:
    """ffprobe's packet count for the first ``stream`` ("v" or "a")."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", f"{stream}:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    streams = json.loads(out)["streams"]
    return int(streams[0]["nb_read_packets"]) if streams else 0


def ffprobe_keyframes(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    return sum(1 for line in out.split() if line.startswith("K"))


def ffprobe_frames(path: Path) -> int:
    """Decoded (shown) video frames."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_frames"])


def ffmpeg_obu_count(path: Path) -> int:
    """OBUs in the packets of an AV1 file, as ffmpeg's trace_headers bitstream filter sees them.

    ffprobe has no OBU count; trace_headers logs "OBU header" once per OBU,
    first for the extradata (the sequence header copy the demuxer keeps),
    then per packet after a "Packet:" line. Only the latter are counted.
    """
    res = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(path), "-c", "copy",
         "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stderr
    first_packet = log.find("] Packet:")
    assert first_packet >= 0, "trace_headers printed no packets"
    return len(re.findall(r"\] OBU header", log[first_packet:]))


def expected_flv(path: Path) -> dict[str, Any]:
    """What ffprobe says the FLV summary must be."""
    return {"format": "flv", "video_frames": ffprobe_packets(path, "v"),
            "audio_frames": ffprobe_packets(path, "a"), "keyframes": ffprobe_keyframes(path)}


def expected_av1(path: Path, fmt: str) -> dict[str, Any]:
    """What ffprobe/ffmpeg say the AV1 summary must be (packets = temporal units)."""
    return {"format": fmt, "obus": ffmpeg_obu_count(path),
            "temporal_units": ffprobe_packets(path, "v"), "frames": ffprobe_frames(path)}


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe not installed and not installable here")
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def flv_file(media_dir: Path) -> Path:
    """A 3 s x264/AAC FLV (made once per session)."""
    return encode_flv(media_dir / "av.flv")


@pytest.fixture(scope="session")
def obu_file(media_dir: Path) -> Path:
    """A 2 s libaom AV1 raw OBU stream (``-f obu``)."""
    return encode_av1(media_dir / "v.obu", "obu")


@pytest.fixture(scope="session")
def ivf_file(media_dir: Path) -> Path:
    """A 2 s SVT-AV1 IVF (hidden frames and show-existing frame headers)."""
    return encode_av1(media_dir / "v.ivf", "ivf",
                      encoder=["-c:v", "libsvtav1", "-preset", "12", "-g", "25"])


# -- RTMP and AV1 peers, byte by byte ------------------------------------------------------

RTMP_HANDSHAKE = 1536
VIDEO, COMMAND = 9, 20                         # RTMP message types


def rtmp_header(fmt: int, csid: int, ts: int = 0, length: int = 0, mtype: int = 0,
                sid: int = 0) -> bytes:
    """A chunk header with a 1-byte basic header (csid 2..63); no extended timestamp."""
    assert 2 <= csid <= 63 and ts < 0xFFFFFF
    out = bytes([fmt << 6 | csid])
    if fmt < 3:
        out += ts.to_bytes(3, "big")
    if fmt < 2:
        out += length.to_bytes(3, "big") + bytes([mtype])
    if fmt == 0:
        out += sid.to_bytes(4, "little")
    return out


def rtmp_message(mtype: int, payload: bytes, *, csid: int, sid: int = 0, ts: int = 0,
                 chunk_size: int = 128) -> bytes:
    """One message as chunks: a fmt-0 header, then fmt-3 headers every ``chunk_size`` bytes."""
    out = [rtmp_header(0, csid, ts, len(payload), mtype, sid), payload[:chunk_size]]
    for i in range(chunk_size, len(payload), chunk_size):
        out += [rtmp_header(3, csid), payload[i:i + chunk_size]]
    return b"".join(out)


def rtmp_command(*values: Any, csid: int = 3, sid: int = 0) -> bytes:
    from membuf.media import amf0

    return rtmp_message(COMMAND, amf0.encode(*values), csid=csid, sid=sid)


def rtmp_publish_commands(name: str, app: str = "live") -> bytes:
    """connect, createStream and publish, as ffmpeg sends them (publish on stream 1)."""
    return (rtmp_command("connect", 1.0, {"app": app, "type": "nonprivate"})
            + rtmp_command("createStream", 2.0, None)
            + rtmp_command("publish", 3.0, None, name, "live", csid=5, sid=1))


def rtmp_play_commands(name: str, app: str = "live", *, buffer_ms: int = 3000) -> bytes:
    """connect, createStream, getStreamLength, play and Set Buffer Length, as ffmpeg sends
    them to play ``app/name`` (play on stream 1, chunk stream 8)."""
    set_buffer = b"\x00\x03" + (1).to_bytes(4, "big") + buffer_ms.to_bytes(4, "big")
    return (rtmp_command("connect", 1.0, {"app": app, "flashVer": "LNX 9,0,124,2"})
            + rtmp_command("createStream", 2.0, None)
            + rtmp_command("getStreamLength", 3.0, None, name, csid=8, sid=1)
            + rtmp_command("play", 4.0, None, name, -2000.0, csid=8, sid=1)
            + rtmp_message(4, set_buffer, csid=2))   # User Control: Set Buffer Length


def rtmp_video(body: bytes, ts: int = 0, *, csid: int = 6, chunk_size: int = 128) -> bytes:
    return rtmp_message(VIDEO, body, csid=csid, sid=1, ts=ts, chunk_size=chunk_size)


def avc_frame(n: int, size: int = 100, key: bool = True) -> bytes:
    """An FLV/RTMP AVC video body (a frame, not a config) of ``size`` bytes tagged with ``n``."""
    head = bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + n.to_bytes(4, "big")
    return (head + bytes(size))[:max(size, len(head))]


async def rtmp_handshake(stream: Any) -> None:
    """C0+C1, read S0+S1+S2, send C2 (a trio stream)."""
    await stream.send_all(b"\x03" + bytes(RTMP_HANDSHAKE))
    got = 0
    while got < 1 + 2 * RTMP_HANDSHAKE:
        data = await stream.receive_some(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection inside the handshake")
        got += len(data)
    await stream.send_all(bytes(RTMP_HANDSHAKE))


async def rtmp_publish(stream: Any, name: str, app: str = "live") -> None:
    """Handshake and publish ``app/name``; the server answers, the replies are not read."""
    await rtmp_handshake(stream)
    await stream.send_all(rtmp_publish_commands(name, app))


async def until_closed(stream: Any) -> int:
    """Read (and drop) everything until the server closes; the bytes read."""
    import trio

    n = 0
    try:
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                return n
            n += len(data)
    except trio.BrokenResourceError:  # a reset: closed just the same
        return n


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def obu(obu_type: int, payload: bytes) -> bytes:
    """An OBU with a size field and no extension."""
    return bytes([obu_type << 3 | 2]) + leb128(len(payload)) + payload


TEMPORAL_DELIMITER = obu(2, b"")


def av1_temporal_unit(n: int, size: int = 40) -> bytes:
    """A temporal delimiter and one frame OBU (show_frame set) of ``size`` bytes tagged ``n``."""
    payload = (bytes([0x10]) + n.to_bytes(4, "big") + bytes(size))[:max(size, 5)]
    return TEMPORAL_DELIMITER + obu(6, payload)


def av1_stream(units: int, size: int = 40) -> bytes:
    """A sequence header in the first of ``units`` temporal units of one shown frame each."""
    first = av1_temporal_unit(0, size)
    head = len(TEMPORAL_DELIMITER)
    return (first[:head] + obu(1, b"\x00\x00\x00") + first[head:]
            + b"".join(av1_temporal_unit(i, size) for i in range(1, units)))


# -- in-process servers ----------------------------------------------------------------


def run_server(server: Any, body: Any, timeout: float = TIMEOUT) -> None:
    """Start ``server`` (an IngestServer) on a free port, run ``await body(port)``, wait
    until it is idle (no connection, stream or relay left, nothing in use), stop it."""
    import trio

    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.run, 0)
                await body(port)
                while (server.open_connections or server.active or getattr(server, "relays", None)
                       or server.allocator.stats().in_use):
                    await trio.sleep(0.01)  # the last connections are still closing
                nursery.cancel_scope.cancel()
    trio.run(main)


async def wait_for(predicate: Any) -> None:
    """Poll ``predicate()`` every 5 ms until it is true (bound it with the caller's timeout)."""
    import trio

    while not predicate():
        await trio.sleep(0.005)
