"""trio streams over native memory: StreamReader, Connection, serve_tcp / open_tcp.

Strategy.

*Receive path.* A :class:`StreamReader` keeps one :class:`~membuf.Memory` of
received chunks and one :class:`~membuf.Reader` following it. To receive, it
takes a chunk from its allocator and, for a :class:`trio.SocketStream`, calls
``recv_into`` on the socket straight into that chunk (no copy), then the
unused tail goes back and the used head is pushed onto the Memory. Any other :class:`trio.abc.ReceiveStream` (TLS, memory streams, pipes)
is read with ``receive_some`` and copied once into a malloc'd chunk. The
receive size adapts: it doubles while receives fill their chunk and halves
back when they come back mostly empty. How far it may grow depends on what
reads wait for (a decaying maximum of "partial frame + bytes still needed"):
small items cap it at 4 x ``chunk_size``, so a chunk is parsed while it is
still in cache; large ones let it grow to 64 x ``chunk_size`` (never past
``max_buffered``), so 64 KiB frames cost few syscalls. A read that knows it
needs ``n`` more bytes asks for at least ``n``.

*Coalescing.* In ``frames(codec, views=True)`` a partial frame at the end of
the buffer (at most half the new chunk) is copied to the head of the next
chunk once the receive has succeeded, so frames never span chunks and the
codec never has to join one. In every mode, a partial item that arrived in 8
or more pieces is coalesced the same way, so a peer dribbling one byte per
packet cannot make every parse attempt walk thousands of tiny segments
(counted in ``stats().compacted``).

*Ownership.* Receive chunks are ``membuf._core`` auto chunks: a chunk gives
its bytes back to the allocator when it dies. The reader keeps its chunks in
receive order with the stream offset where each ends, and lets go of
(disowns) a chunk once every byte of it is consumed: lazily, just before
the next receive (and at ``read_frame``, ``aclose``, ``release``). From then
on the chunk lives exactly as long as the views the user holds into it, so
views returned by a read stay valid and unchanged for as long as they are
held, and the reader never frees memory behind a held view (such bytes count
in ``Allocator.stats().pinned``). :meth:`StreamReader.read_frame` clips the
frame's views off the front of the Memory into a
:class:`~membuf.RecyclableMemory` that holds them until ``recycle``. A frame
that ``split_views`` still has to join (one longer than half a chunk) gets a
chunk of its own that the reader lets go of at once. An idle reader holds no
chunk: when ``recv_into`` would block, the chunk is dropped before waiting, and a reader with its own allocator trims it after ``idle_trim``
seconds without data, so an idle connection holds no native memory at all.

*Cancellation safety.* Every read is "parse, or receive and retry": parsing is
synchronous and atomic (the Reader raises ``NeedMore`` and consumes nothing),
and a receive appends its bytes to the Memory before anything else can run.
So a read cancelled while it waits has consumed nothing, and retrying it
finds every byte that arrived. Nothing is consumed before an ``await``.

*Checkpoints.* A read that is served from buffered bytes returns without a
trio checkpoint (a checkpoint costs microseconds, a frame should cost less
than one); every receive is a checkpoint. This is the one deliberate
departure from trio's "every async call is a checkpoint" convention.

*Memory bound.* The bytes buffered but not yet consumed never exceed
``max_buffered``; a read (or a frame) that needs more raises
:class:`~membuf.MalformedError` instead of growing without bound.

Not handled on purpose: two tasks reading one StreamReader at once (raises
``trio.BusyResourceError``); sharing a reader between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ._stream import Frames, StreamReader, StreamStats, _raw_socket, _stream_error
from .allocator import Allocator
from .memory import IOV_MAX, Memory, step_over

__all__ = [
    "Connection",
    "Frames",
    "StreamReader",
    "StreamStats",
    "open_tcp",
    "send_memory",
    "serve_tcp",
]

log = logging.getLogger("membuf.stream")

# -- sending ------------------------------------------------------------------


async def send_memory(stream: trio.abc.SendStream, memory: Memory | Any) -> None:
    """Send every byte of ``memory`` (a Memory or any bytes-like), in order.

    On a :class:`trio.SocketStream` this is a gather send: ``sendmsg`` with the
    segments as they are, continued after partial sends, never joined into one
    buffer. Any other stream gets ``send_all`` once per segment.

    Raises:
        trio.BrokenResourceError: the connection broke.
        trio.ClosedResourceError: the stream was closed.
    """
    segments: Iterable[Any] = memory if isinstance(memory, Memory) else (memory,)
    raw = _raw_socket(stream)
    if raw is None or not hasattr(raw, "sendmsg"):
        for seg in segments:
            if len(seg):
                await stream.send_all(seg)
        return
    assert isinstance(stream, trio.SocketStream)
    pending = [seg if type(seg) is memoryview else memoryview(seg) for seg in segments]
    pending = [seg for seg in pending if len(seg)]
    if not pending:
        await trio.lowlevel.checkpoint()
        return
    sock = stream.socket
    i = 0
    while i < len(pending):
        try:
            sent = await sock.sendmsg(pending[i : i + IOV_MAX])
        except OSError as exc:
            raise _stream_error(exc) from None
        i = step_over(pending, i, sent)


# -- connections ----------------------------------------------------------------


class Connection:
    """A TCP connection: a :class:`StreamReader` to read, ``send`` to write.

    Made by :func:`open_tcp` and by :func:`serve_tcp` (one per accepted client).

    Attributes:
        stream: the underlying :class:`trio.SocketStream`.
        reader: the :class:`StreamReader` over it.
        allocator: the allocator of this connection (its own unless one was shared).

    ``close`` frees every byte the connection's reader owns and closes the
    socket; with the connection's own allocator, its arenas are returned to
    the OS once nothing in it is still in use (retained frames keep theirs).
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        allocator: Allocator | None = None,
        *,
        chunk_size: int = 16 << 10,
        max_buffered: int = 1 << 20,
        idle_trim: float | None = 1.0,
    ) -> None:
        self.stream = stream
        self.reader = StreamReader(stream, allocator, chunk_size, max_buffered, idle_trim=idle_trim)
        self.allocator: Allocator = self.reader.allocator
        self._closed = False

    async def send(self, memory: Memory | Any) -> None:
        """Send a Memory (gather send, no joining copy) or any bytes-like.

        Raises:
            trio.BrokenResourceError / trio.ClosedResourceError: as ``send_all``.
        """
        await send_memory(self.stream, memory)

    async def send_eof(self) -> None:
        """Half-close: the peer reads end of stream; this side can still read."""
        await self.stream.send_eof()

    async def close(self) -> None:
        """Free everything the connection owns and close the socket (idempotent)."""
        self.reader.release()
        self._closed = True
        await self.stream.aclose()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        try:
            peer = self.stream.socket.getpeername()
        except OSError:
            peer = "?"
        return f"<Connection peer={peer} {'closed' if self._closed else 'open'} {self.reader!r}>"


async def open_tcp(
    host: str,
    port: int,
    *,
    allocator: Allocator | None = None,
    chunk_size: int = 16 << 10,
    max_buffered: int = 1 << 20,
) -> Connection:
    """Connect to ``host:port`` and return a :class:`Connection`.

    Raises:
        OSError: the connection could not be made.
    """
    stream = await trio.open_tcp_stream(host, port)
    return Connection(stream, allocator, chunk_size=chunk_size, max_buffered=max_buffered)


async def serve_tcp(
    handler: Callable[[Connection], Awaitable[object]],
    port: int,
    host: str | None = "127.0.0.1",
    allocator: Allocator | None = None,
    *,
    chunk_size: int = 16 << 10,
    max_buffered: int = 1 << 20,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve TCP connections forever, calling ``await handler(conn)`` for each.

    Use it like :func:`trio.serve_tcp`: ``listeners = await nursery.start(serve_tcp,
    handler, 0)`` binds, starts accepting and returns the listeners (port 0 picks
    a free port: ``listeners[0].socket.getsockname()[1]``).

    Each connection gets its own allocator unless ``allocator`` is given, in
    which case every connection shares it and frees exactly what it owned.
    When the handler returns or raises, the connection is closed and every byte
    it owned is freed; a handler exception is logged (logger ``membuf.stream``)
    and the server keeps serving.

    Args:
        handler: ``async def handler(conn: Connection)``.
        port: TCP port (0: any free port).
        host: address to bind (``None``: every interface).
        allocator: one allocator for every connection, or ``None`` for one each.
        chunk_size, max_buffered: passed to each connection's StreamReader.
        backlog, handler_nursery: as for :func:`trio.serve_tcp`.

    Raises:
        OSError: the port could not be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)

    async def serve_one(stream: trio.SocketStream) -> None:
        conn = Connection(stream, allocator, chunk_size=chunk_size, max_buffered=max_buffered)
        try:
            await handler(conn)
        except Exception:
            log.exception("connection handler %r failed; connection closed", handler)
        finally:
            conn.reader.release()
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(
        serve_one, listeners, handler_nursery=handler_nursery, task_status=task_status
    )
