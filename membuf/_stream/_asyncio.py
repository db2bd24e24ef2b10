"""asyncio adapters (uvloop included): a BufferedProtocol that receives into native chunks.

*Receive.* :class:`AsyncioProtocol` is an ``asyncio.BufferedProtocol`` whose
``get_buffer`` hands the transport the free tail of a fresh engine chunk and
whose ``buffer_updated`` commits what arrived: the kernel (or, on a TLS
transport, ``SSLObject.read``) writes straight into native memory, and
``stats().copied`` stays 0. The loop asks for a buffer only when the socket is
readable, so an idle connection holds no receive chunk. Bytes arrive whether
or not a read waits; a waiting read parks on a future that ``buffer_updated``
resolves once enough has arrived (its exact need, when the read knows it), so
a read cancelled (``Task.cancel()``, ``asyncio.wait_for``) has consumed
nothing and its retry finds every byte. Flow control keeps the pull model's
bound: reading pauses when nothing waits and a full receive is buffered, and
always before ``max_buffered`` would be passed. A timer checks once per
``idle_trim`` seconds whether anything arrived, and lets the engine go idle
when nothing did.

*Send.* ``writelines`` where it gathers without joining (uvloop; CPython from
3.12), otherwise small segments are coalesced and large ones written as they
are. The write-buffer high-water mark is 0, so ``send`` returns once the
kernel (or the TLS layer) has every byte, as trio's ``send_all`` does, and a
caller may reuse its buffers at once.

*Serve.* :func:`start_server` mirrors ``asyncio.start_server`` (returns the
``asyncio.Server``); each connection's handler runs in its own task through
``_tcp.run_handler``. :func:`serve_tcp` is the same under ``task_status``
(anyio's ``tg.start``), and cancels its handlers when it is cancelled.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..allocator import Allocator
from ._errors import broken, busy, closed
from ._options import StreamOptions
from ._receive import Source, StreamReader
from ._send import Sender, coalesce

__all__ = ["AsyncioProtocol", "AsyncioSender", "Listener", "open_tcp", "serve_tcp",
           "source_for", "start_server"]

_WRITELINES_GATHERS = sys.version_info >= (3, 12)


class AsyncioProtocol(asyncio.BufferedProtocol, Source):
    """The protocol of one connection, and the reader's source."""

    lib = "asyncio"

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_connect: Callable[[AsyncioProtocol], None] | None = None) -> None:
        self._loop = loop
        self._on_connect = on_connect
        self.transport: Any = None
        self.stream: Any = None
        self._ssl = False
        self._waiter: asyncio.Future[None] | None = None
        self._want = 1            # what the last read waited for: sizes the next receive
        self._item = 1            # ...and the whole item it waits for (partial + needed)
        self._until = 0           # wake the waiting read once this much is buffered
        self._paused = False      # reading paused (flow control)
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._lost = False
        self._idle: asyncio.TimerHandle | None = None
        self._idle_mark = -1
        self._scratch: memoryview | None = None
        self.reader: StreamReader | None = None

    # -- asyncio's side -----------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = self.stream = transport
        self._ssl = transport.get_extra_info("sslcontext") is not None
        # pause_writing as soon as anything is buffered: send() waits until the kernel
        # (or the TLS layer) has every byte, so callers may reuse their buffers at once.
        # (The TLS transports pause at size >= high, the TCP ones at size > high.)
        transport.set_write_buffer_limits(high=1 if self._ssl else 0, low=0)
        if self._on_connect is not None:
            self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        eng = self.engine
        if eng.closed:                    # released: whatever still arrives is dropped
            if self._scratch is None:
                self._scratch = memoryview(bytearray(16 << 10))
            return self._scratch
        return eng.buffer(eng.plan(self._want, self._item))

    def buffer_updated(self, nbytes: int) -> None:
        eng = self.engine
        if eng.closed:
            return
        eng.commit(nbytes)
        if self._idle is None and eng.idle_trim is not None:
            self._arm_idle()
        buffered = len(eng.reader)
        w = self._waiter
        if w is not None:
            if buffered >= self._until:
                self._waiter = None
                if not w.done():
                    w.set_result(None)
                    return
            elif buffered < eng.max_buffered:
                return
        # Nothing waits (or the read woken has not run yet): pause once a full receive
        # is buffered, as the pull model would, and always before max_buffered would
        # be passed. uvloop reads until a read comes back short before it runs any
        # task: unpaused, a small-frame reader would get batches of thousands of
        # views (GC work per view grows with the batch).
        if not self._paused and buffered >= min(eng.max_buffered, eng._cap):
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        eng = self.engine
        eng.drop()
        eng.eof = True
        self._wake()
        return not self._ssl              # plain TCP: keep the write side open

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        eng = self.engine
        eng.drop()
        if not eng.eof:
            eng.eof = True
            eng.error = exc if exc is not None else ConnectionResetError("connection lost")
        self._wake()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        for fut in self._drainers:
            if not fut.done():
                fut.set_exception(ConnectionResetError("connection lost"))
        self._drainers.clear()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _arm_idle(self) -> None:
        eng = self.engine
        assert eng.idle_trim is not None
        self._idle_mark = eng.receives
        self._idle = self._loop.call_later(eng.idle_trim, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        eng = self.engine
        if eng.closed or self._lost:
            return
        if eng.receives != self._idle_mark:
            self._arm_idle()              # something arrived since: look again later
        else:
            eng.idle()                    # the next receive arms the timer again

    # -- the reader's side ----------------------------------------------------------

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        if eng.closed:
            raise closed("asyncio")
        if self._waiter is not None:
            raise busy("asyncio")
        if eng.eof:
            if eng.error is not None:
                raise broken("asyncio", eng.error)
            return False
        eng.check(needed, exact)
        before = eng.received
        buffered = len(eng.reader)
        self._want = needed
        self._item = buffered + needed
        self._until = self._item if exact else 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            if self._waiter is fut:
                self._waiter = None
        if eng.closed:
            raise closed("asyncio")
        if eng.received != before:
            return True
        if eng.error is not None:
            raise broken("asyncio", eng.error)
        return False

    def released(self) -> None:
        self._wake()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    async def aclose(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()
        await asyncio.sleep(0)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        fut = self._loop.create_future()
        self._drainers.append(fut)
        await fut


class AsyncioSender(Sender):
    """Writes on the protocol's transport, then waits until every byte is handed on."""

    lib = "asyncio"

    def __init__(self, protocol: AsyncioProtocol) -> None:
        self._proto = protocol
        t = protocol.transport
        self._gather = _WRITELINES_GATHERS or type(t).__module__.startswith("uvloop")

    async def send(self, segments: list[memoryview]) -> None:
        proto = self._proto
        t = proto.transport
        if proto._lost:
            raise ConnectionResetError("connection lost")
        if t.is_closing():
            raise closed("asyncio", "this connection was closed")
        if segments:
            if proto._ssl:
                t.writelines(coalesce(segments))        # every byte is encrypted anyway
            elif self._gather:
                t.writelines(segments)
            else:
                for piece in coalesce(segments):         # writelines would join them all
                    t.write(piece)
        await proto.drain()

    async def send_eof(self) -> None:
        t = self._proto.transport
        if not t.can_write_eof():
            raise NotImplementedError("this transport cannot half-close (TLS): send_eof")
        t.write_eof()

    async def aclose(self) -> None:
        await self._proto.aclose()



class AsyncioStreamSource(Source):
    """An ``asyncio.StreamReader``: ``read(n)``, copied once into a chunk."""

    lib = "asyncio"

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        if eng.busy:
            raise busy("asyncio")
        if eng.closed:
            raise closed("asyncio")
        if eng.eof:
            return False
        eng.check(needed, exact)
        size = eng.plan(needed)
        eng.busy = True
        try:
            data = await self.stream.read(size)
        finally:
            eng.busy = False
        if eng.closed:
            raise closed("asyncio")
        if not data:
            eng.eof = True
            return False
        eng.feed(data)
        return True

    async def aclose(self) -> None:
        await asyncio.sleep(0)        # an asyncio.StreamReader has nothing to close


def source_for(stream: Any) -> Source | None:
    if isinstance(stream, asyncio.StreamReader):
        return AsyncioStreamSource(stream)
    return None


# -- tcp ----------------------------------------------------------------------------


class Listener:
    """One listening socket of a server (``.socket.getsockname()``, like trio's listeners)."""

    def __init__(self, server: Any, sock: Any) -> None:
        self.server = server
        self.socket = sock

    def __repr__(self) -> str:
        return f"<membuf asyncio Listener {self.socket.getsockname()}>"


def _connection(proto: AsyncioProtocol) -> Any:
    from ._connection import Connection

    assert proto.reader is not None
    peer = proto.transport.get_extra_info("peername")
    return Connection._assemble(proto.reader, AsyncioSender(proto), proto.transport, peer)


async def open_tcp(host: str, port: int, ssl_context: _ssl.SSLContext | None,
                   server_hostname: str | None, allocator: Allocator | None,
                   options: StreamOptions) -> Any:
    loop = asyncio.get_running_loop()
    proto = AsyncioProtocol(loop)
    proto.reader = StreamReader(proto, allocator, options=options)
    kw: dict[str, Any] = {}
    if ssl_context is not None:
        kw = {"ssl": ssl_context, "server_hostname": server_hostname}
    try:
        await loop.create_connection(lambda: proto, host, port, **kw)
    except BaseException:
        proto.reader.release()
        raise
    return _connection(proto)


async def _start(handler: Callable[[Any], Awaitable[object]], host: Any, port: Any,
                 ssl_context: _ssl.SSLContext | None, allocator: Allocator | None,
                 options: StreamOptions, server_kw: dict[str, Any],
                 ) -> tuple[Any, set[asyncio.Task[None]]]:
    from ._tcp import run_handler

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def connected(proto: AsyncioProtocol) -> None:
        task = loop.create_task(run_handler(handler, _connection(proto)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def factory() -> AsyncioProtocol:
        proto = AsyncioProtocol(loop, connected)
        proto.reader = StreamReader(proto, allocator, options=options)
        return proto

    server = await loop.create_server(factory, host, port, ssl=ssl_context, **server_kw)
    return server, tasks


async def start_server(handler: Callable[[Any], Awaitable[object]], host: Any, port: Any,
                       ssl_context: _ssl.SSLContext | None, allocator: Allocator | None,
                       options: StreamOptions, server_kw: dict[str, Any]) -> Any:
    server, _ = await _start(handler, host, port, ssl_context, allocator, options, server_kw)
    return server


async def serve_tcp(handler: Callable[[Any], Awaitable[object]], port: int, host: str | None,
                    allocator: Allocator | None, options: StreamOptions,
                    ssl_context: _ssl.SSLContext | None, backlog: int | None,
                    task_status: Any) -> None:
    kw = {"backlog": backlog} if backlog is not None else {}
    server, tasks = await _start(handler, host, port, ssl_context, allocator, options, kw)
    try:
        task_status.started([Listener(server, s) for s in server.sockets])
        await asyncio.get_running_loop().create_future()     # until cancelled
    finally:
        server.close()
        pending = list(tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
