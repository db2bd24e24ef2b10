"""Connection: a StreamReader to read, ``send`` to write, the same under every library."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..allocator import Allocator
from ..memory import Memory
from ._options import StreamOptions
from ._receive import StreamReader
from ._send import Sender, segments_of, sender_for

if TYPE_CHECKING:  # pragma: no cover - typing only
    from typing import Unpack

    from ._options import OptionKeywords

__all__ = ["Connection"]


class Connection:
    """A connection: :attr:`reader` to read, :meth:`send` to write.

    Made by :func:`membuf.open_tcp`, :func:`membuf.serve_tcp` and
    :func:`membuf.start_server` (one per accepted client), under trio, asyncio or
    anyio alike; or from a trio or anyio byte stream: ``Connection(stream)``.

    Attributes:
        reader: the :class:`StreamReader`.
        allocator: the connection's allocator (its own unless one was shared).
        stream: what it runs on: a trio stream (membuf's TLS stream with ``ssl=``),
            an asyncio transport, or the anyio stream it was made from.
        peer: the peer's address (``None`` when unknown).
        options: the :class:`StreamOptions` in force.

    :meth:`aclose` (``close`` is an alias) frees every byte the reader owns and
    closes the stream; with the connection's own allocator, its arenas are
    returned to the OS once nothing in it is still in use (retained frames and
    held views keep theirs).
    """

    reader: StreamReader
    allocator: Allocator
    stream: Any
    peer: Any
    options: StreamOptions

    def __init__(self, stream: Any, allocator: Allocator | None = None, *,
                 options: StreamOptions | None = None, **kw: Unpack[OptionKeywords]) -> None:
        opts = StreamOptions.make(options, **kw)
        reader = StreamReader(stream, allocator, options=opts)
        self._init(reader, sender_for(stream), stream, _peer(stream))

    @classmethod
    def _assemble(cls, reader: StreamReader, sender: Sender, stream: Any, peer: Any) -> Connection:
        conn = cls.__new__(cls)
        conn._init(reader, sender, stream, peer)
        return conn

    def _init(self, reader: StreamReader, sender: Sender, stream: Any, peer: Any) -> None:
        self.reader = reader
        self.allocator = reader.allocator
        self.options = reader.options
        self.stream = stream
        self.peer = peer
        self._sender = sender
        self._sending = 0        # sends in progress (send_nowait must not cut into one)
        self._closed = False

    async def send(self, memory: Memory | Any) -> None:
        """Send a Memory (gather send where the path allows, no joining copy) or a bytes-like.

        Returns once every byte is handed to the kernel (or the TLS layer), so the
        caller may reuse its buffers.

        Raises:
            the library's broken / closed errors (trio.BrokenResourceError,
            ConnectionResetError under asyncio, anyio.BrokenResourceError).
        """
        self._sending += 1
        try:
            await self._sender.send(segments_of(memory))
        finally:
            self._sending -= 1

    def send_nowait(self, segments: list[memoryview]) -> int:
        """Hand the kernel as many bytes of ``segments`` as it takes now, without
        waiting, in one gather send; returns how many (0 when the socket is full, while
        a :meth:`send` is in progress, or on a path that cannot: TLS, asyncio, anyio).

        The bytes are sent by the time it returns; a caller sends the rest with
        :meth:`send`. A server fanning one message out to many peers uses it to
        write to every idle peer from the task that has the message, with no task
        switch per peer.

        Raises:
            the library's broken error (trio.BrokenResourceError) when the peer is gone.
        """
        if self._sending or self._closed:
            return 0
        return self._sender.send_nowait(segments)

    async def send_eof(self) -> None:
        """Half-close: the peer reads end of stream; this side can still read.

        Raises:
            NotImplementedError: the stream cannot half-close (TLS).
        """
        await self._sender.send_eof()

    async def aclose(self) -> None:
        """Free everything the connection owns and close the stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.reader.release()
        await self._sender.aclose()

    async def close(self) -> None:
        """An alias of :meth:`aclose`."""
        await self.aclose()

    @property
    def zero_copy_send(self) -> bool:
        """True when :meth:`send` hands a Memory's segments to the kernel as they are
        (``sendmsg`` on a trio socket): payload bytes are never copied on the way.
        False where the path copies (TLS encrypts every byte; other streams may join)."""
        return self._sender.gathers

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {self.reader._source.lib} peer={self.peer} {state} {self.reader!r}>"


def _peer(stream: Any) -> Any:
    if "trio" in sys.modules:
        from . import _trio

        p = _trio._peer(stream)
        if p is not None:
            return p
    if "anyio" in sys.modules:
        from . import _anyio

        return _anyio.peer(stream)
    return None
