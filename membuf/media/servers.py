"""Ingest servers: ``python -m membuf serve-rtmp`` and ``serve-av1``.

Strategy. Both servers are :func:`membuf.serve_tcp` handlers that drive a
sans-IO parser with :meth:`StreamReader.frames`: the parser is wrapped as a
"codec" whose ``split(reader)`` returns the events the buffered bytes hold,
so parsing runs synchronously over the receive buffer and the stream layer
does the receiving, the lazy freeing and the end-of-stream checks.

Memory model (Monibuca's): every received chunk and every retained frame
comes from one server :class:`~membuf.Allocator`. An RTMP message is
reassembled into its own :class:`~membuf.RecyclableMemory`; an AV1 temporal
unit is copied OBU by OBU into one growing buffer. Frames go into a
per-stream :class:`~membuf.media.ring.FrameRing` bounded in frames and in
bytes, and the latest codec configuration of each track is kept beside it;
when a stream ends its ring is recycled and ``in_use`` returns to its idle
value.

Hostile peers (docs/design.md §12). Every bound is a field of
:class:`~membuf.media.limits.Limits` and a command-line flag:

* memory: the server allocator has ``max_bytes`` (``--max-memory``), so a
  connection whose allocation would pass it gets ``MemoryLimitError`` and is
  dropped, and the others go on; per connection, RTMP partial messages hold
  at most twice what arrived of them and at most ``--max-partial`` bytes, an
  AV1 temporal unit at most ``--max-temporal-unit``; per stream the ring
  holds at most ``--ring-bytes``; at most ``--max-connections`` at once;
* time: a peer must publish (RTMP) or send an OBU (AV1) within
  ``--handshake-timeout`` seconds of connecting, and a connection that sends
  nothing for ``--idle-timeout`` seconds is closed (one cancel scope per
  connection, its deadline pushed forward at every receive);
* work: chunks (RTMP) and OBUs (AV1) must average ``--min-chunk-bytes`` /
  ``--min-obu-bytes`` after an allowance, so the CPU a peer costs is bounded
  per byte it sends; and the parser stops every ``Limits.pause_every`` items
  so that the connection's task lets the others run (a trio checkpoint).

A connection that sends malformed or truncated data, or passes a limit,
gets one log line (logger ``membuf.media``) and is closed; a peer that
resets is logged at debug level. The server keeps serving the others.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, TextIO

import trio

from ..allocator import Allocator
from ..errors import IncompleteReadError, MalformedError, MembufError, MemoryLimitError, NeedMore
from ..memory import Memory, RecyclableMemory
from ..reader import Reader
from ..stream import Connection, serve_tcp
from ..writer import Writer
from . import av1, flv, rtmp
from .limits import LimitError, Limits, format_size, parse_size
from .relay import Packet, Player, Relay, RelayCounts, control_packet, make_packet
from .ring import FrameRing

__all__ = ["IngestServer", "RtmpServer", "Av1Server", "ListenError", "StreamState",
           "rtmp_main", "av1_main"]

log = logging.getLogger("membuf.media")
_FLUSH = object()  # "nothing parsed, but the session has bytes to send" (the handshake)
_YIELD = object()  # "the parser paused: let other connections run before going on"
_EMPTY = memoryview(b"")
_KEEP = 100        # finished streams and error lines remembered (a server runs for months)


class ListenError(OSError):
    """The server could not bind its port; ``str()`` is the one line the CLI prints."""


@dataclass
class StreamState:
    """One published stream: its counters, its ring and its timing."""

    key: str
    counts: flv.MediaCounts | av1.ObuCounts
    ring: FrameRing
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    error: str | None = None
    configs: dict[int, Any] = field(default_factory=dict)   # type -> latest config (recyclable)
    relay: RelayCounts | None = None    # RTMP: what its players were sent
    hub: Relay | None = None            # RTMP: its players (None once unpublished)
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
        if self.relay is not None:
            out.update(self.relay.summary())
        if self.error:
            out["error"] = self.error
        return out

    def release(self) -> None:
        """Recycle every retained frame and configuration."""
        self.ring.clear()
        for config in self.configs.values():
            config.recycle()
        self.configs.clear()


class _Watchdog:
    """The handshake and idle timeouts of one connection, as one trio cancel scope.

    The deadline is the earlier of "handshake deadline" (until the stream
    starts) and "last activity + idle timeout"; :meth:`activity` is called at
    every receive (from the codec's ``split``), so a connection that keeps
    sending is never cancelled and one that stalls is, at a receive or a send.
    """

    __slots__ = ("scope", "idle", "handshake", "_handshake_deadline", "_last", "started",
                 "waiting", "_slack", "_now")

    def __init__(self, limits: Limits) -> None:
        self._now = trio.lowlevel.current_clock().current_time   # trio's clock, one call
        now = self._now()
        self.idle = limits.idle_timeout
        self.handshake = limits.handshake_timeout
        self._handshake_deadline = now + self.handshake
        self._last = now
        # moving a trio deadline costs a few microseconds; a receive every millisecond
        # moves it at most every _slack seconds (the timeout is that much early at worst)
        self._slack = min(0.25, self.idle / 8)
        self.started = False
        #: while this says True (a player waiting for its publisher) no timeout applies
        self.waiting: Callable[[], bool] = _never
        self.scope = trio.CancelScope(deadline=min(self._handshake_deadline, now + self.idle))

    def activity(self, force: bool = False) -> None:
        """Bytes arrived or went out: push the idle deadline forward."""
        now = self._now()
        if now - self._last < self._slack and not force:
            return
        self._last = now
        if self.waiting():
            self.scope.deadline = math.inf
            return
        self.scope.deadline = min(self._handshake_deadline, now + self.idle)

    def start(self) -> None:
        """The peer publishes or plays: from now on only the idle timeout applies."""
        self.started = True
        self._handshake_deadline = math.inf
        self.activity(force=True)

    def reason(self) -> str:
        if not self.started and self._handshake_deadline <= self._last + self.idle:
            return (f"handshake timeout: not publishing {self.handshake:g} s after connecting"
                    " (--handshake-timeout)")
        return (f"idle timeout: nothing received or sent for {self.idle:g} s"
                " (--idle-timeout)")


def _never() -> bool:
    return False


@dataclass
class _Peer:
    """What the server knows about one connection while it is served."""

    address: str
    watch: _Watchdog
    state: StreamState | None = None


class IngestServer:
    """What both servers share: streams, limits, timeouts, reporting, ``--once``.

    Args:
        allocator: every connection's buffers and every frame come from it;
            by default a new one capped at ``limits.max_memory``.
        limits: caps and timeouts (:class:`~membuf.media.limits.Limits`).
        ring_size: frames retained per stream (``limits.ring_bytes`` bounds their bytes).
        json_out: print one ``{"streams": {key: summary}}`` line per finished stream.
        once: return from :meth:`run` after the first stream ends.
        live: print per-stream counts every ``interval`` seconds.

    Attributes:
        active: the streams being published, by key.
        finished, errors: the last 100 finished streams and drop lines (a server
            runs for months; the log has every line).
        dropped: connections dropped, by reason (limit, memory, timeout,
            malformed, truncated, reset); refused: over ``max_connections``.
    """

    name = "ingest"

    def __init__(self, *, allocator: Allocator | None = None, limits: Limits | None = None,
                 ring_size: int = 64, json_out: bool = False, once: bool = False,
                 live: bool = True, interval: float = 1.0, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        if not isinstance(self.limits, Limits):
            raise TypeError(f"limits must be a Limits, got {type(self.limits).__name__}")
        FrameRing(ring_size)  # refuse a bad ring size now, not at the first stream
        self.allocator = (allocator if allocator is not None
                          else Allocator(max_bytes=self.limits.max_memory))
        self.ring_size = ring_size
        self.json_out = json_out
        self.once = once
        self.live = live
        self.interval = interval
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.active: dict[str, StreamState] = {}
        self.finished: deque[StreamState] = deque(maxlen=_KEEP)
        self.errors: deque[str] = deque(maxlen=_KEEP)
        self.dropped: dict[str, int] = {}   # why connections were dropped -> how many
        self.streams = 0                    # streams finished
        self.connections = 0                # connections accepted
        self.open_connections = 0
        self.refused = 0                    # connections over max_connections
        self._refused_logged = -math.inf
        self.port = 0
        self.extra_ports: dict[str, int] = {}   # other listeners' bound ports, by name
        self.first_finished = trio.Event()

    @property
    def max_buffered(self) -> int:
        """Bytes a connection's StreamReader may hold received but not parsed."""
        return 1 << 20

    # -- running -----------------------------------------------------------

    async def run(self, port: int, host: str = "127.0.0.1", *,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or, with ``once``, until the first stream ends).

        Raises:
            ListenError: the port could not be bound (before ``task_status.started``).
        """
        failed: ListenError | None = None
        async with trio.open_nursery() as nursery:
            at = port
            try:
                for i, (name, handler, at) in enumerate(self._listeners(port)):
                    serve = partial(serve_tcp, handler, at, host=host,
                                    allocator=self.allocator, max_buffered=self.max_buffered)
                    listeners = await nursery.start(serve)
                    bound = listeners[0].socket.getsockname()[1]
                    if i == 0:
                        self.port = bound
                    else:
                        self.extra_ports[name] = bound
            except OSError as e:  # raised below, outside the nursery: no exception group
                failed = ListenError(_listen_message(self.name, host, at, e))
                failed.errno = e.errno
                nursery.cancel_scope.cancel()
            else:
                task_status.started(self.port)
                if self.live:
                    nursery.start_soon(self._report_live)
                if self.once:
                    await self.first_finished.wait()
                    nursery.cancel_scope.cancel()
        if failed is not None:
            raise failed

    def _listeners(self, port: int) -> list[tuple[str, Callable[[Connection], Any], int]]:
        """(name, handler, port) of every listener, the main one first."""
        return [(self.name, self._handle, port)]

    async def _handle(self, conn: Connection, ingest: Any = None) -> None:
        self.connections += 1
        address = _peer_address(conn)
        if self.open_connections >= self.limits.max_connections:
            self._refuse(address)
            return
        self.open_connections += 1
        peer = _Peer(address, _Watchdog(self.limits))
        error: str | None = None
        try:
            with peer.watch.scope:
                await (ingest or self.ingest)(conn, peer)
            if peer.watch.scope.cancelled_caught:
                error = peer.watch.reason()
                self._drop(peer, "timeout", error)
        except LimitError as e:
            error = str(e)
            self._drop(peer, "limit", f"limit reached, connection dropped: {e}")
        except MemoryLimitError as e:
            cap = f"memory cap reached (--max-memory {format_size(self.limits.max_memory)})"
            error = f"{cap}: {e}"
            self._drop(peer, "memory", f"{cap}, connection dropped: {e}")
        except (MalformedError, IncompleteReadError) as e:
            error = str(e)
            what = "truncated" if isinstance(e, IncompleteReadError) else "malformed"
            self._drop(peer, what, f"{what} stream, connection dropped: {e}")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            error = f"connection broken: {e}"
            self.dropped["reset"] = self.dropped.get("reset", 0) + 1
            log.debug("%s %s: connection reset by the peer (%s)", self.name, address, e)
        except trio.Cancelled:
            error = "the server stopped"
            raise
        except Exception as e:  # a bug: serve_tcp logs it with its traceback
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.open_connections -= 1
            if peer.state is not None:
                self.finish_stream(peer.state, error)

    def _drop(self, peer: _Peer, kind: str, message: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        line = f"{self.name} {peer.address}: {message}"
        self.errors.append(line)
        log.warning("%s", line)

    def _refuse(self, address: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 10:  # one line per 10 s, not one per connection
            self._refused_logged = now
            log.warning("%s %s: refused: %d connections open (--max-connections); %d refused"
                        " so far", self.name, address, self.open_connections, self.refused)

    async def ingest(self, conn: Connection, peer: _Peer) -> None:
        raise NotImplementedError

    # -- streams -----------------------------------------------------------

    def _begin(self, peer: _Peer, key: str,
               counts: flv.MediaCounts | av1.ObuCounts) -> StreamState:
        """Start ``peer``'s stream: from now on only the idle timeout applies to it."""
        state = peer.state = self.start_stream(key, counts)
        peer.watch.start()
        return state

    def start_stream(self, key: str, counts: flv.MediaCounts | av1.ObuCounts) -> StreamState:
        """Register a new stream named ``key`` (``key#2``... when the name is taken)."""
        base, n = key, 1
        while key in self.active:
            n += 1
            key = f"{base}#{n}"
        state = StreamState(key, counts, FrameRing(self.ring_size, self.limits.ring_bytes))
        self.active[key] = state
        if not self.json_out:
            print(f"{self.name}: stream {key} started", file=self.out, flush=True)
        return state

    def finish_stream(self, state: StreamState, error: str | None = None) -> None:
        """Recycle the stream's frames, print its summary, count it as finished."""
        if state.ended is not None:
            return
        self._end(state, error)
        self._report(state)

    def _end(self, state: StreamState, error: str | None) -> None:
        state.ended = time.monotonic()
        state.error = error
        state.release()
        self.active.pop(state.key, None)

    def _report(self, state: StreamState) -> None:
        self.finished.append(state)
        self.streams += 1
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
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"{self.name}: {self.connections} connections, {self.streams} streams,"
                f" dropped: {dropped}; refused {self.refused}; allocator in use {st.in_use} B,"
                f" peak {st.peak_in_use} B")


class _SplitCodec:
    """Adapt a sans-IO ``parse(reader) -> event`` to :meth:`StreamReader.frames`.

    ``split`` returns the events the buffer holds, at most ``pause_every`` of
    them, then :data:`_YIELD` so that the handler lets other tasks run before
    the next call parses on. A MalformedError after some events is held back
    until those are handled, so no parsed frame is dropped without being
    recycled. Every call counts as activity for the connection's watchdog:
    ``frames()`` calls ``split`` after every receive.
    """

    def __init__(self, parse: Callable[[Reader], Any], has_output: Callable[[], bool],
                 watch: _Watchdog, pause_every: int) -> None:
        self.parse = parse
        self.has_output = has_output
        self.watch = watch
        self.pause_every = pause_every
        self.error: MalformedError | None = None

    def split(self, r: Reader) -> list[Any]:
        self.watch.activity()
        if self.error is not None:
            error, self.error = self.error, None
            try:
                raise error
            finally:
                del error  # a local naming it would make its traceback a cycle
        out: list[Any] = []
        parse = self.parse
        try:
            for _ in range(self.pause_every):
                event = parse(r)
                if event is rtmp.PAUSE:
                    break
                out.append(event)
            out.append(_YIELD)
        except NeedMore:
            pass
        except MalformedError as e:
            if not out:
                raise
            # kept without its traceback: its frames hold the receive buffer (and this
            # codec: a cycle that would pin the connection's memory until a GC pass)
            self.error = e.with_traceback(None)
        if not out and self.has_output():
            out.append(_FLUSH)
        return out


class RtmpServer(IngestServer):
    """RTMP ingest and relay: publish with ``ffmpeg ... -f flv rtmp://host:port/app/name``,
    play with ``ffmpeg -i rtmp://host:port/app/name``.

    A published stream goes out to its players by reference (docs/media.md):
    each message is chunked once into headers and views of its body, and
    every player's queue retains that body until a gather send has handed
    it to the kernel. Players that join get the metadata, the sequence
    headers and the GOP since the last keyframe first; players that join
    before the publisher wait for it; a player over ``--player-budget``
    skips to the next keyframe; unpublishing ends the players.
    """

    name = "serve-rtmp"
    chunk_size = 4096   # the chunk size announced to every peer (and used for players)

    def __init__(self, *, http_port: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.http_port = http_port      # HTTP-FLV players too (GET /app/name.flv), or None
        self.relays: dict[str, Relay] = {}
        self.players = 0                # players connected now
        self._writer = Writer()         # chunk headers of relayed packets
        self._flv_writer = Writer()     # FLV tag headers, for HTTP-FLV players

    def _listeners(self, port: int) -> list[tuple[str, Callable[[Connection], Any], int]]:
        out = super()._listeners(port)
        if self.http_port is not None:
            out.append(("http", partial(self._handle, ingest=self._http_play), self.http_port))
        return out

    async def ingest(self, conn: Connection, peer: _Peer) -> None:
        lim = self.limits
        session = rtmp.ServerSession(
            self.allocator, self.chunk_size, max_message=lim.max_message,
            max_partial=lim.max_partial, min_chunk_bytes=lim.min_chunk_bytes,
            item_allowance=lim.item_allowance, pause_every=lim.pause_every)
        codec = _SplitCodec(session.next_event, session.has_data_to_send, peer.watch,
                            lim.pause_every)
        play: list[tuple[Relay, Player]] = []
        failed: list[BaseException] = []
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._serve(conn, peer, session, codec, nursery, play)
                except Exception as e:  # raised below, outside the nursery: no exception group
                    failed.append(e)
                nursery.cancel_scope.cancel()   # the peer is gone: stop sending to it
            if failed:
                raise failed[0]
        except IncompleteReadError as e:
            partial, where = e.partial, "an RTMP chunk header"
            if session.state != "open":
                where = "the RTMP handshake"
            elif session.chunks.pending():
                partial, where = session.chunks.pending(), "an RTMP message"
            raise IncompleteReadError(
                f"the stream ended inside {where} ({partial} bytes of it arrived)",
                partial) from None
        finally:
            failed.clear()
            session.close()
            for hub, player in play:
                self.players -= 1
                hub.leave(player)
                self._forget(hub)

    async def _serve(self, conn: Connection, peer: _Peer, session: rtmp.ServerSession,
                     codec: _SplitCodec, nursery: trio.Nursery,
                     play: list[tuple[Relay, Player]]) -> None:
        """The connection's read loop: events in, replies out (through the player's queue
        once it plays, so that every byte to a player goes out in order)."""
        async for batch in conn.reader.frames(codec, batch=True):
            stop = False
            for ev in batch:
                if type(ev) is rtmp.Media:
                    msg = ev.message
                    if peer.state is None:  # media before publish: not ours to keep
                        msg.body.recycle()
                    else:
                        self._on_media(peer.state, msg)
                elif type(ev) is rtmp.Publish:
                    if peer.state is not None:
                        self.finish_stream(peer.state)
                    self._publish(peer, _stream_key(ev.app, ev.name))
                elif type(ev) is rtmp.Unpublish and peer.state is not None:
                    self.finish_stream(peer.state)
                    peer.state = None
                elif type(ev) is rtmp.Play:
                    play.append(self._join(conn, peer, session, nursery,
                                           _stream_key(ev.app, ev.name)))
                elif type(ev) is rtmp.Stop:
                    stop = True   # the player stopped: close (ffmpeg closes too)
            out = session.data_to_send()
            if out:
                if play:
                    play[0][1].offer(control_packet(out))
                else:
                    await conn.send(Memory(*out))
            if batch[-1] is _YIELD:  # the parser paused: let the other connections run
                await trio.lowlevel.checkpoint()
            if not session.publishing:
                _quickack(conn)
            del batch  # not held across the next receive (its events are handled)
            if stop:
                return
        if session.chunks.pending():
            raise IncompleteReadError("", partial=0)  # worded by ingest

    # -- publishing ------------------------------------------------------------

    def _publish(self, peer: _Peer, key: str) -> None:
        state = self._begin(peer, key, flv.MediaCounts())
        if state.key != key:       # a second publisher of the name: ingested, not relayed
            return
        hub = self.relays.get(key)
        if hub is None:
            hub = self.relays[key] = Relay(key)
        state.hub, state.relay = hub, RelayCounts()
        configs = state.configs
        ring = state.ring

        def gop() -> list[Packet]:
            return ring.since_key() or []  # type: ignore[return-value]

        hub.publish(state.relay, lambda: [configs[t] for t in _CONFIG_ORDER if t in configs],
                    gop)

    def _packet(self, msg: rtmp.Message, payload: memoryview, *, key: bool = False,
                config: bool = False) -> Packet:
        csid = _PLAY_CSID.get(msg.type, 5)
        return make_packet(self._writer, msg.type, msg.timestamp, payload, msg.body,
                           csid=csid, stream_id=1, chunk_size=self.chunk_size, key=key,
                           config=config)

    def _on_media(self, state: StreamState, msg: rtmp.Message) -> None:
        counts = state.counts
        assert isinstance(counts, flv.MediaCounts)
        view = msg.view()
        keyframes = counts.keyframes
        kind = counts.add(msg.type, view[:5], msg.timestamp)
        if msg.type != rtmp.DATA_AMF0:
            counts.bytes += len(view)
        hub = state.hub
        if kind == flv.FRAME or kind == flv.END_OF_SEQUENCE:
            key = counts.keyframes != keyframes
            if hub is None:
                state.ring.push(msg.body, key=key)
                return
            packet = self._packet(msg, view, key=key)
            hub.fan_out(packet)        # players retain it first: the ring may drop it at once
            state.ring.push(packet, key=key)
        elif kind == flv.CONFIG or (kind == flv.METADATA and view[:16] == _SET_DATA_FRAME):
            if kind == flv.METADATA:
                view = view[16:]       # players get onMetaData itself, by reference
            config: Packet | RecyclableMemory = msg.body
            if hub is not None:
                config = self._packet(msg, view, config=True)
                hub.fan_out(config)
            old = state.configs.get(msg.type)
            if old is not None:
                old.recycle()
            state.configs[msg.type] = config  # the latest per track
        else:
            msg.body.recycle()

    def finish_stream(self, state: StreamState, error: str | None = None) -> None:
        """End the stream now; its summary is printed once its players are sent everything."""
        if state.ended is not None:
            return
        self._end(state, error)
        hub, state.hub = state.hub, None
        if hub is None:
            self._report(state)
            return
        hub.unpublish(lambda: self._report(state))
        self._forget(hub)

    # -- playing ---------------------------------------------------------------

    def _join(self, conn: Connection, peer: _Peer, session: rtmp.ServerSession,
              nursery: trio.Nursery, key: str) -> tuple[Relay, Player]:
        self._check_waiting(key)
        player = Player(self.limits.player_budget, copies=not conn.zero_copy_send,
                        nowait=conn.send_nowait)
        player.offer(control_packet(session.data_to_send()))   # the play replies, first
        hub = self._attach(peer, player, key)
        nursery.start_soon(self._play, conn, peer, session, player, nursery.cancel_scope)
        return hub, player

    def _check_waiting(self, key: str) -> None:
        """A play of a stream not published waits for it (exempt from the timeouts), so
        waiting players are capped: players of names nobody publishes must not take
        every connection slot from publishers.

        Raises:
            LimitError: ``--max-waiting`` players (at most half of ``--max-connections``)
                already wait.
        """
        hub = self.relays.get(key)
        if hub is not None and hub.counts is not None:
            return                          # published: the player starts at once
        lim = self.limits
        cap = min(lim.max_waiting, max(1, lim.max_connections // 2))
        waiting = sum(1 for h in self.relays.values() for p in h.players if p.counts is None)
        if waiting >= cap:
            raise LimitError(f"{waiting} players already wait for streams not published"
                             f" (--max-waiting {cap}, at most half of --max-connections)")

    def _attach(self, peer: _Peer, player: Player, key: str) -> Relay:
        hub = self.relays.get(key)
        if hub is None:
            hub = self.relays[key] = Relay(key)
        hub.join(player)
        self.players += 1
        peer.watch.waiting = lambda: player.counts is None   # waiting for its publisher
        peer.watch.start()
        return hub

    async def _play(self, conn: Connection, peer: _Peer, session: rtmp.ServerSession,
                    player: Player, scope: trio.CancelScope) -> None:
        """Send the player its queue until the stream ends, then the end of the play."""
        try:
            await player.run(conn.send, peer.watch.activity)
            session.end_play()
            await conn.send(Memory(*session.data_to_send()))
            await conn.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            log.debug("%s %s: player gone (%s)", self.name, peer.address, e)
            scope.cancel()
            return
        # the player reads the end and closes; if it does not, stop waiting soon
        await trio.sleep(self.limits.play_linger)
        scope.cancel()

    async def _http_play(self, conn: Connection, peer: _Peer) -> None:
        """HTTP-FLV: ``GET /app/name.flv`` -> 200 and an endless FLV body from the relay
        (``Connection: close``: the body ends when the stream does)."""
        try:
            head = await conn.reader.read_until(b"\r\n\r\n", self.limits.max_http_head)
        except MalformedError as e:     # no end of the head within the limit
            await conn.send(_http_error(431, "Request Header Fields Too Large"))
            raise LimitError(f"HTTP request head over {self.limits.max_http_head} bytes"
                             f" (--max-http-head): {e}") from None
        line = head.to_bytes().split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await conn.send(_http_error(400, "Bad Request"))
            raise MalformedError(f"not an HTTP/1.x request line: {line[:80]!r}")
        method, target = parts[0], parts[1].split("?", 1)[0]
        app, _, name = target.strip("/").partition("/")
        if method != "GET" or not name.endswith(".flv"):
            status = (405, "Method Not Allowed") if method != "GET" else (404, "Not Found")
            await conn.send(_http_error(*status))
            log.info("%s %s: %s %s: %d", self.name, peer.address, method, target[:80], status[0])
            return
        key = _stream_key(app, name[:-4])
        try:
            self._check_waiting(key)
        except LimitError:
            await conn.send(_http_error(503, "Service Unavailable"))
            raise
        await conn.send(_FLV_RESPONSE)
        player = Player(self.limits.player_budget, copies=not conn.zero_copy_send,
                        flv=self._flv_writer)
        player.offer(control_packet([_FLV_HEADER]))
        hub = self._attach(peer, player, key)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain_request, conn, nursery.cancel_scope)
                try:
                    await player.run(conn.send, peer.watch.activity)
                    await conn.send(b"0\r\n\r\n")   # the stream ended: so does the body
                except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                    log.debug("%s %s: player gone (%s)", self.name, peer.address, e)
                nursery.cancel_scope.cancel()
        finally:
            self.players -= 1
            hub.leave(player)
            self._forget(hub)

    @staticmethod
    async def _drain_request(conn: Connection, scope: trio.CancelScope) -> None:
        """Read (and drop) what an HTTP-FLV client sends; its close ends the play."""
        rx = conn.reader
        try:
            while True:
                await rx.peek(1)
                await rx.skip(len(rx))
        except (IncompleteReadError, MembufError, trio.BrokenResourceError):
            scope.cancel()

    def _forget(self, hub: Relay) -> None:
        if hub.idle() and self.relays.get(hub.key) is hub:
            del self.relays[hub.key]

    def describe(self, s: StreamState, final: bool = False) -> str:
        line = super().describe(s, final)
        if s.relay is not None and s.relay.players:
            r = s.relay
            line += (f"; relayed to {r.players} players: {r.messages} messages,"
                     f" {r.bytes / 1e6:.2f} MB, {r.payload_copies} payload copies,"
                     f" {r.skipped} skipped")
        return line


_SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"   # AMF0 string "@setDataFrame" (16 bytes)
_CONFIG_ORDER = (rtmp.DATA_AMF0, rtmp.VIDEO, rtmp.AUDIO)  # metadata, then sequence headers
_PLAY_CSID = {rtmp.AUDIO: 4, rtmp.VIDEO: 6, rtmp.DATA_AMF0: 5}
# chunked: a live body has no length, and the terminating chunk tells a clean end
_FLV_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
# audio + video flags, then PreviousTagSize0
_FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


def _http_error(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _TemporalUnit:
    """The OBUs of one temporal unit, copied into a few buffers of doubling size.

    The OBU views from ``read_obu`` point into the receive buffer, which the
    stream layer reuses; a retained temporal unit needs its own copy. Each
    new buffer is as large as everything before it (at least 1 KiB, at most
    what is left of ``max_bytes``), so a unit of n bytes is a handful of
    segments, never one Python object per OBU, nothing is copied twice and
    the unit never holds more than ``max_bytes``. :meth:`take` gives the unused
    tail of the last buffer back (a partial free).
    """

    __slots__ = ("allocator", "max_bytes", "rm", "buf", "used", "filled")

    def __init__(self, allocator: Allocator, max_bytes: int) -> None:
        self.allocator = allocator
        self.max_bytes = max_bytes
        self.rm = RecyclableMemory(allocator)   # the full buffers
        self.buf = _EMPTY                       # the buffer being filled
        self.used = 0                           # bytes of it filled
        self.filled = 0                         # bytes of the whole unit

    def add(self, obu: av1.Obu) -> None:
        """Copy one OBU in. Raises LimitError past ``max_bytes``, MemoryLimitError."""
        n = obu.size
        if self.used + n > len(self.buf):
            held = self.filled - self.used + len(self.buf)
            if self.filled + n > self.max_bytes:
                raise LimitError(f"AV1 temporal unit of more than {self.max_bytes} bytes without"
                                 " a temporal delimiter (--max-temporal-unit)")
            size = min(self.max_bytes - held, max(n, self.filled, 1024))
            if size < n:  # the tail of the current buffer is needed: give it back first
                self._close_buffer()
                size = min(self.max_bytes - self.filled, max(n, self.filled, 1024))
            grown = self.allocator.malloc(size)
            self._close_buffer()
            self.buf = grown
        obu.data.copy_to(self.buf[self.used:self.used + n])
        self.used += n
        self.filled += n

    def _close_buffer(self) -> None:
        """Move the filled part of the current buffer into ``rm``, free the rest."""
        buf, used = self.buf, self.used
        self.buf, self.used = _EMPTY, 0
        if used:
            self.rm.push_owned(self.allocator.free_rest(buf, used))
        elif len(buf):
            self.allocator.free(buf)

    def take(self) -> RecyclableMemory:
        """The unit as a frame that owns exactly its bytes; this builder is empty again."""
        self._close_buffer()
        rm, self.rm = self.rm, RecyclableMemory(self.allocator)
        self.filled = 0
        return rm

    def release(self) -> None:
        """Free everything (the connection ended inside a unit)."""
        self._close_buffer()
        self.rm.recycle()
        self.filled = 0


class _ObuParser:
    """``read_obu`` with the work-per-byte rule: after ``allowance`` OBUs, OBUs must
    average ``min_bytes`` (a flood of 2-byte OBUs costs a parse each)."""

    __slots__ = ("max_size", "min_bytes", "allowance", "obus", "bytes")

    def __init__(self, limits: Limits) -> None:
        self.max_size = limits.max_obu
        self.min_bytes = limits.min_obu_bytes
        self.allowance = limits.item_allowance
        self.obus = self.bytes = 0

    def __call__(self, r: Reader) -> av1.Obu:
        obu = av1.read_obu(r, max_size=self.max_size)
        self.obus += 1
        self.bytes += obu.size
        if self.obus > self.allowance + self.bytes // self.min_bytes:
            raise LimitError(
                f"AV1 flood: {self.obus} OBUs in {self.bytes} bytes ({self.bytes / self.obus:.1f}"
                f" bytes per OBU; past the first {self.allowance} OBUs they must average"
                f" {self.min_bytes}, --min-obu-bytes)")
        return obu


class Av1Server(IngestServer):
    """AV1 ingest of a raw OBU stream: ``ffmpeg ... -c:v libaom-av1 -f obu tcp://host:port``."""

    name = "serve-av1"

    @property
    def max_buffered(self) -> int:
        """A whole OBU must fit, with its header (at most 10 bytes)."""
        return max(self.limits.max_obu + 16, 64 << 10)

    async def ingest(self, conn: Connection, peer: _Peer) -> None:
        key = f"av1/{self.connections}"
        counts = av1.ObuCounts()
        codec = _SplitCodec(_ObuParser(self.limits), lambda: False, peer.watch,
                            self.limits.pause_every)
        tu: _TemporalUnit | None = None
        try:
            async for batch in conn.reader.frames(codec, batch=True):
                state = peer.state
                if state is None:  # a stream starts with its first OBU
                    state = self._begin(peer, key, counts)
                ring = state.ring
                for obu in batch:
                    if obu is _YIELD:
                        await trio.lowlevel.checkpoint()
                        break
                    if counts.add_obu(obu) and tu is not None and tu.filled:
                        ring.push(tu.take())
                    if tu is None:
                        tu = _TemporalUnit(self.allocator, self.limits.max_temporal_unit)
                    tu.add(obu)  # a copy: the OBU's views die at the next receive
                del batch
            if tu is not None and tu.filled and peer.state is not None:
                peer.state.ring.push(tu.take())
        except IncompleteReadError as e:
            raise IncompleteReadError(
                f"the stream ended inside an OBU ({e.partial} bytes of it arrived)",
                e.partial) from None
        finally:
            if tu is not None:
                tu.release()


def _stream_key(app: str, name: str) -> str:
    """``app/name`` as the peer sent them, made safe to print: at most 200 characters, and
    control characters (a newline would forge a log line) shown as ``?``."""
    key = f"{app}/{name}"[:200]
    return "".join(c if c.isprintable() else "?" for c in key)


def _rate(bytes_per_second: float) -> str:
    if bytes_per_second >= 1e6:
        return f"{bytes_per_second / 1e6:.1f} MB/s"
    return f"{bytes_per_second / 1e3:.1f} kB/s"


def _peer_address(conn: Connection) -> str:
    peer = getattr(conn, "peer", None)  # Connection.peer (docs/design.md §6), else the socket
    if peer is None:
        try:
            peer = conn.stream.socket.getpeername()
        except (AttributeError, OSError):
            return "?"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _quickack(conn: Connection) -> None:
    """Acknowledge at once while commands are exchanged (Linux ``TCP_QUICKACK``).

    ffmpeg writes small control messages back to back; with Nagle on its side
    and delayed ACKs on ours each exchange would stall ~40 ms.
    """
    opt = getattr(socket, "TCP_QUICKACK", None)
    if opt is not None:
        try:
            conn.stream.socket.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except (AttributeError, OSError):
            pass


_LISTEN_REASONS = {errno.EADDRINUSE: "address in use", errno.EACCES: "permission denied",
                   errno.EADDRNOTAVAIL: "address not available on this machine"}


def _listen_message(name: str, host: str | None, port: int, e: OSError) -> str:
    reason = _LISTEN_REASONS.get(e.errno or 0) or (e.strerror or str(e)).lower()
    return f"{name}: cannot listen on {host or '*'}:{port}: {reason}"


# -- the command line ---------------------------------------------------------------------


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(text)
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _size(text: str) -> int:
    value = parse_size(text)
    if value < 1:
        raise ValueError(text)
    return value


_seconds.__name__ = "seconds"  # argparse names the type in its error message
_positive.__name__ = "positive int"
_size.__name__ = "size"

# flag -> (Limits field, argparse type, metavar, help); {d} is the default
_COMMON_FLAGS = [
    ("--max-memory", "max_memory", _size, "SIZE",
     "native memory of the whole server: a connection that would pass it is dropped"
     " (default {d}: an eighth of this machine's memory, 256 MiB to 4 GiB)"),
    ("--max-connections", "max_connections", _positive, "N",
     "connections served at once; more are closed at once (default {d})"),
    ("--handshake-timeout", "handshake_timeout", _seconds, "SECONDS",
     "seconds from connecting until the peer publishes (default {d})"),
    ("--idle-timeout", "idle_timeout", _seconds, "SECONDS",
     "seconds without a received byte before a connection is closed (default {d})"),
    ("--ring-bytes", "ring_bytes", _size, "SIZE", "bytes of frames retained per stream"
     " (default {d})"),
    ("--flood-allowance", "item_allowance", _positive, "N",
     "chunks or OBUs a connection may send before the average-size rule applies (default {d})"),
    ("--pause-every", "pause_every", _positive, "N",
     "chunks or OBUs parsed before a connection lets the others run (default {d})"),
]
_RTMP_FLAGS: list[tuple[str, str, Any, str, str]] = [
    ("--player-budget", "player_budget", _size, "SIZE",
     "payload bytes one player may have queued; past it, it skips to the next keyframe"
     " (default {d})"),
    ("--max-message", "max_message", _size, "SIZE", "largest RTMP message (default {d})"),
    ("--max-partial", "max_partial", _size, "SIZE",
     "bytes one connection may hold in messages received in part (default {d})"),
    ("--min-chunk-bytes", "min_chunk_bytes", _positive, "N",
     "chunks must average at least N bytes, headers included (default {d})"),
    ("--max-waiting", "max_waiting", _positive, "N",
     "players waiting for a stream not yet published, at most (and at most half of"
     " --max-connections); more are refused (default {d})"),
    ("--play-linger", "play_linger", _seconds, "SECONDS",
     "seconds a player has to close after its stream ended (default {d})"),
    ("--max-http-head", "max_http_head", _size, "SIZE",
     "largest HTTP-FLV request head (default {d})"),
]
_AV1_FLAGS = [
    ("--max-obu", "max_obu", _size, "SIZE", "largest OBU (default {d})"),
    ("--max-temporal-unit", "max_temporal_unit", _size, "SIZE",
     "largest temporal unit (OBUs between two temporal delimiters) (default {d})"),
    ("--min-obu-bytes", "min_obu_bytes", _positive, "N",
     "OBUs must average at least N bytes (default {d})"),
]


def _parser(cls: type[IngestServer], default_port: int,
            flags: list[tuple[str, str, Any, str, str]]) -> argparse.ArgumentParser:
    defaults = Limits()
    p = argparse.ArgumentParser(
        prog=f"python -m membuf {cls.name}",
        description=(cls.__doc__ or "").strip().splitlines()[0].replace("``", ""),
        epilog="SIZE takes a binary suffix: 64K, 4M, 2G. Ctrl-C (or SIGTERM) stops the server"
               " and prints a one-line summary. Limits: docs/media.md.")
    p.add_argument("--port", type=int, default=default_port,
                   help=f"TCP port (default {default_port}; 0: any)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--json", action="store_true",
                   help='print {"streams": {key: counts}} per finished stream on stdout')
    p.add_argument("--once", action="store_true", help="exit after the first stream ends")
    if cls is RtmpServer:
        p.add_argument("--http-port", type=int, default=None, metavar="PORT",
                       help="also serve players over HTTP-FLV: GET http://host:PORT/app/name.flv"
                            " (default: off; 0: any port)")
    p.add_argument("--ring", type=_positive, default=64,
                   help="frames retained per stream (default 64)")
    p.add_argument("--interval", type=_seconds, default=1.0, help="seconds between live lines")
    p.add_argument("--quiet", action="store_true", help="no live lines")
    limits = p.add_argument_group("limits (each safe for an internet-facing port by default)")
    for flag, name, kind, metavar, help_ in _COMMON_FLAGS + flags:
        value = getattr(defaults, name)
        shown = format_size(value) if kind is _size else f"{value:g}"
        limits.add_argument(flag, dest=name, type=kind, metavar=metavar, default=value,
                            help=help_.format(d=shown))
    return p


def _main(argv: list[str] | None, cls: type[IngestServer], default_port: int, url: str,
          flags: list[tuple[str, str, Any, str, str]]) -> int:
    p = _parser(cls, default_port, flags)
    args = p.parse_args(argv)
    names = {f.name for f in fields(Limits)}
    try:
        limits = Limits(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as e:
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    extra = {"http_port": args.http_port} if cls is RtmpServer else {}
    server = cls(limits=limits, ring_size=args.ring, json_out=args.json, once=args.once,
                 live=not args.quiet, interval=args.interval, **extra)
    stopped: list[str] = []
    failed: list[ListenError] = []

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def serve(task_status: trio.TaskStatus[int]) -> None:
                    await server.run(args.port, args.host, task_status=task_status)
                    nursery.cancel_scope.cancel()  # --once: the first stream has ended

                try:
                    port = await nursery.start(serve)
                except ListenError as e:
                    failed.append(e)
                    nursery.cancel_scope.cancel()
                    return
                print(f"{cls.name}: listening on {url.format(host=args.host, port=port)}"
                      f" (max memory {format_size(limits.max_memory)})",
                      file=sys.stderr, flush=True)
                if "http" in server.extra_ports:
                    print(f"{cls.name}: HTTP-FLV on http://{args.host}:"
                          f"{server.extra_ports['http']}/<app>/<name>.flv",
                          file=sys.stderr, flush=True)
                async for signum in signals:
                    stopped.append(signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run)
    except KeyboardInterrupt:  # a Ctrl-C before trio's signal receiver was in place
        stopped.append("SIGINT")
    if failed:
        print(failed[0], file=sys.stderr, flush=True)
        return 1
    how = f"stopped by {stopped[0]}: " if stopped else ""
    print(f"{how}{server.totals()}", file=sys.stderr, flush=True)
    if args.once and server.finished and server.finished[0].error:
        return 1
    return 0


def rtmp_main(argv: list[str] | None = None) -> int:
    """``python -m membuf serve-rtmp``."""
    return _main(argv, RtmpServer, 1935, "rtmp://{host}:{port}/<app>/<name>", _RTMP_FLAGS)


def av1_main(argv: list[str] | None = None) -> int:
    """``python -m membuf serve-av1``."""
    return _main(argv, Av1Server, 9000, "tcp://{host}:{port} (ffmpeg -f obu)", _AV1_FLAGS)
