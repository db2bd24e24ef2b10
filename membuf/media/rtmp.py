"""RTMP: handshake, chunk stream, and the server side of a publish.

Strategy. Everything here is sans-IO (h11's model): objects are fed a
:class:`~membuf.Reader` over received bytes and return parsed messages or
raise ``NeedMore``; bytes to send come back from :meth:`ServerSession.data_to_send`.
The same code therefore runs on a StreamReader's buffer, a captured file or
a test's list of byte splits.

Layers, bottom up:

* Handshake (spec section 5.2): read C0+C1 (1 + 1536 bytes), answer
  S0+S1+S2 at once (S2 echoes C1), read C2 (1536 bytes, not checked). No
  digest: ffmpeg checks the server's digest only when it *plays* from a
  server that announces version >= 3, and S1 here announces 0.
* Chunk stream (section 5.3): :class:`ChunkReader`. A chunk header is 1-3
  bytes of basic header (fmt, chunk stream id), a 11/7/3/0-byte message
  header for fmt 0/1/2/3, and a 4-byte extended timestamp when the 24-bit
  field is 0xFFFFFF (repeated on fmt-3 chunks of such a message, as ffmpeg
  and Flash do: accepted when present, not required). The header is parsed
  from one ``peek`` and committed with one ``skip``, so a partial header
  consumes nothing. On the first chunk of a message the whole message is
  reassembled in one buffer of a :class:`~membuf.RecyclableMemory` (Monibuca's
  model) and every chunk payload is copied into it with ``read_into`` as it
  arrives, so a peer's chunk size never forces us to buffer a whole chunk,
  and the finished message is retained independently of the receive buffer.
* Bounds against a hostile peer (docs/design.md §12). A message buffer grows
  (doubling) only as payload arrives, so a partial message holds at most
  twice what was received of it; ``max_partial`` caps the bytes all partial
  messages of a connection hold; ``min_chunk_bytes`` bounds the work per
  input byte (after ``item_allowance`` chunks, chunks must average that many
  bytes, so a flood of 1-byte headers of empty messages is refused); and
  ``pause_every`` makes :meth:`ChunkReader.read_message` stop between chunks
  (:class:`Paused`) so that a server can let other connections run.
* Session: :class:`ServerSession` speaks the publish and play flows ffmpeg,
  OBS and librtmp use. Publish: ``connect`` -> Window Ack Size, Set Peer Bandwidth, Set Chunk
  Size, ``_result``; ``releaseStream`` / ``FCPublish`` -> ``_result``;
  ``createStream`` -> ``_result`` with stream id 1; ``publish`` -> Stream
  Begin + ``onStatus NetStream.Publish.Start``; ``FCUnpublish`` /
  ``deleteStream`` / ``closeStream`` end the stream. Play: ``connect``,
  ``createStream``, ``getStreamLength`` -> ``_result``; ``play`` -> Stream
  Begin, ``onStatus NetStream.Play.Reset`` and ``.Start``,
  ``|RtmpSampleAccess``, and a :class:`Play` event (the caller sends the
  media); :meth:`ServerSession.end_play` says Stream EOF and
  ``NetStream.Play.UnpublishNotify``. It sends Acknowledgements when the peer set a window.
  Audio, video and data messages come out as :class:`Media` events that own
  their message.

Invariants: a chunk stream's state changes only after its whole header was
read; a message is handed out exactly once and then belongs to the caller
(who must ``recycle`` it); control messages are recycled here.

Not handled: seeking and pausing a play (live streams only), AMF3
object encoding (AMF3 *commands* with AMF0 bodies are accepted), aggregate
messages (type 22, counted and dropped), shared objects.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Any

from ..allocator import Allocator
from ..errors import FreeError, MalformedError, NeedMore
from ..memory import Memory, RecyclableMemory, as_view
from ..reader import Reader
from ..writer import PyWriter, Writer
from . import amf0
from .limits import LimitError, check_reader, check_size

__all__ = [
    "ChunkReader",
    "Message",
    "Paused",
    "Pause",
    "ServerSession",
    "Publish",
    "Media",
    "Unpublish",
    "Play",
    "Stop",
    "encode_chunks",
    "write_message",
]

SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0, AGGREGATE = 8, 9, 15, 17, 18, 20, 22
HANDSHAKE_SIZE = 1536
MAX_CHUNK_SIZE = 0x7FFFFFFF
_NO_EXT = -1
_EMPTY = memoryview(b"")


@dataclass
class Message:
    """One reassembled RTMP message; ``body`` owns exactly the message bytes."""

    type: int
    stream_id: int
    timestamp: int
    csid: int
    body: RecyclableMemory

    def view(self) -> memoryview:
        """The body as one memoryview (it is always a single segment)."""
        for seg in self.body:
            return seg
        return memoryview(b"")

    def reader(self) -> Reader:
        return self.body.reader()


class _ChunkStream:
    """Per chunk-stream-id state: the last header seen and the message being filled."""

    __slots__ = ("csid", "timestamp", "delta", "length", "type", "stream_id", "ext", "body",
                 "buf", "filled", "addr")

    def __init__(self, csid: int) -> None:
        self.csid = csid
        self.timestamp = self.delta = self.length = self.type = self.stream_id = 0
        self.ext = _NO_EXT          # extended timestamp field of the current message, or -1
        self.body: RecyclableMemory | None = None
        self.buf = _EMPTY           # the message being filled (malloc'd, grows as it fills)
        self.addr = 0               # its address (it is ours: owned without a check)
        self.filled = 0


def _drop_one(allocator: Allocator, cs: _ChunkStream) -> int:
    """Free cs's partial message; returns the bytes its buffer held."""
    held = len(cs.buf)
    if held:
        allocator.free(cs.buf)
    cs.buf = _EMPTY
    if cs.body is not None:
        cs.body.recycle()
        cs.body = None
    return held


def _drop_all(allocator: Allocator, streams: dict[int, _ChunkStream]) -> None:
    """The finalizer of a ChunkReader dropped without close(): free its partial messages.

    If the allocator was reset first, the buffers are gone already (FreeError): nothing to do.
    """
    for cs in streams.values():
        try:
            _drop_one(allocator, cs)
        except FreeError:
            cs.buf, cs.body = _EMPTY, None


class Paused(Exception):  # noqa: N818 (a signal, not an error)
    """:meth:`ChunkReader.read_message` stopped after ``pause_every`` chunks.

    Nothing is lost: call it again (after letting other tasks run). Raised
    only by a ChunkReader made with ``pause_every``.
    """


class ChunkReader:
    """Reassemble RTMP messages from chunks (sans-IO).

    Args:
        allocator: where message bodies are malloc'd.
        max_message: the largest message accepted (the format allows 16 MiB).
        max_partial: the most bytes the buffers of messages received in part
            may hold together (``None``: no cap beyond 64 x ``max_message``).
        min_chunk_bytes: after ``item_allowance`` chunks, the chunks must
            average at least this many bytes, headers included (``None``:
            no rule). Bounds the work per input byte.
        item_allowance: chunks accepted before ``min_chunk_bytes`` applies.
        pause_every: raise :class:`Paused` between chunks after this many
            chunks (``None``: never), so a caller can yield to other tasks.

    ``read_message(r)`` returns the next complete message or raises
    ``NeedMore`` after consuming every complete chunk piece it could: call it
    again with the same Reader once more bytes arrived. Set Chunk Size and
    Abort are applied here (they change how chunks parse) and also returned.
    Passing ``max_partial`` or ``min_chunk_bytes`` raises
    :class:`~membuf.media.limits.LimitError` (a ``MalformedError``).

    Raises (construction):
        TypeError: an allocator that is not an Allocator, a size that is not an int.
        ValueError: a size out of range.
    """

    def __init__(self, allocator: Allocator, max_message: int = 16 << 20, *,
                 max_partial: int | None = None, min_chunk_bytes: int | None = None,
                 item_allowance: int = 4096, pause_every: int | None = None) -> None:
        if not isinstance(allocator, Allocator):
            raise TypeError(f"ChunkReader needs an Allocator, got {type(allocator).__name__}")
        self.allocator = allocator
        self.max_message = check_size("ChunkReader", "max_message", max_message)
        self.max_partial = (None if max_partial is None
                            else check_size("ChunkReader", "max_partial", max_partial))
        self.min_chunk_bytes = (None if min_chunk_bytes is None else
                                check_size("ChunkReader", "min_chunk_bytes", min_chunk_bytes,
                                           minimum=1))
        self.item_allowance = check_size("ChunkReader", "item_allowance", item_allowance)
        self.pause_every = (None if pause_every is None
                            else check_size("ChunkReader", "pause_every", pause_every, minimum=1))
        self.chunk_size = 128
        self.bytes_read = 0
        #: chunk headers read so far
        self.chunks = 0
        #: bytes the buffers of partial messages hold now (at most twice what arrived of them)
        self.partial_bytes = 0
        self._since_pause = 0
        self._pause_at: float = float("inf") if self.pause_every is None else self.pause_every
        self._streams: dict[int, _ChunkStream] = {}
        # a reader dropped without close() still frees its partial messages
        weakref.finalize(self, _drop_all, allocator, self._streams)
        self._cur: _ChunkStream | None = None   # chunk whose payload is being copied
        self._left = 0                          # payload bytes of that chunk still to copy

    def read_message(self, r: Reader) -> Message:
        """Next complete message.

        Raises:
            NeedMore: no complete message yet (every complete chunk piece was consumed).
            Paused: ``pause_every`` chunks were read since the last pause (call again).
            MalformedError: corrupt input, or a limit passed (LimitError).
            MemoryLimitError: the allocator refused a buffer; nothing was consumed.
            TypeError: ``r`` is not a Reader.
        """
        if type(r) is not Reader:
            check_reader("ChunkReader.read_message", r)
        while True:
            cs = self._cur
            if cs is None:
                if self._since_pause >= self._pause_at and len(r):
                    self._since_pause = 0
                    raise Paused
                cs = self._read_header(r)
            left = self._left
            if left:
                n = min(left, len(r))
                if not n:
                    raise NeedMore(f"RTMP chunk payload needs {left} more bytes", left)
                end = cs.filled + n
                if end > len(cs.buf):
                    self._grow(cs, end)         # may raise MemoryLimitError: nothing consumed
                r.read_into(cs.buf[cs.filled:end])
                cs.filled = end
                self.bytes_read += n
                self._left = left = left - n
                if left:
                    raise NeedMore(f"RTMP chunk payload needs {left} more bytes", left)
            self._cur = None
            if cs.filled == cs.length:
                body = cs.body
                assert body is not None
                # exactly the message, one contiguous segment (an empty one for length 0)
                if cs.length:
                    self.partial_bytes -= len(cs.buf)
                    body._append_owned(cs.buf, cs.addr)   # malloc'd here: ours
                else:
                    body.push(cs.buf)
                cs.body, cs.buf = None, _EMPTY
                msg = Message(cs.type, cs.stream_id, cs.timestamp, cs.csid, body)
                if msg.type == SET_CHUNK_SIZE or msg.type == ABORT:
                    self._control(msg)
                return msg

    def _read_header(self, r: Reader) -> _ChunkStream:
        if len(r):
            # the common case: a 1-byte fmt-3 header continuing a message in progress
            # (no extended timestamp to repeat): one peek_byte, one skip
            b0 = r.peek_byte()
            cs = self._streams.get(b0 & 0x3F) if b0 >= 0xC2 else None
            if cs is not None and cs.body is not None and cs.ext == _NO_EXT:
                if self.min_chunk_bytes is not None:
                    self._check_flood(1)
                return self._enter(r, cs, 1)
        head = r.peek(min(18, len(r)))  # the longest header: 3 + 11 + 4
        if not head:
            raise NeedMore("RTMP chunk header needs at least 1 byte", 1)
        fmt, csid, i = head[0] >> 6, head[0] & 0x3F, 1
        if csid < 2:
            i = 2 + csid
            if len(head) < i:
                raise NeedMore("RTMP chunk basic header is incomplete", i - len(head))
            csid = 64 + head[1] + (head[2] << 8 if csid else 0)
        need = i + (11, 7, 3, 0)[fmt]
        if len(head) < need:
            raise NeedMore("RTMP chunk header is incomplete", need - len(head))
        cs = self._streams.get(csid)
        if self.min_chunk_bytes is not None:
            self._check_flood(need)
        if cs is None:
            if fmt:
                raise MalformedError(f"RTMP chunk stream {csid} starts with a fmt {fmt} header;"
                                     " its first chunk must be fmt 0 (corrupt or misaligned)")
            if len(self._streams) >= 64:
                raise MalformedError("RTMP peer opened more than 64 chunk streams")
            cs = self._streams[csid] = _ChunkStream(csid)
        new = cs.body is None
        if not new and fmt < 3:
            raise MalformedError(f"RTMP chunk stream {csid}: fmt {fmt} header in the middle of a"
                                 f" {cs.length}-byte message ({cs.filled} received)")
        ts_field, length, mtype, sid = -1, cs.length, cs.type, cs.stream_id
        if fmt < 3:
            ts_field = int.from_bytes(head[i:i + 3], "big")
            if fmt < 2:
                length = int.from_bytes(head[i + 3:i + 6], "big")
                mtype = head[i + 6]
                if fmt == 0:
                    sid = int.from_bytes(head[i + 7:i + 11], "little")
        ext = _NO_EXT
        if ts_field == 0xFFFFFF:
            if len(head) < need + 4:
                raise NeedMore("RTMP extended timestamp is incomplete", need + 4 - len(head))
            ext = int.from_bytes(head[need:need + 4], "big")
            need += 4
        elif fmt == 3 and cs.ext != _NO_EXT:
            # a repeated extended timestamp on a fmt-3 chunk: skip it if it is there
            if len(head) < need + 4:
                raise NeedMore("RTMP chunk: cannot tell a repeated extended timestamp yet", 4)
            if int.from_bytes(head[need:need + 4], "big") == cs.ext:
                need += 4
        if new:
            if length > self.max_message:
                raise MalformedError(f"RTMP message of {length} bytes on chunk stream {csid},"
                                     f" over max_message={self.max_message}")
            if fmt == 0:
                cs.timestamp = ts = ext if ext != _NO_EXT else ts_field
                cs.delta = ts
            else:
                if fmt < 3:
                    cs.delta = ext if ext != _NO_EXT else ts_field
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
            if fmt < 3:
                cs.ext = ext
            cs.length, cs.type, cs.stream_id = length, mtype, sid
            # The buffer grows as payload arrives (_grow), so what a peer makes us hold
            # stays proportional to what it sent, however long the messages it announces.
            cs.body = RecyclableMemory(self.allocator)
            cs.buf = _EMPTY
            cs.filled = 0
        return self._enter(r, cs, need)

    def _enter(self, r: Reader, cs: _ChunkStream, need: int) -> _ChunkStream:
        """Commit a ``need``-byte chunk header of ``cs``: its payload is read next."""
        r.skip(need)
        self.bytes_read += need
        self.chunks += 1
        self._since_pause += 1
        self._cur = cs
        self._left = min(self.chunk_size, cs.length - cs.filled)
        return cs

    def _check_flood(self, need: int) -> None:
        """LimitError if one more chunk (with a ``need``-byte header) breaks the average rule."""
        assert self.min_chunk_bytes is not None
        chunks, seen = self.chunks + 1, self.bytes_read + need
        if chunks > self.item_allowance + seen // self.min_chunk_bytes:
            raise LimitError(
                f"RTMP flood: {chunks} chunks in {seen} bytes ({seen / chunks:.1f} bytes"
                f" per chunk; past the first {self.item_allowance} chunks they must average"
                f" {self.min_chunk_bytes}): tiny chunks or empty messages cost work per byte")

    def _grow(self, cs: _ChunkStream, need: int) -> None:
        """Make cs.buf hold at least ``need`` bytes (payload that has arrived): double, never
        past the message length (so the last growth leaves it exactly the message's size),
        never past ``max_partial`` for all partial messages together.

        Raises LimitError or MemoryLimitError with nothing changed."""
        old = len(cs.buf)
        cap = min(cs.length, max(need, 2 * old))
        if self.max_partial is not None:
            room = self.max_partial - (self.partial_bytes - old)
            if need > room:
                partial = sum(1 for c in self._streams.values() if c.body is not None)
                raise LimitError(
                    f"RTMP partial messages would hold {self.partial_bytes - old + need} bytes,"
                    f" over max_partial={self.max_partial} ({partial} messages in progress,"
                    f" {self.pending()} bytes of them received)")
            cap = min(cap, room)
        grown, addr = self.allocator._malloc_addr(cap)
        grown[: cs.filled] = cs.buf[: cs.filled]
        if old:
            self.allocator.free(cs.buf)
        cs.buf, cs.addr = grown, addr
        self.partial_bytes += cap - old

    def _control(self, msg: Message) -> None:
        v = msg.view()
        if len(v) < 4:
            raise MalformedError(f"RTMP control message type {msg.type} has {len(v)} bytes, needs 4")
        value = int.from_bytes(v[:4], "big") & 0x7FFFFFFF
        if msg.type == SET_CHUNK_SIZE:
            if value < 1:
                raise MalformedError("RTMP Set Chunk Size to 0")
            self.chunk_size = value
        else:  # Abort: drop the partial message on that chunk stream
            cs = self._streams.get(value)
            if cs is not None and cs.body is not None:
                self.partial_bytes -= _drop_one(self.allocator, cs)
                if self._cur is cs:
                    self._cur, self._left = None, 0

    def close(self) -> None:
        """Recycle every partially received message."""
        for cs in self._streams.values():
            _drop_one(self.allocator, cs)
        self.partial_bytes = 0
        self._cur = None
        self._left = 0

    def pending(self) -> int:
        """Bytes of messages received in part (nonzero at a clean end means truncation)."""
        return sum(cs.filled for cs in self._streams.values() if cs.body is not None)


def check_header(what: str, mtype: int, csid: int, stream_id: int, timestamp: int,
                  chunk_size: int) -> None:
    """TypeError / ValueError unless the fields fit a chunk header (``what`` names the caller)."""
    check_size(what, "chunk_size", chunk_size, minimum=1)
    for name, value, top in (("mtype", mtype, 0xFF), ("timestamp", timestamp, 0xFFFFFFFF),
                             ("stream_id", stream_id, 0xFFFFFFFF), ("csid", csid, 63)):
        check_size(what, name, value)
        if value > top:
            raise ValueError(f"{what} {name} must be at most {top}, got {value}")
    if not 2 <= csid <= 63:
        raise ValueError(f"csid {csid} needs a 1-byte basic header (2..63)")


def write_message(w: PyWriter, mtype: int, payload: Any, *, csid: int = 2, stream_id: int = 0,
                  timestamp: int = 0, chunk_size: int = 128) -> None:
    """Append one message to ``w`` as chunks: a fmt-0 header, fmt-3 headers between pieces.

    The headers are written into the Writer; the payload (bytes-like or a
    Memory) is appended by reference (``write_ref``), cut at chunk
    boundaries: its bytes are never copied, so one payload can go out to
    many peers from the same memory.

    Raises:
        TypeError: an argument that is not an int (or a payload that is not bytes-like).
        ValueError: an argument out of range (a message type is one byte, a timestamp
            and a stream id four, a csid 2..63).
    """
    check_header("write_message", mtype, csid, stream_id, timestamp, chunk_size)
    segments = list(payload) if isinstance(payload, Memory) else [as_view(payload)]
    n = sum(len(s) for s in segments)
    ts = min(timestamp, 0xFFFFFF)
    w.write_byte(csid)
    w.write_be(3, ts)
    w.write_be(3, n)
    w.write_byte(mtype)
    w.write_le(4, stream_id)
    if ts == 0xFFFFFF:
        w.write_be(4, timestamp)
    room = chunk_size             # payload bytes left in the current chunk
    for seg in segments:
        i, left = 0, len(seg)
        while left:
            if not room:
                w.write_byte(0xC0 | csid)
                if ts == 0xFFFFFF:  # repeated on fmt-3 chunks, as ffmpeg and Flash expect
                    w.write_be(4, timestamp)
                room = chunk_size
            k = min(room, left)
            w.write_ref(seg[i:i + k] if k < len(seg) else seg)
            i += k
            left -= k
            room -= k


def encode_chunks(mtype: int, payload: bytes | Memory, *, csid: int = 2, stream_id: int = 0,
                  timestamp: int = 0, chunk_size: int = 128) -> Memory:
    """One message as chunks (:func:`write_message` into a new Writer), ready for one
    gather write: small headers interleaved with views of ``payload``.

    Raises:
        TypeError, ValueError: as :func:`write_message`.
    """
    w = Writer()
    write_message(w, mtype, payload, csid=csid, stream_id=stream_id, timestamp=timestamp,
                  chunk_size=chunk_size)
    return w.take()


# --- the server session ----------------------------------------------------------------


@dataclass
class Publish:
    """A client started publishing ``app/name``."""

    app: str
    name: str


@dataclass
class Media:
    """An audio (8), video (9) or data (18) message; the receiver must recycle ``message.body``."""

    message: Message


@dataclass
class Unpublish:
    """The client stopped publishing (FCUnpublish, deleteStream or closeStream)."""

    app: str
    name: str


@dataclass
class Play:
    """A client asked to play ``app/name``; the session has queued the play replies."""

    app: str
    name: str


@dataclass
class Stop:
    """A playing client stopped (deleteStream or closeStream)."""

    app: str
    name: str


@dataclass
class Pause:
    """Not an event of the stream: the session read ``pause_every`` chunks and stopped so
    that the caller can let other tasks run. Call :meth:`ServerSession.next_event` again."""


PAUSE = Pause()
Event = Publish | Media | Unpublish | Play | Stop | Pause


class ServerSession:
    """The server side of an RTMP connection that publishes or plays (sans-IO).

    Args:
        allocator: where message bodies are malloc'd.
        chunk_size: the chunk size announced to, and used for, the peer.
        window: the acknowledgement window announced to the peer.
        max_message, max_partial, min_chunk_bytes, item_allowance, pause_every:
            the :class:`ChunkReader`'s bounds (a server passes its limits).

    Feed it a Reader over the received bytes: :meth:`next_event` returns the
    next :class:`Publish`, :class:`Media`, :class:`Unpublish`, :class:`Play` or
    :class:`Stop` (commands and control messages are answered internally), or
    raises ``NeedMore``; with ``pause_every`` it also returns :data:`PAUSE`
    every so many chunks. After each call, send what :meth:`data_to_send`
    returns. A playing session's media is not sent from here: the caller
    writes it (:func:`write_message`, stream id :attr:`play_stream_id`) after
    the play replies, and calls :meth:`end_play` when the stream ends.
    """

    def __init__(self, allocator: Allocator, chunk_size: int = 4096,
                 window: int = 2_500_000, *, max_message: int = 16 << 20,
                 max_partial: int | None = None, min_chunk_bytes: int | None = None,
                 item_allowance: int = 4096, pause_every: int | None = None) -> None:
        self.chunks = ChunkReader(allocator, max_message, max_partial=max_partial,
                                  min_chunk_bytes=min_chunk_bytes,
                                  item_allowance=item_allowance, pause_every=pause_every)
        check_size("ServerSession", "chunk_size", chunk_size, minimum=1)
        check_size("ServerSession", "window", window, minimum=1)
        self.out_chunk_size = chunk_size
        self.window = window
        self.state = "c0c1"
        self.app = ""
        self.name = ""
        self.publishing = False
        self.playing = False
        self.play_stream_id = 1
        self.peer_window = 0
        self._acked = 0
        self._out: list[Any] = []

    # -- bytes out ---------------------------------------------------------

    def data_to_send(self) -> list[Any]:
        """Bytes-like pieces to send, in order (empties the queue)."""
        out, self._out = self._out, []
        return out

    def has_data_to_send(self) -> bool:
        """True when replies are queued: after C0+C1 the session has S0-S2 to send before
        any event exists, so a driver that sends only after events must check this."""
        return bool(self._out)

    def _send(self, mtype: int, payload: bytes | Memory, *, csid: int = 2,
              stream_id: int = 0) -> None:
        self._out.extend(encode_chunks(mtype, payload, csid=csid, stream_id=stream_id,
                                       chunk_size=self.out_chunk_size))

    def _command(self, *values: Any, stream_id: int = 0) -> None:
        self._send(COMMAND_AMF0, amf0.encode(*values), csid=5 if stream_id else 3,
                   stream_id=stream_id)

    def _status(self, stream_id: int, code: str, description: str, *,
                level: str = "status", details: bool = True) -> None:
        """``onStatus`` on a stream: level, code, description (and the stream's name)."""
        info = {"level": level, "code": code, "description": description}
        if details:
            info["details"] = self.name
        self._command("onStatus", 0.0, None, info, stream_id=stream_id)

    def _control(self, mtype: int, *fields: tuple[int, int]) -> None:
        """A control message whose payload is big-endian fields, ``(width, value)`` each."""
        w = Writer()
        for width, value in fields:
            w.write_be(width, value)
        self._send(mtype, w.take())

    def _user_control(self, event: int, stream_id: int) -> None:
        """A User Control event about a stream (0: Stream Begin, 1: Stream EOF)."""
        self._control(USER_CONTROL, (2, event), (4, stream_id))

    # -- bytes in ----------------------------------------------------------

    def next_event(self, r: Reader) -> Event:
        """The next event; raises NeedMore when ``r`` holds no complete one.

        Raises:
            NeedMore, MalformedError, MemoryLimitError: see :meth:`ChunkReader.read_message`.
            TypeError: ``r`` is not a Reader.
        """
        if type(r) is not Reader:
            check_reader("ServerSession.next_event", r)
        if self.state != "open":
            self._handshake(r)
        while True:
            try:
                msg = self.chunks.read_message(r)
            except Paused:
                return PAUSE
            finally:
                if self.peer_window:
                    self._maybe_ack()
            t = msg.type
            if t == VIDEO or t == AUDIO or t == DATA_AMF0:
                return Media(msg)
            try:
                event = self._handle(msg)
            finally:
                msg.body.recycle()
            if event is not None:
                return event

    def _handshake(self, r: Reader) -> None:
        if self.state == "c0c1":
            with r.transaction():
                version = r.read_byte()
                c1 = r.read_bytes(HANDSHAKE_SIZE)
            if version != 3:
                raise MalformedError(f"RTMP handshake: C0 version {version}, expected 3"
                                     " (not RTMP, or RTMPE/RTMPT)")
            s1 = bytes(8) + os.urandom(HANDSHAKE_SIZE - 8)  # time 0, zero version: no digest
            self._out += [b"\x03", s1, c1]                  # S0, S1, S2 = echo of C1
            self.state = "c2"
        if self.state == "c2":
            r.skip(HANDSHAKE_SIZE)  # C2: an echo of S1, not checked (ffmpeg's is not)
            self.state = "open"

    def _maybe_ack(self) -> None:
        received = self.chunks.bytes_read + 2 * HANDSHAKE_SIZE + 1  # the sequence counts C0-C2
        if received - self._acked >= self.peer_window:
            self._acked = received
            self._control(ACK, (4, received & 0xFFFFFFFF))

    def _handle(self, msg: Message) -> Event | None:
        t = msg.type
        if t == WINDOW_ACK_SIZE:
            v = msg.view()
            if len(v) >= 4:
                self.peer_window = int.from_bytes(v[:4], "big")
            return None
        if t == COMMAND_AMF0 or t == COMMAND_AMF3:
            r = msg.reader()
            if t == COMMAND_AMF3 and len(r):
                r.skip(1)  # AMF3 command messages start with a format byte, then AMF0
            args = amf0.decode_all(r)
            if not args or not isinstance(args[0], str):
                raise MalformedError(f"RTMP command without a name: {args[:3]!r}")
            return self._on_command(args[0], args[1:], msg.stream_id)
        return None  # Ack, User Control, Set Peer Bandwidth, Set Chunk Size, aggregate...

    def _on_command(self, name: str, args: list[Any], stream_id: int) -> Event | None:
        tid = args[0] if args and isinstance(args[0], float) else 0.0
        rest = args[2:]
        if name == "connect":
            info = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
            self.app = str(info.get("app", "")).strip("/")
            self._control(WINDOW_ACK_SIZE, (4, self.window))
            self._control(SET_PEER_BANDWIDTH, (4, self.window), (1, 2))   # 2: dynamic
            self._control(SET_CHUNK_SIZE, (4, self.out_chunk_size))
            self._command("_result", tid,
                          {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                          {"level": "status", "code": "NetConnection.Connect.Success",
                           "description": "Connection succeeded.", "objectEncoding": 0.0})
        elif name == "createStream":
            self._command("_result", tid, None, 1.0)
        elif name in ("releaseStream", "FCPublish"):
            self._command("_result", tid, None, amf0.UNDEFINED)
        elif name == "publish":
            if self.playing:
                self._status(stream_id or 1, "NetStream.Publish.BadName",
                             "this connection plays a stream", level="error", details=False)
                return None
            self.name = str(rest[0]) if rest else ""
            self._user_control(0, stream_id or 1)                 # Stream Begin
            self._status(stream_id or 1, "NetStream.Publish.Start",
                         f"{self.name} is now published.")
            self.publishing = True
            return Publish(self.app, self.name)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.publishing:
                self.publishing = False
                return Unpublish(self.app, self.name)
            if self.playing and name != "FCUnpublish":
                self.playing = False
                return Stop(self.app, self.name)
        elif name == "play":
            if self.publishing or self.playing:
                self._status(stream_id or 1, "NetStream.Play.Failed",
                             "this connection already publishes or plays", level="error",
                             details=False)
                return None
            self.name = str(rest[0]) if rest else ""
            self.play_stream_id = sid = stream_id or 1
            self._user_control(0, sid)                            # Stream Begin
            self._status(sid, "NetStream.Play.Reset", f"Playing and resetting {self.name}.")
            self._status(sid, "NetStream.Play.Start", f"Started playing {self.name}.")
            self._send(DATA_AMF0, amf0.encode("|RtmpSampleAccess", True, True), csid=5,
                       stream_id=sid)
            self.playing = True
            return Play(self.app, self.name)
        elif name == "getStreamLength":
            self._command("_result", tid, None, 0.0)   # live: no length
        elif name in ("FCSubscribe", "_checkbw"):
            self._command("_result", tid, None, amf0.UNDEFINED)
        elif tid:
            self._command("_error", tid, None,
                          {"level": "error", "code": "NetConnection.Call.Failed",
                           "description": f"unknown command {name}"})
        return None

    def end_play(self, description: str = "the stream was unpublished") -> None:
        """Queue the end of playing: User Control Stream EOF, then ``onStatus
        NetStream.Play.UnpublishNotify`` (a player such as ffmpeg then ends cleanly)."""
        if not self.playing:
            return
        sid = self.play_stream_id
        self._user_control(1, sid)                                # Stream EOF
        # last: ffmpeg stops reading at this status, and unread bytes would make its
        # close a reset
        self._status(sid, "NetStream.Play.UnpublishNotify", f"{self.name}: {description}.")
        self.playing = False

    def close(self) -> None:
        """Recycle partial messages (call when the connection ends)."""
        self.chunks.close()
