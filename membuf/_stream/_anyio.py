"""anyio adapters: any anyio byte stream, on either backend.

An ``anyio.abc.ByteReceiveStream`` hands out ``bytes`` (``receive``), so it is
copied once into a native chunk (``stats().copied``); anyio's own TLS stream
works the same way. TCP under anyio does not need this path: ``open_tcp`` and
``serve_tcp`` see the backend anyio runs on (sniffio says ``"trio"`` or
``"asyncio"``) and use that library's zero-copy adapter. Errors are anyio's
(``anyio.BrokenResourceError``, ``ClosedResourceError``, ``BusyResourceError``);
``anyio.EndOfStream`` is the end of the stream.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._errors import busy, closed, peer_of
from ._receive import Source
from ._send import Sender

__all__ = ["AnyioSender", "AnyioSource", "peer", "sender_for", "source_for"]


class AnyioSource(Source):
    """``receive(n)`` on an anyio byte stream, copied once into a chunk."""

    lib = "anyio"

    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self.stream = stream

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        if eng.busy:
            raise busy("anyio")
        if eng.closed:
            raise closed("anyio")
        if eng.eof:
            await anyio.lowlevel.checkpoint()
            return False
        eng.check(needed, exact)
        size = eng.plan(needed)
        eng.busy = True
        try:
            data = await self.stream.receive(size)
        except anyio.EndOfStream:
            eng.eof = True
            return False
        finally:
            eng.busy = False
        if eng.closed:
            raise closed("anyio")
        if not data:                  # not anyio's contract, but some streams do it
            eng.eof = True
            return False
        eng.feed(data)
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


class AnyioSender(Sender):
    """``send`` once per segment on an anyio byte stream."""

    lib = "anyio"

    def __init__(self, stream: anyio.abc.ByteSendStream) -> None:
        self.stream = stream

    async def send(self, segments: list[memoryview]) -> None:
        send = self.stream.send
        for seg in segments:
            await send(seg)  # type: ignore[arg-type]  # any bytes-like works on anyio's streams

    async def send_eof(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:
            raise NotImplementedError(f"a {type(self.stream).__name__} cannot half-close")
        await send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()



def source_for(stream: Any) -> Source | None:
    if isinstance(stream, anyio.abc.ByteReceiveStream):
        return AnyioSource(stream)
    return None


def sender_for(stream: Any) -> Sender | None:
    if isinstance(stream, anyio.abc.ByteSendStream):
        return AnyioSender(stream)
    return None


def peer(stream: Any) -> Any:
    extra = getattr(stream, "extra", None)
    if extra is None:
        return None
    return peer_of(lambda: extra(anyio.abc.SocketAttribute.remote_address, None))
