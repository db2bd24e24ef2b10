"""Every contender of the suite, each defined once: membuf's forms and the baselines.

Baselines are in their best idiomatic form, and both forms where a library has
two (docs/benchmarks.md, "Fairness rules"). Every contender adds what it parsed
to a :class:`Tally` -- ``(frames, payload bytes, sum of first payload bytes)`` --
that the suite checks against the generator's.

* buffer splitters (:func:`leb128_frames`, :func:`be32_frames`, :func:`crlf_frames`):
  the plain-Python loop, shared by every bytearray or memoryview baseline, in
  memory or on a socket; the prefix loop is written out inline, as a user would,
  because a function call per frame would slow the baseline down;
* feeders (``feed(chunk)``): one way to split a stream that arrives in chunks;
  in memory they are fed a list of chunks, on a socket whatever a receive returns;
* stream readers of the event loops (``readexactly``, ``receive_exactly``...);
* socket receivers and the runners (trio, asyncio, asyncio protocol, uvloop, anyio,
  and TLS over asyncio and trio) that accept the sender's connections and run one
  receiver on each, timed; the raw limits of each library (``recv_into`` into one
  buffer, no parsing);
* reader calls: one value per call (``Reader.read_be`` against ``struct``...);
* RTMP relays (:class:`NginxRelay`, :class:`MembufRelay`): a server process on a
  loopback port that one ffmpeg publishes to and N ffmpeg players pull from
  (suite_rtmp.py reads the processes' CPU and RSS in ``/proc``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import operator
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from _common import CheckError, Checksum
from sender import accept_sender

from membuf import IncompleteReadError, Memory, Reader, StreamReader
from membuf.codecs import Delimited, LengthPrefixed

_first = operator.itemgetter(0)
_be32 = struct.Struct(">I").unpack_from
MAX_FRAME = 1 << 20
KIND = "leb128"                       # the socket runs' framing


class Tally:
    """What a contender parsed. Chunk-wise contenders add to it after every chunk (the
    memory part polls it while connections stay open); ``held`` is what keeps the
    contender's buffered bytes (a bytearray, a StreamReader), for the memory part."""

    __slots__ = ("frames", "payload", "first", "held")

    def __init__(self) -> None:
        self.frames = self.payload = self.first = 0
        self.held: Any = None

    def add(self, c: Checksum) -> None:
        self.frames += c[0]
        self.payload += c[1]
        self.first += c[2]

    def checksum(self) -> Checksum:
        return self.frames, self.payload, self.first


Case = Callable[[list[bytes]], Checksum]


def loop_sum(frames_of_a_batch: list[Any]) -> Checksum:
    """The checksum of a batch frame by frame, in a Python loop, as a baseline would."""
    frames = payload = first = 0
    for v in frames_of_a_batch:
        frames += 1
        payload += len(v)
        first += v[0]
    return frames, payload, first


# -- the plain-Python splitters: complete frames of data[pos:end] into t; where the rest starts.
# ``data`` is indexed for prefixes, ``view`` sliced for frames: slicing a bytearray or bytes
# copies the frame, slicing a memoryview does not.


def leb128_frames(data: Any, view: Any, pos: int, end: int, t: Tally) -> int:
    frames = payload = first = 0
    while pos < end:
        b = data[pos]
        p = pos + 1
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if p >= end:
                break
            b = data[p]
            p += 1
            n |= (b & 0x7F) << shift
            shift += 7
        else:
            if p + n <= end:
                frame = view[p : p + n]
                frames += 1
                payload += len(frame)
                first += frame[0]
                pos = p + n
                continue
        break                            # the prefix or the body is incomplete
    t.add((frames, payload, first))
    return pos


def be32_frames(data: Any, view: Any, pos: int, end: int, t: Tally) -> int:
    frames = payload = first = 0
    unpack = _be32
    while pos + 4 <= end:
        n = unpack(data, pos)[0]
        p = pos + 4
        if p + n > end:
            break
        frame = view[p : p + n]
        frames += 1
        payload += len(frame)
        first += frame[0]
        pos = p + n
    t.add((frames, payload, first))
    return pos


def crlf_frames(data: Any, view: Any, pos: int, end: int, t: Tally) -> int:
    frames = payload = first = 0
    find = data.find
    while (i := find(b"\r\n", pos, end)) >= 0:
        line = view[pos:i]
        frames += 1
        payload += len(line)
        first += line[0]
        pos = i + 2
    t.add((frames, payload, first))
    return pos


SPLITTERS = {"leb128": leb128_frames, "be32": be32_frames, "crlf": crlf_frames}


# -- feeders: feed(chunk) splits what it can; pending() is what is left unparsed --------------


class BytearrayFeeder:
    """``buf += chunk``, frames parsed in place, one copy (``buf[p:p+n]``) per frame,
    ``del buf[:pos]``: the plain loop, trio ``receive_some`` and anyio ``receive``."""

    def __init__(self, kind: str, t: Tally) -> None:
        self.buf = t.held = bytearray()
        self.split, self.t = SPLITTERS[kind], t

    def feed(self, chunk: Any) -> None:
        buf = self.buf
        buf += chunk
        del buf[: self.split(buf, buf, 0, len(buf), self.t)]

    def pending(self) -> int:
        return len(self.buf)


class ViewsFeeder:
    """The zero-copy pure-Python form: ``tail + chunk`` as one bytes, frames as
    memoryview slices of it, the unparsed tail carried over."""

    def __init__(self, kind: str, t: Tally) -> None:
        self.tail, self.split, self.t = b"", SPLITTERS[kind], t

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk if self.tail else chunk
        self.tail = data[self.split(data, memoryview(data), 0, len(data), self.t):]

    def pending(self) -> int:
        return len(self.tail)


class SplitFeeder:
    """CRLF lines with ``bytes.split``, the tail carried over, each batch summed in C."""

    def __init__(self, kind: str, t: Tally) -> None:
        self.rest, self.t = b"", t

    def feed(self, chunk: bytes) -> None:
        lines = (self.rest + chunk).split(b"\r\n")
        self.rest = lines.pop()
        self.t.add((len(lines), sum(map(len, lines)), sum(map(_first, lines))))

    def pending(self) -> int:
        return len(self.rest)


class MembufFeeder:
    """``Memory.push`` + ``split_views`` + ``Reader.clip_front``. ``loop``: each frame in a
    Python loop (as the baselines do) instead of one ``len``/``sum(map(...))`` per batch;
    ``memory``: ``split``, one Memory per frame."""

    def __init__(self, kind: str, t: Tally, loop: bool = False, memory: bool = False) -> None:
        codec = (Delimited(b"\r\n", max_frame=1 << 16) if kind == "crlf"
                 else LengthPrefixed(kind, max_frame=MAX_FRAME))
        self.split = codec.split if memory else codec.split_views
        self.m = Memory()
        self.r = self.m.reader()
        self.t, self.loop, self.memory = t, loop, memory

    def feed(self, chunk: bytes) -> None:
        self.m.push(chunk)
        out = self.split(self.r)
        self.r.clip_front()
        if self.memory:
            self.t.add((len(out), sum(map(len, out)), sum(next(iter(f))[0] for f in out)))
        elif self.loop:
            self.t.add(loop_sum(out))
        else:
            self.t.add((len(out), sum(map(len, out)), sum(map(_first, out))))

    def pending(self) -> int:
        return len(self.r)


def fed(feeder: Callable[..., Any], kind: str, **kw: Any) -> Case:
    """An in-memory contender: every chunk fed in turn; nothing may be left over."""

    def run(chunks: list[bytes]) -> Checksum:
        t = Tally()
        f = feeder(kind, t, **kw)
        feed = f.feed
        for chunk in chunks:
            feed(chunk)
        if f.pending():
            raise CheckError(f"{feeder.__name__}: {f.pending()} bytes left over")
        return t.checksum()

    return run


# -- the event loops' stream reads: one awaited read per prefix (byte) and per body -------------


async def exactly_frames(read: Callable[[int], Awaitable[bytes]], kind: str,
                         eof: tuple[type[BaseException], ...]) -> Checksum:
    """asyncio ``readexactly`` / anyio ``receive_exactly``: the prefix (one byte at a time
    for LEB128), then the body. The stream ending inside a body raises; inside a prefix, it
    ends the count short, which the checksum shows."""
    frames = payload = first = 0
    leb = kind == "leb128"
    while True:
        try:
            if leb:
                b = (await read(1))[0]
                n, shift = b & 0x7F, 7
                while b & 0x80:
                    b = (await read(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
            else:
                n = int.from_bytes(await read(4), "big")
        except eof:
            return frames, payload, first
        frame = await read(n)
        frames += 1
        payload += len(frame)
        first += frame[0]


async def until_lines(until: Callable[[], Awaitable[bytes]], strip: int,
                      eof: tuple[type[BaseException], ...]) -> Checksum:
    """asyncio ``readuntil`` / anyio ``receive_until``; ``strip``: separator bytes returned."""
    frames = payload = first = 0
    while True:
        try:
            line = await until()
        except eof:
            return frames, payload, first
        frames += 1
        payload += len(line) - strip
        first += line[0]


def asyncio_fed(kind: str) -> Case:
    """asyncio ``StreamReader.feed_data`` per chunk, read with readexactly / readuntil."""

    def run(chunks: list[bytes]) -> Checksum:
        async def main() -> Checksum:
            sr = asyncio.StreamReader(limit=MAX_FRAME)
            eof = (asyncio.IncompleteReadError,)
            task = asyncio.ensure_future(
                until_lines(partial(sr.readuntil, b"\r\n"), 2, eof) if kind == "crlf"
                else exactly_frames(sr.readexactly, kind, eof))
            for chunk in chunks:
                sr.feed_data(chunk)
                await asyncio.sleep(0)
            sr.feed_eof()
            return await task

        return asyncio.run(main())

    return run


def anyio_fed(kind: str) -> Case:
    """anyio ``BufferedByteReceiveStream`` over a memory object stream holding the chunks."""

    def run(chunks: list[bytes]) -> Checksum:
        import anyio
        from anyio.streams.buffered import BufferedByteReceiveStream

        async def main() -> Checksum:
            send, recv = anyio.create_memory_object_stream[bytes](len(chunks) + 1)
            for chunk in chunks:
                send.send_nowait(chunk)
            send.close()
            rx = BufferedByteReceiveStream(recv)
            eof = (anyio.EndOfStream, anyio.IncompleteRead)
            if kind == "crlf":
                return await until_lines(partial(rx.receive_until, b"\r\n", 1 << 16), 0, eof)
            return await exactly_frames(rx.receive_exactly, kind, eof)

        return anyio.run(main)

    return run


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def split_cases(kind: str) -> dict[str, Case]:
    """The in-memory contenders of one framing, membuf's main form first."""
    if kind == "crlf":
        cases = {"membuf split_views": fed(MembufFeeder, kind),
                 "plain loop (bytearray.find)": fed(BytearrayFeeder, kind),
                 "bytes.split, tail carried": fed(SplitFeeder, kind),
                 "asyncio readuntil": asyncio_fed(kind), "anyio receive_until": anyio_fed(kind)}
    else:
        cases = {"membuf split_views": fed(MembufFeeder, kind),
                 "membuf split_views, per-frame loop": fed(MembufFeeder, kind, loop=True),
                 "membuf split (Memory per frame)": fed(MembufFeeder, kind, memory=True),
                 "plain loop": fed(BytearrayFeeder, kind),
                 "plain loop, memoryview slices": fed(ViewsFeeder, kind),
                 "asyncio readexactly": asyncio_fed(kind), "anyio receive_exactly": anyio_fed(kind)}
    return {n: f for n, f in cases.items() if have("anyio") or not n.startswith("anyio")}


# -- socket receivers: (stream, tally) -> None, LEB128 frames until the end of the stream ------


async def raw_recv_into(stream: Any, t: Tally, size: int) -> None:
    """The limit: trio ``sock.recv_into`` into one reused buffer, no parsing (bytes counted)."""
    recv_into = stream.socket.recv_into
    buf = bytearray(size)
    while n := await recv_into(buf):
        t.payload += n


async def trio_recv_into(stream: Any, t: Tally, size: int = 64 << 10) -> None:
    """trio ``recv_into`` one reused bytearray (doubled when a frame does not fit), frames
    parsed in place as memoryview slices, the partial frame moved to the front."""
    buf = t.held = bytearray(size)
    recv_into, have = stream.socket.recv_into, 0
    while True:
        if have == len(buf):
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as mv:
            n = await recv_into(mv[have:])
            if not n:
                return
            have += n
            used = leb128_frames(buf, mv, 0, have, t)
            mv[: have - used] = mv[used:have]
        have -= used


async def trio_receive_some(stream: Any, t: Tally) -> None:
    """trio ``receive_some`` + bytearray accumulate + parse, a copy per frame."""
    feed = BytearrayFeeder(KIND, t).feed
    while data := await stream.receive_some():
        feed(data)


async def anyio_receive(stream: Any, t: Tally) -> None:
    """anyio ``receive()`` + own parsing (the plain bytearray loop)."""
    import anyio

    feed = BytearrayFeeder(KIND, t).feed
    while True:
        try:
            feed(await stream.receive())
        except anyio.EndOfStream:
            return


async def anyio_exactly(stream: Any, t: Tally) -> None:
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    read = BufferedByteReceiveStream(stream).receive_exactly
    t.add(await exactly_frames(read, KIND, (anyio.EndOfStream, anyio.IncompleteRead)))


async def asyncio_readexactly(reader: asyncio.StreamReader, t: Tally) -> None:
    t.add(await exactly_frames(reader.readexactly, KIND, (asyncio.IncompleteReadError,)))


class FrameProtocol(asyncio.BufferedProtocol):
    """asyncio's second form: receive into one reused bytearray (grown when a frame does
    not fit), parse frames in place as memoryview slices, move the partial frame down."""

    def __init__(self, t: Tally, done: asyncio.Future[None]) -> None:
        self.buf = t.held = bytearray(256 << 10)
        self.mv = memoryview(self.buf)
        self.have, self.t, self.done = 0, t, done

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.have == len(self.buf):
            self.mv.release()
            self.buf.extend(bytes(len(self.buf)))
            self.mv = memoryview(self.buf)
        return self.mv[self.have :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self.have + nbytes
        pos = leb128_frames(self.buf, self.mv, 0, end, self.t)
        if pos:
            self.mv[: end - pos] = self.mv[pos:end]
        self.have = end - pos

    def eof_received(self) -> bool:
        self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():             # reset before the end of the stream
            self.done.set_exception(exc or CheckError("BufferedProtocol: connection lost"))


async def membuf_views(stream: Any, t: Tally, loop: bool = False) -> None:
    """``rx.frames(codec, views=True, batch=True)``, each batch summed with ``len`` and
    ``sum(map(...))``; ``loop``: frame by frame in a Python loop, as the baselines do."""
    async with StreamReader(stream) as rx:
        await views_of(rx, t, loop)


async def views_of(rx: StreamReader, t: Tally, loop: bool = False) -> None:
    """The body of :func:`membuf_views` on a reader of any library.

    The loop body ends with ``del batch``, as docs/stream.md advises: a loop
    variable is a held batch, and with many connections thousands of views held
    across the next ``await`` cost GC time on every frame (measured at 256
    connections: 610-760 CPU ns per frame with the batch held, 435-455 without;
    the baselines hold nothing across an await either).
    """
    codec = LengthPrefixed(KIND, max_frame=MAX_FRAME)
    t.held = rx
    async for batch in rx.frames(codec, views=True, batch=True):
        if loop:
            t.add(loop_sum(batch))
        else:
            t.add((len(batch), sum(map(len, batch)), sum(map(_first, batch))))
        del batch


async def membuf_memory(stream: Any, t: Tally) -> None:
    """``rx.frames(codec)``: one Memory per frame."""
    codec = LengthPrefixed(KIND, max_frame=MAX_FRAME)
    frames = payload = first = 0
    async with StreamReader(stream) as rx:
        async for f in rx.frames(codec):
            frames += 1
            payload += len(f)
            first += next(iter(f))[0]
    t.add((frames, payload, first))


async def membuf_read_exactly(stream: Any, t: Tally) -> None:
    """``await rx.read_leb128()`` + ``await rx.read_exactly(n)`` per frame."""
    frames = payload = first = 0
    async with StreamReader(stream) as rx:
        read_leb128, read_exactly = rx.read_leb128, rx.read_exactly
        while True:
            try:
                n = await read_leb128()
            except IncompleteReadError as exc:
                if exc.partial:
                    raise
                break
            f = await read_exactly(n)
            frames += 1
            payload += len(f)
            first += next(iter(f))[0]
    t.add((frames, payload, first))


# -- the runners: (receiver, conns, sizes, per_conn, seed) -> (wall s, receiver CPU s, tallies).
# Every receiver runs at once, one per connection of the sender. asyncio and anyio streams are
# opened inside the clock: they start reading as soon as they exist.


Run = tuple[float, float, list[Tally]]


class Clock:
    def __enter__(self) -> Clock:
        self.t0, self.c0 = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.t0, time.thread_time() - self.c0


def _accepted(run: Callable[..., Any], conns: int, sizes: str, per_conn: int, seed: int,
              tls: bool = False) -> Run:
    """``run(socks, tallies, clock)`` on the connections of one sender process (``tls``:
    the sender speaks TLS and the receivers are its servers, :func:`server_context`)."""
    socks, proc = accept_sender(conns, sizes, per_conn, seed,
                                tls_ca=tls_files()[0] if tls else None)
    tallies, clock = [Tally() for _ in socks], Clock()
    try:
        run(socks, tallies, clock)
    finally:
        for s in socks:
            s.close()
        proc.wait(60)
    return clock.wall, clock.cpu, tallies


def run_trio(receiver: Any, conns: int, sizes: str, per_conn: int, seed: int,
             tls: bool = False) -> Run:
    import trio

    async def main(socks: list[Any], tallies: list[Tally], clock: Clock) -> None:
        streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in socks]
        with clock:
            async with trio.open_nursery() as nursery:
                for s, t in zip(streams, tallies, strict=True):
                    nursery.start_soon(receiver, s, t)

    return _accepted(partial(trio.run, main), conns, sizes, per_conn, seed, tls)


def run_asyncio(receiver: Any, conns: int, sizes: str, per_conn: int, seed: int) -> Run:
    """``receiver(StreamReader, tally)`` on asyncio streams, or a BufferedProtocol class."""

    async def one(sock: Any, t: Tally, transports: list[Any]) -> None:
        if isinstance(receiver, type):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            tr, _ = await loop.connect_accepted_socket(partial(receiver, t, done), sock)
            transports.append(tr)
            await done
        else:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME)
            transports.append(writer)
            await receiver(reader, t)

    async def main(socks: list[Any], tallies: list[Tally], clock: Clock) -> None:
        transports: list[Any] = []
        with clock:
            await asyncio.gather(*(one(s, t, transports) for s, t in zip(socks, tallies,
                                                                          strict=True)))
        for tr in transports:
            tr.close()

    return _accepted(lambda *a: asyncio.run(main(*a)), conns, sizes, per_conn, seed)


def run_anyio(receiver: Any, conns: int, sizes: str, per_conn: int, seed: int) -> Run:
    """anyio on its default (asyncio) backend."""
    import anyio
    import anyio.abc

    async def one(sock: Any, t: Tally, streams: list[Any]) -> None:
        streams.append(stream := await anyio.abc.SocketStream.from_socket(sock))
        await receiver(stream, t)

    async def main(socks: list[Any], tallies: list[Tally], clock: Clock) -> None:
        streams: list[Any] = []
        with clock:
            async with anyio.create_task_group() as tg:
                for s, t in zip(socks, tallies, strict=True):
                    tg.start_soon(one, s, t, streams)
        for stream in streams:
            await stream.aclose()

    return _accepted(partial(anyio.run, main), conns, sizes, per_conn, seed)


# -- asyncio (and uvloop) on accepted sockets: receiver(sock, tally, ssl_context) ------------


class RawProtocol(asyncio.BufferedProtocol):
    """asyncio's limit: receive into one reused 1 MiB buffer, no parsing (bytes counted)."""

    def __init__(self, t: Tally, done: asyncio.Future[None]) -> None:
        self.mv = memoryview(bytearray(1 << 20))
        self.t, self.done = t, done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mv

    def buffer_updated(self, nbytes: int) -> None:
        self.t.payload += nbytes

    def eof_received(self) -> bool:
        self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or CheckError("raw protocol: connection lost"))


async def protocol_on(cls: type[Any], sock: socket.socket, t: Tally,
                      tls: ssl.SSLContext | None) -> None:
    """A BufferedProtocol baseline (``FrameProtocol``, ``RawProtocol``) on an accepted socket."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tr, _ = await loop.connect_accepted_socket(partial(cls, t, done), sock, ssl=tls)
    try:
        await done
    finally:
        tr.close()


async def readexactly_on(sock: socket.socket, t: Tally, tls: ssl.SSLContext | None) -> None:
    """asyncio's StreamReader (``readexactly``) on an accepted socket, TLS or not."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    tr, _ = await loop.connect_accepted_socket(
        lambda: asyncio.StreamReaderProtocol(reader), sock, ssl=tls)
    try:
        await asyncio_readexactly(reader, t)
    finally:
        tr.close()


async def membuf_asyncio_on(sock: socket.socket, t: Tally, tls: ssl.SSLContext | None) -> None:
    """membuf's asyncio protocol on an accepted socket (what ``start_server`` makes per
    connection), then ``frames(codec, views=True, batch=True)``."""
    from membuf._stream._asyncio import AsyncioProtocol

    loop = asyncio.get_running_loop()
    proto = AsyncioProtocol(loop)
    rx = StreamReader(proto)
    tr, _ = await loop.connect_accepted_socket(lambda: proto, sock, ssl=tls)
    try:
        await views_of(rx, t)
        if rx.stats().copied:
            raise CheckError(f"membuf asyncio copied {rx.stats().copied} bytes")
    finally:
        rx.release()
        tr.close()


def _arun(main: Any, uv: bool) -> Any:
    if uv:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def run_asyncio_on(receiver: Any, conns: int, sizes: str, per_conn: int, seed: int,
                   uv: bool = False, tls: bool = False) -> Run:
    """``receiver(sock, tally, ssl_context)`` per accepted socket, under asyncio or uvloop;
    ``tls``: the sender speaks TLS (``sender.py --tls-ca``), the receiver is its server."""
    async def main(socks: list[Any], tallies: list[Tally], clock: Clock,
                   ctx: ssl.SSLContext | None) -> None:
        with clock:
            await asyncio.gather(*(receiver(s, t, ctx) for s, t in zip(socks, tallies,
                                                                        strict=True)))

    def run(socks: list[Any], tallies: list[Tally], clock: Clock) -> None:
        for s in socks:
            s.setblocking(False)
        _arun(main(socks, tallies, clock, server_context() if tls else None), uv)

    return _accepted(run, conns, sizes, per_conn, seed, tls)


# -- anyio's own byte streams --------------------------------------------------------------------


async def anyio_raw(stream: Any, t: Tally) -> None:
    """anyio's limit: ``receive(1 MiB)`` in a loop, no parsing (bytes counted)."""
    import anyio

    receive = stream.receive
    while True:
        try:
            t.payload += len(await receive(1 << 20))
        except anyio.EndOfStream:
            return


async def membuf_anyio(stream: Any, t: Tally) -> None:
    """``StreamReader(anyio_stream)`` (one copy per receive), ``frames(views, batch)``."""
    async with StreamReader(stream) as rx:
        await views_of(rx, t)


# -- TLS: a sender process that speaks TLS, and membuf's trio TLS receiver ------------------


_TLS: dict[str, Any] = {}


def tls_files() -> tuple[str, str]:
    """(CA file, server cert+key file) of a throwaway CA (trustme), made once per process."""
    if not _TLS:
        import tempfile

        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        d = tempfile.mkdtemp(prefix="membuf-bench-tls-")
        _TLS["ca"], _TLS["pem"] = f"{d}/ca.pem", f"{d}/server.pem"
        ca.cert_pem.write_to_path(_TLS["ca"])
        cert.private_key_and_cert_chain_pem.write_to_path(_TLS["pem"])
    return _TLS["ca"], _TLS["pem"]


def have_tls() -> bool:
    return have("trustme")


def server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files()[1])
    return ctx


async def membuf_trio_tls(stream: Any, t: Tally) -> None:
    """membuf's trio TLS (``ssl.SSLObject`` decrypting into the chunk), server side."""
    from membuf._stream._tls import TLSStream

    tls = TLSStream(stream, server_context(), server_side=True)
    await tls.do_handshake()
    async with StreamReader(tls) as rx:
        await views_of(rx, t)
        if rx.stats().copied:
            raise CheckError(f"membuf trio TLS copied {rx.stats().copied} bytes")


Runner = Callable[[Any, int, str, int, int], Run]

STREAM: dict[str, tuple[Runner, Any]] = {
    "raw recv_into 64K": (run_trio, partial(raw_recv_into, size=64 << 10)),
    "raw recv_into 256K": (run_trio, partial(raw_recv_into, size=256 << 10)),
    "raw recv_into 1M": (run_trio, partial(raw_recv_into, size=1 << 20)),
    "membuf views": (run_trio, membuf_views),
    "membuf views loop": (run_trio, partial(membuf_views, loop=True)),
    "membuf Memory": (run_trio, membuf_memory),
    "membuf read_exactly": (run_trio, membuf_read_exactly),
    "trio receive_some": (run_trio, trio_receive_some),
    "trio recv_into": (run_trio, trio_recv_into),
    "asyncio readexactly": (run_asyncio, asyncio_readexactly),
    "asyncio BufferedProtocol": (run_asyncio, FrameProtocol),
    "anyio exactly": (run_anyio, anyio_exactly),
    "anyio receive": (run_anyio, anyio_receive),
    # asyncio and uvloop on accepted sockets; TLS: the sender speaks TLS
    "raw asyncio recv_into 1M": (run_asyncio_on, partial(protocol_on, RawProtocol)),
    "membuf asyncio views": (run_asyncio_on, membuf_asyncio_on),
    "raw uvloop recv_into 1M": (partial(run_asyncio_on, uv=True), partial(protocol_on,
                                                                         RawProtocol)),
    "membuf uvloop views": (partial(run_asyncio_on, uv=True), membuf_asyncio_on),
    "uvloop BufferedProtocol": (partial(run_asyncio_on, uv=True), partial(protocol_on,
                                                                         FrameProtocol)),
    "uvloop readexactly": (partial(run_asyncio_on, uv=True), readexactly_on),
    "raw anyio receive": (run_anyio, anyio_raw),
    "membuf anyio views": (run_anyio, membuf_anyio),
    "membuf asyncio TLS views": (partial(run_asyncio_on, tls=True), membuf_asyncio_on),
    "membuf uvloop TLS views": (partial(run_asyncio_on, uv=True, tls=True), membuf_asyncio_on),
    "membuf trio TLS views": (partial(run_trio, tls=True), membuf_trio_tls),
    "asyncio readexactly TLS": (partial(run_asyncio_on, tls=True), readexactly_on),
    "asyncio BufferedProtocol TLS": (partial(run_asyncio_on, tls=True),
                                     partial(protocol_on, FrameProtocol)),
}


# -- reader calls: n values read one call each; every form returns their sum ------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The plain-Python LEB128 decoder of one value: (value, position after it)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def inline_varint_reads(blob: bytes, n: int) -> int:
    """The varint decoder written inline in the loop, as a hand-written parser has it
    (no function call per value: the best plain-Python form)."""
    total = pos = 0
    for _ in range(n):
        v = shift = 0
        while True:
            b = blob[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        total += v
    return total


def struct_reads(blob: bytes, n: int) -> int:
    unpack, total, off = _be32, 0, 0
    for _ in range(n):
        total += unpack(blob, off)[0]
        off += 4
    return total


def from_bytes_reads(blob: bytes, n: int) -> int:
    mv, fb, total, off = memoryview(blob), int.from_bytes, 0, 0
    for _ in range(n):
        total += fb(mv[off : off + 4], "big")
        off += 4
    return total


def reader_be_reads(segments: list[bytes], n: int) -> int:
    read_be, total = Reader.from_bytes(*segments).read_be, 0
    for _ in range(n):
        total += read_be(4)
    return total


def reader_leb128_reads(blob: bytes, n: int) -> int:
    read, total = Reader.from_bytes(blob).read_leb128, 0
    for _ in range(n):
        total += read()
    return total


def varint_reads(blob: bytes, n: int) -> int:
    total = pos = 0
    for _ in range(n):
        v, pos = read_varint(blob, pos)
        total += v
    return total


def leb128_reader_reads(blob: bytes, n: int) -> int:
    """PyPI ``leb128.u.decode_reader`` on a BytesIO: the package's streaming form."""
    import leb128

    decode_reader, bio, total = leb128.u.decode_reader, io.BytesIO(blob), 0
    for _ in range(n):
        total += decode_reader(bio)[0]
    return total


def leb128_decode_reads(blob: bytes, n: int, width: int = 3) -> int:
    """PyPI ``leb128.u.decode`` of a slice already cut (the caller must know the width)."""
    import leb128

    decode, mv, total, pos = leb128.u.decode, memoryview(blob), 0, 0
    for _ in range(n):
        total += decode(mv[pos : pos + width])
        pos += width
    return total



# -- RTMP relays: a server process on a loopback port (suite_rtmp.py) ------------------------------
# One ffmpeg publishes to rtmp://127.0.0.1:PORT/live/bench, N ffmpeg players pull it. Each relay
# is one process doing the relaying (nginx: its master, idle, and one worker), measured in /proc.

NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

# Debian's nginx and libnginx-mod-rtmp, their defaults but for what a benchmark needs: one
# worker (membuf serves from one process too), logs and pid in a temp dir, a loopback port,
# and publish_notify on, which sends players NetStream.Play.UnpublishNotify when the publisher
# leaves: ffmpeg ends on it. Without it nginx keeps the players waiting for a next publisher.
NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            publish_notify on;
        }}
    }}
}}
"""


def tcp_sockets(port: int, state: str) -> int:
    """Loopback TCP sockets whose local port is ``port``, in ``state`` ("01" established,
    "0A" listening), from /proc/net/tcp."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == state:
            n += 1
    return n


class Relay:
    """A relay server: ``start()`` it on ``port``, ``pids()`` to measure, ``stop()`` for its
    summary. ``missing()`` says why it cannot run on this machine ("" when it can)."""

    name = ""

    def __init__(self, port: int, tmp: Path) -> None:
        self.port, self.tmp = port, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = tmp / f"{self.name}.out"
        self.err = tmp / f"{self.name}.err"

    @staticmethod
    def missing() -> str:
        return ""

    @staticmethod
    def form() -> str:
        return ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it listens; raise with its stderr if it does not."""
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err)
        deadline = time.monotonic() + timeout
        while not tcp_sockets(self.port, "0A"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on 127.0.0.1:{self.port}: "
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    def log_tail(self) -> str:
        text = self.err.read_text(errors="replace") if self.err.exists() else ""
        return text.strip()[-1500:] or "(no output)"

    def _stop(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> dict[str, Any]:
        """Stop the server; what it reported (per stream, when it reports anything)."""
        raise NotImplementedError


class NginxRelay(Relay):
    """nginx with nginx-rtmp's ``live`` application (Debian nginx + libnginx-mod-rtmp)."""

    name = "nginx-rtmp"

    @staticmethod
    def missing() -> str:
        if not shutil.which("nginx"):
            return "nginx is not installed (make bench-deps: apt-get install nginx libnginx-mod-rtmp)"
        if not NGINX_MODULE.exists():
            return f"{NGINX_MODULE} is missing (apt-get install libnginx-mod-rtmp)"
        return ""

    @staticmethod
    def form() -> str:
        nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        mod = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-rtmp"],
                             capture_output=True, text=True).stdout.strip()
        return (f"nginx-rtmp {mod.split(':')[-1].split('+')[0] or '?'} "
                f"(nginx {nginx.rsplit('/', 1)[-1]}, 1 worker)")

    def command(self) -> list[str]:
        conf = self.tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(module=NGINX_MODULE, tmp=self.tmp, port=self.port))
        return ["nginx", "-p", str(self.tmp), "-e", str(self.err), "-c", str(conf)]

    def pids(self) -> list[int]:
        """The master (``daemon off``: the process started) and its workers."""
        master = super().pids()[0]
        kids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    kids.append(int(d.name))
        return [master, *sorted(kids)]

    def start(self, timeout: float = 30) -> None:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        while len(self.pids()) < 2:                     # the worker is forked after listen
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx started no worker: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        self._stop(signal.SIGQUIT)                      # graceful shutdown
        return {}


class MembufRelay(Relay):
    """``python -m membuf serve-rtmp --port PORT --quiet --json`` (one process)."""

    name = "membuf"

    @staticmethod
    def form() -> str:
        return "membuf serve-rtmp"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "membuf", "serve-rtmp", "--port", str(self.port),
                "--quiet", "--json"]

    def stop(self) -> dict[str, Any]:
        """SIGINT; the ``--json`` summaries of the streams it served, merged by stream key."""
        self._stop(signal.SIGINT)
        streams: dict[str, Any] = {}
        for line in self.out.read_text(errors="replace").splitlines():
            try:
                streams.update(json.loads(line).get("streams", {}))
            except (ValueError, AttributeError):
                continue
        return streams


RELAYS: dict[str, type[Relay]] = {"nginx": NginxRelay, "membuf": MembufRelay}
