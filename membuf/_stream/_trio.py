"""trio adapters: receive straight into native chunks from a trio socket, send, serve.

*Receive.* For a :class:`trio.SocketStream` the source calls a non-blocking
``recv_into`` on the socket straight into the engine's chunk (the stdlib socket
inside the trio socket when it has one; else ``os.readv`` on its public
``fileno()``: zero-copy either way), with trio's own sandwich around it:
``checkpoint_if_cancelled`` before, ``wait_readable`` when it would block,
``cancel_shielded_checkpoint`` after an immediate success. Because it waits
itself, it drops the chunk before waiting: an idle reader holds no receive
buffer. While it waits longer than ``idle_trim`` the engine goes idle
(``ReceiveEngine.idle``). Any other trio stream is read with
``receive_some`` and copied once (``stats().copied``); membuf's own TLS
stream (``_tls``) decrypts straight into the chunk.

*Send.* A socket gets ``sendmsg`` over the segments (gather, never joined).

*Serve.* ``serve_tcp`` is ``trio.serve_listeners`` with one
:class:`~membuf.Connection` per accepted socket (TLS handshake first, when
asked, within 60 s as asyncio's ``ssl_handshake_timeout``), the handler run by
``_tcp.run_handler``.
"""

from __future__ import annotations

import errno
import os
import socket as _stdlib_socket
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..allocator import Allocator
from ..memory import IOV_MAX, step_over
from ._engine import ReceiveEngine
from ._errors import broken, busy, closed, peer_of
from ._options import StreamOptions
from ._receive import Source
from ._send import Sender

__all__ = ["TrioSender", "TrioSocketSource", "TrioStreamSource", "source_for", "sender_for"]

_HAS_SENDMSG = hasattr(trio.socket.SocketType, "sendmsg")
HANDSHAKE_TIMEOUT = 60.0     # seconds a TLS client may take to shake hands (asyncio's default)


async def idle_wait(eng: ReceiveEngine, ready: Callable[[], Awaitable[object]]) -> None:
    """Wait for ``ready()``; past the engine's ``idle_trim`` seconds without data, trim
    first (the engine's ``idle``), then go on waiting."""
    trim = eng.idle_trim
    if trim is not None and not eng.trimmed:
        with trio.move_on_after(trim):
            await ready()
            return
        eng.idle()
    await ready()


class TrioSocketSource(Source):
    """Zero-copy receives from a trio socket into the engine's chunks."""

    lib = "trio"

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._sock = stream.socket
        raw = getattr(self._sock, "_sock", None)   # the stdlib socket inside, if trio has one
        self._recv_into = raw.recv_into if isinstance(raw, _stdlib_socket.socket) else None

    def _recv(self, buf: memoryview, size: int) -> int:
        if self._recv_into is not None:
            return self._recv_into(buf, size)
        fd = self._sock.fileno()            # -1 once closed: never another socket's number
        if fd < 0:
            raise OSError(errno.EBADF, "the socket was closed")
        return os.readv(fd, [buf])

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        if eng.busy:
            raise busy("trio")
        if eng.closed:
            raise closed("trio")
        if eng.eof:
            await trio.lowlevel.checkpoint()
            return False
        eng.check(needed, exact)
        await trio.lowlevel.checkpoint_if_cancelled()
        eng.busy = True
        waited = False
        try:
            while True:
                size = eng.plan(needed)
                # An auto chunk gives its bytes back when dropped: every path out of
                # here that does not commit it frees it (an idle reader holds none).
                buf = eng.buffer(size)
                try:
                    n = self._recv(buf, size)
                except BlockingIOError:
                    n = -1                # wait outside the except: its traceback holds buf
                except OSError as exc:
                    del buf
                    eng.drop()
                    raise broken("trio", exc) from None
                if n >= 0:
                    break
                del buf
                eng.drop()
                await self._wait()
                waited = True
                if eng.closed:
                    raise closed("trio")
        finally:
            eng.busy = False
        del buf
        if n:
            eng.commit(n)
        else:
            eng.drop()
            eng.eof = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return n > 0

    async def _wait(self) -> None:
        await idle_wait(self.engine, lambda: trio.lowlevel.wait_readable(self._sock))

    async def aclose(self) -> None:
        await self.stream.aclose()


class TrioStreamSource(Source):
    """Any trio ReceiveStream: ``receive_some``, copied once into a chunk."""

    lib = "trio"

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        if eng.busy:
            raise busy("trio")
        if eng.closed:
            raise closed("trio")
        if eng.eof:
            await trio.lowlevel.checkpoint()
            return False
        eng.check(needed, exact)
        size = eng.plan(needed)
        eng.busy = True
        try:
            data = await self.stream.receive_some(size)
        finally:
            eng.busy = False
        if eng.closed:
            raise closed("trio")
        if not data:
            eng.eof = True
            return False
        eng.feed(data)
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def source_for(stream: Any) -> Source | None:
    from ._tls import TLSStream, TrioTLSSource

    if isinstance(stream, TLSStream):
        return TrioTLSSource(stream)
    if isinstance(stream, trio.SocketStream):
        return TrioSocketSource(stream)
    if isinstance(stream, trio.abc.ReceiveStream):
        return TrioStreamSource(stream)
    return None


# -- sending ------------------------------------------------------------------


class TrioSender(Sender):
    """Gather sends on a trio socket; ``send_all`` per segment on other trio streams."""

    lib = "trio"

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self.stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.gathers = self._socket is not None and _HAS_SENDMSG
        # the stdlib socket under trio's (non-blocking), for send_nowait
        self._raw = getattr(self._socket, "_sock", None) if self.gathers else None

    def send_nowait(self, segments: list[memoryview]) -> int:
        raw = self._raw
        if raw is None or not segments:
            return 0
        try:
            return int(raw.sendmsg(segments if len(segments) <= IOV_MAX else segments[:IOV_MAX]))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise broken("trio", exc) from None

    async def send(self, segments: list[memoryview]) -> None:
        sock = self._socket
        if sock is None or not _HAS_SENDMSG:
            for seg in segments:
                await self.stream.send_all(seg)
            return
        if not segments:
            await trio.lowlevel.checkpoint()
            return
        i = 0
        while i < len(segments):
            try:
                sent = await sock.sendmsg(segments[i : i + IOV_MAX])
            except OSError as exc:
                raise broken("trio", exc) from None
            i = step_over(segments, i, sent)

    async def send_eof(self) -> None:
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            raise NotImplementedError(f"a {type(stream).__name__} cannot half-close")
        await stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()



def sender_for(stream: Any) -> Sender | None:
    from ._tls import TLSSender, TLSStream

    if isinstance(stream, TLSStream):
        return TLSSender(stream)
    if isinstance(stream, trio.abc.SendStream):
        return TrioSender(stream)
    return None


# -- tcp ----------------------------------------------------------------------------


def _peer(stream: Any) -> Any:
    sock = getattr(stream, "socket", None)
    if sock is None:
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    return peer_of(sock.getpeername) if sock is not None else None


def connection(stream: Any, allocator: Allocator | None, options: StreamOptions) -> Any:
    from ._connection import Connection
    from ._receive import StreamReader

    reader = StreamReader(stream, allocator, options=options)
    sender = sender_for(stream)
    assert sender is not None, "a trio stream that can receive but not send"
    return Connection._assemble(reader, sender, stream, _peer(stream))


async def open_tcp(host: str, port: int, ssl_context: _ssl.SSLContext | None,
                   server_hostname: str | None, allocator: Allocator | None,
                   options: StreamOptions) -> Any:
    stream: Any = await trio.open_tcp_stream(host, port)
    if ssl_context is not None:
        from ._tls import TLSStream

        tls = TLSStream(stream, ssl_context, server_side=False,
                        server_hostname=server_hostname if server_hostname is not None else host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        stream = tls
    return connection(stream, allocator, options)


async def serve_tcp(
    handler: Callable[[Any], Awaitable[object]], port: int, host: str | None,
    allocator: Allocator | None, options: StreamOptions, ssl_context: _ssl.SSLContext | None,
    backlog: int | None, handler_nursery: trio.Nursery | None, task_status: Any,
) -> None:
    from ._tcp import log, run_handler

    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)

    async def serve_one(stream: trio.SocketStream) -> None:
        conn = None
        try:
            if ssl_context is not None:
                from ._tls import TLSStream

                tls = TLSStream(stream, ssl_context, server_side=True)
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT):
                        await tls.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError,
                        trio.TooSlowError) as exc:
                    log.debug("TLS handshake with %s failed: %s", _peer(stream),
                              str(exc) or "timed out")
                    return
                conn = connection(tls, allocator, options)
            else:
                conn = connection(stream, allocator, options)
            await run_handler(handler, conn)
        finally:
            if conn is None:
                await trio.aclose_forcefully(stream)

    await trio.serve_listeners(serve_one, listeners, handler_nursery=handler_nursery,
                               task_status=task_status)
