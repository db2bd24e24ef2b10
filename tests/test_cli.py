"""The command line's manners, run as a user runs it: ``python -m membuf ...`` in a subprocess.

* ``--version`` prints the version;
* a port already in use is one line and exit code 1 (not nested exception groups);
* Ctrl-C (SIGINT) and SIGTERM stop a server cleanly: exit code 0, one summary line;
* ``probe`` says "unknown format" and exits 1 for input that is none of FLV, IVF or
  raw AV1 OBUs (ffprobe says "Invalid data found when processing input");
* every limit of the servers is a flag, listed in ``--help`` and in docs/media.md.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from media_fixtures import av1_stream, rtmp_header

import membuf
from membuf.media.servers import _AV1_FLAGS, _COMMON_FLAGS, _RTMP_FLAGS

TIMEOUT = 60
SERVERS = ["serve-rtmp", "serve-av1"]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "media.md"


def membuf_cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "membuf", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, **kw)  # type: ignore[call-overload]


def test_version() -> None:
    res = membuf_cli("--version")
    assert (res.returncode, res.stdout, res.stderr) == (0, f"membuf {membuf.__version__}\n", "")


def test_unknown_command_is_a_usage_error() -> None:
    res = membuf_cli("serve-http")
    assert res.returncode == 2 and "unknown command 'serve-http'" in res.stderr


@pytest.mark.parametrize("command", SERVERS)
def test_port_in_use_is_one_line_and_exit_1(command: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = membuf_cli(command, "--port", str(port))
    assert res.returncode == 1
    assert res.stderr == f"{command}: cannot listen on 127.0.0.1:{port}: address in use\n"
    assert res.stdout == ""


@pytest.mark.parametrize("command", SERVERS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_server_with_one_summary_line(command: str,
                                                         sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "membuf", command, "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on" in line, line
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        assert proc.stdout is not None
        # a client inside its stream when the signal comes: its stream is ended, not a crash
        with socket.create_connection(("127.0.0.1", port)) as client:
            if command == "serve-av1":
                client.sendall(av1_stream(3))
                assert "stream av1/1 started" in proc.stdout.readline()
            else:   # C0+C1: the server has the connection once S0 comes back
                client.sendall(b"\x03" + bytes(1536))
                assert client.recv(1) == b"\x03"
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"stopped by {sig.name}: {command}: 1 connections")
    if command == "serve-av1":  # the stream that was open is summarised, with why it ended
        assert "stream av1/1 ended" in out and "the server stopped" in out


@pytest.mark.parametrize("command", SERVERS)
def test_help_lists_every_limit_and_docs_name_each(command: str) -> None:
    res = membuf_cli(command, "--help")
    assert res.returncode == 0
    flags = _COMMON_FLAGS + (_RTMP_FLAGS if command == "serve-rtmp" else _AV1_FLAGS)
    docs = DOCS.read_text()
    for flag, *_ in flags:
        assert flag in res.stdout, flag
        assert f"`{flag}" in docs, f"{flag} is not in docs/media.md"
    assert "an eighth of this machine's memory" in " ".join(res.stdout.split())


@pytest.mark.parametrize(("args", "message"), [
    (["--idle-timeout", "0"], "--idle-timeout: invalid seconds value: '0'"),
    (["--max-memory", "12Q"], "--max-memory: invalid size value: '12Q'"),
    (["--max-connections", "-1"], "--max-connections: invalid positive int value: '-1'"),
    (["--max-message", "8M", "--max-partial", "4M"], "max_partial (4194304) must be at least"),
])
def test_bad_limit_values_are_refused_before_binding(args: list[str], message: str) -> None:
    res = membuf_cli("serve-rtmp", "--port", "0", *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "listening" not in res.stderr


def probe_fails(path: Path) -> str:
    res = membuf_cli("probe", str(path))
    assert res.returncode == 1 and res.stdout == "", res.stdout
    assert len(res.stderr.splitlines()) == 1, res.stderr
    return res.stderr


def test_probe_says_unknown_format_for_text(tmp_path: Path) -> None:
    hostname = tmp_path / "hostname"
    hostname.write_bytes(b"vm\n")           # what /etc/hostname holds: once "obu, 3 bytes"
    assert "unknown format" in probe_fails(hostname)


def test_probe_says_unknown_format_for_random_bytes(tmp_path: Path) -> None:
    """Random bytes whose first byte looks like an OBU header with a size field (what the
    first-byte sniff accepted, then reported as an OBU claiming billions of bytes)."""
    rng = random.Random(3)
    data = rng.randbytes(4096)
    while data[0] & 0x81 or not data[0] & 0x02:
        data = rng.randbytes(4096)
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    err = probe_fails(path)
    assert "unknown format" in err and "claims" not in err


@pytest.mark.parametrize("data", [b"", b"FLV", b"FLV\x01\x05\x00\x00\x00\x00" + bytes(20),
                                  b"DKIF" + bytes(28), b"\x12\x00\x4a\x00"],
                         ids=["empty", "FLV-only", "FLV-bad-offset", "IVF-bad-header",
                              "TD-then-reserved"])
def test_probe_says_unknown_format_for_near_misses(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "near.bin"
    path.write_bytes(data)
    assert "unknown format" in probe_fails(path)


def test_probe_accepts_a_raw_obu_stream(tmp_path: Path) -> None:
    path = tmp_path / "v.obu"
    path.write_bytes(av1_stream(5))
    res = membuf_cli("probe", "--json", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == '{"format": "obu", "obus": 11, "temporal_units": 5, "frames": 5}'


def test_rtmp_header_helper_matches_the_spec() -> None:
    # fmt 0 on chunk stream 6: ts 3 bytes, length 3, type 1, stream id 4 (little-endian)
    assert rtmp_header(0, 6, 1, 2, 9, 1) == bytes([6, 0, 0, 1, 0, 0, 2, 9, 1, 0, 0, 0])
