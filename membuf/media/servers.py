"""Ingest servers: ``python -m membuf serve-rtmp`` and ``serve-av1``.

Strategy. Both servers are :func:`membuf.serve_tcp` handlers that drive a
sans-IO parser with :meth:`StreamReader.frames`: the parser is wrapped as a
"codec" whose ``split(reader)`` returns every event the buffered bytes hold,
so parsing runs synchronously over the receive buffer and the stream layer
does the receiving, the lazy freeing and the end-of-stream checks.

Memory model (Monibuca's): every received chunk and every retained frame
comes from one server :class:`~membuf.Allocator`. An RTMP message is
reassembled into its own :class:`~membuf.RecyclableMemory`; an AV1 temporal
unit is copied OBU by OBU into one. Frames go into a per-stream
:class:`~membuf.media.ring.FrameRing` that recycles the frame it overwrites,
and the latest codec configuration of each track is kept beside it, so a
stream of any length holds at most ``ring`` frames; when a stream ends its
ring is recycled and ``in_use`` returns to its idle value.

A connection that sends malformed or truncated data gets one clear log line
(logger ``membuf.media``) and is closed; the server keeps serving the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import trio

from ..allocator import Allocator
from ..errors import IncompleteReadError, MalformedError, NeedMore
from ..memory import Memory, RecyclableMemory
from ..reader import Reader
from ..stream import Connection, serve_tcp
from . import av1, flv, rtmp
from .ring import FrameRing

__all__ = ["IngestServer", "RtmpServer", "Av1Server", "StreamState", "rtmp_main", "av1_main"]

log = logging.getLogger("membuf.media")
_FLUSH = object()  # "nothing parsed, but the session has bytes to send" (the handshake)


@dataclass
class StreamState:
    """One published stream: its counters, its ring and its timing."""

    key: str
    counts: flv.MediaCounts | av1.ObuCounts
    ring: FrameRing
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    error: str | None = None
    configs: dict[int, RecyclableMemory] = field(default_factory=dict)
    _last: tuple[float, int] | None = None

    @property
    def frames(self) -> int:
        c = self.counts
        return c.frames if isinstance(c, av1.ObuCounts) else c.video_frames

    def rate(self) -> float:
        """Video frames (or temporal units) per second since the last call."""
        now, n = time.monotonic(), self.frames
        then, before = self._last or (self.started, 0)
        self._last = (now, n)
        return (n - before) / (now - then) if now > then else 0.0

    def summary(self) -> dict[str, Any]:
        out = self.counts.summary()
        if self.error:
            out["error"] = self.error
        return out

    def release(self) -> None:
        """Recycle every retained frame and configuration."""
        self.ring.clear()
        for body in self.configs.values():
            body.recycle()
        self.configs.clear()


class IngestServer:
    """What both servers share: streams, reporting, ``--once``, error handling.

    Args:
        allocator: every connection's buffers and every frame come from it
            (a new one by default); its ``in_use`` is back to idle after a stream.
        ring_size: frames retained per stream.
        json_out: print one ``{"streams": {key: summary}}`` line per finished stream.
        once: return from :meth:`run` after the first stream ends.
        live: print per-stream counts every ``interval`` seconds.
    """

    name = "ingest"
    max_buffered = 1 << 20

    def __init__(self, *, allocator: Allocator | None = None, ring_size: int = 64,
                 json_out: bool = False, once: bool = False, live: bool = True,
                 interval: float = 1.0, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.allocator = allocator if allocator is not None else Allocator()
        self.ring_size = ring_size
        self.json_out = json_out
        self.once = once
        self.live = live
        self.interval = interval
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.active: dict[str, StreamState] = {}
        self.finished: list[StreamState] = []
        self.errors: list[str] = []
        self.connections = 0
        self.port = 0
        self.first_finished = trio.Event()

    # -- running -----------------------------------------------------------

    async def run(self, port: int, host: str = "127.0.0.1", *,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or, with ``once``, until the first stream ends)."""
        async with trio.open_nursery() as nursery:
            serve = partial(serve_tcp, self._handle, port, host, self.allocator,
                            max_buffered=self.max_buffered)
            listeners = await nursery.start(serve)
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)
            if self.live:
                nursery.start_soon(self._report_live)
            if self.once:
                await self.first_finished.wait()
                nursery.cancel_scope.cancel()

    async def _handle(self, conn: Connection) -> None:
        self.connections += 1
        try:
            host, port = conn.stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        try:
            await self.ingest(conn, peer)
        except (MalformedError, IncompleteReadError, trio.BrokenResourceError) as e:
            what = "truncated stream" if isinstance(e, IncompleteReadError) else (
                "malformed stream" if isinstance(e, MalformedError) else "connection broken")
            msg = f"{self.name} {peer}: {what}, connection dropped: {e}"
            self.errors.append(msg)
            log.error("%s", msg)

    async def ingest(self, conn: Connection, peer: str) -> None:
        raise NotImplementedError

    # -- streams -----------------------------------------------------------

    def start_stream(self, key: str, counts: flv.MediaCounts | av1.ObuCounts) -> StreamState:
        base, n = key, 1
        while key in self.active:
            n += 1
            key = f"{base}#{n}"
        state = StreamState(key, counts, FrameRing(self.ring_size))
        self.active[key] = state
        if not self.json_out:
            print(f"{self.name}: stream {key} started", file=self.out, flush=True)
        return state

    def finish_stream(self, state: StreamState, error: str | None = None) -> None:
        """Recycle the stream's frames, print its summary, count it as finished."""
        if state.ended is not None:
            return
        state.ended = time.monotonic()
        state.error = error
        state.release()
        self.active.pop(state.key, None)
        self.finished.append(state)
        if self.json_out:
            print(json.dumps({"streams": {state.key: state.summary()}}), file=self.out, flush=True)
        else:
            print(self.describe(state, final=True), file=self.out, flush=True)
        self.first_finished.set()

    def describe(self, s: StreamState, final: bool = False) -> str:
        c = s.counts
        secs = ((s.ended or time.monotonic()) - s.started) or 1e-9
        if isinstance(c, flv.MediaCounts):
            line = (f"video {c.video_frames} ({c.video_codec or '-'}, {c.keyframes} key),"
                    f" audio {c.audio_frames} ({c.audio_codec or '-'}),"
                    f" {c.bytes / 1e6:.2f} MB")
        else:
            line = (f"{c.temporal_units} temporal units, {c.frames} frames, {c.obus} OBUs,"
                    f" {c.bytes / 1e6:.2f} MB")
        if final:
            rate = s.frames / secs
            tail = f" error: {s.error}" if s.error else ""
            return (f"{self.name}: stream {s.key} ended after {secs:.1f} s: {line}, {rate:.1f} fps,"
                    f" {_rate(c.bytes / secs)}{tail}")
        return f"{self.name}: {s.key}: {line}, {s.rate():.1f} fps"

    async def _report_live(self) -> None:
        stream = self.err if self.json_out else self.out
        while True:
            await trio.sleep(self.interval)
            for s in list(self.active.values()):
                print(self.describe(s), file=stream, flush=True)

    def totals(self) -> str:
        st = self.allocator.stats()
        return (f"{self.name}: {self.connections} connections, {len(self.finished)} streams,"
                f" {len(self.errors)} errors; allocator in use {st.in_use} B,"
                f" peak {st.peak_in_use} B")


class _SplitCodec:
    """Adapt a sans-IO ``parse(reader) -> event`` to :meth:`StreamReader.frames`.

    ``split`` returns every event the buffer holds. A MalformedError after
    some events is held back until those are handled, so no parsed frame is
    dropped without being recycled.
    """

    def __init__(self, parse: Callable[[Reader], Any], has_output: Callable[[], bool]) -> None:
        self.parse = parse
        self.has_output = has_output
        self.error: MalformedError | None = None

    def split(self, r: Reader) -> list[Any]:
        if self.error is not None:
            raise self.error
        out: list[Any] = []
        parse = self.parse
        try:
            while True:
                out.append(parse(r))
        except NeedMore:
            pass
        except MalformedError as e:
            if not out:
                raise
            self.error = e
        if not out and self.has_output():
            out.append(_FLUSH)
        return out


class RtmpServer(IngestServer):
    """RTMP ingest: ``ffmpeg -i in.flv -c copy -f flv rtmp://host:port/app/name``."""

    name = "serve-rtmp"

    async def ingest(self, conn: Connection, peer: str) -> None:
        session = rtmp.ServerSession(self.allocator)
        codec = _SplitCodec(session.next_event, session.has_data_to_send)
        state: StreamState | None = None
        error: str | None = None
        try:
            async for batch in conn.reader.frames(codec, batch=True):
                for ev in batch:
                    if type(ev) is rtmp.Media:
                        msg = ev.message
                        if state is None:  # media before publish: not ours to keep
                            msg.body.recycle()
                        else:
                            self._on_media(state, msg)
                    elif type(ev) is rtmp.Publish:
                        if state is not None:
                            self.finish_stream(state)
                        state = self.start_stream(f"{ev.app}/{ev.name}", flv.MediaCounts())
                    elif type(ev) is rtmp.Unpublish and state is not None:
                        self.finish_stream(state)
                        state = None
                out = session.data_to_send()
                if out:
                    await conn.send(Memory(*out))
                if not session.publishing:
                    _quickack(conn)
            if session.chunks.pending():
                raise IncompleteReadError("", partial=0)  # worded below
        except IncompleteReadError as e:
            partial, where = e.partial, "an RTMP chunk header"
            if session.state != "open":
                where = "the RTMP handshake"
            elif session.chunks.pending():
                partial, where = session.chunks.pending(), "an RTMP message"
            error = f"the stream ended inside {where} ({partial} bytes of it arrived)"
            raise IncompleteReadError(error, partial) from None
        except BaseException as e:
            error = str(e) or type(e).__name__
            raise
        finally:
            session.close()
            if state is not None:
                self.finish_stream(state, error)

    def _on_media(self, state: StreamState, msg: rtmp.Message) -> None:
        counts = state.counts
        assert isinstance(counts, flv.MediaCounts)
        view = msg.view()
        kind = counts.add(msg.type, view[:5], msg.timestamp)
        if msg.type != rtmp.DATA_AMF0:
            counts.bytes += len(view)
        if kind == flv.FRAME:
            state.ring.push(msg.body)
        elif kind == flv.CONFIG:  # keep the latest sequence header per track
            old = state.configs.get(msg.type)
            if old is not None:
                old.recycle()
            state.configs[msg.type] = msg.body
        else:
            msg.body.recycle()


class Av1Server(IngestServer):
    """AV1 ingest of a raw OBU stream: ``ffmpeg ... -c:v libaom-av1 -f obu tcp://host:port``."""

    name = "serve-av1"
    max_buffered = 32 << 20  # a whole OBU must fit (a key frame can be large)

    async def ingest(self, conn: Connection, peer: str) -> None:
        key = f"av1/{self.connections}"
        counts = av1.ObuCounts()
        state: StreamState | None = None  # a stream starts with its first OBU
        codec = _SplitCodec(partial(av1.read_obu, max_size=self.max_buffered),
                            lambda: False)
        tu: RecyclableMemory | None = None
        error: str | None = None
        try:
            async for batch in conn.reader.frames(codec, batch=True):
                if state is None:
                    state = self.start_stream(key, counts)
                ring = state.ring
                for obu in batch:
                    if counts.add_obu(obu) and tu is not None:
                        ring.push(tu)
                        tu = None
                    if tu is None:
                        tu = RecyclableMemory(self.allocator)
                    obu.data.copy_to(tu.next_n(obu.size))  # retain: the views die at the next receive
            if tu is not None and state is not None:
                state.ring.push(tu)
                tu = None
        except IncompleteReadError as e:
            error = f"the stream ended inside an OBU ({e.partial} bytes of it arrived)"
            raise IncompleteReadError(error, e.partial) from None
        except BaseException as e:
            error = str(e) or type(e).__name__
            raise
        finally:
            if tu is not None:
                tu.recycle()
            if state is not None:
                self.finish_stream(state, error)


def _rate(bytes_per_second: float) -> str:
    if bytes_per_second >= 1e6:
        return f"{bytes_per_second / 1e6:.1f} MB/s"
    return f"{bytes_per_second / 1e3:.1f} kB/s"


def _quickack(conn: Connection) -> None:
    """Acknowledge at once while commands are exchanged (Linux ``TCP_QUICKACK``).

    ffmpeg writes small control messages back to back; with Nagle on its side
    and delayed ACKs on ours each exchange would stall ~40 ms.
    """
    opt = getattr(socket, "TCP_QUICKACK", None)
    if opt is not None:
        try:
            conn.stream.socket.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except OSError:
            pass


def _main(argv: list[str] | None, cls: type[IngestServer], default_port: int, url: str) -> int:
    p = argparse.ArgumentParser(prog=f"python -m membuf {cls.name}",
                                description=(cls.__doc__ or "").strip().splitlines()[0])
    p.add_argument("--port", type=int, default=default_port, help=f"TCP port (default {default_port}; 0: any)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--json", action="store_true",
                   help='print {"streams": {key: counts}} per finished stream on stdout')
    p.add_argument("--once", action="store_true", help="exit after the first stream ends")
    p.add_argument("--ring", type=int, default=64, help="frames retained per stream (default 64)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between live lines")
    p.add_argument("--quiet", action="store_true", help="no live lines")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    server = cls(ring_size=args.ring, json_out=args.json, once=args.once, live=not args.quiet,
                 interval=args.interval)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.run, args.port, args.host))
            print(f"{cls.name}: listening on {url.format(host=args.host, port=port)}",
                  file=sys.stderr, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    print(server.totals(), file=sys.stderr, flush=True)
    if args.once and server.finished and server.finished[0].error:
        return 1
    return 0


def rtmp_main(argv: list[str] | None = None) -> int:
    """``python -m membuf serve-rtmp``."""
    return _main(argv, RtmpServer, 1935, "rtmp://{host}:{port}/<app>/<name>")


def av1_main(argv: list[str] | None = None) -> int:
    """``python -m membuf serve-av1``."""
    return _main(argv, Av1Server, 9000, "tcp://{host}:{port} (ffmpeg -f obu)")
