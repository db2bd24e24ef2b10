"""Helpers for the media tests: ffmpeg/ffprobe with timeouts, fixtures made once.

``tests/conftest.py`` registers this module as a pytest plugin, so its fixtures
(``media_dir``, ``flv_file``, ``obu_file``, ``ivf_file``) are available to every
test without an import; the helpers are imported by name
(``from media_fixtures import ffmpeg, needs_ffmpeg, ...``).
Every ffmpeg or ffprobe call has a timeout: an encoder that fails to open its
output can hang ffmpeg. Tests that need ffmpeg skip, with the reason, only
when it is not installed (``.ci/run`` installs it with apt-get).
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
