"""Fan-out: one published stream to many players, every payload sent by reference.

Strategy. A publisher's message arrives in its own
:class:`~membuf.RecyclableMemory` (its body). The server turns it once into a
:class:`Packet`: the message's RTMP chunks as :func:`~membuf.media.rtmp.write_message`
wrote them, small headers interleaved with views of the body cut at the chunk
size. Every player gets the same wire segments, so a payload is never copied,
whatever the number of players: a player's queue holds one ``retain()`` of
the body, recycled once the kernel has the bytes (one gather send per batch).
The bytes are freed when the last holder (the stream's GOP ring, a player's
queue, a send in progress) lets go: Netty's ``retainedSlice`` and Rust's
``Bytes::clone``, with exact counts.

A joining player gets, in this order: the play replies, the stream's metadata,
its sequence headers, the frames since the last video keyframe (the GOP the
ring holds), then live packets. A player that arrives before the publisher
waits for it (nginx-rtmp does the same).

Slow players (docs/media.md). A player holds at most ``budget`` bytes of
payload references, queued or being sent. A packet that would pass it drops
the player's queued media and the player skips to the next video keyframe:
what a stalled player pins is bounded, and :meth:`Player.offer` never waits,
so it never stalls the publisher or the other players. Control messages and
sequence headers are never dropped (a decoder needs them).

Invariants: a body is retained once per queue entry and recycled once when
the entry is sent or dropped; ``Player.held`` is the payload bytes of the
queue plus the batch being sent; a player's bytes go out in queue order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from ..memory import Memory, RecyclableMemory, from_views, step_over
from ..writer import PyWriter
from . import rtmp

__all__ = ["Packet", "Player", "Relay", "RelayCounts", "make_packet"]

BATCH = 256 << 10       # wire bytes per gather send (a few hundred segments at most)
_CRLF = memoryview(b"\r\n")


class Packet:
    """One message as players receive it, and the body its wire forms point into.

    ``wire`` is the RTMP form, a list of segments (chunk headers and views of
    ``body``), made on first use with the Writer the packet was made with and
    then shared by every RTMP player; :meth:`flv_tag` is the FLV form. A
    stream nobody plays never writes either. ``size`` is the payload length
    (what a player's budget counts). ``body`` is ``None`` for a packet that
    owns nothing (session replies).
    """

    __slots__ = ("type", "timestamp", "key", "config", "size", "body", "payload", "_w",
                 "_chunking", "_wire", "_wire_size", "flv", "flv_size")

    def __init__(self, mtype: int, timestamp: int, payload: memoryview | None,
                 body: RecyclableMemory | None, *, key: bool = False, config: bool = False,
                 wire: list[memoryview] | None = None, writer: PyWriter | None = None,
                 chunking: tuple[int, int, int] = (5, 1, 4096)) -> None:
        self.type = mtype
        self.timestamp = timestamp
        self.key = key              # a video keyframe: where a player may start
        self.config = config        # a sequence header, metadata or a reply: never dropped
        self.body = body
        self.payload = payload      # the view of ``body`` the wire forms point into
        self.size = 0 if payload is None else len(payload)
        self._w = writer
        self._chunking = chunking   # (csid, stream id, chunk size) of the RTMP form
        self._wire = wire
        self._wire_size = 0 if wire is None else sum(len(s) for s in wire)
        self.flv: list[memoryview] | None = wire   # as an FLV tag, made on first use
        self.flv_size = self._wire_size

    @property
    def wire(self) -> list[memoryview]:
        """The RTMP chunks: headers written once, payload by reference."""
        if self._wire is None:
            w = self._w
            assert w is not None and self.payload is not None
            csid, stream_id, chunk_size = self._chunking
            rtmp.write_message(w, self.type, self.payload, csid=csid, stream_id=stream_id,
                               timestamp=self.timestamp & 0xFFFFFFFF, chunk_size=chunk_size)
            self._wire = list(w.take())
            self._wire_size = sum(len(s) for s in self._wire)
        return self._wire

    @property
    def wire_size(self) -> int:
        return self._wire_size if self._wire is not None else sum(len(s) for s in self.wire)

    def flv_tag(self, w: PyWriter) -> list[memoryview]:
        """The packet as an FLV tag (HTTP-FLV players): header, payload by reference,
        previous-tag size; written once with ``w`` and shared by every such player."""
        if self.flv is None:
            assert self.payload is not None
            n, ts = len(self.payload), self.timestamp & 0xFFFFFFFF
            w.write_byte(self.type)
            w.write_be(3, n)
            w.write_be(3, ts & 0xFFFFFF)
            w.write_byte(ts >> 24)              # the timestamp's upper byte comes last
            w.write_be(3, 0)                    # stream id: always 0
            w.write_ref(self.payload)
            w.write_be(4, 11 + n)               # PreviousTagSize
            self.flv = list(w.take())
            self.flv_size = 15 + n
        return self.flv

    def __len__(self) -> int:
        return self.size

    def retain(self) -> None:
        if self.body is not None:
            self.body.retain()

    def recycle(self) -> None:
        if self.body is not None:
            self.body.recycle()

    def __repr__(self) -> str:
        kind = "key" if self.key else "config" if self.config else "media"
        return f"<Packet type={self.type} ts={self.timestamp} {kind} {self.size} B>"


def make_packet(w: PyWriter, mtype: int, timestamp: int, payload: memoryview,
                body: RecyclableMemory | None, *, csid: int, stream_id: int, chunk_size: int,
                key: bool = False, config: bool = False) -> Packet:
    """A packet of ``payload`` (a view into ``body``), chunked with ``w`` when a player
    first needs it. The Packet takes over the caller's reference to ``body``.

    The header fields are checked when the chunks are written (``rtmp.write_message``:
    TypeError, ValueError); a server passes fields of a message it parsed.
    """
    return Packet(mtype, timestamp, payload, body, key=key, config=config, writer=w,
                  chunking=(csid, stream_id, chunk_size))


def control_packet(segments: Iterable[Any]) -> Packet:
    """Session replies (handshake, status, acknowledgements) as a packet that owns nothing."""
    wire = [memoryview(s).cast("B") for s in segments]
    return Packet(0, 0, None, None, config=True, wire=wire)


@dataclass
class RelayCounts:
    """What a stream's players were sent (the ``--json`` summary reports these)."""

    players: int = 0            # players that joined while the stream was published
    messages: int = 0           # messages sent to players (one per player per message)
    bytes: int = 0              # payload bytes sent to players
    payload_copies: int = 0     # messages whose payload was copied on the way (0: by reference)
    skipped: int = 0            # messages slow players skipped (to the next keyframe)

    def summary(self) -> dict[str, int]:
        return {"players": self.players, "relayed_messages": self.messages,
                "relayed_bytes": self.bytes, "payload_copies": self.payload_copies,
                "skipped": self.skipped}


def _nothing() -> None:
    pass


class Player:
    """One playing connection's queue of packets, and the task that sends it.

    Args:
        budget: the most payload bytes the player may hold references to.
        copies: the connection's send path copies payloads (TLS): counted per message.
        flv: an HTTP-FLV player: packets go out as FLV tags, written with this Writer,
            each batch one chunk of HTTP's chunked transfer coding (``None``: an RTMP
            player, packets go out as RTMP chunks).
        nowait: ``Connection.send_nowait`` of an RTMP player: a packet offered while
            nothing is queued or being sent is written at once from the offering
            task (no task switch, nothing retained when the kernel takes it all);
            the rest of it is queued for the player's task.
    """

    def __init__(self, budget: int, *, copies: bool = False, flv: PyWriter | None = None,
                 nowait: Callable[[list[memoryview]], int] | None = None) -> None:
        self.budget = budget
        self.copies = copies
        self.flv = flv
        self.nowait = nowait if flv is None else None
        self._offset = 0              # wire bytes of queue[0] already sent (by nowait)
        self._sending = False         # the player's task has a batch in flight
        self._progress: Callable[[], None] = _nothing
        self.queue: deque[Packet] = deque()
        self.held = 0                 # payload bytes queued or being sent
        self.waiting_key = True       # until a video keyframe starts the picture
        self.counts: RelayCounts | None = None   # the stream it plays (None: waiting for one)
        self.ending = False           # the stream ended: send what is queued, then the end
        self.done = False
        self._lot = trio.lowlevel.ParkingLot()

    # -- the publisher's side (never waits) ---------------------------------

    def offer(self, packet: Packet) -> None:
        """Queue ``packet`` (retained) unless the player must skip it."""
        if self.done or self.ending:
            return
        if not packet.config:
            if self.waiting_key and not packet.key:
                self._skipped(1)
                return
            if self.held + packet.size > self.budget:
                self._skip_to_key()
                if not packet.key or self.held + packet.size > self.budget:
                    self._skipped(1)
                    return
            self.waiting_key = False
        if self.flv is not None:
            packet.flv_tag(self.flv)
        elif self.nowait is not None and not self.queue and not self._sending:
            wire = packet.wire      # (made once per packet, shared by every player)
            try:
                sent = self.nowait(wire)
            except Exception:      # the peer is gone: its own task finds out and leaves
                sent = 0
                self.nowait = None
            if sent == packet.wire_size:
                self._count((packet,))
                self._progress()
                return
            self._offset = sent
        packet.retain()
        self.queue.append(packet)
        self.held += packet.size
        self._lot.unpark_all()

    def _count(self, sent: Iterable[Packet]) -> None:
        counts = self.counts
        if counts is not None:
            for p in sent:
                if p.body is not None:
                    counts.messages += 1
                    counts.bytes += p.size
                    if self.copies:
                        counts.payload_copies += 1

    def _skip_to_key(self) -> None:
        """Over budget: drop the queued media (keep replies and sequence headers)."""
        kept: deque[Packet] = deque()
        dropped = 0
        for i, p in enumerate(self.queue):
            if p.config or (i == 0 and self._offset):   # (a packet half sent stays)
                kept.append(p)
            else:
                self.held -= p.size
                p.recycle()
                dropped += 1
        self.queue = kept
        self.waiting_key = True
        self._skipped(dropped)

    def _skipped(self, n: int) -> None:
        if self.counts is not None:
            self.counts.skipped += n

    def end(self) -> None:
        """The stream ended: the sender sends what is queued, then returns."""
        self.ending = True
        self._lot.unpark_all()

    # -- the player's side ----------------------------------------------------

    async def run(self, send: Callable[[Memory], Awaitable[None]],
                  progress: Callable[[], None]) -> None:
        """Send the queue in order, one gather send per batch, until :meth:`end` and empty.

        ``progress`` is called after every send (the connection's idle watchdog).
        """
        queue = self.queue
        self._progress = progress
        try:
            while True:
                while not self.queue:
                    if self.ending:
                        return
                    await self._lot.park()
                queue = self.queue
                batch: list[Packet] = []
                segments: list[memoryview] = []
                size = 0
                flv = self.flv is not None
                if self._offset:        # the head was sent in part by nowait
                    p = queue.popleft()
                    batch.append(p)
                    rest = list(p.wire)
                    segments.extend(rest[step_over(rest, 0, self._offset):])
                    size += p.wire_size - self._offset
                    self._offset = 0
                while queue and size < BATCH:
                    p = queue.popleft()
                    batch.append(p)
                    if flv:
                        segments.extend(p.flv)  # type: ignore[arg-type]  # made by offer
                        size += p.flv_size
                    else:
                        segments.extend(p.wire)
                        size += p.wire_size
                if flv:   # HTTP chunked transfer coding: a size line, the batch, CRLF
                    segments = [memoryview(b"%x\r\n" % size), *segments, _CRLF]
                    size += len(segments[0]) + 2
                self._sending = True
                try:
                    await send(from_views(segments, size))
                finally:
                    self._sending = False
                    for p in batch:
                        self.held -= p.size
                        p.recycle()
                self._count(batch)
                progress()
        finally:
            self.done = True

    def drop(self) -> None:
        """Recycle everything queued (the connection is gone)."""
        self.done = True
        self._offset = 0
        while self.queue:
            p = self.queue.popleft()
            self.held -= p.size
            p.recycle()


class Relay:
    """The players of one stream key, and what a joining player is sent first.

    ``source`` is ``None`` while nobody publishes the key; players who join
    then wait. :meth:`publish` attaches the waiting players to a new stream;
    :meth:`unpublish` ends every attached player once its queue is sent.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.players: set[Player] = set()
        self.counts: RelayCounts | None = None
        self._gop: Callable[[], list[Packet]] = list
        self._configs: Callable[[], list[Packet]] = list
        # streams that ended, each with its players still being sent what they queued
        self._draining: list[tuple[set[Player], Callable[[], None]]] = []
        self._fresh = False

    @property
    def publishing(self) -> bool:
        return self.counts is not None

    def publish(self, counts: RelayCounts, configs: Callable[[], list[Packet]],
                gop: Callable[[], list[Packet]]) -> None:
        """A stream starts: ``configs()`` and ``gop()`` say what a joining player gets first."""
        self.counts, self._configs, self._gop = counts, configs, gop
        self._fresh = True          # no media yet: a player attached now misses nothing
        for p in self.players:
            if not p.ending:
                self._attach(p, counts)

    def _attach(self, player: Player, counts: RelayCounts) -> None:
        player.counts = counts
        counts.players += 1
        if self._fresh:
            player.waiting_key = False   # it gets the stream from its first message
        for packet in self._configs():
            player.offer(packet)
        for packet in self._gop():
            player.offer(packet)

    def join(self, player: Player) -> None:
        self.players.add(player)
        if self.counts is not None:
            self._attach(player, self.counts)

    def fan_out(self, packet: Packet) -> None:
        """Queue ``packet`` to every player (each retains it; none waits)."""
        if not packet.config:
            self._fresh = False
        for p in self.players:
            p.offer(packet)

    def unpublish(self, drained: Callable[[], None]) -> None:
        """The stream ended: end its players; call ``drained()`` once the last one is done."""
        self.counts = None
        self._configs = self._gop = list
        attached = {p for p in self.players if p.counts is not None and not p.ending}
        for p in attached:
            p.end()
        if attached:
            self._draining.append((attached, drained))
        else:
            drained()

    def leave(self, player: Player) -> None:
        """``player``'s connection is gone: drop its queue; maybe the stream's last one."""
        player.drop()
        self.players.discard(player)
        done = []
        for entry in self._draining:
            entry[0].discard(player)
            if not entry[0]:
                done.append(entry)
        for entry in done:
            self._draining.remove(entry)
            entry[1]()

    def idle(self) -> bool:
        return not self.players and self.counts is None and not self._draining
