"""TLS under every library, decrypted straight into native memory (docs/design.md §6).

membuf against membuf, and against a peer nobody here wrote: Debian's
``openssl s_server`` (membuf is the client) and ``openssl s_client`` (membuf is
the server), under trio, asyncio, uvloop and anyio on both backends.
Certificates come from ``trustme``. Every test checks ``stats().copied == 0``:
no plaintext byte went through a copy.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import trio
from test_stream import encode, leb128, make_frames
from test_stream_libs import LIBS, back, echo_handler, run, serving, stream_log, until

import membuf
from membuf import IncompleteReadError, Memory
from membuf.codecs import LengthPrefixed

trustme = pytest.importorskip("trustme")
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
assert stream_log  # a fixture, imported for its name


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a certificate for localhost / 127.0.0.1, both contexts and their files."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    d = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    return {"server": server, "client": client, "ca": d / "ca.pem", "pem": d / "server.pem"}


@pytest.mark.parametrize("lib", LIBS)
def test_echo_over_tls(lib: str, tls: dict[str, Any]) -> None:
    frames = make_frames(41, 300)
    frames.append(random.Random(2).randbytes(3 << 20))     # many records, flow control
    stats: list[membuf.StreamStats] = []

    async def handler(conn: membuf.Connection) -> None:
        try:
            await echo_handler(conn)
        finally:
            stats.append(conn.reader.stats())

    async def main() -> None:
        async with serving(lib, handler, ssl=tls["server"], max_buffered=8 << 20) as port:
            async with await membuf.open_tcp("127.0.0.1", port, ssl=tls["client"],
                                             server_hostname="localhost",
                                             max_buffered=8 << 20) as conn:
                async with anyio.create_task_group() as tg:
                    async def send() -> None:
                        data = encode(frames)
                        for i in range(0, len(data), 100_000):
                            await conn.send(data[i : i + 100_000])
                    tg.start_soon(send)
                    rx = conn.reader
                    for want in frames:
                        assert await rx.read_exactly(await rx.read_leb128()) == want
                s = rx.stats()
                assert s.copied == 0 and s.received == len(encode(frames)), s
                with pytest.raises(NotImplementedError):
                    await conn.send_eof()                  # TLS cannot half-close
            assert back(conn.allocator)
            await until(lambda: bool(stats), "server handler ended")
        assert stats[0].copied == 0 and stats[0].received == len(encode(frames))

    run(lib, main)


@pytest.mark.parametrize("mode", ["memory", "views-batch"])
@pytest.mark.parametrize("lib", LIBS)
def test_frames_over_tls(lib: str, mode: str, tls: dict[str, Any]) -> None:
    frames = make_frames(43, 500)
    got: list[bytes] = []
    views = "views" in mode

    async def handler(conn: membuf.Connection) -> None:
        async for item in conn.reader.frames(LengthPrefixed("leb128"), views=views,
                                             batch=views):
            for f in item if views else [item]:
                got.append(bytes(f) if views else f.to_bytes())
            del item, f
        assert conn.reader.stats().copied == 0
        await conn.send(leb128(len(got)))

    async def main() -> None:
        async with serving(lib, handler, ssl=tls["server"], chunk_size=2048) as port:
            async with await membuf.open_tcp("127.0.0.1", port, ssl=tls["client"],
                                             server_hostname="localhost") as conn:
                data = encode(frames)
                rng = random.Random(1)
                pos = 0
                while pos < len(data):
                    n = rng.randint(1, 5000)
                    await conn.send(data[pos : pos + n])
                    pos += n
                await conn.send(b"\x00")                  # an empty frame ends it
                frames.append(b"")
                with anyio.fail_after(20):
                    while len(got) < len(frames):
                        await anyio.sleep(0.005)

    run(lib, main)
    assert got == frames


@pytest.mark.parametrize("lib", LIBS)
def test_a_failed_handshake_closes_that_connection_quietly(lib: str, tls: dict[str, Any],
                                                         stream_log: Any) -> None:
    untrusted = ssl.create_default_context()        # does not know the test CA

    async def main() -> None:
        async with serving(lib, echo_handler, ssl=tls["server"]) as port:
            with pytest.raises((ssl.SSLError, trio.BrokenResourceError)) as info:
                await membuf.open_tcp("127.0.0.1", port, ssl=untrusted,
                                      server_hostname="localhost")
            if isinstance(info.value, trio.BrokenResourceError):
                assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            async with await membuf.open_tcp("127.0.0.1", port, ssl=tls["client"],
                                             server_hostname="localhost") as conn:
                await conn.send(b"\x02ok")
                assert await conn.reader.read_exactly(3) == b"\x02ok"

    run(lib, main)
    assert stream_log.at(logging.ERROR) == []


# -- against openssl ------------------------------------------------------------------------


@pytest.fixture
def s_server(tls: dict[str, Any]) -> Iterator[int]:
    """``openssl s_server -rev`` (it sends every line back reversed) for one connection."""
    proc = subprocess.Popen(
        [str(OPENSSL), "s_server", "-accept", "127.0.0.1:0", "-cert", str(tls["pem"]), "-rev",
         "-naccept", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(50):
            line = proc.stdout.readline()
            m = re.match(r"ACCEPT .*:(\d+)", line)
            if m:
                break
        else:
            raise AssertionError("openssl s_server did not say where it listens")
        yield int(m.group(1))
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_openssl
@pytest.mark.parametrize("lib", LIBS)
def test_client_against_openssl_s_server(lib: str, tls: dict[str, Any], s_server: int) -> None:
    lines = [random.Random(i).randbytes(random.Random(i).randint(1, 2000)).hex().encode()
             for i in range(40)]

    async def main() -> None:
        async with await membuf.open_tcp("127.0.0.1", s_server, ssl=tls["client"],
                                         server_hostname="localhost") as conn:
            for line in lines:
                await conn.send(Memory(line, b"\n"))          # prefix and newline: two pieces
                got = await conn.reader.read_until(b"\n", 1 << 16)
                assert got == line[::-1]
            assert conn.reader.stats().copied == 0
        del got                                   # the last line read pins its chunk
        assert back(conn.allocator)

    run(lib, main)


@needs_openssl
@pytest.mark.parametrize("lib", LIBS)
def test_server_against_openssl_s_client(lib: str, tls: dict[str, Any]) -> None:
    lines = [random.Random(i).randbytes(random.Random(i).randint(1, 3000)).hex().encode()
             for i in range(30)]
    copied: list[int] = []

    async def handler(conn: membuf.Connection) -> None:
        rx = conn.reader
        for _ in lines:
            line = await rx.read_until(b"\n", 1 << 16)
            await conn.send(Memory(leb128(len(line)).hex().encode(), b" ", *line, b"\n"))
        copied.append(rx.stats().copied)

    async def main() -> None:
        async with serving(lib, handler, ssl=tls["server"]) as port:
            res = await anyio.run_process(
                [str(OPENSSL), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                 str(tls["ca"]), "-servername", "localhost", "-verify_return_error", "-quiet"],
                input=b"".join(line + b"\n" for line in lines), check=False)
            assert res.returncode == 0, res.stderr
            want = b"".join(leb128(len(line)).hex().encode() + b" " + line + b"\n"
                            for line in lines)
            assert res.stdout == want
            await until(lambda: bool(copied), "handler ended")

    run(lib, main)
    assert copied == [0]


def test_tls_stream_is_a_trio_stream_too(tls: dict[str, Any]) -> None:
    """membuf's trio TLS stream also serves plain ``receive_some`` users (a copy)."""
    from membuf._stream._tls import TLSStream

    async def main() -> None:
        async def handler(conn: membuf.Connection) -> None:
            await conn.send(b"hello over tls")

        async with trio.open_nursery() as nursery:
            start = functools.partial(membuf.serve_tcp, handler, 0, ssl=tls["server"])
            listeners = await nursery.start(start)
            stream = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
            t = TLSStream(stream, tls["client"], server_side=False, server_hostname="localhost")
            await t.do_handshake()
            got = b""
            while chunk := await t.receive_some(5):
                got += chunk
            assert got == b"hello over tls"
            assert t.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            await t.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await t.receive_some()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_incomplete_tls_read_is_an_incomplete_read(tls: dict[str, Any]) -> None:
    async def handler(conn: membuf.Connection) -> None:
        await conn.send(leb128(10) + b"12345")

    async def main() -> None:
        async with serving("trio", handler, ssl=tls["server"]) as port:
            async with await membuf.open_tcp("127.0.0.1", port, ssl=tls["client"],
                                             server_hostname="localhost") as conn:
                n = await conn.reader.read_leb128()
                with pytest.raises(IncompleteReadError) as info:
                    await conn.reader.read_exactly(n)
                assert info.value.partial == 5

    trio.run(main)


def test_a_client_that_never_shakes_hands_is_dropped(tls: dict[str, Any],
                                                      stream_log: Any) -> None:
    """A TLS server under trio gives a silent client 60 s (virtual time here), then closes."""
    import trio.testing

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(membuf.serve_tcp, echo_handler, 0, ssl=tls["server"])
            listeners = await nursery.start(start)
            port = listeners[0].socket.getsockname()[1]
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            assert await silent.receive_some(100) == b""      # closed by the server
            assert trio.current_time() >= 60
            await silent.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert any("timed out" in m for _, m, _ in stream_log.at(logging.DEBUG))
    assert stream_log.at(logging.ERROR) == []
