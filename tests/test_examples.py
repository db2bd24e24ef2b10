"""The examples run: the RESP server's parser over every split of its input, and the
server itself under a real client (Debian's redis-benchmark) when it is installed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from splitting import SPLITS, memory_split

from membuf import MalformedError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resp_server"


def load_server():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("resp_server", EXAMPLE / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PIPELINE = (b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n"
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$3\r\nnop\r\n")
COMMANDS = [[b"SET", b"key", b"va\r\nl"], [b"GET", b"key"], [b"PING"], [b"GET", b"nop"]]


@pytest.mark.parametrize("split", SPLITS)
def test_resp_codec_over_every_split(split: str) -> None:
    resp = load_server()
    codec = resp.Resp()
    for cut in range(len(PIPELINE) + 1):
        m = memory_split(PIPELINE[:cut], split)
        r = m.reader()
        got = codec.split(r)
        m.push(PIPELINE[cut:])
        got += codec.split(r)
        assert got == COMMANDS and len(r) == 0
    assert [resp.execute(c) for c in COMMANDS] == [b"+OK\r\n", b"$5\r\nva\r\nl\r\n", b"+PONG\r\n",
                                                  b"$-1\r\n"]


def test_resp_codec_refuses_garbage() -> None:
    codec = load_server().Resp()
    from membuf import Reader
    r = Reader.from_bytes(b"GET key\r\n")
    with pytest.raises(MalformedError):
        codec.split(r)
    assert r.offset == 0


@pytest.mark.skipif(not shutil.which("redis-benchmark"), reason="redis-benchmark not installed")
@pytest.mark.parametrize("impl", ["membuf", "baseline"])
def test_resp_server_under_redis_benchmark(impl: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(EXAMPLE / "server.py"), impl, "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert "RESP server" in server.stdout.readline()
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", "5000",
                              "-c", "10", "-P", "16", "-q"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        assert re.search(r"SET: [\d.]+ requests per second", out), out
        assert re.search(r"GET: [\d.]+ requests per second", out), out
        with socket.create_connection(("127.0.0.1", port)) as c:   # and it answers right
            c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nhi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            want = b"+OK\r\n$2\r\nhi\r\n"
            got = b""
            while len(got) < len(want):
                got += c.recv(100)
            assert got == want
    finally:
        server.terminate()
        server.wait(10)
