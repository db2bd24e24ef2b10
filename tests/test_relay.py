"""Unit tests of the RTMP relay: Player, Relay, FrameRing.since_key, the play flow, write_message.

No sockets and no ffmpeg (tests/test_media_e2e.py has those). The Player is
checked against a reference model by hypothesis, driving its real ``run``
under trio with a ``send`` that records each batch and blocks until the test
lets it finish (or fail). Packets own real RecyclableMemory bodies from a real
Allocator, so the model checks reference counts and that every byte is given
back. Every test that feeds a parser bytes runs over every split of them
(tests/splitting.py).
"""

from __future__ import annotations

import ctypes
import io
import math
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import avc_frame, rtmp_command, rtmp_message, rtmp_play_commands
from splitting import SPLITS, split
from splitting import feed as feed_splits

from membuf import Allocator, Memory, Reader, RecyclableMemory, Writer
from membuf.media import amf0, relay, rtmp, servers
from membuf.media.relay import Packet, Player, Relay, RelayCounts, control_packet, make_packet
from membuf.media.ring import FrameRing

HANDSHAKE = b"\x03" + bytes(1536) + bytes(1536)      # C0, C1, C2


def feed(segments: list[Any], parse: Callable[[Reader], Any]) -> list[Any]:
    """``splitting.feed``, which must leave nothing unparsed."""
    out, r = feed_splits(segments, parse)
    assert len(r) == 0, f"{len(r)} bytes left unparsed"
    return out


def pattern(n: int, size: int) -> bytes:
    """``size`` bytes that say which packet they belong to."""
    return ((n & 0xFFFFFFFF).to_bytes(4, "big") * (size // 4 + 1))[:size]


def wire_bytes(p: Packet) -> bytes:
    return b"".join(bytes(s) for s in p.wire)


def body_packet(a: Allocator, w: Any, n: int, size: int, *, mtype: int = rtmp.VIDEO,
                key: bool = False, config: bool = False, chunk_size: int = 128,
                timestamp: int = 0) -> Packet:
    """A packet whose body (one holder: the caller's) holds ``pattern(n, size)``."""
    body = RecyclableMemory(a)
    view = body.next_n(size)
    view[:] = pattern(n, size)
    return make_packet(w, mtype, timestamp or n, view, body, csid=6, stream_id=1,
                       chunk_size=chunk_size, key=key, config=config)


# -- Player against a reference model -----------------------------------------------------


class GatedSend:
    """A ``send`` that records each batch and blocks until the test releases or fails it."""

    def __init__(self) -> None:
        self.tx, self.rx = trio.open_memory_channel[BaseException | None](math.inf)
        self.batches: list[list[memoryview]] = []
        self.data: list[bytes] = []
        self.blocked = False

    async def __call__(self, mem: Memory) -> None:
        self.batches.append(list(mem))
        self.data.append(mem.to_bytes())
        self.blocked = True
        try:
            err = await self.rx.receive()
        finally:
            self.blocked = False
        if err is not None:
            raise err


class PlayerModel:
    """What a Player must do, restated from docs/media.md and relay.py's docstring."""

    def __init__(self, budget: int, batch: int) -> None:
        self.budget, self.batch = budget, batch
        self.queue: list[Packet] = []
        self.inflight: list[Packet] | None = None
        self.waiting_key = True
        self.ending = self.done = self.finished = False
        self.skipped = self.messages = self.bytes = self.progress = 0
        self.sent: list[Packet] = []          # every packet handed to send, in order
        self.batches: list[list[Packet]] = []

    @property
    def held(self) -> int:
        return sum(p.size for p in self.queue + (self.inflight or []))

    def offer(self, p: Packet) -> str:
        if self.done or self.ending:
            return "ignored"
        if not p.config:
            if self.waiting_key and not p.key:
                self.skipped += 1
                return "skipped"
            if self.held + p.size > self.budget:
                media = [q for q in self.queue if not q.config]
                self.queue = [q for q in self.queue if q.config]
                self.skipped += len(media)
                self.waiting_key = True
                if not p.key or self.held + p.size > self.budget:
                    self.skipped += 1
                    return "over"
                self.queue.append(p)
                self.waiting_key = False
                return "over"
            self.waiting_key = False
        self.queue.append(p)
        return "queued"

    def step(self) -> None:
        """The sender, once every task is blocked: take a batch, or return at the end."""
        if self.finished or self.inflight is not None:
            return
        if self.queue:
            batch, size = [], 0
            while self.queue and size < self.batch:
                p = self.queue.pop(0)
                batch.append(p)
                size += p.wire_size
            self.inflight = batch
            self.batches.append(batch)
            self.sent += batch
        elif self.ending:
            self.finished = self.done = True

    def complete(self) -> None:
        assert self.inflight is not None
        for p in self.inflight:
            if p.body is not None:
                self.messages += 1
                self.bytes += p.size
        self.inflight = None
        self.progress += 1

    def abort(self) -> None:
        """The send failed or the task was cancelled: the batch is recycled, the task ends."""
        self.inflight = None
        self.finished = self.done = True

    def drop(self) -> None:
        self.done = True
        self.queue = []


SIZES = st.one_of(st.integers(0, 1500), st.sampled_from([0, 1, 100, 250, 500]))
OFFER = st.tuples(st.just("offer"), SIZES,
                  st.sampled_from(["media", "media", "key", "config", "control"]))
COMPLETE = st.just(("complete",))
ENDS = st.sampled_from([("end",), ("end",), ("drop",), ("fail",), ("cancel",)])


@st.composite
def player_ops(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Offers and completed sends (offers more often, so that queues build up while a
    send blocks), with at most two ends put anywhere."""
    ops = draw(st.lists(st.one_of([OFFER] * 5 + [COMPLETE] * 2), min_size=1, max_size=80))
    for _ in range(draw(st.integers(0, 2))):
        ops.insert(draw(st.integers(0, len(ops))), draw(ENDS))
    return ops


BUDGETS = st.one_of(st.integers(0, 5000), st.sampled_from([0, 500, 1000, 2000]))


async def drive_player(ops: list[tuple[Any, ...]], budget: int, batch: int,
                       chunk_size: int) -> None:
    a = Allocator()
    w = Writer()
    player = Player(budget)
    counts = player.counts = RelayCounts()
    model = PlayerModel(budget, batch)
    send = GatedSend()
    scope = trio.CancelScope()
    ran: dict[str, Any] = {"finished": False, "error": None}
    made: list[Packet] = []
    snapshot: dict[int, bytes] = {}    # id(packet) -> its wire bytes when it was made

    async def runner() -> None:
        with scope:
            try:
                await player.run(send, lambda: progress.append(1))
            except trio.BrokenResourceError as e:
                ran["error"] = e
        ran["finished"] = True

    progress: list[int] = []

    def check(op: tuple[Any, ...], outcome: str | None) -> None:
        assert send.blocked == (model.inflight is not None), op
        assert ran["finished"] == model.finished, op
        assert player.done == model.done, op
        assert [id(p) for p in player.queue] == [id(p) for p in model.queue], op
        # held is the payload bytes queued plus those in flight
        assert player.held == model.held, op
        inflight = model.inflight or []
        assert player.held == sum(p.size for p in player.queue) + sum(p.size for p in inflight)
        # media held never passes the budget (sequence headers and replies may)
        config_held = sum(p.size for p in list(player.queue) + inflight if p.config)
        assert player.held <= budget + config_held, op
        if outcome == "over":          # the queue has no media until a keyframe
            media = [p for p in player.queue if not p.config]
            assert media == [] or (media == [made[-1]] and made[-1].key), op
            assert player.waiting_key == (media == [])
        # sends: exactly the accepted packets' wire segments, in order, never copies
        assert len(send.batches) == len(model.batches), op
        for got, data, want in zip(send.batches, send.data, model.batches, strict=True):
            segs = [s for p in want for s in p.wire]
            assert len(got) == len(segs) and all(g is s for g, s in zip(got, segs, strict=True))
            assert data == b"".join(snapshot[id(p)] for p in want)
        # one reference per queue entry or packet in flight, plus the test's own
        for p in made:
            if p.body is not None:
                n = sum(q is p for q in list(player.queue) + inflight)
                assert p.body.refcount == 1 + n, (op, p)
        assert (counts.skipped, counts.messages, counts.bytes) == (
            model.skipped, model.messages, model.bytes), op
        assert len(progress) == model.progress, op

    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner)
        await trio.testing.wait_all_tasks_blocked()
        for n, op in enumerate(ops):
            outcome: str | None = None
            if op[0] == "offer":
                _, size, kind = op
                if kind == "control":
                    p = control_packet([b"reply", pattern(n, size % 40)])
                else:
                    p = body_packet(a, w, n, size, mtype=rtmp.AUDIO if kind == "media" else 9,
                                    key=kind == "key", config=kind == "config",
                                    chunk_size=chunk_size)
                made.append(p)
                snapshot[id(p)] = wire_bytes(p)
                outcome = model.offer(p)
                player.offer(p)
            elif op[0] == "complete":
                if model.inflight is not None:
                    model.complete()
                    send.tx.send_nowait(None)
            elif op[0] == "fail":
                if model.inflight is not None:
                    model.abort()
                    send.tx.send_nowait(trio.BrokenResourceError("peer gone"))
            elif op[0] == "cancel":
                if not model.finished:
                    model.abort()
                scope.cancel()
            elif op[0] == "end":
                model.ending = True
                player.end()
            elif op[0] == "drop":
                model.drop()
                player.drop()
            await trio.testing.wait_all_tasks_blocked()
            model.step()
            check(op, outcome)
        scope.cancel()                 # the connection's nursery ends the sender
    player.drop()                      # Relay.leave: what is still queued is recycled
    assert player.held == 0 and not player.queue
    for p in made:                     # only the test's own reference is left
        assert p.body is None or p.body.refcount == 1
    assert a.stats().in_use == sum(p.size for p in made if p.body is not None)
    for p in made:
        p.recycle()
        assert p.body is None or p.body.refcount == 0
    assert a.stats().in_use == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=player_ops(), budget=BUDGETS,
       batch=st.sampled_from([1, 700, 4000, relay.BATCH]),
       chunk_size=st.sampled_from([7, 128, 4096]))
def test_player_against_model(ops: list[tuple[Any, ...]], budget: int, batch: int,
                              chunk_size: int) -> None:
    with mock.patch.object(relay, "BATCH", batch):
        trio.run(drive_player, ops, budget, batch, chunk_size)


def test_player_slow_reader_is_bounded_and_skips_to_the_next_keyframe() -> None:
    """A sender stuck in send: offers never wait, media held stays under the budget, past
    it the queued media (not the sequence header or the reply) is dropped, and the next
    packet queued is a keyframe."""
    a = Allocator()
    w = Writer()

    async def main() -> None:
        player = Player(1000)
        counts = player.counts = RelayCounts()
        send = GatedSend()
        key0 = body_packet(a, w, 0, 100, key=True)
        config = body_packet(a, w, 50, 100, config=True)
        reply = control_packet([b"reply"])
        media = [body_packet(a, w, i, 100, mtype=rtmp.AUDIO) for i in range(1, 30)]
        key30 = body_packet(a, w, 30, 100, key=True)
        last = body_packet(a, w, 31, 100, mtype=rtmp.AUDIO)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(player.run, send, lambda: None)
            player.offer(key0)
            await trio.testing.wait_all_tasks_blocked()
            assert send.blocked and player.held == 100    # the keyframe is in flight
            player.offer(config)
            player.offer(reply)
            for p in media[:8]:
                player.offer(p)
            # exactly the budget: 100 in flight, 100 of sequence header, 800 of media
            assert player.held == 1000 and len(player.queue) == 10 and counts.skipped == 0
            for p in media[8:]:
                player.offer(p)
                assert player.held <= 1000
            player.offer(key30)
            player.offer(last)
            # 9 passed the budget: 1..8 were dropped, 9..29 skipped waiting for a key
            assert list(player.queue) == [config, reply, key30, last]
            assert counts.skipped == 8 + 1 + 20 and player.held == 400
            assert all(p.body is not None and p.body.refcount == 1 for p in media)
            player.end()
            for _ in range(len(media) + 4):    # a token per send (spares: no hang if not 2)
                send.tx.send_nowait(None)
        assert send.data == [wire_bytes(key0), b"".join(
            wire_bytes(p) for p in (config, reply, key30, last))]
        assert player.done and player.held == 0
        assert (counts.messages, counts.bytes) == (4, 400)
        for p in [key0, config, *media, key30, last]:
            assert p.body is not None and p.body.refcount == 1
            p.recycle()

    trio.run(main)
    assert a.stats().in_use == 0


# -- Relay ---------------------------------------------------------------------------------


def test_relay_players_before_publish_wait_and_get_everything() -> None:
    a, w = Allocator(), Writer()
    hub = Relay("live/x")
    early = Player(1 << 20)
    hub.join(early)
    assert early.counts is None and not hub.publishing and not hub.idle()
    audio = body_packet(a, w, 1, 10, mtype=rtmp.AUDIO)        # media, not a keyframe
    counts = RelayCounts()
    hub.publish(counts, list, list)
    assert early.counts is counts and counts.players == 1 and hub.publishing
    fresh = Player(1 << 20)
    hub.join(fresh)                # published, no media yet: it misses nothing either
    hub.fan_out(audio)
    assert list(early.queue) == [audio] and list(fresh.queue) == [audio]
    assert audio.body is not None and audio.body.refcount == 3
    late = Player(1 << 20)         # joins after media, and the ring has no GOP: waits for a key
    hub.join(late)
    inter = body_packet(a, w, 2, 10, mtype=rtmp.AUDIO)
    key = body_packet(a, w, 3, 10, key=True)
    hub.fan_out(inter)
    hub.fan_out(key)
    assert list(late.queue) == [key] and list(early.queue) == [audio, inter, key]
    assert counts.players == 3 and counts.skipped == 1
    for p in (early, fresh, late):
        hub.leave(p)
    for pk in (audio, inter, key):
        assert pk.body is not None and pk.body.refcount == 1
        pk.recycle()
    assert a.stats().in_use == 0


def test_relay_mid_stream_join_gets_configs_then_gop_then_live() -> None:
    a, w = Allocator(), Writer()
    hub = Relay("live/x")
    ring = FrameRing(64)
    meta = body_packet(a, w, 100, 20, mtype=rtmp.DATA_AMF0, config=True)
    vcfg = body_packet(a, w, 101, 20, mtype=rtmp.VIDEO, config=True)
    acfg = body_packet(a, w, 102, 4, mtype=rtmp.AUDIO, config=True)
    configs = [meta, vcfg, acfg]

    def gop() -> list[Packet]:
        return ring.since_key() or []  # type: ignore[return-value]

    hub.publish(RelayCounts(), lambda: list(configs), gop)
    frames = []
    for i in range(10):
        p = body_packet(a, w, i, 50, key=i in (0, 6), mtype=rtmp.VIDEO if i % 2 == 0 else 8)
        hub.fan_out(p)
        ring.push(p, key=p.key)
        frames.append(p)
    player = Player(1 << 20)
    hub.join(player)
    assert list(player.queue) == [meta, vcfg, acfg, *frames[6:]]
    live = body_packet(a, w, 10, 50, mtype=rtmp.AUDIO)
    hub.fan_out(live)
    assert list(player.queue)[-1] is live and not player.waiting_key
    hub.leave(player)
    ring.clear()
    for p in [*configs, live]:
        p.recycle()
    assert a.stats().in_use == 0


def test_relay_unpublish_ends_players_and_calls_drained_once_after_the_last() -> None:
    hub = Relay("k")
    calls: list[str] = []
    hub.unpublish(lambda: calls.append("none"))         # nobody: at once
    assert calls == ["none"] and hub.idle()
    waiting = Player(100)
    hub.join(waiting)
    hub.unpublish(lambda: calls.append("waiting"))      # only a waiting player: at once
    assert calls == ["none", "waiting"] and not waiting.ending
    hub.publish(RelayCounts(), list, list)
    p1, p2 = Player(100), Player(100)
    hub.join(p1)
    hub.join(p2)
    assert waiting.counts is not None                   # attached by publish
    hub.unpublish(lambda: calls.append("stream"))
    assert p1.ending and p2.ending and waiting.ending and not hub.publishing
    assert not hub.idle()
    hub.leave(p1)
    hub.leave(waiting)
    assert calls == ["none", "waiting"] and not hub.idle()
    late = Player(100)
    hub.join(late)                                      # waits for the next publisher
    hub.leave(p2)
    assert calls == ["none", "waiting", "stream"]
    hub.leave(late)
    hub.leave(late)
    assert calls == ["none", "waiting", "stream"] and hub.idle()


def test_relay_republish_while_old_players_drain_attaches_only_new_ones() -> None:
    hub = Relay("k")
    calls: list[str] = []
    hub.publish(RelayCounts(), list, list)
    old = Player(100)
    hub.join(old)
    hub.unpublish(lambda: calls.append("A"))
    second = RelayCounts()
    hub.publish(second, list, list)
    new = Player(100)
    hub.join(new)
    assert second.players == 1 and old.ending and not new.ending
    hub.leave(old)                  # the last of stream A's players
    assert calls == ["A"]


def test_relay_second_unpublish_before_old_players_leave_keeps_both_callbacks() -> None:
    hub = Relay("k")
    calls: list[str] = []
    hub.publish(RelayCounts(), list, list)
    old = Player(100)
    hub.join(old)
    hub.unpublish(lambda: calls.append("A"))          # old still sending its queue
    hub.publish(RelayCounts(), list, list)
    new = Player(100)
    hub.join(new)
    hub.unpublish(lambda: calls.append("B"))
    hub.leave(old)
    hub.leave(new)
    assert sorted(calls) == ["A", "B"]


def test_relay_idle() -> None:
    hub = Relay("k")
    assert hub.idle()
    hub.publish(RelayCounts(), list, list)
    assert not hub.idle()
    p = Player(10)
    hub.join(p)
    hub.unpublish(lambda: None)
    assert not hub.idle()           # a player is still draining
    hub.leave(p)
    assert hub.idle()


AAC_CONFIG = bytes([0xAF, 0x00, 0x12, 0x10])
AVC_CONFIG = bytes([0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f"
METADATA = (b"\x02\x00\x0d@setDataFrame"
            + amf0.encode("onMetaData", {"width": 160.0, "height": 120.0}))


def test_server_relays_configs_in_order_then_gop_then_live() -> None:
    """RtmpServer's wiring (no sockets): configs arrive audio, metadata, video; a joining
    player gets metadata, video config, audio config, then the GOP, then live; the stream's
    summary comes only once its last player has left."""

    async def main() -> None:
        out = io.StringIO()
        srv = servers.RtmpServer(live=False, json_out=True, out=out)
        a = srv.allocator
        peer = servers._Peer("test", servers._Watchdog(srv.limits))

        def message(mtype: int, body: bytes, ts: int) -> rtmp.Message:
            rm = RecyclableMemory(a)
            rm.next_n(len(body))[:] = body
            return rtmp.Message(mtype, 1, ts, 6, rm)

        srv._publish(peer, "live/x")
        state = peer.state
        assert state is not None and state.hub is not None
        for mtype, body in ((8, AAC_CONFIG), (18, METADATA), (9, AVC_CONFIG)):
            srv._on_media(state, message(mtype, body, 0))
        stream = [(9, avc_frame(i, 60, key=i % 4 == 0)) for i in range(6)]
        for i, (mtype, body) in enumerate(stream):
            srv._on_media(state, message(mtype, body, 40 * i))
        player = Player(1 << 20)
        state.hub.join(player)
        srv._on_media(state, message(9, avc_frame(6, 60, key=False), 240))
        queued = list(player.queue)
        got = []
        reader = rtmp.ChunkReader(a)
        reader.chunk_size = srv.chunk_size
        for p in queued:
            (m,) = feed([wire_bytes(p)], reader.read_message)
            got.append((m.type, m.body.to_bytes()))
            m.body.recycle()
        assert got == [(18, METADATA[16:]), (9, AVC_CONFIG), (8, AAC_CONFIG),
                       *stream[4:], (9, avc_frame(6, 60, key=False))]
        hub = state.hub
        srv.finish_stream(state)
        assert player.ending and srv.streams == 0 and out.getvalue() == ""
        hub.leave(player)
        assert srv.streams == 1 and '"relayed_messages"' in out.getvalue()
        assert a.stats().in_use == 0

    trio.run(main)


# -- FrameRing.since_key -------------------------------------------------------------------


class Frame:
    def __init__(self, n: int, size: int = 1) -> None:
        self.n, self.size, self.recycled = n, size, 0

    def __len__(self) -> int:
        return self.size

    def recycle(self) -> None:
        self.recycled += 1

    def __repr__(self) -> str:
        return f"F{self.n}"


def test_since_key_count_bound_evicts_the_keyframe() -> None:
    ring = FrameRing(3)
    assert ring.since_key() is None
    k, f1, f2, f3 = Frame(0), Frame(1), Frame(2), Frame(3)
    ring.push(k, key=True)
    ring.push(f1)
    ring.push(f2)
    assert ring.since_key() == [k, f1, f2]
    ring.push(f3)                           # k evicted: the GOP is not servable
    assert ring.since_key() is None and k.recycled == 1
    k2 = Frame(4)
    ring.push(k2, key=True)
    assert ring.since_key() == [k2]


def test_since_key_byte_bound_evicts_the_keyframe() -> None:
    ring = FrameRing(64, max_bytes=10)
    k, f1, f2 = Frame(0, 4), Frame(1, 4), Frame(2, 4)
    ring.push(k, key=True)
    ring.push(f1)
    assert ring.since_key() == [k, f1]
    ring.push(f2)
    assert ring.since_key() is None and list(ring) == [f1, f2]


def test_since_key_is_none_after_a_too_large_frame_mid_gop() -> None:
    ring = FrameRing(64, max_bytes=10)
    k, f1, big, f2 = Frame(0, 2), Frame(1, 2), Frame(2, 11), Frame(3, 2)
    ring.push(k, key=True)
    ring.push(f1)
    ring.push(big)                          # dropped: the GOP has a hole
    assert big.recycled == 1 and ring.dropped == 1 and list(ring) == [k, f1]
    assert ring.since_key() is None
    ring.push(f2)
    assert ring.since_key() is None
    k2 = Frame(4, 2)
    ring.push(k2, key=True)
    assert ring.since_key() == [k2]


def test_since_key_after_clear() -> None:
    ring = FrameRing(8)
    k, f1 = Frame(0), Frame(1)
    ring.push(k, key=True)
    ring.push(f1)
    ring.clear()
    assert ring.since_key() is None and (k.recycled, f1.recycled) == (1, 1)
    f2 = Frame(2)
    ring.push(f2)
    assert ring.since_key() is None
    k2, f3 = Frame(3), Frame(4)
    ring.push(k2, key=True)
    ring.push(f3)
    assert ring.since_key() == [k2, f3]


RING_OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 12), st.booleans()),
    st.just(("clear", 0, False))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=RING_OPS, size=st.integers(1, 6), max_bytes=st.one_of(st.none(), st.integers(1, 20)))
def test_since_key_against_a_list(ops: list[tuple[str, int, bool]], size: int,
                                  max_bytes: int | None) -> None:
    ring = FrameRing(size, max_bytes=max_bytes)
    held: list[Frame] = []
    start: Frame | None = None      # the newest keyframe, while its GOP has no hole
    made: list[Frame] = []
    for n, (op, nbytes, key) in enumerate(ops):
        if op == "clear":
            ring.clear()
            held, start = [], None
        else:
            f = Frame(n, nbytes)
            made.append(f)
            ring.push(f, key=key)
            if max_bytes is not None and nbytes > max_bytes:
                start = None
            else:
                if key:
                    start = f
                held.append(f)
                while len(held) > size or (max_bytes is not None
                                           and sum(len(x) for x in held) > max_bytes):
                    held.pop(0)
        assert list(ring) == held
        want = held[held.index(start):] if start is not None and start in held else None
        assert ring.since_key() == want
        assert all(f.recycled == (0 if f in held else 1) for f in made)
    ring.clear()
    assert all(f.recycled == 1 for f in made)


# -- ServerSession: the play flow ----------------------------------------------------------

PLAY = HANDSHAKE + rtmp_play_commands("cam", "live")
DELETE = rtmp_command("deleteStream", 5.0, None, 1.0)


def run_session(data: bytes, how: str, a: Allocator,
                after: Callable[[rtmp.ServerSession, Any], None] | None = None,
                ) -> tuple[list[Any], list[rtmp.Message], rtmp.ServerSession]:
    """Feed ``data`` split ``how``; return the events, the server's messages (parsed as a
    client would) and the session."""
    session = rtmp.ServerSession(a)
    sent = bytearray()

    def parse(r: Reader) -> Any:
        try:
            ev = session.next_event(r)
            if after is not None:
                after(session, ev)
            return ev
        finally:
            for piece in session.data_to_send():
                sent.extend(piece)

    events = feed(split(data, how), parse)
    assert sent[0] == 3 and sent[1537:3073] == bytes(1536)    # S0, S1, S2 (echo of C1)
    client = rtmp.ChunkReader(a)
    msgs = feed([bytes(sent[3073:])], client.read_message)
    return events, msgs, session


def decoded(msgs: list[rtmp.Message]) -> list[tuple[int, int, Any]]:
    """(type, stream id, body) per message: AMF0 values decoded, other bodies as bytes."""
    out: list[tuple[int, int, Any]] = []
    for m in msgs:
        if m.type in (rtmp.COMMAND_AMF0, rtmp.DATA_AMF0):
            out.append((m.type, m.stream_id, amf0.decode_all(m.reader())))
        else:
            out.append((m.type, m.stream_id, m.body.to_bytes()))
        m.body.recycle()
    return out


def status_codes(msgs: list[tuple[int, int, Any]]) -> list[tuple[int, str, str]]:
    return [(sid, v[3]["level"], v[3]["code"]) for t, sid, v in msgs
            if t == rtmp.COMMAND_AMF0 and v[0] == "onStatus"]


@pytest.mark.parametrize("how", SPLITS)
def test_play_flow_every_split(how: str) -> None:
    with Allocator() as a:
        events, msgs, session = run_session(PLAY + DELETE, how, a)
        assert events == [rtmp.Play("live", "cam"), rtmp.Stop("live", "cam")]
        assert not session.playing
        got = decoded(msgs)
        types = [t for t, _, _ in got]
        assert types[:3] == [rtmp.WINDOW_ACK_SIZE, rtmp.SET_PEER_BANDWIDTH, rtmp.SET_CHUNK_SIZE]
        cmds = [v for t, _, v in got if t == rtmp.COMMAND_AMF0]
        assert cmds[0][:2] == ["_result", 1.0]
        assert cmds[0][3]["code"] == "NetConnection.Connect.Success"
        assert ["_result", 2.0, None, 1.0] in cmds              # createStream: stream 1
        assert ["_result", 3.0, None, 0.0] in cmds              # getStreamLength: live
        # the play replies, in order, right after getStreamLength's _result
        i = next(j for j, (t, _, v) in enumerate(got) if t == rtmp.COMMAND_AMF0
                 and v[:2] == ["_result", 3.0])
        play = got[i + 1:]
        assert play[0] == (rtmp.USER_CONTROL, 0, b"\x00\x00\x00\x00\x00\x01")   # Stream Begin
        assert status_codes(play[1:3]) == [(1, "status", "NetStream.Play.Reset"),
                                           (1, "status", "NetStream.Play.Start")]
        assert play[1][2][3]["details"] == "cam"
        assert play[3] == (rtmp.DATA_AMF0, 1, ["|RtmpSampleAccess", True, True])
        assert len(play) == 4                                    # deleteStream: no reply
        session.close()
        assert a.stats().in_use == 0


@pytest.mark.parametrize("how", SPLITS)
def test_play_close_stream_stops_and_fcunpublish_does_not(how: str) -> None:
    data = (PLAY + rtmp_command("FCUnpublish", 5.0, None, "cam")
            + rtmp_command("closeStream", 0.0, None, csid=8, sid=1))
    with Allocator() as a:
        events, msgs, session = run_session(data, how, a)
        assert events == [rtmp.Play("live", "cam"), rtmp.Stop("live", "cam")]
        decoded(msgs)
        session.close()
        assert a.stats().in_use == 0


@pytest.mark.parametrize("how", SPLITS)
def test_publish_on_a_playing_connection_is_refused(how: str) -> None:
    data = (PLAY + rtmp_command("publish", 6.0, None, "other", "live", csid=8, sid=1)
            + rtmp_command("play", 7.0, None, "again", csid=8, sid=1))
    with Allocator() as a:
        events, msgs, session = run_session(data, how, a)
        assert events == [rtmp.Play("live", "cam")]        # no Publish, no second Play
        assert session.playing and not session.publishing and session.name == "cam"
        codes = status_codes(decoded(msgs))
        assert codes[-2:] == [(1, "error", "NetStream.Publish.BadName"),
                              (1, "error", "NetStream.Play.Failed")]
        assert not any(c == "NetStream.Publish.Start" for _, _, c in codes)
        session.close()
        assert a.stats().in_use == 0


@pytest.mark.parametrize("how", SPLITS)
def test_end_play_says_stream_eof_then_unpublish_notify(how: str) -> None:
    def after(session: rtmp.ServerSession, ev: Any) -> None:
        if type(ev) is rtmp.Play:
            session.end_play("gone")
            session.end_play("again")                       # no longer playing: nothing

    with Allocator() as a:
        events, msgs, session = run_session(PLAY, how, a, after)
        assert events == [rtmp.Play("live", "cam")] and not session.playing
        got = decoded(msgs)
        assert got[-2] == (rtmp.USER_CONTROL, 0, b"\x00\x01\x00\x00\x00\x01")  # Stream EOF
        assert status_codes(got[-1:]) == [(1, "status", "NetStream.Play.UnpublishNotify")]
        assert got[-1][2][3]["description"] == "cam: gone."
        assert got[-3] == (rtmp.DATA_AMF0, 1, ["|RtmpSampleAccess", True, True])
        session.end_play()
        assert session.data_to_send() == []
        session.close()
        assert a.stats().in_use == 0


def test_end_play_is_a_no_op_when_not_playing() -> None:
    with Allocator() as a:
        session = rtmp.ServerSession(a)
        session.end_play()
        assert not session.has_data_to_send()
        data = HANDSHAKE + rtmp_command("connect", 1.0, {"app": "live"}) + rtmp_command(
            "createStream", 2.0, None) + rtmp_command("publish", 3.0, None, "x", "live",
                                                      csid=5, sid=1)
        events = feed([data], session.next_event)
        assert events == [rtmp.Publish("live", "x")]
        session.data_to_send()
        session.end_play()
        assert session.data_to_send() == [] and session.publishing
        session.close()
        assert a.stats().in_use == 0


# -- write_message -------------------------------------------------------------------------


def spec_chunks(mtype: int, payload: bytes, csid: int, sid: int, ts: int,
                chunk_size: int) -> bytes:
    """The chunks of one message, from the spec (section 5.3), with the extended timestamp
    repeated on every fmt-3 chunk when it is used."""
    ext = ts >= 0xFFFFFF
    out = bytearray([csid]) + min(ts, 0xFFFFFF).to_bytes(3, "big")
    out += len(payload).to_bytes(3, "big") + bytes([mtype]) + sid.to_bytes(4, "little")
    if ext:
        out += ts.to_bytes(4, "big")
    for i in range(0, len(payload), chunk_size):
        if i:
            out.append(0xC0 | csid)
            if ext:
                out += ts.to_bytes(4, "big")
        out += payload[i:i + chunk_size]
    return bytes(out)


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def make_payload(kind: str, data: bytes) -> tuple[Any, list[memoryview], memoryview | None]:
    """The payload in form ``kind``, the views its bytes live in (for the no-copy check)
    and a writable view of some of its bytes in their source (None for bytes)."""
    if kind == "bytes":
        return data, [memoryview(data)], None
    if kind == "bytearray":
        buf = bytearray(data)
        return buf, [memoryview(buf)], memoryview(buf)
    if kind == "memoryview":            # a slice with an offset, of a writable buffer
        buf = bytearray(b"??" + data + b"!")
        return memoryview(buf)[2:2 + len(data)], [memoryview(buf)], memoryview(buf)[2:]
    # a multi-segment Memory: bytes, an empty segment, bytearrays of uneven lengths
    a, b = len(data) // 3, (2 * len(data)) // 3
    segs: list[Any] = [data[:a], b"", bytearray(data[a:b]), memoryview(bytearray(data[b:]))]
    mem = Memory(*segs)
    return mem, [memoryview(s) for s in segs], memoryview(segs[2])


def check_no_copy(out: Memory, sources: list[memoryview], payload: bytes) -> None:
    """Every payload byte in ``out`` is a view of a source buffer, never a copy."""
    objs = [s.obj for s in sources]
    pieces = [s for s in out if any(s.obj is o for o in objs)]
    assert b"".join(bytes(p) for p in pieces) == payload
    for p in pieces:
        src = next(s for s in sources if s.obj is p.obj)
        if not src.readonly and len(p):
            base = address(src)
            assert base <= address(p) and address(p) + len(p) <= base + len(src)


def reparse(data: bytes, how: str, chunk_size: int, a: Allocator) -> rtmp.Message:
    wire = rtmp_message(rtmp.SET_CHUNK_SIZE, chunk_size.to_bytes(4, "big"), csid=2) + data
    reader = rtmp.ChunkReader(a)
    msgs = feed(split(wire, how), reader.read_message)
    assert [m.type for m in msgs] == [rtmp.SET_CHUNK_SIZE, msgs[-1].type] and len(msgs) == 2
    msgs[0].body.recycle()
    return msgs[1]


TIMESTAMPS = [0, 1000, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0xFFFFFFFF]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "memory"])
@pytest.mark.parametrize("ts", TIMESTAMPS)
def test_write_message_roundtrip_and_no_copy(how: str, kind: str, ts: int) -> None:
    data = bytes(range(7, 44))      # 37 bytes
    with Allocator() as a:
        for chunk_size in [*range(1, len(data) + 2), 128]:
            payload, sources, poke = make_payload(kind, data)
            w = Writer()
            rtmp.write_message(w, rtmp.VIDEO, payload, csid=6, stream_id=1, timestamp=ts,
                               chunk_size=chunk_size)
            out = w.take()
            wire = out.to_bytes()
            assert wire == spec_chunks(rtmp.VIDEO, data, 6, 1, ts, chunk_size), chunk_size
            check_no_copy(out, sources, data)
            m = reparse(wire, how, chunk_size, a)
            assert (m.type, m.stream_id, m.timestamp, m.csid) == (rtmp.VIDEO, 1, ts, 6)
            assert m.body.to_bytes() == data
            m.body.recycle()
            if poke is not None:        # a change to the source shows: it was referenced
                poke[0] ^= 0xFF
                assert out.to_bytes() != wire
        assert a.stats().in_use == 0


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(max_size=120), max_size=5),
       chunk_size=st.integers(1, 400),
       ts=st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from(TIMESTAMPS)),
       csid=st.integers(2, 63), sid=st.integers(0, 0xFFFFFFFF), mtype=st.integers(0, 255),
       how=st.sampled_from(SPLITS))
def test_write_message_any_payload(parts: list[bytes], chunk_size: int, ts: int, csid: int,
                                   sid: int, mtype: int, how: str) -> None:
    data = b"".join(parts)
    segs = [bytearray(p) for p in parts]
    w = Writer()
    rtmp.write_message(w, mtype, Memory(*segs), csid=csid, stream_id=sid, timestamp=ts,
                       chunk_size=chunk_size)
    out = w.take()
    assert out.to_bytes() == spec_chunks(mtype, data, csid, sid, ts, chunk_size)
    check_no_copy(out, [memoryview(s) for s in segs], data)
    if mtype not in (rtmp.SET_CHUNK_SIZE, rtmp.ABORT):   # those two change the parsing
        with Allocator() as a:
            m = reparse(out.to_bytes(), how, chunk_size, a)
            assert (m.type, m.stream_id, m.timestamp, m.csid) == (mtype, sid, ts, csid)
            assert m.body.to_bytes() == data
            m.body.recycle()


def test_make_packet_wire_points_into_the_body() -> None:
    with Allocator() as a:
        w = Writer()
        p = body_packet(a, w, 7, 1000, key=True, chunk_size=128, timestamp=0x1234567)
        assert p.body is not None and p.body.refcount == 1     # took over the caller's
        assert (p.size, len(p), p.key, p.config) == (1000, 1000, True, False)
        assert p.wire_size == len(wire_bytes(p)) == 1000 + 16 + 7 * 5
        (seg,) = list(p.body)
        pieces = [s for s in p.wire if s.obj is seg.obj]
        assert b"".join(bytes(s) for s in pieces) == pattern(7, 1000)
        assert all(address(seg) <= address(s) < address(seg) + 1000 for s in pieces)
        m = reparse(wire_bytes(p), "whole", 128, a)
        assert (m.type, m.timestamp, m.stream_id, m.body.to_bytes()) == (
            9, 0x1234567, 1, pattern(7, 1000))
        m.body.recycle()
        p.recycle()
        assert a.stats().in_use == 0


# -- direct sends (Player(nowait=...)) ---------------------------------------------------


class Kernel:
    """A ``nowait`` that takes at most ``room`` bytes per call (then 0: the socket is full),
    recording what it took."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.took = bytearray()
        self.calls = 0

    def __call__(self, segments: list[memoryview]) -> int:
        self.calls += 1
        data = b"".join(bytes(s) for s in segments)[: self.room]
        self.took += data
        self.room -= len(data)
        return len(data)


@pytest.mark.parametrize("room", [0, 1, 100, 333, 10_000, 1 << 30])
def test_direct_sends_then_the_task_sends_the_rest_in_order(room: int) -> None:
    """Packets offered while nothing is queued go out from the offering task; once the
    kernel stops taking them (here after ``room`` bytes) the rest, the half-sent packet's
    tail first, goes out from the player's task: the bytes the peer gets are exactly the
    packets' wire forms in order, and every body is recycled once."""
    a, w = Allocator(), Writer()
    kernel = Kernel(room)
    player = Player(1 << 20, nowait=kernel)
    player.counts = RelayCounts()
    packets = [body_packet(a, w, n, 50 + 37 * n, key=n == 0) for n in range(12)]
    want = b"".join(wire_bytes(p) for p in packets)
    sent = bytearray()

    async def send(mem: Memory) -> None:
        sent.extend(mem.to_bytes())
        await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(player.run, send, lambda: None)
            await trio.testing.wait_all_tasks_blocked()
            for p in packets:
                player.offer(p)
                p.recycle()                 # the test's own reference
            player.end()

    trio.run(main)
    assert bytes(kernel.took) + bytes(sent) == want
    assert len(kernel.took) == min(room, len(want))
    assert player.held == 0 and not player.queue
    assert player.counts.messages == 12 and player.counts.payload_copies == 0
    assert a.stats().in_use == 0                    # every body recycled exactly once


def test_a_half_sent_packet_survives_a_skip_to_the_next_keyframe() -> None:
    """Over budget, a player drops its queued media, but never the packet whose first
    bytes the kernel already took (the peer would get half a message)."""
    a, w = Allocator(), Writer()
    kernel = Kernel(10)                             # takes 10 bytes, then is full
    player = Player(1000, nowait=kernel)
    first = body_packet(a, w, 0, 400, key=True)
    player.offer(first)
    assert player._offset == 10 and list(player.queue) == [first]
    second = body_packet(a, w, 1, 400)
    player.offer(second)                            # queued: 800 held
    third = body_packet(a, w, 2, 400)
    player.offer(third)                             # over budget: skip (drop `second`)
    assert list(player.queue) == [first]            # the half-sent one stays
    assert player.waiting_key and player.held == 400
    player.drop()
    for p in (first, second, third):
        p.recycle()
    assert a.stats().in_use == 0


def test_a_failing_direct_send_falls_back_to_the_players_task() -> None:
    """A peer gone mid-stream makes ``nowait`` raise: the offering task (the publisher)
    must not see it; the packet is queued and the player's own task finds the error."""
    a, w = Allocator(), Writer()

    def broken(segments: list[memoryview]) -> int:
        raise trio.BrokenResourceError("peer reset")

    player = Player(1 << 20, nowait=broken)
    p = body_packet(a, w, 0, 100, key=True)
    player.offer(p)                                 # does not raise
    assert list(player.queue) == [p] and player.nowait is None
    player.drop()
    p.recycle()
    assert a.stats().in_use == 0
