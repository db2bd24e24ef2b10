"""Sending: gather sends of a Memory's segments, never joined when the path allows it.

``send_memory(stream, memory)`` picks a :class:`Sender` by the stream's type:
a trio socket gets ``sendmsg`` over the segments as they are (at most
``IOV_MAX`` per call, continued after partial sends); membuf's TLS stream and
asyncio's TLS transport get small segments coalesced into records (every
byte is encrypted, that is, copied, anyway); other streams get one
``send_all`` / ``send`` per segment. The Memory is never consumed.
"""

from __future__ import annotations

import sys
from typing import Any

from ..memory import Memory, as_view

__all__ = ["Sender", "coalesce", "segments_of", "send_memory", "sender_for"]

RECORD = 16 << 10      # coalesce small segments into pieces of about one TLS record


def segments_of(memory: Memory | Any) -> list[memoryview]:
    """The non-empty segments of a Memory, or of one bytes-like, as byte views.

    Raises:
        TypeError: ``memory`` is neither a Memory nor bytes-like.
    """
    if isinstance(memory, Memory):
        return [s for s in memory if len(s)]
    try:
        view = as_view(memory)
    except TypeError:
        raise TypeError(
            f"send needs a Memory or a bytes-like object, got {type(memory).__name__}"
        ) from None
    return [view] if len(view) else []


def coalesce(segments: list[memoryview], small: int = RECORD) -> list[Any]:
    """Runs of segments shorter than ``small`` joined into one bytes; longer ones as they are.

    For paths that copy every byte anyway (TLS) or would join the whole list
    (asyncio's ``writelines`` before 3.12): a long run of tiny segments becomes
    a few writes of about ``small`` bytes, and a large payload is never joined.
    """
    out: list[Any] = []
    run: list[memoryview] = []
    size = 0
    for seg in segments:
        n = len(seg)
        if n >= small:
            if run:
                out.append(run[0] if len(run) == 1 else b"".join(run))
                run, size = [], 0
            out.append(seg)
            continue
        run.append(seg)
        size += n
        if size >= small:
            out.append(b"".join(run))
            run, size = [], 0
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


class Sender:
    """One library's way of sending segments (subclassed per adapter)."""

    lib = "trio"
    #: True when ``send`` hands the segments to the kernel as they are (no payload copy)
    gathers = False

    async def send(self, segments: list[memoryview]) -> None:
        raise NotImplementedError

    def send_nowait(self, segments: list[memoryview]) -> int:
        """Hand the kernel what it takes now, without waiting: the bytes it took (0 where
        this sender cannot, or the socket is full)."""
        return 0

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError



def sender_for(stream: Any) -> Sender:
    """The sender for a trio or anyio stream; TypeError for anything else."""
    if "trio" in sys.modules:
        from . import _trio

        sender = _trio.sender_for(stream)
        if sender is not None:
            return sender
    if "anyio" in sys.modules:
        from . import _anyio

        sender = _anyio.sender_for(stream)
        if sender is not None:
            return sender
    raise TypeError(
        f"send_memory cannot send on a {type(stream).__module__}.{type(stream).__qualname__}: "
        "it sends on trio streams, anyio byte streams and membuf Connections"
    )


async def send_memory(stream: Any, memory: Memory | Any) -> None:
    """Send every byte of ``memory`` (a Memory or any bytes-like), in order.

    ``stream``: a trio stream (a :class:`trio.SocketStream` gets a gather send:
    ``sendmsg`` over the segments as they are, never joined), an anyio byte
    stream, or a :class:`~membuf.Connection` (any library, TLS included).

    Raises:
        TypeError: ``stream`` cannot send, or ``memory`` is not bytes-like.
        the library's broken / closed errors (``trio.BrokenResourceError``, ...).
    """
    from ._connection import Connection

    if isinstance(stream, Connection):
        await stream.send(memory)
        return
    await sender_for(stream).send(segments_of(memory))
